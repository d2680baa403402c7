/*
 * pp_zygote.c — the caller's side of the zygote protocol: what the manager
 * thread (pp_manager.c) asks of the pool's zygote (launcher.c) and of its
 * standby, and what it does with their news.
 *
 * The manager forks the zygote, which starts, kills and reaps every worker
 * on request and reports each one's birth (with a pidfd of it) and death
 * over a socket; the zygote also makes a standby copy of itself. Here: the
 * requests (never blocking: a full socket is asked again later), the
 * news (a birth, a failed start, a death and the task it failed, a kill
 * spared), the standby's arrival and loss, the zygote's death (its workers
 * are killed by pidfd and reaped, their tasks fail, the standby is
 * promoted), the pool's first start, and the zygote's end.
 *
 * Every descriptor received (a worker's pidfd, the standby's socket) is
 * tracked as it is received, under the descriptor lock (launcher.c), so that
 * the zygote of another pool, forked at any moment, closes it.
 *
 * Locking: as in pp_manager.c; functions marked "Under mu" are called with
 * pp->mu held, the others without it.
 */
#include "pp_internal.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>

#ifndef SYS_pidfd_send_signal
#  define SYS_pidfd_send_signal 424
#endif
#ifndef P_PIDFD
#  define P_PIDFD 3
#endif

/* ---- workers: through the zygote --------------------------------------- */

static void tell(int sock, cf__zmsg m)
{
    while (sock >= 0 && send(sock, &m, sizeof m, MSG_NOSIGNAL) < 0 && errno == EINTR)
        ;
}

/*
 * Under mu: sends m to the zygote without blocking. False when its socket is
 * full: the zygote may itself be blocked telling us news we would read only
 * after this send, so the manager never waits here; it marks the socket
 * full, polls for room, and asks again (tend_workers). Every request the
 * manager makes is one it can make again. A socket that is gone counts as
 * sent: its EOF says the rest.
 */
bool cf__pp_tell_zygote(ppool *pp, cf__zmsg m)
{
    ssize_t rc;
    do
        rc = pp->zsock >= 0 ? send(pp->zsock, &m, sizeof m, MSG_NOSIGNAL | MSG_DONTWAIT) : 0;
    while (rc < 0 && errno == EINTR);
    if (rc < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
        pp->zsock_full = true;
        return false;
    }
    return true;
}

/*
 * One message from the zygote or the standby, without waiting, and the
 * descriptor it carries (tracked, as it is received: under the descriptor
 * lock), or -1. A descriptor the process has no room for is dropped by the
 * kernel: the message still comes, and *dropped (if not NULL) says so, as
 * it does for one that came but could not be tracked. Returns what recvmsg
 * does.
 */
static ssize_t recv_zmsg(int sock, cf__zmsg *m, int *fd, bool *dropped)
{
    struct iovec iov = {.iov_base = m, .iov_len = sizeof *m};
    union {
        struct cmsghdr align;
        char           buf[CMSG_SPACE(sizeof(int))];
    } ctl;
    struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.buf, .msg_controllen = sizeof ctl.buf};
    ssize_t got;
    *fd = -1;
    cf__fd_lock();
    do
        got = recvmsg(sock, &mh, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
    while (got < 0 && errno == EINTR);
    int err = errno;
    bool lost = got > 0 && (mh.msg_flags & MSG_CTRUNC) != 0;
    for (struct cmsghdr *c = got > 0 ? CMSG_FIRSTHDR(&mh) : NULL; c != NULL; c = CMSG_NXTHDR(&mh, c)) {
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS || c->cmsg_len != CMSG_LEN(sizeof(int)))
            continue;
        int got_fd;
        memcpy(&got_fd, CMSG_DATA(c), sizeof got_fd);
        if (*fd >= 0 || cf__fd_track(got_fd) != 0) {
            lost = lost || *fd < 0;
            close(got_fd);    /* one per message at most; and none we cannot track */
        } else {
            *fd = got_fd;
        }
    }
    if (dropped != NULL)
        *dropped = lost;
    cf__fd_unlock();
    errno = err;
    return got;
}

