/* Percentiles for the benchmarks (see tools/stats.h). */
#include "tools/stats.h"

int64_t stats_pct(const int64_t *sorted, size_t n, double q)
{
    if (n == 0)
        return 0;
    size_t k = (size_t)(q * (double)n + 0.999999);
    if (k < 1)
        k = 1;
    if (k > n)
        k = n;
    return sorted[k - 1];
}
