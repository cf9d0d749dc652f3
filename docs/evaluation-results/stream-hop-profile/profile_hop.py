"""Where does one default stream hop's time go? (1 thread, emodb-compact, onnxruntime)

1. Python level: a 20 s synthetic speech stream through StreamProcessor at the default hop;
   CPU time per hop, and the share spent inside the gradient graph's run().
2. Graph level: onnxruntime's own profiler on grad.onnx (batch 1, as the stream calls it),
   node times grouped by stage via the graph's topology: front end forward (waveform ->
   normalised log-mel), body forward, loss, body backward, front end backward (-> grad).
"""

import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from plainsight.bench import synthetic_speechlike
from plainsight.masker import Masker
from plainsight.stream import StreamProcessor, to_pcm

masker = Masker(threads=1)
spec = masker.specs[0]
audio = synthetic_speechlike(20.0, 16000)
pcm = to_pcm(audio)

# --- 1. python level ---------------------------------------------------------------------
grad = masker.members[0].grad
inside = {"cpu": 0.0, "calls": 0}
orig_run = grad.run


def timed_run(*a, **k):
    c0 = time.process_time()
    out = orig_run(*a, **k)
    inside["cpu"] += time.process_time() - c0
    inside["calls"] += 1
    return out


grad.run = timed_run
proc = StreamProcessor(masker, 16000, 250.0)
proc.push(pcm[:16000])  # warm-up: first 4 hops
inside.update(cpu=0.0, calls=0)
c0, w0 = time.process_time(), time.perf_counter()
hops_before = proc.frames
proc.push(pcm[16000:])
cpu, wall = time.process_time() - c0, time.perf_counter() - w0
hops = proc.frames - hops_before
level1 = {
    "hops": hops,
    "cpu_ms_per_hop": 1000 * cpu / hops,
    "wall_ms_per_hop": 1000 * wall / hops,
    "cpu_rtf": cpu / (hops * 0.25),
    "grad_calls_per_hop": inside["calls"] / hops,
    "grad_run_cpu_ms_per_call": 1000 * inside["cpu"] / inside["calls"],
    "share_in_grad_run": inside["cpu"] / cpu,
}

# --- 2. graph level -----------------------------------------------------------------------
path = spec.graph_file("grad", "onnx")
model = onnx.load(str(path))
nodes = list(model.graph.node)
first_conv = next(i for i, n in enumerate(nodes) if n.op_type == "Conv")
softmax = next(i for i, n in enumerate(nodes) if n.op_type == "Softmax")
last_convT = max(i for i, n in enumerate(nodes) if n.op_type == "ConvTranspose")
logits_node = next(i for i, n in enumerate(nodes) if "logits" in n.output)
# topological order of the exporter: [front end fwd][body fwd][loss][body bwd][front end bwd]
# the front end backward starts at the first node after the last ConvTranspose that is not
# a pure shape op feeding it: we split at the last ConvTranspose (everything after it maps the
# feature gradient back to the waveform).
stage_of = {}
for i, n in enumerate(nodes):
    if i < first_conv:
        stage = "front end forward"
    elif i <= logits_node:
        stage = "body forward"
    elif i < softmax + 5:
        stage = "loss"
    elif i <= last_convT:
        stage = "body backward"
    else:
        stage = "front end backward"
    stage_of[n.name] = stage


def stage_of_kernel(name: str) -> str:
    """Stage of a kernel of the optimised graph: ORT renames the nodes it fuses (Conv+Relu in
    the NCHWc layout is named after the Relu's output, with layout reorders around it)."""
    base = name.split("_token")[0].removeprefix("fused ").split("/GatherSliceToSplitFusion")[0]
    if base.endswith("_output_0_nchwc"):  # fused Conv+Relu, named after its Relu's output
        relu = base.removesuffix("_output_0_nchwc")
        return stage_of.get(relu, "body forward")
    if base in ("ReorderOutput", "ReorderInput", "Squeeze"):
        return "body forward"  # layout changes around the NCHWc convolutions
    return stage_of.get(base, "other")


