"""Coverage-guided fuzzing of the TCP core with atheris (issue 6).

Each input is decoded into a short event script — frames built from valid
templates of a live conversation and mutated field by field, raw frames,
timer ticks and application calls — and played against a core that has a
listener, an established connection, a half-open one and an active open
(`scenario.World`, forked from one setup per input).  The oracle of
`scenario.py` checks every event; any exception is a finding.

Coverage: atheris instruments the Python of this target and of
scenario.py.  For coverage of the C core itself, build an instrumented
copy of the extension with clang (`fuzz/build_instrumented.sh`) and run
with MISDTCP_NATIVE=build/fuzz-native and LD_PRELOAD of atheris'
asan_with_fuzzer.so (see fuzz/README.md); without that the C core is only
*exercised*, libFuzzer's feedback comes from the Python side.

    python fuzz/fuzz_core.py fuzz/corpus -max_total_time=600
    python fuzz/fuzz_core.py --decode CRASH_FILE      # print the script of an input
"""
import os
import struct
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

NATIVE = os.environ.get("MISDTCP_NATIVE")
if NATIVE:
    # An instrumented build of the extensions (build_instrumented.sh) shadows
    # the regular one: misdtcp.<ext> is looked up there first.
    import misdtcp
    misdtcp.__path__.insert(0, os.path.join(os.path.abspath(NATIVE), "misdtcp"))

try:
    import atheris
except ImportError:          # decoding and replay work without it
    atheris = None

if atheris is not None and "--decode" not in sys.argv:
    with atheris.instrument_imports():
        import scenario as S
else:
    import scenario as S

MAX_EVENTS = 24
OPS = ("frame", "frame", "frame", "valid", "raw", "tick", "app")
APP_METHODS = ("consumed", "consumed_all", "send", "shutdown", "close", "abort", "accepted")
WHO = ("est", "half", "active")
DTS = (0, 1000, S.MS, 40 * S.MS, 200 * S.MS, 1000 * S.MS, 65_000 * S.MS, 10**12)

# field -> value kind
FIELDS = (
    ("version", "u4"), ("ihl", "u4"), ("total_len", "i16"), ("frag", "u16"), ("ttl", "u8"),
    ("proto", "u8"), ("ip_csum_bad", "u16"), ("ip_options", "blob"), ("src", "addr"), ("dst", "addr"),
    ("sport", "u16"), ("dport", "u16"), ("seq", "delta"), ("ack", "delta"), ("flags", "u8"),
    ("window", "u16"), ("urg", "u16"), ("data_offset", "u4"), ("tcp_csum_bad", "u16"),
    ("options", "blob"), ("options_append", "blob"), ("options_prepend", "blob"),
    ("payload_len", "plen"), ("trailer", "blob"), ("cut", "i16"),
)
FIELD_INDEX = {name: i for i, (name, _) in enumerate(FIELDS)}


class Reader:
    def __init__(self, data):
        self.data, self.pos = data, 0

    def more(self):
        return self.pos < len(self.data)

    def take(self, n):
        b = self.data[self.pos:self.pos + n]
        self.pos += n
        return b + b"\0" * (n - len(b))

    def u8(self):
        return self.take(1)[0]

    def u16(self):
        return struct.unpack("!H", self.take(2))[0]

    def u32(self):
        return struct.unpack("!I", self.take(4))[0]

    def value(self, kind):
        if kind == "u4":
            return self.u8() & 15
        if kind == "u8":
            return self.u8()
        if kind == "u16":
            return self.u16()
        if kind == "i16":
            return self.u16() - 32768
        if kind == "addr":
            return S.ADDRESSES[self.u8() % len(S.ADDRESSES)]
        if kind == "delta":
            sel = self.u8()
            return S.SEQ_DELTAS[sel] if sel < len(S.SEQ_DELTAS) else self.u32()
        if kind == "plen":
            return self.u16() % 20000
        if kind == "blob":
            return self.take(self.u8() % 48)
        raise ValueError(kind)


