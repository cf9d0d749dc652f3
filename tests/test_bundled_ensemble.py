"""The bundled compact + MFCC-statistics ensembles (<corpus>-compact-mfcc, issue 9 section 2):
they load, name their heads and checkpoints, their grad graph is the torch ensemble's (where
torch is installed), and the masker uses them with torch absent. Not the default model."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from plainsight.manifest import BUNDLED_DIR, load_model_dir, resolve_models

REPO = Path(__file__).resolve().parents[1]
CORPORA = ("emodb", "ravdess")


def ensemble_dir(corpus: str) -> Path:
    directory = BUNDLED_DIR / f"{corpus}-compact-mfcc"
    if not (directory / "manifest.json").is_file():
        pytest.skip(f"{directory.name} not exported (plainsight-export build --only ensemble)")
    return directory


@pytest.mark.parametrize("corpus", CORPORA)
def test_ensemble_dir_loads_and_names_its_heads(corpus):
    spec = load_model_dir(ensemble_dir(corpus))
    compact = load_model_dir(BUNDLED_DIR / f"{corpus}-compact")
    manifest = spec.manifest
    assert spec.name == f"{corpus}-compact-mfcc" and manifest["role"] == "option"
    assert spec.classes == compact.classes and spec.features == compact.features
    heads = manifest["heads"]
    assert [h["name"] for h in heads] == ["compact", "surrogate-mfcc-shared"]
    assert [h["arch"] for h in heads] == ["compact", "mfcc-shared"]
    assert all(h["loss_weight"] == 1.0 for h in heads)
    for head in heads:
        path = REPO / head["checkpoint"]["path"]
        assert path.is_file(), path
        assert hashlib.sha256(path.read_bytes()).hexdigest() == head["checkpoint"]["sha256"]
    # The forward graph (logits, untargeted objective, white-box) is the shipped compact's.
    for backend in ("onnx", "tflite"):
        ours, theirs = spec.graph_file("forward", backend), compact.graph_file("forward", backend)
        assert ours.read_bytes() == theirs.read_bytes()
    for fname in spec.files:  # every file passes its sha256 check
        spec.verified_path(spec.files[fname]["graph"], spec.files[fname]["backend"])


def test_default_model_is_unchanged():
    (spec,) = resolve_models("default")
    assert spec.name == "emodb-compact"
    assert [s.name for s in resolve_models("emodb,ravdess")] == ["emodb-compact", "ravdess-compact"]
    ensemble_dir("emodb")
    assert [s.name for s in resolve_models("emodb-compact-mfcc")] == ["emodb-compact-mfcc"]


@pytest.mark.parametrize("corpus", CORPORA)
def test_ensemble_grad_graph_matches_torch(corpus):
    """ONNX grad graph vs autograd of compact CE + MFCC-head CE from the checkpoints."""
    pytest.importorskip("torch")
    pytest.importorskip("onnxruntime")
    from plainsight_export.verify import verify_dir

    checks = verify_dir(ensemble_dir(corpus), backends=("onnx",), log=lambda _: None)
    bad = [c.line() for c in checks if not c.ok]
    assert checks and not bad, "\n".join(bad)
    assert {("grad.onnx", "grad cosine"), ("grad.onnx", "lockstep sign flips")} <= {
        (c.file, c.metric) for c in checks
    }


SCRIPT = """
import sys, json
sys.modules['torch'] = None
import numpy as np
from plainsight import Masker
rate = 16000
t = np.arange(int(2.7 * rate)) / rate
env = 0.5 + 0.5 * np.sin(2 * np.pi * 3 * t) ** 2
rng = np.random.default_rng(0)
audio = (0.1 * env * (np.sin(2 * np.pi * 170 * t) + 0.4 * np.sin(2 * np.pi * 1900 * t))
         + 0.003 * rng.standard_normal(len(t))).astype(np.float32)
out = {}
for model in ("emodb-compact-mfcc", "emodb"):
    masker = Masker(model=model, backend=sys.argv[1], snr_db=35.0)
    masked = masker.mask(audio, rate)
    noise = masked.astype(np.float64) - audio
    out[model] = {
        "snr": float(10 * np.log10(np.sum(audio.astype(np.float64) ** 2) / np.sum(noise ** 2))),
        "shape": list(masked.shape),
        "delta": noise.tolist(),
    }
try:
    import torch
except ImportError:
    out["torch"] = "absent"
print(json.dumps(out))
"""


@pytest.mark.parametrize("backend", ["onnx", "tflite"])
def test_masker_uses_the_ensemble_without_torch(backend):
    ensemble_dir("emodb")
    from plainsight.backends import installed_backends

    if backend not in installed_backends():
        pytest.skip(f"backend {backend} not installed")
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, backend], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["torch"] == "absent"
    ens, default = out["emodb-compact-mfcc"], out["emodb"]
    assert ens["shape"] == [int(2.7 * 16000)]
    # The L-inf budget is 35 dB below each window's RMS; sign steps fill most of it.
    assert 34.5 <= ens["snr"] <= 42.0, ens["snr"]
    # The MFCC head changes the perturbation (same budget, other directions).
    a, b = np.asarray(ens["delta"]), np.asarray(default["delta"])
    assert np.mean(np.sign(a) != np.sign(b)) > 0.05
