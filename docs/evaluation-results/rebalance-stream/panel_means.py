"""Mean masked UAR of the held-out panel members (adaptive ones apart; and the white-box
model) in each
`plainsight evaluate` result, per codec: the one-number summary the gain-stage docs
quote.

    python docs/evaluation-results/rebalance-stream/panel_means.py DIR [DIR ...]
"""

import json
import sys
from pathlib import Path


def main(dirs: list[str]) -> None:
    for folder in dirs:
        result = json.loads((Path(folder) / "evaluate.json").read_text())
        for row in result["codec_curve"]:
            masked = row["transfer"]["masked"]
            held_out = [v["uar"] for k, v in masked.items() if "adaptive" not in k]
            adaptive = {k: round(100 * v["uar"], 1) for k, v in masked.items() if "adaptive" in k}
            whitebox = [v["uar"] for v in row["whitebox"]["masked"].values()]
            mean = 100 * sum(held_out) / max(len(held_out), 1)
            print(
                f"{folder}: {row['codec']:8s} held-out mean {mean:5.1f}"
                f" ({len(held_out)} members), white-box {100 * whitebox[0]:5.1f}"
                + (f", adaptive {adaptive}" if adaptive else "")
            )


if __name__ == "__main__":
    main(sys.argv[1:])
