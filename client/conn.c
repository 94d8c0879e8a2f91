/*
 * conn: one connection from a libverity handle to a broker, driven by the
 * handle's I/O thread. Frames go through proto/codec.h (the only frame codec
 * in the project); this file adds connection management.
 *
 * States (function performing the transition):
 *
 *   IDLE --conn_start--> CONNECTING --connected: send Hello--> HELLO
 *   HELLO --hello answered (hello_done)--> READY
 *   CONNECTING/HELLO/READY --error, EOF, timeout (conn_fail)--> BACKOFF
 *   BACKOFF --timer (try_connect)--> CONNECTING
 *   any --conn_free--> (gone)
 *
 * Requests: each gets a correlation id (never 0: the broker uses 0 for
 * connection-level errors). Until the connection is READY, or while the
 * broker's max_inflight requests are out, a request waits in `waiting`
 * with its encoded frame; written requests sit in `inflight` until their
 * answer, matched by correlation id (answers may come in any order). When
 * the connection drops, requests flagged CONN_RETRY_ON_RESET go back to the
 * front of `waiting` (same frame; at most CONN_RESENDS_MAX times, so a
 * request the broker never answers cannot loop), the others fail with the
 * error.
 *
 * Bootstrap list and primaries (issue 10). cfg.broker may name several
 * brokers, "a:p,b:q,c:r": a connection attempt that fails moves on to the
 * next address at once (the backoff grows only after a whole round). An
 * answer with the request-level error ERR_NOT_LEADER names the primary in
 * Envelope.leader: the connection moves there and the request is sent again
 * (ERR_NOT_LEADER means the broker did not execute it). Without a known
 * primary (a view change in progress) the request is sent again after
 * FOLLOW_DELAY_MS on the same connection. Both at most CONN_FOLLOWS_MAX times
 * per request. Produce and Fetch carry NOT_LEADER per partition instead and
 * are routed by their handles.
 *
 * Writes (issue 16): pump() makes the flush event active, and that event,
 * run in the same loop pass once the callbacks already active are done (so
 * the requests of one pass leave in one write), writes the output buffer to
 * the socket at once instead of waiting for the bufferevent's write event
 * (an epoll_ctl and one more epoll_wait). What the socket does not take, and
 * TLS connections, stay with the bufferevent.
 *
 * Direct writes (issue 16). An application thread may write a request
 * itself instead of handing it to the I/O thread (conn_direct_begin /
 * conn_direct_send / conn_direct_end; the producer uses them): only on a
 * plaintext connection that is READY, with nothing waiting, room in flight,
 * and nothing queued for the socket anywhere (`out_busy` false: the
 * bufferevent's output is empty, so libevent is not writing and will not
 * write until the I/O thread queues more). `mu` (recursive) guards the
 * connection's state: the I/O thread holds it in every callback and entry
 * point of this file, an application thread only takes it with trylock and
 * never blocks while it holds it, so no lock order can deadlock; only
 * connections set up with conn_allow_direct (the producer's first) lock at
 * all, so two connections' locks are never nested. The request
 * joins `inflight` before its bytes are sent (its answer may come at once).
 * What the socket does not take goes to `pend`, which the I/O thread's
 * flush event moves to the bufferevent; a send error is left to the I/O
 * thread too (`direct_err`: it fails the connection, and every request in
 * flight is resent or failed as on any drop). The bufferevent is never
 * touched from another thread.
 *
 * Deadlines: a waiting request fails after request_timeout_ms from its
 * submission (with the last connection error, e.g. -ECONNREFUSED, when
 * there was one); a written request unanswered for request_timeout_ms plus
 * its extra time means the connection is broken (-ETIMEDOUT). A 100 ms tick
 * checks both.
 */
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <pthread.h>

#include "client/client_int.h"
#include "verity/limits.h"
#include "verity/verify.h"

#define TICK_MS 100
#define CONN_RESENDS_MAX 3 /* a request that broke three connections fails */
#define CONN_FOLLOWS_MAX 64 /* NOT_LEADER answers followed per request */
#define FOLLOW_DELAY_MS 100 /* resend after a NOT_LEADER that names no primary */
#define ADDRS_MAX 32        /* bootstrap list plus primaries learnt */

enum conn_state { CS_IDLE, CS_CONNECTING, CS_HELLO, CS_READY, CS_BACKOFF };

struct creq {
    struct creq *next;
    struct creq *prev;
    uint64_t corr;
    Verity__Envelope__BodyCase expect; /* the response body that answers it */
    uint8_t *frame;                    /* whole encoded frame while it may be (re)sent */
    size_t frame_len;
    int64_t deadline_ms;               /* waiting: give up; in flight: connection broken */
    uint32_t extra_ms;
    unsigned flags;
    uint32_t resends;                  /* times put back after a drop */
    uint32_t follows;                  /* NOT_LEADER answers followed */
    int64_t not_before_ms;             /* waiting: do not write before (0: now) */
    conn_resp_fn fn;
    void *arg;
};

struct creq_list {
    struct creq *head;
    struct creq *tail;
    uint32_t n;
};

