"""Shared machinery of the two fuzzers: a frame builder that can get every
field wrong, a world (one core with a listener, an established connection,
a half-open one and an active open) driven by event scripts, and the oracle
that checks every event.

Both `tests/test_fuzz_structured.py` (hypothesis) and `fuzz/fuzz_core.py`
(atheris) build their inputs with `Seg` and run them through `World`, so a
finding of either reproduces in the other's vocabulary.

What the oracle asserts, after every event (`World.check_*`):

* nothing raises out of the core, and the action list never overflows;
* **drop accounting** — every frame lands in exactly one bucket:
  one parse-level drop counter (IP/TCP header, checksum, options, flags,
  GSO), an answered ICMP echo, or `tcp_segments`.  Every TCP segment then
  either counts a segment-level drop, or emits an action, or changes
  replicated connection state; the only segment allowed to do none of these
  is a pure ACK (no payload, no SYN/FIN/RST) to an existing connection —
  RFC 9293 §3.10.7.4 says to ignore an old duplicate ACK, and counting it
  as a "drop" would be wrong;
* **actions stay in bounds** — a Copy lies inside the frame's TCP payload
  and inside [consumed, consumed + rcvbuf) of its receive stream; a
  Transmit's header is a valid IPv4 header of the right total length, its
  stream range lies inside what the application posted, its frame range
  inside the frame;
* **no ACK (nor SACK block, nor readable/peer-closed notification) covers
  bytes that no Copy delivered**;
* rcv_nxt (as a 64-bit stream offset) and the consumed offset never move
  backwards;
* **determinism** — a single replica and a split pair (replica 0 and 1 of 2)
  fed the same events agree on the digest after every event, the pair's
  Transmits and Copies together are exactly the single replica's, and every
  replica sees the same notifications;
* **the log says the same** — a twin core fed every frame through the
  sequencer's describing code (a LogWriter: validation once, a descriptor or
  a whole-frame record or a drop record) and then the log, as workers are,
  ends every event in the same state with the same segments,
  notifications and copied bytes as the core fed the frame itself.

`World.still_works()` then checks that the established connection (if the
script did not legitimately kill it) still takes a valid in-order segment
and copies its bytes to the right offset, and that a new connection can
still be opened.
"""
from __future__ import annotations

import copy
import struct
from dataclasses import dataclass, field, replace

from misdtcp._ring import BroadcastRing
from misdtcp._tcpcore import Copy, Notify, TcpCore, Transmit
from misdtcp.runtime.replay_image import action_bytes, apply_descriptor, release_to
from misdtcp.runtime.sequencer import LogWriter
from misdtcp.wire.codec import CSUM_PARTIAL, CSUM_VALID, VERIFY_CSUM, finish_tcp_packet

MS = 1_000_000
STACK = 0x0A4D0002          # 10.77.0.2
KERNEL = 0x0A4D0001         # 10.77.0.1
OTHER = 0x0A4D0003
PORT = 5201
EST_SPORT = 40000
HALF_SPORT = 40001
ACTIVE_DPORT = 7000
ACTIVE_LPORT = 50000
RCVBUF = 16384
NO_OFF = 2**64 - 1
ADDRESSES = (KERNEL, STACK, OTHER, 0, 0xFFFFFFFF, 0x7F000001, 0xE0000001, 0x0A4D00FF)

# TCP flag bits
FIN, SYN, RST, PSH, ACK, URG, ECE, CWR = 1, 2, 4, 8, 16, 32, 64, 128

# Drop reasons counted before a frame becomes a TCP segment (core_frame).
PARSE_DROPS = ("ip_truncated", "ip_version", "ip_header_length", "ip_checksum", "ip_fragment",
               "not_for_us", "bad_source", "protocol", "icmp", "tcp_header", "tcp_checksum",
               "tcp_options", "tcp_flags", "bad_gso",
               # a version mutated to 6 is parsed as IPv6 (tests/test_fuzz_ipv6.py fuzzes IPv6 itself)
               "ip6_ext_header", "ip6_ext_chain", "ip6_routing", "ip6_option")

CONFIG = dict(secret=7, rcvbuf=RCVBUF, sndbuf=RCVBUF, max_connections=64, backlog=8,
              stripe=512, send_stripe=2048, mss=1460, action_capacity=4096)


# ---------------------------------------------------------------------------
# Frames
# ---------------------------------------------------------------------------

def csum(data: bytes, initial: int = 0) -> int:
    if len(data) % 2:
        data += b"\0"
    s = initial + sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def opt_mss(v):
    return struct.pack("!BBH", 2, 4, v & 0xFFFF)


def opt_wscale(v):
    return struct.pack("!BBB", 3, 3, v & 0xFF)


def opt_sack_perm():
    return b"\x04\x02"


def opt_ts(val, ecr):
    return struct.pack("!BBII", 8, 10, val & 0xFFFFFFFF, ecr & 0xFFFFFFFF)


