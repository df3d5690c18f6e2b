# The live connection table that `misdtcp ss` shows: worker 0 copies a few
# fields of every connection of its replica into shared memory, with the
# core's statistics (about every 20 ms, executor.pyx: exec_publish_stats).
# Every replica holds the same state, so worker 0's copy is the connection's.
# Readers (layout.pyx: SharedView.connection_table) use the seqlock word:
# odd while a copy is being written, so a torn table is retried, not shown.
from libc.stdint cimport int32_t, uint32_t, uint64_t
from libc.string cimport memcpy
from misdtcp._system cimport atomic_fence_seq_cst, atomic_store_release_u64
from misdtcp._tcpcore cimport Conn, CoreState, HANDLE_SLOT_BITS
from misdtcp.runtime.layout cimport ConnInfo, RuntimeHeader, layout_conntable


cdef inline void conntable_publish(RuntimeHeader *h, CoreState *st, uint64_t now) noexcept nogil:
    cdef Conn *conns = <Conn *>((<char *>st) + st.conns_offset)
    cdef ConnInfo *table = layout_conntable(h)
    cdef ConnInfo *row
    cdef Conn *c
    cdef uint32_t i, rows = st.high_slot
    if rows > h.max_conns:
        rows = h.max_conns
    atomic_store_release_u64(&h.conntable_seq, h.conntable_seq + 1)    # odd: writing
    atomic_fence_seq_cst()
    for i in range(rows):
        c = &conns[i]
        row = &table[i]
        row.in_use = c.in_use
        if not c.in_use:
            continue
        row.handle = (<uint32_t>c.gen << HANDLE_SLOT_BITS) | i
        row.state = c.state
        row.lport = c.lport
        row.raddr = c.raddr
        row.v6 = c.v6
        if c.v6:
            memcpy(row.raddr6, c.raddr6, 16)
        row.rport = c.rport
        row.snd_mss = c.snd_mss
        row.cwnd = c.cc.cwnd
        row.ssthresh = c.cc.ssthresh
        row.snd_wnd = c.snd_wnd
        row.rcv_wnd = c.rcv_adv - c.rcv_nxt
        row.srtt_ns = c.srtt_ns
        row.rttvar_ns = c.rttvar_ns
        row.rto_ns = c.rto_ns
        row.retransmits = c.retransmits
        row.bytes_in = c.bytes_in
        row.bytes_out = c.bytes_out
        row.segs_in = c.segs_in
        row.segs_out = c.segs_out
        row.rcv_nxt_off = c.rcv_nxt_off
        row.consumed_off = c.consumed_off
        row.snd_end_off = c.snd_end_off
        # snd_una's send stream offset, recovered from the 64-bit end of the stream
        # (signed: once the FIN is acknowledged snd_una is one past the stream)
        row.snd_una_off = c.snd_end_off - <int32_t>(c.iss + 1 + <uint32_t>c.snd_end_off - c.snd_una)
    h.conntable_rows = rows
    h.conntable_ns = now
    atomic_fence_seq_cst()
    atomic_store_release_u64(&h.conntable_seq, h.conntable_seq + 1)    # even: consistent
