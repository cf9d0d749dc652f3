"""Retrain compact (the adaptive recipe: 30 epochs, panel augmentation) on processed audio and
score it on the test speakers' clips processed the same way: how much emotion does a retrained
model still read once timing, pitch, loudness or the long-term spectrum are normalised?
Usage: adaptive_tempo.py CORPUS CONDITION SEED (conditions: conditions.py). Output to /tmp."""

import os
import sys

import conditions
import numpy as np
from plainsight_export import data as D
from plainsight_export import train as T

corpus, condition, seed = sys.argv[1], sys.argv[2], sys.argv[3]
cache = conditions.cache_of(corpus, condition)
cache.mkdir(parents=True, exist_ok=True)
template = conditions.eq_template(os.environ["PLAINSIGHT_DATA"], corpus, condition)


def process(utt, audio):
    path = cache / f"{utt.path.stem}.npy"
    if not path.is_file():
        np.save(path, conditions.process(audio, condition, template))
    return np.load(path)


class Settings:
    def settings(self):
        return {"condition": condition}


T.adaptive_masker = lambda *a, **k: Settings()
T.masker_key = lambda m: condition
T.masked_clips = lambda clips, cache_, masker_of: D.ClipSet(
    clips.utts, [process(u, a) for u, a in zip(clips.utts, clips.audio, strict=True)], clips.labels
)
args = ["--threads", "1", "--no-progress", "--corpus", corpus, "--arch", "compact"]
args += ["--seed", seed, "--epochs", "30", "--augment", "panel", "--role", "adaptive"]
args += ["--out", f"/tmp/tempo/ck-{corpus}", "--name", f"adaptive-{condition}-s{seed}"]
sys.exit(T.main(args + ["--masked-cache", "/tmp/tempo/unused"]))
