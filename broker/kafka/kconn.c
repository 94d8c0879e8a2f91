/*
 * Kafka connections: listener, framing, request dispatch by a const table,
 * responses in request order.
 *
 * Frame: int32 size (bytes that follow) | request header v1: api_key i16,
 * api_version i16, correlation_id i32, client_id nullable string | body.
 * Response: int32 size | correlation_id i32 | body (header v0; no flexible
 * version is advertised, so no tagged fields ever appear).
 *
 * Limits, the same the native listener applies (broker/conn.c):
 *   - a size below the smallest header or above max_frame_bytes closes the
 *     connection (the stream cannot be resynchronised, and Kafka has no
 *     error frame outside a response);
 *   - max_connections: a new connection beyond it is closed at once (counted
 *     together with native connections);
 *   - max_inflight: reading pauses while that many requests are unanswered;
 *   - write_buffer_bytes: reading pauses while the peer does not drain its
 *     responses;
 *   - idle_timeout_ms: a connection with nothing in flight is closed;
 *   - frame_timeout_ms: a frame whose first byte arrived must be complete in
 *     time (the clock stops while the broker, not the peer, holds it up);
 *   - buffer_bytes_max: frames being received reserve their size from the
 *     broker-wide budget the native listener uses; a frame that does not fit
 *     stops its connection's reading until it does (retried every 10 ms);
 *   - max_connections_per_addr: Kafka connections from one IP address.
 * An API key the table lacks, or a version outside its range, closes the
 * connection like Apache Kafka does, except ApiVersions: KIP-511, an
 * unsupported version gets error 35 and a v0 body listing what is supported.
 * ApiVersions v3 is the only flexible version spoken (librdkafka opens with
 * it); its response header is v0 by the protocol's own exception.
 */
#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <event2/util.h>

#include "broker/blog.h"
#include "broker/kafka/kafka_int.h"
#include "broker/tls.h"
#include "verity/errors.h"
#include "verity/verify.h"

#define KFRAME_MIN 10 /* api key, version, correlation id, client id length */

const struct kapi kapi_table[] = {
    {0, 3, 7, k_produce, "Produce"},
    {1, 4, 11, k_fetch, "Fetch"},
    {2, 0, 5, k_list_offsets, "ListOffsets"},
    {3, 0, 8, k_metadata, "Metadata"},
    {8, 0, 7, k_offset_commit, "OffsetCommit"},
    {9, 0, 5, k_offset_fetch, "OffsetFetch"},
    {10, 0, 2, k_find_coordinator, "FindCoordinator"},
    {11, 0, 5, k_join_group, "JoinGroup"},
    {12, 0, 3, k_heartbeat, "Heartbeat"},
    {13, 0, 2, k_leave_group, "LeaveGroup"},
    {14, 0, 3, k_sync_group, "SyncGroup"},
    {17, 0, 1, k_sasl_handshake, "SaslHandshake"}, /* v0 listed for librdkafka; refused */
    {18, 0, 3, k_api_versions, "ApiVersions"},
    {19, 0, 4, k_create_topics, "CreateTopics"},
    {20, 0, 3, k_delete_topics, "DeleteTopics"},
    {22, 0, 1, k_init_producer_id, "InitProducerId"},
    {32, 0, 2, k_describe_configs, "DescribeConfigs"},
    {36, 0, 1, k_sasl_authenticate, "SaslAuthenticate"},
};
const size_t kapi_count = sizeof kapi_table / sizeof kapi_table[0];

static void kconn_read_cb(struct bufferevent *bev, void *arg);
static void kconn_flush(struct kconn *c);
static void kconn_kill(struct kconn *c, const char *why);

