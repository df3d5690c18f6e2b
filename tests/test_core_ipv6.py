"""TCP over IPv6 (RFC 8200, RFC 9293 with the IPv6 pseudo-header): handshakes
both ways, data both ways with options, closes, resets, SYN cookies, the
connection table keyed by the whole 128-bit address, flow labels (RFC 6437),
ICMPv6 echo (RFC 4443) and errors: Packet Too Big (RFC 8201), destination
unreachable as for IPv4.  Conversations in the smoltcp style (tests/harness.py),
the peer being the kernel at fd00:77::1."""
import pytest
from scapy.layers.inet import IP, TCP
from scapy.layers.inet6 import (ICMPv6DestUnreach, ICMPv6EchoReply, ICMPv6EchoRequest, ICMPv6ND_NS,
                                ICMPv6PacketTooBig, ICMPv6ParamProblem, ICMPv6TimeExceeded, IPv6)
from scapy.packet import Raw, raw

from harness import (KERNEL, KERNEL6, STACK, STACK6, Harness, Peer, acks, open_connection, opts, peer6,
                     tcp_of)
from misdtcp._tcpcore import TcpCore

MSL_MS = 100
FULL6 = 1440 - 12                 # MTU 1500 - 40 (IPv6) - 20 (TCP) - 12 (timestamps)


def established(peer=None, **config):
    config.setdefault("msl_ms", MSL_MS)
    h = Harness.create6(**config)
    conn, peer, synack = open_connection(h, peer or peer6())
    return h, conn, peer, synack


def checksum_ok(pkt):
    """scapy's own checksum of the segment equals the one on the wire."""
    again = IPv6(raw(pkt))
    layer = again[TCP] if TCP in again else again.getlayer(2)
    sent = layer.chksum
    del layer.chksum
    return IPv6(raw(again)).getlayer(layer.__class__).chksum == sent


# -- handshakes -------------------------------------------------------------

def test_passive_open_over_ipv6():
    h, conn, peer, synack = established()
    ip, t = synack[IPv6], synack[TCP]
    assert (ip.src, ip.dst, ip.nh, ip.hlim, ip.tc) == (STACK6, KERNEL6, 6, 64, 0)
    assert ip.plen == len(raw(t))
    assert t.flags == "SA" and t.ack == 1001
    o = opts(t)
    assert o["MSS"] == 1440                     # RFC 8200 §8.3: MTU 1500 - 60
    assert o["WScale"] == 7 and "SAckOK" in o and o["Timestamp"][1] == 100
    assert checksum_ok(synack)
    info = h.core.conn(conn)
    assert info["state"] == "ESTABLISHED" and info["v6"] == 1
    assert info["remote"] == (KERNEL6, 40000)
    assert info["snd_mss"] == 1440
    assert h.notifications("accepted")[-1].value == 5201


def test_the_peers_smaller_mss_bounds_ours_over_ipv6():
    h, conn, peer, synack = established(peer=None)
    assert h.core.conn(conn)["snd_mss"] == 1440
    h2 = Harness.create6()
    conn2, _, _ = open_connection(h2, peer6(), mss=1280)
    assert h2.core.conn(conn2)["snd_mss"] == 1280


def test_active_open_over_ipv6():
    h = Harness.create6()
    out = h.call("connect", KERNEL6, 5201, 43000, tag=9)
    assert len(out) == 1
    syn = out[0]
    assert (syn[IPv6].src, syn[IPv6].dst) == (STACK6, KERNEL6)
    assert syn[TCP].flags == "S" and opts(syn[TCP])["MSS"] == 1440
    assert checksum_ok(syn)
    peer = Peer(src=KERNEL6, dst=STACK6, sport=5201, dport=43000, seq=7000)
    peer.ack = syn[TCP].seq + 1
    reply = tcp_of(h.deliver(peer.segment("SA", options=[("MSS", 1440), ("SAckOK", b""),
                                                         ("Timestamp", (500, opts(syn[TCP])["Timestamp"][0])),
                                                         ("WScale", 7)])))
    assert reply[0].flags == "A" and reply[0].ack == 7001
    connected = h.notifications("connected")
    assert connected and connected[-1].value == 9
    assert h.core.conn(connected[-1].handle)["remote"] == (KERNEL6, 5201)


