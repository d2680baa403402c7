/*
 * process_pool.c — the process backend, parent side.
 *
 * Owns the shared region (header, control ring, worker records, inline
 * buffers, arena: see ring.h), the worker processes, and the manager
 * thread.
 *
 * Data plane. cf_submit copies the argument into a data buffer (an inline
 * buffer, or an arena block for large ones), describes it in the slot at the
 * ring's tail and publishes it; a free worker claims it with a compare-and-
 * swap and writes the result into shared memory. The thread that waits on
 * the future spins on the slot's word, then sleeps on it as a futex, and
 * copies the result into the future itself. A slot is released as soon as
 * its result is copied out, so held futures never pin shared memory. cf_map
 * streams chunks through the same ring, a bounded number in flight, and skips
 * the copies for buffers that cf_shared_alloc made visible to the workers.
 * Every data buffer is followed by a guard (ring.h): a task that writes
 * up to CF__GUARD bytes past its buffers fails alone, with CF_EOVERRUN.
 *
 * Trust. Workers run user code with the region writable, so nothing read
 * back from it is taken on trust. Where a buffer is, how large, and why the
 * pool failed a slot live in private memory (owner, pchunk); from shared
 * memory only outcomes are read, each checked: a slot's word through
 * slot_state(), progress and fail_index against the chunk's size. A word or
 * a header field that no protocol step could have written means a worker
 * wrote over the control data: the pool then breaks (ring_corrupt), its
 * workers are killed, and everything unfinished ends with CF_EBROKEN. The
 * manager looks at the header and the ring at least every HEALTH_MS while
 * work is in flight, so such damage cannot leave anyone waiting for ever.
 *
 * Control plane. The manager thread forks the pool's zygote (launcher.c),
 * which starts, kills and reaps every worker on the manager's request and
 * reports each one's birth (with a pidfd of it) and death over a socket; the
 * zygote makes a standby copy of itself. The manager fails the task a dead
 * worker held (CF_ECRASHED, or CF_ETIMEDOUT / CF_ECANCELED when the pool
 * killed it) and asks for a replacement. When the zygote itself dies, the
 * manager kills whatever of its workers still lives (by pidfd: a task may
 * have dropped its parent-death signal) and waits for them, fails their
 * tasks, promotes the standby and asks it for workers and a standby of its
 * own; pending tasks wait meanwhile. It also finishes the futures nobody
 * waits on (those with callbacks, under cf_wait, or detached), enforces
 * task_timeout_ms, and closes the pool down. Caller threads reach it
 * through an eventfd.
 *
 * Every descriptor the pool makes in the caller is made and tracked as one
 * step under the descriptor lock (launcher.c), so that the zygote of
 * another pool, forked at any moment, closes it.
 *
 * Admission. One rule (admit) decides, under mu, whether anything may be
 * published: cf_submit, and both of cf_map's publishing paths. A broken pool
 * publishes nothing, and every slot it had published is failed in the same
 * critical section that marks it broken, so no slot can be left READY with
 * no worker to take it.
 *
 * Locking: pp->mu guards everything parent-side (ring cursors, owners, arena,
 * inline buffers, worker table, the zygote's and standby's sockets). A
 * future's lock, and the descriptor lock, may be taken under it, never the
 * other way round. Nothing blocking is done under it except a memcpy into a
 * slot; futures are fired, dead zygotes and standbys reaped, after it is
 * released.
 */
#include "ring.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#define NSLOTS          CF__NSLOTS              /* ring size K, a power of two */
#define ARENA_SIZE      ((size_t)1 << 30)       /* address space; pages are used on demand */
#define CHUNK_BYTES_MAX ((size_t)1 << 20)       /* copied bytes per map chunk at most */
#define BIG_BLOCK       ((size_t)16 << 20)      /* freed blocks this large return their pages */
#define RETRY_MS        100                     /* after a worker failed to start */
#define SLOT_NAP_NS     100000000u              /* re-check period of a blocked submitter */
#define HEALTH_MS       250                     /* the manager's look at the region, with work in flight */
#define SLOT_CORRUPT    CF__SLOT_CORRUPT        /* slot_state: the word cannot be the slot's */

#ifndef SYS_pidfd_send_signal
#  define SYS_pidfd_send_signal 424
#endif
#ifndef P_PIDFD
#  define P_PIDFD 3
#endif

typedef struct owner {
    cf_future *f;            /* the task's future; NULL for a chunk or once cancelled */
    char      *res;          /* task: where its worker writes the result */
    size_t     block;        /* arena block to release with the slot */
    size_t     block_size;   /* 0: none */
    uint32_t   ibuf;         /* inline buffer + 1; 0: none */
    int        fail_code;    /* failed: why the pool ended it */
    int        fail_sig;
    bool       busy;         /* published and not yet released */
    bool       chunk;        /* released by the cf_map call that owns it */
    bool       failed;       /* ended by the pool (its worker died, or the pool broke) */
} owner;

typedef struct pworker {
    pid_t    pid;            /* 0: no process; -1: asked of the zygote */
    int      pidfd;          /* from the zygote, to kill it should the zygote die; or -1 */
    uint64_t kill_pos;       /* position the pool wants killed, UINT64_MAX: none */
    int      kill_code;      /* CF_ETIMEDOUT or CF_ECANCELED */
    bool     kill_pending;   /* the manager has yet to pass kill_pos on */
    bool     retired;        /* a replacement's initializer failed: not respawned */
    uint64_t retry_at;       /* when to ask again after a failed start */
} pworker;

typedef struct ppool {
    cf_executor     base;
    pthread_mutex_t mu;
    pthread_cond_t  changed;     /* creation and shutdown progress */
    cf__shm_hdr    *h;
    cf__slot       *slots;       /* the region's, by this process's own reckoning: */
    cf__wrec       *wrecs;       /* never the pointers stored in the header */
    size_t          map_size;
    int             map_fd;
    char           *inline_base; /* NSLOTS buffers of CF__INLINE_STRIDE bytes */
    uint32_t       *ifree;       /* free inline buffers, a stack: the warmest on top */
    unsigned        nifree;
    uint32_t        iarmed;      /* inline buffers [0, iarmed) have their guard armed */
    char           *arena_base;
    cf__arena       arena;
    uint64_t        boot;        /* what h->boot must hold */
    owner          *own;
    uint32_t        mask;        /* K - 1 */
    uint64_t        tail;        /* next position to publish */
    uint64_t        lo;          /* oldest position not yet released */
    unsigned        inflight;    /* slots in use */
    unsigned        active_maps;
    pworker        *w;
    unsigned        live;        /* workers started and not yet reported dead */
    bool            broken;      /* no worker can be started any more */
    bool            corrupt;     /* a worker wrote over the control data */
    bool            quit_sent;   /* corrupt: the zygote was told to end every worker */
    bool            notify_all;  /* what h->notify_all must hold */
    bool            exec;        /* CF_START_EXEC */
    cf__modtab      mods;        /* exec: objects function pointers may live in */
    int             efd;
    int             death[2];
    int             zsock;       /* the manager's end of the zygote's socket; -1: none */
    pid_t           zpid;
    int             ssock;       /* the manager's end of the standby's socket; -1: none */
    pid_t           spid;        /* the standby; 0: none */
    bool            standby_asked;   /* the zygote was asked for one and has not answered */
    bool            standby_dead;    /* it came without its socket: to be reaped */
    uint64_t        standby_retry_at;
    pthread_t       mgr;
    bool            created, exit_sent, finished;
    int             create_error;
    uint64_t        epoch;
    sigset_t        caller_mask;
} ppool;

static ppool *pp_of(cf_executor *ex)
{
    return (ppool *)ex;
}

static cf__slot *slot_at(const ppool *pp, uint64_t pos)
{
    return &pp->slots[pos & pp->mask];
}

static char *inline_buf(const ppool *pp, uint32_t i)
{
    return pp->inline_base + (size_t)i * CF__INLINE_STRIDE;
}

static void arm_guard(char *p, size_t n)
{
    memset(p, CF__GUARD_BYTE, n);
}

static void notify_manager(ppool *pp)
{
    uint64_t one = 1;
    ssize_t rc;
    do
        rc = write(pp->efd, &one, sizeof one);
    while (rc < 0 && errno == EINTR);
}

