"""Blind in-window attacks (RFC 5961) and PAWS (RFC 7323 §5)."""
from scapy.layers.inet import TCP

from harness import MS, Harness, Peer, acks, open_connection, tcp_of


def established(**config):
    h = Harness.create(**config)
    conn, peer, synack = open_connection(h)
    return h, conn, peer, synack[TCP].seq + 1


def test_rst_exactly_at_rcv_nxt_resets():
    h, conn, peer, snd = established()
    assert h.deliver(peer.segment("R", ts=False)) == []
    assert h.notifications("reset")[-1].value == "reset_by_peer"
    assert h.notifications("closed")[-1].handle == conn
    assert h.core.connection_count == 0


def test_in_window_rst_not_at_rcv_nxt_gets_a_challenge_ack():
    h, conn, peer, snd = established()
    out = tcp_of(h.deliver(peer.segment("R", seq=1001 + 5000, ts=False)))
    assert len(out) == 1
    a = out[0]
    assert a.flags == "A" and a.seq == snd and a.ack == 1001
    assert h.state(conn) == "ESTABLISHED"
    assert h.core.drops()["rst_challenged"] == 1
    assert h.core.stats()["challenge_acks"] == 1
    # the real peer answers a challenge ACK with an exact RST
    h.deliver(peer.segment("R", seq=a.ack, ts=False))
    assert h.core.connection_count == 0


def test_out_of_window_rst_is_dropped_silently():
    h, conn, peer, snd = established()
    for seq in (1001 - 10, 1001 + (4 << 20) + 100, 1001 + 2**31):
        assert h.deliver(peer.segment("R", seq=seq, ts=False)) == []
    assert h.core.drops()["rst_out_of_window"] == 3
    assert h.state(conn) == "ESTABLISHED"


def test_syn_in_synchronized_state_gets_a_challenge_ack():
    h, conn, peer, snd = established()
    for seq in (1001, 1001 + 300, 5):
        # 500 ms apart: challenge ACKs are limited per connection
        out = tcp_of(h.deliver(peer.segment("S", seq=seq, ts=False), after_ms=500))
        assert len(out) == 1
        assert out[0].flags == "A" and out[0].seq == snd and out[0].ack == 1001
    assert h.state(conn) == "ESTABLISHED"
    assert h.core.drops()["syn_challenged"] == 2        # seq 5 is out of window: plain ACK
    assert h.core.drops()["out_of_window"] == 1


def test_ack_of_unsent_data_is_challenged_and_its_data_dropped():
    h, conn, peer, snd = established()
    out = tcp_of(h.deliver(peer.segment("A", b"evil", ack=snd + 1000)))
    assert len(out) == 1 and out[0].flags == "A" and out[0].ack == 1001
    assert conn not in h.received
    assert h.core.drops()["ack_unsent"] == 1
    assert h.core.conn(conn)["snd_una"] == snd


def test_too_old_ack_is_challenged_and_dropped():
    h, conn, peer, snd = established()
    info = h.core.conn(conn)
    old = (snd - info["max_snd_wnd"] - 10) % 2**32
    out = tcp_of(h.deliver(peer.segment("A", b"evil", ack=old)))
    assert len(out) == 1 and out[0].ack == 1001
    assert h.core.drops()["ack_too_old"] == 1
    assert conn not in h.received


def test_old_but_acceptable_ack_is_processed():
    h, conn, peer, snd = established()
    out = tcp_of(h.deliver(peer.segment("A", b"fine", ack=snd - 100)))
    assert bytes(h.received[conn]) == b"fine"
    assert "ack_too_old" not in h.core.drops()


def test_challenge_acks_are_rate_limited_per_connection():
    h, conn, peer, snd = established()
    sent = 0
    for k in range(10):
        sent += len(tcp_of(h.deliver(peer.segment("R", seq=1001 + 100 + k, ts=False), after_ms=10)))
    assert sent == 1                                    # one per 500 ms per connection
    assert h.core.stats()["challenge_acks_suppressed"] == 9
    h.advance(500)
    assert len(tcp_of(h.deliver(peer.segment("R", seq=1001 + 500, ts=False)))) == 1


