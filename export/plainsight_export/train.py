"""plainsight-train: train an emotion model on EmoDB or RAVDESS, speaker-independently.

Model selection uses the validation speakers only; the test speakers are scored once, at
the end, by averaging the logits of 2 s windows (hop 1 s) that cover each whole clip.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import sys
import tempfile
import time
from copy import deepcopy
from functools import partial
from pathlib import Path

import numpy as np
import torch
from plainsight.corpora import CLASSES, CorpusError
from torch import nn
from tqdm import tqdm

from plainsight_export import data as D
from plainsight_export import models as M

WINDOW = 32000  # 2 s at 16 kHz
# EmoDB has ~2.6x fewer training clips than RAVDESS, so it gets more epochs.
DEFAULT_EPOCHS = {"emodb": 100, "ravdess": 60}
MFCC_EPOCHS = 40
DEFAULT_LR = {"compact": 3e-3, "seed-cnn": 1e-3, "mfcc-linear": 1e-2, "mfcc-shared": 1e-2}
DEFAULT_WD = {"compact": 1e-2, "seed-cnn": 1e-2, "mfcc-linear": 1e-2, "mfcc-shared": 1e-2}
for _arch in M.PANEL_ARCHS:
    DEFAULT_LR[_arch], DEFAULT_WD[_arch] = 3e-3, 1e-2
DEFAULT_LR["spectral-linear"], DEFAULT_WD["spectral-linear"] = 1e-2, 1e-2  # as mfcc-linear


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="plainsight-train", description=__doc__)
    p.add_argument("--corpus", required=True, choices=sorted(CLASSES))
    p.add_argument(
        "--data",
        default=os.environ.get("PLAINSIGHT_DATA"),
        help="folder holding emodb/ and ravdess/ (default: $PLAINSIGHT_DATA)",
    )
    p.add_argument("--arch", default="compact", choices=M.ARCHS)
    p.add_argument("--arch-kwargs", default="{}", help="JSON dict passed to build_model")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epochs", type=int, help="default: EmoDB 100, RAVDESS 60 (mfcc-* 40)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float)
    p.add_argument("--weight-decay", type=float)
    p.add_argument("--label-smoothing", type=float, default=0.1)
    p.add_argument("--mixup", type=float, default=0.0, help="mixup Beta(a, a) on features; 0 = off")
    p.add_argument(
        "--ema",
        type=float,
        default=0.0,
        help="validate and keep an exponential moving average of the weights with this "
        "decay per step (e.g. 0.99); 0 = off",
    )
    p.add_argument(
        "--sam-rho",
        type=float,
        default=0.0,
        help="sharpness-aware minimisation: each step's gradient taken at the weights moved "
        "by rho along the batch gradient (a flat-minimum surrogate, issue 9); 0 = off",
    )
    p.add_argument("--no-specaug", action="store_true", help="no time/frequency masking")
    p.add_argument("--out", help="output folder (default: export/checkpoints/<corpus>)")
    p.add_argument("--name", help="checkpoint file stem (default: the arch)")
    p.add_argument(
        "--role", default="default", choices=["default", "reference", "attacker", "adaptive"]
    )
    p.add_argument(
        "--panel",
        choices=["dev", "final"],
        help="held-out panel member: recorded in the checkpoint; implies --augment panel",
    )
    p.add_argument(
        "--augment",
        choices=["default", "panel", "channel"],
        help="default: gain + noise 5-35 dB; panel: gain, low-pass, noise 10-40 dB; channel: "
        "panel + random equalisers and random gain fields (data.CHANNEL_AUGMENT)",
    )
    p.add_argument(
        "--shared-labels",
        action="store_true",
        help="train on the labels both corpora share only (cross-corpus members)",
    )
    p.add_argument(
        "--score-corpus",
        choices=sorted(CLASSES),
        help="also score the other corpus's test speakers over the shared labels "
        "(cross-corpus member; implies --shared-labels)",
    )
    p.add_argument(
        "--also-corpus",
        choices=sorted(CLASSES),
        help="also train on the other corpus's training speakers over the shared labels "
        "(a surrogate of two languages and recording set-ups; implies --shared-labels; "
        "validation and test stay this corpus's speakers)",
    )
    p.add_argument(
        "--masked-cache",
        help="adaptive attacker: train on the clips masked as plainsight evaluate masks "
        "(the corpus's bundled model, default strength), cached as .npy in this folder "
        "(never commit it)",
    )
    p.add_argument(
        "--masked-privacy",
        choices=["mask", "neutralize"],
        default="mask",
        help="adaptive attacker: the privacy tier of the masker (neutralize: the neutralize "
        "stage, then the mask, as plainsight evaluate --privacy neutralize)",
    )
    p.add_argument(
        "--masked-strength",
        type=float,
        help="adaptive attacker, --masked-privacy neutralize: the neutralize strength "
        "(default: plainsight.neutralize.DEFAULT_STRENGTH)",
    )
    p.add_argument(
        "--masked-gain-db",
        type=float,
        help="adaptive attacker: the masker's gain stage bound in dB (Masker(gain_db=...), "
        "plainsight evaluate --mask-gain-db); default: off, as the default masker",
    )
    p.add_argument(
        "--masked-target",
        help="adaptive attacker: the masker's objective (Masker(objective=...), plainsight "
        "evaluate --mask-target); default: the masker's own (neutral)",
    )
    p.add_argument(
        "--masked-reference",
        choices=["clip", "speaker"],
        default="clip",
        help="adaptive attacker, --masked-privacy neutralize: what the cues are pulled toward: "
        "each clip's own medians (clip, the file form's default) or each speaker's medians "
        "over all of their clips (speaker: what a device learns from the voices it hears)",
    )
    p.add_argument(
        "--loso",
        action="store_true",
        help="leave-one-speaker-out cross-validation instead of the fixed split "
        "(writes a report only, no checkpoint)",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (1 is fastest when other jobs share the CPU)",
    )
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    if not args.data:
        p.error("no corpus folder: pass --data or set PLAINSIGHT_DATA")
    try:
        args.arch_kwargs = json.loads(args.arch_kwargs)
        assert isinstance(args.arch_kwargs, dict)
    except (ValueError, AssertionError):
        p.error("--arch-kwargs must be a JSON object")
    if args.epochs is None:
        args.epochs = MFCC_EPOCHS if args.arch in M.MFCC_ARCHS else DEFAULT_EPOCHS[args.corpus]
    if args.epochs < 1:
        p.error("--epochs must be >= 1")
    if not args.sam_rho >= 0:
        p.error("--sam-rho must be >= 0")
    args.lr = args.lr or DEFAULT_LR[args.arch]
    args.weight_decay = (
        args.weight_decay if args.weight_decay is not None else DEFAULT_WD[args.arch]
    )
    args.out = Path(args.out or Path("export/checkpoints") / args.corpus)
    args.augment = args.augment or ("panel" if args.panel else "default")
    args.shared_labels = args.shared_labels or bool(args.score_corpus or args.also_corpus)
    if args.score_corpus == args.corpus:
        p.error("--score-corpus must be the other corpus")
    if args.also_corpus == args.corpus:
        p.error("--also-corpus must be the other corpus")
    if args.also_corpus and args.loso:
        p.error("--also-corpus needs the fixed split, not --loso")
    if args.also_corpus and args.masked_cache:
        p.error("--also-corpus trains a surrogate on clean audio; not with --masked-cache")
    args.name = args.name or args.arch
    return args


# ----------------------------------------------------------------------------- metrics
def score(labels: np.ndarray, preds: np.ndarray, classes: list[str]) -> dict:
    n = len(classes)
    confusion = np.zeros((n, n), np.int64)
    np.add.at(confusion, (labels, preds), 1)
    support = confusion.sum(1)
    recall = np.divide(np.diag(confusion), support, out=np.zeros(n), where=support > 0)
    present = support > 0
    return {
        "uar": float(recall[present].mean()) if present.any() else 0.0,
        "accuracy": float(np.mean(labels == preds)) if len(labels) else 0.0,
        "chance_uar": 1.0 / n,
        "n": int(len(labels)),
        "per_class_recall": {c: float(r) for c, r in zip(classes, recall, strict=True)},
        "confusion": confusion.tolist(),
    }


def forward(model: nn.Module, x: torch.Tensor, fast: bool) -> torch.Tensor:
    if not fast:
        return model(x)
    if isinstance(model, M.Model):
        return model.body(model.features(x, fast=True))
    if isinstance(model, M.LogMelNet):
        return model.net(model.features(x, fast=True))
    if isinstance(model, M.MfccLinear):
        return model(x, fast=True)
    return model(x)  # waveform models have no front end


@torch.no_grad()
def clip_logits(model: nn.Module, clips: D.ClipSet, batch: int = 64, fast=False) -> np.ndarray:
    """Per clip: mean logits over 2 s windows (hop 1 s) covering the whole clip."""
    model.eval()
    wins = [D.windows(a, WINDOW) for a in clips.audio]
    flat = np.concatenate(wins)
    out = np.concatenate(
        [
            forward(model, torch.from_numpy(flat[i : i + batch]), fast).numpy()
            for i in range(0, len(flat), batch)
        ]
    )
    bounds = np.cumsum([0] + [len(w) for w in wins])
    return np.stack([out[a:b].mean(0) for a, b in zip(bounds[:-1], bounds[1:], strict=True)])


def evaluate(model, clips: D.ClipSet, classes, fast: bool = False) -> dict:
    """fast=True: FFT front end (validation during training); the final scores use the
    exportable DFT-conv front end."""
    logits = clip_logits(model, clips, fast=fast)
    result = score(clips.labels, logits.argmax(1), classes)
    loss = nn.functional.cross_entropy(torch.from_numpy(logits), torch.from_numpy(clips.labels))
    result["loss"] = float(loss)
    return result


# ----------------------------------------------------------------------------- training
def set_determinism(seed: int, threads: int) -> None:
    torch.manual_seed(seed)
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)


@torch.no_grad()
def feature_stats(model: nn.Module, clips: D.ClipSet) -> tuple[np.ndarray, np.ndarray]:
    """Per-band mean/std of the unstandardised log-mel over every training frame."""
    frontend = model.frontend
    total = np.zeros(frontend.cfg.n_mels)
    total_sq = np.zeros(frontend.cfg.n_mels)
    count = 0
    for audio in clips.audio:
        feats = frontend.forward_fft(torch.from_numpy(audio[None])).numpy()[0].astype(np.float64)
        total += feats.sum(0)
        total_sq += (feats**2).sum(0)
        count += len(feats)
    mean = total / count
    std = np.sqrt(np.maximum(total_sq / count - mean**2, 1e-8))
    return mean, std


@torch.no_grad()
def fit_statistics_scaler(model: M.MfccLinear, clips: D.ClipSet) -> None:
    stats = torch.cat(
        [
            model.statistics(torch.from_numpy(w), fast=True)
            for w in (D.windows(a, WINDOW) for a in clips.audio)
        ]
    )
    model.stat_mean.copy_(stats.mean(0))
    model.stat_std.copy_(stats.std(0).clamp_min(1e-4))


def spec_augment(feats: torch.Tensor, gen: torch.Generator, n_time=2, max_t=20, n_freq=2, max_f=6):
    """Zero (= band mean) random time and frequency stripes of [B, 1, T, F] features."""
    b, _, t, f = feats.shape
    mask = torch.ones(b, 1, t, f)
    for _ in range(n_time):
        width = torch.randint(0, max_t + 1, (b,), generator=gen)
        start = (torch.rand(b, generator=gen) * (t - width)).long()
        idx = torch.arange(t)[None]
        mask *= ~((idx >= start[:, None]) & (idx < (start + width)[:, None]))[:, None, :, None]
    for _ in range(n_freq):
        width = torch.randint(0, max_f + 1, (b,), generator=gen)
        start = (torch.rand(b, generator=gen) * (f - width)).long()
        idx = torch.arange(f)[None]
        mask *= ~((idx >= start[:, None]) & (idx < (start + width)[:, None]))[:, None, None, :]
    return feats * mask


class WeightAverage:
    """Exponential moving average of every float tensor of the state dict (incl. BN stats)."""

    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.state = {k: t.detach().clone() for k, t in model.state_dict().items()}

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        for key, value in model.state_dict().items():
            if value.is_floating_point():
                self.state[key].mul_(self.decay).add_(value.detach(), alpha=1 - self.decay)
            else:
                self.state[key].copy_(value)

    def averaged(self, model: nn.Module) -> nn.Module:
        copy = deepcopy(model)
        copy.load_state_dict(self.state)
        return copy.eval()


def class_weights(labels: np.ndarray, n: int) -> torch.Tensor:
    counts = np.bincount(labels, minlength=n).astype(np.float64)
    w = np.where(counts > 0, counts.sum() / np.maximum(counts, 1) / n, 0.0)
    return torch.tensor(w, dtype=torch.float32)


def features_loss(model, feats, y, loss_fn, lam: float = 1.0, partner=None) -> torch.Tensor:
    """The training loss from the model's input features (log-mel, MFCC statistics or the
    waveform itself), mixup partner included."""
    if isinstance(model, M.Model):
        logits = model.body(feats)
    elif isinstance(model, M.LogMelNet):
        logits = model.net(feats)
    elif isinstance(model, M.MfccLinear):
        logits = model.linear((feats - model.stat_mean) / model.stat_std)
    else:
        logits = model(feats)
    loss = loss_fn(logits, y)
    if partner is not None:
        loss = lam * loss + (1 - lam) * loss_fn(logits, y[partner])
    return loss


def sharpness_aware_gradient(params: list, batch_loss, rho: float) -> None:
    """Replace the params' .grad (of batch_loss, already taken) by the gradient at the
    weights moved by rho along it (SAM, Foret et al. 2021): the step then seeks a flat
    minimum, where the loss stays low around the weights."""
    grads = [p.grad for p in params]
    norm = torch.sqrt(sum((g**2).sum() for g in grads if g is not None))
    if not norm > 0:
        return
    originals = [p.detach().clone() for p in params]  # exact restore, not add-then-subtract
    with torch.no_grad():
        for p, g in zip(params, grads, strict=True):
            if g is not None:
                p.add_(g * (rho / norm))
    for p in params:
        p.grad = None
    batch_loss().backward()
    with torch.no_grad():
        for p, original in zip(params, originals, strict=True):
            p.copy_(original)


def train_model(args, classes, train: D.ClipSet, val: D.ClipSet | None, seed: int, progress=True):
    """Train one model; returns (model in eval mode, history dict)."""
    set_determinism(seed, args.threads)
    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(seed)
    cfg = M.default_features(args.arch)
    model = M.build_model(args.arch, len(classes), cfg, **args.arch_kwargs)
    logmel = isinstance(model, (M.Model, M.LogMelNet))
    augments = {"panel": D.PANEL_AUGMENT, "channel": D.CHANNEL_AUGMENT}
    augment_kw = augments.get(getattr(args, "augment", "default"), {})
    if isinstance(model, M.MfccLinear):
        fit_statistics_scaler(model, train)
    elif logmel:
        mean, std = feature_stats(model, train)
        model.frontend.set_stats(mean, std)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=args.weight_decay)
    steps_per_epoch = math.ceil(len(train) / args.batch_size)
    total = steps_per_epoch * args.epochs
    warmup = max(1, total // 20)

    def lr_factor(step):
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor)
    loss_fn = nn.CrossEntropyLoss(
        weight=class_weights(train.labels, len(classes)), label_smoothing=args.label_smoothing
    )
    history = {"epochs": [], "best_epoch": None, "selection": None}
    best = (-1.0, float("inf"))
    best_state = None
    select_from = args.epochs // 3
    bar = tqdm(
        range(args.epochs),
        desc=f"{args.arch} seed {seed}",
        disable=not progress,
        file=sys.stderr,
        dynamic_ncols=True,
    )
    ema = WeightAverage(model, args.ema) if args.ema > 0 else None
    for epoch in bar:
        model.train()
        order = rng.permutation(len(train))
        losses = []
        for i in range(0, len(order), args.batch_size):
            idx = order[i : i + args.batch_size]
            if len(idx) < 2:
                continue  # BatchNorm needs two examples
            batch = np.stack([D.crop(train.audio[j], WINDOW, rng) for j in idx])
            x = torch.from_numpy(D.augment(batch, rng, **augment_kw))
            y = torch.from_numpy(train.labels[idx])
            if logmel:
                feats = model.features(x, fast=True)
                if not args.no_specaug:
                    feats = spec_augment(feats, gen)
            elif isinstance(model, M.MfccLinear):
                feats = model.statistics(x, fast=True)
            else:
                feats = x  # raw-waveform model
            lam, partner = 1.0, None
            if args.mixup > 0:
                lam = float(rng.beta(args.mixup, args.mixup))
                partner = torch.from_numpy(rng.permutation(len(idx)))
                feats = lam * feats + (1 - lam) * feats[partner]
            batch_loss = partial(features_loss, model, feats, y, loss_fn, lam, partner)
            opt.zero_grad(set_to_none=True)
            loss = batch_loss()
            loss.backward()
            if args.sam_rho > 0:
                sharpness_aware_gradient(params, batch_loss, args.sam_rho)
            opt.step()
            sched.step()
            losses.append(loss.item())
            if ema is not None:
                ema.update(model)
        entry = {"epoch": epoch + 1, "train_loss": float(np.mean(losses))}
        scored = ema.averaged(model) if ema is not None else model
        if val is not None and len(val):
            v = evaluate(scored, val, classes, fast=True)
            entry.update(val_uar=v["uar"], val_loss=v["loss"])
            key = (v["uar"], -v["loss"])
            if epoch >= select_from and key > (best[0], -best[1]):
                best = (v["uar"], v["loss"])
                best_state = {k: t.clone() for k, t in scored.state_dict().items()}
                history["best_epoch"] = epoch + 1
            bar.set_postfix(loss=f"{entry['train_loss']:.3f}", val_uar=f"{v['uar']:.3f}")
        else:
            bar.set_postfix(loss=f"{entry['train_loss']:.3f}")
        history["epochs"].append(entry)
    if best_state is not None:
        model.load_state_dict(best_state)
        history["selection"] = "best validation UAR (ties: lower val loss) after epoch " + str(
            select_from
        )
    else:
        model.load_state_dict(scored.state_dict())
        history["best_epoch"] = args.epochs
        history["selection"] = "last epoch (no validation speakers)"
    return model.eval(), history


# ----------------------------------------------------------------------------- outputs
def write_json(path: Path, payload: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    with os.fdopen(fd, "w") as fh:
        json.dump(payload, fh, indent=2)
        fh.write("\n")
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def plot_confusion(path: Path, metrics: dict, classes: list[str], title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    conf = np.asarray(metrics["confusion"], np.float64)
    norm = conf / np.maximum(conf.sum(1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(1.0 * len(classes) + 2.5, 1.0 * len(classes) + 1.5))
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    for i in range(len(classes)):
        for j in range(len(classes)):
            ax.text(
                j,
                i,
                f"{int(conf[i, j])}\n{norm[i, j]:.2f}",
                ha="center",
                va="center",
                fontsize=8,
                color="white" if norm[i, j] > 0.5 else "black",
            )
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(
        f"{title}\nUAR {metrics['uar']:.3f}  acc {metrics['accuracy']:.3f}  "
        f"chance UAR {metrics['chance_uar']:.3f}  (n={metrics['n']})",
        fontsize=9,
    )
    fig.tight_layout()
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".png", dir=path.parent)
    os.close(fd)
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def model_size(model) -> dict:
    macs = M.count_macs(model, WINDOW)
    return {"params": M.count_params(model), "macs_per_2s": macs}


def adaptive_masker(
    corpus: str,
    privacy: str = "mask",
    neutralize_strength=None,
    reference=None,
    gain_db=None,
    objective=None,
):
    """The masker `plainsight evaluate --corpus C [--privacy P --neutralize-strength S]
    [--mask-gain-db G] [--mask-target T]` uses (the corpus's bundled model, default strength,
    ONNX, 1 thread), so the adaptive attacker trains on what it is scored on."""
    from plainsight import Masker

    common = dict(model=corpus, backend="onnx", threads=1, gain_db=gain_db, objective=objective)
    if privacy == "mask":
        return Masker(**common)
    return Masker(
        **common,
        privacy=privacy,
        neutralize_strength=neutralize_strength,
        neutralize_reference=reference,
    )


def speaker_references(clips: D.ClipSet) -> dict:
    """Each speaker's neutralize reference: the medians over the frames of all of their clips
    (every emotion, no labels used), instead of each clip's own medians, which keep the
    utterance's overall pitch, level and effort."""
    from plainsight.neutralize import Geometry, frame_features, reference_from

    frames: dict[str, list] = {}
    for utt, audio in zip(clips.utts, clips.audio, strict=True):
        frames.setdefault(utt.speaker, []).append(frame_features(audio, Geometry(16000)))
    return {
        speaker: reference_from(*(np.concatenate(f) for f in zip(*parts, strict=True)), 16000)
        for speaker, parts in frames.items()
    }


