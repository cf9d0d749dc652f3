"""Live masking: raw S16_LE mono PCM in, masked PCM out, causal, fail-closed.

Each hop of new samples is perturbed using the model window that ends with it: the
already-masked past (what listeners got) plus the new raw hop; only the new hop is
changed. Processing happens only on whole hops (or the remainder at EOF/SIGTERM), so the
output is a pure function of the sample sequence, whatever the chunking of stdin.
"""

from __future__ import annotations

import json
import os
import select
import signal
import sys
import tempfile
import time
from datetime import datetime, timezone
from math import ceil
from pathlib import Path

import numpy as np

from plainsight.masker import to_input_rate
from plainsight.resample import resample

FAIL_AFTER_ENV = "PLAINSIGHT_TEST_FAIL_AFTER"  # test hook: model run fails after N frames
SCALE = 32768.0


def to_pcm(samples: np.ndarray) -> np.ndarray:
    return np.clip(np.round(samples * SCALE), -32768, 32767).astype("<i2")


class StreamProcessor:
    """Stateful causal masker over int16 samples at `rate`."""

    def __init__(self, masker, rate: int = 16000, hop_ms: float = 250.0):
        self.masker = masker
        self.rate = int(rate)
        self.hop = max(1, round(self.rate * hop_ms / 1000))
        model_rate, model_window = masker.sample_rate, masker.window
        self.window = ceil(model_window * self.rate / model_rate)
        if self.hop > self.window:
            raise ValueError(f"hop {hop_ms} ms is longer than the model window")
        self.raw = np.zeros(self.window, np.float32)
        self.masked = np.zeros(self.window, np.float32)
        self.seen = 0
        self.pending = np.zeros(0, "<i2")
        self.frames = 0
        self.busy_s = 0.0
        fail_after = os.environ.get(FAIL_AFTER_ENV)
        self._fail_after = int(fail_after) if fail_after else None

    def push(self, samples: np.ndarray) -> list[np.ndarray]:
        """Queue int16 samples; returns the masked outputs of every completed hop."""
        self.pending = np.concatenate([self.pending, np.asarray(samples, "<i2")])
        outputs = []
        while len(self.pending) >= self.hop:
            hop, self.pending = self.pending[: self.hop], self.pending[self.hop :]
            outputs.append(self.process(hop))
        return outputs

    def flush(self) -> np.ndarray:
        """Mask the remainder (< hop samples) at EOF; empty if nothing is pending."""
        rest, self.pending = self.pending, np.zeros(0, "<i2")
        return self.process(rest) if len(rest) else rest

    def process(self, pcm: np.ndarray) -> np.ndarray:
        """Mask one hop (raises if the model fails; the caller decides what to emit)."""
        start = time.perf_counter()
        if self._fail_after is not None and self.frames >= self._fail_after:
            raise RuntimeError(f"simulated model run failure ({FAIL_AFTER_ENV})")
        n = len(pcm)
        new = pcm.astype(np.float32) / SCALE
        raw = np.concatenate([self.raw[n:], new])
        context = np.concatenate([self.masked[n:], new])
        seen = min(self.seen + n, self.window)
        out = np.clip(new + self._delta(raw, context, seen, n), -1.0, 1.0)
        result = to_pcm(out)
        self.commit(new, result.astype(np.float32) / SCALE)
        self.busy_s += time.perf_counter() - start
        return result

    def commit(self, new: np.ndarray, emitted: np.ndarray) -> None:
        n = len(new)
        self.raw = np.concatenate([self.raw[n:], new])
        self.masked = np.concatenate([self.masked[n:], emitted])
        self.seen = min(self.seen + n, self.window)
        self.frames += 1

    def _to_model(self, x: np.ndarray) -> np.ndarray:
        m = self.masker
        if self.rate != m.sample_rate:
            x = resample(x, self.rate, m.sample_rate)
        x = x[-m.window :]
        return np.pad(x, (m.window - len(x), 0)).astype(np.float32)

    def _delta(self, raw, context, seen: int, n: int) -> np.ndarray:
        m = self.masker
        raw16, context16 = self._to_model(raw), self._to_model(context)
        scale = m.sample_rate / self.rate
        valid = np.zeros(m.window, np.float32)
        valid[m.window - min(m.window, round(seen * scale)) :] = 1.0
        bound = m.budget(raw16[None], valid[None])[0]
        bound[: m.window - max(1, round(n * scale))] = 0.0  # the past is already out
        delta16 = m.perturb(context16[None], bound[None], clean=raw16[None])[0]
        if self.rate == m.sample_rate:
            return delta16[-n:]
        delta = to_input_rate(delta16, bound, m.sample_rate, self.rate, self.window)
        return delta[-n:].astype(np.float32)