int16_t kerr_from_verity(int err)
{
    switch (err) {
    case 0:
        return KE_NONE;
    case VERITY_ENOTFOUND:
        return KE_UNKNOWN_TOPIC_OR_PARTITION;
    case VERITY_EOFFSET:
        return KE_OFFSET_OUT_OF_RANGE;
    case VERITY_ECORRUPT:
    case VERITY_EBADBATCH:
        return KE_CORRUPT_MESSAGE;
    case VERITY_ELIMIT:
        return KE_MESSAGE_TOO_LARGE;
    case VERITY_EOUTOFORDER:
        return KE_OUT_OF_ORDER_SEQUENCE_NUMBER;
    case VERITY_EDUPLICATE:
        return KE_DUPLICATE_SEQUENCE_NUMBER;
    case VERITY_EFENCED:
        return KE_INVALID_PRODUCER_EPOCH;
    case VERITY_ETIMEOUT:
        return KE_REQUEST_TIMED_OUT;
    case VERITY_ENOTLEADER:
        return KE_NOT_LEADER_OR_FOLLOWER;
    case VERITY_EREADONLY:
        return KE_KAFKA_STORAGE_ERROR;
    case VERITY_EEXIST:
        return KE_TOPIC_ALREADY_EXISTS;
    case VERITY_EINVAL:
        return KE_INVALID_REQUEST;
    default:
        return KE_UNKNOWN;
    }
}

/* ---- connection lifetime --------------------------------------------------- */

static void kconn_unref(struct kconn *c)
{
    VERITY_VERIFY(c->refs > 0);
    if (--c->refs == 0 && c->dead) {
        VERITY_VERIFY(TAILQ_EMPTY(&c->reqs));
        free(c);
    }
}

static void kreq_free(struct kreq *q)
{
    struct kconn *c = q->c;
    TAILQ_REMOVE(&c->reqs, q, link);
    kw_deinit(&q->w);
    free(q->frame);
    free(q);
    kconn_unref(c);
}

/* ---- frames being received: clock and budget -------------------------------- */

static void kframe_timeout_cb(evutil_socket_t fd, short what, void *arg)
{
    struct kconn *c = arg;
    (void)fd;
    (void)what;
    if (c->dead)
        return;
    c->k->b->met.frames_timed_out++;
    blog(BLOG_WARN, "kafka_frame_timeout", "conn=%" PRIu64 " peer=%s frame_timeout_ms=%" PRIu32,
         c->id, c->peer, c->k->b->cfg.frame_timeout_ms);
    kconn_kill(c, "frame_timeout");
}

static void kframe_clock(struct kconn *c, bool run)
{
    uint32_t ms = c->k->b->cfg.frame_timeout_ms;
    if (!run) {
        if (c->frame_ev)
            evtimer_del(c->frame_ev);
        return;
    }
    if (!ms || (!c->frame_ev && !(c->frame_ev = evtimer_new(c->k->b->base, kframe_timeout_cb, c))))
        return; /* without a timer the idle timeout still applies */
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    evtimer_add(c->frame_ev, &tv);
}

/* The frame being received ended: complete, or the connection goes. */
static void kframe_done(struct kconn *c)
{
    struct broker *b = c->k->b;
    VERITY_VERIFY(b->buf_used >= c->held);
    b->buf_used -= c->held;
    /* Native connections waiting for the budget may fit now. */
    if (c->held && !TAILQ_EMPTY(&b->starved) && b->resume_ev)
        event_active(b->resume_ev, EV_TIMEOUT, 0);
    c->held = c->want = 0;
    c->starved = c->frame_open = false;
    kframe_clock(c, false);
}

/* Takes the frame's size from the broker-wide budget the native listener
 * uses (broker/conn.c), so both listeners together stay under it and the
 * broker trims its heap after a load of either. */
static bool kframe_reserve(struct kconn *c)
{
    struct broker *b = c->k->b;
    /* A frame larger than the whole budget goes alone. */
    if (b->buf_used && b->buf_used + c->want > b->cfg.buffer_bytes_max)
        return false;
    b->buf_used += c->want;
    if (b->buf_used > b->buf_peak)
        b->buf_peak = b->buf_used;
    c->held = c->want;
    return true;
}

static void kretry_cb(evutil_socket_t fd, short what, void *arg);

/* A frame is partly received: want is its size with the prefix (0 while
 * the prefix itself is partial). Starts its clock and takes its budget,
 * or stops reading until the budget has room. */
static void kframe_partial(struct kconn *c, uint64_t want)
{
    if (!c->frame_open) {
        c->frame_open = true;
        kframe_clock(c, true);
    }
    if (!want || c->held || c->starved)
        return;
    c->want = want;
    if (kframe_reserve(c))
        return;
    c->starved = true;
    kframe_clock(c, false);
    bufferevent_disable(c->bev, EV_READ);
    struct kafka *k = c->k;
    if (!k->retry_ev)
        k->retry_ev = evtimer_new(k->b->base, kretry_cb, k);
    struct timeval tv = {0, 10000};
    if (k->retry_ev && !evtimer_pending(k->retry_ev, NULL))
        evtimer_add(k->retry_ev, &tv);
}

