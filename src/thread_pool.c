/* cfutures: thread_pool (in progress) */
