"""Does the gain stage's hiding survive a listener trained for many channels?

Scores emotion models trained with the panel's augmentation (`--augment panel`) and with
random equalisers on top (`--augment channel`, plainsight_export.data.CHANNEL_AUGMENT), the
same seeds, on: the clean test clips, the transfer study's cached clips (gain field alone
and its random field, default mask), and the runtime's own `medium` and `rebalance` output.
Development-side study: these models are in no panel.

    python docs/evaluation-results/channel-robust/score_channel.py --corpus emodb --limit 56 \
        --checkpoints /tmp/channel-ck/emodb --out docs/evaluation-results/channel-robust/emodb.json
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np
import torch
from plainsight.evaluate import codec as codecs
from plainsight.evaluate import pipeline as P
from plainsight.evaluate import run
from plainsight.masker import Masker
from plainsight.stream import DEFAULT_HOP_MS
from plainsight_export import data as D
from plainsight_export import transfer_study as T

CACHE = Path("eval-out/transfer-study-cache")
CACHED = {  # condition: (cache folder suffix, method)
    "gain field (10 dB)": ("b35-s10-seed0", "gain-16x100"),
    "random gain field (10 dB)": ("b35-s10-seed0", "gain-16x100-noise"),
    "study default mask (38 dB)": ("b35-s38-seed0", "default"),
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--corpus", required=True)
    parser.add_argument("--limit", type=int, default=56)
    parser.add_argument("--checkpoints", type=Path, required=True)
    parser.add_argument("--data", default=os.environ.get("PLAINSIGHT_DATA"))
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument(
        "--pattern", default="*.pt", help="listeners to score; others already in --out are kept"
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    clips = P.test_clips(args.data, args.corpus, args.limit)
    clean = [c.audio for c in clips]
    labels = [c.utt.label for c in clips]
    conditions = {"clean": clean}
    for name, (suffix, method) in CACHED.items():
        folder = CACHE / f"{args.corpus}-n{args.limit}-{suffix}"
        if (folder / f"{method}.npz").is_file():
            with np.load(folder / f"{method}.npz") as z:
                conditions[name] = [z[f"clip{i}"] for i in range(len(clean))]
    rng = np.random.default_rng(0)  # the training recipe's static equaliser, one per clip
    eq = D.CHANNEL_AUGMENT["eq_db"]
    conditions["random equaliser"] = [D.random_equaliser(a, rng, eq, 0, True, False) for a in clean]
    model_dir = Path("runtime/plainsight/models") / f"{args.corpus}-compact"
    for strength in ("medium", "rebalance"):
        masker = Masker(str(model_dir), strength=strength, threads=1)
        masked = [masker.mask(a, 16000) for a in clean]  # as a 16-bit file carries it:
        conditions[f"runtime {strength}"] = [
            np.round(m * 32768).clip(-32768, 32767) / 32768 for m in masked
        ]
    # the live path: each clip through `plainsight stream` (250 ms hops), then Opus at
    # 24 kbit/s (calibrated on the clean clips, as plainsight evaluate does), clean alike
    opus = codecs.calibrate(codecs.parse_codec("opus:24"), clean, T.RATE)
    conditions["clean, Opus 24"] = codecs.apply(opus, run.pcm_clean(clips), T.RATE)[0]
    for strength in ("medium", "rebalance"):
        masker = Masker(str(model_dir), strength=strength, threads=1)
        sent = run.stream_clips(masker, clips, DEFAULT_HOP_MS).audios
        conditions[f"runtime {strength}, stream + Opus 24"] = codecs.apply(opus, sent, T.RATE)[0]
    results = {"corpus": args.corpus, "n_clips": len(clean), "models": {}}
    if args.out.is_file():
        results["models"] = json.loads(args.out.read_text())["models"]
    T.CHECKPOINTS = args.checkpoints.parent  # TorchScorer reads CHECKPOINTS/<corpus>/<name>.pt
    for path in sorted(args.checkpoints.glob(args.pattern)):
        scorer = T.TorchScorer(args.checkpoints.name, path.stem)
        row = {name: T.uar(scorer, audios, labels) for name, audios in conditions.items()}
        results["models"][path.stem] = row
        print(path.stem, {k: round(100 * v, 1) for k, v in row.items()}, flush=True)
    args.out.write_text(json.dumps(results, indent=1))
    print(f"{args.corpus}, {len(clean)} clips, UAR %, mean (SD) over seeds")
    recipes = sorted({stem.rsplit("-s", 1)[0] for stem in results["models"]})  # recipe-arch
    print("| condition | " + " | ".join(f"{r}: mean (SD), UAR %" for r in recipes) + " |")
    print("|---|" + "---|" * len(recipes))
    for name in conditions:
        cells = []
        for recipe in recipes:
            values = [
                100 * row[name]
                for stem, row in results["models"].items()
                if stem.rsplit("-s", 1)[0] == recipe
            ]
            cells.append(f"{np.mean(values):.1f} ({np.std(values, ddof=1):.1f}), n={len(values)}")
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
