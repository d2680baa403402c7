/* cfutures: shm (in progress) */
