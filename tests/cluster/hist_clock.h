/*
 * Clocks of the cluster test clients (cluster_producer.c,
 * cluster_group_consumer.c): monotonic ms for their own deadlines, wall ms
 * for the "t" of each history line (the tests line those up with kills).
 */
#ifndef VERITY_TESTS_HIST_CLOCK_H
#define VERITY_TESTS_HIST_CLOCK_H

#include <stdint.h>
#include <time.h>

static inline int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static inline int64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

#endif
