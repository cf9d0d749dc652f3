"""One line per `plainsight evaluate` run and codec: held-out mean UAR and mean mutual
information (bits, plug-in) of the held-out members' predictions (adaptive members apart),
beside their clean means, and the white-box model's UAR and MI.

    python docs/evaluation-results/objective-dev/compare_mi.py DIR [DIR ...]
"""

import json
import sys
from pathlib import Path


def main(dirs: list[str]) -> None:
    for folder in dirs:
        result = json.loads((Path(folder) / "evaluate.json").read_text())
        pesq = result["quality"]["masked"]["pesq_wb"]["median"]
        for row in result["codec_curve"]:
            masked = {k: v for k, v in row["transfer"]["masked"].items() if "adaptive" not in k}
            clean = row["transfer"]["clean"]
            whitebox = list(row["whitebox"]["masked"].values())[0]
            n = len(masked)
            uar = 100 * sum(v["uar"] for v in masked.values()) / n
            mi = sum(v["mi_bits"] for v in masked.values()) / n
            clean_uar = 100 * sum(clean[k]["uar"] for k in masked) / n
            clean_mi = sum(clean[k]["mi_bits"] for k in masked) / n
            print(
                f"{Path(folder).name:38s} {row['codec']:8s} PESQ {pesq:.2f} | held-out UAR"
                f" {uar:5.1f} MI {mi:.2f} (clean {clean_uar:5.1f} / {clean_mi:.2f}) |"
                f" white-box {100 * whitebox['uar']:5.1f} MI {whitebox['mi_bits']:.2f}"
            )


if __name__ == "__main__":
    main(sys.argv[1:])
