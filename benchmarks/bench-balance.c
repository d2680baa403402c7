/*
 * bench-balance.c — seed 003's DirectView against LoadBalancedView.
 *
 * The seed's deliberate worst case for work split in advance: the long
 * tasks all come first, so cutting the list into one contiguous chunk per
 * worker (DirectView, OpenMP static) gives the first worker every long task
 * while the others finish early and wait. Handing out one task at a time to
 * whichever worker is free (LoadBalancedView, cf_map chunksize 1, OpenMP
 * dynamic) evens it out. Each task records its worker (cf_worker_id) and its
 * start and end, which give the tasks per worker, the busy time per worker
 * and the timeline charts.
 */
#include "bench.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

enum { LONG_UNITS = 8, SHORT_UNITS = 1 };

typedef struct balance_job {
    cf_executor    *ex;
    const uint64_t *rounds;
    span           *spans;
    size_t          n, chunk;
} balance_job;

typedef struct outcome {
    double     time;
    lane_task *lanes;        /* the best run's tasks, times from its start */
} outcome;

/* The tasks one after the other in the caller: the straight time. */
static void spin_all(void *ctx)
{
    const balance_job *j = ctx;
    for (size_t i = 0; i < j->n; i++)
        spin(j->rounds[i]);
}

/* Best of reps of one cf_map; its spans, relative to its start, go to o->lanes. */
static void run_pool(balance_job *j, unsigned reps, outcome *o)
{
    o->time = -1;
    for (unsigned r = 0; r < reps; r++) {
        cf_map_options opts = {.chunksize = j->chunk};
        uint64_t t0 = now_ns();
        check(cf_map(j->ex, spin_span_task, j->rounds, sizeof j->rounds[0], j->spans,
                     sizeof j->spans[0], j->n, &opts),
              "cf_map");
        double t = (double)(now_ns() - t0) * 1e-9;
        if (o->time >= 0 && t >= o->time)
            continue;
        o->time = t;
        for (size_t i = 0; i < j->n; i++)
            o->lanes[i] = (lane_task){
                .worker = j->spans[i].worker,
                .start = (double)(j->spans[i].start_ns - t0) * 1e-9,
                .end = (double)(j->spans[i].end_ns - t0) * 1e-9,
                .id = (unsigned)i,
                .shade = i < j->n / 2 ? 0 : 1,
            };
    }
}

/* OpenMP's or oneTBB's loop (omp_spans, tbb_spans), with its flag, as run_pool. */
typedef void spans_loop(const uint64_t *rounds, span *out, size_t count, bool flag);

static void run_peer(balance_job *j, spans_loop *loop, bool flag, unsigned reps, outcome *o)
{
    o->time = -1;
    for (unsigned r = 0; r < reps; r++) {
        uint64_t t0 = now_ns();
        loop(j->rounds, j->spans, j->n, flag);
        double t = (double)(now_ns() - t0) * 1e-9;
        if (o->time >= 0 && t >= o->time)
            continue;
        o->time = t;
        for (size_t i = 0; i < j->n; i++)
            o->lanes[i] = (lane_task){.worker = j->spans[i].worker,
                                      .start = (double)(j->spans[i].start_ns - t0) * 1e-9,
                                      .end = (double)(j->spans[i].end_ns - t0) * 1e-9};
    }
}

/* "8 / 8" tasks per worker and "320 / 40" busy ms per worker. */
static void per_worker(const lane_task *l, size_t n, unsigned workers, char *tasks, char *busy,
                       size_t len)
{
    size_t count[64] = {0};
    double ms[64] = {0};
    for (size_t i = 0; i < n; i++)
        if (l[i].worker >= 0 && l[i].worker < 64) {
            count[l[i].worker]++;
            ms[l[i].worker] += (l[i].end - l[i].start) * 1e3;
        }
    size_t at = 0, bt = 0;
    tasks[0] = busy[0] = '\0';
    for (unsigned w = 0; w < workers && w < 64; w++) {
        if (at < len)
            at += (size_t)snprintf(tasks + at, len - at, w ? " / %zu" : "%zu", count[w]);
        if (bt < len)
            bt += (size_t)snprintf(busy + bt, len - bt, w ? " / %.0f" : "%.0f", ms[w]);
    }
}

static void add_row(table *t, const char *label, const outcome *o, size_t n, unsigned workers,
                    double ideal)
{
    char tasks[48], busy[48];
    per_worker(o->lanes, n, workers, tasks, busy, sizeof tasks);
    table_row(t, "%s", label);
    table_set(t, "time_ms", o->time * 1e3);
    table_set(t, "vs_ideal", o->time / ideal);
    table_set_text(t, "tasks_per_worker", tasks);
    table_set_text(t, "busy_ms_per_worker", busy);
}

