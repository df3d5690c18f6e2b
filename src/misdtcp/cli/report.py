"""`misdtcp serve`'s interval lines: like iperf3's, counting both
directions, quiet while idle, and a summary over the time something moved.

Every interval: bytes received (copied into receive buffers by the workers)
and sent (payload the core put on the wire), each worker's share of the
copies and of the segments sent, retransmissions, the mean time a frame
spends in the stack, drops by reason (and, on a packet ring, the frames the
kernel dropped because every slot was still held: `ring_drops`).  In --json-stream mode the same
interval is an iperf3 "interval" event, one stream per connection."""
from __future__ import annotations

import os
import time

from misdtcp.cli.output import Output


def _process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of one process so far (0 once it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Reporter:
    def __init__(self, stack, out: Output):
        self.stack = stack
        self.out = out
        self.t0 = time.monotonic()
        self.last_t = self.t0
        self.last = self._sample()
        self.first = self.last
        self.active = 0.0              # seconds of intervals in which bytes moved
        self.cpu0 = os.times()

    def _sample(self):
        workers = self.stack.worker_counters()
        stats, drops = self.stack.core_stats()
        _, rows = self.stack.connection_table()
        app = os.times()
        cpu = {role: _process_cpu_s(pid) for role, pid in self.stack.processes().items()}
        cpu["app"] = app.user + app.system
        return {"workers": workers, "stats": stats, "drops": drops, "cpu": cpu,
                "sequencer": self.stack.sequencer_counters(), "conns": {row["handle"]: row for row in rows},
                "device": self.stack.device_counters()}

    @staticmethod
    def _delta(cur, base):
        copied = [c["bytes_copied"] - b["bytes_copied"] for c, b in zip(cur["workers"], base["workers"])]
        segments = [c["segments_sent"] - b["segments_sent"] for c, b in zip(cur["workers"], base["workers"])]
        sent = cur["stats"].get("data_bytes_out", 0) - base["stats"].get("data_bytes_out", 0)
        rexmit = cur["stats"].get("retransmits", 0) - base["stats"].get("retransmits", 0)
        frames = sum(c["frames"] - b["frames"] for c, b in zip(cur["workers"], base["workers"]))
        waited = sum(c["latency_sum_ns"] - b["latency_sum_ns"] for c, b in zip(cur["workers"], base["workers"]))
        drops = {k: v - base["drops"].get(k, 0) for k, v in cur["drops"].items() if v - base["drops"].get(k, 0)}
        return copied, segments, sent, rexmit, (waited / frames / 1e3 if frames else 0.0), drops

    def line(self, final: bool = False, emit: bool = True) -> bool:
        """Report the interval since the last line (or, final, the whole run);
        returns False when nothing moved and nothing was printed.  emit=False
        only accounts the interval (-i 0: no lines, but the summary still
        knows the time bytes moved)."""
        now = time.monotonic()
        cur = self._sample()
        base = self.first if final else self.last
        copied, segments, sent, rexmit, latency_us, drops = self._delta(cur, base)
        received = sum(copied)
        dt = now - self.last_t
        if not final:
            self.last, self.last_t = cur, now
            if received == 0 and sent == 0:
                return False                  # idle: iperf3 prints nothing between tests either (drops
                                              # seen meanwhile are in the summary)
            self.active += dt
            if not emit:
                return False
            seconds, start = dt, self.last_t - dt - self.t0
        else:
            seconds, start = self.active, 0.0
        total = received + sent
        gbps = total * 8 / seconds / 1e9 if seconds > 0 else 0.0
        # CPU % of each of the stack's processes (over the wall time since the
        # base), and the sequencer's own time per frame it read
        wall = (now - self.t0) if final else dt
        cpu = {role: round(100 * (v - base["cpu"].get(role, 0.0)) / wall, 1) if wall > 0 else 0.0
               for role, v in cur["cpu"].items()}
        seq, seq0 = cur["sequencer"], base["sequencer"]
        frames_read = seq["frames"] - seq0["frames"]
        seq_ns = (seq["read_ns"] - seq0["read_ns"]) / frames_read if frames_read else None
        # a packet ring: frames the kernel dropped because every slot was still
        # the stack's (its TCP sends them again; nothing is lost)
        ring_drops = cur["device"]["dropped"] - base["device"]["dropped"] if "dropped" in cur["device"] else None
        record = {
            "event": "summary" if final else "interval",
            "start": round(start, 3), "end": round(now - self.t0, 3),
            "seconds": round(seconds, 3),
            "bytes": total, "bytes_received": received, "bytes_sent": sent, "gbps": round(gbps, 3),
            "copied_share": [round(c / received, 3) if received else 0.0 for c in copied],
            "segments_sent": segments,
            "retransmits": rexmit,
            "latency_us": round(latency_us, 1),
            "drops": drops,
            "placement": self.stack.placement,
            "cpu": cpu,
            "sequencer": {"frames": frames_read, "ns_per_frame": round(seq_ns, 1) if seq_ns is not None else None},
        }
        if ring_drops is not None:
            record["ring_drops"] = ring_drops
        if final:
            record["active_seconds"] = round(self.active, 3)
            # digest rounds every worker compared (--check-every): the last
            # round a worker published, counted from 0
            record["checked_rounds"] = min((c["digest_round"] + 1 if c["digest"] else 0)
                                           for c in cur["workers"])
        self.out.record(record)
        self.out.event("end" if final else "interval", self._iperf3(cur, base, start, seconds, final))
        share = "/".join(f"{s * 100:.0f}%" for s in record["copied_share"])
        drop_text = ", ".join(f"{k} {v}" for k, v in sorted(drops.items())) or "none"
        span = f"active {seconds:6.2f} s" if final else f"{record['start']:7.2f}-{record['end']:7.2f} s"
        self.out.text(f"[{span}] {'total' if final else '':5} received {received / 1e6:9.1f} MB  "
                      f"sent {sent / 1e6:9.1f} MB  {gbps:7.2f} Gbit/s  copies {share}  "
                      f"segments {'/'.join(map(str, segments))}  retransmits {rexmit}  "
                      f"latency {latency_us:.0f} us  drops: {drop_text}"
                      + (f"  ring drops {ring_drops}" if ring_drops else "")
                      + (f"  replicas agreed in {record['checked_rounds']} digest rounds"
                         if record.get("checked_rounds") else ""))
        return True

    def _iperf3(self, cur, base, start, seconds, final) -> dict:
        """The interval (or end) in iperf3's --json-stream schema."""
        streams = []
        for handle, row in cur["conns"].items():
            before = base["conns"].get(handle, {})
            got = row["bytes_in"] - before.get("bytes_in", 0)
            put = row["bytes_out"] - before.get("bytes_out", 0)
            if not got and not put and not final:
                continue
            sender = put > got
            n = put if sender else got
            streams.append({
                "socket": handle, "start": round(start, 6), "end": round(start + seconds, 6),
                "seconds": round(seconds, 6), "bytes": n,
                "bits_per_second": n * 8 / seconds if seconds > 0 else 0.0,
                "retransmits": row["retransmits"] - before.get("retransmits", 0),
                "snd_cwnd": row["cwnd"], "rtt": row["srtt_ns"] // 1000, "rttvar": row["rttvar_ns"] // 1000,
                "pmtu": row["snd_mss"] + 40, "omitted": False, "sender": sender})
        copied, _, sent, rexmit, _, _ = self._delta(cur, base)

        def total(n, sender):
            return {"start": round(start, 6), "end": round(start + seconds, 6), "seconds": round(seconds, 6),
                    "bytes": n, "bits_per_second": n * 8 / seconds if seconds > 0 else 0.0,
                    "retransmits": rexmit if sender else 0, "omitted": False, "sender": sender}
        if not final:
            received = sum(copied)
            sender = sent > received
            return {"streams": streams, "sum": total(sent if sender else received, sender)}
        cpu = os.times()
        elapsed = max(time.monotonic() - self.t0, 1e-9)
        user = cpu.user - self.cpu0.user
        system = cpu.system - self.cpu0.system
        return {"streams": streams, "sum_sent": total(sent, True), "sum_received": total(sum(copied), False),
                "cpu_utilization_percent": {"host_total": 100 * (user + system) / elapsed,
                                            "host_user": 100 * user / elapsed,
                                            "host_system": 100 * system / elapsed,
                                            "remote_total": 0.0, "remote_user": 0.0, "remote_system": 0.0},
                "sender_tcp_congestion": "cubic", "receiver_tcp_congestion": "cubic"}
