/*
 * helpers.h — what the test programs share: every Criterion suite of
 * tests/Makemodule.am and tests/reliability.am, and tests/tsan-stress.c, a
 * plain program that defines CF_TEST_PLAIN first and so gets everything but
 * the Criterion parts (the last sections).
 *
 * The sections, in order:
 *   time bounds      Criterion .timeouts, poll and gate bounds (all scaled
 *                    by CF_TEST_TIMEOUT_SCALE, tests/timescale.h)
 *   task codes       what a test's own task returns when something is off
 *   where we run     valgrind, ASan, sizes from the environment, loops that
 *                    run fewer rounds on a slow machine, no core files
 *   time, atomics    clock, sleep, the atomic int accessors every shared
 *                    counter goes through, a bounded wait on one
 *   values, tasks    a generator, a checked value and the task computing it,
 *                    a crashing task, a checksum
 *   pool kinds       THE list of pools a test runs on (thread, fork, exec):
 *                    names, start methods, one constructor
 *   pipes            full reads and writes
 *   /proc            processes, children, descriptors, a census of what a
 *                    process owns, a pool's zygote and standby
 *   Criterion only   probes and gated tasks, kill_one, the exec skip under
 *                    valgrind, and for a suite built once per kind
 *                    (CF_TEST_BACKEND) its pool and its probe
 *
 * Everything is static inline, so that a program that uses a part of it
 * gets no warning for the rest.
 */
#ifndef CF_TESTS_HELPERS_H
#define CF_TESTS_HELPERS_H

#include <cfutures.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#if defined(__has_include)
#  if __has_include(<valgrind/valgrind.h>)
#    include <valgrind/valgrind.h>
#    define CF_TEST_HAVE_VALGRIND_H 1
#  endif
#endif

#ifndef CF_TEST_PLAIN
#  include <criterion/criterion.h>
/*
 * Every bound on time below is multiplied by CF_TEST_TIMEOUT_SCALE (a whole
 * number from 1 to 100, 1 when unset): tests/valgrind.sh sets it, since
 * under valgrind each worker process starts in about a second, and a slow
 * machine makes that several seconds. Criterion's .timeout of every test and
 * suite is scaled once, before the first test starts (tests/timescale.h);
 * the poll and gate bounds are scaled where they are read.
 */
#  include "timescale.h"
#  define CF_TEST_SCALE() test_time_scale()
#else
#  define CF_TEST_SCALE() 1
#endif

/* ---- time bounds --------------------------------------------------------------- */

/* Criterion .timeouts, in seconds: generous for a loaded 2-core machine. */
#define TEST_TIMEOUT      60     /* a test that waits */
#define SLOW_TIMEOUT      180    /* tests that start several pools or move much data */
#define REL_TIMEOUT       120    /* the reliability suites (tests/reliability.am): faults, load */
#define REL_SLOW_TIMEOUT  600    /* soak and 1000-cycle tests; they bound their own waits */

#define POLL_MAX_MS   (10000 * CF_TEST_SCALE())  /* bound on a poll loop of a test */
#define GATE_MAX_MS   (20000 * CF_TEST_SCALE())  /* a gated task gives up after this long */

/* ---- task codes ------------------------------------------------------------------- */

#define CODE_STUCK    99     /* a gated task whose gate never opened */
#define CODE_BADSIZE  98     /* a task called with sizes it did not expect */

/* ---- where we run ------------------------------------------------------------------ */

/*
 * Under valgrind everything is 20 to 50 times slower: tests do fewer rounds
 * there. The preload library in LD_PRELOAD gives valgrind away when its
 * header is not installed.
 */
static inline bool under_valgrind(void)
{
#ifdef CF_TEST_HAVE_VALGRIND_H
    if (RUNNING_ON_VALGRIND)
        return true;
#endif
    const char *preload = getenv("LD_PRELOAD");
    return preload != NULL && strstr(preload, "vgpreload") != NULL;
}

/*
 * Exec pools are left out under valgrind except in tests/test-common-exec:
 * an exec worker under valgrind takes seconds to start (see
 * skip_exec_under_valgrind).
 */
#define EXEC_UNDER_VALGRIND \
    "exec pools are left out under valgrind here (slow to start; tests/test-common-exec runs them)"

