"""Device bundle: contents, SHA256SUMS, reproducibility, install.sh/uninstall.sh into a
temporary root (offline, idempotent), and the installed unit under `systemd-analyze verify`.

The bundle is built for x86_64 here so that its offline wheels install on this machine;
the aarch64 bundle is proven in test_device_aarch64.py.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import plainsight
import pytest

REPO = Path(__file__).resolve().parent.parent
BUILD = [sys.executable, str(REPO / "device" / "build_bundle.py")]
PYTHON_CANDIDATES = ("/usr/bin/python3", "python3.11", getattr(sys, "_base_executable", ""))
EXPECTED = {
    "install.sh",
    "uninstall.sh",
    "plainsight.service",
    "plainsight.conf",
    "bin/plainsight-pipeline",
    "bin/plainsight-tcp-sink",
    "README.md",
    "VERSION",
    "BUNDLE.json",
    "SHA256SUMS",
}


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    result = subprocess.run(
        BUILD + ["--out", str(out), "--arch", "x86_64"], capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr
    (tar,) = out.glob("plainsight-device-*-x86_64.tar.gz")
    return tar


@pytest.fixture(scope="module")
def unpacked(bundle, tmp_path_factory) -> Path:
    dest = tmp_path_factory.mktemp("unpacked")
    with tarfile.open(bundle) as tar:
        # The "data" filter exists from Python 3.11.4 (Debian bookworm ships 3.11.2).
        safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
        tar.extractall(dest, **safe)
    (top,) = dest.iterdir()
    return top


def test_bundle_holds_everything_and_sums_verify(bundle, unpacked):
    files = {str(p.relative_to(unpacked)) for p in unpacked.rglob("*") if p.is_file()}
    assert EXPECTED <= files, EXPECTED - files
    assert (unpacked / "VERSION").read_text().strip() == plainsight.__version__
    wheels = sorted(p.name for p in (unpacked / "wheels").glob("*.whl"))
    for dep in ("numpy-", "onnxruntime-", "soundfile-", f"plainsight-{plainsight.__version__}-"):
        assert any(w.startswith(dep) for w in wheels), (dep, wheels)
    assert not any(w.startswith("torch") for w in wheels), wheels
    # Every file except SHA256SUMS itself is listed, and all sums match.
    listed = {line.split("  ", 1)[1] for line in (unpacked / "SHA256SUMS").read_text().splitlines()}
    assert listed == files - {"SHA256SUMS"}
    check = subprocess.run(
        ["sha256sum", "--strict", "-c", "SHA256SUMS"], cwd=unpacked, capture_output=True, text=True
    )
    assert check.returncode == 0, check.stdout + check.stderr
    with tarfile.open(bundle) as tar:
        members = tar.getmembers()
    names = [m.name for m in members]
    assert names == sorted(names)
    assert len({m.mtime for m in members}) == 1 and {m.uid for m in members} == {0}


def test_wheel_carries_the_models_and_no_torch(unpacked):
    (wheel,) = (unpacked / "wheels").glob("plainsight-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        meta = zf.read(next(n for n in names if n.endswith("METADATA"))).decode()
        manifests = sorted(n for n in names if n.endswith("/manifest.json"))
        assert manifests, "no bundled model in the runtime wheel"
        for manifest in manifests:
            data = json.loads(zf.read(manifest))
            folder = manifest.rsplit("/", 1)[0]
            for fname, info in data["files"].items():
                digest = hashlib.sha256(zf.read(f"{folder}/{fname}")).hexdigest()
                assert digest == info["sha256"], fname
    hard = [
        line
        for line in meta.splitlines()
        if line.startswith("Requires-Dist:") and "extra" not in line
    ]
    assert hard and not any("torch" in line for line in hard), hard


def test_bundle_is_reproducible(bundle, tmp_path):
    again = subprocess.run(
        BUILD + ["--out", str(tmp_path), "--arch", "x86_64"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert again.returncode == 0, again.stderr
    (second,) = tmp_path.glob("*.tar.gz")
    digest = [hashlib.sha256(p.read_bytes()).hexdigest() for p in (bundle, second)]
    assert digest[0] == digest[1], "two builds of the same tree differ"


def tree_state(root: Path) -> dict[str, str]:
    """Path -> sha256 of every file outside the venv (config, unit, scripts)."""
    state = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        if "/venv/" in f"/{rel}/" or path.is_dir():
            continue
        state[rel] = "link" if path.is_symlink() else hashlib.sha256(path.read_bytes()).hexdigest()
    return state


def device_python() -> str:
    """A CPython 3.11 with venv support (the bundle's wheels are cp311), as on the device."""
    probe = "import sys, ensurepip; sys.exit(sys.version_info[:2] != (3, 11))"
    for candidate in PYTHON_CANDIDATES:
        path = shutil.which(candidate) if candidate else None
        if path and subprocess.run([path, "-c", probe], capture_output=True).returncode == 0:
            return path
    pytest.fail(f"no CPython 3.11 with venv/ensurepip among {PYTHON_CANDIDATES}")


def install(unpacked: Path, root: Path, *extra: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PIP_NO_COMPILE="1")
    env.pop("PIP_FIND_LINKS", None)  # offline means the bundle's wheels only
    return subprocess.run(
        [str(unpacked / "install.sh"), "--root", str(root), "--python", device_python(), *extra],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )


@pytest.fixture(scope="module")
def installed(unpacked, tmp_path_factory):
    root = tmp_path_factory.mktemp("root")
    first = install(unpacked, root, "--capture-device", "plughw:CARD=Mic,DEV=0", "--sink", "tcp")
    assert first.returncode == 0, first.stdout + first.stderr
    return root, first


def test_install_into_a_root_works_offline(installed, tmp_path):
    root, first = installed
    assert "offline" in first.stdout and "skipping systemctl" in first.stdout
    conf = (root / "etc/plainsight/plainsight.conf").read_text()
    assert "PLAINSIGHT_CAPTURE_DEVICE=plughw:CARD=Mic,DEV=0" in conf
    assert "PLAINSIGHT_SINK=tcp" in conf
    unit = (root / "etc/systemd/system/plainsight.service").read_text()
    assert f"ExecStart={root}/opt/plainsight/bin/plainsight-pipeline" in unit
    assert f"EnvironmentFile={root}/etc/plainsight/plainsight.conf" in unit
    # The installed runtime (from the wheel, with its bundled model) masks offline.
    binary = root / "opt/plainsight/bin/plainsight"
    clip = (np.sin(np.arange(16000) * 0.05) * 8000).astype("<i2")
    result = subprocess.run(
        [str(binary), "stream"], input=clip.tobytes(), capture_output=True, timeout=120
    )
    assert result.returncode == 0, result.stderr.decode()
    out = np.frombuffer(result.stdout, "<i2")
    assert len(out) == len(clip) and np.count_nonzero(out != clip) > len(clip) // 2


def test_install_is_idempotent_and_keeps_config(installed, unpacked):
    root, _ = installed
    conf = root / "etc/plainsight/plainsight.conf"
    before = tree_state(root)
    second = install(unpacked, root, "--capture-device", "plughw:CARD=Mic,DEV=0", "--sink", "tcp")
    assert second.returncode == 0, second.stdout + second.stderr
    assert tree_state(root) == before
    # A user-edited config survives a reinstall with other defaults; new defaults go aside.
    conf.write_text(conf.read_text().replace("PLAINSIGHT_SINK=tcp", "PLAINSIGHT_SINK=fifo"))
    edited = conf.read_text()
    third = install(unpacked, root, "--sink", "aloop")
    assert third.returncode == 0, third.stdout + third.stderr
    assert conf.read_text() == edited
    assert "PLAINSIGHT_SINK=aloop" in (root / "etc/plainsight/plainsight.conf.new").read_text()


def test_installed_unit_passes_systemd_analyze_verify(installed):
    if not shutil.which("systemd-analyze"):
        pytest.skip("systemd-analyze missing (apt-get install systemd)")
    root, _ = installed
    unit = root / "etc/systemd/system/plainsight.service"
    result = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60
    )
    complaints = [line for line in result.stderr.splitlines() if "plainsight.service" in line]
    assert result.returncode == 0 and not complaints, result.stderr
    text = unit.read_text()
    for key in (
        "Restart=always",
        "RestartSec=",
        "User=plainsight",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
    ):
        assert key in text, key
    # Hardening, scored by systemd itself: exposure <= 3.0 of 10 ("OK"; ours is about 1.9).
    security = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", "--threshold=30", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert security.returncode == 0, security.stdout[-2000:] + security.stderr
    # The check can fail: a unit whose ExecStart does not exist is rejected.
    broken = unit.parent / "broken-plainsight.service"
    broken.write_text(text.replace("bin/plainsight-pipeline", "bin/missing"))
    result = subprocess.run(["systemd-analyze", "verify", str(broken)], capture_output=True)
    broken.unlink()
    assert result.returncode != 0


