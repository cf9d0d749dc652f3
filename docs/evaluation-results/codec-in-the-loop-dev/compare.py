"""Masked UAR % [same-SNR noise control] of every model, per run folder and per codec.

Usage: python compare.py <evaluate output folder>...
"""

import json
import sys
from pathlib import Path


def columns(folder: Path) -> list[tuple[str, dict]]:
    result = json.loads((folder / "evaluate.json").read_text())
    out = []
    for point in result.get("codec_curve") or [result]:
        cells = {}
        for part in ("whitebox", "transfer"):
            section = point.get(part) or {}
            noise = section.get("noise") or {}
            for model, score in (section.get("masked") or {}).items():
                if isinstance(score, dict) and "uar" in score:
                    control = (noise.get(model) or {}).get("uar") or 0.0
                    cells[model] = f"{100 * score['uar']:.1f}[{100 * control:.0f}]"
        codec = point.get("codec") or "none"
        codec = codec.get("codec", "none") if isinstance(codec, dict) else codec
        out.append((f"{folder.name[:10]}:{codec}", cells))
    return out


def main(folders: list[str]) -> None:
    cols = [c for f in folders for c in columns(Path(f))]
    models = list(dict.fromkeys(m for _, cells in cols for m in cells))
    print("model".ljust(40), *[name.rjust(18) for name, _ in cols])
    for model in models:
        short = model.removeprefix("emodb-").removeprefix("ravdess-")[:40]
        print(short.ljust(40), *[cells.get(model, "").rjust(18) for _, cells in cols])
    for f in folders:
        quality = json.loads((Path(f) / "evaluate.json").read_text())["quality"]["masked"]
        pesq = (quality.get("pesq_wb") or {}).get("median") or 0.0
        print(f, f"median SNR {quality['snr_db']['median']:.2f} dB, PESQ-wb {pesq:.2f}")


if __name__ == "__main__":
    main(sys.argv[1:])