static void reap_child(pid_t pid)
{
    while (pid > 0 && waitpid(pid, NULL, 0) < 0 && errno == EINTR)
        ;
}

/* Under mu: asks the zygote for a worker in slot wid. */
bool cf__pp_request_worker(ppool *pp, unsigned wid)
{
    pp->wrecs[wid].init_code = 0;
    atomic_store(&pp->wrecs[wid].state, CF__WREC_STARTING);
    atomic_store(&pp->wrecs[wid].cur, 0);
    if (!cf__pp_tell_zygote(pp, (cf__zmsg){.type = CF__Z_SPAWN, .wid = wid}))
        return false;
    pp->w[wid].pid = -1;
    return true;
}

/* Under mu: asks the zygote for a standby. */
void cf__pp_request_standby(ppool *pp)
{
    pp->standby_asked = cf__pp_tell_zygote(pp, (cf__zmsg){.type = CF__Z_STANDBY});
}

/* Under mu: asks for a worker for every id below the target that has none, while the socket has room. */
static void request_workers(ppool *pp)
{
    for (unsigned i = 0; i < pp->target && !pp->zsock_full; i++)
        if (pp->w[i].pid == 0 && !pp->w[i].retired)
            cf__pp_request_worker(pp, i);
}

/* Under mu: a worker has ended. Fails its task; the manager loop replaces it. */
static void handle_death(ppool *pp, unsigned wid, int status, cf_future **list)
{
    pworker *w = &pp->w[wid];
    int sig = WIFSIGNALED(status) ? WTERMSIG(status) : 0;
    /* Read once: the record is in memory any worker can write. */
    unsigned state = atomic_load(&pp->wrecs[wid].state);
    bool init_failed = WIFEXITED(status) && WEXITSTATUS(status) == CF__EXIT_INIT_FAILED &&
                       state == CF__WREC_FAILED;
    /* An exec worker whose program did something else before cf_main_guard
     * (exec.c) would do the same again: like a failed initializer, it is not
     * started again. Only before it was ready: a task's exit(116) is a death. */
    bool no_guard = pp->at_guard && WIFEXITED(status) && WEXITSTATUS(status) == CF__EXIT_NO_GUARD &&
                    state == CF__WREC_STARTING;
    /*
     * A worker that died before its initializer returned (it exited or
     * crashed) is started again after a pause that doubles with each such
     * death in a row, and not at all after START_DEATHS_MAX of them: an
     * initializer that now always dies would otherwise have the zygote fork
     * without end, and the pool's tasks wait for a worker that never comes.
     * One that started counts anew. A SIGKILL is most often another's doing
     * (the OOM killer, an operator, the pool itself) and may come again
     * while the next one starts: such a death waits RETRY_MS and counts
     * for nothing. (The record is the worker's to write: a forgery only
     * retires its own id sooner.)
     */
    if (w->unwatched || (sig == SIGKILL && state == CF__WREC_STARTING)) {
        /* Ended by the pool for want of a descriptor, or by another. */
        w->unwatched = false;
        w->retry_at = cf__now_ns() + (uint64_t)RETRY_MS * 1000000u;
    } else if (state == CF__WREC_STARTING) {
        unsigned deaths = ++w->start_deaths;
        w->retry_at = cf__now_ns() + ((uint64_t)RETRY_MS * 1000000u << (deaths < 8 ? deaths - 1 : 7));
        init_failed = init_failed || deaths >= START_DEATHS_MAX;
    } else {
        w->start_deaths = 0;
    }
    cf__mask_clear(pp->h->spinning, wid);
    cf__mask_clear(pp->h->sleeping, wid);
    if (cf__mask_clear(pp->h->live, wid))
        cf__idle_ring(pp->h, 1);    /* publishers counted it awake (ring.h) */
    FOR_EACH_BUSY(pp, pos) {
        cf__slot *s = slot_at(pp, pos);
        uint64_t word = atomic_load(&s->word);
        /* It may have died between marking a slot done and waking its waiter. */
        if (word & CF__SLOT_WAITER)
            cf__futex_wake(cf__low32(&s->word), INT_MAX, true);
        if (CF__W_POS(word) != (uint32_t)pos || CF__W_STATE(word) != CF__SLOT_RUNNING ||
            CF__W_WID(word) != wid)
            continue;
        if (w->kill_pos == pos)
            cf__pp_fail_slot(pp, pos, w->kill_code, 0);
        else
            cf__pp_fail_slot(pp, pos, CF_ECRASHED, sig);
    }
    cf__fd_close(w->pidfd);
    w->pidfd = -1;
    w->pid = 0;
    w->kill_pos = UINT64_MAX;
    w->kill_pending = false;
    w->retired = w->retired || init_failed || no_guard;
    pp->live--;
    cf__pp_reap_done(pp, list);
}

