/*
 * executor.c — the front: argument checks, then dispatch to the backend.
 *
 * Every public executor call validates its arguments here, once, so that the
 * backends (thread_pool.c, process_pool.c) only see well-formed requests
 * through their cf__ops table (internal.h). Options too: the front refuses
 * those malformed for any backend (cf__executor_init); a backend's
 * constructor refuses what it cannot do with well-formed ones. This file
 * owns no lock.
 *
 * Adding a backend. The front and future.c stay as they are; the backend is
 *   1. One file, src/<name>.c (with a private header if it grows into
 *      several, as the process pool's pp_internal.h), listed in
 *      libcfutures_la_SOURCES (Makefile.am). It defines its executor, a
 *      struct whose first member is a cf_executor; its state in each future,
 *      a type it reads through CF__FUTURE_PART; and a static cf__ops with
 *      every hook set (wait, running and watch may be future.c's defaults),
 *      max_size and future_size. Its tables are sized for CF__MAX_WORKERS
 *      workers, and its resize reconciles towards the count asked. It ends
 *      futures by the finish protocol (internal.h, at cf__future_finish),
 *      and its shutdown, asked to wait, returns once every future is done.
 *   2. One constructor, cf__<name>_create (declared in internal.h): it
 *      refuses the options it cannot honour (CF_EINVAL), calls
 *      cf__executor_init, and on failure frees what it made with
 *      cf__executor_release. Its public cf_<name>_new, here, checks `out`
 *      and calls it; cfutures.h documents it (CF_EXPORT).
 *   3. One row in the test matrix: a value of enum pool_kind and its row
 *      in the pool-kind table of tests/helpers.h (name, constructor), which
 *      every suite that loops over pool kinds then runs on; and a program
 *      tests/test-common-<name> built from tests/test-common.c with
 *      CF_TEST_BACKEND set to that value, in tests/Makemodule.am, as
 *      tests/test-common-thread is.
 *
 * Ownership. An executor serves only the process that created it. A fork
 * worker, or a child the caller forked, holds a copy of the executor and of
 * its futures: driving that copy would publish into the real pool's shared
 * ring, shut its workers down, or wait forever on threads that do not exist
 * in the copy. So every call that may reach a pool first compares the
 * creator's pid with this process's and answers CF_EOWNER on a mismatch.
 * getpid() is a system call on current glibc; the pid is cached in a page
 * the kernel zeroes in a forked child (MADV_WIPEONFORK), whatever made the
 * child (fork, _Fork, clone), so the check costs one load. A kernel older
 * than 4.14 lacks the advice: a pthread_atfork child handler clears the
 * cache instead.
 *
 * The guard. Every public function, here and in future.c, shm.c and
 * error.c, begins with CF__NOT_BEFORE_GUARD (internal.h): in an exec worker
 * that waits for its program's cf_main_guard (exec.c), a call before it
 * means the program is running as if it were the caller, and ends the
 * worker. One relaxed load of a flag that is written only then.
 * The calls that can wait then begin with CF__NO_CANCEL (internal.h), so
 * that none is a cancellation point.
 *
 * Lifetime. The executor's core (internal.h) outlives it: futures hold a
 * reference. A future call that must reach the backend enters the core, then
 * looks whether its future is done; cf_executor_free, once every future is
 * done, waits until no such call is inside before the backend frees
 * anything. The enter and the drain are a store-then-load pair on each side
 * (inside, then the future's state; the states, then inside), so both use
 * sequentially consistent operations: one of the two sides sees the other.
 */
#include "internal.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#ifndef MADV_WIPEONFORK
#  define MADV_WIPEONFORK 18
#endif

_Thread_local int cf__worker_id = -1;
_Thread_local void *cf__worker_context;
_Thread_local long cf__task_index = -1;

/* ---- this process's pid ------------------------------------------------- */

