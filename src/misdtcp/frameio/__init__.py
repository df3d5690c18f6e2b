"""Per-frame stages between a device and the stack, applied the same way in
both directions: seeded fault injection (``faults``) and pcap capture
(``pcap``).  ``stages.pxd`` is the one place that applies them to a frame;
the sequencer (input) and the executor (output) both call it.
"""
