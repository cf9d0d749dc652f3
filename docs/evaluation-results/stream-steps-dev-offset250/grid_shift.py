"""Experiment: stream hops with the per-step grid shift of mask (window graph, SHIFT_MS).
Run: SHIFT_MS=20 python grid_shift.py evaluate ... --path stream
"""

import os
import sys

import numpy as np
from plainsight import stream as S
from plainsight.cli import main

SHIFT = int(float(os.environ.get("SHIFT_MS", "20")) * 16)


def _attack(self, n16):
    m = self.masker
    valid = np.zeros(m.window, np.float32)
    valid[m.window - self.seen16 :] = 1.0
    bound = m.budget(self.raw16[None], valid[None])[0]
    bound[: m.window - n16] = 0.0
    context = self.raw16 + self.delta16
    start = np.zeros(1, int)
    return m._optimise(context, bound, start, self.raw16[None], m.stream_steps, shift=SHIFT)


S.StreamProcessor._attack = _attack
sys.exit(main(sys.argv[1:]))
