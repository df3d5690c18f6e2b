"""Sending: segmentation, GSO, RTO and Karn, RTT from timestamps, NewReno
and SACK recovery, zero-window probes, Nagle (Minshall's variant), FIN,
Reno vs CUBIC (RFC 6298, RFC 5681, RFC 6582, RFC 6675, RFC 9293 §3.7.4 and
§3.8.6.1).  CUBIC's curve is tested in test_core_cubic.py, SACK recovery in
depth in test_core_sack_recovery.py."""
import pytest
from scapy.layers.inet import IP, TCP

from harness import Harness, Peer, acks, open_connection, opts, tcp_of

MS = 1_000_000
FULL = 1448                    # MSS 1460 minus the 12-byte timestamp option (RFC 6691)


def established(ts=True, sack=True, window=65535, wscale=7, **config):
    h = Harness.create(**config)
    peer = Peer(window=window)
    conn, peer, synack = open_connection(h, peer, ts=ts, sack=sack, wscale=wscale)
    return h, conn, peer, synack[TCP].seq + 1


def data_segments(pkts):
    return [t for t in tcp_of(pkts) if len(t.payload)]


def test_segmentation_by_mss_leaves_room_for_timestamps():
    h, conn, peer, snd = established()
    out = h.write(conn, bytes(range(256)) * 20)               # 5120 bytes
    segs = data_segments(out)
    assert [len(t.payload) for t in segs] == [FULL, FULL, FULL, 5120 - 3 * FULL]
    assert [t.seq for t in segs] == [snd + i * FULL for i in range(4)]
    assert all(t.ack == 1001 and t.flags.A for t in segs)
    assert [bool(t.flags.P) for t in segs] == [False, False, False, True]
    assert max(p[IP].len for p in out) == 1500                # fits a 1500-byte MTU
    assert b"".join(bytes(t.payload) for t in segs) == bytes(range(256)) * 20


def test_segmentation_without_timestamps_uses_the_whole_mss():
    h, conn, peer, snd = established(ts=False)
    segs = data_segments(h.write(conn, b"x" * 3000))
    assert [len(t.payload) for t in segs] == [1460, 1460, 80]


def test_gso_super_segments_are_whole_multiples_of_the_mss():
    h, conn, peer, snd = established(gso_max=65000)
    h.write(conn, b"g" * 100_000)
    tx = [t for t in h.transmits if t.length]
    assert len(tx) == 1                                       # initial cwnd: 10 segments
    assert tx[0].length == 10 * FULL and tx[0].gso_size == FULL
    pkt = h.wire[-1]
    assert pkt[IP].len == 20 + 32 + 10 * FULL
    peer.learn(pkt)
    h.deliver(peer.segment("A"))
    tx = [t for t in h.transmits if t.length][1:]
    assert all(t.length % FULL == 0 and t.gso_size == FULL for t in tx)
    assert sum(t.length for t in tx) == 20 * FULL            # slow start doubled cwnd


def test_gso_tail_may_be_short():
    h, conn, peer, snd = established(gso_max=65000)
    h.write(conn, b"g" * (3 * FULL + 100))
    tx = [t for t in h.transmits if t.length]
    assert [(t.length, t.gso_size) for t in tx] == [(3 * FULL + 100, FULL)]


