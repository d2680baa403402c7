/*
 * Bad input, table-driven: every public function of include/cfutures.h
 * called with each invalid argument (NULL pointers, zero or mismatched
 * sizes, absurd sizes such as SIZE_MAX, negative timeouts other than -1,
 * unknown enum values, use after shutdown) must answer the code its header
 * comment documents, never crash, and leave every out-parameter as it was
 * ("a failed call changes nothing"). A few valid calls sit in the table as
 * controls, so that a table that always answered an error would fail.
 *
 * The table runs against a thread pool, a fork pool and an exec pool. Each
 * row prints one line; every mismatch is reported (cr_expect), not only the
 * first.
 */
#include "helpers.h"

#include <criterion/criterion.h>

#include <limits.h>

#define WROTE_OUT    (INT_MIN + 1)    /* a failed call wrote an out-parameter */
#define ANY_ERROR    (INT_MIN + 2)    /* any negative CF_E* code (see the row) */


static int task_nothing(const void *arg, size_t as, void *res, size_t rs)
{
    (void)arg; (void)as; (void)res; (void)rs;
    return 0;
}

static int init_ok(const void *arg, size_t size)
{
    (void)arg; (void)size;
    return 0;
}

static void on_done(cf_future *f, void *ctx)
{
    (void)f;
    add_int(ctx, 1);
}

/* ---- the context every row runs in -------------------------------------------------- */

struct ctx {
    enum pool_kind kind;
    cf_executor   *ex;        /* a live pool */
    cf_executor   *shut;      /* a pool after cf_shutdown */
    cf_future     *done;      /* finished, result_size 8, value value_for(3) */
    cf_future     *done0;     /* finished, result_size 0 */
    cf_future     *fs[2];     /* { done, done0 } */
    void          *heap_fn;   /* an address in no loaded object */
    uint64_t       x;
    /* out-parameters, reset before each row and checked after a failing one */
    cf_executor   *out_ex;
    cf_future     *out_f;
    uint64_t       buf[4];
    uint64_t       map_out[8];
    cf_task_info   info;
    bool           seen[2];
    int            calls;
};

static const cf_task_info info_mark = { 12345, 678, 910 };

/* A new pool may have been made by a row that expected failure: free it and say so. */
static int created(struct ctx *c, int rc)
{
    if (rc == 0 && c->out_ex != untouched()) {
        cf_executor_free(c->out_ex);
        c->out_ex = untouched();
    }
    return rc;
}

/* ---- the rows ------------------------------------------------------------------------- */

/* Executors */
static int new_null_out(struct ctx *c) { return pool_kind_new(c->kind, NULL, NULL); }
static int new_negative_timeout(struct ctx *c)
{
    cf_options o = { .task_timeout_ms = -1 };
    return created(c, pool_kind_new(c->kind, &c->out_ex, &o));
}
static int new_int_min_timeout(struct ctx *c)
{
    cf_options o = { .task_timeout_ms = INT_MIN };
    return created(c, pool_kind_new(c->kind, &c->out_ex, &o));
}
static int new_initargs_null_with_size(struct ctx *c)
{
    cf_options o = { .initializer = init_ok, .initargs = NULL, .initargs_size = 8 };
    return created(c, pool_kind_new(c->kind, &c->out_ex, &o));
}
static int new_initargs_size_max(struct ctx *c)
{
    cf_options o = { .initializer = init_ok, .initargs = NULL, .initargs_size = SIZE_MAX };
    return created(c, pool_kind_new(c->kind, &c->out_ex, &o));
}
static int new_unknown_start(struct ctx *c)
{
    cf_options o = { .start = (cf_start_method)7 };
    return created(c, cf_process_pool_new(&c->out_ex, &o));
}
static int new_thread_with_task_timeout(struct ctx *c)
{
    cf_options o = { .task_timeout_ms = 100 };
    return created(c, cf_thread_pool_new(&c->out_ex, &o));
}
static int new_absurd_workers(struct ctx *c)
{
    cf_options o = { .workers = UINT_MAX };
    return created(c, pool_kind_new(c->kind, &c->out_ex, &o));
}
static int new_exec_initializer_not_in_an_object(struct ctx *c)
{
    cf_options o = { .start = CF_START_EXEC, .initializer = (cf_init_fn *)c->heap_fn };
    return created(c, cf_process_pool_new(&c->out_ex, &o));
}
static int new_one_worker_control(struct ctx *c)
{
    cf_options o = { .workers = 1 };
    return created(c, pool_kind_new(c->kind, &c->out_ex, &o));
}
static int shutdown_null(struct ctx *c) { (void)c; return cf_shutdown(NULL, true, true); }
static int shutdown_again(struct ctx *c) { return cf_shutdown(c->shut, true, false); }
static int workers_null(struct ctx *c) { (void)c; return (int)cf_executor_workers(NULL); }
static int free_null(struct ctx *c) { (void)c; cf_executor_free(NULL); return 0; }

