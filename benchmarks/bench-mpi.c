/*
 * bench-mpi.c — libcfutures-mpi: cfutures tasks across the ranks of an MPI
 * job, beside raw MPI and mpi4py.futures (built only when configure found
 * MPI; cfbench itself links no MPI).
 *
 * The figures come from benchmarks/cfbench-mpi, started here under
 * `mpirun --oversubscribe -np 3` (and --allow-run-as-root when cfbench runs
 * as root): rank 0 the root of a cf_mpi_pool_new pool, ranks 1 and 2
 * serving it, each through a local process pool. It measures, in one run,
 * the raw MPI ping-pong that is the floor of a round trip, an empty task's
 * round trip, empty tasks streamed, the seed's x^10 over 3000 integers and
 * the seed's primes, the last two beside the serial loop on one rank.
 * mpi4py.futures' MPIPoolExecutor does the same round trip and stream in a
 * run of its own (py_mpi_bench.py under mpirun -np 3, python3 -m
 * mpi4py.futures) when an interpreter can import mpi4py; otherwise its rows
 * say it is not installed.
 *
 * environment: CFBENCH_MPIRUN (mpirun), CFBENCH_MPI_PROG (cfbench-mpi),
 * CFBENCH_PY_MPI_SCRIPT (py_mpi_bench.py), CFBENCH_PYTHON (interpreter).
 */
#include "bench.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define NP "3"

static const char *env_or(const char *name, const char *fallback)
{
    const char *v = getenv(name);
    return v != NULL && *v != '\0' ? v : fallback;
}

static const char *mpirun(void)
{
#ifdef CFBENCH_MPIRUN
    if (access(CFBENCH_MPIRUN, X_OK) == 0)
        return env_or("CFBENCH_MPIRUN", CFBENCH_MPIRUN);
#endif
    return env_or("CFBENCH_MPIRUN", "mpirun");
}

/* A file of this build (path given at compile time), else beside cfbench. */
static const char *find_file(const char *env, const char *built, const char *name)
{
    static char beside[2][4096];
    static unsigned turn;
    const char *v = getenv(env);
    if (v != NULL && *v != '\0')
        return v;
    if (built != NULL && access(built, R_OK) == 0)
        return built;
    char *b = beside[turn++ % 2];
    ssize_t n = readlink("/proc/self/exe", b, sizeof beside[0] - 64);
    if (n <= 0)
        return NULL;
    b[n] = '\0';
    char *slash = strrchr(b, '/');
    if (slash == NULL)
        return NULL;
    strcpy(slash + 1, name);
    return access(b, R_OK) == 0 ? b : NULL;
}

/* argv for mpirun -np 3 ...: the first free entry of argv. */
static int mpirun_argv(char **argv)
{
    int a = 0;
    argv[a++] = (char *)mpirun();
    if (geteuid() == 0)
        argv[a++] = "--allow-run-as-root";
    argv[a++] = "--oversubscribe";
    argv[a++] = "-np";
    argv[a++] = NP;
    return a;
}

/* An interpreter that imports mpi4py.futures, or NULL. Debian's
 * python3-mpi4py is in /usr/bin/python3's path, which may not be the
 * python3 found first. */
static const char *mpi4py_python(char *why, size_t len)
{
    const char *cands[4];
    size_t n = 0;
    const char *env = getenv("CFBENCH_PYTHON");
    if (env != NULL && *env != '\0')
        cands[n++] = env;
#ifdef CFBENCH_PYTHON3
    cands[n++] = CFBENCH_PYTHON3;
#endif
    cands[n++] = "python3";
    cands[n++] = "/usr/bin/python3";
    for (size_t i = 0; i < n; i++) {
        char *argv[] = {(char *)cands[i], "-c",
                        "import sys\n"
                        "try:\n"
                        "    import mpi4py.futures\n"
                        "except Exception:\n"
                        "    sys.exit(3)\n"
                        "print('{}')\n",
                        NULL};
        if (figures_run(argv, why, len))
            return cands[i];
    }
    snprintf(why, len, "mpi4py not installed (Debian: python3-mpi4py)");
    return NULL;
}

static void ratio_row(table *t, const char *label, double us, double floor_us)
{
    table_row(t, "%s", label);
    table_set(t, "median_us", us);
    table_set(t, "vs_pingpong", us / floor_us);
}

/* A table of two rows: the serial loop's time (1x) and the pool's, with
 * the speedup. */
static void speedup_table(const char *key, const char *title, const char *serial_label,
                          const char *pool_label, double serial_s, double pool_s, const char *note)
{
    static const column cols[] = {
        {"time_s", "time (s)", "%.6f"},
        {"speedup", "speedup", "%.3gx"},
    };
    table *t = table_begin(key, title, cols, 2);
    table_row(t, "%s", serial_label);
    table_set(t, "time_s", serial_s);
    table_set(t, "speedup", 1);
    table_row(t, "%s", pool_label);
    table_set(t, "time_s", pool_s);
    table_set(t, "speedup", serial_s / pool_s);
    table_note(t, "%s", note);
    table_end(t);
}