def test_connect_over_ipv6_without_an_ipv6_address_fails_as_unreachable():
    h = Harness.create()                              # IPv4 only
    assert h.call("connect", KERNEL6, 5201, 43000, tag=4) == []
    failed = h.notifications("connect_failed")
    assert failed[-1].value == 4 and failed[-1].handle == 6     # R_NET_UNREACHABLE
    assert h.core.connection_count == 0


@pytest.mark.parametrize("address", ["ff02::1", "::1", "::ffff:10.77.0.1", STACK6])
def test_connect_to_an_address_no_host_has_fails(address):
    h = Harness.create6()
    assert h.call("connect", address, 5201, 43000, tag=5) == []
    assert h.notifications("connect_failed")[-1].value == 5


def test_syn_to_a_closed_port_gets_rst_ack_over_ipv6():
    h = Harness.create6()
    out = h.deliver(peer6(dport=81).syn())
    assert len(out) == 1 and out[0][TCP].flags == "RA" and out[0][TCP].ack == 1001
    assert out[0][IPv6].dst == KERNEL6 and checksum_ok(out[0])
    assert h.core.drops() == {"no_connection": 1}


# -- the connection table -----------------------------------------------------

def test_one_table_keys_by_the_whole_address():
    """An IPv4 peer and sixteen IPv6 peers whose addresses all end in the same
    32 bits (10.77.0.1 == ::a4d:1), from the same port, in a small table
    where probe chains cross: seventeen connections, and each segment
    reaches its own."""
    h = Harness.create6(max_connections=17)
    h.call("listen", 5201, backlog=17)
    peers = [Peer(src="10.77.0.1", dst=STACK)] + \
        [Peer(src=f"fd00:{i:x}::a4d:1", dst=STACK6) for i in range(1, 17)]
    conns = []
    for p in peers:
        conn, _, _ = open_connection(h, p, listen=False)
        conns.append(conn)
    assert len(set(conns)) == 17 and h.core.connection_count == 17
    for i, p in enumerate(peers):
        h.deliver(p.segment("PA", p.src.encode() * 3))
    for p, conn in zip(peers, conns):
        assert bytes(h.received[conn]) == p.src.encode() * 3
        assert h.core.conn(conn)["remote"] == (p.src, 40000)
    # the hash uses the whole address too: the peers do not all start from one bucket
    assert len({h.core.hash_bucket(p.src, 40000, 5201) for p in peers}) > 8


def test_isns_and_timestamp_offsets_depend_on_the_whole_address():
    h = Harness.create6()
    h.call("listen", 5201)
    a = h.deliver(Peer(src="fd00:77::a4d:1", dst=STACK6).syn())[0][TCP]
    b = h.deliver(Peer(src="fd00:99::a4d:1", dst=STACK6).syn())[0][TCP]
    assert a.seq != b.seq
    assert opts(a)["Timestamp"][0] != opts(b)["Timestamp"][0]


def test_the_same_secret_gives_the_same_isn_in_every_replica():
    one, two = Harness.create6(), Harness.create6(replica=1, replicas=2)
    for h in (one, two):
        h.call("listen", 5201)
        h.deliver(peer6().syn())
    assert one.core.digest() == two.core.digest()
    other = Harness.create6(secret=8)
    other.call("listen", 5201)
    other.deliver(peer6().syn())
    assert other.core.digest() != one.core.digest()


# -- flow labels ----------------------------------------------------------------

def test_every_segment_of_a_connection_carries_its_flow_label():
    h, conn, peer, synack = established()
    label = synack[IPv6].fl
    assert label != 0
    out = h.write(conn, b"x" * 5000)
    out += h.deliver(peer.segment("A", b"y" * 100))
    out += h.call("shutdown", conn)
    assert len(out) >= 5 and {p[IPv6].fl for p in out} == {label}


