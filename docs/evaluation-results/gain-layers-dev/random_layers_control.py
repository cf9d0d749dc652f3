"""The fair control for a layered gain stage: a RANDOM field (random signs) on the same
layers and bounds as exp_layers.py (GAIN_COARSE="B,CELL,R", fine bound GAIN_DB), no
gradient, no mask, scored by every development-panel member with the listener 250 ms later.
GAIN_COARSE=none: the runtime's 16 x 100 ms field alone.

    GAIN_COARSE=2,1.0,4 PLAINSIGHT_DATA=... \
        python random_layers_control.py CORPUS LIMIT GAIN_DB [SEED]
"""

import json
import os
import sys
from pathlib import Path

import numpy as np
from plainsight.evaluate import metrics
from plainsight.evaluate import pipeline as P
from plainsight.evaluate.panel import load_panel

LISTENER_OFFSET = 4000  # samples


def field_class():
    if os.environ.get("GAIN_COARSE", "none") == "none":
        from plainsight.gainfield import GainField

        return GainField
    sys.path.insert(0, str(Path(__file__).parent))
    from exp_layers import LayeredField

    return LayeredField


def main(corpus: str, limit: int, gain_db: float, seed: int) -> dict:
    clips = P.test_clips(os.environ["PLAINSIGHT_DATA"], corpus, limit)
    clean = [c.audio for c in clips]
    labels = [c.utt.label for c in clips]
    rng = np.random.default_rng(seed)
    Field = field_class()
    controlled = []
    for audio in clean:
        field = Field(audio, 16000)
        sign = rng.choice([-1.0, 1.0], field.shape)
        controlled.append(field(gain_db * sign).astype(np.float32))
    snr = [metrics.snr_db(c, x) for c, x in zip(clean, controlled, strict=True)]
    pesq = [metrics.pesq_wb(c, x) for c, x in zip(clean, controlled, strict=True)]
    out = {"corpus": corpus, "clips": len(clips), "layers": os.environ.get("GAIN_COARSE", "none")}
    out |= {"gain_db": gain_db, "seed": seed, "median_snr_db": float(np.median(snr))}
    out["pesq_wb_median"] = float(np.median(pesq))
    out["uar"] = {}
    for member in load_panel(corpus, "dev"):
        member = P.OffsetListener(member, LISTENER_OFFSET)
        out["uar"][member.name] = {
            "clean": member.report(clean, labels)["uar"],
            "random_field": member.report(controlled, labels)["uar"],
        }
    out["held_out_mean"] = float(np.mean([v["random_field"] for v in out["uar"].values()]))
    out["clean_mean"] = float(np.mean([v["clean"] for v in out["uar"].values()]))
    return out


if __name__ == "__main__":
    corpus, limit, gain_db = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    seed = int(sys.argv[4]) if len(sys.argv) > 4 else 0
    result = main(corpus, limit, gain_db, seed)
    layers = result["layers"].replace(",", "x")
    name = f"random-{corpus}-{layers}-g{gain_db:g}-s{seed}.json"
    Path(__file__).with_name(name).write_text(json.dumps(result, indent=2) + "\n")
    mean, clean = 100 * result["held_out_mean"], 100 * result["clean_mean"]
    print(name, f"held-out mean {mean:.1f} (clean {clean:.1f})", end=" ")
    print(f"SNR {result['median_snr_db']:.1f} PESQ {result['pesq_wb_median']:.2f}")
