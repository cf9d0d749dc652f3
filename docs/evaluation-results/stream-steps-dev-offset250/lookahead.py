"""Experiment: stream with look-ahead: hop k is optimised on the window that ends LA hops
later (the look-ahead audio raw, perturbed jointly, then discarded), and sent then."""

import os
import sys
import time

import numpy as np
from plainsight.cli import main
from plainsight.evaluate import run as R
from plainsight.evaluate.pipeline import Condition
from plainsight.stream import SCALE, add_to_pcm, to_pcm

LA = int(os.environ.get("LA_HOPS", "1"))
HOP = 4000


def stream_lookahead(masker, audio):
    pcm = to_pcm(audio)
    n = len(pcm)
    hops = -(-n // HOP)
    x = np.zeros(hops * HOP, np.float32)
    x[:n] = pcm.astype(np.float32) / SCALE
    sent = np.zeros_like(x)  # the perturbation actually sent (after PCM rounding)
    W = masker.window
    out = np.zeros(hops * HOP, "<i2")
    for k in range(hops):
        end = min(k + 1 + LA, hops) * HOP
        start = end - W
        ctx = np.zeros(W, np.float32)
        raw = np.zeros(W, np.float32)
        lo = max(0, start)
        raw[W - (end - lo) :] = x[lo:end]
        ctx[:] = raw
        ctx[W - (end - lo) :] += sent[lo:end]
        valid = np.zeros(W, np.float32)
        valid[W - (end - lo) :] = 1
        bound = masker.budget(raw[None], valid[None])[0]
        free = end - k * HOP  # current hop + look-ahead
        bound[: W - free] = 0
        delta = masker.perturb(ctx[None], bound[None], raw[None], steps=masker.stream_steps)[0]
        seg = slice(W - free, W - free + HOP)
        hop_pcm = (x[k * HOP : (k + 1) * HOP] * SCALE).round().astype("<i2")
        o = add_to_pcm(hop_pcm, delta[seg])
        out[k * HOP : (k + 1) * HOP] = o
        sent[k * HOP : (k + 1) * HOP] = o.astype(np.float32) / SCALE - x[k * HOP : (k + 1) * HOP]
    return out[:n]


def stream_clips(masker, clips, hop_ms, progress=None):
    outs, spent = [], 0.0
    for clip in clips:
        t = time.perf_counter()
        outs.append(stream_lookahead(masker, clip.audio).astype(np.float32) / SCALE)
        spent += time.perf_counter() - t
        if progress is not None:
            progress.update(1)
    return Condition(
        "masked", outs, masker.settings() | {"path": "stream", "lookahead_hops": LA}, spent
    )


R.stream_clips = stream_clips
sys.exit(main(sys.argv[1:]))
