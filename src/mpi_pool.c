/*
 * The MPI backend (libcfutures-mpi): the futures of one root rank, run by
 * the other ranks of a communicator, each through a local process pool.
 *
 * Root. Every task and every map chunk is a job: its message packed at
 * submit, queued (FIFO) under mu. The progress thread, the only thread that
 * calls MPI once the pool exists, hands queued jobs to the ranks that have
 * credit (counted in tasks: 32 per worker of theirs, a chunk costing
 * 16), sends them with MPI_Isend (the tasks for one rank handed out in
 * one pass go in one message; a chunk alone), and takes the results as
 * they come (MPI_Iprobe, any source), finishing the futures or writing the
 * chunks' outputs. A map is fed by its caller's thread, which queues
 * chunks while fewer than a bound wait, so that the memory a map holds
 * does not grow with n.
 *
 * Serving rank. A loop in the calling thread: each task of a message
 * becomes a cf_submit_with on the local process pool, a chunk one task of
 * run_chunk (this file), which runs the elements in a worker; the loop
 * collects the local futures itself (cf__ext_collect: no thread of the
 * local pool is woken for each), and those that ended since the last pass
 * go back in one message (MPI_Isend). STOP, sent by the root when its
 * executor is freed and nothing is in flight, ends the loop.
 *
 * Both loops poll without sleeping (sched_yield at each idle pass: ranks
 * and their workers share the cores) for POLL_NS after anything moved,
 * then sleep: the progress thread on a condition variable when nothing is
 * in flight, else in naps of bounded length.
 *
 * Functions travel as (index of the loaded object in the root's table,
 * offset): the root sends the objects' names at creation, each rank finds
 * its own base for each name. Everything a rank sends back is checked
 * before it sizes or indexes anything on the root.
 */
#include "cfutures-mpi.h"
#include "internal.h"

#include <dlfcn.h>
#include <elf.h>
#include <errno.h>
#include <link.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* TAG_CANCEL: a task's id; the task is cancelled on the rank (its worker
 * killed if it runs). TAG_DROP, empty (cf_shutdown's cancel_pending): the
 * rank's tasks that no worker took end CF_ECANCELED. */
enum { TAG_TASK = 7100, TAG_CHUNK, TAG_RESULT, TAG_STOP, TAG_CANCEL, TAG_DROP };

#define MAX_MSG      ((size_t)512 << 20)   /* an argument or result */
#define CHUNK_BYTES  ((size_t)4 << 20)     /* a map chunk's inputs, outputs, codes */
/* Credit, counted in tasks: a rank holds at most this many tasks per worker
 * of its own, enough to cover the pipeline (a batch on its way there, one
 * being run, one on its way back: with 8, streaming went at half the rate
 * of 32 on 2 cores); a map chunk costs CHUNK_COST of them, so at most two
 * chunks per worker wait or run there. */
#define TASK_CREDIT_PER_WORKER 32u
#define CHUNK_COST   16u
/* A job's id: a sequence number, then the index of its slot on its rank. */
#define SLOT_BITS    24
#define SLOT_MASK    ((UINT64_C(1) << SLOT_BITS) - 1)
/* A batch of task messages (root) or results (serving rank) is sent when it
 * would grow past this; an item larger than it travels alone. */
#define BATCH_BYTES  ((size_t)1 << 20)
/* A loop with work in flight, or that had some a moment ago, polls (with
 * sched_yield: 3 ranks and their workers share the cores) for this long
 * after the last thing that moved before it sleeps. */
#define POLL_NS      200000u

/* ---- loaded objects and function references ----------------------------- */

typedef struct modent {
    uintptr_t base, lo, hi;
    char     *name;
} modent;

typedef struct modtab {
    modent  *m;
    unsigned n;
} modtab;

static int mod_add(struct dl_phdr_info *info, size_t size, void *data)
{
    (void)size;
    modtab *t = data;
    uintptr_t lo = UINTPTR_MAX, hi = 0;
    for (unsigned i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *p = &info->dlpi_phdr[i];
        if (p->p_type != PT_LOAD)
            continue;
        uintptr_t a = info->dlpi_addr + p->p_vaddr;
        if (a < lo)
            lo = a;
        if (a + p->p_memsz > hi)
            hi = a + p->p_memsz;
    }
    if (hi == 0)
        return 0;
    modent *m = realloc(t->m, (t->n + 1) * sizeof *m);
    if (m == NULL)
        return 1;
    t->m = m;
    char *name = strdup(info->dlpi_name != NULL ? info->dlpi_name : "");
    if (name == NULL)
        return 1;
    t->m[t->n++] = (modent){.base = info->dlpi_addr, .lo = lo, .hi = hi, .name = name};
    return 0;
}

static void modtab_free(modtab *t)
{
    for (unsigned i = 0; i < t->n; i++)
        free(t->m[i].name);
    free(t->m);
    t->m = NULL;
    t->n = 0;
}

static int modtab_build(modtab *t)
{
    t->m = NULL;
    t->n = 0;
    if (dl_iterate_phdr(mod_add, t) != 0) {
        modtab_free(t);
        return CF_ENOMEM;
    }
    return 0;
}

/* fn as (object index, offset) in t; false if no object holds it. */
static bool fnref_encode(const modtab *t, const void *fn, uint32_t *mod, uint64_t *off)
{
    uintptr_t a = (uintptr_t)fn;
    for (unsigned i = 0; i < t->n; i++) {
        if (a >= t->m[i].lo && a < t->m[i].hi) {
            *mod = i;
            *off = a - t->m[i].base;
            return true;
        }
    }
    return false;
}

/* ---- the build hash ------------------------------------------------------ */

typedef struct hashwalk {
    const void *fns[2];            /* addresses in libcfutures, libcfutures-mpi */
    unsigned    seen;
    uint64_t    hash;
} hashwalk;

static uint64_t fnv(uint64_t h, const void *p, size_t n)
{
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++)
        h = (h ^ b[i]) * 0x100000001b3ull;
    return h;
}

/* Adds the object's GNU build-id (or its name, if it has none) to the hash. */
static void hash_object(hashwalk *w, const struct dl_phdr_info *info)
{
    for (unsigned i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *p = &info->dlpi_phdr[i];
        if (p->p_type != PT_NOTE)
            continue;
        const char *at = (const char *)(info->dlpi_addr + p->p_vaddr);
        const char *end = at + p->p_memsz;
        while (at + sizeof(ElfW(Nhdr)) <= end) {
            const ElfW(Nhdr) *nh = (const ElfW(Nhdr) *)(const void *)at;
            const char *name = at + sizeof *nh;
            const char *desc = name + ((nh->n_namesz + 3u) & ~3u);
            if (desc + nh->n_descsz > end)
                break;
            if (nh->n_type == NT_GNU_BUILD_ID && nh->n_namesz == 4 && memcmp(name, "GNU", 4) == 0) {
                w->hash = fnv(w->hash, desc, nh->n_descsz);
                return;
            }
            at = desc + ((nh->n_descsz + 3u) & ~3u);
        }
    }
    const char *n = info->dlpi_name != NULL ? info->dlpi_name : "";
    w->hash = fnv(w->hash, n, strlen(n));
}

static bool object_holds(const struct dl_phdr_info *info, const void *fn)
{
    uintptr_t a = (uintptr_t)fn;
    for (unsigned i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *p = &info->dlpi_phdr[i];
        uintptr_t lo = info->dlpi_addr + p->p_vaddr;
        if (p->p_type == PT_LOAD && a >= lo && a < lo + p->p_memsz)
            return true;
    }
    return false;
}

static int hash_add(struct dl_phdr_info *info, size_t size, void *data)
{
    (void)size;
    hashwalk *w = data;
    bool take = w->seen++ == 0;    /* the program itself comes first */
    for (unsigned i = 0; i < 2; i++)
        take = take || object_holds(info, w->fns[i]);
    if (take)
        hash_object(w, info);
    return 0;
}

