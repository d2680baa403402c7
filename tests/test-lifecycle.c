/*
 * Lifecycle leaks: pools created, used (a few tasks and a small map) and
 * freed 1000 times over (300 for exec pools), of each kind (thread, process
 * fork, process exec),
 * must leave the descriptor, thread, child-process and shared-mapping counts
 * exactly where they were. Memory is the valgrind run's to check
 * (`make check-valgrind`), which runs fewer cycles (CF_LIFECYCLE_CYCLES sets
 * the number).
 *
 * Also: pools shut down with work pending and futures detached, several
 * process pools alive at once, pools created and freed by several threads
 * at once (no zygote may keep another pool's descriptors), and
 * cf_shared_alloc cycles.
 */
#include "helpers.h"

#include <criterion/criterion.h>

#include <pthread.h>
#include <time.h>




static int task_slow(const void *arg, size_t as, void *res, size_t rs)
{
    sleep_ms(5);
    return task_value(arg, as, res, rs);
}

/*
 * Up to 1000 cycles of a thread or fork pool, 300 of an exec pool, whose
 * every creation executes the program anew; at least 100 (keep_looping:
 * fewer on a slow machine, which prints how many it ran). The census is
 * taken every 50 cycles and at the end, so a leak of anything per cycle
 * shows either way.
 */
static long cycles_for(enum pool_kind kind)
{
    long dflt = kind == POOL_EXEC ? 300 : 1000;
    if (under_valgrind())
        dflt = kind == POOL_THREAD ? 50 : 3;    /* a process pool takes seconds to start there */
    return env_long("CF_LIFECYCLE_CYCLES", dflt);
}

static uint64_t slowest_free_us;    /* of the cycles since cycles() began */

static void timed_free(cf_executor *ex)
{
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    cf_executor_free(ex);
    clock_gettime(CLOCK_MONOTONIC, &b);
    int64_t ns = (int64_t)(b.tv_sec - a.tv_sec) * 1000000000 + (b.tv_nsec - a.tv_nsec);
    uint64_t us = (uint64_t)(ns / 1000);
    if (us > slowest_free_us)
        slowest_free_us = us;
}

/* One cycle: create, three tasks, a map of 32, free. */
static void one_cycle(enum pool_kind kind, long cycle)
{
    cf_executor *ex = NULL;
    cf_future *fs[3];
    uint64_t in[32], out[32];
    int rc = pool_kind_new(kind, &ex, &(cf_options){ .workers = 2 });

    cr_assert_eq(rc, 0, "cycle %ld: %s pool: %s", cycle, pool_kind_name(kind), cf_strerror(rc));
    for (int i = 0; i < 3; i++) {
        uint64_t x = (uint64_t)cycle * 100 + (uint64_t)i;
        rc = cf_submit(ex, task_value, &x, sizeof x, sizeof x, &fs[i]);
        cr_assert_eq(rc, 0, "cycle %ld: submit: %s", cycle, cf_strerror(rc));
    }
    for (int i = 0; i < 32; i++)
        in[i] = (uint64_t)cycle * 1000 + (uint64_t)i;
    rc = cf_map(ex, task_value, in, sizeof in[0], out, sizeof out[0], 32, NULL);
    cr_assert_eq(rc, 0, "cycle %ld: map: %s", cycle, cf_strerror(rc));
    for (int i = 0; i < 32; i++)
        cr_assert_eq(out[i], value_for(in[i]), "cycle %ld: map element %d", cycle, i);
    for (int i = 0; i < 3; i++) {
        uint64_t v = 0;
        rc = cf_future_result(fs[i], &v, sizeof v, -1);
        cr_assert_eq(rc, 0, "cycle %ld: task %d: %s", cycle, i, cf_strerror(rc));
        cr_assert_eq(v, value_for((uint64_t)cycle * 100 + (uint64_t)i), "cycle %ld: task %d", cycle, i);
    }
    /* Half the cycles free the pool before the futures, half after. */
    if (cycle % 2 == 0)
        timed_free(ex);
    for (int i = 0; i < 3; i++)
        cf_future_free(fs[i]);
    if (cycle % 2 != 0)
        timed_free(ex);
}

