"""Applications served by `misdtcp serve`: iperf3, echo (RFC 862), discard (RFC 863)."""
