"""Damaged scripts must either parse or raise ParseError, never anything else."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from misdtcp.conformance import ParseError, parse_script
from misdtcp.conformance.lexer import tokenize

CORPUS = sorted((Path(__file__).parent / "pktdrill_syntax").glob("*.pkt"))


def _parse_or_parse_error(text: str) -> bool:
    try:
        parse_script(text, "damaged.pkt")
    except ParseError as err:
        assert str(err).startswith(f"damaged.pkt:{err.line}: ") and "\n" not in str(err)
        assert 1 <= err.line <= text.count("\n") + 1
        return False
    return True


@pytest.mark.parametrize("path", CORPUS, ids=lambda p: p.name)
def test_truncated_and_token_deleted_scripts(path: Path) -> None:
    text = path.read_text()
    rng = random.Random(path.name)            # deterministic per file
    outcomes = []
    for cut in range(0, len(text), max(1, len(text) // 25)):
        outcomes.append(_parse_or_parse_error(text[:cut]))
    tokens = tokenize(text)[:-1]
    for _ in range(25):
        victim = rng.choice(tokens)
        outcomes.append(_parse_or_parse_error(text[:victim.start] + text[victim.end:]))
    # Damage must be detected at least sometimes (i.e. the parser is not accepting everything).
    assert outcomes.count(False) >= 5
