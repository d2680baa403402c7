/*
 * bench.h — what the pieces of cfbench share.
 *
 * cfbench.c parses the command line and runs the sections; each section
 * (bench-<name>.c) measures one lesson and hands its figures to report.c as
 * tables, and its charts to svg.c. workloads.c holds the task functions, the
 * same code for the serial loop, both pools, OpenMP and oneTBB; omp.c the
 * OpenMP loops; tbb.cc the oneTBB ones (tbb-none.c without oneTBB); floors.c the raw pipe and futex round trips; python.c runs
 * py_bench.py and keeps what it measured.
 *
 * Every figure a section prints is measured in the same run; a comparison
 * that could not be measured (no OpenMP, no python3) is left out with a note;
 * oneTBB's rows are there either way, and say "not built" without it.
 */
#ifndef CFBENCH_H
#define CFBENCH_H

#include <cfutures.h>

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* ---- configuration (cfbench.c) ------------------------------------------ */

typedef enum { OUT_TEXT, OUT_CSV, OUT_JSON } out_format;
/* The status line: drawn on a terminal only, unless forced either way. */
typedef enum { PROGRESS_AUTO = 0, PROGRESS_ON, PROGRESS_OFF } progress_mode;

typedef struct bench_config {
    bool        quick;       /* tiny sizes, one repetition: the smoke test */
    unsigned    scale;       /* primes: the seed's list repeated this many times */
    bool        python;      /* run py_bench.py when python3 is there */
    out_format  format;
    const char *svg_dir;     /* NULL: no charts */
    unsigned    cores;       /* online CPUs, the default pool size */
    progress_mode progress;  /* --progress, --no-progress */
} bench_config;

/* ---- measuring (measure.c) ------------------------------------------------ */

uint64_t now_ns(void);                      /* CLOCK_MONOTONIC, as cf_task_info */
double   now_s(void);
double   median(double *v, size_t n);       /* sorts v */
/* Median nanoseconds of reps round trips of an empty task on ex (cf_submit,
 * then cf_future_result), after reps / 10 + 10 not counted. */
double   executor_round_trip_ns(cf_executor *ex, unsigned reps);
/* A counter of the system calls this process and every thread and process
 * it starts from now on enter (the raw_syscalls:sys_enter tracepoint,
 * inherited): its descriptor, or -1 with the reason in why. A child's calls
 * are added when it exits. */
int       syscall_counter_open(char *why, size_t len);
long long syscall_counter_read(int fd);

/* Best time of one call of run(ctx), over at least min_reps calls and until
 * budget_s seconds have gone by (never more than max_reps calls). */
double best_time(void (*run)(void *ctx), void *ctx, unsigned min_reps,
                 unsigned max_reps, double budget_s);

typedef enum { POOL_THREAD = 0, POOL_PROCESS = 1 } pool_kind;
enum { POOL_KINDS = 2 };
const char *pool_name(pool_kind k);         /* "thread", "process" */
const char *pool_title(pool_kind k);        /* "thread pool", "process pool" */

/* A pool of `workers` (0: one per CPU) that has run one task; exits on error. */
cf_executor *pool_open(pool_kind k, unsigned workers);
/* Exits with a message when rc is a failure. */
void check(int rc, const char *what);
void die(const char *fmt, ...) __attribute__((noreturn, format(printf, 1, 2)));
void *xmalloc(size_t size);

/*
 * The status line: one line on stderr, rewritten in place ("cfbench [3/9]
 * latency: thread pool"), which tells where a long run is. Drawn only when
 * stdout and stderr are both terminals and the output is text (or with
 * --progress); a piped or redirected run and --csv/--json get none of it.
 * progress_init decides, progress_section sets the [k/n] of the section
 * that runs, progress(fmt, ...) shows a step, progress(NULL) clears the
 * line (done before anything else is printed).
 */
