/*
 * pp_manager.c — the process pool's manager thread: its loop, the workers'
 * reconciliation, task timeouts, the region's health, and the pool's close.
 *
 * The manager thread forks the pool's zygote (launcher.c) and is the one
 * thread that talks to it; the conversation itself (requests, news, the
 * zygote's death and the standby's promotion) is in pp_zygote.c. Each turn
 * of its loop reads the zygote's and the standby's news, collects finished
 * slots, checks the region, passes kills on and starts the workers the
 * pool lacks (tend_workers), then sleeps in poll until a caller thread
 * (through an eventfd), the zygote or a deadline wakes it. It finishes the
 * futures nobody waits on (those with callbacks, under cf_wait, or
 * detached), enforces task_timeout_ms, and closes the pool down.
 *
 * Workers are reconciled towards a target count (pp->target; the header's
 * target says the same to the workers): every id below it that has no
 * process gets one (a first start, a replacement after a death or a
 * recycling), unless its start keeps failing (retired); a worker whose id is
 * at or above it leaves after its task (worker.c) and is not replaced. The
 * tables (pp->w, the region's worker records, the zygote's pids) are sized
 * for CF__MAX_WORKERS ids, so a target that grows needs nothing new; the
 * loops over them stop at wused, the ids ever wanted.
 *
 * It looks at the header and the ring at least every HEALTH_MS while work
 * is in flight (header_intact, ring_intact, reap_done), so damage a worker did to the
 * control data cannot leave anyone waiting for ever; and at workers whose
 * task runs long, so that one stuck for ever on a lock fails (pp_stuck.c).
 * With nothing in flight it sleeps with no deadline, and the first publish
 * after that wakes it (mgr_idle): an idle pool costs no CPU.
 *
 * Locking: pp->mu (pp_internal.h) is dropped around every wait: poll, the
 * reaping of a zygote, a standby or orphaned workers, the futures' firing.
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

#define HEALTH_MS       250                     /* the manager's look at the region, with work in flight */
#define STUCK_MS        100                     /* a task running this long: is its worker stuck? (pp_stuck.c) */
#define STUCK_AGAIN_MS  10                      /* the same, in a pool that already had one stuck */
#define CLOSE_GRACE_MS  5000                    /* workers still there this long after the close are ended */


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
        h->nwrecs != CF__MAX_WORKERS || atomic_load(&h->target) != pp->target ||
        atomic_load(&h->mask_words) != cf__mask_words(pp->wused) || h->timed != (pp->base.opts.task_timeout_ms > 0) ||
        h->max_tasks != pp->base.opts.max_tasks_per_worker || h->spin_max != pp->spin_max ||
        h->max_rss_kb != pp->base.opts.max_worker_rss_kb || h->slots != cf__slots_of(h) ||
        h->wrecs != cf__wrecs_of(h) || h->size != pp->map_size || h->boot != pp->boot)
        return false;
    for (unsigned i = 0; i < CF__MASK_WORDS; i++) {
        unsigned first = i * 64;
        uint64_t outside = first >= pp->wused ? ~(uint64_t)0
                           : pp->wused - first >= 64 ? 0
                           : ~(uint64_t)0 << (pp->wused - first);
        if ((atomic_load(&h->spinning[i]) & outside) || (atomic_load(&h->sleeping[i]) & outside) ||
            (atomic_load(&h->live[i]) & outside))
            return false;
    }
    return true;
}

/*
 * Under mu: is every published slot behind the head taken? The head is a
 * hint that workers move past a slot only once its word has left READY,
 * and no word goes back to READY at the same position; read first, it
 * vouches for every busy slot below it. A slot still READY there was
 * written over (or the head was): no worker would ever take it, and its
 * future would wait for ever.
 */
static bool ring_intact(const ppool *pp)
{
    uint64_t head = atomic_load(&pp->h->head);
    FOR_EACH_BUSY(pp, pos) {
        if (pos >= head)
            break;
        uint64_t word = atomic_load(&slot_at(pp, pos)->word);
        if (CF__W_POS(word) == (uint32_t)pos && CF__W_STATE(word) == CF__SLOT_READY)
            return false;
    }
    return true;
}

/* ---- the manager thread ------------------------------------------------- */

