#!/bin/sh
# Install the Debian packages the tests and the demo use, only when missing.
# iperf3: the stock client that drives `misdtcp serve`; nftables: loss in the
# stack->kernel direction; iproute2: namespaces, veth and TUN addresses.
set -e
need=""
command -v iperf3 >/dev/null 2>&1 || need="$need iperf3"
command -v nft >/dev/null 2>&1 || need="$need nftables"
command -v ip >/dev/null 2>&1 || need="$need iproute2"
[ -z "$need" ] && exit 0
if [ "$(id -u)" != 0 ]; then
    echo "misdtcp: missing Debian packages:$need (run as root, or install them)" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq $need >/dev/null
