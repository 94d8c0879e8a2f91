/*
 * Protocol connections: accept, frame, decode, validate, dispatch, answer.
 *
 * A connection reads frames (codec_frame_peek checks the prefix before a
 * byte of the envelope is looked at); each decoded request becomes a struct
 * req that lives until it is answered. Answers go out in completion order
 * and carry the request's correlation id. Limits, each answered with an
 * error that names it:
 *   - max_connections: the new connection gets ERR_LIMIT and is closed;
 *   - max_frame_bytes / malformed prefix: ERR_LIMIT / ERR_PROTO with
 *     correlation id 0, then the connection is closed (the stream cannot be
 *     resynchronised);
 *   - max_inflight: that request gets ERR_LIMIT;
 *   - write_buffer_bytes: reading pauses until the peer drains its answers;
 *   - idle_timeout_ms: a connection with nothing in flight is closed;
 *   - max_connections_per_addr: connections from one IP address; the last
 *     reserved_connections slots of max_connections go only to an address
 *     with no connection open (an operator's `verity broker status` gets in
 *     while one client holds every other slot);
 *   - frame_timeout_ms: a frame whose first byte arrived must be complete in
 *     this time (a 1-byte-per-second sender is closed), while the broker
 *     reads it (the clock stops while reading is paused by the broker);
 *   - buffer_bytes_max: one broker-wide budget for bytes of frames being
 *     received and of requests not yet answered. A frame's whole announced
 *     size is reserved when its prefix arrives; a connection whose frame
 *     does not fit waits with reading paused (back-pressure, no growth),
 *     oldest first, until answers or closes free the budget. Frames up to
 *     SMALL_FRAME_BYTES may use the last eighth of the budget, large ones
 *     may not, so small requests (status, metadata, acks) still get in.
 *
 * accept() failures (EMFILE when descriptors run out) pause accepting with
 * an exponential back-off (10 ms .. 1 s) and are logged at most once a
 * second with the count of those not logged.
 *
 * Closing after an error is graceful: the error frame is flushed, the write
 * side shut down, and input discarded until the peer closes or a linger
 * timer fires, so the peer reads the error instead of a reset.
 *
 * TLS (tls_cert set): the same connection over a bufferevent_openssl. The
 * handshake must finish within frame_timeout_ms; a failed one is logged
 * (tls_handshake_failed, at most 10 lines a second) and counted. Fetch
 * answers cannot go through sendfile: their file spans are read (pread)
 * straight into the output buffer's chunks, which OpenSSL encrypts from
 * there (one copy, no per-record work).
 *
 * Answers go out in the loop pass that produced them (issue 16): req_reply
 * makes the connection's flush event active, and that event, run in the same
 * pass after the callbacks already active (so the answers of one read or one
 * commit leave in one write), writes the output buffer to the socket. Before,
 * the bytes waited for the bufferevent's write event: an epoll_ctl and one
 * more epoll_wait per answer. Whatever the socket does not take, and every
 * connection that is TLS, closing or paused, is left to the bufferevent as
 * before.
 *
 * Connection states: open -> closing (conn_close_after_flush) -> dead
 * (conn_kill); open -> dead on EOF, error or idle timeout. A dead
 * connection's struct lives until its last request lets go (refs).
 */
#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/listener.h>
#include <event2/util.h>
#include <openssl/err.h>

#include "broker/auth.h"
#include "broker/blog.h"
#include "broker/broker_int.h"
#include "broker/tls.h"
#include "verity/errors.h"
#include "verity/verify.h"

#define LINGER_MS 2000
#define SMALL_FRAME_BYTES (64u * 1024) /* may use the budget's reserved eighth */
#define ADDR_BUCKETS 4096
#define ACCEPT_BACKOFF_MIN_MS 10
#define ACCEPT_BACKOFF_MAX_MS 1000
#define TRIM_BYTES_MIN (8u << 20) /* trim the heap after a peak at least this high */
#define TLS_COPY_CHUNK (64u * 1024 - 256) /* a fetch span read per output chunk over TLS */
#define TLS_LOG_PER_SEC 10
#define FRAME_REJECT_LOG_PER_SEC 10 /* frame_rejected lines a second */

typedef void (*handler_fn)(struct req *r);

/* The request dispatch table. */
static const struct handler {
    Verity__Envelope__BodyCase type;
    handler_fn fn;
} handlers[] = {
    {VERITY__ENVELOPE__BODY_HELLO_REQ, h_hello},
    {VERITY__ENVELOPE__BODY_METADATA_REQ, h_metadata},
    {VERITY__ENVELOPE__BODY_CREATE_TOPIC_REQ, h_create_topic},
    {VERITY__ENVELOPE__BODY_DELETE_TOPIC_REQ, h_delete_topic},
    {VERITY__ENVELOPE__BODY_LIST_TOPICS_REQ, h_list_topics},
    {VERITY__ENVELOPE__BODY_DESCRIBE_TOPIC_REQ, h_describe_topic},
    {VERITY__ENVELOPE__BODY_INIT_PRODUCER_REQ, h_init_producer},
    {VERITY__ENVELOPE__BODY_PRODUCE_REQ, h_produce},
    {VERITY__ENVELOPE__BODY_FETCH_REQ, h_fetch},
    {VERITY__ENVELOPE__BODY_LIST_OFFSETS_REQ, h_list_offsets},
    {VERITY__ENVELOPE__BODY_CREATE_GROUP_REQ, h_create_group},
    {VERITY__ENVELOPE__BODY_DELETE_GROUP_REQ, h_delete_group},
    {VERITY__ENVELOPE__BODY_LIST_GROUPS_REQ, h_list_groups},
    {VERITY__ENVELOPE__BODY_DESCRIBE_GROUP_REQ, h_describe_group},
    {VERITY__ENVELOPE__BODY_GROUP_PENDING_REQ, h_group_pending},
    {VERITY__ENVELOPE__BODY_RESET_GROUP_REQ, h_reset_group},
    {VERITY__ENVELOPE__BODY_JOIN_GROUP_REQ, h_join_group},
    {VERITY__ENVELOPE__BODY_HEARTBEAT_REQ, h_heartbeat},
    {VERITY__ENVELOPE__BODY_LEAVE_GROUP_REQ, h_leave_group},
    {VERITY__ENVELOPE__BODY_GROUP_FETCH_REQ, h_group_fetch},
    {VERITY__ENVELOPE__BODY_ACK_REQ, h_ack},
    {VERITY__ENVELOPE__BODY_NACK_REQ, h_nack},
    {VERITY__ENVELOPE__BODY_EXTEND_REQ, h_extend},
    {VERITY__ENVELOPE__BODY_TERM_REQ, h_term},
    {VERITY__ENVELOPE__BODY_AUTHENTICATE_REQ, h_authenticate},
};

