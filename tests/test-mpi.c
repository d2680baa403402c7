/*
 * test-mpi — libcfutures-mpi under mpirun (tests/test-mpi.sh runs it with 3
 * ranks): rank 0 is the root, ranks 1 and 2 serve, each through a process
 * pool of 2 workers. A plain program (no Criterion: its runner forks, which
 * does not go with mpirun); each rank exits 1 at the first wrong value, and
 * mpirun then fails.
 *
 *   test-mpi main      submit and result, 10^4 tasks, a remote segfault
 *                      (CF_ECRASHED, SIGSEGV, the pool goes on), remote
 *                      timeouts (the ranks' task_timeout_ms and
 *                      cf_submit_with's), cf_map of 10^6 elements,
 *                      cf_map_chunks, a map element that crashes, cancel of
 *                      a task waiting on the root and of one running on a
 *                      rank, shutdown with work pending; the serving ranks
 *                      return 0 with NULL
 *   test-mpi mismatch  rank 2 sets CFUTURES_MPI_BUILD_SALT, which the
 *                      library adds to its build hash: every rank gets
 *                      CF_EINVAL; without it a second pool works
 *   test-mpi nodes     what each rank's local pool does, on every rank:
 *                      max_tasks_per_worker 1 (each task in a new worker, its
 *                      initializer run first) with fork workers, then exec
 *                      workers (a fresh image: a global set before the pool
 *                      is not there; a crash there fails alone)
 *   test-mpi bigmap    cf_map of 10^8 one-byte elements: the outputs are
 *                      right, and the root's peak resident memory grows by
 *                      less than BIGMAP_EXTRA_MB beyond its input and output
 *                      arrays (chunks are queued while fewer than a bound
 *                      wait: what a map holds does not grow with n)
 *   test-mpi rankdeath a task kills its serving rank (SIGKILL): Open MPI
 *                      ends the job; test-mpi.sh checks that mpirun fails
 *                      within its bound and that no process of the job
 *                      (ranks, their zygotes, workers) is left
 */
#include <cfutures-mpi.h>

#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static int rank;
static int marker;           /* set to 42 by main on every rank, before any pool */
static int initialized;      /* set by mark_init in each worker */

#define CHECK(cond, ...)                                                          \
    do {                                                                          \
        if (!(cond)) {                                                            \
            fprintf(stderr, "test-mpi (rank %d): FAIL %s:%d: ", rank, __FILE__,   \
                    __LINE__);                                                    \
            fprintf(stderr, __VA_ARGS__);                                         \
            fputc('\n', stderr);                                                  \
            exit(1);                                                              \
        }                                                                         \
    } while (0)

static int square(const void *arg, size_t n, void *res, size_t m)
{
    (void)n;
    (void)m;
    uint64_t x;
    memcpy(&x, arg, sizeof x);
    x = x * x + 1;
    memcpy(res, &x, sizeof x);
    return 0;
}

static int crash(const void *arg, size_t n, void *res, size_t m)
{
    (void)arg;
    (void)n;
    (void)res;
    (void)m;
    raise(SIGSEGV);
    return 0;
}

static int nap(const void *arg, size_t n, void *res, size_t m)
{
    (void)n;
    (void)res;
    (void)m;
    int ms;
    memcpy(&ms, arg, sizeof ms);
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000};
    while (nanosleep(&ts, &ts) != 0)
        ;
    return 0;
}

/* Element 500 of a map crashes its worker. */
static int square_or_crash(const void *arg, size_t n, void *res, size_t m)
{
    uint64_t x;
    memcpy(&x, arg, sizeof x);
    if (x == 500)
        raise(SIGSEGV);
    return square(arg, n, res, m);
}

static int square_chunk(const void *in, size_t in_size, void *out, size_t out_size, size_t first,
                        size_t count)
{
    for (size_t k = 0; k < count; k++)
        square((const char *)in + k * in_size, in_size, (char *)out + k * out_size, out_size);
    return first == 0 ? 7 : 0;    /* the first chunk reports a code of its own */
}

/* The initializer of test_nodes: the worker's tasks see it ran. */
static int mark_init(const void *arg, size_t n)
{
    (void)arg;
    (void)n;
    initialized = 1;
    return 0;
}

typedef struct whoami {
    int32_t pid, rank, marker, initialized;
} whoami;

/* Where a task ran, and what its worker had. */
static int who(const void *arg, size_t n, void *res, size_t m)
{
    (void)arg;
    (void)n;
    (void)m;
    const char *r = getenv("OMPI_COMM_WORLD_RANK");
    whoami w = {.pid = (int32_t)getpid(), .rank = r != NULL ? atoi(r) : -1, .marker = marker,
                .initialized = initialized};
    memcpy(res, &w, sizeof w);
    return 0;
}

