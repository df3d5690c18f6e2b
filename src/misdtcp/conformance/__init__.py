"""Conformance testing in the packetdrill language, over the deterministic core.

The parser (``lexer``, ``parser``, AST in ``nodes``, ``ParseError`` in
``errors``) reads scripts in the language of google/packetdrill; the runner
(``runner``) plays them against one `TcpCore` in virtual time, with the
socket calls of a script (``syscalls``) acting on a model of the socket layer
(``sockets``) and packets built and compared by ``packets``.  ``misdtcp
pktdrill`` (cli/pktdrill.py) is the command line.

Entry points of the parser: :func:`parse_script`, :func:`parse_file`,
:func:`parse_expression`.
"""

from misdtcp.conformance import nodes
from misdtcp.conformance.errors import ParseError
from misdtcp.conformance.nodes import *  # noqa: F401,F403 - the AST is part of the public API
from misdtcp.conformance.nodes import Script, format_event
from misdtcp.conformance.parser import parse_expression, parse_file, parse_script, seconds_to_usecs

__all__ = [
    "ParseError", "parse_expression", "parse_file", "parse_script", "seconds_to_usecs",
    *nodes.__all__,
]
