/*
 * Metric primitives (see metrics.h). Histogram buckets are stored
 * non-cumulative and summed at render time, so an observation is one
 * increment.
 */
#include "broker/metrics.h"

#include <event2/buffer.h>

const double met_lat_bounds[MET_LAT_BUCKETS] = {
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
    0.05,   0.1,     0.25,   0.5,   1.0,    2.5,   5.0,  10.0,
};

int met_req_slot(Verity__Envelope__BodyCase c)
{
    if (!codec_is_request(c))
        return MET_REQ_INVALID;
    int slot = (int)c - 100;
    return slot >= 0 && slot < MET_REQ_INVALID ? slot : MET_REQ_INVALID;
}

void met_hist_observe(struct met_hist *h, double seconds)
{
    unsigned i = 0;
    while (i < MET_LAT_BUCKETS && seconds > met_lat_bounds[i])
        i++;
    h->buckets[i]++;
    h->count++;
    h->sum += seconds;
}

void met_family(struct evbuffer *out, const char *name, const char *type, const char *help)
{
    evbuffer_add_printf(out, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

void met_hist_render(struct evbuffer *out, const char *name, const char *labels,
                     const double *bounds, const uint64_t *counts, unsigned n, uint64_t count,
                     double sum)
{
    uint64_t cum = 0;
    const char *sep = labels[0] ? "," : "";
    for (unsigned i = 0; i < n; i++) {
        cum += counts[i];
        evbuffer_add_printf(out, "%s_bucket{%s%sle=\"%g\"} %llu\n", name, labels, sep, bounds[i],
                            (unsigned long long)cum);
    }
    evbuffer_add_printf(out, "%s_bucket{%s%sle=\"+Inf\"} %llu\n", name, labels, sep,
                        (unsigned long long)count);
    if (labels[0]) {
        evbuffer_add_printf(out, "%s_sum{%s} %.9g\n%s_count{%s} %llu\n", name, labels, sum, name,
                            labels, (unsigned long long)count);
    } else {
        evbuffer_add_printf(out, "%s_sum %.9g\n%s_count %llu\n", name, sum, name,
                            (unsigned long long)count);
    }
}
