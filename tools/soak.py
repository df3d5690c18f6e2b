#!/usr/bin/env python3
"""Soak: misdtcp serving iperf3 for many minutes, memory and throughput sampled.

    sudo .venv/bin/python tools/soak.py --minutes 10 --json soak.json

Creates its own network namespace with a TUN (kernel side 10.77.0.1/24,
stack 10.77.0.2; DESIGN.md, "Network safety"), runs the stack in this
process with the iperf3 app, and runs the stock iperf3 client inside the
namespace in back-to-back tests of ``--test-seconds`` (default 60) until
``--minutes`` have passed.  Every ``--interval`` seconds (default 10) it
samples the resident memory of every stack process (sequencer, workers, and
this application process) and the throughput over the interval, computed
from the stack's own counters (bytes copied into receive buffers, bytes
sent).  It prints a table as it goes, a summary at the end, and writes
everything to ``--json``.  Exit status 1 if an iperf3 test failed or the
stack stopped, 2 for a usage problem.  Not part of the test suite.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))

from misdtcp.api import Stack, StackError  # noqa: E402
from misdtcp.apps import iperf3  # noqa: E402
from misdtcp.device.netns import Netns  # noqa: E402
from misdtcp.device.tun import Tun  # noqa: E402

KERNEL_CIDR = "10.77.0.1/24"
STACK_ADDR = "10.77.0.2"


def status_kb(pid: int) -> dict:
    """VmRSS and RssAnon of a process, kB (0 if it is gone)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            fields = dict(line.split(":", 1) for line in f if ":" in line)
    except FileNotFoundError:
        return {"rss": 0, "anon": 0}
    return {"rss": int(fields["VmRSS"].split()[0]), "anon": int(fields["RssAnon"].split()[0])}