static uint64_t build_hash(void)
{
    hashwalk w = {.fns = {(const void *)cf_submit, (const void *)cf_mpi_pool_new},
                  .hash = 0xcbf29ce484222325ull};
    dl_iterate_phdr(hash_add, &w);
    const char *salt = secure_getenv("CFUTURES_MPI_BUILD_SALT");
    if (salt != NULL && *salt != '\0')
        w.hash = fnv(w.hash, salt, strlen(salt));
    return w.hash;
}

/* ---- messages ------------------------------------------------------------ */

/* TAG_TASK: one or more of them, each followed by its arg_size bytes. */
typedef struct task_msg {
    uint64_t id;
    uint64_t off;
    uint32_t mod;
    int32_t  timeout_ms;
    uint64_t result_size;
    uint64_t arg_size;
} task_msg;

/* TAG_CHUNK, then count * in_size bytes; its result: count * out_size bytes
 * of outputs, then count int32_t codes. */
typedef struct chunk_msg {
    uint64_t id;
    uint64_t off;                  /* on the serving rank: the decoded address */
    uint32_t mod;
    uint32_t per_chunk;            /* 1: cf_chunk_fn, 0: cf_fn per element */
    uint64_t in_size, out_size, first, count;
    uint64_t pad_;                 /* 64 bytes: the inputs after it stay aligned */
} chunk_msg;

/* TAG_RESULT: one or more of them, each followed by len bytes of result,
 * then text_len bytes of error text. */
typedef struct result_msg {
    uint64_t id;
    int32_t  code;
    int32_t  sig;
    int32_t  worker;
    uint32_t has_result;
    uint64_t len;
    uint64_t text_len;
} result_msg;

/* ---- the root ------------------------------------------------------------ */

typedef struct mmap_ctl mmap_ctl;

typedef struct job {
    struct job   *next;            /* in the queue */
    uint64_t      id;
    int           tag;             /* TAG_TASK or TAG_CHUNK */
    int           rank;            /* -1 while queued */
    cf_future    *f;               /* a task's future */
    mmap_ctl     *map;             /* a chunk's map */
    size_t        first, count;
    unsigned char *msg;            /* until it is sent (then the sender's) */
    size_t        len;
} job;

/* What a map's caller and the progress thread share, under mu. */
struct mmap_ctl {
    cf__map     *ctl;
    char        *out;
    size_t       out_size;
    int         *status;
    size_t       queued;           /* chunks queued or in flight */
    size_t       done;             /* elements ended */
    size_t       n;
    size_t       fail_index;
    int          fail_code;
    pthread_cond_t cv;
    mmap_ctl    *next;             /* in the pool's list of maps */
};

typedef struct mpart {             /* a future's part */
    job          *job;             /* under mu; NULL once done */
    _Atomic bool  sent;
} mpart;

typedef struct rankst {
    unsigned workers, credit;      /* credit: tasks it may still take */
    job    **slots;                /* its jobs in flight */
    unsigned nslots;
    unsigned *free, nfree;         /* the indices of the free slots */
    unsigned char *batch;          /* progress thread: task messages for it, */
    size_t   blen, bcap;           /* gathered in one pass */
    bool     drop;                 /* under mu: TAG_DROP to send */
} rankst;

typedef struct mpool {
    cf_executor     ex;
    MPI_Comm        comm;
    int             size, root;
    modtab          mods;
    rankst         *ranks;
    pthread_t       thread;
    pthread_mutex_t mu;
    pthread_cond_t  work;          /* the progress thread waits for work */
    pthread_cond_t  idle;          /* shutdown with wait waits for jobs == 0 */
    job            *head, *tail;
    mmap_ctl       *maps;          /* maps running (their callers wait in mp_map) */
    size_t          jobs;          /* jobs queued or in flight */
    size_t          tasks;         /* of them, tasks (not chunks) */
    uint64_t        next_id;
    bool            stop;
    bool            drop_maps;     /* cf_shutdown cancels pending: maps queue no more */
    bool            sleeping;      /* the progress thread waits on work */
    struct cancel_req {            /* TAG_CANCEL messages to send */
        uint64_t id;
        int      rank;
    }              *cancels;
    size_t          ncancels, capcancels;
} mpool;

static mpool *mp_of(cf_executor *ex)
{
    return (mpool *)(void *)ex;
}

static mpart *mpart_of(cf_future *f)
{
    return CF__FUTURE_PART(f, mpart);
}

static void job_free(job *j)
{
    free(j->msg);
    free(j);
}

/* Under mu. */
static void enqueue(mpool *mp, job *j)
{
    j->id = 0;                     /* given by place() */
    j->rank = -1;
    j->next = NULL;
    if (mp->tail != NULL)
        mp->tail->next = j;
    else
        mp->head = j;
    mp->tail = j;
    mp->jobs++;
    if (j->f != NULL)
        mp->tasks++;
    if (mp->sleeping)
        pthread_cond_signal(&mp->work);
}

/* Under mu: unlinks a queued job; false if it was sent already. */
static bool unqueue(mpool *mp, job *j)
{
    job *prev = NULL;
    for (job *it = mp->head; it != NULL; prev = it, it = it->next) {
        if (it != j)
            continue;
        if (prev != NULL)
            prev->next = it->next;
        else
            mp->head = it->next;
        if (mp->tail == it)
            mp->tail = prev;
        return true;
    }
    return false;
}

/* Under mu: one job fewer. */
static void job_gone(mpool *mp, job *j)
{
    mp->jobs--;
    if (j->f != NULL)
        mp->tasks--;
    if (mp->jobs == 0)
        pthread_cond_broadcast(&mp->idle);
}

/* Under mu: a chunk's elements ended with codes (count int32_t, unaligned;
 * NULL: all `code`). Elements cancelled are not reported nor counted. */
static void chunk_end(mmap_ctl *m, size_t first, size_t count, const unsigned char *codes, int code)
{
    bool ran = codes != NULL || code != CF_ECANCELED;
    /* An element callback may cancel the map: mu is recursive for that,
     * and this thread works for the map meanwhile (no wait for itself). */
    const cf__map *was = cf__ext_map_here(m->ctl);
    for (size_t k = 0; k < count; k++) {
        int32_t c = code;
        if (codes != NULL)
            memcpy(&c, codes + k * sizeof c, sizeof c);
        if (m->status != NULL)
            m->status[first + k] = c;
        if (c != 0 && first + k < m->fail_index) {
            m->fail_index = first + k;
            m->fail_code = c;
        }
        if (ran)
            cf__map_report(m->ctl, first + k, c);
    }
    if (ran)
        cf__map_count(m->ctl, count);
    cf__ext_map_here(was);
    m->done += count;
    m->queued--;
    pthread_cond_broadcast(&m->cv);
}

static void finish_task(job *j, int state, int code, int sig, cf_future **fire)
{
    cf_future *f = j->f;
    mpart_of(f)->job = NULL;
    cf__ext_future_finish(f, state, code, sig, fire);
}

static unsigned job_cost(const job *j)
{
    return j->tag == TAG_CHUNK ? CHUNK_COST : 1u;
}

/* Under mu: one result record (r, then its bytes in body) for a job of
 * rank `from`, whose bounds the caller checked. The job leaves its slot;
 * it is returned for the caller to free (once mu is released), or NULL if
 * the rank has no job of that id in flight. */
