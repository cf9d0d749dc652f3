"""`plainsight doctor` and the status-file judge (plainsight.health)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest
from plainsight.health import check_status_file, judge

PLAINSIGHT = Path(sys.executable).parent / "plainsight"


def doctor(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(PLAINSIGHT), "doctor", "--config", "/nonexistent/plainsight.conf", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def lines(result) -> dict[str, str]:
    """check name -> PASS/FAIL/SKIP from doctor's output."""
    out = {}
    for line in result.stdout.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0] in ("PASS", "FAIL", "SKIP"):
            out[parts[1]] = parts[0]
    return out


def record(**fields) -> dict:
    now = datetime.now(timezone.utc)
    base = {
        "updated_at": now.isoformat(timespec="seconds"),
        "state": "running",
        "last_error": None,
        "rtf": 0.1,
        "samples_out": 16000,
        "uptime_s": 5.0,
    }
    return base | fields


def test_judge_fresh_stale_failed_and_slow():
    assert judge(record(), age_s=1.0).ok
    assert not judge(record(), age_s=60.0).ok
    assert not judge(record(state="failed", last_error="RuntimeError: boom"), age_s=1.0).ok
    assert not judge(record(last_error="x"), age_s=1.0).ok
    verdict = judge(record(rtf=0.9), age_s=1.0, max_rtf=0.5)
    assert not verdict.ok and "too slow" in verdict.message


def test_judge_fails_a_stream_whose_input_stalled():
    """A hung microphone: the filter is alive and its record fresh, but no audio has come
    in for a while (arecord delivers at the sample rate, so a gap is a fault)."""
    assert judge(record(input_idle_s=0.4), age_s=1.0).ok
    verdict = judge(record(input_idle_s=12.0), age_s=1.0)
    assert not verdict.ok and "no audio in" in verdict.message
    assert judge(record(), age_s=1.0).ok  # records without the field (wyoming) are not judged on it


def test_status_file_age_from_updated_at(tmp_path):
    path = tmp_path / "status.json"
    old = datetime.now(timezone.utc) - timedelta(minutes=5)
    path.write_text(json.dumps(record(updated_at=old.isoformat(timespec="seconds"))))
    verdict = check_status_file(path, max_age_s=10)
    assert not verdict.ok and "stale" in verdict.message
    path.write_text("{not json")
    assert not check_status_file(path).ok
    assert "no status file" in check_status_file(tmp_path / "missing.json").message


