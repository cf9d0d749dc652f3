"""Compact + MFCC-statistics ensemble gradient graph (issue 9 section 2) vs torch autograd:
the MFCC head alone (float64 and float32), the whole graph on one shared log-mel, its ONNX
and TFLite export and the export stage's verify. Small synthetic models, no corpora."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")

from plainsight.features import FeatureConfig  # noqa: E402
from plainsight_export import verify  # noqa: E402
from plainsight_export.export import export_model_dir  # noqa: E402
from plainsight_export.frontend import LogMel  # noqa: E402
from plainsight_export.gradgraph import (  # noqa: E402
    CONV_BACKWARD,
    FRONTEND_MODES,
    EnsembleGradientGraph,
    GradientGraph,
    MfccHeadGraph,
    autograd_reference,
)
from plainsight_export.models import (  # noqa: E402
    MFCC_FEATURES,
    HeadEnsemble,
    MfccLinear,
    Model,
    compact_body,
)
from test_export import randomise_norms  # noqa: E402
from torch import nn  # noqa: E402

CFG = FeatureConfig().with_stats(np.linspace(-3, -1, 40), np.linspace(2, 4, 40))
CLASSES = 3


def cosine(a, b) -> float:
    a, b = np.ravel(a).astype(np.float64), np.ravel(b).astype(np.float64)
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


def mfcc_head(seed: int = 0, cfg: FeatureConfig | None = None, weight_scale=5.0) -> MfccLinear:
    """An MfccLinear with non-trivial statistics scaling (and front-end stats, if cfg has)."""
    torch.manual_seed(seed)
    head = MfccLinear(CLASSES, cfg or FeatureConfig())
    gen = torch.Generator().manual_seed(seed)
    n = head.stat_mean.numel()
    head.stat_mean.copy_(torch.randn(n, generator=gen))
    head.stat_std.copy_(torch.rand(n, generator=gen) + 0.5)
    head.linear.weight.data.mul_(weight_scale)
    return head.eval()


def compact_model(seed: int = 0) -> Model:
    torch.manual_seed(seed)
    body = compact_body(CLASSES, CFG, channels=(4, 8), strides=((2, 2), (2, 2)), hidden=8)
    return randomise_norms(Model(LogMel(CFG), body), seed)


def ensemble(seed: int = 0) -> HeadEnsemble:
    """Weights scaled so that both heads' gradients have comparable norms."""
    heads = [compact_model(seed), mfcc_head(seed + 1, weight_scale=0.05)]
    return HeadEnsemble(heads, ["compact", "mfcc"]).eval()


class _Standardise(nn.Module):
    """Stands in for the MFCC head's LogMel when the input already is a log-mel."""

    def __init__(self, frontend: LogMel):
        super().__init__()
        self.mean, self.std = frontend.mean.clone(), frontend.std.clone()

    def forward(self, log_mel):
        return (log_mel - self.mean) / self.std


@pytest.mark.parametrize(
    "dtype, logits_atol, grad_rtol",
    [(torch.float64, 1e-12, 1e-10), (torch.float32, 1e-5, 1e-4)],
)
def test_mfcc_head_graph_matches_autograd(dtype, logits_atol, grad_rtol):
    """The hand-written MFCC backward (DCT, deltas, mean/std pooling, scaling, linear)
    against autograd through MfccLinear's own code, on a log-mel input."""
    cfg = FeatureConfig().with_stats(np.linspace(-4, -2, 40), np.linspace(1, 3, 40))
    head = mfcc_head(3, cfg).to(dtype)
    graph = MfccHeadGraph(head, FeatureConfig())
    head.frontend = _Standardise(head.frontend)
    gen = torch.Generator().manual_seed(2)
    log_mel = (torch.randn(3, 57, 40, generator=gen) * 2 - 3).to(dtype)
    target = torch.softmax(torch.randn(3, CLASSES, generator=gen), -1).to(dtype)
    target[2] *= 2.0  # unnormalised targets follow the same formula
    x = log_mel.clone().requires_grad_(True)
    ref_logits = head(x)
    loss = -(target * torch.log_softmax(ref_logits, -1)).sum()
    (ref_grad,) = torch.autograd.grad(loss, x)
    with torch.no_grad():
        logits = graph.logits(log_mel)
        grad = graph.input_grad(log_mel, target)
    assert torch.allclose(logits, ref_logits.detach(), atol=logits_atol, rtol=0)
    scale = ref_grad.abs().max()
    assert float((grad - ref_grad).abs().max() / scale) < grad_rtol


@pytest.mark.parametrize("frontend_mode", FRONTEND_MODES)
@pytest.mark.parametrize("conv_backward", CONV_BACKWARD)
def test_ensemble_graph_matches_autograd_float32(frontend_mode, conv_backward):
    model = ensemble()
    gen = torch.Generator().manual_seed(1)
    waveform = 0.1 * torch.randn(2, 6403, generator=gen)  # 3 samples past a whole hop
    target = torch.softmax(torch.randn(2, CLASSES, generator=gen), -1)
    ref_logits, ref_grad = autograd_reference(model, waveform, target)
    with torch.no_grad():
        logits, grad = EnsembleGradientGraph(model, conv_backward, frontend_mode)(waveform, target)
    assert grad.shape == waveform.shape
    assert torch.allclose(logits, ref_logits, atol=1e-5)
    assert torch.allclose(logits, model.heads[0](waveform), atol=1e-5)  # the compact's
    assert cosine(grad, ref_grad) > 0.99999
    mask = ref_grad.abs() > 1e-12
    assert (torch.sign(grad[mask]) == torch.sign(ref_grad[mask])).float().mean() > 0.999


