/*
 * Backend-independent contracts: error strings, option checking, shared
 * memory, and what each kind of pool accepts at creation.
 */
#include "helpers.h"

#include <limits.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

struct code_text {
    int code;
    const char *name;
    const char *text;
};

static const struct code_text codes[] = {
#define CODE_TEXT(name, value, text) { CF_##name, "CF_" #name, text },
    CF_ERRNO_MAP(CODE_TEXT)
#undef CODE_TEXT
};

enum { NCODES = sizeof codes / sizeof codes[0] };

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

static void assert_square_runs(cf_executor *ex)
{
    int64_t x = 12, y = 0;
    cf_future *f = NULL;
    cr_assert_eq(cf_submit(ex, task_square, &x, sizeof x, sizeof y, &f), 0);
    cr_assert_eq(cf_future_result(f, &y, sizeof y, -1), 0);
    cr_assert_eq(y, 144);
    cf_future_free(f);
}

/* ---- cf_strerror ------------------------------------------------------------ */

Test(api, strerror_every_code_has_its_text)
{
    for (size_t i = 0; i < NCODES; i++) {
        const char *s = cf_strerror(codes[i].code);
        cr_assert_not_null(s, "%s", codes[i].name);
        cr_assert_neq(s[0], '\0', "%s has an empty string", codes[i].name);
        cr_assert_str_eq(s, codes[i].text, "%s", codes[i].name);
        cr_assert_lt(codes[i].code, 0, "%s is not negative", codes[i].name);
    }
}

Test(api, strerror_strings_and_codes_are_distinct)
{
    for (size_t i = 0; i < NCODES; i++)
        for (size_t j = i + 1; j < NCODES; j++) {
            cr_assert_neq(codes[i].code, codes[j].code, "%s == %s", codes[i].name, codes[j].name);
            cr_assert_str_neq(cf_strerror(codes[i].code), cf_strerror(codes[j].code),
                              "%s and %s share a string", codes[i].name, codes[j].name);
        }
}

Test(api, strerror_success_and_task_codes)
{
    cr_assert_str_eq(cf_strerror(0), "success");
    cr_assert_str_eq(cf_strerror(1), "task error");
    cr_assert_str_eq(cf_strerror(42), "task error");
    cr_assert_str_eq(cf_strerror(INT_MAX), "task error");
}

Test(api, strerror_unknown_codes)
{
    static const int unknown[] = { -1, -2, -9999, -4000, -4100, INT_MIN };
    for (size_t k = 0; k < sizeof unknown / sizeof unknown[0]; k++) {
        const char *s = cf_strerror(unknown[k]);
        cr_assert_not_null(s, "cf_strerror(%d)", unknown[k]);
        cr_assert_neq(s[0], '\0', "cf_strerror(%d) is empty", unknown[k]);
        cr_assert_str_neq(s, "success", "cf_strerror(%d)", unknown[k]);
    }
}

Test(api, codes_match_errno_values)
{
    cr_assert_eq(CF_EINVAL, -22);
    cr_assert_eq(CF_ENOMEM, -12);
    cr_assert_eq(CF_ETIMEDOUT, -110);
    cr_assert_eq(CF_ECANCELED, -125);
    cr_assert_eq(CF_ESHUTDOWN, -108);
    cr_assert_eq(CF_E2BIG, -7);
    cr_assert_eq(CF_EBUSY, -16);
}

/* ---- Options ---------------------------------------------------------------- */

typedef int pool_new_fn(cf_executor **out, const cf_options *opts);

static void assert_refused(pool_new_fn *create, const cf_options *opts, const char *what)
{
    cf_executor *sentinel = untouched();
    cf_executor *ex = sentinel;
    cr_assert_eq(create(&ex, opts), CF_EINVAL, "%s", what);
    cr_assert_eq(ex, sentinel, "%s: a refused creation wrote *out", what);
}

Test(api, null_out_is_refused, .timeout = TEST_TIMEOUT)
{
    cf_options opts = { .workers = 1 };
    cr_assert_eq(cf_thread_pool_new(NULL, NULL), CF_EINVAL);
    cr_assert_eq(cf_thread_pool_new(NULL, &opts), CF_EINVAL);
    cr_assert_eq(cf_process_pool_new(NULL, NULL), CF_EINVAL);
    cr_assert_eq(cf_process_pool_new(NULL, &opts), CF_EINVAL);
}

Test(api, negative_task_timeout_is_refused, .timeout = TEST_TIMEOUT)
{
    cf_options opts = { .workers = 1, .task_timeout_ms = -1 };
    assert_refused(cf_thread_pool_new, &opts, "thread pool, task_timeout_ms -1");
    assert_refused(cf_process_pool_new, &opts, "process pool, task_timeout_ms -1");
    opts.task_timeout_ms = INT_MIN;
    assert_refused(cf_process_pool_new, &opts, "process pool, task_timeout_ms INT_MIN");
}

