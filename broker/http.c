/*
 * Admin HTTP server (evhttp) on its own port:
 *   GET /health      200 "ok" while the process runs
 *   GET /ready       200 when serving, 503 while starting or shutting down
 *   GET /metrics     Prometheus text format
 *   GET /v1/topics   JSON: every topic with its config and partitions
 *   GET /v1/groups   JSON: every consumer group with members and per-partition lag
 * Limits set explicitly: body size (VERITY_HTTP_BODY_MAX), header size,
 * timeout, GET/HEAD only.
 */
#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <event2/buffer.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <jansson.h>

#include "broker/auth.h"
#include "broker/blog.h"
#include "broker/broker_int.h"
#include "verity/errors.h"

#define HTTP_HEADERS_MAX 8192

static void send_text(struct evhttp_request *req, int code, const char *reason, const char *type,
                      struct evbuffer *body)
{
    evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type", type);
    evhttp_send_reply(req, code, reason, body);
}

/* The admin port serves GET and HEAD; anything else is answered 405 with
 * an Allow header (libevent would say 501, which means "unknown method").
 * With auth_file, the caller must also pass auth_http_check (issue 14:
 * bearer keys, ACLs per route). Returns false when it answered. */
static bool get_only(struct evhttp_request *req, struct broker *b)
{
    enum evhttp_cmd_type m = evhttp_request_get_command(req);
    if (m == EVHTTP_REQ_GET || m == EVHTTP_REQ_HEAD)
        return auth_http_check(b, req);
    evhttp_add_header(evhttp_request_get_output_headers(req), "Allow", "GET, HEAD");
    evhttp_send_error(req, 405, "Method Not Allowed (the admin port serves GET and HEAD)");
    return false;
}

static void h_health(struct evhttp_request *req, void *arg)
{
    if (!get_only(req, arg))
        return;
    struct evbuffer *body = evbuffer_new();
    if (!body) {
        evhttp_send_error(req, 500, NULL);
        return;
    }
    evbuffer_add_printf(body, "ok\n");
    send_text(req, 200, "OK", "text/plain", body);
    evbuffer_free(body);
}

/* GET /debug/trace: the sampled path trace (broker/trace.h), one line per row. */
static void h_trace(struct evhttp_request *req, void *arg)
{
    if (!get_only(req, arg))
        return;
    struct broker *b = arg;
    struct evbuffer *body = evbuffer_new();
    if (!body) {
        evhttp_send_error(req, 500, NULL);
        return;
    }
    trace_render(b, body);
    send_text(req, 200, "OK", "text/plain", body);
    evbuffer_free(body);
}

static void h_ready(struct evhttp_request *req, void *arg)
{
    if (!get_only(req, arg))
        return;
    struct broker *b = arg;
    struct evbuffer *body = evbuffer_new();
    if (!body) {
        evhttp_send_error(req, 500, NULL);
        return;
    }
    uint64_t in_error = 0, read_only = 0;
    ops_partition_errors(b, &in_error, &read_only);
    bool ok = b->ready && !b->stopping && in_error == 0;
    if (in_error)
        evbuffer_add_printf(body, "not ready: %" PRIu64 " partition%s in error (%" PRIu64
                            " read-only); see verity broker status\n",
                            in_error, in_error == 1 ? "" : "s", read_only);
    else
        evbuffer_add_printf(body, ok ? "ready\n" : "not ready\n");
    send_text(req, ok ? 200 : 503, ok ? "OK" : "Service Unavailable", "text/plain", body);
    evbuffer_free(body);
}

