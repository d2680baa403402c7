/*
 * The process pool's ring under abuse: tasks that write past their buffers,
 * a worker that writes garbage over the pool's control data, one that
 * changes a limit the pool wrote into the header (max_rss_kb), one that
 * leaves error texts with no end (cf_future_error_text), a pool that
 * breaks in the middle of a map, and many pools created and freed at once.
 * Built twice: CF_TEST_BACKEND=2 (POOL_FORK of tests/helpers.h: suite
 * ring_fork, fork workers) and CF_TEST_BACKEND=3 (POOL_EXEC: suite
 * ring_exec, exec workers).
 *
 * Overruns. A task may write up to 4 KiB past its argument or its result
 * (include/cfutures.h): it then fails alone with CF_EOVERRUN, and the task
 * queued right behind it (whose data and slot used to sit right after) runs
 * and returns the right value. Most tests use one worker and hold the
 * overrunning task at a gate until its victims are queued behind it, so the
 * victims are READY in the ring at the moment of the overrun.
 *
 * Tasks report through a probe allocated with cf_shared_alloc before each
 * pool (tests/helpers.h); exec workers find it through the environment.
 */
#include "helpers.h"
#include "../src/ring.h"

#include <inttypes.h>
#include <limits.h>
#include <linux/futex.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#if BACKEND_EXEC
#  define SUITE ring_exec
#else
#  define SUITE ring_fork
#endif

#define CODE_CORRUPT 77    /* a victim found its argument changed */

static void ring_setup(void)
{
    no_core_dumps();
    probe_setup();
}

#define RTEST(name, ...) \
    Test(SUITE, name, .init = ring_setup, .fini = probe_teardown, __VA_ARGS__)

static cf_executor *pool_of(unsigned workers)
{
#if BACKEND_EXEC
    skip_exec_under_valgrind(POOL_EXEC);
#endif
    return pool_start(workers);
}

/* ---- victims: tasks whose argument must arrive intact -------------------- */

/* A victim's argument: a seed, then bytes derived from it. */
#define VICTIM_MAX 512

struct victim {
    uint64_t seed;
    unsigned char bytes[VICTIM_MAX];
};

static unsigned char victim_byte(uint64_t seed, size_t i)
{
    return (unsigned char)(seed * 131u + i * 7u + 1u);
}

static size_t victim_fill(struct victim *v, uint64_t seed, size_t nbytes)
{
    v->seed = seed;
    for (size_t i = 0; i < nbytes; i++)
        v->bytes[i] = victim_byte(seed, i);
    return sizeof v->seed + nbytes;
}

/* Checks its argument byte by byte; returns value_for(seed). */
static int task_victim(const void *arg, size_t as, void *res, size_t rs)
{
    struct victim v;
    if (as < sizeof v.seed || as > sizeof v || rs != sizeof(uint64_t))
        return CODE_BADSIZE;
    memcpy(&v, arg, as);
    for (size_t i = 0; i < as - sizeof v.seed; i++)
        if (v.bytes[i] != victim_byte(v.seed, i))
            return CODE_CORRUPT;
    uint64_t r = value_for(v.seed);
    memcpy(res, &r, sizeof r);
    return 0;
}

/* Submits a victim with nbytes of checked argument bytes. */
static cf_future *victim_submit(cf_executor *ex, uint64_t seed, size_t nbytes)
{
    struct victim v;
    cf_future *f = NULL;
    size_t as = victim_fill(&v, seed, nbytes);
    int rc = cf_submit(ex, task_victim, &v, as, sizeof(uint64_t), &f);
    cr_assert_eq(rc, 0, "victim submit: %s", cf_strerror(rc));
    return f;
}

static void victim_check(cf_future *f, uint64_t seed, const char *what)
{
    uint64_t r = 0;
    int rc = cf_future_result(f, &r, sizeof r, POLL_MAX_MS);
    cr_assert_eq(rc, 0, "%s (seed %" PRIu64 "): %s (%d)%s", what, seed, cf_strerror(rc), rc,
                 rc == CODE_CORRUPT ? ": its argument was changed" : "");
    cr_assert_eq(r, value_for(seed), "%s (seed %" PRIu64 "): wrong result", what, seed);
    cr_assert_eq(cf_future_signal(f), 0, "%s: a signal on a task that ran", what);
}

/* ---- the overrunning task ------------------------------------------------- */

enum { PAST_RESULT = 0, PAST_ARG = 1 };
enum { WRITE_TERMINATOR = 0, WRITE_INTS = 1 };

/* Its argument; padded with checked bytes up to the size a test wants. */
struct overrun {
    int32_t gate;          /* waits for this gate first, -1: none */
    int32_t where;         /* PAST_RESULT or PAST_ARG */
    int32_t how;           /* WRITE_TERMINATOR: snprintf(result, result_size + 1, …),
                              WRITE_INTS: `bytes` bytes of int 3 */
    int32_t bytes;
    unsigned char pad[VICTIM_MAX];
};

static int task_overrun(const void *arg, size_t as, void *res, size_t rs)
{
    struct overrun o;
    if (as < offsetof(struct overrun, pad) || as > sizeof o)
        return CODE_BADSIZE;
    memcpy(&o, arg, as);
    if (o.gate >= 0 && !probe_gate_pass(probe, o.gate))
        return CODE_STUCK;
    char *past = o.where == PAST_ARG ? (char *)arg + as : (char *)res + rs;
    if (o.how == WRITE_TERMINATOR) {
        char text[VICTIM_MAX + 1];
        memset(text, 'x', sizeof text - 1);
        text[sizeof text - 1] = '\0';
        snprintf(res, rs + 1, "%s", text);    /* the classic: size + 1 for the '\0' */
    } else {
        if (rs > 0)
            memset(res, 'r', rs);
        int three = 3;
        for (int32_t i = 0; i + (int32_t)sizeof three <= o.bytes; i += (int32_t)sizeof three)
            memcpy(past + i, &three, sizeof three);
    }
    return 0;
}

static cf_future *overrun_submit(cf_executor *ex, int gate, int where, int how, int bytes,
                                 size_t arg_size, size_t result_size)
{
    struct overrun o;
    cf_future *f = NULL;
    memset(&o, 0, sizeof o);
    o.gate = gate;
    o.where = where;
    o.how = how;
    o.bytes = bytes;
    cr_assert(arg_size >= offsetof(struct overrun, pad) && arg_size <= sizeof o);
    int rc = cf_submit(ex, task_overrun, &o, arg_size, result_size, &f);
    cr_assert_eq(rc, 0, "overrun submit: %s", cf_strerror(rc));
    return f;
}