/*
 * A fork worker is a copy of the caller made by one thread: heap blocks that
 * only other threads' stacks point to look lost in it, and valgrind checks
 * every process for leaks when it exits. Tests that create process pools
 * while other threads hold such blocks leave that part out under valgrind.
 */
#define FORK_AMONG_THREADS_UNDER_VALGRIND \
    "a fork worker made among busy threads inherits blocks only their stacks point to, " \
    "which valgrind's leak check in the worker calls lost"

/*
 * AddressSanitizer's allocator (GCC 12's libasan, clang 14's) is not
 * fork-safe: it does not take its locks around fork() as glibc's malloc
 * does, so a child forked while another thread is inside malloc can
 * deadlock at its first malloc. A process pool forks its zygote from the
 * caller; tests that create pools while other threads allocate skip that
 * part when UNDER_ASAN.
 */
#if defined(__SANITIZE_ADDRESS__)
#  define UNDER_ASAN 1
#elif defined(__has_feature)
#  if __has_feature(address_sanitizer)
#    define UNDER_ASAN 1
#  endif
#endif
#ifndef UNDER_ASAN
#  define UNDER_ASAN 0
#endif

/* A size from the environment variable `name`, else `dflt`. */
static inline long env_long(const char *name, long dflt)
{
    const char *s = getenv(name);
    char *end;
    long v;
    if (s == NULL || *s == '\0')
        return dflt;
    v = strtol(s, &end, 10);
    return *end == '\0' && v > 0 ? v : dflt;
}

/* Crashing tasks must not leave core files behind. */
static inline void no_core_dumps(void)
{
    struct rlimit no_core = { 0, 0 };
    setrlimit(RLIMIT_CORE, &no_core);
}

/* ---- time and atomics ---------------------------------------------------------------- */

static inline uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/*
 * Loops that repeat a cycle to hunt for rare events (a leak per cycle, a
 * race at creation or free) run at least `min` rounds and at most `max`,
 * and stop past `min` once CF_TEST_LOOP_SECONDS (default 20) have passed
 * since `start_ms`: on a slow machine they run fewer rounds, not longer,
 * and the test prints how many it ran. Never a pass/fail criterion.
 */
static inline bool keep_looping(long done, long min, long max, uint64_t start_ms)
{
    if (done < min)
        return true;
    if (done >= max)
        return false;
    return now_ms() - start_ms < (uint64_t)env_long("CF_TEST_LOOP_SECONDS", 20) * 1000u;
}

static inline void sleep_ms(int ms)
{
    struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

/*
 * Counters and flags shared with workers or other threads are read and
 * written through these, never plainly.
 */
static inline int load_int(const int *p)
{
    return __atomic_load_n(p, __ATOMIC_SEQ_CST);
}

static inline void store_int(int *p, int v)
{
    __atomic_store_n(p, v, __ATOMIC_SEQ_CST);
}

/* Returns the value before the addition. */
static inline int add_int(int *p, int v)
{
    return __atomic_fetch_add(p, v, __ATOMIC_SEQ_CST);
}

/* Polls until *p >= v, for at most max_ms (POLL_MAX_MS, most often); true if it got there. */
static inline bool wait_at_least(const int *p, int v, int max_ms)
{
    uint64_t end = now_ms() + (uint64_t)max_ms;
    while (load_int(p) < v) {
        if (now_ms() >= end)
            return false;
        sleep_ms(1);
    }
    return true;
}

/* A pointer no library call returns: shows that a failed call left *out alone. */
static inline void *untouched(void)
{
    static char mark;
    return &mark;
}

/* ---- values and tasks ------------------------------------------------------------------ */

/* A small fast generator (xorshift64*), one state per thread. */
static inline uint64_t rand_next(uint64_t *state)
{
    uint64_t x = *state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *state = x;
    return x * 0x2545F4914F6CDD1DULL;
}

/* The value task_value computes for i: cheap, and wrong if anything mixed up. */
static inline uint64_t value_for(uint64_t i)
{
    uint64_t x = i * 0x9E3779B97F4A7C15ULL + 0x632BE59BD9B4E019ULL;
    x ^= x >> 31;
    x *= 0xBF58476D1CE4E5B9ULL;
    x ^= x >> 29;
    return x;
}

/* Writes the cf_worker_id() of the worker that runs it (an int result). */
static inline int task_worker_id(const void *arg, size_t as, void *res, size_t rs)
{
    int id = cf_worker_id();
    (void)arg;
    (void)as;
    if (rs != sizeof id)
        return CODE_BADSIZE;
    memcpy(res, &id, sizeof id);
    return 0;
}

/* uint64 i -> value_for(i): a checked task every suite may use. */
static inline int task_value(const void *arg, size_t as, void *res, size_t rs)
{
    uint64_t i, v;
    if (as != sizeof i || rs != sizeof v)
        return CODE_BADSIZE;
    memcpy(&i, arg, sizeof i);
    v = value_for(i);
    memcpy(res, &v, sizeof v);
    return 0;
}

/*
 * Dies of SIGSEGV. Raised rather than caused by a NULL store (valgrind would
 * count the store as an error of the test), and past any handler the worker
 * inherited (a sanitizer's would turn the crash into a report and an exit
 * status).
 */
static inline int task_segv(const void *arg, size_t as, void *res, size_t rs)
{
    (void)arg; (void)as; (void)res; (void)rs;
    signal(SIGSEGV, SIG_DFL);
    raise(SIGSEGV);
    return 0;
}

static inline uint64_t fnv1a(const void *data, size_t n)
{
    const unsigned char *b = data;
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < n; i++) {
        h ^= b[i];
        h *= 1099511628211ULL;
    }
    return h;
}

