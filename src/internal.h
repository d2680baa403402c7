/*
 * cfutures private declarations: never installed.
 *
 * The front (executor.c) validates every call and dispatches through the
 * cf__ops table of the executor's backend (thread_pool.c, process_pool.c).
 * future.c owns the future object and every wait; queue.c the completion
 * queue built on its done-callbacks; sync.c the futex and clock
 * helpers; shm.c the shared-memory regions; worker.c the loop that runs in a
 * worker process. The layout of the process pool's shared region,
 * which the caller, the zygote and the workers agree on, is in ring.h.
 */
#ifndef CF_INTERNAL_H
#define CF_INTERNAL_H

#include "cfutures.h"

#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <signal.h>
#include <sys/types.h>

#define CF__HIDDEN __attribute__((visibility("hidden")))

#define CF__MAX_WORKERS 1024u
#define CF__CACHELINE   64

/* ---- sync.c: clocks, futexes, deadlines -------------------------------- */

uint64_t cf__now_ns(void);

/*
 * Time stamps: a task's start_ns and end_ns, a map's, a trace's events.
 * CLOCK_MONOTONIC nanoseconds like cf__now_ns, read where the kernel's own
 * clock source is the processor's time-stamp counter from that counter,
 * along a line that sync.c lays against CLOCK_MONOTONIC again every
 * CF__STAMP_SPAN_NS: no call into the vDSO, whose ordered read and
 * sequence checks were a third of a thread pool's round trip. A thread's
 * stamps do not go back. The read is not ordered: it may be taken while a
 * load before it is still on its way, so a stamp can come up to about a
 * cache line's transfer (0.1 us) before the clock reading of an event that
 * caused it in another thread.
 * Deadlines and timeouts keep cf__now_ns, the kernel's clock, which a
 * futex's deadline is measured on.
 */
typedef struct cf__stamp_line {
    _Atomic uint32_t seq;     /* odd while the line is drawn */
    _Atomic uint64_t tsc;     /* the line passes through (tsc, ns), */
    _Atomic uint64_t ns;
    _Atomic uint64_t mult;    /* rises mult / 2^32 ns a tick, */
    _Atomic uint64_t span;    /* and is redrawn this many ticks past tsc (0: no line) */
} cf__stamp_line;
typedef struct cf__stamp_clock {
    _Atomic uint32_t cur;     /* lines[cur & 1] is the line; the other is drawn */
    _Atomic uint32_t drawing; /* a thread draws the other */
    cf__stamp_line lines[2];
} cf__stamp_clock;
extern cf__stamp_clock cf__stamps;
/* The thread's last stamp: its stamps never go back, whatever the line does,
 * but when a counter that jumped is let go (sync.c's STEP_NS, and more). */
#define CF__STAMP_HOLD_NS 100000u
extern _Thread_local uint64_t cf__stamp_last __attribute__((tls_model("initial-exec")));
uint64_t cf__stamp_slow(void);

/* A line's words, as read. */
typedef struct cf__stamp_view {
    uint64_t tsc, ns, mult, span;
} cf__stamp_view;

/* The current line, read whole into *v; false if a thread drew it meanwhile. */
static inline bool cf__stamp_look(cf__stamp_view *v)
{
    uint32_t cur = atomic_load_explicit(&cf__stamps.cur, memory_order_acquire);
    const cf__stamp_line *l = &cf__stamps.lines[cur & 1];
    /* Acquire loads (plain loads on x86): the seq read again after the words
     * cannot pass them, and a word written after the odd seq shows it. */
    uint32_t seq = atomic_load_explicit(&l->seq, memory_order_acquire);
    v->tsc = atomic_load_explicit(&l->tsc, memory_order_acquire);
    v->ns = atomic_load_explicit(&l->ns, memory_order_acquire);
    v->mult = atomic_load_explicit(&l->mult, memory_order_acquire);
    v->span = atomic_load_explicit(&l->span, memory_order_acquire);
    return (seq & 1) == 0 && atomic_load_explicit(&l->seq, memory_order_relaxed) == seq;
}

static inline uint64_t cf__stamp_ns(void)
{
#if defined(__x86_64__)
    cf__stamp_view v;
    uint64_t stamp, d;
    if (cf__stamp_look(&v) && (d = __builtin_ia32_rdtsc() - v.tsc) < v.span)
        stamp = v.ns + ((d * v.mult) >> 32);    /* span keeps d * mult below 2^64 */
    else
        stamp = cf__stamp_slow();
    if (stamp < cf__stamp_last && cf__stamp_last - stamp < CF__STAMP_HOLD_NS)
        return cf__stamp_last;
    cf__stamp_last = stamp;
    return stamp;
#else
    return cf__stamp_slow();
#endif
}
/* Absolute CLOCK_MONOTONIC deadline for a poll(2)-style timeout; UINT64_MAX for -1. */
uint64_t cf__deadline(int timeout_ms);
/* Waits while *addr == val, until woken or the deadline. Returns 0, or ETIMEDOUT. */
int  cf__futex_wait(void *addr, uint32_t val, bool shared, uint64_t deadline);
/*
 * Sleeps until one of the n words (at most CF__WAIT_ANY_MAX) no longer
 * holds its value, or is woken, or the deadline passes (futex_waitv, Linux
 * 5.16). Returns 0 (look again), ETIMEDOUT, or another errno (ENOSYS
 * where the kernel, or a tool that runs the program, lacks futex_waitv;
 * EPERM under a seccomp filter): the caller then sleeps another way.
 */