static void kconn_kill(struct kconn *c, const char *why)
{
    if (c->dead)
        return;
    struct kafka *k = c->k;
    kframe_done(c);
    if (c->frame_ev)
        event_free(c->frame_ev);
    c->frame_ev = NULL;
    blog(BLOG_DEBUG, "kafka_conn_closed", "conn=%" PRIu64 " peer=%s reason=%s inflight=%" PRIu32,
         c->id, c->peer, why, c->inflight);
    c->dead = true;
    ksasl_uncount(c); /* the connections quota: this one is gone */
    if (c->bev)
        bufferevent_free(c->bev);
    c->bev = NULL;
    TAILQ_REMOVE(&k->conns, c, link);
    k->n_conns--;
    if (k->n_conns == 0)
        kra_release(k); /* no Kafka consumer left: the read-ahead's memory goes */
    c->refs++;
    kgroups_conn_gone(k, c);
    /* Long-polls stop now; everything else finishes and is dropped. A
     * cancel may free requests, so the walk restarts after each one. */
    for (;;) {
        struct kreq *q;
        TAILQ_FOREACH(q, &c->reqs, link)
        if (!q->done && q->cancel)
            break;
        if (!q)
            break;
        q->cancel(q);
    }
    kconn_flush(c);
    kconn_unref(c);
}

/* Pauses or resumes reading for the in-flight cap and output backlog. */
static void kconn_flow(struct kconn *c)
{
    if (c->dead || c->eof)
        return;
    const struct broker_config *cfg = &c->k->b->cfg;
    size_t out = evbuffer_get_length(bufferevent_get_output(c->bev));
    bool stop = c->inflight >= cfg->max_inflight || out > cfg->write_buffer_bytes;
    if (stop && !c->paused) {
        c->paused = true;
        bufferevent_disable(c->bev, EV_READ);
        kframe_clock(c, false); /* the broker holds the frame up, not the peer */
    } else if (!stop && c->paused && out <= cfg->write_buffer_bytes / 2) {
        c->paused = false;
        if (c->frame_open && !c->starved)
            kframe_clock(c, true);
        if (!c->starved)
            bufferevent_enable(c->bev, EV_READ);
        kconn_read_cb(c->bev, c); /* frames may already be buffered */
    }
}

/* Bytes a plaintext connection writes per loop turn (libevent: 16 KiB). */
#define KCONN_SINGLE_WRITE (1u << 20)

/* Answers at least this large go to the socket's buffer by reference. */
#define KCONN_REF_MIN (64u << 10)

static void kconn_free_ref(const void *data, size_t len, void *arg)
{
    (void)len;
    (void)arg;
    kw_pool_give((void *)data);
}

/* Sends the finished responses at the head of the queue. */
static void kconn_flush(struct kconn *c)
{
    struct kreq *q;
    while ((q = TAILQ_FIRST(&c->reqs)) && q->done) {
        if (!c->dead && !q->silent) {
            struct evbuffer *out = bufferevent_get_output(c->bev);
            uint8_t head[8];
            if (q->w.err) {
                blog(BLOG_WARN, "kafka_response_failed", "conn=%" PRIu64 " api=%d error=%s", c->id,
                     q->api_key, verity_errname(q->w.err));
                kreq_free(q);
                kconn_kill(c, "response_alloc_failed");
                return;
            }
            kput_be32(head, (uint32_t)(q->w.len + 4));
            kput_be32(head + 4, (uint32_t)q->corr);
            evbuffer_add(out, head, sizeof head);
            c->k->b->met.bytes_out += q->w.len + sizeof head;
            if (q->w.len >= KCONN_REF_MIN) {
                /* A large answer (Fetch) is handed over, not copied. */
                if (evbuffer_add_reference(out, q->w.buf, q->w.len, kconn_free_ref, NULL) == 0)
                    kw_init(&q->w);
                else
                    evbuffer_add(out, q->w.buf, q->w.len);
            } else {
                evbuffer_add(out, q->w.buf, q->w.len);
            }
        }
        kreq_free(q);
    }
}

