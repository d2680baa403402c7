/*
 * bench-overhead.c — seed 000's lesson: x^10 over 3000 integers.
 *
 * The seed's parallel map of this tiny function was 2,300 times slower than
 * a serial loop, because every element travelled alone. This section maps
 * the same function with chunks of one element (the seed's mistake), with
 * automatic chunks (cf_map's default) and with one chunk per worker (the
 * seed's fix), on both pools, and as a submitted map (cf_map_submit, then
 * its result: what a map as a future costs beside cf_map), and prints each
 * map's time as a multiple of the serial loop's, beside Python's figures
 * for the same mistake and fix, OpenMP's static schedule and oneTBB's
 * parallel_for (static and auto partitioners). Every time is the best of
 * many maps.
 */
#include "bench.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

enum { N = 3000 };

typedef struct pow_job {
    cf_executor *ex;
    size_t       chunk;          /* 0: automatic */
    bool         submit;         /* cf_map_submit, then cf_future_result */
    uint64_t     in[N], out[N];
} pow_job;

static void serial(void *ctx)
{
    pow_job *j = ctx;
    for (size_t i = 0; i < N; i++)
        j->out[i] = pow10_u64(j->in[i]);
}

static void mapped(void *ctx)
{
    pow_job *j = ctx;
    cf_map_options o = {.chunksize = j->chunk};
    if (!j->submit) {
        check(cf_map(j->ex, pow10_task, j->in, sizeof j->in[0], j->out, sizeof j->out[0], N, &o),
              "cf_map");
        return;
    }
    cf_future *f;
    check(cf_map_submit(j->ex, pow10_task, j->in, sizeof j->in[0], j->out, sizeof j->out[0], N, &o,
                        &f),
          "cf_map_submit");
    check(cf_future_result(f, NULL, 0, -1), "a submitted map");
    cf_future_free(f);
}

static void openmp(void *ctx)
{
    pow_job *j = ctx;
    omp_pow10(j->in, j->out, N);
}

static void tbb_static(void *ctx)
{
    pow_job *j = ctx;
    tbb_pow10(j->in, j->out, N, true);
}

static void tbb_auto(void *ctx)
{
    pow_job *j = ctx;
    tbb_pow10(j->in, j->out, N, false);
}

typedef struct budget {
    unsigned min_reps, max_reps;
    double   seconds;
} budget;

/* Best time of run, after checking it computes what the serial loop does. */
static double measure(void (*run)(void *), pow_job *j, const uint64_t *want, budget b,
                      const char *who)
{
    memset(j->out, 0, sizeof j->out);
    double t = best_time(run, j, b.min_reps, b.max_reps, b.seconds);
    if (memcmp(j->out, want, sizeof j->out) != 0)
        die("overhead: %s computed a wrong x^10", who);
    return t;
}

/* The three ways of chunking, as cf_map chunksize values (0: automatic),
 * and the automatic one as a submitted map. */
enum { CHUNK_ONE, CHUNK_AUTO, CHUNK_SPLIT, SUBMITTED, NWAYS };
static const char *const way_label[NWAYS] = {
    "map, chunksize 1 (the seed's mistake)",
    "map, automatic chunks",
    "map, one chunk per worker (the seed's fix)",
    "cf_map_submit + its result, automatic chunks",
};
/* Python's counterpart of each way (ProcessPoolExecutor has no automatic
 * chunks; a submitted map has none: NULL). */
static const char *const py_key[NWAYS] = {
    "overhead.map1_s", "overhead.pool_auto_s", "overhead.split_s", NULL,
};

static void set_pair(table *t, const char *us_key, const char *x_key, double time, double base)
{
    table_set(t, us_key, time * 1e6);
    table_set(t, x_key, time / base);
}

static size_t chunk_for(int way, unsigned workers)
{
    return way == CHUNK_ONE ? 1 : way == CHUNK_SPLIT ? (N + workers - 1) / workers : 0;
}

