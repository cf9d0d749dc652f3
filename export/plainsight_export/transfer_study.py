"""Transfer study (issue 9 section 2): which masking hides emotion from models it never saw?

Crafts perturbations of whole clips with the runtime's window protocol (Masker.mask: the
per-window SNR budget of `Masker.budget` on 2 s windows, model windows with hop 1 s, the
loss summed over them, I-FGSM toward `neutral`) against torch surrogates (autograd), for a
set of candidate methods, and scores them on the DEVELOPMENT panel only, each beside the
same-SNR noise control, at the same measured SNR (each clip's perturbation is scaled to
exactly --snr-db; I-FGSM does not fill its L-inf budget, so without this the methods would
differ in energy), with PESQ-wb. The final panel (`*-attacker-final-*`) is never loaded.

    python -m plainsight_export transfer-study --corpus emodb --limit 56 \
        --out docs/evaluation-results/transfer-study-emodb
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
from plainsight.evaluate import metrics
from plainsight.evaluate import pipeline as P
from plainsight.gainfield import HIGHEST_HZ, LOWEST_HZ, hat_matrix
from plainsight.manifest import load_model_dir
from plainsight.masker import Masker, window_starts
from plainsight.shaping import spreading

from plainsight_export import models as M
from plainsight_export.train import forward

RATE = 16000
WINDOW = 32000
HOP = WINDOW // 2
CHECKPOINTS = Path("export/checkpoints")
BUNDLED = Path("runtime/plainsight/models")
TARGET = "neutral"


# ----------------------------------------------------------------------------- surrogates
@dataclass
class Surrogate:
    name: str
    model: torch.nn.Module
    target: int  # index of the target class

    def logits(self, windows: torch.Tensor) -> torch.Tensor:
        return forward(self.model, windows, fast=True)  # FFT front end: same features


class _LinearBackwardReLU(torch.autograd.Function):
    """ReLU forward, identity backward (LinBP, Guo et al. 2020): the gradient of the
    network's linear skeleton, which in image work transfers further than the exact one."""

    @staticmethod
    def forward(ctx, x):
        return x.clamp_min(0)

    @staticmethod
    def backward(ctx, grad):
        return grad


class LinearBackwardReLU(torch.nn.Module):
    def forward(self, x):
        return _LinearBackwardReLU.apply(x)


def _replace_relus(module: torch.nn.Module) -> int:
    count = 0
    for name, child in module.named_children():
        if isinstance(child, torch.nn.ReLU):
            setattr(module, name, LinearBackwardReLU())
            count += 1
        else:
            count += _replace_relus(child)
    return count


def load_surrogate(corpus: str, name: str) -> Surrogate:
    """A checkpoint as a surrogate; `name~linbp` backpropagates through every ReLU as the
    identity, `name~dropout` keeps dropout on while attacking (a new random sub-network per
    gradient: a cheap ensemble, as ghost networks)."""
    stem, _, variant = name.partition("~")
    head = CHECKPOINTS / corpus / f"{stem}.npz"
    if head.is_file():  # a head on Whisper base's encoder (plainsight_export.whisper_torch)
        from plainsight_export.whisper_torch import load_surrogate_head

        if variant:
            raise ValueError(f"{name}: no variants for a Whisper head")
        model, classes = load_surrogate_head(head)
        return Surrogate(name, model, classes.index(TARGET))
    model = M.load_checkpoint(CHECKPOINTS / corpus / f"{stem}.pt")
    for p in model.parameters():
        p.requires_grad_(False)
    if variant == "linbp":
        if not _replace_relus(model):
            raise ValueError(f"{name}: no ReLU to linearise")
    elif variant == "dropout":
        drops = [m for m in model.modules() if isinstance(m, torch.nn.Dropout)]
        if not drops:
            raise ValueError(f"{name}: no dropout to keep on")
        for m in drops:
            m.train()
    elif variant:
        raise ValueError(f"{name}: unknown surrogate variant {variant!r} (linbp, dropout)")
    classes = list(model.checkpoint["classes"])
    return Surrogate(name, model, classes.index(TARGET))


