"""`plainsight evaluate`: one operating point, clean vs masked vs noise control, plus curves."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field

import numpy as np

from plainsight import corpora
from plainsight.evaluate import metrics
from plainsight.evaluate.pipeline import (
    DEFAULT_ASR_LIMIT,
    DEFAULT_LIMITS,
    SAMPLE_RATE,
    Clip,
    Scorer,
    find_artifact,
    find_attackers,
    mask_clips,
    noise_control,
    quality,
    score,
    test_clips,
    transcribe_all,
)
from plainsight.manifest import load_model_dir
from plainsight.masker import Masker

STEPS_CURVE = (1, 2, 3, 5, 10)
BUDGET_CURVE = (50.0, 45.0, 40.0, 35.0, 30.0, 25.0, 20.0)
DEFAULT_CURVE_ASR_LIMIT = 14
QUALITY_CLIPS = 96  # PESQ-wb/STOI at the operating point (STOI costs ~0.4 s per clip)
QUALITY_CURVE_CLIPS = 40  # PESQ/STOI per budget point on the first (class-balanced) clips
TARGETS = {
    "whitebox_uar_band": 0.03,
    "attacker_uar_over_chance": 0.10,
    "wer_increase": 0.02,
    "median_snr_db": 35.0,
    "median_pesq_wb": 3.5,
    "median_stoi": 0.95,
}


@dataclass
class EvalConfig:
    corpus: str
    data: str
    masker: dict  # Masker keyword arguments (model, method, steps, eps/snr_db, ...)
    limit: int | None = None  # None: DEFAULT_LIMITS[corpus]
    asr_limit: int = DEFAULT_ASR_LIMIT
    curve_asr_limit: int = DEFAULT_CURVE_ASR_LIMIT
    attackers: str | None = None
    whisper_dir: str | None = None
    whisper_compute: str = "int8"
    whisper_threads: int = 1
    asr: bool = True
    curves: bool = True
    steps_curve: tuple = STEPS_CURVE
    budget_curve: tuple = BUDGET_CURVE
    progress: bool = True
    extra_scorers: list = field(default_factory=list)


class Progress:
    """tqdm bar on stderr (or nothing), with a running description."""

    def __init__(self, enabled: bool, total: int):
        self.bar = None
        if enabled:
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit="step", file=sys.stderr, dynamic_ncols=True)

    def stage(self, text: str):
        if self.bar is not None:
            self.bar.set_description(text)
        return self

    def update(self, n: int = 1):
        if self.bar is not None:
            self.bar.update(n)

    def close(self):
        if self.bar is not None:
            self.bar.close()


def build_scorers(masker: Masker, corpus: str, cfg: EvalConfig, backend: str, threads: int):
    """White-box scorers (the masker's models) and transfer scorers (never give a gradient)."""
    whitebox = [Scorer(spec, backend, threads) for spec in masker.specs]
    used = {str(spec.directory) for spec in masker.specs}
    transfer = []
    specs = find_attackers(corpus, cfg.attackers)
    seed_cnn = find_artifact(corpus, "seed-cnn")
    if seed_cnn is not None and cfg.attackers is None:
        specs.append(load_model_dir(seed_cnn))
    for spec in specs + [load_model_dir(p) for p in cfg.extra_scorers]:
        if str(spec.directory) not in used:
            transfer.append(Scorer(spec, backend, threads))
            used.add(str(spec.directory))
    return whitebox, transfer


def _masker(cfg: EvalConfig, **override) -> Masker:
    kwargs = dict(cfg.masker) | override
    if "snr_db" in override:
        kwargs["eps"] = None
    return Masker(**kwargs)


def _uars(reports: dict) -> dict:
    return {
        name: {"uar": r["uar"], "accuracy": r["accuracy"], "mi_bits": r["mi_bits"]}
        for name, r in reports.items()
    }


def evaluate(cfg: EvalConfig) -> dict:
    started = time.perf_counter()
    limit = DEFAULT_LIMITS[cfg.corpus] if cfg.limit is None else cfg.limit
    clips = test_clips(cfg.data, cfg.corpus, limit)
    labels = [c.utt.label for c in clips]
    clean = [c.audio for c in clips]
    masker = _masker(cfg)
    for spec in masker.specs:
        if spec.corpus != cfg.corpus:
            raise ValueError(f"model {spec.name} is for corpus {spec.corpus}, not {cfg.corpus}")
    settings = masker.settings()
    backend, threads = masker.backend, masker.threads
    whitebox, transfer = build_scorers(masker, cfg.corpus, cfg, backend, threads)
    classes = list(masker.classes)
    n_asr = min(cfg.asr_limit, len(clips)) if cfg.asr else 0
    n_curve_asr = min(cfg.curve_asr_limit, n_asr) if cfg.curves else 0
    total = len(clips) + 3 * n_asr
    if cfg.curves:
        total += len(clips) * (len(cfg.steps_curve) + len(cfg.budget_curve))
        total += n_curve_asr * len(cfg.budget_curve)
    bar = Progress(cfg.progress, total)
    try:
        result = {
            "corpus": cfg.corpus,
            "classes": classes,
            "chance_uar": 1.0 / len(classes),
            "clips": len(clips),
            "test_speakers": corpora.SPLITS[cfg.corpus]["test"],
            "audio_seconds": float(sum(c.seconds for c in clips)),
            "limit": limit,
            "selection": "held-out test speakers, round-robin over classes (class-balanced)",
            "masker": settings,
            "whitebox_models": [s.name for s in whitebox],
            "transfer_models": {s.name: s.role for s in transfer},
        }
        bar.stage("masking")
        masked = mask_clips(masker, clips, bar)
        result["rtf"] = masked.mask_seconds / result["audio_seconds"]
        noisy = noise_control(clean, masked.audios)
        conditions = {"clean": clean, "masked": masked.audios, "noise": noisy}
        result["lengths_equal"] = all(
            len(a) == len(c) for a, c in zip(masked.audios, clean, strict=True)
        )
        result["whitebox"] = {k: score(whitebox, v, labels) for k, v in conditions.items()}
        result["transfer"] = {k: score(transfer, v, labels) for k, v in conditions.items()}
        bar.stage("quality")
        n_q = min(QUALITY_CLIPS, len(clips))
        result["quality"] = {
            k: quality(clean, conditions[k], pesq_stoi_clips=n_q) for k in ("masked", "noise")
        }
        result["quality"]["pesq_stoi_clips"] = n_q
        if n_asr:
            result["asr"] = _asr_block(cfg, clips[:n_asr], conditions, bar)
        if cfg.curves:
            result["curves"] = _curves(
                cfg, clips, labels, whitebox, transfer, n_curve_asr, result.get("asr"), bar
            )
        result["targets"] = check_targets(result)
        result["seconds"] = time.perf_counter() - started
        return result
    finally:
        bar.close()


def _asr_block(cfg: EvalConfig, clips: list[Clip], conditions: dict, bar) -> dict:
    from plainsight.evaluate.asr import Transcriber, wer

    transcriber = Transcriber(
        cfg.whisper_dir, compute_type=cfg.whisper_compute, threads=cfg.whisper_threads
    )
    language = corpora.LANGUAGES[cfg.corpus]
    refs = [c.reference for c in clips]
    out = {
        "language": language,
        "clips": len(clips),
        "model_dir": str(transcriber.model_dir),
        "compute_type": cfg.whisper_compute,
    }
    start = time.perf_counter()
    for name, audios in conditions.items():
        bar.stage(f"whisper {name}")
        hyps = transcribe_all(transcriber, audios[: len(clips)], language, bar)
        out[name] = {"wer": wer(refs, hyps), "hypotheses": hyps}
    out["references"] = refs
    out["seconds_per_clip"] = (time.perf_counter() - start) / (3 * len(clips))
    out["_transcriber"] = transcriber
    return out


def _curves(cfg, clips, labels, whitebox, transfer, n_asr, asr, bar) -> dict:
    clean = [c.audio for c in clips]
    steps_rows = []
    for steps in cfg.steps_curve:
        bar.stage(f"steps curve {steps}")
        method = cfg.masker.get("method") or "ifgsm"
        if method == "fgsm":
            method = "ifgsm"
        masker = _masker(cfg, method=method, steps=steps)
        masked = mask_clips(masker, clips, bar).audios
        steps_rows.append(
            {
                "steps": steps,
                "method": method,
                "whitebox": _uars(score(whitebox, masked, labels)),
                "transfer": _uars(score(transfer, masked, labels)),
            }
        )
    budget_rows = []
    language = corpora.LANGUAGES[cfg.corpus]
    refs = [c.reference for c in clips[:n_asr]]
    if n_asr:
        from plainsight.evaluate.asr import wer

        transcriber = asr["_transcriber"]
        clean_wer = wer(refs, asr["clean"]["hypotheses"][:n_asr])
    for snr in cfg.budget_curve:
        bar.stage(f"budget curve {snr:g} dB")
        masker = _masker(cfg, snr_db=snr)
        masked = mask_clips(masker, clips, bar).audios
        noisy = noise_control(clean, masked)
        row = {
            "snr_db_setting": snr,
            "whitebox": _uars(score(whitebox, masked, labels)),
            "transfer": _uars(score(transfer, masked, labels)),
            "noise_transfer": _uars(score(transfer, noisy, labels)),
            "noise_whitebox": _uars(score(whitebox, noisy, labels)),
            "median_snr_db": metrics.distribution(
                [metrics.snr_db(c, m) for c, m in zip(clean, masked, strict=True)]
            )["median"],
        }
        n_q = min(QUALITY_CURVE_CLIPS, len(clips))
        q = quality(clean[:n_q], masked[:n_q], pesq_stoi_clips=n_q)
        row["median_pesq_wb"] = q["pesq_wb"]["median"]
        row["median_stoi"] = q["stoi"]["median"]
        if n_asr:
            hyps = transcribe_all(transcriber, masked[:n_asr], language, bar)
            row["wer"] = wer(refs, hyps)
            row["wer_clean"] = clean_wer
        budget_rows.append(row)
    return {"steps": steps_rows, "budget": budget_rows, "asr_clips": n_asr}


def check_targets(result: dict) -> dict:
    """Each target at this operating point: measured value, limit, pass/fail."""
    chance = result["chance_uar"]
    out = {}
    for name, rep in result["whitebox"]["masked"].items():
        uar = rep["uar"]
        out[f"whitebox {name} UAR within chance +/- 3 pts"] = {
            "value": uar,
            "limit": [chance - TARGETS["whitebox_uar_band"], chance + TARGETS["whitebox_uar_band"]],
            "ok": abs(uar - chance) <= TARGETS["whitebox_uar_band"],
        }
    for name, rep in result["transfer"]["masked"].items():
        noise = result["transfer"]["noise"][name]["uar"]
        out[f"attacker {name} UAR <= chance + 10 pts"] = {
            "value": rep["uar"],
            "limit": chance + TARGETS["attacker_uar_over_chance"],
            "ok": rep["uar"] <= chance + TARGETS["attacker_uar_over_chance"],
            "noise_control_uar": noise,
            "beats_noise_by": noise - rep["uar"],
        }
    if "asr" in result:
        inc = result["asr"]["masked"]["wer"] - result["asr"]["clean"]["wer"]
        out["WER increase <= 2 pts"] = {
            "value": inc,
            "limit": TARGETS["wer_increase"],
            "ok": inc <= TARGETS["wer_increase"],
        }
    q = result["quality"]["masked"]
    for key, label, limit in (
        ("snr_db", "median SNR >= 35 dB", TARGETS["median_snr_db"]),
        ("pesq_wb", "median PESQ-wb >= 3.5", TARGETS["median_pesq_wb"]),
        ("stoi", "median STOI >= 0.95", TARGETS["median_stoi"]),
    ):
        value = q[key]["median"]
        out[label] = {"value": value, "limit": limit, "ok": value is not None and value >= limit}
    return out


def json_ready(result: dict) -> dict:
    """Drop live objects and numpy scalars so the result can be written as JSON."""

    def clean(value):
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items() if not k.startswith("_")}
        if isinstance(value, (list, tuple)):
            return [clean(v) for v in value]
        if isinstance(value, (np.floating, float)):
            v = float(value)
            return v if np.isfinite(v) else None
        if isinstance(value, np.integer):
            return int(value)
        return value

    return clean(result)


__all__ = ["EvalConfig", "evaluate", "check_targets", "json_ready", "SAMPLE_RATE"]
