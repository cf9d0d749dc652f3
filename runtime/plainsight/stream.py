"""Live masking: raw S16_LE mono PCM in, masked PCM out, causal, fail-closed.

Each hop of new samples is perturbed using the model window that ends with it: the
already-masked past (what listeners got) plus the new raw hop; only the new hop is
changed. Under the `neutralize` privacy tier each hop first goes through the causal
Neutralizer (output delayed by its look-ahead, 140 ms), and the mask works on that.
Processing happens only on whole hops (or the remainder at EOF/SIGTERM), so the output
is a pure function of the sample sequence, whatever the chunking of stdin.
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
from math import ceil, gcd
from pathlib import Path

import numpy as np

from plainsight.gainfield import CELL_S, LOOKAHEAD
from plainsight.resample import resample
from plainsight.shaping import N_FFT

DEFAULT_HOP_MS = 250.0  # the latency; the bundled models ship a hop graph for it
FAIL_AFTER_ENV = "PLAINSIGHT_TEST_FAIL_AFTER"  # test hook: model run fails after N frames
SCALE = 32768.0


def to_pcm(samples: np.ndarray) -> np.ndarray:
    return np.clip(np.round(samples * SCALE), -32768, 32767).astype("<i2")


def add_to_pcm(pcm: np.ndarray, delta: np.ndarray) -> np.ndarray:
    """int16 `pcm` plus a full-scale perturbation `delta`, quantised so that it survives.

    Rounding to nearest would drop every |delta| < 0.5 LSB, so quiet speech (a small
    budget) came out unchanged. Every nonzero delta moves its sample by at least 1 LSB, in
    its own direction (so by at most max(1 LSB, bound + 0.5 LSB)); a sample at the rail
    that the clip would leave unchanged moves the other way instead.
    """
    pcm = pcm.astype(np.int32)
    size = np.round(np.abs(delta.astype(np.float64)) * SCALE)
    step = (np.sign(delta) * np.maximum(size, 1.0)).astype(np.int64)
    out = np.clip(pcm + step, -32768, 32767)
    stuck = (out == pcm) & (step != 0)
    out[stuck] = np.clip(pcm[stuck] - step[stuck], -32768, 32767)
    return out.astype("<i2")


class UnmaskedHopError(RuntimeError):
    """A hop with signal would have gone out equal to its input (no perturbation left)."""


class StreamProcessor:
    """Stateful causal masker over int16 samples at `rate`.

    History is kept at the model rate: the raw signal and the perturbation already sent.
    At other rates, hops are whole multiples of the rates' common grid, so every hop maps
    to a whole number of model-rate samples and only the new hop is resampled.
    """

    def __init__(self, masker, rate: int = 16000, hop_ms: float = DEFAULT_HOP_MS):
        self.masker = masker
        self.rate = int(rate)
        model_rate, window = masker.sample_rate, masker.window
        g = gcd(self.rate, model_rate)
        self.unit, self.unit16 = self.rate // g, model_rate // g  # same duration
        units = max(1, round(self.rate * hop_ms / 1000 / self.unit))
        self.hop = units * self.unit
        if units * self.unit16 > window:
            raise ValueError(f"hop {hop_ms} ms is longer than the model window")
        self.context = self.unit * ceil(256 / self.unit)  # resampler support, input samples
        self.tail = np.zeros(self.context, np.float32)  # last raw input samples
        self.raw16 = np.zeros(window, np.float32)
        self.delta16 = np.zeros(window, np.float32)  # perturbation already sent
        self.seen16 = 0
        self.total16 = 0  # model-rate samples so far: the gain stage's stream clock
        self.gain_cells: dict[int, np.ndarray] = {}  # gain grid cells already used (dB)
        # the gain stage's look-ahead: input held back so that a hop's last frames are whole
        ahead = self.unit * ceil(LOOKAHEAD / self.unit16) if masker.gain_db else 0
        self.ahead = np.zeros(ahead, "<i2")
        self.pending = np.zeros(0, "<i2")
        self.neutralizer = None
        if getattr(masker, "privacy", "mask") == "neutralize":
            from plainsight.neutralize import Neutralizer

            self.neutralizer = Neutralizer(
                self.rate, masker.neutralize_strength, reference=masker.neutralize_reference
            )
        self.frames = 0
        self.busy_s = 0.0
        fail_after = os.environ.get(FAIL_AFTER_ENV)
        self._fail_after = int(fail_after) if fail_after else None

    @property
    def look_ahead_samples(self) -> int:
        """Input held back at `rate`: the neutralize tier's look-ahead and the gain stage's
        (16 ms); the first such output samples are silence, the last such input samples are
        never sent."""
        delay = self.neutralizer.delay if self.neutralizer is not None else 0
        return delay + len(self.ahead)

    @property
    def latency_samples(self) -> int:
        """Added latency at `rate`: one hop plus the look-ahead."""
        return self.hop + self.look_ahead_samples

    @property
    def same_rate(self) -> bool:
        return self.rate == self.masker.sample_rate

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
        """Mask one hop. Raises if the model fails (history still advances, with no
        perturbation sent); the caller decides what to emit instead."""
        start = time.perf_counter()
        n = len(pcm)
        padded_len = -(-n // self.unit) * self.unit  # a short last hop is padded with zeros
        padded = np.pad(np.asarray(pcm, "<i2"), (0, padded_len - n))
        if self.neutralizer is not None:  # the mask works on the neutralised hop
            padded = to_pcm(self.neutralizer.process(padded / SCALE))
        if len(self.ahead):  # the gain stage's look-ahead delays the hop
            joined = np.concatenate([self.ahead, padded])
            padded, self.ahead = joined[: len(padded)], joined[len(padded) :]
        new = padded.astype(np.float32) / SCALE
        n16 = self._ingest(new)
        if self._fail_after is not None and self.frames > self._fail_after:
            raise RuntimeError(f"simulated model run failure ({FAIL_AFTER_ENV})")
        delta16 = self._attack(n16)
        if self.same_rate:
            delta = delta16[-n16:]
        else:
            segment = np.concatenate([self.delta16[-n16 - self.context_16 : -n16], delta16[-n16:]])
            delta = resample(segment, self.masker.sample_rate, self.rate)[-len(new) :]
            limit = float(np.abs(delta16[-n16:]).max())
            delta = np.clip(delta, -limit, limit)
        if not np.isfinite(delta).all():
            raise RuntimeError("the model gave a NaN/Inf perturbation")
        out = add_to_pcm(padded, delta)
        sent = out.astype(np.float32) / SCALE - new if self.same_rate else delta16[-n16:]
        self.delta16[-n16:] = sent
        self.busy_s += time.perf_counter() - start
        masked_input = padded[:n]  # the raw hop, or the neutralised one under that tier
        if np.any(masked_input) and np.array_equal(out[:n], masked_input):
            raise UnmaskedHopError(f"hop {self.frames} has signal but masking left it unchanged")
        return out[:n]

    @property
    def context_16(self) -> int:
        return self.context // self.unit * self.unit16

    def _ingest(self, new: np.ndarray) -> int:
        """Append a hop (a multiple of `unit` samples) to the model-rate history."""
        if self.same_rate:
            new16 = new
        else:
            new16 = self._after_tail_at_model_rate(new)
            self.tail = np.concatenate([self.tail, new])[-self.context :]
        n16 = len(new16)
        self.raw16 = np.concatenate([self.raw16[n16:], new16]).astype(np.float32)
        self.delta16 = np.concatenate([self.delta16[n16:], np.zeros(n16, np.float32)])
        self.seen16 = min(self.seen16 + n16, len(self.raw16))
        self.total16 += n16
        self.frames += 1
        return n16

    def _attack(self, n16: int) -> np.ndarray:
        """The hop's change [n16] at the model rate: the mask's, or with the gain stage on,
        the gain field's and the mask's, chosen in one loop."""
        m = self.masker
        context = self.raw16 + self.delta16  # what listeners got, plus the new raw hop
        past = m.hop_past(context, n16)
        valid = np.zeros(m.window, np.float32)
        valid[m.window - self.seen16 :] = 1.0
        bound = m.budget(self.raw16[None], valid[None])[0]
        bound[: m.window - n16] = 0.0  # the past is already out
        if m.gain_db:
            return self._rebalance(context, bound, n16, past) - self.raw16[-n16:]
        return m.perturb_hop(context, bound, self.raw16, n16, past)[-n16:]

    def _rebalance(self, context: np.ndarray, bound: np.ndarray, n16: int, past) -> np.ndarray:
        """The hop [n16] re-balanced and masked (Masker.rebalance_and_perturb_hop) on the
        stream's gain grid; cells the next hop's field cannot reach (it starts at most N_FFT
        samples before it) are forgotten."""
        m = self.masker
        ahead = self.ahead.astype(np.float32) / SCALE
        if not self.same_rate:
            ahead = self._after_tail_at_model_rate(ahead)
        origin = self.total16 - m.window
        out = m.rebalance_and_perturb_hop(
            context, bound, self.raw16, n16, origin, self.gain_cells, ahead, past
        )
        oldest = (self.total16 - n16 - N_FFT) // round(m.sample_rate * CELL_S) - 1
        for cell in [k for k in self.gain_cells if k < oldest]:
            del self.gain_cells[cell]
        return out

    def _after_tail_at_model_rate(self, samples: np.ndarray) -> np.ndarray:
        """`samples` (what follows `tail` at `rate`) at the model rate, resampled with the
        tail as the resampler's left context."""
        both = np.concatenate([self.tail, samples])
        return resample(both, self.rate, self.masker.sample_rate)[self.context_16 :]


