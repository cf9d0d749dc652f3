"""Measure emotion hiding vs. speech-to-text cost on held-out speakers (extra [eval]).

Masks the test speakers' clips through the runtime (as a device would), then reports clean
vs masked vs a same-SNR random-noise control: white-box and transfer (held-out attacker)
UAR/accuracy/confusion/mutual information, Whisper WER, SNR/PESQ-wb/STOI and the masking
real-time factor. Writes evaluate.json, evaluate.md and PNG plots into --out.

Defaults (about 10-20 min per corpus on 2 cores): EmoDB all 107 test clips, RAVDESS the
first 128 of the class-balanced order (16 per class); Whisper on the first 42 of those.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path

EXIT_USAGE = 2


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from plainsight.cli import add_engine_arguments, add_privacy_arguments

    parser.add_argument(
        "--corpus", choices=["emodb", "ravdess"], help="required unless --summarize"
    )
    parser.add_argument(
        "--summarize",
        nargs="+",
        metavar="JSON",
        help="print one README table from earlier evaluate.json files and exit",
    )
    parser.add_argument(
        "--data",
        default=os.environ.get("PLAINSIGHT_DATA"),
        help="folder holding emodb/ and ravdess/ (default: $PLAINSIGHT_DATA)",
    )
    parser.add_argument(
        "--limit",
        type=int,
        default=None,
        help="clips (class-balanced prefix of the test speakers' clips; 0 = all). "
        "Default: emodb all 107, ravdess 128",
    )
    parser.add_argument("--asr-limit", type=int, default=42, help="clips for Whisper (42)")
    parser.add_argument(
        "--curve-asr-limit", type=int, default=14, help="clips for WER per budget point (14)"
    )
    parser.add_argument("--out", default=None, help="output folder (default eval-out/<corpus>)")
    parser.add_argument(
        "--path",
        choices=["mask", "stream"],
        default="mask",
        help="how clips are masked: mask (whole clip) or stream (S16_LE PCM through the "
        "StreamProcessor of `plainsight stream`, as the device sends it)",
    )
    parser.add_argument(
        "--hop-ms", type=float, default=250.0, help="stream hop for --path stream (250)"
    )
    parser.add_argument(
        "--codec",
        default="none",
        help="uplink codec(s) every listener hears through: none, opus:KBPS or mp3:KBPS; a "
        "comma-separated list adds a hiding-vs-bitrate curve (the first fills the main tables)",
    )
    parser.add_argument(
        "--codec-asr-limit",
        type=int,
        default=14,
        help="Whisper clips (clean, masked) for each codec after the first (14)",
    )
    parser.add_argument(
        "--asr-codecs",
        help="the codecs (of --codec) Whisper also listens through (default: all; the first "
        "codec always gets Whisper unless --no-asr)",
    )
    parser.add_argument("--no-asr", action="store_true", help="skip Whisper")
    parser.add_argument("--no-curves", action="store_true", help="skip steps/budget curves")
    parser.add_argument(
        "--listener-offset-ms",
        type=float,
        default=0.0,
        help="every listener hears each clip from this offset on, so its 2 s window grid is "
        "not the masker's (0: the masker's own grid; 0..1000)",
    )
    parser.add_argument(
        "--budget-curve",
        help="comma-separated SNR budgets (dB) of the budget curve (default 50,45,40,35,30,25,20)",
    )
    parser.add_argument(
        "--steps-curve",
        help="comma-separated step counts of the steps curve, or 'none' (default 1,2,3,5,10)",
    )
    parser.add_argument(
        "--no-dnsmos", action="store_true", help="skip DNSMOS (about 1 s per clip and condition)"
    )
    parser.add_argument(
        "--attackers", help="comma-separated attacker model dirs (default: export/artifacts)"
    )
    parser.add_argument(
        "--panel",
        choices=["dev", "final", "all"],
        help="score exactly this held-out panel's members, ONNX and MFCC/eGeMAPS statistics "
        "alike (final and all add the adaptive attackers; eGeMAPS needs opensmile). Default: "
        "the ONNX attackers of export/artifacts and seed-cnn. final is for reported results "
        "only: never choose anything with it",
    )
    parser.add_argument(
        "--whisper-dir",
        help="cache dir for the joined Whisper model (default $PLAINSIGHT_WHISPER_DIR or "
        "~/.cache/plainsight/whisper-base)",
    )
    parser.add_argument("--whisper-compute", choices=["int8", "float32"], default="int8")
    parser.add_argument("--whisper-threads", type=int, default=1, help="Whisper CPU threads (1)")
    parser.add_argument(
        "--sweep",
        action="store_true",
        help="compare methods, objectives, budgets, envelope and ensembles instead",
    )
    parser.add_argument(
        "--sweep-models",
        help="';'-separated extra ensembles for --sweep, each a comma-separated list of dirs",
    )
    parser.add_argument("--sweep-budgets", help="comma-separated SNR dB (default 45,40,35,30)")
    parser.add_argument(
        "--sweep-families",
        help="subset of: 'method x objective', envelope, ensemble, 'gain field' (comma-separated)",
    )
    parser.add_argument(
        "--sweep-asr-limit", type=int, default=0, help="clips for WER per sweep row (0: none)"
    )
    add_engine_arguments(parser, masking=True)
    add_privacy_arguments(parser)
    parser.set_defaults(model=None)


def parse_curve(text: str | None, kind, flag: str, low, high) -> tuple | None:
    """'a,b,c' -> (a, b, c) within [low, high]; 'none' -> (); None -> None (the default)."""
    if text is None:
        return None
    if text.strip().lower() == "none":
        return ()
    try:
        values = tuple(kind(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise ValueError(f"{flag} needs comma-separated numbers, got {text!r}") from None
    if not values or any(not low <= v <= high for v in values):
        raise ValueError(f"{flag} values must be in {low}..{high}, got {text!r}")
    return values


def masker_kwargs(args) -> dict:
    from plainsight.cli import masker_kwargs as engine_kwargs

    return engine_kwargs(args) | {"model": args.model or args.corpus}


def run(args) -> int:
    if args.summarize:
        import json

        from plainsight.evaluate.report import summary_table

        try:
            results = [json.loads(Path(p).read_text()) for p in args.summarize]
        except (OSError, ValueError) as exc:
            print(f"plainsight evaluate: cannot read results: {exc}", file=sys.stderr)
            return EXIT_USAGE
        print(summary_table(results), end="")
        if any(r.get("panel") for r in results):
            from plainsight.evaluate.report import panel_table

            print("\n" + panel_table([r for r in results if r.get("panel")]), end="")
        if any(r.get("path") == "stream" for r in results):
            from plainsight.evaluate.report import live_path_table

            print("\n" + live_path_table(results), end="")
        for r in results:
            if "codec_curve" in r:
                from plainsight.evaluate.report import codec_curve_table

                print(f"\n{r['corpus']}, {r.get('path', 'mask')}:\n")
                print("\n".join(codec_curve_table(r)[2:]))
        return 0
    if not args.corpus:
        print("plainsight evaluate: --corpus is required (emodb or ravdess)", file=sys.stderr)
        return EXIT_USAGE
    if not args.data:
        print(
            "plainsight evaluate: no corpus folder: pass --data or set PLAINSIGHT_DATA",
            file=sys.stderr,
        )
        return EXIT_USAGE
    if not Path(args.data, args.corpus).is_dir():
        print(
            f"plainsight evaluate: corpus folder not found: {Path(args.data, args.corpus)}",
            file=sys.stderr,
        )
        return EXIT_USAGE
    try:
        import jiwer  # noqa: F401
        import matplotlib  # noqa: F401
        import tqdm  # noqa: F401
    except ImportError as exc:
        print(
            f"plainsight evaluate: {exc.name} missing: pip install 'plainsight[eval]'",
            file=sys.stderr,
        )
        return EXIT_USAGE
    from plainsight.evaluate.codec import CodecError, parse_codecs

    try:  # CodecError is a ValueError: one message path for every parsed option
        listed = {c.name for c in parse_codecs(args.codec)}
        if args.asr_codecs is not None:
            unknown = {c.name for c in parse_codecs(args.asr_codecs)} - listed
            if unknown:
                raise CodecError(f"--asr-codecs {sorted(unknown)} not among --codec")
        budget_curve = parse_curve(args.budget_curve, float, "--budget-curve", 0.0, 80.0)
        if budget_curve == ():
            raise ValueError("--budget-curve none: use --no-curves to skip the curves")
        steps_curve = parse_curve(args.steps_curve, int, "--steps-curve", 1, 100)
        if not 0.0 <= args.listener_offset_ms <= 1000.0:
            raise ValueError("--listener-offset-ms must be in 0..1000")
    except ValueError as exc:
        print(f"plainsight evaluate: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if not 10 <= args.hop_ms <= 2000:
        print("plainsight evaluate: --hop-ms must be in 10..2000", file=sys.stderr)
        return EXIT_USAGE
    if args.sweep and (args.path != "mask" or args.codec != "none"):
        print("plainsight evaluate: --sweep measures --path mask without codec", file=sys.stderr)
        return EXIT_USAGE
    if args.neutralize_strength is not None and args.privacy != "neutralize":
        print(
            "plainsight evaluate: --neutralize-strength needs --privacy neutralize", file=sys.stderr
        )
        return EXIT_USAGE
    if args.panel and args.attackers:
        print("plainsight evaluate: --panel and --attackers exclude each other", file=sys.stderr)
        return EXIT_USAGE
    if args.sweep and args.panel not in (None, "dev"):
        print(
            "plainsight evaluate: --sweep chooses methods, so only --panel dev "
            "(the final panel is for reported results)",
            file=sys.stderr,
        )
        return EXIT_USAGE
    out = Path(args.out or Path("eval-out") / args.corpus)
    command = "plainsight evaluate " + " ".join(shlex.quote(a) for a in sys.argv[2:])
    progress = not getattr(args, "quiet", False)
    if args.sweep:
        from plainsight.evaluate.sweep import run_sweep

        written = run_sweep(args, masker_kwargs(args), out, command, progress)
    else:
        from plainsight.evaluate import report
        from plainsight.evaluate.run import EvalConfig, evaluate, json_ready

        cfg = EvalConfig(
            corpus=args.corpus,
            data=args.data,
            masker=masker_kwargs(args),
            limit=args.limit,
            asr_limit=args.asr_limit,
            curve_asr_limit=args.curve_asr_limit,
            attackers=args.attackers,
            whisper_dir=args.whisper_dir,
            whisper_compute=args.whisper_compute,
            whisper_threads=args.whisper_threads,
            asr=not args.no_asr,
            curves=not args.no_curves,
            progress=progress,
            path=args.path,
            hop_ms=args.hop_ms,
            codecs=args.codec,
            codec_asr_limit=args.codec_asr_limit,
            asr_codecs=args.asr_codecs,
            panel=args.panel,
            dnsmos=not args.no_dnsmos,
            listener_offset_ms=args.listener_offset_ms,
        )
        if budget_curve is not None:
            cfg.budget_curve = budget_curve
        if steps_curve is not None:
            cfg.steps_curve = steps_curve
        result = json_ready(evaluate(cfg))
        written = report.write_all(result, out, command)
        if not getattr(args, "quiet", False):
            print(report.markdown(result, command))
    for path in written:
        print(f"wrote {path}", file=sys.stderr)
    return 0
