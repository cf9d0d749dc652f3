"""Slightly robust surrogates for the transfer study (issue 9 section 2, candidate 2).

Fine-tunes a trained checkpoint for a few epochs with small-budget adversarial training:
each training crop gets a PGD perturbation toward the loss-maximising direction under an
L-inf bound at a random 40-45 dB SNR (the crop's RMS), and the model learns from clean and
perturbed crops alike (benign panel augmentation on both). In image work, gradients of such
slightly robust models align with features every model uses, which is what makes their
adversarial examples transfer.

    python -m plainsight_export robust-surrogate --corpus emodb --source surrogate-cnn2 \
        --name surrogate-cnn2-robust --epochs 4
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from plainsight.corpora import CLASSES
from plainsight.features import FeatureConfig

from plainsight_export import data as D
from plainsight_export import models as M
from plainsight_export.train import WINDOW, class_weights, evaluate, forward

CHECKPOINTS = Path("export/checkpoints")


def pgd(model, x, y, snr_range, steps, rng) -> torch.Tensor:
    """Untargeted L-inf PGD on waveform crops [B, N] at a random SNR per crop."""
    rms = x.pow(2).mean(dim=1, keepdim=True).sqrt()
    snr = torch.from_numpy(rng.uniform(*snr_range, size=(len(x), 1)).astype(np.float32))
    eps = rms * 10 ** (-snr / 20)
    delta = (torch.rand_like(x) * 2 - 1) * eps
    for _ in range(steps):
        delta.requires_grad_(True)
        loss = torch.nn.functional.cross_entropy(forward(model, x + delta, fast=True), y)
        (g,) = torch.autograd.grad(loss, delta)
        delta = (delta.detach() + 1.5 * eps / steps * g.sign()).clamp(-eps, eps)
    return (x + delta).detach()


def finetune(args) -> Path:
    torch.manual_seed(args.seed)
    torch.set_num_threads(1)
    rng = np.random.default_rng(args.seed)
    ckpt = M.read_checkpoint(CHECKPOINTS / args.corpus / f"{args.source}.pt")
    model = M.model_from_checkpoint(ckpt)
    classes = list(ckpt["classes"])
    parts = D.fixed_split(D.load_corpus(args.data, args.corpus))
    train, val = parts["train"], parts["val"]
    loss_fn = torch.nn.CrossEntropyLoss(
        weight=class_weights(train.labels, len(classes)), label_smoothing=0.1
    )
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-2)
    start = time.time()
    for epoch in range(args.epochs):
        order = rng.permutation(len(train))
        losses = []
        for i in range(0, len(order), 32):
            idx = order[i : i + 32]
            if len(idx) < 2:
                continue
            batch = np.stack([D.crop(train.audio[j], WINDOW, rng) for j in idx])
            x = torch.from_numpy(D.augment(batch, rng, **D.PANEL_AUGMENT))
            y = torch.from_numpy(train.labels[idx])
            model.eval()  # fixed BatchNorm statistics while crafting
            adv = pgd(model, x, y, (args.snr_low, args.snr_high), args.pgd_steps, rng)
            model.train()
            logits = forward(model, torch.cat([x, adv]), fast=True)
            loss = loss_fn(logits, torch.cat([y, y]))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(loss.item())
        v = evaluate(model, val, classes, fast=True)
        print(
            f"epoch {epoch + 1}: loss {np.mean(losses):.3f} val UAR {v['uar']:.3f} "
            f"({time.time() - start:.0f} s)",
            file=sys.stderr,
        )
    model.eval()
    test = evaluate(model, parts["test"], classes)
    print(f"test UAR {test['uar']:.3f}", file=sys.stderr)
    return M.save_checkpoint(
        CHECKPOINTS / args.corpus / f"{args.name}.pt",
        model,
        arch=ckpt["arch"],
        arch_kwargs=ckpt.get("arch_kwargs", {}),
        classes=classes,
        features=FeatureConfig.from_dict(ckpt["features"]),
        window_samples=ckpt["window_samples"],
        seed=args.seed,
        corpus=args.corpus,
        role="reference",
        metrics={"test": test, "val": v},
        robust={
            "source": args.source,
            "epochs": args.epochs,
            "pgd_steps": args.pgd_steps,
            "snr_db": [args.snr_low, args.snr_high],
            "lr": args.lr,
            "seconds": round(time.time() - start),
        },
    )


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="plainsight-export robust-surrogate")
    p.add_argument("--corpus", choices=sorted(CLASSES), required=True)
    p.add_argument("--data", default=os.environ.get("PLAINSIGHT_DATA"))
    p.add_argument("--source", required=True, help="checkpoint stem to fine-tune")
    p.add_argument("--name", required=True, help="output checkpoint stem (surrogate-*)")
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--pgd-steps", type=int, default=2)
    p.add_argument("--snr-low", type=float, default=40.0)
    p.add_argument("--snr-high", type=float, default=45.0)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if not args.data:
        print("robust-surrogate: give --data or set PLAINSIGHT_DATA", file=sys.stderr)
        return 2
    if not args.name.startswith("surrogate-"):
        print("robust-surrogate: --name must start with surrogate-", file=sys.stderr)
        return 2
    print(f"wrote {finetune(args)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
