"""`plainsight` CLI: mask/classify/info/bench, directories, resume, and every bad input kind."""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from plainsight import cli
from test_runtime_toymodel import bundled_model_dir

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "speech.wav"


def plainsight(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "plainsight.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module", autouse=True)
def _bundled():
    bundled_model_dir()


def speech(seconds: float = 2.5) -> np.ndarray:
    audio, _ = sf.read(EXAMPLE, dtype="float32")
    return audio[: int(seconds * 16000)]


def test_version_and_help():
    from plainsight import __version__

    out = plainsight("--version")
    assert out.returncode == 0 and __version__ in out.stdout
    top = plainsight("--help")
    assert top.returncode == 0
    for name in cli.COMMANDS:
        assert name in top.stdout
    for name in ("mask", "stream", "classify", "info", "bench"):
        sub = plainsight(name, "--help")
        assert sub.returncode == 0 and "usage: plainsight" in sub.stdout, sub.stderr
    mask_help = "".join(plainsight("mask", "--help").stdout.split())  # wrapping aside
    assert "--mask-eps" in mask_help
    # every preset says what it buys against unseen models (issue 9 §3)
    from plainsight.cli import STRENGTH_AGAINST_UNSEEN
    from plainsight.masker import STRENGTHS

    assert set(STRENGTH_AGAINST_UNSEEN) == set(STRENGTHS)
    for note in STRENGTH_AGAINST_UNSEEN.values():
        assert "".join(note.split()) in mask_help


def test_missing_command_module_is_reported(monkeypatch, capsys):
    monkeypatch.setitem(cli.COMMANDS, "later", ("plainsight.cmd_not_written_yet", "later"))
    assert cli.main(["later"]) == 2
    assert "not available" in capsys.readouterr().err


def test_mask_readme_example(tmp_path):
    out = tmp_path / "masked.wav"
    proc = plainsight("mask", str(EXAMPLE), str(out))
    assert proc.returncode == 0, proc.stderr
    assert "emotion before" in proc.stdout and "-> after" in proc.stdout
    a, b = sf.info(EXAMPLE), sf.info(out)
    assert (a.samplerate, a.channels, a.frames, a.subtype) == (
        b.samplerate,
        b.channels,
        b.frames,
        b.subtype,
    )


@pytest.mark.parametrize(
    "suffix,fmt,subtype,rate,channels",
    [(".flac", "FLAC", "PCM_24", 44100, 2), (".ogg", "OGG", "VORBIS", 22050, 1)],
)
def test_mask_keeps_format(tmp_path, suffix, fmt, subtype, rate, channels):
    from plainsight.resample import resample

    mono = resample(speech(2.0), 16000, rate)
    audio = np.stack([mono] * channels, axis=1) if channels > 1 else mono
    src = tmp_path / f"in{suffix}"
    sf.write(src, audio, rate, format=fmt, subtype=subtype)
    dst = tmp_path / f"out{suffix}"
    assert cli.main(["-q", "mask", str(src), str(dst)]) == 0
    info = sf.info(dst)
    assert (info.format, info.subtype, info.samplerate, info.channels) == (
        fmt,
        subtype,
        rate,
        channels,
    )
    assert info.frames == sf.info(src).frames


