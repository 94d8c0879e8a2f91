/*
 * The security store over the network (issue 14): /v1/security on the
 * admin HTTP port. auth_http_check has already found the principal and its
 * right (describe on cluster:security for GET, admin for POST).
 *
 * GET answers the store in use as one JSON object, every entry with its
 * "source": "file" (auth_file, edited with `verity auth` on the broker's
 * host, the bootstrap) or "meta" (made over the network, in the metadata
 * log). Keys are listed without salt and hash.
 *
 * POST takes one change (broker/auth_store.h, auth_change_parse), checks
 * it against the store in use and proposes it to the metadata log as
 *
 *   {"type":"auth_change","by":"TENANT/PRINCIPAL","time_ms":T,"change":C}
 *
 * (meta_append: this broker's meta log, or in a cluster the __meta group,
 * whose primary must be this broker: else 421 with the primary's admin
 * address in "leader_http"). Every broker applies the committed record to
 * its b->meta.auth and rebuilds the store in use (auth_meta_changed), so
 * open connections follow at their next request; this one does so in the
 * callback and answers then. Only entries made over the network can be
 * removed over the network: an entry of auth_file is answered 409 (edit the
 * file). key_create becomes key_add: the broker draws the id, salt and
 * secret, the record holds only the hash, the answer holds the key once.
 *
 * Answers: 200 {"ok":true,"changed":B,...}; 400 {"error":"EINVAL",..} for a
 * malformed change; 404 ENOTFOUND (nothing to remove); 409 EEXIST (a
 * certificate subject already mapped) or EFILE (an auth_file entry); 421
 * NOT_LEADER; 503 for a metadata log that cannot take it.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/buffer.h>
#include <event2/http.h>
#include <jansson.h>
#include <openssl/crypto.h>

#include "broker/auth.h"
#include "broker/auth_store.h"
#include "broker/blog.h"
#include "broker/broker_int.h"
#include "verity/errors.h"

#define ADMIN_BODY_MAX 65536u

struct auth_admin_op {
    struct broker *b;
    struct evhttp_request *req; /* NULL once flushed (shutdown) */
    char *record;               /* the meta record (JSON text) */
    char key[AUTH_KEY_TEXT_MAX]; /* key_create: the text to answer once */
    char op[16];
    bool listed;
    struct auth_admin_op *prev, *next;
};

static void reply(struct evhttp_request *req, int code, const char *reason, json_t *o)
{
    char *text = o ? json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
    json_decref(o);
    struct evbuffer *body = evbuffer_new();
    if (body)
        evbuffer_add_printf(body, "%s\n", text ? text : "{\"error\":\"ENOMEM\"}");
    free(text);
    evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type", "application/json");
    evhttp_send_reply(req, text || code != 200 ? code : 500, reason, body);
    if (body)
        evbuffer_free(body);
}

static void error_reply(struct evhttp_request *req, int code, const char *reason, const char *err,
                        const char *msg)
{
    reply(req, code, reason, json_pack("{s:s,s:s}", "error", err, "message", msg));
}

/* ---- GET ------------------------------------------------------------------- */

static const char *src_of(bool in_file)
{
    return in_file ? "file" : "meta";
}

static bool acl_in(const struct auth_store *s, const struct auth_acl *a)
{
    for (size_t i = 0; i < s->n_acls; i++) {
        const struct auth_acl *x = &s->acls[i];
        if (strcmp(x->tenant, a->tenant) == 0 && strcmp(x->principal, a->principal) == 0 &&
            x->res == a->res && strcmp(x->pattern, a->pattern) == 0 && x->ops == a->ops &&
            x->deny == a->deny)
            return true;
    }
    return false;
}

static bool role_in(const struct auth_store *s, const struct auth_role *r)
{
    return auth_role_held(s, r->tenant, r->principal, r->role);
}

static const struct auth_quota *quota_exact(const struct auth_store *s, const char *tenant,
                                            const char *principal)
{
    for (size_t i = 0; i < s->n_quotas; i++)
        if (strcmp(s->quotas[i].tenant, tenant) == 0 &&
            strcmp(s->quotas[i].principal, principal) == 0)
            return &s->quotas[i];
    return NULL;
}

static bool quota_eq(const struct auth_quota *a, const struct auth_quota *b)
{
    return a && b && a->produce_bytes_per_s == b->produce_bytes_per_s &&
           a->fetch_bytes_per_s == b->fetch_bytes_per_s && a->requests_per_s == b->requests_per_s &&
           a->connections == b->connections && a->storage_bytes == b->storage_bytes;
}

