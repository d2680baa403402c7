/*
 * launcher.c — the zygote: one small process per pool that starts, stops
 * and reaps the workers; its standby; and the table of the descriptors every
 * pool holds.
 *
 * The pool's manager thread forks the zygote once, at pool creation. From
 * then on every worker, the first ones and every replacement, is started by
 * the zygote, which is single-threaded: a fork there can never inherit a
 * lock that another thread of the caller happened to hold, and in fork mode
 * every worker is a snapshot of the caller as it was when the pool was
 * created. In exec mode the zygote spawns /proc/self/exe instead, handing on
 * only the descriptors the worker needs. Each worker gets the highest
 * oom_score_adj, so that when memory runs out the kernel kills a worker (one
 * task fails CF_ECRASHED), not the zygote or the caller.
 *
 * The zygote is the workers' parent, so it also reaps them (SIGCHLD through a
 * signalfd) and reports each wait status to the manager, with a pidfd of
 * each worker it starts (the manager kills them with it should the zygote
 * die); and it carries out the manager's kills: it stops the worker, checks
 * in shared memory that it still runs the task to be killed, and only then
 * kills it.
 *
 * The standby. Right after its birth the zygote makes a copy of itself, the
 * standby, a sibling (clone with CLONE_PARENT: the caller's child too, so
 * that the manager reaps it) that does nothing but wait. When the zygote
 * dies (an operator's kill, the OOM killer), the manager promotes the
 * standby, which becomes the zygote on its own socket and makes a new
 * standby of itself; when the standby dies, the zygote makes another. Either
 * is still the snapshot of the caller at creation, so no replacement is ever
 * forked from the caller as it is later. Only the loss of both at once
 * breaks the pool.
 *
 * Lifetime: the zygote and the standby watch the caller themselves, through
 * a pidfd of it, their parent-death signal (a catchable one, read through
 * the signalfd: SIGKILL would end the zygote before it could end its
 * workers) and their socket's EOF. When the caller is gone, or the manager
 * says QUIT or closes the socket, the zygote kills and reaps its workers by
 * pid (they are its unreaped children: their pids cannot have been reused)
 * and exits; so a worker whose task dropped its own parent-death signal (by
 * prctl, or by changing credentials) does not outlive the caller. Both
 * ignore SIGINT, as the workers do. The zygote closes, first thing, the
 * descriptors of the caller's other pools.
 *
 * Descriptors. Every descriptor the library makes in the caller is made and
 * tracked under one mutex, which every fork() of the process also takes
 * (pthread_atfork), so a zygote never snapshots one that is open but not yet
 * tracked (or untracked and not yet closed), whichever thread forks it. The
 * table grows as needed: it is never full.
 */
#include "ring.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <spawn.h>
#include <stdio.h>
#include <stdio_ext.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef SYS_pidfd_open
#  define SYS_pidfd_open 434
#endif

extern char **environ;

typedef struct zygote {
    const cf__launch *l;
    int               sock;      /* to the manager */
    pid_t             self;
    pid_t             manager;   /* the caller */
    int               caller_fd; /* pidfd of the caller, or -1 */
    int               sfd;       /* signalfd: SIGCHLD and the parent-death signal */
    pid_t            *pids;      /* by worker id; 0: none */
    char            **envp;      /* exec: environ plus one slot for CFUTURES_WORKER */
    size_t            env_slot;
    int               exe_fd;    /* exec: the program, opened at creation */
    char              exe_path[4096];
    struct sigaction  caller_chld;  /* the caller's SIGCHLD action, for fork workers */
} zygote;

static int death_signal(void)
{
    return SIGRTMIN;
}

static void send_msg_fd(int sock, cf__zmsg m, int fd)
{
    struct iovec iov = {.iov_base = &m, .iov_len = sizeof m};
    union {
        struct cmsghdr align;
        char           buf[CMSG_SPACE(sizeof(int))];
    } ctl;
    struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1};
    if (fd >= 0) {
        memset(&ctl, 0, sizeof ctl);
        mh.msg_control = ctl.buf;
        mh.msg_controllen = sizeof ctl.buf;
        struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int));
        memcpy(CMSG_DATA(c), &fd, sizeof fd);
    }
    while (sendmsg(sock, &mh, MSG_NOSIGNAL) < 0 && errno == EINTR)
        ;
}

