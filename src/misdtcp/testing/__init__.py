"""Tools for tests, labs, demos and benchmarks -- never imported by the stack
itself: throwaway network namespaces and what runs in them (``lab``), and
compiled stress and benchmark loops for the shared-memory structures
(``ring_harness``)."""
