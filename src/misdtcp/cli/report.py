"""`misdtcp serve`'s interval lines: like iperf3's, one per interval and a summary."""
from __future__ import annotations

import json
import os
import sys
import time


def _process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of one process so far (0 once it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Reporter:
    """Every interval: throughput, each worker's share of copies and sent
    segments, retransmissions, drops by reason (like iperf3's lines)."""

    def __init__(self, stack, interval: float, as_json: bool, out=sys.stdout):
        self.stack = stack
        self.interval = interval
        self.as_json = as_json
        self.out = out
        self.t0 = time.monotonic()
        self.last_t = self.t0
        self.last = self._sample()
        self.first = self.last

    def _sample(self):
        workers = self.stack.worker_counters()
        stats, drops = self.stack.core_stats()
        app = os.times()
        cpu = {role: _process_cpu_s(pid) for role, pid in self.stack.processes().items()}
        cpu["app"] = app.user + app.system
        return {"workers": workers, "stats": stats, "drops": drops, "cpu": cpu,
                "sequencer": self.stack.sequencer_counters()}

    def line(self, final=False):
        now = time.monotonic()
        cur = self._sample()
        base = self.first if final else self.last
        dt = (now - self.t0) if final else (now - self.last_t)
        copied = [c["bytes_copied"] - b["bytes_copied"] for c, b in zip(cur["workers"], base["workers"])]
        sent = [c["segments_sent"] - b["segments_sent"] for c, b in zip(cur["workers"], base["workers"])]
        total = sum(copied)
        gbps = total * 8 / dt / 1e9 if dt > 0 else 0.0
        rexmit = cur["stats"].get("retransmits", 0) - base["stats"].get("retransmits", 0)
        # time from the sequencer's stamp to a frame's outputs being done,
        # averaged over the frames the workers handled in this interval
        frames = sum(c["frames"] - b["frames"] for c, b in zip(cur["workers"], base["workers"]))
        waited = sum(c["latency_sum_ns"] - b["latency_sum_ns"] for c, b in zip(cur["workers"], base["workers"]))
        latency_us = waited / frames / 1e3 if frames else 0.0
        drops = {k: v - base["drops"].get(k, 0) for k, v in cur["drops"].items() if v - base["drops"].get(k, 0)}
        # CPU % of each of the stack's processes, and the sequencer's own
        # time per frame it read (reading and describing, waits left out)
        cpu = {role: round(100 * (v - base["cpu"].get(role, 0.0)) / dt, 1) if dt > 0 else 0.0
               for role, v in cur["cpu"].items()}
        seq, seq0 = cur["sequencer"], base["sequencer"]
        frames_read = seq["frames"] - seq0["frames"]
        seq_ns = (seq["read_ns"] - seq0["read_ns"]) / frames_read if frames_read else None
        record = {
            "event": "summary" if final else "interval",
            "start": round((self.t0 if final else self.last_t) - self.t0, 3),
            "end": round(now - self.t0, 3),
            "bytes": total, "gbps": round(gbps, 3),
            "copied_share": [round(c / total, 3) if total else 0.0 for c in copied],
            "segments_sent": sent,
            "retransmits": rexmit,
            "latency_us": round(latency_us, 1),
            "drops": drops,
            "placement": self.stack.placement,
            "cpu": cpu,
            "sequencer": {"frames": frames_read, "ns_per_frame": round(seq_ns, 1) if seq_ns is not None else None},
        }
        if not final:
            self.last, self.last_t = cur, now
        if self.as_json:
            text = json.dumps(record, sort_keys=True)
        else:
            share = "/".join(f"{s * 100:.0f}%" for s in record["copied_share"])
            drop_text = ", ".join(f"{k} {v}" for k, v in sorted(drops.items())) or "none"
            label = "total" if final else ""
            text = (f"[{record['start']:7.2f}-{record['end']:7.2f} s] {label:5} {total / 1e6:10.1f} MB "
                    f"{gbps:7.2f} Gbit/s  copies {share}  segments {'/'.join(map(str, sent))}  "
                    f"retransmits {rexmit}  latency {latency_us:.0f} us  drops: {drop_text}")
        print(text, file=self.out, flush=True)
