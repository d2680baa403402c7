/*
 * The process pool's ring under abuse: a pool that breaks in the middle of
 * a map, and many pools created and freed at once. Built twice:
 * CF_TEST_BACKEND=2 (suite ring_fork, fork workers) and CF_TEST_BACKEND=3
 * (suite ring_exec, exec workers).
 *
 * Tasks report through a probe allocated with cf_shared_alloc before each
 * pool (tests/helpers.h); exec workers find it through the environment.
 */
#include "helpers.h"
#undef CODE_BADSIZE
#include "reliability.h"

#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>

#if BACKEND_EXEC
#  define SUITE ring_exec
#else
#  define SUITE ring_fork
#endif

#define CODE_BADARG  78    /* a task called with sizes it did not expect */

static struct probe *probe_ptr;

static void probe_setup(void)
{
    char where[32];
    rel_no_core_dumps();
    probe_ptr = probe_new();
    snprintf(where, sizeof where, "%" PRIxPTR, (uintptr_t)probe_ptr);
    setenv("CF_TEST_PROBE", where, 1);
}

static void probe_teardown(void)
{
    unsetenv("CF_TEST_PROBE");
    probe_free(probe_ptr);
    probe_ptr = NULL;
}

#define RTEST(name, ...) \
    Test(SUITE, name, .init = probe_setup, .fini = probe_teardown, __VA_ARGS__)

static cf_executor *pool_of(unsigned workers)
{
#if BACKEND_EXEC
    SKIP_EXEC_UNDER_VALGRIND();
#endif
    return pool_start(workers);
}

static uint64_t map_value(uint64_t x)
{
    return x * 3 + 1;
}

/* ---- a pool that breaks in the middle of a map ----------------------------- */

#define BREAK_N 300

/*
 * Element 0 (chunk 0) kills the worker's parent, the pool's zygote, with
 * which every worker dies; every other element waits to be killed too.
 */
static void break_or_wait(uint64_t x)
{
    if (x == 0) {
        kill(getppid(), SIGKILL);
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
        return CODE_BADARG;
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

/* ---- many pools ----------------------------------------------------------- */

/* Each created and freed at once: every free returns (a worker that missed
 * the pool's close would hold it up; see tests/test-idle.c for the race). */
RTEST(create_and_free_300_pools, .timeout = REL_SLOW_TIMEOUT)
{
    int pools = rel_under_valgrind() ? 10 : REL_ASAN ? 100 : 300;
#if BACKEND_EXEC
    SKIP_EXEC_UNDER_VALGRIND();
#endif
    for (int i = 0; i < pools; i++) {
        cf_executor *ex = NULL;
        cf_options o = { .workers = 2 };
        int rc = pool_new(&ex, &o);
        cr_assert_eq(rc, 0, "pool %d: %s", i, cf_strerror(rc));
        cf_executor_free(ex);
    }
}