def test_doctor_passes_against_a_running_stream(tmp_path):
    """A real `plainsight stream` writing its status file; doctor judges it healthy."""
    status = tmp_path / "status.json"
    stream = subprocess.Popen(
        [str(PLAINSIGHT), "stream", "--status-file", str(status)],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    stop = threading.Event()

    def microphone():
        hop = np.zeros(4000, "<i2").tobytes()
        while not stop.is_set():
            stream.stdin.write(hop)
            stream.stdin.flush()
            time.sleep(0.25)

    feeder = threading.Thread(target=microphone, daemon=True)
    feeder.start()
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if status.exists() and '"running"' in status.read_text():
                break
            time.sleep(0.1)
        result = doctor("--skip", "alsa", "--status-file", str(status), "--seconds", "1")
    finally:
        stop.set()
        feeder.join(5)
        stream.stdin.close()
        stream.wait(30)
    assert result.returncode == 0, result.stdout + result.stderr
    checks = lines(result)
    assert checks == {
        "alsa": "SKIP",
        "backend": "PASS",
        "models": "PASS",
        "headroom": "PASS",
        "status": "PASS",
    }
    assert "all checks passed" in result.stdout
    # After EOF the stream says "stopped": no longer healthy.
    stopped = doctor("--skip", "alsa", "--skip", "headroom", "--status-file", str(status))
    assert stopped.returncode == 1 and lines(stopped)["status"] == "FAIL"


def test_doctor_fails_on_a_tampered_model_and_a_missing_device(tmp_path):
    from plainsight.manifest import resolve_models

    model = tmp_path / "model"
    shutil.copytree(resolve_models("default")[0].directory, model)
    graph = model / "grad.onnx"
    data = bytearray(graph.read_bytes())
    data[len(data) // 2] ^= 0xFF
    graph.write_bytes(bytes(data))
    config = tmp_path / "plainsight.conf"
    config.write_text(
        f"PLAINSIGHT_CAPTURE_DEVICE=plughw:CARD=NoSuchCard,DEV=0\n"
        f"PLAINSIGHT_STREAM_ARGS=--model {model}\n"
        f"PLAINSIGHT_STATUS_FILE={tmp_path / 'none.json'}\n"
    )
    result = subprocess.run(
        [str(PLAINSIGHT), "doctor", "--config", str(config), "--skip", "headroom"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1
    checks = lines(result)
    assert checks["models"] == "FAIL" and "sha256" in result.stdout
    assert checks["alsa"] == "FAIL" and "NoSuchCard" in result.stdout
    assert checks["status"] == "FAIL" and checks["backend"] == "PASS"


def test_doctor_headroom_limit_can_fail():
    result = doctor("--skip", "alsa", "--skip", "status", "--seconds", "1", "--max-rtf", "0.000001")
    assert result.returncode == 1 and lines(result)["headroom"] == "FAIL"
    assert "real-time factor" in result.stdout


def test_doctor_json_output():
    result = doctor("--skip", "alsa", "--skip", "status", "--skip", "headroom", "--json")
    data = json.loads(result.stdout)
    assert data["ok"] is True and result.returncode == 0
    assert [r["check"] for r in data["results"]] == [
        "alsa",
        "backend",
        "models",
        "headroom",
        "status",
    ]


@pytest.mark.skipif(not shutil.which("arecord"), reason="arecord missing (alsa-utils)")
def test_alsa_check_reports_cards_clearly():
    from plainsight.cmd_doctor import check_alsa

    ok, detail = check_alsa("plughw:CARD=NoSuchCard,DEV=0")
    assert not ok and "capture cards" in detail
    ok, detail = check_alsa(None)
    assert not ok and "no capture device configured" in detail


def test_alsa_check_fails_a_card_that_cannot_record(tmp_path, monkeypatch):
    """A Pi's HDMI card exists but has no capture device: arecord would fail every 2 s
    while doctor said PASS."""
    import plainsight.cmd_doctor as D

    asound = tmp_path / "asound"
    asound.mkdir()
    (asound / "cards").write_text(
        " 0 [vc4hdmi0       ]: vc4-hdmi - vc4-hdmi-0\n                      vc4-hdmi-0\n"
        " 2 [Device         ]: USB-Audio - USB PnP\n                      C-Media USB PnP\n"
    )  # card 1 was unplugged: numbers need not be contiguous
    (asound / "pcm").write_text(
        "00-00: MAI PCM i2s-hifi-0 : MAI PCM i2s-hifi-0 : playback 1\n"
        "02-00: USB Audio : USB Audio : playback 1 : capture 1\n"
    )
    monkeypatch.setattr(D, "ASOUND", asound)
    monkeypatch.setattr(D.shutil, "which", lambda name: "/usr/bin/" + name)
    listing = subprocess.CompletedProcess([], 0, stdout="default\nnull\n", stderr="")
    monkeypatch.setattr(D.subprocess, "run", lambda *a, **k: listing)
    ok, detail = D.check_alsa("plughw:CARD=vc4hdmi0,DEV=0")
    assert not ok and "cannot record" in detail and "Device" in detail, detail
    assert D.check_alsa("plughw:CARD=Device,DEV=0")[0]
    assert D.check_alsa("hw:2,0")[0] and not D.check_alsa("hw:0,0")[0]
    assert "not found" in D.check_alsa("hw:1,0")[1]


def test_wyoming_sink_pipeline_and_its_doctor_check(tmp_path):
    """device/plainsight-pipeline with PLAINSIGHT_SINK=wyoming runs `plainsight wyoming`;
    a client gets the masked stream, and doctor reports the service's health."""
    pytest.importorskip("wyoming", reason="the [wyoming] extra is not installed")
    import os

    from test_wyoming import free_port, listen, run, speechlike

    clip = tmp_path / "clip.raw"
    clip.write_bytes(speechlike(1.0))
    masked = subprocess.run(
        [str(PLAINSIGHT), "stream"], input=clip.read_bytes(), capture_output=True, timeout=120
    ).stdout
    port, status = free_port(), tmp_path / "status.json"
    settings = {
        "PLAINSIGHT_SINK": "wyoming",
        "PLAINSIGHT_WYOMING_PORT": str(port),
        "PLAINSIGHT_WYOMING_MIC_COMMAND": f"cat {clip}",
        "PLAINSIGHT_STATUS_FILE": str(status),
        "PLAINSIGHT_STREAM_ARGS": "",
    }
    config = tmp_path / "plainsight.conf"
    config.write_text("".join(f"{k}={v}\n" for k, v in settings.items()))
    pipeline = Path(__file__).resolve().parent.parent / "device" / "plainsight-pipeline"
    env = dict(os.environ, PLAINSIGHT_BIN=str(PLAINSIGHT), **settings)
    service = subprocess.Popen(
        [str(pipeline)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not status.exists():
            time.sleep(0.1)
        got = run(listen(port))
        check = ["--config", str(config), "--skip", "alsa", "--skip", "headroom", "--max-rtf", "50"]
        healthy = subprocess.run(
            [str(PLAINSIGHT), "doctor", *check], capture_output=True, text=True, timeout=120
        )
    finally:
        service.terminate()
        service.wait(30)
    assert bytes(got["audio"]) == masked and got["stop"] == 1
    assert healthy.returncode == 0, healthy.stdout + healthy.stderr
    assert lines(healthy)["wyoming"] == "PASS"
    assert f"tcp://127.0.0.1:{port} listening" in healthy.stdout and "frames" in healthy.stdout
    down = subprocess.run(
        [str(PLAINSIGHT), "doctor", *check], capture_output=True, text=True, timeout=120
    )
    assert down.returncode == 1 and lines(down)["wyoming"] == "FAIL"
    assert "not listening" in down.stdout
