/*
 * worker.c — the loop that runs inside a worker process (forked, or started
 * anew by exec.c).
 *
 * A worker owns nothing but its record (wrecs[wid]) and the slot it has
 * claimed. It takes the oldest published slot with one compare-and-swap,
 * runs it, writes the result into shared memory, checks the guards behind
 * the task's buffers (a task that wrote into one fails with CF_EOVERRUN, and
 * the guard is filled again), and flips the slot to DONE; it wakes a parent
 * thread only if that thread flagged the slot. After a task it leaves if it
 * has run max_tasks_per_worker of them or if its resident size is above
 * max_worker_rss_kb (the manager starts a fresh one in its place: the
 * header's max_tasks and max_rss_kb), or if its id is no longer below the
 * header's target (none). Each of these is looked at only once a task has
 * ended, so every worker started runs at least one task: a limit no worker
 * can meet costs a process start per task, never a loop of starts.
 * When idle it spins briefly
 * (at most as many workers at once as the pool has CPUs) and then sleeps on the ring's bell (ring.h,
 * cf__idle_*). It finds the ring and its record at fixed offsets of the
 * region, never through pointers stored in it. It never returns into the
 * caller's code: it leaves with _exit, after flushing only what its own
 * tasks printed.
 *
 * It dies with its parent, the pool's zygote (launcher.c), which dies with
 * the caller's manager thread: PR_SET_PDEATHSIG(SIGKILL), a check of
 * getppid() right after, and EOF on the death pipe, whose only write end the
 * caller holds, whenever it wakes from a long sleep. It ignores SIGINT:
 * Ctrl-C belongs to the caller, whose death then takes the workers along.
 *
 * Its two descriptors, the death pipe and the manager's eventfd, share the
 * process with the task, which may close them (close_range, a loop of
 * close) and open files that then get their numbers. So they are moved up,
 * away from the low numbers a task gets, and each is checked against the
 * identity it had at start (fstat) before it is used; a worker whose
 * descriptor is gone or replaced leaves at once, before any write. (A
 * third, /proc/self/statm when the pool has a memory limit, is only read:
 * one found gone or replaced is simply opened again.) The
 * zygote reports that death, which wakes the manager as the write would
 * have: the task that just finished keeps its result, and no task fails.
 */
#include "ring.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <sched.h>
#include <stdio.h>
#include <stdio_ext.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#define IDLE_SLEEP_NS 500000000u   /* look at the parent twice a second when idle */

typedef struct wctx {
    cf__shm_hdr *h;
    cf__slot    *slots;
    cf__wrec    *rec;
    uint32_t     mask;             /* K - 1 */
    unsigned     wid;
    unsigned     page_kb;          /* the page size in KiB, for too_big */
    int          death_fd;
    int          efd;
    int          statm_fd;         /* /proc/self/statm, for too_big; -1: not open */
    long        *index;            /* cf__task_index, found once: a TLS access from a
                                      shared library is a call, which per element would
                                      double the cost of a map of empty functions */
    pid_t        parent;
    cf__ringer   ringer;           /* this worker's last rings (pass_on) */
} wctx;

static __attribute__((noreturn)) void leave(int status)
{
    fflush(stdout);
    fflush(stderr);
    _exit(status);
}

/* What a descriptor was at start: a replaced one differs (an eventfd only by its number: see cf__fd_move_up). */
typedef struct channel_id {
    dev_t  dev;
    ino_t  ino;
    mode_t type;
} channel_id;

static channel_id death_id, wake_id, statm_id;    /* one worker per process */

static bool identify(int fd, channel_id *id)
{
    struct stat st;
    if (fstat(fd, &st) != 0)
        return false;
    *id = (channel_id){.dev = st.st_dev, .ino = st.st_ino, .type = st.st_mode & S_IFMT};
    return true;
}

static bool channel_ok(int fd, const channel_id *want)
{
    channel_id now;
    return identify(fd, &now) && now.dev == want->dev && now.ino == want->ino && now.type == want->type;
}

/*
 * Moves fd near the top of the first 1024 numbers (or of a lower descriptor
 * limit), where a task that opens files after closing everything does not
 * reach: all eventfds share one inode, so for the eventfd the number is
 * most of its identity. Keeps fd where it is if no number is free there.
 */
