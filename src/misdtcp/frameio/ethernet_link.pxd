# The link layer of an Ethernet device, the one step both live loops (the
# sequencer, the `single` loop) take for every slot of a packet ring before
# the IP layer sees anything -- what a real interface does for its host:
#
# * a frame cut short by its slot (snaplen < len), shorter than its header,
#   VLAN-tagged, for another MAC address, or of a type other than IPv4 and
#   ARP is not ours: it is dropped with its reason (wire/drops.pxd);
# * an ARP request for our address is answered at once (wire/arp.pxd), on the
#   receive socket, with our MAC -- so the kernel on the other end resolves
#   the stack's address through the stack itself; other ARP is dropped;
# * an IPv4 frame goes on: where its IP packet lies in the slot, how long it
#   is, and what the device said about it (checksum state, GSO size) from the
#   virtio-net header in front of the frame.
#
# ARP and the link drops come before the frame stages (faults, pcap), which
# work on IP packets, as they do on a TUN.
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t
from libc.string cimport memcpy
from misdtcp._system cimport iovec, writev
from misdtcp.frameio.packet_ring cimport (tpacket2_hdr, RX_VNET_HDR_LEN, TP_STATUS_VLAN_VALID)
from misdtcp.wire.arp cimport ARP_FRAME_LEN, arp_is_request_for, write_arp_reply
from misdtcp.wire.drops cimport (DROP_NONE, DROP_LINK_TRUNCATED, DROP_LINK_NOT_FOR_US, DROP_LINK_TYPE,
                                 DROP_ARP_NOT_FOR_US)
from misdtcp.wire.ethernet cimport ETH_ALEN, ETH_HLEN, ETH_P_ARP, ETH_P_IP, eth_for_us, eth_type
from misdtcp.wire.vnet cimport (virtio_net_hdr, VNET_F_NEEDS_CSUM, VNET_HDR_LEN, vnet_frame_flags, vnet_gso_size,
                                vnet_is_gso)

cdef enum:
    LINK_IPV4 = DROP_NONE    # an IPv4 packet for the IP layer
    LINK_ANSWERED = 254      # an ARP request for our address, answered (nothing more to do)

ctypedef struct EthernetLink:
    uint8_t mac[6]           # the stack's end of the link
    uint8_t peer_mac[6]      # the kernel's end: the next hop of everything the stack sends
    uint32_t local_addr      # the stack's IPv4 address (host order)
    int reply_fd             # the receive socket (PACKET_VNET_HDR: a 10-byte header first)
    uint64_t arp_replies
    uint64_t arp_reply_errors

ctypedef struct LinkFrame:   # an IPv4 frame of one slot
    const uint8_t *ip        # its IP packet
    uint32_t ip_len          # bytes from there to the end of the frame
    uint32_t ip_off          # offset of the IP packet in the slot
    uint16_t flags           # FRAME_CSUM_* (wire/frame.pxd) from the virtio-net header
    uint16_t gso_size        # segment size of a GSO super-frame, else 0
    const virtio_net_hdr *vnet


cdef inline void link_answer_arp(EthernetLink *l, const uint8_t *request) noexcept nogil:
    """Write the reply to an ARP request for our address (a failed write is
    counted; the requester asks again)."""
    cdef uint8_t vnet[RX_VNET_HDR_LEN]
    cdef uint8_t reply[ARP_FRAME_LEN]
    cdef iovec iov[2]
    cdef uint32_t i
    for i in range(RX_VNET_HDR_LEN):
        vnet[i] = 0                       # no offload: a plain frame
    write_arp_reply(reply, request, l.mac, l.local_addr)
    iov[0].iov_base = vnet
    iov[0].iov_len = RX_VNET_HDR_LEN
    iov[1].iov_base = reply
    iov[1].iov_len = ARP_FRAME_LEN
    if writev(l.reply_fd, iov, 2) == RX_VNET_HDR_LEN + ARP_FRAME_LEN:
        l.arp_replies += 1
    else:
        l.arp_reply_errors += 1


cdef inline int link_receive(EthernetLink *l, tpacket2_hdr *h, LinkFrame *out) noexcept nogil:
    """The link step for the frame in slot `h` (the kernel handed it over):
    LINK_IPV4 with `out` filled, LINK_ANSWERED, or the reason to drop it."""
    cdef const uint8_t *slot = <const uint8_t *>h
    cdef const uint8_t *f = slot + h.tp_mac
    cdef uint32_t n = h.tp_snaplen
    cdef uint16_t kind
    if n < h.tp_len or n < ETH_HLEN or h.tp_net != h.tp_mac + ETH_HLEN:
        return DROP_LINK_TRUNCATED
    if not eth_for_us(f, l.mac):
        return DROP_LINK_NOT_FOR_US
    kind = eth_type(f)
    if h.tp_status & TP_STATUS_VLAN_VALID:
        return DROP_LINK_TYPE              # the device took an 802.1Q tag off: not our VLAN-less link
    if kind == ETH_P_IP:
        out.vnet = <const virtio_net_hdr *>(f - RX_VNET_HDR_LEN)
        out.ip = f + ETH_HLEN
        out.ip_off = h.tp_net
        out.ip_len = n - ETH_HLEN
        out.flags = vnet_frame_flags(out.vnet)
        out.gso_size = vnet_gso_size(out.vnet)
        return LINK_IPV4
    if kind == ETH_P_ARP:
        if arp_is_request_for(f + ETH_HLEN, n - ETH_HLEN, l.local_addr):
            link_answer_arp(l, f + ETH_HLEN)
            return LINK_ANSWERED
        return DROP_ARP_NOT_FOR_US
    return DROP_LINK_TYPE


cdef inline void link_init(EthernetLink *l, const uint8_t *mac, const uint8_t *peer_mac, uint32_t local_addr,
                           int reply_fd) noexcept nogil:
    cdef uint32_t i
    for i in range(ETH_ALEN):
        l.mac[i] = mac[i]
        l.peer_mac[i] = peer_mac[i]
    l.local_addr = local_addr
    l.reply_fd = reply_fd
    l.arp_replies = 0
    l.arp_reply_errors = 0


cdef inline uint32_t link_as_tun_frame(const LinkFrame *lf, uint8_t *buf, uint32_t room) noexcept nogil:
    """Copy the frame into `buf` as a TUN delivers one -- a VNET_HDR_LEN-byte
    virtio-net header whose offsets count from the IP packet, then the IP
    packet -- for the frame stages (faults, pcap), which work on that.
    Returns its length (0 if it does not fit `room`)."""
    cdef virtio_net_hdr *v = <virtio_net_hdr *>buf
    if VNET_HDR_LEN + lf.ip_len > room:
        return 0
    memcpy(buf, lf.vnet, RX_VNET_HDR_LEN)
    v.num_buffers = 0
    if v.flags & VNET_F_NEEDS_CSUM and v.csum_start >= ETH_HLEN:
        v.csum_start -= ETH_HLEN
    if vnet_is_gso(v) and v.hdr_len >= ETH_HLEN:
        v.hdr_len -= ETH_HLEN
    memcpy(buf + VNET_HDR_LEN, lf.ip, lf.ip_len)
    return VNET_HDR_LEN + lf.ip_len
