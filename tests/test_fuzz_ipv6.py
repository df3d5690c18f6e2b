"""Structure-aware fuzzing of IPv6 input (hypothesis).

A dual-stack core holds an established IPv6 connection (data both ways, an
out-of-order island) and a listener.  Hypothesis builds IPv6 frames on that
connection's 4-tuple and gets them wrong on purpose: extension-header chains
of any length and order (hop-by-hop, destination options, routing, fragment,
unknown next headers) with any option TLVs, header lengths and segments
left, payload lengths shorter and longer than the frame, truncation,
addresses, next-header values, checksums, and ICMPv6 messages of any type
and code quoting anything.  Every frame goes to a single replica, a split
pair (replica 0 and 1 of 2), and a twin fed through the sequencer's
describing code and the log (REC_PEER6 and all).

The oracle, after every frame: nothing raises, the action list never
overflows; the frame lands in exactly one bucket (a parse-level drop, an
answered echo, an ICMPv6 error taken for a connection or dropped as about
none or stale, or a TCP segment); the pair agrees with the single replica
(digest, segments, copies); the log twin agrees too (digest, drops, copied
bytes); a copy lies inside the frame's payload and the receive window.
After the script the connection still takes valid in-order data and copies
it to its offset."""
from __future__ import annotations

import struct

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from hypothesis_profiles import examples
from misdtcp._ring import BroadcastRing
from misdtcp._tcpcore import Copy, Notify, TcpCore, Transmit
from misdtcp.runtime.replay_image import action_bytes, apply_descriptor, release_to
from misdtcp.runtime.sequencer import LogWriter

MS = 1_000_000
STACK6 = bytes.fromhex("fd000077000000000000000000000002")
KERNEL6 = bytes.fromhex("fd000077000000000000000000000001")
PORT, SPORT = 5201, 40000
CONFIG = dict(local_address6="fd00:77::2", secret=7, rcvbuf=16384, sndbuf=16384, max_connections=16,
              action_capacity=4096)
PARSE_DROPS = {"ip_truncated", "ip_version", "ip_header_length", "ip_checksum", "ip_fragment", "not_for_us",
               "bad_source", "protocol", "icmp", "tcp_header", "tcp_checksum", "tcp_options", "tcp_flags",
               "bad_gso", "ip6_ext_header", "ip6_ext_chain", "ip6_routing", "ip6_option",
               "icmp_no_connection", "icmp_stale"}    # the last two: ICMP errors about no segment of ours
ACK, PSH, SYN, FIN, RST = 0x10, 0x08, 0x02, 0x01, 0x04


