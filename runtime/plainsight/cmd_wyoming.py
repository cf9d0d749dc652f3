"""Serve masked microphone audio as a Wyoming mic service (Home Assistant voice satellites).

    plainsight wyoming --uri tcp://127.0.0.1:10700 \\
        --mic-command 'arecord -r 16000 -c 1 -f S16_LE -t raw'
    wyoming-satellite ... --mic-uri tcp://127.0.0.1:10700

Answers `describe` with an `info` event describing a mic program and streams `audio-start`
and `audio-chunk` events (16-bit mono at --rate) of masked audio to every connected client.
The mic command (or the connection to an upstream Wyoming mic service, --mic-uri) runs only
while a client is connected; when it ends, clients get `audio-stop`. The masking is exactly
`plainsight stream`'s (same options, one hop of latency) and fails closed: a hop that cannot
be masked is never sent (default: exit 3; --on-error silence: zeros instead).
Needs the optional `wyoming` package: pip install 'plainsight[wyoming]'.
"""

from __future__ import annotations


def add_arguments(parser) -> None:
    from plainsight import cmd_stream

    group = parser.add_argument_group("wyoming")
    group.add_argument(
        "--uri",
        default="tcp://127.0.0.1:10700",
        help="where to listen: tcp://HOST:PORT or unix://PATH (default tcp://127.0.0.1:10700)",
    )
    source = group.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--mic-command",
        metavar="COMMAND",
        help="program writing raw S16_LE mono PCM at --rate to stdout, e.g. "
        "'arecord -r 16000 -c 1 -f S16_LE -t raw'",
    )
    source.add_argument(
        "--mic-uri", metavar="URI", help="take the audio from this Wyoming mic service (proxy)"
    )
    cmd_stream.add_arguments(parser)


def run(args) -> int:
    import asyncio

    try:
        from plainsight.wyoming_service import MaskedMicService
    except ImportError as exc:
        if exc.name != "wyoming" and not str(exc.name).startswith("wyoming."):
            raise
        raise ImportError(
            "the wyoming package is missing: pip install 'plainsight[wyoming]'"
        ) from None
    from plainsight.cli import masker_from_args

    service = MaskedMicService(
        lambda: masker_from_args(args),
        rate=args.rate,
        hop_ms=args.hop_ms,
        mic_command=args.mic_command,
        mic_uri=args.mic_uri,
        on_error=args.on_error,
        status_path=args.status_file,
        model_name=args.model,
        backend=args.backend,
    )
    return asyncio.run(service.serve(args.uri))
