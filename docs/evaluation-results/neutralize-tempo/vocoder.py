"""A diagnostic bound for any prosody-level tier: LPC analysis-resynthesis with a monotone
excitation. Per 10 ms hop: the 25 ms frame's LPC envelope (order 18, pre-emphasised) is kept;
the source is replaced by a pulse train at one fixed F0 (voiced hops, by the neutralize stage's
YIN) or white noise (unvoiced), and every speech hop gets the same level (the clip's median
speech level). What is left is the articulation (formant trajectories) and the timing: the
words, without pitch, loudness dynamics or voice quality. Not a product stage."""

from __future__ import annotations

import numpy as np
from plainsight.neutralize import LEVEL_GATE_DBFS, Geometry, frame_features
from scipy.linalg import solve_toeplitz
from scipy.signal import lfilter

ORDER = 18
FRAME_S = 0.025
F0_HZ = 120.0
PRE = 0.97


def lpc(frame: np.ndarray) -> tuple[np.ndarray, float]:
    r = np.correlate(frame, frame, mode="full")[len(frame) - 1 : len(frame) + ORDER]
    if r[0] <= 1e-10:
        return np.r_[1.0, np.zeros(ORDER)], 0.0
    r = r * np.exp(-0.5 * (2 * np.pi * 60 / 16000 * np.arange(ORDER + 1)) ** 2)  # lag window
    r[0] *= 1.0001
    coef = solve_toeplitz(r[:ORDER], -r[1 : ORDER + 1])
    a = np.r_[1.0, coef]
    error = float(r[0] + np.dot(coef, r[1 : ORDER + 1]))
    return a, max(error, 1e-12) / len(frame)


def vocode(audio: np.ndarray, rate: int = 16000, seed: int = 0) -> np.ndarray:
    x = np.asarray(audio, dtype=np.float64)
    geo = Geometry(rate)
    period, level, _ = frame_features(x, geo)
    hop, n = geo.hop, int(FRAME_S * rate)
    emph = lfilter([1, -PRE], [1], x)
    padded = np.pad(emph, (n // 2, n))
    window = np.hanning(n)
    speech = level > max(LEVEL_GATE_DBFS, np.percentile(level, 95) - 30)
    target_db = np.median(level[speech]) if speech.any() else -30.0
    rng = np.random.default_rng(seed)
    out = np.zeros(len(period) * hop)
    state = np.zeros(ORDER)
    phase = 0.0
    for i in range(len(period)):
        a, error_power = lpc(padded[i * hop : i * hop + n] * window)
        if period[i] > 0:
            excitation = np.zeros(hop)
            step = rate / F0_HZ
            while phase < hop:
                excitation[int(phase)] = np.sqrt(step)
                phase += step
            phase -= hop
        else:
            excitation = rng.standard_normal(hop)
        seg, state = lfilter([1.0], a, excitation, zi=state)
        out[i * hop : (i + 1) * hop] = seg * np.sqrt(error_power)
    y = lfilter([1], [1, -PRE], out)[: len(x)]
    # level: each speech hop to the median speech level (smoothed gain), others as they came
    frames = np.pad(y, (0, len(period) * hop - len(y))).reshape(-1, hop)
    have = 10 * np.log10(np.mean(frames**2, axis=1) + 1e-12)
    gain_db = np.where(speech, target_db - have, level - have)
    kernel = np.hanning(7) / np.hanning(7).sum()
    gain_db = np.convolve(gain_db, kernel, mode="same")
    gain = np.repeat(10 ** (gain_db / 20), hop)[: len(y)]
    return y * gain
