"""Peak RSS of `plainsight mask` against the length of the file (issue 11: 150 MB budget).

Writes synthetic speech-like WAV/FLAC files of each length, masks each in a fresh process
(default model and strength, 1 thread) and prints that process's peak RSS (wait4 ru_maxrss)
and wall time. Nothing here is a pass/fail test; it prints numbers.

    python benchmarks/mask_memory.py                      # 1, 10, 60 min, 44.1 kHz stereo WAV
    python benchmarks/mask_memory.py --minutes 1 10 --rate 96000 --channels 6 --format FLAC
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

BUDGET_MB = 150.0


def write_long(path: Path, minutes: float, rate: int, channels: int, fmt: str) -> None:
    """Speech-like audio, written one minute at a time (the generator stays small too)."""
    from plainsight.bench import synthetic_speechlike

    minute = synthetic_speechlike(60.0, rate).astype(np.float64)
    minute *= 0.5 / np.abs(minute).max()
    gains = 1.0 - 0.1 * np.arange(channels)
    with sf.SoundFile(path, "w", rate, channels, "PCM_16", format=fmt) as out:
        left = int(minutes * 60 * rate)
        while left > 0:
            n = min(left, len(minute))
            out.write(minute[:n, None] * gains[None, :])
            left -= n


def mask_in_child(src: Path, dst: Path, extra: list[str]) -> tuple[int, float, float]:
    """(exit code, peak RSS MB, wall s) of `plainsight mask SRC DST` in a fresh process."""
    start = time.perf_counter()
    pid = os.fork()
    if pid == 0:  # child: become the CLI
        os.execv(sys.executable, [sys.executable, "-m", "plainsight.cli", "mask", "-q",
                                  str(src), str(dst), "--threads", "1", *extra])  # fmt: skip
    _, status, usage = os.wait4(pid, 0)
    return os.waitstatus_to_exitcode(status), usage.ru_maxrss / 1024, time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, nargs="+", default=[1, 10, 60])
    parser.add_argument("--rate", type=int, default=44100)
    parser.add_argument("--channels", type=int, default=2)
    parser.add_argument("--format", default="WAV", choices=["WAV", "FLAC"])
    parser.add_argument("--dir", default=None, help="where to write the test files (temp dir)")
    parser.add_argument("extra", nargs="*", help="more `plainsight mask` options, after --")
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    suffix = ".wav" if args.format == "WAV" else ".flac"
    print(f"plainsight mask peak RSS, {args.rate} Hz, {args.channels} ch, {args.format} PCM_16, "
          f"budget {BUDGET_MB:.0f} MB, load average {os.getloadavg()[0]:.1f}")  # fmt: skip
    print(f"{'minutes':>8} {'file MB':>8} {'peak RSS MB':>12} {'wall s':>8} {'RTF':>7}  rc")
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        for minutes in args.minutes:
            src, dst = Path(tmp) / f"in{suffix}", Path(tmp) / f"out{suffix}"
            write_long(src, minutes, args.rate, args.channels, args.format)
            rc, rss, wall = mask_in_child(src, dst, args.extra)
            size = src.stat().st_size / 1e6
            print(f"{minutes:8g} {size:8.1f} {rss:12.1f} {wall:8.1f} {wall / minutes / 60:7.4f}"
                  f"  {rc}{'' if rss <= BUDGET_MB else '  OVER BUDGET'}", flush=True)  # fmt: skip
            src.unlink()
            dst.unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
