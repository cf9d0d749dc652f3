"""Lossy uplink codecs for the evaluation: an in-memory encode/decode round trip.

What a cloud classifier hears is the masked audio after the device's uplink codec. The
round trip uses libsndfile through `soundfile` (Ogg/Opus and MP3 writing since libsndfile
1.2), so no extra system dependency. libsndfile takes a `compression_level` in [0, 1], not
a bitrate, so each codec is calibrated once (bisection on real clips) to the requested
kbit/s, and the bitrate actually produced (encoded bytes * 8 / seconds) is measured and
reported for every condition.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field

import numpy as np
import soundfile as sf

# name -> (container format, subtype, bitrate mode). Opus uses libsndfile's default (VBR;
# it refuses an explicit mode). MP3 uses average bitrate: at <= 32 kbit/s libsndfile's
# constant-bitrate MP3 decodes with ~1100 samples of encoder delay and extra length (no
# gapless tag), while ABR/VBR round trips keep length and alignment.
CODECS = {
    "opus": ("OGG", "OPUS", None),
    "mp3": ("MP3", "MPEG_LAYER_III", "AVERAGE"),
}
MAX_LEVEL = {"opus": 1.0, "mp3": 0.99}  # libsndfile refuses level 1.0 for MP3
CALIBRATION_STEPS = 12
CALIBRATION_TOLERANCE = 0.03  # relative bitrate error accepted by the calibration


class CodecError(ValueError):
    pass


@dataclass
class Codec:
    """One uplink condition: 'none' (no codec) or '<opus|mp3>:<kbps>'."""

    name: str
    kind: str = "none"
    kbps: float | None = None
    level: float | None = None  # calibrated compression_level
    calibration: dict = field(default_factory=dict)

    @property
    def lossy(self) -> bool:
        return self.kind != "none"

    def describe(self) -> dict:
        return {
            "codec": self.name,
            "kind": self.kind,
            "requested_kbps": self.kbps,
            "compression_level": self.level,
            "calibration": self.calibration,
        }


def parse_codec(text: str) -> Codec:
    text = text.strip().lower()
    if text == "none":
        return Codec("none")
    kind, _, rate = text.partition(":")
    if kind not in CODECS or not rate:
        raise CodecError(f"codec must be none, opus:KBPS or mp3:KBPS, got {text!r}")
    try:
        kbps = float(rate)
    except ValueError:
        raise CodecError(f"codec bitrate must be a number of kbit/s, got {rate!r}") from None
    if not 6 <= kbps <= 256:
        raise CodecError(f"codec bitrate must be in 6..256 kbit/s, got {kbps:g}")
    return Codec(f"{kind}:{kbps:g}", kind, kbps)


def parse_codecs(text: str) -> list[Codec]:
    """Comma-separated list, no repeats (e.g. 'none,opus:24,mp3:32')."""
    codecs = [parse_codec(part) for part in text.split(",") if part.strip()]
    if not codecs:
        raise CodecError("no codec given")
    names = [c.name for c in codecs]
    if len(set(names)) != len(names):
        raise CodecError(f"codec listed twice: {names}")
    return codecs


def encode(kind: str, audio: np.ndarray, rate: int, level: float) -> bytes:
    fmt, subtype, mode = CODECS[kind]
    buffer = io.BytesIO()
    sf.write(
        buffer,
        np.asarray(audio, np.float32),
        rate,
        format=fmt,
        subtype=subtype,
        compression_level=level,
        bitrate_mode=mode,
    )
    return buffer.getvalue()


def decode(data: bytes) -> tuple[np.ndarray, int]:
    audio, rate = sf.read(io.BytesIO(data), dtype="float32", always_2d=False)
    return audio, rate


def round_trip(kind: str, audio: np.ndarray, rate: int, level: float) -> tuple[np.ndarray, int]:
    """Decoded audio (same length and rate, or CodecError) and the encoded size in bytes."""
    data = encode(kind, audio, rate, level)
    out, out_rate = decode(data)
    if out_rate != rate or out.ndim != 1 or len(out) != len(audio):
        raise CodecError(
            f"{kind} round trip changed the audio's shape or rate: {len(audio)} samples at "
            f"{rate} Hz became {out.shape} at {out_rate} Hz"
        )
    return out, len(data)


def measured_kbps(kind: str, audios: list[np.ndarray], rate: int, level: float) -> float:
    """Bitrate of one encode per clip, as sent: total bytes * 8 / total seconds."""
    total = sum(len(encode(kind, a, rate, level)) for a in audios)
    return total * 8 / (sum(len(a) for a in audios) / rate) / 1000


def calibrate(codec: Codec, audios: list[np.ndarray], rate: int) -> Codec:
    """Set codec.level so these clips encode at codec.kbps (bitrate falls with the level)."""
    if not codec.lossy:
        return codec
    lo, hi = 0.0, MAX_LEVEL[codec.kind]
    best = None
    for _ in range(CALIBRATION_STEPS):
        mid = (lo + hi) / 2
        kbps = measured_kbps(codec.kind, audios, rate, mid)
        if best is None or abs(kbps - codec.kbps) < abs(best[1] - codec.kbps):
            best = (mid, kbps)
        if abs(kbps - codec.kbps) <= CALIBRATION_TOLERANCE * codec.kbps:
            break
        lo, hi = (mid, hi) if kbps > codec.kbps else (lo, mid)
    codec.level, kbps = best
    codec.calibration = {
        "clips": len(audios),
        "seconds": sum(len(a) for a in audios) / rate,
        "measured_kbps": kbps,
    }
    if abs(kbps - codec.kbps) > 0.1 * codec.kbps:
        raise CodecError(
            f"{codec.name}: cannot reach {codec.kbps:g} kbit/s (closest {kbps:.1f} at level "
            f"{codec.level:.3f})"
        )
    return codec


def apply(codec: Codec, audios: list[np.ndarray], rate: int) -> tuple[list[np.ndarray], dict]:
    """Every clip through the codec; returns the decoded clips and the measured bitrate."""
    if not codec.lossy:
        return list(audios), {"kbps": None, "bytes": None}
    out, total = [], 0
    for audio in audios:
        decoded, size = round_trip(codec.kind, audio, rate, codec.level)
        out.append(decoded)
        total += size
    seconds = sum(len(a) for a in audios) / rate
    return out, {"kbps": total * 8 / seconds / 1000, "bytes": total, "seconds": seconds}
