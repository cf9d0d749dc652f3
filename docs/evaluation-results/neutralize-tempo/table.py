"""reports/<corpus>/adaptive-<condition>-s<seed>.report.json -> UAR % per corpus and
condition (test speakers' clips processed as trained; and the same members on clean clips)."""

import json
import re
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

root = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).parent / "reports")
runs = defaultdict(dict)
for path in sorted(root.glob("*/adaptive-*.report.json")):
    m = re.match(r"adaptive-(.+)-s(\d+)\.report\.json", path.name)
    report = json.loads(path.read_text())
    runs[(report["corpus"], m[1])][int(m[2])] = (
        100 * report["uar"],
        100 * report["test_clean"]["uar"],
    )
print("| corpus | condition | UAR % per seed | mean (SD) | on clean clips, mean |")
print("|---|---|---|---|---|")
ORDER = [
    "plain",
    "tempo",
    "neutral",
    "neutral+tempo",
    "vocoder",
    "vocoder+tempo",
    "vocoder+tempo+eq",
]
for corpus, condition in sorted(runs, key=lambda k: (k[0], ORDER.index(k[1]))):
    by_seed = runs[(corpus, condition)]
    v = np.array([by_seed[s] for s in sorted(by_seed)])
    seeds = " / ".join(f"{x:.1f}" for x in v[:, 0])
    mean, sd, clean = v[:, 0].mean(), v[:, 0].std(ddof=1), v[:, 1].mean()
    print(f"| {corpus} | {condition} | {seeds} | {mean:.1f} ({sd:.1f}) | {clean:.1f} |")
