/*
 * reliability.h — helpers of the reliability suites (tests/reliability.am):
 * test-chaos, test-lifecycle, test-signals, test-callers, test-badinput,
 * test-limits and test-security. Plain C, no Criterion, so that
 * tests/tsan-stress.c can use it too.
 *
 * What they share: how long a test may wait, whether it runs under valgrind
 * or a sanitizer (and must then do less), a census of what a process owns
 * (descriptors, threads, child processes, zombies, shared mappings) to show
 * that nothing was left behind, and the /proc walks that find a pool's zygote
 * and workers so that a test can kill them.
 */
#ifndef CF_TESTS_RELIABILITY_H
#define CF_TESTS_RELIABILITY_H

#include <cfutures.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#if defined(__has_include)
#  if __has_include(<valgrind/valgrind.h>)
#    include <valgrind/valgrind.h>
#    define REL_HAVE_VALGRIND_H 1
#  endif
#endif

/* Criterion .timeout of the reliability tests, in seconds. */
#define REL_TIMEOUT       120
#define REL_SLOW_TIMEOUT  600     /* soak and 1000-cycle tests; they bound their own waits */

/* ---- where we run ------------------------------------------------------- */

/*
 * Under valgrind everything is 20 to 50 times slower, and exec workers
 * cannot start (see tests/helpers.h): tests do fewer rounds there. The
 * preload library in LD_PRELOAD gives valgrind away when its header is not
 * installed.
 */
static inline bool rel_under_valgrind(void)
{
#ifdef REL_HAVE_VALGRIND_H
    if (RUNNING_ON_VALGRIND)
        return true;
#endif
    const char *preload = getenv("LD_PRELOAD");
    return preload != NULL && strstr(preload, "vgpreload") != NULL;
}

/*
 * AddressSanitizer's allocator (GCC 12's libasan, clang 14's) is not
 * fork-safe: it does not take its locks around fork() as glibc's malloc
 * does, so a child forked while another thread is inside malloc can
 * deadlock at its first malloc. A process pool forks its zygote from the
 * caller; tests that create pools while other threads allocate skip that
 * part in ASan builds.
 */
/*
 * Exec pools are left out under valgrind in these suites: an exec worker
 * under valgrind takes seconds to start, and tests/test-common-exec already
 * runs them there.
 */
#define REL_EXEC_UNDER_VALGRIND \
    "exec pools are left out under valgrind here (slow to start; tests/test-common-exec runs them)"

/*
 * A fork worker is a copy of the caller made by one thread: heap blocks that
 * only other threads' stacks point to look lost in it, and valgrind checks
 * every process for leaks when it exits. Tests that create process pools
 * while other threads hold such blocks leave that part out under valgrind.
 */
#define REL_FORK_AMONG_THREADS_UNDER_VALGRIND \
    "a fork worker made among busy threads inherits blocks only their stacks point to, " \
    "which valgrind's leak check in the worker calls lost"

#if defined(__SANITIZE_ADDRESS__)
#  define REL_ASAN 1
#elif defined(__has_feature)
#  if __has_feature(address_sanitizer)
#    define REL_ASAN 1
#  endif
#endif
#ifndef REL_ASAN
#  define REL_ASAN 0
#endif

/* A size from the environment variable `name`, else `dflt`. */
static inline long rel_env_long(const char *name, long dflt)
{
    const char *s = getenv(name);
    char *end;
    long v;
    if (s == NULL || *s == '\0')
        return dflt;
    v = strtol(s, &end, 10);
    return *end == '\0' && v > 0 ? v : dflt;
}

/*
 * Loops that repeat a cycle to hunt for rare events (a leak per cycle, a
 * race at creation or free) run at least `min` rounds and at most `max`,
 * and stop past `min` once CF_TEST_LOOP_SECONDS (default 20) have passed
 * since `start_ms`: on a slow machine they run fewer rounds, not longer,
 * and the test prints how many it ran. Never a pass/fail criterion.
 */
static inline bool rel_keep_looping(long done, long min, long max, uint64_t start_ms);

/* Crashing tasks must not leave core files behind. */
static inline void rel_no_core_dumps(void)
{
    struct rlimit no_core = { 0, 0 };
    setrlimit(RLIMIT_CORE, &no_core);
}

/* ---- time and atomics ------------------------------------------------------ */

static inline uint64_t rel_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static inline bool rel_keep_looping(long done, long min, long max, uint64_t start_ms)
{
    if (done < min)
        return true;
    if (done >= max)
        return false;
    return rel_now_ms() - start_ms < (uint64_t)rel_env_long("CF_TEST_LOOP_SECONDS", 20) * 1000u;
}

