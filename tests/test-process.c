/*
 * Process pool only: what a pool of forked workers promises beyond the
 * common contract. Crashes are isolated to their future, overrunning and
 * cancelled tasks kill their worker, workers are replaced (and re-run the
 * initializer under the same worker id), never outlive their parent, and
 * nothing is left behind by cf_executor_free. Also the product's lesson:
 * a task's writes to globals stay in the worker, cf_shared_alloc memory is
 * shared.
 *
 * Tasks report through `probe` (cf_shared_alloc, made before each pool).
 * An exec worker (CF_START_EXEC) inherits no memory, so it does not know
 * `probe` until init_exec_probe hands it over as initargs.
 */
#include "helpers.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>

static struct probe *probe;

static void setup(void)
{
    no_core_dumps();
    probe = probe_new();
}

static void teardown(void)
{
    probe_free(probe);
    probe = NULL;
}

#define PTEST(name, ...) \
    Test(process, name, .init = setup, .fini = teardown, __VA_ARGS__)

/* ---- Tasks and initializers ------------------------------------------------ */

static int task_square(const void *arg, size_t as, void *res, size_t rs)
{
    int64_t x;
    if (as != sizeof x || rs != sizeof x)
        return CODE_BADSIZE;
    memcpy(&x, arg, sizeof x);
    x *= x;
    memcpy(res, &x, sizeof x);
    return 0;
}

/* Dies of SIGSEGV (task_segv) once it has written its worker id + 1000 to probe->value. */
static int task_segv_noting_wid(const void *arg, size_t as, void *res, size_t rs)
{
    store_int(&probe->value, cf_worker_id() + 1000);
    return task_segv(arg, as, res, rs);
}

static int task_abort(const void *arg, size_t as, void *res, size_t rs)
{
    (void)arg; (void)as; (void)res; (void)rs;
    abort();
}

static int task_sigkill(const void *arg, size_t as, void *res, size_t rs)
{
    (void)arg; (void)as; (void)res; (void)rs;
    kill(getpid(), SIGKILL);
    return 0;
}

/* Blocks until the test opens gate *arg (gate 0 without an argument). */
static int task_gated(const void *arg, size_t as, void *res, size_t rs)
{
    int i = 0;
    if (as == sizeof i)
        memcpy(&i, arg, sizeof i);
    if (!probe_gate_pass(probe, i))
        return CODE_STUCK;
    if (rs == sizeof i)
        memcpy(res, &i, sizeof i);
    return 0;
}

struct pid_square {
    int pid;
    int64_t square;
};

static int task_pid_square(const void *arg, size_t as, void *res, size_t rs)
{
    struct pid_square r;
    if (as != sizeof r.square || rs != sizeof r)
        return CODE_BADSIZE;
    memcpy(&r.square, arg, sizeof r.square);
    r.square *= r.square;
    r.pid = (int)getpid();
    memcpy(res, &r, sizeof r);
    return 0;
}

static int task_checksum(const void *arg, size_t as, void *res, size_t rs)
{
    uint64_t h;
    if (rs != sizeof h)
        return CODE_BADSIZE;
    h = fnv1a(arg, as);
    memcpy(res, &h, sizeof h);
    return 0;
}

static unsigned char pattern_byte(size_t j)
{
    return (unsigned char)((j * 2654435761u) >> 13);
}

static int task_big_result(const void *arg, size_t as, void *res, size_t rs)
{
    unsigned char *out = res;
    (void)arg;
    (void)as;
    for (size_t j = 0; j < rs; j++)
        out[j] = pattern_byte(j);
    return 0;
}

static int plain_global = 1;

/* Writes a plain global and shared memory; returns the global as it sees it. */
static int task_write_global(const void *arg, size_t as, void *res, size_t rs)
{
    (void)arg;
    (void)as;
    if (rs != sizeof plain_global)
        return CODE_BADSIZE;
    plain_global = 2;
    store_int(&probe->value, 2);
    memcpy(res, &plain_global, sizeof plain_global);
    return 0;
}

static int task_read_global(const void *arg, size_t as, void *res, size_t rs)
{
    (void)arg;
    (void)as;
    if (rs != sizeof plain_global)
        return CODE_BADSIZE;
    memcpy(res, &plain_global, sizeof plain_global);
    return 0;
}

struct initargs {
    uint32_t magic;
    char text[12];
};

/* Checks its initargs and records who runs it (counted in probe->inits once written). */
static int init_record(const void *arg, size_t as)
{
    const struct initargs *ia = arg;
    if (as != sizeof *ia || ia->magic != 0xC0FFEE || strcmp(ia->text, "initargs") != 0)
        add_int(&probe->init_bad, 1);
    if (!probe_record(&probe->init_claimed, &probe->inits, probe->init_pid, probe->init_wid))
        return CODE_STUCK;
    return 0;
}

/* ---- Helpers --------------------------------------------------------------- */

static cf_executor *pool_with(const cf_options *opts)
{
    cf_executor *ex = NULL;
    int rc = cf_process_pool_new(&ex, opts);
    cr_assert_eq(rc, 0, "cf_process_pool_new: %s", cf_strerror(rc));
    return ex;
}

static cf_executor *pool_start(unsigned workers)
{
    cf_options opts = { .workers = workers };
    return pool_with(&opts);
}

static cf_future *submit(cf_executor *ex, cf_fn *fn, const void *arg, size_t as, size_t rs)
{
    cf_future *f = NULL;
    int rc = cf_submit(ex, fn, arg, as, rs, &f);
    cr_assert_eq(rc, 0, "cf_submit: %s", cf_strerror(rc));
    return f;
}

static cf_future *submit_square(cf_executor *ex, int64_t x)
{
    return submit(ex, task_square, &x, sizeof x, sizeof x);
}

static cf_future *submit_gated(cf_executor *ex, int gate)
{
    return submit(ex, task_gated, &gate, sizeof gate, sizeof gate);
}

static void assert_square(cf_future *f, int64_t x)
{
    int64_t y = -1;
    int rc = cf_future_result(f, &y, sizeof y, -1);
    cr_assert_eq(rc, 0, "result of %lld: %s", (long long)x, cf_strerror(rc));
    cr_assert_eq(y, x * x, "square of %lld: got %lld", (long long)x, (long long)y);
}

static void assert_pool_works(cf_executor *ex)
{
    cf_future *fs[8];
    for (int i = 0; i < 8; i++)
        fs[i] = submit_square(ex, 1000 + i);
    for (int i = 0; i < 8; i++) {
        assert_square(fs[i], 1000 + i);
        cf_future_free(fs[i]);
    }
}

static void assert_crashed(cf_future *f, int sig)
{
    int64_t y = 0;
    int rc = cf_future_result(f, &y, sizeof y, -1);
    cr_assert_eq(rc, CF_ECRASHED, "a task killed by signal %d: %d (%s)", sig, rc, cf_strerror(rc));
    cr_assert_eq(cf_future_signal(f), sig, "cf_future_signal: %d, expected %d",
                 cf_future_signal(f), sig);
    cr_assert(cf_future_done(f));
    cr_assert_not(cf_future_cancelled(f));
}

static bool wait_process_gone(pid_t pid)
{
    for (int ms = 0; ms < POLL_MAX_MS; ms++) {
        if (process_gone(pid))
            return true;
        sleep_ms(1);
    }
    return process_gone(pid);
}

/* ---- Crash isolation ---------------------------------------------------------- */

