"""Conversation harness for the TCP core, in the smoltcp style.

A `Harness` wraps one `TcpCore` replica and plays the runtime's part: it
applies Copy actions to per-connection receive streams, completes Transmit
actions into real packets (header + payload from the send stream, checksum
finished), and keeps the Notify events.  A `Peer` plays the Linux kernel on
the other side of the TUN: it builds segments with scapy and tracks its own
sequence numbers, so tests read like the protocol.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from scapy.layers.inet import ICMP, IP, TCP
from scapy.layers.inet6 import IPv6
from scapy.packet import Raw, raw

from misdtcp._tcpcore import Copy, Notify, TcpCore, Transmit
from misdtcp.wire.codec import finish_tcp_packet

STACK = "10.77.0.2"
KERNEL = "10.77.0.1"
STACK6 = "fd00:77::2"
KERNEL6 = "fd00:77::1"
MS = 1_000_000


def ip_packet(data):
    """An IPv4 or IPv6 packet, by its version nibble."""
    data = bytes(data)
    return IPv6(data) if data and data[0] >> 4 == 6 else IP(data)


@dataclass
class Harness:
    core: TcpCore
    now: int = 1_000 * MS
    received: dict = field(default_factory=dict)     # conn -> bytearray (receive stream)
    sendbuf: dict = field(default_factory=dict)      # conn -> bytearray (send stream)
    events: list = field(default_factory=list)       # every Notify, in order
    wire: list = field(default_factory=list)         # every packet sent, in order
    transmits: list = field(default_factory=list)    # every Transmit action, in order

    @classmethod
    def create(cls, **config):
        config.setdefault("secret", 7)
        return cls(TcpCore(STACK, **config))

    @classmethod
    def create6(cls, **config):
        """A dual-stack core (IPv4 STACK and IPv6 STACK6)."""
        config.setdefault("local_address6", STACK6)
        return cls.create(**config)

    # -- running events -----------------------------------------------------
    def _apply(self, actions, frame=b""):
        out = []
        for a in actions:
            if isinstance(a, Copy):
                buf = self.received.setdefault(a.handle, bytearray())
                end = a.stream_offset + a.length
                if len(buf) < end:
                    buf.extend(b"\0" * (end - len(buf)))
                buf[a.stream_offset:end] = frame[a.frame_offset:a.frame_offset + a.length]
            elif isinstance(a, Transmit):
                self.transmits.append(a)
                if a.source == "stream":
                    data = bytes(self.sendbuf[a.handle][a.offset:a.offset + a.length])
                    assert len(data) == a.length, "transmit beyond the send stream"
                    pkt = ip_packet(finish_tcp_packet(a.header, data))
                elif a.source == "frame":
                    pkt = ip_packet(a.header + frame[a.offset:a.offset + a.length])
                else:
                    pkt = ip_packet(a.header)
                out.append(pkt)
                self.wire.append(pkt)
            else:
                self.events.append(a)
        return out

    def advance(self, ms):
        self.now += int(ms * MS)

    def deliver(self, pkt, *, after_ms=0.0, flags=0, gso_size=0):
        """A frame from the kernel; returns the packets the stack sent."""
        self.advance(after_ms)
        frame = raw(pkt) if not isinstance(pkt, (bytes, bytearray)) else bytes(pkt)
        return self._apply(self.core.frame(frame, self.now, flags, gso_size), frame)

    def tick(self, after_ms=0.0):
        self.advance(after_ms)
        return self._apply(self.core.tick(self.now))

    def call(self, method, *args, after_ms=0.0, **kwargs):
        """An application request (listen, send, consumed, shutdown, ...)."""
        self.advance(after_ms)
        return self._apply(getattr(self.core, method)(*args, now=self.now, **kwargs))

    def write(self, conn, data, after_ms=0.0):
        """The application appends to the send stream and posts send-up-to."""
        buf = self.sendbuf.setdefault(conn, bytearray())
        buf.extend(data)
        return self.call("send", conn, len(buf), after_ms=after_ms)

    def run_timers(self, until_ms, step_ms=1.0):
        """Tick until the given time has passed; returns all packets sent."""
        out = []
        end = self.now + int(until_ms * MS)
        while self.now < end:
            nxt = self.core.next_timer
            if nxt and nxt <= end:
                self.now = max(self.now, nxt)
            else:
                self.now = end
            out += self._apply(self.core.tick(self.now))
        return out

    def notifications(self, kind=None, conn=None):
        return [e for e in self.events if (kind is None or e.event == kind)
                and (conn is None or e.handle == conn)]

    def state(self, conn):
        info = self.core.conn(conn)
        return info["state"] if info else "CLOSED"


@dataclass
class Peer:
    """The kernel side of one connection (IPv6 when its addresses are)."""
    sport: int = 40000
    dport: int = 5201
    seq: int = 1000           # next sequence number the peer sends
    ack: int = 0              # what the peer acknowledges
    window: int = 65535
    tsval: int = 100
    ts_recent: int = 0
    src: str = KERNEL
    dst: str = STACK

    def segment(self, flags="A", payload=b"", *, seq=None, ack=None, window=None, options=None,
                advance=True, ts=True):
        opts = list(options) if options is not None else []
        if ts and options is None and self.ts_recent is not None:
            opts = [("NOP", None), ("NOP", None), ("Timestamp", (self.tsval, self.ts_recent))]
        s = self.seq if seq is None else seq
        tcp = TCP(sport=self.sport, dport=self.dport, flags=flags, seq=s % 2**32,
                  ack=(self.ack if ack is None else ack) % 2**32,
                  window=self.window if window is None else window, options=opts)
        pkt = (IPv6(src=self.src, dst=self.dst) if ":" in self.dst else IP(src=self.src, dst=self.dst)) / tcp
        if payload:
            pkt = pkt / Raw(payload)
        if advance and seq is None:
            self.seq = (self.seq + len(payload) + ("S" in flags) + ("F" in flags)) % 2**32
        return pkt

    def syn(self, mss=1460, wscale=7, sack=True, ts=True):
        opts = [("MSS", mss)]
        if sack:
            opts.append(("SAckOK", b""))
        if ts:
            opts.append(("Timestamp", (self.tsval, 0)))
        if wscale is not None:
            opts.append(("WScale", wscale))
        if not ts:
            self.ts_recent = None
        return self.segment("S", options=opts)

    def learn(self, pkt):
        """Take the stack's segment into account (ack what it sent)."""
        t = pkt[TCP]
        seglen = len(t.payload) + (1 if t.flags.S else 0) + (1 if t.flags.F else 0)
        end = (t.seq + seglen) % 2**32
        if t.flags.S or (seglen and ((end - self.ack) % 2**32) < 2**31):
            self.ack = end
        for name, value in t.options:
            if name == "Timestamp" and self.ts_recent is not None:
                self.ts_recent = value[0]
        self.tsval += 1