void kreq_done(struct kreq *q)
{
    struct kconn *c = q->c;
    VERITY_VERIFY(!q->done);
    VERITY_VERIFY(c->inflight > 0);
    q->done = true;
    q->ctx = NULL;
    q->cancel = NULL;
    c->inflight--;
    c->refs++;
    kconn_flush(c);
    if (!c->dead && c->eof && c->inflight == 0 &&
        evbuffer_get_length(bufferevent_get_output(c->bev)) == 0)
        kconn_kill(c, "eof");
    else
        kconn_flow(c);
    kconn_unref(c);
}

void kreq_malformed(struct kreq *q, const char *why)
{
    struct kconn *c = q->c;
    c->k->malformed++;
    blog(BLOG_WARN, "kafka_request_malformed", "conn=%" PRIu64 " peer=%s api=%d version=%d reason=%s",
         c->id, c->peer, q->api_key, q->api_version, why);
    c->refs++;
    q->silent = true;
    kreq_done(q);
    kconn_kill(c, "malformed_request");
    kconn_unref(c);
}

static void kconn_write_cb(struct bufferevent *bev, void *arg)
{
    struct kconn *c = arg;
    (void)bev;
    c->refs++;
    if (c->eof && c->inflight == 0)
        kconn_kill(c, "eof");
    else
        kconn_flow(c);
    /* the answers are written: the client parses them now, and the broker
     * converts what it will fetch next (k_fetch.c) */
    if (!c->dead && evbuffer_get_length(bufferevent_get_output(c->bev)) == 0)
        kra_run(c);
    kconn_unref(c);
}

static void kconn_event_cb(struct bufferevent *bev, short what, void *arg)
{
    struct kconn *c = arg;
    if (what & BEV_EVENT_CONNECTED) { /* TLS handshake done */
        c->tls_up = true;
        c->k->b->met.tls_handshakes++;
        ksasl_tls(c, bufferevent_openssl_get_ssl(bev));
        return;
    }
    if (c->tls && !c->tls_up && (what & (BEV_EVENT_ERROR | BEV_EVENT_EOF | BEV_EVENT_TIMEOUT))) {
        char why[256];
        conn_tls_failed(c->k->b, "kafka", c->peer,
                        what & BEV_EVENT_TIMEOUT ? "handshake not complete within idle_timeout_ms"
                                                 : btls_bev_reason(bev, what, why, sizeof why));
        kconn_kill(c, "tls_handshake_failed");
        return;
    }
    if (what & BEV_EVENT_TIMEOUT) {
        if ((what & BEV_EVENT_READING) && c->inflight > 0) {
            if (!c->starved)
                bufferevent_enable(bev, EV_READ); /* busy, not idle */
            return;
        }
        kconn_kill(c, "idle_timeout");
        return;
    }
    if (what & BEV_EVENT_EOF) {
        if (c->inflight > 0) {
            c->eof = true;
            bufferevent_disable(bev, EV_READ);
            return;
        }
        kconn_kill(c, "eof");
        return;
    }
    if (what & BEV_EVENT_ERROR)
        kconn_kill(c, "socket_error");
}

/* ---- requests -------------------------------------------------------------- */

static const struct kapi *kapi_find(int16_t key)
{
    for (size_t i = 0; i < kapi_count; i++)
        if (kapi_table[i].key == key)
            return &kapi_table[i];
    return NULL;
}

const char *kapi_name(int16_t key)
{
    const struct kapi *api = kapi_find(key);
    return api ? api->name : "?";
}

void kreq_close_after(struct kreq *q)
{
    struct kconn *c = q->c;
    c->closing = true;
    c->eof = true;
    if (!c->dead)
        bufferevent_disable(c->bev, EV_READ);
}

/* A request a connection may not send yet (or any more): no answer, the
 * connection closes. */
static void kconn_refuse(struct kreq *q, const char *event, const char *reason)
{
    struct kconn *c = q->c;
    blog(BLOG_WARN, event, "conn=%" PRIu64 " peer=%s api=%s reason=%s", c->id, c->peer,
         kapi_name(q->api_key), reason);
    c->refs++;
    q->silent = true;
    kreq_done(q);
    kconn_kill(c, reason);
    kconn_unref(c);
}

