"""Band-limited resampling in numpy (Kaiser-windowed sinc, polyphase).

The runtime must accept any input rate and hand the models 16 kHz, without scipy.
"""

from __future__ import annotations

from functools import lru_cache
from math import ceil, gcd

import numpy as np

_ZERO_CROSSINGS = 16
_KAISER_BETA = 8.6


def kernel_half_width(up: int, down: int) -> int:
    """Taps on each side of an output sample, in input samples (see _kernel_table)."""
    return int(ceil(_ZERO_CROSSINGS / (min(1.0, up / down) * 0.97)))


@lru_cache(maxsize=4)  # blockwise resampling asks for the same table again and again
def _kernel_table(up: int, down: int) -> tuple[np.ndarray, int]:
    cutoff = min(1.0, up / down) * 0.97  # a little below Nyquist to limit aliasing
    half = int(np.ceil(_ZERO_CROSSINGS / cutoff))
    phases = np.arange(up)[:, None] / up  # fractional position of each phase
    offsets = phases - (np.arange(2 * half)[None, :] - half + 1)  # t - k for each tap
    arg = np.clip(1.0 - (offsets / (half + 1)) ** 2, 0.0, None)
    window = np.i0(_KAISER_BETA * np.sqrt(arg)) / np.i0(_KAISER_BETA)
    table = cutoff * np.sinc(cutoff * offsets) * window
    return table.astype(np.float64), half


def resample(audio: np.ndarray, orig_rate: int, new_rate: int, chunk: int = 65536) -> np.ndarray:
    """Resample along axis 0. Output length is round(len * new_rate / orig_rate)."""
    audio = np.asarray(audio)
    if orig_rate == new_rate:
        return audio.astype(np.float32, copy=True)
    if orig_rate <= 0 or new_rate <= 0:
        raise ValueError(f"sample rates must be positive, got {orig_rate} -> {new_rate}")
    g = gcd(int(orig_rate), int(new_rate))
    up, down = int(new_rate) // g, int(orig_rate) // g
    table, half = _kernel_table(up, down)
    n_in = audio.shape[0]
    n_out = int(round(n_in * up / down))
    x = audio.reshape(n_in, -1).astype(np.float64)
    padded = np.concatenate([np.zeros((half, x.shape[1])), x, np.zeros((half + 1, x.shape[1]))])
    out = np.empty((n_out, x.shape[1]), np.float64)
    taps = np.arange(2 * half) - half + 1
    for start in range(0, n_out, chunk):
        m = np.arange(start, min(start + chunk, n_out))
        base = (m * down) // up
        phase = (m * down) % up
        idx = base[:, None] + taps[None, :] + half  # index into padded
        out[start : start + len(m)] = np.einsum("mt,mtc->mc", table[phase], padded[idx])
    return out.reshape((n_out,) + audio.shape[1:]).astype(np.float32)
