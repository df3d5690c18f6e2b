"""IPv6 through the log: the sequencer describes IPv6 segments (a REC_PEER6
names the peer's address once, then plain segment descriptors follow, split
reads and coalescing as for IPv4), and every strategy's replicas agree --
the same bytes delivered, the same segments sent, the same digests -- as the
sequential baseline, with loss, reordering and duplication.  Checked also:
a log interleaving two IPv6 peers that share their last 32 bits, their ports
and an IPv4 peer of the same 32 bits, through a twin core fed the frames."""
import ipaddress
import struct

import pytest
from scapy.layers.inet import IP, TCP
from scapy.layers.inet6 import IPv6
from scapy.packet import Raw, raw

from misdtcp._ring import BroadcastRing
from misdtcp._tcpcore import Copy, Notify, TcpCore
from misdtcp.runtime.replay import ReplayConfig, build_log
from misdtcp.runtime.replay_image import apply_descriptor, check_pattern
from misdtcp.runtime.replay_run import run_log
from misdtcp.runtime.sequencer import LogWriter
from misdtcp.runtime.vocabulary import Record

CORE = dict(rcvbuf=4 << 20, secret=11)
V6 = dict(client="fd00:77::1", server="fd00:77::2", mss=1428)


def segments(result):
    return sorted(frame for worker in result.captured for frame in worker)


def final_digests(result):
    out = []
    for slots in result.digests:
        if isinstance(slots, int):
            out.append(slots)
            continue
        published = [(rnd, d) for rnd, d in slots if rnd]
        out.append(max(published)[1] if published else None)
    return out


def replay(log, strategy, workers=1, stripe=16384):
    return run_log(log, strategy=strategy, workers=workers, stripe=stripe, core_config=CORE,
                   sink="capture", keep_buffer=True, timeout=60)


@pytest.mark.timeout(240)
@pytest.mark.parametrize("mode", ["mtu", "gso"])
def test_ipv6_replicas_match_the_sequential_baseline(mode):
    total = (1 << 20) if mode == "mtu" else (3 << 20)
    log = build_log(ReplayConfig(total_bytes=total, mode=mode, loss=0.02, reorder=0.02, duplicate=0.01,
                                 seed=21, digest_every=64, **V6), CORE)
    # one REC_PEER6 for the one peer; payloads read in place, runs coalesced (mtu)
    assert log.sequencer["peers6"] == 1
    assert log.sequencer["split_reads"] >= log.frames - 4
    if mode == "mtu":
        assert log.sequencer["coalesced"] > 0
    base = replay(log, "single")
    assert base.delivered == log.delivered == total
    assert check_pattern(base.receive_buffer, 0) == -1
    assert final_digests(base) == [log.reference_digest]
    base_segments = segments(base)
    assert len(base_segments) == log.segments_out
    # what the stack sends is IPv6 (vnet header, then version 6)
    assert all(f[12] >> 4 == 6 for f in base_segments)
    for workers, stripe in ((1, 16384), (2, 1024), (3, 4096)):
        r = replay(log, "misd", workers, stripe)
        assert r.receive_buffer == base.receive_buffer, (workers, stripe)
        assert final_digests(r) == [log.reference_digest] * workers, (workers, stripe)
        assert segments(r) == base_segments, (workers, stripe)
    r = replay(log, "mimd", 2)
    assert r.receive_buffer == base.receive_buffer
    assert segments(r) == base_segments
    r = replay(log, "leader", 2, 4096)
    assert r.receive_buffer == base.receive_buffer
    assert segments(r) == base_segments


def _frame(ip, tcp, payload=b""):
    """virtio-net header (checksum valid) + packet."""
    return struct.pack("<BBHHHHH", 2, 0, 0, 0, 0, 0, 0) + raw(ip / tcp / Raw(payload)) if payload else \
        struct.pack("<BBHHHHH", 2, 0, 0, 0, 0, 0, 0) + raw(ip / tcp)


