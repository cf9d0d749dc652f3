"""Audio files: careful reading (WAV/FLAC/OGG) and atomic writing in the input's format.

Every problem becomes one AudioError with a one-line message; nothing is ever written
next to a half-finished file, and an input is never overwritten.
"""

from __future__ import annotations

import os
import re
import signal
import sys
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

FORMATS = {"WAV": ".wav", "WAVEX": ".wav", "RF64": ".wav", "FLAC": ".flac", "OGG": ".ogg"}
EXTENSIONS = (".wav", ".flac", ".ogg", ".oga")
MAX_SECONDS = 3 * 3600  # longer files: split them, or use `plainsight stream`
MAX_CHANNELS = 64
# Float files may go beyond full scale (their headroom is kept), but not without limit: past
# about 1e18 the model's float32 power spectrum overflows into NaN. 1e6 is 120 dB above full
# scale, beyond any recording. Masker.mask/classify refuse the same (plainsight.masker).
MAX_PEAK = 1e6
MIN_RATE, MAX_RATE = 1000, 768000  # sample rates of real recordings (Masker takes the same)
_STREAMED_SIZES = {0, 0xFFFFFFFF, 0x7FFFFFFF}  # data sizes written by pipes: length unknown
OGG_SEEK_PREROLL = 16384  # frames decoded and dropped before a seek target (2 x 8192 block)


class AudioError(ValueError):
    """Unusable audio input or output path (message is one line)."""


@dataclass
class Audio:
    samples: np.ndarray  # [frames, channels] float32 in [-1, 1]
    sample_rate: int
    format: str
    subtype: str
    endian: str = "FILE"

    @property
    def seconds(self) -> float:
        return self.samples.shape[0] / self.sample_rate


def _check_truncated(path: Path, info) -> None:
    if info.format in ("WAV", "WAVEX", "RF64"):
        match = re.search(r"^data : (\d+) \(should be (\d+)\)", info.extra_info, re.M)
        if match and int(match[1]) not in _STREAMED_SIZES and int(match[1]) > int(match[2]):
            raise AudioError(
                f"{path}: truncated WAV (header says {match[1]} data bytes, file has {match[2]})"
            )
    elif info.format == "OGG":
        with open(path, "rb") as fh:
            fh.seek(max(0, path.stat().st_size - 65536))
            tail = fh.read()
        page = tail.rfind(b"OggS")
        if page < 0 or page + 5 >= len(tail) or not tail[page + 5] & 0x04:
            raise AudioError(f"{path}: truncated OGG (no end-of-stream page)")


@contextmanager
def quiet_stderr():
    """Silence file descriptor 2 around libsndfile calls: its decoders (libmpg123) print their
    own complaints there before we can say ours in one line."""
    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # no fd 2 at all: nothing to protect
        yield
        return
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


@dataclass
class AudioInfo:
    frames: int
    sample_rate: int
    channels: int
    format: str
    subtype: str
    endian: str = "FILE"


def inspect_audio(path: str | Path) -> AudioInfo:
    """Check a file's header (without reading its samples); one AudioError per problem."""
    path = Path(path)
    if not path.exists():
        raise AudioError(f"{path}: no such file")
    if not path.is_file():
        raise AudioError(f"{path}: not a regular file")
    if path.stat().st_size == 0:
        raise AudioError(f"{path}: empty file")
    try:
        with quiet_stderr():
            info = sf.info(str(path))
    except Exception:  # libsndfile: unknown or broken header
        raise AudioError(f"{path}: not a readable audio file (WAV, FLAC or OGG)") from None
    if info.format not in FORMATS:
        raise AudioError(f"{path}: unsupported format {info.format} (use WAV, FLAC or OGG)")
    _check_truncated(path, info)
    if info.frames <= 0:
        raise AudioError(f"{path}: no audio samples")
    if not MIN_RATE <= info.samplerate <= MAX_RATE:
        raise AudioError(f"{path}: implausible sample rate {info.samplerate} Hz")
    if not 1 <= info.channels <= MAX_CHANNELS:
        raise AudioError(f"{path}: unsupported channel count {info.channels}")
    if info.frames / info.samplerate > MAX_SECONDS:
        raise AudioError(
            f"{path}: too long ({info.frames / info.samplerate / 3600:.1f} h > "
            f"{MAX_SECONDS / 3600:.0f} h); split it or use `plainsight stream`"
        )
    return AudioInfo(
        int(info.frames), int(info.samplerate), int(info.channels), info.format, info.subtype,
        info.endian,
    )  # fmt: skip


