"""The held-out attacker panel (issue 9): development and final members, scored torch-free.

Members live in <artifacts>/<corpus>-attacker-{dev,final}-<family>-s<seed>/ with "panel" in
their manifest. Members with ONNX forward graphs are scored by `pipeline.Scorer`; the
utterance-statistics members (MFCC functionals, openSMILE eGeMAPSv02) are plain numpy
parameters (.npy files with sha256 in manifest.json, no pickles) scored here by `StatsScorer`
with the same clip protocol (mean of per-window scores over 2 s windows, hop 1 s).
The two attackers from before the panel (no "panel" key) count as development members.
"""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path

import numpy as np

from plainsight.evaluate import metrics
from plainsight.evaluate.pipeline import Scorer, artifacts_root, clip_windows, predictions
from plainsight.features import FeatureConfig, log_mel
from plainsight.manifest import ManifestError, load_model_dir, sha256_of

PANELS = ("dev", "final")
# `plainsight evaluate --panel`: one panel, or both; final and all add the adaptive members.
PANEL_CHOICES = ("dev", "final", "all")
STATS_FORMAT = "plainsight-stats-1"
WINDOW = 32000
# Labels both corpora share, EmoDB name -> RAVDESS name (boredom, calm, surprised are not shared).
SHARED_LABELS = {
    "anger": "angry",
    "disgust": "disgust",
    "fear": "fearful",
    "happiness": "happy",
    "sadness": "sad",
    "neutral": "neutral",
}


def shared_classes(corpus: str) -> list[str]:
    """The shared labels under `corpus`'s own names, in EmoDB's class order."""
    return list(SHARED_LABELS) if corpus == "emodb" else list(SHARED_LABELS.values())


def shared_label_map(from_corpus: str, to_corpus: str) -> dict[str, str]:
    """Label names of `from_corpus` -> names of `to_corpus`, shared labels only."""
    return dict(zip(shared_classes(from_corpus), shared_classes(to_corpus), strict=True))


# ----- utterance-statistics features (numpy; training in export/ uses these same functions) --
MFCC_FEATURES = FeatureConfig(win_length=512, n_fft=512, n_mels=64, f_min=60.0, f_max=7600.0)
N_MFCC = 20


def _dct(n_in: int, n_out: int) -> np.ndarray:
    n = np.arange(n_in)[:, None]
    k = np.arange(n_out)[None, :]
    mat = np.cos(np.pi * (n + 0.5) * k / n_in) * np.sqrt(2.0 / n_in)
    mat[:, 0] /= np.sqrt(2.0)
    return mat


def mfcc_functionals(window: np.ndarray) -> np.ndarray:
    """20 MFCC + deltas; mean, std, 10th and 90th percentile over frames: 160 values."""
    logmel = log_mel(window.astype(np.float32), MFCC_FEATURES, standardise=False)
    mfcc = logmel.astype(np.float64) @ _dct(MFCC_FEATURES.n_mels, N_MFCC)  # [T, 20]
    padded = np.pad(mfcc, ((2, 2), (0, 0)), mode="edge")
    delta = sum(k * (padded[2 + k : len(padded) - 2 + k] - padded[2 - k : len(padded) - 2 - k])
                for k in (1, 2)) / 10.0  # fmt: skip
    both = np.concatenate([mfcc, delta], axis=1)
    p10, p90 = np.percentile(both, [10, 90], axis=0)
    return np.concatenate([both.mean(0), both.std(0), p10, p90]).astype(np.float32)


_SMILE = None


def egemaps_functionals(window: np.ndarray) -> np.ndarray:
    """openSMILE eGeMAPSv02 functionals (88 values) of one 16 kHz window (eval extra)."""
    global _SMILE
    if _SMILE is None:
        import opensmile  # the `eval` extra; never needed by the device runtime

        _SMILE = opensmile.Smile(
            feature_set=opensmile.FeatureSet.eGeMAPSv02,
            feature_level=opensmile.FeatureLevel.Functionals,
        )
    values = _SMILE.process_signal(window.astype(np.float32), 16000).to_numpy()[0]
    return np.nan_to_num(values.astype(np.float32))


_WHISPER = None


