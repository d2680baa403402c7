/*
 * outcheck.c — checks cfbench's machine outputs, for the smoke test.
 *
 *   outcheck json FILE [SECTION...]  valid JSON whose "sections" object has each SECTION
 *   outcheck csv FILE                the header, then five fields on every line
 *   outcheck svg FILE...             well-formed XML whose root element is <svg>
 *
 * It needs nothing but libc, so `make check` can run it where python3 and
 * xmllint are missing. The JSON check is a full recursive-descent
 * validator (RFC 8259 grammar); the XML check covers what an SVG file
 * uses: a prolog, comments, elements, quoted attributes, text and the
 * predefined and numeric entities. Exit status 0 when every check passes.
 */
#include <ctype.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_DEPTH 64

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return NULL;
    size_t len = 0, cap = 1 << 16;
    char *buf = malloc(cap);
    size_t n;
    while (buf != NULL && (n = fread(buf + len, 1, cap - len - 1, f)) > 0) {
        len += n;
        if (len + 1 == cap) {
            char *bigger = realloc(buf, cap *= 2);
            if (bigger == NULL)
                free(buf);
            buf = bigger;
        }
    }
    fclose(f);
    if (buf != NULL)
        buf[len] = '\0';
    return buf;
}

static bool unreadable(const char *path)
{
    fprintf(stderr, "outcheck: cannot read %s\n", path);
    return false;
}

static bool fail(const char *path, const char *what, const char *at, const char *start)
{
    fprintf(stderr, "outcheck: %s: %s at byte %ld\n", path, what, (long)(at - start));
    return false;
}

/* ---- JSON -------------------------------------------------------------------------- */

typedef struct jparser {
    const char *p, *start;
    char        sections[32][64];    /* keys of the top-level "sections" object */
    int         nsections;
    const char *error;
} jparser;

static bool jvalue(jparser *j, int depth, const char *key);

static void jspace(jparser *j)
{
    while (*j->p == ' ' || *j->p == '\t' || *j->p == '\n' || *j->p == '\r')
        j->p++;
}

static bool jerr(jparser *j, const char *what)
{
    j->error = what;
    return false;
}

/* A string; its text (unescaped only as far as the checks need) goes to out. */
static bool jstring(jparser *j, char *out, size_t len)
{
    size_t n = 0;
    if (*j->p++ != '"')
        return jerr(j, "expected a string");
    for (;;) {
        unsigned char c = (unsigned char)*j->p++;
        if (c == '"')
            break;
        if (c < 0x20)
            return jerr(j, "control character or end of input in a string");
        if (c == '\\') {
            c = (unsigned char)*j->p++;
            if (c == 'u') {
                for (int i = 0; i < 4; i++)
                    if (!isxdigit((unsigned char)*j->p++))
                        return jerr(j, "bad \\u escape");
            } else if (c == '\0' || strchr("\"\\/bfnrt", c) == NULL) {
                return jerr(j, "bad escape");
            }
        }
        if (out != NULL && n + 1 < len)
            out[n++] = (char)c;
    }
    if (out != NULL)
        out[n] = '\0';
    return true;
}

static bool digits(jparser *j)
{
    if (*j->p < '0' || *j->p > '9')
        return jerr(j, "expected a digit");
    while (*j->p >= '0' && *j->p <= '9')
        j->p++;
    return true;
}

static bool jnumber(jparser *j)
{
    if (*j->p == '-')
        j->p++;
    if (*j->p == '0')
        j->p++;
    else if (!digits(j))
        return false;
    if (*j->p == '.') {
        j->p++;
        if (!digits(j))
            return false;
    }
    if (*j->p == 'e' || *j->p == 'E') {
        j->p++;
        if (*j->p == '+' || *j->p == '-')
            j->p++;
        if (!digits(j))
            return false;
    }
    return true;
}

static bool jobject(jparser *j, int depth, const char *key)
{
    bool record = depth == 1 && key != NULL && strcmp(key, "sections") == 0;
    j->p++;
    jspace(j);
    if (*j->p == '}') {
        j->p++;
        return true;
    }
    for (;;) {
        char name[64];
        jspace(j);
        if (!jstring(j, name, sizeof name))
            return false;
        if (record && j->nsections < 32)
            snprintf(j->sections[j->nsections++], sizeof j->sections[0], "%s", name);
        jspace(j);
        if (*j->p++ != ':')
            return jerr(j, "expected ':'");
        if (!jvalue(j, depth + 1, name))
            return false;
        jspace(j);
        if (*j->p == '}') {
            j->p++;
            return true;
        }
        if (*j->p++ != ',')
            return jerr(j, "expected ',' or '}'");
    }
}

