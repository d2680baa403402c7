/*
 * What a task or a program's environment can do to the pool's own
 * machinery, and what the pool must do in return:
 *
 *   - a task that closes every descriptor of its worker (close_range) ends
 *     normally: its future ends with its result, its done-callback runs,
 *     cf_wait and cf_executor_free return, later tasks run; a task that then
 *     opens files, which get the worker's old numbers, never finds the
 *     worker's 8-byte wake-up counters written into them;
 *   - a thread-pool task (or map element, or initializer) that calls
 *     pthread_exit fails alone with CF_ECRASHED, signal 0; the pool starts a
 *     replacement thread, so the worker count holds; with no replacement
 *     possible the pool is broken (CF_EBROKEN);
 *   - cf_shared_alloc/cf_shared_free reuse address space: 100,000 cycles,
 *     then an exec pool still maps a region at the caller's address; a
 *     region allocated while an exec pool is being created is either mapped
 *     in its workers or copied, never taken as shared when it is not;
 *   - a stray CFUTURES_WORKER makes a program linked with cfutures say so on
 *     stderr and exit with status 114 before main, and never map the
 *     descriptors it was handed; a set-user-ID program ignores the variable
 *     and refuses exec pools;
 *   - an exec worker whose library lays the pool's region out in another
 *     version than the caller's (src/ring.h) says so and exits with status
 *     115 before main, having read nothing past the magic and the version.
 */
#include "helpers.h"
#include "../src/ring.h"

#include <stddef.h>

#include <criterion/criterion.h>

#include <dlfcn.h>
#include <grp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>


/*
 * Bound on every wait of these tests. Under valgrind a fork worker's exit
 * alone takes tens of seconds (its leak check reads the pool's memory), and
 * some results here come with a worker's exit.
 */
#define WAIT_MS  (under_valgrind() ? 240000 : 30000)
#define MAGIC    0xC105EDC0FFEEull

/* Shared with the workers: allocated before the pool, so every kind sees it. */
struct box {
    int started;
    int gate[64];
};

static struct box *box_new(void)
{
    struct box *b = cf_shared_alloc(sizeof *b);
    cr_assert_not_null(b);
    return b;
}

/* In a task: counts itself started, then waits (bounded) for gate i. */
static bool box_pass(struct box *b, int i)
{
    add_int(&b->started, 1);
    for (int ms = 0; ms < GATE_MAX_MS; ms++) {
        if (load_int(&b->gate[i]))
            return true;
        sleep_ms(1);
    }
    return false;
}

static void on_done(cf_future *f, void *ctx)
{
    (void)f;
    add_int(ctx, 1);
}

/* Runs n value tasks: the pool still works. */
static void pool_still_works(cf_executor *ex, int n)
{
    for (uint64_t i = 0; i < (uint64_t)n; i++) {
        cf_future *f;
        uint64_t v = 0;
        cr_assert_eq(cf_submit(ex, task_value, &i, sizeof i, sizeof v, &f), 0);
        int rc = cf_future_result(f, &v, sizeof v, WAIT_MS);
        cr_assert_eq(rc, 0, "a later task: %s", cf_strerror(rc));
        cr_assert_eq(v, value_for(i));
        cf_future_free(f);
    }
}

/* ---- 3. a task closes every descriptor of its worker ------------------------------------ */

struct closer_arg {
    uint64_t box;          /* struct box * */
    int      reopen;       /* then open path until no descriptor is left */
    char     path[200];
};

static void close_everything(void)
{
    if (close_range(0, ~0U, 0) != 0)
        for (int fd = 0; fd < 65536; fd++)
            close(fd);
}

static int task_closer(const void *arg, size_t as, void *res, size_t rs)
{
    struct closer_arg a;
    uint64_t v = MAGIC;
    if (as != sizeof a || rs != sizeof v)
        return CODE_BADSIZE;
    memcpy(&a, arg, sizeof a);
    if (!box_pass((struct box *)(uintptr_t)a.box, 0))
        return 99;
    close_everything();
    /* Every number the worker used is now free: fill them all with the file. */
    for (int i = 0; a.reopen && i < 4096; i++)
        if (open(a.path, O_WRONLY | O_APPEND | O_CLOEXEC) < 0)
            break;
    memcpy(res, &v, sizeof v);
    return 0;
}

/*
 * The task closes everything (and, with a path, fills every descriptor
 * number with that file) while a done-callback waits on it. Returns its future.
 */
static cf_future *run_closer(cf_executor *ex, struct box *b, const char *path, int *callbacks)
{
    struct closer_arg a = { .box = (uint64_t)(uintptr_t)b, .reopen = path != NULL };
    cf_future *f;
    if (path != NULL)
        snprintf(a.path, sizeof a.path, "%s", path);
    cr_assert_eq(cf_submit(ex, task_closer, &a, sizeof a, sizeof(uint64_t), &f), 0);
    cr_assert(wait_at_least(&b->started, 1, WAIT_MS), "the task did not start");
    cr_assert_eq(cf_future_add_done_callback(f, on_done, callbacks), 0);
    store_int(&b->gate[0], 1);
    int rc = cf_wait(&f, 1, CF_ALL_COMPLETED, WAIT_MS);
    cr_assert_eq(rc, 0, "cf_wait on the task that closed its worker's descriptors: %s", cf_strerror(rc));
    cr_assert(wait_at_least(callbacks, 1, WAIT_MS), "its done-callback did not run");
    return f;
}

/* The task keeps its result: it ran to its end; only its worker is gone. */
static void assert_closer_result(cf_future *f)
{
    uint64_t v = 0;
    int rc = cf_future_result(f, &v, sizeof v, 0);
    cr_assert_eq(rc, 0, "the task that closed every descriptor: %s", cf_strerror(rc));
    cr_assert_eq(v, MAGIC);
}

static void closes_every_descriptor(enum pool_kind kind)
{
    cf_executor *ex = NULL;
    int callbacks = 0;
    skip_exec_under_valgrind(kind);
    struct box *b = box_new();
    cr_assert_eq(pool_kind_new(kind, &ex, &(cf_options){ .workers = 1 }), 0);
    cf_future *f = run_closer(ex, b, NULL, &callbacks);
    assert_closer_result(f);
    pool_still_works(ex, 5);
    cf_executor_free(ex);
    cr_assert_eq(load_int(&callbacks), 1);
    cf_future_free(f);
    cf_shared_free(b, sizeof *b);
}

Test(isolation, task_closes_every_descriptor_fork, .timeout = REL_SLOW_TIMEOUT)
{
    closes_every_descriptor(POOL_FORK);
}

Test(isolation, task_closes_every_descriptor_exec, .timeout = REL_SLOW_TIMEOUT)
{
    closes_every_descriptor(POOL_EXEC);
}