static void send_msg(int sock, cf__zmsg m)
{
    send_msg_fd(sock, m, -1);
}

/* The caller is gone: its pidfd says it ended, or we were reparented. */
static bool caller_gone(const zygote *z)
{
    if (getppid() != z->manager)
        return true;
    struct pollfd p = {.fd = z->caller_fd, .events = POLLIN};
    return z->caller_fd >= 0 && poll(&p, 1, 0) > 0;
}

/*
 * Arms the parent-death signal of this process (the zygote, or a new
 * standby: a fork clears it) and checks that the caller did not die before.
 */
static void watch_parent(const zygote *z)
{
    prctl(PR_SET_PDEATHSIG, death_signal());
    if (getppid() != z->manager)
        _exit(0);
}

static void raise_oom_score(pid_t pid)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%ld/oom_score_adj", (long)pid);
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0)
        return;    /* not ours to change (a non-dumpable program): the worker runs all the same */
    char v[16];
    int n = snprintf(v, sizeof v, "%d", CF__WORKER_OOM_SCORE_ADJ);
    while (write(fd, v, (size_t)n) < 0 && errno == EINTR)
        ;
    close(fd);
}

static pid_t spawn_forked(zygote *z, unsigned wid)
{
    pid_t pid = fork();
    if (pid != 0)
        return pid;
    close(z->sock);
    close(z->sfd);
    if (z->caller_fd >= 0)
        close(z->caller_fd);
    raise_oom_score(getpid());
    sigaction(SIGCHLD, &z->caller_chld, NULL);    /* a forked task sees the caller's */
    cf__worker_boot boot = {
        .h = z->l->h, .wid = wid, .opts = z->l->opts, .death_fd = z->l->death_fd,
        .efd = z->l->efd, .parent = z->self, .mask = z->l->mask,
    };
    cf__worker_main(&boot);
}

/*
 * The program to run: its path when that still names the very file this
 * process runs, else /proc/self/exe. (Under valgrind /proc/self/exe is
 * valgrind itself, while open() and readlink() of it give the program.)
 */
static const char *program(zygote *z)
{
    struct stat a, b;
    if (z->exe_fd >= 0 && z->exe_path[0] == '/' && fstat(z->exe_fd, &a) == 0 &&
        stat(z->exe_path, &b) == 0 && a.st_dev == b.st_dev && a.st_ino == b.st_ino)
        return z->exe_path;
    return "/proc/self/exe";
}

static void find_program(zygote *z)
{
    z->exe_fd = open("/proc/self/exe", O_RDONLY | O_CLOEXEC);
    ssize_t n = readlink("/proc/self/exe", z->exe_path, sizeof z->exe_path - 1);
    z->exe_path[n > 0 ? n : 0] = '\0';
}

/*
 * posix_spawn, with the descriptors the worker needs moved to 3, 4, 5, …:
 * first above every one of them, so that no move overwrites another, then
 * down; everything else is closed. A worker that starts at the program's
 * cf_main_guard (exec.c) runs the program's code before it, with an empty
 * pipe for stdin: end of file, not the caller's input. The moves up land
 * above the pipe too; the pipe becomes 0 once the pool's descriptors are
 * safe up there (one of them may be 0, in a caller that had closed its
 * stdin), and before the moves down, which may reuse its number.
 */
