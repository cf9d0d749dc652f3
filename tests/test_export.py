"""Export stage: hand-written gradient graph vs autograd, ONNX/TFLite export, verify, manifest."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")

from plainsight.features import FeatureConfig  # noqa: E402
from plainsight.masker import past_log_mel  # noqa: E402
from plainsight_export import verify  # noqa: E402
from plainsight_export.export import (  # noqa: E402
    GRAPH_IO,
    OPSET,
    export_model_dir,
    export_onnx,
    sha256_file,
)
from plainsight_export.frontend import LogMel  # noqa: E402
from plainsight_export.gradgraph import (  # noqa: E402
    CONV_BACKWARD,
    FRONTEND_MODES,
    ForwardGraph,
    GradientGraph,
    HopCropGradientGraph,
    HopFixedGraph,
    HopGradientGraph,
    autograd_reference,
    hop_layout,
    time_cone,
)
from plainsight_export.models import GlobalMeanPool, Model, compact_body  # noqa: E402
from torch import nn  # noqa: E402

CFG = FeatureConfig().with_stats(np.linspace(-3, -1, 40), np.linspace(2, 4, 40))


def randomise_norms(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial batch-norm statistics, so folding is really exercised."""
    gen = torch.Generator().manual_seed(seed)
    for mod in model.modules():
        if isinstance(mod, (nn.BatchNorm1d, nn.BatchNorm2d)):
            n = mod.num_features
            mod.running_mean.copy_(torch.rand(n, generator=gen) - 0.5)
            mod.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
            mod.weight.data.copy_(torch.rand(n, generator=gen) + 0.5)
            mod.bias.data.copy_(torch.rand(n, generator=gen) - 0.5)
    return model.eval()


