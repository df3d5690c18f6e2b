"""Tokenizer for the packetdrill script language.

The token rules follow upstream packetdrill's flex scanner (lexer.l) in
spirit: whitespace and newlines are insignificant, ``//`` and ``/* */``
comments are dropped, and numbers/words are chosen by longest match with the
same tie-break order (float, decimal integer, hex integer, word).  Unlike
upstream, keywords (``ack``, ``win``, ``mss`` ...) are *not* reserved here:
every identifier is a WORD and the parser decides from context, which makes
symbols such as ``id`` or ``seq`` usable in system call arguments.

Script options (``--name=value``) are scanned as a single OPTION token whose
value is the raw text after ``=`` (quoted strings may contain spaces), which
is more permissive than upstream's token-level option grammar.
"""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass
from enum import Enum

from misdtcp.conformance.errors import ParseError


class TokenKind(Enum):
    INT = "integer"
    HEX = "hex integer"
    FLOAT = "number"
    WORD = "word"
    STRING = "string"
    BACKQUOTE = "shell command"
    CODE = "code block"
    OPTION = "script option"
    ELLIPSIS = "'...'"
    PUNCT = "punctuation"
    EOF = "end of file"


@dataclass(frozen=True, slots=True)
class Token:
    """One token.

    ``text`` is the exact source text; ``value`` is the decoded value:
    an ``int`` for INT/HEX, the raw digits for FLOAT, the unquoted content for
    STRING/BACKQUOTE/CODE, ``(name, value-or-None)`` for OPTION, and the text
    itself otherwise.  ``start``/``end`` are character offsets into the source.
    """

    kind: TokenKind
    text: str
    value: object
    line: int
    start: int
    end: int

    def is_punct(self, char: str) -> bool:
        return self.kind is TokenKind.PUNCT and self.text == char

    def is_word(self, word: str) -> bool:
        return self.kind is TokenKind.WORD and self.text == word

    def describe(self) -> str:
        """A short human description for error messages ("got ...")."""
        if self.kind is TokenKind.EOF:
            return "end of file"
        text = self.text
        if self.kind in (TokenKind.BACKQUOTE, TokenKind.CODE, TokenKind.STRING):
            first = text.splitlines()[0] if text else text
            if len(first) > 24 or first != text:
                return f"a {self.kind.value} starting {first[:24]!r}"
        if len(text) > 32:
            text = text[:29] + "..."
        return repr(text)


# Longest-match candidates for number/word-like tokens, in flex rule order
# (earlier wins a tie).
_FLOAT_RE = re.compile(r"-?[0-9]*\.[0-9]+")
_INT_RE = re.compile(r"-?[0-9]+")
_HEX_RE = re.compile(r"0x[0-9a-fA-F]+")
_WORD_RE = re.compile(r"[A-Za-z0-9_]+")
_OPTION_NAME_RE = re.compile(r"--([A-Za-z0-9_]+)")

_WHITESPACE = " \t\n\r\f\v"