/*
 * The state of the busy slot at pos, from its word, which a worker may have
 * written anything into: the state, if the word is one the protocol can
 * produce for pos (its position, known flags, a worker id of this pool, a
 * state other than FREE), else SLOT_CORRUPT. A word that passes may still be
 * a forgery, but every field of it is then safe to use.
 */
static unsigned slot_state(const ppool *pp, uint64_t pos, uint64_t word)
{
    return cf__slot_check(word, pos, pp->base.workers);
}

static bool ended(unsigned state)
{
    return state == CF__SLOT_DONE || state == CF__SLOT_CANCELLED;
}

/* ---- releasing slots (under mu) ---------------------------------------- */

/* Gives the pages of a large block back to the system. */
static void drop_pages(ppool *pp, size_t off, size_t size)
{
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    uintptr_t lo = ((uintptr_t)pp->arena_base + off + page - 1) & ~(uintptr_t)(page - 1);
    uintptr_t hi = ((uintptr_t)pp->arena_base + off + size) & ~(uintptr_t)(page - 1);
    if (hi > lo)
        madvise((void *)lo, hi - lo, MADV_REMOVE);
}

static void free_slot(ppool *pp, uint64_t pos)
{
    owner *o = &pp->own[pos & pp->mask];
    if (o->ibuf > 0) {
        /* Its worker may have died mid-task, with the guard written: the
         * next task must find it armed. */
        if (o->failed)
            arm_guard(inline_buf(pp, o->ibuf - 1) + CF__SLOT_INLINE, CF__GUARD_CHECK);
        pp->ifree[pp->nifree++] = o->ibuf - 1;
    }
    if (o->block_size >= BIG_BLOCK)
        drop_pages(pp, o->block, o->block_size);
    if (o->block_size > 0)
        cf__arena_free(&pp->arena, o->block, o->block_size);
    *o = (owner){0};
    pp->inflight--;
    while (pp->lo < pp->tail && !pp->own[pp->lo & pp->mask].busy)
        pp->lo++;
    cf__slot *s = slot_at(pp, pos);
    if (cf__slot_release(s, pos) & CF__SLOT_WAITER)
        cf__futex_wake(cf__low32(&s->word), INT_MAX, true);
}

static void push(cf_future **list, cf_future *f)
{
    f->next_done = *list;
    *list = f;
}

/*
 * Copies a finished task's outcome into its future and frees the slot. The
 * word was checked by slot_state. The result comes from where the pool put
 * it (owner.res), never from an address read back from the slot.
 */
static void release_task(ppool *pp, uint64_t pos, uint64_t word, cf_future **list)
{
    cf__slot *s = slot_at(pp, pos);
    owner *o = &pp->own[pos & pp->mask];
    cf_future *f = o->f;
    if (f != NULL) {
        bool finished;
        if (CF__W_STATE(word) == CF__SLOT_CANCELLED) {
            finished = cf__future_finish(f, CF__CANCELLED, CF_ECANCELED, 0);
        } else {
            int code = s->code, sig = 0;
            bool ran = true;
            if (o->failed) {
                code = o->fail_code;
                sig = o->fail_sig;
                ran = false;
            } else if (s->overrun != 0) {
                code = CF_EOVERRUN;
                ran = false;
            }
            f->info.worker = (int)CF__W_WID(word);
            f->info.start_ns = s->start_ns;
            f->info.end_ns = s->end_ns;
            if (ran && f->result_size > 0)
                memcpy(f->result, o->res, f->result_size);
            f->has_result = ran;
            finished = cf__future_finish(f, CF__FINISHED, code, sig);
        }
        if (finished)
            push(list, f);
    }
    free_slot(pp, pos);
}

/*
 * Ends the busy slot at pos for the pool: its worker died, or none will ever
 * take it. The reason stays in private memory; the word becomes a well-formed
 * DONE whatever it held, and its sleepers are woken.
 */
static void fail_slot(ppool *pp, uint64_t pos, int code, int sig)
{
    owner *o = &pp->own[pos & pp->mask];
    o->failed = true;
    o->fail_code = code;
    o->fail_sig = sig;
    cf__slot *s = slot_at(pp, pos);
    s->end_ns = cf__now_ns();
    cf__slot_fail(s, pos, pp->base.workers);
    cf__futex_wake(cf__low32(&s->word), INT_MAX, true);
}

static void ring_corrupt(ppool *pp, cf_future **list);

/* Releases every finished task slot. Chunks are left to their cf_map call. */
static void reap_done(ppool *pp, cf_future **list)
{
    for (uint64_t pos = pp->lo; pos < pp->tail; pos++) {
        owner *o = &pp->own[pos & pp->mask];
        if (!o->busy || o->chunk)
            continue;
        cf__slot *s = slot_at(pp, pos);
        uint64_t word = atomic_load_explicit(&s->word, memory_order_acquire);
        unsigned state = slot_state(pp, pos, word);
        if (state == SLOT_CORRUPT) {
            if (!pp->corrupt) {
                ring_corrupt(pp, list);    /* which reaps everything */
                return;
            }
            fail_slot(pp, pos, CF_EBROKEN, 0);    /* written over again since */
            word = atomic_load(&s->word);
            state = CF__SLOT_DONE;
        }
        if (ended(state))
            release_task(pp, pos, word, list);
    }
}

/*
 * Under mu: a worker wrote over the pool's control data: a slot's word or
 * the header holds what no step of the protocol writes. Nothing in the
 * region can be relied on any more, so the pool breaks at once: every slot
 * not yet ended is failed with CF_EBROKEN, admit() refuses all later work,
 * and the manager (the one thread that talks to the zygote) tells the zygote
 * to kill every worker and leave; it then sees it gone, as when it dies.
 */
static void ring_corrupt(ppool *pp, cf_future **list)
{
    if (pp->corrupt)
        return;
    pp->corrupt = true;
    pp->broken = true;
    for (uint64_t pos = pp->lo; pos < pp->tail; pos++) {
        if (!pp->own[pos & pp->mask].busy)
            continue;
        uint64_t word = atomic_load(&slot_at(pp, pos)->word);
        if (!ended(slot_state(pp, pos, word)))
            fail_slot(pp, pos, CF_EBROKEN, 0);
    }
    reap_done(pp, list);
    notify_manager(pp);
}

/* Under mu: does the header still hold what the pool and the protocol put there? */
static bool header_intact(const ppool *pp)
{
    cf__shm_hdr *h = pp->h;
    uint64_t tail = atomic_load(&h->tail);
    if (h->magic != CF__RING_MAGIC || h->version != CF__RING_VERSION ||
        tail != pp->tail || atomic_load(&h->head) > tail ||
        atomic_load(&h->exit) != (pp->exit_sent ? 1u : 0u) ||
        atomic_load(&h->notify_all) != (pp->notify_all ? 1u : 0u) ||
        atomic_load(&h->mgr_sleeping) > 1 || h->nslots != NSLOTS ||
        h->nworkers != pp->base.workers || h->timed != (pp->base.opts.task_timeout_ms > 0) ||
        h->max_tasks != pp->base.opts.max_tasks_per_worker || h->slots != cf__slots_of(h) ||
        h->wrecs != cf__wrecs_of(h) || h->size != pp->map_size || h->boot != pp->boot)
        return false;
    for (unsigned i = 0; i < CF__MASK_WORDS; i++) {
        unsigned first = i * 64;
        uint64_t outside = first >= pp->base.workers ? ~(uint64_t)0
                           : pp->base.workers - first >= 64 ? 0
                           : ~(uint64_t)0 << (pp->base.workers - first);
        if ((atomic_load(&h->spinning[i]) & outside) || (atomic_load(&h->sleeping[i]) & outside))
            return false;
    }
    return true;
}

/* ---- admission and room (drop and retake mu) ---------------------------- */

/*
 * Under mu: may work be published now? 0, CF_ESHUTDOWN or CF_EBROKEN. The
 * one rule of cf_submit and of both of cf_map's publishing paths; a chunk
 * belongs to a map admitted before any cf_shutdown, and may still go.
 */
static int admit(const ppool *pp, bool chunk)
{
    if (!chunk && atomic_load(&pp->base.shut))
        return CF_ESHUTDOWN;
    if (pp->broken)
        return CF_EBROKEN;
    return 0;
}