#define CF__WAIT_ANY_MAX 128
int  cf__futex_wait_any(void *const *addrs, const uint32_t *vals, unsigned n, bool shared, uint64_t deadline);
void cf__futex_wake(void *addr, int n, bool shared);
/* The low 32 bits of a 64-bit atomic word, as a futex address. */
void *cf__low32(_Atomic uint64_t *word);
void cf__cpu_relax(void);
/*
 * A bounded spin: cf__spin_begin, then one cf__spin before each look again,
 * until it returns false (budget_ns have passed). A step is one pause, so
 * that what the spinner waits for is seen within tens of nanoseconds; the
 * clock is read every CF__SPIN_CLOCK_STEPS steps only, the budget counting
 * from the first reading: a wait that ends within that many steps (a round
 * trip of an empty task) never reads it. Every CF__SPIN_PURE_NS
 * the spinner yields the core once, so that on a loaded machine it never
 * keeps the thread or process it waits for from running for long, yet makes
 * few system calls on a busy one.
 */
typedef struct cf__spinner {
    uint64_t started, budget_ns;
    uint64_t yield_at;             /* when the next sched_yield is due */
    unsigned steps;
} cf__spinner;
void cf__spin_begin(cf__spinner *s, uint64_t budget_ns);
bool cf__spin(cf__spinner *s);
#define CF__SPIN_PURE_NS     4000u
#define CF__SPIN_CLOCK_STEPS 16u
/* Spin budgets, in nanoseconds, before a waiter sleeps. */
#define CF__SPIN_WAIT_NS   40000u   /* a caller waiting on a future */
#define CF__SPIN_IDLE_NS   60000u   /* an idle worker waiting for work */

/* ---- future.c ---------------------------------------------------------- */

enum {
    CF__PENDING   = 0,
    CF__RUNNING   = 1,
    CF__FINISHED  = 2,   /* ran, or failed (crash, timeout) */
    CF__CANCELLED = 3,
    CF__STATE_MASK = 3,
    CF__WAITERS   = 4,   /* someone sleeps on the state word */
};

enum { CF__FIRED = 1, CF__FIRED_WAITERS = 2 };

typedef struct cf__callback {
    cf_done_fn          *fn;
    void                *ctx;
    struct cf__callback *next;
} cf__callback;

#define CF__INLINE_RESULT 16

typedef struct cf__core cf__core;
typedef struct cf__trace cf__trace;

struct cf_future {
    _Atomic uint32_t state;        /* CF__PENDING.. | CF__WAITERS */
    _Atomic uint32_t refs;         /* the caller's and the executor's */
    _Atomic uint32_t fired;        /* CF__FIRED once the callbacks taken at finish
                                      have returned (set at finish if there were none),
                                      | CF__FIRED_WAITERS: someone sleeps on it
                                      (cf_future_wait_callbacks); a futex */
    atomic_flag      lock;         /* guards the callback list and the finish */
    pid_t            owner;        /* the process that created its executor */
    cf__core        *core;         /* its executor's core, which outlives the executor */
    int              code;         /* the task's code or a CF_E* code */
    int              timeout_ms;   /* cf_submit_with: 0 the pool's limit, > 0 this task's, -1 none */
    int              signal;
    bool             has_result;   /* the task ran to its end: result is valid */
    size_t           result_size;  /* the capacity given at submit */
    uint64_t         result_len;   /* bytes the task produced, <= result_size
                                      (cf_task_set_result_size); valid with has_result */
    void            *result;       /* inline_result or heap */
    cf_task_info     info;
    char            *error_text;   /* heap, or NULL: written with the outcome (step 1) */
    cf__callback    *callbacks;    /* in the order added; taken at finish */
    cf__callback    *fire;         /* callbacks the finisher will run */
    cf_future       *next_done;    /* link in a finisher's list (cf__future_finish),
                                      or, once freed, in its core's spare list */
    struct cf_queue *_Atomic queue; /* the queue it waits in (queue.c), NULL if none */
    struct cf__map  *map;          /* a cf_map_submit future's map (map.c), NULL for a task */
    struct {                       /* set at submit when the pool is traced (trace.c) */
        uint64_t id;               /* 1, 2, … in its pool; 0: not traced */
        uint64_t submit_ns;
        void    *fn;
    } trace;
    _Alignas(16) unsigned char inline_result[CF__INLINE_RESULT];
    /* The backend's own state for this future: cf__ops.future_size bytes,
     * zeroed at creation, in the same allocation. Only the backend reads it,
     * as its own type, through CF__FUTURE_PART. */
    _Alignas(16) unsigned char part[];
};

/* f's backend state, as the backend's type T (at most 16-byte aligned). */
#define CF__FUTURE_PART(f, T) ((T *)(void *)(f)->part)

/* A new pending future with its result buffer and ex's backend part,
 * holding two references (and one on ex's core). */
