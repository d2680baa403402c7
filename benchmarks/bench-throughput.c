/*
 * bench-throughput.c — how many empty tasks, and how many map elements, per second.
 *
 * Streaming: cf_submit of many empty tasks as fast as the caller can, then
 * one cf_wait for all of them; the pool runs them while the caller is still
 * submitting, and cf_submit blocks whenever its queue is full. The first
 * stream of a pool makes its futures in new memory; the next ones reuse
 * them, which the pool kept when they were freed; then streams with an
 * 8-byte argument to each task (what real tasks carry: the pool copies
 * it). Each figure is the best of 3 (the first stream's, of 3 new pools):
 * on a shared machine one stream can run at half speed, peers included.
 * Mapping:
 * cf_map of an empty function over an array of uint64 with automatic
 * chunks, where the per-element cost is what is left of the library once
 * the task does nothing. oneTBB's task_group streams the same empty
 * function beside them (tbb.cc), in threads of one process.
 *
 * System calls per streamed task: every call the pool's processes and
 * threads make over its whole life (create, a stream of n, free), less
 * those of a pool that streams n/10, over the 0.9 n tasks between: what
 * a busy pool costs per task, start and end left out. n is at least
 * SYSCALL_STREAM, also with --quick: the calls of a pool's start and end
 * vary by some hundreds from one pool to the next, and a stream of 10^4
 * tasks gave a negative difference (measure.c counts
 * with the raw_syscalls:sys_enter tracepoint, which needs tracefs and
 * perf_event_open; the column says why when they are not there).
 */
#include "bench.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* The stream, each task given its index as an 8-byte argument when with_arg. */
static double stream_of(cf_executor *ex, size_t n, bool with_arg)
{
    cf_future **fs = xmalloc(n * sizeof *fs);
    double t0 = now_s();
    for (size_t i = 0; i < n; i++) {
        uint64_t arg = i;
        check(cf_submit(ex, empty_task, with_arg ? &arg : NULL, with_arg ? sizeof arg : 0, 0, &fs[i]),
              "cf_submit");
    }
    check(cf_wait(fs, n, CF_ALL_COMPLETED, -1), "cf_wait");
    double t = now_s() - t0;
    for (size_t i = 0; i < n; i++) {
        check(cf_future_result(fs[i], NULL, 0, 0), "empty task");
        cf_future_free(fs[i]);
    }
    free(fs);
    return t;
}

double stream_submits(cf_executor *ex, size_t n)
{
    return stream_of(ex, n, false);
}

/* The fastest of reps streams on ex. */
static double best_stream(cf_executor *ex, size_t n, bool with_arg, unsigned reps)
{
    double best = -1;
    for (unsigned r = 0; r < reps; r++) {
        double t = stream_of(ex, n, with_arg);
        best = best < 0 || t < best ? t : best;
    }
    return best;
}

void map_empty(void *ctx)
{
    map_job *j = ctx;
    check(cf_map(j->ex, empty_task, j->in, sizeof j->in[0], NULL, 0, j->n, NULL), "cf_map");
}

#define SYSCALL_STREAM ((size_t)200000)

/* See the top of the file; NaN, with the reason in why, if they cannot be counted. */
static double syscalls_per_task(pool_kind k, size_t n, char *why, size_t len)
{
    const size_t sizes[2] = {n / 10, n};
    long long calls[2];
    for (int i = 0; i < 2; i++) {
        int fd = syscall_counter_open(why, len);
        if (fd < 0)
            return NAN;
        cf_executor *ex = pool_open(k, 0);
        stream_submits(ex, sizes[i]);
        cf_executor_free(ex);
        calls[i] = syscall_counter_read(fd);
        close(fd);
        if (calls[i] < 0) {
            snprintf(why, len, "the counter could not be read");
            return NAN;
        }
    }
    if (calls[1] < calls[0]) {
        snprintf(why, len, "the stream's calls were fewer than the variation of a pool's start and end");
        return NAN;
    }
    return (double)(calls[1] - calls[0]) / (double)(sizes[1] - sizes[0]);
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
    size_t ncount = nsub < SYSCALL_STREAM ? SYSCALL_STREAM : nsub;    /* the syscalls' stream */
    unsigned reps = cfg->quick ? 1 : 3;
    uint64_t *in = xmalloc(nmap * sizeof *in);
    for (size_t i = 0; i < nmap; i++)
        in[i] = i;

    static const column cols[] = {
        {"count", "count", "%.0f"},
        {"time_s", "time (s)", "%.3f"},
        {"million_per_s", "million/s", "%.3f"},
        {"syscalls_per_task", "syscalls/task", "%.3f"},
    };
    table *t = table_begin("throughput", "empty tasks and elements per second", cols, 4);
    char why[128] = "";
    for (int k = 0; k < POOL_KINDS; k++) {
        const char *name = pool_title((pool_kind)k);
        char label[96];
        /* The first stream of each of reps new pools (its futures new memory
         * each time: a freed pool's memory goes back to the system); the
         * others on the last of them. */
        cf_executor *ex = NULL;
        double first = -1;
        for (unsigned r = 0; r < reps; r++) {
            if (ex != NULL)
                cf_executor_free(ex);
            ex = pool_open((pool_kind)k, 0);
            progress("throughput: %s, %zu submits", name, nsub);
            double s = stream_submits(ex, nsub);
            first = first < 0 || s < first ? s : first;
        }
        snprintf(label, sizeof label, "%s: cf_submit stream, then cf_wait", name);
        add_row(t, label, (double)nsub, first);
        progress("throughput: %s, %zu submits again", name, nsub);
        snprintf(label, sizeof label, "%s: the same again, on the pool's spare futures", name);
        add_row(t, label, (double)nsub, best_stream(ex, nsub, false, reps));
        progress("throughput: %s, system calls of a stream", name);
        double calls = syscalls_per_task((pool_kind)k, ncount, why, sizeof why);
        if (isfinite(calls))
            table_set(t, "syscalls_per_task", calls);
        progress("throughput: %s, %zu submits with an argument", name, nsub);
        snprintf(label, sizeof label, "%s: the same, each task given an 8-byte argument", name);
        add_row(t, label, (double)nsub, best_stream(ex, nsub, true, reps));
        map_job j = {ex, in, nmap};
        progress("throughput: %s, cf_map of %zu", name, nmap);
        snprintf(label, sizeof label, "%s: cf_map, automatic chunks", name);
        add_row(t, label, (double)nmap, best_time(map_empty, &j, reps, reps, 0));
        cf_executor_free(ex);
    }
    if (tbb_available()) {
        progress("throughput: oneTBB task_group, %zu runs", nsub);
        double best = -1;
        for (unsigned r = 0; r < reps; r++) {
            double s = tbb_stream_empty(nsub);
            best = best < 0 || s < best ? s : best;
        }
        add_row(t, "oneTBB task_group: run() stream, then wait()", (double)nsub, best);
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
    table_note(t, "every figure is the best of %u: streams, each first stream on a new pool, and "
                  "cf_map (uint64 input, no output)", reps);
    if (why[0] != '\0')
        table_note(t, "syscalls/task not counted: %s", why);
    else
        table_note(t, "syscalls/task: every process and thread of the pool, its start and end left "
                      "out (a stream of %zu less one of %zu)", ncount, ncount / 10);
    table_end(t);
    free(in);
}
