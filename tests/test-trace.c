/*
 * test-trace.c — CFUTURES_TRACE: the file each pool writes, on the thread
 * pool and on process pools with fork and exec workers.
 *
 * Each backend runs the same script under the variable: tasks returning
 * their own codes, one that ends its worker (a thread that exits, a process
 * killed by SIGKILL), one cancelled while pending and, on process pools, one
 * cancelled while running and one killed by task_timeout_ms (a second pool,
 * so a second file), and a cf_map_chunks call. Once the pools are freed the
 * file is read back with the strict reader cfutures-trace uses
 * (tools/trace-json.c) and, where python3 is installed, with its json
 * module as well; then every task is looked for: its one bar, its wait in
 * the queue, the instants of the ones the library ended, bars that never
 * overlap on a worker's track, the counter back at 0.
 */
#include "helpers.h"
#include "../tools/trace-json.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <sys/stat.h>
#include <sys/wait.h>


struct gate_arg {
    struct probe *p;
    int           gate;
};

static int task_code(const void *arg, size_t as, void *res, size_t rs)
{
    (void)res;
    (void)rs;
    int c;
    if (as != sizeof c)
        return CODE_BADSIZE;
    memcpy(&c, arg, sizeof c);
    return c;
}

static int task_die(const void *arg, size_t as, void *res, size_t rs)
{
    (void)arg;
    (void)as;
    (void)res;
    (void)rs;
    if (cf_worker_id() >= 0 && getpid() != (pid_t)*(const int *)arg)
        kill(getpid(), SIGKILL);       /* a worker process */
    pthread_exit(NULL);                /* a pool thread */
}

static int task_gated(const void *arg, size_t as, void *res, size_t rs)
{
    (void)res;
    (void)rs;
    struct gate_arg g;
    if (as != sizeof g)
        return CODE_BADSIZE;
    memcpy(&g, arg, sizeof g);
    return probe_gate_pass(g.p, g.gate) ? 0 : CODE_STUCK;
}

static int chunk_zero(const void *in, size_t is, void *out, size_t os, size_t first, size_t count)
{
    (void)in;
    (void)is;
    (void)first;
    memset(out, 0, os * count);
    return 0;
}

/* ---- reading the file back ------------------------------------------------ */

static uint64_t ns(double us)
{
    return (uint64_t)llround(us * 1000.0);
}

static double arg_num(const tj_event *e, const char *key)
{
    const tj_arg *a = tj_arg_get(e, key);
    cr_assert(a != NULL && !a->is_str, "a \"%c\" event \"%s\" without a numeric args.%s",
              e->ph, e->name, key);
    return a->num;
}

static void load(const char *path, tj_trace *t)
{
    char err[256];
    cr_assert_eq(tj_load(path, t, err, sizeof err), 0, "%s: %s", path, err);
    if (access("/usr/bin/python3", X_OK) != 0) {
        cr_log_warn("python3 not installed: %s checked by the strict reader only", path);
        return;
    }
    if (under_valgrind())    /* python3 too would run under memcheck, for minutes */
        return;
    char cmd[600];
    snprintf(cmd, sizeof cmd,
             "/usr/bin/python3 -c 'import json, sys; json.load(open(sys.argv[1]))' '%s'", path);
    cr_assert_eq(system(cmd), 0, "python3's json module refuses %s", path);
}

static size_t count_named(const tj_trace *t, char ph, const char *name, long future)
{
    size_t n = 0;
    for (size_t i = 0; i < t->n; i++) {
        const tj_event *e = &t->ev[i];
        if (e->ph == ph && (name == NULL || strcmp(e->name, name) == 0) &&
            (future < 0 || (tj_arg_get(e, "future") != NULL && arg_num(e, "future") == future)))
            n++;
    }
    return n;
}

static int by_start(const void *a, const void *b)
{
    const tj_event *x = *(tj_event *const *)a, *y = *(tj_event *const *)b;
    return x->tid != y->tid ? (x->tid < y->tid ? -1 : 1) : x->ts < y->ts ? -1 : x->ts > y->ts;
}

