"""`misdtcp ss [--tun NAME] [--json]`: the live connection table of the
`misdtcp serve` on that TUN (in this network namespace), printed the way
`ss -tani` prints the kernel's: state, queues, addresses, then the TCP
details -- and, what only misdtcp has, each worker's share of the work."""
from __future__ import annotations

import json
import sys

from misdtcp.cli.control import NoServer, query

# ss(8)'s names for the TCP states
SS_STATES = {"ESTABLISHED": "ESTAB", "SYN_SENT": "SYN-SENT", "SYN_RECEIVED": "SYN-RECV",
             "FIN_WAIT_1": "FIN-WAIT-1", "FIN_WAIT_2": "FIN-WAIT-2", "TIME_WAIT": "TIME-WAIT",
             "CLOSED": "UNCONN", "CLOSE_WAIT": "CLOSE-WAIT", "LAST_ACK": "LAST-ACK", "LISTEN": "LISTEN",
             "CLOSING": "CLOSING"}


def run_ss(args) -> int:
    try:
        reply = query(args.tun)
    except NoServer:
        print(f"misdtcp: no misdtcp serve is running on {args.tun} in this network namespace", file=sys.stderr)
        return 1
    except (OSError, ValueError) as exc:
        print(f"misdtcp: the misdtcp serve on {args.tun} did not answer ({exc})", file=sys.stderr)
        return 1
    if "error" in reply:
        print(f"misdtcp: {reply['error']}", file=sys.stderr)
        return 1
    for conn in reply["connections"]:
        conn["ss_state"] = SS_STATES.get(conn["state"], conn["state"])
    if args.json:
        print(json.dumps(reply, indent=2))
        return 0
    print(format_table(reply))
    return 0


def _endpoint(address: str, port) -> str:
    """address:port as ss writes it: an IPv6 address in brackets."""
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


def format_table(reply: dict) -> str:
    rows = [("State", "Recv-Q", "Send-Q", "Local Address:Port", "Peer Address:Port")]
    details = [None]
    for listener in reply["listening"]:
        rows.append(("LISTEN", "0", "0", _endpoint(listener["address"], listener["port"]), "*:*"))
        details.append(None)
    for c in reply["connections"]:
        rows.append((c["ss_state"], str(c["recv_q"]), str(c["send_q"]),
                     _endpoint(c["local"]["address"], c["local"]["port"]),
                     _endpoint(c["peer"]["address"], c["peer"]["port"])))
        mss = max(1, c["mss"])
        parts = [f"mss:{c['mss']}", f"cwnd:{c['cwnd_bytes'] // mss}"]
        if c["ssthresh_bytes"] < 1 << 30:
            parts.append(f"ssthresh:{c['ssthresh_bytes'] // mss}")
        parts += [f"rtt:{c['srtt_ms']:.3f}/{c['rttvar_ms']:.3f}", f"rto:{c['rto_ms']:.0f}",
                  f"retrans:{c['retransmits']}", f"bytes_sent:{c['bytes_sent']}",
                  f"bytes_received:{c['bytes_received']}", f"segs_out:{c['segs_out']}",
                  f"segs_in:{c['segs_in']}", f"snd_wnd:{c['snd_wnd']}", f"rcv_wnd:{c['rcv_wnd']}"]
        shares = " ".join(f"w{w['worker']}:copied {w['copied_share'] * 100:.0f}%/sent {w['sent_share'] * 100:.0f}%"
                          for w in c["workers"])
        details.append(" ".join(parts) + f"\n\t workers {shares}")
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    addresses = reply["address"] + (f" {reply['address6']}" if reply.get("address6") else "")
    lines = [f"misdtcp {reply['strategy']}, {reply['workers']} worker(s), {addresses}"]
    for row, detail in zip(rows, details):
        lines.append("  ".join(cell.ljust(widths[i]) if i != 1 and i != 2 else cell.rjust(widths[i])
                               for i, cell in enumerate(row)).rstrip())
        if detail:
            lines.append("\t " + detail)
    return "\n".join(lines)
