# Install locations, shared by install.sh and uninstall.sh (sourced; sets variables).
# In: $root (from --root, may be empty), $1 = the calling script's name.
# Out: prefix etc unit_dir modules_dir skip_user skip_systemctl.
skip_user="${PLAINSIGHT_SKIP_USER:-0}"
skip_systemctl="${PLAINSIGHT_SKIP_SYSTEMCTL:-0}"
if [ -n "$root" ]; then
    mkdir -p "$root"
    root="$(cd "$root" && pwd)"
    skip_user=1 # a tree for tests or an image: leave this machine's users and services alone
    skip_systemctl=1
fi
prefix="${PLAINSIGHT_PREFIX:-$root/opt/plainsight}"
etc="${PLAINSIGHT_ETC:-$root/etc/plainsight}"
unit_dir="${PLAINSIGHT_UNIT_DIR:-$root/etc/systemd/system}"
modules_dir="${PLAINSIGHT_MODULES_DIR:-$root/etc/modules-load.d}"
if [ -z "$root" ] && [ "$(id -u)" != 0 ] && [ -z "${PLAINSIGHT_PREFIX:-}" ]; then
    die "run as root (sudo ./$1), or give --root DIR"
fi
# systemctl only where systemd runs (not in a chroot, container or image build).
systemd_running() {
    [ "$skip_systemctl" != 1 ] && [ -d /run/systemd/system ] && command -v systemctl >/dev/null
}
# The id of the first sound card that can record, other than the loopback (empty if none):
# a Pi lists its HDMI outputs and headphone jack, which cannot, before a USB microphone.
first_capture_card() {
    local asound="${PLAINSIGHT_ASOUND:-/proc/asound}" number
    for number in $(sed -n 's/^\([0-9][0-9]*\)-[0-9]*:.*: capture [0-9]*$/\1/p' "$asound/pcm" 2>/dev/null | sort -un); do
        sed -n "s/^ *$((10#$number)) \[\([^] ]*\) *\].*/\1/p" "$asound/cards" 2>/dev/null
    done | grep -vx Loopback | head -n1 || true
}
