"""Time one gradient step on one window, 1 thread: torch eager autograd vs the exported graphs."""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from plainsight_export import tflite_worker
from plainsight_export.export import export_model_dir
from plainsight_export.gradgraph import GradientGraph, autograd_reference
from plainsight_export.models import build_model, load_checkpoint
from plainsight_export.verify import REPO_ROOT, run_tflite_subprocess, speech_like

CORPUS_CLASSES = {"emodb": 7, "ravdess": 8}


def bench_model_for(arch: str, corpus: str):
    """(model, label): the committed checkpoint if present, else a random-init model."""
    path = REPO_ROOT / "export/checkpoints" / corpus / f"{arch}.pt"
    if path.is_file():
        return load_checkpoint(path), f"{corpus}/{arch}.pt"
    from plainsight.features import FeatureConfig

    torch.manual_seed(0)
    model = build_model(arch, CORPUS_CLASSES[corpus], FeatureConfig()).eval()
    model.checkpoint = {
        "arch": arch,
        "classes": [f"c{i}" for i in range(CORPUS_CLASSES[corpus])],
        "features": FeatureConfig().to_dict(),
        "window_samples": 32000,
        "corpus": corpus,
        "role": "bench",
        "metrics": {},
    }
    return model, f"{arch} (random init: no checkpoint; speed does not depend on weights)"


def interleaved_medians(calls: list[tuple[str, object]], repeats: int) -> list[tuple]:
    """(name, wall ms, CPU ms) medians, timed round-robin so load changes hit all alike.

    CPU time (this process, 1 thread) is the steadier number on a shared machine.
    """
    for _, fn in calls:
        fn()
    wall: dict[str, list[float]] = {name: [] for name, _ in calls}
    cpu: dict[str, list[float]] = {name: [] for name, _ in calls}
    for _ in range(repeats):
        for name, fn in calls:
            start, start_cpu = time.perf_counter(), time.process_time()
            fn()
            wall[name].append(time.perf_counter() - start)
            cpu[name].append(time.process_time() - start_cpu)
    return [
        (name, float(np.median(wall[name]) * 1e3), float(np.median(cpu[name]) * 1e3))
        for name, _ in calls
    ]


def bench_one(model, label: str, repeats: int, log=print) -> list[tuple]:
    torch.set_num_threads(1)
    ckpt = model.checkpoint
    n, c = int(ckpt["window_samples"]), len(ckpt["classes"])
    x = speech_like(n)[None]
    target = np.zeros((1, c), np.float32)
    target[0, 0] = 1.0
    xt, tt = torch.from_numpy(x), torch.from_numpy(target)
    graph = GradientGraph(model)

    def graph_eager():
        with torch.no_grad():
            graph(xt, tt)

    calls = [
        ("torch eager autograd", lambda: autograd_reference(model, xt, tt)),
        ("torch eager GradientGraph", graph_eager),
    ]
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "m"
        log(f"exporting {label} ...")
        export_model_dir(model, ckpt, out, "bench", graphs=("grad",))
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = opts.inter_op_num_threads = 1
        sess = ort.InferenceSession(
            str(out / "grad.onnx"), opts, providers=["CPUExecutionProvider"]
        )
        feeds = {"waveform": x, "target": target}
        calls.append(("onnxruntime", lambda: sess.run(None, feeds)))
        for xnnpack, name in ((True, "XNNPACK"), (False, "builtin kernels")):
            runner = tflite_worker.TfliteRunner(out / "grad.tflite", xnnpack=xnnpack)
            calls.append((f"ai-edge-litert {name}", lambda r=runner: r.run(x, target)))
        rows = interleaved_medians(calls, repeats)
        for xnnpack, name in ((True, "XNNPACK"), (False, "builtin kernels")):
            payload = {"waveform": x, "target": target, "bench_repeats": np.int64(repeats)}
            try:
                res = run_tflite_subprocess(out / "grad.tflite", payload, xnnpack)
                wall_ms, cpu_ms = (float(v) for v in res["bench_ms"])
                rows.append((f"tflite-runtime {name} (own process)", wall_ms, cpu_ms))
            except (FileNotFoundError, RuntimeError) as exc:
                log(f"skip tflite-runtime {name}: {exc}")
    return rows


def main_bench(archs=("compact", "seed-cnn"), corpus="emodb", repeats=20) -> int:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    print(f"one gradient step (forward + input gradient), 1 window, 1 thread, median of {repeats}")
    for arch in archs:
        model, label = bench_model_for(arch, corpus)
        rows = bench_one(model, label, repeats)
        base_wall, base_cpu = rows[0][1], rows[0][2]
        print(f"\n{label}")
        print(f"  {'runtime':44s} {'wall ms':>8s} {'x torch':>8s} {'CPU ms':>8s} {'x torch':>8s}")
        for name, wall_ms, cpu_ms in rows:
            print(
                f"  {name:44s} {wall_ms:8.2f} {base_wall / wall_ms:7.2f}x"
                f" {cpu_ms:8.2f} {base_cpu / cpu_ms:7.2f}x"
            )
    return 0
