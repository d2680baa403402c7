/*
 * measure.c — clocks, repetition, pools and failure for every section.
 *
 * Timing uses CLOCK_MONOTONIC, the clock cf_task_info reports, so that a
 * task's start and end can be placed on the caller's time line. A figure is
 * the best (or, for round trips, the median) of several repetitions: on a
 * shared machine the best run is the one least disturbed.
 */
#include "bench.h"

#include <errno.h>
#include <linux/perf_event.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

double now_s(void)
{
    return (double)now_ns() * 1e-9;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* The tracepoint's id, from tracefs; -1 if it cannot be read. */
static long long tracepoint_id(const char *event)
{
    static const char *const roots[] = {"/sys/kernel/tracing", "/sys/kernel/debug/tracing"};
    for (size_t i = 0; i < sizeof roots / sizeof roots[0]; i++) {
        char path[256];
        snprintf(path, sizeof path, "%s/events/%s/id", roots[i], event);
        FILE *fp = fopen(path, "r");
        long long id = -1;
        if (fp == NULL)
            continue;
        if (fscanf(fp, "%lld", &id) != 1)
            id = -1;
        fclose(fp);
        if (id >= 0)
            return id;
    }
    return -1;
}

int syscall_counter_open(char *why, size_t len)
{
    long long id = tracepoint_id("raw_syscalls/sys_enter");
    if (id < 0) {
        snprintf(why, len, "no tracefs to find raw_syscalls/sys_enter in");
        return -1;
    }
    struct perf_event_attr a = {
        .type = PERF_TYPE_TRACEPOINT, .size = sizeof a, .config = (uint64_t)id, .inherit = 1,
        .disabled = 0, .exclude_kernel = 0,
    };
    int fd = (int)syscall(SYS_perf_event_open, &a, 0, -1, -1, PERF_FLAG_FD_CLOEXEC);
    if (fd < 0)
        snprintf(why, len, "perf_event_open: %s", strerror(errno));
    return fd;
}

long long syscall_counter_read(int fd)
{
    uint64_t v = 0;
    return read(fd, &v, sizeof v) == (ssize_t)sizeof v ? (long long)v : -1;
}

double median(double *v, size_t n)
{
    if (n == 0)
        return 0;
    qsort(v, n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

double executor_round_trip_ns(cf_executor *ex, unsigned reps)
{
    double *t = xmalloc(reps * sizeof *t);
    unsigned warmup = reps / 10 + 10;
    for (unsigned i = 0; i < warmup + reps; i++) {
        cf_future *f;
        uint64_t t0 = now_ns();
        check(cf_submit(ex, empty_task, NULL, 0, 0, &f), "cf_submit");
        check(cf_future_result(f, NULL, 0, -1), "empty task");
        cf_future_free(f);
        if (i >= warmup)
            t[i - warmup] = (double)(now_ns() - t0);
    }
    double m = median(t, reps);
    free(t);
    return m;
}

double best_time(void (*run)(void *ctx), void *ctx, unsigned min_reps,
                 unsigned max_reps, double budget_s)
{
    double best = -1, start = now_s();
    for (unsigned rep = 0; rep < max_reps; rep++) {
        double t0 = now_s();
        run(ctx);
        double t = now_s() - t0;
        if (best < 0 || t < best)
            best = t;
        if (rep + 1 >= min_reps && now_s() - start >= budget_s)
            break;
    }
    return best;
}

const char *pool_name(pool_kind k)
{
    return k == POOL_THREAD ? "thread" : "process";
}

const char *pool_title(pool_kind k)
{
    return k == POOL_THREAD ? "thread pool" : "process pool";
}

void die(const char *fmt, ...)
{
    va_list ap;
    progress(NULL);
    fputs("cfbench: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    exit(1);
}

void check(int rc, const char *what)
{
    if (rc != 0)
        die("%s: %s (%d)", what, cf_strerror(rc), rc);
}

void *xmalloc(size_t size)
{
    void *p = malloc(size);
    if (p == NULL)
        die("out of memory (%zu bytes)", size);
    return p;
}

cf_executor *pool_open(pool_kind k, unsigned workers)
{
    cf_options opts = {.workers = workers};
    cf_executor *ex;
    int rc = k == POOL_THREAD ? cf_thread_pool_new(&ex, &opts) : cf_process_pool_new(&ex, &opts);
    check(rc, k == POOL_THREAD ? "cf_thread_pool_new" : "cf_process_pool_new");
    /* One task first, so that no measurement pays for a cold start. */
    cf_future *f;
    check(cf_submit(ex, empty_task, NULL, 0, 0, &f), "cf_submit");
    check(cf_future_result(f, NULL, 0, -1), "warm-up task");
    cf_future_free(f);
    return ex;
}

/*
 * The status line shares the terminal with the tables on stdout, so it is
 * drawn only when both streams are that terminal and the tables are text:
 * then it is cleared before each table (table_end) and each message. Where
 * either stream is piped or redirected, whatever reads it gets no carriage
 * returns and no escape sequences, and a status line could not be kept
 * apart from text printed by another process (a pager, tee).
 */
static struct {
    bool     on;
    bool     shown;        /* a status is on the line now */
    unsigned section;      /* 1-based, of `sections`; 0: between sections */
    unsigned sections;
} status;

void progress_init(const bench_config *cfg)
{
    if (cfg->progress == PROGRESS_AUTO)
        status.on = cfg->format == OUT_TEXT && isatty(STDOUT_FILENO) && isatty(STDERR_FILENO);
    else
        status.on = cfg->progress == PROGRESS_ON;
}

void progress_section(unsigned index, unsigned count)
{
    status.section = index;
    status.sections = count;
}

/* Columns of the terminal on stderr, so that the line never wraps (a
 * wrapped line cannot be rewritten with a carriage return). */
static size_t status_width(void)
{
    struct winsize ws;
    if (ioctl(STDERR_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 1)
        return (size_t)ws.ws_col - 1;
    return 79;
}

void progress(const char *fmt, ...)
{
    if (!status.on || (fmt == NULL && !status.shown))
        return;
    fputs("\r\033[K", stderr);
    status.shown = false;
    if (fmt != NULL) {
        char line[256];
        int len = status.section > 0
                      ? snprintf(line, sizeof line, "cfbench [%u/%u] ", status.section,
                                 status.sections)
                      : snprintf(line, sizeof line, "cfbench: ");
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(line + len, sizeof line - (size_t)len, fmt, ap);
        va_end(ap);
        size_t width = status_width();
        if (strlen(line) > width)
            line[width] = '\0';
        fputs(line, stderr);
        status.shown = true;
    }
    fflush(stderr);
}