/* ---- pool kinds ------------------------------------------------------------------------- */

/*
 * The kinds of pool a test runs on, and the one place that says how each is
 * made. A test that runs "on every kind" loops from POOL_THREAD (or
 * POOL_FORK, for process pools alone) to POOL_EXEC. The values are those of
 * CF_TEST_BACKEND, with which the build makes one program per kind of a
 * suite (tests/Makemodule.am, tests/reliability.am).
 */
enum pool_kind {
    POOL_THREAD = 1,    /* cf_thread_pool_new */
    POOL_FORK   = 2,    /* cf_process_pool_new, CF_START_FORK */
    POOL_EXEC   = 3     /* cf_process_pool_new, CF_START_EXEC */
};

struct pool_kind_info {
    const char     *name;       /* "thread", "fork", "exec": for messages */
    bool            process;    /* a process pool */
    cf_start_method start;      /* of a process pool */
};

static inline const struct pool_kind_info *pool_kind(enum pool_kind kind)
{
    static const struct pool_kind_info kinds[] = {
        [POOL_THREAD] = { "thread", false, CF_START_FORK },
        [POOL_FORK]   = { "fork",   true,  CF_START_FORK },
        [POOL_EXEC]   = { "exec",   true,  CF_START_EXEC },
    };
    if (kind < POOL_THREAD || kind > POOL_EXEC)
        abort();    /* a test's own mistake */
    return &kinds[kind];
}

static inline const char *pool_kind_name(enum pool_kind kind)
{
    return pool_kind(kind)->name;
}

/*
 * Creates a pool of this kind with opts (NULL: the defaults), whose start
 * method the kind sets for a process pool; what the constructor returns.
 * NULL options reach cf_thread_pool_new and a fork pool's
 * cf_process_pool_new as NULL.
 */
static inline int pool_kind_new(enum pool_kind kind, cf_executor **out, const cf_options *opts)
{
    const struct pool_kind_info *k = pool_kind(kind);
    cf_options o;
    if (!k->process)
        return cf_thread_pool_new(out, opts);
    if (opts == NULL && k->start == CF_START_FORK)
        return cf_process_pool_new(out, NULL);
    o = opts != NULL ? *opts : (cf_options){ 0 };
    o.start = k->start;
    return cf_process_pool_new(out, &o);
}

/* ---- pipes -------------------------------------------------------------------------------- */

static inline bool read_full(int fd, void *buf, size_t n)
{
    char *p = buf;
    while (n > 0) {
        ssize_t r = read(fd, p, n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return false;
        p += r;
        n -= (size_t)r;
    }
    return true;
}

static inline bool write_full(int fd, const void *buf, size_t n)
{
    const char *p = buf;
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return false;
        p += w;
        n -= (size_t)w;
    }
    return true;
}

/* ---- /proc: processes ----------------------------------------------------------------------- */

/* Entries of a directory, "." and ".." excepted; -1 if it cannot be read. */
static inline int count_dir(const char *path)
{
    DIR *d = opendir(path);
    struct dirent *e;
    int n = 0;
    if (d == NULL)
        return -1;
    while ((e = readdir(d)) != NULL)
        if (e->d_name[0] != '.')
            n++;
    closedir(d);
    return n;
}

