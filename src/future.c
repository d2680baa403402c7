/*
 * future.c — the future object, its callbacks, and every wait.
 *
 * A future is one allocation: the generic part here (state, references,
 * callbacks, outcome, a small inline result buffer), then its backend's
 * own state (cf_future.part, cf__ops.future_size bytes, zeroed), which only
 * the backend reads. It is born pending with two references, the caller's
 * and the executor's.
 *
 * Finishing. Every backend finishes a future by the one protocol written at
 * cf__future_finish's declaration (internal.h): the thread that took the
 * future off the backend's books writes its outcome; cf__future_finish,
 * possibly under the backend's lock, flips the state word to done exactly
 * once and pushes the future on that thread's list; cf__future_fire, with
 * no lock held, wakes sleepers, runs the callbacks in the order they were
 * added, and drops the executor's reference, for each future of the list.
 * The future's own spinlock guards the callback list and the done
 * transition, and is never held while calling out. A callback added once
 * the future is done runs at once in the adding thread, as in Python: it
 * may then run before callbacks added earlier have finished. Lock order: a
 * backend lock may be held when taking a future's lock, never the other way
 * round.
 *
 * cf_wait and cf_as_completed sleep on one process-wide completion counter
 * that every finish bumps; the futex wake is skipped when nobody waits.
 *
 * A future may outlive its executor, and a thread may use it while another
 * frees the executor: a call that must reach the backend pins the
 * executor's core first (pin), and gives up without touching the executor
 * when the future turns out done (see executor.c). Only the process that
 * created the executor may use its futures: the others get CF_EOWNER.
 *
 * States only move forward, as in Python: pending, running, done. A backend
 * without its own CF__RUNNING store (both pools: their workers leave the
 * word alone until the finish, a line the waiter spins on) is asked, and a yes is
 * recorded in the state word, so that running stays true until done.
 *
 * Every hook of a backend's cf__ops is called without a NULL check; the
 * defaults for wait, running and watch are here (cf__future_wait_state,
 * cf__future_running_state, cf__future_watch_none), for a backend whose
 * futures need no more than their own state word.
 */
#include "internal.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

static _Atomic uint32_t completion_seq;
static _Atomic uint32_t completion_waiters;

/*
 * The futures whose callbacks this thread is running now, innermost first
 * (a callback may finish another future, whose callbacks then run nested):
 * cf_future_wait_callbacks refuses to wait for one of them, which could
 * only end after it returned.
 */
typedef struct firing_link {
    const cf_future          *f;
    const struct firing_link *up;
} firing_link;
static _Thread_local const firing_link *firing;

_Thread_local cf__task_result cf__task_out;

static void lock(const cf_future *f)
{
    atomic_flag *l = (atomic_flag *)&f->lock;
    while (atomic_flag_test_and_set_explicit(l, memory_order_acquire))
        cf__cpu_relax();
}

static void unlock(const cf_future *f)
{
    atomic_flag_clear_explicit((atomic_flag *)&f->lock, memory_order_release);
}

bool cf__state_done(uint32_t s)
{
    return (s & CF__STATE_MASK) >= CF__FINISHED;
}

uint32_t cf__future_state(const cf_future *f)
{
    /* Seq_cst (a plain load on x86): cf_wait's look after counting itself in (completion_bump). */
    return atomic_load(&f->state) & CF__STATE_MASK;
}

cf_future *cf__future_new(cf_executor *ex, size_t result_size)
{
    size_t part = ex->ops->future_size;
    cf_future *f = cf__fmem_take(ex->core);
    if (f == NULL)
        return NULL;
    memset(f, 0, offsetof(cf_future, inline_result));
    memset(f->part, 0, part);
    atomic_init(&f->state, CF__PENDING);
    atomic_init(&f->refs, 2);
    atomic_flag_clear(&f->lock);
    f->owner = ex->owner;
    f->core = ex->core;
    f->result_size = result_size;
    f->info.worker = -1;
    if (result_size <= CF__INLINE_RESULT) {
        f->result = f->inline_result;
    } else if ((f->result = malloc(result_size)) == NULL) {
        cf__fmem_put(ex->core, f);
        return NULL;
    }
    cf__core_ref(f->core);
    return f;
}

