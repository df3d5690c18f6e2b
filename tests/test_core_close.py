"""Every way a connection ends (RFC 9293 §3.6, TIME-WAIT, RFC 2525 §2.17)."""
from scapy.layers.inet import TCP

from harness import Harness, Peer, acks, open_connection, tcp_of

MSL_MS = 100


def established(**config):
    config.setdefault("msl_ms", MSL_MS)
    h = Harness.create(**config)
    conn, peer, synack = open_connection(h)
    return h, conn, peer, synack[TCP].seq + 1


def test_active_close_fin_wait_1_fin_wait_2_time_wait_closed():
    h, conn, peer, snd = established()
    out = tcp_of(h.call("shutdown", conn))
    assert len(out) == 1
    fin = out[0]
    assert fin.flags == "FA" and fin.seq == snd and fin.ack == 1001
    assert h.state(conn) == "FIN_WAIT_1"
    peer.learn(out[0])
    assert h.deliver(peer.segment("A")) == []
    assert h.state(conn) == "FIN_WAIT_2"
    out = acks(h.deliver(peer.segment("FA")))
    assert len(out) == 1 and out[0].ack == 1002 and out[0].seq == snd + 1
    assert h.state(conn) == "TIME_WAIT"
    assert h.notifications("peer_closed")[-1].value == 0
    h.run_timers(2 * MSL_MS - 1)
    assert h.state(conn) == "TIME_WAIT"
    h.run_timers(2)
    assert h.core.connection_count == 0
    assert h.notifications("closed")[-1].handle == conn


def test_fin_and_ack_of_our_fin_together_go_straight_to_time_wait():
    h, conn, peer, snd = established()
    peer.learn(h.call("shutdown", conn)[0])
    out = acks(h.deliver(peer.segment("FA")))
    assert out[0].ack == 1002
    assert h.state(conn) == "TIME_WAIT"


def test_retransmitted_fin_in_time_wait_is_acked_again_and_restarts_2msl():
    h, conn, peer, snd = established()
    peer.learn(h.call("shutdown", conn)[0])
    h.deliver(peer.segment("FA"))
    h.advance(MSL_MS)                          # half of TIME-WAIT gone
    out = acks(h.deliver(peer.segment("FA", seq=1001, advance=False)))
    assert len(out) == 1 and out[0].ack == 1002 and out[0].seq == snd + 1
    h.run_timers(2 * MSL_MS - 1)
    assert h.state(conn) == "TIME_WAIT"        # restarted by the retransmission
    h.run_timers(2)
    assert h.core.connection_count == 0


def test_passive_close_close_wait_last_ack_closed():
    h, conn, peer, snd = established()
    out = acks(h.deliver(peer.segment("FA", b"last words")))
    assert out[0].ack == 1001 + 10 + 1
    assert h.state(conn) == "CLOSE_WAIT"
    assert h.notifications("peer_closed")[-1].value == 10
    h.call("consumed", conn, 10)
    out = tcp_of(h.call("close", conn))
    assert len(out) == 1 and out[0].flags == "FA" and out[0].seq == snd and out[0].ack == 1012
    assert h.state(conn) == "LAST_ACK"
    peer.learn(out[0])
    assert h.deliver(peer.segment("A")) == []
    assert h.core.connection_count == 0
    assert h.notifications("closed")[-1].handle == conn


def test_last_ack_retransmits_fin_until_acked():
    h, conn, peer, snd = established(rto_initial_ms=200)
    h.deliver(peer.segment("FA"))
    fin = tcp_of(h.call("shutdown", conn))[0]
    out = tcp_of(h.run_timers(250))
    assert [t.flags for t in out] == ["FA"] and out[0].seq == fin.seq


def test_simultaneous_close_goes_through_closing():
    h, conn, peer, snd = established()
    fin = tcp_of(h.call("shutdown", conn))[0]
    assert h.state(conn) == "FIN_WAIT_1"
    # the peer's FIN crosses ours: it does not acknowledge our FIN
    out = acks(h.deliver(peer.segment("FA", ack=snd)))
    assert len(out) == 1 and out[0].ack == 1002 and out[0].seq == snd + 1
    assert h.state(conn) == "CLOSING"
    peer.learn(fin)
    h.deliver(peer.segment("A"))
    assert h.state(conn) == "TIME_WAIT"
    h.run_timers(2 * MSL_MS + 1)
    assert h.core.connection_count == 0


def test_close_with_unread_data_sends_rst():
    h, conn, peer, snd = established()
    h.deliver(peer.segment("PA", b"unread"))
    out = tcp_of(h.call("close", conn))
    assert len(out) == 1
    assert out[0].flags == "RA" and out[0].seq == snd and out[0].ack == 1007
    assert h.notifications("reset")[-1].value == "aborted"
    assert h.core.connection_count == 0


def test_abort_sends_rst_and_forgets_the_connection():
    h, conn, peer, snd = established()
    out = tcp_of(h.call("abort", conn))
    assert len(out) == 1 and out[0].flags == "RA" and out[0].seq == snd
    assert h.core.connection_count == 0
    assert h.notifications("closed")[-1].handle == conn
    # the peer's next segment meets a closed port
    out = tcp_of(h.deliver(peer.segment("A", b"late")))
    assert out[0].flags == "R" and out[0].seq == snd


def test_data_after_app_close_gets_rst():
    h, conn, peer, snd = established()
    fin = tcp_of(h.call("close", conn))[0]
    assert fin.flags == "FA" and h.state(conn) == "FIN_WAIT_1"
    out = tcp_of(h.deliver(peer.segment("PA", b"nobody reads this")))
    assert len(out) == 1 and out[0].flags == "RA" and out[0].seq == snd + 1
    assert h.core.drops()["after_close"] == 1
    assert h.core.connection_count == 0


def test_rst_in_time_wait_closes_it():
    h, conn, peer, snd = established()
    peer.learn(h.call("shutdown", conn)[0])
    h.deliver(peer.segment("FA"))
    h.deliver(peer.segment("R", ts=False))
    assert h.core.connection_count == 0


def test_send_after_shutdown_is_refused():
    h, conn, peer, snd = established()
    h.call("shutdown", conn)
    assert tcp_of(h.write(conn, b"too late")) == []


def test_abort_in_time_wait_sends_nothing():
    h, conn, peer, snd = established()
    peer.learn(h.call("shutdown", conn)[0])
    h.deliver(peer.segment("FA"))
    assert tcp_of(h.call("abort", conn)) == []
    assert h.core.connection_count == 0
