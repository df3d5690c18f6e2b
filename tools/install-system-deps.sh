#!/bin/sh
# Install the Debian packages misdtcp's build, tests and demo call, only those
# that are missing:
#   ip, ss            iproute2     namespaces, veth, TUN addresses; socket state
#   nft               nftables     loss in the stack->kernel direction
#   iperf3            iperf3       the stock client that drives `misdtcp serve`
#   ping              iputils-ping the stock `ping -6` the IPv6 tests answer
#   sysctl            procps       per-namespace settings (IPv6 off on IPv4-only test TUNs)
#   setpriv, unshare  util-linux   the CLI's not-root and no-/dev/net/tun tests
#   mount             mount        ditto
#   cc                gcc, libc6-dev  compiling the Cython extensions
#   Python.h, venv    python3-dev, python3-venv  when PYTHON is Debian's python3
set -e
PYTHON=${PYTHON:-python3}
need=""
want() { command -v "$1" >/dev/null 2>&1 || need="$need $2"; }
want ip iproute2
want ss iproute2
want nft nftables
want iperf3 iperf3
want ping iputils-ping
want sysctl procps
want setpriv util-linux
want unshare util-linux
want mount mount
want cc gcc
[ -e /usr/include/stdio.h ] || need="$need libc6-dev"
py=$(command -v "$PYTHON" || true)
if [ -n "$py" ] && [ "$(readlink -f "$py" | cut -c1-9)" = "/usr/bin/" ]; then
    "$PYTHON" -c 'import sysconfig, os, sys; sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))' \
        || need="$need python3-dev"
    "$PYTHON" -c 'import ensurepip' 2>/dev/null || need="$need python3-venv"
fi
need=$(echo $need | tr ' ' '\n' | sort -u | tr '\n' ' ')
[ -z "$(echo $need | tr -d ' ')" ] && exit 0
if [ "$(id -u)" != 0 ]; then
    echo "misdtcp: missing Debian packages: $need(run as root, or install them)" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq $need >/dev/null
