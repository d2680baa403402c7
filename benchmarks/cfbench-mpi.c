/*
 * cfbench-mpi.c — the figures of cfbench's mpi section, taken under mpirun.
 *
 *   mpirun --oversubscribe -np 3 cfbench-mpi [--quick] [--scale K]
 *
 * cfbench itself needs no MPI: its section `mpi` (bench-mpi.c) starts this
 * program under mpirun and reads the one flat JSON object rank 0 prints on
 * stdout ({"mpi.pingpong_us": 3.1, ...}), as it reads py_bench.py's. Rank 0
 * is the root of a cf_mpi_pool_new pool, the other ranks serve it, each
 * with a local process pool of one worker per CPU.
 *
 * In one run, in this order: the raw MPI ping-pong of 8 bytes between
 * ranks 0 and 1 (before the pool exists, every other rank waiting in a
 * barrier), the median round trip of an empty task, the throughput of
 * empty tasks streamed (all submitted, then all waited for), the seed's
 * x^10 over 3000 integers (serial loop on rank 0 vs cf_map on the pool)
 * and the seed's primes (serial vs cf_map, one number a chunk). Every
 * answer the pool gives is checked against the serial loop's.
 */
#include "bench.h"

#include <cfutures-mpi.h>

#include <stdlib.h>
#include <string.h>

static int rank;

typedef struct opts {
    bool     quick;
    unsigned scale;
} opts;

static opts parse(int argc, char **argv)
{
    opts o = {.scale = 0};
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--quick") == 0)
            o.quick = true;
        else if (strcmp(argv[i], "--scale") == 0 && i + 1 < argc)
            o.scale = (unsigned)strtoul(argv[++i], NULL, 10);
        else
            die("cfbench-mpi: unknown argument %s", argv[i]);
    }
    if (o.scale < 1 || o.scale > 10000)
        o.scale = o.quick ? 1 : 6;
    return o;
}

/* Mean microseconds of a round trip of 8 bytes, rank 0 <-> rank 1; every
 * rank calls it. */