struct conn {
    struct event_base *base;
    struct verity_conn_config cfg;     /* strings point to the copies below */
    char *broker;                      /* cfg.broker as given (may be a list) */
    char *addrs[ADDRS_MAX];            /* "host:port" each; addrs[cur] is the target */
    size_t n_addrs;
    size_t cur;
    size_t round_start;                /* cur when the current round of attempts began */
    char *client_id;
    const struct conn_events *ev;
    void *arg;
    enum conn_state state;
    struct bufferevent *bev;
    struct event *retry_ev;            /* reconnect after backoff */
    struct event *tick_ev;             /* deadlines, every TICK_MS */
    struct event *flush_ev;            /* writes before the loop sleeps (issue 16) */
    int64_t connect_deadline_ms;
    int backoff_ms;
    struct creq_list waiting;
    struct creq_list inflight;
    uint64_t next_corr;
    uint64_t hello_corr;
    uint64_t auth_corr;                /* Authenticate sent with Hello (0: no api_key) */
    bool hello_ok;                     /* Hello answered; waiting for Authenticate */
    char *api_key;
    int last_err;
    struct codec_limits lim;
    uint32_t max_inflight;             /* from Hello */
    uint32_t max_batch_bytes;          /* from Hello (0 before) */
    SSL_CTX *tls_ctx;                  /* NULL: plaintext */
    char *tls_name;                    /* name or IP the broker's certificate must carry */
    bool tls_name_auto;                /* tls_name follows the target's host */
    bool rotating;                     /* the last failure moved on to the next address */
    /* issue 16: direct writes from application threads (see the top) */
    pthread_mutex_t mu;                /* recursive; guards the connection's state */
    bool mu_ok;
    bool direct_ok;                    /* conn_allow_direct: mu is used */
    evutil_socket_t fd;                /* the plaintext socket once connected, else -1 */
    bool out_busy;                     /* bytes queued in the bufferevent or in pend */
    struct evbuffer *pend;             /* a direct write's rest, for the I/O thread */
    int direct_err;                    /* errno of a failed direct send (0: none) */
};

/* Only a connection that allows direct writes locks: the others are the
 * loop thread's alone, and a handler of one connection may call into
 * another (a consumer's first connection starts its brokers' ones), which
 * would order their locks both ways. */
static void lock(struct conn *c)
{
    if (c->direct_ok)
        pthread_mutex_lock(&c->mu);
}

static void unlock(struct conn *c)
{
    if (c->direct_ok)
        pthread_mutex_unlock(&c->mu);
}

/* ---- TLS ------------------------------------------------------------------- */

/* The reason of the last failed TLS handshake in this process, for
 * verity_client_connect's message (conn_tls_reason). */
static pthread_mutex_t tls_reason_mu = PTHREAD_MUTEX_INITIALIZER;
static char tls_reason[256];

static void tls_reason_set(const char *fmt, const char *a, const char *b)
{
    pthread_mutex_lock(&tls_reason_mu);
    snprintf(tls_reason, sizeof tls_reason, fmt, a, b);
    pthread_mutex_unlock(&tls_reason_mu);
}

void conn_tls_reason(char *buf, size_t cap)
{
    pthread_mutex_lock(&tls_reason_mu);
    snprintf(buf, cap, "%s", tls_reason);
    pthread_mutex_unlock(&tls_reason_mu);
}

static const char *ossl_reason(unsigned long e)
{
    static _Thread_local char buf[160];
    const char *r = e ? ERR_reason_error_string(e) : NULL;
    if (r)
        return r;
    if (!e)
        return "handshake failed";
    ERR_error_string_n(e, buf, sizeof buf);
    return buf;
}

/* A client context from cfg: TLS 1.2 minimum, no compression or
 * renegotiation, the broker's certificate checked against tls_ca (or the
 * system's CAs). NULL with the reason recorded when a file fails. */
static SSL_CTX *tls_ctx_new(const struct verity_conn_config *cfg)
{
    ERR_clear_error();
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    const char *what = "SSL_CTX_new", *path = "";
    if (!ctx)
        goto fail;
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    what = "tls_ca";
    path = cfg->tls_ca ? cfg->tls_ca : "(system CAs)";
    if (cfg->tls_ca ? SSL_CTX_load_verify_locations(ctx, cfg->tls_ca, NULL) != 1
                    : SSL_CTX_set_default_verify_paths(ctx) != 1)
        goto fail;
    if (cfg->tls_cert || cfg->tls_key) {
        what = "tls_cert and tls_key go together";
        path = cfg->tls_cert ? cfg->tls_cert : cfg->tls_key;
        if (!cfg->tls_cert || !cfg->tls_key)
            goto fail;
        what = "tls_cert";
        path = cfg->tls_cert;
        if (SSL_CTX_use_certificate_chain_file(ctx, cfg->tls_cert) != 1)
            goto fail;
        what = "tls_key";
        path = cfg->tls_key;
        if (SSL_CTX_use_PrivateKey_file(ctx, cfg->tls_key, SSL_FILETYPE_PEM) != 1 ||
            SSL_CTX_check_private_key(ctx) != 1)
            goto fail;
    }
    return ctx;
fail:
    {
        unsigned long e = ERR_get_error();
        ERR_clear_error();
        pthread_mutex_lock(&tls_reason_mu);
        snprintf(tls_reason, sizeof tls_reason, "%.80s %.120s: %.40s", what, path,
                 e ? ossl_reason(e) : "missing");
        pthread_mutex_unlock(&tls_reason_mu);
    }
    SSL_CTX_free(ctx);
    return NULL;
}

/* The SSL for one connection attempt; NULL on failure. */
static SSL *tls_ssl_new(struct conn *c)
{
    SSL *ssl = SSL_new(c->tls_ctx);
    if (!ssl)
        return NULL;
    unsigned char ip[16];
    bool is_ip = inet_pton(AF_INET, c->tls_name, ip) == 1 || inet_pton(AF_INET6, c->tls_name, ip) == 1;
    if (is_ip) {
        if (X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), c->tls_name) != 1)
            goto fail;
    } else {
        if (SSL_set1_host(ssl, c->tls_name) != 1 || SSL_set_tlsext_host_name(ssl, c->tls_name) != 1)
            goto fail;
    }
    return ssl;
fail:
    SSL_free(ssl);
    return NULL;
}

/* ---- request lists ------------------------------------------------------- */