static int byte3x(const void *arg, size_t n, void *res, size_t m)
{
    (void)n;
    (void)m;
    *(unsigned char *)res = (unsigned char)(*(const unsigned char *)arg * 3u + 1u);
    return 0;
}

/* A line of /proc/self/status ("VmHWM:", "VmRSS:"), in kB; -1 if none. */
static long status_kb(const char *key)
{
    FILE *fp = fopen("/proc/self/status", "r");
    char line[256];
    long kb = -1;
    size_t k = strlen(key);
    while (fp != NULL && fgets(line, sizeof line, fp) != NULL)
        if (strncmp(line, key, k) == 0)
            kb = strtol(line + k, NULL, 10);
    if (fp != NULL)
        fclose(fp);
    return kb;
}

#ifndef BIGMAP_N
#define BIGMAP_N        100000000u
#endif
#define BIGMAP_EXTRA_MB 64

static void test_bigmap(cf_executor *ex)
{
    unsigned char *in = malloc(BIGMAP_N), *out = malloc(BIGMAP_N);
    CHECK(in != NULL && out != NULL, "memory");
    for (size_t i = 0; i < BIGMAP_N; i++)
        in[i] = (unsigned char)(i * 7);
    memset(out, 0xff, BIGMAP_N);    /* not 0: malloc + memset 0 may become a calloc */
    long before = status_kb("VmHWM:");    /* the arrays are resident now */
    int rc = cf_map(ex, byte3x, in, 1, out, 1, BIGMAP_N, NULL);
    long after = status_kb("VmHWM:");
    CHECK(rc == 0, "map: %d", rc);
    for (size_t i = 0; i < BIGMAP_N; i++)
        CHECK(out[i] == (unsigned char)(in[i] * 3u + 1u), "element %zu: %u", i, out[i]);
    CHECK(before > 0 && after > 0, "no VmHWM");
    long extra_mb = (after - before) / 1024;
    printf("test-mpi bigmap: %u elements; the root's peak resident memory grew by %ld MB "
           "beyond its %u MB of arrays (bound %d MB)\n",
           BIGMAP_N, extra_mb, 2 * BIGMAP_N >> 20, BIGMAP_EXTRA_MB);
    CHECK(extra_mb < BIGMAP_EXTRA_MB, "the root grew by %ld MB during the map", extra_mb);
    free(in);
    free(out);
}

/* Kills the process whose pid is the argument: a serving rank. */
static int kill_pid(const void *arg, size_t n, void *res, size_t m)
{
    (void)n;
    (void)res;
    (void)m;
    int32_t pid;
    memcpy(&pid, arg, sizeof pid);
    kill((pid_t)pid, SIGKILL);
    return 0;
}

static uint64_t sq(uint64_t x)
{
    return x * x + 1;
}

static void test_submit(cf_executor *ex)
{
    CHECK(cf_executor_workers(ex) == 4, "workers %u", cf_executor_workers(ex));
    uint64_t x = 7, y = 0;
    cf_future *f;
    CHECK(cf_submit(ex, square, &x, sizeof x, sizeof y, &f) == 0, "submit");
    CHECK(cf_future_result(f, &y, sizeof y, 60000) == 0 && y == 50, "result %llu",
          (unsigned long long)y);
    cf_future_free(f);
}

static void test_many(cf_executor *ex)
{
    enum { N = 10000 };
    cf_future **fs = calloc(N, sizeof *fs);
    CHECK(fs != NULL, "memory");
    for (uint64_t i = 0; i < N; i++)
        CHECK(cf_submit(ex, square, &i, sizeof i, sizeof i, &fs[i]) == 0, "submit %llu",
              (unsigned long long)i);
    for (uint64_t i = 0; i < N; i++) {
        uint64_t y = 0;
        int rc = cf_future_result(fs[i], &y, sizeof y, 120000);
        CHECK(rc == 0 && y == sq(i), "task %llu: %d, %llu", (unsigned long long)i, rc,
              (unsigned long long)y);
        cf_future_free(fs[i]);
    }
    free(fs);
}

static void test_crash(cf_executor *ex)
{
    cf_future *f;
    uint64_t y;
    CHECK(cf_submit(ex, crash, NULL, 0, sizeof y, &f) == 0, "submit");
    int rc = cf_future_result(f, &y, sizeof y, 60000);
    CHECK(rc == CF_ECRASHED, "crash: %d", rc);
    CHECK(cf_future_signal(f) == SIGSEGV, "signal %d", cf_future_signal(f));
    const char *t = cf_future_error_text(f);
    CHECK(t != NULL && strncmp(t, "rank ", 5) == 0, "text %s", t ? t : "(null)");
    cf_future_free(f);
    test_submit(ex);    /* the pool goes on */
}

