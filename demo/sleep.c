/*
 * sleep — waiting overlaps on any number of workers; computing needs cores.
 *
 * Lesson (seed 004): add() sleeps 0.1 s, then returns x + y. Ten of them take
 * 1 s in a loop, and on pools of 1, 5 and 10 workers about 1, 0.2 and 0.1 s:
 * a sleeping worker needs no core, so more workers help far beyond the number
 * of cores. Make add() compute for 0.1 s instead, and 10 workers only help as
 * far as there are cores to run them: the time with 1 worker divided by the
 * time with 10 estimates the number of cores (the seed's question: "how many
 * cores does your instructor's laptop have?").
 *
 * Run: demo/sleep         (CF_DEMO_QUICK=1: 20 ms per add instead of 100 ms)
 */
#include <cfutures.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#define N 10

static const int pairs[N][2] = {{10, 1}, {10, 2}, {10, 3}, {10, 4}, {10, 5},
                                {3, 3}, {2, 2}, {1, 1}, {1, 3}, {4, 3}};
static double seconds = 0.1;     /* per add */
static uint64_t spins;           /* loop turns in `seconds` of computing, measured */
static volatile uint64_t sink;   /* keeps the computed value alive */

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

static void compute(uint64_t turns)
{
    uint64_t x = 1;
    for (uint64_t i = 0; i < turns; i++)
        x = x * 6364136223846793005u + 1442695040888963407u;   /* no shortcut */
    sink = x;
}

static int add_sleep(const void *arg, size_t as, void *res, size_t rs)
{
    (void)as, (void)rs;
    const int *xy = arg;
    usleep((useconds_t)(seconds * 1e6));
    *(int *)res = xy[0] + xy[1];
    return 0;
}

static int add_compute(const void *arg, size_t as, void *res, size_t rs)
{
    (void)as, (void)rs;
    const int *xy = arg;
    compute(spins);
    *(int *)res = xy[0] + xy[1];
    return 0;
}

/* Maps fn over the pairs on a new pool of `workers` (0: a plain loop). */
static double run(cf_fn *fn, unsigned workers, const char *what)
{
    int sum[N];
    double t0 = now();
    if (workers == 0) {
        for (int i = 0; i < N; i++)
            fn(pairs[i], sizeof pairs[i], &sum[i], sizeof sum[i]);
    } else {
        cf_executor *ex;
        cf_options o = {.workers = workers};
        cf_map_options one = {.chunksize = 1};          /* one add per task */
        check(cf_process_pool_new(&ex, &o), "cf_process_pool_new");
        t0 = now();                                     /* the pool is ready */
        check(cf_map(ex, fn, pairs, sizeof pairs[0], sum, sizeof sum[0], N, &one), "cf_map");
        cf_executor_free(ex);
    }
    double t = now() - t0;
    printf("  %-22s %6.3f s   results:", what, t);
    for (int i = 0; i < N; i++)
        printf(" %d", sum[i]);
    printf("\n");
    return t;
}

int main(void)
{
    if (getenv("CF_DEMO_QUICK") != NULL)
        seconds = 0.02;
    printf("1. add() sleeps %.2f s; %d adds:\n", seconds, N);
    run(add_sleep, 0, "a loop");
    run(add_sleep, 1, "pool of 1 worker");
    run(add_sleep, 5, "pool of 5 workers");
    run(add_sleep, 10, "pool of 10 workers");

    double t0 = now();
    compute(10000000);
    spins = (uint64_t)(1e7 * seconds / (now() - t0));
    printf("\n2. add() computes for about %.2f s (%llu loop turns, measured here):\n",
           seconds, (unsigned long long)spins);
    double one = run(add_compute, 1, "pool of 1 worker");
    double ten = run(add_compute, 10, "pool of 10 workers");

    long online = sysconf(_SC_NPROCESSORS_ONLN);
    printf("\nHow many cores does this machine have? 10 workers computed %.2f times as fast\n"
           "as 1, so about %.0f (sysconf(_SC_NPROCESSORS_ONLN) says %ld; other programs\n"
           "busy at the same time lower the estimate). Sleeping needs no core, computing\n"
           "does: beyond the cores, more workers only take turns.\n",
           one / ten, one / ten < 1 ? 1 : one / ten, online);
    return 0;
}
