/*
 * cf_main_guard: exec workers that start after the program's constructors.
 *
 * This program's own constructor fills a global table, and its main (its
 * own, not Criterion's) calls cf_main_guard first. Each Criterion test runs
 * in a fresh execution of the program in which main does not run (Criterion
 * starts its tests so), so each test chooses: it calls cf_main_guard itself
 * (guard_on), as main would have, or not. An exec worker of a guarded test
 * is a fresh execution too, in which main does run: cf_main_guard there
 * makes it a worker. What that main does before the guard is chosen by the
 * test through the environment (CF_TEST_GUARD_MAIN, see before_guard), to
 * play a program that misuses the guard.
 *
 *   - without the guard an exec worker reads the table as zeros (its
 *     library's constructor took it over before the program's ran): the
 *     default, unchanged; a guard called from another thread than main's
 *     leaves it so;
 *   - with it, tasks and the initializer read the table as the constructor
 *     filled it; a second call, and a call in a task, change nothing;
 *   - a worker whose main calls another cfutures function first, calls the
 *     guard from another thread, returns or exits without it, prints one
 *     line naming cfutures and cf_main_guard and exits with status 116:
 *     creation fails with CF_ECRASHED, leaving no process behind; a
 *     replacement that does so is not started again (the pool breaks);
 *   - a main that reads stdin before the guard reads end of file at once,
 *     even when the caller's stdin would block;
 *   - a worker still in main before the guard dies with its zygote, and
 *     the creation that waited for it fails and returns;
 *   - fork and thread pools of a guarded program are as before.
 */
#include "helpers.h"

#include <criterion/criterion.h>

#include <dlfcn.h>
#include <pthread.h>
#include <sys/syscall.h>

#define EXIT_NO_GUARD 116    /* src/internal.h: CF__EXIT_NO_GUARD */

/* ---- the program: a table its constructor fills, a main with the guard ---- */

static int table[3];
/* Volatile: a compiler may run a constructor that stores constants at build
 * time (LLVM does), leaving the table filled in the image itself. */
static volatile int step = 10;

__attribute__((constructor)) static void fill_table(void)
{
    for (int i = 0; i < 3; i++)
        table[i] = step * (i + 1);
}

/* A cell in cf_shared_alloc memory whose address the test passes to its workers. */
static int *shared_cell(void)
{
    const char *where = getenv("CF_TEST_GUARD_CELL");
    return where != NULL ? (int *)(uintptr_t)strtoull(where, NULL, 16) : NULL;
}

static void *guard_in_thread(void *arg)
{
    (void)arg;
    cf_main_guard();
    return NULL;
}

/*
 * In a worker of a test below: what main does before its guard. Records the
 * worker's pid first (the tests check that it is gone after).
 */
static void before_guard(const char *mode)
{
    int *cell = shared_cell();
    if (cell != NULL)
        __atomic_store_n(cell, (int)getpid(), __ATOMIC_SEQ_CST);
    if (strcmp(mode, "pool") == 0) {
        /* The fork bomb a missing guard would be: the pool's workers would do the same. */
        cf_options opts = { .workers = 1, .start = CF_START_EXEC };
        cf_executor *ex;
        cf_process_pool_new(&ex, &opts);
    } else if (strcmp(mode, "worker_id") == 0) {
        (void)cf_worker_id();
    } else if (strcmp(mode, "strerror") == 0) {
        (void)cf_strerror(0);
    } else if (strcmp(mode, "shared_alloc") == 0) {
        (void)cf_shared_alloc(64);
    } else if (strcmp(mode, "return") == 0) {
        exit(0);    /* what returning from main does */
    } else if (strcmp(mode, "exit") == 0) {
        exit(3);
    } else if (strcmp(mode, "thread") == 0) {
        pthread_t t;
        if (pthread_create(&t, NULL, guard_in_thread, NULL) == 0)
            pthread_join(t, NULL);
    } else if (strcmp(mode, "stdin") == 0) {
        char c;
        ssize_t n;
        while ((n = read(STDIN_FILENO, &c, 1)) < 0 && errno == EINTR)
            ;
        if (n != 0)
            _exit(3);    /* not end of file: creation fails with CF_ECRASHED */
    } else if (strcmp(mode, "file") == 0) {
        const char *path = getenv("CF_TEST_GUARD_FILE");
        if (path != NULL && access(path, F_OK) == 0)
            (void)cf_worker_id();
    } else if (strcmp(mode, "block") == 0) {
        for (;;)
            pause();
    }
}

