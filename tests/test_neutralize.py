"""Issue 12: the `neutralize` privacy tier (plainsight.neutralize and its wiring).

Synthetic audio only: a harmonic complex with a known F0 contour under a fixed formant
envelope, so the tracker, the pitch compression, the loudness and tilt compression and the
stream contracts can be checked against numbers known in advance.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from plainsight.neutralize import (
    Geometry,
    Neutralizer,
    analyse,
    frame_features,
    measure_reference,
    neutralize,
    prosody_stats,
)
from test_runtime_toymodel import build_toy_model

RATE = 16000


def formant_gain(freq: np.ndarray) -> np.ndarray:
    """A fixed vowel-like spectral envelope (three formants), so formants do not move."""
    peaks = ((700, 250, 1.0), (1800, 350, 0.6), (2800, 450, 0.35))
    return sum(a * np.exp(-(((freq - f) / w) ** 2)) for f, w, a in peaks) + 0.04


def voiced(f0: np.ndarray, rate: int = RATE, high_gain: np.ndarray | None = None) -> np.ndarray:
    """Harmonic complex following the per-sample F0 `f0`, formant-shaped, peak 0.3.
    `high_gain` (per sample) scales the harmonics above 2 kHz (vocal effort)."""
    phase = 2 * np.pi * np.cumsum(f0) / rate
    out = np.zeros(len(f0))
    for k in range(1, int(rate / 2 / f0.min())):
        fk = k * f0
        amp = np.where(fk < 0.45 * rate, formant_gain(fk), 0.0) / np.sqrt(k)
        if high_gain is not None:
            amp = amp * np.where(fk >= 2000, high_gain, 1.0)
        out += amp * np.sin(k * phase)
    return 0.3 * out / np.abs(out).max()


def vibrato(seconds: float = 2.0, centre: float = 150.0, depth: float = 0.15, rate: int = RATE):
    """F0 = centre * exp(depth * sin(2 pi 1.5 t)): about +-2.6 semitones."""
    t = np.arange(int(seconds * rate)) / rate
    return centre * np.exp(depth * np.sin(2 * np.pi * 1.5 * t))


def glide(seconds: float = 2.0, start: float = 110.0, stop: float = 220.0, rate: int = RATE):
    t = np.arange(int(seconds * rate)) / rate
    return start * (stop / start) ** (t / t[-1])


def tracked_f0(audio: np.ndarray, rate: int = RATE) -> np.ndarray:
    """F0 (Hz) per 10 ms frame, NaN where unvoiced; 100 ms trimmed at each edge."""
    period, _, _ = frame_features(audio, Geometry(rate))
    f0 = np.where(period > 0, rate / np.where(period > 0, period, 1.0), np.nan)
    return f0[10:-10]


# ----- the tracker --------------------------------------------------------------------------
@pytest.mark.parametrize("contour", [vibrato, glide], ids=["vibrato", "glide"])
def test_yin_tracks_a_known_f0(contour):
    f0 = contour()
    est = tracked_f0(voiced(f0))
    truth = f0[:: Geometry(RATE).hop][: len(est) + 20][10:-10]
    assert np.mean(np.isfinite(est)) > 0.95, "voiced audio must be tracked as voiced"
    error = np.abs(est / truth - 1)[np.isfinite(est)]
    assert np.percentile(error, 95) < 0.02 and error.max() < 0.05, error.max()


def test_silence_and_noise_are_unvoiced():
    geo = Geometry(RATE)
    frames = np.zeros((3, geo.frame))
    frames[1] = 1e-4 * np.random.default_rng(0).standard_normal(geo.frame)  # -80 dBFS
    frames[2] = 0.1 * np.random.default_rng(1).standard_normal(geo.frame)  # loud white noise
    period, level, _ = analyse(frames, geo)
    assert np.all(period == 0), period
    assert level[0] < -100


# ----- pitch ---------------------------------------------------------------------------------
def test_strength_zero_is_identity():
    audio = voiced(vibrato())
    assert np.abs(neutralize(audio, 0.0, rate=RATE) - audio).max() < 1e-9


@pytest.mark.parametrize("contour", [vibrato, glide], ids=["vibrato", "glide"])
def test_strength_compresses_the_pitch_contour_and_keeps_the_median(contour):
    audio = voiced(contour())
    before = np.log(tracked_f0(audio))
    std0, med0 = np.nanstd(before), np.nanmedian(before)
    for strength, most in ((0.5, 0.6), (1.0, 0.2)):
        after = np.log(tracked_f0(neutralize(audio, strength, rate=RATE)))
        assert np.mean(np.isfinite(after)) > 0.9
        assert np.nanstd(after) < most * std0, (strength, np.nanstd(after), std0)
        assert abs(np.nanmedian(after) - med0) < np.log(1.03), "the median pitch stays"


@pytest.mark.parametrize("signal", ["vibrato", "glide"])
def test_grains_sit_on_pulses(signal):
    """A grain centred between two pulses puts two half pulses into an output period, which
    reads an octave down (0.2-1 % of these frames before the peak snap); none now."""
    audio = voiced(vibrato(6.0)) if signal == "vibrato" else voiced(glide(3.0))
    for strength in (0.75, 1.0):
        after = np.log(tracked_f0(neutralize(audio, strength, rate=RATE)))
        octave_errors = np.abs(after - np.nanmedian(after)) > 0.5 * np.log(2)
        assert not octave_errors.any(), (strength, np.flatnonzero(octave_errors))


def test_formants_stay_where_they_were():
    """PSOLA keeps the spectral envelope: the long-term spectrum peak stays near 700 Hz."""
    audio = voiced(vibrato())
    out = neutralize(audio, 1.0, rate=RATE)
    for signal in (audio, out):
        spectrum = np.abs(np.fft.rfft(signal * np.hanning(len(signal)))) ** 2
        freqs = np.fft.rfftfreq(len(signal), 1 / RATE)
        smooth = np.convolve(spectrum, np.ones(801) / 801, mode="same")  # 400 Hz wide
        assert 550 < freqs[np.argmax(smooth)] < 850


# ----- loudness and tilt ---------------------------------------------------------------------
def segment_means(values: np.ndarray, segment_frames: int, skip: int = 8) -> np.ndarray:
    """Mean of a per-frame value over each segment's middle (edges skipped: smoothing)."""
    count = len(values) // segment_frames
    return np.array(
        [
            values[i * segment_frames + skip : (i + 1) * segment_frames - skip].mean()
            for i in range(count)
        ]
    )