/* State letter and parent of pid from /proc/pid/stat; false if it is gone. */
static inline bool proc_stat(pid_t pid, char *state, pid_t *ppid)
{
    char path[64], line[512];
    const char *paren;
    FILE *fp;
    int pp;
    bool ok;

    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    if ((fp = fopen(path, "r")) == NULL)
        return false;
    paren = fgets(line, sizeof line, fp) ? strrchr(line, ')') : NULL;
    fclose(fp);
    ok = paren != NULL && sscanf(paren + 1, " %c %d", state, &pp) == 2;
    if (ok)
        *ppid = (pid_t)pp;
    return ok;
}

/*
 * Writes up to max children of parent (zombies included) to out and returns
 * how many it found in all; *zombies, if not NULL, receives how many of them
 * are zombies.
 */
static inline int proc_children(pid_t parent, pid_t *out, int max, int *zombies)
{
    DIR *d = opendir("/proc");
    struct dirent *e;
    int n = 0, z = 0;

    if (zombies != NULL)
        *zombies = 0;
    if (d == NULL)
        return -1;
    while ((e = readdir(d)) != NULL) {
        char state;
        pid_t pid, ppid;
        if (e->d_name[0] < '1' || e->d_name[0] > '9')
            continue;
        pid = (pid_t)atoi(e->d_name);
        if (!proc_stat(pid, &state, &ppid) || ppid != parent)
            continue;
        if (n < max && out != NULL)
            out[n] = pid;
        n++;
        z += state == 'Z';
    }
    closedir(d);
    if (zombies != NULL)
        *zombies = z;
    return n;
}

/*
 * kill(pid, sig) only while pid is a live child of parent. A pid kept from
 * earlier (a report, shared memory, a /proc walk) may have been reaped and
 * given to another process since, and 0 or a negative pid would signal a
 * whole process group. Returns -1 with errno EINVAL (pid <= 0) or ESRCH (not
 * that child any more) without sending anything.
 */
static inline int kill_child(pid_t pid, pid_t parent, int sig)
{
    char state;
    pid_t ppid;
    if (pid <= 0) {
        errno = EINVAL;
        return -1;
    }
    if (!proc_stat(pid, &state, &ppid) || ppid != parent || state == 'Z' || state == 'X') {
        errno = ESRCH;
        return -1;
    }
    return kill(pid, sig);
}

/* True when pid no longer exists or is a zombie: it has exited. */
static inline bool process_gone(pid_t pid)
{
    char state;
    pid_t ppid;
    return !proc_stat(pid, &state, &ppid) || state == 'Z' || state == 'X';
}

/* The first line of /proc/PID/file, without its newline, into buf; false if it cannot be read. */
static inline bool proc_line(pid_t pid, const char *file, char *buf, size_t size)
{
    char path[64];
    FILE *fp;
    snprintf(path, sizeof path, "/proc/%d/%s", (int)pid, file);
    buf[0] = '\0';
    if ((fp = fopen(path, "r")) == NULL)
        return false;
    bool got = fgets(buf, (int)size, fp) != NULL;
    fclose(fp);
    buf[strcspn(buf, "\n")] = '\0';
    return got;
}

/* True when pid's command name (its comm, as prctl(PR_SET_NAME) sets it) is `name`. */
static inline bool proc_named(pid_t pid, const char *name)
{
    char comm[64];
    return proc_line(pid, "comm", comm, sizeof comm) && strcmp(comm, name) == 0;
}

/*
 * The live child of this process named `name` that is not in `not` (the
 * children it had before the pool); 0 if there is none or more than one.
 */
static inline pid_t find_named_child(const char *name, const pid_t *not, int nnot)
{
    pid_t kids[1024], found = 0;
    int n = proc_children(getpid(), kids, 1024, NULL);
    for (int i = 0; i < n && i < 1024; i++) {
        bool old = false;
        for (int j = 0; j < nnot; j++)
            old = old || kids[i] == not[j];
        if (old || process_gone(kids[i]) || !proc_named(kids[i], name))
            continue;
        if (found != 0)
            return 0;
        found = kids[i];
    }
    return found;
}

