"""Read and judge the `plainsight stream --status-file` health record.

The stream rewrites the JSON atomically about every 2 s while it runs (fields: started_at,
updated_at, uptime_s, pid, state, samples_in, samples_out, frames, rtf, last_error, model,
backend). A record is healthy when it is fresh, says "running" and has no last error.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

DEFAULT_STATUS_FILE = "/run/plainsight/status.json"
DEFAULT_MAX_AGE_S = 10.0  # the stream writes every ~2 s, even when no audio arrives
DEFAULT_MAX_RTF = 0.5  # goal: at most half of one core
# arecord delivers audio at the sample rate: longer without any is a hung source
DEFAULT_MAX_INPUT_IDLE_S = 5.0


@dataclass
class Verdict:
    ok: bool
    message: str


def read_status(path: str | Path) -> dict:
    """The record as a dict; raises ValueError with one clear line if unreadable."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ValueError(f"{path}: no status file (is the service running?)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: unreadable status file ({exc})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: status file is not a JSON object")
    return data


def age_seconds(status: dict, path: str | Path | None = None, now: float | None = None) -> float:
    """Seconds since the record was written (updated_at, else the file's mtime)."""
    now = time.time() if now is None else now
    stamp = status.get("updated_at")
    if isinstance(stamp, str):
        try:
            return now - datetime.fromisoformat(stamp).timestamp()
        except ValueError:
            pass
    if path is not None:
        return now - os.stat(path).st_mtime
    raise ValueError("status record has no updated_at")


def judge(
    status: dict,
    age_s: float,
    max_age_s: float = DEFAULT_MAX_AGE_S,
    max_rtf: float = DEFAULT_MAX_RTF,
    max_input_idle_s: float = DEFAULT_MAX_INPUT_IDLE_S,
) -> Verdict:
    """Healthy = fresh, running, no last error, keeping up with real time, audio coming in."""
    state = status.get("state")
    rtf = status.get("rtf")
    summary = (
        f"state {state}, up {status.get('uptime_s')} s, {status.get('samples_out')} samples "
        f"out, rtf {rtf}, model {status.get('model')}, backend {status.get('backend')}"
    )
    if age_s > max_age_s:
        return Verdict(
            False, f"stale: last update {age_s:.0f} s ago (> {max_age_s:.0f} s); {summary}"
        )
    if state != "running":
        return Verdict(False, f"{summary}; last error: {status.get('last_error')}")
    if status.get("last_error"):
        return Verdict(False, f"{summary}; last error: {status['last_error']}")
    if isinstance(rtf, (int, float)) and rtf > max_rtf:
        return Verdict(False, f"too slow: {summary} (> {max_rtf})")
    idle = status.get("input_idle_s")  # the stream's; wyoming idles without clients
    if isinstance(idle, (int, float)) and idle > max_input_idle_s:
        return Verdict(False, f"no audio in for {idle:.0f} s (a hung microphone?); {summary}")
    return Verdict(True, f"fresh ({age_s:.1f} s old), {summary}")


def check_status_file(
    path: str | Path,
    max_age_s: float = DEFAULT_MAX_AGE_S,
    max_rtf: float = DEFAULT_MAX_RTF,
    now: float | None = None,
) -> Verdict:
    try:
        status = read_status(path)
        return judge(status, age_seconds(status, path, now), max_age_s, max_rtf)
    except (ValueError, OSError) as exc:
        return Verdict(False, str(exc))
