/*
 * balance — uneven tasks: a static split versus load balancing.
 *
 * Lesson (seed 003, DirectView versus LoadBalancedView): when tasks differ in
 * cost, splitting the list into one equal share per worker up front (cf_map
 * with chunksize n / workers) leaves the whole job waiting for the worker that
 * drew the expensive share. Handing out one task at a time (chunksize 1) lets
 * a free worker take the next task, so the workers finish together. Here the
 * first 8 of 32 tasks are 8 times as costly as the rest: the seed's
 * deliberate worst case. Tasks sleep for their cost, so the times do not
 * depend on the machine's load.
 *
 * Run: demo/balance       (CF_DEMO_QUICK=1: a quarter of the costs)
 */
#include <cfutures.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#define N       32
#define WORKERS 4

typedef struct { int index, ms; } task;
typedef struct { int index, worker; } done;

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void check(int rc, const char *what)
{
    if (rc != 0) {
        fprintf(stderr, "%s: %s\n", what, cf_strerror(rc));
        exit(1);
    }
}

/* Works (sleeps) for its cost and says which worker ran it. */
static int work(const void *arg, size_t as, void *res, size_t rs)
{
    (void)as, (void)rs;
    const task *t = arg;
    usleep((useconds_t)t->ms * 1000);
    *(done *)res = (done){t->index, cf_worker_id()};
    return 0;
}

/* Maps the tasks with this chunk size; prints who ran what; returns the time. */
static double run(cf_executor *ex, const task *tasks, size_t chunksize, const char *how)
{
    done out[N];
    int count[WORKERS] = {0}, busy[WORKERS] = {0};
    cf_map_options o = {.chunksize = chunksize};
    double t0 = now();
    check(cf_map(ex, work, tasks, sizeof tasks[0], out, sizeof out[0], N, &o), "cf_map");
    double t = now() - t0;
    for (int i = 0; i < N; i++) {
        if (out[i].index != i || out[i].worker < 0 || out[i].worker >= WORKERS) {
            fprintf(stderr, "%s: wrong result for task %d\n", how, i);
            exit(1);
        }
        count[out[i].worker]++;
        busy[out[i].worker] += tasks[i].ms;
    }
    printf("%s (chunksize %zu%s): %.3f s\n", how, chunksize, chunksize ? "" : ": automatic", t);
    for (int w = 0; w < WORKERS; w++)
        printf("  worker %d: %2d tasks, busy %4d ms\n", w, count[w], busy[w]);
    return t;
}

int main(void)
{
    int scale = getenv("CF_DEMO_QUICK") != NULL ? 4 : 1;
    task tasks[N];
    int total = 0;
    for (int i = 0; i < N; i++) {
        tasks[i] = (task){i, (i < N / 4 ? 80 : 10) / scale};
        total += tasks[i].ms;
    }
    printf("%d tasks on %d worker processes: tasks 0-%d take %d ms each, the others %d ms;\n"
           "%d ms of work in all, so %d ms at best.\n\n",
           N, WORKERS, N / 4 - 1, tasks[0].ms, tasks[N - 1].ms, total, total / WORKERS);

    cf_executor *ex;
    cf_options o = {.workers = WORKERS};
    check(cf_process_pool_new(&ex, &o), "cf_process_pool_new");
    double best = total / 1000.0 / WORKERS;   /* seconds, all workers busy throughout */
    double split = run(ex, tasks, N / WORKERS, "Static split, one share per worker");
    double one = run(ex, tasks, 1, "Load balanced, one task at a time");
    double automatic = run(ex, tasks, 0, "cf_map's default, about 4 chunks per worker");
    cf_executor_free(ex);

    printf("\nThe static split waits for the worker that drew the costly share: %.1f times\n"
           "the best time. One task at a time, any free worker takes the next task: %.1f\n"
           "times. Automatic chunks hand out fewer, larger pieces, cheaper when tasks are\n"
           "tiny, and keep some of that freedom: %.1f times.\n",
           split / best, one / best, automatic / best);
    return 0;
}
