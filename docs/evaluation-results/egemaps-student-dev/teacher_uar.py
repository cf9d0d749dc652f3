"""The distillation's own teacher (openSMILE eGeMAPSv02 + logistic regression, fitted on
the training speakers' windows, as `distill --teacher egemaps` fits it) scored on the clean
test clips and on each method's cached clips: does a perturbation crafted through the
student move the classifier the student imitates?

    python docs/evaluation-results/egemaps-student-dev/teacher_uar.py emodb 56 10 \
        gain-16x100 gain-16x100-student-egemaps
"""

import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
from plainsight.corpora import CLASSES
from plainsight.evaluate import metrics
from plainsight.evaluate import pipeline as P
from plainsight_export import data as D
from plainsight_export import transfer_study as T
from plainsight_export.distill import EgemapsTeacher


def main(corpus: str, limit: str, snr: str, *methods: str) -> None:
    data = T.os.environ["PLAINSIGHT_DATA"]
    classes = CLASSES[corpus]
    teacher = EgemapsTeacher(D.fixed_split(D.load_corpus(data, corpus))["train"], classes)
    clips = P.test_clips(data, corpus, int(limit))
    labels = [classes.index(c.utt.label) for c in clips]

    def uar(audios) -> float:
        pred = []
        for a in audios:  # mean logits over the evaluation's 2 s windows, as every member
            wins = torch.from_numpy(P.clip_windows(a, T.WINDOW))
            pred.append(int(teacher(wins).mean(0).argmax()))
        report = metrics.classification_report(np.array(labels), np.array(pred), classes)
        return round(100 * float(report["uar"]), 1)

    print(f"{corpus} clean: {uar([c.audio for c in clips])}")
    args = SimpleNamespace(
        cache=Path(f"eval-out/transfer-study-cache/{corpus}-n{limit}-b35-s{snr}-seed0")
    )
    for m in methods:
        print(f"{corpus} {m} @ {snr} dB: {uar(T.cached_clips(args, m, len(clips)))}")


if __name__ == "__main__":
    main(*sys.argv[1:])
