from __future__ import annotations

import pytest

from pktdrill_syntax_helpers import error, event
from misdtcp.conformance import parse_script, seconds_to_usecs
from misdtcp.conformance.nodes import Syscall, TimeKind, TimeSpec

OUT = "> . 1:1(0) ack 1"


@pytest.mark.parametrize("text, usecs", [
    ("0", 0), ("1", 1_000_000), ("0.100", 100_000), (".1", 100_000), ("1.5", 1_500_000),
    ("0.000001", 1), ("0.0000019", 1), ("2.000300", 2_000_300), ("0.3", 300_000),
])
def test_seconds_are_converted_exactly(text: str, usecs: int) -> None:
    assert seconds_to_usecs(text) == usecs


def test_absolute_time() -> None:
    assert event(f"0.250 {OUT}").time == TimeSpec(TimeKind.ABSOLUTE, 250_000)


def test_integer_absolute_time() -> None:
    assert event(f"2 {OUT}").time == TimeSpec(TimeKind.ABSOLUTE, 2_000_000)


def test_relative_time_forms() -> None:
    assert event(f"+0 {OUT}").time == TimeSpec(TimeKind.RELATIVE, 0)
    assert event(f"+.1 {OUT}").time == TimeSpec(TimeKind.RELATIVE, 100_000)
    assert event(f"+ 0.5 {OUT}").time == TimeSpec(TimeKind.RELATIVE, 500_000)


def test_absolute_range() -> None:
    time = event(f"0.1~0.2 {OUT}").time
    assert time == TimeSpec(TimeKind.ABSOLUTE, 100_000, 200_000)
    assert time.is_range


def test_relative_range() -> None:
    assert event(f"+0.1~+0.2 {OUT}").time == TimeSpec(TimeKind.RELATIVE, 100_000, 200_000)
    assert event(f"+1.0~+1.1 {OUT}").time == TimeSpec(TimeKind.RELATIVE, 1_000_000, 1_100_000)


def test_any_time() -> None:
    time = event(f"* {OUT}").time
    assert time.kind is TimeKind.ANY and not time.is_range


def test_blocking_syscall_time() -> None:
    call = event("+0...0.200 accept(3, ..., ...) = 4")
    assert isinstance(call, Syscall)
    assert call.time == TimeSpec(TimeKind.RELATIVE, 0)
    assert call.end_usecs == 200_000 and call.is_blocking


def test_blocking_syscall_with_absolute_start_and_integer_end() -> None:
    call = event("0.1...1 read(4, ..., 10) = 10")
    assert isinstance(call, Syscall)
    assert (call.time.kind, call.time.usecs, call.end_usecs) == (TimeKind.ABSOLUTE, 100_000, 1_000_000)


def test_non_blocking_syscall_has_no_end_time() -> None:
    call = event("+0 close(4) = 0")
    assert isinstance(call, Syscall) and call.end_usecs is None and not call.is_blocking


def test_time_spec_formatting() -> None:
    assert TimeSpec(TimeKind.RELATIVE, 100_000, 250_000).to_script() == "+0.1~+0.25"
    assert TimeSpec(TimeKind.ABSOLUTE, 3_000_000).to_script() == "3"
    assert TimeSpec(TimeKind.ANY).to_script() == "*"


def test_event_line_is_the_time_tokens_line() -> None:
    script = parse_script("// c\n\n  +0 poll([{fd=3,\n events=POLLIN}], 1, 0) = 1\n+0 close(3) = 0\n")
    assert [e.line for e in script.events] == [3, 5]


@pytest.mark.parametrize("text, line, fragment", [
    ("0.2~0.1 > . 1:1(0)\n", 1, "time range is backwards"),
    ("\n+0.2~+0.1 > . 1:1(0)\n", 2, "time range is backwards"),
    ("-1 > . 1:1(0)\n", 1, "negative time"),
    ("+-0.5 > . 1:1(0)\n", 1, "negative time"),
    ("0.1~+0.2 > . 1:1(0)\n", 1, "absolute time range is written start~end"),
    ("+0.1~0.2 > . 1:1(0)\n", 1, "'+' after '~'"),
    ("* close(3) = 0\n", 1, "'*' can only be used with outbound packets"),
    ("* < . 1:1(0) win 1\n", 1, "'*' can only be used with outbound packets"),
    ("0~1 close(3) = 0\n", 1, "time range can only be used with outbound packets"),
    ("+0~+1 < . 1:1(0) win 1\n", 1, "time range can only be used with outbound packets"),
    ("0x10 > . 1:1(0)\n", 1, "expected an event time"),
    ("close(3) = 0\n", 1, "expected an event time"),
    ("+0.2...0.1 read(3, ..., 1) = 1\n", 1, "end time is before its start time"),
    ("+0...x read(3, ..., 1) = 1\n", 1, "number of seconds for the end time"),
])
def test_time_errors(text: str, line: int, fragment: str) -> None:
    err = error(text)
    assert err.line == line
    assert fragment in err.message