/*
 * Under mu: what creation should answer when a starting worker ended; never
 * 0. The initializer's code is read back from the worker's record, where a
 * worker can write anything: a record that says FAILED with code 0 (which
 * no initializer's failure leaves) is a crash.
 */
static int start_failure(const ppool *pp, unsigned wid, int status)
{
    if (atomic_load(&pp->wrecs[wid].state) == CF__WREC_FAILED) {
        int code = *(volatile int32_t *)&pp->wrecs[wid].init_code;
        return code != 0 ? code : CF_ECRASHED;
    }
    if (WIFEXITED(status) && WEXITSTATUS(status) == CF__EXIT_BOOT_FAILED)
        return CF_ENOMEM;    /* an exec worker could not map the pool's memory */
    return CF_ECRASHED;
}

/* Under mu: the zygote made a standby, or could not. */
static void standby_news(ppool *pp, cf__zmsg m, int fd)
{
    pp->standby_asked = false;
    if (m.pid > 0) {
        /* Without its socket (no room for it here) it cannot be told anything: let it go. */
        pp->spid = m.pid;
        pp->ssock = fd;
        pp->standby_dead = fd < 0;
        return;
    }
    cf__fd_close(fd);
    pp->standby_retry_at = cf__now_ns() + (uint64_t)RETRY_MS * 1000000u;
    if (!pp->created && pp->create_error == 0)
        pp->create_error = m.status < 0 ? m.status : CF_EAGAIN;
}

/*
 * Reads every message the zygote has sent. Returns false when it is gone:
 * then so are its workers (the manager loop makes sure of it).
 */
bool cf__pp_zygote_news(ppool *pp, cf_future **list)
{
    if (pp->zsock < 0)
        return true;    /* none since the pool broke */
    for (;;) {
        cf__zmsg m;
        int fd;
        bool dropped;
        ssize_t got = recv_zmsg(pp->zsock, &m, &fd, &dropped);
        if (got < 0 && errno == EAGAIN)
            return true;
        if (got != (ssize_t)sizeof m) {
            cf__fd_close(fd);
            return false;
        }
        if (m.type == CF__Z_STANDBY_UP) {
            standby_news(pp, m, fd);
            continue;
        }
        if (m.wid >= pp->wused || (fd >= 0 && m.type != CF__Z_SPAWNED)) {
            cf__fd_close(fd);
            continue;
        }
        pworker *w = &pp->w[m.wid];
        switch (m.type) {
        case CF__Z_SPAWNED:
            w->pid = m.pid;
            cf__fd_close(w->pidfd);
            w->pidfd = fd;
            pp->live++;
            /*
             * Its pidfd dropped on the way (this process had no room for a
             * descriptor): the pool could not end this worker should the
             * zygote die, and it would outlive the pool. The zygote ends it
             * now (its child, not yet reaped); it is started again later.
             * (A zygote that could make none, on a kernel without pidfd_open
             * or under valgrind, sends none: the worker is kept, as ever.)
             */
            if (dropped && fd < 0 && m.pid > 0) {
                w->unwatched = true;
                cf__pp_tell_zygote(pp, (cf__zmsg){.type = CF__Z_END, .wid = m.wid, .pid = m.pid});
            }
            break;
        case CF__Z_FAILED:
            w->pid = 0;
            w->retry_at = cf__now_ns() + (uint64_t)RETRY_MS * 1000000u;
            if (!pp->created && pp->create_error == 0)
                pp->create_error = m.status;
            break;
        case CF__Z_DIED:
            if (!pp->created && pp->create_error == 0)
                pp->create_error = w->unwatched ? CF_EAGAIN : start_failure(pp, m.wid, m.status);
            handle_death(pp, m.wid, m.status, list);
            break;
        case CF__Z_SPARED:
            if (w->kill_pos == m.pos)
                w->kill_pos = UINT64_MAX;
            break;
        }
    }
}

