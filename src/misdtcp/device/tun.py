"""The TUN device misdtcp attaches to: the Linux kernel on its other side is the peer.

``Tun`` opens (or creates) a layer-3 TUN with ``IFF_TUN | IFF_NO_PI |
IFF_VNET_HDR`` through python-pytun, then configures it with plain ioctls
on the descriptor and with iproute2:

* ``TUNSETVNETHDRSZ`` = 12: every frame starts with a 12-byte
  ``virtio_net_hdr_v1`` (see ``misdtcp/wire/vnet.pxd`` and ``wire.vnet_header``).
* ``TUNSETOFFLOAD(TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6)`` when ``offload`` is
  on; with ``offload=False`` no offload flag is set, so the kernel sends
  MTU-sized frames with complete checksums, but the vnet header stays, so the
  read and write code is the same either way.

TUN facts verified by ``tests/test_device_tun.py`` (kernel 6.18, x86-64):

* The kernel's default vnet header size is 10 bytes (``TUNGETVNETHDRSZ``
  before we set it); misdtcp sets 12 so the IP header that follows sits
  4-byte aligned.  ``num_buffers`` reads as 0.
* With offload, frames the kernel sends are flagged ``NEEDS_CSUM``
  (csum_start = IP header length, csum_offset = 16 for TCP, 6 for UDP) and
  their L4 checksum field holds only the pseudo-header sum (folded, not
  inverted): never verify those.  ICMP echo requests come with flags = 0 and
  a complete checksum.
* Bulk TCP from a kernel socket arrives as GSO super-frames: gso_type TCPV4,
  gso_size = the MSS, hdr_len = IP + TCP header length, one frame carrying
  many MSS of payload (length far above the MTU).
* In those super-frames the IPv4 header checksum is valid and ``tot_len`` is
  the full length of the super-frame (so IP parsing needs no special case).
  The TCP checksum field of a super-frame holds the pseudo-header sum over
  the super-frame's whole L4 length (the kernel fixes it up per segment).
* Frames written into the TUN: the kernel accepts a ~60 kB GSO super-frame
  built the same way (NEEDS_CSUM, gso_type TCPV4, gso_size 1448, hdr_len,
  csum_start/offset, a valid IP header checksum, checksum field = that
  pseudo-header sum) and delivers every byte to the socket with one ACK.  A
  frame with flags = 0 must carry complete, valid checksums; a GSO
  super-frame written with flags = 0 and a full checksum over the whole
  super-frame is verified as one unit, and dropped whole if it is wrong
  (this is how ``frameio.faults`` corruption of super-frames behaves).
* An ICMP echo reply written with flags = 0 reaches the kernel's ping socket.

Errors while opening are raised as ``DeviceError`` with one clear sentence.
"""
from __future__ import annotations

import errno
import fcntl
import ipaddress
import os
import shutil
import struct
import subprocess
from typing import Any

from misdtcp.wire import vnet_header as vnet

# linux/if_tun.h: _IOW('T', n, int) = 0x400454nn, _IOR('T', n, int) = 0x800454nn
TUNSETPERSIST = 0x400454CB
TUNSETOFFLOAD = 0x400454D0
TUNGETIFF = 0x800454D2
TUNGETVNETHDRSZ = 0x800454D7
TUNSETVNETHDRSZ = 0x400454D8

TUN_F_CSUM = 0x01
TUN_F_TSO4 = 0x02
TUN_F_TSO6 = 0x04
TUN_F_TSO_ECN = 0x08

IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
IFF_VNET_HDR = 0x4000

OFFLOAD_FLAGS = TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6
MTU_MIN = 68  # RFC 791: every IPv4 module must forward a 68-byte datagram
MTU_MAX = 65535  # the TUN driver's max_mtu
TUN_PATH = "/dev/net/tun"


def _open_tun(name: str):
    """Create (or attach to) the layer-3 TUN `name` with a vnet header on every
    frame, through python-pytun: the one way misdtcp opens a TUN."""
    import pytun

    try:
        return pytun.TunTapDevice(name=name, flags=IFF_TUN | IFF_NO_PI | IFF_VNET_HDR)
    except pytun.Error as exc:
        # pytun.Error carries (errno, message): re-raise it as the OSError it is
        code = exc.args[0] if exc.args and isinstance(exc.args[0], int) else errno.EIO
        raise OSError(code, str(exc)) from None


class _TunOpener:
    """Opens the TUN and keeps the pytun object (which owns the descriptor)
    alive until the descriptor has been handed over."""

    def __init__(self, name: str):
        self.name = name
        self.device = None

    def __call__(self) -> int:
        self.device = _open_tun(self.name)
        return self.device.fileno()


class DeviceError(RuntimeError):
    """The TUN device could not be opened or configured; the message says why in one sentence."""


