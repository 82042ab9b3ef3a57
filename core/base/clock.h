/*
 * clock.h - the two clocks counterd reads: monotonic for durations, wall for timestamps.
 */
#ifndef COUNTERD_BASE_CLOCK_H
#define COUNTERD_BASE_CLOCK_H

#include <stdint.h>
#include <time.h>

/* Monotonic milliseconds, for timeouts and latencies. */
static inline double clock_mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

/* Wall-clock seconds since the epoch, for the API's timestamps. */
static inline double clock_unix_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

#endif
