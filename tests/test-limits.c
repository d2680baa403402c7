/*
 * Exhaustion and failure to start:
 *
 *   - more pending tasks than the ring holds (1024 slots), and more argument
 *     bytes than the shared arena holds (1 GiB), while every worker is
 *     blocked: submit waits until room frees (or fails with a documented
 *     code), and once the workers go on, every result is verified;
 *   - process creation fails (a seccomp filter: clone without CLONE_THREAD
 *     answers EAGAIN, clone3 ENOSYS) and pool creation answers CF_EAGAIN;
 *   - RLIMIT_NPROC, under a uid of our own (root ignores it): every step of
 *     pool creation fails in turn (manager thread, zygote, each worker, the
 *     zygote's standby) with CF_EAGAIN and leaves nothing behind; a thread
 *     pool too;
 *   - a worker cannot be replaced after creation (prlimit on the zygote):
 *     the pool runs degraded on the workers it has, keeps a task pending
 *     (not lost) while it has none, and recovers when the limit goes;
 *   - descriptors exhausted (RLIMIT_NOFILE) at every step of creation: a
 *     documented code, no crash, no leak;
 *   - so many pools at once that the library holds more than 1024
 *     descriptors: a new zygote still closes every other pool's.
 *
 * Tests that change limits or credentials do it in a forked child, which
 * reports through a pipe: a line of text on failure, nothing on success.
 */
#include "helpers.h"

#include <criterion/criterion.h>

#include <grp.h>
#include <limits.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <pthread.h>
#include <sched.h>
#include <stddef.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>

#define GATE_MS  60000    /* a gated task of this suite gives up after this long */

static void setup(void)
{
    no_core_dumps();
}

/* ---- tasks ---------------------------------------------------------------------- */

struct gate {
    int open;
    int waiting;
};

/* Blocks until the gate (cf_shared_alloc'd, so fork and exec see it) opens. */
static int task_gated(const void *arg, size_t as, void *res, size_t rs)
{
    struct gate *g;
    (void)res; (void)rs;
    if (as != sizeof g)
        return CODE_BADSIZE;
    memcpy(&g, arg, sizeof g);
    add_int(&g->waiting, 1);
    for (uint64_t end = now_ms() + GATE_MS; !load_int(&g->open) && now_ms() < end;)
        sleep_ms(1);
    return 0;
}

/* Who ran it: cf_worker_id. */
static int task_wid(const void *arg, size_t as, void *res, size_t rs)
{
    int w = cf_worker_id();
    (void)arg; (void)as;
    if (rs != sizeof w)
        return CODE_BADSIZE;
    memcpy(res, &w, sizeof w);
    return 0;
}

/* A big argument: byte j of task i is big_byte(i, j); the first 8 bytes hold i. */
static unsigned char big_byte(uint64_t i, size_t j)
{
    return (unsigned char)(i * 131 + j * 7 + (j >> 12));
}

/* Checks the stamp and 256 sampled bytes of its argument; returns a digest of them. */
static int task_big(const void *arg, size_t as, void *res, size_t rs)
{
    const unsigned char *a = arg;
    uint64_t i, digest;
    if (as < 4096 || rs != sizeof digest)
        return CODE_BADSIZE;
    memcpy(&i, a, sizeof i);
    digest = i;
    for (size_t k = 0; k < 256; k++) {
        size_t j = 8 + (k * (as - 8)) / 256;
        if (a[j] != big_byte(i, j))
            return 90;    /* corrupted */
        digest = digest * 1099511628211ULL + a[j];
    }
    if (a[as - 1] != big_byte(i, as - 1))
        return 91;
    memcpy(res, &digest, sizeof digest);
    return 0;
}

static uint64_t big_digest(uint64_t i, size_t size)
{
    uint64_t digest = i;
    for (size_t k = 0; k < 256; k++) {
        size_t j = 8 + (k * (size - 8)) / 256;
        digest = digest * 1099511628211ULL + big_byte(i, j);
    }
    return digest;
}

/* Task i's argument size when the largest is max: 1/3 of it to all of it, varied. */
static size_t size_of(uint64_t i, size_t max)
{
    return max / 3 + (size_t)(i % 5) * (max - max / 3) / 4;
}

