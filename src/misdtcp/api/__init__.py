"""The Python API: a `Stack` attached to a device, with listeners and
connections that read without copying (``stack``, ``connection``), the
asyncio adapter (``aio``) and the errors they raise (``errors``).

    from misdtcp.api import Stack
"""
from misdtcp.api.connection import Connection, Listener
from misdtcp.api.errors import ConnectionReset, StackError
from misdtcp.api.stack import STRATEGIES, PendingConnect, Stack

__all__ = ["Stack", "Listener", "Connection", "PendingConnect", "StackError", "ConnectionReset", "STRATEGIES"]