int main(int argc, char *argv[])
{
    const char *mode = getenv("CF_TEST_GUARD_MAIN");
    if (mode != NULL)
        before_guard(mode);
    cf_main_guard();

    struct criterion_test_set *tests = criterion_initialize();
    int rc = 0;
    if (criterion_handle_args(argc, argv, true))
        rc = !criterion_run_all_tests(tests);
    criterion_finalize(tests);
    return rc;
}

/* ---- helpers of the tests ------------------------------------------------------ */

/*
 * Exec workers of a test run the program's main only without BXFI_MAP,
 * which marks Criterion's own test processes (it would run a test there).
 */
static void exec_setup(void)
{
    skip_exec_under_valgrind(POOL_EXEC);
    unsetenv("BXFI_MAP");
}

/* What main would have done: this test process is guarded from now on. */
static void guard_on(void)
{
    exec_setup();
    cf_main_guard();
}

static cf_executor *pool_of(enum pool_kind kind, unsigned workers, cf_init_fn *init)
{
    cf_options opts = { .workers = workers, .initializer = init };
    cf_executor *ex = NULL;
    int rc = pool_kind_new(kind, &ex, &opts);
    cr_assert_eq(rc, 0, "%s pool: %s", pool_kind_name(kind), cf_strerror(rc));
    return ex;
}

static int task_table(const void *arg, size_t as, void *res, size_t rs)
{
    (void)arg;
    if (as != 0 || rs != sizeof table)
        return CODE_BADSIZE;
    memcpy(res, table, sizeof table);
    return 0;
}

/* Calls the guard again, in a worker: it must return, the worker going on. */
static int task_guard(const void *arg, size_t as, void *res, size_t rs)
{
    (void)arg;
    (void)as;
    cf_main_guard();
    return task_worker_id(NULL, 0, res, rs);
}

static int task_pid(const void *arg, size_t as, void *res, size_t rs)
{
    int pid = (int)getpid();
    (void)arg;
    (void)as;
    if (rs != sizeof pid)
        return CODE_BADSIZE;
    memcpy(res, &pid, sizeof pid);
    return 0;
}

#define INIT_SAW_ZEROS 71

static int init_table(const void *arg, size_t as)
{
    (void)arg;
    (void)as;
    return table[1] == 20 ? 0 : INIT_SAW_ZEROS;
}

/* The table as a task of ex reads it. */
static void read_table(cf_executor *ex, int out[3])
{
    cf_future *f;
    int rc = cf_submit(ex, task_table, NULL, 0, sizeof table, &f);
    cr_assert_eq(rc, 0, "cf_submit: %s", cf_strerror(rc));
    rc = cf_future_result(f, out, sizeof table, -1);
    cr_assert_eq(rc, 0, "task_table: %s", cf_strerror(rc));
    cf_future_free(f);
}

/* True when the library is a shared object of its own, loaded before the program's constructors run. */
static bool library_apart(void)
{
    Dl_info lib, prog;
    return dladdr((void *)cf_main_guard, &lib) != 0 && dladdr((void *)fill_table, &prog) != 0 &&
           lib.dli_fname != NULL && prog.dli_fname != NULL && strcmp(lib.dli_fname, prog.dli_fname) != 0;
}

static void assert_table_zero(cf_executor *ex, const char *why)
{
    int got[3] = { -1, -1, -1 };
    read_table(ex, got);
    if (!library_apart()) {
        cr_log_warn("libcfutures is linked into the program: its constructor's order is the link's (%s)", why);
        return;
    }
    cr_assert(got[0] == 0 && got[1] == 0 && got[2] == 0,
              "%s: the exec worker read {%d, %d, %d}, expected zeros (the old behaviour)", why, got[0], got[1],
              got[2]);
}

