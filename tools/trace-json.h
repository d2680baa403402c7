/*
 * trace-json.h — a strict reader of the trace files CFUTURES_TRACE writes.
 *
 * Shared by cfutures-trace (the SVG timeline) and tests/test-trace.c. It
 * reads exactly the subset of the Chrome Trace Event Format the library
 * writes (src/trace.c) and refuses anything else with a message that says
 * where and what: one object {"traceEvents":[...]}, each event a flat object
 * of known keys, strings without escapes, numbers without exponents.
 */
#ifndef CF_TRACE_JSON_H
#define CF_TRACE_JSON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define TJ_STR     128       /* longest string kept, terminator included */
#define TJ_ARGS    8         /* "args" members kept per event */

typedef struct tj_arg {
    char   key[32];
    bool   is_str;
    double num;
    char   str[TJ_STR];
} tj_arg;

typedef struct tj_event {
    char     ph;             /* 'X', 'i', 'C', 'M', 'b' or 'e' */
    char     name[TJ_STR];
    char     cat[32];
    char     scope[4];       /* "s" of an instant */
    long     pid, tid;
    double   ts, dur;        /* microseconds; 0 when absent (M has no ts) */
    bool     has_id;
    uint64_t id;
    unsigned nargs;
    tj_arg   args[TJ_ARGS];
} tj_event;

typedef struct tj_trace {
    tj_event *ev;
    size_t    n;
} tj_trace;

/*
 * Parses text (len bytes) into *out. 0, or -1 with a message in err
 * ("line L, column C: ..."); *out is written only on success. Free with
 * tj_free.
 */
int  tj_parse(const char *text, size_t len, tj_trace *out, char *err, size_t errlen);
/* tj_parse of a whole file; -1 also when it cannot be read (err says why). */
int  tj_load(const char *path, tj_trace *out, char *err, size_t errlen);
void tj_free(tj_trace *t);
/* The member of e's args called key, or NULL. */
const tj_arg *tj_arg_get(const tj_event *e, const char *key);

#endif /* CF_TRACE_JSON_H */