static pid_t spawn_exec(zygote *z, unsigned wid)
{
    const cf__launch *l = z->l;
    char var[160];
    snprintf(var, sizeof var, "CFUTURES_WORKER=%u:%ld:%lx:%lx", wid, (long)z->self,
             (unsigned long)(uintptr_t)l->h, (unsigned long)l->map_size);
    z->envp[z->env_slot] = var;

    int empty[2] = {-1, -1};
    if (l->at_guard) {
        if (pipe2(empty, O_CLOEXEC) != 0)
            return -1;
        close(empty[1]);
    }
    int top = 3 + (int)l->nfds;
    for (unsigned i = 0; i < l->nfds; i++)
        top = l->fds[i] >= top ? l->fds[i] + 1 : top;
    top = empty[0] >= top ? empty[0] + 1 : top;
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t attr;
    posix_spawn_file_actions_init(&fa);
    for (unsigned i = 0; i < l->nfds; i++)
        posix_spawn_file_actions_adddup2(&fa, l->fds[i], top + (int)i);
    if (empty[0] >= 0)
        posix_spawn_file_actions_adddup2(&fa, empty[0], 0);
    for (unsigned i = 0; i < l->nfds; i++)
        posix_spawn_file_actions_adddup2(&fa, top + (int)i, 3 + (int)i);
    posix_spawn_file_actions_addclosefrom_np(&fa, 3 + (int)l->nfds);
    posix_spawnattr_init(&attr);
    sigset_t all;
    sigfillset(&all);
    posix_spawnattr_setsigdefault(&attr, &all);
    posix_spawnattr_setsigmask(&attr, &l->mask);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK);

    char *argv[] = {"cfutures-worker", NULL};
    pid_t pid;
    int err = posix_spawn(&pid, program(z), &fa, &attr, argv, z->envp);
    posix_spawn_file_actions_destroy(&fa);
    posix_spawnattr_destroy(&attr);
    if (empty[0] >= 0)
        close(empty[0]);
    if (err != 0) {
        errno = err;
        return -1;
    }
    /* Not in the child, which posix_spawn gives no hook: it is the program already, booting. */
    raise_oom_score(pid);
    return pid;
}

static void spawn(zygote *z, unsigned wid)
{
    pid_t pid = z->l->exec ? spawn_exec(z, wid) : spawn_forked(z, wid);
    if (pid < 0) {
        int code = errno == ENOMEM ? CF_ENOMEM : CF_EAGAIN;
        send_msg(z->sock, (cf__zmsg){.type = CF__Z_FAILED, .wid = wid, .status = code});
        return;
    }
    z->pids[wid] = pid;
    /* Our unreaped child: the pid is still this worker's, so is the pidfd. */
    int pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
    send_msg_fd(z->sock, (cf__zmsg){.type = CF__Z_SPAWNED, .wid = wid, .pid = pid}, pidfd);
    if (pidfd >= 0)
        close(pidfd);
}

/* Kills the worker only if, once stopped, it still runs the task at pos. */
static void kill_if_still(zygote *z, cf__zmsg m)
{
    pid_t pid = m.pid;
    if (m.wid >= z->l->nwrecs || z->pids[m.wid] != pid || kill(pid, SIGSTOP) != 0)
        return;
    siginfo_t si = {0};
    while (waitid(P_PID, (id_t)pid, &si, WSTOPPED | WEXITED | WNOWAIT) < 0 && errno == EINTR)
        ;
    if (si.si_code != CLD_STOPPED && si.si_code != CLD_TRAPPED)
        return;    /* it ended by itself: reported as it is reaped */
    while (waitid(P_PID, (id_t)pid, &si, WSTOPPED | WNOHANG) < 0 && errno == EINTR)
        ;
    const cf__slot *s = &cf__slots_of(z->l->h)[m.pos & (CF__NSLOTS - 1)];
    uint64_t word = atomic_load(&s->word);
    bool still = CF__W_POS(word) == (uint32_t)m.pos && CF__W_STATE(word) == CF__SLOT_RUNNING &&
                 CF__W_WID(word) == m.wid;
    if (still) {
        kill(pid, SIGKILL);
        return;
    }
    kill(pid, SIGCONT);
    send_msg(z->sock, (cf__zmsg){.type = CF__Z_SPARED, .wid = m.wid, .pid = pid, .pos = m.pos});
}

/* Kills worker m.wid, still this zygote's unreaped child m.pid, whatever it runs. */
static void end_worker(zygote *z, cf__zmsg m)
{
    if (m.wid < z->l->nwrecs && m.pid > 0 && z->pids[m.wid] == m.pid)
        kill(m.pid, SIGKILL);
}