static void chart(const bench_config *cfg, pool_kind k, const outcome *split,
                  const outcome *balanced, size_t n)
{
    char file[64], title[128];
    snprintf(file, sizeof file, "balance-%s.svg", pool_name(k));
    snprintf(title, sizeof title, "Uneven tasks on the %s: long ones (blue) first", pool_title(k));
    panel p[] = {
        {"one chunk per worker (static pre-split, like DirectView)", split->lanes, n, cfg->cores},
        {"chunks of one task (load-balanced, like LoadBalancedView)", balanced->lanes, n,
         cfg->cores},
    };
    chart_written(cfg, file, svg_timeline(cfg->svg_dir, file, title, p, 2));
}

static outcome new_outcome(size_t n)
{
    return (outcome){.lanes = xmalloc(n * sizeof(lane_task))};
}

/*
 * Skewed elements with automatic chunks: many small elements, uniform, or
 * with the first or the last eighth 8x heavier. cf_map's automatic chunks
 * (guided) beside fixed chunks of n / (4 workers) (the automatic size
 * cfutures used before), OpenMP schedule(dynamic,1) and oneTBB's
 * parallel_for (simple_partitioner with grain 1, dynamic,1's peer, and the
 * auto_partitioner), each against the ideal, straight time / workers, of
 * its shape.
 */
typedef struct skew_job {
    cf_executor    *ex;
    const uint64_t *rounds;
    span           *spans;
    size_t          n, chunk;        /* 0: automatic */
} skew_job;

static void skew_straight(void *ctx)
{
    const skew_job *j = ctx;
    for (size_t i = 0; i < j->n; i++)
        spin(j->rounds[i]);
}

static void skew_map(void *ctx)
{
    const skew_job *j = ctx;
    cf_map_options opts = {.chunksize = j->chunk};
    check(cf_map(j->ex, spin_span_task, j->rounds, sizeof j->rounds[0], j->spans,
                 sizeof j->spans[0], j->n, &opts),
          "cf_map");
}

static void skew_omp(void *ctx)
{
    const skew_job *j = ctx;
    omp_spans(j->rounds, j->spans, j->n, true);
}

static void skew_tbb_one(void *ctx)
{
    const skew_job *j = ctx;
    tbb_spans(j->rounds, j->spans, j->n, true);
}

static void skew_tbb_auto(void *ctx)
{
    const skew_job *j = ctx;
    tbb_spans(j->rounds, j->spans, j->n, false);
}

static void bench_skew(const bench_config *cfg)
{
    static const char *const shapes[] = {"uniform", "front-heavy", "tail-heavy"};
    size_t n = cfg->quick ? 1024 : 4096;
    unsigned reps = cfg->quick ? 2 : 5, w = cfg->cores;
    progress("balance: skewed elements, calibrating");
    uint64_t unit = spin_iters_for(cfg->quick ? 0.000005 : 0.00002);
    uint64_t *rounds = xmalloc(n * sizeof *rounds);
    skew_job j = {NULL, rounds, xmalloc(n * sizeof(span)), n, 0};
    static const column cols[] = {
        {"time_ms", "time (ms)", "%.1f"},
        {"vs_ideal", "vs ideal", "%.2fx"},
    };
    char title[160];
    snprintf(title, sizeof title,
             "%zu elements, uniform or an eighth (first or last) 8x heavier; ideal = straight / %u "
             "workers", n, w);
    table *t = table_begin("skew", title, cols, 2);
    cf_executor *pools[POOL_KINDS];
    for (int k = 0; k < POOL_KINDS; k++)
        pools[k] = pool_open((pool_kind)k, w);
    for (int sh = 0; sh < 3; sh++) {
        for (size_t i = 0; i < n; i++) {
            bool heavy = (sh == 1 && i < n / 8) || (sh == 2 && i >= n - n / 8);
            rounds[i] = unit * (heavy ? 8 : 1);
        }
        progress("balance: %s, straight", shapes[sh]);
        double straight = best_time(skew_straight, &j, reps, reps, 0), ideal = straight / w;
        char label[96];
        for (int k = 0; k < POOL_KINDS; k++) {
            j.ex = pools[k];
            for (int fixed = 0; fixed < 2; fixed++) {
                j.chunk = fixed ? (n + 4 * (size_t)w - 1) / (4 * (size_t)w) : 0;
                progress("balance: %s, %s, %s", shapes[sh], pool_title((pool_kind)k),
                         fixed ? "fixed chunks" : "automatic chunks");
                double tm = best_time(skew_map, &j, reps, reps, 0);
                snprintf(label, sizeof label, "%s, %s, %s", shapes[sh], pool_title((pool_kind)k),
                         fixed ? "fixed chunks of n/(4 workers)" : "automatic chunks");
                table_row(t, "%s", label);
                table_set(t, "time_ms", tm * 1e3);
                table_set(t, "vs_ideal", tm / ideal);
            }
        }
        if (omp_available()) {
            double tm = best_time(skew_omp, &j, reps, reps, 0);
            omp_settle();
            snprintf(label, sizeof label, "%s, OpenMP schedule(dynamic,1)", shapes[sh]);
            table_row(t, "%s", label);
            table_set(t, "time_ms", tm * 1e3);
            table_set(t, "vs_ideal", tm / ideal);
        }
        for (int one = 1; one >= 0 && tbb_available(); one--) {
            double tm = best_time(one ? skew_tbb_one : skew_tbb_auto, &j, reps, reps, 0);
            tbb_settle();
            snprintf(label, sizeof label, "%s, oneTBB parallel_for, %s", shapes[sh],
                     one ? "simple_partitioner grain 1" : "auto_partitioner");
            table_row(t, "%s", label);
            table_set(t, "time_ms", tm * 1e3);
            table_set(t, "vs_ideal", tm / ideal);
        }
    }
    if (!tbb_available())
        table_row(t, "oneTBB parallel_for (" TBB_NOT_BUILT ")");
    for (int k = 0; k < POOL_KINDS; k++)
        cf_executor_free(pools[k]);
    table_note(t, "best of %u runs each; 1.00x is a perfect split; automatic chunks are guided "
                  "(from n/(4 workers) down to n/(32 workers))", reps);
    table_end(t);
    free(j.spans);
    free(rounds);
}

