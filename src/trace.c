/*
 * trace.c — what the pool did, as a Chrome Trace Event Format file.
 *
 * When CFUTURES_TRACE names a file (read with secure_getenv each time a pool
 * is created), the pool gets a tracer: a fixed array of binary records in
 * the caller's memory, and a file it writes them to as JSON that Perfetto
 * and chrome://tracing open ({"traceEvents":[...]}, times in microseconds
 * of CLOCK_MONOTONIC). Off, the executor holds NULL and every hook is one
 * predictable branch on that pointer (ex->trace, or a future's own
 * trace.id); workers never do anything for it.
 *
 * What is recorded, and where. Every record comes from the caller's process,
 * from what the pool already keeps: a future's submit (executor.c: its id,
 * its function, the time), its completion (future.c, cf__future_fire, the
 * one place both backends pass every finished future through, with no lock
 * held: the outcome and cf_future_info's worker and times), and each map
 * chunk (the backends, where a chunk's outcome is collected). A worker that
 * dies leaves nothing to lose: its task's times are the ones the pool kept
 * (the start its worker wrote, the end the pool stamped when it saw it die).
 * Times and worker ids a process worker wrote are checked before use: a
 * task whose times make no sense (start after end, end in the future,
 * start before its submit) or whose worker is not one of the pool's gets no
 * bar, only an instant "times unreadable" on the caller's track.
 *
 * From one completion record the writer makes: an async pair ("b"/"e",
 * category "queue", id the future's) for the wait from submit to start, a
 * complete event ("X") on the worker's track when the task started, an
 * instant ("i") when the library ended it (crashed, timed out, cancelled,
 * overrun, broken), and the counter "tasks in flight" ("C": submitted and
 * not yet done, as the caller sees them).
 *
 * Bounds and locks. Two buffers of TRACE_EVENTS records each. A hook
 * fills the next record of the current buffer under a spinlock held for a
 * few dozen instructions (the caller's submits and the completions of the
 * workers or the manager meet there: a mutex made them sleep on each other).
 * The thread that finds the buffer full takes the writer's mutex, swaps the
 * buffers under the spinlock, and formats and writes the full one with the
 * spinlock released, so recording goes on meanwhile; a second buffer that
 * fills before the write ends waits for it. Neither lock is ever held with
 * a pool's lock (no hook runs under one); the writer's mutex may be held
 * while taking the descriptor lock (to close the file), never the reverse;
 * the spinlock is held across nothing but a clock read. Writing happens in
 * whichever thread fills a buffer: a caller's, the process pool's manager,
 * or a thread pool's worker. cf__trace_close, from cf__executor_release,
 * writes the rest and closes the JSON. A write that fails turns the tracer
 * off with one line on stderr; so does a file that cannot be opened (the
 * pool itself is created as usual).
 *
 * Files: the first pool a process traces writes to the path as given, its
 * n-th (n >= 2) to the path with ".n" before its extension (run.json,
 * run.2.json, …); "%p" in the path stands for the pid, for programs that
 * fork and trace in both processes (a child's count goes on from its
 * parent's). A pool created from inside a task (cf_worker_id() >= 0) is not
 * traced: in a fork worker it would reuse the caller's names. The
 * descriptor is close-on-exec and tracked (launcher.c), so no zygote or
 * worker keeps it open.
 */
#include "internal.h"

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define TRACE_EVENTS 8192u           /* records per buffer: two of 512 KiB */
#define TEXT_BYTES   65536u          /* JSON formatted before a write(2) */
#define TEXT_EVENT   1024u           /* room one formatted record may need */
#define CALLER_TID   1000            /* the track of the caller's own events */
#define NAME_MAX_    128u

enum { EV_TASK = 1, EV_CHUNK, EV_COUNT };

typedef struct event {
    uint8_t     kind;
    uint8_t     state;               /* EV_TASK: CF__FINISHED or CF__CANCELLED */
    int16_t     worker;              /* -1: none (checked on entry) */
    int32_t     code, sig;
    uint64_t    id;                  /* task: future id; chunk: first element */
    uint64_t    count;               /* chunk: elements; else tasks in flight */
    uint64_t    queued, start, end;  /* ns; 0: unknown */
    uint64_t    at;                  /* ns: when the caller recorded it */
    const void *fn;
} event;

