"""The replay frame source: one synthetic TCP connection as a log image.

It models a NIC that has DMA'd a sender's frames into ring memory: the whole
log (application requests, frames, digest checkpoints, stop) is generated up
front, laid out exactly as the sequencer publishes records, and loaded into a
ring in one step.  What a benchmark then measures is the stack's own work:
replicated TCP processing, owned payload copies, ACK building and writing.

The sender is well behaved: it stays inside the receive window, and frames
"lost" by the seeded fault model are sent again a few frames later, the way a
sender's fast retransmit would.  A reference replica of the core runs over the
log while it is built, to learn the ISN and how far the application can
consume (the modeled application consumes in-order data as it arrives).
"""
from __future__ import annotations

import ipaddress
import random
import struct
from dataclasses import dataclass, field

from misdtcp.runtime.replay_image import pattern
from misdtcp._tcpcore import Notify, TcpCore, Transmit
from misdtcp.wire.codec import CSUM_VALID, internet_checksum
from misdtcp.runtime.vocabulary import Record, Request

VNET_HDR_LEN = 12

_RECORD = struct.Struct("<IHHHHHHQQ")       # RecordHeader, 32 bytes
_MESSAGE = struct.Struct("<IIQQQ")          # Message, 32 bytes
_IP = struct.Struct("!BBHHHBBH4s4s")
_TCP = struct.Struct("!HHIIBBHHH")


@dataclass
class LogImage:
    """Ring records, back to back, 8-byte aligned, as the sequencer writes them."""
    data: bytearray = field(default_factory=bytearray)
    records: int = 0
    frames: int = 0
    payload_bytes: int = 0

    def append(self, kind, payload=b"", *, flags=0, gso_size=0, now=0):
        start = len(self.data)
        self.data += _RECORD.pack(len(payload), kind, flags, gso_size, 0, 0, 0, now, self.records)
        self.data += payload
        self.data += b"\0" * (-len(self.data) % 8)
        self.records += 1
        return start

    def request(self, kind, handle=0, a=0, b=0, c=0, *, now):
        self.append(Record.REQUEST, _MESSAGE.pack(kind, handle, a, b, c), now=now)


@dataclass
class ReplayConfig:
    total_bytes: int = 64 << 20
    mode: str = "mtu"                 # "mtu": one MSS per frame; "gso": super-frames
    mss: int = 1448                   # payload bytes per segment (MSS 1460 minus timestamps)
    gso_segments: int = 44            # segments per super-frame (63,712 bytes)
    loss: float = 0.0
    reorder: float = 0.0
    duplicate: float = 0.0
    seed: int = 1
    digest_every: int = 0             # a digest checkpoint every N frames (0: only at the end)
    consume_every: int = 256 << 10    # the modeled application consumes in steps this big
    frame_interval_ns: int = 2_000    # stamped time between frames
    start_ns: int = 1_000_000_000
    client: str = "10.77.0.1"
    server: str = "10.77.0.2"
    sport: int = 40000
    port: int = 5201
    checksum_flags: int = CSUM_VALID   # what an offloading NIC reports

    def __post_init__(self):
        if self.mode not in ("mtu", "gso"):
            raise ValueError(f"frame mode {self.mode!r} is not 'mtu' or 'gso'")
        if self.total_bytes <= 0:
            raise ValueError("total_bytes must be positive")


@dataclass
class ReplayLog:
    image: LogImage
    config: ReplayConfig
    handle: int                       # the connection's handle in every replica
    delivered: int                    # bytes in order at the end of the log
    reference_digest: int             # the reference replica's digest at the end
    segments_out: int                 # segments the reference replica sent
    core_config: dict = field(default_factory=dict)   # the exact core options replicas must use


def replay_core_config(core_config: dict | None) -> dict:
    """Core options with the replay defaults filled in (a small connection
    table: one connection is all a replay has)."""
    cfg = dict(core_config or {})
    cfg.setdefault("rcvbuf", 4 << 20)
    cfg.setdefault("sndbuf", 1 << 20)
    cfg.setdefault("max_connections", 4)
    return cfg


