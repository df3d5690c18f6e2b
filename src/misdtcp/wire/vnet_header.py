"""The virtio-net header in front of every TUN frame, for Python code and tests.

The Cython declaration is ``misdtcp/wire/vnet.pxd`` (struct ``virtio_net_hdr``);
this module packs and unpacks the same 12 bytes.  Layout (little endian, the
TUN's native vnet endianness on the hosts misdtcp runs on)::

    u8 flags | u8 gso_type | u16 hdr_len | u16 gso_size |
    u16 csum_start | u16 csum_offset | u16 num_buffers

misdtcp asks the kernel for the 12-byte ``virtio_net_hdr_v1`` layout with
TUNSETVNETHDRSZ; the kernel default is the 10-byte legacy header without
``num_buffers``.  ``unpack`` accepts both sizes.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass

VNET_HDR_LEN = 12
VNET_HDR_LEN_LEGACY = 10

F_NEEDS_CSUM = 1
F_DATA_VALID = 2

GSO_NONE = 0
GSO_TCPV4 = 1
GSO_UDP = 3
GSO_TCPV6 = 4
GSO_ECN = 0x80

_V1 = struct.Struct("<BBHHHHH")
_LEGACY = struct.Struct("<BBHHHH")


@dataclass(frozen=True)
class VnetHeader:
    flags: int = 0
    gso_type: int = GSO_NONE
    hdr_len: int = 0
    gso_size: int = 0
    csum_start: int = 0
    csum_offset: int = 0
    num_buffers: int = 0

    @property
    def needs_csum(self) -> bool:
        return bool(self.flags & F_NEEDS_CSUM)

    @property
    def data_valid(self) -> bool:
        return bool(self.flags & F_DATA_VALID)

    @property
    def is_gso(self) -> bool:
        return (self.gso_type & ~GSO_ECN) != GSO_NONE

    def pack(self, size: int = VNET_HDR_LEN) -> bytes:
        return pack(self, size)


def pack(header: VnetHeader, size: int = VNET_HDR_LEN) -> bytes:
    """Return the wire bytes of ``header`` for a TUN whose vnet header size is ``size``."""
    if size == VNET_HDR_LEN:
        return _V1.pack(header.flags, header.gso_type, header.hdr_len, header.gso_size,
                        header.csum_start, header.csum_offset, header.num_buffers)
    if size == VNET_HDR_LEN_LEGACY:
        return _LEGACY.pack(header.flags, header.gso_type, header.hdr_len, header.gso_size,
                            header.csum_start, header.csum_offset)
    raise ValueError(f"vnet header size must be {VNET_HDR_LEN} or {VNET_HDR_LEN_LEGACY}, not {size}.")


def unpack(data: bytes | bytearray | memoryview, size: int = VNET_HDR_LEN) -> VnetHeader:
    """Parse the vnet header at the start of ``data`` (a frame as read from the TUN)."""
    if size == VNET_HDR_LEN:
        return VnetHeader(*_V1.unpack_from(data, 0))
    if size == VNET_HDR_LEN_LEGACY:
        return VnetHeader(*_LEGACY.unpack_from(data, 0))
    raise ValueError(f"vnet header size must be {VNET_HDR_LEN} or {VNET_HDR_LEN_LEGACY}, not {size}.")


def split(data: bytes | bytearray | memoryview, size: int = VNET_HDR_LEN) -> tuple[VnetHeader, memoryview]:
    """Split a frame read from the TUN into its vnet header and the IP packet."""
    view = memoryview(data)
    if len(view) < size:
        raise ValueError(f"a TUN frame of {len(view)} bytes is shorter than its {size}-byte vnet header.")
    return unpack(view, size), view[size:]
