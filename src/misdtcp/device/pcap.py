"""pcap capture of TUN traffic (both directions) and a small reader for tests and tools.

The writer is compiled (``misdtcp._pcap``): Cython code calls
``pcap_write(&writer.file, ts_ns, ptr, len)`` nogil per frame; Python code
calls ``PcapWriter.write(frame, ts_ns, offset=vnet_hdr_len)``.  Records are
bare IP packets (LINKTYPE_RAW); GSO super-frames are written whole, as one
large packet (see ``misdtcp/_pcap.pyx``).  Several processes (MISD workers)
can write one file: the first creates it, the others pass ``append=True``.
"""
from __future__ import annotations

import os
import struct
from typing import Iterator

from misdtcp._pcap import (LINKTYPE_IPV4, LINKTYPE_RAW, MAGIC_MICROSECONDS, MAGIC_NANOSECONDS, PcapError,
                           PcapWriter)

__all__ = ["PcapWriter", "PcapError", "read_pcap", "LINKTYPE_RAW", "LINKTYPE_IPV4"]


def read_pcap(path: str | os.PathLike) -> Iterator[tuple[int, bytes, int]]:
    """Yield ``(ts_ns, captured_bytes, original_length)`` for every record of a classic pcap file."""
    with open(path, "rb") as f:
        head = f.read(24)
        if len(head) < 24:
            raise PcapError(f"{os.fspath(path)} is too short to be a pcap file.")
        for order in ("<", ">"):
            magic = struct.unpack(order + "I", head[:4])[0]
            if magic in (MAGIC_MICROSECONDS, MAGIC_NANOSECONDS):
                break
        else:
            raise PcapError(f"{os.fspath(path)} is not a classic pcap file (magic {head[:4].hex()}).")
        scale = 1 if magic == MAGIC_NANOSECONDS else 1000
        record = struct.Struct(order + "IIII")
        while True:
            raw = f.read(16)
            if not raw:
                return
            if len(raw) < 16:
                raise PcapError(f"{os.fspath(path)} ends inside a record header.")
            sec, frac, incl, orig = record.unpack(raw)
            data = f.read(incl)
            if len(data) < incl:
                raise PcapError(f"{os.fspath(path)} ends inside a record.")
            yield sec * 1_000_000_000 + frac * scale, data, orig