/* cf_submit */
static int submit_null_ex(struct ctx *c) { return cf_submit(NULL, task_value, &c->x, 8, 8, &c->out_f); }
static int submit_null_fn(struct ctx *c) { return cf_submit(c->ex, NULL, &c->x, 8, 8, &c->out_f); }
static int submit_null_out(struct ctx *c) { return cf_submit(c->ex, task_value, &c->x, 8, 8, NULL); }
static int submit_null_arg_with_size(struct ctx *c) { return cf_submit(c->ex, task_value, NULL, 8, 8, &c->out_f); }
static int submit_arg_size_max(struct ctx *c) { return cf_submit(c->ex, task_value, &c->x, SIZE_MAX, 8, &c->out_f); }
static int submit_arg_size_half(struct ctx *c)
{
    return cf_submit(c->ex, task_value, &c->x, SIZE_MAX / 2 + 1, 8, &c->out_f);
}
static int submit_result_size_max(struct ctx *c) { return cf_submit(c->ex, task_value, &c->x, 8, SIZE_MAX, &c->out_f); }
static int submit_after_shutdown(struct ctx *c) { return cf_submit(c->shut, task_value, &c->x, 8, 8, &c->out_f); }
static int submit_fn_not_in_an_object(struct ctx *c)
{
    return cf_submit(c->ex, (cf_fn *)c->heap_fn, &c->x, 8, 8, &c->out_f);
}
static int submit_null_arg_size_zero_control(struct ctx *c)
{
    int rc = cf_submit(c->ex, task_nothing, NULL, 0, 0, &c->out_f);
    if (rc == 0)
        rc = cf_future_result(c->out_f, NULL, 0, -1);
    return rc;
}

/* cf_map */
static int map_null_ex(struct ctx *c) { return cf_map(NULL, task_value, c->buf, 8, c->map_out, 8, 4, NULL); }
static int map_null_fn(struct ctx *c) { return cf_map(c->ex, NULL, c->buf, 8, c->map_out, 8, 4, NULL); }
static int map_null_in(struct ctx *c) { return cf_map(c->ex, task_value, NULL, 8, c->map_out, 8, 4, NULL); }
static int map_null_out(struct ctx *c) { return cf_map(c->ex, task_value, c->buf, 8, NULL, 8, 4, NULL); }
static int map_n_overflows_in(struct ctx *c)
{
    return cf_map(c->ex, task_value, c->buf, 8, c->map_out, 8, SIZE_MAX / 4, NULL);
}
static int map_n_overflows_out(struct ctx *c)
{
    return cf_map(c->ex, task_value, c->buf, 1, c->map_out, 16, SIZE_MAX / 8, NULL);
}
static int map_in_size_max(struct ctx *c) { return cf_map(c->ex, task_value, c->buf, SIZE_MAX, c->map_out, 8, 1, NULL); }
static int map_out_size_huge(struct ctx *c)
{
    return cf_map(c->ex, task_value, c->buf, 8, c->map_out, SIZE_MAX / 2 + 1, 1, NULL);
}
static int map_after_shutdown(struct ctx *c) { return cf_map(c->shut, task_value, c->buf, 8, c->map_out, 8, 4, NULL); }
static int map_fn_not_in_an_object(struct ctx *c)
{
    return cf_map(c->ex, (cf_fn *)c->heap_fn, c->buf, 8, c->map_out, 8, 4, NULL);
}
static int map_n_zero_control(struct ctx *c) { return cf_map(c->ex, task_value, NULL, 8, NULL, 8, 0, NULL); }
static int map_no_input_control(struct ctx *c)
{
    return cf_map(c->ex, task_nothing, NULL, 0, NULL, 0, 4, NULL);
}

