"""Differentiable torch log-mel front end, numerically the same as `plainsight.features.log_mel`.

Only ops that ONNX and TFLite export cleanly: zero pad, conv1d with fixed windowed-DFT
kernels (stride = hop), square, matmul with the mel filterbank, log, affine standardisation.
"""

from __future__ import annotations

import numpy as np
import torch
from plainsight.features import FeatureConfig, analysis_window, dft_matrices, mel_filterbank
from torch import nn


class LogMel(nn.Module):
    """Waveform [B, N] -> standardised log-mel [B, T, n_mels] with T = N // hop."""

    def __init__(self, cfg: FeatureConfig):
        super().__init__()
        self.cfg = cfg
        cos, sin = dft_matrices(cfg)
        kernels = np.concatenate([cos, sin], axis=0)[:, None, :]  # [2*bins, 1, win]
        # Derived from cfg, so not stored in checkpoints (keeps them small).
        self.register_buffer("dft_kernels", torch.from_numpy(kernels), persistent=False)
        self.register_buffer("mel_fb", torch.from_numpy(mel_filterbank(cfg)), persistent=False)
        self.register_buffer("mean", torch.from_numpy(cfg.mean_array()))
        self.register_buffer("std", torch.from_numpy(cfg.std_array()))
        self.n_bins = cfg.n_bins
        self.pad = cfg.pad
        self.hop = cfg.hop_length
        self.log_floor = float(cfg.log_floor)
        window = torch.from_numpy(analysis_window(cfg).astype(np.float32))
        self.register_buffer("window", window, persistent=False)

    def set_stats(self, mean, std) -> None:
        """Install training-set standardisation statistics (also updates self.cfg)."""
        self.cfg = self.cfg.with_stats(mean, std)
        self.mean.copy_(torch.from_numpy(self.cfg.mean_array()))
        self.std.copy_(torch.from_numpy(self.cfg.std_array()))

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        x = nn.functional.pad(waveform.unsqueeze(1), (self.pad, self.pad))
        spec = nn.functional.conv1d(x, self.dft_kernels, stride=self.hop)  # [B, 2*bins, T]
        re, im = spec[:, : self.n_bins], spec[:, self.n_bins :]
        power = (re * re + im * im).transpose(1, 2)  # [B, T, bins]
        return self._from_power(power)

    def forward_fft(self, waveform: torch.Tensor) -> torch.Tensor:
        """Same features via torch.stft: ~10x cheaper, for training only (not exportable)."""
        x = nn.functional.pad(waveform, (self.pad, self.pad))
        spec = torch.stft(
            x,
            self.cfg.n_fft,
            self.hop,
            self.cfg.win_length,
            self.window,
            center=False,
            return_complex=True,
        )
        return self._from_power(spec.abs().square().transpose(1, 2))

    def _from_power(self, power: torch.Tensor) -> torch.Tensor:
        mel = torch.matmul(power, self.mel_fb)
        feats = torch.log(mel + self.log_floor)
        return (feats - self.mean) / self.std
