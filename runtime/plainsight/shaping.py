"""Perceptual shaping: spend the perturbation's budget under the speech's masking threshold.

A flat (white) perturbation is audible first in the quiet time-frequency bins between and
above the loud ones. Hearing masks a quiet sound near a loud one (simultaneous masking,
spread on the Bark scale far more upward than downward), so the same energy shaped like the
speech's masking threshold is much harder to hear: at the same PESQ it can carry about
10 dB more energy (docs/EVALUATION.md, "A psychoacoustic bound").

The shaper is a fixed linear map of the optimised signal v, computed once from the audio
being masked: delta = mask * ISTFT(W * STFT(v)), W = threshold ** (exponent / 2) per bin
(a weighted overlap-add filter with sqrt-Hann windows, zero-phase per frame, so its adjoint
is the same filter applied in reverse order). `mask` keeps delta where the budget is > 0.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

N_FFT = 512
HOP = 128
OVERLAP = N_FFT // HOP
CHUNK = 256  # frames per FFT batch (a multiple of OVERLAP)
FLOOR_DB = -50.0  # weights below this (relative to the loudest) are lifted to it
RATE = 16000


def bark(freqs: np.ndarray) -> np.ndarray:
    return 13.0 * np.arctan(0.00076 * freqs) + 3.5 * np.arctan((freqs / 7500.0) ** 2)


@lru_cache(maxsize=2)
def spreading(n_fft: int = N_FFT, rate: int = RATE) -> np.ndarray:
    """[F, F] power spreading from masker bin (column) to maskee bin (row): Schroeder's
    function on the Bark scale, as MPEG's psychoacoustic models use (far from a masker
    +25 dB/Bark below it, -10 dB/Bark above)."""
    z = bark(np.fft.rfftfreq(n_fft, 1.0 / rate))
    dz = z[:, None] - z[None, :] + 0.474
    spread = 10.0 ** ((15.81 + 7.5 * dz - 17.5 * np.sqrt(1.0 + dz**2)) / 10.0)
    spread.flags.writeable = False
    return spread.astype(np.float32)


@lru_cache(maxsize=2)
def _window(n_fft: int = N_FFT) -> np.ndarray:
    hann = 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(n_fft) / n_fft)  # periodic
    return np.sqrt(hann).astype(np.float32)


def masking_threshold(power: np.ndarray, rate: int = RATE) -> np.ndarray:
    """Masking threshold [T, F] of a power spectrogram [T, F] at `rate`, up to a constant."""
    return power @ spreading(N_FFT, rate).T


class Wola:
    """Frames of a signal of n samples (N_FFT long, hop HOP, the first and last half
    outside) and their weighted overlap-add back to n samples, CHUNK frames at a time."""

    def __init__(self, n: int):
        self.n = n
        self.count = 1 + n // HOP  # frames; the first and last are half outside
        # overlap-add normalisation: the sum of analysis x synthesis windows at each sample
        self.norm = np.maximum(self._overlap_add(lambda first, last: _window() ** 2), 1e-6)

    def _frames(self, x: np.ndarray) -> np.ndarray:
        padded = np.pad(x, (N_FFT // 2, N_FFT // 2 + HOP))
        return np.lib.stride_tricks.sliding_window_view(padded, N_FFT)[::HOP][: self.count]

    def _overlap_add(self, chunk) -> np.ndarray:
        """Sum of the frames chunk(first, last) [last - first, N_FFT] (or one frame for
        all) placed at their hops, cropped to the signal."""
        out = np.zeros(self.count * HOP + 2 * N_FFT, np.float32)
        for first in range(0, self.count, CHUNK):
            last = min(first + CHUNK, self.count)
            frames = np.broadcast_to(chunk(first, last), (last - first, N_FFT))
            # every OVERLAP-th frame tiles the signal without overlap: add each set at once
            for k in range(OVERLAP):
                group = frames[k::OVERLAP].reshape(-1)
                start = (first + k) * HOP
                out[start : start + len(group)] += group
        return out[N_FFT // 2 : N_FFT // 2 + self.n]


class Shaper(Wola):
    """The linear map v -> delta for one signal (see the module doc). `exponent` 0 is a
    plain pass-through (apart from `mask`); 1 follows the threshold's amplitude. Frames
    are processed CHUNK at a time, so the memory beyond the signal stays small."""

    def __init__(self, signal: np.ndarray, mask: np.ndarray, exponent: float, rate: int = RATE):
        super().__init__(len(signal))
        self.mask = (np.asarray(mask) > 0).astype(np.float32)
        window = _window()
        frames = self._frames(np.asarray(signal, np.float32))
        weight = np.empty((self.count, N_FFT // 2 + 1), np.float32)
        for first in range(0, self.count, CHUNK):
            power = np.abs(np.fft.rfft(frames[first : first + CHUNK] * window, axis=1)) ** 2
            weight[first : first + CHUNK] = masking_threshold(power.astype(np.float32), rate)
        np.maximum(weight, weight.max() * 10.0 ** (FLOOR_DB / 10.0) + 1e-30, out=weight)
        weight **= float(exponent) / 2.0
        weight /= np.sqrt(np.mean(weight.astype(np.float64) ** 2))
        self.weight = weight

    def _filtered(self, x: np.ndarray) -> np.ndarray:
        """OLA of the frames of x, each windowed, weighted per bin and windowed again."""
        window, frames = _window(), self._frames(np.asarray(x, np.float32))

        def chunk(first: int, last: int) -> np.ndarray:
            spectrum = np.fft.rfft(frames[first:last] * window, axis=1)
            spectrum *= self.weight[first:last]
            return np.fft.irfft(spectrum, N_FFT, axis=1).astype(np.float32) * window

        return self._overlap_add(chunk)

    def __call__(self, v: np.ndarray) -> np.ndarray:
        """delta = mask * OLA(filtered frames of v) / norm."""
        return (self._filtered(v) / self.norm * self.mask).astype(np.float32)

    def adjoint(self, g: np.ndarray) -> np.ndarray:
        """The transpose of __call__: d loss / d v from d loss / d delta."""
        return self._filtered(np.asarray(g, np.float32) * self.mask / self.norm)