def opt_sack(blocks):
    body = b"".join(struct.pack("!II", l & 0xFFFFFFFF, r & 0xFFFFFFFF) for l, r in blocks)
    return bytes([5, 2 + len(body)]) + body


def opt_raw(kind, length, body=b""):
    return bytes([kind & 0xFF, length & 0xFF]) + body


def pad4(b: bytes) -> bytes:
    return b + b"\x01" * (-len(b) % 4)       # NOP padding


@dataclass
class Seg:
    """An IPv4/TCP (or ICMP) frame, every field overridable.  None means
    "what a correct sender would put there"."""
    src: int = KERNEL
    dst: int = STACK
    sport: int = EST_SPORT
    dport: int = PORT
    seq: int = 0
    ack: int = 0
    flags: int = ACK
    window: int = 65535
    urg: int = 0
    options: bytes = b""
    payload: bytes = b""
    # IPv4
    version: int = 4
    ihl: int | None = None
    tos: int = 0
    total_len: int | None = None
    ident: int = 1
    frag: int = 0x4000              # DF
    ttl: int = 64
    proto: int = 6
    ip_csum: int | None = None
    ip_options: bytes = b""
    # TCP
    data_offset: int | None = None
    tcp_csum: int | None = None     # None: correct; an int: that literal value
    # framing
    trailer: bytes = b""            # bytes after the IPv4 total length (link padding)
    cut: int | None = None          # truncate the frame to this many bytes
    icmp: bytes | None = None       # an ICMP message instead of TCP (proto stays as set)

    def build(self) -> bytes:
        opts = self.options
        if self.icmp is not None:
            l4 = bytearray(self.icmp)
        else:
            doff = self.data_offset if self.data_offset is not None else (20 + len(opts) + 3) // 4
            hdr = struct.pack("!HHIIBBHHH", self.sport & 0xFFFF, self.dport & 0xFFFF,
                              self.seq & 0xFFFFFFFF, self.ack & 0xFFFFFFFF, (doff & 0xF) << 4,
                              self.flags & 0xFF, self.window & 0xFFFF, 0, self.urg & 0xFFFF)
            l4 = bytearray(hdr + opts + self.payload)
        ipopt = self.ip_options
        ihl = self.ihl if self.ihl is not None else (20 + len(ipopt) + 3) // 4
        ipopt = ipopt + b"\0" * (-len(ipopt) % 4)
        tot = self.total_len if self.total_len is not None else 20 + len(ipopt) + len(l4)
        ip = bytearray(struct.pack("!BBHHHBBHII", ((self.version & 0xF) << 4) | (ihl & 0xF),
                                   self.tos & 0xFF, tot & 0xFFFF, self.ident & 0xFFFF,
                                   self.frag & 0xFFFF, self.ttl & 0xFF, self.proto & 0xFF, 0,
                                   self.src & 0xFFFFFFFF, self.dst & 0xFFFFFFFF) + ipopt)
        c = csum(bytes(ip)) if self.ip_csum is None else self.ip_csum & 0xFFFF
        ip[10:12] = struct.pack("!H", c)
        if self.icmp is None:
            pseudo = struct.pack("!IIBBH", self.src & 0xFFFFFFFF, self.dst & 0xFFFFFFFF, 0, 6, len(l4))
            c = csum(pseudo + bytes(l4)) if self.tcp_csum is None else self.tcp_csum & 0xFFFF
            l4[16:18] = struct.pack("!H", c)
        frame = bytes(ip + l4) + self.trailer
        if self.cut is not None:
            frame = frame[:self.cut]
        return frame


def icmp_echo(ident=1, seq=1, data=b"ping", code=0, kind=8, good=True):
    m = bytearray(struct.pack("!BBHHH", kind, code, 0, ident, seq) + data)
    if good:
        m[2:4] = struct.pack("!H", csum(bytes(m)))
    return bytes(m)


def parse_l4(frame: bytes):
    """(ihl, tcp header length, payload length, flags) of a frame the core
    accepted as a TCP segment."""
    ihl = (frame[0] & 0xF) * 4
    tot = struct.unpack("!H", frame[2:4])[0]
    hl = (frame[ihl + 12] >> 4) * 4
    return ihl, hl, tot - ihl - hl, frame[ihl + 13]


# ---------------------------------------------------------------------------
# Interval bookkeeping for the oracle
# ---------------------------------------------------------------------------

class Covered:
    """Which receive-stream offsets some Copy has delivered."""

    def __init__(self):
        self.ranges: list[list[int]] = []

    def add(self, s, e):
        if e <= s:
            return
        out = []
        for a, b in self.ranges:
            if b < s or a > e:
                out.append([a, b])
            else:
                s, e = min(a, s), max(b, e)
        out.append([s, e])
        out.sort()
        self.ranges = out

    def prefix(self) -> int:
        return self.ranges[0][1] if self.ranges and self.ranges[0][0] == 0 else 0

    def contains(self, s, e) -> bool:
        return e <= s or any(a <= s and e <= b for a, b in self.ranges)


