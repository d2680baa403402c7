/*
 * error.c — cf_strerror, generated from the one error table in cfutures.h;
 * and error texts: cf_task_error, which a running task calls, and
 * cf_future_error_text, which the caller reads.
 *
 * A text is formatted into at most CF_ERROR_TEXT_MAX bytes, NUL included;
 * a longer one is cut before a UTF-8 character that would not fit whole
 * and ends in "...". Where it goes while the task runs is the backend's
 * choice (cf__task_text): a thread pool gives its own buffer, a process
 * worker its slot's text in shared memory, which the caller copies out as
 * untrusted bytes (pp_ring.c).
 */
#include "internal.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

_Thread_local char *cf__task_text;

/* Formats into dst (CF_ERROR_TEXT_MAX bytes); false if the format failed. */
static bool format(char *dst, const char *fmt, va_list ap)
{
    int n = vsnprintf(dst, CF_ERROR_TEXT_MAX, fmt, ap);
    if (n < 0)
        return false;
    if (n >= CF_ERROR_TEXT_MAX) {
        static const char more[] = "...";
        size_t keep = CF_ERROR_TEXT_MAX - sizeof more;
        /* Never keep the first bytes of a character without its last. */
        while (keep > 0 && ((unsigned char)dst[keep] & 0xc0) == 0x80)
            keep--;
        memcpy(dst + keep, more, sizeof more);
    }
    return true;
}

char *cf__error_text_new(const char *fmt, ...)
{
    char buf[CF_ERROR_TEXT_MAX];
    va_list ap;
    va_start(ap, fmt);
    bool ok = format(buf, fmt, ap);
    va_end(ap);
    return ok ? strdup(buf) : NULL;
}

char *cf__error_text_copy(const volatile char *src)
{
    char buf[CF_ERROR_TEXT_MAX];
    for (size_t i = 0; i < sizeof buf; i++)
        buf[i] = src[i];    /* once each: the other side may be writing */
    buf[sizeof buf - 1] = '\0';
    return buf[0] != '\0' ? strdup(buf) : NULL;
}

const char *cf__signal_name(int sig)
{
    switch (sig) {
    case SIGSEGV: return "Segmentation fault";
    case SIGBUS:  return "Bus error";
    case SIGABRT: return "Aborted";
    case SIGFPE:  return "Floating point exception";
    case SIGILL:  return "Illegal instruction";
    case SIGKILL: return "Killed";
    case SIGTERM: return "Terminated";
    case SIGTRAP: return "Trace/breakpoint trap";
    case SIGSYS:  return "Bad system call";
    case SIGPIPE: return "Broken pipe";
    case SIGXCPU: return "CPU time limit exceeded";
    case SIGXFSZ: return "File size limit exceeded";
    case SIGALRM: return "Alarm clock";
    case SIGHUP:  return "Hangup";
    case SIGQUIT: return "Quit";
    case SIGUSR1: return "User defined signal 1";
    case SIGUSR2: return "User defined signal 2";
    default:      return "signal";
    }
}

CF_EXPORT int cf_task_error(const char *fmt, ...)
{
    CF__NOT_BEFORE_GUARD();
    char *dst = cf__task_text;
    if (dst == NULL || fmt == NULL)
        return CF_EINVAL;
    char buf[CF_ERROR_TEXT_MAX];
    va_list ap;
    va_start(ap, fmt);
    bool ok = format(buf, fmt, ap);
    va_end(ap);
    if (!ok)
        return CF_EINVAL;
    memcpy(dst, buf, strlen(buf) + 1);
    return 0;
}

CF_EXPORT const char *cf_future_error_text(const cf_future *f)
{
    CF__NOT_BEFORE_GUARD();
    if (f == NULL || !cf__state_done(cf__future_state(f)))
        return NULL;
    return f->error_text;
}

CF_EXPORT const char *cf_strerror(int err)
{
    CF__NOT_BEFORE_GUARD();
    switch (err) {
    case 0:
        return "success";
#define CF__ERR_TEXT(name, value, text) case CF_##name: return text;
    CF_ERRNO_MAP(CF__ERR_TEXT)
#undef CF__ERR_TEXT
    default:
        return err > 0 ? "task error" : "unknown error";
    }
}
