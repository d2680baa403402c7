/*
 * tbb.cc — the oneTBB rows: the C++ task scheduler as a peer of the pools.
 *
 * A peer measurement, not part of the library: built into cfbench only when
 * configure found oneTBB (pkg-config tbb), otherwise tbb-none.c stands in
 * and tbb_available() says so. Each loop runs the very function the pools
 * and OpenMP run (workloads.c), in TBB's default arena (one thread per CPU,
 * as the pools and OpenMP have):
 *
 *   tbb_stream_empty   task_group: run() of n empty tasks, then wait(): the
 *                      peer of cf_submit streaming (bench-throughput.c)
 *   tbb_pow10          parallel_for of x^10 over a blocked_range, with the
 *                      static_partitioner (OpenMP static's peer) or the
 *                      auto_partitioner (TBB's default; bench-overhead.c)
 *   tbb_spans          parallel_for over skewed elements with the
 *                      auto_partitioner, or the simple_partitioner with
 *                      grain 1 (OpenMP dynamic,1's peer; bench-balance.c)
 *
 * Like libgomp's, TBB's idle workers spin a while before they sleep:
 * tbb_settle() waits, untimed, until they do.
 */
extern "C" {
#include "bench.h"
}

#include <oneapi/tbb/blocked_range.h>
#include <oneapi/tbb/info.h>
#include <oneapi/tbb/parallel_for.h>
#include <oneapi/tbb/partitioner.h>
#include <oneapi/tbb/task_arena.h>
#include <oneapi/tbb/task_group.h>

#include <time.h>

namespace {

typedef tbb::blocked_range<size_t> range;

void one_span(const uint64_t *rounds, span *out, size_t i)
{
    out[i].worker = tbb::this_task_arena::current_thread_index();
    out[i].start_ns = now_ns();
    spin(rounds[i]);
    out[i].end_ns = now_ns();
}

} // namespace

extern "C" {

bool tbb_available(void)
{
    return true;
}

unsigned tbb_threads(void)
{
    return (unsigned)tbb::this_task_arena::max_concurrency();
}

void tbb_settle(void)
{
    struct timespec nap = {0, 30 * 1000 * 1000};
    while (nanosleep(&nap, &nap) != 0)
        ;
}

double tbb_stream_empty(size_t n)
{
    tbb::task_group warm;    /* untimed: the arena's threads start here */
    for (unsigned i = 0; i < 4 * tbb_threads(); i++)
        warm.run([] { (void)empty_task(nullptr, 0, nullptr, 0); });
    warm.wait();

    tbb::task_group g;
    double t0 = now_s();
    for (size_t i = 0; i < n; i++)
        g.run([] { (void)empty_task(nullptr, 0, nullptr, 0); });
    g.wait();
    return now_s() - t0;
}

void tbb_pow10(const uint64_t *in, uint64_t *out, size_t count, bool static_split)
{
    auto body = [in, out](const range &r) {
        for (size_t i = r.begin(); i != r.end(); ++i)
            out[i] = pow10_u64(in[i]);
    };
    if (static_split)
        tbb::parallel_for(range(0, count), body, tbb::static_partitioner());
    else
        tbb::parallel_for(range(0, count), body, tbb::auto_partitioner());
}

void tbb_spans(const uint64_t *rounds, span *out, size_t count, bool one_by_one)
{
    auto body = [rounds, out](const range &r) {
        for (size_t i = r.begin(); i != r.end(); ++i)
            one_span(rounds, out, i);
    };
    if (one_by_one)
        tbb::parallel_for(range(0, count, 1), body, tbb::simple_partitioner());
    else
        tbb::parallel_for(range(0, count), body, tbb::auto_partitioner());
}

} // extern "C"
