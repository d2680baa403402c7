/*
 * bench-startup.c — what a pool costs before it does any work.
 *
 * Creation of a pool of two workers, one empty task's result, and freeing
 * the pool (which waits for its workers to exit): the price of a short-lived
 * pool, such as a `with ProcessPoolExecutor(2)` block around one call.
 * Timed several times; the median and the best are printed, beside the
 * same sequence in Python. A second table sets the two start methods side
 * by side (CF_START_FORK copies the caller, CF_START_EXEC loads the program
 * anew), with the empty-task round trip of each once it runs.
 */
#include "bench.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

enum { WORKERS = 2 };

static double once(pool_kind k)
{
    cf_options opts = {.workers = WORKERS};
    cf_executor *ex;
    cf_future *f;
    double t0 = now_s();
    check(k == POOL_THREAD ? cf_thread_pool_new(&ex, &opts) : cf_process_pool_new(&ex, &opts),
          "pool creation");
    check(cf_submit(ex, empty_task, NULL, 0, 0, &f), "cf_submit");
    check(cf_future_result(f, NULL, 0, -1), "empty task");
    cf_future_free(f);
    cf_executor_free(ex);
    return now_s() - t0;
}

/* A process pool of WORKERS with the given start method, created and freed. */
static double once_started(cf_start_method start, double *latency_us, unsigned trips)
{
    cf_options opts = {.workers = WORKERS, .start = start};
    cf_executor *ex;
    cf_future *f;
    double t0 = now_s();
    check(cf_process_pool_new(&ex, &opts), "pool creation");
    check(cf_submit(ex, empty_task, NULL, 0, 0, &f), "cf_submit");
    check(cf_future_result(f, NULL, 0, -1), "empty task");
    cf_future_free(f);
    double startup = now_s() - t0;
    double *rt = xmalloc(trips * sizeof *rt);
    for (unsigned i = 0; i < trips; i++) {
        double t1 = now_s();
        check(cf_submit(ex, empty_task, NULL, 0, 0, &f), "cf_submit");
        check(cf_future_result(f, NULL, 0, -1), "empty task");
        cf_future_free(f);
        rt[i] = now_s() - t1;
    }
    *latency_us = median(rt, trips) * 1e6;
    free(rt);
    t0 = now_s();
    cf_executor_free(ex);
    return startup + (now_s() - t0);
}

/*
 * Fork workers against exec workers: an exec worker loads the program anew
 * (execve, the dynamic loader, mapping the pool's memory), a fork worker is a
 * copy; once running, both take tasks the same way.
 */
static void start_methods(const bench_config *cfg, unsigned reps)
{
    static const column cols[] = {
        {"startup_median_ms", "create+first+free median (ms)", "%.3f"},
        {"startup_best_ms", "best (ms)", "%.3f"},
        {"latency_us", "empty task round trip, median (us)", "%.2f"},
    };
    static const struct { cf_start_method start; const char *label; } methods[] = {
        {CF_START_FORK, "process pool, CF_START_FORK"},
        {CF_START_EXEC, "process pool, CF_START_EXEC"},
    };
    unsigned trips = cfg->quick ? 200 : 5000;
    double *t = xmalloc(reps * sizeof *t), *lat = xmalloc(reps * sizeof *lat);
    table *tb = table_begin("start_methods", "start methods: a pool of 2 with fork or exec workers",
                            cols, 3);
    for (size_t m = 0; m < sizeof methods / sizeof *methods; m++) {
        progress("startup: %s", methods[m].label);
        double best = -1;
        for (unsigned r = 0; r < reps; r++) {
            t[r] = once_started(methods[m].start, &lat[r], trips);
            if (best < 0 || t[r] < best)
                best = t[r];
        }
        table_row(tb, "%s", methods[m].label);
        table_set(tb, "startup_median_ms", median(t, reps) * 1e3);
        table_set(tb, "startup_best_ms", best * 1e3);
        table_set(tb, "latency_us", median(lat, reps));
    }
    table_note(tb, "round trip: median of %u after the first task, per pool; then the median "
                   "over pools", trips);
    table_end(tb);
    free(t);
    free(lat);
}

static void add_row(table *t, const char *label, double median_ms, double best_ms)
{
    table_row(t, "%s", label);
    table_set(t, "median_ms", median_ms);
    table_set(t, "best_ms", best_ms);
    table_set(t, "python_process_over_this", py_num("startup.process_ms") / median_ms);
}

/*
 * The process pool against the floor: the least a pool of forked workers
 * costs (floors.c), each timed in turn so both see the same machine; then
 * both again with a caller holding LARGE_MB resident, which every fork
 * copies the page tables of, and every exit tears down.
 */
