/*
 * Small statistics for the benchmarks: one percentile rule for every
 * `verity ... bench` figure, so the same run reads the same everywhere.
 */
#ifndef VERITY_TOOLS_STATS_H
#define VERITY_TOOLS_STATS_H

#include <stddef.h>
#include <stdint.h>

/* Nearest-rank percentile of n ascending samples, q in (0, 1] (0.99 for
 * p99); 0 when n is 0. */
int64_t stats_pct(const int64_t *sorted, size_t n, double q);

#endif