class _Builder:
    def __init__(self, cfg: ReplayConfig, core_config: dict):
        self.cfg = cfg
        self.core_config = replay_core_config(core_config)
        self.core = TcpCore(cfg.server, **self.core_config)
        self.rcvbuf = self.core_config["rcvbuf"]
        self.edge = None                # right edge of the window the stack advertised
        self.image = LogImage()
        self.now = cfg.start_ns
        self.src = ipaddress.IPv4Address(cfg.client).packed
        self.dst = ipaddress.IPv4Address(cfg.server).packed
        self.ident = 0
        self.tsval = 1
        self.ts_echo = 0
        self.readable = 0
        self.consumed = 0
        self.handle = None
        self.segments_out = 0
        self.rng = random.Random(cfg.seed)

    def _observe(self, actions):
        for a in actions:
            if isinstance(a, Notify):
                if a.event == "readable":
                    self.readable = a.value
                elif a.event == "accepted":
                    self.handle = a.handle
            elif isinstance(a, Transmit):
                self.segments_out += 1
                tcp = a.header[20:]
                if tcp[13] & 0x10 and not tcp[13] & 0x02 and self.handle is not None:
                    ack, win = struct.unpack("!I", tcp[8:12])[0], struct.unpack("!H", tcp[14:16])[0]
                    self.edge = (ack + (win << self.wscale)) & 0xFFFFFFFF
                if len(tcp) >= 32 and tcp[20:22] == b"\x01\x01" and tcp[22] == 8:
                    self.ts_echo = struct.unpack("!I", tcp[24:28])[0]
                self.last_out = a

    def frame(self, flags, seq, ack, payload=b"", options=b"", gso_size=0):
        opts = options
        if not opts:
            opts = b"\x01\x01\x08\x0a" + struct.pack("!II", self.tsval, self.ts_echo)
        thl = 20 + len(opts)
        total = 20 + thl + len(payload)
        self.ident = (self.ident + 1) & 0xFFFF
        ip = bytearray(_IP.pack(0x45, 0, total, self.ident, 0x4000, 64, 6, 0, self.src, self.dst))
        ip[10:12] = struct.pack("!H", internet_checksum(bytes(ip)))
        tcp = _TCP.pack(self.cfg.sport, self.cfg.port, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF,
                        (thl // 4) << 4, flags, 65535, 0, 0) + opts
        vnet = bytes(VNET_HDR_LEN)
        return vnet + bytes(ip) + tcp + payload

    def publish(self, frame, gso_size=0):
        self.now += self.cfg.frame_interval_ns
        self.tsval += 1
        self.image.append(Record.FRAME, frame, flags=self.cfg.checksum_flags, gso_size=gso_size, now=self.now)
        self.image.frames += 1
        self._observe(self.core.frame(frame[VNET_HDR_LEN:], self.now, self.cfg.checksum_flags, gso_size))

    def request(self, kind, handle=0, a=0, b=0, c=0):
        self.now += 1_000
        self.image.request(kind, handle, a, b, c, now=self.now)
        method = {Request.LISTEN: lambda: self.core.listen(a, self.now, b),
                  Request.ACCEPTED: lambda: self.core.accepted(handle, self.now),
                  Request.CONSUMED: lambda: self.core.consumed(handle, a, self.now)}[kind]
        self._observe(method())

    def digest(self, round_no):
        self.image.append(Record.DIGEST, struct.pack("<Q", round_no), now=self.now)

    def build(self) -> ReplayLog:
        cfg = self.cfg
        self.request(Request.LISTEN, a=cfg.port, b=16)
        isn_peer = 0x7000_0000 + self.rng.randrange(1 << 24)
        syn_opts = (struct.pack("!BBH", 2, 4, 1460) + b"\x04\x02" + b"\x08\x0a" +
                    struct.pack("!II", self.tsval, 0) + b"\x01\x03\x03\x07")
        self.publish(self.frame(0x02, isn_peer, 0, options=syn_opts))
        synack = self.last_out.header[20:]
        isn_stack = struct.unpack("!I", synack[4:8])[0]
        self.wscale = 0
        self.edge = (isn_peer + 1 + struct.unpack("!H", synack[14:16])[0]) & 0xFFFFFFFF
        ack = isn_stack + 1
        self.publish(self.frame(0x10, isn_peer + 1, ack))
        if self.handle is None:
            raise RuntimeError("the reference replica did not accept the synthetic connection")
        self.request(Request.ACCEPTED, handle=self.handle)
        self.wscale = self.core.conn(self.handle)["rcv_wscale"]

        seg = cfg.mss if cfg.mode == "mtu" else cfg.mss * cfg.gso_segments
        base = isn_peer + 1
        pending = []                    # frames "lost", to be sent again later: (due, off, len)
        off = 0
        digest_round = 0
        since_digest = 0
        while off < cfg.total_bytes or pending:
            # the application consumes in-order data in steps
            if self.readable - self.consumed >= cfg.consume_every:
                self.consumed = self.readable
                self.request(Request.CONSUMED, handle=self.handle, a=self.consumed)
            # retransmissions that are due
            if pending and (pending[0][0] <= self.image.frames or off >= cfg.total_bytes):
                _, roff, rlen = pending.pop(0)
                self._send(base, ack, roff, rlen)
                continue
            # stay inside the window the stack advertised (flow control)
            n = min(seg, cfg.total_bytes - off)
            if not self._inside_window(base + off + n):
                if pending:
                    _, roff, rlen = pending.pop(0)
                    self._send(base, ack, roff, rlen)
                    continue
                if self.readable > self.consumed:
                    self.consumed = self.readable
                    self.request(Request.CONSUMED, handle=self.handle, a=self.consumed)
                    continue
                raise RuntimeError("replay sender stalled: the advertised window stays closed")
            if off + n > self.consumed + self.rcvbuf - 2 * cfg.consume_every - seg:
                if self.readable > self.consumed:
                    self.consumed = self.readable
                    self.request(Request.CONSUMED, handle=self.handle, a=self.consumed)
                    continue
                if pending:
                    _, roff, rlen = pending.pop(0)
                    self._send(base, ack, roff, rlen)
                    continue
                raise RuntimeError("replay sender stalled: receive window too small for this workload")
            r = self.rng.random()
            if r < cfg.loss:
                pending.append((self.image.frames + 3 + self.rng.randrange(8), off, n))
            elif r < cfg.loss + cfg.reorder and off + n < cfg.total_bytes and \
                    self._inside_window(base + off + n + min(seg, cfg.total_bytes - off - n)):
                n2 = min(seg, cfg.total_bytes - off - n)
                self._send(base, ack, off + n, n2)
                self._send(base, ack, off, n)
                n += n2
            else:
                self._send(base, ack, off, n)
                if r < cfg.loss + cfg.reorder + cfg.duplicate:
                    self._send(base, ack, off, n)
            off += n
            since_digest += 1
            if cfg.digest_every and since_digest >= cfg.digest_every:
                self.digest(digest_round)
                digest_round += 1
                since_digest = 0
        if self.readable > self.consumed:
            self.consumed = self.readable
            self.request(Request.CONSUMED, handle=self.handle, a=self.consumed)
        self.digest(digest_round)
        self.image.append(Record.STOP, now=self.now)
        return ReplayLog(self.image, cfg, self.handle, self.readable, self.core.digest(), self.segments_out,
                         self.core_config)

    def _inside_window(self, end_seq):
        """end_seq (exclusive) is at or before the advertised right edge."""
        return ((self.edge - end_seq) & 0xFFFFFFFF) < 2**31

    def _send(self, base, ack, off, n):
        data = pattern(off, n)
        gso = self.cfg.mss if n > self.cfg.mss else 0
        self.image.payload_bytes += n
        self.publish(self.frame(0x18, base + off, ack, data), gso_size=gso)


def build_log(cfg: ReplayConfig, core_config: dict) -> ReplayLog:
    """Generate the log image of one synthetic connection."""
    return _Builder(cfg, core_config).build()
