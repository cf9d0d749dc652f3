"""Experiment (monkeypatch of StreamProcessor._attack, window graph): each hop optimised with the
hop at several positions of the window (SPAN_MS, FILL=zeros|past for the unknown future).
Run: SPAN_MS=1750 FILL=zeros python hop_positions.py evaluate ... --path stream
"""

import math
import os
import sys

import numpy as np
from plainsight import stream as S
from plainsight.cli import main

SPAN_MS = float(os.environ.get("SPAN_MS", "1750"))
FILL = os.environ.get("FILL", "zeros")  # zeros | past


def _attack(self, n16):
    m = self.masker
    W = m.window
    valid = np.zeros(W, np.float32)
    valid[W - self.seen16 :] = 1.0
    bound = m.budget(self.raw16[None], valid[None])[0]
    bound[: W - n16] = 0.0
    context = self.raw16 + self.delta16
    span = min(int(SPAN_MS * 16), W - n16)
    if FILL == "zeros":
        fill = np.zeros(span, np.float32)
    else:  # the past just before the hop, as a stand-in for the unknown future
        fill = context[W - n16 - span : W - n16].copy()
    ext = np.concatenate([context, fill])
    bext = np.concatenate([bound, np.zeros(span, np.float32)])
    steps = m.stream_steps
    golden = (math.sqrt(5) - 1) / 2
    pos = [0] + [int(round(((k * golden) % 1.0) * span)) for k in range(1, steps)]
    u = np.zeros(len(ext), np.float32)
    step = min(1.0, 2.0 / steps)
    member = m.members[0]
    target = m._targets(member, self.raw16[None])
    last = np.ones(len(ext), np.float32)
    for k in range(steps):
        p = pos[k]
        cur = (ext + bext * u)[p : p + W]
        grad = np.zeros(len(ext), np.float32)
        for mem in m.members:
            _, g = mem.grad.run(cur[None], target)
            grad[p : p + W] += g[0]
        grad *= bext
        sign = np.sign(grad)
        u = np.clip(u - step * sign, -1, 1)
        last = np.where(sign != 0, sign, last)
    nudge = np.minimum(
        step, S.__dict__.get("NUDGE", 0.5625 / 32768) / np.maximum(bext, 0.5625 / 32768)
    )
    u = np.where(u == 0, -nudge * last, u)
    return (bext * u)[:W].astype(np.float32)


S.StreamProcessor._attack = _attack
sys.exit(main(sys.argv[1:]))