/* Chunk functions for the cf_map_chunks rows. */
static int chunk_value(const void *in, size_t is, void *out, size_t os, size_t first, size_t count)
{
    if (is != 8 || os != 8)
        return 1;
    for (size_t k = 0; k < count; k++)
        ((uint64_t *)out)[k] = ((const uint64_t *)in)[k] + first;
    return 0;
}
static int chunk_nothing(const void *in, size_t is, void *out, size_t os, size_t first, size_t count)
{
    (void)in, (void)is, (void)out, (void)os, (void)first, (void)count;
    return 0;
}
/* cf_map_chunks: the same arguments, the same answers */
static int chunks_null_ex(struct ctx *c) { return cf_map_chunks(NULL, chunk_value, c->buf, 8, c->map_out, 8, 4, NULL); }
static int chunks_null_fn(struct ctx *c) { return cf_map_chunks(c->ex, NULL, c->buf, 8, c->map_out, 8, 4, NULL); }
static int chunks_null_in(struct ctx *c) { return cf_map_chunks(c->ex, chunk_value, NULL, 8, c->map_out, 8, 4, NULL); }
static int chunks_null_out(struct ctx *c) { return cf_map_chunks(c->ex, chunk_value, c->buf, 8, NULL, 8, 4, NULL); }
static int chunks_n_overflows_in(struct ctx *c)
{
    return cf_map_chunks(c->ex, chunk_value, c->buf, 8, c->map_out, 8, SIZE_MAX / 4, NULL);
}
static int chunks_n_overflows_out(struct ctx *c)
{
    return cf_map_chunks(c->ex, chunk_value, c->buf, 1, c->map_out, 16, SIZE_MAX / 8, NULL);
}
static int chunks_in_size_max(struct ctx *c) { return cf_map_chunks(c->ex, chunk_value, c->buf, SIZE_MAX, c->map_out, 8, 1, NULL); }
static int chunks_out_size_huge(struct ctx *c)
{
    return cf_map_chunks(c->ex, chunk_value, c->buf, 8, c->map_out, SIZE_MAX / 2 + 1, 1, NULL);
}
static int chunks_after_shutdown(struct ctx *c) { return cf_map_chunks(c->shut, chunk_value, c->buf, 8, c->map_out, 8, 4, NULL); }
static int chunks_fn_not_in_an_object(struct ctx *c)
{
    return cf_map_chunks(c->ex, (cf_chunk_fn *)c->heap_fn, c->buf, 8, c->map_out, 8, 4, NULL);
}
static int chunks_n_zero_control(struct ctx *c) { return cf_map_chunks(c->ex, chunk_value, NULL, 8, NULL, 8, 0, NULL); }
static int chunks_no_input_control(struct ctx *c)
{
    return cf_map_chunks(c->ex, chunk_nothing, NULL, 0, NULL, 0, 4, NULL);
}

/* futures */
static int wait_null(struct ctx *c) { (void)c; return cf_future_wait(NULL, 0); }
static int wait_minus_two(struct ctx *c) { return cf_future_wait(c->done, -2); }
static int wait_int_min(struct ctx *c) { return cf_future_wait(c->done, INT_MIN); }
static int wait_done_control(struct ctx *c) { return cf_future_wait(c->done, 0); }
static int done_null(struct ctx *c) { (void)c; return cf_future_done(NULL); }
static int running_null(struct ctx *c) { (void)c; return cf_future_running(NULL); }
static int cancelled_null(struct ctx *c) { (void)c; return cf_future_cancelled(NULL); }
static int cancel_null(struct ctx *c) { (void)c; return cf_future_cancel(NULL); }
static int cancel_finished(struct ctx *c) { return cf_future_cancel(c->done); }
static int result_null_f(struct ctx *c) { return cf_future_result(NULL, c->buf, 8, 0); }
static int result_size_smaller(struct ctx *c) { return cf_future_result(c->done, c->buf, 4, 0); }
static int result_size_larger(struct ctx *c) { return cf_future_result(c->done, c->buf, 16, 0); }
static int result_size_zero(struct ctx *c) { return cf_future_result(c->done, c->buf, 0, 0); }
static int result_size_max(struct ctx *c) { return cf_future_result(c->done, c->buf, SIZE_MAX, 0); }
static int result_null_buffer(struct ctx *c) { (void)c; return cf_future_result(c->done, NULL, 8, 0); }
static int result_negative_timeout(struct ctx *c) { return cf_future_result(c->done, c->buf, 8, -5); }
static int result_size_for_sizeless(struct ctx *c) { return cf_future_result(c->done0, c->buf, 8, 0); }
static int result_control(struct ctx *c)
{
    int rc = cf_future_result(c->done, c->buf, 8, 0);
    return rc == 0 && c->buf[0] != value_for(3) ? -1 : rc;
}
static int result_sizeless_control(struct ctx *c) { return cf_future_result(c->done0, NULL, 0, -1); }
static int callback_null_f(struct ctx *c) { return cf_future_add_done_callback(NULL, on_done, &c->calls); }
static int callback_null_cb(struct ctx *c) { return cf_future_add_done_callback(c->done, NULL, &c->calls); }
static int callback_control(struct ctx *c)
{
    int rc = cf_future_add_done_callback(c->done, on_done, &c->calls);
    return rc == 0 && load_int(&c->calls) != 1 ? -1 : rc;    /* done already: runs at once */
}
static int signal_null(struct ctx *c) { (void)c; return cf_future_signal(NULL); }
static int info_null_f(struct ctx *c) { return cf_future_info(NULL, &c->info); }
static int info_null_info(struct ctx *c) { return cf_future_info(c->done, NULL); }
static int future_free_null(struct ctx *c) { (void)c; cf_future_free(NULL); return 0; }

