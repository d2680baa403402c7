/*
 * bench-primes.c — the seed's prime list: Straight, Multithread, Multiprocess.
 *
 * Seed 003 checks six large numbers by trial division, straight and then
 * with a ThreadPoolExecutor (no gain: the GIL) and a ProcessPoolExecutor.
 * Here the same six numbers, repeated --scale times so that a run lasts
 * seconds and the list splits evenly, go through cf_submit and
 * cf_future_result on each pool, and through an OpenMP dynamic loop. Each
 * way is timed best of 3, the ways taking turns (straight, threads,
 * processes, OpenMP, then again) so that a passing disturbance of the
 * machine does not fall on one way only. Each task's worker, start and end
 * (cf_future_info) in a pool's best run become the timeline charts.
 */
#include "bench.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

enum { WAY_STRAIGHT, WAY_THREAD, WAY_PROCESS, WAY_OPENMP, NWAYS };
static const char *const way_name[NWAYS] = {"straight", "thread pool", "process pool", "OpenMP"};

typedef struct primes_run {
    const uint64_t *n;
    size_t          count;
    int32_t        *is, *want;               /* this run's answers, straight's answers */
    cf_executor    *ex[POOL_KINDS];
    cf_future     **fs;
    lane_task      *tmp, *lanes[POOL_KINDS]; /* this run's timeline, each pool's best */
    double          best[NWAYS];             /* seconds; < 0 before the first run */
} primes_run;

static void straight(primes_run *r)
{
    for (size_t i = 0; i < r->count; i++)
        r->is[i] = is_prime(r->n[i]);
}

/*
 * One submit per number, then every result; returns the time the last result
 * came, then fills r->tmp from cf_future_info.
 */
static uint64_t pooled(primes_run *r, cf_executor *ex, uint64_t t0)
{
    for (size_t i = 0; i < r->count; i++)
        check(cf_submit(ex, prime_task, &r->n[i], sizeof r->n[i], sizeof r->is[i], &r->fs[i]),
              "cf_submit");
    for (size_t i = 0; i < r->count; i++)
        check(cf_future_result(r->fs[i], &r->is[i], sizeof r->is[i], -1), "prime task");
    uint64_t t1 = now_ns();
    for (size_t i = 0; i < r->count; i++) {
        cf_task_info info;
        check(cf_future_info(r->fs[i], &info), "cf_future_info");
        r->tmp[i] = (lane_task){
            .worker = info.worker,
            .start = (double)(info.start_ns - t0) * 1e-9,
            .end = (double)(info.end_ns - t0) * 1e-9,
            .id = (unsigned)i,
            .shade = (int)(i % SEED_COUNT),
        };
        cf_future_free(r->fs[i]);
    }
    return t1;
}

/* Times one run of one way (the timeline's bookkeeping excluded) and checks its answers. */
static double run_way(primes_run *r, int way)
{
    uint64_t t0 = now_ns(), t1;
    if (way == WAY_THREAD || way == WAY_PROCESS) {
        t1 = pooled(r, r->ex[way == WAY_THREAD ? POOL_THREAD : POOL_PROCESS], t0);
    } else {
        if (way == WAY_STRAIGHT)
            straight(r);
        else
            omp_primes(r->n, r->is, r->count);
        t1 = now_ns();
        if (way == WAY_OPENMP)
            omp_settle();
    }
    for (size_t i = 0; i < r->count; i++)
        if (r->is[i] != r->want[i])
            die("primes: %s says %d for number %zu, straight says %d", way_name[way], r->is[i],
                i, r->want[i]);
    return (double)(t1 - t0) * 1e-9;
}

/* reps turns of every way; keeps each way's best time and each pool's best timeline. */
static void take_turns(primes_run *r, unsigned reps)
{
    straight(r);
    memcpy(r->want, r->is, r->count * sizeof *r->is);
    for (int way = 0; way < NWAYS; way++)
        r->best[way] = -1;
    for (unsigned rep = 0; rep < reps; rep++)
        for (int way = 0; way < NWAYS; way++) {
            if (way == WAY_OPENMP && !omp_available())
                continue;
            progress("primes: %s, run %u of %u", way_name[way], rep + 1, reps);
            double t = run_way(r, way);
            if (r->best[way] >= 0 && t >= r->best[way])
                continue;
            r->best[way] = t;
            if (way == WAY_THREAD || way == WAY_PROCESS)
                memcpy(r->lanes[way == WAY_THREAD ? POOL_THREAD : POOL_PROCESS], r->tmp,
                       r->count * sizeof *r->tmp);
        }
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
                           py_ran() ? 6 : 4, cfg->cores));
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
    primes_run r = {.count = count};
    uint64_t *n = xmalloc(count * sizeof *n);
    for (size_t i = 0; i < count; i++)
        n[i] = seed_numbers[i % SEED_COUNT];
    r.n = n;
    r.is = xmalloc(count * sizeof *r.is);
    r.want = xmalloc(count * sizeof *r.want);
    r.fs = xmalloc(count * sizeof *r.fs);
    r.tmp = xmalloc(count * sizeof *r.tmp);
    for (int k = 0; k < POOL_KINDS; k++) {
        r.lanes[k] = xmalloc(count * sizeof *r.lanes[k]);
        r.ex[k] = pool_open((pool_kind)k, 0);
    }
    take_turns(&r, reps);
    for (int k = 0; k < POOL_KINDS; k++)
        cf_executor_free(r.ex[k]);
    double base = r.best[WAY_STRAIGHT];

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
    add_row(t, "Multithread (cfutures thread pool)", cfg->cores, r.best[WAY_THREAD], base);
    add_row(t, "Multiprocess (cfutures process pool)", cfg->cores, r.best[WAY_PROCESS], base);
    if (omp_available())
        add_row(t, "OpenMP schedule(dynamic,1)", omp_threads(), r.best[WAY_OPENMP], base);
    else
        table_note(t, "OpenMP: not built (configure found no -fopenmp)");
    python_rows(t);
    table_end(t);

    if (cfg->svg_dir != NULL) {
        double speedup[3] = {base / r.best[WAY_THREAD], base / r.best[WAY_PROCESS],
                             omp_available() ? base / r.best[WAY_OPENMP] : NAN};
        charts(cfg, scale, reps, speedup, r.lanes, count);
    }
    for (int k = 0; k < POOL_KINDS; k++)
        free(r.lanes[k]);
    free(r.tmp);
    free(r.fs);
    free(r.want);
    free(r.is);
    free(n);
}