def test_rto_backs_off_exponentially_and_karn_ignores_retransmitted_samples():
    h, conn, peer, snd = established(ts=False, rto_min_ms=200)
    first = data_segments(h.write(conn, b"r" * 100))[0]
    assert h.core.conn(conn)["rto_ns"] == 200 * MS            # handshake RTT ~0 -> rto_min
    t0 = h.now
    # walk the timer by hand: expiries at +200, +600, +1400 ms
    seen = []
    while len(seen) < 3:
        h.now = h.core.next_timer
        out = data_segments(h._apply(h.core.tick(h.now)))
        for t in out:
            seen.append(((h.now - t0) // MS, t.seq, len(t.payload)))
    assert seen == [(200, snd, 100), (600, snd, 100), (1400, snd, 100)]
    assert all(tx.retransmit for tx in h.transmits[-3:])
    assert h.core.stats()["rto_expired"] == 3
    info = h.core.conn(conn)
    assert info["rto_ns"] == 1600 * MS and info["cwnd"] == 1460
    # an ACK for the retransmitted segment gives no RTT sample (Karn)
    srtt = info["srtt_ns"]
    peer.learn(h.wire[-1])
    h.deliver(peer.segment("A"), after_ms=50)
    info = h.core.conn(conn)
    assert info["srtt_ns"] == srtt and info["rto_ns"] == 1600 * MS
    assert info["snd_una"] == snd + 100 and info["rto_at"] == 0


def test_rtt_sample_from_a_timed_segment_without_timestamps():
    h, conn, peer, snd = established(ts=False, rto_min_ms=10)
    out = h.write(conn, b"t" * 100)
    before = h.core.conn(conn)
    peer.learn(out[0])
    h.deliver(peer.segment("A"), after_ms=8)
    info = h.core.conn(conn)
    srtt, rttvar = before["srtt_ns"], before["rttvar_ns"]
    r = 8 * MS
    exp_rttvar = (3 * rttvar + abs(srtt - r)) // 4
    exp_srtt = (7 * srtt + r) // 8
    assert (info["srtt_ns"], info["rttvar_ns"]) == (exp_srtt, exp_rttvar)
    assert info["rto_ns"] == max(exp_srtt + max(4 * exp_rttvar, MS), 10 * MS)


def test_rtt_sample_from_timestamp_echo():
    h, conn, peer, snd = established(rto_min_ms=200)
    out = h.write(conn, b"t" * 100)
    tsval = opts(out[0][TCP])["Timestamp"][0]
    before = h.core.conn(conn)
    h.advance(70)                 # the ACK comes 70 ms later, echoing a TSval 20 ms old
    ack = peer.segment("A", ack=snd + 100, options=[("NOP", None), ("NOP", None),
                                                   ("Timestamp", (peer.tsval, (tsval + 50) % 2**32))])
    h.deliver(ack)
    info = h.core.conn(conn)
    r = 20 * MS
    assert info["srtt_ns"] == (7 * before["srtt_ns"] + r) // 8


def lossy_flight(h, conn, peer, snd, nseg=10):
    out = data_segments(h.write(conn, b"L" * (nseg * FULL)))
    assert len(out) == nseg
    return out


def test_fast_retransmit_after_three_dup_acks_newreno():
    h, conn, peer, snd = established(cc="reno", sack=False)
    segs = lossy_flight(h, conn, peer, snd)
    cwnd0 = h.core.conn(conn)["cwnd"]
    # segment 0 lost; segments 1..3 produce duplicate ACKs
    for k in range(2):
        assert data_segments(h.deliver(peer.segment("A", ack=snd))) == []
    out = data_segments(h.deliver(peer.segment("A", ack=snd)))
    assert len(out) == 1 and out[0].seq == snd and len(out[0].payload) == FULL
    assert h.transmits[-1].retransmit
    info = h.core.conn(conn)
    flight = 10 * FULL
    assert info["ssthresh"] == flight // 2                 # RFC 5681 eq. (4)
    assert info["cwnd"] == flight // 2 + 3 * FULL           # RFC 6582 step 2-3
    assert info["in_recovery"] and h.core.stats()["fast_retransmits"] == 1
    # partial ACK: covers segments 0..3, not 4 -> retransmit 4 at once (RFC 6582 step 5)
    out = data_segments(h.deliver(peer.segment("A", ack=snd + 4 * FULL)))
    assert out[0].seq == snd + 4 * FULL and h.core.conn(conn)["in_recovery"]
    # full ACK: leave recovery with cwnd = ssthresh
    h.deliver(peer.segment("A", ack=snd + 10 * FULL))
    info = h.core.conn(conn)
    assert not info["in_recovery"] and info["cwnd"] == flight // 2


def test_two_dup_acks_do_not_retransmit():
    h, conn, peer, snd = established(sack=False)
    lossy_flight(h, conn, peer, snd)
    for k in range(2):
        assert data_segments(h.deliver(peer.segment("A", ack=snd))) == []
    assert not h.core.conn(conn)["in_recovery"]


def test_sack_recovery_retransmits_the_holes():
    h, conn, peer, snd = established()
    lossy_flight(h, conn, peer, snd)
    # segments 0 and 4 lost; the peer SACKs 1..3 and 5..9
    blocks = [(snd + 5 * FULL, snd + 10 * FULL), (snd + FULL, snd + 4 * FULL)]
    ack = peer.segment("A", ack=snd, options=[
        ("NOP", None), ("NOP", None), ("Timestamp", (peer.tsval, peer.ts_recent)),
        ("NOP", None), ("NOP", None), ("SAck", tuple(x % 2**32 for b in blocks for x in b))])
    out = data_segments(h.deliver(ack))
    assert [t.seq for t in out] == [snd, snd + 4 * FULL]
    assert all(len(t.payload) == FULL for t in out)
    info = h.core.conn(conn)
    assert info["in_recovery"]
    assert info["sacked_ranges"] == [(FULL, 4 * FULL), (5 * FULL, 10 * FULL)]
    h.deliver(peer.segment("A", ack=snd + 10 * FULL))
    info = h.core.conn(conn)
    assert not info["in_recovery"] and info["sacked_ranges"] == []


def test_zero_window_probes_back_off_and_data_flows_when_it_opens():
    h, conn, peer, snd = established(rto_min_ms=200)
    peer.window = 0
    h.deliver(peer.segment("A"))
    assert h.core.conn(conn)["snd_wnd"] == 0
    assert tcp_of(h.write(conn, b"p" * 5000)) == []
    t0 = h.now
    probes = []
    while len(probes) < 3:
        h.now = h.core.next_timer
        for t in tcp_of(h._apply(h.core.tick(h.now))):
            probes.append(((h.now - t0) // MS, t.seq, len(t.payload), str(t.flags)))
    assert probes == [(200, snd - 1, 0, "A"), (600, snd - 1, 0, "A"), (1400, snd - 1, 0, "A")]
    assert h.core.stats()["zero_window_probes"] == 3
    peer.window = 65535
    out = data_segments(h.deliver(peer.segment("A")))
    assert sum(len(t.payload) for t in out) == 5000 and out[0].seq == snd
    assert h.core.conn(conn)["persist_at"] == 0


def test_window_smaller_than_a_segment_is_used_when_at_least_half_the_max():
    h, conn, peer, snd = established(wscale=None, window=1000)
    segs = data_segments(h.write(conn, b"w" * 3000))
    assert [len(t.payload) for t in segs] == [1000]


def test_nagle_holds_a_small_segment_while_data_is_unacknowledged():
    h, conn, peer, snd = established()
    first = data_segments(h.write(conn, b"a" * 100))
    assert len(first) == 1
    assert data_segments(h.write(conn, b"b" * 100)) == []
    peer.learn(h.wire[-1])
    out = data_segments(h.deliver(peer.segment("A")))
    assert len(out) == 1 and out[0].seq == snd + 100 and bytes(out[0].payload) == b"b" * 100


def test_nagle_off_sends_small_segments_at_once():
    h, conn, peer, snd = established(nagle=False)
    h.write(conn, b"a" * 100)
    out = data_segments(h.write(conn, b"b" * 100))
    assert len(out) == 1 and out[0].seq == snd + 100


def test_minshall_a_small_segment_goes_at_once_while_only_full_sized_ones_are_unacknowledged():
    """Minshall's variant (draft-minshall-nagle, as Linux): what Nagle holds
    back is a second small segment, not any small segment behind unacknowledged
    full-sized ones -- RFC 896's rule would hold this one."""
    h, conn, peer, snd = established()
    assert [len(t.payload) for t in data_segments(h.write(conn, b"a" * (2 * FULL)))] == [FULL, FULL]
    out = data_segments(h.write(conn, b"b" * 100))
    assert [(t.seq, len(t.payload)) for t in out] == [(snd + 2 * FULL, 100)]


def test_minshall_a_small_segment_waits_only_for_the_earlier_small_one_to_be_acknowledged():
    h, conn, peer, snd = established()
    out = data_segments(h.write(conn, b"a" * (2 * FULL + 100)))
    assert [len(t.payload) for t in out] == [FULL, FULL, 100]      # one small one may be out
    assert data_segments(h.write(conn, b"b" * 100)) == []          # a second must wait ...
    peer.learn(h.wire[-1])
    assert data_segments(h.deliver(peer.segment("A", ack=snd + 2 * FULL))) == []   # ... for the small one
    out = data_segments(h.deliver(peer.segment("A", ack=snd + 2 * FULL + 100)))
    assert [(t.seq, bytes(t.payload)) for t in out] == [(snd + 2 * FULL + 100, b"b" * 100)]


def test_full_sized_segments_are_not_held_by_nagle():
    h, conn, peer, snd = established()
    h.write(conn, b"a" * 100)
    out = data_segments(h.write(conn, b"b" * (FULL + 10)))
    assert [len(t.payload) for t in out] == [FULL]


def test_fin_follows_the_data_on_shutdown():
    h, conn, peer, snd = established()
    h.write(conn, b"d" * 3000)
    out = tcp_of(h.call("shutdown", conn))
    assert len(out) == 1 and out[0].flags == "FA" and out[0].seq == snd + 3000


def test_fin_rides_on_the_last_data_segment_when_sent_together():
    h, conn, peer, snd = established()
    peer.window = 0
    h.deliver(peer.segment("A"))
    h.write(conn, b"d" * 3000)
    h.call("shutdown", conn)
    peer.window = 65535
    out = tcp_of(h.deliver(peer.segment("A")))
    assert [len(t.payload) for t in out] == [FULL, FULL, 3000 - 2 * FULL]
    assert out[-1].flags == "FPA" and out[-1].seq == snd + 2 * FULL


def test_slow_start_grows_cwnd_by_the_bytes_acked():
    for cc in ("reno", "cubic"):
        h, conn, peer, snd = established(cc=cc)
        lossy_flight(h, conn, peer, snd)
        h.deliver(peer.segment("A", ack=snd + 4 * FULL))
        assert h.core.conn(conn)["cwnd"] == 14 * FULL


@pytest.mark.parametrize("cc,factor", [("reno", 0.5), ("cubic", 0.7)])
def test_multiplicative_decrease_reno_half_cubic_beta(cc, factor):
    h, conn, peer, snd = established(cc=cc, sack=False)
    lossy_flight(h, conn, peer, snd)
    cwnd = h.core.conn(conn)["cwnd"]
    for k in range(3):
        h.deliver(peer.segment("A", ack=snd))
    assert h.core.conn(conn)["ssthresh"] == int(cwnd * factor)


def test_congestion_avoidance_reno_adds_one_mss_per_window():
    h, conn, peer, snd = established(cc="reno", sack=False)
    lossy_flight(h, conn, peer, snd)
    for k in range(3):
        h.deliver(peer.segment("A", ack=snd))
    h.deliver(peer.segment("A", ack=snd + 10 * FULL))
    cwnd = h.core.conn(conn)["cwnd"]
    assert cwnd == 5 * FULL and h.core.conn(conn)["ssthresh"] == cwnd
    una = snd + 10 * FULL
    acked = 0
    while acked < cwnd:
        h.write(conn, b"c" * FULL)
        una += FULL
        acked += FULL
        h.deliver(peer.segment("A", ack=una), after_ms=1)
    assert h.core.conn(conn)["cwnd"] == cwnd + FULL


def test_connection_reset_after_max_retries():
    h, conn, peer, snd = established(max_retries=3, rto_min_ms=100, rto_max_ms=1000)
    h.write(conn, b"x")
    h.run_timers(20_000)
    assert h.core.connection_count == 0
    assert h.notifications("reset")[-1].value == "timed_out"


def _raw_segment(flags, seq, ack, window, sport=5201, dport=40000, options=b""):
    """An IPv4/TCP frame from the peer (10.77.0.1) built without scapy, for
    loops of thousands of segments; the TCP checksum is skipped (CSUM_VALID)."""
    import struct
    from misdtcp.wire.codec import internet_checksum
    tcp = struct.pack("!HHIIBBHHH", sport, dport, seq % 2**32, ack % 2**32, (20 + len(options)) // 4 << 4,
                      flags, window, 0, 0) + options
    ip = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), 0, 0x4000, 64, 6, 0,
                               bytes([10, 77, 0, 1]), bytes([10, 77, 0, 2])))
    struct.pack_into("!H", ip, 10, internet_checksum(bytes(ip)))
    return bytes(ip) + tcp


def test_newreno_recover_guard_does_not_go_stale_after_2_gib():
    """RFC 6582 §3.2: fast retransmit is refused while the cumulative ACK
    does not cover `recover`.  Compared as a sequence number, the guard
    flipped once SND.UNA ran 2^31 past `recover`, and fast retransmit stayed
    off for the next 2 GiB.  Here `recover` is set by a SYN timeout, 2 GiB
    are sent, then three duplicate ACKs must still trigger a fast retransmit."""
    from misdtcp._tcpcore import TcpCore, Transmit
    from misdtcp.wire.codec import CSUM_VALID
    core = TcpCore("10.77.0.2", sack=False, timestamps=False, gso_max=65000, burst=256,
                   rcvbuf=1 << 20, sndbuf=1 << 20, secret=3)
    now = 1_000 * MS
    out = core.connect("10.77.0.1", 5201, 40000, now=now, tag=1)
    handle = [a for a in out if isinstance(a, Transmit)][0].handle
    now += 1000 * MS
    core.tick(now)                                     # the SYN times out: recover = ISS + 1
    info = core.conn(handle)
    assert info["retransmits"] == 1
    now += 10 * MS
    wscale = bytes([1, 3, 3, 14])                      # NOP, window scale 14: a 1 GiB window
    core.frame(_raw_segment(0x12, 7000, info["iss"] + 1, 65535, options=wscale), now, CSUM_VALID)
    total = (1 << 31) + (64 << 20)
    core.send(handle, total, now=now)
    for _ in range(10_000):
        info = core.conn(handle)
        if info["snd_una"] == info["snd_max"] and info["snd_end_off"] == total and \
                (info["snd_una"] - info["iss"] - 1) % 2**32 == total % 2**32:
            break
        now += MS
        core.frame(_raw_segment(0x10, 7001, info["snd_max"], 65535), now, CSUM_VALID)
    assert (info["snd_una"] - info["recover"]) % 2**32 > 2**31       # past the point where it flipped
    core.send(handle, total + 20 * 1460, now=now)
    info = core.conn(handle)
    assert info["snd_max"] != info["snd_una"]
    before = core.stats()["fast_retransmits"]
    retransmitted = []
    for _ in range(3):
        now += MS
        out = core.frame(_raw_segment(0x10, 7001, info["snd_una"], 65535), now, CSUM_VALID)
        retransmitted += [a for a in out if isinstance(a, Transmit) and a.retransmit]
    assert core.stats()["fast_retransmits"] == before + 1
    assert len(retransmitted) == 1 and retransmitted[0].offset == total


def test_karn_no_rtt_sample_from_a_segment_sent_again_without_timestamps():
    """Karn's rule (RFC 6298 §3) without timestamps: the timed segment was
    sent again (here by a tail loss probe, RFC 8985), so its ACK cannot tell
    which transmission it answers -- no RTT sample may come from it."""
    h = Harness.create()
    peer = Peer()
    h.call("listen", 5201)
    synack = h.deliver(peer.syn(ts=False))[0]
    peer.learn(synack)
    h.deliver(peer.segment("A", ts=False), after_ms=200)          # first sample: 200 ms
    conn = h.notifications("accepted")[-1].handle
    h.call("accepted", conn)
    peer.learn(h.write(conn, b"a" * 100)[0])
    h.deliver(peer.segment("A", ts=False), after_ms=10)           # second sample: 10 ms
    before = h.core.conn(conn)
    assert before["srtt_ns"] == (7 * 200 * MS + 10 * MS) // 8
    out = h.write(conn, b"b" * 100)                               # timed (no timestamps)
    assert h.core.conn(conn)["rtt_timing"] == 1
    probe = []
    while not probe:
        probe = [t for t in tcp_of(h.run_timers(10)) if len(t.payload)]
    assert h.core.stats()["tail_loss_probes"] == 1              # the same segment, sent again
    assert bytes(probe[0].payload) == b"b" * 100
    peer.learn(probe[0])
    h.deliver(peer.segment("A", ts=False), after_ms=10)
    after = h.core.conn(conn)
    assert after["snd_una"] == after["snd_max"]
    assert after["srtt_ns"] == before["srtt_ns"]                 # no sample from the ambiguous ACK