cf_future *cf__future_new(cf_executor *ex, size_t result_size);
/*
 * Finishing a future: the protocol every backend follows, in three steps.
 *
 *  1. The one thread that took f off the backend's books (the worker that
 *     dequeued it, or a thread that unqueued it or released its slot under
 *     the backend's lock), and so the only one that can finish it, writes
 *     what the task left: the result bytes, f->has_result, f->info.
 *  2. cf__future_finish, under the backend's lock if it holds one: records
 *     code (CF__FINISHED: the task's or a CF_E* code; CF__CANCELLED:
 *     CF_ECANCELED) and signal, flips the state word to done, which
 *     publishes step 1 to whoever sees it done, takes the callbacks, and
 *     pushes f on the finisher's list *fire (NULL to begin with). False, and
 *     nothing pushed, if f was done already.
 *  3. cf__future_fire(list), once every lock is released: for each future
 *     of the list, wakes its waiters, runs its callbacks, drops the
 *     executor's reference.
 */
bool cf__future_finish(cf_future *f, int state, int code, int sig, cf_future **fire);
/* Takes and drops a reference, as the caller's and the executor's (queue.c's own). */
void cf__future_ref(cf_future *f);
void cf__future_unref(cf_future *f);
void cf__future_fire(cf_future *list);
uint32_t cf__future_state(const cf_future *f);
bool cf__state_done(uint32_t s);
/*
 * The defaults a backend names in its cf__ops for the hooks it has no use
 * for. wait_state sleeps on f's own state word (the backend's finish wakes
 * it); running_state reads CF__RUNNING there (for a backend that stores it
 * when a worker takes the task); watch_none does nothing (for a backend that
 * finishes every future promptly anyway).
 */
int  cf__future_wait_state(cf_executor *ex, cf_future *f, uint64_t deadline);
bool cf__future_running_state(cf_executor *ex, cf_future *f);
void cf__future_watch_none(cf_executor *ex, cf_future *f);

/* ---- map.c: a map's controls, and maps as futures ---------------------- */

/*
 * What the front and a backend's map share about one cf_map, cf_map_chunks
 * or submitted map: the caller's element callback, the progress count, and
 * the stop request of cf_future_cancel. The backend reports every element
 * that ran (cf__map_report, from whichever thread learnt its code), counts
 * them (cf__map_count), and looks at `cancel` where it hands work out: an
 * element it then never runs ends CF_ECANCELED in status, and the backend
 * sets `cut`. A submitted map waits in cf_map_submit until its backend
 * admitted it (cf__map_admit), so that a shutdown that comes later lets it
 * run to its end like any accepted work.
 */
typedef struct cf__map {
    size_t           n;
    cf_element_fn   *on_element;   /* the caller's, or NULL */
    void            *ctx;
    _Atomic bool     cancel;       /* cf_future_cancel: hand no more of it out, stop it */
    _Atomic bool     cut;          /* an element never ran, or was stopped, for that */
    _Atomic uint32_t admitted;     /* 0 not yet, 1 admitted, 2 refused (a futex) */
    bool             submitted;    /* by cf_map_submit: admission is awaited */
    size_t           min_chunk;    /* automatic chunks: guided, not below this; 0: fixed */
    unsigned         workers;      /* automatic chunks: the pool's count at the start */
    /* Every thread pool worker reads `cancel` before each element, and adds
     * to `done` after each chunk: a line apart, or each add would cost the
     * other workers' next look a miss. (Padding, not alignment: the struct
     * is also in malloc'd memory.) */
    char             apart_[CF__CACHELINE];
    _Atomic size_t   done;         /* elements that ran: cf_future_progress */
} cf__map;

/*
 * The size of the next chunk when `rem` elements are left, `chunk` being
 * the map's (largest) chunk. Fixed unless the size is automatic: then
 * guided, rem / (2 workers), bounded by chunk (n / (4 workers)) above and
 * min_chunk (n / (32 workers)) below, so that the last chunks are small
 * wherever the heavy elements lie.
 */
static inline size_t cf__map_take(const cf__map *m, size_t rem, size_t chunk)
{
    size_t g = chunk;
    if (m->min_chunk != 0) {
        size_t per = 2 * (size_t)m->workers;
        g = (rem + per - 1) / per;
        g = g < m->min_chunk ? m->min_chunk : g;
        g = g > chunk ? chunk : g;    /* chunk wins: a process pool may have lowered it */
    }
    return rem < g ? rem : g;
}

/* The backend has registered the map: a shutdown from now on lets it finish. */
void cf__map_admit(cf__map *m);
/* The map this thread runs elements of or reports for (a thread pool's
 * worker inside it, the thread driving it on a process pool), else NULL:
 * cf_future_cancel from there must not wait for the map to end. */
extern _Thread_local const cf__map *cf__map_here;
/* map.c: cf_map_submit's work, once the front checked the arguments. */
int  cf__map_submit(cf_executor *ex, cf_fn *fn, cf_chunk_fn *cfn, const void *in, size_t in_size,
                    void *out, size_t out_size, size_t n, size_t chunk, const cf__map *ctl,
                    const cf_map_options *opts, cf_future **future);