/*
 * The zygote of the one pool this process has (a child named
 * cfutures-zygote, not in `not`); 0 if there is none or more. A process pool
 * has a second child, its standby zygote (cfutures-spare), which takes over
 * when the zygote dies.
 */
static inline pid_t find_zygote(const pid_t *not, int nnot)
{
    /*
     * For the instant it forks a new standby the zygote carries the standby's
     * name (so that the standby has it from its first instant): look again,
     * for a while, before saying there is none.
     */
    pid_t z;
    for (int ms = 0; (z = find_named_child("cfutures-zygote", not, nnot)) == 0 && ms < POLL_MAX_MS; ms++)
        sleep_ms(1);
    return z;
}

static inline pid_t find_standby(const pid_t *not, int nnot)
{
    return find_named_child("cfutures-spare", not, nnot);
}

/* ---- /proc: descriptors ------------------------------------------------------------------------ */

/* The close-on-exec bit of fd as /proc/self/fdinfo shows it: 1, 0, or -1. */
static inline int fd_cloexec(int fd)
{
    char path[64], line[256];
    int found = -1;
    FILE *fp;

    snprintf(path, sizeof path, "/proc/self/fdinfo/%d", fd);
    if ((fp = fopen(path, "r")) == NULL)
        return -1;
    while (fgets(line, sizeof line, fp) != NULL) {
        unsigned long flags;
        if (sscanf(line, "flags: %lo", &flags) == 1) {
            found = (flags & O_CLOEXEC) != 0;
            break;
        }
    }
    fclose(fp);
    return found;
}

/* Writes the open descriptors of this process to out (up to max); returns how many. */
static inline int list_fds(int *out, int max)
{
    DIR *d = opendir("/proc/self/fd");
    struct dirent *e;
    int n = 0;
    if (d == NULL)
        return -1;
    while ((e = readdir(d)) != NULL) {
        int fd;
        if (e->d_name[0] < '0' || e->d_name[0] > '9')
            continue;
        fd = atoi(e->d_name);
        if (fd == dirfd(d))
            continue;
        if (n < max)
            out[n] = fd;
        n++;
    }
    closedir(d);
    return n;
}

/* How many descriptors this process has open. */
static inline int fd_count(void)
{
    int fds[1024];
    return list_fds(fds, 1024);
}

/* What a descriptor refers to: the file's identity, and its kind. */
struct fd_id {
    dev_t dev;
    ino_t ino;
    char  kind;    /* 'p' pipe, 's' socket, 'm' memfd, 'a' anonymous inode, 'o' other */
};

/* The descriptors of pid (up to max) and what they refer to; returns how many. */
static inline int fd_ids(pid_t pid, struct fd_id *out, int max)
{
    char dir[64], path[384], link[256];
    struct dirent *e;
    DIR *d;
    int n = 0;

    snprintf(dir, sizeof dir, "/proc/%d/fd", (int)pid);
    if ((d = opendir(dir)) == NULL)
        return 0;
    while ((e = readdir(d)) != NULL && n < max) {
        struct stat st;
        ssize_t len;
        if (e->d_name[0] < '0' || e->d_name[0] > '9')
            continue;
        if (pid == getpid() && atoi(e->d_name) == dirfd(d))
            continue;
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        len = readlink(path, link, sizeof link - 1);
        if (len <= 0 || stat(path, &st) != 0)
            continue;
        link[len] = '\0';
        out[n].dev = st.st_dev;
        out[n].ino = st.st_ino;
        out[n].kind = strncmp(link, "pipe:", 5) == 0 ? 'p' : strncmp(link, "socket:", 7) == 0 ? 's'
                    : strncmp(link, "/memfd:", 7) == 0 ? 'm' : strncmp(link, "anon_inode:", 11) == 0 ? 'a'
                    : 'o';
        n++;
    }
    closedir(d);
    return n;
}

static inline bool fd_id_in(const struct fd_id *id, const struct fd_id *set, int n)
{
    for (int i = 0; i < n; i++)
        if (set[i].dev == id->dev && set[i].ino == id->ino)
            return true;
    return false;
}

/*
 * Checks that pid, the zygote or standby of a fork pool, holds no descriptor
 * of another pool. Of the files opened since `before` (the caller's
 * descriptors when no pool existed) it may hold its own control socket (one
 * socket the caller does not hold: the caller holds its peer) and its own
 * pool's death pipe (one descriptor, the read end); nothing else that can be
 * told apart (eventfds and pidfds cannot): no other pipe, no memfd, no socket
 * the caller holds (`now`: the caller's descriptors at the time). Writes
 * what is wrong to msg.
 */
