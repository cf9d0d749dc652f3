"""Quality of cached transfer-study clips: STOI, DNSMOS (P.835), Whisper WER, and how large
the level change is in dB per time-frequency region (speech bins only)."""

import json
import os
import sys

import numpy as np
from plainsight import corpora
from plainsight.evaluate import metrics
from plainsight.evaluate import pipeline as P
from plainsight.evaluate.asr import Transcriber, wer
from plainsight.evaluate.dnsmos import Dnsmos

corpus, limit, cache = sys.argv[1], int(sys.argv[2]), sys.argv[3]
methods = sys.argv[4].split(",")
n_asr = int(os.environ.get("N_ASR", "42"))
clips = P.test_clips(os.environ["PLAINSIGHT_DATA"], corpus, limit)
clean = [c.audio for c in clips]
refs = [c.reference for c in clips[:n_asr]]
lang = corpora.LANGUAGES[corpus]
tr = Transcriber(threads=1)
dn = Dnsmos()
N, H = 512, 128
win = np.hanning(N + 1)[:N]


def spec(x):
    idx = np.arange(N)[None] + H * np.arange(1 + (len(x) - N) // H)[:, None]
    return np.abs(np.fft.rfft(x[idx] * win, axis=1)) ** 2


def level_change_db(c, m):
    # 1/3-octave-ish bands x 100 ms: the gain a listener would hear, where there is speech
    a, b = spec(c), spec(m)
    edges = np.geomspace(100, 8000, 20)
    f = np.fft.rfftfreq(N, 1 / 16000)
    out = []
    for t0 in range(0, len(a) - 12, 12):
        ea = a[t0 : t0 + 12].sum(0)
        eb = b[t0 : t0 + 12].sum(0)
        if ea.sum() < a.sum(1).max() * 12 * 1e-3:
            continue
        for lo, hi in zip(edges[:-1], edges[1:], strict=False):
            sel = (f >= lo) & (f < hi)
            out.append(10 * np.log10((eb[sel].sum() + 1e-12) / (ea[sel].sum() + 1e-12)))
    out = np.abs(np.array(out))
    return float(np.median(out)), float(np.percentile(out, 90))


rows = {}
sets = {"clean": clean}
for m in methods:
    with np.load(os.path.join(cache, f"{m}.npz")) as z:
        sets[m] = [z[f"clip{i}"] for i in range(len(clean))]
base_hyp = None
for name, audios in sets.items():
    hyp = [tr.transcribe(a, lang) for a in audios[:n_asr]]
    r = {"wer": round(100 * wer(refs, hyp), 1)}
    d = [dn.score(a) for a in audios[:n_asr]]
    r["dnsmos"] = {k: round(float(np.mean([x[k] for x in d])), 2) for k in d[0]}
    if name != "clean":
        r["stoi"] = round(
            float(
                np.median([metrics.stoi(c, a) for c, a in zip(clean[:n_asr], audios, strict=False)])
            ),
            3,
        )
        lv = [level_change_db(c, a) for c, a in zip(clean[:n_asr], audios, strict=False)]
        r["level_change_db_median"] = round(float(np.median([x[0] for x in lv])), 2)
        r["level_change_db_p90"] = round(float(np.median([x[1] for x in lv])), 2)
    rows[name] = r
    print(name, json.dumps(r), flush=True)