def test_ensemble_graph_matches_autograd_float64():
    """float64 end to end: the remaining error is the float32 rounding of the folded
    weights and DFT constants (relative 1e-6), not the backward pass."""
    model = ensemble().double()
    gen = torch.Generator().manual_seed(4)
    waveform = (0.1 * torch.randn(2, 6400, generator=gen)).double()
    target = torch.eye(CLASSES, dtype=torch.float64)[[0, 2]]
    ref_logits, ref_grad = autograd_reference(model, waveform, target)
    with torch.no_grad():
        logits, grad = EnsembleGradientGraph(model).double()(waveform, target)
    assert torch.allclose(logits, ref_logits, atol=1e-6)
    assert 1.0 - cosine(grad, ref_grad) < 1e-10
    assert float((grad - ref_grad).abs().max() / ref_grad.abs().max()) < 1e-5


def test_ensemble_gradient_is_the_sum_of_the_heads():
    """The MFCC head really contributes: grad = compact's + MFCC head's (autograd each)."""
    model = ensemble()
    gen = torch.Generator().manual_seed(5)
    waveform = 0.1 * torch.randn(1, 6400, generator=gen)
    target = torch.eye(CLASSES)[[1]]
    with torch.no_grad():
        _, both = EnsembleGradientGraph(model)(waveform, target)
        _, compact_only = GradientGraph(model.heads[0])(waveform, target)
    mfcc_only = autograd_reference(model.heads[1], waveform, target)[1]
    assert cosine(both, compact_only) < 0.99 and cosine(both, mfcc_only) < 0.99
    assert cosine(both, compact_only + mfcc_only) > 0.99999


def test_mfcc_head_on_another_front_end_is_refused():
    other = HeadEnsemble([compact_model(), MfccLinear(CLASSES, MFCC_FEATURES).eval()])
    with pytest.raises(ValueError, match="mfcc-shared"):
        EnsembleGradientGraph(other)
    with pytest.raises(TypeError, match="HeadEnsemble"):
        EnsembleGradientGraph(HeadEnsemble([compact_model()]))


@pytest.fixture(scope="module")
def exported_ensemble(tmp_path_factory):
    """A small ensemble exported to ONNX and TFLite through export_model_dir."""
    pytest.importorskip("litert_torch")
    pytest.importorskip("ai_edge_litert")
    model = ensemble()
    ckpt = {
        "arch": "compact+mfcc-shared",
        "classes": ["a", "b", "c"],
        "features": CFG.to_dict(),
        "window_samples": 6400,
        "seed": 0,
        "corpus": "emodb",
        "role": "option",
        "metrics": {"uar": 0.5},
    }
    heads = [{"name": "compact", "loss_weight": 1.0}, {"name": "mfcc", "loss_weight": 1.0}]
    out = tmp_path_factory.mktemp("export") / "small-ensemble"
    manifest = export_model_dir(
        model, ckpt, out, "small-ensemble", checkpoint_ref={"path": None}, extra={"heads": heads}
    )
    return model, out, manifest


def test_exported_ensemble_passes_verification(exported_ensemble):
    model, out, manifest = exported_ensemble
    assert json.loads((out / "manifest.json").read_text())["heads"][1]["name"] == "mfcc"
    checks = verify.verify_dir(out, model=model, log=lambda _: None)
    assert checks and all(c.ok for c in checks), "\n".join(c.line() for c in checks if not c.ok)
    assert {"onnxruntime", "litert-xnnpack"} <= {c.backend for c in checks}
    assert {"grad.onnx", "grad.tflite", "forward.onnx"} <= {c.file for c in checks}


def test_verify_catches_a_compact_only_gradient(exported_ensemble, tmp_path):
    """verify against the ensemble must fail a grad graph that ignores the MFCC head."""
    model, out, _ = exported_ensemble
    compact_only = tmp_path / "compact-only"
    ckpt = json.loads((out / "manifest.json").read_text())
    export_model_dir(
        model.heads[0],
        ckpt,
        compact_only,
        "compact-only",
        backends=("onnx",),
        checkpoint_ref={"path": None},
    )
    checks = verify.verify_dir(compact_only, model=model, backends=("onnx",), log=lambda _: None)
    failed = {(c.file, c.metric) for c in checks if not c.ok}
    assert ("grad.onnx", "grad cosine") in failed


def test_loss_weights_scale_each_head():
    """A head's loss weight multiplies its gradient (graph and autograd alike)."""
    base = ensemble()
    weighted = HeadEnsemble(list(base.heads), base.names, [1.0, 0.3]).eval()
    gen = torch.Generator().manual_seed(6)
    waveform = 0.1 * torch.randn(2, 6400, generator=gen)
    target = torch.eye(CLASSES)[[0, 2]]
    ref_logits, ref_grad = autograd_reference(weighted, waveform, target)
    with torch.no_grad():
        logits, grad = EnsembleGradientGraph(weighted)(waveform, target)
        _, compact_only = GradientGraph(base.heads[0])(waveform, target)
    mfcc_only = autograd_reference(base.heads[1], waveform, target)[1]
    assert torch.allclose(logits, ref_logits, atol=1e-5)
    assert cosine(grad, ref_grad) > 0.99999
    assert cosine(grad, compact_only + 0.3 * mfcc_only) > 0.99999
    assert cosine(grad, compact_only + mfcc_only) < 0.999
    with pytest.raises(ValueError, match="positive loss weight"):
        HeadEnsemble(list(base.heads), weights=[1.0, 0.0])
