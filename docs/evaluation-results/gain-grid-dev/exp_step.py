"""Experiment: the gain stage's step rule on the grid. GAIN_STEP_RULE=sign is the runtime's
I-FGSM (every cell moves by the same amount each step, so most end at +-gain_db);
`scaled` moves each cell in proportion to its gradient (grad / max |grad| per step), so
the field spends its bound where the loss is sensitive. File path only (Masker.rebalance);
a measurement, not a setting.

    GAIN_STEP_RULE=scaled python exp_step.py evaluate ... --mask-gain-db 4.5
"""

import os
import sys

import numpy as np
from plainsight import masker as M
from plainsight.cli import main
from plainsight.gainfield import GainField

RULE = os.environ.get("GAIN_STEP_RULE", "sign")


def rebalance(self, signal, starts, clean):
    field = GainField(signal, self.sample_rate)
    index = np.asarray(starts)[:, None] + np.arange(self.window)[None, :]
    targets = [self._targets(m, clean) for m in self.members]
    direction = 1.0 if self.objective == "untargeted" else -1.0
    step = min(1.0, 2.0 / M.GAIN_STEPS)
    u = np.zeros(field.shape, np.float32)
    for _ in range(M.GAIN_STEPS):
        g = self.gain_db * u
        grad = field.gradient(g, self._summed_gradient(field(g), index, targets))
        if RULE == "sign":
            move = np.sign(grad)
        else:
            move = grad / max(float(np.abs(grad).max()), 1e-30)
        u = np.clip(u + direction * step * move, -1.0, 1.0)
    return field(self.gain_db * u).astype(np.float32)


M.Masker.rebalance = rebalance
print(f"exp_step: {RULE}", file=sys.stderr)

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