class Soak:
    def __init__(self, args):
        self.args = args
        self.samples: list[dict] = []
        self.tests: list[dict] = []
        self.failures: list[str] = []
        self.started = 0.0
        self.boundaries = 0           # iperf3 tests started plus tests ended

    # -- measurement ------------------------------------------------------------
    def counters(self, stack) -> tuple[int, int]:
        copied = sum(c["bytes_copied"] for c in stack.worker_counters())
        stats, _ = stack.core_stats()
        return copied, stats["data_bytes_out"]

    def sample(self, stack, previous):
        now = time.monotonic()
        # an interval in which a test started or ended is not a throughput sample
        boundary = self.boundaries != previous.get("boundaries", 0)
        previous["boundaries"] = self.boundaries
        rx, tx = self.counters(stack)
        stats, drops = stack.core_stats()
        processes = {f"{role}:{pid}": status_kb(pid) for role, pid in self.roles(stack)}
        sample = {
            "t": round(now - self.started, 1),
            "test_boundary": boundary,
            "rx_gbit_s": round((rx - previous["rx"]) * 8 / (now - previous["t"]) / 1e9, 3),
            "tx_gbit_s": round((tx - previous["tx"]) * 8 / (now - previous["t"]) / 1e9, 3),
            "rss_kb": sum(p["rss"] for p in processes.values()),
            "anon_kb": sum(p["anon"] for p in processes.values()),
            "processes": processes,
            "retransmits": stats["retransmits"],
            "open_connections": stats["conns_opened"] - stats["conns_closed"],
            "drops": drops,
        }
        self.samples.append(sample)
        previous.update(t=now, rx=rx, tx=tx)
        print(f"{sample['t']:>7.0f} s  {sample['rx_gbit_s']:>8.2f}  {sample['tx_gbit_s']:>8.2f}  "
              f"{sample['rss_kb'] / 1024:>9.1f}  {sample['anon_kb'] / 1024:>9.1f}  "
              f"{sample['open_connections']:>5}  {sample['retransmits']:>8}"
              + ("  (a test started or ended)" if boundary else ""), flush=True)
        return sample

    @staticmethod
    def roles(stack):
        pids = list(stack.processes().values())
        if stack.strategy == "single":
            yield "single", pids[0]
        else:
            yield "sequencer", pids[0]
            for w, pid in enumerate(pids[1:]):
                yield f"worker{w}", pid
        yield "app", os.getpid()

    # -- the iperf3 client ------------------------------------------------------------
    def client_loop(self, ns, stop: threading.Event):
        n = 0
        while not stop.is_set():
            remaining = self.deadline - time.monotonic()
            seconds = int(min(self.args.test_seconds, remaining))
            if seconds < 1:
                break
            reverse = self.args.reverse or (self.args.alternate and n % 2 == 1)
            argv = ["iperf3", "-c", STACK_ADDR, "-t", str(seconds), "-J"] + (["-R"] if reverse else []) \
                + (["-P", str(self.args.parallel)] if self.args.parallel > 1 else [])
            self.boundaries += 1
            proc = ns.run(argv, check=False, timeout=seconds + 60)
            self.boundaries += 1
            try:
                result = json.loads(proc.stdout or b"{}")
            except json.JSONDecodeError:
                result = {"error": (proc.stderr or b"").decode(errors="replace")[-200:]}
            entry = {"n": n, "reverse": reverse, "seconds": seconds, "status": proc.returncode}
            if proc.returncode == 0 and "end" in result:
                end = result["end"]
                entry.update(sent_bytes=end["sum_sent"]["bytes"], received_bytes=end["sum_received"]["bytes"],
                             gbit_s=round(end["sum_received"]["bits_per_second"] / 1e9, 3),
                             retransmits=end["sum_sent"].get("retransmits"))
            else:
                entry["error"] = result.get("error", "no result")
                self.failures.append(f"iperf3 test {n} failed: {entry['error']}")
            self.tests.append(entry)
            print(f"# iperf3 test {n}{' (-R)' if reverse else ''}: "
                  + (f"{entry['gbit_s']:.2f} Gbit/s" if "gbit_s" in entry else f"FAILED ({entry['error']})"),
                  flush=True)
            n += 1

    # -- run ------------------------------------------------------------------------
    def run(self) -> int:
        a = self.args
        ns = Netns(prefix="misdtcp-soak").create()
        tun = None
        stack = None
        stop = threading.Event()
        try:
            ns.run(["sysctl", "-q", "-w", "net.ipv6.conf.all.disable_ipv6=1"])
            tun = Tun("misd0", address=KERNEL_CIDR, offload=not a.no_offload, nonblocking=True, netns=ns)
            stack = Stack(tun, address=STACK_ADDR, workers=a.workers, strategy=a.strategy,
                          offload=not a.no_offload).start()
            threading.Thread(target=iperf3.serve, args=(stack, 5201),
                             kwargs={"stop": stop, "log": lambda text: None}, daemon=True).start()
            time.sleep(0.1)
            self.started = time.monotonic()
            self.deadline = self.started + a.minutes * 60
            client = threading.Thread(target=self.client_loop, args=(ns, stop), daemon=True)
            client.start()
            print(f"# misdtcp soak: {a.minutes:g} min, strategy {a.strategy}, {stack.workers} workers, "
                  f"iperf3 tests of {a.test_seconds} s, a sample every {a.interval:g} s", flush=True)
            print(f"{'time':>9}  {'rx Gb/s':>8}  {'tx Gb/s':>8}  {'RSS MiB':>9}  {'anon MiB':>9}  "
                  f"{'conns':>5}  {'retrans':>8}", flush=True)
            rx, tx = self.counters(stack)
            previous = {"t": time.monotonic(), "rx": rx, "tx": tx, "boundaries": 0}
            self.sample(stack, previous)
            while client.is_alive():
                client.join(min(a.interval, max(0.0, previous["t"] + a.interval - time.monotonic())))
                if time.monotonic() - previous["t"] >= a.interval - 0.01 or not client.is_alive():
                    self.sample(stack, previous)
                stack.check()
        except StackError as exc:
            self.failures.append(f"the stack stopped: {exc}")
        except KeyboardInterrupt:
            self.failures.append("interrupted")
        finally:
            stop.set()
            if stack is not None:
                stack.stop()
            if tun is not None:
                tun.close()
            ns.delete()
        return self.report()

    def report(self) -> int:
        busy = [s for s in self.samples[1:] if not s["test_boundary"]]
        rss = [s["rss_kb"] for s in self.samples]
        anon = [s["anon_kb"] for s in self.samples]
        # growth after the first minute (the ring and buffers are touched by then)
        settled = [s for s in self.samples if s["t"] >= 60] or self.samples
        summary = {
            "minutes": self.args.minutes, "strategy": self.args.strategy, "workers": self.args.workers,
            "iperf3_tests": len(self.tests), "iperf3_failures": len(self.failures),
            "gbit_s_mean": round(sum(s["rx_gbit_s"] + s["tx_gbit_s"] for s in busy) / len(busy), 3) if busy else 0,
            "gbit_s_min": min((s["rx_gbit_s"] + s["tx_gbit_s"] for s in busy), default=0),
            "gbit_s_max": max((s["rx_gbit_s"] + s["tx_gbit_s"] for s in busy), default=0),
            "rss_mib_first": round(rss[0] / 1024, 1) if rss else 0,
            "rss_mib_max": round(max(rss) / 1024, 1) if rss else 0,
            "rss_mib_last": round(rss[-1] / 1024, 1) if rss else 0,
            "anon_mib_first": round(anon[0] / 1024, 1) if anon else 0,
            "anon_mib_last": round(anon[-1] / 1024, 1) if anon else 0,
            "rss_growth_after_first_minute_mib": round((settled[-1]["rss_kb"] - settled[0]["rss_kb"]) / 1024, 1),
            "failures": self.failures,
        }
        print("# summary: " + ", ".join(f"{k}={v}" for k, v in summary.items() if k != "failures"), flush=True)
        for failure in self.failures:
            print(f"# FAILED: {failure}", flush=True)
        if self.args.json:
            with open(self.args.json, "w") as f:
                json.dump({"summary": summary, "samples": self.samples, "tests": self.tests}, f, indent=1)
        return 1 if self.failures else 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--test-seconds", type=int, default=60, help="length of each iperf3 test [60]")
    parser.add_argument("--interval", type=float, default=10.0, help="seconds between samples [10]")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--strategy", default="misd", choices=("misd", "single", "mimd"))
    parser.add_argument("--parallel", type=int, default=1, help="iperf3 -P streams [1]")
    parser.add_argument("--reverse", action="store_true", help="every test with -R (the stack sends)")
    parser.add_argument("--alternate", action="store_true", help="alternate normal and -R tests")
    parser.add_argument("--no-offload", action="store_true", help="no GSO/checksum offload on the TUN")
    parser.add_argument("--json", help="write samples, tests and the summary here")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("soak: needs root (it creates a network namespace and a TUN device).", file=sys.stderr)
        return 2
    if shutil.which("iperf3") is None:
        print("soak: the iperf3 client is not installed.", file=sys.stderr)
        return 2
    if args.minutes <= 0 or args.interval <= 0 or args.test_seconds < 1:
        print("soak: --minutes, --interval and --test-seconds must be positive.", file=sys.stderr)
        return 2
    return Soak(args).run()


if __name__ == "__main__":
    sys.exit(main())
