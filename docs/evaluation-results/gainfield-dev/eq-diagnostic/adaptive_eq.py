"""Retrain compact-s2 (adaptive recipe) on EQ'd audio: how much emotion is left once each
clip's long-term spectrum is equalised to a fixed template? Output to /tmp only."""

import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ltas
from plainsight import corpora
from plainsight_export import data as D
from plainsight_export import train as T

corpus, which, strength = sys.argv[1], sys.argv[2], float(sys.argv[3])
seed = sys.argv[4] if len(sys.argv) > 4 else "2"
data = os.environ["PLAINSIGHT_DATA"]
utts = [u for u in corpora.list_corpus(data, corpus) if corpora.split_of(u) == "train"]
pick = [u for u in utts if which == "all" or u.label == "neutral"]
rng = np.random.default_rng(0)
pick = [pick[i] for i in rng.permutation(len(pick))[:120]]
template = np.mean([ltas.ltas_db(corpora.load_audio(u.path, 16000)) for u in pick], 0)
template -= template.mean()


class Fake:
    def settings(self):
        return {"eq": which, "strength": strength}


T.adaptive_masker = lambda *a, **k: Fake()
T.masker_key = lambda m: "eq"
NEUTRAL = float(os.environ.get("NEUTRALIZE", "0"))


def process(a):
    if NEUTRAL:
        from plainsight.neutralize import neutralize

        a = neutralize(a, NEUTRAL, rate=16000).astype(np.float32)
    return ltas.equalise(a, template, strength) if strength else a


T.masked_clips = lambda clips, cache, masker_of: D.ClipSet(
    clips.utts, [process(a) for a in clips.audio], clips.labels
)

sys.exit(
    T.main(
        [
            "--threads",
            "1",
            "--no-progress",
            "--corpus",
            corpus,
            "--arch",
            "compact",
            "--seed",
            seed,
            "--epochs",
            "30",
            "--augment",
            "panel",
            "--role",
            "adaptive",
            "--out",
            f"/tmp/ltas/ck-{corpus}",
            "--name",
            f"adaptive-eq-{which}-{strength:g}-s{seed}" + os.environ.get("TAG", ""),
            "--masked-cache",
            "/tmp/ltas/unused",
        ]
    )
)