static void check_crash_isolated(cf_fn *crash, int sig)
{
    enum { N = 10 };
    cf_executor *ex = pool_start(2);
    cf_future *before[N], *after[N], *bad;

    for (int i = 0; i < N; i++)
        before[i] = submit_square(ex, i);
    bad = submit(ex, crash, NULL, 0, sizeof(int64_t));
    for (int i = 0; i < N; i++)
        after[i] = submit_square(ex, 100 + i);

    assert_crashed(bad, sig);
    for (int i = 0; i < N; i++) {
        assert_square(before[i], i);
        assert_square(after[i], 100 + i);
        cr_assert_eq(cf_future_signal(before[i]), 0);
        cf_future_free(before[i]);
        cf_future_free(after[i]);
    }
    assert_pool_works(ex);
    cr_assert_eq(cf_executor_workers(ex), 2);
    cf_future_free(bad);
    cf_executor_free(ex);
}

PTEST(crash_segfault_is_isolated, .timeout = TEST_TIMEOUT)
{
    check_crash_isolated(task_segv, SIGSEGV);
}

PTEST(crash_abort_is_isolated, .timeout = TEST_TIMEOUT)
{
    check_crash_isolated(task_abort, SIGABRT);
}

PTEST(crash_sigkill_is_isolated, .timeout = TEST_TIMEOUT)
{
    check_crash_isolated(task_sigkill, SIGKILL);
}

PTEST(crashes_in_a_row, .timeout = SLOW_TIMEOUT)
{
    static cf_fn *const crashes[] = { task_segv, task_abort, task_sigkill };
    static const int sigs[] = { SIGSEGV, SIGABRT, SIGKILL };
    enum { ROUNDS = 3, N = 3 * ROUNDS };
    cf_executor *ex = pool_start(2);
    cf_future *bad[N], *good[N];

    for (int i = 0; i < N; i++) {
        bad[i] = submit(ex, crashes[i % 3], NULL, 0, sizeof(int64_t));
        good[i] = submit_square(ex, i);
    }
    for (int i = 0; i < N; i++) {
        assert_crashed(bad[i], sigs[i % 3]);
        assert_square(good[i], i);
        cf_future_free(bad[i]);
        cf_future_free(good[i]);
    }
    assert_pool_works(ex);
    cr_assert_eq(cf_executor_workers(ex), 2);
    cf_executor_free(ex);
}

static int task_segv_on_5(const void *arg, size_t as, void *res, size_t rs)
{
    int64_t x;
    memcpy(&x, arg, sizeof x);
    if (x == 5)
        return task_segv(arg, as, res, rs);
    return task_square(arg, as, res, rs);
}

PTEST(map_reports_crashed_elements, .timeout = TEST_TIMEOUT)
{
    enum { N = 20 };
    cf_executor *ex = pool_start(2);
    int64_t in[N], out[N];
    int status[N];
    cf_map_options mo = { .chunksize = 1, .status = status };

    for (int i = 0; i < N; i++)
        in[i] = i;
    cr_assert_eq(cf_map(ex, task_segv_on_5, in, sizeof *in, out, sizeof *out, N, &mo),
                 CF_ECRASHED);
    for (int i = 0; i < N; i++) {
        cr_assert_eq(status[i], i == 5 ? CF_ECRASHED : 0, "status[%d]: %d", i, status[i]);
        if (i != 5)
            cr_assert_eq(out[i], (int64_t)i * i, "element %d", i);
    }
    assert_pool_works(ex);
    cf_executor_free(ex);
}

static int task_fail_3_segv_5(const void *arg, size_t as, void *res, size_t rs)
{
    int64_t x;
    memcpy(&x, arg, sizeof x);
    if (x == 3)
        return 7;
    return task_segv_on_5(arg, as, res, rs);
}

/*
 * With no codes asked for, a chunk whose worker died keeps what it did:
 * the outputs of the elements before the one that crashed come back, and
 * the map's code is its lowest failing element's, 7 (element 3), not the
 * crash's (element 5).
 */
PTEST(map_without_codes_keeps_what_a_dead_chunk_finished, .timeout = TEST_TIMEOUT)
{
    enum { N = 20 };
    cf_executor *ex = pool_start(2);
    int64_t in[N], out[N];
    cf_map_options mo = { .chunksize = 10 };

    for (int i = 0; i < N; i++) {
        in[i] = i;
        out[i] = -1;
    }
    int rc = cf_map(ex, task_fail_3_segv_5, in, sizeof *in, out, sizeof *out, N, &mo);
    cr_assert_eq(rc, 7, "cf_map: %d (%s), not element 3's code", rc, cf_strerror(rc));
    for (int i = 0; i < N; i++)
        if (i < 3 || i == 4 || i >= 10)
            cr_assert_eq(out[i], (int64_t)i * i, "element %d: %lld", i, (long long)out[i]);
    assert_pool_works(ex);
    cf_executor_free(ex);
}

/*
 * Counts chunks (probe->count) and those smaller than 512 (probe->started);
 * sleeps 1 ms in each if probe->value is 1, fails each with 5 if it is 2.
 */
static int chunk_log(const void *in, size_t is, void *out, size_t os, size_t first, size_t count)
{
    (void)in; (void)is; (void)out; (void)os; (void)first;
    add_int(&probe->count, 1);
    if (count < 512)
        add_int(&probe->started, 1);
    if (load_int(&probe->value) == 1)
        usleep(1000);
    return load_int(&probe->value) == 2 ? 5 : 0;
}

static int chunk_log_too(const void *in, size_t is, void *out, size_t os, size_t first, size_t count)
{
    return chunk_log(in, is, out, os, first, count);
}

/* Maps 4096 elements with automatic chunks (n / (4 workers): 512); how many chunks were smaller. */
static int shrunk_chunks(cf_executor *ex, cf_chunk_fn *fn, int mode, int want_rc)
{
    enum { N = 4096 };
    static char in[N], out[N];
    store_int(&probe->value, mode);
    store_int(&probe->count, 0);
    store_int(&probe->started, 0);
    int rc = cf_map_chunks(ex, fn, in, 1, out, 1, N, NULL);
    cr_assert_eq(rc, want_rc, "cf_map_chunks: %d (%s)", rc, cf_strerror(rc));
    cr_assert_geq(load_int(&probe->count), 8);
    return load_int(&probe->started);
}

/*
 * A small map's automatic chunks are guided from the first (they shrink),
 * unless the same function's last map on the pool ran every chunk short
 * and failed nothing: then they are n / (4 workers) each. A map whose
 * chunks ran long (1 ms) makes the next one guided again; a map that
 * failed teaches nothing. "Short" is the pool's own reading of each
 * chunk's time (under 0.2 ms), which a loaded machine can stretch: the
 * test asks for whole chunks only after some map of many, and asserts
 * only what no timing changes.
 */
PTEST(map_of_short_chunks_keeps_its_chunks_whole_the_next_time, .timeout = TEST_TIMEOUT)
{
    enum { TRIES = 100 };
    cf_executor *ex = pool_start(2);
    cr_assert_gt(shrunk_chunks(ex, chunk_log, 0, 0), 0, "the first map: guided");
    int tries = 1;
    while (tries < TRIES && shrunk_chunks(ex, chunk_log, 0, 0) > 0)
        tries++;
    cr_assert_lt(tries, TRIES, "no map of short chunks in %d was followed by whole chunks", TRIES);
    shrunk_chunks(ex, chunk_log, 1, 0);    /* every chunk 1 ms */
    cr_assert_gt(shrunk_chunks(ex, chunk_log, 0, 0), 0, "after a map of long chunks: guided");
    cr_assert_gt(shrunk_chunks(ex, chunk_log_too, 2, 5), 0, "another function: guided");
    cr_assert_gt(shrunk_chunks(ex, chunk_log_too, 0, 0), 0, "after a map that failed: guided");
    cf_executor_free(ex);
}