static inline void rel_sleep_ms(int ms)
{
    struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

static inline int rel_load(const int *p)
{
    return __atomic_load_n(p, __ATOMIC_SEQ_CST);
}

static inline void rel_store(int *p, int v)
{
    __atomic_store_n(p, v, __ATOMIC_SEQ_CST);
}

/* Returns the value before the addition. */
static inline int rel_add(int *p, int v)
{
    return __atomic_fetch_add(p, v, __ATOMIC_SEQ_CST);
}

/* Polls until *p >= v, for at most max_ms; true if it got there. */
static inline bool rel_wait_at_least(const int *p, int v, int max_ms)
{
    uint64_t end = rel_now_ms() + (uint64_t)max_ms;
    while (rel_load(p) < v) {
        if (rel_now_ms() >= end)
            return false;
        rel_sleep_ms(1);
    }
    return true;
}

/* A pointer no library call returns: shows that a failed call left *out alone. */
static inline void *rel_untouched(void)
{
    static char mark;
    return &mark;
}

/* A small fast generator (xorshift64*), one state per thread. */
static inline uint64_t rel_rand(uint64_t *state)
{
    uint64_t x = *state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *state = x;
    return x * 0x2545F4914F6CDD1DULL;
}

/* The value a checked task computes for i: cheap, and wrong if anything mixed up. */
static inline uint64_t rel_expect(uint64_t i)
{
    uint64_t x = i * 0x9E3779B97F4A7C15ULL + 0x632BE59BD9B4E019ULL;
    x ^= x >> 31;
    x *= 0xBF58476D1CE4E5B9ULL;
    x ^= x >> 29;
    return x;
}

/* A task's own code when it is called with sizes it did not expect. */
#define CODE_BADSIZE 79

/* uint64 i -> rel_expect(i): a checked task every suite uses. */
static inline int rel_task_value(const void *arg, size_t as, void *res, size_t rs)
{
    uint64_t i, v;
    if (as != sizeof i || rs != sizeof v)
        return CODE_BADSIZE;
    memcpy(&i, arg, sizeof i);
    v = rel_expect(i);
    memcpy(res, &v, sizeof v);
    return 0;
}

/*
 * Dies of SIGSEGV, raised past any handler the worker inherited (a
 * sanitizer's would turn the crash into a report and an exit status).
 */
static inline int rel_task_segv(const void *arg, size_t as, void *res, size_t rs)
{
    (void)arg; (void)as; (void)res; (void)rs;
    signal(SIGSEGV, SIG_DFL);
    raise(SIGSEGV);
    return 0;
}

/* ---- pipes ------------------------------------------------------------------ */

static inline bool rel_read_full(int fd, void *buf, size_t n)
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

static inline bool rel_write_full(int fd, const void *buf, size_t n)
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

/* ---- /proc ------------------------------------------------------------------ */

/* Entries of a directory, "." and ".." excepted; -1 if it cannot be read. */
static inline int rel_count_dir(const char *path)
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
static inline bool rel_proc_stat(pid_t pid, char *state, pid_t *ppid)
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
static inline int rel_children(pid_t parent, pid_t *out, int max, int *zombies)
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
        if (!rel_proc_stat(pid, &state, &ppid) || ppid != parent)
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
static inline int rel_kill_child(pid_t pid, pid_t parent, int sig)
{
    char state;
    pid_t ppid;
    if (pid <= 0) {
        errno = EINVAL;
        return -1;
    }
    if (!rel_proc_stat(pid, &state, &ppid) || ppid != parent || state == 'Z' || state == 'X') {
        errno = ESRCH;
        return -1;
    }
    return kill(pid, sig);
}

/* True when pid no longer exists or is a zombie. */
static inline bool rel_process_gone(pid_t pid)
{
    char state;
    pid_t ppid;
    return !rel_proc_stat(pid, &state, &ppid) || state == 'Z' || state == 'X';
}

/* The close-on-exec bit of fd as /proc/self/fdinfo shows it: 1, 0, or -1. */
static inline int rel_fd_cloexec(int fd)
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
static inline int rel_list_fds(int *out, int max)
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
static inline int rel_fd_count(void)
{
    int fds[1024];
    return rel_list_fds(fds, 1024);
}

/* ---- descriptors of pool processes ------------------------------------------- */

/* What a descriptor refers to: the file's identity, and its kind. */
struct rel_fdid {
    dev_t dev;
    ino_t ino;
    char  kind;    /* 'p' pipe, 's' socket, 'm' memfd, 'a' anonymous inode, 'o' other */
};

/* The descriptors of pid (up to max) and what they refer to; returns how many. */
static inline int rel_fd_ids(pid_t pid, struct rel_fdid *out, int max)
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

static inline bool rel_fdid_in(const struct rel_fdid *id, const struct rel_fdid *set, int n)
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
static inline bool rel_pool_process_clean(pid_t pid, const struct rel_fdid *before, int nbefore,
                                          const struct rel_fdid *now, int nnow, char *msg, size_t size)
{
    struct rel_fdid *ids = malloc(4096 * sizeof *ids);
    int n = ids != NULL ? rel_fd_ids(pid, ids, 4096) : 0, pipes = 0, memfds = 0, own = 0, callers = 0;
    for (int i = 0; i < n; i++) {
        if (rel_fdid_in(&ids[i], before, nbefore))
            continue;    /* the caller's from before any pool */
        pipes += ids[i].kind == 'p';
        memfds += ids[i].kind == 'm';
        if (ids[i].kind == 's' && rel_fdid_in(&ids[i], now, nnow))
            callers++;
        else if (ids[i].kind == 's')
            own++;
    }
    free(ids);
    snprintf(msg, size, "process %d holds %d pipe descriptors (want 1: its death pipe), %d memfds (want 0), "
             "%d sockets the caller holds (want 0) and %d others (want 1: its own)", (int)pid, pipes, memfds,
             callers, own);
    return n > 0 && pipes == 1 && memfds == 0 && callers == 0 && own == 1;
}

/* ---- census ------------------------------------------------------------------- */

/* What a process owns that a pool could leak. */
struct rel_census {
    int fds;           /* open descriptors */
    int threads;       /* threads of this process */
    int children;      /* child processes, zombies included */
    int zombies;
    int shared_maps;   /* MAP_SHARED mappings (memfd, shm) */
};

static inline int rel_count_shared_maps(void)
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

static inline void rel_census_take(struct rel_census *c)
{
    c->fds = rel_count_dir("/proc/self/fd");
    c->threads = rel_count_dir("/proc/self/task");
    c->children = rel_children(getpid(), NULL, 0, &c->zombies);
    c->shared_maps = rel_count_shared_maps();
}

/*
 * Takes a census and compares it with `before`; writes what differs to msg
 * and returns false if anything does. Threads and processes of a freed pool
 * are gone when cf_executor_free returns (the header promises it), so there
 * is no waiting here.
 */
static inline bool rel_census_same(const struct rel_census *before, char *msg, size_t size)
{
    struct rel_census now;
    rel_census_take(&now);
    snprintf(msg, size, "fds %d -> %d, threads %d -> %d, children %d -> %d, zombies %d, "
             "shared mappings %d -> %d", before->fds, now.fds, before->threads, now.threads,
             before->children, now.children, now.zombies, before->shared_maps, now.shared_maps);
    return now.fds == before->fds && now.threads == before->threads &&
           now.children == before->children && now.zombies == 0 &&
           now.shared_maps == before->shared_maps;
}

/* True when pid's command name (its comm, as prctl(PR_SET_NAME) sets it) is `name`. */
static inline bool rel_proc_named(pid_t pid, const char *name)
{
    char path[64], comm[64] = "";
    FILE *fp;
    snprintf(path, sizeof path, "/proc/%d/comm", (int)pid);
    if ((fp = fopen(path, "r")) == NULL)
        return false;
    if (fgets(comm, sizeof comm, fp) == NULL)
        comm[0] = '\0';
    fclose(fp);
    comm[strcspn(comm, "\n")] = '\0';
    return strcmp(comm, name) == 0;
}

/*
 * The live child of this process named `name` that is not in `not` (the
 * children it had before the pool); 0 if there is none or more than one.
 */
static inline pid_t rel_find_named_child(const char *name, const pid_t *not, int nnot)
{
    pid_t kids[1024], found = 0;
    int n = rel_children(getpid(), kids, 1024, NULL);
    for (int i = 0; i < n && i < 1024; i++) {
        bool old = false;
        for (int j = 0; j < nnot; j++)
            old = old || kids[i] == not[j];
        if (old || rel_process_gone(kids[i]) || !rel_proc_named(kids[i], name))
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
static inline pid_t rel_find_zygote(const pid_t *not, int nnot)
{
    return rel_find_named_child("cfutures-zygote", not, nnot);
}

static inline pid_t rel_find_standby(const pid_t *not, int nnot)
{
    return rel_find_named_child("cfutures-spare", not, nnot);
}

#endif /* CF_TESTS_RELIABILITY_H */
