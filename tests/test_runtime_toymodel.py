"""A tiny hand-differentiable ONNX model directory, to test the engine against the contract.

logits = waveform @ W + b, grad = (softmax(logits) - target) @ W.T (the exact gradient of
the per-example cross-entropy), so every number below can be checked by hand.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from plainsight.features import FeatureConfig

TOY_WINDOW = 3200
TOY_CLASSES = ["anger", "neutral", "sadness"]


def _onnx_graphs(weight: np.ndarray, bias: np.ndarray):
    onnx = pytest.importorskip("onnx", reason="onnx is needed to build the toy model")
    from onnx import TensorProto, helper, numpy_helper

    n, c = weight.shape
    inits = [
        numpy_helper.from_array(weight.astype(np.float32), "W"),
        numpy_helper.from_array(bias.astype(np.float32), "b"),
        numpy_helper.from_array(np.ascontiguousarray(weight.T, np.float32), "WT"),
    ]
    wave = helper.make_tensor_value_info("waveform", TensorProto.FLOAT, ["B", n])
    target = helper.make_tensor_value_info("target", TensorProto.FLOAT, ["B", c])
    logits = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["B", c])
    grad = helper.make_tensor_value_info("grad", TensorProto.FLOAT, ["B", n])
    fwd_nodes = [
        helper.make_node("MatMul", ["waveform", "W"], ["xw"]),
        helper.make_node("Add", ["xw", "b"], ["logits"]),
    ]
    grad_nodes = fwd_nodes + [
        helper.make_node("Softmax", ["logits"], ["p"], axis=-1),
        helper.make_node("Sub", ["p", "target"], ["err"]),
        helper.make_node("MatMul", ["err", "WT"], ["grad"]),
    ]
    opset = [helper.make_opsetid("", 17)]
    forward = helper.make_model(
        helper.make_graph(fwd_nodes, "forward", [wave], [logits], inits[:2]), opset_imports=opset
    )
    gradient = helper.make_model(
        helper.make_graph(grad_nodes, "grad", [wave, target], [logits, grad], inits),
        opset_imports=opset,
    )
    onnx.checker.check_model(gradient)
    return forward.SerializeToString(), gradient.SerializeToString()


def build_toy_model(directory: Path, seed: int = 0, name: str = "toy") -> Path:
    rng = np.random.default_rng(seed)
    weight = rng.normal(0, 1, (TOY_WINDOW, len(TOY_CLASSES))) / np.sqrt(TOY_WINDOW) * 20
    bias = np.zeros(len(TOY_CLASSES))
    forward, gradient = _onnx_graphs(weight, bias)
    directory.mkdir(parents=True, exist_ok=True)
    files = {}
    blobs = (("grad.onnx", "grad", gradient), ("forward.onnx", "forward", forward))
    for fname, graph, blob in blobs:
        (directory / fname).write_bytes(blob)
        files[fname] = {
            "graph": graph,
            "backend": "onnx",
            "sha256": hashlib.sha256(blob).hexdigest(),
            "bytes": len(blob),
        }
    manifest = {
        "format": 1,
        "name": name,
        "version": "0.0.1",
        "corpus": "toy",
        "arch": "linear",
        "role": "default",
        "classes": TOY_CLASSES,
        "features": FeatureConfig().to_dict(),
        "sample_rate": 16000,
        "window_samples": TOY_WINDOW,
        "files": files,
        "opset": 17,
    }
    (directory / "manifest.json").write_text(json.dumps(manifest, indent=1))
    np.save(directory / "weights.npy", weight)  # not in the manifest: for hand checks only
    return directory


@pytest.fixture
def toy_model(tmp_path):
    return build_toy_model(tmp_path / "toy")


def test_toy_gradient_matches_hand_computation(toy_model):
    from plainsight.backends import load_graph
    from plainsight.manifest import load_model_dir

    spec = load_model_dir(toy_model)
    graph = load_graph(spec, "grad", "onnx")
    weight = np.load(toy_model / "weights.npy")
    x = np.random.default_rng(1).uniform(-0.5, 0.5, (2, TOY_WINDOW)).astype(np.float32)
    target = np.eye(3, dtype=np.float32)[[0, 2]]
    logits, grad = graph.run(x, target)
    z = x.astype(np.float64) @ weight
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    np.testing.assert_allclose(logits, z, atol=1e-3)
    np.testing.assert_allclose(grad, (p - target) @ weight.T, atol=1e-5)


def test_toy_fgsm_untargeted_moves_away_and_respects_budget(toy_model):
    from plainsight.masker import Masker

    masker = Masker(
        model=toy_model,
        backend="onnx",
        method="fgsm",
        eps=0.01,
        objective="untargeted",
        overlap=True,  # windows on classify's grid: the objective is under test, not framing
    )
    x = np.random.default_rng(2).uniform(-0.3, 0.3, TOY_WINDOW * 3 + 100).astype(np.float32)
    out = masker.mask(x, 16000)
    assert out.shape == x.shape
    assert np.abs(out - x).max() <= 0.01 + 1e-6
    before = masker.classify(x, 16000)["windows"]
    after = masker.classify(out, 16000)["windows"]
    for b, a in zip(before, after, strict=True):
        k = TOY_CLASSES.index(b["label"])
        assert a["probs"][k] < b["probs"][k]


def test_toy_targeted_moves_towards_class(toy_model):
    from plainsight.masker import Masker

    masker = Masker(
        model=toy_model,
        backend="onnx",
        method="ifgsm",
        steps=4,
        eps=0.02,
        objective="neutral",
        grid_shift_ms=0,  # 20 ms is a tenth of the toy's window; the objective is under test
    )
    x = np.random.default_rng(3).uniform(-0.3, 0.3, TOY_WINDOW).astype(np.float32)
    before = masker.classify(x, 16000)["overall"][1]
    after = masker.classify(masker.mask(x, 16000), 16000)["overall"][1]
    assert after > before


def bundled_model_dir(corpus: str = "emodb") -> Path:
    """The bundled default model; the runtime is useless without it, so a missing one fails."""
    from plainsight.manifest import BUNDLED_DIR

    directory = BUNDLED_DIR / f"{corpus}-compact"
    if not (directory / "manifest.json").is_file():
        pytest.fail(f"bundled model {directory} missing (helper B's export writes it)")
    return directory
