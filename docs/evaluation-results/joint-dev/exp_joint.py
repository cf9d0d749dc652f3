"""Experiment: the stream's gain stage and mask in ONE loop. Today a `rebalance` hop takes
GAIN_STEPS (10) I-FGSM steps on the gain grid, then the mask's stream_steps (20) on the
re-balanced hop: 30 hop-graph calls. Here each of stream_steps (20) steps makes one call
and moves the mask's signs (step 2 / 20, as today); the first JOINT_GAIN_STEPS (default
10) of them also move the gain grid's (step 2 / JOINT_GAIN_STEPS, as today's 10 steps), then
the field stays as it is (no more FFT work than today's gain stage). The
mask's budget comes from the raw hop (today: from the re-balanced hop; the +-3 dB field
moves it little). `plainsight stream` path only (StreamProcessor._attack); files unchanged.
A measurement, not a setting.

    python exp_joint.py evaluate ... --path stream --mask-strength rebalance
    python exp_joint.py bench ... --mask-strength rebalance
"""

import os
import sys

import numpy as np
from plainsight import masker as M
from plainsight import stream as S
from plainsight.cli import main
from plainsight.gainfield import GainField
from plainsight.shaping import N_FFT

ORIGINAL_ATTACK = S.StreamProcessor._attack


def joint_attack(self, n16: int) -> np.ndarray:
    m = self.masker
    if not m.gain_db:
        return ORIGINAL_ATTACK(self, n16)
    context = self.raw16 + self.delta16
    clean = self.raw16
    past = m.hop_past(context, n16)
    valid = np.zeros(m.window, np.float32)
    valid[m.window - self.seen16 :] = 1.0
    bound = m.budget(clean[None], valid[None])[0][-n16:]

    # the gain field exactly as Masker.rebalance_hop lays it out
    ahead = self.ahead.astype(np.float32) / S.SCALE
    if not self.same_rate:
        ahead = self._after_tail_at_model_rate(ahead)
    origin = self.total16 - m.window
    span = min(len(clean), n16 + N_FFT)
    field = GainField(
        np.concatenate([clean[-span:], ahead]),
        m.sample_rate,
        origin_s=(origin + len(clean) - span) / m.sample_rate,
    )
    hop = slice(span - n16, span)
    cells = field.first_cell + np.arange(field.cells)
    zero = np.zeros(field.shape[0], np.float32)
    g_held = np.stack([self.gain_cells.get(k, zero) for k in cells], axis=1)
    free = np.array([k not in self.gain_cells for k in cells], np.float32)[None, :]
    start, gradient = m._hop_gradient(context, clean, n16, past)
    raw_hop = clean[-n16:]

    steps = m.stream_steps
    direction = 1.0 if m.objective == "untargeted" else -1.0
    mask_step = min(1.0, 2.0 / steps)
    gain_steps = min(steps, int(os.environ.get("JOINT_GAIN_STEPS", 10)))
    gain_step = min(1.0, 2.0 / gain_steps)
    u_gain = np.zeros(field.shape, np.float32)
    u_mask = np.zeros(n16, np.float32)
    last_sign = M.fixed_signs(len(context))[-n16:]
    grad_y = np.zeros(field.n, np.float32)
    tail_delta = np.zeros(len(context) - start, np.float32)
    for done in range(1, steps + 1):
        if done <= gain_steps + 1:  # the field changed in the last step
            g = g_held + m.gain_db * u_gain * free
            gained = field(g)[hop]
        tail_delta[-n16:] = gained - raw_hop + bound * u_mask
        grad = gradient(tail_delta)[-n16:]
        sign = np.sign(grad * bound)
        u_mask = np.clip(u_mask + direction * mask_step * sign, -1.0, 1.0)
        last_sign = np.where(sign != 0, sign, last_sign)
        if done <= gain_steps:
            grad_y[hop] = grad
            move = np.sign(field.gradient(g, grad_y))
            u_gain = np.clip(u_gain + direction * gain_step * move * free, -1.0, 1.0)
        if m.progress is not None:
            m.progress(done, steps)
    nudge = np.minimum(mask_step, M.NUDGE / np.maximum(bound, M.NUDGE))
    u_mask = np.where(u_mask == 0, direction * nudge * last_sign, u_mask)
    g = g_held + m.gain_db * u_gain * free
    if gain_steps == steps:
        gained = field(g)[hop]
    self.gain_cells.update((int(k), g[:, j].copy()) for j, k in enumerate(cells))
    oldest = (self.total16 - n16 - N_FFT) // round(m.sample_rate * S.CELL_S) - 1
    for cell in [k for k in self.gain_cells if k < oldest]:
        del self.gain_cells[cell]
    return (gained - raw_hop + bound * u_mask).astype(np.float32)


S.StreamProcessor._attack = joint_attack
print(f"exp_joint: gain steps {os.environ.get('JOINT_GAIN_STEPS', 10)}", file=sys.stderr)

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
