/*
 * report.c — the figures, rendered as tables (default), CSV or JSON.
 *
 * A section fills tables (rows of one label and a value per column) and each
 * table is written as soon as it ends, so a long run shows its results as
 * they come. JSON is streamed as one object, {"cfbench": {...}, "sections":
 * {"<section>": {"<table>": {title, columns, rows, notes}}}}; a value that
 * was not measured is null. CSV is long format: one line per value.
 * All state is this file's: one report at a time, written by one thread.
 */
#include "bench.h"

#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/utsname.h>
#include <time.h>

#define MAX_COLS  8
#define MAX_ROWS  40
#define MAX_NOTES 8
#define TEXT_LEN  48
#define NOTE_LEN  240

typedef struct cell {
    bool   set, is_text;
    double num;
    char   text[TEXT_LEN];
} cell;

typedef struct row {
    char label[TEXT_LEN * 2];
    cell cells[MAX_COLS];
} row;

struct table {
    const char *key;
    char        title[NOTE_LEN];
    column      cols[MAX_COLS];
    size_t      ncols, nrows, nnotes;
    row         rows[MAX_ROWS];
    char        notes[MAX_NOTES][NOTE_LEN];
};

static struct {
    out_format  format;
    FILE       *out;
    const char *section;
    size_t      sections_written, tables_in_section;
} rep;

/* ---- JSON strings ---------------------------------------------------------- */

static void json_string(const char *s)
{
    fputc('"', rep.out);
    for (; *s != '\0'; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            fprintf(rep.out, "\\%c", c);
        else if (c < 0x20)
            fprintf(rep.out, "\\u%04x", c);
        else
            fputc(c, rep.out);
    }
    fputc('"', rep.out);
}

static void json_number(double v)
{
    if (isfinite(v))
        fprintf(rep.out, "%.9g", v);
    else
        fputs("null", rep.out);
}

static void csv_field(const char *s)
{
    if (strpbrk(s, ",\"\n") == NULL) {
        fputs(s, rep.out);
        return;
    }
    fputc('"', rep.out);
    for (; *s != '\0'; s++) {
        if (*s == '"')
            fputc('"', rep.out);
        fputc(*s, rep.out);
    }
    fputc('"', rep.out);
}

/* ---- the report ----------------------------------------------------------- */

/* "Linux 6.1.0 x86_64, 2024-05-01 12:00 UTC": where and when the figures were taken. */
static void host_line(char *buf, size_t len)
{
    struct utsname u;
    char when[32] = "?";
    time_t now = time(NULL);
    struct tm tm;
    if (gmtime_r(&now, &tm) != NULL)
        strftime(when, sizeof when, "%Y-%m-%d %H:%M UTC", &tm);
    if (uname(&u) == 0)
        snprintf(buf, len, "%.40s %.60s %.20s, %s", u.sysname, u.release, u.machine, when);
    else
        snprintf(buf, len, "%s", when);
}

static void json_begin(const bench_config *cfg, const char *host)
{
    fprintf(rep.out, "{\n  \"cfbench\": {\"version\": \"%d.%d.%d\", \"host\": ",
            CF_VERSION_MAJOR, CF_VERSION_MINOR, CF_VERSION_PATCH);
    json_string(host);
    fprintf(rep.out, ", \"cores\": %u, \"quick\": %s, \"scale\": %u, \"openmp\": %s, "
                     "\"tbb\": %s, \"python\": ", cfg->cores, cfg->quick ? "true" : "false",
            cfg->scale, omp_available() ? "true" : "false", tbb_available() ? "true" : "false");
    const char *py = py_text("python.version");
    if (py != NULL)
        json_string(py);
    else
        fputs("null", rep.out);
    fputs("},\n  \"sections\": {", rep.out);
}