static double pingpong_us(unsigned reps)
{
    uint64_t x = 0;
    for (unsigned pass = 0; pass < 2; pass++) {    /* the first pass warms up */
        MPI_Barrier(MPI_COMM_WORLD);
        double t0 = now_s();
        for (unsigned i = 0; i < reps && rank < 2; i++) {
            if (rank == 0) {
                MPI_Send(&x, 8, MPI_BYTE, 1, 1, MPI_COMM_WORLD);
                MPI_Recv(&x, 8, MPI_BYTE, 1, 1, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
            } else {
                MPI_Recv(&x, 8, MPI_BYTE, 0, 1, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
                MPI_Send(&x, 8, MPI_BYTE, 0, 1, MPI_COMM_WORLD);
            }
        }
        double us = (now_s() - t0) / reps * 1e6;
        MPI_Barrier(MPI_COMM_WORLD);
        if (pass == 1)
            return us;
    }
    return 0;
}

/* Seconds to submit n empty tasks, then wait for each result. */
static double stream_s(cf_executor *ex, size_t n, cf_future **fs)
{
    double t0 = now_s();
    for (size_t i = 0; i < n; i++)
        check(cf_submit(ex, empty_task, NULL, 0, 0, &fs[i]), "cf_submit");
    for (size_t i = 0; i < n; i++) {
        check(cf_future_result(fs[i], NULL, 0, -1), "empty task");
        cf_future_free(fs[i]);
    }
    return now_s() - t0;
}

typedef struct mapped {
    cf_executor    *ex;      /* NULL: the serial loop */
    cf_fn          *fn;
    const uint64_t *in;
    void           *out;
    size_t          out_size, n, chunk;
} mapped;

static void run_mapped(void *ctx)
{
    mapped *m = ctx;
    if (m->ex != NULL) {
        cf_map_options mo = {.chunksize = m->chunk};
        check(cf_map(m->ex, m->fn, m->in, sizeof *m->in, m->out, m->out_size, m->n, &mo), "cf_map");
        return;
    }
    for (size_t i = 0; i < m->n; i++)
        check(m->fn(&m->in[i], sizeof *m->in, (char *)m->out + i * m->out_size, m->out_size), "task");
}

/* Best seconds of the serial loop and of cf_map on ex, over reps runs each,
 * taking turns; the pool's outputs must be the loop's. */
static void serial_vs_pool(cf_executor *ex, cf_fn *fn, const uint64_t *in, size_t n, size_t out_size,
                           size_t chunk, unsigned reps, double *serial, double *pool)
{
    void *want = xmalloc(n * out_size), *got = xmalloc(n * out_size);
    mapped s = {.fn = fn, .in = in, .out = want, .out_size = out_size, .n = n};
    mapped p = {.ex = ex, .fn = fn, .in = in, .out = got, .out_size = out_size, .n = n, .chunk = chunk};
    *serial = *pool = -1;
    for (unsigned r = 0; r < reps; r++) {
        double a = best_time(run_mapped, &s, 1, 1, 0), b = best_time(run_mapped, &p, 1, 1, 0);
        if (*serial < 0 || a < *serial)
            *serial = a;
        if (*pool < 0 || b < *pool)
            *pool = b;
        if (memcmp(want, got, n * out_size) != 0)
            die("cfbench-mpi: the pool's outputs differ from the serial loop's");
    }
    free(want);
    free(got);
}

static void root(cf_executor *ex, const opts *o, double pingpong)
{
    unsigned rt_reps = o->quick ? 200 : 5000;
    size_t stream_n = o->quick ? 2000 : 100000;
    unsigned stream_reps = o->quick ? 1 : 3;
    unsigned map_reps = o->quick ? 1 : 20;
    unsigned prime_reps = o->quick ? 1 : 2;

    double rt = executor_round_trip_ns(ex, rt_reps) * 1e-3;
    cf_future **fs = xmalloc(stream_n * sizeof *fs);
    double best = -1;
    for (unsigned r = 0; r < stream_reps; r++) {
        double t = stream_s(ex, stream_n, fs);
        if (best < 0 || t < best)
            best = t;
    }
    free(fs);

    enum { POW_N = 3000 };
    uint64_t *x = xmalloc(POW_N * sizeof *x);
    for (size_t i = 0; i < POW_N; i++)
        x[i] = i;
    double pow_serial, pow_pool;
    serial_vs_pool(ex, pow10_task, x, POW_N, sizeof(uint64_t), 0, map_reps, &pow_serial, &pow_pool);
    free(x);

    size_t pn = (size_t)SEED_COUNT * o->scale;
    uint64_t *pr = xmalloc(pn * sizeof *pr);
    for (size_t i = 0; i < pn; i++)
        pr[i] = seed_numbers[i % SEED_COUNT];
    double pr_serial, pr_pool;
    serial_vs_pool(ex, prime_task, pr, pn, sizeof(int32_t), 1, prime_reps, &pr_serial, &pr_pool);
    free(pr);

    int size = 0;
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    printf("{\"mpi.ranks\": %d, \"mpi.workers\": %u,\n"
           " \"mpi.pingpong_us\": %.3f, \"mpi.roundtrip_us\": %.3f,\n"
           " \"mpi.stream_n\": %zu, \"mpi.stream_tasks_s\": %.1f,\n"
           " \"mpi.pow10_n\": %d, \"mpi.pow10_serial_s\": %.9f, \"mpi.pow10_pool_s\": %.9f,\n"
           " \"mpi.primes_n\": %zu, \"mpi.primes_serial_s\": %.6f, \"mpi.primes_pool_s\": %.6f}\n",
           size, cf_executor_workers(ex), pingpong, rt, stream_n, (double)stream_n / best, POW_N,
           pow_serial, pow_pool, pn, pr_serial, pr_pool);
    fflush(stdout);
}

int main(int argc, char **argv)
{
    int provided;
    MPI_Init_thread(&argc, &argv, MPI_THREAD_SERIALIZED, &provided);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    opts o = parse(argc, argv);
    double pp = pingpong_us(o.quick ? 500 : 5000);
    cf_executor *ex;
    check(cf_mpi_pool_new(&ex, MPI_COMM_WORLD, 0, NULL), "cf_mpi_pool_new");
    if (ex != NULL) {
        root(ex, &o, pp);
        cf_executor_free(ex);
    }
    MPI_Finalize();
    return 0;
}
