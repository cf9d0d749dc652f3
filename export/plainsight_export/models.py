"""Emotion models: waveform [B, N] -> logits [B, C], front end included.

Gradient-capable models (`seed-cnn`, `compact`) are `Model(frontend, body)`:
- `frontend` is `LogMel` (features [B, T, F]), reshaped to [B, 1, T, F] for the body;
- `body` is an `nn.Sequential` made ONLY of these modules (a hand-written backward pass
  walks it, see gradgraph.py):
  nn.Conv2d (any stride / padding / groups, dilation 1, zero padding), nn.BatchNorm2d,
  nn.ReLU, nn.Dropout, nn.Flatten, nn.Linear, nn.BatchNorm1d, GlobalMeanPool(dims).
The attacker `mfcc-linear` and the panel families (`cnn2`, `crnn` on log-mel as `LogMelNet`,
`wav1d` on the raw waveform) are forward-only and may use any ONNX-exportable op.

Checkpoint format (torch.save dict, see docs/ARCHITECTURE.md): arch, arch_kwargs,
state_dict (float32 weights; the fixed DFT/mel kernels are rebuilt from `features`),
classes, features, window_samples, seed, corpus, role, metrics.
"""

from __future__ import annotations

import itertools
import os
import tempfile
from pathlib import Path

import numpy as np
import torch
from plainsight.features import FeatureConfig
from torch import nn

from plainsight_export.frontend import LogMel

ARCHS = (
    "seed-cnn",
    "compact",
    "mfcc-linear",
    "mfcc-shared",
    "spectral-linear",
    "cnn2",
    "crnn",
    "wav1d",
)
# MfccLinear on its own MFCC_FEATURES (mfcc-linear) or on the compact model's FeatureConfig
# (mfcc-shared: the surrogate head of the compact + MFCC gradient graph, one shared log-mel);
# spectral-linear: SpectralStatsLinear (eGeMAPS-like functionals) on MFCC_FEATURES.
MFCC_ARCHS = ("mfcc-linear", "mfcc-shared", "spectral-linear")
# Forward-only attacker families of the held-out panel (no hand-written gradient graph).
PANEL_ARCHS = ("cnn2", "crnn", "wav1d")
# Checkpoint keys of panel and adaptive members that export copies into the manifest.
PANEL_CKPT_KEYS = ("panel", "family", "label_map", "scored_on", "trained_on_masker")
BODY_OPS = (
    nn.Conv2d,
    nn.BatchNorm2d,
    nn.ReLU,
    nn.Dropout,
    nn.Flatten,
    nn.Linear,
    nn.BatchNorm1d,
)


class GlobalMeanPool(nn.Module):
    """Mean over the given dimensions (removed from the output)."""

    def __init__(self, dims: tuple[int, ...]):
        super().__init__()
        self.dims = tuple(int(d) for d in dims)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=self.dims)

    def extra_repr(self) -> str:
        return f"dims={self.dims}"


class Model(nn.Module):
    """LogMel front end + body on [B, 1, T, F]."""

    def __init__(self, frontend: LogMel, body: nn.Sequential):
        super().__init__()
        self.frontend = frontend
        self.body = body

    def features(self, waveform: torch.Tensor, fast: bool = False) -> torch.Tensor:
        """[B, 1, T, F]; fast=True uses the FFT path (training only, not exportable)."""
        feats = self.frontend.forward_fft(waveform) if fast else self.frontend(waveform)
        return feats.unsqueeze(1)

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        return self.body(self.features(waveform))


def check_body(body: nn.Sequential) -> None:
    """Raise if the body uses an op outside the documented set."""
    for layer in body:
        if not isinstance(layer, BODY_OPS + (GlobalMeanPool,)):
            raise TypeError(f"body op {type(layer).__name__} is outside the supported set")
        if isinstance(layer, nn.Conv2d):
            if layer.dilation != (1, 1) or layer.padding_mode != "zeros":
                raise TypeError("Conv2d must have dilation 1 and zero padding")
            if isinstance(layer.padding, str):
                raise TypeError("Conv2d padding must be numeric")