int cf__fd_move_up(int fd)
{
    struct rlimit rl;
    rlim_t top = 1024;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < top)
        top = rl.rlim_cur;
    if (top < 64)
        return fd;
    int moved = fcntl(fd, F_DUPFD_CLOEXEC, (int)top - 16);
    if (moved < 0)
        return fd;
    close(fd);
    return moved;
}

/* At start: moves the worker's descriptors out of the way and records what they are. */
static void adopt_channels(wctx *w)
{
    w->death_fd = cf__fd_move_up(w->death_fd);
    w->efd = cf__fd_move_up(w->efd);
    if (!identify(w->death_fd, &death_id) || !identify(w->efd, &wake_id))
        leave(1);
}

static void check_parent(const wctx *w)
{
    struct pollfd p = {.fd = w->death_fd, .events = POLLIN};
    /* Any event counts: EOF or data (the caller is gone, or the number is a file now), POLLNVAL. */
    if (getppid() != w->parent || !channel_ok(w->death_fd, &death_id) || poll(&p, 1, 0) > 0)
        leave(1);
}

/*
 * Wakes the manager through its eventfd, if the descriptor is still that
 * eventfd; otherwise leaves without writing, and the zygote's report of the
 * death wakes the manager instead.
 */
static void wake_manager(const wctx *w)
{
    if (!channel_ok(w->efd, &wake_id))
        leave(1);
    uint64_t one = 1;
    ssize_t rc;
    do
        rc = write(w->efd, &one, sizeof one);
    while (rc < 0 && errno == EINTR);
}

/* Is this worker's id still below the pool's target (pp_resize)? */
static bool wanted(const wctx *w)
{
    return w->wid < atomic_load(&w->h->target);
}

/* Claims the oldest published slot; returns its position, or UINT64_MAX. */
static uint64_t take(const wctx *w)
{
    cf__shm_hdr *h = w->h;
    for (;;) {
        uint64_t hd = atomic_load_explicit(&h->head, memory_order_acquire);
        if (hd >= atomic_load_explicit(&h->tail, memory_order_acquire))
            return UINT64_MAX;
        cf__slot *s = &w->slots[hd & w->mask];
        uint64_t word = atomic_load_explicit(&s->word, memory_order_acquire);
        if (CF__W_POS(word) == (uint32_t)hd && CF__W_STATE(word) == CF__SLOT_READY) {
            /* Seen after the task (acquire): a resize that returned before
             * its submit is seen too, and a worker past it takes nothing more. */
            if (!wanted(w))
                return UINT64_MAX;
            if (!cf__slot_claim(s, &word, w->wid))
                continue;    /* a flag changed or another worker won: look again */
            uint64_t seen = hd;    /* a failed exchange would overwrite it */
            atomic_compare_exchange_strong(&h->head, &seen, hd + 1);
            return hd;
        }
        /* Claimed, cancelled or already reused: move the hint along. */
        atomic_compare_exchange_strong(&h->head, &hd, hd + 1);
    }
}

/*
 * The worker's /proc/self/statm, opened in the worker itself (a zygote's
 * would tell the zygote's size), moved up and identified as the channels
 * are; -1 if it cannot be opened.
 */
