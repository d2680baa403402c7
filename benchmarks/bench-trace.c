/*
 * bench-trace.c — what CFUTURES_TRACE costs: the same measurements off and on.
 *
 * The empty task's round trip (bench-latency.c), a stream of empty submits
 * then one cf_wait (bench-throughput.c), and cf_map of an empty function,
 * each on a pool created with the variable unset and on one created with it
 * set to a file in a fresh temporary directory (removed afterwards). Runs
 * alternate off and on and each keeps its best, so that a machine busy with
 * other work penalises neither side more. Off is one branch per call; on,
 * every task records two events and every record is formatted and written
 * to the file, by the thread that fills the pool's buffer.
 */
#include "bench.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char trace_dir[64];

static void trace_on(bool on)
{
    char path[128];
    snprintf(path, sizeof path, "%s/run.json", trace_dir);
    if (!on)
        unsetenv("CFUTURES_TRACE");
    else if (setenv("CFUTURES_TRACE", path, 1) != 0)
        die("setenv CFUTURES_TRACE failed");
}

/* Removes the traces written so far: a streamed run's file is large. */
static void trace_clean(void)
{
    DIR *d = opendir(trace_dir);
    struct dirent *de;
    char path[512];
    while (d != NULL && (de = readdir(d)) != NULL)
        if (de->d_name[0] != '.') {
            snprintf(path, sizeof path, "%s/%s", trace_dir, de->d_name);
            unlink(path);
        }
    if (d != NULL)
        closedir(d);
}

typedef struct figures {
    double rt_us, stream_per_s, map_per_s;
} figures;

static void better(figures *best, const figures *f)
{
    if (best->rt_us == 0 || f->rt_us < best->rt_us)
        best->rt_us = f->rt_us;
    if (f->stream_per_s > best->stream_per_s)
        best->stream_per_s = f->stream_per_s;
    if (f->map_per_s > best->map_per_s)
        best->map_per_s = f->map_per_s;
}

static figures measure(pool_kind k, bool on, unsigned reps, size_t nsub, const uint64_t *in,
                       size_t nmap)
{
    figures f;
    trace_on(on);
    f.rt_us = round_trip_ns(k, reps) * 1e-3;
    cf_executor *ex = pool_open(k, 0);
    trace_on(false);
    f.stream_per_s = (double)nsub / stream_submits(ex, nsub);
    map_job j = {ex, in, nmap};
    f.map_per_s = (double)nmap / best_time(map_empty, &j, 1, 1, 0);
    cf_executor_free(ex);
    trace_clean();
    return f;
}

static void add_row(table *t, const char *label, double off, double on, double cost)
{
    table_row(t, "%s", label);
    table_set(t, "off", off);
    table_set(t, "on", on);
    table_set(t, "on_over_off", on / off);
    table_set(t, "cost_us", cost);
}

void bench_trace(const bench_config *cfg)
{
    unsigned reps = cfg->quick ? 300 : 20000, rounds = cfg->quick ? 1 : 3;
    size_t nsub = cfg->quick ? 5000 : 200000, nmap = cfg->quick ? 100000 : 10000000;
    const char *tmp = getenv("TMPDIR");
    snprintf(trace_dir, sizeof trace_dir, "%s/cfbench-trace.XXXXXX",
             tmp != NULL && strlen(tmp) < 32 ? tmp : "/tmp");
    if (mkdtemp(trace_dir) == NULL)
        die("mkdtemp %s failed", trace_dir);
    uint64_t *in = xmalloc(nmap * sizeof *in);
    for (size_t i = 0; i < nmap; i++)
        in[i] = i;

    static const column cols[] = {
        {"off", "trace off", "%.3f"},
        {"on", "trace on", "%.3f"},
        {"on_over_off", "on / off", "%.2fx"},
        {"cost_us", "cost per task (us)", "%.2f"},
    };
    table *t = table_begin("trace", "CFUTURES_TRACE off and on, best of alternating runs", cols, 4);
    for (int k = 0; k < POOL_KINDS; k++) {
        const char *name = pool_title((pool_kind)k);
        figures off = {0}, on = {0};
        for (unsigned r = 0; r < rounds; r++) {
            progress("trace: %s, off, round %u", name, r + 1);
            figures f = measure((pool_kind)k, false, reps, nsub, in, nmap);
            better(&off, &f);
            progress("trace: %s, on, round %u", name, r + 1);
            f = measure((pool_kind)k, true, reps, nsub, in, nmap);
            better(&on, &f);
        }
        char label[128];
        snprintf(label, sizeof label, "%s: round trip, median (us)", name);
        add_row(t, label, off.rt_us, on.rt_us, on.rt_us - off.rt_us);
        snprintf(label, sizeof label, "%s: cf_submit stream (million/s)", name);
        add_row(t, label, off.stream_per_s * 1e-6, on.stream_per_s * 1e-6,
                (1 / on.stream_per_s - 1 / off.stream_per_s) * 1e6);
        snprintf(label, sizeof label, "%s: cf_map elements (million/s)", name);
        add_row(t, label, off.map_per_s * 1e-6, on.map_per_s * 1e-6,
                (1 / on.map_per_s - 1 / off.map_per_s) * 1e6);
    }
    table_note(t, "round trips: median of %u; stream: %zu empty tasks; cf_map: %zu elements, "
                  "automatic chunks (one event per chunk); best of %u alternating rounds",
               reps, nsub, nmap, rounds);
    table_note(t, "cost per task: on minus off, per task or element (negative: within noise)");
    table_end(t);
    unsetenv("CFUTURES_TRACE");
    rmdir(trace_dir);
    free(in);
}