# ---------------------------------------------------------------------------
# The world
# ---------------------------------------------------------------------------

class InvariantError(AssertionError):
    pass


def check(cond, msg, *info):
    if not cond:
        raise InvariantError(msg + (" " + repr(info) if info else ""))


@dataclass
class ConnModel:
    irs: int | None = None
    stream: bytearray = field(default_factory=bytearray)
    covered: Covered = field(default_factory=Covered)
    rcv_nxt_off: int = 0
    consumed: int = 0
    peer_fin: bool = False


class LogTwin:
    """A core fed through the log: every frame goes through the sequencer's
    describing code into a small ring and then, position by position, into
    the core, exactly as a worker gets it."""

    def __init__(self, core: TcpCore):
        self.core = core
        self.ring = BroadcastRing(1 << 10, 1 << 20, 1, name="misdtcp-fuzz-log")
        self.writer = LogWriter(self.ring, "10.77.0.2", coalesce=False)
        self.seen = 0

    @staticmethod
    def vnet(flags, gso):
        """The virtio-net header a device would have put in front of the frame."""
        # VERIFY (checksums must be checked whatever the device said) is a
        # header that vouches for nothing
        vflags = 0 if flags & VERIFY_CSUM else 2 if flags & CSUM_VALID else 1 if flags & CSUM_PARTIAL else 0
        return struct.pack("<BBHHHHH", vflags, 1 if gso else 0, 0, gso, 0, 0, 0)

    def frame(self, frame, now, flags, gso):
        """Returns [(actions, bytes of each Copy)] for every log position the frame made."""
        if gso > 0xFFFF:
            # no device can say this (virtio's gso_size is 16 bits): the frame goes in directly
            actions = self.core.frame(frame, now, flags, gso)
            return [(actions, [bytes(frame[a.frame_offset:a.frame_offset + a.length])
                               for a in actions if isinstance(a, Copy)])]
        if not self.writer.frame(self.vnet(flags, gso) + bytes(frame), now):
            raise InvariantError("the fuzzing log is full (it is released after every frame)")
        self.writer.commit()
        out = []
        while self.seen < self.ring.available():
            actions = apply_descriptor(self.core, self.ring, self.seen)
            copies = [action_bytes(self.ring, self.seen, a.frame_offset, a.length)
                      for a in actions if isinstance(a, Copy)]
            out.append((actions, copies))
            self.seen += 1
        release_to(self.ring, 0, self.seen)
        return out

    def close(self):
        self.ring.close()