static _Atomic pid_t  pid_fallback;            /* cleared in a child by pid_forget */
_Atomic pid_t *cf__pid_cell = &pid_fallback;    /* 0: not known in this process yet */
static pthread_once_t pid_once = PTHREAD_ONCE_INIT;

static void pid_forget(void)
{
    atomic_store_explicit(&pid_fallback, 0, memory_order_relaxed);
}

static void pid_cell_init(void)
{
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    void *p = mmap(NULL, page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p != MAP_FAILED && madvise(p, page, MADV_WIPEONFORK) == 0) {
        cf__pid_cell = p;                       /* kept for the life of the process */
        return;
    }
    if (p != MAP_FAILED)
        munmap(p, page);
    pthread_atfork(NULL, NULL, pid_forget);
}

pid_t cf__self_pid_slow(void)
{
    pid_t pid = getpid();
    atomic_store_explicit(cf__pid_cell, pid, memory_order_relaxed);
    return pid;
}

/* ---- the core ----------------------------------------------------------- */

void cf__core_ref(cf__core *c)
{
    atomic_fetch_add_explicit(&c->refs, 1, memory_order_relaxed);
}

void cf__core_unref(cf__core *c)
{
    if (c != NULL && atomic_fetch_sub_explicit(&c->refs, 1, memory_order_acq_rel) == 1) {
        cf__fmem_fini(c);
        free(c);
    }
}

void cf__core_enter(cf__core *c)
{
    /* Sequentially consistent: the caller's next load, of the future's
     * state, must not pass it (see the DESIGN block). */
    atomic_fetch_add(&c->inside, 1);
}

void cf__core_leave(cf__core *c)
{
    if (atomic_fetch_sub(&c->inside, 1) == 1 && atomic_load(&c->draining))
        cf__futex_wake(&c->inside, INT_MAX, false);
}

/* Waits until no future call uses the executor; every future is done. */
static void core_drain(cf__core *c)
{
    atomic_store(&c->draining, 1);
    /* Inside is read by a read-modify-write, which reads its latest value:
     * a call that enters after it synchronises with it, and so sees the
     * futures' done states, written by other threads and seen here through
     * shutdown's synchronisation. (No fence: ThreadSanitizer cannot check
     * one.) */
    uint32_t n;
    while ((n = atomic_fetch_add(&c->inside, 0)) != 0)
        cf__futex_wait(&c->inside, n, false, UINT64_MAX);
}

CF_EXPORT int cf_worker_id(void)
{
    CF__NOT_BEFORE_GUARD();
    return cf__worker_id;
}

/* A worker is wherever cf_worker_id says so: the context lives and dies with it. */
CF_EXPORT void cf_worker_set_context(void *p)
{
    if (cf__worker_id >= 0)
        cf__worker_context = p;
}

CF_EXPORT void *cf_worker_context(void)
{
    return cf__worker_id >= 0 ? cf__worker_context : NULL;
}

CF_EXPORT long cf_task_index(void)
{
    CF__NOT_BEFORE_GUARD();
    return cf__task_index;
}