/* The same task still running when the pool shuts down: cf_executor_free returns. */
static void closes_every_descriptor_at_shutdown(enum pool_kind kind)
{
    cf_executor *ex = NULL;
    cf_future *f;
    struct closer_arg a = { 0 };
    skip_exec_under_valgrind(kind);
    struct box *b = box_new();
    a.box = (uint64_t)(uintptr_t)b;
    cr_assert_eq(pool_kind_new(kind, &ex, &(cf_options){ .workers = 1 }), 0);
    cr_assert_eq(cf_submit(ex, task_closer, &a, sizeof a, sizeof(uint64_t), &f), 0);
    cr_assert(wait_at_least(&b->started, 1, WAIT_MS), "the task did not start");
    cr_assert_eq(cf_shutdown(ex, false, false), 0);    /* while it runs */
    store_int(&b->gate[0], 1);
    cf_executor_free(ex);
    cr_assert(cf_future_done(f), "a future held across cf_executor_free is not done");
    assert_closer_result(f);
    cf_future_free(f);
    cf_shared_free(b, sizeof *b);
}

Test(isolation, task_closes_every_descriptor_at_shutdown_fork, .timeout = REL_SLOW_TIMEOUT)
{
    closes_every_descriptor_at_shutdown(POOL_FORK);
}

Test(isolation, task_closes_every_descriptor_at_shutdown_exec, .timeout = REL_SLOW_TIMEOUT)
{
    closes_every_descriptor_at_shutdown(POOL_EXEC);
}

/* The task's file: removed after the test, whatever happened in it. */
static char task_file[64];

static void remove_task_file(void)
{
    if (task_file[0] != '\0')
        unlink(task_file);
}

static void reopened_descriptors_stay_clean(enum pool_kind kind)
{
    char *path = task_file;
    cf_executor *ex = NULL;
    int callbacks = 0;
    struct stat st;
    skip_exec_under_valgrind(kind);
    snprintf(task_file, sizeof task_file, "/tmp/cf-isolation-XXXXXX");
    int fd = mkstemp(path);
    cr_assert_geq(fd, 0);
    close(fd);
    struct box *b = box_new();
    cr_assert_eq(pool_kind_new(kind, &ex, &(cf_options){ .workers = 1 }), 0);
    cf_future *f = run_closer(ex, b, path, &callbacks);
    assert_closer_result(f);
    pool_still_works(ex, 5);
    cf_executor_free(ex);
    cr_assert_eq(stat(path, &st), 0);
    cr_assert_eq(st.st_size, 0, "%s worker wrote %lld bytes into the task's file", pool_kind_name(kind),
                 (long long)st.st_size);
    cf_future_free(f);
    cf_shared_free(b, sizeof *b);
}

Test(isolation, task_reopened_descriptors_stay_clean_fork, .timeout = REL_SLOW_TIMEOUT, .fini = remove_task_file)
{
    reopened_descriptors_stay_clean(POOL_FORK);
}

Test(isolation, task_reopened_descriptors_stay_clean_exec, .timeout = REL_SLOW_TIMEOUT, .fini = remove_task_file)
{
    reopened_descriptors_stay_clean(POOL_EXEC);
}

/* ---- 4. pthread_exit in a thread-pool task ----------------------------------------------- */

static int task_pthread_exit(const void *arg, size_t as, void *res, size_t rs)
{
    (void)as; (void)res; (void)rs;
    struct box *b = *(struct box *const *)arg;
    if (b != NULL && !box_pass(b, 0))
        return 99;
    pthread_exit(NULL);
}

static int task_gated(const void *arg, size_t as, void *res, size_t rs)
{
    (void)as; (void)res; (void)rs;
    struct box *b = *(struct box *const *)arg;
    return box_pass(b, 1) ? 0 : 99;
}

/* n gated tasks all start at once: the pool runs n workers. Then they finish. */
static void all_workers_serve(cf_executor *ex, struct box *b, int n)
{
    cf_future *fs[16];
    int base = load_int(&b->started);
    for (int i = 0; i < n; i++)
        cr_assert_eq(cf_submit(ex, task_gated, &b, sizeof b, 0, &fs[i]), 0);
    cr_assert(wait_at_least(&b->started, base + n, WAIT_MS),
              "only %d of %d gated tasks started: the pool lost workers", load_int(&b->started) - base, n);
    store_int(&b->gate[1], 1);
    for (int i = 0; i < n; i++) {
        cr_assert_eq(cf_future_result(fs[i], NULL, 0, WAIT_MS), 0);
        cf_future_free(fs[i]);
    }
    store_int(&b->gate[1], 0);
}

Test(isolation, thread_task_pthread_exit, .timeout = REL_TIMEOUT)
{
    enum { N = 3, EXITS = 20 };
    struct census before;
    char msg[256];
    cf_executor *ex = NULL;
    cf_future *f, *more[EXITS];
    int callbacks = 0;
    struct box *b, *none = NULL;

    census_take(&before);
    b = box_new();
    cr_assert_eq(pool_kind_new(POOL_THREAD, &ex, &(cf_options){ .workers = N }), 0);
    cr_assert_eq(cf_submit(ex, task_pthread_exit, &b, sizeof b, 0, &f), 0);
    cr_assert(wait_at_least(&b->started, 1, WAIT_MS));
    cr_assert_eq(cf_future_add_done_callback(f, on_done, &callbacks), 0);
    store_int(&b->gate[0], 1);
    int rc = cf_future_wait(f, WAIT_MS);
    cr_assert_eq(rc, 0, "the future of a task that called pthread_exit: %s", cf_strerror(rc));
    cr_assert_eq(cf_future_result(f, NULL, 0, 0), CF_ECRASHED);
    cr_assert_eq(cf_future_signal(f), 0);
    cr_assert(wait_at_least(&callbacks, 1, WAIT_MS), "its done-callback did not run");

    /* Many more: each ends its thread; the pool keeps N. */
    for (int i = 0; i < EXITS; i++)
        cr_assert_eq(cf_submit(ex, task_pthread_exit, &none, sizeof none, 0, &more[i]), 0);
    cr_assert_eq(cf_wait(more, EXITS, CF_ALL_COMPLETED, WAIT_MS), 0);
    for (int i = 0; i < EXITS; i++) {
        cr_assert_eq(cf_future_result(more[i], NULL, 0, 0), CF_ECRASHED, "task %d", i);
        cf_future_free(more[i]);
    }
    all_workers_serve(ex, b, N);
    pool_still_works(ex, 5);
    cf_executor_free(ex);

    /* Still readable after the pool is gone, and done. */
    cr_assert(cf_future_done(f));
    cr_assert_eq(cf_future_result(f, NULL, 0, 0), CF_ECRASHED);
    cr_assert_eq(load_int(&callbacks), 1);
    cf_future_free(f);
    cf_shared_free(b, sizeof *b);
    cr_assert(census_same(&before, msg, sizeof msg), "after cf_executor_free: %s", msg);
}

static int elem_exit_at(const void *arg, size_t as, void *res, size_t rs)
{
    uint64_t i;
    if (as != sizeof i || rs != sizeof i)
        return CODE_BADSIZE;
    memcpy(&i, arg, sizeof i);
    if (i % 100 == 37)
        pthread_exit(NULL);
    return task_value(arg, as, res, rs);
}

static int chunk_exit_at(const void *in, size_t is, void *out, size_t os, size_t first, size_t count)
{
    for (size_t k = 0; k < count; k++) {
        int rc = elem_exit_at((const char *)in + k * is, is, (char *)out + k * os, os);
        if (rc != 0)
            return rc;
    }
    (void)first;
    return 0;
}