static void render_requests(struct broker *b, struct evbuffer *o)
{
    const struct metrics *m = &b->met;
    met_family(o, "verity_requests_total", "counter", "Requests answered, by type.");
    for (int s = 0; s < MET_REQ_TYPES; s++) {
        if (m->req_total[s] == 0 && s != MET_REQ_INVALID &&
            !codec_is_request((Verity__Envelope__BodyCase)(s + 100)))
            continue;
        const char *name = s == MET_REQ_INVALID
                               ? "invalid"
                               : codec_body_name((Verity__Envelope__BodyCase)(s + 100));
        evbuffer_add_printf(o, "verity_requests_total{type=\"%s\"} %" PRIu64 "\n", name,
                            m->req_total[s]);
    }
    met_family(o, "verity_request_errors_total", "counter",
               "Requests answered with an error (request-level or on any entry), by type.");
    for (int s = 0; s < MET_REQ_TYPES; s++) {
        if (m->req_total[s] == 0 && s != MET_REQ_INVALID &&
            !codec_is_request((Verity__Envelope__BodyCase)(s + 100)))
            continue;
        const char *name = s == MET_REQ_INVALID
                               ? "invalid"
                               : codec_body_name((Verity__Envelope__BodyCase)(s + 100));
        evbuffer_add_printf(o, "verity_request_errors_total{type=\"%s\"} %" PRIu64 "\n", name,
                            m->req_errors[s]);
    }
    met_family(o, "verity_request_duration_seconds", "histogram",
               "Time from a decoded request to its answer, by type.");
    for (int s = 0; s < MET_REQ_INVALID; s++) {
        if (!codec_is_request((Verity__Envelope__BodyCase)(s + 100)))
            continue;
        char labels[64];
        snprintf(labels, sizeof labels, "type=\"%s\"",
                 codec_body_name((Verity__Envelope__BodyCase)(s + 100)));
        const struct met_hist *h = &m->req_latency[s];
        met_hist_render(o, "verity_request_duration_seconds", labels, met_lat_bounds, h->buckets,
                        MET_LAT_BUCKETS, h->count, h->sum);
    }
}

/* Idempotence state against its limits, snapshots, checkpoint failures
 * (docs/SNAPSHOTS.md). */
static void render_state(struct broker *b, struct evbuffer *o)
{
    const struct metrics *m = &b->met;
    size_t producers = 0, keys = 0, producers_top = 0, keys_top = 0;
    uint64_t ckpt_failures = 0;
    struct vlog_info info;
    struct topic *t;
    TAILQ_FOREACH(t, &b->topics, link)
    {
        for (uint32_t i = 0; i < t->cfg.partitions; i++) {
            struct partition *p = t->parts[i];
            if (!p)
                continue;
            producers += p->idem.pcount;
            keys += p->idem.kcount;
            if (p->idem.pcount > producers_top)
                producers_top = p->idem.pcount;
            if (p->idem.kcount > keys_top)
                keys_top = p->idem.kcount;
            if (p->log) {
                vlog_get_info(p->log, &info);
                ckpt_failures += info.checkpoint_failures;
            }
        }
    }
    if (b->meta.log) {
        vlog_get_info(b->meta.log, &info);
        ckpt_failures += info.checkpoint_failures;
    }
    if (b->groups.log) {
        vlog_get_info(b->groups.log, &info);
        ckpt_failures += info.checkpoint_failures;
    }
    met_family(o, "verity_producer_ids", "gauge", "Producer ids allocated (limit: max_producers).");
    evbuffer_add_printf(o, "verity_producer_ids %zu\n", b->meta.n_producers);
    met_family(o, "verity_producer_ids_max", "gauge", "The max_producers limit.");
    evbuffer_add_printf(o, "verity_producer_ids_max %" PRIu32 "\n", b->cfg.max_producers);
    met_family(o, "verity_idem_producers", "gauge",
               "Producers tracked by the partitions' idempotence state, all partitions.");
    evbuffer_add_printf(o, "verity_idem_producers %zu\n", producers);
    met_family(o, "verity_idem_producers_partition_top", "gauge",
               "Most producers tracked by one partition (limit: partition_producers_max).");
    evbuffer_add_printf(o, "verity_idem_producers_partition_top %zu\n", producers_top);
    met_family(o, "verity_idem_producers_partition_max", "gauge", "partition_producers_max.");
    evbuffer_add_printf(o, "verity_idem_producers_partition_max %" PRIu32 "\n",
                        b->cfg.partition_producers_max);
    met_family(o, "verity_idem_keys", "gauge", "Idempotency keys remembered, all partitions.");
    evbuffer_add_printf(o, "verity_idem_keys %zu\n", keys);
    met_family(o, "verity_idem_keys_partition_top", "gauge",
               "Most idempotency keys remembered by one partition (limit: idempotency_keys_max).");
    evbuffer_add_printf(o, "verity_idem_keys_partition_top %zu\n", keys_top);
    met_family(o, "verity_idem_keys_partition_max", "gauge", "idempotency_keys_max.");
    evbuffer_add_printf(o, "verity_idem_keys_partition_max %" PRIu32 "\n",
                        b->cfg.idempotency_keys_max);
    met_family(o, "verity_idem_limit_refusals_total", "counter",
               "Produces refused because a partition reached partition_producers_max or "
               "idempotency_keys_max.");
    evbuffer_add_printf(o, "verity_idem_limit_refusals_total %" PRIu64 "\n",
                        m->idem_limit_refusals);
    met_family(o, "verity_producers_expired_total", "counter",
               "Producers forgotten by a partition after producer_retention_ms.");
    evbuffer_add_printf(o, "verity_producers_expired_total %" PRIu64 "\n", m->producers_expired);
    met_family(o, "verity_snapshots_written_total", "counter", "State snapshots written.");
    evbuffer_add_printf(o, "verity_snapshots_written_total %" PRIu64 "\n", m->snapshots_written);
    met_family(o, "verity_snapshot_failures_total", "counter",
               "State snapshots that could not be written (the previous one stays).");
    evbuffer_add_printf(o, "verity_snapshot_failures_total %" PRIu64 "\n", m->snapshot_failures);
    met_family(o, "verity_snapshots_ignored_total", "counter",
               "Snapshots found at start that failed a check; the whole log was replayed.");
    evbuffer_add_printf(o, "verity_snapshots_ignored_total %" PRIu64 "\n", m->snapshots_ignored);
    met_family(o, "verity_checkpoint_failures_total", "counter",
               "Automatic log checkpoints that failed after an append (the append stood).");
    evbuffer_add_printf(o, "verity_checkpoint_failures_total %" PRIu64 "\n", ckpt_failures);
}