static void list_store(struct broker *b, struct evhttp_request *req)
{
    const struct auth_store *s = auth_store_in_use(b), *f = auth_store_file(b);
    json_t *keys = json_array(), *certs = json_array(), *acls = json_array(),
           *quotas = json_array(), *roles = json_array();
    for (size_t i = 0; i < s->n_keys; i++) {
        const struct auth_key *k = &s->keys[i];
        json_array_append_new(keys, json_pack("{s:s,s:s,s:s,s:I,s:s}", "id", k->id, "tenant",
                                              k->tenant, "principal", k->principal, "created_ms",
                                              (json_int_t)k->created_ms, "source",
                                              src_of(auth_key_find(f, k->id) != NULL)));
    }
    for (size_t i = 0; i < s->n_certs; i++) {
        const struct auth_cert *c = &s->certs[i];
        json_array_append_new(certs, json_pack("{s:s,s:s,s:s,s:s}", "subject", c->subject,
                                               "tenant", c->tenant, "principal", c->principal,
                                               "source",
                                               src_of(auth_cert_find(f, c->subject) != NULL)));
    }
    for (size_t i = 0; i < s->n_acls; i++) {
        const struct auth_acl *a = &s->acls[i];
        char ops[64], res[AUTH_PATTERN_MAX + 16];
        auth_op_names(a->ops, ops, sizeof ops);
        snprintf(res, sizeof res, "%s:%s", auth_res_name(a->res), a->pattern);
        json_array_append_new(acls, json_pack("{s:s,s:s,s:s,s:s,s:s,s:s}", "tenant", a->tenant,
                                              "principal", a->principal, "resource", res, "ops",
                                              ops, "effect", a->deny ? "deny" : "allow", "source",
                                              src_of(acl_in(f, a))));
    }
    for (size_t i = 0; i < s->n_quotas; i++) {
        const struct auth_quota *q = &s->quotas[i];
        json_array_append_new(
            quotas, json_pack("{s:s,s:s,s:I,s:I,s:I,s:I,s:I,s:s}", "tenant", q->tenant,
                              "principal", q->principal, "produce_bytes_per_s",
                              (json_int_t)q->produce_bytes_per_s, "fetch_bytes_per_s",
                              (json_int_t)q->fetch_bytes_per_s, "requests_per_s",
                              (json_int_t)q->requests_per_s, "connections",
                              (json_int_t)q->connections, "storage_bytes",
                              (json_int_t)q->storage_bytes, "source",
                              src_of(quota_eq(quota_exact(f, q->tenant, q->principal), q))));
    }
    for (size_t i = 0; i < s->n_roles; i++) {
        const struct auth_role *r = &s->roles[i];
        json_array_append_new(roles, json_pack("{s:s,s:s,s:s,s:s}", "tenant", r->tenant,
                                               "principal", r->principal, "role", r->role,
                                               "source", src_of(role_in(f, r))));
    }
    reply(req, 200, "OK",
          json_pack("{s:o,s:o,s:o,s:o,s:o}", "keys", keys, "certs", certs, "acls", acls, "quotas",
                    quotas, "roles", roles));
}

/* ---- POST ------------------------------------------------------------------ */

static void op_unlink(struct broker *b, struct auth_admin_op *op)
{
    if (!op->listed)
        return;
    struct auth_admin_op **head = auth_admin_list(b);
    if (op->prev)
        op->prev->next = op->next;
    else if (head)
        *head = op->next;
    if (op->next)
        op->next->prev = op->prev;
    op->listed = false;
}

static void op_free(struct auth_admin_op *op)
{
    free(op->record);
    OPENSSL_cleanse(op->key, sizeof op->key);
    free(op);
}

static void op_done(struct broker *b, void *arg, int err)
{
    struct auth_admin_op *op = arg;
    op_unlink(b, op);
    int arc = err == 0 ? meta_auth_apply(b, op->record) : err;
    if (op->req) {
        if (arc == 0) {
            json_t *o = json_pack("{s:b,s:b,s:s}", "ok", 1, "changed", 1, "op", op->op);
            if (o && op->key[0]) {
                json_object_set_new(o, "key", json_string(op->key));
                json_object_set_new(o, "id", json_stringn(op->key + 3, AUTH_KEY_ID_HEX));
            }
            reply(op->req, 200, "OK", o);
        } else {
            error_reply(op->req, 503, "Service Unavailable", verity_errname(arc),
                        "the metadata log did not take the change");
        }
    }
    op_free(op);
}

