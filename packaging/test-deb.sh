#!/bin/sh
# Installs the Debian package on a fresh Debian 12 (bookworm) and checks it:
# in a debootstrap chroot, `apt-get install ./peerstore_*.deb` (fuse3 and
# libc come from the Debian mirror), `peerstore --version`, the files in
# place; then `dpkg -r` and `dpkg --purge` must leave no file behind, once
# with no instance enabled and once with one.
#
#   cargo install cargo-deb && cargo deb    # target/debian/peerstore_*.deb
#   sudo packaging/test-deb.sh [DEB]        # default: the newest one built
#
# Root (debootstrap, chroot, mount). Rerunnable: the pristine system
# (debootstrap --variant=minbase, a few minutes, once) is kept in $BASE and
# copied to a new $WORK at every run; PEERSTORE_DEB12_FRESH=1 makes it
# again. The chroot's mounts are undone at every exit, failures and ^C
# included. Settings: PEERSTORE_DEB12_BASE, PEERSTORE_DEB12_WORK,
# PEERSTORE_DEB12_MIRROR, PEERSTORE_DEB12_SECURITY (mirror URLs).
set -eu

BASE=${PEERSTORE_DEB12_BASE:-/var/tmp/peerstore-deb12-base}
WORK=${PEERSTORE_DEB12_WORK:-/var/tmp/peerstore-deb12}
MIRROR=${PEERSTORE_DEB12_MIRROR:-http://deb.debian.org/debian}
SECURITY=${PEERSTORE_DEB12_SECURITY:-http://deb.debian.org/debian-security}

TEST=test-deb
# shellcheck source=packaging/test-lib.sh
. "$(dirname "$0")/test-lib.sh"

cleanup() {
    unmount_under "$WORK"
    unmount_under "$BASE.new"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

[ "$(id -u)" = 0 ] || fail "run me as root (debootstrap, chroot, mount)"
find_deb "${1:-}"
say "package $deb ($(du -h "$deb" | cut -f1))"

need debootstrap:debootstrap
make_base "$BASE" "" "${PEERSTORE_DEB12_FRESH:-0}"
say "fresh copy in $WORK"
fresh_copy "$BASE" "$WORK"
cat >"$WORK/etc/apt/sources.list" <<EOF
deb $MIRROR bookworm main
deb $MIRROR bookworm-updates main
deb $SECURITY bookworm-security main
EOF
cp /etc/resolv.conf "$WORK/etc/resolv.conf"
mount -t proc proc "$WORK/proc"
mount --bind /dev "$WORK/dev"
mount -t devpts -o newinstance,ptmxmode=0666 devpts "$WORK/dev/pts"

# Runs a command in the chroot with a clean environment.
in_chroot() {
    chroot "$WORK" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin \
        DEBIAN_FRONTEND=noninteractive LC_ALL=C.UTF-8 HOME=/root "$@"
}

# Every path of the chroot's system (not apt's and dpkg's own state, logs,
# caches or /tmp), to tell what an install left behind.
snapshot() {
    (cd "$WORK" && find . -xdev \
        \( -path ./var/lib/dpkg -o -path ./var/lib/apt -o -path ./var/cache \
        -o -path ./var/log -o -path ./tmp -o -path ./proc -o -path ./dev \) -prune \
        -o -print) | sort >"$1"
}

say "apt-get update"
in_chroot apt-get update -q
# fuse3 first: it stays installed after the package is purged, as on a
# real machine, so the snapshots compare the package's files alone.
say "apt-get install fuse3 (the dependency)"
in_chroot apt-get install -y -q fuse3
snapshot "$WORK/tmp/before"

name=$(basename "$deb")
cp "$deb" "$WORK/tmp/$name"

install_and_check() {
    say "apt-get install ./$name"
    in_chroot sh -c "cd /tmp && apt-get install -y -q ./$name"
    say "peerstore --version"
    version=$(in_chroot peerstore --version)
    printf '%s\n' "$version"
    case $version in
    "peerstore "*" (commit "*", wire "*", disk "*")") ;;
    *) fail "unexpected --version: $version" ;;
    esac
    say "Depends: $(in_chroot dpkg-query -W -f='${Depends}' peerstore)"
    for f in /usr/bin/peerstore \
        /usr/share/man/man1/peerstore.1.gz \
        /usr/share/man/man1/peerstore-node.1.gz \
        /usr/share/man/man1/peerstore-block-put.1.gz \
        /usr/share/bash-completion/completions/peerstore \
        /usr/share/zsh/vendor-completions/_peerstore \
        /usr/share/fish/vendor_completions.d/peerstore.fish \
        /lib/systemd/system/peerstore@.service; do
        [ -f "$WORK$f" ] || fail "$f is not installed"
    done
    say "$(in_chroot dpkg-query -L peerstore | grep -c .) paths installed, among them $(ls "$WORK"/usr/share/man/man1/peerstore*.1.gz | wc -l) man pages"
    say "peerstore init; peerstore invite --qr"
    in_chroot sh -c 'umask 077 && peerstore init --data /tmp/ps >/dev/null &&
        peerstore invite --data /tmp/ps --addr 192.0.2.1:7400 --qr | head -n 4'
    rm -rf "$WORK/tmp/ps"
}

# Fails if anything differs from the snapshot taken before the install.
nothing_left() {
    snapshot "$WORK/tmp/after"
    if ! diff "$WORK/tmp/before" "$WORK/tmp/after" >"$WORK/tmp/diff"; then
        cat "$WORK/tmp/diff" >&2
        fail "$1 left the paths above behind"
    fi
    if in_chroot dpkg-query -W peerstore >/dev/null 2>&1; then
        fail "$1: dpkg still knows the package"
    fi
    say "$1: nothing left"
}

install_and_check
say "dpkg -r peerstore (no instance enabled)"
in_chroot dpkg -r peerstore
for f in /usr/bin/peerstore /lib/systemd/system/peerstore@.service; do
    [ ! -e "$WORK$f" ] || fail "dpkg -r left $f"
done
say "dpkg --purge peerstore"
in_chroot dpkg --purge peerstore
nothing_left "dpkg -r, then dpkg --purge"

install_and_check
say "enable an instance as systemctl enable peerstore@alice would, then dpkg --purge"
made=""
for d in /etc/systemd /etc/systemd/system /etc/systemd/system/multi-user.target.wants; do
    [ -d "$WORK$d" ] || { mkdir "$WORK$d" && made="$WORK$d $made"; }
done
ln -s /lib/systemd/system/peerstore@.service \
    "$WORK/etc/systemd/system/multi-user.target.wants/peerstore@alice.service"
in_chroot dpkg --purge peerstore
# The directories made above, deepest first (not empty: the link stayed).
for d in $made; do
    rmdir "$d" 2>/dev/null || true
done
nothing_left "dpkg --purge with an enabled instance"

say "test-deb: OK ($name on Debian $(cat "$WORK/etc/debian_version"))"
