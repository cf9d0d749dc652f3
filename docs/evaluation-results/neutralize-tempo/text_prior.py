"""Is the sentence a cue? UAR % of a classifier that sees only the sentence id (naive Bayes
with add-one smoothing over the training speakers' sentence/emotion counts), on the test
speakers: text_prior.py DATA."""

import sys
from collections import Counter, defaultdict

import numpy as np
from plainsight import corpora


def sentence_only_uar(utts, classes) -> float:
    counts = defaultdict(Counter)
    for u in utts:
        if corpora.split_of(u) == "train":
            counts[u.label][u.text_id] += 1
    n_texts = len({u.text_id for u in utts})
    totals = {c: sum(counts[c].values()) + n_texts for c in classes}

    def guess(text):
        return max(classes, key=lambda c: (counts[c][text] + 1) / totals[c])

    test = [u for u in utts if corpora.split_of(u) == "test"]
    recalls = [
        np.mean([guess(u.text_id) == label for u in mine])
        for label in classes
        if (mine := [u for u in test if u.label == label])
    ]
    return 100 * float(np.mean(recalls))


for corpus in ("emodb", "ravdess"):
    classes = corpora.CLASSES[corpus]
    uar = sentence_only_uar(corpora.list_corpus(sys.argv[1], corpus), classes)
    print(f"{corpus}: sentence-only UAR {uar:.1f} % (chance {100 / len(classes):.1f})")
