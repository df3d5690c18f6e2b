"""The kill campaign: worker recovery under fire, checked byte for byte.

Each round creates its own namespace and TUN (docs/DESIGN.md, "Network
safety"), starts a misd stack with recovery on, and has a kernel client
inside the namespace send `connections` streams of random bytes one after
another, through seeded faults in both directions (drop, reorder,
duplicate, corrupt).  While the bytes arrive, the round SIGKILLs random
workers at random moments (a point in the stream drawn from the seed) and
SIGSTOPs one, which the watchdog must notice and replace.  Everything is
drawn from the round's seed (the stack's secret too), so a failing round is
run again with the same seed.

A round passes when every stream arrives byte-exact (SHA-256 against the
sender's), every kill and the stop were recovered (one replacement each),
the stack reports no failure, and afterwards nothing is left: no process
the stack ever had, no holder of its shared memory, no TUN.

`tests/test_kill_campaign.py` runs a few seeded rounds sized for CI;
`tools/kill_campaign.py` runs as many as asked.
"""
from __future__ import annotations

import hashlib
import os
import random
import select
import signal
import subprocess
import time
from dataclasses import dataclass, field

from misdtcp.api import Stack
from misdtcp.device.netns import Netns
from misdtcp.device.tun import Tun
from misdtcp.testing.procfs import alive, holders_of, memfds_of

KERNEL_CIDR = "10.77.0.1/24"
STACK_ADDR = "10.77.0.2"
PORT = 9

# Sends each stream on its own connection, one after another; prints the
# byte count and SHA-256 of each, then "done".
SENDER = """
import hashlib, os, socket, sys
addr, port, sizes = sys.argv[1], int(sys.argv[2]), [int(n) for n in sys.argv[3:]]
for size in sizes:
    s = socket.create_connection((addr, port), timeout=60)
    h = hashlib.sha256()
    sent = 0
    while sent < size:
        chunk = os.urandom(min(1 << 20, size - sent))
        s.sendall(chunk)
        h.update(chunk)
        sent += len(chunk)
    s.shutdown(socket.SHUT_WR)
    s.settimeout(60)
    s.recv(1)
    s.close()
    print(sent, h.hexdigest(), flush=True)
print("done", flush=True)
"""


@dataclass
class Action:
    at: int                 # bytes received (over all streams) when it happens
    signal: int             # SIGKILL or SIGSTOP
    worker: int


@dataclass
class RoundResult:
    seed: int
    workers: int
    offload: bool
    ring_size: int
    placement: str = ""
    streams: list = field(default_factory=list)      # (bytes, sha256 matches)
    actions: list = field(default_factory=list)      # (at, signal name, worker, pid)
    recoveries: int = 0
    failure: str | None = None
    leftovers: list = field(default_factory=list)    # what was left behind
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return (self.failure is None and not self.leftovers and self.streams
                and all(match for _, match in self.streams) and self.recoveries == len(self.actions))

    def summary(self) -> str:
        what = ", ".join(f"{name} w{w}@{at >> 20}MiB" for at, name, w, _ in self.actions)
        state = "ok" if self.ok else f"FAILED: {self.failure or self.leftovers or self.streams}"
        return (f"seed {self.seed}: {self.workers} worker(s), {self.placement or '?'} placement, "
                f"offload {'on' if self.offload else 'off'}, "
                f"log {self.ring_size >> 20} MiB, {len(self.streams)} stream(s), {what or 'no actions'}, "
                f"{self.recoveries} recoveries, {self.seconds:.1f} s: {state}")


