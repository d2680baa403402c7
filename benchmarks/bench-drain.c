/*
 * bench-drain.c — taking many futures back as they complete.
 *
 * n empty tasks are submitted, then drained one at a time in the order they
 * complete: once with the cf_as_completed loop, whose every call reads all
 * n entries (n squared in all), once through a cf_queue, which hands each
 * back in O(1). Submitting is timed apart from draining; the last column
 * puts each drain beside the whole submit-plus-drain time of the
 * cf_as_completed loop, which runs on the first pool only (at 10^5 it takes
 * minutes; its cost is the scan, the same on every pool).
 */
#include "bench.h"

#include <stdlib.h>

typedef struct drain_times {
    double submit_s;
    double drain_s;
} drain_times;

static drain_times drain_as_completed(cf_executor *ex, size_t n)
{
    cf_future **fs = xmalloc(n * sizeof *fs);
    bool *seen = xmalloc(n * sizeof *seen);
    drain_times t;
    double t0 = now_s();
    for (size_t i = 0; i < n; i++) {
        check(cf_submit(ex, empty_task, NULL, 0, 0, &fs[i]), "cf_submit");
        seen[i] = false;
    }
    double t1 = now_s();
    for (size_t k = 0; k < n; k++) {
        int i = cf_as_completed(fs, n, seen, -1);
        check(i < 0 ? i : 0, "cf_as_completed");
        check(cf_future_result(fs[i], NULL, 0, 0), "empty task");
    }
    t.drain_s = now_s() - t1;
    t.submit_s = t1 - t0;
    if (cf_as_completed(fs, n, seen, 0) != CF_EINVAL)
        die("cf_as_completed: a future came back twice");
    for (size_t i = 0; i < n; i++)
        cf_future_free(fs[i]);
    free(seen);
    free(fs);
    return t;
}

static drain_times drain_queue(cf_executor *ex, size_t n)
{
    cf_queue *q;
    cf_future *f;
    drain_times t;
    check(cf_queue_new(&q), "cf_queue_new");
    double t0 = now_s();
    for (size_t i = 0; i < n; i++) {
        check(cf_submit(ex, empty_task, NULL, 0, 0, &f), "cf_submit");
        check(cf_queue_add(q, f), "cf_queue_add");
        cf_future_free(f);    /* the queue holds its own reference */
    }
    double t1 = now_s();
    for (size_t k = 0; k < n; k++) {
        check(cf_queue_next(q, -1, &f), "cf_queue_next");
        check(cf_future_result(f, NULL, 0, 0), "empty task");
        cf_future_free(f);
    }
    t.drain_s = now_s() - t1;
    t.submit_s = t1 - t0;
    if (cf_queue_next(q, 0, &f) != CF_EEMPTY)
        die("cf_queue_next: a future came back twice");
    cf_queue_free(q);
    return t;
}

static void add_row(table *t, const char *label, size_t n, drain_times d, double old_total)
{
    table_row(t, "%s", label);
    table_set(t, "count", (double)n);
    table_set(t, "submit_s", d.submit_s);
    table_set(t, "drain_s", d.drain_s);
    table_set(t, "drain_pct", 100.0 * d.drain_s / old_total);
}

void bench_drain(const bench_config *cfg)
{
    size_t n = cfg->quick ? 10000 : 100000;
    static const column cols[] = {
        {"count", "futures", "%.0f"},
        {"submit_s", "submit (s)", "%.3f"},
        {"drain_s", "drain (s)", "%.4f"},
        {"drain_pct", "drain, % of the loop's submit+drain", "%.3f"},
    };
    table *t = table_begin("drain", "draining futures in completion order", cols, 4);
    double old_total = 0;
    for (int k = 0; k < POOL_KINDS; k++) {
        const char *name = pool_title((pool_kind)k);
        char label[96];
        cf_executor *ex = pool_open((pool_kind)k, 0);
        /* The old loop is quadratic (minutes at 10^5): once, on the first pool. */
        if (k == 0) {
            progress("drain: %s, cf_as_completed over %zu", name, n);
            drain_times old = drain_as_completed(ex, n);
            old_total = old.submit_s + old.drain_s;
            snprintf(label, sizeof label, "%s: cf_as_completed loop", name);
            add_row(t, label, n, old, old_total);
        }
        progress("drain: %s, cf_queue of %zu", name, n);
        drain_times queue = drain_queue(ex, n);
        snprintf(label, sizeof label, "%s: cf_queue_next loop", name);
        add_row(t, label, n, queue, old_total);
        cf_executor_free(ex);
    }
    table_note(t, "empty tasks; submit for cf_queue includes cf_queue_add; the cf_as_completed loop "
                  "runs on the first pool only (its cost grows with the square of the count), and "
                  "every row's percentage is of that loop's submit + drain");
    table_end(t);
}
