"""How much do two models agree on the direction that moves them toward `neutral`?

For each 2 s window of the first N class-balanced test clips: every model's input gradient of
CE(logits, neutral) with respect to the waveform; per pair, the mean cosine over windows and
the share of samples whose gradient signs agree (0.5 = unrelated; an I-FGSM step uses only
the sign). A perturbation transfers from A to B as far as A's steps are B's steps.

    PLAINSIGHT_DATA=... python docs/evaluation-results/sam-surrogates-dev/gradient_alignment.py \
        --corpus emodb --limit 56 > docs/evaluation-results/sam-surrogates-dev/alignment-emodb.md
"""

from __future__ import annotations

import argparse
import os

import numpy as np
import torch
from plainsight.evaluate.pipeline import clip_windows, test_clips
from plainsight_export.transfer_study import GainField, load_surrogate

MODELS = {
    "emodb": [
        "compact",
        "surrogate-compact-plain-s11",
        "surrogate-compact-s12",
        "surrogate-compact-sam005-s11",
        "surrogate-compact-sam02-s11",
        "surrogate-compact-sam05-s11",
        "attacker-compact-s1",
        "attacker-dev-compact-s2",
        "attacker-dev-cnn2-s0",
        "attacker-dev-crnn-s0",
        "surrogate-mfcc",
    ],
    "ravdess": [
        "compact",
        "surrogate-compact-plain-s11",
        "surrogate-compact-s12",
        "surrogate-compact-sam005-s11",
        "surrogate-compact-sam02-s11",
        "attacker-compact-s1",
        "attacker-dev-compact-s2",
        "attacker-dev-cnn2-s0",
        "attacker-dev-crnn-s0",
    ],
}


def gradients(name: str, corpus: str, windows: torch.Tensor) -> np.ndarray:
    surrogate = load_surrogate(corpus, name)
    x = windows.clone().requires_grad_(True)
    target = torch.full((len(x),), surrogate.target, dtype=torch.long)
    torch.nn.functional.cross_entropy(surrogate.logits(x), target, reduction="sum").backward()
    return x.grad.numpy().astype(np.float64)


def gain_gradients(
    name: str, corpus: str, windows: torch.Tensor, bands: int = 16, cell_s: float = 0.1
) -> np.ndarray:
    """The same loss's gradient on the gain field's grid (bands x cells, at g = 0)."""
    surrogate = load_surrogate(corpus, name)
    out = []
    for window in windows:
        field = GainField(window, bands, cell_s)
        g = torch.zeros(bands, field.cells, requires_grad=True)
        logits = surrogate.logits(field(g)[None])
        target = torch.tensor([surrogate.target])
        torch.nn.functional.cross_entropy(logits, target).backward()
        out.append(g.grad.numpy().ravel())
    return np.stack(out)


def unit_rows(g: np.ndarray) -> np.ndarray:
    return g / np.maximum(np.linalg.norm(g, axis=1, keepdims=True), 1e-30)


def table(title: str, names: list[str], grads: dict[str, np.ndarray]) -> None:
    unit = {n: unit_rows(g) for n, g in grads.items()}
    print(title + "\n")
    print("| model | " + " | ".join(names[:6]) + " |")
    print("|---" * (len(names[:6]) + 1) + "|")
    for a in names:
        cells = []
        for b in names[:6]:
            cos = float((unit[a] * unit[b]).sum(1).mean())
            agree = float((np.sign(grads[a]) == np.sign(grads[b])).mean())
            cells.append(f"{cos:.3f} / {agree:.3f}")
        print(f"| {a} | " + " | ".join(cells) + " |")
    print()


def resolution_table(args, names: list[str], windows: torch.Tensor) -> None:
    grids = [tuple(int(v) for v in g.split("x")) for g in args.grids.split(",")]
    print(f"{args.corpus}, {len(windows)} windows of 2 s: mean cosine of the bundled compact")
    print("model's gain-grid gradient toward `neutral` with each other model's, per grid\n")
    print("| model | " + " | ".join(f"{b} bands x {ms} ms" for b, ms in grids) + " |")
    print("|---" * (len(grids) + 1) + "|")
    rows = {n: [] for n in names[1:]}
    for bands, ms in grids:
        grads = {n: gain_gradients(n, args.corpus, windows, bands, ms / 1000) for n in names}
        unit = {n: unit_rows(g) for n, g in grads.items()}
        for n in names[1:]:
            rows[n].append(float((unit[names[0]] * unit[n]).sum(1).mean()))
    for n, cosines in rows.items():
        print(f"| {n} | " + " | ".join(f"{c:.3f}" for c in cosines) + " |")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--corpus", default="emodb", choices=sorted(MODELS))
    p.add_argument("--limit", type=int, default=56)
    p.add_argument(
        "--grids",
        help="instead: the bundled model's cosine with every other model on gain grids of "
        "these resolutions, e.g. 4x400,16x100,64x25 (bands x cell ms)",
    )
    args = p.parse_args()
    torch.set_num_threads(1)
    clips = test_clips(os.environ["PLAINSIGHT_DATA"], args.corpus, args.limit)
    windows = torch.from_numpy(np.concatenate([clip_windows(c.audio, 32000) for c in clips]))
    names = MODELS[args.corpus]
    if args.grids:
        return resolution_table(args, names, windows)
    print(f"{args.corpus}, {len(clips)} test clips, {len(windows)} windows of 2 s: mean cosine")
    print("of two models' input gradients toward `neutral` / share of signs that agree")
    print("(0.5 = unrelated; an I-FGSM step uses only the signs)\n")
    grads = {n: gradients(n, args.corpus, windows) for n in names}
    table("On the waveform (what the mask moves, 32000 values per window)", names, grads)
    grads = {n: gain_gradients(n, args.corpus, windows) for n in names}
    table("On the gain field's grid (what `rebalance` moves, 16 bands x 21 cells)", names, grads)


if __name__ == "__main__":
    main()