void auth_admin_flush(struct broker *b)
{
    struct auth_admin_op **head = auth_admin_list(b);
    while (head && *head) {
        struct auth_admin_op *op = *head;
        op_unlink(b, op);
        if (op->req)
            error_reply(op->req, 503, "Service Unavailable", "ECLOSED", "the broker is stopping");
        op->req = NULL; /* op_done frees it when the meta log lets go of it */
    }
}

/* Answers a change that the store in use makes pointless or impossible;
 * returns true when it answered. */
static bool precheck(struct broker *b, struct evhttp_request *req, struct auth_change *c)
{
    const struct auth_store *s = auth_store_in_use(b), *f = auth_store_file(b);
    static const struct auth_store empty;
    const struct auth_store *m = b->meta.auth ? b->meta.auth : &empty;
    bool in_file = false, in_meta = false, nothing = false;
    switch (c->op) {
    case AUTH_CH_KEY_REVOKE:
        in_file = auth_key_find(f, c->key.id) != NULL;
        in_meta = auth_key_find(m, c->key.id) != NULL;
        break;
    case AUTH_CH_ACL_REMOVE:
        in_file = acl_in(f, &c->acl);
        in_meta = acl_in(m, &c->acl);
        break;
    case AUTH_CH_CERT_REMOVE:
        in_file = auth_cert_find(f, c->cert.subject) != NULL;
        in_meta = auth_cert_find(m, c->cert.subject) != NULL;
        break;
    case AUTH_CH_QUOTA_REMOVE:
        in_file = quota_exact(f, c->quota.tenant, c->quota.principal) != NULL;
        in_meta = quota_exact(m, c->quota.tenant, c->quota.principal) != NULL;
        break;
    case AUTH_CH_ROLE_REVOKE:
        in_file = role_in(f, &c->role);
        in_meta = role_in(m, &c->role);
        break;
    case AUTH_CH_ACL_ADD:
        nothing = acl_in(s, &c->acl);
        break;
    case AUTH_CH_ROLE_GRANT:
        nothing = role_in(s, &c->role);
        break;
    case AUTH_CH_CERT_ADD:
        if (auth_cert_find(s, c->cert.subject)) {
            error_reply(req, 409, "Conflict", "EEXIST",
                        "subject already mapped (remove the mapping first)");
            return true;
        }
        return false;
    case AUTH_CH_QUOTA_SET: {
        /* fields left out keep their value (the exact entry in use) */
        const struct auth_quota *q = quota_exact(s, c->quota.tenant, c->quota.principal);
        if (q) {
            if (!(c->quota_has & AUTH_Q_PRODUCE))
                c->quota.produce_bytes_per_s = q->produce_bytes_per_s;
            if (!(c->quota_has & AUTH_Q_FETCH))
                c->quota.fetch_bytes_per_s = q->fetch_bytes_per_s;
            if (!(c->quota_has & AUTH_Q_REQUESTS))
                c->quota.requests_per_s = q->requests_per_s;
            if (!(c->quota_has & AUTH_Q_CONNS))
                c->quota.connections = q->connections;
            if (!(c->quota_has & AUTH_Q_STORAGE))
                c->quota.storage_bytes = q->storage_bytes;
        }
        c->quota_has = AUTH_Q_ALL;
        return false;
    }
    default:
        return false;
    }
    if (nothing) {
        reply(req, 200, "OK",
              json_pack("{s:b,s:b,s:s}", "ok", 1, "changed", 0, "op", auth_change_name(c->op)));
        return true;
    }
    if (c->op == AUTH_CH_ACL_ADD || c->op == AUTH_CH_ROLE_GRANT)
        return false;
    if (in_meta)
        return false;
    if (in_file)
        error_reply(req, 409, "Conflict", "EFILE",
                    "the entry is in auth_file: change it there with `verity auth` on the "
                    "broker's host (and SIGHUP)");
    else
        error_reply(req, 404, "Not Found", "ENOTFOUND", "no such entry");
    return true;
}

