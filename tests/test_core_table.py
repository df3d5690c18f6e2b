"""The connection table: many connections by 4-tuple, the listen backlog,
SYN cookies when it is full, a full table, stale handles."""
from scapy.layers.inet import TCP

from harness import Harness, Peer, acks, open_connection, opts, tcp_of


def test_many_connections_are_told_apart_by_their_4_tuple():
    h = Harness.create(max_connections=512)
    h.call("listen", 5201, backlog=1024)
    peers = {}
    for i in range(300):
        src = f"10.77.{1 + i % 3}.{1 + i % 200}"
        peer = Peer(sport=20000 + i, src=src, seq=1000 * i)
        conn, peer, _ = open_connection(h, peer, listen=False)
        peers[conn] = peer
    assert h.core.connection_count == 300
    assert len(set(peers)) == 300
    for rnd in range(3):
        for conn, peer in peers.items():
            h.deliver(peer.segment("A", b"%d:%d;" % (conn, rnd)))
    for conn in peers:
        assert bytes(h.received[conn]) == b"".join(b"%d:%d;" % (conn, r) for r in range(3))
    # a segment for the same ports from another address belongs to nobody
    stranger = Peer(sport=20000, src="10.77.9.9")
    out = tcp_of(h.deliver(stranger.segment("A", b"?", ack=5)))
    assert out[0].flags == "R"


def test_table_survives_churn_with_backward_shift_deletion():
    h = Harness.create(max_connections=64)
    h.call("listen", 5201)
    live = {}
    for i in range(400):
        peer = Peer(sport=30000 + i)
        conn, peer, _ = open_connection(h, peer, listen=False)
        live[conn] = peer
        if len(live) > 40:
            victim = sorted(live)[i % len(live)]
            h.call("abort", victim)
            del live[victim]
    for conn, peer in live.items():
        h.deliver(peer.segment("A", b"ok"))
        assert bytes(h.received[conn]) == b"ok"
        assert h.core.conn(conn)["rport"] == peer.sport


def test_backlog_counts_unaccepted_connections():
    h = Harness.create(syn_cookies=False)
    h.call("listen", 5201, backlog=2)
    for i in range(2):
        h.deliver(Peer(sport=40000 + i).syn())
    assert h.deliver(Peer(sport=40010).syn()) == []
    assert h.core.drops()["backlog_full"] == 1


def cookie_handshake(h, peer, **syn):
    out = h.deliver(peer.syn(**syn))
    assert len(out) == 1
    synack = out[0][TCP]
    assert synack.flags == "SA" and synack.ack == (peer.seq) % 2**32
    peer.learn(out[0])
    return synack


def fill_backlog(h):
    h.call("listen", 5201, backlog=1)
    first = Peer(sport=41000)
    out = h.deliver(first.syn())
    first.learn(out[0])
    return first


def test_syn_cookie_when_the_backlog_is_full_restores_options():
    h = Harness.create()
    first = fill_backlog(h)
    peer = Peer(sport=42000, seq=777)
    synack = cookie_handshake(h, peer, mss=1460, wscale=9)
    assert h.core.stats()["syn_cookies_sent"] == 1
    assert h.core.connection_count == 1                       # no state kept for it
    o = opts(synack)
    assert o["MSS"] == 1460 and o["WScale"] == 7 and "SAckOK" in o
    assert o["Timestamp"][1] == 100
    assert o["Timestamp"][0] & 0x1f == (9 << 1) | 1           # wscale and SACK in TSval
    # make room, then the cookie ACK completes the handshake
    h.deliver(first.segment("A"))
    h.call("accepted", h.notifications("accepted")[-1].handle)
    h.deliver(peer.segment("A", b"hello"))
    acc = h.notifications("accepted")
    assert len(acc) == 2
    conn = acc[-1].handle
    info = h.core.conn(conn)
    assert info["state"] == "ESTABLISHED"
    assert info["snd_mss"] == 1460 and info["snd_wscale"] == 9 and info["rcv_wscale"] == 7
    assert info["sack_ok"] and info["ts_ok"]
    assert info["iss"] == (synack.seq) % 2**32 and info["irs"] == 777
    assert bytes(h.received[conn]) == b"hello"                  # data on the ACK is kept
    assert h.core.stats()["syn_cookies_accepted"] == 1


def test_syn_cookie_without_timestamps_falls_back_to_no_options():
    h = Harness.create()
    first = fill_backlog(h)
    peer = Peer(sport=42001)
    synack = cookie_handshake(h, peer, mss=1200, ts=False)
    o = opts(synack)
    assert o["MSS"] == 1460 and "Timestamp" not in o and "WScale" not in o
    h.deliver(first.segment("A"))
    h.call("accepted", h.notifications("accepted")[-1].handle)
    h.deliver(peer.segment("A"))
    info = h.core.conn(h.notifications("accepted")[-1].handle)
    assert info["snd_mss"] == 536                            # the largest table value <= 1200
    assert info["snd_wscale"] == 0 and not info["ts_ok"] and not info["sack_ok"]


def test_bad_cookie_is_rejected_with_rst():
    h = Harness.create()
    fill_backlog(h)
    peer = Peer(sport=42002)
    synack = cookie_handshake(h, peer)
    bad = peer.segment("A", ack=synack.seq + 1 + 256)
    out = tcp_of(h.deliver(bad))
    assert out[0].flags == "R"
    assert h.core.drops()["bad_cookie"] == 1
    assert len(h.notifications("accepted")) == 0


