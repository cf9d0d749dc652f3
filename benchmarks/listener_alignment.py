"""Does the mask hold for a listener whose window grid is not the masker's?

`plainsight evaluate` scores with 2 s windows at hop 1 s starting at the clip's first
sample, and centres clips shorter than 2 s: exactly the windows that `Masker.mask`
optimised until 2026-12-02 (10 steps, hop 1 s). The default now takes each step on the grid
shifted by another offset within +-20 ms. A cloud classifier frames the audio its own way.
This masks the held-out test speakers' clips and scores the white-box model on the
evaluation's grid and on grids that start 5 ms-0.75 s later
(the first samples dropped, as if the listener's stream began there; every clip cropped the
same way, so the clean figure is comparable). Prints numbers; it is not a pass/fail test.

    PLAINSIGHT_DATA=../shared/data python benchmarks/listener_alignment.py
    PLAINSIGHT_DATA=../shared/data python benchmarks/listener_alignment.py --overlap-hop 0.25
    # the previous default (10 steps, one grid, windows at hop 1 s):
    PLAINSIGHT_DATA=../shared/data python benchmarks/listener_alignment.py --steps 10 \
        --grid-shift-ms 0 --overlap-hop 0.5
    PLAINSIGHT_DATA=../shared/data python benchmarks/listener_alignment.py --offsets 0,0.001,0.005
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

WINDOW = 32000
OFFSETS_S = (0.0, 0.1, 0.25, 0.5, 0.75)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", choices=["emodb", "ravdess"], default="emodb")
    parser.add_argument("--data", default=os.environ.get("PLAINSIGHT_DATA"))
    parser.add_argument("--limit", type=int, default=0, help="test clips (0: all)")
    parser.add_argument(
        "--overlap-hop",
        type=float,
        help="overlapping mask windows at this hop, in windows (plainsight.masker.OVERLAP_HOP; "
        "default: no overlap)",
    )
    parser.add_argument(
        "--grid-shift-ms",
        type=float,
        help="range of the per-step grid shift (default: the preset's; 0: one grid)",
    )
    parser.add_argument("--method", choices=["fgsm", "ifgsm", "mifgsm"], help="attack method")
    parser.add_argument("--steps", type=int, help="attack steps")
    parser.add_argument("--snr-db", type=float, help="SNR budget in dB (default: the preset's)")
    parser.add_argument(
        "--offsets",
        default=",".join(f"{o:g}" for o in OFFSETS_S),
        help="listener grid offsets in seconds, comma-separated (0 = the masker's grid)",
    )
    args = parser.parse_args(argv)
    try:
        offsets = [float(o) for o in args.offsets.split(",")]
    except ValueError:
        print(f"listener_alignment: bad --offsets {args.offsets!r}", file=sys.stderr)
        return 2
    if not args.data:
        print("listener_alignment: set PLAINSIGHT_DATA or pass --data", file=sys.stderr)
        return 2
    import plainsight.masker as masker_module
    from plainsight.evaluate import metrics
    from plainsight.evaluate import pipeline as P

    if args.overlap_hop is not None:
        masker_module.OVERLAP_HOP = args.overlap_hop
    masker = masker_module.Masker(
        model=args.corpus,
        backend="onnx",
        threads=1,
        method=args.method,
        steps=args.steps,
        snr_db=args.snr_db,
        grid_shift_ms=args.grid_shift_ms,
        overlap=args.overlap_hop is not None,
    )
    scorer = P.Scorer(masker.members[0].spec)
    clips = P.test_clips(args.data, args.corpus, args.limit)
    labels = [c.utt.label for c in clips]
    start = time.process_time()
    masked = [masker.mask(c.audio, 16000) for c in clips]
    cpu = time.process_time() - start
    seconds = sum(len(c.audio) for c in clips) / 16000
    snr = np.median([metrics.snr_db(c.audio, m) for c, m in zip(clips, masked, strict=True)])
    print(
        f"{args.corpus}: {len(clips)} clips, masker hop {masker.hop} samples, grid shift "
        f"+-{masker.grid_shift_ms:g} ms, "
        f"{masker.method} {masker.steps} steps, median SNR "
        f"{snr:.1f} dB, mask CPU {cpu:.1f} s for {seconds:.0f} s of audio (RTF {cpu / seconds:.3f})"
    )
    print("listener grid starts at | white-box UAR clean | masked")
    for offset_s in offsets:
        cut = round(offset_s * 16000)
        clean_uar = scorer.report([c.audio[cut:] for c in clips], labels)["uar"]
        masked_uar = scorer.report([m[cut:] for m in masked], labels)["uar"]
        grid = "the masker's grid (evaluate)" if cut == 0 else f"+{offset_s:g} s"
        print(f"{grid} | {100 * clean_uar:.1f} | {100 * masked_uar:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
