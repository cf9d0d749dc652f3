"""CI pipeline: committed checkpoints -> export -> verify -> compare with committed artifacts."""

from __future__ import annotations

import json
import shutil

import pytest

pytest.importorskip("torch")
pytest.importorskip("litert_torch")
pytest.importorskip("ai_edge_litert")

import numpy as np  # noqa: E402
import onnx  # noqa: E402
from onnx import numpy_helper  # noqa: E402
from plainsight_export import cli  # noqa: E402
from plainsight_export.export import sha256_file  # noqa: E402


def test_build_check_matches_committed_artifacts(capsys):
    """About 60 s: rebuilds every committed model directory and runs all parity checks."""
    targets = [t for t in cli.plan(only=cli.committed_checkpoints()) if t.committed]
    if not targets:
        pytest.skip(f"no committed checkpoints under {cli.CHECKPOINTS} yet (helper A)")
    rc = cli.main(["build", "--check"])
    out = capsys.readouterr()
    assert rc == 0, out.out + out.err
    assert "committed artifacts match the pipeline" in out.out
    for target in targets:
        assert f"-> {target.name}" in out.out
    compacts = {t.name for t in targets if t.name.endswith("-compact")}
    assert compacts == {"emodb-compact", "ravdess-compact"}


def test_compare_dirs_reports_a_changed_file(tmp_path):
    committed = cli.RUNTIME_MODELS / "emodb-compact"
    if not committed.is_dir():
        pytest.skip("no bundled emodb-compact model yet")
    copy = tmp_path / "emodb-compact"
    shutil.copytree(committed, copy)
    assert cli.compare_dirs(committed, copy) == []
    manifest = json.loads((copy / "manifest.json").read_text())

    def rewrite(fname: str, data: bytes) -> None:
        (copy / fname).write_bytes(data)
        manifest["files"][fname].update(sha256=sha256_file(copy / fname), bytes=len(data))
        (copy / "manifest.json").write_text(json.dumps(manifest))

    # Different weights (one conv kernel scaled by 1.1): must be reported.
    changed = onnx.load(copy / "grad.onnx")
    kernel = max(changed.graph.initializer, key=lambda t: len(t.dims) == 4 and np.prod(t.dims))
    kernel.CopyFrom(numpy_helper.from_array(1.1 * numpy_helper.to_array(kernel), kernel.name))
    rewrite("grad.onnx", changed.SerializeToString())
    notes: list[str] = []
    problems = cli.compare_dirs(copy, committed, notes)
    assert any("grad.onnx: differs" in p for p in problems), (problems, notes)
    # Same graph, different bytes (re-serialised by onnx): accepted with a note.
    shutil.copy(committed / "grad.onnx", copy / "grad.onnx")
    model = onnx.load(copy / "grad.onnx")
    model.producer_version = "re-serialised"
    rewrite("grad.onnx", model.SerializeToString())
    notes = []
    assert cli.compare_dirs(copy, committed, notes) == []
    assert any("outputs equal" in n for n in notes)
    # A changed manifest field (classes) is never accepted.
    manifest["classes"][0] = "rage"
    (copy / "manifest.json").write_text(json.dumps(manifest))
    assert "classes" in cli.compare_dirs(copy, committed)[0]
    (copy / "extra.bin").write_bytes(b"x")
    assert any("not produced" in p for p in cli.compare_dirs(copy, committed))
    assert cli.compare_dirs(tmp_path / "absent", copy)[0].endswith("and commit it)")
