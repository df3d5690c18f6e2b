#!/usr/bin/env python3
"""End to end: the stock iperf3 client against three receivers, same run.

Every receiver runs in network namespaces this program creates (and deletes,
also on failure or Ctrl-C); nothing leaves them:

  kernel      the Linux kernel's `iperf3 -s` in a second namespace, joined to
              the client's by a veth pair (MTU 1500): the reference
  misdtcp     `misdtcp serve --app iperf3` over a TUN inside the client's
              namespace (MTU 1500), with offload (TSO/GSO super-frames and
              checksum offload) and without; strategies misd/mimd; workers 1..N

One variant = one fresh set of namespaces + one `iperf3 -c ... -t SECONDS -J`.
Variants are interleaved over repeats (each repeat runs every variant once,
order rotated); the table shows the median and min..max of the Gbit/s the
client's receiver-side sum reports, the ratio to the kernel receiver's median
in the same run, and CPU use:

  client %    iperf3's own host_total (the sender process, user + system)
  server %    the receiving process tree, sampled from /proc just before and
              after the client runs (for misdtcp: serve and its workers; for
              the kernel: the iperf3 -s process; receive softirq work that the
              kernel does on the sender's CPU is not in it)
  machine %   all CPUs busy during the run, of 100% x CPUs (both sides, plus
              anything else running on this shared machine)

    .venv/bin/python bench/e2e.py --quick
    .venv/bin/python bench/e2e.py --seconds 5 --repeats 3 --json bench/results/e2e.json --plot bench/plots/e2e.png

Needs root (namespaces, TUN) and iperf3.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

from misdtcp.device.netns import Netns, NetnsError
from misdtcp.device.veth import VethPair
from misdtcp.testing.lab import reap_stale  # noqa: E402

PREFIX = "misdtcp-bench"
KERNEL_CIDR = "10.77.0.1/24"
STACK_ADDR = "10.77.0.2"
SERVE_START_TIMEOUT = 20.0


def parse_args(argv=None):
    ncpu = len(os.sched_getaffinity(0))
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=5.0, help="length of each iperf3 run [5]")
    p.add_argument("--repeats", type=int, default=3, help="runs per variant [3]")
    p.add_argument("--workers", default=None, help=f"worker counts, e.g. 1,2 [1..{ncpu}]")
    p.add_argument("--strategies", default="misd,mimd", help="misdtcp strategies [misd,mimd]")
    p.add_argument("--offload", default="on,off", help="misdtcp offload settings [on,off]")
    p.add_argument("--quick", action="store_true",
                   help="under 60 s: 2 s runs, 1 repeat, kernel + misd 1..N on/off + mimd N on")
    p.add_argument("--json", help="write the records to this file")
    p.add_argument("--plot", help="write Gbit/s per receiver to this PNG")
    args = p.parse_args(argv)
    args.workers = [int(x) for x in args.workers.split(",")] if args.workers else list(range(1, ncpu + 1))
    args.strategies = [s for s in args.strategies.split(",") if s]
    args.offload = [o == "on" for o in args.offload.split(",") if o]
    if args.quick:
        args.seconds = min(args.seconds, 2.0)
        args.repeats = 1
    if args.seconds <= 0 or args.seconds > 120:
        p.error("--seconds must be in (0, 120]")
    return args


def variants_for(args):
    vs = [dict(key=("kernel", None, None, None), receiver="kernel", offload=None, strategy=None, workers=None)]
    for offload in args.offload:
        for strategy in args.strategies:
            for w in args.workers:
                if args.quick and (strategy == "mimd" and (w != max(args.workers) or not offload)):
                    continue
                vs.append(dict(key=("misdtcp", offload, strategy, w), receiver="misdtcp",
                               offload=offload, strategy=strategy, workers=w))
    return vs


def _client(ns, server, seconds):
    proc = ns.run(["iperf3", "-c", server, "-t", f"{seconds:g}", "-J"], check=False, timeout=seconds + 12)
    try:
        result = json.loads(proc.stdout)
    except ValueError:
        raise RuntimeError(f"iperf3 client printed no JSON (exit {proc.returncode}): "
                           f"{proc.stderr.decode(errors='replace').strip()[-200:]}") from None
    if "error" in result:
        raise RuntimeError(f"iperf3: {result['error']}")
    end = result["end"]
    cpu = end.get("cpu_utilization_percent", {})
    return dict(gbps=end["sum_received"]["bits_per_second"] / 1e9,
                retransmits=end.get("sum_sent", {}).get("retransmits"),
                client_cpu=cpu.get("host_total"), remote_cpu_reported=cpu.get("remote_total"))


def _timed_client(ns, server_pid, server, seconds):
    busy0, total0 = common.machine_busy()
    cpu0 = common.proc_tree_cpu(server_pid)
    t0 = time.monotonic()
    out = _client(ns, server, seconds)
    wall = time.monotonic() - t0
    cpu1 = common.proc_tree_cpu(server_pid)
    busy1, total1 = common.machine_busy()
    out["server_cpu"] = 100 * (cpu1 - cpu0) / wall
    out["machine_cpu"] = 100 * len(os.sched_getaffinity(0)) * (busy1 - busy0) / max(1, total1 - total0)
    return out


def _wait_port(ns, addr, port, deadline):
    """Bounded wait until something accepts TCP on addr:port inside ns."""
    probe = ("import socket,sys\ns=socket.socket();s.settimeout(0.5)\n"
             f"sys.exit(0 if s.connect_ex(({addr!r},{port}))==0 else 1)")
    while time.monotonic() < deadline:
        if ns.run([sys.executable, "-c", probe], check=False, timeout=5).returncode == 0:
            return True
        time.sleep(0.2)
    return False


def run_kernel(seconds):
    client = Netns(prefix=PREFIX).create()
    server = veth = None
    try:
        server = Netns(prefix=PREFIX).create()
        veth = VethPair(client, server, cidr_a="10.78.0.1/24", cidr_b="10.78.0.2/24").create()
        # not -1: the readiness probe is a connection of its own, which a
        # one-off server would take as its test
        proc = server.popen(["iperf3", "-s"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if not _wait_port(client, veth.addr_b, 5201, time.monotonic() + 10):
            raise RuntimeError("the kernel's iperf3 -s did not start listening within 10 s")
        time.sleep(0.2)
        return _timed_client(client, proc.pid, veth.addr_b, seconds)
    finally:
        if veth is not None:
            veth.delete()
        if server is not None:
            server.delete()
        client.delete()


def run_misdtcp(seconds, workers, strategy, offload):
    ns = Netns(prefix=PREFIX).create()
    proc = None
    lines = []
    try:
        ns.run(["sysctl", "-q", "-w", "net.ipv6.conf.all.disable_ipv6=1"], check=False)
        ns.run(["sysctl", "-q", "-w", "net.ipv6.conf.default.disable_ipv6=1"], check=False)
        env = dict(os.environ)
        src = os.path.join(common.REPO, "src")
        env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        argv = [sys.executable, "-m", "misdtcp", "serve", "--tun", "misd0", "--address", STACK_ADDR,
                "--kernel-address", KERNEL_CIDR, "--app", "iperf3", "--workers", str(workers),
                "--strategy", strategy, "--offload" if offload else "--no-offload",
                "--interval", "3600", "--duration", f"{seconds + 40:g}"]
        proc = ns.popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
        ready = threading.Event()

        def reader():
            for raw in proc.stdout:
                line = raw.decode(errors="replace").rstrip()
                lines.append(line)
                if line.startswith("misdtcp: serving"):
                    ready.set()
        threading.Thread(target=reader, daemon=True).start()
        deadline = time.monotonic() + SERVE_START_TIMEOUT
        while not ready.is_set() and time.monotonic() < deadline and proc.poll() is None:
            ready.wait(0.1)
        if not ready.is_set():
            raise RuntimeError(f"misdtcp serve did not start within {SERVE_START_TIMEOUT:g} s: "
                               + " | ".join(lines[-3:]))
        time.sleep(0.2)
        return _timed_client(ns, proc.pid, STACK_ADDR, seconds)
    finally:
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        ns.delete()


def run_variant(v, seconds):
    try:
        if v["receiver"] == "kernel":
            return run_kernel(seconds)
        return run_misdtcp(seconds, v["workers"], v["strategy"], v["offload"])
    except (RuntimeError, OSError, ValueError, NetnsError, subprocess.SubprocessError) as exc:
        return dict(error=str(exc))


def label(v):
    if v["receiver"] == "kernel":
        return "kernel iperf3 -s (veth)"
    return f"misdtcp {v['strategy']} {v['workers']}w offload {'on' if v['offload'] else 'off'}"


def main(argv=None):
    args = parse_args(argv)
    if os.geteuid() != 0:
        print("e2e.py needs root: it creates network namespaces and a TUN device.", file=sys.stderr)
        return 2
    if shutil.which("iperf3") is None:
        print("e2e.py needs the iperf3 program (apt-get install iperf3).", file=sys.stderr)
        return 2
    reap_stale(PREFIX)
    meta = common.metadata()
    variants = variants_for(args)
    print(f"end to end: iperf3 client -> receiver, {args.seconds:g} s per run, {args.repeats} repeat(s), "
          f"{len(variants)} variants, {meta['cpus']} CPUs, load {meta['loadavg'][0]:.2f}", flush=True)

    def progress(rep, v):
        r = raw[v["key"]][-1] if raw.get(v["key"]) else None
        text = f"{r['gbps']:.2f} Gbit/s" if r and "gbps" in r else f"failed: {r.get('error') if r else '?'}"
        print(f"  [{rep + 1}/{args.repeats}] {label(v):40} {text}", flush=True)

    raw = {}

    def run_one(v):
        r = run_variant(v, args.seconds)
        raw.setdefault(v["key"], []).append(r)
        return r
    common.interleaved(variants, args.repeats, run_one, progress)

    kernel_runs = [r["gbps"] for r in raw[variants[0]["key"]] if "gbps" in r]
    kernel = common.summary(kernel_runs)["median"]
    records = []
    for v in variants:
        runs = raw[v["key"]]
        ok = [r for r in runs if "gbps" in r]
        g = common.summary([r["gbps"] for r in ok])
        med = lambda k: common.summary([r[k] for r in ok if r.get(k) is not None])["median"]  # noqa: E731
        records.append(dict(
            receiver=v["receiver"], offload=v["offload"], strategy=v["strategy"], workers=v["workers"],
            gbps=g["median"], gbps_min=g["min"], gbps_max=g["max"], runs=len(ok), failures=len(runs) - len(ok),
            errors=[r["error"] for r in runs if "error" in r],
            ratio_to_kernel=(g["median"] / kernel) if (g["median"] is not None and kernel) else None,
            client_cpu=med("client_cpu"), server_cpu=med("server_cpu"), machine_cpu=med("machine_cpu"),
            remote_cpu_reported=med("remote_cpu_reported"), retransmits=med("retransmits"),
            seconds=args.seconds, repeats=args.repeats, run=meta))
    print()
    common.print_table(records, [
        ("receiver", label_of),
        ("Gbit/s", lambda r: f"{r['gbps']:.2f} ({r['gbps_min']:.2f}..{r['gbps_max']:.2f})"
         if r["gbps"] is not None else "failed"),
        ("/kernel", lambda r: f"{r['ratio_to_kernel']:.2f}" if r["ratio_to_kernel"] is not None else "-"),
        ("client %", lambda r: _pct(r["client_cpu"])),
        ("server %", lambda r: _pct(r["server_cpu"])),
        ("machine %", lambda r: _pct(r["machine_cpu"])),
        ("runs", lambda r: f"{r['runs']}/{r['runs'] + r['failures']}"),
    ])
    for r in records:
        for e in r["errors"][:1]:
            print(f"  {label_of(r)}: {e}")
    if args.json:
        common.write_json(args.json, records)
        print(f"wrote {args.json}")
    if args.plot:
        plot(records, args.plot)
        print(f"wrote {args.plot}")
    return 0 if all(r["runs"] for r in records) else 1


def label_of(r):
    if r["receiver"] == "kernel":
        return "kernel iperf3 -s (veth)"
    return f"misdtcp {r['strategy']} {r['workers']}w offload {'on' if r['offload'] else 'off'}"


def _pct(v):
    return f"{v:.0f}" if v is not None else "-"


def plot(records, path):
    plt = common.pyplot()
    fig, ax = plt.subplots(figsize=(max(6, 0.7 * len(records) + 2), 4.2))
    names = [label_of(r).replace("misdtcp ", "").replace(" offload ", "\noffload ") for r in records]
    y = [r["gbps"] or 0 for r in records]
    err = [[(r["gbps"] - r["gbps_min"]) if r["gbps"] else 0 for r in records],
           [(r["gbps_max"] - r["gbps"]) if r["gbps"] else 0 for r in records]]
    colors = ["grey" if r["receiver"] == "kernel" else ("C0" if r["strategy"] == "misd" else "C1")
              for r in records]
    ax.bar(range(len(records)), y, yerr=err, color=colors, capsize=3)
    ax.axhline(5.0, color="red", ls="--", lw=0.8, label="target 5 Gbit/s (offload)")
    ax.set_xticks(range(len(records)))
    ax.set_xticklabels(names, fontsize=7)
    ax.set_ylabel("Gbit/s (iperf3, median of repeats)")
    ax.set_title("iperf3 client -> receiver, one TCP stream, same run")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