def neutralize_source() -> str:
    """sha256 of plainsight/neutralize.py: the neutralize stage is still being tuned, and a
    changed algorithm must re-mask (and is recorded in the report)."""
    import hashlib

    import plainsight.neutralize

    return hashlib.sha256(Path(plainsight.neutralize.__file__).read_bytes()).hexdigest()[:12]


def masker_key(masker) -> str:
    """Cache key of the masker's settings and model files: a changed default re-masks."""
    import hashlib

    from plainsight.evaluate.panel import masker_source_sha256

    settings = masker.settings() | {"files": [m.spec.manifest["files"] for m in masker.members]}
    settings["masker_source_sha256"] = masker_source_sha256()  # a changed masker re-masks
    if getattr(masker, "privacy", "mask") != "mask":
        settings["neutralize_source"] = neutralize_source()
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]


def masked_clips(clips: D.ClipSet, cache: Path, masker_of) -> D.ClipSet:
    """The clips masked by `masker_of(utterance)` (deterministic: no random start), cached as
    .npy files in cache/<masker key>/."""
    out = []
    for utt, audio in tqdm(list(zip(clips.utts, clips.audio, strict=True)), desc="masking"):
        masker = masker_of(utt)
        folder = cache / masker_key(masker)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{utt.corpus}-{utt.path.stem}.npy"
        if not path.is_file():
            tmp = path.with_suffix(".tmp.npy")
            np.save(tmp, masker.mask(audio, 16000).astype(np.float32))
            os.replace(tmp, path)
        out.append(np.load(path))
    return D.ClipSet(clips.utts, out, clips.labels)


