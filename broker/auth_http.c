/*
 * Authentication and ACLs on the admin HTTP port (issue 14); the rules are
 * in broker/auth.h. http.c calls auth_http_check first in every handler.
 *
 * The path is matched after percent-decoding, as evhttp matches its
 * callbacks (so "/m%65trics" is /metrics here too). A missing, malformed,
 * unknown or revoked token is 401 with `WWW-Authenticate: Bearer`; a
 * principal without the right is 403, for a topic of another tenant the
 * same as for a missing topic of its own (the name is checked before any
 * lookup). Keys are checked with auth_key_verify (constant time in the
 * secret) against the store in use, so a revoked key or a removed rule
 * stops working at the next request after SIGHUP.
 *
 * A wrong key (not a missing one) is answered 401 only after
 * auth_fail_delay_ms, as a failed Authenticate on the protocol port: the
 * request waits on a timer, the event loop goes on serving others. evhttp
 * reads a connection's next request only after the answer, so each
 * connection guesses at most one key per delay, and the waiting requests
 * are at most max_http_connections. A client that hangs up meanwhile
 * leaves the request to us (evhttp detaches it; evhttp_send_reply then
 * frees it); at shutdown auth_http_flush answers them before evhttp_free.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <jansson.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "broker/audit.h"
#include "broker/auth.h"
#include "broker/auth_store.h"
#include "broker/blog.h"
#include "broker/broker_int.h"
#include "verity/errors.h"

enum route_kind {
    R_OPEN,    /* no principal needed */
    R_CLUSTER, /* describe on cluster:<what> */
    R_LIST,    /* any principal; the handler filters with auth_http_visible */
    R_TOPIC_Q, /* consume on the topic named by ?topic= */
    R_TOPIC_P, /* consume on the topic of /tlog/<topic>/... */
    R_AUTH,    /* any principal */
    R_SECURITY, /* GET: describe on cluster:security; else admin (auth_admin.c) */
};

static const struct route {
    const char *path;
    bool prefix;
    enum route_kind kind;
    const char *what;
} routes[] = {
    {"/health", false, R_OPEN, NULL},
    {"/ready", false, R_OPEN, NULL},
    {"/metrics", false, R_CLUSTER, "metrics"},
    {"/cluster", false, R_CLUSTER, "peers"},
    {"/debug/trace", false, R_CLUSTER, "trace"},
    {"/v1/topics", false, R_LIST, NULL},
    {"/v1/groups", false, R_LIST, NULL},
    {"/v1/proof/key", false, R_AUTH, NULL},
    {"/v1/security", false, R_SECURITY, "security"},
    {"/v1/proof/", true, R_TOPIC_Q, NULL},
    {"/tlog/", true, R_TOPIC_P, NULL},
};

static const struct route *route_of(const char *path)
{
    for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++) {
        const struct route *r = &routes[i];
        if (r->prefix ? strncmp(path, r->path, strlen(r->path)) == 0 : strcmp(path, r->path) == 0)
            return r;
    }
    return NULL;
}

static void peer_of(struct evhttp_request *req, char *buf, size_t cap)
{
    struct evhttp_connection *ec = evhttp_request_get_connection(req);
    const char *host = NULL;
    ev_uint16_t port = 0;
    if (ec)
        evhttp_connection_get_peer(ec, (char **)&host, &port);
    snprintf(buf, cap, "%s:%u", host ? host : "?", (unsigned)port);
}

static void answer(struct evhttp_request *req, int code, const char *reason, const char *text)
{
    struct evkeyvalq *h = evhttp_request_get_output_headers(req);
    if (code == 401)
        evhttp_add_header(h, "WWW-Authenticate", "Bearer realm=\"verity\"");
    evhttp_add_header(h, "Content-Type", "text/plain");
    struct evbuffer *body = evbuffer_new();
    if (body)
        evbuffer_add_printf(body, "%s\n", text);
    evhttp_send_reply(req, code, reason, body);
    if (body)
        evbuffer_free(body);
}

/* A 401 waiting out auth_fail_delay_ms. */
struct auth_http_late {
    struct broker *b;
    struct evhttp_request *req;
    struct event *ev;
    struct auth_http_late *prev, *next;
};

static const char WRONG_KEY[] = "authentication failed (unknown, wrong or revoked key)";

static void late_answer(struct auth_http_late *l)
{
    struct auth_http_late **head = auth_http_late_list(l->b);
    if (l->prev)
        l->prev->next = l->next;
    else
        *head = l->next;
    if (l->next)
        l->next->prev = l->prev;
    auth_http_stats(l->b)->late--;
    event_free(l->ev);
    answer(l->req, 401, "Unauthorized", WRONG_KEY);
    free(l);
}

