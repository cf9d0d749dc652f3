"""Model directories: load and validate manifest.json, check sha256, resolve model names.

A model directory holds manifest.json plus graph files (see docs/ARCHITECTURE.md). Every
file is hashed before use; a mismatch is refused, never silently loaded.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from plainsight.features import FeatureConfig

FORMAT = 1
DEFAULT_CORPUS = "emodb"  # EmoDB: 7 acted classes incl. neutral; see README notes
DEFAULT_ARCH = "compact"
BUNDLED_DIR = Path(__file__).resolve().parent / "models"
_REQUIRED = ("format", "name", "corpus", "classes", "features", "sample_rate", "window_samples")
_GRAPHS = ("grad", "forward", "hop", "hop_fixed", "hop_crop")  # hop*: the stream's, optional
_BACKENDS = ("onnx", "tflite")
MAX_WINDOW_S = 60  # a model window longer than this is a broken manifest, not a model


class ManifestError(ValueError):
    """A model directory is missing, malformed, or fails its hash check."""


@dataclass(frozen=True)
class ModelSpec:
    directory: Path
    name: str
    corpus: str
    classes: tuple[str, ...]
    sample_rate: int
    window_samples: int
    features: FeatureConfig
    files: dict = field(repr=False)
    manifest: dict = field(repr=False)

    def graph_file(self, graph: str, backend: str) -> Path | None:
        """The file holding `graph` for `backend`, or None if this model does not ship it."""
        for fname, meta in self.files.items():
            if meta.get("graph") == graph and meta.get("backend") == backend:
                return self.directory / fname
        return None

    def has_graph(self, graph: str) -> bool:
        return any(meta.get("graph") == graph for meta in self.files.values())

    def verified_path(self, graph: str, backend: str) -> Path:
        path = self.graph_file(graph, backend)
        if path is None:
            raise ManifestError(f"model {self.name} ships no {graph} graph for backend {backend}")
        verify_file(self, path.name)
        return path

    def hop_layout(self) -> dict | None:
        """The hop graph's layout (hop_samples, past_frames, tail_start, tail_samples), or None
        if the model ships no hop graph."""
        return self.stream_layout("hop")

    def stream_layout(self, graph: str) -> dict | None:
        """The layout of a stream graph ("hop", "hop_fixed", "hop_crop"; the last two add the
        body's cone: crop_start, first_changed, pooled_frames, channels, bands), or None if
        the model ships no such graph. Refuses a layout that does not fit the window."""
        meta = (self.manifest.get("graphs") or {}).get(graph)
        if not self.has_graph(graph) or not isinstance(meta, dict):
            return None
        keys = ["hop_samples", "past_frames", "tail_start", "tail_samples"]
        if graph != "hop":
            keys += ["crop_start", "first_changed", "pooled_frames", "channels", "bands"]
        layout = {k: meta.get(k) for k in keys}
        positive = all(type(v) is int and v > 0 for k, v in layout.items() if k != "crop_start")
        fits = positive and layout["tail_start"] + layout["tail_samples"] == self.window_samples
        if graph != "hop":
            crop = layout["crop_start"]
            fits = fits and type(crop) is int and 0 <= crop < layout["past_frames"]
        if not fits:
            where = self.directory / "manifest.json"
            raise ManifestError(f"{where}: bad {graph} graph layout {layout}")
        return layout

    def sha256s(self) -> dict[str, str]:
        return {fname: meta["sha256"] for fname, meta in self.files.items()}


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_file(spec: ModelSpec, fname: str) -> None:
    """Raise ManifestError unless the file exists with the manifest's size and sha256."""
    meta = spec.files.get(fname)
    if meta is None:
        raise ManifestError(f"{spec.directory / fname}: not listed in manifest.json")
    path = spec.directory / fname
    if not path.is_file():
        raise ManifestError(f"{path}: listed in manifest.json but missing")
    if "bytes" in meta and path.stat().st_size != int(meta["bytes"]):
        raise ManifestError(
            f"{path}: size {path.stat().st_size} != manifest {meta['bytes']} bytes "
            "(sha256 check failed); refusing to load a modified model"
        )
    actual = sha256_of(path)
    if actual != meta["sha256"]:
        raise ManifestError(
            f"{path}: sha256 {actual[:16]}... does not match manifest "
            f"{meta['sha256'][:16]}...; refusing to load a modified model"
        )


def load_model_dir(directory: str | Path) -> ModelSpec:
    directory = Path(directory)
    path = directory / "manifest.json"
    if not path.is_file():
        raise ManifestError(f"{directory}: no manifest.json (not a plainsight model directory)")
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ManifestError(f"{path}: unreadable manifest ({exc})") from None
    if not isinstance(data, dict):
        raise ManifestError(f"{path}: manifest must be a JSON object")
    missing = [key for key in _REQUIRED if key not in data]
    if missing:
        raise ManifestError(f"{path}: missing keys {missing}")
    if data["format"] != FORMAT:
        raise ManifestError(f"{path}: format {data['format']!r} unsupported (need {FORMAT})")
    classes = data["classes"]
    if not (
        isinstance(classes, list)
        and len(classes) >= 2
        and all(isinstance(c, str) for c in classes)
        and len(set(classes)) == len(classes)
    ):
        raise ManifestError(f"{path}: classes must be a list of at least two distinct names")
    files = data.get("files") or {}
    if not isinstance(files, dict) or not files:
        raise ManifestError(f"{path}: no graph files listed")
    for fname, meta in files.items():
        if Path(fname).name != fname:
            raise ManifestError(f"{path}: file name {fname!r} must not contain a path")
        if not isinstance(meta, dict) or not isinstance(meta.get("sha256"), str):
            raise ManifestError(f"{path}: file {fname} has no sha256")
        if meta.get("graph") not in _GRAPHS or meta.get("backend") not in _BACKENDS:
            raise ManifestError(
                f"{path}: file {fname} needs graph in {_GRAPHS}, backend in {_BACKENDS}"
            )
    for key in ("window_samples", "sample_rate"):  # JSON allows 2.5, true, Infinity
        if type(data[key]) is not int:
            raise ManifestError(f"{path}: {key} must be an integer, got {data[key]!r}")
    try:
        features = FeatureConfig.from_dict(data["features"])
    except (TypeError, ValueError, OverflowError) as exc:
        raise ManifestError(f"{path}: bad features ({exc})") from None
    window, rate = data["window_samples"], data["sample_rate"]
    if rate != features.sample_rate or not 1000 <= rate <= 192000:
        raise ManifestError(f"{path}: sample_rate {rate} (features {features.sample_rate})")
    if not features.win_length <= window <= MAX_WINDOW_S * rate:
        raise ManifestError(
            f"{path}: window_samples {window} outside {features.win_length}..{MAX_WINDOW_S * rate}"
        )
    return ModelSpec(
        directory=directory.resolve(),
        name=str(data["name"]),
        corpus=str(data["corpus"]),
        classes=tuple(classes),
        sample_rate=rate,
        window_samples=window,
        features=features,
        files=files,
        manifest=data,
    )


def bundled_models() -> list[ModelSpec]:
    """Every bundled model directory that has a manifest (package data)."""
    if not BUNDLED_DIR.is_dir():
        return []
    return [
        load_model_dir(d) for d in sorted(BUNDLED_DIR.iterdir()) if (d / "manifest.json").is_file()
    ]


def _bundled(corpus: str) -> Path:
    directory = BUNDLED_DIR / f"{corpus}-{DEFAULT_ARCH}"
    if not (directory / "manifest.json").is_file():
        have = [d.name for d in sorted(BUNDLED_DIR.glob("*")) if (d / "manifest.json").is_file()]
        raise ManifestError(
            f"no bundled model {directory.name} (bundled: {have or 'none'}); "
            "reinstall plainsight or pass a model directory"
        )
    return directory


def resolve_models(model: str | Path | list | tuple = "default") -> list[ModelSpec]:
    """'default' | '<corpus>' (bundled <corpus>-compact) | a directory | a list of those.

    A comma-separated string is treated as a list (CLI convenience).
    """
    if isinstance(model, (list, tuple)):
        items = list(model)
    elif isinstance(model, str) and "," in model:
        items = [part.strip() for part in model.split(",") if part.strip()]
    else:
        items = [model]
    if not items:
        raise ManifestError("no model given")
    specs = []
    for item in items:
        text = str(item)
        if text == "default":
            specs.append(load_model_dir(_bundled(DEFAULT_CORPUS)))
        elif Path(text).is_dir():
            specs.append(load_model_dir(text))
        elif "/" not in text and (BUNDLED_DIR / f"{text}-{DEFAULT_ARCH}").is_dir():
            specs.append(load_model_dir(_bundled(text)))
        elif "/" not in text and (BUNDLED_DIR / text).is_dir():
            specs.append(load_model_dir(BUNDLED_DIR / text))
        else:
            raise ManifestError(f"model {text!r}: not 'default', a bundled model or a directory")
    return specs
