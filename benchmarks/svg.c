/*
 * svg.c — the charts of --svg DIR, drawn by hand: no library, plain SVG 1.1.
 *
 * Three kinds: bars (speedups of each way of running the primes), lines
 * (speedup against the number of workers) and timelines (one lane per
 * worker, one bar per task, from the start and end each task recorded, a
 * red cross on a task that failed). cfutures-trace draws its timelines with
 * svg_timeline too.
 * Every chart is a self-contained file with a white background and text in
 * the generic sans-serif font, readable in a browser or rsvg-convert.
 */
#include "bench.h"

#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#define FONT "font-family=\"DejaVu Sans, Helvetica, Arial, sans-serif\""

static const char *const group_fill[] = {"#3b6fb6", "#e08a2c", "#4a9a5b", "#8c8c8c"};
static const char *const task_fill[] = {"#4e79a7", "#f28e2b", "#59a14f", "#e15759",
                                        "#76b7b2", "#edc948", "#b07aa1", "#9c755f"};

typedef struct svg {
    FILE *f;
} svg;

/* ---- the file and its primitives --------------------------------------------- */

static bool svg_open(svg *s, const char *dir, const char *file, int w, int h)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, file);
    if ((s->f = fopen(path, "w")) == NULL)
        return false;
    fprintf(s->f,
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
            "<svg xmlns=\"http://www.w3.org/2000/svg\" version=\"1.1\" width=\"%d\" "
            "height=\"%d\" viewBox=\"0 0 %d %d\" " FONT " font-size=\"12\">\n"
            "<rect x=\"0\" y=\"0\" width=\"%d\" height=\"%d\" fill=\"#ffffff\"/>\n",
            w, h, w, h, w, h);
    return true;
}

static int svg_close(svg *s)
{
    fputs("</svg>\n", s->f);
    return fclose(s->f) == 0 ? 0 : -1;
}

static void put_escaped(FILE *f, const char *t)
{
    for (; *t != '\0'; t++) {
        if (*t == '&')
            fputs("&amp;", f);
        else if (*t == '<')
            fputs("&lt;", f);
        else if (*t == '>')
            fputs("&gt;", f);
        else
            fputc(*t, f);
    }
}

/* Text at (x, y); anchor is "start", "middle" or "end"; extra is more attributes. */
static void text(svg *s, double x, double y, const char *anchor, const char *extra,
                 const char *fmt, ...) __attribute__((format(printf, 6, 7)));