static void render_fsync(struct broker *b, struct evbuffer *o)
{
    struct vlog_sync_stats st;
    meta_sync_stats(b, &st);
    double bounds[VLOG_SYNC_BUCKETS - 1];
    for (int i = 0; i < VLOG_SYNC_BUCKETS - 1; i++)
        bounds[i] = (double)(1ull << i) / 1e6;
    met_family(o, "verity_fsync_duration_seconds", "histogram",
               "fdatasync latency over every log (partitions, metadata, group log).");
    met_hist_render(o, "verity_fsync_duration_seconds", "", bounds, st.buckets,
                    VLOG_SYNC_BUCKETS - 1, st.count, (double)st.sum_ns / 1e9);
}

static void render_partitions(struct broker *b, struct evbuffer *o)
{
    static const char *const names[] = {
        "verity_partition_end_offset", "verity_partition_high_watermark",
        "verity_partition_start_offset", "verity_partition_size_bytes"};
    static const char *const helps[] = {"Next offset the log assigns.",
                                        "Offsets below it are committed and visible.",
                                        "First offset still stored.", "Bytes in all segments."};
    for (int k = 0; k < 4; k++) {
        met_family(o, names[k], "gauge", helps[k]);
        struct topic *t;
        TAILQ_FOREACH(t, &b->topics, link)
        {
            if (!t->ready)
                continue;
            for (uint32_t i = 0; i < t->cfg.partitions; i++) {
                struct partition *p = t->parts[i];
                if (!p || !p->log)
                    continue;
                struct vlog_info info;
                vlog_get_info(p->log, &info);
                uint64_t v = k == 0   ? info.end_offset
                             : k == 1 ? part_hw(p)
                             : k == 2 ? info.start_offset
                                      : info.size_bytes;
                evbuffer_add_printf(o, "%s{topic=\"%s\",partition=\"%" PRIu32 "\"} %" PRIu64 "\n",
                                    names[k], t->name, i, v);
            }
        }
    }
}