static void list_push_back(struct creq_list *l, struct creq *r)
{
    r->next = NULL;
    r->prev = l->tail;
    if (l->tail)
        l->tail->next = r;
    else
        l->head = r;
    l->tail = r;
    l->n++;
}

static void list_push_front(struct creq_list *l, struct creq *r)
{
    r->prev = NULL;
    r->next = l->head;
    if (l->head)
        l->head->prev = r;
    else
        l->tail = r;
    l->head = r;
    l->n++;
}

static void list_remove(struct creq_list *l, struct creq *r)
{
    if (r->prev)
        r->prev->next = r->next;
    else
        l->head = r->next;
    if (r->next)
        r->next->prev = r->prev;
    else
        l->tail = r->prev;
    r->next = r->prev = NULL;
    VERITY_VERIFY(l->n > 0);
    l->n--;
}

static void creq_free(struct creq *r)
{
    free(r->frame);
    free(r);
}

static void creq_fail(struct creq *r, int err, const char *msg)
{
    r->fn(r->arg, err, msg ? msg : verity_strerror(err), NULL, NULL, 0);
    creq_free(r);
}

/* ---- connection ---------------------------------------------------------- */

static void try_connect(struct conn *c);
static void pump(struct conn *c);

static void schedule_retry(struct conn *c, bool quick)
{
    int ms = quick ? 0 : c->backoff_ms;
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    evtimer_add(c->retry_ev, &tv);
    if (quick)
        return;
    c->backoff_ms *= 2;
    if (c->backoff_ms > c->cfg.reconnect_backoff_max_ms)
        c->backoff_ms = c->cfg.reconnect_backoff_max_ms;
}

/* Moves the target to the next address after a failed attempt. Returns true
 * when the next one should be tried at once (the round is not over). */
static bool addr_advance(struct conn *c)
{
    if (c->n_addrs < 2)
        return false;
    c->cur = (c->cur + 1) % c->n_addrs;
    if (c->cur == c->round_start)
        return false;
    return true;
}

/* Makes addr (a "host:port") the target, adding it to the list when new
 * (the last entry is replaced when the list is full). Returns 0 or -ENOMEM. */
static int addr_target(struct conn *c, const char *addr)
{
    for (size_t i = 0; i < c->n_addrs; i++) {
        if (strcmp(c->addrs[i], addr) == 0) {
            c->cur = c->round_start = i;
            return 0;
        }
    }
    char *d = strdup(addr);
    if (!d)
        return -ENOMEM;
    if (c->n_addrs == ADDRS_MAX)
        free(c->addrs[--c->n_addrs]);
    c->addrs[c->n_addrs] = d;
    c->cur = c->round_start = c->n_addrs++;
    return 0;
}

static void conn_fail_how(struct conn *c, int err, bool quick);

static void conn_fail(struct conn *c, int err)
{
    conn_fail_how(c, err, false);
}

/* quick: reconnect at once (the target just changed). */
static void conn_fail_how(struct conn *c, int err, bool quick)
{
    if (c->state == CS_BACKOFF || c->state == CS_IDLE)
        return;
    bool attempt = c->state != CS_READY;
    if (c->bev) {
        bufferevent_free(c->bev);
        c->bev = NULL;
    }
    c->fd = -1;
    c->out_busy = false;
    c->direct_err = 0;
    (void)evbuffer_drain(c->pend, evbuffer_get_length(c->pend));
    c->state = CS_BACKOFF;
    c->last_err = err;
    /* Retried requests go back to the front of `waiting`, in their order. */
    struct creq_list failed = {0};
    while (c->inflight.tail) {
        struct creq *r = c->inflight.tail;
        list_remove(&c->inflight, r);
        /* A move to the primary a NOT_LEADER named (quick, err
         * ENOTLEADER) is not a broken connection: a request safe to resend
         * that was in flight beside the one answered NOT_LEADER follows it
         * (counted as a follow). Before, each move used up one of its three
         * resends, and a group member's acks failed with ENOTLEADER after
         * a few coordinator changes (tests/cluster/groups_e2e.py). */
        if (err == VERITY_ENOTLEADER && quick && (r->flags & CONN_RETRY_ON_RESET) &&
            (r->flags & CONN_FOLLOW_LEADER) && r->frame && r->follows < CONN_FOLLOWS_MAX) {
            r->follows++;
            r->deadline_ms = cl_mono_ms() + c->cfg.request_timeout_ms;
            list_push_front(&c->waiting, r);
        } else if ((r->flags & CONN_RETRY_ON_RESET) && r->frame && r->resends < CONN_RESENDS_MAX) {
            r->resends++;
            r->deadline_ms = cl_mono_ms() + c->cfg.request_timeout_ms;
            list_push_front(&c->waiting, r);
        } else {
            list_push_front(&failed, r);
        }
    }
    c->rotating = false;
    if (attempt && !quick)
        quick = c->rotating = addr_advance(c);
    else if (!attempt)
        c->round_start = c->cur;
    schedule_retry(c, quick);
    while (failed.head) {
        struct creq *r = failed.head;
        list_remove(&failed, r);
        creq_fail(r, err, NULL);
    }
    if (c->ev->on_down)
        c->ev->on_down(c->arg, err);
}

void conn_reset(struct conn *c, int err)
{
    lock(c);
    conn_fail(c, err);
    unlock(c);
}

static void retry_cb(evutil_socket_t fd, short what, void *arg)
{
    struct conn *c = arg;
    (void)fd;
    (void)what;
    lock(c);
    try_connect(c);
    unlock(c);
}

