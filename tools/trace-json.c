/*
 * trace-json.c — a strict reader of CFUTURES_TRACE files (see trace-json.h).
 *
 * A recursive-descent parser over the one shape the library writes:
 *
 *   file   = ws "{" ws "\"traceEvents\"" ws ":" ws "[" ws [event *(ws "," ws event)] ws "]" ws "}" ws
 *   event  = "{" member *("," member) "}"       keys: ph name cat s pid tid ts dur id args
 *   args   = "{" [key ":" (string | number) *("," ...)] "}"
 *   string = "\"" printable ASCII but \" and \\ "\""     (no escapes)
 *   number = ["-"] digits ["." digits]                  (no exponent)
 *
 * Each event's members are checked against its phase (an X needs ts and
 * dur, an M needs name and args, ...). Anything else is refused with its
 * line and column. No recursion deeper than the args object, so a hostile
 * file cannot exhaust the stack.
 */
#include "trace-json.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct reader {
    const char *p, *start, *end;
    char       *err;
    size_t      errlen;
    bool        failed;
} reader;

static bool fail(reader *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static bool fail(reader *r, const char *fmt, ...)
{
    if (r->failed)
        return false;
    r->failed = true;
    unsigned line = 1, col = 1;
    for (const char *q = r->start; q < r->p && q < r->end; q++) {
        if (*q == '\n') {
            line++;
            col = 1;
        } else {
            col++;
        }
    }
    int n = snprintf(r->err, r->errlen, "line %u, column %u: ", line, col);
    if (n >= 0 && (size_t)n < r->errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(r->err + n, r->errlen - (size_t)n, fmt, ap);
        va_end(ap);
    }
    return false;
}

static void ws(reader *r)
{
    while (r->p < r->end && (*r->p == ' ' || *r->p == '\n' || *r->p == '\t' || *r->p == '\r'))
        r->p++;
}

static bool expect(reader *r, char c)
{
    ws(r);
    if (r->p >= r->end)
        return fail(r, "expected '%c', found the end of the file", c);
    if (*r->p != c)
        return fail(r, "expected '%c', found '%c'", c, *r->p);
    r->p++;
    return true;
}

/* True and consumes c if it comes next (after blanks). */
static bool accept(reader *r, char c)
{
    ws(r);
    if (r->p < r->end && *r->p == c) {
        r->p++;
        return true;
    }
    return false;
}

static bool string(reader *r, char *out, size_t max)
{
    if (!expect(r, '"'))
        return false;
    size_t n = 0;
    for (;;) {
        if (r->p >= r->end)
            return fail(r, "unterminated string");
        char c = *r->p;
        if (c == '"')
            break;
        if (c == '\\')
            return fail(r, "escape sequences are not part of the cfutures trace format");
        if ((unsigned char)c < 0x20 || (unsigned char)c > 0x7e)
            return fail(r, "byte 0x%02x in a string", (unsigned char)c);
        if (n + 1 >= max)
            return fail(r, "string longer than %zu bytes", max - 1);
        out[n++] = c;
        r->p++;
    }
    r->p++;
    out[n] = '\0';
    return true;
}

static bool number(reader *r, double *out, bool integer, bool negative_ok)
{
    ws(r);
    const char *s = r->p;
    if (r->p < r->end && *r->p == '-') {
        if (!negative_ok)
            return fail(r, "a negative number where none belongs");
        r->p++;
    }
    const char *digits = r->p;
    while (r->p < r->end && *r->p >= '0' && *r->p <= '9')
        r->p++;
    if (r->p == digits)
        return fail(r, "expected a number");
    if (r->p - digits > 1 && *digits == '0')
        return fail(r, "a number with a leading zero");
    if (r->p < r->end && *r->p == '.') {
        if (integer)
            return fail(r, "expected an integer");
        const char *frac = ++r->p;
        while (r->p < r->end && *r->p >= '0' && *r->p <= '9')
            r->p++;
        if (r->p == frac)
            return fail(r, "expected digits after '.'");
    }
    if (r->p < r->end && (*r->p == 'e' || *r->p == 'E'))
        return fail(r, "exponents are not part of the cfutures trace format");
    if (r->p - s > 40)
        return fail(r, "a number of more than 40 characters");
    char buf[48];
    memcpy(buf, s, (size_t)(r->p - s));
    buf[r->p - s] = '\0';
    *out = strtod(buf, NULL);
    return true;
}

static bool args(reader *r, tj_event *e)
{
    if (!expect(r, '{'))
        return false;
    if (accept(r, '}'))
        return true;
    do {
        if (e->nargs == TJ_ARGS)
            return fail(r, "more than %d members in args", TJ_ARGS);
        tj_arg *a = &e->args[e->nargs];
        if (!string(r, a->key, sizeof a->key) || !expect(r, ':'))
            return false;
        for (unsigned i = 0; i < e->nargs; i++)
            if (strcmp(e->args[i].key, a->key) == 0)
                return fail(r, "args member \"%s\" given twice", a->key);
        ws(r);
        if (r->p < r->end && *r->p == '"') {
            a->is_str = true;
            if (!string(r, a->str, sizeof a->str))
                return false;
        } else if (!number(r, &a->num, false, true)) {
            return false;
        }
        e->nargs++;
    } while (accept(r, ','));
    return expect(r, '}');
}

enum { K_PH = 1, K_NAME = 2, K_CAT = 4, K_S = 8, K_PID = 16, K_TID = 32, K_TS = 64, K_DUR = 128,
       K_ID = 256, K_ARGS = 512 };

static const struct {
    const char *name;
    unsigned    bit;
} keys[] = {
    {"ph", K_PH}, {"name", K_NAME}, {"cat", K_CAT}, {"s", K_S}, {"pid", K_PID},
    {"tid", K_TID}, {"ts", K_TS}, {"dur", K_DUR}, {"id", K_ID}, {"args", K_ARGS},
};

/* What each phase must have, and may have. */
static bool phase_ok(reader *r, const tj_event *e, unsigned seen)
{
    unsigned need = K_PH | K_PID | K_TID | K_NAME, may = need;
    switch (e->ph) {
    case 'M': need |= K_ARGS; may = need; break;
    case 'X': need |= K_TS | K_DUR; may = need | K_ARGS; break;
    case 'i': need |= K_TS | K_S; may = need | K_ARGS; break;
    case 'C': need |= K_TS | K_ARGS; may = need; break;
    case 'b':
    case 'e': need |= K_TS | K_CAT | K_ID; may = need | K_ARGS; break;
    default:
        return fail(r, "event phase \"%c\" is not one cfutures writes", e->ph);
    }
    if ((seen & need) != need) {
        for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++)
            if ((need & keys[i].bit) && !(seen & keys[i].bit))
                return fail(r, "a \"%c\" event without \"%s\"", e->ph, keys[i].name);
    }
    if ((seen & ~may) != 0) {
        for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++)
            if ((seen & ~may & keys[i].bit))
                return fail(r, "a \"%c\" event with \"%s\"", e->ph, keys[i].name);
    }
    return true;
}