def _check_name(name: str) -> None:
    if not 1 <= len(name) <= 15 or "/" in name or any(c.isspace() for c in name):
        raise DeviceError(f"{name!r} is not a valid interface name (1 to 15 characters, no '/' or spaces).")


def _check_cidr(cidr: str) -> ipaddress.IPv4Interface:
    try:
        iface = ipaddress.IPv4Interface(cidr)
    except ValueError:
        raise DeviceError(f"{cidr!r} is not an IPv4 address with prefix length, like 10.77.0.1/24.") from None
    if "/" not in cidr:
        raise DeviceError(f"{cidr!r} needs a prefix length, like {cidr}/24.")
    if iface.network.prefixlen < 31 and iface.ip in (iface.network.network_address, iface.network.broadcast_address):
        raise DeviceError(f"{cidr} is the network or broadcast address of its subnet, not a host address.")
    return iface


def _check_cidr6(cidr: str) -> ipaddress.IPv6Interface:
    try:
        iface = ipaddress.IPv6Interface(cidr)
    except ValueError:
        raise DeviceError(f"{cidr!r} is not an IPv6 address with prefix length, like fd00:77::1/64.") from None
    if "/" not in cidr:
        raise DeviceError(f"{cidr!r} has no prefix length; write it like fd00:77::1/64.")
    if iface.ip.is_multicast or iface.ip.is_unspecified or iface.ip.is_loopback or iface.ip.ipv4_mapped:
        raise DeviceError(f"{cidr} is not a unicast address a TUN can have.")
    return iface


def _check_mtu(mtu: int) -> None:
    if not isinstance(mtu, int) or not MTU_MIN <= mtu <= MTU_MAX:
        raise DeviceError(f"MTU {mtu!r} is outside the range {MTU_MIN}..{MTU_MAX} a TUN accepts.")