def test_flow_labels_differ_between_flows_and_secrets_but_not_replicas():
    labels = []
    for sport in (40000, 40001):
        h = Harness.create6()
        h.call("listen", 5201)
        labels.append(h.deliver(peer6(sport=sport).syn())[0][IPv6].fl)
    assert labels[0] != labels[1]
    h = Harness.create6(secret=99)
    h.call("listen", 5201)
    assert h.deliver(peer6().syn())[0][IPv6].fl != labels[0]
    # replica 1 of 2 builds no SYN-ACK (control segments are replica 0's),
    # but it holds the same label for the ACKs it owns
    r1 = Harness.create6(replica=1, replicas=2)
    r1.call("listen", 5201)
    assert r1.deliver(peer6().syn()) == []
    (handle,) = r1.core.connections()
    assert r1.core.conn(handle)["flow_label"] == labels[0]


def test_a_rst_to_a_flow_carries_the_label_the_connection_would():
    h = Harness.create6()
    h.call("listen", 5201)
    synack = h.deliver(peer6().syn())[0]
    rst = Harness.create6().deliver(peer6(dport=5201).segment("A", ack=5))[0]
    assert rst[TCP].flags == "R" and rst[IPv6].fl == synack[IPv6].fl


# -- data and options -----------------------------------------------------------

def test_data_received_over_ipv6_is_copied_and_acked():
    h, conn, peer, _ = established()
    out = h.deliver(peer.segment("A", b"a" * FULL6))
    assert acks(out) == []                                  # delayed
    out = h.deliver(peer.segment("PA", b"b" * FULL6))
    ack = acks(out)
    assert len(ack) == 1 and ack[0].ack == 1001 + 2 * FULL6
    assert bytes(h.received[conn]) == b"a" * FULL6 + b"b" * FULL6
    assert checksum_ok(out[0])


def test_out_of_order_data_gets_a_sack_over_ipv6():
    h, conn, peer, _ = established()
    first = peer.segment("A", b"1" * 1000)
    second = peer.segment("A", b"2" * 1000)
    out = acks(h.deliver(second))
    assert out[0].ack == 1001
    sack = [v for k, v in out[0].options if k == "SAck"]
    assert sack == [(2001, 3001)]
    out = acks(h.deliver(first))
    assert out[0].ack == 3001
    assert bytes(h.received[conn]) == b"1" * 1000 + b"2" * 1000


def test_segments_sent_over_ipv6_fit_the_mtu():
    h, conn, peer, synack = established()
    snd = synack[TCP].seq + 1
    data = bytes(range(256)) * 20
    out = h.write(conn, data)
    segs = [p for p in out if len(p[TCP].payload)]
    assert [len(p[TCP].payload) for p in segs] == [FULL6, FULL6, FULL6, 5120 - 3 * FULL6]
    assert [p[TCP].seq for p in segs] == [snd + i * FULL6 for i in range(4)]
    assert max(40 + p[IPv6].plen for p in segs) == 1500
    assert all(checksum_ok(p) for p in segs)
    assert b"".join(bytes(p[TCP].payload) for p in segs) == data


def test_gso_super_segments_over_ipv6():
    h = Harness.create6(gso_max=65535 - 120)
    conn, peer, synack = open_connection(h, peer6(window=65535))
    h.write(conn, b"z" * 20000)
    big = [a for a in h.transmits if a.length > FULL6]
    assert big and big[0].gso_size == FULL6 and big[0].length % FULL6 == 0
    assert big[0].header[0] >> 4 == 6 and len(big[0].header) == 40 + 32


# -- closes ---------------------------------------------------------------------

def test_active_close_over_ipv6():
    h, conn, peer, synack = established()
    snd = synack[TCP].seq + 1
    fin = tcp_of(h.call("shutdown", conn))[0]
    assert fin.flags == "FA" and fin.seq == snd
    peer.learn(h.wire[-1])
    h.deliver(peer.segment("A"))
    assert h.state(conn) == "FIN_WAIT_2"
    out = acks(h.deliver(peer.segment("FA")))
    assert out[0].ack == 1002 and h.state(conn) == "TIME_WAIT"
    h.run_timers(2 * MSL_MS + 1)
    assert h.core.connection_count == 0


def test_passive_close_over_ipv6():
    h, conn, peer, _ = established()
    out = acks(h.deliver(peer.segment("FA", b"bye")))
    assert out[0].ack == 1001 + 3 + 1 and h.state(conn) == "CLOSE_WAIT"
    h.call("consumed", conn, 3)
    fin = tcp_of(h.call("close", conn))[0]
    assert fin.flags == "FA" and h.state(conn) == "LAST_ACK"
    peer.learn(h.wire[-1])
    h.deliver(peer.segment("A"))
    assert h.core.connection_count == 0


