/*
 * bench-sleep.c — seed 004's lesson: waiting scales past the cores, computing does not.
 *
 * The seed's add() sleeps 0.1 s and returns x + y; its ten pairs go through
 * Pool(5) five times faster and Pool(10) ten times faster, whatever the
 * number of cores. Its CPU-bound add() (a loop of 3 million rounds in
 * Python) gains only as many times as there are cores. Here the same ten
 * pairs go through cf_map on pools of 1, 5 and 10 workers of each kind; the
 * CPU-bound task spins for a duration calibrated now (~60 ms on one core),
 * since 3 million C rounds would take a millisecond. Pool creation is not
 * timed, as in the seed.
 */
#include "bench.h"

#include <stdlib.h>

static const int64_t pairs[][2] = {
    {10, 1}, {10, 2}, {10, 3}, {10, 4}, {10, 5}, {3, 3}, {2, 2}, {1, 1}, {1, 3}, {4, 3},
};
enum { NPAIRS = sizeof pairs / sizeof pairs[0] };
static const unsigned pool_sizes[] = {1, 5, 10};

/* One cf_map of the ten pairs on a new pool of `workers`; returns its time. */
static double map_pairs(pool_kind k, unsigned workers, cf_fn *fn, uint64_t cost)
{
    add_arg args[NPAIRS];
    int64_t sums[NPAIRS];
    for (size_t i = 0; i < NPAIRS; i++)
        args[i] = (add_arg){pairs[i][0], pairs[i][1], cost};
    cf_executor *ex = pool_open(k, workers);
    double t0 = now_s();
    check(cf_map(ex, fn, args, sizeof args[0], sums, sizeof sums[0], NPAIRS, NULL), "cf_map");
    double t = now_s() - t0;
    cf_executor_free(ex);
    for (size_t i = 0; i < NPAIRS; i++)
        if (sums[i] != pairs[i][0] + pairs[i][1])
            die("sleep: add(%lld, %lld) gave %lld", (long long)pairs[i][0],
                (long long)pairs[i][1], (long long)sums[i]);
    return t;
}

static void one_table(const char *key, const char *title, cf_fn *fn,
                      uint64_t cost, const char *note)
{
    static const column cols[] = {
        {"workers", "workers", "%.0f"},
        {"time_s", "time (s)", "%.3f"},
        {"speedup", "speedup vs 1 worker", "%.2fx"},
    };
    table *t = table_begin(key, title, cols, 3);
    for (int k = 0; k < POOL_KINDS; k++) {
        double one = 0;
        for (size_t s = 0; s < sizeof pool_sizes / sizeof pool_sizes[0]; s++) {
            unsigned w = pool_sizes[s];
            progress("sleep: %s, %s, %u workers", key, pool_title((pool_kind)k), w);
            double time = map_pairs((pool_kind)k, w, fn, cost);
            if (s == 0)
                one = time;
            table_row(t, "%s, %u worker%s", pool_title((pool_kind)k), w, w > 1 ? "s" : "");
            table_set(t, "workers", w);
            table_set(t, "time_s", time);
            table_set(t, "speedup", one / time);
        }
    }
    table_note(t, "%s", note);
    table_end(t);
}

void bench_sleep(const bench_config *cfg)
{
    double nap = cfg->quick ? 0.01 : 0.1, work = cfg->quick ? 0.005 : 0.06;
    char title[128], note[200];

    snprintf(title, sizeof title, "add() sleeping %.0f ms, 10 pairs, one cf_map", nap * 1e3);
    snprintf(note, sizeof note, "sleeping tasks leave the cores idle: 10 workers finish in one "
                                "nap (%.0f ms) on %u cores", nap * 1e3, cfg->cores);
    one_table("sleeping", title, sleep_add_task, (uint64_t)(nap * 1e9), note);

    progress("sleep: calibrating the CPU-bound task");
    uint64_t rounds = spin_iters_for(work);
    snprintf(title, sizeof title, "add() computing ~%.0f ms (%llu rounds), 10 pairs, one cf_map",
             work * 1e3, (unsigned long long)rounds);
    snprintf(note, sizeof note, "computing tasks need cores: past %u workers (the cores) the "
                                "speedup stops growing", cfg->cores);
    one_table("computing", title, spin_add_task, rounds, note);
}