class World:
    """One core under test plus a split pair of replicas, a twin fed through
    the log, and the oracle."""

    def __init__(self, split=True, **config):
        cfg = dict(CONFIG, **config)
        self.rcvbuf = cfg["rcvbuf"]
        self._core_args = [cfg] + ([dict(cfg, replica=i, replicas=2) for i in range(2)] if split else [])
        self.core = TcpCore("10.77.0.2", **cfg)
        self.pair = [TcpCore("10.77.0.2", **kw) for kw in self._core_args[1:]]
        self.twin = LogTwin(TcpCore("10.77.0.2", **cfg))
        self.now = 1_000 * MS
        self.models: dict[int, ConnModel] = {}
        self.sent: dict[int, int] = {}          # handle -> send-stream bytes posted
        self.dead: dict[int, str] = {}          # handle -> how it ended (reset / closed)
        self.est = self.half = self.active = None
        self.log: list = []                     # the event script, for reproduction
        self.next_sport = 41000
        self.sources: set = set()               # addresses frames came from (or we connected to)
        self.frames = self.segments = 0

    def clone(self) -> "World":
        """An independent copy (cores restored from state snapshots): the
        fuzzers set the conversation up once and fork it per input."""
        w = copy.copy(self)
        cores = [self.core] + self.pair
        fresh = []
        for c, kw in zip(cores, self._core_args):
            n = TcpCore("10.77.0.2", **kw)
            n.load_state(c.state_bytes())
            fresh.append(n)
        w.core, w.pair = fresh[0], fresh[1:]
        twin = TcpCore("10.77.0.2", **self._core_args[0])
        twin.load_state(self.core.state_bytes())
        w.twin = LogTwin(twin)
        w.models = copy.deepcopy(self.models)
        w.sent = dict(self.sent)
        w.dead = dict(self.dead)
        w.sources = set(self.sources)
        w.log = list(self.log)
        return w

    # -- running one event on every replica -------------------------------
    def _all(self, fn):
        ref = fn(self.core)
        if not self.pair:
            return ref
        outs = [fn(c) for c in self.pair]
        d = self.core.digest()
        check(all(c.digest() == d for c in self.pair), "replicas diverged", self.log[-1:])
        key = lambda a: tuple(a)
        # `ordered` marks where the owner changes: a single replica has none
        single_tx = sorted((a for a in ref if isinstance(a, Transmit)), key=key)
        pair_tx = sorted((a._replace(ordered=False) for o in outs for a in o if isinstance(a, Transmit)), key=key)
        check(single_tx == pair_tx, "split replicas did not emit exactly the single replica's segments")
        # per connection, consecutive data segments: the second is marked
        # ordered exactly when another replica owns it
        owners = sorted((a.handle, a.index, r, a.ordered) for r, o in enumerate(outs) for a in o
                        if isinstance(a, Transmit) and a.index is not None)
        check(all(ordered == (r != pr) for (ph, pi, pr, _), (h, i, r, ordered) in zip(owners, owners[1:])
                  if h == ph and i == pi + 1),
              "a data segment of a new owner is not marked ordered, or one of the same owner is", owners)
        pc = _merge_copies([a for o in outs for a in o if isinstance(a, Copy)])
        check(_merge_copies([a for a in ref if isinstance(a, Copy)]) == pc,
              "split replicas did not copy exactly the single replica's bytes")
        notes = [a for a in ref if isinstance(a, Notify)]
        check(all([a for a in o if isinstance(a, Notify)] == notes for o in outs),
              "replicas notified differently")
        return ref

    def _snapshot(self):
        handles = self.core.connections()
        return {h: self.core.conn(h) for h in handles}

    def _stats(self):
        s = self.core.stats()
        s.pop("frames")
        s.pop("tcp_segments")
        return s

    def run(self, kind, *args, frame=b"", flags=0, gso=0, dt=0):
        """Run one event on every core and check it."""
        self.now += dt
        self.log.append((kind, args, frame, flags, gso, dt))
        before = self._snapshot()
        drops0 = self.core.drops()
        stats0 = self._stats()
        seg0 = self.core.stats()["tcp_segments"]
        echo0 = stats0["icmp_echo"]
        now = self.now
        if kind == "frame" and len(frame) >= 20:
            self.sources.add(bytes(frame[12:16]))
        if kind == "connect":
            self.sources.add(struct.pack("!I", int.from_bytes(bytes(map(int, args[0].split("."))), "big")))
        if kind == "frame":
            actions = self._all(lambda c: c.frame(frame, now, flags, gso))
            self._check_twin(actions, self.twin.frame(frame, now, flags, gso), frame)
        elif kind == "tick":
            actions = self._all(lambda c: c.tick(now))
            self._check_twin(actions, [(self.twin.core.tick(now), [])], frame)
        else:
            actions = self._all(lambda c: getattr(c, kind)(*args, now=now))
            self._check_twin(actions, [(getattr(self.twin.core, kind)(*args, now=now), [])], frame)
        check(self.core.action_overflow == 0, "action list overflowed")
        after = self._snapshot()
        self._check_actions(actions, before, after, frame)
        self._check_monotonic(after)
        if kind == "frame":
            self._check_accounting(frame, actions, before, after, drops0, stats0, seg0, echo0)
        return actions

    def _check_twin(self, actions, positions, frame):
        """The core fed through the log ends the event where the core fed the
        frame did: same state, same segments and notifications, the same
        bytes copied to the same stream offsets."""
        check(self.twin.core.digest() == self.core.digest(), "the log and the frame path diverged",
              self.log[-1:])
        check(self.twin.core.drops() == self.core.drops(), "the log counted drops differently",
              self.twin.core.drops(), self.core.drops())
        twin_actions = [a for acts, _ in positions for a in acts]
        key = repr
        check(sorted((a for a in twin_actions if not isinstance(a, Copy)), key=key) ==
              sorted((a for a in actions if not isinstance(a, Copy)), key=key),
              "the log path sent or notified differently")
        twin_copies = sorted((a.handle, a.stream_offset, data) for acts, datas in positions
                             for a, data in zip([x for x in acts if isinstance(x, Copy)], datas))
        copies = sorted((a.handle, a.stream_offset, bytes(frame[a.frame_offset:a.frame_offset + a.length]))
                        for a in actions if isinstance(a, Copy))
        check(twin_copies == copies, "the log path copied different bytes")

    # -- the oracle ---------------------------------------------------------
    def _model(self, h, snap):
        m = self.models.get(h)
        if m is None:
            m = self.models[h] = ConnModel()
        if snap is not None and snap["state"] != "SYN_SENT":
            m.irs = snap["irs"]                 # fixed once synchronized
        return m

    def _check_actions(self, actions, before, after, frame):
        # Copies first: an ACK in the same event may cover what they deliver.
        for a in actions:
            if not isinstance(a, Copy):
                continue
            snap = before.get(a.handle) or after.get(a.handle)
            check(snap is not None, "copy for an unknown connection", a)
            check(a.length > 0, "empty copy", a)
            ihl, hl, plen, _ = parse_l4(frame)
            check(ihl + hl <= a.frame_offset and a.frame_offset + a.length <= ihl + hl + plen,
                  "copy outside the frame's TCP payload", a, len(frame))
            consumed = before[a.handle]["consumed_off"] if a.handle in before else 0
            check(consumed <= a.stream_offset and a.stream_offset + a.length <= consumed + self.rcvbuf,
                  "copy outside [consumed, consumed + rcvbuf)", a, consumed)
            m = self._model(a.handle, snap)
            end = a.stream_offset + a.length
            if len(m.stream) < end:
                m.stream.extend(b"\0" * (end - len(m.stream)))
            m.stream[a.stream_offset:end] = frame[a.frame_offset:a.frame_offset + a.length]
            m.covered.add(a.stream_offset, end)
        for a in actions:
            if isinstance(a, Transmit):
                self._check_transmit(a, before, after, frame)
            elif isinstance(a, Notify):
                if a.event in ("reset", "closed"):
                    self.dead.setdefault(a.handle, a.event if a.event == "closed" else f"reset:{a.value}")
                if a.event in ("readable", "peer_closed"):
                    m = self._model(a.handle, before.get(a.handle) or after.get(a.handle))
                    check(a.value <= m.covered.prefix(),
                          f"{a.event} notification beyond the bytes delivered", a, m.covered.ranges)
                    if a.event == "peer_closed":
                        m.peer_fin = True

    def _check_transmit(self, a, before, after, frame):
        h = a.header
        check(len(h) >= 20 and h[0] == 0x45, "transmit header is not IPv4 without options", h[:1])
        check(csum(h[:20]) == 0, "transmit IPv4 checksum wrong")
        tot = struct.unpack("!H", h[2:4])[0]
        check(tot == len(h) + a.length, "IPv4 total length does not match the transmit", tot, len(h), a.length)
        check(h[12:16] == struct.pack("!I", STACK), "transmit from an address not ours")
        check(h[16:20] in self.sources, "transmit to an address that never sent us a frame", h[16:20])
        check(h[16:20] != h[12:16], "transmit to ourselves")
        if a.source == "frame":
            check(a.offset + a.length <= len(frame), "echo reply beyond the frame")
            return
        if a.source == "stream":
            check(a.offset + a.length <= self.sent.get(a.handle, 0), "transmit beyond the send stream",
                  a.offset, a.length, self.sent.get(a.handle, 0))
        if h[9] != 6:
            return
        t = h[20:]
        flags = t[13]
        snap = after.get(a.handle) or before.get(a.handle)
        if snap is None:
            return
        if not (flags & ACK) or a.handle == 0xFFFFFFFF:
            return
        m = self._model(a.handle, snap)
        check(m.irs is not None, "ACK sent by a connection that never synchronized", a)
        ackno = struct.unpack("!I", t[8:12])[0]
        if flags & SYN:
            check(ackno == (m.irs + 1) & 0xFFFFFFFF, "SYN-ACK does not acknowledge the SYN")
            return
        acked = (ackno - m.irs - 1) & 0xFFFFFFFF
        prefix = m.covered.prefix()
        fin = 1 if m.peer_fin else 0
        check(acked <= prefix + fin, "ACK covers bytes that were not received", acked, prefix, fin)
        for l, r in _sack_blocks(t):
            lo, hi = (l - m.irs - 1) & 0xFFFFFFFF, (r - m.irs - 1) & 0xFFFFFFFF
            check(lo < hi and m.covered.contains(lo, hi), "SACK block covers bytes not received",
                  (lo, hi), m.covered.ranges)

    def _check_monotonic(self, after):
        check(self.core.connection_count == len(after), "connection count differs from the live connections",
              self.core.connection_count, len(after))
        for h, snap in after.items():
            m = self._model(h, snap)
            check(snap["rcv_nxt_off"] >= m.rcv_nxt_off, "rcv_nxt moved backwards", h)
            check(snap["consumed_off"] >= m.consumed, "consumed offset moved backwards", h)
            check(snap["rcv_nxt_off"] <= m.covered.prefix() or snap["rcv_nxt_off"] == 0,
                  "rcv_nxt beyond the bytes copied", snap["rcv_nxt_off"], m.covered.ranges)
            m.rcv_nxt_off = snap["rcv_nxt_off"]
            m.consumed = snap["consumed_off"]

    def _check_accounting(self, frame, actions, before, after, drops0, stats0, seg0, echo0):
        self.frames += 1
        drops1 = self.core.drops()
        diff = {k: drops1.get(k, 0) - drops0.get(k, 0) for k in drops1 if drops1.get(k, 0) != drops0.get(k, 0)}
        st = self.core.stats()
        seg_delta = st["tcp_segments"] - seg0
        echo_delta = st["icmp_echo"] - echo0
        parse = {k: v for k, v in diff.items() if k in PARSE_DROPS}
        buckets = sum(parse.values()) + seg_delta + echo_delta
        check(buckets == 1, "frame not accounted in exactly one bucket", parse, seg_delta, echo_delta)
        total = sum(v for k, v in self.core.drops().items() if k in PARSE_DROPS) + st["icmp_echo"] + st["tcp_segments"]
        check(total == st["frames"], "frames != parse drops + echoes + segments", total, st["frames"])
        if not seg_delta:
            return
        self.segments += 1
        seg_drops = {k: v for k, v in diff.items() if k not in PARSE_DROPS}
        if seg_drops or actions:
            return
        if before != after or self._stats() != stats0:
            return
        ihl, hl, plen, fl = parse_l4(frame)
        src, sport, dport = frame[12:16], frame[ihl:ihl + 2], frame[ihl + 2:ihl + 4]
        known = any(s["remote"][1] == struct.unpack("!H", sport)[0] and s["lport"] == struct.unpack("!H", dport)[0]
                    for s in before.values())
        check(known and plen == 0 and (fl & ACK) and not (fl & (SYN | FIN | RST)),
              "segment silently ignored: no drop counted, no action, no state change",
              hex(fl), plen, known)

    # -- building the starting conversation --------------------------------
    def est_seg(self, **kw):
        """A segment of the established connection that is valid right now."""
        s = self.core.conn(self.est)
        base = dict(sport=EST_SPORT, seq=s["rcv_nxt"] if s else 0, ack=s["snd_una"] if s else 0,
                    options=self.ts_opt(s) if s else b"")
        base.update(kw)
        return Seg(**base)

    def ts_opt(self, s):
        if not s or not s["ts_ok"]:
            return b""
        return b"\x01\x01" + opt_ts(s["ts_recent"] + 1, 0)

    def deliver(self, seg: Seg, flags=0, gso=0, dt=0):
        return self.run("frame", frame=seg.build(), flags=flags, gso=gso, dt=dt)

    def setup(self):
        """Listener, an established connection with data both ways, data
        outstanding (so SACK-carrying ACKs mean something), an out-of-order
        island (so we send SACK blocks), a half-open connection, and an
        active open in SYN-SENT."""
        self.run("listen", PORT)
        syn_opts = pad4(opt_mss(1460) + opt_sack_perm() + opt_ts(100, 0) + opt_wscale(7))
        peer_isn = 0xFFFFF000                 # crosses the wrap within a few KiB
        out = self.deliver(Seg(sport=EST_SPORT, seq=peer_isn, flags=SYN, options=syn_opts))
        synack = [a for a in out if isinstance(a, Transmit)][0].header[20:]
        iss = struct.unpack("!I", synack[4:8])[0]
        ts_them = _ts_option(synack)[0]
        out = self.deliver(Seg(sport=EST_SPORT, seq=peer_isn + 1, ack=iss + 1, window=1000,
                               options=b"\x01\x01" + opt_ts(101, ts_them)))
        self.est = [a for a in out if isinstance(a, Notify) and a.event == "accepted"][0].handle
        self.run("accepted", self.est)
        # data in, data out
        self.deliver(self.est_seg(payload=bytes(range(256)) * 4, flags=ACK | PSH), dt=MS)
        self.sent[self.est] = 6000
        self.run("send", self.est, 6000, dt=MS)
        s = self.core.conn(self.est)
        self.deliver(self.est_seg(seq=s["rcv_nxt"] + 500, payload=b"island" * 50), dt=MS)
        # half-open: SYN, no ACK yet
        self.deliver(Seg(sport=HALF_SPORT, seq=5000, flags=SYN,
                         options=pad4(opt_mss(536) + opt_sack_perm() + opt_ts(7, 0))), dt=MS)
        self.half = next(h for h, s in self._snapshot().items() if s["remote"][1] == HALF_SPORT)
        # active open
        self.run("connect", "10.77.0.1", ACTIVE_DPORT, ACTIVE_LPORT, dt=MS)
        self.active = next(h for h, s in self._snapshot().items() if s["remote"][1] == ACTIVE_DPORT)
        return self

    # -- templates: valid frames of the current conversation ---------------
    TEMPLATES = ("syn_new", "est_ack", "est_data", "est_ooo", "est_fin", "est_sack", "est_rst",
                 "est_syn", "half_ack", "half_syn", "synsent_synack", "icmp_echo", "no_conn",
                 "cookie_ack")

    def template(self, name, n=0) -> Seg:
        """A frame that is valid for the current state; `n` varies it."""
        n &= 0xFFFF
        s = self.core.conn(self.est)
        if name == "syn_new":
            self.next_sport += 1
            return Seg(sport=self.next_sport, seq=n * 7919, flags=SYN,
                       options=pad4(opt_mss(1460) + opt_sack_perm() + opt_ts(n, 0) + opt_wscale(n % 16)))
        if name == "est_ack":
            return self.est_seg()
        if name == "est_data":
            return self.est_seg(flags=ACK | PSH, payload=_payload(n % 1500 + 1, n))
        if name == "est_ooo":
            return self.est_seg(seq=(s["rcv_nxt"] if s else 0) + 1 + n % 8000, payload=_payload(n % 700 + 1, n))
        if name == "est_fin":
            return self.est_seg(flags=ACK | FIN)
        if name == "est_sack":
            una = s["snd_una"] if s else 0
            blocks = [(una + 1000 * (i + 1), una + 1000 * (i + 1) + 500) for i in range(n % 5)]
            opts = self.ts_opt(s) + (b"\x01\x01" + opt_sack(blocks[:3]) if blocks else b"")
            return self.est_seg(options=opts)
        if name == "est_rst":
            return self.est_seg(flags=RST, seq=(s["rcv_nxt"] if s else 0) + 1 + n % 3000, options=b"")
        if name == "est_syn":
            return self.est_seg(flags=SYN, options=opt_mss(1000))
        h = self.core.conn(self.half)
        if name == "half_ack":
            return Seg(sport=HALF_SPORT, seq=5001, ack=(h["iss"] + 1) if h else n,
                       options=b"\x01\x01" + opt_ts(8, 0) if h else b"")
        if name == "half_syn":
            return Seg(sport=HALF_SPORT, seq=5000, flags=SYN, options=pad4(opt_mss(536) + opt_ts(7, 0)))
        if name == "synsent_synack":
            a = self.core.conn(self.active)
            return Seg(sport=ACTIVE_DPORT, dport=ACTIVE_LPORT, seq=n * 31337, ack=(a["iss"] + 1) if a else n,
                       flags=SYN | ACK, options=pad4(opt_mss(1400) + opt_sack_perm() + opt_ts(n, 0) + opt_wscale(3)))
        if name == "icmp_echo":
            return Seg(proto=1, icmp=icmp_echo(n, n, _payload(n % 64, n)))
        if name == "no_conn":
            return Seg(sport=n or 1, dport=9, seq=n, flags=ACK | PSH, payload=b"hello")
        if name == "cookie_ack":
            self.next_sport += 1
            return Seg(sport=self.next_sport, seq=n, ack=n * 65537, flags=ACK)
        raise ValueError(name)

    # -- after the script ---------------------------------------------------
    def still_works(self):
        """The established connection still accepts valid in-order data
        (unless the script legitimately ended it), and a new connection can
        be opened."""
        s = self.core.conn(self.est)
        if s is None:
            check(self.est in self.dead, "the established connection vanished without a notification")
        elif s["state"] in ("ESTABLISHED", "FIN_WAIT_1", "FIN_WAIT_2") and not s["app_closed"]:
            self.run("consumed", self.est, s["rcv_nxt_off"], dt=MS)
            s = self.core.conn(self.est)
            if s is not None:
                wnd = (s["rcv_adv"] - s["rcv_nxt"]) & 0xFFFFFFFF
                check(0 < wnd <= 1 << 31, "window stuck closed after the application consumed everything",
                      wnd, s["rcv_adv"], s["rcv_nxt"])
                data = b"STILL-WORKS:" + bytes(range(64))
                data = data[:wnd]
                off = s["rcv_nxt_off"]
                if s["fin_off"] != NO_OFF:
                    data = data[:s["fin_off"] - off]        # the peer's FIN ends the stream there
                if data:
                    self.deliver(self.est_seg(flags=ACK | PSH, payload=data), dt=MS)
                    got = bytes(self.models[self.est].stream[off:off + len(data)])
                    s2 = self.core.conn(self.est)
                    check(s2 is not None, "valid in-order data killed the connection")
                    check(got == data, "valid in-order data was not copied to its offset", got[:16], data[:16])
                    check(s2["rcv_nxt_off"] >= off + len(data), "valid in-order data did not advance rcv_nxt",
                          s2["rcv_nxt_off"], off)
        # a new connection on the listener
        self.next_sport += 1
        sport = self.next_sport
        out = self.deliver(Seg(sport=sport, seq=77, flags=SYN, options=pad4(opt_mss(1460) + opt_sack_perm())), dt=MS)
        # (timers of the other connection due by now may send too: a loss probe, a retransmission)
        sa = [a for a in out if isinstance(a, Transmit) and a.header[9] == 6 and a.header[33] & SYN]
        check(len(sa) == 1 and sa[0].header[33] == SYN | ACK, "a new SYN got no SYN-ACK", out)
        iss = struct.unpack("!I", sa[0].header[24:28])[0]
        out = self.deliver(Seg(sport=sport, seq=78, ack=iss + 1, flags=ACK | PSH, payload=b"new"), dt=MS)
        new = [a for a in out if isinstance(a, Notify) and a.event == "accepted"]
        check(new, "the handshake of a new connection did not complete", out)
        check(bytes(self.models[new[0].handle].stream[:3]) == b"new", "data of a new connection not copied")


