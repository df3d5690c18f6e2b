"""The MISD runtime: how frames and requests become a log, and the log becomes work.

Shared memory (``shm``, the broadcast ring ``misdtcp._ring``, the request and
event ``queue``, the bookkeeping ``layout``), the one ``wait`` policy, the one
``vocabulary`` of records, requests and events; the ``sequencer`` (the log's
single writer, fed by ``intake``), the ``executor`` (one replica's outputs)
and the strategy ``loops``; ``strategies`` (single, misd, mimd); for a live
stack, ``areas``, ``supervisor`` and ``live``; for benchmarks and tests, the
``replay`` source and ``replay_run``.
"""
