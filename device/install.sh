#!/bin/bash
# Install plainsight on a device from the unpacked bundle (run as root):
#   sudo ./install.sh [--online] [--capture-device plughw:CARD=X,DEV=0] [--sink aloop|fifo|tcp|wyoming]
# Creates a venv under /opt/plainsight, installs offline from ./wheels (or from the
# package index with --online), writes /etc/plainsight/plainsight.conf (an existing one is
# kept; the new default goes to plainsight.conf.new), creates the system user
# `plainsight` (group audio), installs and enables plainsight.service. Idempotent.
#
# Test/image overrides: --root DIR (installs under DIR/opt, DIR/etc, ...; no systemctl,
# no user), or PLAINSIGHT_PREFIX / PLAINSIGHT_ETC / PLAINSIGHT_UNIT_DIR / PLAINSIGHT_MODULES_DIR,
# PLAINSIGHT_SKIP_USER=1, PLAINSIGHT_SKIP_SYSTEMCTL=1.
set -euo pipefail

bundle="$(cd "$(dirname "$(readlink -f "$0")")" && pwd)"
log() { echo "install.sh: $*"; }
die() {
    echo "install.sh: error: $*" >&2
    exit 1
}

online=0
root=""
capture=""
sink="aloop"
python="${PLAINSIGHT_PYTHON:-python3}"
user="${PLAINSIGHT_USER:-plainsight}"
while [ $# -gt 0 ]; do
    case "$1" in
        --online) online=1 ;;
        --root) root="${2:?--root needs a directory}"; shift ;;
        --capture-device) capture="${2:?--capture-device needs a value}"; shift ;;
        --sink) sink="${2:?--sink needs aloop, fifo, tcp or wyoming}"; shift ;;
        --python) python="${2:?--python needs an interpreter}"; shift ;;
        -h | --help) sed -n '2,11p' "$0"; exit 0 ;;
        *) die "unknown option $1 (see --help)" ;;
    esac
    shift
done
case "$sink" in aloop | fifo | tcp | wyoming) ;; *) die "--sink must be aloop, fifo, tcp or wyoming, got '$sink'" ;; esac

# 1. Integrity: every file of the bundle must match SHA256SUMS before anything is touched.
[ -f "$bundle/SHA256SUMS" ] || die "$bundle/SHA256SUMS missing: not an unpacked plainsight bundle"
(cd "$bundle" && sha256sum --quiet --strict -c SHA256SUMS) || die "bundle fails its SHA256SUMS check; re-download it"
unlisted="$(cd "$bundle" && comm -23 <(find . -type f ! -path ./SHA256SUMS | sed 's|^\./||' | LC_ALL=C sort) \
    <(cut -c67- SHA256SUMS | LC_ALL=C sort))"
[ -z "$unlisted" ] || die "bundle holds files not in SHA256SUMS: $(echo $unlisted)"
version="$(cat "$bundle/VERSION")"
log "bundle $version verified"
# shellcheck source=paths.sh
. "$bundle/paths.sh" install.sh

wheel="$(ls "$bundle"/wheels/plainsight-*.whl 2>/dev/null | head -n1)"
[ -n "$wheel" ] || die "no plainsight wheel in $bundle/wheels"
"$python" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null ||
    die "$python missing or older than 3.10 (apt-get install python3 python3-venv)"

# 2. Virtual environment and packages (offline from the bundle unless --online).
venv="$prefix/venv"
if [ ! -x "$venv/bin/python" ]; then
    log "creating venv $venv"
    mkdir -p "$prefix"
    "$python" -m venv "$venv" || die "cannot create a venv (apt-get install python3-venv)"
fi
pip=("$venv/bin/python" -m pip --disable-pip-version-check -q install)
if [ "$online" = 1 ]; then
    pip+=(--find-links "$bundle/wheels")
else
    pip+=(--no-index --find-links "$bundle/wheels")
fi
log "installing $(basename "$wheel") ($([ "$online" = 1 ] && echo online || echo offline))"
reinstall=0
"$venv/bin/python" -c 'import plainsight' 2>/dev/null && reinstall=1
"${pip[@]}" "$wheel" || die "pip install failed (offline: does the bundle hold wheels for this CPU and Python? else use --online)"
if [ "$reinstall" = 1 ]; then
    # Same version may be a rebuild: always put this bundle's runtime in place.
    "${pip[@]}" --force-reinstall --no-deps "$wheel" || die "pip install of $(basename "$wheel") failed"
