"""The evaluation pipeline: mask held-out clips through the runtime, score clean vs masked.

Everything runs through the device runtime (plainsight.Masker for masking, exported
forward graphs through plainsight.backends for scoring); torch is never imported.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from plainsight import corpora
from plainsight.backends import load_graph
from plainsight.evaluate import metrics
from plainsight.manifest import ModelSpec, load_model_dir
from plainsight.masker import Masker

SAMPLE_RATE = 16000
ARTIFACTS_ENV = "PLAINSIGHT_ARTIFACTS"
DEFAULT_LIMITS = {"emodb": 0, "ravdess": 128}  # 0 = all test clips (EmoDB 107); RAVDESS 16/class
DEFAULT_ASR_LIMIT = 42
NOISE_SEED = 1234


@dataclass
class Clip:
    utt: corpora.Utterance
    audio: np.ndarray  # mono float32, 16 kHz
    reference: str

    @property
    def seconds(self) -> float:
        return len(self.audio) / SAMPLE_RATE


def balanced_order(utts: list[corpora.Utterance]) -> list[corpora.Utterance]:
    """Round-robin over classes (each class sorted by path): any prefix is class-balanced."""
    by_class: dict[str, list[corpora.Utterance]] = {}
    for u in sorted(utts, key=lambda u: str(u.path)):
        by_class.setdefault(u.label, []).append(u)
    queues = [by_class[c] for c in sorted(by_class)]
    out = []
    for i in range(max(len(q) for q in queues)):
        out.extend(q[i] for q in queues if i < len(q))
    return out


def test_clips(data_root: str | os.PathLike, corpus: str, limit: int = 0) -> list[Clip]:
    """The held-out test speakers' clips, class-balanced order, first `limit` (0 = all)."""
    utts = [u for u in corpora.list_corpus(data_root, corpus) if corpora.split_of(u) == "test"]
    if not utts:
        raise corpora.CorpusError(f"no test-speaker clips found for {corpus} under {data_root}")
    ordered = balanced_order(utts)
    if limit and limit > 0:
        ordered = ordered[:limit]
    texts = corpora.TEXTS[corpus]
    return [Clip(u, corpora.load_audio(u.path, SAMPLE_RATE), texts[u.text_id]) for u in ordered]