def test_stale_cookie_is_rejected():
    h = Harness.create()
    first = fill_backlog(h)
    peer = Peer(sport=42003)
    synack = cookie_handshake(h, peer)
    h.deliver(first.segment("A"))
    h.call("accepted", h.notifications("accepted")[-1].handle)
    h.advance(200_000)                       # > 2 cookie periods of 64 s
    h.deliver(peer.segment("A"))
    assert h.core.drops()["bad_cookie"] == 1


def test_connection_table_full():
    h = Harness.create(max_connections=2, syn_cookies=False)
    h.call("listen", 5201, backlog=10)
    for i in range(2):
        open_connection(h, Peer(sport=43000 + i), listen=False)
    assert h.deliver(Peer(sport=43005).syn()) == []
    assert h.core.drops()["backlog_full"] == 1
    out = h.call("connect", "10.77.0.1", 80, 5000, tag=9)
    assert tcp_of(out) == []
    failed = h.notifications("connect_failed")
    assert failed and failed[-1].value == 9


def test_cookie_ack_when_the_table_is_full_is_dropped():
    h = Harness.create(max_connections=1)
    h.call("listen", 5201, backlog=10)
    open_connection(h, Peer(sport=44000), listen=False)
    peer = Peer(sport=44001)
    cookie_handshake(h, peer)                  # table full: cookie
    h.deliver(peer.segment("A"))
    assert h.core.drops()["table_full"] == 1
    assert h.core.connection_count == 1


def test_stale_handles_are_refused():
    h = Harness.create(max_connections=4)
    conn, peer, _ = open_connection(h)
    h.call("abort", conn)
    conn2, peer2, _ = open_connection(h, Peer(sport=45000), listen=False)
    assert conn2 & 0xfffff == conn & 0xfffff           # same slot...
    assert conn2 != conn                               # ...new generation
    assert h.core.conn(conn) is None
    assert h.write(conn, b"ghost") == []
    assert h.call("shutdown", conn) == [] and h.call("abort", conn) == []
    assert h.state(conn2) == "ESTABLISHED"


def _public_mix(raddr, rport, lport):
    """The connection hash before it was keyed (murmur's fmix64): anyone can
    compute it, and invert it."""
    x = (raddr << 32) ^ (rport << 16) ^ lport
    for mul in (0xFF51AFD7ED558CCD, 0xC4CEB9FE1A85EC53):
        x ^= x >> 33
        x = (x * mul) & (2**64 - 1)
    x ^= x >> 33
    return x & 0xFFFFFFFF


def test_connection_hash_is_keyed_so_a_sender_cannot_choose_colliding_4_tuples():
    """With a public hash a remote sender picks source ports that all land in
    one bucket and makes every lookup walk one long probe chain; keyed with
    the secret, the same 4-tuples spread over the table, and only replicas
    (same secret) agree where."""
    from misdtcp._tcpcore import TcpCore
    core = TcpCore("10.77.0.2", max_connections=64, secret=5)       # 128 buckets
    raddr = (10 << 24) | (77 << 16) | 1
    chosen = [p for p in range(1024, 65536) if _public_mix(raddr, p, 5201) & 127 == 0][:40]
    assert len(chosen) == 40
    buckets = [core.hash_bucket("10.77.0.1", p, 5201) for p in chosen]
    assert len(set(buckets)) >= 20
    assert [TcpCore("10.77.0.2", max_connections=64, secret=5).hash_bucket("10.77.0.1", p, 5201)
            for p in chosen] == buckets
    assert [TcpCore("10.77.0.2", max_connections=64, secret=6).hash_bucket("10.77.0.1", p, 5201)
            for p in chosen] != buckets


def test_unlisten_takes_the_listeners_connections_with_it():
    """Closing a listener forgets its half-open connections and resets those
    established but not accepted (as Linux does); left behind they completed
    later for no listener, and their pending count was charged to the next
    listener that took the slot, until its backlog refused everyone."""
    h = Harness.create(syn_cookies=False)
    h.call("listen", 5201, backlog=2)
    half = Peer(sport=40001)
    synack = h.deliver(half.syn())[0]
    half.learn(synack)
    done = Peer(sport=40002)                                        # established, not accepted
    done.learn(h.deliver(done.syn())[0])
    h.deliver(done.segment("A"))
    conn = h.notifications("accepted")[-1].handle
    h.call("unlisten", 5201)
    assert h.notifications("reset")[-1].handle == conn
    rst = tcp_of(h.wire[-1:])[0]
    assert rst.flags == "RA" and rst.dport == 40002
    assert h.core.connection_count == 0
    h.call("listen", 5202, backlog=1)                              # the same listener slot
    assert h.core.listeners() == [{"port": 5202, "backlog": 1, "pending": 0}]
    out = tcp_of(h.deliver(half.segment("A")))                      # the old half-open one completes
    assert out[0].flags == "R" and not h.notifications("accepted")[1:]
    new = Peer(sport=40003, dport=5202)
    out = tcp_of(h.deliver(new.syn()))
    assert out[0].flags == "SA"                                     # backlog 1 still free
    assert h.core.listeners()[0]["pending"] == 1
