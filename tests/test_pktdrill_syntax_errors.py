"""ParseError shape ("path:line: message", one sentence) and line accuracy."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from pktdrill_syntax_helpers import error
from misdtcp.conformance import ParseError, parse_file, parse_script

CORPUS = Path(__file__).parent / "pktdrill_syntax"


def test_error_carries_path_line_and_message() -> None:
    text = "0 socket(..., SOCK_STREAM, IPPROTO_TCP) = 3\n+0 bind(3, ..., ...) = 0\n" \
           "\n// comment\n+0 < S 0:0(0) <mss 1460>\n"
    err = error(text, "scripts/server.pkt")
    assert err.path == "scripts/server.pkt" and err.line == 5
    assert str(err) == ("scripts/server.pkt:5: window must be specified for inbound packets "
                        "(add 'win N')")


def test_error_message_names_what_was_found() -> None:
    err = error("0 > S 0:0(0) ack win 10\n")
    assert err.message == "expected an integer for TCP ack sequence number, got 'win'"


def test_error_on_later_line_of_multi_line_statement_uses_that_line() -> None:
    err = error("0 poll([{fd=3,\n events=POLLIN,\n revents=POLLIN]}], 1, 0) = 1\n")
    assert err.line == 3 and "',' or '}' in the braced list" in err.message


def test_garbage_after_a_complete_statement_is_reported_on_its_line() -> None:
    err = error("0 close(3) = 0\n+0 > . 1:1(0) ack 1 window 10\n")
    assert err.line == 2 and err.message == "expected an event time (such as 0, 0.100, +0.1, " \
                                            "0.1~0.2, +0~+0.1 or *), got 'window'"


def test_parse_file_uses_the_file_path(tmp_path: Path) -> None:
    bad = tmp_path / "bad.pkt"
    bad.write_text("0 close(3) = 0\n+0 > Z 1:1(0)\n")
    with pytest.raises(ParseError) as info:
        parse_file(str(bad))
    assert str(info.value).startswith(f"{bad}:2: invalid TCP flag 'Z'")


def test_messages_are_single_sentences() -> None:
    samples = ["0 > S 0:1(0)\n", "+0 < S 0:0(0)\n", "0 close(\n", "* close(3) = 0\n",
               "0 > S 0:0(0) <mss 1460,wscale 7>\n", "`x`\n`y`\n0 close(3) = 0\n"]
    for text in samples:
        message = error(text).message
        assert "\n" not in message
        assert not re.search(r"[.!?] [A-Z]", message), message


_INBOUND_WIN = re.compile(r"^(\s*\S+\s+<.*?) win \d+(.*)$")


def _inbound_tcp_lines(text: str) -> list[int]:
    return [n for n, line in enumerate(text.splitlines(), 1)
            if _INBOUND_WIN.match(line) and " icmp " not in line and " udp " not in line]


@pytest.mark.parametrize("path", sorted(CORPUS.glob("*.pkt")), ids=lambda p: p.name)
def test_mutated_corpus_errors_point_at_the_mutated_line(path: Path) -> None:
    """Dropping 'win N' from an inbound segment must fail on exactly that line."""
    text = path.read_text()
    lines = text.splitlines()
    candidates = _inbound_tcp_lines(text)
    if not candidates:
        pytest.skip("no inbound TCP segment in this script")
    for number in (candidates[0], candidates[-1]):
        mutated = list(lines)
        mutated[number - 1] = _INBOUND_WIN.sub(r"\1\2", lines[number - 1])
        with pytest.raises(ParseError) as info:
            parse_script("\n".join(mutated) + "\n", path.name)
        assert info.value.line == number
        assert "window must be specified" in info.value.message


@pytest.mark.parametrize("prefix", ["ipv4 192.0.2.1 > 192.168.0.1:", "gre:", "mpls (label 1, tc 0, ttl 1):"])
def test_encapsulation_prefixes_are_rejected_clearly(prefix: str) -> None:
    err = error(f"0 < {prefix} S 0:0(0) win 1\n")
    assert err.line == 1 and "encapsulation prefixes" in err.message
