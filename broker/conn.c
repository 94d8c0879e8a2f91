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
 *   - idle_timeout_ms: a connection with nothing in flight is closed.
 *
 * Closing after an error is graceful: the error frame is flushed, the write
 * side shut down, and input discarded until the peer closes or a linger
 * timer fires, so the peer reads the error instead of a reset.
 *
 * Connection states: open -> closing (conn_close_after_flush) -> dead
 * (conn_kill); open -> dead on EOF, error or idle timeout. A dead
 * connection's struct lives until its last request lets go (refs).
 */
#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <event2/util.h>

#include "broker/blog.h"
#include "broker/broker_int.h"
#include "verity/errors.h"
#include "verity/verify.h"

#define LINGER_MS 2000

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
};

static void conn_read_cb(struct bufferevent *bev, void *arg);
static void conn_write_cb(struct bufferevent *bev, void *arg);
static void conn_kill(struct conn *c, const char *why);

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
        bufferevent_enable(bev, EV_READ);
        conn_read_cb(bev, c); /* frames may already be buffered */
    }
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
    char q[300];
    blog(BLOG_WARN, "frame_rejected", "conn=%" PRIu64 " peer=%s error=%s reason=%s", c->id, c->peer,
         verity_errname(err), blog_q(msg, q, sizeof q));
    c->b->met.frames_rejected++;
    c->closing = true;
    conn_send_error(c, err, msg);
    evbuffer_drain(bufferevent_get_input(c->bev),
                   evbuffer_get_length(bufferevent_get_input(c->bev)));
    bufferevent_enable(c->bev, EV_READ | EV_WRITE);
    conn_write_cb(c->bev, c);
}

static void conn_event_cb(struct bufferevent *bev, short what, void *arg)
{
    struct conn *c = arg;
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
    codec_msg_free(r->msg);
    free(r->frame);
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
        int rc = codec_encode(env, payload, &r->b->limits, &head, &len);
        struct evbuffer *out = bufferevent_get_output(c->bev);
        if (rc == 0) {
            evbuffer_add(out, head, len);
            for (size_t i = 0; i < n; i++) {
                if (evbuffer_add_file(out, spans[i].fd, (ev_off_t)spans[i].position,
                                      (ev_off_t)spans[i].length) != 0) {
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
    } else {
        for (size_t i = 0; i < n; i++)
            close(spans[i].fd);
    }
    req_free(r);
}

void req_fail(struct req *r, int err, const char *msg)
{
    Verity__Envelope env = VERITY__ENVELOPE__INIT;
    env.error = codec_err_to_wire(err);
    env.error_message = (char *)(msg ? msg : verity_strerror(err));
    if (err != VERITY_ENOTFOUND && err != VERITY_EEXIST) {
        char q[300];
        blog(BLOG_DEBUG, "request_failed", "conn=%" PRIu64 " type=%s error=%s reason=%s",
             r->conn->id, codec_body_name(r->type), verity_errname(err),
             blog_q(env.error_message, q, sizeof q));
    }
    req_reply(r, &env, NULL, 0);
}

static void dispatch(struct req *r)
{
    for (size_t i = 0; i < sizeof handlers / sizeof handlers[0]; i++) {
        if (handlers[i].type == r->type) {
            handlers[i].fn(r);
            return;
        }
    }
    req_fail(r, VERITY_EUNSUPPORTED, "request type not supported by this broker");
}

/* Takes over frame (f->total bytes). */
static void conn_handle_frame(struct conn *c, uint8_t *frame, const struct codec_frame *f)
{
    struct broker *b = c->b;
    struct codec_msg *msg = NULL;
    int rc = codec_decode(frame + CODEC_PREFIX_SIZE, f->envelope_length, &b->limits, &msg);
    if (rc) {
        free(frame);
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
    dispatch(r);
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
            break;
        }
        size_t avail = evbuffer_get_length(in);
        uint8_t prefix[CODEC_PREFIX_SIZE];
        size_t n = avail < sizeof prefix ? avail : sizeof prefix;
        if (n == 0)
            break;
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
        if (avail < f.total)
            break;
        uint8_t *frame = malloc(f.total);
        if (!frame) {
            conn_close_after_flush(c, -ENOMEM, "out of memory");
            break;
        }
        evbuffer_remove(in, frame, f.total);
        b->met.bytes_in += f.total;
        conn_handle_frame(c, frame, &f);
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
    if (b->n_conns >= b->cfg.max_connections || b->stopping) {
        /* Best effort: a small error frame into an empty socket buffer. */
        Verity__Envelope env = VERITY__ENVELOPE__INIT;
        char msg[128];
        if (b->stopping)
            snprintf(msg, sizeof msg, "broker is shutting down");
        else
            snprintf(msg, sizeof msg, "%" PRIu32 " connections open (max_connections)",
                     b->cfg.max_connections);
        env.version = CODEC_PROTOCOL_VERSION;
        env.error = codec_err_to_wire(b->stopping ? VERITY_ECLOSED : VERITY_ELIMIT);
        env.error_message = msg;
        uint8_t *head = NULL;
        size_t len = 0;
        if (codec_encode(&env, 0, &b->limits, &head, &len) == 0) {
            ssize_t w = send(fd, head, len, MSG_NOSIGNAL | MSG_DONTWAIT);
            (void)w;
        }
        free(head);
        evutil_closesocket(fd);
        b->met.connections_rejected++;
        blog(BLOG_WARN, "conn_rejected", "peer=%s reason=%s", peer,
             b->stopping ? "stopping" : "max_connections");
        return;
    }
    struct conn *c = calloc(1, sizeof *c);
    struct bufferevent *bev = c ? bufferevent_socket_new(b->base, fd, BEV_OPT_CLOSE_ON_FREE) : NULL;
    if (!bev) {
        free(c);
        evutil_closesocket(fd);
        return;
    }
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
    /* Read at most a frame ahead; wake the writer when half drained. */
    bufferevent_setwatermark(bev, EV_READ, 0, (size_t)b->cfg.max_frame_bytes + 64 * 1024);
    bufferevent_setwatermark(bev, EV_WRITE, b->cfg.write_buffer_bytes / 2, 0);
    if (b->cfg.idle_timeout_ms) {
        struct timeval tv = {b->cfg.idle_timeout_ms / 1000, (b->cfg.idle_timeout_ms % 1000) * 1000};
        bufferevent_set_timeouts(bev, &tv, NULL);
    }
    bufferevent_enable(bev, EV_READ | EV_WRITE);
    blog(BLOG_DEBUG, "conn_opened", "conn=%" PRIu64 " peer=%s", c->id, c->peer);
}

static void accept_error_cb(struct evconnlistener *l, void *arg)
{
    (void)l;
    (void)arg;
    int err = EVUTIL_SOCKET_ERROR();
    blog(BLOG_WARN, "accept_failed", "error=%s", evutil_socket_error_to_string(err));
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
