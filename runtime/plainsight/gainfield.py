"""A gain field: the speech made slightly louder or quieter in broad time-frequency regions.

A sample-level perturbation that fools the bundled model is a direction the other emotion
models do not read (docs/EVALUATION.md: not at 35 dB, not 20 dB louder under the masking
threshold). What every model on the panel does read is the coarse spectral balance over
time: a random equaliser moves them all. So this stage optimises a smooth gain instead,
G(t, f) in dB, set on a coarse grid (BANDS log-spaced bands from 100 Hz to 7 kHz, a point
every CELL_S) and interpolated linearly between grid points:

    y = OLA(window * IRFFT(RFFT(window * frame_t(x)) * 10 ** (G / 20))) / norm

The perturbation y - x is the speech itself, re-balanced: no noise is added. The gradient
reaches the grid through the exact adjoint (`gradient`). The same weighted overlap-add as
plainsight.shaping (512-point sqrt-Hann frames, hop 128); g = 0 gives back x.
"""

from __future__ import annotations

import numpy as np

from plainsight.shaping import CHUNK, N_FFT, Wola, _window

BANDS = 16
CELL_S = 0.1
LOWEST_HZ, HIGHEST_HZ = 100.0, 7000.0
DB = np.log(10.0) / 20.0  # d gain / d dB, per unit gain
# A sample's last frame ends N_FFT // 2 after it: a stream holds back that much input so
# that every frame of a hop is whole (without it, 16 ms at each hop's end were gained from
# half-empty frames: PESQ-wb of the gain alone 4.32 instead of 4.50 on EmoDB clips).
LOOKAHEAD = N_FFT // 2


def hat_matrix(at: np.ndarray, knots: np.ndarray) -> np.ndarray:
    """[len(at), len(knots)]: linear interpolation weights of each point between the knots
    (constant beyond the first and the last)."""
    eye = np.eye(len(knots))
    return np.stack([np.interp(at, knots, eye[k]) for k in range(len(knots))], 1).astype(np.float32)


class GainField(Wola):
    """The map g [bands, cells] (dB) -> gained signal for one signal at `rate`.

    The grid's cells sit at whole multiples of `cell_s` on a clock where the signal starts at
    `origin_s` (a stream hop's place in the stream): cell j of g is cell `first_cell + j` of
    that clock, so fields over overlapping stretches of one stream share their cells."""

    def __init__(
        self,
        signal: np.ndarray,
        rate: int,
        bands: int = BANDS,
        cell_s: float = CELL_S,
        origin_s: float = 0.0,
    ):
        super().__init__(len(signal))
        window = _window()
        frames = self._frames(np.asarray(signal, np.float32))
        self.spectrum = np.empty((self.count, N_FFT // 2 + 1), np.complex64)
        for first in range(0, self.count, CHUNK):
            self.spectrum[first : first + CHUNK] = np.fft.rfft(
                frames[first : first + CHUNK] * window, axis=1
            )
        freqs = np.fft.rfftfreq(N_FFT, 1.0 / rate)
        centres = np.geomspace(LOWEST_HZ, min(HIGHEST_HZ, 0.45 * rate), bands)
        self.band_weights = hat_matrix(np.log(np.maximum(freqs, 1.0)), np.log(centres)).T
        self.first_cell = int(np.floor(origin_s / cell_s + 1e-9))
        last_cell = int(np.ceil((origin_s + self.n / rate) / cell_s - 1e-9))
        self.cells = last_cell - self.first_cell + 1
        frame_s = origin_s + np.arange(self.count) * (N_FFT // 4) / rate
        knots = (self.first_cell + np.arange(self.cells)) * cell_s
        self.cell_weights = hat_matrix(frame_s, knots)  # [T, cells]
        self.shape = (bands, self.cells)
        # irfft's weight of each bin in the real signal: DC and Nyquist once, the rest twice
        self.bin_weight = np.full(N_FFT // 2 + 1, 2.0 / N_FFT, np.float32)
        self.bin_weight[[0, -1]] = 1.0 / N_FFT

    def gains(self, g: np.ndarray) -> np.ndarray:
        """Linear gain [frames, bins] of the grid g [bands, cells] in dB."""
        db = self.cell_weights @ np.asarray(g, np.float32).T @ self.band_weights
        return np.exp(DB * db, dtype=np.float32)

    def __call__(self, g: np.ndarray) -> np.ndarray:
        gain, window = self.gains(g), _window()

        def chunk(first: int, last: int) -> np.ndarray:
            spectrum = self.spectrum[first:last] * gain[first:last]
            return np.fft.irfft(spectrum, N_FFT, axis=1).astype(np.float32) * window

        return self._overlap_add(chunk) / self.norm

    def gradient(self, g: np.ndarray, grad_y: np.ndarray) -> np.ndarray:
        """d loss / d g [bands, cells] from d loss / d y at y = self(g)."""
        gain, window = self.gains(g), _window()
        frames = self._frames(np.asarray(grad_y, np.float32) / self.norm)
        grad_db = np.empty(gain.shape, np.float32)
        for first in range(0, self.count, CHUNK):
            last = min(first + CHUNK, self.count)
            back = np.fft.rfft(frames[first:last] * window, axis=1)
            grad_gain = np.real(self.spectrum[first:last] * np.conj(back)) * self.bin_weight
            grad_db[first:last] = grad_gain * gain[first:last] * DB
        return (self.cell_weights.T @ grad_db @ self.band_weights.T).T