/* ---- a submitter thread that may block ------------------------------------------- */

struct stream {
    cf_executor *ex;
    long         n;
    size_t       arg_size;     /* 0: small tasks (task_value), else task_big's largest */
    cf_future  **fs;
    int         *rcs;          /* cf_submit's answer for each */
    int          submitted;    /* calls that returned */
    pthread_t    th;
};

static void *stream_main(void *arg)
{
    struct stream *s = arg;
    unsigned char *buf = s->arg_size > 0 ? malloc(s->arg_size) : NULL;
    if (buf != NULL)
        memset(buf, 0x5A, s->arg_size);
    for (long i = 0; i < s->n; i++) {
        uint64_t x = (uint64_t)i;
        if (buf != NULL) {
            /* The stamp and the bytes task_big checks (the rest is filler). */
            size_t size = size_of(x, s->arg_size);
            for (size_t k = 0; k < 256; k++) {
                size_t j = 8 + (k * (size - 8)) / 256;
                buf[j] = big_byte(x, j);
            }
            buf[size - 1] = big_byte(x, size - 1);
            memcpy(buf, &x, sizeof x);
            s->rcs[i] = cf_submit(s->ex, task_big, buf, size, sizeof(uint64_t), &s->fs[i]);
        } else if (s->arg_size > 0) {
            s->rcs[i] = CF_ENOMEM;
        } else {
            s->rcs[i] = cf_submit(s->ex, task_value, &x, sizeof x, sizeof(uint64_t), &s->fs[i]);
        }
        if (s->rcs[i] != 0)
            s->fs[i] = NULL;
        add_int(&s->submitted, 1);
    }
    free(buf);
    return NULL;
}

/*
 * Blocks both workers, streams n tasks from another thread, watches how far
 * the stream gets while nothing can run, then lets the workers go on and
 * verifies every result.
 */
static void exhaust(long n, size_t arg_size, const char *what)
{
    struct gate *gate = cf_shared_alloc(sizeof *gate);
    cf_options o = { .workers = 2 };
    cf_executor *ex = NULL;
    cf_future *blockers[2];
    struct stream s = { .n = n, .arg_size = arg_size };
    int stalled_at, refused = 0;

    cr_assert_not_null(gate);
    cr_assert_eq(cf_process_pool_new(&ex, &o), 0);
    for (int k = 0; k < 2; k++)
        cr_assert_eq(cf_submit(ex, task_gated, &gate, sizeof gate, 0, &blockers[k]), 0);
    cr_assert(wait_at_least(&gate->waiting, 2, 30000), "the blocking tasks did not start");

    s.ex = ex;
    s.fs = calloc((size_t)n, sizeof *s.fs);
    s.rcs = calloc((size_t)n, sizeof *s.rcs);
    cr_assert(s.fs != NULL && s.rcs != NULL);
    cr_assert_eq(pthread_create(&s.th, NULL, stream_main, &s), 0);
    /* Until the stream stops moving for 500 ms, or ends: not an assertion, a report. */
    int last = -1;
    uint64_t still_since = now_ms();
    while (load_int(&s.submitted) < n) {
        int now = load_int(&s.submitted);
        if (now != last) {
            last = now;
            still_since = now_ms();
        } else if (now_ms() - still_since > 500) {
            break;
        }
        sleep_ms(5);
    }
    stalled_at = load_int(&s.submitted);
    store_int(&gate->open, 1);
    pthread_join(s.th, NULL);

    long ok = 0;
    for (long i = 0; i < n; i++) {
        if (s.rcs[i] != 0) {
            /* Refusing is allowed with a documented code; corrupting is not. */
            cr_assert(s.rcs[i] == CF_ENOMEM, "%s: submit %ld answered %s", what, i, cf_strerror(s.rcs[i]));
            refused++;
            continue;
        }
        uint64_t v = 0, want = arg_size > 0 ? big_digest((uint64_t)i, size_of((uint64_t)i, arg_size)) : value_for((uint64_t)i);
        int rc = cf_future_result(s.fs[i], &v, sizeof v, -1);
        cr_assert_eq(rc, 0, "%s: task %ld: %d (%s)", what, i, rc, rc < 0 ? cf_strerror(rc) : "corrupted argument");
        cr_assert_eq(v, want, "%s: task %ld: wrong result", what, i);
        cf_future_free(s.fs[i]);
        ok++;
    }
    for (int k = 0; k < 2; k++) {
        cr_assert_eq(cf_future_result(blockers[k], NULL, 0, -1), 0);
        cf_future_free(blockers[k]);
    }
    cf_executor_free(ex);
    fprintf(stderr, "%s: %ld tasks submitted while both workers were blocked; the submitter %s at %d; "
            "%ld results verified, %d refused (CF_ENOMEM)\n", what, n,
            stalled_at < n ? "waited" : "never waited, it got", stalled_at, ok, refused);
    cr_assert_gt(ok, 0);
    free(s.fs);
    free(s.rcs);
    cf_shared_free(gate, sizeof *gate);
}