/* Asks f's map (f->map) to stop: cf_future_cancel, with ex pinned. */
void cf__map_future_cancel(cf_future *f, cf_executor *ex);
/* cf_executor_free and cf_shutdown with wait: until every submitted map's
 * future has fired (but the one whose thread calls), and, with join, its
 * thread is joined. */
void cf__maps_wait(cf_executor *ex, bool join);
/* Element i ran (or its worker died under it) with this code. */
static inline void cf__map_report(cf__map *m, size_t i, int code)
{
    if (m->on_element != NULL)
        m->on_element(i, code, m->ctx);
}
/* Adds count elements that ran to the map's progress. */
static inline void cf__map_count(cf__map *m, size_t count)
{
    atomic_fetch_add_explicit(&m->done, count, memory_order_relaxed);
}
static inline bool cf__map_cancelled(const cf__map *m)
{
    return atomic_load_explicit(&m->cancel, memory_order_relaxed);
}
/*
 * A backend refused the map at its call, its pool broken before it: a
 * cf_map's elements all end CF_EBROKEN in status, as those of a map the
 * pool broke under; a submitted map writes nothing.
 */
static inline void cf__map_refused_broken(const cf__map *m, int *status, size_t n)
{
    for (size_t i = 0; !m->submitted && status != NULL && i < n; i++)
        status[i] = CF_EBROKEN;
}

/* ---- executor.c and backends ------------------------------------------- */

/*
 * A backend's operations. Every hook is mandatory: the front calls each one
 * without looking, and for those that take a future, with the executor
 * pinned (the future's core entered, the future seen not done). For wait,
 * watch and running a backend may name the defaults of future.c.
 */
typedef struct cf__ops {
    const char *name;
    /* f is new and pending; copy arg now. On failure f was never queued:
     * the front frees it. */
    int  (*submit)(cf_executor *ex, cf_future *f, cf_fn *fn, const void *arg, size_t arg_size);
    /* Exactly one of fn (per element) and cfn (per chunk) is set; ctl->n == n.
     * Calls cf__map_admit(ctl) once the map is registered, before any wait. */
    int  (*map)(cf_executor *ex, cf__map *ctl, cf_fn *fn, cf_chunk_fn *cfn, const char *in,
                size_t in_size, char *out, size_t out_size, size_t n, size_t chunk, int *status);
    /* ctl->cancel is set: ends what of the map waits for a worker, and stops
     * what runs where the backend can. The map's own call then returns. */
    void (*map_cancel)(cf_executor *ex, cf__map *ctl);
    /* Cancels a not-done future: 0, or CF_EBUSY. */
    int  (*cancel)(cf_executor *ex, cf_future *f);
    /* Waits for f until the deadline: 0 or CF_ETIMEDOUT. */
    int  (*wait)(cf_executor *ex, cf_future *f, uint64_t deadline);
    /* Asks that f be finished promptly when its task ends (callbacks, cf_wait). */
    void (*watch)(cf_executor *ex, cf_future *f);
    /* Optional: finishes now, in the calling thread, the futures whose
     * tasks have ended, watched or not (a caller that polls its futures
     * instead of watching them, so that no other thread is woken for each). */
    void (*collect)(cf_executor *ex);
    /* True if a worker has taken f's task (f not done); the front then
     * records CF__RUNNING in f's state word, so that it stays true. */
    bool (*running)(cf_executor *ex, cf_future *f);
    /* ex->shut is set: refuses new work; cancel_pending: cancels the tasks no
     * worker took. wait: returns once every future is done and no worker
     * runs. Called again by cf_executor_free, with wait. */
    /* stop_running (cf_shutdown_now): also stop what runs, where the backend can. */
    int  (*shutdown)(cf_executor *ex, bool wait, bool cancel_pending, bool stop_running);
    /* workers is valid and ex not shut (the front checked): from now on the
     * pool runs that many; it stores the count in ex->workers. Growing
     * starts workers at once; shrinking lets the surplus finish their task
     * and leave, so no task is lost. 0, CF_ESHUTDOWN, CF_EBROKEN, or
     * CF_EAGAIN / CF_ENOMEM when a thread could not be started. */
    int  (*resize)(cf_executor *ex, unsigned workers);
    /* Frees ex, after shutdown with wait and once no future call is inside:
     * through cf__executor_release, then its own memory. */
    void (*destroy)(cf_executor *ex);
    size_t max_size;               /* largest argument or result it carries */
    size_t future_size;            /* bytes of its own state in each future (part) */
} cf__ops;

struct cf_executor {
    const cf__ops   *ops;
    cf__trace       *trace;        /* NULL unless CFUTURES_TRACE (trace.c): set at init,
                                      closed at release, after every future was fired.
                                      Here, in a line only written at shutdown, not in
                                      the core, whose counts the callers keep writing */
    _Atomic unsigned workers;      /* what the pool runs now: set by create and resize */
    unsigned         cpus;         /* the CPUs of the creator's affinity mask, at creation */
    _Atomic bool     shut;         /* no new work accepted */
    pid_t            owner;        /* the process that created it: the only one it serves */
    cf__core        *core;
    cf_options       opts;         /* with initargs pointing at initargs_copy */
    void            *initargs_copy;
    pthread_mutex_t  drivers_mu;   /* map.c: the threads of submitted maps */
    struct cf__driver *drivers;    /* under drivers_mu: started and not yet joined */
    struct cf__driver *idle_drivers; /* under drivers_mu: drivers waiting for a map */
    bool             drivers_closing; /* under drivers_mu: idle drivers end (cf_executor_free) */
    _Atomic uint32_t maps_live;    /* submitted maps whose future is not fired yet (a futex) */
};