static inline bool pool_process_clean(pid_t pid, const struct fd_id *before, int nbefore,
                                      const struct fd_id *now, int nnow, char *msg, size_t size)
{
    struct fd_id *ids = malloc(4096 * sizeof *ids);
    int n = ids != NULL ? fd_ids(pid, ids, 4096) : 0, pipes = 0, memfds = 0, own = 0, callers = 0;
    for (int i = 0; i < n; i++) {
        if (fd_id_in(&ids[i], before, nbefore))
            continue;    /* the caller's from before any pool */
        pipes += ids[i].kind == 'p';
        memfds += ids[i].kind == 'm';
        if (ids[i].kind == 's' && fd_id_in(&ids[i], now, nnow))
            callers++;
        else if (ids[i].kind == 's')
            own++;
    }
    free(ids);
    bool clean = n > 0 && pipes == 1 && memfds == 0 && callers == 0 && own == 1;
    /* Where it is, should it stay unclean: its name, its state, what it waits in. */
    char comm[32] = "?", wchan[64] = "?", state = '?';
    pid_t ppid;
    if (!clean) {
        if (!proc_line(pid, "comm", comm, sizeof comm))
            strcpy(comm, "?");
        if (!proc_line(pid, "wchan", wchan, sizeof wchan))
            strcpy(wchan, "?");
        if (!proc_stat(pid, &state, &ppid))
            state = '?';
    }
    snprintf(msg, size, "process %d (%s, state %c, in %s) holds %d pipe descriptors (want 1: its death pipe), "
             "%d memfds (want 0), %d sockets the caller holds (want 0) and %d others (want 1: its own)",
             (int)pid, comm, state, wchan, pipes, memfds, callers, own);
    return clean;
}

/* ---- /proc: census --------------------------------------------------------------------------- */

/* What a process owns that a pool could leak. */
struct census {
    int fds;           /* open descriptors */
    int threads;       /* threads of this process */
    int children;      /* child processes, zombies included */
    int zombies;
    int shared_maps;   /* MAP_SHARED mappings (memfd, shm) */
};

static inline int count_shared_maps(void)
{
    FILE *fp = fopen("/proc/self/maps", "r");
    char line[1024], perms[8];
    int n = 0;
    if (fp == NULL)
        return -1;
    while (fgets(line, sizeof line, fp))
        if (sscanf(line, "%*s %7s", perms) == 1 && perms[3] == 's')
            n++;
    fclose(fp);
    return n;
}

static inline void census_take(struct census *c)
{
    c->fds = count_dir("/proc/self/fd");
    c->threads = count_dir("/proc/self/task");
    c->children = proc_children(getpid(), NULL, 0, &c->zombies);
    c->shared_maps = count_shared_maps();
}

/*
 * Takes a census and compares it with `before`; writes what differs to msg
 * and returns false if anything does (or /proc could not be read). Threads
 * and processes of a freed pool are gone when cf_executor_free returns (the
 * header promises it), so there is no waiting here.
 */
static inline bool census_same(const struct census *before, char *msg, size_t size)
{
    struct census now;
    census_take(&now);
    snprintf(msg, size, "fds %d -> %d, threads %d -> %d, children %d -> %d, zombies %d, "
             "shared mappings %d -> %d", before->fds, now.fds, before->threads, now.threads,
             before->children, now.children, now.zombies, before->shared_maps, now.shared_maps);
    return now.fds == before->fds && now.threads == before->threads &&
           now.children == before->children && now.zombies == 0 &&
           now.shared_maps == before->shared_maps;
}

#ifndef CF_TEST_PLAIN
/* ---- Criterion: probes and gated tasks ----------------------------------------------------------- */

/*
 * Tasks report back to the test through a `struct probe` that the test
 * allocates with cf_shared_alloc BEFORE it creates the pool, so that fork
 * workers and threads alike see the same memory. All accesses to it go
 * through the atomic accessors above.
 *
 * Gated tasks block until the test opens their gate: that is how a test puts
 * a task in a known state (running, pending behind it) without guessing with
 * sleeps. A gate that is never opened gives up after GATE_MAX_MS so that a
 * broken test fails instead of leaving a worker spinning.
 *
 * A count a test waits on is published after the values it vouches for:
 * `started >= n` means that pid[0..n-1] and wid[0..n-1] are written (see
 * probe_record). A pid read back from the probe or a result goes to kill()
 * through kill_one, which fails the test on a pid <= 0 instead of signalling
 * a whole process group.
 */
