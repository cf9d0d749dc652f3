"""Experiment: the gain stage's objective apart from the mask's. GAIN_OBJECTIVE=untargeted
runs the gain stage (files: Masker.rebalance; stream: Masker.rebalance_hop) away from each
model's own prediction while the mask keeps the masker's objective (`neutral` by default);
unset, both stages use the masker's objective, as the runtime does. A measurement, not a
setting.

    GAIN_OBJECTIVE=untargeted python exp_objective.py evaluate ... --mask-strength rebalance
"""

import os
import sys

from plainsight import masker as M
from plainsight.cli import main

GAIN_OBJECTIVE = os.environ.get("GAIN_OBJECTIVE")


def with_gain_objective(stage):
    def run(self, *args, **kwargs):
        saved = self.objective
        self.objective = GAIN_OBJECTIVE or saved
        try:
            return stage(self, *args, **kwargs)
        finally:
            self.objective = saved

    return run


M.Masker.rebalance = with_gain_objective(M.Masker.rebalance)
M.Masker.rebalance_hop = with_gain_objective(M.Masker.rebalance_hop)
print(f"exp_objective: gain stage {GAIN_OBJECTIVE or 'as the mask'}", file=sys.stderr)

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