/* One group's partitions: calls fn for each with its lag and age. */
struct glag {
    const char *topic;
    uint32_t partition;
    uint64_t hwm;
    struct group_lag lag;
    int64_t oldest_age_ms; /* 0 when nothing is unacked */
};

static int group_lags(struct broker *b, const char *name, const struct group_info *info,
                      struct glag **out)
{
    uint32_t np = info->n_partitions;
    uint64_t *hwm = calloc(np ? np : 1, sizeof *hwm);
    struct glag *g = calloc(np ? np : 1, sizeof *g);
    if (!hwm || !g) {
        free(hwm);
        free(g);
        return -ENOMEM;
    }
    groups_hwm(b, info->cfg, hwm, np);
    int64_t now = now_ms();
    for (uint32_t k = 0; k < np; k++) {
        uint32_t ti = 0, part = 0;
        (void)groups_pidx_split(info->cfg, k, &ti, &part);
        g[k].topic = info->cfg->topics[ti].name;
        g[k].partition = part;
        g[k].hwm = hwm[k];
        if (group_get_lag(b->groups.st, name, k, hwm[k], &g[k].lag))
            continue;
        if (g[k].lag.unacked > 0) {
            struct partition *p = groups_part(b, info->cfg, k);
            int64_t ts = p ? groups_batch_ts(p, g[k].lag.ack_floor) : INT64_MIN;
            g[k].oldest_age_ms = ts != INT64_MIN && ts < now ? now - ts : 0;
        }
    }
    free(hwm);
    *out = g;
    return 0;
}

static void render_groups(struct broker *b, struct evbuffer *o)
{
    struct group_state *st = b->groups.st;
    if (!st)
        return;
    size_t n = 0;
    group_list(st, NULL, 0, &n);
    const char **names = calloc(n ? n : 1, sizeof *names);
    if (!names)
        return;
    group_list(st, names, n, &n);
    static const char *const fam[] = {
        "verity_group_lag",       "verity_group_pending",
        "verity_group_waiting",   "verity_group_oldest_unacked_age_seconds",
        "verity_group_ack_floor",
    };
    static const char *const help[] = {
        "Messages below the high watermark not yet acknowledged or dead-lettered.",
        "Messages leased to members (delivered, not yet acknowledged).",
        "Messages returned and waiting for redelivery.",
        "Age of the oldest unacknowledged message (its batch timestamp).",
        "Every offset below is acknowledged or dead-lettered.",
    };
    for (int k = 0; k < 5; k++) {
        met_family(o, fam[k], "gauge", help[k]);
        for (size_t i = 0; i < n; i++) {
            struct group_info info;
            struct glag *g = NULL;
            if (group_get_info(st, names[i], &info) || group_lags(b, names[i], &info, &g))
                continue;
            for (uint32_t p = 0; p < info.n_partitions; p++) {
                double v = k == 0   ? (double)g[p].lag.unacked
                           : k == 1 ? (double)g[p].lag.leased
                           : k == 2 ? (double)g[p].lag.waiting
                           : k == 3 ? (double)g[p].oldest_age_ms / 1000.0
                                    : (double)g[p].lag.ack_floor;
                evbuffer_add_printf(
                    o, "%s{group=\"%s\",topic=\"%s\",partition=\"%" PRIu32 "\"} %.17g\n", fam[k],
                    names[i], g[p].topic, g[p].partition, v);
            }
            free(g);
        }
    }
    static const char *const cfam[] = {
        "verity_group_deliveries_total",    "verity_group_redeliveries_total",
        "verity_group_dead_letters_total",  "verity_group_members",
        "verity_group_fetch_answers_total", "verity_group_fetch_log_waits_total"};
    static const char *const chelp[] = {
        "Messages handed to members since the broker started.",
        "Of those, deliveries with a delivery count above 1.",
        "Messages dead-lettered since the group was created or reset.",
        "Members of the group.",
        "GroupFetch answers that carried messages.",
        "Of those, answers that waited for the group log to become durable (the rest were "
        "covered by a durable delivery horizon)."};
    for (int k = 0; k < 6; k++) {
        met_family(o, cfam[k], k == 3 ? "gauge" : "counter", chelp[k]);
        for (size_t i = 0; i < n; i++) {
            struct group_info info;
            if (group_get_info(st, names[i], &info))
                continue;
            struct bgroup *bg = bgroup_get(b, names[i]);
            uint64_t v = k == 0   ? (bg ? bg->deliveries : 0)
                         : k == 1 ? (bg ? bg->redeliveries : 0)
                         : k == 2 ? info.dead_lettered
                         : k == 3 ? info.n_members
                         : k == 4 ? (bg ? bg->fetch_answers : 0)
                                  : (bg ? bg->fetch_log_waits : 0);
            evbuffer_add_printf(o, "%s{group=\"%s\"} %" PRIu64 "\n", cfam[k], names[i], v);
        }
    }
    met_family(o, "verity_group_log_records_total", "counter",
               "Records appended to the consumer-group log.");
    evbuffer_add_printf(o, "verity_group_log_records_total %" PRIu64 "\n", b->groups.records);
    met_family(o, "verity_group_log_batches_total", "counter",
               "Batches appended to the consumer-group log.");
    evbuffer_add_printf(o, "verity_group_log_batches_total %" PRIu64 "\n", b->groups.batches);
    free(names);
}