static void conn_read_cb(struct bufferevent *bev, void *arg);
static void conn_write_cb(struct bufferevent *bev, void *arg);
static void conn_kill(struct conn *c, const char *why);
static void conn_close_after_flush(struct conn *c, int err, const char *msg);
static void conn_unref(struct conn *c);

/* ---- per-address connection counts ----------------------------------------- */

struct addr_slot {
    char addr[48];
    uint32_t n; /* open connections from addr (> 0 while the slot exists) */
    struct addr_slot *next;
};

static uint32_t addr_hash(const char *a)
{
    uint32_t h = 2166136261u; /* FNV-1a */
    for (; *a; a++)
        h = (h ^ (uint8_t)*a) * 16777619u;
    return h % ADDR_BUCKETS;
}

static struct addr_slot **addr_find(struct broker *b, const char *addr)
{
    struct addr_slot **pp = &b->addr_buckets[addr_hash(addr)];
    while (*pp && strcmp((*pp)->addr, addr) != 0)
        pp = &(*pp)->next;
    return pp;
}

static uint32_t addr_count(struct broker *b, const char *addr)
{
    struct addr_slot **pp = addr_find(b, addr);
    return *pp ? (*pp)->n : 0;
}

/* 0 or -ENOMEM. */
static int addr_inc(struct broker *b, const char *addr)
{
    struct addr_slot **pp = addr_find(b, addr);
    if (!*pp) {
        struct addr_slot *s = calloc(1, sizeof *s);
        if (!s)
            return -ENOMEM;
        snprintf(s->addr, sizeof s->addr, "%s", addr);
        *pp = s;
    }
    (*pp)->n++;
    return 0;
}

static void addr_dec(struct broker *b, const char *addr)
{
    struct addr_slot **pp = addr_find(b, addr);
    VERITY_VERIFY(*pp && (*pp)->n > 0);
    if (--(*pp)->n == 0) {
        struct addr_slot *s = *pp;
        *pp = s->next;
        free(s);
    }
}

/* ---- the buffered-bytes budget ---------------------------------------------- */

/* Whether a frame of total bytes fits now. Large frames leave the last
 * eighth to small ones and queue behind connections already waiting. */
static bool budget_fits(const struct broker *b, uint64_t total, bool queued)
{
    uint64_t limit = b->cfg.buffer_bytes_max;
    if (total > SMALL_FRAME_BYTES) {
        limit -= limit / 8;
        if (queued)
            return false;
    }
    return b->buf_used + total <= limit;
}

static void budget_take(struct broker *b, uint64_t n)
{
    b->buf_used += n;
    if (b->buf_used > b->buf_peak)
        b->buf_peak = b->buf_used;
}

static void budget_release(struct broker *b, uint64_t n)
{
    VERITY_VERIFY(b->buf_used >= n);
    b->buf_used -= n;
    if (n && !TAILQ_EMPTY(&b->starved) && b->resume_ev)
        event_active(b->resume_ev, EV_TIMEOUT, 0);
}

/* Stops the frame clock (the broker, not the peer, is holding the frame up). */
static void frame_clock_stop(struct conn *c)
{
    if (c->frame_ev)
        evtimer_del(c->frame_ev);
}

static void frame_timeout_cb(evutil_socket_t fd, short what, void *arg)
{
    struct conn *c = arg;
    (void)fd;
    (void)what;
    if (c->dead || c->closing)
        return;
    if (c->tls && !c->tls_up) {
        conn_tls_failed(c->b, "client", c->peer, "handshake not complete within frame_timeout_ms");
        conn_kill(c, "tls_handshake_timeout");
        return;
    }
    char msg[128];
    snprintf(msg, sizeof msg, "frame not complete within frame_timeout_ms (%" PRIu32 " ms)",
             c->b->cfg.frame_timeout_ms);
    c->b->met.frames_timed_out++;
    conn_close_after_flush(c, VERITY_ETIMEOUT, msg);
}

static void frame_clock_start(struct conn *c)
{
    struct broker *b = c->b;
    if (!b->cfg.frame_timeout_ms)
        return;
    if (!c->frame_ev && !(c->frame_ev = evtimer_new(b->base, frame_timeout_cb, c)))
        return; /* without memory for a timer the idle timeout still applies */
    struct timeval tv = {b->cfg.frame_timeout_ms / 1000, (b->cfg.frame_timeout_ms % 1000) * 1000};
    evtimer_add(c->frame_ev, &tv);
}

/* The frame being received ended (complete, or the connection closes). */
static void frame_done(struct conn *c)
{
    c->frame_open = false;
    frame_clock_stop(c);
}

static void conn_unstarve(struct conn *c)
{
    if (c->starved) {
        TAILQ_REMOVE(&c->b->starved, c, starve_link);
        c->starved = false;
    }
}

/* Gives back what the connection holds for its frame being received. */
static void conn_unreserve(struct conn *c)
{
    conn_unstarve(c);
    frame_done(c);
    uint64_t n = c->reserved;
    c->reserved = 0;
    budget_release(c->b, n);
}

/* True while resume_cb runs the read callback of the connection first in
 * line: it may take the budget although others still wait behind it. */
static bool resuming;

/* Resumes waiting connections, oldest first, while their frames fit. */
static void resume_cb(evutil_socket_t fd, short what, void *arg)
{
    struct broker *b = arg;
    (void)fd;
    (void)what;
    struct conn *c;
    while ((c = TAILQ_FIRST(&b->starved)) != NULL) {
        conn_unstarve(c);
        if (!c->paused)
            bufferevent_enable(c->bev, EV_READ);
        c->refs++;
        resuming = true;
        conn_read_cb(c->bev, c);
        resuming = false;
        bool again = c->starved;
        conn_unref(c);
        if (again)
            break; /* still does not fit: it stays first in line */
    }
}

/* ---- connection lifetime --------------------------------------------------- */

static void conn_unref(struct conn *c)
{
    VERITY_VERIFY(c->refs > 0);
    if (--c->refs == 0 && c->dead)
        free(c);
}

static void conn_kill(struct conn *c, const char *why)
{
    if (c->dead)
        return;
    struct broker *b = c->b;
    blog(BLOG_DEBUG, "conn_closed", "conn=%" PRIu64 " peer=%s reason=%s inflight=%" PRIu32, c->id,
         c->peer, why, c->inflight);
    c->dead = true;
    conn_unreserve(c);
    auth_conn_close(c); /* issue 14 */
    if (c->frame_ev)
        event_free(c->frame_ev);
    c->frame_ev = NULL;
    if (c->flush_ev)
        event_free(c->flush_ev);
    c->flush_ev = NULL;
    addr_dec(b, c->addr);
    if (c->bev)
        bufferevent_free(c->bev);
    c->bev = NULL;
    if (c->linger_ev)
        event_free(c->linger_ev);
    c->linger_ev = NULL;
    TAILQ_REMOVE(&b->conns, c, link);
    b->n_conns--;
    /* Fetches only wait; stop them. Produces finish (their batches are in
     * the log) and drop their answers. */
    struct req *r, *next;
    c->refs++;
    for (r = TAILQ_FIRST(&c->reqs); r; r = next) {
        next = TAILQ_NEXT(r, link);
        if (r->cancel)
            r->cancel(r);
    }
    conn_unref(c);
}