void bench_balance(const bench_config *cfg)
{
    size_t n = cfg->quick ? 8 : 16;
    unsigned reps = cfg->quick ? 1 : 2, w = cfg->cores;
    double unit = cfg->quick ? 0.0005 : 0.004;
    progress("balance: calibrating");
    uint64_t r = spin_iters_for(unit);
    uint64_t *rounds = xmalloc(n * sizeof *rounds);
    for (size_t i = 0; i < n; i++)
        rounds[i] = r * (i < n / 2 ? LONG_UNITS : SHORT_UNITS);
    balance_job j = {NULL, rounds, xmalloc(n * sizeof(span)), n, 0};

    progress("balance: straight");
    double straight = best_time(spin_all, &j, reps, reps, 0), ideal = straight / w;

    static const column cols[] = {
        {"time_ms", "time (ms)", "%.0f"},
        {"vs_ideal", "vs ideal", "%.2fx"},
        {"tasks_per_worker", "tasks per worker", "%s"},
        {"busy_ms_per_worker", "busy ms per worker", "%s"},
    };
    char title[160];
    snprintf(title, sizeof title,
             "%zu tasks, the first half %dx longer; straight %.0f ms, ideal on %u workers %.0f ms",
             n, LONG_UNITS, straight * 1e3, w, ideal * 1e3);
    table *t = table_begin("balance", title, cols, 4);
    for (int k = 0; k < POOL_KINDS; k++) {
        outcome split = new_outcome(n), balanced = new_outcome(n);
        char label[96];
        j.ex = pool_open((pool_kind)k, w);
        progress("balance: %s, static split", pool_title((pool_kind)k));
        j.chunk = (n + w - 1) / w;
        run_pool(&j, reps, &split);
        progress("balance: %s, load-balanced", pool_title((pool_kind)k));
        j.chunk = 1;
        run_pool(&j, reps, &balanced);
        cf_executor_free(j.ex);
        snprintf(label, sizeof label, "%s, one chunk per worker", pool_title((pool_kind)k));
        add_row(t, label, &split, n, w, ideal);
        snprintf(label, sizeof label, "%s, chunks of 1 (load-balanced)", pool_title((pool_kind)k));
        add_row(t, label, &balanced, n, w, ideal);
        if (cfg->svg_dir != NULL)
            chart(cfg, (pool_kind)k, &split, &balanced, n);
        free(split.lanes);
        free(balanced.lanes);
    }
    if (omp_available()) {
        outcome o = new_outcome(n);
        progress("balance: OpenMP");
        run_peer(&j, omp_spans, false, reps, &o);
        add_row(t, "OpenMP schedule(static)", &o, n, omp_threads(), ideal);
        run_peer(&j, omp_spans, true, reps, &o);
        omp_settle();
        add_row(t, "OpenMP schedule(dynamic,1)", &o, n, omp_threads(), ideal);
        free(o.lanes);
    }
    if (tbb_available()) {
        outcome o = new_outcome(n);
        progress("balance: oneTBB");
        run_peer(&j, tbb_spans, true, reps, &o);
        tbb_settle();
        add_row(t, "oneTBB parallel_for, simple_partitioner grain 1", &o, n, tbb_threads(), ideal);
        free(o.lanes);
    } else {
        table_row(t, "oneTBB parallel_for (" TBB_NOT_BUILT ")");
    }
    table_note(t, "best of %u runs each; ideal = straight time / workers", reps);
    table_end(t);
    free(j.spans);
    free(rounds);
    bench_skew(cfg);
}
