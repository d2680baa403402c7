/*
 * cfbench.c — the benchmark of cfutures: the command line and the sections.
 *
 *   cfbench [--quick] [--scale K] [--csv|--json] [--svg DIR] [--no-python]
 *           [--progress|--no-progress] [section...]
 *
 * Each section (bench-<name>.c) measures one lesson of the seeds on both
 * pools, beside the serial loop, OpenMP (when configure found it) and
 * Python's concurrent.futures (when python3 is there). Python runs first and
 * alone, then the sections run one after the other in the order of the
 * table below, whatever order they were named in. A watchdog (SIGALRM) ends
 * the run with a message if a section takes far longer than it can, so that
 * a hung pool fails the benchmark instead of stalling it. On a terminal a
 * status line on stderr says which section and step run (see progress() in
 * bench.h); a piped run and --csv/--json print none.
 */
#include "bench.h"

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

typedef struct section {
    const char *name;
    void      (*run)(const bench_config *cfg);
    const char *about;
    bool        python;      /* py_bench.py measures something for it */
} section;

/*
 * startup runs first: forking costs more the more memory the caller has
 * touched, and the other sections leave cfbench with far more than a small
 * program that starts a pool (Python's figure, too, is taken in a small
 * process of its own).
 */
static const section sections[] = {
    {"startup",    bench_startup,    "pool creation + first result + free", true},
    {"primes",     bench_primes,     "the seed's primes: straight, threads, processes", true},
    {"overhead",   bench_overhead,   "x^10 over 3000 integers: per-element cost of cf_map", true},
    {"sleep",      bench_sleep,      "add() sleeping vs computing on pools of 1, 5, 10", false},
    {"latency",    bench_latency,    "one empty task's round trip vs raw pipe and futex", true},
    {"throughput", bench_throughput, "streaming submits and cf_map of an empty function", true},
    {"bigmap",     bench_bigmap,     "3x+1 over 10^7 elements: heap vs shared buffers", false},
    {"scaling",    bench_scaling,    "speedup with 1 .. 2 x cores workers", false},
    {"balance",    bench_balance,    "uneven tasks: static split vs load balancing", false},
    {"trace",      bench_trace,      "round trip and streaming with CFUTURES_TRACE off and on", false},
    {"drain",      bench_drain,      "10^5 futures in completion order: cf_as_completed vs cf_queue", false},
#ifdef CFBENCH_MPI
    /* Only in a build with MPI: cfbench-mpi under mpirun -np 3 (bench-mpi.c). */
    {"mpi",        bench_mpi,        "libcfutures-mpi, 3 ranks: vs MPI ping-pong, mpi4py.futures", false},
#endif
};
enum { NSECTIONS = sizeof sections / sizeof sections[0] };

static void usage(FILE *f)
{
    fputs("usage: cfbench [options] [section...]\n"
          "\n"
          "Benchmarks cfutures' process and thread pools against a serial loop,\n"
          "OpenMP and Python's concurrent.futures. Sections (default: all):\n",
          f);
    for (size_t i = 0; i < NSECTIONS; i++)
        fprintf(f, "  %-11s %s\n", sections[i].name, sections[i].about);
    fputs("\n"
          "options:\n"
          "  --scale K     primes: the seed's list repeated K times (default 6; 1 with --quick)\n"
          "  --quick       tiny sizes and one repetition (the smoke test)\n"
          "  --csv         one line per figure: section,table,row,column,value\n"
          "  --json        one JSON object\n"
          "  --svg DIR     write SVG charts (speedups, scaling, timelines) into DIR\n"
          "  --no-python   skip Python's concurrent.futures (py_bench.py)\n"
          "  --progress    a status line on stderr (section and step), rewritten in place;\n"
          "                by default only when stdout and stderr are terminals and the\n"
          "                output is text\n"
          "  --no-progress no status line\n"
          "  -h, --help    this text\n"
          "\n"
          "environment: CFBENCH_PYTHON (interpreter), CFBENCH_PY_SCRIPT (py_bench.py)\n"
#ifdef CFBENCH_MPI
          "             CFBENCH_MPIRUN, CFBENCH_MPI_PROG (cfbench-mpi),\n"
          "             CFBENCH_PY_MPI_SCRIPT (py_mpi_bench.py)\n"
#endif
          ,
          f);
}

static int section_index(const char *name)
{
    for (size_t i = 0; i < NSECTIONS; i++)
        if (strcmp(sections[i].name, name) == 0)
            return (int)i;
    return -1;
}

static void bad_usage(const char *fmt, const char *what)
{
    fputs("cfbench: ", stderr);
    fprintf(stderr, fmt, what);
    fputs("\n\n", stderr);
    usage(stderr);
    exit(2);
}

static unsigned parse_scale(const char *s)
{
    char *end;
    errno = 0;
    unsigned long k = s != NULL ? strtoul(s, &end, 10) : 0;
    if (s == NULL || *s == '\0' || *end != '\0' || errno != 0 || k < 1 || k > 10000)
        bad_usage("--scale wants a whole number from 1 to 10000, not '%s'", s ? s : "");
    return (unsigned)k;
}