/* Under mu: fails every task still waiting for a worker. */
void cf__pp_fail_pending(ppool *pp, int code, cf_future **list)
{
    FOR_EACH_BUSY(pp, pos) {
        cf__slot *s = slot_at(pp, pos);
        uint64_t word = atomic_load(&s->word);
        if (CF__W_POS(word) != (uint32_t)pos || CF__W_STATE(word) != CF__SLOT_READY)
            continue;
        /* Claimed by the pool in its worker's stead: no worker takes it now. */
        if (cf__slot_claim(s, &word, CF__W_WID(word))) {
            pp->own[pos & pp->mask].unstarted = true;
            cf__pp_fail_slot(pp, pos, code, 0);
        }
    }
    cf__pp_reap_done(pp, list);
}

/* Under mu: is there a finished slot the manager should collect now? */
static bool work_for_manager(ppool *pp)
{
    bool all = atomic_load(&pp->h->notify_all);
    FOR_EACH_BUSY(pp, pos) {
        if (pp->own[pos & pp->mask].chunk)
            continue;
        uint64_t word = atomic_load(&slot_at(pp, pos)->word);
        unsigned state = slot_state(pp, pos, word);
        if (state == SLOT_CORRUPT || (ended(state) && (all || (word & CF__SLOT_NOTIFY))))
            return true;
    }
    return false;
}

/* Under mu: closes the pool once nothing is left to run. */
void cf__pp_maybe_close(ppool *pp)
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

/* Says once per process, on stderr, why a task failed with CF_EDEADLK. */
static void tell_stuck(const ppool *pp)
{
    static atomic_bool told;
    if (atomic_exchange(&told, true))
        return;
    fprintf(stderr, "cfutures: a task waited for ever on a lock that nothing in its worker process can "
                    "release, and failed with CF_EDEADLK: %s\n",
            pp->threaded && !pp->exec
                ? "another thread of the program most likely held it when the fork pool was created "
                  "(its workers are copies of that moment); create the pool before starting threads, "
                  "or use CF_START_EXEC (README: \"Choosing a start method\")"
                : "most likely the task took a lock it already held");
}

/*
 * Under mu: is worker i, whose task at pos has run a while, stuck for ever
 * on a lock (pp_stuck.c)? It is when two looks in a row, STUCK_MS apart
 * (STUCK_AGAIN_MS once the pool had one), see it asleep on the same private
 * word, or one look sees it asleep on the word a stuck worker of this pool
 * slept on: every worker is a copy of the same moment, so a lock held for
 * ever in one is held for ever in all. The first look comes STUCK_MS (or
 * STUCK_AGAIN_MS) after the manager first saw the task, so short tasks are
 * never looked at. Returns a poll timeout.
 */
static int look_for_stuck(ppool *pp, unsigned i, uint64_t pos, uint64_t now, int poll_ms)
{
    pworker *w = &pp->w[i];
    uint64_t period = (uint64_t)(pp->saw_stuck ? STUCK_AGAIN_MS : STUCK_MS) * 1000000u;
    if (w->look_pos != pos) {
        w->look_pos = pos;
        w->look_at = now + period;
        w->wait_pos = UINT64_MAX;
    } else if (now >= w->look_at) {
        uint64_t word;
        if (!cf__pp_waits_forever(w->pid, &word)) {
            w->wait_pos = UINT64_MAX;
        } else if ((pp->saw_stuck && word == pp->stuck_word) || (w->wait_pos == pos && w->wait_word == word)) {
            w->kill_pos = pos;
            w->kill_code = CF_EDEADLK;
            w->kill_pending = true;
            pp->saw_stuck = true;
            pp->stuck_word = word;
            tell_stuck(pp);
            return poll_ms;
        } else {
            w->wait_pos = pos;
            w->wait_word = word;
        }
        /* Many long tasks: fewer looks, so that a large pool's manager stays cheap. */
        w->look_at = now + period * (1 + pp->wused / 64);
    }
    return sooner(poll_ms, w->look_at, now);
}

/* Under mu: is pos, from a worker's record, a busy slot holding a map's chunk? */
static bool is_chunk(const ppool *pp, uint64_t pos)
{
    return pos >= pp->lo && pos < pp->tail && pp->own[pos & pp->mask].busy && pp->own[pos & pp->mask].chunk;
}

/*
 * Under mu: the time limit in ms of what worker i runs (cur, from its
 * record, is its position + 1): a task's own (cf_submit_with), else the
 * pool's task_timeout_ms; 0 for none. cur is the worker's word: a position
 * not among the busy ones gets the pool's limit.
 */
static int limit_of(const ppool *pp, uint64_t cur)
{
    uint64_t pos = cur - 1;
    int pool = pp->base.opts.task_timeout_ms;
    if (pos < pp->lo || pos >= pp->tail)
        return pool;
    const owner *o = &pp->own[pos & pp->mask];
    if (!o->busy || o->chunk || o->timeout_ms == 0)
        return pool;
    return o->timeout_ms < 0 ? 0 : o->timeout_ms;
}

