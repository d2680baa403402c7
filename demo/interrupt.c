/*
 * interrupt — Ctrl-C in the middle of a long map: one line, nothing left.
 *
 * Lesson (seed 003: Ctrl-C on a multiprocessing pool gave "Traceback x N ...
 * endless", "NEVER run this interactively"): Ctrl-C makes the terminal send
 * SIGINT to every process of the foreground group, the workers included.
 * cfutures workers ignore SIGINT by design: whether to stop is the caller's
 * decision. Here the caller decides to stop. Its handler writes one line and
 * lets SIGINT's default action end the process; the pool's processes then get
 * SIGKILL from the kernel as their parent dies (PR_SET_PDEATHSIG), so none
 * outlives the caller. Without the handler the default action would do the
 * same, silently.
 *
 * Run: demo/interrupt [seconds]   (the map lasts that long if nobody presses
 *                                  Ctrl-C; 10 by default)
 */
#include <cfutures.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#define WORKERS 2
#define TASK_MS 100

static pid_t *pids;                 /* shared: each worker writes its own pid */

static void check(int rc, const char *what)
{
    if (rc != 0) {
        fprintf(stderr, "%s: %s\n", what, cf_strerror(rc));
        exit(1);
    }
}

/* The initializer runs in each worker before the pool is ready. */
static int note_pid(const void *arg, size_t as)
{
    (void)arg, (void)as;
    pids[cf_worker_id()] = getpid();
    return 0;
}

static int slow_echo(const void *arg, size_t as, void *res, size_t rs)
{
    (void)as, (void)rs;
    usleep(TASK_MS * 1000);
    *(int *)res = *(const int *)arg;
    return 0;
}

/*
 * Runs in whichever thread of the caller the kernel picked. Only
 * async-signal-safe calls: write, then raise. SA_RESETHAND has already put
 * back the default action, so the raised SIGINT (delivered when this handler
 * returns) ends the process the way Ctrl-C always does, and a shell or
 * script that started it sees "killed by SIGINT" (status 130) and can stop
 * too, rather than an exit code that hides the Ctrl-C.
 */
static void on_sigint(int sig)
{
    static const char line[] = "\ninterrupt: Ctrl-C: stopping now; the workers die with this process\n";
    ssize_t n = write(STDOUT_FILENO, line, sizeof line - 1);
    (void)n;
    raise(sig);
}

int main(int argc, char **argv)
{
    double seconds = argc > 1 ? atof(argv[1]) : 10;
    int n = (int)(seconds * 1000 / TASK_MS) * WORKERS;
    setvbuf(stdout, NULL, _IOLBF, 0);   /* each line out at once, even into a pipe */

    /* Installed unconditionally: a script's background job starts with
     * SIGINT ignored, and this demo is meant to be interrupted. */
    struct sigaction sa = {.sa_handler = on_sigint, .sa_flags = SA_RESETHAND};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);

    /* Shared memory before the pool, so the workers' pids reach the caller. */
    if ((pids = cf_shared_alloc(WORKERS * sizeof *pids)) == NULL)
        check(CF_ENOMEM, "cf_shared_alloc");
    cf_executor *ex;
    cf_options o = {.workers = WORKERS, .initializer = note_pid};
    check(cf_process_pool_new(&ex, &o), "cf_process_pool_new");
    printf("caller pid %d, process group %d, worker pids:", (int)getpid(), (int)getpgrp());
    for (int w = 0; w < WORKERS; w++)
        printf(" %d", (int)pids[w]);
    printf("\nMapping %d tasks of %d ms on %d workers, about %.0f s. Press Ctrl-C to stop.\n",
           n, TASK_MS, WORKERS, seconds);

    int *in = malloc(n * sizeof *in), *out = malloc(n * sizeof *out);
    if (in == NULL || out == NULL)
        check(CF_ENOMEM, "malloc");
    for (int i = 0; i < n; i++)
        in[i] = i;
    cf_map_options one = {.chunksize = 1};
    check(cf_map(ex, slow_echo, in, sizeof in[0], out, sizeof out[0], n, &one), "cf_map");
    int right = 0;
    for (int i = 0; i < n; i++)
        right += out[i] == i;
    printf("Nobody pressed Ctrl-C: the map finished, %d of %d results right.\n", right, n);

    free(in);
    free(out);
    cf_executor_free(ex);
    cf_shared_free(pids, WORKERS * sizeof *pids);
    return right == n ? 0 : 1;
}