def test_rst_from_the_peer_resets_over_ipv6():
    h, conn, peer, _ = established()
    h.deliver(peer.segment("R"))
    assert h.notifications("reset")[-1].value == "reset_by_peer"
    assert h.core.connection_count == 0


# -- SYN cookies ----------------------------------------------------------------

def test_syn_cookies_over_ipv6():
    h = Harness.create6()
    h.call("listen", 5201, backlog=1)
    h.deliver(peer6(sport=1000).syn())                       # fills the backlog
    peer = peer6(sport=2000)
    synack = h.deliver(peer.syn())[0]
    assert h.core.stats()["syn_cookies_sent"] == 1
    assert synack[IPv6].dst == KERNEL6 and opts(synack[TCP])["MSS"] <= 1440
    # the cookie is bound to the whole address: from another IPv6 address
    # with the same last 32 bits it is refused
    peer.learn(synack)
    spoof = Peer(src="fd00:99::1", dst=STACK6, sport=2000, seq=peer.seq, ack=peer.ack,
                 tsval=peer.tsval, ts_recent=peer.ts_recent)
    h.deliver(spoof.segment("A"))
    assert h.core.drops().get("bad_cookie") == 1
    h.deliver(peer.segment("A"))
    assert h.core.stats()["syn_cookies_accepted"] == 1
    assert any(h.core.conn(c)["remote"] == (KERNEL6, 2000) for c in h.core.connections())


# -- ICMPv6 ---------------------------------------------------------------------

def test_echo_request_gets_its_reply():
    h = Harness.create6()
    out = h.deliver(IPv6(src=KERNEL6, dst=STACK6) / ICMPv6EchoRequest(id=9, seq=3, data=b"ping" * 10))
    assert len(out) == 1
    r = out[0]
    assert (r[IPv6].src, r[IPv6].dst, r[IPv6].hlim) == (STACK6, KERNEL6, 64)
    assert ICMPv6EchoReply in r and r[ICMPv6EchoReply].id == 9 and r[ICMPv6EchoReply].seq == 3
    assert r[ICMPv6EchoReply].data == b"ping" * 10
    sent = r[ICMPv6EchoReply].cksum
    del r[ICMPv6EchoReply].cksum
    assert IPv6(raw(r))[ICMPv6EchoReply].cksum == sent
    assert h.core.stats()["icmp6_echo"] == 1


@pytest.mark.parametrize("message", [
    ICMPv6EchoRequest(id=1, seq=1, code=1),
    ICMPv6ND_NS(tgt=STACK6),
    ICMPv6EchoReply(id=1, seq=1),
], ids=["echo-code-1", "neighbour-solicitation", "echo-reply"])
def test_other_icmpv6_messages_are_dropped(message):
    h = Harness.create6()
    assert h.deliver(IPv6(src=KERNEL6, dst=STACK6) / message) == []
    assert h.core.drops() == {"icmp": 1}


def test_an_icmpv6_checksum_without_the_pseudo_header_is_bad():
    h = Harness.create6()
    f = bytearray(raw(IPv6(src=KERNEL6, dst=STACK6) / ICMPv6EchoRequest(id=1, seq=1)))
    f[8 + 15] ^= 1                              # another source: the pseudo-header no longer matches
    assert h.deliver(bytes(f)) == []
    assert h.core.drops() == {"icmp": 1}


def quoted(segment_pkt):
    """The invoking packet an ICMPv6 error quotes: one the stack sent."""
    return raw(segment_pkt)


def test_packet_too_big_lowers_the_mss_and_resends_what_is_in_flight():
    h, conn, peer, _ = established()
    out = h.write(conn, b"q" * (2 * FULL6))
    in_flight = [p for p in out if len(p[TCP].payload)]
    assert [len(p[TCP].payload) for p in in_flight] == [FULL6, FULL6]
    ptb = IPv6(src="fd00:77::fe", dst=STACK6) / ICMPv6PacketTooBig(mtu=1300) / quoted(in_flight[0])[:1232]
    out = h.deliver(ptb)
    assert h.core.conn(conn)["snd_mss"] == 1300 - 60
    again = [p for p in out if len(p[TCP].payload)]
    assert again and all(40 + p[IPv6].plen <= 1300 for p in again)
    assert again[0][TCP].seq == in_flight[0][TCP].seq
    assert b"".join(bytes(p[TCP].payload) for p in again) == b"q" * (2 * FULL6)
    assert h.core.stats()["pmtu_reductions"] == 1


