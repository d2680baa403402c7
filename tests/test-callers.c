/*
 * Multi-threaded callers. A process pool created while other threads of the
 * caller hold locks, or hammer malloc and stdio:
 *
 *   - CF_START_FORK works for tasks that do not take such a lock; a task
 *     that does take it finds it held for ever (the worker is a snapshot of
 *     the caller at creation, replacements included): the README's warning,
 *     shown, with a bounded lock attempt instead of a deadlock;
 *   - CF_START_EXEC workers inherit no lock: tasks that take the very lock
 *     another caller thread holds run to the end;
 *   - malloc and stdio, busy in other threads while pools are created, never
 *     deadlock a worker (fork mode: glibc's fork takes their locks; not
 *     AddressSanitizer's allocator, so an ASan build skips that part).
 *
 * And a caller thread cancelled (pthread_cancel) while it waits in a call:
 * the call returns, the request acts after it, and the pool goes on.
 */
#include "helpers.h"

#include <criterion/criterion.h>

#include <fcntl.h>
#include <pthread.h>
#include <unistd.h>

/*
 * A fork worker's attempt at a lock held for ever: it does not wait. The
 * lock is held in the worker's copy of the caller by a thread that does not
 * exist there, so nothing can release it, and a wait of any length ends as
 * this one does (pthread_mutex_timedlock takes a free lock even when the
 * deadline has passed, else answers ETIMEDOUT at once).
 */
#define LOCK_TRY_MS  0

static pthread_mutex_t held = PTHREAD_MUTEX_INITIALIZER;

/* ---- a thread that holds `held` until told to let go ------------------------------ */

struct holder {
    int       locked;
    int       release;
    pthread_t th;
};

static void *holder_main(void *arg)
{
    struct holder *h = arg;
    pthread_mutex_lock(&held);
    store_int(&h->locked, 1);
    while (!load_int(&h->release))
        sleep_ms(1);
    pthread_mutex_unlock(&held);
    return NULL;
}

static void holder_start(struct holder *h)
{
    *h = (struct holder){ 0 };
    cr_assert_eq(pthread_create(&h->th, NULL, holder_main, h), 0);
    cr_assert(wait_at_least(&h->locked, 1, 30000));
}

static void holder_stop(struct holder *h)
{
    store_int(&h->release, 1);
    pthread_join(h->th, NULL);
}

/* ---- tasks ------------------------------------------------------------------------ */

/* No lock of the caller's: computes, allocates and formats. */
static int task_plain(const void *arg, size_t as, void *res, size_t rs)
{
    uint64_t i, v;
    char buf[64];
    if (as != sizeof i || rs != sizeof v)
        return CODE_BADSIZE;
    memcpy(&i, arg, sizeof i);
    char *p = malloc(100 + i % 1000);
    if (p == NULL)
        return 12;
    snprintf(buf, sizeof buf, "%llu", (unsigned long long)i);
    v = value_for(strtoull(buf, NULL, 10));
    free(p);
    memcpy(res, &v, sizeof v);
    return 0;
}

/* Tries `held` for at most ms_arg milliseconds (-1: for ever): 0 if it got it, else ETIMEDOUT. */
static int task_take_lock(const void *arg, size_t as, void *res, size_t rs)
{
    int ms, rc;
    struct timespec until;
    (void)res;
    if (as != sizeof ms || rs != 0)
        return CODE_BADSIZE;
    memcpy(&ms, arg, sizeof ms);
    if (ms < 0) {
        rc = pthread_mutex_lock(&held);
        if (rc == 0)
            pthread_mutex_unlock(&held);
        return rc;
    }
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += ms / 1000;
    until.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (until.tv_nsec >= 1000000000L) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000L;
    }
    rc = pthread_mutex_timedlock(&held, &until);
    if (rc == 0)
        pthread_mutex_unlock(&held);
    return rc;
}

static int run_take_lock(cf_executor *ex, int ms)
{
    cf_future *f;
    int rc = cf_submit(ex, task_take_lock, &ms, sizeof ms, 0, &f);
    cr_assert_eq(rc, 0, "submit: %s", cf_strerror(rc));
    rc = cf_future_result(f, NULL, 0, -1);
    cf_future_free(f);
    return rc;
}