/* Pool-wide checks: names, one track per worker, bars that never overlap, the counter. */
static void check_pool(const tj_trace *t, const char *pool_name, unsigned workers)
{
    size_t named = 0, tracks = 0;
    for (size_t i = 0; i < t->n; i++) {
        const tj_event *e = &t->ev[i];
        if (e->ph != 'M')
            continue;
        const tj_arg *a = tj_arg_get(e, "name");
        cr_assert(a != NULL && a->is_str);
        if (strcmp(e->name, "process_name") == 0) {
            cr_assert(strstr(a->str, pool_name) != NULL, "process_name \"%s\", expected \"%s\"",
                      a->str, pool_name);
            named++;
        } else if (strcmp(e->name, "thread_name") == 0 && strncmp(a->str, "worker ", 7) == 0) {
            tracks++;
        }
    }
    cr_assert_eq(named, 1, "%zu process_name events", named);
    cr_assert_eq(tracks, workers, "%zu worker tracks for %u workers", tracks, workers);

    tj_event **bars = malloc(t->n * sizeof *bars);
    cr_assert_not_null(bars);
    size_t nb = 0;
    for (size_t i = 0; i < t->n; i++)
        if (t->ev[i].ph == 'X') {
            cr_assert(t->ev[i].tid >= 0 && t->ev[i].tid < (long)workers,
                      "a bar on track %ld", t->ev[i].tid);
            bars[nb++] = &t->ev[i];
        }
    qsort(bars, nb, sizeof *bars, by_start);
    for (size_t i = 1; i < nb; i++)
        if (bars[i]->tid == bars[i - 1]->tid)
            cr_assert_leq(ns(bars[i - 1]->ts) + ns(bars[i - 1]->dur), ns(bars[i]->ts),
                          "worker %ld: a bar at %.3f us overlaps the one before it",
                          bars[i]->tid, bars[i]->ts);
    free(bars);

    const tj_event *last = NULL;
    for (size_t i = 0; i < t->n; i++)
        if (t->ev[i].ph == 'C' && (last == NULL || t->ev[i].ts >= last->ts))
            last = &t->ev[i];
    cr_assert_not_null(last, "no counter event");
    cr_assert_eq(arg_num(last, "tasks"), 0, "the last counter shows tasks still in flight");
}

/* Each of the futures 1..n: one wait in the queue; one bar unless it never ran. */
static void check_tasks(const tj_trace *t, long n, long never_ran)
{
    unsigned (*seen)[3] = calloc((size_t)n + 1, sizeof *seen);    /* b, e, X */
    cr_assert_not_null(seen);
    for (size_t i = 0; i < t->n; i++) {
        const tj_event *e = &t->ev[i];
        long id = -1;
        int k = -1;
        if ((e->ph == 'b' || e->ph == 'e') && strcmp(e->cat, "queue") == 0) {
            id = (long)e->id;
            k = e->ph == 'b' ? 0 : 1;
        } else if (e->ph == 'X' && tj_arg_get(e, "future") != NULL) {
            id = (long)arg_num(e, "future");
            k = 2;
        }
        if (k < 0)
            continue;
        cr_assert(id >= 1 && id <= n, "an event for future %ld, of %ld submitted", id, n);
        seen[id][k]++;
    }
    for (long id = 1; id <= n; id++) {
        cr_assert(seen[id][0] == 1 && seen[id][1] == 1,
                  "future %ld: %u begin and %u end of its wait", id, seen[id][0], seen[id][1]);
        cr_assert_eq(seen[id][2], id == never_ran ? 0u : 1u, "future %ld: %u bars", id,
                     seen[id][2]);
    }
    free(seen);
}

/* ---- the script --------------------------------------------------------- */

static void pool_new_kind(enum pool_kind kind, cf_executor **ex, cf_options o)
{
    int rc = pool_kind_new(kind, ex, &o);
    cr_assert_eq(rc, 0, "%s pool: %s", pool_kind_name(kind), cf_strerror(rc));
}

static char *tmpdir_new(void)
{
    char *dir = strdup("/tmp/cftrace-XXXXXX");
    cr_assert(dir != NULL && mkdtemp(dir) != NULL, "mkdtemp: %s", strerror(errno));
    return dir;
}

static void tmpdir_free(char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *de;
    char path[512];
    while (d != NULL && (de = readdir(d)) != NULL)
        if (de->d_name[0] != '.') {
            snprintf(path, sizeof path, "%s/%s", dir, de->d_name);
            unlink(path);
        }
    if (d != NULL)
        closedir(d);
    rmdir(dir);
    free(dir);
}

