"""The core layer's building blocks, beside the TCP core itself (``misdtcp._tcpcore``).

``ranges`` tracks received and SACKed byte ranges without holding payload;
``congestion`` dispatches to one file per algorithm (``reno``, ``cubic``),
all over the plain ``CcState`` of ``cc_state``.  Everything here is
deterministic: it sees only events and the stamped time, never a clock.
"""