static void h_metrics(struct evhttp_request *req, void *arg)
{
    if (!get_only(req, arg))
        return;
    struct broker *b = arg;
    struct evbuffer *o = evbuffer_new();
    if (!o) {
        evhttp_send_error(req, 500, NULL);
        return;
    }
    const struct metrics *m = &b->met;
    render_requests(b, o);
    ops_metrics_render(b, o);
    peer_metrics_render(b, o);
    wpush_metrics_render(b, o); /* issue 11 */
    auth_metrics_render(b, o); /* issue 14: audit trail, admin HTTP refusals */
    met_family(o, "verity_bytes_in_total", "counter", "Protocol frame bytes read.");
    evbuffer_add_printf(o, "verity_bytes_in_total %" PRIu64 "\n", m->bytes_in);
    met_family(o, "verity_bytes_out_total", "counter", "Protocol frame bytes sent.");
    evbuffer_add_printf(o, "verity_bytes_out_total %" PRIu64 "\n", m->bytes_out);
    met_family(o, "verity_connections", "gauge", "Open protocol connections.");
    evbuffer_add_printf(o, "verity_connections %zu\n", b->n_conns);
    met_family(o, "verity_connections_total", "counter", "Protocol connections accepted.");
    evbuffer_add_printf(o, "verity_connections_total %" PRIu64 "\n", m->connections_total);
    met_family(o, "verity_connections_rejected_total", "counter",
               "Connections refused (max_connections or shutdown).");
    evbuffer_add_printf(o, "verity_connections_rejected_total %" PRIu64 "\n",
                        m->connections_rejected);
    met_family(o, "verity_frames_rejected_total", "counter",
               "Frames that closed their connection (over the limit, malformed prefix).");
    evbuffer_add_printf(o, "verity_frames_rejected_total %" PRIu64 "\n", m->frames_rejected);
    met_family(o, "verity_produce_batches_total", "counter", "Batches appended.");
    evbuffer_add_printf(o, "verity_produce_batches_total %" PRIu64 "\n", m->produce_batches);
    met_family(o, "verity_produce_records_total", "counter", "Records appended.");
    evbuffer_add_printf(o, "verity_produce_records_total %" PRIu64 "\n", m->produce_records);
    met_family(o, "verity_produce_duplicates_total", "counter",
               "Batches answered from the idempotence state instead of appended.");
    evbuffer_add_printf(o, "verity_produce_duplicates_total %" PRIu64 "\n", m->produce_duplicates);
    met_family(o, "verity_topics", "gauge", "Topics.");
    evbuffer_add_printf(o, "verity_topics %zu\n", b->n_topics);
    render_state(b, o);
    render_fsync(b, o);
    render_partitions(b, o);
    render_groups(b, o);
    send_text(req, 200, "OK", "text/plain; version=0.0.4", o);
    evbuffer_free(o);
}

