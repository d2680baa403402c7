/*
 * error.c — cf_strerror, generated from the one error table in cfutures.h.
 */
#include "internal.h"

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