static job *take_record(mpool *mp, int from, const result_msg *r, const unsigned char *body,
                        cf_future **fire)
{
    rankst *rs = &mp->ranks[from];
    uint64_t s = r->id & SLOT_MASK;
    job *j = s < rs->nslots ? rs->slots[s] : NULL;
    if (j == NULL || j->id != r->id)
        return NULL;    /* not ours: ignored */
    rs->slots[s] = NULL;
    rs->free[rs->nfree++] = (unsigned)s;
    rs->credit += job_cost(j);
    if (j->tag == TAG_TASK) {
        cf_future *f = j->f;
        int code = r->code, sig = r->sig;
        if (r->has_result) {
            if (r->len > f->result_size) {
                code = CF_EOVERRUN;
            } else {
                memcpy(f->result, body, r->len);
                f->result_len = r->len;
                f->has_result = true;
            }
        }
        if (r->text_len > 0) {
            char *t = malloc(CF_ERROR_TEXT_MAX);
            if (t != NULL) {
                /* The library's text of a task that did not end (a crash, a
                 * timeout) names the rank; a task's own arrives as it wrote it. */
                int k = r->has_result ? 0 : snprintf(t, 16, "rank %d: ", from);
                size_t room = CF_ERROR_TEXT_MAX - 1 - (size_t)k;
                size_t tl = r->text_len < room ? r->text_len : room;
                memcpy(t + k, body + r->len, tl);
                t[k + tl] = '\0';
                f->error_text = t;
            }
        }
        f->info.worker = r->worker;
        f->info.end_ns = cf__ext_now_ns();
        /* Cancelled there (cf_future_cancel, cf_shutdown_now): cancelled here. */
        bool cancelled = code == CF_ECANCELED && !r->has_result;
        finish_task(j, cancelled ? CF__CANCELLED : CF__FINISHED, code, sig, fire);
    } else {
        mmap_ctl *m = j->map;
        size_t cnt = j->count;
        size_t osz = m->out_size;
        if (r->has_result && r->code == 0 && r->len == cnt * (osz + sizeof(int32_t))) {
            memcpy(m->out + j->first * osz, body, cnt * osz);
            chunk_end(m, j->first, cnt, body + cnt * osz, 0);
        } else {
            int code = r->code != 0 ? r->code : CF_EOVERRUN;
            if (code == CF_ECANCELED)    /* cancelled there: the map was cut */
                atomic_store(&m->ctl->cut, true);
            chunk_end(m, j->first, cnt, NULL, code);
        }
    }
    job_gone(mp, j);
    return j;
}

/*
 * Reads one message of results, already probed (st); under no lock. A
 * serving rank sends in one message every result it has: each record is
 * checked against what is left of the message before its lengths are
 * used, and its id against the jobs in flight on that rank; the first
 * record that does not fit ends the reading (the rest cannot be framed).
 */
static void take_result(mpool *mp, const MPI_Status *st)
{
    int count = 0;
    MPI_Get_count(st, MPI_BYTE, &count);
    unsigned char *buf = malloc(count > 0 ? (size_t)count : 1);
    if (buf == NULL) {
        /* No memory for it: it stays in MPI, read again later. */
        return;
    }
    MPI_Recv(buf, count, MPI_BYTE, st->MPI_SOURCE, TAG_RESULT, mp->comm, MPI_STATUS_IGNORE);
    int from = st->MPI_SOURCE;
    if (from < 0 || from >= mp->size || from == mp->root) {
        free(buf);
        return;
    }
    cf_future *fire = NULL;
    job *gone = NULL;
    size_t at = 0, total = count > 0 ? (size_t)count : 0;
    pthread_mutex_lock(&mp->mu);
    while (total - at >= sizeof(result_msg)) {
        result_msg r;
        memcpy(&r, buf + at, sizeof r);
        size_t avail = total - at - sizeof r;
        if (r.len > avail || r.text_len > avail - r.len)
            break;    /* malformed: the rest is ignored */
        job *j = take_record(mp, from, &r, buf + at + sizeof r, &fire);
        if (j != NULL) {
            j->next = gone;
            gone = j;
        }
        at += sizeof r + r.len + r.text_len;
    }
    pthread_mutex_unlock(&mp->mu);
    if (fire != NULL)
        cf__ext_future_fire(fire);
    while (gone != NULL) {
        job *next = gone->next;
        job_free(gone);
        gone = next;
    }
    free(buf);
}

/* Under mu: the rank with the most credit, at least cost, or -1. */
static int pick_rank(mpool *mp, unsigned cost)
{
    int best = -1;
    unsigned most = cost - 1;
    for (int r = 0; r < mp->size; r++) {
        if (r != mp->root && mp->ranks[r].credit > most) {
            most = mp->ranks[r].credit;
            best = r;
        }
    }
    return best;
}

/* Under mu: puts j in a free slot of rank r. */
static void place(mpool *mp, job *j, int r)
{
    rankst *rs = &mp->ranks[r];
    /* Credit is spent before slots are (a job costs at least 1): one is free. */
    unsigned s = rs->free[--rs->nfree];
    rs->slots[s] = j;
    rs->credit -= job_cost(j);
    j->rank = r;
    /* The id carries the slot, where its result finds the job at once. */
    j->id = ++mp->next_id << SLOT_BITS | s;
    memcpy(j->msg, &j->id, sizeof j->id);    /* both headers begin with it */
}

static void sleep_ns(long ns)
{
    struct timespec ts = {0, ns};
    nanosleep(&ts, NULL);
}

typedef struct sendbox {           /* a message being sent */
    unsigned char *msg;
    size_t         len;
    int            rank, tag;
    MPI_Request    req;
} sendbox;

/* Room for len more bytes after the used ones of a growing buffer (it
 * doubles from 4 KiB); false if there is no memory for it. */
static bool room_for(unsigned char **buf, size_t *cap, size_t used, size_t len)
{
    if (*cap - used >= len)
        return true;
    size_t c = *cap ? *cap : 4096;
    while (c - used < len)
        c *= 2;
    unsigned char *b = realloc(*buf, c);
    if (b == NULL)
        return false;
    *buf = b;
    *cap = c;
    return true;
}

/* Appends a task message to rank r's batch; false if there is no room. */
static bool batch_add(rankst *rs, const unsigned char *msg, size_t len)
{
    if (!room_for(&rs->batch, &rs->bcap, rs->blen, len))
        return false;
    memcpy(rs->batch + rs->blen, msg, len);
    rs->blen += len;
    return true;
}

/* Starts sending msg (then owned by the send, freed once it completes). */
static void start_send(mpool *mp, sendbox **sending, size_t *nsending, size_t *cap,
                       unsigned char *msg, size_t len, int rank, int tag)
{
    if (*nsending == *cap) {
        sendbox *more = realloc(*sending, 2 * *cap * sizeof **sending);
        if (more == NULL) {    /* complete this one at once */
            MPI_Send(msg, (int)len, MPI_BYTE, rank, tag, mp->comm);
            free(msg);
            return;
        }
        *sending = more;
        *cap *= 2;
    }
    sendbox *b = &(*sending)[(*nsending)++];
    *b = (sendbox){.msg = msg, .len = len, .rank = rank, .tag = tag};
    MPI_Isend(msg, (int)len, MPI_BYTE, rank, tag, mp->comm, &b->req);
}

enum { PASS_JOBS = 256 };    /* jobs handed out in one pass of the progress loop */