def plan(rng: random.Random, victims: list[int], total: int, kills: int, stop_one: bool) -> list[Action]:
    """Random moments (points in the received stream, away from its very
    ends) and random victims among `victims`: `kills` SIGKILLs -- a third of
    them twice at the same moment, so the replacement is killed as soon as it
    exists, part-way through its replay -- and, if asked, one SIGSTOP."""
    actions = []
    for _ in range(kills):
        at, victim = rng.randrange(total // 10, total * 9 // 10), rng.choice(victims)
        actions.append(Action(at, signal.SIGKILL, victim))
        if rng.random() < 1 / 3:
            actions.append(Action(at, signal.SIGKILL, victim))
    if stop_one:
        actions.append(Action(rng.randrange(total // 10, total * 9 // 10), signal.SIGSTOP,
                              rng.choice(victims)))
    return sorted(actions, key=lambda a: a.at)       # stable: a doubled kill stays a pair


def run_round(seed: int, workers: int, *, total: int = 24 << 20, connections: int = 2, kills: int = 2,
              stop_one: bool = True, faults: bool = True, timeout: float = 60.0) -> RoundResult:
    rng = random.Random(seed)
    offload = rng.random() < 0.5
    ring_size = rng.choice([1 << 20, 4 << 20, 8 << 20])
    # inline, replica 0 runs in the sequencer (it dies with it): the victims
    # are the workers that are processes of their own
    placement = rng.choice(["separate", "auto"])
    result = RoundResult(seed, workers, offload, ring_size)
    sizes = [total // connections] * connections
    fault_settings = dict(drop=0.01, reorder=0.01, duplicate=0.005, corrupt=0.001, seed=seed) if faults else None
    started = time.monotonic()
    ns = Netns().create()
    tun = stack = sender = None
    seen_pids: set[int] = set()
    signalled: set[int] = set()
    memfds: set = set()
    try:
        ns.run(["sysctl", "-q", "-w", "net.ipv6.conf.all.disable_ipv6=1"])
        ns.run(["sysctl", "-q", "-w", "net.ipv6.conf.default.disable_ipv6=1"])
        tun = Tun("misd0", address=KERNEL_CIDR, offload=offload, nonblocking=True, netns=ns)
        stack = Stack(tun, address=STACK_ADDR, workers=workers, ring_size=ring_size, faults=fault_settings,
                      secret=seed, rcvbuf=rng.choice([256 << 10, 1 << 20, 4 << 20]), placement=placement).start()
        result.placement = stack.placement
        victims = [w for w in range(workers) if f"worker {w}" in stack.processes()]
        actions = plan(rng, victims, sum(sizes), kills, stop_one)
        seen_pids.update(stack.processes().values())
        memfds = memfds_of(stack.processes().values()) - memfds_of([os.getpid()])
        listener = stack.listen(PORT)
        sender = ns.python(["-c", SENDER, STACK_ADDR, str(PORT), *map(str, sizes)],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        received = 0
        pending = list(actions)
        for _ in sizes:
            conn, _ = listener.accept(timeout=timeout)
            digest = hashlib.sha256()
            got = 0
            while True:
                view = conn.recv_view(timeout=timeout)
                if not len(view):
                    break
                digest.update(view)
                got += len(view)
                conn.release(view)
                while pending and received + got >= pending[0].at:
                    action = pending.pop(0)
                    pid = _victim(stack, action.worker, signalled, timeout)
                    signalled.add(pid)
                    seen_pids.add(pid)
                    os.kill(pid, action.signal)
                    result.actions.append((action.at, signal.Signals(action.signal).name, action.worker, pid))
            conn.close()
            received += got
            line = _read_line(sender, timeout)
            count, sent_digest = line.split()
            result.streams.append((got, got == int(count) and digest.hexdigest() == sent_digest))
        if _read_line(sender, timeout) != "done":
            result.failure = "the sender did not finish"
        result.recoveries = stack.recoveries
        seen_pids.update(stack.processes().values())
        # every recovery must be one this round caused
        for incident in stack.incidents:
            if incident.pid not in signalled:
                result.failure = f"an unexpected recovery: {incident}"
            seen_pids.add(incident.replaced_by)
        if stack.failure:
            result.failure = stack.failure
    except Exception as exc:  # noqa: BLE001 - a round reports what went wrong, the campaign goes on
        result.failure = f"{type(exc).__name__}: {exc}"
        if stack is not None and stack.failure:
            result.failure += f" ({stack.failure})"
    finally:
        if sender is not None:
            sender.kill()
            sender.wait(timeout=10)
        if stack is not None:
            seen_pids.update(stack.processes().values())
            stack.stop()
        if tun is not None:
            tun.close()
            if ns.ip("link", "show", "misd0", check=False).returncode == 0:
                result.leftovers.append("the TUN misd0")
        ns.delete()
    result.leftovers += [f"process {pid}" for pid in sorted(seen_pids) if alive(pid)]
    if memfds and holders_of(memfds):
        result.leftovers.append(f"shared memory held by {sorted(holders_of(memfds))}")
    result.seconds = time.monotonic() - started
    return result


def _victim(stack, worker: int, signalled: set[int], timeout: float) -> int:
    """The process that now runs `worker`.  Right after a kill or a stop it
    is still the one already hit (its replacement comes within a second):
    wait for the replacement, so every action hits a live process."""
    deadline = time.monotonic() + timeout
    while True:
        pid = stack.processes().get(f"worker {worker}")
        if pid is not None and pid not in signalled:
            return pid
        stack.check()
        if time.monotonic() > deadline:
            raise TimeoutError(f"worker {worker} was not replaced within {timeout:g} s")
        time.sleep(0.005)


def _read_line(proc: subprocess.Popen, timeout: float) -> str:
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    if not ready:
        raise TimeoutError(f"the sender said nothing within {timeout:g} s")
    return proc.stdout.readline().decode().strip()
