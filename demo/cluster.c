/*
 * cluster — the seed's prime list across the ranks of an MPI job
 * (libcfutures-mpi; built when configure found MPI).
 *
 * Lesson: the same futures, on other machines. Rank 0 submits each number
 * as a task and takes the answers in order; the other
 * ranks run them, each in a local process pool. The loop on rank 0 alone
 * comes first, for comparison. One number, 0, makes its task segfault on
 * purpose: it fails alone (CF_ECRASHED, the rank in its text), the other
 * answers come all the same.
 *
 * Run: mpirun -np 3 demo/cluster            (one machine; as root add
 *      --allow-run-as-root, on fewer cores --oversubscribe)
 *      mpirun -H host1,host2 -np 4 demo/cluster
 *      srun -n 4 demo/cluster
 */
#include <cfutures-mpi.h>

#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#define N 7

static const uint64_t numbers[N] = {112272535095293, 112582705942171, 112272535095293,
                                    115280095190773, 115797848077099, 1099726899285419, 0};

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* The seed's is_prime; 0 crashes its worker, to show that it fails alone. */
static int is_prime(const void *arg, size_t as, void *res, size_t rs)
{
    (void)as, (void)rs;
    uint64_t n = *(const uint64_t *)arg;
    if (n == 0)
        raise(SIGSEGV);
    int prime = n % 2 != 0;
    for (uint64_t i = 3; prime && i * i <= n; i += 2)
        if (n % i == 0)
            prime = 0;
    *(int *)res = prime;
    return 0;
}

int main(int argc, char **argv)
{
    int provided, rank, size;
    MPI_Init_thread(&argc, &argv, MPI_THREAD_SERIALIZED, &provided);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    cf_executor *ex;
    int rc = cf_mpi_pool_new(&ex, MPI_COMM_WORLD, 0, NULL);
    if (rc != 0) {
        fprintf(stderr, "rank %d: cf_mpi_pool_new: %s\n", rank, cf_strerror(rc));
        MPI_Finalize();
        return 1;
    }
    if (ex != NULL) {
        printf("%d ranks, %u workers on ranks 1..%d\n", size, cf_executor_workers(ex), size - 1);
        double t0 = now();
        int ans;
        for (int i = 0; i < N - 1; i++)
            is_prime(&numbers[i], sizeof numbers[i], &ans, sizeof ans);
        printf("  on rank 0 alone (a loop): %.3f s\n", now() - t0);

        t0 = now();
        cf_future *fs[N];
        for (int i = 0; i < N; i++) {
            if (cf_submit(ex, is_prime, &numbers[i], sizeof numbers[i], sizeof(int), &fs[i]) != 0) {
                fprintf(stderr, "cf_submit failed\n");
                return 1;
            }
        }
        int failed = 0;
        for (int i = 0; i < N; i++) {
            rc = cf_future_result(fs[i], &ans, sizeof ans, -1);
            if (rc == 0) {
                printf("  %llu: %s\n", (unsigned long long)numbers[i], ans ? "prime" : "not prime");
            } else {
                printf("  %llu: %s (%s)\n", (unsigned long long)numbers[i], cf_strerror(rc),
                       cf_future_error_text(fs[i]) ? cf_future_error_text(fs[i]) : "");
                failed += rc == CF_ECRASHED;
            }
            cf_future_free(fs[i]);
        }
        printf("  across the ranks: %.3f s, %d task crashed, the others answered\n", now() - t0,
               failed);
        cf_executor_free(ex);
    }
    MPI_Finalize();
    return 0;
}
