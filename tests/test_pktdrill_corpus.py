"""The project's packetdrill corpus (tests/pktdrill/, IPv6 versions of a
representative set in tests/pktdrill/ipv6/): every script passes
against the core, and -- the runner's self-check -- every script mutated on
purpose (an ack off by one, a missing flag, a missing SACK block, a reply
outside the time tolerance) fails, at the line that was mutated."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from misdtcp.conformance.runner import DEFAULT_TOLERANCE_US, run_script

CORPUS = Path(__file__).parent / "pktdrill"
SCRIPTS = sorted(CORPUS.rglob("*.pkt"))

# an outbound TCP line with a plain time: indent, time, '>', flags, the rest
OUTBOUND = re.compile(r"^(?P<time>\s*\+?[0-9]*\.?[0-9]+)(?P<gap>\s+>\s+)(?P<flags>[A-Z]*\.?)(?P<rest>\s.*)$")


def test_corpus_is_there():
    assert len(SCRIPTS) >= 20


def test_the_ipv6_versions_are_there():
    ipv6 = [p for p in SCRIPTS if p.parent.name == "ipv6"]
    assert len(ipv6) >= 25 and all("--ip_version=ipv6" in p.read_text() for p in ipv6)


@pytest.mark.parametrize("path", SCRIPTS, ids=lambda p: str(p.relative_to(CORPUS)))
def test_corpus_script_passes(path):
    result = run_script(str(path))
    assert result.passed, result.report()
    assert run_script(str(path), relaxed=True).passed


def _tolerance_us(text: str) -> int:
    match = re.search(r"^--tolerance_usecs=(\d+)", text, re.M)
    return int(match.group(1)) if match else DEFAULT_TOLERANCE_US


def _spread(items, n=3):
    """Up to n items: the first, the last and one in the middle."""
    if len(items) <= n:
        return items
    return [items[0], items[len(items) // 2], items[-1]]


def mutations(text: str):
    """(kind, line number, mutated text) for the outbound lines of a script."""
    lines = text.split("\n")
    candidates = {"ack": [], "flag": [], "sack": [], "time": []}
    for i, line in enumerate(lines):
        m = OUTBOUND.match(line)
        if not m:
            continue
        if re.search(r"\back \d+", line):
            candidates["ack"].append(i)
        if m.group("flags").strip("."):
            candidates["flag"].append(i)
        if re.search(r"\bsack \d+:\d+", line):
            candidates["sack"].append(i)
        candidates["time"].append(i)
    tolerance_s = (_tolerance_us(text) + 1000) / 1e6
    for kind, indexes in candidates.items():
        for i in _spread(indexes):
            line = lines[i]
            m = OUTBOUND.match(line)
            if kind == "ack":
                new = re.sub(r"\back (\d+)", lambda a: f"ack {int(a.group(1)) + 1}", line, count=1)
            elif kind == "flag":
                flags = m.group("flags")
                letters = flags.rstrip(".")
                new_flags = letters[1:] + ("." if flags.endswith(".") else "")
                new = m.group("time") + m.group("gap") + (new_flags or "-") + m.group("rest")
            elif kind == "sack":
                def drop_last_block(s):
                    blocks = s.group(1).split()
                    return ("sack " + " ".join(blocks[:-1])) if len(blocks) > 1 else "nop,nop"
                new = re.sub(r"sack ((?:\d+:\d+\s?)+)", drop_last_block, line, count=1)
                new = new.replace(",nop,nop,nop,nop>", ",nop,nop>").replace("<nop,nop,nop,nop>", "<nop,nop>")
            else:
                time = m.group("time")
                plus = "+" if time.strip().startswith("+") else ""
                value = float(time.strip().lstrip("+")) + tolerance_s
                new = f"{plus}{value:.6f}" + m.group("gap") + m.group("flags") + m.group("rest")
            yield kind, i + 1, "\n".join(lines[:i] + [new] + lines[i + 1:])


@pytest.mark.parametrize("path", SCRIPTS, ids=lambda p: str(p.relative_to(CORPUS)))
def test_mutated_corpus_script_fails_at_the_mutated_line(path, tmp_path):
    text = path.read_text()
    count = 0
    for kind, line, mutated in mutations(text):
        target = tmp_path / f"{kind}-{line}-{path.name}"
        target.write_text(mutated)
        result = run_script(str(target))
        assert not result.passed, f"{kind} mutation of line {line} passed:\n{mutated}"
        assert result.line == line, f"{kind} mutation of line {line}: {result.report()}"
        count += 1
    assert count > 0 or "> " not in text


def test_every_mutation_kind_is_exercised():
    kinds = {kind for path in SCRIPTS for kind, _, _ in mutations(path.read_text())}
    assert kinds == {"ack", "flag", "sack", "time"}
