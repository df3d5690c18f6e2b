# Why a frame or segment was dropped: the index into the core's drop
# counters.  drops.pyx gives the printable names (DROP_NAMES), in this order.
# Parsers in this layer return the DROP_IP_* / DROP_TCP_* reasons; the core
# adds the protocol-level ones; an Ethernet device's link step the DROP_LINK_*
# and DROP_ARP_* ones.
cdef enum:
    DROP_NONE = 0
    DROP_IP_TRUNCATED        # shorter than an IP header, or than its total (payload) length
    DROP_IP_VERSION
    DROP_IP_HEADER_LENGTH
    DROP_IP_CHECKSUM
    DROP_IP_FRAGMENT
    DROP_NOT_FOR_US
    DROP_BAD_SOURCE          # broadcast, multicast, loopback, zero (or IPv4-mapped IPv6) source
    DROP_PROTOCOL            # neither TCP nor ICMP (ICMPv6), after any IPv6 extension headers
    DROP_ICMP                # ICMP we do not act on: malformed, or neither an echo request nor a TCP error
    DROP_TCP_HEADER          # data offset < 5 or beyond the segment
    DROP_TCP_CHECKSUM
    DROP_TCP_OPTIONS         # malformed option lengths
    DROP_TCP_FLAGS           # nonsensical flag combinations (SYN+FIN, SYN+RST, no ACK on data)
    DROP_BAD_GSO             # GSO metadata inconsistent with the frame
    DROP_NO_CONNECTION       # no connection or listener (a RST was sent when appropriate)
    DROP_LISTEN_BAD          # segment to a listener that is not a SYN
    DROP_BACKLOG_FULL        # no slot and no cookie possible
    DROP_TABLE_FULL          # connection table full
    DROP_BAD_COOKIE
    DROP_PAWS                # RFC 7323 §5 timestamp too old
    DROP_OUT_OF_WINDOW       # RFC 9293 acceptability test failed (an ACK was sent)
    DROP_RST_CHALLENGED      # RFC 5961 §3: in-window RST not at rcv_nxt
    DROP_RST_OUT_OF_WINDOW
    DROP_SYN_CHALLENGED      # RFC 5961 §4: SYN in a synchronized state
    DROP_ACK_UNSENT          # RFC 5961 §5: acknowledges data never sent
    DROP_ACK_TOO_OLD         # RFC 5961 §5: older than the max window behind snd_una
    DROP_SYN_SENT_BAD        # unacceptable segment in SYN-SENT
    DROP_REASSEMBLY_FULL     # too many out-of-order ranges
    DROP_AFTER_CLOSE         # data for a connection the application closed (RST sent)
    DROP_DATA_AFTER_FIN      # data (or another FIN) after the peer's FIN was taken
    DROP_TIME_WAIT           # in TIME-WAIT, anything but a bare ACK or RST at RCV.NXT (an ACK is sent)
    DROP_RST_TIME_WAIT       # a RST in TIME-WAIT ignored (RFC 1337, when enabled)
    DROP_ICMP_NO_CONNECTION  # an ICMP error quoting a segment of no connection of ours
    DROP_ICMP_STALE          # an ICMP error quoting a sequence number outside SND.UNA..SND.NXT (RFC 5927 §4.1)
    DROP_SYN_DATA            # data on a SYN or SYN-ACK, not queued (the peer sends it again)
    # the link layer of an Ethernet device (packet ring): frames that never
    # reach IPv4 validation
    DROP_LINK_TRUNCATED      # shorter than its Ethernet header, or cut short by the device's slot
    DROP_LINK_NOT_FOR_US     # destination MAC neither ours nor broadcast
    DROP_LINK_TYPE           # neither IPv4 nor ARP (IPv6, a VLAN tag, ...)
    DROP_ARP_NOT_FOR_US      # ARP other than a request for our address (replies, other targets)
    # IPv6 (wire/ipv6.pxd)
    DROP_IP6_EXT_HEADER      # IPv6 extension header malformed: truncated, overrunning, a bad option TLV or
                             # PadN, hop-by-hop not first (RFC 8200 §4.1-4.3), too many options
    DROP_IP6_EXT_CHAIN       # more IPv6 extension headers than a host takes (RFC 8504 §5.3)
    DROP_IP6_ROUTING         # a routing header with segments left: type 0 (RFC 5095 §3) or any other
                             # (RFC 8200 §4.4: a host routes nothing)
    DROP_IP6_OPTION          # an IPv6 option whose type says to discard the packet (RFC 8200 §4.2)
    DROP_REASON_COUNT