/*
 * Element 0 of a map of LATE_N runs until element LATE_N - 1 has (or gives
 * up after POLL_MAX_MS with LATE_GAVE_UP). Element 0 fails with `code0`,
 * the last element with `code_last`; the others square.
 */
enum { LATE_N = 64, LATE_GAVE_UP = 99 };

struct late_arg {
    int64_t x;
    int     code0, code_last;
};

static int task_first_waits_for_last(const void *arg, size_t as, void *res, size_t rs)
{
    struct late_arg a;
    if (as != sizeof a || rs != sizeof(int64_t))
        return CODE_BADSIZE;
    memcpy(&a, arg, sizeof a);
    if (a.x == 0 && !wait_at_least(&probe->value, 1, POLL_MAX_MS))
        return LATE_GAVE_UP;
    if (a.x == LATE_N - 1)
        store_int(&probe->value, 1);
    int64_t y = a.x * a.x;
    memcpy(res, &y, sizeof y);
    return a.x == 0 ? a.code0 : a.x == LATE_N - 1 ? a.code_last : 0;
}

/*
 * A map takes its chunks back as they end, not oldest first: while one long
 * chunk runs, the other worker goes through the rest of the map. Here the
 * first element waits for the last: a map that waited for its oldest chunk
 * before publishing more than a few would never run the last element, and
 * the first would give up. And the code a map returns is its lowest failing
 * element's, whichever chunk ended first: element 0 (code 7) ends after
 * element 63 (code 9).
 */
PTEST(map_goes_on_past_a_long_chunk, .timeout = TEST_TIMEOUT)
{
    cf_executor *ex = pool_start(2);
    static struct late_arg in[LATE_N];
    int64_t out[LATE_N];
    int status[LATE_N];
    cf_map_options mo = { .chunksize = 1, .status = status };
    int codes[2][2] = { { 0, 0 }, { 7, 9 } };

    for (int round = 0; round < 2; round++) {
        store_int(&probe->value, 0);
        for (int i = 0; i < LATE_N; i++)
            in[i] = (struct late_arg){ .x = i, .code0 = codes[round][0], .code_last = codes[round][1] };
        int rc = cf_map(ex, task_first_waits_for_last, in, sizeof *in, out, sizeof *out, LATE_N, &mo);
        cr_assert_neq(status[0], LATE_GAVE_UP, "round %d: element 0 waited for the last element in vain", round);
        cr_assert_eq(rc, codes[round][0], "round %d: cf_map returned %d, expected %d (element 0's)", round, rc,
                     codes[round][0]);
        for (int i = 0; i < LATE_N; i++) {
            int want = i == 0 ? codes[round][0] : i == LATE_N - 1 ? codes[round][1] : 0;
            cr_assert_eq(status[i], want, "round %d: status[%d] %d, expected %d", round, i, status[i], want);
            cr_assert_eq(out[i], (int64_t)i * i, "round %d: element %d", round, i);
        }
    }
    assert_pool_works(ex);
    cf_executor_free(ex);
}

/* Squares a chunk; the chunk holding element 12 crashes after writing half of it. */
static int chunk_segv_at_12(const void *in, size_t is, void *out, size_t os, size_t first, size_t count)
{
    const int64_t *x = in;
    int64_t *y = out;
    (void)is;
    (void)os;
    for (size_t k = 0; k < count; k++) {
        if (first + k == 12) {
            signal(SIGSEGV, SIG_DFL);    /* as task_segv: past a sanitizer's handler */
            raise(SIGSEGV);
        }
        y[k] = x[k] * x[k];
    }
    return 0;
}

PTEST(map_chunks_reports_crashed_chunk, .timeout = TEST_TIMEOUT)
{
    enum { N = 40, CHUNK = 8 };
    cf_executor *ex = pool_start(2);
    int64_t in[N], out[N];
    int status[N];
    cf_map_options mo = { .chunksize = CHUNK, .status = status };

    for (int i = 0; i < N; i++) {
        in[i] = i;
        out[i] = -1;
    }
    cr_assert_eq(cf_map_chunks(ex, chunk_segv_at_12, in, sizeof *in, out, sizeof *out, N, &mo), CF_ECRASHED);
    for (int i = 0; i < N; i++) {
        bool lost = i / CHUNK == 12 / CHUNK;
        cr_assert_eq(status[i], lost ? CF_ECRASHED : 0, "status[%d]: %d", i, status[i]);
        /* Heap arrays: nothing of the crashed chunk is copied back. */
        cr_assert_eq(out[i], lost ? -1 : (int64_t)i * i, "element %d", i);
    }
    assert_pool_works(ex);
    cf_executor_free(ex);
}

/* ---- task_timeout_ms, cancel, recycling ------------------------------------------ */

PTEST(task_timeout_kills_overrunning_task, .timeout = TEST_TIMEOUT)
{
    cf_options opts = { .workers = 2, .task_timeout_ms = 200 };
    cf_executor *ex = pool_with(&opts);
    cf_future *slow = submit_gated(ex, 0);
    cf_future *quick[4];
    int g = -1, rc;

    for (int i = 0; i < 4; i++)
        quick[i] = submit_square(ex, i);
    rc = cf_future_result(slow, &g, sizeof g, -1);
    cr_assert_eq(rc, CF_ETIMEDOUT, "an overrunning task: %s", cf_strerror(rc));
    cr_assert_eq(g, -1);
    cr_assert(cf_future_done(slow));
    cr_assert_eq(cf_future_wait(slow, 0), 0);
    for (int i = 0; i < 4; i++) {
        assert_square(quick[i], i);
        cf_future_free(quick[i]);
    }
    assert_pool_works(ex);
    cr_assert_eq(cf_executor_workers(ex), 2);
    probe_open(probe, 0);
    cf_future_free(slow);
    cf_executor_free(ex);
}

PTEST(cancel_running_task_replaces_worker, .timeout = TEST_TIMEOUT)
{
    cf_executor *ex = pool_start(2);
    cf_future *f = submit_gated(ex, 0), *again[2];
    pid_t victim;
    int g = -1;

    cr_assert(wait_at_least(&probe->started, 1, POLL_MAX_MS));
    victim = load_int(&probe->pid[0]);
    cr_assert_gt(victim, 0, "the gated task recorded pid %d", (int)victim);
    cr_assert(wait_future_running(f));
    cr_assert_eq(cf_future_cancel(f), 0);
    cr_assert(cf_future_cancelled(f));
    cr_assert_eq(cf_future_result(f, &g, sizeof g, -1), CF_ECANCELED);
    cr_assert(wait_process_gone(victim), "the cancelled task's worker %d still exists",
              (int)victim);

    again[0] = submit_gated(ex, 1);
    again[1] = submit_gated(ex, 2);
    cr_assert(wait_at_least(&probe->started, 3, POLL_MAX_MS), "two workers are not running again");
    cr_assert_neq(load_int(&probe->pid[1]), victim);
    cr_assert_neq(load_int(&probe->pid[2]), victim);
    cr_assert_neq(load_int(&probe->pid[1]), load_int(&probe->pid[2]));
    probe_open_all(probe);
    cr_assert_eq(cf_wait(again, 2, CF_ALL_COMPLETED, -1), 0);
    assert_pool_works(ex);
    cr_assert_eq(cf_executor_workers(ex), 2);
    cf_future_free(again[0]);
    cf_future_free(again[1]);
    cf_future_free(f);
    cf_executor_free(ex);
}

