"""Per-connection socket options (core_app_setopt, REQ_SETOPT): TCP_NODELAY,
TCP_MAXSEG, SO_RCVBUF and SO_SNDBUF, on a connection, on a listener (its
connections inherit them) and at connect time (the SYN already shows them)."""
import pytest
from scapy.layers.inet import TCP

from harness import Harness, open_connection, opts, tcp_of
from misdtcp._tcpcore import CoreConfigError


def data_segments(pkts):
    return [t for t in tcp_of(pkts) if len(t.payload)]


def test_nodelay_sends_a_small_segment_nagle_would_hold():
    h = Harness.create()
    conn, peer, _ = open_connection(h)
    first = data_segments(h.write(conn, b"a" * 10))
    assert len(first) == 1                      # nothing unacknowledged: goes at once
    assert data_segments(h.write(conn, b"b" * 10)) == []     # Nagle: an earlier small segment is unacked
    ok, out = h.core.setopt(conn, "nodelay", 1, now=h.now)
    assert ok
    held = [t for t in tcp_of(h._apply(out)) if len(t.payload)]
    assert [bytes(t.payload) for t in held] == [b"b" * 10]   # setting it pushes what Nagle held
    assert data_segments(h.write(conn, b"c" * 10))           # and later small writes go at once


def test_maxseg_on_a_listener_clamps_the_syn_ack_and_the_segments():
    h = Harness.create()
    h.call("listen", 5201)
    ok, _ = h.core.setopt(5201, "maxseg", 1000, now=h.now, listener=True)
    assert ok
    conn, peer, synack = open_connection(h, listen=False)
    assert opts(synack[TCP])["MSS"] == 1000
    segs = data_segments(h.write(conn, b"m" * 3000))
    assert [len(t.payload) for t in segs] == [988, 988, 988, 36]      # 1000 - 12 bytes of timestamps


def test_connect_announces_the_clamped_mss_and_the_window_scale_of_its_buffer():
    h = Harness.create(rcvbuf=4 << 20)
    out = tcp_of(h.call("connect", "10.77.0.1", 5201, 40000, tag=1, mss=1200, rcvbuf=65536))
    assert len(out) == 1 and out[0].flags == "S"
    o = opts(out[0])
    assert o["MSS"] == 1200
    assert o["WScale"] == 1                     # 65536 bytes need one shift, not the 4 MiB default's 7
    default = tcp_of(Harness.create(rcvbuf=4 << 20).call("connect", "10.77.0.1", 5201, 40001, tag=2))
    assert opts(default[0])["WScale"] == 7 and opts(default[0])["MSS"] == 1460


def test_rcvbuf_bounds_the_window_and_cannot_exceed_the_configured_buffer():
    h = Harness.create(rcvbuf=1 << 20)
    conn, peer, _ = open_connection(h)
    assert h.core.setopt(conn, "rcvbuf", 64 << 20, now=h.now)[0]
    assert h.core.conn(conn)["rcv_buf"] == 1 << 20            # the runtime's buffer is 1 MiB
    assert h.core.setopt(conn, "rcvbuf", 100, now=h.now)[0]
    assert h.core.conn(conn)["rcv_buf"] == 2048               # and at least 2 KiB


def test_setopt_refuses_unknown_targets_and_values():
    h = Harness.create()
    conn, peer, _ = open_connection(h)
    assert not h.core.setopt(conn, "maxseg", 20, now=h.now)[0]          # below 88
    assert not h.core.setopt(conn + 1, "nodelay", 1, now=h.now)[0]      # no such connection
    assert not h.core.setopt(9999, "nodelay", 1, now=h.now, listener=True)[0]
    with pytest.raises(CoreConfigError):
        h.core.setopt(conn, "no_such_option", 1, now=h.now)