static void not_leader(struct broker *b, struct evhttp_request *req)
{
    uint32_t leader = cluster_meta_leader(b);
    const char *http = "";
    for (uint32_t i = 0; leader && leader != b->cfg.node_id && i < b->cfg.cluster_n; i++)
        if (b->cfg.nodes[i].id == leader)
            http = b->cfg.nodes[i].http;
    reply(req, 421, "Misdirected Request",
          json_pack("{s:s,s:s,s:I,s:s}", "error", "NOT_LEADER", "message",
                    "changes go to the primary of __meta (retry there, or later)", "leader",
                    (json_int_t)leader, "leader_http", http));
}

static void change_post(struct broker *b, struct evhttp_request *req)
{
    struct evbuffer *in = evhttp_request_get_input_buffer(req);
    size_t len = in ? evbuffer_get_length(in) : 0;
    if (len == 0 || len > ADMIN_BODY_MAX) {
        error_reply(req, 400, "Bad Request", "EINVAL", "the body is one JSON change of at most 64 KiB");
        return;
    }
    char *buf = malloc(len);
    if (!buf || evbuffer_copyout(in, buf, len) != (ev_ssize_t)len) {
        free(buf);
        error_reply(req, 500, "Internal Server Error", "ENOMEM", "out of memory");
        return;
    }
    struct auth_change c;
    char why[200];
    int rc = auth_change_parse(buf, len, false, &c, why, sizeof why);
    free(buf);
    if (rc) {
        error_reply(req, 400, "Bad Request", "EINVAL", why);
        return;
    }
    if (precheck(b, req, &c))
        return;
    struct auth_admin_op *op = calloc(1, sizeof *op);
    if (!op) {
        error_reply(req, 500, "Internal Server Error", "ENOMEM", "out of memory");
        return;
    }
    snprintf(op->op, sizeof op->op, "%s", auth_change_name(c.op));
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    int64_t now = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
    if (c.op == AUTH_CH_KEY_CREATE) {
        /* the broker draws the key; the record holds its hash only */
        struct auth_store *tmp = auth_store_new();
        rc = tmp ? auth_key_create(tmp, c.key.tenant, c.key.principal, now, op->key) : -ENOMEM;
        if (rc == 0 && auth_key_find(auth_store_in_use(b), tmp->keys[0].id))
            rc = VERITY_EEXIST; /* 2^-64: the client retries */
        if (rc == 0) {
            c.key = tmp->keys[0];
            c.op = AUTH_CH_KEY_ADD;
        }
        auth_store_free(tmp);
        if (rc) {
            op_free(op);
            error_reply(req, 503, "Service Unavailable", verity_errname(rc), "no key made");
            return;
        }
    }
    char *change = auth_change_dump(&c);
    const struct auth_http_who *who = auth_http_who(b);
    char by[AUTH_TENANT_MAX + AUTH_PRINCIPAL_MAX + 2];
    snprintf(by, sizeof by, "%s/%s", who ? who->tenant : "", who ? who->principal : "");
    json_t *rec = change ? json_pack("{s:s,s:s,s:I,s:o}", "type", "auth_change", "by", by,
                                     "time_ms", (json_int_t)now, "change",
                                     json_loads(change, 0, NULL))
                         : NULL;
    free(change);
    op->record = rec ? json_dumps(rec, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
    json_decref(rec);
    if (!op->record) {
        op_free(op);
        error_reply(req, 500, "Internal Server Error", "ENOMEM", "out of memory");
        return;
    }
    op->b = b;
    op->req = req;
    if ((rc = meta_append(b, op->record, op_done, op))) {
        op_free(op);
        if (rc == VERITY_ENOTLEADER)
            not_leader(b, req);
        else
            error_reply(req, 503, "Service Unavailable", verity_errname(rc),
                        "the metadata log did not take the change");
        return;
    }
    struct auth_admin_op **head = auth_admin_list(b);
    if (head) {
        op->next = *head;
        if (*head)
            (*head)->prev = op;
        *head = op;
        op->listed = true;
    }
    char q[200];
    blog(BLOG_INFO, "auth_change_proposed", "change=%s by=%s", op->op, blog_q(by, q, sizeof q));
}

void auth_admin_handle(struct broker *b, struct evhttp_request *req)
{
    if (!auth_on(b)) {
        error_reply(req, 404, "Not Found", "ENOTFOUND",
                    "no security store: the broker runs without auth_file");
        return;
    }
    if (evhttp_request_get_command(req) == EVHTTP_REQ_GET)
        list_store(b, req);
    else
        change_post(b, req);
}