static void reap(zygote *z)
{
    int status;
    pid_t pid;
    while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
        for (unsigned wid = 0; wid < z->l->nwrecs; wid++) {
            if (z->pids[wid] != pid)
                continue;
            z->pids[wid] = 0;
            send_msg(z->sock, (cf__zmsg){.type = CF__Z_DIED, .wid = wid, .pid = pid, .status = status});
        }
    }
}

static bool any_alive(const zygote *z)
{
    for (unsigned wid = 0; wid < z->l->nwrecs; wid++)
        if (z->pids[wid] > 0)
            return true;
    return false;
}

/* Kills and reaps every worker (our children, so their pids are theirs), and exits. */
static __attribute__((noreturn)) void quit(zygote *z)
{
    for (unsigned wid = 0; wid < z->l->nwrecs; wid++)
        if (z->pids[wid] > 0)
            kill(z->pids[wid], SIGKILL);
    while (waitpid(-1, NULL, 0) > 0 || errno == EINTR)
        ;
    _exit(0);
}

/* Drains the signalfd; true if the caller is gone. */
static bool read_signals(const zygote *z)
{
    struct signalfd_siginfo info;
    bool death = false;
    while (read(z->sfd, &info, sizeof info) > 0)
        death = death || (int)info.ssi_signo == death_signal();
    return death && caller_gone(z);
}

/* The zygote's loop: serves the manager on z->sock until told to quit. */
static __attribute__((noreturn)) void serve(zygote *z);

/* A copy of this process that is the caller's child, as fork() is this one's. */
static pid_t fork_sibling(void)
{
#if defined(__s390__) || defined(__CRIS__)
    return (pid_t)syscall(SYS_clone, 0, CLONE_PARENT | SIGCHLD, NULL, NULL, NULL);
#else
    return (pid_t)syscall(SYS_clone, CLONE_PARENT | SIGCHLD, NULL, NULL, NULL, NULL);
#endif
}

/*
 * The standby: waits, with a socket of its own to the manager, until it is
 * told to quit (or the caller dies: it just exits, it has no workers) or to
 * take the dead zygote's place.
 */
static __attribute__((noreturn)) void standby_main(zygote *z, int sock)
{
    watch_parent(z);
    memset(z->pids, 0, z->l->nwrecs * sizeof *z->pids);
    struct pollfd pfd[3] = {
        {.fd = sock, .events = POLLIN}, {.fd = z->sfd, .events = POLLIN}, {.fd = z->caller_fd, .events = POLLIN},
    };
    for (;;) {
        if (poll(pfd, 3, -1) < 0 && errno != EINTR)
            _exit(1);
        if ((pfd[1].revents & POLLIN) && read_signals(z))
            _exit(0);
        if (pfd[2].revents & POLLIN)
            _exit(0);
        if (pfd[0].revents & (POLLIN | POLLHUP | POLLERR)) {
            cf__zmsg m;
            ssize_t got = recv(sock, &m, sizeof m, MSG_DONTWAIT);
            if (got == 0 || (got < 0 && errno != EINTR && errno != EAGAIN))
                _exit(0);
            if (got == (ssize_t)sizeof m && m.type == CF__Z_QUIT)
                _exit(0);
            if (got == (ssize_t)sizeof m && m.type == CF__Z_PROMOTE) {
                z->sock = sock;
                z->self = getpid();
                prctl(PR_SET_NAME, "cfutures-zygote");
                serve(z);
            }
        }
    }
}

/* Makes a standby and hands its socket to the manager (or says why not). */
static void make_standby(zygote *z)
{
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0) {
        int code = errno == ENOMEM || errno == ENOBUFS ? CF_ENOMEM : CF_EAGAIN;
        send_msg(z->sock, (cf__zmsg){.type = CF__Z_STANDBY_UP, .status = code});
        return;
    }
    prctl(PR_SET_NAME, "cfutures-spare");    /* the standby's name from its first instant */
    pid_t pid = fork_sibling();
    if (pid == 0) {
        close(sv[0]);
        close(z->sock);
        standby_main(z, sv[1]);
    }
    int err = errno;
    prctl(PR_SET_NAME, "cfutures-zygote");
    close(sv[1]);
    if (pid < 0)
        send_msg(z->sock, (cf__zmsg){.type = CF__Z_STANDBY_UP, .status = err == ENOMEM ? CF_ENOMEM : CF_EAGAIN});
    else
        send_msg_fd(z->sock, (cf__zmsg){.type = CF__Z_STANDBY_UP, .pid = pid}, sv[0]);
    close(sv[0]);
}