fi
if ls "$bundle"/wheels/ai_edge_litert-*.whl >/dev/null 2>&1; then
    "${pip[@]}" ai-edge-litert || log "optional TFLite backend not installed (onnxruntime is used)"
fi
"$venv/bin/plainsight" --version >/dev/null || die "installed plainsight does not run"

# 3. Pipeline scripts and docs.
install -d -m 0755 "$prefix/bin" "$prefix/share"
install -m 0755 "$bundle/bin/plainsight-pipeline" "$bundle/bin/plainsight-tcp-sink" "$prefix/bin/"
install -m 0644 "$bundle/README.md" "$bundle/VERSION" "$prefix/share/"
ln -sfn "$venv/bin/plainsight" "$prefix/bin/plainsight"

# 4. Configuration (kept if present).
if [ -z "$capture" ]; then
    # First card that can record and is not the loopback, by its stable id.
    card="$(first_capture_card)"
    capture="plughw:CARD=${card:-CHANGE_ME},DEV=0"
    [ -n "$card" ] || log "no sound card that can record found: edit PLAINSIGHT_CAPTURE_DEVICE in $etc/plainsight.conf"
fi
install -d -m 0755 "$etc"
rendered="$(mktemp)"
sed -e "s|@CAPTURE_DEVICE@|$capture|" -e "s|@SINK@|$sink|" "$bundle/plainsight.conf" >"$rendered"
if [ -f "$etc/plainsight.conf" ]; then
    if ! cmp -s "$rendered" "$etc/plainsight.conf"; then
        install -m 0644 "$rendered" "$etc/plainsight.conf.new"
        log "kept existing $etc/plainsight.conf (new defaults in plainsight.conf.new)"
    fi
else
    install -m 0644 "$rendered" "$etc/plainsight.conf"
    log "wrote $etc/plainsight.conf (capture $capture, sink $sink)"
fi
rm -f "$rendered"
if grep -q '^PLAINSIGHT_SINK=aloop' "$etc/plainsight.conf"; then
    install -d -m 0755 "$modules_dir"
    echo snd-aloop >"$modules_dir/plainsight-snd-aloop.conf"
    if [ -z "$root" ] && command -v modprobe >/dev/null && ! modprobe snd-aloop 2>/dev/null; then
        log "could not load snd-aloop now; it loads at next boot ($modules_dir)"
    fi
fi

if grep -q '^PLAINSIGHT_SINK=wyoming' "$etc/plainsight.conf" &&
    ! "$venv/bin/python" -c 'import wyoming' 2>/dev/null; then
    # The Wyoming mic service needs the optional wyoming package (pure Python).
    "${pip[@]}" "$wheel[wyoming]" ||
        die "sink wyoming needs the wyoming package: build the bundle with --with-wyoming, or use --online"
    log "installed the wyoming package (sink wyoming: Wyoming mic service)"
fi

# 5. System user, member of audio (no home, no login).
if [ "$skip_user" = 1 ]; then
    log "skipping user creation (test/--root install)"
else
    if ! getent group "$user" >/dev/null; then groupadd --system "$user"; fi
    if ! id -u "$user" >/dev/null 2>&1; then
        useradd --system --gid "$user" --groups audio --no-create-home \
            --home-dir /nonexistent --shell /usr/sbin/nologin "$user"
        log "created system user $user"
    else
        usermod -a -G audio "$user"
    fi
fi

# 6. systemd unit.
install -d -m 0755 "$unit_dir"
sed -e "s|@PREFIX@|$prefix|g" -e "s|@ETC@|$etc|g" -e "s|^User=plainsight|User=$user|" \
    -e "s|^Group=plainsight|Group=$user|" "$bundle/plainsight.service" >"$unit_dir/plainsight.service.tmp"
chmod 0644 "$unit_dir/plainsight.service.tmp"
mv -f "$unit_dir/plainsight.service.tmp" "$unit_dir/plainsight.service"
if [ "$skip_systemctl" = 1 ]; then
    log "skipping systemctl (test/--root install): enable with 'systemctl enable --now plainsight'"
elif systemd_running; then
    systemctl daemon-reload
    systemctl enable plainsight.service
    systemctl restart plainsight.service
    log "plainsight.service enabled and (re)started; logs: journalctl -u plainsight -f"
else
    log "systemd is not running here: unit installed but not enabled (run 'systemctl enable --now plainsight' on the device)"
fi
log "installed plainsight $version in $prefix; check with: $prefix/bin/plainsight doctor"
