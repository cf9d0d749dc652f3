"""The whisper members' table of docs/EVALUATION.md ("A foundation-model attacker"): UAR %
clean -> masked [same-SNR noise control] per codec, for every run folder given (or all here).

    python docs/evaluation-results/whisper-members/table.py
"""

import json
import sys
from pathlib import Path

HERE = Path(__file__).parent


def cell(curve: dict, side: str, name: str) -> str:
    t = curve[side]
    return (
        f"{100 * t['clean'][name]['uar']:.1f} -> {100 * t['masked'][name]['uar']:.1f} "
        f"[{100 * t['noise'][name]['uar']:.1f}]"
    )


def main(dirs: list[Path]) -> None:
    print("| run | model | none | opus:24 | SNR dB / PESQ-wb |")
    print("|---|---|---|---|---|")
    for d in dirs:
        r = json.loads((d / "evaluate.json").read_text())
        q = r["quality"]["masked"]
        quality = f"{q['snr_db']['median']:.1f} / {q['pesq_wb']['median']:.2f}"
        curves = {c["codec"]: c for c in r["codec_curve"]}
        names = [("whitebox", n) for n in r["codec_curve"][0]["whitebox"]["clean"]]
        names += [("transfer", n) for n in r["codec_curve"][0]["transfer"]["clean"]]
        for side, name in names:
            row = [cell(curves[c], side, name) for c in ("none", "opus:24")]
            print(f"| {d.name} | {name} | {' | '.join(row)} | {quality} |")


if __name__ == "__main__":
    args = [Path(a) for a in sys.argv[1:]]
    main(args or sorted(p for p in HERE.iterdir() if (p / "evaluate.json").is_file()))