/*
 * As many workers as CPUs: a caller that waits spinning does so on a
 * worker's core, and that worker runs only once the wait ends. A map's
 * caller then yields its core once (thread_pool.c:tp_map, pp_map.c).
 */
static inline bool cf__no_core_to_spare(cf_executor *ex)
{
    return atomic_load(&ex->workers) >= ex->cpus;
}

/*
 * Where an executor's futures' memory comes from (fmem.c): chunks its core
 * maps and fills ahead, and the futures freed, kept for the next ones.
 * Every field under mu.
 */
typedef struct cf__fmem {
    pthread_mutex_t   mu;
    cf_future        *spare;        /* freed futures, linked by next_done */
    bool              open;         /* false once the executor is released */
    bool              no_populate;  /* the kernel refused to fill pages ahead */
    struct cf__chunk *chunks;       /* the chunks mapped, each with a future in it */
    char             *cut;          /* where the next future is cut, in the newest chunk */
    char             *end;          /* that chunk's end */
    char             *filled;       /* its pages are filled up to here */
} cf__fmem;
void cf__fmem_init(cf__core *c);
/* Memory for a new future of c's executor (cf__ops.future_size included), or NULL. */
cf_future *cf__fmem_take(cf__core *c);
/* Takes back a future's memory, at its last reference. */
void cf__fmem_put(cf__core *c, cf_future *f);
/* The executor is released: its spares go, and its chunks as they empty. */
void cf__fmem_close(cf__core *c);
/* c itself goes: every future of it is gone. */
void cf__fmem_fini(cf__core *c);

/*
 * What a future needs of its executor, in an object that outlives it: the
 * executor and each of its futures hold a reference. A future call that
 * must reach the backend enters the core before it looks whether the future
 * is done (pin, future.c); cf_executor_free, once every future is done,
 * waits until no call is inside before the backend frees anything.
 */
struct cf__core {
    _Atomic uint32_t refs;         /* the executor's, and one per future */
    _Atomic uint32_t inside;       /* calls that may be using the executor; a futex */
    _Atomic uint32_t draining;     /* cf_executor_free waits for inside to reach 0 */
    const cf__ops   *ops;          /* static: readable once the executor is gone */
    cf_executor     *ex;
    cf__fmem         mem;          /* its futures' memory */
};
void cf__core_ref(cf__core *c);
void cf__core_unref(cf__core *c);
void cf__core_enter(cf__core *c);
void cf__core_leave(cf__core *c);

/*
 * This process's pid, cached (getpid is a system call on current glibc) in
 * memory the kernel wipes in a forked child, so a fork worker or a child of
 * the caller never sees its parent's: 0 there until the slow path fills it.
 */
extern _Atomic pid_t *cf__pid_cell;
pid_t cf__self_pid_slow(void);
static inline pid_t cf__self_pid(void)
{
    pid_t pid = atomic_load_explicit(cf__pid_cell, memory_order_relaxed);
    return __builtin_expect(pid != 0, 1) ? pid : cf__self_pid_slow();
}
/* True when the caller is not the process that created the executor. */
static inline bool cf__foreign(pid_t owner)
{
    return owner != cf__self_pid();
}

/* Validates options and fills ex->opts, ex->workers, ex->owner, ex->core;
 * 0 or CF_EINVAL/CF_ENOMEM. It refuses options that are malformed for any
 * backend (a field out of its range); what one backend cannot do with
 * well-formed options, its constructor refuses. */
int  cf__executor_init(cf_executor *ex, const cf__ops *ops, const cf_options *opts);
/* Frees what cf__executor_init allocated (safe on a zeroed executor) and
 * drops the executor's reference on its core. */
void cf__executor_release(cf_executor *ex);
size_t cf__auto_chunk(size_t n, unsigned workers);
/* The smallest guided chunk of an automatic map: about n / (32 workers). */
size_t cf__auto_min_chunk(size_t n, unsigned workers);

int cf__thread_pool_create(cf_executor **out, const cf_options *opts);
int cf__process_pool_create(cf_executor **out, const cf_options *opts);

/* ---- backend.c: the contract for a backend outside the library ---------- */

/*
 * The same hooks as above, exported (the originals are hidden) for a
 * backend built as a library of its own, such as libcfutures-mpi
 * (src/mpi_pool.c). Not API: such a backend must come from the same build.
 */
