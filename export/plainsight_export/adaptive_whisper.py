"""An adaptive attacker for the Whisper-backbone mask (build side, a study).

A mask crafted through Whisper base's encoder takes the dev whisper-LR member to chance. Does
that survive a cloud that retrains its head on such audio? Two logistic regressions on the
same pooled Whisper features, the dev whisper-LR's recipe (augmented windows, C chosen on the
validation speakers), trained on one random 2 s crop of every training clip:

- control: the clean crops;
- adaptive: the same crops masked through our Whisper surrogate head (38 dB, the transfer
  study's `whisper` method; `plainsight_export.distill.teacher_masked`), validation crops too.

Both are scored on the transfer study's test clips, clean and as each listed method crafted
them (its cache), with the evaluation's protocol (mean over 2 s windows, hop 1 s).
`--depth K`: the heads read the encoder's hidden state after K of its 6 blocks instead (the
torch port, float32): does the mask reach a cloud that pools another layer?

    python -m plainsight_export.adaptive_whisper --corpus emodb --out docs/evaluation-results/...
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np
import torch
from plainsight.corpora import CLASSES
from plainsight.evaluate import pipeline as P

from plainsight_export import data as D
from plainsight_export import stats_members as S
from plainsight_export import transfer_study as T
from plainsight_export.distill import crops, teacher_masked
from plainsight_export.train import score
from plainsight_export.whisper_torch import layer_kind, load_surrogate_head, surrogate_path

SEED = 11  # the teacher's and the crops' seed
MEMBER_SEED = 0  # the dev whisper-LR's augmentation seed


def as_clips(like: D.ClipSet, audio: list[np.ndarray]) -> D.ClipSet:
    return D.ClipSet(like.utts, audio, like.labels)


def clip_uar(scaler, clf, audios, labels, classes, kind: str) -> float:
    clips = D.ClipSet([], audios, np.asarray(labels))
    per_clip = S.clip_scores(lambda f: clf.decision_function(scaler.transform(f)), clips, kind)
    return score(clips.labels, np.argmax(per_clip, axis=1), classes)["uar"]


def run(args) -> dict:
    torch.set_num_threads(1)
    classes = CLASSES[args.corpus]
    parts = D.fixed_split(D.load_corpus(args.data, args.corpus))
    head, _ = load_surrogate_head(surrogate_path(args.corpus, SEED))
    teacher = T.Surrogate("teacher", head, classes.index(T.TARGET))
    kind = layer_kind(args.depth)
    cache = Path(args.cache)
    split_audio = {
        "control": {k: crops(parts[k], SEED) for k in ("train", "val")},
        "adaptive": {
            k: teacher_masked(parts[k], teacher, cache / f"{args.corpus}-teacher-masked-{k}"
                              f"-s{SEED}.npz", SEED)
            for k in ("train", "val")
        },
    }  # fmt: skip
    test = P.test_clips(args.data, args.corpus, args.limit)
    labels = [c.utt.label for c in test]
    label_index = [classes.index(x) for x in labels]
    heard = {"clean": [c.audio for c in test]}
    study = Path(args.study_cache) / f"{args.corpus}-n{args.limit}-b35-s38-seed0"
    for method in args.methods:
        with np.load(study / f"{method}.npz") as z:
            heard[method] = [z[f"clip{i}"] for i in range(len(test))]
    results = {"corpus": args.corpus, "n_clips": len(test), "features": kind, "members": {}}
    for member, audio in split_audio.items():
        x, y = S.augmented_features(as_clips(parts["train"], audio["train"]), kind,
                                    MEMBER_SEED, True)  # fmt: skip
        xv, yv = S.augmented_features(as_clips(parts["val"], audio["val"]), kind,
                                      MEMBER_SEED, False)  # fmt: skip
        scaler, clf, c, val_uar = S.fit_selected("lr", x, y, xv, yv, classes, MEMBER_SEED)
        results["members"][member] = {
            "C": c,
            "val_window_uar": val_uar,
            "uar": {
                k: clip_uar(scaler, clf, a, label_index, classes, kind) for k, a in heard.items()
            },
        }
        print(member, json.dumps(results["members"][member]), file=sys.stderr)
    return results


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m plainsight_export.adaptive_whisper")
    p.add_argument("--corpus", choices=sorted(CLASSES), required=True)
    p.add_argument("--data", default=os.environ.get("PLAINSIGHT_DATA"))
    p.add_argument("--limit", type=int, default=56, help="the transfer study's test clips")
    p.add_argument("--methods", default="default,whisper", help="cached study methods to score")
    p.add_argument("--study-cache", default="eval-out/transfer-study-cache")
    p.add_argument("--cache", default="/tmp/plainsight-distill")
    p.add_argument("--depth", type=int, help="heads on the hidden state after this many blocks")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    if not args.data:
        p.error("no corpus folder: pass --data or set PLAINSIGHT_DATA")
    args.methods = [m for m in args.methods.split(",") if m]
    results = run(args)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "adaptive_whisper.json").write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