Test(api, thread_pool_refuses_task_timeout, .timeout = TEST_TIMEOUT)
{
    cf_options opts = { .workers = 1, .task_timeout_ms = 100 };
    assert_refused(cf_thread_pool_new, &opts, "thread pool, task_timeout_ms 100");
}

Test(api, process_pool_accepts_exec_start, .timeout = TEST_TIMEOUT)
{
    cf_options opts = { .workers = 1, .start = CF_START_EXEC };
    cf_executor *ex = NULL;

    skip_exec_under_valgrind(POOL_EXEC);
    cr_assert_eq(cf_process_pool_new(&ex, &opts), 0);
    assert_square_runs(ex);
    cf_executor_free(ex);
}

Test(api, process_pool_refuses_unknown_start, .timeout = TEST_TIMEOUT)
{
    cf_options opts = { .workers = 1, .start = (cf_start_method)7 };
    assert_refused(cf_process_pool_new, &opts, "start method 7");
}

Test(api, thread_pool_ignores_start_and_recycling, .timeout = TEST_TIMEOUT)
{
    cf_options opts = { .workers = 1, .start = CF_START_EXEC, .max_tasks_per_worker = 1 };
    cf_executor *ex = NULL;

    cr_assert_eq(cf_thread_pool_new(&ex, &opts), 0);
    cr_assert_eq(cf_executor_workers(ex), 1);
    for (int i = 0; i < 5; i++)
        assert_square_runs(ex);
    cf_executor_free(ex);
}

Test(api, process_pool_accepts_task_timeout, .timeout = TEST_TIMEOUT)
{
    cf_options opts = { .workers = 1, .task_timeout_ms = 5000 };
    cf_executor *ex = NULL;

    cr_assert_eq(cf_process_pool_new(&ex, &opts), 0);
    assert_square_runs(ex);
    cf_executor_free(ex);
}

/* ---- Shared memory, worker id ------------------------------------------------ */

Test(api, shared_alloc_zero_is_null)
{
    cr_assert_null(cf_shared_alloc(0));
}

static void assert_zeroed(const unsigned char *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        cr_assert_eq(p[i], 0, "byte %zu of %zu is not zero", i, n);
}

Test(api, shared_alloc_round_trip)
{
    static const size_t sizes[] = { 1, 100, 4096, 4097, 1 << 20 };
    for (int round = 0; round < 2; round++)
        for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
            unsigned char *p = cf_shared_alloc(sizes[k]);
            cr_assert_not_null(p, "cf_shared_alloc(%zu)", sizes[k]);
            assert_zeroed(p, sizes[k]);
            memset(p, 0xA5, sizes[k]);
            cr_assert_eq(p[sizes[k] - 1], 0xA5);
            cf_shared_free(p, sizes[k]);
        }
}

Test(api, shared_allocations_are_distinct)
{
    unsigned char *a = cf_shared_alloc(64), *b = cf_shared_alloc(64);
    cr_assert_not_null(a);
    cr_assert_not_null(b);
    cr_assert_neq(a, b);
    memset(a, 1, 64);
    assert_zeroed(b, 64);
    cf_shared_free(a, 64);
    cf_shared_free(b, 64);
}

Test(api, worker_id_outside_a_pool)
{
    cr_assert_eq(cf_worker_id(), -1);
}

/* ---- The default worker count ----------------------------------------------- */

/* The default count of a new pool of each kind; both must agree. */
static unsigned default_workers(void)
{
    cf_executor *t = NULL, *p = NULL;
    cr_assert_eq(cf_thread_pool_new(&t, NULL), 0);
    cr_assert_eq(cf_process_pool_new(&p, NULL), 0);
    unsigned n = cf_executor_workers(t);
    cr_assert_eq(cf_executor_workers(p), n, "process pool: %u workers, thread pool: %u",
                 cf_executor_workers(p), n);
    cf_executor_free(t);
    cf_executor_free(p);
    return n;
}

/* As taskset -c 0 does: one CPU in the affinity mask, one worker. */
Test(api, default_workers_follow_the_affinity_mask, .timeout = TEST_TIMEOUT)
{
    cpu_set_t all, one;
    cr_assert_eq(sched_getaffinity(0, sizeof all, &all), 0);
    if (CPU_COUNT(&all) < 2)
        cr_skip_test("one CPU only: a mask of one changes nothing");
    unsigned before = default_workers();
    cr_assert_eq(before, (unsigned)CPU_COUNT(&all), "%u workers for %d CPUs in the mask",
                 before, CPU_COUNT(&all));
    int first = 0;
    while (!CPU_ISSET(first, &all))
        first++;
    CPU_ZERO(&one);
    CPU_SET(first, &one);
    cr_assert_eq(sched_setaffinity(0, sizeof one, &one), 0);
    unsigned after = default_workers();
    sched_setaffinity(0, sizeof all, &all);
    cr_assert_eq(after, 1, "%u workers with one CPU in the affinity mask", after);
}