/* A map element that ends its thread fails; the rest of its chunk did not run. */
Test(isolation, thread_map_element_pthread_exit, .timeout = REL_TIMEOUT)
{
    enum { N = 3, n = 300 };
    static uint64_t in[n], out[n];
    static int status[n];
    cf_executor *ex = NULL;
    struct box *b = box_new();

    for (int i = 0; i < n; i++)
        in[i] = (uint64_t)i;
    cr_assert_eq(pool_kind_new(POOL_THREAD, &ex, &(cf_options){ .workers = N }), 0);
    for (size_t chunk = 1; chunk <= 10; chunk += 9) {
        cf_map_options mo = { .chunksize = chunk, .status = status };
        memset(status, 0x55, sizeof status);
        int rc = cf_map(ex, elem_exit_at, in, sizeof in[0], out, sizeof out[0], n, &mo);
        cr_assert_eq(rc, CF_ECRASHED, "chunk %zu: cf_map: %s", chunk, cf_strerror(rc));
        for (int i = 0; i < n; i++) {
            /* Element 37 of each hundred ends its thread, and the rest of its chunk never runs. */
            int at = i % 100, first = 37 - 37 % (int)chunk;
            bool lost = at == 37 || (chunk > 1 && at > 37 && at < first + (int)chunk);
            if (lost) {
                cr_assert_eq(status[i], CF_ECRASHED, "chunk %zu: element %d: %d", chunk, i, status[i]);
            } else {
                cr_assert_eq(status[i], 0, "chunk %zu: element %d: %d", chunk, i, status[i]);
                cr_assert_eq(out[i], value_for(in[i]), "chunk %zu: element %d", chunk, i);
            }
        }
        mo.status = NULL;
        rc = cf_map_chunks(ex, chunk_exit_at, in, sizeof in[0], out, sizeof out[0], n, &mo);
        cr_assert_eq(rc, CF_ECRASHED, "chunk %zu: cf_map_chunks: %s", chunk, cf_strerror(rc));
    }
    all_workers_serve(ex, b, N);
    cf_executor_free(ex);
    cf_shared_free(b, sizeof *b);
}

/* Element 5 of each ten fails with code 7, element 7 ends its thread. */
static int elem_fail_then_exit(const void *arg, size_t as, void *res, size_t rs)
{
    uint64_t i = 0;    /* task_value answers wrong sizes */
    if (as == sizeof i)
        memcpy(&i, arg, sizeof i);
    if (i % 10 == 5)
        return 7;
    if (i % 10 == 7)
        pthread_exit(NULL);
    return task_value(arg, as, res, rs);
}

/*
 * With no codes asked for, an element that ends its thread is still the
 * one that failed, not its chunk's first: the map's code is the lowest
 * failing element's, 7 (element 5), whose chunk of 10 had its thread end at
 * element 7.
 */
Test(isolation, thread_map_element_pthread_exit_keeps_lower_failures, .timeout = REL_TIMEOUT)
{
    enum { N = 2, n = 40 };
    static uint64_t in[n], out[n];
    cf_executor *ex = NULL;
    struct box *b = box_new();

    for (int i = 0; i < n; i++)
        in[i] = (uint64_t)i;
    cr_assert_eq(pool_kind_new(POOL_THREAD, &ex, &(cf_options){ .workers = N }), 0);
    cf_map_options mo = { .chunksize = 10 };
    int rc = cf_map(ex, elem_fail_then_exit, in, sizeof in[0], out, sizeof out[0], n, &mo);
    cr_assert_eq(rc, 7, "cf_map: %d (%s), not element 5's code", rc, cf_strerror(rc));
    for (int i = 0; i < n; i++)
        if (i % 10 < 5)
            cr_assert_eq(out[i], value_for(in[i]), "element %d", i);
    all_workers_serve(ex, b, N);
    cf_executor_free(ex);
    cf_shared_free(b, sizeof *b);
}

static int init_pthread_exit(const void *arg, size_t as)
{
    (void)arg; (void)as;
    pthread_exit(NULL);
}

/* An initializer that ends its thread fails creation (CF_ECRASHED) instead of hanging it. */
Test(isolation, thread_initializer_pthread_exit, .timeout = REL_TIMEOUT)
{
    struct census before;
    char msg[256];
    cf_options o = { .workers = 2, .initializer = init_pthread_exit };
    cf_executor *ex = untouched();

    census_take(&before);
    cr_assert_eq(cf_thread_pool_new(&ex, &o), CF_ECRASHED);
    cr_assert_eq(ex, untouched());
    cr_assert(census_same(&before, msg, sizeof msg), "after a failed creation: %s", msg);
}

static int init_runs;

/* Succeeds in the first thread only: a replacement cannot start. */
static int init_once(const void *arg, size_t as)
{
    (void)arg; (void)as;
    return add_int(&init_runs, 1) == 0 ? 0 : 7;
}

Test(isolation, thread_pool_broken_when_no_replacement_starts, .timeout = REL_TIMEOUT)
{
    cf_options o = { .workers = 1, .initializer = init_once };
    cf_executor *ex = NULL;
    cf_future *f, *pending;
    uint64_t x = 1, in[4] = { 0 }, out[4];
    struct box *b = box_new();

    cr_assert_eq(cf_thread_pool_new(&ex, &o), 0);
    cr_assert_eq(cf_submit(ex, task_pthread_exit, &b, sizeof b, 0, &f), 0);
    cr_assert(wait_at_least(&b->started, 1, WAIT_MS));
    cr_assert_eq(cf_submit(ex, task_value, &x, sizeof x, sizeof x, &pending), 0);
    store_int(&b->gate[0], 1);
    cr_assert_eq(cf_future_result(f, NULL, 0, WAIT_MS), CF_ECRASHED);
    cr_assert_eq(cf_future_result(pending, &x, sizeof x, WAIT_MS), CF_EBROKEN);
    cr_assert(wait_at_least(&init_runs, 2, WAIT_MS));
    cf_future *later = untouched();
    cr_assert_eq(cf_submit(ex, task_value, &x, sizeof x, sizeof x, &later), CF_EBROKEN);
    cr_assert_eq(later, untouched());
    cr_assert_eq(cf_map(ex, task_value, in, sizeof in[0], out, sizeof out[0], 4, NULL), CF_EBROKEN);
    cf_executor_free(ex);
    cf_future_free(f);
    cf_future_free(pending);
    cf_shared_free(b, sizeof *b);
}

/*
 * The library's yields (a spinner yields the core every CF__SPIN_PURE_NS),
 * stopped once in thread-pool worker 1 when armed: that worker is then held
 * in its idle spin, where a submit counts it as the spinner that will take
 * the task, and wakes no sleeper.
 */
static int yield_armed, yield_stopped, yield_release;

int sched_yield(void)
{
    if (load_int(&yield_armed) && cf_worker_id() == 1 && add_int(&yield_armed, -1) == 1) {
        store_int(&yield_stopped, 1);
        wait_at_least(&yield_release, 1, WAIT_MS);
    }
    return (int)syscall(SYS_sched_yield);
}

/*
 * A spinning worker that the pool has shrunk past leaves at the top of its
 * loop: a task submitted while it spun was left to it, and must be passed
 * on to a sleeping worker. It was not: worker 0 slept through it, and the
 * task waited for the next submit (a test of resizing hung in CI so).
 */
