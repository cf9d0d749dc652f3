"""Issue 11, options and models: budgets that cannot change a 16-bit sample, non-finite or
absurd options, manifests that do not match their graphs and `info --verify` all fail with
one line and a non-zero exit, never a traceback or an unmasked output."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
from plainsight.cli import build_parser, main
from test_runtime_toymodel import build_toy_model, bundled_model_dir

BAD_OPTIONS = [
    ["--mask-snr-db", "inf"],
    ["--mask-snr-db", "-inf"],
    ["--mask-snr-db", "nan"],
    ["--mask-snr-db", "120"],
    ["--mask-eps", "1e-9"],
    ["--mask-eps", "inf"],
    ["--mask-eps", "nan"],
    ["--mask-eps", "0"],
    ["--mask-eps", "2"],
    ["--threads", "0"],
    ["--threads", "-5"],
    ["--mask-steps", "100000000000"],
    ["--mask-steps", "0"],
]


@pytest.mark.parametrize("command", ["stream", "mask"])
@pytest.mark.parametrize("option", BAD_OPTIONS, ids=lambda o: " ".join(o))
def test_bad_option_is_a_parse_error(command, option, capsys):
    files = ["in.wav", "out.wav"] if command == "mask" else []
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args([command, *files, *option])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(f"plainsight {command}: error: argument {option[0]}"), err
    assert "Traceback" not in "\n".join(err)


def test_bench_threads_zero_is_a_parse_error(capsys):
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(["bench", "--threads", "0"])
    assert exc.value.code == 2


@pytest.mark.parametrize(
    "option", [["--hop-ms", "nan"], ["--hop-ms", "inf"], ["--hop-ms", "5"], ["--rate", "0"]]
)
def test_bad_stream_option_is_a_parse_error(option, capsys):
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(["stream", *option])
    assert exc.value.code == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith(f"plainsight stream: error: argument {option[0]}")


@pytest.mark.parametrize(
    "option", [["--mask-snr-db", "80"], ["--mask-eps", "3.1e-5"], ["--mask-steps", "1000"]]
)
def test_limits_themselves_are_accepted(option):
    args = build_parser().parse_args(["stream", *option])
    assert args.command == "stream"


def test_help_states_the_limits(capsys):
    from plainsight.masker import MAX_SNR_DB, MAX_STEPS

    with pytest.raises(SystemExit):
        build_parser().parse_args(["stream", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert f"at most {MAX_SNR_DB:g} dB" in text
    assert "1 LSB of 16-bit" in text
    assert f"at most {MAX_STEPS}" in text


def test_stream_cli_refuses_inf_budget_before_reading_audio():
    """`stream --mask-snr-db inf` used to forward the input unchanged with exit 0."""
    pcm = (np.sin(np.arange(8000) * 0.05) * 8000).astype("<i2").tobytes()
    for option in (["--mask-snr-db", "inf"], ["--mask-snr-db", "120"], ["--mask-eps", "1e-9"]):
        run = subprocess.run(
            [sys.executable, "-m", "plainsight.cli", "stream", *option],
            input=pcm,
            capture_output=True,
            timeout=60,
        )
        assert run.returncode == 2 and run.stdout == b"", option


@pytest.mark.parametrize(
    "kwargs",
    [
        {"snr_db": float("inf")},
        {"snr_db": float("nan")},
        {"snr_db": 120.0},
        {"eps": 1e-9},
        {"eps": float("inf")},
        {"eps": float("nan")},
        {"threads": 0},
        {"threads": -5},
        {"steps": 100_000_000_000},
    ],
    ids=str,
)
def test_masker_api_rejects_the_same_values(kwargs):
    from plainsight.masker import Masker

    with pytest.raises(ValueError):
        Masker(backend="onnx", **kwargs)


def test_masker_api_accepts_numpy_scalars():
    from plainsight.masker import Masker

    masker = Masker(backend="onnx", method="ifgsm", eps=np.float32(0.002), steps=np.int64(3))
    assert masker.steps == 3


# ----- manifests that do not match their graphs ---------------------------------------------
def tampered_copy(source, tmp_path, **changes):
    """A copy of a model directory whose manifest.json has `changes`; the graph files (and so
    their sha256 fields) are untouched, so the hash check passes."""
    directory = tmp_path / "tampered"
    shutil.copytree(source, directory)
    manifest = json.loads((directory / "manifest.json").read_text())
    manifest.update(changes)
    for fname, meta in manifest["files"].items():  # keep the hash check honest
        from plainsight.manifest import sha256_of

        assert meta["sha256"] == sha256_of(directory / fname)
    (directory / "manifest.json").write_text(json.dumps(manifest))
    return directory


def _classes(n):
    return [f"class{i}" for i in range(n)]


TAMPERINGS = {
    "3 classes": {"classes": _classes(3)},
    "20 classes": {"classes": _classes(20)},
    "window 16000": {"window_samples": 16000},
    "window Infinity": {"window_samples": float("inf")},
    "window 1e12": {"window_samples": 10**12},
    "window 2.5": {"window_samples": 32000.5},
    "rate NaN": {"sample_rate": float("nan")},
    "classes twice": {"classes": ["anger"] * 7},
}


@pytest.mark.parametrize("backend", ["onnx", "tflite"])
@pytest.mark.parametrize("name", list(TAMPERINGS))
def test_bundled_model_with_tampered_manifest_is_refused_in_one_line(name, backend, tmp_path):
    from plainsight.manifest import ManifestError
    from plainsight.masker import Masker

    directory = tampered_copy(bundled_model_dir(), tmp_path, **TAMPERINGS[name])
    with pytest.raises(ManifestError) as exc:
        Masker(model=directory, backend=backend)
    message = str(exc.value)
    assert "\n" not in message and str(directory / "manifest.json") in message


@pytest.mark.parametrize("name", ["20 classes", "window 16000", "window Infinity"])
def test_tampered_toy_model_stream_and_classify_cli(name, tmp_path):
    toy = build_toy_model(tmp_path / "toy")
    directory = tampered_copy(toy, tmp_path, **TAMPERINGS[name])
    pcm = (np.sin(np.arange(8000) * 0.05) * 8000).astype("<i2").tobytes()
    stream = subprocess.run(
        [
            sys.executable,
            "-m",
            "plainsight.cli",
            "stream",
            "--hop-ms",
            "100",
            "--model",
            str(directory),
        ],
        input=pcm,
        capture_output=True,
        timeout=60,
    )
    assert stream.returncode != 0 and stream.stdout == b""
    lines = stream.stderr.decode().strip().splitlines()
    assert len(lines) == 1 and str(directory / "manifest.json") in lines[0], lines

    import soundfile

    wav = tmp_path / "tone.wav"
    soundfile.write(wav, np.frombuffer(pcm, "<i2"), 16000, subtype="PCM_16")
    classify = subprocess.run(
        [sys.executable, "-m", "plainsight.cli", "classify", str(wav), "--model", str(directory)],
        capture_output=True,
        timeout=60,
    )
    assert classify.returncode != 0
    lines = classify.stderr.decode().strip().splitlines()
    assert len(lines) == 1 and "manifest.json" in lines[0], lines


def test_untampered_toy_model_still_loads(tmp_path):
    from plainsight.masker import Masker

    masker = Masker(model=build_toy_model(tmp_path / "toy"), backend="onnx")
    assert masker.window == 3200


# ----- info --verify ------------------------------------------------------------------------
def test_info_verify_exits_non_zero_on_a_sha256_mismatch(tmp_path, monkeypatch, capsys):
    import plainsight.manifest as manifest

    models = tmp_path / "models"
    shutil.copytree(bundled_model_dir().parent, models)
    assert main(["info", "--verify"]) == 0  # the real bundle verifies
    monkeypatch.setattr(manifest, "BUNDLED_DIR", models)
    assert main(["info", "--verify"]) == 0
    capsys.readouterr()
    grad = models / "emodb-compact" / "grad.onnx"
    blob = bytearray(grad.read_bytes())
    blob[-1] ^= 0xFF  # same size, different content
    grad.write_bytes(bytes(blob))
    assert main(["info"]) == 0  # without --verify nothing is hashed
    capsys.readouterr()
    assert main(["info", "--verify"]) == 1
    captured = capsys.readouterr()
    assert "MISMATCH" in captured.out
    assert "grad.onnx" in captured.err and "sha256" in captured.err
    assert main(["info", "--verify", "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    emodb = next(m for m in report["models"] if m["name"] == "emodb-compact")
    assert emodb["files"]["grad.onnx"]["verified"] is False


# ----- progress on long work -----------------------------------------------------------------
def test_masker_reports_progress_after_every_step(tmp_path):
    from plainsight.masker import Masker

    calls = []
    masker = Masker(
        model=build_toy_model(tmp_path / "toy"),
        backend="onnx",
        steps=5,
        eps=0.01,
        progress=lambda done, total: calls.append((done, total)),
    )
    masker.mask(np.random.default_rng(0).uniform(-0.3, 0.3, 8000).astype(np.float32), 16000)
    assert calls[:5] == [(1, 5), (2, 5), (3, 5), (4, 5), (5, 5)]
    assert len(calls) % 5 == 0


def test_info_verify_exits_non_zero_when_a_manifest_does_not_fit_its_graph(
    tmp_path, monkeypatch, capsys
):
    import plainsight.manifest as manifest

    models = tmp_path / "models"
    models.mkdir()
    tampered = tampered_copy(bundled_model_dir(), tmp_path, classes=_classes(20))
    shutil.move(str(tampered), models / "emodb-compact")
    monkeypatch.setattr(manifest, "BUNDLED_DIR", models)
    assert main(["info", "--verify"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err and all("manifest.json" in line and "classes" in line for line in err)
