/*
 * primes — the seed's prime list: straight, on threads, on processes, then
 * with futures (submit, wait, as_completed).
 *
 * Lesson (seed 003): checking six 15-digit numbers for primality is slow
 * enough to be worth a pool. The same work runs as a loop, on a thread pool
 * and on a process pool (in C there is no GIL: threads speed it up as well).
 * cf_submit returns a future at once, so the caller can do something else and
 * look again (cf_wait with a timeout), or take results in the order they
 * finish (cf_as_completed) rather than the order they were submitted.
 *
 * Run: demo/primes
 */
#include <cfutures.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#define N 6

static const uint64_t primes[N] = {112272535095293, 112582705942171, 112272535095293,
                                   115280095190773, 115797848077099, 1099726899285419};

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

/* The seed's is_prime: trial division by odd numbers up to sqrt(n). */
static int is_prime(const void *arg, size_t as, void *res, size_t rs)
{
    (void)as, (void)rs;
    uint64_t n = *(const uint64_t *)arg;
    int prime = n % 2 != 0;
    for (uint64_t i = 3; prime && i * i <= n; i += 2)
        if (n % i == 0)
            prime = 0;
    *(int *)res = prime;
    return 0;
}

static void print_answers(const char *how, double seconds, const int *ans)
{
    printf("  %-24s %6.3f s   [", how, seconds);
    for (int i = 0; i < N; i++)
        printf("%s%s", ans[i] ? "True" : "False", i < N - 1 ? ", " : "]\n");
}

/* Times one cf_map of is_prime over the list on a fresh pool. */
static void time_pool(int (*make)(cf_executor **, const cf_options *), const char *how)
{
    cf_executor *ex;
    int ans[N];
    check(make(&ex, NULL), "creating a pool");    /* NULL: one worker per CPU */
    double t0 = now();
    check(cf_map(ex, is_prime, primes, sizeof primes[0], ans, sizeof ans[0], N, NULL), "cf_map");
    print_answers(how, now() - t0, ans);
    cf_executor_free(ex);
}

int main(void)
{
    int ans[N];
    printf("1. The same work three ways (%ld CPUs online):\n", sysconf(_SC_NPROCESSORS_ONLN));
    double t0 = now();
    for (int i = 0; i < N; i++)
        is_prime(&primes[i], sizeof primes[i], &ans[i], sizeof ans[i]);
    print_answers("Straight (a loop)", now() - t0, ans);
    time_pool(cf_thread_pool_new, "Thread pool");
    time_pool(cf_process_pool_new, "Process pool");

    cf_executor *ex;
    cf_future *fs[N];
    check(cf_process_pool_new(&ex, NULL), "cf_process_pool_new");
    printf("\n2. cf_submit returns at once; the caller looks every 10 ms:\n");
    t0 = now();
    for (int i = 0; i < N; i++)
        check(cf_submit(ex, is_prime, &primes[i], sizeof primes[i], sizeof(int), &fs[i]), "cf_submit");
    while (cf_wait(fs, N, CF_ALL_COMPLETED, 10) == CF_ETIMEDOUT) {
        int done = 0;
        for (int i = 0; i < N; i++)
            done += cf_future_done(fs[i]);
        printf("  do something else, waiting (%d of %d done after %.3f s)\n", done, N, now() - t0);
    }
    for (int i = 0; i < N; i++) {
        check(cf_future_result(fs[i], &ans[i], sizeof ans[i], 0), "cf_future_result");
        cf_future_free(fs[i]);
    }
    print_answers("all done, in order:", now() - t0, ans);

    printf("\n3. cf_as_completed: each result as soon as it is ready:\n");
    bool seen[N] = {false};
    t0 = now();
    for (int i = 0; i < N; i++)
        check(cf_submit(ex, is_prime, &primes[i], sizeof primes[i], sizeof(int), &fs[i]), "cf_submit");
    for (int k = 0; k < N; k++) {
        int i = cf_as_completed(fs, N, seen, -1), prime;
        check(i < 0 ? i : 0, "cf_as_completed");
        cf_task_info info;
        check(cf_future_result(fs[i], &prime, sizeof prime, 0), "cf_future_result");
        check(cf_future_info(fs[i], &info), "cf_future_info");
        printf("  %.3f s  #%d %llu is %s (worker %d)\n", now() - t0, i,
               (unsigned long long)primes[i], prime ? "prime" : "not prime", info.worker);
    }
    for (int i = 0; i < N; i++)
        cf_future_free(fs[i]);
    cf_executor_free(ex);
    return 0;
}
