# The one wait policy of the runtime (after Agrona's IdleStrategy): every loop
# that waits for another process -- ring consumers and the producer, the
# message queues, the start barrier, mimd's lock -- waits the same way:
#
#     spin   : re-check the condition with PAUSE in between -- at most the
#              waiter's adapted budget of PAUSEs, never more than the
#              caller's ceiling, and never longer than WAIT_SPIN_NS;
#     park   : announce ourselves on an eventcount, re-check, then sleep on
#              its futex word, at most `timeout_ns` (callers pass ~50 ms, so
#              a dead peer is noticed).
#
# The budget adapts per waiter (it lives in the waiter's WaitCounters): a wait
# that ended while spinning grows it by half, a wait that had to park halves
# it.  Spinning pays when the peer is running on another core and is about to
# publish; with more processes than cores (this machine has 2) it starves the
# very process being waited for, parks follow, and the budget shrinks to a
# few PAUSEs -- a waiter then costs its core almost nothing.
#
# Eventcount (a futex word per direction of waiting): ``epoch << 1 | S``,
# S meaning "someone may be asleep".
#
#     sleeper                                   waker (after publishing)
#     w = fetch_or(word, 1) | 1   (seq_cst)     full fence
#     re-check condition -> done if true        w = load(word)
#     futex_wait(word, w, timeout)              if w & 1: CAS(word, w, (w + 2) & ~1)
#     loop                                      and futex_wake(word, all)
#
# This is Dekker's pattern: the sleeper writes the word then reads the
# condition; the waker writes the condition then reads the word, each with a
# full barrier in between, so at least one of them sees the other.  A waker
# makes a syscall only when a sleeper announced itself since the last wake.
# Futexes are used without FUTEX_PRIVATE_FLAG: the words are in MAP_SHARED
# memory used by several processes.
from libc.stdint cimport uint32_t, uint64_t
from libc.limits cimport INT_MAX
from misdtcp._system cimport (atomic_cas_u32, atomic_fence_seq_cst, atomic_fetch_add_u64,
                              atomic_fetch_or_u32, atomic_load_relaxed_u32, cpu_relax, futex_wait,
                              futex_wake, monotonic_ns)

cdef enum:
    WAIT_READY = 0      # the awaited condition holds
    WAIT_TIMEOUT = 1    # nothing happened within the timeout: check the peer is alive
    WAIT_STOPPED = 2    # the stop flag is set (and the condition does not hold)

cdef enum:
    # The ceiling of PAUSEs before parking.  A PAUSE is ~40-140 cycles, so the
    # ceiling alone could mean tens of microseconds; WAIT_SPIN_NS bounds it in
    # time whatever a PAUSE costs on the machine.
    WAIT_SPIN = 512
    WAIT_SPIN_NS = 10000
    WAIT_SPIN_FLOOR = 8          # the adapted budget never drops below this
    WAIT_SPIN_CLOCK_EVERY = 64   # PAUSEs between clock reads while spinning
    # Every park is bounded so a caller notices a dead peer within 50 ms.
    WAIT_TIMEOUT_NS = 50000000

ctypedef struct WaitCounters:   # one per waiter (ring consumer, producer, queue side)
    uint64_t spins      # waits satisfied while spinning
    uint64_t sleeps     # futex sleeps
    uint64_t timeouts   # waits that gave up
    uint32_t budget     # the adapted spin budget in PAUSEs (0: not yet adapted)
    uint32_t parks      # waits that had to park (the budget's evidence)

# The condition waited on: True when it holds.  It may act (a poster's
# condition is "my message went in").
ctypedef bint (*wait_ready_fn)(void *context) noexcept nogil


cdef inline uint32_t ec_prepare_sleep(uint32_t *word) noexcept nogil:
    """Announce a sleeper; returns the value to pass to futex_wait.  Must be
    followed by a re-check of the condition: the seq_cst RMW orders our
    announcement before that re-check (Dekker with the waker's fence)."""
    return atomic_fetch_or_u32(word, 1) | 1


