/*
 * Security properties of the pools:
 *
 *   - shared memory is a memfd: no entry appears in /dev/shm (or anywhere in
 *     the file system), and another user cannot reach it through /proc
 *     (/proc/PID/fd of the caller, the zygote or a worker);
 *   - every descriptor a pool opens in the caller is close-on-exec (the new
 *     entries of /proc/self/fd, their flags in /proc/self/fdinfo), and so are
 *     the pool's descriptors inside a worker, where a task may exec a program;
 *   - results stay intact: many concurrent tasks of many result sizes, each
 *     writing exactly result_size bytes, and crashing tasks among them; every
 *     byte of every result is checked, and guard bytes around the caller's
 *     buffers are never written.
 */
#include "helpers.h"

#include <criterion/criterion.h>

#include <grp.h>
#include <sys/stat.h>



static void run_some(cf_executor *ex)
{
    for (uint64_t i = 0; i < 20; i++) {
        cf_future *f;
        uint64_t v = 0;
        cr_assert_eq(cf_submit(ex, task_value, &i, sizeof i, sizeof v, &f), 0);
        cr_assert_eq(cf_future_result(f, &v, sizeof v, -1), 0);
        cr_assert_eq(v, value_for(i));
        cf_future_free(f);
    }
}

/* ---- no name in the file system ---------------------------------------------------- */

static int list_dev_shm(char names[][256], int max)
{
    DIR *d = opendir("/dev/shm");
    struct dirent *e;
    int n = 0;
    if (d == NULL)
        return 0;
    while ((e = readdir(d)) != NULL)
        if (e->d_name[0] != '.' && n < max)
            snprintf(names[n++], 256, "%s", e->d_name);
    closedir(d);
    return n;
}