class Tun:
    """An open TUN device with a vnet header on every frame.

    ``Tun("misd0", address="10.77.0.1/24", mtu=1500)`` creates ``misd0`` if it
    does not exist (or attaches to it if it does), gives the *kernel side* the
    address, sets the MTU and brings the link up.  ``address6`` (like
    ``fd00:77::1/64``) gives the kernel side an IPv6 address too, without
    duplicate address detection (a TUN has no link for another host to
    share: the address is usable at once, never "tentative").  ``netns`` (a
    ``device.netns.Netns`` or a namespace name) creates the device inside that
    namespace while this process stays where it is: the descriptor of
    ``/dev/net/tun`` is opened in the namespace and handed back.

    ``fd`` is the descriptor to read and write frames (``vnet_hdr_len`` bytes of
    virtio_net_hdr, then the IP packet).  ``close()`` deletes the device if this
    object created it, unless ``persistent`` is set.
    """

    def __init__(self, name: str = "misd0", address: str | None = None, mtu: int | None = 1500,
                 offload: bool = True, nonblocking: bool = False, persistent: bool = False,
                 netns: Any = None, address6: str | None = None):
        _check_name(name)
        iface = _check_cidr(address) if address is not None else None
        iface6 = _check_cidr6(address6) if address6 is not None else None
        if mtu is not None:
            _check_mtu(mtu)
        if iface6 is not None and mtu is not None and mtu < 1280:
            raise DeviceError(f"IPv6 needs an MTU of at least 1280 (RFC 8200 §5), not {mtu}.")
        self.name = name
        self.offload = offload
        self.persistent = persistent
        self.address = iface
        self.address6 = iface6
        self.mtu = mtu
        self.vnet_hdr_len = vnet.VNET_HDR_LEN
        self.default_vnet_hdr_len: int | None = None
        self._netns_name = getattr(netns, "name", netns)
        self._netns = netns
        self._fd = -1
        self._pytun = None
        if shutil.which("ip") is None:
            raise DeviceError("the `ip` command (iproute2) is missing; install iproute2.")
        self.created = not self._link_exists()
        self._open()
        try:
            self._configure_fd(nonblocking)
            self._configure_link()
        except BaseException:
            self.close()
            raise

    # -- opening ---------------------------------------------------------------
    def _open(self) -> None:
        if not os.path.exists(TUN_PATH) and self._netns_name is None:
            raise DeviceError(f"{TUN_PATH} does not exist; load the tun module (modprobe tun) or create the device node.")
        try:
            if self._netns_name is None:
                self._pytun = _open_tun(self.name)
                self._fd = self._pytun.fileno()
            else:
                # A TUN belongs to the namespace of whoever creates it: a child
                # inside the namespace creates it the same way, and hands the
                # descriptor back.
                self._fd = self._namespace().descriptor_from(_TunOpener(self.name), f"TUN {self.name}")
        except OSError as exc:
            raise self._open_error(exc.errno) from None
        except Exception as exc:  # pytun.Error carries (errno, message) in args
            code = exc.args[0] if exc.args and isinstance(exc.args[0], int) else None
            raise self._open_error(code, str(exc)) from None

    def _namespace(self):
        from .netns import Netns

        return self._netns if isinstance(self._netns, Netns) else Netns(name=self._netns_name)

    def _open_error(self, code: int | None, detail: str = "") -> DeviceError:
        if code == errno.ENOENT:
            return DeviceError(f"{TUN_PATH} does not exist; load the tun module (modprobe tun) or create the device node.")
        if code in (errno.EPERM, errno.EACCES):
            return DeviceError(f"no permission to open TUN {self.name}; run as root or grant CAP_NET_ADMIN.")
        if code == errno.EBUSY:
            return DeviceError(f"TUN {self.name} is busy: another process has it open.")
        if code == errno.EINVAL:
            return DeviceError(f"{self.name} exists but is not a TUN with matching flags (a TAP or a multi-queue TUN?).")
        return DeviceError(f"opening TUN {self.name} failed: {detail or os.strerror(code or errno.EIO)}.")

    def _configure_fd(self, nonblocking: bool) -> None:
        buf = fcntl.ioctl(self._fd, TUNGETVNETHDRSZ, struct.pack("i", 0))
        self.default_vnet_hdr_len = struct.unpack("i", buf)[0]
        fcntl.ioctl(self._fd, TUNSETVNETHDRSZ, struct.pack("i", self.vnet_hdr_len))
        fcntl.ioctl(self._fd, TUNSETOFFLOAD, OFFLOAD_FLAGS if self.offload else 0)
        if self.persistent:
            fcntl.ioctl(self._fd, TUNSETPERSIST, 1)
        os.set_blocking(self._fd, not nonblocking)

    # -- iproute2 ----------------------------------------------------------------
    def _ip_argv(self, *args: str) -> list[str]:
        if self._netns_name is None:
            return ["ip", *args]
        return ["ip", "-n", self._netns_name, *args]

    def _ip(self, *args: str, what: str) -> None:
        proc = subprocess.run(self._ip_argv(*args), capture_output=True, timeout=30)
        if proc.returncode != 0:
            reason = proc.stderr.decode(errors="replace").strip().splitlines()
            detail = reason[-1] if reason else "ip exited with " + str(proc.returncode)
            raise DeviceError(f"{what} on {self.name} failed: {detail.rstrip('.')}.")

    def _link_exists(self) -> bool:
        proc = subprocess.run(self._ip_argv("link", "show", "dev", self.name), capture_output=True, timeout=30)
        return proc.returncode == 0

    def _configure_link(self) -> None:
        if self.mtu is not None:
            self._ip("link", "set", "dev", self.name, "mtu", str(self.mtu), what=f"setting MTU {self.mtu}")
        if self.address is not None:
            # replace, not add: attaching to an existing TUN again is not an error
            self._ip("addr", "replace", str(self.address), "dev", self.name, what=f"setting address {self.address}")
        if self.address6 is not None:
            self._ip("-6", "addr", "replace", str(self.address6), "dev", self.name, "nodad",
                     what=f"setting IPv6 address {self.address6}")
        self._ip("link", "set", "dev", self.name, "up", what="bringing the link up")

    # -- use ----------------------------------------------------------------------
    @property
    def fd(self) -> int:
        return self._fd

    def fileno(self) -> int:
        return self._fd

    @property
    def closed(self) -> bool:
        return self._fd < 0

    def read(self, size: int = 65536 + vnet.VNET_HDR_LEN) -> bytes:
        """One frame: vnet header + IP packet (a GSO super-frame can reach 64 KiB)."""
        return os.read(self._fd, size)

    def readinto(self, buffer: bytearray | memoryview) -> int:
        return os.readv(self._fd, [buffer])

    def write(self, frame: bytes | bytearray | memoryview) -> int:
        """Write one frame: vnet header + IP packet."""
        return os.write(self._fd, frame)

    def close(self) -> None:
        """Close the descriptor; delete the device if we created it and it is not persistent."""
        if self._fd < 0:
            return
        if self._pytun is not None:
            self._pytun.close()
        else:
            os.close(self._fd)
        self._fd = -1
        self._pytun = None
        if self.created and not self.persistent and self._link_exists():
            # Closing the last descriptor of a non-persistent TUN removes it;
            # this only runs if something else (a TUNSETPERSIST from another
            # process) kept it alive.
            subprocess.run(self._ip_argv("link", "del", "dev", self.name), capture_output=True, timeout=30)

    def __enter__(self) -> "Tun":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        where = f" in {self._netns_name}" if self._netns_name else ""
        return f"Tun({self.name!r}{where}, fd={self._fd}, offload={self.offload})"