def _merge_copies(copies):
    """Copies as merged byte ranges per connection, with the frame offset of
    every byte (so a split copy compares equal to the whole one)."""
    per = {}
    for a in copies:
        per.setdefault(a.handle, []).append((a.stream_offset, a.stream_offset + a.length,
                                           a.frame_offset - a.stream_offset))
    out = {}
    for conn, rs in per.items():
        rs.sort()
        merged = []
        for s, e, d in rs:
            if merged and merged[-1][1] == s and merged[-1][2] == d:
                merged[-1][1] = e
            else:
                merged.append([s, e, d])
        out[conn] = merged
    return out


def _sack_blocks(t: bytes):
    hl = (t[12] >> 4) * 4
    opts = t[20:hl]
    i = 0
    while i < len(opts):
        k = opts[i]
        if k == 0:
            break
        if k == 1:
            i += 1
            continue
        ln = opts[i + 1]
        if k == 5:
            body = opts[i + 2:i + ln]
            return [struct.unpack("!II", body[j:j + 8]) for j in range(0, len(body), 8)]
        i += max(ln, 2)
    return []


def _ts_option(t: bytes):
    """(TSval, TSecr) of a TCP header, or (0, 0)."""
    hl = (t[12] >> 4) * 4
    opts = t[20:hl]
    i = 0
    while i < len(opts):
        k = opts[i]
        if k == 0:
            break
        if k == 1:
            i += 1
            continue
        ln = opts[i + 1]
        if k == 8 and ln == 10:
            return struct.unpack("!II", opts[i + 2:i + 10])
        i += max(ln, 2)
    return 0, 0


