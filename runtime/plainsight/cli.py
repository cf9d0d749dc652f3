"""`plainsight` command line. Subcommands live in plainsight/cmd_<name>.py, each with
`add_arguments(parser)` and `run(args) -> int`; heavy imports happen inside run() so that
`plainsight --help` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import math
import sys

from plainsight import __version__

# The one registry of subcommands: name -> (module, one-line help).
COMMANDS = {
    "mask": ("plainsight.cmd_mask", "hide emotion in audio files or directories"),
    "stream": ("plainsight.cmd_stream", "mask live S16_LE mono PCM from stdin to stdout"),
    "classify": ("plainsight.cmd_classify", "emotion probabilities of an audio file"),
    "info": ("plainsight.cmd_info", "models, backends, versions and manifest hashes"),
    "bench": ("plainsight.cmd_bench", "real-time factor, peak RSS and startup time"),
    "evaluate": ("plainsight.cmd_evaluate", "measure emotion hiding vs. speech-to-text cost"),
    "doctor": ("plainsight.cmd_doctor", "check this device's installation"),
    "wyoming": ("plainsight.cmd_wyoming", "serve masked microphone audio to Wyoming clients"),
}
EXIT_USAGE = 2
log = logging.getLogger("plainsight")


# ----- options shared by several subcommands ------------------------------------------------
# What each --mask-strength preset buys against emotion models the device never saw (final
# panel, `mask` path; docs/EVALUATION.md "Transfer budget curve" and "A listener with another
# window grid"). Kept here, beside the help it feeds, not in masker.py: the masking code's
# hash pairs adaptive attackers with the masker they were trained on.
STRENGTH_AGAINST_UNSEEN = {
    "low": "bundled model partly blinded; unseen models: MFCC-statistics ones partly",
    "medium": "bundled model at UAR 25-35 on any listener framing (chance 12-14); unseen "
    "models: only MFCC-statistics ones drop (EmoDB SVM to chance + 10)",
    "high": "as medium, audibly noisier; no unseen model family drops further",
    "perceptual": "shaped under the speech's masking threshold: SNR ~28 dB at about "
    "medium's PESQ; bundled model hidden on every path, largely through Opus too; unseen "
    "models as medium",
    "rebalance": "medium after re-balancing the speech by up to +-3 dB in broad "
    "time-frequency regions (stream: 16 ms more latency): unseen emotion models drop far "
    "more than under any other preset, none to chance",
}


def add_engine_arguments(parser: argparse.ArgumentParser, masking: bool = True) -> None:
    """--model/--backend/--threads, and the --mask-* knobs when `masking`."""
    group = parser.add_argument_group("model")
    group.add_argument(
        "--model",
        default="default",
        help="'default' (bundled emodb-compact), a bundled corpus (emodb, ravdess), a model "
        "directory, or a comma-separated list of those (ensemble: sum of their losses)",
    )
    group.add_argument("--backend", default="auto", choices=["auto", "onnx", "tflite"])
    group.add_argument(
        "--threads",
        type=positive_int,
        default=1,
        help="intra-op threads (default 1: spare the CPU)",
    )
    if not masking:
        return
    from plainsight.masker import (  # light: numpy only
        DEFAULT_STRENGTH,
        MAX_GAIN_DB,
        MAX_GRID_SHIFT_MS,
        MAX_SNR_DB,
        MAX_STEPS,
        METHODS,
        MIN_EPS,
        STRENGTHS,
    )

    group = parser.add_argument_group("masking (explicit values override --mask-strength)")
    group.add_argument(
        "--mask-strength",
        choices=list(STRENGTHS),
        default=DEFAULT_STRENGTH,
        help="; ".join(
            f"{name}: {p['method']} {p['steps']} steps (stream {p['stream_steps']}), "
            f"{p['snr_db']:g} dB SNR "
            f"({STRENGTH_AGAINST_UNSEEN[name]})"
            for name, p in STRENGTHS.items()
        )
        + f" (default {DEFAULT_STRENGTH}). None hides emotion from every unknown model: "
        "docs/EVALUATION.md",
    )
    group.add_argument("--mask-method", choices=list(METHODS))
    group.add_argument(
        "--mask-steps",
        type=bounded_int(1, MAX_STEPS),
        help=f"iterations (ifgsm, mifgsm) of mask and of each stream hop, at most {MAX_STEPS}",
    )
    group.add_argument(
        "--mask-stream-steps",
        type=bounded_int(1, MAX_STEPS),
        help="iterations of each stream hop only (default: --mask-steps if given, else the "
        "preset's)",
    )
    group.add_argument(
        "--mask-grid-shift-ms",
        type=bounded_float(0.0, MAX_GRID_SHIFT_MS),
        help="each mask step shifts the model window grid by up to this many ms, so the "
        "perturbation holds for listeners that frame the audio their own way (preset: 20; "
        "0: one fixed grid)",
    )
    group.add_argument(
        "--mask-shaping",
        type=bounded_float(0.0, 1.0),
        metavar="E",
        help="shape the perturbation like the speech's masking threshold to the power E "
        "(0..1; 0.5 measured): inaudible at far lower SNR, so give a lower --mask-snr-db "
        "(about 10 dB less for the same PESQ); default 0, a flat perturbation",
    )
    group.add_argument(
        "--mask-gain-db",
        type=bounded_float(0.0, MAX_GAIN_DB),
        metavar="DB",
        help="first re-balance the speech by a smooth time-frequency gain within +-DB "
        f"(0..{MAX_GAIN_DB:g}), optimised like the mask, then mask it: moves emotion models "
        "the device never saw more than the mask alone (docs/EVALUATION.md, 'A gain "
        "field'); default 0, off",
    )
    group.add_argument(
        "--mask-overlap",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="mask windows at hop 1 s instead of 2 s (twice the cost; before the grid shift "
        "this was the default)",
    )
    budget = group.add_mutually_exclusive_group()
    budget.add_argument(
        "--mask-eps",
        type=bounded_float(MIN_EPS, 1.0),
        help=f"L-inf budget in full-scale amplitude (e.g. 0.002), from {MIN_EPS:.3g} "
        "(1 LSB of 16-bit: less cannot change a sample) to 1",
    )
    budget.add_argument(
        "--mask-snr-db",
        type=bounded_float(-math.inf, MAX_SNR_DB),
        help=f"budget relative to each window's RMS level, at most {MAX_SNR_DB:g} dB "
        "(more is below 1 LSB of 16-bit even for full-scale speech)",
    )
    group.add_argument(
        "--mask-target",
        "--target",
        dest="mask_target",
        default=None,
        help="neutral (default; untargeted if a model has no neutral class), untargeted "
        "(away from the model's own prediction), uniform, or any class name (towards it)",
    )
    group.add_argument(
        "--mask-envelope",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="shape the perturbation by the local speech envelope (quiet in pauses)",
    )


def add_privacy_arguments(parser: argparse.ArgumentParser, stream: bool = False) -> None:
    """--privacy mask|neutralize and --neutralize-strength (mask and stream)."""
    from plainsight.masker import DEFAULT_PRIVACY, PRIVACY_TIERS
    from plainsight.neutralize import DEFAULT_STRENGTH, HOP_S, Geometry, check_strength

    def strength(text: str) -> float:
        try:
            return check_strength(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    ahead_ms = 1000 * Geometry(16000).delay / 16000
    latency = f" (adds {ahead_ms:g} ms of look-ahead to the stream's latency)" if stream else ""
    group = parser.add_argument_group("privacy tier")
    group.add_argument(
        "--privacy",
        choices=list(PRIVACY_TIERS),
        default=DEFAULT_PRIVACY,
        help="mask: the adversarial perturbation alone (imperceptible; hides emotion from "
        "the model family it was computed on); neutralize: flatten pitch contour, loudness "
        "dynamics and vocal effort toward the speaker's median first, then mask (the voice "
        f"sounds calmer){latency}. Default {DEFAULT_PRIVACY}",
    )
    group.add_argument(
        "--neutralize-strength",
        type=strength,
        default=None,
        metavar="S",
        help=f"0 (unchanged) .. 1 (flat at the median), default {DEFAULT_STRENGTH:g}; "
        f"needs --privacy neutralize (analysis hop {1000 * HOP_S:g} ms)",
    )


def masker_kwargs(args) -> dict:
    """Masker keyword arguments from the --model/--backend/--threads/--mask-*/--privacy flags
    (the one mapping: mask, stream, wyoming, doctor and evaluate all build from it)."""
    return {
        "model": args.model,
        "backend": args.backend,
        "threads": args.threads,
        "method": args.mask_method,
        "steps": args.mask_steps,
        "stream_steps": args.mask_stream_steps,
        "grid_shift_ms": args.mask_grid_shift_ms,
        "shaping": args.mask_shaping,
        "gain_db": args.mask_gain_db,
        "overlap": args.mask_overlap,
        "eps": args.mask_eps,
        "snr_db": args.mask_snr_db,
        "objective": args.mask_target,
        "envelope": args.mask_envelope,
        "strength": args.mask_strength,
        "privacy": getattr(args, "privacy", "mask"),
        "neutralize_strength": getattr(args, "neutralize_strength", None),
    }


def masker_from_args(args):
    from plainsight.masker import Masker

    kwargs = masker_kwargs(args)
    if kwargs["neutralize_strength"] is not None and kwargs["privacy"] != "neutralize":
        raise ValueError("--neutralize-strength needs --privacy neutralize")
    return Masker(**kwargs)


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def bounded_int(low: int, high: int):
    def parse(text: str) -> int:
        value = int(text)
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be in {low}..{high}, got {value}")
        return value

    return parse


def bounded_float(low: float, high: float):
    """A finite float in [low, high]: NaN and infinities are refused at parse time."""

    def parse(text: str) -> float:
        value = float(text)
        if not (math.isfinite(value) and low <= value <= high):
            raise argparse.ArgumentTypeError(
                f"must be finite and in [{low:g}, {high:g}], got {text}"
            )
        return value

    return parse


# ----- parser ---------------------------------------------------------------------------------
def _common_parent() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    group = parent.add_argument_group("output")
    verbosity = group.add_mutually_exclusive_group()
    verbosity.add_argument(
        "-q", "--quiet", action="store_true", default=argparse.SUPPRESS, help="errors only"
    )
    verbosity.add_argument(
        "--debug", action="store_true", default=argparse.SUPPRESS, help="debug log, tracebacks"
    )
    return parent


def _missing_command(name: str, module: str, reason: str):
    def run(_args) -> int:
        print(
            f"plainsight {name}: not available in this build ({module}: {reason})", file=sys.stderr
        )
        return EXIT_USAGE

    return run


def build_parser() -> argparse.ArgumentParser:
    parent = _common_parent()
    parser = argparse.ArgumentParser(
        prog="plainsight",
        description="On-device privacy filter: hides the speaker's emotion from cloud "
        "analysis while speech-to-text still works.",
        parents=[parent],
    )
    parser.add_argument("--version", action="version", version=f"plainsight {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            if exc.name != module_name:  # a real bug inside an existing module
                raise
            cmd = sub.add_parser(name, help=f"{help_text} (not installed)", parents=[parent])
            cmd.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
            cmd.set_defaults(run=_missing_command(name, module_name, "module missing"))
            continue
        cmd = sub.add_parser(
            name, help=help_text, description=module.__doc__ or help_text, parents=[parent]
        )
        module.add_arguments(cmd)
        cmd.set_defaults(run=module.run)
    return parser


def _known_errors() -> tuple[type[BaseException], ...]:
    errors = [ValueError, OSError, ImportError, RuntimeError]
    return tuple(errors)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    quiet, debug = getattr(args, "quiet", False), getattr(args, "debug", False)
    args.quiet, args.debug = quiet, debug
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.ERROR if quiet else logging.INFO,
        format="plainsight: %(message)s",
        stream=sys.stderr,
    )
    if not getattr(args, "command", None):
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        return int(args.run(args) or 0)
    except KeyboardInterrupt:
        print("plainsight: interrupted", file=sys.stderr)
        return 130
    except _known_errors() as exc:
        if debug:
            raise
        message = " ".join(str(exc).split()) or type(exc).__name__
        print(f"plainsight {args.command}: error: {message}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
