"""Masked UAR % of every model through every codec, mask and stream side by side.

Usage: python live_table.py <mask run folder> <stream run folder>  (plainsight evaluate --codec
none,opus:32,...; the same clips and listener offset in both). Cells: masked [noise control].
"""

import json
import sys
from pathlib import Path


def curve(folder: str) -> tuple[dict, dict]:
    result = json.loads((Path(folder) / "evaluate.json").read_text())
    cells, clean = {}, {}
    for point in result["codec_curve"]:
        for part in ("whitebox", "transfer"):
            section = point.get(part) or {}
            for model, score in (section.get("masked") or {}).items():
                noise = (section.get("noise") or {}).get(model, {}).get("uar", 0.0)
                cells[model, point["codec"]] = f"{100 * score['uar']:.1f} [{100 * noise:.0f}]"
                if point["codec"] == "none":
                    clean[model] = 100 * section["clean"][model]["uar"]
    return cells, clean


def main(mask_dir: str, stream_dir: str) -> None:
    mask, clean = curve(mask_dir)
    stream, _ = curve(stream_dir)
    codecs = list(dict.fromkeys(codec for _, codec in mask))
    head = [f"mask {c}" for c in codecs] + [f"stream {c}" for c in codecs]
    print("| model | clean | " + " | ".join(head) + " |")
    print("|---" * (len(head) + 2) + "|")
    for model in clean:
        row = [mask.get((model, c), "") for c in codecs] + [
            stream.get((model, c), "") for c in codecs
        ]
        name = model.split("-", 1)[1].replace("attacker-final-", "final ")
        print(f"| {name} | {clean[model]:.1f} | " + " | ".join(row) + " |")


if __name__ == "__main__":
    main(*sys.argv[1:3])
