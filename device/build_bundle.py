"""Build the device bundle: one .tar.gz to copy onto a speaker and install offline.

    python device/build_bundle.py --out dist/            # aarch64 (Raspberry Pi OS 64-bit)
    python device/build_bundle.py --out dist/ --arch x86_64 --with-tflite
    python device/build_bundle.py --out dist/ --with-wyoming   # for install.sh --sink wyoming

Contents of plainsight-device-<version>-<arch>/:
  wheels/plainsight-<version>-py3-none-any.whl   the runtime (numpy, soundfile, onnxruntime;
      torch is not a dependency). The bundled model artifacts and their manifest.json
      (sha256 of every graph) are package data inside this wheel.
  wheels/*.whl            the runtime's dependencies for <arch>, CPython 3.11 (offline install)
  install.sh uninstall.sh plainsight.service plainsight.conf bin/ README.md
  VERSION                 the plainsight version
  BUNDLE.json             build facts: git commit, arch, wheels, models and their hashes
  SHA256SUMS              sha256 of every other file (install.sh checks it first)

Reproducible-ish: sorted tar entries, fixed mtimes (SOURCE_DATE_EPOCH or the git commit
time), uid/gid 0, gzip without a timestamp.
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "runtime"))
from plainsight.manifest import sha256_of as sha256  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
DEVICE = REPO / "device"
# Debian bookworm / Raspberry Pi OS 12 has glibc 2.36: accept every manylinux tag up to it.
GLIBC_MINORS = (17, 24, 26, 27, 28, 31, 34, 35, 36)
PYTHON_VERSION = "3.11"
DEVICE_FILES = {  # source in device/ -> path in the bundle, mode
    "install.sh": ("install.sh", 0o755),
    "uninstall.sh": ("uninstall.sh", 0o755),
    "plainsight.service": ("plainsight.service", 0o644),
    "plainsight.conf": ("plainsight.conf", 0o644),
    "plainsight-pipeline": ("bin/plainsight-pipeline", 0o755),
    "tcp_sink.py": ("bin/plainsight-tcp-sink", 0o755),
    "paths.sh": ("paths.sh", 0o644),
    "README.md": ("README.md", 0o644),
}


class BuildError(RuntimeError):
    pass


def platforms(arch: str) -> list[str]:
    return [f"manylinux2014_{arch}"] + [f"manylinux_2_{m}_{arch}" for m in GLIBC_MINORS]


def project_version() -> str:
    text = (REPO / "runtime" / "plainsight" / "__init__.py").read_text()
    for line in text.splitlines():
        if line.startswith("__version__"):
            return line.split("=", 1)[1].strip().strip("\"'")
    raise BuildError("no __version__ in runtime/plainsight/__init__.py")


def git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return None
    return out.stdout.strip()


def source_date_epoch() -> int:
    if os.environ.get("SOURCE_DATE_EPOCH", "").isdigit():
        return int(os.environ["SOURCE_DATE_EPOCH"])
    commit_time = git("log", "-1", "--format=%ct")
    return int(commit_time) if commit_time and commit_time.isdigit() else 1700000000


def run(cmd: list[str], what: str, env: dict | None = None) -> None:
    result = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if result.returncode != 0:
        tail = "\n".join((result.stderr or result.stdout).strip().splitlines()[-5:])
        raise BuildError(f"{what} failed ({' '.join(cmd[:4])} ...):\n{tail}")


def build_wheel(dest: Path, epoch: int) -> Path:
    env = dict(os.environ, SOURCE_DATE_EPOCH=str(epoch))
    cmd = [sys.executable, "-m", "pip", "wheel", str(REPO), "--no-deps", "-q", "-w", str(dest)]
    try:  # the build env's setuptools: fast and offline
        run(cmd + ["--no-build-isolation"], "pip wheel", env)
    except BuildError:
        run(cmd, "pip wheel (isolated build)", env)
    wheels = sorted(dest.glob("plainsight-*.whl"))
    if len(wheels) != 1:
        raise BuildError(f"expected one plainsight wheel, got {[w.name for w in wheels]}")
    return wheels[0]


def inspect_wheel(wheel: Path) -> dict:
    """Models inside the wheel (name -> file sha256s), and a check that torch is no dependency."""
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        metadata = next(n for n in names if n.endswith(".dist-info/METADATA"))
        requires = [
            line.split(":", 1)[1].strip()
            for line in zf.read(metadata).decode().splitlines()
            if line.startswith("Requires-Dist:")
        ]
        hard = [r for r in requires if "extra ==" not in r]
        if any(r.lower().startswith("torch") for r in hard):
            raise BuildError(f"the runtime wheel must not depend on torch: {hard}")
        models = {}
        for name in sorted(names):
            parts = name.split("/")
            if parts[:2] == ["plainsight", "models"] and parts[-1] == "manifest.json":
                manifest = json.loads(zf.read(name))
                models[parts[2]] = {
                    "name": manifest.get("name"),
                    "version": manifest.get("version"),
                    "files": {f: m.get("sha256") for f, m in manifest.get("files", {}).items()},
                }
                for fname in manifest.get("files", {}):
                    if f"plainsight/models/{parts[2]}/{fname}" not in names:
                        raise BuildError(f"wheel lacks {fname} listed in {name}")
    return {"requires": hard, "models": models}


def download_deps(
    wheel: Path, arch: str, dest: Path, with_tflite: bool, with_wyoming: bool = False
) -> None:
    extras = [name for name, on in (("tflite", with_tflite), ("wyoming", with_wyoming)) if on]
    requirement = f"{wheel}[{','.join(extras)}]" if extras else str(wheel)
    cmd = [sys.executable, "-m", "pip", "download", "-q", "-d", str(dest), "--only-binary=:all:"]
    for tag in platforms(arch):
        cmd += ["--platform", tag]
    cmd += ["--python-version", PYTHON_VERSION, "--implementation", "cp", requirement]
    run(cmd, f"pip download of the {arch} dependency wheels")


def write_tar(stage: Path, top: str, out: Path, epoch: int) -> None:
    """Deterministic .tar.gz: sorted entries, fixed mtime/owner, no gzip timestamp."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        paths = [stage] + sorted(stage.rglob("*"))
        for path in paths:
            rel = path.relative_to(stage)
            info = tar.gettarinfo(str(path), arcname=str(Path(top) / rel) if rel.parts else top)
            info.mtime = epoch
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            info.mode = 0o755 if path.is_dir() or os.access(path, os.X_OK) else 0o644
            if path.is_file():
                with open(path, "rb") as fh:
                    tar.addfile(info, fh)
            else:
                tar.addfile(info)
    fd, tmp = tempfile.mkstemp(prefix=".bundle.", dir=out.parent)
    with (
        os.fdopen(fd, "wb") as raw,
        gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=6) as gz,
    ):
        gz.write(buffer.getvalue())
    os.chmod(tmp, 0o644)
    os.replace(tmp, out)