static void destroy(cf_future *f)
{
    free(f->map);    /* a submitted map's record, its controls first (map.c) */
    free(f->error_text);
    if (f->result != f->inline_result)
        free(f->result);
    cf__core *c = f->core;
    cf__fmem_put(c, f);
    cf__core_unref(c);
}

static void unref(cf_future *f)
{
    if (atomic_fetch_sub_explicit(&f->refs, 1, memory_order_acq_rel) == 1)
        destroy(f);
}

void cf__future_ref(cf_future *f)
{
    /* Relaxed: the caller holds a reference already, so f cannot go. */
    atomic_fetch_add_explicit(&f->refs, 1, memory_order_relaxed);
}

void cf__future_unref(cf_future *f)
{
    unref(f);
}

bool cf__future_finish(cf_future *f, int state, int code, int sig, cf_future **fire)
{
    lock(f);
    uint32_t old = atomic_load_explicit(&f->state, memory_order_relaxed);
    if (cf__state_done(old)) {
        unlock(f);
        return false;
    }
    f->code = code;
    f->signal = sig;
    f->fire = f->callbacks;
    f->callbacks = NULL;
    /* No callback to wait for: cf_future_wait_callbacks needs no more than
     * done. Relaxed: the state's flip below publishes it, in a line this
     * thread holds already; fire_one then leaves the word alone, so a
     * future without callbacks costs its finisher nothing more. */
    if (f->fire == NULL)
        atomic_store_explicit(&f->fired, CF__FIRED, memory_order_relaxed);
    /* Seq_cst: completion_bump's look at the waiters comes after it. */
    while (!atomic_compare_exchange_weak_explicit(&f->state, &old,
                                                  (uint32_t)state | (old & CF__WAITERS),
                                                  memory_order_seq_cst, memory_order_relaxed))
        ;
    unlock(f);
    /* Done now: nobody but this finisher touches the link. */
    f->next_done = *fire;
    *fire = f;
    return true;
}

/*
 * Wakes cf_wait/cf_as_completed callers after any future finished (its
 * state flipped before, seq_cst). The count is bumped only while one waits:
 * it is one word for the whole process, and a bump at every finish moved
 * its line between the threads that finish tasks, on each one's way from
 * the finish to dropping its reference. A waiter counts itself in before it
 * looks at its futures (Dekker's pattern with the state, every step seq_cst):
 * either it sees this future done, or this finisher sees it counted and bumps.
 */
static void completion_bump(void)
{
    if (atomic_load(&completion_waiters) == 0)
        return;
    atomic_fetch_add(&completion_seq, 1);
    cf__futex_wake(&completion_seq, INT_MAX, false);
}

static void fire_one(cf_future *f)
{
    if (atomic_load_explicit(&f->state, memory_order_acquire) & CF__WAITERS)
        cf__futex_wake(&f->state, INT_MAX, false);
    completion_bump();
    /* After the wake-ups: the waiters do not wait for the record. f lives
     * on (the executor's reference is dropped below), and so do its
     * executor and tracer (released only once every future was fired). */
    if (__builtin_expect(f->trace.id != 0, 0))
        cf__trace_done(f->core->ex->trace, f);
    /* The list was taken at finish: nobody else touches it now. */
    cf__callback *cb = f->fire;
    f->fire = NULL;
    if (cb != NULL) {
        firing_link link = {.f = f, .up = firing};
        firing = &link;
        while (cb != NULL) {
            cf__callback *next = cb->next;
            cb->fn(f, cb->ctx);
            free(cb);
            cb = next;
        }
        firing = link.up;
        /* Release: a thread that sees the mark sees what the callbacks did.
         * f is still alive here (the executor's reference, dropped below),
         * so the wake may follow a waiter that already returned. A system
         * call only when someone sleeps on the mark. */
        if (atomic_exchange_explicit(&f->fired, CF__FIRED, memory_order_acq_rel) & CF__FIRED_WAITERS)
            cf__futex_wake(&f->fired, INT_MAX, false);
    }
    unref(f);
}