def _challenges_per_second(secret, seconds=6, conns=40, limit=10):
    """Challenge ACKs sent in each second when `conns` connections get one
    in-window RST per second each (the per-connection limit never bites)."""
    h = Harness.create(secret=secret, challenge_ack_limit=limit, max_connections=64)
    h.call("listen", 5201)
    peers = []
    for i in range(conns):
        conn, peer, _ = open_connection(h, Peer(sport=40000 + i), listen=False)
        peers.append(peer)
    h.advance(1000 - h.now / MS % 1000)                 # start at a second boundary
    counts = []
    for _ in range(seconds):
        before = h.core.stats()["challenge_acks"]
        for peer in peers:
            h.deliver(peer.segment("R", seq=peer.seq + 100, ts=False), after_ms=1)
        counts.append(h.core.stats()["challenge_acks"] - before)
        h.advance(1000 - len(peers))
    return counts


def test_the_global_challenge_ack_budget_is_drawn_anew_each_second():
    """CVE-2016-5696: a fixed global budget lets an off-path attacker count
    another connection's challenge ACKs.  Each second's budget is drawn from
    [limit/2, 3*limit/2) by a keyed hash: unpredictable without the secret,
    the same in every replica."""
    counts = _challenges_per_second(secret=11)
    assert all(5 <= n <= 14 for n in counts), counts
    assert len(set(counts)) > 1, counts                 # not one fixed number
    assert _challenges_per_second(secret=11) == counts  # replicas draw alike
    assert _challenges_per_second(secret=12) != counts  # another secret, other draws


def test_acks_to_out_of_window_segments_are_rate_limited_but_not_for_data():
    h, conn, peer, snd = established()
    far = 1001 + (8 << 20)
    assert len(acks(h.deliver(peer.segment("A", seq=far, ts=False)))) == 1
    assert acks(h.deliver(peer.segment("A", seq=far, ts=False), after_ms=100)) == []
    assert len(acks(h.deliver(peer.segment("A", b"data", seq=far, ts=False), after_ms=100))) == 1
    assert h.core.stats()["oow_acks_suppressed"] == 1
    assert len(acks(h.deliver(peer.segment("A", seq=far, ts=False), after_ms=400))) == 1


def test_paws_acks_are_rate_limited_per_connection():
    h, conn, peer, snd = established()
    h.deliver(peer.segment("A", b"new"))
    h.run_timers(50)
    old = peer.segment("A", seq=1004, advance=False)
    old[TCP].options = [("NOP", None), ("NOP", None), ("Timestamp", ((peer.tsval - 1000) % 2**32, peer.ts_recent))]
    assert len(acks(h.deliver(old))) == 1
    assert acks(h.deliver(old, after_ms=100)) == []
    assert h.core.drops()["paws"] == 2 and h.core.stats()["oow_acks_suppressed"] == 1


def test_paws_drops_a_segment_with_an_old_timestamp_but_acks_it():
    h, conn, peer, snd = established()
    h.deliver(peer.segment("A", b"new"))
    h.run_timers(50)
    old = peer.segment("A", b"old", seq=1004)
    old[TCP].options = [("NOP", None), ("NOP", None), ("Timestamp", ((peer.tsval - 1000) % 2**32, peer.ts_recent))]
    out = acks(h.deliver(old))
    assert len(out) == 1 and out[0].ack == 1004
    assert h.core.drops()["paws"] == 1
    assert bytes(h.received[conn]) == b"new"


def test_paws_does_not_apply_to_rst():
    h, conn, peer, snd = established()
    h.deliver(peer.segment("A", b"new"))
    rst = peer.segment("R", seq=1004, advance=False)
    rst[TCP].options = [("NOP", None), ("NOP", None), ("Timestamp", ((peer.tsval - 1000) % 2**32, 0))]
    h.deliver(rst)
    assert h.core.connection_count == 0


def test_timestamp_wrap_is_not_paws():
    h = Harness.create()
    peer = Peer(tsval=2**32 - 5)
    conn, peer, _ = open_connection(h, peer)
    for k in range(20):                     # TSval crosses 2^32
        h.deliver(peer.segment("A", b"d"))
        peer.tsval = (peer.tsval + 1) % 2**32
    assert len(h.received[conn]) == 20
    assert "paws" not in h.core.drops()