static json_t *topic_json(struct topic *t)
{
    json_t *parts = json_array();
    for (uint32_t i = 0; i < t->cfg.partitions && parts; i++) {
        struct partition *p = t->parts[i];
        json_t *pj;
        if (p && p->log) {
            struct vlog_info info;
            vlog_get_info(p->log, &info);
            pj = json_pack("{s:i, s:I, s:I, s:I, s:I, s:i, s:s}", "partition", (int)i,
                           "start_offset", (json_int_t)info.start_offset, "end_offset",
                           (json_int_t)info.end_offset, "high_watermark", (json_int_t)part_hw(p),
                           "size_bytes", (json_int_t)info.size_bytes, "segments",
                           (int)info.segments, "error", verity_errname(p->error));
        } else {
            pj = json_pack("{s:i, s:s}", "partition", (int)i, "error",
                           verity_errname(p ? p->error : VERITY_ENOTFOUND));
        }
        if (!pj || json_array_append_new(parts, pj)) {
            json_decref(parts);
            return NULL;
        }
    }
    if (!parts)
        return NULL;
    return json_pack("{s:s, s:i, s:s, s:I, s:I, s:I, s:I, s:o}", "name", t->name, "partitions",
                     (int)t->cfg.partitions, "durability", bcfg_durability_name(t->cfg.durability),
                     "retention_ms", (json_int_t)t->cfg.retention_ms, "retention_bytes",
                     (json_int_t)t->cfg.retention_bytes, "segment_bytes",
                     (json_int_t)t->cfg.segment_bytes, "max_message_bytes",
                     (json_int_t)t->cfg.max_message_bytes, "partition_state", parts);
}

static void h_topics(struct evhttp_request *req, void *arg)
{
    if (!get_only(req, arg))
        return;
    struct broker *b = arg;
    json_t *arr = json_array();
    struct topic *t;
    TAILQ_FOREACH(t, &b->topics, link)
    {
        if (!arr || !t->ready || t->deleting || !auth_http_visible(b, AUTH_RES_TOPIC, t->name))
            continue;
        json_t *tj = topic_json(t);
        if (!tj || json_array_append_new(arr, tj)) {
            json_decref(arr);
            arr = NULL;
        }
    }
    json_t *root = arr ? json_pack("{s:o}", "topics", arr) : NULL;
    char *text = root ? json_dumps(root, JSON_INDENT(2)) : NULL;
    json_decref(root);
    struct evbuffer *body = text ? evbuffer_new() : NULL;
    if (!body) {
        free(text);
        evhttp_send_error(req, 500, NULL);
        return;
    }
    evbuffer_add(body, text, strlen(text));
    evbuffer_add(body, "\n", 1);
    free(text);
    send_text(req, 200, "OK", "application/json", body);
    evbuffer_free(body);
}