static bool jarray(jparser *j, int depth)
{
    j->p++;
    jspace(j);
    if (*j->p == ']') {
        j->p++;
        return true;
    }
    for (;;) {
        if (!jvalue(j, depth + 1, NULL))
            return false;
        jspace(j);
        if (*j->p == ']') {
            j->p++;
            return true;
        }
        if (*j->p++ != ',')
            return jerr(j, "expected ',' or ']'");
    }
}

static bool jword(jparser *j, const char *w)
{
    size_t n = strlen(w);
    if (strncmp(j->p, w, n) != 0)
        return jerr(j, "unexpected character");
    j->p += n;
    return true;
}

static bool jvalue(jparser *j, int depth, const char *key)
{
    if (depth > MAX_DEPTH)
        return jerr(j, "nested too deep");
    jspace(j);
    switch (*j->p) {
    case '{': return jobject(j, depth, key);
    case '[': return jarray(j, depth);
    case '"': return jstring(j, NULL, 0);
    case 't': return jword(j, "true");
    case 'f': return jword(j, "false");
    case 'n': return jword(j, "null");
    default:  return jnumber(j);
    }
}

static bool check_json(const char *path, char **want, int nwant)
{
    char *text = slurp(path);
    if (text == NULL)
        return unreadable(path);
    jparser j = {.p = text, .start = text};
    bool ok = jvalue(&j, 0, NULL);
    if (ok) {
        jspace(&j);
        if (*j.p != '\0')
            ok = jerr(&j, "text after the JSON value");
    }
    if (!ok)
        fail(path, j.error, j.p, text);
    for (int i = 0; ok && i < nwant; i++) {
        bool found = false;
        for (int s = 0; s < j.nsections; s++)
            found |= strcmp(j.sections[s], want[i]) == 0;
        if (!found) {
            fprintf(stderr, "outcheck: %s: no section \"%s\"\n", path, want[i]);
            ok = false;
        }
    }
    free(text);
    return ok;
}

/* ---- CSV --------------------------------------------------------------------------- */

/* Fields of one line, with RFC 4180 quoting; -1 if a quote is malformed. */
static int csv_fields(const char **p)
{
    int n = 1;
    for (;;) {
        if (**p == '"') {
            for ((*p)++; !(**p == '"' && (*p)[1] != '"'); (*p)++) {
                if (**p == '\0')
                    return -1;
                if (**p == '"')
                    (*p)++;
            }
            (*p)++;
        } else {
            while (**p != ',' && **p != '\n' && **p != '\0' && **p != '"')
                (*p)++;
            if (**p == '"')
                return -1;
        }
        if (**p != ',')
            break;
        (*p)++;
        n++;
    }
    if (**p == '\n')
        (*p)++;
    else if (**p != '\0')
        return -1;
    return n;
}

static bool check_csv(const char *path)
{
    char *text = slurp(path);
    if (text == NULL)
        return unreadable(path);
    const char *head = "section,table,row,column,value\n", *p = text;
    bool ok = strncmp(text, head, strlen(head)) == 0;
    if (!ok)
        fail(path, "missing header line", text, text);
    int lines = 0;
    for (p += strlen(head); ok && *p != '\0'; lines++) {
        const char *line = p;
        if (csv_fields(&p) != 5)
            ok = fail(path, "a line without exactly five fields", line, text);
    }
    if (ok && lines == 0)
        ok = fail(path, "no figures", p, text);
    free(text);
    return ok;
}

/* ---- XML (what SVG uses) ------------------------------------------------------------- */

typedef struct xparser {
    const char *p, *start, *error;
    char        stack[MAX_DEPTH][32];
    int         depth;
} xparser;

static bool xerr(xparser *x, const char *what)
{
    x->error = what;
    return false;
}

static bool name_char(char c, bool first)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':' ||
           (!first && ((c >= '0' && c <= '9') || c == '-' || c == '.'));
}

static bool xname(xparser *x, char *out, size_t len)
{
    size_t n = 0;
    if (!name_char(*x->p, true))
        return xerr(x, "expected a name");
    while (name_char(*x->p, false)) {
        if (n + 1 < len)
            out[n++] = *x->p;
        x->p++;
    }
    out[n] = '\0';
    return true;
}

static void xspace(xparser *x)
{
    while (*x->p == ' ' || *x->p == '\t' || *x->p == '\n' || *x->p == '\r')
        x->p++;
}

