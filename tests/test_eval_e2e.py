"""A small end-to-end `plainsight evaluate` on real held-out clips (needs PLAINSIGHT_DATA).

Asserts what must hold on any honest run: masking lowers the white-box UAR, output lengths
equal input lengths, and Whisper transcribes clean RAVDESS sanely (WER < 0.3), which proves
the offline speech-to-text path really runs. About 1-2 minutes on 2 cores.
"""

from __future__ import annotations

import json
import os

import pytest

pytest.importorskip("jiwer", reason="extra [eval] not installed (jiwer)")
pytest.importorskip("faster_whisper", reason="extra [eval] not installed (faster-whisper)")
pytest.importorskip("pesq", reason="extra [eval] not installed (pesq)")
pytest.importorskip("pystoi", reason="extra [eval] not installed (pystoi)")

from plainsight.evaluate import whisper_weights  # noqa: E402
from plainsight.manifest import BUNDLED_DIR  # noqa: E402

pytestmark = [pytest.mark.corpus, pytest.mark.slow]


def _data() -> str:
    data = os.environ.get("PLAINSIGHT_DATA")
    if not data:
        pytest.skip("PLAINSIGHT_DATA not set: the end-to-end evaluation needs the corpora")
    return data


def _need_model(corpus: str) -> None:
    if not (BUNDLED_DIR / f"{corpus}-compact" / "manifest.json").is_file():
        pytest.skip(f"bundled model {corpus}-compact not exported yet ({BUNDLED_DIR})")


@pytest.mark.parametrize("corpus,limit,asr", [("emodb", 14, 0), ("ravdess", 16, 8)])
def test_small_evaluation(corpus, limit, asr, tmp_path):
    data = _data()
    _need_model(corpus)
    if asr and not whisper_weights.weights_installed():
        pytest.skip(f"Whisper weights missing: {whisper_weights.INSTALL_HINT}")
    from plainsight.cli import main

    out = tmp_path / corpus
    argv = [
        "evaluate",
        "--corpus",
        corpus,
        "--data",
        data,
        "--limit",
        str(limit),
        "--out",
        str(out),
        "--no-curves",
        "--quiet",
        "--asr-limit",
        str(asr),
    ]
    if asr:
        argv += ["--whisper-dir", str(tmp_path / "whisper")]
    else:
        argv.append("--no-asr")
    assert main(argv) == 0
    result = json.loads((out / "evaluate.json").read_text())
    assert (out / "evaluate.md").read_text().startswith(f"# plainsight evaluate: {corpus}")
    assert result["clips"] == limit and result["lengths_equal"] is True
    for name, clean in result["whitebox"]["clean"].items():
        masked = result["whitebox"]["masked"][name]
        assert masked["uar"] < clean["uar"], (name, clean["uar"], masked["uar"])
    snr = result["quality"]["masked"]["snr_db"]["median"]
    noise_snr = result["quality"]["noise"]["snr_db"]["median"]
    assert abs(snr - noise_snr) < 0.5  # the noise control really sits at the same SNR
    assert 0 < result["rtf"] < 1
    if asr:
        assert result["asr"]["clips"] == asr
        assert result["asr"]["clean"]["wer"] < 0.3, result["asr"]["clean"]


def test_missing_data_is_one_line_error(tmp_path, capsys, monkeypatch):
    from plainsight.cli import main

    monkeypatch.chdir(tmp_path)
    rc = main(["evaluate", "--corpus", "emodb", "--data", str(tmp_path / "nope"), "--no-asr"])
    assert rc == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "corpus folder not found" in err[0]
    assert not (tmp_path / "eval-out").exists()  # nothing written for a bad input