static void serve(zygote *z)
{
    const cf__launch *l = z->l;
    struct pollfd pfd[3] = {
        {.fd = z->sock, .events = POLLIN}, {.fd = z->sfd, .events = POLLIN}, {.fd = z->caller_fd, .events = POLLIN},
    };
    for (;;) {
        if (poll(pfd, 3, -1) < 0 && errno != EINTR)
            quit(z);
        if (pfd[2].revents & POLLIN)
            quit(z);
        if (pfd[1].revents & POLLIN) {
            if (read_signals(z))
                quit(z);
            reap(z);
            /* The pool is closing and its last worker is gone: nothing to wait for. */
            if (atomic_load(&l->h->exit) && !any_alive(z))
                quit(z);
        }
        if (pfd[0].revents & (POLLIN | POLLHUP | POLLERR)) {
            cf__zmsg m;
            ssize_t got = recv(z->sock, &m, sizeof m, MSG_DONTWAIT);
            if (got == 0 || (got < 0 && errno != EINTR && errno != EAGAIN))
                quit(z);
            if (got == (ssize_t)sizeof m && m.type == CF__Z_SPAWN && m.wid < l->nwrecs)
                spawn(z, m.wid);
            else if (got == (ssize_t)sizeof m && m.type == CF__Z_KILL)
                kill_if_still(z, m);
            else if (got == (ssize_t)sizeof m && m.type == CF__Z_END)
                end_worker(z, m);
            else if (got == (ssize_t)sizeof m && m.type == CF__Z_STANDBY)
                make_standby(z);
            else if (got == (ssize_t)sizeof m && m.type == CF__Z_QUIT)
                quit(z);
        }
    }
}

/*
 * Zeroed memory for the zygote, which never frees it (it ends with _exit).
 * Not malloc: the zygote is a fork of a multi-threaded caller, where another
 * thread may have held the allocator's lock at the fork. glibc's malloc
 * resets its locks in the child, but an interposed allocator may not (ASan's
 * does not: a 4 KiB calloc here hung a pool created while other threads
 * allocated), and mmap takes no lock of this process.
 */
static void *zygote_alloc(size_t size)
{
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    return p == MAP_FAILED ? NULL : p;
}

static bool build_env(zygote *z)
{
    size_t n = 0;
    for (char **e = environ; e != NULL && *e != NULL; e++)
        n++;
    if ((z->envp = zygote_alloc((n + 2) * sizeof *z->envp)) == NULL)
        return false;
    for (size_t i = 0; i < n; i++)
        z->envp[i] = environ[i];
    z->env_slot = n;
    return true;
}

static __attribute__((noreturn)) void zygote_main(const cf__launch *l, int sock, pid_t manager)
{
    __fpurge(stdout);
    __fpurge(stderr);
    zygote z = {.l = l, .sock = sock, .self = getpid(), .manager = manager, .exe_fd = -1, .sfd = -1};
    /* Every signal is blocked (the manager thread's mask): the death signal waits in the signalfd. */
    watch_parent(&z);
    prctl(PR_SET_NAME, "cfutures-zygote");
    int keep[] = {sock, l->death_fd, l->efd, l->exec ? l->fds[0] : -1};
    cf__fd_close_tracked(keep, sizeof keep / sizeof *keep);
    struct sigaction ign = {.sa_handler = SIG_IGN};
    sigaction(SIGINT, &ign, NULL);
    z.caller_fd = (int)syscall(SYS_pidfd_open, manager, 0);
    if (caller_gone(&z))
        _exit(0);    /* the pidfd may name another process than the caller: it was gone already */

    /*
     * A caller that ignores SIGCHLD (or sets SA_NOCLDWAIT) would have the
     * kernel reap the workers before the zygote sees them die.
     */
    struct sigaction dfl = {.sa_handler = SIG_DFL};
    sigaction(SIGCHLD, &dfl, &z.caller_chld);
    if (l->exec)
        find_program(&z);
    sigset_t watched;
    sigemptyset(&watched);
    sigaddset(&watched, SIGCHLD);
    sigaddset(&watched, death_signal());
    z.sfd = signalfd(-1, &watched, SFD_CLOEXEC | SFD_NONBLOCK);
    z.pids = zygote_alloc(l->nwrecs * sizeof *z.pids);
    if (z.sfd < 0 || z.pids == NULL || (l->exec && !build_env(&z)))
        _exit(1);
    serve(&z);
}

