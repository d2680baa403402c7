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
#include <fcntl.h>
#include <linux/futex.h>
#include <sched.h>
#include <string.h>
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

/*
 * The time-stamp counter as a clock (cf__stamp_ns). The kernel keeps
 * CLOCK_MONOTONIC on this counter only where it ticks at one rate on every
 * core, in every power state, and agrees across cores (its clock source is
 * then "tsc"); elsewhere, and off x86-64, a stamp is cf__now_ns.
 *
 * The line: the counter's rate is measured against CLOCK_MONOTONIC over
 * all the time since the process's first stamp (its base), from pairs of
 * readings (counter, clock, counter; the clock taken at the middle; the
 * narrowest of three, none wider than PAIR_MAX_TICKS, which an interrupt
 * in between would be). Until BASE_MIN_NS has passed, stamps are the
 * clock's readings; the first line starts at a reading taken after them.
 * Every CF__STAMP_SPAN_NS one thread draws the next line, from where the
 * line is then, not from where the clock is, so that stamps never step
 * back: one thread's stamps rise, and those of a process's threads keep the
 * order of the events they stamp (but for the unordered read, internal.h).
 * Its slope is the rate, corrected by the line's distance from the clock,
 * which it so closes within CLOSE_SPANS spans. A distance over STEP_NS (the
 * counter stopped or jumped: a suspended machine, a moved virtual machine)
 * makes the line jump to the clock instead.
 *
 * Readers never wait: the next line is drawn in the other of two places
 * and then made current; a reader that catches a place being drawn (two
 * lines drawn while it read) reads again. One thread draws at a time; the
 * others go on along the current line past its span meanwhile. A line made
 * current late (its thread preempted) would put the stamps taken along the
 * old one meanwhile above it, by the delay times the slopes' difference:
 * line_put starts it again from where the old one is when it is that late,
 * and each thread's stamps are held at its last (cf__stamp_last) against
 * what is left, a reader that read the old line late among it. Worker
 * processes draw lines of their own, each within a microsecond of
 * CLOCK_MONOTONIC.
 */
#define CF__STAMP_SPAN_NS 1000000u
#define BASE_MIN_NS       1000000u    /* the rate is measured over at least this */
#define PAIR_MAX_TICKS    8192u
#define STEP_NS           20000
#define CLOSE_SPANS       8u
#define LATE_TICKS        2048u       /* a line put this late starts again */

cf__stamp_clock cf__stamps;
_Thread_local uint64_t cf__stamp_last;

#if defined(__x86_64__)
static struct {
    pthread_once_t once;
    bool on;
    uint64_t tsc, ns;    /* the base: the first pair */
    uint64_t retry_ns;   /* no line before this (draw_later); under cf__stamps.drawing */
} stamp_base = {.once = PTHREAD_ONCE_INIT};

/* *tsc: the counter when CLOCK_MONOTONIC read *ns. False if every try was interrupted. */
static bool stamp_pair(uint64_t *tsc, uint64_t *ns)
{
    uint64_t best = UINT64_MAX;
    *tsc = *ns = 0;
    for (int i = 0; i < 3; i++) {
        uint64_t t0 = __builtin_ia32_rdtsc();
        uint64_t n = cf__now_ns();
        uint64_t w = __builtin_ia32_rdtsc() - t0;
        if (w < best) {
            best = w;
            *tsc = t0 + w / 2;
            *ns = n;
        }
    }
    return best <= PAIR_MAX_TICKS;
}

typedef cf__stamp_view line;

/* The line's value at counter t (at or past its tsc; before it, its tsc). */
static uint64_t line_at(const line *l, uint64_t t)
{
    uint64_t d = (int64_t)(t - l->tsc) > 0 ? t - l->tsc : 0;
    return l->ns + (uint64_t)(((unsigned __int128)d * l->mult) >> 32);
}

/* The current line, whole (span 0: none yet). */
static line line_now(void)
{
    line v;
    while (!cf__stamp_look(&v))
        cf__cpu_relax();
    return v;
}

/* Under cf__stamps.drawing: writes v into the place not read (not yet current). */
static void line_write(const line *v)
{
    uint32_t next = (atomic_load_explicit(&cf__stamps.cur, memory_order_relaxed) + 1) & 1;
    cf__stamp_line *l = &cf__stamps.lines[next];
    uint32_t seq = atomic_load_explicit(&l->seq, memory_order_relaxed) | 1;
    /* Release stores (plain stores on x86): a reader that sees a new word
     * sees the odd seq before it. */
    atomic_store_explicit(&l->seq, seq, memory_order_relaxed);
    atomic_store_explicit(&l->tsc, v->tsc, memory_order_release);
    atomic_store_explicit(&l->ns, v->ns, memory_order_release);
    atomic_store_explicit(&l->mult, v->mult, memory_order_release);
    atomic_store_explicit(&l->span, v->span, memory_order_release);
    atomic_store_explicit(&l->seq, seq + 1, memory_order_release);
}

/* Under cf__stamps.drawing: makes the line written the current one. */
static void line_publish(void)
{
    uint32_t next = (atomic_load_explicit(&cf__stamps.cur, memory_order_relaxed) + 1) & 1;
    atomic_store_explicit(&cf__stamps.cur, next, memory_order_release);
}

