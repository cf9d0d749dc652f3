"""Masking in bounded memory: read, resample, mask and hand out audio block by block.

`Masker.mask` (arrays) and `plainsight mask` (files) both run this one engine, so a file
masked in blocks equals the same audio masked in memory. Under the `neutralize` privacy tier
the source is first wrapped in NeutralizedSource, so the mask (and its budget) works on the
neutralised audio. What is held at once:
- the 16 kHz mix of one optimisation segment (SEGMENT_WINDOWS model windows, 32 s), its
  budget and perturbation (a few MB whatever the file's length);
- the perturbation of one block of BLOCK_SECONDS at the input rate (one channel), and at
  most CHUNK_FRAMES frames of all channels.

Segments are cut at multiples of 32 s, which are whole numbers of samples at every rate, so
each block's resampling (with enough context read on both sides) gives exactly the numbers
that resampling the whole signal would give.

Channels: each segment is mixed with every channel's sign aligned to the loudest channel
(mix = sum of sign_c * x_c over the channels that are not silent, / their count). A channel
that is another's inverse adds to the mix instead of cancelling it, and gets the perturbation
with its own sign. For ordinary audio (mono, in-phase stereo) this is the plain mean.
"""

from __future__ import annotations

from bisect import bisect_right
from collections import deque
from dataclasses import dataclass, field
from math import gcd

import numpy as np

from plainsight.resample import kernel_half_width, resample

BLOCK_SECONDS = 2  # perturbation block at the input rate; divides the 32 s segments
CHUNK_FRAMES = 1 << 15  # most frames of all channels held at once (96 kHz x 6 ch: 1.5 MB f64)
NEUTRAL_KEEP_S = 40  # neutralised audio kept for BlockMasker's reads (one segment + context)


class Source:
    """Random access to audio frames: read(start, stop) -> float32 [stop - start, channels],
    zeros outside [0, frames)."""

    frames: int
    sample_rate: int
    channels: int

    def _read(self, start: int, stop: int) -> np.ndarray:  # 0 <= start <= stop <= frames
        raise NotImplementedError

    def read(self, start: int, stop: int) -> np.ndarray:
        out = np.zeros((stop - start, self.channels), getattr(self, "dtype", np.float32))
        a, b = max(start, 0), min(stop, self.frames)
        if a < b:
            out[a - start : b - start] = self._read(a, b)
        return out


