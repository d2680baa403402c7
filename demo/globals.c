/*
 * globals — a global that a task changes is not the caller's global.
 *
 * Lesson (seed 004): tasks add 3, 2, 9 and 1 to a global `total`. On a thread
 * pool the tasks share the caller's memory, so the caller sees 15 (if the adds
 * are atomic: a plain `+=` from two threads loses updates). On a process pool
 * each worker is a fork of the caller: it adds into its own copy, and the
 * caller's total stays 0. The right ways: return values reduced in the caller,
 * a counter in cf_shared_alloc memory, or the state a task needs passed in
 * its argument. Second pitfall: a fork worker is a snapshot of the caller
 * taken when the pool was created, so a global changed later never reaches
 * it; pass the state as an argument, or set it with an initializer.
 *
 * Run: demo/globals
 */
#include <cfutures.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#define N     4
#define BUMPS 10000000

static const int amounts[N] = {3, 2, 9, 1};
static _Atomic long total;       /* the seed's global */
static volatile long racy;       /* incremented with a plain read, add, write */
static _Atomic int started;      /* racing tasks that have begun */
static _Atomic long *counter;    /* shared memory, set before any pool exists */
static int factor = 1;           /* read by tasks; changed after the pools exist */

typedef struct { int worker; long seen; } report;

static void check(int rc, const char *what)
{
    if (rc != 0) {
        fprintf(stderr, "%s: %s\n", what, cf_strerror(rc));
        exit(1);
    }
}

/* Every task has the signature cf_fn: (arg, arg_size, result, result_size).
 * The seed's increment(): adds to the global, reports the total this worker
 * sees. The nap gives every worker a chance to take a task. */
static int add_to_total(const void *arg, size_t as, void *res, size_t rs)
{
    (void)as, (void)rs;
    int a = *(const int *)arg;
    usleep(20000);
    *(report *)res = (report){cf_worker_id(), atomic_fetch_add(&total, a) + a};
    return 0;
}

/* Racy on purpose (read, add, write back), so ThreadSanitizer looks away.
 * The two tasks wait for each other (2 s at most) so that they overlap. */
__attribute__((no_sanitize("thread")))
static int bump_plain(const void *arg, size_t as, void *res, size_t rs)
{
    (void)arg, (void)as, (void)res, (void)rs;
    atomic_fetch_add(&started, 1);
    for (time_t t0 = time(NULL); started < 2 && time(NULL) - t0 < 2;)
        ;
    for (int i = 0; i < BUMPS; i++)
        racy = racy + 1;
    return 0;
}

static int give_back(const void *arg, size_t as, void *res, size_t rs)
{
    (void)as, (void)rs;
    *(long *)res = *(const int *)arg;
    return 0;
}

static int add_shared(const void *arg, size_t as, void *res, size_t rs)
{
    (void)as, (void)res, (void)rs;
    atomic_fetch_add(counter, *(const int *)arg);
    return 0;
}

static int scale_by_global(const void *arg, size_t as, void *res, size_t rs)
{
    (void)as, (void)rs;
    *(long *)res = (long)*(const int *)arg * factor;
    return 0;
}

/* The argument carries the state the task needs: {amount, factor}. */
static int scale_by_arg(const void *arg, size_t as, void *res, size_t rs)
{
    (void)as, (void)rs;
    const int *p = arg;
    *(long *)res = (long)p[0] * p[1];
    return 0;
}

static int set_factor(const void *arg, size_t as)
{
    (void)as;
    factor = *(const int *)arg;
    return 0;
}

/* Maps fn over N elements of in_size bytes each; returns the sum of results. */
static long map_sum(cf_executor *ex, cf_fn *fn, const void *in, size_t in_size)
{
    long out[N], sum = 0;
    check(cf_map(ex, fn, in, in_size, out, sizeof out[0], N, NULL), "cf_map");
    for (int i = 0; i < N; i++)
        sum += out[i];
    return sum;
}