static void test_timeouts(cf_executor *ex)
{
    /* The ranks' own limit (task_timeout_ms 1500). */
    int ms = 20000;
    cf_future *f;
    CHECK(cf_submit(ex, nap, &ms, sizeof ms, 0, &f) == 0, "submit");
    int rc = cf_future_result(f, NULL, 0, 60000);
    CHECK(rc == CF_ETIMEDOUT, "pool limit: %d", rc);
    cf_future_free(f);
    /* A task's own limit. */
    cf_submit_options so = {.timeout_ms = 200};
    CHECK(cf_submit_with(ex, nap, &ms, sizeof ms, 0, &so, &f) == 0, "submit_with");
    rc = cf_future_result(f, NULL, 0, 60000);
    CHECK(rc == CF_ETIMEDOUT, "task limit: %d", rc);
    cf_future_free(f);
    /* No limit for this one: it outlives the pool's. */
    ms = 1800;
    so.timeout_ms = -1;
    CHECK(cf_submit_with(ex, nap, &ms, sizeof ms, 0, &so, &f) == 0, "submit_with");
    rc = cf_future_result(f, NULL, 0, 60000);
    CHECK(rc == 0, "no limit: %d", rc);
    cf_future_free(f);
    test_submit(ex);
}

static void test_map(cf_executor *ex)
{
    enum { N = 1000000 };
    uint64_t *in = malloc(N * sizeof *in), *out = calloc(N, sizeof *out);
    int *status = malloc(N * sizeof *status);
    CHECK(in != NULL && out != NULL && status != NULL, "memory");
    for (uint64_t i = 0; i < N; i++)
        in[i] = i;
    cf_map_options mo = {.status = status};
    int rc = cf_map(ex, square, in, sizeof *in, out, sizeof *out, N, &mo);
    CHECK(rc == 0, "map: %d", rc);
    for (uint64_t i = 0; i < N; i++)
        CHECK(out[i] == sq(i) && status[i] == 0, "element %llu: %llu, %d", (unsigned long long)i,
              (unsigned long long)out[i], status[i]);

    /* Chunks: the first one's code stands for its elements. */
    memset(out, 0, N * sizeof *out);
    mo.chunksize = 1000;
    rc = cf_map_chunks(ex, square_chunk, in, sizeof *in, out, sizeof *out, N, &mo);
    CHECK(rc == 7, "map_chunks: %d", rc);
    for (uint64_t i = 0; i < N; i++)
        CHECK(out[i] == sq(i) && status[i] == (i < 1000 ? 7 : 0), "chunk element %llu: %d",
              (unsigned long long)i, status[i]);

    /* A crash fails its chunk only. */
    enum { M = 4000 };
    mo.chunksize = 100;
    rc = cf_map(ex, square_or_crash, in, sizeof *in, out, sizeof *out, M, &mo);
    CHECK(rc == CF_ECRASHED, "crashing map: %d", rc);
    for (uint64_t i = 0; i < M; i++) {
        bool hit = i >= 500 && i < 600;
        CHECK(hit ? status[i] == CF_ECRASHED : status[i] == 0 && out[i] == sq(i),
              "crashing map element %llu: %d", (unsigned long long)i, status[i]);
    }
    free(in);
    free(out);
    free(status);
    test_submit(ex);
}

static void test_cancel(cf_executor *ex)
{
    /* 128 tasks fill the credit (2 ranks x 2 workers x 32): the last
     * waits on the root, where cancel takes it; task 100 went to a rank,
     * where it waits in the local pool (about 50 naps before it there),
     * which cancels it. */
    enum { N = 160, SENT = 100 };
    int ms = 20;
    cf_future *fs[N];
    for (int i = 0; i < N; i++)
        CHECK(cf_submit(ex, nap, &ms, sizeof ms, 0, &fs[i]) == 0, "submit");
    int rc = cf_future_cancel(fs[N - 1]);
    CHECK(rc == 0, "cancel: %d", rc);
    CHECK(cf_future_cancelled(fs[N - 1]), "cancelled");
    CHECK(cf_future_result(fs[N - 1], NULL, 0, 0) == CF_ECANCELED, "result");
    rc = cf_future_cancel(fs[SENT]);
    CHECK(rc == 0, "cancel of a task sent: %d", rc);
    CHECK(cf_future_cancelled(fs[SENT]), "cancelled there");
    CHECK(cf_future_result(fs[SENT], NULL, 0, 0) == CF_ECANCELED, "result there");
    for (int i = 0; i < N - 1; i++) {
        if (i == SENT)
            continue;
        rc = cf_future_result(fs[i], NULL, 0, 60000);
        CHECK(rc == 0, "task %d: %d", i, rc);
    }
    for (int i = 0; i < N; i++)
        cf_future_free(fs[i]);
}

