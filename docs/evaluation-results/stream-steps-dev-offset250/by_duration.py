"""Diagnostic: white-box (emodb-compact) accuracy and class probabilities by clip duration,
clean vs mask vs stream, every listener 250 ms later (56 dev clips of EmoDB)."""

import os

import numpy as np
from plainsight.evaluate.pipeline import Scorer, mask_clips, test_clips
from plainsight.evaluate.run import stream_clips
from plainsight.masker import Masker

clips = test_clips(os.environ["PLAINSIGHT_DATA"], "emodb", 56)
m = Masker(backend="onnx")
st = stream_clips(m, clips, 250.0).audios
mk = mask_clips(m, clips).audios
sc = Scorer(m.specs[0])
cls = sc.classes
off = 4000


def probs(audios):
    lg = sc.clip_logits([a[off:] for a in audios])
    e = np.exp(lg - lg.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


true = np.array([cls.index(c.utt.label) for c in clips])
dur = np.array([len(c.audio) / 16000 for c in clips])
for name, au in (("clean", [c.audio for c in clips]), ("mask", mk), ("stream", st)):
    p = probs(au)
    pred = p.argmax(1)
    for lo, hi in ((0, 2.25), (2.25, 3.0), (3.0, 99)):
        sel = (dur >= lo) & (dur < hi)
        print(
            name,
            f"{lo}-{hi}s n={sel.sum()}",
            "acc",
            round(float((pred[sel] == true[sel]).mean()), 2),
            "p_true",
            round(float(p[sel, true[sel]].mean()), 2),
            "p_neutral",
            round(float(p[sel, cls.index("neutral")].mean()), 2),
        )