/* Splits "host:port" or "[v6]:port". Returns 0 or VERITY_EINVAL. */
static int split_addr(const char *s, char *host, size_t host_cap, char *port, size_t port_cap)
{
    const char *colon;
    const char *h = s;
    size_t hlen;
    if (s[0] == '[') {
        const char *end = strchr(s, ']');
        if (!end || end[1] != ':')
            return VERITY_EINVAL;
        h = s + 1;
        hlen = (size_t)(end - h);
        colon = end + 1;
    } else {
        colon = strrchr(s, ':');
        if (!colon)
            return VERITY_EINVAL;
        hlen = (size_t)(colon - s);
    }
    size_t plen = strlen(colon + 1);
    if (hlen == 0 || hlen >= host_cap || plen == 0 || plen >= port_cap)
        return VERITY_EINVAL;
    for (size_t i = 0; i < plen; i++)
        if (colon[1 + i] < '0' || colon[1 + i] > '9')
            return VERITY_EINVAL;
    memcpy(host, h, hlen);
    host[hlen] = '\0';
    memcpy(port, colon + 1, plen + 1);
    return 0;
}

static void hello_ready(struct conn *c);

static void send_hello(struct conn *c)
{
    Verity__Envelope env = VERITY__ENVELOPE__INIT;
    Verity__HelloRequest hello = VERITY__HELLO_REQUEST__INIT;
    hello.version_min = CODEC_PROTOCOL_VERSION;
    hello.version_max = CODEC_PROTOCOL_VERSION;
    hello.client_id = c->client_id;
    hello.software = "libverity 0.1";
    env.version = CODEC_PROTOCOL_VERSION;
    env.correlation_id = c->hello_corr = c->next_corr++;
    env.body_case = VERITY__ENVELOPE__BODY_HELLO_REQ;
    env.hello_req = &hello;
    uint8_t *head = NULL;
    size_t head_len = 0;
    int rc = codec_encode(&env, 0, &c->lim, &head, &head_len);
    if (rc == 0 && evbuffer_add(bufferevent_get_output(c->bev), head, head_len) != 0)
        rc = -ENOMEM;
    free(head);
    c->out_busy = true;
    c->auth_corr = 0;
    c->hello_ok = false;
    if (rc == 0 && c->api_key) { /* issue 14: Authenticate right behind Hello */
        Verity__Envelope ae = VERITY__ENVELOPE__INIT;
        Verity__AuthenticateRequest ar = VERITY__AUTHENTICATE_REQUEST__INIT;
        ar.api_key = c->api_key;
        ae.version = CODEC_PROTOCOL_VERSION;
        ae.correlation_id = c->auth_corr = c->next_corr++;
        ae.body_case = VERITY__ENVELOPE__BODY_AUTHENTICATE_REQ;
        ae.authenticate_req = &ar;
        head = NULL;
        rc = codec_encode(&ae, 0, &c->lim, &head, &head_len);
        if (rc == 0 && evbuffer_add(bufferevent_get_output(c->bev), head, head_len) != 0)
            rc = -ENOMEM;
        free(head);
    }
    if (rc)
        conn_fail(c, rc);
}

/* The answer to Authenticate: a refused key fails every request waiting
 * (retrying cannot help). */
static void auth_done(struct conn *c, const Verity__Envelope *env)
{
    int err = codec_err_from_wire(env->error);
    if (err == 0 && env->body_case != VERITY__ENVELOPE__BODY_AUTHENTICATE_RESP)
        err = VERITY_EPROTO;
    c->auth_corr = 0;
    if (err) {
        conn_fail(c, err);
        while (c->waiting.head) {
            struct creq *r = c->waiting.head;
            list_remove(&c->waiting, r);
            creq_fail(r, err, env->error_message && env->error_message[0] ? env->error_message
                                                                          : NULL);
        }
        return;
    }
    if (c->hello_ok)
        hello_ready(c);
}

static void hello_done(struct conn *c, const Verity__Envelope *env)
{
    int err = codec_err_from_wire(env->error);
    if (err == 0 && env->body_case != VERITY__ENVELOPE__BODY_HELLO_RESP)
        err = VERITY_EPROTO;
    if (err) {
        conn_fail(c, err);
        return;
    }
    const Verity__HelloResponse *h = env->hello_resp;
    if (h->version != CODEC_PROTOCOL_VERSION) {
        conn_fail(c, VERITY_EVERSION);
        return;
    }
    c->max_inflight = h->max_inflight ? h->max_inflight : VERITY_INFLIGHT_MAX;
    c->max_batch_bytes = h->max_batch_bytes;
    c->hello_ok = true;
    if (c->auth_corr == 0)
        hello_ready(c);
}

static void hello_ready(struct conn *c)
{
    c->state = CS_READY;
    c->last_err = 0;
    c->backoff_ms = c->cfg.reconnect_backoff_ms;
    pump(c);
    if (c->state == CS_READY && c->ev->on_ready)
        c->ev->on_ready(c->arg);
}

/* "host:port" of a BrokerInfo into buf (IPv6 in brackets). False when it
 * names no address. */
bool conn_broker_addr(const Verity__BrokerInfo *b, char *buf, size_t cap)
{
    if (!b || !b->host || !b->host[0] || b->port == 0 || b->port > 65535)
        return false;
    int n = snprintf(buf, cap, strchr(b->host, ':') ? "[%s]:%u" : "%s:%u", b->host,
                     (unsigned)b->port);
    return n > 0 && (size_t)n < cap;
}

/* A request-level ERR_NOT_LEADER for r (already off the in-flight list).
 * Returns true when r was queued again (and the connection may have moved
 * to the primary), false when the caller reports the error. */
