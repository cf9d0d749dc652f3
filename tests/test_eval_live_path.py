"""Issue 10, the live path: `evaluate --path stream` and `--codec` (fast, no corpora).

The stream path must score exactly what `plainsight stream` sends for the same PCM; the
codec round trip must be a real lossy encode that keeps length and rate, at the requested
bitrate (measured).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pytest
from plainsight.bench import synthetic_speechlike
from plainsight.evaluate import codec as codec_mod
from test_runtime_toymodel import TOY_CLASSES, build_toy_model

RATE = 16000
TOY_HOP_MS = 100.0  # the toy model's window is 200 ms, shorter than the default hop


def speech(seconds: float, seed: int) -> np.ndarray:
    return synthetic_speechlike(seconds, RATE, seed)


@pytest.mark.parametrize("spec", ["opus:24", "opus:16", "mp3:32"])
def test_codec_round_trip_is_a_real_encode_at_the_requested_bitrate(spec):
    clips = [speech(2.5, seed) for seed in range(3)]
    codec = codec_mod.calibrate(codec_mod.parse_codec(spec), clips, RATE)
    assert 0.0 <= codec.level <= 1.0
    audio = clips[0]
    encoded = codec_mod.encode(codec.kind, audio, RATE, codec.level)
    pcm_bytes = to_pcm_bytes(audio)
    assert encoded[:64] != pcm_bytes[:64] and len(encoded) < len(pcm_bytes) / 4
    decoded, size = codec_mod.round_trip(codec.kind, audio, RATE, codec.level)
    assert size == len(encoded)
    assert decoded.shape == audio.shape and decoded.dtype == np.float32
    assert not np.allclose(decoded, audio, atol=1e-3)  # lossy: the audio changed
    assert np.corrcoef(decoded, audio)[0, 1] > 0.9  # ... but it is still the same audio
    heard, bitrate = codec_mod.apply(codec, clips, RATE)
    assert [len(h) for h in heard] == [len(c) for c in clips]
    assert abs(bitrate["kbps"] - codec.kbps) <= 0.1 * codec.kbps, bitrate
    assert bitrate["bytes"] * 8 / bitrate["seconds"] / 1000 == pytest.approx(bitrate["kbps"])


def to_pcm_bytes(audio: np.ndarray) -> bytes:
    from plainsight.stream import to_pcm

    return to_pcm(audio).tobytes()


def test_codec_none_passes_audio_through():
    clips = [speech(1.0, 0)]
    heard, bitrate = codec_mod.apply(codec_mod.parse_codec("none"), clips, RATE)
    assert heard[0] is clips[0] and bitrate["kbps"] is None


@pytest.mark.parametrize("text", ["opus", "flac:32", "opus:abc", "opus:2", "mp3:999", "none,none"])
def test_bad_codec_is_refused(text):
    with pytest.raises(codec_mod.CodecError):
        codec_mod.parse_codecs(text)


@pytest.mark.parametrize(
    "options,message",
    [
        (["--codec", "aac:24"], "opus:KBPS"),
        (["--codec", "none,opus:24", "--asr-codecs", "mp3:32"], "not among --codec"),
    ],
)
def test_bad_codec_on_the_cli_is_one_line(options, message, tmp_path, capsys, monkeypatch):
    pytest.importorskip("jiwer", reason="extra [eval] not installed (jiwer)")
    from plainsight.cli import main

    (tmp_path / "emodb").mkdir()
    monkeypatch.chdir(tmp_path)
    rc = main(["evaluate", "--corpus", "emodb", "--data", str(tmp_path), *options])
    assert rc == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert not (tmp_path / "eval-out").exists()


# ----- the stream path on a toy model ----------------------------------------------------------
def toy_clips(count: int = 6):
    from plainsight import corpora
    from plainsight.evaluate.pipeline import Clip

    clips = []
    for i in range(count):
        label = TOY_CLASSES[i % len(TOY_CLASSES)]
        utt = corpora.Utterance(Path(f"toy{i}.wav"), label, "s1", "t", "toy")
        clips.append(Clip(utt, speech(0.9 + 0.13 * i, seed=10 + i), "toy"))
    return clips


TOY_MASKER = {"backend": "onnx", "threads": 1, "method": "ifgsm", "steps": 4, "eps": 0.02}


def served(model_dir, pcm: np.ndarray) -> np.ndarray:
    """What `plainsight stream` itself writes for this PCM (its serve loop, real fds)."""
    from plainsight.masker import Masker
    from plainsight.stream import serve

    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp, "in.pcm"), Path(tmp, "out.pcm")
        src.write_bytes(pcm.tobytes())
        with open(src, "rb") as fin, open(dst, "wb") as fout:
            rc = serve(
                lambda: Masker(model=model_dir, objective="neutral", **TOY_MASKER),
                RATE,
                TOY_HOP_MS,
                fd_in=fin.fileno(),
                fd_out=fout.fileno(),
                read_size=3000,
            )
        assert rc == 0
        return np.frombuffer(dst.read_bytes(), "<i2")


def test_stream_path_scores_what_the_stream_cli_sends(tmp_path):
    from plainsight.evaluate.run import EvalConfig, evaluate, json_ready, stream_clips
    from plainsight.masker import Masker
    from plainsight.stream import SCALE, to_pcm

    model_dir = build_toy_model(tmp_path / "toy")
    clips = toy_clips()
    masker_kwargs = {"model": str(model_dir), "objective": "neutral", **TOY_MASKER}
    masker = Masker(**masker_kwargs)
    streamed = stream_clips(masker, clips, TOY_HOP_MS)
    for clip, out in zip(clips, streamed.audios, strict=True):
        device = served(model_dir, to_pcm(clip.audio))
        np.testing.assert_array_equal(to_pcm(out), device)  # sample for sample
        assert len(out) == len(clip.audio)
        delta = out - to_pcm(clip.audio) / SCALE
        assert np.abs(delta).max() <= 0.02 + 1.5 / SCALE
        assert np.abs(delta).max() > 0.005  # it really perturbed

    cfg = EvalConfig(
        corpus="toy",
        data="",
        masker=masker_kwargs,
        asr=False,
        curves=False,
        progress=False,
        path="stream",
        hop_ms=TOY_HOP_MS,
        codecs="none,opus:24",
        clips=clips,
    )
    result = json_ready(evaluate(cfg))
    assert result["path"] == "stream" and result["lengths_equal"] is True
    assert result["stream"]["hop_ms"] == TOY_HOP_MS
    assert 0 < result["rtf"]
    masked = result["whitebox"]["masked"]["toy"]
    clean = result["whitebox"]["clean"]["toy"]
    neutral = TOY_CLASSES.index("neutral")
    # Toward neutral: more clips are called neutral after masking than before.
    called_neutral = {
        k: np.sum(r["confusion"], axis=0)[neutral]
        for k, r in (("clean", clean), ("masked", masked))
    }
    assert called_neutral["masked"] > called_neutral["clean"], called_neutral
    rows = result["codec_curve"]
    assert [r["codec"] for r in rows] == ["none", "opus:24"]
    assert rows[0]["kbps"]["masked"] is None
    assert all(abs(v - 24) <= 2.4 for v in rows[1]["kbps"].values()), rows[1]["kbps"]
    assert result["codec"]["codec"] == "none"
    # Quality is measured before the codec: the masked SNR equals the stream output's.
    snrs = result["quality"]["masked"]["per_clip_snr_db"]
    clean_pcm = [to_pcm(c.audio) / SCALE for c in clips]
    expected = [
        10 * np.log10(np.sum(c**2) / np.sum((o - c) ** 2))
        for c, o in zip(clean_pcm, streamed.audios, strict=True)
    ]
    np.testing.assert_allclose(snrs, expected, atol=0.05)


def test_stream_path_aligns_a_look_ahead_with_the_input(tmp_path):
    """The gain stage holds back 16 ms: the stream path scores the output shifted back by
    it (what was sent against what was said), the never-sent end as silence."""
    from plainsight.evaluate.run import stream_clips
    from plainsight.masker import Masker
    from plainsight.stream import SCALE, StreamProcessor, to_pcm

    masker = Masker(model=str(build_toy_model(tmp_path / "toy")), gain_db=3.0, **TOY_MASKER)
    clips = toy_clips(2)
    for clip, out in zip(clips, stream_clips(masker, clips, TOY_HOP_MS).audios, strict=True):
        proc = StreamProcessor(masker, RATE, TOY_HOP_MS)
        pcm = to_pcm(clip.audio)
        sent = np.concatenate([*proc.push(pcm), proc.flush()])
        delay = proc.latency_samples - proc.hop
        assert delay == 256 and len(out) == len(pcm)
        np.testing.assert_array_equal(to_pcm(out[:-delay]), sent[delay:])
        assert not np.any(out[-delay:])
        aligned = 10 * np.log10(np.sum(pcm.astype(float) ** 2) / np.sum((out * SCALE - pcm) ** 2))
        assert aligned > 3.0  # the gain stage's change, not a 16 ms misalignment


def test_mask_and_stream_paths_differ_and_both_keep_length(tmp_path):
    from plainsight.evaluate.run import EvalConfig, evaluate

    model_dir = build_toy_model(tmp_path / "toy")
    base = dict(
        corpus="toy",
        data="",
        masker={"model": str(model_dir), "objective": "neutral", **TOY_MASKER},
        asr=False,
        curves=False,
        progress=False,
        hop_ms=TOY_HOP_MS,
        clips=toy_clips(3),
        codecs="mp3:32",
    )
    results = {path: evaluate(EvalConfig(path=path, **base)) for path in ("mask", "stream")}
    for result in results.values():
        assert result["lengths_equal"] is True
        assert result["codec"]["codec"] == "mp3:32"
        assert result["codec"]["bitrate"]["masked"]["kbps"] > 0
    snr = {p: r["quality"]["masked"]["per_clip_snr_db"] for p, r in results.items()}
    assert snr["mask"] != snr["stream"]


def test_summary_names_the_path_and_codec():
    from plainsight.evaluate.report import condition_name

    assert condition_name({"corpus": "emodb"}) == "emodb"
    stream = {"corpus": "emodb", "path": "stream", "codec": {"codec": "opus:24"}}
    assert condition_name(stream) == "emodb stream + opus:24"
