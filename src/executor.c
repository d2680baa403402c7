/* cfutures: executor (in progress) */
