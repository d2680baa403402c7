/* cfutures: sync (in progress) */