def _payload(n, salt):
    return bytes((i * 31 + salt) & 0xFF for i in range(n))


def play(w: World, events):
    """Run an event script (the tuples both fuzzers generate):
    ("frame", template, n, [(field, value)...], frame_flags, gso_size, dt),
    ("valid", template, n, dt), ("raw", bytes, frame_flags, gso_size, dt),
    ("tick", dt), ("app", method, "est"|"half"|"active", n, dt)."""
    for ev in events:
        kind = ev[0]
        if kind == "frame":
            _, name, n, muts, flags, gso, d = ev
            seg = w.template(name, n)
            for field, value in muts:
                seg = apply_mutation(seg, field, value)
            w.run("frame", frame=seg.build(), flags=flags, gso=gso, dt=d)
        elif kind == "valid":
            _, name, n, d = ev
            w.deliver(w.template(name, n), dt=d)
        elif kind == "raw":
            _, data, flags, gso, d = ev
            w.run("frame", frame=data, flags=flags, gso=gso, dt=d)
        elif kind == "tick":
            w.run("tick", dt=ev[1])
        else:
            _, method, who, n, d = ev
            h = getattr(w, who)
            s = w.core.conn(h)
            if method == "consumed":
                off = (s["rcv_nxt_off"] * (n % 101)) // 100 if s else n
                w.run("consumed", h, off, dt=d)
            elif method == "consumed_all":
                w.run("consumed", h, s["rcv_nxt_off"] if s else n, dt=d)
            elif method == "send":
                w.sent[h] = w.sent.get(h, 0) + n
                w.run("send", h, w.sent[h], dt=d)
            else:
                w.run(method, h, dt=d)


