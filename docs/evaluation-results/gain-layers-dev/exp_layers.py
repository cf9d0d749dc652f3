"""Experiment: the `rebalance` gain stage with a second, coarse layer. GAIN_COARSE="B,CELL,R"
adds a gain field of B bands x CELL s cells whose bound is R times the fine field's
(`--mask-gain-db`) to the runtime's 16 x 100 ms field, for this run only (files: the mask
path; the stream's per-hop field is not layered here), then `plainsight` runs with the
remaining arguments (a measurement, not a setting).

    GAIN_COARSE=2,1.0,4 python exp_layers.py evaluate ... --mask-strength rebalance \
        --mask-gain-db 1.5

The layered gain is the product of the two fields' gains (their dB maps add); the gradient
projects the same d loss / d dB map onto each layer's grid.
"""

import os
import sys

import numpy as np
from plainsight import gainfield
from plainsight.cli import main
from plainsight.shaping import CHUNK, _window

FineField = gainfield.GainField
BANDS, CELL_S, RATIO = os.environ["GAIN_COARSE"].split(",")
BANDS, CELL_S, RATIO = int(BANDS), float(CELL_S), float(RATIO)


class LayeredField(FineField):
    """The fine field over a flat grid g = [fine cells..., coarse cells...] (gain_db units;
    the coarse part counts RATIO times)."""

    def __init__(self, signal, rate):
        super().__init__(signal, rate)
        self.coarse = FineField(signal, rate, bands=BANDS, cell_s=CELL_S)
        self.fine_shape = self.shape
        self.split = int(np.prod(self.fine_shape))
        self.shape = (self.split + int(np.prod(self.coarse.shape)),)

    def _parts(self, g):
        g = np.asarray(g, np.float32)
        fine = g[: self.split].reshape(self.fine_shape)
        return fine, RATIO * g[self.split :].reshape(self.coarse.shape)

    def gains(self, g):
        fine, coarse = self._parts(g)
        return super().gains(fine) * self.coarse.gains(coarse)

    def gradient(self, g, grad_y):
        gain, window = self.gains(g), _window()
        frames = self._frames(np.asarray(grad_y, np.float32) / self.norm)
        grad_db = np.empty(gain.shape, np.float32)
        for first in range(0, self.count, CHUNK):
            last = min(first + CHUNK, self.count)
            back = np.fft.rfft(frames[first:last] * window, axis=1)
            grad_gain = np.real(self.spectrum[first:last] * np.conj(back)) * self.bin_weight
            grad_db[first:last] = grad_gain * gain[first:last] * gainfield.DB
        fine = (self.cell_weights.T @ grad_db @ self.band_weights.T).T
        coarse = (self.coarse.cell_weights.T @ grad_db @ self.coarse.band_weights.T).T
        return np.concatenate([fine.ravel(), RATIO * coarse.ravel()])


gainfield.GainField = LayeredField
print(f"exp_layers: 16 x 100 ms + {BANDS} bands x {CELL_S:g} s at {RATIO:g} x", file=sys.stderr)

if __name__ == "__main__":
    if "stream" in sys.argv:
        sys.exit("exp_layers: files only (the mask path)")
    sys.exit(main(sys.argv[1:]))
