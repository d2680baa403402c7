/*
 * bench-primes.c — the seed's prime list: Straight, Multithread, Multiprocess.
 *
 * Seed 003 checks six large numbers by trial division, straight and then
 * with a ThreadPoolExecutor (no gain: the GIL) and a ProcessPoolExecutor.
 * Here the same six numbers, repeated --scale times so that a run lasts
 * seconds and the list splits evenly, go through cf_submit and
 * cf_future_result on each pool, and through an OpenMP dynamic loop. Each
 * way is timed best of 3; each task's worker, start and end (cf_future_info)
 * of the best run become the timeline charts.
 */
#include "bench.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* The seed's list: five primes, then a composite whose smallest factor is large. */
static const uint64_t seed_numbers[] = {
    112272535095293u, 112582705942171u, 112272535095293u,
    115280095190773u, 115797848077099u, 1099726899285419u,
};
enum { SEED_COUNT = sizeof seed_numbers / sizeof seed_numbers[0] };

typedef struct prime_job {
    const uint64_t *n;
    int32_t        *is;
    size_t          count;
} prime_job;

static void straight(void *ctx)
{
    prime_job *j = ctx;
    for (size_t i = 0; i < j->count; i++)
        j->is[i] = is_prime(j->n[i]);
}

static void openmp(void *ctx)
{
    prime_job *j = ctx;
    omp_primes(j->n, j->is, j->count);
}

/* One submit per number, then every result; fills lanes from cf_future_info. */
static double pool_once(cf_executor *ex, prime_job *j, cf_future **fs, lane_task *lanes)
{
    uint64_t t0 = now_ns();
    for (size_t i = 0; i < j->count; i++)
        check(cf_submit(ex, prime_task, &j->n[i], sizeof j->n[i], sizeof j->is[i], &fs[i]),
              "cf_submit");
    for (size_t i = 0; i < j->count; i++)
        check(cf_future_result(fs[i], &j->is[i], sizeof j->is[i], -1), "prime task");
    uint64_t t1 = now_ns();
    for (size_t i = 0; i < j->count; i++) {
        cf_task_info info;
        check(cf_future_info(fs[i], &info), "cf_future_info");
        lanes[i] = (lane_task){
            .worker = info.worker,
            .start = (double)(info.start_ns - t0) * 1e-9,
            .end = (double)(info.end_ns - t0) * 1e-9,
            .id = (unsigned)i,
            .shade = (int)(i % SEED_COUNT),
        };
        cf_future_free(fs[i]);
    }
    return (double)(t1 - t0) * 1e-9;
}

/* Best of reps on a new pool; the best run's timeline goes to lanes. */
static double pool_best(pool_kind k, prime_job *j, unsigned reps, lane_task *lanes)
{
    cf_executor *ex = pool_open(k, 0);
    cf_future **fs = xmalloc(j->count * sizeof *fs);
    lane_task *tmp = xmalloc(j->count * sizeof *tmp);
    double best = -1;
    for (unsigned r = 0; r < reps; r++) {
        progress("primes: %s, run %u of %u", pool_title(k), r + 1, reps);
        double t = pool_once(ex, j, fs, tmp);
        if (best < 0 || t < best) {
            best = t;
            memcpy(lanes, tmp, j->count * sizeof *tmp);
        }
    }
    free(tmp);
    free(fs);
    cf_executor_free(ex);
    return best;
}

static void same_answers(const int32_t *want, const int32_t *got, size_t n, const char *who)
{
    for (size_t i = 0; i < n; i++)
        if (want[i] != got[i])
            die("primes: %s says %d for number %zu, straight says %d", who, got[i], i, want[i]);
}

static void add_row(table *t, const char *label, double workers, double time, double base)
{
    table_row(t, "%s", label);
    table_set(t, "workers", workers);
    table_set(t, "time_s", time);
    table_set(t, "speedup", base / time);
    table_set(t, "efficiency_pct", 100 * base / time / workers);
}

static void python_rows(table *t)
{
    double base = py_num("primes.straight_s"), w = py_num("primes.workers");
    if (!isfinite(base)) {
        table_note(t, "%s", py_missing());
        return;
    }
    add_row(t, "Python straight", 1, base, base);
    add_row(t, "Python ThreadPoolExecutor", w, py_num("primes.threads_s"), base);
    add_row(t, "Python ProcessPoolExecutor", w, py_num("primes.processes_s"), base);
    table_note(t, "Python ran %.0f numbers of the same shape a hundredth the size (a tenth of "
                  "the work each), once: its speedups compare, its times do not",
               py_num("primes.count"));
}