def read_audio(path: str | Path) -> Audio:
    path = Path(path)
    info = inspect_audio(path)
    try:
        with quiet_stderr():
            samples, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as exc:
        raise AudioError(f"{path}: corrupt or truncated audio ({_one_line(exc)})") from None
    if samples.shape[0] == 0:
        raise AudioError(f"{path}: no audio samples")
    if info.format != "OGG" and samples.shape[0] < info.frames:
        raise AudioError(f"{path}: truncated ({samples.shape[0]} of {info.frames} frames)")
    _check_samples(path, samples)
    return Audio(samples, int(rate), info.format, info.subtype, info.endian)


class FileSource:
    """Frames of an audio file on demand (blockmask.Source), checked as they are read: the
    whole file is never in memory."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.info = inspect_audio(self.path)
        self.frames, self.sample_rate = self.info.frames, self.info.sample_rate
        self.channels = self.info.channels
        self.dtype = np.float32
        try:
            with quiet_stderr():
                self.file = sf.SoundFile(str(self.path))
        except Exception as exc:
            raise AudioError(f"{self.path}: corrupt audio ({_one_line(exc)})") from None

    def read(self, start: int, stop: int) -> np.ndarray:
        out = np.zeros((stop - start, self.channels), np.float32)
        a, b = max(start, 0), min(stop, self.frames)
        if a >= b:
            return out
        try:
            if self.file.tell() != a:
                self._seek(a)
            got = self.file.read(b - a, dtype="float32", always_2d=True)
        except Exception as exc:
            raise AudioError(
                f"{self.path}: corrupt or truncated audio ({_one_line(exc)})"
            ) from None
        if len(got) < b - a:
            raise AudioError(f"{self.path}: truncated ({a + len(got)} of {self.frames} frames)")
        _check_samples(self.path, got)
        out[a - start : b - start] = got
        return out

    def _seek(self, frame: int) -> None:
        if self.info.format != "OGG":
            self.file.seek(frame)
            return
        # Vorbis decodes a few hundred frames after a seek differently (no overlap from the
        # previous block): start earlier and drop them, so every read equals a whole read.
        start = max(0, frame - OGG_SEEK_PREROLL)
        self.file.seek(start)
        if frame > start:
            self.file.read(frame - start, dtype="float32", always_2d=True)

    def close(self) -> None:
        self.file.close()


def _check_samples(path: Path, samples: np.ndarray) -> None:
    if not np.isfinite(samples).all():
        raise AudioError(f"{path}: contains NaN or Inf samples")
    peak = float(np.abs(samples).max(initial=0.0))
    if peak > MAX_PEAK:
        raise AudioError(
            f"{path}: samples up to {peak:.3g} times full scale, beyond any recording "
            f"(limit {MAX_PEAK:.0e})"
        )


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def same_path(a: str | Path, b: str | Path) -> bool:
    a, b = Path(a), Path(b)
    if a.exists() and b.exists():
        return os.path.samefile(a, b)
    return a.resolve() == b.resolve()


# ----- writing what was masked: quantise, write a temp file, verify it, rename ---------------
_PCM_BITS = {"PCM_S8": 8, "PCM_U8": 8, "PCM_16": 16, "PCM_24": 24, "PCM_32": 32}
_FLOAT_TYPES = {"FLOAT": np.float32, "DOUBLE": np.float64}
DITHER_BELOW_BITS = 12  # coarser formats get TPDF dither (8-bit: the perturbation is < 1 step)


class Quantiser:
    """Round float audio to an output subtype ourselves (libsndfile's float -> PCM conversion
    is biased), so that what we measure is what the file holds.

    Integer PCM: round to the nearest step, TPDF dither for coarse formats (only where the
    sample was perturbed, so digital silence stays silent), clip to the representable range.
    Float: no quantisation step; a sample within full scale stays within it, a sample beyond
    keeps its magnitude (the format's headroom). Lossy/other subtypes: clip to full scale
    and let libsndfile encode (the read-back check then sees the codec's output)."""

    def __init__(self, subtype: str, seed: int = 0):
        self.subtype = subtype
        self.bits = _PCM_BITS.get(subtype)
        self.float_type = _FLOAT_TYPES.get(subtype)
        if self.bits:
            self.lsb = 2.0 ** (1 - self.bits)
        else:  # float: 24-bit mantissa; lossy codecs: as fine as 16-bit PCM at best
            self.lsb = 2.0**-23 if self.float_type else 2.0**-15
        self.dither = self.bits is not None and self.bits < DITHER_BELOW_BITS
        # a codec (Vorbis, Opus, ADPCM...) changes every sample by itself: what would go out
        # unmasked is the input through the codec, so that is what the written file is checked
        # against (verify_written's `reference`)
        self.codec = self.bits is None and self.float_type is None
        self.rng = np.random.default_rng(seed)

    def encode(self, y: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, int]:
        """(array for SoundFile.write, number of samples whose perturbation was limited)."""
        if self.bits:
            scale = 2.0 ** (self.bits - 1)
            v = y * scale
            if self.dither:
                tpdf = self.rng.random(v.shape) - self.rng.random(v.shape)
                v = v + tpdf * (y != x)
            q = np.rint(v)
            clipped = np.clip(q, -scale, scale - 1)
            limited = int(np.count_nonzero(clipped != q))
            if self.bits <= 16:  # libsndfile: short -> 8-bit keeps the top byte
                return (clipped * 2.0 ** (16 - self.bits)).astype(np.int16), limited
            return (clipped * 2.0 ** (32 - self.bits)).astype(np.int32), limited
        limit = np.maximum(1.0, np.abs(x)) if self.float_type else 1.0
        clipped = np.clip(y, -limit, limit)
        limited = int(np.count_nonzero(clipped != y))
        return clipped.astype(self.float_type or np.float64), limited


class Interrupted(KeyboardInterrupt):
    """SIGTERM/SIGHUP turned into an exception, so that temp files are removed on the way out."""


@contextmanager
def signals_raise():
    def handler(signum, _frame):
        raise Interrupted(f"terminated by {signal.Signals(signum).name}")

    previous = {}
    for sig in (signal.SIGTERM, signal.SIGHUP):
        try:
            previous[sig] = signal.signal(sig, handler)
        except ValueError:  # not the main thread: leave signals alone
            pass
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


class AtomicWriter:
    """Audio written block by block to a hidden temp file next to `path`, renamed over `path`
    only by commit(); any exception (or signal, see signals_raise) removes the temp file."""

    def __init__(self, path: str | Path, info: AudioInfo, source: str | Path | None = None):
        self.path = Path(path)
        if source is not None and same_path(self.path, source):
            raise AudioError(f"{self.path}: output is the input file; refusing to overwrite it")
        parent = self.path.parent if str(self.path.parent) else Path(".")
        if not parent.is_dir():
            raise AudioError(f"{self.path}: directory {parent} does not exist")
        self.parent, self.info = parent, info
        self.tmp: Path | None = None
        self.file = None

    def __enter__(self) -> AtomicWriter:
        try:
            fd, tmp = tempfile.mkstemp(
                prefix=f".{self.path.name}.", suffix=".part", dir=self.parent
            )
            self.tmp = Path(tmp)
            os.close(fd)
            info = self.info
            self.file = sf.SoundFile(
                tmp, "w", info.sample_rate, info.channels, info.subtype, info.endian, info.format
            )
        except BaseException as exc:
            self._discard()
            if isinstance(exc, Exception) and not isinstance(exc, AudioError):
                raise AudioError(f"{self.path}: cannot write ({_one_line(exc)})") from None
            raise
        return self

    def write(self, data: np.ndarray) -> None:
        try:
            self.file.write(data)
        except Exception as exc:
            raise AudioError(f"{self.path}: cannot write ({_one_line(exc)})") from None

    def finish(self) -> Path:
        """Close the temp file (for reading it back) and return its path."""
        try:
            self.file.close()
        except Exception as exc:
            raise AudioError(f"{self.path}: cannot write ({_one_line(exc)})") from None
        return self.tmp

    def commit(self) -> None:
        try:
            os.chmod(self.tmp, 0o666 & ~_umask())
            os.replace(self.tmp, self.path)  # e.g. onto a folder of that name
        except OSError as exc:
            raise AudioError(f"{self.path}: cannot write ({_one_line(exc)})") from None
        self.tmp = None

    def _discard(self) -> None:
        if self.file is not None and not self.file.closed:
            try:
                self.file.close()
            except Exception:
                pass
        if self.tmp is not None:
            self.tmp.unlink(missing_ok=True)
            self.tmp = None

    def __exit__(self, *exc) -> None:
        self._discard()  # after commit() there is nothing left to discard


SIGNAL_WINDOW_S = 2.0  # the privacy check looks at each channel in windows of this length


@contextmanager
def _read_back(path: Path | None, name: Path):
    """A written temp file opened for reading (None stays None)."""
    if path is None:
        yield None
        return
    try:
        with quiet_stderr():
            file = sf.SoundFile(str(path))
    except Exception as exc:
        raise AudioError(f"{name}: cannot read back what was written ({_one_line(exc)})") from None
    with file:
        yield file


def verify_written(
    source: FileSource, written: Path, lsb: float, name: Path, reference: Path | None = None
) -> dict:
    """Compare the written file with the input, block by block, as both read back.

    "Signal": a channel's 2 s window (from the file's start; the last may be shorter) whose
    input RMS is above one step `lsb` of the output format. Each such window must have a
    written change of RMS >= lsb / 2 (more than rounding noise), or the output is refused:
    there the written samples are the input's, unmasked. For a codec the change is counted
    against `reference`, the input written through the same codec (what would go out with
    no mask), since the codec alone changes every sample. Returns SNR and L-inf of the file
    (against the input)."""
    from plainsight.blockmask import CHUNK_FRAMES

    rate, channels = source.sample_rate, source.channels
    width = max(1, int(SIGNAL_WINDOW_S * rate))
    signal_power = noise_power = 0.0
    linf = 0.0
    unmasked: list[tuple[int, float]] = []
    with _read_back(written, name) as out, _read_back(reference, name) as unmasked_copy:
        for start in range(0, source.frames, width):
            stop = min(start + width, source.frames)
            x_power, d_power = np.zeros(channels), np.zeros(channels)
            m_power = np.zeros(channels)
            for a in range(start, stop, CHUNK_FRAMES):  # bounded memory for many channels
                b = min(a + CHUNK_FRAMES, stop)
                x = source.read(a, b).astype(np.float64)
                y = out.read(b - a, dtype="float64", always_2d=True)
                if y.shape != x.shape:
                    raise AudioError(f"{name}: written file is shorter than the input")
                if unmasked_copy is not None:
                    u = unmasked_copy.read(b - a, dtype="float64", always_2d=True)
                    if u.shape != x.shape:
                        raise AudioError(f"{name}: cannot check the written file's codec")
                    m_power += np.einsum("ij,ij->j", y - u, y - u)
                y -= x  # the change
                x_power += np.einsum("ij,ij->j", x, x)
                d_power += np.einsum("ij,ij->j", y, y)
                linf = max(linf, float(np.abs(y).max()))
            signal_power += float(x_power.sum())
            noise_power += float(d_power.sum())
            has_signal = np.sqrt(x_power / (stop - start)) > lsb
            change = m_power if unmasked_copy is not None else d_power
            masked = np.sqrt(change / (stop - start)) >= lsb / 2
            unmasked += [
                (c, start / rate) for c in range(channels) if has_signal[c] and not masked[c]
            ]
    if unmasked:
        c, t = unmasked[0]
        raise AudioError(
            f"{name}: refusing to write: {len(unmasked)} window(s) with signal would go out "
            f"unmasked (first: channel {c + 1} at {t:.1f}-{t + SIGNAL_WINDOW_S:.1f} s, the "
            f"written samples equal the input there)"
        )
    return {
        "snr_db": round(10 * np.log10(signal_power / noise_power), 2) if noise_power > 0 else None,
        "linf": round(linf, 6),
        "silent": signal_power == 0.0,
    }