static void drop_locked(int fd);

int cf__launcher_start(const cf__launch *l, pid_t *pid, int *sock)
{
    int sv[2], rc;
    cf__fd_lock();
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0) {
        rc = errno == EMFILE || errno == ENFILE ? CF_EAGAIN : CF_ENOMEM;
        cf__fd_unlock();
        return rc;
    }
    if ((rc = cf__fd_track(sv[0])) != 0 || (rc = cf__fd_track(sv[1])) != 0) {
        drop_locked(sv[0]);
        drop_locked(sv[1]);
        cf__fd_unlock();
        return rc;
    }
    cf__fd_unlock();
    pid_t manager = getpid();
    pid_t child = fork();
    if (child == 0)
        zygote_main(l, sv[1], manager);
    int err = errno;
    cf__fd_close(sv[1]);
    if (child < 0) {
        cf__fd_close(sv[0]);
        return err == ENOMEM ? CF_ENOMEM : CF_EAGAIN;
    }
    *pid = child;
    *sock = sv[0];
    return 0;
}

/* ---- descriptors of every pool ------------------------------------------ */

static pthread_mutex_t fd_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_once_t  fd_once = PTHREAD_ONCE_INIT;
static int            *fd_table;
static size_t          fd_count, fd_cap;

static void fd_prepare(void)
{
    pthread_mutex_lock(&fd_mu);
}

static void fd_parent(void)
{
    pthread_mutex_unlock(&fd_mu);
}

/* The child is single-threaded: the lock is its own, held by nobody. */
static void fd_child(void)
{
    pthread_mutex_init(&fd_mu, NULL);
}

static void fd_register(void)
{
    /* Registered after shm.c's: at fork, this lock is taken before its
     * locks, in the order a pool that maps its region under it takes them. */
    cf__shm_setup();
    if (pthread_atfork(fd_prepare, fd_parent, fd_child) != 0)
        abort();
}

void cf__fd_lock(void)
{
    pthread_once(&fd_once, fd_register);
    pthread_mutex_lock(&fd_mu);
}

void cf__fd_unlock(void)
{
    pthread_mutex_unlock(&fd_mu);
}

int cf__fd_track(int fd)
{
    if (fd < 0)
        return 0;
    if (fd_count == fd_cap) {
        size_t cap = fd_cap > 0 ? 2 * fd_cap : 64;
        int *t = realloc(fd_table, cap * sizeof *t);
        if (t == NULL)
            return CF_ENOMEM;
        fd_table = t;
        fd_cap = cap;
    }
    fd_table[fd_count++] = fd;
    return 0;
}

/* Under the lock: untracks fd (if tracked) and closes it. */
static void drop_locked(int fd)
{
    for (size_t i = 0; i < fd_count; i++) {
        if (fd_table[i] == fd) {
            fd_table[i] = fd_table[--fd_count];
            break;
        }
    }
    close(fd);
}

void cf__fd_close(int fd)
{
    if (fd < 0)
        return;
    cf__fd_lock();
    drop_locked(fd);
    cf__fd_unlock();
}

/*
 * Runs in a child forked with the table as it was (the fork held the lock):
 * closes the others and keeps in the table only what it kept, so that a pool
 * this child makes in turn closes those in its own zygote.
 */
void cf__fd_close_tracked(const int *keep, unsigned nkeep)
{
    size_t kept = 0;
    for (size_t i = 0; i < fd_count; i++) {
        int fd = fd_table[i];
        bool k = false;
        for (unsigned j = 0; j < nkeep && !k; j++)
            k = keep[j] == fd;
        if (k)
            fd_table[kept++] = fd;
        else
            close(fd);
    }
    fd_count = kept;
}