int cf__executor_init(cf_executor *ex, const cf__ops *ops, const cf_options *opts)
{
    static const cf_options defaults;
    if (opts == NULL)
        opts = &defaults;
    if (opts->task_timeout_ms < 0 || (opts->initargs == NULL && opts->initargs_size > 0) ||
        (opts->start != CF_START_FORK && opts->start != CF_START_EXEC) ||
        opts->workers > CF__MAX_WORKERS)
        return CF_EINVAL;

    pthread_once(&pid_once, pid_cell_init);
    pthread_mutex_init(&ex->drivers_mu, NULL);
    ex->drivers = NULL;
    ex->idle_drivers = NULL;
    ex->drivers_closing = false;
    atomic_init(&ex->maps_live, 0);
    ex->ops = ops;
    ex->opts = *opts;
    ex->initargs_copy = NULL;
    atomic_init(&ex->shut, false);
    ex->owner = cf__self_pid();
    if ((ex->core = calloc(1, sizeof *ex->core)) == NULL)
        return CF_ENOMEM;
    atomic_init(&ex->core->refs, 1);
    cf__fmem_init(ex->core);
    ex->core->ops = ops;
    ex->core->ex = ex;
    if (opts->initargs_size > 0) {
        if ((ex->initargs_copy = malloc(opts->initargs_size)) == NULL)
            return CF_ENOMEM;
        memcpy(ex->initargs_copy, opts->initargs, opts->initargs_size);
    }
    ex->opts.initargs = ex->initargs_copy;

    unsigned workers = opts->workers;
    if (workers == 0) {
        unsigned cpus = cf__usable_cpus();
        workers = cpus > CF__MAX_WORKERS ? CF__MAX_WORKERS : cpus;
    }
    ex->workers = workers;
    ex->cpus = cf__allowed_cpus();
    ex->opts.workers = workers;
    ex->trace = cf__trace_open(ex);
    return 0;
}

void cf__executor_release(cf_executor *ex)
{
    pthread_mutex_destroy(&ex->drivers_mu);
    free(ex->initargs_copy);
    ex->initargs_copy = NULL;
    cf__trace_close(ex->trace);
    ex->trace = NULL;
    if (ex->core != NULL)
        cf__fmem_close(ex->core);
    cf__core_unref(ex->core);
    ex->core = NULL;
}

/*
 * Automatic chunking is guided (cf__map_take): chunks start at about a
 * quarter of each worker's share, n / (4 workers), and shrink with what is
 * left, to about n / (32 workers). Fixed chunks of n / (4 workers) balanced
 * work heavy at the front but not work heavy at the tail, where the last
 * big chunk ran alone; chunks of 1 balance both but cost a hand-off per
 * element. About 40 chunks per worker keep the hand-off negligible next to
 * the elements they carry.
 */
size_t cf__auto_chunk(size_t n, unsigned workers)
{
    size_t chunks = (size_t)workers * 4;
    size_t chunk = (n + chunks - 1) / chunks;
    return chunk == 0 ? 1 : chunk;
}

size_t cf__auto_min_chunk(size_t n, unsigned workers)
{
    size_t chunks = (size_t)workers * 32;
    size_t chunk = (n + chunks - 1) / chunks;
    return chunk == 0 ? 1 : chunk;
}

CF_EXPORT int cf_process_pool_new(cf_executor **out, const cf_options *opts)
{
    CF__NOT_BEFORE_GUARD();
    CF__NO_CANCEL();
    if (out == NULL)
        return CF_EINVAL;
    return cf__process_pool_create(out, opts);
}

CF_EXPORT int cf_thread_pool_new(cf_executor **out, const cf_options *opts)
{
    CF__NOT_BEFORE_GUARD();
    CF__NO_CANCEL();
    if (out == NULL)
        return CF_EINVAL;
    return cf__thread_pool_create(out, opts);
}

CF_EXPORT int cf_submit(cf_executor *ex, cf_fn *fn, const void *arg, size_t arg_size,
                        size_t result_size, cf_future **out)
{
    return cf_submit_with(ex, fn, arg, arg_size, result_size, NULL, out);
}