/* cf_wait, cf_as_completed */
static int waitall_null_fs(struct ctx *c) { (void)c; return cf_wait(NULL, 2, CF_ALL_COMPLETED, 0); }
static int waitall_null_entry(struct ctx *c)
{
    cf_future *fs[2] = { c->done, NULL };
    return cf_wait(fs, 2, CF_ALL_COMPLETED, 0);
}
static int waitall_unknown_mode(struct ctx *c) { return cf_wait(c->fs, 2, (cf_wait_mode)3, 0); }
static int waitall_negative_mode(struct ctx *c) { return cf_wait(c->fs, 2, (cf_wait_mode)-1, 0); }
static int waitall_negative_timeout(struct ctx *c) { return cf_wait(c->fs, 2, CF_ALL_COMPLETED, -2); }
static int waitall_empty_control(struct ctx *c) { (void)c; return cf_wait(NULL, 0, CF_ALL_COMPLETED, 0); }
static int waitall_control(struct ctx *c) { return cf_wait(c->fs, 2, CF_FIRST_EXCEPTION, -1); }
static int asc_null_fs(struct ctx *c) { return cf_as_completed(NULL, 2, c->seen, 0); }
static int asc_null_seen(struct ctx *c) { return cf_as_completed(c->fs, 2, NULL, 0); }
static int asc_null_entry(struct ctx *c)
{
    cf_future *fs[2] = { NULL, c->done };
    return cf_as_completed(fs, 2, c->seen, 0);
}
static int asc_negative_timeout(struct ctx *c) { return cf_as_completed(c->fs, 2, c->seen, -3); }
static int asc_all_seen(struct ctx *c)
{
    bool seen[2] = { true, true };
    int rc = cf_as_completed(c->fs, 2, seen, 0);
    return rc < 0 && !(seen[0] && seen[1]) ? WROTE_OUT : rc;
}
static int asc_empty(struct ctx *c) { return cf_as_completed(c->fs, 0, c->seen, 0); }
static int asc_control(struct ctx *c)
{
    int rc = cf_as_completed(c->fs, 2, c->seen, -1);
    bool ok = (rc == 0 || rc == 1) && c->seen[rc] && !c->seen[1 - rc];
    c->seen[0] = c->seen[1] = false;
    return ok ? 0 : -1;
}

/* shared memory, errors, worker id */
static int shared_alloc_zero(struct ctx *c) { (void)c; return cf_shared_alloc(0) != NULL; }
static int shared_alloc_size_max(struct ctx *c) { (void)c; return cf_shared_alloc(SIZE_MAX) != NULL; }
static int shared_alloc_huge(struct ctx *c) { (void)c; return cf_shared_alloc((size_t)1 << 62) != NULL; }
static int shared_free_null(struct ctx *c) { (void)c; cf_shared_free(NULL, 0); cf_shared_free(NULL, 64); return 0; }
static int strerror_unknown(struct ctx *c)
{
    (void)c;
    const char *a = cf_strerror(-1), *b = cf_strerror(INT_MIN), *d = cf_strerror(INT_MAX);
    return a == NULL || b == NULL || d == NULL || !*a || !*b || strcmp(d, "task error") != 0;
}
static int worker_id_outside(struct ctx *c) { (void)c; return cf_worker_id(); }

