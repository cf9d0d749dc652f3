"""Does the mask hold for a listener whose window grid is not the masker's?

`plainsight evaluate` scores with 2 s windows at hop 1 s starting at the clip's first
sample, and centres clips shorter than 2 s: exactly the windows `Masker.mask` optimises
(`window_starts(n, 32000, 16000)`, short clips centred). A cloud classifier frames the
audio its own way. This masks the held-out test speakers' clips with the default masker and
scores the white-box model on the evaluation's grid and on grids that start 0.1-0.75 s later
(the first samples dropped, as if the listener's stream began there; every clip cropped the
same way, so the clean figure is comparable). Prints numbers; it is not a pass/fail test.

    PLAINSIGHT_DATA=../shared/data python benchmarks/listener_alignment.py
    PLAINSIGHT_DATA=../shared/data python benchmarks/listener_alignment.py --overlap-hop 0.25
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
        help="the masker's window hop in windows (plainsight.masker.OVERLAP_HOP, default 0.5)",
    )
    args = parser.parse_args(argv)
    if not args.data:
        print("listener_alignment: set PLAINSIGHT_DATA or pass --data", file=sys.stderr)
        return 2
    import plainsight.masker as masker_module
    from plainsight.evaluate import metrics
    from plainsight.evaluate import pipeline as P

    if args.overlap_hop is not None:
        masker_module.OVERLAP_HOP = args.overlap_hop
    masker = masker_module.Masker(model=args.corpus, backend="onnx", threads=1)
    scorer = P.Scorer(masker.members[0].spec)
    clips = P.test_clips(args.data, args.corpus, args.limit)
    labels = [c.utt.label for c in clips]
    start = time.process_time()
    masked = [masker.mask(c.audio, 16000) for c in clips]
    cpu = time.process_time() - start
    seconds = sum(len(c.audio) for c in clips) / 16000
    snr = np.median([metrics.snr_db(c.audio, m) for c, m in zip(clips, masked, strict=True)])
    print(
        f"{args.corpus}: {len(clips)} clips, masker hop {masker.hop} samples, median SNR "
        f"{snr:.1f} dB, mask CPU {cpu:.1f} s for {seconds:.0f} s of audio (RTF {cpu / seconds:.3f})"
    )
    print("listener grid starts at | white-box UAR clean | masked")
    for offset_s in OFFSETS_S:
        cut = int(offset_s * 16000)
        clean_uar = scorer.report([c.audio[cut:] for c in clips], labels)["uar"]
        masked_uar = scorer.report([m[cut:] for m in masked], labels)["uar"]
        grid = "the masker's grid (evaluate)" if cut == 0 else f"+{offset_s:g} s"
        print(f"{grid} | {100 * clean_uar:.1f} | {100 * masked_uar:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
