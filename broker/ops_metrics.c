/*
 * Operator metrics: the process (resident memory, descriptors, start time,
 * CPU), the build, the resource guards of conn.c (buffered-bytes budget,
 * refused connections, timed-out frames, accept failures, admin HTTP cap)
 * and partitions that cannot serve (in error, read-only). Rendered into
 * /metrics by broker/http.c; read from /proc/self at render time.
 */
#include <dirent.h>
#include <inttypes.h>
#include <stdio.h>
#include <sys/resource.h>
#include <unistd.h>

#include <event2/buffer.h>

#include "broker/broker_int.h"
#include "verity/errors.h"
#include "verity/version.h"

static uint64_t rss_bytes(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    unsigned long size = 0, res = 0;
    if (f) {
        if (fscanf(f, "%lu %lu", &size, &res) != 2)
            res = 0;
        fclose(f);
    }
    return (uint64_t)res * (uint64_t)sysconf(_SC_PAGESIZE);
}

uint64_t ops_open_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    uint64_t n = 0;
    if (!d)
        return 0;
    while (readdir(d))
        n++;
    closedir(d);
    return n > 3 ? n - 3 : 0; /* ".", "..", and the directory's own descriptor */
}

/* Partitions that answer with an error: failed to open, or a sticky log
 * error; read_only counts those whose log turned read-only. */
void ops_partition_errors(struct broker *b, uint64_t *in_error, uint64_t *read_only)
{
    *in_error = *read_only = 0;
    struct topic *t;
    TAILQ_FOREACH(t, &b->topics, link)
    {
        if (!t->ready || t->deleting)
            continue;
        for (uint32_t i = 0; i < t->cfg.partitions; i++) {
            const struct partition *p = t->parts[i];
            if (p && p->error == VERITY_ENOTLEADER && !p->log)
                continue; /* cluster: placed on other brokers, not an error */
            if (!p || !p->log || p->error)
                (*in_error)++;
            if (p && p->error == VERITY_EREADONLY)
                (*read_only)++;
        }
    }
}

static void gauge(struct evbuffer *o, const char *name, const char *type, const char *help,
                  double v)
{
    met_family(o, name, type, help);
    evbuffer_add_printf(o, "%s %.17g\n", name, v);
}

