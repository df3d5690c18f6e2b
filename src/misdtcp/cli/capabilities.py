"""Capabilities instead of uid 0: what `serve` and `client` need is
CAP_NET_ADMIN (create and configure a TUN device or a veth pair), and on a
packet ring also CAP_NET_RAW (AF_PACKET sockets), whoever holds them.

A non-root user gets it for one command with, e.g.

    sudo setpriv --reuid=$(id -u) --regid=$(id -g) --init-groups \\
        --inh-caps +net_admin --ambient-caps +net_admin misdtcp serve
    (+net_admin,+net_raw for --device packet-ring)

(ambient, so that the `ip` commands misdtcp runs inherit it too).
"""
from __future__ import annotations

from misdtcp.cli.errors import UsageError

CAP_NET_RAW = 13            # linux/capability.h
CAP_NET_ADMIN = 12


def effective_capabilities(status_path: str = "/proc/self/status") -> int:
    """The effective capability set of this process, as a bit mask."""
    with open(status_path) as status:
        for line in status:
            if line.startswith("CapEff:"):
                return int(line.split()[1], 16)
    return 0


def has_net_admin() -> bool:
    return bool(effective_capabilities() >> CAP_NET_ADMIN & 1)


def has_net_raw() -> bool:
    return bool(effective_capabilities() >> CAP_NET_RAW & 1)


def require_net_admin(command: str, device: str = "tun") -> None:
    if not has_net_admin():
        what = "a veth pair" if device == "packet-ring" else "a TUN device"
        raise UsageError(f"{command} needs CAP_NET_ADMIN to create and configure {what} "
                         "(run it as root, or grant the capability: setpriv --ambient-caps +net_admin)")
    if device == "packet-ring" and not has_net_raw():
        raise UsageError(f"{command} --device packet-ring needs CAP_NET_RAW for its packet sockets "
                         "(run it as root, or grant it: setpriv --ambient-caps +net_admin,+net_raw)")