static void *progress(void *arg)
{
    mpool *mp = arg;
    sendbox *msgs = malloc(PASS_JOBS * sizeof *msgs);
    size_t cap = 64;
    sendbox *sending = malloc(cap * sizeof *sending);    /* sends not yet complete */
    size_t nsending = 0;
    if (msgs == NULL || sending == NULL) {
        /* Without them it cannot run: the job ends rather than hang. */
        fprintf(stderr, "cfutures-mpi: no memory for the progress thread\n");
        MPI_Abort(mp->comm, 1);
    }
    uint64_t last = cf__ext_now_ns();    /* when something last moved */
    unsigned naps = 0;
    for (;;) {
        bool busy = false;
        /* Hand queued jobs to ranks with credit. */
        unsigned nb = 0;
        pthread_mutex_lock(&mp->mu);
        while (mp->head != NULL && nb < PASS_JOBS) {
            int r = pick_rank(mp, job_cost(mp->head));
            if (r < 0)
                break;
            job *j = mp->head;
            mp->head = j->next;
            if (mp->head == NULL)
                mp->tail = NULL;
            place(mp, j, r);
            if (j->f != NULL) {
                atomic_store_explicit(&mpart_of(j->f)->sent, true, memory_order_relaxed);
                j->f->info.start_ns = cf__ext_now_ns();
            }
            /* The message goes with the send: the job may end (its result
             * come) before the send is seen complete here. */
            msgs[nb] = (sendbox){.msg = j->msg, .len = j->len, .rank = r, .tag = j->tag};
            j->msg = NULL;
            nb++;
        }
        bool done = mp->stop && mp->jobs == 0;
        /* Drops, then cancel requests: empty or 8 bytes, sent at once (eager). */
        for (int r = 0; r < mp->size; r++) {
            if (r != mp->root && mp->ranks[r].drop) {
                MPI_Send(NULL, 0, MPI_BYTE, r, TAG_DROP, mp->comm);
                mp->ranks[r].drop = false;
                busy = true;
            }
        }
        for (size_t i = 0; i < mp->ncancels; i++)
            MPI_Send(&mp->cancels[i].id, (int)sizeof(uint64_t), MPI_BYTE, mp->cancels[i].rank,
                     TAG_CANCEL, mp->comm);
        busy = busy || mp->ncancels > 0;
        mp->ncancels = 0;
        pthread_mutex_unlock(&mp->mu);
        /* The tasks for one rank go in one message; chunks, and tasks too
         * large for a batch, alone. */
        for (unsigned i = 0; i < nb; i++) {
            sendbox *b = &msgs[i];
            if (b->tag == TAG_TASK && b->len <= BATCH_BYTES) {
                rankst *rs = &mp->ranks[b->rank];
                if (rs->blen + b->len > BATCH_BYTES) {
                    start_send(mp, &sending, &nsending, &cap, rs->batch, rs->blen, b->rank, TAG_TASK);
                    rs->batch = NULL;
                    rs->blen = rs->bcap = 0;
                }
                if (batch_add(rs, b->msg, b->len)) {
                    free(b->msg);
                    continue;
                }
            }
            start_send(mp, &sending, &nsending, &cap, b->msg, b->len, b->rank, b->tag);
        }
        for (int r = 0; nb > 0 && r < mp->size; r++) {
            rankst *rs = &mp->ranks[r];
            if (r == mp->root || rs->blen == 0)
                continue;
            start_send(mp, &sending, &nsending, &cap, rs->batch, rs->blen, r, TAG_TASK);
            rs->batch = NULL;
            rs->blen = rs->bcap = 0;
        }
        busy = busy || nb > 0;
        /* Sends that completed free their message. */
        for (size_t i = 0; i < nsending;) {
            int flag = 0;
            MPI_Test(&sending[i].req, &flag, MPI_STATUS_IGNORE);
            if (flag) {
                free(sending[i].msg);
                sending[i] = sending[--nsending];
                busy = true;
            } else {
                i++;
            }
        }
        /* Results, as many messages as are there. */
        for (;;) {
            int flag = 0;
            MPI_Status st;
            MPI_Iprobe(MPI_ANY_SOURCE, TAG_RESULT, mp->comm, &flag, &st);
            if (!flag)
                break;
            take_result(mp, &st);
            busy = true;
        }
        if (done && nsending == 0)
            break;
        uint64_t now = cf__ext_now_ns();
        if (busy) {
            last = now;
            naps = 0;
            continue;
        }
        /* Nothing moved. For a while after the last move poll, yielding;
         * then, with nothing in flight, sleep until work comes; else poll
         * MPI with naps that grow to a bound. */
        if (now - last < POLL_NS) {
            sched_yield();
            continue;
        }
        pthread_mutex_lock(&mp->mu);
        bool inflight = mp->jobs > 0 || nsending > 0;
        if (!inflight && !mp->stop && mp->head == NULL) {
            mp->sleeping = true;
            pthread_cond_wait(&mp->work, &mp->mu);
            mp->sleeping = false;
            pthread_mutex_unlock(&mp->mu);
            last = cf__ext_now_ns();
            naps = 0;
            continue;
        }
        pthread_mutex_unlock(&mp->mu);
        sleep_ns(naps < 16 ? 20000 : 200000);
        naps++;
    }
    for (int r = 0; r < mp->size; r++) {
        if (r != mp->root)
            MPI_Send(NULL, 0, MPI_BYTE, r, TAG_STOP, mp->comm);
    }
    free(sending);
    free(msgs);
    return NULL;
}

static int mp_submit(cf_executor *ex, cf_future *f, cf_fn *fn, const void *arg, size_t arg_size)
{
    mpool *mp = mp_of(ex);
    task_msg h = {.result_size = f->result_size, .arg_size = arg_size, .timeout_ms = f->timeout_ms};
    if (!fnref_encode(&mp->mods, (const void *)fn, &h.mod, &h.off))
        return CF_EINVAL;
    job *j = calloc(1, sizeof *j);
    if (j == NULL)
        return CF_ENOMEM;
    j->len = sizeof h + arg_size;
    if ((j->msg = malloc(j->len)) == NULL) {
        free(j);
        return CF_ENOMEM;
    }
    memcpy(j->msg, &h, sizeof h);
    if (arg_size > 0)
        memcpy(j->msg + sizeof h, arg, arg_size);
    j->tag = TAG_TASK;
    j->f = f;
    pthread_mutex_lock(&mp->mu);
    if (atomic_load(&ex->shut)) {
        pthread_mutex_unlock(&mp->mu);
        job_free(j);
        return CF_ESHUTDOWN;
    }
    mpart_of(f)->job = j;
    enqueue(mp, j);
    pthread_mutex_unlock(&mp->mu);
    return 0;
}

