"""Experiment: codec in the loop (BPDA): some I-FGSM steps take the gradient at
opus(signal + delta) instead of signal + delta (identity backward through the codec)."""

import os
import sys

import numpy as np
from plainsight import masker as M
from plainsight.cli import main
from plainsight.evaluate.codec import round_trip

MODE = os.environ.get("CODEC_MODE", "alt")  # all | alt | none
LEVEL = float(os.environ.get("CODEC_LEVEL", "0.94140625"))


def codec(x):
    y, _ = round_trip("opus", np.clip(x, -1, 1).astype(np.float32), 16000, LEVEL)
    return y.astype(np.float32)


def band(v):
    f = np.fft.rfftfreq(len(v), 1 / 16000)
    gain = np.interp(f, [0, 1000, 2000, 4500, 5500, 8000], [0.9, 0.9, 0.7, 0.7, 0.4, 0.4])
    return np.fft.irfft(np.fft.rfft(v) * gain, len(v)).astype(np.float32)


def _optimise(self, signal, bound, starts, clean, steps, shift=0):
    width, n = self.window, len(signal)
    targets = [self._targets(m, clean) for m in self.members]
    offsets = M.grid_offsets(steps, shift)
    if shift:
        signal, bound = np.pad(signal, shift), np.pad(bound, shift)
        starts = np.asarray(starts) + shift
    index = starts[:, None] + np.arange(width)[None, :]
    coded = codec(signal) if MODE.startswith("cx") else None

    def gradient(done, delta):
        grad = np.zeros_like(signal)
        shifted = index + offsets[done - 1]
        full = signal + delta
        filt = False
        if MODE == "all" or (MODE == "alt" and done % 2 == 0):
            full = codec(full)
        elif MODE == "h-all" or (MODE == "h-alt" and done % 2 == 0):
            full = signal + band(delta)
            filt = True
        elif MODE == "cx-all" or (MODE == "cx-alt" and done % 2 == 0):
            full = coded + delta
        current = full[shifted]
        for member, target in zip(self.members, targets, strict=True):
            for first in range(0, len(starts), self.batch):
                last = first + self.batch
                _, g = member.grad.run(current[first:last], target[first:last])
                np.add.at(grad, shifted[first:last], g)
        return band(grad) if filt else grad

    delta = self._sign_steps(bound, steps, gradient, M.fixed_signs(len(signal)))
    return delta[shift : shift + n]


M.Masker._optimise = _optimise
sys.exit(main(sys.argv[1:]))