/*
 * Under cf__stamps.drawing: puts v, which starts where `old` is at v->tsc
 * (along) or at v->ns. Stamps along the old line go on until the new one is
 * current: if that is late (this thread was preempted), the new line
 * starts again from where the old one is then, so that the slopes' small
 * difference is not stretched over the delay.
 */
static uint64_t line_put(line *v, const line *old, bool along)
{
    for (;;) {
        line_write(v);
        uint64_t t = __builtin_ia32_rdtsc();
        if (t - v->tsc <= LATE_TICKS || !along)
            break;
        v->tsc = t;
        v->ns = line_at(old, t);
    }
    line_publish();
    return v->ns;
}

/* In the child of a fork, the thread that drew a line may not be there to finish it. */
static void stamp_forget(void)
{
    atomic_store_explicit(&cf__stamps.drawing, 0, memory_order_relaxed);
}

static bool counter_is_clock(void)
{
    char name[16];
    int fd = open("/sys/devices/system/clocksource/clocksource0/current_clocksource",
                  O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return false;
    ssize_t n = read(fd, name, sizeof name);
    close(fd);
    return n == 4 && memcmp(name, "tsc\n", 4) == 0;
}

static void stamp_start(void)
{
    if (!counter_is_clock() || !stamp_pair(&stamp_base.tsc, &stamp_base.ns))
        return;
    pthread_atfork(NULL, NULL, stamp_forget);
    stamp_base.on = true;
}

/* Under cf__stamps.drawing: no pair could be read (interrupted every time, or
 * a clock too slow to read, as under valgrind). The line goes on as it was
 * for another span; with no line, stamps are the clock's for one. */
static uint64_t draw_later(const line *old, uint64_t now)
{
    if (old->span == 0) {
        stamp_base.retry_ns = now + CF__STAMP_SPAN_NS;
        return now;
    }
    line v = *old;
    v.tsc = __builtin_ia32_rdtsc();
    v.ns = line_at(old, v.tsc);
    return line_put(&v, old, true);
}

/* Under cf__stamps.drawing: the line after `old`, for a stamp now. */
static uint64_t draw(const line *old)
{
    uint64_t pt, pn;
    if (old->span == 0) {    /* no line yet: none before the rate is measured over BASE_MIN_NS */
        uint64_t now = cf__now_ns();
        if (now - stamp_base.ns < BASE_MIN_NS || now < stamp_base.retry_ns)
            return now;
    }
    if (!stamp_pair(&pt, &pn) || pt <= stamp_base.tsc || pn - stamp_base.ns < BASE_MIN_NS)
        return draw_later(old, cf__now_ns());
    uint64_t rate =
        (uint64_t)(((unsigned __int128)(pn - stamp_base.ns) << 32) / (pt - stamp_base.tsc));
    if (rate == 0)
        return draw_later(old, pn);
    int64_t off = old->span != 0 ? (int64_t)(line_at(old, pt) - pn) : 0;    /* above the clock */
    bool along = old->span != 0 && off <= STEP_NS && off >= -STEP_NS;
    line v = {.mult = rate};
    if (along)    /* closes the distance over CLOSE_SPANS spans: within 0.25 % of the rate */
        v.mult = (uint64_t)((__int128)rate * ((int64_t)(CLOSE_SPANS * CF__STAMP_SPAN_NS) - off) /
                            (CLOSE_SPANS * CF__STAMP_SPAN_NS));
    uint64_t ticks = (uint64_t)(((unsigned __int128)CF__STAMP_SPAN_NS << 32) / rate);
    v.span = ticks < UINT64_MAX / v.mult ? ticks : UINT64_MAX / v.mult;
    v.tsc = __builtin_ia32_rdtsc();
    if (along) {
        v.ns = line_at(old, v.tsc);
    } else {
        /* The first line, or a jump: from the clock, not below a reading taken after every
         * stamp so far. That reading is also after v.tsc: taken late (this thread preempted
         * between the two), it would start the line that much ahead of the clock (seen: 5 us
         * on a loaded machine), so it is taken again, with v.tsc, until the two are close. */
        line from = {pt, pn, rate, 0};
        for (int tries = 0;; tries++) {
            uint64_t after = cf__now_ns();
            v.ns = line_at(&from, v.tsc);
            if (v.ns < after)
                v.ns = after;
            uint64_t t = __builtin_ia32_rdtsc();
            if (t - v.tsc <= LATE_TICKS || tries == 8)
                break;
            v.tsc = t;
        }
    }
    return line_put(&v, old, along);
}
#endif

/* cf__stamp_ns past the line's span, or with no line. */
uint64_t cf__stamp_slow(void)
{
#if defined(__x86_64__)
    pthread_once(&stamp_base.once, stamp_start);
    if (!stamp_base.on)
        return cf__now_ns();
    line old = line_now();
    uint64_t t = __builtin_ia32_rdtsc();
    if (t - old.tsc < old.span)    /* drawn meanwhile */
        return line_at(&old, t);
    if (atomic_exchange_explicit(&cf__stamps.drawing, 1, memory_order_acquire) != 0)
        return old.span != 0 ? line_at(&old, t) : cf__now_ns();
    old = line_now();    /* the one drawn last, now that no other thread draws */
    uint64_t at = draw(&old);
    atomic_store_explicit(&cf__stamps.drawing, 0, memory_order_release);
    return at;
#else
    return cf__now_ns();
#endif
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
