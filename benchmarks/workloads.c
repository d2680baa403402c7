/*
 * workloads.c — the work itself, one definition for every way of running it.
 *
 * The serial loops, both pools and the OpenMP loops call these same
 * functions, so a speedup compares ways of running one piece of code. The
 * tasks (cf_fn) read their argument and write their result with memcpy:
 * cf_map hands them elements at any 8-byte-aligned address.
 */
#include "bench.h"

#include <errno.h>
#include <math.h>
#include <string.h>
#include <time.h>

const uint64_t seed_numbers[SEED_COUNT] = {
    112272535095293u, 112582705942171u, 112272535095293u,
    115280095190773u, 115797848077099u, 1099726899285419u,
};

bool is_prime(uint64_t n)
{
    if (n % 2 == 0)
        return false;
    uint64_t sqrt_n = (uint64_t)floor(sqrt((double)n));
    for (uint64_t i = 3; i <= sqrt_n; i += 2)
        if (n % i == 0)
            return false;
    return true;
}

uint64_t spin(uint64_t iters)
{
    uint64_t x = iters;
    for (uint64_t i = 0; i < iters; i++) {
        x = x * 6364136223846793005u + 1442695040888963407u;
        /* An empty asm the compiler must assume reads x: no closed form. */
        __asm__ volatile("" : "+r"(x));
    }
    return x;
}

uint64_t spin_iters_for(double seconds)
{
    const uint64_t probe = 1000000;
    double best = -1;
    for (int rep = 0; rep < 5; rep++) {
        double t0 = now_s();
        spin(probe);
        double t = now_s() - t0;
        if (best < 0 || t < best)
            best = t;
    }
    double iters = seconds / best * (double)probe;
    return iters < 1 ? 1 : (uint64_t)iters;
}

static uint64_t u64_of(const void *p)
{
    uint64_t v;
    memcpy(&v, p, sizeof v);
    return v;
}

int prime_task(const void *arg, size_t arg_size, void *result, size_t result_size)
{
    if (arg_size != sizeof(uint64_t) || result_size != sizeof(int32_t))
        return 1;
    int32_t is = is_prime(u64_of(arg));
    memcpy(result, &is, sizeof is);
    return 0;
}

int pow10_task(const void *arg, size_t arg_size, void *result, size_t result_size)
{
    (void)arg_size;
    (void)result_size;
    uint64_t y = pow10_u64(u64_of(arg));
    memcpy(result, &y, sizeof y);
    return 0;
}

int triple_task(const void *arg, size_t arg_size, void *result, size_t result_size)
{
    (void)arg_size;
    (void)result_size;
    uint64_t y = triple_plus_one(u64_of(arg));
    memcpy(result, &y, sizeof y);
    return 0;
}

/* The same over a whole chunk: the loop the compiler sees, as OpenMP's. */
int triple_chunk(const void *in, size_t in_size, void *out, size_t out_size, size_t first, size_t count)
{
    const uint64_t *x = in;
    uint64_t *y = out;
    (void)in_size;
    (void)out_size;
    (void)first;
    for (size_t i = 0; i < count; i++)
        y[i] = triple_plus_one(x[i]);
    return 0;
}

int empty_task(const void *arg, size_t arg_size, void *result, size_t result_size)
{
    (void)arg;
    (void)arg_size;
    (void)result;
    (void)result_size;
    return 0;
}

static void sleep_ns(uint64_t ns)
{
    struct timespec until;
    clock_gettime(CLOCK_MONOTONIC, &until);
    until.tv_sec += (time_t)(ns / 1000000000u);
    until.tv_nsec += (long)(ns % 1000000000u);
    if (until.tv_nsec >= 1000000000L) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000L;
    }
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &until, NULL) == EINTR)
        ;
}

static int add_result(const add_arg *a, void *result, size_t result_size)
{
    if (result_size != sizeof(int64_t))
        return 1;
    int64_t sum = a->x + a->y;
    memcpy(result, &sum, sizeof sum);
    return 0;
}

int sleep_add_task(const void *arg, size_t arg_size, void *result, size_t result_size)
{
    add_arg a;
    if (arg_size != sizeof a)
        return 1;
    memcpy(&a, arg, sizeof a);
    sleep_ns(a.cost);
    return add_result(&a, result, result_size);
}

int spin_add_task(const void *arg, size_t arg_size, void *result, size_t result_size)
{
    add_arg a;
    if (arg_size != sizeof a)
        return 1;
    memcpy(&a, arg, sizeof a);
    spin(a.cost);
    return add_result(&a, result, result_size);
}

int spin_span_task(const void *arg, size_t arg_size, void *result, size_t result_size)
{
    if (arg_size != sizeof(uint64_t) || result_size != sizeof(span))
        return 1;
    span s = {.worker = cf_worker_id(), .start_ns = now_ns()};
    spin(u64_of(arg));
    s.end_ns = now_ns();
    memcpy(result, &s, sizeof s);
    return 0;
}