static bool follow_leader(struct conn *c, struct creq *r, const Verity__Envelope *env)
{
    char addr[300];
    bool named = conn_broker_addr(env->leader, addr, sizeof addr);
    bool moved = named && strcmp(addr, c->addrs[c->cur]) != 0;
    if (moved && addr_target(c, addr) != 0)
        moved = false;
    bool again = r->frame && r->follows < CONN_FOLLOWS_MAX;
    if (again) {
        r->follows++;
        r->not_before_ms = moved ? 0 : cl_mono_ms() + FOLLOW_DELAY_MS;
        r->deadline_ms = cl_mono_ms() + c->cfg.request_timeout_ms;
        list_push_front(&c->waiting, r);
    }
    if (moved)
        conn_fail_how(c, VERITY_ENOTLEADER, true);
    return again;
}

static void dispatch(struct conn *c, struct codec_msg *msg, uint8_t **payload, size_t payload_len)
{
    char why[CL_ERRMSG_MAX];
    const Verity__Envelope *env = msg->env;
    int rc = codec_validate_response(env, payload_len, &c->lim, why, sizeof why);
    if (rc) {
        conn_fail(c, rc);
        return;
    }
    if (env->correlation_id == 0) {
        /* A connection-level error: the broker closes after it. */
        conn_fail(c, env->error ? codec_err_from_wire(env->error) : VERITY_EPROTO);
        return;
    }
    if (c->state == CS_HELLO && env->correlation_id == c->hello_corr) {
        hello_done(c, env);
        return;
    }
    if (c->state == CS_HELLO && c->auth_corr && env->correlation_id == c->auth_corr) {
        auth_done(c, env);
        return;
    }
    struct creq *r = c->inflight.head;
    while (r && r->corr != env->correlation_id)
        r = r->next;
    if (!r) {
        conn_fail(c, VERITY_EPROTO);
        return;
    }
    list_remove(&c->inflight, r);
    int err = codec_err_from_wire(env->error);
    if (err == VERITY_ENOTLEADER && !(r->flags & CONN_NO_FOLLOW) && follow_leader(c, r, env))
        return;
    if (err == 0 && env->body_case != r->expect)
        err = VERITY_EPROTO;
    const char *text = env->error_message && env->error_message[0] ? env->error_message
                                                                   : verity_strerror(err);
    r->fn(r->arg, err, err ? text : "", env, payload, payload_len);
    creq_free(r);
}

static void read_frames(struct conn *c, struct bufferevent *bev)
{
    struct evbuffer *in = bufferevent_get_input(bev);
    /* Bounded: each pass consumes one whole frame or stops. */
    while (c->bev == bev) {
        uint8_t prefix[CODEC_PREFIX_SIZE];
        size_t avail = evbuffer_get_length(in);
        size_t n = avail < sizeof prefix ? avail : sizeof prefix;
        if (evbuffer_copyout(in, prefix, n) != (ev_ssize_t)n) {
            conn_fail(c, -EIO);
            return;
        }
        struct codec_frame f;
        int rc = codec_frame_peek(prefix, n, &c->lim, &f);
        if (rc < 0) {
            conn_fail(c, rc);
            return;
        }
        if (rc == 1 || avail < f.total)
            return;
        evbuffer_drain(in, CODEC_PREFIX_SIZE);
        struct codec_msg *msg = NULL;
        const uint8_t *envb = f.envelope_length ? evbuffer_pullup(in, f.envelope_length) : prefix;
        if (!envb) {
            conn_fail(c, -ENOMEM);
            return;
        }
        rc = codec_decode(envb, f.envelope_length, &c->lim, &msg);
        evbuffer_drain(in, f.envelope_length);
        if (rc) {
            conn_fail(c, rc);
            return;
        }
        uint8_t *payload = NULL;
        if (f.payload_length) {
            payload = malloc(f.payload_length);
            if (!payload ||
                evbuffer_remove(in, payload, f.payload_length) != (int)f.payload_length) {
                free(payload);
                codec_msg_free(msg);
                conn_fail(c, -ENOMEM);
                return;
            }
        }
        dispatch(c, msg, &payload, f.payload_length);
        free(payload);
        codec_msg_free(msg);
    }
}

static void read_cb(struct bufferevent *bev, void *arg)
{
    struct conn *c = arg;
    lock(c);
    read_frames(c, bev);
    unlock(c);
}

/* The bufferevent wrote its output down to empty: direct writes may go. */
static void write_cb(struct bufferevent *bev, void *arg)
{
    struct conn *c = arg;
    lock(c);
    if (bev == c->bev && evbuffer_get_length(bufferevent_get_output(bev)) == 0 &&
        evbuffer_get_length(c->pend) == 0)
        c->out_busy = false;
    unlock(c);
}

static void on_event(struct conn *c, struct bufferevent *bev, short what);

static void event_cb(struct bufferevent *bev, short what, void *arg)
{
    struct conn *c = arg;
    lock(c);
    on_event(c, bev, what);
    unlock(c);
}