static void nap_on_slot(ppool *pp, uint64_t pos)
{
    cf__slot *s = slot_at(pp, pos);
    uint64_t word = cf__slot_flag(s, CF__SLOT_WAITER);
    pthread_mutex_unlock(&pp->mu);
    cf__futex_wait(cf__low32(&s->word), (uint32_t)word, true, cf__now_ns() + SLOT_NAP_NS);
    pthread_mutex_lock(&pp->mu);
}

/*
 * Makes the slot at the tail usable, waiting for it if `block`: 0, 1 (not
 * blocking and none free now), or admit()'s refusal.
 */
static int claim_tail(ppool *pp, bool chunk, bool block, cf_future **list)
{
    for (;;) {
        int rc = admit(pp, chunk);
        if (rc != 0)
            return rc;
        if (!pp->own[pp->tail & pp->mask].busy)
            return 0;
        reap_done(pp, list);
        if (!pp->own[pp->tail & pp->mask].busy)
            return 0;
        if (!block)
            return 1;
        nap_on_slot(pp, pp->tail);
    }
}

/* An arena block of size bytes, as claim_tail waits for a slot. */
static int alloc_block(ppool *pp, size_t size, bool chunk, bool block, size_t *off,
                       cf_future **list)
{
    if (size > pp->arena.size)
        return CF_E2BIG;
    for (;;) {
        int rc = admit(pp, chunk);
        if (rc != 0)
            return rc;
        if ((*off = cf__arena_alloc(&pp->arena, size)) != SIZE_MAX)
            return 0;
        reap_done(pp, list);
        if ((*off = cf__arena_alloc(&pp->arena, size)) != SIZE_MAX)
            return 0;
        if (!block)
            return 1;
        if (pp->inflight == 0)
            return CF_ENOMEM;
        nap_on_slot(pp, pp->lo);
    }
}

static unsigned count_bits(_Atomic uint64_t *words)
{
    unsigned n = 0;
    for (unsigned i = 0; i < CF__MASK_WORDS; i++)
        n += (unsigned)__builtin_popcountll(atomic_load(&words[i]));
    return n;
}

/*
 * Publishes the slot at the tail, and wakes a sleeping worker unless the
 * spinning ones are enough for the work now waiting (see cf__idle_*).
 */
static void publish(ppool *pp, owner o)
{
    uint64_t pos = pp->tail;
    o.busy = true;
    pp->own[pos & pp->mask] = o;
    cf__slot_publish(slot_at(pp, pos), pos);
    pp->tail = pos + 1;
    pp->inflight++;
    atomic_store(&pp->h->tail, pp->tail);
    uint64_t waiting = pp->tail - atomic_load(&pp->h->head);
    if (count_bits(pp->h->sleeping) > 0 && waiting > count_bits(pp->h->spinning))
        cf__idle_ring(pp->h, 1);
}

/*
 * How the workers will find a task, chunk or initializer function: its
 * address, or (object, offset) for exec workers.
 */
static int fn_ref(const ppool *pp, void *code, uint64_t *ref)
{
    if (!pp->exec) {
        *ref = (uint64_t)(uintptr_t)code;
        return 0;
    }
    return cf__fnref_encode(&pp->mods, pp->h->mods_found, code, ref);
}

static void prepare(cf__slot *s, uint32_t kind, uint64_t fn)
{
    s->kind = kind;
    s->fn = fn;
    s->code = 0;
    s->overrun = 0;
    s->start_ns = 0;
    s->end_ns = 0;
    s->status = 0;
    s->count = 0;
    s->fail_index = UINT64_MAX;
    s->fail_code = 0;
    for (int i = 0; i < CF__GUARDS; i++)
        s->guard[i] = (cf__guard){0};
    atomic_store_explicit(&s->progress, 0, memory_order_relaxed);
}

static size_t align16(size_t n)
{
    return (n + 15) & ~(size_t)15;
}

static size_t align64(size_t n)
{
    return (n + 63) & ~(size_t)63;
}

/* ---- backend operations ------------------------------------------------ */

/*
 * A task's data: its argument, then its result at the next 16-byte boundary,
 * then the guard. Inline, the pair sits at the end of its 128 bytes, so the
 * guard begins at most 15 bytes after the result (31 after an argument with
 * no result); those bytes are armed here and checked with the head of the
 * buffer's guard, which is armed at the buffer's first use and stays so. In
 * the arena the guard's head is armed here.
 */
static int pp_submit(cf_executor *ex, cf_future *f, cf_fn *fn, const void *arg, size_t arg_size)
{
    ppool *pp = pp_of(ex);
    size_t res_off = align16(arg_size), need = res_off + f->result_size;
    bool inline_data = need <= CF__SLOT_INLINE;
    owner o = {.f = f};
    cf_future *list = NULL;
    uint64_t ref;
    int rc = fn_ref(pp, (void *)fn, &ref);
    if (rc != 0)
        return rc;

    pthread_mutex_lock(&pp->mu);
    if (!inline_data && (rc = alloc_block(pp, need + CF__GUARD, false, true, &o.block, &list)) == 0)
        o.block_size = need + CF__GUARD;
    if (rc == 0)
        rc = claim_tail(pp, false, true, &list);
    if (rc != 0) {
        if (o.block_size > 0)
            cf__arena_free(&pp->arena, o.block, o.block_size);
        goto out;
    }
    cf__slot *s = slot_at(pp, pp->tail);
    prepare(s, CF__KIND_TASK, ref);
    char *base = NULL, *limit = NULL;
    if (need == 0) {
        /* Nothing to carry, nothing to guard: the task gets NULL, as on a thread pool. */
    } else if (inline_data) {
        /* A free slot means a free buffer: there are as many, each held by one
         * slot. Buffers never used come off the stack in order 0, 1, 2… */
        uint32_t i = pp->ifree[--pp->nifree];
        if (i >= pp->iarmed) {
            arm_guard(inline_buf(pp, i) + CF__SLOT_INLINE, CF__GUARD_CHECK);
            pp->iarmed = i + 1;
        }
        o.ibuf = i + 1;
        base = inline_buf(pp, i) + ((CF__SLOT_INLINE - need) & ~(size_t)15);
        limit = inline_buf(pp, i) + CF__SLOT_INLINE;
    } else {
        base = pp->arena_base + o.block;
    }
    if (base != NULL) {
        o.res = f->result_size > 0 ? base + res_off : NULL;
        char *end = f->result_size > 0 ? o.res + f->result_size : base + arg_size;
        size_t check = limit != NULL ? (size_t)(limit - end) + CF__GUARD_CHECK : CF__GUARD_CHECK;
        arm_guard(end, limit != NULL ? (size_t)(limit - end) : CF__GUARD_CHECK);
        s->guard[0] = (cf__guard){.at = (uint64_t)(uintptr_t)end, .len = check};
    }
    s->arg = arg_size > 0 ? (uint64_t)(uintptr_t)base : 0;
    s->arg_size = arg_size;
    s->res = (uint64_t)(uintptr_t)o.res;
    s->res_size = f->result_size;
    if (arg_size > 0)
        memcpy(base, arg, arg_size);
    f->u.p.pos = pp->tail;
    publish(pp, o);
out:
    pthread_mutex_unlock(&pp->mu);
    cf__future_fire_list(list);
    return rc;
}

/*
 * Under mu, for a thread that saw f's slot end, or saw its word make no
 * sense: releases the slot if it is still f's, and breaks the pool if its
 * word was written over. False if the slot is no longer f's (f is done).
 */
static bool settle(ppool *pp, cf_future *f, cf_future **list)
{
    uint64_t pos = f->u.p.pos;
    owner *o = &pp->own[pos & pp->mask];
    if (!o->busy || o->f != f)
        return false;
    uint64_t word = atomic_load_explicit(&slot_at(pp, pos)->word, memory_order_acquire);
    unsigned state = slot_state(pp, pos, word);
    if (state == SLOT_CORRUPT)
        ring_corrupt(pp, list);
    else if (ended(state))
        release_task(pp, pos, word, list);
    return true;
}

static bool pp_settle(ppool *pp, cf_future *f)
{
    cf_future *list = NULL;
    pthread_mutex_lock(&pp->mu);
    bool ours = settle(pp, f, &list);
    pthread_mutex_unlock(&pp->mu);
    cf__future_fire_list(list);
    return ours;
}

