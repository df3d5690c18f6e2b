/* Atomic operations on shared memory, for the MISD runtime (ring, command
 * queue, buffers).  Thin static inline wrappers around the GCC/Clang
 * __atomic builtins so Cython code can name the memory order it relies on.
 *
 * The memory shared between processes (memfd mappings) is ordinary cacheable
 * memory, so the C11 memory model applies across processes exactly as it does
 * across threads.  The orders used by the runtime:
 *
 *   release store  / acquire load   publish data: everything written before
 *                                   the store is visible to a reader whose
 *                                   acquire load returns the stored value
 *                                   (ring cursors, command slot sequences);
 *   seq_cst RMW    / seq_cst load   the "announce then re-check" (Dekker)
 *                                   handshake in front of every futex sleep,
 *                                   which needs store->load ordering that
 *                                   acquire/release does not give;
 *   relaxed                         statistics counters with a single writer.
 *
 * On x86-64 acquire/release compile to plain moves; seq_cst RMWs are one
 * locked instruction. */
#ifndef MISDTCP_ATOMICS_H
#define MISDTCP_ATOMICS_H
#include <stdint.h>

/* ---- 64-bit ------------------------------------------------------------ */

static inline uint64_t atomic_load_acquire_u64(const uint64_t *p)
{
    return __atomic_load_n(p, __ATOMIC_ACQUIRE);
}

static inline uint64_t atomic_load_relaxed_u64(const uint64_t *p)
{
    return __atomic_load_n(p, __ATOMIC_RELAXED);
}

static inline uint64_t atomic_load_seq_cst_u64(const uint64_t *p)
{
    return __atomic_load_n(p, __ATOMIC_SEQ_CST);
}

static inline void atomic_store_release_u64(uint64_t *p, uint64_t v)
{
    __atomic_store_n(p, v, __ATOMIC_RELEASE);
}

static inline void atomic_store_relaxed_u64(uint64_t *p, uint64_t v)
{
    __atomic_store_n(p, v, __ATOMIC_RELAXED);
}

/* Weak CAS for retry loops: on failure *expected receives the current value.
 * Relaxed is enough where the winner publishes its data with a separate
 * release store (the message queue's per-slot sequence). */
static inline int atomic_cas_weak_relaxed_u64(uint64_t *p, uint64_t *expected, uint64_t desired)
{
    return __atomic_compare_exchange_n(p, expected, desired, 1,
                                       __ATOMIC_RELAXED, __ATOMIC_RELAXED);
}

/* Strong CAS, sequentially consistent: claiming a one-shot flag (readiness:
 * exactly one of several workers may post the notification it arms). */
static inline int atomic_cas_u64(uint64_t *p, uint64_t *expected, uint64_t desired)
{
    return __atomic_compare_exchange_n(p, expected, desired, 0,
                                       __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
}

/* A statistics counter written by exactly one process: a plain (relaxed)
 * load+store, not a locked add, so it costs nothing on the hot path and a
 * reader in another process still never sees a torn value. */
static inline void counter_add_u64(uint64_t *p, uint64_t v)
{
    __atomic_store_n(p, __atomic_load_n(p, __ATOMIC_RELAXED) + v, __ATOMIC_RELAXED);
}

/* A counter with several writers (slow paths only: it is a locked add). */
static inline uint64_t atomic_fetch_add_u64(uint64_t *p, uint64_t v)
{
    return __atomic_fetch_add(p, v, __ATOMIC_SEQ_CST);
}

/* ---- 32-bit (futex words are 32-bit) ------------------------------------ */

static inline uint32_t atomic_load_acquire_u32(const uint32_t *p)
{
    return __atomic_load_n(p, __ATOMIC_ACQUIRE);
}

static inline uint32_t atomic_load_relaxed_u32(const uint32_t *p)
{
    return __atomic_load_n(p, __ATOMIC_RELAXED);
}

static inline uint32_t atomic_load_seq_cst_u32(const uint32_t *p)
{
    return __atomic_load_n(p, __ATOMIC_SEQ_CST);
}

static inline void atomic_store_release_u32(uint32_t *p, uint32_t v)
{
    __atomic_store_n(p, v, __ATOMIC_RELEASE);
}

static inline void atomic_store_seq_cst_u32(uint32_t *p, uint32_t v)
{
    __atomic_store_n(p, v, __ATOMIC_SEQ_CST);
}

/* Returns the previous value.  seq_cst: used to bump a futex word after
 * publishing, which must be ordered before the following load of the
 * waiters flag (see the protocol in _ring.pyx). */
static inline uint32_t atomic_fetch_add_u32(uint32_t *p, uint32_t v)
{
    return __atomic_fetch_add(p, v, __ATOMIC_SEQ_CST);
}

/* Returns the previous value; seq_cst for the same Dekker reason. */
static inline uint32_t atomic_exchange_u32(uint32_t *p, uint32_t v)
{
    return __atomic_exchange_n(p, v, __ATOMIC_SEQ_CST);
}

/* Returns the previous value.  A sleeper announces itself with this RMW: an
 * RMW always reads the latest value in the word's modification order, and
 * seq_cst orders it before the sleeper's re-check of the condition. */
static inline uint32_t atomic_fetch_or_u32(uint32_t *p, uint32_t v)
{
    return __atomic_fetch_or(p, v, __ATOMIC_SEQ_CST);
}

/* Strong CAS; on failure *expected receives the current value. */
static inline int atomic_cas_u32(uint32_t *p, uint32_t *expected, uint32_t desired)
{
    return __atomic_compare_exchange_n(p, expected, desired, 0,
                                       __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
}

/* ---- fences and spinning ------------------------------------------------ */

/* Full barrier: orders a preceding store before a following load (the one
 * reordering x86 allows).  On x86-64 a locked add to the stack does this at
 * about half the cost of MFENCE (the Linux kernel's smp_mb() does the same);
 * -4(%rsp) keeps it off the cache line of the caller's return address. */
static inline void atomic_fence_seq_cst(void)
{
#if defined(__x86_64__)
    __asm__ __volatile__("lock; addl $0,-4(%%rsp)" ::: "memory", "cc");
#else
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
#endif
}

/* Spin-wait hint: PAUSE on x86 (lets the sibling hyperthread run and avoids
 * the memory-order mis-speculation flush when the awaited line changes),
 * YIELD on arm64, a compiler barrier elsewhere. */
static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield" ::: "memory");
#else
    __asm__ __volatile__("" ::: "memory");
#endif
}

#endif /* MISDTCP_ATOMICS_H */
