"""Experiment: a linear stand-in for the uplink codec inside every I-FGSM step: the loss is
taken at x + H delta (H: a short zero-phase FIR with the band gains Opus 24 keeps of a
perturbation, measured by survive.py), so the gradient is H^T g = H g."""

import os
import sys

import numpy as np
from plainsight import masker as M
from plainsight.cli import main

GAINS = os.environ.get("FIR_GAINS", "0.9,0.9,0.7,0.7,0.4,0.4")
FREQS = [0, 1000, 2000, 4500, 5500, 8000]
TAPS = int(os.environ.get("FIR_TAPS", "31"))
MODE = os.environ.get("FIR_MODE", "all")  # all | alt | off


def design():
    n = 512
    f = np.fft.rfftfreq(n, 1 / 16000)
    g = np.interp(f, FREQS, [float(v) for v in GAINS.split(",")])
    h = np.fft.irfft(g, n)
    h = np.roll(h, TAPS // 2)[:TAPS] * np.hanning(TAPS + 2)[1:-1]
    return h.astype(np.float32)


FIR = design()


def band(v):
    return np.convolve(v, FIR, mode="same").astype(np.float32)


def use(done):
    return MODE == "all" or (MODE == "alt" and done % 2 == 0)


orig_sign_steps = M.Masker._sign_steps


def _sign_steps(self, bound, steps, gradient, fallback):
    if MODE == "off":
        return orig_sign_steps(self, bound, steps, gradient, fallback)

    def filtered(done, delta):
        if not use(done):
            return gradient(done, delta)
        return band(gradient(done, band(delta)))

    return orig_sign_steps(self, bound, steps, filtered, fallback)


M.Masker._sign_steps = _sign_steps
sys.exit(main(sys.argv[1:]))