static void on_event(struct conn *c, struct bufferevent *bev, short what)
{
    if (bev != c->bev)
        return;
    if (c->tls_ctx && (what & (BEV_EVENT_ERROR | BEV_EVENT_EOF)) &&
        (c->state == CS_CONNECTING || c->state == CS_HELLO)) {
        unsigned long e = bufferevent_get_openssl_error(bev), more = e;
        while (more)
            more = bufferevent_get_openssl_error(bev);
        if (e && ERR_GET_LIB(e) == 0) {
            /* libevent's own code, not OpenSSL's: the peer hung up. */
            tls_reason_set("%s%s", "the broker closed the connection during the handshake "
                           "(a client certificate it requires?)", "");
            conn_fail(c, VERITY_ETLS);
            return;
        }
        if (e) {
            SSL *ssl = bufferevent_openssl_get_ssl(bev);
            long vr = ssl ? SSL_get_verify_result(ssl) : X509_V_OK;
            if (vr != X509_V_OK)
                tls_reason_set("%s: %s", ossl_reason(e), X509_verify_cert_error_string(vr));
            else
                tls_reason_set("%s%s", ossl_reason(e), "");
            conn_fail(c, VERITY_ETLS);
            return;
        }
        if (c->state == CS_HELLO && (what & BEV_EVENT_EOF)) {
            tls_reason_set("%s%s", "the broker closed the connection after the handshake "
                           "(a client certificate it requires?)", "");
            conn_fail(c, VERITY_ETLS);
            return;
        }
    }
    if (what & BEV_EVENT_CONNECTED) {
        int one = 1;
        evutil_socket_t fd = bufferevent_getfd(bev);
        (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        c->fd = c->tls_ctx ? -1 : fd;
        c->state = CS_HELLO;
        send_hello(c);
        return;
    }
    int err = EVUTIL_SOCKET_ERROR();
    if (what & BEV_EVENT_EOF)
        conn_fail(c, c->state == CS_READY ? -ECONNRESET : VERITY_ECLOSED);
    else
        conn_fail(c, err ? -err : -ECONNRESET);
}

static void try_connect(struct conn *c)
{
    char host[256], port[16];
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    struct addrinfo *ai = NULL;
    c->state = CS_CONNECTING;
    c->connect_deadline_ms = cl_mono_ms() + c->cfg.connect_timeout_ms;
    if (split_addr(c->addrs[c->cur], host, sizeof host, port, sizeof port) != 0 ||
        getaddrinfo(host, port, &hints, &ai) != 0 || !ai) {
        if (ai)
            freeaddrinfo(ai);
        conn_fail(c, -ENXIO);
        return;
    }
    if (c->tls_ctx && c->tls_name_auto && strcmp(c->tls_name, host) != 0) {
        char *n = strdup(host);
        if (!n) {
            freeaddrinfo(ai);
            conn_fail(c, -ENOMEM);
            return;
        }
        free(c->tls_name);
        c->tls_name = n;
    }
    if (c->tls_ctx) {
        SSL *ssl = tls_ssl_new(c);
        c->bev = ssl ? bufferevent_openssl_socket_new(c->base, -1, ssl, BUFFEREVENT_SSL_CONNECTING,
                                                      BEV_OPT_CLOSE_ON_FREE)
                     : NULL;
        if (c->bev) {
            bufferevent_openssl_set_allow_dirty_shutdown(c->bev, 1);
            /* (libevent's default is 16 KiB per callback) */
            bufferevent_set_max_single_read(c->bev, 128 << 10);
            bufferevent_set_max_single_write(c->bev, 1 << 20);
        }
    } else {
        c->bev = bufferevent_socket_new(c->base, -1, BEV_OPT_CLOSE_ON_FREE);
    }
    if (!c->bev) {
        freeaddrinfo(ai);
        conn_fail(c, -ENOMEM);
        return;
    }
    bufferevent_setcb(c->bev, read_cb, write_cb, event_cb, c);
    bufferevent_enable(c->bev, EV_READ | EV_WRITE);
    int rc = bufferevent_socket_connect(c->bev, ai->ai_addr, (int)ai->ai_addrlen);
    int err = EVUTIL_SOCKET_ERROR();
    freeaddrinfo(ai);
    if (rc != 0 && c->state == CS_CONNECTING)
        conn_fail(c, err ? -err : -ECONNREFUSED);
}

/* The flush event: moves a direct write's rest into the bufferevent and
 * writes what the socket takes now. A write error is left to the
 * bufferevent, whose own write meets it and reports it to event_cb; a
 * direct send's error fails the connection here. */
void conn_flush(struct conn *c)
{
    if (!c)
        return;
    lock(c);
    if (c->direct_err) {
        int e = c->direct_err;
        c->direct_err = 0;
        conn_fail(c, -e);
    } else if (c->state == CS_READY && c->bev && !c->tls_ctx) {
        struct evbuffer *out = bufferevent_get_output(c->bev);
        if (evbuffer_get_length(c->pend) > 0 && evbuffer_add_buffer(out, c->pend) != 0)
            conn_fail(c, -ENOMEM);
        else if (evbuffer_get_length(out) > 0)
            (void)evbuffer_write(out, c->fd); /* (a direct write's rest included) */
        if (c->bev)
            c->out_busy = evbuffer_get_length(out) > 0;
    }
    unlock(c);
}

static void flush_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    conn_flush(arg);
}

/* Writes waiting requests while the connection is ready and has room. */
static void pump(struct conn *c)
{
    int64_t now = -1;
    if (c->state == CS_READY && c->waiting.head && !c->tls_ctx)
        event_active(c->flush_ev, EV_WRITE, 0);
    while (c->state == CS_READY && c->waiting.head && c->inflight.n < c->max_inflight) {
        struct creq *r = c->waiting.head;
        if (r->not_before_ms) {
            if (now < 0)
                now = cl_mono_ms();
            if (now < r->not_before_ms)
                return; /* the tick writes it */
            r->not_before_ms = 0;
        }
        list_remove(&c->waiting, r);
        c->out_busy = true;
        if (evbuffer_add(bufferevent_get_output(c->bev), r->frame, r->frame_len) != 0) {
            list_push_front(&c->waiting, r);
            conn_fail(c, -ENOMEM);
            return;
        }
        if (!(r->flags & (CONN_RETRY_ON_RESET | CONN_FOLLOW_LEADER))) {
            free(r->frame);
            r->frame = NULL;
        }
        r->deadline_ms = cl_mono_ms() + c->cfg.request_timeout_ms + r->extra_ms;
        list_push_back(&c->inflight, r);
    }
}

static void on_tick(struct conn *c);

static void tick_cb(evutil_socket_t fd, short what, void *arg)
{
    struct conn *c = arg;
    (void)fd;
    (void)what;
    lock(c);
    on_tick(c);
    unlock(c);
}