static json_t *group_json(struct broker *b, const char *name)
{
    struct group_state *st = b->groups.st;
    struct group_info info;
    struct glag *g = NULL;
    if (group_get_info(st, name, &info) || group_lags(b, name, &info, &g))
        return NULL;
    const struct group_config *gc = info.cfg;
    json_t *topics = json_array(), *backoff = json_array(), *parts = json_array(),
           *members = json_array();
    bool ok = topics && backoff && parts && members;
    for (uint32_t i = 0; ok && i < gc->n_topics; i++)
        ok = json_array_append_new(topics, json_string(gc->topics[i].name)) == 0;
    for (uint32_t i = 0; ok && i < gc->n_backoff; i++)
        ok = json_array_append_new(backoff, json_integer(gc->backoff_ms[i])) == 0;
    for (uint32_t k = 0; ok && k < info.n_partitions; k++) {
        json_t *pj = json_pack(
            "{s:s, s:i, s:I, s:I, s:I, s:I, s:i, s:i, s:I}", "topic", g[k].topic, "partition",
            (int)g[k].partition, "ack_floor", (json_int_t)g[k].lag.ack_floor, "read_cursor",
            (json_int_t)g[k].lag.read_cursor, "high_watermark", (json_int_t)g[k].hwm, "lag",
            (json_int_t)g[k].lag.unacked, "pending", (int)g[k].lag.leased, "waiting",
            (int)g[k].lag.waiting, "oldest_unacked_age_ms", (json_int_t)g[k].oldest_age_ms);
        ok = pj && json_array_append_new(parts, pj) == 0;
    }
    size_t nm = 0;
    struct group_member_info *mi = calloc(info.n_members ? info.n_members : 1, sizeof *mi);
    ok = ok && mi && group_members(st, name, mi, info.n_members, &nm) == 0;
    for (size_t i = 0; ok && i < nm && i < info.n_members; i++) {
        json_t *mj =
            json_pack("{s:I, s:s, s:I, s:I, s:i, s:i}", "member_id", (json_int_t)mi[i].member_id,
                      "name", mi[i].name, "session_ms", (json_int_t)mi[i].session_ms,
                      "last_seen_ms", (json_int_t)mi[i].last_seen_ms, "pending",
                      (int)mi[i].n_leased, "partitions", (int)mi[i].n_partitions);
        ok = mj && json_array_append_new(members, mj) == 0;
    }
    free(mi);
    free(g);
    struct bgroup *bg = bgroup_get(b, name);
    json_t *out = NULL;
    if (ok)
        out = json_pack(
            "{s:s, s:i, s:s, s:o, s:s, s:I, s:I, s:i, s:o, s:i, s:i, s:i, s:i, s:i, "
            "s:I, s:I, s:I, s:o, s:o}",
            "name", name, "group_id", (int)info.group_id, "mode",
            gc->mode == GROUP_SHARED ? "shared" : "ordered", "topics", topics, "dlq_topic",
            gc->dlq_topic, "lease_ms", (json_int_t)gc->lease_ms, "session_ms",
            (json_int_t)gc->session_ms, "max_deliveries", (int)gc->max_deliveries, "backoff_ms",
            backoff, "pending_max", (int)info.pending_max, "generation", (int)info.generation,
            "pending", (int)info.n_leased, "waiting", (int)info.n_waiting, "dead_letter_pending",
            (int)info.n_dead_letter, "dead_lettered", (json_int_t)info.dead_lettered, "deliveries",
            (json_int_t)(bg ? bg->deliveries : 0), "redeliveries",
            (json_int_t)(bg ? bg->redeliveries : 0), "members", members, "partitions", parts);
    if (!out) {
        json_decref(topics);
        json_decref(backoff);
        json_decref(parts);
        json_decref(members);
    }
    return out;
}

static void h_groups(struct evhttp_request *req, void *arg)
{
    if (!get_only(req, arg))
        return;
    struct broker *b = arg;
    struct group_state *st = b->groups.st;
    json_t *arr = json_array();
    size_t n = 0;
    if (st)
        group_list(st, NULL, 0, &n);
    const char **names = calloc(n ? n : 1, sizeof *names);
    if (st && names)
        group_list(st, names, n, &n);
    for (size_t i = 0; st && names && arr && i < n; i++) {
        if (!auth_http_visible(b, AUTH_RES_GROUP, names[i]))
            continue;
        json_t *gj = group_json(b, names[i]);
        if (!gj || json_array_append_new(arr, gj)) {
            json_decref(arr);
            arr = NULL;
        }
    }
    free(names);
    json_t *root = arr ? json_pack("{s:o}", "groups", arr) : NULL;
    char *text = root ? json_dumps(root, JSON_INDENT(2)) : NULL;
    json_decref(root);
    struct evbuffer *body = text ? evbuffer_new() : NULL;
    if (!body) {
        free(text);
        evhttp_send_error(req, 500, NULL);
        return;
    }
    evbuffer_add(body, text, strlen(text));
    evbuffer_add(body, "\n", 1);
    free(text);
    send_text(req, 200, "OK", "application/json", body);
    evbuffer_free(body);
}

