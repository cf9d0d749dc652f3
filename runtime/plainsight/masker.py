"""The masking engine: FGSM-family perturbations on the raw waveform, torch-free.

Audio of any rate/channels comes in; the perturbation is computed at the models' rate
(16 kHz) on model-sized windows, resampled back to the input rate and added to the
original samples of every channel, so the output keeps the input's length, rate,
channels and quality.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from plainsight.audio import MAX_PEAK, MAX_RATE, MIN_RATE
from plainsight.backends import load_graph, load_stream_graph, resolve_backend
from plainsight.features import FeatureConfig, analysis_window, frame_signal, mel_filterbank
from plainsight.manifest import ManifestError, ModelSpec, resolve_models
from plainsight.resample import resample

METHODS = ("fgsm", "ifgsm", "mifgsm")
# The ONE table of strength presets, chosen from `plainsight evaluate` measurements
# (docs/EVALUATION.md): I-FGSM toward "neutral"; the budget trades hiding against quality.
# medium = 35 dB is the lowest budget that kept median SNR >= 35 dB and PESQ-wb >= 3.5.
# Files (`mask`) take 20 steps, each on the window grid shifted by up to +-20 ms: a listener
# that frames the audio its own way is what a cloud is, and 10 steps on one fixed grid blind
# only a listener on that grid (benchmarks/listener_alignment.py). A stream hop takes 20
# steps on its one window (10 until the stream's graphs skipped the unchanged frames and
# made a step 4x cheaper): the MFCC-statistics attackers read the stream's output far less
# well (EmoDB dev panel 51.6 -> 34.1 % UAR), PESQ rises (3.57 -> 3.70).
_PRESET = {"method": "ifgsm", "steps": 20, "stream_steps": 20, "grid_shift_ms": 20.0}
STRENGTHS = {
    "low": _PRESET | {"snr_db": 40.0, "envelope": False},
    "medium": _PRESET | {"snr_db": 35.0, "envelope": False},
    "high": _PRESET | {"snr_db": 30.0, "envelope": False},
    # The budget shaped like the speech's masking threshold (plainsight.shaping): about 10 dB
    # more perturbation energy at medium's PESQ (SNR ~27-28 dB, PESQ-wb 3.5 on EmoDB's dev
    # panel), which blinds the bundled model on the live path and through Opus 24 kbit/s.
    "perceptual": _PRESET | {"snr_db": 25.0, "envelope": False, "shaping": 0.5},
    # medium after a gain stage within +-3 dB (plainsight.gainfield): the speech re-balanced
    # in broad time-frequency regions, the first change that moves emotion models the device
    # never saw (the largest bound with PESQ-wb >= 3.5 on both development panels). The
    # stream chooses each hop's cells of the field in turn, through the hop graphs.
    "rebalance": _PRESET | {"snr_db": 35.0, "envelope": False, "gain_db": 3.0},
}
MAX_GRID_SHIFT_MS = 1000.0
# Targeted toward neutral: untargeted overshoots below chance and still leaks emotion.
# Models without a neutral class fall back to untargeted.
DEFAULT_OBJECTIVE = "neutral"
FALLBACK_OBJECTIVE = "untargeted"
DEFAULT_STRENGTH = "medium"
MOMENTUM = 1.0
ENVELOPE_MS = 30.0  # smoothing of the local speech envelope
BATCH = 4  # windows per ONNX call (8: same speed, +14 MB RSS); TFLite loops over batch 1
# With overlap=True, mask() attacks windows with this hop (in windows). Off by default: the
# per-step grid shift holds as well for a misaligned listener (EmoDB white-box on grids
# 5 ms-1.5 s later: 28.0 % UAR mean without overlap, 26.6 with it, at twice the cost).
OVERLAP_HOP = 0.5
SEGMENT_WINDOWS = 16  # long audio is optimised in segments of this many windows
# The gain stage (plainsight.gainfield): I-FGSM steps on its coarse grid, and the largest
# gain it may set, in dB (a level ride an equaliser would make, not noise).
GAIN_STEPS = 10
MAX_GAIN_DB = 12.0
# Budget floor where there is signal, in steps of the output's resolution: I-FGSM leaves some
# samples at a fraction of the bound, and below half a step a sample rounds back to the input.
FLOOR_LSB = 2.0
LSB_16 = 2.0**-15  # resolution of 16-bit PCM (stream, and the default)
# Budgets that cannot change a 16-bit sample are refused (issue 11): eps below one LSB, or
# an SNR above MAX_SNR_DB, where even full-scale speech (RMS about -10 dBFS) gets under 1 LSB.
MIN_EPS = 1.0 / 32768.0
# The move of a sample whose steps cancel: just over half an LSB of 16-bit, so that rounding
# to 16-bit PCM moves it by one LSB. Exactly half was a tie, and round-half-even left every
# other such sample unchanged (and two inverse channels rounded apart).
NUDGE = 0.5625 / 32768.0
MAX_SNR_DB = 80.0
# More steps only burn time: the presets use 10, and the cost grows linearly with steps.
MAX_STEPS = 1000
# Privacy tiers: "mask" = the adversarial perturbation alone (imperceptible); "neutralize" =
# flatten pitch contour, loudness dynamics and spectral tilt first (plainsight.neutralize),
# then the same perturbation computed on the neutralised audio.
PRIVACY_TIERS = ("mask", "neutralize")
STREAM = ("hop", "hop_fixed", "hop_crop")  # the stream's optional graphs (perturb_hop)
DEFAULT_PRIVACY = "mask"


def window_starts(length: int, width: int, hop: int) -> np.ndarray:
    """Starts of `width` windows with `hop` covering [0, length); the last ends at the end.
    A signal shorter than one window gets one window at 0 (the caller pads it)."""
    if length <= width:
        return np.zeros(1, int)
    starts = list(range(0, length - width + 1, hop))
    if starts[-1] != length - width:
        starts.append(length - width)
    return np.asarray(starts)


def grid_offsets(steps: int, shift: int) -> np.ndarray:
    """Per-step grid offsets in [-shift, shift] samples: 0 first (one FGSM step stays on
    the own grid), then spread by the golden ratio so that any run of steps covers the range
    evenly; deterministic, so output is reproducible."""
    golden = (math.sqrt(5.0) - 1.0) / 2.0
    k = np.arange(steps)
    return np.round((2.0 * ((k * golden + 0.5) % 1.0) - 1.0) * shift).astype(int)


@lru_cache(maxsize=4)
def fixed_signs(n: int) -> np.ndarray:
    """A fixed pseudo-random +-1 pattern (deterministic, so stream output stays a pure
    function of its input)."""
    signs = np.where(np.random.default_rng(0).random(n) < 0.5, -1.0, 1.0).astype(np.float32)
    signs.flags.writeable = False
    return signs


@lru_cache(maxsize=8)
def _mel_and_window(cfg: FeatureConfig) -> tuple[np.ndarray, np.ndarray]:
    return mel_filterbank(cfg), analysis_window(cfg).astype(np.float32)


def past_log_mel(window: np.ndarray, cfg: FeatureConfig, frames: int) -> np.ndarray:
    """Unstandardised log-mel [frames, mels] of the first `frames` frames of a model window,
    as plainsight.features.log_mel computes it but in float32 and without BLAS: after a
    threaded numpy matmul, OpenBLAS's threads spin, and once per stream hop that doubled the
    hop's CPU time (measured on 2 cores)."""
    fb, analysis = _mel_and_window(cfg)
    framed = frame_signal(np.asarray(window, np.float32), cfg)[:frames] * analysis
    spectrum = np.fft.rfft(framed, n=cfg.n_fft, axis=-1)
    power = (spectrum.real**2 + spectrum.imag**2).astype(np.float32)
    return np.log(np.einsum("tf,fm->tm", power, fb) + np.float32(cfg.log_floor))


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def local_envelope(windows: np.ndarray, valid: np.ndarray, rate: int) -> np.ndarray:
    """Smoothed RMS envelope of each window [B,N], scaled to max 1 over its valid samples."""
    width = max(1, int(rate * ENVELOPE_MS / 1000))
    power = windows.astype(np.float64) ** 2
    kernel = np.ones(width) / width
    env = np.sqrt(np.stack([np.convolve(row, kernel, mode="same") for row in power]))
    env *= valid
    peak = env.max(axis=1, keepdims=True)
    return np.divide(env, peak, out=np.zeros_like(env), where=peak > 0).astype(np.float32)