# ---------------------------------------------------------------------------
# Mutations: field by field
# ---------------------------------------------------------------------------

SEQ_DELTAS = (0, 1, -1, 2, 1448, -1448, 65535, 1 << 20, (1 << 31) - 1, 1 << 31, (1 << 31) + 1,
              -(1 << 31), (1 << 32) - 1)
FRAME_FLAGS = (0, 1, 2, 4, 1 | 4, 2 | 4, 1 | 2, 7)
GSO_SIZES = (0, 1, 63, 64, 88, 536, 1448, 1460, 9000, 65495, 65496, 65535, 65536, (1 << 32) - 1)
OPTION_KINDS = (0, 1, 2, 3, 4, 5, 8, 19, 28, 29, 30, 34, 253, 254, 255)


def apply_mutation(seg: Seg, field_name: str, value) -> Seg:
    """One field mutation.  Relative fields (seq, ack, total_len, cut) take
    a delta; the rest take a value."""
    if field_name in ("seq", "ack"):
        return replace(seg, **{field_name: (getattr(seg, field_name) + value) & 0xFFFFFFFF})
    if field_name == "total_len":
        natural = len(replace(seg, total_len=None, trailer=b"", cut=None).build())
        return replace(seg, total_len=(natural + value) & 0xFFFF)
    if field_name == "cut":
        natural = len(seg.build())
        return replace(seg, cut=max(0, natural + value) if value < 0 else value)
    if field_name == "tcp_csum_bad":
        good = replace(seg, tcp_csum=None, cut=None, trailer=b"").build()
        ihl = (good[0] & 0xF) * 4
        c = struct.unpack("!H", good[ihl + 16:ihl + 18])[0] if len(good) >= ihl + 18 else 0
        return replace(seg, tcp_csum=c ^ (value or 1))
    if field_name == "ip_csum_bad":
        good = replace(seg, ip_csum=None, cut=None).build()
        c = struct.unpack("!H", good[10:12])[0]
        return replace(seg, ip_csum=c ^ (value or 1))
    if field_name == "options_append":
        return replace(seg, options=seg.options + value)
    if field_name == "options_prepend":
        return replace(seg, options=value + seg.options)
    if field_name == "payload_len":
        return replace(seg, payload=_payload(value, 3))
    return replace(seg, **{field_name: value})
