"""Utterance-statistics members of the held-out panel: window functionals + sklearn classifier.

Features are computed by the runtime's numpy code (plainsight.evaluate.panel: MFCC + deltas
functionals, openSMILE eGeMAPSv02, or Whisper base's pooled encoder output), on the same 2 s
windows (hop 1 s) the scorer reads. Every training window is augmented once with the panel's
benign augmentation (noise 10-40 dB, gain, low-pass). The fitted scaler and classifier are
written as plain .npy arrays with a sha256 manifest (no pickles) to
export/artifacts/<corpus>-attacker-<panel>-<name>/, and the report to
export/checkpoints/<corpus>/attacker-<panel>-<name>.report.json.

    python -m plainsight_export.stats_members --corpus emodb --features mfcc-functionals \
        --classifier lr --panel dev --name mfcc-lr-s0
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

import numpy as np
from plainsight.corpora import CLASSES, list_corpus, split_of
from plainsight.evaluate import panel as P
from plainsight.evaluate.pipeline import clip_windows

from plainsight_export import data as D
from plainsight_export.export import sha256_file
from plainsight_export.train import score, write_json
from plainsight_export.verify import REPO_ROOT

C_GRID = (0.01, 0.1, 1.0, 10.0)


def make_classifier(kind: str, c: float, seed: int):
    from sklearn.linear_model import LogisticRegression
    from sklearn.svm import SVC

    if kind == "lr":
        return LogisticRegression(C=c, max_iter=3000, class_weight="balanced", random_state=seed)
    if kind in ("svc-linear", "svc-rbf"):
        return SVC(
            C=c,
            kernel=kind.split("-")[1],
            gamma="scale",
            class_weight="balanced",
            random_state=seed,
        )
    raise ValueError(f"unknown classifier {kind!r}")


def classifier_params(clf) -> tuple[dict, dict[str, np.ndarray]]:
    """(scalar settings, arrays) of a fitted sklearn classifier, for the numpy scorer."""
    if hasattr(clf, "coef_") and not hasattr(clf, "support_vectors_"):
        return {"type": "linear"}, {"coef": clf.coef_, "intercept": clf.intercept_}
    settings = {"type": "svc", "kernel": clf.kernel, "gamma": float(clf._gamma)}
    arrays = {
        "support_vectors": clf.support_vectors_,
        "dual_coef": clf.dual_coef_,
        "intercept": clf.intercept_,
        "n_support": clf.n_support_.astype(np.float64),
    }
    return settings, arrays


def augmented_features(clips: D.ClipSet, kind: str, seed: int, augment: bool):
    """Features of every scoring window of every clip (augmented once each) and labels."""
    rng = np.random.default_rng(seed)
    feats, labels = [], []
    for audio, label in zip(clips.audio, clips.labels, strict=True):
        wins = clip_windows(audio, P.WINDOW)
        if augment:
            wins = D.augment(wins, rng, **D.PANEL_AUGMENT)
        feats += [P.FEATURES[kind](w) for w in wins]
        labels += [label] * len(wins)
    return np.stack(feats).astype(np.float64), np.array(labels)


def clip_scores(scorer_fn, clips: D.ClipSet, kind: str) -> np.ndarray:
    feats, bounds = P.window_features(clips.audio, kind)
    scores = scorer_fn(feats.astype(np.float64))
    return np.stack([scores[a:b].mean(0) for a, b in zip(bounds[:-1], bounds[1:], strict=True)])


def write_member(out_dir: Path, manifest: dict, arrays: dict[str, np.ndarray]) -> None:
    """Arrays as float32 .npy + manifest.json with their sha256, written atomically."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        files = {}
        for key, value in sorted(arrays.items()):
            path = tmp / f"{key}.npy"
            np.save(path, np.asarray(value, np.float32))
            files[path.name] = {"sha256": sha256_file(path), "bytes": path.stat().st_size}
        manifest = manifest | {"files": files}
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        os.chmod(tmp, 0o755)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        tmp.rename(out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        prog="python -m plainsight_export.stats_members", description=__doc__
    )
    p.add_argument("--corpus", required=True, choices=sorted(CLASSES), help="training corpus")
    p.add_argument("--data", default=os.environ.get("PLAINSIGHT_DATA"))
    p.add_argument("--features", required=True, choices=sorted(P.FEATURES))
    p.add_argument("--classifier", required=True, choices=["lr", "svc-linear", "svc-rbf"])
    p.add_argument("--panel", required=True, choices=P.PANELS)
    p.add_argument("--name", required=True, help="e.g. mfcc-lr-s0 (-> attacker-<panel>-<name>)")
    p.add_argument("--family", help="default: from the name without the seed")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--score-corpus",
        choices=sorted(CLASSES),
        help="cross-corpus member: train on the shared labels, score this corpus's test speakers",
    )
    p.add_argument("--cache", default="/tmp/plainsight-panel-features", help="feature cache")
    args = p.parse_args(argv)
    if not args.data:
        p.error("no corpus folder: pass --data or set PLAINSIGHT_DATA")
    if args.score_corpus == args.corpus:
        p.error("--score-corpus must be the other corpus")
    args.family = args.family or args.name.rsplit("-s", 1)[0]
    return args


