/*
 * scalesim.c — where the pools contend as they grow, counted on a small
 * machine (docs/scaling.md says what each count stands for).
 *
 *   scalesim [--quick] [--sleep-us N] [--per-worker K] [--callers C]
 *            [--pinned-tasks N] [--kind thread|process] [WORKERS...]
 *            (default: 8 16 32 64 workers, 2048 pinned tasks)
 *
 * Pools far larger than the machine's cores run tasks that sleep (1 ms by
 * default), so that many workers are in flight at once even on 2 cores: what
 * grows with the pool's size is then the pools' own synchronisation, not the
 * work. For each pool size and kind it measures
 *
 *   start    cf_thread_pool_new / cf_process_pool_new until it returns (the
 *            process pool's zygote forks its workers one after the other)
 *   burst    on a pool idle long enough for every worker to sleep, W tasks
 *            at once: when the first and the last of them started (a
 *            sleeping worker that takes a task wakes one more: a chain)
 *   stream   K*W tasks submitted in a row, then one cf_wait for them all,
 *            by one caller thread or by C of them (each its share, and
 *            its own cf_wait); its time against the ideal (K sleeps), and
 *            per task: futex wake calls, those that woke nobody, futex
 *            waits (all of them, and the callers': each is one sleep in
 *            cf_wait), pthread_cond_signal/broadcast,
 *            pthread_mutex_lock calls and those that found the mutex held,
 *            sched_yield (the spinning waits' second half), poll (the
 *            process pool's manager thread and zygote), and voluntary and
 *            involuntary context switches of every thread of this process
 *            and of its child processes (/proc/PID/task/TID/status)
 *   pinned   on a pool of 8, one task of 100 ms, then N tasks of 0.1 ms:
 *            when the last short task ended, against the same stream alone
 *            (the process pool publishes into a ring of 1024 slots in
 *            order, so the 1025th waits for the long task's slot)
 *
 * The counts are taken from outside the library, which is not changed: this
 * program defines syscall, pthread_mutex_lock, pthread_cond_signal,
 * pthread_cond_broadcast, sched_yield and poll, which the dynamic linker then
 * binds libcfutures' calls to (a symbol the executable defines comes first),
 * and each counts and calls libc's. The counters live in a shared anonymous
 * mapping made before any pool, so the process pool's workers (forks of this
 * program) count into them too. What is inline in the library cannot be
 * seen this way: a worker's compare-and-swap on a slot and on the ring's
 * head (worker.c: take), the thread pool's atomic claims of map chunks,
 * glibc's own futex calls inside pthread_cond_wait. Those are not counted.
 *
 * No figure here is asserted anywhere: on 2 shared cores they are noisy, and
 * compare only within one run.
 */
#include <cfutures.h>

#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <linux/futex.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

/* ---- the counters, shared with the workers ------------------------------- */

enum {
    C_FUTEX_WAKE,        /* FUTEX_WAKE calls */
    C_WAKE_NOBODY,       /* ... that returned 0: nobody slept there */
    C_WOKEN,             /* threads those calls woke */
    C_FUTEX_WAIT,        /* FUTEX_WAIT calls */
    C_CALLER_WAIT,       /* ... by a thread that calls cf_wait */
    C_WAIT_TIMEOUT,      /* futex waits that slept until their deadline */
    C_COND_SIGNAL,       /* pthread_cond_signal and _broadcast */
    C_MUTEX_LOCK,        /* pthread_mutex_lock */
    C_MUTEX_HELD,        /* ... that found it held (trylock failed) */
    C_YIELD,             /* sched_yield */
    C_POLL,              /* poll */
    NCOUNTERS
};

typedef struct counters {
    _Atomic uint64_t n[NCOUNTERS];
} counters;

static counters *cnt;    /* NULL until main maps it: nothing counted before */
/* In a caller thread: the futures its cf_wait waits for (0 elsewhere). */
static __thread bool waiting_for;    /* this thread is in cf_wait */

static void count(int which, uint64_t by)
{
    if (cnt != NULL)
        atomic_fetch_add_explicit(&cnt->n[which], by, memory_order_relaxed);
}

