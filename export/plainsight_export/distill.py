"""A small student distilled from a teacher the device cannot afford or differentiate
(build side, a study): the Whisper-backbone surrogate head, or (`--teacher egemaps`) an
openSMILE eGeMAPSv02 + logistic-regression classifier of our own, fitted on the training
speakers' 2 s windows (the field's standard baseline, which no differentiable surrogate of
ours reaches: docs/EVALUATION.md, "A surrogate of the eGeMAPS family").

A mask crafted through Whisper base's encoder blinds other heads on that encoder, but ten
steps through a 20 M-parameter transformer are far beyond a Pi's budget. Can the bundled
model's own architecture (the compact CNN, whose gradient graph the device already runs) learn
to *react like* the Whisper head, so that a mask crafted on it reaches the Whisper family?

The student is trained on the training speakers' clips only, with the panel's benign
augmentation, to match the teacher's posteriors (KL at temperature T) on every augmented crop.
With `--adversarial` half of the crops come from the same clips masked through the teacher
(38 dB, the transfer study's `whisper` method), labelled by the teacher as it hears them: the
black-box substitute recipe (Papernot et al. 2017), which puts training points exactly where
the teacher's decision moves under the perturbations we craft.

    python -m plainsight_export.distill --corpus emodb [--adversarial]

writes export/checkpoints/<corpus>/surrogate-student-whisper[-adv]-s<seed>.pt, a surrogate the
transfer study loads by name (`student`, `student-adv` methods); `--teacher egemaps` writes
surrogate-student-egemaps-s<seed>.pt (`student-egemaps`, `gain-16x100-student-egemaps`).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from plainsight.corpora import CLASSES
from torch.nn import functional as F

from plainsight_export import data as D
from plainsight_export import models as M
from plainsight_export import transfer_study as T
from plainsight_export.train import DEFAULT_LR, DEFAULT_WD, evaluate, feature_stats, forward
from plainsight_export.whisper_torch import load_surrogate_head, surrogate_path

WINDOW = 32000
ADVERSARIAL_SNR_DB = 38.0


def crops(clips: D.ClipSet, seed: int) -> list[np.ndarray]:
    """One random 2 s crop of every clip (the same draws for the masked and the clean copy)."""
    rng = np.random.default_rng(seed)
    return [D.crop(clip, WINDOW, rng) for clip in clips.audio]


def teacher_masked(clips: D.ClipSet, teacher: T.Surrogate, cache: Path, seed: int) -> list:
    """`crops(clips, seed)`, each masked through the teacher at 38 dB measured SNR (one window
    per clip keeps this to ~1.5 s a clip; cached)."""
    if cache.is_file():
        with np.load(cache) as z:
            return [z[f"clip{i}"] for i in range(len(clips))]
    rng = np.random.default_rng(seed)
    method = T.METHODS["whisper"]
    out = []
    for i, audio in enumerate(crops(clips, seed)):
        delta = T.craft(audio, 35.0, [teacher], method, rng)
        out.append(T.at_snr(audio, delta, ADVERSARIAL_SNR_DB))
        print(f"\rteacher masks {i + 1}/{len(clips)}", end="", file=sys.stderr)
    print(file=sys.stderr)
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.savez(cache, **{f"clip{i}": m for i, m in enumerate(out)})
    return out


def train_student(
    train: D.ClipSet, val: D.ClipSet, classes: list[str], teacher, adversarial=None, *,
    epochs: int, batch_size: int = 32, temperature: float = 2.0, seed: int = 11,
):  # fmt: skip
    """A compact CNN trained to match teacher(waveforms [B, N]) -> logits on every augmented
    crop (KL at `temperature`). `adversarial`: per training clip, a masked copy drawn for half
    the crops. Returns (student in eval mode, per-epoch history)."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    cfg = M.default_features("compact")
    student = M.build_model("compact", len(classes), cfg)
    mean, std = feature_stats(student, train)
    student.frontend.set_stats(mean, std)
    opt = torch.optim.AdamW(
        student.parameters(), lr=DEFAULT_LR["compact"], weight_decay=DEFAULT_WD["compact"]
    )
    total = math.ceil(len(train) / batch_size) * epochs
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda step: 0.5 * (1 + math.cos(math.pi * min(step, total) / total))
    )
    t = temperature
    history = []
    for epoch in range(epochs):
        student.train()
        losses = []
        order = rng.permutation(len(train))
        for i in range(0, len(order), batch_size):
            idx = order[i : i + batch_size]
            if len(idx) < 2:
                continue  # BatchNorm needs two examples
            crops = []
            for j in idx:
                use_adv = adversarial is not None and rng.random() < 0.5
                crops.append(D.crop((adversarial if use_adv else train.audio)[j], WINDOW, rng))
            x = torch.from_numpy(D.augment(np.stack(crops), rng, **D.PANEL_AUGMENT))
            with torch.no_grad():
                soft = F.softmax(teacher(x) / t, dim=1)
            logits = forward(student, x, fast=True)
            loss = F.kl_div(F.log_softmax(logits / t, dim=1), soft, reduction="batchmean") * t * t
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            losses.append(loss.item())
        student.eval()
        v = evaluate(student, val, classes, fast=True)
        history.append({"epoch": epoch + 1, "kl": float(np.mean(losses)), "val_uar": v["uar"]})
        print(
            f"epoch {epoch + 1}: kl {np.mean(losses):.3f} val UAR {v['uar']:.3f}", file=sys.stderr
        )
    return student, history


