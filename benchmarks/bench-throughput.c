/*
 * bench-throughput.c — how many empty tasks, and how many map elements, per second.
 *
 * Streaming: cf_submit of many empty tasks as fast as the caller can, then
 * one cf_wait for all of them; the pool runs them while the caller is still
 * submitting, and cf_submit blocks whenever its queue is full. Mapping:
 * cf_map of an empty function over an array of uint64 with automatic
 * chunks, where the per-element cost is what is left of the library once
 * the task does nothing. oneTBB's task_group streams the same empty
 * function beside them (tbb.cc), in threads of one process.
 */
#include "bench.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

double stream_submits(cf_executor *ex, size_t n)
{
    cf_future **fs = xmalloc(n * sizeof *fs);
    double t0 = now_s();
    for (size_t i = 0; i < n; i++)
        check(cf_submit(ex, empty_task, NULL, 0, 0, &fs[i]), "cf_submit");
    check(cf_wait(fs, n, CF_ALL_COMPLETED, -1), "cf_wait");
    double t = now_s() - t0;
    for (size_t i = 0; i < n; i++) {
        check(cf_future_result(fs[i], NULL, 0, 0), "empty task");
        cf_future_free(fs[i]);
    }
    free(fs);
    return t;
}

void map_empty(void *ctx)
{
    map_job *j = ctx;
    check(cf_map(j->ex, empty_task, j->in, sizeof j->in[0], NULL, 0, j->n, NULL), "cf_map");
}

static void add_row(table *t, const char *label, double count, double time)
{
    table_row(t, "%s", label);
    table_set(t, "count", count);
    table_set(t, "time_s", time);
    table_set(t, "million_per_s", count / time * 1e-6);
}

void bench_throughput(const bench_config *cfg)
{
    size_t nsub = cfg->quick ? 10000 : 1000000, nmap = cfg->quick ? 100000 : 10000000;
    unsigned reps = cfg->quick ? 1 : 3;
    uint64_t *in = xmalloc(nmap * sizeof *in);
    for (size_t i = 0; i < nmap; i++)
        in[i] = i;

    static const column cols[] = {
        {"count", "count", "%.0f"},
        {"time_s", "time (s)", "%.3f"},
        {"million_per_s", "million/s", "%.3f"},
    };
    table *t = table_begin("throughput", "empty tasks and elements per second", cols, 3);
    for (int k = 0; k < POOL_KINDS; k++) {
        const char *name = pool_title((pool_kind)k);
        char label[96];
        cf_executor *ex = pool_open((pool_kind)k, 0);
        progress("throughput: %s, %zu submits", name, nsub);
        snprintf(label, sizeof label, "%s: cf_submit stream, then cf_wait", name);
        add_row(t, label, (double)nsub, stream_submits(ex, nsub));
        map_job j = {ex, in, nmap};
        progress("throughput: %s, cf_map of %zu", name, nmap);
        snprintf(label, sizeof label, "%s: cf_map, automatic chunks", name);
        add_row(t, label, (double)nmap, best_time(map_empty, &j, reps, reps, 0));
        cf_executor_free(ex);
    }
    if (tbb_available()) {
        progress("throughput: oneTBB task_group, %zu runs", nsub);
        add_row(t, "oneTBB task_group: run() stream, then wait()", (double)nsub,
                tbb_stream_empty(nsub));
        tbb_settle();
    } else {
        table_row(t, "oneTBB task_group: run() stream, then wait() (" TBB_NOT_BUILT ")");
    }
    if (isfinite(py_num("throughput.submit_per_s"))) {
        add_row(t, "Python ProcessPoolExecutor: submit stream, then wait",
                py_num("throughput.submit_n"),
                py_num("throughput.submit_n") / py_num("throughput.submit_per_s"));
        add_row(t, "Python ProcessPoolExecutor.map, chunksize n/(4 workers)",
                py_num("throughput.map_n"),
                py_num("throughput.map_n") / py_num("throughput.map_per_s"));
    } else {
        table_note(t, "%s", py_missing());
    }
    if (tbb_available())
        table_note(t, "oneTBB: %u threads of this process; its tasks have no future each, and "
                      "one wait() ends them all", tbb_threads());
    table_note(t, "cf_map: uint64 input, no output; cf_map figures are the best of %u", reps);
    table_end(t);
    free(in);
}
