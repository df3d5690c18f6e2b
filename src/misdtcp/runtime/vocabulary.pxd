# The runtime's one vocabulary, shared by the C loops and the control path
# (runtime/vocabulary.pyx gives the same names to Python as IntEnums):
#
# * records -- what the sequencer writes into the log (Descriptor.kind);
# * requests -- what an application asks of the core, carried by the request
#   queue and then by REC_REQUEST records (Message.kind);
# * events -- what the core tells an application, carried by the event queue
#   (Message.kind); they are the core's notify codes (N_* in _tcpcore.pxd).

cdef enum:
    REC_FRAME = 1        # a whole frame in the data area (virtio_net_hdr + IP packet): what a
                         # descriptor cannot describe (SYN options, SACK blocks, ICMP, urgent data)
    REC_REQUEST = 2      # an application request drained from the request queue (a Message)
    REC_TICK = 3         # idle timer tick: only now_ns matters
    REC_DIGEST = 4       # debug: replicas compare a state digest at this position (round in `seq`)
    REC_STOP = 5         # end of the log
    REC_CHECKPOINT = 6   # workers snapshot their replica state here (recovery)
    REC_SEGMENT = 7      # a TCP segment described by the descriptor itself, payload in the data area
    REC_DROPPED = 8      # a frame the sequencer's validation dropped (`reason`)
    REC_PEER6 = 9        # the IPv6 address the following SEG_PEER6 segments come from (in the
                         # descriptor itself: wire/descriptor.pxd, describe_peer6)

cdef enum:
    REQ_LISTEN = 1       # a = port, b = backlog
    REQ_CONNECT = 2      # a = remote address | mss << 32, b = rport << 16 | lport | rcvbuf << 32, c = tag
    REQ_ACCEPTED = 3     # handle
    REQ_CONSUMED = 4     # handle, a = receive stream offset consumed
    REQ_SEND = 5         # handle, a = send stream offset written, b = 1: urgent up to there (RFC 6093)
    REQ_SHUTDOWN = 6     # handle
    REQ_CLOSE = 7        # handle
    REQ_ABORT = 8        # handle
    REQ_UNLISTEN = 9     # a = port
    REQ_SETOPT = 10      # handle = connection (or port, c = 1: a listener), a = OPT_*, b = value
    REQ_CONNECT6 = 11    # a, b = the IPv6 address (bytes 0..7 and 8..15 as big-endian words), c = tag,
                         # record = rport << 16 | lport | mss << 32, index = rcvbuf (requests carry no
                         # record or index of their own)