/* ---- the interposers ------------------------------------------------------ */

static long (*real_syscall)(long, ...);
static int (*real_mutex_lock)(pthread_mutex_t *);
static int (*real_cond_signal)(pthread_cond_t *);
static int (*real_cond_broadcast)(pthread_cond_t *);
static int (*real_yield)(void);
static int (*real_poll)(struct pollfd *, nfds_t, int);

/* Found before main, while there is one thread. The pthread_cond ones by
 * version: unversioned, dlsym may give the compatibility symbols. */
__attribute__((constructor)) static void find_reals(void)
{
    real_syscall = (long (*)(long, ...))dlsym(RTLD_NEXT, "syscall");
    real_mutex_lock = (int (*)(pthread_mutex_t *))dlsym(RTLD_NEXT, "pthread_mutex_lock");
    real_cond_signal = (int (*)(pthread_cond_t *))dlvsym(RTLD_NEXT, "pthread_cond_signal", "GLIBC_2.3.2");
    if (real_cond_signal == NULL)
        real_cond_signal = (int (*)(pthread_cond_t *))dlsym(RTLD_NEXT, "pthread_cond_signal");
    real_cond_broadcast =
        (int (*)(pthread_cond_t *))dlvsym(RTLD_NEXT, "pthread_cond_broadcast", "GLIBC_2.3.2");
    if (real_cond_broadcast == NULL)
        real_cond_broadcast = (int (*)(pthread_cond_t *))dlsym(RTLD_NEXT, "pthread_cond_broadcast");
    real_yield = (int (*)(void))dlsym(RTLD_NEXT, "sched_yield");
    real_poll = (int (*)(struct pollfd *, nfds_t, int))dlsym(RTLD_NEXT, "poll");
    if (!real_syscall || !real_mutex_lock || !real_cond_signal || !real_cond_broadcast ||
        !real_yield || !real_poll) {
        fputs("scalesim: libc's functions not found (dlsym)\n", stderr);
        _exit(2);
    }
}

/* Six argument words, as the kernel takes them: the library's futex calls
 * pass all six. */
long syscall(long nr, ...)
{
    va_list ap;
    va_start(ap, nr);
    long a[6];
    for (int i = 0; i < 6; i++)
        a[i] = va_arg(ap, long);
    va_end(ap);
    long rc = real_syscall(nr, a[0], a[1], a[2], a[3], a[4], a[5]);
    if (nr == SYS_futex && cnt != NULL) {
        int op = (int)a[1] & FUTEX_CMD_MASK;
        if (op == FUTEX_WAKE) {
            count(C_FUTEX_WAKE, 1);
            if (rc == 0)
                count(C_WAKE_NOBODY, 1);
            else if (rc > 0)
                count(C_WOKEN, (uint64_t)rc);
        } else if (op == FUTEX_WAIT) {
            int err = errno;
            count(C_FUTEX_WAIT, 1);
            if (rc < 0 && err == ETIMEDOUT)
                count(C_WAIT_TIMEOUT, 1);
            errno = err;
            if (waiting_for)
                count(C_CALLER_WAIT, 1);
        }
    }
    return rc;
}

int pthread_mutex_lock(pthread_mutex_t *m)
{
    count(C_MUTEX_LOCK, 1);
    int rc = pthread_mutex_trylock(m);
    if (rc != EBUSY)
        return rc;
    count(C_MUTEX_HELD, 1);
    return real_mutex_lock(m);
}

int pthread_cond_signal(pthread_cond_t *c)
{
    count(C_COND_SIGNAL, 1);
    return real_cond_signal(c);
}

int pthread_cond_broadcast(pthread_cond_t *c)
{
    count(C_COND_SIGNAL, 1);
    return real_cond_broadcast(c);
}

int sched_yield(void)
{
    count(C_YIELD, 1);
    return real_yield();
}

int poll(struct pollfd *fds, nfds_t n, int timeout)
{
    count(C_POLL, 1);
    return real_poll(fds, n, timeout);
}

/* ---- small helpers ---------------------------------------------------------- */