static void h_cluster(struct evhttp_request *req, void *arg)
{
    if (get_only(req, arg))
        peer_http_cluster(req, arg); /* broker/peer.c */
}

static void h_security(struct evhttp_request *req, void *arg)
{
    enum evhttp_cmd_type m = evhttp_request_get_command(req);
    if (m != EVHTTP_REQ_GET && m != EVHTTP_REQ_POST) {
        evhttp_add_header(evhttp_request_get_output_headers(req), "Allow", "GET, POST");
        evhttp_send_error(req, 405, "Method Not Allowed (GET lists, POST changes)");
        return;
    }
    if (auth_http_check(arg, req))
        auth_admin_handle(arg, req); /* broker/auth_admin.c */
}

static void h_notfound(struct evhttp_request *req, void *arg)
{
    if (!get_only(req, arg))
        return;
    if (http_proof_handle(arg, req))
        return;
    evhttp_send_error(req, 404,
                      "no such path (try /health, /ready, /metrics, /v1/topics, /v1/groups)");
}

int http_start(struct broker *b)
{
    if (b->cfg.http[0] == '\0' || strcmp(b->cfg.http, "off") == 0)
        return 0;
    char host[BCFG_ADDR_MAX];
    uint16_t port;
    int rc = bcfg_split_hostport(b->cfg.http, host, sizeof host, &port);
    if (rc)
        return rc;
    b->http = evhttp_new(b->base);
    if (!b->http)
        return -ENOMEM;
    evhttp_set_max_body_size(b->http, VERITY_HTTP_BODY_MAX);
    evhttp_set_max_headers_size(b->http, HTTP_HEADERS_MAX);
    evhttp_set_timeout(b->http, (int)b->cfg.http_timeout_s);
    evhttp_set_allowed_methods(b->http, EVHTTP_REQ_GET | EVHTTP_REQ_HEAD | EVHTTP_REQ_POST |
                                            EVHTTP_REQ_PUT | EVHTTP_REQ_DELETE |
                                            EVHTTP_REQ_OPTIONS | EVHTTP_REQ_PATCH);
    evhttp_set_cb(b->http, "/health", h_health, b);
    evhttp_set_cb(b->http, "/ready", h_ready, b);
    evhttp_set_cb(b->http, "/metrics", h_metrics, b);
    evhttp_set_cb(b->http, "/debug/trace", h_trace, b);
    evhttp_set_cb(b->http, "/v1/topics", h_topics, b);
    evhttp_set_cb(b->http, "/v1/groups", h_groups, b);
    evhttp_set_cb(b->http, "/cluster", h_cluster, b);
    evhttp_set_cb(b->http, "/v1/security", h_security, b);
    evhttp_set_gencb(b->http, h_notfound, b);
    struct evhttp_bound_socket *s = evhttp_bind_socket_with_handle(b->http, host, port);
    if (!s) {
        blog(BLOG_ERROR, "http_listen_failed", "addr=%s", b->cfg.http);
        evhttp_free(b->http);
        b->http = NULL;
        return -EADDRINUSE;
    }
    if ((rc = http_guard_install(b, b->http, evhttp_bound_socket_get_listener(s))))
        return rc; /* max_http_connections (conn.c) */
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    uint16_t bport = port;
    if (getsockname(evhttp_bound_socket_get_fd(s), (struct sockaddr *)&ss, &len) == 0)
        bport = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                               : ((struct sockaddr_in *)&ss)->sin_port);
    snprintf(b->http_addr, sizeof b->http_addr, "%s:%u", host, bport);
    return 0;
}

void http_stop(struct broker *b)
{
    auth_http_flush(b); /* 401s waiting on a timer hold requests evhttp_free frees */
    if (b->http)
        evhttp_free(b->http);
    b->http = NULL;
}
