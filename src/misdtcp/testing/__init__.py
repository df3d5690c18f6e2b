"""Tools for tests, labs, demos and benchmarks -- never imported by the stack
itself: throwaway network namespaces and what runs in them (``lab``),
compiled stress and benchmark loops for the shared-memory structures
(``ring_harness``), the congestion-control algorithms driven event by
event (``cc_harness``), what /proc says about a stack's processes
(``procfs``), and the kill campaign against worker recovery
(``kill_campaign``)."""
