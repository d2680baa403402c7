/*
 * crash — a task that crashes its worker fails only its own future.
 *
 * Lesson: a task that segfaults kills the worker process that ran it, and
 * nothing else. Its future reports CF_ECRASHED, and cf_future_signal names
 * the signal (SIGSEGV); the pool reaps the dead worker and forks a
 * replacement with the same cf_worker_id, and every other task still
 * delivers its result. Compare a pool that breaks for good when one worker
 * dies (Python's ProcessPoolExecutor: BrokenProcessPool for every pending
 * task), or a thread pool, where the same bad pointer kills the whole program.
 *
 * Run: demo/crash
 */
#include <cfutures.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#define N   8
#define BAD 3                       /* the task that crashes */

typedef struct { long square; int worker, pid; } answer;

static int *volatile nowhere;       /* NULL, but the compiler cannot know */

static void check(int rc, const char *what)
{
    if (rc != 0) {
        fprintf(stderr, "%s: %s\n", what, cf_strerror(rc));
        exit(1);
    }
}

/* Writes through a NULL pointer. In a sanitized build, UndefinedBehaviorSanitizer
 * is told not to catch it first (nor to lose that order by inlining): the
 * worker must die of SIGSEGV. */
__attribute__((noinline, no_sanitize("null")))
static void crash_here(void)
{
    *nowhere = 1;
}

static int square(const void *arg, size_t as, void *res, size_t rs)
{
    (void)as, (void)rs;
    int x = *(const int *)arg;
    if (x == BAD)
        crash_here();               /* SIGSEGV: the worker process dies here */
    usleep(10000);                  /* so that both workers take tasks */
    *(answer *)res = (answer){(long)x * x, cf_worker_id(), getpid()};
    return 0;
}

int main(void)
{
    /* A crashed worker would dump core: not wanted for a demo. */
    struct rlimit no_core = {0, 0};
    setrlimit(RLIMIT_CORE, &no_core);

    cf_executor *ex;
    cf_options two = {.workers = 2};
    check(cf_process_pool_new(&ex, &two), "cf_process_pool_new");

    cf_future *fs[N];
    for (int i = 0; i < N; i++)
        check(cf_submit(ex, square, &i, sizeof i, sizeof(answer), &fs[i]), "cf_submit");
    printf("%d tasks on 2 worker processes; task %d dereferences a NULL pointer.\n", N, BAD);

    int ok = 0, crashed = 0;
    for (int i = 0; i < N; i++) {
        answer a;
        int rc = cf_future_result(fs[i], &a, sizeof a, -1);
        if (rc == 0) {
            printf("  task %d: %d squared is %ld (worker %d, pid %d)\n", i, i, a.square, a.worker, a.pid);
            ok += a.square == (long)i * i;
        } else {
            int sig = cf_future_signal(fs[i]);
            cf_task_info info;
            check(cf_future_info(fs[i], &info), "cf_future_info");
            printf("  task %d: %s (%s) on worker %d, killed by signal %d, SIG%s (%s)\n", i,
                   rc == CF_ECRASHED ? "CF_ECRASHED" : "error", cf_strerror(rc), info.worker, sig,
                   sig ? sigabbrev_np(sig) : "-", sig ? strsignal(sig) : "none");
            crashed += rc == CF_ECRASHED && sig == SIGSEGV;
        }
        cf_future_free(fs[i]);
    }
    printf("%d of %d results correct, %d task crashed with SIGSEGV.\n", ok, N, crashed);

    /* The pool is whole again: both worker ids answer, one from a new process. */
    answer after[N];
    int in[N] = {10, 11, 12, 13, 14, 15, 16, 17};
    cf_map_options one = {.chunksize = 1};
    check(cf_map(ex, square, in, sizeof in[0], after, sizeof after[0], N, &one), "cf_map after the crash");
    printf("After the crash, %d more tasks all succeed; they ran on:", N);
    int seen[2] = {0, 0};
    for (int i = 0; i < N; i++)
        if (!seen[after[i].worker]++)
            printf(" worker %d (pid %d)", after[i].worker, after[i].pid);
    printf("\nThe worker that crashed was replaced by a new process with the same id;\n"
           "the pool still has %u workers.\n", cf_executor_workers(ex));
    cf_executor_free(ex);
    return ok == N - 1 && crashed == 1 ? 0 : 1;
}