void cf__future_fire(cf_future *list)
{
    while (list != NULL) {
        cf_future *next = list->next_done;    /* fire_one may free it */
        fire_one(list);
        list = next;
    }
}

/*
 * Waits until met(*word) holds, or the deadline: spins for a while, then
 * sets `waiters` in the word (the side that makes it hold wakes the word
 * when it finds that bit) and sleeps on it. 0, or CF_ETIMEDOUT. Acquire:
 * what was written before the word was seen.
 */
static inline int wait_word(_Atomic uint32_t *word, uint32_t waiters, bool (*met)(uint32_t),
                            uint64_t deadline)
{
    cf__spinner spin;
    cf__spin_begin(&spin, CF__SPIN_WAIT_NS);
    while (!met(atomic_load_explicit(word, memory_order_acquire)))
        if (!cf__spin(&spin))
            goto sleep;
    return 0;
sleep:
    for (;;) {
        uint32_t v = atomic_fetch_or_explicit(word, waiters, memory_order_acq_rel) | waiters;
        if (met(v))
            return 0;
        if (cf__futex_wait(word, v, false, deadline) == ETIMEDOUT)
            return met(atomic_load_explicit(word, memory_order_acquire)) ? 0 : CF_ETIMEDOUT;
    }
}

static bool fired_met(uint32_t v)
{
    return (v & CF__FIRED) != 0;
}

int cf__future_wait_state(cf_executor *ex, cf_future *f, uint64_t deadline)
{
    (void)ex;
    return wait_word(&f->state, CF__WAITERS, cf__state_done, deadline);
}

bool cf__future_running_state(cf_executor *ex, cf_future *f)
{
    (void)ex;
    return cf__future_state(f) == CF__RUNNING;
}

void cf__future_watch_none(cf_executor *ex, cf_future *f)
{
    (void)ex;
    (void)f;
}

static bool timeout_ok(int timeout_ms)
{
    return timeout_ms >= -1;
}

/*
 * Pins f's executor for a call into its backend. NULL when f is done: the
 * executor may then be gone already, and the caller must not touch it.
 * Otherwise the executor stays alive until unpin.
 */
static cf_executor *pin(cf_future *f)
{
    cf__core_enter(f->core);
    /* Sequentially consistent, after the enter: see executor.c. */
    if (cf__state_done(atomic_load(&f->state))) {
        cf__core_leave(f->core);
        return NULL;
    }
    return f->core->ex;
}

static void unpin(cf_future *f)
{
    cf__core_leave(f->core);
}

/* Waits for f (of this process) to be done: 0 or CF_ETIMEDOUT. */
static int wait_done(cf_future *f, uint64_t deadline)
{
    if (cf__state_done(cf__future_state(f)))
        return 0;
    if (f->map != NULL)    /* its driver finishes it: a wait on its word */
        return cf__future_wait_state(NULL, f, deadline);
    cf_executor *ex = pin(f);
    if (ex == NULL)
        return 0;
    int rc = f->core->ops->wait(ex, f, deadline);
    unpin(f);
    return rc;
}

/* cf_future_wait, for it and cf_future_result: each turned cancellation off already. */
static int future_wait(cf_future *f, int timeout_ms)
{
    if (f == NULL || !timeout_ok(timeout_ms))
        return CF_EINVAL;
    if (cf__foreign(f->owner))
        return CF_EOWNER;
    if (cf__state_done(cf__future_state(f)))
        return 0;
    return wait_done(f, cf__deadline(timeout_ms));
}