static void assert_plain_tasks(cf_executor *ex, int n)
{
    cf_future *fs[64];
    for (int round = 0; round < n; round += 64) {
        int k = n - round < 64 ? n - round : 64;
        for (int i = 0; i < k; i++) {
            uint64_t x = (uint64_t)(round + i);
            cr_assert_eq(cf_submit(ex, task_plain, &x, sizeof x, sizeof x, &fs[i]), 0);
        }
        for (int i = 0; i < k; i++) {
            uint64_t v = 0;
            int rc = cf_future_result(fs[i], &v, sizeof v, -1);
            cr_assert_eq(rc, 0, "task %d: %s", round + i, cf_strerror(rc));
            cr_assert_eq(v, value_for((uint64_t)(round + i)));
            cf_future_free(fs[i]);
        }
    }
    uint64_t in[256], out[256];
    for (int i = 0; i < 256; i++)
        in[i] = (uint64_t)i * 7;
    cr_assert_eq(cf_map(ex, task_plain, in, sizeof in[0], out, sizeof out[0], 256, NULL), 0);
    for (int i = 0; i < 256; i++)
        cr_assert_eq(out[i], value_for(in[i]));
}

/* ---- fork: the held lock stays held in every worker ----------------------------------- */

Test(callers, fork_pool_created_while_a_thread_holds_a_lock, .timeout = REL_TIMEOUT)
{
    struct holder h;
    cf_options o = { .workers = 2 };
    cf_executor *ex = NULL;
    cf_future *f;
    int rc;

    no_core_dumps();
    holder_start(&h);
    cr_assert_eq(cf_process_pool_new(&ex, &o), 0);
    /* Tasks that do not take the lock are fine. */
    assert_plain_tasks(ex, 500);
    /* A task that takes it finds it held: the worker forked the caller as it was. */
    rc = run_take_lock(ex, LOCK_TRY_MS);
    cr_assert_eq(rc, ETIMEDOUT, "a fork worker got a lock another caller thread held at creation (%d)", rc);
    /* Released in the caller now, but not in the snapshot the workers are made of. */
    holder_stop(&h);
    cr_assert_eq(pthread_mutex_trylock(&held), 0);
    pthread_mutex_unlock(&held);
    rc = run_take_lock(ex, LOCK_TRY_MS);
    cr_assert_eq(rc, ETIMEDOUT, "the worker saw the caller's later unlock (%d)", rc);
    /* A replacement is forked from the same snapshot. */
    cr_assert_eq(cf_submit(ex, task_segv, NULL, 0, 0, &f), 0);
    cr_assert_eq(cf_future_result(f, NULL, 0, -1), CF_ECRASHED);
    cf_future_free(f);
    for (int i = 0; i < 4; i++)
        cr_assert_eq(run_take_lock(ex, LOCK_TRY_MS), ETIMEDOUT, "a replacement worker got the lock");
    assert_plain_tasks(ex, 100);
    cf_executor_free(ex);
}

/* The other way round: created with the lock free, a later lock in the caller is not seen. */
Test(callers, fork_pool_replacements_ignore_locks_taken_after_creation, .timeout = REL_TIMEOUT)
{
    struct holder h;
    cf_options o = { .workers = 1 };
    cf_executor *ex = NULL;
    cf_future *f;

    no_core_dumps();
    cr_assert_eq(cf_process_pool_new(&ex, &o), 0);
    holder_start(&h);
    cr_assert_eq(cf_submit(ex, task_segv, NULL, 0, 0, &f), 0);
    cr_assert_eq(cf_future_result(f, NULL, 0, -1), CF_ECRASHED);
    cf_future_free(f);
    /* The replacement is a fork of the zygote (the caller at creation), not of the caller now. */
    cr_assert_eq(run_take_lock(ex, 20000), 0, "a replacement inherited a lock taken after creation");
    holder_stop(&h);
    cf_executor_free(ex);
}

/* ---- a task that waits for ever on a lock fails, and says why ---------------------------- */

/*
 * The task blocks on `held` with no timeout, in a fork worker made while
 * another thread held it: nothing in the worker can ever release it. The
 * pool sees the worker asleep for ever and fails the task with CF_EDEADLK
 * (no task_timeout_ms is set: without that, the wait never ended).
 */
