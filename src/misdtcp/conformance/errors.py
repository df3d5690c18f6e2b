"""The single exception type raised for any malformed packetdrill script."""

from __future__ import annotations


class ParseError(Exception):
    """A lexical, syntactic or semantic error in a packetdrill script.

    ``str(error)`` is one sentence of the form ``"path:line: message"``, the
    same shape packetdrill itself prints, so a runner can show it as-is.
    """

    def __init__(self, path: str, line: int, message: str) -> None:
        self.path = path
        self.line = line
        self.message = message
        super().__init__(f"{path}:{line}: {message}")