static void overrun_check(cf_future *f, size_t result_size)
{
    char buf[VICTIM_MAX];
    cr_assert(result_size <= sizeof buf);
    int rc = cf_future_result(f, buf, result_size, POLL_MAX_MS);
    cr_assert_eq(rc, CF_EOVERRUN, "the overrunning task: %s (%d), not CF_EOVERRUN", cf_strerror(rc), rc);
    cr_assert_eq(cf_future_signal(f), 0);
    /* The text names the buffer whose guard was written: the last one, the result if any. */
    const char *text = cf_future_error_text(f);
    cr_assert_not_null(text);
    cr_assert_not_null(strstr(text, result_size > 0 ? "result buffer" : "argument buffer"), "%s", text);
}

/*
 * One worker; the overrunning task starts and waits at gate 0 while
 * `victims` tasks (nbytes checked argument bytes each) queue behind it;
 * then it overruns. Every victim must run and find its argument intact,
 * and the pool must go on (one more task) and be freed.
 */
static void overrun_then_victims(int where, int how, int bytes, size_t arg_size,
                                 size_t result_size, int victims, size_t nbytes)
{
    cf_executor *ex = pool_of(1);
    cf_future *bad, *vf[16];
    cr_assert(victims <= 16);

    bad = overrun_submit(ex, 0, where, how, bytes, arg_size, result_size);
    cr_assert(wait_at_least(&probe->started, 1, POLL_MAX_MS), "the overrunning task did not start");
    for (int i = 0; i < victims; i++)
        vf[i] = victim_submit(ex, 100 + (uint64_t)i, nbytes);
    probe_open(probe, 0);

    for (int i = 0; i < victims; i++)
        victim_check(vf[i], 100 + (uint64_t)i, "a task queued behind the overrun");
    overrun_check(bad, result_size);
    cf_future *after = victim_submit(ex, 999, nbytes);
    victim_check(after, 999, "a task submitted after the overrun");

    cf_future_free(after);
    for (int i = 0; i < victims; i++)
        cf_future_free(vf[i]);
    cf_future_free(bad);
    cf_executor_free(ex);
}

/* Argument and result fill the 128 inline bytes; the '\0' lands one past. */
RTEST(inline_result_terminator_overrun, .timeout = TEST_TIMEOUT)
{
    overrun_then_victims(PAST_RESULT, WRITE_TERMINATOR, 1, 64, 64, 3, 8);
}

/* 4 KiB of int 3 past an inline result: no task comes back "finished" with
 * code 3 without having run. */
RTEST(inline_result_int_pattern_4k, .timeout = TEST_TIMEOUT)
{
    overrun_then_victims(PAST_RESULT, WRITE_INTS, 4096, 64, 64, 8, 8);
}

/* Results held in the arena: the next task's argument (the next arena block)
 * stays intact. */
RTEST(arena_result_overrun, .timeout = TEST_TIMEOUT)
{
    overrun_then_victims(PAST_RESULT, WRITE_INTS, 64, 200, 100, 3, 300);
    overrun_then_victims(PAST_RESULT, WRITE_INTS, 4096, 200, 100, 3, 300);
    overrun_then_victims(PAST_RESULT, WRITE_TERMINATOR, 1, 300, 200, 3, 300);
}

/* Writing past the argument (through the task's own result) is caught too. */
RTEST(argument_overrun, .timeout = TEST_TIMEOUT)
{
    overrun_then_victims(PAST_ARG, WRITE_INTS, 4096, 32, 8, 4, 8);       /* inline */
    overrun_then_victims(PAST_ARG, WRITE_INTS, 4096, 300, 8, 4, 300);    /* arena */
    overrun_then_victims(PAST_ARG, WRITE_INTS, 4096, 40, 0, 4, 8);       /* no result */
}

/* An overrun in a stream of tasks, on several workers: each task alone. */
RTEST(overruns_among_many_tasks_fail_alone, .timeout = TEST_TIMEOUT)
{
    enum { N = 300 };
    cf_executor *ex = pool_of(2);
    static cf_future *fs[N];
    for (int i = 0; i < N; i++) {
        if (i % 10 == 3)
            fs[i] = overrun_submit(ex, -1, i % 20 == 3 ? PAST_ARG : PAST_RESULT,
                                   i % 30 == 3 ? WRITE_TERMINATOR : WRITE_INTS, 4096,
                                   i % 4 == 0 ? 48 : 240, i % 3 == 0 ? 80 : 8);
        else
            fs[i] = victim_submit(ex, (uint64_t)i, (size_t)(i % 7) * 60);
    }
    for (int i = 0; i < N; i++)
        if (i % 10 != 3)
            victim_check(fs[i], (uint64_t)i, "a task among overruns");
    for (int i = 0; i < N; i++) {
        if (i % 10 == 3)
            overrun_check(fs[i], i % 3 == 0 ? 80 : 8);
        cf_future_free(fs[i]);
    }
    cf_executor_free(ex);
}

/* ---- maps ------------------------------------------------------------------ */

#define MAP_N     64
#define MAP_CHUNK 8
#define BAD_CHUNK 2        /* the chunk whose last element (or call) overruns */

static uint64_t map_value(uint64_t x)
{
    return x * 3 + 1;
}

/* Element i: out = 3*in + 1; the last element of BAD_CHUNK writes 4 KiB of
 * int 3 past its output, that is past the chunk's output region. */
static int elem_overrun(const void *in, size_t is, void *out, size_t os)
{
    uint64_t x, y;
    if (is != sizeof x || os != sizeof y)
        return CODE_BADSIZE;
    memcpy(&x, in, sizeof x);
    y = map_value(x);
    memcpy(out, &y, sizeof y);
    if (x == BAD_CHUNK * MAP_CHUNK + MAP_CHUNK - 1) {
        int three = 3;
        for (size_t i = 0; i < 4096; i += sizeof three)
            memcpy((char *)out + os + i, &three, sizeof three);
    }
    return 0;
}

/* The chunk function's version: BAD_CHUNK writes past its output region, or
 * past its input region when the probe's value says so. */

static int chunk_overrun(const void *in, size_t is, void *out, size_t os, size_t first, size_t count)
{
    if (is != sizeof(uint64_t) || os != sizeof(uint64_t))
        return CODE_BADSIZE;
    for (size_t k = 0; k < count; k++) {
        uint64_t x, y;
        memcpy(&x, (const char *)in + k * is, sizeof x);
        y = map_value(x);
        memcpy((char *)out + k * os, &y, sizeof y);
    }
    if (first == BAD_CHUNK * MAP_CHUNK) {
        char *past = load_int(&probe->value) ? (char *)in + count * is : (char *)out + count * os;
        int three = 3;
        for (size_t i = 0; i < 4096; i += sizeof three)
            memcpy(past + i, &three, sizeof three);
    }
    return 0;
}