static void cycles(enum pool_kind kind)
{
    struct census before;
    long n = cycles_for(kind);
    char msg[256];
    uint64_t t0;

    skip_exec_under_valgrind(kind);
    /* The first pool may set up things that live as long as the process. */
    one_cycle(kind, -1);
    census_take(&before);
    slowest_free_us = 0;
    t0 = now_ms();
    long c = 0;
    while (keep_looping(c, n < 100 ? n : 100, n, t0)) {
        one_cycle(kind, c);
        c++;
        if (c % 50 == 0)
            cr_assert(census_same(&before, msg, sizeof msg), "after %ld cycles: %s", c, msg);
    }
    cr_assert(census_same(&before, msg, sizeof msg), "after %ld cycles: %s", c, msg);
    fprintf(stderr, "lifecycle %s: %ld cycles of create, 3 tasks, a map of 32, free in %llu ms "
            "(slowest cf_executor_free %.1f ms): %s\n",
            pool_kind_name(kind), c, (unsigned long long)(now_ms() - t0), slowest_free_us / 1000.0, msg);
}

Test(lifecycle, thread_pool_cycles_leak_nothing, .timeout = REL_SLOW_TIMEOUT)
{
    cycles(POOL_THREAD);
}

Test(lifecycle, fork_pool_cycles_leak_nothing, .timeout = REL_SLOW_TIMEOUT)
{
    cycles(POOL_FORK);
}

Test(lifecycle, exec_pool_cycles_leak_nothing, .timeout = REL_SLOW_TIMEOUT)
{
    cycles(POOL_EXEC);
}

/*
 * Pools shut down with work pending: detached futures (freed before they
 * are done), shutdown without waiting and with cancel_pending, then free.
 * Every kept future ends (0 with the right value, or CF_ECANCELED). A fifth
 * of cycles_for's count, at least 20 (keep_looping).
 */
static void abandon_cycles(enum pool_kind kind)
{
    struct census before;
    long n = under_valgrind() ? 2 : cycles_for(kind) / 5 + 1;
    char msg[256];
    long cancelled = 0, finished = 0;

    skip_exec_under_valgrind(kind);
    census_take(&before);
    uint64_t start = now_ms();
    long c = 0;
    for (; keep_looping(c, n < 20 ? n : 20, n, start); c++) {
        cf_executor *ex = NULL;
        cf_future *keep[4], *drop;
        int rc = pool_kind_new(kind, &ex, &(cf_options){ .workers = 2 });
        cr_assert_eq(rc, 0, "cycle %ld: %s", c, cf_strerror(rc));
        for (int i = 0; i < 8; i++) {
            uint64_t x = (uint64_t)c * 10 + (uint64_t)i;
            rc = cf_submit(ex, task_slow, &x, sizeof x, sizeof x, i % 2 ? &drop : &keep[i / 2]);
            cr_assert_eq(rc, 0, "cycle %ld: submit: %s", c, cf_strerror(rc));
            if (i % 2)
                cf_future_free(drop);    /* detached */
        }
        cr_assert_eq(cf_shutdown(ex, false, true), 0);
        cf_executor_free(ex);
        for (int i = 0; i < 4; i++) {
            uint64_t v = 0;
            rc = cf_future_result(keep[i], &v, sizeof v, 0);
            cr_assert(rc == CF_ECANCELED || (rc == 0 && v == value_for((uint64_t)c * 10 + (uint64_t)(2 * i))),
                      "cycle %ld: kept future %d: %s", c, i, cf_strerror(rc));
            cancelled += rc == CF_ECANCELED;
            finished += rc == 0;
            cf_future_free(keep[i]);
        }
    }
    cr_assert(census_same(&before, msg, sizeof msg), "%s", msg);
    fprintf(stderr, "lifecycle %s: %ld pools abandoned with work pending (%ld kept futures finished, "
            "%ld cancelled): %s\n", pool_kind_name(kind), c, finished, cancelled, msg);
}

Test(lifecycle, thread_pools_abandoned_with_work_pending, .timeout = REL_SLOW_TIMEOUT)
{
    abandon_cycles(POOL_THREAD);
}

Test(lifecycle, fork_pools_abandoned_with_work_pending, .timeout = REL_SLOW_TIMEOUT)
{
    abandon_cycles(POOL_FORK);
}

Test(lifecycle, exec_pools_abandoned_with_work_pending, .timeout = REL_SLOW_TIMEOUT)
{
    abandon_cycles(POOL_EXEC);
}

