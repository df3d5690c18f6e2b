"""The replay frame source: one synthetic TCP connection as a log.

It models a NIC with header/data split that has DMA'd a sender's frames into
memory: the whole log (application requests, frames, digests, stop) is
generated up front and written into a ring by the sequencer's own describing
code (runtime/sequencer.pyx: LogWriter -- validation, descriptors,
coalescing), one device read batch at a time.  What a benchmark then measures
is the stack's own work: replicated TCP processing, owned payload copies, ACK
building and writing.  The log is replayed as often as needed (rewind).

The sender is well behaved: it stays inside the receive window, and frames
"lost" by the seeded fault model are sent again a few frames later, the way a
sender's fast retransmit would.  A reference replica of the core runs over the
log while it is built, to learn the ISN and how far the application can
consume (the modeled application consumes in-order data as it arrives).
With IPv6 addresses for `client` and `server` the connection is an IPv6 one
(the stack's IPv4 address is then `server4`).
"""
from __future__ import annotations

import dataclasses
import ipaddress
import random
import struct
from dataclasses import dataclass, field

from misdtcp._ring import BroadcastRing
from misdtcp._tcpcore import Notify, TcpCore, Transmit
from misdtcp.runtime.replay_image import apply_descriptor, pattern
from misdtcp.runtime.sequencer import LogWriter
from misdtcp.runtime.vocabulary import Record, Request
from misdtcp.wire.codec import CSUM_PARTIAL, CSUM_VALID, internet_checksum

VNET_HDR_LEN = 12

_MESSAGE = struct.Struct("<IIQQQ")          # Message, 32 bytes
_VNET = struct.Struct("<BBHHHHH")           # virtio_net_hdr_v1, 12 bytes
_IP = struct.Struct("!BBHHHBBH4s4s")
_IP6 = struct.Struct("!IHBB16s16s")
_TCP = struct.Struct("!HHIIBBHHH")
_VNET_F_NEEDS_CSUM = 1
_VNET_F_DATA_VALID = 2
_VNET_GSO_TCPV4 = 1
_VNET_GSO_TCPV6 = 4


def _pow2(n: int) -> int:
    size = 1
    while size < n:
        size <<= 1
    return size


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
    checkpoint_every: int = 0         # a recovery checkpoint (REC_CHECKPOINT) every N frames (0: none)
    consume_every: int = 256 << 10    # the modeled application consumes in steps this big
    frame_interval_ns: int = 2_000    # stamped time between frames
    start_ns: int = 1_000_000_000
    client: str = "10.77.0.1"
    server: str = "10.77.0.2"         # the stack's address (IPv4 or IPv6, the client's family)
    server4: str = "10.77.0.2"        # the stack's IPv4 address when `server` is an IPv6 one
    sport: int = 40000
    port: int = 5201
    checksum_flags: int = CSUM_VALID   # what an offloading NIC reports
    push_every: int = 128 << 10       # the sender's writes: PSH ends each (as a kernel sender's would)
    batch: int = 16                   # frames per device read batch (coalescing never crosses one)
    coalesce: bool = True             # the sequencer's receive coalescing
    ts_tick_ns: int = 1_000_000       # the sender's timestamp clock (RFC 7323 §5.4: 1 ms, as Linux)

    def __post_init__(self):
        if self.mode not in ("mtu", "gso"):
            raise ValueError(f"frame mode {self.mode!r} is not 'mtu' or 'gso'")
        if self.total_bytes <= 0:
            raise ValueError("total_bytes must be positive")
        if ipaddress.ip_address(self.client).version != ipaddress.ip_address(self.server).version:
            raise ValueError("the client and the server must be of one address family")

    @property
    def ipv6(self) -> bool:
        return ipaddress.ip_address(self.server).version == 6

    @property
    def local_address(self) -> str:
        """The stack's IPv4 address (TcpCore's first argument)."""
        return self.server4 if self.ipv6 else self.server

    @property
    def ip_header(self) -> int:
        return 40 if self.ipv6 else 20


@dataclass
class ReplayLog:
    ring: BroadcastRing               # the whole log (descriptors and data), rewound for each run
    config: ReplayConfig
    handle: int                       # the connection's handle in every replica
    delivered: int                    # bytes in order at the end of the log
    reference_digest: int             # the reference replica's digest at the end
    segments_out: int                 # segments the reference replica sent
    core_config: dict = field(default_factory=dict)   # the exact core options replicas must use
    frames: int = 0                   # frames the sender put on the wire
    payload_bytes: int = 0            # payload bytes in them (retransmissions included)
    descriptors: int = 0              # log positions (after coalescing)
    sequencer: dict = field(default_factory=dict)     # the describing code's counters

    @property
    def data_bytes(self) -> int:
        """Bytes of the log's data area in use."""
        return self.ring.counters()["producer"]["data_cursor"]

    def close(self) -> None:
        self.ring.close()