static void map_overrun(bool chunks, bool input)
{
    cf_executor *ex = pool_of(1);
    uint64_t *in = malloc(MAP_N * sizeof *in), *out = malloc(MAP_N * sizeof *out);
    int status[MAP_N];
    cf_map_options mo = { .chunksize = MAP_CHUNK, .status = status };
    cr_assert(in != NULL && out != NULL);
    for (size_t i = 0; i < MAP_N; i++) {
        in[i] = i;
        out[i] = 0;
        status[i] = -12345;
    }
    store_int(&probe->value, input);
    int rc = chunks ? cf_map_chunks(ex, chunk_overrun, in, sizeof *in, out, sizeof *out, MAP_N, &mo)
                    : cf_map(ex, elem_overrun, in, sizeof *in, out, sizeof *out, MAP_N, &mo);
    for (size_t i = 0; i < MAP_N; i++) {
        if (i / MAP_CHUNK != BAD_CHUNK) {
            cr_assert_eq(status[i], 0, "element %zu of another chunk: status %d", i, status[i]);
            cr_assert_eq(out[i], map_value(i), "element %zu of another chunk: wrong output", i);
        }
    }
    for (size_t i = BAD_CHUNK * MAP_CHUNK; i < (BAD_CHUNK + 1) * MAP_CHUNK; i++)
        cr_assert_eq(status[i], CF_EOVERRUN, "element %zu of the overrunning chunk: %d", i, status[i]);
    cr_assert_eq(rc, CF_EOVERRUN, "the map: %s (%d), not CF_EOVERRUN", cf_strerror(rc), rc);
    /* The pool goes on. */
    rc = cf_map(ex, elem_overrun, in, sizeof *in, out, sizeof *out, BAD_CHUNK * MAP_CHUNK, &mo);
    cr_assert_eq(rc, 0, "a map after the overrun: %s", cf_strerror(rc));
    free(in);
    free(out);
    cf_executor_free(ex);
}

RTEST(map_element_overruns_its_chunk, .timeout = TEST_TIMEOUT)
{
    map_overrun(false, false);
}

RTEST(map_chunks_output_overrun, .timeout = TEST_TIMEOUT)
{
    map_overrun(true, false);
}

RTEST(map_chunks_input_overrun, .timeout = TEST_TIMEOUT)
{
    map_overrun(true, true);
}

/* ---- a worker that writes garbage over the control data ------------------- */

/*
 * Finds the pool's region (the mapping that holds its own argument) and
 * writes random bytes from the region's start up to its argument's buffer:
 * the header, every slot's control words, the worker records, and whatever
 * task data lies before its own.
 */
static int task_scribble(const void *arg, size_t as, void *res, size_t rs)
{
    (void)res; (void)rs;
    uint64_t gate;
    if (as != sizeof gate)
        return CODE_BADSIZE;
    memcpy(&gate, arg, sizeof gate);
    if (!probe_gate_pass(probe, (int)gate))
        return CODE_STUCK;
    uintptr_t a = (uintptr_t)arg, lo = 0, hi = 0;
    char line[512];
    FILE *fp = fopen("/proc/self/maps", "r");
    if (fp == NULL)
        return CODE_BADSIZE;
    while (fgets(line, sizeof line, fp) != NULL) {
        unsigned long s, e;
        if (sscanf(line, "%lx-%lx", &s, &e) == 2 && s <= a && a < e) {
            lo = s;
            hi = e;
            break;
        }
    }
    fclose(fp);
    if (lo == 0 || hi == 0)
        return CODE_BADSIZE;
    uint64_t state = 0x9E3779B97F4A7C15ULL ^ (uint64_t)getpid();
    for (uintptr_t p = lo; p + 8 <= (a & ~(uintptr_t)63); p += 8) {
        uint64_t r = rand_next(&state);
        memcpy((void *)p, &r, sizeof r);
    }
    return 0;
}

static int task_gated_value(const void *arg, size_t as, void *res, size_t rs)
{
    uint64_t i;
    if (as != sizeof i || rs != sizeof i)
        return CODE_BADSIZE;
    memcpy(&i, arg, sizeof i);
    if (!probe_gate_pass(probe, (int)(i % PROBE_SLOTS)))
        return CODE_STUCK;
    uint64_t v = value_for(i);
    memcpy(res, &v, sizeof v);
    return 0;
}

RTEST(worker_scribbling_over_control_data, .timeout = TEST_TIMEOUT)
{
    enum { N = 12 };
    struct census before;
    char msg[256];
    cf_future *fs[N], *scribbler;
    int rc;

    census_take(&before);
    cf_executor *ex = pool_of(2);
    /* One task running and held at gate 0, the scribbler running and held at
     * gate 1, the other tasks pending behind them. */
    uint64_t x = 0, gate = 1;
    cr_assert_eq(cf_submit(ex, task_gated_value, &x, sizeof x, sizeof x, &fs[0]), 0);
    cr_assert(wait_at_least(&probe->started, 1, POLL_MAX_MS));
    cr_assert_eq(cf_submit(ex, task_scribble, &gate, sizeof gate, 0, &scribbler), 0);
    cr_assert(wait_at_least(&probe->started, 2, POLL_MAX_MS));
    for (int i = 1; i < N; i++) {
        x = (uint64_t)i * PROBE_SLOTS;
        cr_assert_eq(cf_submit(ex, task_gated_value, &x, sizeof x, sizeof x, &fs[i]), 0);
    }
    probe_open(probe, 1);
    rc = cf_future_wait(scribbler, POLL_MAX_MS);
    cr_assert_eq(rc, 0, "the scribbling task never ended: %s", cf_strerror(rc));
    probe_open(probe, 0);

    /* Every future ends, with some code; the caller neither crashes nor hangs. */
    rc = cf_wait(fs, N, CF_ALL_COMPLETED, POLL_MAX_MS);
    cr_assert_eq(rc, 0, "futures still pending after the scribble: %s", cf_strerror(rc));
    int codes[N];
    for (int i = 0; i < N; i++) {
        uint64_t v = 0;
        codes[i] = cf_future_result(fs[i], &v, sizeof v, 0);
        cr_assert_neq(codes[i], CF_ETIMEDOUT, "future %d not done", i);
    }
    fprintf(stderr, "%s: scribbler %d (%s); first futures %d %d %d\n", BACKEND_NAME,
            cf_future_result(scribbler, NULL, 0, 0), cf_strerror(cf_future_result(scribbler, NULL, 0, 0)),
            codes[0], codes[1], codes[N - 1]);
    /* Later work is refused or runs: either way it ends. */
    cf_future *late = NULL;
    x = 5;
    if (cf_submit(ex, task_value, &x, sizeof x, sizeof x, &late) == 0) {
        cr_assert_eq(cf_future_wait(late, POLL_MAX_MS), 0, "a task submitted after the scribble hangs");
        cf_future_free(late);
    }
    cf_executor_free(ex);
    for (int i = 0; i < N; i++)
        cf_future_free(fs[i]);
    cf_future_free(scribbler);
    cr_assert(census_same(&before, msg, sizeof msg), "%s", msg);
}

