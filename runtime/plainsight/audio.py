"""Audio files: careful reading (WAV/FLAC/OGG) and atomic writing in the input's format.

Every problem becomes one AudioError with a one-line message; nothing is ever written
next to a half-finished file, and an input is never overwritten.
"""

from __future__ import annotations

import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

FORMATS = {"WAV": ".wav", "WAVEX": ".wav", "RF64": ".wav", "FLAC": ".flac", "OGG": ".ogg"}
EXTENSIONS = (".wav", ".flac", ".ogg", ".oga")
MAX_SECONDS = 3 * 3600  # longer files: split them, or use `plainsight stream`
MAX_CHANNELS = 64
_STREAMED_SIZES = {0, 0xFFFFFFFF, 0x7FFFFFFF}  # data sizes written by pipes: length unknown


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


def read_audio(path: str | Path) -> Audio:
    path = Path(path)
    if not path.exists():
        raise AudioError(f"{path}: no such file")
    if not path.is_file():
        raise AudioError(f"{path}: not a regular file")
    if path.stat().st_size == 0:
        raise AudioError(f"{path}: empty file")
    try:
        info = sf.info(str(path))
    except Exception:  # libsndfile: unknown or broken header
        raise AudioError(f"{path}: not a readable audio file (WAV, FLAC or OGG)") from None
    if info.format not in FORMATS:
        raise AudioError(f"{path}: unsupported format {info.format} (use WAV, FLAC or OGG)")
    _check_truncated(path, info)
    if info.frames <= 0:
        raise AudioError(f"{path}: no audio samples")
    if not 1000 <= info.samplerate <= 768000:
        raise AudioError(f"{path}: implausible sample rate {info.samplerate} Hz")
    if not 1 <= info.channels <= MAX_CHANNELS:
        raise AudioError(f"{path}: unsupported channel count {info.channels}")
    if info.frames / info.samplerate > MAX_SECONDS:
        raise AudioError(
            f"{path}: too long ({info.frames / info.samplerate / 3600:.1f} h > "
            f"{MAX_SECONDS / 3600:.0f} h); split it or use `plainsight stream`"
        )
    try:
        samples, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as exc:
        raise AudioError(f"{path}: corrupt or truncated audio ({_one_line(exc)})") from None
    if samples.shape[0] == 0:
        raise AudioError(f"{path}: no audio samples")
    if info.format != "OGG" and samples.shape[0] < info.frames:
        raise AudioError(f"{path}: truncated ({samples.shape[0]} of {info.frames} frames)")
    if not np.isfinite(samples).all():
        raise AudioError(f"{path}: contains NaN or Inf samples")
    return Audio(samples, int(rate), info.format, info.subtype, info.endian)


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


def write_audio(
    path: str | Path, samples: np.ndarray, like: Audio, source: str | Path | None = None
) -> None:
    """Atomically write `samples` in the format/subtype of `like`; never over `source`."""
    path = Path(path)
    if source is not None and same_path(path, source):
        raise AudioError(f"{path}: output is the input file; refusing to overwrite it")
    if not np.isfinite(samples).all():
        raise AudioError(f"{path}: refusing to write NaN/Inf samples")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise AudioError(f"{path}: directory {parent} does not exist")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=parent)
    os.close(fd)
    try:
        sf.write(
            tmp,
            np.clip(samples, -1.0, 1.0),
            like.sample_rate,
            format=like.format,
            subtype=like.subtype,
            endian=like.endian,
        )
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if not isinstance(exc, Exception) or isinstance(exc, AudioError):
            raise
        raise AudioError(f"{path}: cannot write ({_one_line(exc)})") from None
