/*
 * trace.c — what the pool did, as a Chrome Trace Event Format file.
 *
 * When CFUTURES_TRACE names a file (read with secure_getenv each time a pool
 * is created), the pool gets a tracer: a fixed array of binary records in
 * the caller's memory, and a file it writes them to as JSON that Perfetto
 * and chrome://tracing open ({"traceEvents":[...]}, times in microseconds
 * of CLOCK_MONOTONIC). Off, the pool's core holds NULL and every hook is one
 * predictable branch on that pointer; workers never do anything for it.
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
 * Bounds. TRACE_EVENTS records; when they are full, the thread that adds
 * the next formats them all and writes them (the only blocking done here,
 * under the tracer's own lock, which is a leaf: no pool lock is held by any
 * hook that takes it). cf__trace_close, from cf__executor_release, writes
 * the rest and closes the JSON. A write that fails turns the tracer off with
 * one line on stderr; so does a file that cannot be opened (the pool itself
 * is created as usual).
 *
 * Files: the first pool a process traces writes to the path as given, its
 * n-th (n >= 2) to the path with ".n" before its extension (run.json,
 * run.2.json, …). A pool created from inside a task (cf_worker_id() >= 0)
 * is not traced: in a fork worker it would reuse the caller's names. The
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

#define TRACE_EVENTS 16384u          /* records held before a write (1 MiB) */
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
    pthread_mutex_t mu;
    int             fd;              /* -1 once a write failed */
    pid_t           pid;
    unsigned        workers;
    uint64_t        next_id;         /* under mu */
    uint64_t        inflight;        /* under mu */
    unsigned        n;               /* records in ev, under mu */
    bool            first;           /* no event written yet: no comma */
    size_t          text_len;
    const void     *name_fn;         /* one-entry cache of fn_name */
    char            name[NAME_MAX_];
    char           *path;
    char            text[TEXT_BYTES];
    event           ev[TRACE_EVENTS];
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

/* Microseconds with three decimals, as "123.456". */
#define US_FMT "%" PRIu64 ".%03u"
#define US(ns) (uint64_t)((ns) / 1000u), (unsigned)((ns) % 1000u)

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

static bool times_ok(const cf__trace *t, const event *e)
{
    return e->start != 0 && e->end >= e->start && e->end <= e->at &&
           (e->queued == 0 || e->start >= e->queued) && e->worker >= 0 &&
           (unsigned)e->worker < t->workers;
}

static void put_counter(cf__trace *t, uint64_t at, uint64_t value)
{
    put(t, "%s{\"ph\":\"C\",\"name\":\"tasks in flight\",\"pid\":%d,\"tid\":%d,\"ts\":" US_FMT
           ",\"args\":{\"tasks\":%" PRIu64 "}}",
        sep(t), (int)t->pid, CALLER_TID, US(at), value);
}

static void put_task(cf__trace *t, const event *e)
{
    const char *name = fn_name(t, e->fn);
    bool ran = times_ok(t, e);
    int pid = (int)t->pid;
    if (e->queued != 0) {
        uint64_t until = ran ? e->start : e->at >= e->queued ? e->at : e->queued;
        put(t, "%s{\"ph\":\"b\",\"cat\":\"queue\",\"name\":\"%s\",\"id\":%" PRIu64
               ",\"pid\":%d,\"tid\":%d,\"ts\":" US_FMT "}",
            sep(t), name, e->id, pid, CALLER_TID, US(e->queued));
        put(t, "%s{\"ph\":\"e\",\"cat\":\"queue\",\"name\":\"%s\",\"id\":%" PRIu64
               ",\"pid\":%d,\"tid\":%d,\"ts\":" US_FMT "}",
            sep(t), name, e->id, pid, CALLER_TID, US(until));
    }
    if (ran)
        put(t, "%s{\"ph\":\"X\",\"name\":\"%s\",\"pid\":%d,\"tid\":%d,\"ts\":" US_FMT
               ",\"dur\":" US_FMT ",\"args\":{\"future\":%" PRIu64 ",\"code\":%d,\"signal\":%d}}",
            sep(t), name, pid, (int)e->worker, US(e->start), US(e->end - e->start), e->id,
            (int)e->code, (int)e->sig);
    else if (e->start != 0)
        put(t, "%s{\"ph\":\"i\",\"s\":\"t\",\"name\":\"times unreadable\",\"pid\":%d,\"tid\":%d,"
               "\"ts\":" US_FMT ",\"args\":{\"future\":%" PRIu64 "}}",
            sep(t), pid, CALLER_TID, US(e->at), e->id);
    if (e->state == CF__CANCELLED || e->code < 0)
        put(t, "%s{\"ph\":\"i\",\"s\":\"t\",\"name\":\"%s\",\"pid\":%d,\"tid\":%d,\"ts\":" US_FMT
               ",\"args\":{\"future\":%" PRIu64 ",\"code\":%d,\"signal\":%d}}",
            sep(t), outcome(e->state, e->code), pid, ran ? (int)e->worker : CALLER_TID,
            US(ran ? e->end : e->at), e->id, (int)e->code, (int)e->sig);
    put_counter(t, e->at, e->count);
}