static int mp_map(cf_executor *ex, cf__map *ctl, cf_fn *fn, cf_chunk_fn *cfn, const char *in,
                  size_t in_size, char *out, size_t out_size, size_t n, size_t chunk, int *status)
{
    mpool *mp = mp_of(ex);
    chunk_msg h = {.per_chunk = cfn != NULL, .in_size = in_size, .out_size = out_size};
    if (!fnref_encode(&mp->mods, cfn != NULL ? (const void *)cfn : (const void *)fn, &h.mod, &h.off))
        return CF_EINVAL;
    size_t per = in_size + out_size + sizeof(int32_t);
    if (chunk > CHUNK_BYTES / per)
        chunk = CHUNK_BYTES / per > 0 ? CHUNK_BYTES / per : 1;
    if (chunk * per > MAX_MSG)
        return CF_E2BIG;
    mmap_ctl m = {.ctl = ctl, .out = out, .out_size = out_size, .status = status, .n = n,
                  .fail_index = SIZE_MAX};
    pthread_cond_init(&m.cv, NULL);
    size_t bound = 0;
    pthread_mutex_lock(&mp->mu);
    if (mp->stop) {
        pthread_mutex_unlock(&mp->mu);
        pthread_cond_destroy(&m.cv);
        return CF_ESHUTDOWN;
    }
    for (int r = 0; r < mp->size; r++)
        bound += r != mp->root ? mp->ranks[r].nslots / CHUNK_COST : 0;
    bound *= 2;    /* a queue as long again as the chunks in flight */
    m.next = mp->maps;
    mp->maps = &m;
    cf__ext_map_admit(ctl);
    int rc = 0;
    size_t next = 0;
    while (next < n) {
        while (m.queued >= bound && !cf__map_cancelled(ctl) && !mp->drop_maps)
            pthread_cond_wait(&m.cv, &mp->mu);
        if (cf__map_cancelled(ctl) || mp->drop_maps)
            break;
        pthread_mutex_unlock(&mp->mu);
        size_t cnt = n - next < chunk ? n - next : chunk;
        job *j = calloc(1, sizeof *j);
        unsigned char *msg = j != NULL ? malloc(sizeof h + cnt * in_size) : NULL;
        pthread_mutex_lock(&mp->mu);
        if (msg == NULL) {
            free(j);
            rc = CF_ENOMEM;
            break;
        }
        h.first = next;
        h.count = cnt;
        memcpy(msg, &h, sizeof h);
        if (in_size > 0)
            memcpy(msg + sizeof h, in + next * in_size, cnt * in_size);
        *j = (job){.tag = TAG_CHUNK, .map = &m, .first = next, .count = cnt, .msg = msg,
                   .len = sizeof h + cnt * in_size};
        m.queued++;
        enqueue(mp, j);
        next += cnt;
    }
    /* Elements never queued: cancelled, or no memory. */
    if (next < n) {
        int code = rc != 0 ? rc : CF_ECANCELED;
        for (size_t i = next; i < n; i++) {
            if (status != NULL)
                status[i] = code;
            if (code != CF_ECANCELED)
                cf__map_report(ctl, i, code);
        }
        if (next < m.fail_index) {
            m.fail_index = next;
            m.fail_code = code;
        }
        if (code == CF_ECANCELED)
            atomic_store(&ctl->cut, true);
        m.done += n - next;
    }
    while (m.done < n)
        pthread_cond_wait(&m.cv, &mp->mu);
    for (mmap_ctl **link = &mp->maps; *link != NULL; link = &(*link)->next) {
        if (*link == &m) {
            *link = m.next;
            break;
        }
    }
    pthread_mutex_unlock(&mp->mu);
    pthread_cond_destroy(&m.cv);
    return m.fail_index == SIZE_MAX ? 0 : m.fail_code;
}

/* Under mu: a map's chunk, taken out of the queue before it was sent, ends
 * CF_ECANCELED, and its map is cut. */
static void cancel_queued_chunk(mpool *mp, job *j)
{
    atomic_store(&j->map->ctl->cut, true);
    chunk_end(j->map, j->first, j->count, NULL, CF_ECANCELED);
    job_gone(mp, j);
}

static void cancel_sent(mpool *mp, const cf__map *ctl);

static void mp_map_cancel(cf_executor *ex, cf__map *ctl)
{
    mpool *mp = mp_of(ex);
    pthread_mutex_lock(&mp->mu);
    /* Chunks still queued end CF_ECANCELED; the map's thread stops queuing. */
    job **link = &mp->head;
    mp->tail = NULL;
    while (*link != NULL) {
        job *j = *link;
        if (j->map != NULL && j->map->ctl == ctl) {
            *link = j->next;
            cancel_queued_chunk(mp, j);
            job_free(j);
            continue;
        }
        mp->tail = j;
        link = &j->next;
    }
    /* Chunks sent: their ranks cancel them (a worker running one is
     * killed, as a process pool stops a running chunk). */
    cancel_sent(mp, ctl);
    /* The map's thread may wait for room in the queue: it stops queuing. */
    for (mmap_ctl *m = mp->maps; m != NULL; m = m->next) {
        if (m->ctl == ctl)
            pthread_cond_broadcast(&m->cv);
    }
    pthread_mutex_unlock(&mp->mu);
}

/* Under mu: asks j's rank to cancel it (a task sent there). */
static bool ask_cancel(mpool *mp, const job *j)
{
    if (mp->ncancels == mp->capcancels) {
        size_t cap = mp->capcancels ? 2 * mp->capcancels : 8;
        struct cancel_req *c = realloc(mp->cancels, cap * sizeof *c);
        if (c == NULL)
            return false;
        mp->cancels = c;
        mp->capcancels = cap;
    }
    mp->cancels[mp->ncancels++] = (struct cancel_req){.id = j->id, .rank = j->rank};
    if (mp->sleeping)
        pthread_cond_signal(&mp->work);
    return true;
}

/* Under mu: asks the ranks to cancel the jobs sent to them: map ctl's
 * chunks, or every job (ctl NULL). */
static void cancel_sent(mpool *mp, const cf__map *ctl)
{
    for (int r = 0; r < mp->size; r++) {
        for (unsigned k = 0; r != mp->root && k < mp->ranks[r].nslots; k++) {
            const job *j = mp->ranks[r].slots[k];
            if (j != NULL && (ctl == NULL || (j->map != NULL && j->map->ctl == ctl)))
                ask_cancel(mp, j);
        }
    }
}

/*
 * A task waiting on the root is cancelled here. A task sent to a rank: that
 * rank cancels it in its process pool (its worker is killed if it runs),
 * and the call waits for the answer, which tells whether the task was
 * cancelled or had ended first. From the progress thread (a done-callback)
 * it cannot wait: CF_EBUSY.
 */
static int mp_cancel(cf_executor *ex, cf_future *f)
{
    mpool *mp = mp_of(ex);
    cf_future *fire = NULL;
    job *gone = NULL;
    bool asked = false;
    pthread_mutex_lock(&mp->mu);
    job *j = mpart_of(f)->job;
    if (j != NULL && j->rank < 0 && unqueue(mp, j)) {
        finish_task(j, CF__CANCELLED, CF_ECANCELED, 0, &fire);
        job_gone(mp, j);
        gone = j;
    } else if (j != NULL && j->rank >= 0 && !pthread_equal(pthread_self(), mp->thread)) {
        asked = ask_cancel(mp, j);
    }
    pthread_mutex_unlock(&mp->mu);
    if (asked) {
        cf__ext_future_wait_state(ex, f, UINT64_MAX);
        return (cf__ext_future_state(f) & CF__STATE_MASK) == CF__CANCELLED ? 0 : CF_EBUSY;
    }
    if (gone == NULL)
        return CF_EBUSY;
    job_free(gone);
    cf__ext_future_fire(fire);
    return 0;
}

static bool mp_running(cf_executor *ex, cf_future *f)
{
    (void)ex;
    return atomic_load_explicit(&mpart_of(f)->sent, memory_order_relaxed);
}

static int mp_shutdown(cf_executor *ex, bool wait, bool cancel_pending, bool stop_running)
{
    mpool *mp = mp_of(ex);
    cf_future *fire = NULL;
    job *gone = NULL;
    pthread_mutex_lock(&mp->mu);
    if (cancel_pending || stop_running) {
        /* Every job waiting on the root ends CF_ECANCELED. */
        job *j = mp->head;
        mp->head = mp->tail = NULL;
        while (j != NULL) {
            job *next = j->next;
            if (j->f != NULL) {
                finish_task(j, CF__CANCELLED, CF_ECANCELED, 0, &fire);
                job_gone(mp, j);
            } else {
                cancel_queued_chunk(mp, j);
            }
            j->next = gone;
            gone = j;
            j = next;
        }
        /* Maps queue no more chunks; those waiting for room stop. */
        mp->drop_maps = true;
        for (mmap_ctl *m = mp->maps; m != NULL; m = m->next)
            pthread_cond_broadcast(&m->cv);
        /* Jobs sent to a rank that no worker there took have not started either. */
        for (int r = 0; r < mp->size; r++)
            mp->ranks[r].drop = r != mp->root;
        if (mp->sleeping)
            pthread_cond_signal(&mp->work);
    }
    if (stop_running)
        cancel_sent(mp, NULL);
    pthread_mutex_unlock(&mp->mu);
    cf__ext_future_fire(fire);
    while (gone != NULL) {
        job *next = gone->next;
        job_free(gone);
        gone = next;
    }
    if (wait) {
        pthread_mutex_lock(&mp->mu);
        while (mp->tasks > 0)
            pthread_cond_wait(&mp->idle, &mp->mu);
        pthread_mutex_unlock(&mp->mu);
    }
    return 0;
}