/* Under mu: true when the standby is gone (its socket's EOF). */
bool cf__pp_standby_gone(ppool *pp)
{
    if (pp->standby_dead)
        return true;
    for (;;) {
        cf__zmsg m;
        int fd;
        ssize_t got = pp->ssock >= 0 ? recv_zmsg(pp->ssock, &m, &fd, NULL) : -1;
        if (pp->ssock < 0 || (got < 0 && errno == EAGAIN))
            return false;
        cf__fd_close(fd);    /* a standby says nothing: whatever came is dropped */
        if (got <= 0)
            return true;
    }
}

/* Without mu: reaps the dead standby; the manager loop asks for another. */
void cf__pp_standby_lost(ppool *pp)
{
    pthread_mutex_lock(&pp->mu);
    int sock = pp->ssock;
    pid_t pid = pp->spid;
    pp->ssock = -1;
    pp->spid = 0;
    pp->standby_dead = false;
    pthread_mutex_unlock(&pp->mu);
    cf__fd_close(sock);
    reap_child(pid);
}

/*
 * Kills the workers of a dead zygote and waits until they are dead: most
 * die of their parent-death signal, but a task may have dropped it, and a
 * worker that ran on would write into slots the pool reuses. Their pidfds
 * came from the zygote, which had not reaped them: they name those
 * processes and no other. One now the caller's child (the caller is a
 * subreaper) is reaped here.
 */
static void kill_orphans(const int *pidfds, unsigned n)
{
    for (unsigned i = 0; i < n; i++)
        syscall(SYS_pidfd_send_signal, pidfds[i], SIGKILL, NULL, 0);
    for (unsigned i = 0; i < n; i++) {
        struct pollfd p = {.fd = pidfds[i], .events = POLLIN};
        while (poll(&p, 1, -1) < 0 && errno == EINTR)
            ;
        siginfo_t si;
        while (waitid((idtype_t)P_PIDFD, (id_t)pidfds[i], &si, WEXITED | WNOHANG) < 0 && errno == EINTR)
            ;
    }
}

ssize_t cf__pp_read_proc(const char *path, char *buf, size_t size)
{
    ssize_t n = -1;
    cf__fd_lock();    /* no fork sees the descriptor: it is open only under the lock */
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
        while ((n = read(fd, buf, size - 1)) < 0 && errno == EINTR)
            ;
        close(fd);
    }
    cf__fd_unlock();
    buf[n > 0 ? n : 0] = '\0';
    return n;
}

/*
 * Without mu, in the manager thread only, once the zygote is dead and
 * reaped: kills and reaps a standby that the zygote made but died before
 * reporting (between its fork and its STANDBY_UP). Such a standby is a child
 * of this thread (the zygote makes each standby its sibling) that the pool
 * does not know, and it would stay a zombie for ever. This thread forks
 * nothing but the zygote, so once the zygote is reaped, a child of it other
 * than the known standby, named cfutures-spare (from the instant of its
 * fork), is one. It is not reaped yet, so its pid is still it. Needs
 * /proc/thread-self/children (Linux 3.17 with CONFIG_PROC_CHILDREN, as
 * mainstream kernels have); without it, such a zombie is left.
 */