def cross_corpus_test(args, model, classes) -> tuple[dict, dict]:
    """Test speakers of --score-corpus over the shared labels: (label map, scores)."""
    from plainsight.corpora import list_corpus, split_of
    from plainsight.evaluate.panel import shared_label_map

    label_map = shared_label_map(args.score_corpus, args.corpus)
    utts = [u for u in list_corpus(args.data, args.score_corpus) if split_of(u) == "test"]
    test = D.restrict_labels(D.load_clips(utts, CLASSES[args.score_corpus]), classes, label_map)
    return label_map, evaluate(model, test, classes)


def other_corpus_training(args, classes) -> D.ClipSet:
    """--also-corpus's training speakers, labels mapped onto this corpus's shared classes
    (its validation and test speakers are never used)."""
    from plainsight.evaluate.panel import shared_label_map

    other = D.load_corpus(args.data, args.also_corpus)
    label_map = shared_label_map(args.also_corpus, args.corpus)
    return D.restrict_labels(D.fixed_split(other)["train"], classes, label_map)


def run_fixed(args, clips: D.ClipSet, classes) -> dict:
    parts = D.fixed_split(clips)
    if args.also_corpus:
        parts["train"] = D.concat(parts["train"], other_corpus_training(args, classes))
    clean_test = parts["test"]
    if args.masked_cache:
        masker = adaptive_masker(
            args.corpus,
            args.masked_privacy,
            args.masked_strength,
            gain_db=args.masked_gain_db,
            objective=args.masked_target,
        )
        maskers = {}
        if args.masked_reference == "speaker":
            if args.masked_privacy != "neutralize":
                raise SystemExit(
                    "train: --masked-reference speaker needs --masked-privacy neutralize"
                )
            maskers = {
                speaker: adaptive_masker(
                    args.corpus,
                    args.masked_privacy,
                    args.masked_strength,
                    reference,
                    gain_db=args.masked_gain_db,
                    objective=args.masked_target,
                )
                for speaker, reference in speaker_references(clips).items()
            }

        def masker_of(utt):
            return maskers.get(utt.speaker, masker)

        # Every split is masked (test too, to score the member on what it was trained for);
        # the test speakers stay out of training as in every other member.
        parts = {k: masked_clips(v, Path(args.masked_cache), masker_of) for k, v in parts.items()}
    start = time.time()
    model, history = train_model(
        args, classes, parts["train"], parts["val"], args.seed, not args.no_progress
    )
    train_time = time.time() - start
    test = evaluate(model, parts["test"], classes)
    val = evaluate(model, parts["val"], classes)
    frontend = getattr(model, "frontend", None)
    cfg = frontend.cfg if frontend is not None else M.FeatureConfig()  # wav1d: rate only
    extra = {}
    if args.panel:
        family = f"cross-corpus-{args.arch}" if args.score_corpus else args.arch
        extra.update(panel=args.panel, family=family)
    if args.masked_cache:
        extra["trained_on"] = (
            "audio masked by plainsight evaluate's default masker"
            if args.masked_privacy == "mask"
            else "audio neutralised then masked as plainsight evaluate --privacy neutralize"
        )
        if args.masked_gain_db:
            extra["trained_on"] += f", with the gain stage (--mask-gain-db {args.masked_gain_db:g})"
        if args.masked_target:
            extra["trained_on"] += f", objective {args.masked_target}"
        extra["masker"] = masker.settings() | {"cache_key": masker_key(masker)}
        if args.masked_privacy != "mask":
            extra["masker"]["neutralize_source_sha256"] = neutralize_source()
        if maskers:  # one masker per speaker: record the mode, not one speaker's reference
            extra["masker"]["neutralize_reference"] = "per-speaker medians over all clips"
        extra["test_clean"] = evaluate(model, clean_test, classes)
        # In the checkpoint and manifest: evaluate scores an adaptive member only beside the
        # masker it was trained against.
        from plainsight.evaluate.panel import masker_source_sha256

        extra["trained_on_masker"] = masker.settings() | {
            "masker_source_sha256": masker_source_sha256()
        }
        if maskers:
            extra["trained_on_masker"]["neutralize_reference"] = "per-speaker"
    if args.also_corpus:
        extra["also_trained_on"] = args.also_corpus
    if args.score_corpus:
        extra["label_map"], extra["cross_corpus_test"] = cross_corpus_test(args, model, classes)
        extra["scored_on"] = args.score_corpus
    report = {
        "corpus": args.corpus,
        "arch": args.arch,
        "name": args.name,
        "role": args.role,
        "seed": args.seed,
        "classes": classes,
        "split": {k: v.speakers() for k, v in parts.items()},
        "n_clips": {k: len(v) for k, v in parts.items()},
        "evaluation": "test speakers; per clip the mean logits of 2 s windows (hop 1 s) "
        "covering the whole clip, short clips zero-padded centred",
        "test": test,
        "val": val,
        "uar": test["uar"],
        "accuracy": test["accuracy"],
        "chance_uar": test["chance_uar"],
        "train_time_s": round(train_time, 1),
        "threads": args.threads,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "weight_decay": args.weight_decay,
        "label_smoothing": args.label_smoothing,
        "mixup": args.mixup,
        "ema": args.ema,
        "sam_rho": args.sam_rho,
        "specaug": not args.no_specaug,
        "arch_kwargs": args.arch_kwargs,
        "augment": args.augment,
        **extra,
        **model_size(model),
        "history": history,
        "command": "plainsight-train " + shlex.join(sys.argv[1:]),
        "torch": torch.__version__,
    }
    ckpt = args.out / f"{args.name}.pt"
    metrics = {
        k: test[k] for k in ("uar", "accuracy", "chance_uar", "confusion", "per_class_recall")
    }
    M.save_checkpoint(
        ckpt,
        model,
        arch=args.arch,
        arch_kwargs=args.arch_kwargs,
        classes=classes,
        features=cfg,
        window_samples=WINDOW,
        seed=args.seed,
        corpus=args.corpus,
        role=args.role,
        metrics=metrics,
        **{k: extra[k] for k in M.PANEL_CKPT_KEYS if k in extra},
    )
    write_json(args.out / f"{args.name}.report.json", report)
    plot_confusion(
        args.out / f"{args.name}.report.png",
        test,
        classes,
        f"{args.corpus} {args.name} ({args.arch}, seed {args.seed}), test speakers "
        + ",".join(parts["test"].speakers()),
    )
    return report


