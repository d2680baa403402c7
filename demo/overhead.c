/*
 * overhead — 3000 tiny tasks: one at a time, in chunks, or just a loop.
 *
 * Lesson (seed 000): x^10 over 3000 integers took 10 ms as a loop and 22.8 s
 * as a parallel map, 2,300 times slower, because every element travelled to
 * a worker and back on its own. Handing work to another process costs a few
 * microseconds here; x^10 costs a few nanoseconds. So a task must carry far
 * more work than its hand-off: give workers chunks (cf_map does by default),
 * or keep tiny work in a loop.
 *
 * Run: demo/overhead
 */
#include <cfutures.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define N      3000
#define REPEAT 5            /* each way is timed 5 times; the best time counts */

static double in[N], want[N], got[N];

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

static double pow10_of(double x)
{
    double x2 = x * x, x4 = x2 * x2;
    return x4 * x4 * x2;
}

static int task_pow10(const void *arg, size_t as, void *res, size_t rs)
{
    (void)as, (void)rs;
    *(double *)res = pow10_of(*(const double *)arg);
    return 0;
}

/* One way of computing got[] from in[]; chunk 0 means one cf_submit each. */
static void run(cf_executor *ex, size_t chunk)
{
    if (ex == NULL) {
        for (int i = 0; i < N; i++)
            got[i] = pow10_of(in[i]);
    } else if (chunk == 0) {
        static cf_future *f[N];
        for (int i = 0; i < N; i++)
            check(cf_submit(ex, task_pow10, &in[i], sizeof in[i], sizeof got[i], &f[i]), "cf_submit");
        for (int i = 0; i < N; i++) {
            check(cf_future_result(f[i], &got[i], sizeof got[i], -1), "cf_future_result");
            cf_future_free(f[i]);
        }
    } else {
        cf_map_options o = {.chunksize = chunk == (size_t)-1 ? 0 : chunk};
        check(cf_map(ex, task_pow10, in, sizeof in[0], got, sizeof got[0], N, &o), "cf_map");
    }
}

/* Best of REPEAT, and whether every result matched the loop's. */
static double best(cf_executor *ex, size_t chunk, const char *how, double loop)
{
    double t = 1e9;
    for (int r = 0; r < REPEAT; r++) {
        memset(got, 0, sizeof got);
        double t0 = now();
        run(ex, chunk);
        double dt = now() - t0;
        t = dt < t ? dt : t;
        if (memcmp(got, want, sizeof got) != 0) {
            fprintf(stderr, "%s: wrong results\n", how);
            exit(1);
        }
    }
    printf("  %-32s %9.1f us  %7.2f ns/element  %7.0fx the loop's time  results match\n",
           how, t * 1e6, t * 1e9 / N, loop > 0 ? t / loop : 1.0);
    return t;
}

int main(void)
{
    for (int i = 0; i < N; i++) {
        in[i] = i;
        want[i] = pow10_of(i);
    }
    cf_executor *ex;
    check(cf_process_pool_new(&ex, NULL), "cf_process_pool_new");
    unsigned w = cf_executor_workers(ex);
    printf("x^10 over %d numbers, process pool of %u workers, best of %d runs:\n", N, w, REPEAT);
    double loop = best(NULL, 0, "serial loop", 0);
    double each = best(ex, 0, "cf_submit each, then wait each", loop);
    double one = best(ex, 1, "cf_map, chunksize 1", loop);
    double chunked = best(ex, (size_t)-1, "cf_map, automatic chunks", loop);
    best(ex, (N + w - 1) / w, "cf_map, one chunk per worker", loop);

    printf("\nOne task at a time costs about %.0f ns of hand-off per task (cf_submit),\n"
           "%.0f ns per element with cf_map chunksize 1, against %.2f ns of work per element.\n",
           (each - loop) * 1e9 / N, (one - loop) * 1e9 / N, loop * 1e9 / N);
    printf("Chunked, the same map is %.0fx faster than one task per element.\n", one / chunked);
    printf("Rule of thumb: give each task work worth much more than its hand-off\n"
           "(here at least ~%.0f us, 100 times the hand-off of one task), let cf_map\n"
           "chunk small elements, and keep a job of well under a millisecond in a loop.\n",
           (each - loop) * 1e8 / N);
    cf_executor_free(ex);
    return 0;
}
