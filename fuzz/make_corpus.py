"""Write the seed corpus of fuzz_core.py to fuzz/corpus/.

Seeds are event scripts encoded with fuzz_core.encode: every template
unmutated, every template with one typical field mutation, and a few short
conversations (data, out-of-order data and the hole fill, SACK-carrying
ACKs, FIN, RST, application calls, timers).  Deterministic: running it again
writes the same files.

    python fuzz/make_corpus.py
"""
import hashlib
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import fuzz_core as F  # noqa: E402
import scenario as S  # noqa: E402

MS = S.MS
TEMPLATES = S.World.TEMPLATES

# one typical bad value per field
TYPICAL = {
    "version": 6, "ihl": 4, "total_len": 40, "frag": 0x2000, "ttl": 0, "proto": 17,
    "ip_csum_bad": 1, "ip_options": b"\x94\x04\x00\x00", "src": 0xE0000001, "dst": S.OTHER,
    "sport": 0, "dport": 0, "seq": 1 << 31, "ack": (1 << 32) - 1, "flags": 0x03, "window": 0,
    "urg": 65535, "data_offset": 15, "tcp_csum_bad": 1,
    "options": S.opt_mss(0) + S.opt_wscale(15) + b"\x01", "options_append": S.opt_ts(1, 2)[:6] + b"\x00\x00",
    "options_prepend": b"\x05\x0a" + b"\0" * 8, "payload_len": 1449, "trailer": b"\0" * 6, "cut": -10,
}


def seeds():
    out = []
    for name in TEMPLATES:
        out.append([("valid", name, 1, MS)])
    for i, (field, _) in enumerate(F.FIELDS):
        name = TEMPLATES[i % len(TEMPLATES)] if i % 3 else "est_data"
        out.append([("frame", name, 7, [(field, TYPICAL[field])], 0, 0, MS)])
    out += [
        [("valid", "est_data", 100, MS), ("valid", "est_data", 200, 40 * MS), ("tick", 200 * MS)],
        [("valid", "est_ooo", 900, MS), ("valid", "est_data", 3000, MS), ("app", "consumed_all", "est", 0, MS)],
        [("valid", "est_sack", 3, MS), ("valid", "est_sack", 3, MS), ("valid", "est_sack", 4, MS),
         ("tick", 1000 * MS)],
        [("valid", "est_fin", 0, MS), ("app", "close", "est", 0, MS), ("valid", "est_ack", 0, MS)],
        [("app", "shutdown", "est", 0, MS), ("valid", "est_ack", 0, MS), ("valid", "est_fin", 0, MS),
         ("tick", 10**12)],
        [("frame", "est_rst", 0, [("seq", -1)], 0, 0, MS), ("valid", "est_rst", 5, MS)],
        [("valid", "half_ack", 0, MS), ("app", "accepted", "half", 0, MS), ("valid", "half_syn", 0, MS)],
        [("valid", "synsent_synack", 9, MS), ("app", "send", "active", 3000, MS)],
        [("valid", "syn_new", 1, 0)] * 10 + [("valid", "cookie_ack", 5, MS)],
        [("frame", "est_data", 1448, [("payload_len", 17000)], 1, 1448, MS)],
        [("frame", "est_data", 5, [("tcp_csum_bad", 9)], 1, 0, MS),
         ("frame", "est_data", 5, [("tcp_csum_bad", 9)], 4 | 1, 0, MS)],
        [("raw", bytes(range(60)), 0, 0, MS), ("raw", b"\x45" + b"\0" * 19, 2, 0, MS)],
        [("app", "send", "est", 20000, MS), ("tick", 1000 * MS), ("valid", "est_ack", 0, MS),
         ("tick", 65_000 * MS)],
        [("frame", "est_ack", 0, [("window", 0)], 0, 0, MS), ("app", "send", "est", 5000, MS),
         ("tick", 1000 * MS), ("tick", 1000 * MS)],
        [("frame", "est_data", 10, [("options", S.opt_sack([(1, 2)] * 4) + b"\x01\x01")], 0, 0, MS)],
        [("frame", "syn_new", 3, [("options", S.pad4(S.opt_mss(0) + S.opt_wscale(200)))], 0, 0, MS)],
        [("valid", "icmp_echo", 33, MS), ("frame", "icmp_echo", 1, [("cut", -3)], 0, 0, MS)],
    ]
    return out


def main():
    corpus = os.path.join(HERE, "corpus")
    os.makedirs(corpus, exist_ok=True)
    n = 0
    for script in seeds():
        data = F.encode(script)
        assert F.decode(data) == script, script
        name = hashlib.sha1(data).hexdigest()[:16]
        with open(os.path.join(corpus, name), "wb") as f:
            f.write(data)
        n += 1
    print(f"wrote {n} seeds to {corpus}")


if __name__ == "__main__":
    main()
