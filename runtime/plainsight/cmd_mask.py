"""Hide emotion in audio files: `plainsight mask IN OUT`.

IN and OUT are files, or directories (recursive; files already in OUT are skipped, so an
interrupted run resumes). WAV, FLAC or OGG in, the same format, rate, channels and length
out. Nothing is written unless masking succeeded; the input is never touched.
With --privacy neutralize the audio is neutralised first (pitch contour, loudness dynamics
and spectral tilt pulled toward the clip's own medians), then masked.
"""

from __future__ import annotations

import json
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np

from plainsight.cli import add_engine_arguments, add_privacy_arguments


def add_arguments(parser) -> None:
    parser.add_argument("input", metavar="IN", help="audio file or directory")
    parser.add_argument("output", metavar="OUT", help="output file or directory")
    parser.add_argument("--json", action="store_true", help="one JSON line per file on stdout")
    parser.add_argument(
        "--overwrite", action="store_true", help="directories: redo files already in OUT"
    )
    add_privacy_arguments(parser)
    add_engine_arguments(parser)


def _pairs(src: Path, dst: Path) -> list[tuple[Path, Path]]:
    from plainsight.audio import EXTENSIONS

    if src.is_dir():
        if dst.exists() and not dst.is_dir():
            raise ValueError(f"{dst}: IN is a directory, so OUT must be a directory too")
        if dst.resolve() == src.resolve():
            raise ValueError(f"{dst}: OUT is IN; the masked files would replace the inputs")
        # an OUT inside IN holds earlier outputs: never mask those (an OUT that holds IN is fine)
        out = dst.resolve()
        skip = out if src.resolve() in out.parents else None
        files = [
            p
            for p in sorted(src.rglob("*"))
            if p.is_file()
            and p.suffix.lower() in EXTENSIONS
            and not p.name.startswith(".")
            and (skip is None or skip not in p.resolve().parents)
        ]
        return [(p, dst / p.relative_to(src)) for p in files]
    if dst.is_dir():
        return [(src, dst / src.name)]
    return [(src, dst)]


class Progress:
    """A dependency-free progress bar on stderr (only when stderr is a terminal)."""

    def __init__(self, total: int, enabled: bool):
        self.total, self.done = total, 0
        self.enabled = enabled and total > 1 and sys.stderr.isatty()
        self.start = time.perf_counter()

    def step(self, name: str) -> None:
        self.done += 1
        if not self.enabled:
            return
        width = 30
        filled = width * self.done // self.total
        elapsed = time.perf_counter() - self.start
        eta = elapsed / self.done * (self.total - self.done)
        sys.stderr.write(
            f"\r[{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total} "
            f"eta {eta:5.0f}s {name[-30:]:30s}"
        )
        if self.done == self.total:
            sys.stderr.write("\n")
        sys.stderr.flush()


def _summary(result: dict) -> str:
    if result["silent"]:
        what = "written unchanged" if not result["linf"] else f"L-inf {result['linf']:g} added"
        return f"{result['output']}: digital silence (no emotion to hide), {what}"
    before, after = result["before"], result["after"]
    classes = before["classes"]
    was = classes.index(before["label"])
    tier = ""
    if result.get("privacy") == "neutralize":
        tier = f"neutralized (strength {result['neutralize_strength']:g}), then "
    text = (
        f"{result['output']}: {tier}emotion before {before['label']} {before['overall'][was]:.2f}"
        f" -> after {after['label']} {after['overall'][classes.index(after['label'])]:.2f}"
    )
    if after["label"] != before["label"]:
        text += f" ({before['label']} now {after['overall'][was]:.2f})"
    against = " vs the neutralized audio" if tier else ""
    text += f"; SNR {result['snr_db']:.1f} dB (as written{against})"
    if result["above_full_scale"]:
        text += "; peaks above full scale kept"
    if result["limited_samples"]:
        text += f"; perturbation limited at full scale on {result['limited_samples']} sample(s)"
    return text + f"; {result['seconds']:.2f} s"


def _make_parents(dst: Path) -> list[Path]:
    """Create dst's missing folders; the ones made, innermost first (to undo on failure)."""
    from plainsight.audio import AudioError

    missing = []
    folder = dst.parent
    while str(folder) not in ("", ".") and not folder.exists():
        missing.append(folder)
        folder = folder.parent
    try:
        for folder in reversed(missing):
            folder.mkdir()
    except OSError as exc:
        _remove_empty(missing)
        raise AudioError(f"{dst}: cannot make its folder ({' '.join(str(exc).split())})") from None
    return missing


def _remove_empty(folders: list[Path]) -> None:
    for folder in folders:  # innermost first
        try:
            folder.rmdir()
        except OSError:
            return


