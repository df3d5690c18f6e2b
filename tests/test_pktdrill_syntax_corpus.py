"""Corpus test: every script under tests/pktdrill_syntax must parse, and its event mix
must match both the script's own ``// expect:`` header and an independent,
line-based oracle (a crude classifier that does not use the parser)."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pytest

from misdtcp.conformance import parse_file, parse_script
from misdtcp.conformance.nodes import (
    CodeBlock, CommandRole, IcmpPacket, ShellCommand, Syscall, TcpPacket, UdpPacket,
)

CORPUS = Path(__file__).parent / "pktdrill_syntax"
SCRIPTS = sorted(CORPUS.glob("*.pkt"))
KINDS = ("tcp", "syscall", "shell", "code", "icmp", "udp")

_TIME = r"(?:\*|\+?[0-9]*\.?[0-9]+(?:~\+?[0-9]*\.?[0-9]+)?)(?:\.\.\.[0-9]*\.?[0-9]+)?"
_TIMED = re.compile(rf"^\s*{_TIME}\s*(?P<rest>\S.*)$")


def kind_of(event: object) -> str:
    return {TcpPacket: "tcp", Syscall: "syscall", ShellCommand: "shell", CodeBlock: "code",
            IcmpPacket: "icmp", UdpPacket: "udp"}[type(event)]


def expected_header(text: str) -> Counter[str]:
    match = re.search(r"^// expect: (.*)$", text, re.M)
    assert match, "corpus script lacks an '// expect:' header"
    counts: Counter[str] = Counter()
    for item in match.group(1).split():
        key, value = item.split("=")
        assert key in KINDS
        counts[key] = int(value)
    return counts


def oracle_counts(text: str) -> tuple[Counter[str], list[int]]:
    """Classify statements line by line; returns counts and statement lines."""
    counts: Counter[str] = Counter()
    lines: list[int] = []
    in_backtick = in_code = in_comment = False
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw
        if in_comment:
            if "*/" not in line:
                continue
            line = line.split("*/", 1)[1]
            in_comment = False
        if in_backtick:
            in_backtick = line.count("`") % 2 == 0
            continue
        if in_code:
            in_code = "}%" not in line
            continue
        stripped = line.strip()
        if not stripped or stripped.startswith("//"):
            continue
        if stripped.startswith("/*"):
            in_comment = "*/" not in stripped
            continue
        if stripped.startswith("--"):
            continue
        if stripped.startswith("`"):                 # untimed init/cleanup command
            counts["shell"] += 1
            lines.append(number)
            in_backtick = stripped.count("`") % 2 == 1
            continue
        match = _TIMED.match(line)
        if not match:
            continue                                 # continuation of a multi-line call
        rest = match.group("rest")
        lines.append(number)
        if rest.startswith("`"):
            counts["shell"] += 1
            in_backtick = rest.count("`") % 2 == 1
        elif rest.startswith("%{"):
            counts["code"] += 1
            in_code = "}%" not in rest
        elif rest[0] in "<>":
            body = re.sub(r"^[<>]\s*(\[[^\]]*\]|\([^)]*\))?\s*", "", rest)
            word = body.split()[0] if body.split() else ""
            counts["icmp" if word == "icmp" else "udp" if word == "udp" else "tcp"] += 1
        else:
            counts["syscall"] += 1
    return counts, lines


def test_corpus_is_big_enough() -> None:
    assert len(SCRIPTS) >= 15


@pytest.mark.parametrize("path", SCRIPTS, ids=[p.name for p in SCRIPTS])
def test_corpus_script_parses_with_expected_events(path: Path) -> None:
    text = path.read_text()
    script = parse_file(str(path))
    actual = Counter(kind_of(event) for event in script.events)
    header = expected_header(text)
    oracle, oracle_lines = oracle_counts(text)
    assert +actual == +header, f"parser vs // expect header in {path.name}"
    assert +actual == +oracle, f"parser vs line oracle in {path.name}"
    assert [event.line for event in script.events] == oracle_lines
    # Every event's recorded text is the source slice starting at its line.
    source_lines = text.splitlines()
    for event in script.events:
        first_line = event.text.splitlines()[0]
        assert first_line.strip() in source_lines[event.line - 1]


@pytest.mark.parametrize("path", SCRIPTS, ids=[p.name for p in SCRIPTS])
def test_corpus_script_round_trips_through_formatter(path: Path) -> None:
    script = parse_file(str(path))
    again = parse_script(script.to_script(), "roundtrip.pkt")
    assert again.options == script.options
    assert len(again.events) == len(script.events)
    for before, after in zip(script.events, again.events):
        assert type(before) is type(after)
        assert _strip_line(before) == _strip_line(after)


def _strip_line(event: object) -> object:
    import dataclasses
    return dataclasses.replace(event, line=0)  # type: ignore[type-var]


def test_corpus_specific_facts() -> None:
    """Spot checks that pin down values, not just counts."""
    s = parse_file(str(CORPUS / "01_passive_open_read.pkt"))
    assert s.ip_version == "ipv4" and s.tolerance_usecs == 10000
    assert s.events[0].role is CommandRole.INIT
    syn = next(e for e in s.events if isinstance(e, TcpPacket))
    assert syn.flags == {"S"} and syn.win == 32792 and syn.seq.end == 0
    last = s.events[-1]
    assert isinstance(last, TcpPacket) and last.flags == {"F", "."} and last.ack == 2002

    s = parse_file(str(CORPUS / "03_active_open_blocking.pkt"))
    blocking = [e for e in s.events if isinstance(e, Syscall) and e.is_blocking]
    assert [(e.name, e.end_usecs) for e in blocking] == [("connect", 50000), ("read", 100000)]

    s = parse_file(str(CORPUS / "13_rto_backoff.pkt"))
    ranged = [e.time for e in s.events if e.time is not None and e.time.is_range]
    assert [(t.kind.value, t.usecs, t.end_usecs) for t in ranged] == [
        ("relative", 200000, 500000), ("relative", 400000, 1000000),
        ("absolute", 1500000, 3000000)]

    s = parse_file(str(CORPUS / "15_ipv6_udp_code.pkt"))
    assert s.options["strict_segments"] is None and s.defines == {"PEER_MSS": "1000"}
    roles = [e.role for e in s.events if isinstance(e, ShellCommand)]
    assert roles == [CommandRole.INIT, CommandRole.CLEANUP]
    code = next(e for e in s.events if isinstance(e, CodeBlock))
    assert code.code.splitlines()[1] == "assert tcpi_snd_mss == 1000, tcpi_snd_mss"
