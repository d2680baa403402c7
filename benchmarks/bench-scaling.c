/*
 * bench-scaling.c — speedup of CPU-bound work against the number of workers.
 *
 * 24 equal tasks of a few milliseconds of computing each go through cf_map
 * with chunks of one on pools of 1, 2, ... up to twice the cores, and
 * through an OpenMP dynamic loop with as many threads. Speedup is over the
 * serial loop of the same tasks; it should follow the worker count up to
 * the cores and stay flat after.
 */
#include "bench.h"

#include <math.h>
#include <stdlib.h>

typedef struct spin_job {
    cf_executor    *ex;
    const uint64_t *rounds;
    span           *spans;
    size_t          n;
    unsigned        threads;
} spin_job;

static void serial(void *ctx)
{
    spin_job *j = ctx;
    for (size_t i = 0; i < j->n; i++)
        spin(j->rounds[i]);
}

static void mapped(void *ctx)
{
    spin_job *j = ctx;
    cf_map_options o = {.chunksize = 1};
    check(cf_map(j->ex, spin_span_task, j->rounds, sizeof j->rounds[0], j->spans,
                 sizeof j->spans[0], j->n, &o),
          "cf_map");
}

static void openmp(void *ctx)
{
    spin_job *j = ctx;
    omp_spin(j->rounds, j->n, j->threads);
}

static void chart(const bench_config *cfg, double *const speedup[3], size_t nx)
{
    series s[] = {
        {"thread pool", speedup[0]},
        {"process pool", speedup[1]},
        {"OpenMP dynamic", speedup[2]},
    };
    char title[128];
    snprintf(title, sizeof title, "CPU-bound tasks: speedup by workers on %u cores", cfg->cores);
    chart_written(cfg, "scaling.svg",
                  svg_lines(cfg->svg_dir, "scaling.svg", title, "speedup over serial (x)", s,
                            omp_available() ? 3 : 2, nx, cfg->cores));
}

void bench_scaling(const bench_config *cfg)
{
    size_t n = cfg->quick ? 8 : 24, nx = 2 * (size_t)cfg->cores;
    unsigned reps = cfg->quick ? 1 : 3;
    double task_s = cfg->quick ? 0.001 : 0.005;
    progress("scaling: calibrating");
    uint64_t r = spin_iters_for(task_s);
    uint64_t *rounds = xmalloc(n * sizeof *rounds);
    for (size_t i = 0; i < n; i++)
        rounds[i] = r;
    spin_job j = {NULL, rounds, xmalloc(n * sizeof(span)), n, 0};
    progress("scaling: serial");
    double base = best_time(serial, &j, reps, reps, 0);

    double *time[3], *speedup[3];
    for (int s = 0; s < 3; s++) {
        time[s] = xmalloc(nx * sizeof(double));
        speedup[s] = xmalloc(nx * sizeof(double));
    }
    for (size_t x = 0; x < nx; x++) {
        unsigned w = (unsigned)x + 1;
        for (int k = 0; k < POOL_KINDS; k++) {
            progress("scaling: %s of %u", pool_title((pool_kind)k), w);
            j.ex = pool_open((pool_kind)k, w);
            time[k][x] = best_time(mapped, &j, reps, reps, 0);
            cf_executor_free(j.ex);
        }
        j.threads = w;
        progress("scaling: OpenMP, %u threads", w);
        time[2][x] = omp_available() ? best_time(openmp, &j, reps, reps, 0) : NAN;
        omp_settle();
        for (int s = 0; s < 3; s++)
            speedup[s][x] = base / time[s][x];
    }

    static const column cols[] = {
        {"thread_s", "thread (s)", "%.3f"},
        {"thread_speedup", "speedup", "%.2fx"},
        {"process_s", "process (s)", "%.3f"},
        {"process_speedup", "speedup", "%.2fx"},
        {"openmp_s", "OpenMP (s)", "%.3f"},
        {"openmp_speedup", "speedup", "%.2fx"},
    };
    char title[160];
    snprintf(title, sizeof title, "%zu tasks of ~%.0f ms computing, cf_map chunksize 1, "
                                  "serial %.3f s, best of %u", n, task_s * 1e3, base, reps);
    table *t = table_begin("scaling", title, cols, 6);
    for (size_t x = 0; x < nx; x++) {
        table_row(t, "%zu worker%s", x + 1, x ? "s" : "");
        table_set(t, "thread_s", time[0][x]);
        table_set(t, "thread_speedup", speedup[0][x]);
        table_set(t, "process_s", time[1][x]);
        table_set(t, "process_speedup", speedup[1][x]);
        table_set(t, "openmp_s", time[2][x]);
        table_set(t, "openmp_speedup", speedup[2][x]);
    }
    if (!omp_available())
        table_note(t, "OpenMP: not built (configure found no -fopenmp)");
    table_end(t);

    if (cfg->svg_dir != NULL)
        chart(cfg, speedup, nx);
    for (int s = 0; s < 3; s++) {
        free(time[s]);
        free(speedup[s]);
    }
    free(j.spans);
    free(rounds);
}