CF_EXPORT int cf_future_wait(cf_future *f, int timeout_ms)
{
    CF__NOT_BEFORE_GUARD();
    CF__NO_CANCEL();
    return future_wait(f, timeout_ms);
}

/* True if this thread is running f's callbacks, at any depth. */
static bool firing_here(const cf_future *f)
{
    for (const firing_link *l = firing; l != NULL; l = l->up)
        if (l->f == f)
            return true;
    return false;
}

/*
 * Done first (a waiting thread may be the one that finishes f, and then
 * runs its callbacks itself before wait_done returns); then the mark that
 * fire_one sets once those callbacks returned, spinning briefly, then
 * sleeping on it.
 */
CF_EXPORT int cf_future_wait_callbacks(cf_future *f, int timeout_ms)
{
    CF__NOT_BEFORE_GUARD();
    CF__NO_CANCEL();
    if (f == NULL || !timeout_ok(timeout_ms))
        return CF_EINVAL;
    if (cf__foreign(f->owner))
        return CF_EOWNER;
    /* Done first: the mark of a future without callbacks is published by
     * the state's flip. Acquire: what the callbacks did is seen here. */
    if (cf__state_done(cf__future_state(f)) && (atomic_load_explicit(&f->fired, memory_order_acquire) & CF__FIRED))
        return 0;
    if (firing_here(f))
        return CF_EINVAL;
    uint64_t deadline = cf__deadline(timeout_ms);
    int rc = wait_done(f, deadline);
    if (rc != 0)
        return rc;
    return wait_word(&f->fired, CF__FIRED_WAITERS, fired_met, deadline);
}

CF_EXPORT bool cf_future_done(const cf_future *f)
{
    CF__NOT_BEFORE_GUARD();
    return f != NULL && cf__state_done(cf__future_state(f));
}

/* Records that f's task was seen running: running stays true until done. */
static void mark_running(cf_future *f)
{
    uint32_t old = atomic_load_explicit(&f->state, memory_order_relaxed);
    while ((old & CF__STATE_MASK) == CF__PENDING &&
           !atomic_compare_exchange_weak_explicit(&f->state, &old, old | CF__RUNNING,
                                                  memory_order_relaxed, memory_order_relaxed))
        ;
}

CF_EXPORT bool cf_future_running(const cf_future *f)
{
    CF__NOT_BEFORE_GUARD();
    if (f == NULL)
        return false;
    uint32_t s = cf__future_state(f);
    if (cf__state_done(s) || cf__foreign(f->owner))
        return false;
    if (s == CF__RUNNING)
        return true;
    if (f->map != NULL)
        return false;    /* its driver records CF__RUNNING as it starts */
    cf_future *mf = (cf_future *)f;    /* only its state word changes, forward */
    cf_executor *ex = pin(mf);
    if (ex == NULL)
        return false;
    bool running = f->core->ops->running(ex, mf);
    if (running)
        mark_running(mf);
    unpin(mf);
    return running;
}

CF_EXPORT bool cf_future_cancelled(const cf_future *f)
{
    CF__NOT_BEFORE_GUARD();
    return f != NULL && cf__future_state(f) == CF__CANCELLED;
}

/*
 * A submitted map: asks it to stop, and waits for its end unless this
 * thread works for the map (it would wait for itself). 0 if it ends
 * cancelled, CF_EBUSY if every element had run.
 */
static int cancel_map(cf_future *f)
{
    cf_executor *ex = pin(f);
    if (ex != NULL) {
        cf__map_future_cancel(f, ex);
        unpin(f);
    }
    if (cf__map_here == f->map)
        return 0;
    cf__future_wait_state(NULL, f, UINT64_MAX);
    return cf__future_state(f) == CF__CANCELLED ? 0 : CF_EBUSY;
}

