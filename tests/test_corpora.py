"""Corpus readers: both naming schemes, audio loading, speaker-independent splits."""

from __future__ import annotations

import os

import numpy as np
import pytest
import soundfile as sf
from plainsight import corpora as C


def test_emodb_names():
    assert C.parse_emodb_name("03a01Fa.wav") == ("03", "a01", "happiness")
    assert C.parse_emodb_name("16b10Wb.wav") == ("16", "b10", "anger")
    for bad in ("03a01Xa.wav", "3a01Fa.wav", "03a01Fa.flac", "03c01Fa.wav"):
        with pytest.raises(C.CorpusError):
            C.parse_emodb_name(bad)


def test_ravdess_names():
    assert C.parse_ravdess_name("03-01-05-01-02-01-12.flac") == ("12", "02", "angry")
    assert C.parse_ravdess_name("03-01-02-02-01-02-24.wav") == ("24", "01", "calm")
    for bad in (
        "03-01-09-01-02-01-12.flac",  # unknown emotion
        "01-01-05-01-02-01-12.flac",  # video modality
        "03-02-05-01-02-01-12.flac",  # song channel
        "03-01-05-01-02-01.flac",
    ):
        with pytest.raises(C.CorpusError):
            C.parse_ravdess_name(bad)


def _tone(n, rate):
    return (0.2 * np.sin(2 * np.pi * 220 * np.arange(n) / rate)).astype(np.float32)


def test_list_and_load_synthetic_corpora(tmp_path):
    (tmp_path / "emodb" / "wav").mkdir(parents=True)
    sf.write(tmp_path / "emodb/wav/03a01Fa.wav", _tone(16000, 16000), 16000)
    sf.write(tmp_path / "emodb/wav/15b02Nc.wav", _tone(8000, 16000), 16000)
    actor = tmp_path / "ravdess" / "Actor_19"
    actor.mkdir(parents=True)
    stereo = np.stack([_tone(48000, 48000), _tone(48000, 48000)], axis=1)
    sf.write(actor / "03-01-02-01-01-01-19.flac", stereo, 48000)

    emodb = C.list_corpus(tmp_path, "emodb")
    assert [(u.speaker, u.label, u.text_id) for u in emodb] == [
        ("03", "happiness", "a01"),
        ("15", "neutral", "b02"),
    ]
    assert [C.split_of(u) for u in emodb] == ["test", "val"]
    ravdess = C.list_corpus(tmp_path, "ravdess")
    assert [(u.speaker, u.label, C.split_of(u)) for u in ravdess] == [("19", "calm", "test")]
    audio = C.load_audio(ravdess[0].path)
    assert audio.dtype == np.float32 and audio.ndim == 1 and abs(len(audio) - 16000) <= 1


def test_unreadable_and_missing(tmp_path):
    (tmp_path / "emodb" / "wav").mkdir(parents=True)
    bad = tmp_path / "emodb/wav/03a01Fa.wav"
    bad.write_bytes(b"RIFF not really a wav")
    with pytest.raises(C.CorpusError, match="cannot read"):
        C.load_audio(bad)
    with pytest.raises(C.CorpusError):
        C.list_corpus(tmp_path, "ravdess")
    with pytest.raises(C.CorpusError):
        C.list_corpus(tmp_path, "nope")


def _fake_utts(corpus, speakers):
    return [
        C.Utterance(C.Path(f"{s}-{i}"), "x", s, "t", corpus) for s in speakers for i in range(3)
    ]


@pytest.mark.parametrize(
    "corpus, speakers",
    [
        ("emodb", ["03", "08", "09", "10", "11", "12", "13", "14", "15", "16"]),
        ("ravdess", [f"{a:02d}" for a in range(1, 25)]),
    ],
)
def test_splits_are_speaker_disjoint(corpus, speakers):
    parts = C.split_corpus(_fake_utts(corpus, speakers))
    by_split = {k: {u.speaker for u in v} for k, v in parts.items()}
    assert by_split["test"] == set(C.SPLITS[corpus]["test"])
    assert by_split["val"] == set(C.SPLITS[corpus]["val"])
    assert not (by_split["train"] & by_split["test"]) and not (by_split["train"] & by_split["val"])
    assert by_split["train"] | by_split["val"] | by_split["test"] == set(speakers)


def test_leave_one_speaker_out():
    utts = _fake_utts("emodb", ["03", "08", "10"])
    folds = list(C.leave_one_speaker_out(utts))
    assert [s for s, _, _ in folds] == ["03", "08", "10"]
    for speaker, train, test in folds:
        assert {u.speaker for u in test} == {speaker}
        assert speaker not in {u.speaker for u in train}
        assert len(train) + len(test) == len(utts)


@pytest.mark.corpus
def test_real_corpora_counts_and_splits():
    data = os.environ.get("PLAINSIGHT_DATA")
    if not data:
        pytest.skip("PLAINSIGHT_DATA not set: the corpus test needs EmoDB and RAVDESS")
    expected = {"emodb": (535, 10, 7), "ravdess": (1440, 24, 8)}
    for corpus, (n_files, n_speakers, n_classes) in expected.items():
        utts = C.list_corpus(data, corpus)
        assert len(utts) == n_files
        assert len({u.speaker for u in utts}) == n_speakers
        assert sorted({u.label for u in utts}) == sorted(C.CLASSES[corpus])
        assert len(C.CLASSES[corpus]) == n_classes
        parts = C.split_corpus(utts)
        assert all(parts[k] for k in ("train", "val", "test"))
        audio = C.load_audio(utts[0].path)
        assert audio.dtype == np.float32 and len(audio) > 16000 // 2
