"""The processing conditions of this study, by name: plain | neutral (the neutralize stage at
0.5, no mask) | tempo | vocoder (vocoder.py), joined by '+' in that order, and a final '+eq':
each clip's long-term spectrum pulled to a fixed template (gainfield-dev/eq-diagnostic), the
mean over the training speakers' clips processed without it (read from the study's cache)."""

import os
import sys
from pathlib import Path

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE, os.path.join(HERE, "../gainfield-dev/eq-diagnostic")]
import ltas  # noqa: E402
import tempo  # noqa: E402
import vocoder  # noqa: E402
from plainsight import corpora  # noqa: E402
from plainsight.neutralize import neutralize  # noqa: E402

CACHE = Path("/tmp/tempo")


def cache_of(corpus: str, condition: str) -> Path:
    return CACHE / f"{corpus}-{condition}"


def eq_template(data: str, corpus: str, condition: str):
    if not condition.endswith("+eq"):
        return None
    before = cache_of(corpus, condition[: -len("+eq")])
    train = [u for u in corpora.list_corpus(data, corpus) if corpora.split_of(u) == "train"]
    template = np.mean([ltas.ltas_db(np.load(before / f"{u.path.stem}.npy")) for u in train], 0)
    return template - template.mean()


def process(audio: np.ndarray, condition: str, template=None) -> np.ndarray:
    a = np.asarray(audio, dtype=np.float64)
    if "vocoder" in condition:
        a = vocoder.vocode(a, 16000)
    if "neutral" in condition:
        a = neutralize(a, 0.5, rate=16000)
    if "tempo" in condition:
        a = tempo.normalize_tempo(a, 16000, 1.0)
    if template is not None:
        a = ltas.equalise(np.asarray(a, dtype=np.float32), template, 1.0)
    return np.asarray(a, dtype=np.float32)