void bench_mpi(const bench_config *cfg)
{
    char why[256], scale[16];
    snprintf(scale, sizeof scale, "%u", cfg->scale);

    progress("mpi: cfbench-mpi under mpirun -np " NP);
#ifdef CFBENCH_MPI
    const char *prog = find_file("CFBENCH_MPI_PROG", CFBENCH_MPI, "cfbench-mpi");
#else
    const char *prog = find_file("CFBENCH_MPI_PROG", NULL, "cfbench-mpi");
#endif
    bool ours = false;
    if (prog == NULL) {
        snprintf(why, sizeof why, "cfbench-mpi not found (set CFBENCH_MPI_PROG)");
    } else {
        char *argv[16];
        int a = mpirun_argv(argv);
        argv[a++] = (char *)prog;
        if (cfg->quick)
            argv[a++] = "--quick";
        argv[a++] = "--scale";
        argv[a++] = scale;
        argv[a] = NULL;
        ours = figures_run(argv, why, sizeof why);
    }
    progress(NULL);
    if (!ours)
        fprintf(stderr, "cfbench: mpi: %s\n", why);

    char pywhy[256] = "mpi4py skipped (--no-python)";
    bool py = false;
    const char *python = cfg->python ? mpi4py_python(pywhy, sizeof pywhy) : NULL;
#ifdef CFBENCH_PY_MPI_SCRIPT
    const char *script = find_file("CFBENCH_PY_MPI_SCRIPT", CFBENCH_PY_MPI_SCRIPT, "py_mpi_bench.py");
#else
    const char *script = find_file("CFBENCH_PY_MPI_SCRIPT", NULL, "py_mpi_bench.py");
#endif
    if (python != NULL && script == NULL) {
        snprintf(pywhy, sizeof pywhy, "py_mpi_bench.py not found (set CFBENCH_PY_MPI_SCRIPT)");
    } else if (python != NULL) {
        progress("mpi: mpi4py.futures under mpirun -np " NP);
        char *argv[16];
        int a = mpirun_argv(argv);
        argv[a++] = (char *)python;
        argv[a++] = "-m";
        argv[a++] = "mpi4py.futures";
        argv[a++] = (char *)script;
        if (cfg->quick)
            argv[a++] = "--quick";
        argv[a] = NULL;
        py = figures_run(argv, pywhy, sizeof pywhy);
        progress(NULL);
    }

    double pp = py_num("mpi.pingpong_us"), rt = py_num("mpi.roundtrip_us");
    double py_rt = py_num("mpi4py.roundtrip_us");
    static const column lat_cols[] = {
        {"median_us", "time (us)", "%.2f"},
        {"vs_pingpong", "vs ping-pong", "%.3gx"},
    };
    table *t = table_begin("mpi_latency", "MPI, 3 ranks: one round trip vs the raw MPI ping-pong",
                           lat_cols, 2);
    ratio_row(t, "raw MPI ping-pong, 8 bytes, rank 0 <-> 1 (mean)", pp, pp);
    ratio_row(t, "cf_mpi_pool: empty task, cf_submit + cf_future_result", rt, pp);
    if (py) {
        ratio_row(t, "mpi4py.futures MPIPoolExecutor: submit().result()", py_rt, pp);
    } else {
        table_row(t, "mpi4py.futures MPIPoolExecutor: %s", pywhy);
        table_set(t, "median_us", NAN);
    }
    if (!ours)
        table_note(t, "no cfutures-mpi figures: %s", why);
    table_note(t, "the ping-pong is timed before the pool exists, in the same mpirun; "
                  "the round trips are medians");
    table_end(t);

    double rate = py_num("mpi.stream_tasks_s"), py_rate = py_num("mpi4py.stream_tasks_s");
    static const column stream_cols[] = {
        {"count", "tasks", "%.0f"},
        {"tasks_per_s", "tasks/s", "%.0f"},
        {"ours_over_this", "cf_mpi_pool / this", "%.3gx"},
    };
    t = table_begin("mpi_stream", "MPI, 3 ranks: empty tasks streamed (all submitted, then waited for)",
                    stream_cols, 3);
    table_row(t, "cf_mpi_pool: cf_submit stream, then each result");
    table_set(t, "count", py_num("mpi.stream_n"));
    table_set(t, "tasks_per_s", rate);
    table_set(t, "ours_over_this", 1);
    if (py) {
        table_row(t, "mpi4py.futures MPIPoolExecutor: submit stream, then wait");
        table_set(t, "count", py_num("mpi4py.stream_n"));
        table_set(t, "tasks_per_s", py_rate);
        table_set(t, "ours_over_this", rate / py_rate);
    } else {
        table_row(t, "mpi4py.futures MPIPoolExecutor: %s", pywhy);
        table_set(t, "tasks_per_s", NAN);
    }
    table_note(t, "best of %s runs each; mpi4py in an mpirun of its own, after cfbench-mpi's",
               cfg->quick ? "1" : "3");
    table_end(t);

    double workers = py_num("mpi.workers");
    char row[128], note[160];
    snprintf(row, sizeof row, "cf_map on cf_mpi_pool (%.0f workers on 2 ranks), automatic chunks",
             workers);
    snprintf(note, sizeof note, "best of %s; the pool's outputs checked against the loop's",
             cfg->quick ? "1" : "20");
    speedup_table("mpi_pow10", "MPI, 3 ranks: x^10 over 3000 uint64 (the seed's overhead)",
                  "serial loop on rank 0", row, py_num("mpi.pow10_serial_s"),
                  py_num("mpi.pow10_pool_s"), note);

    char serial[64];
    snprintf(serial, sizeof serial, "serial loop on rank 0, %.0f numbers", py_num("mpi.primes_n"));
    snprintf(row, sizeof row, "cf_map on cf_mpi_pool (%.0f workers on 2 ranks), one number a chunk",
             workers);
    snprintf(note, sizeof note,
             "the seed's 6 numbers x %u; best of %s; 3 ranks and their workers share %u cores",
             cfg->scale, cfg->quick ? "1" : "2", cfg->cores);
    speedup_table("mpi_primes", "MPI, 3 ranks: the seed's primes, trial division", serial, row,
                  py_num("mpi.primes_serial_s"), py_num("mpi.primes_pool_s"), note);
}