static void linger_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    conn_kill(arg, "linger_timeout");
}

static void conn_write_cb(struct bufferevent *bev, void *arg)
{
    struct conn *c = arg;
    struct evbuffer *out = bufferevent_get_output(bev);
    if (c->closing) {
        if (evbuffer_get_length(out) == 0 && c->eof) {
            conn_kill(c, "eof");
            return;
        }
        if (evbuffer_get_length(out) == 0) {
            shutdown(bufferevent_getfd(bev), SHUT_WR);
            if (!c->linger_ev) {
                c->linger_ev = evtimer_new(c->b->base, linger_cb, c);
                struct timeval tv = {LINGER_MS / 1000, (LINGER_MS % 1000) * 1000};
                if (!c->linger_ev || evtimer_add(c->linger_ev, &tv))
                    conn_kill(c, "closing");
            }
        }
        return;
    }
    if (c->paused && evbuffer_get_length(out) <= c->b->cfg.write_buffer_bytes / 2) {
        c->paused = false;
        if (!c->starved)
            bufferevent_enable(bev, EV_READ);
        conn_read_cb(bev, c); /* frames may already be buffered */
    }
}

/* The flush event (loop thread): writes what the socket takes now. A write
 * error is left to the bufferevent, whose next write meets it too and
 * reports it through conn_event_cb. A paused or closing connection needs
 * conn_write_cb's low-watermark call, which only the bufferevent's own
 * write makes, so its output is left to it. */
static void conn_flush_cb(evutil_socket_t fd, short what, void *arg)
{
    struct conn *c = arg;
    (void)fd;
    (void)what;
    if (c->dead || c->closing || c->paused || !c->bev)
        return;
    struct evbuffer *out = bufferevent_get_output(c->bev);
    if (evbuffer_get_length(out) > 0)
        (void)evbuffer_write(out, bufferevent_getfd(c->bev));
}

/* Sends a request-less error frame (correlation id 0). */
static void conn_send_error(struct conn *c, int err, const char *msg)
{
    Verity__Envelope env = VERITY__ENVELOPE__INIT;
    env.version = CODEC_PROTOCOL_VERSION;
    env.error = codec_err_to_wire(err);
    env.error_message = (char *)msg;
    uint8_t *head = NULL;
    size_t len = 0;
    if (codec_encode(&env, 0, &c->b->limits, &head, &len) == 0) {
        evbuffer_add(bufferevent_get_output(c->bev), head, len);
        c->b->met.bytes_out += len;
    }
    free(head);
}

/* Answers a framing error and closes once the answer is flushed. */
static void conn_close_after_flush(struct conn *c, int err, const char *msg)
{
    /* At most FRAME_REJECT_LOG_PER_SEC lines a second (the next carries
     * suppressed=N): 2 GiB prefixes, slowloris and connections that never
     * authenticate, thousands a second, must not become as many lines. */
    struct broker *b = c->b;
    int64_t now = mono_ns();
    if (now - b->reject_log_ns >= 1000000000) {
        b->reject_log_ns = now;
        b->reject_log_n = 0;
    }
    if (b->reject_log_n < FRAME_REJECT_LOG_PER_SEC) {
        char q[300];
        b->reject_log_n++;
        blog(BLOG_WARN, "frame_rejected",
             "conn=%" PRIu64 " peer=%s error=%s reason=%s suppressed=%" PRIu64, c->id, c->peer,
             verity_errname(err), blog_q(msg, q, sizeof q), b->reject_suppressed);
        b->reject_suppressed = 0;
    } else {
        b->reject_suppressed++;
    }
    b->met.frames_rejected++;
    c->closing = true;
    conn_send_error(c, err, msg);
    evbuffer_drain(bufferevent_get_input(c->bev),
                   evbuffer_get_length(bufferevent_get_input(c->bev)));
    conn_unreserve(c);
    bufferevent_enable(c->bev, EV_READ | EV_WRITE);
    conn_write_cb(c->bev, c);
}

void conn_close_error(struct conn *c, int err, const char *msg)
{
    conn_close_after_flush(c, err, msg);
}

void conn_tls_failed(struct broker *b, const char *port, const char *peer, const char *reason)
{
    b->met.tls_handshake_failures++;
    int64_t now = mono_ns();
    if (now - b->tls_log_ns >= 1000000000) {
        b->tls_log_ns = now;
        b->tls_log_n = 0;
    }
    if (b->tls_log_n >= TLS_LOG_PER_SEC) {
        b->tls_log_suppressed++;
        return;
    }
    b->tls_log_n++;
    char q[300];
    blog(BLOG_WARN, "tls_handshake_failed", "port=%s peer=%s reason=%s suppressed=%" PRIu64, port,
         peer, blog_q(reason, q, sizeof q), b->tls_log_suppressed);
    b->tls_log_suppressed = 0;
}

static void conn_event_cb(struct bufferevent *bev, short what, void *arg)
{
    struct conn *c = arg;
    if (what & BEV_EVENT_CONNECTED) { /* TLS handshake done */
        c->tls_up = true;
        c->b->met.tls_handshakes++;
        if (!c->frame_open)
            frame_clock_stop(c);
        SSL *ssl = bufferevent_openssl_get_ssl(bev);
        if (c->auth) /* issue 14: a mapped client certificate names the principal */
            auth_conn_tls(c, ssl);
        blog(BLOG_DEBUG, "tls_established", "conn=%" PRIu64 " peer=%s version=%s cipher=%s",
             c->id, c->peer, ssl ? SSL_get_version(ssl) : "?",
             ssl ? SSL_get_cipher_name(ssl) : "?");
        return;
    }
    if (c->tls && !c->tls_up && (what & (BEV_EVENT_ERROR | BEV_EVENT_EOF))) {
        char why[256];
        conn_tls_failed(c->b, "client", c->peer, btls_bev_reason(bev, what, why, sizeof why));
        conn_kill(c, "tls_handshake_failed");
        return;
    }
    if (what & BEV_EVENT_TIMEOUT) {
        if ((what & BEV_EVENT_READING) && c->inflight > 0 && !c->closing) {
            bufferevent_enable(bev, EV_READ); /* busy, not idle */
            return;
        }
        conn_kill(c, c->closing ? "linger_timeout" : "idle_timeout");
        return;
    }
    if (what & BEV_EVENT_EOF) {
        /* A peer that half-closes still gets the answers in flight. */
        if (c->inflight > 0 && !c->closing) {
            c->eof = true;
            bufferevent_disable(bev, EV_READ);
            return;
        }
        conn_kill(c, "eof");
        return;
    }
    if (what & BEV_EVENT_ERROR)
        conn_kill(c, "socket_error");
}