struct cf__trace {
    atomic_flag     spin;            /* guards cur, n, next_id, inflight, off */
    event          *cur;             /* the buffer hooks fill */
    unsigned        n;               /* records in cur */
    uint64_t        next_id;
    uint64_t        inflight;
    bool            off;             /* a write failed: record nothing more */
    pthread_mutex_t write_mu;        /* guards everything below, and spare */
    event          *spare;           /* the other buffer: the writer's */
    int             fd;              /* -1 once a write failed */
    pid_t           pid;
    unsigned        named;           /* lanes "worker 0" .. named-1 are written */
    bool            first;           /* no event written yet: no comma */
    size_t          text_len;
    const void     *name_fn;         /* one-entry cache of fn_name */
    char            name[NAME_MAX_];
    char           *path;
    char            text[TEXT_BYTES];
    event           ev[2][TRACE_EVENTS];
};

static _Atomic unsigned traced_pools;

/* ---- the file ------------------------------------------------------------ */

static void give_up(cf__trace *t, int err)
{
    fprintf(stderr, "cfutures: CFUTURES_TRACE: cannot write %s: %s; tracing stopped\n",
            t->path, strerror(err));
    cf__fd_close(t->fd);
    t->fd = -1;
}

static void text_flush(cf__trace *t)
{
    size_t done = 0;
    while (t->fd >= 0 && done < t->text_len) {
        ssize_t w = write(t->fd, t->text + done, t->text_len - done);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            give_up(t, w < 0 ? errno : ENOSPC);
            break;
        }
        done += (size_t)w;
    }
    t->text_len = 0;
}