def _conv_block(c_in, c_out, kernel, stride, padding=0, groups=1) -> list[nn.Module]:
    conv = nn.Conv2d(c_in, c_out, kernel, stride, padding, groups=groups, bias=False)
    return [conv, nn.BatchNorm2d(c_out), nn.ReLU()]


def _dense_block(d_in, d_out, dropout) -> list[nn.Module]:
    return [nn.Linear(d_in, d_out), nn.BatchNorm1d(d_out), nn.ReLU(), nn.Dropout(dropout)]


def seed_cnn_body(n_classes: int, cfg: FeatureConfig, n_frames: int = 200) -> nn.Sequential:
    """The prototype: two 10x10 stride-2 convs and two 716-unit dense layers (fixed window)."""

    def out(n):
        return (n - 10) // 2 + 1

    flat = 32 * out(out(n_frames)) * out(out(cfg.n_mels))
    layers = [
        nn.Conv2d(1, 16, 10, 2),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.Conv2d(16, 32, 10, 2),
        nn.BatchNorm2d(32),
        nn.ReLU(),
        nn.Flatten(),
        *_dense_block(flat, 716, 0.6),
        *_dense_block(716, 716, 0.7),
        nn.Linear(716, n_classes),
    ]
    return nn.Sequential(*layers)


def compact_body(
    n_classes: int,
    cfg: FeatureConfig,
    channels: tuple[int, ...] = (16, 32, 64, 64, 96),
    strides: tuple[tuple[int, int], ...] = ((2, 2), (2, 2), (2, 2), (1, 1), (2, 1)),
    hidden: int = 64,
    dropout: float = 0.3,
) -> nn.Sequential:
    """3x3 conv blocks (strided), mean over time, then a small classifier on band x channel.

    Pooling only over time keeps the frequency layout and lets the weights serve any
    window length.
    """
    layers: list[nn.Module] = []
    c_in, n_freq = 1, cfg.n_mels
    for c_out, stride in zip(channels, strides, strict=True):
        layers += _conv_block(c_in, c_out, 3, tuple(stride), 1)
        c_in, n_freq = c_out, (n_freq - 1) // stride[1] + 1
    layers += [GlobalMeanPool((2,)), nn.Flatten(), nn.Dropout(dropout)]
    if hidden:
        layers += _dense_block(c_in * n_freq, hidden, dropout)
        layers.append(nn.Linear(hidden, n_classes))
    else:
        layers.append(nn.Linear(c_in * n_freq, n_classes))
    return nn.Sequential(*layers)


class LogMelNet(nn.Module):
    """Forward-only: LogMel front end + any network on [B, 1, T, F] (features like Model)."""

    def __init__(self, frontend: LogMel, net: nn.Module):
        super().__init__()
        self.frontend = frontend
        self.net = net  # not `body`: that name promises the gradient graph's op set

    def features(self, waveform: torch.Tensor, fast: bool = False) -> torch.Tensor:
        feats = self.frontend.forward_fft(waveform) if fast else self.frontend(waveform)
        return feats.unsqueeze(1)

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        return self.net(self.features(waveform))


