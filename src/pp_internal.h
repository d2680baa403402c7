/*
 * pp_internal.h — the process pool's private state, shared by the files of
 * the process backend (process_pool.c, pp_ring.c, pp_map.c, pp_manager.c,
 * pp_zygote.c) and by nothing else. Never installed.
 *
 * The region's layout, which the workers and the zygote share, is in
 * ring.h; what is here lives in the caller's private memory only, and is
 * what the pool trusts: where each slot's data is, whose it is, and why
 * the pool failed it (owner), and its view of each worker (pworker).
 *
 * Locking: pp->mu guards everything in struct ppool that is not marked
 * otherwise (ring cursors, owners, arena, inline buffers, worker table, the
 * zygote's and standby's sockets). A future's lock, and the descriptor lock
 * (launcher.c), may be taken under it, never the other way round. Nothing
 * blocking is done under it except a memcpy into a slot; futures are fired,
 * dead zygotes and standbys reaped, after it is released: a function that
 * may finish futures takes its caller's list (cf_future **list, the finish
 * protocol of internal.h), which the caller fires once it released mu.
 * Functions say "under mu" when their caller must hold it.
 */
#ifndef CF_PP_INTERNAL_H
#define CF_PP_INTERNAL_H

#include "ring.h"

#include <errno.h>
#include <string.h>
#include <unistd.h>

#define NSLOTS          CF__NSLOTS              /* ring size K, a power of two */
#define SLOT_NAP_NS     100000000u              /* re-check period of a blocked submitter */
#define SLOT_CORRUPT    CF__SLOT_CORRUPT        /* slot_state: the word cannot be the slot's */

typedef struct owner {
    cf_future *f;            /* the task's future; NULL for a chunk or once cancelled */
    char      *res;          /* task: where its worker writes the result */
    size_t     block;        /* arena block to release with the slot */
    size_t     block_size;   /* 0: none */
    uint32_t   ibuf;         /* inline buffer + 1; 0: none */
    int        fail_code;    /* failed: why the pool ended it */
    int        fail_sig;
    int        timeout_ms;   /* task: its own limit (cf_submit_with), 0: the pool's, -1: none */
    bool       busy;         /* published and not yet released */
    bool       chunk;        /* released by the cf_map call that owns it */
    const cf__map *map;      /* a chunk's map, for cf_future_cancel */
    bool       failed;       /* ended by the pool (its worker died, or the pool broke) */
    bool       unstarted;    /* failed: no worker had taken it */
    uint64_t   run_seen;     /* task: when the manager first saw it RUNNING, 0: not yet */
} owner;

/* A task's state in its future (cf_future.part). */
typedef struct pfuture {
    uint64_t pos;            /* ring position of its slot, set at publication */
} pfuture;

