"""Evaluation metrics on known inputs: WER, SNR, UAR, MI, distributions, noise control."""

from __future__ import annotations

import math

import numpy as np
import pytest
from plainsight.corpora import Utterance
from plainsight.evaluate import metrics
from plainsight.evaluate.pipeline import balanced_order, noise_control

jiwer = pytest.importorskip("jiwer", reason="jiwer (extra [eval]) is needed for WER")
from plainsight.evaluate.asr import normalise_text, wer  # noqa: E402


def test_normalise_text_case_and_punctuation():
    assert normalise_text("  Kids are talking, by the DOOR! ") == "kids are talking by the door"
    assert normalise_text("Was sind denn das für Tüten?") == "was sind denn das für tüten"
    assert normalise_text("It’s fine.") == "it's fine"


def test_wer_known_strings():
    ref = "Kids are talking by the door."
    assert wer([ref], ["kids are talking by the door"]) == 0.0
    # one substitution out of six words
    assert wer([ref], ["Kids are walking by the door"]) == pytest.approx(1 / 6)
    # one deletion + one insertion out of six words
    assert wer([ref], ["Kids talking by the big door"]) == pytest.approx(2 / 6)
    # corpus level: (0 + 1) errors over 6 + 5 reference words
    refs = [ref, "Dogs are sitting here."]
    assert wer(refs, [ref, "dogs are sitting near"]) == pytest.approx(1 / 10)
    assert wer([ref], [""]) == 1.0
    with pytest.raises(ValueError):
        wer([""], ["anything"])


def test_snr_known_signals():
    rng = np.random.default_rng(0)
    clean = np.sin(2 * np.pi * 200 * np.arange(16000) / 16000)
    noise = rng.standard_normal(16000)
    noise *= np.sqrt(np.sum(clean**2) / np.sum(noise**2)) / 10.0  # power ratio 100
    assert metrics.snr_db(clean, clean + noise) == pytest.approx(20.0, abs=1e-9)
    assert metrics.snr_db(clean, clean + 0.5 * noise) == pytest.approx(20 + 20 * math.log10(2))
    assert metrics.snr_db(clean, clean) == math.inf
    with pytest.raises(ValueError):
        metrics.snr_db(clean, clean[:-1])


def test_uar_accuracy_and_recall_on_known_confusion():
    # class 0: 8 of 10 right; class 1: 1 of 2 right; class 2: 0 of 4 right
    cm = np.array([[8, 2, 0], [1, 1, 0], [2, 2, 0]])
    assert metrics.uar(cm) == pytest.approx((0.8 + 0.5 + 0.0) / 3)
    assert metrics.accuracy(cm) == pytest.approx(9 / 16)
    np.testing.assert_allclose(metrics.per_class_recall(cm), [0.8, 0.5, 0.0])
    true = [0] * 10 + [1] * 2 + [2] * 4
    pred = [0] * 8 + [1] * 2 + [0, 1] + [0, 0, 1, 1]
    np.testing.assert_array_equal(metrics.confusion_matrix(true, pred, 3), cm)
    # a class without clips does not count towards UAR
    assert metrics.uar(np.array([[1, 1, 0], [0, 0, 0], [0, 0, 2]])) == pytest.approx(0.75)


def test_mutual_information_known_cases():
    # perfect prediction of 4 balanced classes: 2 bits; independent: 0 bits
    assert metrics.mutual_information_bits(np.eye(4) * 5) == pytest.approx(2.0)
    assert metrics.mutual_information_bits(np.ones((4, 4))) == pytest.approx(0.0, abs=1e-12)
    # a consistent relabelling (always wrong, but a permutation) leaks everything:
    # UAR is 0, MI is still the full 2 bits
    perm = np.roll(np.eye(4), 1, axis=1) * 5
    assert metrics.uar(perm) == 0.0
    assert metrics.mutual_information_bits(perm) == pytest.approx(2.0)
    # binary symmetric channel with error 0.25: 1 - H(0.25)
    h = -(0.25 * math.log2(0.25) + 0.75 * math.log2(0.75))
    assert metrics.mutual_information_bits(np.array([[3, 1], [1, 3]])) == pytest.approx(1 - h)
    assert metrics.mutual_information_bias_bits(np.ones((4, 4)) * 10) == pytest.approx(
        9 / (2 * 160 * math.log(2))
    )


def test_classification_report_fields():
    rep = metrics.classification_report([0, 0, 1, 1], [0, 1, 1, 1], ["a", "b"])
    assert rep["uar"] == pytest.approx(0.75) and rep["accuracy"] == pytest.approx(0.75)
    assert rep["per_class_recall"] == {"a": 0.5, "b": 1.0}
    assert rep["confusion"] == [[1, 1], [0, 2]] and rep["chance_uar"] == 0.5


