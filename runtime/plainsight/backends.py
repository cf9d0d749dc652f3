"""Inference backends: onnxruntime or TFLite (ai_edge_litert, else tflite_runtime).

`load_graph(spec, "grad"|"forward", backend, threads)` returns an object with
`run(waveform[B,N], target[B,C] | None) -> (logits[B,C], grad[B,N] | None)`; "hop" (the
stream's graphs, STREAM_GRAPHS) a StreamGraph, e.g. `run(past, tail, target) -> (logits, grad)`.
ONNX runs the batch in one call; TFLite files have batch 1, so the batch is looped.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import os
import sys

import numpy as np

from plainsight.manifest import ManifestError, ModelSpec

BACKENDS = ("onnx", "tflite")
# Measured on the bundled emodb-compact grad graph, 1 thread, ai-edge-litert 2.3.0, x86:
# with the default XNNPACK delegate (AUTO) 5-8 ms per 2 s window, without it 13-17 ms
# (forward: 1.6-1.9 vs 5-6 ms). So the delegate stays on. PLAINSIGHT_TFLITE_RESOLVER
# (an OpResolverType name) overrides it, e.g. for benchmarks on other CPUs.
_TFLITE_RESOLVER = "AUTO"
_INSTALL_HINT = {
    "onnx": "pip install onnxruntime",
    "tflite": "pip install ai-edge-litert   (or: pip install tflite-runtime)",
}


class BackendError(RuntimeError):
    """A backend is missing or a graph failed to load/run."""


def _import_tflite():
    for name in ("ai_edge_litert.interpreter", "tflite_runtime.interpreter"):
        try:
            return importlib.import_module(name)
        except ImportError:
            continue
    return None


def _import_onnx():
    try:
        return importlib.import_module("onnxruntime")
    except ImportError:
        return None


def _importable(name: str) -> bool:
    if name in sys.modules:
        return sys.modules[name] is not None  # None: import blocked on purpose
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def installed_backends() -> list[str]:
    """Installed backends in preference order (onnx first)."""
    found = []
    if _importable("onnxruntime"):
        found.append("onnx")
    if _importable("ai_edge_litert") or _importable("tflite_runtime"):
        found.append("tflite")
    return found


def resolve_backend(name: str = "auto") -> str:
    if name == "auto":
        found = installed_backends()
        if not found:
            raise ImportError(
                "no inference backend installed: pip install onnxruntime "
                "(or: pip install ai-edge-litert)"
            )
        return found[0]
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; choose auto, onnx or tflite")
    module = _import_onnx() if name == "onnx" else _import_tflite()
    if module is None:
        raise ImportError(f"backend {name} is not installed: {_INSTALL_HINT[name]}")
    return name


def backend_version(name: str) -> str | None:
    if name == "onnx":
        module = _import_onnx()
        return getattr(module, "__version__", "?") if module else None
    for dist in ("ai-edge-litert", "tflite-runtime"):
        try:
            return f"{dist} {importlib.metadata.version(dist)}"
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


class OnnxGraph:
    batch_dynamic = True

    def __init__(self, path, threads: int):
        ort = _import_onnx()
        if ort is None:
            raise ImportError(f"backend onnx is not installed: {_INSTALL_HINT['onnx']}")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.log_severity_level = 3
        self.session = ort.InferenceSession(
            str(path), sess_options=opts, providers=["CPUExecutionProvider"]
        )
        self.inputs = [i.name for i in self.session.get_inputs()]
        self.outputs = [o.name for o in self.session.get_outputs()]
        tensors = self.session.get_inputs() + self.session.get_outputs()
        self.widths = {t.name: _static_width(t.shape) for t in tensors}

    def run(self, waveform: np.ndarray, target: np.ndarray | None = None):
        feeds = {"waveform": np.ascontiguousarray(waveform, np.float32)}
        if "target" in self.inputs:
            feeds["target"] = np.ascontiguousarray(target, np.float32)
        wanted = [name for name in ("logits", "grad") if name in self.outputs]
        values = dict(zip(wanted, self.session.run(wanted, feeds), strict=True))
        return values["logits"], values.get("grad")


def _tflite_interpreter(path, threads: int, resolver: str | None = None):
    """A TFLite interpreter with tensors allocated, with the op resolver of
    PLAINSIGHT_TFLITE_RESOLVER (default: XNNPACK on)."""
    module = _import_tflite()
    if module is None:
        raise ImportError(f"backend tflite is not installed: {_INSTALL_HINT['tflite']}")
    kwargs = {"model_path": str(path), "num_threads": threads}
    resolver = resolver or os.environ.get("PLAINSIGHT_TFLITE_RESOLVER", _TFLITE_RESOLVER)
    if hasattr(module, "OpResolverType") and resolver:
        kwargs["experimental_op_resolver_type"] = getattr(module.OpResolverType, resolver)
    interpreter = module.Interpreter(**kwargs)
    interpreter.allocate_tensors()
    return interpreter


class TfliteGraph:
    batch_dynamic = False

    def __init__(self, path, threads: int, resolver: str | None = None):
        self.interpreter = _tflite_interpreter(path, threads, resolver)
        inputs = self.interpreter.get_input_details()
        outputs = self.interpreter.get_output_details()
        self._in = self._by_role(inputs, "waveform", "target")
        self._out = self._by_role(outputs, "grad", "logits")
        width = {d["index"]: _static_width(d["shape"]) for d in inputs + outputs}
        self.widths = {role: width[index] for role, index in {**self._in, **self._out}.items()}

    @staticmethod
    def _by_role(details, long_role: str, short_role: str) -> dict[str, int]:
        """Map tensors to roles by name, else by shape: the waveform/grad are the long ones."""
        found = {}
        for d in details:
            name = d["name"].lower()
            if long_role in name or short_role in name:
                found[long_role if long_role in name else short_role] = d["index"]
        if len(found) == len(details):
            return found
        longest = max(int(d["shape"][-1]) for d in details)
        short_dims = {int(d["shape"][-1]) for d in details} - {longest}
        if len(details) == 1:  # forward graph: one output (logits), one input (waveform)
            return {(short_role if long_role == "grad" else long_role): details[0]["index"]}
        if len(details) != 2 or len(short_dims) != 1:
            raise BackendError(
                f"cannot tell the TFLite tensors apart: {[d['name'] for d in details]}"
            )
        return {
            (long_role if int(d["shape"][-1]) == longest else short_role): d["index"]
            for d in details
        }

    def run(self, waveform: np.ndarray, target: np.ndarray | None = None):
        logits, grads = [], []
        for i in range(waveform.shape[0]):
            self.interpreter.set_tensor(
                self._in["waveform"], waveform[i : i + 1].astype(np.float32)
            )
            if "target" in self._in:
                self.interpreter.set_tensor(
                    self._in["target"], target[i : i + 1].astype(np.float32)
                )
            self.interpreter.invoke()
            logits.append(self.interpreter.get_tensor(self._out["logits"]).copy())
            if "grad" in self._out:
                grads.append(self.interpreter.get_tensor(self._out["grad"]).copy())
        return np.concatenate(logits), (np.concatenate(grads) if grads else None)


def _static_width(shape) -> int | None:
    """The last dimension of a tensor shape, or None if it is dynamic (a name, -1, None)."""
    last = list(shape)[-1] if len(shape) else None
    return int(last) if isinstance(last, (int, np.integer)) and last > 0 else None


def check_widths(spec: ModelSpec, path, widths: dict) -> None:
    """Refuse a manifest whose classes or window do not match the graph's tensors."""
    expected = {
        "waveform": spec.window_samples,
        "grad": spec.window_samples,
        "target": len(spec.classes),
        "logits": len(spec.classes),
    }
    for role, width in widths.items():
        if role in expected and width is not None and width != expected[role]:
            what = "window_samples" if role in ("waveform", "grad") else "classes count"
            raise ManifestError(
                f"{spec.directory / 'manifest.json'}: {what} {expected[role]} does not match "
                f"{path.name} ({role} has {width}); refusing a manifest that does not fit its graph"
            )