static void text_begin(const bench_config *cfg, const char *host)
{
    fprintf(rep.out, "cfbench %d.%d.%d on %s\n", CF_VERSION_MAJOR, CF_VERSION_MINOR,
            CF_VERSION_PATCH, host);
    fprintf(rep.out, "%u online CPUs, pools of %u workers unless said otherwise\n", cfg->cores,
            cfg->cores);
    if (omp_available())
        fprintf(rep.out, "OpenMP: %u threads\n", omp_threads());
    else
        fputs("OpenMP: not built (configure found no -fopenmp)\n", rep.out);
    if (tbb_available())
        fprintf(rep.out, "oneTBB: %u threads\n", tbb_threads());
    else
        fputs("oneTBB: not built (configure found no oneTBB, or --without-tbb, or a sanitizer "
              "build; Debian: libtbb-dev)\n", rep.out);
    if (py_ran())
        fprintf(rep.out, "Python: %s, measured by py_bench.py before the sections\n",
                py_text("python.version") ? py_text("python.version") : "?");
    else
        fprintf(rep.out, "Python: %s\n", py_missing());
}

void report_begin(const bench_config *cfg, FILE *out)
{
    char host[256];
    host_line(host, sizeof host);
    rep.format = cfg->format;
    rep.out = out;
    rep.sections_written = 0;
    if (rep.format == OUT_CSV)
        fputs("section,table,row,column,value\n", out);
    else if (rep.format == OUT_JSON)
        json_begin(cfg, host);
    else
        text_begin(cfg, host);
}

void report_section_begin(const char *name)
{
    rep.section = name;
    rep.tables_in_section = 0;
    if (rep.format == OUT_JSON) {
        fputs(rep.sections_written++ ? ",\n    " : "\n    ", rep.out);
        json_string(name);
        fputs(": {", rep.out);
    }
    fflush(rep.out);
}

void report_section_end(void)
{
    if (rep.format == OUT_JSON)
        fputs(rep.tables_in_section ? "\n    }" : "}", rep.out);
    fflush(rep.out);
}

void report_end(void)
{
    if (rep.format == OUT_JSON)
        fputs(rep.sections_written ? "\n  }\n}\n" : "}\n}\n", rep.out);
    fflush(rep.out);
}

/* ---- building a table ------------------------------------------------------ */

table *table_begin(const char *key, const char *title, const column *cols, size_t ncols)
{
    if (ncols > MAX_COLS)
        die("table %s: too many columns", key);
    table *t = calloc(1, sizeof *t);
    if (t == NULL)
        die("out of memory");
    t->key = key;
    snprintf(t->title, sizeof t->title, "%s", title);
    memcpy(t->cols, cols, ncols * sizeof *cols);
    t->ncols = ncols;
    return t;
}

void table_row(table *t, const char *fmt, ...)
{
    if (t->nrows == MAX_ROWS)
        die("table %s: too many rows", t->key);
    row *r = &t->rows[t->nrows++];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->label, sizeof r->label, fmt, ap);
    va_end(ap);
}

static cell *cell_of(table *t, const char *key)
{
    if (t->nrows == 0)
        die("table %s: a value before any row", t->key);
    for (size_t c = 0; c < t->ncols; c++)
        if (strcmp(t->cols[c].key, key) == 0)
            return &t->rows[t->nrows - 1].cells[c];
    die("table %s: no column %s", t->key, key);
}

void table_set(table *t, const char *key, double v)
{
    cell *c = cell_of(t, key);
    c->set = isfinite(v);
    c->is_text = false;
    c->num = v;
}

void table_set_text(table *t, const char *key, const char *text)
{
    cell *c = cell_of(t, key);
    c->set = true;
    c->is_text = true;
    snprintf(c->text, sizeof c->text, "%s", text);
}

void table_note(table *t, const char *fmt, ...)
{
    if (t->nnotes == MAX_NOTES)
        die("table %s: too many notes", t->key);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(t->notes[t->nnotes++], NOTE_LEN, fmt, ap);
    va_end(ap);
}

/* ---- rendering -------------------------------------------------------------- */

static void cell_text(const table *t, size_t c, const cell *v, char *buf, size_t len)
{
    if (!v->set)
        snprintf(buf, len, "-");
    else if (v->is_text)
        snprintf(buf, len, "%s", v->text);
    else
        snprintf(buf, len, t->cols[c].fmt, v->num);
}

