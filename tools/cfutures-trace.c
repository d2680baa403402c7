/*
 * cfutures-trace — draws a CFUTURES_TRACE file as an SVG timeline.
 *
 *   CFUTURES_TRACE=run.json ./program
 *   cfutures-trace run.json run.svg
 *
 * One panel per pool in the file (its process_name), one lane per worker
 * (its thread_name "worker N"), one bar per task or map chunk (an "X"
 * event), a red cross on each that the library ended (crashed, timed out,
 * cancelled, overrun, broken: an "i" instant on its lane at its end). Bars
 * of one function share a colour. The drawing is benchmarks/svg.c's
 * svg_timeline, the one cfbench uses.
 *
 * The reader (trace-json.c) is strict: a file that is not exactly what the
 * library writes is refused with its line and column, exit status 1. Usage
 * errors exit with 2, an unwritable output with 1.
 */
#include "trace-json.h"
#include "../benchmarks/bench.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_POOLS 64

typedef struct pool {
    long      pid;
    char      title[TJ_STR + 32];
    unsigned  lanes;
    lane_task *tasks;
    size_t    ntasks;
} pool;

static void usage(FILE *f)
{
    fprintf(f, "usage: cfutures-trace TRACE.json OUT.svg\n"
               "Draws the trace that CFUTURES_TRACE=TRACE.json made a program write:\n"
               "one lane per worker, one bar per task, failed tasks crossed out.\n");
}

static pool *pool_of(pool *pools, size_t *n, long pid)
{
    for (size_t i = 0; i < *n; i++)
        if (pools[i].pid == pid)
            return &pools[i];
    if (*n == MAX_POOLS)
        return NULL;
    pool *p = &pools[(*n)++];
    *p = (pool){.pid = pid};
    snprintf(p->title, sizeof p->title, "pid %ld", pid);
    return p;
}

/* The worker number of a thread_name "worker N", or -1. */
static long worker_number(const tj_event *e)
{
    const tj_arg *a = tj_arg_get(e, "name");
    if (a == NULL || !a->is_str || strncmp(a->str, "worker ", 7) != 0)
        return -1;
    char *end;
    long n = strtol(a->str + 7, &end, 10);
    return *end == '\0' && n >= 0 && n < 4096 ? n : -1;
}

/* Colour by function: the index of its name among those seen, red (3) left for failures. */
static int shade_of(const char **names, size_t *nnames, const char *name)
{
    size_t i;
    for (i = 0; i < *nnames; i++)
        if (strcmp(names[i], name) == 0)
            break;
    if (i == *nnames && *nnames < 64)
        names[(*nnames)++] = name;
    int s = (int)(i % 7);
    return s >= 3 ? s + 1 : s;
}

int main(int argc, char **argv)
{
    if (argc == 2 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
        usage(stdout);
        return 0;
    }
    if (argc != 3) {
        usage(stderr);
        return 2;
    }
    tj_trace t;
    char err[256];
    if (tj_load(argv[1], &t, err, sizeof err) != 0) {
        fprintf(stderr, "cfutures-trace: %s: %s\n", argv[1], err);
        return 1;
    }

    pool pools[MAX_POOLS];
    size_t npools = 0;
    double t0 = 0;
    bool any = false;
    for (size_t i = 0; i < t.n; i++) {
        const tj_event *e = &t.ev[i];
        pool *p = pool_of(pools, &npools, e->pid);
        if (p == NULL) {
            fprintf(stderr, "cfutures-trace: %s: more than %d pools\n", argv[1], MAX_POOLS);
            return 1;
        }
        if (e->ph == 'M' && strcmp(e->name, "process_name") == 0) {
            const tj_arg *a = tj_arg_get(e, "name");
            if (a != NULL && a->is_str)
                snprintf(p->title, sizeof p->title, "%s", a->str);
        } else if (e->ph == 'M' && strcmp(e->name, "thread_name") == 0) {
            long w = worker_number(e);
            if (w >= 0 && (unsigned long)w + 1 > p->lanes)
                p->lanes = (unsigned)w + 1;
        } else if (e->ph == 'X') {
            p->ntasks++;
            if (!any || e->ts < t0)
                t0 = e->ts;
            any = true;
        }
    }
    for (size_t k = 0; k < npools; k++) {
        pools[k].tasks = calloc(pools[k].ntasks + 1, sizeof(lane_task));
        if (pools[k].tasks == NULL) {
            fprintf(stderr, "cfutures-trace: out of memory\n");
            return 1;
        }
        pools[k].ntasks = 0;
    }

    const char *names[64];
    size_t nnames = 0;
    for (size_t i = 0; i < t.n; i++) {
        const tj_event *e = &t.ev[i];
        if (e->ph != 'X')
            continue;
        pool *p = pool_of(pools, &npools, e->pid);
        const tj_arg *id = tj_arg_get(e, "future");
        if (id == NULL)
            id = tj_arg_get(e, "first");
        p->tasks[p->ntasks++] = (lane_task){
            .worker = e->tid < (long)p->lanes ? (int)e->tid : -1,
            .start = (e->ts - t0) / 1e6,
            .end = (e->ts + e->dur - t0) / 1e6,
            .id = id != NULL && !id->is_str && id->num >= 0 ? (unsigned)id->num : 0,
            .shade = shade_of(names, &nnames, e->name),
        };
    }
    /* An instant on a worker's lane marks the bar that ends there. */
    for (size_t i = 0; i < t.n; i++) {
        const tj_event *e = &t.ev[i];
        if (e->ph != 'i')
            continue;
        pool *p = pool_of(pools, &npools, e->pid);
        double at = (e->ts - t0) / 1e6;
        for (size_t k = 0; k < p->ntasks; k++)
            if (p->tasks[k].worker == (int)e->tid && fabs(p->tasks[k].end - at) < 1e-8)
                p->tasks[k].failed = true;
    }

    panel panels[MAX_POOLS];
    size_t np = 0;
    for (size_t k = 0; k < npools; k++)
        if (pools[k].lanes > 0)
            panels[np++] = (panel){.title = pools[k].title, .tasks = pools[k].tasks,
                                   .ntasks = pools[k].ntasks, .lanes = pools[k].lanes};
    int rc = 0;
    if (np == 0) {
        fprintf(stderr, "cfutures-trace: %s: no pool with workers in the trace\n", argv[1]);
        rc = 1;
    } else {
        char dir[4096];
        const char *out = argv[2], *slash = strrchr(out, '/');
        snprintf(dir, sizeof dir, "%.*s", slash != NULL ? (int)(slash - out) : 1,
                 slash != NULL ? out : ".");
        if (slash != NULL && slash == out)
            snprintf(dir, sizeof dir, "/");
        const char *base = slash != NULL ? slash + 1 : out;
        char title[512];
        const char *tslash = strrchr(argv[1], '/');
        snprintf(title, sizeof title, "What the pool did: %s", tslash ? tslash + 1 : argv[1]);
        if (svg_timeline(dir, base, title, panels, np) != 0) {
            fprintf(stderr, "cfutures-trace: cannot write %s: %s\n", out, strerror(errno));
            rc = 1;
        }
    }
    for (size_t k = 0; k < npools; k++)
        free(pools[k].tasks);
    tj_free(&t);
    return rc;
}
