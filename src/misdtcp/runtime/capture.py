"""A live stack's pcap capture, like tcpdump's: one file (or standard
output), both directions, records in time order, `snaplen` bytes of each.

Several processes see frames: the sequencer the incoming ones, each worker
the ones it sends (or the one `single` process both).  Each writes its own
part file in a private temporary directory, one write() per record
(frameio/pcap.pyx, ``flush_each``), so a record is in its part file
microseconds after its timestamp.  `CaptureMerger`, a thread of the
application's process, reads the parts as they grow and writes the records
to the destination in timestamp order, holding each back `hold` seconds (the
time a record from a slower process may still take to appear); at stop it
merges whatever is left.  ``--pcap -`` writes the merged stream to standard
output as `tcpdump -w -` does, for `tcpdump -r -` or Wireshark to read live.
"""
from __future__ import annotations

import heapq
import os
import shutil
import struct
import sys
import tempfile
import threading
import time

from misdtcp.frameio.pcap import LINKTYPE_RAW, MAGIC_NANOSECONDS, PcapWriter

RECORD = struct.Struct("<IIII")
FILE_HEADER = 24


class CaptureParts:
    """The per-process part files of one capture (created before the fork)."""

    def __init__(self, roles: list[str], snaplen: int):
        self.dir = tempfile.mkdtemp(prefix="misdtcp-capture-")
        self.snaplen = snaplen
        self.paths = {role: os.path.join(self.dir, role.replace(" ", "-") + ".pcap") for role in roles}
        self.writers = {role: PcapWriter(path, snaplen=snaplen, flush_each=True) for role, path in self.paths.items()}
        for writer in self.writers.values():
            writer.flush()

    def writer(self, role: str) -> PcapWriter:
        return self.writers[role]

    def close(self) -> None:
        for writer in self.writers.values():
            writer.close()
        shutil.rmtree(self.dir, ignore_errors=True)


class _PartReader:
    """Reads the complete records appended to one part file so far."""

    def __init__(self, path: str):
        self.file = open(path, "rb")
        self.file.read(FILE_HEADER)
        self.rest = b""

    def records(self):
        self.rest += self.file.read()
        out = []
        pos = 0
        while len(self.rest) - pos >= RECORD.size:
            sec, frac, incl, orig = RECORD.unpack_from(self.rest, pos)
            end = pos + RECORD.size + incl
            if end > len(self.rest):
                break
            out.append((sec * 1_000_000_000 + frac, self.rest[pos:end]))
            pos = end
        self.rest = self.rest[pos:]
        return out

    def close(self):
        self.file.close()


class CaptureMerger:
    """Merges the part files into `destination` ('-' for standard output)."""

    def __init__(self, parts: CaptureParts, destination: str, hold: float = 0.25, period: float = 0.05):
        self.parts = parts
        self.hold_ns = int(hold * 1e9)
        self.period = period
        self.destination = destination
        if destination == "-":
            self.fd = os.dup(sys.stdout.fileno())
        else:
            self.fd = os.open(destination, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        header = (MAGIC_NANOSECONDS.to_bytes(4, "little") + (2).to_bytes(2, "little") + (4).to_bytes(2, "little")
                  + bytes(8) + parts.snaplen.to_bytes(4, "little") + LINKTYPE_RAW.to_bytes(4, "little"))
        self._write(header)
        self.readers = [_PartReader(path) for path in parts.paths.values()]
        self.heap: list = []
        self.seq = 0
        self.records = 0
        self.error: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="misdtcp-capture", daemon=True)

    def start(self) -> None:
        """Merge while the stack runs (a thread: start it after the stack's
        forker exists, which must be forked from a process without one)."""
        self._thread.start()

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        while len(view):
            view = view[os.write(self.fd, view):]

    def _gather(self) -> None:
        for reader in self.readers:
            for ts, record in reader.records():
                heapq.heappush(self.heap, (ts, self.seq, record))
                self.seq += 1

    def _emit(self, upto_ns: int | None) -> None:
        out = []
        while self.heap and (upto_ns is None or self.heap[0][0] <= upto_ns):
            out.append(heapq.heappop(self.heap)[2])
        if out:
            self.records += len(out)
            self._write(b"".join(out))

    def _run(self) -> None:
        try:
            while not self._stop.wait(self.period):
                self._gather()
                self._emit(time.time_ns() - self.hold_ns)
        except OSError as exc:
            self.error = f"writing the capture to {self.destination} failed: {exc.strerror}"

    def close(self) -> None:
        """After the processes have ended: merge the rest, close everything."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(2.0)
        try:
            if self.error is None:
                self._gather()
                self._emit(None)
        except OSError as exc:
            self.error = f"writing the capture to {self.destination} failed: {exc.strerror}"
        finally:
            for reader in self.readers:
                reader.close()
            os.close(self.fd)
