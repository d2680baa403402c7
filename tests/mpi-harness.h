/*
 * mpi-harness.h — the common suite on libcfutures-mpi (tests/test-common-mpi,
 * CF_TEST_BACKEND 4), included by helpers.h for that build only.
 *
 * Criterion runs each test in a process of its own, which mpirun did not
 * start, so each test makes its own MPI job: its first pool_new initialises
 * MPI as a singleton (MPI_THREAD_MULTIPLE) and spawns two serving ranks, this
 * same program started with "--cf-mpi-serve" (mh_serve_if_asked, a
 * constructor, takes them before Criterion's main). Root and servers then
 * form a communicator of 3 ranks, `all`, and one of 2 (root and rank 1).
 *
 * For each pool the root broadcasts its options on `all`: a pool of w
 * workers runs on ranks 1 and 2 (ceil(w/2) and floor(w/2) workers), or on
 * rank 1 alone when w is 1; w 0 (the default) lets each rank take its
 * CPUs. Root and servers then duplicate the communicator (each pool its own,
 * so pools alive together do not mix messages) and call cf_mpi_pool_new; a
 * serving rank does so in a thread of its own, since the test may make
 * another pool while this one serves. The initializer travels as its
 * offset from mh_anchor (the same program on every rank).
 *
 * The probe: the root maps it from a memfd it keeps open; each serving rank
 * maps the same file through /proc/<root pid>/fd/<fd> before its local
 * pools fork their workers, so tasks on every rank report to the one probe.
 * Other cf_shared_alloc memory is per process here, as it is per machine for
 * any MPI program (documented in cfutures-mpi.h).
 *
 * At exit (atexit) the root broadcasts "quit": the servers join their pool
 * threads (each ends when the root freed its executor), finalise and exit.
 * A root that dies first (a test killed at its timeout) takes its servers
 * with it: each watches the root's pidfd and exits when it ends, which
 * ends their local pools' workers too, and mpirun's daemon with them.
 */
#ifndef CF_TESTS_MPI_HARNESS_H
#define CF_TESTS_MPI_HARNESS_H

#include <cfutures-mpi.h>

#include <errno.h>
#include <dirent.h>
#include <fcntl.h>
#include <ftw.h>
#include <signal.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <poll.h>
#include <sys/syscall.h>
#include <unistd.h>

static inline struct probe **probe_slot(void);   /* helpers.h */

#define MH_NO_INIT   INT64_MIN
#define MH_MAX_POOLS 256

struct mh_cfg {
    int32_t  cmd;                 /* 1: a pool; 0: quit */
    int32_t  ranks;               /* serving ranks: 1 or 2 */
    uint32_t workers[2];          /* of rank 1, rank 2 */
    int32_t  start;
    int32_t  task_timeout_ms;
    uint32_t max_tasks_per_worker;
    uint32_t pad_;
    uint64_t max_worker_rss_kb;
    int64_t  init_off;            /* initializer - mh_anchor, or MH_NO_INIT */
    uint64_t initargs_size;
    int32_t  probe_pid, probe_fd; /* where the servers find the probe */
    uint64_t probe_size;
};

struct mh_state {
    MPI_Comm all, two;            /* 3 ranks; root and rank 1 */
    MPI_Comm pools[MH_MAX_POOLS]; /* each pool's duplicate, freed at quit */
    unsigned npools;
    int      probe_fd;            /* the root's memfd of the probe, or -1 */
    bool     started, failed;
};

static inline struct mh_state *mh(void)
{
    static struct mh_state s = {.probe_fd = -1};
    return &s;
}

/* Functions are sent as their offset from this one. */
__attribute__((noinline, used)) static void mh_anchor(void)
{
    __asm__ volatile("");
}

/* ---- the probe, shared by every rank of one machine ---------------------- */