static void late_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    late_answer(arg);
}

/* Answers 401 for a wrong key after the delay; now when there is none or
 * no memory for the timer (the refusal matters more than the delay). */
static void wrong_key(struct broker *b, struct evhttp_request *req)
{
    uint32_t ms = b->cfg.auth_fail_delay_ms;
    struct auth_http_late **head = auth_http_late_list(b);
    struct auth_http_late *l = ms && head ? calloc(1, sizeof *l) : NULL;
    if (l && (l->ev = evtimer_new(b->base, late_cb, l))) {
        struct timeval tv = {(time_t)(ms / 1000), (suseconds_t)(ms % 1000) * 1000};
        if (evtimer_add(l->ev, &tv) == 0) {
            l->b = b;
            l->req = req;
            l->next = *head;
            if (*head)
                (*head)->prev = l;
            *head = l;
            auth_http_stats(b)->late++;
            return;
        }
        event_free(l->ev);
    }
    free(l);
    answer(req, 401, "Unauthorized", WRONG_KEY);
}

void auth_http_flush(struct broker *b)
{
    struct auth_http_late **head = auth_http_late_list(b);
    while (head && *head)
        late_answer(*head);
    auth_admin_flush(b);
}

/* The principal from a client certificate on a TLS admin port, if mapped. */
static const struct auth_cert *cert_principal(const struct auth_store *s,
                                              struct evhttp_request *req)
{
    struct evhttp_connection *ec = evhttp_request_get_connection(req);
    struct bufferevent *bev = ec ? evhttp_connection_get_bufferevent(ec) : NULL;
    SSL *ssl = bev ? bufferevent_openssl_get_ssl(bev) : NULL;
    if (!ssl || SSL_get_verify_result(ssl) != X509_V_OK)
        return NULL;
    X509 *cert = SSL_get1_peer_certificate(ssl);
    if (!cert)
        return NULL;
    char cn[AUTH_SUBJECT_MAX + 1] = "";
    X509_NAME_get_text_by_NID(X509_get_subject_name(cert), NID_commonName, cn, sizeof cn);
    X509_free(cert);
    return cn[0] ? auth_cert_find(s, cn) : NULL;
}

/* Logs and audits a refusal (rate-limited with the protocol port's). */
static void refused(struct broker *b, struct evhttp_request *req, const char *event,
                    const char *tenant, const char *principal, const char *path, const char *why)
{
    struct auth_http_stats *st = auth_http_stats(b);
    if (strcmp(event, "http_denied") == 0)
        st->denied++;
    else
        st->unauthenticated++;
    bool line;
    uint64_t line_sup, sup;
    if (!auth_log_ok(b, &line, &line_sup, &sup))
        return;
    char peer[80], qp[300], qw[300];
    peer_of(req, peer, sizeof peer);
    if (line)
        blog(BLOG_WARN, event,
             "port=admin peer=%s tenant=%s principal=%s path=%s reason=%s suppressed=%" PRIu64,
             peer, tenant && tenant[0] ? tenant : "-", principal && principal[0] ? principal : "-",
             blog_q(path, qp, sizeof qp), blog_q(why, qw, sizeof qw), line_sup);
    audit_emit(auth_audit(b), tenant, event, "{s:s, s:s, s:s, s:s, s:s, s:I}", "principal",
               principal ? principal : "", "path", path, "reason", why, "peer", peer, "port",
               "admin", "suppressed", (json_int_t)sup);
}

/* The topic a proof or tile request names (as stored), or NULL. */
static char *proof_topic(struct evhttp_request *req, const struct route *r, const char *path)
{
    if (r->kind == R_TOPIC_P) {
        const char *p = path + strlen(r->path), *e = strchr(p, '/');
        size_t n = e ? (size_t)(e - p) : strlen(p);
        char *t = malloc(n + 1);
        if (t) {
            memcpy(t, p, n);
            t[n] = '\0';
        }
        return t;
    }
    const char *query = evhttp_uri_get_query(evhttp_request_get_evhttp_uri(req));
    struct evkeyvalq q;
    TAILQ_INIT(&q);
    if (!query || evhttp_parse_query_str(query, &q) != 0) {
        evhttp_clear_headers(&q);
        return NULL;
    }
    const char *t = evhttp_find_header(&q, "topic");
    char *out = t ? strdup(t) : NULL;
    evhttp_clear_headers(&q);
    return out;
}

/* Whether who may read proofs of the stored topic name. */
static bool topic_ok(const struct auth_store *s, const struct auth_http_who *who, const char *name)
{
    if (who->all_tenants)
        return true;
    size_t tl = strlen(who->tenant);
    if (strncmp(name, who->tenant, tl) != 0 || name[tl] != CODEC_TENANT_SEP)
        return false;
    return auth_allowed(s, who->tenant, who->principal, AUTH_RES_TOPIC, name + tl + 1,
                        AUTH_OP_CONSUME, NULL, 0);
}