opts = ort.SessionOptions()
opts.intra_op_num_threads = 1
opts.inter_op_num_threads = 1
opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
opts.enable_profiling = True
opts.profile_file_prefix = os.path.join(tempfile.gettempdir(), "plainsight_ort")
sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
x = audio[None, : masker.window].astype(np.float32)
c = len(spec.classes)
target = np.eye(c, dtype=np.float32)[[spec.classes.index("neutral")]]
for _ in range(10):
    sess.run(None, {"waveform": x, "target": target})
RUNS = 200
t0 = time.process_time()
for _ in range(RUNS):
    sess.run(None, {"waveform": x, "target": target})
run_cpu_ms = 1000 * (time.process_time() - t0) / RUNS
prof = sess.end_profiling()
events = json.loads(Path(prof).read_text())
os.unlink(prof)
totals, by_op = {}, {}
for e in events:
    if e.get("cat") != "Node" or not e["name"].endswith("_kernel_time"):
        continue
    name = e["name"][: -len("_kernel_time")]
    stage = stage_of_kernel(name)
    totals[stage] = totals.get(stage, 0) + e["dur"]
    op = e.get("args", {}).get("op_name", "?")
    key = (stage, op)
    by_op[key] = by_op.get(key, 0) + e["dur"]
all_us = sum(totals.values())
level2 = {
    "grad_run_cpu_ms": run_cpu_ms,
    "stage_share": {k: v / all_us for k, v in sorted(totals.items(), key=lambda kv: -kv[1])},
    "top_ops": [
        {"stage": s, "op": o, "share": v / all_us}
        for (s, o), v in sorted(by_op.items(), key=lambda kv: -kv[1])[:12]
    ],
}
print(json.dumps({"python": level1, "graph": level2}, indent=1))


# --- 3. multiply-adds per stage (Conv, ConvTranspose, MatMul, Gemm; shapes from a real run) --
def macs_by_stage() -> dict:
    counted = ("Conv", "ConvTranspose", "MatMul", "Gemm")
    m = onnx.load(str(path))
    inits = {i.name: tuple(i.dims) for i in m.graph.initializer}
    names = []
    for n in m.graph.node:
        if n.op_type in counted:
            names += [t for t in list(n.input[:2]) + [n.output[0]] if t not in inits]
    have = {o.name for o in m.graph.output}
    for t in dict.fromkeys(names):
        if t not in have:
            m.graph.output.append(onnx.ValueInfoProto(name=t))
    o = ort.SessionOptions()
    o.intra_op_num_threads = 1
    o.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    s = ort.InferenceSession(m.SerializeToString(), o, providers=["CPUExecutionProvider"])
    outs = dict(
        zip(
            [x.name for x in s.get_outputs()],
            s.run(None, {"waveform": x, "target": target}),
            strict=True,
        )
    )

    def shape(t):
        return inits[t] if t in inits else outs[t].shape

    macs = {}
    for n in m.graph.node:
        if n.op_type not in counted:
            continue
        if n.op_type in ("MatMul", "Gemm"):
            a, b = shape(n.input[0]), shape(n.input[1])
            transb = any(at.name == "transB" and at.i for at in n.attribute)
            k = a[-1]
            cols = b[0] if transb else b[-1]
            mac = int(np.prod(a[:-1])) * k * cols
        elif n.op_type == "Conv":
            w, y = shape(n.input[1]), shape(n.output[0])
            mac = int(np.prod(y)) * int(np.prod(w[1:]))
        else:  # ConvTranspose: every input element times the kernel fan-out
            w, xin = shape(n.input[1]), shape(n.input[0])
            mac = int(np.prod(xin)) * int(np.prod(w[1:]))
        st = stage_of[n.name]
        macs[st] = macs.get(st, 0) + mac
    return macs


level3 = macs_by_stage()
print(json.dumps({"macs_per_grad_call": level3, "total": sum(level3.values())}, indent=1))