CF_EXPORT int cf_future_cancel(cf_future *f)
{
    CF__NOT_BEFORE_GUARD();
    CF__NO_CANCEL();
    if (f == NULL)
        return CF_EINVAL;
    if (cf__foreign(f->owner))
        return CF_EOWNER;
    uint32_t s = cf__future_state(f);
    if (cf__state_done(s))
        return s == CF__CANCELLED ? 0 : CF_EBUSY;
    if (f->map != NULL)
        return cancel_map(f);
    cf_executor *ex = pin(f);
    int rc = CF_EBUSY;    /* done meanwhile: cancelled or not, as below */
    if (ex != NULL) {
        rc = f->core->ops->cancel(ex, f);
        unpin(f);
    }
    if (rc != 0) {
        /* It may have been cancelled by another thread meanwhile. */
        return cf__future_state(f) == CF__CANCELLED ? 0 : rc;
    }
    return 0;
}

CF_EXPORT int cf_future_result(cf_future *f, void *result, size_t result_size, int timeout_ms)
{
    CF__NOT_BEFORE_GUARD();
    CF__NO_CANCEL();
    if (f == NULL || result_size != f->result_size || (result == NULL && result_size > 0))
        return CF_EINVAL;
    int rc = future_wait(f, timeout_ms);
    if (rc != 0)
        return rc;
    if (cf__future_state(f) == CF__CANCELLED)
        return CF_ECANCELED;
    if (f->has_result && f->result_len > 0)
        memcpy(result, f->result, f->result_len);
    return f->code;
}

CF_EXPORT int cf_future_result_size(const cf_future *f, size_t *n)
{
    CF__NOT_BEFORE_GUARD();
    if (f == NULL || n == NULL)
        return CF_EINVAL;
    uint32_t s = cf__future_state(f);
    if (!cf__state_done(s))
        return CF_EBUSY;
    if (s == CF__CANCELLED)
        return CF_ECANCELED;
    if (!f->has_result)
        return f->code < 0 ? f->code : CF_ECRASHED;    /* the pool ended it: always a CF_E* code */
    *n = (size_t)f->result_len;
    return 0;
}

CF_EXPORT int cf_task_set_result_size(size_t n)
{
    CF__NOT_BEFORE_GUARD();
    cf__task_result *t = &cf__task_out;
    if (t->len == NULL || n > t->cap)
        return CF_EINVAL;
    *t->len = n;
    return 0;
}

/* Asks f's backend to finish f promptly once its task ends; nothing if done. */
static void watch(cf_future *f)
{
    if (f->map != NULL)
        return;    /* its driver finishes it as the map ends */
    cf_executor *ex = pin(f);
    if (ex != NULL) {
        f->core->ops->watch(ex, f);
        unpin(f);
    }
}

CF_EXPORT int cf_future_add_done_callback(cf_future *f, cf_done_fn *cb, void *ctx)
{
    CF__NOT_BEFORE_GUARD();
    CF__NO_CANCEL();
    if (f == NULL || cb == NULL)
        return CF_EINVAL;
    if (cf__foreign(f->owner))
        return CF_EOWNER;
    cf__callback *node = malloc(sizeof *node);
    if (node == NULL)
        return CF_ENOMEM;
    node->fn = cb;
    node->ctx = ctx;
    node->next = NULL;

    lock(f);
    if (!cf__state_done(cf__future_state(f))) {
        cf__callback **tail = &f->callbacks;
        while (*tail != NULL)
            tail = &(*tail)->next;
        *tail = node;
        unlock(f);
        watch(f);
        return 0;
    }
    unlock(f);
    free(node);
    cb(f, ctx);
    return 0;
}

CF_EXPORT int cf_future_signal(const cf_future *f)
{
    CF__NOT_BEFORE_GUARD();
    if (f == NULL || !cf__state_done(cf__future_state(f)))
        return 0;
    return f->signal;
}