def test_packet_too_big_never_goes_below_1280():
    h, conn, peer, _ = established()
    in_flight = [p for p in h.write(conn, b"q" * 3000) if len(p[TCP].payload)]
    h.deliver(IPv6(src="fd00:77::fe", dst=STACK6) / ICMPv6PacketTooBig(mtu=600) / quoted(in_flight[0])[:1232])
    assert h.core.conn(conn)["snd_mss"] == 1280 - 60                  # RFC 8201 §5.1


def test_packet_too_big_quoting_a_stale_sequence_number_is_ignored():
    h, conn, peer, _ = established()
    in_flight = [p for p in h.write(conn, b"q" * 3000) if len(p[TCP].payload)]
    stale = IPv6(raw(in_flight[0]))
    stale[TCP].seq -= 100000
    h.deliver(IPv6(src="fd00:77::fe", dst=STACK6) / ICMPv6PacketTooBig(mtu=1280) / raw(stale)[:1232])
    assert h.core.conn(conn)["snd_mss"] == 1440
    assert h.core.drops() == {"icmp_stale": 1}


def test_packet_too_big_about_no_connection_is_dropped():
    h = Harness.create6()
    bogus = IPv6(src=STACK6, dst=KERNEL6) / TCP(sport=5201, dport=40000, seq=1)
    h.deliver(IPv6(src="fd00:77::fe", dst=STACK6) / ICMPv6PacketTooBig(mtu=1280) / raw(bogus))
    assert h.core.drops() == {"icmp_no_connection": 1}


def test_port_unreachable_refuses_a_connection_still_opening():
    h = Harness.create6()
    syn = h.call("connect", KERNEL6, 5201, 43000, tag=3)[0]
    h.deliver(IPv6(src=KERNEL6, dst=STACK6) / ICMPv6DestUnreach(code=4) / raw(syn))
    failed = h.notifications("connect_failed")
    assert failed and failed[-1].value == 3 and failed[-1].handle == 2     # R_REFUSED
    assert h.core.stats()["icmp_aborts"] == 1 and h.core.connection_count == 0


@pytest.mark.parametrize("message", [ICMPv6DestUnreach(code=0), ICMPv6DestUnreach(code=3),
                                     ICMPv6TimeExceeded(code=0), ICMPv6ParamProblem(code=0)],
                         ids=["no-route", "address-unreachable", "time-exceeded", "parameter-problem"])
def test_soft_errors_do_not_abort_and_are_reported_on_timeout(message):
    h = Harness.create6(max_retries=2, rto_initial_ms=100)
    syn = h.call("connect", KERNEL6, 5201, 43000, tag=3)[0]
    h.deliver(IPv6(src=KERNEL6, dst=STACK6) / message / raw(syn))
    assert h.core.connection_count == 1
    assert h.core.stats()["icmp_errors"] == 1
    h.run_timers(60_000)
    failed = h.notifications("connect_failed")
    assert failed and failed[-1].handle != 3                 # not "timed out": the soft error


def test_an_ipv4_icmp_error_never_matches_an_ipv6_connection():
    """Same ports, same last 32 bits: an ICMP error (IPv4) about 10.77.0.1
    finds no IPv4 connection, whatever IPv6 connection shares the bits."""
    from scapy.layers.inet import ICMP
    h = Harness.create6()
    syn = h.call("connect", "fd00:77::a4d:1", 5201, 43000, tag=3)[0]
    fake = IP(src=STACK, dst="10.77.0.1") / TCP(sport=43000, dport=5201, seq=syn[TCP].seq)
    h.deliver(IP(src=KERNEL, dst=STACK) / ICMP(type=3, code=3) / raw(fake)[:28])
    assert h.core.drops() == {"icmp_no_connection": 1}
    assert h.core.connection_count == 1