/* ---- requests -------------------------------------------------------------- */

static void req_free(struct req *r)
{
    struct conn *c = r->conn;
    TAILQ_REMOVE(&c->reqs, r, link);
    VERITY_VERIFY(c->inflight > 0);
    c->inflight--;
    if (r->auth_scope) /* issue 14: the request's names back before the free */
        auth_req_release(r);
    codec_msg_free(r->msg);
    free(r->frame);
    budget_release(r->b, r->held);
    free(r);
    if (c->eof && c->inflight == 0 && !c->dead && !c->closing) {
        /* Last answer queued: close once it is flushed. */
        c->closing = true;
        conn_write_cb(c->bev, c);
    }
    conn_unref(c);
}

static void req_account(struct req *r, bool error)
{
    struct metrics *m = &r->b->met;
    int slot = met_req_slot(r->type);
    m->req_total[slot]++;
    if (error || r->failed_entry)
        m->req_errors[slot]++;
    met_hist_observe(&m->req_latency[slot], (double)(mono_ns() - r->start_ns) / 1e9);
}

/* Reads length bytes of fd at position into out's own chunks (TLS: no
 * sendfile). Closes fd. 0 or -errno. */
static int add_span_copy(struct evbuffer *out, int fd, uint64_t position, uint64_t length)
{
    int rc = 0;
    while (length > 0 && rc == 0) {
        size_t want = length < TLS_COPY_CHUNK ? (size_t)length : TLS_COPY_CHUNK;
        struct evbuffer_iovec v;
        if (evbuffer_reserve_space(out, (ev_ssize_t)want, &v, 1) < 1) {
            rc = -ENOMEM;
            break;
        }
        size_t got = 0;
        while (got < want) {
            ssize_t k = pread(fd, (char *)v.iov_base + got, want - got, (off_t)(position + got));
            if (k < 0 && errno == EINTR)
                continue;
            if (k <= 0) {
                rc = k < 0 ? -errno : -EIO; /* a span ends inside the file */
                break;
            }
            got += (size_t)k;
        }
        v.iov_len = got;
        if (evbuffer_commit_space(out, &v, 1) != 0 && rc == 0)
            rc = -ENOMEM;
        position += got;
        length -= got;
    }
    close(fd);
    return rc;
}

void req_reply(struct req *r, Verity__Envelope *env, const struct file_span *spans, size_t n)
{
    struct conn *c = r->conn;
    uint64_t payload = 0;
    for (size_t i = 0; i < n; i++)
        payload += spans[i].length;
    env->version = CODEC_PROTOCOL_VERSION;
    env->correlation_id = r->corr;
    req_account(r, env->error != VERITY__ERROR_CODE__ERR_NONE);
    if (!c->dead && !c->closing) {
        uint8_t *head = NULL;
        size_t len = 0;
        /* issue 14: names out of the tenant while encoding */
        struct auth_undo *au = c->auth ? auth_reply_scope(r, env, payload) : NULL;
        int rc = codec_encode(env, payload, &r->b->limits, &head, &len);
        auth_reply_unscope(au);
        struct evbuffer *out = bufferevent_get_output(c->bev);
        if (rc == 0) {
            evbuffer_add(out, head, len);
            for (size_t i = 0; i < n; i++) {
                int arc = c->tls ? add_span_copy(out, spans[i].fd, spans[i].position,
                                                 spans[i].length)
                                 : evbuffer_add_file(out, spans[i].fd, (ev_off_t)spans[i].position,
                                                     (ev_off_t)spans[i].length);
                if (arc != 0) {
                    /* The frame is already half out: the stream is lost. */
                    for (size_t k = i + 1; k < n; k++)
                        close(spans[k].fd);
                    free(head);
                    conn_kill(c, "sendfile_failed");
                    req_free(r);
                    return;
                }
            }
            r->b->met.bytes_out += len + payload;
            free(head);
        } else {
            for (size_t i = 0; i < n; i++)
                close(spans[i].fd);
            /* Too large an answer: say so instead. */
            Verity__Envelope e2 = VERITY__ENVELOPE__INIT;
            char msg[160];
            snprintf(msg, sizeof msg, "answer does not fit in a frame (max_frame_bytes): %s",
                     verity_errname(rc));
            e2.version = CODEC_PROTOCOL_VERSION;
            e2.correlation_id = r->corr;
            e2.error = codec_err_to_wire(rc == -ENOMEM ? rc : VERITY_ELIMIT);
            e2.error_message = msg;
            if (codec_encode(&e2, 0, &r->b->limits, &head, &len) == 0) {
                evbuffer_add(out, head, len);
                r->b->met.bytes_out += len;
            }
            free(head);
        }
        if (c->flush_ev)
            event_active(c->flush_ev, EV_WRITE, 0);
    } else {
        for (size_t i = 0; i < n; i++)
            close(spans[i].fd);
    }
    req_free(r);
}

/* node: the broker a NOT_LEADER names (0: the primary of __meta). */
static void req_fail_at(struct req *r, int err, const char *msg, uint32_t node)
{
    Verity__Envelope env = VERITY__ENVELOPE__INIT;
    env.error = codec_err_to_wire(err);
    env.error_message = (char *)(msg ? msg : verity_strerror(err));
    Verity__BrokerInfo leader = VERITY__BROKER_INFO__INIT;
    char lhost[BCFG_NODE_ADDR_MAX];
    if (err == VERITY_ENOTLEADER && cluster_broker_info(r->b, node, &leader, lhost, sizeof lhost))
        env.leader = &leader;
    if (err != VERITY_ENOTFOUND && err != VERITY_EEXIST) {
        char q[300];
        blog(BLOG_DEBUG, "request_failed", "conn=%" PRIu64 " type=%s error=%s reason=%s",
             r->conn->id, codec_body_name(r->type), verity_errname(err),
             blog_q(env.error_message, q, sizeof q));
    }
    req_reply(r, &env, NULL, 0);
}

void req_fail(struct req *r, int err, const char *msg)
{
    /* cluster: NOT_LEADER names the primary of __meta (broker/cluster.c) */
    req_fail_at(r, err, msg, 0);
}