PTEST(max_tasks_per_worker_recycles, .timeout = TEST_TIMEOUT)
{
    enum { N = 10 };
    cf_options opts = { .workers = 1, .max_tasks_per_worker = 3 };
    cf_executor *ex = pool_with(&opts);
    cf_future *fs[N];
    int pids[N], distinct = 0;

    for (int64_t i = 0; i < N; i++)
        fs[i] = submit(ex, task_pid_square, &i, sizeof i, sizeof(struct pid_square));
    for (int i = 0; i < N; i++) {
        struct pid_square r = { 0, 0 };
        cr_assert_eq(cf_future_result(fs[i], &r, sizeof r, -1), 0, "task %d", i);
        cr_assert_eq(r.square, (int64_t)i * i);
        pids[i] = r.pid;
        cf_future_free(fs[i]);
    }
    for (int i = 0; i < N; i++) {
        int uses = 0, first = 1;
        for (int j = 0; j < N; j++) {
            uses += pids[j] == pids[i];
            if (j < i && pids[j] == pids[i])
                first = 0;
        }
        cr_assert_leq(uses, 3, "worker %d ran %d tasks", pids[i], uses);
        distinct += first;
    }
    cr_assert_geq(distinct, 4, "only %d workers ran 10 tasks", distinct);
    cf_executor_free(ex);
}

/* ---- A worker calling into the pools of its caller ------------------------------------- */

/*
 * A fork worker is a copy of the caller: it can reach the caller's pools and
 * futures, as copies. Every call it makes on them must answer CF_EOWNER (or
 * do nothing, for the void ones) and leave the real pools alone.
 */
enum { REENTRY_CALLS = 12 };

struct reentry {
    cf_executor *own;                  /* the pool the task runs on, set once it exists */
    cf_executor *older;                /* a pool created before it */
    cf_future   *other;                /* a running task of the older pool */
    int          rc[REENTRY_CALLS];    /* what each call answered in the worker */
    int          calls_done;
};

static struct reentry *reentry;        /* set before the pools: the workers inherit it */

static int chunk_nothing(const void *in, size_t is, void *out, size_t os, size_t first, size_t count)
{
    (void)in; (void)is; (void)out; (void)os; (void)first; (void)count;
    return 0;
}

static void cb_nothing(cf_future *f, void *ctx)
{
    (void)f;
    (void)ctx;
}

/* Makes every call on the pools it can reach, then blocks on gate *arg. */
static int task_reenter(const void *arg, size_t as, void *res, size_t rs)
{
    struct reentry *r = reentry;
    cf_executor *own = r->own;
    cf_future *f = untouched(), *fs[1] = { r->other };
    bool seen[1] = { false };
    int64_t x = 3, y = 0;
    int k = 0, g = -1, gate = 0;

    (void)res;
    (void)rs;
    if (as == sizeof gate)
        memcpy(&gate, arg, sizeof gate);
    r->rc[k++] = cf_submit(own, task_square, &x, sizeof x, sizeof x, &f);
    r->rc[k++] = f == untouched() ? CF_EOWNER : 1;
    r->rc[k++] = cf_map(own, task_square, &x, sizeof x, &y, sizeof y, 1, NULL);
    r->rc[k++] = cf_map_chunks(own, chunk_nothing, &x, sizeof x, &y, sizeof y, 1, NULL);
    r->rc[k++] = cf_shutdown(own, false, true);
    r->rc[k++] = cf_future_cancel(r->other);
    r->rc[k++] = cf_future_wait(r->other, 0);
    r->rc[k++] = cf_future_result(r->other, &g, sizeof g, 0);
    r->rc[k++] = cf_future_running(r->other) ? 1 : CF_EOWNER;
    r->rc[k++] = cf_future_add_done_callback(r->other, cb_nothing, NULL);
    r->rc[k++] = cf_wait(fs, 1, CF_ALL_COMPLETED, 0);
    r->rc[k++] = cf_as_completed(fs, 1, seen, 0);
    cf_future_free(r->other);
    cf_executor_free(r->older);
    cf_executor_free(own);             /* returns at once, the pool untouched */
    store_int(&r->calls_done, 1);
    return probe_gate_pass(probe, gate) ? 0 : CODE_STUCK;
}

/* An older pool with a running task, then the pool under test: writes both to reentry. */
static cf_executor *reentry_pools(const cf_options *opts)
{
    reentry = cf_shared_alloc(sizeof *reentry);
    cr_assert_not_null(reentry);
    reentry->older = pool_start(1);
    reentry->other = submit_gated(reentry->older, 7);
    cr_assert(wait_at_least(&probe->started, 1, POLL_MAX_MS));
    reentry->own = pool_with(opts);
    return reentry->own;
}

static void reentry_check(void)
{
    static const char *const what[REENTRY_CALLS] = {
        "cf_submit", "cf_submit's *out", "cf_map", "cf_map_chunks", "cf_shutdown",
        "cf_future_cancel", "cf_future_wait", "cf_future_result", "cf_future_running",
        "cf_future_add_done_callback", "cf_wait", "cf_as_completed",
    };
    cr_assert(wait_at_least(&reentry->calls_done, 1, POLL_MAX_MS), "the task's calls did not return");
    for (int k = 0; k < REENTRY_CALLS; k++)
        cr_assert_eq(reentry->rc[k], CF_EOWNER, "%s in a worker answered %d (%s)", what[k],
                     reentry->rc[k], cf_strerror(reentry->rc[k]));
}

/* The older pool's task was left alone, and both pools still work. */
static void reentry_finish(void)
{
    int g = -1;
    cr_assert(cf_future_running(reentry->other), "the older pool's task stopped running");
    probe_open(probe, 7);
    cr_assert_eq(cf_future_result(reentry->other, &g, sizeof g, -1), 0);
    cr_assert_eq(g, 7);
    assert_pool_works(reentry->own);
    assert_pool_works(reentry->older);
    cf_future_free(reentry->other);
    cf_executor_free(reentry->own);
    cf_executor_free(reentry->older);
    cf_shared_free(reentry, sizeof *reentry);
    reentry = NULL;
}

PTEST(worker_calls_on_its_own_pool_answer_eowner_and_timeouts_still_fire, .timeout = TEST_TIMEOUT)
{
    cf_options opts = { .workers = 2, .task_timeout_ms = 300 };
    cf_executor *ex = reentry_pools(&opts);
    int gate = 0;
    cf_future *f = submit(ex, task_reenter, &gate, sizeof gate, 0);

    int rc = cf_future_wait(f, POLL_MAX_MS);
    cr_assert_eq(rc, 0, "task_timeout_ms never stopped the task: %s", cf_strerror(rc));
    cr_assert_eq(cf_future_result(f, NULL, 0, 0), CF_ETIMEDOUT);
    reentry_check();
    cf_future_free(f);
    reentry_finish();
}

