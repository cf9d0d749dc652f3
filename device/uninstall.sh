#!/bin/bash
# Remove plainsight from the device (run as root): stops and disables the service,
# removes the unit, /opt/plainsight and the system user. The configuration in
# /etc/plainsight is kept unless --purge is given. Same overrides as install.sh
# (--root DIR, PLAINSIGHT_PREFIX / _ETC / _UNIT_DIR / _MODULES_DIR, _SKIP_USER, _SKIP_SYSTEMCTL).
set -euo pipefail

log() { echo "uninstall.sh: $*"; }
die() {
    echo "uninstall.sh: error: $*" >&2
    exit 1
}
here="$(cd "$(dirname "$(readlink -f "$0")")" && pwd)"
purge=0
root=""
user="${PLAINSIGHT_USER:-plainsight}"
while [ $# -gt 0 ]; do
    case "$1" in
        --purge) purge=1 ;;
        --root) root="${2:?--root needs a directory}"; shift ;;
        -h | --help) sed -n '2,6p' "$0"; exit 0 ;;
        *) die "unknown option $1 (see --help)" ;;
    esac
    shift
done
# shellcheck source=paths.sh
. "$here/paths.sh" uninstall.sh
# Only folders named .../plainsight are deleted, checked before anything is removed.
case "$prefix" in
    */plainsight) ;;
    *) die "refusing to delete $prefix (does not end in /plainsight)" ;;
esac
if [ "$purge" = 1 ]; then
    case "$etc" in
        */plainsight) ;;
        *) die "refusing to purge $etc (does not end in /plainsight)" ;;
    esac
fi

if systemd_running; then
    systemctl disable --now plainsight.service 2>/dev/null || true
fi
rm -f "$unit_dir/plainsight.service"
if systemd_running; then
    systemctl daemon-reload
fi
rm -rf "$prefix"
if [ "$skip_user" != 1 ] && id -u "$user" >/dev/null 2>&1; then
    userdel "$user" 2>/dev/null || log "could not remove user $user"
    getent group "$user" >/dev/null && groupdel "$user" 2>/dev/null || true
fi
if [ "$purge" = 1 ]; then
    rm -rf "$etc"
    rm -f "$modules_dir/plainsight-snd-aloop.conf"
    log "removed plainsight, its configuration and the snd-aloop autoload"
else
    log "removed plainsight; kept $etc (use --purge to remove it)"
fi