Test(limits, more_tasks_than_ring_slots_wait_for_room, .init = setup, .timeout = REL_SLOW_TIMEOUT)
{
    exhaust(under_valgrind() ? 1500 : 5000, 0, "ring (1024 slots)");
}

Test(limits, more_argument_bytes_than_the_arena_wait_for_room, .init = setup, .timeout = REL_SLOW_TIMEOUT)
{
    /* 1000 arguments of 1 to 3 MiB, 2 GiB in all, through a 1 GiB arena:
     * the arena runs out long before the ring's 1024 slots. */
    exhaust(1000, (size_t)3 << 20, "arena (1 GiB), 1-3 MiB arguments");
}

/* One argument larger than the arena: refused at once, nothing read, nothing written. */
Test(limits, argument_larger_than_the_arena_is_refused, .init = setup, .timeout = REL_TIMEOUT)
{
    size_t size = (size_t)2 << 30;
    char *buf = malloc(size);    /* never touched: the library must not read it */
    cf_executor *ex = NULL;
    cf_future *f = untouched();
    cf_options o = { .workers = 1 };
    int rc;

    cr_assert_not_null(buf);
    cr_assert_eq(cf_process_pool_new(&ex, &o), 0);
    rc = cf_submit(ex, task_big, buf, size, sizeof(uint64_t), &f);
    cr_assert(rc == CF_E2BIG || rc == CF_ENOMEM, "a 2 GiB argument: %s", cf_strerror(rc));
    cr_assert_eq(f, untouched());
    rc = cf_map(ex, task_big, buf, size, buf, 8, 1, NULL);
    cr_assert(rc == CF_E2BIG || rc == CF_ENOMEM, "a 2 GiB map element: %s", cf_strerror(rc));
    uint64_t x = 5, v = 0;
    cr_assert_eq(cf_submit(ex, task_value, &x, sizeof x, sizeof v, &f), 0);
    cr_assert_eq(cf_future_result(f, &v, sizeof v, -1), 0);
    cr_assert_eq(v, value_for(x));
    cf_future_free(f);
    cf_executor_free(ex);
    free(buf);
}

/* ---- running a check in a child ------------------------------------------------------ */

static char child_msg[512];

#define CHILD_FAIL(...)                                                          \
    do {                                                                         \
        snprintf(child_msg, sizeof child_msg, __VA_ARGS__);                      \
        return child_msg;                                                        \
    } while (0)

/* Runs fn in a forked child; returns its failure message, or NULL. Skips on 77. */
static const char *in_child(const char *(*fn)(void), char *out, size_t size)
{
    int fds[2], st = 0;
    pid_t pid;
    size_t got = 0;

    cr_assert_eq(pipe(fds), 0);
    pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) {
        close(fds[0]);
        const char *msg = fn();
        if (msg != NULL)
            write_full(fds[1], msg, strlen(msg));
        _exit(msg == NULL ? 0 : strncmp(msg, "skip", 4) == 0 ? 77 : 1);
    }
    close(fds[1]);
    for (;;) {
        ssize_t r = read(fds[0], out + got, size - 1 - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        got += (size_t)r;
    }
    out[got] = '\0';
    close(fds[0]);
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
        ;
    if (WIFEXITED(st) && WEXITSTATUS(st) == 0)
        return NULL;
    if (WIFEXITED(st) && WEXITSTATUS(st) == 77)
        cr_skip_test("%s", got > 6 ? out + 6 : "not possible here");
    if (got == 0)
        snprintf(out, size, "the child ended with status 0x%x and no message", st);
    return out;
}