PTEST(worker_calls_on_its_own_pool_answer_eowner_and_cancel_still_kills, .timeout = TEST_TIMEOUT)
{
    cf_options opts = { .workers = 2 };
    cf_executor *ex = reentry_pools(&opts);
    int gate = 0;
    cf_future *f = submit(ex, task_reenter, &gate, sizeof gate, 0);

    reentry_check();
    cr_assert(wait_at_least(&probe->started, 2, POLL_MAX_MS), "the task never reached its gate");
    pid_t victim = load_int(&probe->pid[1]);
    cr_assert_eq(cf_future_cancel(f), 0);
    cr_assert(wait_process_gone(victim), "the cancelled task's worker %d still exists",
              (int)victim);
    cr_assert_eq(cf_future_result(f, NULL, 0, -1), CF_ECANCELED);
    cf_future_free(f);
    reentry_finish();
}

/* ---- Replacement workers ------------------------------------------------------------ */

PTEST(replacement_runs_initializer_with_same_id, .timeout = TEST_TIMEOUT)
{
    struct initargs ia = { 0xC0FFEE, "initargs" };
    cf_options opts = {
        .workers = 2, .initializer = init_record, .initargs = &ia, .initargs_size = sizeof ia,
    };
    cf_executor *ex = pool_with(&opts);
    cf_future *bad, *fill[2];
    int crashed_id, ids = 0;

    cr_assert_eq(load_int(&probe->inits), 2);
    memset(&ia, 0, sizeof ia);             /* initargs were copied at creation */
    bad = submit(ex, task_segv_noting_wid, NULL, 0, sizeof(int64_t));
    assert_crashed(bad, SIGSEGV);
    crashed_id = load_int(&probe->value) - 1000;
    cr_assert(crashed_id == 0 || crashed_id == 1, "the crashed task ran on worker %d", crashed_id);

    assert_pool_works(ex);
    cr_assert(wait_at_least(&probe->inits, 3, POLL_MAX_MS), "no initializer ran in the replacement");
    cr_assert_eq(load_int(&probe->inits), 3);
    cr_assert_eq(load_int(&probe->init_bad), 0, "a replacement saw wrong initargs");
    cr_assert_eq(load_int(&probe->init_wid[2]), crashed_id,
                 "the replacement took id %d, the dead worker had %d",
                 load_int(&probe->init_wid[2]), crashed_id);
    cr_assert_neq(load_int(&probe->init_pid[2]), load_int(&probe->init_pid[0]));
    cr_assert_neq(load_int(&probe->init_pid[2]), load_int(&probe->init_pid[1]));

    fill[0] = submit_gated(ex, 0);
    fill[1] = submit_gated(ex, 1);
    cr_assert(wait_at_least(&probe->started, 2, POLL_MAX_MS));
    for (int k = 0; k < 2; k++) {
        int id = load_int(&probe->wid[k]);
        cr_assert(id == 0 || id == 1, "worker id %d", id);
        ids |= 1 << id;
    }
    cr_assert_eq(ids, 3, "the two workers do not hold ids 0 and 1");
    probe_open_all(probe);
    cr_assert_eq(cf_wait(fill, 2, CF_ALL_COMPLETED, -1), 0);
    cf_future_free(fill[0]);
    cf_future_free(fill[1]);
    cf_future_free(bad);
    cf_executor_free(ex);
}

/* The first run returns 0; every later one ends its worker: arg 0 exits, 1 aborts. */
static int init_dies_after_the_first(const void *arg, size_t as)
{
    int how;
    if (as != sizeof how)
        return CODE_STUCK;
    memcpy(&how, arg, sizeof how);
    if (add_int(&probe->inits, 1) == 0)
        return 0;
    if (how == 0)
        _exit(3);
    struct sigaction dfl = { .sa_handler = SIG_DFL };    /* the kernel's, not a sanitizer's */
    sigaction(SIGABRT, &dfl, NULL);
    raise(SIGABRT);
    return CODE_STUCK;
}

/*
 * A replacement whose initializer now always dies (it exits, or crashes,
 * before it returns) is started again a few times, then not: the pool,
 * left with no worker, is broken, and the task waiting for one ends with
 * CF_EBROKEN. It once forked replacements without end (thousands a
 * second), and the task, and cf_executor_free, waited for ever. (A SIGKILL
 * while starting is not counted: test-chaos kills starting workers.)
 */
PTEST(replacements_that_die_starting_are_given_up, .timeout = TEST_TIMEOUT)
{
    for (int how = 0; how < 2; how++) {
        store_int(&probe->inits, 0);
        cf_options opts = { .workers = 1, .initializer = init_dies_after_the_first,
                            .initargs = &how, .initargs_size = sizeof how };
        cf_executor *ex = pool_with(&opts);
        cf_future *bad = submit(ex, task_segv_noting_wid, NULL, 0, sizeof(int64_t));
        assert_crashed(bad, SIGSEGV);
        cf_future_free(bad);
        int64_t y;
        cf_future *f = submit(ex, task_segv_noting_wid, NULL, 0, sizeof y);
        int rc = cf_future_result(f, &y, sizeof y, POLL_MAX_MS);
        cr_assert_eq(rc, CF_EBROKEN, "%s: a task with no worker left: %s (%d), after %d initializer runs",
                     how == 0 ? "exit" : "SIGABRT", cf_strerror(rc), rc, load_int(&probe->inits));
        int runs = load_int(&probe->inits);
        cr_assert(runs >= 2 && runs <= 8, "%d initializer runs for one worker", runs);
        cf_future_free(f);
        cf_executor_free(ex);
    }
}

/* ---- Parent death ----------------------------------------------------------------- */

/*
 * The intermediate process: creates a pool of two workers, optionally
 * makes one of them busy with a task that never ends on its own, reports
 * the worker pids through fd, then waits to be killed.
 */
static _Noreturn void run_doomed_parent(int fd, bool busy)
{
    struct initargs ia = { 0xC0FFEE, "initargs" };
    cf_options opts = {
        .workers = 2, .initializer = init_record, .initargs = &ia, .initargs_size = sizeof ia,
    };
    cf_executor *ex = NULL;
    cf_future *f = NULL;
    int pids[2];

    if (cf_process_pool_new(&ex, &opts) != 0)
        _exit(1);
    if (busy) {
        int gate = 0;
        if (cf_submit(ex, task_gated, &gate, sizeof gate, 0, &f) != 0 ||
            !wait_at_least(&probe->started, 1, POLL_MAX_MS))
            _exit(2);
    }
    pids[0] = load_int(&probe->init_pid[0]);
    pids[1] = load_int(&probe->init_pid[1]);
    if (write(fd, pids, sizeof pids) != (ssize_t)sizeof pids)
        _exit(3);
    for (;;)
        pause();
}

/* Reaps pid (an orphan reparented to us) if it has exited. */
static bool orphan_exited(pid_t pid)
{
    int st;
    pid_t r = waitpid(pid, &st, WNOHANG);
    if (r == pid)
        return true;
    return r < 0 && process_gone(pid);
}

/* Polls every pid in one bounded loop; gone[k] tells which have exited. */
static void wait_orphans_exit(const int *pids, bool *gone, int n)
{
    for (int ms = 0; ms <= POLL_MAX_MS; ms += 5) {
        int left = 0;
        for (int k = 0; k < n; k++) {
            if (!gone[k])
                gone[k] = orphan_exited(pids[k]);
            left += !gone[k];
        }
        if (left == 0)
            return;
        sleep_ms(5);
    }
}

