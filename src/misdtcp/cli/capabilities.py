"""Capabilities instead of uid 0: what `serve` and `client` need is
CAP_NET_ADMIN (create and configure a TUN device), whoever holds it.

A non-root user gets it for one command with, e.g.

    sudo setpriv --reuid=$(id -u) --regid=$(id -g) --init-groups \\
        --inh-caps +net_admin --ambient-caps +net_admin misdtcp serve

(ambient, so that the `ip` commands misdtcp runs inherit it too).
"""
from __future__ import annotations

from misdtcp.cli.errors import UsageError

CAP_NET_ADMIN = 12          # linux/capability.h


def effective_capabilities(status_path: str = "/proc/self/status") -> int:
    """The effective capability set of this process, as a bit mask."""
    with open(status_path) as status:
        for line in status:
            if line.startswith("CapEff:"):
                return int(line.split()[1], 16)
    return 0


def has_net_admin() -> bool:
    return bool(effective_capabilities() >> CAP_NET_ADMIN & 1)


def require_net_admin(command: str) -> None:
    if not has_net_admin():
        raise UsageError(f"{command} needs CAP_NET_ADMIN to create and configure a TUN device "
                         "(run it as root, or grant the capability: setpriv --ambient-caps +net_admin)")