def replay_core_config(core_config: dict | None, replay: ReplayConfig | None = None) -> dict:
    """Core options with the replay defaults filled in (a small connection
    table: one connection is all a replay has; the stack's IPv6 address for
    an IPv6 replay)."""
    cfg = dict(core_config or {})
    if replay is not None and replay.ipv6:
        cfg.setdefault("local_address6", replay.server)
    cfg.setdefault("rcvbuf", 4 << 20)
    cfg.setdefault("sndbuf", 1 << 20)
    cfg.setdefault("max_connections", 4)
    return cfg


class _Builder:
    def __init__(self, cfg: ReplayConfig, core_config: dict):
        self.cfg = cfg
        self.core_config = replay_core_config(core_config, cfg)
        self.core = TcpCore(cfg.local_address, **self.core_config)
        self.rcvbuf = self.core_config["rcvbuf"]
        self.edge = None                # right edge of the window the stack advertised
        wire = cfg.total_bytes * (1 + cfg.loss + cfg.reorder + cfg.duplicate) + (4 << 20)
        segments = wire // cfg.mss + 1
        self.ring = BroadcastRing(_pow2(2 * segments + 8192), _pow2(wire + segments * 128),
                                  name="misdtcp-replay")
        self.writer = LogWriter(self.ring, cfg.local_address, coalesce=cfg.coalesce,
                                local_address6=self.core_config.get("local_address6"))
        self.seen = 0                   # log positions the reference replica has applied
        self.unbatched = 0
        self.frames = 0
        self.payload_bytes = 0
        self.now = cfg.start_ns
        self.src = ipaddress.ip_address(cfg.client).packed
        self.dst = ipaddress.ip_address(cfg.server).packed
        self.ident = 0
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
                tcp = a.header[self.cfg.ip_header:]
                if tcp[13] & 0x10 and not tcp[13] & 0x02 and self.handle is not None:
                    ack, win = struct.unpack("!I", tcp[8:12])[0], struct.unpack("!H", tcp[14:16])[0]
                    self.edge = (ack + (win << self.wscale)) & 0xFFFFFFFF
                if len(tcp) >= 32 and tcp[20:22] == b"\x01\x01" and tcp[22] == 8:
                    self.ts_echo = struct.unpack("!I", tcp[24:28])[0]
                self.last_out = a

    @property
    def tsval(self) -> int:
        return (self.now // self.cfg.ts_tick_ns) & 0xFFFFFFFF

    def frame(self, flags, seq, ack, payload=b"", options=b"", gso_size=0):
        """A frame as the NIC would hand it over: virtio-net header (checksum
        state, GSO) + IPv4 or IPv6 + TCP + payload."""
        opts = options
        if not opts:
            opts = b"\x01\x01\x08\x0a" + struct.pack("!II", self.tsval, self.ts_echo)
        thl = 20 + len(opts)
        iphl = self.cfg.ip_header
        if self.cfg.ipv6:
            ip = _IP6.pack(6 << 28 | 0x12345, thl + len(payload), 6, 64, self.src, self.dst)
        else:
            total = 20 + thl + len(payload)
            self.ident = (self.ident + 1) & 0xFFFF
            ip = bytearray(_IP.pack(0x45, 0, total, self.ident, 0x4000, 64, 6, 0, self.src, self.dst))
            ip[10:12] = struct.pack("!H", internet_checksum(bytes(ip)))
        tcp = bytearray(_TCP.pack(self.cfg.sport, self.cfg.port, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF,
                                  (thl // 4) << 4, flags, 65535, 0, 0) + opts)
        if self.cfg.checksum_flags == CSUM_VALID:
            vflags = _VNET_F_DATA_VALID
        elif self.cfg.checksum_flags == CSUM_PARTIAL:
            vflags = _VNET_F_NEEDS_CSUM
        else:
            vflags = 0
            if self.cfg.ipv6:
                pseudo = self.src + self.dst + struct.pack("!II", thl + len(payload), 6)
            else:
                pseudo = self.src + self.dst + struct.pack("!BBH", 0, 6, thl + len(payload))
            tcp[16:18] = struct.pack("!H", internet_checksum(pseudo + bytes(tcp) + payload))
        gso_type = (_VNET_GSO_TCPV6 if self.cfg.ipv6 else _VNET_GSO_TCPV4) if gso_size else 0
        vnet = _VNET.pack(vflags, gso_type, iphl + thl if gso_size else 0, gso_size,
                          iphl if vflags == _VNET_F_NEEDS_CSUM else 0, 16 if vflags == _VNET_F_NEEDS_CSUM else 0, 0)
        return vnet + bytes(ip) + bytes(tcp) + payload

    def flush(self):
        """The end of a device read batch: publish it, and let the reference
        replica apply what was published (it answers as a worker would)."""
        self.writer.commit()
        end = self.ring.available()
        while self.seen < end:
            self._observe(apply_descriptor(self.core, self.ring, self.seen))
            self.seen += 1
        self.unbatched = 0

    def publish(self, frame, gso_size=0):
        self.now += self.cfg.frame_interval_ns
        if not self.writer.frame(frame, self.now):
            raise RuntimeError("the replay log is full: its ring was sized too small for this workload")
        self.frames += 1
        self.unbatched += 1
        if self.unbatched >= self.cfg.batch:
            self.flush()

    def record(self, kind, data=None, seq=0):
        if not self.writer.record(kind, data, self.now, seq):
            raise RuntimeError("the replay log is full: its ring was sized too small for this workload")

    def request(self, kind, handle=0, a=0, b=0, c=0):
        self.now += 1_000
        self.record(Record.REQUEST, _MESSAGE.pack(kind, handle, a, b, c))
        self.flush()

    def digest(self, round_no):
        self.record(Record.DIGEST, seq=round_no)

    def build(self) -> ReplayLog:
        cfg = self.cfg
        self.request(Request.LISTEN, a=cfg.port, b=16)
        isn_peer = 0x7000_0000 + self.rng.randrange(1 << 24)
        syn_opts = (struct.pack("!BBH", 2, 4, 1440 if cfg.ipv6 else 1460) + b"\x04\x02" + b"\x08\x0a" +
                    struct.pack("!II", self.tsval, 0) + b"\x01\x03\x03\x07")
        self.publish(self.frame(0x02, isn_peer, 0, options=syn_opts))
        self.flush()
        synack = self.last_out.header[cfg.ip_header:]
        isn_stack = struct.unpack("!I", synack[4:8])[0]
        self.wscale = 0
        self.edge = (isn_peer + 1 + struct.unpack("!H", synack[14:16])[0]) & 0xFFFFFFFF
        ack = isn_stack + 1
        self.publish(self.frame(0x10, isn_peer + 1, ack))
        self.flush()
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
        since_checkpoint = 0
        while off < cfg.total_bytes or pending:
            # the application consumes in-order data in steps
            if self.readable - self.consumed >= cfg.consume_every:
                self.consumed = self.readable
                self.request(Request.CONSUMED, handle=self.handle, a=self.consumed)
            # retransmissions that are due
            if pending and (pending[0][0] <= self.frames or off >= cfg.total_bytes):
                _, roff, rlen = pending.pop(0)
                self._send(base, ack, roff, rlen)
                continue
            # stay inside the window the stack advertised (flow control)
            n = min(seg, cfg.total_bytes - off)
            if not self._inside_window(base + off + n):
                if self.unbatched:
                    self.flush()            # the stack's latest ACKs may have opened the window
                    continue
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
                if self.unbatched:
                    self.flush()            # what is in flight may already be readable
                    continue
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
                pending.append((self.frames + 3 + self.rng.randrange(8), off, n))
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
            since_checkpoint += 1
            if cfg.checkpoint_every and since_checkpoint >= cfg.checkpoint_every:
                self.record(Record.CHECKPOINT)
                since_checkpoint = 0
        self.flush()
        if self.readable > self.consumed:
            self.consumed = self.readable
            self.request(Request.CONSUMED, handle=self.handle, a=self.consumed)
        self.digest(digest_round)
        self.record(Record.STOP)
        self.flush()
        return ReplayLog(self.ring, cfg, self.handle, self.readable, self.core.digest(), self.segments_out,
                         self.core_config, frames=self.frames, payload_bytes=self.payload_bytes,
                         descriptors=self.ring.available(), sequencer=self.writer.counters)

    def _inside_window(self, end_seq):
        """end_seq (exclusive) is at or before the advertised right edge."""
        return ((self.edge - end_seq) & 0xFFFFFFFF) < 2**31

    def _send(self, base, ack, off, n):
        data = pattern(off, n)
        gso = self.cfg.mss if n > self.cfg.mss else 0
        self.payload_bytes += n
        # PSH ends each of the sender's writes, as a kernel sender sets it
        push = (off + n) % self.cfg.push_every < n or off + n >= self.cfg.total_bytes
        self.publish(self.frame(0x18 if push else 0x10, base + off, ack, data, gso_size=gso), gso_size=gso)


def build_log(cfg: ReplayConfig, core_config: dict) -> ReplayLog:
    """Generate the log image of one synthetic connection."""
    return _Builder(cfg, core_config).build()


def sample_frames(cfg: ReplayConfig, count: int) -> tuple[bytes, list[int]]:
    """`count` data frames of the connection `cfg` describes, as the NIC
    would hand them over (for the sequencer's own benchmark): returns the
    frames back to back and their offsets (plus the end)."""
    seg = cfg.mss if cfg.mode == "mtu" else cfg.mss * cfg.gso_segments
    builder = _Builder(dataclasses.replace(cfg, total_bytes=seg * count), {})
    blob = bytearray()
    offsets = []
    base = 0x7000_0000
    for i in range(count):
        offsets.append(len(blob))
        builder.now += cfg.frame_interval_ns
        gso = cfg.mss if seg > cfg.mss else 0
        push = (i + 1) * seg % cfg.push_every < seg
        blob += builder.frame(0x18 if push else 0x10, base + i * seg, 0x1234, pattern(i * seg, seg), gso_size=gso)
    offsets.append(len(blob))
    builder.ring.close()
    return bytes(blob), offsets
