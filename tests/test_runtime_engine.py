"""The masking engine on the bundled model: effect, budget, shapes, hashes, backends, no torch."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from plainsight.backends import installed_backends
from plainsight.manifest import ManifestError, load_model_dir, resolve_models
from plainsight.masker import STRENGTHS, Masker
from test_runtime_toymodel import bundled_model_dir

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "speech.wav"


@pytest.fixture(scope="module")
def model_dir():
    return bundled_model_dir()


@pytest.fixture(scope="module")
def masker(model_dir):
    return Masker(model=model_dir, backend="onnx")


@pytest.fixture(scope="module")
def speech():
    audio, rate = sf.read(EXAMPLE, dtype="float32")
    assert rate == 16000
    return audio


def test_default_resolves_to_bundled_emodb(model_dir):
    (spec,) = resolve_models("default")
    assert spec.directory == model_dir.resolve() and spec.corpus == "emodb"
    assert spec.window_samples == 32000 and "neutral" in spec.classes


def test_masking_changes_the_prediction(masker, speech):
    out = masker.mask(speech, 16000)
    before, after = masker.classify(speech, 16000), masker.classify(out, 16000)
    k = before["classes"].index(before["label"])
    assert after["overall"][k] < before["overall"][k] - 0.2, (before, after)
    per_window = [
        a["label"] != b["label"] for a, b in zip(after["windows"], before["windows"], strict=True)
    ]
    assert sum(per_window) >= len(per_window) / 2
    own_before, own_after = _own_class_prob(masker, speech, out)
    assert own_after < own_before - 0.2


def test_targeted_neutral_moves_towards_neutral(model_dir, speech):
    masker = Masker(model=model_dir, backend="onnx", objective="neutral", steps=4, snr_db=25)
    k = masker.classes.index("neutral")
    before = masker.classify(speech, 16000)["overall"][k]
    after = masker.classify(masker.mask(speech, 16000), 16000)["overall"][k]
    assert after > before + 0.1


@pytest.mark.parametrize("method", ["fgsm", "ifgsm", "mifgsm"])
def test_linf_budget_respected(model_dir, speech, method):
    masker = Masker(model=model_dir, backend="onnx", method=method, steps=3, eps=0.004)
    out = masker.mask(speech, 16000)
    delta = np.abs(out - speech)
    assert delta.max() <= 0.004 + 1e-6
    assert delta.max() > 0.003  # the budget is used, not ignored


def test_snr_budget_scales_with_level(model_dir, speech):
    masker = Masker(model=model_dir, backend="onnx", snr_db=30)
    loud = masker.mask(speech, 16000) - speech
    quiet = masker.mask(speech * 0.1, 16000) - speech * 0.1
    ratio = np.abs(quiet).max() / np.abs(loud).max()
    assert 0.08 < ratio < 0.12
    snr = 10 * np.log10(
        np.sum(speech.astype(np.float64) ** 2) / np.sum(loud.astype(np.float64) ** 2)
    )
    assert 27 < snr < 40  # sign steps fill the L-inf box, so noise RMS is close to eps


def test_envelope_keeps_pauses_quieter(model_dir, speech):
    gap = np.random.default_rng(0).normal(0, 1e-3, 16000).astype(np.float32)  # room noise
    audio = np.concatenate([speech[:24000], gap, speech[24000:40000]])
    flat = Masker(model=model_dir, backend="onnx", snr_db=30, envelope=False).mask(audio, 16000)
    shaped = Masker(model=model_dir, backend="onnx", snr_db=30, envelope=True).mask(audio, 16000)
    pause = slice(24000 + 2000, 24000 + 14000)
    flat_pause = np.abs(flat[pause] - audio[pause]).max()
    assert flat_pause > 0
    assert np.abs(shaped[pause] - audio[pause]).max() < 0.1 * flat_pause


@pytest.mark.parametrize("rate,channels", [(44100, 2), (8000, 1), (48000, 3)])
def test_shape_rate_channels_preserved(masker, speech, rate, channels):
    from plainsight.resample import resample

    mono = resample(speech[:40000], 16000, rate)
    audio = np.stack([mono * (0.5 + 0.2 * c) for c in range(channels)], axis=1)
    out = masker.mask(audio, rate)
    assert out.shape == audio.shape and out.dtype == audio.dtype
    assert np.abs(out).max() <= 1.0
    delta = out - audio
    assert np.allclose(delta[:, 0], delta[:, -1], atol=1e-6)  # same perturbation per channel
    assert 0 < np.abs(delta).max() < 0.1


def test_clipped_to_full_scale(masker):
    loud = np.clip(np.sin(np.arange(20000) / 5.0) * 1.5, -1, 1).astype(np.float32)
    out = masker.mask(loud, 16000)
    assert np.abs(out).max() <= 1.0


def test_short_and_long_audio(masker, speech):
    short = masker.mask(speech[:100], 16000)
    assert short.shape == (100,)
    long = np.tile(speech, 4)[: 32000 * 5 + 7]
    assert masker.mask(long, 16000).shape == long.shape


def _own_class_prob(masker, clean, masked, member=0) -> tuple[float, float]:
    """Mean over windows of the probability of each window's clean prediction."""
    before = masker.classify(clean, 16000, member=member)["windows"]
    after = masker.classify(masked, 16000, member=member)["windows"]
    ks = [int(np.argmax(w["probs"])) for w in before]
    return (
        float(np.mean([w["probs"][k] for w, k in zip(before, ks, strict=True)])),
        float(np.mean([w["probs"][k] for w, k in zip(after, ks, strict=True)])),
    )


