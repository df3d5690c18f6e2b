"""Receiving data: in-order and out-of-order delivery, SACK blocks, overlaps,
sequence wrap, the advertised window, FIN ordering and the ACK policy
(RFC 9293 §3.10.7.4, RFC 2018, RFC 1122 §4.2.3.2-3, RFC 5681 §4.2)."""
import pytest
from scapy.layers.inet import IP, TCP
from scapy.packet import Raw, raw

from harness import Harness, Peer, acks, open_connection, opts, sack_blocks, tcp_of
from misdtcp.wire.codec import CSUM_VALID

FULL = 1448              # a full-sized segment: MSS 1460 minus 12 bytes of timestamps


def payload(n, seed=0):
    return bytes((seed + i * 7) % 251 for i in range(n))


def test_in_order_data_is_copied_and_delayed_ack_fires_after_40ms():
    h = Harness.create()
    conn, peer, synack = open_connection(h)
    data = payload(100)
    assert h.deliver(peer.segment("PA", data)) == []          # delayed ACK
    assert bytes(h.received[conn]) == data
    assert h.notifications("readable")[-1].value == 100
    assert h.tick(after_ms=39) == []
    out = acks(h.tick(after_ms=1))
    assert len(out) == 1
    a = out[0]
    assert a.ack == 1001 + 100
    assert a.seq == synack[TCP].seq + 1
    assert a.sport == 5201 and a.dport == 40000
    assert opts(a)["Timestamp"][1] == peer.tsval                # echoes TS.Recent
    # buffer minus unread, scaled, less one unit of room for later fields to round up into
    assert a.window == ((4 << 20) - 100 - 127) >> 7


def test_every_second_full_sized_segment_is_acked_at_once():
    h = Harness.create()
    conn, peer, _ = open_connection(h)
    assert h.deliver(peer.segment("A", payload(FULL))) == []
    out = acks(h.deliver(peer.segment("A", payload(FULL, 1))))
    assert len(out) == 1 and out[0].ack == 1001 + 2 * FULL
    assert h.deliver(peer.segment("A", payload(FULL, 2))) == []
    out = acks(h.deliver(peer.segment("A", payload(FULL, 3))))
    assert out[0].ack == 1001 + 4 * FULL
    assert h.core.next_timer == 0 or h.core.conn(conn)["delack_at"] == 0


def test_gso_super_frame_counts_as_many_segments_and_is_acked_at_once():
    h = Harness.create()
    conn, peer, _ = open_connection(h)
    data = payload(10 * FULL)
    pkt = peer.segment("A", data)
    out = acks(h.deliver(pkt, gso_size=FULL, flags=CSUM_VALID))
    assert len(out) == 1 and out[0].ack == 1001 + len(data)
    assert bytes(h.received[conn]) == data


def test_out_of_order_data_gets_immediate_ack_with_sack_most_recent_first():
    h = Harness.create()
    conn, peer, _ = open_connection(h)
    stream = payload(6000)
    base = 1001
    # hole [0, 1000); island [1000, 2000)
    out = acks(h.deliver(peer.segment("A", stream[1000:2000], seq=base + 1000)))
    assert len(out) == 1
    assert out[0].ack == base
    assert sack_blocks(out[0]) == [(base + 1000, base + 2000)]
    # a second island [3000, 4000): it comes first (RFC 2018 §4)
    out = acks(h.deliver(peer.segment("A", stream[3000:4000], seq=base + 3000)))
    assert sack_blocks(out[0]) == [(base + 3000, base + 4000), (base + 1000, base + 2000)]
    # extending the older island makes it the most recent again
    out = acks(h.deliver(peer.segment("A", stream[2000:2500], seq=base + 2000)))
    assert sack_blocks(out[0]) == [(base + 1000, base + 2500), (base + 3000, base + 4000)]
    assert h.core.conn(conn)["ooo_ranges"] == [(1000, 2500), (3000, 4000)]
    # filling the hole: immediate ACK up to the first island's end
    out = acks(h.deliver(peer.segment("A", stream[0:1000], seq=base)))
    assert len(out) == 1
    assert out[0].ack == base + 2500
    assert sack_blocks(out[0]) == [(base + 3000, base + 4000)]
    assert bytes(h.received[conn][:2500]) == stream[:2500]
    assert h.notifications("readable")[-1].value == 2500


def test_at_most_three_sack_blocks_with_timestamps_four_without():
    for ts, expected in ((True, 3), (False, 4)):
        h = Harness.create()
        conn, peer, _ = open_connection(h, ts=ts)
        for k in range(5):
            out = acks(h.deliver(peer.segment("A", b"x" * 100, seq=1001 + 200 * (k + 1))))
        blocks = sack_blocks(out[0])
        assert len(blocks) == expected
        assert blocks[0] == (1001 + 1000, 1001 + 1100)
        assert blocks[1] == (1001 + 800, 1001 + 900)