/* Fills cfg and chosen[] (which sections run) from the command line. */
static void parse_args(int argc, char **argv, bench_config *cfg, bool *chosen)
{
    bool any = false, scaled = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            usage(stdout);
            exit(0);
        } else if (strcmp(a, "--quick") == 0) {
            cfg->quick = true;
        } else if (strcmp(a, "--scale") == 0) {
            cfg->scale = parse_scale(i + 1 < argc ? argv[++i] : NULL);
            scaled = true;
        } else if (strncmp(a, "--scale=", 8) == 0) {
            cfg->scale = parse_scale(a + 8);
            scaled = true;
        } else if (strcmp(a, "--csv") == 0 || strcmp(a, "--json") == 0) {
            out_format f = a[2] == 'c' ? OUT_CSV : OUT_JSON;
            if (cfg->format != OUT_TEXT && cfg->format != f)
                bad_usage("%s: one output format per run", a);
            cfg->format = f;
        } else if (strcmp(a, "--svg") == 0) {
            if (i + 1 >= argc)
                bad_usage("%s wants a directory", a);
            cfg->svg_dir = argv[++i];
        } else if (strncmp(a, "--svg=", 6) == 0) {
            cfg->svg_dir = a + 6;
        } else if (strcmp(a, "--no-python") == 0) {
            cfg->python = false;
        } else if (strcmp(a, "--progress") == 0) {
            cfg->progress = PROGRESS_ON;
        } else if (strcmp(a, "--no-progress") == 0) {
            cfg->progress = PROGRESS_OFF;
        } else if (a[0] == '-') {
            bad_usage("unknown option %s", a);
        } else {
            int s = section_index(a);
            if (s < 0)
                bad_usage("unknown section '%s'", a);
            chosen[s] = any = true;
        }
    }
    if (!any)
        for (size_t i = 0; i < NSECTIONS; i++)
            chosen[i] = true;
    if (cfg->quick && !scaled)
        cfg->scale = 1;
}

static void make_svg_dir(const char *dir)
{
    if (mkdir(dir, 0777) != 0 && errno != EEXIST)
        die("--svg %s: %s", dir, strerror(errno));
}

/* ---- the watchdog ------------------------------------------------------------- */

static const char *volatile running = "start-up";

static void watchdog_fired(int sig)
{
    static const char head[] = "\ncfbench: watchdog: section '", tail[] =
        "' ran far longer than it should: a pool may be hung\n";
    (void)sig;
    ssize_t rc = write(STDERR_FILENO, head, sizeof head - 1);
    rc += write(STDERR_FILENO, running, strlen(running));
    rc += write(STDERR_FILENO, tail, sizeof tail - 1);
    _exit(rc > 0 ? 3 : 4);
}

/* Arms the watchdog for one section: generous, as the machine may be busy. */
static void watchdog_arm(const bench_config *cfg, const char *name)
{
    unsigned seconds = cfg->quick ? 120 : 600;
    if (strcmp(name, "primes") == 0)
        seconds += 5 * cfg->scale;
    running = name;
    alarm(seconds);
}

void chart_written(const bench_config *cfg, const char *file, int rc)
{
    if (rc != 0) {
        int err = errno;
        progress(NULL);
        fprintf(stderr, "cfbench: could not write %s/%s: %s\n", cfg->svg_dir, file,
                strerror(err));
    }
}

/* Runs py_bench.py for the chosen sections that have a Python counterpart. */
static void run_python(const bench_config *cfg, const bool *chosen)
{
    char list[256] = "";
    for (size_t i = 0; i < NSECTIONS; i++)
        if (chosen[i] && sections[i].python) {
            if (list[0] != '\0')
                strcat(list, ",");
            strcat(list, sections[i].name);
        }
    if (list[0] == '\0') {
        py_skip("py_bench.py not run: no section chosen compares with it");
        return;
    }
    progress("running py_bench.py (Python's concurrent.futures) ...");
    const char *why;
    bool ran = py_run(cfg, list, &why);
    progress(NULL);
    if (!ran)
        fprintf(stderr, "cfbench: no Python comparison: %s\n", why);
}

int main(int argc, char **argv)
{
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    bench_config cfg = {.scale = 6, .python = true, .format = OUT_TEXT,
                        .cores = cpus < 1 ? 1 : (unsigned)cpus};
    bool chosen[NSECTIONS] = {false};
    parse_args(argc, argv, &cfg, chosen);
    progress_init(&cfg);
    signal(SIGALRM, watchdog_fired);
    if (cfg.svg_dir != NULL)
        make_svg_dir(cfg.svg_dir);
    if (cfg.python)
        run_python(&cfg, chosen);

    unsigned count = 0, index = 0;
    for (size_t i = 0; i < NSECTIONS; i++)
        count += chosen[i];
    report_begin(&cfg, stdout);
    for (size_t i = 0; i < NSECTIONS; i++) {
        if (!chosen[i])
            continue;
        progress_section(++index, count);
        progress("%s", sections[i].name);
        watchdog_arm(&cfg, sections[i].name);
        report_section_begin(sections[i].name);
        sections[i].run(&cfg);
        report_section_end();
    }
    alarm(0);
    report_end();
    progress(NULL);
    return 0;
}