void req_fail_leader(struct req *r, uint32_t node, const char *msg)
{
    /* A leader of 0 (none known, or the primary here is not ready) names no
     * broker: the client asks this one again after a short delay. */
    if (node == 0) {
        Verity__Envelope env = VERITY__ENVELOPE__INIT;
        env.error = codec_err_to_wire(VERITY_ENOTLEADER);
        env.error_message = (char *)msg;
        req_reply(r, &env, NULL, 0);
        return;
    }
    req_fail_at(r, VERITY_ENOTLEADER, msg, node);
}

void conn_dispatch(struct req *r)
{
    if (groups_route(r))
        return; /* a cluster: not the groups' coordinator (NOT_LEADER) */
    for (size_t i = 0; i < sizeof handlers / sizeof handlers[0]; i++) {
        if (handlers[i].type == r->type) {
            handlers[i].fn(r);
            return;
        }
    }
    req_fail(r, VERITY_EUNSUPPORTED, "request type not supported by this broker");
}

/* Takes over frame (f->total bytes) and held bytes of the budget. */
static void conn_handle_frame(struct conn *c, uint8_t *frame, const struct codec_frame *f,
                              uint64_t held)
{
    struct broker *b = c->b;
    struct codec_msg *msg = NULL;
    int rc = codec_decode(frame + CODEC_PREFIX_SIZE, f->envelope_length, &b->limits, &msg);
    if (rc) {
        free(frame);
        budget_release(b, held);
        b->met.req_total[MET_REQ_INVALID]++;
        b->met.req_errors[MET_REQ_INVALID]++;
        conn_send_error(c, rc,
                        rc == VERITY_ELIMIT ? "envelope decode exceeds its memory limit"
                                            : "envelope is not a protobuf verity.Envelope");
        return;
    }
    struct req *r = calloc(1, sizeof *r);
    if (!r) {
        codec_msg_free(msg);
        free(frame);
        budget_release(b, held);
        conn_send_error(c, -ENOMEM, "out of memory");
        return;
    }
    r->b = b;
    r->conn = c;
    r->corr = msg->env->correlation_id;
    r->type = msg->env->body_case;
    r->start_ns = mono_ns();
    r->msg = msg;
    r->frame = frame;
    r->payload = frame + CODEC_PREFIX_SIZE + f->envelope_length;
    r->payload_len = f->payload_length;
    r->held = held;
    c->refs++;
    c->inflight++;
    TAILQ_INSERT_TAIL(&c->reqs, r, link);

    char why[256];
    rc = codec_validate_request(msg->env, r->payload_len, &b->limits, why, sizeof why);
    if (rc) {
        req_fail(r, rc, why);
        return;
    }
    if (c->inflight > b->cfg.max_inflight) {
        snprintf(why, sizeof why,
                 "%" PRIu32 " requests in flight on this connection (max_inflight)",
                 b->cfg.max_inflight);
        req_fail(r, VERITY_ELIMIT, why);
        return;
    }
    if (b->stopping) {
        req_fail(r, VERITY_ECLOSED, "broker is shutting down");
        return;
    }
    if (c->auth && auth_gate(r)) /* issue 14: principal, ACLs, tenant, quotas */
        return;
    conn_dispatch(r);
}

static void conn_read_cb(struct bufferevent *bev, void *arg)
{
    struct conn *c = arg;
    struct broker *b = c->b;
    struct evbuffer *in = bufferevent_get_input(bev);
    c->refs++; /* a handler may kill the connection under us */
    while (!c->dead) {
        if (c->closing) {
            evbuffer_drain(in, evbuffer_get_length(in));
            break;
        }
        if (evbuffer_get_length(bufferevent_get_output(bev)) > b->cfg.write_buffer_bytes) {
            c->paused = true;
            bufferevent_disable(bev, EV_READ);
            frame_clock_stop(c);
            break;
        }
        size_t avail = evbuffer_get_length(in);
        uint8_t prefix[CODEC_PREFIX_SIZE];
        size_t n = avail < sizeof prefix ? avail : sizeof prefix;
        if (n == 0)
            break;
        if (!c->frame_open) {
            c->frame_open = true;
            frame_clock_start(c);
        } else if (c->frame_ev && !evtimer_pending(c->frame_ev, NULL)) {
            frame_clock_start(c); /* reading resumed after a pause: a new period */
        }
        evbuffer_copyout(in, prefix, n);
        struct codec_frame f;
        int rc = codec_frame_peek(prefix, n, &b->limits, &f);
        if (rc == 1)
            break;
        if (rc < 0) {
            char msg[160];
            if (rc == VERITY_ELIMIT)
                snprintf(msg, sizeof msg,
                         "frame of %" PRIu32 " bytes exceeds max_frame_bytes %" PRIu32
                         " (or its envelope exceeds %" PRIu32 ")",
                         (uint32_t)prefix[0] << 24 | (uint32_t)prefix[1] << 16 |
                             (uint32_t)prefix[2] << 8 | prefix[3],
                         b->limits.frame_bytes_max, b->limits.envelope_bytes_max);
            else
                snprintf(msg, sizeof msg, "malformed frame prefix");
            conn_close_after_flush(c, rc, msg);
            break;
        }
        if (!auth_frame_ok(c, f.total)) { /* issue 14 */
            char msg[120];
            snprintf(msg, sizeof msg, "frame of %" PRIu64 " bytes before authentication (max %u)",
                     (uint64_t)f.total, AUTH_PREAUTH_FRAME_BYTES);
            conn_close_after_flush(c, VERITY_EAUTH, msg);
            break;
        }
        if (!c->reserved) {
            bool first = resuming;
            resuming = false; /* only the first frame read after resuming */
            if (!budget_fits(b, f.total, !first && !TAILQ_EMPTY(&b->starved))) {
                /* Back-pressure: stop reading until answers or closes free
                 * enough of the budget (resume_cb). */
                c->starved = true;
                if (first)
                    TAILQ_INSERT_HEAD(&b->starved, c, starve_link);
                else
                    TAILQ_INSERT_TAIL(&b->starved, c, starve_link);
                bufferevent_disable(bev, EV_READ);
                frame_clock_stop(c);
                b->met.budget_waits++;
                break;
            }
            c->reserved = f.total;
            budget_take(b, f.total);
        }
        if (avail < f.total)
            break;
        uint8_t *frame = malloc(f.total);
        if (!frame) {
            conn_close_after_flush(c, -ENOMEM, "out of memory");
            break;
        }
        evbuffer_remove(in, frame, f.total);
        b->met.bytes_in += f.total;
        uint64_t held = c->reserved;
        c->reserved = 0;
        frame_done(c);
        conn_handle_frame(c, frame, &f, held);
    }
    conn_unref(c);
}

/* ---- listener --------------------------------------------------------------- */

