"""The payload-free range set (_ranges.pxd) against a set-of-ints model."""
from hypothesis import given, settings, strategies as st

from hypothesis_profiles import examples

from misdtcp.core.ranges import CAPACITY, Ranges

span = st.tuples(st.integers(0, 400), st.integers(0, 60)).map(lambda t: (t[0], t[0] + t[1]))
ops = st.lists(st.one_of(
    st.tuples(st.just("add"), span),
    st.tuples(st.just("trim"), st.integers(0, 460)),
    st.tuples(st.just("advance"), st.integers(0, 460)),
), max_size=60)


def intervals(points):
    out = []
    for p in sorted(points):
        if out and out[-1][1] == p:
            out[-1][1] = p + 1
        else:
            out.append([p, p + 1])
    return [tuple(x) for x in out]


@settings(max_examples=examples(400), deadline=None)
@given(ops)
def test_range_set_matches_a_set_of_ints(ops):
    r = Ranges()
    model = set()
    for op, arg in ops:
        if op == "add":
            s, e = arg
            new = set(range(s, e))
            merged = intervals(model | new)
            idx = r.add(s, e)
            if e <= s:
                assert idx == -1
            elif len(merged) > CAPACITY:
                # full and touching nothing: refused, the set is unchanged
                assert idx == -1
            else:
                assert idx >= 0
                model |= new
                lo, hi = r.ranges()[idx]
                assert lo <= s and e <= hi
                assert r.stamps()[idx] == max(r.stamps())          # most recent
        elif op == "trim":
            r.trim_below(arg)
            model = {p for p in model if p >= arg}
        else:
            edge = r.advance(arg)
            expect = arg
            # every range starting at or below the (moving) edge is consumed
            while model and intervals(model)[0][0] <= expect:
                a, b = intervals(model)[0]
                expect = max(expect, b)
                model -= set(range(a, b))
            assert edge == expect
        assert r.ranges() == intervals(model)
        assert r.total() == len(model)


@settings(max_examples=examples(200), deadline=None)
@given(st.lists(span, max_size=12), st.integers(0, 460), st.integers(0, 460), span)
def test_queries_match_the_model(spans, lo, hi, probe):
    r = Ranges()
    model = set()
    for s, e in spans:
        if r.add(s, e) >= 0:
            model |= set(range(s, e))
    assert r.total_between(lo, hi) == len([p for p in model if lo <= p < hi])
    s, e = probe
    if e > s:
        inside_one = any(a <= s and e <= b for a, b in intervals(model))
        assert r.contains(s, e) == inside_one
    pos, gap_end = r.next_gap(lo)
    expect = lo
    while expect in model:
        expect += 1
    assert pos == expect
    above = [p for p in model if p > pos]
    assert gap_end == (min(above) if above else None)


def test_touching_ranges_merge_and_full_set_refuses_islands():
    r = Ranges()
    assert r.add(10, 20) == 0 and r.add(20, 30) == 0
    assert r.ranges() == [(10, 30)]
    for k in range(CAPACITY - 1):
        assert r.add(100 + 10 * k, 105 + 10 * k) >= 0
    assert len(r) == CAPACITY
    assert r.add(1000, 1001) == -1            # a new island: no room
    assert r.add(25, 40) == 0                 # extending an existing one still works
    assert r.ranges()[0] == (10, 40)


def test_stamps_order_by_recency():
    r = Ranges()
    r.add(0, 10)
    r.add(20, 30)
    r.add(40, 50)
    r.add(5, 12)                              # touches the first again
    st_ = r.stamps()
    assert st_[0] > st_[2] > st_[1]