static void assert_table_full(cf_executor *ex, const char *what)
{
    int got[3] = { -1, -1, -1 };
    read_table(ex, got);
    cr_assert(got[0] == 10 && got[1] == 20 && got[2] == 30,
              "%s: the worker read {%d, %d, %d}, expected {10, 20, 30}", what, got[0], got[1], got[2]);
}

/* A shared cell for the workers' pid, its address in their environment. */
static int *cell_new(void)
{
    int *cell = cf_shared_alloc(sizeof *cell);
    char where[32];
    cr_assert_not_null(cell);
    snprintf(where, sizeof where, "%" PRIxPTR, (uintptr_t)cell);
    setenv("CF_TEST_GUARD_CELL", where, 1);
    return cell;
}

/* Waits until pid no longer runs (a zombie counts as gone); true if it got there. */
static bool gone_within(pid_t pid, int max_ms)
{
    for (int ms = 0; ms < max_ms; ms++) {
        if (process_gone(pid))
            return true;
        sleep_ms(1);
    }
    return process_gone(pid);
}

/* ---- without the guard: the default ----------------------------------------------------- */

Test(guard, without_guard_exec_worker_reads_zeros, .timeout = TEST_TIMEOUT)
{
    exec_setup();
    cr_assert(table[1] == 20, "the test process's own constructor did not run");
    cf_executor *ex = pool_of(POOL_EXEC, 2, NULL);
    assert_table_zero(ex, "no guard");
    cf_executor_free(ex);
}

Test(guard, from_another_thread_changes_nothing, .timeout = TEST_TIMEOUT)
{
    pthread_t t;
    exec_setup();
    cr_assert_eq(pthread_create(&t, NULL, guard_in_thread, NULL), 0);
    cr_assert_eq(pthread_join(t, NULL), 0);
    cf_executor *ex = pool_of(POOL_EXEC, 1, NULL);
    assert_table_zero(ex, "guard called from a thread other than main's");
    cf_executor_free(ex);
}

/* ---- with the guard --------------------------------------------------------------------- */

Test(guard, exec_worker_reads_constructor_globals, .timeout = TEST_TIMEOUT)
{
    guard_on();
    cf_executor *ex = pool_of(POOL_EXEC, 2, init_table);
    for (int i = 0; i < 8; i++)
        assert_table_full(ex, "guarded exec pool");
    cf_executor_free(ex);
}

Test(guard, twice_and_in_a_task_is_harmless, .timeout = TEST_TIMEOUT)
{
    guard_on();
    cf_main_guard();
    cf_executor *ex = pool_of(POOL_EXEC, 1, NULL);
    for (int i = 0; i < 3; i++) {
        cf_future *f;
        int id = -1;
        cr_assert_eq(cf_submit(ex, task_guard, NULL, 0, sizeof id, &f), 0);
        cr_assert_eq(cf_future_result(f, &id, sizeof id, -1), 0, "a task calling cf_main_guard failed");
        cr_assert_eq(id, 0, "cf_worker_id %d after cf_main_guard in a task", id);
        cf_future_free(f);
    }
    assert_table_full(ex, "after tasks that called the guard");
    cf_executor_free(ex);
}

Test(guard, fork_and_thread_pools_unaffected, .timeout = TEST_TIMEOUT)
{
    cf_main_guard();
    for (enum pool_kind kind = POOL_THREAD; kind <= POOL_FORK; kind++) {
        cf_executor *ex = pool_of(kind, 2, init_table);
        cf_future *f;
        int id = -1;
        assert_table_full(ex, pool_kind_name(kind));
        cr_assert_eq(cf_submit(ex, task_guard, NULL, 0, sizeof id, &f), 0);
        cr_assert_eq(cf_future_result(f, &id, sizeof id, -1), 0, "%s: cf_main_guard in a task", pool_kind_name(kind));
        cr_assert(id == 0 || id == 1, "%s: cf_worker_id %d", pool_kind_name(kind), id);
        cf_future_free(f);
        cf_executor_free(ex);
    }
}

/* ---- a program that does something else before the guard --------------------------------------- */

/* stderr of this process (and so of the workers it starts) into a file until undone. */
struct captured {
    int saved;
    FILE *file;
};