static void check_parent_death(bool busy)
{
    int fds[2], pids[2] = { 0, 0 }, st = 0;
    bool reported, gone[2] = { false, false };
    pid_t parent;

    cr_assert_eq(prctl(PR_SET_CHILD_SUBREAPER, 1), 0);
    cr_assert_eq(pipe(fds), 0);
    parent = fork();
    cr_assert_geq(parent, 0);
    if (parent == 0) {
        close(fds[0]);
        run_doomed_parent(fds[1], busy);
    }
    close(fds[1]);
    reported = read_full(fds[0], pids, sizeof pids);
    close(fds[0]);
    kill(parent, SIGKILL);
    waitpid(parent, &st, 0);
    cr_assert(reported, "the intermediate process failed (status %d)", st);
    cr_assert(pids[0] > 0 && pids[1] > 0 && pids[0] != pids[1]);

    wait_orphans_exit(pids, gone, 2);
    for (int k = 0; k < 2; k++)
        if (!gone[k]) {
            kill(pids[k], SIGKILL);
            waitpid(pids[k], &st, 0);
        }
    for (int k = 0; k < 2; k++)
        cr_assert(gone[k], "worker %d outlived its parent%s", pids[k],
                  busy ? " (it was running a task)" : "");
}

PTEST(parent_death_leaves_no_idle_worker, .timeout = TEST_TIMEOUT)
{
    check_parent_death(false);
}

PTEST(parent_death_leaves_no_busy_worker, .timeout = TEST_TIMEOUT)
{
    check_parent_death(true);
}

/* ---- Nothing left behind ------------------------------------------------------------- */

static void list_shm(char *buf, size_t size)
{
    DIR *d = opendir("/dev/shm");
    struct dirent *e;
    size_t used = 0;

    buf[0] = '\0';
    if (d == NULL)
        return;
    while ((e = readdir(d)) != NULL) {
        int w;
        if (e->d_name[0] == '.')
            continue;
        w = snprintf(buf + used, size - used, "/%s/", e->d_name);
        if (w < 0 || (size_t)w >= size - used)
            break;
        used += (size_t)w;
    }
    closedir(d);
}

/* An entry of /dev/shm now present that was not in `before`, or NULL. */
static const char *new_shm_entry(const char *before, char *now, size_t size)
{
    char *name, *save = NULL;
    static char found[256];

    list_shm(now, size);
    for (name = strtok_r(now, "/", &save); name; name = strtok_r(NULL, "/", &save)) {
        char key[300];
        snprintf(key, sizeof key, "/%s/", name);
        if (strstr(before, key) == NULL) {
            snprintf(found, sizeof found, "%s", name);
            return found;
        }
    }
    return NULL;
}

/* Other suites run in parallel may own a new entry for a while: let them end. */
static const char *lasting_new_shm_entry(const char *before)
{
    char now[4096];
    const char *name = NULL;
    for (int ms = 0; ms < 3000; ms += 10) {
        if ((name = new_shm_entry(before, now, sizeof now)) == NULL)
            return NULL;
        sleep_ms(10);
    }
    return name;
}

/* What a pool could leave behind: the census of tests/helpers.h, and names in /dev/shm. */
struct leftovers {
    struct census census;
    char          shm_names[4096];
};

static void leftovers_take(struct leftovers *l)
{
    census_take(&l->census);
    cr_assert(l->census.fds > 0 && l->census.threads > 0 && l->census.children >= 0 &&
              l->census.shared_maps >= 0, "/proc/self cannot be read");
    list_shm(l->shm_names, sizeof l->shm_names);
}

static void assert_no_leftovers(const struct leftovers *before)
{
    char msg[256];
    const char *leak;

    cr_assert(census_same(&before->census, msg, sizeof msg), "left behind: %s", msg);
    leak = lasting_new_shm_entry(before->shm_names);
    cr_assert_null(leak, "/dev/shm/%s was left behind", leak);
}

PTEST(free_leaves_nothing_behind, .timeout = TEST_TIMEOUT)
{
    struct leftovers before;
    cf_executor *ex;

    leftovers_take(&before);
    ex = pool_start(2);
    assert_pool_works(ex);
    cf_executor_free(ex);
    assert_no_leftovers(&before);
}

static int task_sleep_long(const void *arg, size_t as, void *res, size_t rs)
{
    (void)arg; (void)as; (void)res; (void)rs;
    sleep_ms(GATE_MAX_MS);
    return CODE_STUCK;
}

/* Crashes, a cancel and recycling all replace workers. */
PTEST(free_after_crashes_leaves_nothing_behind, .timeout = SLOW_TIMEOUT)
{
    struct leftovers before;
    cf_options opts = { .workers = 2, .max_tasks_per_worker = 2 };
    cf_executor *ex;
    cf_future *fs[3];

    leftovers_take(&before);
    ex = pool_with(&opts);
    fs[0] = submit(ex, task_segv, NULL, 0, 0);
    fs[1] = submit(ex, task_abort, NULL, 0, 0);
    fs[2] = submit(ex, task_sleep_long, NULL, 0, 0);
    cr_assert(wait_future_running(fs[2]));
    cr_assert_eq(cf_future_cancel(fs[2]), 0);
    cr_assert_eq(cf_future_result(fs[0], NULL, 0, -1), CF_ECRASHED);
    cr_assert_eq(cf_future_result(fs[1], NULL, 0, -1), CF_ECRASHED);
    cr_assert_eq(cf_future_result(fs[2], NULL, 0, -1), CF_ECANCELED);
    assert_pool_works(ex);
    cf_executor_free(ex);
    for (int i = 0; i < 3; i++)
        cf_future_free(fs[i]);
    assert_no_leftovers(&before);
}

PTEST(free_after_timeouts_leaves_nothing_behind, .timeout = SLOW_TIMEOUT)
{
    struct leftovers before;
    cf_options opts = { .workers = 2, .task_timeout_ms = 300 };
    cf_executor *ex;
    cf_future *fs[2];

    leftovers_take(&before);
    ex = pool_with(&opts);
    fs[0] = submit(ex, task_sleep_long, NULL, 0, 0);
    fs[1] = submit(ex, task_sleep_long, NULL, 0, 0);
    cr_assert_eq(cf_future_result(fs[0], NULL, 0, -1), CF_ETIMEDOUT);
    cr_assert_eq(cf_future_result(fs[1], NULL, 0, -1), CF_ETIMEDOUT);
    assert_pool_works(ex);
    cf_executor_free(ex);
    cf_future_free(fs[0]);
    cf_future_free(fs[1]);
    assert_no_leftovers(&before);
}

/* ---- Large arguments and results ----------------------------------------------------- */

static void check_big_argument(size_t size)
{
    cf_executor *ex = pool_start(2);
    unsigned char *buf = malloc(size);
    uint64_t want, got = 0;
    cf_future *f;

    cr_assert_not_null(buf);
    for (size_t j = 0; j < size; j++)
        buf[j] = pattern_byte(j);
    want = fnv1a(buf, size);
    f = submit(ex, task_checksum, buf, size, sizeof got);
    memset(buf, 0, size);
    cr_assert_eq(cf_future_result(f, &got, sizeof got, -1), 0);
    cr_assert_eq(got, want, "checksum of a %zu-byte argument", size);
    cf_future_free(f);
    free(buf);
    cf_executor_free(ex);
}

PTEST(argument_of_4_mib, .timeout = TEST_TIMEOUT)
{
    check_big_argument((size_t)4 << 20);
}

PTEST(argument_of_32_mib, .timeout = SLOW_TIMEOUT)
{
    check_big_argument((size_t)32 << 20);
}