/* Census of the child itself (descriptors, children). */
struct small_census {
    int fds, children, zombies, threads;
};

static void small_census(struct small_census *c)
{
    c->fds = count_dir("/proc/self/fd");
    c->threads = count_dir("/proc/self/task");
    c->children = proc_children(getpid(), NULL, 0, &c->zombies);
}

/*
 * True once the census is back to *a, within POLL_MAX_MS: a thread that
 * pthread_join has returned for can still be listed in /proc/self/task for
 * a moment (the kernel wakes the joiner before it removes the task), longer
 * on a loaded machine. Anything left behind stays, and fails.
 */
static bool same_census(const struct small_census *a)
{
    for (int ms = 0;; ms++) {
        struct small_census b;
        small_census(&b);
        if (a->fds == b.fds && a->children == b.children && b.zombies == 0 && a->threads == b.threads)
            return true;
        if (ms >= POLL_MAX_MS)
            return false;
        usleep(1000);
    }
}

/* ---- process creation fails: seccomp ---------------------------------------------------- */

static int install_no_fork_filter(void)
{
    struct sock_filter f[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 1, 0),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        /* clone3: ENOSYS, so that glibc falls back to clone, which we can inspect */
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_clone3, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | ENOSYS),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_fork, 2, 0),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_vfork, 1, 0),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_clone, 1, 4),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EAGAIN),
        /* clone: threads (CLONE_THREAD) pass, processes get EAGAIN */
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, args[0])),
        BPF_JUMP(BPF_JMP | BPF_JSET | BPF_K, CLONE_THREAD, 1, 0),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EAGAIN),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    struct sock_fprog prog = { (unsigned short)(sizeof f / sizeof f[0]), f };
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0)
        return -1;
    return prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog);
}

static const char *no_fork_child(void)
{
    struct small_census before;
    cf_executor *ex = untouched();
    int rc;

#if !defined(__x86_64__)
    return "skip: the seccomp filter of this test is written for x86-64";
#endif
    if (install_no_fork_filter() != 0)
        CHILD_FAIL("skip: seccomp filter refused (%s)", strerror(errno));
    if (fork() != -1 || errno != EAGAIN)
        CHILD_FAIL("the seccomp filter does not stop fork");
    small_census(&before);
    for (enum pool_kind kind = POOL_FORK; kind <= POOL_EXEC; kind++) {
        rc = pool_kind_new(kind, &ex, &(cf_options){ .workers = 2 });
        if (rc != CF_EAGAIN)
            CHILD_FAIL("%s pool without fork: %d (%s), want CF_EAGAIN", pool_kind_name(kind), rc,
                       cf_strerror(rc));
        if (ex != untouched())
            CHILD_FAIL("a failed cf_process_pool_new wrote *out");
        if (!same_census(&before))
            CHILD_FAIL("a failed cf_process_pool_new left descriptors, threads or processes");
    }
    /* Threads still start: the filter is selective, and the thread pool works. */
    cf_options o = { .workers = 2 };
    rc = cf_thread_pool_new(&ex, &o);
    if (rc != 0)
        CHILD_FAIL("thread pool under the filter: %s", cf_strerror(rc));
    uint64_t x = 4, v = 0;
    cf_future *f;
    if (cf_submit(ex, task_value, &x, sizeof x, sizeof v, &f) != 0 || cf_future_result(f, &v, sizeof v, -1) != 0 ||
        v != value_for(x))
        CHILD_FAIL("thread pool under the filter did not work");
    cf_future_free(f);
    cf_executor_free(ex);
    return NULL;
}

Test(limits, process_creation_refused_by_seccomp_gives_eagain, .init = setup, .timeout = REL_TIMEOUT)
{
    char msg[600];
    const char *fail = in_child(no_fork_child, msg, sizeof msg);
    cr_assert_null(fail, "%s", fail);
}

/* ---- RLIMIT_NPROC under a uid of our own -------------------------------------------------- */

