"""Export a checkpoint to a model directory: ONNX + TFLite graphs and manifest.json.

Layout and manifest: docs/ARCHITECTURE.md ("Model directory"). Exports are deterministic
(same checkpoint + same tool versions -> byte-identical files), so `plainsight-export build
--check` can compare hashes. A directory is written into a temp folder and renamed into place.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import shutil
import tempfile
import warnings
from importlib import metadata
from pathlib import Path

import torch
from plainsight.features import FeatureConfig
from plainsight.stream import DEFAULT_HOP_MS
from torch import nn

from plainsight_export.gradgraph import (
    EnsembleGradientGraph,
    ForwardGraph,
    GradientGraph,
    HopCropGradientGraph,
    HopFixedGraph,
    HopGradientGraph,
    hop_layout,
)
from plainsight_export.models import PANEL_CKPT_KEYS as PANEL_KEYS
from plainsight_export.models import HeadEnsemble, Model

OPSET = 17
FORMAT = 1
VERSION = "1.0.0"
GRAPH_IO = {
    "grad": (("waveform", "target"), ("logits", "grad")),
    "forward": (("waveform",), ("logits",)),
    "hop": (("past", "tail", "target"), ("logits", "grad")),
    "hop_fixed": (("past",), ("fixed",)),
    "hop_crop": (("past_crop", "tail", "fixed", "target"), ("logits", "grad")),
}
HOP_GRAPHS = ("hop", "hop_fixed", "hop_crop")  # the stream's graphs, one layout
BACKENDS = ("onnx", "tflite")
SUFFIX = {"onnx": ".onnx", "tflite": ".tflite"}


def sha256_file(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def tool_versions() -> dict[str, str]:
    versions = {"torch": torch.__version__.split("+")[0]}
    for dist, key in (("onnx", "onnx"), ("litert-torch", "litert_torch")):
        try:
            versions[key] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[key] = "missing"
    return versions


def stream_hop_samples(ckpt: dict) -> int:
    """The default stream hop (plainsight stream --hop-ms) in model-rate samples."""
    return int(round(int(ckpt["features"]["sample_rate"]) * DEFAULT_HOP_MS / 1000))


def build_graph(model: nn.Module, graph: str, window: int = 0, hop_samples: int = 0):
    """The exportable module for `graph`: "grad", "forward", or one of the stream's graphs
    for a hop of `hop_samples` at the end of a `window` ("hop"; "hop_fixed" + "hop_crop",
    which also skip the body's unchanged part, for single models)."""
    if graph == "hop":
        return HopGradientGraph(model, window, hop_samples)
    if graph in ("hop_fixed", "hop_crop"):
        cls = HopFixedGraph if graph == "hop_fixed" else HopCropGradientGraph
        return cls(model, window, hop_samples)
    if graph == "grad":
        if isinstance(model, HeadEnsemble):
            return EnsembleGradientGraph(model)
        return GradientGraph(model)
    if graph == "forward":
        if isinstance(model, HeadEnsemble):  # the masker reads the first head's logits
            model = model.heads[0]
        # Gradient-capable models get the folded graph; other families export as they are.
        return ForwardGraph(model) if isinstance(model, Model) else model.eval()
    raise ValueError(f"unknown graph {graph!r}")


def example_inputs(graph: str, batch: int, n_samples: int, n_classes: int, layout=None) -> dict:
    gen = torch.Generator().manual_seed(0)
    inputs = {"waveform": 0.1 * torch.randn(batch, n_samples, generator=gen)}
    if graph in ("grad", "hop", "hop_crop"):
        inputs["target"] = torch.full((batch, n_classes), 1.0 / n_classes)
    if graph in HOP_GRAPHS:
        mels = layout["n_mels"]
        inputs["past"] = torch.randn(batch, layout["past_frames"], mels, generator=gen) - 3.0
        inputs["tail"] = inputs.pop("waveform")[:, : layout["tail_samples"]]
    if graph == "hop_crop":
        inputs["past_crop"] = inputs["past"][:, layout["crop_start"] :]
        cone = (batch, layout["channels"], layout["bands"])
        inputs["fixed"] = torch.rand(*cone, generator=gen) * layout["first_changed"]
    return {name: inputs[name] for name in GRAPH_IO[graph][0]}


class _NamedOutputs(nn.Module):
    """Keyword inputs and a dict of outputs, so TFLite tensors carry the contract's names."""

    def __init__(self, inner: nn.Module, graph: str):
        super().__init__()
        self.inner = inner
        self.input_names, self.output_names = GRAPH_IO[graph]

    def forward(self, waveform=None, target=None, past=None, tail=None, past_crop=None, fixed=None):
        given = {"waveform": waveform, "target": target, "past": past, "tail": tail}
        given.update(past_crop=past_crop, fixed=fixed)
        out = self.inner(*(given[name] for name in self.input_names))
        out = out if isinstance(out, tuple) else (out,)
        return dict(zip(self.output_names, out, strict=True))


@contextlib.contextmanager
def _quiet():
    """The exporters print progress and warnings; keep the CLI output readable."""
    sink = io.StringIO()
    level = logging.root.level
    logging.disable(logging.WARNING)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
            try:
                yield
            finally:
                logging.disable(logging.NOTSET)
                logging.root.setLevel(level)


def export_onnx(module: nn.Module, graph: str, inputs: dict, path: Path) -> None:
    """TorchScript-based torch.onnx exporter (deterministic), dynamic batch on every tensor."""
    in_names, out_names = GRAPH_IO[graph]
    with _quiet(), torch.no_grad():
        torch.onnx.export(
            module,
            tuple(inputs[name] for name in in_names),
            str(path),
            input_names=list(in_names),
            output_names=list(out_names),
            opset_version=OPSET,
            dynamo=False,
            dynamic_axes={name: {0: "B"} for name in in_names + out_names},
            do_constant_folding=True,
        )


def export_tflite(module: nn.Module, graph: str, inputs: dict, path: Path) -> None:
    """litert-torch conversion (builtin ops only), batch 1."""
    import litert_torch

    sample = {name: tensor[:1] for name, tensor in inputs.items()}
    with _quiet():
        converted = litert_torch.convert(_NamedOutputs(module, graph).eval(), sample_kwargs=sample)
        converted.export(str(path))


def _json_safe(value):
    try:
        json.dumps(value)
        return value
    except TypeError:
        return None


def manifest_for(
    ckpt: dict, name: str, graphs: dict, files: dict, checkpoint_ref: dict, extra=None
) -> dict:
    classes = list(ckpt["classes"])
    window = int(ckpt["window_samples"])
    metrics = {k: _json_safe(v) for k, v in (ckpt.get("metrics") or {}).items()}
    metrics.setdefault("chance_uar", 1.0 / len(classes))
    # Held-out panel members only (older manifests stay byte-identical without these keys).
    panel_keys = {k: ckpt[k] for k in PANEL_KEYS if k in ckpt}
    return {
        **panel_keys,
        **(extra or {}),
        "format": FORMAT,
        "name": name,
        "version": VERSION,
        "corpus": ckpt["corpus"],
        "arch": ckpt["arch"],
        "role": ckpt.get("role", "default"),
        "classes": classes,
        "features": dict(ckpt["features"]),
        "sample_rate": int(ckpt["features"]["sample_rate"]),
        "window_samples": window,
        "graphs": graphs,
        "files": files,
        "opset": OPSET,
        "metrics": metrics,
        "checkpoint": checkpoint_ref,
        "seed": ckpt.get("seed"),
        "versions": tool_versions(),
    }


def graph_shapes(graph: str, window: int, n_classes: int, layout=None) -> dict:
    shape = {"waveform": ["B", window], "target": ["B", n_classes]}
    shape.update(logits=["B", n_classes], grad=["B", window])
    extra = {}
    if graph in HOP_GRAPHS:  # the layout is the runtime's contract for these graphs
        shape.update(
            past=["B", layout["past_frames"], layout["n_mels"]],
            tail=["B", layout["tail_samples"]],
            grad=["B", layout["tail_samples"]],
        )
        if "crop_start" in layout:
            frames = layout["past_frames"] - layout["crop_start"]
            shape.update(
                past_crop=["B", frames, layout["n_mels"]],
                fixed=["B", layout["channels"], layout["bands"]],
            )
        extra = {k: v for k, v in layout.items() if k not in ("n_mels", "mean_step")}
    in_names, out_names = GRAPH_IO[graph]
    return {
        "inputs": {n: shape[n] for n in in_names},
        "outputs": {n: shape[n] for n in out_names},
        **extra,
    }


def export_model_dir(
    model: nn.Module,
    ckpt: dict,
    out_dir: str | os.PathLike,
    name: str,
    graphs: tuple[str, ...] = ("grad", "forward"),
    backends: tuple[str, ...] = BACKENDS,
    checkpoint_ref: dict | None = None,
    extra: dict | None = None,
) -> dict:
    """Write <out_dir>/{manifest.json, <graph>.<backend>} atomically; return the manifest.

    `extra`: more manifest keys (an ensemble's "heads")."""
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    n_classes, window = len(ckpt["classes"]), int(ckpt["window_samples"])
    if {"grad", *HOP_GRAPHS} & set(graphs) and not isinstance(model, (Model, HeadEnsemble)):
        raise TypeError(f"{name}: arch {ckpt['arch']} has no gradient graph (forward only)")
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        files, graph_meta = {}, {}
        for graph in graphs:
            layout = None
            if graph in HOP_GRAPHS:
                features = FeatureConfig.from_dict(ckpt["features"])
                layout = hop_layout(features, window, stream_hop_samples(ckpt))
                layout["n_mels"] = features.n_mels
            module = build_graph(model, graph, window, layout and layout["hop_samples"]).eval()
            if graph in ("hop_fixed", "hop_crop"):
                layout |= module.cone
            inputs = example_inputs(graph, 2, window, n_classes, layout)
            graph_meta[graph] = graph_shapes(graph, window, n_classes, layout)
            for backend in backends:
                fname = graph + SUFFIX[backend]
                exporter = export_onnx if backend == "onnx" else export_tflite
                exporter(module, graph, inputs, tmp / fname)
                files[fname] = {
                    "graph": graph,
                    "backend": backend,
                    "batch": "dynamic" if backend == "onnx" else 1,
                    "sha256": sha256_file(tmp / fname),
                    "bytes": (tmp / fname).stat().st_size,
                }
        manifest = manifest_for(ckpt, name, graph_meta, files, checkpoint_ref or {}, extra)
        text = json.dumps(manifest, indent=2, sort_keys=True) + "\n"
        (tmp / "manifest.json").write_text(text)
        manifest = json.loads(text)  # exactly what readers get (tuples became lists)
        os.chmod(tmp, 0o755)
        if out_dir.exists():
            old = out_dir.with_name(f".{out_dir.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            out_dir.rename(old)
            tmp.rename(out_dir)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return manifest
