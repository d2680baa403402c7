/*
 * Backend-independent contracts: error strings, option checking, shared
 * memory, and what each kind of pool accepts at creation.
 */
#include "helpers.h"

#include <limits.h>
#include <stdlib.h>

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