/* ---- a pool that breaks in the middle of a map ----------------------------- */

#define BREAK_N 300

/*
 * Breaks the pool from inside a worker: stops the worker's parent, the
 * pool's zygote, so that it cannot make a new standby; kills the standby
 * (the caller's child named cfutures-spare), then the zygote, with which
 * every worker dies.
 */
static void kill_zygote_and_standby(void)
{
    pid_t zygote = getppid(), caller = 0, kids[64];
    char state;
    kill(zygote, SIGSTOP);
    if (proc_stat(zygote, &state, &caller)) {
        int n = proc_children(caller, kids, 64, NULL);
        for (int i = 0; i < n && i < 64; i++)
            if (proc_named(kids[i], "cfutures-spare"))
                kill(kids[i], SIGKILL);
    }
    kill(zygote, SIGKILL);
}

/*
 * Element 0 (chunk 0) breaks the pool (kill_zygote_and_standby); every
 * other element waits to be killed too.
 */
static void break_or_wait(uint64_t x)
{
    if (x == 0) {
        kill_zygote_and_standby();
        for (int ms = 0; ms < GATE_MAX_MS; ms++)
            sleep_ms(1);    /* its death signal ends this */
        return;
    }
    for (int ms = 0; ms < GATE_MAX_MS; ms++)
        sleep_ms(1);
}

static int elem_break(const void *in, size_t is, void *out, size_t os)
{
    uint64_t x;
    if (is != sizeof x || os != sizeof x)
        return CODE_BADSIZE;
    memcpy(&x, in, sizeof x);
    break_or_wait(x);
    x = map_value(x);
    memcpy(out, &x, sizeof x);
    return CODE_STUCK;    /* only when nothing killed it */
}

static int chunk_break(const void *in, size_t is, void *out, size_t os, size_t first, size_t count)
{
    (void)in; (void)is; (void)out; (void)os; (void)count;
    break_or_wait(first);
    return CODE_STUCK;
}

static void map_breaks(bool chunks)
{
    cf_executor *ex = pool_of(2);
    uint64_t *in = malloc(BREAK_N * sizeof *in), *out = malloc(BREAK_N * sizeof *out);
    int status[BREAK_N];
    cf_map_options mo = { .chunksize = 1, .status = status };
    cr_assert(in != NULL && out != NULL);
    for (size_t i = 0; i < BREAK_N; i++) {
        in[i] = i;
        status[i] = -12345;
    }
    int rc = chunks ? cf_map_chunks(ex, chunk_break, in, sizeof *in, out, sizeof *out, BREAK_N, &mo)
                    : cf_map(ex, elem_break, in, sizeof *in, out, sizeof *out, BREAK_N, &mo);
    cr_assert_eq(rc, CF_ECRASHED, "the map: %s (%d), not the first element's CF_ECRASHED",
                 cf_strerror(rc), rc);
    int crashed = 0, broken = 0;
    for (size_t i = 0; i < BREAK_N; i++) {
        cr_assert(status[i] == CF_ECRASHED || status[i] == CF_EBROKEN,
                  "element %zu: status %d (%s)", i, status[i], cf_strerror(status[i]));
        crashed += status[i] == CF_ECRASHED;
        broken += status[i] == CF_EBROKEN;
    }
    cr_assert_eq(status[0], CF_ECRASHED);
    cr_assert_gt(broken, 0, "no element was left for after the break");
    fprintf(stderr, "%s %s: %d crashed, %d broken\n", BACKEND_NAME, chunks ? "cf_map_chunks" : "cf_map",
            crashed, broken);
    /* The pool stays broken, and says so. */
    rc = cf_map(ex, elem_break, in, sizeof *in, out, sizeof *out, 4, &mo);
    cr_assert_eq(rc, CF_EBROKEN, "a map on the broken pool: %s", cf_strerror(rc));
    for (size_t i = 0; i < 4; i++)
        cr_assert_eq(status[i], CF_EBROKEN, "element %zu of a map on the broken pool: %d", i, status[i]);
    free(in);
    free(out);
    cf_executor_free(ex);
}

RTEST(map_ends_when_pool_breaks, .timeout = TEST_TIMEOUT)
{
    map_breaks(false);
}

RTEST(map_chunks_ends_when_pool_breaks, .timeout = TEST_TIMEOUT)
{
    map_breaks(true);
}

/* ---- a worker that dies between its chunk's last element and DONE -------- */

/*
 * White-box (src/ring.h): the process's one pool region, found among
 * its memfd mappings (the one whose header describes itself); NULL if none.
 * freeze_own_record makes the page of the worker's own record read-only in
 * this process. The worker's
 * next write there, clearing the record's current task after the chunk, is
 * the step between the chunk's last element (progress stored, output
 * written) and the slot's DONE: the worker dies exactly there.
 */
static cf__shm_hdr *pool_region(void)
{
    FILE *maps = fopen("/proc/self/maps", "r");
    char line[512];
    cf__shm_hdr *found = NULL;
    while (maps != NULL && found == NULL && fgets(line, sizeof line, maps) != NULL) {
        uintptr_t lo, hi;
        if (strstr(line, "memfd:cfutures") == NULL || sscanf(line, "%" SCNxPTR "-%" SCNxPTR, &lo, &hi) != 2 ||
            hi - lo < sizeof(cf__shm_hdr))
            continue;
        cf__shm_hdr *h = (cf__shm_hdr *)lo;
        if (h->size == hi - lo && h->nslots == CF__NSLOTS && h->wrecs == cf__wrecs_of(h))
            found = h;
    }
    if (maps != NULL)
        fclose(maps);
    return found;
}

/* White-box (src/ring.h): the slot of the task this worker runs, and its position. */
static cf__slot *own_slot(cf__shm_hdr *h, uint64_t *pos)
{
    if (h == NULL || (unsigned)cf_worker_id() >= CF__MAX_WORKERS)
        return NULL;
    uint64_t cur = atomic_load(&cf__wrecs_of(h)[cf_worker_id()].cur);
    if (cur == 0)
        return NULL;
    *pos = cur - 1;
    return &cf__slots_of(h)[*pos & (CF__NSLOTS - 1)];
}