void bench_overhead(const bench_config *cfg)
{
    pow_job *j = xmalloc(sizeof *j);
    uint64_t *want = xmalloc(sizeof j->out);
    for (size_t i = 0; i < N; i++)
        j->in[i] = i;
    double q = cfg->quick ? 0.1 : 1;
    budget fast = {cfg->quick ? 1 : 20, 200000, 0.3 * q};
    budget slow = {cfg->quick ? 1 : 3, 1000, 1.0 * q};

    progress("overhead: serial loop");
    j->ex = NULL;
    double base = best_time(serial, j, fast.min_reps, fast.max_reps, fast.seconds);
    memcpy(want, j->out, sizeof j->out);
    double t[POOL_KINDS][NWAYS];
    for (int k = 0; k < POOL_KINDS; k++) {
        j->ex = pool_open((pool_kind)k, 0);
        for (int way = 0; way < NWAYS; way++) {
            progress("overhead: %s, %s", pool_title((pool_kind)k), way_label[way]);
            j->chunk = chunk_for(way, cf_executor_workers(j->ex));
            j->submit = way == SUBMITTED;
            t[k][way] = measure(mapped, j, want, way == CHUNK_ONE ? slow : fast, way_label[way]);
        }
        cf_executor_free(j->ex);
    }
    double omp = NAN;
    if (omp_available()) {
        progress("overhead: OpenMP");
        omp = measure(openmp, j, want, fast, "OpenMP");
        omp_settle();
    }
    double tbb[2] = {NAN, NAN};    /* static_partitioner, auto_partitioner */
    if (tbb_available()) {
        progress("overhead: oneTBB");
        tbb[0] = measure(tbb_static, j, want, fast, "oneTBB static_partitioner");
        tbb[1] = measure(tbb_auto, j, want, fast, "oneTBB auto_partitioner");
        tbb_settle();
    }

    static const column cols[] = {
        {"thread_us", "thread pool (us)", "%.1f"},
        {"thread_vs_serial", "vs serial", "%.1fx"},
        {"process_us", "process pool (us)", "%.1f"},
        {"process_vs_serial", "vs serial", "%.1fx"},
        {"python_us", "Python (us)", "%.0f"},
        {"python_vs_serial", "vs serial", "%.1fx"},
    };
    table *tb = table_begin("overhead", "x^10 over 3000 uint64: time per map (best of many) "
                                        "and its multiple of the serial loop", cols, 6);
    double py = py_num("overhead.serial_s");
    table_row(tb, "serial loop, one core");
    set_pair(tb, "thread_us", "thread_vs_serial", base, base);
    set_pair(tb, "process_us", "process_vs_serial", base, base);
    set_pair(tb, "python_us", "python_vs_serial", py, py);
    for (int way = 0; way < NWAYS; way++) {
        table_row(tb, "%s", way_label[way]);
        set_pair(tb, "thread_us", "thread_vs_serial", t[POOL_THREAD][way], base);
        set_pair(tb, "process_us", "process_vs_serial", t[POOL_PROCESS][way], base);
        set_pair(tb, "python_us", "python_vs_serial", py_key[way] != NULL ? py_num(py_key[way]) : NAN,
                 py);
    }
    if (omp_available()) {
        table_row(tb, "OpenMP schedule(static), threads");
        set_pair(tb, "thread_us", "thread_vs_serial", omp, base);
    }
    if (tbb_available()) {
        table_row(tb, "oneTBB parallel_for, static_partitioner, threads");
        set_pair(tb, "thread_us", "thread_vs_serial", tbb[0], base);
        table_row(tb, "oneTBB parallel_for, auto_partitioner, threads");
        set_pair(tb, "thread_us", "thread_vs_serial", tbb[1], base);
    } else {
        table_row(tb, "oneTBB parallel_for (" TBB_NOT_BUILT ")");
    }
    if (isfinite(py))
        table_note(tb, "Python: x**10 by map() over range(%.0f) serially, ProcessPoolExecutor.map "
                       "(chunksize 1 and n/workers), multiprocessing.Pool.map for automatic chunks",
                   py_num("overhead.n"));
    else
        table_note(tb, "%s", py_missing());
    table_end(tb);
    free(want);
    free(j);
}
