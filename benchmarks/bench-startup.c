/*
 * bench-startup.c — what a pool costs before it does any work.
 *
 * Creation of a pool of two workers, one empty task's result, and freeing
 * the pool (which waits for its workers to exit): the price of a short-lived
 * pool, such as a `with ProcessPoolExecutor(2)` block around one call.
 * Timed several times; the median and the best are printed, beside the
 * same sequence in Python.
 */
#include "bench.h"

#include <math.h>
#include <stdlib.h>

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

static void add_row(table *t, const char *label, double median_ms, double best_ms)
{
    table_row(t, "%s", label);
    table_set(t, "median_ms", median_ms);
    table_set(t, "best_ms", best_ms);
    table_set(t, "python_process_over_this", py_num("startup.process_ms") / median_ms);
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
}