typedef struct pworker {
    pid_t    pid;            /* 0: no process; -1: asked of the zygote */
    int      pidfd;          /* from the zygote, to kill it should the zygote die; or -1 */
    uint64_t kill_pos;       /* position the pool wants killed, UINT64_MAX: none */
    int      kill_code;      /* CF_ETIMEDOUT or CF_ECANCELED */
    bool     kill_pending;   /* the manager has yet to pass kill_pos on */
    bool     retired;        /* not started again: a replacement's initializer failed,
                                or it died starting START_DEATHS_MAX times in a row */
    uint64_t retry_at;       /* when to ask again after a failed start */
    unsigned start_deaths;   /* deaths in a row before its initializer returned */
    bool     unwatched;      /* its pidfd never came: ended at once, started again later */
    uint64_t look_pos;       /* the task being looked at (pp_stuck.c), UINT64_MAX: none */
    uint64_t look_at;        /* when to look whether it waits for ever */
    uint64_t wait_pos;       /* the task seen waiting at the last look, UINT64_MAX: none */
    uint64_t wait_word;      /* and the private futex word it waited on */
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
    _Atomic(void *) quick_fn;    /* the map function whose last map here (automatic
                                    chunks, no failure) ran every chunk short (pp_map.c) */
    pworker        *w;           /* by worker id; CF__MAX_WORKERS of them */
    unsigned        target;      /* workers the manager keeps running: ids [0, target) */
    unsigned        spin_max;    /* the header's spin_max, as written */
    unsigned        wused;       /* ids [0, wused) were ever wanted: the tables' live part */
    unsigned        live;        /* workers started and not yet reported dead */
    bool            broken;      /* no worker can be started any more */
    bool            corrupt;     /* a worker wrote over the control data */
    bool            quit_sent;   /* corrupt: the zygote was told to end every worker */
    uint64_t        ring_look_at;    /* the manager's next look behind the head (pp_manager.c) */
    uint64_t        closed_at;   /* when the manager saw the close sent with workers left, 0: not yet */
    bool            notify_all;  /* what h->notify_all must hold */
    bool            exec;        /* CF_START_EXEC */
    bool            at_guard;    /* exec: workers start at the program's cf_main_guard */
    bool            mgr_idle;    /* the manager sleeps with no deadline: the next publish wakes it */
    cf__ringer      ringer;      /* the publisher's last rings (cf__idle_ring_for) */
    bool            threaded;    /* the caller had other threads at creation */
    bool            stopping;    /* cf_shutdown_now: nothing more is published */
    bool            drop_maps;   /* cf_shutdown cancel_pending: no more map chunks */
    unsigned        timed;       /* published tasks with a limit of their own, */
    int             timed_min_ms;    /* and the shortest of them since timed was 0 */
    bool            saw_stuck;   /* a task of this pool waited for ever on a lock, */
    uint64_t        stuck_word;  /* the last such lock's word */
    cf__modtab      mods;        /* exec: objects function pointers may live in */
    int             efd;
    int             death[2];
    int             zsock;       /* the manager's end of the zygote's socket; -1: none */
    pid_t           zpid;
    int             ssock;       /* the manager's end of the standby's socket; -1: none */
    pid_t           spid;        /* the standby; 0: none */
    bool            standby_asked;   /* the zygote was asked for one and has not answered */
    bool            zsock_full;      /* a request did not fit in the zygote's socket: ask again */
    bool            standby_dead;    /* it came without its socket: to be reaped */
    uint64_t        standby_retry_at;
    pthread_t       mgr;
    bool            created, exit_sent, finished;
    int             create_error;
    uint64_t        epoch;
    sigset_t        caller_mask;
} ppool;

static inline ppool *pp_of(cf_executor *ex)
{
    return (ppool *)ex;
}

static inline pfuture *pf_of(cf_future *f)
{
    return CF__FUTURE_PART(f, pfuture);
}

static inline cf__slot *slot_at(const ppool *pp, uint64_t pos)
{
    return &pp->slots[pos & pp->mask];
}

static inline char *inline_buf(const ppool *pp, uint32_t i)
{
    return pp->inline_base + (size_t)i * CF__INLINE_STRIDE;
}

static inline void arm_guard(char *p, size_t n)
{
    memset(p, CF__GUARD_BYTE, n);
}

static inline void notify_manager(ppool *pp)
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
 * produce for pos (its position, known flags, a worker id the tables hold, a
 * state other than FREE), else SLOT_CORRUPT. A word that passes may still be
 * a forgery, but every field of it is then safe to use. Called without mu
 * too, so the id is checked against the tables' size, which never changes,
 * not against wused, which a resize raises.
 */
static inline unsigned slot_state(const ppool *pp, uint64_t pos, uint64_t word)
{
    (void)pp;
    return cf__slot_check(word, pos, CF__MAX_WORKERS);
}

static inline bool ended(unsigned state)
{
    return state == CF__SLOT_DONE || state == CF__SLOT_CANCELLED;
}

static inline size_t align16(size_t n)
{
    return (n + 15) & ~(size_t)15;
}

static inline size_t align64(size_t n)
{
    return (n + 63) & ~(size_t)63;
}

/* The first busy slot (published, not yet released) at or after pos, or the tail. */
static inline uint64_t busy_from(const ppool *pp, uint64_t pos)
{
    while (pos < pp->tail && !pp->own[pos & pp->mask].busy)
        pos++;
    return pos;
}

/*
 * Under mu: every busy slot, oldest first: the one walk over the live part
 * of the ring. The body may release the slot at pos; it must publish none.
 */
#define FOR_EACH_BUSY(pp, pos) \
    for (uint64_t pos = busy_from((pp), (pp)->lo); pos < (pp)->tail; pos = busy_from((pp), pos + 1))

/* ---- pp_ring.c: the caller's side of the ring (under mu) --------------- */

/* Frees the busy slot at pos: its data, its owner, its word (sleepers woken). */
void cf__pp_free_slot(ppool *pp, uint64_t pos);
/* Copies a finished task's outcome into its future (pushed on list if it
 * finished it) and frees the slot; word was checked by slot_state. */