static void on_tick(struct conn *c)
{
    int64_t now = cl_mono_ms();
    if ((c->state == CS_CONNECTING || c->state == CS_HELLO) && now > c->connect_deadline_ms) {
        conn_fail(c, -ETIMEDOUT);
        return;
    }
    for (struct creq *r = c->inflight.head; r; r = r->next) {
        if (now > r->deadline_ms) {
            conn_fail(c, -ETIMEDOUT);
            return;
        }
    }
    /* Collect first, fail after: a handler may queue new requests. */
    struct creq_list expired = {0};
    struct creq *r = c->waiting.head;
    while (r) {
        struct creq *next = r->next;
        if (now > r->deadline_ms) {
            list_remove(&c->waiting, r);
            list_push_back(&expired, r);
        }
        r = next;
    }
    int err = c->last_err ? c->last_err : VERITY_ETIMEOUT;
    while ((r = expired.head)) {
        list_remove(&expired, r);
        creq_fail(r, err, NULL);
    }
    if (c->state == CS_READY && c->waiting.head && c->waiting.head->not_before_ms)
        pump(c);
}

int conn_new(struct event_base *base, const struct verity_conn_config *cfg,
             const struct conn_events *ev, void *arg, struct conn **out)
{
    struct conn *c = calloc(1, sizeof *c);
    if (!c)
        return -ENOMEM;
    cl_conn_config_fill(cfg, &c->cfg);
    c->broker = strdup(c->cfg.broker);
    c->client_id = strdup(c->cfg.client_id);
    c->api_key = c->cfg.api_key ? strdup(c->cfg.api_key) : NULL;
    c->retry_ev = evtimer_new(base, retry_cb, c);
    c->tick_ev = event_new(base, -1, EV_PERSIST, tick_cb, c);
    c->flush_ev = event_new(base, -1, 0, flush_cb, c);
    c->pend = evbuffer_new();
    c->fd = -1;
    pthread_mutexattr_t ma;
    pthread_mutexattr_init(&ma);
    pthread_mutexattr_settype(&ma, PTHREAD_MUTEX_RECURSIVE);
    c->mu_ok = pthread_mutex_init(&c->mu, &ma) == 0;
    pthread_mutexattr_destroy(&ma);
    if (!c->broker || !c->client_id || !c->retry_ev || !c->tick_ev || !c->flush_ev || !c->pend ||
        !c->mu_ok) {
        conn_free(c);
        return -ENOMEM;
    }
    char host[256], port[16];
    int prc = conn_parse_list(c->broker, c->addrs, ADDRS_MAX, &c->n_addrs);
    if (prc) {
        conn_free(c);
        return prc;
    }
    (void)split_addr(c->addrs[0], host, sizeof host, port, sizeof port);
    if (c->cfg.tls == 1) {
        c->tls_name_auto = !c->cfg.tls_server_name;
        c->tls_name = strdup(c->cfg.tls_server_name ? c->cfg.tls_server_name : host);
        if (!c->tls_name) {
            conn_free(c);
            return -ENOMEM;
        }
        if (!(c->tls_ctx = tls_ctx_new(&c->cfg))) {
            conn_free(c);
            return VERITY_ETLS;
        }
    }
    c->cfg.tls_ca = c->cfg.tls_cert = c->cfg.tls_key = c->cfg.tls_server_name = NULL;
    c->cfg.broker = c->broker;
    c->cfg.client_id = c->client_id;
    c->cfg.api_key = c->api_key;
    c->base = base;
    c->ev = ev;
    c->arg = arg;
    c->state = CS_IDLE;
    c->next_corr = 1;
    c->backoff_ms = c->cfg.reconnect_backoff_ms;
    c->max_inflight = VERITY_INFLIGHT_MAX;
    codec_limits_default(&c->lim);
    *out = c;
    return 0;
}

void conn_start(struct conn *c)
{
    struct timeval tv = {0, TICK_MS * 1000};
    lock(c);
    event_add(c->tick_ev, &tv);
    try_connect(c);
    unlock(c);
}

void conn_free(struct conn *c)
{
    if (!c)
        return;
    lock(c);
    if (c->bev)
        bufferevent_free(c->bev);
    c->bev = NULL;
    c->state = CS_IDLE;
    struct creq_list *lists[] = {&c->inflight, &c->waiting};
    for (size_t i = 0; i < 2; i++) {
        while (lists[i]->head) {
            struct creq *r = lists[i]->head;
            list_remove(lists[i], r);
            creq_fail(r, VERITY_ECLOSED, NULL);
        }
    }
    if (c->retry_ev)
        event_free(c->retry_ev);
    if (c->tick_ev)
        event_free(c->tick_ev);
    if (c->flush_ev)
        event_free(c->flush_ev);
    if (c->pend)
        evbuffer_free(c->pend);
    unlock(c);
    if (c->mu_ok)
        pthread_mutex_destroy(&c->mu);
    free(c->broker);
    for (size_t i = 0; i < c->n_addrs; i++)
        free(c->addrs[i]);
    free(c->client_id);
    free(c->api_key);
    free(c->tls_name);
    SSL_CTX_free(c->tls_ctx);
    free(c);
}

bool conn_ready(const struct conn *c)
{
    return c->state == CS_READY;
}

int conn_last_error(const struct conn *c)
{
    return c->last_err;
}

uint32_t conn_inflight(const struct conn *c)
{
    struct conn *m = (struct conn *)c; /* the lock only */
    lock(m);
    uint32_t n = c->inflight.n;
    unlock(m);
    return n;
}

bool conn_rotating(const struct conn *c)
{
    return c->rotating;
}

const char *conn_target(const struct conn *c)
{
    return c->addrs[c->cur];
}

