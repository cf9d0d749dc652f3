"""Measure speed on this machine: real-time factor (processing s per audio s) of `mask`
at default settings and of `stream`, peak RSS, and import + model-load time, for each
installed backend, each in a fresh process. `--privacy neutralize` (or both) measures the
neutralize tier (neutralize + mask) and the neutralize stage alone.
"""

from __future__ import annotations

import json
import os

TARGETS = {"mask_rtf": 0.02, "stream_rtf": 0.2, "peak_rss_mb": 150.0, "import_and_load_s": 1.0}


def add_arguments(parser) -> None:
    from plainsight.cli import positive_int
    from plainsight.masker import DEFAULT_STRENGTH, STRENGTHS

    parser.add_argument("--json", action="store_true", help="print results as JSON")
    parser.add_argument("--backend", choices=["all", "onnx", "tflite"], default="all")
    parser.add_argument(
        "--threads", type=positive_int, default=1, help="intra-op threads (default 1)"
    )
    parser.add_argument("--seconds", type=float, default=20.0, help="length of the test audio")
    parser.add_argument("--hop-ms", type=float, default=250.0, help="stream hop")
    parser.add_argument("--model", default="default", help="model (see plainsight mask --help)")
    parser.add_argument("--mask-strength", choices=list(STRENGTHS), default=DEFAULT_STRENGTH)
    parser.add_argument(
        "--privacy",
        choices=["mask", "neutralize", "both"],
        default="mask",
        help="privacy tier to measure (both: one row each; default mask)",
    )


def run(args) -> int:
    from plainsight.backends import installed_backends
    from plainsight.bench import run_all

    backends = installed_backends() if args.backend == "all" else [args.backend]
    if not backends:
        raise ImportError("no inference backend installed: pip install onnxruntime")
    load_before = os.getloadavg()[0]
    tiers = ("mask", "neutralize") if args.privacy == "both" else (args.privacy,)
    results = run_all(
        backends, args.threads, args.seconds, args.hop_ms, args.mask_strength, args.model, tiers
    )
    machine = {"cpus": os.cpu_count(), "loadavg_1min": [load_before, os.getloadavg()[0]]}
    for result in results:
        if "error" not in result:
            result["meets_targets"] = {k: result[k] <= v for k, v in TARGETS.items()}
    if args.json:
        print(json.dumps({"targets": TARGETS, "machine": machine, "results": results}, indent=1))
        return 0 if all("error" not in r for r in results) else 1
    print(
        f"machine: {machine['cpus']} CPUs, load average {load_before:.1f} before / "
        f"{machine['loadavg_1min'][1]:.1f} after (wall-time RTF suffers on a busy machine)"
    )
    for r in results:
        if "error" in r:
            print(f"{r['backend']}: error: {r['error']}")
            continue
        s = r["settings"]
        print(
            f"{r['backend']} ({r['threads']} thread, {'+'.join(s['models'])}, {s['method']} "
            f"{s['steps']} steps (stream {s['stream_steps']}), "
            f"{r['model_calls_per_window']} model calls per window, "
            f"{r['mask_windows_per_audio_s']} windows per audio s, {s['objective']}, "
            f"strength {s['strength']}, privacy {r.get('privacy', 'mask')}"
            + (
                f" {r['neutralize_strength']:g}; the neutralize stage alone: stream rtf cpu "
                f"{r['neutralize_stream_rtf_cpu']}, stream latency "
                f"{r['stream_latency_ms']} ms"
                if r.get("privacy") == "neutralize"
                else ""
            )
            + "):"
        )
        for key, unit in (
            ("mask_rtf", f"  (cpu time: {r['mask_rtf_cpu']})"),
            (
                "stream_rtf",
                f"  (cpu time: {r['stream_rtf_cpu']}; hop {r['stream_hop_ms']:.0f} ms, "
                f"{r['stream_ms_per_hop']} ms/hop)",
            ),
            ("peak_rss_mb", " MB"),
            ("import_and_load_s", " s"),
        ):
            ok = "ok" if r["meets_targets"][key] else "MISSES"
            print(f"  {key:18s} {r[key]:>9}{unit}  target <= {TARGETS[key]} {ok}")
    return 0 if all("error" not in r for r in results) else 1
