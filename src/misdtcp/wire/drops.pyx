# cython: language_level=3
"""Printable names of the drop reasons in drops.pxd, in enum order."""

DROP_NAMES = ("none", "ip_truncated", "ip_version", "ip_header_length", "ip_checksum",
              "ip_fragment", "not_for_us", "bad_source", "protocol", "icmp", "tcp_header",
              "tcp_checksum", "tcp_options", "tcp_flags", "bad_gso", "no_connection",
              "listen_bad", "backlog_full", "table_full", "bad_cookie", "paws",
              "out_of_window", "rst_challenged", "rst_out_of_window", "syn_challenged",
              "ack_unsent", "ack_too_old", "syn_sent_bad", "reassembly_full", "after_close",
              "data_after_fin", "time_wait", "rst_time_wait", "icmp_no_connection", "icmp_stale",
              "syn_data",
              "link_truncated", "link_not_for_us", "link_type", "arp_not_for_us",
              "ip6_ext_header", "ip6_ext_chain", "ip6_routing", "ip6_option")

if len(DROP_NAMES) != DROP_REASON_COUNT:
    raise ImportError("misdtcp.wire.drops: DROP_NAMES does not match the drop reasons")
