/*
 * launcher.c — the zygote: one small process per pool that starts, stops
 * and reaps the workers.
 *
 * The pool's manager thread forks the zygote once, at pool creation. From
 * then on every worker, the first ones and every replacement, is started by
 * the zygote, which is single-threaded: a fork there can never inherit a
 * lock that another thread of the caller happened to hold, and in fork mode
 * every worker is a snapshot of the caller as it was when the pool was
 * created. In exec mode the zygote spawns /proc/self/exe instead, handing on
 * only the descriptors the worker needs.
 *
 * The zygote is the workers' parent, so it also reaps them (SIGCHLD through a
 * signalfd) and reports each wait status to the manager, and it carries out
 * the manager's kills: it stops the worker, checks in shared memory that it
 * still runs the task to be killed, and only then kills it.
 *
 * Lifetime: it dies with the manager thread (PR_SET_PDEATHSIG), and when the
 * manager says QUIT or closes its socket it kills and reaps whatever workers
 * remain and exits. Its workers die with it in turn. It ignores SIGINT, as
 * they do. It closes, first thing, the descriptors of the caller's other
 * pools, so that it never keeps their sockets and pipes open.
 */
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <spawn.h>
#include <stdio.h>
#include <stdio_ext.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

typedef struct zygote {
    const cf__launch *l;
    int               sock;
    pid_t             self;
    pid_t            *pids;      /* by worker id; 0: none */
    char            **envp;      /* exec: environ plus one slot for CFUTURES_WORKER */
    size_t            env_slot;
    int               exe_fd;    /* exec: the program, opened at creation */
    char              exe_path[4096];
    struct sigaction  caller_chld;  /* the caller's SIGCHLD action, for fork workers */
} zygote;

static void send_msg(int sock, cf__zmsg m)
{
    while (send(sock, &m, sizeof m, MSG_NOSIGNAL) < 0 && errno == EINTR)
        ;
}

static pid_t spawn_forked(zygote *z, unsigned wid)
{
    pid_t pid = fork();
    if (pid != 0)
        return pid;
    close(z->sock);
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
 * down; everything else is closed.
 */
static pid_t spawn_exec(zygote *z, unsigned wid)
{
    const cf__launch *l = z->l;
    char var[160];
    snprintf(var, sizeof var, "CFUTURES_WORKER=%u:%ld:%lx:%lx", wid, (long)z->self,
             (unsigned long)(uintptr_t)l->h, (unsigned long)l->h->size);
    z->envp[z->env_slot] = var;

    int top = 3 + (int)l->nfds;
    for (unsigned i = 0; i < l->nfds; i++)
        top = l->fds[i] >= top ? l->fds[i] + 1 : top;
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t attr;
    posix_spawn_file_actions_init(&fa);
    for (unsigned i = 0; i < l->nfds; i++)
        posix_spawn_file_actions_adddup2(&fa, l->fds[i], top + (int)i);
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
    if (err != 0) {
        errno = err;
        return -1;
    }
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
    send_msg(z->sock, (cf__zmsg){.type = CF__Z_SPAWNED, .wid = wid, .pid = pid});
}

/* Kills the worker only if, once stopped, it still runs the task at pos. */
static void kill_if_still(zygote *z, cf__zmsg m)
{
    pid_t pid = m.pid;
    if (m.wid >= z->l->h->nworkers || z->pids[m.wid] != pid || kill(pid, SIGSTOP) != 0)
        return;
    siginfo_t si = {0};
    while (waitid(P_PID, (id_t)pid, &si, WSTOPPED | WEXITED | WNOWAIT) < 0 && errno == EINTR)
        ;
    if (si.si_code != CLD_STOPPED && si.si_code != CLD_TRAPPED)
        return;    /* it ended by itself: reported as it is reaped */
    while (waitid(P_PID, (id_t)pid, &si, WSTOPPED | WNOHANG) < 0 && errno == EINTR)
        ;
    const cf__slot *s = &z->l->h->slots[m.pos & (z->l->h->nslots - 1)];
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

static void reap(zygote *z)
{
    int status;
    pid_t pid;
    while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
        for (unsigned wid = 0; wid < z->l->h->nworkers; wid++) {
            if (z->pids[wid] != pid)
                continue;
            z->pids[wid] = 0;
            send_msg(z->sock, (cf__zmsg){.type = CF__Z_DIED, .wid = wid, .pid = pid, .status = status});
        }
    }
}

static bool any_alive(const zygote *z)
{
    for (unsigned wid = 0; wid < z->l->h->nworkers; wid++)
        if (z->pids[wid] > 0)
            return true;
    return false;
}

static __attribute__((noreturn)) void quit(zygote *z)
{
    for (unsigned wid = 0; wid < z->l->h->nworkers; wid++)
        if (z->pids[wid] > 0)
            kill(z->pids[wid], SIGKILL);
    while (waitpid(-1, NULL, 0) > 0 || errno == EINTR)
        ;
    _exit(0);
}

static bool build_env(zygote *z)
{
    size_t n = 0;
    for (char **e = environ; e != NULL && *e != NULL; e++)
        n++;
    if ((z->envp = calloc(n + 2, sizeof *z->envp)) == NULL)
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
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != manager)
        _exit(1);
    prctl(PR_SET_NAME, "cfutures-zygote");
    int keep[] = {l->death_fd, l->efd, l->exec ? l->fds[0] : -1};
    cf__fd_close_tracked(keep, sizeof keep / sizeof *keep);
    close(l->death_wr);
    struct sigaction ign = {.sa_handler = SIG_IGN};
    sigaction(SIGINT, &ign, NULL);

    /*
     * A caller that ignores SIGCHLD (or sets SA_NOCLDWAIT) would have the
     * kernel reap the workers before the zygote sees them die.
     */
    zygote z = {.l = l, .sock = sock, .self = getpid(), .exe_fd = -1};
    struct sigaction dfl = {.sa_handler = SIG_DFL};
    sigaction(SIGCHLD, &dfl, &z.caller_chld);
    if (l->exec)
        find_program(&z);
    sigset_t chld;
    sigemptyset(&chld);
    sigaddset(&chld, SIGCHLD);
    int sfd = signalfd(-1, &chld, SFD_CLOEXEC | SFD_NONBLOCK);
    z.pids = calloc(l->h->nworkers, sizeof *z.pids);
    if (sfd < 0 || z.pids == NULL || (l->exec && !build_env(&z)))
        _exit(1);

    struct pollfd pfd[2] = {{.fd = sock, .events = POLLIN}, {.fd = sfd, .events = POLLIN}};
    for (;;) {
        if (poll(pfd, 2, -1) < 0 && errno != EINTR)
            quit(&z);
        if (pfd[1].revents & POLLIN) {
            struct signalfd_siginfo info;
            while (read(sfd, &info, sizeof info) > 0)
                ;
            reap(&z);
            /* The pool is closing and its last worker is gone: nothing to wait for. */
            if (atomic_load(&l->h->exit) && !any_alive(&z))
                quit(&z);
        }
        if (pfd[0].revents & (POLLIN | POLLHUP | POLLERR)) {
            cf__zmsg m;
            ssize_t got = recv(sock, &m, sizeof m, MSG_DONTWAIT);
            if (got == 0 || (got < 0 && errno != EINTR && errno != EAGAIN))
                quit(&z);
            if (got == (ssize_t)sizeof m && m.type == CF__Z_SPAWN && m.wid < l->h->nworkers)
                spawn(&z, m.wid);
            else if (got == (ssize_t)sizeof m && m.type == CF__Z_KILL)
                kill_if_still(&z, m);
            else if (got == (ssize_t)sizeof m && m.type == CF__Z_QUIT)
                quit(&z);
        }
    }
}

