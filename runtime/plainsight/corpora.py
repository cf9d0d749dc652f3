"""Readers for the emotional speech corpora (EmoDB, RAVDESS) and their fixed splits.

Pure numpy/soundfile, so both training (export/) and evaluation can use them. The corpus
audio itself is never part of this project: code takes the corpus root as a path.

Splits are speaker-independent and fixed (see SPLITS); a random utterance split would put
the same speaker in training and test and inflate every figure.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from plainsight.resample import resample

SAMPLE_RATE = 16000


@dataclass(frozen=True)
class Utterance:
    path: Path
    label: str
    speaker: str
    text_id: str
    corpus: str


EMODB_LETTERS = {
    "W": "anger",
    "L": "boredom",
    "E": "disgust",
    "A": "fear",
    "F": "happiness",
    "T": "sadness",
    "N": "neutral",
}
EMODB_CLASSES = ["anger", "boredom", "disgust", "fear", "happiness", "sadness", "neutral"]
EMODB_TEXTS = {
    "a01": "Der Lappen liegt auf dem Eisschrank.",
    "a02": "Das will sie am Mittwoch abgeben.",
    "a04": "Heute abend könnte ich es ihm sagen.",
    "a05": "Das schwarze Stück Papier befindet sich da oben neben dem Holzstück.",
    "a07": "In sieben Stunden wird es soweit sein.",
    "b01": "Was sind denn das für Tüten, die da unter dem Tisch stehen?",
    "b02": "Sie haben es gerade hochgetragen und jetzt gehen sie wieder runter.",
    "b03": "An den Wochenenden bin ich jetzt immer nach Hause gefahren und habe Agnes besucht.",
    "b09": "Ich will das eben wegbringen und dann mit Karl was trinken gehen.",
    "b10": "Die wird auf dem Platz sein, wo wir sie immer hinlegen.",
}

# RAVDESS keeps all 8 emotions: calm is a distinct acted category with its own intensity levels.
RAVDESS_CODES = {
    "01": "neutral",
    "02": "calm",
    "03": "happy",
    "04": "sad",
    "05": "angry",
    "06": "fearful",
    "07": "disgust",
    "08": "surprised",
}
RAVDESS_CLASSES = list(RAVDESS_CODES.values())
RAVDESS_TEXTS = {"01": "Kids are talking by the door.", "02": "Dogs are sitting by the door."}

CLASSES = {"emodb": EMODB_CLASSES, "ravdess": RAVDESS_CLASSES}
TEXTS = {"emodb": EMODB_TEXTS, "ravdess": RAVDESS_TEXTS}
LANGUAGES = {"emodb": "de", "ravdess": "en"}

# Fixed speaker-independent splits: speakers not listed are training speakers.
SPLITS = {
    "emodb": {"test": ["03", "08"], "val": ["15"]},
    "ravdess": {
        "test": [f"{a:02d}" for a in range(19, 25)],
        "val": ["17", "18"],
    },
}

_EMODB_NAME = re.compile(r"^(\d{2})([a-b]\d{2})([WLEAFTN])([a-z])\.wav$")
_RAVDESS_NAME = re.compile(r"^(\d{2})-(\d{2})-(\d{2})-(\d{2})-(\d{2})-(\d{2})-(\d{2})\.(flac|wav)$")


class CorpusError(ValueError):
    """A corpus is missing, malformed, or holds an unreadable file."""


def parse_emodb_name(name: str) -> tuple[str, str, str]:
    """'03a01Fa.wav' -> (speaker '03', text 'a01', label 'happiness')."""
    m = _EMODB_NAME.match(name)
    if not m:
        raise CorpusError(f"not an EmoDB file name: {name!r}")
    return m.group(1), m.group(2), EMODB_LETTERS[m.group(3)]


def parse_ravdess_name(name: str) -> tuple[str, str, str]:
    """'03-01-05-01-02-01-12.flac' -> (actor '12', statement '02', label 'angry')."""
    m = _RAVDESS_NAME.match(name)
    if not m:
        raise CorpusError(f"not a RAVDESS file name: {name!r}")
    modality, channel, emotion, _intensity, statement, _rep, actor, _ext = m.groups()
    if modality != "03" or channel != "01":
        raise CorpusError(f"not a RAVDESS audio-only speech file: {name!r}")
    if emotion not in RAVDESS_CODES:
        raise CorpusError(f"unknown RAVDESS emotion code {emotion!r} in {name!r}")
    return actor, statement, RAVDESS_CODES[emotion]


def corpus_root(data_root: str | os.PathLike, corpus: str) -> Path:
    root = Path(data_root) / corpus
    if not root.is_dir():
        raise CorpusError(f"corpus folder not found: {root}")
    return root


def list_corpus(data_root: str | os.PathLike, corpus: str) -> list[Utterance]:
    """All utterances of a corpus, sorted by path. data_root holds emodb/ and ravdess/."""
    root = corpus_root(data_root, corpus)
    if corpus == "emodb":
        files, parse = sorted((root / "wav").glob("*.wav")), parse_emodb_name
    elif corpus == "ravdess":
        files = sorted(p for p in root.rglob("*") if p.suffix in (".flac", ".wav"))
        parse = parse_ravdess_name
    else:
        raise CorpusError(f"unknown corpus {corpus!r}; choose emodb or ravdess")
    if not files:
        raise CorpusError(f"no audio files under {root}")
    out = []
    for path in files:
        speaker, text_id, label = parse(path.name)
        out.append(Utterance(path, label, speaker, text_id, corpus))
    return out


def split_of(utt: Utterance) -> str:
    split = SPLITS[utt.corpus]
    if utt.speaker in split["test"]:
        return "test"
    if utt.speaker in split["val"]:
        return "val"
    return "train"


def split_corpus(utts: list[Utterance]) -> dict[str, list[Utterance]]:
    out: dict[str, list[Utterance]] = {"train": [], "val": [], "test": []}
    for u in utts:
        out[split_of(u)].append(u)
    return out


def leave_one_speaker_out(utts: list[Utterance]):
    """Yield (speaker, train, test) folds, one per speaker."""
    speakers = sorted({u.speaker for u in utts})
    for s in speakers:
        yield s, [u for u in utts if u.speaker != s], [u for u in utts if u.speaker == s]


def load_audio(path: str | os.PathLike, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Read any soundfile-readable file as mono float32 at sample_rate."""
    try:
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as exc:  # soundfile raises several types
        raise CorpusError(f"cannot read audio file {path}: {exc}") from exc
    if data.shape[0] == 0:
        raise CorpusError(f"empty audio file: {path}")
    mono = data.mean(axis=1)
    if not np.all(np.isfinite(mono)):
        raise CorpusError(f"audio file holds NaN or Inf samples: {path}")
    if rate != sample_rate:
        mono = resample(mono, rate, sample_rate)
    return mono.astype(np.float32)
