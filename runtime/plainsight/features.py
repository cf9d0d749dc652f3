"""The one feature front end: waveform -> standardised log-mel.

`FeatureConfig` is the single source of truth. Training (torch, in export/) and the
device runtime (numpy, here) both read it, and every exported model records it in its
manifest, so a model can never be fed features it was not trained on.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class FeatureConfig:
    sample_rate: int = 16000
    win_length: int = 400  # 25 ms
    hop_length: int = 160  # 10 ms
    n_fft: int = 400
    n_mels: int = 40
    f_min: float = 20.0
    f_max: float = 8000.0
    log_floor: float = 1e-6  # added to mel power before the log
    # Per-band standardisation, taken from the training set (identity until trained).
    mean: tuple[float, ...] = field(default_factory=tuple)
    std: tuple[float, ...] = field(default_factory=tuple)

    @property
    def pad(self) -> int:
        """Zeros added on each side so that a clip of N samples gives N // hop frames."""
        return (self.win_length - self.hop_length) // 2

    def n_frames(self, n_samples: int) -> int:
        return 1 + (n_samples + 2 * self.pad - self.win_length) // self.hop_length

    @property
    def n_bins(self) -> int:
        return self.n_fft // 2 + 1

    def mean_array(self) -> np.ndarray:
        if not self.mean:
            return np.zeros(self.n_mels, np.float32)
        return np.asarray(self.mean, np.float32)

    def std_array(self) -> np.ndarray:
        if not self.std:
            return np.ones(self.n_mels, np.float32)
        return np.asarray(self.std, np.float32)

    def with_stats(self, mean, std) -> FeatureConfig:
        return dataclasses.replace(
            self,
            mean=tuple(float(v) for v in mean),
            std=tuple(float(v) for v in std),
        )

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> FeatureConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown FeatureConfig fields: {sorted(unknown)}")
        values = dict(data)
        for key in ("mean", "std"):
            if key in values:
                values[key] = tuple(float(v) for v in values[key])
        return cls(**values)

    def to_json(self) -> str:
        return json.dumps(self.to_dict())


def hz_to_mel(hz):
    return 2595.0 * np.log10(1.0 + np.asarray(hz, np.float64) / 700.0)


def mel_to_hz(mel):
    return 700.0 * (10.0 ** (np.asarray(mel, np.float64) / 2595.0) - 1.0)


def mel_filterbank(cfg: FeatureConfig) -> np.ndarray:
    """Triangular HTK-mel filters, shape [n_bins, n_mels], float32."""
    bin_hz = np.linspace(0.0, cfg.sample_rate / 2, cfg.n_bins)
    edges = mel_to_hz(np.linspace(hz_to_mel(cfg.f_min), hz_to_mel(cfg.f_max), cfg.n_mels + 2))
    lower, centre, upper = edges[:-2], edges[1:-1], edges[2:]
    rising = (bin_hz[:, None] - lower) / (centre - lower)
    falling = (upper - bin_hz[:, None]) / (upper - centre)
    return np.clip(np.minimum(rising, falling), 0.0, None).astype(np.float32)


def analysis_window(cfg: FeatureConfig) -> np.ndarray:
    """Periodic Hann window of win_length samples, float64."""
    n = np.arange(cfg.win_length)
    return 0.5 - 0.5 * np.cos(2.0 * np.pi * n / cfg.win_length)


def dft_matrices(cfg: FeatureConfig) -> tuple[np.ndarray, np.ndarray]:
    """Windowed real-DFT kernels [n_bins, win_length]: frame @ cos.T = Re, frame @ sin.T = -Im.

    The torch front end uses these as fixed convolution kernels so that the exact same
    transform runs in numpy, ONNX and TFLite.
    """
    n = np.arange(cfg.win_length)
    k = np.arange(cfg.n_bins)
    phase = 2.0 * np.pi * np.outer(k, n) / cfg.n_fft
    window = analysis_window(cfg)
    return (np.cos(phase) * window).astype(np.float32), (np.sin(phase) * window).astype(np.float32)


def frame_signal(waveform: np.ndarray, cfg: FeatureConfig) -> np.ndarray:
    """[..., N] -> [..., T, win_length] with the zero padding described by cfg.pad."""
    padded = np.pad(waveform, [(0, 0)] * (waveform.ndim - 1) + [(cfg.pad, cfg.pad)])
    n_frames = cfg.n_frames(waveform.shape[-1])
    if n_frames < 1:
        raise ValueError(f"need at least {cfg.hop_length} samples, got {waveform.shape[-1]}")
    windows = np.lib.stride_tricks.sliding_window_view(padded, cfg.win_length, axis=-1)
    return windows[..., : (n_frames - 1) * cfg.hop_length + 1 : cfg.hop_length, :]


def log_mel(waveform: np.ndarray, cfg: FeatureConfig, standardise: bool = True) -> np.ndarray:
    """Waveform [..., N] in [-1, 1] at cfg.sample_rate -> features [..., T, n_mels], float32."""
    waveform = np.asarray(waveform, np.float32)
    frames = frame_signal(waveform, cfg).astype(np.float64)
    spectrum = np.fft.rfft(frames * analysis_window(cfg), n=cfg.n_fft, axis=-1)
    power = spectrum.real**2 + spectrum.imag**2
    mel = power @ mel_filterbank(cfg).astype(np.float64)
    feats = np.log(mel + cfg.log_floor)
    if standardise:
        feats = (feats - cfg.mean_array()) / cfg.std_array()
    return feats.astype(np.float32)