static void put_chunk(cf__trace *t, const event *e)
{
    bool ran = times_ok(t, e);
    int pid = (int)t->pid;
    if (ran)
        put(t, "%s{\"ph\":\"X\",\"name\":\"%s\",\"pid\":%d,\"tid\":%d,\"ts\":" US_FMT
               ",\"dur\":" US_FMT ",\"args\":{\"first\":%" PRIu64 ",\"count\":%" PRIu64
               ",\"code\":%d,\"signal\":%d}}",
            sep(t), fn_name(t, e->fn), pid, (int)e->worker, US(e->start), US(e->end - e->start),
            e->id, e->count, (int)e->code, (int)e->sig);
    if (e->code < 0)
        put(t, "%s{\"ph\":\"i\",\"s\":\"t\",\"name\":\"%s\",\"pid\":%d,\"tid\":%d,\"ts\":" US_FMT
               ",\"args\":{\"first\":%" PRIu64 ",\"code\":%d,\"signal\":%d}}",
            sep(t), outcome(CF__FINISHED, e->code), pid, ran ? (int)e->worker : CALLER_TID,
            US(ran ? e->end : e->at), e->id, (int)e->code, (int)e->sig);
}

/* Under mu: formats and writes every record held. */
static void flush_locked(cf__trace *t)
{
    for (unsigned i = 0; i < t->n && t->fd >= 0; i++) {
        const event *e = &t->ev[i];
        if (e->kind == EV_TASK)
            put_task(t, e);
        else if (e->kind == EV_CHUNK)
            put_chunk(t, e);
        else
            put_counter(t, e->at, e->count);
    }
    t->n = 0;
}

/* Under mu: a free record, writing the held ones first when all are used. */
static event *slot_locked(cf__trace *t)
{
    if (t->fd < 0)
        return NULL;
    if (t->n == TRACE_EVENTS) {
        flush_locked(t);
        text_flush(t);
        if (t->fd < 0)
            return NULL;
    }
    event *e = &t->ev[t->n++];
    memset(e, 0, sizeof *e);
    e->worker = -1;
    return e;
}

/* ---- opening and closing ------------------------------------------------- */

