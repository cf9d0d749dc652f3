"""The device bundle on aarch64, emulated: device/prove_aarch64.sh.

It debootstraps a Debian bookworm arm64 root (qemu-user via binfmt_misc), runs the real
install.sh from the aarch64 bundle inside it -- systemd does not run in a chroot, so a STUB
`systemctl` records the calls install.sh makes (daemon-reload, enable, restart) -- pipes
examples/speech.wav through the installed `plainsight stream`, compares it with the x86
output, and checks the installed unit with `systemd-analyze verify`. Takes minutes.

Runs when CI=true or PLAINSIGHT_AARCH64=1 (then it must run: missing tools fail loudly);
otherwise skips with the reason when not root or when debootstrap/qemu are missing.
PLAINSIGHT_AARCH64=0 skips it on a developer machine (never in CI).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "device" / "prove_aarch64.sh"
QEMU = ("/usr/libexec/qemu-binfmt/aarch64-binfmt-P", "/usr/bin/qemu-aarch64-static")
BUDGET_S = 15 * 60  # the CI budget; the wall time is printed, not asserted (shared machines)


def missing_tools() -> list[str]:
    missing = [t for t in ("debootstrap", "chroot") if not shutil.which(t)]
    if not any(Path(q).exists() for q in QEMU):
        missing.append("qemu-user-static")
    return missing


@pytest.mark.slow
def test_bundle_installs_and_masks_on_emulated_aarch64():
    forced = os.environ.get("CI") == "true" or os.environ.get("PLAINSIGHT_AARCH64") == "1"
    if not forced:
        if os.environ.get("PLAINSIGHT_AARCH64") == "0":
            pytest.skip("PLAINSIGHT_AARCH64=0: aarch64 proof skipped on request")
        if os.geteuid() != 0:
            pytest.skip("aarch64 proof needs root (debootstrap, chroot, mounts)")
        if missing_tools():
            pytest.skip(
                f"aarch64 proof needs {', '.join(missing_tools())}: apt-get install "
                "qemu-user-static binfmt-support debootstrap (or set PLAINSIGHT_AARCH64=1)"
            )
    env = dict(os.environ, PLAINSIGHT_PYTHON=sys.executable)
    start = time.monotonic()
    result = subprocess.run(
        ["bash", str(SCRIPT)],
        capture_output=True,
        text=True,
        timeout=BUDGET_S + 300,
        env=env,
    )
    wall = time.monotonic() - start
    out = result.stdout + result.stderr
    print(out[-6000:])
    print(f"aarch64 proof wall time: {wall:.0f} s (emulated; not a device timing)")
    assert result.returncode == 0, (
        f"prove_aarch64.sh failed (exit {result.returncode}):\n{out[-4000:]}"
    )
    assert "PASS: bundle installs and masks on aarch64" in out
    assert "systemctl enable plainsight.service" in out  # the stub saw install.sh enable it
    match = re.search(r"x86 vs aarch64: (\d+) samples, max \|diff\| (\d+) LSB", out)
    assert match, "no x86 vs aarch64 comparison in the output"
    assert int(match.group(1)) > 16000
