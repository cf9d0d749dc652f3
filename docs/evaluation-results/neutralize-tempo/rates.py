"""Per-emotion syllable rate and pause share of the training speakers' clips (sanity check)."""

import sys
from collections import defaultdict

import numpy as np
import tempo
from plainsight import corpora

data, corpus = sys.argv[1], sys.argv[2]
stats = defaultdict(list)
for u in corpora.list_corpus(data, corpus):
    if corpora.split_of(u) != "train":
        continue
    a = corpora.load_audio(u.path, 16000)
    speech = tempo.speech_frames(a, 16000)
    stats[u.label].append((tempo.syllable_rate(a, 16000), 1 - speech.mean(), len(a) / 16000))
allr = []
for label, rows in sorted(stats.items()):
    r = np.array(rows)
    allr += list(r[:, 0])
    rate, pause, duration = (np.median(r[:, i]) for i in range(3))
    print(f"{label:10s} n={len(r):3d} rate {rate:.2f} pauses {pause:.2f} dur {duration:.2f} s")
print("median rate over all", np.median(allr))