class StatsPool(nn.Module):
    """[B, C, T, F] -> mean over F, then mean and max over T: [B, 2C]."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.mean(dim=3)
        return torch.cat([x.mean(dim=2), x.amax(dim=2)], dim=1)


def cnn2_body(n_classes: int, channels=(16, 32, 64), dropout: float = 0.3) -> nn.Sequential:
    """A second log-mel CNN, unlike compact: 5x5 first kernel, max pooling instead of
    strides, mean+max statistics pooling over time (so it ignores the band layout)."""
    layers: list[nn.Module] = []
    c_in = 1
    for i, c_out in enumerate(channels):
        kernel = 5 if i == 0 else 3
        layers += _conv_block(c_in, c_out, kernel, 1, kernel // 2)
        layers.append(nn.MaxPool2d(2))
        c_in = c_out
    layers += [StatsPool(), nn.Dropout(dropout), nn.Linear(2 * c_in, n_classes)]
    return nn.Sequential(*layers)


class CrnnBody(nn.Module):
    """Temporal model: two conv blocks on [B, 1, T, F], then a GRU over frames, mean over time."""

    def __init__(self, n_classes: int, n_mels: int, channels=(16, 32), hidden: int = 64):
        super().__init__()
        self.conv = nn.Sequential(
            *_conv_block(1, channels[0], 3, 1, 1),
            nn.MaxPool2d(2),
            *_conv_block(channels[0], channels[1], 3, 1, 1),
            nn.MaxPool2d((1, 2)),
        )
        self.gru = nn.GRU(channels[1] * (n_mels // 4), hidden, batch_first=True)
        self.dropout = nn.Dropout(0.3)
        self.out = nn.Linear(hidden, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)  # [B, C, T', F']
        b, c, t, f = x.shape
        seq = x.permute(0, 2, 1, 3).reshape(b, t, c * f)
        states, _ = self.gru(seq)
        return self.out(self.dropout(states.mean(dim=1)))


class Wav1d(nn.Module):
    """Raw-waveform 1D CNN (M5-like), no mel front end: each window is scaled to unit RMS
    (gain-invariant), then strided/pooled convolutions and a mean over time."""

    def __init__(self, n_classes: int, channels=(32, 32, 64, 64), first_kernel: int = 80):
        super().__init__()
        layers: list[nn.Module] = []
        c_in = 1
        for i, c_out in enumerate(channels):
            kernel, stride = (first_kernel, 4) if i == 0 else (3, 1)
            layers += [nn.Conv1d(c_in, c_out, kernel, stride), nn.BatchNorm1d(c_out), nn.ReLU()]
            if i < len(channels) - 1:
                layers.append(nn.MaxPool1d(4))
            c_in = c_out
        self.convs = nn.Sequential(*layers)
        self.dropout = nn.Dropout(0.3)
        self.out = nn.Linear(c_in, n_classes)

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        rms = torch.sqrt((waveform**2).mean(dim=1, keepdim=True) + 1e-8)
        x = self.convs((waveform / rms).unsqueeze(1))
        return self.out(self.dropout(x.mean(dim=2)))


MFCC_FEATURES = FeatureConfig(win_length=512, n_fft=512, n_mels=64, f_min=60.0, f_max=7600.0)


def dct_matrix(n_in: int, n_out: int) -> np.ndarray:
    """Orthonormal DCT-II, [n_in, n_out] (x @ D gives the first n_out coefficients)."""
    n = np.arange(n_in)[:, None]
    k = np.arange(n_out)[None, :]
    mat = np.cos(np.pi * (n + 0.5) * k / n_in) * np.sqrt(2.0 / n_in)
    mat[:, 0] /= np.sqrt(2.0)
    return mat.astype(np.float32)


STD_EPS = 1e-6  # inside the sqrt of MfccLinear's std over time


class MfccLinear(nn.Module):
    """Attacker of another family: MFCC + deltas, mean/std over time, standardise, linear."""

    def __init__(self, n_classes: int, cfg: FeatureConfig, n_mfcc: int = 20):
        super().__init__()
        self.frontend = LogMel(cfg)
        self.register_buffer("dct", torch.from_numpy(dct_matrix(cfg.n_mels, n_mfcc)))
        delta = np.array([-2.0, -1.0, 0.0, 1.0, 2.0], np.float32) / 10.0
        kernel = np.zeros((n_mfcc, 1, 5), np.float32)
        kernel[:, 0] = delta
        self.register_buffer("delta_kernel", torch.from_numpy(kernel), persistent=False)
        n_stats = 4 * n_mfcc
        self.register_buffer("stat_mean", torch.zeros(n_stats))
        self.register_buffer("stat_std", torch.ones(n_stats))
        self.linear = nn.Linear(n_stats, n_classes)

    def statistics(self, waveform: torch.Tensor, fast: bool = False) -> torch.Tensor:
        logmel = self.frontend.forward_fft(waveform) if fast else self.frontend(waveform)
        mfcc = torch.matmul(logmel, self.dct).transpose(1, 2)  # [B, M, T]
        deltas = nn.functional.conv1d(mfcc, self.delta_kernel, padding=2, groups=mfcc.shape[1])
        both = torch.cat([mfcc, deltas], dim=1)
        mean = both.mean(dim=2)
        std = torch.sqrt(((both - mean.unsqueeze(2)) ** 2).mean(dim=2) + STD_EPS)
        return torch.cat([mean, std], dim=1)

    def forward(self, waveform: torch.Tensor, fast: bool = False) -> torch.Tensor:
        stats = (self.statistics(waveform, fast) - self.stat_mean) / self.stat_std
        return self.linear(stats)


# SpectralStatsLinear: frequency ranges (Hz) of its low-level descriptors, as eGeMAPS's
ALPHA_LOW, ALPHA_HIGH = (50.0, 1000.0), (1000.0, 5000.0)  # alpha ratio
HAMMARBERG_LOW, HAMMARBERG_HIGH = (0.0, 2000.0), (2000.0, 5000.0)  # Hammarberg index
SLOPE_RANGES = ((0.0, 500.0), (500.0, 1500.0))  # spectral slopes
BALANCE_EDGES = (0.0, 500.0, 1000.0, 2000.0, 4000.0, 8000.0)  # band energy shares
QUANTILES = (0.2, 0.5, 0.8)


class SpectralStatsLinear(MfccLinear):
    """A differentiable stand-in for the field's eGeMAPS baseline, without the pitch, jitter,
    shimmer and formant descriptors (no clean gradient through a pitch tracker): per frame
    the log energy, alpha ratio, Hammarberg index, two spectral slopes, MFCC 1-4, spectral
    flux and five band energy shares (15 descriptors, from the log-mel); per window their
    mean, standard deviation, 20/50/80th percentiles, and their mean over the louder half of
    the frames (eGeMAPS takes some over voiced frames): 90 statistics, standardised, linear.
    A surrogate of the statistics family that reads spectral balance and loudness, where
    the MFCC one reads the cepstrum."""

    N_DESCRIPTORS = 15

    def __init__(self, n_classes: int, cfg: FeatureConfig):
        super().__init__(n_classes, cfg, n_mfcc=5)
        from plainsight.features import mel_filterbank

        fb = mel_filterbank(cfg)  # [bins, mels]
        freqs = np.fft.rfftfreq(cfg.n_fft, 1.0 / cfg.sample_rate)
        centre = (freqs[:, None] * fb).sum(0) / np.maximum(fb.sum(0), 1e-9)  # per mel band

        def inside(lo, hi):
            return torch.from_numpy(((centre >= lo) & (centre < hi)).astype(np.float32))

        for name, band in (
            ("alpha_low", ALPHA_LOW),
            ("alpha_high", ALPHA_HIGH),
            ("hammarberg_low", HAMMARBERG_LOW),
            ("hammarberg_high", HAMMARBERG_HIGH),
        ):
            self.register_buffer(name, inside(*band), persistent=False)
        slopes = []
        for lo, hi in SLOPE_RANGES:  # least-squares slope of log power against kHz
            mask = (centre >= lo) & (centre < hi)
            x = np.where(mask, centre / 1000.0, 0.0)
            x = np.where(mask, x - x[mask].mean(), 0.0)
            slopes.append(x / max((x**2).sum(), 1e-9))
        slopes = torch.from_numpy(np.stack(slopes, 1).astype(np.float32))
        self.register_buffer("slopes", slopes, persistent=False)
        shares = [inside(lo, hi) for lo, hi in itertools.pairwise(BALANCE_EDGES)]
        self.register_buffer("shares", torch.stack(shares, 1), persistent=False)
        n_stats = self.N_DESCRIPTORS * (3 + len(QUANTILES))
        self.stat_mean = torch.zeros(n_stats)
        self.stat_std = torch.ones(n_stats)
        self.linear = nn.Linear(n_stats, n_classes)

    def descriptors(self, logmel: torch.Tensor) -> torch.Tensor:
        """[B, T, mels] natural-log mel power -> [B, T, 15] low-level descriptors."""
        power = torch.exp(logmel)
        energy = torch.log(power.sum(2) + 1e-10)

        def log_sum(mask):
            return torch.log((power * mask).sum(2) + 1e-10)

        def soft_max(mask):  # a smooth maximum of the log power over the masked bands
            return torch.logsumexp(logmel + torch.log(mask + 1e-30), dim=2)

        alpha = log_sum(self.alpha_low) - log_sum(self.alpha_high)
        hammarberg = soft_max(self.hammarberg_low) - soft_max(self.hammarberg_high)
        slopes = logmel @ self.slopes  # [B, T, 2]
        mfcc = (logmel @ self.dct)[:, :, 1:5]
        flux = torch.sqrt(
            nn.functional.pad((logmel[:, 1:] - logmel[:, :-1]).pow(2).mean(2), (1, 0)) + 1e-6
        )
        shares = torch.log(power @ self.shares + 1e-10) - energy[:, :, None]
        levels = torch.stack([energy, alpha, hammarberg], 2)
        return torch.cat([levels, slopes, mfcc, flux[:, :, None], shares], 2)

    def statistics(self, waveform: torch.Tensor, fast: bool = False) -> torch.Tensor:
        logmel = self.frontend.forward_fft(waveform) if fast else self.frontend(waveform)
        lld = self.descriptors(logmel)  # [B, T, D]
        mean = lld.mean(1)
        std = torch.sqrt(((lld - mean[:, None]) ** 2).mean(1) + STD_EPS)
        quantiles = torch.quantile(lld, torch.tensor(QUANTILES), dim=1)  # [Q, B, D]
        loud = (lld[:, :, :1] >= lld[:, :, :1].median(dim=1, keepdim=True).values).float()
        loud_mean = (lld * loud).sum(1) / loud.sum(1).clamp_min(1.0)
        return torch.cat([mean, std, *quantiles, loud_mean], 1)


class HeadEnsemble(nn.Module):
    """Heads on one waveform: forward = the first head's logits; the attack loss is the
    weighted sum of every head's cross-entropy (default weight 1 each, as
    transfer_study.gradient sums them).

    Gradient graph (gradgraph.EnsembleGradientGraph): a `Model` first, then `MfccLinear`
    heads on the same FeatureConfig, so one log-mel serves them all."""

    def __init__(self, heads: list[nn.Module], names: list[str] | None = None, weights=None):
        super().__init__()
        self.heads = nn.ModuleList(heads)
        self.names = list(names or [f"head{i}" for i in range(len(heads))])
        self.weights = [float(w) for w in (weights or [1.0] * len(heads))]
        if len(self.weights) != len(heads) or not all(w > 0 for w in self.weights):
            raise ValueError(f"need one positive loss weight per head, got {self.weights}")

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        return self.heads[0](waveform)


def _as_tuples(value):
    """JSON gives lists; layer specs want (nested) tuples."""
    if isinstance(value, (list, tuple)):
        return tuple(_as_tuples(v) for v in value)
    return value


def _tuple_kwargs(kw: dict) -> dict:
    return {k: _as_tuples(v) for k, v in kw.items()}


def build_model(arch: str, n_classes: int, cfg: FeatureConfig, **kw) -> nn.Module:
    """A fresh model. cfg is the front end's FeatureConfig (see default_features)."""
    if arch == "seed-cnn":
        return Model(LogMel(cfg), seed_cnn_body(n_classes, cfg, **kw))
    if arch == "compact":
        kw = {k: _as_tuples(v) for k, v in kw.items()}
        return Model(LogMel(cfg), compact_body(n_classes, cfg, **kw))
    if arch == "spectral-linear":
        return SpectralStatsLinear(n_classes, cfg, **kw)
    if arch in MFCC_ARCHS:
        return MfccLinear(n_classes, cfg, **kw)
    if arch == "cnn2":
        return LogMelNet(LogMel(cfg), cnn2_body(n_classes, **_tuple_kwargs(kw)))
    if arch == "crnn":
        return LogMelNet(LogMel(cfg), CrnnBody(n_classes, cfg.n_mels, **_tuple_kwargs(kw)))
    if arch == "wav1d":
        return Wav1d(n_classes, **_tuple_kwargs(kw))
    raise ValueError(f"unknown arch {arch!r}; choose one of {', '.join(ARCHS)}")


