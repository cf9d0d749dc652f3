"""Device performance: multiply-adds per masking step, measured x86 speed, Pi 4 estimate.

    python device/perf_estimate.py [--json] [--seconds 20] [--privacy mask|neutralize]
                                   [--mask-strength medium|perceptual|...]
                                                               (needs onnx + onnxruntime)

1. MACs: every Conv / ConvTranspose / MatMul / Gemm of each bundled model's ONNX graphs,
   with shapes taken from one real run at batch 1 (intermediates exposed as outputs).
   One stream hop = 1 forward call (the untargeted objective's own prediction) + `steps`
   calls of the stream's step graph: hop_crop (plus one hop_fixed call per hop) or hop where
   the model ships them for the hop size, else the grad graph on the window ending with it.
   A preset with the gain stage (`rebalance`) adds no call: its field moves with the mask's
   steps (one loop), at the cost of its FFT work (numpy).
2. x86: `plainsight bench` (1 thread, onnx) for the stream real-time factor, plus the time
   of the graph calls alone, so the non-graph (numpy) share is known.
3. Cortex-A72 (Raspberry Pi 4, 1.5 GHz) estimate, basis printed with the numbers:
   graph time = MACs / effective GMAC/s, with the A72's fp32 peak (one 128-bit NEON FMA per
   cycle = 8 FLOP = 4 MAC per cycle -> 6 GMAC/s) times the fraction of peak ORT reaches on
   these graphs on x86 (measured here, against AVX2: 2 x 256-bit FMA per cycle = 16 MAC per
   cycle at the measured clock); numpy time = x86 numpy time x SCALAR_SLOWDOWN.
   `--privacy neutralize` times the stream hop with the neutralize stage in front of the
   mask: the stage is numpy, so it lands in the numpy share; so does the `perceptual`
   preset's shaping filter (`--mask-strength perceptual`).
   Emulated (qemu) timings are never used: they say nothing about a device.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

A72_GHZ = 1.5
A72_MAC_PER_CYCLE = 4  # one 128-bit fp32 FMA per cycle across the two 64-bit FP pipes
AVX2_MAC_PER_CYCLE = 16  # two 256-bit FMA units
# Per-core scalar/numpy speed of this x86 core vs a 1.5 GHz A72: public single-core
# benchmark scores put a Pi 4 at roughly 1/4 to 1/6 of a current server core; take 6.
SCALAR_SLOWDOWN = 6.0
GOAL_CORE_SHARE = 0.5
# Conservative basis from a public figure: MobileNet v1 1.0_224 (569 M MACs) in 87 ms with
# TFLite on a Pi 4 CPU (thread count not stated; over 4 cores that is ~1.6 GMAC/s per core).
A72_CONSERVATIVE_GMACS = 1.5
COUNTED = ("Conv", "ConvTranspose", "MatMul", "Gemm")


def count_macs(path: Path, window: int, classes: int) -> dict:
    """MACs per op type for one batch-1 call, from shapes seen in a real ORT run."""
    import onnx
    import onnxruntime as ort

    model = onnx.load(str(path))
    graph = model.graph
    initial = {init.name: tuple(init.dims) for init in graph.initializer}
    wanted = []
    for node in graph.node:
        if node.op_type in COUNTED:
            wanted += [n for n in list(node.input[:2]) + [node.output[0]] if n not in initial]
    existing = {o.name for o in graph.output}
    for name in dict.fromkeys(wanted):
        if name not in existing:
            graph.output.append(onnx.ValueInfoProto(name=name))
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(
        model.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )
    feeds = {}
    for tensor in session.get_inputs():  # batch 1; waveform/past/tail zeros, target uniform
        shape = [1] + [int(d) for d in tensor.shape[1:]]
        fill = 1.0 / classes if tensor.name == "target" else 0.0
        feeds[tensor.name] = np.full(shape, fill, np.float32)
    names = [o.name for o in session.get_outputs()]
    shapes = {n: v.shape for n, v in zip(names, session.run(names, feeds), strict=True)}
    shapes.update(initial)
    macs: dict[str, int] = {}
    for node in graph.node:
        if node.op_type not in COUNTED:
            continue
        a, b, out = shapes[node.input[0]], shapes[node.input[1]], shapes[node.output[0]]
        if node.op_type == "Conv":  # each output element: Cin/group x kernel
            n = int(np.prod(out)) * int(np.prod(b[1:]))
        elif node.op_type == "ConvTranspose":  # each input element: Cout/group x kernel
            n = int(np.prod(a)) * int(np.prod(b[1:]))
        elif node.op_type == "MatMul":
            n = int(np.prod(out)) * int(a[-1])
        else:  # Gemm
            trans_a = any(at.name == "transA" and at.i for at in node.attribute)
            n = int(np.prod(out)) * int(a[0] if trans_a else a[1])
        macs[node.op_type] = macs.get(node.op_type, 0) + n
    return {"total": sum(macs.values()), "by_op": macs}


def time_graphs(spec, threads: int = 1, repeats: int = 20) -> dict:
    """Fastest ms of one batch-1 forward, grad (and hop) call (onnx), on this machine."""
    from plainsight.backends import load_graph, load_stream_graph
    from plainsight.masker import past_log_mel

    c = len(spec.classes)
    wave = (np.random.default_rng(0).standard_normal((1, spec.window_samples)) * 0.05).astype(
        np.float32
    )
    target = np.eye(c, dtype=np.float32)[:1]
    out = {}
    layout = spec.hop_layout()
    streams = [g for g in ("hop", "hop_fixed", "hop_crop") if spec.stream_layout(g)]
    for graph in ["forward", "grad"] + streams:
        if graph in streams:
            g = load_stream_graph(spec, graph, "onnx", threads)
            past = past_log_mel(wave[0], spec.features, layout["past_frames"])[None]
            tail = wave[:, layout["tail_start"] :]
            if graph == "hop_fixed":
                args = (past,)
            elif graph == "hop_crop":
                crop = spec.stream_layout("hop_crop")
                fixed = load_stream_graph(spec, "hop_fixed", "onnx", threads).run(past)[0]
                args = (past[:, crop["crop_start"] :], tail, fixed, target)
            else:
                args = (past, tail, target)
        else:
            g = load_graph(spec, graph, "onnx", threads)
            args = (wave,) if graph == "forward" else (wave, target)
        for _ in range(3):
            g.run(*args)
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            g.run(*args)
            times.append(time.perf_counter() - t0)
        out[graph] = 1000 * min(times)  # the least-disturbed run: the machine is shared
    return out


def stream_graph_calls(settings: dict) -> tuple[int, int]:
    """(step-graph calls, once-per-hop hop_fixed calls) per stream hop of a masker's settings
    or a preset: the mask's steps (the gain stage, when on, moves with them:
    Masker.rebalance_and_perturb_hop)."""
    return settings["stream_steps"], 1


def time_stream_hop(
    strength: str, hop_ms: float, hops: int = 24, privacy: str = "mask"
) -> tuple[float, float]:
    """(mean ms per stream hop, mean ms of it outside the model graphs): default model,
    1 thread, onnx. The graph calls are timed inside the same hops, so the split holds
    even when the shared machine slows everything down."""
    from plainsight.bench import synthetic_speechlike
    from plainsight.masker import Masker
    from plainsight.stream import StreamProcessor, to_pcm

    masker = Masker(backend="onnx", threads=1, strength=strength, privacy=privacy)
    in_graphs = [0.0]

    def timed(run):
        def wrapper(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return run(*args, **kwargs)
            finally:
                in_graphs[0] += time.perf_counter() - t0

        return wrapper

    for member in masker.members:
        for graph in (member.grad, member.forward, member.hop, member.hop_fixed, member.hop_crop):
            if graph is not None:
                graph.run = timed(graph.run)
    stream = StreamProcessor(masker, masker.sample_rate, hop_ms)
    pcm = to_pcm(synthetic_speechlike((hops + 3) * hop_ms / 1000, masker.sample_rate))
    for i in range(2):  # warm-up
        stream.process(pcm[i * stream.hop : (i + 1) * stream.hop])
    in_graphs[0] = 0.0
    t0 = time.perf_counter()
    for i in range(2, hops + 2):
        stream.process(pcm[i * stream.hop : (i + 1) * stream.hop])
    total = time.perf_counter() - t0
    return 1000 * total / hops, 1000 * (total - in_graphs[0]) / hops


def cpu_ghz() -> float:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("cpu MHz"):
                return float(line.split(":")[1]) / 1000
    except (OSError, ValueError):
        pass
    return 2.5


def bench(seconds: float, privacy: str = "mask", strength: str | None = None) -> dict:
    cmd = [sys.executable, "-m", "plainsight.cli", "bench", "--json", "--backend", "onnx"]
    cmd += ["--seconds", str(seconds), "--privacy", privacy]
    cmd += ["--mask-strength", strength] if strength else []
    result = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(result.stdout)["results"][0]


def estimate(seconds: float, privacy: str = "mask", strength: str | None = None) -> dict:
    from plainsight.manifest import bundled_models

    bench_result = bench(seconds, privacy, strength)
    steps, fixed_calls = stream_graph_calls(bench_result["settings"])
    hop_s = bench_result["stream_hop_ms"] / 1000
    ghz = cpu_ghz()
    x86_peak = ghz * AVX2_MAC_PER_CYCLE  # GMAC/s
    a72_peak = A72_GHZ * A72_MAC_PER_CYCLE
    models = []
    for spec in bundled_models():
        c = len(spec.classes)
        fwd = count_macs(spec.graph_file("forward", "onnx"), spec.window_samples, c)
        grad = count_macs(spec.graph_file("grad", "onnx"), spec.window_samples, c)
        layout = spec.hop_layout()
        fits = layout is not None and layout["hop_samples"] == round(hop_s * spec.sample_rate)
        step_graph = "grad"
        if fits:
            step_graph = "hop_crop" if spec.stream_layout("hop_crop") else "hop"
        step = grad
        if step_graph != "grad":
            step = count_macs(spec.graph_file(step_graph, "onnx"), 0, c)
        per_hop = {"total": 0}  # hop_crop's once-per-hop part: hop_fixed
        if step_graph == "hop_crop":
            per_hop = count_macs(spec.graph_file("hop_fixed", "onnx"), 0, c)
        ms = time_graphs(spec)
        hop_macs = fwd["total"] + fixed_calls * per_hop["total"] + steps * step["total"]
        graph_ms = ms["forward"] + fixed_calls * ms.get("hop_fixed", 0) * bool(per_hop["total"])
        graph_ms += steps * ms[step_graph]
        x86_eff = hop_macs / (graph_ms / 1000) / 1e9  # GMAC/s reached on x86
        efficiency = x86_eff / x86_peak
        a72_eff = a72_peak * efficiency
        models.append(
            {
                "model": spec.name,
                "window_samples": spec.window_samples,
                "sample_rate": spec.sample_rate,
                "forward_macs": fwd,
                "grad_macs": grad,
                "step_graph": step_graph,
                "step_macs": step,
                "per_hop_macs": per_hop,
                "hop_graph_samples": layout and layout["hop_samples"],
                "macs_per_hop": hop_macs,
                "x86_ms": {k: round(v, 2) for k, v in ms.items()},
                "x86_graph_ms_per_hop": round(graph_ms, 2),
                "x86_effective_gmacs": round(x86_eff, 2),
                "x86_fraction_of_peak": round(efficiency, 3),
                "a72_effective_gmacs": round(a72_eff, 2),
                "a72_graph_ms_per_hop": round(hop_macs / a72_eff / 1e6, 1),
            }
        )
    default = next((m for m in models if m["model"] in bench_result["settings"]["models"]), None)
    x86_hop_ms, numpy_ms = time_stream_hop(
        bench_result["settings"]["strength"], 1000 * hop_s, privacy=privacy
    )
    a72_hop_ms = a72_rtf = conservative_rtf = None
    if default:
        a72_hop_ms = default["a72_graph_ms_per_hop"] + numpy_ms * SCALAR_SLOWDOWN
        a72_rtf = a72_hop_ms / 1000 / hop_s
        conservative_ms = default["macs_per_hop"] / A72_CONSERVATIVE_GMACS / 1e6
        conservative_rtf = (conservative_ms + numpy_ms * SCALAR_SLOWDOWN) / 1000 / hop_s
    settings_table = []
    if default:
        from plainsight.masker import STRENGTHS

        a72_eff = default["a72_effective_gmacs"] * 1e9
        for strength, preset in STRENGTHS.items():
            for hop_ms in (250, 500):
                fits = default["hop_graph_samples"] == round(hop_ms * default["sample_rate"] / 1000)
                step = default["step_macs" if fits else "grad_macs"]["total"]
                calls, fixed_calls = stream_graph_calls(preset)
                macs = default["forward_macs"]["total"] + calls * step
                macs += fixed_calls * default["per_hop_macs"]["total"] if fits else 0
                shares = [
                    round((macs / eff * 1000 + numpy_ms * SCALAR_SLOWDOWN) / hop_ms, 3)
                    for eff in (a72_eff, A72_CONSERVATIVE_GMACS * 1e9)
                ]
                settings_table.append(
                    {
                        "strength": strength,
                        "steps": calls,
                        "hop_ms": hop_ms,
                        "step_graph": default["step_graph"] if fits else "grad",
                        "macs_per_hop": macs,
                        "a72_core_share": shares[0],
                        "a72_core_share_conservative": shares[1],
                    }
                )
    return {
        "privacy": privacy,
        "a72_settings": settings_table,
        "x86": {
            "cpu_ghz": ghz,
            "peak_gmacs_avx2": round(x86_peak, 1),
            "bench": {k: bench_result[k] for k in ("settings", "mask_rtf", "stream_rtf")}
            | {
                "stream_ms_per_hop": bench_result["stream_ms_per_hop"],
                "hop_ms": bench_result["stream_hop_ms"],
            },
            "timed_stream_ms_per_hop": round(x86_hop_ms, 2),
            "numpy_ms_per_hop": round(numpy_ms, 2) if numpy_ms is not None else None,
        },
        "models": models,
        "a72": {
            "ghz": A72_GHZ,
            "peak_gmacs": a72_peak,
            "scalar_slowdown": SCALAR_SLOWDOWN,
            "stream_ms_per_hop": round(a72_hop_ms, 1) if a72_hop_ms else None,
            "stream_rtf": round(a72_rtf, 3) if a72_rtf else None,
            "conservative_gmacs": A72_CONSERVATIVE_GMACS,
            "stream_rtf_conservative": round(conservative_rtf, 3) if conservative_rtf else None,
            "goal_core_share": GOAL_CORE_SHARE,
            "meets_goal": bool(a72_rtf is not None and a72_rtf <= GOAL_CORE_SHARE),
            "meets_goal_conservative": bool(
                conservative_rtf is not None and conservative_rtf <= GOAL_CORE_SHARE
            ),
        },
    }


def report(r: dict) -> str:
    x, a = r["x86"], r["a72"]
    s = x["bench"]["settings"]
    lines = [
        f"stream setting: {'+'.join(s['models'])}, {s['method']} {s['stream_steps']} "
        f"steps{' with the gain stage' if s.get('gain_db') else ''} ({s['objective']}: 1 "
        f"forward + {stream_graph_calls(s)[0]} step-graph calls per hop), "
        f"hop {x['bench']['hop_ms']:.0f} ms, privacy tier {r.get('privacy', 'mask')}",
        "",
        "model                forward MACs   grad MACs   step graph MACs     MACs/hop   "
        "x86 fwd/grad/step ms  x86 GMAC/s (% peak)  A72 graph ms/hop",
    ]
    for m in r["models"]:
        fwd, grad = m["forward_macs"]["total"] / 1e6, m["grad_macs"]["total"] / 1e6
        step = m["step_macs"]["total"] / 1e6
        ms = m["x86_ms"]
        lines.append(
            f"{m['model']:20s} {fwd:9.1f} M {grad:9.1f} M {m['step_graph']:>8s} {step:9.1f} M "
            f"{m['macs_per_hop'] / 1e6:9.1f} M   "
            f"{ms['forward']:5.2f}/{ms['grad']:5.2f}/{ms.get(m['step_graph'], 0):5.2f}"
            f"     {m['x86_effective_gmacs']:6.2f} ({100 * m['x86_fraction_of_peak']:4.1f}%)"
            f"   {m['a72_graph_ms_per_hop']:8.1f}"
        )
    lines += [
        "",
        f"x86 (1 thread, {x['cpu_ghz']:.2f} GHz, AVX2 peak {x['peak_gmacs_avx2']} GMAC/s): stream "
        f"rtf {x['bench']['stream_rtf']} ({x['bench']['stream_ms_per_hop']} ms/hop; timed again: "
        f"{x['timed_stream_ms_per_hop']} ms/hop, of which {x['numpy_ms_per_hop']} ms outside the "
        f"graphs), mask rtf {x['bench']['mask_rtf']} (plainsight bench)",
        f"Cortex-A72 estimate ({a['ghz']} GHz, peak {a['peak_gmacs']} GMAC/s x the x86 fraction of "
        f"peak; numpy part x{a['scalar_slowdown']}): {a['stream_ms_per_hop']} ms per hop = "
        f"stream rtf {a['stream_rtf']} = {100 * a['stream_rtf']:.0f}% of one Pi 4 core "
        f"(goal <= {100 * a['goal_core_share']:.0f}%: {'met' if a['meets_goal'] else 'NOT met'})",
        f"Conservative A72 estimate ({a['conservative_gmacs']} GMAC/s effective, public "
        f"MobileNet figure): stream rtf {a['stream_rtf_conservative']} = "
        f"{100 * a['stream_rtf_conservative']:.0f}% of one core "
        f"({'met' if a['meets_goal_conservative'] else 'NOT met'})",
    ]
    if r["a72_settings"]:
        lines += [
            "",
            "A72 estimate by setting (share of one Pi 4 core; latency = hop; "
            "the numpy share is the measured setting's):",
        ]
        for row in r["a72_settings"]:
            lines.append(
                f"  strength {row['strength']:6s} ({row['steps']} steps of the {row['step_graph']} "
                f"graph)  hop {row['hop_ms']} ms: "
                f"{row['macs_per_hop'] / 1e6:6.1f} M MACs/hop -> "
                f"{100 * row['a72_core_share']:3.0f}% (conservative "
                f"{100 * row['a72_core_share_conservative']:3.0f}%)"
            )
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--seconds", type=float, default=20.0, help="bench audio length")
    parser.add_argument("--privacy", choices=["mask", "neutralize"], default="mask")
    parser.add_argument("--mask-strength", help="strength preset (default: the default one)")
    args = parser.parse_args(argv)
    result = estimate(args.seconds, args.privacy, args.mask_strength)
    print(json.dumps(result, indent=1) if args.json else report(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