#define PROBE_SLOTS   64

struct probe {
    int started;                /* gated tasks that have begun, pid and wid written */
    int gate[PROBE_SLOTS];      /* the test opens gate i to let task i finish */
    int count;                  /* runs of counting tasks */
    int inits;                  /* initializer runs; those that call probe_record wrote init_pid, init_wid */
    int init_bad;               /* initializer runs that saw wrong initargs */
    int value;                  /* free for a test's own use */
    int pid[PROBE_SLOTS];       /* getpid() of each started gated task */
    int wid[PROBE_SLOTS];       /* cf_worker_id() of the same */
    int init_pid[PROBE_SLOTS];  /* getpid() of each initializer run */
    int init_wid[PROBE_SLOTS];  /* cf_worker_id() of the same */
    int claimed;                /* slots of pid/wid taken; `started` counts those filled */
    int init_claimed;           /* the same for init_pid/init_wid and `inits` */
};

static inline bool wait_future_running(const cf_future *f)
{
    for (int ms = 0; ms < POLL_MAX_MS; ms++) {
        if (cf_future_running(f))
            return true;
        sleep_ms(1);
    }
    return cf_future_running(f);
}

#if defined(CF_TEST_BACKEND) && CF_TEST_BACKEND == 4
#  include "mpi-harness.h"
#  define PROBE_ALLOC(n)    mh_probe_alloc(n)
#  define PROBE_FREE(p, n)  mh_probe_free(p, n)
#else
#  define PROBE_ALLOC(n)    cf_shared_alloc(n)
#  define PROBE_FREE(p, n)  cf_shared_free(p, n)
#endif

static inline struct probe *probe_new(void)
{
    struct probe *p = PROBE_ALLOC(sizeof *p);
    cr_assert_not_null(p, "cf_shared_alloc(struct probe) failed");
    return p;
}

static inline void probe_free(struct probe *p)
{
    PROBE_FREE(p, sizeof *p);
}

/*
 * Records getpid() and cf_worker_id() of the caller in the next slot of
 * pid[] and wid[], then counts it in *count. A test that sees *count >= n
 * reads slots 0..n-1, so a slot is counted only once it is written, and
 * slots are counted in the order they were taken (*claimed): a task that
 * took slot s waits until the one that took s - 1 has counted it. Counting
 * first and writing after once let a test read pid 0 and kill(0, SIGINT)
 * its own process group. False, and nothing counted, if an earlier slot is
 * still not counted after GATE_MAX_MS (its task died between taking and
 * counting it): the test's wait for the count then fails.
 */
static inline bool probe_record(int *claimed, int *count, int *pid, int *wid)
{
    int slot = add_int(claimed, 1);
    if (slot < PROBE_SLOTS) {
        store_int(&wid[slot], cf_worker_id());
        store_int(&pid[slot], (int)getpid());
    }
    /* Acquire: the slots before ours are written when their count shows. */
    for (int ms = 0; __atomic_load_n(count, __ATOMIC_ACQUIRE) != slot; ms++) {
        if (ms >= GATE_MAX_MS)
            return false;
        sleep_ms(1);
    }
    /* Release: a reader that sees slot + 1 also sees pid[slot] and wid[slot]. */
    __atomic_store_n(count, slot + 1, __ATOMIC_RELEASE);
    return true;
}

/* Waits for gate i of p, at most GATE_MAX_MS; false if it never opened. */
static inline bool probe_gate_wait(struct probe *p, int i)
{
    for (int ms = 0; ms < GATE_MAX_MS; ms++) {
        if (load_int(&p->gate[i]))
            return true;
        sleep_ms(1);
    }
    return false;
}

/* Called by a gated task: records who runs it, then waits for gate i. */
static inline bool probe_gate_pass(struct probe *p, int i)
{
    return probe_record(&p->claimed, &p->started, p->pid, p->wid) && probe_gate_wait(p, i);
}

static inline void probe_open(struct probe *p, int i)
{
    store_int(&p->gate[i], 1);
}