def run_loso(args, clips: D.ClipSet, classes) -> dict:
    start = time.time()
    folds, all_labels, all_preds = [], [], []
    for speaker, train, test in D.loso_folds(clips):
        model, _ = train_model(args, classes, train, None, args.seed, not args.no_progress)
        preds = clip_logits(model, test).argmax(1)
        fold = score(test.labels, preds, classes)
        folds.append(
            {"speaker": speaker, "uar": fold["uar"], "accuracy": fold["accuracy"], "n": fold["n"]}
        )
        all_labels.append(test.labels)
        all_preds.append(preds)
        print(
            f"speaker {speaker}: UAR {fold['uar']:.3f} acc {fold['accuracy']:.3f}", file=sys.stderr
        )
    pooled = score(np.concatenate(all_labels), np.concatenate(all_preds), classes)
    report = {
        "corpus": args.corpus,
        "arch": args.arch,
        "seed": args.seed,
        "classes": classes,
        "protocol": "leave-one-speaker-out, last epoch (no model selection)",
        "folds": folds,
        "mean_fold_uar": float(np.mean([f["uar"] for f in folds])),
        "pooled": pooled,
        "uar": pooled["uar"],
        "accuracy": pooled["accuracy"],
        "chance_uar": pooled["chance_uar"],
        "train_time_s": round(time.time() - start, 1),
        "epochs": args.epochs,
        "arch_kwargs": args.arch_kwargs,
        "command": "plainsight-train " + shlex.join(sys.argv[1:]),
    }
    write_json(args.out / f"{args.name}.loso.report.json", report)
    plot_confusion(
        args.out / f"{args.name}.loso.report.png",
        pooled,
        classes,
        f"{args.corpus} {args.name}, leave-one-speaker-out (pooled)",
    )
    return report


def main(argv=None) -> int:
    args = parse_args(argv)
    classes = CLASSES[args.corpus]
    torch.set_num_threads(args.threads)
    try:
        clips = D.load_corpus(args.data, args.corpus)
    except CorpusError as exc:
        print(f"plainsight-train: {exc}", file=sys.stderr)
        return 2
    if args.shared_labels:
        from plainsight.evaluate.panel import shared_classes

        classes = shared_classes(args.corpus)
        clips = D.restrict_labels(clips, classes)
    report = run_loso(args, clips, classes) if args.loso else run_fixed(args, clips, classes)
    print(
        f"{args.corpus} {args.name}: test UAR {report['uar']:.3f} accuracy "
        f"{report['accuracy']:.3f} (chance UAR {report['chance_uar']:.3f}), "
        f"train {report['train_time_s']:.0f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