static void accept_cb(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa, int salen,
                      void *arg)
{
    struct broker *b = arg;
    (void)l;
    char peer[64] = "?";
    if (sa->sa_family == AF_INET || sa->sa_family == AF_INET6) {
        char host[48];
        const void *addr = sa->sa_family == AF_INET
                               ? (const void *)&((struct sockaddr_in *)sa)->sin_addr
                               : (const void *)&((struct sockaddr_in6 *)sa)->sin6_addr;
        uint16_t port = ntohs(sa->sa_family == AF_INET ? ((struct sockaddr_in *)sa)->sin_port
                                                       : ((struct sockaddr_in6 *)sa)->sin6_port);
        if (evutil_inet_ntop(sa->sa_family, addr, host, sizeof host))
            snprintf(peer, sizeof peer, "%s:%u", host, port);
    }
    (void)salen;
    b->accept_backoff_ms = 0; /* accepting works again */
    char addr[48];
    snprintf(addr, sizeof addr, "%.47s", peer);
    char *colon = strrchr(addr, ':');
    if (colon)
        *colon = '\0';
    uint32_t from_addr = addr_count(b, addr);
    uint32_t reserve = b->cfg.reserved_connections < b->cfg.max_connections / 8
                           ? b->cfg.reserved_connections
                           : b->cfg.max_connections / 8;
    const char *why = b->stopping                                       ? "stopping"
                      : b->n_conns >= b->cfg.max_connections            ? "max_connections"
                      : from_addr >= b->cfg.max_connections_per_addr    ? "max_connections_per_addr"
                      : b->n_conns >= b->cfg.max_connections - reserve &&
                              from_addr > 0
                          ? "reserved_connections"
                          : NULL;
    if (why) {
        /* Best effort: a small error frame into an empty socket buffer. */
        Verity__Envelope env = VERITY__ENVELOPE__INIT;
        char msg[160];
        if (b->stopping)
            snprintf(msg, sizeof msg, "broker is shutting down");
        else if (strcmp(why, "max_connections") == 0)
            snprintf(msg, sizeof msg, "%" PRIu32 " connections open (max_connections)",
                     b->cfg.max_connections);
        else if (strcmp(why, "max_connections_per_addr") == 0)
            snprintf(msg, sizeof msg, "%" PRIu32 " connections open from %s (max_connections_per_addr)",
                     from_addr, addr);
        else
            snprintf(msg, sizeof msg,
                     "the last %" PRIu32 " connection slots are kept for addresses with none open "
                     "(reserved_connections)",
                     reserve);
        env.version = CODEC_PROTOCOL_VERSION;
        env.error = codec_err_to_wire(b->stopping ? VERITY_ECLOSED : VERITY_ELIMIT);
        env.error_message = msg;
        uint8_t *head = NULL;
        size_t len = 0;
        if (!b->tls_ctx && codec_encode(&env, 0, &b->limits, &head, &len) == 0) {
            ssize_t w = send(fd, head, len, MSG_NOSIGNAL | MSG_DONTWAIT);
            (void)w;
        }
        free(head);
        evutil_closesocket(fd);
        b->met.connections_rejected++;
        if (strcmp(why, "max_connections_per_addr") == 0 || strcmp(why, "reserved_connections") == 0)
            b->met.conn_rejected_addr++;
        /* One line per second at most: a flood of refused connects must
         * not become a flood of log lines. */
        int64_t now = mono_ns();
        if (now - b->accept_log_ns >= 1000000000) {
            blog(BLOG_WARN, "conn_rejected", "peer=%s reason=%s suppressed=%" PRIu64, peer, why,
                 b->accept_suppressed);
            b->accept_log_ns = now;
            b->accept_suppressed = 0;
        } else {
            b->accept_suppressed++;
        }
        return;
    }
    struct conn *c = calloc(1, sizeof *c);
    struct bufferevent *bev = NULL;
    if (c && b->tls_ctx) {
        SSL *ssl = SSL_new(b->tls_ctx);
        bev = ssl ? bufferevent_openssl_socket_new(b->base, fd, ssl, BUFFEREVENT_SSL_ACCEPTING,
                                                   BEV_OPT_CLOSE_ON_FREE)
                  : NULL;
        if (bev) {
            bufferevent_openssl_set_allow_dirty_shutdown(bev, 1);
            /* libevent writes at most 16 KiB per callback by default: a
             * fetch answer of megabytes took hundreds of loop passes.
             * Reads keep the default: 1 MiB reserved a chunk above
             * M_MMAP_THRESHOLD, an mmap per read, and 60 KiB measured no
             * better than 16 KiB. */
            bufferevent_set_max_single_write(bev, BTLS_SINGLE_IO_BYTES);
        }
    } else if (c) {
        bev = bufferevent_socket_new(b->base, fd, BEV_OPT_CLOSE_ON_FREE);
    }
    if (!bev || addr_inc(b, addr)) {
        if (bev)
            bufferevent_free(bev);
        else
            evutil_closesocket(fd);
        free(c);
        return;
    }
    snprintf(c->addr, sizeof c->addr, "%s", addr);
    c->tls = b->tls_ctx != NULL;
    int one = 1;
    (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    c->b = b;
    c->bev = bev;
    c->id = ++b->next_conn_id;
    snprintf(c->peer, sizeof c->peer, "%s", peer);
    TAILQ_INIT(&c->reqs);
    TAILQ_INSERT_TAIL(&b->conns, c, link);
    b->n_conns++;
    b->met.connections_total++;
    bufferevent_setcb(bev, conn_read_cb, conn_write_cb, conn_event_cb, c);
    if (!c->tls) /* NULL (no memory) only costs the early write */
        c->flush_ev = event_new(b->base, -1, 0, conn_flush_cb, c);
    /* Read at most a frame ahead; wake the writer when half drained. */
    bufferevent_setwatermark(bev, EV_READ, 0, (size_t)b->cfg.max_frame_bytes + 64 * 1024);
    bufferevent_setwatermark(bev, EV_WRITE, b->cfg.write_buffer_bytes / 2, 0);
    if (b->cfg.idle_timeout_ms) {
        struct timeval tv = {b->cfg.idle_timeout_ms / 1000, (b->cfg.idle_timeout_ms % 1000) * 1000};
        bufferevent_set_timeouts(bev, &tv, NULL);
    }
    if (b->auth && auth_conn_open(c)) { /* issue 14: the authentication deadline */
        conn_kill(c, "out_of_memory");
        return;
    }
    bufferevent_enable(bev, EV_READ | EV_WRITE);
    if (c->tls)
        frame_clock_start(c); /* the handshake has frame_timeout_ms too */
    blog(BLOG_DEBUG, "conn_opened", "conn=%" PRIu64 " peer=%s tls=%s", c->id, c->peer,
         c->tls ? "yes" : "no");
}

static void accept_retry_cb(evutil_socket_t fd, short what, void *arg)
{
    struct broker *b = arg;
    (void)fd;
    (void)what;
    if (b->listener && !b->stopping)
        evconnlistener_enable(b->listener);
}

/* accept() failed. Out of descriptors or memory: stop accepting for a
 * back-off that doubles while it keeps failing (the pending connections
 * wait in the kernel's backlog instead of spinning the loop). Logged at
 * most once a second, with how many failures were not logged. */
static void accept_error_cb(struct evconnlistener *l, void *arg)
{
    struct broker *b = arg;
    int err = EVUTIL_SOCKET_ERROR();
    b->met.accept_errors++;
    bool shortage = err == EMFILE || err == ENFILE || err == ENOBUFS || err == ENOMEM;
    if (shortage) {
        b->accept_backoff_ms = b->accept_backoff_ms ? b->accept_backoff_ms * 2
                                                    : ACCEPT_BACKOFF_MIN_MS;
        if (b->accept_backoff_ms > ACCEPT_BACKOFF_MAX_MS)
            b->accept_backoff_ms = ACCEPT_BACKOFF_MAX_MS;
        struct timeval tv = {b->accept_backoff_ms / 1000, (b->accept_backoff_ms % 1000) * 1000};
        if (b->accept_retry_ev && evtimer_add(b->accept_retry_ev, &tv) == 0)
            evconnlistener_disable(l);
    }
    int64_t now = mono_ns();
    if (now - b->accept_log_ns < 1000000000) {
        b->accept_suppressed++;
        return;
    }
    blog(BLOG_WARN, "accept_failed",
         "error=%s text=\"%s\" backoff_ms=%" PRIu32 " suppressed=%" PRIu64
         " connections=%zu fd_limit=%" PRIu64,
         verity_errname(-err), evutil_socket_error_to_string(err),
         shortage ? b->accept_backoff_ms : 0, b->accept_suppressed, b->n_conns, b->fd_limit);
    b->accept_log_ns = now;
    b->accept_suppressed = 0;
}

int conn_listen(struct broker *b)
{
    char host[BCFG_ADDR_MAX];
    uint16_t port;
    int rc = bcfg_split_hostport(b->cfg.listen, host, sizeof host, &port);
    if (rc)
        return rc;
    struct sockaddr_storage ss;
    int sslen;
    memset(&ss, 0, sizeof ss);
    struct sockaddr_in *v4 = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)&ss;
    if (strcmp(host, "localhost") == 0)
        snprintf(host, sizeof host, "127.0.0.1");
    if (evutil_inet_pton(AF_INET, host, &v4->sin_addr) == 1) {
        v4->sin_family = AF_INET;
        v4->sin_port = htons(port);
        sslen = sizeof *v4;
    } else if (evutil_inet_pton(AF_INET6, host, &v6->sin6_addr) == 1) {
        v6->sin6_family = AF_INET6;
        v6->sin6_port = htons(port);
        sslen = sizeof *v6;
    } else {
        blog(BLOG_ERROR, "listen_failed", "addr=%s error=bad_address (numeric IP expected)",
             b->cfg.listen);
        return VERITY_EINVAL;
    }
    b->listener = evconnlistener_new_bind(
        b->base, accept_cb, b, LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE | LEV_OPT_CLOSE_ON_EXEC,
        1024, (struct sockaddr *)&ss, sslen);
    if (!b->listener) {
        rc = -errno;
        blog(BLOG_ERROR, "listen_failed", "addr=%s error=%s", b->cfg.listen,
             verity_errname(rc ? rc : -EADDRINUSE));
        return rc ? rc : -EADDRINUSE;
    }
    evconnlistener_set_error_cb(b->listener, accept_error_cb);
    struct sockaddr_storage bound;
    socklen_t blen = sizeof bound;
    uint16_t bport = port;
    if (getsockname(evconnlistener_get_fd(b->listener), (struct sockaddr *)&bound, &blen) == 0)
        bport = ntohs(bound.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&bound)->sin6_port
                                                  : ((struct sockaddr_in *)&bound)->sin_port);
    snprintf(b->listen_addr, sizeof b->listen_addr, "%s:%u", host, bport);
    return 0;
}