def test_overlapping_and_duplicate_segments_reassemble_exactly():
    h = Harness.create()
    conn, peer, _ = open_connection(h)
    stream = payload(5000, 3)
    base = 1001
    for lo, hi in ((2000, 3000), (2500, 3500), (1000, 2600), (3400, 5000), (0, 1200), (100, 300)):
        h.deliver(peer.segment("A", stream[lo:hi], seq=base + lo))
    assert bytes(h.received[conn]) == stream
    assert h.core.conn(conn)["rcv_nxt"] == base + 5000
    assert h.core.conn(conn)["ooo_ranges"] == []
    # an entirely old segment: dropped, counted, answered with an ACK at once
    out = acks(h.deliver(peer.segment("A", stream[0:500], seq=base)))
    assert len(out) == 1 and out[0].ack == base + 5000
    assert h.core.drops()["out_of_window"] == 2        # (100, 300) earlier, and this one


def test_segment_straddling_rcv_nxt_keeps_only_new_bytes():
    h = Harness.create()
    conn, peer, _ = open_connection(h)
    stream = payload(3000)
    h.deliver(peer.segment("A", stream[:1000], seq=1001))
    copies_before = len(h.received[conn])
    h.deliver(peer.segment("A", stream[500:3000], seq=1001 + 500))
    assert bytes(h.received[conn]) == stream
    assert copies_before == 1000
    assert h.core.conn(conn)["bytes_in"] == 3000          # overlap not counted twice


@pytest.mark.parametrize("isn", [2**32 - 1, 2**32 - 700, 2**32 - 5000])
def test_sequence_wraparound_near_2_32(isn):
    h = Harness.create()
    peer = Peer(seq=isn)
    conn, peer, synack = open_connection(h, peer)
    assert synack[TCP].ack == (isn + 1) % 2**32
    start = (isn + 1) % 2**32
    stream = payload(4 * FULL, 5)
    pieces = [(i * FULL, (i + 1) * FULL) for i in range(4)]
    # deliver out of order across the wrap: 2, 0, 3, 1
    last = None
    for i in (2, 0, 3, 1):
        lo, hi = pieces[i]
        out = acks(h.deliver(peer.segment("A", stream[lo:hi], seq=(start + lo) % 2**32)))
        if out:
            last = out[-1]
    assert bytes(h.received[conn]) == stream
    assert last.ack == (start + len(stream)) % 2**32
    assert sack_blocks(last) == []
    assert h.core.conn(conn)["rcv_nxt"] == (start + len(stream)) % 2**32


def test_window_fills_and_reopens_after_consumed():
    h = Harness.create(rcvbuf=8192)                 # no window scaling needed
    conn, peer, synack = open_connection(h)
    assert synack[TCP].window == 8192
    assert opts(synack[TCP])["WScale"] == 0
    stream = payload(8192)
    out = []
    for lo in range(0, 8192, 1024):
        out += acks(h.deliver(peer.segment("A", stream[lo:lo + 1024])))
    out += acks(h.run_timers(50))
    assert out[-1].ack == 1001 + 8192 and out[-1].window == 0
    # data beyond the closed window: dropped, answered with a zero-window ACK
    out = acks(h.deliver(peer.segment("A", b"y" * 100)))
    peer.seq -= 100
    assert len(out) == 1 and out[0].window == 0 and out[0].ack == 1001 + 8192
    assert len(h.received[conn]) == 8192
    # consuming a little does not open the window (SWS avoidance)...
    assert acks(h.call("consumed", conn, 100)) == []
    out = acks(h.deliver(peer.segment("A", seq=1001 + 8192 - 1, advance=False)))   # keep-alive style probe
    assert out[0].window == 0
    # ...consuming enough sends a window update at once
    out = acks(h.call("consumed", conn, 4096))
    assert len(out) == 1 and out[0].window == 4096 and out[0].ack == 1001 + 8192
    assert h.core.conn(conn)["rcv_adv"] == (1001 + 8192 + 4096) % 2**32


def test_no_pure_window_update_while_the_peer_has_half_a_window_left():
    """The application consuming data opens the window, but a pure window
    update is sent only once the window last offered has shrunk to half of
    the most we offer (as Linux does): before that, the ACKs of the next data
    carry the larger window and an update would be a wasted write."""
    h = Harness.create(rcvbuf=256 * 1024)
    conn, peer, _ = open_connection(h)
    most = 256 * 1024                                          # the buffer (the window is scaled)
    stream = payload(200 * 1024)
    for lo in range(0, 96 * 1024, 16 * 1024):               # a third of the window in flight
        h.deliver(peer.segment("A", stream[lo:lo + 16 * 1024]))
    h.run_timers(50)
    assert acks(h.call("consumed", conn, 64 * 1024)) == []
    for lo in range(96 * 1024, 200 * 1024, 16 * 1024):       # most of it now: the peer may stall
        h.deliver(peer.segment("A", stream[lo:lo + 16 * 1024]))
    h.run_timers(50)
    c = h.core.conn(conn)
    assert 2 * ((c["rcv_adv"] - c["rcv_nxt"]) % 2**32) <= most
    out = acks(h.call("consumed", conn, 200 * 1024))
    assert len(out) == 1 and out[0].ack == (1001 + 200 * 1024) % 2**32