def default_features(arch: str) -> FeatureConfig:
    return MFCC_FEATURES if arch in ("mfcc-linear", "spectral-linear") else FeatureConfig()


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_macs(model: nn.Module, n_samples: int = 32000) -> dict[str, int]:
    """Multiply-adds per example of the front end and of the rest, by forward hooks."""
    macs = {"frontend": 0, "body": 0}
    frontend = getattr(model, "frontend", None)  # wav1d has none
    if frontend is not None:
        cfg = frontend.cfg
        frames = cfg.n_frames(n_samples)
        macs["frontend"] = frames * (2 * cfg.n_bins * cfg.win_length + cfg.n_bins * cfg.n_mels)

    def hook(module, inputs, output):
        if isinstance(module, (nn.Conv1d, nn.Conv2d)):
            per_out = module.in_channels // module.groups * int(np.prod(module.kernel_size))
            macs["body"] += output[0].numel() * per_out
        elif isinstance(module, nn.GRU):
            steps = output[0].shape[1]
            macs["body"] += (
                steps * 3 * (module.input_size + module.hidden_size) * module.hidden_size
            )
        elif isinstance(module, nn.Linear):
            macs["body"] += module.in_features * module.out_features

    handles = [
        m.register_forward_hook(hook)
        for m in model.modules()
        if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Linear, nn.GRU))
    ]
    was_training = model.training
    model.eval()
    with torch.no_grad():
        model(torch.zeros(1, n_samples))
    model.train(was_training)
    for h in handles:
        h.remove()
    macs["total"] = macs["frontend"] + macs["body"]
    return macs


