"""Every shared-memory area of one stack, created together and closed together.

All are memfd files (nothing appears in /dev/shm; the memory goes with the
last fd and mapping).  Forked processes inherit the mappings.

* ``ring``       the broadcast ring: the sequencer's event log;
* ``requests``   the request queue: application -> sequencer;
* ``events``     the event queue: worker 0 (or the mimd lock holder) -> application;
* ``block``      the runtime's bookkeeping (runtime/layout.pxd) and ``view`` on it;
* ``receive``    every connection's receive buffer, ``rcvbuf`` bytes per slot;
* ``send``       every connection's send buffer, ``sndbuf`` bytes per slot;
* ``snapshots``  two replica-state snapshots per worker (recoverable misd);
* ``state``      the one shared core state (mimd).
"""
from __future__ import annotations

from misdtcp._ring import BroadcastRing
from misdtcp.runtime.layout import SharedView, init_shared, shared_size
from misdtcp.runtime.queue import MessageQueue
from misdtcp.runtime.shm import MirroredBuffer

REQUEST_QUEUE_CAPACITY = 4096
EVENT_QUEUE_CAPACITY = 8192


def pow2(n: int, minimum: int = 4096) -> int:
    """The smallest power of two >= n (and >= minimum): mirrored areas need one."""
    size = minimum
    while size < n:
        size <<= 1
    return size


class SharedAreas:
    def __init__(self, *, workers: int, max_connections: int, rcvbuf: int, sndbuf: int,
                 shared_progress: bool, state_size: int, snapshots: bool, shared_state: bool,
                 ring: BroadcastRing | None = None, ring_consumers: int = 1, ring_entries: int = 1 << 16,
                 ring_data: int = 32 << 20, capture_size: int = 0, huge_pages: bool = False,
                 events_capacity: int = EVENT_QUEUE_CAPACITY):
        """`ring`: an existing log to use (a replay); otherwise a new one of
        `ring_entries` descriptors and `ring_data` bytes.  `huge_pages`: the
        log's data area and the receive and send buffers on huge pages where
        the system offers them (they fall back to normal pages)."""
        self.workers = workers
        self.rcvbuf = rcvbuf
        self.sndbuf = sndbuf
        self.state_size = state_size
        self._areas = []
        try:
            if ring is None:
                ring = self._keep(BroadcastRing(pow2(ring_entries, 2), pow2(ring_data, 1 << 20), ring_consumers,
                                                huge_pages=huge_pages))
            self.ring = ring
            self.requests = self._keep(MessageQueue(REQUEST_QUEUE_CAPACITY, name="misdtcp-requests"))
            self.events = self._keep(MessageQueue(events_capacity, name="misdtcp-events"))
            self.block = MirroredBuffer(pow2(shared_size(workers, max_connections, capture_size)))
            init_shared(self.block, workers, max_connections, rcvbuf, sndbuf, capture_size, shared_progress)
            self.view = SharedView(self.block)
            self.receive = self._keep(MirroredBuffer(pow2(max_connections * rcvbuf), name="misdtcp-receive",
                                                     huge_pages=huge_pages))
            self.send = self._keep(MirroredBuffer(pow2(max_connections * sndbuf), name="misdtcp-send",
                                                  huge_pages=huge_pages))
            self.snapshots = self._keep(MirroredBuffer(pow2(workers * 2 * state_size))) if snapshots else None
            self.state = self._keep(MirroredBuffer(pow2(state_size))) if shared_state else None
        except BaseException:
            self.close()
            raise

    def _keep(self, area):
        self._areas.append(area)
        return area

    def close(self) -> None:
        """Unmap everything this process mapped (other processes keep theirs).
        The bookkeeping block stays mapped until this object goes away:
        application threads may still be reading progress words from it."""
        for area in self._areas:
            try:
                area.close()
            except (BufferError, RuntimeError):
                pass          # a memoryview or a blocked thread still uses it; it goes with the object
        self._areas = []
