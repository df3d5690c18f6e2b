"""The runtime of a live stack: its shared memory, its processes, and what
happens when one of them dies.

`LiveRuntime.start(device_fd)` creates the shared areas, starts the
forker (runtime/forker.py: the single-threaded parent of every other
process) and has it fork the strategy's processes: the sequencer (reads the
device, writes the log) and N workers (run the log), or the one `single`
process.  `watch()` is called every 100 ms by the API's event thread: it
reaps processes that ended, notices processes that make no progress while
work is pending (runtime/watchdog.py) and SIGKILLs them, and with recovery
on (misd) replaces a dead or hung worker from its last replica snapshot
(runtime/recovery.py); otherwise it reports the failure in one sentence.
A packet-ring device
comes as a `PacketLink` instead of a descriptor: the log resolves positions
in its receive ring (mapped before the forker is forked, so every process
sees it), the sequencer (or the `single` process) takes frames from the
ring's slots, and each worker writes Ethernet frames to its own transmit
socket.  `stop()` ends every process and closes every area.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass

from misdtcp._tcpcore import TcpCore
from misdtcp.frameio.faults import FaultInjector
from misdtcp.frameio.pcap import PcapWriter
from misdtcp.runtime.capture import CaptureMerger, CaptureParts
from misdtcp.runtime import recovery, strategies
from misdtcp.runtime.areas import SharedAreas
from misdtcp.runtime.executor import Executor, Sink
from misdtcp.runtime.forker import Forker, ForkerError
from misdtcp.runtime.loops import run_single_device
from misdtcp.runtime.placement import place
from misdtcp.runtime.process import activity as process_activity
from misdtcp.runtime.sequencer import run_sequencer
from misdtcp.runtime.strategies import Run
from misdtcp.runtime.watchdog import Activity, Liveness, Watchdog


@dataclass
class PacketLink:
    """A packet-ring device, as the runtime uses it (device/packet_ring.py
    makes one): the mapped receive ring, whose socket is the device's
    descriptor, a transmit socket per worker, and the link's two MACs."""
    ring: object                     # frameio.packet_ring.RxRing: mapped, its socket bound
    transmit_fds: tuple              # AF_PACKET sockets, bound, PACKET_VNET_HDR_SZ 12: worker w writes to [w]
    mac: bytes                       # the stack's end
    peer_mac: bytes                  # the kernel's end: the next hop of every frame the stack sends

    @property
    def link_header(self) -> bytes:
        """The Ethernet header in front of every IPv4 packet the stack sends."""
        return self.peer_mac + self.mac + b"\x08\x00"


class CaptureError(RuntimeError):
    """The capture file cannot be written (one sentence)."""


@dataclass
class LiveConfig:
    """What the runtime needs to know (the API checks it before)."""
    address: str
    strategy: str
    workers: int
    cpus: list
    stripe: int
    core_config: dict
    rcvbuf: int
    sndbuf: int
    max_connections: int
    offload: bool
    ring_data: int                   # bytes of the log's data area
    ring_entries: int = 1 << 16      # descriptors the log holds
    huge_pages: bool = False
    faults: dict | None = None
    pcap: str | None = None              # a file, or '-' for standard output
    pcap_snaplen: int = 262144
    digest_every: int = 0
    recover: bool = False
    tick_ns: int = 5_000_000
    placement: str = "auto"          # runtime/placement.py: auto, inline or separate
    events_capacity: int = 8192          # lifecycle events the queue to the application holds
    debug_worker_config: object = None   # tests only: w -> core options that override worker w's


@dataclass(frozen=True)
class Incident:
    """A worker that was replaced: which, why, by what, from where."""
    role: str
    pid: int | None
    how: str                        # "signal 9", "exit status 1", "hung, stopped", ...
    replaced_by: int | None         # the replacement's pid
    from_position: int              # the log position it replays from (its snapshot's)

    def __str__(self) -> str:
        return (f"{self.role} (pid {self.pid}) ended ({self.how}); replaced by pid {self.replaced_by}, "
                f"replaying the log from position {self.from_position}")


