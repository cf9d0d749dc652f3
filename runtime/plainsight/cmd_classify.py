"""Emotion probabilities of an audio file, per model window and overall."""

from __future__ import annotations

import json

from plainsight.cli import add_engine_arguments


def add_arguments(parser) -> None:
    parser.add_argument("input", metavar="IN", help="WAV, FLAC or OGG file")
    parser.add_argument("--json", action="store_true", help="print the full result as JSON")
    add_engine_arguments(parser, masking=False)


def run(args) -> int:
    from plainsight.audio import read_audio
    from plainsight.masker import Masker

    audio = read_audio(args.input)
    masker = Masker(model=args.model, backend=args.backend, threads=args.threads)
    results = [
        masker.classify(audio.samples, audio.sample_rate, member=i)
        for i in range(len(masker.members))
    ]
    if args.json:
        print(json.dumps(results[0] if len(results) == 1 else results))
        return 0
    for result in results:
        ranked = sorted(
            zip(result["classes"], result["overall"], strict=True), key=lambda kv: -kv[1]
        )
        print(f"{args.input} [{result['model']}]: {result['label']}")
        for name, prob in ranked:
            print(f"  {name:<10s} {prob:6.3f} {'#' * round(prob * 40)}")
        if len(result["windows"]) > 1:
            for w in result["windows"]:
                print(f"  {w['start_s']:8.2f}-{w['end_s']:<8.2f} s  {w['label']}")
    return 0
