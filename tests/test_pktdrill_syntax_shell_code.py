from __future__ import annotations

import pytest

from pktdrill_syntax_helpers import error, event
from misdtcp.conformance import parse_script
from misdtcp.conformance.nodes import CodeBlock, CommandRole, ShellCommand, TimeKind


def test_timed_shell_command() -> None:
    cmd = event("+0 `sysctl -q net.ipv4.tcp_timestamps=0`")
    assert isinstance(cmd, ShellCommand)
    assert cmd.command == "sysctl -q net.ipv4.tcp_timestamps=0"
    assert cmd.role is CommandRole.EVENT and cmd.time.kind is TimeKind.RELATIVE


def test_untimed_init_and_cleanup_commands() -> None:
    script = parse_script("`../common/defaults.sh\n sysctl -q a=1`\n0 close(3) = 0\n"
                          "`/tmp/sysctl_restore_${PPID}.sh`\n")
    init, close, cleanup = script.events
    assert isinstance(init, ShellCommand) and init.role is CommandRole.INIT
    assert init.time is None and init.command == "../common/defaults.sh\n sysctl -q a=1"
    assert (init.line, close.line, cleanup.line) == (1, 3, 4)
    assert isinstance(cleanup, ShellCommand) and cleanup.role is CommandRole.CLEANUP
    assert cleanup.command == "/tmp/sysctl_restore_${PPID}.sh"
    assert script.timed_events == (close,)


def test_shell_command_with_quotes_and_multiple_lines() -> None:
    cmd = event('+0 `echo "a b" > /dev/null\n  true`')
    assert isinstance(cmd, ShellCommand) and cmd.command == 'echo "a b" > /dev/null\n  true'


def test_code_block_single_and_multi_line() -> None:
    code = event("+0 %{ assert tcpi_snd_cwnd == 10, tcpi_snd_cwnd }%")
    assert isinstance(code, CodeBlock)
    assert code.code == "assert tcpi_snd_cwnd == 10, tcpi_snd_cwnd"
    code = event("0.300 %{\nassert tcpi_ca_state == 0\nassert tcpi_rto > 0\n}%")
    assert isinstance(code, CodeBlock)
    assert code.code == "\nassert tcpi_ca_state == 0\nassert tcpi_rto > 0\n"
    assert code.time.usecs == 300_000


def test_code_block_may_contain_closing_brace_and_percent_separately() -> None:
    code = event("+0 %{ d = {'a': 1}; x = 5 % 2 }%")
    assert isinstance(code, CodeBlock) and code.code == "d = {'a': 1}; x = 5 % 2"


@pytest.mark.parametrize("text, line, fragment", [
    ("0 close(3) = 0\n`middle`\n+0 close(4) = 0\n", 2,
     "without an event time is only allowed before the first event or as the last"),
    ("`a`\n`b`\n0 close(3) = 0\n", 2, "without an event time is only allowed"),
    ("`only a command`\n", 1, "the script contains no events"),
    ("// nothing\n", 1, "the script contains no events"),
    ("", 1, "the script contains no events"),
])
def test_shell_placement_errors(text: str, line: int, fragment: str) -> None:
    err = error(text)
    assert err.line == line and fragment in err.message