static int pp_wait(cf_executor *ex, cf_future *f, uint64_t deadline)
{
    ppool *pp = pp_of(ex);
    uint64_t pos = f->u.p.pos;
    cf__slot *s = slot_at(pp, pos);
    uint64_t started = cf__now_ns();
    bool expired = false, spinning = true;

    for (;;) {
        if (cf__state_done(cf__future_state(f)))
            return 0;
        uint64_t word = atomic_load_explicit(&s->word, memory_order_acquire);
        unsigned state = slot_state(pp, pos, word);
        if (state == SLOT_CORRUPT || ended(state)) {
            /* Released by another thread (which finishes f), ended, or destroyed. */
            if (!pp_settle(pp, f))
                return cf__future_wait_state(f, deadline);
            continue;
        }
        if (expired)
            return CF_ETIMEDOUT;
        if (spinning && (spinning = cf__spin(started, CF__SPIN_WAIT_NS)))
            continue;
        word = cf__slot_flag(s, CF__SLOT_WAITER);
        state = slot_state(pp, pos, word);
        if (state == SLOT_CORRUPT || ended(state))
            continue;
        if (cf__futex_wait(cf__low32(&s->word), (uint32_t)word, true, deadline) == ETIMEDOUT)
            expired = true;
    }
}

static void pp_watch(cf_executor *ex, cf_future *f)
{
    ppool *pp = pp_of(ex);
    uint64_t pos = f->u.p.pos;
    cf__slot *s = slot_at(pp, pos);
    uint64_t word = atomic_load(&s->word);
    while (CF__W_POS(word) == (uint32_t)pos && !(word & CF__SLOT_NOTIFY) &&
           !atomic_compare_exchange_weak(&s->word, &word, word | CF__SLOT_NOTIFY))
        ;
    /* Ended before the flag was seen (the worker did not call: we do), or
     * written over (the manager's sweep deals with it). */
    unsigned state = slot_state(pp, pos, word);
    if (ended(state) || state == SLOT_CORRUPT)
        notify_manager(pp);
}

/*
 * A worker took the task: its slot is RUNNING, or DONE and not yet collected
 * (the future is finished before the slot is freed, so a task stays running
 * until its future is done).
 */
static bool pp_running(const cf_executor *ex, const cf_future *f)
{
    const ppool *pp = (const ppool *)ex;
    uint64_t word = atomic_load(&slot_at(pp, f->u.p.pos)->word);
    unsigned state = slot_state(pp, f->u.p.pos, word);
    return state == CF__SLOT_RUNNING || state == CF__SLOT_DONE;
}

static int pp_cancel(cf_executor *ex, cf_future *f)
{
    ppool *pp = pp_of(ex);
    uint64_t pos = f->u.p.pos;
    cf__slot *s = slot_at(pp, pos);
    cf_future *list = NULL;
    bool kill = false;
    int rc = CF_EBUSY;

    pthread_mutex_lock(&pp->mu);
    owner *o = &pp->own[pos & pp->mask];
    uint64_t word = atomic_load(&s->word);
    while (o->busy && o->f == f) {
        unsigned state = slot_state(pp, pos, word);
        if (state == CF__SLOT_READY) {
            if (!cf__slot_cancel(s, &word))
                continue;    /* claimed meanwhile: look again */
            release_task(pp, pos, word, &list);
            rc = 0;
        } else if (state == CF__SLOT_RUNNING) {
            /* The future is cancelled now; the manager stops the worker
             * (slot_state vouched for its id), and whatever the task still
             * writes is thrown away. */
            pworker *w = &pp->w[CF__W_WID(word)];
            o->f = NULL;
            if (cf__future_finish(f, CF__CANCELLED, CF_ECANCELED, 0))
                push(&list, f);
            w->kill_pos = pos;
            w->kill_code = CF_ECANCELED;
            w->kill_pending = true;
            kill = true;
            rc = 0;
        } else if (state == SLOT_CORRUPT) {
            ring_corrupt(pp, &list);
        } else {
            release_task(pp, pos, word, &list);
        }
        break;
    }
    pthread_mutex_unlock(&pp->mu);
    if (kill)
        notify_manager(pp);
    cf__future_fire_list(list);
    return rc;
}

/* ---- cf_map ------------------------------------------------------------ */

/*
 * A chunk's block in the arena: its inputs, its outputs and its codes, each
 * region that is not the caller's own shared array followed by a guard and
 * starting on a cache line. An element that writes past its own output into
 * the next element's is writing into the map's own output array, as it
 * would in a serial loop, and is not told apart; one that writes past the
 * chunk's region (up to CF__GUARD bytes) fails the chunk with CF_EOVERRUN.
 * cf_shared_alloc arrays are the caller's memory, used in place, unguarded.
 */
typedef struct pchunk {
    uint64_t pos;
    size_t   lo, count;
    char    *in, *out;       /* where the worker reads and writes */
    int32_t *status;         /* per-element codes in the arena, or NULL */
} pchunk;

typedef struct pmap {
    uint64_t    fn;
    uint32_t    kind;          /* CF__KIND_CHUNK (fn per element) or CF__KIND_CHUNK_FN */
    const char *in;
    char       *out;
    size_t      in_size, out_size, n, chunk;
    int        *status;
    bool        in_shared, out_shared;
    size_t      first_index;
    int         first_code;
} pmap;

/* Bytes per element copied through the arena: what bounds a chunk's size. */
static size_t elem_bytes(const pmap *m)
{
    return (m->in_shared ? 0 : align16(m->in_size)) + (m->out_shared ? 0 : align16(m->out_size)) +
           (m->status != NULL ? sizeof(int32_t) : 0);
}

static size_t chunk_bytes(const pmap *m, size_t count)
{
    size_t in = m->in_shared ? 0 : align64(count * m->in_size + CF__GUARD);
    size_t out = m->out_shared ? 0 : align64(count * m->out_size + CF__GUARD);
    return in + out + (m->status != NULL ? align64(count * sizeof(int32_t) + CF__GUARD) : 0);
}

/* Carves the next region of a chunk's block, with its guard; returns its start. */
static char *carve(char **cursor, size_t size, cf__slot *s, int *g)
{
    char *start = *cursor;
    arm_guard(start + size, CF__GUARD_CHECK);
    s->guard[(*g)++] = (cf__guard){.at = (uint64_t)(uintptr_t)(start + size), .len = CF__GUARD_CHECK};
    *cursor = start + align64(size + CF__GUARD);
    return start;
}

/*
 * Publishes elements [lo, lo+count) as one chunk. With `block` false it
 * returns 1 instead of waiting when no slot or arena space is free, so that a
 * cf_map call never waits on slots only it can release.
 */
static int publish_chunk(ppool *pp, pmap *m, pchunk *c, size_t lo, size_t count, bool block)
{
    cf_future *list = NULL;
    owner o = {.chunk = true};
    size_t bytes = chunk_bytes(m, count);
    int rc = 0;

    pthread_mutex_lock(&pp->mu);
    if (bytes > 0 && (rc = alloc_block(pp, bytes, true, block, &o.block, &list)) == 0)
        o.block_size = bytes;
    if (rc == 0)
        rc = claim_tail(pp, true, block, &list);
    if (rc != 0) {
        if (o.block_size > 0)
            cf__arena_free(&pp->arena, o.block, o.block_size);
        goto out;
    }
    cf__slot *s = slot_at(pp, pp->tail);
    prepare(s, m->kind, m->fn);
    char *cursor = pp->arena_base + o.block;
    int g = 0;
    c->pos = pp->tail;
    c->lo = lo;
    c->count = count;
    if (m->in_shared) {
        c->in = (char *)m->in + lo * m->in_size;
    } else {
        c->in = carve(&cursor, count * m->in_size, s, &g);
        memcpy(c->in, m->in + lo * m->in_size, count * m->in_size);
    }
    c->out = m->out_shared ? m->out + lo * m->out_size : carve(&cursor, count * m->out_size, s, &g);
    c->status = m->status != NULL ? (int32_t *)carve(&cursor, count * sizeof(int32_t), s, &g) : NULL;

    s->first = lo;
    s->arg = (uint64_t)(uintptr_t)c->in;
    s->arg_size = m->in_size;
    s->res = (uint64_t)(uintptr_t)c->out;
    s->res_size = m->out_size;
    s->count = count;
    s->status = (uint64_t)(uintptr_t)c->status;
    publish(pp, o);
out:
    pthread_mutex_unlock(&pp->mu);
    cf__future_fire_list(list);
    return rc;
}

