"""Small helpers shared by the unit tests."""

from __future__ import annotations

import pytest

from misdtcp.conformance import ParseError, parse_script
from misdtcp.conformance.nodes import AnyEvent


def event(statement: str) -> AnyEvent:
    """Parse a one-event script (statement includes its time) and return the event."""
    script = parse_script(statement + "\n", "t.pkt")
    timed = [e for e in script.events if e.time is not None]
    assert len(timed) == 1, timed
    return timed[0]


def error(text: str, path: str = "t.pkt") -> ParseError:
    """Parse text that must fail and return the ParseError."""
    with pytest.raises(ParseError) as info:
        parse_script(text, path)
    err = info.value
    assert str(err) == f"{path}:{err.line}: {err.message}"
    assert "\n" not in str(err)
    return err