@dataclass
class _Member:
    spec: ModelSpec
    grad: object
    forward: object | None
    hop: object | None = None  # the stream's hop graph, if the model ships one
    hop_layout: dict | None = None
    hop_fixed: object | None = None  # and the pair that also skips the body's fixed part
    hop_crop: object | None = None
    crop_layout: dict | None = None


class Masker:
    """Hide emotion in speech. See docs/ARCHITECTURE.md "Runtime API"."""

    def __init__(
        self,
        model="default",
        backend: str = "auto",
        threads: int = 1,
        method: str | None = None,
        steps: int | None = None,
        eps: float | None = None,
        snr_db: float | None = None,
        objective: str | None = None,
        envelope: bool | None = None,
        strength: str = DEFAULT_STRENGTH,
        batch: int = BATCH,
        overlap: bool = False,
        progress=None,
        privacy: str = DEFAULT_PRIVACY,
        neutralize_strength: float | None = None,
        neutralize_reference=None,
        stream_steps: int | None = None,
        grid_shift_ms: float | None = None,
        shaping: float | None = None,
        gain_db: float | None = None,
    ):
        """`progress`, if given, is called as progress(step, steps) after every attack step
        (so `steps` times per optimised segment or stream hop): a hook for long work.
        `privacy="neutralize"` runs plainsight.neutralize before the mask, with
        `neutralize_strength` in [0, 1] (default plainsight.neutralize.DEFAULT_STRENGTH)
        and, optionally, `neutralize_reference` (a plainsight.neutralize.Reference: the F0,
        level and tilt medians to pull toward, e.g. a speaker's; default: each clip's own,
        or the stream's running medians). `steps` is what `mask` takes and `stream_steps`
        (default: `steps` if given, else the preset's) what each stream hop takes;
        `grid_shift_ms` is the range of the per-step grid shift of `mask` (0: one grid).
        `shaping` in (0, 1] shapes the perturbation like the speech's masking threshold
        raised to that power (plainsight.shaping; the budget then bounds the optimised
        signal, not each sample of the perturbation); None or 0: flat, as by default.
        `gain_db` > 0 first re-balances the audio by a smooth time-frequency gain within
        +-gain_db (plainsight.gainfield, optimised toward the same objective), then masks
        it; on a stream each hop's cells of the field are chosen once and then kept, in
        one loop with the mask's steps (`rebalance_and_perturb_hop`)."""
        if privacy not in PRIVACY_TIERS:
            raise ValueError(f"privacy must be one of {list(PRIVACY_TIERS)}, got {privacy!r}")
        self.privacy = privacy
        self.neutralize_strength = None
        if privacy == "neutralize":
            from plainsight.neutralize import DEFAULT_STRENGTH as NEUTRAL
            from plainsight.neutralize import check_strength

            strength_n = NEUTRAL if neutralize_strength is None else neutralize_strength
            self.neutralize_strength = check_strength(strength_n)
        elif neutralize_strength is not None or neutralize_reference is not None:
            raise ValueError("neutralize_* options only apply to privacy='neutralize'")
        self.neutralize_reference = neutralize_reference
        if strength not in STRENGTHS:
            raise ValueError(f"strength must be one of {list(STRENGTHS)}, got {strength!r}")
        preset = STRENGTHS[strength]
        if eps is not None and snr_db is not None:
            raise ValueError("give eps or snr_db, not both")
        self.method = method or preset["method"]
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")
        if stream_steps is None:  # steps given: they apply to both paths
            stream_steps = preset["stream_steps"] if steps is None else steps
        steps = preset["steps"] if steps is None else steps
        self.steps = 1 if self.method == "fgsm" else int(steps)
        self.stream_steps = 1 if self.method == "fgsm" else int(stream_steps)
        for name, value in (("steps", self.steps), ("stream_steps", self.stream_steps)):
            if not 1 <= value <= MAX_STEPS:
                raise ValueError(f"{name} must be in 1..{MAX_STEPS}, got {value}")
        shift_ms = preset["grid_shift_ms"] if grid_shift_ms is None else float(grid_shift_ms)
        if not 0 <= shift_ms <= MAX_GRID_SHIFT_MS:  # also refuses NaN
            raise ValueError(
                f"grid_shift_ms must be in [0, {MAX_GRID_SHIFT_MS:g}], got {grid_shift_ms}"
            )
        self.grid_shift_ms = shift_ms
        shaping = preset.get("shaping", 0.0) if shaping is None else float(shaping)
        if not 0.0 <= shaping <= 1.0:  # also refuses NaN
            raise ValueError(f"shaping must be in [0, 1], got {shaping}")
        self.shaping = shaping
        gain_db = preset.get("gain_db", 0.0) if gain_db is None else float(gain_db)
        if not 0.0 <= gain_db <= MAX_GAIN_DB:  # also refuses NaN
            raise ValueError(f"gain_db must be in [0, {MAX_GAIN_DB:g}], got {gain_db}")
        self.gain_db = gain_db
        if eps is None and snr_db is None:
            snr_db = preset["snr_db"]
        if eps is not None:
            eps = float(eps)
            if not MIN_EPS <= eps <= 1:  # also refuses NaN
                raise ValueError(
                    f"eps must be in [{MIN_EPS:.3g}, 1] (1 LSB of 16-bit to full scale), got {eps}"
                )
        if snr_db is not None:
            snr_db = float(snr_db)
            if not (math.isfinite(snr_db) and snr_db <= MAX_SNR_DB):
                raise ValueError(
                    f"snr_db must be finite and at most {MAX_SNR_DB:g} dB (more cannot change "
                    f"a 16-bit sample), got {snr_db}"
                )
        self.eps, self.snr_db = eps, snr_db
        self.envelope = preset["envelope"] if envelope is None else bool(envelope)
        self.strength = strength
        if int(threads) < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        self.threads = int(threads)
        self.batch = max(1, int(batch))
        self.overlap = bool(overlap)
        self.progress = progress
        self.backend = resolve_backend(backend)
        specs = resolve_models(model)
        first = specs[0]
        for spec in specs[1:]:
            if (spec.window_samples, spec.sample_rate) != (first.window_samples, first.sample_rate):
                raise ManifestError(
                    f"ensemble models must share window and rate: "
                    f"{spec.name} differs from {first.name}"
                )
        self.sample_rate = first.sample_rate
        self.window = first.window_samples
        self.hop = max(1, int(self.window * OVERLAP_HOP)) if self.overlap else self.window
        self.grid_shift = int(round(self.grid_shift_ms * self.sample_rate / 1000))
        if objective is None:
            has_neutral = all(DEFAULT_OBJECTIVE in spec.classes for spec in specs)
            objective = DEFAULT_OBJECTIVE if has_neutral else FALLBACK_OBJECTIVE
        self.objective = objective
        if objective not in ("untargeted", "uniform"):
            for spec in specs:
                if objective not in spec.classes:
                    raise ValueError(
                        f"objective {objective!r} is not a class of {spec.name}: "
                        f"{list(spec.classes)}"
                    )
        self.members = []
        for spec in specs:
            grad = load_graph(spec, "grad", self.backend, self.threads)
            forward = (
                load_graph(spec, "forward", self.backend, self.threads)
                if spec.graph_file("forward", self.backend)
                else None
            )
            stream = {g: load_stream_graph(spec, g, self.backend, self.threads) for g in STREAM}
            member = _Member(spec, grad, forward, stream["hop"], spec.hop_layout())
            if stream["hop"] and stream["hop_fixed"] and stream["hop_crop"]:
                crop = spec.stream_layout("hop_crop")
                if {k: crop[k] for k in member.hop_layout} == member.hop_layout:
                    member.hop_fixed, member.hop_crop = stream["hop_fixed"], stream["hop_crop"]
                    member.crop_layout = crop
            self.members.append(member)

    # ----- description -------------------------------------------------------------------
    @property
    def specs(self) -> list[ModelSpec]:
        return [m.spec for m in self.members]

    @property
    def classes(self) -> tuple[str, ...]:
        return self.members[0].spec.classes

    def settings(self) -> dict:
        tier = {}  # only outside the default tier: mask settings (and cache keys) stay as they were
        if self.privacy != DEFAULT_PRIVACY:
            tier = {"privacy": self.privacy, "neutralize_strength": self.neutralize_strength}
            if self.neutralize_reference is not None:
                tier["neutralize_reference"] = vars(self.neutralize_reference)
        if self.shaping:  # likewise only when on
            tier["shaping"] = self.shaping
        if self.gain_db:
            tier["gain_db"] = self.gain_db
        return tier | {
            "models": [m.spec.name for m in self.members],
            "backend": self.backend,
            "threads": self.threads,
            "method": self.method,
            "steps": self.steps,
            "stream_steps": self.stream_steps,
            "grid_shift_ms": self.grid_shift_ms,
            "eps": self.eps,
            "snr_db": self.snr_db,
            "objective": self.objective,
            "envelope": self.envelope,
            "strength": self.strength,
            "overlap": self.overlap,
        }

    # ----- model calls -------------------------------------------------------------------
    def _logits(self, member: _Member, windows: np.ndarray) -> np.ndarray:
        out = []
        for start in range(0, len(windows), self.batch):
            chunk = windows[start : start + self.batch]
            if member.forward is not None:
                logits, _ = member.forward.run(chunk)
            else:
                c = len(member.spec.classes)
                logits, _ = member.grad.run(chunk, np.full((len(chunk), c), 1.0 / c, np.float32))
            out.append(logits)
        return np.concatenate(out)

    def _targets(self, member: _Member, clean: np.ndarray) -> np.ndarray:
        c = len(member.spec.classes)
        if self.objective == "untargeted":
            pred = self._logits(member, clean).argmax(axis=1)
            return np.eye(c, dtype=np.float32)[pred]
        if self.objective == "uniform":
            return np.full((len(clean), c), 1.0 / c, np.float32)
        idx = member.spec.classes.index(self.objective)
        return np.tile(np.eye(c, dtype=np.float32)[idx], (len(clean), 1))

    # ----- the attack ----------------------------------------------------------------------
    def perturb(
        self,
        windows: np.ndarray,
        bound: np.ndarray,
        clean: np.ndarray | None = None,
        steps: int | None = None,
    ) -> np.ndarray:
        """Perturbation for separate windows [B,N] at the model rate, |delta| <= bound [B,N],
        each on its own grid (no shift), in `steps` steps (default: `self.steps`).

        `clean` (default: windows) is what the untargeted objective takes its own
        prediction from. Ensembles sum the losses (so the gradients) of all models.
        """
        windows = np.asarray(windows, np.float32)
        b, n = windows.shape
        clean = windows if clean is None else np.asarray(clean, np.float32)
        delta = self._optimise(
            windows.reshape(-1),
            np.asarray(bound, np.float32).reshape(-1),
            np.arange(b) * n,
            clean,
            steps=self.steps if steps is None else int(steps),
        )
        return delta.reshape(b, n)

    def _optimise(
        self,
        signal: np.ndarray,
        bound: np.ndarray,
        starts: np.ndarray,
        clean: np.ndarray,
        steps: int,
        shift: int = 0,
    ) -> np.ndarray:
        """One perturbation of a 1-D signal whose loss sums over the model windows that
        start at `starts` (they may overlap); `clean` holds those windows before masking.
        With `shift` > 0, step k moves every window by grid_offsets(steps, shift)[k] samples
        (zeros beyond the signal, as a listener pads)."""
        width, n = self.window, len(signal)
        targets = [self._targets(m, clean) for m in self.members]
        offsets = grid_offsets(steps, shift)
        if shift:  # pad with zeros (bound 0: nothing is added there) so shifted windows fit
            signal, bound = np.pad(signal, shift), np.pad(bound, shift)
            starts = np.asarray(starts) + shift
        index = starts[:, None] + np.arange(width)[None, :]

        def gradient(done: int, delta: np.ndarray) -> np.ndarray:
            return self._summed_gradient(signal + delta, index + offsets[done - 1], targets)

        delta = self._sign_steps(bound, steps, gradient, fixed_signs(len(signal)), signal)
        return delta[shift : shift + n]

    def _summed_gradient(self, signal: np.ndarray, index: np.ndarray, targets) -> np.ndarray:
        """d (summed loss of every model on the windows signal[index]) / d signal."""
        grad = np.zeros_like(signal)
        current = signal[index]
        for member, target in zip(self.members, targets, strict=True):
            for first in range(0, len(index), self.batch):
                last = first + self.batch
                _, g = member.grad.run(current[first:last], target[first:last])
                np.add.at(grad, index[first:last], g)  # overlap-add, in window order
        return grad

    def rebalance(self, signal: np.ndarray, starts: np.ndarray, clean: np.ndarray) -> np.ndarray:
        """The gain stage: `signal` re-balanced by the gain field within +-gain_db that moves
        the models' loss, summed over the windows at `starts` (`clean`: those windows before
        it), toward the objective; I-FGSM on the field's grid, GAIN_STEPS steps."""
        from plainsight.gainfield import GainField

        field = GainField(signal, self.sample_rate)
        index = np.asarray(starts)[:, None] + np.arange(self.window)[None, :]
        targets = [self._targets(m, clean) for m in self.members]

        def gradient(u: np.ndarray) -> np.ndarray:
            g = self.gain_db * u
            return field.gradient(g, self._summed_gradient(field(g), index, targets))

        direction = 1.0 if self.objective == "untargeted" else -1.0
        step = min(1.0, 2.0 / GAIN_STEPS)
        u = np.zeros(field.shape, np.float32)
        for _ in range(GAIN_STEPS):
            u = np.clip(u + direction * step * np.sign(gradient(u)), -1.0, 1.0)
        return field(self.gain_db * u).astype(np.float32)

    def _sign_steps(
        self, bound, steps: int, gradient, fallback: np.ndarray, signal: np.ndarray
    ) -> np.ndarray:
        """The FGSM-family loop over delta = bound * u, |u| <= 1: `gradient(step, delta)` is
        d loss / d signal at the current delta; `fallback` the sign of samples whose
        gradient is always 0. With shaping, delta = shaper(bound * u), the shaper computed
        from `signal` (the audio the delta is added to)."""
        shaper = None
        if self.shaping:
            from plainsight.shaping import Shaper

            shaper = Shaper(signal, bound, self.shaping, self.sample_rate)
        direction = 1.0 if self.objective == "untargeted" else -1.0
        if self.method == "fgsm":
            step = 1.0
        elif self.method == "ifgsm":
            step = min(1.0, 2.0 / steps)
        else:
            step = 1.0 / steps
        u = np.zeros_like(bound)
        velocity = np.zeros_like(bound)
        last_sign = fallback
        for done in range(1, steps + 1):
            if shaper is None:
                grad = gradient(done, bound * u) * bound  # chain rule through delta = bound * u
            else:
                grad = shaper.adjoint(gradient(done, shaper(bound * u))) * bound
            if self.method == "mifgsm":
                velocity = MOMENTUM * velocity + grad / max(float(np.abs(grad).mean()), 1e-20)
                grad = velocity
            sign = np.sign(grad)
            u = np.clip(u + direction * step * sign, -1.0, 1.0)
            last_sign = np.where(sign != 0, sign, last_sign)
            if self.progress is not None:
                self.progress(done, steps)
        # A sample whose steps cancelled (u == 0) would go out unchanged: nudge it by NUDGE
        # along its last gradient (the PCM quantiser makes that one LSB), so every sample
        # with a budget moves. A whole step here cost the white-box model 4 points of UAR
        # (EmoDB 14.8 -> 18.8 %); about half an LSB costs nothing measurable.
        nudge = np.minimum(step, NUDGE / np.maximum(bound, NUDGE))
        u = np.where(u == 0, direction * nudge * last_sign, u)
        return (bound * u if shaper is None else shaper(bound * u)).astype(np.float32)

    # ----- the stream ----------------------------------------------------------------------
    def hop_graphs_fit(self, hop_samples: int) -> bool:
        """Does every model ship a hop graph for hops of `hop_samples` (at the model rate)?"""
        layouts = [m.hop_layout for m in self.members]
        return (
            all(
                layout is not None and m.hop is not None and layout["hop_samples"] == hop_samples
                for m, layout in zip(self.members, layouts, strict=True)
            )
            and len({layout["tail_start"] for layout in layouts}) == 1
        )

    def perturb_hop(
        self,
        context: np.ndarray,
        bound: np.ndarray,
        clean: np.ndarray,
        hop_samples: int,
        past: tuple | None = None,
    ) -> np.ndarray:
        """The stream's perturbation [N] of one model window `context` [N]: the past already
        sent, then the new hop (its last `hop_samples`); `bound` [N] is 0 on the past,
        `clean` the window before masking; `stream_steps` steps (see `_hop_gradient`;
        `past`: `hop_past` of this window, if already computed)."""
        context = np.asarray(context, np.float32)
        bound = np.asarray(bound, np.float32)
        clean = np.asarray(clean, np.float32)
        start, gradient = self._hop_gradient(context, clean, hop_samples, past)
        delta = np.zeros_like(context)
        delta[start:] = self._sign_steps(
            bound[start:],
            self.stream_steps,
            lambda _done, tail_delta: gradient(tail_delta),
            fixed_signs(len(context))[start:],
            context[start:],
        )
        return delta

    def hop_past(self, context: np.ndarray, hop_samples: int) -> tuple | None:
        """What every step of a stream hop reuses, computed once per hop from the audio
        already sent (the window `context` before its last `hop_samples`): each model's
        past log-mel frames and, for the cropped graphs, hop_fixed's sums of them. None
        where the models ship no hop graph for this hop size."""
        if not self.hop_graphs_fit(hop_samples):
            return None
        past_frames = self.members[0].hop_layout["past_frames"]
        context = np.asarray(context, np.float32)
        pasts = [past_log_mel(context, m.spec.features, past_frames)[None] for m in self.members]
        members = zip(self.members, pasts, strict=True)
        fixed = [m.hop_fixed.run(past)[0] if m.hop_crop else None for m, past in members]
        return pasts, fixed

    def _hop_gradient(
        self, context: np.ndarray, clean: np.ndarray, hop_samples: int, past: tuple | None = None
    ):
        """(start, gradient): d loss / d context[start:] at context[start:] + delta, for a
        stream hop's window `context` whose last `hop_samples` are the new hop.

        Where the models ship a hop graph for this hop size, a call computes only the
        spectrogram frames the hop touches (the past's log-mel is computed once per hop,
        `hop_past`, from the audio already sent): the same gradient as the window graph on
        the hop (up to float rounding) at about half the multiply-adds. A model that also
        ships hop_fixed + hop_crop runs its convolutions only on the frames whose pooled
        outputs the hop can change, after one hop_fixed call per hop sums the others: about
        a quarter of the window graph's multiply-adds. Otherwise the window graph runs
        (start 0)."""
        targets = [self._targets(m, clean[None]) for m in self.members]
        if not self.hop_graphs_fit(hop_samples):
            index = np.arange(self.window)[None, :]
            return 0, lambda delta: self._summed_gradient(context + delta, index, targets)
        pasts, fixed = self.hop_past(context, hop_samples) if past is None else past
        start = self.members[0].hop_layout["tail_start"]
        tail = context[start:]

        def gradient(delta: np.ndarray) -> np.ndarray:
            current = (tail + delta)[None]
            grad = np.zeros_like(tail)
            for member, past, fix, target in zip(self.members, pasts, fixed, targets, strict=True):
                if fix is None:
                    grad += member.hop.run(past, current, target)[1][0]
                else:
                    crop = past[:, member.crop_layout["crop_start"] :]
                    grad += member.hop_crop.run(crop, current, fix, target)[1][0]
            return grad

        return start, gradient

    def rebalance_and_perturb_hop(
        self,
        context: np.ndarray,
        bound: np.ndarray,
        clean: np.ndarray,
        hop_samples: int,
        origin: int,
        chosen: dict[int, np.ndarray],
        ahead: np.ndarray | None = None,
        past: tuple | None = None,
    ) -> np.ndarray:
        """The stream's hop with the gain stage: the new hop (the last `hop_samples` of the
        window `context`, the past as sent) re-balanced by the gain field and masked within
        `bound` [N] (0 on the past, as for `perturb_hop`), returned [hop_samples].

        One loop of `stream_steps` steps, each one call of the hop graphs: every step moves
        the mask (as `perturb_hop`), and the first min(GAIN_STEPS, stream_steps) also move
        the field's grid (as the file path's gain stage), at the gradient of the hop as it
        stands, field and mask together. Two loops, the field's then the mask's, cost
        GAIN_STEPS more graph calls per hop for the same hiding (development panel, 2026-12-06:
        docs/EVALUATION.md, "One loop for the stream's two stages").

        The field runs on the raw audio `clean` (the window before masking) from N_FFT
        samples before the hop, so the hop's first frames see their real past. Its grid is
        the stream's: `origin` is the stream sample index of context[0], and `chosen` (cell
        index -> its gains in dB [bands]) holds every cell the audio already sent used.
        Those stay as they were, so each band's gain ramps on from the value already sent;
        the cells after them are chosen here and added to `chosen`. `ahead` is the raw audio
        after the hop that the stream holds back (gainfield.LOOKAHEAD samples), so that the
        hop's last frames are whole: the hop then gets exactly the file path's field with
        the same cells (up to frame alignment). Without it those frames see zeros. `past`:
        as for `perturb_hop`."""
        from plainsight.gainfield import GainField
        from plainsight.shaping import N_FFT

        context = np.asarray(context, np.float32)
        bound = np.asarray(bound, np.float32)
        clean = np.asarray(clean, np.float32)
        span = min(len(clean), hop_samples + N_FFT)
        origin_s = (origin + len(clean) - span) / self.sample_rate
        ahead = np.zeros(0, np.float32) if ahead is None else np.asarray(ahead, np.float32)
        field = GainField(
            np.concatenate([clean[-span:], ahead]), self.sample_rate, origin_s=origin_s
        )
        hop = slice(span - hop_samples, span)
        cells = field.first_cell + np.arange(field.cells)
        zero = np.zeros(field.shape[0], np.float32)
        g_held = np.stack([chosen.get(k, zero) for k in cells], axis=1)
        free = np.array([k not in chosen for k in cells], np.float32)[None, :]
        start, gradient = self._hop_gradient(context, clean, hop_samples, past)
        raw_hop = clean[-hop_samples:]
        grad_y = np.zeros(field.n, np.float32)
        gain_steps = min(GAIN_STEPS, self.stream_steps)
        gain_step = min(1.0, 2.0 / gain_steps)
        direction = 1.0 if self.objective == "untargeted" else -1.0
        u = np.zeros(field.shape, np.float32)
        gained = field(g_held)[hop]

        def step_gradient(done: int, mask_delta: np.ndarray) -> np.ndarray:
            """d loss / d tail at the field and mask so far; the field's grid takes its step."""
            nonlocal u, gained
            tail_delta = mask_delta.copy()
            tail_delta[-hop_samples:] += gained - raw_hop
            grad = gradient(tail_delta)
            if done <= gain_steps:
                grad_y[hop] = grad[-hop_samples:]
                move = np.sign(field.gradient(g_held + self.gain_db * u * free, grad_y)) * free
                u = np.clip(u + direction * gain_step * move, -1.0, 1.0)
                gained = field(g_held + self.gain_db * u * free)[hop]
            return grad

        mask_delta = self._sign_steps(
            bound[start:],
            self.stream_steps,
            step_gradient,
            fixed_signs(len(context))[start:],
            context[start:],
        )
        g = g_held + self.gain_db * u * free
        chosen.update((int(k), g[:, j].copy()) for j, k in enumerate(cells))
        return (gained + mask_delta[-hop_samples:]).astype(np.float32)

    def budget(
        self, windows: np.ndarray, valid: np.ndarray, lsb: float | None = None
    ) -> np.ndarray:
        """Per-sample L-inf bound [B,N] for windows with `valid` (0/1) marking real samples.

        Every window with any signal gets at least FLOOR_LSB steps of the output's resolution
        `lsb` (default: 16-bit): a smaller perturbation rounds away and the output would be
        the input. Windows of digital silence get 0 (nothing to hide), except under a fixed
        `eps`, which applies everywhere as it always did."""
        weight = valid.astype(np.float32)
        if self.envelope:
            weight = local_envelope(windows, valid, self.sample_rate)
        if self.eps is not None:
            bound = (self.eps * weight).astype(np.float32)
        else:
            count = np.maximum(valid.sum(axis=1), 1)
            rms = np.sqrt(((windows.astype(np.float64) * valid) ** 2).sum(axis=1) / count)
            eps = rms * 10.0 ** (-self.snr_db / 20.0)
            if self.envelope:  # same noise power as the flat budget, moved under the speech
                w_rms = np.sqrt((weight.astype(np.float64) ** 2).sum(axis=1) / count)
                eps = np.divide(eps, w_rms, out=np.zeros_like(eps), where=w_rms > 0)
            bound = np.minimum(eps[:, None] * weight, 1.0).astype(np.float32)
        floor = np.float32(FLOOR_LSB * (LSB_16 if lsb is None else lsb))
        real = valid > 0
        has_signal = np.any((windows != 0) & real, axis=1)
        np.maximum(bound, floor, out=bound, where=has_signal[:, None] & real)
        return bound

    # ----- whole clips -------------------------------------------------------------------
    @staticmethod
    def _checked(audio: np.ndarray, sample_rate: int) -> np.ndarray:
        audio = np.asarray(audio)
        if audio.ndim not in (1, 2) or audio.size == 0:
            raise ValueError("audio must be a non-empty array [samples] or [samples, channels]")
        if not np.issubdtype(audio.dtype, np.floating):
            raise ValueError("audio must be floating point in [-1, 1]")
        if not np.isfinite(audio).all():
            raise ValueError("audio contains NaN or Inf")
        peak = max(float(audio.max()), -float(audio.min()))  # no |audio| copy of long input
        if peak > MAX_PEAK:  # the float32 power spectrum would overflow into NaN
            raise ValueError(
                f"audio peaks at {peak:.3g} times full scale, beyond any recording "
                f"(limit {MAX_PEAK:.0e})"
            )
        if not MIN_RATE <= int(sample_rate) <= MAX_RATE:  # beyond, the resampler's table explodes
            raise ValueError(
                f"implausible sample rate {sample_rate} Hz (audio files: {MIN_RATE}..{MAX_RATE})"
            )
        return audio

    def _mono16(self, audio: np.ndarray, sample_rate: int) -> tuple[np.ndarray, np.ndarray]:
        audio = self._checked(audio, sample_rate)
        mono = audio if audio.ndim == 1 else aligned_mix(audio)
        return audio, resample(mono.astype(np.float32), int(sample_rate), self.sample_rate)

    def mask(self, audio: np.ndarray, sample_rate: int) -> np.ndarray:
        """Masked copy of `audio` ([N] or [N, channels], float), same shape and rate.

        The same engine as `plainsight mask` on files (plainsight.blockmask). A sample within
        full scale stays within it; a sample beyond (float audio) keeps its magnitude. Under
        privacy="neutralize" the audio is neutralised first (toward the clip's own medians),
        then masked; the limits then apply to the neutralised audio."""
        from plainsight.blockmask import ArraySource, BlockMasker

        audio = self._checked(audio, sample_rate)
        out = np.empty(audio.shape, audio.dtype)
        flat = out if out.ndim == 2 else out[:, None]
        for start, x, y in BlockMasker(self, ArraySource(audio, int(sample_rate))).blocks():
            limit = np.maximum(1.0, np.abs(x))
            flat[start : start + len(x)] = np.clip(y, -limit, limit)
        return out

    def classify(self, audio: np.ndarray, sample_rate: int, member: int = 0) -> dict:
        """Emotion probabilities per model window and overall, read as in training and
        evaluation: windows with hop window/2, the last ending at the clip's end, a short
        clip centred in one zero-padded window; overall = softmax of the mean logits."""
        _, mono16 = self._mono16(audio, sample_rate)
        n, width = len(mono16), self.window
        if n < width:
            offset = (width - n) // 2
            windows = np.zeros((1, width), np.float32)
            windows[0, offset : offset + n] = mono16
            spans = [(0, n)]
        else:
            starts = window_starts(n, width, width // 2)
            windows = mono16[starts[:, None] + np.arange(width)[None, :]]
            spans = [(int(s), int(s) + width) for s in starts]
        spec = self.members[member].spec
        logits = self._logits(self.members[member], windows).astype(np.float64)
        probs = softmax(logits)
        overall = softmax(logits.mean(axis=0))
        rate = self.sample_rate
        return {
            "model": spec.name,
            "classes": list(spec.classes),
            "label": spec.classes[int(overall.argmax())],
            "overall": [float(p) for p in overall],
            "windows": [
                {
                    "start_s": round(start / rate, 4),
                    "end_s": round(end / rate, 4),
                    "label": spec.classes[int(p.argmax())],
                    "probs": [float(v) for v in p],
                }
                for (start, end), p in zip(spans, probs, strict=True)
            ],
        }


def aligned_mix(audio: np.ndarray) -> np.ndarray:
    """Mean of the channels that are not silent, each with its sign aligned to the loudest
    channel, so that a channel carrying another's inverse does not cancel it."""
    x = np.asarray(audio, np.float64)
    energy = (x**2).sum(axis=0)
    signs = np.where(x.T @ x[:, int(np.argmax(energy))] < 0, -1.0, 1.0)
    signs[energy == 0] = 0.0
    return (x @ (signs / max(1, np.count_nonzero(signs)))).astype(np.float32)