/*
 * Waits until the chunk at pos has ended. Besides its worker, the pool ends
 * it: when it breaks (every READY slot is failed then, and this wait looks
 * again at least every SLOT_NAP_NS in case it was woken before), or when
 * the chunk's word turns out written over (the pool breaks).
 */
static void wait_chunk(ppool *pp, uint64_t pos)
{
    cf__slot *s = slot_at(pp, pos);
    uint64_t started = cf__now_ns();
    bool spinning = true;
    for (;;) {
        uint64_t word = atomic_load_explicit(&s->word, memory_order_acquire);
        unsigned state = slot_state(pp, pos, word);
        if (ended(state))
            return;
        if (state != SLOT_CORRUPT && spinning && (spinning = cf__spin(started, CF__SPIN_WAIT_NS)))
            continue;
        cf_future *list = NULL;
        pthread_mutex_lock(&pp->mu);
        word = atomic_load_explicit(&s->word, memory_order_acquire);
        state = slot_state(pp, pos, word);
        if (state == SLOT_CORRUPT && !pp->corrupt)
            ring_corrupt(pp, &list);
        else if (!ended(state) && (pp->broken || state == SLOT_CORRUPT))
            fail_slot(pp, pos, CF_EBROKEN, 0);
        pthread_mutex_unlock(&pp->mu);
        cf__future_fire_list(list);
        word = cf__slot_flag(s, CF__SLOT_WAITER);
        state = slot_state(pp, pos, word);
        if (state == CF__SLOT_READY || state == CF__SLOT_RUNNING)
            cf__futex_wait(cf__low32(&s->word), (uint32_t)word, true, cf__now_ns() + SLOT_NAP_NS);
    }
}

/*
 * Waits for the chunk, copies its outputs and codes out, releases its slot.
 * Why the pool failed it, if it did, is read under mu: a pool that breaks
 * may fail a chunk whose worker has just finished it.
 */
static void collect_chunk(ppool *pp, pmap *m, const pchunk *c)
{
    wait_chunk(pp, c->pos);
    cf__slot *s = slot_at(pp, c->pos);
    pthread_mutex_lock(&pp->mu);
    owner o = pp->own[c->pos & pp->mask];
    pthread_mutex_unlock(&pp->mu);
    size_t done = c->count;
    int code = 0;                      /* of the elements that did not finish */
    if (o.failed) {
        uint64_t progress = atomic_load(&s->progress);
        done = progress < c->count ? (size_t)progress : c->count;
        code = o.fail_code;
    } else if (s->overrun != 0) {
        done = 0;
        code = CF_EOVERRUN;
    }
    uint64_t fail_index = s->fail_index;
    int fail_code = s->fail_code;
    if (!m->out_shared)
        memcpy(m->out + c->lo * m->out_size, c->out, done * m->out_size);
    if (m->status != NULL) {
        for (size_t i = 0; i < done; i++)
            m->status[c->lo + i] = c->status[i];
        for (size_t i = done; i < c->count; i++)
            m->status[c->lo + i] = code;
    }
    if (m->first_index == SIZE_MAX) {
        if (fail_index < done) {
            m->first_index = c->lo + (size_t)fail_index;
            m->first_code = fail_code;
        } else if (done < c->count) {
            /* A worker that died after its last element failed nothing. */
            m->first_index = c->lo + done;
            m->first_code = code;
        }
    }
    pthread_mutex_lock(&pp->mu);
    free_slot(pp, c->pos);
    pthread_mutex_unlock(&pp->mu);
}

static int pp_map(cf_executor *ex, cf_fn *fn, cf_chunk_fn *cfn, const char *in, size_t in_size,
                  char *out, size_t out_size, size_t n, size_t chunk, int *status)
{
    ppool *pp = pp_of(ex);
    uint64_t ref;
    int err = fn_ref(pp, fn != NULL ? (void *)fn : (void *)cfn, &ref);
    if (err != 0)
        return err;
    pmap m = {
        .fn = ref, .kind = fn != NULL ? CF__KIND_CHUNK : CF__KIND_CHUNK_FN,
        .in = in, .out = out, .in_size = in_size, .out_size = out_size, .n = n,
        .status = status, .first_index = SIZE_MAX,
        .in_shared = in_size == 0 || cf__shared_contains(in, n * in_size, pp->epoch),
        .out_shared = out_size == 0 || cf__shared_contains(out, n * out_size, pp->epoch),
    };
    size_t per = elem_bytes(&m);
    if (per > 0 && chunk > CHUNK_BYTES_MAX / per)
        chunk = CHUNK_BYTES_MAX / per > 0 ? CHUNK_BYTES_MAX / per : 1;
    m.chunk = chunk;
    if (chunk_bytes(&m, 1) > pp->arena.size)
        return CF_E2BIG;

    /* Enough chunks in flight to keep every worker fed while one is copied. */
    size_t depth = 2 * (size_t)ex->workers + 2;
    size_t bytes = chunk_bytes(&m, chunk);
    if (bytes > 0 && depth > pp->arena.size / 2 / bytes)
        depth = pp->arena.size / 2 / bytes > 0 ? pp->arena.size / 2 / bytes : 1;
    if (depth > NSLOTS / 2)
        depth = NSLOTS / 2;
    pchunk *ring = malloc(depth * sizeof *ring);
    if (ring == NULL)
        return CF_ENOMEM;

    pthread_mutex_lock(&pp->mu);
    bool closed = atomic_load(&ex->shut);
    if (!closed)
        pp->active_maps++;
    pthread_mutex_unlock(&pp->mu);
    if (closed) {
        free(ring);
        return CF_ESHUTDOWN;
    }

    size_t next = 0, head = 0, count = 0;
    int rc = 0;
    while (next < n || count > 0) {
        while (rc == 0 && next < n && count < depth) {
            size_t take = n - next < chunk ? n - next : chunk;
            int r = publish_chunk(pp, &m, &ring[(head + count) % depth], next, take, count == 0);
            if (r == 1)
                break;
            if (r != 0) {
                rc = r;
                break;
            }
            next += take;
            count++;
        }
        if (count == 0)
            break;
        collect_chunk(pp, &m, &ring[head]);
        head = (head + 1) % depth;
        count--;
    }
    free(ring);

    pthread_mutex_lock(&pp->mu);
    pp->active_maps--;
    bool last = pp->active_maps == 0 && atomic_load(&ex->shut);
    pthread_mutex_unlock(&pp->mu);
    if (last)
        notify_manager(pp);
    if (rc != 0) {
        /* Elements never published end with the reason (a broken pool). */
        for (size_t i = next; status != NULL && i < n; i++)
            status[i] = rc;
        if (m.first_index == SIZE_MAX) {
            m.first_index = next;
            m.first_code = rc;
        }
    }
    return m.first_index == SIZE_MAX ? 0 : m.first_code;
}

/* ---- workers: through the zygote --------------------------------------- */

static void fail_pending(ppool *pp, int code, cf_future **list);

static void tell(int sock, cf__zmsg m)
{
    while (sock >= 0 && send(sock, &m, sizeof m, MSG_NOSIGNAL) < 0 && errno == EINTR)
        ;
}

static void tell_zygote(ppool *pp, cf__zmsg m)
{
    tell(pp->zsock, m);
}

/*
 * One message from the zygote or the standby, without waiting, and the
 * descriptor it carries (tracked, as it is received: under the descriptor
 * lock), or -1. A descriptor the process has no room for is dropped by the
 * kernel: the message still comes. Returns what recvmsg does.
 */
