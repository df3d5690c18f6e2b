# cython: language_level=3
"""The receive ring of an AF_PACKET socket: set up, mapped, read (tests).

``RxRing(fd, slot_size, slots)`` turns a fresh, unbound packet socket into a
TPACKET_V2 receive ring and maps it.  The socket options go in the one order
the kernel accepts (each of them answers EBUSY once a ring exists):

    PACKET_VNET_HDR 1        a virtio-net header with every frame: GSO size and
                             checksum state of super-frames (docs/DESIGN.md,
                             "Device facts")
    PACKET_IGNORE_OUTGOING 1 frames leaving the interface (the stack's own
                             sends, the kernel's) never enter the ring
    PACKET_VERSION V2        one slot per frame, given back one by one, no block
                             timer (V3 would wait up to its timeout for a lone
                             frame and pin a whole block for one straggler)
    PACKET_RESERVE 2         the IP header 4-aligned, a timestamped TCP
                             payload 16-aligned
    PACKET_RX_RING           slots of `slot_size` bytes in blocks that hold a
                             whole number of them, so slot i is at i * slot_size

The caller binds the socket to its interface afterwards: a packet socket
bound with a protocol before its ring exists queues frames on the socket,
which poll() then reports readable forever.

The mapping is MAP_SHARED, made in the process that creates the stack, so
every forked process (sequencer, workers, replacements) sees it at the same
address.  ``close()`` unmaps it here (the socket is the caller's).
"""
import errno as _errno
import os
import select
import struct

from libc.stdint cimport uint8_t, uint32_t, uint64_t
from libc.string cimport memcpy

from misdtcp._system cimport MAP_FAILED, MAP_SHARED, PROT_READ, PROT_WRITE, errno, getsockopt, mmap, munmap, \
    setsockopt

SOL_PACKET = 263
PACKET_RX_RING = 5
PACKET_STATISTICS = 6
PACKET_VERSION = 10
PACKET_RESERVE = 12
PACKET_VNET_HDR = 15
PACKET_IGNORE_OUTGOING = 23
PACKET_VNET_HDR_SZ = 24
TPACKET_V2 = 1
TPACKET_ALIGNMENT = 16
PAGE = 4096
BLOCK_TARGET = 1 << 20            # blocks of about 1 MiB: few large allocations for the kernel

SLOT_HEADER = sizeof(tpacket2_hdr)
RESERVE = RX_RESERVE
VNET_BYTES = RX_VNET_HDR_LEN
STATUS_USER = TP_STATUS_USER
STATUS_CSUMNOTREADY = TP_STATUS_CSUMNOTREADY
STATUS_CSUM_VALID = TP_STATUS_CSUM_VALID
STATUS_GSO_TCP = TP_STATUS_GSO_TCP
STATUS_VLAN_VALID = TP_STATUS_VLAN_VALID
STATUS_LOSING = TP_STATUS_LOSING

if sizeof(tpacket2_hdr) != 32:
    raise ImportError("misdtcp.frameio.packet_ring: tpacket2_hdr has an unexpected size")


def _gcd(a, b):
    while b:
        a, b = b, a % b
    return a


