"""The prototype's first experiment, as a reference for the waveform attack.

FGSM applied directly to the normalised log-mel input of the emotion model (no waveform, so
no device could do this): the ceiling a waveform attack can approach. Torch autograd on the
committed checkpoint, scored with the training report's protocol (mean logits over 2 s
windows, hop 1 s) on the test speakers.

    python -m plainsight_export spectrogram-reference --corpus emodb --out eval-out/spec-emodb
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np
import torch

from plainsight_export import data as D
from plainsight_export import models as M
from plainsight_export.train import WINDOW, score

EPSILONS = (0.0, 0.05, 0.1, 0.2, 0.5, 1.0)  # in standardised log-mel units (1 = one std)
ATTACKS = {
    "fgsm untargeted (prototype)": {"steps": 1, "target": None},
    "i-fgsm 10 steps, neutral": {"steps": 10, "target": "neutral"},
}


def attack_features(body, feats, labels_for_loss, eps, steps, targeted):
    """L-inf FGSM / I-FGSM on features [B, 1, T, F]."""
    if eps == 0:
        return feats
    adv = feats.clone()
    step = eps / steps if steps > 1 else eps
    for _ in range(steps):
        adv.requires_grad_(True)
        loss = torch.nn.functional.cross_entropy(body(adv), labels_for_loss, reduction="sum")
        (grad,) = torch.autograd.grad(loss, adv)
        direction = -1.0 if targeted else 1.0
        adv = adv.detach() + direction * step * grad.sign()
        adv = feats + (adv - feats).clamp(-eps, eps)
    return adv.detach()


def run(corpus: str, data_root: str, checkpoint: Path, out: Path) -> dict:
    torch.manual_seed(0)
    model = M.load_checkpoint(checkpoint)
    classes = list(model.checkpoint["classes"])
    test = D.fixed_split(D.load_corpus(data_root, corpus))["test"]
    windows = [D.windows(a, WINDOW) for a in test.audio]
    bounds = np.cumsum([0] + [len(w) for w in windows])
    with torch.no_grad():
        feats = model.features(torch.from_numpy(np.concatenate(windows)))
        clean_pred = model.body(feats).argmax(1)
    results = {
        "corpus": corpus,
        "checkpoint": str(checkpoint),
        "classes": classes,
        "n_clips": len(test),
        "epsilon_unit": "standardised log-mel (1 = one band std)",
        "chance_uar": 1 / len(classes),
        "attacks": {},
    }
    for name, spec in ATTACKS.items():
        targeted = spec["target"] is not None
        if targeted:
            goal = torch.full_like(clean_pred, classes.index(spec["target"]))
        else:
            goal = clean_pred  # the model's own prediction, as the prototype did
        rows = []
        for eps in EPSILONS:
            adv = attack_features(model.body, feats, goal, eps, spec["steps"], targeted)
            with torch.no_grad():
                logits = model.body(adv).numpy()
            per_clip = np.stack(
                [logits[a:b].mean(0) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
            )
            metrics = score(test.labels, per_clip.argmax(1), classes)
            rows.append({"eps": eps, "uar": metrics["uar"], "accuracy": metrics["accuracy"]})
            print(f"{corpus} {name:28s} eps {eps:4.2f}: UAR {metrics['uar']:.3f}", file=sys.stderr)
        results["attacks"][name] = rows
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / "spectrogram_reference.json.tmp"
    tmp.write_text(json.dumps(results, indent=2))
    os.replace(tmp, out / "spectrogram_reference.json")
    plot(results, out / "spectrogram_reference.png")
    return results


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    for name, rows in results["attacks"].items():
        ax.plot([r["eps"] for r in rows], [100 * r["uar"] for r in rows], marker="o", label=name)
    ax.axhline(100 * results["chance_uar"], color="grey", ls="--", label="chance")
    ax.set_xlabel("eps (standardised log-mel units)")
    ax.set_ylabel("white-box UAR %")
    ax.set_title(f"{results['corpus']}: FGSM on the spectrogram (reference)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path.with_suffix(".png.tmp"), format="png", dpi=120)
    plt.close(fig)
    os.replace(path.with_suffix(".png.tmp"), path)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="plainsight-export spectrogram-reference")
    parser.add_argument("--corpus", choices=["emodb", "ravdess"], required=True)
    parser.add_argument("--data", default=os.environ.get("PLAINSIGHT_DATA"))
    parser.add_argument("--checkpoint", type=Path, help="default: export/checkpoints/C/compact.pt")
    parser.add_argument("--out", type=Path, default=Path("eval-out/spectrogram-reference"))
    args = parser.parse_args(argv)
    if not args.data:
        print("spectrogram-reference: give --data or set PLAINSIGHT_DATA", file=sys.stderr)
        return 2
    ckpt = args.checkpoint or Path("export/checkpoints") / args.corpus / "compact.pt"
    run(args.corpus, args.data, ckpt, args.out)
    return 0