/* Does process pid, or a process below it, map or hold open /dev/shm/name? */
static bool held_below(long pid, const char *name)
{
    char path[64], line[1024], want[300];
    snprintf(want, sizeof want, "/dev/shm/%s", name);
    snprintf(path, sizeof path, "/proc/%ld/maps", pid);
    FILE *f = fopen(path, "r");
    bool held = false;
    while (f != NULL && !held && fgets(line, sizeof line, f) != NULL)
        held = strstr(line, want) != NULL;
    if (f != NULL)
        fclose(f);
    snprintf(path, sizeof path, "/proc/%ld/fd", pid);
    DIR *d = held ? NULL : opendir(path);
    struct dirent *e;
    while (d != NULL && !held && (e = readdir(d)) != NULL) {
        char link[600], target[300];
        snprintf(link, sizeof link, "%s/%s", path, e->d_name);
        ssize_t len = readlink(link, target, sizeof target - 1);
        target[len > 0 ? len : 0] = '\0';
        held = strcmp(target, want) == 0;
    }
    if (d != NULL)
        closedir(d);
    /* Its threads' children: the zygote and its standby, then the workers. */
    snprintf(path, sizeof path, "/proc/%ld/task", pid);
    d = held ? NULL : opendir(path);
    while (d != NULL && !held && (e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        char kids[600];
        snprintf(kids, sizeof kids, "%s/%s/children", path, e->d_name);
        FILE *k = fopen(kids, "r");
        long child;
        while (k != NULL && !held && fscanf(k, "%ld", &child) == 1)
            held = held_below(child, name);
        if (k != NULL)
            fclose(k);
    }
    if (d != NULL)
        closedir(d);
    return held;
}

/*
 * Entries of /dev/shm now that were not in before, that last, and that this
 * process or a process below it (the pool's) maps or holds open: other
 * suites, Open MPI's jobs among them, make and remove their own meanwhile.
 */
static int lasting_new_shm(char before[][256], int nb, char *first, size_t size)
{
    static char now[512][256];
    int found = 0;
    for (int round = 0; round < 30; round++) {
        int n = list_dev_shm(now, 512);
        found = 0;
        for (int i = 0; i < n; i++) {
            bool old = false;
            for (int j = 0; j < nb && !old; j++)
                old = strcmp(now[i], before[j]) == 0;
            if (!old && held_below((long)getpid(), now[i]) && found++ == 0)
                snprintf(first, size, "%.200s", now[i]);
        }
        if (found == 0)
            return 0;
        sleep_ms(100);
    }
    return found;
}

static void no_name_anywhere(enum pool_kind kind)
{
    static char before[512][256];
    char first[256] = "";
    cf_executor *ex = NULL;
    int nb;

    skip_exec_under_valgrind(kind);
    nb = list_dev_shm(before, 512);
    int maps_before = count_shared_maps();
    void *shared = cf_shared_alloc(4096);
    cr_assert_not_null(shared);
    cr_assert_eq(pool_kind_new(kind, &ex, &(cf_options){ .workers = 2 }), 0);
    run_some(ex);
    /* While the pool lives: its shared memory has no name to open. */
    cr_assert_eq(lasting_new_shm(before, nb, first, sizeof first), 0, "/dev/shm/%s appeared", first);
    FILE *maps = fopen("/proc/self/maps", "r");
    char line[1024];
    int memfds = 0, named = 0;
    cr_assert_not_null(maps);
    while (fgets(line, sizeof line, maps) != NULL) {
        char perms[8], path[512] = "";
        if (sscanf(line, "%*s %7s %*s %*s %*s %511[^\n]", perms, path) < 1 || perms[3] != 's')
            continue;
        /* A shared memfd mapping reads "/memfd:NAME (deleted)": no file to open. */
        if (strncmp(path, "/memfd:cfutures", 15) == 0)
            memfds++;
        else
            named++;    /* someone else's (valgrind has one): must not be new */
    }
    fclose(maps);
    cr_assert_eq(memfds + named, count_shared_maps());
    cr_assert_eq(memfds + named - maps_before, kind == POOL_THREAD ? 1 : 2,
                 "shared mappings: %d before, %d cfutures memfds and %d others now", maps_before, memfds, named);
    cr_assert_geq(memfds, kind == POOL_THREAD ? 1 : 2, "the shared memory is not (all) memfd mappings");
    cf_executor_free(ex);
    cf_shared_free(shared, 4096);
}

Test(security, no_shared_memory_name_thread_pool, .timeout = REL_TIMEOUT) { no_name_anywhere(POOL_THREAD); }
Test(security, no_shared_memory_name_fork_pool, .timeout = REL_TIMEOUT) { no_name_anywhere(POOL_FORK); }
Test(security, no_shared_memory_name_exec_pool, .timeout = REL_TIMEOUT) { no_name_anywhere(POOL_EXEC); }

/* ---- close-on-exec in the caller ------------------------------------------------------ */

static void new_descriptors_cloexec(enum pool_kind kind)
{
    int before[512], after[512], nb, na, fresh = 0;
    cf_executor *ex = NULL;

    skip_exec_under_valgrind(kind);
    nb = list_fds(before, 512);
    void *shared = cf_shared_alloc(8192);
    cr_assert_not_null(shared);
    cr_assert_eq(pool_kind_new(kind, &ex, &(cf_options){ .workers = 2 }), 0);
    run_some(ex);
    na = list_fds(after, 512);
    for (int i = 0; i < na; i++) {
        bool old = false;
        for (int j = 0; j < nb && !old; j++)
            old = after[i] == before[j];
        if (old)
            continue;
        char link[64], target[256] = "";
        snprintf(link, sizeof link, "/proc/self/fd/%d", after[i]);
        ssize_t len = readlink(link, target, sizeof target - 1);
        target[len > 0 ? len : 0] = '\0';
        int cloexec = fd_cloexec(after[i]);
        fprintf(stderr, "  %s pool: new descriptor %d -> %s: %s\n", pool_kind_name(kind), after[i], target,
                cloexec == 1 ? "close-on-exec" : "NOT close-on-exec");
        cr_expect_eq(cloexec, 1, "%s pool: descriptor %d (%s) is not close-on-exec", pool_kind_name(kind),
                     after[i], target);
        cr_expect_eq(fcntl(after[i], F_GETFD) & FD_CLOEXEC, FD_CLOEXEC);
        fresh++;
    }
    /* cf_shared_alloc's memfd at least, and the pool's own for a process pool. */
    cr_assert_geq(fresh, kind == POOL_THREAD ? 1 : 4, "%s pool: only %d new descriptors found", pool_kind_name(kind), fresh);
    cf_executor_free(ex);
    cf_shared_free(shared, 8192);
}

Test(security, caller_descriptors_cloexec_thread_pool, .timeout = REL_TIMEOUT) { new_descriptors_cloexec(POOL_THREAD); }
Test(security, caller_descriptors_cloexec_fork_pool, .timeout = REL_TIMEOUT) { new_descriptors_cloexec(POOL_FORK); }
Test(security, caller_descriptors_cloexec_exec_pool, .timeout = REL_TIMEOUT) { new_descriptors_cloexec(POOL_EXEC); }

/* ---- close-on-exec in a worker ---------------------------------------------------------- */

/*
 * Runs in a worker: counts the pool's descriptors (a memfd, an eventfd, a
 * pipe, a socket, a signalfd) that a program the task executed would inherit.
 * The caller's own descriptors a fork worker inherits are the caller's
 * business, so in fork mode only those whose number is given in arg count.
 */
struct fdq {
    int fds[16];      /* fork: the caller's new descriptors (the pool's); -1 ends */
    int any;          /* exec: look at every descriptor above 2 */
};

struct fda {
    int leaked;
    int first;        /* the first leaked descriptor */
    char what[64];
};

static int task_count_inheritable(const void *arg, size_t as, void *res, size_t rs)
{
    struct fdq q;
    struct fda a = { 0, -1, "" };
    int fds[256], n;
    if (as != sizeof q || rs != sizeof a)
        return CODE_BADSIZE;
    memcpy(&q, arg, sizeof q);
    n = list_fds(fds, 256);
    for (int i = 0; i < n && i < 256; i++) {
        bool pools = q.any && fds[i] > 2;
        for (int k = 0; k < 16 && q.fds[k] >= 0 && !pools; k++)
            pools = fds[i] == q.fds[k];
        if (!pools)
            continue;
        /* The pool's kinds of descriptor only (valgrind opens its log as a file). */
        char link[64], target[64] = "";
        snprintf(link, sizeof link, "/proc/self/fd/%d", fds[i]);
        ssize_t tl = readlink(link, target, sizeof target - 1);
        target[tl > 0 ? tl : 0] = '\0';
        if (target[0] == '/' && strncmp(target, "/memfd:", 7) != 0)
            continue;
        int flags = fcntl(fds[i], F_GETFD);
        if (flags >= 0 && !(flags & FD_CLOEXEC)) {
            if (a.leaked++ == 0) {
                char link[64];
                a.first = fds[i];
                snprintf(link, sizeof link, "/proc/self/fd/%d", fds[i]);
                ssize_t len = readlink(link, a.what, sizeof a.what - 1);
                a.what[len > 0 ? len : 0] = '\0';
            }
        }
    }
    memcpy(res, &a, sizeof a);
    return 0;
}

static void worker_descriptors_cloexec(enum pool_kind kind)
{
    int before[512], after[512], nb, na, k = 0;
    struct fdq q = { .any = kind == POOL_EXEC };
    struct fda a;
    cf_executor *ex = NULL;
    cf_future *f;

    skip_exec_under_valgrind(kind);
    memset(q.fds, -1, sizeof q.fds);
    nb = list_fds(before, 512);
    cr_assert_eq(pool_kind_new(kind, &ex, &(cf_options){ .workers = 1 }), 0);
    na = list_fds(after, 512);
    for (int i = 0; i < na && k < 15; i++) {
        bool old = false;
        for (int j = 0; j < nb && !old; j++)
            old = after[i] == before[j];
        if (!old)
            q.fds[k++] = after[i];
    }
    cr_assert_eq(cf_submit(ex, task_count_inheritable, &q, sizeof q, sizeof a, &f), 0);
    cr_assert_eq(cf_future_result(f, &a, sizeof a, -1), 0);
    cf_future_free(f);
    cf_executor_free(ex);
    fprintf(stderr, "  %s worker: %d of the pool's descriptors would pass to a program a task runs%s%s\n",
            pool_kind_name(kind), a.leaked, a.leaked ? ", the first: " : "", a.what);
    cr_assert_eq(a.leaked, 0, "%s worker: %d descriptors of the pool are not close-on-exec (the first: %d, %s)",
                 pool_kind_name(kind), a.leaked, a.first, a.what);
}

Test(security, worker_descriptors_cloexec_fork_pool, .timeout = REL_TIMEOUT)
{
    worker_descriptors_cloexec(POOL_FORK);
}

/*
 * An exec worker gets the pool's descriptors through posix_spawn's dup2,
 * which clears close-on-exec; the worker sets it again before any task runs.
 */
Test(security, worker_descriptors_cloexec_exec_pool, .timeout = REL_TIMEOUT)
{
    worker_descriptors_cloexec(POOL_EXEC);
}

/* ---- another user cannot reach the shared memory ------------------------------------------- */

struct target {
    pid_t pid;
    int   fd;
};

/* In a child that became another user: can it open any of the targets? */
static int other_user_opens(const struct target *t, int n, char *first, size_t size)
{
    int fds[2], opened = 0;
    pid_t pid;
    cr_assert_eq(pipe(fds), 0);
    pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) {
        uid_t u = 64000 + (uid_t)(getpid() % 1000);
        close(fds[0]);
        if (setgroups(0, NULL) != 0 || setresgid(u, u, u) != 0 || setresuid(u, u, u) != 0)
            _exit(2);
        for (int i = 0; i < n; i++) {
            char path[64];
            snprintf(path, sizeof path, "/proc/%d/fd/%d", (int)t[i].pid, t[i].fd);
            int fd = open(path, O_RDONLY);
            if (fd >= 0) {
                write_full(fds[1], path, strlen(path) + 1);
                close(fd);
            }
            snprintf(path, sizeof path, "/proc/%d/mem", (int)t[i].pid);
            if ((fd = open(path, O_RDONLY)) >= 0) {
                write_full(fds[1], path, strlen(path) + 1);
                close(fd);
            }
        }
        _exit(0);
    }
    close(fds[1]);
    char buf[512];
    ssize_t r, got = 0;
    while ((r = read(fds[0], buf + got, sizeof buf - 1 - (size_t)got)) > 0)
        got += r;
    buf[got] = '\0';
    close(fds[0]);
    int st;
    waitpid(pid, &st, 0);
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "the other-user child failed (0x%x)", st);
    for (ssize_t i = 0; i < got; i += (ssize_t)strlen(buf + i) + 1) {
        if (opened++ == 0)
            snprintf(first, size, "%s", buf + i);
    }
    return opened;
}

