"""Opening connections: passive and active open, option negotiation,
RST to closed ports (RFC 9293 §3.5, §3.10.7.1; RFC 7323; RFC 2018)."""
from scapy.layers.inet import IP, TCP

from harness import Harness, Peer, open_connection, tcp_of, STACK, KERNEL


def opts(t):
    return {name: value for name, value in t.options if name != "NOP"}


def test_passive_open_negotiates_all_options():
    h = Harness.create(rcvbuf=4 << 20, mss=1460)
    conn, peer, synack = open_connection(h)
    t = synack[TCP]
    o = opts(t)
    assert t.flags == "SA"
    assert t.ack == 1001
    assert o["MSS"] == 1460
    assert o["WScale"] == 7                     # 4 MiB needs a shift of 7
    assert "SAckOK" in o
    assert o["Timestamp"][1] == 100             # echoes the peer's TSval
    assert t.window == 65535                    # a SYN's window is never scaled
    info = h.core.conn(conn)
    assert info["state"] == "ESTABLISHED"
    assert info["snd_wscale"] == 7 and info["rcv_wscale"] == 7
    assert info["sack_ok"] and info["ts_ok"]
    assert info["snd_mss"] == 1460


def test_no_window_scale_unless_both_offer_it():
    h = Harness.create()
    conn, peer, synack = open_connection(h, wscale=None)
    assert "WScale" not in opts(synack[TCP])
    info = h.core.conn(conn)
    assert info["snd_wscale"] == 0 and info["rcv_wscale"] == 0


def test_wscale_above_14_is_clamped():
    h = Harness.create()
    conn, peer, synack = open_connection(h, wscale=15)
    assert h.core.conn(conn)["snd_wscale"] == 14
    assert h.core.stats()["wscale_clamped"] == 1


def test_mss_from_peer_bounds_ours():
    h = Harness.create(mss=1460)
    conn, peer, synack = open_connection(h, mss=1200)
    assert h.core.conn(conn)["snd_mss"] == 1200


def test_syn_to_closed_port_gets_rst_ack():
    h = Harness.create()
    peer = Peer(dport=81)
    out = tcp_of(h.deliver(peer.syn()))
    assert len(out) == 1
    assert out[0].flags == "RA"
    assert out[0].seq == 0 and out[0].ack == 1001
    assert h.core.drops()["no_connection"] == 1


def test_ack_to_closed_port_gets_rst_at_its_ack():
    h = Harness.create()
    peer = Peer(dport=81)
    out = tcp_of(h.deliver(peer.segment("A", ack=555555)))
    assert out[0].flags == "R" and out[0].seq == 555555


def test_rst_to_closed_port_is_never_answered():
    h = Harness.create()
    assert h.deliver(Peer(dport=81).segment("R")) == []


def test_retransmitted_syn_gets_the_same_synack():
    h = Harness.create()
    h.call("listen", 5201)
    peer = Peer()
    first = h.deliver(peer.syn())[0][TCP]
    peer.seq = 1000
    again = h.deliver(peer.syn(), after_ms=1)[0][TCP]
    assert again.flags == "SA" and again.seq == first.seq


def test_synack_retransmitted_on_timeout_then_given_up():
    """A passive half-open connection gives up after synack_retries SYN-ACK
    retransmissions (not max_retries), so a SYN flood's leftovers clear."""
    h = Harness.create(max_retries=15, synack_retries=2, rto_initial_ms=100)
    h.call("listen", 5201)
    h.deliver(Peer().syn())
    out = tcp_of(h.run_timers(150))
    assert [t.flags for t in out] == ["SA"]
    out = tcp_of(h.run_timers(2000))
    assert [t.flags for t in out] == ["SA", "RA"]       # 2nd retransmission, then give up
    assert h.core.connection_count == 0