/* A uid no process uses now (RLIMIT_NPROC counts every process of the uid). */
static uid_t unused_uid(void)
{
    for (uid_t u = 61000 + (uid_t)(getpid() % 3000);; u++) {
        bool used = false;
        DIR *d = opendir("/proc");
        struct dirent *e;
        while (d != NULL && (e = readdir(d)) != NULL && !used) {
            char path[300];
            struct stat stbuf;
            if (e->d_name[0] < '1' || e->d_name[0] > '9')
                continue;
            snprintf(path, sizeof path, "/proc/%s", e->d_name);
            used = stat(path, &stbuf) == 0 && stbuf.st_uid == u;
        }
        if (d != NULL)
            closedir(d);
        if (!used)
            return u;
    }
}

static uid_t the_uid;

/* Only the soft limit moves: an unprivileged process cannot raise its hard limit. */
static const char *set_nproc(rlim_t soft)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NPROC, &rl) != 0)
        CHILD_FAIL("getrlimit(RLIMIT_NPROC): %s", strerror(errno));
    rl.rlim_cur = soft < rl.rlim_max ? soft : rl.rlim_max;
    if (setrlimit(RLIMIT_NPROC, &rl) != 0)
        CHILD_FAIL("setrlimit(RLIMIT_NPROC, %d): %s", (int)soft, strerror(errno));
    return NULL;
}

/* Becomes the_uid (so that RLIMIT_NPROC applies), with a process limit. */
static const char *become_limited(rlim_t nproc)
{
    const char *err = set_nproc(nproc);
    if (err != NULL)
        return err;
    if (setgroups(0, NULL) != 0 || setresgid(the_uid, the_uid, the_uid) != 0 ||
        setresuid(the_uid, the_uid, the_uid) != 0)
        CHILD_FAIL("cannot become uid %u: %s", (unsigned)the_uid, strerror(errno));
    return NULL;
}


/*
 * Limits 1..6 for a pool of two workers: 1 leaves no room for the manager
 * thread, 2 none for the zygote, 3 and 4 none for the first or second
 * worker, 5 none for the zygote's standby; at 6 the pool starts. (The child
 * itself is the uid's one process.)
 */
static const char *nproc_child(void)
{
    const char *err;
    if ((err = become_limited(RLIM_INFINITY)) != NULL)
        return err;
    struct small_census before;
    small_census(&before);
    for (rlim_t lim = 1; lim <= 6; lim++) {
        cf_options o = { .workers = 2 };
        cf_executor *ex = untouched();
        if ((err = set_nproc(lim)) != NULL)
            return err;
        int rc = cf_process_pool_new(&ex, &o);
        if (lim < 6 && rc != CF_EAGAIN)
            CHILD_FAIL("RLIMIT_NPROC %d: cf_process_pool_new gave %d (%s), want CF_EAGAIN", (int)lim, rc,
                       cf_strerror(rc));
        if (lim < 6 && ex != untouched())
            CHILD_FAIL("RLIMIT_NPROC %d: a failed creation wrote *out", (int)lim);
        if (lim == 6) {
            if (rc != 0)
                CHILD_FAIL("RLIMIT_NPROC 6 (room for everything): %s", cf_strerror(rc));
            uint64_t x = 8, v = 0;
            cf_future *f;
            if (cf_submit(ex, task_value, &x, sizeof x, sizeof v, &f) != 0 ||
                cf_future_result(f, &v, sizeof v, -1) != 0 || v != value_for(x))
                CHILD_FAIL("the pool started at the limit does not work");
            cf_future_free(f);
            cf_executor_free(ex);
        }
        if (!same_census(&before))
            CHILD_FAIL("RLIMIT_NPROC %d: creation left descriptors, threads or processes", (int)lim);
    }
    /* A thread pool of 4 threads with room for 2: CF_EAGAIN, and the started threads are joined. */
    if ((err = set_nproc(3)) != NULL)
        return err;
    cf_options o = { .workers = 4 };
    cf_executor *ex = untouched();
    int rc = cf_thread_pool_new(&ex, &o);
    if (rc != CF_EAGAIN || ex != untouched())
        CHILD_FAIL("thread pool of 4 with room for 2 threads: %d (%s), want CF_EAGAIN", rc, cf_strerror(rc));
    if (!same_census(&before))
        CHILD_FAIL("the failed thread pool left threads or descriptors");
    fprintf(stderr, "RLIMIT_NPROC (uid %u): limits 1-5 refuse the manager thread, the zygote, worker 0, "
            "worker 1, the standby: CF_EAGAIN each, nothing left behind; 6 starts the pool; a thread pool of 4 "
            "with room for 2: CF_EAGAIN\n", (unsigned)the_uid);
    return NULL;
}