Test(isolation, thread_pool_shrink_passes_a_spinners_task_on, .timeout = REL_TIMEOUT)
{
    cf_executor *ex = NULL;
    store_int(&yield_armed, 1);
    cr_assert_eq(cf_thread_pool_new(&ex, &(cf_options){ .workers = 2 }), 0);
    /* Worker 1 stops in a spin: its first one, or one after a wake-up. */
    for (int ms = 0; !load_int(&yield_stopped) && ms < POLL_MAX_MS; ms++) {
        cr_assert_eq(cf_executor_resize(ex, 2), 0);    /* wakes every worker to look again */
        sleep_ms(1);
    }
    cr_assert(load_int(&yield_stopped), "worker 1 never spun");
    cr_assert_eq(cf_executor_resize(ex, 1), 0);
    sleep_ms(100);    /* worker 0, woken by the resize, finds nothing and falls asleep */
    uint64_t x = 12345, y = 0;
    cf_future *f;
    cr_assert_eq(cf_submit(ex, task_value, &x, sizeof x, sizeof y, &f), 0);
    store_int(&yield_release, 1);    /* worker 1 sees the pool shrunk, and leaves */
    int rc = cf_future_result(f, &y, sizeof y, POLL_MAX_MS);
    cr_assert_eq(rc, 0, "the task left to the departing spinner: %s", cf_strerror(rc));
    cr_assert_eq(y, value_for(x));
    cf_future_free(f);
    cf_executor_free(ex);
}

/*
 * While armed: the pthread_cond_signal calls of the thread that counts them
 * (the test's, which submits), and every pthread_cond_wait entered (the
 * workers' sleeps). The library's calls reach these first, as its
 * pthread_mutex_lock calls reach the one below.
 */
static int cond_armed, cond_signals, cond_waits;
static _Thread_local bool signals_counted;

/* The definition of name that this program's own comes before (libc's), found once. */
static void *next_definition(void *_Atomic *found, const char *name)
{
    void *p = atomic_load(found);
    if (p == NULL) {
        p = dlsym(RTLD_NEXT, name);
        atomic_store(found, p);
    }
    return p;
}

int pthread_cond_signal(pthread_cond_t *c)
{
    static void *_Atomic real;
    int (*sig)(pthread_cond_t *) = (int (*)(pthread_cond_t *))next_definition(&real, "pthread_cond_signal");
    if (signals_counted && load_int(&cond_armed))
        add_int(&cond_signals, 1);
    return sig(c);
}

int pthread_cond_wait(pthread_cond_t *c, pthread_mutex_t *m)
{
    static void *_Atomic real;
    int (*wait)(pthread_cond_t *, pthread_mutex_t *) =
        (int (*)(pthread_cond_t *, pthread_mutex_t *))next_definition(&real, "pthread_cond_wait");
    if (load_int(&cond_armed))
        add_int(&cond_waits, 1);
    return wait(c, m);
}

/*
 * A burst of submits to a thread pool whose workers sleep signals each
 * sleeper once: a woken worker stays counted a sleeper until it holds the
 * pool's mutex again, and every submit in between signalled again (and took
 * that mutex to do it, which the woken worker waits for), a system call per
 * task for as long as the wake-up took. So no submit may signal more often
 * than workers went to sleep.
 */
Test(isolation, thread_pool_signals_a_sleeper_once_not_at_every_submit, .timeout = REL_TIMEOUT)
{
    enum { TASKS = 2000 };
    cf_executor *ex = NULL;
    store_int(&cond_armed, 1);
    cr_assert_eq(cf_thread_pool_new(&ex, &(cf_options){ .workers = 2 }), 0);
    static cf_future *fs[TASKS];
    for (int round = 0; round < 3; round++) {
        sleep_ms(100);    /* both workers spin out their budget (60 us) and sleep */
        int signals0 = load_int(&cond_signals), waits0 = load_int(&cond_waits);
        signals_counted = true;
        for (int i = 0; i < TASKS; i++)
            cr_assert_eq(cf_submit(ex, task_value, &(uint64_t){ (uint64_t)i }, sizeof(uint64_t),
                                   sizeof(uint64_t), &fs[i]), 0);
        signals_counted = false;
        cr_assert_eq(cf_wait(fs, TASKS, CF_ALL_COMPLETED, WAIT_MS), 0);
        int signals = load_int(&cond_signals) - signals0;
        /* The sleeps of this round: the two before it (counted by the round
         * before, or at creation) and any during it. */
        int waits = load_int(&cond_waits) - waits0 + 2;
        cr_assert_leq(signals, waits, "round %d: %d signals from %d submits, for %d sleeps",
                      round, signals, TASKS, waits);
        for (int i = 0; i < TASKS; i++) {
            uint64_t y = 0;
            cr_assert_eq(cf_future_result(fs[i], &y, sizeof y, 0), 0);
            cr_assert_eq(y, value_for((uint64_t)i));
            cf_future_free(fs[i]);
        }
    }
    store_int(&cond_armed, 0);
    cf_executor_free(ex);
}

/* Every element waits at the gate (the test opens it), then writes 1. */
static int map_gate, map_at_gate;

static int task_wait_gate(const void *arg, size_t as, void *res, size_t rs)
{
    (void)arg;
    (void)as;
    if (rs != sizeof(int))
        return CODE_BADSIZE;
    add_int(&map_at_gate, 1);
    if (!wait_at_least(&map_gate, 1, WAIT_MS))
        return CODE_BADSIZE;
    int one = 1;
    memcpy(res, &one, sizeof one);
    return 0;
}

struct opener_arg {
    int *gate;
    int  delay_ms;
};

static void *open_after(void *p)
{
    struct opener_arg *o = p;
    sleep_ms(o->delay_ms);
    store_int(o->gate, 1);
    return NULL;
}

/*
 * A thread-pool map with automatic chunks (a range per worker) cancelled
 * while each worker is inside an element: every element either ran
 * (status 0, its output written) or was dropped (CF_ECANCELED, untouched),
 * in whichever range it lay, and the progress counts exactly those that ran.
 */
Test(isolation, thread_map_ranges_cancelled_whole, .timeout = REL_TIMEOUT)
{
    enum { N = 4000, WORKERS = 3 };
    cf_executor *ex = NULL;
    cr_assert_eq(cf_thread_pool_new(&ex, &(cf_options){ .workers = WORKERS }), 0);
    int *out = calloc(N, sizeof *out), *status = malloc(N * sizeof *status);
    cr_assert(out != NULL && status != NULL);
    memset(status, 0x55, N * sizeof *status);
    cf_map_options mo = { .status = status };
    cf_future *f = NULL;
    cr_assert_eq(cf_map_submit(ex, task_wait_gate, NULL, 0, out, sizeof *out, N, &mo, &f), 0);
    cr_assert(wait_at_least(&map_at_gate, WORKERS, WAIT_MS), "%d at the gate", load_int(&map_at_gate));
    struct opener_arg o = { .gate = &map_gate, .delay_ms = 100 };
    pthread_t t;
    cr_assert_eq(pthread_create(&t, NULL, open_after, &o), 0);
    cr_assert_eq(cf_future_cancel(f), 0);
    pthread_join(t, NULL);
    cr_assert(cf_future_cancelled(f));
    size_t done = 0, total = 0, ran = 0;
    cr_assert_eq(cf_future_progress(f, &done, &total), 0);
    for (size_t i = 0; i < N; i++) {
        cr_assert(status[i] == 0 || status[i] == CF_ECANCELED, "element %zu: status %d", i, status[i]);
        cr_assert_eq(out[i], status[i] == 0 ? 1 : 0, "element %zu (status %d): output %d", i, status[i], out[i]);
        ran += status[i] == 0;
    }
    cr_assert_geq(ran, (size_t)WORKERS, "the elements at the gate ran to their end");
    cr_assert_lt(ran, (size_t)N, "nothing was dropped");
    cr_assert(done == ran && total == N, "progress %zu of %zu, %zu ran", done, total, ran);
    cf_future_free(f);
    cf_executor_free(ex);
    free(out);
    free(status);
}

