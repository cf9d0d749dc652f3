"""CI pipeline: committed checkpoints -> export -> verify -> compare with committed artifacts."""

from __future__ import annotations

import shutil

import pytest

pytest.importorskip("torch")
pytest.importorskip("litert_torch")
pytest.importorskip("ai_edge_litert")

from plainsight_export import cli  # noqa: E402


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
    data = bytearray((copy / "grad.tflite").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (copy / "grad.tflite").write_bytes(bytes(data))
    (copy / "extra.bin").write_bytes(b"x")
    problems = cli.compare_dirs(committed, copy)
    assert any("grad.tflite: differs" in p for p in problems)
    assert any("extra.bin: missing" in p for p in problems)
    assert cli.compare_dirs(tmp_path / "absent", copy)[0].endswith("and commit it)")
