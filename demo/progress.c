/*
 * progress — a long map you can watch and stop: a progress line, results
 * as they complete, and Ctrl-C (or a time limit) cancelling the rest.
 *
 * Lesson: a blocking map is all or nothing. cf_map_submit returns a future
 * for the whole map instead: the caller's thread stays free to draw a
 * progress line (cf_future_progress), an element callback sees each result
 * as it lands (Python's imap_unordered), and cf_future_cancel stops what is
 * left: chunks no worker took never run, chunks that run are stopped, and
 * every element says in `status` whether it ran. Workers ignore SIGINT by
 * design (whether to stop is the caller's decision); here the caller's
 * handler only sets a flag, and the main loop, which wakes every 100 ms
 * anyway, cancels the map. The pool goes on afterwards.
 *
 * Run: demo/progress [seconds]   (cancel after that long if nobody presses
 *                                 Ctrl-C; without it, or with 0, the map runs to its end,
 *                                 several seconds on 2 cores; CF_DEMO_QUICK=1:
 *                                 1 s)
 */
#include <cfutures.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define ELEMENTS 2000
#define SPAN     5000           /* numbers each element checks for primes */

static volatile sig_atomic_t interrupted;

static void on_sigint(int sig)
{
    (void)sig;
    interrupted = 1;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Counts the primes in [i*SPAN, (i+1)*SPAN), i the element's index. */
static int count_primes(const void *arg, size_t as, void *res, size_t rs)
{
    (void)arg, (void)as, (void)rs;
    uint64_t lo = (uint64_t)cf_task_index() * SPAN, count = 0;
    for (uint64_t x = lo > 2 ? lo : 2; x < lo + SPAN; x++) {
        bool prime = true;
        for (uint64_t d = 2; d * d <= x && prime; d++)
            prime = x % d != 0;
        count += prime;
    }
    memcpy(res, &count, sizeof count);
    return 0;
}

/* What the element callback gathers as results come in. */
struct tally {
    const uint64_t *out;
    uint64_t primes;            /* the sum over the elements reported */
    size_t reported;
};

/*
 * On a process pool this runs in the map's own thread, one call per
 * element as each chunk comes back: the element's output is there to read.
 */
static void on_element(size_t i, int status, void *ctx)
{
    struct tally *t = ctx;
    if (status == 0)
        __atomic_add_fetch(&t->primes, t->out[i], __ATOMIC_RELAXED);
    __atomic_add_fetch(&t->reported, 1, __ATOMIC_RELAXED);
}

static void draw(size_t done, size_t total, uint64_t primes, double t, bool tty)
{
    enum { WIDTH = 30 };
    int filled = (int)(done * WIDTH / (total ? total : 1));
    char bar[WIDTH + 1];
    for (int k = 0; k < WIDTH; k++)
        bar[k] = k < filled ? '#' : '.';
    bar[WIDTH] = '\0';
    printf("%s[%s] %3zu%%  %zu/%zu elements, %llu primes so far, %.1f s%s", tty ? "\r" : "",
           bar, done * 100 / (total ? total : 1), done, total, (unsigned long long)primes, t,
           tty ? "" : "\n");
    fflush(stdout);
}

int main(int argc, char **argv)
{
    double limit = argc > 1 ? atof(argv[1]) : getenv("CF_DEMO_QUICK") ? 1.0 : 0;
    bool tty = isatty(STDOUT_FILENO);

    struct sigaction sa = {.sa_handler = on_sigint};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);

    cf_executor *ex;
    int rc = cf_process_pool_new(&ex, NULL);
    if (rc != 0) {
        fprintf(stderr, "cf_process_pool_new: %s\n", cf_strerror(rc));
        return 1;
    }
    uint64_t *out = calloc(ELEMENTS, sizeof *out);
    int *status = calloc(ELEMENTS, sizeof *status);
    if (out == NULL || status == NULL)
        return 1;
    struct tally tally = {.out = out};
    cf_map_options mo = {.chunksize = 8, .status = status, .on_element = on_element, .ctx = &tally};

    printf("Counting primes below %d in %d elements on %u workers. ", ELEMENTS * SPAN, ELEMENTS,
           cf_executor_workers(ex));
    if (limit > 0)
        printf("Cancelling after %.1f s, or at Ctrl-C.\n", limit);
    else
        printf("Press Ctrl-C to cancel.\n");

    double t0 = now_s();
    cf_future *f;
    rc = cf_map_submit(ex, count_primes, NULL, 0, out, sizeof *out, ELEMENTS, &mo, &f);
    if (rc != 0) {
        fprintf(stderr, "cf_map_submit: %s\n", cf_strerror(rc));
        return 1;
    }
    const char *why = NULL;
    double last = 0;
    size_t done, total;
    while (cf_future_wait(f, 100) == CF_ETIMEDOUT) {
        double t = now_s() - t0;
        cf_future_progress(f, &done, &total);
        if (tty || t - last >= 0.5) {
            draw(done, total, __atomic_load_n(&tally.primes, __ATOMIC_RELAXED), t, tty);
            last = t;
        }
        if (why == NULL && (interrupted || (limit > 0 && t >= limit))) {
            why = interrupted ? "Ctrl-C" : "the time limit";
            rc = cf_future_cancel(f);    /* returns once the map has stopped */
            if (rc != 0 && rc != CF_EBUSY)
                fprintf(stderr, "cf_future_cancel: %s\n", cf_strerror(rc));
        }
    }
    double t = now_s() - t0;
    cf_future_progress(f, &done, &total);
    draw(done, total, tally.primes, t, tty);
    if (tty)
        printf("\n");

    rc = cf_future_result(f, NULL, 0, -1);
    size_t ran = 0, cancelled = 0, other = 0;
    uint64_t primes = 0;
    for (size_t i = 0; i < ELEMENTS; i++) {
        if (status[i] == 0) {
            ran++;
            primes += out[i];
        } else if (status[i] == CF_ECANCELED) {
            cancelled++;
        } else {
            other++;
        }
    }
    if (cf_future_cancelled(f))
        printf("cancelled by %s after %.1f s: %zu elements ran, %zu never ran (CF_ECANCELED), "
               "%zu failed\n", why, t, ran, cancelled, other);
    else
        printf("finished in %.1f s (%s): %zu elements ran, %zu failed\n", t,
               rc == 0 ? "every element returned 0" : cf_strerror(rc), ran, other);
    printf("the callback saw %zu elements and %llu primes; the status array says %zu ran, "
           "%llu primes: %s\n", tally.reported, (unsigned long long)tally.primes, ran,
           (unsigned long long)primes,
           tally.reported == done && tally.primes == primes && ran + other == done ? "they agree"
                                                                                  : "MISMATCH");
    cf_future_free(f);

    /* The pool goes on: a short map on the same workers. */
    rc = cf_map(ex, count_primes, NULL, 0, out, sizeof *out, 8, NULL);
    printf("the pool goes on: a map of 8 elements after it returned %s; %llu primes below %d\n",
           cf_strerror(rc), (unsigned long long)(out[0] + out[1] + out[2] + out[3] + out[4] +
                                                 out[5] + out[6] + out[7]), 8 * SPAN);
    cf_executor_free(ex);
    free(out);
    free(status);
    return tally.reported == done && tally.primes == primes && rc == 0 ? 0 : 1;
}