def swing(values: np.ndarray, segment_frames: int) -> float:
    means = segment_means(values, segment_frames)[1:-1]
    return float(abs(means[0::2].mean() - means[1::2].mean()))


@pytest.mark.parametrize("strength", [0.5, 0.75])
def test_loudness_swings_shrink_by_strength(strength):
    seg = 0.3  # s: loud and quiet segments alternate, 12 dB apart
    f0 = vibrato(3.0, depth=0.02)
    t = np.arange(len(f0)) / RATE
    gain = np.where((t // seg) % 2 == 0, 1.0, 10 ** (-12 / 20))
    audio = voiced(f0) * gain
    geo = Geometry(RATE)
    frames = int(seg / 0.01)
    before = swing(frame_features(audio, geo)[1], frames)
    after = swing(frame_features(neutralize(audio, strength, rate=RATE), geo)[1], frames)
    assert 11.0 < before < 13.0
    expected = before * (1 - strength)
    assert expected - 1.5 < after < expected + 2.0, (before, after)


def test_spectral_tilt_alternation_shrinks():
    seg = 0.3  # s: the band above 2 kHz alternates +6 / -6 dB
    f0 = vibrato(3.0, depth=0.02)
    t = np.arange(len(f0)) / RATE
    high = np.where((t // seg) % 2 == 0, 2.0, 0.5)
    audio = voiced(f0, high_gain=high)
    geo = Geometry(RATE)
    frames = int(seg / 0.01)
    before = swing(frame_features(audio, geo)[2], frames)
    after = swing(frame_features(neutralize(audio, 0.75, rate=RATE), geo)[2], frames)
    assert before > 9.0
    assert after < 0.45 * before, (before, after)


# ----- edges ---------------------------------------------------------------------------------
@pytest.mark.parametrize("length", [1, 2, 17, 159, 161, 1601, 16001])
def test_length_is_kept(length):
    audio = 0.1 * np.sin(np.arange(length) * 0.07)
    assert neutralize(audio, rate=RATE).shape == (length,)
    stereo = np.stack([audio, -audio], axis=1)
    assert neutralize(stereo, rate=44100).shape == (length, 2)


def test_silence_stays_silent():
    assert not np.any(neutralize(np.zeros(16000), 1.0, rate=RATE))
    engine = Neutralizer(RATE, 1.0)
    assert not np.any(engine.process(np.zeros(5000)))


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_audio_is_refused(bad):
    audio = np.zeros(4000)
    audio[100] = bad
    with pytest.raises(ValueError, match="NaN or Inf"):
        neutralize(audio, rate=RATE)
    with pytest.raises(ValueError, match="NaN or Inf"):
        Neutralizer(RATE).process(audio)


@pytest.mark.parametrize("strength", [-0.1, 1.5, float("nan"), float("inf")])
def test_bad_strength_is_refused(strength):
    with pytest.raises(ValueError, match="strength"):
        neutralize(np.zeros(100), strength, rate=RATE)


def test_inverted_channel_does_not_cancel_the_analysis():
    """Channels mixed with aligned signs: a phase-inverted copy must still be neutralised."""
    mono = voiced(vibrato())
    stereo = np.stack([mono, -mono], axis=1)
    out = neutralize(stereo, 1.0, rate=RATE)
    assert np.allclose(out[:, 0], -out[:, 1])
    assert np.nanstd(np.log(tracked_f0(out[:, 0]))) < 0.2 * np.nanstd(np.log(tracked_f0(mono)))


# ----- the stream form -----------------------------------------------------------------------
def stream_chunks(audio: np.ndarray, cuts, strength: float = 0.75, reference=None):
    engine = Neutralizer(RATE, strength, reference=reference)
    edges = sorted({0, len(audio), *(c for c in cuts if 0 < c < len(audio))})
    pieces = [engine.process(audio[a:b]) for a, b in zip(edges[:-1], edges[1:], strict=True)]
    return np.concatenate(pieces), engine


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.integers(0, 24000), max_size=12))
def test_stream_output_does_not_depend_on_chunking(cuts):
    audio = voiced(vibrato(1.5)) * np.linspace(0.3, 1.0, 24000)
    whole, _ = stream_chunks(audio, [])
    chunked, _ = stream_chunks(audio, cuts)
    assert len(chunked) == len(audio)
    assert np.allclose(chunked, whole, atol=1e-12)


def test_stream_is_causal():
    audio = voiced(vibrato(1.5))
    other = audio.copy()
    change = 13000
    other[change:] = np.random.default_rng(0).standard_normal(len(audio) - change) * 0.3
    a, _ = stream_chunks(audio, [4000, 8000, 12000])
    b, _ = stream_chunks(other, [4000, 8000, 12000])
    assert np.array_equal(a[:change], b[:change])
    assert not np.array_equal(a[change:], b[change:])


def test_stream_equals_the_file_form_delayed():
    audio = voiced(glide(1.5))
    reference = measure_reference(audio, RATE)
    out, engine = stream_chunks(audio, [5000, 5001, 9000], reference=reference)
    delay = engine.delay
    assert delay == int(0.14 * RATE)  # what --help and README state
    assert not np.any(out[:delay])
    file_form = neutralize(audio, 0.75, rate=RATE, reference=reference)
    assert np.allclose(out[delay:], file_form[:-delay], atol=1e-12)


def test_stream_medians_span_utterances():
    """On a device the running medians remember earlier speech: a higher-pitched utterance
    after a calm one is pulled toward the calm median, not toward its own."""
    import math

    calm = voiced(vibrato(6.0, centre=150.0, depth=0.05))
    excited = voiced(vibrato(2.0, centre=200.0, depth=0.05))
    out, engine = stream_chunks(np.concatenate([calm, excited]), [5000, 50000, 97000])
    tail = out[len(calm) + engine.delay + 3200 :]  # the excited utterance, once settled
    f0 = math.exp(measure_reference(tail, RATE).log_f0)
    assert abs(f0 - 150.0 * (200.0 / 150.0) ** 0.25) < 6.0, f0


# ----- wiring: Masker, stream, CLI ----------------------------------------------------------
@pytest.fixture(scope="module")
def toy_dir(tmp_path_factory):
    return build_toy_model(tmp_path_factory.mktemp("toy") / "toy")


def test_masker_mask_tier_never_runs_the_stage(toy_dir, monkeypatch):
    from plainsight import neutralize as stage
    from plainsight.masker import Masker

    audio = voiced(vibrato()).astype(np.float32)
    expected = Masker(model=toy_dir, backend="onnx").mask(audio, RATE)

    def refuse(*args, **kwargs):
        raise AssertionError("the mask tier must not neutralize")

    monkeypatch.setattr(stage.Neutralizer, "__init__", refuse)
    masker = Masker(model=toy_dir, backend="onnx", privacy="mask")
    assert np.array_equal(masker.mask(audio, RATE), expected)
    assert "privacy" not in masker.settings()  # mask-tier settings (cache keys) unchanged


def test_masker_neutralize_tier(toy_dir):
    from plainsight.masker import Masker

    audio = voiced(vibrato(4.0)).astype(np.float32)
    masker = Masker(model=toy_dir, backend="onnx", privacy="neutralize", neutralize_strength=1)
    assert masker.settings()["privacy"] == "neutralize"
    out = masker.mask(audio, RATE)
    assert out.shape == audio.shape
    neutral = neutralize(audio, 1.0, rate=RATE)
    assert 0 < np.abs(out - neutral).max() < 0.02, "the mask goes on top of the neutralised audio"
    spread = prosody_stats(audio, RATE)["f0_iqr_semitones"]
    assert prosody_stats(out, RATE)["f0_iqr_semitones"] < 0.3 * spread
    with pytest.raises(ValueError, match="privacy"):
        Masker(model=toy_dir, backend="onnx", privacy="bogus")
    with pytest.raises(ValueError, match="strength"):
        Masker(model=toy_dir, backend="onnx", privacy="neutralize", neutralize_strength=2)
    with pytest.raises(ValueError, match="only apply"):
        Masker(model=toy_dir, backend="onnx", neutralize_strength=0.5)


def test_a_given_reference_moves_the_medians(toy_dir):
    """A speaker-level (or fixed) reference: the clip's median F0 and tilt move toward it."""
    import math

    from plainsight.masker import Masker
    from plainsight.neutralize import Reference

    audio = voiced(vibrato(3.0, centre=150.0, depth=0.05)).astype(np.float32)
    own = measure_reference(audio, RATE)
    target = Reference(log_f0=math.log(125.0), level_db=own.level_db, tilt_db=own.tilt_db - 6)
    tier = {"privacy": "neutralize", "neutralize_strength": 0.75, "neutralize_reference": target}
    masker = Masker(model=toy_dir, backend="onnx", **tier)
    assert masker.settings()["neutralize_reference"]["log_f0"] == math.log(125.0)
    for out in (masker.mask(audio, RATE), neutralize(audio, 0.75, rate=RATE, reference=target)):
        moved = measure_reference(out, RATE)
        f0 = math.exp(moved.log_f0)
        assert abs(f0 - 150.0 * (125.0 / 150.0) ** 0.75) < 4.0, f0
        assert moved.tilt_db < own.tilt_db - 2.5


def test_block_engine_reads_neutralized_audio_in_one_pass(toy_dir):
    """Several segments (the toy model's are 3.2 s), 44.1 kHz, an inverted channel: the
    BlockMasker reads never fall behind the neutralised cache (no re-made prefix), and what
    it reads is the file form's neutralised audio."""
    from plainsight.blockmask import ArraySource, BlockMasker
    from plainsight.masker import Masker

    rate = 44100
    mono = voiced(vibrato(9.0, rate=rate), rate=rate).astype(np.float32)
    stereo = np.stack([mono, -0.5 * mono], axis=1)
    masker = Masker(model=toy_dir, backend="onnx", privacy="neutralize")
    engine = BlockMasker(masker, ArraySource(stereo, rate))
    seen = np.concatenate([x for _, x, _ in engine.blocks()])
    assert engine.source.restarts == 0
    assert len(engine.segments) > 2
    expected = neutralize(stereo, masker.neutralize_strength, rate=rate)
    assert np.abs(seen - expected).max() < 1e-6  # float32 storage


def test_stream_processor_neutralize_tier(toy_dir):
    from plainsight.masker import Masker
    from plainsight.stream import StreamProcessor, to_pcm

    masker = Masker(model=toy_dir, backend="onnx", privacy="neutralize")
    pcm = to_pcm(voiced(vibrato(2.0)))
    outs = []
    for cuts in ([], [999, 5000, 17777]):
        proc = StreamProcessor(masker, RATE, 100.0)
        edges = sorted({0, len(pcm), *cuts})
        pieces = [proc.push(pcm[a:b]) for a, b in zip(edges[:-1], edges[1:], strict=True)]
        out = np.concatenate([p for piece in pieces for p in piece] + [proc.flush()])
        assert len(out) == len(pcm)
        outs.append(out)
    assert np.array_equal(outs[0], outs[1])
    assert proc.latency_samples == proc.hop + int(0.14 * RATE)
    # every hop went out neither raw nor merely neutralised: the mask is on top
    neutral = to_pcm(Neutralizer(RATE, masker.neutralize_strength).process(pcm / 32768.0))
    for start in range(0, len(pcm), proc.hop):
        part = slice(start, start + proc.hop)
        if np.any(neutral[part]):
            assert not np.array_equal(outs[0][part], neutral[part])
            assert not np.array_equal(outs[0][part], pcm[part])


def test_stream_neutralize_failure_fails_closed(toy_dir, monkeypatch):
    from plainsight import neutralize as stage
    from plainsight.masker import Masker
    from plainsight.stream import to_pcm
    from test_fail_closed_stream import run_serve

    calls = {"n": 0}
    original = stage.Neutralizer.process

    def flaky(self, chunk):
        calls["n"] += 1
        if calls["n"] >= 3:
            raise RuntimeError("neutralize broke")
        return original(self, chunk)

    monkeypatch.setattr(stage.Neutralizer, "process", flaky)
    data = to_pcm(voiced(vibrato(1.0))).tobytes()

    def make():
        return Masker(model=toy_dir, backend="onnx", privacy="neutralize")

    rc, out = run_serve(make, data, hop_ms=100.0, on_error="exit")
    assert rc == 3 and len(out) == 2 * 2 * 1600  # two hops, then nothing
    calls["n"] = 0
    rc, out = run_serve(make, data, hop_ms=100.0, on_error="silence")
    assert rc == 0 and len(out) == len(data)
    assert not np.any(np.frombuffer(out, "<i2")[2 * 1600 :]), "silence, never raw"


def run_cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "plainsight.cli", *args], capture_output=True, text=True
    )


