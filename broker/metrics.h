/*
 * Broker metrics: counters and fixed-bucket histograms owned by the event
 * loop (no locking), rendered in the Prometheus text format by the admin
 * HTTP server. Per request type: count, errors and a latency histogram; plus
 * bytes in and out, connections and rejected frames. Storage metrics
 * (fsync latency, partition offsets and sizes) are read from the logs at
 * render time (broker/http.c).
 */
#ifndef VERITY_BROKER_METRICS_H
#define VERITY_BROKER_METRICS_H

#include <stdint.h>

#include "proto/codec.h"

struct evbuffer;

#define MET_LAT_BUCKETS 16
#define MET_REQ_TYPES   64 /* request cases 100..162; the last slot is "invalid" */
#define MET_REQ_INVALID (MET_REQ_TYPES - 1)

/* Upper bounds in seconds of the latency buckets (the +Inf bucket is implicit). */
extern const double met_lat_bounds[MET_LAT_BUCKETS];

struct met_hist {
    uint64_t buckets[MET_LAT_BUCKETS + 1]; /* last = +Inf only */
    uint64_t count;
    double sum; /* seconds */
};

struct metrics {
    struct met_hist req_latency[MET_REQ_TYPES];
    uint64_t req_total[MET_REQ_TYPES];
    uint64_t req_errors[MET_REQ_TYPES]; /* request-level or any per-entry error */
    uint64_t bytes_in;                  /* frame bytes read */
    uint64_t bytes_out;                 /* frame bytes queued for sending */
    uint64_t connections_total;         /* accepted */
    uint64_t connections_rejected;      /* over max_connections */
    uint64_t frames_rejected;           /* framing errors that closed a connection */
    uint64_t produce_batches;           /* appended */
    uint64_t produce_records;
    uint64_t produce_duplicates; /* answered from idempotence state */
    uint64_t idem_limit_refusals; /* produces refused: partition_producers_max / keys_max */
    uint64_t producers_expired;   /* forgotten after producer_retention_ms */
    uint64_t snapshots_written;   /* idempotence, metadata and group snapshots */
    uint64_t snapshot_failures;   /* writes that failed (the old snapshot stays) */
    uint64_t snapshots_ignored;   /* found at start but corrupt or not matching the log */
    uint64_t conn_rejected_addr;  /* over max_connections_per_addr or the reserved slots */
    uint64_t frames_timed_out;    /* frames not complete within frame_timeout_ms */
    uint64_t budget_waits;        /* times a connection waited for the buffered-bytes budget */
    uint64_t accept_errors;       /* accept() failures (EMFILE, ...) */
    uint64_t http_paused;         /* times the admin HTTP listener paused at its cap */
    uint64_t tls_handshakes;        /* TLS handshakes completed (client and admin ports) */
    uint64_t tls_handshake_failures; /* refused: wrong CA, old version, plaintext, no cert, ... */
    uint64_t tls_reloads;           /* certificate reloads on SIGHUP that took effect */
    uint64_t tls_reload_failures;   /* reloads refused (the old certificates stay) */
};

/* Slot for a request case (MET_REQ_INVALID when not a request). */
int met_req_slot(Verity__Envelope__BodyCase c);
void met_hist_observe(struct met_hist *h, double seconds);

/* Appends "# HELP", "# TYPE" lines for a metric family. */
void met_family(struct evbuffer *out, const char *name, const char *type, const char *help);
/* Appends one histogram series (name_bucket/_sum/_count) with the given
 * label text (e.g. "type=\"produce\"", or "" for none). bounds has n
 * entries, counts n + 1 (the last is +Inf only, not cumulative). */
void met_hist_render(struct evbuffer *out, const char *name, const char *labels,
                     const double *bounds, const uint64_t *counts, unsigned n, uint64_t count,
                     double sum);

#endif
