# cython: language_level=3
"""Records, requests and events, as the control path names them (the C
values are in vocabulary.pxd and _tcpcore.pxd: one definition each)."""
import enum

from misdtcp._tcpcore cimport (N_ACCEPTED, N_CONNECTED, N_READABLE, N_WRITABLE, N_PEER_CLOSED, N_RESET,
                               N_CLOSED, N_CONNECT_FAILED, N_URGENT)


class Record(enum.IntEnum):
    """Kinds of event-log records."""
    FRAME = REC_FRAME
    REQUEST = REC_REQUEST
    TICK = REC_TICK
    DIGEST = REC_DIGEST
    STOP = REC_STOP
    CHECKPOINT = REC_CHECKPOINT
    SEGMENT = REC_SEGMENT
    DROPPED = REC_DROPPED
    PEER6 = REC_PEER6


class Request(enum.IntEnum):
    """Application -> core requests."""
    LISTEN = REQ_LISTEN
    CONNECT = REQ_CONNECT
    ACCEPTED = REQ_ACCEPTED
    CONSUMED = REQ_CONSUMED
    SEND = REQ_SEND
    SHUTDOWN = REQ_SHUTDOWN
    CLOSE = REQ_CLOSE
    ABORT = REQ_ABORT
    UNLISTEN = REQ_UNLISTEN
    SETOPT = REQ_SETOPT
    CONNECT6 = REQ_CONNECT6


class Event(enum.IntEnum):
    """Core -> application events (the core's notify codes)."""
    ACCEPTED = N_ACCEPTED
    CONNECTED = N_CONNECTED
    READABLE = N_READABLE
    WRITABLE = N_WRITABLE
    PEER_CLOSED = N_PEER_CLOSED
    RESET = N_RESET
    CLOSED = N_CLOSED
    CONNECT_FAILED = N_CONNECT_FAILED
    URGENT = N_URGENT
