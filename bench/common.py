"""Shared helpers of the benchmark programs in bench/ (not part of the package).

* statistics over repeats: median and spread (min..max, and the spread as a
  fraction of the median), because this 2-core machine is shared and noisy;
* interleaving: every repeat runs every variant once, in a rotated order, so
  drift (another process starting, the CPU clock changing) hits all alike;
* CPU time of reaped children (`getrusage(RUSAGE_CHILDREN)` deltas): the
  replay runner forks its workers and reaps them with waitpid, so their user
  and system time, and their page faults, land there;
* the reference point for memory-bound work: plain memcpy bandwidth with one
  process and with two processes at once on this machine;
* a table printer, JSON writing and a matplotlib import with a clear error.
"""
from __future__ import annotations

import ctypes
import json
import mmap
import os
import platform
import resource
import statistics
import sys
import time

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(BENCH_DIR)
if os.path.join(REPO, "src") not in sys.path:
    sys.path.insert(0, os.path.join(REPO, "src"))


# -- statistics ---------------------------------------------------------------

def summary(values):
    """Median, min, max and relative spread ((max - min) / median) of a list."""
    values = [v for v in values if v is not None]
    if not values:
        return dict(median=None, min=None, max=None, spread=None, n=0)
    med = statistics.median(values)
    return dict(median=med, min=min(values), max=max(values),
                spread=(max(values) - min(values)) / med if med else None, n=len(values))


def fmt_spread(s, digits=2):
    """'12.34 (11.9..12.8)' for a summary()."""
    if s["median"] is None:
        return "-"
    return f"{s['median']:.{digits}f} ({s['min']:.{digits}f}..{s['max']:.{digits}f})"


def interleaved(variants, repeats, run_one, progress=None):
    """Run run_one(variant) `repeats` times per variant, every repeat running
    every variant once, in an order rotated by one each repeat.  Returns
    {variant key: [result, ...]}."""
    out = {v["key"]: [] for v in variants}
    n = len(variants)
    for rep in range(repeats):
        order = variants[rep % n:] + variants[:rep % n]
        if rep % 2:
            order = order[::-1]
        for v in order:
            out[v["key"]].append(run_one(v))
            if progress:
                progress(rep, v)
    return out


# -- CPU time of children ---------------------------------------------------------

class ChildUsage:
    """CPU seconds and page faults of the child processes reaped inside a
    `with` block (RUSAGE_CHILDREN deltas; children must be reaped inside)."""

    def __enter__(self):
        self._before = resource.getrusage(resource.RUSAGE_CHILDREN)
        return self

    def __exit__(self, *exc):
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        b = self._before
        self.user = after.ru_utime - b.ru_utime
        self.system = after.ru_stime - b.ru_stime
        self.cpu = self.user + self.system
        self.minflt = after.ru_minflt - b.ru_minflt
        self.majflt = after.ru_majflt - b.ru_majflt
        self.nvcsw = after.ru_nvcsw - b.ru_nvcsw
        self.nivcsw = after.ru_nivcsw - b.ru_nivcsw
        return False


def proc_tree_cpu(pid):
    """User + system CPU seconds so far of `pid` and all its live
    descendants (from /proc; a process that has exited is not counted)."""
    tick = os.sysconf("SC_CLK_TCK")
    children = {}
    stats = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                text = f.read()
        except OSError:
            continue
        fields = text[text.rindex(")") + 2:].split()
        p = int(entry)
        stats[p] = (int(fields[11]) + int(fields[12])) / tick     # utime, stime
        children.setdefault(int(fields[1]), []).append(p)          # ppid
    total, stack = 0.0, [pid]
    while stack:
        p = stack.pop()
        total += stats.get(p, 0.0)
        stack.extend(children.get(p, []))
    return total


def machine_busy():
    """(busy, total) jiffies of all CPUs from /proc/stat."""
    with open("/proc/stat") as f:
        parts = [int(x) for x in f.readline().split()[1:]]
    idle = parts[3] + parts[4]
    return sum(parts) - idle, sum(parts)


def foreign_cpu(wall_s, busy0, busy1, own_cpu_s):
    """CPUs' worth of work done by other processes during a run: all busy
    time (from /proc/stat, 10 ms ticks) minus our own and our children's."""
    tick = os.sysconf("SC_CLK_TCK")
    return max(0.0, ((busy1 - busy0) / tick - own_cpu_s) / wall_s) if wall_s > 0 else 0.0