static void add_amounts(cf_executor *ex)
{
    report r[N];
    long kept[2] = {0, 0};
    cf_map_options one = {.chunksize = 1};   /* one task per amount */
    check(cf_map(ex, add_to_total, amounts, sizeof(int), r, sizeof r[0], N, &one), "cf_map");
    for (int i = 0; i < N; i++) {
        printf("  add %d on worker %d: the total it sees is now %ld\n", amounts[i], r[i].worker, r[i].seen);
        kept[r[i].worker] = r[i].seen;
    }
    printf("  the last total each worker saw: worker 0: %ld, worker 1: %ld\n", kept[0], kept[1]);
    printf("  total in the caller: %ld\n", (long)total);
}

int main(void)
{
    /* Shared memory first: a fork worker sees only mappings older than its pool. */
    if ((counter = cf_shared_alloc(sizeof *counter)) == NULL)
        check(CF_ENOMEM, "cf_shared_alloc");
    cf_options two = {.workers = 2};
    cf_executor *threads, *procs, *inited;
    check(cf_thread_pool_new(&threads, &two), "cf_thread_pool_new");

    printf("1. Thread pool, 2 threads: the tasks share the caller's memory.\n");
    add_amounts(threads);
    cf_map_options one = {.chunksize = 1};   /* two tasks, no argument, no result */
    check(cf_map(threads, bump_plain, NULL, 0, NULL, 0, 2, &one), "cf_map");
    printf("  without the atomic add: 2 tasks x %d plain `racy = racy + 1` gave %ld, so %ld\n"
           "  updates were lost (both threads read the same old value and wrote it + 1);\n"
           "  a race may or may not show on a given run, and is a bug either way\n",
           BUMPS, racy, 2L * BUMPS - racy);

    total = 0;   /* the workers forked now copy this 0, as in the seed */
    check(cf_process_pool_new(&procs, &two), "cf_process_pool_new");
    printf("\n2. Process pool, 2 workers: each worker is a fork with its own globals.\n");
    add_amounts(procs);
    printf("  -> each worker kept its own subtotal, and the caller's total is still 0\n");

    printf("\n3. The right ways, on the same process pool:\n");
    printf("  a. return values, added up in the caller: %ld\n", map_sum(procs, give_back, amounts, sizeof(int)));
    check(cf_map(procs, add_shared, amounts, sizeof(int), NULL, 0, N, NULL), "cf_map");
    printf("  b. an atomic counter in cf_shared_alloc memory: %ld\n", (long)*counter);

    factor = 10;
    printf("\n4. factor changed from 1 to 10 after the pools were made; tasks return amount * factor:\n");
    printf("  thread pool (the same memory): %ld\n", map_sum(threads, scale_by_global, amounts, sizeof(int)));
    printf("  process pool (its snapshot says 1): %ld\n", map_sum(procs, scale_by_global, amounts, sizeof(int)));
    int args[N][2];
    for (int i = 0; i < N; i++)
        args[i][0] = amounts[i], args[i][1] = factor;
    printf("  c. the state passed as arguments, {amount, factor}: %ld\n",
           map_sum(procs, scale_by_arg, args[0], sizeof args[0]));
    /* CF_START_EXEC workers are fresh runs of this program, not copies of the
     * caller: their factor starts at 1, and only the initializer sets it. */
    cf_options init = {.workers = 2, .start = CF_START_EXEC, .initializer = set_factor,
                       .initargs = &factor, .initargs_size = sizeof factor};
    check(cf_process_pool_new(&inited, &init), "cf_process_pool_new");
    printf("  d. a pool of fresh (CF_START_EXEC) workers whose initializer sets factor\n"
           "     from initargs: %ld\n", map_sum(inited, scale_by_global, amounts, sizeof(int)));

    cf_executor_free(inited);
    cf_executor_free(procs);
    cf_executor_free(threads);
    cf_shared_free(counter, sizeof *counter);
    return 0;
}