def whisper_embedding(window: np.ndarray) -> np.ndarray:
    """Whisper base's encoder (the evaluation's ASR weights, int8, 1 thread) on one 2 s
    window: mean and std of its 100 output frames, 1024 values. An embedding of a large
    pretrained speech model with a small classifier on top, as a cloud would build its
    emotion model (the `eval` extra; never needed by the device runtime)."""
    global _WHISPER
    if _WHISPER is None:
        import ctranslate2
        from faster_whisper.feature_extractor import FeatureExtractor

        from plainsight.evaluate.whisper_weights import ensure_model_dir

        model = ctranslate2.models.Whisper(
            str(ensure_model_dir()), device="cpu", compute_type="int8", intra_threads=1
        )
        _WHISPER = model, FeatureExtractor(feature_size=80)
    model, extractor = _WHISPER
    mel = extractor(window.astype(np.float32), padding=0)[None]  # [1, 80, 200]
    hidden = np.asarray(model.encode(ctranslate2_view(mel), to_cpu=True))[0]  # [100, 512]
    return np.concatenate([hidden.mean(0), hidden.std(0)]).astype(np.float32)


def ctranslate2_view(array: np.ndarray):
    import ctranslate2

    return ctranslate2.StorageView.from_array(np.ascontiguousarray(array, np.float32))


_WHISPER_LAYERS: dict[int, tuple] = {}


def whisper_layer_embedding(window: np.ndarray, depth: int) -> np.ndarray:
    """Whisper base's hidden state after `depth` of its 6 encoder blocks (numpy, float32, from
    the same pinned weights) on one 2 s window: mean and std of its 100 frames, 1024 values.
    The middle layers carry more emotion than the output (`whisper_encoder`)."""
    if depth not in _WHISPER_LAYERS:
        from faster_whisper.feature_extractor import FeatureExtractor

        from plainsight.evaluate.whisper_encoder import WhisperEncoderNumpy
        from plainsight.evaluate.whisper_weights import ensure_model_dir

        encoder = WhisperEncoderNumpy(ensure_model_dir() / "model.bin", depth)
        _WHISPER_LAYERS[depth] = encoder, FeatureExtractor(feature_size=80)
    encoder, extractor = _WHISPER_LAYERS[depth]
    hidden = encoder(extractor(window.astype(np.float32), padding=0))  # [100, 512]
    return np.concatenate([hidden.mean(0), hidden.std(0)]).astype(np.float32)


FEATURES = {
    "mfcc-functionals": mfcc_functionals,
    "egemaps": egemaps_functionals,
    "whisper-base-encoder": whisper_embedding,
    # after each block, 0 (the convolutions) to 6 (before the final norm): a head after block
    # 3 read EmoDB best in the eighth session's screen
    **{f"whisper-base-l{k}": partial(whisper_layer_embedding, depth=k) for k in range(0, 7)},
}


def window_features(audios: list[np.ndarray], kind: str) -> tuple[np.ndarray, np.ndarray]:
    """Features of every scoring window of every clip, and the clip bounds."""
    wins = [clip_windows(a, WINDOW) for a in audios]
    feats = np.stack([FEATURES[kind](w) for ws in wins for w in ws])
    return feats, np.cumsum([0] + [len(w) for w in wins])


# ----- numpy classifiers ------------------------------------------------------------------
def linear_scores(x: np.ndarray, params: dict) -> np.ndarray:
    """Logistic regression / linear SVM (one-vs-rest): x @ coef.T + intercept."""
    return x @ params["coef"].T + params["intercept"]


def svc_scores(x: np.ndarray, params: dict) -> np.ndarray:
    """sklearn SVC decision_function (one-vs-one, turned one-vs-rest as sklearn does)."""
    sv = params["support_vectors"]
    if params["kernel"] == "linear":
        gram = x @ sv.T
    else:  # rbf
        sq = (x**2).sum(1)[:, None] + (sv**2).sum(1)[None, :] - 2.0 * x @ sv.T
        gram = np.exp(-float(params["gamma"]) * np.maximum(sq, 0.0))
    n_support = params["n_support"].astype(int)
    start = np.concatenate([[0], np.cumsum(n_support)])
    dual, intercept = params["dual_coef"], params["intercept"]
    n_classes = len(n_support)
    votes = np.zeros((len(x), n_classes))
    confidence = np.zeros((len(x), n_classes))
    k = 0
    for i in range(n_classes):
        for j in range(i + 1, n_classes):
            si, sj = slice(start[i], start[i + 1]), slice(start[j], start[j + 1])
            dec = gram[:, si] @ dual[j - 1, si] + gram[:, sj] @ dual[i, sj] + intercept[k]
            votes[dec >= 0, i] += 1  # sklearn: a tie goes to i
            votes[dec < 0, j] += 1
            confidence[:, i] += dec
            confidence[:, j] -= dec
            k += 1
    return votes + confidence / (3.0 * (np.abs(confidence) + 1.0))


CLASSIFIERS = {"linear": linear_scores, "svc": svc_scores}