def test_ensemble_sums_both_models(model_dir, speech):
    ravdess = bundled_model_dir("ravdess")
    # on the grid it is read on (classify's): the summed objective is under test, not framing
    ensemble = Masker(model=[model_dir, ravdess], backend="onnx", overlap=True, grid_shift_ms=0)
    assert [s.corpus for s in ensemble.specs] == ["emodb", "ravdess"]
    out = ensemble.mask(speech, 16000)
    for i in range(2):  # the untargeted objective works on each model's own predictions
        before, after = _own_class_prob(ensemble, speech, out, member=i)
        assert after < before - 0.15, (i, before, after)


def test_sha256_mismatch_refused(model_dir, tmp_path):
    copy = tmp_path / "model"
    shutil.copytree(model_dir, copy)
    blob = bytearray((copy / "grad.onnx").read_bytes())
    blob[len(blob) // 2] ^= 0xFF  # same size, different content
    (copy / "grad.onnx").write_bytes(bytes(blob))
    with pytest.raises(ManifestError, match="sha256"):
        Masker(model=copy, backend="onnx")


def test_manifest_errors_are_clear(model_dir, tmp_path):
    with pytest.raises(ManifestError, match="no manifest.json"):
        load_model_dir(tmp_path)
    copy = tmp_path / "model"
    shutil.copytree(model_dir, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["format"] = 99
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ManifestError, match="format"):
        load_model_dir(copy)
    with pytest.raises(ManifestError, match="not 'default'"):
        resolve_models("no-such-model")


def test_a_hop_graph_layout_that_does_not_fit_the_window_is_refused(model_dir, tmp_path):
    copy = tmp_path / "model"
    shutil.copytree(model_dir, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    assert load_model_dir(copy).hop_layout()["hop_samples"] == 4000  # the bundled layout
    manifest["graphs"]["hop"]["tail_start"] += 160  # tail no longer ends at the window's end
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ManifestError, match="bad hop graph layout"):
        Masker(model=copy, backend="onnx")
    manifest["graphs"]["hop"]["tail_start"] -= 160
    manifest["graphs"]["hop_crop"]["crop_start"] = manifest["graphs"]["hop_crop"]["past_frames"]
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ManifestError, match="bad hop_crop graph layout"):
        Masker(model=copy, backend="onnx")


def test_strength_presets_and_argument_checks(model_dir):
    assert set(STRENGTHS) == {"low", "medium", "high", "perceptual", "rebalance"}
    assert Masker(model=model_dir, strength="rebalance").gain_db == 3.0
    for strength in STRENGTHS:
        assert Masker(model=model_dir, strength=strength).steps >= 1
    with pytest.raises(ValueError, match="not both"):
        Masker(model=model_dir, eps=0.01, snr_db=30)
    with pytest.raises(ValueError, match="not a class"):
        Masker(model=model_dir, objective="boredom-of-the-ages")
    with pytest.raises(ValueError, match="NaN"):
        Masker(model=model_dir).mask(np.array([0.0, np.nan], np.float32), 16000)


@pytest.mark.skipif("tflite" not in installed_backends(), reason="no TFLite interpreter installed")
def test_onnx_and_tflite_agree(model_dir, speech):
    clip = speech[:32000]
    onnx = Masker(model=model_dir, backend="onnx", method="fgsm", eps=0.002)
    tflite = Masker(model=model_dir, backend="tflite", method="fgsm", eps=0.002)
    p_onnx = onnx.classify(clip, 16000)["overall"]
    p_tflite = tflite.classify(clip, 16000)["overall"]
    np.testing.assert_allclose(p_onnx, p_tflite, atol=1e-3)
    d_onnx, d_tflite = onnx.mask(clip, 16000) - clip, tflite.mask(clip, 16000) - clip
    agree = np.mean(np.sign(d_onnx) == np.sign(d_tflite))
    assert agree > 0.98  # FGSM signs: only near-zero gradients may flip