Test(callers, fork_pool_task_blocked_on_a_lock_held_at_creation_fails_with_EDEADLK, .timeout = REL_TIMEOUT)
{
    struct holder h;
    cf_options o = { .workers = 2 };
    cf_executor *ex = NULL;

    no_core_dumps();
    holder_start(&h);
    cr_assert_eq(cf_process_pool_new(&ex, &o), 0);
    for (int i = 0; i < 3; i++) {
        int rc = run_take_lock(ex, -1);
        cr_assert_eq(rc, CF_EDEADLK, "round %d: %s (%d)", i, cf_strerror(rc), rc);
    }
    /* The pool goes on: its replacements run tasks that take no such lock. */
    assert_plain_tasks(ex, 100);
    holder_stop(&h);
    cf_executor_free(ex);
}

static pthread_mutex_t self_lock = PTHREAD_MUTEX_INITIALIZER;

/* Locks a (non-recursive) mutex twice: its own thread holds it, for ever. */
static int task_lock_twice(const void *arg, size_t as, void *res, size_t rs)
{
    (void)arg, (void)as, (void)res, (void)rs;
    pthread_mutex_lock(&self_lock);
    pthread_mutex_lock(&self_lock);
    return 0;
}

static void lock_twice(enum pool_kind kind)
{
    cf_options o = { .workers = 1 };
    cf_executor *ex = NULL;
    cf_future *f;

    no_core_dumps();
    cr_assert_eq(pool_kind_new(kind, &ex, &o), 0);
    cr_assert_eq(cf_submit(ex, task_lock_twice, NULL, 0, 0, &f), 0);
    int rc = cf_future_result(f, NULL, 0, -1);
    cr_assert_eq(rc, CF_EDEADLK, "%s", cf_strerror(rc));
    const char *text = cf_future_error_text(f);
    cr_assert_not_null(text);
    cr_assert_not_null(strstr(text, "lock"), "%s", text);
    cf_future_free(f);
    assert_plain_tasks(ex, 10);
    cf_executor_free(ex);
}

Test(callers, fork_task_that_locks_its_own_mutex_twice_fails_with_EDEADLK, .timeout = REL_TIMEOUT)
{
    lock_twice(POOL_FORK);
}

Test(callers, exec_task_that_locks_its_own_mutex_twice_fails_with_EDEADLK, .timeout = REL_TIMEOUT)
{
    skip_exec_under_valgrind(POOL_EXEC);
    lock_twice(POOL_EXEC);
}

/*
 * Waits that end are left alone: one with a deadline, one on a
 * process-shared mutex that the caller releases, one while a thread of the
 * task's own runs. Each lasts several of the pool's looks.
 */
struct shared_lock {
    pthread_mutex_t mu;
};

static struct shared_lock *shared;

static int task_wait_shared(const void *arg, size_t as, void *res, size_t rs)
{
    (void)arg, (void)as, (void)res, (void)rs;
    int rc = pthread_mutex_lock(&shared->mu);
    if (rc == 0)
        pthread_mutex_unlock(&shared->mu);
    return rc;
}

static void *napper(void *arg)
{
    sleep_ms(*(int *)arg);
    return NULL;
}

static int task_join_a_napper(const void *arg, size_t as, void *res, size_t rs)
{
    static int ms = 600;
    pthread_t th;
    (void)arg, (void)as, (void)res, (void)rs;
    if (pthread_create(&th, NULL, napper, &ms) != 0)
        return 11;
    return pthread_join(th, NULL);
}