static bool event(reader *r, tj_event *e)
{
    memset(e, 0, sizeof *e);
    unsigned seen = 0;
    if (!expect(r, '{'))
        return false;
    do {
        char key[16];
        if (!string(r, key, sizeof key) || !expect(r, ':'))
            return false;
        unsigned bit = 0;
        for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++)
            if (strcmp(key, keys[i].name) == 0)
                bit = keys[i].bit;
        if (bit == 0)
            return fail(r, "unknown member \"%s\"", key);
        if (seen & bit)
            return fail(r, "member \"%s\" given twice", key);
        seen |= bit;
        double v = 0;
        char ph[4];
        bool ok;
        switch (bit) {
        case K_PH:
            if ((ok = string(r, ph, sizeof ph)) && strlen(ph) != 1)
                return fail(r, "\"ph\" must be one letter");
            e->ph = ph[0];
            break;
        case K_NAME: ok = string(r, e->name, sizeof e->name); break;
        case K_CAT:  ok = string(r, e->cat, sizeof e->cat); break;
        case K_S:    ok = string(r, e->scope, sizeof e->scope); break;
        case K_PID:  ok = number(r, &v, true, false); e->pid = (long)v; break;
        case K_TID:  ok = number(r, &v, true, false); e->tid = (long)v; break;
        case K_TS:   ok = number(r, &e->ts, false, false); break;
        case K_DUR:  ok = number(r, &e->dur, false, false); break;
        case K_ID:
            ok = number(r, &v, true, false);
            e->has_id = true;
            e->id = (uint64_t)v;
            break;
        default:     ok = args(r, e); break;
        }
        if (!ok)
            return false;
    } while (accept(r, ','));
    if (!expect(r, '}'))
        return false;
    return phase_ok(r, e, seen);
}