def load_stats_params(directory: Path, manifest: dict) -> dict:
    """The member's arrays (sha256-checked .npy, no pickles) plus its scalar settings."""
    params = dict(manifest["classifier"])
    for fname, meta in manifest["files"].items():
        path = directory / fname
        if not path.is_file() or sha256_of(path) != meta["sha256"]:
            raise ManifestError(f"{path}: missing or sha256 differs from manifest.json")
        params[Path(fname).stem] = np.load(path, allow_pickle=False).astype(np.float64)
    return params


class StatsScorer:
    """Utterance-statistics member: standardised window functionals -> numpy classifier."""

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)
        manifest = json.loads((self.directory / "manifest.json").read_text())
        if manifest.get("format") != STATS_FORMAT:
            raise ManifestError(f"{self.directory}: not a {STATS_FORMAT} member")
        self.manifest = manifest
        self.name = manifest["name"]
        self.role = manifest.get("role", "attacker")
        self.family = manifest["family"]
        self.classes = list(manifest["classes"])
        self.label_map = manifest.get("label_map")
        self.params = load_stats_params(self.directory, manifest)

    def window_scores(self, feats: np.ndarray) -> np.ndarray:
        x = (feats - self.params["scaler_mean"]) / self.params["scaler_scale"]
        return CLASSIFIERS[self.params["type"]](x, self.params)

    def clip_logits(self, audios: list[np.ndarray]) -> np.ndarray:
        feats, bounds = window_features(audios, self.manifest["features_kind"])
        scores = self.window_scores(feats.astype(np.float64))
        return np.stack([scores[a:b].mean(0) for a, b in zip(bounds[:-1], bounds[1:], strict=True)])

    def report(self, audios: list[np.ndarray], labels: list[str]) -> dict:
        true, pred = predictions(self, audios, labels)
        return metrics.classification_report(true, pred, self.classes) | {"model": self.name}


def family_of(manifest: dict) -> str:
    return str(manifest.get("family") or manifest.get("arch", "?"))


def member_dirs(corpus: str, which: str, root: Path | None = None) -> list[Path]:
    """Model dirs <root>/<corpus>-attacker-* of one panel (no "panel" key = dev)."""
    if which not in PANELS:
        raise ValueError(f"unknown panel {which!r}; choose dev or final")
    root = root or artifacts_root()
    if root is None:
        return []
    out = []
    for d in sorted(Path(root).glob(f"{corpus}-attacker-*")):
        if (d / "manifest.json").is_file():
            manifest = json.loads((d / "manifest.json").read_text())
            if manifest.get("panel", "dev") == which:
                out.append(d)
    return out


def load_member(directory: str | Path, backend: str = "onnx", threads: int = 1):
    """A scorer for one member dir (ONNX graph -> Scorer, numpy statistics -> StatsScorer)."""
    directory = Path(directory)
    manifest = json.loads((directory / "manifest.json").read_text())
    if manifest.get("format") == STATS_FORMAT:
        return StatsScorer(directory)
    scorer = Scorer(load_model_dir(directory), backend, threads)
    scorer.family = family_of(manifest)
    return scorer


def adaptive_dirs(corpus: str, root: Path | None = None) -> list[Path]:
    """Adaptive attackers <root>/<corpus>-adaptive-* (retrained on masked audio)."""
    root = root or artifacts_root()
    if root is None:
        return []
    found = sorted(Path(root).glob(f"{corpus}-adaptive-*"))
    return [d for d in found if (d / "manifest.json").is_file()]


# Masker settings that decide what audio an adaptive attacker was trained on.
MASKER_KEYS = (
    "models",
    "method",
    "steps",
    "eps",
    "snr_db",
    "objective",
    "envelope",
    "overlap",
    "grid_shift_ms",
    "shaping",
    "gain_db",
)
# The code that turns those settings into audio: a change there changes the masked audio.
MASKER_SOURCES = (
    "masker.py",
    "blockmask.py",
    "resample.py",
    "features.py",
    "shaping.py",
    "gainfield.py",
)


def masker_source_sha256() -> str:
    """sha256 of the runtime's masking code (recorded with an adaptive member's masker)."""
    import hashlib

    package = Path(__file__).resolve().parents[1]
    digest = hashlib.sha256()
    for name in MASKER_SOURCES:
        digest.update((package / name).read_bytes())
    return digest.hexdigest()


