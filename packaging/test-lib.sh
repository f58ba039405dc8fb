# Shared by packaging/test-deb.sh and packaging/test-unit.sh (sourced, not
# run): messages, the package to test, tools, the Debian 12 base system,
# and undoing mounts. The sourcing script sets TEST (its name for
# messages) and MIRROR.

say() { printf '==> %s\n' "$*"; }

fail() {
    printf '%s: FAILED: %s\n' "$TEST" "$*" >&2
    exit 1
}

# Unmounts whatever is mounted at or under $1, deepest first.
unmount_under() {
    awk -v root="$1" '$2 == root || index($2, root "/") == 1 { print $2 }' /proc/mounts |
        sort -r | while read -r m; do
            umount "$m" 2>/dev/null || umount -l "$m"
        done
}

# Sets deb to $1, else to the newest package cargo deb built.
find_deb() {
    deb=${1:-}
    if [ -z "$deb" ]; then
        top=$(cd "$(dirname "$0")/.." && pwd)
        target=${CARGO_TARGET_DIR:-$top/target}
        deb=$(ls -t "$target"/debian/peerstore_*.deb 2>/dev/null | head -n 1 || true)
        [ -n "$deb" ] || fail "no package in $target/debian: build one with cargo deb, or give its path"
    fi
    [ -f "$deb" ] || fail "$deb: no such file"
}

# Installs the Debian packages of the commands missing, given as
# COMMAND:PACKAGE.
need() {
    for tool in "$@"; do
        if ! command -v "${tool%%:*}" >/dev/null; then
            say "apt-get install ${tool#*:}"
            DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${tool#*:}"
        fi
    done
}

# Makes the pristine Debian 12 system $1 (debootstrap --variant=minbase,
# with the packages $2, comma-separated, if any) unless it is there
# already or $3 is 1. A run that dies half-way leaves $1.new, never a
# half-made $1.
make_base() {
    if [ "$3" = 1 ] || [ ! -f "$1/.complete" ]; then
        say "debootstrap bookworm into $1 (once)"
        unmount_under "$1.new"
        rm -rf --one-file-system "$1.new" "$1"
        debootstrap --variant=minbase ${2:+--include=$2} bookworm "$1.new" "$MIRROR"
        unmount_under "$1.new"
        touch "$1.new/.complete"
        mv "$1.new" "$1"
    fi
}

# Replaces $2 by a fresh copy of $1 (nothing may stay mounted under $2).
fresh_copy() {
    unmount_under "$2"
    if grep -q " $2[ /]" /proc/mounts; then
        fail "something is still mounted under $2"
    fi
    rm -rf --one-file-system "$2"
    cp -a "$1" "$2"
}