class Writer:
    def __init__(self):
        self.out = bytearray()

    def u8(self, v):
        self.out += bytes([v & 0xFF])

    def u16(self, v):
        self.out += struct.pack("!H", v & 0xFFFF)

    def u32(self, v):
        self.out += struct.pack("!I", v & 0xFFFFFFFF)

    def value(self, kind, v):
        if kind in ("u4", "u8"):
            self.u8(v)
        elif kind == "u16":
            self.u16(v)
        elif kind == "i16":
            self.u16(v + 32768)
        elif kind == "addr":
            self.u8(S.ADDRESSES.index(v))
        elif kind == "delta":
            if v in S.SEQ_DELTAS:
                self.u8(S.SEQ_DELTAS.index(v))
            else:
                self.u8(255)
                self.u32(v)
        elif kind == "plen":
            self.u16(v)
        elif kind == "blob":
            assert len(v) < 48
            self.u8(len(v))
            self.out += v


def _gso(r):
    g = r.u8()
    return 0 if g < 128 else S.GSO_SIZES[(g - 128) % len(S.GSO_SIZES)]


def decode(data: bytes):
    """Input bytes -> event script (see scenario.play)."""
    r = Reader(data)
    events = []
    templates = S.World.TEMPLATES
    while r.more() and len(events) < MAX_EVENTS:
        op = OPS[r.u8() % len(OPS)]
        if op == "frame":
            name = templates[r.u8() % len(templates)]
            n = r.u16()
            muts = []
            for _ in range(r.u8() % 5):
                field, kind = FIELDS[r.u8() % len(FIELDS)]
                muts.append((field, r.value(kind)))
            flags = S.FRAME_FLAGS[r.u8() % len(S.FRAME_FLAGS)]
            events.append(("frame", name, n, muts, flags, _gso(r), DTS[r.u8() % len(DTS)]))
        elif op == "valid":
            events.append(("valid", templates[r.u8() % len(templates)], r.u16(), DTS[r.u8() % len(DTS)]))
        elif op == "raw":
            data = r.take(r.u8())
            flags = S.FRAME_FLAGS[r.u8() % len(S.FRAME_FLAGS)]
            events.append(("raw", data, flags, _gso(r), DTS[r.u8() % len(DTS)]))
        elif op == "tick":
            events.append(("tick", DTS[r.u8() % len(DTS)]))
        else:
            events.append(("app", APP_METHODS[r.u8() % len(APP_METHODS)], WHO[r.u8() % len(WHO)],
                           r.u16() % 20001, DTS[r.u8() % len(DTS)]))
    return events


def encode(events) -> bytes:
    """Event script -> input bytes (decode(encode(e)) == e); makes the seed corpus."""
    w = Writer()
    templates = S.World.TEMPLATES
    for ev in events:
        kind = ev[0]
        w.u8(OPS.index(kind))
        if kind == "frame":
            _, name, n, muts, flags, gso, dt = ev
            w.u8(templates.index(name))
            w.u16(n)
            w.u8(len(muts))
            for field, value in muts:
                w.u8(FIELD_INDEX[field])
                w.value(FIELDS[FIELD_INDEX[field]][1], value)
            w.u8(S.FRAME_FLAGS.index(flags))
            w.u8(0 if not gso else 128 + S.GSO_SIZES.index(gso))
            w.u8(DTS.index(dt))
        elif kind == "valid":
            _, name, n, dt = ev
            w.u8(templates.index(name))
            w.u16(n)
            w.u8(DTS.index(dt))
        elif kind == "raw":
            _, data, flags, gso, dt = ev
            w.u8(len(data))
            w.out += data
            w.u8(S.FRAME_FLAGS.index(flags))
            w.u8(0 if not gso else 128 + S.GSO_SIZES.index(gso))
            w.u8(DTS.index(dt))
        elif kind == "tick":
            w.u8(DTS.index(ev[1]))
        else:
            _, method, who, n, dt = ev
            w.u8(APP_METHODS.index(method))
            w.u8(WHO.index(who))
            w.u16(n)
            w.u8(DTS.index(dt))
    return bytes(w.out)


_BASE = None


def base_world():
    global _BASE
    if _BASE is None:
        _BASE = S.World().setup()
    return _BASE


def run_one(data: bytes):
    w = base_world().clone()
    S.play(w, decode(data))
    w.still_works()


def TestOneInput(data: bytes):
    run_one(data)


def main(argv):
    if argv[1:2] == ["--decode"]:
        for path in argv[2:]:
            with open(path, "rb") as f:
                for ev in decode(f.read()):
                    print(ev)
        return
    if atheris is None:
        sys.exit("atheris is not installed: pip install atheris (see fuzz/README.md)")
    base_world()
    atheris.Setup(argv, TestOneInput)
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)