/* The memfd descriptors of pid (readlink starts with /memfd:). */
static int memfds_of(pid_t pid, struct target *t, int max)
{
    char dir[64];
    DIR *d;
    struct dirent *e;
    int n = 0;
    snprintf(dir, sizeof dir, "/proc/%d/fd", (int)pid);
    if ((d = opendir(dir)) == NULL)
        return 0;
    while ((e = readdir(d)) != NULL && n < max) {
        char link[300], target[256];
        ssize_t len;
        if (e->d_name[0] < '0' || e->d_name[0] > '9')
            continue;
        snprintf(link, sizeof link, "%.63s/%.200s", dir, e->d_name);
        len = readlink(link, target, sizeof target - 1);
        if (len <= 0)
            continue;
        target[len] = '\0';
        if (strncmp(target, "/memfd:", 7) == 0)
            t[n++] = (struct target){ pid, atoi(e->d_name) };
    }
    closedir(d);
    return n;
}

static void other_user(enum pool_kind kind)
{
    struct target t[64];
    int n = 0;
    char first[128] = "";
    cf_executor *ex = NULL;
    pid_t kids[8];

    skip_exec_under_valgrind(kind);
    if (geteuid() != 0)
        cr_skip_test("needs root, to become another user");
    void *shared = cf_shared_alloc(4096);
    cr_assert_not_null(shared);
    cr_assert_eq(pool_kind_new(kind, &ex, &(cf_options){ .workers = 2 }), 0);
    run_some(ex);
    n += memfds_of(getpid(), t + n, 64 - n);
    pid_t zygote = find_zygote(NULL, 0);
    cr_assert_gt(zygote, 0);
    n += memfds_of(zygote, t + n, 64 - n);
    int nk = proc_children(zygote, kids, 8, NULL);
    for (int i = 0; i < nk && i < 8; i++)
        n += memfds_of(kids[i], t + n, 64 - n);
    cr_assert_geq(n, 3, "found only %d memfd descriptors to try", n);
    int opened = other_user_opens(t, n, first, sizeof first);
    fprintf(stderr, "  %s pool: another user tried %d memfd descriptors (caller, zygote, workers) and "
            "the processes' memory: %d opened\n", pool_kind_name(kind), n, opened);
    cr_assert_eq(opened, 0, "another user opened %s", first);
    cf_executor_free(ex);
    cf_shared_free(shared, 4096);
}

