#!/bin/sh
# A hand-driven lab: one network namespace with nothing but lo up, in which
# `misdtcp serve` creates its TUN and a kernel client talks to it.  All the
# traffic stays inside the namespace (DESIGN.md, "Network safety").
#
#   tools/lab.sh up [NAME]     create the namespace (default misdtcp-lab)
#   tools/lab.sh down [NAME]   delete its TUN devices and the namespace
#   tools/lab.sh status [NAME]
#
# Both commands are idempotent.
set -eu

NAME=${2:-misdtcp-lab}
die() { echo "lab.sh: $*" >&2; exit 1; }

case "$NAME" in
    *[!A-Za-z0-9_.-]*|"") die "'$NAME' is not a valid namespace name (letters, digits, '.', '_', '-')." ;;
esac
command -v ip >/dev/null 2>&1 || die "the ip command (iproute2) is missing; run 'make sysdeps'."
[ "$(id -u)" = 0 ] || die "network namespaces need root; run with sudo."

exists() { ip netns list | awk '{print $1}' | grep -qx "$NAME"; }

up() {
    if exists; then
        echo "namespace $NAME already exists; leaving it as it is."
    else
        ip netns add "$NAME"
        ip -n "$NAME" link set lo up
        # Dual stack: IPv6 stays on.  The TUN's IPv6 address is added without
        # duplicate address detection (serve does it), so it is usable at once;
        # router solicitations the kernel may send are dropped and counted.
        ip netns exec "$NAME" sysctl -q -w net.ipv6.conf.default.accept_dad=0 >/dev/null
        echo "created namespace $NAME (only lo is up)."
    fi
    cat <<MSG

Start the stack inside it (it creates the TUN misd0, kernel side 10.77.0.1/24
and fd00:77::1/64, stack at 10.77.0.2 and fd00:77::2; --no-ipv6 for IPv4 only):
    ip netns exec $NAME .venv/bin/misdtcp serve
Then, in another shell, drive it with the stock client from the kernel side:
    ip netns exec $NAME iperf3 -c 10.77.0.2 -t 10
    ip netns exec $NAME iperf3 -c 10.77.0.2 -t 10 -R
    ip netns exec $NAME iperf3 -6 -c fd00:77::2 -t 10
    ip netns exec $NAME ping -6 -c 3 fd00:77::2
See all options with: .venv/bin/misdtcp serve --help
When done:    tools/lab.sh down $NAME
MSG
}

down() {
    if ! exists; then
        echo "namespace $NAME does not exist; nothing to do."
        return 0
    fi
    # Persistent TUNs would outlive the namespace's processes; delete them first.
    for dev in $(ip -n "$NAME" -o link show type tun 2>/dev/null | awk -F': ' '{print $2}' | cut -d@ -f1); do
        ip -n "$NAME" link del "$dev" && echo "deleted TUN $dev."
    done
    pids=$(ip netns pids "$NAME" 2>/dev/null || true)
    if [ -n "$pids" ]; then
        echo "note: processes still run in $NAME (PIDs: $(echo $pids)); they keep it alive until they exit." >&2
    fi
    ip netns del "$NAME"
    echo "deleted namespace $NAME."
}

status() {
    if exists; then
        echo "namespace $NAME exists:"
        ip -n "$NAME" -br addr
    else
        echo "namespace $NAME does not exist."
    fi
}

case "${1:-}" in
    up) up ;;
    down) down ;;
    status) status ;;
    *) die "usage: tools/lab.sh up|down|status [NAME]" ;;
esac
