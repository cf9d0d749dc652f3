"""Diagnostic: does equalising each clip's long-term spectrum to a fixed template hide
emotion from the dev panel? (numpy, offline)"""

import json
import os
import sys
from pathlib import Path

import numpy as np
from plainsight import corpora
from plainsight.evaluate import metrics
from plainsight.evaluate import pipeline as P
from plainsight.evaluate.panel import load_panel
from plainsight.manifest import load_model_dir

RATE, N, H = 16000, 512, 128
WIN = np.sqrt(np.hanning(N + 1)[:N]).astype(np.float32)


def stft(x):
    pad = np.pad(x, (N, N))
    n = 1 + (len(pad) - N) // H
    idx = np.arange(N)[None] + H * np.arange(n)[:, None]
    return np.fft.rfft(pad[idx] * WIN, axis=1), len(x)


def istft(S, n):
    frames = np.fft.irfft(S, N, axis=1) * WIN
    out = np.zeros(H * (len(S) - 1) + N)
    norm = np.zeros_like(out)
    for i, f in enumerate(frames):
        out[i * H : i * H + N] += f
        norm[i * H : i * H + N] += WIN**2
    out = out / np.maximum(norm, 1e-8)
    return out[N : N + n].astype(np.float32)


freqs = np.fft.rfftfreq(N, 1 / RATE)
# 1/3-octave-ish smoothing: bands in log frequency from 100 Hz
edges = np.geomspace(80, 8000, int(os.environ.get("EQ_BANDS", "24")) + 1)
band_of = np.clip(np.searchsorted(edges, freqs) - 1, 0, len(edges) - 2)
centres = np.sqrt(edges[:-1] * edges[1:])


def ltas_db(x):
    S, _ = stft(x)
    p = np.abs(S) ** 2
    e = p.sum(1)
    speech = e > e.max() * 10 ** (-35 / 10)
    mean = p[speech].mean(0)
    bands = np.array(
        [mean[band_of == b].mean() if np.any(band_of == b) else 1e-12 for b in range(len(centres))]
    )
    return 10 * np.log10(bands + 1e-12)


def equalise(x, template, strength=1.0, limit=12.0):
    have = ltas_db(x)
    gain = template - have
    gain -= gain.mean()  # shape only; keep the level
    gain = np.clip(gain * strength, -limit, limit)
    gbin = np.interp(np.log(np.maximum(freqs, 40)), np.log(centres), gain)
    S, n = stft(x)
    y = istft(S * 10 ** (gbin / 20), n)
    # same RMS as input
    y *= np.sqrt(
        np.mean(x.astype(np.float64) ** 2) / max(np.mean(y.astype(np.float64) ** 2), 1e-20)
    )
    return np.clip(y, -1, 1).astype(np.float32)


def main(corpus, limit, which):
    data = os.environ["PLAINSIGHT_DATA"]
    utts = [u for u in corpora.list_corpus(data, corpus) if corpora.split_of(u) == "train"]
    pick = [u for u in utts if which == "all" or u.label == "neutral"]
    rng = np.random.default_rng(0)
    pick = [pick[i] for i in rng.permutation(len(pick))[:120]]
    template = np.mean([ltas_db(corpora.load_audio(u.path, RATE)) for u in pick], 0)
    template -= template.mean()
    clips = P.test_clips(data, corpus, limit)
    clean = [c.audio for c in clips]
    labels = [c.utt.label for c in clips]
    white = P.Scorer(load_model_dir(Path(f"runtime/plainsight/models/{corpus}-compact")))
    panel = [m if hasattr(m, "clip_logits") else P.Scorer(m) for m in load_panel(corpus, "dev")]

    def uar(s, audios):
        if hasattr(s, "report"):
            return float(s.report(audios, labels)["uar"])
        pred = s.clip_logits(audios).argmax(1)
        return float(
            metrics.classification_report(
                [s.classes.index(lab) for lab in labels], pred, s.classes
            )["uar"]
        )

    rows = {}
    rng = np.random.default_rng(1)

    def random_eq(a):  # control: a smooth random EQ as large as the clip's own correction
        need = template - ltas_db(a)
        need -= need.mean()
        size = np.sqrt(np.mean(need**2))
        r = np.convolve(rng.standard_normal(len(centres) + 6), np.ones(7) / 7, "valid")
        r -= r.mean()
        r *= size / np.sqrt(np.mean(r**2))
        return equalise(a, ltas_db(a) + r)

    sets = [("clean", 0), ("eq-0.5", 0.5), ("eq-1", 1.0), ("random-eq", "r")]
    for name, strength in sets:
        if strength == "r":
            audios = [random_eq(a) for a in clean]
        else:
            audios = clean if not strength else [equalise(a, template, strength) for a in clean]
        r = {
            s.name.replace(f"{corpus}-attacker-", ""): round(100 * uar(s, audios), 1)
            for s in [white, *panel]
        }
        if strength:
            r["stoi"] = round(
                float(
                    np.median(
                        [metrics.stoi(c, a) for c, a in zip(clean[:24], audios[:24], strict=False)]
                    )
                ),
                3,
            )
        rows[name] = r
        print(name, json.dumps(r), flush=True)
    return rows


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), sys.argv[3])
