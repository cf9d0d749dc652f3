"""Per method of a `transfer-study` result: white-box UAR, dev-panel mean UAR, median SNR
and PESQ-wb, and each member's UAR.

    python docs/evaluation-results/gain-grid-dev/study_means.py DIR/transfer_study.json ...
"""

import json
import sys

for path in sys.argv[1:]:
    result = json.loads(open(path).read())
    print(path)
    for name, row in result["methods"].items():
        panel = row["panel_uar"]
        mean = 100 * sum(panel.values()) / len(panel)
        members = " ".join(f"{100 * v:4.1f}" for v in panel.values())
        print(
            f"  {name:28s} white-box {100 * row['white_box_uar']:5.1f} panel mean {mean:5.1f}"
            f" SNR {row['median_snr_db']:5.1f} PESQ {row['pesq_wb']['median']:.2f} | {members}"
        )