static bool write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    bool ok = f != NULL && fputs(text, f) >= 0;
    if (f != NULL)
        ok = fclose(f) == 0 && ok;
    return ok;
}

/*
 * A cgroup v1 CPU quota of one CPU (cpu.cfs_quota_us = cpu.cfs_period_us),
 * on a machine with more: one worker. A child moves itself into a new
 * cgroup and reports the default count through a pipe; the cgroup is
 * removed once the child is reaped. Needs a writable v1 cpu hierarchy at
 * /sys/fs/cgroup/cpu (root); skipped without one.
 */
Test(api, default_workers_follow_the_cgroup_quota, .timeout = TEST_TIMEOUT)
{
    cpu_set_t all;
    char dir[128], path[192], pid[32], line[32] = "";
    cr_assert_eq(sched_getaffinity(0, sizeof all, &all), 0);
    if (CPU_COUNT(&all) < 2)
        cr_skip_test("one CPU only: a quota of one changes nothing");
    snprintf(dir, sizeof dir, "/sys/fs/cgroup/cpu/cfutures-test-%d", (int)getpid());
    if (access("/sys/fs/cgroup/cpu/cpu.cfs_quota_us", W_OK) != 0 || mkdir(dir, 0755) != 0)
        cr_skip_test("no writable cgroup v1 cpu hierarchy at /sys/fs/cgroup/cpu");
    snprintf(path, sizeof path, "%s/cpu.cfs_period_us", dir);
    bool set = write_file(path, "100000");
    snprintf(path, sizeof path, "%s/cpu.cfs_quota_us", dir);
    set = set && write_file(path, "100000");

    int fds[2];
    cr_assert_eq(pipe(fds), 0);
    pid_t child = set ? fork() : -1;
    if (child == 0) {
        snprintf(path, sizeof path, "%s/cgroup.procs", dir);
        snprintf(pid, sizeof pid, "%d", (int)getpid());
        cf_executor *ex = NULL;
        if (!write_file(path, pid) || cf_thread_pool_new(&ex, NULL) != 0)
            _exit(1);
        dprintf(fds[1], "%u\n", cf_executor_workers(ex));
        cf_executor_free(ex);
        _exit(0);
    }
    close(fds[1]);
    ssize_t got = child > 0 ? read(fds[0], line, sizeof line - 1) : -1;
    close(fds[0]);
    int status = -1;
    if (child > 0)
        waitpid(child, &status, 0);
    rmdir(dir);
    cr_assert(set, "could not set the quota of %s", dir);
    cr_assert(child > 0 && WIFEXITED(status) && WEXITSTATUS(status) == 0,
              "the child in %s failed (status %d)", dir, status);
    cr_assert_gt(got, 0);
    cr_assert_eq(atoi(line), 1, "%d workers under a quota of one CPU", atoi(line));
}

/* ---- The largest pool -------------------------------------------------------- */

/* A pool of `workers` runs tasks, each on a worker id below that count. */
static void run_on_pool(cf_executor *ex, unsigned workers)
{
    enum { N = 2048 };
    static cf_future *fs[N];
    cr_assert_eq(cf_executor_workers(ex), workers);
    for (int i = 0; i < N; i++)
        cr_assert_eq(cf_submit(ex, task_worker_id, NULL, 0, sizeof(int), &fs[i]), 0);
    for (int i = 0; i < N; i++) {
        int id = -2;
        cr_assert_eq(cf_future_result(fs[i], &id, sizeof id, -1), 0);
        cr_assert(id >= 0 && (unsigned)id < workers, "worker id %d in a pool of %u", id, workers);
        cf_future_free(fs[i]);
    }
}

/* 1024 workers on both kinds of pool (fork workers: exec ones share their tables); 1025 is refused. */
Test(api, pools_of_1024_workers, .timeout = SLOW_TIMEOUT)
{
    cf_executor *ex = untouched();
    cf_options big = {.workers = 1025};
    cr_assert_eq(cf_thread_pool_new(&ex, &big), CF_EINVAL);
    cr_assert_eq(cf_process_pool_new(&ex, &big), CF_EINVAL);
    cr_assert_eq(ex, untouched());
    if (under_valgrind())
        cr_skip_test("valgrind runs at most 500 threads (--max-threads): 1024 are beyond it");

    big.workers = 1024;
    cr_assert_eq(cf_thread_pool_new(&ex, &big), 0);
    run_on_pool(ex, 1024);
    cr_assert_eq(cf_executor_resize(ex, 1025), CF_EINVAL);
    cf_executor_free(ex);
    cr_assert_eq(cf_process_pool_new(&ex, &big), 0);
    run_on_pool(ex, 1024);
    cr_assert_eq(cf_executor_resize(ex, 2), 0);
    run_on_pool(ex, 2);
    cf_executor_free(ex);
}