def test_cli_mask_privacy_neutralize(toy_dir, tmp_path):
    src = tmp_path / "in.wav"
    audio = voiced(vibrato(6.0)).astype(np.float32)  # two toy segments: the cache is used
    sf.write(src, audio, RATE, subtype="FLOAT")
    out = tmp_path / "out.wav"
    proc = run_cli("mask", str(src), str(out), "--model", str(toy_dir), "--json",
                   "--privacy", "neutralize", "--neutralize-strength", "1")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    record = json.loads(proc.stdout)
    assert record["privacy"] == "neutralize" and record["neutralize_strength"] == 1.0
    written, _ = sf.read(out, dtype="float32")
    assert written.shape == audio.shape
    from plainsight.masker import Masker

    masker = Masker(model=toy_dir, backend="onnx", privacy="neutralize", neutralize_strength=1)
    assert np.array_equal(written, masker.mask(audio, RATE)), "file == in-memory"
    before = prosody_stats(audio, RATE)["f0_iqr_semitones"]  # robust: a few octave errors
    assert prosody_stats(written, RATE)["f0_iqr_semitones"] < 0.3 * before


def test_cli_mask_tier_is_unchanged(toy_dir, tmp_path):
    src = tmp_path / "in.wav"
    sf.write(src, voiced(vibrato(2.0)), RATE, subtype="PCM_16")
    plain, tier = tmp_path / "plain.wav", tmp_path / "tier.wav"
    assert run_cli("mask", str(src), str(plain), "--model", str(toy_dir)).returncode == 0
    proc = run_cli("mask", str(src), str(tier), "--model", str(toy_dir), "--privacy", "mask")
    assert proc.returncode == 0, proc.stderr
    assert plain.read_bytes() == tier.read_bytes()