static inline void *mh_probe_alloc(size_t size)
{
    int fd = memfd_create("cf-test-probe", MFD_CLOEXEC);
    if (fd < 0)
        return NULL;
    if (ftruncate(fd, (off_t)size) != 0) {
        close(fd);
        return NULL;
    }
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED) {
        close(fd);
        return NULL;
    }
    mh()->probe_fd = fd;
    return p;
}

static inline void mh_probe_free(void *p, size_t size)
{
    if (p != NULL)
        munmap(p, size);
    if (mh()->probe_fd >= 0)
        close(mh()->probe_fd);
    mh()->probe_fd = -1;
}

/* ---- a serving rank ------------------------------------------------------- */

struct mh_served {
    pthread_t    thread;
    MPI_Comm     comm;
    cf_options   opts;
    void        *initargs;
    int          rc;
};

static void *mh_serve_pool(void *arg)
{
    struct mh_served *s = arg;
    cf_executor *ex = NULL;
    s->rc = cf_mpi_pool_new(&ex, s->comm, 0, &s->opts);
    return NULL;
}

/* A serving rank's watch: the root ended without "quit": exit at once. */
static void *mh_watch_root(void *arg)
{
    int fd = (int)(intptr_t)arg;
    struct pollfd p = {.fd = fd, .events = POLLIN};
    while (poll(&p, 1, -1) < 0) {
        if (errno != EINTR)
            return NULL;
    }
    _exit(4);
}

static void mh_fail(const char *what)
{
    fprintf(stderr, "mpi-harness (serving rank %d): %s\n", (int)getpid(), what);
    _exit(3);
}