def test_tampered_bundle_is_refused_before_touching_anything(unpacked, tmp_path):
    copy = tmp_path / "bundle"
    shutil.copytree(unpacked, copy)
    with open(copy / "bin/plainsight-pipeline", "a") as fh:
        fh.write("\ncat /dev/urandom\n")
    root = tmp_path / "root"
    result = install(copy, root)
    assert result.returncode != 0
    assert "SHA256SUMS" in result.stderr
    assert not (root / "opt").exists() and not (root / "etc").exists()
    # A file slipped in (e.g. a "newer" wheel pip would prefer) is refused too.
    copy = tmp_path / "bundle2"
    shutil.copytree(unpacked, copy)
    (copy / "wheels/numpy-99.0-py3-none-any.whl").write_bytes(b"PK")
    result = install(copy, root)
    assert result.returncode != 0 and "not in SHA256SUMS" in result.stderr
    assert "numpy-99.0" in result.stderr and not (root / "opt").exists()


def test_uninstall_keeps_config_unless_purged(installed, unpacked):
    root, _ = installed  # runs last: removes the module's install
    uninstall = [str(unpacked / "uninstall.sh"), "--root", str(root)]
    result = subprocess.run(uninstall, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert not (root / "opt/plainsight").exists()
    assert not (root / "etc/systemd/system/plainsight.service").exists()
    assert (root / "etc/plainsight/plainsight.conf").exists()
    result = subprocess.run(uninstall + ["--purge"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert not (root / "etc/plainsight").exists()


DEVICE = Path(__file__).resolve().parent.parent / "device"


def test_purge_refuses_a_config_dir_that_is_not_plainsights(tmp_path):
    """--purge deletes the configuration folder: only one named .../plainsight, like the
    install folder, and the refusal comes before anything is removed."""
    precious = tmp_path / "etc"
    (precious / "ssh").mkdir(parents=True)
    root = tmp_path / "root"
    (root / "opt" / "plainsight").mkdir(parents=True)
    env = dict(os.environ, PLAINSIGHT_ETC=str(precious))
    result = subprocess.run(
        [str(DEVICE / "uninstall.sh"), "--root", str(root), "--purge"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert result.returncode != 0 and "refusing" in result.stderr
    assert (precious / "ssh").is_dir() and (root / "opt" / "plainsight").is_dir()


def test_default_capture_card_is_one_that_records(tmp_path):
    """A Pi lists its HDMI outputs and headphone jack before a USB microphone: the default
    must be the first card with a capture device, not the first card."""
    asound = tmp_path / "asound"
    asound.mkdir()
    cards = [
        (" 0 [vc4hdmi0       ]: vc4-hdmi - vc4-hdmi-0", "vc4-hdmi-0"),
        (" 1 [Headphones     ]: bcm2835_headpho - bcm2835 Headphones", "bcm2835 Headphones"),
        (" 2 [Loopback       ]: Loopback - Loopback", "Loopback 1"),
        (" 3 [Device         ]: USB-Audio - USB PnP Sound Device", "C-Media USB PnP"),
    ]
    (asound / "cards").write_text("".join(f"{a}\n{' ' * 22}{b}\n" for a, b in cards))
    (asound / "pcm").write_text(
        "00-00: MAI PCM i2s-hifi-0 : MAI PCM i2s-hifi-0 : playback 1\n"
        "01-00: bcm2835 Headphones : bcm2835 Headphones : playback 8\n"
        "02-00: Loopback PCM : Loopback PCM : playback 8 : capture 8\n"
        "03-00: USB Audio : USB Audio : playback 1 : capture 1\n"
    )
    script = f"root={tmp_path / 'root'}; . {DEVICE / 'paths.sh'} test; first_capture_card"
    env = dict(os.environ, PLAINSIGHT_ASOUND=str(asound))
    result = subprocess.run(["bash", "-c", script], capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "Device"
    (asound / "pcm").write_text("00-00: MAI PCM i2s-hifi-0 : MAI PCM i2s-hifi-0 : playback 1\n")
    result = subprocess.run(["bash", "-c", script], capture_output=True, text=True, env=env)
    assert result.returncode == 0 and result.stdout.strip() == ""  # none: say so, no guess
