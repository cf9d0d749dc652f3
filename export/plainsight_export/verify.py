"""Check an exported model directory against torch autograd on every available backend.

An ensemble directory (manifest "heads") is checked against the sum of its heads' losses.
Per graph file and backend: logits max |diff| <= 1e-4; for grad graphs also gradient cosine
>= 0.9999 and sign agreement >= 0.999 (ignoring |g| < 1e-12) on random noise, synthetic
speech-like audio and, with PLAINSIGHT_DATA set, a real test-speaker utterance; and 10 I-FGSM
steps driven by the backend land on the torch autograd loop's waveform.
Backends: onnxruntime, ai-edge-litert (XNNPACK and built-in kernels), and tflite-runtime in
its own interpreter (PLAINSIGHT_TFLITE_PYTHON or <repo>/.venv-tflite/bin/python), skipped with
the reason when absent.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from plainsight_export import tflite_worker
from plainsight_export.export import sha256_file
from plainsight_export.gradgraph import autograd_reference
from plainsight_export.models import HeadEnsemble, load_checkpoint

REPO_ROOT = Path(__file__).resolve().parents[2]
LOGITS_MAX_ABS = 1e-4
GRAD_COSINE = 0.9999
GRAD_SIGN = 0.999
FIXED_MAX_REL = 1e-4  # hop_fixed (the body's unchanged pooled sum) against torch
GRAD_FLOOR = 1e-12
IFGSM_STEPS = 10
IFGSM_EPS = 0.002
IFGSM_ALPHA = IFGSM_EPS / 4
IFGSM_MAX_ABS = 1e-6  # final waveform vs the torch loop
IFGSM_TIE_REL = 1e-5  # |g| below this fraction of max|g| is a float-level tie for sign()
IFGSM_MAX_TIES = 10  # tie flips allowed over the 10 steps (of 320000 signs)


class VerifyError(RuntimeError):
    """The directory cannot be verified (missing files, checkpoint, hash mismatch)."""


@dataclass
class Check:
    file: str
    backend: str
    case: str
    metric: str
    value: float
    limit: float
    ok: bool
    note: str = ""

    def line(self) -> str:
        mark = "ok  " if self.ok else "FAIL"
        return (
            f"{mark} {self.file:15s} {self.backend:15s} {self.case:12s} "
            f"{self.metric:19s} {self.value:.7g} (limit {self.limit:g}){self.note}"
        )


# ---- inputs -------------------------------------------------------------------------------
def speech_like(n_samples: int, sample_rate: int = 16000, seed: int = 0) -> np.ndarray:
    """Voiced harmonics with a gliding pitch, three formants, syllable envelope and pauses."""
    rng = np.random.default_rng(seed)
    t = np.arange(n_samples) / sample_rate
    f0 = 140.0 + 30.0 * np.sin(2 * np.pi * 0.7 * t) + 5.0 * np.sin(2 * np.pi * 5.5 * t)
    phase = 2 * np.pi * np.cumsum(f0) / sample_rate
    formants = ((600.0, 120.0), (1400.0, 180.0), (2600.0, 250.0))
    voiced = np.zeros(n_samples)
    for h in range(1, 50):
        freq = h * f0
        amp = sum(np.exp(-0.5 * ((freq - fc) / bw) ** 2) for fc, bw in formants) + 0.02
        voiced += np.where(freq < sample_rate / 2, amp / h**0.5, 0.0) * np.sin(h * phase)
    syllables = np.clip(np.sin(2 * np.pi * 3.5 * t + rng.uniform(0, np.pi)), 0, None) ** 0.7
    audio = voiced * syllables + 0.01 * rng.standard_normal(n_samples)
    return (0.3 * audio / np.abs(audio).max()).astype(np.float32)


def real_speech(corpus: str, n_samples: int) -> np.ndarray | None:
    root = os.environ.get("PLAINSIGHT_DATA")
    if not root:
        return None
    from plainsight import corpora

    utts = sorted(corpora.split_corpus(corpora.list_corpus(root, corpus))["test"], key=str)
    audio = corpora.load_audio(utts[0].path)
    if audio.shape[0] < n_samples:
        audio = np.pad(audio, (0, n_samples - audio.shape[0]))
    start = (audio.shape[0] - n_samples) // 2
    return audio[start : start + n_samples].astype(np.float32)


def verification_inputs(corpus: str, n_samples: int) -> dict[str, np.ndarray]:
    cases = {
        "random": (0.1 * np.random.default_rng(1).standard_normal(n_samples)).astype(np.float32),
        "speech-like": speech_like(n_samples),
    }
    real = real_speech(corpus, n_samples)
    if real is not None:
        cases["real-speech"] = real
    return cases


def targets_for(logits: np.ndarray) -> np.ndarray:
    """Vary the objective across cases: own prediction, uniform, a fixed other class, ..."""
    n, c = logits.shape
    out = np.zeros((n, c), np.float32)
    for i in range(n):
        kind = i % 3
        if kind == 0:
            out[i, int(np.argmax(logits[i]))] = 1.0
        elif kind == 1:
            out[i] = 1.0 / c
        else:
            out[i, (int(np.argmax(logits[i])) + 1) % c] = 1.0
    return out


# ---- backends -----------------------------------------------------------------------------
def tflite_python() -> str | None:
    candidates = [os.environ.get("PLAINSIGHT_TFLITE_PYTHON"), REPO_ROOT / ".venv-tflite/bin/python"]
    for cand in candidates:
        if cand and Path(cand).is_file():
            return str(cand)
    return None


def run_tflite_subprocess(path: Path, payload: dict, xnnpack: bool = True) -> dict:
    """Run tflite_worker.py under the tflite-runtime interpreter (numpy<2, no torch)."""
    python = tflite_python()
    if python is None:
        raise FileNotFoundError(
            "tflite-runtime interpreter not found (set PLAINSIGHT_TFLITE_PYTHON or create "
            ".venv-tflite with `pip install tflite-runtime 'numpy<2'`)"
        )
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "in.npz", Path(tmp) / "out.npz"
        np.savez(src, **payload)
        cmd = [python, tflite_worker.__file__, str(path), str(src), str(dst)]
        cmd += ["--module", "tflite_runtime"] + ([] if xnnpack else ["--no-xnnpack"])
        proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ})
        if proc.returncode != 0:
            tail = proc.stderr.strip().splitlines()[-1:] or ["(no output)"]
            raise RuntimeError(f"tflite-runtime worker failed: {tail[0]}")
        with np.load(dst) as data:
            return {k: data[k] for k in data.files}


def _run_onnx(path: Path, payload: dict) -> dict:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    has_target = any(i.name == "target" for i in session.get_inputs())
    if "tail" in payload:
        feeds = {i.name: payload[i.name] for i in session.get_inputs()}
        return dict(zip(names, session.run(names, feeds), strict=True))

    def run(x, t):
        feeds = {"waveform": x}
        if has_target:
            feeds["target"] = t
        return dict(zip(names, session.run(names, feeds), strict=True))

    return _drive(run, payload, "grad" in names)


def _run_litert(path: Path, payload: dict, xnnpack: bool) -> dict:
    runner = tflite_worker.TfliteRunner(path, xnnpack=xnnpack)
    if "tail" in payload:
        return tflite_worker.run_feeds(runner, {k: payload[k] for k in runner.inputs})
    return _drive(runner.run, payload, runner.has_grad)


def _drive(run, payload: dict, has_grad: bool) -> dict:
    out = run(payload["waveform"], payload.get("target"))
    if has_grad and "ifgsm_x0" in payload:
        out["ifgsm"], points, grads = tflite_worker.ifgsm(
            lambda x, t: run(x, t)["grad"],
            payload["ifgsm_x0"],
            payload["ifgsm_target"],
            float(payload["eps"]),
            float(payload["alpha"]),
            int(payload["steps"]),
        )
        out["ifgsm_points"], out["ifgsm_grads"] = np.stack(points), np.stack(grads)
    return out


def backend_runs(backend: str):
    """(label, callable(path, payload) -> outputs) for each runtime of a backend."""
    if backend == "onnx":
        return [("onnxruntime", _run_onnx)]
    return [
        ("litert-xnnpack", lambda p, d: _run_litert(p, d, True)),
        ("litert-builtin", lambda p, d: _run_litert(p, d, False)),
        ("tflite-runtime", lambda p, d: run_tflite_subprocess(p, d, True)),
    ]


# ---- comparison ---------------------------------------------------------------------------
def grad_metrics(grad: np.ndarray, ref: np.ndarray) -> tuple[float, float]:
    g, r = grad.astype(np.float64).ravel(), ref.astype(np.float64).ravel()
    denom = np.linalg.norm(g) * np.linalg.norm(r)
    cosine = float(g @ r / denom) if denom > 0 else 0.0
    mask = np.abs(r) >= GRAD_FLOOR
    sign = float(np.mean(np.sign(g[mask]) == np.sign(r[mask]))) if mask.any() else 0.0
    return cosine, sign


def ifgsm_checks(model, out: dict, ref_final: np.ndarray, target: np.ndarray) -> list:
    """(metric, value, limit, ok) for the I-FGSM loop driven by a backend.

    Lockstep: at every point of the backend's own trajectory, torch's gradient sign must agree
    wherever |g| is not a float-level tie (< IFGSM_TIE_REL * max|g|). Free run: the final
    waveform equals torch's loop to IFGSM_MAX_ABS; a tie flip moves one sample by 2 alpha and
    the two loops then legitimately part, so divergence is accepted only if explained by ties.
    """
    genuine = ties = 0
    for point, grad in zip(out["ifgsm_points"], out["ifgsm_grads"], strict=True):
        ref = reference(model, point, target)[1]
        flipped = np.sign(grad) != np.sign(ref)
        tie = np.abs(ref) < IFGSM_TIE_REL * np.abs(ref).max()
        genuine += int(np.sum(flipped & ~tie))
        ties += int(np.sum(flipped & tie))
    diff = float(np.abs(out["ifgsm"].astype(np.float64) - ref_final).max())
    explained = diff > IFGSM_MAX_ABS and ties > 0 and genuine == 0
    return [
        ("lockstep sign flips", float(genuine), 0.0, genuine == 0, ""),
        ("lockstep tie flips", float(ties), float(IFGSM_MAX_TIES), ties <= IFGSM_MAX_TIES, ""),
        (
            "free-run max|diff|",
            diff,
            IFGSM_MAX_ABS,
            diff <= IFGSM_MAX_ABS or explained,
            " - loops parted after a tie flip" if explained else "",
        ),
    ]


def hop_inputs(
    manifest: dict, waveforms: np.ndarray, targets: np.ndarray, graph: str = "hop", model=None
) -> dict:
    """A stream graph's inputs for whole windows, computed as the runtime computes them;
    hop_crop's `fixed` comes from torch (HopFixedGraph of `model`), so that its check does
    not lean on the exported hop_fixed."""
    from plainsight.features import FeatureConfig
    from plainsight.masker import past_log_mel

    from plainsight_export.gradgraph import HopFixedGraph

    layout = manifest["graphs"][graph]
    cfg = FeatureConfig.from_dict(manifest["features"])
    past = np.stack([past_log_mel(w, cfg, layout["past_frames"]) for w in waveforms])
    tail = np.ascontiguousarray(waveforms[:, layout["tail_start"] :])
    feeds = {"past": past, "tail": tail, "target": targets}
    if graph == "hop_crop":
        fixed_graph = HopFixedGraph(model, int(manifest["window_samples"]), layout["hop_samples"])
        with torch.no_grad():
            feeds["fixed"] = fixed_graph(torch.from_numpy(past)).numpy()
        feeds["past_crop"] = np.ascontiguousarray(past[:, layout["crop_start"] :])
    return feeds


def hop_checks(out: dict, i: int, ref_logits, ref_hop_grad, hop: int) -> list:
    """(metric, value, limit, ok) of the hop graph against autograd on the whole window: the
    logits, and the gradient on the hop (the last `hop` samples)."""
    diff = float(np.abs(out["logits"][i] - ref_logits).max())
    cosine, sign = grad_metrics(out["grad"][i, -hop:], ref_hop_grad)
    return [
        ("logits max|diff|", diff, LOGITS_MAX_ABS, diff <= LOGITS_MAX_ABS),
        ("hop grad cosine", cosine, GRAD_COSINE, cosine >= GRAD_COSINE),
        ("hop grad sign agree", sign, GRAD_SIGN, sign >= GRAD_SIGN),
    ]


def reference(model, waveforms: np.ndarray, targets: np.ndarray):
    logits, grad = autograd_reference(model, torch.from_numpy(waveforms), torch.from_numpy(targets))
    return logits.numpy(), grad.numpy()


def torch_ifgsm(model, x0: np.ndarray, target: np.ndarray) -> np.ndarray:
    return tflite_worker.ifgsm(
        lambda x, t: reference(model, x, t)[1], x0, target, IFGSM_EPS, IFGSM_ALPHA, IFGSM_STEPS
    )[0]


def checkpoint_for(directory: Path, manifest: dict, override: Path | None) -> Path:
    ref = manifest.get("checkpoint") or {}
    if override is not None:
        return override
    if not ref.get("path"):
        raise VerifyError(f"{directory}: manifest names no checkpoint; pass --checkpoint")
    return _checked_checkpoint(directory, ref)


def _checked_checkpoint(directory: Path, ref: dict) -> Path:
    """The checkpoint a manifest names, refused if missing or changed since the export."""
    path = REPO_ROOT / ref["path"]
    if not path.is_file():
        raise VerifyError(f"{directory}: checkpoint {ref['path']} not found")
    if ref.get("sha256") and sha256_file(path) != ref["sha256"]:
        raise VerifyError(
            f"{directory}: {ref['path']} changed since this export (sha256 differs); rebuild"
        )
    return path


def reference_model(directory: Path, manifest: dict, override: Path | None):
    """The torch model a directory was exported from: its checkpoint, or for an ensemble
    (manifest "heads") a HeadEnsemble of every head's checkpoint."""
    heads = manifest.get("heads")
    if not heads:
        return load_checkpoint(checkpoint_for(directory, manifest, override))
    if override is not None:
        raise VerifyError(f"{directory}: ensemble heads come from the manifest, not --checkpoint")
    models = [load_checkpoint(_checked_checkpoint(directory, h["checkpoint"])) for h in heads]
    weights = [h.get("loss_weight", 1.0) for h in heads]
    return HeadEnsemble(models, [h["name"] for h in heads], weights).eval()