static void mh_serve(void)
{
    int level = 0, rank = 0;
    MPI_Comm parent, all, two;
    if (MPI_Init_thread(NULL, NULL, MPI_THREAD_MULTIPLE, &level) != MPI_SUCCESS ||
        level < MPI_THREAD_MULTIPLE)
        mh_fail("MPI_THREAD_MULTIPLE not provided");
    MPI_Comm_get_parent(&parent);
    if (parent == MPI_COMM_NULL)
        mh_fail("not spawned");
    MPI_Intercomm_merge(parent, 1, &all);
    MPI_Comm_rank(all, &rank);
    MPI_Comm_split(all, rank <= 1 ? 0 : MPI_UNDEFINED, rank, &two);
    int32_t root_pid = 0;
    MPI_Bcast(&root_pid, 1, MPI_INT32_T, 0, all);
    pthread_t watch;
    int root_fd = (int)syscall(SYS_pidfd_open, (pid_t)root_pid, 0);
    if (root_fd < 0 || pthread_create(&watch, NULL, mh_watch_root, (void *)(intptr_t)root_fd) != 0)
        mh_fail("cannot watch the root (pidfd_open needs Linux 5.3)");

    struct mh_served *served[MH_MAX_POOLS];
    unsigned n = 0;
    void *probe_at = NULL;
    size_t probe_size = 0;
    for (;;) {
        struct mh_cfg cfg;
        MPI_Bcast(&cfg, sizeof cfg, MPI_BYTE, 0, all);
        if (cfg.cmd == 0)
            break;
        void *initargs = NULL;
        if (cfg.initargs_size > 0) {
            if (cfg.initargs_size > ((size_t)1 << 30) || (initargs = malloc(cfg.initargs_size)) == NULL)
                mh_fail("initargs");
            MPI_Bcast(initargs, (int)cfg.initargs_size, MPI_BYTE, 0, all);
        }
        if (probe_at == NULL && cfg.probe_fd >= 0) {
            char path[64];
            snprintf(path, sizeof path, "/proc/%d/fd/%d", (int)cfg.probe_pid, (int)cfg.probe_fd);
            int fd = open(path, O_RDWR | O_CLOEXEC);
            if (fd < 0)
                mh_fail("cannot open the root's probe");
            probe_at = mmap(NULL, cfg.probe_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
            close(fd);
            if (probe_at == MAP_FAILED)
                mh_fail("cannot map the root's probe");
            probe_size = cfg.probe_size;
            *probe_slot() = probe_at;
        }
        if (cfg.ranks == 1 && rank == 2) {
            free(initargs);
            continue;
        }
        if (n == MH_MAX_POOLS)
            mh_fail("too many pools in one test");
        struct mh_served *s = calloc(1, sizeof *s);
        if (s == NULL)
            mh_fail("no memory");
        MPI_Comm_dup(cfg.ranks == 2 ? all : two, &s->comm);
        s->initargs = initargs;
        s->opts = (cf_options){
            .workers = cfg.workers[rank - 1],
            .start = (cf_start_method)cfg.start,
            .initializer = cfg.init_off == MH_NO_INIT
                               ? NULL
                               : (cf_init_fn *)(void *)((char *)(uintptr_t)mh_anchor + cfg.init_off),
            .initargs = initargs,
            .initargs_size = cfg.initargs_size,
            .max_tasks_per_worker = cfg.max_tasks_per_worker,
            .task_timeout_ms = cfg.task_timeout_ms,
            .max_worker_rss_kb = cfg.max_worker_rss_kb,
        };
        if (pthread_create(&s->thread, NULL, mh_serve_pool, s) != 0)
            mh_fail("pthread_create");
        served[n++] = s;
    }
    pthread_cancel(watch);    /* the root ends normally from here on */
    pthread_join(watch, NULL);
    close(root_fd);
    for (unsigned i = 0; i < n; i++) {
        pthread_join(served[i]->thread, NULL);
        MPI_Comm_free(&served[i]->comm);
        free(served[i]->initargs);
        free(served[i]);
    }
    if (two != MPI_COMM_NULL)
        MPI_Comm_free(&two);
    MPI_Comm_free(&all);
    if (probe_at != NULL)
        munmap(probe_at, probe_size);
    MPI_Finalize();
    exit(0);
}

__attribute__((constructor)) static void mh_serve_if_asked(int argc, char **argv)
{
    if (argc >= 2 && strcmp(argv[1], "--cf-mpi-serve") == 0)
        mh_serve();
}

/* ---- the root ------------------------------------------------------------- */

/*
 * The pid of this process's child that is the singleton's daemon (orted),
 * and the number of the descriptor it watches (--singleton-died-pipe N);
 * 0 if there is none.
 */
static pid_t mh_daemon(int *fd)
{
    char path[64], buf[4096];
    snprintf(path, sizeof path, "/proc/self/task/%ld/children", (long)syscall(SYS_gettid));
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return 0;
    pid_t found = 0;
    long pid;
    while (found == 0 && fscanf(f, "%ld", &pid) == 1) {
        snprintf(path, sizeof path, "/proc/%ld/cmdline", pid);
        int c = open(path, O_RDONLY | O_CLOEXEC);
        if (c < 0)
            continue;
        ssize_t n = read(c, buf, sizeof buf - 1);
        close(c);
        if (n <= 0)
            continue;
        buf[n] = '\0';
        /* NUL-separated arguments: the flag, then its number. */
        for (char *a = buf; a < buf + n; a += strlen(a) + 1)
            if (strcmp(a, "--singleton-died-pipe") == 0 && a + strlen(a) + 1 < buf + n) {
                *fd = atoi(a + strlen(a) + 1);
                found = (pid_t)pid;
                break;
            }
    }
    fclose(f);
    return found;
}

/*
 * The singleton's daemon, this process's child, ends when the pipe it
 * watches closes, which MPI_Finalize leaves open until this process exits.
 * Close this end of it and reap the daemon, so that it is nobody's zombie
 * (an init that reaps none leaves it one): waiting for it without closing
 * the pipe took 5 s a test, its bound, every time.
 */
static void mh_end_daemon(void)
{
    int theirs = -1;
    pid_t d = mh_daemon(&theirs);
    if (d <= 0)
        return;
    char path[64], pipe_id[64], mine[64];
    snprintf(path, sizeof path, "/proc/%ld/fd/%d", (long)d, theirs);
    ssize_t n = readlink(path, pipe_id, sizeof pipe_id - 1);
    if (n > 0) {
        pipe_id[n] = '\0';
        for (int fd = 3; fd < 1024; fd++) {
            snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
            ssize_t m = readlink(path, mine, sizeof mine - 1);
            if (m == n && memcmp(mine, pipe_id, (size_t)n) == 0)
                close(fd);
        }
    }
    for (int ms = 0; ms < 5000; ms += 10) {    /* at most 5 s */
        pid_t p = waitpid(d, NULL, WNOHANG);
        if (p != 0)
            break;
        usleep(10000);
    }
}

/*
 * Open MPI's session directory, of this process's own: the singleton's
 * daemon and the spawned ranks make theirs inside it. By default every job
 * on the machine shares /tmp/ompi.<host>.<uid>, which each makes if it is
 * missing and removes when it empties at its end; a daemon that started as
 * another test's job ended failed to start ("mkdir ... File exists"), and
 * MPI_Init_thread aborted the test. Removed at quit, once the daemon is
 * reaped (a test killed at its timeout leaves it behind).
 */
static char mh_tmpdir[64];

static int mh_remove_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    remove(path);
    return 0;
}