/* Takes over frame (len bytes after the size prefix). */
static void kconn_handle(struct kconn *c, uint8_t *frame, size_t len)
{
    struct kafka *k = c->k;
    struct kreq *q = calloc(1, sizeof *q);
    if (!q) {
        free(frame);
        kconn_kill(c, "out_of_memory");
        return;
    }
    q->k = k;
    q->c = c;
    q->frame = frame;
    kw_init(&q->w);
    kr_init(&q->r, frame, len);
    q->api_key = kr_i16(&q->r);
    q->api_version = kr_i16(&q->r);
    q->corr = kr_i32(&q->r);
    c->refs++;
    c->inflight++;
    TAILQ_INSERT_TAIL(&c->reqs, q, link);
    k->requests++;
    const struct kapi *api = kapi_find(q->api_key);
    if (!api) {
        kreq_malformed(q, "unknown api key");
        return;
    }
    bool in_range = q->api_version >= api->min_version && q->api_version <= api->max_version;
    if (api->key == 18 && (!in_range || q->api_version >= 3)) {
        /* KIP-511: the rest of the header may be a newer format; answer from
         * what is known so far. v3 (flexible header) needs nothing more. */
        k_api_versions(q);
        return;
    }
    (void)kr_str(&q->r, true); /* client_id */
    if (!in_range) {
        kreq_malformed(q, "api version outside the advertised range");
        return;
    }
    if (!kr_ok(&q->r)) {
        kreq_malformed(q, "request header does not decode");
        return;
    }
    if (api->key != 17 && api->key != 18 && api->key != 36) { /* allowed before SASL */
        if (ksasl_required(c)) {
            kconn_refuse(q, "kafka_auth_required",
                         c->quota_refused ? "quota_connections" : "sasl_required");
            return;
        }
        if (!ksasl_current(c)) {
            kconn_refuse(q, "kafka_auth_required", "key_revoked");
            return;
        }
    }
    api->fn(q);
}

static void kconn_read_cb(struct bufferevent *bev, void *arg)
{
    struct kconn *c = arg;
    const struct broker_config *cfg = &c->k->b->cfg;
    struct evbuffer *in = bufferevent_get_input(bev);
    c->refs++; /* a handler may kill the connection under us */
    while (!c->dead && !c->paused && !c->closing) {
        if (c->inflight >= cfg->max_inflight ||
            evbuffer_get_length(bufferevent_get_output(bev)) > cfg->write_buffer_bytes) {
            kconn_flow(c);
            break;
        }
        uint8_t prefix[4];
        size_t have = evbuffer_get_length(in);
        if (have < 4) {
            if (have)
                kframe_partial(c, 0);
            else
                kframe_done(c);
            break;
        }
        evbuffer_copyout(in, prefix, 4);
        int32_t size = (int32_t)kbe32(prefix);
        if (size < KFRAME_MIN || (uint32_t)size > cfg->max_frame_bytes) {
            c->k->malformed++;
            blog(BLOG_WARN, "kafka_frame_rejected",
                 "conn=%" PRIu64 " peer=%s size=%" PRId32 " max_frame_bytes=%" PRIu32, c->id,
                 c->peer, size, cfg->max_frame_bytes);
            kconn_kill(c, "bad_frame_size");
            break;
        }
        if (have < (size_t)size + 4) {
            kframe_partial(c, (uint64_t)size + 4);
            break;
        }
        kframe_done(c);
        uint8_t *frame = malloc((size_t)size);
        if (!frame) {
            kconn_kill(c, "out_of_memory");
            break;
        }
        evbuffer_drain(in, 4);
        evbuffer_remove(in, frame, (size_t)size);
        c->k->b->met.bytes_in += (size_t)size + 4;
        kconn_handle(c, frame, (size_t)size);
    }
    kconn_unref(c);
}

/* ---- listener --------------------------------------------------------------- */