void cf__pp_release_task(ppool *pp, uint64_t pos, uint64_t word, cf_future **list);
/* Ends the busy slot at pos for the pool (its worker died, or none will take it). */
void cf__pp_fail_slot(ppool *pp, uint64_t pos, int code, int sig);
/* Releases every finished task slot; chunks are left to their cf_map call. */
void cf__pp_reap_done(ppool *pp, cf_future **list);
/* A worker wrote over the control data: the pool breaks at once. */
void cf__pp_ring_corrupt(ppool *pp, cf_future **list);
/*
 * Room to publish, under the admission rule, waiting (and dropping mu) if
 * `block`: an arena block of size bytes (none for 0) and the slot at the
 * tail; both or neither. On 0, *o is the tail's owner record, cleared but
 * for the block, for the caller to fill before cf__pp_publish. 0, 1 (not
 * blocking and no room now), or a CF_E* code.
 */
int  cf__pp_reserve(ppool *pp, size_t size, bool chunk, bool block, owner **o, cf_future **list);
/* Resets the descriptor of the slot about to be published. */
void cf__pp_prepare(cf__slot *s, uint32_t kind, uint64_t fn);
/* Publishes the slot at the tail, owned as its record says, and wakes a worker if needed. */
void cf__pp_publish(ppool *pp);
/* Not under mu: how the workers find a function (its address, or (object,
 * offset) for exec workers). 0 or CF_EINVAL. */
int  cf__pp_fn_ref(const ppool *pp, void *code, uint64_t *ref);

/* ---- pp_map.c ---------------------------------------------------------- */

int  cf__pp_map(cf_executor *ex, cf__map *ctl, cf_fn *fn, cf_chunk_fn *cfn, const char *in,
                size_t in_size, char *out, size_t out_size, size_t n, size_t chunk, int *status);

/* ---- pp_manager.c ------------------------------------------------------ */

#define RETRY_MS 100    /* after a worker or the standby failed to start */
#define START_DEATHS_MAX 3    /* a worker id that died this often while starting is retired */

/* The manager thread: starts the workers, then tends the pool until it closes. */
void *cf__pp_manager_main(void *arg);
/* Under mu: closes the pool once nothing is left to run. */
void cf__pp_maybe_close(ppool *pp);
/* Under mu: fails every task still waiting for a worker with code. */
void cf__pp_fail_pending(ppool *pp, int code, cf_future **list);

/* ---- pp_stuck.c: a worker that waits for ever ---------------------------- */

/* The threads of process pid (0: this one), or -1 if /proc cannot tell. */
long cf__pp_thread_count(pid_t pid);
/*
 * Does process pid consist of one thread asleep on a private futex word with
 * no timeout, which nothing can wake? Then true, and the word's address.
 */
bool cf__pp_waits_forever(pid_t pid, uint64_t *word);

/* ---- pp_zygote.c: the manager's side of the zygote protocol ------------- */

/* Under mu: sends m without blocking; false when the socket is full (ask again later). */
bool cf__pp_tell_zygote(ppool *pp, cf__zmsg m);
/* Under mu: asks for a worker with id wid / for a standby (false, not asked, if full). */
bool cf__pp_request_worker(ppool *pp, unsigned wid);
void cf__pp_request_standby(ppool *pp);
/* Under mu: reads the zygote's news; false when it is gone. */
bool cf__pp_zygote_news(ppool *pp, cf_future **list);
/* Under mu: true when the standby is gone. */
bool cf__pp_standby_gone(ppool *pp);
/* Not under mu: reaps the dead standby. */
void cf__pp_standby_lost(ppool *pp);
/* Not under mu: the zygote died: its workers are killed and reaped, their tasks fail, the standby is promoted. */
void cf__pp_zygote_lost(ppool *pp, cf_future **list);
/* Not under mu, in the manager thread, the zygote reaped: a standby it never reported is killed and reaped. */
void cf__pp_reap_unreported(pid_t standby);
/* Reads a small /proc file into buf, NUL-terminated, its descriptor open
 * only under the descriptor lock (no fork inherits it): its length, or -1. */
ssize_t cf__pp_read_proc(const char *path, char *buf, size_t size);
/* Not under mu: starts the zygote, the workers and the standby; 0 or why not. */
int  cf__pp_start_workers(ppool *pp);
/* Not under mu: ends the zygote (and its workers) and the standby, and reaps them. */
void cf__pp_stop_zygote(ppool *pp);

#endif /* CF_PP_INTERNAL_H */