def test_receiver_sws_avoidance_keeps_right_edge_until_an_mss_frees():
    h = Harness.create(rcvbuf=8192)
    conn, peer, _ = open_connection(h)
    h.deliver(peer.segment("A", payload(8192)))
    h.run_timers(50)
    for k in range(1, 10):
        assert acks(h.call("consumed", conn, 100 * k)) == []
    # a pure ACK-provoking probe shows the window is still advertised as 0
    out = acks(h.deliver(peer.segment("A", seq=1001 + 8191, advance=False)))
    assert out[0].window == 0
    out = acks(h.call("consumed", conn, 8192))
    assert out[0].window == 8192


def test_segment_trimmed_to_the_window():
    h = Harness.create(rcvbuf=4096)
    conn, peer, _ = open_connection(h)
    stream = payload(5000)
    h.deliver(peer.segment("A", stream[:3000]))
    out = acks(h.deliver(peer.segment("A", stream[3000:5000])))
    assert len(h.received[conn]) == 4096
    assert bytes(h.received[conn]) == stream[:4096]
    out += acks(h.run_timers(50))
    assert out[-1].ack == 1001 + 4096 and out[-1].window == 0


def test_fin_beyond_the_window_is_not_taken():
    h = Harness.create(rcvbuf=4096)
    conn, peer, _ = open_connection(h)
    h.deliver(peer.segment("FA", payload(5000)))
    assert h.state(conn) == "ESTABLISHED"
    assert h.notifications("peer_closed") == []


def test_zero_window_segment_at_rcv_nxt_still_has_its_ack_processed():
    h = Harness.create(rcvbuf=4096)
    conn, peer, _ = open_connection(h)
    h.deliver(peer.segment("A", payload(4096)))
    h.run_timers(50)
    out = h.write(conn, b"z" * 500)
    assert tcp_of(out)[0].seq == h.core.conn(conn)["snd_una"]
    for p in out:
        peer.learn(p)
    # the peer acknowledges our data while it also sends (into our zero window)
    out = acks(h.deliver(peer.segment("A", b"w" * 10, advance=False)))
    assert h.core.conn(conn)["snd_una"] == h.core.conn(conn)["snd_max"]
    assert out and out[0].window == 0 and out[0].ack == 1001 + 4096
    assert len(h.received[conn]) == 4096


def test_fin_after_out_of_order_data_takes_effect_when_the_hole_fills():
    h = Harness.create()
    conn, peer, _ = open_connection(h)
    stream = payload(3000)
    out = acks(h.deliver(peer.segment("FA", stream[1000:], seq=1001 + 1000)))
    assert out[0].ack == 1001 and sack_blocks(out[0]) == [(2001, 1001 + 3000)]
    assert h.state(conn) == "ESTABLISHED"
    assert h.notifications("peer_closed") == []
    out = acks(h.deliver(peer.segment("A", stream[:1000], seq=1001)))
    assert len(out) == 1
    assert out[0].ack == 1001 + 3000 + 1                    # data and the FIN
    assert h.state(conn) == "CLOSE_WAIT"
    assert h.notifications("peer_closed")[-1].value == 3000
    assert bytes(h.received[conn]) == stream


def test_fin_in_order_is_acked_at_once():
    h = Harness.create()
    conn, peer, _ = open_connection(h)
    out = acks(h.deliver(peer.segment("FA", b"bye")))
    assert len(out) == 1 and out[0].ack == 1001 + 4
    assert h.state(conn) == "CLOSE_WAIT"


def test_hole_filling_segment_is_acked_immediately_even_if_small():
    h = Harness.create()
    conn, peer, _ = open_connection(h)
    h.deliver(peer.segment("A", b"b" * 10, seq=1011))
    out = acks(h.deliver(peer.segment("A", b"a" * 10, seq=1001)))
    assert len(out) == 1 and out[0].ack == 1021


def test_small_segments_are_acked_every_two_full_sizes_worth():
    h = Harness.create()
    conn, peer, _ = open_connection(h)
    sent = 0
    for k in range(5):
        assert h.deliver(peer.segment("A", b"s" * 500)) == []
        sent += 500
    out = acks(h.deliver(peer.segment("A", b"s" * 500)))
    assert out[0].ack == 1001 + 3000                       # 3000 >= 2 * 1448


def test_paws_drops_old_timestamp_and_acks():
    h = Harness.create()
    conn, peer, _ = open_connection(h)
    h.deliver(peer.segment("A", b"a" * 10))
    h.run_timers(50)
    peer.tsval -= 50                                       # an old duplicate
    out = acks(h.deliver(peer.segment("A", b"b" * 10, advance=False)))
    assert len(out) == 1 and out[0].ack == 1011
    assert h.core.drops()["paws"] == 1
    assert len(h.received[conn]) == 10