enum { LARGE_MB = 200 };

static void floor_pair(unsigned reps, double *pool_ms, double *floor_ms)
{
    double *tp = xmalloc(reps * sizeof *tp), *tf = xmalloc(reps * sizeof *tf);
    for (unsigned r = 0; r < reps; r++) {
        tf[r] = minimal_fork_pool_ns(WORKERS) / 1e6;
        tp[r] = once(POOL_PROCESS) * 1e3;
    }
    pool_ms[0] = median(tp, reps);
    floor_ms[0] = median(tf, reps);
    pool_ms[1] = floor_ms[1] = INFINITY;
    for (unsigned r = 0; r < reps; r++) {
        pool_ms[1] = fmin(pool_ms[1], tp[r]);
        floor_ms[1] = fmin(floor_ms[1], tf[r]);
    }
    free(tp);
    free(tf);
}

static void floor_rows(table *tb, const char *what, const double *pool_ms, const double *floor_ms)
{
    table_row(tb, "minimal fork pool%s", what);
    table_set(tb, "median_ms", floor_ms[0]);
    table_set(tb, "best_ms", floor_ms[1]);
    table_set(tb, "vs_floor", 1.0);
    table_row(tb, "process pool%s", what);
    table_set(tb, "median_ms", pool_ms[0]);
    table_set(tb, "best_ms", pool_ms[1]);
    table_set(tb, "vs_floor", pool_ms[0] / floor_ms[0]);
}

static void against_the_floor(const bench_config *cfg, unsigned reps)
{
    static const column cols[] = {
        {"median_ms", "median (ms)", "%.3f"},
        {"best_ms", "best (ms)", "%.3f"},
        {"vs_floor", "median vs minimal fork pool", "%.2fx"},
    };
    table *tb = table_begin("startup_floor", "a pool of 2: create, one empty task's result, free, "
                                             "against the least a fork pool costs", cols, 3);
    double pool[2], floor[2];
    progress("startup: against the minimal fork pool");
    floor_pair(reps, pool, floor);
    floor_rows(tb, "", pool, floor);

    progress("startup: a caller with %d MB resident", LARGE_MB);
    size_t size = (size_t)LARGE_MB << 20;
    unsigned char *big = xmalloc(size);
    memset(big, 0x5a, size);    /* resident, and not zero pages the kernel could share */
    floor_pair(cfg->quick ? reps : reps / 2, pool, floor);
    char what[64];
    snprintf(what, sizeof what, ", caller with %d MB resident", LARGE_MB);
    floor_rows(tb, what, pool, floor);
    free(big);
    table_note(tb, "minimal fork pool: fork 2 workers on pipe pairs, one 8-byte task through the "
                   "first, close the pipes, reap both; no shared memory, no crash handling; "
                   "each rep times both, one after the other");
    table_end(tb);
}

void bench_startup(const bench_config *cfg)
{
    unsigned reps = cfg->quick ? 3 : 20;
    double *t = xmalloc(reps * sizeof *t);
    static const column cols[] = {
        {"median_ms", "median (ms)", "%.3f"},
        {"best_ms", "best (ms)", "%.3f"},
        {"python_process_over_this", "Python process pool / this", "%.1fx"},
    };
    char title[128];
    snprintf(title, sizeof title, "create a pool of %d, one empty task's result, free; %u times",
             WORKERS, reps);
    table *tb = table_begin("startup", title, cols, 3);
    for (int k = 0; k < POOL_KINDS; k++) {
        progress("startup: %s", pool_title((pool_kind)k));
        double best = -1;
        for (unsigned r = 0; r < reps; r++) {
            t[r] = once((pool_kind)k);
            if (best < 0 || t[r] < best)
                best = t[r];
        }
        add_row(tb, pool_title((pool_kind)k), median(t, reps) * 1e3, best * 1e3);
    }
    if (isfinite(py_num("startup.process_ms"))) {
        add_row(tb, "Python ProcessPoolExecutor", py_num("startup.process_ms"),
                py_num("startup.process_best_ms"));
        add_row(tb, "Python ThreadPoolExecutor", py_num("startup.thread_ms"),
                py_num("startup.thread_best_ms"));
        table_note(tb, "Python: %.0f times each, interpreter start-up not included",
                   py_num("startup.reps"));
    } else {
        table_note(tb, "%s", py_missing());
    }
    table_end(tb);
    free(t);
    against_the_floor(cfg, reps);
    start_methods(cfg, cfg->quick ? 3 : 10);
}