Test(security, other_user_cannot_reach_shared_memory_fork_pool, .timeout = REL_TIMEOUT) { other_user(POOL_FORK); }
Test(security, other_user_cannot_reach_shared_memory_exec_pool, .timeout = REL_TIMEOUT) { other_user(POOL_EXEC); }

/* ---- results stay intact ----------------------------------------------------------------- */

#define GUARD 32

static unsigned char res_byte(uint64_t task, size_t j)
{
    return (unsigned char)(value_for(task) >> ((j % 8) * 8)) ^ (unsigned char)(j * 13);
}

/* No padding: under valgrind, uninitialised padding copied into shared memory
 * would make the later results read from the same bytes look uninitialised
 * (valgrind in the caller cannot see the worker's writes). */
struct rarg {
    uint64_t task;
    uint64_t crash;    /* writes half, then dies */
};

/* Writes exactly result_size bytes (or half of them, then crashes). */
static int task_fill(const void *arg, size_t as, void *res, size_t rs)
{
    struct rarg a;
    unsigned char *out = res;
    if (as != sizeof a)
        return CODE_BADSIZE;
    memcpy(&a, arg, sizeof a);
    for (size_t j = 0; j < (a.crash ? rs / 2 : rs); j++)
        out[j] = res_byte(a.task, j);
    if (a.crash) {
        signal(SIGSEGV, SIG_DFL);
        raise(SIGSEGV);
    }
    return 0;
}

