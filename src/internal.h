/* cfutures private declarations (in progress) */
