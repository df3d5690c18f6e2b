"""veth pairs: two interfaces joined back to back, each end in a namespace."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from misdtcp.device.netns import Netns, NetnsError


@dataclass
class VethPair:
    """A veth pair with one end in each of two namespaces, addressed and up.

    Created from inside ``ns_a`` (``ip -n A link add ... peer ... netns B``), so
    no interface ever appears in the root namespace.
    """

    ns_a: Netns
    ns_b: Netns
    cidr_a: str = "10.78.0.1/24"
    cidr_b: str = "10.78.0.2/24"
    name_a: str = "veth-a"
    name_b: str = "veth-b"
    mtu: int = 1500
    _up: bool = field(default=False, init=False)

    def create(self) -> "VethPair":
        for ifname in (self.name_a, self.name_b):
            if not 1 <= len(ifname) <= 15:
                raise NetnsError(f"interface name {ifname!r} must be 1 to 15 characters.")
        self.ns_a.ip("link", "add", self.name_a, "mtu", str(self.mtu), "type", "veth",
                     "peer", "name", self.name_b, "mtu", str(self.mtu), "netns", self.ns_b.name)
        self._up = True
        self.ns_a.ip("addr", "add", self.cidr_a, "dev", self.name_a)
        self.ns_b.ip("addr", "add", self.cidr_b, "dev", self.name_b)
        self.ns_a.ip("link", "set", self.name_a, "up")
        self.ns_b.ip("link", "set", self.name_b, "up")
        return self

    @property
    def addr_a(self) -> str:
        return self.cidr_a.split("/")[0]

    @property
    def addr_b(self) -> str:
        return self.cidr_b.split("/")[0]

    def delete(self) -> None:
        if self._up:
            self._up = False
            # Deleting one end deletes the pair; the namespace may already be gone.
            if self.ns_a.exists:
                self.ns_a.ip("link", "del", self.name_a, check=False)

    def __enter__(self) -> "VethPair":
        return self.create()

    def __exit__(self, *exc: Any) -> None:
        self.delete()