CF_EXPORT int  cf__ext_executor_init(cf_executor *ex, const cf__ops *ops, const cf_options *opts);
CF_EXPORT void cf__ext_executor_release(cf_executor *ex);
CF_EXPORT bool cf__ext_future_finish(cf_future *f, int state, int code, int sig, cf_future **fire);
CF_EXPORT void cf__ext_future_fire(cf_future *list);
CF_EXPORT uint32_t cf__ext_future_state(const cf_future *f);
CF_EXPORT int  cf__ext_future_wait_state(cf_executor *ex, cf_future *f, uint64_t deadline);
CF_EXPORT void cf__ext_future_watch_none(cf_executor *ex, cf_future *f);
CF_EXPORT void cf__ext_collect(cf_executor *ex);
CF_EXPORT void cf__ext_map_admit(cf__map *m);
CF_EXPORT size_t cf__ext_auto_chunk(size_t n, unsigned workers);
CF_EXPORT uint64_t cf__ext_now_ns(void);
CF_EXPORT const cf__map *cf__ext_map_here(const cf__map *m);

/* ---- trace.c: CFUTURES_TRACE ------------------------------------------- */

/* True when the pool is traced: the one branch every hook costs when it is not.
 * A future's own hook looks at f->trace.id instead, in a line it holds already. */
#define CF__TRACING(ex) __builtin_expect((ex)->trace != NULL, 0)
/* A tracer for ex (its workers, owner and ops set) if CFUTURES_TRACE asks for
 * one and its file opens; else NULL (one line on stderr if it does not open). */
cf__trace *cf__trace_open(const cf_executor *ex);
/* Writes what is held, closes the JSON and the file, frees t. NULL: no-op. */
void cf__trace_close(cf__trace *t);
/* Before the backend's submit: stamps f (id, fn, time). unsubmit: it failed. */
void cf__trace_submit(cf__trace *t, cf_future *f, void *fn);
void cf__trace_unsubmit(cf__trace *t, cf_future *f);
/* From cf__future_fire, for a future stamped by cf__trace_submit (trace.id
 * set): f's outcome and cf_future_info, checked before use. */
void cf__trace_done(cf__trace *t, const cf_future *f);
/* A map chunk has ended; worker, start_ns and end_ns may come from a
 * worker process (checked before use); start_ns 0: it never started. */
void cf__trace_chunk(cf__trace *t, const void *fn, int worker, uint64_t start_ns, uint64_t end_ns,
                     size_t first, size_t count, int code, int sig);

/* Set in each worker (thread-local, so worker threads each have their own). */
extern _Thread_local int cf__worker_id;
/* cf_worker_set_context's pointer: cleared where cf__worker_id is set, so a
 * worker starts with NULL whatever thread or process it was made from. */
extern _Thread_local void *cf__worker_context;
/* cf_task_index: the map element a cf_fn works on, set around each call
 * by the map loops (thread_pool.c, worker.c); -1 everywhere else. */
extern _Thread_local long cf__task_index;

/*
 * cf_task_set_result_size: while a submitted task runs in this thread, its
 * result buffer's capacity and where the size it produced goes (the
 * future's result_len on a thread pool, the slot's res_len on a process
 * pool), which the backend set to the capacity before the call. len NULL
 * elsewhere (cf_task_set_result_size: CF_EINVAL). Set and cleared with
 * cf__task_text, by the same code.
 */
typedef struct cf__task_result {
    uint64_t  cap;
    uint64_t *len;
} cf__task_result;
extern _Thread_local cf__task_result cf__task_out;

/* ---- error.c: error texts ---------------------------------------------- */

/* Where cf_task_error writes (CF_ERROR_TEXT_MAX bytes) while a submitted
 * task runs in this thread; NULL elsewhere (cf_task_error: CF_EINVAL). */
extern _Thread_local char *cf__task_text;

/* backend.c: a map element's scope, for a backend that runs elements inside
 * a task of a local pool (libcfutures-mpi): cf_task_index answers `index`,
 * cf_task_error and cf_task_set_result_size CF_EINVAL, until leave. */
