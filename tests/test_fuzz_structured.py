"""Structure-aware fuzzing of the frame parser and the TCP core (issue 6).

Hypothesis starts from valid frames of a live conversation — a listener, an
established connection with data both ways, data of ours outstanding and an
out-of-order island (so SACK flows both ways), a half-open connection and an
active open in SYN-SENT — and mutates them field by field: IP version, IHL,
total length, fragment bits, TTL, protocol, addresses, checksums (right or
wrong, under every frame flag), TCP data offset, every flag combination,
seq/ack near the edges and across the wrap, window, urgent pointer, every
option kind and length (zero, one, overrun, wrong for the kind, wscale > 14,
MSS 0, many SACK blocks, truncated timestamps), payload lengths, link
padding, truncation, and GSO sizes.  Scripts interleave those frames with
valid ones, timer ticks and application calls, with time moving on.

The oracle (fuzz/scenario.py, shared with the atheris target) checks every
event: drop accounting, actions in bounds, no ACK/SACK of unreceived bytes,
monotonic rcv_nxt, replica agreement; and after the script that the
connection still works and a new one can be opened.  Regression tests for
what the fuzzers found are at the end.
"""
import os
import sys

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from hypothesis_profiles import examples

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "fuzz"))
import scenario as S  # noqa: E402

