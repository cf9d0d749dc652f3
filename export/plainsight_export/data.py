"""In-memory corpus data for training: clips at 16 kHz, random crops, augmentation, windows.

Augmentation (training only, waveform domain, all drawn from one numpy Generator so a
seed fixes everything): random crop position (time shift; short clips are zero-padded at a
random offset), gain of +-6 dB, and with probability 0.5 white or pink noise at a random
SNR of 5-35 dB relative to the crop's RMS. The held-out panel (`PANEL_AUGMENT`) adds a random
low-pass and uses 10-40 dB noise, so that benign noise alone never counts as hiding.
`CHANNEL_AUGMENT` adds random equalisers: a listener trained for many microphones and rooms,
to test whether the gain stage's hiding is more than a channel the panel never heard.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
from plainsight.corpora import (
    CLASSES,
    SAMPLE_RATE,
    Utterance,
    leave_one_speaker_out,
    list_corpus,
    load_audio,
    split_corpus,
)
from plainsight.gainfield import BANDS, GainField


@dataclass
class ClipSet:
    """Clips of one split with integer labels."""

    utts: list[Utterance]
    audio: list[np.ndarray]
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.audio)

    def speakers(self) -> list[str]:
        """Speaker IDs; prefixed by the corpus when the set mixes corpora (IDs overlap)."""
        if len({u.corpus for u in self.utts}) > 1:
            return sorted({f"{u.corpus}:{u.speaker}" for u in self.utts})
        return sorted({u.speaker for u in self.utts})


def load_clips(utts: list[Utterance], classes: list[str], progress=None) -> ClipSet:
    index = {c: i for i, c in enumerate(classes)}
    audio = []
    for u in progress(utts) if progress else utts:
        audio.append(load_audio(u.path, SAMPLE_RATE))
    labels = np.array([index[u.label] for u in utts], np.int64)
    return ClipSet(list(utts), audio, labels)


def subset(clips: ClipSet, keep: list[int]) -> ClipSet:
    return ClipSet(
        [clips.utts[i] for i in keep], [clips.audio[i] for i in keep], clips.labels[keep]
    )


def concat(a: ClipSet, b: ClipSet) -> ClipSet:
    """Two clip sets with labels on the same class list, as one."""
    return ClipSet(a.utts + b.utts, a.audio + b.audio, np.concatenate([a.labels, b.labels]))


def restrict_labels(clips: ClipSet, classes: list[str], label_map: dict | None = None) -> ClipSet:
    """The clips whose (mapped) label is in `classes`, labels re-indexed to `classes`."""
    label_map = label_map or {c: c for c in classes}
    keep = [i for i, u in enumerate(clips.utts) if label_map.get(u.label) in classes]
    labels = np.array([classes.index(label_map[clips.utts[i].label]) for i in keep], np.int64)
    return ClipSet([clips.utts[i] for i in keep], [clips.audio[i] for i in keep], labels)


def load_corpus(data_root: str | os.PathLike, corpus: str, progress=None) -> ClipSet:
    """Every clip of a corpus in memory, sorted by path."""
    return load_clips(list_corpus(data_root, corpus), CLASSES[corpus], progress)


def fixed_split(clips: ClipSet) -> dict[str, ClipSet]:
    """The documented speaker-independent train/val/test split (plainsight.corpora.SPLITS)."""
    parts = split_corpus(clips.utts)
    position = {id(u): i for i, u in enumerate(clips.utts)}
    return {name: subset(clips, [position[id(u)] for u in us]) for name, us in parts.items()}


def loso_folds(clips: ClipSet):
    """Yield (speaker, train, test) for leave-one-speaker-out cross-validation."""
    position = {id(u): i for i, u in enumerate(clips.utts)}
    for speaker, train, test in leave_one_speaker_out(clips.utts):
        yield (
            speaker,
            subset(clips, [position[id(u)] for u in train]),
            subset(clips, [position[id(u)] for u in test]),
        )


def crop(audio: np.ndarray, length: int, rng: np.random.Generator) -> np.ndarray:
    """A random window of `length` samples; shorter clips are placed at a random offset."""
    if len(audio) >= length:
        start = int(rng.integers(0, len(audio) - length + 1))
        return audio[start : start + length]
    out = np.zeros(length, np.float32)
    start = int(rng.integers(0, length - len(audio) + 1))
    out[start : start + len(audio)] = audio
    return out


def pink_noise(n: int, rng: np.random.Generator) -> np.ndarray:
    spectrum = np.fft.rfft(rng.standard_normal(n))
    spectrum /= np.sqrt(np.maximum(np.arange(len(spectrum)), 1.0))
    noise = np.fft.irfft(spectrum, n)
    return noise / (np.std(noise) + 1e-12)


def lowpass(audio: np.ndarray, cutoff_hz: float, rate: int = SAMPLE_RATE) -> np.ndarray:
    """Zero-phase low-pass by FFT with a 500 Hz raised-cosine roll-off above `cutoff_hz`."""
    spectrum = np.fft.rfft(audio.astype(np.float64))
    freqs = np.fft.rfftfreq(len(audio), 1.0 / rate)
    ramp = np.clip((freqs - cutoff_hz) / 500.0, 0.0, 1.0)
    spectrum *= 0.5 * (1.0 + np.cos(np.pi * ramp))
    return np.fft.irfft(spectrum, len(audio)).astype(np.float32)


# Benign augmentation of every held-out panel member (issue 9): noise 10-40 dB, gain, low-pass.
PANEL_AUGMENT = {
    "noise_prob": 0.6,
    "snr_db": (10.0, 40.0),
    "gain_db": 6.0,
    "lowpass_prob": 0.4,
    "lowpass_hz": (3000.0, 8000.0),
}


# The panel's augmentation plus, half the time, a static random equaliser (a tilt of up to
# eq_db from 100 Hz to 7 kHz, i.e. +-eq_db / 2 at the ends, plus a smooth curve through 4
# random points within +-eq_db / 2),
# and a third of the time a random field on the gain stage's grid (16 bands x 100 ms, random
# signs at +-field_db: the study's random-field control).
CHANNEL_AUGMENT = PANEL_AUGMENT | {"eq_prob": 0.5, "eq_db": 6.0, "field_prob": 0.3, "field_db": 3.0}


def random_equaliser(
    audio: np.ndarray,
    rng: np.random.Generator,
    eq_db: float,
    field_db: float,
    eq: bool,
    field: bool,
) -> np.ndarray:
    """`audio` through a random static equaliser (`eq`) and/or a random gain field (`field`),
    both applied as one gain grid of plainsight.gainfield (dB per band and 100 ms cell)."""
    stage = GainField(audio, SAMPLE_RATE)
    grid = np.zeros(stage.shape, np.float32)
    if eq:
        position = np.linspace(0.0, 1.0, BANDS)
        tilt = rng.uniform(-eq_db, eq_db) * (position - 0.5)
        curve = np.interp(position, np.linspace(0, 1, 4), rng.uniform(-eq_db, eq_db, 4) / 2)
        grid += (tilt + curve)[:, None]
    if field:
        grid += field_db * rng.choice([-1.0, 1.0], stage.shape)
    return stage(grid)


def augment(
    batch: np.ndarray,
    rng: np.random.Generator,
    noise_prob: float = 0.5,
    snr_db: tuple[float, float] = (5.0, 35.0),
    gain_db: float = 6.0,
    lowpass_prob: float = 0.0,
    lowpass_hz: tuple[float, float] = (3000.0, 8000.0),
    eq_prob: float = 0.0,
    eq_db: float = 6.0,
    field_prob: float = 0.0,
    field_db: float = 3.0,
) -> np.ndarray:
    """Gain, optional equalisers, low-pass and additive noise on a batch of crops [B, N]
    (a new array)."""
    out = batch.astype(np.float32, copy=True)
    for row in out:
        row *= 10.0 ** (rng.uniform(-gain_db, gain_db) / 20.0)
        # no draws without equalisers: the other recipes keep their random streams
        eq = eq_prob > 0 and rng.random() < eq_prob
        field = field_prob > 0 and rng.random() < field_prob
        if eq or field:
            row[:] = random_equaliser(row, rng, eq_db, field_db, eq, field)
        if lowpass_prob > 0 and rng.random() < lowpass_prob:
            row[:] = lowpass(row, rng.uniform(*lowpass_hz))
        if rng.random() < noise_prob:
            n = len(row)
            noise = rng.standard_normal(n) if rng.random() < 0.5 else pink_noise(n, rng)
            rms = np.sqrt(np.mean(row.astype(np.float64) ** 2)) + 1e-8
            snr = rng.uniform(*snr_db)
            row += (noise * rms * 10.0 ** (-snr / 20.0)).astype(np.float32)
    np.clip(out, -1.0, 1.0, out=out)
    return out


def windows(audio: np.ndarray, length: int, hop: int | None = None) -> np.ndarray:
    """Windows of `length` covering the whole clip, hop length/2 by default, the last one
    ending at the clip's end; a short clip gives one window, centred and zero-padded."""
    hop = hop or length // 2
    if len(audio) <= length:
        out = np.zeros((1, length), np.float32)
        start = (length - len(audio)) // 2
        out[0, start : start + len(audio)] = audio
        return out
    starts = list(range(0, len(audio) - length + 1, hop))
    if starts[-1] != len(audio) - length:
        starts.append(len(audio) - length)
    return np.stack([audio[s : s + length] for s in starts]).astype(np.float32)