static void need_root(void)
{
    if (geteuid() != 0)
        cr_skip_test("needs root, to run a child under a uid of its own (root ignores RLIMIT_NPROC)");
    /* Valgrind itself counts against RLIMIT_NPROC, and in a child of another
     * uid cannot open its per-process log in valgrind-logs/. */
    if (under_valgrind())
        cr_skip_test("not under valgrind: it runs as another uid, whose workers cannot write valgrind's logs");
    the_uid = unused_uid();
}

Test(limits, every_creation_step_refused_by_rlimit_nproc, .init = setup, .timeout = REL_TIMEOUT)
{
    char msg[600];
    need_root();
    const char *fail = in_child(nproc_child, msg, sizeof msg);
    cr_assert_null(fail, "%s", fail);
}

/* ---- a replacement cannot start ------------------------------------------------------------ */

static int run_wid(cf_executor *ex, int *wid)
{
    cf_future *f;
    int rc = cf_submit(ex, task_wid, NULL, 0, sizeof *wid, &f);
    if (rc == 0)
        rc = cf_future_result(f, wid, sizeof *wid, -1);
    if (rc == 0 || rc > 0)
        cf_future_free(f);
    return rc;
}

static const char *crash_one(cf_executor *ex)
{
    cf_future *f;
    if (cf_submit(ex, task_segv, NULL, 0, 0, &f) != 0)
        CHILD_FAIL("submit of a crashing task failed");
    int rc = cf_future_result(f, NULL, 0, -1);
    cf_future_free(f);
    if (rc != CF_ECRASHED)
        CHILD_FAIL("the crashing task gave %s", cf_strerror(rc));
    return NULL;
}

static const char *degraded_child(void)
{
    const char *err;
    struct rlimit one, inf;
    struct gate *gate = cf_shared_alloc(sizeof *gate);
    cf_options o = { .workers = 2 };
    cf_executor *ex = NULL;
    cf_future *fs[2], *pending;
    int wid, survivor = -1;

    if (gate == NULL)
        CHILD_FAIL("cf_shared_alloc failed");
    if ((err = become_limited(RLIM_INFINITY)) != NULL)
        return err;
    if (getrlimit(RLIMIT_NPROC, &inf) != 0)
        CHILD_FAIL("getrlimit: %s", strerror(errno));
    one = (struct rlimit){ 1, inf.rlim_max };
    if (cf_process_pool_new(&ex, &o) != 0)
        CHILD_FAIL("pool creation failed");
    pid_t zygote = find_zygote(NULL, 0);
    if (zygote <= 0)
        CHILD_FAIL("no zygote");
    /* From now on the zygote cannot start a process. */
    if (prlimit(zygote, RLIMIT_NPROC, &one, NULL) != 0)
        CHILD_FAIL("prlimit on the zygote: %s", strerror(errno));
    if ((err = crash_one(ex)) != NULL)
        return err;
    /* Degraded: one worker left, and it runs everything. */
    for (int i = 0; i < 200; i++) {
        int rc = run_wid(ex, &wid);
        if (rc != 0)
            CHILD_FAIL("task %d on the degraded pool: %s", i, cf_strerror(rc));
        if (survivor == -1)
            survivor = wid;
        if (wid != survivor)
            CHILD_FAIL("tasks ran on workers %d and %d, but one could not be replaced", survivor, wid);
    }
    if (proc_children(zygote, NULL, 0, NULL) != 1)
        CHILD_FAIL("the zygote has %d children, want the one survivor", proc_children(zygote, NULL, 0, NULL));
    /* No worker at all: a task waits (pending, not lost, not failed). */
    if ((err = crash_one(ex)) != NULL)
        return err;
    uint64_t x = 21, v = 0;
    if (cf_submit(ex, task_value, &x, sizeof x, sizeof v, &pending) != 0)
        CHILD_FAIL("submit to a pool without workers failed");
    int rc = cf_future_wait(pending, 300);
    if (rc != CF_ETIMEDOUT)
        CHILD_FAIL("a task with no worker to run it: cf_future_wait gave %s", cf_strerror(rc));
    /* The limit goes: replacements start, the pending task runs, both workers are back. */
    if (prlimit(zygote, RLIMIT_NPROC, &inf, NULL) != 0)
        CHILD_FAIL("prlimit: %s", strerror(errno));
    rc = cf_future_result(pending, &v, sizeof v, 30000);
    if (rc != 0 || v != value_for(x))
        CHILD_FAIL("the pending task after recovery: %s", cf_strerror(rc));
    cf_future_free(pending);
    for (int k = 0; k < 2; k++)
        if (cf_submit(ex, task_gated, &gate, sizeof gate, 0, &fs[k]) != 0)
            CHILD_FAIL("submit failed");
    if (!wait_at_least(&gate->waiting, 2, 30000))
        CHILD_FAIL("two tasks did not run at once after recovery: a worker is still missing");
    store_int(&gate->open, 1);
    for (int k = 0; k < 2; k++) {
        if (cf_future_result(fs[k], NULL, 0, -1) != 0)
            CHILD_FAIL("gated task failed");
        cf_future_free(fs[k]);
    }
    cf_executor_free(ex);
    cf_shared_free(gate, sizeof *gate);
    fprintf(stderr, "replacement refused: 200 tasks ran on the surviving worker %d; with no worker a task "
            "stayed pending; once the limit went, it ran and both workers were back\n", survivor);
    return NULL;
}