static int mp_resize(cf_executor *ex, unsigned workers)
{
    (void)ex;
    (void)workers;
    return CF_EINVAL;
}

static void mp_destroy(cf_executor *ex)
{
    mpool *mp = mp_of(ex);
    pthread_mutex_lock(&mp->mu);
    mp->stop = true;
    pthread_cond_signal(&mp->work);
    pthread_mutex_unlock(&mp->mu);
    pthread_join(mp->thread, NULL);
    cf__ext_executor_release(ex);
    for (int r = 0; r < mp->size; r++) {
        free(mp->ranks[r].slots);
        free(mp->ranks[r].free);
        free(mp->ranks[r].batch);
    }
    free(mp->ranks);
    free(mp->cancels);
    modtab_free(&mp->mods);
    pthread_mutex_destroy(&mp->mu);
    pthread_cond_destroy(&mp->work);
    pthread_cond_destroy(&mp->idle);
    free(mp);
}

static const cf__ops mpi_ops = {
    .name = "mpi",
    .submit = mp_submit,
    .map = mp_map,
    .map_cancel = mp_map_cancel,
    .cancel = mp_cancel,
    .wait = cf__ext_future_wait_state,     /* finished and woken by the progress thread */
    .watch = cf__ext_future_watch_none,    /* finished as soon as its result comes */
    .running = mp_running,
    .shutdown = mp_shutdown,
    .resize = mp_resize,
    .destroy = mp_destroy,
    .max_size = MAX_MSG,
    .future_size = sizeof(mpart),
};

/* ---- a serving rank ------------------------------------------------------ */

/* Runs a map chunk in a worker of the local pool: h.off holds the function's
 * address here (the serving rank decoded it). Outputs first (aligned as the
 * result buffer is), then each element's code. */
static int run_chunk(const void *arg, size_t arg_size, void *result, size_t result_size)
{
    chunk_msg h;
    if (arg_size < sizeof h)
        return CF_EINVAL;
    memcpy(&h, arg, sizeof h);
    if (h.count == 0 || arg_size - sizeof h != h.count * h.in_size ||
        result_size != h.count * (h.out_size + sizeof(int32_t)))
        return CF_EINVAL;
    const char *in = h.in_size > 0 ? (const char *)arg + sizeof h : NULL;   /* as on a process pool */
    char *out = result;
    unsigned char *codes = (unsigned char *)result + h.count * h.out_size;
    /* The elements run as a process pool's do: cf_task_index is the
     * element's (-1 in a chunk function), cf_task_error and
     * cf_task_set_result_size answer CF_EINVAL. */
    cf__element_scope scope;
    if (h.per_chunk) {
        cf_chunk_fn *fn = (cf_chunk_fn *)(uintptr_t)h.off;
        cf__ext_element_enter(-1, &scope);
        int32_t rc = fn(in, h.in_size, out, h.out_size, h.first, h.count);
        cf__ext_element_leave(&scope);
        for (size_t k = 0; k < h.count; k++)
            memcpy(codes + k * sizeof rc, &rc, sizeof rc);
        return 0;
    }
    cf_fn *fn = (cf_fn *)(uintptr_t)h.off;
    for (size_t k = 0; k < h.count; k++) {
        cf__ext_element_enter((long)(h.first + k), &scope);
        int32_t rc = fn(in != NULL ? in + k * h.in_size : NULL, h.in_size, out + k * h.out_size, h.out_size);
        cf__ext_element_leave(&scope);
        memcpy(codes + k * sizeof rc, &rc, sizeof rc);
    }
    return 0;
}

typedef struct rmod {              /* one of the root's objects, here */
    uintptr_t base, lo, hi;        /* hi 0: not loaded on this rank */
} rmod;

typedef struct served {
    uint64_t   id;
    cf_future *f;
    bool       chunk;              /* a map chunk */
} served;

typedef struct outbox {            /* results being sent */
    unsigned char *buf;
    MPI_Request    req;
} outbox;

typedef struct server {
    MPI_Comm     comm;
    int          root, rank;
    cf_executor *pool;
    rmod        *mods;
    unsigned     nmods;
    served      *run;
    size_t       nrun, caprun;
    outbox      *out;
    size_t       nout, capout;
    unsigned char *batch;          /* results not sent yet, one record after */
    size_t       blen, bcap;       /* another (see result_msg) */
} server;

static void *decode(const server *sv, uint32_t mod, uint64_t off)
{
    if (mod >= sv->nmods || sv->mods[mod].hi == 0)
        return NULL;
    uintptr_t a = sv->mods[mod].base + (uintptr_t)off;
    return a >= sv->mods[mod].lo && a < sv->mods[mod].hi ? (void *)a : NULL;
}

/* Sends the results gathered so far, in one message. */
static void flush_results(server *sv)
{
    if (sv->blen == 0)
        return;
    unsigned char *buf = sv->batch;
    size_t len = sv->blen;
    sv->batch = NULL;
    sv->blen = sv->bcap = 0;
    if (sv->nout == sv->capout) {
        size_t cap = sv->capout ? 2 * sv->capout : 16;
        outbox *o = realloc(sv->out, cap * sizeof *o);
        if (o == NULL) {
            MPI_Send(buf, (int)len, MPI_BYTE, sv->root, TAG_RESULT, sv->comm);
            free(buf);
            return;
        }
        sv->out = o;
        sv->capout = cap;
    }
    outbox *o = &sv->out[sv->nout++];
    o->buf = buf;
    MPI_Isend(buf, (int)len, MPI_BYTE, sv->root, TAG_RESULT, sv->comm, &o->req);
}

/* Room for a record of len bytes at the end of the batch (which is sent
 * first if the record would take it past BATCH_BYTES); NULL without memory. */
static unsigned char *result_room(server *sv, size_t len)
{
    if (sv->blen > 0 && sv->blen + len > BATCH_BYTES)
        flush_results(sv);
    if (!room_for(&sv->batch, &sv->bcap, sv->blen, len))
        return NULL;
    return sv->batch + sv->blen;
}

/* A result with no bytes: the task never ran here. */
static void send_code(server *sv, uint64_t id, int code)
{
    result_msg r = {.id = id, .code = code, .worker = -1};
    unsigned char *at = result_room(sv, sizeof r);
    if (at == NULL) {
        flush_results(sv);
        MPI_Send(&r, (int)sizeof r, MPI_BYTE, sv->root, TAG_RESULT, sv->comm);
        return;
    }
    memcpy(at, &r, sizeof r);
    sv->blen += sizeof r;
}

/* f is done: its outcome joins the batch for the root, then f is freed. */
static void answer(server *sv, uint64_t id, cf_future *f)
{
    result_msg r = {.id = id, .worker = -1};
    size_t len = 0, cap = f->result_size;
    int rs = cf_future_result_size(f, &len);
    const char *text = cf_future_error_text(f);
    size_t tl = text != NULL ? strlen(text) : 0;
    unsigned char *at = result_room(sv, sizeof r + cap + tl);
    if (at == NULL) {
        cf_future_free(f);
        send_code(sv, id, CF_ENOMEM);
        return;
    }
    if (rs == 0) {
        r.code = cf_future_result(f, at + sizeof r, cap, 0);
        r.has_result = 1;
        r.len = len;
    } else {
        r.code = rs;
    }
    r.sig = cf_future_signal(f);
    cf_task_info info;
    if (cf_future_info(f, &info) == 0)
        r.worker = info.worker;
    r.text_len = tl;
    memcpy(at, &r, sizeof r);
    if (tl > 0)
        memcpy(at + sizeof r + r.len, text, tl);
    cf_future_free(f);
    sv->blen += sizeof r + r.len + tl;
}

