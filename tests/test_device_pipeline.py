"""Fail-closed audio path: device/plainsight-pipeline with the real `plainsight stream`.

A fake source (a writer thread feeding a known PCM clip slowly into the pipeline's stdin,
PLAINSIGHT_SOURCE=stdin, which runs `cat` as the source process just like `arecord`)
goes through the real filter into the FIFO or TCP sink. The filter is killed mid-stream:
the sink must then have received only masked samples (a prefix of the deterministic
masked output of the same clip), never raw audio, and the pipeline must exit non-zero.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
PIPELINE = REPO / "device" / "plainsight-pipeline"
PLAINSIGHT = Path(sys.executable).parent / "plainsight"
RATE = 16000
HOP = 4000  # the stream's default 250 ms hop at 16 kHz


@pytest.fixture(scope="module")
def clip() -> np.ndarray:
    from plainsight.bench import synthetic_speechlike
    from plainsight.stream import to_pcm

    return to_pcm(synthetic_speechlike(6.0, RATE, seed=3))


@pytest.fixture(scope="module")
def masked(clip) -> np.ndarray:
    """The reference: the same clip through `plainsight stream` in one go."""
    if not PLAINSIGHT.exists():
        pytest.fail(f"{PLAINSIGHT} missing: install the project (pip install -e .)")
    out = subprocess.run(
        [str(PLAINSIGHT), "stream", "--rate", str(RATE)],
        input=clip.tobytes(),
        capture_output=True,
        timeout=120,
        check=True,
    ).stdout
    result = np.frombuffer(out, "<i2")
    assert len(result) == len(clip)
    changed = np.count_nonzero(result != clip) / len(clip)
    assert changed > 0.5, f"only {changed:.0%} of samples masked: the test could not tell"
    return result


def pipeline_env(tmp_path: Path, **extra) -> dict:
    env = dict(os.environ)
    env.pop("INVOCATION_ID", None)  # as run by hand, not as the systemd unit (its /tmp is private)
    env.update(
        PLAINSIGHT_SOURCE="stdin",
        PLAINSIGHT_BIN=str(PLAINSIGHT),
        PLAINSIGHT_PYTHON=sys.executable,
        PLAINSIGHT_STATUS_FILE=str(tmp_path / "status.json"),
        PLAINSIGHT_STREAM_ARGS="",
    )
    env.update(extra)
    return env


def children(pid: int) -> list[tuple[int, str]]:
    """(pid, cmdline) of the direct children of pid, from /proc."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, ValueError, IndexError):
            continue
        if ppid == pid:
            found.append((int(entry.name), cmd))
    return found