static bool xentity(xparser *x)
{
    static const char *const known[] = {"&amp;", "&lt;", "&gt;", "&quot;", "&apos;"};
    for (size_t i = 0; i < sizeof known / sizeof *known; i++)
        if (strncmp(x->p, known[i], strlen(known[i])) == 0) {
            x->p += strlen(known[i]);
            return true;
        }
    if (x->p[1] != '#')
        return xerr(x, "unknown entity");
    for (x->p += 2; *x->p != ';'; x->p++)
        if (!isxdigit((unsigned char)*x->p) && *x->p != 'x')
            return xerr(x, "bad character reference");
    x->p++;
    return true;
}

static bool xattributes(xparser *x)
{
    char name[64];
    for (;;) {
        xspace(x);
        if (*x->p == '>' || *x->p == '/' || *x->p == '?')
            return true;
        if (!xname(x, name, sizeof name))
            return false;
        xspace(x);
        if (*x->p++ != '=')
            return xerr(x, "expected '=' after an attribute name");
        xspace(x);
        char q = *x->p++;
        if (q != '"' && q != '\'')
            return xerr(x, "unquoted attribute value");
        while (*x->p != q) {
            if (*x->p == '\0' || *x->p == '<')
                return xerr(x, "bad attribute value");
            if (*x->p != '&')
                x->p++;
            else if (!xentity(x))
                return false;
        }
        x->p++;
    }
}

static bool xtag(xparser *x)
{
    char name[32];
    x->p++;
    if (*x->p == '/') {
        x->p++;
        if (!xname(x, name, sizeof name))
            return false;
        xspace(x);
        if (*x->p++ != '>')
            return xerr(x, "expected '>'");
        if (x->depth == 0 || strcmp(x->stack[x->depth - 1], name) != 0)
            return xerr(x, "end tag does not match");
        x->depth--;
        return true;
    }
    if (!xname(x, name, sizeof name) || !xattributes(x))
        return false;
    if (x->depth == 0 && strcmp(name, "svg") != 0)
        return xerr(x, "the root element is not <svg>");
    if (*x->p == '/') {
        x->p++;
        if (*x->p++ != '>')
            return xerr(x, "expected '>'");
        return true;
    }
    if (*x->p++ != '>')
        return xerr(x, "expected '>'");
    if (x->depth == MAX_DEPTH)
        return xerr(x, "nested too deep");
    snprintf(x->stack[x->depth++], sizeof x->stack[0], "%s", name);
    return true;
}

static bool xskip(xparser *x, const char *open, const char *close)
{
    if (strncmp(x->p, open, strlen(open)) != 0)
        return false;
    const char *end = strstr(x->p, close);
    if (end == NULL) {
        xerr(x, "unterminated comment or declaration");
        x->p += strlen(x->p);
        return true;
    }
    x->p = end + strlen(close);
    return true;
}

static bool check_svg(const char *path)
{
    char *text = slurp(path);
    if (text == NULL)
        return unreadable(path);
    xparser x = {.p = text, .start = text};
    bool seen_root = false, ok = true;
    while (ok && *x.p != '\0' && x.error == NULL) {
        if (xskip(&x, "<?", "?>") || xskip(&x, "<!--", "-->"))
            continue;
        if (*x.p == '<') {
            if (x.depth == 0 && seen_root)
                ok = xerr(&x, "a second root element");
            seen_root = true;
            ok = ok && xtag(&x);
        } else if (x.depth == 0) {
            if (*x.p != ' ' && *x.p != '\n' && *x.p != '\r' && *x.p != '\t')
                ok = xerr(&x, "text outside the root element");
            x.p++;
        } else if (*x.p == '&') {
            ok = xentity(&x);
        } else {
            x.p++;
        }
    }
    ok = ok && x.error == NULL;
    if (ok && (!seen_root || x.depth != 0))
        ok = xerr(&x, seen_root ? "unclosed element" : "no root element");
    if (!ok)
        fail(path, x.error, x.p, text);
    free(text);
    return ok;
}

int main(int argc, char **argv)
{
    if (argc >= 3 && strcmp(argv[1], "json") == 0)
        return check_json(argv[2], argv + 3, argc - 3) ? 0 : 1;
    if (argc == 3 && strcmp(argv[1], "csv") == 0)
        return check_csv(argv[2]) ? 0 : 1;
    if (argc >= 3 && strcmp(argv[1], "svg") == 0) {
        bool ok = true;
        for (int i = 2; i < argc; i++)
            ok &= check_svg(argv[i]);
        return ok ? 0 : 1;
    }
    fputs("usage: outcheck json FILE [SECTION...] | csv FILE | svg FILE...\n", stderr);
    return 2;
}
