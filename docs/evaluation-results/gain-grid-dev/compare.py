"""One line per `plainsight evaluate` run: held-out mean (adaptive members apart), white-box
(listener +250 ms when present), median SNR / PESQ-wb / STOI, per codec.

    python docs/evaluation-results/gain-grid-dev/compare.py DIR [DIR ...]
"""

import json
import sys
from pathlib import Path


def main(dirs: list[str]) -> None:
    for folder in dirs:
        result = json.loads((Path(folder) / "evaluate.json").read_text())
        q = result["quality"]["masked"]
        quality = (
            f"SNR {q['snr_db']['median']:5.1f} PESQ {q['pesq_wb']['median']:.2f}"
            f" STOI {q['stoi']['median']:.3f}"
        )
        for row in result.get("codec_curve", []):
            masked = row["transfer"]["masked"]
            held_out = {k: v["uar"] for k, v in masked.items() if "adaptive" not in k}
            whitebox = [v["uar"] for v in row["whitebox"]["masked"].values()][0]
            mean = 100 * sum(held_out.values()) / max(len(held_out), 1)
            members = " ".join(f"{100 * v:4.1f}" for v in held_out.values())
            print(
                f"{Path(folder).name:22s} {row['codec']:8s} held-out {mean:5.1f}"
                f" white-box {100 * whitebox:5.1f} | {quality} | {members}"
            )


if __name__ == "__main__":
    main(sys.argv[1:])
