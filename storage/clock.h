/*
 * The clocks, in one place: wall time in milliseconds (timestamps that are
 * stored or sent: record times, lease deadlines, checkpoints) and monotonic
 * time in milliseconds and nanoseconds (timeouts, durations, benchmarks).
 * Every layer (storage, broker, client, tools, tests) uses these; none keeps
 * its own copy. Thread-safe.
 */
#ifndef VERITY_STORAGE_CLOCK_H
#define VERITY_STORAGE_CLOCK_H

#include <stdint.h>
#include <time.h>

static inline int64_t clock_wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static inline int64_t clock_mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static inline int64_t clock_mono_ms(void)
{
    return clock_mono_ns() / 1000000;
}

#endif