Test(callers, waits_that_can_end_are_not_judged_stuck, .timeout = REL_TIMEOUT)
{
    struct holder h;
    cf_options o = { .workers = 3 };
    cf_executor *ex = NULL;
    cf_future *fs, *fj;
    pthread_mutexattr_t attr;

    no_core_dumps();
    shared = cf_shared_alloc(sizeof *shared);
    cr_assert_not_null(shared);
    pthread_mutexattr_init(&attr);
    pthread_mutexattr_setpshared(&attr, PTHREAD_PROCESS_SHARED);
    cr_assert_eq(pthread_mutex_init(&shared->mu, &attr), 0);
    pthread_mutexattr_destroy(&attr);
    cr_assert_eq(pthread_mutex_lock(&shared->mu), 0);

    holder_start(&h);
    cr_assert_eq(cf_process_pool_new(&ex, &o), 0);
    cr_assert_eq(cf_submit(ex, task_wait_shared, NULL, 0, 0, &fs), 0);
    cr_assert_eq(cf_submit(ex, task_join_a_napper, NULL, 0, 0, &fj), 0);
    /* A deadline on the held lock: ETIMEDOUT from the task itself, not from the pool. */
    cr_assert_eq(run_take_lock(ex, 600), ETIMEDOUT);
    cr_assert_eq(pthread_mutex_unlock(&shared->mu), 0);
    cr_assert_eq(cf_future_result(fs, NULL, 0, -1), 0);
    cr_assert_eq(cf_future_result(fj, NULL, 0, -1), 0);
    cf_future_free(fs);
    cf_future_free(fj);
    holder_stop(&h);
    cf_executor_free(ex);
    pthread_mutex_destroy(&shared->mu);
    cf_shared_free(shared, sizeof *shared);
}

/*
 * The program of the README's warning: a logger thread holds its mutex
 * while it writes, and the tasks log. Whatever the logger held when each
 * pool was created, every task ends: done, or CF_EDEADLK.
 */
static pthread_mutex_t log_mu = PTHREAD_MUTEX_INITIALIZER;
static int log_stop;
static int log_fd = -1;

static void *logger_main(void *arg)
{
    (void)arg;
    while (!load_int(&log_stop)) {
        pthread_mutex_lock(&log_mu);
        for (int i = 0; i < 50; i++)
            if (write(log_fd, "logger: a line\n", 15) < 0)
                break;
        pthread_mutex_unlock(&log_mu);
    }
    return NULL;
}

static int task_log(const void *arg, size_t as, void *res, size_t rs)
{
    (void)arg, (void)as, (void)res, (void)rs;
    pthread_mutex_lock(&log_mu);
    int rc = write(log_fd, "task: a line\n", 13) == 13 ? 0 : 5;
    pthread_mutex_unlock(&log_mu);
    return rc;
}

Test(callers, fork_pools_in_a_program_with_a_logger_thread_never_hang, .timeout = REL_SLOW_TIMEOUT)
{
    enum { POOLS = 4, TASKS = 40 };
    pthread_t logger;
    int done = 0, stuck = 0;

    no_core_dumps();
    if (under_valgrind())
        cr_skip_test(FORK_AMONG_THREADS_UNDER_VALGRIND);
    log_fd = open("/dev/null", O_WRONLY | O_CLOEXEC);
    cr_assert_geq(log_fd, 0);
    store_int(&log_stop, 0);
    cr_assert_eq(pthread_create(&logger, NULL, logger_main, NULL), 0);
    for (int p = 0; p < POOLS; p++) {
        cf_options o = { .workers = 2 };
        cf_executor *ex = NULL;
        cf_future *fs[TASKS];
        cr_assert_eq(cf_process_pool_new(&ex, &o), 0);
        for (int i = 0; i < TASKS; i++)
            cr_assert_eq(cf_submit(ex, task_log, NULL, 0, 0, &fs[i]), 0);
        for (int i = 0; i < TASKS; i++) {
            int rc = cf_future_result(fs[i], NULL, 0, -1);
            cr_assert(rc == 0 || rc == CF_EDEADLK, "pool %d task %d: %s", p, i, cf_strerror(rc));
            done += rc == 0;
            stuck += rc == CF_EDEADLK;
            cf_future_free(fs[i]);
        }
        cf_executor_free(ex);
    }
    store_int(&log_stop, 1);
    pthread_join(logger, NULL);
    close(log_fd);
    cr_log_info("%d tasks logged, %d found the logger's lock held for ever", done, stuck);
}

/* ---- exec: tasks take the very lock the caller holds --------------------------------------- */

