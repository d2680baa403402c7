/*
 * The backend contract of src/internal.h, exported for backends built as a
 * library of their own (libcfutures-mpi): the core's hooks are hidden, so a
 * backend outside libcfutures reaches them through these thin entries. They
 * are not API: their names begin with cf__, no header installs them, and a
 * backend that uses them must come from the same build as libcfutures (the
 * layout of struct cf_executor and struct cf_future is the one of this
 * src/internal.h).
 */
#include "internal.h"

CF_EXPORT int cf__ext_executor_init(cf_executor *ex, const cf__ops *ops, const cf_options *opts)
{
    return cf__executor_init(ex, ops, opts);
}

CF_EXPORT void cf__ext_executor_release(cf_executor *ex)
{
    cf__executor_release(ex);
}

CF_EXPORT bool cf__ext_future_finish(cf_future *f, int state, int code, int sig, cf_future **fire)
{
    return cf__future_finish(f, state, code, sig, fire);
}

CF_EXPORT void cf__ext_future_fire(cf_future *list)
{
    cf__future_fire(list);
}

CF_EXPORT uint32_t cf__ext_future_state(const cf_future *f)
{
    return cf__future_state(f);
}

CF_EXPORT int cf__ext_future_wait_state(cf_executor *ex, cf_future *f, uint64_t deadline)
{
    return cf__future_wait_state(ex, f, deadline);
}

CF_EXPORT void cf__ext_future_watch_none(cf_executor *ex, cf_future *f)
{
    cf__future_watch_none(ex, f);
}

/* Finishes the futures of ex whose tasks have ended (cf__ops.collect),
 * where its backend can; nothing otherwise. */
CF_EXPORT void cf__ext_collect(cf_executor *ex)
{
    if (ex->ops->collect != NULL)
        ex->ops->collect(ex);
}

CF_EXPORT void cf__ext_map_admit(cf__map *m)
{
    cf__map_admit(m);
}

CF_EXPORT size_t cf__ext_auto_chunk(size_t n, unsigned workers)
{
    return cf__auto_chunk(n, workers);
}

CF_EXPORT uint64_t cf__ext_now_ns(void)
{
    return cf__now_ns();
}

/*
 * For a backend that runs map elements inside one task of a local pool (the
 * MPI ranks run a chunk so): cf__ext_element_enter makes the calling thread
 * a map element's, index `index` (cf_task_index answers it; cf_task_error
 * and cf_task_set_result_size answer CF_EINVAL, as in any map element) and
 * saves what it replaced in *saved; cf__ext_element_leave puts it back.
 */
CF_EXPORT void cf__ext_element_enter(long index, cf__element_scope *saved)
{
    *saved = (cf__element_scope){.index = cf__task_index, .text = cf__task_text,
                                 .out = cf__task_out};
    cf__task_index = index;
    cf__task_text = NULL;
    cf__task_out.len = NULL;
}

CF_EXPORT void cf__ext_element_leave(const cf__element_scope *saved)
{
    cf__task_index = saved->index;
    cf__task_text = saved->text;
    cf__task_out = saved->out;
}

/* Makes the calling thread work for map m (cf__map_here), so that a
 * cf_future_cancel of that map from an element callback run here does not
 * wait for itself; returns what it replaced, to be put back. */
CF_EXPORT const cf__map *cf__ext_map_here(const cf__map *m)
{
    const cf__map *was = cf__map_here;
    cf__map_here = m;
    return was;
}