class Lexer:
    """Turns script text into a list of tokens (ending with an EOF token)."""

    def __init__(self, source: str, path: str = "<string>") -> None:
        self.source = source
        self.path = path
        self._line_starts = [0]
        for index, char in enumerate(source):
            if char == "\n":
                self._line_starts.append(index + 1)

    def line_of(self, offset: int) -> int:
        """1-based line number of a character offset."""
        return bisect.bisect_right(self._line_starts, offset)

    def _error(self, offset: int, message: str) -> ParseError:
        return ParseError(self.path, self.line_of(offset), message)

    def _token(self, kind: TokenKind, start: int, end: int, value: object = None) -> Token:
        text = self.source[start:end]
        return Token(kind, text, text if value is None else value, self.line_of(start), start, end)

    def tokenize(self) -> list[Token]:
        src = self.source
        n = len(src)
        pos = 0
        tokens: list[Token] = []
        while pos < n:
            char = src[pos]
            if char in _WHITESPACE:
                pos += 1
                continue
            two = src[pos:pos + 2]
            if two == "//":
                newline = src.find("\n", pos)
                pos = n if newline < 0 else newline
                continue
            if two == "/*":
                close = src.find("*/", pos + 2)
                if close < 0:
                    raise self._error(pos, "unterminated /* comment (no closing */ before end of file)")
                pos = close + 2
                continue
            if two == "%{":
                close = src.find("}%", pos + 2)
                if close < 0:
                    raise self._error(pos, "unterminated %{ code block (no closing }% before end of file)")
                # Upstream strips spaces and tabs (not newlines) at both ends.
                code = src[pos + 2:close].strip(" \t")
                tokens.append(self._token(TokenKind.CODE, pos, close + 2, code))
                pos = close + 2
                continue
            if char in "`\"":
                end = self._scan_quoted(pos, char)
                kind = TokenKind.BACKQUOTE if char == "`" else TokenKind.STRING
                tokens.append(self._token(kind, pos, end, src[pos + 1:end - 1]))
                pos = end
                continue
            if two == "--":
                match = _OPTION_NAME_RE.match(src, pos)
                if match:
                    token, pos = self._scan_option(pos, match)
                    tokens.append(token)
                    continue
            if src.startswith("...", pos):
                tokens.append(self._token(TokenKind.ELLIPSIS, pos, pos + 3))
                pos += 3
                continue
            token = self._scan_number_or_word(pos)
            if token is not None:
                tokens.append(token)
                pos = token.end
                continue
            tokens.append(self._token(TokenKind.PUNCT, pos, pos + 1))
            pos += 1
        # End-of-file errors are reported on the line of the last real token.
        eof_line = tokens[-1].line if tokens else self.line_of(max(len(src.rstrip()) - 1, 0))
        tokens.append(Token(TokenKind.EOF, "", None, eof_line, n, n))
        return tokens

    def _scan_quoted(self, start: int, quote: str) -> int:
        """Offset just past the closing quote; a backslash escapes any char."""
        src = self.source
        pos = start + 1
        while pos < len(src):
            char = src[pos]
            if char == "\\":
                pos += 2
                continue
            if char == quote:
                return pos + 1
            pos += 1
        what = "shell command (`...`)" if quote == "`" else 'string ("...")'
        raise self._error(start, f"unterminated {what}: no closing {quote} before end of file")

    def _scan_option(self, start: int, match: re.Match[str]) -> tuple[Token, int]:
        """Scan ``--name`` plus an optional ``=value`` on the same line."""
        src = self.source
        name = match.group(1)
        pos = match.end()
        probe = pos
        while probe < len(src) and src[probe] in " \t":
            probe += 1
        if probe >= len(src) or src[probe] != "=":
            return self._token(TokenKind.OPTION, start, pos, (name, None)), pos
        pos = probe + 1
        while pos < len(src) and src[pos] in " \t":
            pos += 1
        value_start = pos
        while pos < len(src) and src[pos] not in _WHITESPACE:
            if src.startswith("//", pos) or src.startswith("/*", pos):
                break
            if src[pos] in "\"`":
                pos = self._scan_quoted(pos, src[pos])
                continue
            pos += 1
        raw = src[value_start:pos]
        if not raw:
            raise self._error(start, f"script option '--{name}=' has no value after '='")
        value = raw
        # A value that is exactly one quoted string is unquoted (as upstream);
        # anything else (e.g. --define=CC="reno") is kept verbatim.
        if (len(raw) >= 2 and raw[0] == '"' and raw[-1] == '"'
                and self._scan_quoted(value_start, '"') == pos):
            value = raw[1:-1]
        return self._token(TokenKind.OPTION, start, pos, (name, value)), pos

    def _scan_number_or_word(self, pos: int) -> Token | None:
        src = self.source
        best_kind: TokenKind | None = None
        best_end = pos
        for kind, regex in (
            (TokenKind.FLOAT, _FLOAT_RE),
            (TokenKind.INT, _INT_RE),
            (TokenKind.HEX, _HEX_RE),
            (TokenKind.WORD, _WORD_RE),
        ):
            match = regex.match(src, pos)
            if match and match.end() > best_end:
                best_kind, best_end = kind, match.end()
        if best_kind is None:
            return None
        text = src[pos:best_end]
        value: object = text
        if best_kind is TokenKind.INT:
            value = int(text, 10)
        elif best_kind is TokenKind.HEX:
            value = int(text, 16)
        return self._token(best_kind, pos, best_end, value)


def tokenize(source: str, path: str = "<string>") -> list[Token]:
    """Tokenize a whole script; raises ParseError on unterminated constructs."""
    return Lexer(source, path).tokenize()
