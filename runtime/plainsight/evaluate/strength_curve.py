"""The neutralize tier's strength curve from `plainsight evaluate` runs (issue 12).

`plainsight evaluate --privacy neutralize --neutralize-strength S --panel all` writes one
evaluate.json per strength; this reads them and prints, per corpus, one markdown table with
every attacker's UAR against strength (clean first; the mask tier, if given, counts as
strength 0: the neutralize stage at 0 is the identity) and the cost rows (Whisper WER, STOI,
DNSMOS), and optionally saves a plot.

    python -m plainsight.evaluate.strength_curve RUN/*/evaluate.json [--plot curve.png]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def strength_of(result: dict) -> float:
    settings = result["masker"]
    if settings.get("privacy", "mask") == "mask":
        return 0.0
    return float(settings["neutralize_strength"])


def _cell(value, digits: int = 1, scale: float = 100.0) -> str:
    return "-" if value is None else f"{value * scale:.{digits}f}"


def _dnsmos(result: dict, cond: str, key: str):
    d = result["quality"].get("dnsmos")
    return None if not d else d[cond][key]["mean"]


def _wer(result: dict, cond: str):
    a = result.get("asr")
    return None if a is None else a[cond]["wer"]


def rows(results: list[dict]) -> tuple[list[str], list[list[str]]]:
    """Header and rows of one corpus's curve; results sorted by strength."""
    first = results[0]
    header = ["attacker", "role", "clean"] + [f"{strength_of(r):g}" for r in results]
    table = []
    groups = [("whitebox", first["whitebox_models"], {})]
    groups.append(("transfer", list(first["transfer"]["masked"]), first["transfer_models"]))
    for group, names, roles in groups:
        for name in names:
            role = roles.get(name, "white-box")
            clean = first[group]["clean"][name]["uar"]
            cells = [_cell(r[group]["masked"].get(name, {}).get("uar")) for r in results]
            table.append([name.removeprefix(f"{first['corpus']}-"), role, _cell(clean)] + cells)
    n_asr = first.get("asr", {}).get("clips", "-")
    clean_wer = _wer(first, "clean")
    table.append(
        [f"Whisper WER % ({n_asr} clips)", "cost", _cell(clean_wer)]
        + [_cell(_wer(r, "masked")) for r in results]
    )
    n_q = first["quality"].get("pesq_stoi_clips", "-")
    table.append(
        [f"STOI median ({n_q} clips)", "cost", "1"]
        + [_cell(r["quality"]["masked"].get("stoi", {}).get("median"), 3, 1.0) for r in results]
    )
    for key in ("sig", "bak", "ovrl"):
        table.append(
            [
                f"DNSMOS {key.upper()} mean ({n_q} clips)",
                "cost",
                _cell(_dnsmos(first, "clean", key), 2, 1),
            ]
            + [_cell(_dnsmos(r, "masked", key), 2, 1.0) for r in results]
        )
    return header, table


def markdown(results: list[dict]) -> str:
    header, table = rows(results)
    r = results[0]
    lines = [
        f"{r['corpus']}: UAR % on {r['clips']} class-balanced test-speaker clips "
        f"(chance {100 * r['chance_uar']:.1f}) against neutralize strength; "
        "each strength's audio is neutralised, then masked",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    lines += ["| " + " | ".join(row) + " |" for row in table]
    return "\n".join(lines) + "\n"


def plot(by_corpus: dict[str, list[dict]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, len(by_corpus), figsize=(6 * len(by_corpus), 7), squeeze=False)
    for col, (corpus, results) in enumerate(sorted(by_corpus.items())):
        x = [strength_of(r) for r in results]
        ax = axes[0][col]
        for name in results[0]["transfer"]["masked"]:
            y = [100 * r["transfer"]["masked"][name]["uar"] for r in results]
            adaptive = results[0]["transfer_models"][name].startswith("adaptive")
            ax.plot(
                x,
                y,
                "-o" if adaptive else "-",
                lw=2 if adaptive else 0.8,
                label=name.removeprefix(f"{corpus}-") if adaptive else None,
            )
        chance = 100 * results[0]["chance_uar"]
        ax.axhline(chance, color="k", ls=":", label="chance")
        ax.axhline(chance + 15, color="r", ls="--", label="target (chance + 15)")
        ax.set_title(f"{corpus}: attacker UAR (thin: dev/final panel)")
        ax.set_xlabel("neutralize strength")
        ax.set_ylabel("UAR %")
        ax.legend(fontsize=7)
        ax = axes[1][col]
        wer = [_wer(r, "masked") for r in results]
        if all(w is not None for w in wer):
            ax.plot(x, [100 * w for w in wer], "-o", label="WER % (masked)")
            ax.legend(loc="upper left", fontsize=7)
        ax.set_xlabel("neutralize strength")
        twin = ax.twinx()
        twin.plot(
            x,
            [r["quality"]["masked"]["stoi"]["median"] for r in results],
            "-s",
            color="C2",
            label="STOI",
        )
        if all(r["quality"].get("dnsmos") for r in results):
            twin.plot(
                x,
                [_dnsmos(r, "masked", "ovrl") / 5 for r in results],
                "-^",
                color="C3",
                label="DNSMOS OVRL / 5",
            )
        twin.set_ylim(0, 1.05)
        ax.set_title(f"{corpus}: cost")
        twin.legend(loc="lower left", fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m plainsight.evaluate.strength_curve")
    p.add_argument("results", nargs="+", help="evaluate.json files of one or more strengths")
    p.add_argument("--plot", help="also save a PNG plot here")
    args = p.parse_args(argv)
    by_corpus: dict[str, list[dict]] = {}
    for name in args.results:
        try:
            result = json.loads(Path(name).read_text())
            by_corpus.setdefault(result["corpus"], []).append(result)
        except (OSError, ValueError, KeyError) as err:
            print(f"strength_curve: cannot read {name}: {err}", file=sys.stderr)
            return 2
    for corpus in sorted(by_corpus):
        results = sorted(by_corpus[corpus], key=strength_of)
        by_corpus[corpus] = results
        print(markdown(results))
    if args.plot:
        plot(by_corpus, Path(args.plot))
    return 0


if __name__ == "__main__":
    sys.exit(main())