/* ---- the table ------------------------------------------------------------------------- */

#define ONLY_PROCESS 1
#define ONLY_THREAD  2
#define ONLY_EXEC    4

struct row {
    const char *what;
    int (*call)(struct ctx *);
    int want;
    int want_also;    /* another acceptable answer, or the same as want */
    int only;         /* 0: every pool; else ONLY_* */
};

#define ROW(fn, what, want) { what, fn, want, want, 0 }
#define ROW2(fn, what, want, also) { what, fn, want, also, 0 }
#define ROW_ONLY(fn, what, want, only) { what, fn, want, want, only }

static const struct row rows[] = {
    ROW(new_null_out, "pool_new(NULL out)", CF_EINVAL),
    ROW(new_negative_timeout, "pool_new(task_timeout_ms -1)", CF_EINVAL),
    ROW(new_int_min_timeout, "pool_new(task_timeout_ms INT_MIN)", CF_EINVAL),
    ROW(new_initargs_null_with_size, "pool_new(initargs NULL, initargs_size 8)", CF_EINVAL),
    ROW(new_initargs_size_max, "pool_new(initargs NULL, initargs_size SIZE_MAX)", CF_EINVAL),
    ROW_ONLY(new_unknown_start, "cf_process_pool_new(start 7)", CF_EINVAL, ONLY_PROCESS),
    ROW_ONLY(new_thread_with_task_timeout, "cf_thread_pool_new(task_timeout_ms 100)", CF_EINVAL, ONLY_THREAD),
    /* Not a documented limit: the pool refuses it or cannot start that many. */
    { "pool_new(workers UINT_MAX)", new_absurd_workers, CF_EINVAL, CF_EAGAIN, 0 },
    ROW_ONLY(new_exec_initializer_not_in_an_object, "exec pool_new(initializer in no loaded object)",
             CF_EINVAL, ONLY_EXEC),
    ROW(new_one_worker_control, "control: pool_new(1 worker)", 0),
    ROW(shutdown_null, "cf_shutdown(NULL)", CF_EINVAL),
    ROW(shutdown_again, "cf_shutdown twice", 0),
    ROW(workers_null, "cf_executor_workers(NULL)", 0),
    ROW(free_null, "cf_executor_free(NULL)", 0),

    ROW(submit_null_ex, "cf_submit(NULL executor)", CF_EINVAL),
    ROW(submit_null_fn, "cf_submit(NULL fn)", CF_EINVAL),
    ROW(submit_null_out, "cf_submit(NULL out)", CF_EINVAL),
    ROW(submit_null_arg_with_size, "cf_submit(arg NULL, arg_size 8)", CF_EINVAL),
    ROW(submit_arg_size_max, "cf_submit(arg_size SIZE_MAX)", CF_E2BIG),
    ROW(submit_arg_size_half, "cf_submit(arg_size SIZE_MAX/2+1)", CF_E2BIG),
    ROW(submit_result_size_max, "cf_submit(result_size SIZE_MAX)", CF_E2BIG),
    ROW(submit_after_shutdown, "cf_submit after cf_shutdown", CF_ESHUTDOWN),
    ROW_ONLY(submit_fn_not_in_an_object, "exec cf_submit(fn in no loaded object)", CF_EINVAL, ONLY_EXEC),
    ROW(submit_null_arg_size_zero_control, "control: cf_submit(arg NULL, arg_size 0, result_size 0)", 0),

    ROW(map_null_ex, "cf_map(NULL executor)", CF_EINVAL),
    ROW(map_null_fn, "cf_map(NULL fn)", CF_EINVAL),
    ROW(map_null_in, "cf_map(in NULL, in_size 8, n 4)", CF_EINVAL),
    ROW(map_null_out, "cf_map(out NULL, out_size 8, n 4)", CF_EINVAL),
    ROW(map_n_overflows_in, "cf_map(n * in_size overflows)", CF_EINVAL),
    ROW(map_n_overflows_out, "cf_map(n * out_size overflows)", CF_EINVAL),
    ROW(map_in_size_max, "cf_map(in_size SIZE_MAX, n 1)", CF_E2BIG),
    ROW(map_out_size_huge, "cf_map(out_size SIZE_MAX/2+1, n 1)", CF_E2BIG),
    ROW(map_after_shutdown, "cf_map after cf_shutdown", CF_ESHUTDOWN),
    ROW_ONLY(map_fn_not_in_an_object, "exec cf_map(fn in no loaded object)", CF_EINVAL, ONLY_EXEC),
    ROW(map_n_zero_control, "control: cf_map(n 0, NULL buffers)", 0),
    ROW(map_no_input_control, "control: cf_map(in NULL, in_size 0, out NULL, out_size 0, n 4)", 0),

    ROW(chunks_null_ex, "cf_map_chunks(NULL executor)", CF_EINVAL),
    ROW(chunks_null_fn, "cf_map_chunks(NULL fn)", CF_EINVAL),
    ROW(chunks_null_in, "cf_map_chunks(in NULL, in_size 8, n 4)", CF_EINVAL),
    ROW(chunks_null_out, "cf_map_chunks(out NULL, out_size 8, n 4)", CF_EINVAL),
    ROW(chunks_n_overflows_in, "cf_map_chunks(n * in_size overflows)", CF_EINVAL),
    ROW(chunks_n_overflows_out, "cf_map_chunks(n * out_size overflows)", CF_EINVAL),
    ROW(chunks_in_size_max, "cf_map_chunks(in_size SIZE_MAX, n 1)", CF_E2BIG),
    ROW(chunks_out_size_huge, "cf_map_chunks(out_size SIZE_MAX/2+1, n 1)", CF_E2BIG),
    ROW(chunks_after_shutdown, "cf_map_chunks after cf_shutdown", CF_ESHUTDOWN),
    ROW_ONLY(chunks_fn_not_in_an_object, "exec cf_map_chunks(fn in no loaded object)", CF_EINVAL, ONLY_EXEC),
    ROW(chunks_n_zero_control, "control: cf_map_chunks(n 0, NULL buffers)", 0),
    ROW(chunks_no_input_control, "control: cf_map_chunks(in NULL, in_size 0, out NULL, out_size 0, n 4)", 0),

    ROW(wait_null, "cf_future_wait(NULL)", CF_EINVAL),
    ROW(wait_minus_two, "cf_future_wait(timeout -2)", CF_EINVAL),
    ROW(wait_int_min, "cf_future_wait(timeout INT_MIN)", CF_EINVAL),
    ROW(wait_done_control, "control: cf_future_wait(done, 0)", 0),
    ROW(done_null, "cf_future_done(NULL)", false),
    ROW(running_null, "cf_future_running(NULL)", false),
    ROW(cancelled_null, "cf_future_cancelled(NULL)", false),
    ROW(cancel_null, "cf_future_cancel(NULL)", CF_EINVAL),
    ROW(cancel_finished, "cf_future_cancel(finished)", CF_EBUSY),
    ROW(result_null_f, "cf_future_result(NULL)", CF_EINVAL),
    ROW(result_size_smaller, "cf_future_result(result_size 4, submitted 8)", CF_EINVAL),
    ROW(result_size_larger, "cf_future_result(result_size 16, submitted 8)", CF_EINVAL),
    ROW(result_size_zero, "cf_future_result(result_size 0, submitted 8)", CF_EINVAL),
    ROW(result_size_max, "cf_future_result(result_size SIZE_MAX)", CF_EINVAL),
    ROW(result_null_buffer, "cf_future_result(result NULL, result_size 8)", CF_EINVAL),
    ROW(result_negative_timeout, "cf_future_result(timeout -5)", CF_EINVAL),
    ROW(result_size_for_sizeless, "cf_future_result(result_size 8, submitted 0)", CF_EINVAL),
    ROW(result_control, "control: cf_future_result(done)", 0),
    ROW(result_sizeless_control, "control: cf_future_result(NULL, 0)", 0),
    ROW(callback_null_f, "cf_future_add_done_callback(NULL f)", CF_EINVAL),
    ROW(callback_null_cb, "cf_future_add_done_callback(NULL cb)", CF_EINVAL),
    ROW(callback_control, "control: cf_future_add_done_callback(done) runs at once", 0),
    ROW(signal_null, "cf_future_signal(NULL)", 0),
    ROW(info_null_f, "cf_future_info(NULL f)", CF_EINVAL),
    ROW(info_null_info, "cf_future_info(NULL info)", CF_EINVAL),
    ROW(future_free_null, "cf_future_free(NULL)", 0),

    ROW(waitall_null_fs, "cf_wait(NULL fs, n 2)", CF_EINVAL),
    ROW(waitall_null_entry, "cf_wait(a NULL entry)", CF_EINVAL),
    ROW(waitall_unknown_mode, "cf_wait(mode 3)", CF_EINVAL),
    ROW(waitall_negative_mode, "cf_wait(mode -1)", CF_EINVAL),
    ROW(waitall_negative_timeout, "cf_wait(timeout -2)", CF_EINVAL),
    ROW(waitall_empty_control, "control: cf_wait(NULL fs, n 0)", 0),
    ROW(waitall_control, "control: cf_wait(done futures, CF_FIRST_EXCEPTION)", 0),
    ROW(asc_null_fs, "cf_as_completed(NULL fs)", CF_EINVAL),
    ROW(asc_null_seen, "cf_as_completed(NULL seen)", CF_EINVAL),
    ROW(asc_null_entry, "cf_as_completed(a NULL entry)", CF_EINVAL),
    ROW(asc_negative_timeout, "cf_as_completed(timeout -3)", CF_EINVAL),
    ROW(asc_all_seen, "cf_as_completed once every future was returned", CF_EINVAL),
    ROW(asc_empty, "cf_as_completed(n 0)", CF_EINVAL),
    ROW(asc_control, "control: cf_as_completed(done futures)", 0),

    ROW(shared_alloc_zero, "cf_shared_alloc(0) is NULL", 0),
    ROW(shared_alloc_size_max, "cf_shared_alloc(SIZE_MAX) is NULL", 0),
    ROW(shared_alloc_huge, "cf_shared_alloc(2^62) is NULL", 0),
    ROW(shared_free_null, "cf_shared_free(NULL, ...) does nothing", 0),
    ROW(strerror_unknown, "cf_strerror(unknown codes) is a string", 0),
    ROW(worker_id_outside, "cf_worker_id() outside a worker", -1),
};

