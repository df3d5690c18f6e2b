"""The wire layer: packet formats, checksums and sequence arithmetic.

Compiled declarations (``.pxd``, inline, cimported by the core and the
runtime): ``seq`` (mod-2^32 comparisons), ``checksum`` (RFC 1071 sums),
``ipv4``, ``ipv6`` (with its extension-header chain), ``tcp``, ``icmp`` and
``icmp6`` (named field offsets, zero-copy parsers and builders),
``validate`` (a frame to this stack, either family), ``descriptor`` (a
log position), ``frame`` (device metadata that travels with a frame),
``drops`` (why a frame was dropped), ``vnet`` (the virtio-net header).  Python helpers
for tests, tools and the replay source: ``codec`` and ``vnet_header``.
Nothing here imports from a higher layer.
"""