Test(callers, exec_pool_tasks_take_a_lock_the_caller_holds, .timeout = REL_TIMEOUT)
{
    struct holder h;
    cf_options o = { .workers = 2, .start = CF_START_EXEC };
    cf_executor *ex = NULL;
    cf_future *fs[16];

    skip_exec_under_valgrind(POOL_EXEC);
    no_core_dumps();
    holder_start(&h);
    cr_assert_eq(cf_process_pool_new(&ex, &o), 0);
    /* Bounded at 20 s (a hang detector): in a fresh execution the lock is free. */
    for (int i = 0; i < 16; i++) {
        int ms = 20000;
        cr_assert_eq(cf_submit(ex, task_take_lock, &ms, sizeof ms, 0, &fs[i]), 0);
    }
    for (int i = 0; i < 16; i++) {
        int rc = cf_future_result(fs[i], NULL, 0, -1);
        cr_assert_eq(rc, 0, "an exec worker could not take the lock (%d)", rc);
        cf_future_free(fs[i]);
    }
    assert_plain_tasks(ex, 500);
    cr_assert_eq(load_int(&h.locked), 1);
    cr_assert_eq(pthread_mutex_trylock(&held), EBUSY, "the caller's lock was not held all along");
    holder_stop(&h);
    cf_executor_free(ex);
}

/* ---- malloc and stdio busy in other threads -------------------------------------------------- */

struct hammer {
    int       stop;
    long      rounds;
    pthread_t th;
};

static void *hammer_main(void *arg)
{
    struct hammer *hm = arg;
    FILE *null = fopen("/dev/null", "w");
    uint64_t seed = (uint64_t)(uintptr_t)hm;
    while (!load_int(&hm->stop)) {
        void *p[8];
        for (int i = 0; i < 8; i++)
            p[i] = malloc(16 + rand_next(&seed) % 70000);
        if (null != NULL)
            fprintf(null, "%p %ld\n", p[0], hm->rounds);
        for (int i = 0; i < 8; i++)
            free(p[i]);
        hm->rounds++;
    }
    if (null != NULL)
        fclose(null);
    return NULL;
}

static void pools_among_busy_threads(enum pool_kind kind)
{
    enum { HAMMERS = 3 };
    struct hammer hm[HAMMERS];
    struct holder h;
    int pools = under_valgrind() ? 3 : 40;
    long rounds = 0;

    skip_exec_under_valgrind(kind);
    if (kind == POOL_FORK && UNDER_ASAN)
        cr_skip_test("AddressSanitizer's allocator is not fork-safe (see UNDER_ASAN in tests/helpers.h); "
                     "glibc's malloc, in the plain build, is");
    if (kind == POOL_FORK && under_valgrind())
        cr_skip_test(FORK_AMONG_THREADS_UNDER_VALGRIND);
    holder_start(&h);
    for (int t = 0; t < HAMMERS; t++) {
        hm[t] = (struct hammer){ 0 };
        cr_assert_eq(pthread_create(&hm[t].th, NULL, hammer_main, &hm[t]), 0);
    }
    for (int p = 0; p < pools; p++) {
        cf_options o = { .workers = 2, .start = pool_kind(kind)->start };
        cf_executor *ex = NULL;
        int rc = cf_process_pool_new(&ex, &o);
        cr_assert_eq(rc, 0, "pool %d: %s", p, cf_strerror(rc));
        assert_plain_tasks(ex, 64);
        cf_executor_free(ex);
    }
    for (int t = 0; t < HAMMERS; t++) {
        store_int(&hm[t].stop, 1);
        pthread_join(hm[t].th, NULL);
        rounds += hm[t].rounds;
    }
    holder_stop(&h);
    fprintf(stderr, "callers (%s): %d pools created while %d threads ran %ld malloc/stdio rounds and one "
            "held a lock; every task ran\n", pool_kind_name(kind), pools, HAMMERS, rounds);
    cr_assert_gt(rounds, 0);
}

Test(callers, fork_pools_among_malloc_and_stdio_threads, .timeout = REL_SLOW_TIMEOUT)
{
    pools_among_busy_threads(POOL_FORK);
}

Test(callers, exec_pools_among_malloc_and_stdio_threads, .timeout = REL_SLOW_TIMEOUT)
{
    pools_among_busy_threads(POOL_EXEC);
}

/* ---- a caller thread cancelled while it waits in a call -------------------------------------- */