def test_distribution():
    d = metrics.distribution([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, float("nan"), float("inf")])
    assert d["n"] == 10 and d["median"] == 5.5 and d["p10"] == pytest.approx(1.9)
    assert metrics.distribution([])["median"] is None


def test_noise_control_matches_snr_and_keeps_length():
    rng = np.random.default_rng(1)
    clean = [0.1 * rng.standard_normal(n).astype(np.float32) for n in (8000, 12345)]
    masked = [c + 0.003 * np.sign(rng.standard_normal(len(c))) * rng.random(len(c)) for c in clean]
    noisy = noise_control(clean, masked)
    for c, m, z in zip(clean, masked, noisy, strict=True):
        assert len(z) == len(c) and z.dtype == np.float32
        assert metrics.snr_db(c, z) == pytest.approx(metrics.snr_db(c, m), abs=0.01)
        assert set(np.unique(np.round(np.abs(z - c) / np.abs(z - c).max(), 4))) == {1.0}


def test_balanced_order_is_round_robin():
    def u(i, label):
        return Utterance(
            path=f"/x/{i:03d}.wav", label=label, speaker="03", text_id="a01", corpus="emodb"
        )

    utts = [u(i, "anger") for i in range(5)] + [u(10 + i, "fear") for i in range(2)]
    order = [x.label for x in balanced_order(utts)]
    assert order == ["anger", "fear", "anger", "fear", "anger", "anger", "anger"]


def test_clip_windows_protocol():
    from plainsight.evaluate.pipeline import clip_windows

    short = np.arange(1, 7, dtype=np.float32)
    w = clip_windows(short, 10)
    assert w.shape == (1, 10) and list(w[0]) == [0, 0, 1, 2, 3, 4, 5, 6, 0, 0]
    long = np.arange(23, dtype=np.float32)
    w = clip_windows(long, 10)  # hop 5: starts 0, 5, 10 and a last one ending at the end (13)
    assert [int(row[0]) for row in w] == [0, 5, 10, 13] and w[-1][-1] == 22
    assert clip_windows(np.ones(10, np.float32), 10).shape == (1, 10)


def test_sweep_grid_families():
    from plainsight.evaluate.sweep import configurations

    full = configurations({"steps": 10}, ["a,b"], budgets=(35.0,))
    assert len(full) == 9 + 3 + 3 + 2
    gains = configurations({"steps": 10}, [], budgets=(35.0,), families={"gain field"})
    assert [c["gain_db"] for c in gains] == [3.0, 5.0]
    only = configurations({"steps": 10}, ["a,b"], budgets=(35.0, 30.0), families={"envelope"})
    assert len(only) == 6 and all(c["envelope"] for c in only)
    with pytest.raises(ValueError, match="unknown sweep families"):
        configurations({}, [], families={"nope"})


def test_paired_uar_bootstrap_known_cases():
    true = np.repeat(np.arange(3), [4, 6, 5])
    wrong = (true + 1) % 3
    # the same predictions under both conditions: no difference in any draw
    same = metrics.paired_uar_differences(true, [wrong, true], [wrong, true], 3, draws=50)
    np.testing.assert_array_equal(same, 0.0)
    # every clip wrong -> every clip right: exactly +1 UAR in every draw (classes kept)
    up = metrics.paired_uar_differences(true, [wrong], [true], 3, draws=50)
    assert up.shape == (1, 50)
    np.testing.assert_allclose(up, 1.0)
    # one class fixed: the difference is that class's share of the UAR, whatever the draw
    fixed = wrong.copy()
    fixed[true == 1] = 1
    one = metrics.paired_uar_differences(true, [wrong], [fixed], 3, draws=50)
    np.testing.assert_allclose(one, 1 / 3)
    with pytest.raises(ValueError, match="same clips"):
        metrics.paired_uar_differences(true, [wrong], [true[:-1]], 3)


def test_paired_uar_bootstrap_interval_covers_the_difference_and_shrinks_with_pairing():
    rng = np.random.default_rng(1)
    true = np.repeat(np.arange(4), 30)
    a = np.where(rng.random(120) < 0.6, true, (true + 1) % 4)
    b = a.copy()
    flip = rng.choice(120, 12, replace=False)  # b is right on up to 12 more clips
    b[flip] = true[flip]
    d = metrics.paired_uar_differences(true, [a], [b], 4, draws=1000, seed=2)[0]
    observed = metrics.uar(metrics.confusion_matrix(true, b, 4)) - metrics.uar(
        metrics.confusion_matrix(true, a, 4)
    )
    low, high = np.percentile(d, [2.5, 97.5])
    assert low < observed < high
    assert abs(d.mean() - observed) < 0.01
    # unpaired, the same two UARs would vary by about +-0.12 each; paired, far less
    assert high - low < 0.15