static bool freeze_own_record(void)
{
    cf__shm_hdr *h = pool_region();
    long page = sysconf(_SC_PAGESIZE);
    if (h == NULL || (unsigned)cf_worker_id() >= atomic_load(&h->target))
        return false;
    uintptr_t rec = (uintptr_t)&cf__wrecs_of(h)[cf_worker_id()];
    /* Killed by the kernel's SIGSEGV, not reported by a sanitizer's handler. */
    struct sigaction dfl = { .sa_handler = SIG_DFL };
    sigaction(SIGSEGV, &dfl, NULL);
    return mprotect((void *)(rec & ~(uintptr_t)(page - 1)), (size_t)page, PROT_READ) == 0;
}

#define AFTER_LAST_N      16
#define AFTER_LAST_VICTIM 5

/* An element's input, if the sizes are a uint64_t's. */
static bool elem_input(const void *in, size_t is, size_t os, uint64_t *x)
{
    if (is != sizeof *x || os != sizeof *x)
        return false;
    memcpy(x, in, sizeof *x);
    return true;
}

static int elem_dies_after(const void *in, size_t is, void *out, size_t os)
{
    uint64_t x;
    if (!elem_input(in, is, os, &x))
        return CODE_BADSIZE;
    if (x == AFTER_LAST_VICTIM && !freeze_own_record())
        return CODE_BADSIZE;
    x = map_value(x);
    memcpy(out, &x, sizeof x);
    return 0;
}

/*
 * A chunk's worker that dies after the chunk's last element and before it
 * marks the chunk done failed nothing: every element has status 0 and the
 * map returns 0 (it once answered CF_ECRASHED, one past the chunk).
 */
RTEST(map_worker_dies_after_its_chunk_finished, .timeout = TEST_TIMEOUT)
{
    cf_executor *ex = pool_of(2);
    uint64_t in[AFTER_LAST_N], out[AFTER_LAST_N];
    int status[AFTER_LAST_N];
    cf_map_options mo = { .chunksize = 1, .status = status };
    for (size_t i = 0; i < AFTER_LAST_N; i++) {
        in[i] = i;
        status[i] = -12345;
    }
    int rc = cf_map(ex, elem_dies_after, in, sizeof *in, out, sizeof *out, AFTER_LAST_N, &mo);
    for (size_t i = 0; i < AFTER_LAST_N; i++) {
        cr_assert_eq(status[i], 0, "element %zu: status %d (%s)", i, status[i], cf_strerror(status[i]));
        cr_assert_eq(out[i], map_value(i), "element %zu: wrong output", i);
    }
    cr_assert_eq(rc, 0, "cf_map: %s (%d) though every element has status 0", cf_strerror(rc), rc);
    cf_executor_free(ex);
}

/* ---- an element that writes its chunk's failure word ----------------------- */

#define FORGED_FAIL_N    8
#define FORGED_FAIL_REAL 5       /* the element that fails, with FORGED_FAIL_CODE */
#define FORGED_FAIL_CODE 42

/*
 * White-box (src/ring.h): element 0 writes into its own chunk's slot that
 * its chunk's first failure is element 0 with code 0, as a task that
 * scribbles on its slot would; element FORGED_FAIL_REAL fails for real.
 */
static int elem_forges_fail_word(const void *in, size_t is, void *out, size_t os)
{
    uint64_t x, pos;
    if (!elem_input(in, is, os, &x))
        return CODE_BADSIZE;
    if (x == 0) {
        cf__slot *s = own_slot(pool_region(), &pos);
        if (s == NULL)
            return CODE_BADSIZE;
        s->fail_index = 0;
        s->fail_code = 0;
    }
    uint64_t v = map_value(x);
    memcpy(out, &v, sizeof v);
    return x == FORGED_FAIL_REAL ? FORGED_FAIL_CODE : 0;
}

/*
 * A chunk's failure word comes back from shared memory: an index with code
 * 0 fails nothing, so it cannot hide another chunk's failure (cf_map once
 * answered 0, the code of the lowest "failing" element, with status[5] at
 * 42). With codes asked for, the map's answer goes by the codes themselves.
 */
RTEST(a_forged_chunk_failure_word_hides_no_failure, .timeout = TEST_TIMEOUT)
{
    cf_executor *ex = pool_of(2);
    for (int with_status = 0; with_status < 2; with_status++) {
        uint64_t in[FORGED_FAIL_N], out[FORGED_FAIL_N];
        int status[FORGED_FAIL_N];
        for (size_t i = 0; i < FORGED_FAIL_N; i++) {
            in[i] = i;
            status[i] = -12345;
        }
        cf_map_options mo = { .chunksize = 1, .status = with_status ? status : NULL };
        int rc = cf_map(ex, elem_forges_fail_word, in, sizeof *in, out, sizeof *out, FORGED_FAIL_N, &mo);
        cr_assert_eq(rc, FORGED_FAIL_CODE, "%s status: cf_map answered %s (%d), element %d failed with %d",
                     with_status ? "with" : "without", cf_strerror(rc), rc, FORGED_FAIL_REAL, FORGED_FAIL_CODE);
        for (size_t i = 0; with_status && i < FORGED_FAIL_N; i++)
            cr_assert_eq(status[i], i == FORGED_FAIL_REAL ? FORGED_FAIL_CODE : 0, "element %zu: status %d", i,
                         status[i]);
        for (size_t i = 0; i < FORGED_FAIL_N; i++)
            cr_assert_eq(out[i], map_value(i), "element %zu: wrong output", i);
    }
    cf_executor_free(ex);
}

/* ---- an initializer that writes its worker's record ----------------------- */

/*
 * White-box (src/ring.h): worker 1's initializer marks its own record
 * failed with code 0 and exits as a worker whose initializer failed does;
 * worker 0's succeeds.
 */
static int init_forges_code_0(const void *args, size_t size)
{
    (void)args;
    (void)size;
    if (cf_worker_id() != 1)
        return 0;
    cf__shm_hdr *h = pool_region();
    if (h == NULL)
        return CODE_BADSIZE;
    cf__wrec *w = &cf__wrecs_of(h)[1];
    w->init_code = 0;
    atomic_store(&w->state, CF__WREC_FAILED);
    _exit(CF__EXIT_INIT_FAILED);
}

/*
 * Creation answers a worker's failed start from the worker's record: a
 * record that says failed with code 0 is a crash (creation once took the
 * 0 for no error and waited for ever for a worker retired as failed).
 */