MS = S.MS
EXAMPLES = int(os.environ.get("MISDTCP_FUZZ_EXAMPLES", "500"))
FUZZ = settings(max_examples=examples(EXAMPLES), deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

# --- strategies: TCP options ---------------------------------------------

u32 = st.integers(0, 2**32 - 1)
u16 = st.integers(0, 65535)

one_option = st.one_of(
    st.builds(S.opt_mss, st.sampled_from([0, 1, 63, 64, 88, 536, 1460, 9000, 65535])),
    st.builds(S.opt_wscale, st.sampled_from([0, 1, 7, 14, 15, 16, 200, 255])),
    st.just(S.opt_sack_perm()),
    st.builds(S.opt_ts, u32, u32),
    st.builds(lambda ts, k: ts[:k], st.builds(S.opt_ts, u32, u32), st.integers(1, 9)),   # truncated
    st.builds(S.opt_sack, st.lists(st.tuples(u32, u32), min_size=0, max_size=6)),
    st.builds(S.opt_raw, st.sampled_from(S.OPTION_KINDS),
              st.sampled_from([0, 1, 2, 3, 4, 9, 10, 11, 18, 34, 40, 41, 255]),
              st.binary(max_size=12)),
    st.sampled_from([b"\x00", b"\x01", b"\x01\x01", b"\x00\x00\x00\x00", b"\x02", b"\x08", b"\x05\x01"]),
)
options_bytes = st.lists(one_option, max_size=5).map(b"".join)

# --- strategies: field mutations ----------------------------------------

seq_delta = st.one_of(st.sampled_from(S.SEQ_DELTAS), st.integers(-70000, 70000), u32)

mutation = st.one_of(
    st.tuples(st.just("version"), st.integers(0, 15)),
    st.tuples(st.just("ihl"), st.integers(0, 15)),
    st.tuples(st.just("total_len"), st.one_of(st.sampled_from([-1, 1, -20, 20, -40, 40, -65535]),
                                              st.integers(-200, 200))),
    st.tuples(st.just("frag"), st.sampled_from([0, 0x2000, 0x0001, 0x1FFF, 0x4000, 0x6000, 0x8000, 0xFFFF])),
    st.tuples(st.just("ttl"), st.sampled_from([0, 1, 255])),
    st.tuples(st.just("proto"), st.sampled_from([0, 1, 6, 17, 41, 255])),
    st.tuples(st.just("ip_csum_bad"), u16),
    st.tuples(st.just("ip_options"), st.binary(max_size=44)),
    st.tuples(st.just("src"), st.sampled_from(S.ADDRESSES)),
    st.tuples(st.just("dst"), st.sampled_from(S.ADDRESSES)),
    st.tuples(st.just("sport"), st.sampled_from([0, 1, S.EST_SPORT, S.HALF_SPORT, S.ACTIVE_DPORT, 65535])),
    st.tuples(st.just("dport"), st.sampled_from([0, 9, S.PORT, S.ACTIVE_LPORT, 65535])),
    st.tuples(st.just("seq"), seq_delta),
    st.tuples(st.just("ack"), seq_delta),
    st.tuples(st.just("flags"), st.integers(0, 255)),
    st.tuples(st.just("window"), st.sampled_from([0, 1, 2, 100, 65535])),
    st.tuples(st.just("urg"), u16),
    st.tuples(st.just("data_offset"), st.integers(0, 15)),
    st.tuples(st.just("tcp_csum_bad"), u16),
    st.tuples(st.just("options"), options_bytes),
    st.tuples(st.just("options_append"), options_bytes),
    st.tuples(st.just("options_prepend"), options_bytes),
    st.tuples(st.just("payload_len"), st.sampled_from([0, 1, 535, 536, 1447, 1448, 1449, 3000, 9000, 17000])),
    st.tuples(st.just("trailer"), st.binary(max_size=24)),
    st.tuples(st.just("cut"), st.one_of(st.integers(-60, -1), st.integers(0, 80))),
)

DTS = [0, 1000, MS, 40 * MS, 200 * MS, 1000 * MS, 65_000 * MS, 10**12]
dt = st.sampled_from(DTS)

frame_event = st.tuples(st.just("frame"), st.sampled_from(S.World.TEMPLATES), u16,
                        st.lists(mutation, max_size=4), st.sampled_from(S.FRAME_FLAGS),
                        st.one_of(st.just(0), st.sampled_from(S.GSO_SIZES)), dt)
valid_event = st.tuples(st.just("valid"), st.sampled_from(S.World.TEMPLATES), u16, dt)
tick_event = st.tuples(st.just("tick"), dt)
app_event = st.tuples(st.just("app"), st.sampled_from(["consumed", "consumed_all", "send", "shutdown",
                                                      "close", "abort", "accepted"]),
                      st.sampled_from(["est", "half", "active"]), st.integers(0, 20000), dt)
script = st.lists(st.one_of(frame_event, frame_event, frame_event, valid_event, tick_event, app_event),
                  min_size=1, max_size=25)


@pytest.mark.slow
@FUZZ
@given(script)
def test_mutated_conversation_keeps_every_invariant(events):
    w = S.World().setup()
    S.play(w, events)
    w.still_works()


@settings(max_examples=examples(max(EXAMPLES // 2, 10)), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(S.World.TEMPLATES), u16, st.lists(mutation, min_size=1, max_size=6),
       st.sampled_from(S.FRAME_FLAGS), st.sampled_from(S.GSO_SIZES))
def test_one_mutated_frame_then_the_connection_still_works(name, n, muts, flags, gso):
    w = S.World(split=False).setup()
    seg = w.template(name, n)
    for field, value in muts:
        seg = S.apply_mutation(seg, field, value)
    w.run("frame", frame=seg.build(), flags=flags, gso=gso, dt=MS)
    w.still_works()


@settings(max_examples=examples(max(EXAMPLES // 2, 10)), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.binary(max_size=120), st.sampled_from(S.FRAME_FLAGS),
                          st.sampled_from(S.GSO_SIZES)), max_size=10))
def test_arbitrary_bytes_are_counted_and_harmless(frames):
    w = S.World(split=False).setup()
    for data, flags, gso in frames:
        w.run("frame", frame=data, flags=flags, gso=gso, dt=MS)
    w.still_works()


def test_same_script_same_digests():
    """Determinism across whole runs, not just across replicas of one run:
    the recorded event log replayed on fresh cores ends in the same state."""
    import random
    rnd = random.Random(6)
    w = S.World(split=False).setup()
    for i in range(200):
        name = rnd.choice(S.World.TEMPLATES)
        seg = w.template(name, rnd.randrange(65536))
        if rnd.random() < 0.7:
            seg = S.apply_mutation(seg, rnd.choice(["seq", "ack"]), rnd.choice(S.SEQ_DELTAS))
        w.run("frame", frame=seg.build(), flags=rnd.choice(S.FRAME_FLAGS), dt=rnd.choice(DTS[:5]))
    replay = S.World(split=False)
    for kind, args, frame, flags, gso, d in w.log:
        replay.now += d
        if kind == "frame":
            replay.core.frame(frame, replay.now, flags, gso)
        elif kind == "tick":
            replay.core.tick(replay.now)
        else:
            getattr(replay.core, kind)(*args, now=replay.now)
    assert replay.core.digest() == w.core.digest()
    assert replay.core.state_bytes() == w.core.state_bytes()


# --- regressions: what the fuzzers found ----------------------------------

def _established():
    w = S.World(split=False).setup()
    return w, w.core.conn(w.est)


def test_regression_sack_blocks_after_fin_with_islands_beyond_it():
    """Found by the structured fuzzer: a FIN at rcv_nxt while out-of-order
    islands lay past it.  rcv_nxt counted the FIN but the islands stayed,
    so every SACK block came out one byte too far right (covering a byte
    never received).  Bytes past a FIN are not data: they are forgotten."""
    w, s = _established()
    assert s["ooo_ranges"]                                  # the setup's island
    w.deliver(w.est_seg(flags=S.ACK | S.FIN), dt=MS)
    s = w.core.conn(w.est)
    assert s["state"] == "CLOSE_WAIT"
    assert s["ooo_ranges"] == []
    # a segment from the old island, resent: out of window now, answered by an
    # ACK with no SACK block (the oracle checks the ACK number)
    out = w.deliver(w.est_seg(seq=s["rcv_nxt"] + 500, payload=b"x" * 10), dt=MS)
    for a in out:
        if isinstance(a, S.Transmit):
            assert S._sack_blocks(a.header[20:]) == []


def test_regression_data_past_a_pending_fin_is_not_data():
    """A FIN ahead of a hole is remembered; bytes after it (a peer bug or an
    injection) are not copied, and filling the hole ends the stream at the
    FIN, not past it."""
    w, s = _established()
    nxt = s["rcv_nxt"]
    w.deliver(w.est_seg(seq=nxt + 100, payload=b"b" * 100, flags=S.ACK | S.FIN), dt=MS)
    fin_off = s["rcv_nxt_off"] + 200
    assert w.core.conn(w.est)["fin_off"] == fin_off
    assert all(e <= fin_off for _, e in w.core.conn(w.est)["ooo_ranges"])
    out = w.deliver(w.est_seg(seq=nxt + 150, payload=b"b" * 50 + b"c" * 250), dt=MS)    # straddles the FIN
    assert all(a.stream_offset + a.length <= fin_off for a in out if isinstance(a, S.Copy))
    w.deliver(w.est_seg(payload=b"a" * 100), dt=MS)                         # fill the hole
    s = w.core.conn(w.est)
    assert s["state"] == "CLOSE_WAIT"
    assert s["rcv_nxt_off"] == fin_off
    assert bytes(w.models[w.est].stream[fin_off - 200:fin_off]) == b"a" * 100 + b"b" * 100


def test_regression_data_after_the_peer_fin_is_counted():
    """Found by the structured fuzzer: data in CLOSE-WAIT (the peer already
    sent its FIN) was ignored without a trace.  RFC 9293 says to ignore the
    text; it is now counted as `data_after_fin`."""
    w, s = _established()
    w.deliver(w.est_seg(seq=s["rcv_nxt"], flags=S.ACK | S.FIN), dt=MS)
    s = w.core.conn(w.est)
    assert s["state"] == "CLOSE_WAIT"
    w.deliver(w.est_seg(seq=s["rcv_nxt"], payload=b"after the FIN"), dt=MS)
    assert w.core.drops().get("data_after_fin") == 1
    assert w.core.conn(w.est)["rcv_nxt"] == s["rcv_nxt"]


def test_regression_syn_cookies_work_when_half_open_connections_fill_the_backlog():
    """Found by the structured fuzzer: with the backlog full of half-open
    connections the listener answers SYNs with cookies — and then refused
    every cookie ACK as "backlog full", because the half-open connections
    counted against it.  As in Linux, only established-but-not-accepted
    connections bound a cookie connection now."""
    w = S.World(split=False).setup()
    for i in range(10):                       # backlog is 8
        w.deliver(w.template("syn_new", i), dt=MS)
    assert w.core.stats()["syn_cookies_sent"] > 0
    w.still_works()                            # its handshake is answered by a cookie
    assert w.core.stats()["syn_cookies_accepted"] == 1


def test_regression_no_rst_with_ack_zero_when_syn_sent_times_out():
    """Found by atheris: an active open whose SYNs all went unanswered sent
    a RST|ACK with ACK=0 (it has no rcv_nxt) when it gave up.  RFC 9293
    §3.10.5: in SYN-SENT the TCB is simply deleted."""
    w = S.World(split=False).setup()
    for _ in range(40):
        out = w.run("tick", dt=65_000 * MS)
        assert not [a for a in out if isinstance(a, S.Transmit) and a.handle == w.active and a.header[33] & S.RST]
        if w.core.conn(w.active) is None:
            break
    assert w.core.conn(w.active) is None
    assert any(isinstance(a, S.Notify) and a.event == "connect_failed" for a in out)


def test_regression_land_attack_is_dropped():
    """Found by atheris: a SYN whose source is our own address (the "land"
    attack) opened a connection to ourselves.  It is a bad source."""
    w = S.World(split=False).setup()
    n = w.core.connection_count
    out = w.deliver(S.apply_mutation(w.template("syn_new", 1), "src", S.STACK), dt=MS)
    assert out == []
    assert w.core.drops()["bad_source"] == 1
    assert w.core.connection_count == n


def test_regression_second_fin_in_close_wait_is_counted():
    """Found by the structured fuzzer: after the peer's FIN was taken, an
    in-window FIN at another position was absorbed without a trace."""
    w, s = _established()
    w.deliver(w.est_seg(flags=S.ACK | S.FIN), dt=MS)
    s = w.core.conn(w.est)
    assert s["state"] == "CLOSE_WAIT"
    w.deliver(w.est_seg(seq=s["rcv_nxt"] + 1, flags=S.ACK | S.FIN), dt=MS)
    assert w.core.drops().get("data_after_fin") == 1
    assert w.core.conn(w.est)["rcv_nxt"] == s["rcv_nxt"]


def test_regression_fin_ahead_of_a_hole_is_acked_at_once():
    """An out-of-order FIN (and its retransmission) gets an immediate
    duplicate ACK (RFC 5681 §4.2), like out-of-order data."""
    w, s = _established()
    for _ in range(2):
        out = w.deliver(w.est_seg(seq=s["rcv_nxt"] + 10, flags=S.ACK | S.FIN), dt=MS)
        acks = [a for a in out if isinstance(a, S.Transmit) and a.header[33] == S.ACK]
        assert len(acks) == 1
        assert int.from_bytes(acks[0].header[28:32], "big") == s["rcv_nxt"]


def test_regression_data_and_fin_that_fill_a_hole_before_an_island():
    """Found by the structured fuzzer: data+FIN at rcv_nxt whose FIN lies
    inside an out-of-order island.  The data filled the hole, the island
    was merged and carried rcv_nxt past the FIN, and the FIN's offset was
    then computed from the moved rcv_nxt: garbage (about 4 GiB ahead), so the
    connection never closed and, with data past the FIN trimmed, took no more
    data.  The FIN's offset is now recorded before the data is placed, and
    islands past it are forgotten first."""
    w, s = _established()
    (isl_start, isl_end), = s["ooo_ranges"]                  # [1524, 1824)
    nxt_off = s["rcv_nxt_off"]
    plen = (isl_start - nxt_off) + 35                         # the FIN lands inside the island
    out = w.deliver(w.est_seg(flags=S.ACK | S.FIN, payload=S._payload(plen, 1)), dt=MS)
    s = w.core.conn(w.est)
    assert s["state"] == "CLOSE_WAIT"
    assert s["rcv_nxt_off"] == s["fin_off"] == nxt_off + plen
    assert [a.value for a in out if isinstance(a, S.Notify) and a.event == "peer_closed"] == [nxt_off + plen]


def test_regression_app_call_on_a_connection_its_own_timer_releases():
    """Found by atheris: an application call runs the timers that are due
    before acting (`_stamp`), but it looked the connection up *before* that.
    When the due timer gave up on the connection (here: the last SYN
    retransmission of an active open), abort() went on with the released
    slot: a RST with ACK=0 from a dead connection, a second release, and
    `nconns` wrapping below zero, after which the table counted as full
    and no connection could ever be opened again."""
    w = S.World(split=False).setup()
    while w.core.conn(w.active)["retries"] < 15:       # max_retries
        w.run("tick", dt=(w.core.next_timer - w.now) if w.core.next_timer > w.now else MS)
    out = w.run("abort", w.active, dt=65_000 * MS)      # the final RTO is due first
    assert w.core.conn(w.active) is None
    assert w.core.connection_count == len(w.core.connections())     # was 2**32 - 1
    assert not [a for a in out if isinstance(a, S.Transmit) and a.handle == w.active]
    w.still_works()


def test_regression_a_frame_whose_version_became_6_is_accounted():
    """Found by atheris once the core spoke IPv6: a frame of the live
    conversation with its version nibble mutated to 6 is parsed as IPv6 now,
    and dropped under an IPv6 reason (here an extension header the IPv4
    bytes make up) -- the oracle's list of parse-level reasons lacked those,
    so the frame looked unaccounted.  Every such frame lands in exactly one
    bucket, whatever IPv6 makes of it."""
    w = S.World().setup()
    seen = set()
    for proto in (0, 43, 44, 60, 59, 6, 58, 17):
        frame = bytearray(w.est_seg(flags=S.ACK | S.PSH, payload=S._payload(40, proto)).build())
        frame[0] = 0x60
        frame[6] = proto                      # IPv4's identification low byte is IPv6's next header
        before = w.core.drops()
        w.run("frame", frame=bytes(frame), dt=MS)          # the oracle checks the accounting
        seen |= {k for k, v in w.core.drops().items() if v != before.get(k, 0)}
    assert seen & {"ip6_ext_header", "ip6_routing", "ip6_option", "ip6_ext_chain"}
    w.still_works()