/* ---- pools whose creation fails --------------------------------------------------- */

static int init_refuse(const void *arg, size_t as)
{
    (void)arg; (void)as;
    return 17;
}

/*
 * Creation fails (an initializer refuses) while the zygote may still be
 * starting the other workers and its standby: whatever it started is ended
 * and reaped, and nothing is left.
 */
static void failed_creations(enum pool_kind kind)
{
    struct census before;
    char msg[256];
    int rounds = under_valgrind() ? 2 : 30;

    skip_exec_under_valgrind(kind);
    census_take(&before);
    for (int r = 0; r < rounds; r++) {
        cf_options o = { .workers = 3, .initializer = init_refuse };
        cf_executor *ex = untouched();
        int rc = pool_kind_new(kind, &ex, &o);
        cr_assert_eq(rc, 17, "round %d: %s", r, cf_strerror(rc));
        cr_assert_eq(ex, untouched());
        cr_assert(census_same(&before, msg, sizeof msg), "round %d: %s", r, msg);
    }
}

Test(lifecycle, failed_fork_pool_creations_leave_nothing, .timeout = REL_TIMEOUT)
{
    failed_creations(POOL_FORK);
}

Test(lifecycle, failed_exec_pool_creations_leave_nothing, .timeout = REL_TIMEOUT)
{
    failed_creations(POOL_EXEC);
}

/* ---- several process pools at once -------------------------------------------------- */

static void assert_works(cf_executor *ex, uint64_t base)
{
    cf_future *f;
    uint64_t v = 0;
    int rc = cf_submit(ex, task_value, &base, sizeof base, sizeof v, &f);
    cr_assert_eq(rc, 0, "submit: %s", cf_strerror(rc));
    cr_assert_eq(cf_future_result(f, &v, sizeof v, -1), 0);
    cr_assert_eq(v, value_for(base));
    cf_future_free(f);
}

/*
 * Six process pools (fork and exec) alive at once, all working, freed in the
 * given order. Under valgrind, where a pool takes seconds to start, three
 * fork pools, and only for the order that once hung.
 */
static void several_pools(const int order[6])
{
    struct census before;
    cf_executor *ex[6];
    char msg[256];
    int N = 6, ord[6];

    for (int i = 0; i < 6; i++)
        ord[i] = order[i];
    if (under_valgrind()) {
        if (order[0] != 0)
            cr_skip_test("under valgrind only the oldest-first order runs");
        N = 3;
        for (int i = 0; i < 3; i++)
            ord[i] = i;
    }
    census_take(&before);
    for (int i = 0; i < N; i++) {
        enum pool_kind kind = i % 2 && !under_valgrind() ? POOL_EXEC : POOL_FORK;
        int rc = pool_kind_new(kind, &ex[i], &(cf_options){ .workers = 1 });
        cr_assert_eq(rc, 0, "pool %d (%s): %s", i, pool_kind_name(kind), cf_strerror(rc));
    }
    for (int i = 0; i < N; i++)
        assert_works(ex[i], (uint64_t)i);
    for (int k = 0; k < N; k++) {
        cf_executor_free(ex[ord[k]]);
        for (int j = k + 1; j < N; j++)
            assert_works(ex[ord[j]], (uint64_t)(100 * k + j));
    }
    cr_assert(census_same(&before, msg, sizeof msg), "%s", msg);
}

Test(lifecycle, several_process_pools_freed_newest_first, .timeout = REL_TIMEOUT)
{
    static const int order[6] = { 5, 4, 3, 2, 1, 0 };
    several_pools(order);
}

Test(lifecycle, several_process_pools_freed_oldest_first, .timeout = REL_TIMEOUT)
{
    static const int order[6] = { 0, 1, 2, 3, 4, 5 };
    several_pools(order);
}

Test(lifecycle, several_process_pools_freed_out_of_order, .timeout = REL_TIMEOUT)
{
    static const int order[6] = { 2, 0, 4, 1, 5, 3 };
    several_pools(order);
}

struct freer {
    cf_executor *ex;
    int done;
};

static void *freer_main(void *arg)
{
    struct freer *fr = arg;
    cf_executor_free(fr->ex);
    store_int(&fr->done, 1);
    return NULL;
}