def filter_pid(pipeline: subprocess.Popen, timeout: float = 20.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for pid, cmd in children(pipeline.pid):
            if " stream " in f" {cmd} " and "plainsight" in cmd:
                return pid
        time.sleep(0.05)
    raise AssertionError("the pipeline started no `plainsight stream` process")


def slow_writer(pipe, pcm: np.ndarray, started: threading.Event, delay: float = 0.1):
    """The fake microphone: one hop every `delay` s until the pipeline stops reading."""
    started.wait(30)
    try:
        for start in range(0, len(pcm), HOP):
            pipe.write(pcm[start : start + HOP].tobytes())
            pipe.flush()
            time.sleep(delay)
        pipe.close()
    except (BrokenPipeError, ValueError, OSError):
        pass


class Collector(threading.Thread):
    """Reads everything the assistant side would get, until EOF."""

    def __init__(self, opener):
        super().__init__(daemon=True)
        self.opener = opener
        self.data = bytearray()
        self.connected = threading.Event()

    def run(self):
        stream = self.opener()
        self.connected.set()
        read = stream.read if hasattr(stream, "read") else stream.recv
        with stream:
            while chunk := read(65536):
                self.data += chunk

    def samples(self) -> np.ndarray:
        usable = len(self.data) // 2 * 2
        return np.frombuffer(bytes(self.data[:usable]), "<i2")


def fifo_sink(tmp_path: Path):
    fifo = tmp_path / "mic.pcm"
    env = {"PLAINSIGHT_SINK": "fifo", "PLAINSIGHT_SINK_FIFO": str(fifo)}
    return env, Collector(lambda: wait_for(fifo.exists) and open(fifo, "rb", buffering=0))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tcp_sink(tmp_path: Path):
    port = free_port()
    env = {"PLAINSIGHT_SINK": "tcp", "PLAINSIGHT_SINK_PORT": str(port)}

    def connect():
        deadline = time.monotonic() + 30
        while True:
            try:
                return socket.create_connection(("127.0.0.1", port), timeout=30)
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    return env, Collector(connect)


def wait_for(predicate, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.02)
    return True


def start_pipeline(tmp_path: Path, sink_env: dict, **extra) -> subprocess.Popen:
    return subprocess.Popen(
        [str(PIPELINE)],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=pipeline_env(tmp_path, **sink_env, **extra),
    )


def assert_only_masked(received: np.ndarray, masked: np.ndarray, clip: np.ndarray) -> None:
    n = len(received)
    assert n < len(masked), "the sink got the whole clip: the filter was not stopped mid-stream"
    mismatch = np.flatnonzero(received != masked[:n])
    assert not len(mismatch), (
        f"{len(mismatch)} received samples differ from the masked stream "
        f"(first at {mismatch[0]}; raw there: {received[mismatch[0]] == clip[mismatch[0]]})"
    )
    raw_like = np.count_nonzero(received == clip[:n]) / max(n, 1)
    assert raw_like < 0.5, f"{raw_like:.0%} of received samples equal the raw input"


@pytest.mark.parametrize("sink", ["fifo", "tcp"])
def test_killing_the_filter_mid_stream_sends_no_raw_audio(tmp_path, clip, masked, sink):
    sink_env, collector = (fifo_sink if sink == "fifo" else tcp_sink)(tmp_path)
    pipeline = start_pipeline(tmp_path, sink_env)
    collector.start()
    started = threading.Event()
    writer = threading.Thread(target=slow_writer, args=(pipeline.stdin, clip, started), daemon=True)
    writer.start()
    try:
        collector.connected.wait(30)
        started.set()  # the assistant is listening: start the microphone
        victim = filter_pid(pipeline)
        wait_for(lambda: len(collector.data) >= 3 * HOP * 2, timeout=60)
        os.kill(victim, signal.SIGKILL)
        rc = pipeline.wait(timeout=30)
    finally:
        if pipeline.poll() is None:
            pipeline.kill()
    collector.join(10)
    log = pipeline.stderr.read().decode()
    assert not collector.is_alive(), "the sink never saw EOF after the filter died"
    assert rc != 0, f"pipeline exited 0 after its filter was killed:\n{log}"
    assert "filter=137" in log, log  # SIGKILL seen by pipefail
    received = collector.samples()
    assert len(received) >= 3 * HOP
    assert_only_masked(received, masked, clip)


def test_model_failure_mid_stream_stops_the_audio(tmp_path, clip, masked):
    """The filter's own failure path (model run fails after 2 hops): only masked hops out."""
    sink_env, collector = fifo_sink(tmp_path)
    pipeline = start_pipeline(tmp_path, sink_env, PLAINSIGHT_TEST_FAIL_AFTER="2")
    collector.start()
    started = threading.Event()
    started.set()
    writer = threading.Thread(target=slow_writer, args=(pipeline.stdin, clip, started, 0.02))
    writer.start()
    rc = pipeline.wait(timeout=60)
    collector.join(10)
    log = pipeline.stderr.read().decode()
    assert rc != 0, log
    received = collector.samples()
    assert len(received) == 2 * HOP, (len(received), log)
    assert_only_masked(received, masked, clip)


def test_filter_that_cannot_start_sends_nothing(tmp_path, clip):
    sink_env, collector = fifo_sink(tmp_path)
    pipeline = start_pipeline(
        tmp_path, sink_env, PLAINSIGHT_STREAM_ARGS=f"--model {tmp_path / 'no-such-model'}"
    )
    collector.start()
    try:
        pipeline.stdin.write(clip[: 4 * HOP].tobytes())
        pipeline.stdin.close()
    except BrokenPipeError:
        pass
    rc = pipeline.wait(timeout=60)
    collector.join(10)
    log = pipeline.stderr.read().decode()
    assert rc != 0, log
    assert len(collector.data) == 0, f"{len(collector.data)} bytes reached the sink"
    assert "no-such-model" in log


def test_clean_eof_passes_the_whole_clip_masked(tmp_path, clip, masked):
    """Sanity for the test above: without a failure the sink gets exactly the masked clip."""
    sink_env, collector = tcp_sink(tmp_path)
    pipeline = start_pipeline(tmp_path, sink_env)
    collector.start()
    collector.connected.wait(30)
    pipeline.stdin.write(clip.tobytes())
    pipeline.stdin.close()
    rc = pipeline.wait(timeout=60)
    collector.join(10)
    assert rc == 0, pipeline.stderr.read().decode()
    assert np.array_equal(collector.samples(), masked)
    status = (tmp_path / "status.json").read_text()
    assert '"state": "stopped"' in status and f'"samples_out": {len(clip)}' in status


def test_bad_settings_fail_with_one_clear_line(tmp_path):
    env = pipeline_env(tmp_path, PLAINSIGHT_SINK="carrier-pigeon")
    result = subprocess.run([str(PIPELINE)], env=env, capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert "PLAINSIGHT_SINK must be aloop, fifo, tcp or wyoming" in result.stderr
    env = pipeline_env(tmp_path, PLAINSIGHT_SOURCE="arecord", PLAINSIGHT_CAPTURE_DEVICE="")
    result = subprocess.run([str(PIPELINE)], env=env, capture_output=True, text=True, timeout=30)
    assert result.returncode == 2 and "PLAINSIGHT_CAPTURE_DEVICE is not set" in result.stderr


@pytest.mark.parametrize(
    "settings, said",
    [
        ({"PLAINSIGHT_STREAM_ARGS": "--rate 8000"}, "PLAINSIGHT_STREAM_ARGS"),
        ({"PLAINSIGHT_STREAM_ARGS": "--mask-strength high --ra=8000"}, "PLAINSIGHT_STREAM_ARGS"),
        ({"PLAINSIGHT_STREAM_ARGS": "--on-error silence"}, "PLAINSIGHT_STREAM_ARGS"),
        ({"PLAINSIGHT_STREAM_ARGS": "--status-file /tmp/x"}, "PLAINSIGHT_STREAM_ARGS"),
        ({"PLAINSIGHT_STREAM_ARGS": "--help"}, "PLAINSIGHT_STREAM_ARGS"),
        ({"PLAINSIGHT_STREAM_ARGS": "-h"}, "PLAINSIGHT_STREAM_ARGS"),
        ({"PLAINSIGHT_RATE": "016000"}, "PLAINSIGHT_RATE"),
        ({"PLAINSIGHT_RATE": "0"}, "PLAINSIGHT_RATE"),
        ({"PLAINSIGHT_ON_ERROR": "shrug"}, "PLAINSIGHT_ON_ERROR"),
        ({"PLAINSIGHT_STREAM_ARGS": "--input-timeout-s 0"}, "PLAINSIGHT_STREAM_ARGS"),
        ({"PLAINSIGHT_INPUT_TIMEOUT_S": "soon"}, "PLAINSIGHT_INPUT_TIMEOUT_S"),
        (
            {"PLAINSIGHT_SINK": "wyoming", "PLAINSIGHT_STREAM_ARGS": "--rate 8000"},
            "PLAINSIGHT_STREAM_ARGS",
        ),
    ],
)
def test_settings_the_pipeline_owns_cannot_be_overridden(tmp_path, settings, said):
    """The pipeline sets the filter's rate (arecord's and the sink's too), its failure mode
    and its status file. An extra option that set them again (argparse keeps the last one,
    and takes any unique prefix) would mask 16 kHz audio as 8 kHz: every sample changed, the
    emotion left readable. Refused with one line, before any audio moves; so is a rate that
    arecord reads differently (016000 is octal to it) or a failure mode that is not one."""
    env = pipeline_env(tmp_path, **({"PLAINSIGHT_SINK": "tcp"} | settings))
    result = subprocess.run([str(PIPELINE)], env=env, capture_output=True, text=True, timeout=30)
    assert result.returncode == 2, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and said in result.stderr, result.stderr


@pytest.mark.parametrize("folder", ["/tmp/assistant", "/var/tmp", "/home/pi"])
def test_a_fifo_the_service_alone_can_see_is_refused(tmp_path, folder):
    """The unit runs with PrivateTmp and ProtectHome: a FIFO under /tmp is created in the
    service's own /tmp, the assistant opens another one, and the pipeline waits for a reader
    for ever, every doctor check but the status PASS. Under systemd (INVOCATION_ID set)
    such a path is refused with one line; run by hand (the tests' FIFOs) it is allowed."""
    fifo = f"{folder}/plainsight-test-{tmp_path.name}.pcm"
    env = pipeline_env(
        tmp_path, PLAINSIGHT_SINK="fifo", PLAINSIGHT_SINK_FIFO=fifo, INVOCATION_ID="0123abcd"
    )
    result = subprocess.run([str(PIPELINE)], env=env, capture_output=True, text=True, timeout=30)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "PLAINSIGHT_SINK_FIFO" in lines[0] and "/run/plainsight" in lines[0]
    assert not Path(fifo).exists()


def test_extra_options_still_reach_the_filter(tmp_path, clip):
    env = pipeline_env(
        tmp_path, PLAINSIGHT_SINK="tcp", PLAINSIGHT_STREAM_ARGS="--mask-strength high"
    )
    env["PLAINSIGHT_SINK_PORT"] = "1"  # never reached: the stdin source ends first
    result = subprocess.run([str(PIPELINE)], env=env, input=b"", capture_output=True, timeout=60)
    assert b"--mask-strength high" in result.stderr
    assert b"--input-timeout-s 10" in result.stderr  # a hung microphone restarts the pipeline