@pytest.mark.parametrize("command", ["mask", "stream"])
@pytest.mark.parametrize(
    "option",
    [["--privacy", "bogus"], ["--neutralize-strength", "1.5"], ["--neutralize-strength", "nan"]],
    ids=lambda o: " ".join(o),
)
def test_bad_privacy_options_are_parse_errors(command, option, capsys):
    from plainsight.cli import build_parser

    files = ["in.wav", "out.wav"] if command == "mask" else []
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args([command, *files, "--privacy", "neutralize", *option])
    assert exc.value.code == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith(f"plainsight {command}: error: argument {option[0]}"), last


def test_strength_without_the_tier_is_one_line(toy_dir, tmp_path):
    src = tmp_path / "in.wav"
    sf.write(src, voiced(vibrato(1.0)), RATE)
    proc = run_cli("mask", str(src), str(tmp_path / "o.wav"), "--neutralize-strength", "0.5")
    assert proc.returncode != 0
    assert proc.stderr.strip().splitlines() == [
        "plainsight mask: error: --neutralize-strength needs --privacy neutralize"
    ]
    assert not (tmp_path / "o.wav").exists()


def test_stream_help_states_the_latency():
    proc = run_cli("stream", "--help")
    assert "140 ms" in " ".join(proc.stdout.split())