/* ---- 9. shared memory bookkeeping ------------------------------------------------------- */

struct region_arg {
    uint64_t addr, size;
};

/* Reads a region at the caller's address: its hash. */
static int task_hash_region(const void *arg, size_t as, void *res, size_t rs)
{
    struct region_arg a;
    uint64_t h;
    if (as != sizeof a || rs != sizeof h)
        return CODE_BADSIZE;
    memcpy(&a, arg, sizeof a);
    h = 1469598103934665603ULL;
    for (uint64_t i = 0; i < a.size; i++) {
        h ^= ((const unsigned char *)(uintptr_t)a.addr)[i];
        h *= 1099511628211ULL;
    }
    memcpy(res, &h, sizeof h);
    return 0;
}

static uint64_t hash_bytes(const void *p, size_t n)
{
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < n; i++) {
        h ^= ((const unsigned char *)p)[i];
        h *= 1099511628211ULL;
    }
    return h;
}

static int elem_copy(const void *arg, size_t as, void *res, size_t rs)
{
    if (as != rs)
        return CODE_BADSIZE;
    memcpy(res, arg, as);
    return 0;
}

/*
 * A region filled with a pattern of `seed`: cf_map over it gives the
 * pattern back (whether it copies the region or finds it mapped in the
 * workers); with `mapped`, the region was allocated before the pool, and a
 * task reads the same bytes at the caller's address.
 */
static void region_seen_by(cf_executor *ex, uint64_t *r, size_t words, uint64_t seed, bool mapped)
{
    struct region_arg a = { (uint64_t)(uintptr_t)r, words * sizeof *r };
    uint64_t h = 0, *out = calloc(words, sizeof *out);
    cf_future *f;
    int rc;
    cr_assert_not_null(out);
    if (mapped) {
        cr_assert_eq(cf_submit(ex, task_hash_region, &a, sizeof a, sizeof h, &f), 0);
        rc = cf_future_result(f, &h, sizeof h, WAIT_MS);
        cr_assert_eq(rc, 0, "reading a cf_shared_alloc region in a worker: %s", cf_strerror(rc));
        cr_assert_eq(h, hash_bytes(r, words * sizeof *r), "the worker sees other bytes at %p", (void *)r);
        cf_future_free(f);
    }
    rc = cf_map(ex, elem_copy, r, sizeof *r, out, sizeof *out, words, NULL);
    cr_assert_eq(rc, 0, "cf_map over a cf_shared_alloc region: %s", cf_strerror(rc));
    for (size_t i = 0; i < words; i++)
        cr_assert_eq(out[i], value_for(seed + i), "cf_map element %zu", i);
    free(out);
}

static void fill(uint64_t *r, size_t words, uint64_t seed)
{
    for (size_t i = 0; i < words; i++)
        r[i] = value_for(seed + i);
}

/*
 * Freed shared memory gives its address range back: 100,000 cycles (each
 * took 2 GiB of address space for good before) leave a later region where
 * exec workers can map it.
 */
Test(isolation, shared_alloc_cycles_reuse_address_space, .timeout = REL_SLOW_TIMEOUT)
{
    long cycles = env_long("CF_SHARED_CYCLES", under_valgrind() ? 2000 : 100000);
    uintptr_t seen[8];
    int distinct = 0;
    for (long i = 0; i < cycles; i++) {
        void *p = cf_shared_alloc(4096);
        cr_assert_not_null(p, "cycle %ld: cf_shared_alloc failed", i);
        bool old = false;
        for (int k = 0; k < distinct && !old; k++)
            old = seen[k] == (uintptr_t)p;
        if (!old && distinct < 8)
            seen[distinct] = (uintptr_t)p;
        distinct += !old;
        cf_shared_free(p, 4096);
    }
    fprintf(stderr, "  %ld cf_shared_alloc/cf_shared_free cycles: %d distinct addresses\n", cycles,
            distinct);
    cr_assert_leq(distinct, 2, "%ld cycles used %d different addresses: freed ranges are not reused",
                  cycles, distinct);

    enum { WORDS = 4096 };
    uint64_t *r = cf_shared_alloc(WORDS * sizeof *r);
    cr_assert_not_null(r);
    fill(r, WORDS, 7);
    for (enum pool_kind kind = POOL_FORK; kind <= POOL_EXEC; kind++) {
        cf_executor *ex = NULL;
        if (kind == POOL_EXEC && under_valgrind())
            continue;
        int rc = pool_kind_new(kind, &ex, &(cf_options){ .workers = 2 });
        cr_assert_eq(rc, 0, "%s pool after the cycles: %s", pool_kind_name(kind), cf_strerror(rc));
        region_seen_by(ex, r, WORDS, 7, true);
        cf_executor_free(ex);
    }
    cf_shared_free(r, WORDS * sizeof *r);
}

/*
 * Where the first window of shared memory (32 to 64 TiB) is taken (here by
 * the test; under ThreadSanitizer by its shadow), regions go in the second,
 * 64 to 512 GiB, where a fresh program maps nothing: before, the kernel
 * placed them just below the caller's libraries, and an exec worker whose
 * own libraries lay there at random (one creation in about 500 under
 * ThreadSanitizer) could not map its pool: CF_ENOMEM.
 */
/* Address ranges reserved by a test, to be given back. */
struct reserved {
    uintptr_t start[64];
    size_t    len[64];
    int       n;
};

/*
 * Reserves (PROT_NONE, no memory) every part of [lo, hi) that nothing maps
 * yet: the test runner may have a mapping or two there. False if the
 * kernel refuses a part (valgrind does).
 */