PTEST(result_of_8_mib, .timeout = TEST_TIMEOUT)
{
    const size_t size = (size_t)8 << 20;
    cf_executor *ex = pool_start(2);
    unsigned char *buf = calloc(1, size);
    cf_future *f = submit(ex, task_big_result, NULL, 0, size);

    cr_assert_not_null(buf);
    cr_assert_eq(cf_future_result(f, buf, size, -1), 0);
    for (size_t j = 0; j < size; j++)
        cr_assert_eq(buf[j], pattern_byte(j), "byte %zu", j);
    cf_future_free(f);
    free(buf);
    cf_executor_free(ex);
}

PTEST(absurd_sizes_are_too_big, .timeout = TEST_TIMEOUT)
{
    cf_executor *ex = pool_start(1);
    cf_future *sentinel = untouched(), *f = sentinel;
    int64_t x = 3, out[2];
    int status[2] = { 7, 7 }, rc;
    cf_map_options mo = { .status = status };

    cr_assert_eq(cf_submit(ex, task_square, &x, (size_t)1 << 40, sizeof x, &f), CF_E2BIG);
    cr_assert_eq(cf_submit(ex, task_square, &x, SIZE_MAX / 2, sizeof x, &f), CF_E2BIG);
    cr_assert_eq(cf_submit(ex, task_square, &x, sizeof x, (size_t)1 << 40, &f), CF_E2BIG);
    cr_assert_eq(cf_submit(ex, task_square, &x, sizeof x, SIZE_MAX / 2, &f), CF_E2BIG);
    cr_assert_eq(f, sentinel, "a refused cf_submit wrote *out");
    cr_assert_eq(cf_map(ex, task_square, &x, (size_t)1 << 40, out, sizeof x, 1, &mo), CF_E2BIG);
    cr_assert_eq(cf_map(ex, task_square, &x, sizeof x, out, SIZE_MAX / 2, 1, &mo), CF_E2BIG);
    rc = cf_map(ex, task_square, &x, sizeof x, out, sizeof x, SIZE_MAX / 4, &mo);
    cr_assert(rc == CF_E2BIG || rc == CF_EINVAL, "n * size overflows: %s", cf_strerror(rc));
    assert_pool_works(ex);
    cf_executor_free(ex);
}

/* ---- Globals and shared memory: the lesson ---------------------------------------------- */

PTEST(task_globals_stay_in_the_worker, .timeout = TEST_TIMEOUT)
{
    cf_executor *ex = pool_start(1);
    cf_future *f = submit(ex, task_write_global, NULL, 0, sizeof(int));
    int seen_by_task = 0;

    cr_assert_eq(cf_future_result(f, &seen_by_task, sizeof seen_by_task, -1), 0);
    cr_assert_eq(seen_by_task, 2);
    cr_assert_eq(load_int(&probe->value), 2, "shared memory written by a task was not seen");
    cr_assert_eq(plain_global, 1, "a global written by a task reached the caller");
    cf_future_free(f);
    cf_executor_free(ex);
}

PTEST(caller_globals_after_creation_stay_in_the_caller, .timeout = TEST_TIMEOUT)
{
    cf_executor *ex = pool_start(1);
    cf_future *f;
    int seen_by_task = 0;

    plain_global = 5;
    f = submit(ex, task_read_global, NULL, 0, sizeof(int));
    cr_assert_eq(cf_future_result(f, &seen_by_task, sizeof seen_by_task, -1), 0);
    cr_assert_eq(seen_by_task, 1, "a worker saw a global the caller changed after pool creation");
    cf_future_free(f);
    cf_executor_free(ex);
}

/* ---- SIGINT ---------------------------------------------------------------------- */

/*
 * Whether sig is pending for pid (its main thread's set or the process's,
 * in /proc/pid/status). A process that is gone or dying has nothing pending.
 */
static bool signal_pending(pid_t pid, int sig)
{
    char path[64], line[256], state = 'R';
    unsigned long long mask;
    bool pending = false;
    FILE *fp;

    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    if ((fp = fopen(path, "r")) == NULL)
        return false;
    while (fgets(line, sizeof line, fp) != NULL) {
        if (sscanf(line, "State: %c", &state) == 1)
            continue;
        if ((sscanf(line, "SigPnd: %llx", &mask) == 1 || sscanf(line, "ShdPnd: %llx", &mask) == 1) &&
            (mask >> (sig - 1) & 1))
            pending = true;
    }
    fclose(fp);
    return pending && state != 'Z' && state != 'X';
}

/*
 * Sends sig to pid and waits until the signal has been taken, instead of
 * sleeping for a while: an ignored signal is discarded as kill() sends it,
 * a fatal one starts the process's exit there; one with a handler stays
 * pending until the handler runs, a blocked one until it is unblocked.
 */
static void send_and_wait_taken(pid_t pid, int sig)
{
    cr_assert_eq(kill_one(pid, sig), 0, "kill(%d, %d): %s", (int)pid, sig, strerror(errno));
    for (int ms = 0; signal_pending(pid, sig); ms++) {
        cr_assert_lt(ms, POLL_MAX_MS, "signal %d stays pending in worker %d (blocked?)", sig, (int)pid);
        sleep_ms(1);
    }
}

PTEST(busy_worker_ignores_sigint, .timeout = TEST_TIMEOUT)
{
    cf_executor *ex = pool_start(1);
    cf_future *f = submit_gated(ex, 0);
    int g = -1;

    cr_assert(wait_at_least(&probe->started, 1, POLL_MAX_MS));
    send_and_wait_taken(load_int(&probe->pid[0]), SIGINT);
    probe_open(probe, 0);
    cr_assert_eq(cf_future_result(f, &g, sizeof g, -1), 0, "a worker died of SIGINT");
    cr_assert_eq(g, 0);
    cr_assert_eq(cf_future_signal(f), 0);
    cf_future_free(f);
    cf_executor_free(ex);
}

PTEST(idle_worker_ignores_sigint, .timeout = TEST_TIMEOUT)
{
    cf_executor *ex = pool_start(1);
    struct pid_square first = { 0, 0 }, second = { 0, 0 };
    int64_t x = 7;
    cf_future *f = submit(ex, task_pid_square, &x, sizeof x, sizeof first);

    cr_assert_eq(cf_future_result(f, &first, sizeof first, -1), 0);
    cf_future_free(f);
    send_and_wait_taken(first.pid, SIGINT);
    f = submit(ex, task_pid_square, &x, sizeof x, sizeof second);
    cr_assert_eq(cf_future_result(f, &second, sizeof second, -1), 0);
    cr_assert_eq(second.square, 49);
    cr_assert_eq(second.pid, first.pid, "the worker was replaced after SIGINT");
    cr_assert_not(process_gone(first.pid));
    cf_future_free(f);
    cf_executor_free(ex);
}

/* ---- CF_START_EXEC ------------------------------------------------------------------ */

/* Gives an exec worker the probe's address, which it cannot inherit. */
static int init_exec_probe(const void *arg, size_t as)
{
    if (as != sizeof probe)
        return CODE_BADSIZE;
    memcpy(&probe, arg, sizeof probe);
    add_int(&probe->inits, 1);
    return 0;
}

static cf_executor *exec_pool_start(unsigned workers)
{
    cf_options opts = {
        .workers = workers, .start = CF_START_EXEC,
        .initializer = init_exec_probe, .initargs = &probe, .initargs_size = sizeof probe,
    };
    cf_executor *ex;

    skip_exec_under_valgrind(POOL_EXEC);
    ex = pool_with(&opts);
    cr_assert_eq(load_int(&probe->inits), (int)workers, "exec workers did not all initialize");
    return ex;
}