static inline void mh_remove_tmpdir(void)
{
    if (mh_tmpdir[0] != '\0')
        nftw(mh_tmpdir, mh_remove_one, 16, FTW_DEPTH | FTW_PHYS);
    mh_tmpdir[0] = '\0';
}

/*
 * Removes the directories of earlier test processes that were killed
 * before their atexit: each is named after its process, cf-mpi-<pid>-*,
 * and is left alone while that pid lives.
 */
static inline void mh_sweep_tmpdirs(const char *base)
{
    DIR *d = opendir(base);
    if (d == NULL)
        return;
    for (struct dirent *e; (e = readdir(d)) != NULL;) {
        long pid;
        int end = 0;
        if (sscanf(e->d_name, "cf-mpi-%ld-%*6[A-Za-z0-9]%n", &pid, &end) != 1 || end == 0 ||
            e->d_name[end] != '\0' || pid <= 0)
            continue;
        if (kill((pid_t)pid, 0) == 0 || errno != ESRCH)
            continue;    /* its process lives (or is another user's) */
        char path[sizeof mh_tmpdir];
        if (snprintf(path, sizeof path, "%s/%s", base, e->d_name) < (int)sizeof path)
            nftw(path, mh_remove_one, 16, FTW_DEPTH | FTW_PHYS);
    }
    closedir(d);
}

static inline void mh_private_tmpdir(void)
{
    if (getenv("OMPI_MCA_orte_tmpdir_base") != NULL)
        return;    /* the caller's choice */
    const char *env = getenv("TMPDIR");
    const char *base = env != NULL && *env != '\0' && strlen(env) < 40 ? env : "/tmp";
    mh_sweep_tmpdirs(base);
    snprintf(mh_tmpdir, sizeof mh_tmpdir, "%s/cf-mpi-%ld-XXXXXX", base, (long)getpid());
    if (mkdtemp(mh_tmpdir) == NULL) {
        mh_tmpdir[0] = '\0';
        return;
    }
    setenv("OMPI_MCA_orte_tmpdir_base", mh_tmpdir, 1);
    atexit(mh_remove_tmpdir);    /* if the start fails; after mh_quit otherwise */
}

static void mh_quit(void)
{
    struct mh_state *s = mh();
    if (!s->started)
        return;
    struct mh_cfg cfg = {.cmd = 0};
    MPI_Bcast(&cfg, sizeof cfg, MPI_BYTE, 0, s->all);
    for (unsigned i = 0; i < s->npools; i++)
        MPI_Comm_free(&s->pools[i]);
    if (s->two != MPI_COMM_NULL)
        MPI_Comm_free(&s->two);
    MPI_Comm_free(&s->all);
    MPI_Finalize();
    mh_end_daemon();
    mh_remove_tmpdir();
}

