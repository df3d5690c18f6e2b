from __future__ import annotations

import pytest

from misdtcp.conformance import ParseError
from misdtcp.conformance.lexer import TokenKind, tokenize


def kinds_and_texts(source: str) -> list[tuple[str, str]]:
    return [(t.kind.name, t.text) for t in tokenize(source)[:-1]]


def test_comments_and_blank_lines_are_dropped() -> None:
    source = "// line comment\n\n/* block\n comment */ 0 /* inline */ // tail\n\n"
    assert kinds_and_texts(source) == [("INT", "0")]


def test_block_comment_does_not_nest_and_star_slash_ends_it() -> None:
    assert kinds_and_texts("/* a /* b */ 7 */") == [("INT", "7"), ("PUNCT", "*"), ("PUNCT", "/")]


def test_line_comment_at_end_of_file_without_newline() -> None:
    assert kinds_and_texts("1 // no newline") == [("INT", "1")]


def test_numbers_use_longest_match_like_flex() -> None:
    assert kinds_and_texts("0.100 .1 +0 -1 0x2 0xffffffff 1e3 0123 abcd1234") == [
        ("FLOAT", "0.100"), ("FLOAT", ".1"), ("PUNCT", "+"), ("INT", "0"), ("INT", "-1"),
        ("HEX", "0x2"), ("HEX", "0xffffffff"), ("WORD", "1e3"), ("INT", "0123"),
        ("WORD", "abcd1234"),
    ]


def test_int_and_hex_values_are_decoded() -> None:
    tokens = tokenize("42 0x1F -7")
    assert [t.value for t in tokens[:-1]] == [42, 31, -7]


def test_ellipsis_splits_blocking_time_spec() -> None:
    assert kinds_and_texts("0.1...0.2 +0...0 +.1...0.200") == [
        ("FLOAT", "0.1"), ("ELLIPSIS", "..."), ("FLOAT", "0.2"),
        ("PUNCT", "+"), ("INT", "0"), ("ELLIPSIS", "..."), ("INT", "0"),
        ("PUNCT", "+"), ("FLOAT", ".1"), ("ELLIPSIS", "..."), ("FLOAT", "0.200"),
    ]


def test_flags_with_dot_lex_as_word_then_dot() -> None:
    assert kinds_and_texts("S. 0:0(0)") == [
        ("WORD", "S"), ("PUNCT", "."), ("INT", "0"), ("PUNCT", ":"), ("INT", "0"),
        ("PUNCT", "("), ("INT", "0"), ("PUNCT", ")"),
    ]


def test_strings_keep_raw_content_and_escaped_quotes() -> None:
    token = tokenize(r'"a \"b\" c"')[0]
    assert token.kind is TokenKind.STRING and token.value == r'a \"b\" c'


def test_backquoted_command_may_span_lines_and_keeps_its_start_line() -> None:
    tokens = tokenize("\n\n`first\n second`  +0")
    assert tokens[0].kind is TokenKind.BACKQUOTE
    assert tokens[0].value == "first\n second"
    assert tokens[0].line == 3
    assert tokens[1].line == 4


def test_comment_markers_inside_strings_and_commands_are_literal() -> None:
    tokens = tokenize('`echo // not a comment` "/* nor this */"')
    assert [t.value for t in tokens[:-1]] == ["echo // not a comment", "/* nor this */"]


def test_code_block_strips_spaces_and_tabs_only() -> None:
    token = tokenize("%{ \t\nassert x == 1\n\t }%")[0]
    assert token.kind is TokenKind.CODE
    assert token.value == "\nassert x == 1\n"


def test_option_token_carries_name_and_raw_value() -> None:
    tokens = tokenize('--tolerance_usecs=10000 --flag\n--define=CC="reno" --s="a b"')
    assert [t.value for t in tokens[:-1]] == [
        ("tolerance_usecs", "10000"), ("flag", None), ("define", 'CC="reno"'), ("s", "a b"),
    ]


def test_option_value_stops_at_comment() -> None:
    tokens = tokenize("--ip_version=ipv6// v6 run\n0")
    assert tokens[0].value == ("ip_version", "ipv6")
    assert tokens[1].text == "0"


def test_line_numbers_are_tracked_across_constructs() -> None:
    source = "/* 1\n2 */ a\n%{\n}% b\n`x\ny` c"
    words = [t for t in tokenize(source) if t.kind is TokenKind.WORD]
    assert [(t.text, t.line) for t in words] == [("a", 2), ("b", 4), ("c", 6)]


def test_crlf_line_endings_are_whitespace() -> None:
    assert kinds_and_texts("0 close(3) = 0\r\n") == [
        ("INT", "0"), ("WORD", "close"), ("PUNCT", "("), ("INT", "3"), ("PUNCT", ")"),
        ("PUNCT", "="), ("INT", "0"),
    ]


@pytest.mark.parametrize("source, line, fragment", [
    ("0\n/* never closed", 2, "unterminated /* comment"),
    ("\n\n+0 `echo", 3, "unterminated shell command"),
    ('+0 write(3, "abc, 3) = 3', 1, "unterminated string"),
    ("+0 %{ x = 1\n", 1, "unterminated %{ code block"),
    ("--mss=\n", 1, "has no value"),
])
def test_unterminated_constructs_raise_with_start_line(source: str, line: int, fragment: str) -> None:
    with pytest.raises(ParseError) as info:
        tokenize(source, "u.pkt")
    assert info.value.line == line
    assert fragment in info.value.message
    assert str(info.value).startswith(f"u.pkt:{line}: ")
