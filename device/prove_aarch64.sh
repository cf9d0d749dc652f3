#!/bin/bash
# Prove the device bundle on aarch64 without a Pi: a Debian bookworm arm64 root under
# qemu-user emulation (binfmt_misc). Run as root:
#
#   device/prove_aarch64.sh [--keep]        (apt-get install qemu-user-static binfmt-support debootstrap)
#
# Steps: build the aarch64 bundle on the host; debootstrap an arm64 bookworm (minbase +
# python3, python3-venv, alsa-utils); run the real install.sh from the bundle inside the
# chroot (systemd does not run there: a stub `systemctl` records the calls); pipe a test
# clip through `plainsight stream` inside the chroot and compare it with the same clip
# through the x86 runtime; check the installed unit with `systemd-analyze verify`.
# Nothing is cached between runs. Emulated timings are NOT device timings: none are reported.
#
# Env: PLAINSIGHT_PYTHON (host python with the project installed; default: python3),
# PLAINSIGHT_MIRROR (Debian mirror; default: the one apt uses), PLAINSIGHT_MAX_LSB (default 4).
set -euo pipefail

repo="$(cd "$(dirname "$(readlink -f "$0")")/.." && pwd)"
host_python="${PLAINSIGHT_PYTHON:-python3}"
max_lsb="${PLAINSIGHT_MAX_LSB:-4}"
keep=0
[ "${1:-}" = "--keep" ] && keep=1
start=$SECONDS
step() { printf '[prove_aarch64 %4ss] %s\n' "$((SECONDS - start))" "$*"; }
die() {
    echo "prove_aarch64: FAIL: $*" >&2
    exit 1
}

[ "$(id -u)" = 0 ] || die "must run as root (debootstrap, chroot, mounts)"
for tool in debootstrap chroot mount sha256sum; do
    command -v "$tool" >/dev/null || die "$tool missing (apt-get install qemu-user-static binfmt-support debootstrap)"
done
qemu=""
for candidate in /usr/libexec/qemu-binfmt/aarch64-binfmt-P /usr/bin/qemu-aarch64-static; do
    [ -x "$candidate" ] && qemu="$candidate" && break
done
[ -n "$qemu" ] || die "qemu-aarch64 missing (apt-get install qemu-user-static)"