/* path for the pool's number n: as given for 1, with ".n" before the extension after. */
static char *numbered(const char *path, unsigned n)
{
    size_t len = strlen(path);
    char *out = malloc(len + 16);
    if (out == NULL)
        return NULL;
    if (n == 1) {
        memcpy(out, path, len + 1);
        return out;
    }
    const char *slash = strrchr(path, '/'), *dot = strrchr(path, '.');
    size_t stem = dot != NULL && (slash == NULL || dot > slash + 1) ? (size_t)(dot - path) : len;
    snprintf(out, len + 16, "%.*s.%u%s", (int)stem, path, n, path + stem);
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
    if ((t->path = numbered(path, number)) == NULL || (t->fd = open_tracked(t->path)) < 0) {
        fprintf(stderr, "cfutures: CFUTURES_TRACE: cannot open %s: %s; this pool is not traced\n",
                t->path != NULL ? t->path : path, strerror(t->path != NULL ? errno : ENOMEM));
        free(t->path);
        free(t);
        return NULL;
    }
    if (pthread_mutex_init(&t->mu, NULL) != 0)
        abort();
    t->pid = ex->owner;
    t->workers = ex->workers;
    t->next_id = 0;
    t->inflight = 0;
    t->n = 0;
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
    for (unsigned i = 0; i < ex->workers; i++)
        put(t, "%s{\"ph\":\"M\",\"name\":\"thread_name\",\"pid\":%d,\"tid\":%u,"
               "\"args\":{\"name\":\"worker %u\"}}",
            sep(t), (int)t->pid, i, i);
    put(t, "%s{\"ph\":\"M\",\"name\":\"thread_name\",\"pid\":%d,\"tid\":%d,"
           "\"args\":{\"name\":\"caller\"}}",
        sep(t), (int)t->pid, CALLER_TID);
    return t;
}

void cf__trace_close(cf__trace *t)
{
    if (t == NULL)
        return;
    pthread_mutex_lock(&t->mu);
    flush_locked(t);
    put(t, "\n]}\n");
    text_flush(t);
    if (t->fd >= 0)
        cf__fd_close(t->fd);
    pthread_mutex_unlock(&t->mu);
    pthread_mutex_destroy(&t->mu);
    free(t->path);
    free(t);
}

/* ---- the hooks ----------------------------------------------------------- */

void cf__trace_submit(cf__trace *t, cf_future *f, void *fn)
{
    pthread_mutex_lock(&t->mu);
    f->trace.id = ++t->next_id;
    f->trace.fn = fn;
    f->trace.submit_ns = cf__now_ns();
    event *e = slot_locked(t);
    if (e != NULL) {
        e->kind = EV_COUNT;
        e->at = f->trace.submit_ns;
        e->count = ++t->inflight;
    }
    pthread_mutex_unlock(&t->mu);
}

void cf__trace_unsubmit(cf__trace *t, cf_future *f)
{
    pthread_mutex_lock(&t->mu);
    f->trace.id = 0;
    event *e = slot_locked(t);
    if (e != NULL) {
        e->kind = EV_COUNT;
        e->at = cf__now_ns();
        e->count = --t->inflight;
    }
    pthread_mutex_unlock(&t->mu);
}

static int16_t worker_of(const cf__trace *t, int w)
{
    return w >= 0 && (unsigned)w < t->workers ? (int16_t)w : -1;
}

void cf__trace_done(cf__trace *t, const cf_future *f)
{
    if (f->trace.id == 0)
        return;
    uint64_t now = cf__now_ns();
    pthread_mutex_lock(&t->mu);
    event *e = slot_locked(t);
    if (e != NULL) {
        e->kind = EV_TASK;
        e->state = (uint8_t)cf__future_state(f);
        e->worker = worker_of(t, f->info.worker);
        e->code = f->code;
        e->sig = f->signal;
        e->id = f->trace.id;
        e->count = --t->inflight;
        e->queued = f->trace.submit_ns;
        e->start = f->info.start_ns;
        e->end = f->info.end_ns;
        e->at = now;
        e->fn = f->trace.fn;
    }
    pthread_mutex_unlock(&t->mu);
}

void cf__trace_chunk(cf__trace *t, const void *fn, int worker, uint64_t start_ns, uint64_t end_ns,
                     size_t first, size_t count, int code, int sig)
{
    uint64_t now = cf__now_ns();
    pthread_mutex_lock(&t->mu);
    event *e = slot_locked(t);
    if (e != NULL) {
        e->kind = EV_CHUNK;
        e->worker = worker_of(t, worker);
        e->code = code;
        e->sig = sig;
        e->id = first;
        e->count = count;
        e->start = start_ns;
        e->end = end_ns;
        e->at = now;
        e->fn = fn;
    }
    pthread_mutex_unlock(&t->mu);
}