/* Display width of UTF-8 text: code points, not bytes. */
static size_t width(const char *s)
{
    size_t w = 0;
    for (; *s != '\0'; s++)
        w += ((unsigned char)*s & 0xc0) != 0x80;
    return w;
}

static void pad(size_t n)
{
    while (n-- > 0)
        fputc(' ', rep.out);
}

static void write_text(const table *t)
{
    size_t lw = 0, cw[MAX_COLS];
    char buf[TEXT_LEN * 2];
    for (size_t r = 0; r < t->nrows; r++)
        if (width(t->rows[r].label) > lw)
            lw = width(t->rows[r].label);
    for (size_t c = 0; c < t->ncols; c++) {
        cw[c] = width(t->cols[c].head);
        for (size_t r = 0; r < t->nrows; r++) {
            cell_text(t, c, &t->rows[r].cells[c], buf, sizeof buf);
            if (width(buf) > cw[c])
                cw[c] = width(buf);
        }
    }
    fprintf(rep.out, "\n== %s: %s\n", rep.section, t->title);
    pad(2 + lw);
    for (size_t c = 0; c < t->ncols; c++) {
        pad(2 + cw[c] - width(t->cols[c].head));
        fputs(t->cols[c].head, rep.out);
    }
    fputc('\n', rep.out);
    for (size_t r = 0; r < t->nrows; r++) {
        fprintf(rep.out, "  %s", t->rows[r].label);
        pad(lw - width(t->rows[r].label));
        for (size_t c = 0; c < t->ncols; c++) {
            cell_text(t, c, &t->rows[r].cells[c], buf, sizeof buf);
            pad(2 + cw[c] - width(buf));
            fputs(buf, rep.out);
        }
        fputc('\n', rep.out);
    }
    for (size_t n = 0; n < t->nnotes; n++)
        fprintf(rep.out, "  note: %s\n", t->notes[n]);
}

static void write_csv(const table *t)
{
    for (size_t r = 0; r < t->nrows; r++)
        for (size_t c = 0; c < t->ncols; c++) {
            const cell *v = &t->rows[r].cells[c];
            if (!v->set)
                continue;
            fprintf(rep.out, "%s,%s,", rep.section, t->key);
            csv_field(t->rows[r].label);
            fprintf(rep.out, ",%s,", t->cols[c].key);
            if (v->is_text)
                csv_field(v->text);
            else
                fprintf(rep.out, "%.9g", v->num);
            fputc('\n', rep.out);
        }
}

static void write_json(const table *t)
{
    fputs(rep.tables_in_section ? ",\n      " : "\n      ", rep.out);
    json_string(t->key);
    fputs(": {\n        \"title\": ", rep.out);
    json_string(t->title);
    fputs(",\n        \"columns\": {", rep.out);
    for (size_t c = 0; c < t->ncols; c++) {
        fputs(c ? ", " : "", rep.out);
        json_string(t->cols[c].key);
        fputs(": ", rep.out);
        json_string(t->cols[c].head);
    }
    fputs("},\n        \"rows\": [", rep.out);
    for (size_t r = 0; r < t->nrows; r++) {
        fputs(r ? ",\n          {\"label\": " : "\n          {\"label\": ", rep.out);
        json_string(t->rows[r].label);
        for (size_t c = 0; c < t->ncols; c++) {
            const cell *v = &t->rows[r].cells[c];
            fputs(", ", rep.out);
            json_string(t->cols[c].key);
            fputs(": ", rep.out);
            if (v->set && v->is_text)
                json_string(v->text);
            else
                json_number(v->set ? v->num : NAN);
        }
        fputc('}', rep.out);
    }
    fputs(t->nrows ? "\n        ],\n        \"notes\": [" : "],\n        \"notes\": [", rep.out);
    for (size_t n = 0; n < t->nnotes; n++) {
        fputs(n ? ", " : "", rep.out);
        json_string(t->notes[n]);
    }
    fputs("]\n      }", rep.out);
}

void table_end(table *t)
{
    progress(NULL);
    if (rep.format == OUT_TEXT)
        write_text(t);
    else if (rep.format == OUT_CSV)
        write_csv(t);
    else
        write_json(t);
    rep.tables_in_section++;
    fflush(rep.out);
    free(t);
}
