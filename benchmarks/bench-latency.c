/*
 * bench-latency.c — one empty task's round trip, against the kernel's floor.
 *
 * cf_submit, then cf_future_result, then cf_future_free, one task at a time:
 * what a caller pays for a single small task when the pool is idle. Every
 * round trip is timed alone and the median is printed, beside the median of
 * raw round trips between two processes measured a moment before
 * (floors.c): pipes with both on one core and on two cores, a futex and a
 * spun-on word on two cores; and beside Python's submit().result(). The
 * process pool's caller and idle workers spin briefly before they sleep, so
 * its round trip can fall between the spin floor and the sleeping ones.
 */
#include "bench.h"

#include <math.h>
#include <stdlib.h>

/* Median nanoseconds of reps empty-task round trips on a pool of kind k. */
double round_trip_ns(pool_kind k, unsigned reps)
{
    cf_executor *ex = pool_open(k, 0);
    double m = executor_round_trip_ns(ex, reps);
    cf_executor_free(ex);
    return m;
}

typedef struct floors {
    double pipe1_us, pipe2_us, futex_us, spin_us;
} floors;

static void add_row(table *t, const char *label, double us, const floors *fl)
{
    table_row(t, "%s", label);
    table_set(t, "median_us", us);
    table_set(t, "vs_pipe_1core", us / fl->pipe1_us);
    table_set(t, "vs_pipe_2cores", us / fl->pipe2_us);
    table_set(t, "vs_futex", us / fl->futex_us);
    table_set(t, "python_process_over_this", py_num("latency.process_us") / us);
}

void bench_latency(const bench_config *cfg)
{
    unsigned reps = cfg->quick ? 500 : 20000;
    floors fl;
    progress("latency: raw pipe round trips");
    fl.pipe1_us = pipe_round_trip_ns(reps, false) * 1e-3;
    fl.pipe2_us = pipe_round_trip_ns(reps, true) * 1e-3;
    progress("latency: raw futex round trip");
    fl.futex_us = futex_round_trip_ns(reps) * 1e-3;
    progress("latency: raw spin round trip");
    fl.spin_us = spin_round_trip_ns(reps) * 1e-3;
    double pool_us[POOL_KINDS];
    for (int k = 0; k < POOL_KINDS; k++) {
        progress("latency: %s", pool_title((pool_kind)k));
        pool_us[k] = round_trip_ns((pool_kind)k, reps) * 1e-3;
    }

    static const column cols[] = {
        {"median_us", "median (us)", "%.2f"},
        {"vs_pipe_1core", "vs pipe 1 core", "%.3gx"},
        {"vs_pipe_2cores", "vs pipe 2 cores", "%.3gx"},
        {"vs_futex", "vs futex", "%.3gx"},
        {"python_process_over_this", "Python process pool / this", "%.0fx"},
    };
    char title[128];
    snprintf(title, sizeof title, "round trip of one empty task, median of %u", reps);
    table *t = table_begin("latency", title, cols, 5);
    add_row(t, "raw pipe round trip, 2 processes on 1 core", fl.pipe1_us, &fl);
    add_row(t, "raw pipe round trip, 2 processes on 2 cores", fl.pipe2_us, &fl);
    add_row(t, "raw futex round trip, 2 cores, sleeping", fl.futex_us, &fl);
    add_row(t, "raw spin round trip, 2 cores, shared word", fl.spin_us, &fl);
    add_row(t, "thread pool cf_submit + cf_future_result", pool_us[POOL_THREAD], &fl);
    add_row(t, "process pool cf_submit + cf_future_result", pool_us[POOL_PROCESS], &fl);
    if (isfinite(py_num("latency.process_us"))) {
        add_row(t, "Python ProcessPoolExecutor submit().result()", py_num("latency.process_us"),
                &fl);
        add_row(t, "Python ThreadPoolExecutor submit().result()", py_num("latency.thread_us"),
                &fl);
        table_note(t, "Python: median of %.0f round trips each", py_num("latency.reps"));
    } else {
        table_note(t, "%s", py_missing());
    }
    table_end(t);
}