CF_EXPORT int cf_future_info(const cf_future *f, cf_task_info *info)
{
    CF__NOT_BEFORE_GUARD();
    if (f == NULL || info == NULL)
        return CF_EINVAL;
    if (cf__state_done(cf__future_state(f))) {
        *info = f->info;
    } else {
        info->worker = -1;
        info->start_ns = 0;
        info->end_ns = 0;
    }
    return 0;
}

CF_EXPORT int cf_future_progress(const cf_future *f, size_t *done, size_t *total)
{
    CF__NOT_BEFORE_GUARD();
    if (f == NULL || done == NULL || total == NULL)
        return CF_EINVAL;
    if (f->map != NULL) {
        size_t d = atomic_load_explicit(&f->map->done, memory_order_relaxed);
        *total = f->map->n;
        *done = d < f->map->n ? d : f->map->n;
    } else {
        *total = 1;
        *done = cf__state_done(cf__future_state(f)) ? 1 : 0;
    }
    return 0;
}

CF_EXPORT void cf_future_free(cf_future *f)
{
    CF__NOT_BEFORE_GUARD();
    /* In another process f is a copy: leave it as it is. */
    if (f != NULL && !cf__foreign(f->owner))
        unref(f);
}

/* ---- waiting on several futures ---------------------------------------- */

/* 0, CF_EINVAL (a bad timeout, a NULL array or entry) or CF_EOWNER. */
static int wait_args_check(cf_future *const *fs, size_t n, int timeout_ms)
{
    if (!timeout_ok(timeout_ms) || (n > 0 && fs == NULL))
        return CF_EINVAL;
    for (size_t i = 0; i < n; i++)
        if (fs[i] == NULL)
            return CF_EINVAL;
    pid_t self = n > 0 ? cf__self_pid() : 0;
    for (size_t i = 0; i < n; i++)
        if (fs[i]->owner != self)
            return CF_EOWNER;
    return 0;
}

static void watch_pending(cf_future *const *fs, size_t n, const bool *seen)
{
    for (size_t i = 0; i < n; i++)
        if ((seen == NULL || !seen[i]) && !cf__state_done(cf__future_state(fs[i])))
            watch(fs[i]);
}

/*
 * cf_wait's first look, in one pass over the futures (a stream's million
 * of them is some hundreds of megabytes, and each pass reads a line of
 * every one): the checks of wait_args_check, in its order of precedence,
 * and whether the wait is *met already (wait_met), with the first future
 * not done in *pending (n if none).
 */
static int wait_first_look(cf_future *const *fs, size_t n, cf_wait_mode mode, int timeout_ms,
                           bool *met, size_t *pending)
{
    if (!timeout_ok(timeout_ms) || (n > 0 && fs == NULL))
        return CF_EINVAL;
    pid_t self = n > 0 ? cf__self_pid() : 0;
    bool foreign = false, early = false;
    size_t first = n;
    for (size_t i = 0; i < n; i++) {
        const cf_future *f = fs[i];
        if (f == NULL)
            return CF_EINVAL;
        foreign |= f->owner != self;
        uint32_t st = cf__future_state(f);
        if (!cf__state_done(st)) {
            if (first == n)
                first = i;
            continue;
        }
        early |= mode == CF_FIRST_COMPLETED ||
                 (mode == CF_FIRST_EXCEPTION && st == CF__FINISHED && f->code != 0);
    }
    if (foreign)
        return CF_EOWNER;
    *met = early || first == n;
    *pending = first;
    return 0;
}

static bool wait_met(cf_future *const *fs, size_t n, cf_wait_mode mode)
{
    size_t done = 0;
    for (size_t i = 0; i < n; i++) {
        uint32_t s = cf__future_state(fs[i]);
        if (!cf__state_done(s))
            continue;
        done++;
        if (mode == CF_FIRST_COMPLETED)
            return true;
        if (mode == CF_FIRST_EXCEPTION && s == CF__FINISHED && fs[i]->code != 0)
            return true;
    }
    return done == n;
}

