/* cfutures: future (in progress) */