def csum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def tcp(seq, ack, flags, payload=b"", options=b"", src=KERNEL6, dst=STACK6, good_csum=True):
    options += b"\x01" * (-len(options) % 4)
    seg = bytearray(struct.pack("!HHIIBBHHH", SPORT, PORT, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF,
                                ((20 + len(options)) // 4) << 4, flags, 65535, 0, 0) + options + payload)
    c = csum(src + dst + struct.pack("!II", len(seg), 6) + bytes(seg))
    seg[16:18] = struct.pack("!H", c if good_csum else c ^ 0x0F0F)
    return bytes(seg)


def icmp6(kind, code, body, src=KERNEL6, dst=STACK6, good_csum=True):
    m = bytearray(struct.pack("!BBH", kind, code, 0) + body)
    c = csum(src + dst + struct.pack("!II", len(m), 58) + bytes(m))
    m[2:4] = struct.pack("!H", c if good_csum else c ^ 0x0F0F)
    return bytes(m)


def ipv6(first_nh, ext, l4, src=KERNEL6, dst=STACK6, plen=None, hop_limit=64):
    body = ext + l4
    return struct.pack("!IHBB16s16s", 6 << 28, len(body) if plen is None else plen & 0xFFFF, first_nh,
                       hop_limit, src, dst) + body


class World6:
    def __init__(self):
        self.core = TcpCore("10.77.0.2", **CONFIG)
        self.pair = [TcpCore("10.77.0.2", **CONFIG, replica=i, replicas=2) for i in range(2)]
        self.twin = TcpCore("10.77.0.2", **CONFIG)
        self.ring = BroadcastRing(1 << 10, 1 << 20, 1, name="misdtcp-fuzz6")
        self.writer = LogWriter(self.ring, "10.77.0.2", coalesce=False, local_address6="fd00:77::2")
        self.seen = 0
        self.now = 1000 * MS
        self.stream = bytearray()
        self.conn = None

    def close(self):
        self.ring.close()

    def event(self, method, *args):
        self.now += MS
        outs = [getattr(c, method)(*args, now=self.now) for c in [self.core, self.twin] + self.pair]
        return outs[0]

    def frame(self, data: bytes):
        self.now += MS
        drops0, stats0 = self.core.drops(), self.core.stats()
        ref = self.core.frame(data, self.now)
        outs = [c.frame(data, self.now) for c in self.pair]
        # replicas agree: digest, segments (ordered only marks owner changes), copies
        assert all(c.digest() == self.core.digest() for c in self.pair)
        key = repr
        assert sorted((a for a in ref if isinstance(a, Transmit)), key=key) == \
            sorted((a._replace(ordered=False) for o in outs for a in o if isinstance(a, Transmit)), key=key)
        copied = _bytes((a.stream_offset, data[a.frame_offset:a.frame_offset + a.length])
                        for a in ref if isinstance(a, Copy))
        assert _bytes((a.stream_offset, data[a.frame_offset:a.frame_offset + a.length])
                      for o in outs for a in o if isinstance(a, Copy)) == copied
        # the log twin: through the sequencer's describing code, position by position
        assert self.writer.frame(struct.pack("<BBHHHHH", 0, 0, 0, 0, 0, 0, 0) + data, self.now)
        self.writer.commit()
        twin_copied = []
        while self.seen < self.ring.available():
            for a in apply_descriptor(self.twin, self.ring, self.seen):
                if isinstance(a, Copy):
                    twin_copied.append((a.stream_offset, action_bytes(self.ring, self.seen, a.frame_offset,
                                                                      a.length)))
            self.seen += 1
        release_to(self.ring, 0, self.seen)
        assert self.twin.digest() == self.core.digest(), "the log and the frame path diverged"
        assert self.twin.drops() == self.core.drops()
        assert _bytes(twin_copied) == copied
        assert self.core.action_overflow == 0
        # one bucket
        drops1, stats1 = self.core.drops(), self.core.stats()
        parse = sum(drops1.get(k, 0) - drops0.get(k, 0) for k in PARSE_DROPS)
        buckets = parse + sum(stats1[k] - stats0[k] for k in ("tcp_segments", "icmp6_echo", "icmp_echo",
                                                             "icmp_errors"))
        assert buckets == 1, (drops0, drops1)
        # copies stay in the payload of a segment of our connection, inside the window
        c = self.core.conn(self.conn) if self.conn is not None else None
        for a in ref:
            if isinstance(a, Copy):
                assert a.handle == self.conn and a.frame_offset + a.length <= len(data)
                assert c is None or a.stream_offset + a.length <= c["consumed_off"] + CONFIG["rcvbuf"]
                end = a.stream_offset + a.length
                if len(self.stream) < end:
                    self.stream.extend(b"\0" * (end - len(self.stream)))
                self.stream[a.stream_offset:end] = data[a.frame_offset:a.frame_offset + a.length]
        return ref

    def setup(self):
        self.event("listen", PORT)
        syn = tcp(0x7000, 0, SYN, options=struct.pack("!BBH", 2, 4, 1440) + b"\x04\x02" +
                  struct.pack("!BBII", 8, 10, 100, 0) + b"\x01\x03\x03\x07")
        out = self.frame(ipv6(6, b"", syn))
        iss = struct.unpack("!I", [a for a in out if isinstance(a, Transmit)][0].header[44:48])[0]
        out = self.frame(ipv6(6, b"", tcp(0x7001, iss + 1, ACK, options=b"\x01\x01" +
                                          struct.pack("!BBII", 8, 10, 101, 0))))
        self.conn = [a for a in out if isinstance(a, Notify) and a.event == "accepted"][0].handle
        self.event("accepted", self.conn)
        self.data(b"first" * 50)
        self.event("send", self.conn, 3000)
        s = self.core.conn(self.conn)
        self.frame(ipv6(6, b"", self.segment(seq=s["rcv_nxt"] + 400, payload=b"island" * 20)))
        return self

    def segment(self, seq=None, payload=b"", flags=ACK | PSH, **kw):
        s = self.core.conn(self.conn)
        ts = b"\x01\x01" + struct.pack("!BBII", 8, 10, s["ts_recent"] + 1, 0) if s["ts_ok"] else b""
        return tcp(s["rcv_nxt"] if seq is None else seq, s["snd_una"], flags, payload, ts, **kw)

    def data(self, payload):
        s = self.core.conn(self.conn)
        off = s["rcv_nxt_off"]
        self.frame(ipv6(6, b"", self.segment(payload=payload)))
        assert bytes(self.stream[off:off + len(payload)]) == payload


def _bytes(copies):
    """Copies as {stream offset: byte}: a copy split at a stripe edge by a
    replica pair compares equal to the whole one."""
    out = {}
    for off, chunk in copies:
        for i, b in enumerate(bytes(chunk)):
            out[off + i] = b
    return out


# --- strategies -----------------------------------------------------------

HOP, ROUTING, FRAGMENT, DSTOPTS, NONE = 0, 43, 44, 60, 59
next_header = st.one_of(st.sampled_from([6, 58, HOP, ROUTING, FRAGMENT, DSTOPTS, NONE, 17, 50, 51, 135]),
                        st.integers(0, 255))
tlv = st.one_of(st.just(b"\x00"), st.builds(lambda n: bytes([1, n]) + b"\0" * n, st.integers(0, 8)),
                st.builds(lambda n, b: bytes([1, n]) + b, st.integers(0, 6), st.binary(min_size=1, max_size=6)),
                st.builds(lambda t, b: bytes([t, len(b)]) + b, st.integers(2, 255), st.binary(max_size=10)),
                st.builds(lambda t, n: bytes([t, n]), st.integers(0, 255), st.integers(0, 255)))


@st.composite
def ext_header(draw, nh):
    """One extension header of some kind, followed by `nh`, usually well formed."""
    kind = draw(st.sampled_from([HOP, DSTOPTS, ROUTING, FRAGMENT]))
    if kind == FRAGMENT:
        return kind, bytes([nh, 0]) + struct.pack("!HI", draw(st.sampled_from([0, 1, 8, 0xfff8, 0xfff9]) |
                                                              st.integers(0, 0xffff)), draw(st.integers(0, 2**32 - 1)))
    if kind == ROUTING:
        body = bytes([draw(st.sampled_from([0, 2, 3, 4]) | st.integers(0, 255)),
                      draw(st.sampled_from([0, 1, 2]) | st.integers(0, 255))]) + draw(st.binary(max_size=36))
    else:
        body = b"".join(draw(st.lists(tlv, max_size=10)))
    raw = bytes([nh, 0]) + body
    raw += b"\0" * (-len(raw) % 8)
    hlen = len(raw) // 8 - 1
    if draw(st.sampled_from([False] * 9 + [True])):
        hlen = draw(st.integers(0, 255))           # a lying header length
    return kind, bytes([nh, hlen & 0xFF]) + raw[2:]


@st.composite
def hostile_frame(draw, w: World6):
    """An IPv6 frame on the live 4-tuple, mutated."""
    l4_kind = draw(st.sampled_from(["tcp", "tcp", "tcp", "icmp6", "icmp6", "raw"]))
    if l4_kind == "tcp":
        s = w.core.conn(w.conn)
        flags = draw(st.sampled_from([ACK | PSH, ACK, ACK | FIN, RST, SYN]) | st.integers(0, 255))
        payload = draw(st.binary(max_size=300))
        good = draw(st.booleans()) or draw(st.booleans())
        if s is None:                              # the script ended the connection: any 4-tuple's numbers
            l4 = tcp(draw(st.integers(0, 2**32 - 1)), draw(st.integers(0, 2**32 - 1)), flags, payload,
                     good_csum=good)
        else:
            seq = s["rcv_nxt"] + draw(st.sampled_from([0, 0, 1, -1, 500]) | st.integers(-70000, 70000))
            l4 = w.segment(seq=seq, payload=payload, flags=flags, good_csum=good)
        final = 6
    elif l4_kind == "icmp6":
        s = w.core.conn(w.conn)
        qseq = (s["snd_una"] if s else 0) + draw(st.sampled_from([0, 0, 1, 100, -1]) | st.integers(-3000, 3000))
        quoted = ipv6(6, b"", struct.pack("!HHI", PORT, SPORT, qseq & 0xFFFFFFFF) + bytes(12),
                      src=STACK6, dst=KERNEL6)
        if draw(st.sampled_from([False] * 5 + [True])):
            quoted = quoted[:draw(st.integers(0, len(quoted)))]
        l4 = icmp6(draw(st.sampled_from([1, 1, 2, 2, 3, 4, 128, 128, 129, 133, 135, 136]) | st.integers(0, 255)),
                   draw(st.sampled_from([0, 0, 0, 1, 3, 4]) | st.integers(0, 255)),
                   struct.pack("!I", draw(st.sampled_from([0, 68, 1000, 1280, 1300, 1500, 65535]) |
                                         st.integers(0, 2**32 - 1))) + quoted,
                   good_csum=draw(st.booleans()) or draw(st.booleans()))
        final = 58
    else:
        l4 = draw(st.binary(max_size=80))
        final = draw(next_header)
    chain = []
    nh = final
    for _ in range(draw(st.sampled_from([0, 0, 0, 1, 1, 2, 3]) | st.integers(0, 11))):
        kind, header = draw(ext_header(nh))
        chain.insert(0, header)
        nh = kind
    if draw(st.sampled_from([False] * 11 + [True])):
        nh = draw(next_header)                     # a first next header that lies
    ext = b"".join(chain)
    src = draw(st.sampled_from([KERNEL6] * 16 + [STACK6, bytes(16), bytes(15) + b"\1", b"\xff\x02" + bytes(14),
                                                 bytes(10) + b"\xff\xff\x0a\x4d\x00\x01"]))
    dst = draw(st.sampled_from([STACK6] * 16 + [KERNEL6, b"\xff\x02" + bytes(13) + b"\1"]))
    plen = None
    if draw(st.sampled_from([False] * 9 + [True])):
        plen = draw(st.sampled_from([0, 1, 8]) | st.integers(0, 65535))        # a length that lies
    frame = ipv6(nh, ext, l4, src=src, dst=dst, plen=plen, hop_limit=draw(st.sampled_from([64, 1, 255, 0])))
    cut = draw(st.integers(0, len(frame))) if draw(st.sampled_from([False] * 11 + [True])) else None
    return frame if cut is None else frame[:cut]


@pytest.mark.timeout(600)
@settings(max_examples=examples(300), deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data())
def test_hostile_ipv6_frames_are_accounted_and_the_connection_survives(data):
    w = World6().setup()
    try:
        for _ in range(data.draw(st.integers(1, 12))):
            if data.draw(st.integers(0, 4)) == 0:
                s = w.core.conn(w.conn)
                # (a FIN taken out of order ends the stream where it lies: no data past it)
                if s is not None and s["state"] == "ESTABLISHED" and s["fin_off"] == 2**64 - 1:
                    w.data(b"valid" * 3)                 # valid traffic in between
                    continue
            w.frame(data.draw(hostile_frame(w)))
        s = w.core.conn(w.conn)
        if s is not None and s["state"] == "ESTABLISHED" and s["fin_off"] == 2**64 - 1:
            w.event("consumed", w.conn, s["rcv_nxt_off"])
            w.data(b"STILL-WORKS")
    finally:
        w.close()