RTEST(a_failed_start_recorded_with_code_0_is_a_crash, .timeout = TEST_TIMEOUT)
{
    cf_executor *ex = NULL;
    cf_options o = { .workers = 2, .initializer = init_forges_code_0 };
    int rc = pool_new(&ex, &o);
    cr_assert_eq(rc, CF_ECRASHED, "cf_process_pool_new: %s (%d)", cf_strerror(rc), rc);
    cr_assert_null(ex);
}

/* ---- a slot left READY behind the head -------------------------------------- */

/* Waits until the two tasks submitted after this one are published, then
 * moves the head up to the tail, past them, as a task that scribbles on
 * the header would. */
static int task_moves_head_past_queued(const void *arg, size_t as, void *res, size_t rs)
{
    (void)arg; (void)as; (void)res; (void)rs;
    cf__shm_hdr *h = pool_region();
    uint64_t pos;
    if (own_slot(h, &pos) == NULL)
        return CODE_BADSIZE;
    for (uint64_t start = now_ms(); atomic_load(&h->tail) < pos + 3; sleep_ms(1))
        if (now_ms() - start > (uint64_t)POLL_MAX_MS)
            return CODE_BADSIZE;
    atomic_store(&h->head, atomic_load(&h->tail));
    return 0;
}

/* Writes its own slot's word back to READY, then its worker dies. */
static int task_rewinds_its_slot_and_dies(const void *arg, size_t as, void *res, size_t rs)
{
    (void)arg; (void)as; (void)res; (void)rs;
    uint64_t pos;
    cf__slot *s = own_slot(pool_region(), &pos);
    if (s == NULL)
        return CODE_BADSIZE;
    atomic_store(&s->word, CF__W_MAKE(pos, 0, 0, CF__SLOT_READY));
    _exit(3);
}

/*
 * The head is a hint workers move only past slots taken, and a slot never
 * becomes READY again: a published slot still READY behind the head was
 * written over (or the head was), and no worker would ever take it. The
 * manager looks behind the head and breaks the pool (its futures once
 * waited for ever, and so did cf_executor_free).
 */
RTEST(tasks_left_behind_a_forged_head_fail_broken, .timeout = TEST_TIMEOUT)
{
    cf_executor *ex = pool_of(1);
    cf_future *f[3] = { NULL, NULL, NULL };
    uint64_t x = 1, v;
    cr_assert_eq(cf_submit(ex, task_moves_head_past_queued, NULL, 0, 0, &f[0]), 0);
    for (int i = 1; i < 3; i++)
        cr_assert_eq(cf_submit(ex, task_value, &x, sizeof x, sizeof v, &f[i]), 0);
    int rc = cf_future_result(f[0], NULL, 0, POLL_MAX_MS);
    cr_assert(rc == 0 || rc == CF_EBROKEN, "the task that moved the head: %s (%d)", cf_strerror(rc), rc);
    for (int i = 1; i < 3; i++) {
        rc = cf_future_result(f[i], &v, sizeof v, POLL_MAX_MS);
        cr_assert_eq(rc, CF_EBROKEN, "task %d, left behind the head: %s (%d)", i, cf_strerror(rc), rc);
    }
    for (int i = 0; i < 3; i++)
        cf_future_free(f[i]);
    cf_executor_free(ex);
}

RTEST(a_task_that_rewinds_its_slot_and_dies_fails_broken, .timeout = TEST_TIMEOUT)
{
    cf_executor *ex = pool_of(2);
    cf_future *f = NULL;
    cr_assert_eq(cf_submit(ex, task_rewinds_its_slot_and_dies, NULL, 0, 0, &f), 0);
    int rc = cf_future_result(f, NULL, 0, POLL_MAX_MS);
    cr_assert_eq(rc, CF_EBROKEN, "a slot rewound to READY by its dead worker: %s (%d)", cf_strerror(rc), rc);
    cf_future_free(f);
    cf_executor_free(ex);
}

/* ---- a task that writes over its worker's record or its slot's end ---------- */

#define EVADE_LIMIT_MS 200

/*
 * White-box (src/ring.h): a task that "runs for ever" (up to POLL_MAX_MS)
 * and hides it from its time limit, as a task that scribbles on its
 * worker's record would: arg 0 keeps writing that its worker runs no task,
 * 1 moves its start an hour on.
 */
static int task_evades_its_limit(const void *arg, size_t as, void *res, size_t rs)
{
    (void)res; (void)rs;
    int how;
    cf__shm_hdr *h = pool_region();
    uint64_t pos;
    if (as != sizeof how || own_slot(h, &pos) == NULL)
        return CODE_BADSIZE;
    memcpy(&how, arg, sizeof how);
    cf__wrec *w = &cf__wrecs_of(h)[cf_worker_id()];
    if (how == 1)
        atomic_store(&w->start_ns, atomic_load(&w->start_ns) + 3600ull * 1000000000ull);
    for (uint64_t start = now_ms(); now_ms() - start < (uint64_t)POLL_MAX_MS; sleep_ms(1))
        if (how == 0)
            atomic_store(&w->cur, 0);
    return 0;
}

/*
 * A task's time limit counts from the earlier of the start its worker's
 * record gives and the pool's first sight of the task running in its
 * slot: a task that writes over the record still ends with CF_ETIMEDOUT
 * (it once ran on to its end, past the limit, and succeeded).
 */
RTEST(a_task_that_writes_over_its_record_still_times_out, .timeout = TEST_TIMEOUT)
{
    cf_options o = { .workers = 1, .task_timeout_ms = EVADE_LIMIT_MS };
    for (int how = 0; how < 2; how++) {
        cf_executor *ex = NULL;
        cr_assert_eq(pool_new(&ex, &o), 0);
        cf_future *f = NULL;
        cr_assert_eq(cf_submit(ex, task_evades_its_limit, &how, sizeof how, 0, &f), 0);
        int rc = cf_future_result(f, NULL, 0, -1);
        cr_assert_eq(rc, CF_ETIMEDOUT, "%s: %s (%d)", how == 0 ? "no task in the record" : "a start an hour on",
                     cf_strerror(rc), rc);
        cf_future_free(f);
        cf_executor_free(ex);
    }
}

/* Leaves its pid as its result, writes its slot DONE and its record idle
 * (as a task that scribbles would), and runs on for ever. */
