"""The errors the API raises: one sentence each, for people."""


class StackError(RuntimeError):
    """The stack cannot do what was asked, or has stopped (the message says why)."""


class ConnectionReset(ConnectionError):
    """The connection was reset (by the peer, a timeout or an abort)."""