# ----- scoring through exported forward graphs ----------------------------------------------
class Scorer:
    """Classify whole clips with a model directory's forward graph (no gradient needed).

    Protocol of the training report (an attacker's natural reading): mean logits of
    window-sized frames with hop window/2 covering the whole clip, the last one ending at
    the clip's end; a short clip is one centred, zero-padded window. These are the very
    windows `Masker.mask` optimises (same grid, same centring), so the white-box figure is an
    aligned listener's: benchmarks/listener_alignment.py scores offset grids.
    """

    def __init__(self, spec: ModelSpec, backend: str = "onnx", threads: int = 1, batch: int = 8):
        self.spec = spec
        self.name = spec.name
        self.role = str(spec.manifest.get("role", "?"))
        self.classes = list(spec.classes)
        self.window = spec.window_samples
        graph = "forward" if spec.has_graph("forward") else "grad"
        self.graph = load_graph(spec, graph, backend, threads)
        self.uses_grad_graph = graph == "grad"
        self.batch = batch
        # Cross-corpus panel members: scoring-corpus label -> model class (others not scored).
        self.label_map = spec.manifest.get("label_map")

    def _logits(self, windows: np.ndarray) -> np.ndarray:
        out = []
        c = len(self.classes)
        for s in range(0, len(windows), self.batch):
            chunk = windows[s : s + self.batch]
            target = np.full((len(chunk), c), 1.0 / c, np.float32) if self.uses_grad_graph else None
            logits, _ = self.graph.run(chunk, target)
            out.append(logits)
        return np.concatenate(out)

    def clip_logits(self, audios: list[np.ndarray]) -> np.ndarray:
        """[n_clips, C] mean window logits; all windows of all clips batched together."""
        wins = [clip_windows(a, self.window) for a in audios]
        logits = self._logits(np.concatenate(wins)).astype(np.float64)
        bounds = np.cumsum([0] + [len(w) for w in wins])
        return np.stack(
            [logits[a:b].mean(axis=0) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
        )

    def report(self, audios: list[np.ndarray], labels: list[str]) -> dict:
        true, pred = predictions(self, audios, labels)
        return metrics.classification_report(true, pred, self.classes) | {"model": self.name}


def predictions(scorer, audios: list, labels: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(true, predicted) class indices of a clip scorer (anything with `clip_logits` and
    `classes`) on the clips its label map keeps."""
    audios, labels = apply_label_map(getattr(scorer, "label_map", None), audios, labels)
    true = np.array([scorer.classes.index(lab) for lab in labels], int)
    return true, scorer.clip_logits(audios).argmax(axis=1)


def apply_label_map(label_map: dict | None, audios: list, labels: list[str]):
    """Keep the clips whose label the map knows, relabelled (no map: unchanged)."""
    if label_map is None:
        return audios, labels
    keep = [i for i, lab in enumerate(labels) if lab in label_map]
    return [audios[i] for i in keep], [label_map[labels[i]] for i in keep]


def clip_windows(audio: np.ndarray, length: int) -> np.ndarray:
    """Windows of `length`, hop length/2, covering the clip (last ends at its end);
    a short clip gives one centred, zero-padded window."""
    if len(audio) <= length:
        out = np.zeros((1, length), np.float32)
        start = (length - len(audio)) // 2
        out[0, start : start + len(audio)] = audio
        return out
    starts = list(range(0, len(audio) - length + 1, length // 2))
    if starts[-1] != len(audio) - length:
        starts.append(len(audio) - length)
    return np.stack([audio[s : s + length] for s in starts]).astype(np.float32)


def artifacts_root() -> Path | None:
    """$PLAINSIGHT_ARTIFACTS, else export/artifacts of the source checkout, if present."""
    env = os.environ.get(ARTIFACTS_ENV)
    if env:
        return Path(env)
    guess = Path(__file__).resolve().parents[3] / "export" / "artifacts"
    return guess if guess.is_dir() else None


def find_attackers(corpus: str, explicit: str | None = None) -> list[ModelSpec]:
    """Attacker model dirs: --attackers a,b or every <artifacts>/<corpus>-attacker-* with a
    graph (numpy statistics members of the panel are scored by evaluate.panel.load_panel)."""
    if explicit:
        return [load_model_dir(p.strip()) for p in explicit.split(",") if p.strip()]
    root = artifacts_root()
    if root is None:
        return []
    return [
        load_model_dir(d)
        for d in sorted(root.glob(f"{corpus}-attacker-*"))
        if (d / "manifest.json").is_file() and not is_stats_member(d)
    ]


def is_stats_member(directory: Path) -> bool:
    """A numpy statistics member of the panel (False for a graph dir or a broken path,
    which load_model_dir then reports)."""
    import json

    try:
        manifest = json.loads((Path(directory) / "manifest.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(manifest, dict) and manifest.get("format") == "plainsight-stats-1"


def find_artifact(corpus: str, name: str) -> Path | None:
    root = artifacts_root()
    if root is None:
        return None
    d = root / f"{corpus}-{name}"
    return d if (d / "manifest.json").is_file() else None


# ----- conditions -----------------------------------------------------------------------------
@dataclass
class Condition:
    """One processed version of the clips (clean, masked at a setting, noise control)."""

    name: str
    audios: list[np.ndarray]
    settings: dict = field(default_factory=dict)
    mask_seconds: float = 0.0

    def snrs(self, clean: list[np.ndarray]) -> list[float]:
        return [metrics.snr_db(c, a) for c, a in zip(clean, self.audios, strict=True)]


def mask_clips(masker: Masker, clips: list[Clip], progress=None) -> Condition:
    out, spent = [], 0.0
    for clip in clips:
        start = time.perf_counter()
        masked = masker.mask(clip.audio, SAMPLE_RATE)
        spent += time.perf_counter() - start
        if masked.shape != clip.audio.shape:
            raise RuntimeError(f"masker changed the length of {clip.utt.path.name}")
        out.append(masked)
        if progress is not None:
            progress.update(1)
    return Condition("masked", out, masker.settings(), spent)


def noise_control(clean: list[np.ndarray], processed: list[np.ndarray], seed: int = NOISE_SEED):
    """Random +/-a sign noise with a = RMS of each clip's perturbation: the same SNR."""
    rng = np.random.default_rng(seed)
    out = []
    for c, p in zip(clean, processed, strict=True):
        delta = p.astype(np.float64) - c
        amplitude = float(np.sqrt(np.mean(delta**2)))
        sign = rng.integers(0, 2, size=len(c)) * 2.0 - 1.0
        out.append(np.clip(c + amplitude * sign, -1.0, 1.0).astype(np.float32))
    return out


def quality(clean, processed, pesq_stoi_clips: int = 0, stoi_clips: int | None = None) -> dict:
    """Per-clip SNR (all clips), PESQ-wb on the first `pesq_stoi_clips` clips and STOI on
    the first `stoi_clips` (default the same; STOI costs ~0.4 s per clip, PESQ ~0.07 s)."""
    snr = [metrics.snr_db(c, p) for c, p in zip(clean, processed, strict=True)]
    out = {"snr_db": metrics.distribution(snr), "per_clip_snr_db": snr}
    if pesq_stoi_clips:
        pairs = list(zip(clean, processed, strict=True))
        n_stoi = pesq_stoi_clips if stoi_clips is None else stoi_clips
        pesq_v = [metrics.pesq_wb(c, p) for c, p in pairs[:pesq_stoi_clips]]
        stoi_v = [metrics.stoi(c, p) for c, p in pairs[:n_stoi]]
        out |= {
            "pesq_wb": metrics.distribution(pesq_v),
            "stoi": metrics.distribution(stoi_v),
        }
    return out


class OffsetListener:
    """A listener whose window grid starts `cut` samples after the masker's: it hears every
    clip from there on, as if its stream began there (at least one sample is kept). Everything
    but `report` is the wrapped scorer's."""

    def __init__(self, scorer, cut: int):
        self._scorer, self.cut = scorer, int(cut)

    def __getattr__(self, name):
        return getattr(self._scorer, name)

    def report(self, audios, labels) -> dict:
        cropped = [a[min(self.cut, len(a) - 1) :] for a in audios]
        return self._scorer.report(cropped, labels)


def score(scorers: list[Scorer], audios, labels) -> dict:
    return {s.name: s.report(audios, labels) for s in scorers}


def transcribe_all(transcriber, audios, language: str, progress=None) -> list[str]:
    hyps = []
    for audio in audios:
        hyps.append(transcriber.transcribe(audio, language))
        if progress is not None:
            progress.update(1)
    return hyps
