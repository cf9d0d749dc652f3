"""Whisper base's encoder in torch, from the evaluation's pinned CTranslate2 weights.

The panel's `whisper-*` members read Whisper base's encoder output through CTranslate2,
which has no gradient. To ask whether a perturbation crafted against a public pretrained
backbone reaches other classifiers built on it, the build side needs that encoder
differentiable: this module reads the float16 encoder variables of the joined `model.bin`
(with the evaluation's reader, `plainsight.evaluate.whisper_encoder`) and rebuilds
the encoder (log-mel front end as faster-whisper computes it, two convolutions, sinusoidal
positions, 6 pre-norm transformer blocks, final layer norm) in torch. `tests/test_whisper_torch.py`
checks it against CTranslate2's own `encode`.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch
from plainsight.evaluate.whisper_encoder import read_encoder_variables
from torch import nn

N_FFT, HOP, N_MELS = 400, 160, 80


def mel_filters() -> np.ndarray:
    from faster_whisper.feature_extractor import FeatureExtractor

    return FeatureExtractor(feature_size=N_MELS).mel_filters  # [80, 201]


class LogMel(nn.Module):
    """faster-whisper's log-mel (padding=0): reflect-centred 400-point STFT, hop 160, the last
    frame dropped, log10 power clamped to 8 decades below each input's maximum, (x + 4) / 4."""

    def __init__(self):
        super().__init__()
        self.register_buffer("window", torch.hann_window(N_FFT, periodic=True))
        self.register_buffer("filters", torch.from_numpy(mel_filters()))

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:  # [B, N] -> [B, 80, N / 160]
        spec = torch.stft(
            waveform, N_FFT, HOP, window=self.window, center=True, pad_mode="reflect",
            return_complex=True,
        )  # fmt: skip
        power = spec[..., :-1].abs() ** 2
        logs = torch.log10((self.filters @ power).clamp_min(1e-10))
        floor = logs.amax(dim=(1, 2), keepdim=True) - 8.0
        return (torch.maximum(logs, floor) + 4.0) / 4.0