def verify_dir(
    directory: str | os.PathLike,
    checkpoint: str | os.PathLike | None = None,
    model=None,
    backends: tuple[str, ...] = ("onnx", "tflite"),
    log=print,
) -> list[Check]:
    """All checks of one model directory; raise VerifyError when it cannot be checked."""
    directory = Path(directory)
    try:
        manifest = json.loads((directory / "manifest.json").read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise VerifyError(f"{directory}: unreadable manifest.json ({exc})") from None
    for fname, meta in manifest["files"].items():
        path = directory / fname
        if not path.is_file() or sha256_file(path) != meta["sha256"]:
            raise VerifyError(f"{path}: missing or sha256 differs from manifest")
    if model is None:
        model = reference_model(directory, manifest, checkpoint and Path(checkpoint))
    cases = verification_inputs(manifest["corpus"], int(manifest["window_samples"]))
    names = list(cases)
    waveforms = np.stack([cases[n] for n in names])
    with torch.no_grad():
        clean = model(torch.from_numpy(waveforms)).numpy()
    targets = targets_for(clean)
    ref_logits, ref_grad = reference(model, waveforms, targets)
    x0 = waveforms[1:2]  # speech-like
    attack_target = np.eye(clean.shape[1], dtype=np.float32)[[int(np.argmax(clean[1]))]]
    payload = {"waveform": waveforms, "target": targets}
    checks: list[Check] = []
    ref_attack = None
    for fname, meta in sorted(manifest["files"].items()):
        if meta["backend"] not in backends:
            continue
        is_grad, is_hop = meta["graph"] == "grad", meta["graph"] in ("hop", "hop_crop")
        data = dict(payload) if is_grad else {"waveform": waveforms}
        if meta["graph"].startswith("hop"):
            data = hop_inputs(manifest, waveforms, targets, meta["graph"], model)
        if meta["graph"] == "hop_fixed":
            from plainsight_export.gradgraph import HopFixedGraph

            layout = manifest["graphs"]["hop_fixed"]
            window = int(manifest["window_samples"])
            with torch.no_grad():
                ref_fixed = HopFixedGraph(model, window, layout["hop_samples"])(
                    torch.from_numpy(data["past"])
                ).numpy()
        if is_grad:
            if ref_attack is None:
                ref_attack = torch_ifgsm(model, x0, attack_target)
            data.update(
                ifgsm_x0=x0,
                ifgsm_target=attack_target,
                eps=np.float32(IFGSM_EPS),
                alpha=np.float32(IFGSM_ALPHA),
                steps=np.int64(IFGSM_STEPS),
            )
        for label, runner in backend_runs(meta["backend"]):
            try:
                out = runner(directory / fname, data)
            except FileNotFoundError as exc:
                log(f"skip {fname:15s} {label:15s} {exc}")
                continue
            for i, case in enumerate(names):
                if meta["graph"] == "hop_fixed":  # an intermediate: against torch's
                    scale = max(float(np.abs(ref_fixed[i]).max()), 1e-12)
                    rel = float(np.abs(out["fixed"][i] - ref_fixed[i]).max()) / scale
                    row = ("fixed max|rel diff|", rel, FIXED_MAX_REL, rel <= FIXED_MAX_REL)
                    checks.append(Check(fname, label, case, *row))
                    continue
                if is_hop:  # the gradient on the hop: the last hop_samples of the window
                    hop = manifest["graphs"]["hop"]["hop_samples"]
                    rows = hop_checks(out, i, ref_logits[i], ref_grad[i, -hop:], hop)
                    checks += [Check(fname, label, case, *row) for row in rows]
                    continue
                diff = float(np.abs(out["logits"][i] - ref_logits[i]).max())
                checks.append(
                    Check(
                        fname,
                        label,
                        case,
                        "logits max|diff|",
                        diff,
                        LOGITS_MAX_ABS,
                        diff <= LOGITS_MAX_ABS,
                    )
                )
                if is_grad:
                    cosine, sign = grad_metrics(out["grad"][i], ref_grad[i])
                    checks.append(
                        Check(
                            fname,
                            label,
                            case,
                            "grad cosine",
                            cosine,
                            GRAD_COSINE,
                            cosine >= GRAD_COSINE,
                        )
                    )
                    checks.append(
                        Check(
                            fname,
                            label,
                            case,
                            "grad sign agree",
                            sign,
                            GRAD_SIGN,
                            sign >= GRAD_SIGN,
                        )
                    )
            if is_grad:
                for row in ifgsm_checks(model, out, ref_attack, attack_target):
                    checks.append(Check(fname, label, "ifgsm-10", *row))
            for check in checks:
                if check.file == fname and check.backend == label:
                    log(check.line())
    if not checks:
        raise VerifyError(f"{directory}: no graph could be run on any backend")
    return checks


def main_verify(dirs: list[str], checkpoint: str | None = None) -> int:
    failed = 0
    for directory in dirs:
        print(f"== {directory}")
        try:
            checks = verify_dir(directory, checkpoint)
        except (VerifyError, FileNotFoundError, ValueError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            failed += 1
            continue
        bad = [c for c in checks if not c.ok]
        print(f"{directory}: {len(checks) - len(bad)}/{len(checks)} checks passed")
        failed += bool(bad)
    return 1 if failed else 0