static int open_statm(void)
{
    int fd = open("/proc/self/statm", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    fd = cf__fd_move_up(fd);
    if (!identify(fd, &statm_id)) {
        close(fd);
        return -1;
    }
    return fd;
}

/*
 * Is the worker's resident set above the header's max_rss_kb? Read anew
 * from /proc/self/statm (its second field, in pages) after each task: the
 * peak getrusage reports never comes down, so it could not tell a worker
 * that freed its memory from one that still holds it. The file stays open
 * (a pread costs a third of an open, read and close); a task may have
 * closed it or put a file of its own at its number, so it is checked first
 * and opened anew if it is no longer the worker's (the number is then the
 * task's: not closed). False when there is no limit or the file cannot be
 * read.
 */
static bool too_big(wctx *w)
{
    uint64_t limit = w->h->max_rss_kb;
    if (limit == 0)
        return false;
    if (w->statm_fd < 0 || !channel_ok(w->statm_fd, &statm_id))
        w->statm_fd = open_statm();
    if (w->statm_fd < 0)
        return false;
    char buf[128];
    ssize_t n;
    do
        n = pread(w->statm_fd, buf, sizeof buf - 1, 0);
    while (n < 0 && errno == EINTR);
    if (n <= 0)
        return false;
    buf[n] = '\0';
    unsigned long long pages;    /* "size resident shared text lib data dt" */
    if (sscanf(buf, "%*u %llu", &pages) != 1)
        return false;
    return pages > limit / w->page_kb;
}

/*
 * The bits set in a spinning or sleeping mask, counted up to limit at most
 * (it stops there): only the words of ids in use, so a pool of 2 reads one
 * word, not the 16 of the largest.
 */
static unsigned count_upto(const cf__shm_hdr *h, _Atomic uint64_t *words, unsigned limit)
{
    unsigned n = atomic_load_explicit(&h->mask_words, memory_order_acquire), seen = 0;
    for (unsigned i = 0; i < n && i < CF__MASK_WORDS && seen < limit; i++)
        seen += (unsigned)__builtin_popcountll(atomic_load(&words[i]));
    return seen < limit ? seen : limit;
}

static bool fewer_than(const cf__shm_hdr *h, _Atomic uint64_t *words, unsigned limit)
{
    return count_upto(h, words, limit) < limit;
}

static bool anybody(const cf__shm_hdr *h, _Atomic uint64_t *words)
{
    return count_upto(h, words, 1) > 0;
}

/*
 * Waits until there is work (or the pool is closing): spins a little, then
 * sleeps on the bell by the protocol of cf__idle_* (ring.h), which no
 * wake-up can slip through. As many workers spin at once as the caller's
 * affinity mask has CPUs (spin_max): on a busy pool each finds its next task spinning, with
 * no system call on either side; a worker past that count sleeps at once,
 * so an idle pool of many workers keeps only that many cores busy, for
 * CF__SPIN_IDLE_NS after its last task.
 */
static void idle(const wctx *w)
{
    cf__shm_hdr *h = w->h;

    if (fewer_than(h, h->spinning, h->spin_max)) {
        cf__mask_set(h->spinning, w->wid);
        cf__spinner spin;
        cf__spin_begin(&spin, CF__SPIN_IDLE_NS);
        while (!cf__idle_work_or_exit(h) && wanted(w) && cf__spin(&spin))
            ;
        if (cf__idle_work_or_exit(h) || !wanted(w)) {
            /* Work came while it spun: back to it, without ever looking asleep (a
             * sleeping bit, however brief, makes every publish meanwhile ring). */
            cf__mask_clear(h->spinning, w->wid);
            return;
        }
    }
    uint32_t bell = cf__idle_doze(h, w->wid);
    if (!cf__idle_work_or_exit(h) && wanted(w) && cf__idle_sleep(h, bell, cf__now_ns() + IDLE_SLEEP_NS) != 0)
        check_parent(w);
    cf__idle_wake_done(h, w->wid);
}

/*
 * Having taken a task, wakes a sleeping peer if more work waits and nobody is
 * spinning for it: a burst of tasks then reaches every worker even though the
 * caller woke only one.
 */
static void pass_on(wctx *w)
{
    cf__shm_hdr *h = w->h;
    if (atomic_load(&h->head) < atomic_load(&h->tail) && !anybody(h, h->spinning)) {
        unsigned sleepers = count_upto(h, h->sleeping, UINT_MAX);
        if (sleepers > 0)
            cf__idle_ring_for(h, &w->ringer, sleepers);
    }
}

/*
 * Leaves the pool's loop for good: clears the worker's live bit, then (as
 * a doze does, ring.h) looks at the ring: a publisher that counted this
 * worker awake did not ring for what it published, so what waits is rung
 * for here.
 */
static __attribute__((noreturn)) void depart(wctx *w)
{
    cf__shm_hdr *h = w->h;
    cf__mask_clear(h->live, w->wid);
    if (atomic_load(&h->head) < atomic_load(&h->tail) && !atomic_load(&h->exit))
        cf__idle_ring(h, 1);
    leave(0);
}

static int run_task(cf__slot *s)
{
    cf_fn *fn = (cf_fn *)cf__fnref_decode(s->fn);
    return fn((const void *)(uintptr_t)s->arg, s->arg_size, (void *)(uintptr_t)s->res, s->res_size);
}

/*
 * run_chunk's loop over elements [0, count) at in and out, from the map's
 * element base: the per-element start time if timed, the codes into
 * status if any, and after each element its progress. Inlined twice.
 */
static inline __attribute__((always_inline)) int
chunk_loop(const wctx *w, cf__slot *s, cf_fn *fn, const char *in, size_t isz, char *out,
           size_t osz, size_t count, uint64_t base, int32_t *status, bool timed)
{
    long *index = w->index;
    int first = 0;
    for (size_t i = 0; i < count; i++, in += isz, out += osz) {
        if (timed)
            atomic_store_explicit(&w->rec->start_ns, cf__stamp_ns(), memory_order_relaxed);
        *index = (long)(base + i);
        int rc = fn(in, isz, out, osz);
        if (status != NULL)
            status[i] = rc;
        if (rc != 0 && first == 0) {
            first = rc;
            s->fail_code = rc;
            s->fail_index = i;
        }
        atomic_store_explicit(&s->progress, i + 1, memory_order_release);
    }
    *index = -1;
    return first;
}

static int run_chunk(const wctx *w, cf__slot *s)
{
    cf_fn *fn = (cf_fn *)cf__fnref_decode(s->fn);
    const char *in = (const char *)(uintptr_t)s->arg;
    char *out = (char *)(uintptr_t)s->res;
    int32_t *status = (int32_t *)(uintptr_t)s->status;
    const size_t isz = s->arg_size, osz = s->res_size, count = s->count;
    const bool timed = w->h->timed;
    const uint64_t base = s->first;    /* read once: a task may write over the slot */
    /* The common case, neither times nor codes, in a loop of its own, of
     * the fewest live values: one call per element is most of a map of
     * small elements. */
    if (!timed && status == NULL)
        return chunk_loop(w, s, fn, in, isz, out, osz, count, base, NULL, false);
    return chunk_loop(w, s, fn, in, isz, out, osz, count, base, status, timed);
}

/* A chunk given to a cf_chunk_fn: one call; its code stands for every element. */
static int run_chunk_fn(cf__slot *s)
{
    cf_chunk_fn *fn = (cf_chunk_fn *)cf__fnref_decode(s->fn);
    int32_t *status = (int32_t *)(uintptr_t)s->status;
    const size_t count = s->count;
    int rc = fn((const void *)(uintptr_t)s->arg, s->arg_size, (void *)(uintptr_t)s->res, s->res_size,
                s->first, count);
    for (size_t i = 0; status != NULL && i < count; i++)
        status[i] = rc;
    if (rc != 0) {
        s->fail_code = rc;
        s->fail_index = 0;
    }
    atomic_store_explicit(&s->progress, count, memory_order_release);
    return rc;
}

static void finish(const wctx *w, cf__slot *s)
{
    uint64_t word = cf__slot_finish(s);
    if (word & CF__SLOT_WAITER)
        cf__futex_wake(cf__low32(&s->word), INT_MAX, true);
    if (((word & CF__SLOT_NOTIFY) || atomic_load(&w->h->notify_all)) &&
        atomic_exchange(&w->h->mgr_sleeping, 0) != 0)
        wake_manager(w);
}

/* True if the n bytes at p all still hold CF__GUARD_BYTE. */
static bool unwritten(const unsigned char *p, size_t n)
{
    typedef uint64_t __attribute__((may_alias)) word;
    const uint64_t g = 0x0101010101010101u * CF__GUARD_BYTE;
    for (; n > 0 && ((uintptr_t)p & 7) != 0; p++, n--)
        if (*p != CF__GUARD_BYTE)
            return false;
    const word *q = (const word *)p;
    for (; n >= 64; n -= 64, q += 8)
        if (((q[0] ^ g) | (q[1] ^ g) | (q[2] ^ g) | (q[3] ^ g) | (q[4] ^ g) | (q[5] ^ g) |
             (q[6] ^ g) | (q[7] ^ g)) != 0)
            return false;
    for (; n >= 8; n -= 8, q++)
        if (*q != g)
            return false;
    for (p = (const unsigned char *)q; n > 0; p++, n--)
        if (*p != CF__GUARD_BYTE)
            return false;
    return true;
}

/*
 * Checks the guards that follow the task's buffers (see ring.h). One the
 * task wrote into is filled again for the slot's next task; false then.
 */
static bool guards_intact(const cf__guard *g)
{
    bool intact = true;
    for (int i = 0; i < CF__GUARDS; i++) {
        unsigned char *p = (unsigned char *)(uintptr_t)g[i].at;
        if (g[i].len > 0 && !unwritten(p, g[i].len)) {
            memset(p, CF__GUARD_BYTE, g[i].len);
            intact = false;
        }
    }
    return intact;
}

static void run(const wctx *w, uint64_t pos)
{
    cf__slot *s = &w->slots[pos & w->mask];
    cf__guard guard[CF__GUARDS];
    memcpy(guard, s->guard, sizeof guard);    /* as published, before the task runs */
    uint64_t now = cf__stamp_ns();
    s->start_ns = now;
    atomic_store_explicit(&w->rec->start_ns, now, memory_order_relaxed);
    atomic_store_explicit(&w->rec->cur, pos + 1, memory_order_release);
    switch (s->kind) {
    case CF__KIND_CHUNK:
        s->code = run_chunk(w, s);
        break;
    case CF__KIND_CHUNK_FN:
        s->code = run_chunk_fn(s);
        break;
    default: {
        char *text = cf__text_of(w->h, pos);
        text[0] = '\0';
        cf__task_text = text;
        /* The full capacity unless the task says less; the caller checks
         * what it finds here against its own copy of the capacity. */
        uint64_t cap = s->res_size;
        s->res_len = cap;
        cf__task_out = (cf__task_result){.cap = cap, .len = &s->res_len};
        s->code = run_task(s);
        cf__task_text = NULL;
        cf__task_out.len = NULL;
    }
    }
    s->overrun = !guards_intact(guard);
    s->end_ns = cf__stamp_ns();
    atomic_store_explicit(&w->rec->cur, 0, memory_order_release);
    finish(w, s);
}

void cf__worker_main(const cf__worker_boot *boot)
{
    /* What the caller had buffered but not written is the caller's to write. */
    __fpurge(stdout);
    __fpurge(stderr);
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    wctx w = {
        .h = boot->h,
        .slots = cf__slots_of(boot->h),
        .rec = &cf__wrecs_of(boot->h)[boot->wid],
        .mask = CF__NSLOTS - 1,
        .wid = boot->wid,
        .death_fd = boot->death_fd,
        .efd = boot->efd,
        .parent = boot->parent,
        .index = &cf__task_index,
    };
    long page = sysconf(_SC_PAGESIZE);
    w.page_kb = page >= 1024 ? (unsigned)(page / 1024) : 4;
    adopt_channels(&w);
    w.statm_fd = w.h->max_rss_kb != 0 ? open_statm() : -1;
    check_parent(&w);

    struct sigaction ign = {.sa_handler = SIG_IGN};
    sigaction(SIGINT, &ign, NULL);
    sigset_t mask = boot->mask;
    sigdelset(&mask, SIGINT);
    pthread_sigmask(SIG_SETMASK, &mask, NULL);

    char name[16];
    snprintf(name, sizeof name, "cfutures-w%u", boot->wid);
    prctl(PR_SET_NAME, name);
    cf__worker_id = (int)boot->wid;
    cf__worker_context = NULL;

    const cf_options *o = boot->opts;
    int rc = o->initializer != NULL ? o->initializer(o->initargs, o->initargs_size) : 0;
    w.rec->init_code = rc;
    atomic_store(&w.rec->state, rc == 0 ? CF__WREC_READY : CF__WREC_FAILED);
    atomic_fetch_add(&w.h->ready, 1);
    cf__futex_wake(&w.h->ready, INT_MAX, true);
    if (rc != 0)
        leave(CF__EXIT_INIT_FAILED);

    unsigned done = 0;
    uint32_t seen_handed = atomic_load(&w.h->handed);
    cf__mask_set(w.h->live, w.wid);
    for (;;) {
        if (!wanted(&w))
            depart(&w);    /* the pool shrank: the manager starts no one in its place */
        uint64_t pos = take(&w);
        if (pos == UINT64_MAX) {
            if (atomic_load(&w.h->exit))
                depart(&w);
            /* A map's caller gave up its core for the workers (pp_map.c):
             * give it back, once, now that there is nothing left to take. */
            uint32_t handed = atomic_load_explicit(&w.h->handed, memory_order_relaxed);
            if (handed != seen_handed) {
                seen_handed = handed;
                sched_yield();
            }
            idle(&w);
            continue;
        }
        pass_on(&w);
        run(&w, pos);
        if ((w.h->max_tasks != 0 && ++done >= w.h->max_tasks) || too_big(&w))
            depart(&w);    /* recycled: the manager starts a fresh one */
    }
}