class StatusFile:
    """Small JSON health record, rewritten atomically every ~2 s and at start/stop/failure.

    Keys: started_at, updated_at (ISO UTC), pid, uptime_s, state (starting | running |
    failing | failed | stopped), samples_in, samples_out, frames (hops processed), rtf
    (processing s per audio s sent), failed_hops (hops not masked: zeros or nothing went
    out instead), unchanged_hops (those of them that had signal but would have gone out
    equal to the input), last_error (null or one line), model, backend.
    """

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
        self.failing = False

    def update(self, force: bool = False, **fields) -> None:
        self.fields.update(fields)
        now = time.time()
        if self.path is None or (not force and now - self.last_write < self.interval):
            return
        self.fields["uptime_s"] = round(now - self.started, 3)
        self.fields["updated_at"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
        self.last_write = now  # a failing path is retried at the same pace, not every read
        tmp = None
        try:
            fd, tmp = tempfile.mkstemp(prefix=".status.", dir=self.path.parent or ".")
            with os.fdopen(fd, "w") as fh:
                json.dump(self.fields, fh)
            os.chmod(tmp, 0o644)
            os.replace(tmp, self.path)
            self.failing = False
        except OSError as exc:
            if tmp is not None:
                Path(tmp).unlink(missing_ok=True)
            if not self.failing:  # once per run of failures; the audio goes on regardless
                print(f"plainsight stream: cannot write status file: {exc}", file=sys.stderr)
            self.failing = True


class FailureLog:
    """Masking failures on stderr without flooding it (one per hop in silence mode): the
    first one, then a count at most every `interval_s`, and a summary at exit."""

    def __init__(self, interval_s: float = 10.0, clock=time.monotonic):
        self.interval = interval_s
        self.clock = clock
        self.total = 0
        self.unreported = 0
        self.last_print = 0.0
        self.last_message = ""

    def record(self, message: str) -> None:
        self.total += 1
        self.last_message = message
        now = self.clock()
        if self.total == 1:
            print(f"plainsight stream: masking failed: {message}", file=sys.stderr)
            self.last_print = now
            return
        self.unreported += 1
        if now - self.last_print >= self.interval:
            print(
                f"plainsight stream: masking failed {self.unreported} more times in "
                f"{now - self.last_print:.0f} s (last: {message})",
                file=sys.stderr,
            )
            self.unreported, self.last_print = 0, now

    def summary(self) -> None:
        if self.total > 1:
            print(
                f"plainsight stream: {self.total} hops failed in all, none forwarded raw "
                f"(last: {self.last_message})",
                file=sys.stderr,
            )


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def serve(
    make_masker,
    rate: int = 16000,
    hop_ms: float = DEFAULT_HOP_MS,
    on_error: str = "exit",
    status_path: str | None = None,
    model_name: str = "default",
    backend: str = "auto",
    fd_in: int = 0,
    fd_out: int = 1,
    read_size: int = 65536,
    input_timeout_s: float = 0.0,
) -> int:
    """Run the PCM filter until EOF or SIGTERM/SIGINT (or, with input_timeout_s > 0, that
    long without input: exit code 4). Returns the exit code."""
    status = StatusFile(status_path, model_name, backend)
    stop = {"signal": None}

    def on_signal(signum, _frame):
        stop["signal"] = signum

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    counters = {"samples_in": 0, "samples_out": 0, "failed_hops": 0, "unchanged_hops": 0}
    failures = FailureLog()

    last_input = time.monotonic()  # when audio last came in (doctor: a hung microphone)

    def report(force=False, **fields):
        audio_s = counters["samples_out"] / rate
        busy = processor.busy_s if processor else 0.0
        status.update(
            force,
            **counters,
            frames=processor.frames if processor else 0,
            rtf=round(busy / audio_s, 4) if audio_s else None,
            input_idle_s=round(time.monotonic() - last_input, 1),
            **fields,
        )

    def fail(exc: BaseException, n: int) -> bool:
        """Handle a model failure for n samples; True means keep going (silence mode)."""
        message = f"{type(exc).__name__}: {' '.join(str(exc).split())}"
        if n:
            counters["failed_hops"] += 1
            counters["unchanged_hops"] += isinstance(exc, UnmaskedHopError)
        state = "failing" if on_error == "silence" else "failed"
        report(failures.total == 0, last_error=message, state=state)  # force only the first
        failures.record(message)
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
            last_input = time.monotonic()  # loading the model is not a hung microphone
            hop_ms_used = 1000 * processor.hop / processor.rate
            if abs(hop_ms_used - hop_ms) > 0.1 * hop_ms:  # a whole number of samples at both rates
                print(
                    f"plainsight stream: at {rate} Hz the hop is {hop_ms_used:.0f} ms, not "
                    f"{hop_ms:g} (latency {1000 * processor.latency_samples / rate:.0f} ms)",
                    file=sys.stderr,
                )
            status.fields.update(
                model=",".join(masker.settings()["models"]), backend=masker.backend
            )
            report(True, state="running")
        except Exception as exc:
            if not fail(exc, 0):
                return 2
        odd = b""
        silence_only = processor is None
        timed_out = ""  # why the input stopped, if it hung
        while True:
            if stop["signal"] is not None:
                break
            ready, _, _ = select.select([fd_in], [], [], 0.5)
            if not ready:
                idle = time.monotonic() - last_input
                if input_timeout_s and idle > input_timeout_s:
                    # a hung source (arecord delivers at the sample rate): stop, so that the
                    # pipeline restarts it; what came in before goes out masked, in full
                    timed_out = f"no audio in for {idle:.0f} s (a hung source?); stopping"
                    print(f"plainsight stream: {timed_out}", file=sys.stderr)
                    break
                report()
                continue
            data = os.read(fd_in, read_size)
            if not data:
                break
            data = odd + data
            odd = data[len(data) - len(data) % 2 :]
            samples = np.frombuffer(data[: len(data) - len(odd)], "<i2")
            counters["samples_in"] += len(samples)
            last_input = time.monotonic()
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
        if timed_out:
            report(True, state="failed", last_error=timed_out)
            return 4
        report(True, state="stopped")
        return 0
    except BrokenPipeError:
        report(True, state="stopped", last_error="stdout closed")
        return 1
    finally:
        failures.summary()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _emit_hop(processor: StreamProcessor, n: int, fd_out: int, counters: dict, fail) -> bool:
    hop = processor.pending[:n]
    processor.pending = processor.pending[n:]
    try:
        out = processor.process(hop)
    except Exception as exc:
        return fail(exc, n)
    _write_all(fd_out, out.tobytes())
    counters["samples_out"] += n
    return True