def fit_selected(kind: str, x_train, y_train, x_val, y_val, classes, seed: int):
    """Standardise, then the classifier whose C (from C_GRID) gives the best validation-speaker
    window UAR, never the test speakers': (scaler, classifier, C, validation UAR)."""
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(x_train)
    scaler.scale_ = np.maximum(scaler.scale_, 1e-6)
    best = None
    for c in C_GRID:
        clf = make_classifier(kind, c, seed).fit(scaler.transform(x_train), y_train)
        val_uar = score(y_val, clf.predict(scaler.transform(x_val)), classes)["uar"]
        print(f"C={c:g}: validation window UAR {val_uar:.3f}", file=sys.stderr)
        if best is None or val_uar > best[0]:
            best = (val_uar, c, clf)
    val_uar, c, clf = best
    return scaler, clf, c, val_uar


def cached(path: Path, compute):
    if path.is_file():
        with np.load(path, allow_pickle=False) as z:
            return z["x"], z["y"]
    x, y = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, x=x, y=y)
    os.replace(tmp, path)
    return x, y


def main(argv=None) -> int:
    args = parse_args(argv)
    start = time.time()
    scored_on = args.score_corpus or args.corpus
    classes = P.shared_classes(args.corpus) if args.score_corpus else CLASSES[args.corpus]
    clips = D.restrict_labels(D.load_corpus(args.data, args.corpus), classes)
    parts = D.fixed_split(clips)
    tag = f"{args.corpus}-{args.features}-{'shared' if args.score_corpus else 'all'}-s{args.seed}"
    x_train, y_train = cached(
        Path(args.cache) / f"{tag}-train.npz",
        lambda: augmented_features(parts["train"], args.features, args.seed, True),
    )
    x_val, y_val = cached(
        Path(args.cache) / f"{tag}-val.npz",
        lambda: augmented_features(parts["val"], args.features, args.seed, False),
    )
    scaler, clf, c, val_uar = fit_selected(
        args.classifier, x_train, y_train, x_val, y_val, classes, args.seed
    )
    settings, arrays = classifier_params(clf)
    arrays |= {"scaler_mean": scaler.mean_, "scaler_scale": scaler.scale_}
    params = settings | {k: np.asarray(v, np.float32).astype(np.float64) for k, v in arrays.items()}

    def scorer_fn(feats):
        x = (feats - params["scaler_mean"]) / params["scaler_scale"]
        return P.CLASSIFIERS[settings["type"]](x, params)

    label_map = None
    if args.score_corpus:
        label_map = P.shared_label_map(args.score_corpus, args.corpus)
        utts = [u for u in list_corpus(args.data, args.score_corpus) if split_of(u) == "test"]
        test = D.restrict_labels(D.load_clips(utts, CLASSES[args.score_corpus]), classes, label_map)
    else:
        test = parts["test"]
    test_scores = score(test.labels, clip_scores(scorer_fn, test, args.features).argmax(1), classes)
    name = f"attacker-{args.panel}-{args.name}"
    metrics = {k: test_scores[k] for k in ("uar", "accuracy", "chance_uar", "per_class_recall")}
    manifest = {
        "format": P.STATS_FORMAT,
        "name": f"{scored_on}-{name}",
        "corpus": args.corpus,
        "role": "attacker",
        "panel": args.panel,
        "family": args.family,
        "classes": classes,
        "features_kind": args.features,
        "classifier": settings | {"C": c, "sklearn": args.classifier},
        "sample_rate": 16000,
        "window_samples": P.WINDOW,
        "seed": args.seed,
        "metrics": metrics,
        "versions": {d: metadata.version(d) for d in ("scikit-learn", "opensmile", "numpy")},
    }
    if args.features.startswith("whisper-base-"):
        from plainsight.evaluate.whisper_weights import MODEL_SHA256

        manifest["versions"] |= {d: metadata.version(d) for d in ("ctranslate2", "faster-whisper")}
        manifest["whisper_model_sha256"] = MODEL_SHA256
    if label_map:
        manifest |= {"label_map": label_map, "scored_on": scored_on}
    write_member(REPO_ROOT / "export/artifacts" / f"{scored_on}-{name}", manifest, arrays)
    report = {
        "corpus": args.corpus,
        "scored_on": scored_on,
        "name": name,
        "panel": args.panel,
        "family": args.family,
        "classes": classes,
        "split": {k: v.speakers() for k, v in parts.items()},
        "n_windows": {"train": int(len(y_train)), "val": int(len(y_val))},
        "augment": "panel (each training window once)",
        "selection": f"C from {list(C_GRID)} by validation-speaker window UAR",
        "C": c,
        "val_window_uar": val_uar,
        "test": test_scores,
        "uar": test_scores["uar"],
        "accuracy": test_scores["accuracy"],
        "chance_uar": test_scores["chance_uar"],
        "train_time_s": round(time.time() - start, 1),
        "command": "python -m plainsight_export.stats_members " + shlex.join(sys.argv[1:]),
    }
    write_json(REPO_ROOT / "export/checkpoints" / scored_on / f"{name}.report.json", report)
    print(
        f"{scored_on} {name}: test UAR {report['uar']:.3f} (chance {report['chance_uar']:.3f}), "
        f"C={c:g}, {report['train_time_s']:.0f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