static void die(const char *what, int rc)
{
    fprintf(stderr, "scalesim: %s: %s\n", what, rc < 0 ? cf_strerror(rc) : strerror(rc));
    exit(1);
}

static void check(int rc, const char *what)
{
    if (rc != 0)
        die(what, rc);
}

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void nap_ns(uint64_t ns)
{
    struct timespec t = {(time_t)(ns / 1000000000u), (long)(ns % 1000000000u)};
    while (nanosleep(&t, &t) != 0 && errno == EINTR)
        ;
}

/* The task: sleeps for the nanoseconds in its argument. */
static int sleep_task(const void *arg, size_t arg_size, void *res, size_t res_size)
{
    (void)res, (void)res_size;
    uint64_t ns;
    if (arg_size != sizeof ns)
        return 1;
    memcpy(&ns, arg, sizeof ns);
    nap_ns(ns);
    return 0;
}

/* ---- context switches, from /proc ------------------------------------------- */

typedef struct switches {
    uint64_t vol, invol;
} switches;

/* Adds the switches of every thread of process pid. */
static void add_threads(pid_t pid, switches *s)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/task", (int)pid);
    DIR *d = opendir(path);
    if (d == NULL)
        return;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] < '0' || e->d_name[0] > '9')
            continue;
        char file[320], line[128];
        snprintf(file, sizeof file, "/proc/%d/task/%s/status", (int)pid, e->d_name);
        FILE *f = fopen(file, "r");
        if (f == NULL)
            continue;
        unsigned long long v;
        while (fgets(line, sizeof line, f) != NULL) {
            if (sscanf(line, "voluntary_ctxt_switches: %llu", &v) == 1)
                s->vol += v;
            else if (sscanf(line, "nonvoluntary_ctxt_switches: %llu", &v) == 1)
                s->invol += v;
        }
        fclose(f);
    }
    closedir(d);
}

/* The parent of pid, from /proc/PID/stat (after the command's closing paren). */
static pid_t parent_of(pid_t pid)
{
    char path[64], buf[512];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return -1;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    char *p = strrchr(buf, ')');
    int ppid;
    if (p == NULL || sscanf(p + 1, " %*c %d", &ppid) != 1)
        return -1;
    return (pid_t)ppid;
}

enum { MAX_PROCS = 4096 };

/* Every thread of this process and of all its descendants (zygote, standby, workers). */
static switches all_switches(void)
{
    static pid_t pids[MAX_PROCS], parents[MAX_PROCS];
    static bool ours[MAX_PROCS];
    size_t n = 0;
    DIR *d = opendir("/proc");
    struct dirent *e;
    while (d != NULL && (e = readdir(d)) != NULL && n < MAX_PROCS) {
        if (e->d_name[0] < '1' || e->d_name[0] > '9')
            continue;
        pids[n] = (pid_t)atoi(e->d_name);
        parents[n] = parent_of(pids[n]);
        ours[n] = pids[n] == getpid();
        n++;
    }
    if (d != NULL)
        closedir(d);
    for (bool grew = true; grew;) {    /* a few rounds: the tree is three deep */
        grew = false;
        for (size_t i = 0; i < n; i++)
            for (size_t j = 0; j < n && !ours[i]; j++)
                if (ours[j] && parents[i] == pids[j])
                    ours[i] = grew = true;
    }
    switches s = {0, 0};
    for (size_t i = 0; i < n; i++)
        if (ours[i])
            add_threads(pids[i], &s);
    return s;
}

/* ---- one pool ----------------------------------------------------------------- */

typedef struct result {
    double start_ms, burst_first_ms, burst_last_ms, stream_ms, ideal_ms;
    double per_task[NCOUNTERS];
    double vol, invol;
} result;

static uint64_t sleep_ns = 1000000;
static unsigned per_worker = 16, callers = 1, pinned_n = 2048;

static cf_executor *open_pool(bool process, unsigned workers, double *ms)
{
    cf_options o = {.workers = workers, .start = CF_START_FORK};
    cf_executor *ex;
    uint64_t t0 = now_ns();
    int rc = process ? cf_process_pool_new(&ex, &o) : cf_thread_pool_new(&ex, &o);
    *ms = (double)(now_ns() - t0) * 1e-6;
    check(rc, process ? "cf_process_pool_new" : "cf_thread_pool_new");
    return ex;
}