int cf__launcher_start(const cf__launch *l, pid_t *pid, int *sock)
{
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0)
        return errno == EMFILE || errno == ENFILE ? CF_EAGAIN : CF_ENOMEM;
    pid_t manager = getpid();
    pid_t child = fork();
    if (child == 0) {
        close(sv[0]);
        zygote_main(l, sv[1], manager);
    }
    int err = errno;
    close(sv[1]);
    if (child < 0) {
        close(sv[0]);
        return err == ENOMEM ? CF_ENOMEM : CF_EAGAIN;
    }
    *pid = child;
    *sock = sv[0];
    return 0;
}

/* ---- descriptors of every pool ------------------------------------------ */

#define TRACKED_MAX 1024

static _Atomic int tracked[TRACKED_MAX];
static atomic_flag tracked_ready = ATOMIC_FLAG_INIT;
static _Atomic bool tracked_init_done;

static void tracked_init(void)
{
    if (atomic_load(&tracked_init_done))
        return;
    if (!atomic_flag_test_and_set(&tracked_ready)) {
        for (int i = 0; i < TRACKED_MAX; i++)
            atomic_store(&tracked[i], -1);
        atomic_store(&tracked_init_done, true);
    }
    while (!atomic_load(&tracked_init_done))
        ;
}

void cf__fd_track(int fd)
{
    tracked_init();
    for (int i = 0; i < TRACKED_MAX && fd >= 0; i++) {
        int empty = -1;
        if (atomic_compare_exchange_strong(&tracked[i], &empty, fd))
            return;
    }
}

void cf__fd_untrack(int fd)
{
    tracked_init();
    for (int i = 0; i < TRACKED_MAX && fd >= 0; i++) {
        int mine = fd;
        if (atomic_compare_exchange_strong(&tracked[i], &mine, -1))
            return;
    }
}

void cf__fd_close_tracked(const int *keep, unsigned nkeep)
{
    if (!atomic_load(&tracked_init_done))
        return;
    for (int i = 0; i < TRACKED_MAX; i++) {
        int fd = atomic_load(&tracked[i]);
        bool kept = fd < 0;
        for (unsigned k = 0; k < nkeep && !kept; k++)
            kept = keep[k] == fd;
        if (!kept)
            close(fd);
    }
}
