"""The packet-ring device: misdtcp on one end of a veth pair, the Linux kernel
on the other, frames received through an AF_PACKET mmap ring.

``PacketRing("misd0", address="10.77.0.1/24")`` creates (or attaches to) a
veth pair inside a namespace:

    misd0    the kernel's end: it gets ``address`` (10.77.0.1/24); the kernel's
             TCP talks to the stack through it, as through a TUN of that name
    misd0s   the stack's end (``stack_end``): no address, so the kernel never
             answers for the stack; misdtcp's sockets are bound here

and sets the pair up the way a user-space stack on a real interface needs it
(docs/DESIGN.md, "Device facts"; every step verified on these kernels):

* IPv6 off on both ends before they come up: no router solicitations, MLD
  reports or duplicate-address probes in the ring;
* an nftables ``netdev`` ingress chain on the stack's end that drops every
  frame: packet sockets see frames before it (taps run first), the kernel's
  IP layer sees none -- no route lookup per frame, no ICMP, no RST, and no
  forwarding back out of the kernel's end whatever ``ip_forward`` says;
* offload on the kernel's end with ethtool: on, it hands the stack 64 KiB
  TCP GSO super-frames (one ring slot each) with partial checksums; off, it
  sends MTU-sized frames with complete checksums (``tx off tso off gso off``);
* the receive socket: a TPACKET_V2 ring (``frameio.packet_ring.RxRing``) with
  a virtio-net header per frame, our own output ignored, slots of 69632 bytes
  (a whole GSO super-frame) with offload and of 2048 bytes without, mapped
  once here so that every forked process of the stack sees it;
* one transmit socket per worker (``packet_link``), bound to the stack's end
  with a 12-byte virtio-net header (PACKET_VNET_HDR_SZ), as the executor
  writes it for a TUN: a worker queues its segments -- virtio-net header,
  Ethernet header and IP/TCP headers in one iovec, the payload straight from
  the send buffer in the other -- and writes a batch with one sendmmsg
  (runtime/executor.pyx), GSO super-frames where offload is on.

The stack answers ARP for its own address on the ring (frameio/ethernet_link):
no static neighbour entry is installed; the kernel resolves the stack's
address as it would any host's.  The kernel's end is the stack's next hop for
every destination; its MAC is read when the device is set up.

``close()`` closes every socket, unmaps the ring, removes the nftables table
and deletes the pair if this object created it.  Errors are ``DeviceError``
with one sentence.
"""
from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
from typing import Any

from misdtcp.device.tun import MTU_MIN, DeviceError, _check_cidr, _check_name
from misdtcp.frameio.packet_ring import (PACKET_VNET_HDR, PACKET_VNET_HDR_SZ, SOL_PACKET, RESERVE, SLOT_HEADER,
                                         VNET_BYTES, RxRing)
from misdtcp.runtime.live import PacketLink

ETH_P_ALL = 0x0003
ETH_HLEN = 14
TX_VNET_HDR_LEN = 12              # the executor's virtio_net_hdr_v1 (wire/vnet.pxd)
GSO_SLOT = 69632                  # 17 pages: the frame's offset + 14 + 65535 fit (FACTS: 65625 bytes)
MTU_MAX = 65535
DEFAULT_SLOTS_GSO = 1024          # 68 MiB: windows of several connections of 64 KiB frames
DEFAULT_SLOTS_MTU = 8192          # 16 MiB: a 4 MiB window is ~2900 full-sized frames


def slot_size_for(mtu: int, offload: bool) -> int:
    """Bytes per ring slot: a whole frame after the slot's header, reserve
    and virtio-net header -- a 64 KiB GSO super-frame with offload, an
    MTU-sized frame without (a power of two up to a page, whole pages above,
    so the ring's blocks stay small)."""
    if offload:
        return GSO_SLOT
    # tp_mac = TPACKET_ALIGN(32 + 20 + 16) + reserve + vnet - 14, then the frame
    need = 80 + RESERVE + VNET_BYTES + mtu
    if need <= 4096:
        size = 2048
        while size < need:
            size <<= 1
        return size
    return (need + 4095) // 4096 * 4096