/* Submits n sleeping tasks in a row into fs; returns when the last is submitted. */
static void submit_all(cf_executor *ex, cf_future **fs, size_t n)
{
    for (size_t i = 0; i < n; i++)
        check(cf_submit(ex, sleep_task, &sleep_ns, sizeof sleep_ns, 0, &fs[i]), "cf_submit");
}

static void wait_all(cf_future **fs, size_t n)
{
    waiting_for = true;
    check(cf_wait(fs, n, CF_ALL_COMPLETED, -1), "cf_wait");
    waiting_for = false;
}

static void wait_free(cf_future **fs, size_t n)
{
    wait_all(fs, n);
    for (size_t i = 0; i < n; i++) {
        check(cf_future_result(fs[i], NULL, 0, 0), "a sleeping task");
        cf_future_free(fs[i]);
    }
}

/* One caller of the stream: submits its share, then waits for it. */
typedef struct share {
    cf_executor *ex;
    cf_future  **fs;
    size_t       n;
} share;

static void *caller_main(void *p)
{
    share *sh = p;
    submit_all(sh->ex, sh->fs, sh->n);
    wait_all(sh->fs, sh->n);
    return NULL;
}

/* The stream: n tasks by `callers` threads (this one alone when 1). */
static void stream(cf_executor *ex, cf_future **fs, size_t n)
{
    if (callers == 1) {
        share sh = {ex, fs, n};
        caller_main(&sh);
        return;
    }
    pthread_t t[64];
    share sh[64];
    for (unsigned c = 0; c < callers; c++) {
        size_t lo = n * c / callers, hi = n * (c + 1) / callers;
        sh[c] = (share){ex, fs + lo, hi - lo};
        int rc = pthread_create(&t[c], NULL, caller_main, &sh[c]);
        if (rc != 0)
            die("pthread_create", rc);
    }
    for (unsigned c = 0; c < callers; c++)
        pthread_join(t[c], NULL);
}

static void run_one(bool process, unsigned w, result *r)
{
    size_t n = (size_t)per_worker * w;
    cf_future **fs = calloc(n > w ? n : w, sizeof *fs);
    if (fs == NULL)
        die("calloc", ENOMEM);
    cf_executor *ex = open_pool(process, w, &r->start_ms);

    /* Every worker once, then idle long enough (the spin is 60 us) to sleep. */
    submit_all(ex, fs, w);
    wait_free(fs, w);
    nap_ns(20 * 1000000u);

    uint64_t t0 = now_ns();
    submit_all(ex, fs, w);
    wait_all(fs, w);
    uint64_t first = UINT64_MAX, last = 0;
    for (size_t i = 0; i < w; i++) {
        cf_task_info info;
        check(cf_future_info(fs[i], &info), "cf_future_info");
        first = info.start_ns < first ? info.start_ns : first;
        last = info.start_ns > last ? info.start_ns : last;
    }
    wait_free(fs, w);
    r->burst_first_ms = first >= t0 ? (double)(first - t0) * 1e-6 : 0;
    r->burst_last_ms = last >= t0 ? (double)(last - t0) * 1e-6 : 0;
    nap_ns(20 * 1000000u);

    uint64_t before[NCOUNTERS];
    for (int c = 0; c < NCOUNTERS; c++)
        before[c] = atomic_load(&cnt->n[c]);
    switches s0 = all_switches();
    t0 = now_ns();
    stream(ex, fs, n);
    r->stream_ms = (double)(now_ns() - t0) * 1e-6;
    for (int c = 0; c < NCOUNTERS; c++)
        r->per_task[c] = (double)(atomic_load(&cnt->n[c]) - before[c]) / (double)n;
    switches s1 = all_switches();
    r->vol = (double)(s1.vol - s0.vol) / (double)n;
    r->invol = (double)(s1.invol - s0.invol) / (double)n;
    r->ideal_ms = (double)per_worker * (double)sleep_ns * 1e-6;
    for (size_t i = 0; i < n; i++) {
        check(cf_future_result(fs[i], NULL, 0, 0), "a sleeping task");
        cf_future_free(fs[i]);
    }
    cf_executor_free(ex);
    free(fs);
}