def geometry(slot_size, slots):
    """(block_size, block_count, slots) for at least `slots` slots of
    `slot_size` bytes: blocks a whole number of pages and of slots (so the
    slots lie back to back), of at most about BLOCK_TARGET bytes."""
    if slot_size % TPACKET_ALIGNMENT or slot_size <= SLOT_HEADER + 64:
        raise ValueError(f"a slot must be a multiple of {TPACKET_ALIGNMENT} bytes larger than its header, "
                         f"not {slot_size}")
    if slots < 1:
        raise ValueError(f"a ring needs at least one slot, not {slots}")
    unit = slot_size * PAGE // _gcd(slot_size, PAGE)        # lcm: whole pages and whole slots
    per_unit = unit // slot_size
    block = unit * max(1, min(BLOCK_TARGET // unit, (slots + per_unit - 1) // per_unit))
    per_block = block // slot_size
    blocks = (slots + per_block - 1) // per_block
    return block, blocks, blocks * per_block


cdef int _set_int(int fd, int name, int value) except -1:
    if setsockopt(fd, SOL_PACKET, name, &value, sizeof(int)) != 0:
        e = errno
        raise OSError(e, f"setsockopt(SOL_PACKET, {name}): {os.strerror(e)}")
    return 0


cdef class RxRing:
    """A TPACKET_V2 receive ring on the packet socket `fd`, mapped (see the
    module docstring).  `slots` is rounded up to whole blocks."""

    def __cinit__(self):
        self.rx.base = NULL
        self.rx.fd = -1
        self._head = 0
        self.lost = 0
        self.received = 0

    def __init__(self, int fd, uint32_t slot_size, uint32_t slots):
        cdef uint32_t req[4]
        cdef void *mapped
        block, blocks, total = geometry(slot_size, slots)
        _set_int(fd, PACKET_VNET_HDR, 1)
        _set_int(fd, PACKET_IGNORE_OUTGOING, 1)
        _set_int(fd, PACKET_VERSION, TPACKET_V2)
        _set_int(fd, PACKET_RESERVE, RX_RESERVE)
        req[0] = block
        req[1] = blocks
        req[2] = slot_size
        req[3] = total
        if setsockopt(fd, SOL_PACKET, PACKET_RX_RING, req, sizeof(req)) != 0:
            e = errno
            raise OSError(e, f"PACKET_RX_RING of {total} slots of {slot_size} bytes: {os.strerror(e)}")
        mapped = mmap(NULL, <uint64_t>block * blocks, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0)
        if mapped == MAP_FAILED:
            e = errno
            raise OSError(e, f"mapping the receive ring ({block * blocks} bytes): {os.strerror(e)}")
        self.rx.base = <uint8_t *>mapped
        self.rx.size = <uint64_t>block * blocks
        self.rx.slots = total
        self.rx.slot_size = slot_size
        self.rx.fd = fd
        self.block_size = block

    def close(self):
        """Unmap the ring in this process (forked children keep theirs until they end)."""
        if self.rx.base != NULL:
            munmap(self.rx.base, self.rx.size)
            self.rx.base = NULL

    def __dealloc__(self):
        self.close()

    @property
    def closed(self):
        return self.rx.base == NULL

    @property
    def slots(self):
        return self.rx.slots

    @property
    def slot_size(self):
        return self.rx.slot_size

    @property
    def size(self):
        return self.rx.size

    @property
    def address(self):
        """Where the ring is mapped (the same in every forked process)."""
        return <uint64_t>self.rx.base

    def fileno(self):
        return self.rx.fd

    def statistics(self):
        """Frames the kernel delivered to the ring and frames it dropped
        because the slot at its head was still ours, since the ring was made
        (PACKET_STATISTICS resets on every read, so this object keeps the
        sums; read it from one process only)."""
        cdef uint32_t st[2]
        cdef unsigned int n = sizeof(st)
        if self.rx.fd >= 0 and getsockopt(self.rx.fd, SOL_PACKET, PACKET_STATISTICS, st, &n) == 0:
            self.received += st[0] - st[1]      # tp_packets counts the drops too
            self.lost += st[1]
        return {"frames": self.received, "dropped": self.lost}

    # ---- reading from Python (device tests; the stack reads in C) ----------------

    def read(self, double timeout=1.0):
        """The next frame the kernel put into the ring, copied out, and its
        slot given back: a dict with the slot's `status`, `len`, `snaplen`,
        `mac`, `net` offsets, the 10 `vnet` bytes before the frame and the
        `frame` bytes (from the Ethernet header on).  None after `timeout`
        seconds without one.  Only while no stack reads this ring."""
        cdef tpacket2_hdr *h
        cdef const uint8_t *s
        self._check_open()
        h = rx_slot(&self.rx, self._head)
        if not rx_slot_ready(h):
            select.select([self.rx.fd], [], [], timeout)
            if not rx_slot_ready(h):
                return None
        s = <const uint8_t *>h
        frame = {"status": h.tp_status, "len": h.tp_len, "snaplen": h.tp_snaplen, "mac": h.tp_mac,
                 "net": h.tp_net, "vlan_tci": h.tp_vlan_tci,
                 "vnet": s[h.tp_mac - RX_VNET_HDR_LEN:h.tp_mac] if h.tp_mac >= RX_VNET_HDR_LEN else b"",
                 "frame": s[h.tp_mac:h.tp_mac + h.tp_snaplen]}
        rx_slot_give_back(h)
        self._head = rx_next(&self.rx, self._head)
        return frame

    def _check_open(self):
        if self.rx.base == NULL:
            raise ValueError("RxRing is closed")
