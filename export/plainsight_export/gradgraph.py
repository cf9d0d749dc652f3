"""Input-gradient graphs built only from forward operators (so ONNX and TFLite can export them).

`GradientGraph(model)` maps (waveform [B, N], target [B, C]) -> (logits [B, C], grad [B, N]) with
grad = d sum_b CE(target_b, softmax(logits_b)) / d waveform, written out by hand:
batch norm folded into the conv / linear before it (eval mode), ReLU as a mask, conv backward as a
transposed conv (or zero insertion + conv with the flipped kernel), linear backward as a matmul
with W, mean-pool backward as a broadcast / T, and the log-mel front end backward
(d/dlog -> / (mel + floor) -> mel^T -> 2 re, 2 im -> DFT^T with overlap-add -> crop the padding).
`EnsembleGradientGraph` adds MfccLinear heads on the same log-mel (grad of the sum of the
heads' cross-entropies, the log-mel computed once). torch autograd is only the reference in
tests and `verify`.
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import torch
from plainsight.features import FeatureConfig, analysis_window
from torch import nn
from torch.nn import functional as F

from plainsight_export.models import (
    STD_EPS,
    GlobalMeanPool,
    HeadEnsemble,
    MfccLinear,
    Model,
    check_body,
)

CONV_BACKWARD = ("transpose", "dilate")
FRONTEND_MODES = ("symmetric", "matmul", "conv")


def _bn_scale_shift(bn: nn.modules.batchnorm._BatchNorm) -> tuple[torch.Tensor, torch.Tensor]:
    """Eval-mode batch norm as y = x * scale + shift (float64)."""
    var = bn.running_var.double()
    scale = torch.ones_like(var) if bn.weight is None else bn.weight.detach().double()
    shift = torch.zeros_like(var) if bn.bias is None else bn.bias.detach().double()
    scale = scale / torch.sqrt(var + bn.eps)
    return scale, shift - bn.running_mean.double() * scale


def compile_body(body: nn.Sequential) -> list[tuple[str, dict]]:
    """Body -> list of (kind, spec) steps with every batch norm folded or made an affine."""
    check_body(body)
    steps: list[tuple[str, dict]] = []
    layers = [layer for layer in body if not isinstance(layer, nn.Dropout)]
    i = 0
    while i < len(layers):
        layer = layers[i]
        nxt = layers[i + 1] if i + 1 < len(layers) else None
        if isinstance(layer, (nn.Conv2d, nn.Linear)):
            weight = layer.weight.detach().double()
            bias = (
                torch.zeros(weight.shape[0], dtype=torch.float64)
                if layer.bias is None
                else layer.bias.detach().double()
            )
            is_conv = isinstance(layer, nn.Conv2d)
            bn_type = nn.BatchNorm2d if is_conv else nn.BatchNorm1d
            if isinstance(nxt, bn_type):
                scale, shift = _bn_scale_shift(nxt)
                weight = weight * scale.reshape(-1, *([1] * (weight.dim() - 1)))
                bias = bias * scale + shift
                i += 1
            spec = {"weight": weight.float(), "bias": bias.float()}
            if is_conv:
                spec.update(stride=layer.stride, padding=layer.padding, groups=layer.groups)
                spec.update(kernel=layer.kernel_size, out_channels=layer.out_channels)
            steps.append(("conv" if is_conv else "linear", spec))
        elif isinstance(layer, (nn.BatchNorm2d, nn.BatchNorm1d)):
            scale, shift = _bn_scale_shift(layer)
            steps.append(("affine", {"scale": scale.float(), "shift": shift.float()}))
        elif isinstance(layer, nn.ReLU):
            steps.append(("relu", {}))
        elif isinstance(layer, nn.Flatten):
            if layer.start_dim != 1 or layer.end_dim != -1:
                raise TypeError("Flatten must flatten dims 1..-1")
            steps.append(("flatten", {}))
        elif isinstance(layer, GlobalMeanPool):
            steps.append(("mean", {"dims": tuple(sorted(layer.dims))}))
        else:  # check_body already refused anything else
            raise TypeError(f"unsupported body op {type(layer).__name__}")
        i += 1
    return steps


def _dims(t: torch.Tensor) -> tuple[int, ...]:
    """Static sizes as Python ints, so exporters bake them in instead of tracing Shape ops."""
    return tuple(int(d) for d in t.shape)


def _channel_view(t: torch.Tensor, ndim: int) -> torch.Tensor:
    """Per-channel vector [C] shaped to broadcast over [B, C, ...] of ndim dims."""
    return t.reshape(1, -1, *([1] * (ndim - 2)))


def _dilate(x: torch.Tensor, stride: tuple[int, int]) -> torch.Tensor:
    """Insert stride-1 zeros between rows / columns of [B, C, H, W] (5-D at most, for TFLite)."""
    _, c, h, w = _dims(x)
    sh, sw = stride
    if sh > 1:
        x = F.pad(x.unsqueeze(3), (0, 0, 0, sh - 1)).reshape(-1, c, h * sh, w)
        x = x[:, :, : (h - 1) * sh + 1]
        h = (h - 1) * sh + 1
    if sw > 1:
        x = F.pad(x.unsqueeze(4), (0, sw - 1)).reshape(-1, c, h, w * sw)
        x = x[:, :, :, : (w - 1) * sw + 1]
    return x


class _Graph(nn.Module):
    """Shared forward (front end + folded body) that can keep what the backward pass needs."""

    def __init__(self, model: Model, conv_backward: str, frontend_mode: str):
        super().__init__()
        if not isinstance(model, Model):
            raise TypeError(f"need a plainsight Model (front end + body), got {type(model)}")
        if conv_backward not in CONV_BACKWARD:
            raise ValueError(f"conv_backward must be one of {CONV_BACKWARD}")
        if frontend_mode not in FRONTEND_MODES:
            raise ValueError(f"frontend_mode must be one of {FRONTEND_MODES}")
        fe = model.frontend
        self.cfg = fe.cfg
        self.pad = fe.pad
        self.hop = fe.hop
        self.win = int(fe.dft_kernels.shape[-1])
        self.n_bins = fe.n_bins
        self.log_floor = fe.log_floor
        self.conv_backward = conv_backward
        self.frontend_mode = frontend_mode
        kernels = fe.dft_kernels.detach().clone()  # [2 bins, 1, win]
        if frontend_mode == "symmetric":
            self._register_symmetric_dft()
        elif frontend_mode == "conv":
            self.register_buffer("dft_kernels", kernels)
        else:
            self.register_buffer("dft_matrix", kernels[:, 0, :].t().contiguous())  # [win, 2 bins]
        self.register_buffer("mel_fb", fe.mel_fb.detach().clone())
        self.register_buffer("mean", fe.mean.detach().clone())
        self.register_buffer("inv_std", 1.0 / fe.std.detach().clone())
        self.steps = []  # (kind, spec without tensors); tensors become buffers s<idx>_<key>
        for idx, (kind, spec) in enumerate(compile_body(model.body)):
            for key, value in spec.items():
                if isinstance(value, torch.Tensor):
                    self.register_buffer(f"s{idx}_{key}", value.contiguous())
                    if kind == "conv" and key == "weight" and conv_backward == "dilate":
                        self.register_buffer(f"s{idx}_flipped", self._flip_weight(value, spec))
            plain = {k: v for k, v in spec.items() if not isinstance(v, torch.Tensor)}
            self.steps.append((kind, plain))
        self.eval()

    def _register_symmetric_dft(self) -> None:
        """Half-size DFT for a symmetric window and win == n_fft (even).

        With f the windowed frame, e[n] = f[n] + f[N-n] (n = 0..N/2, ends unpaired) and
        o[n] = f[n] - f[N-n] (n = 1..N/2-1): Re = e @ cos_half, Im[1..N/2-1] = -(o @ sin_half),
        Im[0] = Im[N/2] = 0. Both matrices are symmetric, so the backward pass reuses them:
        half the multiply-adds and a quarter of the constants of the full [win, 2 bins] DFT.
        """
        cfg = self.cfg
        window = analysis_window(cfg)
        n, half = cfg.n_fft, cfg.n_fft // 2
        if cfg.win_length != n or n % 2 or not np.allclose(window[1:], window[1:][::-1]):
            raise ValueError("symmetric DFT needs win_length == n_fft (even), symmetric window")
        idx = np.arange(half + 1)
        self.register_buffer("window", torch.from_numpy(window.astype(np.float32)))
        cos_half = np.cos(2.0 * np.pi * np.outer(idx, idx) / n)
        sin_half = np.sin(2.0 * np.pi * np.outer(idx[1:half], idx[1:half]) / n)
        self.register_buffer("cos_half", torch.from_numpy(cos_half.astype(np.float32)))
        self.register_buffer("sin_half", torch.from_numpy(sin_half.astype(np.float32)))

    @staticmethod
    def _flip_weight(weight: torch.Tensor, spec: dict) -> torch.Tensor:
        """Kernel of the adjoint conv: swap in/out channels per group, flip space."""
        groups = spec["groups"]
        c_out, c_in_g, kh, kw = weight.shape
        w = weight.reshape(groups, c_out // groups, c_in_g, kh, kw).transpose(1, 2)
        return w.reshape(groups * c_in_g, c_out // groups, kh, kw).flip(2, 3).contiguous()

    def _p(self, idx: int, key: str) -> torch.Tensor:
        return getattr(self, f"s{idx}_{key}")

    # ---- front end ------------------------------------------------------------------------
    def _n_chunks(self) -> int:
        return math.ceil(self.win / self.hop)

    def _frames(self, padded: torch.Tensor, n_frames: int) -> torch.Tensor:
        """[B, N + 2 pad] -> [B, T, win] using only pad / reshape / slice / concat."""
        k = self._n_chunks()
        need = (n_frames + k - 1) * self.hop
        have = _dims(padded)[-1]
        padded = F.pad(padded, (0, need - have)) if need > have else padded[:, :need]
        chunks = padded.reshape(-1, n_frames + k - 1, self.hop)
        frames = torch.cat([chunks[:, j : j + n_frames] for j in range(k)], dim=2)
        return frames[:, :, : self.win]

    def _overlap_add(self, frames: torch.Tensor, n_samples: int, lead: int | None = None):
        """Adjoint of _frames + padding: [B, T, win] -> d/dwaveform [B, N], the first frame
        starting `lead` samples before the waveform (default: the front end's padding)."""
        lead = self.pad if lead is None else lead
        k = self._n_chunks()
        n_frames = _dims(frames)[1]
        frames = F.pad(frames, (0, k * self.hop - self.win)).reshape(-1, n_frames, k, self.hop)
        total = None
        for j in range(k):
            part = F.pad(frames[:, :, j], (0, 0, j, k - 1 - j))  # shift j chunks down in time
            total = part if total is None else total + part
        flat = total.reshape(-1, (n_frames + k - 1) * self.hop)
        need = lead + n_samples
        have = (n_frames + k - 1) * self.hop
        if need > have:
            flat = F.pad(flat, (0, need - have))
        return flat[:, lead:need]

    def _spectrum(self, waveform: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Re, Im of each frame, [B, T, bins] each."""
        n_frames = self.cfg.n_frames(_dims(waveform)[-1])
        return self._padded_spectrum(F.pad(waveform, (self.pad, self.pad)), n_frames)

    def _padded_spectrum(self, padded: torch.Tensor, n_frames: int):
        """Re, Im of the first n_frames frames of an already padded signal, frame t at t * hop."""
        if self.frontend_mode == "symmetric":
            half = self.win // 2
            f = self._frames(padded, n_frames) * self.window
            head, tail = f[:, :, : half + 1], f[:, :, half + 1 :].flip(2)  # tail[n-1] = f[N-n]
            even = head + F.pad(tail, (1, 1))
            odd = head[:, :, 1:half] - tail
            re = torch.matmul(even, self.cos_half)
            im = F.pad(torch.matmul(odd, self.sin_half), (1, 1))  # sign of Im is irrelevant
            return re, im
        if self.frontend_mode == "conv":
            spec = F.conv1d(padded.unsqueeze(1), self.dft_kernels, stride=self.hop)
            spec = spec.transpose(1, 2)
        else:
            spec = torch.matmul(self._frames(padded, n_frames), self.dft_matrix)
        return spec[:, :, : self.n_bins], spec[:, :, self.n_bins :]

    def _spectrum_backward(self, d_spec: torch.Tensor, n_samples: int, lead: int | None = None):
        """d/d[re, im] [B, T, 2 bins] -> d/dwaveform [B, N] (`lead`: see _overlap_add)."""
        lead = self.pad if lead is None else lead
        if self.frontend_mode == "symmetric":
            half = self.win // 2
            d_even = torch.matmul(d_spec[:, :, : self.n_bins], self.cos_half)
            d_odd = torch.matmul(d_spec[:, :, self.n_bins + 1 : self.n_bins + half], self.sin_half)
            middle = d_even[:, :, 1:half]
            frames = torch.cat(
                [
                    d_even[:, :, :1],
                    middle + d_odd,
                    d_even[:, :, half:],
                    (middle - d_odd).flip(2),
                ],
                dim=2,
            )
            return self._overlap_add(frames * self.window, n_samples, lead)
        if self.frontend_mode == "conv":
            d_spec = d_spec.transpose(1, 2)
            n_frames = _dims(d_spec)[-1]
            produced = (n_frames - 1) * self.hop + self.win
            full = F.conv_transpose1d(d_spec, self.dft_kernels, stride=self.hop)[:, 0]
            need = lead + n_samples
            if need > produced:
                full = F.pad(full, (0, need - produced))
            return full[:, lead:need]
        # (K @ d_spec^T)^T rather than d_spec @ K^T: a folded K^T would store the DFT twice.
        frames = torch.matmul(self.dft_matrix, d_spec.transpose(1, 2)).transpose(1, 2)
        return self._overlap_add(frames, n_samples, lead)

    # ---- body -----------------------------------------------------------------------------
    def _conv(self, idx: int, spec: dict, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(
            x,
            self._p(idx, "weight"),
            self._p(idx, "bias"),
            spec["stride"],
            spec["padding"],
            1,
            spec["groups"],
        )

    def _conv_input_grad(self, idx: int, spec: dict, g: torch.Tensor, x_shape) -> torch.Tensor:
        weight = self._p(idx, "weight")
        kh, kw = weight.shape[2:]
        (sh, sw), (ph, pw) = spec["stride"], spec["padding"]
        out_h, out_w = _dims(g)[2:]
        extra_h = x_shape[2] - ((out_h - 1) * sh - 2 * ph + kh)
        extra_w = x_shape[3] - ((out_w - 1) * sw - 2 * pw + kw)
        if self.conv_backward == "transpose":
            # VALID transposed conv, then crop the forward padding (TFLite has no padded one).
            full = F.conv_transpose2d(g, weight, None, (sh, sw), 0, 0, spec["groups"])
            if extra_w > pw or extra_h > ph:
                full = F.pad(full, (0, max(extra_w - pw, 0), 0, max(extra_h - ph, 0)))
            return full[:, :, ph : ph + x_shape[2], pw : pw + x_shape[3]]
        g = _dilate(g, (sh, sw))
        # Full correlation with the flipped kernel; crop the forward padding, add the unused tail.
        g = F.pad(g, (kw - 1 - pw, kw - 1 - pw + extra_w, kh - 1 - ph, kh - 1 - ph + extra_h))
        return F.conv2d(g, self._p(idx, "flipped"), None, 1, 0, 1, spec["groups"])

    def _body(self, x: torch.Tensor, keep: bool, start: int = 0, stop: int | None = None):
        """Steps start..stop-1 of the folded body; `saved` holds what their backward needs."""
        saved = []
        for idx, (kind, spec) in enumerate(self.steps[:stop]):
            if idx < start:
                continue
            saved.append(x if keep else None)
            if kind == "conv":
                x = self._conv(idx, spec, x)
            elif kind == "linear":
                x = F.linear(x, self._p(idx, "weight"), self._p(idx, "bias"))
            elif kind == "affine":
                x = x * _channel_view(self._p(idx, "scale"), x.dim()) + _channel_view(
                    self._p(idx, "shift"), x.dim()
                )
            elif kind == "relu":
                x = torch.relu(x)
                saved[-1] = x if keep else None  # the mask comes from the output
            elif kind == "flatten":
                x = x.flatten(1)
            elif kind == "mean":
                x = x.mean(dim=spec["dims"])
        return x, saved

    def _body_backward(self, g: torch.Tensor, saved: list, start: int = 0, stop=None):
        stop = len(self.steps) if stop is None else stop
        for idx in range(stop - 1, start - 1, -1):
            kind, spec = self.steps[idx]
            x = saved[idx - start]
            if kind == "conv":
                g = self._conv_input_grad(idx, spec, g, _dims(x))
            elif kind == "linear":
                g = torch.matmul(g, self._p(idx, "weight"))
            elif kind == "affine":
                g = g * _channel_view(self._p(idx, "scale"), g.dim())
            elif kind == "relu":
                g = torch.where(x > 0, g, torch.zeros_like(g))
            elif kind == "flatten":
                g = g.reshape(-1, *_dims(x)[1:])
            elif kind == "mean":
                dims = _dims(x)
                spread = [1] * len(dims)
                for d in spec["dims"]:
                    g = g.unsqueeze(d)
                    spread[d] = dims[d]
                count = math.prod(spread)
                g = g * torch.full(spread, 1.0 / count, dtype=g.dtype)  # broadcast = expand / n
        return g

    # ---- whole model ----------------------------------------------------------------------
    def _log_mel(self, waveform: torch.Tensor):
        """Unstandardised log-mel [B, T, mels] and what its backward needs (re, im, mel)."""
        return self._log_mel_of(*self._spectrum(waveform))

    def _log_mel_of(self, re: torch.Tensor, im: torch.Tensor):
        power = re * re + im * im
        mel = torch.matmul(power, self.mel_fb) + self.log_floor
        return torch.log(mel), (re, im, mel)

    def _standardise(self, log_mel: torch.Tensor) -> torch.Tensor:
        """The body's input [B, 1, T, mels]."""
        return ((log_mel - self.mean) * self.inv_std).unsqueeze(1)

    def _features(self, waveform: torch.Tensor):
        log_mel, cache = self._log_mel(waveform)
        return self._standardise(log_mel), cache

    def _log_mel_backward(self, d_log: torch.Tensor, cache, n_samples: int, lead=None):
        """d/d log-mel [B, T, mels] -> d/dwaveform [B, N] (`lead`: see _overlap_add)."""
        re, im, mel = cache
        d_power = torch.matmul(d_log / mel, self.mel_fb.t())  # [B, T, bins]
        d_spec = torch.cat([re * d_power, im * d_power], dim=2) * 2.0
        return self._spectrum_backward(d_spec, n_samples, lead)

    def logits(self, waveform: torch.Tensor) -> torch.Tensor:
        feats, _ = self._features(waveform)
        return self._body(feats, keep=False)[0]


class ForwardGraph(_Graph):
    """waveform [B, N] -> logits [B, C], batch norm folded (the grad graph's arithmetic)."""

    def __init__(self, model: Model, frontend_mode: str = "symmetric"):
        super().__init__(model, "transpose", frontend_mode)

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        return self.logits(waveform)


class GradientGraph(_Graph):
    """(waveform [B, N], target [B, C]) -> (logits [B, C], d CE / d waveform [B, N])."""

    def __init__(
        self, model: Model, conv_backward: str = "transpose", frontend_mode: str = "symmetric"
    ):
        super().__init__(model, conv_backward, frontend_mode)

    def forward(self, waveform: torch.Tensor, target: torch.Tensor):
        feats, cache = self._features(waveform)
        logits, saved = self._body(feats, keep=True)
        g = self._body_backward(_ce_grad(logits, target), saved)[:, 0]  # [B, T, mels]
        return logits, self._log_mel_backward(g * self.inv_std, cache, _dims(waveform)[-1])


def hop_layout(cfg: FeatureConfig, window: int, hop_samples: int) -> dict[str, int]:
    """Where a stream hop sits in the model window: the hop is the window's last
    `hop_samples`; frames before `past_frames` never see it (their log-mel is fixed once the
    past is sent), and the `tail` (the window from `tail_start` on) is all those later frames
    read. Shared by the hop graph and the runtime (which reads it from the manifest)."""
    n_frames = cfg.n_frames(window)
    first_sample = window - hop_samples  # frame t reads [t hop - pad, t hop - pad + win)
    past_frames = (first_sample + cfg.pad - cfg.win_length) // cfg.hop_length + 1
    if not 0 < hop_samples < window or not 0 < past_frames < n_frames:  # a frame must be past
        raise ValueError(f"hop of {hop_samples} samples does not fit a {window}-sample window")
    tail_start = past_frames * cfg.hop_length - cfg.pad
    return {
        "hop_samples": hop_samples,
        "past_frames": past_frames,
        "tail_start": tail_start,
        "tail_samples": window - tail_start,
    }


class HopGradientGraph(_Graph):
    """The stream's per-step graph: only the frames a new hop touches are computed.

    (past [B, P, mels] = unstandardised log-mel of the window's first P frames, which the new
    hop does not reach (computed once per hop, by the runtime, from audio already sent),
    tail [B, L] = the window from `tail_start` on, target [B, C]) -> (logits [B, C],
    d CE / d tail [B, L]). Equals GradientGraph (EnsembleGradientGraph for a HeadEnsemble)
    on the window for the last hop_samples samples of the gradient (the tail's first samples
    are the fixed past: their gradient misses the past frames' share and is not used). The
    front end runs on the ~13 % of the frames a 250 ms hop of a 2 s window touches.
    """

    def __init__(
        self,
        model: Model | HeadEnsemble,
        window: int,
        hop_samples: int,
        conv_backward: str = "transpose",
        frontend_mode: str = "symmetric",
    ):
        heads = list(model.heads) if isinstance(model, HeadEnsemble) else [model]
        super().__init__(heads[0], conv_backward, frontend_mode)
        self.mfcc_heads = nn.ModuleList(MfccHeadGraph(head, self.cfg) for head in heads[1:])
        self.weights = tuple(model.weights) if isinstance(model, HeadEnsemble) else (1.0,)
        self.layout = hop_layout(self.cfg, window, hop_samples)
        self.new_frames = self.cfg.n_frames(window) - self.layout["past_frames"]
        self.eval()

    def forward(self, past: torch.Tensor, tail: torch.Tensor, target: torch.Tensor):
        targets = [target if w == 1.0 else target * w for w in self.weights]
        re, im = self._padded_spectrum(F.pad(tail, (0, self.pad)), self.new_frames)
        new_log, cache = self._log_mel_of(re, im)
        log_mel = torch.cat([past, new_log], dim=1)
        logits, saved = self._body(self._standardise(log_mel), keep=True)
        d_log = self._body_backward(_ce_grad(logits, targets[0]), saved)[:, 0] * self.inv_std
        for head, head_target in zip(self.mfcc_heads, targets[1:], strict=True):
            d_log = d_log + head.input_grad(log_mel, head_target)
        d_new = d_log[:, self.layout["past_frames"] :]
        return logits, self._log_mel_backward(d_new, cache, _dims(tail)[-1], lead=0)


def time_cone(steps: list, n_frames: int, first_new: int, n_mels: int) -> dict | None:
    """Which of a body's outputs a stream hop can change, for bodies of convolutions,
    affines and ReLUs, then a mean over time (dim 2) and anything after it (None otherwise).

    A hop changes the log-mel frames from `first_new` on; through the convolutions that
    reaches the pooled layer's time positions from `first_changed` on. Those positions are
    computed exactly from the frames from `crop_start` on (a multiple of the total time
    stride, so every layer's grid lines up, and left of every such position's receptive
    field); the positions before `first_changed` are fixed for the hop. Returns
    {"mean_step", "pooled_frames", "first_changed", "crop_start", "channels", "bands"}."""
    kinds = [kind for kind, _ in steps]
    if "mean" not in kinds:
        return None
    mean_step = kinds.index("mean")
    if tuple(steps[mean_step][1]["dims"]) != (2,):
        return None
    if not set(kinds[:mean_step]) <= {"conv", "affine", "relu"}:
        return None
    convs = [spec for kind, spec in steps[:mean_step] if kind == "conv"]
    if not convs or any(spec["groups"] != 1 for spec in convs):
        return None
    sizes, bands = [n_frames], n_mels
    for spec in convs:
        (st, sf), (pt, pf) = spec["stride"], spec["padding"]
        kt, kf = spec["kernel"]
        sizes.append((sizes[-1] + 2 * pt - kt) // st + 1)
        bands = (bands + 2 * pf - kf) // sf + 1

    def frames_read(position: int) -> tuple[int, int]:  # input frame range of a pooled position
        lo = hi = position
        for spec in reversed(convs):
            st, pt, kt = spec["stride"][0], spec["padding"][0], spec["kernel"][0]
            lo, hi = lo * st - pt, hi * st - pt + kt - 1
        return lo, hi

    changed = [j for j in range(sizes[-1]) if frames_read(j)[1] >= first_new]
    if not changed:
        return None
    stride = math.prod(spec["stride"][0] for spec in convs)
    crop_start = max(0, frames_read(changed[0])[0]) // stride * stride
    return {
        "mean_step": mean_step,
        "pooled_frames": sizes[-1],
        "first_changed": changed[0],
        "crop_start": crop_start,
        "channels": int(convs[-1]["out_channels"]),
        "bands": int(bands),
    }


class _ConeGraph(_Graph):
    """What hop_fixed and hop_crop share: the hop's layout and the body's time cone."""

    def __init__(self, model: Model, window: int, hop_samples: int):
        super().__init__(model, "transpose", "symmetric")
        self.layout = hop_layout(self.cfg, window, hop_samples)
        self.new_frames = self.cfg.n_frames(window) - self.layout["past_frames"]
        cone = time_cone(
            self.steps, self.cfg.n_frames(window), self.layout["past_frames"], self.cfg.n_mels
        )
        if cone is None:
            raise TypeError("the body has no time cone (convolutions, then a mean over time)")
        self.cone = cone


class HopFixedGraph(_ConeGraph):
    """Once per stream hop: past [B, P, mels] (as HopGradientGraph's) -> fixed [B, C, F], the
    sum over the pooled layer's time positions that the hop cannot change (time_cone), from
    the past frames alone (the hop's frames are zeros here: those positions never read them).
    """

    def forward(self, past: torch.Tensor) -> torch.Tensor:
        floor = math.log(self.log_floor)  # the log-mel of silence: any value would do
        log_mel = F.pad(past, (0, 0, 0, self.new_frames), value=floor)
        x, _ = self._body(self._standardise(log_mel), keep=False, stop=self.cone["mean_step"])
        return x[:, :, : self.cone["first_changed"]].sum(dim=2)


class HopCropGradientGraph(_ConeGraph):
    """The stream's per-step graph with the body's cone too: (past_crop [B, P - c, mels] =
    the past log-mel from frame c = crop_start on, tail [B, L], fixed [B, C, F] from
    HopFixedGraph, target) -> (logits, d CE / d tail), equal to HopGradientGraph's. Only the
    frames from crop_start on go through the convolutions; the pooled mean adds `fixed`."""

    def forward(self, past_crop, tail, fixed, target):
        cone, mean = self.cone, self.cone["mean_step"]
        skip = cone["first_changed"] - cone["crop_start"] // self._stride()
        re, im = self._padded_spectrum(F.pad(tail, (0, self.pad)), self.new_frames)
        new_log, cache = self._log_mel_of(re, im)
        feats = self._standardise(torch.cat([past_crop, new_log], dim=1))
        x, saved_convs = self._body(feats, keep=True, stop=mean)
        pooled = (fixed + x[:, :, skip:].sum(dim=2)) / cone["pooled_frames"]
        logits, saved_head = self._body(pooled, keep=True, start=mean + 1)
        g = self._body_backward(_ce_grad(logits, target), saved_head, start=mean + 1)
        g = g.unsqueeze(2) / cone["pooled_frames"]  # the mean's backward, changed positions only
        g = F.pad(g.expand(-1, -1, _dims(x)[2] - skip, -1), (0, 0, skip, 0))
        d_feats = self._body_backward(g, saved_convs, stop=mean)[:, 0] * self.inv_std
        d_new = d_feats[:, -self.new_frames :]
        return logits, self._log_mel_backward(d_new, cache, _dims(tail)[-1], lead=0)

    def _stride(self) -> int:
        return math.prod(spec["stride"][0] for kind, spec in self.steps if kind == "conv")


def _ce_grad(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """d CE / d logits = softmax * sum(target) - target (target need not sum to one)."""
    return torch.softmax(logits, dim=-1) * target.sum(dim=-1, keepdim=True) - target


class MfccHeadGraph(nn.Module):
    """An MfccLinear head on a shared log-mel [B, T, mels]: logits and d CE / d log-mel.

    Forward: standardise the log-mel with the head's own front-end statistics, DCT (a matmul),
    deltas (5 shifted slices = the depthwise conv1d with zero padding), mean and std over
    time, standardise the statistics, linear. Backward: linear -> matmul with W; statistics
    scale; mean -> broadcast / T; std -> (x - mean) / (T std); deltas -> the same slices with
    the flipped kernel; DCT -> matmul with DCT^T; the front-end scale.
    """

    def __init__(self, head: MfccLinear, cfg: FeatureConfig):
        super().__init__()
        if not isinstance(head, MfccLinear):
            raise TypeError(f"an MFCC head must be MfccLinear, got {type(head).__name__}")
        own = head.frontend.cfg
        if replace(own, mean=(), std=()) != replace(cfg, mean=(), std=()):
            raise ValueError(
                "the MFCC head's front end differs from the shared log-mel (train it with "
                "--arch mfcc-shared, on the compact model's FeatureConfig)"
            )
        kernel = head.delta_kernel.detach()[:, 0]  # [M, K], the same taps on every channel
        if not torch.equal(kernel, kernel[:1].expand_as(kernel)):
            raise ValueError("the MFCC head's delta kernel differs between coefficients")
        self.taps = tuple(float(v) for v in kernel[0])
        self.register_buffer("mean", head.frontend.mean.detach().clone())
        self.register_buffer("inv_std", 1.0 / head.frontend.std.detach().clone())
        self.register_buffer("dct", head.dct.detach().clone())  # [mels, M]
        self.register_buffer("stat_mean", head.stat_mean.detach().clone())
        self.register_buffer("inv_stat_std", 1.0 / head.stat_std.detach().clone())
        self.register_buffer("weight", head.linear.weight.detach().clone())  # [C, 4M]
        self.register_buffer("bias", head.linear.bias.detach().clone())
        self.n_mfcc = int(head.dct.shape[1])

    def _shifted_sum(self, x: torch.Tensor, taps) -> torch.Tensor:
        """sum_k taps[k] * x[t + k - K//2] along time (dim 1), zero outside."""
        half = len(taps) // 2
        steps = _dims(x)[1]
        padded = F.pad(x, (0, 0, half, half))
        out = None
        for k, tap in enumerate(taps):
            if tap == 0.0:
                continue
            part = padded[:, k : k + steps] * tap
            out = part if out is None else out + part
        return out

    def _stats(self, log_mel: torch.Tensor):
        mfcc = torch.matmul((log_mel - self.mean) * self.inv_std, self.dct)  # [B, T, M]
        both = torch.cat([mfcc, self._shifted_sum(mfcc, self.taps)], dim=2)  # [B, T, 2M]
        mean = both.mean(dim=1, keepdim=True)
        centred = both - mean
        std = torch.sqrt((centred * centred).mean(dim=1, keepdim=True) + STD_EPS)
        stats = torch.cat([mean[:, 0], std[:, 0]], dim=1)  # [B, 4M]
        return stats, (centred, std)

    def _classify(self, stats: torch.Tensor) -> torch.Tensor:
        return F.linear((stats - self.stat_mean) * self.inv_stat_std, self.weight, self.bias)

    def logits(self, log_mel: torch.Tensor) -> torch.Tensor:
        return self._classify(self._stats(log_mel)[0])

    def input_grad(self, log_mel: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """d CE(target, softmax(logits)) / d log_mel, [B, T, mels]."""
        stats, (centred, std) = self._stats(log_mel)
        logits = self._classify(stats)
        g = torch.matmul(_ce_grad(logits, target), self.weight) * self.inv_stat_std  # [B, 4M]
        two_m = 2 * self.n_mfcc
        steps = _dims(log_mel)[1]
        g_mean, g_std = g[:, None, :two_m], g[:, None, two_m:]
        g_both = g_mean / steps + g_std * centred / (std * steps)  # [B, T, 2M]
        flipped = tuple(reversed(self.taps))
        g_mfcc = g_both[:, :, : self.n_mfcc] + self._shifted_sum(
            g_both[:, :, self.n_mfcc :], flipped
        )
        return torch.matmul(g_mfcc, self.dct.t()) * self.inv_std


class EnsembleGradientGraph(_Graph):
    """(waveform, target) -> (logits of the first head, d sum_h CE_h / d waveform).

    The first head is a `Model` (its folded body as in GradientGraph); the others are
    MfccLinear heads on the same log-mel, which is computed (and back-propagated) once.
    """

    def __init__(
        self,
        ensemble: HeadEnsemble,
        conv_backward: str = "transpose",
        frontend_mode: str = "symmetric",
    ):
        if not isinstance(ensemble, HeadEnsemble) or len(ensemble.heads) < 2:
            raise TypeError("need a HeadEnsemble of a Model and at least one MfccLinear head")
        first, *others = ensemble.heads
        super().__init__(first, conv_backward, frontend_mode)
        self.mfcc_heads = nn.ModuleList(MfccHeadGraph(head, self.cfg) for head in others)
        self.weights = tuple(ensemble.weights)
        self.eval()

    def forward(self, waveform: torch.Tensor, target: torch.Tensor):
        # w * d CE(target) / d logits = d CE(w * target) / d logits: a weight scales the target.
        targets = [target if w == 1.0 else target * w for w in self.weights]
        log_mel, cache = self._log_mel(waveform)
        logits, saved = self._body(self._standardise(log_mel), keep=True)
        d_log = self._body_backward(_ce_grad(logits, targets[0]), saved)[:, 0] * self.inv_std
        for head, head_target in zip(self.mfcc_heads, targets[1:], strict=True):
            d_log = d_log + head.input_grad(log_mel, head_target)
        return logits, self._log_mel_backward(d_log, cache, _dims(waveform)[-1])


def autograd_reference(model: nn.Module, waveform: torch.Tensor, target: torch.Tensor):
    """(logits, grad) of the original eval-mode model by torch.autograd (the test oracle).

    A HeadEnsemble gives the first head's logits and the gradient of the weighted sum of the
    heads' cross-entropies."""
    model = model.eval()
    ensemble = isinstance(model, HeadEnsemble)
    heads = list(model.heads) if ensemble else [model]
    weights = model.weights if ensemble else [1.0]
    x = waveform.detach().clone().requires_grad_(True)
    outputs = [head(x) for head in heads]
    loss = sum(
        -w * (target * torch.log_softmax(out, dim=-1)).sum()
        for w, out in zip(weights, outputs, strict=True)
    )
    (grad,) = torch.autograd.grad(loss, x)
    return outputs[0].detach(), grad.detach()