/*
 * Milliseconds until `n` short tasks, submitted in a row after one long one
 * (when `pin`), have all ended, on a pool of w.
 */
static double pinned_ms(bool process, unsigned w, size_t n, bool pin, uint64_t *timeouts)
{
    double start_ms;
    cf_executor *ex = open_pool(process, w, &start_ms);
    cf_future **fs = calloc(n, sizeof *fs), *longf = NULL;
    if (fs == NULL)
        die("calloc", ENOMEM);
    uint64_t keep = sleep_ns, long_ns = 100 * 1000000u;
    uint64_t t0 = now_ns(), before = atomic_load(&cnt->n[C_WAIT_TIMEOUT]);
    if (pin)
        check(cf_submit(ex, sleep_task, &long_ns, sizeof long_ns, 0, &longf), "cf_submit");
    sleep_ns = 100000;
    submit_all(ex, fs, n);
    sleep_ns = keep;
    wait_all(fs, n);
    double ms = (double)(now_ns() - t0) * 1e-6;
    *timeouts = atomic_load(&cnt->n[C_WAIT_TIMEOUT]) - before;
    for (size_t i = 0; i < n; i++)
        cf_future_free(fs[i]);
    if (longf != NULL) {
        check(cf_future_result(longf, NULL, 0, -1), "the long task");
        cf_future_free(longf);
    }
    free(fs);
    cf_executor_free(ex);
    return ms;
}

/* ---- the tables ----------------------------------------------------------------- */

static void header(void)
{
    printf("%-12s %4s %5s %5s %5s %6s | %5s %6s %5s %5s %6s %5s %5s %5s %5s %5s %5s %5s\n",
           "pool", "W", "start", "burst", "burst", "stream", "wake", "nobody", "woken", "wait",
           "caller", "cond", "lock", "held", "yield", "poll", "vcsw", "ivcsw");
    printf("%-12s %4s %5s %5s %5s %6s | %5s %6s %5s %5s %6s %5s %5s %5s %5s %5s %5s %5s\n",
           "", "", "ms", "first", "last", "x", "", "", "", "", "waits", "sig", "", "", "", "",
           "", "");
}

static void row(bool process, unsigned w, const result *r)
{
    const double *p = r->per_task;
    printf("%-12s %4u %5.1f %5.2f %5.2f %6.2f | %5.2f %6.2f %5.2f %5.2f %6.2f %5.2f %5.2f "
           "%5.2f %5.2f %5.2f %5.2f %5.2f\n",
           process ? "process pool" : "thread pool", w, r->start_ms, r->burst_first_ms,
           r->burst_last_ms, r->stream_ms / r->ideal_ms, p[C_FUTEX_WAKE], p[C_WAKE_NOBODY],
           p[C_WOKEN], p[C_FUTEX_WAIT], p[C_CALLER_WAIT], p[C_COND_SIGNAL],
           p[C_MUTEX_LOCK], p[C_MUTEX_HELD], p[C_YIELD], p[C_POLL], r->vol, r->invol);
    fflush(stdout);
}

static void usage(FILE *f)
{
    fputs("usage: scalesim [--quick] [--sleep-us N] [--per-worker K] [--callers C]\n"
          "                [--pinned-tasks N] [--kind thread|process] [WORKERS...]\n"
          "                (default: 8 16 32 64 workers, 2048 pinned tasks)\n"
          "Counts what pools of many workers do per task on this machine: see the\n"
          "comment at the top of benchmarks/scalesim.c and docs/scaling.md.\n", f);
}

static unsigned number(const char *s, unsigned lo, unsigned hi)
{
    char *end;
    unsigned long v = s != NULL ? strtoul(s, &end, 10) : 0;
    if (s == NULL || *s == '\0' || *end != '\0' || v < lo || v > hi) {
        fprintf(stderr, "scalesim: want a number from %u to %u, not '%s'\n\n", lo, hi,
                s ? s : "");
        usage(stderr);
        exit(2);
    }
    return (unsigned)v;
}