# ----------------------------------------------------------------------------- input diversity
def transform(adv: torch.Tensor, starts: np.ndarray, kinds: tuple[str, ...], rng) -> tuple:
    """One random differentiable transformation of the whole signal (expectation over
    transformation): returns (signal, window starts). Each kind applies with p = 0.5."""
    n = len(adv)
    x = adv

    def on(kind):
        return kind in kinds and rng.random() < 0.5

    if on("resample"):  # speed/pitch change by up to 4 %, back to the same length
        factor = rng.uniform(0.96, 1.04)
        m = max(2, int(round(n * factor)))
        x = torch.nn.functional.interpolate(x[None, None], size=m, mode="linear")[0, 0]
        x = torch.nn.functional.pad(x, (0, max(0, n - m)))[:n]
    if on("lowpass"):
        cutoff = rng.uniform(3500.0, 7500.0)
        spec = torch.fft.rfft(x)
        freqs = torch.fft.rfftfreq(n, 1.0 / RATE)
        x = torch.fft.irfft(spec * (freqs <= cutoff), n)
    if on("gain"):
        x = x * float(10 ** (rng.uniform(-6, 6) / 20))
    if on("noise"):
        rms = float(adv.detach().pow(2).mean().sqrt())
        snr = rng.uniform(30.0, 45.0)
        x = x + torch.from_numpy(rng.standard_normal(n).astype(np.float32)) * rms * 10 ** (
            -snr / 20
        )
    if on("quantise"):  # codec-like: coarse uniform quantiser, straight-through gradient
        q = 2.0 ** -int(rng.integers(7, 11))
        x = x + (torch.round(x / q) * q - x).detach()
    if on("shift"):  # listener's window grid not aligned with ours
        if n > WINDOW:
            offset = int(rng.integers(-HOP // 2, HOP // 2 + 1))
            starts = np.clip(starts + offset, 0, n - WINDOW)
        else:
            x = torch.roll(x, int(rng.integers(-RATE // 4, RATE // 4 + 1)))
    return x, starts


# ----------------------------------------------------------------------------- the attack
@dataclass
class Method:
    name: str
    surrogates: list[str]
    steps: int = 10
    diversity: tuple[str, ...] = ()
    samples: int = 1  # transformed copies per iteration (gradients averaged)
    loss: str = "ce"  # ce | margin | feature (disrupt a CNN layer) | ce+feature
    layer: int = 6  # feature losses: the body layers whose output is disrupted (6 = 2 blocks)
    momentum: float = 0.0  # MI-FGSM decay; 0 = plain I-FGSM
    variance: int = 0  # VMI-FGSM neighbours per step; 0 = off
    shape: float = 0.0  # perturbation spectrum ~ |speech STFT| ** shape (0 = white, as today)
    masking: bool = False  # shape by the speech's spread masking threshold, not |STFT| itself
    universal: bool = False  # one 2 s perturbation for every clip, trained offline
    random: bool = False  # random signs, no gradient: the shaped noise control of a shaping
    gain_db: float = 0.0  # > 0: a smooth time-frequency gain field within +-gain_db instead
    gain_grid: tuple[int, float] = (16, 0.1)  # its grid: log-spaced bands, cell seconds
    # gain fields on several grids at once: ((bands, cell seconds, bound dB), ...), files only
    gain_layers: tuple[tuple[int, float, float], ...] = ()
    # Admix: each gradient averaged over copies of the clip with `admix` x another speaker's
    # audio mixed in, each at `admix_scales` levels (1, 1/2, 1/4, ...); the pool is the
    # training speakers' audio (`admix_pool`, set by the study)
    admix: float = 0.0
    admix_copies: int = 3
    admix_scales: int = 3
    admix_pool: np.ndarray | None = None
    lookahead: int = 0  # --stream gain field: input samples seen after the hop (latency)
    warp_ms: float = 0.0  # > 0: a smooth time warp within +-warp_ms instead (no SNR scaling)
    warp_cell_s: float = 0.1  # the warp's grid: one displacement every warp_cell_s
    # > 0: the spectral envelope (formants) read at frequencies scaled by up to +-formant_pct
    # per cent instead (a gain field shaped by the clip's own formants; no SNR scaling)
    formant_pct: float = 0.0
    formant_cell_s: float = 0.1  # its grid: one scale factor every formant_cell_s
    # with gain_db: separate gains for the spectral peaks (harmonics) and the valleys between
    # them ("split"), or peaks against valleys only ("contrast"): voice quality, files only
    harmonic: str = ""
    # with gain_db: the gain grid from a generator trained offline (GainGenerator), then
    # `steps` I-FGSM steps from it (0: the generator alone); files only
    generator: bool = False
    generator_steps: int = 0  # its training steps (0: GENERATOR_STEPS)
    note: str = ""
    extra: dict = field(default_factory=dict)


def objective(logits: torch.Tensor, target: int, kind: str) -> torch.Tensor:
    """Loss to MINIMISE (targeted toward `target`), mean over windows."""
    if kind == "ce":
        goal = torch.full((len(logits),), target, dtype=torch.long)
        return torch.nn.functional.cross_entropy(logits, goal)
    others = logits.clone()
    others[:, target] = -1e9
    return torch.relu(others.max(dim=1).values - logits[:, target] + 5.0).mean()


def budget(snr_db: float, windows: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """The runtime's own per-window SNR budget (flat, no envelope)."""
    fake = SimpleNamespace(envelope=False, eps=None, snr_db=snr_db, sample_rate=RATE)
    return Masker.budget(fake, windows, valid)


def plan(audio: np.ndarray, snr_db: float):
    """(signal, bound, starts, offset) exactly as Masker.mask lays out a clip < 16 windows."""
    n = len(audio)
    if n < WINDOW:
        offset = (WINDOW - n) // 2
        signal = np.zeros(WINDOW, np.float32)
        signal[offset : offset + n] = audio
        valid = np.zeros((1, WINDOW), np.float32)
        valid[0, offset : offset + n] = 1.0
        return signal, budget(snr_db, signal[None], valid)[0], np.zeros(1, int), offset
    count = -(-n // WINDOW)
    padded = np.zeros(count * WINDOW, np.float32)
    padded[:n] = audio
    valid = (np.arange(count * WINDOW) < n).astype(np.float32)
    bound = budget(snr_db, padded.reshape(count, WINDOW), valid.reshape(count, WINDOW))
    return audio.astype(np.float32), bound.reshape(-1)[:n], window_starts(n, WINDOW, HOP), 0


SHAPE_FFT, SHAPE_HOP = 512, 128
SHAPE_FLOOR_DB = -50.0  # weights below this (relative to the loudest bin) are lifted to it


def masking_threshold(power: torch.Tensor) -> torch.Tensor:
    """Simultaneous-masking threshold [F, T] of a power spectrogram [F, T], up to a constant:
    every bin's power spread over the others on the Bark scale (the runtime's
    plainsight.shaping.spreading). Where speech is loud, the threshold also covers the quiet
    bins around it (between harmonics, above formants): there a perturbation stays inaudible
    at a far higher level than the same local SNR in every bin would allow."""
    return torch.from_numpy(np.array(spreading(SHAPE_FFT, RATE))) @ power


class SpectralShaper:
    """delta = ISTFT(STFT(v) * W), W = |STFT(clean)| ** shape normalised to unit mean square
    over the clip's bins: a fixed linear map, so the perturbation's energy follows the
    speech spectrogram (the same local SNR in every time-frequency bin, where the speech
    masks it) instead of a flat spectrum. shape 0 is the identity."""

    def __init__(self, clean: torch.Tensor, shape: float, masking: bool = False):
        self.shape = float(shape)
        self.n = len(clean)
        if self.shape:
            mag = self._stft(clean).abs()
            if masking:
                mag = masking_threshold(mag.pow(2)).sqrt()
            mag = mag.clamp_min(float(mag.max()) * 10 ** (SHAPE_FLOOR_DB / 20))
            weight = mag**self.shape
            self.weight = weight / weight.pow(2).mean().sqrt()

    def _stft(self, x: torch.Tensor) -> torch.Tensor:
        window = torch.hann_window(SHAPE_FFT)
        return torch.stft(x, SHAPE_FFT, SHAPE_HOP, window=window, return_complex=True)

    def __call__(self, v: torch.Tensor) -> torch.Tensor:
        if not self.shape:
            return v
        window = torch.hann_window(SHAPE_FFT)
        spec = self._stft(v) * self.weight
        return torch.istft(spec, SHAPE_FFT, SHAPE_HOP, window=window, length=self.n)


class GainField:
    """y = ISTFT(STFT(clean) * 10 ** (G / 20)), G = A @ g @ B: a gain in dB that varies
    smoothly over time and frequency, set on a coarse grid g [bands, cells] (log-spaced band
    centres 100 Hz-7 kHz, cells every `cell_s`) and interpolated linearly between grid
    points. The perturbation is the speech itself, made slightly louder or quieter in
    broad regions: the kind of change (an equaliser, a level ride) every model on this
    panel is sensitive to, unlike a sample-level pattern."""

    def __init__(self, clean: torch.Tensor, bands: int, cell_s: float):
        self.n = len(clean)
        window = torch.hann_window(SHAPE_FFT)
        self.spec = torch.stft(clean, SHAPE_FFT, SHAPE_HOP, window=window, return_complex=True)
        self.bands = band_weights(bands)  # [F, bands]
        self.cells, self.times = self.time_weights(cell_s)

    def time_weights(self, cell_s: float) -> tuple[int, torch.Tensor]:
        """(cells, [cells, frames]): the grid's points every cell_s and each frame's share."""
        frame_s = np.arange(self.spec.shape[1]) * SHAPE_HOP / RATE
        cells = int(np.ceil(self.n / RATE / cell_s)) + 1
        return cells, torch.from_numpy(hat_matrix(frame_s, np.arange(cells) * cell_s).T)

    def __call__(self, g: torch.Tensor) -> torch.Tensor:
        return self.apply(self.bands @ g @ self.times)

    def apply(self, db: torch.Tensor) -> torch.Tensor:
        """The clip under the gain db [F, frames]."""
        gain = torch.pow(10.0, db / 20.0)
        window = torch.hann_window(SHAPE_FFT)
        return torch.istft(self.spec * gain, SHAPE_FFT, SHAPE_HOP, window=window, length=self.n)


class LayeredGainField(GainField):
    """G = sum_k A_k g_k B_k: gain fields on several grids at once, each with its own bound
    (`optimise_layered_gain`), e.g. the rebalance grid (16 bands x 100 ms) plus a coarse one
    (2 bands x 1 s: level and tilt). The coarse grids are where every model's gradient agrees
    most (gradient_alignment.py --grids), the fine one where the compact model is moved most.
    Its input is every layer's grid flattened and concatenated."""

    def __init__(self, clean: torch.Tensor, grids):
        super().__init__(clean, *grids[0])
        self.layers = []
        for bands, cell_s in grids:
            cells, times = self.time_weights(cell_s)
            self.layers.append((band_weights(bands), times, (bands, cells)))
        self.size = sum(bands * cells for _, _, (bands, cells) in self.layers)

    def __call__(self, g: torch.Tensor) -> torch.Tensor:
        db, first = 0.0, 0
        for weights, times, (bands, cells) in self.layers:
            grid = g[first : first + bands * cells].reshape(bands, cells)
            db, first = db + weights @ grid @ times, first + bands * cells
        return self.apply(db)


WARP_TAPS = 8  # windowed-sinc half width: flat to about 7 kHz at 16 kHz


class WarpField:
    """y(t) = clean(t + d(t)), d = hat-interpolated from a grid (one displacement every
    `cell_s`) in samples, read by windowed-sinc interpolation: the speech itself played
    slightly early or late, and, where d changes, slightly faster or slower (a slope s of d
    is a local tempo and pitch change of s: +-D over one cell is up to 2 D / cell). Timing,
    rhythm and the pitch contour are cues every emotion model reads; here they move by
    amounts a listener does not notice (a few ms, a few per cent)."""

    def __init__(self, clean: torch.Tensor, cell_s: float):
        self.x = clean
        self.n = len(clean)
        cells = int(np.ceil(self.n / RATE / cell_s)) + 1
        self.cells = cells
        t = np.arange(self.n) / RATE
        self.times = torch.from_numpy(hat_matrix(t, np.arange(cells) * cell_s))  # [n, cells]
        self.taps = torch.arange(-WARP_TAPS + 1, WARP_TAPS + 1, dtype=torch.float32)

    def __call__(self, d: torch.Tensor) -> torch.Tensor:
        """d [cells] in samples -> the warped clip."""
        pos = torch.arange(self.n, dtype=torch.float32) + self.times @ d
        base = torch.floor(pos).detach()
        offset = (pos - base)[:, None] - self.taps[None, :]  # [n, taps]: distance to each tap
        kernel = torch.sinc(offset) * (0.5 + 0.5 * torch.cos(torch.pi * offset / WARP_TAPS))
        index = (base.long()[:, None] + self.taps.long()[None, :]).clamp(0, self.n - 1)
        return (self.x[index] * kernel).sum(1)


def optimise_warp(signal_np, starts, surrogates, method: Method, rng) -> np.ndarray:
    """I-FGSM on the warp's grid (|d| <= warp_ms), as `optimise_field`; y - clean at d = 0
    is the interpolator's own error, about -100 dB."""
    signal = torch.from_numpy(signal_np)
    field = WarpField(signal, method.warp_cell_s)
    most = method.warp_ms * RATE / 1000
    return optimise_field(field, (field.cells,), most, signal, starts, surrogates, method, rng)


ENVELOPE_LIFTER = 30  # cepstral terms kept: ~530 Hz detail, above the pitch's quefrency
FORMANT_MAX_DB = 12.0  # the envelope ratio is clamped: deep valleys are not lifted further


def cepstral_envelope(spec: torch.Tensor) -> torch.Tensor:
    """[F, frames]: each frame's spectral envelope, its log-magnitude (natural log) with the
    cepstrum cut after ENVELOPE_LIFTER terms: the formants without the harmonics."""
    cepstrum = torch.fft.irfft(torch.log(spec.abs() + 1e-5), n=SHAPE_FFT, dim=0)
    lifter = torch.zeros(SHAPE_FFT, 1)
    lifter[:ENVELOPE_LIFTER] = 1.0
    lifter[-ENVELOPE_LIFTER + 1 :] = 1.0
    return torch.fft.rfft(cepstrum * lifter, dim=0).real


class FormantWarpField(GainField):
    """y = ISTFT(STFT(clean) * E(f / a) / E(f)), a(t) = 1 + w(t), w hat-interpolated from a
    grid (one value every `cell_s`): the clip's spectral envelope E (its cepstrally smoothed
    log-magnitude per frame) read at scaled frequencies, so the formants move up (a > 1) or
    down by a few per cent while the harmonics (pitch), the phase and the timing stay. The
    last session found the articulation, how the envelope moves, to be what a retrained
    model reads; this asks whether fixed models read it too, under a small optimised change.
    A gain field whose gain comes from the envelope (GainField's STFT, time grid and `apply`;
    no bands)."""

    def __init__(self, clean: torch.Tensor, cell_s: float):
        super().__init__(clean, 1, cell_s)
        self.envelope = cepstral_envelope(self.spec)
        self.bins = torch.arange(self.spec.shape[0], dtype=torch.float32)[:, None]

    def __call__(self, w: torch.Tensor) -> torch.Tensor:
        """w [cells], relative scale (0.03 = formants 3 % higher) -> the clip."""
        top = self.spec.shape[0] - 1
        source = (self.bins / (1.0 + w @ self.times)[None, :]).clamp(0, top)
        low = torch.floor(source).detach().clamp(max=top - 1)
        frac = source - low
        low = low.long()
        warped = self.envelope.gather(0, low) * (1 - frac) + self.envelope.gather(0, low + 1) * frac
        db = (warped - self.envelope) * (20 / np.log(10))  # natural log ratio -> dB
        return self.apply(db.clamp(-FORMANT_MAX_DB, FORMANT_MAX_DB))


HARMONIC_SHARPNESS = 2.0  # per natural-log unit above the envelope (0.9 at +10 dB)


class HarmonicGainField(GainField):
    """Two gain fields on one grid, one for the spectral peaks and one for the valleys:
    db = M * (A g_peak B) + (1 - M) * (A g_valley B), M = sigmoid(k (log|X| - E)) from the
    clean clip (E its cepstral envelope), so M is near 1 on the harmonics of voiced frames
    and near 0 between them. The plain gain field is the case g_peak = g_valley; apart,
    they change how harmonic the voice is (breathy, pressed: voice quality), which a smooth
    gain cannot. `contrast`: one field, peaks up where valleys go down (db = (2M - 1) A g B),
    the harmonicity alone with little change of level. Input: [2 * bands, cells] (split) or
    [bands, cells] (contrast)."""

    def __init__(self, clean: torch.Tensor, bands: int, cell_s: float, contrast: bool):
        super().__init__(clean, bands, cell_s)
        above = torch.log(self.spec.abs() + 1e-5) - cepstral_envelope(self.spec)
        self.peaks = torch.sigmoid(HARMONIC_SHARPNESS * above)  # [F, frames]
        self.contrast = contrast
        self.shape = (bands if contrast else 2 * bands, self.cells)

    def __call__(self, g: torch.Tensor) -> torch.Tensor:
        if self.contrast:
            return self.apply((2 * self.peaks - 1) * (self.bands @ g @ self.times))
        bands = self.bands.shape[1]
        peak, valley = self.bands @ g[:bands] @ self.times, self.bands @ g[bands:] @ self.times
        return self.apply(self.peaks * peak + (1 - self.peaks) * valley)


def optimise_harmonic(signal_np, starts, surrogates, method: Method, rng) -> np.ndarray:
    """I-FGSM on the peak and valley grids (|g| <= gain_db), as `optimise_field`."""
    signal = torch.from_numpy(signal_np)
    contrast = method.harmonic == "contrast"
    field = HarmonicGainField(signal, *method.gain_grid, contrast=contrast)
    return optimise_field(
        field, field.shape, method.gain_db, signal, starts, surrogates, method, rng
    )


def optimise_formant(signal_np, starts, surrogates, method: Method, rng) -> np.ndarray:
    """I-FGSM on the formant warp's grid (|w| <= formant_pct %), as `optimise_field`."""
    signal = torch.from_numpy(signal_np)
    field = FormantWarpField(signal, method.formant_cell_s)
    most = method.formant_pct / 100
    return optimise_field(field, (field.cells,), most, signal, starts, surrogates, method, rng)


def band_weights(bands: int) -> torch.Tensor:
    """[F, bands]: each STFT bin's share of the gain grid's log-spaced bands, as the
    runtime's plainsight.gainfield.GainField interpolates them."""
    freqs = np.fft.rfftfreq(SHAPE_FFT, 1.0 / RATE)
    centres = np.geomspace(LOWEST_HZ, HIGHEST_HZ, bands)
    return torch.from_numpy(hat_matrix(np.log(np.maximum(freqs, 1.0)), np.log(centres)))


def optimise_gain(signal_np, starts, surrogates, method: Method, rng, start=None) -> np.ndarray:
    """I-FGSM on the gain field's grid (|g| <= gain_db), as `optimise_field`; `start`:
    field -> the grid to start from (a generator's), else 0."""
    signal = torch.from_numpy(signal_np)
    field = GainField(signal, *method.gain_grid)
    shape = (field.bands.shape[1], field.cells)
    with torch.no_grad():
        u0 = None if start is None else start(field)
    return optimise_field(
        field, shape, method.gain_db, signal, starts, surrogates, method, rng, start=u0
    )


def optimise_layered_gain(signal_np, starts, surrogates, method: Method, rng) -> np.ndarray:
    """I-FGSM on every layer's grid at once, |g_k| <= that layer's bound, as `optimise_field`."""
    signal = torch.from_numpy(signal_np)
    field = LayeredGainField(signal, [(bands, cell_s) for bands, cell_s, _ in method.gain_layers])
    most = torch.cat(
        [
            torch.full((bands * cells,), float(db))
            for (_, _, (bands, cells)), (_, _, db) in zip(
                field.layers, method.gain_layers, strict=True
            )
        ]
    )
    return optimise_field(field, (field.size,), most, signal, starts, surrogates, method, rng)


def optimise_field(field, shape, most, signal, starts, surrogates, method: Method, rng, start=None):
    """I-FGSM on a field's grid u [shape] (the field's input is most * u, |u| <= 1; from
    `start`, else 0), the loss summed over the windows at `starts`, or random signs
    (method.random); returns the perturbation field(most * u) - signal."""
    if method.random:
        u = torch.from_numpy(rng.choice([-1.0, 1.0], shape).astype(np.float32))
    else:
        u = torch.zeros(shape) if start is None else start.clone()
        step = min(1.0, 2.0 / max(method.steps, 1))
        index = torch.from_numpy(starts[:, None] + np.arange(WINDOW)[None, :])
        for _ in range(method.steps):
            u = u.detach().requires_grad_(True)
            windows = field(most * u)[index]
            total = sum(objective(s.logits(windows), s.target, "ce") for s in surrogates)
            (g,) = torch.autograd.grad(total, u)
            u = (u - step * torch.sign(g)).clamp(-1.0, 1.0)
    with torch.no_grad():
        return (field(most * u) - signal).numpy()


def has_feature_map(s: Surrogate) -> bool:
    """A log-mel CNN or a Whisper head: what feature_disruption can read."""
    return isinstance(s.model, M.Model) or hasattr(s.model, "encoder")


def feature_disruption(s: Surrogate, windows, clean_windows, layer: int) -> torch.Tensor:
    """Loss to MINIMISE: minus the relative squared change of an intermediate feature map (a
    log-mel CNN's first `layer` body layers; a Whisper head's encoder after `layer` blocks), a
    model-agnostic push away from the clean clip's features rather than toward one model's
    decision."""
    if hasattr(s.model, "encoder"):

        def head(x):
            return s.model.encoder(x, depth=layer)

    else:
        body = s.model.body[:layer]

        def head(x):
            return body(s.model.features(x, fast=True))

    with torch.no_grad():
        ref = head(clean_windows)
    out = head(windows)
    return -(out - ref).pow(2).mean() / ref.pow(2).mean().clamp_min(1e-12)


def mixtures(adv: torch.Tensor, starts: np.ndarray, method: Method, rng):
    """The inputs one gradient is averaged over: method.samples random transformations of
    the clip, or with Admix, scaled copies of it with other audio mixed in."""
    if not method.admix:
        for _ in range(method.samples):
            yield transform(adv, starts, method.diversity, rng)
        return
    pool, n = method.admix_pool, len(adv)
    for _ in range(method.admix_copies):
        first = int(rng.integers(0, len(pool) - n))
        other = torch.from_numpy(pool[first : first + n])
        for level in range(method.admix_scales):
            x, st = transform(adv + method.admix * other, starts, method.diversity, rng)
            yield x * 0.5**level, st


def gradient(u, signal, bound, starts, surrogates, method: Method, rng, shaper=None):
    u = u.detach().requires_grad_(True)
    adv = signal + (shaper or (lambda v: v))(bound * u)
    total = torch.zeros(())
    for x, st in mixtures(adv, starts, method, rng):
        index = torch.from_numpy(st[:, None] + np.arange(WINDOW)[None, :])
        windows = x[index]
        for s in surrogates:
            feature = "feature" in method.loss and has_feature_map(s)
            if feature:
                total = total + feature_disruption(s, windows, signal[index], method.layer)
            if not feature or method.loss == "ce+feature":
                kind = "margin" if method.loss == "margin" else "ce"
                total = total + objective(s.logits(windows), s.target, kind)
    (g,) = torch.autograd.grad(total, u)
    return g


def optimise(signal_np, bound_np, starts, surrogates, method: Method, rng) -> np.ndarray:
    """I-FGSM family on u (delta = bound * u, |u| <= 1), loss summed over the windows at
    `starts`, as Masker._optimise does."""
    signal, bound = torch.from_numpy(signal_np), torch.from_numpy(bound_np)
    shaper = SpectralShaper(signal, method.shape, method.masking)
    u = torch.zeros_like(signal)
    if "feature" in method.loss:  # a feature distance has zero gradient at the clean point
        u = torch.from_numpy(rng.uniform(-0.1, 0.1, len(u)).astype(np.float32))
    if method.random:  # the same shaping and budget with no gradient at all
        u = torch.from_numpy(rng.choice([-1.0, 1.0], len(u)).astype(np.float32))
        with torch.no_grad():
            return shaper(bound * u).numpy()
    step = min(1.0, 2.0 / method.steps)
    velocity = torch.zeros_like(signal)
    variance = torch.zeros_like(signal)
    for _ in range(method.steps):
        g = gradient(u, signal, bound, starts, surrogates, method, rng, shaper)
        if method.variance:  # VMI-FGSM: gradient + last step's neighbourhood variance
            tuned = g + variance
            around = torch.zeros_like(g)
            for _ in range(method.variance):
                jitter = torch.from_numpy(rng.uniform(-1.5, 1.5, len(u)).astype(np.float32))
                around += gradient(
                    u + jitter, signal, bound, starts, surrogates, method, rng, shaper
                )
            variance = around / method.variance - g
            g = tuned
        if method.momentum:
            velocity = method.momentum * velocity + g / g.abs().mean().clamp_min(1e-20)
            g = velocity
        u = (u - step * torch.sign(g)).clamp(-1.0, 1.0)
    with torch.no_grad():
        return shaper(bound * u).numpy()


def craft(audio: np.ndarray, snr_db: float, surrogates, method: Method, rng) -> np.ndarray:
    """Perturbation of one clip (same length) under the runtime's budget, as Masker.mask."""
    signal, bound, starts, offset = plan(audio, snr_db)
    if method.gain_layers:
        delta = optimise_layered_gain(signal, starts, surrogates, method, rng)
    elif method.harmonic:
        delta = optimise_harmonic(signal, starts, surrogates, method, rng)
    elif method.gain_db:
        delta = optimise_gain(signal, starts, surrogates, method, rng)
    elif method.warp_ms:
        delta = optimise_warp(signal, starts, surrogates, method, rng)
    elif method.formant_pct:
        delta = optimise_formant(signal, starts, surrogates, method, rng)
    else:
        delta = optimise(signal, bound, starts, surrogates, method, rng)
    return delta[offset : offset + len(audio)]


def files_only_method(method: Method) -> bool:
    """Fields crafted over the whole clip at once, with no hop-by-hop form."""
    return bool(
        method.gain_layers
        or method.warp_ms
        or method.formant_pct
        or method.harmonic
        or method.generator
    )


def craft_stream(audio, snr_db: float, surrogates, method: Method, rng, hop: int = 4000):
    """The live path (StreamProcessor at 16 kHz, 250 ms hops): each hop is perturbed with
    the one window ending at it; the past already sent is fixed (bound 0) but part of the
    window the loss sees."""
    raw = np.zeros(WINDOW, np.float32)
    sent = np.zeros(WINDOW, np.float32)
    seen, out = 0, []
    for first in range(0, len(audio), hop):
        new = audio[first : first + hop]
        n = len(new)
        new = np.pad(new, (0, hop - n))
        raw = np.concatenate([raw[hop:], new])
        sent = np.concatenate([sent[hop:], np.zeros(hop, np.float32)])
        seen = min(seen + hop, WINDOW)
        valid = np.zeros((1, WINDOW), np.float32)
        valid[0, WINDOW - seen :] = 1.0
        bound = budget(snr_db, raw[None], valid)[0]
        bound[: WINDOW - hop] = 0.0
        delta = optimise(raw + sent, bound, np.zeros(1, int), surrogates, method, rng)
        sent[-hop:] = delta[-hop:]
        out.append(delta[-hop:][:n])
    return np.concatenate(out)


def _ramped_hop(spec, band_of_bin, start_db, centre, knots, length, end_db):
    """The segment's samples after its first SHAPE_FFT (the segment starts that many samples
    before the hop) under a per-band gain that is start_db at frame centre 0 (the hop's
    start), then end_db[k] at centre knots[k], linear in between and constant after."""
    values = torch.cat([start_db[None, :], end_db.reshape(len(knots), -1)])  # [K+1, bands]
    at = torch.cat([torch.zeros(1), torch.as_tensor(knots, dtype=torch.float32)])
    pos = centre.clamp(0.0, float(at[-1]))
    k = torch.searchsorted(at, pos, right=True).clamp(1, len(at) - 1)
    share = ((pos - at[k - 1]) / (at[k] - at[k - 1]))[:, None]
    per_frame = values[k - 1] * (1 - share) + values[k] * share  # [T, bands]
    db = band_of_bin @ per_frame.T
    window = torch.hann_window(SHAPE_FFT)
    gained = spec * torch.pow(10.0, db / 20.0)
    y = torch.istft(gained, SHAPE_FFT, SHAPE_HOP, window=window, length=length)
    return y[SHAPE_FFT:]


def craft_stream_gain(audio, surrogates, method: Method, rng, hop: int = 4000):
    """The gain stage on the live path, simulated: each 250 ms hop gets one gain per band
    that ramps linearly from the gain the previous hop ended on (fixed: sent) to this hop's
    end value, the only thing kept (I-FGSM, loss on the 2 s window ending at the hop: the
    sent past, then the re-balanced hop). With method.lookahead = L > 0 the stream waits L
    samples: the window ends L after the hop, and a second gain per band at the look-ahead's
    end (ramping on from the hop's) is optimised with it and then dropped (the next hop
    chooses it again), so each hop's gain is chosen where the hop is not at the window's
    edge. The segment's frames that reach past its end see a reflection of it (a real
    stream would wait N_FFT/2 samples for them). Returns y - audio. The grid's time cell is
    the hop here, whatever method.gain_grid says."""
    bands, ahead = method.gain_grid[0], int(method.lookahead)
    window = torch.hann_window(SHAPE_FFT)
    band_of_bin = band_weights(bands)
    margin = SHAPE_FFT  # raw samples before the hop, so its first frames are whole
    raw = np.concatenate(
        [np.zeros(WINDOW, np.float32), audio.astype(np.float32), np.zeros(ahead, np.float32)]
    )
    end = WINDOW + len(audio)
    sent = np.zeros(WINDOW, np.float32)
    start_db = torch.zeros(bands)
    knots = [float(hop)] + ([float(hop + ahead)] if ahead else [])
    out = []
    for first in range(WINDOW, end, hop):
        n = min(hop, end - first)
        seg = np.pad(raw[first - margin : first + n + ahead], (0, hop - n))
        seg = torch.from_numpy(seg)
        spec = torch.stft(seg, SHAPE_FFT, SHAPE_HOP, window=window, return_complex=True)
        centre = (torch.arange(spec.shape[1]) * SHAPE_HOP - margin).float()  # in the hop
        past = torch.from_numpy(sent[hop + ahead :])
        rebalanced = partial(
            _ramped_hop, spec, band_of_bin, start_db, centre, knots, margin + hop + ahead
        )

        u = torch.zeros(len(knots), bands)
        step = min(1.0, 2.0 / method.steps)
        if method.random:
            u = torch.from_numpy(rng.choice([-1.0, 1.0], (len(knots), bands)).astype(np.float32))
        for _ in range(0 if method.random else method.steps):
            u = u.detach().requires_grad_(True)
            context = torch.cat([past, rebalanced(method.gain_db * u)])[None]
            total = sum(objective(s.logits(context), s.target, "ce") for s in surrogates)
            (g,) = torch.autograd.grad(total, u)
            u = (u - step * torch.sign(g)).clamp(-1.0, 1.0)
        with torch.no_grad():
            end_db = method.gain_db * u[0]
            # what is sent: the hop alone, its gain ramping to end_db and held there
            new = rebalanced(end_db[None, :].expand(len(knots), bands)).numpy()[:hop]
        start_db = end_db.detach()
        sent = np.concatenate([sent[hop:], new])
        out.append(new[:n] - raw[first : first + n])
    return np.concatenate(out)


UNIVERSAL_STEPS, UNIVERSAL_BATCH, UNIVERSAL_LR = 300, 8, 0.01


def random_crops(clips: list[np.ndarray], batch: int, rng) -> np.ndarray:
    """[batch, WINDOW]: random 2 s crops of random clips (short clips at a random place in
    silence), each at a random level within +-6 dB."""
    crops = []
    for i in rng.integers(0, len(clips), batch):
        audio = clips[i]
        if len(audio) <= WINDOW:
            crop = np.zeros(WINDOW, np.float32)
            at = int(rng.integers(0, WINDOW - len(audio) + 1))
            crop[at : at + len(audio)] = audio
        else:
            at = int(rng.integers(0, len(audio) - WINDOW + 1))
            crop = audio[at : at + WINDOW]
        crops.append(crop * float(10 ** (rng.uniform(-6, 6) / 20)))
    return np.stack(crops).astype(np.float32)


def train_universal(clips: list[np.ndarray], surrogates, snr_db: float, seed: int) -> np.ndarray:
    """A universal perturbation: one 2 s signal v, added (circularly shifted by a random
    offset, scaled to each crop's RMS at snr_db) to random 2 s crops of the TRAINING
    speakers' clips, trained with Adam to move every surrogate toward the target class.
    The shift and gain draws make it work wherever a listener's window starts."""
    rng = np.random.default_rng(seed)
    v = torch.from_numpy(rng.standard_normal(WINDOW).astype(np.float32)).requires_grad_(True)
    opt = torch.optim.Adam([v], lr=UNIVERSAL_LR)
    scale = 10 ** (-snr_db / 20)
    for _ in range(UNIVERSAL_STEPS):
        x = torch.from_numpy(random_crops(clips, UNIVERSAL_BATCH, rng))
        rms = x.pow(2).mean(dim=1, keepdim=True).sqrt()
        shifted = torch.roll(v, int(rng.integers(0, WINDOW)))
        delta = shifted / shifted.pow(2).mean().sqrt() * rms * scale
        loss = sum(objective(s.logits(x + delta), s.target, "ce") for s in surrogates)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return v.detach().numpy()


GENERATOR_STEPS, GENERATOR_BATCH, GENERATOR_LR = 1500, 8, 1e-3
LEVEL_RANGE_DB = 80.0  # band levels below the clip's loudest cell by more are lifted to it


def band_levels(field: GainField) -> torch.Tensor:
    """[bands, cells]: the clip's power in each cell of the gain grid, in dB relative to the
    clip's mean cell, / 10 (the generator's input: what the speech is where each gain goes)."""
    power = field.bands.T @ field.spec.abs().pow(2)  # [bands, frames]
    cells = power @ field.times.T / field.times.sum(1).clamp_min(1e-6)
    db = 10 * torch.log10(cells + 1e-12)
    db = db.clamp_min(float(db.max()) - LEVEL_RANGE_DB)
    return (db - db.mean()) / 10


class GainGenerator(torch.nn.Module):
    """An amortised gain field: a small dilated 1-D CNN over the grid's time cells (receptive
    field +-30 cells, 3 s at 100 ms) from the clip's band levels to its gain grid
    u in [-1, 1] (the field is gain_db * u). Trained offline over the training speakers
    against the surrogates; masking is one forward pass. In image work such generators
    transfer further than per-input iterations: over many inputs they cannot fit one
    input's surrogate-specific directions, only what moves the surrogate on every input."""

    def __init__(self, bands: int, width: int = 64):
        super().__init__()
        layers, channels = [], bands
        for dilation in (1, 2, 4, 8):
            conv = torch.nn.Conv1d(channels, width, 5, padding=2 * dilation, dilation=dilation)
            layers += [conv, torch.nn.ReLU()]
            channels = width
        layers.append(torch.nn.Conv1d(width, bands, 1))
        self.net = torch.nn.Sequential(*layers)

    def forward(self, levels: torch.Tensor) -> torch.Tensor:  # [batch, bands, cells]
        return torch.tanh(self.net(levels))


def train_gain_generator(clips: list[np.ndarray], surrogates, method: Method, seed: int):
    """GainGenerator trained with Adam on random 2 s crops of the TRAINING speakers' clips
    (random level, as the universal perturbation) to move every surrogate toward the
    target class under the gain field it produces. Returns (generator, loss per 100 steps)."""
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    bands, cell_s = method.gain_grid
    generator = GainGenerator(bands)
    opt = torch.optim.Adam(generator.parameters(), lr=GENERATOR_LR)
    history, running = [], 0.0
    for step in range(1, (method.generator_steps or GENERATOR_STEPS) + 1):
        crops = random_crops(clips, GENERATOR_BATCH, rng)
        fields = [GainField(torch.from_numpy(c), bands, cell_s) for c in crops]
        u = generator(torch.stack([band_levels(f) for f in fields]))
        y = torch.stack([f(method.gain_db * g) for f, g in zip(fields, u, strict=True)])
        loss = sum(objective(s.logits(y), s.target, "ce") for s in surrogates)
        opt.zero_grad()
        loss.backward()
        opt.step()
        running += float(loss.detach())
        if step % 100 == 0:
            history.append(round(running / 100, 4))
            print(f"generator step {step}: loss {history[-1]}", file=sys.stderr)
            running = 0.0
    return generator.eval(), history


def craft_generated(audio, generator, surrogates, method: Method, rng) -> np.ndarray:
    """Perturbation of one clip by the generator's gain field, laid out as `craft`; with
    method.steps > 0, that many I-FGSM steps on the grid start from it."""
    signal, _, starts, offset = plan(audio, 35.0)  # the gain field has no sample budget
    delta = optimise_gain(
        signal, starts, surrogates, method, rng, start=lambda f: generator(band_levels(f)[None])[0]
    )
    return delta[offset : offset + len(audio)]


def tile_universal(v: np.ndarray, n: int) -> np.ndarray:
    """The universal perturbation repeated over a clip of n samples (at_snr scales it)."""
    return np.tile(v, -(-n // len(v)))[:n]


def at_snr(clean: np.ndarray, delta: np.ndarray, snr_db: float) -> np.ndarray:
    """Scale a perturbation so that the clip's measured SNR is exactly snr_db."""
    power = float(np.mean(delta.astype(np.float64) ** 2))
    if power == 0:
        return clean.copy()
    want = float(np.mean(clean.astype(np.float64) ** 2)) * 10 ** (-snr_db / 10)
    out = clean + delta * np.sqrt(want / power)
    return np.clip(out, -1.0, 1.0).astype(np.float32)


# ----------------------------------------------------------------------------- the panel
class TorchScorer:
    """A torch checkpoint scored with the evaluation's protocol (mean logits of 2 s
    windows, hop 1 s, short clips centred), like plainsight.evaluate.pipeline.Scorer."""

    def __init__(self, corpus: str, name: str):
        self.model = M.load_checkpoint(CHECKPOINTS / corpus / f"{name}.pt")
        self.name = name
        self.classes = list(self.model.checkpoint["classes"])

    @torch.no_grad()
    def clip_logits(self, audios):
        out = []
        for a in audios:
            wins = torch.from_numpy(P.clip_windows(a, WINDOW))
            out.append(forward(self.model, wins, fast=True).double().mean(0).numpy())
        return np.stack(out)


def dev_panel(corpus: str) -> tuple[list, str]:
    """E's development panel when it exists; else the provisional one (existing attackers
    + seed-cnn). Never the final panel."""
    try:
        from plainsight.evaluate.panel import load_panel

        members = load_panel(corpus, "dev")
        scorers = [m if hasattr(m, "clip_logits") else P.Scorer(m) for m in members]
        if any("-dev-" in s.name for s in scorers):
            return scorers, "dev panel (plainsight.evaluate.panel)"
    except ImportError:
        pass
    specs = [s for s in P.find_attackers(corpus) if "final" not in s.name]
    scorers = [P.Scorer(s) for s in specs if "-dev-" not in s.name]
    return scorers + [TorchScorer(corpus, "seed-cnn")], "provisional (attackers + seed-cnn)"


def uar(scorer, audios, labels) -> float:
    """The member's own report (cross-corpus members keep only the shared labels)."""
    if hasattr(scorer, "report"):
        return float(scorer.report(audios, labels)["uar"])
    true, pred = P.predictions(scorer, audios, labels)
    return float(metrics.classification_report(true, pred, scorer.classes)["uar"])


# ----------------------------------------------------------------------------- methods
ALL_DIVERSITY = ("shift", "gain", "resample", "lowpass", "noise", "quantise")
ENSEMBLE = ["compact", "surrogate-crnn", "surrogate-mfcc", "surrogate-cnn2"]
# Same family, other seeds (in image work, an ensemble of seeds transfers to another seed).
SEEDS = ["compact", "surrogate-compact-s11", "surrogate-compact-s12", "surrogate-compact-s13"]
ROBUST = ["surrogate-compact-robust"]
WHISPER = "surrogate-whisper-lr-s11"  # python -m plainsight_export.whisper_torch
WHISPER_L3 = "surrogate-whisper-l3-lr-s11"  # ... --depth 3: a head on the 3rd block's output
STUDENT = "surrogate-student-whisper-s11"  # python -m plainsight_export.distill
STUDENT_ADV = "surrogate-student-whisper-adv-s11"  # ... --adversarial
STUDENT_EGEMAPS = "surrogate-student-egemaps-s11"  # ... --teacher egemaps
ROBUST_ENSEMBLE = [
    "surrogate-compact-robust",
    "surrogate-crnn",
    "surrogate-mfcc",
    "surrogate-cnn2-robust",
]


# Flat-minimum surrogates: rho of plainsight-train --sam-rho -> checkpoint stem (seed 11)
SAM = {"0": "plain", "0.05": "sam005", "0.1": "sam01", "0.2": "sam02", "0.5": "sam05"}


def _methods(*specs: tuple[str, list[str], dict]) -> dict[str, Method]:
    return {name: Method(name, surrogates, **kw) for name, surrogates, kw in specs}


METHODS = _methods(
    ("default", ["compact"], {"note": "today's default: I-FGSM 10 toward neutral, compact"}),
    ("di", ["compact"], {"diversity": ALL_DIVERSITY}),
    ("di-k2", ["compact"], {"diversity": ALL_DIVERSITY, "samples": 2}),
    ("mi", ["compact"], {"momentum": 1.0}),
    ("margin", ["compact"], {"loss": "margin"}),
    ("robust", ROBUST, {}),
    ("robust-di", ROBUST, {"diversity": ALL_DIVERSITY}),
    ("ens", ENSEMBLE, {}),
    ("ens-di", ENSEMBLE, {"diversity": ALL_DIVERSITY}),
    ("ens-di-mi", ENSEMBLE, {"diversity": ALL_DIVERSITY, "momentum": 1.0}),
    ("ens-di-margin", ENSEMBLE, {"diversity": ALL_DIVERSITY, "loss": "margin"}),
    ("ens-di-vmi", ENSEMBLE, {"diversity": ALL_DIVERSITY, "momentum": 1.0, "variance": 2}),
    ("ens-robust", ROBUST_ENSEMBLE, {}),
    ("ens-robust-di", ROBUST_ENSEMBLE, {"diversity": ALL_DIVERSITY}),
    ("ens-20", ENSEMBLE, {"steps": 20}),
    ("ens-di-20", ENSEMBLE, {"diversity": ALL_DIVERSITY, "steps": 20}),
    ("compact+mfcc", ["compact", "surrogate-mfcc"], {}),
    ("default-20", ["compact"], {"steps": 20}),
    ("seeds-20", SEEDS, {"steps": 20}),
    ("seeds-di-20", SEEDS, {"diversity": ALL_DIVERSITY, "steps": 20}),
    ("mfcc-only", ["surrogate-mfcc"], {}),
    ("crnn-only", ["surrogate-crnn"], {}),
    # Where the energy goes (issue 9 §2): the perturbation's spectrum follows the speech's.
    ("feature-l3", ["compact"], {"loss": "feature", "layer": 3}),
    ("feature-l6", ["compact"], {"loss": "feature", "layer": 6}),
    ("feature-l12", ["compact"], {"loss": "feature", "layer": 12}),
    ("ce+feature-l6", ["compact"], {"loss": "ce+feature", "layer": 6}),
    ("universal", ["compact"], {"universal": True}),
    ("universal-ens", ENSEMBLE, {"universal": True}),
    ("shaped-0.5", ["compact"], {"shape": 0.5}),
    ("shaped-1", ["compact"], {"shape": 1.0}),
    ("compact+mfcc-shaped-1", ["compact", "surrogate-mfcc"], {"shape": 1.0}),
    # A psychoacoustic bound: the spread masking threshold instead of the spectrum itself.
    ("masking-1", ["compact"], {"shape": 1.0, "masking": True}),
    ("masking-0.5", ["compact"], {"shape": 0.5, "masking": True}),
    # More energy under the threshold (masking-1 keeps PESQ 4.0 at 22 dB): does it transfer,
    # beside noise shaped the same way (the fair control for a shaped perturbation)?
    ("masking-1-noise", [], {"shape": 1.0, "masking": True, "random": True}),
    ("masking-0.5-noise", [], {"shape": 0.5, "masking": True, "random": True}),
    ("masking-1-20", ["compact"], {"shape": 1.0, "masking": True, "steps": 20}),
    ("masking-1-ens-20", ENSEMBLE, {"shape": 1.0, "masking": True, "steps": 20}),
    ("masking-1-seeds-20", SEEDS, {"shape": 1.0, "masking": True, "steps": 20}),
    # A gain field: the speech made louder or quieter in broad time-frequency regions.
    ("gain-16x100", ["compact"], {"gain_db": 3.0}),
    ("gain-16x100-20", ["compact"], {"gain_db": 3.0, "steps": 20}),
    ("gain-16x100-noise", [], {"gain_db": 3.0, "random": True}),
    ("gain-16x100-ens-20", ENSEMBLE, {"gain_db": 3.0, "steps": 20}),
    # the gain field moves other seeds of the compact model (unlike the additive mask): do
    # four seeds together move the held-out CNNs further?
    ("gain-16x100-seeds-20", SEEDS, {"gain_db": 3.0, "steps": 20}),
    ("gain-8x250", ["compact"], {"gain_db": 3.0, "gain_grid": (8, 0.25)}),
    ("gain-8x250-noise", [], {"gain_db": 3.0, "gain_grid": (8, 0.25), "random": True}),
    ("gain-32x50", ["compact"], {"gain_db": 3.0, "gain_grid": (32, 0.05)}),
    ("gain-32x50-noise", [], {"gain_db": 3.0, "gain_grid": (32, 0.05), "random": True}),
    # A time warp: the speech a few ms early or late, a few per cent faster or slower.
    ("warp-1ms", ["compact"], {"warp_ms": 1.0}),
    ("warp-1ms-noise", [], {"warp_ms": 1.0, "random": True}),
    ("warp-2.5ms", ["compact"], {"warp_ms": 2.5}),
    ("warp-2.5ms-noise", [], {"warp_ms": 2.5, "random": True}),
    ("warp-5ms", ["compact"], {"warp_ms": 5.0}),
    ("warp-5ms-noise", [], {"warp_ms": 5.0, "random": True}),
    ("warp-1ms-50", ["compact"], {"warp_ms": 1.0, "warp_cell_s": 0.05}),
    ("warp-1ms-50-noise", [], {"warp_ms": 1.0, "warp_cell_s": 0.05, "random": True}),
    # A surrogate trained on both corpora (two languages, two recording set-ups; shared
    # labels): are its gradients closer to what models trained elsewhere read?
    ("both", ["surrogate-compact-both"], {}),
    ("gain-16x100-both", ["surrogate-compact-both"], {"gain_db": 3.0}),
    (
        "gain-16x100-compact+both-20",
        ["compact", "surrogate-compact-both"],
        {"gain_db": 3.0, "steps": 20},
    ),
    # The rebalance grid plus a coarse one with a larger bound (level and tilt over about a
    # second, where every family's gradient agrees most), beside random fields of the same
    # layers; and the coarse grid alone.
    *[
        (
            f"gain-16x100+{coarse}{tail}",
            ["compact"] if not tail else [],
            {
                "gain_layers": ((16, 0.1, fine), (bands, cell_s, 6.0)),
                "random": bool(tail),
            },
        )
        for coarse, bands, cell_s, fine in (
            ("2x1000", 2, 1.0, 3.0),
            ("4x400", 4, 0.4, 3.0),
            ("2x1000-r4", 2, 1.0, 1.5),
        )
        for tail in ("", "-noise")
    ],
    ("gain-2x1000", ["compact"], {"gain_db": 3.0, "gain_grid": (2, 1.0)}),
    ("gain-2x1000-noise", [], {"gain_db": 3.0, "gain_grid": (2, 1.0), "random": True}),
    # Admix (Wang et al., ICCV 2021): the gradient taken at the clip with a fifth of another
    # speaker's audio mixed in, at three levels, averaged over three such mixtures.
    ("admix", ["compact"], {"admix": 0.2}),
    ("admix-ens", ENSEMBLE, {"admix": 0.2}),
    # Model-side tricks of image transfer work on the same surrogate: its linear skeleton's
    # gradient (LinBP), and dropout kept on while attacking (a new sub-network every step).
    ("linbp", ["compact~linbp"], {}),
    ("dropout", ["compact~dropout"], {}),
    ("gain-16x100-linbp", ["compact~linbp"], {"gain_db": 3.0}),
    ("gain-16x100-dropout", ["compact~dropout"], {"gain_db": 3.0}),
    # A head on a public pretrained backbone (Whisper base's encoder, differentiable in torch):
    # does a change that moves it reach other classifiers built on the same backbone?
    ("whisper", [WHISPER], {}),
    ("gain-16x100-whisper", [WHISPER], {"gain_db": 3.0}),
    ("compact+whisper-20", ["compact", WHISPER], {"steps": 20}),
    # The zero-cost form a device could ship: one pattern, trained offline through the encoder.
    # A head on the encoder's middle (3 of 6 blocks: half the cost), where emotion reads best
    ("whisper-l3", [WHISPER_L3], {}),
    ("whisper+l3-20", [WHISPER, WHISPER_L3], {"steps": 20}),
    ("whisper-1", [WHISPER], {"steps": 1}),  # fewer steps through the encoder: the cost frontier
    ("whisper-3", [WHISPER], {"steps": 3}),
    ("universal-whisper", [WHISPER], {"universal": True}),
    ("universal-whisper-l3", [WHISPER_L3], {"universal": True}),  # ... through the middle layer
    # Push the encoder's features away from the clean clip's after its convolutions (0) or
    # 2 of 6 blocks: a fraction of the cost; does the change carry through the later blocks?
    ("whisper-feature-l0", [WHISPER], {"loss": "feature", "layer": 0}),
    ("whisper-feature-l2", [WHISPER], {"loss": "feature", "layer": 2}),
    ("whisper-feature-l6", [WHISPER], {"loss": "feature", "layer": 6}),
    # ... or a compact CNN distilled from the Whisper head (python -m plainsight_export.distill),
    # whose gradient the device can afford: does it carry the Whisper head's reach?
    ("student", [STUDENT], {}),
    ("student-adv", [STUDENT_ADV], {}),
    ("gain-16x100-compact+whisper-20", ["compact", WHISPER], {"gain_db": 3.0, "steps": 20}),
    # Flat-minimum surrogates (SAM, plainsight-train --sam-rho): one seed and recipe, only
    # rho differs (plain = rho 0, retrained beside them). In image work flatter surrogates'
    # gradients transfer further.
    *[(f"sam-{rho}", [f"surrogate-compact-{stem}-s11"], {}) for rho, stem in SAM.items()],
    *[
        (f"gain-16x100-sam-{rho}", [f"surrogate-compact-{SAM[rho]}-s11"], {"gain_db": 3.0})
        for rho in ("0", "0.2", "0.5")
    ],
    # The formants moved by a few per cent, optimised (and at random: the control), per 100 ms
    *[
        (f"formant-{pct}{tail}", [] if tail else ["compact"], {"formant_pct": pct} | kw)
        for pct in (3, 6, 10)
        for tail, kw in (("", {}), ("-noise", {"random": True}))
    ],
    ("formant-6-ens-20", ENSEMBLE, {"formant_pct": 6, "steps": 20}),
    # Voice quality: the harmonics and the valleys between them gained apart (split), or
    # against each other (contrast), on the gain field's grid; random signs: the controls
    *[
        (
            f"harmonic-{kind}-16x100{tail}",
            [] if tail else ["compact"],
            {"gain_db": 3.0, "harmonic": kind} | kw,
        )
        for kind in ("split", "contrast")
        for tail, kw in (("", {}), ("-noise", {"random": True}))
    ],
    ("harmonic-split-16x100-ens-20", ENSEMBLE, {"gain_db": 3.0, "harmonic": "split", "steps": 20}),
    # The gain field through a surrogate trained with random equalisers (--augment channel),
    # beside the same seed trained with the panel's augmentation: can a surrogate that no
    # equaliser moves still find a gain that hides?
    *[
        (f"gain-16x100-{recipe}-s{seed}", [f"surrogate-compact-{recipe}-s{seed}"], {"gain_db": 3.0})
        for recipe in ("channel", "panel")
        for seed in (21, 22, 23)
    ],
    *[
        (
            f"gain-16x100-{recipe}-seeds-20",
            [f"surrogate-compact-{recipe}-s{seed}" for seed in (21, 22, 23)],
            {"gain_db": 3.0, "steps": 20},
        )
        for recipe in ("channel", "panel")
    ],
    # An amortised gain field: a generator trained over the training speakers (one pass per
    # clip), alone and as the start of the usual 10 steps
    ("gen-gain-16x100", ["compact"], {"gain_db": 3.0, "generator": True, "steps": 0}),
    ("gen-gain-16x100+10", ["compact"], {"gain_db": 3.0, "generator": True}),
    # ... trained four times longer: does a generator that moves its surrogate as far as
    # the iterations do keep its larger share of transfer?
    (
        "gen-gain-16x100-6k",
        ["compact"],
        {"gain_db": 3.0, "generator": True, "steps": 0, "generator_steps": 6000},
    ),
    (
        "gen-gain-16x100-ens-6k",
        ENSEMBLE,
        {"gain_db": 3.0, "generator": True, "steps": 0, "generator_steps": 6000},
    ),
    # A surrogate of the eGeMAPS family (models.SpectralStatsLinear: loudness, alpha ratio,
    # Hammarberg index, slopes, MFCC 1-4, flux, band shares; functionals, linear): additive
    # and as a gain field, alone and beside the compact model or the four-family ensemble
    ("spectral-only", ["surrogate-spectral"], {}),
    ("compact+spectral", ["compact", "surrogate-spectral"], {}),
    ("gain-16x100-spectral", ["surrogate-spectral"], {"gain_db": 3.0}),
    (
        "gain-16x100-compact+spectral-20",
        ["compact", "surrogate-spectral"],
        {"gain_db": 3.0, "steps": 20},
    ),
    (
        "gain-16x100-ens+spectral-20",
        [*ENSEMBLE, "surrogate-spectral"],
        {"gain_db": 3.0, "steps": 20},
    ),
    # ... or a compact CNN distilled from an openSMILE eGeMAPS classifier of our own (the
    # real features, which no differentiable stand-in computes)
    ("student-egemaps", [STUDENT_EGEMAPS], {}),
    ("gain-16x100-student-egemaps", [STUDENT_EGEMAPS], {"gain_db": 3.0}),
    # --stream only: the hop's gain chosen with the stream waiting 250 / 500 ms more
    ("gain-16x100-la250", ["compact"], {"gain_db": 3.0, "lookahead": 4000}),
    ("gain-16x100-la500", ["compact"], {"gain_db": 3.0, "lookahead": 8000}),
)


# ----------------------------------------------------------------------------- the study
def training_audio(args) -> list[np.ndarray]:
    """The training speakers' clips (never the test or validation speakers)."""
    from plainsight_export import data as D

    if getattr(args, "_training_audio", None) is None:
        args._training_audio = D.fixed_split(D.load_corpus(args.data, args.corpus))["train"].audio
    return args._training_audio


def run(args) -> dict:
    torch.set_num_threads(1)
    clips = P.test_clips(args.data, args.corpus, args.limit)
    clean = [c.audio for c in clips]
    labels = [c.utt.label for c in clips]
    white = P.Scorer(load_model_dir(BUNDLED / f"{args.corpus}-compact"))
    panel, panel_kind = dev_panel(args.corpus)
    print(f"panel: {panel_kind}: {[s.name for s in panel]}", file=sys.stderr)
    out_path = args.out / "transfer_study.json"
    results = json.loads(out_path.read_text()) if out_path.is_file() else {}
    results.update(
        corpus=args.corpus,
        n_clips=len(clips),
        panel=panel_kind,
        panel_members=[s.name for s in panel],
        snr_db_budget=args.budget_db,
        snr_db_measured_target=args.snr_db,
    )
    results["clean"] = {s.name: uar(s, clean, labels) for s in [white, *panel]}
    names = set(results["panel_members"])
    previous = results.get("methods", {})
    if args.rescore:  # score cached perturbations with today's panel, no crafting
        args.methods = [m for m in previous if (args.cache / f"{m}.npz").is_file()]
    # Rows scored by another panel are stale: drop them (--rescore brings cached ones back).
    results["methods"] = {k: v for k, v in previous.items() if set(v["panel_uar"]) == names}
    loaded: dict[str, Surrogate] = {}
    args.cache.mkdir(parents=True, exist_ok=True)
    for name in args.methods:
        method = METHODS[name.removesuffix("@stream")]
        cached = args.cache / f"{name}.npz"
        if args.rescore:
            masked = cached_clips(args, name, len(clean))
            seconds = previous[name]["craft_seconds"]
        else:
            for s in method.surrogates:
                loaded.setdefault(s, load_surrogate(args.corpus, s))
            surrogates = [loaded[s] for s in method.surrogates]
            rng = np.random.default_rng(args.seed)
            if method.admix and method.admix_pool is None:
                method.admix_pool = np.concatenate(training_audio(args)).astype(np.float32)
            start = time.perf_counter()
            if method.universal:  # trained on the training speakers, then free per clip
                v = train_universal(training_audio(args), surrogates, args.snr_db, args.seed)
                np.save(args.cache / f"{name}-universal.npy", v)
                masked = [at_snr(a, tile_universal(v, len(a)), args.snr_db) for a in clean]
            else:
                if method.generator:  # trained on the training speakers, one pass per clip
                    generator, history = train_gain_generator(
                        training_audio(args), surrogates, method, args.seed
                    )
                    torch.save(generator.state_dict(), args.cache / f"{name}-generator.pt")
                    method.extra["generator_loss"] = history
                    deltas = [craft_generated(a, generator, surrogates, method, rng) for a in clean]
                elif args.stream and method.gain_db:
                    deltas = [craft_stream_gain(a, surrogates, method, rng) for a in clean]
                else:
                    crafter = craft_stream if args.stream else craft
                    deltas = [crafter(a, args.budget_db, surrogates, method, rng) for a in clean]
                if method.warp_ms or method.formant_pct:  # a warp scaled in level is no warp
                    masked = [np.clip(a + d, -1, 1) for a, d in zip(clean, deltas, strict=True)]
                else:
                    masked = [at_snr(a, d, args.snr_db) for a, d in zip(clean, deltas, strict=True)]
            seconds = time.perf_counter() - start
            np.savez(cached, **{f"clip{i}": m for i, m in enumerate(masked)})
        noise = P.noise_control(clean, masked)
        pesq = [metrics.pesq_wb(c, m) for c, m in zip(clean, masked, strict=True)]
        snr = [metrics.snr_db(c, m) for c, m in zip(clean, masked, strict=True)]
        row = {
            "surrogates": method.surrogates,
            "steps": method.steps,
            "diversity": list(method.diversity),
            "samples": method.samples,
            "admix": [method.admix, method.admix_copies, method.admix_scales]
            if method.admix
            else None,
            "loss": method.loss,
            "layer": method.layer if "feature" in method.loss else None,
            "momentum": method.momentum,
            "variance": method.variance,
            "shape": method.shape,
            "masking": method.masking,
            "universal": method.universal,
            "random": method.random,
            "gain_db": method.gain_db,
            "gain_grid": list(method.gain_grid) if method.gain_db else None,
            "gain_layers": [list(layer) for layer in method.gain_layers] or None,
            "warp_ms": method.warp_ms,
            "warp_cell_s": method.warp_cell_s if method.warp_ms else None,
            "formant_pct": method.formant_pct,
            "formant_cell_s": method.formant_cell_s if method.formant_pct else None,
            "harmonic": method.harmonic or None,
            "generator": method.generator,
            "generator_steps": (method.generator_steps or GENERATOR_STEPS)
            if method.generator
            else None,
            "generator_loss": method.extra.get("generator_loss"),
            "note": method.note,
            "median_snr_db": metrics.distribution(snr)["median"],
            "pesq_wb": metrics.distribution(pesq),
            "white_box_uar": uar(white, masked, labels),
            "panel_uar": {s.name: uar(s, masked, labels) for s in panel},
            "noise_uar": {s.name: uar(s, noise, labels) for s in panel},
            "craft_seconds": round(seconds, 1),
            "audio_seconds": round(sum(len(a) for a in clean) / RATE, 1),
        }
        results["methods"][name] = row
        print(f"{name}: {json.dumps(row)}", file=sys.stderr)
        write(args.out, results)
    return results


def cached_clips(args, name: str, count: int, where: str = "") -> list[np.ndarray]:
    """The clips method `name` crafted earlier (crafts nothing; missing: exit with a hint)."""
    cached = args.cache / f"{name}.npz"
    if not cached.is_file():
        raise SystemExit(f"transfer-study: {cached} missing: craft {name}{where} first")
    with np.load(cached) as z:
        return [z[f"clip{i}"] for i in range(count)]


def score_cached(args) -> dict:
    """Report only: a panel's UAR on clips a method has ALREADY crafted (on the development
    panel), beside clean and the same-SNR noise control, optionally all three after a codec
    round trip (`--codec opus:24`, calibrated on the clean clips as `plainsight evaluate`
    does). Crafts nothing, so `--score-panel final` can never steer a method; writes
    <panel>_panel[_<codec>].json / .md in --out."""
    from plainsight.evaluate import codec as codecs
    from plainsight.evaluate.panel import load_panel

    torch.set_num_threads(1)
    clips = P.test_clips(args.data, args.corpus, args.limit)
    clean = [c.audio for c in clips]
    labels = [c.utt.label for c in clips]
    codec = codecs.parse_codec(args.codec)
    if codec.lossy:
        codecs.calibrate(codec, clean[:24], RATE)

    def heard(audios):
        return codecs.apply(codec, audios, RATE)[0]

    panel = load_panel(args.corpus, args.score_panel)  # scorers, ONNX and statistics alike
    rows = {"clean": {s.name: uar(s, heard(clean), labels) for s in panel}}
    for name in args.methods:
        masked = cached_clips(args, name, len(clean), where=" on the dev panel")
        noise = P.noise_control(clean, masked)
        rows[name] = {
            "masked": {s.name: uar(s, heard(masked), labels) for s in panel},
            "noise": {s.name: uar(s, heard(noise), labels) for s in panel},
        }
        print(f"{name}: {json.dumps(rows[name])}", file=sys.stderr)
    out = {
        "corpus": args.corpus,
        "panel": args.score_panel,
        "codec": codec.name,
        "n_clips": len(clips),
        "snr_db": args.snr_db,
        "rows": rows,
    }
    stem = f"{args.score_panel}_panel" + ("" if not codec.lossy else f"_{codec.name}")
    stem = stem.replace(":", "")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{stem}.json").write_text(json.dumps(out, indent=1) + "\n")
    members = [s.name for s in panel]
    lines = [
        f"# {args.score_panel} panel (cached clips, report only), {args.corpus}, "
        f"{len(clips)} clips, {args.snr_db:g} dB, listeners hear: {codec.name}",
        "",
        "UAR %, masked [same-SNR noise control]; clean in the first row.",
        "",
        "| method | " + " | ".join(m.split("-attacker-")[-1] for m in members) + " |",
        "|---" * (len(members) + 1) + "|",
        "| clean | " + " | ".join(f"{100 * rows['clean'][m]:.1f}" for m in members) + " |",
    ]
    for name in args.methods:
        r = rows[name]
        cells = [f"{100 * r['masked'][m]:.1f} [{100 * r['noise'][m]:.1f}]" for m in members]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    (args.out / f"{stem}.md").write_text("\n".join(lines) + "\n")
    return out


def compare_cached(args) -> dict:
    """Paired bootstrap of the dev-panel UAR difference between two methods' cached clips
    (--compare A,B: B minus A, per member and the panel mean, 95 % interval over resampled
    clips). Crafts nothing. A member that scores only some of the clips (cross-corpus) is
    resampled on its own; the rest share every draw."""
    torch.set_num_threads(1)
    a, b = args.compare
    clips = P.test_clips(args.data, args.corpus, args.limit)
    labels = [c.utt.label for c in clips]
    heard = {name: cached_clips(args, name, len(clips)) for name in (a, b)}
    panel, _ = dev_panel(args.corpus)
    draws, members = [], {}
    for s in panel:
        true, pred_a = P.predictions(s, heard[a], labels)
        _, pred_b = P.predictions(s, heard[b], labels)
        d = metrics.paired_uar_differences(true, pred_a, pred_b, len(s.classes), seed=args.seed)
        draws.append(d[0])
        members[s.name] = summary(d[0])
    out = {
        "corpus": args.corpus,
        "n_clips": len(clips),
        "snr_db": args.snr_db,
        "a": a,
        "b": b,
        "panel_mean": summary(np.mean(draws, 0)),
        "members": members,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    stem = f"compare-{a}-vs-{b}"
    (args.out / f"{stem}.json").write_text(json.dumps(out, indent=1) + "\n")
    lines = [
        f"{args.corpus}, {len(clips)} clips at {args.snr_db:g} dB: dev-panel UAR of `{b}` minus "
        f"`{a}`, points, [95 % paired bootstrap interval over the clips]",
        "",
        "| member | difference |",
        "|---|---|",
    ]
    for name, row in [("panel mean", out["panel_mean"]), *members.items()]:
        lines.append(f"| {name} | {row['mean']:+.1f} [{row['low']:+.1f}, {row['high']:+.1f}] |")
    (args.out / f"{stem}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return out


def summary(draws: np.ndarray) -> dict:
    """Mean and 95 % percentile interval of bootstrap draws, in UAR points."""
    low, high = np.percentile(100 * draws, [2.5, 97.5])
    return {"mean": float(100 * draws.mean()), "low": float(low), "high": float(high)}


def table(results: dict) -> str:
    members = results["panel_members"]
    clean = results["clean"]
    short = [m.replace(f"{results['corpus']}-attacker-", "") for m in members]
    head = "| method | surrogates | diversity | white-box | " + " | ".join(short)
    head += " | panel mean | noise mean | median SNR | PESQ-wb |"
    lines = [
        f"{results['corpus']}, {results['n_clips']} test clips (class-balanced), panel: "
        f"{results['panel']}. UAR %, masked [same-SNR noise control]; every clip's "
        f"perturbation scaled to {results['snr_db_measured_target']} dB measured SNR "
        f"(crafted under the runtime budget of {results['snr_db_budget']} dB).",
        "",
        head,
        "|" + "---|" * (8 + len(members)),
        "| clean | | | "
        + " | ".join(f"{100 * clean[m]:.1f}" for m in [*clean][:1] + members)
        + f" | {100 * np.mean([clean[m] for m in members]):.1f} | | | |",
    ]
    for name, r in results["methods"].items():
        cells = [f"{100 * r['panel_uar'][m]:.1f} [{100 * r['noise_uar'][m]:.1f}]" for m in members]
        extra = []
        if r["momentum"]:
            extra.append("MI")
        if r["variance"]:
            extra.append(f"VMI x{r['variance']}")
        if r["loss"] != "ce":
            extra.append(r["loss"])
        if r.get("universal"):
            extra.append("universal")
        if r.get("generator"):
            extra.append("generator")
        if r.get("shape"):
            extra.append(f"shaped {r['shape']:g}")
        if r.get("gain_db"):
            extra.append(f"gain field {r['gain_grid'][0]}x{1000 * r['gain_grid'][1]:g} ms")
        if r.get("gain_layers"):
            layers = " + ".join(f"{b}x{1000 * c:g} ms +-{db:g} dB" for b, c, db in r["gain_layers"])
            extra.append(f"gain fields {layers}")
        if r.get("warp_ms"):
            extra.append(f"warp +-{r['warp_ms']:g} ms / {1000 * r['warp_cell_s']:g} ms")
        if r.get("admix"):
            extra.append("admix {:g} x {} copies x {} scales".format(*r["admix"]))
        if r["samples"] > 1:
            extra.append(f"{r['samples']} samples")
        div = ",".join(r["diversity"]) or "-"
        lines.append(
            f"| {name} | {'+'.join(r['surrogates'])} | {div} {' '.join(extra)} | "
            f"{100 * r['white_box_uar']:.1f} | "
            + " | ".join(cells)
            + f" | {100 * np.mean(list(r['panel_uar'].values())):.1f}"
            + f" | {100 * np.mean(list(r['noise_uar'].values())):.1f}"
            + f" | {r['median_snr_db']:.1f} | {r['pesq_wb']['median']:.2f} |"
        )
    return "\n".join(lines) + "\n"


def write(out: Path, results: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for fname, text in (
        ("transfer_study.json", json.dumps(results, indent=2) + "\n"),
        ("transfer_study.md", table(results)),
    ):
        tmp = out / (fname + ".tmp")
        tmp.write_text(text)
        os.replace(tmp, out / fname)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="plainsight-export transfer-study")
    parser.add_argument("--corpus", choices=["emodb", "ravdess"], required=True)
    parser.add_argument("--data", default=os.environ.get("PLAINSIGHT_DATA"))
    parser.add_argument("--limit", type=int, default=56, help="class-balanced test clips")
    parser.add_argument("--methods", default="default,di,ens,ens-di")
    parser.add_argument("--budget-db", type=float, default=35.0, help="runtime SNR budget")
    parser.add_argument("--snr-db", type=float, default=38.0, help="measured SNR per clip")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("eval-out/transfer-study"))
    parser.add_argument(
        "--cache",
        type=Path,
        default=Path("eval-out/transfer-study-cache"),
        help="masked clips per method (.npz, never commit them), in a subfolder per corpus,"
        " clip count, budget, SNR and seed",
    )
    parser.add_argument(
        "--stream",
        action="store_true",
        help="craft as the live path does (250 ms hops, window ending at each hop)",
    )
    parser.add_argument(
        "--rescore",
        action="store_true",
        help="score every cached method's clips with the current dev panel, no crafting",
    )
    parser.add_argument(
        "--score-panel",
        choices=["dev", "final"],
        help="score the listed methods' cached clips with this panel and stop (crafts "
        "nothing; final is for reports of methods chosen on the dev panel)",
    )
    parser.add_argument(
        "--compare",
        help="A,B: paired bootstrap of the dev-panel UAR of B minus A on their cached clips "
        "(crafts nothing)",
    )
    parser.add_argument(
        "--codec",
        default="none",
        help="with --score-panel: listeners hear every clip after this round trip (opus:24)",
    )
    args = parser.parse_args(argv)
    if not args.data:
        print("transfer-study: give --data or set PLAINSIGHT_DATA", file=sys.stderr)
        return 2
    if args.compare:
        args.methods = args.compare
    args.methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    # Keyed by everything that changes the crafted clips, so a --rescore reads its own.
    args.cache = args.cache / (
        f"{args.corpus}-n{args.limit}-b{args.budget_db:g}-s{args.snr_db:g}-seed{args.seed}"
    )
    if args.stream:
        args.methods = [f"{m}@stream" for m in args.methods]
    unknown = [m for m in args.methods if m.removesuffix("@stream") not in METHODS]
    if unknown:
        print(f"transfer-study: unknown methods {unknown}; know {list(METHODS)}", file=sys.stderr)
        return 2
    files_only = [m for m in args.methods if files_only_method(METHODS[m.removesuffix("@stream")])]
    if args.stream and files_only:
        print(f"transfer-study: {files_only} have no --stream form (files only)", file=sys.stderr)
        return 2
    if args.compare:
        if len(args.methods) != 2:
            print("transfer-study: --compare takes two methods, A,B", file=sys.stderr)
            return 2
        args.compare = args.methods
        compare_cached(args)
    else:
        score_cached(args) if args.score_panel else run(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
