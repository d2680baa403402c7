/*
 * bench-overhead.c — seed 000's lesson: x^10 over 3000 integers.
 *
 * The seed's parallel map of this tiny function was 2,300 times slower than
 * a serial loop, because every element travelled alone. This section maps
 * the same function with chunks of one element (the seed's mistake), with
 * automatic chunks (cf_map's default) and with one chunk per worker (the
 * seed's fix), on both pools, and prints each map's time as a multiple of
 * the serial loop's, beside Python's figures for the same mistake and fix.
 * Every time is the best of many maps.
 */
#include "bench.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

enum { N = 3000 };

typedef struct pow_job {
    cf_executor *ex;
    size_t       chunk;          /* 0: automatic */
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
    check(cf_map(j->ex, pow10_task, j->in, sizeof j->in[0], j->out, sizeof j->out[0], N, &o),
          "cf_map");
}

static void openmp(void *ctx)
{
    pow_job *j = ctx;
    omp_pow10(j->in, j->out, N);
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

static void add_row(table *t, const char *label, double time, double base)
{
    table_row(t, "%s", label);
    table_set(t, "per_map_us", time * 1e6);
    table_set(t, "per_element_ns", time * 1e9 / N);
    table_set(t, "vs_serial", time / base);
}

static void python_rows(table *t)
{
    double base = py_num("overhead.serial_s");
    if (!isfinite(base)) {
        table_note(t, "%s", py_missing());
        return;
    }
    add_row(t, "Python map() serial", base, base);
    add_row(t, "Python ProcessPoolExecutor.map chunksize 1", py_num("overhead.map1_s"), base);
    add_row(t, "Python ProcessPoolExecutor.map one chunk/worker", py_num("overhead.split_s"), base);
    add_row(t, "Python multiprocessing.Pool.map (auto chunks)", py_num("overhead.pool_auto_s"), base);
    table_note(t, "Python rows: vs Python's own serial map() of x**10 over range(%.0f)",
               py_num("overhead.n"));
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

    static const column cols[] = {
        {"per_map_us", "per map (us)", "%.1f"},
        {"per_element_ns", "per element (ns)", "%.1f"},
        {"vs_serial", "vs serial", "%.1fx"},
    };
    table *t = table_begin("overhead", "x^10 over 3000 uint64, best of many maps", cols, 3);
    add_row(t, "serial loop", base, base);
    for (int k = 0; k < POOL_KINDS; k++) {
        j->ex = pool_open((pool_kind)k, 0);
        unsigned w = cf_executor_workers(j->ex);
        const char *name = pool_title((pool_kind)k);
        char label[96];

        progress("overhead: %s, chunksize 1", name);
        j->chunk = 1;
        snprintf(label, sizeof label, "%s cf_map chunksize 1", name);
        add_row(t, label, measure(mapped, j, want, slow, label), base);

        progress("overhead: %s, automatic chunks", name);
        j->chunk = 0;
        snprintf(label, sizeof label, "%s cf_map automatic chunks", name);
        add_row(t, label, measure(mapped, j, want, fast, label), base);

        progress("overhead: %s, one chunk per worker", name);
        j->chunk = (N + w - 1) / w;
        snprintf(label, sizeof label, "%s cf_map one chunk per worker", name);
        add_row(t, label, measure(mapped, j, want, fast, label), base);
        cf_executor_free(j->ex);
    }
    if (omp_available()) {
        progress("overhead: OpenMP");
        add_row(t, "OpenMP schedule(static)", measure(openmp, j, want, fast, "OpenMP"), base);
    }
    python_rows(t);
    table_end(t);
    free(want);
    free(j);
}