BODIES = {
    "conv-bn-relu-meanpool": lambda frames: nn.Sequential(
        nn.Conv2d(1, 4, 3, (2, 2), 1, bias=False),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        GlobalMeanPool((2, 3)),
        nn.Linear(4, 3),
    ),
    "grouped-rect-kernel-flatten-dense": lambda frames: nn.Sequential(
        nn.Conv2d(1, 4, (5, 3), (2, 1), (1, 0)),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Conv2d(4, 6, (3, 3), (1, 2), 0, groups=2),
        nn.ReLU(),
        nn.Flatten(),
        nn.Dropout(0.5),
        nn.Linear(6 * ((frames - 3) // 2 - 1) * 18, 8),
        nn.BatchNorm1d(8),
        nn.ReLU(),
        nn.Linear(8, 3),
    ),
    "standalone-bn-timepool": lambda frames: nn.Sequential(
        nn.BatchNorm2d(1),
        nn.Conv2d(1, 2, 3, (1, 1), 1),
        nn.ReLU(),
        GlobalMeanPool((2,)),
        nn.Flatten(),
        nn.BatchNorm1d(80),
        nn.Linear(80, 3),
    ),
}


def small_model(name: str, seed: int = 0, frames: int = 20) -> Model:
    torch.manual_seed(seed)
    return randomise_norms(Model(LogMel(CFG), BODIES[name](frames)), seed)


def cosine(a, b) -> float:
    a, b = np.ravel(a).astype(np.float64), np.ravel(b).astype(np.float64)
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


@pytest.mark.parametrize("body", sorted(BODIES))
@pytest.mark.parametrize("conv_backward", CONV_BACKWARD)
@pytest.mark.parametrize("frontend_mode", FRONTEND_MODES)
def test_gradient_graph_matches_autograd(body, conv_backward, frontend_mode):
    model = small_model(body)
    gen = torch.Generator().manual_seed(1)
    # 3 samples past a whole hop: the tail must get (zero-padded) gradient too.
    waveform = 0.1 * torch.randn(2, 3203, generator=gen)
    target = torch.softmax(torch.randn(2, 3, generator=gen), -1)
    target[1] *= 2.0  # unnormalised targets follow the same formula
    ref_logits, ref_grad = autograd_reference(model, waveform, target)
    graph = GradientGraph(model, conv_backward, frontend_mode)
    with torch.no_grad():
        logits, grad = graph(waveform, target)
        fwd = ForwardGraph(model, frontend_mode)(waveform)
    assert grad.shape == waveform.shape
    assert torch.allclose(logits, ref_logits, atol=1e-5)
    assert torch.allclose(fwd, ref_logits, atol=1e-5)
    assert cosine(grad, ref_grad) > 0.99999
    mask = ref_grad.abs() > 1e-12
    assert (torch.sign(grad[mask]) == torch.sign(ref_grad[mask])).float().mean() > 0.999


@pytest.mark.parametrize("body", sorted(BODIES))
@pytest.mark.parametrize("frontend_mode", FRONTEND_MODES)
@pytest.mark.parametrize("hop", [800, 1000, 2880])
def test_hop_graph_matches_autograd_on_the_hop(body, frontend_mode, hop):
    """The stream's graph, fed the past frames' log-mel and the tail, gives the whole
    window's logits and, on the hop's samples, the whole window's gradient."""
    model = small_model(body)
    window = 3200
    layout = hop_layout(CFG, window, hop)
    gen = torch.Generator().manual_seed(2)
    # speech-like input: white noise left these random bodies' ReLUs dead on the hop
    waveform = torch.from_numpy(np.stack([verify.speech_like(window, seed=s) for s in (0, 1)]))
    target = torch.softmax(torch.randn(2, 3, generator=gen), -1)
    ref_logits, ref_grad = autograd_reference(model, waveform, target)
    assert ref_grad[:, -hop:].abs().max() > 0.1
    graph = HopGradientGraph(model, window, hop, frontend_mode=frontend_mode)
    past = torch.from_numpy(
        np.stack([past_log_mel(w, CFG, layout["past_frames"]) for w in waveform.numpy()])
    )
    with torch.no_grad():
        logits, grad = graph(past, waveform[:, layout["tail_start"] :], target)
    assert grad.shape == (2, layout["tail_samples"])
    assert torch.allclose(logits, ref_logits, atol=1e-4)
    assert cosine(grad[:, -hop:], ref_grad[:, -hop:]) > 0.9999


@pytest.mark.parametrize("hop", [800, 1600, 2880])
@pytest.mark.parametrize("body", ["standalone-bn-timepool", "strided-compact"])
def test_crop_graphs_give_the_hop_graphs_gradient(body, hop):
    """hop_fixed + hop_crop (the body run only where the hop can reach) = the hop graph."""
    if body == "strided-compact":  # the bundled architecture, small: time stride 8
        torch.manual_seed(0)
        strides = ((2, 2), (2, 1), (1, 1), (2, 1))
        net = compact_body(3, CFG, channels=(4, 6, 6, 8), strides=strides, hidden=8)
        model = randomise_norms(Model(LogMel(CFG), net))
    else:
        model = small_model(body)
    window = 6400
    full = HopGradientGraph(model, window, hop)
    fixed_graph = HopFixedGraph(model, window, hop)
    crop_graph = HopCropGradientGraph(model, window, hop)
    cone, layout = crop_graph.cone, crop_graph.layout
    assert 0 <= cone["crop_start"] < layout["past_frames"]
    waveform = torch.from_numpy(np.stack([verify.speech_like(window, seed=s) for s in (0, 1)]))
    target = torch.softmax(torch.randn(2, 3, generator=torch.Generator().manual_seed(3)), -1)
    past = torch.from_numpy(
        np.stack([past_log_mel(w, CFG, layout["past_frames"]) for w in waveform.numpy()])
    )
    tail = waveform[:, layout["tail_start"] :]
    with torch.no_grad():
        ref_logits, ref_grad = full(past, tail, target)
        fixed = fixed_graph(past)
        logits, grad = crop_graph(past[:, cone["crop_start"] :], tail, fixed, target)
    assert ref_grad[:, -hop:].abs().max() > 1e-3  # a live gradient, not a dead ReLU
    assert torch.allclose(logits, ref_logits, atol=1e-5)
    assert cosine(grad[:, -hop:], ref_grad[:, -hop:]) > 0.99999
    with torch.no_grad():  # a wrong fixed part must show: the graph really uses it
        wrong = crop_graph(past[:, cone["crop_start"] :], tail, 0 * fixed, target)[0]
    assert not torch.allclose(wrong, ref_logits, atol=1e-3)


def test_time_cone_only_for_convolutions_then_a_mean_over_time():
    for body in ("conv-bn-relu-meanpool", "grouped-rect-kernel-flatten-dense"):
        graph = GradientGraph(small_model(body))
        assert time_cone(graph.steps, 20, 14, 40) is None
        with pytest.raises(TypeError, match="no time cone"):
            HopCropGradientGraph(small_model(body), 3200, 800)


def test_hop_layout_refuses_a_hop_that_does_not_fit():
    with pytest.raises(ValueError, match="does not fit"):
        hop_layout(CFG, 3200, 3200)
    with pytest.raises(ValueError, match="does not fit"):
        hop_layout(CFG, 3200, 0)
    with pytest.raises(ValueError, match="does not fit"):  # no frame left before the hop
        hop_layout(CFG, 3200, 3040)


def test_gradient_graph_is_not_the_forward_only():
    """A wrong target must change the gradient (the graph really depends on its inputs)."""
    model = small_model("conv-bn-relu-meanpool")
    graph = GradientGraph(model)
    x = 0.1 * torch.randn(1, 3200)
    with torch.no_grad():
        g1 = graph(x, torch.tensor([[1.0, 0.0, 0.0]]))[1]
        g2 = graph(x, torch.tensor([[0.0, 0.0, 1.0]]))[1]
    assert cosine(g1, g2) < 0.99


def test_unsupported_body_is_refused():
    body = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Tanh(), GlobalMeanPool((2, 3)), nn.Linear(2, 3))
    with pytest.raises(TypeError, match="Tanh"):
        GradientGraph(Model(LogMel(CFG), body))


def small_checkpoint(model: Model, window: int = 6400) -> dict:
    return {
        "arch": "test-small",
        "classes": ["a", "b", "c"],
        "features": CFG.to_dict(),
        "window_samples": window,
        "seed": 0,
        "corpus": "emodb",
        "role": "default",
        "metrics": {"uar": 0.5, "accuracy": 0.6, "confusion": [[1, 0], [0, 1]]},
    }


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """One small model exported to ONNX and TFLite (about 20 s, mostly litert-torch)."""
    pytest.importorskip("litert_torch")
    pytest.importorskip("ai_edge_litert")
    model = small_model("grouped-rect-kernel-flatten-dense", frames=40)  # 6400 samples
    ckpt = small_checkpoint(model)
    out = tmp_path_factory.mktemp("export") / "small"
    graphs = ("grad", "forward", "hop")
    manifest = export_model_dir(model, ckpt, out, "test-small", graphs, checkpoint_ref={})
    return model, ckpt, out, manifest


def test_manifest_content(exported):
    model, ckpt, out, manifest = exported
    assert manifest == json.loads((out / "manifest.json").read_text())
    assert manifest["format"] == 1 and manifest["name"] == "test-small"
    assert manifest["classes"] == ckpt["classes"] and manifest["corpus"] == "emodb"
    assert FeatureConfig.from_dict(manifest["features"]) == CFG
    assert manifest["window_samples"] == 6400 and manifest["sample_rate"] == 16000
    assert manifest["opset"] == OPSET
    assert manifest["metrics"]["uar"] == 0.5 and manifest["metrics"]["chance_uar"] == 1 / 3
    assert {"torch", "onnx", "litert_torch"} <= set(manifest["versions"])
    assert manifest["graphs"]["grad"] == {
        "inputs": {"waveform": ["B", 6400], "target": ["B", 3]},
        "outputs": {"logits": ["B", 3], "grad": ["B", 6400]},
    }
    assert manifest["graphs"]["forward"]["inputs"] == {"waveform": ["B", 6400]}
    # the stream's hop graph: a 250 ms hop (4000 samples) at the end of the 6400-sample window
    assert manifest["graphs"]["hop"] == {
        "inputs": {"past": ["B", 14, 40], "tail": ["B", 4280], "target": ["B", 3]},
        "outputs": {"logits": ["B", 3], "grad": ["B", 4280]},
        "hop_samples": 4000,
        "past_frames": 14,
        "tail_start": 2120,
        "tail_samples": 4280,
    }
    files = sorted(p.name for p in out.iterdir())
    graphs = ["forward", "grad", "hop"]
    assert files == sorted(f"{g}.{b}" for g in graphs for b in ("onnx", "tflite")) + [
        "manifest.json"
    ]
    for fname, meta in manifest["files"].items():
        assert meta["sha256"] == sha256_file(out / fname)
        assert meta["bytes"] == (out / fname).stat().st_size
        assert meta["graph"] == fname.split(".")[0]
        assert meta["backend"] == {"onnx": "onnx", "tflite": "tflite"}[fname.split(".")[1]]


def test_onnx_io_names_and_dynamic_batch(exported):
    import onnxruntime as ort

    _, _, out, _ = exported
    sess = ort.InferenceSession(str(out / "grad.onnx"), providers=["CPUExecutionProvider"])
    assert [i.name for i in sess.get_inputs()] == list(GRAPH_IO["grad"][0])
    assert [o.name for o in sess.get_outputs()] == list(GRAPH_IO["grad"][1])
    for batch in (1, 4):
        x = np.zeros((batch, 6400), np.float32)
        t = np.full((batch, 3), 1 / 3, np.float32)
        logits, grad = sess.run(None, {"waveform": x, "target": t})
        assert logits.shape == (batch, 3) and grad.shape == (batch, 6400)


def test_exported_dir_passes_verification(exported):
    model, _, out, _ = exported
    lines = []
    checks = verify.verify_dir(out, model=model, log=lines.append)
    assert checks and all(c.ok for c in checks), "\n".join(c.line() for c in checks if not c.ok)
    backends = {c.backend for c in checks}
    assert {"onnxruntime", "litert-xnnpack", "litert-builtin"} <= backends
    if verify.tflite_python() is None:
        assert any("tflite-runtime" in line for line in lines)  # skipped, with the reason
    cases = {c.case for c in checks}
    assert {"random", "speech-like", "ifgsm-10"} <= cases
    hop_checks = {(c.file, c.metric) for c in checks if c.file.startswith("hop.")}
    assert ("hop.onnx", "hop grad cosine") in hop_checks
    assert ("hop.tflite", "hop grad sign agree") in hop_checks


class ConstantGrad(nn.Module):
    """True logits, but a gradient baked in at export time: must never pass verification."""

    def __init__(self, model, grad):
        super().__init__()
        self.graph = GradientGraph(model)
        self.register_buffer("baked", grad)

    def forward(self, waveform, target):
        logits, _ = self.graph(waveform, target)
        return logits, self.baked.expand(waveform.shape[0], -1) + 0.0 * waveform


def test_constant_gradient_fails_verification(exported, tmp_path):
    model, _, out, manifest = exported
    bad = tmp_path / "bad"
    shutil.copytree(out, bad)
    x = torch.from_numpy(verify.speech_like(6400)[None])
    t = torch.full((1, 3), 1 / 3)
    baked = autograd_reference(model, x, t)[1]  # a real gradient, of one fixed input
    inputs = {"waveform": x, "target": t}
    export_onnx(ConstantGrad(model, baked).eval(), "grad", inputs, bad / "grad.onnx")
    manifest["files"]["grad.onnx"]["sha256"] = sha256_file(bad / "grad.onnx")
    manifest["files"]["grad.onnx"]["bytes"] = (bad / "grad.onnx").stat().st_size
    (bad / "manifest.json").write_text(json.dumps(manifest))
    checks = verify.verify_dir(bad, model=model, backends=("onnx",), log=lambda _: None)
    failed = {(c.file, c.metric) for c in checks if not c.ok}
    assert ("grad.onnx", "grad cosine") in failed
    assert ("grad.onnx", "lockstep sign flips") in failed
    assert not any(c.file == "forward.onnx" for c in checks if not c.ok)


def test_tampered_file_is_refused_by_verify(exported, tmp_path):
    model, _, out, _ = exported
    bad = tmp_path / "tampered"
    shutil.copytree(out, bad)
    data = bytearray((bad / "forward.onnx").read_bytes())
    data[-1] ^= 1
    (bad / "forward.onnx").write_bytes(bytes(data))
    with pytest.raises(verify.VerifyError, match="sha256"):
        verify.verify_dir(bad, model=model)


def test_onnx_export_is_deterministic(tmp_path):
    model = small_model("conv-bn-relu-meanpool")
    inputs = {"waveform": 0.1 * torch.randn(2, 3200), "target": torch.full((2, 3), 1 / 3)}
    graph = GradientGraph(model)
    export_onnx(graph, "grad", inputs, tmp_path / "a.onnx")
    export_onnx(GradientGraph(model), "grad", inputs, tmp_path / "b.onnx")
    assert sha256_file(tmp_path / "a.onnx") == sha256_file(tmp_path / "b.onnx")


def test_cli_verify_rejects_non_model_dir(tmp_path, capsys):
    from plainsight_export.cli import main

    assert main(["verify", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "manifest.json" in err[0]


def test_conv_backward_any_geometry_matches_autograd():
    """Property test over conv geometry (kernel, stride, padding, groups, input size)."""
    hypothesis = pytest.importorskip("hypothesis")
    st = hypothesis.strategies

    @hypothesis.settings(max_examples=25, deadline=None, derandomize=True)
    @hypothesis.given(
        kh=st.integers(1, 5),
        kw=st.integers(1, 5),
        sh=st.integers(1, 3),
        sw=st.integers(1, 3),
        ph=st.integers(0, 2),
        pw=st.integers(0, 2),
        groups=st.sampled_from([1, 2]),
        frames=st.integers(6, 17),
        conv_backward=st.sampled_from(CONV_BACKWARD),
    )
    def check(kh, kw, sh, sw, ph, pw, groups, frames, conv_backward):
        torch.manual_seed(0)
        body = nn.Sequential(
            nn.Conv2d(1, 2, 3, 1, 1),
            nn.ReLU(),
            nn.Conv2d(2, 4, (kh, kw), (sh, sw), (ph, pw), groups=groups),
            nn.ReLU(),
            GlobalMeanPool((2, 3)),
            nn.Linear(4, 3),
        )
        model = randomise_norms(Model(LogMel(CFG), body))
        gen = torch.Generator().manual_seed(frames)
        waveform = 0.1 * torch.randn(1, frames * 160 + 7, generator=gen)
        target = torch.tensor([[0.2, 0.5, 0.3]])
        ref_logits, ref_grad = autograd_reference(model, waveform, target)
        with torch.no_grad():
            logits, grad = GradientGraph(model, conv_backward)(waveform, target)
        assert torch.allclose(logits, ref_logits, atol=1e-5)
        hypothesis.assume(ref_grad.abs().max() > 0)  # all ReLUs dead: nothing to compare
        assert cosine(grad, ref_grad) > 0.99999

    check()