void cf__pp_reap_unreported(pid_t standby)
{
    char buf[256];
    if (cf__pp_read_proc("/proc/thread-self/children", buf, sizeof buf) <= 0)
        return;
    for (char *p = buf, *end; *p != '\0'; p = end) {
        long pid = strtol(p, &end, 10);
        if (end == p)
            break;
        /*
         * By its name too: a program that is a subreaper and whose main
         * thread has ended could have its own orphans handed to this thread.
         */
        char path[64], name[32];
        snprintf(path, sizeof path, "/proc/%ld/comm", pid);
        if (pid > 0 && pid != standby && cf__pp_read_proc(path, name, sizeof name) > 0 &&
            strcmp(name, "cfutures-spare\n") == 0) {
            kill((pid_t)pid, SIGKILL);
            reap_child((pid_t)pid);
        }
    }
}

/*
 * Without mu: the zygote is gone, and with it every worker: their running
 * tasks fail CF_ECRASHED, and the standby takes the zygote's place (the
 * manager loop then asks it for workers and a standby of its own). Without
 * a standby the pool is broken.
 */
void cf__pp_zygote_lost(ppool *pp, cf_future **list)
{
    int pidfds[CF__MAX_WORKERS];
    unsigned n = 0;
    pthread_mutex_lock(&pp->mu);
    int sock = pp->zsock;
    pid_t pid = pp->zpid, standby = pp->spid;
    pp->zsock = -1;
    pp->zpid = 0;
    for (unsigned i = 0; i < pp->wused; i++)
        if (pp->w[i].pid > 0 && pp->w[i].pidfd >= 0)
            pidfds[n++] = pp->w[i].pidfd;
    pthread_mutex_unlock(&pp->mu);
    cf__fd_close(sock);
    reap_child(pid);
    cf__pp_reap_unreported(standby);
    kill_orphans(pidfds, n);    /* the pidfds stay open until handle_death closes them */

    pthread_mutex_lock(&pp->mu);
    for (unsigned i = 0; i < pp->wused; i++) {
        if (pp->w[i].pid > 0)
            handle_death(pp, i, SIGKILL, list);
        pp->w[i].pid = 0;
    }
    pp->live = 0;
    pp->standby_asked = false;
    if (pp->ssock >= 0 && !pp->standby_dead && !pp->exit_sent) {
        tell(pp->ssock, (cf__zmsg){.type = CF__Z_PROMOTE});
        pp->zsock = pp->ssock;
        pp->zpid = pp->spid;
        pp->ssock = -1;
        pp->spid = 0;
    } else if (!pp->exit_sent && !pp->broken) {
        for (unsigned i = 0; i < pp->wused; i++)
            pp->w[i].retired = true;
        pp->broken = true;
        cf__pp_fail_pending(pp, CF_EBROKEN, list);
    }
    pthread_mutex_unlock(&pp->mu);
}

/* ---- start and stop ---------------------------------------------------- */

/* The longest creation sleeps before it looks at both kinds of news again. */
#define CREATE_NAP_MS 10

static bool all_ready(ppool *pp)
{
    for (unsigned i = 0; i < pp->target; i++)
        if (atomic_load(&pp->wrecs[i].state) != CF__WREC_READY)
            return false;
    return true;
}