static struct captured capture_stderr(void)
{
    struct captured c = { dup(STDERR_FILENO), tmpfile() };
    cr_assert(c.saved >= 0 && c.file != NULL);
    fflush(stderr);
    cr_assert_eq(dup2(fileno(c.file), STDERR_FILENO), STDERR_FILENO);
    return c;
}

static void release_stderr(struct captured *c, char *out, size_t size)
{
    fflush(stderr);
    dup2(c->saved, STDERR_FILENO);
    close(c->saved);
    rewind(c->file);
    size_t n = fread(out, 1, size - 1, c->file);
    out[n] = '\0';
    fclose(c->file);
}

Test(guard, call_before_guard_ends_worker, .timeout = SLOW_TIMEOUT)
{
    static const char *const modes[] = { "pool", "worker_id", "strerror", "shared_alloc", "return", "exit",
                                         "thread" };
    guard_on();
    int *cell = cell_new();
    for (size_t i = 0; i < sizeof modes / sizeof *modes; i++) {
        struct census before;
        char msg[256], err[2048];
        cf_options opts = { .workers = 1, .start = CF_START_EXEC };
        cf_executor *ex = untouched();
        __atomic_store_n(cell, 0, __ATOMIC_SEQ_CST);
        setenv("CF_TEST_GUARD_MAIN", modes[i], 1);
        census_take(&before);
        struct captured c = capture_stderr();
        int rc = cf_process_pool_new(&ex, &opts);
        release_stderr(&c, err, sizeof err);
        unsetenv("CF_TEST_GUARD_MAIN");
        fprintf(stderr, "  main does \"%s\" before the guard: %s; the worker said: %s", modes[i], cf_strerror(rc),
                err);

        cr_assert_eq(rc, CF_ECRASHED, "%s: cf_process_pool_new returned %s, expected CF_ECRASHED", modes[i],
                     cf_strerror(rc));
        cr_assert_eq(ex, untouched(), "%s: a failed creation wrote *out", modes[i]);
        cr_assert(census_same(&before, msg, sizeof msg), "%s: the failed creation left something: %s", modes[i],
                  msg);
        pid_t worker = (pid_t)__atomic_load_n(cell, __ATOMIC_SEQ_CST);
        cr_assert_gt(worker, 0, "%s: the worker's main never ran", modes[i]);
        cr_assert(gone_within(worker, POLL_MAX_MS), "%s: worker %d still runs", modes[i], (int)worker);

        char want[64];
        snprintf(want, sizeof want, "status %d", EXIT_NO_GUARD);
        cr_assert(strstr(err, "cfutures") != NULL && strstr(err, "cf_main_guard") != NULL &&
                  strstr(err, want) != NULL, "%s: stderr does not name cfutures, the guard and status %d: \"%s\"",
                  modes[i], EXIT_NO_GUARD, err);
        const char *nl = strchr(err, '\n');
        cr_assert(nl != NULL && nl[1] == '\0', "%s: not one line on stderr: \"%s\"", modes[i], err);
    }
    cf_shared_free(cell, sizeof *cell);
}

Test(guard, stdin_before_guard_reads_end_of_file, .timeout = TEST_TIMEOUT)
{
    int p[2], saved;
    guard_on();
    /* This process's stdin: a pipe nobody writes to, which would block a reader for ever. */
    cr_assert_eq(pipe(p), 0);
    saved = dup(STDIN_FILENO);
    cr_assert_eq(dup2(p[0], STDIN_FILENO), STDIN_FILENO);
    setenv("CF_TEST_GUARD_MAIN", "stdin", 1);
    cf_executor *ex = pool_of(POOL_EXEC, 2, NULL);
    unsetenv("CF_TEST_GUARD_MAIN");
    dup2(saved, STDIN_FILENO);
    close(saved);
    close(p[0]);
    close(p[1]);
    assert_table_full(ex, "a main that read stdin before the guard");
    cf_executor_free(ex);
}