/* Sleeps until some future finishes after `seq` was read, or the deadline. */
static int wait_any_completion(uint32_t seq, uint64_t deadline)
{
    return cf__futex_wait(&completion_seq, seq, false, deadline);
}

CF_EXPORT int cf_wait(cf_future *const *fs, size_t n, cf_wait_mode mode, int timeout_ms)
{
    CF__NOT_BEFORE_GUARD();
    CF__NO_CANCEL();
    if (mode != CF_ALL_COMPLETED && mode != CF_FIRST_COMPLETED && mode != CF_FIRST_EXCEPTION)
        return CF_EINVAL;
    bool met;
    size_t pending;
    int rc = wait_first_look(fs, n, mode, timeout_ms, &met, &pending);
    if (rc != 0 || met)
        return rc;
    uint64_t deadline = cf__deadline(timeout_ms);
    if (mode == CF_ALL_COMPLETED && timeout_ms != 0) {
        /*
         * Each in turn, on its own word, as cf_future_wait: a finish wakes
         * this thread only if it sleeps on that very future, and what was
         * seen done is not looked at again. Waiting on the count of every
         * finish instead woke it (a system call in the finisher) at each
         * one, and each wake looked at all n.
         */
        for (size_t i = pending; i < n; i++)    /* those before were done */
            if (wait_done(fs[i], deadline) != 0)
                return CF_ETIMEDOUT;
        return 0;
    }
    atomic_fetch_add(&completion_waiters, 1);
    watch_pending(fs, n, NULL);
    for (;;) {
        uint32_t seq = atomic_load(&completion_seq);
        if (wait_met(fs, n, mode))
            break;
        if (wait_any_completion(seq, deadline) == ETIMEDOUT) {
            rc = wait_met(fs, n, mode) ? 0 : CF_ETIMEDOUT;
            break;
        }
    }
    atomic_fetch_sub(&completion_waiters, 1);
    return rc;
}

/*
 * Returns the first unseen index of a done future, and marks seen every index
 * that holds the same future: as in Python, a future listed twice comes back
 * once. All of them, before it too: an earlier one may have been read as
 * not done an instant before this one was read as done.
 */
static int take_done(cf_future *const *fs, size_t n, bool *seen)
{
    for (size_t i = 0; i < n; i++) {
        if (!seen[i] && cf__state_done(cf__future_state(fs[i]))) {
            for (size_t j = 0; j < n; j++)
                if (fs[j] == fs[i])
                    seen[j] = true;
            return (int)i;
        }
    }
    return -1;
}

CF_EXPORT int cf_as_completed(cf_future *const *fs, size_t n, bool *seen, int timeout_ms)
{
    CF__NOT_BEFORE_GUARD();
    CF__NO_CANCEL();
    if (seen == NULL || n > INT_MAX)
        return CF_EINVAL;
    int rc = wait_args_check(fs, n, timeout_ms);
    if (rc != 0)
        return rc;
    size_t unseen = 0;
    for (size_t i = 0; i < n; i++)
        unseen += !seen[i];
    if (unseen == 0)
        return CF_EINVAL;
    int idx = take_done(fs, n, seen);
    if (idx >= 0)
        return idx;
    uint64_t deadline = cf__deadline(timeout_ms);
    atomic_fetch_add(&completion_waiters, 1);
    watch_pending(fs, n, seen);
    for (;;) {
        uint32_t seq = atomic_load(&completion_seq);
        if ((idx = take_done(fs, n, seen)) >= 0)
            break;
        if (wait_any_completion(seq, deadline) == ETIMEDOUT) {
            idx = take_done(fs, n, seen);
            if (idx < 0)
                idx = CF_ETIMEDOUT;
            break;
        }
    }
    atomic_fetch_sub(&completion_waiters, 1);
    return idx;
}
