"""Fault injection: rates, determinism, wire-like corruption, reorder, delay, bounded pool."""
from __future__ import annotations

import collections
import hashlib
import math
import random
import struct

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP

from misdtcp.frameio import faults as _faults
from misdtcp.frameio.faults import FaultConfigError, FaultInjector
from misdtcp.wire import vnet_header as vnet
from netns_helpers import ScriptedClient, as_gso_super_frame, finish, kernel_sink, read_frame, \
    tun_netns, write_frame

__all__ = ["tun_netns"]

MS = 1_000_000


# -- an independent checksum oracle (pure Python, not the code under test) ------------------
def _sum16(data: bytes) -> int:
    if len(data) % 2:
        data += b"\x00"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return total


def receiver_accepts(packet: bytes) -> bool:
    """What a receiver verifying IPv4 and TCP/UDP/ICMP checksums would accept."""
    ihl = (packet[0] & 0x0F) * 4
    if _sum16(packet[:ihl]) != 0xFFFF:
        return False
    end = struct.unpack("!H", packet[2:4])[0]
    proto = packet[9]
    l4 = packet[ihl:end]
    if proto == 17 and l4[6:8] == b"\x00\x00":
        return True  # UDP without a checksum
    if proto == 1:
        return _sum16(l4) == 0xFFFF
    pseudo = packet[12:20] + struct.pack("!BBH", 0, proto, len(l4))
    return _sum16(pseudo + l4) == 0xFFFF


def partial(packet: bytes) -> tuple[vnet.VnetHeader, bytes]:
    """The packet as the kernel hands it over with offload: checksum field = pseudo-header sum."""
    raw = bytearray(packet)
    ihl = (raw[0] & 0x0F) * 4
    proto = raw[9]
    offset = 16 if proto == 6 else 6
    l4_len = len(raw) - ihl
    pseudo = _sum16(bytes(raw[12:20]) + struct.pack("!BBH", 0, proto, l4_len))
    raw[ihl + offset:ihl + offset + 2] = pseudo.to_bytes(2, "big")
    return vnet.VnetHeader(flags=vnet.F_NEEDS_CSUM, csum_start=ihl, csum_offset=offset), bytes(raw)


def random_packet(rng: random.Random) -> bytes:
    payload = rng.randbytes(rng.choice([0, 1, 7, 64, 535, 1448, rng.randrange(0, 1460)]))
    ip = IP(src=f"10.77.0.{rng.randrange(1, 255)}", dst="10.77.0.2", id=rng.randrange(65536),
            ttl=rng.randrange(1, 256), tos=rng.randrange(256))
    kind = rng.random()
    if kind < 0.7:
        options = rng.choice([[], [("NOP", None), ("NOP", None), ("Timestamp", (rng.randrange(2 ** 32), 0))],
                              [("MSS", 1460), ("SAckOK", b""), ("WScale", 7)]])
        l4 = TCP(sport=rng.randrange(1, 65536), dport=5201, seq=rng.randrange(2 ** 32),
                 ack=rng.randrange(2 ** 32), flags="PA", window=rng.randrange(65536), options=options)
    elif kind < 0.9:
        l4 = UDP(sport=rng.randrange(1, 65536), dport=rng.randrange(1, 65536))
    else:
        l4 = ICMP(type=8, id=rng.randrange(65536), seq=rng.randrange(65536))
    return bytes(ip / l4 / payload)


def bit_distance(a: bytes, b: bytes) -> int:
    return sum(bin(x ^ y).count("1") for x, y in zip(a, b))


