/*
 * latplot: an SVG plot of latency distributions (verity bench --plot).
 *
 * One panel per workload. The x axis is the percentile on a "nines" scale
 * (x = -log10(1 - q): 0 at the median's left edge, 1 = 90 %, 2 = 99 %,
 * 3 = 99.9 %, ...), the y axis the latency in microseconds on a log scale,
 * so the tail is as wide as the body. A series is either every sample of a
 * run (sorted, drawn as a curve) or a peer's published points (p50, p99,
 * p999, max: drawn as markers joined by a dashed line).
 */
#ifndef VERITY_TOOLS_LATPLOT_H
#define VERITY_TOOLS_LATPLOT_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

struct latplot_series {
    char name[64];
    const int64_t *sorted_ns; /* samples in ascending order, or NULL */
    size_t n;                 /* samples (also places a peer's max on the x axis) */
    double p50_us, p99_us, p999_us, max_us; /* used when sorted_ns is NULL */
};

struct latplot_panel {
    char title[96];
    struct latplot_series s[8];
    size_t ns;
};

/* Writes a standalone SVG document with the panels side by side. */
void latplot_svg(FILE *f, const char *title, const struct latplot_panel *p, size_t np);

/* Fills the quantile (0..1) of sorted samples, nearest rank, in us. */
double latplot_quantile_us(const int64_t *sorted_ns, size_t n, double q);

#endif