int conn_parse_list(const char *list, char **out, size_t cap, size_t *n_out)
{
    size_t n = 0;
    int rc = 0;
    const char *s = list;
    while (rc == 0) {
        while (*s == ' ')
            s++;
        const char *end = strchr(s, ',');
        size_t len = end ? (size_t)(end - s) : strlen(s);
        while (len && s[len - 1] == ' ')
            len--;
        char host[256], port[16], one[300];
        if (len == 0 || len >= sizeof one || n == cap) {
            rc = VERITY_EINVAL;
            break;
        }
        memcpy(one, s, len);
        one[len] = '\0';
        if (split_addr(one, host, sizeof host, port, sizeof port) != 0 || atoi(port) > 65535) {
            rc = VERITY_EINVAL;
            break;
        }
        if (!(out[n] = strdup(one))) {
            rc = -ENOMEM;
            break;
        }
        n++;
        if (!end)
            break;
        s = end + 1;
    }
    if (rc) {
        while (n)
            free(out[--n]);
    }
    *n_out = n;
    return rc;
}

uint32_t conn_max_batch_bytes(const struct conn *c)
{
    return c->max_batch_bytes;
}

/* A request for env and the payload iovecs (copied into its frame), not
 * queued yet. Returns 0 or an encode error. With c->mu held. */
static int creq_make(struct conn *c, Verity__Envelope *env, const struct iovec *iov, int iovcnt,
                     uint32_t extra_timeout_ms, unsigned flags, conn_resp_fn fn, void *arg,
                     struct creq **out)
{
    size_t payload_len = 0;
    for (int i = 0; i < iovcnt; i++)
        payload_len += iov[i].iov_len;
    struct creq *r = calloc(1, sizeof *r);
    if (!r)
        return -ENOMEM;
    env->version = CODEC_PROTOCOL_VERSION;
    env->correlation_id = r->corr = c->next_corr++;
    r->expect = codec_response_case(env->body_case);
    r->extra_ms = extra_timeout_ms;
    r->flags = flags;
    r->fn = fn;
    r->arg = arg;
    uint8_t *head = NULL;
    size_t head_len = 0;
    /* Produce and Fetch answer NOT_LEADER per partition; everything else
     * keeps its frame to follow a request-level NOT_LEADER. */
    if (env->body_case != VERITY__ENVELOPE__BODY_PRODUCE_REQ &&
        env->body_case != VERITY__ENVELOPE__BODY_FETCH_REQ && !(flags & CONN_NO_FOLLOW))
        r->flags |= CONN_FOLLOW_LEADER;
    int rc = codec_encode(env, payload_len, &c->lim, &head, &head_len);
    if (rc) {
        free(r);
        return rc;
    }
    r->frame_len = head_len + payload_len;
    r->frame = realloc(head, r->frame_len);
    if (!r->frame) {
        free(head);
        free(r);
        return -ENOMEM;
    }
    size_t pos = head_len;
    for (int i = 0; i < iovcnt; i++) {
        memcpy(r->frame + pos, iov[i].iov_base, iov[i].iov_len);
        pos += iov[i].iov_len;
    }
    *out = r;
    return 0;
}

int conn_request(struct conn *c, Verity__Envelope *env, const struct iovec *iov, int iovcnt,
                 uint32_t extra_timeout_ms, unsigned flags, conn_resp_fn fn, void *arg)
{
    struct creq *r = NULL;
    lock(c);
    int rc = creq_make(c, env, iov, iovcnt, extra_timeout_ms, flags, fn, arg, &r);
    if (rc == 0) {
        r->deadline_ms = cl_mono_ms() + c->cfg.request_timeout_ms;
        list_push_back(&c->waiting, r);
        pump(c);
    }
    unlock(c);
    return rc;
}

void conn_allow_direct(struct conn *c)
{
    c->direct_ok = c->mu_ok;
}

bool conn_direct_begin(struct conn *c)
{
    if (!c->direct_ok || pthread_mutex_trylock(&c->mu) != 0)
        return false;
    if (c->state == CS_READY && !c->tls_ctx && c->fd >= 0 && !c->out_busy && !c->direct_err &&
        !c->waiting.head && c->inflight.n < c->max_inflight)
        return true;
    unlock(c);
    return false;
}

int conn_direct_send(struct conn *c, Verity__Envelope *env, const struct iovec *iov, int iovcnt,
                     uint32_t extra_timeout_ms, unsigned flags, conn_resp_fn fn, void *arg)
{
    struct creq *r = NULL;
    int rc = creq_make(c, env, iov, iovcnt, extra_timeout_ms, flags, fn, arg, &r);
    if (rc)
        return rc;
    r->deadline_ms = cl_mono_ms() + c->cfg.request_timeout_ms + r->extra_ms;
    list_push_back(&c->inflight, r); /* before the send: the answer may come at once */
    ssize_t n = send(c->fd, r->frame, r->frame_len, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
        /* The I/O thread fails the connection: r is resent or failed with it. */
        c->direct_err = errno;
        event_active(c->flush_ev, EV_WRITE, 0);
    } else if ((size_t)(n < 0 ? 0 : n) < r->frame_len) {
        size_t done = n < 0 ? 0 : (size_t)n;
        c->out_busy = true;
        if (evbuffer_add(c->pend, r->frame + done, r->frame_len - done) != 0)
            c->direct_err = ENOMEM;
        event_active(c->flush_ev, EV_WRITE, 0);
    }
    if (!(r->flags & (CONN_RETRY_ON_RESET | CONN_FOLLOW_LEADER))) {
        free(r->frame);
        r->frame = NULL;
    }
    return 0;
}

void conn_direct_end(struct conn *c)
{
    unlock(c);
}