/* MPI as a singleton and two serving ranks; false (and a message) if not. */
static inline bool mh_start(void)
{
    struct mh_state *s = mh();
    if (s->started || s->failed)
        return s->started;
    s->failed = true;
    /* mpirun's --allow-run-as-root and --oversubscribe, for the spawn. */
    if (geteuid() == 0) {
        setenv("OMPI_ALLOW_RUN_AS_ROOT", "1", 0);
        setenv("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1", 0);
    }
    setenv("OMPI_MCA_rmaps_base_oversubscribe", "1", 0);
    mh_private_tmpdir();
    int level = 0;
    if (MPI_Init_thread(NULL, NULL, MPI_THREAD_MULTIPLE, &level) != MPI_SUCCESS ||
        level < MPI_THREAD_MULTIPLE) {
        fprintf(stderr, "mpi-harness: MPI_THREAD_MULTIPLE not provided\n");
        return false;
    }
    char self[4096];
    ssize_t len = readlink("/proc/self/exe", self, sizeof self - 1);
    if (len <= 0)
        return false;
    self[len] = '\0';
    char *args[] = {"--cf-mpi-serve", NULL};
    int errs[2];
    MPI_Comm inter;
    if (MPI_Comm_spawn(self, args, 2, MPI_INFO_NULL, 0, MPI_COMM_SELF, &inter, errs) != MPI_SUCCESS)
        return false;
    MPI_Intercomm_merge(inter, 0, &s->all);
    MPI_Comm_free(&inter);
    MPI_Comm_split(s->all, 0, 0, &s->two);
    int32_t me = (int32_t)getpid();
    MPI_Bcast(&me, 1, MPI_INT32_T, 0, s->all);
    s->started = true;
    s->failed = false;
    atexit(mh_quit);
    return true;
}

static inline int mh_pool_new(cf_executor **out, const cf_options *opts, void *probe_at,
                              size_t probe_size)
{
    struct mh_state *s = mh();
    if (!mh_start())
        return CF_EAGAIN;
    if (s->npools == MH_MAX_POOLS)
        return CF_ENOMEM;
    unsigned w = opts != NULL ? opts->workers : 0;
    struct mh_cfg cfg = {
        .cmd = 1,
        .ranks = w == 1 ? 1 : 2,
        .workers = {w == 1 ? 1 : (w + 1) / 2, w / 2},
        .init_off = MH_NO_INIT,
        .probe_pid = (int32_t)getpid(),
        .probe_fd = probe_at != NULL ? s->probe_fd : -1,
        .probe_size = probe_size,
    };
    if (opts != NULL) {
        cfg.start = (int32_t)opts->start;
        cfg.task_timeout_ms = opts->task_timeout_ms;
        cfg.max_tasks_per_worker = opts->max_tasks_per_worker;
        cfg.max_worker_rss_kb = opts->max_worker_rss_kb;
        if (opts->initializer != NULL)
            cfg.init_off = (int64_t)((uintptr_t)(void *)opts->initializer - (uintptr_t)mh_anchor);
        if (opts->initargs != NULL)
            cfg.initargs_size = opts->initargs_size;
    }
    MPI_Bcast(&cfg, sizeof cfg, MPI_BYTE, 0, s->all);
    if (cfg.initargs_size > 0)
        MPI_Bcast((void *)(uintptr_t)opts->initargs, (int)cfg.initargs_size, MPI_BYTE, 0, s->all);
    MPI_Comm c;
    MPI_Comm_dup(cfg.ranks == 2 ? s->all : s->two, &c);
    s->pools[s->npools++] = c;
    return cf_mpi_pool_new(out, c, 0, opts);
}

#endif /* CF_TESTS_MPI_HARNESS_H */
