"""device/perf_estimate.py counts multiply-adds right (checked on a hand-countable graph)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent


def load_perf():
    spec = importlib.util.spec_from_file_location("perf_estimate", REPO / "device/perf_estimate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_mac_count_of_a_hand_countable_graph(tmp_path):
    onnx = pytest.importorskip("onnx", reason="onnx is needed to build the test graph")
    pytest.importorskip("onnxruntime", reason="onnxruntime runs the graph for its shapes")
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)

    def weight(name, *shape):
        return numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32), name)

    inits = [
        weight("conv_w", 4, 1, 5),  # Conv 1->4 channels, kernel 5: [1,1,100] -> [1,4,96]
        weight("deconv_w", 4, 2, 5),  # ConvTranspose 4->2, kernel 5: [1,4,96] -> [1,2,100]
        weight("mm_w", 100, 3),  # MatMul [1,2,100] x [100,3] -> [1,2,3]
        weight("gemm_w", 6, 7),  # Gemm [1,6] x [6,7] -> [1,7]
        numpy_helper.from_array(np.array([1], np.int64), "axis1"),
        numpy_helper.from_array(np.array([1, 6], np.int64), "shape16"),
    ]
    nodes = [
        helper.make_node("Unsqueeze", ["waveform", "axis1"], ["x1"]),
        helper.make_node("Conv", ["x1", "conv_w"], ["x2"]),
        helper.make_node("ConvTranspose", ["x2", "deconv_w"], ["x3"]),
        helper.make_node("MatMul", ["x3", "mm_w"], ["x4"]),
        helper.make_node("Reshape", ["x4", "shape16"], ["x5"]),
        helper.make_node("Gemm", ["x5", "gemm_w"], ["logits"]),
    ]
    graph = helper.make_graph(
        nodes,
        "toy",
        [helper.make_tensor_value_info("waveform", TensorProto.FLOAT, ["B", 100])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["B", 7])],
        inits,
    )
    path = tmp_path / "toy.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    counted = load_perf().count_macs(path, window=100, classes=7)
    expected = {
        "Conv": 4 * 96 * 1 * 5,  # each output element: Cin x kernel
        "ConvTranspose": 4 * 96 * 2 * 5,  # each input element: Cout x kernel
        "MatMul": 2 * 3 * 100,
        "Gemm": 7 * 6,
    }
    assert counted["by_op"] == expected
    assert counted["total"] == sum(expected.values())
