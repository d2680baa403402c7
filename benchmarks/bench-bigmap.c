/*
 * bench-bigmap.c — a trivial function over a big array: where the bytes go.
 *
 * out[i] = 3 * in[i] + 1 over 10^7 uint64 costs a nanosecond or so per
 * element, so what decides the time is memory traffic and per-element
 * overhead. A thread pool works on the caller's arrays in place; a process
 * pool with ordinary heap arrays must copy every input into shared memory
 * and every output back; a process pool whose arrays come from
 * cf_shared_alloc, made before the pool, works in place like threads. OpenMP
 * static is the reference. All arrays are touched before timing, so no run
 * pays for first-touch page faults.
 */
#include "bench.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct big_job {
    cf_executor    *ex;
    const uint64_t *in;
    uint64_t       *out;
    size_t          n;
} big_job;

static void serial(void *ctx)
{
    big_job *j = ctx;
    for (size_t i = 0; i < j->n; i++)
        j->out[i] = triple_plus_one(j->in[i]);
}

static void mapped(void *ctx)
{
    big_job *j = ctx;
    check(cf_map(j->ex, triple_task, j->in, sizeof j->in[0], j->out, sizeof j->out[0], j->n,
                 NULL),
          "cf_map");
}

static void openmp(void *ctx)
{
    big_job *j = ctx;
    omp_triple(j->in, j->out, j->n);
}

static double measure(void (*run)(void *), big_job *j, unsigned reps, const char *who)
{
    progress("bigmap: %s", who);
    memset(j->out, 0, j->n * sizeof *j->out);
    double t = best_time(run, j, reps, reps, 0);
    for (size_t i = 0; i < j->n; i++)
        if (j->out[i] != triple_plus_one(j->in[i]))
            die("bigmap: %s wrote %llu at %zu", who, (unsigned long long)j->out[i], i);
    return t;
}

static void add_row(table *t, const char *label, double time, double base, double omp, size_t n)
{
    table_row(t, "%s", label);
    table_set(t, "time_ms", time * 1e3);
    table_set(t, "ns_per_element", time * 1e9 / (double)n);
    table_set(t, "speedup", base / time);
    table_set(t, "vs_openmp", time / omp);
}

static uint64_t *filled(uint64_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        p[i] = i;
    return p;
}

void bench_bigmap(const bench_config *cfg)
{
    size_t n = cfg->quick ? 100000 : 10000000, bytes = n * sizeof(uint64_t);
    unsigned reps = cfg->quick ? 1 : 5;
    /* Shared arrays first: only pools created after them work on them in place. */
    uint64_t *sh_in = cf_shared_alloc(bytes), *sh_out = cf_shared_alloc(bytes);
    if (sh_in == NULL || sh_out == NULL)
        die("bigmap: cf_shared_alloc of %zu bytes failed", bytes);
    big_job heap = {NULL, filled(xmalloc(bytes), n), xmalloc(bytes), n};
    big_job shared = {NULL, filled(sh_in, n), sh_out, n};

    double base = measure(serial, &heap, reps, "serial loop");
    double omp = omp_available() ? measure(openmp, &heap, reps, "OpenMP") : NAN;
    heap.ex = pool_open(POOL_THREAD, 0);
    double th = measure(mapped, &heap, reps, "thread pool");
    cf_executor_free(heap.ex);
    heap.ex = shared.ex = pool_open(POOL_PROCESS, 0);
    double ph = measure(mapped, &heap, reps, "process pool, heap arrays");
    double ps = measure(mapped, &shared, reps, "process pool, cf_shared_alloc arrays");
    cf_executor_free(heap.ex);

    static const column cols[] = {
        {"time_ms", "time (ms)", "%.1f"},
        {"ns_per_element", "ns/element", "%.2f"},
        {"speedup", "speedup", "%.2fx"},
        {"vs_openmp", "vs OpenMP static", "%.2fx"},
    };
    char title[128];
    snprintf(title, sizeof title, "out = 3x+1 over %zu uint64, cf_map automatic chunks, best of %u",
             n, reps);
    table *t = table_begin("bigmap", title, cols, 4);
    add_row(t, "serial loop", base, base, omp, n);
    add_row(t, "thread pool cf_map", th, base, omp, n);
    add_row(t, "process pool cf_map, heap arrays (copied)", ph, base, omp, n);
    add_row(t, "process pool cf_map, cf_shared_alloc arrays", ps, base, omp, n);
    if (omp_available())
        add_row(t, "OpenMP schedule(static)", omp, base, omp, n);
    else
        table_note(t, "OpenMP: not built (configure found no -fopenmp)");
    table_note(t, "the shared arrays were allocated before the pool: cf_map passes them to "
                  "the workers without a copy");
    table_end(t);

    free((void *)heap.in);
    free(heap.out);
    cf_shared_free(sh_in, bytes);
    cf_shared_free(sh_out, bytes);
}
