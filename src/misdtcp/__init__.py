"""misdtcp: a user-space TCP/IP stack that makes one TCP connection faster
by adding cores, through MISD replication of a deterministic TCP core."""

__version__ = "0.1.0"