void conn_stop_accepting(struct broker *b)
{
    if (b->listener) {
        evconnlistener_free(b->listener);
        b->listener = NULL;
    }
}

void conn_close_all(struct broker *b)
{
    while (!TAILQ_EMPTY(&b->conns))
        conn_kill(TAILQ_FIRST(&b->conns), "shutdown");
}

size_t conn_inflight_total(const struct broker *b)
{
    size_t n = 0;
    const struct conn *c;
    TAILQ_FOREACH(c, &b->conns, link)
    n += c->inflight;
    return n;
}

/* ---- guards: setup, the tick, admin HTTP connections ----------------------- */

/*
 * The admin HTTP cap. libevent 2.1's evhttp has no connection limit and no
 * hook when a connection closes, so: every connection's bufferevent is made
 * here (evhttp_set_bevcb) and kept with one extra reference; evhttp clears
 * a bufferevent's callbacks when it frees it, which the sweep notices and
 * answers by dropping the extra reference (that closes the socket). At the
 * cap the listener is paused: further connections wait in the kernel's
 * backlog and hold no descriptor of ours.
 */
struct http_guard {
    struct broker *b;
    struct evconnlistener *lev;
    struct bufferevent **bevs; /* open HTTP connections, max_http_connections */
    uint32_t n;
    bool paused;
    struct event *sweep_ev; /* 100 ms while paused */
};

static void http_guard_sweep(struct http_guard *g)
{
    for (uint32_t i = 0; i < g->n;) {
        bufferevent_data_cb rd = NULL, wr = NULL;
        bufferevent_event_cb ev = NULL;
        bufferevent_getcb(g->bevs[i], &rd, &wr, &ev, NULL);
        if (rd || wr || ev) {
            i++;
            continue;
        }
        SSL *ssl = g->b->tls_ctx ? bufferevent_openssl_get_ssl(g->bevs[i]) : NULL;
        if (ssl && SSL_is_init_finished(ssl))
            g->b->met.tls_handshakes++; /* failures were counted by http_tls_info_cb */
        bufferevent_disable(g->bevs[i], EV_READ | EV_WRITE);
        bufferevent_decref(g->bevs[i]);
        g->bevs[i] = g->bevs[--g->n];
    }
    if (g->paused && g->n < g->b->cfg.max_http_connections) {
        g->paused = false;
        evconnlistener_enable(g->lev);
    }
}