/*
 * pthread_cancel of a caller thread blocked in a cfutures call: the call is
 * not a cancellation point, so it runs to its end and returns, and the
 * request acts at the thread's next cancellation point after it (here
 * pthread_testcancel). Acted on inside, it left the pool's mutex held (or a
 * map on the dead thread's stack linked in the pool), and every other
 * thread hung. Each test shuts the call's gate until after the request, so
 * that the call cannot end before it has waited.
 */
struct cancelled {
    int     (*call)(struct cancelled *c);
    cf_executor *ex;
    cf_future   *f;
    int       tid;        /* the thread's, for /proc */
    int       entered;    /* written just before the call */
    int       returned;   /* written once the call returned */
    int       rc;         /* what it returned */
    pthread_t th;
};

static void *cancelled_main(void *arg)
{
    struct cancelled *c = arg;
    store_int(&c->tid, (int)gettid());
    store_int(&c->entered, 1);
    int rc = c->call(c);
    store_int(&c->rc, rc);
    store_int(&c->returned, 1);
    pthread_testcancel();    /* the request made during the call acts here */
    return NULL;
}

/*
 * Starts c's thread and cancels it once it sleeps in the call (if it is not
 * seen asleep within POLL_MAX_MS, the request is made all the same: it is
 * then pending when the call begins, which must not act on it either).
 */
static void cancel_in_call(struct cancelled *c)
{
    char state = 0;
    pid_t parent;
    cr_assert_eq(pthread_create(&c->th, NULL, cancelled_main, c), 0);
    cr_assert(wait_at_least(&c->entered, 1, POLL_MAX_MS));
    for (int ms = 0; ms < POLL_MAX_MS; ms++) {
        if (proc_stat(load_int(&c->tid), &state, &parent) && state == 'S')
            break;
        sleep_ms(1);
    }
    cr_assert_eq(pthread_cancel(c->th), 0);
}

/* Joins c's thread: the call returned, and the request acted after it. */
static void assert_cancelled_after_call(struct cancelled *c, const char *what)
{
    void *res = NULL;
    cr_assert_eq(pthread_join(c->th, &res), 0);
    cr_assert_eq(load_int(&c->returned), 1, "the thread was cancelled inside %s: the call never returned", what);
    cr_assert_eq(res, PTHREAD_CANCELED, "the cancel request made during %s was lost", what);
    cr_assert_eq(load_int(&c->rc), 0, "%s: %s", what, cf_strerror(load_int(&c->rc)));
}

/* Gates in shared memory, allocated before the pool so that fork workers see them. */
static struct probe *gates;

/* Waits for gate *arg (an int) of `gates`: 0, or CODE_STUCK if it never opened. */
static int task_gated(const void *arg, size_t as, void *res, size_t rs)
{
    int i;
    (void)res, (void)rs;
    if (as != sizeof i)
        return CODE_BADSIZE;
    memcpy(&i, arg, sizeof i);
    return probe_gate_pass(gates, i) ? 0 : CODE_STUCK;
}

static cf_future *submit_gated(cf_executor *ex, int gate)
{
    cf_future *f;
    int rc = cf_submit(ex, task_gated, &gate, sizeof gate, 0, &f);
    cr_assert_eq(rc, 0, "submit: %s", cf_strerror(rc));
    return f;
}

static int call_map(struct cancelled *c)
{
    int in[2] = { 0, 1 };
    return cf_map(c->ex, task_gated, in, sizeof in[0], NULL, 0, 2, NULL);
}

/* (a) A thread pool's cf_map: its caller sleeps on the pool's condition variable, under its mutex. */
Test(callers, thread_pool_map_caller_cancelled_inside_returns_and_the_pool_goes_on, .timeout = REL_TIMEOUT)
{
    cf_options o = { .workers = 2 };
    struct cancelled c = { .call = call_map };

    gates = probe_new();
    cr_assert_eq(cf_thread_pool_new(&c.ex, &o), 0);
    cancel_in_call(&c);
    probe_open_all(gates);
    assert_cancelled_after_call(&c, "cf_map");
    assert_plain_tasks(c.ex, 100);
    cf_executor_free(c.ex);
    probe_free(gates);
}

static int call_shutdown_wait(struct cancelled *c)
{
    return cf_shutdown(c->ex, true, false);
}