/*
 * Freeing a process pool while a process pool created after it lives.
 *
 * This hung for ever until commit 41947f9: the second pool's zygote,
 * forked from the caller after the first pool existed, inherited the first
 * pool's control socket (fork keeps close-on-exec descriptors), so the first
 * pool's zygote never saw EOF and cf_executor_free waited on it for ever.
 * The zygote now closes the other pools' descriptors and quits when told.
 */
Test(lifecycle, free_older_pool_while_younger_lives, .timeout = REL_TIMEOUT)
{
    struct census before;
    cf_executor *a = NULL, *b = NULL;
    struct freer fr;
    pthread_t th;
    char msg[256];

    census_take(&before);
    cr_assert_eq(pool_kind_new(POOL_FORK, &a, &(cf_options){ .workers = 1 }), 0);
    cr_assert_eq(pool_kind_new(POOL_FORK, &b, &(cf_options){ .workers = 1 }), 0);
    assert_works(a, 1);
    assert_works(b, 2);
    fr = (struct freer){ .ex = a };
    cr_assert_eq(pthread_create(&th, NULL, freer_main, &fr), 0);
    /* A bound, not a timing assertion: freeing an idle pool takes milliseconds. */
    bool freed = wait_at_least(&fr.done, 1, under_valgrind() ? 60000 : 10000);
    cr_assert(freed, "cf_executor_free of the older pool did not return while the younger pool lives");
    pthread_join(th, NULL);
    assert_works(b, 3);
    cf_executor_free(b);
    cr_assert(census_same(&before, msg, sizeof msg), "%s", msg);
}

/* ---- pools created and freed by several threads at once ---------------------------- */

#define CONC_THREADS 4

struct conc {
    pthread_barrier_t bar;
    int               rounds;
    cf_executor      *ex[CONC_THREADS];
    int               rc[CONC_THREADS];
};

struct conc_arg {
    struct conc *c;
    int          t;
};

/*
 * Each round: every thread creates a pool while the others create theirs
 * and free the previous round's, then waits while the main thread looks at
 * every zygote.
 */
static void *conc_main(void *arg)
{
    struct conc_arg *a = arg;
    struct conc *c = a->c;
    cf_executor *old = NULL;
    for (int r = 0; r < c->rounds; r++) {
        pthread_barrier_wait(&c->bar);
        c->rc[a->t] = pool_kind_new(POOL_FORK, &c->ex[a->t], &(cf_options){ .workers = 1 });
        cf_executor_free(old);
        old = c->rc[a->t] == 0 ? c->ex[a->t] : NULL;
        pthread_barrier_wait(&c->bar);    /* the main thread inspects */
        pthread_barrier_wait(&c->bar);
    }
    cf_executor_free(old);
    return NULL;
}

/*
 * A zygote forked while another thread makes or closes a pool's descriptors
 * must not keep them: until the descriptors were made and tracked as one
 * step (with respect to fork), a zygote forked in between kept another
 * pool's death pipe, memfd or control socket, so that pool's workers would
 * never see its caller die through the pipe, nor its manager its zygote die
 * through the socket.
 */