static void http_sweep_cb(evutil_socket_t fd, short what, void *arg)
{
    struct http_guard *g = arg;
    (void)fd;
    (void)what;
    http_guard_sweep(g);
    struct timeval tv = {0, 100000};
    if (g->paused)
        evtimer_add(g->sweep_ev, &tv);
}

/* Admin port handshakes: evhttp owns the bufferevent and learns of a failed
 * handshake only as a connection error (and keeps the socket until the
 * peer goes), so OpenSSL's own callback logs the failure and shuts the
 * socket down at once. A fatal error leaves its reason on the error queue
 * (a handshake that only waits for bytes leaves none). */
static int http_tls_logged_idx = -1; /* SSL ex_data: the failure was logged */

static void http_tls_info_cb(const SSL *ssl, int where, int ret)
{
    /* Only libssl's own errors: a stale entry from another library (a PEM
     * or EVP call) must not pass for a failed handshake. */
    if (!(where & SSL_CB_EXIT) || ret > 0 || ERR_GET_LIB(ERR_peek_error()) != ERR_LIB_SSL ||
        SSL_is_init_finished(ssl))
        return;
    struct broker *b = SSL_get_app_data(ssl);
    if (!b || SSL_get_ex_data(ssl, http_tls_logged_idx) /* already logged */)
        return;
    char why[256], peer[64] = "?";
    unsigned long e = ERR_peek_error();
    const char *r = ERR_reason_error_string(e);
    snprintf(why, sizeof why, "%s", r ? r : "handshake failed");
    int fd = SSL_get_fd(ssl);
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    if (fd >= 0 && getpeername(fd, (struct sockaddr *)&ss, &sl) == 0 && ss.ss_family == AF_INET) {
        char host[48];
        struct sockaddr_in *sin = (struct sockaddr_in *)&ss;
        if (evutil_inet_ntop(AF_INET, &sin->sin_addr, host, sizeof host))
            snprintf(peer, sizeof peer, "%s:%u", host, ntohs(sin->sin_port));
    }
    SSL_set_ex_data((SSL *)ssl, http_tls_logged_idx, (void *)1);
    conn_tls_failed(b, "admin", peer, why);
    if (fd >= 0)
        shutdown(fd, SHUT_RDWR);
}

static struct bufferevent *http_bev_cb(struct event_base *base, void *arg)
{
    struct http_guard *g = arg;
    http_guard_sweep(g);
    struct bufferevent *bev;
    if (g->b->tls_ctx) {
        if (http_tls_logged_idx < 0)
            http_tls_logged_idx = SSL_get_ex_new_index(0, NULL, NULL, NULL, NULL);
        SSL *ssl = SSL_new(g->b->tls_ctx);
        if (ssl) {
            SSL_set_app_data(ssl, g->b);
            SSL_set_info_callback(ssl, http_tls_info_cb);
        }
        bev = ssl ? bufferevent_openssl_socket_new(base, -1, ssl, BUFFEREVENT_SSL_ACCEPTING,
                                                   BEV_OPT_CLOSE_ON_FREE)
                  : NULL;
        if (bev)
            bufferevent_openssl_set_allow_dirty_shutdown(bev, 1);
    } else {
        bev = bufferevent_socket_new(base, -1, BEV_OPT_CLOSE_ON_FREE);
    }
    if (!bev)
        return NULL;
    if (g->n < g->b->cfg.max_http_connections) {
        bufferevent_incref(bev);
        g->bevs[g->n++] = bev;
    }
    if (g->n >= g->b->cfg.max_http_connections && !g->paused) {
        g->paused = true;
        g->b->met.http_paused++;
        evconnlistener_disable(g->lev);
        struct timeval tv = {0, 100000};
        evtimer_add(g->sweep_ev, &tv);
    }
    return bev;
}

int http_guard_install(struct broker *b, struct evhttp *http, struct evconnlistener *lev)
{
    struct http_guard *g = calloc(1, sizeof *g);
    if (!g)
        return -ENOMEM;
    g->b = b;
    g->lev = lev;
    g->bevs = calloc(b->cfg.max_http_connections, sizeof *g->bevs);
    g->sweep_ev = evtimer_new(b->base, http_sweep_cb, g);
    if (!g->bevs || !g->sweep_ev) {
        free(g->bevs);
        if (g->sweep_ev)
            event_free(g->sweep_ev);
        free(g);
        return -ENOMEM;
    }
    b->http_guard = g;
    evhttp_set_bevcb(http, http_bev_cb, g);
    return 0;
}

/* Called after evhttp_free: what is left is ours alone. */
static void http_guard_free(struct broker *b)
{
    struct http_guard *g = b->http_guard;
    if (!g)
        return;
    for (uint32_t i = 0; i < g->n; i++)
        bufferevent_decref(g->bevs[i]);
    event_free(g->sweep_ev);
    free(g->bevs);
    free(g);
    b->http_guard = NULL;
}

int conn_guards_init(struct broker *b)
{
    TAILQ_INIT(&b->starved);
    b->addr_buckets = calloc(ADDR_BUCKETS, sizeof *b->addr_buckets);
    b->resume_ev = event_new(b->base, -1, 0, resume_cb, b);
    b->accept_retry_ev = evtimer_new(b->base, accept_retry_cb, b);
    if (!b->addr_buckets || !b->resume_ev || !b->accept_retry_ev)
        return -ENOMEM;
    return 0;
}

void conn_guards_free(struct broker *b)
{
    http_guard_free(b);
    if (b->resume_ev)
        event_free(b->resume_ev);
    if (b->accept_retry_ev)
        event_free(b->accept_retry_ev);
    b->resume_ev = b->accept_retry_ev = NULL;
    for (size_t i = 0; b->addr_buckets && i < ADDR_BUCKETS; i++) {
        while (b->addr_buckets[i]) {
            struct addr_slot *s = b->addr_buckets[i];
            b->addr_buckets[i] = s->next;
            free(s);
        }
    }
    free(b->addr_buckets);
    b->addr_buckets = NULL;
}

/* Once a second: after a load has gone (the budget back under a quarter of
 * its peak), hand freed heap pages back to the system, so resident memory
 * returns near its baseline instead of staying at the peak. */
void conn_guards_tick(struct broker *b)
{
    static size_t conns_peak; /* connections open at the last peak */
    if (b->http_guard)
        http_guard_sweep(b->http_guard);
    if (b->n_conns > conns_peak)
        conns_peak = b->n_conns;
    bool bytes_gone = b->buf_peak >= TRIM_BYTES_MIN && b->buf_used < b->buf_peak / 4;
    bool conns_gone = conns_peak >= 256 && b->n_conns < conns_peak / 4;
    if (bytes_gone || conns_gone) {
        malloc_trim(0);
        b->buf_peak = b->buf_used;
        conns_peak = b->n_conns;
    }
}