/* f runs here for the root's job id: the loop answers it once it ends. */
static void track(server *sv, uint64_t id, cf_future *f, bool chunk)
{
    if (sv->nrun == sv->caprun) {
        size_t cap = sv->caprun ? 2 * sv->caprun : 16;
        served *r = realloc(sv->run, cap * sizeof *r);
        if (r == NULL) {
            cf_future_wait(f, -1);
            answer(sv, id, f);
            return;
        }
        sv->run = r;
        sv->caprun = cap;
    }
    sv->run[sv->nrun++] = (served){.id = id, .f = f, .chunk = chunk};
}

static void submit_task(server *sv, const task_msg *h, cf_fn *fn, const void *arg)
{
    cf_submit_options so = {.timeout_ms = h->timeout_ms};
    cf_future *f = NULL;
    int rc = cf_submit_with(sv->pool, fn, arg, h->arg_size, h->result_size, &so, &f);
    if (rc != 0)
        send_code(sv, h->id, rc);
    else
        track(sv, h->id, f, false);
}

/* The task records of a TAG_TASK message, each submitted to the local pool.
 * A record that does not fit what is left ends the reading: its id is
 * answered CF_EINVAL (the root checks it against its jobs). */
static void take_tasks(server *sv, const unsigned char *buf, size_t len)
{
    size_t at = 0;
    while (len - at >= sizeof(task_msg)) {
        task_msg h;
        memcpy(&h, buf + at, sizeof h);
        if (h.arg_size > len - at - sizeof h) {
            send_code(sv, h.id, CF_EINVAL);
            return;
        }
        const unsigned char *arg = buf + at + sizeof h;
        at += sizeof h + h.arg_size;
        cf_fn *fn = (cf_fn *)decode(sv, h.mod, h.off);
        if (fn == NULL)
            send_code(sv, h.id, CF_EINVAL);
        else
            submit_task(sv, &h, fn, arg);
    }
}

/* One message from the root, probed (st): false for STOP. */
static bool take_order(server *sv, const MPI_Status *st)
{
    int count = 0;
    MPI_Get_count(st, MPI_BYTE, &count);
    unsigned char *buf = malloc(count > 0 ? (size_t)count : 1);
    if (buf == NULL) {
        sleep_ns(1000000);    /* no memory now: it stays in MPI */
        return true;
    }
    MPI_Recv(buf, count, MPI_BYTE, sv->root, st->MPI_TAG, sv->comm, MPI_STATUS_IGNORE);
    size_t len = count > 0 ? (size_t)count : 0;
    if (st->MPI_TAG == TAG_STOP) {
        free(buf);
        return false;
    }
    if (st->MPI_TAG == TAG_CANCEL) {
        /* The task ends CF_ECANCELED (its worker killed if it runs) and is
         * answered as any other; unknown: it ended already. */
        uint64_t id;
        if (len == sizeof id) {
            memcpy(&id, buf, sizeof id);
            for (size_t i = 0; i < sv->nrun; i++) {
                if (sv->run[i].id == id) {
                    cf_future_cancel(sv->run[i].f);
                    break;
                }
            }
        }
        free(buf);
        return true;
    }
    if (st->MPI_TAG == TAG_DROP) {
        /* The tasks no worker took end CF_ECANCELED. One that a worker
         * takes between the look and the cancel is stopped (its worker
         * killed), as cf_future_cancel stops a running task. */
        for (size_t i = 0; i < sv->nrun; i++) {
            if (!cf_future_running(sv->run[i].f))
                cf_future_cancel(sv->run[i].f);
        }
        free(buf);
        return true;
    }
    if (st->MPI_TAG == TAG_TASK) {
        take_tasks(sv, buf, len);
        free(buf);
        return true;
    }
    uint64_t id = 0;
    cf_future *f = NULL;
    int rc = CF_EINVAL;
    if (st->MPI_TAG == TAG_CHUNK && len >= sizeof(chunk_msg)) {
        chunk_msg h;
        memcpy(&h, buf, sizeof h);
        id = h.id;
        void *fn = decode(sv, h.mod, h.off);
        if (fn != NULL && h.count > 0 && h.out_size < MAX_MSG && h.count < MAX_MSG) {
            h.off = (uint64_t)(uintptr_t)fn;
            memcpy(buf, &h, sizeof h);
            rc = cf_submit(sv->pool, run_chunk, buf, len, h.count * (h.out_size + sizeof(int32_t)), &f);
        }
    }
    free(buf);
    if (rc != 0)
        send_code(sv, id, rc);
    else
        track(sv, id, f, true);
    return true;
}

/* Answers (and forgets) every future of run that has ended; true if any had. */
static bool answer_ended(server *sv)
{
    if (sv->nrun == 0)
        return false;
    cf__ext_collect(sv->pool);
    bool any = false;
    for (size_t i = 0; i < sv->nrun;) {
        served r = sv->run[i];
        if (!cf_future_done(r.f)) {
            i++;
            continue;
        }
        sv->run[i] = sv->run[--sv->nrun];
        answer(sv, r.id, r.f);
        any = true;
    }
    return any;
}

/*
 * The loop: orders from the root become tasks of the local pool; the
 * tasks that ended since the last pass go to the root in one message.
 * While something moved less than POLL_NS ago it polls, yielding the core
 * at each pass; then, with tasks running here, it waits for the oldest a
 * millisecond at a time (MPI is probed between), and with none it naps,
 * longer the longer it stays idle.
 */
static void serve(server *sv)
{
    uint64_t last = cf__ext_now_ns();
    unsigned naps = 0;
    for (;;) {
        bool busy = false;
        for (;;) {
            int flag = 0;
            MPI_Status st;
            MPI_Iprobe(sv->root, MPI_ANY_TAG, sv->comm, &flag, &st);
            if (!flag)
                break;
            if (!take_order(sv, &st))
                goto stop;
            busy = true;
        }
        busy = answer_ended(sv) || busy;
        flush_results(sv);
        for (size_t i = 0; i < sv->nout;) {
            int done = 0;
            MPI_Test(&sv->out[i].req, &done, MPI_STATUS_IGNORE);
            if (done) {
                free(sv->out[i].buf);
                sv->out[i] = sv->out[--sv->nout];
            } else {
                i++;
            }
        }
        uint64_t now = cf__ext_now_ns();
        if (busy) {
            last = now;
            naps = 0;
            continue;
        }
        if (now - last < POLL_NS) {
            sched_yield();
        } else if (sv->nrun > 0) {
            if (cf_future_wait(sv->run[0].f, 1) == 0)
                last = cf__ext_now_ns();
        } else {
            sleep_ns(naps < 16 ? 50000 : naps < 256 ? 200000 : 1000000);
            naps++;
        }
    }
stop:
    flush_results(sv);
    for (size_t i = 0; i < sv->nout; i++) {
        MPI_Wait(&sv->out[i].req, MPI_STATUS_IGNORE);
        free(sv->out[i].buf);
    }
}

/* ---- creation ------------------------------------------------------------ */

typedef struct hello {
    int32_t  err;
    uint32_t workers;
    uint64_t hash;
} hello;

/* The root's object names, '\0' after each, to every rank; on a serving
 * rank, where each of them is here. */
