#!/bin/sh
# Runs peerstore@.service under a real systemd: boots a Debian 12 container
# (systemd-nspawn) with the package installed, a seed node and the unit
# enabled for a user alice, and checks that
# - the node joins through the ticket credential, and the folder it mounts
#   is visible outside the service;
# - it holds CAP_SYS_ADMIN alone, with NoNewPrivs and a seccomp filter;
# - no ticket shows in ps, systemctl show or the journal;
# - stop unmounts cleanly (exit 0, no unmount warnings);
# - without the ticket file it starts again and rejoins;
# - after SIGKILL it is restarted and mounts again;
# - dpkg -r stops it, and dpkg --purge removes its enablement link.
#
#   cargo deb && sudo packaging/test-unit.sh [DEB]    # default: newest built
#
# Root; needs systemd-nspawn (systemd-container) and debootstrap, installed
# with apt-get if missing, and /dev/fuse. Rerunnable: the container's base
# system is made once in $BASE and copied for every run. The container is
# stopped (by PID) and its mounts undone at every exit. Works without
# systemd as PID 1 on the host.
set -eu

BASE=${PEERSTORE_NSPAWN_BASE:-/var/tmp/peerstore-nspawn-base}
WORK=${PEERSTORE_NSPAWN_WORK:-/var/tmp/peerstore-nspawn}
MIRROR=${PEERSTORE_DEB12_MIRROR:-http://deb.debian.org/debian}
FUSE_NODE="$WORK.fuse"

TEST=test-unit
# shellcheck source=packaging/test-lib.sh
. "$(dirname "$0")/test-lib.sh"

nspawn_pid=""
cleanup() {
    if [ -n "$nspawn_pid" ] && kill -0 "$nspawn_pid" 2>/dev/null; then
        kill "$nspawn_pid" 2>/dev/null || true
        sleep 3
        kill -9 "$nspawn_pid" 2>/dev/null || true
    fi
    unmount_under "$WORK"
    unmount_under "$BASE.new"
    rm -f "$FUSE_NODE"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

[ "$(id -u)" = 0 ] || fail "run me as root"
[ -c /dev/fuse ] || fail "no /dev/fuse"

find_deb "${1:-}"
name=$(basename "$deb")
need systemd-nspawn:systemd-container debootstrap:debootstrap
make_base "$BASE" systemd,systemd-sysv,dbus,fuse3,procps "${PEERSTORE_NSPAWN_FRESH:-0}"

say "fresh container in $WORK, with $name"
fresh_copy "$BASE" "$WORK"
cp "$deb" "$WORK/root/$name"
chroot "$WORK" dpkg -i "/root/$name" >/dev/null
chroot "$WORK" useradd -m alice
echo peerstore-test >"$WORK/etc/hostname"
# A seed node (root's), the network alice joins; her ticket names it.
chroot "$WORK" sh -c 'umask 077 && mkdir -p /etc/peerstore &&
    peerstore init --data /root/net >/dev/null &&
    peerstore invite --data /root/net --addr 127.0.0.1:7499 >/etc/peerstore/alice.ticket'
# Settings, none secret: the dashboard on.
echo 'PEERSTORE_HTTP=--http 127.0.0.1:7480' >"$WORK/etc/peerstore/alice.env"
cat >"$WORK/etc/systemd/system/peerstore-seed.service" <<'EOF'
[Service]
ExecStart=/usr/bin/peerstore node --listen 127.0.0.1:7499 --data /root/net
[Install]
WantedBy=multi-user.target
EOF
chroot "$WORK" systemctl enable peerstore-seed.service peerstore@alice.service 2>/dev/null
ticket=$(cat "$WORK/etc/peerstore/alice.ticket")

# The container's own /dev/fuse, mode 0666 as udev makes it on Debian,
# without touching the host's.
rm -f "$FUSE_NODE"
mknod -m 0666 "$FUSE_NODE" c 10 229

say "boot the container"
systemd-nspawn -D "$WORK" -b --register=no --keep-unit -M peerstore-test \
    --bind="$FUSE_NODE:/dev/fuse" >"$WORK.console" 2>&1 &
nspawn_pid=$!
init=""
i=0
while [ $i -lt 60 ]; do
    init=$(pgrep -P "$nspawn_pid" | head -n 1 || true)
    if [ -n "$init" ] && state=$(nsenter -t "$init" -a systemctl is-system-running 2>/dev/null); then
        case $state in running | degraded) break ;; esac
    fi
    i=$((i + 1))
    sleep 1
done
[ $i -lt 60 ] || fail "the container did not boot (see $WORK.console)"

# Runs a command in the container.
c() {
    nsenter -t "$init" -a env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin SYSTEMD_PAGER= "$@"
}
wait_for() {
    what=$1
    shift
    i=0
    until "$@" >/dev/null 2>&1; do
        i=$((i + 1))
        if [ $i -ge 60 ]; then
            c journalctl -u peerstore@alice -u peerstore-seed --no-pager -n 40 >&2 || true
            fail "$what: not within 60 s"
        fi
        sleep 1
    done
}
members() {
    c peerstore ring --json --ticket-file /root/ticket 2>/dev/null | grep -o '"addr"' | wc -l
}
two_members() { [ "$(members)" = 2 ]; }
mounted() { c grep -q " /home/alice/PeerStore fuse" /proc/1/mounts; }
cp "$WORK/etc/peerstore/alice.ticket" "$WORK/root/ticket"

say "peerstore@alice: joins through the credential, mounts"
wait_for "peerstore@alice active" c systemctl is-active peerstore@alice
wait_for "a ring of 2" two_members
wait_for "the folder mounted" mounted
c systemctl status peerstore@alice --no-pager | sed -n 1,3p
c grep " /home/alice/PeerStore " /proc/1/mounts
c su alice -c 'stat -c "alice sees %n: %U:%G %a" ~/PeerStore'
c su alice -c 'echo hello >~/PeerStore/by-alice.txt && cat ~/PeerStore/by-alice.txt' >/dev/null ||
    fail "alice cannot create a file in her folder"

say "the dashboard's /metrics (PEERSTORE_HTTP)"
metrics() {
    c bash -c 'exec 3<>/dev/tcp/127.0.0.1/7480 &&
        printf "GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n" >&3 && cat <&3' |
        grep -q '^peerstore_ring_member 1'
}
wait_for "the dashboard's metrics" metrics

say "the process: one capability, no new privileges, seccomp"
pid=$(c systemctl show -p MainPID --value peerstore@alice)
c grep -E '^(Uid|CapEff|CapBnd|CapAmb|NoNewPrivs|Seccomp):' "/proc/$pid/status"
c grep -q '^CapEff:.*0000000000200000$' "/proc/$pid/status" || fail "capabilities"
c grep -q '^NoNewPrivs:.*1$' "/proc/$pid/status" || fail "NoNewPrivs"
c grep -q '^Seccomp:.*2$' "/proc/$pid/status" || fail "no seccomp filter"
c ls -l "/run/credentials/peerstore@alice.service/ticket"

say "no ticket in ps, systemctl show or the journal"
for source in "ps -eo args" "systemctl show peerstore@alice" "journalctl --no-pager"; do
    # shellcheck disable=SC2086
    if c $source | grep -qF "$ticket"; then
        fail "$source shows the ticket"
    fi
done

# What a restart without the ticket rejoins through: the members the node
# saved (every 10 s, and when it stops).
wait_for "the members saved" c test -s /home/alice/.local/share/peerstore/seen

say "systemctl stop: exit 0, unmounted, no unmount warning"
c systemctl stop peerstore@alice
[ "$(c systemctl show -p ExecMainStatus --value peerstore@alice)" = 0 ] || fail "exit status"
if mounted; then fail "still mounted after stop"; fi
if c journalctl -u peerstore@alice --no-pager | grep -iE "unmount failed|failed to unmount"; then
    fail "unmount warnings"
fi

say "without the ticket file: starts from the kept secret, rejoins"
c rm /etc/peerstore/alice.ticket
c systemctl start peerstore@alice
wait_for "peerstore@alice active" c systemctl is-active peerstore@alice
wait_for "the folder mounted" mounted
wait_for "a ring of 2 again" two_members
c wc -c "/run/credentials/peerstore@alice.service/ticket"

say "SIGKILL: restarted, mounted again"
pid=$(c systemctl show -p MainPID --value peerstore@alice)
c kill -9 "$pid"
restarted() { [ "$(c systemctl show -p NRestarts --value peerstore@alice)" -ge 1 ]; }
wait_for "a restart" restarted
wait_for "the folder mounted again" mounted

say "dpkg -r stops the node; dpkg --purge removes its enablement"
c dpkg -r peerstore >/dev/null
[ "$(c systemctl is-active peerstore@alice || true)" != active ] || fail "still running after dpkg -r"
if mounted; then fail "still mounted after dpkg -r"; fi
c dpkg --purge peerstore >/dev/null
[ ! -e "$WORK/etc/systemd/system/multi-user.target.wants/peerstore@alice.service" ] ||
    fail "purge left the enablement link"

c systemctl poweroff || true
wait "$nspawn_pid" || true
nspawn_pid=""
say "test-unit: OK ($name under $(chroot "$WORK" systemctl --version | head -n 1))"