class Block(nn.Module):
    def __init__(self, v: dict, prefix: str, heads: int):
        super().__init__()
        self.heads = heads
        for part in ("self_attention", "ffn"):
            setattr(self, f"{part}_norm", _layer_norm(v, f"{prefix}/{part}/layer_norm"))
        self.qkv = _linear(v, f"{prefix}/self_attention/linear_0")
        self.out = _linear(v, f"{prefix}/self_attention/linear_1")
        self.up = _linear(v, f"{prefix}/ffn/linear_0")
        self.down = _linear(v, f"{prefix}/ffn/linear_1")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, w = self.qkv(self.self_attention_norm(x)).split(d, dim=-1)
        q, k, w = (z.view(b, t, self.heads, d // self.heads).transpose(1, 2) for z in (q, k, w))
        attended = nn.functional.scaled_dot_product_attention(q, k, w)
        x = x + self.out(attended.transpose(1, 2).reshape(b, t, d))
        return x + self.down(nn.functional.gelu(self.up(self.ffn_norm(x))))


def _linear(v: dict, prefix: str) -> nn.Linear:
    weight = torch.from_numpy(v[f"{prefix}/weight"])
    layer = nn.Linear(weight.shape[1], weight.shape[0])
    layer.weight.data.copy_(weight)
    layer.bias.data.copy_(torch.from_numpy(v[f"{prefix}/bias"]))
    return layer


def _layer_norm(v: dict, prefix: str) -> nn.LayerNorm:
    norm = nn.LayerNorm(v[f"{prefix}/gamma"].shape[0])
    norm.weight.data.copy_(torch.from_numpy(v[f"{prefix}/gamma"]))
    norm.bias.data.copy_(torch.from_numpy(v[f"{prefix}/beta"]))
    return norm


class WhisperEncoder(nn.Module):
    """Waveform [B, N] at 16 kHz -> encoder output [B, N / 320, 512]."""

    def __init__(self, model_bin: Path):
        super().__init__()
        v = read_encoder_variables(model_bin)
        self.mel = LogMel()
        self.conv1 = nn.Conv1d(N_MELS, 512, 3, padding=1)
        self.conv2 = nn.Conv1d(512, 512, 3, stride=2, padding=1)
        for name in ("conv1", "conv2"):
            getattr(self, name).weight.data.copy_(torch.from_numpy(v[f"encoder/{name}/weight"]))
            getattr(self, name).bias.data.copy_(torch.from_numpy(v[f"encoder/{name}/bias"]))
        self.register_buffer(
            "positions", torch.from_numpy(v["encoder/position_encodings/encodings"])
        )
        heads = int(v["encoder/num_heads"])
        n_layers = len({k.split("/")[1] for k in v if re.match(r"encoder/layer_\d+/", k)})
        self.blocks = nn.ModuleList(Block(v, f"encoder/layer_{i}", heads) for i in range(n_layers))
        self.norm = _layer_norm(v, "encoder/layer_norm")
        self.eval()

    def forward(self, waveform: torch.Tensor, depth: int | None = None) -> torch.Tensor:
        """`depth`: stop after that many transformer blocks (0: the convolutions' output) and
        return the hidden state before the final norm: a cheaper, intermediate feature."""
        x = nn.functional.gelu(self.conv1(self.mel(waveform)))
        x = nn.functional.gelu(self.conv2(x)).transpose(1, 2)
        x = x + self.positions[: x.shape[1]]
        for block in self.blocks[:depth]:
            x = block(x)
        return x if depth is not None else self.norm(x)


class PooledHead(nn.Module):
    """The whisper members' classifier on top: mean and std over frames, standardised, then a
    linear layer (a logistic regression's coef and intercept)."""

    def __init__(self, encoder: WhisperEncoder, mean, scale, coef, intercept, depth=None):
        super().__init__()
        self.encoder = encoder
        self.depth = depth  # None: the encoder's output; k: its hidden state after k blocks
        for name, value in dict(mean=mean, scale=scale, coef=coef, intercept=intercept).items():
            self.register_buffer(name, torch.as_tensor(np.asarray(value), dtype=torch.float32))

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        pooled = pool(self.encoder(waveform, depth=self.depth))
        return ((pooled - self.mean) / self.scale) @ self.coef.T + self.intercept


def surrogate_path(corpus: str, seed: int, depth: int | None = None) -> Path:
    layer = "" if depth is None else f"-l{depth}"
    return Path("export/checkpoints") / corpus / f"surrogate-whisper{layer}-lr-s{seed}.npz"


def pool(hidden: torch.Tensor) -> torch.Tensor:
    """[B, T, 512] -> [B, 1024]: mean and std over frames, as the whisper members pool."""
    return torch.cat([hidden.mean(1), hidden.std(1, unbiased=False)], dim=1)


def layer_kind(depth: int | None) -> str:
    """The panel feature kind of the pooled hidden state after `depth` blocks (the encoder's
    output when None): computed torch-free by `plainsight.evaluate.whisper_encoder`, which
    `test_whisper_encoder` checks equal to this port."""
    return "whisper-base-encoder" if depth is None else f"whisper-base-l{depth}"


def fit_surrogate_head(data: str, corpus: str, seed: int, cache: str, depth=None) -> Path:
    """A logistic regression on the pooled Whisper features of the training speakers' windows
    (augmented once with `seed`, another draw than the panel members' seed 0), C chosen on the
    validation speakers; saved as plain arrays (no pickle) beside the other surrogates.
    `depth`: on the hidden state after that many blocks."""
    from plainsight.corpora import CLASSES

    from plainsight_export import data as D
    from plainsight_export import stats_members as S

    kind = layer_kind(depth)
    parts = D.fixed_split(D.load_corpus(data, corpus))
    tag = f"{corpus}-{kind}-all-s{seed}"
    x, y = S.cached(Path(cache) / f"{tag}-train.npz",
                    lambda: S.augmented_features(parts["train"], kind, seed, True))  # fmt: skip
    xv, yv = S.cached(Path(cache) / f"{tag}-val.npz",
                      lambda: S.augmented_features(parts["val"], kind, seed, False))  # fmt: skip
    scaler, clf, c, val_uar = S.fit_selected("lr", x, y, xv, yv, CLASSES[corpus], seed)
    out = surrogate_path(corpus, seed, depth)
    np.savez(
        out, mean=scaler.mean_, scale=scaler.scale_, coef=clf.coef_,
        intercept=clf.intercept_, classes=np.array(CLASSES[corpus]),
        c=c, val_window_uar=val_uar, depth=-1 if depth is None else depth,
    )  # fmt: skip
    return out


def load_surrogate_head(path: Path) -> tuple[PooledHead, list[str]]:
    from plainsight.evaluate.whisper_weights import ensure_model_dir

    with np.load(path, allow_pickle=False) as z:
        depth = int(z["depth"]) if "depth" in z and int(z["depth"]) >= 0 else None
        head = PooledHead(
            WhisperEncoder(ensure_model_dir() / "model.bin"),
            z["mean"], z["scale"], z["coef"], z["intercept"], depth,
        )  # fmt: skip
        classes = [str(c) for c in z["classes"]]
    for p in head.parameters():
        p.requires_grad_(False)
    return head.eval(), classes


if __name__ == "__main__":  # fit the surrogate heads: python -m plainsight_export.whisper_torch
    import argparse
    import os

    parser = argparse.ArgumentParser(prog="python -m plainsight_export.whisper_torch")
    parser.add_argument("corpora", nargs="*", default=["emodb", "ravdess"])
    parser.add_argument("--depth", type=int, help="a head on the hidden state after K blocks")
    args = parser.parse_args()
    data = os.environ.get("PLAINSIGHT_DATA")
    if not data:
        parser.error("set PLAINSIGHT_DATA")
    for corpus in args.corpora:
        path = fit_surrogate_head(data, corpus, 11, "/tmp/plainsight-panel-features", args.depth)
        with np.load(path) as z:
            c, uar = float(z["c"]), float(z["val_window_uar"])
        print(f"{corpus}: {path}, C={c:g}, validation window UAR {uar:.3f}")