static size_t res_size(uint64_t i)
{
    static const size_t sizes[] = { 1, 7, 8, 15, 16, 17, 100, 127, 128, 129, 255, 4096, 4097, 65536, 200000 };
    return sizes[i % (sizeof sizes / sizeof sizes[0])];
}

static void results_intact(enum pool_kind kind)
{
    enum { N = 3000 };
    int n = under_valgrind() ? 300 : N, crashed = 0, ok = 0;
    cf_executor *ex = NULL;
    cf_future **fs = calloc((size_t)n, sizeof *fs);
    unsigned char *buf = malloc(200000 + 2 * GUARD);

    skip_exec_under_valgrind(kind);
    no_core_dumps();
    cr_assert(fs != NULL && buf != NULL);
    cr_assert_eq(pool_kind_new(kind, &ex, &(cf_options){ .workers = 3 }), 0);
    for (int i = 0; i < n; i++) {
        struct rarg a = { (uint64_t)i, kind != POOL_THREAD && i % 101 == 50 };
        cr_assert_eq(cf_submit(ex, task_fill, &a, sizeof a, res_size((uint64_t)i), &fs[i]), 0);
    }
    for (int i = 0; i < n; i++) {
        size_t rs = res_size((uint64_t)i);
        memset(buf, 0xA5, rs + 2 * GUARD);
        int rc = cf_future_result(fs[i], buf + GUARD, rs, -1);
        for (size_t g = 0; g < GUARD; g++) {
            cr_assert_eq(buf[g], 0xA5, "task %d: a byte before its result buffer was written", i);
            cr_assert_eq(buf[GUARD + rs + g], 0xA5, "task %d: a byte after its %zu-byte result was written", i, rs);
        }
        if (kind != POOL_THREAD && i % 101 == 50) {
            cr_assert_eq(rc, CF_ECRASHED, "crashing task %d: %s", i, cf_strerror(rc));
            for (size_t j = 0; j < rs; j++)
                cr_assert_eq(buf[GUARD + j], 0xA5, "task %d crashed, yet its result buffer was written", i);
            crashed++;
        } else {
            cr_assert_eq(rc, 0, "task %d: %s", i, cf_strerror(rc));
            for (size_t j = 0; j < rs; j++)
                cr_assert_eq(buf[GUARD + j], res_byte((uint64_t)i, j), "task %d (%zu bytes): byte %zu is wrong",
                             i, rs, j);
            ok++;
        }
        cf_future_free(fs[i]);
    }

    /* A map with an odd element size, guarded on both sides. */
    enum { M = 5000, OS = 13 };
    struct rarg *in = malloc(M * sizeof *in);
    unsigned char *out = malloc(M * OS + 2 * GUARD);
    cr_assert(in != NULL && out != NULL);
    for (int i = 0; i < M; i++)
        in[i] = (struct rarg){ (uint64_t)(1000000 + i), 0 };
    memset(out, 0xA5, M * OS + 2 * GUARD);
    cr_assert_eq(cf_map(ex, task_fill, in, sizeof *in, out + GUARD, OS, M, NULL), 0);
    for (int g = 0; g < GUARD; g++) {
        cr_assert_eq(out[g], 0xA5, "cf_map wrote before its output");
        cr_assert_eq(out[GUARD + M * OS + g], 0xA5, "cf_map wrote after its output");
    }
    for (int i = 0; i < M; i++)
        for (size_t j = 0; j < OS; j++)
            cr_assert_eq(out[GUARD + (size_t)i * OS + j], res_byte((uint64_t)(1000000 + i), j),
                         "map element %d, byte %zu", i, j);
    cf_executor_free(ex);
    fprintf(stderr, "  %s pool: %d results of 1 to 200000 bytes intact, %d crashed tasks wrote nothing, "
            "a map of %d x %d bytes intact, guards untouched\n", pool_kind_name(kind), ok, crashed, M, (int)OS);
    free(in);
    free(out);
    free(fs);
    free(buf);
}

Test(security, results_intact_thread_pool, .timeout = REL_TIMEOUT) { results_intact(POOL_THREAD); }
Test(security, results_intact_fork_pool, .timeout = REL_TIMEOUT) { results_intact(POOL_FORK); }
Test(security, results_intact_exec_pool, .timeout = REL_TIMEOUT) { results_intact(POOL_EXEC); }