# -- configuration ----------------------------------------------------------------------
def test_configuration_errors_are_one_sentence():
    cases = [
        (dict(drop=1.5), "drop must be a probability between 0 and 1"),
        (dict(corrupt=-0.1), "corrupt must be a probability"),
        (dict(duplicate="lots"), "duplicate must be a probability"),
        (dict(delay=0.1), "a delay rate needs delay_ms or jitter_ms above 0"),
        (dict(delay_ms=-1), "delay_ms must be between 0 and 60000 ms"),
        (dict(seed=-1), "seed must be an integer"),
        (dict(reorder_gap=0), "reorder_gap must be an integer from 1 to 1000"),
        (dict(pool_slots=0), "pool_slots must be an integer"),
        (dict(pool_slots=65536, slot_bytes=1 << 20), "exceeds 256 MiB"),
    ]
    for kwargs, message in cases:
        with pytest.raises(FaultConfigError, match=message) as info:
            FaultInjector(**kwargs)
        text = str(info.value)
        assert text.endswith(".") and text.count(". ") == 0 and "\n" not in text


def test_from_spec_parses_the_cli_form():
    injector = FaultInjector.from_spec("drop=0.01, corrupt=0.001,delay=0.5,delay_ms=5,seed=0x2a")
    assert injector.config["drop"] == 0.01 and injector.config["seed"] == 42
    assert injector.config["delay_ms"] == 5.0 and injector.enabled
    assert not FaultInjector.from_spec("").enabled
    with pytest.raises(FaultConfigError, match="not a fault setting"):
        FaultInjector.from_spec("loss=0.1")
    with pytest.raises(FaultConfigError, match="is not a number"):
        FaultInjector.from_spec("drop=abc")


# -- rates and determinism -------------------------------------------------------------
def _within(count: int, n: int, p: float, sigmas: float = 5.0) -> bool:
    return abs(count - n * p) <= sigmas * math.sqrt(n * p * (1 - p)) + 1


def test_rates_match_configuration_over_100k_decisions():
    n = 100_000
    rates = dict(drop=0.05, corrupt=0.02, duplicate=0.03, reorder=0.04, delay=0.10)
    injector = FaultInjector(**rates, delay_ms=1, seed=12345)
    seen = collections.Counter()
    for _ in range(n):
        action = injector.decide()
        for name, bit in (("drop", _faults.DROP), ("corrupt", _faults.CORRUPT), ("duplicate", _faults.DUPLICATE),
                          ("reorder", _faults.REORDER), ("delay", _faults.DELAY)):
            if action & bit:
                seen[name] += 1
        if action == _faults.PASS:
            seen["pass"] += 1
    kept = 1 - rates["drop"]
    assert _within(seen["drop"], n, rates["drop"])
    assert _within(seen["corrupt"], n, kept * rates["corrupt"])
    assert _within(seen["duplicate"], n, kept * rates["duplicate"])
    assert _within(seen["reorder"], n, kept * rates["reorder"])
    assert _within(seen["delay"], n, kept * (1 - rates["reorder"]) * rates["delay"])
    counters = injector.counters
    assert counters["decisions"] == n
    assert counters["dropped"] == seen["drop"] and counters["duplicated"] == seen["duplicate"]
    assert counters["passed"] == seen["pass"]
    # a dropped frame gets no other fault
    assert seen["drop"] + seen["pass"] <= n


def test_same_seed_same_decisions_and_same_corruption():
    def run(seed: int):
        injector = FaultInjector(drop=0.1, corrupt=0.2, duplicate=0.1, reorder=0.1, delay=0.1, delay_ms=1,
                                 seed=seed, vnet_hdr_len=0)
        decisions = [injector.decide() for _ in range(5000)]
        frame = bytearray(bytes(IP(src="10.77.0.1", dst="10.77.0.2") / TCP() / (b"x" * 100)))
        injector.corrupt(frame)
        return decisions, bytes(frame)

    assert run(7) == run(7)
    assert run(7)[0] != run(8)[0]
    assert run(7)[1] != run(8)[1]


def test_one_rate_does_not_reshuffle_the_others():
    # five draws per decision whatever the rates: the i-th corrupt decision is
    # the same with and without drops (among frames that are not dropped)
    plain = FaultInjector(corrupt=0.3, seed=99)
    lossy = FaultInjector(corrupt=0.3, drop=0.5, seed=99)
    for _ in range(20000):
        a, b = plain.decide(), lossy.decide()
        if not b & _faults.DROP:
            assert a & _faults.CORRUPT == b & _faults.CORRUPT