def mask_file(masker, src: Path, dst: Path) -> dict:
    """Mask one file in bounded memory (plainsight.blockmask): read, mask and write block by
    block to a temp file, read it back to check that every channel window with signal changed
    and to measure SNR/L-inf of what was written, then rename it into place.

    The emotion before/after is scored incrementally over every classify window of the
    model-rate (16 kHz) sign-aligned mix, "after" on that mix plus the perturbation (before
    quantisation to the output format)."""
    from plainsight.audio import (
        FORMATS,
        AtomicWriter,
        FileSource,
        Quantiser,
        same_path,
        verify_written,
    )
    from plainsight.blockmask import BlockMasker

    if same_path(src, dst):
        raise ValueError(f"{dst}: output is the input file; refusing to overwrite it")
    source = FileSource(src)
    made: list[Path] = []  # folders made for dst, removed again if nothing is written
    try:
        info = source.info
        expected = FORMATS[info.format]
        suffix = dst.suffix.lower()
        if suffix != expected and not (expected == ".ogg" and suffix == ".oga"):
            raise ValueError(
                f"{dst}: output must keep the input's format ({info.format}, {expected})"
            )
        quantiser = Quantiser(info.subtype)
        engine = BlockMasker(masker, source, lsb=quantiser.lsb)
        start = time.perf_counter()
        limited, peak = 0, 0.0
        made = _make_parents(dst)
        # a codec's output is checked against the input through the same codec, never kept
        unmasked_copy = dst.with_name(dst.name + ".unmasked") if quantiser.codec else None
        with (
            AtomicWriter(dst, info, source=src) as out,
            AtomicWriter(unmasked_copy, info) if unmasked_copy else nullcontext() as copy,
        ):
            for _, x, y in engine.blocks():
                data, cut = quantiser.encode(y, x)
                out.write(data)
                if copy is not None:
                    copy.write(quantiser.encode(x, x)[0])
                limited += cut
                peak = max(peak, float(np.abs(x).max()))
            took = time.perf_counter() - start
            # against what the mask got: under neutralize the neutralised audio (re-made
            # from the start, so this check costs one more neutralize pass)
            reference = copy.finish() if copy is not None else None
            written = verify_written(engine.source, out.finish(), quantiser.lsb, dst, reference)
            out.commit()
        made = []  # written: the folders stay
    finally:
        source.close()
        _remove_empty(made)
    seconds = info.frames / info.sample_rate
    tier = {}
    if getattr(masker, "privacy", "mask") != "mask":  # mask-tier records stay as they were
        tier = {"privacy": masker.privacy, "neutralize_strength": masker.neutralize_strength}
    emotion = {}
    if not written["silent"]:
        spec, classes = masker.specs[0], list(masker.classes)
        for key, tally in (("before", engine.before), ("after", engine.after)):
            overall = tally.overall()
            emotion[key] = {
                "model": spec.name,
                "classes": classes,
                "label": classes[int(overall.argmax())],
                "overall": [float(p) for p in overall],
            }
    return {
        "input": str(src),
        "output": str(dst),
        "sample_rate": info.sample_rate,
        "channels": info.channels,
        "duration_s": round(seconds, 4),
        "snr_db": written["snr_db"],
        "linf": written["linf"],
        "silent": written["silent"],
        "above_full_scale": peak > 1.0,
        "limited_samples": limited,
        "seconds": round(took, 4),
        "rtf": round(took / seconds, 5),
        **tier,
        **emotion,
    }


def run(args) -> int:
    from plainsight.audio import AudioError, signals_raise

    src, dst = Path(args.input), Path(args.output)
    if not src.exists():
        raise AudioError(f"{src}: no such file or directory")
    pairs = _pairs(src, dst)
    if src.is_dir() and not pairs:
        raise AudioError(f"{src}: no WAV/FLAC/OGG files found")
    # Directories resume (files already in OUT are done); a single OUT file is replaced.
    todo = [(s, d) for s, d in pairs if args.overwrite or not src.is_dir() or not d.exists()]
    if len(todo) < len(pairs) and not args.quiet:
        print(
            f"plainsight mask: skipping {len(pairs) - len(todo)} file(s) already done",
            file=sys.stderr,
        )
    if not todo:
        return 0
    with signals_raise():  # SIGTERM/SIGHUP: remove the temp file, exit non-zero
        return _mask_all(args, src, pairs, todo)


def _mask_all(args, src: Path, pairs: list, todo: list) -> int:
    from plainsight.audio import AudioError
    from plainsight.cli import masker_from_args

    masker = masker_from_args(args)
    progress = Progress(len(todo), enabled=not args.quiet)
    failures = 0
    for s, d in todo:
        try:
            result = mask_file(masker, s, d)
        except (AudioError, ValueError) as exc:
            if len(pairs) == 1:
                raise
            failures += 1
            print(f"plainsight mask: error: {' '.join(str(exc).split())}", file=sys.stderr)
            progress.step(s.name)
            continue
        progress.step(s.name)
        if args.json:
            print(json.dumps(result), flush=True)
        elif not args.quiet:
            print(_summary(result), flush=True)
    if failures:
        print(f"plainsight mask: {failures} of {len(todo)} file(s) failed", file=sys.stderr)
        return 1
    return 0