CF_EXPORT int cf_submit_with(cf_executor *ex, cf_fn *fn, const void *arg, size_t arg_size,
                             size_t result_size, const cf_submit_options *opts, cf_future **out)
{
    CF__NOT_BEFORE_GUARD();
    CF__NO_CANCEL();
    if (ex == NULL || fn == NULL || out == NULL || (arg == NULL && arg_size > 0) ||
        (opts != NULL && opts->timeout_ms < -1))
        return CF_EINVAL;
    if (cf__foreign(ex->owner))
        return CF_EOWNER;
    if (atomic_load(&ex->shut))
        return CF_ESHUTDOWN;
    if (arg_size > ex->ops->max_size || result_size > ex->ops->max_size)
        return CF_E2BIG;
    cf_future *f = cf__future_new(ex, result_size);
    if (f == NULL)
        return CF_ENOMEM;
    f->timeout_ms = opts != NULL ? opts->timeout_ms : 0;
    if (CF__TRACING(ex))
        cf__trace_submit(ex->trace, f, (void *)fn);
    int rc = ex->ops->submit(ex, f, fn, arg, arg_size);
    if (rc != 0) {
        if (CF__TRACING(ex))
            cf__trace_unsubmit(ex->trace, f);
        /* Never queued: both references are ours to drop. */
        cf_future_free(f);
        cf_future_free(f);
        return rc;
    }
    *out = f;
    return 0;
}

/*
 * The checks every map form makes: 0 with the chunk size in *chunk, or
 * the error. n == 0 passes with *chunk 0.
 */
static int map_check(cf_executor *ex, bool has_fn, const void *in, size_t in_size,
                     const void *out, size_t out_size, size_t n, const cf_map_options *opts,
                     size_t *chunk)
{
    if (ex == NULL || !has_fn)
        return CF_EINVAL;
    if (cf__foreign(ex->owner))
        return CF_EOWNER;
    *chunk = 0;
    if (n == 0)
        return atomic_load(&ex->shut) ? CF_ESHUTDOWN : 0;
    if ((in == NULL && in_size > 0) || (out == NULL && out_size > 0) ||
        (in_size > 0 && n > SIZE_MAX / in_size) || (out_size > 0 && n > SIZE_MAX / out_size))
        return CF_EINVAL;
    if (atomic_load(&ex->shut))
        return CF_ESHUTDOWN;
    if (in_size > ex->ops->max_size || out_size > ex->ops->max_size)
        return CF_E2BIG;
    size_t c = opts != NULL && opts->chunksize > 0 ? opts->chunksize : cf__auto_chunk(n, ex->workers);
    *chunk = c > n ? n : c;
    return 0;
}

/* The controls of a map (not yet submitted): guided chunks when automatic. */
static cf__map map_controls(const cf_executor *ex, size_t n, const cf_map_options *opts)
{
    bool automatic = opts == NULL || opts->chunksize == 0;
    unsigned workers = atomic_load(&ex->workers);
    return (cf__map){
        .n = n,
        .on_element = opts != NULL ? opts->on_element : NULL,
        .ctx = opts != NULL ? opts->ctx : NULL,
        .min_chunk = automatic ? cf__auto_min_chunk(n, workers) : 0,
        .workers = workers,
    };
}

/* cf_map and cf_map_chunks: exactly one of fn and cfn is the caller's function. */
static int map_common(cf_executor *ex, cf_fn *fn, cf_chunk_fn *cfn, const void *in, size_t in_size,
                      void *out, size_t out_size, size_t n, const cf_map_options *opts)
{
    size_t chunk;
    int rc = map_check(ex, fn != NULL || cfn != NULL, in, in_size, out, out_size, n, opts, &chunk);
    if (rc != 0 || n == 0)
        return rc;
    cf__map ctl = map_controls(ex, n, opts);
    return ex->ops->map(ex, &ctl, fn, cfn, in, in_size, out, out_size, n, chunk,
                        opts != NULL ? opts->status : NULL);
}

CF_EXPORT int cf_map(cf_executor *ex, cf_fn *fn, const void *in, size_t in_size,
                     void *out, size_t out_size, size_t n, const cf_map_options *opts)
{
    CF__NOT_BEFORE_GUARD();
    CF__NO_CANCEL();
    return map_common(ex, fn, NULL, in, in_size, out, out_size, n, opts);
}