static ssize_t recv_zmsg(int sock, cf__zmsg *m, int *fd)
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
    for (struct cmsghdr *c = got > 0 ? CMSG_FIRSTHDR(&mh) : NULL; c != NULL; c = CMSG_NXTHDR(&mh, c)) {
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS || c->cmsg_len != CMSG_LEN(sizeof(int)))
            continue;
        int got_fd;
        memcpy(&got_fd, CMSG_DATA(c), sizeof got_fd);
        if (*fd >= 0 || cf__fd_track(got_fd) != 0)
            close(got_fd);    /* one per message at most; and none we cannot track */
        else
            *fd = got_fd;
    }
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
static void request_worker(ppool *pp, unsigned wid)
{
    pp->w[wid].pid = -1;
    pp->wrecs[wid].init_code = 0;
    atomic_store(&pp->wrecs[wid].state, CF__WREC_STARTING);
    atomic_store(&pp->wrecs[wid].cur, 0);
    tell_zygote(pp, (cf__zmsg){.type = CF__Z_SPAWN, .wid = wid});
}

/* Under mu: asks the zygote for a standby. */
static void request_standby(ppool *pp)
{
    pp->standby_asked = true;
    tell_zygote(pp, (cf__zmsg){.type = CF__Z_STANDBY});
}

/* Under mu: a worker has ended. Fails its task; the manager loop replaces it. */
static void handle_death(ppool *pp, unsigned wid, int status, cf_future **list)
{
    pworker *w = &pp->w[wid];
    int sig = WIFSIGNALED(status) ? WTERMSIG(status) : 0;
    bool init_failed = WIFEXITED(status) && WEXITSTATUS(status) == CF__EXIT_INIT_FAILED &&
                       atomic_load(&pp->wrecs[wid].state) == CF__WREC_FAILED;
    uint64_t bit = (uint64_t)1 << (wid % 64);

    atomic_fetch_and(&pp->h->spinning[wid / 64], ~bit);
    atomic_fetch_and(&pp->h->sleeping[wid / 64], ~bit);
    for (uint64_t pos = pp->lo; pos < pp->tail; pos++) {
        cf__slot *s = slot_at(pp, pos);
        uint64_t word = atomic_load(&s->word);
        /* It may have died between marking a slot done and waking its waiter. */
        if (word & CF__SLOT_WAITER)
            cf__futex_wake(cf__low32(&s->word), INT_MAX, true);
        if (CF__W_POS(word) != (uint32_t)pos || CF__W_STATE(word) != CF__SLOT_RUNNING ||
            CF__W_WID(word) != wid)
            continue;
        if (w->kill_pos == pos)
            fail_slot(pp, pos, w->kill_code, 0);
        else
            fail_slot(pp, pos, CF_ECRASHED, sig);
    }
    cf__fd_close(w->pidfd);
    w->pidfd = -1;
    w->pid = 0;
    w->kill_pos = UINT64_MAX;
    w->kill_pending = false;
    w->retired = w->retired || init_failed;
    pp->live--;
    reap_done(pp, list);
}

