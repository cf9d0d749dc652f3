"""DNSMOS P.835 (SIG, BAK, OVRL) and P.808: a non-intrusive speech quality estimate.

PESQ and STOI compare against the clean waveform, which says little once the neutralize tier
has moved the pitch; DNSMOS scores the processed audio alone. It wraps the `speechmos`
package (extra [eval]; its ONNX models ship inside the wheel, nothing downloads), imported
lazily so the device runtime never needs it. Sessions run on `threads` intra-op threads
(speechmos's own `run` would use every core).
"""

from __future__ import annotations

import numpy as np

from plainsight.evaluate import metrics

SAMPLE_RATE = 16000
KEYS = ("sig", "bak", "ovrl", "p808")


def available() -> bool:
    try:
        import librosa  # noqa: F401  (speechmos imports it without declaring it)
        import speechmos.dnsmos  # noqa: F401
    except ImportError:
        return False
    return True


class Dnsmos:
    """Scores 16 kHz mono float audio; one instance keeps its two ONNX sessions."""

    def __init__(self, threads: int = 1):
        try:
            from speechmos import dnsmos as _dnsmos
        except ImportError as err:
            raise RuntimeError(
                "DNSMOS needs the eval extra (speechmos, librosa): pip install 'plainsight[eval]'"
            ) from err
        import os

        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        folder = os.path.join(os.path.dirname(_dnsmos.__file__), "dnsmos_models")
        model = _dnsmos.DNSMOS.__new__(_dnsmos.DNSMOS)  # its __init__ takes no session options
        model.primary_model_path = os.path.join(folder, "sig_bak_ovr.onnx")
        providers = ["CPUExecutionProvider"]
        model.onnx_sess = ort.InferenceSession(model.primary_model_path, options, providers)
        model.p808_onnx_sess = ort.InferenceSession(
            os.path.join(folder, "model_v8.onnx"), options, providers
        )
        self._model = model

    def score(self, audio: np.ndarray, sample_rate: int = SAMPLE_RATE) -> dict:
        if sample_rate != SAMPLE_RATE:
            raise ValueError(f"DNSMOS needs {SAMPLE_RATE} Hz audio, got {sample_rate}")
        audio = np.asarray(audio, dtype=np.float32)
        if audio.ndim != 1 or len(audio) == 0:
            raise ValueError("DNSMOS needs non-empty mono audio")
        # speechmos refuses samples outside [-1, 1] (float masker output may touch them).
        out = self._model(np.clip(audio, -1.0, 1.0), SAMPLE_RATE, False)
        return {
            "sig": float(out["sig_mos"]),
            "bak": float(out["bak_mos"]),
            "ovrl": float(out["ovrl_mos"]),
            "p808": float(out["p808_mos"]),
        }

    def summary(self, audios) -> dict:
        """Distribution (mean, median, ...) of each score over the clips."""
        scores = [self.score(a) for a in audios]
        return {k: metrics.distribution([s[k] for s in scores]) for k in KEYS} | {
            "clips": len(scores)
        }