# -- corruption ----------------------------------------------------------------------------
@pytest.mark.timeout(120)
def test_corruption_is_always_caught_by_the_checksums():
    rng = random.Random(2024)
    injector = FaultInjector(corrupt=1.0, seed=5)
    flips = collections.Counter()
    for i in range(3000):
        packet = random_packet(rng)
        assert receiver_accepts(packet)
        if i % 2 and packet[9] in (6, 17):  # the kernel offloads only TCP and UDP checksums
            header, sent = partial(packet)
        else:
            header, sent = vnet.VnetHeader(flags=vnet.F_DATA_VALID), packet
        frame = bytearray(header.pack() + sent)
        assert injector.corrupt(frame)
        out_header, out = vnet.split(frame)
        out = bytes(out)
        assert not out_header.needs_csum and not out_header.data_valid
        assert not receiver_accepts(out), f"corruption went unnoticed in frame {i}: {IP(packet).summary()}"
        assert not _faults.checksums_ok(out)
        assert out[0] == packet[0], "the version/IHL byte is never touched"
        # Relative to the frame as it would have been on the wire (checksum
        # completed), 1 to 3 bits differ, occasionally one more (cancellation).
        distance = bit_distance(out, packet)
        flips[distance] += 1
        assert 1 <= distance <= 11
    assert injector.counters["corrupted"] == 3000
    assert set(flips) >= {1, 2, 3}
    assert sum(count for d, count in flips.items() if d > 3) < 30


@pytest.mark.timeout(60)
def test_corrupting_a_gso_super_frame_completes_its_checksum_over_the_whole_frame():
    packet = bytes(IP(src="10.77.0.2", dst="10.77.0.1") / TCP(sport=1, dport=2, flags="A") / (b"\x5a" * 41 * 1448))
    header, sent = as_gso_super_frame(packet, 1448)
    injector = FaultInjector(corrupt=1.0, seed=3)
    frame = bytearray(header.pack() + sent)
    assert injector.corrupt(frame)
    out_header, out = vnet.split(frame)
    assert out_header.flags == 0 and out_header.gso_type == vnet.GSO_TCPV4 and out_header.gso_size == 1448
    assert not receiver_accepts(bytes(out))
    assert 1 <= bit_distance(bytes(out), packet) <= 11


def test_non_ipv4_frames_are_left_alone_and_counted():
    injector = FaultInjector(corrupt=1.0, seed=1)
    frame = bytearray(vnet.VnetHeader().pack() + b"\x60" + bytes(47))  # an IPv6 header
    before = bytes(frame)
    assert not injector.corrupt(frame)
    assert bytes(frame) == before
    assert injector.counters["corrupt_skipped"] == 1 and injector.counters["corrupted"] == 0


# -- duplicate, reorder, delay, pool -----------------------------------------------------------
def _frames(n: int) -> list[bytes]:
    return [b"frame-%06d" % i for i in range(n)]


def test_duplicate_emits_the_frame_twice_in_a_row():
    injector = FaultInjector(duplicate=1.0, seed=1, vnet_hdr_len=0)
    assert injector.process(b"abc") == [b"abc", b"abc"]


def test_reorder_preserves_the_multiset_and_bounds_displacement():
    frames = _frames(10000)
    injector = FaultInjector(reorder=0.2, reorder_gap=3, reorder_max_ms=1000, seed=77, vnet_hdr_len=0)
    out = []
    for i, frame in enumerate(frames):
        out.extend(injector.process(frame, now_ns=i * 1000))
    out.extend(injector.drain())
    assert injector.held == 0
    assert collections.Counter(out) == collections.Counter(frames)
    position = {frame: i for i, frame in enumerate(out)}
    displaced = [position[f] - i for i, f in enumerate(frames)]
    assert sum(1 for d in displaced if d > 0) > 1000  # frames really were reordered
    # a frame is overtaken by at most reorder_gap frames plus frames released with it
    assert max(displaced) <= 3 + 5
    assert injector.counters["reordered"] == injector.counters["released"]


