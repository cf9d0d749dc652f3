"""Experiment: the `rebalance` gain stage with a second, coarse layer. GAIN_COARSE="B,CELL,R"
adds a gain field of B bands x CELL s cells whose bound is R times the fine field's
(`--mask-gain-db`) to the runtime's 16 x 100 ms field, for this run only (files: the mask
path; the stream's per-hop field is not layered here), then `plainsight` runs with the
remaining arguments (a measurement, not a setting).

    GAIN_COARSE=2,1.0,4 python exp_layers.py evaluate ... --mask-strength rebalance \
        --mask-gain-db 1.5

The layered gain is the product of the two fields' gains (their dB maps add): one GainField
with both layers' grid weights stacked and a block-diagonal grid.
"""

import os
import sys

import numpy as np
from plainsight import gainfield
from plainsight.cli import main

FineField = gainfield.GainField
BANDS, CELL_S, RATIO = os.environ["GAIN_COARSE"].split(",")
BANDS, CELL_S, RATIO = int(BANDS), float(CELL_S), float(RATIO)


class LayeredField(FineField):
    """Both layers as ONE gain field: the grid weights stacked ([fine | coarse] cells,
    [fine ; coarse] bands), so that a block-diagonal g gives the sum of the two dB maps and
    the runtime's own `gains`, `__call__` and `gradient` do the rest. `scale` keeps g
    block-diagonal (the off-diagonal gradient is zeroed, so sign steps never move it) and
    counts the coarse block RATIO times (gain_db units)."""

    def __init__(self, signal, rate):
        super().__init__(signal, rate)
        coarse = FineField(signal, rate, bands=BANDS, cell_s=CELL_S)
        fine_bands, fine_cells = self.shape
        self.cell_weights = np.hstack([self.cell_weights, coarse.cell_weights])
        self.band_weights = np.vstack([self.band_weights, coarse.band_weights])
        self.shape = (fine_bands + BANDS, fine_cells + coarse.cells)
        self.scale = np.zeros(self.shape, np.float32)
        self.scale[:fine_bands, :fine_cells] = 1.0
        self.scale[fine_bands:, fine_cells:] = RATIO

    def gains(self, g):
        return super().gains(np.asarray(g, np.float32) * self.scale)

    def gradient(self, g, grad_y):
        return super().gradient(g, grad_y) * self.scale


gainfield.GainField = LayeredField
print(f"exp_layers: 16 x 100 ms + {BANDS} bands x {CELL_S:g} s at {RATIO:g} x", file=sys.stderr)

if __name__ == "__main__":
    if "stream" in sys.argv:
        sys.exit("exp_layers: files only (the mask path)")
    sys.exit(main(sys.argv[1:]))