# The stream's graphs (docs/ARCHITECTURE.md): inputs and outputs, in call order.
STREAM_GRAPHS = {
    "hop": (("past", "tail", "target"), ("logits", "grad")),
    "hop_fixed": (("past",), ("fixed",)),
    "hop_crop": (("past_crop", "tail", "fixed", "target"), ("logits", "grad")),
}


class StreamGraph:
    """One of a model's stream graphs (STREAM_GRAPHS): run(*inputs in order) -> tuple of the
    outputs in order; tensors found by their contract names. ONNX runs the batch at once,
    TFLite (batch 1) loops over it."""

    def __init__(self, path, graph: str, backend: str, threads: int):
        self.backend = backend
        self.inputs, self.outputs = STREAM_GRAPHS[graph]
        if backend == "onnx":
            self.session = OnnxGraph(path, threads).session
            tensors = self.session.get_inputs()
            names = [i.name for i in tensors]
            if sorted(names) != sorted(self.inputs):
                raise BackendError(f"{path}: {graph} graph inputs {names}, need {self.inputs}")
            self.shapes = {i.name: list(i.shape)[1:] for i in tensors}
            return
        self.interpreter = _tflite_interpreter(path, threads)
        details = self.interpreter.get_input_details()
        self._in = self._named(details, self.inputs, path)
        self._out = self._named(self.interpreter.get_output_details(), self.outputs, path)
        by_index = {d["index"]: d for d in details}
        self.shapes = {role: list(by_index[i]["shape"])[1:] for role, i in self._in.items()}

    @staticmethod
    def _named(details, roles, path) -> dict[str, int]:
        found = {}
        for role in roles:
            hits = [d["index"] for d in details if role in d["name"].lower()]
            if len(hits) == 1:
                found[role] = hits[0]
        if len(found) != len(roles) or len(details) != len(roles):
            names = [d["name"] for d in details]
            raise BackendError(f"{path}: cannot map TFLite tensors {names} to {roles}")
        return found

    def run(self, *arrays: np.ndarray) -> tuple:
        feeds = {
            name: np.ascontiguousarray(a, np.float32)
            for name, a in zip(self.inputs, arrays, strict=True)
        }
        if self.backend == "onnx":
            return tuple(self.session.run(list(self.outputs), feeds))
        results: dict[str, list] = {name: [] for name in self.outputs}
        for i in range(len(arrays[0])):
            for role, index in self._in.items():
                self.interpreter.set_tensor(index, feeds[role][i : i + 1])
            self.interpreter.invoke()
            for name in self.outputs:
                results[name].append(self.interpreter.get_tensor(self._out[name]).copy())
        return tuple(np.concatenate(results[name]) for name in self.outputs)