int tj_parse(const char *text, size_t len, tj_trace *out, char *err, size_t errlen)
{
    reader r = {.p = text, .start = text, .end = text + len, .err = err, .errlen = errlen};
    tj_trace t = {0};
    size_t cap = 0;
    char key[16];
    if (errlen > 0)
        err[0] = '\0';
    if (!expect(&r, '{') || !string(&r, key, sizeof key))
        goto fail;
    if (strcmp(key, "traceEvents") != 0) {
        fail(&r, "expected \"traceEvents\", found \"%s\"", key);
        goto fail;
    }
    if (!expect(&r, ':') || !expect(&r, '['))
        goto fail;
    if (!accept(&r, ']')) {
        do {
            if (t.n == cap) {
                cap = cap ? cap * 2 : 256;
                tj_event *ev = realloc(t.ev, cap * sizeof *ev);
                if (ev == NULL) {
                    fail(&r, "out of memory");
                    goto fail;
                }
                t.ev = ev;
            }
            if (!event(&r, &t.ev[t.n]))
                goto fail;
            t.n++;
        } while (accept(&r, ','));
        if (!expect(&r, ']'))
            goto fail;
    }
    if (!expect(&r, '}'))
        goto fail;
    ws(&r);
    if (r.p != r.end) {
        fail(&r, "trailing bytes after the trace");
        goto fail;
    }
    *out = t;
    return 0;
fail:
    free(t.ev);
    return -1;
}

int tj_load(const char *path, tj_trace *out, char *err, size_t errlen)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        snprintf(err, errlen, "cannot open: %s", strerror(errno));
        return -1;
    }
    char *text = NULL;
    size_t len = 0, cap = 0;
    for (;;) {
        if (cap - len < 65536) {
            cap = cap ? cap * 2 : 65536;
            char *t = realloc(text, cap);
            if (t == NULL) {
                free(text);
                fclose(f);
                snprintf(err, errlen, "out of memory");
                return -1;
            }
            text = t;
        }
        size_t got = fread(text + len, 1, cap - len, f);
        len += got;
        if (got == 0)
            break;
    }
    bool bad = ferror(f) != 0;
    fclose(f);
    int rc = -1;
    if (bad)
        snprintf(err, errlen, "cannot read: %s", strerror(errno));
    else
        rc = tj_parse(text, len, out, err, errlen);
    free(text);
    return rc;
}

void tj_free(tj_trace *t)
{
    free(t->ev);
    t->ev = NULL;
    t->n = 0;
}

const tj_arg *tj_arg_get(const tj_event *e, const char *key)
{
    for (unsigned i = 0; i < e->nargs; i++)
        if (strcmp(e->args[i].key, key) == 0)
            return &e->args[i];
    return NULL;
}
