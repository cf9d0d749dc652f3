"""plainsight-export: build | build --check | verify DIR... | bench.

build: committed checkpoints (export/checkpoints/<corpus>/*.pt) -> model directories:
  compact     -> runtime/plainsight/models/<corpus>-compact/   grad + forward, committed
  ensemble    -> runtime/plainsight/models/<corpus>-compact-mfcc/  compact + surrogate-mfcc-shared:
                 forward = compact, grad = both heads' summed loss on one log-mel, committed
  seed-cnn    -> export/artifacts/<corpus>-seed-cnn/             grad + forward, not committed
  attacker-*  -> export/artifacts/<corpus>-attacker-*/           forward only, committed
  (held-out panel members attacker-{dev,final}-* and adaptive-* attackers: forward ONNX only)
build --check: rebuild the committed directories (from git-tracked checkpoints) in a temp folder
and fail if any file differs or any parity check fails.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from plainsight_export.verify import REPO_ROOT

CORPORA = ("emodb", "ravdess")
CHECKPOINTS = REPO_ROOT / "export/checkpoints"
RUNTIME_MODELS = REPO_ROOT / "runtime/plainsight/models"
ARTIFACTS = REPO_ROOT / "export/artifacts"
OUTPUT_TOLERANCE = 1e-6
GITIGNORE = (
    "# seed-cnn exports are large: rebuild with `plainsight-export build`\n"
    "*-seed-cnn/\n"
    "# half-written exports (temp dirs)\n"
    "/.*\n"
    "!/.gitignore\n"
)


@dataclass(frozen=True)
class Target:
    checkpoint: Path
    out_dir: Path
    name: str
    graphs: tuple[str, ...]
    committed: bool
    backends: tuple[str, ...] = ("onnx", "tflite")
    heads: tuple[Path, ...] = ()  # an ensemble's checkpoints, `checkpoint` first


# Option (not the default): compact + an MFCC-statistics surrogate on the same log-mel.
ENSEMBLE_HEADS = ("compact", "surrogate-mfcc-shared")
KINDS = ("compact", "ensemble", "seed-cnn", "attackers")
# Bundled (masking) models also ship the stream's hop graphs (plainsight.masker.perturb_hop);
# single models also the pair that skips the body's unchanged part (an ensemble's MFCC head
# reads every frame, so it keeps the plain hop graph).
BUNDLED_GRAPHS = ("grad", "forward", "hop")
SINGLE_MODEL_GRAPHS = BUNDLED_GRAPHS + ("hop_fixed", "hop_crop")


def committed_checkpoints() -> set[Path] | None:
    """Checkpoints git tracks (None outside a git checkout): --check ignores work in progress."""
    try:
        proc = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "ls-files", "-z", "export/checkpoints"],
            capture_output=True,
            check=True,
        )
    except (OSError, subprocess.CalledProcessError):
        return None
    return {REPO_ROOT / name for name in proc.stdout.decode().split("\0") if name}


def plan(corpora=CORPORA, kinds=KINDS, only: set[Path] | None = None) -> list[Target]:
    targets = []
    for corpus in corpora:
        folder = CHECKPOINTS / corpus
        if "compact" in kinds and (folder / "compact.pt").is_file():
            name = f"{corpus}-compact"
            targets.append(
                Target(
                    folder / "compact.pt", RUNTIME_MODELS / name, name, SINGLE_MODEL_GRAPHS, True
                )
            )
        heads = tuple(folder / f"{stem}.pt" for stem in ENSEMBLE_HEADS)
        if "ensemble" in kinds and all(h.is_file() for h in heads):
            name = f"{corpus}-compact-mfcc"
            targets.append(
                Target(heads[0], RUNTIME_MODELS / name, name, BUNDLED_GRAPHS, True, heads=heads)
            )
        if "seed-cnn" in kinds and (folder / "seed-cnn.pt").is_file():
            name = f"{corpus}-seed-cnn"
            targets.append(
                Target(folder / "seed-cnn.pt", ARTIFACTS / name, name, ("grad", "forward"), False)
            )
        if "attackers" in kinds:
            for path in sorted(folder.glob("attacker-*.pt")) + sorted(folder.glob("adaptive-*.pt")):
                name = f"{corpus}-{path.stem}"
                # Panel members are scored by onnxruntime only: no TFLite (cheaper CI check).
                panel = path.stem.startswith(("attacker-dev-", "attacker-final-", "adaptive-"))
                backends = ("onnx",) if panel else ("onnx", "tflite")
                targets.append(Target(path, ARTIFACTS / name, name, ("forward",), True, backends))
    return [t for t in targets if only is None or {t.checkpoint, *t.heads} <= only]


def _checkpoint_ref(path: Path) -> dict:
    from plainsight_export.export import sha256_file

    return {"path": path.relative_to(REPO_ROOT).as_posix(), "sha256": sha256_file(path)}


def ensemble_for(heads: tuple[Path, ...], weights=None):
    """(HeadEnsemble, checkpoint dict for the manifest, manifest "heads") of checkpoints,
    loss weight 1 each unless `weights` is given."""
    from plainsight_export.models import HeadEnsemble, load_checkpoint

    models = [load_checkpoint(path) for path in heads]
    classes = [list(m.checkpoint["classes"]) for m in models]
    if any(c != classes[0] for c in classes):
        raise ValueError(f"ensemble heads disagree on the classes: {classes}")
    weights = [float(w) for w in (weights or [1.0] * len(heads))]
    ckpt = dict(models[0].checkpoint)
    ckpt.update(arch="+".join(m.checkpoint["arch"] for m in models), role="option")
    described = [
        {
            "name": path.stem,
            "arch": m.checkpoint["arch"],
            "role": m.checkpoint.get("role"),
            "loss_weight": weight,
            "test_uar": (m.checkpoint.get("metrics") or {}).get("uar"),
            "checkpoint": _checkpoint_ref(path),
        }
        for path, m, weight in zip(heads, models, weights, strict=True)
    ]
    ensemble = HeadEnsemble(models, [path.stem for path in heads], weights).eval()
    return ensemble, ckpt, described


def export_target(target: Target, out_dir: Path) -> dict:
    from plainsight_export.export import export_model_dir
    from plainsight_export.models import load_checkpoint

    extra = None
    if target.heads:
        model, ckpt, heads = ensemble_for(target.heads)
        extra = {
            "heads": heads,
            "loss": "grad = d/dwaveform of the sum of the heads' cross-entropies to the target "
            "(times each head's loss_weight); logits = the first head's; one shared log-mel",
        }
    else:
        model = load_checkpoint(target.checkpoint)
        ckpt = model.checkpoint
    return export_model_dir(
        model,
        ckpt,
        out_dir,
        target.name,
        target.graphs,
        backends=target.backends,
        checkpoint_ref=_checkpoint_ref(target.checkpoint),
        extra=extra,
    )


def _dir_hashes(directory: Path) -> dict[str, str]:
    from plainsight_export.export import sha256_file

    return {p.name: sha256_file(p) for p in sorted(directory.iterdir()) if p.is_file()}


def _graph_outputs(path: Path, waveforms: np.ndarray, manifest: dict) -> list[np.ndarray]:
    from plainsight_export import tflite_worker
    from plainsight_export.verify import hop_inputs

    n_classes = len(manifest["classes"])
    targets = np.full((waveforms.shape[0], n_classes), 1.0 / n_classes, np.float32)
    feeds = {"waveform": waveforms, "target": targets}
    if manifest["files"][path.name]["graph"] == "hop":
        feeds = hop_inputs(manifest, waveforms, targets)
    if path.suffix == ".onnx":
        import onnxruntime as ort

        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return sess.run(None, {i.name: feeds[i.name] for i in sess.get_inputs()})
    runner = tflite_worker.TfliteRunner(path)
    out = tflite_worker.run_feeds(runner, {k: feeds[k] for k in runner.inputs})
    return [out[k] for k in sorted(out)]


def _same_outputs(committed: Path, rebuilt: Path, manifest: dict) -> bool:
    """Do two graph files compute the same outputs (to OUTPUT_TOLERANCE) on test inputs?"""
    from plainsight_export.verify import speech_like

    n = int(manifest["window_samples"])
    rng = np.random.default_rng(0)
    waveforms = np.stack([speech_like(n), (0.1 * rng.standard_normal(n)).astype(np.float32)])
    try:
        a = _graph_outputs(committed, waveforms, manifest)
        b = _graph_outputs(rebuilt, waveforms, manifest)
    except Exception:  # an unloadable graph is simply not the same graph
        return False
    return len(a) == len(b) and all(
        x.shape == y.shape and float(np.abs(x - y).max()) <= OUTPUT_TOLERANCE
        for x, y in zip(a, b, strict=True)
    )


def _manifest_core(manifest: dict) -> dict:
    """A manifest without what a toolchain change alone may alter (hashes, sizes, versions)."""
    core = {k: v for k, v in manifest.items() if k != "versions"}
    core["files"] = {
        f: {k: v for k, v in meta.items() if k not in ("sha256", "bytes")}
        for f, meta in manifest["files"].items()
    }
    return core


def compare_dirs(committed: Path, rebuilt: Path, notes: list | None = None) -> list[str]:
    """Differences between a committed model directory and a fresh rebuild (empty = same).

    Byte-identical files pass. A graph file whose bytes differ passes only if it computes the
    same outputs (a serialisation change of the toolchain), with a note; anything else fails.
    """
    notes = [] if notes is None else notes
    if not committed.is_dir():
        return [f"{committed}: missing (run `plainsight-export build` and commit it)"]
    ours, fresh = _dir_hashes(committed), _dir_hashes(rebuilt)
    problems = [f"{committed / n}: not produced by the pipeline" for n in ours.keys() - fresh]
    problems += [f"{committed / n}: missing" for n in fresh.keys() - ours]
    if problems or ours == fresh:
        return problems
    old = json.loads((committed / "manifest.json").read_text())
    new = json.loads((rebuilt / "manifest.json").read_text())
    if _manifest_core(old) != _manifest_core(new):
        keys = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))
        return [f"{committed / 'manifest.json'}: differs from the rebuild in {keys}"]
    for name in sorted(n for n in ours if n != "manifest.json" and ours[n] != fresh[n]):
        if _same_outputs(committed / name, rebuilt / name, new):
            notes.append(f"{committed / name}: bytes differ, outputs equal (toolchain change?)")
        else:
            problems.append(f"{committed / name}: differs from the rebuilt file")
    return problems


def cmd_build(args) -> int:
    from plainsight_export.verify import VerifyError, verify_dir

    kinds = tuple(args.only) if args.only else KINDS
    if args.check:
        targets = plan(args.corpus or CORPORA, kinds, committed_checkpoints())
        targets = [t for t in targets if t.committed]
    else:
        targets = plan(args.corpus or CORPORA, kinds)
    if not targets:
        print(f"error: no checkpoints found under {CHECKPOINTS}", file=sys.stderr)
        return 1
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    ignore = ARTIFACTS / ".gitignore"
    if not ignore.exists():
        ignore.write_text(GITIGNORE)
    failures = []
    with tempfile.TemporaryDirectory(prefix="plainsight-build-") as tmp:
        for target in targets:
            out = Path(tmp) / target.name if args.check else target.out_dir
            print(
                f"export {target.checkpoint.relative_to(REPO_ROOT)} -> {target.name} "
                f"({'+'.join(target.graphs)})",
                flush=True,
            )
            manifest = export_target(target, out)
            for fname, meta in sorted(manifest["files"].items()):
                print(f"  {fname:15s} {meta['bytes'] / 1e6:6.2f} MB  sha256 {meta['sha256'][:16]}")
            if args.check:
                notes: list[str] = []
                problems = compare_dirs(target.out_dir, out, notes)
                for line in notes:
                    print(f"  NOTE {line}")
                for line in problems:
                    print(f"  DIFF {line}")
                failures += problems
            verify_target = target.out_dir if args.check else out
            if not args.no_verify and verify_target.is_dir():
                try:
                    checks = verify_dir(verify_target, log=lambda _: None)
                except VerifyError as exc:
                    print(f"  {exc}")
                    failures.append(str(exc))
                    continue
                bad = [c for c in checks if not c.ok]
                for check in bad:
                    print(f"  {check.line()}")
                print(f"  verify: {len(checks) - len(bad)}/{len(checks)} checks passed")
                failures += [c.line() for c in bad]
    if failures:
        print(f"FAILED: {len(failures)} problem(s)", file=sys.stderr)
        return 1
    print("committed artifacts match the pipeline" if args.check else "build done")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="plainsight-export", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    build = sub.add_parser("build", help="export committed checkpoints to model directories")
    build.add_argument(
        "--check",
        action="store_true",
        help="rebuild in a temp dir; fail if committed artifacts differ",
    )
    build.add_argument("--corpus", action="append", choices=CORPORA)
    build.add_argument("--only", action="append", choices=KINDS)
    build.add_argument("--no-verify", action="store_true", help="skip the parity checks")
    verify = sub.add_parser("verify", help="check exported directories against torch autograd")
    verify.add_argument("dirs", nargs="+")
    verify.add_argument("--checkpoint", help="torch reference (default: the manifest's)")
    bench = sub.add_parser("bench", help="time one gradient step: torch vs ONNX vs TFLite")
    bench.add_argument("--corpus", default="emodb", choices=CORPORA)
    bench.add_argument("--arch", action="append", choices=("compact", "seed-cnn"))
    bench.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args(argv)
    if args.command == "build":
        return cmd_build(args)
    if args.command == "verify":
        from plainsight_export.verify import main_verify

        missing = [d for d in args.dirs if not (Path(d) / "manifest.json").is_file()]
        if missing:
            print(f"error: not a model directory (no manifest.json): {missing[0]}", file=sys.stderr)
            return 2
        return main_verify(args.dirs, args.checkpoint)
    from plainsight_export.bench import main_bench

    return main_bench(tuple(args.arch or ("compact", "seed-cnn")), args.corpus, args.repeats)


if __name__ == "__main__":
    sys.exit(main())
