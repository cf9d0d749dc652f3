"""Experiment: where does the mask's hiding come from? The per-sample budget is kept only in
frames of the clean window above (speech) or below (pauses) a level under the window's
loudest 25 ms frame."""

import os
import sys

import numpy as np
from plainsight import masker as M
from plainsight.cli import main

KEEP = os.environ.get("KEEP", "speech")  # speech | pauses
THRESHOLD_DB = float(os.environ.get("THRESHOLD_DB", "-30"))
FRAME = 400

original_budget = M.Masker.budget


def budget(self, windows, valid, lsb=None):
    bound = original_budget(self, windows, valid, lsb)
    b, n = windows.shape
    frames = n // FRAME
    energy = (windows[:, : frames * FRAME].reshape(b, frames, FRAME) ** 2).mean(axis=2)
    rel = 10 * np.log10(energy / (energy.max(axis=1, keepdims=True) + 1e-20) + 1e-20)
    speech = rel > THRESHOLD_DB
    keep = speech if KEEP == "speech" else ~speech
    mask = np.repeat(keep, FRAME, axis=1).astype(np.float32)
    mask = np.pad(mask, ((0, 0), (0, n - mask.shape[1])), mode="edge")
    if os.environ.get("EQUAL_POWER", "1") == "1":  # same perturbation power per window
        share = np.maximum(mask.mean(axis=1, keepdims=True), 1e-3)
        mask = mask / np.sqrt(share)
    return np.minimum(bound * mask, 1.0).astype(np.float32)


M.Masker.budget = budget
sys.exit(main(sys.argv[1:]))
