/*
 * sync.c — clocks, futexes and deadlines.
 *
 * Every wait in cfutures is a bounded spin followed by a futex sleep on a
 * 32-bit word. Futex words that live in shared memory are waited on with the
 * shared (non-private) operations so that a worker process can wake the
 * caller and the other way round. Deadlines are absolute CLOCK_MONOTONIC
 * nanoseconds, UINT64_MAX meaning "never".
 */
#include "internal.h"

#include <errno.h>
#include <linux/futex.h>
#include <sched.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__ ||
               __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__, "unknown byte order");

uint64_t cf__now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

uint64_t cf__deadline(int timeout_ms)
{
    if (timeout_ms < 0)
        return UINT64_MAX;
    return cf__now_ns() + (uint64_t)timeout_ms * 1000000u;
}

void *cf__low32(_Atomic uint64_t *word)
{
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    return (void *)word;
#else
    return (char *)word + 4;
#endif
}

int cf__futex_wait(void *addr, uint32_t val, bool shared, uint64_t deadline)
{
    struct timespec ts, *tsp = NULL;
    if (deadline != UINT64_MAX) {
        uint64_t now = cf__now_ns();
        if (now >= deadline)
            return ETIMEDOUT;
        uint64_t left = deadline - now;
        ts.tv_sec = (time_t)(left / 1000000000u);
        ts.tv_nsec = (long)(left % 1000000000u);
        tsp = &ts;
    }
    int op = shared ? FUTEX_WAIT : FUTEX_WAIT_PRIVATE;
    if (syscall(SYS_futex, addr, op, val, tsp, NULL, 0) == 0)
        return 0;
    /* EAGAIN: the word changed already; EINTR: a signal. Both mean look again. */
    return errno == ETIMEDOUT ? ETIMEDOUT : 0;
}

int cf__futex_wait_any(void *const *addrs, const uint32_t *vals, unsigned n, bool shared, uint64_t deadline)
{
#ifdef SYS_futex_waitv
    struct futex_waitv w[CF__WAIT_ANY_MAX];
    struct timespec ts, *tsp = NULL;
    if (n == 0 || n > CF__WAIT_ANY_MAX)
        return EINVAL;
    for (unsigned i = 0; i < n; i++)    /* FUTEX_32 (FUTEX2_SIZE_U32), and private unless shared */
        w[i] = (struct futex_waitv){.val = vals[i], .uaddr = (uint64_t)(uintptr_t)addrs[i],
                                    .flags = 2u | (shared ? 0u : (unsigned)FUTEX_PRIVATE_FLAG)};
    if (deadline != UINT64_MAX) {
        ts.tv_sec = (time_t)(deadline / 1000000000u);    /* absolute, on CLOCK_MONOTONIC */
        ts.tv_nsec = (long)(deadline % 1000000000u);
        tsp = &ts;
    }
    if (syscall(SYS_futex_waitv, w, n, 0, tsp, CLOCK_MONOTONIC) >= 0)
        return 0;
    /* EAGAIN: a word changed already; EINTR: a signal. Both mean look again. */
    return errno == EAGAIN || errno == EINTR ? 0 : errno;
#else
    (void)addrs;
    (void)vals;
    (void)n;
    (void)shared;
    (void)deadline;
    return ENOSYS;
#endif
}

void cf__futex_wake(void *addr, int n, bool shared)
{
    syscall(SYS_futex, addr, shared ? FUTEX_WAKE : FUTEX_WAKE_PRIVATE, n, NULL, NULL, 0);
}

void cf__cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

void cf__spin_begin(cf__spinner *s, uint64_t budget_ns)
{
    s->started = 0;    /* at the first clock reading */
    s->budget_ns = budget_ns;
    s->steps = 0;
}

bool cf__spin(cf__spinner *s)
{
    cf__cpu_relax();
    if (++s->steps % CF__SPIN_CLOCK_STEPS != 0)
        return true;
    uint64_t now = cf__now_ns();
    if (s->started == 0) {
        s->started = now;
        s->yield_at = now + CF__SPIN_PURE_NS;
        return true;
    }
    if (now - s->started >= s->budget_ns)
        return false;
    if (now >= s->yield_at) {
        sched_yield();
        s->yield_at = cf__now_ns() + CF__SPIN_PURE_NS;
    }
    return true;
}