void progress_init(const bench_config *cfg);
void progress_section(unsigned index, unsigned count);
void progress(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* ---- workloads (workloads.c) ----------------------------------------------- */

/* The seed's list: five primes, then a composite whose smallest factor is large. */
enum { SEED_COUNT = 6 };
extern const uint64_t seed_numbers[SEED_COUNT];
/* The seed's trial division: false for even n, else odd divisors up to sqrt(n). */
bool is_prime(uint64_t n);
static inline uint64_t pow10_u64(uint64_t x)
{
    uint64_t p = 1;
    for (int k = 0; k < 10; k++)
        p *= x;
    return p;
}
static inline uint64_t triple_plus_one(uint64_t x)
{
    return 3 * x + 1;
}
/* Burns the CPU for iters rounds of a dependent multiply; returns a value
 * the caller may ignore (it keeps the loop from being optimised away). */
uint64_t spin(uint64_t iters);
/* Rounds of spin() that take about `seconds` on one core, measured now. */
uint64_t spin_iters_for(double seconds);

/* The seed's add(): x + y after sleeping or computing for `cost`. */
typedef struct add_arg {
    int64_t  x, y;
    uint64_t cost;           /* nanoseconds to sleep, or rounds of spin() */
} add_arg;

/* Where and when a task ran, recorded by the task itself. */
typedef struct span {
    int32_t  worker;
    uint64_t start_ns, end_ns;
} span;

cf_fn prime_task;            /* uint64 n -> int32 is_prime(n) */
cf_fn pow10_task;            /* uint64 x -> uint64 x^10 */
cf_fn triple_task;           /* uint64 x -> uint64 3x+1 */
cf_chunk_fn triple_chunk;   /* the same, a chunk per call (cf_map_chunks) */
cf_fn empty_task;            /* anything -> nothing */
cf_fn sleep_add_task;        /* add_arg -> int64, sleeping */
cf_fn spin_add_task;         /* add_arg -> int64, computing */
cf_fn spin_span_task;        /* uint64 rounds -> span */

/* ---- OpenMP comparison (omp.c); stubs when built without OpenMP ---------- */

bool     omp_available(void);
unsigned omp_threads(void);
void     omp_settle(void);       /* after a region: until libgomp's threads stop spinning */
void     omp_primes(const uint64_t *n, int32_t *is, size_t count);      /* dynamic,1 */
void     omp_pow10(const uint64_t *in, uint64_t *out, size_t count);    /* static */
void     omp_triple(const uint64_t *in, uint64_t *out, size_t count);   /* static */
void     omp_spin(const uint64_t *rounds, size_t count, unsigned threads); /* dynamic,1 */
void     omp_spans(const uint64_t *rounds, span *out, size_t count, bool dynamic);

/* ---- oneTBB comparison (tbb.cc); tbb-none.c when built without oneTBB ------ */

bool     tbb_available(void);
unsigned tbb_threads(void);
void     tbb_settle(void);       /* after a loop: until TBB's threads stop spinning */
/* Seconds to task_group::run n empty tasks and wait() for them all. */
double   tbb_stream_empty(size_t n);
/* parallel_for of x^10: static_partitioner, or auto_partitioner. */
void     tbb_pow10(const uint64_t *in, uint64_t *out, size_t count, bool static_split);
/* parallel_for of spin() with spans: simple_partitioner grain 1, or auto_partitioner. */
void     tbb_spans(const uint64_t *rounds, span *out, size_t count, bool one_by_one);
/* What a oneTBB row says when tbb.cc was not built (the header says why). */
#define TBB_NOT_BUILT "not built"

/* ---- raw round trips between two processes (floors.c) ------------------------ */

/* Median nanoseconds of `reps` individually timed round trips, the two
 * processes pinned to one core or to two; NaN when there are not two cores. */
double pipe_round_trip_ns(unsigned reps, bool two_cores);
double futex_round_trip_ns(unsigned reps);   /* two cores, both sides sleep */
double spin_round_trip_ns(unsigned reps);    /* two cores, both sides spin */
/* Nanoseconds of the least a pool of forked workers costs: fork them on pipes,
 * one empty task through the first, close, reap (floors.c). */
double minimal_fork_pool_ns(unsigned workers);

/* ---- Python's concurrent.futures (python.c) --------------------------------- */

/* Runs py_bench.py for the given sections; false (with *why set) if it could not. */
bool py_run(const bench_config *cfg, const char *sections, const char **why);
/* Runs argv, which must print one flat JSON object on stdout (its last line
 * that begins with '{' starts it), and keeps its figures beside Python's,
 * for py_num and py_text (bench-mpi.c runs cfbench-mpi this way). False,
 * with the reason in why, if it failed or printed no such object. */
bool figures_run(char *const argv[], char *why, size_t len);
/* A figure py_bench.py (or figures_run) measured, or NaN when absent. */
double py_num(const char *key);
/* A text py_bench.py reported (such as "python.version"), or NULL. */
const char *py_text(const char *key);
bool py_ran(void);
/* Why Python figures are missing, for a note; NULL when they are there. */
const char *py_missing(void);
/* py_bench.py was not run, for this reason (a static string). */
void py_skip(const char *why);

/* ---- reporting (report.c) ---------------------------------------------------- */

typedef struct column {
    const char *key;         /* JSON and CSV name, with its unit: "time_s" */
    const char *head;        /* table heading: "time (s)" */
    const char *fmt;         /* printf format of one double: "%.3f" */
} column;

typedef struct table table;

void report_begin(const bench_config *cfg, FILE *out);
void report_section_begin(const char *name);
void report_section_end(void);
void report_end(void);

/* A table of rows (a label and one value per column); printed by table_end. */
table *table_begin(const char *key, const char *title, const column *cols, size_t ncols);
void   table_row(table *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Sets a column of the current row; NaN and infinities print as missing. */
void   table_set(table *t, const char *key, double v);
void   table_set_text(table *t, const char *key, const char *text);
void   table_note(table *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void   table_end(table *t);

/* ---- charts (svg.c) ------------------------------------------------------------ */

typedef struct bar {
    const char *label;
    double      value;
    int         group;       /* colour: 0 ours, 1 OpenMP, 2 Python, 3 baseline */
} bar;

/* A bar chart of speedups with a dashed line at `ideal` and a footnote (or NULL).
 * Returns 0 or -1. */
int svg_bars(const char *dir, const char *file, const char *title, const char *note,
             const bar *bars, size_t n, double ideal);

typedef struct series {
    const char   *label;
    const double *y;         /* one value per x; NaN: no point */
} series;

/* A line chart of y against x = 1..nx with a dashed line at y = x up to `cap`. */
int svg_lines(const char *dir, const char *file, const char *title, const char *ylabel,
              const series *s, size_t ns, size_t nx, double cap);

typedef struct lane_task {
    int      worker;         /* lane */
    double   start, end;     /* seconds from the panel's start */
    unsigned id;             /* task index, printed in the bar when it fits */
    int      shade;          /* colour index */
    bool     failed;         /* crossed out in red: the task crashed, timed out, ... */
} lane_task;

typedef struct panel {
    const char      *title;
    const lane_task *tasks;
    size_t           ntasks;
    unsigned         lanes;
} panel;

/* Stacked timelines sharing one time axis: one lane per worker, one bar per task. */
int svg_timeline(const char *dir, const char *file, const char *title, const panel *p,
                 size_t np);

/* ---- measurements that several sections take ------------------------------------ */

/* Median nanoseconds of reps empty-task round trips on a new pool of kind k
 * (bench-latency.c). */
double round_trip_ns(pool_kind k, unsigned reps);
/* Seconds to cf_submit n empty tasks and cf_wait for them all (bench-throughput.c). */
double stream_submits(cf_executor *ex, size_t n);
/* cf_map of an empty function over in[0..n), for best_time (bench-throughput.c). */
typedef struct map_job {
    cf_executor    *ex;
    const uint64_t *in;
    size_t          n;
} map_job;
void map_empty(void *ctx);

/* ---- the sections ---------------------------------------------------------------- */

void bench_primes(const bench_config *cfg);
void bench_overhead(const bench_config *cfg);
void bench_sleep(const bench_config *cfg);
void bench_latency(const bench_config *cfg);
void bench_throughput(const bench_config *cfg);
void bench_bigmap(const bench_config *cfg);
void bench_scaling(const bench_config *cfg);
void bench_balance(const bench_config *cfg);
void bench_startup(const bench_config *cfg);
void bench_trace(const bench_config *cfg);
void bench_drain(const bench_config *cfg);
void bench_mpi(const bench_config *cfg);    /* only when configure found MPI */

/* Writes a chart when --svg was given, and says so on stderr when it fails. */
void chart_written(const bench_config *cfg, const char *file, int rc);

#endif /* CFBENCH_H */