static bool reserve_range(uintptr_t lo, uintptr_t hi, struct reserved *rs)
{
    uintptr_t busy[64][2];
    int nbusy = 0;
    unsigned long a, b;
    FILE *maps = fopen("/proc/self/maps", "r");
    cr_assert_not_null(maps);
    char line[512];
    while (fgets(line, sizeof line, maps) != NULL)
        if (sscanf(line, "%lx-%lx", &a, &b) == 2 && b > lo && a < hi && nbusy < 64) {
            busy[nbusy][0] = a;
            busy[nbusy][1] = b;
            nbusy++;
        }
    fclose(maps);
    rs->n = 0;
    uintptr_t at = lo;
    for (int i = 0; i <= nbusy && rs->n < 64; i++) {    /* the maps are in address order */
        uintptr_t gap_end = i < nbusy ? busy[i][0] : hi;
        if (gap_end > at) {
            void *p = mmap((void *)at, gap_end - at, PROT_NONE,
                           MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED_NOREPLACE, -1, 0);
            if (p != (void *)at) {
                if (p != MAP_FAILED)
                    munmap(p, gap_end - at);
                return false;
            }
            rs->start[rs->n] = at;
            rs->len[rs->n++] = gap_end - at;
        }
        if (i < nbusy && busy[i][1] > at)
            at = busy[i][1];
    }
    return true;
}

static void release_range(struct reserved *rs)
{
    for (int i = 0; i < rs->n; i++)
        munmap((void *)rs->start[i], rs->len[i]);
    rs->n = 0;
}

Test(isolation, shared_memory_has_a_second_window, .timeout = REL_SLOW_TIMEOUT)
{
    const uintptr_t first = 0x200000000000u, first_end = 0x400000000000u;
    const uintptr_t second = 0x1000000000u, second_end = 0x8000000000u;
    static struct reserved taken;
    if (UNDER_ASAN)
        cr_skip_test("AddressSanitizer's shadow covers the second window: with the first taken, "
                     "regions go where the kernel puts them");
    if (under_valgrind())
        cr_skip_test("valgrind keeps the address space for itself: taking a window crashes it");
    if (!reserve_range(first, first_end, &taken)) {
        release_range(&taken);
        cr_skip_test("cannot reserve [%p, %p) here: %s", (void *)first, (void *)first_end, strerror(errno));
    }

    enum { WORDS = 4096 };
    uint64_t *r = cf_shared_alloc(WORDS * sizeof *r);
    cr_assert_not_null(r);
    uintptr_t at = (uintptr_t)r;
    cr_assert(at >= second && at + WORDS * sizeof *r <= second_end,
              "with the first window taken, a region was placed at %p, outside [%p, %p)", (void *)r,
              (void *)second, (void *)second_end);
    fill(r, WORDS, 5);
    for (enum pool_kind kind = POOL_FORK; kind <= POOL_EXEC; kind++) {
        if (kind == POOL_EXEC && under_valgrind())
            continue;
        for (int i = 0; i < 3; i++) {    /* each exec pool's own region is placed there too */
            cf_executor *ex = NULL;
            int rc = pool_kind_new(kind, &ex, &(cf_options){ .workers = 2 });
            cr_assert_eq(rc, 0, "%s pool %d with the first window taken: %s", pool_kind_name(kind), i,
                         cf_strerror(rc));
            region_seen_by(ex, r, WORDS, 5, true);
            cf_executor_free(ex);
        }
    }
    cf_shared_free(r, WORDS * sizeof *r);
    release_range(&taken);
}

/*
 * A window inside cf_shared_alloc, made wide on purpose: the test's own
 * pthread_mutex_lock (which the library's calls reach, the executable's
 * definition coming first) stops an armed thread at its first lock until
 * the test lets it go. Before the fix, that first lock came after the
 * region had taken its epoch and before it was in the registry.
 */
static _Thread_local bool lock_armed;
static int in_window, window_release;

int pthread_mutex_lock(pthread_mutex_t *m)
{
    static void *_Atomic real;
    int (*lock)(pthread_mutex_t *) = (int (*)(pthread_mutex_t *))next_definition(&real, "pthread_mutex_lock");
    if (lock_armed) {
        lock_armed = false;
        store_int(&in_window, 1);
        wait_at_least(&window_release, 1, WAIT_MS);
    }
    return lock(m);
}

struct allocation {
    size_t    words;
    uint64_t *r;
};

static void *alloc_in_window(void *arg)
{
    struct allocation *a = arg;
    lock_armed = true;
    a->r = cf_shared_alloc(a->words * sizeof *a->r);
    lock_armed = false;
    return NULL;
}

Test(isolation, shared_alloc_window_vs_exec_pool_creation, .timeout = REL_TIMEOUT)
{
    struct allocation a = { .words = 2048 };
    cf_executor *ex = NULL;
    pthread_t t;
    skip_exec_under_valgrind(POOL_EXEC);
    cr_assert_eq(pthread_create(&t, NULL, alloc_in_window, &a), 0);
    cr_assert(wait_at_least(&in_window, 1, WAIT_MS));
    int rc = pool_kind_new(POOL_EXEC, &ex, &(cf_options){ .workers = 2 });    /* while cf_shared_alloc stands in its window */
    store_int(&window_release, 1);
    pthread_join(t, NULL);
    cr_assert_eq(rc, 0, "exec pool: %s", cf_strerror(rc));
    cr_assert_not_null(a.r);
    fill(a.r, a.words, 11);
    /* Allocated while the pool was created: copied or mapped, but right. */
    region_seen_by(ex, a.r, a.words, 11, false);
    cf_executor_free(ex);
    cf_shared_free(a.r, a.words * sizeof *a.r);
}

/*
 * A thread allocates regions whenever another is inside cf_process_pool_new
 * (exec): each region is then right in that pool, mapped or copied, and
 * those made before the creation began are mapped in its workers.
 */
enum { RACE_REGIONS = 400, RACE_WORDS = 512, RACE_POOLS = 40 };

struct race {
    uint64_t *r[RACE_REGIONS];
    int       made;        /* regions filled and ready */
    int       creating;    /* the other thread is inside cf_process_pool_new */
    int       quota;       /* regions still to allocate during this creation */
    int       stop;
};

static void *allocator_main(void *arg)
{
    struct race *race = arg;
    int i = 0;
    while (i < RACE_REGIONS && !load_int(&race->stop)) {
        if (!load_int(&race->creating) || load_int(&race->quota) <= 0) {
            sleep_ms(1);
            continue;
        }
        add_int(&race->quota, -1);
        uint64_t *r = cf_shared_alloc(RACE_WORDS * sizeof *r);
        if (r == NULL)
            break;
        fill(r, RACE_WORDS, (uint64_t)i << 20);
        race->r[i] = r;
        store_int(&race->made, ++i);
    }
    return NULL;
}

Test(isolation, shared_alloc_concurrent_with_exec_pools, .timeout = REL_SLOW_TIMEOUT)
{
    static struct race race;
    pthread_t t;
    int pools = 0;
    skip_exec_under_valgrind(POOL_EXEC);
    if (UNDER_ASAN)
        cr_skip_test("ASan's allocator is not fork-safe: no pool creation while another thread allocates");
    cr_assert_eq(pthread_create(&t, NULL, allocator_main, &race), 0);
    while (pools < RACE_POOLS && load_int(&race.made) < RACE_REGIONS) {
        cf_executor *ex = NULL;
        int before = load_int(&race.made);
        store_int(&race.quota, RACE_REGIONS / RACE_POOLS);
        store_int(&race.creating, 1);
        int rc = pool_kind_new(POOL_EXEC, &ex, &(cf_options){ .workers = 1 });
        store_int(&race.creating, 0);
        int after = load_int(&race.made);
        cr_assert_eq(rc, 0, "exec pool %d: %s", pools, cf_strerror(rc));
        for (int i = before > 0 ? before - 1 : 0; i < after; i++)
            region_seen_by(ex, race.r[i], RACE_WORDS, (uint64_t)i << 20, i < before);
        cf_executor_free(ex);
        pools++;
    }
    store_int(&race.stop, 1);
    pthread_join(t, NULL);
    fprintf(stderr, "  %d exec pools created while another thread allocated %d regions\n", pools,
            load_int(&race.made));
    for (int i = 0; i < load_int(&race.made); i++)
        cf_shared_free(race.r[i], RACE_WORDS * sizeof(uint64_t));
}

