/*
 * omp.c — the OpenMP rows: the HPC reference for a parallel loop.
 *
 * Each loop runs the very function the pools run (workloads.c), with the
 * schedule an OpenMP programmer would pick: dynamic,1 for uneven tasks,
 * static for a uniform array. Built without OpenMP (configure found no
 * -fopenmp) the stubs below are never called: omp_available() says so.
 *
 * After a parallel region libgomp's idle threads spin (GOMP_SPINCOUNT,
 * 300,000 rounds by default: milliseconds) before they sleep; on a machine
 * with few cores they would take a core from whatever is measured next.
 * omp_settle() waits, untimed, until they sleep.
 */
#include "bench.h"

#include <time.h>

#ifdef _OPENMP
#include <omp.h>

void omp_settle(void)
{
    struct timespec nap = {0, 30 * 1000 * 1000};
    while (nanosleep(&nap, &nap) != 0)
        ;
}

bool omp_available(void)
{
    return true;
}

unsigned omp_threads(void)
{
    return (unsigned)omp_get_max_threads();
}

void omp_primes(const uint64_t *n, int32_t *is, size_t count)
{
#pragma omp parallel for schedule(dynamic, 1)
    for (size_t i = 0; i < count; i++)
        is[i] = is_prime(n[i]);
}

void omp_pow10(const uint64_t *in, uint64_t *out, size_t count)
{
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < count; i++)
        out[i] = pow10_u64(in[i]);
}

void omp_triple(const uint64_t *in, uint64_t *out, size_t count)
{
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < count; i++)
        out[i] = triple_plus_one(in[i]);
}

void omp_spin(const uint64_t *rounds, size_t count, unsigned threads)
{
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads)
    for (size_t i = 0; i < count; i++)
        spin(rounds[i]);
}

static void one_span(const uint64_t *rounds, span *out, size_t i)
{
    out[i].worker = omp_get_thread_num();
    out[i].start_ns = now_ns();
    spin(rounds[i]);
    out[i].end_ns = now_ns();
}

void omp_spans(const uint64_t *rounds, span *out, size_t count, bool dynamic)
{
    if (dynamic) {
#pragma omp parallel for schedule(dynamic, 1)
        for (size_t i = 0; i < count; i++)
            one_span(rounds, out, i);
    } else {
#pragma omp parallel for schedule(static)
        for (size_t i = 0; i < count; i++)
            one_span(rounds, out, i);
    }
}

#else /* !_OPENMP */

void omp_settle(void)
{
}

bool omp_available(void)
{
    return false;
}

unsigned omp_threads(void)
{
    return 0;
}

void omp_primes(const uint64_t *n, int32_t *is, size_t count)
{
    (void)n, (void)is, (void)count;
    die("built without OpenMP");
}

void omp_pow10(const uint64_t *in, uint64_t *out, size_t count)
{
    (void)in, (void)out, (void)count;
    die("built without OpenMP");
}

void omp_triple(const uint64_t *in, uint64_t *out, size_t count)
{
    (void)in, (void)out, (void)count;
    die("built without OpenMP");
}

void omp_spin(const uint64_t *rounds, size_t count, unsigned threads)
{
    (void)rounds, (void)count, (void)threads;
    die("built without OpenMP");
}

void omp_spans(const uint64_t *rounds, span *out, size_t count, bool dynamic)
{
    (void)rounds, (void)out, (void)count, (void)dynamic;
    die("built without OpenMP");
}

#endif /* _OPENMP */
