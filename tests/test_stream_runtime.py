"""`plainsight stream`: causal, chunking-invariant, sample-count preserving, fail-closed."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from plainsight.masker import Masker
from plainsight.stream import FAIL_AFTER_ENV, StreamProcessor, serve
from test_runtime_toymodel import bundled_model_dir

HOP_MS = 250.0
HOP_SAMPLES = 4000  # HOP_MS at 16 kHz


@pytest.fixture(scope="module")
def masker():
    return Masker(model=bundled_model_dir(), backend="onnx")


def speechlike_pcm(seconds: float, seed: int = 0) -> np.ndarray:
    from plainsight.bench import synthetic_speechlike

    audio = synthetic_speechlike(seconds, 16000, seed)
    return np.round(audio * 32767).astype("<i2")


def run_serve(make_masker, data: bytes, read_size: int, **kwargs) -> tuple[int, bytes]:
    """Feed `data` through serve() via pipes, reading at most read_size bytes per read."""
    r_in, w_in = os.pipe()
    r_out, w_out = os.pipe()
    out: list[bytes] = []

    def writer():
        for i in range(0, len(data), 4096):
            os.write(w_in, data[i : i + 4096])
        os.close(w_in)

    def reader():
        while chunk := os.read(r_out, 65536):
            out.append(chunk)

    threads = [threading.Thread(target=writer), threading.Thread(target=reader)]
    for t in threads:
        t.start()
    try:
        rc = serve(
            make_masker, 16000, HOP_MS, fd_in=r_in, fd_out=w_out, read_size=read_size, **kwargs
        )
    finally:
        os.close(w_out)
        for t in threads:
            t.join()
        os.close(r_in)
        os.close(r_out)
    return rc, b"".join(out)


def processor_output(masker, pcm: np.ndarray, chunks: list[int]) -> np.ndarray:
    proc = StreamProcessor(masker, 16000, HOP_MS)
    outputs, i = [], 0
    for size in chunks:
        outputs += proc.push(pcm[i : i + size])
        i += size
    outputs += proc.push(pcm[i:])
    outputs.append(proc.flush())
    return np.concatenate(outputs)


def test_lone_sample_and_hop_tails_are_masked(masker):
    """Found by hypothesis: a 1-sample input came out unchanged (UnmaskedHopError): its
    I-FGSM steps cancelled (+-+-... ends at u == 0, as for ~10 % of samples). Every sample
    with a budget must move."""
    lone = np.array([32574], "<i2")
    assert not np.array_equal(processor_output(masker, lone, [1]), lone)
    pcm = speechlike_pcm(1.0)
    out = processor_output(masker, pcm, [len(pcm)])
    for end in range(HOP_SAMPLES, len(pcm) + 1, HOP_SAMPLES):
        tail = slice(end - 80, end)  # the last 5 ms of each hop
        speech = pcm[tail] != 0
        assert np.all(out[tail][speech] != pcm[tail][speech]), f"hop ending at {end}"


def test_stream_changes_audio_within_budget_and_keeps_count(masker):
    pcm = speechlike_pcm(1.3)  # not a whole number of hops: the remainder is flushed
    out = processor_output(masker, pcm, [len(pcm)])
    assert out.dtype == np.dtype("<i2") and len(out) == len(pcm)
    diff = np.abs(out.astype(np.int32) - pcm)
    assert diff.max() > 0, "stream left the audio unchanged"
    # budget: snr_db of the window RMS; the window RMS is at most the peak level
    assert diff.max() <= np.abs(pcm.astype(np.int32)).max()


def test_stream_is_causal(masker):
    """The output of the first hops does not depend on later input."""
    pcm = speechlike_pcm(1.0)
    other = pcm.copy()
    other[8000:] = -other[8000:]
    a = processor_output(masker, pcm, [len(pcm)])
    b = processor_output(masker, other, [len(other)])
    assert np.array_equal(a[:8000], b[:8000])
    assert not np.array_equal(a[8000:], b[8000:])


@pytest.mark.parametrize("read_size", [1, 2, 3, 4096, 4097])
def test_stream_chunking_invariance(masker, read_size):
    pcm = speechlike_pcm(0.9, seed=1)
    expected = processor_output(masker, pcm, [len(pcm)])
    rc, out = run_serve(lambda: masker, pcm.tobytes(), read_size)
    assert rc == 0
    assert np.array_equal(np.frombuffer(out, "<i2"), expected)


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    samples=st.lists(st.integers(-32768, 32767), min_size=0, max_size=9000),
    cuts=st.lists(st.integers(1, 5000), max_size=6),
    read_size=st.sampled_from([1, 7, 2048, 65536]),
)
def test_stream_random_pcm_and_chunking(masker, samples, cuts, read_size):
    pcm = np.asarray(samples, "<i2")
    reference = processor_output(masker, pcm, [len(pcm)])
    assert len(reference) == len(pcm)
    assert np.array_equal(processor_output(masker, pcm, cuts), reference)
    rc, out = run_serve(lambda: masker, pcm.tobytes(), read_size)
    assert rc == 0 and np.array_equal(np.frombuffer(out, "<i2"), reference)


def test_stream_fail_closed_default_exits_without_writing_the_chunk(masker, monkeypatch):
    monkeypatch.setenv(FAIL_AFTER_ENV, "2")
    pcm = speechlike_pcm(2.0)
    rc, out = run_serve(lambda: masker, pcm.tobytes(), 4096)
    assert rc != 0
    got = np.frombuffer(out, "<i2")
    hop = 4000
    assert len(got) == 2 * hop  # only the two hops masked before the failure
    monkeypatch.delenv(FAIL_AFTER_ENV)
    assert np.array_equal(got, processor_output(masker, pcm[: 2 * hop], [2 * hop]))


def test_stream_fail_closed_silence_writes_zeros(masker, monkeypatch):
    monkeypatch.setenv(FAIL_AFTER_ENV, "2")
    pcm = speechlike_pcm(2.0)
    rc, out = run_serve(lambda: masker, pcm.tobytes(), 4096, on_error="silence")
    got = np.frombuffer(out, "<i2")
    assert rc == 0 and len(got) == len(pcm)
    assert np.any(got[:8000] != 0)
    assert not np.any(got[8000:]), "after the failure only silence may go out"


def test_stream_model_load_failure_never_forwards_raw(tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(bundled_model_dir(), broken)
    (broken / "grad.onnx").write_bytes(b"garbage")  # hash mismatch -> refused at load
    pcm = speechlike_pcm(1.0).tobytes()
    cmd = [sys.executable, "-m", "plainsight.cli", "stream", "--model", str(broken)]
    default = subprocess.run(cmd, input=pcm, capture_output=True, timeout=60)
    assert default.returncode != 0 and default.stdout == b""
    assert b"sha256" in default.stderr
    silence = subprocess.run(
        cmd + ["--on-error", "silence"], input=pcm, capture_output=True, timeout=60
    )
    assert silence.returncode == 0
    assert silence.stdout == bytes(len(pcm))


def test_stream_cli_one_byte_chunks_sigterm_flush_and_status(masker, tmp_path):
    """Real process: 1-byte writes, SIGTERM mid-stream flushes the remainder, status JSON."""
    pcm = speechlike_pcm(1.1, seed=2)
    status = tmp_path / "status.json"
    proc = subprocess.Popen(
        [sys.executable, "-m", "plainsight.cli", "stream", "--status-file", str(status)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=dict(os.environ, OMP_NUM_THREADS="1"),
    )
    data = pcm.tobytes()
    for i in range(0, 2000):
        proc.stdin.write(data[i : i + 1])
        proc.stdin.flush()
    proc.stdin.write(data[2000:])
    proc.stdin.flush()
    deadline = time.time() + 60
    while time.time() < deadline:  # wait until the status says every sample went out
        if status.exists():
            record = json.loads(status.read_text())
            if record.get("samples_in") == len(pcm) and record.get("frames", 0) >= 4:
                break
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err.decode()
    got = np.frombuffer(out, "<i2")
    assert np.array_equal(got, processor_output(masker, pcm, [len(pcm)]))
    record = json.loads(status.read_text())
    assert record["state"] == "stopped" and record["samples_out"] == len(pcm)
    for key in ("started_at", "uptime_s", "samples_in", "frames", "rtf", "last_error", "model"):
        assert key in record
    assert record["backend"] == "onnx"


def test_stream_other_rate_keeps_count_and_chunking(masker):
    from plainsight.resample import resample

    pcm16 = speechlike_pcm(0.8, seed=3).astype(np.float32) / 32768
    pcm = np.round(resample(pcm16, 16000, 48000) * 32767).astype("<i2")

    def run(chunks):
        proc = StreamProcessor(masker, 48000, HOP_MS)
        outputs, i = [], 0
        for size in chunks:
            outputs += proc.push(pcm[i : i + size])
            i += size
        return np.concatenate(outputs + [proc.flush()])

    whole = run([len(pcm)])
    assert len(whole) == len(pcm)
    assert np.array_equal(whole, run([1000, 7, 20000, len(pcm)]))
    diff = np.abs(whole.astype(np.int32) - pcm)
    assert 0 < diff.max() < 0.1 * 32768


def _window_graph_only(masker: Masker) -> Masker:
    for member in masker.members:
        member.hop = member.hop_crop = None
    return masker


def _hop_graph_only(masker: Masker) -> Masker:
    for member in masker.members:
        member.hop_crop = None
    return masker


@pytest.mark.parametrize("backend", ["onnx", "tflite"])
@pytest.mark.parametrize("model", ["emodb-compact", "emodb-compact-mfcc"])
def test_hop_graph_gives_the_window_graphs_hop_perturbation(backend, model):
    """The frame-caching hop graph is an optimisation only: on the same window, a hop gets
    the perturbation the whole-window graph gives it (up to a rare float tie)."""
    from plainsight.manifest import BUNDLED_DIR

    if backend == "tflite":
        pytest.importorskip("ai_edge_litert", reason="TFLite backend (extra [tflite]) missing")
    crop = Masker(model=BUNDLED_DIR / model, backend=backend)
    fast = _hop_graph_only(Masker(model=BUNDLED_DIR / model, backend=backend))
    slow = _window_graph_only(Masker(model=BUNDLED_DIR / model, backend=backend))
    assert fast.hop_graphs_fit(HOP_SAMPLES) and not slow.hop_graphs_fit(HOP_SAMPLES)
    # single models also ship the body's crop; an ensemble's MFCC head reads every frame
    assert (crop.members[0].hop_crop is not None) == (model == "emodb-compact")
    audio = speechlike_pcm(3.0, seed=3).astype(np.float32) / 32768
    window = fast.window
    for end in (HOP_SAMPLES, 5 * HOP_SAMPLES, len(audio)):  # stream start: zeros before
        context = np.zeros(window, np.float32)
        part = audio[max(0, end - window) : end]
        context[window - len(part) :] = part
        valid = (np.arange(window) >= window - len(part)).astype(np.float32)
        bound = fast.budget(context[None], valid[None])[0]
        bound[:-HOP_SAMPLES] = 0.0
        a = fast.perturb_hop(context, bound, context, HOP_SAMPLES)
        b = slow.perturb_hop(context, bound, context, HOP_SAMPLES)
        c = crop.perturb_hop(context, bound, context, HOP_SAMPLES)
        assert np.all(a[:-HOP_SAMPLES] == 0) and np.all(b[:-HOP_SAMPLES] == 0)
        assert np.mean(a == b) > 0.999 and np.any(a != 0)
        assert np.mean(c == b) > 0.999


def test_every_hop_of_a_stream_gets_the_window_graphs_perturbation(monkeypatch):
    """End to end (onnxruntime): at every hop of a real stream, the cropped graphs give the
    window graph's gradient on the same history (up to float rounding), at the hop's start
    and at its final perturbation. The sign steps are not compared bit for bit: a float-level
    tie flips one sign step, and the later steps of the hop can carry that on to half its
    samples (measured on an AVX2-only x86: one hop of 14 agreed on 47.6 % of its samples,
    cosine 0.96, with gradients equal to 5e-7), so outputs are compared by direction."""
    fast = Masker(model=bundled_model_dir(), backend="onnx")
    slow = _window_graph_only(Masker(model=bundled_model_dir(), backend="onnx"))
    gradient_errors, cosines, agree = [], [], []
    real = fast.perturb_hop

    def both(context, bound, clean, hop_samples, past=None):
        a = real(context, bound, clean, hop_samples, past)
        b = slow.perturb_hop(context, bound, clean, hop_samples)
        start, cropped = fast._hop_gradient(context, clean, hop_samples, past)
        _, window = slow._hop_gradient(context, clean, hop_samples)
        hop = slice(-hop_samples, None)
        for delta in (np.zeros_like(a), a):
            g_crop, g_window = cropped(delta[start:])[hop], window(delta)[hop]
            gradient_errors.append(np.linalg.norm(g_crop - g_window) / np.linalg.norm(g_window))
        cosines.append(np.dot(a[hop], b[hop]) / np.linalg.norm(a[hop]) / np.linalg.norm(b[hop]))
        agree.append(np.mean(a[hop] == b[hop]))
        return a

    monkeypatch.setattr(fast, "perturb_hop", both)
    pcm = speechlike_pcm(3.3, seed=3)
    out = processor_output(fast, pcm, [1234, 5000])
    assert len(out) == len(pcm) and np.any(out != pcm)
    assert len(agree) == -(-len(pcm) // HOP_SAMPLES), agree
    assert max(gradient_errors) < 1e-5, gradient_errors
    assert min(cosines) > 0.9 and np.mean(agree) > 0.9, (cosines, agree)


def test_default_hop_runs_only_the_crop_graphs_and_other_hops_fall_back(monkeypatch):
    masker = Masker(model=bundled_model_dir(), backend="onnx")
    calls = {"hop_fixed": 0, "hop_crop": 0}

    def window_graph(*_args):
        raise AssertionError("the window graph ran")

    def counted(graph, name):
        run = graph.run

        def wrapper(*args):
            calls[name] += 1
            return run(*args)

        return wrapper

    member = masker.members[0]
    monkeypatch.setattr(member.grad, "run", window_graph)
    monkeypatch.setattr(member.hop, "run", window_graph)  # the plain hop graph neither
    for name in calls:
        monkeypatch.setattr(getattr(member, name), "run", counted(getattr(member, name), name))
    pcm = speechlike_pcm(1.0)
    out = processor_output(masker, pcm[: 2 * HOP_SAMPLES], [])  # whole default hops
    assert len(out) == 2 * HOP_SAMPLES and np.any(out != pcm[: 2 * HOP_SAMPLES])
    assert calls == {"hop_fixed": 2, "hop_crop": 2 * masker.stream_steps}  # fixed once a hop
    assert not masker.hop_graphs_fit(1600)  # a 100 ms hop: no hop graph for it
    with pytest.raises(AssertionError, match="window graph ran"):
        StreamProcessor(masker, 16000, 100.0).push(pcm[:1600])