/* A task running on a rank: that rank kills its worker. */
static void test_cancel_running(cf_executor *ex)
{
    int ms = 30000;
    cf_submit_options so = {.timeout_ms = -1};
    cf_future *f;
    CHECK(cf_submit_with(ex, nap, &ms, sizeof ms, 0, &so, &f) == 0, "submit");
    for (int i = 0; i < 2000 && !cf_future_running(f); i++) {
        struct timespec ts = {0, 5000000};
        nanosleep(&ts, NULL);
    }
    CHECK(cf_future_running(f), "never sent");
    struct timespec ts = {0, 300000000};    /* most likely running there by now */
    nanosleep(&ts, NULL);
    int rc = cf_future_cancel(f);
    CHECK(rc == 0, "cancel: %d", rc);
    CHECK(cf_future_done(f) && cf_future_cancelled(f), "not cancelled");
    CHECK(cf_future_result(f, NULL, 0, 0) == CF_ECANCELED, "result");
    cf_future_free(f);
    test_submit(ex);
}

static void test_shutdown(cf_executor *ex)
{
    /* All of them go to the ranks (credit 128): there, the ones no worker
     * took are cancelled (TAG_DROP). */
    enum { N = 50 };
    int ms = 200;
    cf_future *fs[N];
    for (int i = 0; i < N; i++)
        CHECK(cf_submit(ex, nap, &ms, sizeof ms, 0, &fs[i]) == 0, "submit");
    CHECK(cf_shutdown(ex, true, true) == 0, "shutdown");
    int ran = 0, cancelled = 0;
    for (int i = 0; i < N; i++) {
        CHECK(cf_future_done(fs[i]), "future %d not done after shutdown", i);
        int rc = cf_future_result(fs[i], NULL, 0, 0);
        CHECK(rc == 0 || rc == CF_ECANCELED, "task %d: %d", i, rc);
        ran += rc == 0;
        cancelled += rc == CF_ECANCELED;
        cf_future_free(fs[i]);
    }
    CHECK(cancelled > 0, "none cancelled (%d ran)", ran);
    cf_future *f;
    uint64_t x = 1;
    CHECK(cf_submit(ex, square, &x, sizeof x, sizeof x, &f) == CF_ESHUTDOWN, "submit after");
    CHECK(cf_executor_resize(ex, 2) != 0, "resize");
}

/*
 * Each rank's local pool, as opts makes it: N tasks report where they ran.
 * Both ranks serve some; with max_tasks_per_worker 1 no two share a
 * worker, and every worker ran the initializer first; exec workers do not
 * have the marker main set before the pool (fork workers do).
 */
static void test_nodes(bool exec)
{
    cf_options opts = {.workers = 2, .max_tasks_per_worker = 1, .initializer = mark_init,
                       .start = exec ? CF_START_EXEC : CF_START_FORK};
    cf_executor *ex = NULL;
    int rc = cf_mpi_pool_new(&ex, MPI_COMM_WORLD, 0, &opts);
    CHECK(rc == 0, "cf_mpi_pool_new (%s): %d", exec ? "exec" : "fork", rc);
    if (ex == NULL) {
        CHECK(rank != 0, "the root got no executor");
        return;
    }
    enum { N = 24 };
    cf_future *fs[N];
    whoami w[N];
    for (int i = 0; i < N; i++)
        CHECK(cf_submit(ex, who, NULL, 0, sizeof w[i], &fs[i]) == 0, "submit %d", i);
    int on[3] = {0, 0, 0};
    for (int i = 0; i < N; i++) {
        rc = cf_future_result(fs[i], &w[i], sizeof w[i], 60000);
        CHECK(rc == 0, "task %d: %d", i, rc);
        cf_future_free(fs[i]);
        CHECK(w[i].rank == 1 || w[i].rank == 2, "task %d ran on rank %d", i, w[i].rank);
        on[w[i].rank]++;
        CHECK(w[i].initialized == 1, "task %d on rank %d: its worker ran no initializer", i, w[i].rank);
        CHECK(w[i].marker == (exec ? 0 : 42), "task %d on rank %d (%s worker) sees marker %d", i,
              w[i].rank, exec ? "exec" : "fork", w[i].marker);
        for (int j = 0; j < i; j++)
            CHECK(w[j].pid != w[i].pid, "tasks %d and %d ran in the same worker (pid %d) on rank %d", j, i,
                  w[i].pid, w[i].rank);
    }
    CHECK(on[1] > 0 && on[2] > 0, "tasks ran on rank 1: %d, rank 2: %d", on[1], on[2]);
    if (exec)
        test_crash(ex);
    cf_executor_free(ex);
}