static int share_modules(MPI_Comm comm, int root, int rank, const modtab *t, rmod **out, unsigned *nout)
{
    uint64_t len = 0;
    char *names = NULL;
    if (rank == root) {
        for (unsigned i = 0; i < t->n; i++)
            len += strlen(t->m[i].name) + 1;
        names = malloc(len ? len : 1);
        if (names != NULL) {
            char *at = names;
            for (unsigned i = 0; i < t->n; i++)
                at = stpcpy(at, t->m[i].name) + 1;
        } else {
            len = UINT64_MAX;
        }
    }
    MPI_Bcast(&len, 1, MPI_UINT64_T, root, comm);
    if (len == UINT64_MAX || len > INT_MAX)
        return CF_ENOMEM;
    if (rank != root && (names = malloc(len ? len : 1)) == NULL)
        len = 0;    /* still joins the broadcast, below, into a scratch byte */
    char scratch;
    MPI_Bcast(names != NULL ? names : &scratch, names != NULL ? (int)len : 1, MPI_BYTE, root, comm);
    int rc = 0;
    if (rank != root) {
        modtab here;
        unsigned n = 0;
        for (uint64_t i = 0; names != NULL && i < len; i++)
            n += names[i] == '\0';
        rmod *m = calloc(n ? n : 1, sizeof *m);
        if (names == NULL || m == NULL || modtab_build(&here) != 0) {
            free(m);
            rc = CF_ENOMEM;
        } else {
            const char *at = names;
            for (unsigned i = 0; i < n; i++, at += strlen(at) + 1) {
                for (unsigned k = 0; k < here.n; k++) {
                    if (strcmp(here.m[k].name, at) == 0) {
                        m[i] = (rmod){here.m[k].base, here.m[k].lo, here.m[k].hi};
                        break;
                    }
                }
            }
            modtab_free(&here);
            *out = m;
            *nout = n;
        }
    }
    free(names);
    return rc;
}

CF_EXPORT int cf_mpi_pool_new(cf_executor **out, MPI_Comm comm, int root, const cf_options *opts)
{
    int inited = 0, finalized = 0, size = 0, rank = 0, level = MPI_THREAD_SINGLE;
    MPI_Initialized(&inited);
    MPI_Finalized(&finalized);
    if (!inited || finalized || comm == MPI_COMM_NULL)
        return CF_EINVAL;
    if (MPI_Comm_size(comm, &size) != MPI_SUCCESS || MPI_Comm_rank(comm, &rank) != MPI_SUCCESS)
        return CF_EINVAL;
    if (root < 0 || root >= size)
        return CF_EINVAL;
    MPI_Query_thread(&level);

    hello me = {.hash = build_hash()};
    mpool *mp = NULL;
    cf_executor *local = NULL;
    if (out == NULL || size < 2) {
        me.err = CF_EINVAL;
    } else if (rank == root) {
        if (level < MPI_THREAD_SERIALIZED) {
            fprintf(stderr, "cfutures-mpi: the root needs MPI_THREAD_SERIALIZED at least "
                            "(MPI_Init_thread); it has %d\n", level);
            me.err = CF_EINVAL;
        } else if ((mp = calloc(1, sizeof *mp)) == NULL) {
            me.err = CF_ENOMEM;
        } else if ((me.err = cf__ext_executor_init(&mp->ex, &mpi_ops, opts)) == 0) {
            me.err = modtab_build(&mp->mods);
        }
    } else {
        me.err = cf_process_pool_new(&local, opts);
        if (me.err == 0)
            me.workers = cf_executor_workers(local);
    }

    /* Every rank joins each collective below, whatever failed before it,
     * so that all of them return the same code. */
    hello *all = calloc((size_t)size, sizeof *all);
    hello one;
    if (all == NULL)
        me.err = CF_ENOMEM;
    int rc = 0;
    if (all != NULL) {
        MPI_Allgather(&me, sizeof me, MPI_BYTE, all, sizeof me, MPI_BYTE, comm);
        for (int r = 0; r < size && rc == 0; r++)
            rc = all[r].err;
        for (int r = 0; r < size; r++) {
            if (all[r].hash == all[root].hash)
                continue;
            if (rank == root)
                fprintf(stderr, "cfutures-mpi: rank %d runs another build than rank %d (the root): "
                                "refused\n", r, root);
            if (rc == 0)
                rc = CF_EINVAL;
        }
    } else {
        /* No room for every rank's entry: a byte buffer per rank, once. */
        unsigned char *tmp = malloc((size_t)size * sizeof me);
        MPI_Allgather(&me, sizeof me, MPI_BYTE, tmp != NULL ? (void *)tmp : (void *)&one,
                      tmp != NULL ? (int)sizeof me : 0, MPI_BYTE, comm);
        free(tmp);
        rc = CF_ENOMEM;
    }
    int agreed = rc;
    MPI_Allreduce(&rc, &agreed, 1, MPI_INT, MPI_MIN, comm);
    rc = agreed;

    server sv = {.comm = comm, .root = root, .rank = rank, .pool = local};
    if (rc == 0) {
        int e = share_modules(comm, root, rank, mp != NULL ? &mp->mods : NULL, &sv.mods, &sv.nmods);
        MPI_Allreduce(&e, &rc, 1, MPI_INT, MPI_MIN, comm);
    }
    if (rc == 0 && rank == root) {
        unsigned total = 0;
        mp->comm = comm;
        mp->size = size;
        mp->root = root;
        mp->ranks = calloc((size_t)size, sizeof *mp->ranks);
        for (int r = 0; mp->ranks != NULL && r < size; r++) {
            if (r == root)
                continue;
            unsigned w = all[r].workers > 0 && all[r].workers <= CF__MAX_WORKERS ? all[r].workers : 1;
            total += w;
            rankst *rs = &mp->ranks[r];
            rs->workers = w;
            rs->nslots = rs->credit = TASK_CREDIT_PER_WORKER * w;
            rs->slots = calloc(rs->nslots, sizeof *rs->slots);
            rs->free = malloc(rs->nslots * sizeof *rs->free);
            if (rs->slots == NULL || rs->free == NULL)
                rc = CF_ENOMEM;
            for (unsigned k = 0; rs->free != NULL && k < rs->nslots; k++)
                rs->free[rs->nfree++] = rs->nslots - 1 - k;
        }
        if (mp->ranks == NULL)
            rc = CF_ENOMEM;
        atomic_store(&mp->ex.workers, total);
        /* Recursive: an element callback, run by chunk_end under mu, may
         * cancel its map (mp_map_cancel). */
        pthread_mutexattr_t ma;
        pthread_mutexattr_init(&ma);
        pthread_mutexattr_settype(&ma, PTHREAD_MUTEX_RECURSIVE);
        pthread_mutex_init(&mp->mu, &ma);
        pthread_mutexattr_destroy(&ma);
        pthread_cond_init(&mp->work, NULL);
        pthread_cond_init(&mp->idle, NULL);
        if (rc == 0 && pthread_create(&mp->thread, NULL, progress, mp) != 0)
            rc = CF_EAGAIN;
        if (rc != 0) {
            /* The other ranks serve already: release them. */
            for (int r = 0; r < size; r++) {
                if (r != root)
                    MPI_Send(NULL, 0, MPI_BYTE, r, TAG_STOP, comm);
            }
            for (int r = 0; mp->ranks != NULL && r < size; r++) {
                free(mp->ranks[r].slots);
                free(mp->ranks[r].free);
            }
            free(mp->ranks);
            pthread_mutex_destroy(&mp->mu);
            pthread_cond_destroy(&mp->work);
            pthread_cond_destroy(&mp->idle);
        }
    }
    free(all);
    if (rank == root) {
        if (rc != 0 && mp != NULL) {
            if (mp->ex.core != NULL)
                cf__ext_executor_release(&mp->ex);
            modtab_free(&mp->mods);
            free(mp);
        }
        if (rc == 0)
            *out = &mp->ex;
        return rc;
    }
    if (rc == 0)
        serve(&sv);
    /* STOP comes once the root has every result: nothing is left here. */
    free(sv.run);
    free(sv.out);
    free(sv.batch);
    free(sv.mods);
    if (local != NULL)
        cf_executor_free(local);
    if (rc == 0)
        *out = NULL;
    return rc;
}