/* Under mu: has worker wid's task run past its limit? Asks for its kill if so. */
static void past_limit(ppool *pp, unsigned wid, uint64_t pos)
{
    pworker *w = &pp->w[wid];
    if (wid < pp->wused && w->pid > 0 && w->kill_pos == UINT64_MAX) {
        w->kill_pos = pos;
        w->kill_code = CF_ETIMEDOUT;
        w->kill_pending = true;
    }
}

/*
 * Under mu: the time limits of tasks (a map's chunks: tend_workers).
 * A task's limit counts from the earlier of two starts: the one its
 * worker's record gives while the record says it runs the task (exact),
 * and the manager's first sight of its slot RUNNING (within a look of the
 * start). The record is the worker's to write, and a task can write over
 * it (a start in the future, or no task at all); the slot's word still
 * names the worker, which the zygote checks before the kill. Returns a
 * poll timeout.
 */
static int time_tasks(ppool *pp, uint64_t now, int poll_ms)
{
    if (pp->base.opts.task_timeout_ms <= 0 && pp->timed == 0)
        return poll_ms;
    FOR_EACH_BUSY(pp, pos) {
        owner *o = &pp->own[pos & pp->mask];
        int limit_ms = limit_of(pp, pos + 1);
        if (o->chunk || limit_ms <= 0)
            continue;
        uint64_t word = atomic_load(&slot_at(pp, pos)->word);
        if (slot_state(pp, pos, word) != CF__SLOT_RUNNING)
            continue;
        unsigned wid = CF__W_WID(word);
        if (o->run_seen == 0)
            o->run_seen = now;
        uint64_t start = o->run_seen;
        if (atomic_load(&pp->wrecs[wid].cur) == pos + 1) {
            uint64_t told = atomic_load(&pp->wrecs[wid].start_ns);
            start = told < start ? told : start;
        }
        uint64_t limit = start + (uint64_t)limit_ms * 1000000u;
        if (now >= limit)
            past_limit(pp, wid, pos);
        else
            poll_ms = sooner(poll_ms, limit, now);
    }
    return poll_ms;
}

/*
 * Under mu: passes kills on, starts a worker for every id below the target
 * that has none, and the standby; returns a poll timeout.
 */
static int tend_workers(ppool *pp, uint64_t now)
{
    int timeout_ms = pp->base.opts.task_timeout_ms, poll_ms = timeout_ms > 0 ? timeout_ms : -1;
    /* A task with a limit of its own is seen started within an eighth of it. */
    if (pp->timed > 0 && (poll_ms < 0 || pp->timed_min_ms / 8 + 1 < poll_ms))
        poll_ms = pp->timed_min_ms / 8 + 1;
    poll_ms = time_tasks(pp, now, poll_ms);
    bool wanted = !pp->exit_sent && !pp->broken && pp->zsock >= 0;
    pp->zsock_full = false;    /* news were read since: try again */
    if (wanted && pp->spid == 0 && !pp->standby_asked) {
        if (now >= pp->standby_retry_at)
            cf__pp_request_standby(pp);
        else
            poll_ms = sooner(poll_ms, pp->standby_retry_at, now);
    }
    for (unsigned i = 0; i < pp->wused; i++) {
        pworker *w = &pp->w[i];
        if (w->pid == 0 && !w->retired && wanted && i < pp->target && !pp->zsock_full) {
            if (now >= w->retry_at)
                cf__pp_request_worker(pp, i);
            else
                poll_ms = sooner(poll_ms, w->retry_at, now);
        }
        if (w->pid <= 0)
            continue;
        /* A map's chunk: the limit is each element's, from the start its
         * worker's record gives (tasks: time_tasks). */
        uint64_t cur = atomic_load(&pp->wrecs[i].cur);
        int limit_ms = cur != 0 && is_chunk(pp, cur - 1) ? limit_of(pp, cur) : 0;
        if (limit_ms > 0 && w->kill_pos == UINT64_MAX) {
            uint64_t limit = atomic_load(&pp->wrecs[i].start_ns) + (uint64_t)limit_ms * 1000000u;
            if (now >= limit)
                past_limit(pp, i, cur - 1);
            else
                poll_ms = sooner(poll_ms, limit, now);
        }
        if (cur != 0 && w->kill_pos == UINT64_MAX)
            poll_ms = look_for_stuck(pp, i, cur - 1, now, poll_ms);
        if (w->kill_pending && !pp->zsock_full)
            w->kill_pending = !cf__pp_tell_zygote(pp, (cf__zmsg){.type = CF__Z_KILL, .wid = i, .pid = w->pid,
                                                          .pos = w->kill_pos});
    }
    return poll_ms;
}

