/* cfutures: error (in progress) */