def masker_differences(a: dict, b: dict) -> list[str]:
    """The Masker.settings() keys in which two maskers differ in the audio they produce
    (backend and threads aside), plus `masker_source_sha256` when both record the masking
    code and it differs."""

    def fields(s: dict) -> dict:
        f = {k: json.dumps(s.get(k)) for k in MASKER_KEYS}
        f["privacy"] = json.dumps(s.get("privacy", "mask"))
        f["neutralize_strength"] = json.dumps(s.get("neutralize_strength"))
        f["neutralize_reference"] = json.dumps(s.get("neutralize_reference"))  # None: own
        return f

    fa, fb = fields(a), fields(b)
    differ = [k for k in fa if fa[k] != fb[k]]
    code_a, code_b = a.get("masker_source_sha256"), b.get("masker_source_sha256")
    if code_a is not None and code_b is not None and code_a != code_b:
        differ.append("masker_source_sha256")
    return differ


def same_masker(a: dict, b: dict) -> bool:
    """Do two Masker.settings() produce the same audio (backend and threads aside)? When
    both record `masker_source_sha256`, the masking code must match too."""
    return not masker_differences(a, b)


def training_masker(directory: Path) -> dict | None:
    """The Masker.settings() an adaptive member was trained against: its manifest's
    `trained_on_masker`, else (members exported before that key) the `masker` of the
    training report its manifest points to, when the source checkout has it."""
    manifest = json.loads((Path(directory) / "manifest.json").read_text())
    if "trained_on_masker" in manifest:
        return manifest["trained_on_masker"]
    ckpt = Path(manifest.get("checkpoint", {}).get("path", ""))
    if ckpt.suffix != ".pt":
        return None
    report = Path(directory).resolve().parents[2] / ckpt.with_suffix(".report.json")  # repo root
    return json.loads(report.read_text()).get("masker") if report.is_file() else None


def adaptive_mismatch(directory: Path, masker_settings: dict | None) -> str | None:
    """Why an adaptive member is not scored beside this masker; None when it fits (or when
    its training masker is unknown: describe() says so)."""
    trained = training_masker(directory)
    if masker_settings is None or trained is None:
        return None
    current = masker_settings | {"masker_source_sha256": masker_source_sha256()}
    differ = masker_differences(trained, current)
    if not differ:
        return None
    if differ == ["masker_source_sha256"]:
        return "trained against other masking code (the runtime's masking sources changed since)"
    settings = ", ".join(k for k in differ if k != "masker_source_sha256")
    return f"trained against another masker (differs in {settings})"


def adaptive_verdicts(
    corpus: str, root: Path | None = None, masker_settings: dict | None = None
) -> list[tuple[Path, str | None]]:
    """Every adaptive member with the reason it is not scored beside this masker (None: it
    is): the one pass that both evaluation_dirs and adaptive_left_out read."""
    return [(d, adaptive_mismatch(d, masker_settings)) for d in adaptive_dirs(corpus, root)]


def adaptive_left_out(
    corpus: str, which: str | None, root: Path | None = None, masker_settings: dict | None = None
) -> list[dict]:
    """The adaptive members that `evaluation_dirs` leaves out of a final/all panel, each with
    its name and the reason, so that a report never hides a missing adaptive attacker."""
    if which in (None, "dev"):
        return []
    return [
        {"member": json.loads((d / "manifest.json").read_text()).get("name", d.name), "reason": why}
        for d, why in adaptive_verdicts(corpus, root, masker_settings)
        if why is not None
    ]


def evaluation_dirs(
    corpus: str, which: str, root: Path | None = None, masker_settings: dict | None = None
) -> list[Path]:
    """What `plainsight evaluate --panel WHICH` scores: dev, final or all members, plus (with
    final and all) the adaptive attackers trained against this masker's output."""
    if which not in PANEL_CHOICES:
        raise ValueError(f"unknown panel {which!r}; choose one of {', '.join(PANEL_CHOICES)}")
    panels = PANELS if which == "all" else (which,)
    dirs = [d for p in panels for d in member_dirs(corpus, p, root)]
    if which != "dev":
        dirs += [d for d, why in adaptive_verdicts(corpus, root, masker_settings) if why is None]
    return dirs


def describe(directory: Path) -> str:
    """Role shown in evaluation tables: 'dev panel, crnn', 'final panel, egemaps-svm-rbf', ..."""
    manifest = json.loads((Path(directory) / "manifest.json").read_text())
    if manifest.get("role") == "adaptive":
        if training_masker(Path(directory)) is None:
            return f"adaptive, {family_of(manifest)}, training masker not recorded"
        return f"adaptive, {family_of(manifest)}"
    return f"{manifest.get('panel', 'dev')} panel, {family_of(manifest)}"


def load_panel(corpus: str, which: str = "dev", backend: str = "onnx", threads: int = 1):
    """Scorers of a panel: each has .name, .family, .classes, .report(audios_16k, labels).

    `which="final"` is for reported results only: never choose anything with it.
    """
    return [load_member(d, backend, threads) for d in member_dirs(corpus, which)]