Test(limits, replacement_refused_pool_runs_degraded_then_recovers, .init = setup, .timeout = REL_TIMEOUT)
{
    char msg[600];
    need_root();
    const char *fail = in_child(degraded_child, msg, sizeof msg);
    cr_assert_null(fail, "%s", fail);
}

/* ---- descriptors exhausted -------------------------------------------------------------------- */

static const char *nofile_child(void)
{
    int results[POOL_EXEC + 1][8];
    struct rlimit orig;
    if (getrlimit(RLIMIT_NOFILE, &orig) != 0)
        CHILD_FAIL("getrlimit: %s", strerror(errno));
    for (enum pool_kind kind = POOL_THREAD; kind <= POOL_EXEC; kind++) {
        for (int extra = 0; extra < 8; extra++) {
            struct small_census before;
            struct rlimit rl = orig;
            /* The highest open descriptor bounds what the limit leaves: count from it. */
            int top = 0, fds[256];
            int n = list_fds(fds, 256);
            small_census(&before);
            for (int i = 0; i < n && i < 256; i++)
                top = fds[i] > top ? fds[i] : top;
            rl.rlim_cur = (rlim_t)(top + 1 + extra);
            cf_options o = { .workers = 2 };
            cf_executor *ex = untouched();
            if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
                CHILD_FAIL("setrlimit(RLIMIT_NOFILE): %s", strerror(errno));
            int rc = pool_kind_new(kind, &ex, &o);
            setrlimit(RLIMIT_NOFILE, &orig);
            results[kind][extra] = rc;
            if (rc != 0 && rc != CF_EAGAIN && rc != CF_ENOMEM)
                CHILD_FAIL("%d spare descriptors: creation gave %d (%s), want 0, CF_EAGAIN or CF_ENOMEM",
                           extra, rc, cf_strerror(rc));
            if (rc != 0 && ex != untouched())
                CHILD_FAIL("a failed creation wrote *out");
            if (rc == 0) {
                uint64_t x = 2, v = 0;
                cf_future *f;
                if (cf_submit(ex, task_value, &x, sizeof x, sizeof v, &f) != 0 ||
                    cf_future_result(f, &v, sizeof v, -1) != 0 || v != value_for(x))
                    CHILD_FAIL("a pool created with few descriptors does not work");
                cf_future_free(f);
                cf_executor_free(ex);
            }
            if (!same_census(&before))
                CHILD_FAIL("%d spare descriptors (%s pool): creation left descriptors, threads or processes",
                           extra, pool_kind_name(kind));
        }
    }
    fprintf(stderr, "RLIMIT_NOFILE with 0..7 spare descriptors:");
    for (enum pool_kind kind = POOL_THREAD; kind <= POOL_EXEC; kind++) {
        fprintf(stderr, " %s", pool_kind_name(kind));
        for (int extra = 0; extra < 8; extra++)
            fprintf(stderr, " %d", results[kind][extra]);
        fprintf(stderr, ";");
    }
    fprintf(stderr, "\n");
    if (results[POOL_FORK][0] == 0 || results[POOL_FORK][7] != 0)
        CHILD_FAIL("fork pool: created with no spare descriptor, or not with 7");
    return NULL;
}