static void text(svg *s, double x, double y, const char *anchor, const char *extra,
                 const char *fmt, ...)
{
    char buf[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    fprintf(s->f, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"%s\" %s>", x, y, anchor, extra);
    put_escaped(s->f, buf);
    fputs("</text>\n", s->f);
}

static void rect(svg *s, double x, double y, double w, double h, const char *fill)
{
    fprintf(s->f, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"%s\" "
                  "stroke=\"#ffffff\" stroke-width=\"0.5\"/>\n", x, y, w, h, fill);
}

static void line(svg *s, double x1, double y1, double x2, double y2, const char *style)
{
    fprintf(s->f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" %s/>\n",
            x1, y1, x2, y2, style);
}

/* A step of 1, 2 or 5 times a power of ten giving about `ticks` ticks up to max. */
static double nice_step(double max, int ticks)
{
    double raw = max / ticks, p = pow(10, floor(log10(raw)));
    double m = raw / p;
    return (m <= 1 ? 1 : m <= 2 ? 2 : m <= 5 ? 5 : 10) * p;
}

/* A y axis from 0 to top at the left of the plot area, with grid lines. */
static void y_axis(svg *s, double x0, double y0, double w, double h, double top,
                   const char *label)
{
    double step = nice_step(top, 5);
    for (double v = 0; v <= top + step * 1e-9; v += step) {
        double y = y0 + h - v / top * h;
        line(s, x0, y, x0 + w, y, "stroke=\"#e4e4e4\"");
        text(s, x0 - 6, y + 4, "end", "fill=\"#333\"", "%g", v);
    }
    line(s, x0, y0, x0, y0 + h, "stroke=\"#333\"");
    line(s, x0, y0 + h, x0 + w, y0 + h, "stroke=\"#333\"");
    fprintf(s->f, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\" fill=\"#333\" "
                  "transform=\"rotate(-90 %.1f %.1f)\">", x0 - 38, y0 + h / 2, x0 - 38, y0 + h / 2);
    put_escaped(s->f, label);
    fputs("</text>\n", s->f);
}

static void title(svg *s, int w, const char *t)
{
    text(s, w / 2.0, 24, "middle", "font-size=\"15\" font-weight=\"bold\" fill=\"#222\"", "%s", t);
}

/* ---- bars ---------------------------------------------------------------------- */

/* A label under a bar, on two lines when it has a space and is long. */
static void bar_label(svg *s, double x, double y, const char *label)
{
    const char *space = strchr(label, ' ');
    if (space == NULL || strlen(label) <= 12) {
        text(s, x, y, "middle", "fill=\"#222\"", "%s", label);
        return;
    }
    text(s, x, y, "middle", "fill=\"#222\"", "%.*s", (int)(space - label), label);
    text(s, x, y + 14, "middle", "fill=\"#222\"", "%s", space + 1);
}

int svg_bars(const char *dir, const char *file, const char *t, const char *note,
             const bar *bars, size_t n, double ideal)
{
    const int w = 720, h = 420;
    const double x0 = 70, y0 = 44, pw = w - x0 - 20, ph = h - y0 - 70;
    svg s;
    if (!svg_open(&s, dir, file, w, h))
        return -1;
    double top = ideal;
    for (size_t i = 0; i < n; i++)
        if (isfinite(bars[i].value) && bars[i].value > top)
            top = bars[i].value;
    top *= 1.15;
    title(&s, w, t);
    y_axis(&s, x0, y0, pw, ph, top, "speedup over straight (x)");
    double slot = pw / (double)n, bw = slot * 0.62;
    for (size_t i = 0; i < n; i++) {
        double cx = x0 + slot * ((double)i + 0.5);
        bar_label(&s, cx, y0 + ph + 18, bars[i].label);
        if (!isfinite(bars[i].value))
            continue;
        double bh = bars[i].value / top * ph;
        rect(&s, cx - bw / 2, y0 + ph - bh, bw, bh, group_fill[bars[i].group & 3]);
        /* Inside the bar's top when it is tall enough: clear of the ideal line. */
        if (bh > 24)
            text(&s, cx, y0 + ph - bh + 16, "middle", "fill=\"#ffffff\" font-weight=\"bold\"",
                 "%.2fx", bars[i].value);
        else
            text(&s, cx, y0 + ph - bh - 5, "middle", "fill=\"#222\"", "%.2fx", bars[i].value);
    }
    if (note != NULL)
        text(&s, 12, h - 10, "start", "fill=\"#666\" font-size=\"11\"", "%s", note);
    double yi = y0 + ph - ideal / top * ph;
    line(&s, x0, yi, x0 + pw, yi, "stroke=\"#c0392b\" stroke-dasharray=\"6 4\"");
    /* At the left, above the first bar (straight, 1x): clear of every taller bar. */
    text(&s, x0 + 6, yi - 5, "start", "fill=\"#c0392b\"", "ideal: %g cores", ideal);
    return svg_close(&s);
}

/* ---- lines ------------------------------------------------------------------------ */

int svg_lines(const char *dir, const char *file, const char *t, const char *ylabel,
              const series *ser, size_t ns, size_t nx, double cap)
{
    const int w = 720, h = 420;
    const double x0 = 70, y0 = 44, pw = w - x0 - 170, ph = h - y0 - 60;
    svg s;
    if (!svg_open(&s, dir, file, w, h))
        return -1;
    double top = cap;
    for (size_t k = 0; k < ns; k++)
        for (size_t i = 0; i < nx; i++)
            if (isfinite(ser[k].y[i]) && ser[k].y[i] > top)
                top = ser[k].y[i];
    top *= 1.15;
    title(&s, w, t);
    y_axis(&s, x0, y0, pw, ph, top, ylabel);
    double dx = nx > 1 ? pw / (double)(nx - 1) : pw;
    for (size_t i = 0; i < nx; i++)
        text(&s, x0 + dx * (double)i, y0 + ph + 18, "middle", "fill=\"#222\"", "%zu", i + 1);
    text(&s, x0 + pw / 2, y0 + ph + 40, "middle", "fill=\"#333\"", "workers");

    fputs("<polyline fill=\"none\" stroke=\"#c0392b\" stroke-dasharray=\"6 4\" points=\"", s.f);
    for (size_t i = 0; i < nx; i++) {
        double ideal = (double)(i + 1) < cap ? (double)(i + 1) : cap;
        fprintf(s.f, "%.1f,%.1f ", x0 + dx * (double)i, y0 + ph - ideal / top * ph);
    }
    fputs("\"/>\n", s.f);
    /* Lines that coincide stay apart to the eye: each series has its own dashes and size. */
    static const char *const dashes[] = {"none", "8 4", "2 3"};
    for (size_t k = 0; k < ns; k++) {
        const char *c = task_fill[k % 8];
        char style[96];
        snprintf(style, sizeof style, "stroke=\"%s\" stroke-width=\"2\" stroke-dasharray=\"%s\"",
                 c, dashes[k % 3]);
        fprintf(s.f, "<polyline fill=\"none\" %s points=\"", style);
        for (size_t i = 0; i < nx; i++)
            if (isfinite(ser[k].y[i]))
                fprintf(s.f, "%.1f,%.1f ", x0 + dx * (double)i, y0 + ph - ser[k].y[i] / top * ph);
        fputs("\"/>\n", s.f);
        for (size_t i = 0; i < nx; i++)
            if (isfinite(ser[k].y[i]))
                fprintf(s.f, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"%.1f\" fill=\"%s\"/>\n",
                        x0 + dx * (double)i, y0 + ph - ser[k].y[i] / top * ph,
                        5.0 - 1.2 * (double)(k % 3), c);
        double ly = y0 + 10 + 20.0 * (double)k;
        line(&s, x0 + pw + 20, ly, x0 + pw + 44, ly, style);
        text(&s, x0 + pw + 50, ly + 4, "start", "fill=\"#222\"", "%s", ser[k].label);
    }
    double ly = y0 + 10 + 20.0 * (double)ns;
    line(&s, x0 + pw + 20, ly, x0 + pw + 44, ly, "stroke=\"#c0392b\" stroke-dasharray=\"6 4\"");
    text(&s, x0 + pw + 50, ly + 4, "start", "fill=\"#222\"", "ideal (%g cores)", cap);
    return svg_close(&s);
}

/* ---- timelines ------------------------------------------------------------------------ */

enum { LANE_H = 24, PANEL_HEAD = 26, AXIS_H = 30, PANEL_GAP = 14 };

static double panel_height(const panel *p)
{
    return PANEL_HEAD + LANE_H * (double)p->lanes + AXIS_H;
}

/* A time axis under a panel: ticks in ms below 2 s, else in s. */
static void time_axis(svg *s, double x0, double y, double pw, double tmax)
{
    bool ms = tmax < 2;
    double unit = ms ? 1e3 : 1, step = nice_step(tmax * unit, 8);
    line(s, x0, y, x0 + pw, y, "stroke=\"#333\"");
    for (double v = 0; v <= tmax * unit + step * 1e-9; v += step) {
        double x = x0 + v / (tmax * unit) * pw;
        line(s, x, y, x, y + 4, "stroke=\"#333\"");
        text(s, x, y + 16, "middle", "fill=\"#333\" font-size=\"11\"", "%g %s", v, ms ? "ms" : "s");
    }
}

static void draw_panel(svg *s, const panel *p, double x0, double y, double pw, double tmax)
{
    text(s, x0, y + 17, "start", "font-size=\"13\" font-weight=\"bold\" fill=\"#222\"", "%s",
         p->title);
    y += PANEL_HEAD;
    for (unsigned l = 0; l < p->lanes; l++) {
        double ly = y + LANE_H * (double)l;
        rect(s, x0, ly, pw, LANE_H, l % 2 ? "#f4f4f4" : "#fafafa");
        text(s, x0 - 8, ly + LANE_H / 2.0 + 4, "end", "fill=\"#333\"", "worker %u", l);
    }
    for (size_t i = 0; i < p->ntasks; i++) {
        const lane_task *k = &p->tasks[i];
        if (k->worker < 0 || (unsigned)k->worker >= p->lanes)
            continue;
        double x = x0 + k->start / tmax * pw, bw = (k->end - k->start) / tmax * pw;
        double ly = y + LANE_H * (double)k->worker;
        rect(s, x, ly + 3, bw > 0.5 ? bw : 0.5, LANE_H - 6, task_fill[(unsigned)k->shade % 8]);
        if (k->failed) {
            /* A cross at the bar's end, where the task was ended: visible however thin. */
            double xe = x + (bw > 0.5 ? bw : 0.5);
            line(s, xe - 5, ly + 4, xe + 5, ly + LANE_H - 4, "stroke=\"#c0392b\" stroke-width=\"2.5\"");
            line(s, xe - 5, ly + LANE_H - 4, xe + 5, ly + 4, "stroke=\"#c0392b\" stroke-width=\"2.5\"");
        }
        if (bw > 8.0 * (k->id >= 10 ? 2 : 1) + 4)
            text(s, x + bw / 2, ly + LANE_H / 2.0 + 4, "middle",
                 "fill=\"#ffffff\" font-size=\"10\"", "%u", k->id);
    }
    time_axis(s, x0, y + LANE_H * (double)p->lanes, pw, tmax);
}

int svg_timeline(const char *dir, const char *file, const char *t, const panel *p, size_t np)
{
    const double x0 = 90, pw = 780;
    double h = 44, tmax = 0;
    for (size_t i = 0; i < np; i++) {
        h += panel_height(&p[i]) + PANEL_GAP;
        for (size_t k = 0; k < p[i].ntasks; k++)
            if (p[i].tasks[k].end > tmax)
                tmax = p[i].tasks[k].end;
    }
    if (tmax <= 0)
        tmax = 1e-3;
    const int w = (int)(x0 + pw + 30);
    svg s;
    if (!svg_open(&s, dir, file, w, (int)h))
        return -1;
    title(&s, w, t);
    double y = 40;
    for (size_t i = 0; i < np; i++) {
        draw_panel(&s, &p[i], x0, y, pw, tmax);
        y += panel_height(&p[i]) + PANEL_GAP;
    }
    return svg_close(&s);
}