Test(guard, replacement_that_skips_guard_is_not_restarted, .timeout = TEST_TIMEOUT)
{
    char path[] = "/tmp/cf-guard-XXXXXX";
    guard_on();
    int fd = mkstemp(path);
    cr_assert_geq(fd, 0);
    close(fd);
    unlink(path);    /* absent while the pool starts: main calls the guard */
    setenv("CF_TEST_GUARD_MAIN", "file", 1);
    setenv("CF_TEST_GUARD_FILE", path, 1);
    cf_executor *ex = pool_of(POOL_EXEC, 1, NULL);
    unsetenv("CF_TEST_GUARD_MAIN");
    assert_table_full(ex, "before the file exists");

    /* From now on a new worker's main calls cf_worker_id before the guard. */
    fd = open(path, O_CREAT | O_WRONLY, 0600);
    cr_assert_geq(fd, 0);
    close(fd);
    cf_future *f;
    int pid = 0, rc;
    cr_assert_eq(cf_submit(ex, task_pid, NULL, 0, sizeof pid, &f), 0);
    cr_assert_eq(cf_future_result(f, &pid, sizeof pid, -1), 0);
    cf_future_free(f);
    cr_assert_eq(kill_one(pid, SIGKILL), 0);
    cr_assert(gone_within(pid, POLL_MAX_MS), "worker %d survived SIGKILL", pid);    /* it takes nothing more */

    /* Its replacement exits with status 116 and is not started again: the pool
     * breaks, before this submit (which says so) or after it (the task fails). */
    rc = cf_submit(ex, task_pid, NULL, 0, sizeof pid, &f);
    if (rc == 0) {
        rc = cf_future_result(f, &pid, sizeof pid, POLL_MAX_MS);
        cf_future_free(f);
    }
    unlink(path);
    unsetenv("CF_TEST_GUARD_FILE");
    cr_assert_eq(rc, CF_EBROKEN, "a task after the replacement skipped the guard: %s, expected CF_EBROKEN",
                 cf_strerror(rc));
    cf_executor_free(ex);
}

struct creation {
    int rc;
    cf_executor *ex;
};

#define NOT_YET 1    /* creation has not returned */

static void *create_exec_pool(void *arg)
{
    struct creation *c = arg;
    cf_options opts = { .workers = 1, .start = CF_START_EXEC };
    cf_executor *ex = NULL;
    int rc = cf_process_pool_new(&ex, &opts);
    c->ex = ex;
    store_int(&c->rc, rc);
    return NULL;
}

Test(guard, worker_before_guard_dies_with_its_zygote, .timeout = TEST_TIMEOUT)
{
    pid_t before[1024];
    int nbefore;
    guard_on();
    int *cell = cell_new();
    nbefore = proc_children(getpid(), before, 1024, NULL);
    cr_assert(nbefore >= 0 && nbefore < 1024);
    setenv("CF_TEST_GUARD_MAIN", "block", 1);
    struct creation c = { NOT_YET, NULL };
    pthread_t t;
    cr_assert_eq(pthread_create(&t, NULL, create_exec_pool, &c), 0);
    cr_assert(wait_at_least(cell, 1, POLL_MAX_MS), "the worker's main never ran");
    unsetenv("CF_TEST_GUARD_MAIN");
    pid_t worker = (pid_t)load_int(cell);
    pid_t zygote = find_zygote(before, nbefore);
    cr_assert_gt(zygote, 0, "no zygote found");
    cr_assert_eq(kill_child(zygote, getpid(), SIGKILL), 0);
    bool gone = gone_within(worker, POLL_MAX_MS);
    if (!gone)
        kill_one(worker, SIGKILL);    /* an orphan: not left behind by the test */
    cr_assert(gone, "worker %d, blocked before the guard, outlived its zygote", (int)worker);

    /* The zygote died while the pool was being created: creation fails, and returns. */
    for (int ms = 0; ms < POLL_MAX_MS && load_int(&c.rc) == NOT_YET; ms++)
        sleep_ms(1);
    int rc = load_int(&c.rc);
    cr_assert_neq(rc, NOT_YET, "cf_process_pool_new did not return after its zygote died");
    cr_assert_eq(pthread_join(t, NULL), 0);
    cr_assert_neq(rc, 0, "creation succeeded although its zygote died while the worker was before its guard");
    fprintf(stderr, "  zygote killed during creation: %s\n", cf_strerror(rc));
    cf_shared_free(cell, sizeof *cell);
}