work="$(mktemp -d /tmp/plainsight-aarch64.XXXXXX)"
root="$work/root"
mounted=()
cleanup() {
    local rc=$?
    set +e
    for ((i = ${#mounted[@]} - 1; i >= 0; i--)); do
        umount -l "${mounted[i]}" 2>/dev/null
    done
    if [ "$keep" = 1 ]; then
        echo "prove_aarch64: kept $work"
    else
        # Never follow into a still-mounted tree.
        if ! grep -q " $work/" /proc/mounts; then rm -rf "$work"; fi
    fi
    step "done (exit $rc)"
    exit $rc
}
trap cleanup EXIT INT TERM
bind() { # bind SRC DEST [ro]
    mount --bind "$1" "$2" && mounted+=("$2")
    [ "${3:-}" = ro ] && mount -o remount,bind,ro "$2"
    return 0
}

# binfmt_misc: arm64 binaries run through qemu. The F flag (binfmt-support's default for
# qemu-user-static) opens the interpreter at registration, so the chroot needs no copy.
if [ ! -e /proc/sys/fs/binfmt_misc/status ]; then
    mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc || die "cannot mount binfmt_misc"
fi
if [ ! -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]; then
    update-binfmts --enable qemu-aarch64 2>/dev/null || true
fi
grep -qx enabled /proc/sys/fs/binfmt_misc/qemu-aarch64 2>/dev/null ||
    die "qemu-aarch64 is not registered in binfmt_misc (apt-get install binfmt-support qemu-user-static)"

mirror="${PLAINSIGHT_MIRROR:-}"
if [ -z "$mirror" ]; then
    mirror="$(cat /etc/apt/sources.list.d/*.sources 2>/dev/null | sed -n 's/^URIs: *\(http[^ ]*\/debian\)\/\{0,1\} *$/\1/p' | head -n1)"
fi
if [ -z "$mirror" ]; then
    mirror="$(grep -hs '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list | awk '$2 ~ /\/debian\/?$/ {print $2; exit}')"
fi
mirror="${mirror:-http://deb.debian.org/debian}"

# 1. Host side: bundle, test clip and the x86 reference output.
step "building the aarch64 bundle"
"$host_python" "$repo/device/build_bundle.py" --out "$work/dist" --arch aarch64
bundle_tar="$(ls "$work"/dist/plainsight-device-*-aarch64.tar.gz)"
step "x86 reference: the first 3 s of examples/speech.wav through plainsight stream"
"$host_python" - "$repo/examples/speech.wav" "$work/clip.pcm" <<'EOF'
import sys
import soundfile as sf
audio, rate = sf.read(sys.argv[1], dtype="int16")
assert rate == 16000 and audio.ndim == 1, (rate, audio.shape)
audio[: 3 * rate].astype("<i2").tofile(sys.argv[2])  # 3 s: 12 hops, 2 of them full-window
EOF
"$host_python" -m plainsight.cli stream --rate 16000 <"$work/clip.pcm" >"$work/x86.pcm"

# 2. arm64 Debian bookworm (the base of Raspberry Pi OS 12), fresh every run.
step "debootstrap arm64 bookworm from $mirror (first stage)"
nice -n 10 debootstrap --arch=arm64 --variant=minbase --foreign \
    --include=python3,python3-venv,alsa-utils bookworm "$root" "$mirror" >"$work/debootstrap.log" 2>&1 ||
    { tail -20 "$work/debootstrap.log"; die "debootstrap first stage failed"; }
# A throw-away root: skip dpkg's fsyncs (as build chroots do).
mkdir -p "$root/etc/dpkg/dpkg.cfg.d"
echo force-unsafe-io >"$root/etc/dpkg/dpkg.cfg.d/90plainsight-unsafe-io"
step "debootstrap second stage (emulated)"
nice -n 10 chroot "$root" /debootstrap/debootstrap --second-stage >>"$work/debootstrap.log" 2>&1 ||
    { tail -20 "$root/debootstrap/debootstrap.log" "$work/debootstrap.log" 2>/dev/null; die "debootstrap second stage failed"; }
[ "$(chroot "$root" uname -m)" = aarch64 ] || die "chroot does not run aarch64 code"

mount -t proc proc "$root/proc" && mounted+=("$root/proc")
bind /sys "$root/sys" ro # debootstrap made the few /dev nodes needed: no /dev bind
# Debian 12's qemu 7.2 passes the host's /proc/cpuinfo through; onnxruntime's cpuinfo then
# sees x86 fields on an aarch64 process. Give it an ARM one (4x Cortex-A72, as on a Pi 4).
cpuinfo="$work/cpuinfo-arm64"
for cpu in 0 1 2 3; do
    printf 'processor\t: %s\nBogoMIPS\t: 108.00\nFeatures\t: fp asimd evtstrm crc32 cpuid\nCPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x0\nCPU part\t: 0xd08\nCPU revision\t: 3\n\n' "$cpu"
done >"$cpuinfo"
bind "$cpuinfo" "$root/proc/cpuinfo" ro

# systemd is not PID 1 in a chroot: a stub systemctl records what install.sh asks for.
mkdir -p "$root/run/systemd/system" "$root/usr/local/sbin"
cat >"$root/usr/local/sbin/systemctl" <<'EOF'
#!/bin/sh
echo "systemctl $*" >>/var/log/systemctl-stub.log
EOF
chmod 0755 "$root/usr/local/sbin/systemctl"

# 3. The real install.sh from the bundle (offline: wheels from the bundle only).
step "install.sh inside the chroot (offline)"
cp "$bundle_tar" "$root/tmp/"
chroot "$root" tar xzf "/tmp/$(basename "$bundle_tar")" -C /tmp
bundle_dir="/tmp/$(basename "$bundle_tar" .tar.gz)"
chroot_env=(env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8)
# .pyc compilation under emulation costs minutes and proves nothing; a device compiles.
nice -n 10 chroot "$root" "${chroot_env[@]}" PIP_NO_COMPILE=1 \
    "$bundle_dir/install.sh" --capture-device plughw:CARD=Dummy,DEV=0 --sink fifo ||
    die "install.sh failed inside the arm64 chroot"
grep -q '^plainsight:' "$root/etc/passwd" || die "install.sh created no plainsight user"
chroot "$root" id -nG plainsight | grep -qw audio || die "user plainsight is not in group audio"
grep -qx 'systemctl enable plainsight.service' "$root/var/log/systemctl-stub.log" ||
    die "install.sh did not enable the unit"
grep -q '^PLAINSIGHT_CAPTURE_DEVICE=plughw:CARD=Dummy,DEV=0$' "$root/etc/plainsight/plainsight.conf" ||
    die "config not written"
step "stub systemctl calls: $(tr '\n' ';' <"$root/var/log/systemctl-stub.log")"
chroot "$root" "${chroot_env[@]}" /opt/plainsight/bin/plainsight info | head -n 20

# 4. The clip through the installed runtime on aarch64, compared with x86.
step "plainsight stream inside the chroot (emulated aarch64)"
cp "$work/clip.pcm" "$root/tmp/clip.pcm"
nice -n 10 chroot "$root" "${chroot_env[@]}" sh -c \
    '/opt/plainsight/bin/plainsight stream --rate 16000 --status-file /tmp/status.json </tmp/clip.pcm >/tmp/arm.pcm' ||
    die "plainsight stream failed on aarch64"
cp "$root/tmp/arm.pcm" "$work/arm.pcm"
"$host_python" - "$work/clip.pcm" "$work/x86.pcm" "$work/arm.pcm" "$max_lsb" <<'EOF'
import sys
import numpy as np
raw, x86, arm = (np.fromfile(p, "<i2").astype(np.int32) for p in sys.argv[1:4])
max_lsb = int(sys.argv[4])
assert len(raw) == len(x86) == len(arm), (len(raw), len(x86), len(arm))
diff = np.abs(x86 - arm)
pert = np.abs(x86 - raw)
print(f"x86 vs aarch64: {len(raw)} samples, max |diff| {diff.max()} LSB, "
      f"mean {diff.mean():.4f} LSB, {np.count_nonzero(diff)} samples differ, "
      f"{np.count_nonzero(diff > max_lsb)} by more than {max_lsb} LSB; "
      f"perturbation (x86 - raw): max {pert.max()} LSB, mean {pert.mean():.2f} LSB")
if not np.any(arm != raw):
    sys.exit("aarch64 output equals the raw input: nothing was masked")
if diff.max() > max_lsb:
    sys.exit(f"aarch64 output differs from x86 by {diff.max()} LSB > {max_lsb}")
EOF
arm_status="$("$host_python" -c 'import json, sys
d = json.load(open(sys.argv[1]))
print({k: d.get(k) for k in ("state", "samples_in", "samples_out", "frames", "last_error", "model", "backend")})' "$root/tmp/status.json")"
step "aarch64 status file (its rtf is emulated, so not shown): $arm_status"

# 5. The installed unit, as systemd would load it on the device.
# The minbase root has no systemd (so no --root=ROOT: it lacks sysinit.target); the
# host's systemd checks the installed unit with its paths pointed into the root.
step "systemd-analyze verify (the unit as installed in the arm64 root, checked by the host)"
command -v systemd-analyze >/dev/null || die "systemd-analyze missing (apt-get install systemd)"
unit="$work/plainsight.service"
sed -e "s|=/opt/plainsight|=$root/opt/plainsight|g" -e "s|=/etc/plainsight|=$root/etc/plainsight|g" \
    "$root/etc/systemd/system/plainsight.service" >"$unit"
verify_log="$(systemd-analyze verify "$unit" 2>&1)" || die "systemd-analyze verify rejected the unit: $verify_log"
if grep -q 'plainsight.service' <<<"$verify_log"; then
    die "systemd-analyze verify complained: $verify_log"
fi
step "PASS: bundle installs and masks on aarch64 (emulated; timings are not device timings)"