bool auth_http_check(struct broker *b, struct evhttp_request *req)
{
    struct auth_http_who *who = auth_http_who(b);
    if (!who)
        return true;
    memset(who, 0, sizeof *who);
    const struct auth_store *s = auth_store_in_use(b);
    const char *raw = evhttp_uri_get_path(evhttp_request_get_evhttp_uri(req));
    char *path = evhttp_uridecode(raw ? raw : "/", 0, NULL);
    if (!path) {
        answer(req, 500, "Internal Server Error", "out of memory");
        return false;
    }
    const struct route *r = route_of(path);
    if (r && r->kind == R_OPEN) {
        free(path);
        return true;
    }
    /* Who: a bearer key first, else a mapped client certificate. */
    const char *h = evhttp_find_header(evhttp_request_get_input_headers(req), "Authorization");
    const char *tenant = NULL, *principal = NULL;
    if (h) {
        const struct auth_key *k = NULL;
        bool bearer = strncasecmp(h, "Bearer ", 7) == 0;
        if (!bearer || auth_key_verify(s, h + 7, &k) != 0) {
            refused(b, req, "http_auth_failed", NULL, NULL, path,
                    bearer ? "unknown, wrong or revoked key" : "Authorization is not Bearer");
            wrong_key(b, req);
            free(path);
            return false;
        }
        tenant = k->tenant;
        principal = k->principal;
    } else {
        const struct auth_cert *c = cert_principal(s, req);
        if (c) {
            tenant = c->tenant;
            principal = c->principal;
        }
    }
    if (!tenant) {
        refused(b, req, "http_auth_failed", NULL, NULL, path, "no key and no mapped certificate");
        answer(req, 401, "Unauthorized",
               "authentication required: Authorization: Bearer <API key> (or a mapped client "
               "certificate)");
        free(path);
        return false;
    }
    who->set = true;
    snprintf(who->tenant, sizeof who->tenant, "%s", tenant);
    snprintf(who->principal, sizeof who->principal, "%s", principal);
    who->all_tenants = auth_allowed(s, tenant, principal, AUTH_RES_CLUSTER, "tenants",
                                    AUTH_OP_DESCRIBE, NULL, 0);
    bool ok = true;
    char why[300] = "";
    if (r && r->kind == R_CLUSTER) {
        ok = auth_allowed(s, tenant, principal, AUTH_RES_CLUSTER, r->what, AUTH_OP_DESCRIBE, why,
                          sizeof why);
    } else if (r && r->kind == R_SECURITY) {
        enum evhttp_cmd_type m = evhttp_request_get_command(req);
        ok = auth_allowed(s, tenant, principal, AUTH_RES_CLUSTER, r->what,
                          m == EVHTTP_REQ_GET || m == EVHTTP_REQ_HEAD ? AUTH_OP_DESCRIBE
                                                                      : AUTH_OP_ADMIN,
                          why, sizeof why);
    } else if (r && (r->kind == R_TOPIC_Q || r->kind == R_TOPIC_P)) {
        char *t = proof_topic(req, r, path);
        /* No topic: the proof handler answers 400 (nothing of anyone's to see). */
        if (t && t[0] && !(ok = topic_ok(s, who, t)))
            snprintf(why, sizeof why, "principal %s may not consume on topic %s (ACL)", principal,
                     t);
        free(t);
    }
    if (!ok) {
        refused(b, req, "http_denied", tenant, principal, path, why);
        answer(req, 403, "Forbidden", why);
        memset(who, 0, sizeof *who);
    }
    free(path);
    return ok;
}

bool auth_http_visible(struct broker *b, enum auth_res res, const char *name)
{
    const struct auth_http_who *who = auth_http_who(b);
    if (!who)
        return true;
    if (!who->set)
        return false;
    if (who->all_tenants)
        return true;
    size_t tl = strlen(who->tenant);
    if (strncmp(name, who->tenant, tl) != 0 || name[tl] != CODEC_TENANT_SEP)
        return false;
    unsigned ops = res == AUTH_RES_TOPIC
                       ? AUTH_OP_DESCRIBE | AUTH_OP_PRODUCE | AUTH_OP_CONSUME | AUTH_OP_ADMIN
                       : AUTH_OP_DESCRIBE | AUTH_OP_GROUP | AUTH_OP_ADMIN;
    return auth_allowed_any(auth_store_in_use(b), who->tenant, who->principal, res, name + tl + 1,
                            ops);
}
