"""The README's panel table, from the members' committed reports (no model is loaded).

    python -m plainsight_export.panel_table        # prints the Markdown table

One row per attacker / adaptive report in export/checkpoints/<corpus>/: panel, family, the
clean test UAR of its own report (cross-corpus members: on the other corpus's test speakers),
epochs and training seconds. Adaptive members (default mask tier) also give their UAR on
masked test audio.
"""

from __future__ import annotations

import json
from pathlib import Path

CHECKPOINTS = Path(__file__).resolve().parents[1] / "checkpoints"
PANEL_ORDER = {"dev": 0, "dev (pre-panel)": 1, "final": 2, "adaptive": 3}


def row(corpus: str, report: dict) -> tuple[tuple, str]:
    name = report["name"]
    order = None
    if report.get("role") == "adaptive":
        panel, family, order = "adaptive", report["arch"], "adaptive"
        clean = report["test_clean"]
        uar = (
            f"{100 * clean['uar']:.1f} (chance {100 * clean['chance_uar']:.1f}); "
            f"on masked test audio {100 * report['uar']:.1f}"
        )
    else:
        panel = report.get("panel") or "dev (pre-panel)"
        family = report.get("family") or report["arch"]
        test = report.get("cross_corpus_test") or report
        if "cross_corpus_test" in report:
            family += f" (trained on {report['corpus']}, shared labels)"
        uar = f"{100 * test['uar']:.1f} (chance {100 * test['chance_uar']:.1f})"
    epochs = report.get("epochs", "-") if "arch" in report else "-"
    cells = [corpus, panel, name, family, uar, str(epochs), f"{report['train_time_s']:.1f}"]
    return (corpus, PANEL_ORDER[order or panel], name), "| " + " | ".join(cells) + " |"


def table(root: Path = CHECKPOINTS) -> str:
    rows = []
    for corpus_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        for path in sorted(corpus_dir.glob("*.report.json")):
            if not path.name.startswith(("attacker-", "adaptive-")):
                continue
            report = json.loads(path.read_text())
            if (report.get("masker") or {}).get("privacy", "mask") != "mask":
                continue  # adaptive to another privacy tier: reported with that tier
            rows.append(row(corpus_dir.name, report))
    head = [
        "| corpus | panel | member | family | clean test UAR % | epochs | train s |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    return "\n".join(head + [line for _, line in sorted(rows)]) + "\n"


if __name__ == "__main__":
    print(table(), end="")