Test(limits, descriptors_exhausted_at_every_creation_step, .init = setup, .timeout = REL_TIMEOUT)
{
    char msg[600];
    if (under_valgrind())
        cr_skip_test("valgrind keeps descriptors of its own near the limit");
    const char *fail = in_child(nofile_child, msg, sizeof msg);
    cr_assert_null(fail, "%s", fail);
}

/* ---- more library descriptors than a fixed table would hold ------------------------------------ */

#define MANY_POOLS_MAX 400

/*
 * Fork pools of one worker until the library holds more than 1100
 * descriptors, then one more: its zygote must hold none of the older pools'
 * descriptors. The table of the descriptors to close in a new zygote held
 * 1024 and silently dropped the rest, which the zygote then kept.
 */
static const char *many_pools_child(void)
{
    static struct fd_id before[256], now[8192];
    static cf_executor *ex[MANY_POOLS_MAX + 1];
    static pid_t kids[1024];
    struct rlimit rl;
    int nbefore, n = 0, made = 0, nkids;
    char msg[512];
    const char *fail = NULL;

    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        CHILD_FAIL("getrlimit: %s", strerror(errno));
    if (rl.rlim_max != RLIM_INFINITY && rl.rlim_max < 4096)
        CHILD_FAIL("skip: RLIMIT_NOFILE's hard limit (%lu) is below 4096", (unsigned long)rl.rlim_max);
    rl.rlim_cur = 8192 < rl.rlim_max ? 8192 : rl.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
        CHILD_FAIL("setrlimit(RLIMIT_NOFILE): %s", strerror(errno));
    nbefore = fd_ids(getpid(), before, 256);
    while (made < MANY_POOLS_MAX && count_dir("/proc/self/fd") - nbefore <= 1100) {
        cf_options o = { .workers = 1 };
        int rc = cf_process_pool_new(&ex[made], &o);
        if (rc != 0) {
            snprintf(msg, sizeof msg, "pool %d: %s", made, cf_strerror(rc));
            fail = msg;
            break;
        }
        made++;
    }
    if (fail == NULL) {
        cf_options o = { .workers = 1 };
        nkids = proc_children(getpid(), kids, 1024, NULL);
        int rc = cf_process_pool_new(&ex[made], &o);
        if (rc == 0) {
            made++;
            pid_t zygote = find_zygote(kids, nkids);
            n = fd_ids(getpid(), now, 8192);
            if (zygote <= 0)
                fail = "the last pool's zygote was not found";
            else if (!pool_process_clean(zygote, before, nbefore, now, n, msg, sizeof msg))
                fail = msg;
        } else {
            snprintf(msg, sizeof msg, "the last pool: %s", cf_strerror(rc));
            fail = msg;
        }
    }
    fprintf(stderr, "%d fork pools at once, the library holding %d descriptors: %s\n", made, n - nbefore,
            fail == NULL ? "the last zygote holds none of the others'" : fail);
    while (made > 0)
        cf_executor_free(ex[--made]);
    if (fail != NULL)
        CHILD_FAIL("%s", fail);
    return NULL;
}

Test(limits, more_descriptors_than_a_fixed_table_zygote_keeps_none, .init = setup, .timeout = REL_SLOW_TIMEOUT)
{
    char msg[600];
    if (under_valgrind())
        cr_skip_test("hundreds of pools at once take minutes under valgrind");
    const char *fail = in_child(many_pools_child, msg, sizeof msg);
    cr_assert_null(fail, "%s", fail);
}