class LiveRuntime:
    def __init__(self, config: LiveConfig):
        self.config = config
        self.plan = strategies.get(config.strategy, live=True)
        self.placement = place(config.placement, workers=config.workers, cpus=config.cpus,
                               replicated=self.plan.replicated)
        self.recover = config.recover and self.plan.replicated
        self.recoveries = 0
        self.incidents: list[Incident] = []   # every replacement, in order
        self.areas: SharedAreas | None = None
        self.supervisor = Forker({"sequencer": self._sequencer_main, "worker": self._worker_main,
                                  "single": self._single_main, "replacement": self._replacement_main})
        self.watchdog = Watchdog()
        self.capture: CaptureParts | None = None
        self.merger: CaptureMerger | None = None
        self.wake_fd = -1
        self.device_fd = -1
        self.link: PacketLink | None = None
        self.state_size = TcpCore.state_size(local_address=config.address, **config.core_config)

    # -- lifecycle --------------------------------------------------------------
    def start(self, device_fd: int, link: PacketLink | None = None) -> None:
        """Start on a TUN's `device_fd`, or on a packet-ring device's `link`
        (its receive socket is then the device's descriptor)."""
        c = self.config
        if link is not None:
            if len(link.transmit_fds) < c.workers:
                raise ValueError(f"the packet ring has {len(link.transmit_fds)} transmit socket(s) for "
                                 f"{c.workers} worker(s)")
            device_fd = link.ring.fileno()
        self.link = link
        self.device_fd = device_fd
        os.set_blocking(device_fd, False)
        self.areas = SharedAreas(workers=c.workers, ring_consumers=self.plan.ring_consumers(c.workers),
                                 max_connections=c.max_connections, rcvbuf=c.rcvbuf, sndbuf=c.sndbuf,
                                 ring_entries=c.ring_entries, ring_data=c.ring_data,
                                 shared_progress=self.plan.shared_progress, state_size=self.state_size,
                                 snapshots=self.recover, shared_state=self.plan.shared_state,
                                 huge_pages=c.huge_pages, events_capacity=c.events_capacity)
        if link is not None:
            self.areas.ring.attach_device(link.ring)
        self.shared = self.plan.prepare(c.workers)
        self.wake_fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        if c.pcap:
            roles = ["sequencer"] + [f"worker {w}" for w in range(c.workers)] if self.plan.sequencer else ["worker 0"]
            try:
                self.capture = CaptureParts(roles, c.pcap_snaplen)
                self.merger = CaptureMerger(self.capture, c.pcap)
            except OSError as exc:
                target = "standard output" if c.pcap == "-" else f"the capture file {c.pcap}"
                raise CaptureError(f"cannot write {target}: {exc.strerror}") from None
        if self.plan.shared_state:
            TcpCore(c.address, **c.core_config, state_buffer=self.areas.state)
        self.supervisor.start()
        if self.merger is not None:
            self.merger.start()
        if self.plan.sequencer:
            self._spawn("sequencer", self.placement.sequencer_cpu, "sequencer")
            for w in range(1 if self.placement.inline else 0, c.workers):
                self._spawn(f"worker {w}", self._cpu(w), "worker", w)
        else:
            self._spawn("worker 0", self._cpu(0), "single")
        self.areas.view.go()

    def _spawn(self, role: str, cpu: int | None, target: str, *args) -> None:
        self.supervisor.spawn(role, cpu, target, *args)
        self.watchdog.spawned(role, time.monotonic_ns())

    def processes(self) -> dict[str, int]:
        """The stack's processes by role: the forker, the sequencer, the workers."""
        found = {"forker": self.supervisor.pid} if self.supervisor.pid is not None else {}
        found.update(self.supervisor.pids)
        return found

    def stop(self) -> None:
        """End every process and close every area.  Idempotent."""
        if self.areas is not None:
            self.areas.view.request_stop()
            self.wake()
        self.supervisor.stop()
        if self.areas is not None:
            self.areas.close()
        if self.wake_fd >= 0:
            os.close(self.wake_fd)
            self.wake_fd = -1
        if self.merger is not None:
            self.merger.close()             # every process has ended: merge what is left
            self.merger = None
        if self.capture is not None:
            self.capture.close()
            self.capture = None
        if getattr(self, "shared", None) is not None:
            self.shared.close()
            self.shared = None

    def wake(self) -> None:
        """Wake the sequencer (or the single process) if it sleeps in poll()."""
        if self.wake_fd >= 0 and self.areas is not None and self.areas.view.sequencer_sleeping:
            try:
                os.eventfd_write(self.wake_fd, 1)
            except BlockingIOError:
                pass

    def watch(self) -> str | None:
        """Reap processes that ended and kill those that hang; replace a dead
        or hung worker when recovery is on.  Returns a one-sentence failure,
        or None while all is well."""
        try:
            for ended in self.supervisor.reap():
                role = ended.role.split()[0]
                if self._replaceable(ended.role) and self._replace_worker(ended.role, ended.pid, ended.how):
                    continue
                return f"a {role} process (pid {ended.pid}) died ({ended.how}); the stack stopped"
            for role, stalled_ns, how in self.watchdog.stalled(time.monotonic_ns(), self._liveness(),
                                                                self._activity):
                pid = self.supervisor.pids.get(role)
                self.supervisor.kill(role)
                if self._replaceable(role) and self._replace_worker(role, pid, f"hung, {how}"):
                    continue
                return (f"{role} (pid {pid}) made no progress for {stalled_ns / 1e9:.1f} s while work was "
                        f"pending ({how}); the stack stopped")
        except ForkerError as exc:
            return f"{exc}; the stack stopped"
        if self.areas.view.diverged:
            return f"replicas diverged at digest round {self.areas.view.diverged_round}; the stack stopped"
        lost = self.areas.view.lost_actions
        if lost is not None:
            return lost + "; the stack stopped"
        return None

    def _replaceable(self, role: str) -> bool:
        return role.startswith("worker ") and self.recover and not self.areas.view.stopping

    def _activity(self, role: str) -> Activity | None:
        """What the kernel says `role`'s process is doing (the watchdog asks
        only about processes that gave no sign of life for a while)."""
        pid = self.supervisor.pids.get(role)
        found = process_activity(pid) if pid is not None else None
        return Activity(*found) if found is not None else None

    def _liveness(self) -> dict[str, Liveness]:
        """What each process shows of itself, for the watchdog."""
        view = self.areas.view
        produced = self.areas.ring.producer_cursor
        samples = {}
        if self.plan.sequencer and "sequencer" in self.supervisor.pids:
            heartbeat = view.sequencer_heartbeat_ns
            if self.placement.inline:
                # replica 0 runs in the sequencer's loop: its waits (room in
                # the event queue) are the sequencer's
                heartbeat = max(heartbeat, view.liveness(0)[0])
            samples["sequencer"] = Liveness(heartbeat, produced, True)
        for w in range(self.config.workers if self.plan.sequencer else 1):
            if f"worker {w}" not in self.supervisor.pids:
                continue
            heartbeat, applied = view.liveness(w)
            # a misd worker owes every record published; mimd and single
            # workers refresh their heartbeat in every wait, idle or not
            pending = applied < produced if self.plan.replicated else True
            samples[f"worker {w}"] = Liveness(heartbeat, applied, pending)
        return samples

    # -- the processes --------------------------------------------------------------
    def _cpu(self, worker: int) -> int:
        return self.placement.worker_cpus[worker]

    def _fault_injector(self, stream: int) -> FaultInjector | None:
        """Direction 0 is kernel->stack (the sequencer); 1 + w is worker w's output."""
        if not self.config.faults:
            return None
        settings = dict(self.config.faults)
        settings["seed"] = int(settings.get("seed", 0)) * 1009 + stream
        return FaultInjector(**settings)

    def _pcap(self, role: str) -> PcapWriter | None:
        """This process's part of the capture (runtime/capture.py), if capturing."""
        return self.capture.writer(role) if self.capture is not None else None

    def _executor(self, core: TcpCore, worker: int) -> Executor:
        a = self.areas
        link = self.link
        ex = Executor(core, a.block, worker, rcv_fd=a.receive.fileno(), snd_fd=a.send.fileno(),
                      sink=Sink.SINK_FD, out_fd=link.transmit_fds[worker] if link else self.device_fd,
                      offload=self.config.offload, events=a.events,
                      pcap=self._pcap(f"worker {worker}"), faults=self._fault_injector(1 + worker),
                      snapshots=a.snapshots if self.recover else None, shared_state=self.plan.shared_state,
                      link_header=link.link_header if link else None)
        ex.measure_latency = True       # live traffic: the stamp-to-output latency is worth its 20 ns
        return ex

    def _run(self, worker: int) -> Run:
        c = self.config
        return Run(worker=worker, workers=c.workers, stripe=c.stripe, shared=self.shared, prefault=False)

    def _core(self, worker: int) -> TcpCore:
        c = self.config
        config = c.core_config
        if c.debug_worker_config is not None:       # the divergence check's test
            config = {**config, **c.debug_worker_config(worker)}
        return self.plan.core(c.address, config, self._run(worker), self.areas.state)

    def _sequencer_main(self) -> None:
        c = self.config
        inline = self._executor(self._core(0), 0) if self.placement.inline else None
        link = self.link
        run_sequencer(self.areas.ring, self.areas.requests, self.areas.block, self.device_fd, self.wake_fd,
                      local_address=c.address, local_address6=c.core_config.get("local_address6"),
                      tick_ns=c.tick_ns, digest_every=c.digest_every,
                      faults=self._fault_injector(0), pcap=self._pcap("sequencer"),
                      checkpoint_every=self.areas.ring.data_size // 4 if self.recover else 0, inline=inline,
                      device_ring=link.ring if link else None, link_mac=link.mac if link else None,
                      peer_mac=link.peer_mac if link else None)
        if inline is not None:
            inline.flush()

    def _worker_main(self, worker: int) -> None:
        ex = self._executor(self._core(worker), worker)
        self.plan.run_log(ex, self.areas.ring, self._run(worker))
        ex.flush()

    def _single_main(self) -> None:
        ex = self._executor(self._core(0), 0)
        link = self.link
        run_single_device(ex, self.device_fd, self.areas.requests, self.wake_fd, tick_ns=self.config.tick_ns,
                          input_faults=self._fault_injector(0), device_ring=link.ring if link else None,
                          link_mac=link.mac if link else None, peer_mac=link.peer_mac if link else None)
        ex.flush()

    def _replacement_main(self, point: recovery.ResumePoint) -> None:
        """A new process for a dead worker (runtime/recovery.py)."""
        core = self._core(point.worker)
        recovery.run_replacement(point, self.areas, self.state_size, core, self._executor(core, point.worker))

    def _replace_worker(self, role: str, pid: int | None, how: str) -> bool:
        """Have the forker start a replacement for `role`, whose process
        `pid` ended (`how`), from its last snapshot; record the incident."""
        worker = int(role.split()[1])
        point = recovery.resume_point(self.areas, worker, self.state_size)
        if point is None:
            return False
        recovery.prepare(self.areas, point)
        self._spawn(role, self._cpu(worker), "replacement", point)
        self.recoveries += 1
        self.incidents.append(Incident(role, pid, how, self.supervisor.pids.get(role), point.seqno))
        return True
