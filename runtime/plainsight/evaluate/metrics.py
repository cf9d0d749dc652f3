"""Evaluation metrics: classification (UAR, accuracy, confusion, MI), signal quality, spread.

Pure numpy; PESQ and STOI wrap the `pesq` and `pystoi` packages (extra [eval]).
"""

from __future__ import annotations

import numpy as np


def confusion_matrix(true: np.ndarray, pred: np.ndarray, n_classes: int) -> np.ndarray:
    """counts[i, j] = number of clips of true class i predicted as j."""
    true = np.asarray(true, int)
    pred = np.asarray(pred, int)
    if true.shape != pred.shape:
        raise ValueError("true and pred must have the same shape")
    counts = np.zeros((n_classes, n_classes), np.int64)
    np.add.at(counts, (true, pred), 1)
    return counts


def per_class_recall(confusion: np.ndarray) -> np.ndarray:
    """Recall of each true class; NaN for classes without clips."""
    confusion = np.asarray(confusion, float)
    support = confusion.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(support > 0, np.diag(confusion) / support, np.nan)


def uar(confusion: np.ndarray) -> float:
    """Unweighted average recall over the classes that have clips."""
    recall = per_class_recall(confusion)
    return float(np.nanmean(recall))


def accuracy(confusion: np.ndarray) -> float:
    confusion = np.asarray(confusion, float)
    return float(np.trace(confusion) / confusion.sum())


def chance_uar(n_classes: int) -> float:
    return 1.0 / n_classes


def mutual_information_bits(confusion: np.ndarray) -> float:
    """Plug-in mutual information I(true; predicted) in bits from a count matrix."""
    joint = np.asarray(confusion, float)
    total = joint.sum()
    if total <= 0:
        raise ValueError("empty confusion matrix")
    joint = joint / total
    p_true = joint.sum(axis=1, keepdims=True)
    p_pred = joint.sum(axis=0, keepdims=True)
    nz = joint > 0
    return float(np.sum(joint[nz] * np.log2(joint[nz] / (p_true @ p_pred)[nz])))


def mutual_information_bias_bits(confusion: np.ndarray) -> float:
    """Miller-Madow estimate of the plug-in MI's upward bias: (R-1)(C-1) / (2 N ln 2).

    R, C count the non-empty true and predicted classes. With ~100 clips and 7 classes this
    is a few tenths of a bit, so a small MI is indistinguishable from none.
    """
    joint = np.asarray(confusion, float)
    rows = int((joint.sum(axis=1) > 0).sum())
    cols = int((joint.sum(axis=0) > 0).sum())
    return (rows - 1) * (cols - 1) / (2.0 * joint.sum() * np.log(2.0))


def paired_uar_differences(
    true, pred_a, pred_b, n_classes: int, draws: int = 2000, seed: int = 0
) -> np.ndarray:
    """Bootstrap of UAR(b) - UAR(a) for models scored on the SAME clips, one row per model
    and a column per draw: [models, draws].

    true [clips] and pred_* [models, clips]. Each draw resamples the clips with replacement
    within each true class (so every class keeps its count and UAR stays defined), and the
    same draw serves every model and both conditions: the spread is that of the clip
    sample, with the pairing kept (two methods on the same clips differ far less by chance
    than two independent samples would)."""
    true = np.asarray(true, int)
    pred_a, pred_b = np.atleast_2d(pred_a).astype(int), np.atleast_2d(pred_b).astype(int)
    if pred_a.shape != pred_b.shape or pred_a.shape[1] != len(true):
        raise ValueError("pred_a and pred_b must be [models, clips] over the same clips")
    rng = np.random.default_rng(seed)
    by_class = [np.flatnonzero(true == c) for c in range(n_classes)]
    by_class = [idx for idx in by_class if len(idx)]
    hit_a, hit_b = pred_a == true, pred_b == true
    out = np.empty((len(pred_a), draws))
    for d in range(draws):
        recall_a, recall_b = [], []
        for idx in by_class:
            pick = rng.choice(idx, len(idx))
            recall_a.append(hit_a[:, pick].mean(1))
            recall_b.append(hit_b[:, pick].mean(1))
        out[:, d] = np.mean(recall_b, 0) - np.mean(recall_a, 0)
    return out


def classification_report(true, pred, classes: list[str]) -> dict:
    """UAR, accuracy, per-class recall, MI and the confusion matrix as JSON-ready values."""
    cm = confusion_matrix(true, pred, len(classes))
    recall = per_class_recall(cm)
    return {
        "n": int(cm.sum()),
        "uar": uar(cm),
        "accuracy": accuracy(cm),
        "chance_uar": chance_uar(len(classes)),
        "mi_bits": mutual_information_bits(cm),
        "mi_bias_bits": mutual_information_bias_bits(cm),
        "label_entropy_bits": entropy_bits(cm.sum(axis=1)),
        "per_class_recall": {
            c: (None if np.isnan(r) else float(r)) for c, r in zip(classes, recall, strict=True)
        },
        "confusion": cm.tolist(),
    }


def entropy_bits(counts) -> float:
    p = np.asarray(counts, float)
    p = p[p > 0] / p.sum()
    return float(-np.sum(p * np.log2(p)))


def snr_db(clean: np.ndarray, processed: np.ndarray) -> float:
    """10 log10(signal power / power of (processed - clean)); inf if identical."""
    clean = np.asarray(clean, np.float64)
    noise = np.asarray(processed, np.float64) - clean
    if clean.shape != noise.shape:
        raise ValueError(f"shape mismatch {clean.shape} vs {noise.shape}")
    signal_power = float(np.sum(clean**2))
    noise_power = float(np.sum(noise**2))
    if noise_power == 0.0:
        return float("inf")
    if signal_power == 0.0:
        return float("-inf")
    return 10.0 * np.log10(signal_power / noise_power)


def pesq_wb(clean: np.ndarray, processed: np.ndarray, sample_rate: int = 16000) -> float:
    """Wideband PESQ (MOS-LQO, about 1.0-4.64); NaN when PESQ finds no utterance."""
    from pesq import NoUtterancesError, pesq

    try:
        return float(
            pesq(
                sample_rate, np.asarray(clean, np.float64), np.asarray(processed, np.float64), "wb"
            )
        )
    except NoUtterancesError:
        return float("nan")


def stoi(clean: np.ndarray, processed: np.ndarray, sample_rate: int = 16000) -> float:
    from pystoi import stoi as _stoi

    return float(
        _stoi(
            np.asarray(clean, np.float64),
            np.asarray(processed, np.float64),
            sample_rate,
            extended=False,
        )
    )


def distribution(values) -> dict:
    """Median, 10th and 90th percentile, mean, min, n over finite values."""
    arr = np.asarray(list(values), float)
    arr = arr[np.isfinite(arr)]
    if arr.size == 0:
        return {"n": 0, "median": None, "p10": None, "p90": None, "mean": None, "min": None}
    return {
        "n": int(arr.size),
        "median": float(np.median(arr)),
        "p10": float(np.percentile(arr, 10)),
        "p90": float(np.percentile(arr, 90)),
        "mean": float(arr.mean()),
        "min": float(arr.min()),
    }
