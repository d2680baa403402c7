/*
 * tbb-none.c — cfbench built without oneTBB (configure found none, or a
 * sanitizer build): the rows say so, and these are never called.
 */
#include "bench.h"

bool tbb_available(void)
{
    return false;
}

unsigned tbb_threads(void)
{
    return 0;
}

void tbb_settle(void)
{
}

double tbb_stream_empty(size_t n)
{
    (void)n;
    die("built without oneTBB");
}

void tbb_pow10(const uint64_t *in, uint64_t *out, size_t count, bool static_split)
{
    (void)in, (void)out, (void)count, (void)static_split;
    die("built without oneTBB");
}

void tbb_spans(const uint64_t *rounds, span *out, size_t count, bool one_by_one)
{
    (void)rounds, (void)out, (void)count, (void)one_by_one;
    die("built without oneTBB");
}
