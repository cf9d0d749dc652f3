"""The torch front end (export) must equal the numpy one (runtime) to 1e-4."""

from __future__ import annotations

import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from plainsight.features import FeatureConfig, log_mel  # noqa: E402
from plainsight_export.frontend import LogMel  # noqa: E402

TOL = 1e-4


def _stats_cfg() -> FeatureConfig:
    rng = np.random.default_rng(3)
    return FeatureConfig().with_stats(rng.normal(-8, 2, 40), rng.uniform(1.5, 4, 40))


def _torch_feats(audio: np.ndarray, cfg: FeatureConfig) -> np.ndarray:
    with torch.no_grad():
        return LogMel(cfg)(torch.from_numpy(audio.astype(np.float32))).numpy()


def _synthetic(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(n) / 16000
    tone = 0.3 * np.sin(2 * np.pi * (150 + 400 * t) * t)
    return (tone + 0.05 * rng.standard_normal(n)).astype(np.float32)


@pytest.mark.parametrize("n", [160, 32000, 16123])
def test_parity_synthetic(n):
    cfg = _stats_cfg()
    audio = np.stack([_synthetic(n, 0), _synthetic(n, 1) * 0.01])
    ref = log_mel(audio, cfg)
    out = _torch_feats(audio, cfg)
    assert out.shape == ref.shape == (2, n // 160, 40)
    assert np.max(np.abs(out - ref)) < TOL


def test_parity_silence_and_unstandardised():
    # Exact zeros around a loud tone burst: checks the edge padding and the log floor.
    # (A flat DC step is not used: float32 DFT rounding then dominates near-empty bins.)
    cfg = FeatureConfig()
    audio = np.zeros((1, 3200), np.float32)
    audio[0, 1000:1800] = 0.9 * np.sin(2 * np.pi * 440 * np.arange(800) / 16000)
    assert np.max(np.abs(_torch_feats(audio, cfg) - log_mel(audio, cfg))) < TOL


def test_parity_detects_a_wrong_config():
    audio = _synthetic(8000, 2)[None]
    wrong = LogMel(FeatureConfig(n_mels=40, f_max=7000.0))
    with torch.no_grad():
        out = wrong(torch.from_numpy(audio)).numpy()
    assert np.max(np.abs(out - log_mel(audio, FeatureConfig()))) > TOL


def test_gradient_flows_to_waveform():
    x = torch.from_numpy(_synthetic(4000, 4)[None]).requires_grad_(True)
    LogMel(_stats_cfg())(x).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_parity_real_audio():
    data = os.environ.get("PLAINSIGHT_DATA")
    if not data:
        pytest.skip("PLAINSIGHT_DATA not set: real-audio parity needs the corpora")
    from plainsight.corpora import list_corpus, load_audio

    cfg = _stats_cfg()
    for corpus in ("emodb", "ravdess"):
        utts = list_corpus(data, corpus)
        for utt in utts[:: len(utts) // 4][:4]:
            audio = load_audio(utt.path)[None]
            err = np.max(np.abs(_torch_feats(audio, cfg) - log_mel(audio, cfg)))
            assert err < TOL, f"{utt.path.name}: max abs diff {err}"