def test_neutralize_runs_without_torch():
    script = (
        "import sys; sys.modules['torch'] = None\n"
        "import numpy as np\n"
        "from plainsight.neutralize import neutralize, Neutralizer\n"
        "x = 0.1 * np.sin(np.arange(8000) * 2 * np.pi * 150 / 16000)\n"
        "assert neutralize(x, rate=16000).shape == x.shape\n"
        "assert Neutralizer(16000).process(x).shape == x.shape\n"
        "print('ok')\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"


# ----- real speech (corpus) ------------------------------------------------------------------
STAT_KEYS = (
    "f0_std_semitones",
    "f0_iqr_semitones",
    "level_std_db",
    "level_std_200ms_db",
    "tilt_std_db",
)


def corpus_clips(limit: int = 20):
    """The first `limit` EmoDB test-speaker clips (03, 08) in class-balanced order."""
    import os

    data = os.environ.get("PLAINSIGHT_DATA")
    if not data:
        pytest.skip("PLAINSIGHT_DATA not set: this test reads EmoDB test-speaker clips")
    from plainsight.evaluate.pipeline import test_clips

    return test_clips(data, "emodb", limit)


def prosody_table(clips, strengths=(0.0, 0.5, 0.75, 1.0)) -> dict:
    """Per strength: mean over clips of each prosody statistic, and of |median F0 change|."""
    table = {}
    for strength in strengths:
        rows, shifts = [], []
        for clip in clips:
            before = prosody_stats(clip.audio, RATE)
            after = prosody_stats(neutralize(clip.audio, strength, rate=RATE), RATE)
            rows.append([after[k] for k in STAT_KEYS])
            shifts.append(abs(np.log2(after["f0_median_hz"] / before["f0_median_hz"])) * 12)
        table[strength] = dict(zip(STAT_KEYS, np.nanmean(rows, axis=0), strict=True))
        table[strength]["median_f0_shift_semitones"] = float(np.mean(shifts))
    return table


@pytest.mark.corpus
def test_real_speech_prosody_is_flattened():
    """20 EmoDB test-speaker clips: the default strength cuts the F0 spread and the level
    spread, keeps the median F0; strength 0 is the identity."""
    from plainsight.neutralize import DEFAULT_STRENGTH

    clips = corpus_clips(20)
    table = prosody_table(clips, (0.0, DEFAULT_STRENGTH))
    clean, neutral = table[0.0], table[DEFAULT_STRENGTH]
    assert neutral["f0_iqr_semitones"] < 0.5 * clean["f0_iqr_semitones"], table
    assert neutral["level_std_200ms_db"] < 0.85 * clean["level_std_200ms_db"], table
    assert neutral["median_f0_shift_semitones"] < 0.5, table
    assert clean["median_f0_shift_semitones"] == 0.0


if __name__ == "__main__":  # python tests/test_neutralize.py [clips] [--wer N]: the report's table
    import argparse
    import time

    parser = argparse.ArgumentParser()
    parser.add_argument("clips", type=int, nargs="?", default=20)
    parser.add_argument("--wer", type=int, default=0, help="Whisper WER on the first N clips")
    args = parser.parse_args()
    clips = corpus_clips(args.clips)
    seconds = sum(len(c.audio) for c in clips) / RATE
    start = time.process_time()
    table = prosody_table(clips)
    print(f"{len(clips)} EmoDB test-speaker clips ({seconds:.1f} s); means over clips")
    print("strength | " + " | ".join(STAT_KEYS) + " | median F0 shift (semitones)")
    for strength, row in table.items():
        values = [row[k] for k in STAT_KEYS] + [row["median_f0_shift_semitones"]]
        print(f"{strength:g} | " + " | ".join(f"{v:.2f}" for v in values))
    try:
        from pystoi import stoi
    except ImportError:
        stoi = None
    if stoi is not None:  # intelligibility against the clean clip (extra [eval])
        for strength in (0.5, 0.75, 1.0):
            scores = [stoi(c.audio, neutralize(c.audio, strength, rate=RATE), RATE) for c in clips]
            print(f"STOI neutralize {strength:g}: median {np.median(scores):.3f}, "
                  f"min {np.min(scores):.3f}")  # fmt: skip
    if args.wer:
        from plainsight.evaluate.asr import Transcriber, wer
        from plainsight.masker import Masker

        subset = clips[: args.wer]
        whisper = Transcriber()
        refs = [c.reference for c in subset]
        conditions = {"clean": lambda a: a}
        for strength in (0.5, 0.75, 1.0):
            name = f"neutralize {strength:g}"
            conditions[name] = lambda a, s=strength: neutralize(a, s, rate=RATE)
        masker = Masker(privacy="neutralize")
        conditions["neutralize 0.75 + mask (default tier)"] = lambda a: masker.mask(a, RATE)
        plain = Masker()
        conditions["mask only"] = lambda a: plain.mask(a, RATE)
        for name, run in conditions.items():
            hyps = [
                whisper.transcribe(run(c.audio.astype(np.float32)).astype(np.float32), "de")
                for c in subset
            ]
            print(f"WER {name}: {100 * wer(refs, hyps):.1f} % on {len(subset)} clips")