/* Under mu: what creation should answer when a starting worker ended. */
static int start_failure(const ppool *pp, unsigned wid, int status)
{
    if (atomic_load(&pp->wrecs[wid].state) == CF__WREC_FAILED)
        return pp->wrecs[wid].init_code;
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
static bool zygote_news(ppool *pp, cf_future **list)
{
    if (pp->zsock < 0)
        return true;    /* none since the pool broke */
    for (;;) {
        cf__zmsg m;
        int fd;
        ssize_t got = recv_zmsg(pp->zsock, &m, &fd);
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
        if (m.wid >= pp->base.workers || (fd >= 0 && m.type != CF__Z_SPAWNED)) {
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
            break;
        case CF__Z_FAILED:
            w->pid = 0;
            w->retry_at = cf__now_ns() + (uint64_t)RETRY_MS * 1000000u;
            if (!pp->created && pp->create_error == 0)
                pp->create_error = m.status;
            break;
        case CF__Z_DIED:
            if (!pp->created && pp->create_error == 0)
                pp->create_error = start_failure(pp, m.wid, m.status);
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
static bool standby_gone(ppool *pp)
{
    if (pp->standby_dead)
        return true;
    for (;;) {
        cf__zmsg m;
        int fd;
        ssize_t got = pp->ssock >= 0 ? recv_zmsg(pp->ssock, &m, &fd) : -1;
        if (pp->ssock < 0 || (got < 0 && errno == EAGAIN))
            return false;
        cf__fd_close(fd);    /* a standby says nothing: whatever came is dropped */
        if (got <= 0)
            return true;
    }
}

/* Without mu: reaps the dead standby; the manager loop asks for another. */
static void standby_lost(ppool *pp)
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

/*
 * Without mu: the zygote is gone, and with it every worker: their running
 * tasks fail CF_ECRASHED, and the standby takes the zygote's place (the
 * manager loop then asks it for workers and a standby of its own). Without
 * a standby the pool is broken.
 */
static void zygote_lost(ppool *pp, cf_future **list)
{
    int pidfds[CF__MAX_WORKERS];
    unsigned n = 0;
    pthread_mutex_lock(&pp->mu);
    int sock = pp->zsock;
    pid_t pid = pp->zpid;
    pp->zsock = -1;
    pp->zpid = 0;
    for (unsigned i = 0; i < pp->base.workers; i++)
        if (pp->w[i].pid > 0 && pp->w[i].pidfd >= 0)
            pidfds[n++] = pp->w[i].pidfd;
    pthread_mutex_unlock(&pp->mu);
    cf__fd_close(sock);
    reap_child(pid);
    kill_orphans(pidfds, n);    /* the pidfds stay open until handle_death closes them */

    pthread_mutex_lock(&pp->mu);
    for (unsigned i = 0; i < pp->base.workers; i++) {
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
        for (unsigned i = 0; i < pp->base.workers; i++)
            pp->w[i].retired = true;
        pp->broken = true;
        fail_pending(pp, CF_EBROKEN, list);
    }
    pthread_mutex_unlock(&pp->mu);
}

/* ---- the manager thread ------------------------------------------------- */

/* Under mu: fails every task still waiting for a worker. */
static void fail_pending(ppool *pp, int code, cf_future **list)
{
    for (uint64_t pos = pp->lo; pos < pp->tail; pos++) {
        cf__slot *s = slot_at(pp, pos);
        uint64_t word = atomic_load(&s->word);
        if (CF__W_POS(word) != (uint32_t)pos || CF__W_STATE(word) != CF__SLOT_READY)
            continue;
        /* Claimed by the pool in its worker's stead: no worker takes it now. */
        if (cf__slot_claim(s, &word, CF__W_WID(word)))
            fail_slot(pp, pos, code, 0);
    }
    reap_done(pp, list);
}

/* Under mu: is there a finished slot the manager should collect now? */
static bool work_for_manager(ppool *pp)
{
    bool all = atomic_load(&pp->h->notify_all);
    for (uint64_t pos = pp->lo; pos < pp->tail; pos++) {
        owner *o = &pp->own[pos & pp->mask];
        if (!o->busy || o->chunk)
            continue;
        uint64_t word = atomic_load(&slot_at(pp, pos)->word);
        unsigned state = slot_state(pp, pos, word);
        if (state == SLOT_CORRUPT || (ended(state) && (all || (word & CF__SLOT_NOTIFY))))
            return true;
    }
    return false;
}

static bool all_ready(ppool *pp)
{
    for (unsigned i = 0; i < pp->base.workers; i++)
        if (atomic_load(&pp->wrecs[i].state) != CF__WREC_READY)
            return false;
    return true;
}

/* Starts the zygote, its standby and every worker, and waits until each worker has run its initializer. */
static int start_workers(ppool *pp)
{
    cf__launch l = {
        .h = pp->h, .opts = &pp->base.opts, .death_fd = pp->death[0], .death_wr = pp->death[1],
        .efd = pp->efd, .mask = pp->caller_mask, .exec = pp->exec,
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
    for (unsigned i = 0; i < pp->base.workers; i++)
        request_worker(pp, i);
    request_standby(pp);    /* made while the workers run their initializers */
    while (pp->create_error == 0 && !(all_ready(pp) && pp->ssock >= 0)) {
        pthread_mutex_unlock(&pp->mu);
        struct pollfd pfd = {.fd = pp->zsock, .events = POLLIN};
        uint32_t seen = atomic_load(&pp->h->ready);
        if (poll(&pfd, 1, 0) == 0)
            cf__futex_wait(&pp->h->ready, seen, true, cf__now_ns() + 10000000u);
        pthread_mutex_lock(&pp->mu);
        if (!zygote_news(pp, &list) && pp->create_error == 0)
            pp->create_error = CF_EAGAIN;
        if (standby_gone(pp) && pp->create_error == 0)
            pp->create_error = CF_EAGAIN;
    }
    rc = pp->create_error;
    pthread_mutex_unlock(&pp->mu);
    cf__future_fire_list(list);
    return rc;
}

/*
 * Ends the zygote (which kills and reaps its workers) and the standby. The
 * zygote's last messages are read to its EOF: a standby it made meanwhile
 * is told to quit and reaped too.
 */
static void stop_zygote(ppool *pp)
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
        ssize_t got = recv_zmsg(pp->zsock, &m, &fd);
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
    for (unsigned i = 0; pp->w != NULL && i < pp->base.workers; i++) {
        cf__fd_close(pp->w[i].pidfd);
        pp->w[i].pidfd = -1;
    }
}

/* Under mu: closes the pool once nothing is left to run. */
static void maybe_close(ppool *pp)
{
    if (!atomic_load(&pp->base.shut) || pp->inflight > 0 || pp->active_maps > 0 || pp->exit_sent)
        return;
    pp->exit_sent = true;
    cf__idle_close(pp->h);
}

static int sooner(int poll_ms, uint64_t at, uint64_t now)
{
    int left = (int)((at - now) / 1000000u) + 1;
    return poll_ms < 0 || left < poll_ms ? left : poll_ms;
}

/* Under mu: passes kills on, starts replacements and the standby; returns a poll timeout. */
static int tend_workers(ppool *pp, uint64_t now)
{
    int timeout_ms = pp->base.opts.task_timeout_ms, poll_ms = timeout_ms > 0 ? timeout_ms : -1;
    bool wanted = !pp->exit_sent && !pp->broken && pp->zsock >= 0;
    if (wanted && pp->spid == 0 && !pp->standby_asked) {
        if (now >= pp->standby_retry_at)
            request_standby(pp);
        else
            poll_ms = sooner(poll_ms, pp->standby_retry_at, now);
    }
    for (unsigned i = 0; i < pp->base.workers; i++) {
        pworker *w = &pp->w[i];
        if (w->pid == 0 && !w->retired && wanted) {
            if (now >= w->retry_at)
                request_worker(pp, i);
            else
                poll_ms = sooner(poll_ms, w->retry_at, now);
        }
        if (w->pid <= 0)
            continue;
        uint64_t cur = atomic_load(&pp->wrecs[i].cur);
        if (timeout_ms > 0 && cur != 0 && w->kill_pos == UINT64_MAX) {
            uint64_t limit = atomic_load(&pp->wrecs[i].start_ns) + (uint64_t)timeout_ms * 1000000u;
            if (now >= limit) {
                w->kill_pos = cur - 1;
                w->kill_code = CF_ETIMEDOUT;
                w->kill_pending = true;
            } else {
                poll_ms = sooner(poll_ms, limit, now);
            }
        }
        if (w->kill_pending) {
            w->kill_pending = false;
            tell_zygote(pp, (cf__zmsg){.type = CF__Z_KILL, .wid = i, .pid = w->pid, .pos = w->kill_pos});
        }
    }
    return poll_ms;
}

static void *manager_main(void *arg)
{
    ppool *pp = arg;
    int rc = start_workers(pp);
    pthread_mutex_lock(&pp->mu);
    pp->created = true;
    if (rc != 0) {
        pp->create_error = rc;
        pp->finished = true;
    }
    pthread_cond_broadcast(&pp->changed);
    pthread_mutex_unlock(&pp->mu);
    if (rc != 0) {
        stop_zygote(pp);    /* it kills and reaps the workers it started */
        return NULL;
    }

    for (;;) {
        cf_future *list = NULL;
        pthread_mutex_lock(&pp->mu);
        bool zlost = !zygote_news(pp, &list);
        bool slost = standby_gone(pp);
        pthread_mutex_unlock(&pp->mu);
        if (slost)
            standby_lost(pp);
        if (zlost)
            zygote_lost(pp, &list);
        pthread_mutex_lock(&pp->mu);
        reap_done(pp, &list);
        bool all_retired = true;
        for (unsigned i = 0; i < pp->base.workers; i++)
            all_retired = all_retired && pp->w[i].retired;
        if (all_retired && !pp->broken) {
            pp->broken = true;
            fail_pending(pp, CF_EBROKEN, &list);
        }
        if (!pp->corrupt && !header_intact(pp))
            ring_corrupt(pp, &list);
        if (pp->corrupt && !pp->quit_sent) {
            pp->quit_sent = true;
            tell_zygote(pp, (cf__zmsg){.type = CF__Z_QUIT});
        }
        maybe_close(pp);
        bool over = pp->exit_sent && pp->live == 0;
        int poll_ms = over ? 0 : tend_workers(pp, cf__now_ns());
        /* Work in flight: look at the region now and then (header_intact). */
        if (!over && (pp->inflight > 0 || pp->active_maps > 0 || pp->exit_sent) &&
            (poll_ms < 0 || poll_ms > HEALTH_MS))
            poll_ms = HEALTH_MS;
        atomic_store(&pp->h->mgr_sleeping, 1);
        bool busy = over || work_for_manager(pp);
        int zsock = pp->zsock, ssock = pp->ssock;
        pthread_mutex_unlock(&pp->mu);
        cf__future_fire_list(list);
        if (over)
            break;

        struct pollfd pfd[3] = {
            {.fd = pp->efd, .events = POLLIN}, {.fd = zsock, .events = POLLIN}, {.fd = ssock, .events = POLLIN},
        };
        if (!busy)
            poll(pfd, 3, poll_ms);
        atomic_store(&pp->h->mgr_sleeping, 0);
        uint64_t drained;
        if (pfd[0].revents & POLLIN)
            while (read(pp->efd, &drained, sizeof drained) < 0 && errno == EINTR)
                ;
    }
    stop_zygote(pp);
    pthread_mutex_lock(&pp->mu);
    pp->finished = true;
    pthread_cond_broadcast(&pp->changed);
    pthread_mutex_unlock(&pp->mu);
    return NULL;
}

/* ---- lifecycle --------------------------------------------------------- */

static int pp_shutdown(cf_executor *ex, bool wait, bool cancel_pending)
{
    ppool *pp = pp_of(ex);
    cf_future *list = NULL;
    pthread_mutex_lock(&pp->mu);
    for (uint64_t pos = pp->lo; cancel_pending && pos < pp->tail; pos++) {
        owner *o = &pp->own[pos & pp->mask];
        cf__slot *s = slot_at(pp, pos);
        uint64_t word = atomic_load(&s->word);
        if (!o->busy || o->chunk || slot_state(pp, pos, word) != CF__SLOT_READY)
            continue;
        if (cf__slot_cancel(s, &word))
            release_task(pp, pos, word, &list);
    }
    pp->notify_all = true;
    atomic_store(&pp->h->notify_all, 1);
    maybe_close(pp);    /* idle workers leave now, without a hop through the manager */
    pthread_mutex_unlock(&pp->mu);
    cf__future_fire_list(list);
    notify_manager(pp);
    if (wait) {
        pthread_mutex_lock(&pp->mu);
        while (!pp->finished)
            pthread_cond_wait(&pp->changed, &pp->mu);
        pthread_mutex_unlock(&pp->mu);
    }
    return 0;
}

static void release_all(ppool *pp, bool manager)
{
    if (manager)
        pthread_join(pp->mgr, NULL);
    stop_zygote(pp);
    cf__fd_close(pp->efd);
    cf__fd_close(pp->death[0]);
    cf__fd_close(pp->death[1]);
    cf__fd_close(pp->map_fd);
    if (pp->h != NULL)
        cf__shm_unmap(pp->h, pp->map_size, -1);
    cf__arena_fini(&pp->arena);
    cf__modtab_free(&pp->mods);
    free(pp->own);
    free(pp->ifree);
    free(pp->w);
    pthread_mutex_destroy(&pp->mu);
    pthread_cond_destroy(&pp->changed);
    cf__executor_release(&pp->base);
    free(pp);
}

static void pp_destroy(cf_executor *ex)
{
    release_all(pp_of(ex), true);
}

static const cf__ops process_ops = {
    .name = "process",
    .submit = pp_submit,
    .map = pp_map,
    .cancel = pp_cancel,
    .wait = pp_wait,
    .watch = pp_watch,
    .running = pp_running,
    .shutdown = pp_shutdown,
    .destroy = pp_destroy,
    .max_size = ARENA_SIZE / 2,
};

static size_t round_page(size_t n)
{
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    return (n + page - 1) & ~(page - 1);
}

static int map_region(ppool *pp)
{
    unsigned n = pp->base.workers;
    size_t control = round_page(CF__HDR_BYTES + NSLOTS * sizeof(cf__slot) + n * sizeof(cf__wrec));
    size_t inline_bytes = round_page((size_t)NSLOTS * CF__INLINE_STRIDE);
    pp->map_size = control + inline_bytes + ARENA_SIZE;
    char *base = cf__shm_map(pp->map_size, &pp->map_fd);
    if (base == NULL)
        return errno == ENOSYS ? CF_ENOSYS : CF_ENOMEM;
    pp->h = (cf__shm_hdr *)base;
    pp->slots = pp->h->slots = cf__slots_of(pp->h);
    pp->wrecs = pp->h->wrecs = cf__wrecs_of(pp->h);
    pp->h->magic = CF__RING_MAGIC;
    pp->h->version = CF__RING_VERSION;
    pp->h->size = pp->map_size;
    pp->inline_base = base + control;
    pp->arena_base = base + control + inline_bytes;
    pp->h->nslots = NSLOTS;
    pp->h->nworkers = n;
    pp->h->timed = pp->base.opts.task_timeout_ms > 0;
    pp->h->max_tasks = pp->base.opts.max_tasks_per_worker;
    pp->mask = NSLOTS - 1;
    /* Buffer 0 on top: a pool fed one task at a time reuses one warm buffer. */
    for (uint32_t i = 0; i < NSLOTS; i++)
        pp->ifree[i] = NSLOTS - 1 - i;
    pp->nifree = NSLOTS;
    /*
     * The slots and inline buffers stay untouched (zero) until first used:
     * nobody reads a slot past the tail, and writing all of them now would
     * fault in their pages, a quarter of the cost of a pool's creation. An
     * inline buffer's guard is armed at the buffer's first use.
     */
    return cf__arena_init(&pp->arena, ARENA_SIZE);
}

/* Copies bytes into a new arena block; its address, or 0. */
static uint64_t stash(ppool *pp, const void *bytes, size_t size)
{
    size_t off = cf__arena_alloc(&pp->arena, size);
    if (off == SIZE_MAX)
        return 0;
    memcpy(pp->arena_base + off, bytes, size);
    return (uint64_t)(uintptr_t)(pp->arena_base + off);
}

/* Exec start method: everything a worker needs at boot, in the arena. */
static int write_exec_boot(ppool *pp)
{
    int rc = cf__modtab_build(&pp->mods);
    if (rc != 0)
        return rc;
    cf__exec_boot b = {.mask = pp->caller_mask, .nmods = pp->mods.n};
    if (pp->base.opts.initializer != NULL &&
        cf__fnref_encode(&pp->mods, NULL, (void *)pp->base.opts.initializer, &b.init_ref) != 0)
        return CF_EINVAL;
    if (pp->base.opts.initargs_size > 0 &&
        (b.initargs = stash(pp, pp->base.opts.initargs, pp->base.opts.initargs_size)) == 0)
        return CF_ENOMEM;
    b.initargs_size = pp->base.opts.initargs_size;

    size_t n = cf__shared_list(NULL, 0, pp->epoch);
    if (n > 0) {
        size_t off = cf__arena_alloc(&pp->arena, n * sizeof(cf__shared_region));
        if (off == SIZE_MAX)
            return CF_ENOMEM;
        cf__shared_region *regions = (cf__shared_region *)(pp->arena_base + off);
        /* Regions are only ever added with later epochs: the count holds. */
        b.nshared = (uint32_t)cf__shared_list(regions, n, pp->epoch);
        b.shared = (uint64_t)(uintptr_t)regions;
    }

    size_t names = 0;
    for (unsigned i = 0; i < pp->mods.n; i++)
        names += strlen(pp->mods.mods[i].name) + 1;
    size_t off = cf__arena_alloc(&pp->arena, names);
    if (off == SIZE_MAX)
        return CF_ENOMEM;
    char *p = pp->arena_base + off;
    b.names = (uint64_t)(uintptr_t)p;
    for (unsigned i = 0; i < pp->mods.n; i++)
        p = stpcpy(p, pp->mods.mods[i].name) + 1;
    if ((pp->h->boot = stash(pp, &b, sizeof b)) == 0)
        return CF_ENOMEM;
    pp->boot = pp->h->boot;
    return 0;
}

/*
 * Makes the pool's own descriptors (its memfd, eventfd and death pipe), each
 * tracked as one step with its creation, so that no zygote another thread
 * forks meanwhile keeps one of them. A descriptor that cannot be tracked is
 * closed at once.
 */
static int open_fds(ppool *pp)
{
    int rc;
    cf__fd_lock();
    if ((rc = map_region(pp)) == 0 && (rc = cf__fd_track(pp->map_fd)) != 0) {
        close(pp->map_fd);
        pp->map_fd = -1;
    }
    if (rc == 0) {
        pp->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        if (pp->efd < 0 || pipe2(pp->death, O_CLOEXEC) != 0)
            rc = errno == EMFILE || errno == ENFILE ? CF_EAGAIN : CF_ENOMEM;
    }
    int *own[] = {&pp->efd, &pp->death[0], &pp->death[1]};
    for (unsigned i = 0; i < sizeof own / sizeof *own; i++) {
        if (*own[i] >= 0 && (rc != 0 || (rc = cf__fd_track(*own[i])) != 0)) {
            close(*own[i]);
            *own[i] = -1;
        }
    }
    cf__fd_unlock();
    return rc;
}

int cf__process_pool_create(cf_executor **out, const cf_options *opts)
{
    ppool *pp = calloc(1, sizeof *pp);
    if (pp == NULL)
        return CF_ENOMEM;
    pp->efd = pp->death[0] = pp->death[1] = pp->zsock = pp->ssock = pp->map_fd = -1;
    if (pthread_mutex_init(&pp->mu, NULL) != 0 || pthread_cond_init(&pp->changed, NULL) != 0)
        abort();
    int rc = cf__executor_init(&pp->base, &process_ops, opts);
    if (rc != 0)
        goto fail;
    pp->exec = pp->base.opts.start == CF_START_EXEC;
    if (pp->exec && cf__exec_forbidden()) {
        rc = CF_EINVAL;
        goto fail;
    }
    pp->own = calloc(NSLOTS, sizeof *pp->own);
    pp->ifree = calloc(NSLOTS, sizeof *pp->ifree);
    pp->w = calloc(pp->base.workers, sizeof *pp->w);
    for (unsigned i = 0; pp->w != NULL && i < pp->base.workers; i++) {
        pp->w[i].kill_pos = UINT64_MAX;
        pp->w[i].pidfd = -1;
    }
    if (pp->own == NULL || pp->ifree == NULL || pp->w == NULL) {
        rc = CF_ENOMEM;
        goto fail;
    }
    pp->epoch = cf__shared_epoch();
    if ((rc = open_fds(pp)) != 0)
        goto fail;
    pthread_sigmask(SIG_SETMASK, NULL, &pp->caller_mask);
    if (pp->exec && (rc = write_exec_boot(pp)) != 0)
        goto fail;

    /* The manager runs with every signal blocked; the workers get the mask
     * the caller has now. */
    sigset_t all;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, NULL);
    int err = pthread_create(&pp->mgr, NULL, manager_main, pp);
    pthread_sigmask(SIG_SETMASK, &pp->caller_mask, NULL);
    if (err != 0) {
        rc = CF_EAGAIN;
        goto fail;
    }
    pthread_mutex_lock(&pp->mu);
    while (!pp->created)
        pthread_cond_wait(&pp->changed, &pp->mu);
    rc = pp->create_error;
    pthread_mutex_unlock(&pp->mu);
    if (rc != 0) {
        release_all(pp, true);
        return rc;
    }
    *out = &pp->base;
    return 0;
fail:
    release_all(pp, false);
    return rc;
}