static void run_script(enum pool_kind kind)
{
    skip_exec_under_valgrind(kind);
    const bool process = pool_kind(kind)->process;
    struct probe *p = probe_new();
    char *dir = tmpdir_new(), path[512];
    snprintf(path, sizeof path, "%s/run.json", dir);
    cr_assert_eq(setenv("CFUTURES_TRACE", path, 1), 0);

    cf_executor *ex;
    pool_new_kind(kind, &ex, (cf_options){.workers = 2});
    cf_future *f[10];
    for (int i = 0; i < 6; i++) {                        /* futures 1..6: codes 0, 1, 2 */
        int code = i % 3;
        cr_assert_eq(cf_submit(ex, task_code, &code, sizeof code, 0, &f[i]), 0);
    }
    int me = (int)getpid();                              /* future 7: its worker ends */
    cr_assert_eq(cf_submit(ex, task_die, &me, sizeof me, 0, &f[6]), 0);
    cr_assert_eq(cf_future_result(f[6], NULL, 0, -1), CF_ECRASHED);
    for (int i = 0; i < 2; i++) {                        /* futures 8, 9: hold both workers */
        struct gate_arg g = {p, i};
        cr_assert_eq(cf_submit(ex, task_gated, &g, sizeof g, 0, &f[7 + i]), 0);
    }
    cr_assert(wait_at_least(&p->started, 2, POLL_MAX_MS), "the gated tasks did not start");
    int zero = 0;                                        /* future 10: cancelled, pending */
    cr_assert_eq(cf_submit(ex, task_code, &zero, sizeof zero, 0, &f[9]), 0);
    cr_assert_eq(cf_future_cancel(f[9]), 0);
    if (process)                                         /* future 9: cancelled, running */
        cr_assert_eq(cf_future_cancel(f[8]), 0);
    probe_open(p, 0);
    probe_open(p, 1);
    for (int i = 0; i < 6; i++)
        cr_assert_eq(cf_future_result(f[i], NULL, 0, -1), i % 3);
    cr_assert_eq(cf_future_result(f[7], NULL, 0, -1), 0);
    cr_assert_eq(cf_future_result(f[8], NULL, 0, -1), process ? CF_ECANCELED : 0);
    long in[8] = {0}, out[8];
    cf_map_options mo = {.chunksize = 2};
    cr_assert_eq(cf_map_chunks(ex, chunk_zero, in, sizeof in[0], out, sizeof out[0], 8, &mo), 0);
    cf_executor_free(ex);
    for (int i = 0; i < 10; i++)
        cf_future_free(f[i]);

    if (process) {                                       /* run.2.json: a timeout */
        cf_future *g;
        pool_new_kind(kind, &ex, (cf_options){.workers = 1, .task_timeout_ms = 300});
        struct gate_arg ga = {p, PROBE_SLOTS - 1};       /* never opened */
        cr_assert_eq(cf_submit(ex, task_gated, &ga, sizeof ga, 0, &g), 0);
        cr_assert_eq(cf_future_result(g, NULL, 0, -1), CF_ETIMEDOUT);
        cf_executor_free(ex);
        cf_future_free(g);
    }
    unsetenv("CFUTURES_TRACE");

    tj_trace t;
    load(path, &t);
    char pool_name[64];
    snprintf(pool_name, sizeof pool_name, "cfutures %s pool 1 (%s2 workers)",
             process ? "process" : "thread", kind == POOL_FORK ? "fork, " : kind == POOL_EXEC ? "exec, " : "");
    check_pool(&t, pool_name, 2);
    check_tasks(&t, 10, 10);
    for (int i = 0; i < 6; i++) {
        for (size_t k = 0; k < t.n; k++)
            if (t.ev[k].ph == 'X' && tj_arg_get(&t.ev[k], "future") != NULL &&
                arg_num(&t.ev[k], "future") == i + 1)
                cr_assert_eq(arg_num(&t.ev[k], "code"), i % 3, "future %d: wrong code", i + 1);
    }
    cr_assert_eq(count_named(&t, 'i', "crashed", 7), 1, "no crash instant for future 7");
    cr_assert_eq(count_named(&t, 'i', "cancelled", 10), 1, "no cancel instant for future 10");
    cr_assert_eq(count_named(&t, 'i', "cancelled", 9), process ? 1u : 0u);
    for (size_t k = 0; k < t.n; k++)
        if (t.ev[k].ph == 'i' && strcmp(t.ev[k].name, "crashed") == 0 && process)
            cr_assert_eq(arg_num(&t.ev[k], "signal"), SIGKILL);
    unsigned chunks = 0;
    for (size_t k = 0; k < t.n; k++)
        if (t.ev[k].ph == 'X' && tj_arg_get(&t.ev[k], "first") != NULL) {
            double first = arg_num(&t.ev[k], "first");
            cr_assert_eq(arg_num(&t.ev[k], "count"), 2);
            cr_assert(first == 0 || first == 2 || first == 4 || first == 6, "chunk at %g", first);
            chunks++;
        }
    cr_assert_eq(chunks, 4, "%u chunk bars for 4 chunks", chunks);
    tj_free(&t);

    if (process) {
        snprintf(path, sizeof path, "%s/run.2.json", dir);
        load(path, &t);
        snprintf(pool_name, sizeof pool_name, "cfutures process pool 2 (%s, 1 worker)",
                 pool_kind_name(kind));
        check_pool(&t, pool_name, 1);
        check_tasks(&t, 1, 0);
        cr_assert_eq(count_named(&t, 'i', "timed out", 1), 1, "no timeout instant");
        tj_free(&t);
    }
    tmpdir_free(dir);
    probe_free(p);
}