static int task_ends_its_slot_and_runs_on(const void *arg, size_t as, void *res, size_t rs)
{
    (void)arg; (void)as;
    cf__shm_hdr *h = pool_region();
    uint64_t pos;
    cf__slot *s = own_slot(h, &pos);
    int64_t pid = getpid();
    if (s == NULL || rs != sizeof pid)
        return CODE_BADSIZE;
    memcpy(res, &pid, sizeof pid);
    s->res_len = sizeof pid;
    s->code = 0;
    atomic_store(&cf__wrecs_of(h)[cf_worker_id()].cur, 0);
    uint64_t word = atomic_load(&s->word);
    atomic_store(&s->word, cf__slot_with_state(word, CF__SLOT_DONE));
    /* Its waiter sleeps on the word's low half (src/sync.c, cf__low32). */
    char *low = (char *)&s->word + (__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__ ? 0 : 4);
    syscall(SYS_futex, low, FUTEX_WAKE, INT_MAX, NULL, NULL, 0);
    for (;;)
        pause();
}

/*
 * Once the pool is closed with nothing in flight its workers leave at once;
 * one still there a while after runs what the pool does not know of, and
 * is ended: cf_executor_free returns and the process is gone (free once
 * waited for it for ever).
 */
RTEST(a_worker_that_runs_on_past_its_slot_s_end_goes_at_free, .timeout = TEST_TIMEOUT)
{
    cf_executor *ex = pool_of(1);
    cf_future *f = NULL;
    int64_t pid = 0;
    cr_assert_eq(cf_submit(ex, task_ends_its_slot_and_runs_on, NULL, 0, sizeof pid, &f), 0);
    int rc = cf_future_result(f, &pid, sizeof pid, POLL_MAX_MS);
    cr_assert_eq(rc, 0, "the task that wrote its slot's end: %s (%d)", cf_strerror(rc), rc);
    cr_assert_gt(pid, 0);
    cf_future_free(f);
    cf_executor_free(ex);
    cr_assert(process_gone((pid_t)pid), "worker %lld still runs after cf_executor_free", (long long)pid);
}

/* ---- a worker that changes the memory limit in the header ------------------ */

/* Sets the header's max_rss_kb, which the pool wrote once at creation (0 here: no limit). */
static int task_set_rss_limit(const void *arg, size_t as, void *res, size_t rs)
{
    (void)arg; (void)as; (void)res; (void)rs;
    cf__shm_hdr *h = pool_region();
    if (h == NULL)
        return CODE_BADSIZE;
    h->max_rss_kb = 1;
    return 0;
}

/*
 * The limit lives in the header, where a task can write too: the pool
 * checks it against the one it was given (as it does max_tasks_per_worker)
 * and breaks once it finds it changed, rather than let its workers go by
 * a limit the caller never set.
 */
RTEST(worker_changing_the_rss_limit_breaks_the_pool, .timeout = TEST_TIMEOUT)
{
    cf_executor *ex = pool_of(1);
    cf_future *f = NULL;
    cr_assert_eq(cf_submit(ex, task_set_rss_limit, NULL, 0, 0, &f), 0);
    int rc = cf_future_result(f, NULL, 0, -1);
    cr_assert(rc == 0 || rc == CF_EBROKEN, "the task that set the limit: %s", cf_strerror(rc));
    cf_future_free(f);
    bool broken = false;
    for (uint64_t start = now_ms(); !broken && now_ms() - start < (uint64_t)POLL_MAX_MS;) {
        uint64_t x = 3, v = 0;
        rc = cf_submit(ex, task_value, &x, sizeof x, sizeof x, &f);
        if (rc == 0) {
            rc = cf_future_result(f, &v, sizeof v, -1);
            cf_future_free(f);
        }
        cr_assert(rc == 0 || rc == CF_EBROKEN, "a task after the change: %s", cf_strerror(rc));
        broken = rc == CF_EBROKEN;
    }
    cr_assert(broken, "the pool ran on for %d ms with a limit changed in its header", POLL_MAX_MS);
    cf_executor_free(ex);
}

/* ---- idle workers are woken --------------------------------------------- */

static bool all_asleep(cf__shm_hdr *h)
{
    unsigned n = 0;
    for (unsigned i = 0; i < CF__MASK_WORDS; i++)
        n += (unsigned)__builtin_popcountll(atomic_load(&h->sleeping[i]));
    return n == atomic_load(&h->target);
}

/*
 * White-box: once every worker sleeps, a submit and the pool's close each
 * ring the bell the workers sleep on (src/ring.h, cf__idle_*). When the
 * publisher woke another word, every burst of work that found the workers
 * asleep waited for their periodic wake-up (half a second), and nothing
 * failed: the task still ran, late. The bell's count is what shows it.
 */
RTEST(sleeping_workers_are_rung_by_submit_and_close, .timeout = TEST_TIMEOUT)
{
    cf_executor *ex = pool_of(2);
    cf__shm_hdr *h = pool_region();
    cr_assert_not_null(h, "no pool region among the process's mappings");
    for (int round = 0; round < 3; round++) {
        for (int ms = 0; !all_asleep(h); ms++) {
            cr_assert_lt(ms, POLL_MAX_MS, "the idle workers never went to sleep");
            sleep_ms(1);
        }
        uint32_t before = atomic_load(&h->bell);
        cf_future *f = NULL;
        uint64_t x = (uint64_t)round;
        cr_assert_eq(cf_submit(ex, task_value, &x, sizeof x, sizeof x, &f), 0);
        cr_assert_neq(atomic_load(&h->bell), before, "round %d: a submit to sleeping workers rang no bell", round);
        cr_assert_eq(cf_future_result(f, &x, sizeof x, POLL_MAX_MS), 0);
        cf_future_free(f);
    }
    for (int ms = 0; !all_asleep(h); ms++) {
        cr_assert_lt(ms, POLL_MAX_MS, "the idle workers never went to sleep");
        sleep_ms(1);
    }
    uint32_t before = atomic_load(&h->bell);
    cr_assert_eq(cf_shutdown(ex, false, false), 0);
    cr_assert_neq(atomic_load(&h->bell), before, "the pool's close rang no bell");
    cf_executor_free(ex);
}

/* ---- many pools ----------------------------------------------------------- */

/* Each created and freed at once: every free returns (a worker that missed
 * the pool's close would hold it up; see tests/test-idle.c for the race).
 * Up to 300 pools, at least 50 (keep_looping); 3 under valgrind. */
RTEST(create_and_free_many_pools, .timeout = REL_SLOW_TIMEOUT)
{
    int pools = under_valgrind() ? 3 : 300, i = 0;    /* under valgrind each takes seconds */
    uint64_t start = now_ms();
#if BACKEND_EXEC
    skip_exec_under_valgrind(POOL_EXEC);
#endif
    for (; keep_looping(i, pools < 50 ? pools : 50, pools, start); i++) {
        cf_executor *ex = NULL;
        cf_options o = { .workers = 2 };
        int rc = pool_new(&ex, &o);
        cr_assert_eq(rc, 0, "pool %d: %s", i, cf_strerror(rc));
        cf_executor_free(ex);
    }
    fprintf(stderr, "%s: %d pools created and freed in %llu ms\n", BACKEND_NAME, i,
            (unsigned long long)(now_ms() - start));
}

