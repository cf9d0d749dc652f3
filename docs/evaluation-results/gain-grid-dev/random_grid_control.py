"""The fair control for a gain field on another grid: a RANDOM field (random signs, +-GAIN
dB on the same grid, no gradient, no mask), scored by every development-panel member with
the listener 250 ms later, as the `evaluate` runs beside it.

    PLAINSIGHT_DATA=... python random_grid_control.py CORPUS LIMIT CELL_S BANDS GAIN_DB [SEED]
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

LISTENER_OFFSET = 4000  # samples


def main(corpus: str, limit: int, cell_s: float, bands: int, gain_db: float, seed: int) -> dict:
    clips = P.test_clips(os.environ["PLAINSIGHT_DATA"], corpus, limit)
    clean = [c.audio for c in clips]
    labels = [c.utt.label for c in clips]
    rng = np.random.default_rng(seed)
    controlled = []
    for audio in clean:
        field = GainField(audio, 16000, bands=bands, cell_s=cell_s)
        sign = rng.choice([-1.0, 1.0], field.shape)
        controlled.append(field(gain_db * sign).astype(np.float32))
    snr = [metrics.snr_db(c, x) for c, x in zip(clean, controlled, strict=True)]
    out = {"corpus": corpus, "clips": len(clips), "cell_s": cell_s, "bands": bands}
    out |= {"gain_db": gain_db, "seed": seed, "median_snr_db": float(np.median(snr))}
    pesq = [metrics.pesq_wb(c, x) for c, x in zip(clean, controlled, strict=True)]
    out["pesq_wb_median"] = float(np.median(pesq))
    out["uar"] = {}
    for member in load_panel(corpus, "dev"):
        member = P.OffsetListener(member, LISTENER_OFFSET)
        out["uar"][member.name] = {
            "clean": member.report(clean, labels)["uar"],
            "random_field": member.report(controlled, labels)["uar"],
        }
    uars = [v["random_field"] for v in out["uar"].values()]
    out["held_out_mean"] = float(np.mean(uars))
    out["clean_mean"] = float(np.mean([v["clean"] for v in out["uar"].values()]))
    return out


if __name__ == "__main__":
    corpus, limit, cell_s = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    bands, gain_db = int(sys.argv[4]), float(sys.argv[5])
    seed = int(sys.argv[6]) if len(sys.argv) > 6 else 0
    result = main(corpus, limit, cell_s, bands, gain_db, seed)
    name = f"random-{corpus}-c{cell_s:g}-b{bands}-g{gain_db:g}-s{seed}.json"
    Path(__file__).with_name(name).write_text(json.dumps(result, indent=2) + "\n")
    mean, clean = 100 * result["held_out_mean"], 100 * result["clean_mean"]
    print(name, f"held-out mean {mean:.1f} (clean {clean:.1f})", end=" ")
    print(f"SNR {result['median_snr_db']:.1f} PESQ {result['pesq_wb_median']:.2f}")