/*
 * (b), (c) cf_shutdown(wait) while a task runs: on a process pool the
 * caller sleeps on the pool's condition variable; on a thread pool it
 * joins the pool's threads, under the mutex that orders joins. The pool
 * then still answers, and frees, from another thread.
 */
static void shutdown_caller_cancelled(enum pool_kind kind)
{
    cf_options o = { .workers = 2 };
    struct cancelled c = { .call = call_shutdown_wait };
    cf_future *f, *g;

    no_core_dumps();
    gates = probe_new();
    cr_assert_eq(pool_kind_new(kind, &c.ex, &o), 0);
    f = submit_gated(c.ex, 0);
    cr_assert(wait_at_least(&gates->started, 1, POLL_MAX_MS), "the gated task never started");
    cancel_in_call(&c);
    probe_open_all(gates);
    assert_cancelled_after_call(&c, "cf_shutdown(wait)");
    cr_assert_eq(cf_future_result(f, NULL, 0, -1), 0);
    cr_assert_eq(cf_submit(c.ex, task_gated, NULL, 0, 0, &g), CF_ESHUTDOWN);
    cr_assert_eq(cf_shutdown(c.ex, true, false), 0);
    cf_future_free(f);
    cf_executor_free(c.ex);
    probe_free(gates);
}

Test(callers, process_pool_shutdown_caller_cancelled_inside_returns_and_the_pool_goes_on, .timeout = REL_TIMEOUT)
{
    shutdown_caller_cancelled(POOL_FORK);
}

Test(callers, thread_pool_shutdown_caller_cancelled_inside_returns_and_the_pool_goes_on, .timeout = REL_TIMEOUT)
{
    shutdown_caller_cancelled(POOL_THREAD);
}

/*
 * cf_future_result with a deadline, on a process pool, where the waiting
 * thread itself ends the future and runs its callbacks when the pool's
 * manager is busy: here, held in another future's callback. f's callback
 * reaches a cancellation point (pthread_testcancel); the wait and the
 * callback, inside the call, must not act on the request either. Acted
 * on, it ended the thread with its executor still entered (pin), and
 * cf_executor_free waited for it for ever.
 */
static int manager_held, manager_release;
static pthread_t f_callback_thread;
static int f_callbacks;

static void hold_manager(cf_future *f, void *ctx)
{
    (void)f, (void)ctx;
    store_int(&manager_held, 1);
    for (int ms = 0; ms < GATE_MAX_MS && !load_int(&manager_release); ms++)
        sleep_ms(1);
}

static void reach_a_cancellation_point(cf_future *f, void *ctx)
{
    (void)f, (void)ctx;
    f_callback_thread = pthread_self();
    add_int(&f_callbacks, 1);
    pthread_testcancel();
}

static int call_result_with_deadline(struct cancelled *c)
{
    return cf_future_result(c->f, NULL, 0, 60000);
}

Test(callers, future_result_caller_cancelled_inside_returns_and_the_pool_goes_on, .timeout = REL_TIMEOUT)
{
    cf_options o = { .workers = 2 };
    struct cancelled c = { .call = call_result_with_deadline };
    cf_future *g;

    no_core_dumps();
    gates = probe_new();
    cr_assert_eq(cf_process_pool_new(&c.ex, &o), 0);
    c.f = submit_gated(c.ex, 0);
    g = submit_gated(c.ex, 1);
    cr_assert_eq(cf_future_add_done_callback(g, hold_manager, NULL), 0);
    cr_assert_eq(cf_future_add_done_callback(c.f, reach_a_cancellation_point, NULL), 0);
    probe_open(gates, 1);
    cr_assert(wait_at_least(&manager_held, 1, POLL_MAX_MS), "g's callback never ran");
    cancel_in_call(&c);
    probe_open(gates, 0);
    assert_cancelled_after_call(&c, "cf_future_result");
    cr_assert_eq(load_int(&f_callbacks), 1);
    cr_assert(pthread_equal(f_callback_thread, c.th),
              "f's callback ran in another thread than the waiting one: the test's setup no longer holds");
    store_int(&manager_release, 1);
    cr_assert_eq(cf_future_result(g, NULL, 0, -1), 0);
    cf_future_free(g);
    cf_future_free(c.f);
    assert_plain_tasks(c.ex, 100);
    cf_executor_free(c.ex);
    probe_free(gates);
}
