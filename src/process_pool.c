/* cfutures: process_pool (in progress) */