def test_reordered_frame_is_released_by_time_on_an_idle_link():
    injector = FaultInjector(reorder=1.0, reorder_gap=5, reorder_max_ms=2, seed=1, vnet_hdr_len=0)
    assert injector.process(b"lonely", now_ns=0) == []
    assert injector.next_due_ns() == 2 * MS
    assert injector.release_due(2 * MS - 1) == []
    assert injector.release_due(2 * MS) == [b"lonely"]


def test_delay_never_releases_early_and_keeps_order():
    delay_ms, jitter_ms = 3, 2
    injector = FaultInjector(delay=1.0, delay_ms=delay_ms, jitter_ms=jitter_ms, seed=4, vnet_hdr_len=0)
    arrived = {}
    released = {}
    now = 0
    for i, frame in enumerate(_frames(2000)):
        now = i * 100_000  # 0.1 ms apart
        arrived[frame] = now
        for out in injector.process(frame, now_ns=now):
            released[frame if False else out] = now
        due = injector.next_due_ns()
        assert due is None or due >= now
    while injector.held:
        now = injector.next_due_ns()
        for out in injector.release_due(now):
            released[out] = now
    assert set(released) == set(arrived)
    for frame, t in released.items():
        assert t >= arrived[frame] + delay_ms * MS, "a delayed frame came out early"
        assert t <= arrived[frame] + (delay_ms + jitter_ms) * MS + 100_000
    assert injector.counters["delayed"] == 2000


def test_full_pool_degrades_to_pass_through_and_counts_it():
    injector = FaultInjector(delay=1.0, delay_ms=1000, pool_slots=4, slot_bytes=64, seed=1, vnet_hdr_len=0)
    outputs = [injector.process(frame, now_ns=0) for frame in _frames(10)]
    assert outputs[:4] == [[], [], [], []]
    assert outputs[4:] == [[f] for f in _frames(10)[4:]]
    assert injector.held == 4 and injector.counters["hold_refused"] == 6
    assert injector.process(b"y" * 65, now_ns=0) == [b"y" * 65]  # larger than a slot
    assert injector.counters["hold_refused"] == 7
    assert injector.release_due(1000 * MS) == _frames(4)
    assert injector.held == 0


def test_drop_forgets_frames():
    injector = FaultInjector(drop=1.0, seed=1, vnet_hdr_len=0)
    assert all(injector.process(f) == [] for f in _frames(100))
    assert injector.counters["dropped"] == 100


# -- against the kernel: corrupted super-frames are dropped, intact ones delivered ----------------
@pytest.mark.netns
@pytest.mark.timeout(60)
def test_kernel_drops_a_corrupted_gso_super_frame_and_accepts_the_retransmission(tun_netns):
    ns, tun = tun_netns
    payload = random.Random(1).randbytes(41 * 1448)
    sink = kernel_sink(ns, 5203, expect=len(payload), timeout=10)
    client = ScriptedClient(tun, 5203)
    client.connect()
    assert len(payload) <= client.peer_window
    header, super_frame = as_gso_super_frame(client.data_segment(payload, advance=False), 1448)

    injector = FaultInjector(corrupt=1.0, seed=11)
    corrupted = bytearray(header.pack() + super_frame)
    assert injector.corrupt(corrupted)
    tun.write(bytes(corrupted))
    # The kernel verifies the completed checksum over the whole super-frame
    # and discards it: no byte is acknowledged (it may send a duplicate ACK).
    with pytest.raises(TimeoutError):
        read_frame(tun, 1.0, lambda _h, p: client._from_peer(_h, p) and
                   IP(p)[TCP].ack != client.snd_nxt)

    write_frame(tun, super_frame, header)  # the intact "retransmission"
    end = client.snd_nxt + len(payload)
    acked = client.snd_nxt
    for _ in range(50):
        if acked == end:
            break
        acked = client.read()[TCP].ack
    assert acked == end
    status, out, err = finish(sink)
    assert status == 0, err
    assert out.split() == [str(len(payload)), hashlib.sha256(payload).hexdigest()]
