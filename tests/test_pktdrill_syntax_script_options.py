from __future__ import annotations

import pytest

from pktdrill_syntax_helpers import error
from misdtcp.conformance import parse_script

BODY = "0 close(3) = 0\n"


def test_options_are_collected_into_a_dict() -> None:
    script = parse_script("--ip_version=ipv6\n--tolerance_usecs=10000\n--strict_segments\n"
                          "--tcp_ts_tick_usecs=1000 --local_ip=192.168.0.1\n" + BODY)
    assert script.options == {"ip_version": "ipv6", "tolerance_usecs": "10000",
                              "strict_segments": None, "tcp_ts_tick_usecs": "1000",
                              "local_ip": "192.168.0.1"}
    assert script.ip_version == "ipv6"
    assert script.tolerance_usecs == 10000


def test_absent_options_give_none() -> None:
    script = parse_script(BODY)
    assert script.options == {} and script.ip_version is None and script.tolerance_usecs is None


def test_spaces_around_equals_and_last_occurrence_wins() -> None:
    script = parse_script("--mss = 1000\n--mss=1200\n" + BODY)
    assert script.options["mss"] == "1200"
    assert script.option_list == (("mss", "1000"), ("mss", "1200"))


def test_repeated_defines_are_all_kept() -> None:
    script = parse_script('--define=A=1 --define=CC="reno"\n' + BODY)
    assert script.defines == {"A": "1", "CC": '"reno"'}


def test_quoted_option_value_is_unquoted() -> None:
    assert parse_script('--wire_server_at="host a"\n' + BODY).options["wire_server_at"] == "host a"


def test_ipv4_mapped_ipv6_is_accepted() -> None:
    assert parse_script("--ip_version=ipv4-mapped-ipv6\n" + BODY).ip_version == "ipv4-mapped-ipv6"


def test_commented_out_option_is_ignored() -> None:
    assert parse_script("//--tolerance_usecs=10000\n" + BODY).options == {}


@pytest.mark.parametrize("text, line, fragment", [
    ("--ip_version=ipv5\n" + BODY, 1, "--ip_version must be one of"),
    ("\n--tolerance_usecs=1.5\n" + BODY, 2, "--tolerance_usecs must be a non-negative integer"),
    ("--tolerance_usecs\n" + BODY, 1, "--tolerance_usecs must be a non-negative integer"),
    (BODY + "--mss=1000\n", 2, "must come before the first event"),
    ("`init`\n--mss=1000\n" + BODY, 2, "must come before the first event"),
])
def test_option_errors(text: str, line: int, fragment: str) -> None:
    err = error(text)
    assert err.line == line and fragment in err.message