def test_mask_directory_recursive_json_and_resume(tmp_path, capsys):
    src = tmp_path / "in"
    (src / "a" / "b").mkdir(parents=True)
    for rel in ("one.wav", "a/two.wav", "a/b/three.flac"):
        sf.write(src / rel, speech(1.0), 16000)
    (src / "notes.txt").write_text("not audio, not an audio extension: ignored")
    dst = tmp_path / "out"
    assert cli.main(["mask", str(src), str(dst), "--json"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(lines) == 3
    for rec in lines:
        for key in ("before", "after", "snr_db", "seconds"):
            assert key in rec
        assert len(rec["before"]["overall"]) == len(rec["before"]["classes"])
    done = {p.relative_to(dst) for p in dst.rglob("*") if p.is_file()}
    assert done == {Path("one.wav"), Path("a/two.wav"), Path("a/b/three.flac")}
    stamp = (dst / "one.wav").stat().st_mtime_ns
    (dst / "a" / "two.wav").unlink()  # as if interrupted before this file
    assert cli.main(["mask", str(src), str(dst), "--json"]) == 0
    again = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [Path(r["output"]).name for r in again] == ["two.wav"]
    assert (dst / "one.wav").stat().st_mtime_ns == stamp


def _bad_inputs(tmp_path: Path) -> dict[str, Path]:
    good = tmp_path / "good.wav"
    sf.write(good, speech(1.0), 16000, subtype="PCM_16")
    bad = {}
    bad["corrupt"] = tmp_path / "corrupt.wav"
    blob = bytearray(good.read_bytes())
    blob[8:16] = b"XXXXXXXX"  # RIFF/WAVE magic destroyed
    bad["corrupt"].write_bytes(bytes(blob))
    bad["empty"] = tmp_path / "empty.wav"
    bad["empty"].write_bytes(b"")
    bad["non_audio"] = tmp_path / "text.wav"
    bad["non_audio"].write_text("hello, I am not audio\n" * 100)
    bad["nan"] = tmp_path / "nan.wav"
    audio = speech(1.0)
    audio[100] = np.nan
    sf.write(bad["nan"], audio, 16000, subtype="FLOAT")
    bad["truncated_wav"] = tmp_path / "truncated.wav"
    bad["truncated_wav"].write_bytes(good.read_bytes()[:20000])
    flac = tmp_path / "full.flac"
    sf.write(flac, speech(2.0), 16000)
    bad["truncated_flac"] = tmp_path / "truncated.flac"
    bad["truncated_flac"].write_bytes(flac.read_bytes()[: flac.stat().st_size // 2])
    ogg = tmp_path / "full.ogg"
    sf.write(ogg, speech(2.0), 16000, format="OGG", subtype="VORBIS")
    bad["truncated_ogg"] = tmp_path / "truncated.ogg"
    bad["truncated_ogg"].write_bytes(ogg.read_bytes()[: ogg.stat().st_size // 2])
    bad["no_samples"] = tmp_path / "zero.wav"
    sf.write(bad["no_samples"], np.zeros(0, np.float32), 16000)
    return bad


def test_every_bad_input_fails_cleanly(tmp_path):
    inputs = _bad_inputs(tmp_path)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    for kind, path in inputs.items():
        before = digest(path)
        out = out_dir / f"{kind}{path.suffix}"
        proc = plainsight("mask", str(path), str(out))
        assert proc.returncode != 0, kind
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and "error" in lines[0], (kind, proc.stderr)
        assert "Traceback" not in proc.stderr
        assert not out.exists(), kind
        assert digest(path) == before, kind
    assert list(out_dir.iterdir()) == []  # no temp files left either


def test_bad_file_in_directory_does_not_stop_the_rest(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    sf.write(src / "good.wav", speech(1.0), 16000)
    (src / "bad.wav").write_text("not audio")
    dst = tmp_path / "out"
    assert cli.main(["-q", "mask", str(src), str(dst)]) == 1
    assert sorted(p.name for p in dst.iterdir()) == ["good.wav"]


def test_output_side_error_in_directory_does_not_stop_the_rest(tmp_path, capsys):
    """An output path that cannot be made (a file where a folder must go) fails that file
    with one line; the other files are still masked."""
    src = tmp_path / "in"
    (src / "a").mkdir(parents=True)
    sf.write(src / "a" / "x.wav", speech(1.0), 16000)
    sf.write(src / "b.wav", speech(1.0), 16000)
    dst = tmp_path / "out"
    dst.mkdir()
    (dst / "a").write_text("a file where the folder a/ must go")
    assert cli.main(["-q", "mask", str(src), str(dst)]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and "a/x.wav" in err
    assert sorted(p.name for p in dst.iterdir()) == ["a", "b.wav"]


def test_folder_into_the_folder_that_holds_it(tmp_path):
    """OUT may contain IN (recordings/raw -> recordings): only an OUT inside IN is skipped
    when IN is walked, so that a re-run does not mask its own outputs."""
    src = tmp_path / "recordings" / "raw"
    src.mkdir(parents=True)
    sf.write(src / "x.wav", speech(1.0), 16000)
    dst = tmp_path / "recordings"
    assert cli.main(["-q", "mask", str(src), str(dst)]) == 0
    assert (dst / "x.wav").is_file() and (src / "x.wav").is_file()


def test_folder_onto_itself_is_refused(tmp_path):
    src = tmp_path / "recordings"
    src.mkdir()
    sf.write(src / "x.wav", speech(1.0), 16000)
    before = digest(src / "x.wav")
    proc = plainsight("mask", str(src), str(tmp_path / "." / "recordings"))
    assert proc.returncode != 0 and len(proc.stderr.strip().splitlines()) == 1
    assert "IN" in proc.stderr and digest(src / "x.wav") == before


def test_failed_file_leaves_no_new_folders(tmp_path):
    src = tmp_path / "in.wav"
    audio = speech(1.0)
    audio[8000] = np.nan  # found only once the samples are read, after the header checks
    sf.write(src, audio, 16000, subtype="FLOAT")
    out = tmp_path / "new" / "deeper" / "out.wav"
    proc = plainsight("mask", str(src), str(out))
    assert proc.returncode != 0
    assert not (tmp_path / "new").exists()


def test_refuses_to_overwrite_input(tmp_path):
    src = tmp_path / "in.wav"
    sf.write(src, speech(1.0), 16000)
    before = digest(src)
    proc = plainsight("mask", str(src), str(tmp_path / "." / "in.wav"))
    assert proc.returncode != 0 and "input" in proc.stderr
    assert digest(src) == before


def test_huge_input_refused(tmp_path, monkeypatch, capsys):
    import plainsight.audio

    monkeypatch.setattr(plainsight.audio, "MAX_SECONDS", 0.5)
    src = tmp_path / "long.wav"
    sf.write(src, speech(1.0), 16000)
    assert cli.main(["mask", str(src), str(tmp_path / "out.wav")]) != 0
    assert "too long" in capsys.readouterr().err
    assert not (tmp_path / "out.wav").exists()


def test_mask_never_writes_unmasked_when_model_broken(tmp_path):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(bundled_model_dir(), broken)
    (broken / "grad.onnx").write_bytes(b"not a model")
    out = tmp_path / "out.wav"
    proc = plainsight("mask", str(EXAMPLE), str(out), "--model", str(broken))
    assert proc.returncode != 0 and "sha256" in proc.stderr
    assert not out.exists()


def test_classify_json(tmp_path, capsys):
    assert cli.main(["classify", str(EXAMPLE), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["model"] == "emodb-compact"
    assert abs(sum(result["overall"]) - 1) < 1e-4
    assert len(result["windows"]) == 6  # 6.3 s: 2 s windows, hop 1 s, last at the end
    assert abs(result["windows"][-1]["end_s"] - 100580 / 16000) < 1e-3
    assert result["label"] in result["classes"]


def test_info_json(capsys):
    assert cli.main(["info", "--json", "--verify"]) == 0
    info = json.loads(capsys.readouterr().out)
    names = {m["name"] for m in info["models"]}
    assert {"emodb-compact", "ravdess-compact"} <= names
    assert "onnx" in info["backends"]
    for model in info["models"]:
        for meta in model["files"].values():
            assert len(meta["sha256"]) == 64 and meta["verified"] is True


def test_bench_reports_numbers():
    proc = plainsight("bench", "--json", "--backend", "onnx", "--seconds", "4")
    assert proc.returncode == 0, proc.stderr
    (result,) = json.loads(proc.stdout)["results"]
    for key in ("mask_rtf", "stream_rtf", "peak_rss_mb", "import_and_load_s"):
        assert result[key] > 0
    assert result["settings"]["steps"] >= 1


def test_bench_of_the_gain_stage_preset_times_both_paths():
    args = ("bench", "--backend", "onnx", "--seconds", "3", "--mask-strength", "rebalance")
    proc = plainsight(*args, "--json")
    assert proc.returncode == 0, proc.stderr
    (result,) = json.loads(proc.stdout)["results"]
    assert result["mask_rtf"] > 0 and result["stream_rtf"] > 0
    assert result["settings"]["gain_db"] == 3.0


def test_mask_flags_reach_the_engine(tmp_path, capsys):
    src = tmp_path / "in.wav"
    sf.write(src, speech(2.0), 16000, subtype="FLOAT")
    out = tmp_path / "out.wav"
    args = ["mask", str(src), str(out), "--json", "--mask-method", "fgsm", "--mask-eps", "0.003"]
    assert cli.main(args + ["--mask-target", "neutral", "--backend", "tflite"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert 0.0029 < record["linf"] <= 0.003 + 1e-6
    masked, _ = sf.read(out, dtype="float32")
    assert np.abs(masked - speech(2.0)).max() <= 0.003 + 1e-6
    with pytest.raises(SystemExit) as usage:  # argparse: the budgets exclude each other
        cli.main(["mask", str(src), str(out), "--mask-eps", "0.01", "--mask-snr-db", "30"])
    assert usage.value.code == 2


def test_grid_flags_reach_the_masker():
    parser = argparse.ArgumentParser()
    cli.add_engine_arguments(parser, masking=True)
    default = cli.masker_from_args(parser.parse_args([]))
    assert (default.overlap, default.grid_shift_ms, default.stream_steps) == (False, 20.0, 20)
    old = cli.masker_from_args(
        parser.parse_args(
            ["--mask-overlap", "--mask-grid-shift-ms", "0", "--mask-steps", "10"]
            + ["--mask-stream-steps", "4"]
        )
    )
    assert (old.overlap, old.grid_shift, old.steps, old.stream_steps) == (True, 0, 10, 4)
    assert old.hop == old.window // 2
    for bad in (["--mask-grid-shift-ms", "-5"], ["--mask-stream-steps", "0"]):
        with pytest.raises(SystemExit):
            parser.parse_args(bad)