def save_checkpoint(
    path: str | os.PathLike,
    model: nn.Module,
    *,
    arch: str,
    arch_kwargs: dict,
    classes: list[str],
    features: FeatureConfig,
    window_samples: int,
    seed: int,
    corpus: str,
    role: str,
    metrics: dict,
    **extra,
) -> Path:
    """Write the checkpoint dict atomically (temp file in the same folder, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    payload = {
        "arch": arch,
        "arch_kwargs": dict(arch_kwargs),
        "state_dict": state,
        "classes": list(classes),
        "features": features.to_dict(),
        "window_samples": int(window_samples),
        "seed": int(seed),
        "corpus": corpus,
        "role": role,
        "metrics": metrics,
        **extra,
    }
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        torch.save(payload, tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def read_checkpoint(path: str | os.PathLike) -> dict:
    try:
        return torch.load(Path(path), map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as exc:
        raise ValueError(f"not a plainsight checkpoint: {path}: {exc}") from exc


def model_from_checkpoint(ckpt: dict) -> nn.Module:
    cfg = FeatureConfig.from_dict(ckpt["features"])
    model = build_model(ckpt["arch"], len(ckpt["classes"]), cfg, **ckpt.get("arch_kwargs", {}))
    model.load_state_dict(ckpt["state_dict"])
    return model.eval()


def load_checkpoint(path: str | os.PathLike) -> nn.Module:
    """Eval-mode module mapping waveform [B, N] -> logits [B, C] (front end included).

    The checkpoint dict is kept on the module as `.checkpoint` (without the state_dict).
    """
    ckpt = read_checkpoint(path)
    model = model_from_checkpoint(ckpt)
    model.checkpoint = {k: v for k, v in ckpt.items() if k != "state_dict"}
    return model