class StatusFile:
    """Small JSON health record, rewritten atomically (read by the systemd health check)."""

    def __init__(self, path: str | None, model: str, backend: str, interval_s: float = 2.0):
        self.path = Path(path) if path else None
        self.started = time.time()
        self.fields = {
            "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "pid": os.getpid(),
            "model": model,
            "backend": backend,
            "state": "starting",
            "last_error": None,
        }
        self.interval = interval_s
        self.last_write = 0.0

    def update(self, force: bool = False, **fields) -> None:
        self.fields.update(fields)
        now = time.time()
        if self.path is None or (not force and now - self.last_write < self.interval):
            return
        self.fields["uptime_s"] = round(now - self.started, 3)
        self.fields["updated_at"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
        try:
            fd, tmp = tempfile.mkstemp(prefix=".status.", dir=self.path.parent or ".")
            with os.fdopen(fd, "w") as fh:
                json.dump(self.fields, fh)
            os.chmod(tmp, 0o644)
            os.replace(tmp, self.path)
            self.last_write = now
        except OSError as exc:
            print(f"plainsight stream: cannot write status file: {exc}", file=sys.stderr)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def serve(
    make_masker,
    rate: int = 16000,
    hop_ms: float = 250.0,
    on_error: str = "exit",
    status_path: str | None = None,
    model_name: str = "default",
    backend: str = "auto",
    fd_in: int = 0,
    fd_out: int = 1,
    read_size: int = 65536,
) -> int:
    """Run the PCM filter until EOF or SIGTERM/SIGINT. Returns the exit code."""
    status = StatusFile(status_path, model_name, backend)
    stop = {"signal": None}

    def on_signal(signum, _frame):
        stop["signal"] = signum

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    counters = {"samples_in": 0, "samples_out": 0}

    def report(force=False, **fields):
        audio_s = counters["samples_out"] / rate
        busy = processor.busy_s if processor else 0.0
        status.update(
            force,
            **counters,
            frames=processor.frames if processor else 0,
            rtf=round(busy / audio_s, 4) if audio_s else None,
            **fields,
        )

    def fail(exc: BaseException, n: int) -> bool:
        """Handle a model failure for n samples; True means keep going (silence mode)."""
        message = f"{type(exc).__name__}: {' '.join(str(exc).split())}"
        report(True, last_error=message, state="failing" if on_error == "silence" else "failed")
        print(f"plainsight stream: masking failed: {message}", file=sys.stderr)
        if on_error != "silence":
            return False
        if n:
            _write_all(fd_out, bytes(2 * n))
            counters["samples_out"] += n
        return True

    processor = None
    try:
        try:
            masker = make_masker()
            processor = StreamProcessor(masker, rate, hop_ms)
            status.fields.update(
                model=",".join(masker.settings()["models"]), backend=masker.backend
            )
            report(True, state="running")
        except Exception as exc:
            if not fail(exc, 0):
                return 2
        odd = b""
        silence_only = processor is None
        while True:
            if stop["signal"] is not None:
                break
            ready, _, _ = select.select([fd_in], [], [], 0.5)
            if not ready:
                report()
                continue
            data = os.read(fd_in, read_size)
            if not data:
                break
            data = odd + data
            odd = data[len(data) - len(data) % 2 :]
            samples = np.frombuffer(data[: len(data) - len(odd)], "<i2")
            counters["samples_in"] += len(samples)
            if silence_only:
                fail_len = len(samples)
                _write_all(fd_out, bytes(2 * fail_len))
                counters["samples_out"] += fail_len
                report()
                continue
            processor.pending = np.concatenate([processor.pending, samples])
            while len(processor.pending) >= processor.hop:
                if not _emit_hop(processor, processor.hop, fd_out, counters, fail):
                    return 3
            report()
        if odd:
            print("plainsight stream: dropped a trailing odd byte (half a sample)", file=sys.stderr)
        if processor is not None and len(processor.pending):
            if not _emit_hop(processor, len(processor.pending), fd_out, counters, fail):
                return 3
        report(True, state="stopped")
        return 0
    except BrokenPipeError:
        report(True, state="stopped", last_error="stdout closed")
        return 1
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _emit_hop(processor: StreamProcessor, n: int, fd_out: int, counters: dict, fail) -> bool:
    hop = processor.pending[:n]
    processor.pending = processor.pending[n:]
    try:
        out = processor.process(hop)
    except Exception as exc:
        if not fail(exc, n):
            return False
        processor.commit(hop.astype(np.float32) / SCALE, np.zeros(n, np.float32))
        return True
    _write_all(fd_out, out.tobytes())
    counters["samples_out"] += n
    return True
