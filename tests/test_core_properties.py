"""Properties of the core over arbitrary input (hypothesis):

* any segmentation, reordering and duplication of a byte stream, with the
  Copy actions applied, reconstructs the stream exactly — also split over
  N replicas, each copying only its stripes;
* no ACK (nor SACK block) ever covers bytes that were not received;
* the same event stream gives the same actions and digests (determinism);
* N replicas agree on the digest after every event, and between them emit
  exactly the Transmit actions of a single replica;
* bad input never raises out of the core.
"""
import random

from hypothesis import HealthCheck, given, settings, strategies as st

from hypothesis_profiles import examples
from scapy.layers.inet import IP, TCP
from scapy.packet import raw

from harness import Harness, Peer, STACK, sack_blocks
from misdtcp._tcpcore import Copy, Notify, TcpCore, Transmit

MS = 1_000_000
ISN = 2**32 - 3000                       # the peer's ISN: every run crosses the wrap
SETTINGS = settings(max_examples=examples(60), deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def deliveries(draw, max_len=12000):
    """A stream, and an order of (offset, length) pieces covering it with
    reordering, duplicates and overlapping re-cuts."""
    n = draw(st.integers(1, max_len))
    seed = draw(st.integers(0, 2**32 - 1))
    rnd = random.Random(seed)
    stream = bytes(rnd.getrandbits(8) for _ in range(n))
    pieces = []
    for _cut in range(draw(st.integers(1, 2))):          # 1 or 2 independent cuts
        off = 0
        while off < n:
            ln = min(n - off, rnd.choice((1, 7, 100, 536, 1448, 1448, 2000)))
            pieces.append((off, ln))
            off += ln
    dups = draw(st.integers(0, 5))
    pieces += [rnd.choice(pieces) for _ in range(dups)]
    rnd.shuffle(pieces)
    fin = draw(st.booleans())
    return stream, pieces, fin, seed


def run_receive(core_factory, stream, pieces, fin, seed, replicas=1):
    """Drive `replicas` cores through one conversation.  Returns
    (streams per replica, transmits per replica per event, digests per event,
    acks seen by the peer)."""
    rnd = random.Random(seed)
    cores = [core_factory(replica=i, replicas=replicas) for i in range(replicas)]
    bufs = [bytearray(len(stream)) for _ in cores]
    covered = [bytearray(len(stream)) for _ in cores]
    log = []                                    # per event: [actions of each replica]
    now = [1000 * MS]
    delivered = set()
    peer = Peer(seq=ISN)

    def event(method, *args, frame=b""):
        outs = []
        for k, core in enumerate(cores):
            if method == "frame":
                acts = core.frame(frame, now[0], *args)
            elif method == "tick":
                acts = core.tick(now[0])
            else:
                acts = getattr(core, method)(*args, now=now[0])
            for a in acts:
                if isinstance(a, Copy):
                    bufs[k][a.stream_offset:a.stream_offset + a.length] = \
                        frame[a.frame_offset:a.frame_offset + a.length]
                    for i in range(a.stream_offset, a.stream_offset + a.length):
                        covered[k][i] = 1
            outs.append(acts)
        digests = {core.digest() for core in cores}
        assert len(digests) == 1, "replicas diverged"
        log.append(outs)
        return outs

    event("listen", 5201)
    outs = event("frame", frame=raw(peer.syn()))
    synack = [a for a in outs[0] if isinstance(a, Transmit)]
    assert synack
    peer.learn(IP(synack[0].header))
    event("frame", frame=raw(peer.segment("A")))
    conn = [a for acts in log[-1] for a in acts if isinstance(a, Notify) and a.event == "accepted"][0].handle
    event("accepted", conn)
    base = peer.seq
    total = len(stream)
    for off, ln in pieces:
        now[0] += rnd.choice((0, 1, 5, 50)) * MS // 10
        flags = "A"
        if fin and off + ln == total:
            flags = "FA"
        pkt = peer.segment(flags, stream[off:off + ln], seq=(base + off) % 2**32)
        frame = raw(pkt)
        event("frame", frame=frame)
        delivered.update(range(off, off + ln))
        if rnd.random() < 0.2:
            event("tick")
    # whatever the reassembly limit refused, a retransmission in order fills
    off = 0
    while off < total:
        ln = min(1448, total - off)
        flags = "FA" if fin and off + ln == total else "A"
        event("frame", frame=raw(peer.segment(flags, stream[off:off + ln], seq=(base + off) % 2**32)))
        delivered.update(range(off, off + ln))
        off += ln
    return cores, conn, bufs, covered, log, base


def single_factory(**kw):
    return lambda replica=0, replicas=1: TcpCore(STACK, secret=7, replica=replica, replicas=replicas,
                                                  stripe=512, **kw)


@SETTINGS
@given(deliveries())
def test_any_cut_reorder_duplication_reconstructs_the_stream(d):
    stream, pieces, fin, seed = d
    cores, conn, bufs, covered, log, base = run_receive(single_factory(), stream, pieces, fin, seed)
    assert bytes(bufs[0]) == stream
    info = cores[0].conn(conn)
    assert info["rcv_nxt"] == (base + len(stream) + (1 if fin else 0)) % 2**32
    assert info["ooo_ranges"] == []
    if fin:
        assert info["state"] == "CLOSE_WAIT"


@SETTINGS
@given(deliveries(max_len=6000))
def test_no_ack_covers_bytes_not_received(d):
    stream, pieces, fin, seed = d
    h = Harness.create()
    peer = Peer(seq=ISN)
    from harness import open_connection
    conn, peer, _ = open_connection(h, peer)
    base = peer.seq
    got = set()
    rnd = random.Random(seed)
    for off, ln in pieces:
        last = fin and off + ln == len(stream)
        out = h.deliver(peer.segment("FA" if last else "A", stream[off:off + ln],
                                     seq=(base + off) % 2**32), after_ms=rnd.choice((0, 1, 30)))
        # what the core may know: bytes of segments delivered so far
        if h.core.drops().get("reassembly_full", 0) == 0:
            got.update(range(off, off + ln))
        prefix = 0
        while prefix in got:
            prefix += 1
        for p in out + h.tick(after_ms=0):
            t = p[TCP]
            if not t.flags.A:
                continue
            acked = (t.ack - base) % 2**32
            fin_acked = fin and acked == len(stream) + 1
            assert acked <= prefix or (fin_acked and prefix == len(stream)), (acked, prefix)
            for l, r in sack_blocks(t):
                lo, hi = (l - base) % 2**32, (r - base) % 2**32
                assert lo < hi and all(i in got for i in range(lo, hi))
        if h.core.drops().get("reassembly_full", 0):
            break                  # the limit refused data: the model no longer tracks the core


@settings(max_examples=examples(25), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(deliveries(max_len=8000), st.integers(2, 4))
def test_replicas_agree_and_split_the_work(d, n):
    stream, pieces, fin, seed = d
    single = run_receive(single_factory(), stream, pieces, fin, seed)
    multi = run_receive(single_factory(), stream, pieces, fin, seed, replicas=n)
    s_cores, _, s_bufs, s_cov, s_log, _ = single
    m_cores, _, m_bufs, m_cov, m_log, _ = multi
    # stripes: each byte copied by exactly one replica; the union is the stream
    union = bytearray(len(stream))
    for k in range(n):
        for i in range(len(stream)):
            if m_cov[k][i]:
                union[i] = m_bufs[k][i]
    assert bytes(union) == stream
    assert [sum(c[i] for c in m_cov) for i in range(len(stream))] == [1] * len(stream)
    # digests equal to the single replica's at the end
    assert m_cores[0].digest() == s_cores[0].digest()
    # per event: the union of replicas' transmits is the single replica's
    assert len(s_log) == len(m_log)
    for s_ev, m_ev in zip(s_log, m_log):
        single_tx = sorted(a for a in s_ev[0] if isinstance(a, Transmit))
        union_tx = sorted(a for acts in m_ev for a in acts if isinstance(a, Transmit))
        assert single_tx == union_tx
        # Notify actions are replicated: every replica tells its own application
        for acts in m_ev:
            assert [a for a in acts if isinstance(a, Notify)] == [a for a in s_ev[0] if isinstance(a, Notify)]


@settings(max_examples=examples(20), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(deliveries(max_len=6000))
def test_same_event_stream_gives_same_actions_and_digests(d):
    stream, pieces, fin, seed = d
    a = run_receive(single_factory(), stream, pieces, fin, seed)
    b = run_receive(single_factory(), stream, pieces, fin, seed)
    assert a[4] == b[4]
    assert a[0][0].digest() == b[0][0].digest()
    assert a[0][0].state_bytes() == b[0][0].state_bytes()


def test_state_snapshot_restores_a_replica():
    stream = bytes(range(256)) * 20
    pieces = [(i, 500) for i in range(0, len(stream), 500)][::-1]
    cores, conn, *_ = run_receive(single_factory(), stream, pieces, False, 1)
    other = single_factory()()
    other.load_state(cores[0].state_bytes())
    assert other.digest() == cores[0].digest()
    assert other.conn(conn) == cores[0].conn(conn)


def test_send_side_replicas_own_data_segments_by_stripe_in_order():
    """Sender-side ownership: a data segment belongs to the replica that owns
    the stripe of its first byte; the first segment of each new owner is
    marked ordered, with its index in the connection's segment order."""
    n = 3
    stripe = 4 * 1448
    cores = [TcpCore(STACK, secret=7, replica=i, replicas=n, send_stripe=stripe) for i in range(n)]
    single = TcpCore(STACK, secret=7, send_stripe=stripe)
    peer = Peer()
    now = 1000 * MS

    def all_do(method, *args, **kw):
        res = [getattr(c, method)(*args, **kw) for c in cores]
        ref = getattr(single, method)(*args, **kw)
        assert len({c.digest() for c in cores} | {single.digest()}) == 1
        return res, ref

    all_do("listen", 5201, now=now)
    res, ref = all_do("frame", raw(peer.syn()), now)
    peer.learn(IP(ref[0].header))
    res, ref = all_do("frame", raw(peer.segment("A")), now)
    conn = ref[0].handle
    all_do("accepted", conn, now=now)
    res, ref = all_do("send", conn, 10 * 1448, now=now)
    mine = [[a for a in acts if isinstance(a, Transmit)] for acts in res]
    # the same segments as one core sends, each built by exactly one replica
    assert sorted(a._replace(ordered=False) for m in mine for a in m) == \
        sorted(a for a in ref if isinstance(a, Transmit))
    assert [[a.offset // stripe for a in m] for m in mine] == [[0] * 4, [1] * 4, [2] * 2]
    assert [a.index for m in mine for a in m] == list(range(10))
    assert [a.index for m in mine for a in m if a.ordered] == [4, 8]
    assert not any(a.ordered for a in ref if isinstance(a, Transmit))


# --- bad input --------------------------------------------------------------

def valid_frames():
    peer = Peer()
    return [raw(peer.syn()), raw(peer.segment("A", b"x" * 100)), raw(peer.segment("FA")),
            raw(peer.segment("R")), raw(Peer(dport=81).segment("A", b"hello"))]


@settings(max_examples=examples(400), deadline=None)
@given(st.one_of(
    st.binary(max_size=200),
    st.tuples(st.sampled_from(range(5)), st.lists(st.tuples(st.integers(0, 199), st.integers(0, 255)),
                                                     max_size=8), st.integers(0, 200)),
), st.integers(0, 15), st.sampled_from([0, 1, 63, 64, 536, 1448, 65495, 65536, 2**32 - 1]))
def test_bad_input_never_raises(data, flags, gso):
    h = Harness.create()
    from harness import open_connection
    conn, peer, _ = open_connection(h)
    frames = valid_frames()
    if isinstance(data, tuple):
        idx, edits, cut = data
        f = bytearray(frames[idx])
        # keep addresses/ports mostly intact so mutations reach the connection
        for pos, val in edits:
            if pos < len(f):
                f[pos] = val
        f = bytes(f[:max(cut, 1)]) if cut < len(f) else bytes(f)
    else:
        f = data
    h.core.frame(f, h.now, flags, gso)
    h.core.tick(h.now + 10**12)
    assert h.core.action_overflow == 0
    # still alive and consistent
    assert isinstance(h.core.digest(), int)
    h.core.frame(frames[1], h.now + 10**12 + 1, 0, 0)