def wait_quiet(limit_s, threshold=0.2, window_s=0.3):
    """Wait (at most limit_s) until the machine is nearly idle: less than
    `threshold` CPUs busy over `window_s`.  Returns the busy CPUs last seen."""
    tick = os.sysconf("SC_CLK_TCK")
    deadline = time.monotonic() + limit_s
    while True:
        b0, _ = machine_busy()
        time.sleep(window_s)
        b1, _ = machine_busy()
        busy = (b1 - b0) / tick / window_s
        if busy < threshold or time.monotonic() >= deadline:
            return busy


# -- the memcpy reference -------------------------------------------------------------

_libc = ctypes.CDLL(None)
_libc.memcpy.restype = ctypes.c_void_p
_libc.memcpy.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t]


def _addr(buf):
    return ctypes.addressof(ctypes.c_char.from_buffer(buf))


def memcpy_bandwidth(total=256 << 20, dst_size=4 << 20, chunk=64 << 10, processes=1, repeats=5):
    """GB/s of plain memcpy from a `total`-byte source into a `dst_size`
    receive area (the replay's shape: a big ring read once, a small receive
    buffer written round and round), with `processes` pinned processes each
    copying an equal share of the source at the same time.  Median of repeats."""
    src = mmap.mmap(-1, total)
    src.write(b"\x5a" * total)                       # populate the pages
    dst = mmap.mmap(-1, dst_size * processes)
    cpus = sorted(os.sched_getaffinity(0))
    results = []
    for _ in range(repeats):
        go_r, go_w = os.pipe()
        done_r, done_w = os.pipe()
        pids = []
        try:
            share = total // processes
            for i in range(processes):
                pid = os.fork()
                if pid == 0:                             # pragma: no cover - child
                    try:
                        os.sched_setaffinity(0, {cpus[i % len(cpus)]})
                        os.read(go_r, 1)
                        t0 = time.perf_counter_ns()
                        d = _addr(dst) + i * dst_size
                        s = _addr(src)
                        off = i * share
                        while off < (i + 1) * share:
                            n = min(chunk, (i + 1) * share - off)
                            _libc.memcpy(d + (off % dst_size), s + off, n)
                            off += n
                        t1 = time.perf_counter_ns()
                        os.write(done_w, f"{t0} {t1}\n".encode().ljust(64))
                    finally:
                        os._exit(0)
                pids.append(pid)
            time.sleep(0.05)
            os.write(go_w, b"x" * processes)
            spans = [os.read(done_r, 64).split() for _ in range(processes)]
            t0 = min(int(a) for a, _ in spans)
            t1 = max(int(b) for _, b in spans)
            results.append(total / (t1 - t0))        # bytes per ns = GB/s
        finally:
            for pid in pids:
                os.waitpid(pid, 0)
            for fd in (go_r, go_w, done_r, done_w):
                os.close(fd)
    src.close()
    dst.close()
    return summary(results)


# -- output ---------------------------------------------------------------------------

def metadata(argv=None):
    return dict(
        command=" ".join(argv if argv is not None else sys.argv),
        host=platform.node(), python=platform.python_version(), kernel=platform.release(),
        cpus=len(os.sched_getaffinity(0)), cpu_model=_cpu_model(),
        loadavg=os.getloadavg(), time=time.strftime("%Y-%m-%dT%H:%M:%S"),
    )


def _cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def print_table(rows, columns, out=sys.stdout):
    """rows: list of dicts; columns: list of (header, key or callable)."""
    cells = [[h for h, _ in columns]]
    for r in rows:
        cells.append([str(k(r) if callable(k) else r.get(k, "")) for _, k in columns])
    widths = [max(len(c[i]) for c in cells) for i in range(len(columns))]
    for j, line in enumerate(cells):
        print("  ".join(c.rjust(w) for c, w in zip(line, widths)), file=out)
        if j == 0:
            print("  ".join("-" * w for w in widths), file=out)
    out.flush()


def write_json(path, records):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(records, f, indent=1, default=float)
        f.write("\n")


def pyplot():
    """matplotlib.pyplot on the Agg backend, or SystemExit with one sentence."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        return plt
    except ImportError:
        raise SystemExit("--plot needs matplotlib: make bench installs the benchmarks' extra "
                         "(pip install -e '.[bench]')") from None
