"""The Whisper-student distillation loop on synthetic audio with a toy teacher."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from plainsight.corpora import Utterance  # noqa: E402
from plainsight_export import data as D  # noqa: E402
from plainsight_export.distill import train_student  # noqa: E402


def _clips(n: int, rng) -> D.ClipSet:
    """Tones whose pitch sets the class: something a teacher can read and a student learn."""
    t = np.arange(16000 * 2) / 16000
    audio, labels, utts = [], [], []
    for i in range(n):
        label = i % 3
        f0 = (150.0, 300.0, 600.0)[label] * rng.uniform(0.95, 1.05)
        audio.append((0.2 * np.sin(2 * np.pi * f0 * t)).astype(np.float32))
        labels.append(label)
        utts.append(Utterance(f"clip{i}.wav", "abc"[label], f"s{i % 2}", "t", "toy"))
    return D.ClipSet(utts, audio, np.array(labels, np.int64))


def test_student_learns_the_teachers_posteriors():
    rng = np.random.default_rng(0)
    train, val = _clips(12, rng), _clips(6, rng)

    def teacher(x: torch.Tensor) -> torch.Tensor:  # a fixed, known reading: spectral centroid
        spec = torch.fft.rfft(x).abs()
        centroid = (spec * torch.arange(spec.shape[1])).sum(1) / spec.sum(1) / 2.0
        return torch.stack([-(centroid - c).abs() / 50 for c in (150, 300, 600)], dim=1)

    student, history = train_student(
        train, val, ["a", "b", "c"], teacher, epochs=8, batch_size=4, seed=0
    )
    assert history[-1]["kl"] < 0.7 * history[0]["kl"]
    assert not student.training
    with torch.no_grad():
        x = torch.from_numpy(np.stack(train.audio))
        agree = (student(x).argmax(1) == teacher(x).argmax(1)).float().mean().item()
    assert agree > 0.5  # chance: 1/3


def test_egemaps_teacher_reads_its_training_classes_from_opensmile_features():
    pytest.importorskip("opensmile", reason="the eGeMAPS teacher needs the eval extra")
    pytest.importorskip("sklearn", reason="the eGeMAPS teacher needs the eval extra")
    from plainsight_export.distill import EgemapsTeacher

    rng = np.random.default_rng(1)
    train, test = _clips(12, rng), _clips(6, rng)
    teacher = EgemapsTeacher(train, ["a", "b", "c"])
    logits = teacher(torch.from_numpy(np.stack(test.audio)))
    assert logits.shape == (6, 3) and logits.dtype == torch.float32
    # pitch 150 / 300 / 600 Hz sets the class: eGeMAPS's F0 functionals read it
    assert (logits.argmax(1).numpy() == test.labels).mean() >= 5 / 6
