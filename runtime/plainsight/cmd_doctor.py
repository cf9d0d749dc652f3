"""Check this device's installation: the ALSA capture device, the inference backends, the
model hashes, the CPU headroom (a short timed stream run vs real time) and the service's
status file; with the Wyoming sink (PLAINSIGHT_SINK=wyoming, or --wyoming-uri) also the
Wyoming mic service: port listening, its info, clients, frames and last error.
Prints one PASS/FAIL/SKIP line per check; exits 1 if any check fails.

Settings come from /etc/plainsight/plainsight.conf (the service's EnvironmentFile) when it
exists; options override them.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

from plainsight.health import DEFAULT_MAX_AGE_S, DEFAULT_MAX_RTF, DEFAULT_STATUS_FILE

CHECKS = ("alsa", "backend", "models", "headroom", "status", "wyoming")
DEFAULT_CONFIG = "/etc/plainsight/plainsight.conf"


def add_arguments(parser) -> None:
    parser.add_argument("--config", default=DEFAULT_CONFIG, help="service EnvironmentFile")
    parser.add_argument("--device", help="ALSA capture device (default: from the config)")
    parser.add_argument(
        "--status-file", help=f"default: from the config, else {DEFAULT_STATUS_FILE}"
    )
    parser.add_argument(
        "--max-age", type=float, default=DEFAULT_MAX_AGE_S, help="status freshness, s"
    )
    parser.add_argument(
        "--max-rtf",
        type=float,
        default=DEFAULT_MAX_RTF,
        help="largest acceptable real-time factor of the stream (0.5 = half of one core)",
    )
    parser.add_argument(
        "--wyoming-uri",
        metavar="URI",
        help="check this Wyoming mic service (default with PLAINSIGHT_SINK=wyoming: "
        "tcp://PLAINSIGHT_WYOMING_HOST:PLAINSIGHT_WYOMING_PORT)",
    )
    parser.add_argument("--seconds", type=float, default=4.0, help="audio for the headroom run")
    parser.add_argument("--skip", action="append", choices=CHECKS, default=[], help="skip a check")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")


def read_config(path: str | Path) -> dict[str, str]:
    """KEY=value lines of a systemd EnvironmentFile (comments and blanks ignored)."""
    values = {}
    for line in Path(path).read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")) or "=" not in line:
            continue
        key, value = line.split("=", 1)
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        values[key.strip()] = value
    return values


def stream_settings(config: dict[str, str]) -> argparse.Namespace:
    """The `plainsight stream` options the service uses (PLAINSIGHT_STREAM_ARGS)."""
    from plainsight import cmd_stream

    parser = argparse.ArgumentParser(add_help=False)
    cmd_stream.add_arguments(parser)
    argv = shlex.split(config.get("PLAINSIGHT_STREAM_ARGS", ""))
    try:
        args = parser.parse_args(argv)
    except SystemExit:
        raise ValueError(f"PLAINSIGHT_STREAM_ARGS is not valid: {argv}") from None
    if config.get("PLAINSIGHT_RATE", "").isdigit():
        args.rate = int(config["PLAINSIGHT_RATE"])
    return args


# ----- checks: each returns (ok, message) -------------------------------------------------
ASOUND = Path("/proc/asound")


def alsa_cards() -> dict[str, tuple[int, str]]:
    """Card id -> (card number, description), from /proc/asound/cards."""
    cards = {}
    try:
        text = (ASOUND / "cards").read_text()
    except OSError:
        return cards
    for match in re.finditer(r"^\s*(\d+)\s+\[(\S+)\s*\]:\s*(.*)$", text, re.M):
        cards[match.group(2)] = int(match.group(1)), match.group(3).strip()
    return cards


def recording_cards() -> set[int] | None:
    """Numbers of the cards with a capture device (/proc/asound/pcm); None if unknown."""
    try:
        text = (ASOUND / "pcm").read_text()
    except OSError:
        return None
    return {int(m.group(1)) for m in re.finditer(r"^(\d+)-\d+:.*: capture \d+", text, re.M)}


def check_alsa(device: str | None) -> tuple[bool, str]:
    if not shutil.which("arecord"):
        return False, "arecord not found (apt-get install alsa-utils)"
    if not device:
        return False, "no capture device configured (PLAINSIGHT_CAPTURE_DEVICE, or --device)"
    try:
        listed = subprocess.run(
            ["arecord", "-L"], capture_output=True, text=True, timeout=10
        ).stdout.split()
    except (OSError, subprocess.TimeoutExpired) as exc:
        return False, f"arecord -L failed: {exc}"
    cards = alsa_cards()
    numbers = {card: number for card, (number, _) in cards.items()}
    if device in listed:
        return True, f"{device} is listed by arecord -L"
    card = re.search(r"CARD=([^,]+)", device) or re.match(r"(?:plug)?hw:([^,]+)", device)
    name = card.group(1) if card else ""
    number = int(name) if name.isdigit() else numbers.get(name)
    if number is not None and number in numbers.values():
        recording = recording_cards()
        if recording is not None and number not in recording:
            can = ", ".join(c for c, i in numbers.items() if i in recording) or "none"
            return False, f"{device}: card {name} cannot record; cards that can: {can}"
        return True, f"{device}: card {name} present"
    have = ", ".join(f"{card} ({about})" for card, (_, about) in cards.items()) or "none"
    return False, f"{device} not found; capture cards: {have} (see arecord -l / arecord -L)"


def check_backend() -> tuple[bool, str]:
    from plainsight.backends import backend_version, installed_backends

    found = installed_backends()
    if not found:
        return False, "no inference backend importable: pip install onnxruntime"
    parts = []
    for name in found:
        try:
            parts.append(f"{name} {backend_version(name)}")
        except Exception as exc:  # noqa: BLE001 - a broken install is what we report
            return False, f"{name} is installed but fails to import: {exc}"
    return True, ", ".join(parts)


def check_models(model: str) -> tuple[bool, str]:
    from plainsight.manifest import ManifestError, bundled_models, resolve_models, verify_file

    try:
        specs = {spec.directory: spec for spec in bundled_models()}
        for spec in resolve_models(model):
            specs[spec.directory] = spec
        if not specs:
            return False, "no model found (no bundled model and none configured)"
        count = 0
        for spec in specs.values():
            for fname in spec.files:
                verify_file(spec, fname)
                count += 1
    except ManifestError as exc:
        return False, str(exc)
    names = ", ".join(sorted(spec.name for spec in specs.values()))
    return True, f"{count} files of {len(specs)} models match their manifest sha256 ({names})"


def check_headroom(settings: argparse.Namespace, seconds: float, max_rtf: float):
    """Time the service's stream settings on synthetic speech-like audio, on this CPU."""
    from plainsight.bench import synthetic_speechlike
    from plainsight.cli import masker_from_args
    from plainsight.stream import StreamProcessor, to_pcm

    masker = masker_from_args(settings)
    stream = StreamProcessor(masker, settings.rate, settings.hop_ms)
    pcm = to_pcm(synthetic_speechlike(max(seconds, 1.0), settings.rate))
    stream.process(pcm[: stream.hop])  # warm-up
    stream.busy_s = 0.0
    hops = max(1, len(pcm) // stream.hop)
    for i in range(hops):
        stream.process(pcm[i * stream.hop : (i + 1) * stream.hop])
    rtf = stream.busy_s / (hops * stream.hop / settings.rate)
    s = masker.settings()
    detail = (
        f"stream real-time factor {rtf:.3f} = {100 * rtf:.0f}% of one core "
        f"(limit {max_rtf}; {'+'.join(s['models'])}, {s['backend']}, {s['method']} "
        f"{s['stream_steps']} steps, hop {1000 * stream.hop / settings.rate:.0f} ms, "
        f"{s['threads']} thread(s), {hops * stream.hop / settings.rate:.1f} s of audio)"
    )
    return rtf <= max_rtf, detail


def check_status(path: str, max_age: float, max_rtf: float) -> tuple[bool, str]:
    from plainsight.health import check_status_file

    verdict = check_status_file(path, max_age, max_rtf)
    message = verdict.message
    return verdict.ok, message if message.startswith(str(path)) else f"{path}: {message}"


def check_wyoming(uri: str, status_path: str, timeout: float = 10.0) -> tuple[bool, str]:
    """Connect like a satellite, ask `describe`, expect a mic `info`; then the status file's
    clients, frames and last error. (Connecting starts the microphone for that moment.)"""
    import socket
    import time
    from urllib.parse import urlparse

    from plainsight.health import read_status

    try:
        from wyoming.event import read_event, write_event
        from wyoming.info import Describe, Info
    except ImportError:
        return False, "the wyoming package is missing: pip install 'plainsight[wyoming]'"
    parts = urlparse(uri)
    if parts.scheme != "tcp" or not parts.hostname or not parts.port:
        return False, f"{uri}: expected tcp://HOST:PORT"
    try:
        with socket.create_connection((parts.hostname, parts.port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            stream = sock.makefile("rwb")
            write_event(Describe().event(), stream)
            stream.flush()
            info, deadline = None, time.monotonic() + timeout
            while info is None and time.monotonic() < deadline:
                event = read_event(stream)
                if event is None:
                    break
                if Info.is_type(event.type):
                    info = Info.from_event(event)
    except OSError as exc:
        return False, f"{uri}: not listening ({exc})"
    if info is None or not info.mic:
        return False, f"{uri}: listening, but no mic info in answer to describe"
    fmt = info.mic[0].mic_format
    detail = f"{uri} listening, mic {info.mic[0].name} {fmt.rate} Hz/{8 * fmt.width}-bit/"
    detail += f"{fmt.channels} ch"
    try:
        status = read_status(status_path)
    except ValueError as exc:
        return False, f"{detail}; {exc}"
    error = status.get("last_error")
    detail += (
        f"; {status.get('clients')} client(s), {status.get('frames')} frames, "
        f"{status.get('failed_hops')} failed hops, last error: {error or 'none'}"
    )
    return not error, detail


# ----- command ----------------------------------------------------------------------------------
def run(args) -> int:
    config: dict[str, str] = {}
    config_note = None
    if Path(args.config).is_file():
        config = read_config(args.config)
    else:
        config_note = f"{args.config} not found: using options and defaults"
    for key in ("PLAINSIGHT_CAPTURE_DEVICE", "PLAINSIGHT_STATUS_FILE", "PLAINSIGHT_STREAM_ARGS"):
        if key in os.environ and key not in config:
            config[key] = os.environ[key]
    device = args.device or config.get("PLAINSIGHT_CAPTURE_DEVICE")
    status_path = args.status_file or config.get("PLAINSIGHT_STATUS_FILE") or DEFAULT_STATUS_FILE

    results = []

    def record(name: str, func, *func_args) -> None:
        if name in args.skip:
            results.append({"check": name, "result": "SKIP", "detail": "skipped (--skip)"})
        else:
            try:
                ok, detail = func(*func_args)
            except Exception as exc:  # noqa: BLE001 - every failure becomes one FAIL line
                ok, detail = False, f"{type(exc).__name__}: {' '.join(str(exc).split())}"
            results.append({"check": name, "result": "PASS" if ok else "FAIL", "detail": detail})
        if not args.json:
            last = results[-1]
            print(f"{last['result']}  {name:9s} {last['detail']}", flush=True)

    if config_note and not args.json:
        print(f"note: {config_note}")
    try:
        settings = stream_settings(config)
    except ValueError as exc:
        settings = None
        results.append({"check": "config", "result": "FAIL", "detail": str(exc)})
        if not args.json:
            print(f"FAIL  config    {exc}")
    record("alsa", check_alsa, device)
    record("backend", check_backend)
    if settings is not None:
        record("models", check_models, settings.model)
        record("headroom", check_headroom, settings, args.seconds, args.max_rtf)
    record("status", check_status, status_path, args.max_age, args.max_rtf)
    wyoming_uri = args.wyoming_uri
    if not wyoming_uri and config.get("PLAINSIGHT_SINK") == "wyoming":
        host = config.get("PLAINSIGHT_WYOMING_HOST") or "127.0.0.1"
        wyoming_uri = f"tcp://{host}:{config.get('PLAINSIGHT_WYOMING_PORT') or 10700}"
    if wyoming_uri:
        record("wyoming", check_wyoming, wyoming_uri, status_path)
    failed = [r["check"] for r in results if r["result"] == "FAIL"]
    if args.json:
        print(json.dumps({"ok": not failed, "results": results}, indent=1))
    else:
        print(f"doctor: {'FAIL (' + ', '.join(failed) + ')' if failed else 'all checks passed'}")
    return 1 if failed else 0