/* Connections waiting for the frame budget, oldest first, while it has room. */
static void kretry_cb(evutil_socket_t fd, short what, void *arg)
{
    struct kafka *k = arg;
    (void)fd;
    (void)what;
    bool waiting = false;
    struct kconn *c, *next;
    for (c = TAILQ_FIRST(&k->conns); c; c = next) {
        next = TAILQ_NEXT(c, link);
        if (!c->starved || c->dead)
            continue;
        if (waiting || !kframe_reserve(c)) {
            waiting = true;
            continue;
        }
        c->starved = false;
        kframe_clock(c, true);
        if (!c->paused && !c->eof)
            bufferevent_enable(c->bev, EV_READ);
    }
    struct timeval tv = {0, 10000};
    if (waiting)
        evtimer_add(k->retry_ev, &tv);
}

/* Kafka connections open from host (the peer is "host:port"). */
static uint32_t kaddr_count(const struct kafka *k, const char *host)
{
    size_t n = strlen(host);
    uint32_t count = 0;
    const struct kconn *c;
    TAILQ_FOREACH(c, &k->conns, link)
    if (strncmp(c->peer, host, n) == 0 && c->peer[n] == ':')
        count++;
    return count;
}

static void kaccept_cb(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa,
                       int salen, void *arg)
{
    struct kafka *k = arg;
    struct broker *b = k->b;
    (void)l;
    (void)salen;
    char peer[64] = "?", host[48] = "?";
    if (sa->sa_family == AF_INET) {
        struct sockaddr_in *v4 = (struct sockaddr_in *)sa;
        if (evutil_inet_ntop(AF_INET, &v4->sin_addr, host, sizeof host))
            snprintf(peer, sizeof peer, "%s:%u", host, ntohs(v4->sin_port));
    }
    const char *why = b->stopping                                             ? "stopping"
                      : b->n_conns + k->n_conns >= b->cfg.max_connections    ? "max_connections"
                      : kaddr_count(k, host) >= b->cfg.max_connections_per_addr ? "max_connections_per_addr"
                                                                             : NULL;
    if (why) {
        evutil_closesocket(fd);
        b->met.connections_rejected++;
        blog(BLOG_WARN, "kafka_conn_rejected", "peer=%s reason=%s", peer, why);
        return;
    }
    struct kconn *c = calloc(1, sizeof *c);
    struct bufferevent *bev = NULL;
    if (c && b->tls_ctx) { /* TLS on the Kafka port too (security.protocol=SSL) */
        SSL *ssl = SSL_new(b->tls_ctx);
        bev = ssl ? bufferevent_openssl_socket_new(b->base, fd, ssl, BUFFEREVENT_SSL_ACCEPTING,
                                                   BEV_OPT_CLOSE_ON_FREE)
                  : NULL;
        if (bev) {
            bufferevent_openssl_set_allow_dirty_shutdown(bev, 1);
            bufferevent_set_max_single_write(bev, BTLS_SINGLE_IO_BYTES);
        }
    } else if (c) {
        bev = bufferevent_socket_new(b->base, fd, BEV_OPT_CLOSE_ON_FREE);
        /* libevent writes at most 16 KiB per loop turn by default: a 1 MiB
         * Fetch answer took 64 turns (writev + epoll_wait each) to leave */
        if (bev)
            bufferevent_set_max_single_write(bev, KCONN_SINGLE_WRITE);
    }
    if (!bev) {
        free(c);
        evutil_closesocket(fd);
        return;
    }
    int one = 1;
    (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    c->k = k;
    c->bev = bev;
    c->tls = b->tls_ctx != NULL;
    c->id = ++k->next_conn_id;
    snprintf(c->peer, sizeof c->peer, "%s", peer);
    TAILQ_INIT(&c->reqs);
    TAILQ_INSERT_TAIL(&k->conns, c, link);
    k->n_conns++;
    b->met.connections_total++;
    bufferevent_setcb(bev, kconn_read_cb, kconn_write_cb, kconn_event_cb, c);
    bufferevent_setwatermark(bev, EV_READ, 0, (size_t)b->cfg.max_frame_bytes + 64 * 1024);
    bufferevent_setwatermark(bev, EV_WRITE, b->cfg.write_buffer_bytes / 2, 0);
    if (b->cfg.idle_timeout_ms) {
        struct timeval tv = {b->cfg.idle_timeout_ms / 1000, (b->cfg.idle_timeout_ms % 1000) * 1000};
        bufferevent_set_timeouts(bev, &tv, NULL);
    }
    bufferevent_enable(bev, EV_READ | EV_WRITE);
    blog(BLOG_DEBUG, "kafka_conn_opened", "conn=%" PRIu64 " peer=%s", c->id, c->peer);
}

int kafka_start(struct broker *b)
{
    if (!b->cfg.kafka_listen[0] || strcmp(b->cfg.kafka_listen, "off") == 0)
        return 0;
    struct kafka *k = calloc(1, sizeof *k);
    if (!k)
        return -ENOMEM;
    k->b = b;
    TAILQ_INIT(&k->conns);
    b->kafka = k;
    char host[BCFG_ADDR_MAX];
    uint16_t port;
    int rc = bcfg_split_hostport(b->cfg.kafka_listen, host, sizeof host, &port);
    if (rc)
        return rc;
    if (strcmp(host, "localhost") == 0)
        snprintf(host, sizeof host, "127.0.0.1");
    struct sockaddr_in sin;
    memset(&sin, 0, sizeof sin);
    sin.sin_family = AF_INET;
    sin.sin_port = htons(port);
    if (evutil_inet_pton(AF_INET, host, &sin.sin_addr) != 1) {
        blog(BLOG_ERROR, "kafka_listen_failed", "addr=%s error=bad_address (numeric IPv4 expected)",
             b->cfg.kafka_listen);
        return VERITY_EINVAL;
    }
    k->listener = evconnlistener_new_bind(
        b->base, kaccept_cb, k, LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE | LEV_OPT_CLOSE_ON_EXEC,
        1024, (struct sockaddr *)&sin, sizeof sin);
    if (!k->listener) {
        rc = errno ? -errno : -EADDRINUSE;
        blog(BLOG_ERROR, "kafka_listen_failed", "addr=%s error=%s", b->cfg.kafka_listen,
             verity_errname(rc));
        return rc;
    }
    struct sockaddr_in bound;
    socklen_t blen = sizeof bound;
    k->port = port;
    if (getsockname(evconnlistener_get_fd(k->listener), (struct sockaddr *)&bound, &blen) == 0)
        k->port = ntohs(bound.sin_port);
    /* A wildcard bind advertises the loopback address; see docs/KAFKA.md. */
    snprintf(k->host, sizeof k->host, "%s", strcmp(host, "0.0.0.0") == 0 ? "127.0.0.1" : host);
    if (b->cfg.kafka_advertised_host[0])
        snprintf(k->host, sizeof k->host, "%s", b->cfg.kafka_advertised_host);
    snprintf(k->addr, sizeof k->addr, "%s:%u", host, k->port);
    if ((rc = kgroups_open(k)))
        return rc;
    blog(BLOG_INFO, "kafka_listening", "addr=%s advertised=%s:%u tls=%s", k->addr, k->host, k->port,
         b->tls_ctx ? "on" : "off");
    return 0;
}

void kafka_stop_accepting(struct broker *b)
{
    struct kafka *k = b->kafka;
    if (k && k->listener) {
        evconnlistener_free(k->listener);
        k->listener = NULL;
    }
    if (k)
        kgroups_shutdown(k);
}

void kafka_close_all(struct broker *b)
{
    struct kafka *k = b->kafka;
    while (k && !TAILQ_EMPTY(&k->conns))
        kconn_kill(TAILQ_FIRST(&k->conns), "shutdown");
}

size_t kafka_inflight_total(const struct broker *b)
{
    const struct kafka *k = b->kafka;
    size_t n = 0;
    const struct kconn *c;
    if (!k)
        return 0;
    TAILQ_FOREACH(c, &k->conns, link)
    n += c->inflight;
    return n;
}

void kafka_free(struct broker *b)
{
    struct kafka *k = b->kafka;
    if (!k)
        return;
    kafka_stop_accepting(b);
    kafka_close_all(b);
    kgroups_close(k);
    if (k->retry_ev)
        event_free(k->retry_ev);
    free(k->scratch);
    kra_release(k);
    free(k);
    b->kafka = NULL;
}

void kafka_part_closing(struct partition *p)
{
    if (p && p->b && p->b->kafka)
        kra_part_gone(p->b->kafka, p);
}

const char *kafka_addr(const struct broker *b)
{
    return b->kafka ? b->kafka->addr : "off";
}