def test_active_open():
    h = Harness.create()
    out = h.call("connect", KERNEL, 5201, 50000, tag=42)
    syn = out[0][TCP]
    assert syn.flags == "S" and opts(syn)["MSS"] == 1460 and "SAckOK" in opts(syn)
    peer = Peer(sport=5201, dport=50000, seq=9000)
    peer.learn(out[0])
    synack = peer.segment("SA", options=[("MSS", 1400), ("SAckOK", b""), ("Timestamp", (77, opts(syn)["Timestamp"][0])),
                                         ("WScale", 5)])
    out = tcp_of(h.deliver(synack))
    assert out[0].flags == "A" and out[0].ack == 9001
    ev = h.notifications("connected")
    assert ev and ev[0].value == 42
    info = h.core.conn(ev[0].handle)
    assert info["state"] == "ESTABLISHED" and info["snd_mss"] == 1400 and info["snd_wscale"] == 5


def test_active_open_refused():
    h = Harness.create()
    out = h.call("connect", KERNEL, 5201, 50000, tag=7)
    syn = out[0][TCP]
    peer = Peer(sport=5201, dport=50000)
    h.deliver(peer.segment("RA", ack=syn.seq + 1, ts=False))
    failed = h.notifications("connect_failed")
    assert failed and failed[0].value == 7
    assert h.core.connection_count == 0


def test_syn_sent_bad_ack_gets_rst():
    h = Harness.create()
    syn = h.call("connect", KERNEL, 5201, 50000)[0][TCP]
    peer = Peer(sport=5201, dport=50000)
    out = tcp_of(h.deliver(peer.segment("SA", ack=syn.seq + 1000, ts=False)))
    assert out[0].flags == "R" and out[0].seq == syn.seq + 1000
    assert h.core.drops()["syn_sent_bad"] == 1


def test_simultaneous_open():
    h = Harness.create()
    syn = h.call("connect", KERNEL, 5201, 50000)[0][TCP]
    peer = Peer(sport=5201, dport=50000, seq=7000)
    out = tcp_of(h.deliver(peer.syn()))
    assert out[0].flags == "SA" and out[0].seq == syn.seq and out[0].ack == 7001
    h.deliver(peer.segment("A", ack=syn.seq + 1))
    assert h.notifications("connected")


def test_isn_is_keyed_and_time_driven():
    a = Harness.create(secret=1)
    b = Harness.create(secret=2)
    c = Harness.create(secret=1)
    isns = []
    for h in (a, b, c):
        h.call("listen", 5201)
        isns.append(h.deliver(Peer().syn())[0][TCP].seq)
    assert isns[0] == isns[2] and isns[0] != isns[1]
    d = Harness.create(secret=1)
    d.now += 4000 * 1000                # 4 ms later: M advances by 1000
    d.call("listen", 5201)
    assert (d.deliver(Peer().syn())[0][TCP].seq - isns[0]) % 2**32 == 1000


def test_icmp_echo_reply():
    h = Harness.create()
    from scapy.layers.inet import ICMP
    out = h.deliver(IP(src=KERNEL, dst=STACK) / ICMP(id=9, seq=3) / (b"ping" * 10))
    assert len(out) == 1
    r = out[0]
    assert r[ICMP].type == 0 and r[ICMP].id == 9 and r[ICMP].seq == 3
    assert bytes(r[ICMP].payload) == b"ping" * 10
    chk = r[ICMP].chksum
    del r[ICMP].chksum
    assert IP(bytes(r))[ICMP].chksum == chk



def test_data_on_a_syn_or_syn_ack_is_counted_not_queued():
    """RFC 9293 lets a TCP queue data that comes with a SYN or not; the core
    does not, and acknowledges only the SYN so the peer sends it again --
    but counts what it left (syn_data) rather than drop it silently."""
    h = Harness.create()
    h.call("listen", 5201)
    peer = Peer()
    syn = peer.segment("S", b"early", options=[("MSS", 1460)])
    out = tcp_of(h.deliver(syn))
    assert out[0].flags == "SA" and out[0].ack == 1001               # the SYN only
    assert h.core.drops()["syn_data"] == 1
    out = tcp_of(h.call("connect", "10.77.0.1", 5201, 40100, tag=1))
    iss = out[0].seq
    srv = Peer(sport=5201, dport=40100, seq=7000)
    synack = srv.segment("SA", b"also early", ack=iss + 1, options=[("MSS", 1460)])
    out = tcp_of(h.deliver(synack))
    assert out[0].flags == "A" and out[0].ack == 7001
    assert h.core.drops()["syn_data"] == 2