def _check_mtu(mtu: int) -> None:
    if not isinstance(mtu, int) or not MTU_MIN <= mtu <= MTU_MAX:
        raise DeviceError(f"MTU {mtu!r} is outside the range {MTU_MIN}..{MTU_MAX} a veth accepts.")


def _mac_bytes(text: str) -> bytes:
    return bytes(int(part, 16) for part in text.split(":"))


class _PacketSocketOpener:
    """Opens an unbound AF_PACKET socket (protocol 0: it receives nothing
    until it is bound) inside the namespace; the descriptor is handed back."""

    def __call__(self) -> int:
        return socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0).detach()


class PacketRing:
    """A veth pair with the kernel on one end and a packet ring on the other
    (see the module docstring).  ``netns``: a ``device.netns.Netns`` or a
    namespace name (the pair lives there; this process stays where it is)."""

    def __init__(self, name: str = "misd0", address: str | None = "10.77.0.1/24", *, stack_end: str | None = None,
                 mtu: int = 1500, offload: bool = True, netns: Any = None, slots: int | None = None):
        _check_name(name)
        stack_end = stack_end if stack_end is not None else name + "s"
        _check_name(stack_end)
        if stack_end == name:
            raise DeviceError(f"the stack's end and the kernel's end of the veth pair are both named {name!r}.")
        self.address = _check_cidr(address) if address is not None else None
        _check_mtu(mtu)
        if slots is not None and (not isinstance(slots, int) or slots < 8):
            raise DeviceError(f"a packet ring needs at least 8 slots, not {slots!r}.")
        for tool, package in (("ip", "iproute2"), ("nft", "nftables"), ("ethtool", "ethtool")):
            if shutil.which(tool) is None:
                raise DeviceError(f"the `{tool}` command is missing; install {package}.")
        self.name = name
        self.stack_end = stack_end
        self.mtu = mtu
        self.offload = offload
        self.slot_size = slot_size_for(mtu, offload)
        self._netns_name = getattr(netns, "name", netns)
        self._netns = netns
        self._table = "misdtcp_" + re.sub(r"[^A-Za-z0-9_]", "_", stack_end)
        self._rx_socket: socket.socket | None = None
        self._tx_sockets: list[socket.socket] = []
        self.ring: RxRing | None = None
        self._nft = False
        kernel_exists, stack_exists = self._link_exists(name), self._link_exists(stack_end)
        if kernel_exists != stack_exists:
            present = name if kernel_exists else stack_end
            raise DeviceError(f"{present} exists but its partner {stack_end if kernel_exists else name} does not; "
                              f"attach to both ends of one veth pair or to neither.")
        self.created = not kernel_exists
        try:
            self._set_up(slots if slots is not None else
                         DEFAULT_SLOTS_GSO if offload else DEFAULT_SLOTS_MTU)
        except BaseException:
            self.close()
            raise

    # -- set-up ----------------------------------------------------------------
    def _argv(self, argv: list[str]) -> list[str]:
        if self._netns_name is None:
            return argv
        return ["ip", "netns", "exec", self._netns_name, *argv]

    def _run(self, argv: list[str], what: str, check: bool = True,
             input: bytes | None = None) -> subprocess.CompletedProcess:
        proc = subprocess.run(self._argv(argv), capture_output=True, timeout=30, input=input)
        if check and proc.returncode != 0:
            reason = proc.stderr.decode(errors="replace").strip().splitlines()
            raise DeviceError(f"{what} failed: {reason[-1] if reason else 'exit status ' + str(proc.returncode)}.")
        return proc

    def _ip(self, *args: str, what: str) -> subprocess.CompletedProcess:
        return self._run(["ip", *args], what)

    def _link_exists(self, ifname: str) -> bool:
        return self._run(["ip", "link", "show", "dev", ifname], "", check=False).returncode == 0

    def _packet_sockets_on(self, ifname: str) -> int:
        """How many packet sockets of the namespace are bound to `ifname`
        (/proc/net/packet, which is per namespace, names them by ifindex).
        A pair left behind by a serve that was SIGKILLed has none: it is
        attached to again; one a running stack reads from is busy."""
        shown = json.loads(self._ip("-j", "link", "show", "dev", ifname, what=f"reading {ifname}").stdout)
        index = shown[0]["ifindex"]
        table = self._run(["cat", "/proc/net/packet"], "reading /proc/net/packet").stdout.decode().splitlines()
        # sk RefCnt Type Proto Iface R Rmem User Inode
        return sum(1 for line in table[1:] if len(line.split()) > 4 and int(line.split()[4]) == index)

    def _mac(self, ifname: str) -> bytes:
        shown = json.loads(self._ip("-j", "link", "show", "dev", ifname, what=f"reading the MAC of {ifname}").stdout)
        return _mac_bytes(shown[0]["address"])

    def _set_up(self, slots: int) -> None:
        if self.created:
            self._ip("link", "add", self.name, "mtu", str(self.mtu), "type", "veth", "peer", "name", self.stack_end,
                     "mtu", str(self.mtu), what=f"creating the veth pair {self.name}/{self.stack_end}")
        else:
            kind = json.loads(self._ip("-j", "-d", "link", "show", "dev", self.name,
                                       what=f"reading {self.name}").stdout)[0]
            if kind.get("linkinfo", {}).get("info_kind") != "veth":
                raise DeviceError(f"{self.name} exists but is not a veth.")
            if kind.get("link") != self.stack_end:
                raise DeviceError(f"{self.name} and {self.stack_end} are not the two ends of one veth pair.")
            if self._packet_sockets_on(self.stack_end):
                raise DeviceError(f"{self.stack_end} is busy: a packet socket is bound to it already "
                                  f"(another misdtcp serve?).")
            for ifname in (self.name, self.stack_end):
                self._ip("link", "set", "dev", ifname, "mtu", str(self.mtu), what=f"setting MTU {self.mtu}")
        # no IPv6 on the pair: its chatter (RS, MLD, DAD) would only be dropped
        for ifname in (self.name, self.stack_end):
            self._run(["sysctl", "-q", "-w", f"net.ipv6.conf.{ifname}.disable_ipv6=1"],
                      f"turning IPv6 off on {ifname}", check=False)
        # the kernel's IP layer never sees what arrives on the stack's end
        ruleset = (f"table netdev {self._table} {{\n"
                   f"  chain drop_all {{\n"
                   f"    type filter hook ingress device \"{self.stack_end}\" priority 0; policy drop;\n"
                   f"  }}\n"
                   f"}}\n")
        self._run(["nft", "delete", "table", "netdev", self._table], "", check=False)
        self._run(["nft", "-f", "-"], f"installing the ingress drop on {self.stack_end}", input=ruleset.encode())
        self._nft = True
        settings = ["tx", "on", "tso", "on", "gso", "on"] if self.offload else ["tx", "off", "tso", "off", "gso", "off"]
        self._run(["ethtool", "-K", self.name, *settings], f"setting offload {'on' if self.offload else 'off'} "
                                                            f"on {self.name}")
        if self.address is not None:
            self._ip("addr", "replace", str(self.address), "dev", self.name, what=f"setting address {self.address}")
        self.mac = self._mac(self.stack_end)
        self.peer_mac = self._mac(self.name)
        # the ring first, then the bind: a packet socket bound before its ring
        # exists queues frames, and poll() reports it readable for ever after
        fd = self._socket()
        self._rx_socket = socket.socket(fileno=fd)
        try:
            self.ring = RxRing(fd, self.slot_size, slots)
        except OSError as exc:
            raise DeviceError(f"setting up the receive ring of {slots} slots of {self.slot_size} bytes failed: "
                              f"{exc.strerror or exc}.") from None
        self._bind(self._rx_socket, ETH_P_ALL)
        self._rx_socket.setblocking(False)
        for ifname in (self.stack_end, self.name):
            self._ip("link", "set", "dev", ifname, "up", what=f"bringing {ifname} up")

    def _namespace(self):
        from misdtcp.device.netns import Netns

        return self._netns if isinstance(self._netns, Netns) else Netns(name=self._netns_name)

    def _socket(self) -> int:
        """A fresh AF_PACKET socket of the pair's namespace (the namespace of a
        socket is where it was created; its interface names resolve there)."""
        try:
            if self._netns_name is None:
                return _PacketSocketOpener()()
            return self._namespace().descriptor_from(_PacketSocketOpener(), "a packet socket")
        except OSError as exc:
            raise DeviceError(f"opening a packet socket failed: {exc.strerror}; it needs root (CAP_NET_RAW).") \
                from None

    def _bind(self, sock: socket.socket, protocol: int) -> None:
        try:
            sock.bind((self.stack_end, protocol))
        except OSError as exc:
            raise DeviceError(f"binding a packet socket to {self.stack_end} failed: {exc.strerror}.") from None

    # -- use ----------------------------------------------------------------------
    def packet_link(self, workers: int) -> PacketLink:
        """What the runtime needs: the ring, a transmit socket for each of
        `workers` workers (made on first use, kept until close), the MACs."""
        if self.ring is None or self.ring.closed:
            raise DeviceError(f"the packet ring on {self.stack_end} is closed.")
        while len(self._tx_sockets) < workers:
            sock = socket.socket(fileno=self._socket())
            self._tx_sockets.append(sock)
            sock.setsockopt(SOL_PACKET, PACKET_VNET_HDR, 1)
            sock.setsockopt(SOL_PACKET, PACKET_VNET_HDR_SZ, TX_VNET_HDR_LEN)
            # protocol 0: it sends (the type comes from each frame's Ethernet
            # header) and receives nothing, so frames are not cloned to it
            self._bind(sock, 0)
        return PacketLink(ring=self.ring, transmit_fds=tuple(s.fileno() for s in self._tx_sockets[:workers]),
                          mac=self.mac, peer_mac=self.peer_mac)

    @property
    def kernel_ifname(self) -> str:
        """The kernel's interface towards the stack (frames the stack sends
        arrive there: where nftables loss in that direction goes)."""
        return self.name

    def fileno(self) -> int:
        """The receive socket (the ring's)."""
        return self._rx_socket.fileno() if self._rx_socket is not None else -1

    @property
    def closed(self) -> bool:
        return self._rx_socket is None

    def statistics(self) -> dict:
        """Frames the kernel put into the ring, and frames it dropped because
        the slot at its head was still the stack's."""
        return self.ring.statistics() if self.ring is not None and not self.ring.closed else \
            {"frames": 0, "dropped": 0}

    def close(self) -> None:
        """Close the sockets, unmap the ring, remove the ingress drop, delete
        the pair if we created it.  Idempotent."""
        for sock in self._tx_sockets:
            sock.close()
        self._tx_sockets = []
        if self.ring is not None:
            self.ring.close()
        if self._rx_socket is not None:
            self._rx_socket.close()
            self._rx_socket = None
        if self._nft:
            self._nft = False
            self._run(["nft", "delete", "table", "netdev", self._table], "", check=False)
        if self.created and self._link_exists(self.name):
            self.created = False
            self._run(["ip", "link", "del", "dev", self.name], "", check=False)

    def __enter__(self) -> "PacketRing":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        where = f" in {self._netns_name}" if self._netns_name else ""
        return f"PacketRing({self.name!r}/{self.stack_end!r}{where}, offload={self.offload})"


__all__ = ["PacketRing", "DeviceError", "slot_size_for"]