Test(lifecycle, concurrent_pools_zygotes_keep_no_other_pools_descriptors, .timeout = REL_SLOW_TIMEOUT)
{
    static struct fd_id before[1024], now[1024];
    struct census census;
    struct conc c = { .rounds = 25 };
    struct conc_arg args[CONC_THREADS];
    pthread_t th[CONC_THREADS];
    char msg[512];
    int nbefore, checked = 0;

    if (UNDER_ASAN)
        cr_skip_test("ASan's allocator is not fork-safe: a zygote forked while another thread allocates may hang");
    if (under_valgrind())
        cr_skip_test(FORK_AMONG_THREADS_UNDER_VALGRIND);
    /* The first pool may set up things that live as long as the process. */
    cf_executor *first = NULL;
    cr_assert_eq(pool_kind_new(POOL_FORK, &first, &(cf_options){ .workers = 1 }), 0);
    cf_executor_free(first);
    census_take(&census);
    nbefore = fd_ids(getpid(), before, 1024);
    cr_assert_eq(pthread_barrier_init(&c.bar, NULL, CONC_THREADS + 1), 0);
    for (int t = 0; t < CONC_THREADS; t++) {
        args[t] = (struct conc_arg){ &c, t };
        cr_assert_eq(pthread_create(&th[t], NULL, conc_main, &args[t]), 0);
    }
    bool ok = true;
    for (int r = 0; r < c.rounds; r++) {
        pthread_barrier_wait(&c.bar);
        pthread_barrier_wait(&c.bar);
        int nnow = fd_ids(getpid(), now, 1024);
        pid_t kids[64];
        int nk = proc_children(getpid(), kids, 64, NULL), zygotes = 0;
        for (int t = 0; t < CONC_THREADS; t++) {
            if (c.rc[t] != 0 && ok) {
                snprintf(msg, sizeof msg, "round %d, thread %d: %s", r, t, cf_strerror(c.rc[t]));
                ok = false;
            }
        }
        for (int k = 0; k < nk && k < 64 && ok; k++) {
            bool zygote = proc_named(kids[k], "cfutures-zygote");
            if (!zygote && !proc_named(kids[k], "cfutures-spare"))
                continue;
            zygotes += zygote;
            checked++;
            /* A standby the pool just made may still be closing what it
             * got from its zygote (its zygote's socket, the caller's end
             * of its own), and the zygote its end of the standby's socket,
             * which it has just sent to the caller (creation may return as
             * soon as that arrives): each is given a moment to end. */
            bool clean;
            for (uint64_t end = now_ms() + 5000;
                 !(clean = pool_process_clean(kids[k], before, nbefore, now, nnow, msg, sizeof msg)) &&
                 now_ms() < end;)
                sleep_ms(1);
            ok = ok && clean;
        }
        if (ok && zygotes != CONC_THREADS) {
            snprintf(msg, sizeof msg, "round %d: %d zygotes for %d pools", r, zygotes, CONC_THREADS);
            ok = false;
        }
        pthread_barrier_wait(&c.bar);
    }
    for (int t = 0; t < CONC_THREADS; t++)
        pthread_join(th[t], NULL);
    pthread_barrier_destroy(&c.bar);
    cr_assert(ok, "%s", msg);
    fprintf(stderr, "lifecycle: %d threads created and freed %d fork pools at once, %d times; the %d zygotes "
            "and standbys looked at held no other pool's descriptor\n", CONC_THREADS, CONC_THREADS, c.rounds,
            checked);
    cr_assert(census_same(&census, msg, sizeof msg), "%s", msg);
}

/* ---- cf_shared_alloc ---------------------------------------------------------------- */

Test(lifecycle, shared_alloc_cycles_leak_nothing, .timeout = REL_TIMEOUT)
{
    struct census before;
    long n = under_valgrind() ? 100 : 1000;
    char msg[256];

    census_take(&before);
    for (long c = 0; c < n; c++) {
        size_t size = 1 + (size_t)(c * 4099) % (1 << 20);
        unsigned char *p = cf_shared_alloc(size);
        cr_assert_not_null(p, "cycle %ld: cf_shared_alloc(%zu)", c, size);
        cr_assert_eq(p[0] | p[size - 1], 0, "cf_shared_alloc memory is not zeroed");
        p[0] = p[size - 1] = 0xAB;
        cf_shared_free(p, size);
    }
    cr_assert(census_same(&before, msg, sizeof msg), "%s", msg);
}

/* A pool created with shared regions alive, which are freed after the pool. */
Test(lifecycle, shared_regions_outlive_pools, .timeout = REL_TIMEOUT)
{
    struct census before;
    char msg[256];
    long n = under_valgrind() ? 2 : 100;

    census_take(&before);
    for (long c = 0; c < n; c++) {
        enum pool_kind kind = c % 2 && !under_valgrind() ? POOL_EXEC : POOL_FORK;
        uint64_t *shared = cf_shared_alloc(64 * sizeof *shared), out[64];
        cf_executor *ex = NULL;
        cr_assert_not_null(shared);
        for (int i = 0; i < 64; i++)
            shared[i] = (uint64_t)(c * 64 + i);
        cr_assert_eq(pool_kind_new(kind, &ex, &(cf_options){ .workers = 2 }), 0);
        cr_assert_eq(cf_map(ex, task_value, shared, sizeof *shared, out, sizeof out[0], 64, NULL), 0);
        for (int i = 0; i < 64; i++)
            cr_assert_eq(out[i], value_for((uint64_t)(c * 64 + i)));
        cf_executor_free(ex);
        cf_shared_free(shared, 64 * sizeof *shared);
    }
    cr_assert(census_same(&before, msg, sizeof msg), "%s", msg);
}