Test(trace, thread_pool, .timeout = TEST_TIMEOUT)
{
    run_script(POOL_THREAD);
}

Test(trace, fork_pool, .timeout = TEST_TIMEOUT)
{
    run_script(POOL_FORK);
}

Test(trace, exec_pool, .timeout = TEST_TIMEOUT)
{
    run_script(POOL_EXEC);
}

/* More records than the tracer holds: it writes them as it goes, and loses none. */
Test(trace, more_events_than_the_buffer, .timeout = SLOW_TIMEOUT)
{
    enum { N = 17000 };    /* two records each: four buffers of 8192 */
    char *dir = tmpdir_new(), path[512];
    snprintf(path, sizeof path, "%s/many.json", dir);
    cr_assert_eq(setenv("CFUTURES_TRACE", path, 1), 0);
    cf_executor *ex;
    pool_new_kind(POOL_THREAD, &ex, (cf_options){.workers = 2});
    unsetenv("CFUTURES_TRACE");
    for (int i = 0; i < N; i++) {
        cf_future *f;
        int zero = 0;
        cr_assert_eq(cf_submit(ex, task_code, &zero, sizeof zero, 0, &f), 0);
        cf_future_free(f);
    }
    cf_executor_free(ex);
    tj_trace t;
    load(path, &t);
    check_pool(&t, "cfutures thread pool", 2);
    check_tasks(&t, N, 0);
    tj_free(&t);
    tmpdir_free(dir);
}

static size_t entries(const char *dir)
{
    DIR *d = opendir(dir);
    cr_assert_not_null(d);
    size_t n = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL)
        n += de->d_name[0] != '.';
    closedir(d);
    return n;
}

/* Unset or empty, the variable writes nothing anywhere (here: the working directory). */
Test(trace, off_writes_nothing, .timeout = TEST_TIMEOUT)
{
    char *dir = tmpdir_new(), cwd[4096];
    cr_assert_not_null(getcwd(cwd, sizeof cwd));
    cr_assert_eq(chdir(dir), 0);
    for (int round = 0; round < 2; round++) {
        if (round == 0)
            unsetenv("CFUTURES_TRACE");
        else
            setenv("CFUTURES_TRACE", "", 1);
        for (enum pool_kind kind = POOL_THREAD; kind <= POOL_FORK; kind++) {
            cf_executor *ex;
            cf_future *f;
            int zero = 0;
            pool_new_kind(kind, &ex, (cf_options){.workers = 1});
            cr_assert_eq(cf_submit(ex, task_code, &zero, sizeof zero, 0, &f), 0);
            cr_assert_eq(cf_future_result(f, NULL, 0, -1), 0);
            cf_future_free(f);
            cf_executor_free(ex);
        }
    }
    unsetenv("CFUTURES_TRACE");
    cr_assert_eq(chdir(cwd), 0);
    cr_assert_eq(entries(dir), 0, "a file was written with tracing off");
    tmpdir_free(dir);
}

/*
 * A path that cannot be opened: the pool is created and works, untraced,
 * and says so in one line on stderr that names the variable.
 */