static void charts(const bench_config *cfg, unsigned scale, unsigned reps, const double *speedup,
                   lane_task *const lanes[2], size_t count)
{
    double pyb = py_num("primes.straight_s");
    bar bars[] = {
        {"Straight", 1, 3},
        {"Multithread (cfutures)", speedup[0], 0},
        {"Multiprocess (cfutures)", speedup[1], 0},
        {"OpenMP dynamic", speedup[2], 1},
        {"Python threads", pyb / py_num("primes.threads_s"), 2},
        {"Python processes", pyb / py_num("primes.processes_s"), 2},
    };
    char title[128], note[160];
    snprintf(title, sizeof title, "The seed's primes x %u: speedup on %u cores", scale, cfg->cores);
    snprintf(note, sizeof note, "best of %u runs each; Python: %.0f numbers of the same shape, "
                                "a hundredth the size, one run", reps, py_num("primes.count"));
    chart_written(cfg, "speedup.svg",
                  svg_bars(cfg->svg_dir, "speedup.svg", title, py_ran() ? note : NULL, bars,
                           sizeof bars / sizeof *bars, cfg->cores));
    for (int k = 0; k < POOL_KINDS; k++) {
        char file[64];
        snprintf(file, sizeof file, "primes-%s.svg", pool_name((pool_kind)k));
        snprintf(title, sizeof title, "Primes on the %s: one bar per number (cf_future_info)",
                 pool_title((pool_kind)k));
        panel p = {"cf_submit of each number, then cf_future_result", lanes[k], count, cfg->cores};
        chart_written(cfg, file, svg_timeline(cfg->svg_dir, file, title, &p, 1));
    }
}

void bench_primes(const bench_config *cfg)
{
    unsigned scale = cfg->scale, reps = cfg->quick ? 1 : 3;
    size_t count = (size_t)SEED_COUNT * scale;
    uint64_t *n = xmalloc(count * sizeof *n);
    int32_t *want = xmalloc(count * sizeof *want), *is = xmalloc(count * sizeof *is);
    for (size_t i = 0; i < count; i++)
        n[i] = seed_numbers[i % SEED_COUNT];
    lane_task *lanes[2] = {xmalloc(count * sizeof(lane_task)), xmalloc(count * sizeof(lane_task))};

    prime_job j = {n, want, count};
    progress("primes: straight");
    double base = best_time(straight, &j, reps, reps, 0);
    j.is = is;
    double pool_t[2], omp_t = NAN;
    for (int k = 0; k < POOL_KINDS; k++) {
        pool_t[k] = pool_best((pool_kind)k, &j, reps, lanes[k]);
        same_answers(want, is, count, pool_title((pool_kind)k));
    }
    if (omp_available()) {
        progress("primes: OpenMP");
        omp_t = best_time(openmp, &j, reps, reps, 0);
        same_answers(want, is, count, "OpenMP");
    }

    static const column cols[] = {
        {"workers", "workers", "%.0f"},
        {"time_s", "time (s)", "%.3f"},
        {"speedup", "speedup", "%.2fx"},
        {"efficiency_pct", "efficiency", "%.0f%%"},
    };
    char title[160];
    snprintf(title, sizeof title, "the seed's %d numbers x %u = %zu, trial division, best of %u",
             SEED_COUNT, scale, count, reps);
    table *t = table_begin("primes", title, cols, 4);
    add_row(t, "Straight", 1, base, base);
    add_row(t, "Multithread (cfutures thread pool)", cfg->cores, pool_t[POOL_THREAD], base);
    add_row(t, "Multiprocess (cfutures process pool)", cfg->cores, pool_t[POOL_PROCESS], base);
    if (omp_available())
        add_row(t, "OpenMP schedule(dynamic,1)", omp_threads(), omp_t, base);
    else
        table_note(t, "OpenMP: not built (configure found no -fopenmp)");
    python_rows(t);
    table_end(t);

    if (cfg->svg_dir != NULL) {
        double speedup[3] = {base / pool_t[0], base / pool_t[1], base / omp_t};
        charts(cfg, scale, reps, speedup, lanes, count);
    }
    free(lanes[0]);
    free(lanes[1]);
    free(n);
    free(want);
    free(is);
}