def build(
    out_dir: Path,
    arch: str,
    with_tflite: bool,
    allow_no_models: bool,
    with_wyoming: bool = False,
) -> Path:
    version = project_version()
    epoch = source_date_epoch()
    top = f"plainsight-device-{version}-{arch}"
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="plainsight-bundle-") as tmp:
        stage = Path(tmp) / top
        wheels = stage / "wheels"
        wheels.mkdir(parents=True)
        wheel = build_wheel(wheels, epoch)
        facts = inspect_wheel(wheel)
        if not facts["models"] and not allow_no_models:
            raise BuildError(
                "the wheel holds no bundled model (runtime/plainsight/models/*/manifest.json); "
                "export the default models first"
            )
        download_deps(wheel, arch, wheels, with_tflite, with_wyoming)
        for src, (dest, mode) in DEVICE_FILES.items():
            target = stage / dest
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(DEVICE / src, target)
            os.chmod(target, mode)
        (stage / "VERSION").write_text(version + "\n")
        bundle_facts = {
            "version": version,
            "arch": arch,
            "python": PYTHON_VERSION,
            "platforms": platforms(arch),
            "git_commit": git("rev-parse", "HEAD"),
            "git_dirty": bool(git("status", "--porcelain", "--", "runtime", "device")),
            "source_date_epoch": epoch,
            "runtime_requires": facts["requires"],
            "models": facts["models"],
            "models_note": "model artifacts + manifests are package data inside the wheel",
            "wheels": sorted(p.name for p in wheels.glob("*.whl")),
        }
        (stage / "BUNDLE.json").write_text(json.dumps(bundle_facts, indent=1) + "\n")
        files = sorted(p for p in stage.rglob("*") if p.is_file())
        sums = "".join(f"{sha256(p)}  {p.relative_to(stage)}\n" for p in files)
        (stage / "SHA256SUMS").write_text(sums)
        out = out_dir / f"{top}.tar.gz"
        write_tar(stage, top, out, epoch)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Build the plainsight device bundle (.tar.gz).")
    parser.add_argument("--out", type=Path, default=REPO / "dist", help="output directory")
    parser.add_argument(
        "--arch", default="aarch64", choices=["aarch64", "x86_64"], help="device CPU"
    )
    parser.add_argument(
        "--with-tflite", action="store_true", help="also bundle ai-edge-litert (TFLite backend)"
    )
    parser.add_argument(
        "--with-wyoming",
        action="store_true",
        help="also bundle the wyoming package (install.sh --sink wyoming, offline)",
    )
    parser.add_argument(
        "--allow-no-models", action="store_true", help="build even if no model is bundled"
    )
    args = parser.parse_args(argv)
    try:
        out = build(args.out, args.arch, args.with_tflite, args.allow_no_models, args.with_wyoming)
    except (BuildError, OSError) as exc:
        print(f"build_bundle: error: {exc}", file=sys.stderr)
        return 1
    print(f"{out}  ({out.stat().st_size / 1e6:.1f} MB, sha256 {sha256(out)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