static int task_fd_open(const void *arg, size_t as, void *res, size_t rs)
{
    int fd, open_in_worker;
    if (as != sizeof fd || rs != sizeof open_in_worker)
        return CODE_BADSIZE;
    memcpy(&fd, arg, sizeof fd);
    open_in_worker = fcntl(fd, F_GETFD) != -1;
    memcpy(res, &open_in_worker, sizeof open_in_worker);
    return 0;
}

PTEST(exec_runs_tasks_and_maps, .timeout = TEST_TIMEOUT)
{
    enum { N = 5000 };
    cf_executor *ex = exec_pool_start(2);
    int64_t *in = malloc(N * sizeof *in), *out = malloc(N * sizeof *out);

    cr_assert(in && out);
    assert_pool_works(ex);
    for (int i = 0; i < N; i++)
        in[i] = i;
    cr_assert_eq(cf_map(ex, task_square, in, sizeof *in, out, sizeof *out, N, NULL), 0);
    for (int i = 0; i < N; i++)
        cr_assert_eq(out[i], (int64_t)i * i, "element %d", i);
    cr_assert_eq(cf_executor_workers(ex), 2);
    free(in);
    free(out);
    cf_executor_free(ex);
}

PTEST(exec_worker_shares_memory_not_globals, .timeout = TEST_TIMEOUT)
{
    cf_executor *ex;
    cf_future *f;
    int seen_by_task = 0;

    plain_global = 7;                  /* before the pool: a fork would see it */
    ex = exec_pool_start(1);
    f = submit(ex, task_read_global, NULL, 0, sizeof(int));
    cr_assert_eq(cf_future_result(f, &seen_by_task, sizeof seen_by_task, -1), 0);
    cr_assert_eq(seen_by_task, 1, "an exec worker saw the caller's memory");
    cf_future_free(f);

    f = submit(ex, task_write_global, NULL, 0, sizeof(int));
    cr_assert_eq(cf_future_result(f, &seen_by_task, sizeof seen_by_task, -1), 0);
    cr_assert_eq(load_int(&probe->value), 2, "shared memory written by an exec task was not seen");
    cr_assert_eq(plain_global, 7);
    cf_future_free(f);
    cf_executor_free(ex);
}

PTEST(fork_worker_sees_globals_set_before_creation, .timeout = TEST_TIMEOUT)
{
    cf_executor *ex;
    cf_future *f;
    int seen_by_task = 0;

    plain_global = 7;
    ex = pool_start(1);
    f = submit(ex, task_read_global, NULL, 0, sizeof(int));
    cr_assert_eq(cf_future_result(f, &seen_by_task, sizeof seen_by_task, -1), 0);
    cr_assert_eq(seen_by_task, 7, "a fork worker did not inherit the caller's memory");
    cf_future_free(f);
    cf_executor_free(ex);
}

PTEST(exec_worker_inherits_no_descriptor, .timeout = TEST_TIMEOUT)
{
    int fd = open("/dev/null", O_RDONLY);      /* deliberately not close-on-exec */
    int open_in_worker = -1;
    cf_executor *ex;
    cf_future *f;

    cr_assert_geq(fd, 0);
    ex = exec_pool_start(1);
    f = submit(ex, task_fd_open, &fd, sizeof fd, sizeof open_in_worker);
    cr_assert_eq(cf_future_result(f, &open_in_worker, sizeof open_in_worker, -1), 0);
    cr_assert_eq(open_in_worker, 0, "an exec worker inherited the caller's descriptor %d", fd);
    cf_future_free(f);
    cf_executor_free(ex);
    close(fd);
}

PTEST(exec_crashes_are_isolated_and_replaced, .timeout = SLOW_TIMEOUT)
{
    cf_executor *ex = exec_pool_start(2);
    cf_future *bad[3], *good[3];
    static const int sigs[] = { SIGSEGV, SIGABRT, SIGKILL };

    bad[0] = submit(ex, task_segv, NULL, 0, sizeof(int64_t));
    bad[1] = submit(ex, task_abort, NULL, 0, sizeof(int64_t));
    bad[2] = submit(ex, task_sigkill, NULL, 0, sizeof(int64_t));
    for (int i = 0; i < 3; i++)
        good[i] = submit_square(ex, i);
    for (int i = 0; i < 3; i++) {
        assert_crashed(bad[i], sigs[i]);
        assert_square(good[i], i);
        cf_future_free(bad[i]);
        cf_future_free(good[i]);
    }
    assert_pool_works(ex);
    cr_assert(wait_at_least(&probe->inits, 5, POLL_MAX_MS), "replacements did not run the initializer");
    cr_assert_eq(cf_executor_workers(ex), 2);
    cf_executor_free(ex);
}

PTEST(exec_free_leaves_nothing_behind, .timeout = TEST_TIMEOUT)
{
    struct leftovers before;
    cf_executor *ex;
    cf_future *f;

    leftovers_take(&before);
    ex = exec_pool_start(2);
    assert_pool_works(ex);
    f = submit(ex, task_abort, NULL, 0, 0);
    cr_assert_eq(cf_future_result(f, NULL, 0, -1), CF_ECRASHED);
    cf_future_free(f);
    cf_executor_free(ex);
    assert_no_leftovers(&before);
}

/* Sleeps 2 ms (so that every worker gets some of a batch), then writes its worker id. */
static int task_sleep_ms_worker_id(const void *arg, size_t as, void *res, size_t rs)
{
    sleep_ms(2);
    return task_worker_id(arg, as, res, rs);
}

/*
 * A pool that grows takes worker ids it never used: their entries in the
 * pool's table must say "no descriptor" before the zygote reports their
 * birth, when the pool closes the old descriptor of the id to keep the new
 * one. An entry left zero named descriptor 0, and the caller's standard
 * input was closed under it.
 */
PTEST(growing_the_pool_closes_no_descriptor_of_the_caller, .timeout = TEST_TIMEOUT)
{
    if (fcntl(0, F_GETFD) < 0) {
        int fd = open("/dev/null", O_RDONLY);
        cr_assert(fd >= 0);
        if (fd != 0) {
            cr_assert_eq(dup2(fd, 0), 0);
            close(fd);
        }
    }
    struct stat before, after;
    cr_assert_eq(fstat(0, &before), 0);

    cf_executor *ex = pool_start(1);
    cr_assert_eq(cf_executor_resize(ex, 3), 0);
    bool seen[3] = {false, false, false};
    uint64_t end = now_ms() + (uint64_t)POLL_MAX_MS;
    while (!(seen[1] && seen[2]) && now_ms() < end) {
        cf_future *f[6];
        for (int i = 0; i < 6; i++)
            f[i] = submit(ex, task_sleep_ms_worker_id, NULL, 0, sizeof(int));
        for (int i = 0; i < 6; i++) {
            int id = -1;
            cr_assert_eq(cf_future_result(f[i], &id, sizeof id, -1), 0);
            cr_assert(id >= 0 && id < 3, "worker id %d", id);
            seen[id] = true;
            cf_future_free(f[i]);
        }
    }
    cr_assert(seen[1] && seen[2], "the new workers never ran a task");
    cf_executor_free(ex);    /* every report of the zygote read by now */

    cr_assert_eq(fstat(0, &after), 0, "the caller's descriptor 0 was closed");
    cr_assert(after.st_dev == before.st_dev && after.st_ino == before.st_ino,
              "the caller's descriptor 0 is another file now");
}
