#!/usr/bin/env bash
# Regenerates examples/speech.wav (CC0): espeak-ng 1.51 speech, resampled to 16 kHz mono PCM_16.
set -euo pipefail
cd "$(dirname "$0")"
TEXT="I cannot believe you did that again. We were supposed to leave an hour ago, and now everything is ruined!"
tmp="$(mktemp --suffix=.wav)"
trap 'rm -f "$tmp"' EXIT
espeak-ng -v en-us -s 165 -p 60 -a 160 -w "$tmp" "$TEXT"
python3 - "$tmp" speech.wav <<'PY'
import sys

import numpy as np
import soundfile as sf

from plainsight.resample import resample

audio, rate = sf.read(sys.argv[1], dtype="float32")
audio = resample(audio, rate, 16000)
audio *= 0.5 / max(1e-9, float(np.abs(audio).max()))  # peak -6 dBFS
sf.write(sys.argv[2], audio, 16000, subtype="PCM_16")
PY