def test_peers_sharing_their_last_32_bits_and_ports_stay_apart_through_the_log():
    """Three peers -- fd00:77::a4d:1, fd00:99::a4d:1 and 10.77.0.1 (all end in
    0x0a4d0001) -- open connections from the same port and send interleaved
    data.  The log describes the IPv6 segments with one REC_PEER6 whenever
    the peer changes; a core replaying the log must do exactly what a twin
    core fed the frames does, and each connection receives only its own
    bytes."""
    peers = [("fd00:77::a4d:1", IPv6), ("fd00:99::a4d:1", IPv6), ("10.77.0.1", IP)]
    ring = BroadcastRing(4096, 1 << 22, name="misdtcp-test-peer6")
    writer = LogWriter(ring, "10.77.0.2", local_address6="fd00:77::2")
    logged = TcpCore("10.77.0.2", local_address6="fd00:77::2", secret=3)
    direct = TcpCore("10.77.0.2", local_address6="fd00:77::2", secret=3)
    now = 10**9
    seen = 0
    trace_log, trace_direct = [], []
    received = {}

    def feed(data):
        nonlocal now, seen
        now += 1000
        assert writer.frame(data, now)
        writer.commit()
        trace_direct.append(direct.frame(data[12:], now, 2))
        actions = []                      # the frame's descriptors: a REC_PEER6, then the segment
        while seen < ring.available():
            actions += apply_descriptor(logged, ring, seen)
            seen += 1
        trace_log.append(actions)

    for core in (logged, direct):
        core.listen(5201, now=now)
    isns = {}
    for addr, layer in peers:
        ip = layer(src=addr, dst="fd00:77::2" if layer is IPv6 else "10.77.0.2")
        feed(_frame(ip, TCP(sport=40000, dport=5201, flags="S", seq=1000,
                            options=[("MSS", 1200), ("Timestamp", (1, 0))])))
        synack = trace_direct[-1][0]
        isns[addr] = TCP(synack.header[40 if layer is IPv6 else 20:]).seq
    for addr, layer in peers:
        ip = layer(src=addr, dst="fd00:77::2" if layer is IPv6 else "10.77.0.2")
        feed(_frame(ip, TCP(sport=40000, dport=5201, flags="A", seq=1001, ack=isns[addr] + 1,
                            options=[("NOP", None), ("NOP", None), ("Timestamp", (2, 0))])))
    assert len([a for step in trace_direct for a in step if isinstance(a, Notify) and a.event == "accepted"]) == 3
    offset = {addr: 1001 for addr, _ in peers}
    for rnd in range(4):
        for addr, layer in peers:
            ip = layer(src=addr, dst="fd00:77::2" if layer is IPv6 else "10.77.0.2")
            payload = (addr.encode() + bytes([rnd])) * 20
            feed(_frame(ip, TCP(sport=40000, dport=5201, flags="A", seq=offset[addr], ack=isns[addr] + 1,
                                options=[("NOP", None), ("NOP", None), ("Timestamp", (3 + rnd, 0))]),
                        payload))
            offset[addr] += len(payload)
    # copies name bytes of what each was fed (the payload, or the frame): the
    # same bytes, at different offsets
    def same(trace):
        return [[a._replace(frame_offset=None) if isinstance(a, Copy) else a for a in step] for step in trace]
    assert same(trace_log) == same(trace_direct)
    assert logged.digest() == direct.digest()
    assert writer.counters["peers6"] > 2                  # the two IPv6 peers alternate
    conns = {tuple(logged.conn(h)["remote"]): logged.conn(h) for h in logged.connections()}
    assert set(conns) == {(addr, 40000) for addr, _ in peers}
    for addr, _ in peers:
        assert conns[(addr, 40000)]["bytes_in"] == sum(len((addr.encode() + bytes([r])) * 20) for r in range(4))
    kinds = [e.kind for e in ring.read(0, release=False)]
    assert kinds.count(Record.PEER6) == writer.counters["peers6"]
    ring.close()