/* ---- a worker that writes garbage into the error texts ------------------- */

#define GARBAGE_CODE 9

/*
 * White-box (src/ring.h): leaves a text, then writes over every slot's
 * error text, its own included, with bytes that hold no NUL, as a worker
 * that scribbles would. arg: the byte to write.
 */
static int task_garbage_texts(const void *arg, size_t as, void *res, size_t rs)
{
    (void)res;
    (void)rs;
    unsigned char byte;
    if (as != sizeof byte)
        return CODE_BADSIZE;
    memcpy(&byte, arg, sizeof byte);
    cf__shm_hdr *h = pool_region();
    if (h == NULL || cf_task_error("a short text") != 0)
        return CODE_BADSIZE;
    memset(cf__text_of(h, 0), byte, CF__TEXT_BYTES);
    return GARBAGE_CODE;
}

static int task_fail_text42(const void *arg, size_t as, void *res, size_t rs)
{
    (void)arg; (void)as; (void)res; (void)rs;
    cf_task_error("text %d", 42);
    return GARBAGE_CODE;
}

/*
 * The caller copies at most CF_ERROR_TEXT_MAX bytes of a text and ends it
 * with a NUL, whatever the worker left there: a text with no end reads as
 * its first CF_ERROR_TEXT_MAX - 1 bytes, and the pool goes on; the next
 * task's text is its own again.
 */
RTEST(garbage_in_the_error_texts_is_cut_short, .timeout = TEST_TIMEOUT)
{
    static const unsigned char bytes[] = { 'G', 0xff, 0x80 };
    cf_executor *ex = pool_of(1);
    for (size_t i = 0; i < sizeof bytes; i++) {
        cf_future *f = NULL;
        cr_assert_eq(cf_submit(ex, task_garbage_texts, &bytes[i], 1, 0, &f), 0);
        int rc = cf_future_result(f, NULL, 0, -1);
        cr_assert_eq(rc, GARBAGE_CODE, "%s", cf_strerror(rc));
        const char *t = cf_future_error_text(f);
        cr_assert_not_null(t);
        cr_assert_eq(strlen(t), CF_ERROR_TEXT_MAX - 1);
        for (size_t k = 0; k < CF_ERROR_TEXT_MAX - 1; k++)
            cr_assert_eq((unsigned char)t[k], bytes[i], "byte %zu", k);
        cf_future_free(f);

        uint64_t x = 5, v = 0;
        cr_assert_eq(cf_submit(ex, task_value, &x, sizeof x, sizeof x, &f), 0);
        cr_assert_eq(cf_future_result(f, &v, sizeof v, -1), 0);
        cr_assert_eq(v, value_for(x));
        cr_assert_null(cf_future_error_text(f));
        cf_future_free(f);

        cr_assert_eq(cf_submit(ex, task_fail_text42, NULL, 0, 0, &f), 0);
        cr_assert_eq(cf_future_result(f, NULL, 0, -1), GARBAGE_CODE);
        cr_assert_str_eq(cf_future_error_text(f), "text 42");
        cf_future_free(f);
    }
    cf_executor_free(ex);
}

/* ---- a worker that claims a result larger than its buffer ----------------- */

/* arg: the size to forge, as an offset from the capacity (UINT64_MAX: that). */
static int task_forge_result_len(const void *arg, size_t as, void *res, size_t rs)
{
    uint64_t extra;
    if (as != sizeof extra)
        return CODE_BADSIZE;
    memcpy(&extra, arg, sizeof extra);
    memset(res, 'r', rs);
    cf__shm_hdr *h = pool_region();
    if (h == NULL || (unsigned)cf_worker_id() >= CF__MAX_WORKERS)
        return CODE_BADSIZE;
    uint64_t cur = atomic_load(&cf__wrecs_of(h)[cf_worker_id()].cur);
    if (cur == 0 || cf_task_set_result_size(rs / 2) != 0)
        return CODE_BADSIZE;
    /* White-box (src/ring.h): over what cf_task_set_result_size wrote, as a
     * task that scribbles on its slot would. */
    cf__slot *s = &cf__slots_of(h)[(cur - 1) & (CF__NSLOTS - 1)];
    s->res_len = extra == UINT64_MAX ? UINT64_MAX : rs + extra;
    return 0;
}

/*
 * The size of a result comes back from shared memory: a worker that claims
 * more than the capacity makes the caller copy nothing (it once would have
 * copied past the future's buffer): the task fails with CF_EOVERRUN, with a
 * text saying so, and the pool goes on.
 */
RTEST(result_size_larger_than_capacity_is_overrun, .timeout = TEST_TIMEOUT)
{
    static const size_t caps[] = { 8, 64, 3000 };           /* future inline; slot inline; arena */
    static const uint64_t extras[] = { 1, 4096, UINT64_MAX };
    cf_executor *ex = pool_of(1);
    for (size_t c = 0; c < sizeof caps / sizeof caps[0]; c++) {
        for (size_t e = 0; e < sizeof extras / sizeof extras[0]; e++) {
            size_t cap = caps[c];
            cf_future *f = NULL;
            cr_assert_eq(cf_submit(ex, task_forge_result_len, &extras[e], sizeof extras[e], cap, &f), 0);
            unsigned char *buf = malloc(cap + 1);
            cr_assert_not_null(buf);
            memset(buf, 'Z', cap + 1);
            int rc = cf_future_result(f, buf, cap, -1);
            cr_assert_eq(rc, CF_EOVERRUN, "capacity %zu, %" PRIu64 " more claimed: %s (%d)", cap, extras[e],
                         cf_strerror(rc), rc);
            for (size_t i = 0; i <= cap; i++)
                cr_assert_eq(buf[i], 'Z', "capacity %zu: byte %zu written", cap, i);
            size_t n = 777;
            cr_assert_eq(cf_future_result_size(f, &n), CF_EOVERRUN);
            cr_assert_eq(n, 777);
            const char *t = cf_future_error_text(f);
            cr_assert_not_null(t);
            cr_assert_not_null(strstr(t, "result buffer"), "%s", t);
            free(buf);
            cf_future_free(f);

            uint64_t x = 7, v = 0;
            cr_assert_eq(cf_submit(ex, task_value, &x, sizeof x, sizeof v, &f), 0);
            cr_assert_eq(cf_future_result(f, &v, sizeof v, -1), 0, "the pool after a forged size");
            cr_assert_eq(v, value_for(x));
            cf_future_free(f);
        }
    }
    cf_executor_free(ex);
}