/* ---- running the table ----------------------------------------------------------------- */

static void reset_outs(struct ctx *c)
{
    c->out_ex = untouched();
    c->out_f = untouched();
    memset(c->buf, 0xEE, sizeof c->buf);
    memset(c->map_out, 0xEE, sizeof c->map_out);
    c->info = info_mark;
    c->seen[0] = c->seen[1] = false;
    c->calls = 0;
}

/* After a failed call: did it write anything it was given? */
static bool outs_untouched(const struct ctx *c)
{
    uint64_t mark;
    memset(&mark, 0xEE, sizeof mark);
    for (int i = 0; i < 4; i++)
        if (c->buf[i] != mark)
            return false;
    for (int i = 0; i < 8; i++)
        if (c->map_out[i] != mark)
            return false;
    return c->out_ex == untouched() && c->out_f == untouched() &&
           c->info.worker == info_mark.worker && c->info.start_ns == info_mark.start_ns &&
           c->info.end_ns == info_mark.end_ns && !c->seen[0] && !c->seen[1] && c->calls == 0;
}

static void run_table(enum pool_kind kind)
{
    struct ctx c = { .kind = kind };
    cf_options o = { .workers = 2 };
    int rc, ran = 0, bad = 0;

    skip_exec_under_valgrind(kind);
    c.heap_fn = malloc(64);
    cr_assert_not_null(c.heap_fn);
    memset(c.heap_fn, 0xC3, 64);    /* x86 ret: harmless even if something called it */
    cr_assert_eq(pool_kind_new(c.kind, &c.ex, &o), 0);
    cr_assert_eq(pool_kind_new(c.kind, &c.shut, &o), 0);
    cr_assert_eq(cf_shutdown(c.shut, true, false), 0);
    c.x = 3;
    cr_assert_eq(cf_submit(c.ex, task_value, &c.x, sizeof c.x, 8, &c.done), 0);
    cr_assert_eq(cf_submit(c.ex, task_nothing, NULL, 0, 0, &c.done0), 0);
    c.fs[0] = c.done;
    c.fs[1] = c.done0;
    cr_assert_eq(cf_wait(c.fs, 2, CF_ALL_COMPLETED, -1), 0);

    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        const struct row *r = &rows[i];
        bool process = kind != POOL_THREAD;
        if ((r->only & ONLY_PROCESS && !process) || (r->only & ONLY_THREAD && process) ||
            (r->only & ONLY_EXEC && kind != POOL_EXEC))
            continue;
        reset_outs(&c);
        rc = r->call(&c);
        bool failing = r->want < 0 || r->want_also < 0;
        if (rc != 0 && failing && !outs_untouched(&c))
            rc = WROTE_OUT;
        bool ok = rc == r->want || rc == r->want_also;
        fprintf(stderr, "  %-6s %-66s -> %6d %-22.22s %s\n", pool_kind_name(kind), r->what, rc,
                rc == WROTE_OUT ? "(wrote out-parameter)" : rc < -1 ? cf_strerror(rc) : "",
                ok ? "ok" : "WRONG");
        cr_expect(ok, "%s pool: %s answered %d (%s), the header documents %d (%s)", pool_kind_name(kind), r->what,
                  rc, rc == WROTE_OUT ? "a failed call wrote an out-parameter" : cf_strerror(rc), r->want,
                  cf_strerror(r->want));
        if (c.out_f != untouched())
            cf_future_free(c.out_f);
        ran++;
        bad += !ok;
    }
    fprintf(stderr, "bad input (%s pool): %d calls, %d answered other than documented\n", pool_kind_name(kind), ran, bad);

    /* The pools still work after all that. */
    uint64_t v = 0, y = 11;
    cf_future *f;
    cr_assert_eq(cf_submit(c.ex, task_value, &y, sizeof y, sizeof v, &f), 0);
    cr_assert_eq(cf_future_result(f, &v, sizeof v, -1), 0);
    cr_assert_eq(v, value_for(y));
    cf_future_free(f);
    cf_future_free(c.done);
    cf_future_free(c.done0);
    cf_executor_free(c.ex);
    cf_executor_free(c.shut);
    free(c.heap_fn);
}