def test_masking_works_with_torch_unimportable(model_dir, tmp_path):
    out = tmp_path / "out.wav"
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "from plainsight.cli import main\n"
        f"rc = main(['mask', {str(EXAMPLE)!r}, {str(out)!r}, '--model', {str(model_dir)!r}])\n"
        "assert 'torch' not in [m for m in sys.modules if sys.modules[m] is not None]\n"
        "sys.exit(rc)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert sf.info(out).frames == sf.info(EXAMPLE).frames


def test_no_backend_installed_says_what_to_install(model_dir):
    code = (
        "import sys\n"
        "for name in ('onnxruntime', 'ai_edge_litert', 'tflite_runtime'):\n"
        "    sys.modules[name] = None\n"
        "from plainsight.masker import Masker\n"
        "for backend in ('auto', 'onnx', 'tflite'):\n"
        "    try:\n"
        f"        Masker(model={str(model_dir)!r}, backend=backend)\n"
        "    except ImportError as exc:\n"
        "        print(exc)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 3, proc.stderr
    assert "pip install onnxruntime" in lines[0] and "pip install onnxruntime" in lines[1]
    assert "pip install ai-edge-litert" in lines[2]


def test_masking_holds_for_windows_not_aligned_with_ours(masker, speech):
    """A listener's windows rarely start where ours do (the per-step grid shift)."""
    out = masker.mask(speech, 16000)
    for shift in (8000, 16000, 24000):
        pad = np.zeros(shift, np.float32)
        before, after = _own_class_prob(
            masker, np.concatenate([pad, speech]), np.concatenate([pad, out])
        )
        assert after < before - 0.15, (shift, before, after)


def test_masking_holds_for_a_listener_framed_a_few_ms_later(masker, speech):
    """10 steps on one fixed grid left this clip's own class at 0.38 for a listener whose
    frames start 10 ms later (0.03 on ours); the shifted grid keeps every framing near 0.1."""
    out = masker.mask(speech, 16000)
    for cut in (80, 160, 320, 8000):  # 5, 10, 20 ms, 0.5 s
        before, after = _own_class_prob(masker, speech[cut:], out[cut:])
        assert after < 0.2 and after < before - 0.5, (cut, before, after)


def test_grid_offsets_start_on_our_grid_and_cover_the_range():
    from plainsight.masker import grid_offsets

    offsets = grid_offsets(20, 320)
    assert offsets[0] == 0 and np.abs(offsets).max() <= 320
    assert len(set(offsets.tolist())) == 20  # no step repeats another's grid
    assert offsets.min() < -240 and offsets.max() > 240  # both ends are reached
    assert np.array_equal(offsets, grid_offsets(20, 320))  # deterministic
    assert not grid_offsets(5, 0).any()


def test_stream_steps_and_grid_shift_settings(model_dir):
    preset = STRENGTHS["medium"]
    default = Masker(model=model_dir, backend="onnx")
    assert (default.steps, default.stream_steps) == (preset["steps"], preset["stream_steps"])
    assert default.grid_shift == round(preset["grid_shift_ms"] * 16)
    explicit = Masker(model=model_dir, backend="onnx", steps=7)  # given steps apply to both
    assert (explicit.steps, explicit.stream_steps) == (7, 7)
    both = Masker(model=model_dir, backend="onnx", steps=7, stream_steps=3, grid_shift_ms=0)
    assert (both.stream_steps, both.grid_shift) == (3, 0)
    assert both.settings()["stream_steps"] == 3 and both.settings()["grid_shift_ms"] == 0
    for bad in ({"stream_steps": 0}, {"grid_shift_ms": -1}, {"grid_shift_ms": float("nan")}):
        with pytest.raises(ValueError):
            Masker(model=model_dir, backend="onnx", **bad)


def test_stream_hop_takes_stream_steps(model_dir, speech):
    from plainsight.stream import StreamProcessor, to_pcm

    calls = []
    masker = Masker(
        model=model_dir,
        backend="onnx",
        steps=6,
        stream_steps=2,
        progress=lambda d, n: calls.append(n),
    )
    StreamProcessor(masker, 16000, 250.0).process(to_pcm(speech[:4000]))
    assert calls and set(calls) == {2}
    calls.clear()
    masker.mask(speech[:40000], 16000)
    assert calls and set(calls) == {6}
