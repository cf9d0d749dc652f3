"""Offline speech-to-text (Whisper base through faster-whisper) and WER.

The model is always loaded from a local, sha256-verified directory (whisper_weights), with
HF_HUB_OFFLINE=1, so nothing is ever downloaded at run time.
"""

from __future__ import annotations

import os
import re
import unicodedata

import numpy as np

from plainsight.evaluate.whisper_weights import ensure_model_dir

SAMPLE_RATE = 16000
_PUNCT = re.compile(r"[^\w\s']|_")
_SPACE = re.compile(r"\s+")


def normalise_text(text: str) -> str:
    """Lower case, punctuation removed (apostrophes kept), whitespace collapsed."""
    text = unicodedata.normalize("NFC", text).lower().replace("’", "'")
    text = _PUNCT.sub(" ", text)
    return _SPACE.sub(" ", text).strip()


def wer(references: list[str], hypotheses: list[str]) -> float:
    """Corpus-level word error rate over normalised texts (jiwer)."""
    import jiwer

    refs = [normalise_text(r) for r in references]
    hyps = [normalise_text(h) for h in hypotheses]
    if not refs or any(not r for r in refs):
        raise ValueError("WER needs non-empty references")
    return float(jiwer.wer(refs, hyps))


def clip_wer(reference: str, hypothesis: str) -> float:
    return wer([reference], [hypothesis])


class Transcriber:
    """faster-whisper on CPU from the verified local model dir."""

    def __init__(
        self,
        model_dir: str | os.PathLike | None = None,
        compute_type: str = "int8",
        threads: int = 1,
        beam_size: int = 1,
    ):
        os.environ["HF_HUB_OFFLINE"] = "1"
        from faster_whisper import WhisperModel

        self.model_dir = ensure_model_dir(model_dir)
        self.compute_type = compute_type
        self.beam_size = beam_size
        self.model = WhisperModel(
            str(self.model_dir),
            device="cpu",
            compute_type=compute_type,
            cpu_threads=threads,
            local_files_only=True,
        )

    def transcribe(self, audio: np.ndarray, language: str) -> str:
        """Mono float32 audio at 16 kHz -> text."""
        audio = np.ascontiguousarray(audio, np.float32)
        segments, _info = self.model.transcribe(
            audio,
            language=language,
            beam_size=self.beam_size,
            temperature=0.0,
            condition_on_previous_text=False,
            without_timestamps=True,
            vad_filter=False,
        )
        return " ".join(s.text.strip() for s in segments).strip()