static void put(cf__trace *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void put(cf__trace *t, const char *fmt, ...)
{
    if (TEXT_BYTES - t->text_len < TEXT_EVENT)
        text_flush(t);
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(t->text + t->text_len, TEXT_BYTES - t->text_len, fmt, ap);
    va_end(ap);
    /* Every format below is far shorter than TEXT_EVENT. */
    if (n > 0)
        t->text_len += (size_t)n < TEXT_BYTES - t->text_len ? (size_t)n : 0;
}

/* One event: the separator, then the object. */
static const char *sep(cf__trace *t)
{
    if (t->first) {
        t->first = false;
        return "";
    }
    return ",\n";
}

/* ---- names --------------------------------------------------------------- */

/*
 * The symbol dladdr knows for fn, when fn is exactly its address, else fn in
 * hex. Only [A-Za-z0-9_.$@] pass into the JSON: no escaping is ever needed.
 */
static const char *fn_name(cf__trace *t, const void *fn)
{
    if (fn == t->name_fn && t->name[0] != '\0')
        return t->name;
    Dl_info info;
    t->name_fn = fn;
    if (dladdr(fn, &info) != 0 && info.dli_sname != NULL && info.dli_saddr == fn) {
        size_t i = 0;
        for (const char *s = info.dli_sname; *s != '\0' && i < NAME_MAX_ - 1; s++, i++) {
            char c = *s;
            bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                      c == '_' || c == '.' || c == '$' || c == '@';
            t->name[i] = ok ? c : '_';
        }
        t->name[i] = '\0';
        if (i > 0)
            return t->name;
    }
    snprintf(t->name, sizeof t->name, "%#" PRIxPTR, (uintptr_t)fn);
    return t->name;
}

static const char *outcome(int state, int code)
{
    if (state == CF__CANCELLED || code == CF_ECANCELED)
        return "cancelled";
    switch (code) {
    case CF_ECRASHED:  return "crashed";
    case CF_ETIMEDOUT: return "timed out";
    case CF_EOVERRUN:  return "overrun";
    case CF_EBROKEN:   return "broken";
    default:           return "failed";
    }
}

/* ---- formatting ---------------------------------------------------------- */

/* Stamps taken by different threads may be out of the order of their
 * events by a cache line's transfer (cf__stamp_ns): so much is allowed. */
#define ORDER_SLACK_NS 1000u

static bool times_ok(const event *e)
{
    return e->start != 0 && e->end >= e->start && e->end <= e->at + ORDER_SLACK_NS &&
           (e->queued == 0 || e->start + ORDER_SLACK_NS >= e->queued) && e->worker >= 0 &&
           (unsigned)e->worker < CF__MAX_WORKERS;
}

/* Under write_mu (or while opening): names the worker lanes up to worker n - 1. */
static void name_lanes(cf__trace *t, unsigned n)
{
    for (; t->named < n; t->named++)
        put(t, "%s{\"ph\":\"M\",\"name\":\"thread_name\",\"pid\":%d,\"tid\":%u,"
               "\"args\":{\"name\":\"worker %u\"}}",
            sep(t), (int)t->pid, t->named, t->named);
}

/*
 * The events are appended by hand, not with printf: formatting is most of
 * what tracing costs, and vfprintf was most of the formatting. Each event
 * starts with ev_begin, which makes room for it (TEXT_EVENT, far more than
 * any event needs) and writes the members every event has.
 */
static void add_s(cf__trace *t, const char *s)
{
    size_t n = strlen(s);
    memcpy(t->text + t->text_len, s, n);
    t->text_len += n;
}

static void add_u(cf__trace *t, uint64_t v)
{
    char digits[20];
    int n = 0;
    do {
        digits[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v != 0);
    while (n > 0)
        t->text[t->text_len++] = digits[--n];
}

static void add_i(cf__trace *t, int64_t v)
{
    if (v < 0) {
        t->text[t->text_len++] = '-';
        add_u(t, (uint64_t)0 - (uint64_t)v);
    } else {
        add_u(t, (uint64_t)v);
    }
}

/* Nanoseconds as microseconds with three decimals: "123.456". */
static void add_us(cf__trace *t, uint64_t ns)
{
    unsigned frac = (unsigned)(ns % 1000u);
    add_u(t, ns / 1000u);
    t->text[t->text_len++] = '.';
    t->text[t->text_len++] = (char)('0' + frac / 100);
    t->text[t->text_len++] = (char)('0' + frac / 10 % 10);
    t->text[t->text_len++] = (char)('0' + frac % 10);
}

/* {"ph":"<ph>","name":"<name>","pid":..,"tid":..,"ts":.. — the caller closes it. */
static void ev_begin(cf__trace *t, const char *ph, const char *name, int tid, uint64_t ts_ns)
{
    if (TEXT_BYTES - t->text_len < TEXT_EVENT)
        text_flush(t);
    add_s(t, sep(t));
    add_s(t, "{\"ph\":\"");
    add_s(t, ph);
    add_s(t, "\",\"name\":\"");
    add_s(t, name);
    add_s(t, "\",\"pid\":");
    add_i(t, t->pid);
    add_s(t, ",\"tid\":");
    add_i(t, tid);
    add_s(t, ",\"ts\":");
    add_us(t, ts_ns);
}

/* ,"args":{"future":..,"code":..,"signal":..}} — or "first" and "count" for a chunk. */
static void ev_args(cf__trace *t, const event *e, bool chunk)
{
    add_s(t, chunk ? ",\"args\":{\"first\":" : ",\"args\":{\"future\":");
    add_u(t, e->id);
    if (chunk) {
        add_s(t, ",\"count\":");
        add_u(t, e->count);
    }
    add_s(t, ",\"code\":");
    add_i(t, e->code);
    add_s(t, ",\"signal\":");
    add_i(t, e->sig);
    add_s(t, "}}");
}

static void put_counter(cf__trace *t, uint64_t at, uint64_t value)
{
    ev_begin(t, "C", "tasks in flight", CALLER_TID, at);
    add_s(t, ",\"args\":{\"tasks\":");
    add_u(t, value);
    add_s(t, "}}");
}

/* The bar of a task or chunk that started, and the instant of one the library ended. */
static void put_run(cf__trace *t, const event *e, bool chunk, bool ran)
{
    if (ran) {
        ev_begin(t, "X", fn_name(t, e->fn), e->worker, e->start);
        add_s(t, ",\"dur\":");
        add_us(t, e->end - e->start);
        ev_args(t, e, chunk);
    } else if (e->start != 0) {
        ev_begin(t, "i", "times unreadable", CALLER_TID, e->at);
        add_s(t, ",\"s\":\"t\"");
        ev_args(t, e, chunk);
    }
    if (e->state == CF__CANCELLED || e->code < 0) {
        ev_begin(t, "i", outcome(e->state, e->code), ran ? e->worker : CALLER_TID,
                 ran ? e->end : e->at);
        add_s(t, ",\"s\":\"t\"");
        ev_args(t, e, chunk);
    }
}

static void put_task(cf__trace *t, const event *e)
{
    bool ran = times_ok(e);
    if (e->queued != 0) {
        uint64_t until = ran ? e->start : e->at;
        if (until < e->queued)
            until = e->queued;
        for (int end = 0; end < 2; end++) {
            ev_begin(t, end ? "e" : "b", fn_name(t, e->fn), CALLER_TID, end ? until : e->queued);
            add_s(t, ",\"cat\":\"queue\",\"id\":");
            add_u(t, e->id);
            add_s(t, "}");
        }
    }
    put_run(t, e, false, ran);
    put_counter(t, e->at, e->count);
}

static void spin_lock(cf__trace *t)
{
    if (!atomic_flag_test_and_set_explicit(&t->spin, memory_order_acquire))
        return;
    /* Held for a few instructions; yields now and then in case its holder was preempted. */
    cf__spinner spin;
    cf__spin_begin(&spin, UINT64_MAX);
    do
        cf__spin(&spin);
    while (atomic_flag_test_and_set_explicit(&t->spin, memory_order_acquire));
}

static void spin_unlock(cf__trace *t)
{
    atomic_flag_clear_explicit(&t->spin, memory_order_release);
}

/* Under write_mu: formats and writes n records of ev. */
static void write_events(cf__trace *t, const event *ev, unsigned n)
{
    for (unsigned i = 0; i < n && t->fd >= 0; i++) {
        const event *e = &ev[i];
        if (e->kind != EV_COUNT && times_ok(e))
            name_lanes(t, (unsigned)e->worker + 1);    /* a worker the pool grew by */
        if (e->kind == EV_TASK)
            put_task(t, e);
        else if (e->kind == EV_CHUNK)
            put_run(t, e, true, times_ok(e));
        else
            put_counter(t, e->at, e->count);
    }
}

/*
 * The current buffer was found full: unless another thread did it already,
 * swaps in the spare one and writes the full one out, while hooks go on
 * recording into the other.
 */
static void rotate(cf__trace *t)
{
    pthread_mutex_lock(&t->write_mu);
    spin_lock(t);
    event *full = NULL;
    unsigned n = t->n;
    if (n == TRACE_EVENTS) {
        full = t->cur;
        t->cur = t->spare;
        t->n = 0;
    }
    spin_unlock(t);
    if (full != NULL) {
        t->spare = full;
        write_events(t, full, n);
        text_flush(t);
        if (t->fd < 0) {
            spin_lock(t);
            t->off = true;
            spin_unlock(t);
        }
    }
    pthread_mutex_unlock(&t->write_mu);
}

/*
 * Takes the spinlock and returns a free record, or NULL (spinlock released)
 * when the tracer is off. The caller fills it and calls spin_unlock.
 */
static event *record(cf__trace *t)
{
    spin_lock(t);
    while (t->n == TRACE_EVENTS && !t->off) {
        spin_unlock(t);
        rotate(t);
        spin_lock(t);
    }
    if (t->off) {
        spin_unlock(t);
        return NULL;
    }
    event *e = &t->cur[t->n++];
    memset(e, 0, sizeof *e);
    e->worker = -1;
    return e;
}

/* ---- opening and closing ------------------------------------------------- */

/*
 * The file of the process's n-th traced pool: path with each "%p" replaced
 * by the pid, then, for n >= 2, ".n" before the extension.
 */
static char *numbered(const char *path, unsigned n, pid_t pid)
{
    size_t len = strlen(path), cap = 2 * len + 32;
    char *pids = malloc(cap), *out = malloc(cap);
    if (pids == NULL || out == NULL) {
        free(pids);
        free(out);
        return NULL;
    }
    size_t k = 0;
    for (const char *p = path; *p != '\0' && k + 16 < cap; p++) {
        if (p[0] == '%' && p[1] == 'p') {
            k += (size_t)snprintf(pids + k, cap - k, "%d", (int)pid);
            p++;
        } else {
            pids[k++] = *p;
        }
    }
    pids[k] = '\0';
    const char *slash = strrchr(pids, '/'), *dot = strrchr(pids, '.');
    size_t stem = dot != NULL && (slash == NULL || dot > slash + 1) ? (size_t)(dot - pids) : k;
    if (n == 1)
        snprintf(out, cap, "%s", pids);
    else
        snprintf(out, cap, "%.*s.%u%s", (int)stem, pids, n, pids + stem);
    free(pids);
    return out;
}

static int open_tracked(const char *path)
{
    cf__fd_lock();
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOCTTY, 0666);
    int err = errno;
    if (fd >= 0 && cf__fd_track(fd) != 0) {
        close(fd);
        fd = -1;
        err = ENOMEM;
    }
    cf__fd_unlock();
    errno = err;
    return fd;
}

cf__trace *cf__trace_open(const cf_executor *ex)
{
    const char *path = secure_getenv("CFUTURES_TRACE");
    if (__builtin_expect(path == NULL || path[0] == '\0', 1) || cf__worker_id >= 0)
        return NULL;
    cf__trace *t = malloc(sizeof *t);
    if (t == NULL) {
        fprintf(stderr, "cfutures: CFUTURES_TRACE: out of memory; this pool is not traced\n");
        return NULL;
    }
    unsigned number = atomic_fetch_add(&traced_pools, 1) + 1;
    if ((t->path = numbered(path, number, ex->owner)) == NULL || (t->fd = open_tracked(t->path)) < 0) {
        fprintf(stderr, "cfutures: CFUTURES_TRACE: cannot open %s: %s; this pool is not traced\n",
                t->path != NULL ? t->path : path, strerror(t->path != NULL ? errno : ENOMEM));
        free(t->path);
        free(t);
        return NULL;
    }
    if (pthread_mutex_init(&t->write_mu, NULL) != 0)
        abort();
    atomic_flag_clear(&t->spin);
    t->cur = t->ev[0];
    t->spare = t->ev[1];
    t->n = 0;
    t->next_id = 0;
    t->inflight = 0;
    t->off = false;
    t->pid = ex->owner;
    t->named = 0;
    t->first = true;
    t->text_len = 0;
    t->name_fn = NULL;
    t->name[0] = '\0';

    bool thread = strcmp(ex->ops->name, "thread") == 0;
    put(t, "{\"traceEvents\":[\n");
    put(t, "%s{\"ph\":\"M\",\"name\":\"process_name\",\"pid\":%d,\"tid\":0,"
           "\"args\":{\"name\":\"cfutures %s pool %u (%s%u worker%s)\"}}",
        sep(t), (int)t->pid, ex->ops->name, number,
        thread ? "" : ex->opts.start == CF_START_EXEC ? "exec, " : "fork, ", ex->workers,
        ex->workers == 1 ? "" : "s");
    name_lanes(t, ex->workers);
    put(t, "%s{\"ph\":\"M\",\"name\":\"thread_name\",\"pid\":%d,\"tid\":%d,"
           "\"args\":{\"name\":\"caller\"}}",
        sep(t), (int)t->pid, CALLER_TID);
    return t;
}

void cf__trace_close(cf__trace *t)
{
    if (t == NULL)
        return;
    /* Every hook has returned (see internal.h): no lock is needed, but
     * taking write_mu orders this after a rotate that may still be writing. */
    pthread_mutex_lock(&t->write_mu);
    write_events(t, t->cur, t->n);
    put(t, "\n]}\n");
    text_flush(t);
    if (t->fd >= 0)
        cf__fd_close(t->fd);
    pthread_mutex_unlock(&t->write_mu);
    pthread_mutex_destroy(&t->write_mu);
    free(t->path);
    free(t);
}

/* ---- the hooks ----------------------------------------------------------- */

/*
 * Counter records take their time under the spinlock, with their value:
 * else two threads could write them with times in one order and values in
 * the other, and the counter would end above 0.
 */
void cf__trace_submit(cf__trace *t, cf_future *f, void *fn)
{
    f->trace.fn = fn;
    event *e = record(t);
    if (e == NULL)
        return;
    uint64_t now = cf__stamp_ns();
    f->trace.submit_ns = now;
    f->trace.id = ++t->next_id;
    e->kind = EV_COUNT;
    e->at = now;
    e->count = ++t->inflight;
    spin_unlock(t);
}

void cf__trace_unsubmit(cf__trace *t, cf_future *f)
{
    if (f->trace.id == 0)
        return;
    f->trace.id = 0;
    event *e = record(t);
    if (e == NULL)
        return;
    e->kind = EV_COUNT;
    e->at = cf__stamp_ns();
    e->count = --t->inflight;
    spin_unlock(t);
}

static int16_t worker_of(int w)
{
    return w >= 0 && (unsigned)w < CF__MAX_WORKERS ? (int16_t)w : -1;
}

void cf__trace_done(cf__trace *t, const cf_future *f)
{
    event *e = record(t);
    if (e == NULL)
        return;
    uint64_t now = cf__stamp_ns();
    e->kind = EV_TASK;
    e->state = (uint8_t)cf__future_state(f);
    e->worker = worker_of(f->info.worker);
    e->code = f->code;
    e->sig = f->signal;
    e->id = f->trace.id;
    e->count = --t->inflight;
    e->queued = f->trace.submit_ns;
    e->start = f->info.start_ns;
    e->end = f->info.end_ns;
    e->at = now;
    e->fn = f->trace.fn;
    spin_unlock(t);
}

void cf__trace_chunk(cf__trace *t, const void *fn, int worker, uint64_t start_ns, uint64_t end_ns,
                     size_t first, size_t count, int code, int sig)
{
    uint64_t now = cf__stamp_ns();
    event *e = record(t);
    if (e == NULL)
        return;
    e->kind = EV_CHUNK;
    e->worker = worker_of(worker);
    e->code = code;
    e->sig = sig;
    e->id = first;
    e->count = count;
    e->start = start_ns;
    e->end = end_ns;
    e->at = now;
    e->fn = fn;
    spin_unlock(t);
}