def _check_stream_shapes(spec: ModelSpec, graph: str, path, shapes: dict) -> None:
    layout = spec.stream_layout(graph)
    expected = {
        "past": [layout["past_frames"], spec.features.n_mels],
        "tail": [layout["tail_samples"]],
        "target": [len(spec.classes)],
    }
    if "crop_start" in layout:
        frames = layout["past_frames"] - layout["crop_start"]
        expected["past_crop"] = [frames, spec.features.n_mels]
        expected["fixed"] = [layout["channels"], layout["bands"]]
    for role, want in expected.items():
        have = shapes.get(role)
        if have is not None and all(isinstance(d, (int, np.integer)) for d in have):
            if [int(d) for d in have] != want:
                what = "classes count" if role == "target" else f"{graph} graph layout"
                raise ManifestError(
                    f"{spec.directory / 'manifest.json'}: {what} {want} does not match "
                    f"{path.name} ({role} has {[int(d) for d in have]}); refusing a manifest "
                    "that does not fit its graph"
                )


def load_stream_graph(spec: ModelSpec, graph: str, backend: str = "auto", threads: int = 1):
    """The model's verified stream graph `graph` for `backend`, or None if it ships none."""
    backend = resolve_backend(backend)
    if spec.stream_layout(graph) is None or spec.graph_file(graph, backend) is None:
        return None
    return load_graph(spec, graph, backend, threads)


def load_graph(spec: ModelSpec, graph: str, backend: str = "auto", threads: int = 1):
    """Load one verified graph of a model, checked against the manifest's classes and
    window. Raises BackendError on any load failure, ManifestError on a mismatch."""
    backend = resolve_backend(backend)
    path = spec.verified_path(graph, backend)
    if graph in STREAM_GRAPHS and spec.stream_layout(graph) is None:
        raise ManifestError(f"{spec.directory / 'manifest.json'}: {graph} graph without a layout")
    try:
        if graph in STREAM_GRAPHS:
            loaded = StreamGraph(path, graph, backend, threads)
            _check_stream_shapes(spec, graph, path, loaded.shapes)
            return loaded
        loaded = OnnxGraph(path, threads) if backend == "onnx" else TfliteGraph(path, threads)
    except (ImportError, BackendError):
        raise
    except Exception as exc:  # backend-specific load errors: report in one line
        raise BackendError(f"cannot load {path}: {type(exc).__name__}: {exc}") from exc
    check_widths(spec, path, loaded.widths)
    return loaded
