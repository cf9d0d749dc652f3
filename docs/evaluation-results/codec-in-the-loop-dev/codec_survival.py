"""What Opus 24 kbit/s keeps of the default mask's perturbation d (EmoDB test clips).

Per 25 ms frame (grouped by level below the clip's loudest frame): the SNR of d, the codec's
own noise opus(x) - x against d, and the share of d kept (projection of opus(x + d) - opus(x)
on d). Per STFT bin (band x bin level below the frame's loudest bin): the share kept.
Usage: PLAINSIGHT_DATA=... python codec_survival.py > codec_survival.txt
"""

import os

import numpy as np
from plainsight.corpora import list_corpus, load_audio, split_corpus
from plainsight.evaluate.codec import round_trip
from plainsight.masker import Masker

LEVEL = (
    0.94140625  # libsndfile's Opus compression level that the evaluation calibrated to 24 kbit/s
)
RATE = 16000
FRAME = 400
FRAME_EDGES = [-200, -60, -50, -40, -30, -20, -10, 1]
BANDS = [0, 500, 1000, 2000, 3000, 4000, 5000, 6000, 7000, 8001]
BIN_EDGES = [-200, -60, -40, -30, -20, -10, 1]


def frames(signal: np.ndarray) -> np.ndarray:
    n = len(signal) // FRAME
    return signal[: n * FRAME].reshape(n, FRAME)


def stft(signal: np.ndarray, n: int = 512, hop: int = 128) -> np.ndarray:
    padded = np.pad(signal, n // 2)
    return np.fft.rfft(np.lib.stride_tricks.sliding_window_view(padded, n)[::hop] * np.hanning(n))


def db(a: float, b: float) -> str:
    return f"{10 * np.log10(a / b):.1f}"


def main() -> None:
    utts = split_corpus(list_corpus(os.environ["PLAINSIGHT_DATA"], "emodb"))["test"][:16]
    masker = Masker(model="emodb-compact")
    per_frame = np.zeros((5, len(FRAME_EDGES) - 1))  # signal, d, codec noise, kept, count
    kept_bins = np.zeros((len(BANDS) - 1, len(BIN_EDGES) - 1))
    power_bins = np.zeros_like(kept_bins)
    freqs = np.fft.rfftfreq(512, 1 / RATE)
    band_of = np.digitize(freqs, BANDS) - 1
    for utt in utts:
        x = load_audio(utt.path)
        y = masker.mask(x, RATE)
        d = y - x
        cx, _ = round_trip("opus", x, RATE, LEVEL)
        cy, _ = round_trip("opus", y, RATE, LEVEL)
        energy = (frames(x) ** 2).mean(axis=1)
        level = np.digitize(10 * np.log10(energy / energy.max() + 1e-20), FRAME_EDGES) - 1
        for k in range(len(FRAME_EDGES) - 1):
            sel = level == k
            parts = (
                (frames(x)[sel] ** 2).sum(),
                (frames(d)[sel] ** 2).sum(),
                (frames(cx - x)[sel] ** 2).sum(),
                (frames(cy - cx)[sel] * frames(d)[sel]).sum(),
                sel.sum(),
            )
            per_frame[:, k] += parts
        spec_d, spec_kept, spec_x = stft(d), stft(cy - cx), stft(x)
        mag = np.abs(spec_x)
        rel = 20 * np.log10((mag + 1e-9) / (mag.max(axis=1, keepdims=True) + 1e-9))
        bin_level = np.digitize(rel, BIN_EDGES) - 1
        projection = np.real(spec_kept * np.conj(spec_d))
        power = np.abs(spec_d) ** 2
        for b in range(len(BANDS) - 1):
            for k in range(len(BIN_EDGES) - 1):
                sel = (band_of[None, :] == b) & (bin_level == k)
                kept_bins[b, k] += projection[sel].sum()
                power_bins[b, k] += power[sel].sum()
    print("frame level (dB below loudest) | frames | SNR of d | codec noise vs d (dB) | d kept")
    for k in range(len(FRAME_EDGES) - 1):
        signal, pert, noise, kept, count = per_frame[:, k]
        if count:
            span = f"{FRAME_EDGES[k]}..{FRAME_EDGES[k + 1]}"
            print(span, int(count), db(signal, pert), db(noise, pert), f"{kept / pert:.2f}")
    print("\nshare of d kept per STFT bin; rows: band (Hz), columns: bin level below frame max")
    spans = [f"{a}..{b}" for a, b in zip(BIN_EDGES, BIN_EDGES[1:], strict=False)]
    print("band".ljust(12), *[span.rjust(10) for span in spans])
    for b in range(len(BANDS) - 1):
        cells = [
            f"{kept_bins[b, k] / power_bins[b, k]:.2f}" if power_bins[b, k] else "-"
            for k in range(len(BIN_EDGES) - 1)
        ]
        print(f"{BANDS[b]}-{BANDS[b + 1]}".ljust(12), *[c.rjust(10) for c in cells])


if __name__ == "__main__":
    main()
