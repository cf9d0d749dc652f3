"""DNSMOS wrapper (speechmos, extra [eval]): scores in range, noise lowers BAK, bad input."""

import numpy as np
import pytest
from plainsight.evaluate import dnsmos

pytestmark = pytest.mark.skipif(
    not dnsmos.available(), reason="speechmos/librosa not installed (extra [eval])"
)

RATE = 16000


def voiced(seconds=3.0, f0=140.0):
    """A speech-like harmonic tone with a syllable-rate envelope."""
    t = np.arange(int(seconds * RATE)) / RATE
    tone = sum(np.sin(2 * np.pi * f0 * k * t) / k for k in range(1, 20))
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 4.0 * t) ** 2
    return (0.1 * tone * envelope).astype(np.float32)


@pytest.fixture(scope="module")
def model():
    return dnsmos.Dnsmos(threads=1)


def test_scores_in_range_and_noise_lowers_background_score(model):
    clean = voiced()
    noisy = clean + np.random.default_rng(0).normal(0, 0.05, clean.shape).astype(np.float32)
    a, b = model.score(clean), model.score(noisy)
    for s in (a, b):
        assert set(s) == set(dnsmos.KEYS)
        assert all(1.0 <= v <= 5.0 for v in s.values()), s
    assert b["bak"] < a["bak"] - 0.5, (a, b)


def test_summary_counts_clips(model):
    out = model.summary([voiced(1.0), voiced(2.0, 200.0)])
    assert out["clips"] == 2 and out["ovrl"]["n"] == 2


def test_bad_input_refused(model):
    with pytest.raises(ValueError, match="16000"):
        model.score(voiced(), 8000)
    with pytest.raises(ValueError, match="mono"):
        model.score(np.zeros(0, np.float32))
