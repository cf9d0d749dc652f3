"""The runtime package must work with torch absent."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import plainsight

SCRIPT = """
import sys
sys.modules['torch'] = None
import numpy as np
import plainsight
from plainsight.features import FeatureConfig, log_mel
import plainsight.corpora, plainsight.resample
feats = log_mel(np.zeros(32000, np.float32), FeatureConfig())
assert feats.shape == (200, 40), feats.shape
try:
    import torch
except ImportError:
    print("ok")
"""


def test_runtime_imports_and_runs_without_torch():
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_runtime_source_never_imports_torch():
    root = Path(plainsight.__file__).parent
    offenders = []
    for path in root.rglob("*.py"):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            stripped = line.strip()
            if (
                stripped.startswith(("import torch", "from torch"))
                or 'import_module("torch' in stripped
            ):
                offenders.append(f"{path.relative_to(root)}:{number}")
    assert not offenders, offenders
