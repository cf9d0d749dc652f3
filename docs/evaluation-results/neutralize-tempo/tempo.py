"""Tempo normalisation (issue 12's optional file-only stage), numpy only: an experiment.

Two timing cues, each pulled toward a fixed target by `strength`:
- pauses: every run of non-speech frames longer than PAUSE_TARGET_S is cut (with a short
  crossfade) toward PAUSE_TARGET_S;
- speaking rate: syllable nuclei (peaks of the 300-3000 Hz band level, at least PEAK_DB
  above the dips beside them, MIN_GAP_S apart) per second of speech; the whole clip is
  time-stretched by WSOLA by (rate / TARGET_RATE) ** strength, clamped to STRETCH_LIMITS.
The output length differs from the input's: a file form only (stream keeps sample counts).
"""

from __future__ import annotations

import numpy as np

HOP_S = 0.010
FRAME_S = 0.025
TARGET_RATE = (
    5.9  # syllable nuclei per second of speech: the EmoDB training clips' median (rates.py)
)
PAUSE_TARGET_S = 0.15
CROSSFADE_S = 0.01
PEAK_DB = 3.0
MIN_GAP_S = 0.10
STRETCH_LIMITS = (0.67, 1.5)
SPEECH_BELOW_P95_DB = 30.0
WSOLA_FRAME_S = 0.040
WSOLA_TOLERANCE_S = 0.010


def _frames_db(audio: np.ndarray, rate: int, band=None) -> np.ndarray:
    hop, n = int(HOP_S * rate), int(FRAME_S * rate)
    count = max(1, 1 + (len(audio) - n) // hop)
    padded = np.pad(audio, (0, max(0, n + (count - 1) * hop - len(audio))))
    idx = np.arange(n)[None, :] + hop * np.arange(count)[:, None]
    frames = padded[idx] * np.hanning(n)
    if band is None:
        power = np.mean(frames**2, axis=1)
    else:
        spec = np.abs(np.fft.rfft(frames, axis=1)) ** 2
        freqs = np.fft.rfftfreq(n, 1 / rate)
        power = spec[:, (freqs >= band[0]) & (freqs <= band[1])].sum(axis=1) / n**2
    return 10 * np.log10(power + 1e-12)


def speech_frames(audio: np.ndarray, rate: int) -> np.ndarray:
    level = _frames_db(audio, rate)
    gate = max(-50.0, np.percentile(level, 95) - SPEECH_BELOW_P95_DB)
    return level > gate


def syllable_rate(audio: np.ndarray, rate: int) -> float:
    """Syllable nuclei per second of speech (0 if no speech)."""
    speech = speech_frames(audio, rate)
    if speech.sum() < 10:
        return 0.0
    band = _frames_db(audio, rate, band=(300.0, 3000.0))
    kernel = np.hanning(7)
    band = np.convolve(band, kernel / kernel.sum(), mode="same")
    gap = int(MIN_GAP_S / HOP_S)
    peaks = []
    for i in range(1, len(band) - 1):
        if not speech[i] or band[i] < band[i - 1] or band[i] < band[i + 1]:
            continue
        left = band[max(0, i - 2 * gap) : i].min(initial=band[i])
        right = band[i + 1 : i + 1 + 2 * gap].min(initial=band[i])
        if band[i] - max(left, right) < PEAK_DB:
            continue
        if peaks and i - peaks[-1] < gap:
            if band[i] > band[peaks[-1]]:
                peaks[-1] = i
            continue
        peaks.append(i)
    return len(peaks) / (speech.sum() * HOP_S)


def shorten_pauses(audio: np.ndarray, rate: int, strength: float) -> np.ndarray:
    """Each non-speech run longer than the target keeps target + (excess) * (1 - strength)."""
    speech = speech_frames(audio, rate)
    hop = int(HOP_S * rate)
    fade = int(CROSSFADE_S * rate)
    runs, start = [], None
    for i, s in enumerate(np.append(speech, True)):
        if not s and start is None:
            start = i
        elif s and start is not None:
            runs.append((start, i))
            start = None
    pieces, cursor = [], 0
    for a, b in runs:
        if a == 0 or b >= len(speech):  # leading / trailing silence: leave it
            continue
        length = (b - a) * HOP_S
        keep = PAUSE_TARGET_S + (length - PAUSE_TARGET_S) * (1 - strength)
        cut = int(round((length - keep) * rate))
        if cut <= 2 * fade:
            continue
        mid = (a + b) * hop // 2
        lo, hi = mid - cut // 2, mid - cut // 2 + cut
        pieces.append(audio[cursor:lo])
        ramp = np.linspace(0, 1, fade)
        pieces.append(audio[lo : lo + fade] * (1 - ramp) + audio[hi : hi + fade] * ramp)
        cursor = hi + fade
    pieces.append(audio[cursor:])
    return np.concatenate(pieces)


def wsola(audio: np.ndarray, factor: float, rate: int) -> np.ndarray:
    """Time-stretch by `factor` (> 1 longer) keeping pitch: waveform-similarity overlap-add."""
    n = int(WSOLA_FRAME_S * rate) // 2 * 2
    synthesis_hop = n // 2
    analysis_hop = synthesis_hop / factor
    tol = int(WSOLA_TOLERANCE_S * rate)
    window = np.hanning(n + 1)[:n]  # periodic Hann: sums to 1 at half overlap
    x = np.pad(audio, (tol + n, tol + 2 * n))
    out_len = int(round(len(audio) * factor))
    count = out_len // synthesis_hop + 1
    y = np.zeros(count * synthesis_hop + n)
    norm = np.zeros_like(y)
    natural = None
    for k in range(count):
        nominal = tol + n + int(round(k * analysis_hop)) - n // 2
        if natural is None:
            delta = 0
        else:
            region = x[nominal - tol : nominal + tol + n]
            score = np.correlate(region, natural, mode="valid")
            delta = int(np.argmax(score)) - tol
        pos = nominal + delta
        y[k * synthesis_hop : k * synthesis_hop + n] += window * x[pos : pos + n]
        norm[k * synthesis_hop : k * synthesis_hop + n] += window
        natural = x[pos + synthesis_hop : pos + synthesis_hop + n]
    y = y / np.maximum(norm, 1e-3)
    return y[n // 2 : n // 2 + out_len]


def normalize_tempo(audio: np.ndarray, rate: int, strength: float = 1.0) -> np.ndarray:
    audio = np.asarray(audio, dtype=np.float64)
    out = shorten_pauses(audio, rate, strength)
    syllables = syllable_rate(out, rate)
    if syllables <= 0:
        return out
    factor = float(np.clip((syllables / TARGET_RATE) ** strength, *STRETCH_LIMITS))
    return wsola(out, factor, rate) if abs(factor - 1) > 0.02 else out
