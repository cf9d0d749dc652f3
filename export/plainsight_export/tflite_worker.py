"""Run a plainsight TFLite graph with numpy only (ai_edge_litert or tflite_runtime).

Imported by verify/bench, and run as a script by another interpreter (e.g. a venv with
tflite-runtime and numpy<2) so that runtime can be checked without torch:
    python tflite_worker.py MODEL.tflite IN.npz OUT.npz [--module tflite_runtime] [--no-xnnpack]
IN.npz: waveform [B, N] (or, for a hop graph, past/tail), optional target [B, C], optional
ifgsm_x0/ifgsm_target/eps/alpha/steps, optional bench_repeats. OUT.npz: logits, grad (grad
graphs), ifgsm (+ ifgsm_points, ifgsm_grads: the waveform and gradient at each step),
bench_ms (wall, CPU).
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time

import numpy as np

MODULES = ("ai_edge_litert.interpreter", "tflite_runtime.interpreter")
# past, tail, past_crop, fixed: the stream's hop graphs
INPUT_ROLES = ("waveform", "target", "past", "tail", "past_crop", "fixed")
OUTPUT_ROLES = ("logits", "grad", "fixed")


class TfliteRunner:
    """Batch-1 TFLite graph, looped over the batch; tensors found by their contract names."""

    def __init__(self, path: str, module: str = MODULES[0], xnnpack: bool = True, threads=1):
        mod = importlib.import_module(module if "." in module else module + ".interpreter")
        kwargs = {"model_path": str(path), "num_threads": threads}
        if not xnnpack:
            kwargs["experimental_op_resolver_type"] = (
                mod.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
            )
        self.interpreter = mod.Interpreter(**kwargs)
        self.interpreter.allocate_tensors()
        self.inputs = self._by_name(self.interpreter.get_input_details(), INPUT_ROLES)
        self.outputs = self._by_name(self.interpreter.get_output_details(), OUTPUT_ROLES)

    @staticmethod
    def _by_name(details, roles) -> dict[str, int]:
        """Each tensor's role: the longest role its name holds ("serving_default_past_crop"
        is past_crop, not past; outputs read like "serving_default_logits_output")."""
        found = {}
        for d in details:
            held = [role for role in roles if role in d["name"].lower()]
            if held:
                found.setdefault(max(held, key=len), d["index"])
        if len(found) != len(details):
            names = [d["name"] for d in details]
            raise ValueError(f"cannot map TFLite tensors {names} to {roles}")
        return found

    @property
    def has_grad(self) -> bool:
        return "grad" in self.outputs

    def run(self, waveform: np.ndarray, target: np.ndarray | None = None) -> dict:
        results: dict[str, list] = {name: [] for name in self.outputs}
        for b in range(waveform.shape[0]):
            self.interpreter.set_tensor(self.inputs["waveform"], waveform[b : b + 1])
            if "target" in self.inputs:
                self.interpreter.set_tensor(self.inputs["target"], target[b : b + 1])
            self.interpreter.invoke()
            for name, index in self.outputs.items():
                results[name].append(self.interpreter.get_tensor(index).copy())
        return {name: np.concatenate(parts) for name, parts in results.items()}


def run_feeds(runner: TfliteRunner, feeds: dict) -> dict:
    """Any graph's inputs by name (the hop graph's past/tail/target), looped over the batch."""
    results: dict[str, list] = {name: [] for name in runner.outputs}
    for b in range(len(next(iter(feeds.values())))):
        for role, index in runner.inputs.items():
            runner.interpreter.set_tensor(index, feeds[role][b : b + 1])
        runner.interpreter.invoke()
        for name, index in runner.outputs.items():
            results[name].append(runner.interpreter.get_tensor(index).copy())
    return {name: np.concatenate(parts) for name, parts in results.items()}


def ifgsm(grad_fn, x0: np.ndarray, target: np.ndarray, eps: float, alpha: float, steps: int):
    """Untargeted I-FGSM: step up sign(grad), stay within eps of x0 and within [-1, 1].

    Returns (final waveform, [waveform before each step], [gradient at each step]).
    """
    x0 = np.asarray(x0, np.float32)
    x = x0.copy()
    points, grads = [], []
    for _ in range(steps):
        grad = grad_fn(x, target)
        points.append(x)
        grads.append(grad)
        x = x + np.float32(alpha) * np.sign(grad).astype(np.float32)
        x = np.clip(np.clip(x, x0 - np.float32(eps), x0 + np.float32(eps)), -1.0, 1.0)
        x = x.astype(np.float32)
    return x, points, grads


def time_call(fn, repeats: int) -> tuple[float, float]:
    """Median (wall ms, process CPU ms) of fn() after one warm-up call."""
    fn()
    wall, cpu = [], []
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return float(np.median(wall) * 1000.0), float(np.median(cpu) * 1000.0)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("inputs")
    parser.add_argument("output")
    parser.add_argument("--module", default=MODULES[0])
    parser.add_argument("--no-xnnpack", action="store_true")
    args = parser.parse_args(argv)
    data = np.load(args.inputs)
    runner = TfliteRunner(args.model, args.module, xnnpack=not args.no_xnnpack)
    target = data["target"] if "target" in data else None
    if "tail" in data:  # a hop graph: no waveform, no attack loop
        np.savez(args.output, **run_feeds(runner, {k: data[k] for k in runner.inputs}))
        return 0
    out = runner.run(data["waveform"], target)
    if "ifgsm_x0" in data and runner.has_grad:
        out["ifgsm"], points, grads = ifgsm(
            lambda x, t: runner.run(x, t)["grad"],
            data["ifgsm_x0"],
            data["ifgsm_target"],
            float(data["eps"]),
            float(data["alpha"]),
            int(data["steps"]),
        )
        out["ifgsm_points"], out["ifgsm_grads"] = np.stack(points), np.stack(grads)
    if "bench_repeats" in data:
        one_x, one_t = data["waveform"][:1], None if target is None else target[:1]
        out["bench_ms"] = np.array(
            time_call(lambda: runner.run(one_x, one_t), int(data["bench_repeats"]))
        )
    np.savez(args.output, **out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