void ops_metrics_render(struct broker *b, struct evbuffer *o)
{
    struct rusage ru;
    double cpu = 0;
    if (getrusage(RUSAGE_SELF, &ru) == 0)
        cpu = (double)ru.ru_utime.tv_sec + (double)ru.ru_stime.tv_sec +
              ((double)ru.ru_utime.tv_usec + (double)ru.ru_stime.tv_usec) / 1e6;
    gauge(o, "process_resident_memory_bytes", "gauge", "Resident memory size in bytes.",
          (double)rss_bytes());
    gauge(o, "process_open_fds", "gauge", "Open file descriptors.", (double)ops_open_fds());
    gauge(o, "process_max_fds", "gauge", "File descriptor limit (soft, after raising it to the hard limit at start).",
          (double)b->fd_limit);
    gauge(o, "process_start_time_seconds", "gauge",
          "Start time of the process since the epoch in seconds.", (double)b->started_ms / 1000.0);
    gauge(o, "process_cpu_seconds_total", "counter", "User and system CPU time in seconds.", cpu);
    met_family(o, "verity_build_info", "gauge", "The build: version label, value 1.");
    evbuffer_add_printf(o, "verity_build_info{version=\"%s\"} 1\n", VERITY_VERSION_STRING);

    const struct metrics *m = &b->met;
    size_t waiting = 0;
    const struct conn *c;
    TAILQ_FOREACH(c, &b->starved, starve_link)
    waiting++;
    gauge(o, "verity_buffered_bytes", "gauge",
          "Bytes held by frames being received and requests not yet answered (buffer_bytes_max).",
          (double)b->buf_used);
    gauge(o, "verity_buffer_bytes_max", "gauge", "The broker-wide budget for buffered bytes.",
          (double)b->cfg.buffer_bytes_max);
    gauge(o, "verity_connections_waiting", "gauge",
          "Connections whose reading is paused until the budget has room.", (double)waiting);
    gauge(o, "verity_budget_waits_total", "counter",
          "Times a connection waited for the buffered-bytes budget.", (double)m->budget_waits);
    gauge(o, "verity_connections_rejected_addr_total", "counter",
          "Connections refused by max_connections_per_addr or reserved_connections.",
          (double)m->conn_rejected_addr);
    gauge(o, "verity_frames_timed_out_total", "counter",
          "Connections closed because a frame was not complete within frame_timeout_ms.",
          (double)m->frames_timed_out);
    gauge(o, "verity_accept_errors_total", "counter",
          "accept() failures (EMFILE and others); accepting backs off on a shortage.",
          (double)m->accept_errors);
    gauge(o, "verity_http_paused_total", "counter",
          "Times the admin HTTP listener paused at max_http_connections.", (double)m->http_paused);
    gauge(o, "verity_tls_enabled", "gauge", "1 when the client and admin ports speak TLS.",
          b->tls_ctx ? 1.0 : 0.0);
    gauge(o, "verity_tls_handshakes_total", "counter", "TLS handshakes completed.",
          (double)m->tls_handshakes);
    gauge(o, "verity_tls_handshake_failures_total", "counter",
          "TLS handshakes refused (plaintext, wrong CA, old protocol version, missing client "
          "certificate, timeout).",
          (double)m->tls_handshake_failures);
    gauge(o, "verity_tls_reloads_total", "counter", "Certificate reloads on SIGHUP that took effect.",
          (double)m->tls_reloads);
    gauge(o, "verity_tls_reload_failures_total", "counter",
          "Certificate reloads on SIGHUP refused (the previous certificates stay in use).",
          (double)m->tls_reload_failures);
    struct vlog_fd_cache_stats fdc;
    vlog_fd_cache_get_stats(&fdc);
    gauge(o, "verity_segment_fds_open", "gauge",
          "Descriptors of closed segments held in the cache now.", (double)fdc.open);
    gauge(o, "verity_segment_fds_max", "gauge",
          "The cache's bound (segment_fds_max, or a quarter of the descriptor limit).",
          (double)fdc.max);
    gauge(o, "verity_segment_fd_opens_total", "counter",
          "Closed segment files opened on demand (a read that missed the cache).",
          (double)fdc.opens);
    gauge(o, "verity_segment_fd_hits_total", "counter",
          "Reads of a closed segment whose descriptor was cached.", (double)fdc.hits);
    gauge(o, "verity_segment_fd_evictions_total", "counter",
          "Cached descriptors closed to stay within the bound.", (double)fdc.evictions);
    uint64_t in_error, read_only;
    ops_partition_errors(b, &in_error, &read_only);
    gauge(o, "verity_partitions_in_error", "gauge",
          "Partitions that answer with an error (failed to open, or a sticky log error).",
          (double)in_error);
    gauge(o, "verity_partitions_read_only", "gauge",
          "Partitions whose log turned read-only after a failed fsync.", (double)read_only);
}

/* Descriptors a partition holds open: its segment's .log, .index and
 * .timeindex (the directory is opened and closed again). */
#define FDS_PER_PARTITION 3
/* Kept free for connections, the admin port and the logs' own needs. */
#define FDS_HEADROOM 256

int ops_fds_check(struct broker *b, uint32_t partitions, char *msg, size_t cap)
{
    if (b->fd_limit == 0 || b->fd_limit == UINT64_MAX)
        return 0;
    uint64_t in_use = ops_open_fds();
    uint64_t need = (uint64_t)partitions * FDS_PER_PARTITION;
    if (in_use + need + FDS_HEADROOM <= b->fd_limit)
        return 0;
    uint64_t free_fds = b->fd_limit > in_use + FDS_HEADROOM ? b->fd_limit - in_use - FDS_HEADROOM : 0;
    snprintf(msg, cap,
             "%" PRIu32 " partitions need about %" PRIu64 " file descriptors (%d each) but %" PRIu64
             " of the limit %" PRIu64 " (RLIMIT_NOFILE, less %d kept for connections) are free: "
             "at most %" PRIu64 " partitions fit; raise LimitNOFILE / ulimit -n",
             partitions, need, FDS_PER_PARTITION, free_fds, b->fd_limit, FDS_HEADROOM,
             free_fds / FDS_PER_PARTITION);
    return VERITY_ELIMIT;
}