int main(int argc, char **argv)
{
    unsigned sizes[32], nsizes = 0;
    bool kinds[2] = {true, true};    /* thread, process */
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            usage(stdout);
            return 0;
        } else if (strcmp(a, "--quick") == 0) {
            per_worker = 2;
        } else if (strcmp(a, "--sleep-us") == 0) {
            sleep_ns = 1000u * (uint64_t)number(i + 1 < argc ? argv[++i] : NULL, 1, 1000000);
        } else if (strcmp(a, "--per-worker") == 0) {
            per_worker = number(i + 1 < argc ? argv[++i] : NULL, 1, 1000);
        } else if (strcmp(a, "--pinned-tasks") == 0) {
            pinned_n = number(i + 1 < argc ? argv[++i] : NULL, 1, 100000);
        } else if (strcmp(a, "--callers") == 0) {
            callers = number(i + 1 < argc ? argv[++i] : NULL, 1, 64);
        } else if (strcmp(a, "--kind") == 0) {
            const char *k = i + 1 < argc ? argv[++i] : "";
            if (strcmp(k, "thread") != 0 && strcmp(k, "process") != 0) {
                usage(stderr);
                return 2;
            }
            kinds[0] = strcmp(k, "thread") == 0;
            kinds[1] = !kinds[0];
        } else if (a[0] == '-') {
            usage(stderr);
            return 2;
        } else if (nsizes < sizeof sizes / sizeof sizes[0]) {
            sizes[nsizes++] = number(a, 1, 1024);
        }
    }
    if (nsizes == 0) {
        static const unsigned def[] = {8, 16, 32, 64};
        for (; nsizes < 4; nsizes++)
            sizes[nsizes] = def[nsizes];
    }

    cnt = mmap(NULL, sizeof *cnt, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (cnt == MAP_FAILED)
        die("mmap", errno);

    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    printf("scalesim: %ld online CPUs; tasks sleep %.3f ms. W workers; start: pool creation (ms);\n"
           "burst: W tasks on an idle pool, when the first and the last started (ms after the\n"
           "first submit); stream: %u x W tasks from %u caller thread%s, each its share and then\n"
           "one cf_wait; x = its time / (%u sleeps). Per task of the stream: futex wake calls,\n"
           "those that woke nobody, threads woken, futex waits, the callers' futex waits (sleeps\n"
           "in cf_wait), pthread_cond_signal and broadcast, pthread_mutex_lock calls and those\n"
           "that found the mutex held, sched_yield,\n"
           "poll, and voluntary/involuntary context switches of every thread of this process\n"
           "and of its child processes.\n\n",
           cpus, (double)sleep_ns * 1e-6, per_worker, callers, callers == 1 ? "" : "s", per_worker);
    header();
    for (int k = 0; k < 2; k++) {
        if (!kinds[k])
            continue;
        for (unsigned i = 0; i < nsizes; i++) {
            result r;
            memset(&r, 0, sizeof r);
            run_one(k == 1, sizes[i], &r);
            row(k == 1, sizes[i], &r);
        }
    }
    printf("\npinned: a pool of 8; %u tasks of 0.1 ms submitted in a row, alone or after one\n"
           "task of 100 ms: ms until the last short one ended, and the futex waits (any thread)\n"
           "that slept until their deadline meanwhile\n", pinned_n);
    printf("%-12s %8s %8s %12s %8s\n", "pool", "alone", "timeouts", "after 100 ms", "timeouts");
    for (int k = 0; k < 2; k++) {
        if (!kinds[k])
            continue;
        uint64_t t1, t2;
        double alone = pinned_ms(k == 1, 8, pinned_n, false, &t1);
        double pinned = pinned_ms(k == 1, 8, pinned_n, true, &t2);
        printf("%-12s %8.1f %8llu %12.1f %8llu\n", k == 1 ? "process pool" : "thread pool", alone,
               (unsigned long long)t1, pinned, (unsigned long long)t2);
    }
    return 0;
}
