"""Experiment: the gain stage on another grid. GAIN_BANDS and GAIN_CELL_S (seconds between
grid points in time) replace gainfield.BANDS / CELL_S for this run only, then
`plainsight` runs with the remaining arguments (a measurement, not a setting).

    GAIN_CELL_S=1.0 GAIN_BANDS=16 python exp_grid.py evaluate ... --mask-gain-db 5
"""

import os
import sys

from plainsight import gainfield
from plainsight.cli import main

bands = int(os.environ.get("GAIN_BANDS", gainfield.BANDS))
cell_s = float(os.environ.get("GAIN_CELL_S", gainfield.CELL_S))
gainfield.GainField.__init__.__defaults__ = (bands, cell_s, 0.0)
print(f"exp_grid: {bands} bands x {cell_s:g} s cells", file=sys.stderr)

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