Test(trace, unwritable_path_leaves_the_pool_working, .timeout = TEST_TIMEOUT)
{
    char *dir = tmpdir_new(), path[512], log[512], text[1024] = {0};
    snprintf(path, sizeof path, "%s/no/such/dir/run.json", dir);
    snprintf(log, sizeof log, "%s/stderr", dir);
    cr_assert_eq(setenv("CFUTURES_TRACE", path, 1), 0);
    fflush(stderr);
    int saved = dup(2), fd = open(log, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    cr_assert(saved >= 0 && fd >= 0);
    dup2(fd, 2);
    close(fd);
    cf_executor *ex = NULL;
    int rc = cf_thread_pool_new(&ex, &(cf_options){.workers = 1});
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    unsetenv("CFUTURES_TRACE");
    cr_assert_eq(rc, 0, "pool creation failed: %s", cf_strerror(rc));
    cf_future *f;
    int seven = 7;
    cr_assert_eq(cf_submit(ex, task_code, &seven, sizeof seven, 0, &f), 0);
    cr_assert_eq(cf_future_result(f, NULL, 0, -1), 7);
    cf_future_free(f);
    cf_executor_free(ex);

    fd = open(log, O_RDONLY);
    cr_assert(fd >= 0);
    ssize_t n = read(fd, text, sizeof text - 1);
    close(fd);
    cr_assert_gt(n, 0, "nothing on stderr");
    size_t lines = 0;
    for (ssize_t i = 0; i < n; i++)
        lines += text[i] == '\n';
    cr_assert_eq(lines, 1, "stderr: %s", text);
    cr_assert(strstr(text, "CFUTURES_TRACE") != NULL && strstr(text, path) != NULL,
              "stderr: %s", text);
    unlink(log);
    tmpdir_free(dir);
}

/* "%p" in the path is the pid of the process that creates the pool. */
Test(trace, pid_in_the_path, .timeout = TEST_TIMEOUT)
{
    char *dir = tmpdir_new(), path[512], want[64];
    snprintf(path, sizeof path, "%s/run-%%p.json", dir);
    cr_assert_eq(setenv("CFUTURES_TRACE", path, 1), 0);
    cf_executor *ex;
    pool_new_kind(POOL_THREAD, &ex, (cf_options){.workers = 1});
    unsetenv("CFUTURES_TRACE");
    cf_executor_free(ex);
    snprintf(want, sizeof want, "run-%d.", (int)getpid());
    DIR *d = opendir(dir);
    cr_assert_not_null(d);
    struct dirent *de;
    size_t found = 0;
    while ((de = readdir(d)) != NULL)
        found += strncmp(de->d_name, want, strlen(want)) == 0;
    closedir(d);
    cr_assert_eq(found, 1, "no file %s*.json in %s", want, dir);
    cr_assert_eq(entries(dir), 1);
    tmpdir_free(dir);
}

/*
 * A pool grown by cf_executor_resize: the workers it grew by get their own
 * named tracks, and their bars stay on them.
 */
static void grown_pool(enum pool_kind kind)
{
    skip_exec_under_valgrind(kind);
    struct probe *p = probe_new();
    char *dir = tmpdir_new(), path[512];
    snprintf(path, sizeof path, "%s/grown.json", dir);
    cr_assert_eq(setenv("CFUTURES_TRACE", path, 1), 0);
    cf_executor *ex;
    pool_new_kind(kind, &ex, (cf_options){.workers = 1});
    unsetenv("CFUTURES_TRACE");
    cr_assert_eq(cf_executor_resize(ex, 3), 0);
    cf_future *f[3];
    for (int i = 0; i < 3; i++) {    /* three at once: one on each worker */
        struct gate_arg g = {p, i};
        cr_assert_eq(cf_submit(ex, task_gated, &g, sizeof g, 0, &f[i]), 0);
    }
    cr_assert(wait_at_least(&p->started, 3, POLL_MAX_MS), "the gated tasks did not all start");
    probe_open_all(p);
    for (int i = 0; i < 3; i++) {
        cr_assert_eq(cf_future_result(f[i], NULL, 0, -1), 0);
        cf_future_free(f[i]);
    }
    cf_executor_free(ex);
    tj_trace t;
    load(path, &t);
    char name[64];
    snprintf(name, sizeof name, "cfutures %s pool", kind == POOL_THREAD ? "thread" : "process");
    check_pool(&t, name, 3);
    check_tasks(&t, 3, 0);
    tj_free(&t);
    tmpdir_free(dir);
    probe_free(p);
}

Test(trace, grown_thread_pool, .timeout = TEST_TIMEOUT)
{
    grown_pool(POOL_THREAD);
}

Test(trace, grown_fork_pool, .timeout = TEST_TIMEOUT)
{
    grown_pool(POOL_FORK);
}