class EgemapsTeacher:
    """openSMILE eGeMAPSv02 functionals of each 2 s window, standardised, then a logistic
    regression fitted on the training speakers' windows (not the panel's members: those are
    never trained on or copied). Called on waveforms [B, N], returns logits [B, C]; no
    gradient (openSMILE is not differentiable), which is why the student exists."""

    def __init__(self, train: D.ClipSet, classes: list[str]):
        from plainsight.evaluate.panel import egemaps_functionals
        from sklearn.linear_model import LogisticRegression
        from sklearn.preprocessing import StandardScaler

        self.features = egemaps_functionals
        rows, labels = [], []
        for audio, label in zip(train.audio, train.labels, strict=True):
            for window in D.windows(audio, WINDOW):
                rows.append(self.features(window))
                labels.append(label)
        self.scaler = StandardScaler().fit(np.stack(rows))
        self.model = LogisticRegression(C=0.1, max_iter=5000)
        self.model.fit(self.scaler.transform(np.stack(rows)), labels)
        if list(self.model.classes_) != list(range(len(classes))):
            raise SystemExit("eGeMAPS teacher: a class has no training window")

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        feats = np.stack([self.features(w) for w in x.detach().numpy()])
        logits = self.model.decision_function(self.scaler.transform(feats))
        return torch.from_numpy(logits.astype(np.float32))


def distill(args) -> Path:
    torch.set_num_threads(args.threads)
    classes = CLASSES[args.corpus]
    parts = D.fixed_split(D.load_corpus(args.data, args.corpus))
    if args.teacher == "egemaps":
        if args.adversarial:
            raise SystemExit("--adversarial needs a differentiable teacher (whisper)")
        teacher_logits = EgemapsTeacher(parts["train"], classes)
    else:
        head, teacher_classes = load_surrogate_head(surrogate_path(args.corpus, 11))
        if teacher_classes != classes:
            raise SystemExit(f"teacher classes {teacher_classes} != {classes}")
        teacher = T.Surrogate("teacher", head, classes.index(T.TARGET))
        teacher_logits = teacher.logits
    adversarial = None
    if args.adversarial:
        cache = Path(args.cache) / f"{args.corpus}-teacher-masked-train-s{args.seed}.npz"
        adversarial = teacher_masked(parts["train"], teacher, cache, args.seed)
    start = time.time()
    student, history = train_student(
        parts["train"], parts["val"], classes, teacher_logits, adversarial,
        epochs=args.epochs, batch_size=args.batch_size, temperature=args.temperature,
        seed=args.seed,
    )  # fmt: skip
    test = evaluate(student, parts["test"], classes)
    name = f"surrogate-student-{args.teacher}{'-adv' if args.adversarial else ''}-s{args.seed}"
    out = Path("export/checkpoints") / args.corpus / f"{name}.pt"
    metrics = {k: test[k] for k in ("uar", "accuracy", "chance_uar", "confusion")}
    M.save_checkpoint(
        out, student, arch="compact", arch_kwargs={}, classes=classes,
        features=student.frontend.cfg, window_samples=WINDOW, seed=args.seed,
        corpus=args.corpus, role="surrogate", metrics=metrics,
    )  # fmt: skip
    report = {
        "corpus": args.corpus,
        "teacher": surrogate_path(args.corpus, 11).name
        if args.teacher == "whisper"
        else "eGeMAPSv02 + logistic regression (training speakers)",
        "adversarial": bool(args.adversarial),
        "temperature": args.temperature,
        "epochs": args.epochs,
        "seed": args.seed,
        "test_uar": test["uar"],
        "train_time_s": round(time.time() - start, 1),
        "history": history,
        "command": "python -m plainsight_export.distill " + " ".join(sys.argv[1:]),
    }
    out.with_suffix(".report.json").write_text(json.dumps(report, indent=1) + "\n")
    print(f"{out}: test UAR {test['uar']:.3f}", file=sys.stderr)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m plainsight_export.distill", description=__doc__)
    p.add_argument("--corpus", choices=sorted(CLASSES), required=True)
    p.add_argument("--data", default=os.environ.get("PLAINSIGHT_DATA"))
    p.add_argument("--teacher", choices=["whisper", "egemaps"], default="whisper")
    p.add_argument("--adversarial", action="store_true", help="half the crops teacher-masked")
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--temperature", type=float, default=2.0)
    p.add_argument("--seed", type=int, default=11)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--cache", default="/tmp/plainsight-distill")
    args = p.parse_args(argv)
    if not args.data:
        p.error("no corpus folder: pass --data or set PLAINSIGHT_DATA")
    distill(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