def tcp_of(pkts):
    return [p[TCP] for p in pkts if TCP in p]


def peer6(**fields):
    """A Peer speaking IPv6 (KERNEL6 -> STACK6)."""
    return Peer(src=KERNEL6, dst=STACK6, **fields)


def open_connection(h: Harness, peer: Peer | None = None, *, port=5201, listen=True, **syn_opts):
    """Three-way handshake, passive open.  Returns (conn, peer, synack)."""
    peer = peer or Peer(dport=port)
    if listen:
        h.call("listen", port)
    out = h.deliver(peer.syn(**syn_opts))
    assert len(out) == 1 and out[0][TCP].flags == "SA", out
    synack = out[0]
    peer.learn(synack)
    h.deliver(peer.segment("A"))
    accepted = h.notifications("accepted")
    assert accepted, "handshake did not complete"
    conn = accepted[-1].handle
    h.call("accepted", conn)
    return conn, peer, synack


def opts(t):
    """A TCP layer's options as a dict (NOPs dropped)."""
    return {name: value for name, value in t.options if name not in ("NOP", "EOL")}


def sack_blocks(t):
    """The SACK blocks of a TCP layer as [(left, right), ...] in wire order."""
    for name, value in t.options:
        if name == "SAck":
            return [(value[i], value[i + 1]) for i in range(0, len(value), 2)]
    return []


def acks(pkts):
    """TCP layers of the pure ACKs among pkts."""
    return [t for t in tcp_of(pkts) if t.flags == "A" and not len(t.payload)]