class NeutralizedSource(Source):
    """`source` after plainsight.neutralize (the `neutralize` privacy tier), read in order.

    Two passes first: the channels' signs (as the mask mixes them) and the clip's medians of
    F0, level and tilt (the reference the cues are pulled toward). Then the stream form runs
    ahead of the reads; the last NEUTRAL_KEEP_S seconds are kept, which covers every read
    BlockMasker makes (one 32 s segment plus resampling context). A read further back
    restarts from the beginning (slow, never wrong)."""

    def __init__(self, source: Source, strength: float, reference=None):
        from plainsight.neutralize import aligned_weights, reference_from

        self.source = source
        self.frames, self.channels = source.frames, source.channels
        self.sample_rate = source.sample_rate
        wide = getattr(source, "dtype", np.float32) != np.float32
        self.dtype = np.float64 if wide else np.float32
        self.strength = strength
        gram = np.zeros((self.channels, self.channels))
        if self.channels > 1:
            for a in range(0, self.frames, CHUNK_FRAMES):
                x = source.read(a, min(a + CHUNK_FRAMES, self.frames)).astype(np.float64)
                gram += x.T @ x
        else:
            gram[0, 0] = 1.0
        self.weights = aligned_weights(gram)
        self.restarts = 0  # reads further back than the cache (each one re-makes the prefix)
        self.reference = reference or reference_from(*self._features(), self.sample_rate)
        self._restart()

    def _features(self):
        """F0 / level / tilt of every frame of the mix, read a chunk of frames at a time."""
        from plainsight.neutralize import Geometry, analyse

        geo = Geometry(self.sample_rate)
        count = -(-self.frames // geo.hop)
        out = [[], [], []]
        step = 1024  # frames per read
        for k0 in range(0, count, step):
            k1 = min(k0 + step, count)
            a = k0 * geo.hop - geo.half
            mix = self.source.read(a, k1 * geo.hop + geo.half).astype(np.float64) @ self.weights
            starts = (np.arange(k0, k1) * geo.hop - geo.half - a)[:, None]
            for b in range(0, k1 - k0, 32):
                index = starts[b : b + 32] + np.arange(geo.frame)[None, :]
                for store, values in zip(out, analyse(mix[index], geo), strict=True):
                    store.append(values.astype(np.float32))
        return tuple(np.concatenate(v).astype(np.float64) for v in out)

    def _restart(self) -> None:
        from plainsight.neutralize import Neutralizer

        self.engine = Neutralizer(
            self.sample_rate, self.strength, self.channels, self.reference, self.weights
        )
        self.fed = 0  # input frames given to the engine (past the end: zeros, the flush)
        self.pieces: deque[tuple[int, np.ndarray]] = deque()  # (start frame, neutralised)
        self.cache_start = self.cache_end = 0

    def _read(self, start: int, stop: int) -> np.ndarray:
        if start < self.cache_start:
            self.restarts += 1
            self._restart()
        delay = self.engine.delay
        step = max(CHUNK_FRAMES // max(1, self.channels), 4096)
        while self.cache_end < stop:
            y = self.engine.process(self.source.read(self.fed, self.fed + step).astype(np.float64))
            first = self.fed - delay  # output time of y[0]
            self.fed += step
            if first + len(y) > 0:
                y = y[max(0, -first) :]
                self.pieces.append((self.cache_end, y.astype(self.dtype)))
                self.cache_end += len(y)
        # pieces (not one array): dropping the oldest never copies the rest (peak RSS)
        keep_from = min(start, self.cache_end - int(NEUTRAL_KEEP_S * self.sample_rate))
        while self.pieces and self.pieces[0][0] + len(self.pieces[0][1]) <= keep_from:
            self.pieces.popleft()
        self.cache_start = self.pieces[0][0] if self.pieces else self.cache_end
        parts = [
            piece[max(0, start - a) : stop - a]
            for a, piece in self.pieces
            if a < stop and a + len(piece) > start
        ]
        return np.concatenate(parts)


class ArraySource(Source):
    def __init__(self, audio: np.ndarray, sample_rate: int):
        self.audio = audio if audio.ndim == 2 else audio[:, None]
        self.frames, self.channels = self.audio.shape
        self.dtype = self.audio.dtype
        self.sample_rate = int(sample_rate)

    def _read(self, start: int, stop: int) -> np.ndarray:
        return self.audio[start:stop]


def model_length(frames: int, rate: int, model_rate: int) -> int:
    """Length of the model-rate signal (as `resample` gives it)."""
    if rate == model_rate:
        return frames
    g = gcd(rate, model_rate)
    return int(round(frames * (model_rate // g) / (rate // g)))


def resample_span(read, rate: int, new_rate: int, start: int, stop: int) -> np.ndarray:
    """Samples [start, stop) of `resample(whole signal, rate, new_rate)`, reading only what they
    need: `read(a, b)` gives input samples [a, b) (zeros outside the signal).

    `start` must sit on a whole number of input samples (start * rate / new_rate integral)."""
    if rate == new_rate:
        return np.asarray(read(start, stop), np.float32)
    g = gcd(rate, new_rate)
    up, down = new_rate // g, rate // g
    assert start % up == 0, "blocks must start on a common sample of both rates"
    half = kernel_half_width(up, down)
    pad = -(-(half + 2) // down)  # context in units of `down` input samples
    first = start // up * down - pad * down
    last = (stop * down) // up + half + 2
    piece = resample(read(first, last), rate, new_rate, chunk=4096)
    return piece[pad * up : pad * up + (stop - start)]


@dataclass
class Segment:
    start: int  # model-rate samples
    stop: int
    signs: np.ndarray  # per channel: +1, -1, or 0 (silent in this segment)


@dataclass
class Emotion:
    """Running sum of one model's logits over windows (hop window/2) of the model-rate mix,
    as `Masker.classify` reads a clip; `overall` is the softmax of their mean."""

    sums: np.ndarray | None = None
    count: int = 0

    def add(self, logits: np.ndarray) -> None:
        total = logits.astype(np.float64).sum(axis=0)
        self.sums = total if self.sums is None else self.sums + total
        self.count += len(logits)

    def overall(self) -> np.ndarray:
        from plainsight.masker import softmax

        return softmax(self.sums / self.count)


@dataclass
class BlockMasker:
    """Mask `source` with `masker`; iterate `blocks()` for (start, x, y) where x is the input
    block (float32) and y the masked block (float64, not yet limited to any range)."""

    masker: object
    source: Source
    lsb: float | None = None  # output resolution, for the budget floor (None: 16-bit)
    before: Emotion = field(default_factory=Emotion)
    after: Emotion = field(default_factory=Emotion)

    def __post_init__(self):
        if getattr(self.masker, "privacy", "mask") == "neutralize":
            m = self.masker
            self.source = NeutralizedSource(
                self.source, m.neutralize_strength, m.neutralize_reference
            )
        m, src = self.masker, self.source
        self.rate16, self.window = m.sample_rate, m.window
        self.n16 = model_length(src.frames, src.sample_rate, self.rate16)
        if self.n16 < 1:
            raise ValueError(
                f"too short to mask: {src.frames} sample(s) at {src.sample_rate} Hz "
                f"is less than one sample at the model's {self.rate16} Hz"
            )
        self.segments = self._segments()
        self.unit16 = BLOCK_SECONDS * self.rate16
        self.unit = BLOCK_SECONDS * src.sample_rate

    # ----- plan -------------------------------------------------------------------------------
    def _segments(self) -> list[tuple[int, int]]:
        from plainsight.masker import SEGMENT_WINDOWS

        if self.n16 < self.window:
            return [(0, self.n16)]
        # Segments start on a sample common to both rates (resample_span reads from there):
        # 2 s model windows always do; a window of 0.2 s at 8001 Hz did not (hypothesis).
        common = self.rate16 // gcd(self.rate16, self.source.sample_rate)
        length = -(-SEGMENT_WINDOWS * self.window // common) * common
        edges = list(range(0, self.n16, length)) + [self.n16]
        if len(edges) > 2 and edges[-1] - edges[-2] < self.window:
            del edges[-2]
        return list(zip(edges[:-1], edges[1:], strict=True))

    def _input_span(self, start16: int, stop16: int) -> tuple[int, int]:
        rate = self.source.sample_rate
        first = start16 * rate // self.rate16
        last = min(-(-stop16 * rate // self.rate16), self.source.frames)
        if stop16 >= self.n16:
            last = self.source.frames
        return first, last

    def _signs(self, start16: int, stop16: int) -> np.ndarray:
        """Per-channel sign against the loudest channel of the segment (0: silent channel)."""
        src = self.source
        if src.channels == 1:
            return np.ones(1)
        first, last = self._input_span(start16, stop16)
        gram = np.zeros((src.channels, src.channels))
        for a in range(first, last, CHUNK_FRAMES):
            x = src.read(a, min(a + CHUNK_FRAMES, last)).astype(np.float64)
            gram += x.T @ x
        energy = np.diag(gram)
        ref = int(np.argmax(energy))
        signs = np.where(gram[:, ref] < 0, -1.0, 1.0)
        signs[energy == 0] = 0.0
        return signs

    def _mix16(self, seg: Segment) -> np.ndarray:
        src = self.source
        active = max(1, int(np.count_nonzero(seg.signs)))
        weights = seg.signs / active

        def read_mix(a: int, b: int) -> np.ndarray:
            mix = np.empty(b - a, np.float32)
            for c in range(a, b, CHUNK_FRAMES):
                d = min(c + CHUNK_FRAMES, b)
                mix[c - a : d - a] = src.read(c, d).astype(np.float64) @ weights
            return mix

        pieces = [
            resample_span(read_mix, src.sample_rate, self.rate16, s, min(s + self.unit16, seg.stop))
            for s in range(seg.start, seg.stop, self.unit16)
        ]
        return np.concatenate(pieces)

    # ----- the perturbation of one segment at the model rate --------------------------------
    @staticmethod
    def _limit(bound: np.ndarray, delta: np.ndarray) -> np.ndarray:
        """What resampling to the input rate may not exceed: the bound, or the delta's own
        magnitude where larger (only a shaped delta is: the budget bounds what it shapes)."""
        return np.maximum(bound, np.abs(delta))

    def _perturb(self, mix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        from plainsight.masker import window_starts

        m, width = self.masker, self.window
        n = len(mix)
        if n < width:  # centred in one window, as the models were trained and scored
            offset = (width - n) // 2
            signal = np.zeros(width, np.float32)
            signal[offset : offset + n] = mix
            valid = np.zeros((1, width), np.float32)
            valid[0, offset : offset + n] = 1.0
            bound = m.budget(signal[None], valid, lsb=self.lsb)[0]
            starts = np.zeros(1, int)
            gained = m.rebalance(signal, starts, signal[None]) if m.gain_db else signal
            delta = m._optimise(gained, bound, starts, signal[None], m.steps, m.grid_shift)
            delta = delta + gained - signal
            delta, bound = delta[offset : offset + n], bound[offset : offset + n]
            return delta, self._limit(bound, delta)
        count = -(-n // width)
        windows = np.zeros(count * width, np.float32)
        windows[:n] = mix
        valid = np.zeros(count * width, np.float32)
        valid[:n] = 1.0
        shape = (count, width)
        bound = m.budget(windows.reshape(shape), valid.reshape(shape), lsb=self.lsb)
        bound = bound.reshape(-1)[:n]
        del windows, valid  # not needed while the optimiser runs (peak memory)
        starts = window_starts(n, width, m.hop)
        clean = mix[starts[:, None] + np.arange(width)[None, :]]
        gained = m.rebalance(mix, starts, clean) if m.gain_db else mix
        delta = m._optimise(gained, bound, starts, clean, m.steps, m.grid_shift)
        if m.gain_db:
            delta += gained - mix
        return delta, self._limit(bound, delta)

    # ----- emotion before/after, incrementally --------------------------------------------
    def _classify(self, history: np.ndarray, masked: np.ndarray, base: int, done: int) -> None:
        """Score the classify windows that end inside [base, base + len(history))."""
        m, width = self.masker, self.window
        if self.n16 < width:
            offset = (width - self.n16) // 2
            for emotion, sig in ((self.before, history), (self.after, masked)):
                padded = np.zeros((1, width), np.float32)
                padded[0, offset : offset + self.n16] = sig
                emotion.add(m._logits(m.members[0], padded))
            return
        from plainsight.masker import window_starts

        starts = window_starts(self.n16, width, width // 2)
        starts = starts[(starts >= done) & (starts + width <= base + len(history))]
        if len(starts) == 0:
            return
        for first in range(0, len(starts), m.batch):  # a batch of windows at a time: small
            index = (starts[first : first + m.batch] - base)[:, None] + np.arange(width)
            self.before.add(m._logits(m.members[0], history[index]))
            self.after.add(m._logits(m.members[0], masked[index]))
        return int(starts[-1]) + 1

    # ----- everything, in order ------------------------------------------------------------
    def blocks(self):
        src, rate = self.source, self.source.sample_rate
        delta_buf = np.zeros(0, np.float32)  # model-rate perturbation from buf_start on
        bound_buf = np.zeros(0, np.float32)
        buf_start = 0
        history = np.zeros(0, np.float32)  # mix (and masked mix) for the classify windows
        masked_history = np.zeros(0, np.float32)
        hist_start, next_window = 0, 0
        emitted = 0  # input frames handed out
        segment_starts = [s for s, _ in self.segments]
        done_segments: list[Segment] = []
        for start16, stop16 in self.segments:
            seg = Segment(start16, stop16, self._signs(start16, stop16))
            done_segments.append(seg)
            mix = self._mix16(seg)
            delta, bound = self._perturb(mix)
            # classify windows over the sign-aligned mix, before and after
            history = np.concatenate([history, mix])
            masked_history = np.concatenate([masked_history, mix + delta])
            step = self._classify(history, masked_history, hist_start, next_window)
            next_window = step if step is not None else next_window
            keep = min(len(history), self.window)
            hist_start += len(history) - keep
            history, masked_history = history[-keep:].copy(), masked_history[-keep:].copy()
            delta_buf = np.concatenate([delta_buf, delta])
            bound_buf = np.concatenate([bound_buf, bound])
            # hand out every input block whose perturbation is now known
            known = stop16 if stop16 < self.n16 else None
            while emitted < src.frames:
                stop = min(emitted + self.unit, src.frames)
                if known is not None and self._needed16(emitted, stop) > known:
                    break
                owner = done_segments[
                    bisect_right(segment_starts, emitted * self.rate16 // rate) - 1
                ]
                d = self._delta_at_rate(delta_buf, bound_buf, buf_start, emitted, stop)
                for a in range(emitted, stop, CHUNK_FRAMES):
                    b = min(a + CHUNK_FRAMES, stop)
                    x = src.read(a, b)
                    part = d[a - emitted : b - emitted, None]
                    yield a, x, x.astype(np.float64) + part * owner.signs[None, :]
                emitted = stop
            # drop the perturbation no later block needs
            drop = max(0, self._first_needed16(emitted) - buf_start)
            delta_buf, bound_buf = delta_buf[drop:], bound_buf[drop:]
            buf_start += drop

    def _needed16(self, start: int, stop: int) -> int:
        """End (exclusive) of the model-rate perturbation that input frames [start, stop) use."""
        rate = self.source.sample_rate
        if rate == self.rate16:
            return stop
        g = gcd(rate, self.rate16)
        up, down = rate // g, self.rate16 // g
        return (stop * down) // up + kernel_half_width(up, down) + 3

    def _first_needed16(self, start: int) -> int:
        rate = self.source.sample_rate
        if rate == self.rate16:
            return start
        g = gcd(rate, self.rate16)
        up, down = rate // g, self.rate16 // g
        first = start * self.rate16 // rate
        return max(0, first - (-(-(kernel_half_width(up, down) + 2) // down) + 1) * down)

    def _delta_at_rate(self, delta16, bound16, base: int, start: int, stop: int) -> np.ndarray:
        """Perturbation for input frames [start, stop): resampled from the model rate and
        limited to the model-rate bound of the same instant (as the in-memory path did)."""
        rate, n16 = self.source.sample_rate, self.n16

        def read16(a: int, b: int) -> np.ndarray:
            out = np.zeros(b - a, np.float32)
            lo, hi = max(a, 0), min(b, n16)
            if lo < hi:
                out[lo - a : hi - a] = delta16[lo - base : hi - base]
            return out

        if rate == self.rate16:
            return read16(start, stop).astype(np.float64)
        delta = resample_span(read16, self.rate16, rate, start, stop).astype(np.float64)
        src = np.minimum((np.arange(start, stop) * self.rate16) // rate, n16 - 1)
        limit = bound16[src - base].astype(np.float64)
        return np.clip(delta, -limit, limit)