/* Starts the zygote, its standby and every worker, and waits until each worker has run its initializer. */
int cf__pp_start_workers(ppool *pp)
{
    cf__launch l = {
        .h = pp->h, .nwrecs = CF__MAX_WORKERS, .map_size = pp->map_size,
        .opts = &pp->base.opts, .death_fd = pp->death[0], .death_wr = pp->death[1],
        .efd = pp->efd, .mask = pp->caller_mask, .exec = pp->exec, .at_guard = pp->at_guard,
    };
    int *fds = NULL;
    if (pp->exec) {
        const cf__exec_boot *b = (const cf__exec_boot *)(uintptr_t)pp->boot;
        cf__shared_region *shared = (cf__shared_region *)(uintptr_t)b->shared;
        if ((fds = malloc((3 + (size_t)b->nshared) * sizeof *fds)) == NULL)
            return CF_ENOMEM;
        fds[0] = pp->map_fd;
        fds[1] = pp->death[0];
        fds[2] = pp->efd;
        for (uint32_t i = 0; i < b->nshared; i++) {
            fds[3 + i] = shared[i].fd;
            shared[i].fd = (int32_t)(6 + i);    /* as the worker will number it */
        }
        l.fds = fds;
        l.nfds = 3 + b->nshared;
    }
    int rc = cf__launcher_start(&l, &pp->zpid, &pp->zsock);
    free(fds);    /* the zygote has its own copy */
    if (rc != 0)
        return rc;

    cf_future *list = NULL;
    pthread_mutex_lock(&pp->mu);
    request_workers(pp);
    cf__pp_request_standby(pp);    /* made while the workers run their initializers */
    bool ready;
    while (pp->create_error == 0 && !((ready = all_ready(pp)) && pp->ssock >= 0)) {
        pthread_mutex_unlock(&pp->mu);
        struct pollfd pfd = {.fd = pp->zsock, .events = POLLIN};
        uint32_t seen = atomic_load(&pp->h->ready);
        /* Workers tell of their start on the ready word, the zygote of the
         * standby on the socket: with every worker ready, only the socket. */
        if (poll(&pfd, 1, ready ? CREATE_NAP_MS : 0) == 0 && !ready)
            cf__futex_wait(&pp->h->ready, seen, true, cf__now_ns() + CREATE_NAP_MS * 1000000u);
        pthread_mutex_lock(&pp->mu);
        if (!cf__pp_zygote_news(pp, &list) && pp->create_error == 0)
            pp->create_error = CF_EAGAIN;
        if (cf__pp_standby_gone(pp) && pp->create_error == 0)
            pp->create_error = CF_EAGAIN;
        /* What did not fit in the socket before, now that news were read. */
        pp->zsock_full = false;
        request_workers(pp);
        if (!pp->standby_asked && pp->ssock < 0 && pp->spid == 0)
            cf__pp_request_standby(pp);
    }
    rc = pp->create_error;
    pthread_mutex_unlock(&pp->mu);
    cf__future_fire(list);
    return rc;
}

/*
 * Ends the zygote (which kills and reaps its workers) and the standby. The
 * zygote's last messages are read to its EOF: a standby it made meanwhile
 * is told to quit and reaped too.
 */
void cf__pp_stop_zygote(ppool *pp)
{
    /* Not EOF alone: a process the caller forked may hold the sockets too. */
    tell(pp->zsock, (cf__zmsg){.type = CF__Z_QUIT});
    tell(pp->ssock, (cf__zmsg){.type = CF__Z_QUIT});
    pid_t late = 0;
    for (;;) {
        cf__zmsg m;
        int fd;
        struct pollfd p = {.fd = pp->zsock, .events = POLLIN};
        if (pp->zsock < 0 || (poll(&p, 1, -1) < 0 && errno != EINTR))
            break;
        ssize_t got = recv_zmsg(pp->zsock, &m, &fd, NULL);
        if (got < 0 && (errno == EAGAIN || errno == EINTR))
            continue;
        if (got == (ssize_t)sizeof m && m.type == CF__Z_STANDBY_UP && m.pid > 0 && late == 0) {
            tell(fd, (cf__zmsg){.type = CF__Z_QUIT});
            late = m.pid;
        }
        cf__fd_close(fd);
        if (got <= 0)
            break;
    }
    cf__fd_close(pp->zsock);
    cf__fd_close(pp->ssock);
    pp->zsock = pp->ssock = -1;
    reap_child(pp->zpid);
    reap_child(pp->spid);
    reap_child(late);
    pp->zpid = pp->spid = 0;
    for (unsigned i = 0; pp->w != NULL && i < pp->wused; i++) {
        cf__fd_close(pp->w[i].pidfd);
        pp->w[i].pidfd = -1;
    }
}
