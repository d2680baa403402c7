/* cfutures: worker (in progress) */