Test(badinput, every_function_thread_pool, .timeout = REL_TIMEOUT)
{
    run_table(POOL_THREAD);
}

Test(badinput, every_function_fork_pool, .timeout = REL_TIMEOUT)
{
    run_table(POOL_FORK);
}

Test(badinput, every_function_exec_pool, .timeout = REL_TIMEOUT)
{
    run_table(POOL_EXEC);
}

/* ---- use after shutdown --------------------------------------------------------------- */

/* Futures outlive their pool's shutdown and free; the pool refuses work, nothing else. */
static void use_after_shutdown(enum pool_kind kind)
{
    struct ctx c = { .kind = kind };
    cf_options o = { .workers = 2 };
    cf_executor *ex = NULL;
    cf_future *f, *late = untouched();
    uint64_t x = 9, v = 0, in[4] = { 1, 2, 3, 4 }, out[4] = { 0 };
    int calls = 0;

    skip_exec_under_valgrind(kind);
    cr_assert_eq(pool_kind_new(c.kind, &ex, &o), 0);
    cr_assert_eq(cf_submit(ex, task_value, &x, sizeof x, sizeof v, &f), 0);
    cr_assert_eq(cf_shutdown(ex, true, false), 0);
    cr_assert(cf_future_done(f), "cf_shutdown(wait) returned before the task was done");
    cr_assert_eq(cf_submit(ex, task_value, &x, sizeof x, sizeof v, &late), CF_ESHUTDOWN);
    cr_assert_eq(late, untouched());
    cr_assert_eq(cf_map(ex, task_value, in, sizeof in[0], out, sizeof out[0], 4, NULL), CF_ESHUTDOWN);
    for (int i = 0; i < 4; i++)
        cr_assert_eq(out[i], 0, "a refused map wrote its output");
    cr_assert_eq(cf_shutdown(ex, false, true), 0);
    cr_assert_eq(cf_executor_workers(ex), 2);
    cf_executor_free(ex);
    /* The future stays valid after its pool is freed. */
    cr_assert_eq(cf_future_result(f, &v, sizeof v, 0), 0);
    cr_assert_eq(v, value_for(x));
    cr_assert_eq(cf_future_wait(f, -1), 0);
    cr_assert_eq(cf_future_cancel(f), CF_EBUSY);
    cr_assert_eq(cf_future_add_done_callback(f, on_done, &calls), 0);
    cr_assert_eq(calls, 1);
    cr_assert_eq(cf_wait(&f, 1, CF_ALL_COMPLETED, 0), 0);
    cf_future_free(f);
}

Test(badinput, use_after_shutdown_thread_pool, .timeout = REL_TIMEOUT)
{
    use_after_shutdown(POOL_THREAD);
}

Test(badinput, use_after_shutdown_fork_pool, .timeout = REL_TIMEOUT)
{
    use_after_shutdown(POOL_FORK);
}

Test(badinput, use_after_shutdown_exec_pool, .timeout = REL_TIMEOUT)
{
    use_after_shutdown(POOL_EXEC);
}
