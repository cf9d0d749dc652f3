"""The fair control for the gain stage: a RANDOM gain field of the same bound (+-3 dB on
the same 16-band x 100 ms grid, random signs, no gradient, no mask), scored by every
final-panel member. The flat same-SNR noise control of `plainsight evaluate` is no control
for a re-balance: at the stage's ~11 dB SNR, white noise is loud (PESQ ~1.1).

    cd docs/evaluation-results/rebalance-final
    PLAINSIGHT_DATA=../../../../shared/data python random_field_control.py emodb 0
    PLAINSIGHT_DATA=../../../../shared/data python random_field_control.py ravdess 128
"""

import json
import os
import sys
from pathlib import Path

import numpy as np
from plainsight.evaluate import metrics
from plainsight.evaluate import pipeline as P
from plainsight.evaluate.panel import load_panel
from plainsight.gainfield import GainField

GAIN_DB, SEED = 3.0, 0
LISTENER_OFFSET = 4000  # samples: every listener 250 ms later, as the evaluate runs beside it


def random_field(audio: np.ndarray, rng) -> np.ndarray:
    field = GainField(audio, 16000)
    return field(GAIN_DB * rng.choice([-1.0, 1.0], field.shape)).astype(np.float32)


def main(corpus: str, limit: int) -> dict:
    clips = P.test_clips(os.environ["PLAINSIGHT_DATA"], corpus, limit)
    clean = [c.audio for c in clips]
    labels = [c.utt.label for c in clips]
    rng = np.random.default_rng(SEED)
    controlled = [random_field(a, rng) for a in clean]
    snr = [metrics.snr_db(c, x) for c, x in zip(clean, controlled, strict=True)]
    out = {"corpus": corpus, "clips": len(clips), "gain_db": GAIN_DB}
    out |= {"median_snr_db": float(np.median(snr)), "uar": {}}
    out["listener_offset_ms"] = 1000 * LISTENER_OFFSET / 16000
    for member in load_panel(corpus, "final"):
        member = P.OffsetListener(member, LISTENER_OFFSET)
        out["uar"][member.name] = {
            "clean": member.report(clean, labels)["uar"],
            "random_field": member.report(controlled, labels)["uar"],
        }
        print(member.name, out["uar"][member.name], flush=True)
    return out


if __name__ == "__main__":
    corpus, limit = sys.argv[1], int(sys.argv[2])
    result = main(corpus, limit)
    path = Path(__file__).with_name(f"random_field_control_{corpus}.json")
    path.write_text(json.dumps(result, indent=2) + "\n")