void *cf__pp_manager_main(void *arg)
{
    ppool *pp = arg;
    int rc = cf__pp_start_workers(pp);
    pthread_mutex_lock(&pp->mu);
    pp->created = true;
    if (rc != 0) {
        pp->create_error = rc;
        pp->finished = true;
    }
    pthread_cond_broadcast(&pp->changed);
    pthread_mutex_unlock(&pp->mu);
    if (rc != 0) {
        cf__pp_stop_zygote(pp);    /* it kills and reaps the workers it started */
        cf__pp_reap_unreported(0);
        return NULL;
    }

    for (;;) {
        cf_future *list = NULL;
        pthread_mutex_lock(&pp->mu);
        bool zlost = !cf__pp_zygote_news(pp, &list);
        bool slost = cf__pp_standby_gone(pp);
        pthread_mutex_unlock(&pp->mu);
        if (slost)
            cf__pp_standby_lost(pp);
        if (zlost)
            cf__pp_zygote_lost(pp, &list);
        pthread_mutex_lock(&pp->mu);
        cf__pp_reap_done(pp, &list);
        bool all_retired = true;
        for (unsigned i = 0; i < pp->target; i++)
            all_retired = all_retired && pp->w[i].retired;
        if (all_retired && !pp->broken) {
            pp->broken = true;
            cf__pp_fail_pending(pp, CF_EBROKEN, &list);
        }
        if (!pp->corrupt && !header_intact(pp))
            cf__pp_ring_corrupt(pp, &list);
        uint64_t now = cf__now_ns();
        if (!pp->corrupt && now >= pp->ring_look_at) {
            /* A scan of the busy slots: once a look, not at every turn. */
            pp->ring_look_at = now + (uint64_t)HEALTH_MS * 1000000u;
            if (!ring_intact(pp))
                cf__pp_ring_corrupt(pp, &list);
        }
        cf__pp_maybe_close(pp);
        /*
         * Closed, nothing in flight: every worker leaves at once. One still
         * there after CLOSE_GRACE_MS runs what the pool does not know of (a
         * task that wrote its slot DONE and ran on, or a replacement's
         * initializer that never returns): the zygote ends them all.
         */
        if (pp->exit_sent && pp->live > 0 && pp->closed_at == 0)
            pp->closed_at = now;
        bool late = pp->closed_at != 0 && now - pp->closed_at >= (uint64_t)CLOSE_GRACE_MS * 1000000u;
        if ((pp->corrupt || late) && !pp->quit_sent)
            pp->quit_sent = cf__pp_tell_zygote(pp, (cf__zmsg){.type = CF__Z_QUIT});
        bool over = pp->exit_sent && pp->live == 0;
        int poll_ms = over ? 0 : tend_workers(pp, now);
        /* Work in flight: look at the region now and then (header_intact). */
        int look_ms = pp->saw_stuck ? STUCK_AGAIN_MS : HEALTH_MS;    /* new tasks seen sooner */
        if (!over && (pp->inflight > 0 || pp->active_maps > 0 || pp->exit_sent) &&
            (poll_ms < 0 || poll_ms > look_ms))
            poll_ms = look_ms;
        atomic_store(&pp->h->mgr_sleeping, 1);
        bool busy = over || work_for_manager(pp);
        pp->mgr_idle = !busy && poll_ms < 0;
        int zsock = pp->zsock, ssock = pp->ssock;
        short zevents = pp->zsock_full ? POLLIN | POLLOUT : POLLIN;    /* room to ask again */
        pthread_mutex_unlock(&pp->mu);
        cf__future_fire(list);
        if (over)
            break;

        struct pollfd pfd[3] = {
            {.fd = pp->efd, .events = POLLIN}, {.fd = zsock, .events = zevents}, {.fd = ssock, .events = POLLIN},
        };
        if (!busy)
            poll(pfd, 3, poll_ms);
        atomic_store(&pp->h->mgr_sleeping, 0);
        uint64_t drained;
        if (pfd[0].revents & POLLIN)
            while (read(pp->efd, &drained, sizeof drained) < 0 && errno == EINTR)
                ;
    }
    cf__pp_stop_zygote(pp);
    cf__pp_reap_unreported(0);
    pthread_mutex_lock(&pp->mu);
    pp->finished = true;
    pthread_cond_broadcast(&pp->changed);
    pthread_mutex_unlock(&pp->mu);
    return NULL;
}