static inline void probe_open_all(struct probe *p)
{
    for (int i = 0; i < PROBE_SLOTS; i++)
        probe_open(p, i);
}

/*
 * kill(2) for one process whose pid was read back from shared memory or a
 * task's result: input, not truth. kill(0, sig) would signal the test's own
 * process group and kill(-1, sig) every process it may signal, so a pid
 * <= 0 fails the test instead.
 */
static inline int kill_one(pid_t pid, int sig)
{
    cr_assert_gt(pid, 0, "kill(%d, %d): not the pid of one process", (int)pid, sig);
    return kill(pid, sig);
}

/* ---- Criterion: pools ------------------------------------------------------------------------------ */

/* Skips the test on an exec pool under valgrind (see EXEC_UNDER_VALGRIND). */
static inline void skip_exec_under_valgrind(enum pool_kind kind)
{
    if (kind == POOL_EXEC && under_valgrind())
        cr_skip_test(EXEC_UNDER_VALGRIND);
}

/*
 * The pool under test of a suite built once per kind: CF_TEST_BACKEND is an
 * enum pool_kind (1 thread, 2 fork, 3 exec). BACKEND_PROCESS and
 * BACKEND_EXEC are for #if.
 */
#ifdef CF_TEST_BACKEND
#  if CF_TEST_BACKEND < 1 || CF_TEST_BACKEND > 4
#    error "CF_TEST_BACKEND must be 1 (threads), 2 (fork workers), 3 (exec workers) or 4 (MPI)"
#  endif
#  define BACKEND_PROCESS  (CF_TEST_BACKEND != 1)
#  define BACKEND_EXEC     (CF_TEST_BACKEND == 3)
#  define BACKEND_MPI      (CF_TEST_BACKEND == 4)
#  if BACKEND_MPI
/* The MPI backend: tasks run in fork workers of the serving ranks, so the
 * kind a test compares with is POOL_FORK; see mpi-harness.h. */
#    define BACKEND          POOL_FORK
#    define BACKEND_NAME     "mpi"
static inline int pool_new(cf_executor **out, const cf_options *opts)
{
    return mh_pool_new(out, opts, *probe_slot(), sizeof **probe_slot());
}
#  else
#    define BACKEND          ((enum pool_kind)CF_TEST_BACKEND)
#    define BACKEND_NAME     pool_kind_name(BACKEND)

static inline int pool_new(cf_executor **out, const cf_options *opts)
{
    return pool_kind_new(BACKEND, out, opts);
}
#  endif

/* A pool of n workers that must start. */
static inline cf_executor *pool_start(unsigned workers)
{
    cf_options opts = { .workers = workers };
    cf_executor *ex = NULL;
    int rc = pool_new(&ex, &opts);
    cr_assert_eq(rc, 0, "%s pool_new(%u workers): %s", BACKEND_NAME, workers, cf_strerror(rc));
    cr_assert_not_null(ex);
    return ex;
}

/*
 * The probe of each test (probe_setup as its .init, probe_teardown as its
 * .fini), allocated before its pools. An exec worker starts with none of
 * the caller's globals, so it finds the probe through the environment,
 * which it does inherit; the probe itself is mapped at the same address
 * there. Tasks name it `probe`.
 */
static inline struct probe **probe_slot(void)
{
    static struct probe *p;
    return &p;
}

static inline struct probe *probe_here(void)
{
    const char *where;
    if (*probe_slot() == NULL && (where = getenv("CF_TEST_PROBE")) != NULL)
        *probe_slot() = (struct probe *)(uintptr_t)strtoull(where, NULL, 16);
    if (*probe_slot() == NULL)
        abort();    /* a test without probe_setup: a crash of its own, not a NULL store */
    return *probe_slot();
}

static inline void probe_setup(void)
{
    char where[32];
    *probe_slot() = probe_new();
    snprintf(where, sizeof where, "%" PRIxPTR, (uintptr_t)*probe_slot());
    setenv("CF_TEST_PROBE", where, 1);
}

static inline void probe_teardown(void)
{
    unsetenv("CF_TEST_PROBE");
    probe_free(*probe_slot());
    *probe_slot() = NULL;
}

/* Last: from here on `probe` is the test's probe, not the struct tag. */
#define probe (probe_here())
#endif /* CF_TEST_BACKEND */
#endif /* !CF_TEST_PLAIN */

#endif /* CF_TESTS_HELPERS_H */
