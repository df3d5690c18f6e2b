# cython: language_level=3
"""The Ethernet link step (ethernet_link.pxd) callable from Python, on a slot
built in memory: for tests and tools, which check what the live loops do with
each kind of frame without a namespace.  The stack itself runs the inline
functions of the .pxd."""
import ipaddress

from libc.stdint cimport uint8_t, uint16_t, uint32_t
from libc.stdlib cimport free, malloc
from libc.string cimport memcpy, memset

from misdtcp.frameio.packet_ring cimport tpacket2_hdr, RX_RESERVE, RX_VNET_HDR_LEN, TP_STATUS_USER
from misdtcp.wire.drops import DROP_NAMES

cdef enum:
    _SLOT = 65536 + 256
    _MAC_OFFSET = 80 + RX_RESERVE + RX_VNET_HDR_LEN - 14    # where a V2 ring with our options puts the frame


cdef class EthernetLinkStep:
    """``EthernetLinkStep(mac, peer_mac, "10.77.0.2", reply_fd)``: ``step(frame)``
    puts `frame` (from its Ethernet header) into a slot as the kernel would,
    with `vnet` (10 bytes) before it, and runs the link step on it.  Returns
    ("ipv4", ip_bytes, frame_flags, gso_size), ("answered",) after writing
    the ARP reply to `reply_fd`, or ("drop", reason name)."""
    cdef EthernetLink link
    cdef uint8_t *slot

    def __cinit__(self, bytes mac, bytes peer_mac, str local_address, int reply_fd=-1):
        if len(mac) != 6 or len(peer_mac) != 6:
            raise ValueError("MAC addresses are 6 bytes")
        self.slot = <uint8_t *>malloc(_SLOT)
        if self.slot == NULL:
            raise MemoryError()
        link_init(&self.link, <const uint8_t *><const char *>mac, <const uint8_t *><const char *>peer_mac,
                  int(ipaddress.IPv4Address(local_address)), reply_fd)

    def __dealloc__(self):
        free(self.slot)

    @property
    def arp_replies(self):
        return self.link.arp_replies

    def step(self, const uint8_t[::1] frame, *, bytes vnet=None, uint32_t status=TP_STATUS_USER,
             snaplen=None, wire_length=None, uint32_t net_offset=14):
        cdef tpacket2_hdr *h = <tpacket2_hdr *>self.slot
        cdef uint32_t n = frame.shape[0]
        cdef LinkFrame lf
        cdef int r
        if n > _SLOT - _MAC_OFFSET:
            raise ValueError("the frame does not fit a slot")
        memset(self.slot, 0, _MAC_OFFSET)
        if vnet is not None:
            if len(vnet) != RX_VNET_HDR_LEN:
                raise ValueError(f"the ring's virtio-net header is {RX_VNET_HDR_LEN} bytes")
            memcpy(self.slot + _MAC_OFFSET - RX_VNET_HDR_LEN, <const char *>vnet, RX_VNET_HDR_LEN)
        if n:
            memcpy(self.slot + _MAC_OFFSET, &frame[0], n)
        h.tp_status = status
        h.tp_len = n if wire_length is None else wire_length
        h.tp_snaplen = n if snaplen is None else snaplen
        h.tp_mac = _MAC_OFFSET
        h.tp_net = _MAC_OFFSET + net_offset
        r = link_receive(&self.link, h, &lf)
        if r == LINK_IPV4:
            return ("ipv4", bytes(lf.ip[:lf.ip_len]), lf.flags, lf.gso_size)
        if r == LINK_ANSWERED:
            return ("answered",)
        return ("drop", DROP_NAMES[r])

    def as_tun_frame(self, const uint8_t[::1] frame, bytes vnet):
        """What the frame stages get for `frame` (from its Ethernet header)
        with the 10-byte `vnet` before it: a VNET_HDR_LEN-byte virtio-net
        header whose offsets count from the IP packet, then the IP packet."""
        cdef uint8_t out[_SLOT]
        cdef uint32_t n
        result = self.step(frame, vnet=vnet)
        if result[0] != "ipv4":
            raise ValueError(f"not an IPv4 frame for us: {result}")
        cdef tpacket2_hdr *h = <tpacket2_hdr *>self.slot
        cdef LinkFrame lf
        link_receive(&self.link, h, &lf)
        n = link_as_tun_frame(&lf, out, _SLOT)
        return bytes(out[:n])
