/*
 * bench-bigmap.c — a trivial function over a big array: where the bytes go.
 *
 * out[i] = 3 * in[i] + 1 over 10^7 uint64 costs a nanosecond or so per
 * element, so what decides the time is memory traffic and per-element
 * overhead. A thread pool works on the caller's arrays in place; a process
 * pool with ordinary heap arrays must copy every input into shared memory
 * and every output back; a process pool whose arrays come from
 * cf_shared_alloc, made before the pool, works in place like threads. cf_map
 * calls the function once per element; cf_map_chunks once per chunk, so the
 * loop is the compiler's to inline and vectorise, as in OpenMP static, the
 * reference. All arrays are touched before timing, so no run
 * pays for first-touch page faults, and the ways take turns (best of 5
 * each) so that a passing disturbance of the machine does not fall on one.
 */
#include "bench.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

enum {
    WAY_SERIAL, WAY_OPENMP,
    WAY_THREAD, WAY_HEAP, WAY_SHARED,                     /* cf_map: a call per element */
    WAY_THREAD_CHUNKS, WAY_HEAP_CHUNKS, WAY_SHARED_CHUNKS, /* cf_map_chunks: a call per chunk */
    NWAYS
};
static const char *const way_label[NWAYS] = {
    "serial loop",
    "OpenMP schedule(static)",
    "thread pool cf_map",
    "process pool cf_map, heap arrays (copied)",
    "process pool cf_map, cf_shared_alloc arrays",
    "thread pool cf_map_chunks",
    "process pool cf_map_chunks, heap arrays (copied)",
    "process pool cf_map_chunks, cf_shared_alloc arrays",
};

static bool way_shared(int way)
{
    return way == WAY_SHARED || way == WAY_SHARED_CHUNKS;
}

static bool way_thread(int way)
{
    return way == WAY_THREAD || way == WAY_THREAD_CHUNKS;
}

typedef struct big_run {
    const uint64_t *in[NWAYS];
    uint64_t       *out[NWAYS];
    cf_executor    *thread, *process;
    size_t          n;
    double          best[NWAYS];
} big_run;

static void map_on(cf_executor *ex, bool chunks, const uint64_t *in, uint64_t *out, size_t n)
{
    if (chunks)
        check(cf_map_chunks(ex, triple_chunk, in, sizeof *in, out, sizeof *out, n, NULL), "cf_map_chunks");
    else
        check(cf_map(ex, triple_task, in, sizeof *in, out, sizeof *out, n, NULL), "cf_map");
}

/* One timed run of one way, after clearing its output; checks what it wrote. */
static double run_way(big_run *r, int way)
{
    const uint64_t *in = r->in[way];
    uint64_t *out = r->out[way];
    memset(out, 0, r->n * sizeof *out);
    double t0 = now_s();
    if (way == WAY_SERIAL)
        for (size_t i = 0; i < r->n; i++)
            out[i] = triple_plus_one(in[i]);
    else if (way == WAY_OPENMP)
        omp_triple(in, out, r->n);
    else
        map_on(way_thread(way) ? r->thread : r->process, way >= WAY_THREAD_CHUNKS, in, out, r->n);
    double t = now_s() - t0;
    if (way == WAY_OPENMP)
        omp_settle();
    for (size_t i = 0; i < r->n; i++)
        if (out[i] != triple_plus_one(in[i]))
            die("bigmap: %s wrote %llu at %zu", way_label[way], (unsigned long long)out[i], i);
    return t;
}

static void take_turns(big_run *r, unsigned reps)
{
    for (int way = 0; way < NWAYS; way++)
        r->best[way] = NAN;
    for (unsigned rep = 0; rep < reps; rep++)
        for (int way = 0; way < NWAYS; way++) {
            if (way == WAY_OPENMP && !omp_available())
                continue;
            progress("bigmap: %s, run %u of %u", way_label[way], rep + 1, reps);
            double t = run_way(r, way);
            if (!(t >= r->best[way]))
                r->best[way] = t;
        }
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
    uint64_t *heap_in = filled(xmalloc(bytes), n), *heap_out = xmalloc(bytes);
    filled(sh_in, n);
    big_run r = {.n = n};
    for (int way = 0; way < NWAYS; way++) {
        r.in[way] = way_shared(way) ? sh_in : heap_in;
        r.out[way] = way_shared(way) ? sh_out : heap_out;
    }
    r.thread = pool_open(POOL_THREAD, 0);
    r.process = pool_open(POOL_PROCESS, 0);
    take_turns(&r, reps);
    cf_executor_free(r.thread);
    cf_executor_free(r.process);

    static const column cols[] = {
        {"time_ms", "time (ms)", "%.1f"},
        {"ns_per_element", "ns/element", "%.2f"},
        {"speedup", "speedup", "%.2fx"},
        {"vs_openmp", "vs OpenMP static", "%.2fx"},
    };
    char title[128];
    snprintf(title, sizeof title, "out = 3x+1 over %zu uint64, automatic chunks, best of %u",
             n, reps);
    table *t = table_begin("bigmap", title, cols, 4);
    for (int way = 0; way < NWAYS; way++) {
        if (way == WAY_OPENMP && !omp_available())
            continue;
        add_row(t, way_label[way], r.best[way], r.best[WAY_SERIAL], r.best[WAY_OPENMP], n);
    }
    if (!omp_available())
        table_note(t, "OpenMP: not built (configure found no -fopenmp)");
    table_note(t, "cf_map calls the function once per element, cf_map_chunks once per chunk "
                  "(its loop inlined, as OpenMP's)");
    table_note(t, "the shared arrays were allocated before the pool: the process pool passes them "
                  "to the workers without a copy");
    table_end(t);

    free(heap_in);
    free(heap_out);
    cf_shared_free(sh_in, bytes);
    cf_shared_free(sh_out, bytes);
}
