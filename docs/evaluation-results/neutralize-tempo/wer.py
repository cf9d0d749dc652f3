"""Whisper base (int8, the evaluation's transcriber) WER % on every third of the first 60
class-balanced test clips, clean and after each condition: wer.py DATA CORPUS CONDITION..."""

import sys

import conditions
from plainsight import corpora
from plainsight.evaluate import pipeline as P
from plainsight.evaluate.asr import Transcriber, wer

data, corpus, names = sys.argv[1], sys.argv[2], sys.argv[3:]
clips = P.test_clips(data, corpus, 60)[::3]
refs = [c.reference for c in clips]
asr = Transcriber()
for name in ["plain", *names]:
    template = conditions.eq_template(data, corpus, name)
    language = corpora.LANGUAGES[corpus]
    hyps = [asr.transcribe(conditions.process(c.audio, name, template), language) for c in clips]
    print(f"{corpus} {name}: WER {100 * wer(refs, hyps):.1f} % on {len(clips)} clips")