/* ---- 11. a stray CFUTURES_WORKER --------------------------------------------------------- */

static void envprobe_path(char *out, size_t size)
{
    const char *top = getenv("top_builddir");
    char exe[2048];
    if (top != NULL && *top != '\0') {
        snprintf(out, size, "%s/tests/envprobe", top);
        if (access(out, X_OK) == 0)
            return;
    }
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    cr_assert_gt(n, 0);
    exe[n] = '\0';
    *strrchr(exe, '/') = '\0';
    snprintf(out, size, "%s/envprobe", exe);
    if (access(out, X_OK) != 0)
        snprintf(out, size, "%s/../envprobe", exe);
    cr_assert_eq(access(out, X_OK), 0, "tests/envprobe not found (%s)", out);
}

struct run {
    int  status;
    char out[2048];
    char err[2048];
};

static void slurp(int fd, char *buf, size_t size)
{
    size_t got = 0;
    ssize_t r;
    while (got + 1 < size && ((r = read(fd, buf + got, size - 1 - got)) > 0 || (r < 0 && errno == EINTR)))
        got += r > 0 ? (size_t)r : 0;
    buf[got] = '\0';
}

/*
 * Runs prog (argument arg, or none) with CFUTURES_WORKER=spec; fds, if not
 * NULL, become its descriptors 3, 4, 5; uid, if not 0, is the user it runs as.
 */
static void run_probe(const char *prog, const char *arg, const char *spec, const int *fds, uid_t uid,
                      struct run *res)
{
    int out[2], err[2];
    cr_assert_eq(pipe(out), 0);
    cr_assert_eq(pipe(err), 0);
    pid_t pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) {
        dup2(out[1], 1);
        dup2(err[1], 2);
        if (fds != NULL) {
            int moved[3];
            for (int i = 0; i < 3; i++)
                moved[i] = fcntl(fds[i], F_DUPFD, 100);
            for (int i = 0; i < 3; i++)
                dup2(moved[i], 3 + i);
        }
        closefrom(fds != NULL ? 6 : 3);
        setenv("CFUTURES_WORKER", spec, 1);
        if (uid != 0 && (setgroups(0, NULL) != 0 || setresgid(uid, uid, uid) != 0 ||
                         setresuid(uid, uid, uid) != 0))
            _exit(90);
        execl(prog, "envprobe", arg, (char *)NULL);
        _exit(91);
    }
    close(out[1]);
    close(err[1]);
    slurp(out[0], res->out, sizeof res->out);
    slurp(err[0], res->err, sizeof res->err);
    close(out[0]);
    close(err[0]);
    cr_assert_eq(waitpid(pid, &res->status, 0), pid);
}

static void assert_refused(const struct run *r, const char *what)
{
    cr_assert(WIFEXITED(r->status) && WEXITSTATUS(r->status) == 114,
              "%s: wait status 0x%x, expected exit status 114 (stderr: %s)", what, r->status, r->err);
    cr_assert_null(strstr(r->out, "main ran"), "%s: main ran", what);
    cr_assert_not_null(strstr(r->err, "cfutures"), "%s: stderr does not name cfutures: \"%s\"", what, r->err);
    cr_assert_not_null(strstr(r->err, "CFUTURES_WORKER"), "%s: stderr does not name the variable: \"%s\"",
                       what, r->err);
    const char *nl = strchr(r->err, '\n');
    cr_assert(nl != NULL && nl[1] == '\0', "%s: not one line on stderr: \"%s\"", what, r->err);
}

Test(isolation, stray_worker_variable_is_reported, .timeout = REL_TIMEOUT)
{
    char prog[4096];
    struct run r;
    envprobe_path(prog, sizeof prog);

    run_probe(prog, NULL, "garbage", NULL, 0, &r);
    fprintf(stderr, "  CFUTURES_WORKER=garbage: %s", r.err);
    assert_refused(&r, "CFUTURES_WORKER=garbage");

    /* Well formed, but the parent it names is not its parent. */
    run_probe(prog, NULL, "0:1234567:200000000000:100000", NULL, 0, &r);
    assert_refused(&r, "a spec naming another parent");

    /* Empty: set all the same. */
    run_probe(prog, NULL, "", NULL, 0, &r);
    assert_refused(&r, "CFUTURES_WORKER=\"\"");
}

/*
 * What the stray-variable tests hand the probe program: a well-formed spec
 * naming this process and a region of `size` bytes, and as descriptors 4
 * and 5 the right kinds (a pipe's read end, an eventfd); descriptor 3 is
 * each test's own.
 */
struct stray {
    char prog[4096];
    char spec[128];
    int  pipefd[2];
    int  efd;
};

static void stray_open(struct stray *st, size_t size)
{
    envprobe_path(st->prog, sizeof st->prog);
    snprintf(st->spec, sizeof st->spec, "0:%ld:%lx:%zx", (long)getpid(), 0x300000000000ul, size);
    cr_assert_eq(pipe(st->pipefd), 0);
    st->efd = eventfd(0, EFD_CLOEXEC);
    cr_assert_geq(st->efd, 0);
}

static void stray_close(struct stray *st)
{
    close(st->efd);
    close(st->pipefd[0]);
    close(st->pipefd[1]);
}

/* A memfd of `size` bytes, named like a pool's, all zero. */
static int zeroed_memfd(size_t size)
{
    int mfd = memfd_create("cfutures", MFD_CLOEXEC);
    cr_assert_geq(mfd, 0);
    cr_assert_eq(ftruncate(mfd, (off_t)size), 0);
    return mfd;
}

/*
 * Well formed, naming its real parent, with descriptors 3, 4, 5 that are
 * not a pool's. A regular file must not be mapped (and so never written);
 * a memfd of the right size that is not a pool's is mapped and refused.
 */
