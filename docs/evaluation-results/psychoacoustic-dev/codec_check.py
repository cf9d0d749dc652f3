"""Does a masking-threshold-shaped perturbation survive Opus 24 better than the flat one?
Dev panel; each method crafted as transfer-study does, scaled to its SNR.
Usage: PLAINSIGHT_DATA=... python codec_check.py emodb 56 (ravdess 48)."""

import os
import sys

import numpy as np
from plainsight.evaluate import pipeline as P
from plainsight.evaluate.codec import round_trip
from plainsight.manifest import load_model_dir
from plainsight_export import transfer_study as T

CORPUS = sys.argv[1] if len(sys.argv) > 1 else "emodb"
LIMIT = int(sys.argv[2]) if len(sys.argv) > 2 else 56
LEVEL = 0.94140625
RUNS = [("default", 35.0, 38.0), ("masking-0.5", 25.0, 28.0)]


def opus(x):
    y, _ = round_trip("opus", np.clip(x, -1, 1).astype(np.float32), 16000, LEVEL)
    return y


clips = P.test_clips(os.environ["PLAINSIGHT_DATA"], CORPUS, LIMIT)
clean = [c.audio for c in clips]
labels = [c.utt.label for c in clips]
white = P.Scorer(load_model_dir(T.BUNDLED / f"{CORPUS}-compact"))
panel, _ = T.dev_panel(CORPUS)
scorers = [white, *panel]
coded_clean = [opus(a) for a in clean]
print("clean", {s.name[-14:]: round(100 * T.uar(s, clean, labels), 1) for s in scorers})
print(
    "clean opus24", {s.name[-14:]: round(100 * T.uar(s, coded_clean, labels), 1) for s in scorers}
)
for name, budget_db, snr_db in RUNS:
    method = T.METHODS[name]
    surrogates = [T.load_surrogate(CORPUS, s) for s in method.surrogates]
    rng = np.random.default_rng(0)
    masked = [T.at_snr(a, T.craft(a, budget_db, surrogates, method, rng), snr_db) for a in clean]
    noise = P.noise_control(clean, masked)
    for tag, m, nz in (
        ("none", masked, noise),
        ("opus24", [opus(x) for x in masked], [opus(x) for x in noise]),
    ):
        row = {
            s.name[-14:]: f"{100 * T.uar(s, m, labels):.1f}[{100 * T.uar(s, nz, labels):.0f}]"
            for s in scorers
        }
        print(name, snr_db, tag, row, flush=True)