typedef struct cf__element_scope {
    long            index;
    char           *text;
    cf__task_result out;
} cf__element_scope;
CF_EXPORT void cf__ext_element_enter(long index, cf__element_scope *saved);
CF_EXPORT void cf__ext_element_leave(const cf__element_scope *saved);
/* A formatted text, cut as cf_task_error cuts it, on the heap; NULL if none. */
char *cf__error_text_new(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* CF_ERROR_TEXT_MAX bytes that another process may write meanwhile, read
 * once each and NUL-terminated, on the heap; NULL if empty or no memory. */
char *cf__error_text_copy(const volatile char *src);
/* A signal's usual description ("Segmentation fault"), or "signal". */
const char *cf__signal_name(int sig);

/* ---- shm.c ------------------------------------------------------------- */

/* Registers shared memory's fork handlers (once); before launcher.c's own. */
void  cf__shm_setup(void);

/*
 * A shared mapping backed by a memfd (close-on-exec, never named in any file
 * system), zeroed, placed where an exec worker can map it at the same address.
 * Writes the descriptor to *fd. NULL on failure.
 */
void *cf__shm_map(size_t size, int *fd);
void  cf__shm_unmap(void *p, size_t size, int fd);
/* True if [p, p+len) lies in cf_shared_alloc memory mapped before `epoch`. */
bool  cf__shared_contains(const void *p, size_t len, uint64_t epoch);
/* A counter that orders pool creations and cf_shared_alloc calls. */
uint64_t cf__shared_epoch(void);

/* cpus.c: the CPUs this process may use (affinity mask, cgroup quota), at least 1. */
unsigned cf__usable_cpus(void);
/* The CPUs of the affinity mask alone (else the online ones), at least 1: one
 * system call, no file read, for what only needs an estimate. */
unsigned cf__allowed_cpus(void);
/* Writes up to max of the cf_shared_alloc regions mapped before `epoch`;
 * returns how many there are. */
typedef struct cf__shared_region {
    uint64_t addr, size;
    int32_t  fd;
} cf__shared_region;
size_t cf__shared_list(cf__shared_region *out, size_t max, uint64_t epoch);

/* A first-fit allocator of a shared arena, used by the parent only. */
typedef struct cf__arena_block cf__arena_block;
typedef struct cf__arena {
    size_t           size;         /* bytes managed, a multiple of CF__ARENA_ALIGN */
    cf__arena_block *free;         /* free extents, sorted by offset */
    size_t           in_use;
} cf__arena;
#define CF__ARENA_ALIGN 64u
int    cf__arena_init(cf__arena *a, size_t size);
void   cf__arena_fini(cf__arena *a);
/* Offset of a block of at least size bytes, or SIZE_MAX when none is free now. */
size_t cf__arena_alloc(cf__arena *a, size_t size);
void   cf__arena_free(cf__arena *a, size_t off, size_t size);

/* ---- the process pool's workers (worker.c) ----------------------------- */

/* The region the caller, the zygote and the workers share: src/ring.h. */
typedef struct cf__shm_hdr cf__shm_hdr;

typedef struct cf__worker_boot {
    cf__shm_hdr     *h;
    unsigned         wid;
    const cf_options *opts;
    int              death_fd;     /* read end: EOF when the caller is gone */
    int              efd;          /* the manager's eventfd, as numbered here */
    pid_t            parent;       /* the process that started this worker */
    sigset_t         mask;         /* the caller's signal mask at pool creation */
} cf__worker_boot;

/* worker.c: runs in the worker process and never returns. */
__attribute__((noreturn)) void cf__worker_main(const cf__worker_boot *boot);
/* Exit status of a worker whose initializer failed (the code is in its wrec). */
#define CF__EXIT_INIT_FAILED 113
/* Exit status of an exec worker that could not map the pool's memory. */
#define CF__EXIT_BOOT_FAILED 114
/* Exit status of an exec worker started at cf_main_guard that did something
 * else first: called another cfutures function, or ended main (exec.c). */
#define CF__EXIT_NO_GUARD 116
/* worker.c: fd moved up to a high number, where a program that opens files does not reach. */
int cf__fd_move_up(int fd);

/* ---- launcher.c: the zygote that starts, stops and reaps workers -------- */

/*
 * Messages on the SOCK_SEQPACKET sockets between the manager and its zygote
 * and standby. The manager asks the zygote (SPAWN, KILL, END, STANDBY, QUIT); the
 * zygote answers (SPAWNED with the worker's pidfd, FAILED, SPARED, STANDBY_UP
 * with the new standby's socket) and reports every worker that ends (DIED,
 * with its wait status). The standby only hears PROMOTE (it becomes the
 * zygote, on the same socket) or QUIT.
 */
enum {
    CF__Z_SPAWN = 1, CF__Z_KILL, CF__Z_QUIT, CF__Z_SPAWNED, CF__Z_FAILED, CF__Z_DIED, CF__Z_SPARED,
    CF__Z_STANDBY, CF__Z_STANDBY_UP, CF__Z_PROMOTE,
    CF__Z_END,                   /* kill worker wid (pid) whatever it runs */
};
typedef struct cf__zmsg {
    uint32_t type;
    uint32_t wid;
    int32_t  pid;                /* SPAWNED, DIED: the worker; STANDBY_UP: the standby */
    int32_t  status;             /* DIED: wait status; FAILED, STANDBY_UP: 0 or a CF_E* code */
    uint64_t pos;                /* KILL, SPARED: the ring position concerned */
} cf__zmsg;

typedef struct cf__launch {
    cf__shm_hdr      *h;         /* the region: its counts and sizes are the ones */
    unsigned          nwrecs;    /* below, never read back from it (workers can */
    uint64_t          map_size;  /* write anything there) */
    const cf_options *opts;
    int               death_fd, death_wr, efd;
    sigset_t          mask;
    bool              exec;      /* CF_START_EXEC: spawn the program anew */
    bool              at_guard;  /* exec: the workers start at cf_main_guard (stdin: empty) */
    const int        *fds;       /* exec: handed to the worker as 3, 4, 5, … */
    unsigned          nfds;
} cf__launch;

/*
 * Forks the zygote (from the calling thread, which must live as long as it)
 * and writes its pid and the manager's end of its socket, tracked, to *pid
 * and *sock. 0, or CF_EAGAIN / CF_ENOMEM.
 */
int cf__launcher_start(const cf__launch *l, pid_t *pid, int *sock);

/* Worker oom_score_adj: the kernel's first choice when memory runs out. */
#define CF__WORKER_OOM_SCORE_ADJ 1000

/*
 * The descriptors the library holds in this process (every pool's), which a
 * new zygote closes so that it never keeps another pool's sockets and pipes
 * open. A descriptor is made and tracked, or untracked and closed, under
 * cf__fd_lock, which fork() takes too (pthread_atfork): no process forked
 * from this one, by a pool or by the program, sees a descriptor of the
 * library that is open and not tracked. The table grows as needed.
 */
void cf__fd_lock(void);
void cf__fd_unlock(void);
/* Under cf__fd_lock: 0, or CF_ENOMEM (fd is then not tracked: close it). */
int  cf__fd_track(int fd);
/* Untracks and closes fd, as one step with respect to fork; -1 is a no-op. */
void cf__fd_close(int fd);
/* In a forked child: closes every tracked descriptor not in keep. */
void cf__fd_close_tracked(const int *keep, unsigned nkeep);

/* ---- exec.c: the exec start method ------------------------------------- */

/* The objects loaded in this process, to translate function pointers. */
typedef struct cf__module {
    uintptr_t base, lo, hi;
    char     *name;
} cf__module;
typedef struct cf__modtab {
    cf__module *mods;
    unsigned    n;
} cf__modtab;
/*
 * True in a secure-execution program (set-user-ID, set-group-ID, gaining
 * capabilities), where exec workers ignore CFUTURES_WORKER (secure_getenv):
 * the pool then refuses CF_START_EXEC.
 */
bool cf__exec_forbidden(void);
int  cf__modtab_build(cf__modtab *t);
void cf__modtab_free(cf__modtab *t);
/* fn as (object, offset), for an exec worker; CF_EINVAL if no object the
 * workers have holds it. found may be NULL to accept any object. */
int  cf__fnref_encode(const cf__modtab *t, const _Atomic uint64_t *found, void *fn, uint64_t *ref);
/* Back to an address in this process; a plain address passes through. */
void *cf__fnref_decode(uint64_t ref);

/* What an exec worker reads at boot, in the pool's arena. */
typedef struct cf__exec_boot {
    uint32_t flags;              /* CF__BOOT_* */
    uint32_t pad_;
    uint64_t init_ref;
    uint64_t initargs, initargs_size;
    sigset_t mask;
    uint32_t nshared, nmods;
    uint64_t shared;             /* address of nshared cf__shared_region (fd as numbered there) */
    uint64_t names;              /* address of nmods NUL-terminated names, one after the other */
} cf__exec_boot;
/* The worker becomes one at the program's cf_main_guard, not in the constructor. */
#define CF__BOOT_AT_GUARD 1u

/*
 * cf_main_guard. True once this process called it from its main thread:
 * its exec pools then start their workers at that call (CF__BOOT_AT_GUARD).
 */
bool cf__main_guarded(void);
/*
 * True in an exec worker of such a pool from the library's constructor until
 * its main calls cf_main_guard. Every public function but cf_main_guard
 * begins with CF__NOT_BEFORE_GUARD: called in that span, the program is
 * running as if it were the caller (and a pool it created would start
 * workers of its own, which would do the same): the worker says so on stderr
 * and exits with CF__EXIT_NO_GUARD instead.
 */
extern _Atomic bool cf__awaiting_guard;
__attribute__((noreturn, cold)) void cf__before_guard(const char *fn);
#define CF__NOT_BEFORE_GUARD()                                                          \
    do {                                                                                \
        if (__builtin_expect(atomic_load_explicit(&cf__awaiting_guard, memory_order_relaxed), 0)) \
            cf__before_guard(__func__);                                                 \
    } while (0)

/*
 * Cancellation. No public call is a cancellation point (cfutures.h). Those
 * that can wait, or that reach one of libc's cancellation points
 * (pthread_cond_wait, pthread_join, poll, read, write, waitpid, close,
 * nanosleep; a callback they run) with a lock held or an executor pinned,
 * begin with CF__NO_CANCEL(): it turns the calling thread's cancellation
 * off, and the variable's cleanup puts back the state the caller had at
 * whatever return. A request made meanwhile stays pending and acts at the
 * caller's next cancellation point after the call. Acted on inside, it
 * unwound the thread out of pthread_cond_wait with the pool's mutex held
 * (the wait retakes it first), out of pthread_join with join_mu held, with
 * a thread pool's map record on its stack still listed in the pool, or out
 * of a done-callback with the executor pinned: every other thread then
 * hung. pthread_setcancelstate makes no system call: in glibc a
 * compare-and-swap of the thread's own word when the state changes (about
 * 5 ns), a load when it does not (a public call made from another). So it
 * is in the entry points that can wait and not in those that only look or
 * release (cf_future_done, cf_future_free), and an entry point calls
 * another's body, not the entry point (cf_future_result, cf_future_wait).
 * The library's own threads need none: nothing ever cancels them (their
 * ids never leave the library), and the thread pool's run with
 * cancellation off for the tasks' sake (thread_pool.c).
 */
static inline void cf__cancel_restore(const int *old)
{
    int ignored;
    pthread_setcancelstate(*old, &ignored);
}
static inline int cf__cancel_disable(void)
{
    int old;
    pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, &old);
    return old;
}
#define CF__NO_CANCEL() \
    int cf__cancel_old __attribute__((cleanup(cf__cancel_restore), unused)) = cf__cancel_disable()

#endif /* CF_INTERNAL_H */