cdef inline bint ec_notify(uint32_t *word) noexcept nogil:
    """Called after publishing; wakes every sleeper if one announced itself.

    The fence orders the publishing store before the load of the word (x86
    would otherwise let the load pass the store in the store buffer).
    Returns True when a FUTEX_WAKE was issued."""
    cdef uint32_t w
    atomic_fence_seq_cst()
    w = atomic_load_relaxed_u32(word)
    while w & 1:
        # New epoch, bit cleared: sleepers still on their way to FUTEX_WAIT
        # with the old value get EAGAIN; queued ones are woken below.  If the
        # CAS fails another waker bumped the epoch and its wake covers everyone
        # who announced before our fence.
        if atomic_cas_u32(word, &w, (w + 2) & ~(<uint32_t>1)):
            futex_wake(word, INT_MAX)
            return True
    return False


cdef inline void ec_wake_all(uint32_t *word) noexcept nogil:
    """Unconditional epoch bump and wake (stop, start barrier)."""
    cdef uint32_t w = atomic_load_relaxed_u32(word)
    while not atomic_cas_u32(word, &w, (w + 2) & ~(<uint32_t>1)):
        pass
    futex_wake(word, INT_MAX)


cdef inline bint flag_set(const uint32_t *flag) noexcept nogil:
    return flag != NULL and atomic_load_relaxed_u32(flag) != 0


cdef inline uint32_t spin_budget(WaitCounters *counters, uint32_t ceiling) noexcept nogil:
    """How many PAUSEs this wait may spin: the waiter's adapted budget, within
    the caller's ceiling (a waiter without counters spins the ceiling)."""
    cdef uint32_t b
    if counters == NULL or ceiling == 0:
        return ceiling
    b = counters.budget
    if b == 0:
        b = ceiling // 4 if ceiling // 4 > WAIT_SPIN_FLOOR else WAIT_SPIN_FLOOR
        counters.budget = b
    return b if b < ceiling else ceiling


cdef inline void spin_paid(WaitCounters *counters, uint32_t ceiling) noexcept nogil:
    """The condition came true while spinning: spinning pays, allow more."""
    cdef uint32_t b
    if counters != NULL:
        b = counters.budget + counters.budget // 2 + WAIT_SPIN_FLOOR
        counters.budget = b if b < ceiling else ceiling
        atomic_fetch_add_u64(&counters.spins, 1)


cdef inline void spin_wasted(WaitCounters *counters) noexcept nogil:
    """The wait had to park: the spinning was wasted, allow less."""
    if counters != NULL:
        counters.budget = counters.budget // 2 if counters.budget // 2 > WAIT_SPIN_FLOOR else WAIT_SPIN_FLOOR
        counters.parks += 1


cdef inline int wait_for(wait_ready_fn ready, void *context, uint32_t *eventcount,
                         const uint32_t *stop, uint32_t spin, uint64_t timeout_ns,
                         WaitCounters *counters) noexcept nogil:
    """Wait until ready(context): WAIT_READY, WAIT_STOPPED once *stop is set
    (the condition is checked first, so a consumer drains before it stops),
    or WAIT_TIMEOUT after timeout_ns.  `spin` is the ceiling of PAUSEs before
    parking; the waiter's `counters` (may be NULL: spin the ceiling, count
    nothing) carry the adapted budget.  `stop` may be NULL."""
    cdef uint32_t i, seen, budget
    cdef uint64_t deadline, now, spin_until = 0
    if ready(context):
        return WAIT_READY
    budget = spin_budget(counters, spin)
    for i in range(budget):
        cpu_relax()
        if ready(context):
            spin_paid(counters, spin)
            return WAIT_READY
        if flag_set(stop):
            return WAIT_STOPPED
        if i % WAIT_SPIN_CLOCK_EVERY == WAIT_SPIN_CLOCK_EVERY - 1:
            now = monotonic_ns()
            if spin_until == 0:
                spin_until = now + WAIT_SPIN_NS
            elif now >= spin_until:
                break
    deadline = monotonic_ns() + timeout_ns
    if budget:
        spin_wasted(counters)
    while True:
        seen = ec_prepare_sleep(eventcount)
        if ready(context):
            return WAIT_READY
        if flag_set(stop):
            return WAIT_STOPPED
        now = monotonic_ns()
        if now >= deadline:
            if counters != NULL:
                atomic_fetch_add_u64(&counters.timeouts, 1)
            return WAIT_TIMEOUT
        if counters != NULL:
            atomic_fetch_add_u64(&counters.sleeps, 1)
        futex_wait(eventcount, seen, deadline - now)
        # Check before announcing again: a waker cleared the bit, and leaving
        # it set when we do not sleep would cost the next waker a syscall.
        if ready(context):
            return WAIT_READY