CF_EXPORT int cf_map_chunks(cf_executor *ex, cf_chunk_fn *fn, const void *in, size_t in_size,
                            void *out, size_t out_size, size_t n, const cf_map_options *opts)
{
    CF__NOT_BEFORE_GUARD();
    CF__NO_CANCEL();
    return map_common(ex, NULL, fn, in, in_size, out, out_size, n, opts);
}

static int map_submit_common(cf_executor *ex, cf_fn *fn, cf_chunk_fn *cfn, const void *in,
                             size_t in_size, void *out, size_t out_size, size_t n,
                             const cf_map_options *opts, cf_future **future)
{
    if (future == NULL)
        return CF_EINVAL;
    size_t chunk;
    int rc = map_check(ex, fn != NULL || cfn != NULL, in, in_size, out, out_size, n, opts, &chunk);
    if (rc != 0)
        return rc;
    cf__map ctl = map_controls(ex, n, opts);
    return cf__map_submit(ex, fn, cfn, in, in_size, out, out_size, n, chunk, &ctl, opts, future);
}

CF_EXPORT int cf_map_submit(cf_executor *ex, cf_fn *fn, const void *in, size_t in_size,
                            void *out, size_t out_size, size_t n, const cf_map_options *opts,
                            cf_future **future)
{
    CF__NOT_BEFORE_GUARD();
    CF__NO_CANCEL();
    return map_submit_common(ex, fn, NULL, in, in_size, out, out_size, n, opts, future);
}

CF_EXPORT int cf_map_chunks_submit(cf_executor *ex, cf_chunk_fn *fn, const void *in,
                                   size_t in_size, void *out, size_t out_size, size_t n,
                                   const cf_map_options *opts, cf_future **future)
{
    CF__NOT_BEFORE_GUARD();
    CF__NO_CANCEL();
    return map_submit_common(ex, NULL, fn, in, in_size, out, out_size, n, opts, future);
}

/* cf_shutdown, and cf_shutdown_now with stop_running. */
static int shut_down(cf_executor *ex, bool wait, bool cancel_pending, bool stop_running)
{
    if (ex == NULL)
        return CF_EINVAL;
    if (cf__foreign(ex->owner))
        return CF_EOWNER;
    atomic_store(&ex->shut, true);
    int rc = ex->ops->shutdown(ex, wait, cancel_pending, stop_running);
    if (wait)
        cf__maps_wait(ex, false);    /* their maps ended: until their futures fired */
    return rc;
}

CF_EXPORT int cf_shutdown(cf_executor *ex, bool wait, bool cancel_pending)
{
    CF__NOT_BEFORE_GUARD();
    CF__NO_CANCEL();
    return shut_down(ex, wait, cancel_pending, false);
}

CF_EXPORT int cf_shutdown_now(cf_executor *ex)
{
    CF__NOT_BEFORE_GUARD();
    CF__NO_CANCEL();
    return shut_down(ex, true, true, true);
}

CF_EXPORT void cf_executor_free(cf_executor *ex)
{
    CF__NOT_BEFORE_GUARD();
    CF__NO_CANCEL();
    if (ex == NULL || cf__foreign(ex->owner))
        return;
    cf_shutdown(ex, true, false);
    cf__maps_wait(ex, true);
    core_drain(ex->core);
    ex->ops->destroy(ex);
}

CF_EXPORT unsigned cf_executor_workers(const cf_executor *ex)
{
    CF__NOT_BEFORE_GUARD();
    return ex == NULL ? 0 : atomic_load(&ex->workers);
}

CF_EXPORT int cf_executor_resize(cf_executor *ex, unsigned workers)
{
    CF__NOT_BEFORE_GUARD();
    CF__NO_CANCEL();
    if (ex == NULL || workers == 0 || workers > CF__MAX_WORKERS)
        return CF_EINVAL;
    if (cf__foreign(ex->owner))
        return CF_EOWNER;
    if (atomic_load(&ex->shut))
        return CF_ESHUTDOWN;
    return ex->ops->resize(ex, workers);
}