Test(isolation, stray_worker_variable_never_maps_foreign_descriptors, .timeout = REL_TIMEOUT)
{
    const size_t size = 1 << 20;
    char path[] = "/tmp/cf-isolation-XXXXXX";
    int fds[3];
    struct stray sv;
    struct run r;
    struct stat st;
    stray_open(&sv, size);

    /* A regular file of the right size, full of a pattern. */
    int file = mkstemp(path);
    cr_assert_geq(file, 0);
    unlink(path);
    char *pattern = malloc(size);
    cr_assert_not_null(pattern);
    memset(pattern, 0x5a, size);
    cr_assert(write_full(file, pattern, size));
    fds[0] = file;
    fds[1] = sv.pipefd[0];
    fds[2] = sv.efd;
    run_probe(sv.prog, NULL, sv.spec, fds, 0, &r);
    assert_refused(&r, "a regular file as descriptor 3");
    char *back = malloc(size);
    cr_assert_not_null(back);
    cr_assert_eq(pread(file, back, size, 0), (ssize_t)size);
    cr_assert_eq(memcmp(back, pattern, size), 0, "the file handed as descriptor 3 was written");
    cr_assert_eq(fstat(file, &st), 0);
    cr_assert_eq((size_t)st.st_size, size);
    close(file);

    /* A memfd of the right size, named like the pool's, but zeroed: no pool's header. */
    int mfd = zeroed_memfd(size);
    fds[0] = mfd;
    run_probe(sv.prog, NULL, sv.spec, fds, 0, &r);
    assert_refused(&r, "a zeroed memfd as descriptor 3");

    /* Descriptors 4 and 5 swapped: not a pipe and an eventfd. */
    fds[1] = sv.efd;
    fds[2] = sv.pipefd[0];
    run_probe(sv.prog, NULL, sv.spec, fds, 0, &r);
    assert_refused(&r, "descriptors 4 and 5 swapped");

    close(mfd);
    stray_close(&sv);
    free(pattern);
    free(back);
}

/* Writes a header that has the pool's magic number and the given layout version, and nothing else. */
static void write_layout(int mfd, uint32_t version)
{
    uint32_t magic = CF__RING_MAGIC;
    cr_assert_eq(pwrite(mfd, &magic, sizeof magic, offsetof(cf__shm_hdr, magic)), (ssize_t)sizeof magic);
    cr_assert_eq(pwrite(mfd, &version, sizeof version, offsetof(cf__shm_hdr, version)), (ssize_t)sizeof version);
}

/*
 * A pool's memfd, with the pool's magic number, and every other check of
 * the spec passed: a layout version other than the library's (the library
 * on disk replaced since the caller started) is named on stderr, in one
 * line, and the worker exits with CF__EXIT_LAYOUT before main. The same
 * memfd with the library's own version is looked at further (and refused
 * as a stray, its header being empty): the version alone tells them apart.
 */
Test(isolation, exec_worker_refuses_other_layout_version, .timeout = REL_TIMEOUT)
{
    const size_t size = 1 << 20;
    char want[64];
    struct stray sv;
    struct run r;
    stray_open(&sv, size);
    int mfd = zeroed_memfd(size);
    int fds[3] = { mfd, sv.pipefd[0], sv.efd };

    write_layout(mfd, CF__RING_VERSION + 1);
    run_probe(sv.prog, NULL, sv.spec, fds, 0, &r);
    fprintf(stderr, "  layout version %u: %s", CF__RING_VERSION + 1, r.err);
    cr_assert(WIFEXITED(r.status) && WEXITSTATUS(r.status) == CF__EXIT_LAYOUT,
              "wait status 0x%x, expected exit status %d (stderr: %s)", r.status, CF__EXIT_LAYOUT, r.err);
    cr_assert_null(strstr(r.out, "main ran"), "main ran");
    snprintf(want, sizeof want, "layout version %u", CF__RING_VERSION + 1);
    cr_assert_not_null(strstr(r.err, want), "stderr does not name the region's version: \"%s\"", r.err);
    snprintf(want, sizeof want, "this library's is %u", CF__RING_VERSION);
    cr_assert_not_null(strstr(r.err, want), "stderr does not name the library's version: \"%s\"", r.err);
    const char *nl = strchr(r.err, '\n');
    cr_assert(nl != NULL && nl[1] == '\0', "not one line on stderr: \"%s\"", r.err);

    write_layout(mfd, CF__RING_VERSION);
    run_probe(sv.prog, NULL, sv.spec, fds, 0, &r);
    assert_refused(&r, "the library's own layout version over an empty header");

    close(mfd);
    stray_close(&sv);
}

/*
 * In a set-user-ID program the variable is never read: main runs. Exec pools
 * are refused there (their workers would ignore it too); fork pools work.
 * Needs root (to make a set-user-ID copy and run it as another user) and a
 * file system that honours the set-user-ID bit.
 */
/* The set-user-ID copy and its directory: removed after the test, whatever happened in it. */
static char setuid_dir[64], setuid_copy[128];

static void remove_setuid_copy(void)
{
    if (setuid_copy[0] != '\0')
        unlink(setuid_copy);
    if (setuid_dir[0] != '\0')
        rmdir(setuid_dir);
}

Test(isolation, setuid_program_ignores_worker_variable, .timeout = REL_TIMEOUT, .fini = remove_setuid_copy)
{
    char prog[4096], cmd[4400], want[64];
    struct run plain, exec, fork;
    const uid_t nobody = 65534;
    if (geteuid() != 0)
        cr_skip_test("needs root to make a set-user-ID copy of tests/envprobe");
    if (under_valgrind())
        cr_skip_test("valgrind cannot run a set-user-ID program");
    envprobe_path(prog, sizeof prog);
    snprintf(setuid_dir, sizeof setuid_dir, "/tmp/cf-setuid-XXXXXX");
    cr_assert_not_null(mkdtemp(setuid_dir));
    cr_assert_eq(chmod(setuid_dir, 0755), 0);
    snprintf(setuid_copy, sizeof setuid_copy, "%s/envprobe", setuid_dir);
    snprintf(cmd, sizeof cmd, "cp '%s' '%s'", prog, setuid_copy);
    cr_assert_eq(system(cmd), 0);
    cr_assert_eq(chown(setuid_copy, 0, 0), 0);
    cr_assert_eq(chmod(setuid_copy, 04755), 0);
    run_probe(setuid_copy, NULL, "garbage", NULL, nobody, &plain);
    run_probe(setuid_copy, "exec", "garbage", NULL, nobody, &exec);
    run_probe(setuid_copy, "fork", "garbage", NULL, nobody, &fork);
    remove_setuid_copy();

    bool secure = strstr(plain.out, "secure=1") != NULL;
    if (!secure && WIFEXITED(plain.status) && WEXITSTATUS(plain.status) == 90)
        cr_skip_test("cannot become user %d here", (int)nobody);
    if (!secure && strstr(plain.out, "secure=0") != NULL)
        cr_skip_test("the set-user-ID bit is not honoured here (nosuid mount?)");
    fprintf(stderr, "  set-user-ID envprobe with CFUTURES_WORKER=garbage: %s", plain.out);
    cr_assert(WIFEXITED(plain.status) && WEXITSTATUS(plain.status) == 0,
              "set-user-ID program with a stray CFUTURES_WORKER: wait status 0x%x, stderr: %s", plain.status,
              plain.err);
    cr_assert(secure, "main did not run in the set-user-ID program: stdout \"%s\", stderr \"%s\"", plain.out,
              plain.err);

    fprintf(stderr, "  set-user-ID envprobe exec: %s",
            strchr(exec.out, '\n') != NULL ? strchr(exec.out, '\n') + 1 : exec.out);
    snprintf(want, sizeof want, "exec pool: rc=%d ", CF_EINVAL);
    cr_assert_not_null(strstr(exec.out, want), "exec pool in a set-user-ID program: \"%s\"", exec.out);
    cr_assert_not_null(strstr(fork.out, "fork pool: rc=0 result=42"), "fork pool in a set-user-ID program: \"%s\"",
                       fork.out);
}
