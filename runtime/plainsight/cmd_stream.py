"""Mask live audio: raw S16_LE mono PCM on stdin, masked PCM on stdout.

    arecord -f S16_LE -r 16000 -c 1 -t raw | plainsight stream | <assistant input>

Causal: each hop (default 250 ms) is perturbed with the model window that ends with it,
so the added latency is one hop, plus a look-ahead whose first samples out are silence and
whose last samples in are not sent: 140 ms with --privacy neutralize, 16 ms with the gain
stage (--mask-strength rebalance, --mask-gain-db). Fails closed: if the
model or the neutralize stage cannot load or run, or a hop with signal would go out
unchanged, raw audio is never forwarded (default: exit non-zero; --on-error silence:
write zeros instead).
"""

from __future__ import annotations

from plainsight.audio import MAX_RATE, MIN_RATE
from plainsight.cli import (
    add_engine_arguments,
    add_privacy_arguments,
    bounded_float,
    bounded_int,
)


def add_arguments(parser) -> None:
    group = parser.add_argument_group("stream")
    group.add_argument(
        "--rate",
        type=bounded_int(MIN_RATE, MAX_RATE),
        default=16000,
        help="PCM sample rate (default 16000)",
    )
    group.add_argument(
        "--hop-ms",
        type=bounded_float(10.0, 2000.0),
        default=250.0,
        help="new audio per model call (= latency), 10..2000 (default 250)",
    )
    group.add_argument(
        "--on-error",
        choices=["exit", "silence"],
        default="exit",
        help="if masking fails or would leave a hop with signal unchanged: exit non-zero "
        "(default) or write silence; never raw audio",
    )
    group.add_argument(
        "--status-file",
        metavar="PATH",
        help="JSON health record (samples in/out, frames, rtf, failed and unchanged hops, "
        "last_error, ...), "
        "rewritten atomically every ~2 s",
    )
    group.add_argument(
        "--input-timeout-s",
        type=bounded_float(0.0, 3600.0),
        default=0.0,
        help="exit (code 4) after this long without input: a microphone delivers audio "
        "at its rate, so a gap is a hung source to restart (default 0: wait for ever)",
    )
    add_privacy_arguments(parser, stream=True)
    add_engine_arguments(parser)


def run(args) -> int:
    from plainsight.cli import masker_from_args
    from plainsight.stream import serve

    return serve(
        lambda: masker_from_args(args),
        rate=args.rate,
        hop_ms=args.hop_ms,
        on_error=args.on_error,
        status_path=args.status_file,
        model_name=args.model,
        backend=args.backend,
        input_timeout_s=args.input_timeout_s,
    )