/* What runs now, on stderr: a log that ends tells where it stopped. */
static void step(const char *name)
{
    fprintf(stderr, "test-mpi: %s\n", name);
}

int main(int argc, char **argv)
{
    int provided;
    MPI_Init_thread(&argc, &argv, MPI_THREAD_SERIALIZED, &provided);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    const char *mode = argc > 1 ? argv[1] : "main";
    cf_options opts = {.workers = 2, .task_timeout_ms = 1500};
    /* The big map's chunks run as tasks on the ranks, under the ranks' limit,
     * which is there for test_timeouts: two make checks at once made a chunk
     * of it outlast 1500 ms, killed, and cf_map answered CF_ETIMEDOUT. */
    if (strcmp(mode, "bigmap") == 0)
        opts.task_timeout_ms = 0;
    cf_executor *ex = (cf_executor *)&rank;    /* must stay untouched on error */
    marker = 42;

    if (strcmp(mode, "nodes") == 0) {
        test_nodes(false);
        test_nodes(true);
    }
    if (strcmp(mode, "rankdeath") == 0) {
        /* Rank 1's pid, for the task that kills it. */
        int32_t pid = (int32_t)getpid(), pids[3] = {0, 0, 0};
        MPI_Gather(&pid, 1, MPI_INT32_T, pids, 1, MPI_INT32_T, 0, MPI_COMM_WORLD);
        int rc = cf_mpi_pool_new(&ex, MPI_COMM_WORLD, 0, &opts);
        CHECK(rc == 0, "cf_mpi_pool_new: %d", rc);
        if (ex != NULL) {
            /* Some of them run on rank 1; then the root waits on tasks
             * that outlast any test. The job ends from outside (mpirun). */
            int ms = 600000;
            cf_submit_options so = {.timeout_ms = -1};
            cf_future *f[8], *g[8];
            for (int i = 0; i < 8; i++)
                CHECK(cf_submit(ex, kill_pid, &pids[1], sizeof pids[1], 0, &f[i]) == 0, "submit");
            for (int i = 0; i < 8; i++)
                CHECK(cf_submit_with(ex, nap, &ms, sizeof ms, 0, &so, &g[i]) == 0, "submit");
            for (int i = 0; i < 8; i++)
                rc = cf_future_result(g[i], NULL, 0, -1);
            fprintf(stderr, "test-mpi: FAIL: the root outlived a dead rank (%d)\n", rc);
            exit(1);
        }
        CHECK(false, "rank %d served on after rank 1 died", rank);
    }

    if (strcmp(mode, "mismatch") == 0) {
        if (rank == 2)
            setenv("CFUTURES_MPI_BUILD_SALT", "another build", 1);
        int rc = cf_mpi_pool_new(&ex, MPI_COMM_WORLD, 0, &opts);
        CHECK(rc == CF_EINVAL, "mismatch accepted: %d", rc);
        CHECK(ex == (cf_executor *)&rank, "ex written on error");
        unsetenv("CFUTURES_MPI_BUILD_SALT");
    }
    int rc = cf_mpi_pool_new(&ex, MPI_COMM_WORLD, 0, &opts);
    CHECK(rc == 0, "cf_mpi_pool_new: %d", rc);
    if (rank != 0) {
        CHECK(ex == NULL, "a serving rank got an executor");
    } else {
        CHECK(ex != NULL, "the root got no executor");
        test_submit(ex);
        if (strcmp(mode, "bigmap") == 0) {
            step("bigmap");
            test_bigmap(ex);
        }
        if (strcmp(mode, "main") == 0) {
            step("many");
            test_many(ex);
            step("crash");
            test_crash(ex);
            step("timeouts");
            test_timeouts(ex);
            step("map");
            test_map(ex);
            step("cancel");
            test_cancel(ex);
            step("cancel_running");
            test_cancel_running(ex);
            step("shutdown");
            test_shutdown(ex);
        }
        cf_executor_free(ex);
    }
    MPI_Finalize();
    if (rank == 0)
        printf("test-mpi %s: ok\n", mode);
    return 0;
}
