/*
 * Authentication, tenants, ACLs and quotas on the protocol port (issue 14).
 *
 * With auth_file set, every connection starts without a principal. It gets
 * one from a client certificate whose subject CN the store maps (at the end
 * of the TLS handshake) or from an Authenticate request with an API key.
 * Until then: only Hello and Authenticate are answered (others: ERR_AUTH),
 * frames are at most AUTH_PREAUTH_FRAME_BYTES, and the connection is closed
 * after auth_timeout_ms or AUTH_FAILS_PER_CONN failed attempts; each failed
 * attempt is answered only after auth_fail_delay_ms.
 *
 * Tenants: a principal belongs to one tenant. Every topic and group name in
 * its requests is put inside the tenant ("orders" -> "<tenant>~orders")
 * before the handler sees it, and taken out again in the answer; entries of
 * other tenants are dropped from answers (list_topics, metadata of every
 * topic, list_groups). So a name never resolves to another tenant's object,
 * and a client cannot name one: '~' in a name is refused. Handlers are
 * unchanged; the rewrite walks the protobuf-c descriptors, so a new request
 * or response type is covered by its field names ("topic", "topics",
 * "dlq_topic", "group", and "name" in the *Topic* messages).
 *
 * ACLs are checked on every request against the store in use (reloaded on
 * SIGHUP), so a revoked key or a removed rule takes effect on open
 * connections at their next request: the principal is looked up again each
 * time by key id or certificate subject. A request type without a row in
 * the ACL table is denied.
 *
 * Quotas: produce_bytes_per_s and fetch_bytes_per_s per principal (or per
 * principal of a tenant with "*"), token buckets with one second of burst.
 * A produce is charged its payload before it runs; a fetch is charged what
 * it returns. A request that finds its bucket in debt waits (throttling) until
 * the debt is paid; a wait over QUOTA_WAIT_MAX_MS is refused with EQUOTA
 * naming the quota.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <jansson.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <protobuf-c/protobuf-c.h>

#include "broker/audit.h"
#include "broker/auth.h"
#include "broker/auth_store.h"
#include "broker/blog.h"
#include "broker/broker_int.h"
#include "verity/errors.h"
#include "verity/verify.h"

#define QUOTA_WAIT_MAX_MS 10000
#define QUOTA_BUCKETS 256
#define FAIL_LOG_PER_SEC 10     /* failure lines logged a second */
#define FAIL_AUDIT_PER_SEC 1000 /* failure events audited a second */

struct quota_bucket {
    char key[AUTH_TENANT_MAX + AUTH_PRINCIPAL_MAX + 2]; /* tenant/principal, tenant/+ */
    double produce_tokens;                             /* bytes; negative: debt */
    double fetch_tokens;
    double request_tokens;                             /* requests */
    int64_t last_ns;
    bool filled;     /* the first refill (a full second of burst) happened */
    uint64_t conns;  /* authenticated connections counted here now */
    struct quota_bucket *next;
};

struct auth_state {
    struct auth_store *store; /* in use: file, then b->meta.auth (auth_store_merge) */
    struct auth_store *file;  /* auth_file as last loaded */
    struct quota_bucket *buckets[QUOTA_BUCKETS];
    int64_t log_ns; /* the second counted by the rate limits below */
    uint32_t log_n; /* failure events in it */
    uint64_t log_suppressed;   /* failure events not logged since the last line */
    uint64_t audit_suppressed; /* failure events neither logged nor audited */
    struct audit *audit; /* broker/audit.c: the __audit topics */
    struct auth_http_who http_who; /* auth_http.c: the HTTP request being answered */
    struct auth_http_stats http_stats;
    struct auth_http_late *http_late; /* auth_http.c: wrong bearer keys being delayed */
    struct auth_admin_op *admin_ops;  /* auth_admin.c: changes waiting for the meta log */
    uint64_t quota_waits, quota_refusals; /* requests throttled / refused by a quota */
};

enum auth_how { HOW_NONE, HOW_KEY, HOW_CERT };

struct auth_conn {
    enum auth_how how;
    char tenant[AUTH_TENANT_MAX + 1];
    char principal[AUTH_PRINCIPAL_MAX + 1];
    char key_id[AUTH_KEY_ID_HEX + 1];    /* HOW_KEY */
    char subject[AUTH_SUBJECT_MAX + 1];  /* HOW_CERT (also kept for a later key) */
    uint32_t fails;
    bool counted;           /* in its buckets' conns (the connections quota) */
    char quota_msg[200];    /* a principal refused by the connections quota */
    struct event *deadline_ev;
};

/* What auth_gate put on a request: the original name pointers, the new
 * strings, a throttling timer. */
struct swap {
    void **slot;
    void *orig;
};
struct auth_undo {
    struct swap *swaps;
    size_t n, cap;
    struct {
        size_t *slot;
        size_t orig;
    } *counts;
    size_t nc, capc;
    void **allocs;
    size_t na, capa;
};
struct auth_scope {
    struct auth_undo undo;
    struct event *wait_ev;
    int wait_err; /* answered by the timer with this error (failed Authenticate) */
    char wait_msg[160];
};

/* ---- undo log -------------------------------------------------------------- */

static int undo_swap(struct auth_undo *u, void **slot, void *val)
{
    if (u->n == u->cap) {
        size_t nc = u->cap ? u->cap * 2 : 8;
        struct swap *p = realloc(u->swaps, nc * sizeof *p);
        if (!p)
            return -ENOMEM;
        u->swaps = p;
        u->cap = nc;
    }
    u->swaps[u->n++] = (struct swap){slot, *slot};
    *slot = val;
    return 0;
}

static int undo_count(struct auth_undo *u, size_t *slot, size_t val)
{
    if (u->nc == u->capc) {
        size_t nc = u->capc ? u->capc * 2 : 4;
        void *p = realloc(u->counts, nc * sizeof *u->counts);
        if (!p)
            return -ENOMEM;
        u->counts = p;
        u->capc = nc;
    }
    u->counts[u->nc].slot = slot;
    u->counts[u->nc].orig = *slot;
    u->nc++;
    *slot = val;
    return 0;
}

/* Takes over p (freed with the undo log); -ENOMEM frees it at once. */
static int undo_keep(struct auth_undo *u, void *p)
{
    if (u->na == u->capa) {
        size_t nc = u->capa ? u->capa * 2 : 8;
        void **q = realloc(u->allocs, nc * sizeof *q);
        if (!q) {
            free(p);
            return -ENOMEM;
        }
        u->allocs = q;
        u->capa = nc;
    }
    u->allocs[u->na++] = p;
    return 0;
}

static void undo_run(struct auth_undo *u)
{
    for (size_t i = u->n; i-- > 0;)
        *u->swaps[i].slot = u->swaps[i].orig;
    for (size_t i = u->nc; i-- > 0;)
        *u->counts[i].slot = u->counts[i].orig;
    for (size_t i = 0; i < u->na; i++)
        free(u->allocs[i]);
    free(u->swaps);
    free(u->counts);
    free(u->allocs);
    memset(u, 0, sizeof *u);
}

/* ---- names in messages ----------------------------------------------------- */

enum name_kind { NK_NONE = -1, NK_TOPIC = AUTH_RES_TOPIC, NK_GROUP = AUTH_RES_GROUP };

static enum name_kind field_kind(const ProtobufCMessageDescriptor *d, const ProtobufCFieldDescriptor *f)
{
    if (f->type != PROTOBUF_C_TYPE_STRING)
        return NK_NONE;
    if (strcmp(f->name, "topic") == 0 || strcmp(f->name, "topics") == 0 ||
        strcmp(f->name, "dlq_topic") == 0)
        return NK_TOPIC;
    if (strcmp(f->name, "group") == 0)
        return NK_GROUP;
    if (strcmp(f->name, "name") == 0 && strstr(d->name, "Topic"))
        return NK_TOPIC;
    return NK_NONE;
}

/* The body message of env (NULL when none). */
static ProtobufCMessage *env_body(const Verity__Envelope *env)
{
    const ProtobufCMessageDescriptor *d = env->base.descriptor;
    for (unsigned i = 0; i < d->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &d->fields[i];
        if (f->id == (uint32_t)env->body_case && f->type == PROTOBUF_C_TYPE_MESSAGE)
            return *(ProtobufCMessage **)((char *)env + f->offset);
    }
    return NULL;
}

/* ---- the ACL table --------------------------------------------------------- */

#define ANY 0x100u /* any one of the ops suffices */
#define PREAUTH 0x200u
#define LIST 0x400u /* an answer listing objects: filtered by describe rights */

static const struct acl_row {
    Verity__Envelope__BodyCase type;
    unsigned topic_ops; /* checked on every topic name (0: not checked) */
    unsigned group_ops; /* checked on every group name */
    unsigned flags;
} acl_rows[] = {
    {VERITY__ENVELOPE__BODY_HELLO_REQ, 0, 0, PREAUTH},
    {VERITY__ENVELOPE__BODY_AUTHENTICATE_REQ, 0, 0, PREAUTH},
    {VERITY__ENVELOPE__BODY_METADATA_REQ, AUTH_OP_DESCRIBE | AUTH_OP_PRODUCE | AUTH_OP_CONSUME, 0,
     ANY | LIST},
    {VERITY__ENVELOPE__BODY_CREATE_TOPIC_REQ, AUTH_OP_ADMIN, 0, 0},
    {VERITY__ENVELOPE__BODY_DELETE_TOPIC_REQ, AUTH_OP_ADMIN, 0, 0},
    {VERITY__ENVELOPE__BODY_LIST_TOPICS_REQ, 0, 0, LIST},
    {VERITY__ENVELOPE__BODY_DESCRIBE_TOPIC_REQ,
     AUTH_OP_DESCRIBE | AUTH_OP_PRODUCE | AUTH_OP_CONSUME, 0, ANY},
    {VERITY__ENVELOPE__BODY_INIT_PRODUCER_REQ, 0, 0, 0},
    {VERITY__ENVELOPE__BODY_PRODUCE_REQ, AUTH_OP_PRODUCE, 0, 0},
    {VERITY__ENVELOPE__BODY_FETCH_REQ, AUTH_OP_CONSUME, 0, 0},
    {VERITY__ENVELOPE__BODY_LIST_OFFSETS_REQ, AUTH_OP_CONSUME | AUTH_OP_DESCRIBE, 0, ANY},
    {VERITY__ENVELOPE__BODY_CREATE_GROUP_REQ, AUTH_OP_CONSUME, AUTH_OP_ADMIN, 0},
    {VERITY__ENVELOPE__BODY_DELETE_GROUP_REQ, 0, AUTH_OP_ADMIN, 0},
    {VERITY__ENVELOPE__BODY_LIST_GROUPS_REQ, 0, 0, LIST},
    {VERITY__ENVELOPE__BODY_DESCRIBE_GROUP_REQ, 0, AUTH_OP_DESCRIBE | AUTH_OP_GROUP, ANY},
    {VERITY__ENVELOPE__BODY_GROUP_PENDING_REQ, 0, AUTH_OP_DESCRIBE | AUTH_OP_GROUP, ANY},
    {VERITY__ENVELOPE__BODY_RESET_GROUP_REQ, 0, AUTH_OP_ADMIN, 0},
    {VERITY__ENVELOPE__BODY_JOIN_GROUP_REQ, 0, AUTH_OP_GROUP, 0},
    {VERITY__ENVELOPE__BODY_HEARTBEAT_REQ, 0, AUTH_OP_GROUP, 0},
    {VERITY__ENVELOPE__BODY_LEAVE_GROUP_REQ, 0, AUTH_OP_GROUP, 0},
    {VERITY__ENVELOPE__BODY_GROUP_FETCH_REQ, 0, AUTH_OP_GROUP, 0},
    {VERITY__ENVELOPE__BODY_ACK_REQ, 0, AUTH_OP_GROUP, 0},
    {VERITY__ENVELOPE__BODY_NACK_REQ, 0, AUTH_OP_GROUP, 0},
    {VERITY__ENVELOPE__BODY_EXTEND_REQ, 0, AUTH_OP_GROUP, 0},
    {VERITY__ENVELOPE__BODY_TERM_REQ, 0, AUTH_OP_GROUP, 0},
};

static const struct acl_row *acl_row(Verity__Envelope__BodyCase t)
{
    for (size_t i = 0; i < sizeof acl_rows / sizeof acl_rows[0]; i++)
        if (acl_rows[i].type == t)
            return &acl_rows[i];
    return NULL;
}

/* ---- logging (rate-limited for what a client can cause) -------------------- */

/* What a client can cause (failed logins, denials, quota refusals) is
 * rate-limited twice: the audit trail records up to FAIL_AUDIT_PER_SEC such
 * events a second, the log only the first FAIL_LOG_PER_SEC of them. A burst
 * of one client's failures (or a test's) so no longer hides the next
 * tenant's denial from its audit topic, while the log stays readable.
 * Each record carries how many before it were dropped. */
struct gate {
    bool line;          /* log it too */
    uint64_t line_sup;  /* events not logged since the last line (line only) */
    uint64_t audit_sup; /* events not recorded at all since the last record */
};

static bool may_log(struct auth_state *a, struct gate *g)
{
    int64_t now = mono_ns();
    if (now - a->log_ns >= 1000000000) {
        a->log_ns = now;
        a->log_n = 0;
    }
    if (a->log_n >= FAIL_AUDIT_PER_SEC) {
        a->log_suppressed++;
        a->audit_suppressed++;
        return false;
    }
    g->line = a->log_n < FAIL_LOG_PER_SEC;
    a->log_n++;
    g->audit_sup = a->audit_suppressed;
    a->audit_suppressed = 0;
    g->line_sup = 0;
    if (g->line) {
        g->line_sup = a->log_suppressed;
        a->log_suppressed = 0;
    } else {
        a->log_suppressed++;
    }
    return true;
}

/* ---- start, reload ----------------------------------------------------------- */

/* The store in use: auth_file's entries, then those made over the network
 * (the metadata log's auth_change records, b->meta.auth). */
static int merged(struct broker *b, const struct auth_store *file, struct auth_store **out)
{
    static const struct auth_store empty;
    return auth_store_merge(file, b->meta.auth ? b->meta.auth : &empty, out);
}

int auth_open(struct broker *b)
{
    if (!b->cfg.auth_file[0])
        return 0;
    char why[400], q[500];
    struct auth_state *a = calloc(1, sizeof *a);
    if (!a)
        return -ENOMEM;
    int rc = auth_store_load(b->cfg.auth_file, false, &a->file, why, sizeof why);
    if (rc) {
        blog(BLOG_ERROR, "auth_config_failed", "reason=%s", blog_q(why, q, sizeof q));
        free(a);
        return rc;
    }
    if ((rc = merged(b, a->file, &a->store)) || !(a->audit = audit_new(b))) {
        auth_store_free(a->store);
        auth_store_free(a->file);
        free(a);
        return rc ? rc : -ENOMEM;
    }
    b->auth = a;
    blog(BLOG_INFO, "auth_loaded",
         "file=%s keys=%zu certs=%zu acls=%zu quotas=%zu roles=%zu meta_entries=%zu",
         b->cfg.auth_file, a->store->n_keys, a->store->n_certs, a->store->n_acls,
         a->store->n_quotas, a->store->n_roles,
         b->meta.auth ? b->meta.auth->n_keys + b->meta.auth->n_certs + b->meta.auth->n_acls +
                            b->meta.auth->n_quotas + b->meta.auth->n_roles
                      : (size_t)0);
    return 0;
}

void auth_close(struct broker *b)
{
    struct auth_state *a = b->auth;
    if (!a)
        return;
    auth_http_flush(b); /* none left after http_stop; a no-op then */
    for (size_t i = 0; i < QUOTA_BUCKETS; i++) {
        struct quota_bucket *q = a->buckets[i], *next;
        for (; q; q = next) {
            next = q->next;
            free(q);
        }
    }
    audit_free(a->audit);
    auth_store_free(a->store);
    auth_store_free(a->file);
    free(a);
    b->auth = NULL;
}

struct audit *auth_audit(struct broker *b)
{
    return b->auth ? b->auth->audit : NULL;
}

const struct auth_store *auth_store_in_use(struct broker *b)
{
    return b->auth ? b->auth->store : NULL;
}

struct auth_http_who *auth_http_who(struct broker *b)
{
    return b->auth ? &b->auth->http_who : NULL;
}

struct auth_http_stats *auth_http_stats(struct broker *b)
{
    return b->auth ? &b->auth->http_stats : NULL;
}

struct auth_admin_op **auth_admin_list(struct broker *b)
{
    return b->auth ? &b->auth->admin_ops : NULL;
}

struct auth_http_late **auth_http_late_list(struct broker *b)
{
    return b->auth ? &b->auth->http_late : NULL;
}

void auth_metrics_render(struct broker *b, struct evbuffer *o)
{
    struct auth_state *a = b->auth;
    if (!a)
        return;
    struct audit_stats st;
    audit_stats(a->audit, &st);
    met_family(o, "verity_audit_events_total", "counter",
               "Security events appended to the audit topics (one per topic written).");
    evbuffer_add_printf(o, "verity_audit_events_total %" PRIu64 "\n", st.events);
    met_family(o, "verity_audit_dropped_total", "counter",
               "Security events not appended (queue full, out of memory, shutting down).");
    evbuffer_add_printf(o, "verity_audit_dropped_total %" PRIu64 "\n", st.dropped);
    met_family(o, "verity_audit_queue", "gauge", "Security events waiting to be appended.");
    evbuffer_add_printf(o, "verity_audit_queue %" PRIu64 "\n", st.queued);
    met_family(o, "verity_http_auth_refused_total", "counter",
               "Admin HTTP requests refused: reason=unauthenticated (401) or denied (403).");
    evbuffer_add_printf(o, "verity_http_auth_refused_total{reason=\"unauthenticated\"} %" PRIu64 "\n",
                        a->http_stats.unauthenticated);
    evbuffer_add_printf(o, "verity_http_auth_refused_total{reason=\"denied\"} %" PRIu64 "\n",
                        a->http_stats.denied);
    met_family(o, "verity_http_auth_delayed", "gauge",
               "Admin HTTP 401s for a wrong key waiting out auth_fail_delay_ms.");
    evbuffer_add_printf(o, "verity_http_auth_delayed %" PRIu64 "\n", a->http_stats.late);
    met_family(o, "verity_quota_throttled_total", "counter",
               "Requests made to wait by a rate quota (bytes/s, requests/s).");
    evbuffer_add_printf(o, "verity_quota_throttled_total %" PRIu64 "\n", a->quota_waits);
    met_family(o, "verity_quota_refused_total", "counter",
               "Requests and authentications refused with ERR_QUOTA (storage_bytes, connections, "
               "a rate wait over 10 s).");
    evbuffer_add_printf(o, "verity_quota_refused_total %" PRIu64 "\n", a->quota_refusals);
}

bool auth_log_ok(struct broker *b, bool *line, uint64_t *line_sup, uint64_t *audit_sup)
{
    struct gate g;
    if (!b->auth || !may_log(b->auth, &g))
        return false;
    *line = g.line;
    *line_sup = g.line_sup;
    *audit_sup = g.audit_sup;
    return true;
}

/* Audit events for what changed between two stores (a SIGHUP after
 * `verity auth ...`). Returns the number of changes. */
#define AUDIT_DIFF_MAX 2048 /* entries per list compared one by one (the diff is quadratic) */

static size_t audit_changes(struct audit *au, const struct auth_store *o, const struct auth_store *n)
{
    size_t changes = 0;
    if (o->n_keys + n->n_keys > AUDIT_DIFF_MAX || o->n_acls + n->n_acls > AUDIT_DIFF_MAX ||
        o->n_certs + n->n_certs > AUDIT_DIFF_MAX || o->n_quotas + n->n_quotas > AUDIT_DIFF_MAX) {
        /* A large store: one event with the counts instead of a quadratic diff. */
        audit_emit(au, NULL, "store_reloaded", "{s:I, s:I, s:I, s:I}", "keys",
                   (json_int_t)n->n_keys, "certs", (json_int_t)n->n_certs, "acls",
                   (json_int_t)n->n_acls, "quotas", (json_int_t)n->n_quotas);
        return 1;
    }
    for (size_t i = 0; i < n->n_keys; i++)
        if (!auth_key_find(o, n->keys[i].id) && ++changes)
            audit_emit(au, n->keys[i].tenant, "key_created", "{s:s, s:s}", "key_id", n->keys[i].id,
                       "principal", n->keys[i].principal);
    for (size_t i = 0; i < o->n_keys; i++)
        if (!auth_key_find(n, o->keys[i].id) && ++changes)
            audit_emit(au, o->keys[i].tenant, "key_revoked", "{s:s, s:s}", "key_id", o->keys[i].id,
                       "principal", o->keys[i].principal);
    for (int pass = 0; pass < 2; pass++) {
        const struct auth_store *x = pass ? o : n, *y = pass ? n : o;
        for (size_t i = 0; i < x->n_certs; i++) {
            const struct auth_cert *c = &x->certs[i], *m = auth_cert_find(y, c->subject);
            if (m && strcmp(m->tenant, c->tenant) == 0 && strcmp(m->principal, c->principal) == 0)
                continue;
            changes++;
            audit_emit(au, c->tenant, pass ? "cert_unmapped" : "cert_mapped", "{s:s, s:s}",
                       "subject", c->subject, "principal", c->principal);
        }
        for (size_t i = 0; i < x->n_acls; i++) {
            const struct auth_acl *a = &x->acls[i];
            bool found = false;
            for (size_t j = 0; j < y->n_acls && !found; j++) {
                const struct auth_acl *b = &y->acls[j];
                found = strcmp(a->tenant, b->tenant) == 0 && strcmp(a->principal, b->principal) == 0 &&
                        a->res == b->res && strcmp(a->pattern, b->pattern) == 0 &&
                        a->ops == b->ops && a->deny == b->deny;
            }
            if (found)
                continue;
            changes++;
            char ops[64], res[AUTH_PATTERN_MAX + 16];
            auth_op_names(a->ops, ops, sizeof ops);
            snprintf(res, sizeof res, "%s:%s", auth_res_name(a->res), a->pattern);
            audit_emit(au, a->tenant, pass ? "acl_removed" : "acl_added",
                       "{s:s, s:s, s:s, s:s}", "principal", a->principal, "resource", res, "ops",
                       ops, "effect", a->deny ? "deny" : "allow");
        }
        for (size_t i = 0; i < x->n_quotas; i++) {
            const struct auth_quota *q = &x->quotas[i];
            const struct auth_quota *m = NULL;
            for (size_t j = 0; j < y->n_quotas && !m; j++)
                if (strcmp(y->quotas[j].tenant, q->tenant) == 0 &&
                    strcmp(y->quotas[j].principal, q->principal) == 0)
                    m = &y->quotas[j];
            if (m && (pass || memcmp(m, q, sizeof *q) == 0))
                continue; /* unchanged (or changed: reported once, by the new side) */
            changes++;
            if (pass)
                audit_emit(au, q->tenant, "quota_removed", "{s:s}", "principal", q->principal);
            else
                audit_emit(au, q->tenant, "quota_set", "{s:s, s:I, s:I, s:I, s:I, s:I}",
                           "principal", q->principal, "produce_bytes_per_s",
                           (json_int_t)q->produce_bytes_per_s, "fetch_bytes_per_s",
                           (json_int_t)q->fetch_bytes_per_s, "requests_per_s",
                           (json_int_t)q->requests_per_s, "connections",
                           (json_int_t)q->connections, "storage_bytes",
                           (json_int_t)q->storage_bytes);
        }
    }
    return changes;
}

void auth_reload(struct broker *b)
{
    struct auth_state *a = b->auth;
    if (!a)
        return;
    char why[400], q[500];
    struct auth_store *s = NULL;
    int rc = auth_store_load(b->cfg.auth_file, false, &s, why, sizeof why);
    if (rc) {
        blog(BLOG_ERROR, "auth_reload_failed", "reason=%s (the previous store stays in use)",
             blog_q(why, q, sizeof q));
        return;
    }
    struct auth_store *m = NULL;
    if ((rc = merged(b, s, &m))) {
        blog(BLOG_ERROR, "auth_reload_failed", "reason=%s (the previous store stays in use)",
             verity_errname(rc));
        auth_store_free(s);
        return;
    }
    size_t changes = audit_changes(a->audit, a->store, m);
    auth_store_free(a->store);
    auth_store_free(a->file);
    a->file = s;
    a->store = m;
    blog(BLOG_INFO, "auth_reloaded", "file=%s keys=%zu certs=%zu acls=%zu quotas=%zu changes=%zu",
         b->cfg.auth_file, m->n_keys, m->n_certs, m->n_acls, m->n_quotas, changes);
}

void auth_meta_replaced(struct broker *b)
{
    struct auth_state *a = b->auth;
    if (!a)
        return;
    struct auth_store *m = NULL;
    int rc = merged(b, a->file, &m);
    if (rc) {
        blog(BLOG_ERROR, "auth_merge_failed", "error=%s", verity_errname(rc));
        return;
    }
    size_t changes = audit_changes(a->audit, a->store, m);
    auth_store_free(a->store);
    a->store = m;
    blog(BLOG_INFO, "auth_meta_replaced", "keys=%zu certs=%zu acls=%zu quotas=%zu changes=%zu",
         m->n_keys, m->n_certs, m->n_acls, m->n_quotas, changes);
}

const struct auth_store *auth_store_file(struct broker *b)
{
    return b->auth ? b->auth->file : NULL;
}

void auth_meta_changed(struct broker *b, const struct auth_change *c, const char *by)
{
    struct auth_state *a = b->auth;
    if (!a)
        return; /* replay at start, before auth_open: it merges then */
    struct auth_store *m = NULL;
    char tenant[AUTH_TENANT_MAX + 1] = "", principal[AUTH_PRINCIPAL_MAX + 1] = "";
    if (c->op == AUTH_CH_KEY_REVOKE) {
        const struct auth_key *k = auth_key_find(a->store, c->key.id);
        if (k) {
            snprintf(tenant, sizeof tenant, "%s", k->tenant);
            snprintf(principal, sizeof principal, "%s", k->principal);
        }
    }
    int rc = merged(b, a->file, &m);
    if (rc) {
        /* the change is in b->meta.auth; the next change or SIGHUP merges it */
        blog(BLOG_ERROR, "auth_merge_failed", "error=%s", verity_errname(rc));
        return;
    }
    auth_store_free(a->store);
    a->store = m;
    struct audit *au = a->audit;
    char ops[64], res[AUTH_PATTERN_MAX + 16];
    switch (c->op) {
    case AUTH_CH_KEY_ADD:
        audit_emit(au, c->key.tenant, "key_created", "{s:s, s:s, s:s}", "key_id", c->key.id,
                   "principal", c->key.principal, "by", by);
        break;
    case AUTH_CH_KEY_REVOKE:
        audit_emit(au, tenant, "key_revoked", "{s:s, s:s, s:s}", "key_id", c->key.id,
                   "principal", principal, "by", by);
        break;
    case AUTH_CH_ACL_ADD:
    case AUTH_CH_ACL_REMOVE:
        auth_op_names(c->acl.ops, ops, sizeof ops);
        snprintf(res, sizeof res, "%s:%s", auth_res_name(c->acl.res), c->acl.pattern);
        audit_emit(au, c->acl.tenant, c->op == AUTH_CH_ACL_ADD ? "acl_added" : "acl_removed",
                   "{s:s, s:s, s:s, s:s, s:s}", "principal", c->acl.principal, "resource", res,
                   "ops", ops, "effect", c->acl.deny ? "deny" : "allow", "by", by);
        break;
    case AUTH_CH_CERT_ADD:
        audit_emit(au, c->cert.tenant, "cert_mapped", "{s:s, s:s, s:s}", "subject",
                   c->cert.subject, "principal", c->cert.principal, "by", by);
        break;
    case AUTH_CH_CERT_REMOVE:
        audit_emit(au, NULL, "cert_unmapped", "{s:s, s:s}", "subject", c->cert.subject, "by", by);
        break;
    case AUTH_CH_QUOTA_SET:
        audit_emit(au, c->quota.tenant, "quota_set", "{s:s, s:I, s:I, s:I, s:I, s:I, s:s}",
                   "principal", c->quota.principal, "produce_bytes_per_s",
                   (json_int_t)c->quota.produce_bytes_per_s, "fetch_bytes_per_s",
                   (json_int_t)c->quota.fetch_bytes_per_s, "requests_per_s",
                   (json_int_t)c->quota.requests_per_s, "connections",
                   (json_int_t)c->quota.connections, "storage_bytes",
                   (json_int_t)c->quota.storage_bytes, "by", by);
        break;
    case AUTH_CH_QUOTA_REMOVE:
        audit_emit(au, c->quota.tenant, "quota_removed", "{s:s, s:s}", "principal",
                   c->quota.principal, "by", by);
        break;
    case AUTH_CH_ROLE_GRANT:
    case AUTH_CH_ROLE_REVOKE:
        audit_emit(au, c->role.tenant,
                   c->op == AUTH_CH_ROLE_GRANT ? "role_granted" : "role_revoked",
                   "{s:s, s:s, s:s}", "principal", c->role.principal, "role", c->role.role, "by",
                   by);
        break;
    case AUTH_CH_KEY_CREATE:
        break;
    }
    char q[120];
    blog(BLOG_INFO, "auth_changed", "change=%s by=%s", auth_change_name(c->op),
         blog_q(by, q, sizeof q));
}

/* ---- connections ------------------------------------------------------------- */

static void deadline_cb(evutil_socket_t fd, short what, void *arg)
{
    struct conn *c = arg;
    (void)fd;
    (void)what;
    if (c->dead || !c->auth || c->auth->how != HOW_NONE)
        return;
    struct gate g;
    if (may_log(c->b->auth, &g)) {
        if (g.line)
            blog(BLOG_WARN, "auth_timeout", "conn=%" PRIu64 " peer=%s timeout_ms=%" PRIu32, c->id,
                 c->peer, c->b->cfg.auth_timeout_ms);
        audit_emit(c->b->auth->audit, NULL, "auth_timeout", "{s:s, s:s, s:I}", "peer", c->peer,
                   "port", "client", "suppressed", (json_int_t)g.audit_sup);
    }
    conn_close_error(c, VERITY_EAUTH, "not authenticated within auth_timeout_ms");
}

int auth_conn_open(struct conn *c)
{
    struct auth_conn *ac = calloc(1, sizeof *ac);
    if (!ac)
        return -ENOMEM;
    if (c->b->cfg.auth_timeout_ms) {
        ac->deadline_ev = evtimer_new(c->b->base, deadline_cb, c);
        struct timeval tv = {(time_t)(c->b->cfg.auth_timeout_ms / 1000),
                             (suseconds_t)(c->b->cfg.auth_timeout_ms % 1000) * 1000};
        if (!ac->deadline_ev || evtimer_add(ac->deadline_ev, &tv) != 0) {
            if (ac->deadline_ev)
                event_free(ac->deadline_ev);
            free(ac);
            return -ENOMEM;
        }
    }
    c->auth = ac;
    return 0;
}

static bool conns_take(struct conn *c, const char *tenant, const char *principal, char *why,
                       size_t cap);
static void conns_give(struct conn *c);

void auth_conn_close(struct conn *c)
{
    if (!c->auth)
        return;
    conns_give(c);
    if (c->auth->deadline_ev)
        event_free(c->auth->deadline_ev);
    free(c->auth);
    c->auth = NULL;
}

/* Gives c its principal; false when the connections quota refuses it (the
 * quota named in c->auth->quota_msg; the connection stays without one). */
static bool set_principal(struct conn *c, enum auth_how how, const char *tenant,
                          const char *principal)
{
    struct auth_conn *ac = c->auth;
    conns_give(c);
    if (!conns_take(c, tenant, principal, ac->quota_msg, sizeof ac->quota_msg)) {
        ac->how = HOW_NONE;
        c->b->auth->quota_refusals++;
        blog(BLOG_WARN, "quota_exceeded", "conn=%" PRIu64 " peer=%s tenant=%s principal=%s "
             "quota=connections", c->id, c->peer, tenant, principal);
        audit_emit(c->b->auth->audit, tenant, "quota_exceeded", "{s:s, s:s, s:s, s:s}",
                   "principal", principal, "quota", "connections", "reason", ac->quota_msg, "peer",
                   c->peer);
        return false;
    }
    ac->quota_msg[0] = '\0';
    ac->how = how;
    snprintf(ac->tenant, sizeof ac->tenant, "%s", tenant);
    snprintf(ac->principal, sizeof ac->principal, "%s", principal);
    ac->fails = 0;
    if (ac->deadline_ev)
        evtimer_del(ac->deadline_ev);
    return true;
}

/* The subject CN of ssl's peer certificate into cn (cap bytes) when it
 * verified; "" otherwise. */
static void verified_cn(struct ssl_st *ssl, char *cn, size_t cap)
{
    cn[0] = '\0';
    X509 *cert = ssl ? SSL_get1_peer_certificate(ssl) : NULL;
    if (!cert)
        return;
    if (SSL_get_verify_result(ssl) == X509_V_OK &&
        X509_NAME_get_text_by_NID(X509_get_subject_name(cert), NID_commonName, cn, (int)cap) < 0)
        cn[0] = '\0';
    X509_free(cert);
}

void auth_conn_tls(struct conn *c, struct ssl_st *ssl)
{
    if (!c->auth || !c->b->auth || !ssl)
        return;
    char cn[AUTH_SUBJECT_MAX + 1];
    verified_cn(ssl, cn, sizeof cn);
    if (!cn[0])
        return;
    const struct auth_cert *m = auth_cert_find(c->b->auth->store, cn);
    char q[200];
    if (!m) {
        blog(BLOG_INFO, "auth_cert_unmapped", "conn=%" PRIu64 " peer=%s subject=%s", c->id,
             c->peer, blog_q(cn, q, sizeof q));
        return;
    }
    snprintf(c->auth->subject, sizeof c->auth->subject, "%s", cn);
    if (!set_principal(c, HOW_CERT, m->tenant, m->principal))
        return;
    blog(BLOG_INFO, "auth_ok", "conn=%" PRIu64 " peer=%s tenant=%s principal=%s method=cert "
         "subject=%s", c->id, c->peer, m->tenant, m->principal, blog_q(cn, q, sizeof q));
    audit_emit(c->b->auth->audit, m->tenant, "auth_ok", "{s:s, s:s, s:s, s:s, s:s}", "principal",
               m->principal, "method", "cert", "subject", cn, "peer", c->peer, "port", "client");
}

bool auth_frame_ok(const struct conn *c, uint64_t total)
{
    return !c->auth || c->auth->how != HOW_NONE || total <= AUTH_PREAUTH_FRAME_BYTES;
}

/* Whether the connection's principal still stands in the store in use (a
 * key revoked or a mapping removed since: no longer). */
static bool principal_current(struct conn *c)
{
    struct auth_conn *ac = c->auth;
    const struct auth_store *s = c->b->auth->store;
    if (ac->how == HOW_KEY) {
        const struct auth_key *k = auth_key_find(s, ac->key_id);
        return k && strcmp(k->tenant, ac->tenant) == 0 && strcmp(k->principal, ac->principal) == 0;
    }
    if (ac->how == HOW_CERT) {
        const struct auth_cert *m = auth_cert_find(s, ac->subject);
        return m && strcmp(m->tenant, ac->tenant) == 0 && strcmp(m->principal, ac->principal) == 0;
    }
    return false;
}

/* ---- quotas ------------------------------------------------------------------ */

static struct quota_bucket *bucket_get(struct auth_state *a, const char *tenant,
                                       const char *principal)
{
    char key[sizeof ((struct quota_bucket *)0)->key];
    snprintf(key, sizeof key, "%s/%s", tenant, principal);
    uint32_t h = 2166136261u;
    for (const char *p = key; *p; p++)
        h = (h ^ (uint8_t)*p) * 16777619u;
    struct quota_bucket **pp = &a->buckets[h % QUOTA_BUCKETS];
    for (; *pp; pp = &(*pp)->next)
        if (strcmp((*pp)->key, key) == 0)
            return *pp;
    struct quota_bucket *q = calloc(1, sizeof *q);
    if (!q)
        return NULL;
    snprintf(q->key, sizeof q->key, "%s", key);
    q->last_ns = mono_ns();
    q->produce_tokens = q->fetch_tokens = -1; /* filled at the first refill */
    *pp = q;
    return q;
}

/* Refills tokens at rate (one second of burst at most). */
static void refill(double *tokens, uint64_t rate, double dt_s)
{
    *tokens += dt_s * (double)rate;
    if (*tokens > (double)rate)
        *tokens = (double)rate;
}

/* Brings bk's three buckets up to now under q's rates. */
static void bucket_refill(struct quota_bucket *bk, const struct auth_quota *q)
{
    int64_t now = mono_ns();
    double dt = bk->filled ? (double)(now - bk->last_ns) / 1e9 : 1.0;
    if (!bk->filled)
        bk->produce_tokens = bk->fetch_tokens = bk->request_tokens = 0;
    bk->filled = true;
    bk->last_ns = now;
    if (q->produce_bytes_per_s)
        refill(&bk->produce_tokens, q->produce_bytes_per_s, dt);
    if (q->fetch_bytes_per_s)
        refill(&bk->fetch_tokens, q->fetch_bytes_per_s, dt);
    if (q->requests_per_s)
        refill(&bk->request_tokens, q->requests_per_s, dt);
}

/* The wait (ms) for tokens at rate, naming the quota in which when it is
 * the longest so far. */
static void wait_for_tokens(double tokens, uint64_t rate, const char *quota, const char *tenant,
                            const char *principal, int64_t *ms, char *which, size_t cap)
{
    if (!rate || tokens >= 0)
        return;
    int64_t w = (int64_t)(-tokens / (double)rate * 1000.0) + 1;
    if (w <= *ms)
        return;
    *ms = w;
    snprintf(which, cap, "%s %" PRIu64 " of %s/%s", quota, rate, tenant, principal);
}

/* Milliseconds r must wait for its quotas (0: none), charging the request
 * and a produce's bytes to the principal's bucket and the tenant's ("+"). */
static int64_t quota_charge(struct auth_state *a, const char *tenant, const char *principal,
                            bool produce, uint64_t produce_bytes, bool fetch, char *which,
                            size_t cap)
{
    int64_t ms = 0;
    for (int k = 0; k < 2; k++) {
        const char *who = k ? AUTH_TENANT_TOTAL : principal;
        const struct auth_quota *q = auth_quota_find(a->store, tenant, who);
        if (!q || !(q->produce_bytes_per_s || q->fetch_bytes_per_s || q->requests_per_s))
            continue;
        struct quota_bucket *bk = bucket_get(a, tenant, who);
        if (!bk)
            continue;
        bucket_refill(bk, q);
        if (q->requests_per_s) {
            bk->request_tokens -= 1;
            wait_for_tokens(bk->request_tokens, q->requests_per_s, "requests_per_s", tenant,
                            who, &ms, which, cap);
        }
        if (produce && q->produce_bytes_per_s) {
            bk->produce_tokens -= (double)produce_bytes;
            wait_for_tokens(bk->produce_tokens, q->produce_bytes_per_s, "produce_bytes_per_s",
                            tenant, who, &ms, which, cap);
        }
        if (fetch)
            wait_for_tokens(bk->fetch_tokens, q->fetch_bytes_per_s, "fetch_bytes_per_s",
                            tenant, who, &ms, which, cap);
    }
    return ms;
}

static int64_t quota_wait_ms(struct req *r, char *which, size_t cap)
{
    struct auth_conn *ac = r->conn->auth;
    bool produce = r->type == VERITY__ENVELOPE__BODY_PRODUCE_REQ;
    bool fetch = r->type == VERITY__ENVELOPE__BODY_FETCH_REQ ||
                 r->type == VERITY__ENVELOPE__BODY_GROUP_FETCH_REQ;
    return quota_charge(r->b->auth, ac->tenant, ac->principal, produce, r->payload_len, fetch,
                        which, cap);
}

int64_t auth_who_produce_throttle_ms(struct broker *b, const struct auth_who *who, uint64_t bytes,
                                     char *which, size_t cap)
{
    if (!b->auth || !who || !who->tenant[0])
        return 0;
    int64_t ms = quota_charge(b->auth, who->tenant, who->principal, true, bytes, false, which,
                              cap);
    if (ms > 0)
        b->auth->quota_waits++;
    return ms;
}

/* Charges bytes sent to a fetch of tenant/principal to its fetch buckets
 * (the next fetch waits for them). */
int64_t auth_who_fetch_throttle_ms(struct broker *b, const struct auth_who *who, char *which,
                                   size_t cap)
{
    if (!b->auth || !who || !who->tenant[0])
        return 0;
    int64_t ms = quota_charge(b->auth, who->tenant, who->principal, false, 0, true, which, cap);
    if (ms > 0)
        b->auth->quota_waits++;
    return ms;
}

static void fetch_charge(struct auth_state *a, const char *tenant, const char *principal,
                         uint64_t bytes)
{
    if (!bytes)
        return;
    for (int k = 0; k < 2; k++) {
        const char *who = k ? AUTH_TENANT_TOTAL : principal;
        const struct auth_quota *q = auth_quota_find(a->store, tenant, who);
        if (!q || !q->fetch_bytes_per_s)
            continue;
        struct quota_bucket *bk = bucket_get(a, tenant, who);
        if (bk)
            bk->fetch_tokens -= (double)bytes;
    }
}

static void quota_charge_fetch(struct req *r, uint64_t bytes)
{
    struct auth_conn *ac = r->conn->auth;
    if (!bytes || !ac || ac->how == HOW_NONE)
        return;
    fetch_charge(r->b->auth, ac->tenant, ac->principal, bytes);
}

/* storage_bytes of the tenant ("+"): a produce of `more` bytes that would
 * take the bytes stored in the tenant's topics (internal ones aside) past
 * it is refused. 0, or VERITY_EQUOTA with the message in why. */
static int storage_check(struct broker *b, const char *tenant, uint64_t more, char *why,
                         size_t cap)
{
    const struct auth_quota *q = auth_quota_find(b->auth->store, tenant, AUTH_TENANT_TOTAL);
    if (!q || !q->storage_bytes)
        return 0;
    size_t tl = strlen(tenant);
    uint64_t used = 0;
    struct topic *t;
    TAILQ_FOREACH(t, &b->topics, link)
    {
        if (strncmp(t->name, tenant, tl) != 0 || t->name[tl] != CODEC_TENANT_SEP ||
            strncmp(t->name + tl + 1, "__", 2) == 0)
            continue;
        for (uint32_t i = 0; i < t->cfg.partitions; i++) {
            if (!t->parts || !t->parts[i] || !t->parts[i]->log)
                continue;
            struct vlog_info info;
            vlog_get_info(t->parts[i]->log, &info);
            used += info.size_bytes;
        }
    }
    if (used + more <= q->storage_bytes)
        return 0;
    snprintf(why, cap,
             "quota exceeded: storage_bytes %" PRIu64 " of %s (%" PRIu64 " stored, %" PRIu64
             " more asked)",
             q->storage_bytes, tenant, used, more);
    return VERITY_EQUOTA;
}

static int quota_storage(struct req *r, char *why, size_t cap)
{
    if (r->type != VERITY__ENVELOPE__BODY_PRODUCE_REQ)
        return 0;
    return storage_check(r->b, r->conn->auth->tenant, (uint64_t)r->payload_len, why, cap);
}

/* The connections quota: counts one connection under principal and tenant
 * (*counted: both buckets took it), or refuses (false, the quota named in
 * why). Native and Kafka connections share the counts. */
static bool conns_count(struct auth_state *a, const char *tenant, const char *principal,
                        bool *counted, char *why, size_t cap)
{
    struct quota_bucket *bk[2] = {NULL, NULL};
    *counted = false;
    for (int k = 0; k < 2; k++) {
        const char *who = k ? AUTH_TENANT_TOTAL : principal;
        const struct auth_quota *q = auth_quota_find(a->store, tenant, who);
        bk[k] = bucket_get(a, tenant, who);
        if (q && q->connections && bk[k] && bk[k]->conns >= q->connections) {
            snprintf(why, cap, "quota exceeded: connections %" PRIu64 " of %s/%s", q->connections,
                     tenant, who);
            return false;
        }
    }
    if (bk[0] && bk[1]) {
        bk[0]->conns++;
        bk[1]->conns++;
        *counted = true;
    }
    return true;
}

static void conns_uncount(struct auth_state *a, const char *tenant, const char *principal)
{
    for (int k = 0; k < 2; k++) {
        struct quota_bucket *bk = bucket_get(a, tenant, k ? AUTH_TENANT_TOTAL : principal);
        if (bk && bk->conns)
            bk->conns--;
    }
}

static bool conns_take(struct conn *c, const char *tenant, const char *principal, char *why,
                       size_t cap)
{
    return conns_count(c->b->auth, tenant, principal, &c->auth->counted, why, cap);
}

static void conns_give(struct conn *c)
{
    struct auth_conn *ac = c->auth;
    if (!ac || !ac->counted || !c->b->auth)
        return;
    conns_uncount(c->b->auth, ac->tenant, ac->principal);
    ac->counted = false;
}

/* ---- waiting requests (throttled, or a failed Authenticate) ------------------ */

static void scope_free(struct req *r)
{
    struct auth_scope *s = r->auth_scope;
    if (!s)
        return;
    undo_run(&s->undo);
    if (s->wait_ev)
        event_free(s->wait_ev);
    free(s);
    r->auth_scope = NULL;
}

void auth_req_release(struct req *r)
{
    scope_free(r);
}

static struct auth_scope *scope_of(struct req *r)
{
    if (!r->auth_scope)
        r->auth_scope = calloc(1, sizeof(struct auth_scope));
    return r->auth_scope;
}

static void wait_cancel(struct req *r)
{
    struct auth_scope *s = r->auth_scope;
    if (s && s->wait_ev)
        evtimer_del(s->wait_ev);
    r->cancel = NULL;
    req_fail(r, VERITY_ECLOSED, "connection closed");
}

static void wait_cb(evutil_socket_t fd, short what, void *arg)
{
    struct req *r = arg;
    struct auth_scope *s = r->auth_scope;
    (void)fd;
    (void)what;
    r->cancel = NULL;
    if (s->wait_err) {
        bool close = r->conn->auth && r->conn->auth->fails >= AUTH_FAILS_PER_CONN;
        struct conn *c = r->conn;
        req_fail(r, s->wait_err, s->wait_msg);
        if (close && !c->dead)
            conn_close_error(c, VERITY_EAUTH, "too many failed authentication attempts");
        return;
    }
    if (r->b->stopping) {
        req_fail(r, VERITY_ECLOSED, "broker is shutting down");
        return;
    }
    conn_dispatch(r);
}

/* Answers or dispatches r after ms. 0 or -ENOMEM. */
static int wait_then(struct req *r, int64_t ms, int err, const char *msg)
{
    struct auth_scope *s = scope_of(r);
    if (!s)
        return -ENOMEM;
    if (!s->wait_ev && !(s->wait_ev = evtimer_new(r->b->base, wait_cb, r)))
        return -ENOMEM;
    s->wait_err = err;
    snprintf(s->wait_msg, sizeof s->wait_msg, "%s", msg ? msg : "");
    struct timeval tv = {(time_t)(ms / 1000), (suseconds_t)(ms % 1000) * 1000};
    if (evtimer_add(s->wait_ev, &tv) != 0)
        return -ENOMEM;
    r->cancel = wait_cancel;
    return 0;
}

/* ---- Authenticate -------------------------------------------------------------- */

void h_authenticate(struct req *r)
{
    struct broker *b = r->b;
    struct conn *c = r->conn;
    if (!b->auth || !c->auth) {
        req_fail(r, VERITY_EUNSUPPORTED, "authentication is not configured on this broker");
        return;
    }
    const char *key = r->msg->env->authenticate_req->api_key;
    const struct auth_key *k = NULL;
    int rc = auth_key_verify(b->auth->store, key, &k);
    char id[AUTH_KEY_ID_HEX + 1] = "?";
    if (key && strncmp(key, "vk_", 3) == 0 && strnlen(key, 3 + AUTH_KEY_ID_HEX) >= 3 + AUTH_KEY_ID_HEX) {
        memcpy(id, key + 3, AUTH_KEY_ID_HEX);
        id[AUTH_KEY_ID_HEX] = '\0';
        for (size_t i = 0; i < AUTH_KEY_ID_HEX; i++)
            if (!((id[i] >= '0' && id[i] <= '9') || (id[i] >= 'a' && id[i] <= 'f')))
                id[i] = '?';
    }
    if (rc) {
        c->auth->fails++;
        struct gate g;
        if (may_log(b->auth, &g)) {
            if (g.line)
                blog(BLOG_WARN, "auth_failed",
                     "conn=%" PRIu64 " peer=%s method=key key_id=%s fails=%" PRIu32
                     " suppressed=%" PRIu64,
                     c->id, c->peer, id, c->auth->fails, g.line_sup);
            /* A wrong secret for an existing key id is the tenant's business too. */
            const struct auth_key *owner = auth_key_find(b->auth->store, id);
            audit_emit(b->auth->audit, owner ? owner->tenant : NULL, "auth_failed",
                       "{s:s, s:s, s:s, s:s, s:I}", "method", "key", "key_id", id, "peer", c->peer,
                       "port", "client", "suppressed", (json_int_t)g.audit_sup);
        }
        const char *msg = "authentication failed (unknown, wrong or revoked key)";
        if (b->cfg.auth_fail_delay_ms == 0 || wait_then(r, b->cfg.auth_fail_delay_ms, VERITY_EAUTH, msg)) {
            bool close = c->auth->fails >= AUTH_FAILS_PER_CONN;
            req_fail(r, VERITY_EAUTH, msg);
            if (close && !c->dead)
                conn_close_error(c, VERITY_EAUTH, "too many failed authentication attempts");
        }
        return;
    }
    if (!set_principal(c, HOW_KEY, k->tenant, k->principal)) {
        req_fail(r, VERITY_EQUOTA, c->auth->quota_msg);
        return;
    }
    snprintf(c->auth->key_id, sizeof c->auth->key_id, "%s", k->id);
    blog(BLOG_INFO, "auth_ok", "conn=%" PRIu64 " peer=%s tenant=%s principal=%s method=key key_id=%s",
         c->id, c->peer, k->tenant, k->principal, k->id);
    audit_emit(b->auth->audit, k->tenant, "auth_ok", "{s:s, s:s, s:s, s:s, s:s}", "principal",
               k->principal, "method", "key", "key_id", k->id, "peer", c->peer, "port", "client");
    Verity__AuthenticateResponse resp = VERITY__AUTHENTICATE_RESPONSE__INIT;
    resp.tenant = c->auth->tenant;
    resp.principal = c->auth->principal;
    Verity__Envelope env = VERITY__ENVELOPE__INIT;
    env.body_case = VERITY__ENVELOPE__BODY_AUTHENTICATE_RESP;
    env.authenticate_resp = &resp;
    req_reply(r, &env, NULL, 0);
}

/* ---- the gate ------------------------------------------------------------------ */

struct walk {
    struct auth_undo *u;
    const struct auth_store *s;
    const struct auth_conn *ac;
    const struct acl_row *row;
    size_t tlen;
    bool audit_all; /* may read the broker-wide __audit (consume on cluster:audit) */
    int err;
    char why[256];
};

static bool may_read_audit(const struct auth_store *s, const struct auth_conn *ac)
{
    return auth_allowed(s, ac->tenant, ac->principal, AUTH_RES_CLUSTER, "audit", AUTH_OP_CONSUME,
                        NULL, 0);
}

static int scope_name(struct walk *w, char **slot, enum name_kind kind)
{
    const char *name = *slot;
    if (!name || !name[0])
        return 0;
    if (strchr(name, CODEC_TENANT_SEP)) {
        snprintf(w->why, sizeof w->why, "names may not contain '%c' (the tenant separator)",
                 CODEC_TENANT_SEP);
        return w->err = VERITY_EINVAL;
    }
    unsigned ops = kind == NK_TOPIC ? w->row->topic_ops : w->row->group_ops;
    /* Internal topics (the tenant's __audit, ...) are written only by the
     * broker: no produce, create or delete from a client, whatever the ACLs. */
    if (kind == NK_TOPIC && name[0] == '_' && name[1] == '_' && !(w->row->flags & ANY) &&
        (ops & (AUTH_OP_PRODUCE | AUTH_OP_ADMIN))) {
        snprintf(w->why, sizeof w->why, "topic %s is internal: written only by the broker", name);
        return w->err = VERITY_EDENIED;
    }
    if (kind == NK_TOPIC && w->audit_all && strcmp(name, AUDIT_TOPIC) == 0)
        return 0; /* the broker-wide audit topic, outside every tenant */
    if (ops) {
        bool ok = (w->row->flags & ANY)
                      ? auth_allowed_any(w->s, w->ac->tenant, w->ac->principal,
                                         (enum auth_res)kind, name, ops)
                      : auth_allowed(w->s, w->ac->tenant, w->ac->principal, (enum auth_res)kind,
                                     name, ops, w->why, sizeof w->why);
        if (!ok) {
            if (w->row->flags & ANY) {
                char names[64];
                auth_op_names(ops, names, sizeof names);
                snprintf(w->why, sizeof w->why, "principal %s may not %s on %s %s (ACL)",
                         w->ac->principal, names, kind == NK_TOPIC ? "topic" : "group", name);
            }
            return w->err = VERITY_EDENIED;
        }
    }
    size_t n = strlen(name);
    if (w->tlen + 1 + n > VERITY_TOPIC_NAME_MAX) {
        snprintf(w->why, sizeof w->why, "name too long: %zu bytes with the tenant (max %u)",
                 w->tlen + 1 + n, VERITY_TOPIC_NAME_MAX);
        return w->err = VERITY_EINVAL;
    }
    char *q = malloc(w->tlen + 1 + n + 1);
    if (!q)
        return w->err = -ENOMEM;
    memcpy(q, w->ac->tenant, w->tlen);
    q[w->tlen] = CODEC_TENANT_SEP;
    memcpy(q + w->tlen + 1, name, n + 1);
    if (undo_keep(w->u, q) || undo_swap(w->u, (void **)slot, q))
        return w->err = -ENOMEM;
    return 0;
}

/* Puts every name in m into the tenant, checking ACLs. */
static int scope_msg(struct walk *w, ProtobufCMessage *m, unsigned depth)
{
    if (!m || depth > 8)
        return 0;
    const ProtobufCMessageDescriptor *d = m->descriptor;
    for (unsigned i = 0; i < d->n_fields && !w->err; i++) {
        const ProtobufCFieldDescriptor *f = &d->fields[i];
        char *base = (char *)m + f->offset;
        if (f->label == PROTOBUF_C_LABEL_REPEATED) {
            size_t n = *(size_t *)((char *)m + f->quantifier_offset);
            void **arr = *(void ***)base;
            enum name_kind k = field_kind(d, f);
            for (size_t j = 0; j < n && !w->err; j++) {
                if (k != NK_NONE)
                    scope_name(w, (char **)&arr[j], k);
                else if (f->type == PROTOBUF_C_TYPE_MESSAGE)
                    scope_msg(w, arr[j], depth + 1);
            }
        } else if (f->type == PROTOBUF_C_TYPE_MESSAGE) {
            scope_msg(w, *(ProtobufCMessage **)base, depth + 1);
        } else {
            enum name_kind k = field_kind(d, f);
            if (k != NK_NONE)
                scope_name(w, (char **)base, k);
        }
    }
    return w->err;
}

static void deny_log(struct req *r, int err, const char *why)
{
    struct auth_state *a = r->b->auth;
    struct auth_conn *ac = r->conn->auth;
    char q[300];
    struct gate g;
    if (may_log(a, &g)) {
        const char *ev = err == VERITY_EDENIED ? "acl_denied" : "auth_required";
        if (g.line)
            blog(BLOG_WARN, ev,
                 "conn=%" PRIu64 " peer=%s tenant=%s principal=%s type=%s reason=%s"
                 " suppressed=%" PRIu64,
                 r->conn->id, r->conn->peer, ac->tenant[0] ? ac->tenant : "-",
                 ac->principal[0] ? ac->principal : "-", codec_body_name(r->type),
                 blog_q(why, q, sizeof q), g.line_sup);
        audit_emit(a->audit, ac->tenant, ev, "{s:s, s:s, s:s, s:s, s:s, s:I}", "principal",
                   ac->principal, "type", codec_body_name(r->type), "reason", why, "peer",
                   r->conn->peer, "port", "client", "suppressed", (json_int_t)g.audit_sup);
    }
}

/* Answers r with EQUOTA; logged and audited at most 10 a second. */
static void quota_refused(struct req *r, const char *quota, const char *why)
{
    struct auth_state *a = r->b->auth;
    struct auth_conn *ac = r->conn->auth;
    a->quota_refusals++;
    struct gate g;
    if (may_log(a, &g)) {
        char q[64];
        snprintf(q, sizeof q, "%s", quota);
        q[strcspn(q, " ")] = '\0';
        if (g.line)
            blog(BLOG_WARN, "quota_exceeded",
                 "conn=%" PRIu64 " peer=%s tenant=%s principal=%s type=%s quota=%s"
                 " suppressed=%" PRIu64,
                 r->conn->id, r->conn->peer, ac->tenant, ac->principal, codec_body_name(r->type),
                 q, g.line_sup);
        audit_emit(a->audit, ac->tenant, "quota_exceeded", "{s:s, s:s, s:s, s:s, s:I}",
                   "principal", ac->principal, "quota", q, "reason", why, "peer", r->conn->peer,
                   "suppressed", (json_int_t)g.audit_sup);
    }
    req_fail(r, VERITY_EQUOTA, why);
}

int auth_gate(struct req *r)
{
    struct conn *c = r->conn;
    struct auth_conn *ac = c->auth;
    if (!ac)
        return 0;
    const struct acl_row *row = acl_row(r->type);
    if (row && (row->flags & PREAUTH))
        return 0;
    if (ac->how == HOW_NONE || !principal_current(c)) {
        const char *why = ac->how == HOW_NONE
                              ? "not authenticated: send Authenticate with an API key first"
                              : "the connection's key or certificate mapping was revoked";
        if (ac->how != HOW_NONE) {
            blog(BLOG_INFO, "auth_revoked", "conn=%" PRIu64 " peer=%s tenant=%s principal=%s",
                 c->id, c->peer, ac->tenant, ac->principal);
            audit_emit(r->b->auth->audit, ac->tenant, "auth_revoked", "{s:s, s:s}", "principal",
                       ac->principal, "peer", c->peer);
            conns_give(c);
            ac->how = HOW_NONE;
        }
        if (ac->how == HOW_NONE && ac->quota_msg[0]) {
            req_fail(r, VERITY_EQUOTA, ac->quota_msg);
            return 1;
        }
        deny_log(r, VERITY_EAUTH, why);
        req_fail(r, VERITY_EAUTH, why);
        return 1;
    }
    if (!row) {
        deny_log(r, VERITY_EDENIED, "request type not covered by ACLs");
        req_fail(r, VERITY_EDENIED, "request type not covered by ACLs: denied");
        return 1;
    }
    struct auth_scope *s = scope_of(r);
    if (!s) {
        req_fail(r, -ENOMEM, "out of memory");
        return 1;
    }
    struct walk w = {.u = &s->undo, .s = r->b->auth->store, .ac = ac, .row = row,
                     .tlen = strlen(ac->tenant), .audit_all = may_read_audit(r->b->auth->store, ac)};
    if (scope_msg(&w, env_body(r->msg->env), 0)) {
        if (w.err == VERITY_EDENIED)
            deny_log(r, w.err, w.why);
        req_fail(r, w.err, w.why);
        return 1;
    }
    char which[200], why[300];
    if (quota_storage(r, why, sizeof why)) {
        quota_refused(r, "storage_bytes", why);
        return 1;
    }
    int64_t ms = quota_wait_ms(r, which, sizeof which);
    if (ms > 0) {
        if (ms > QUOTA_WAIT_MAX_MS) {
            snprintf(why, sizeof why, "quota exceeded: %s (a wait of %" PRId64 " ms)", which, ms);
            quota_refused(r, which, why);
            return 1;
        }
        if (wait_then(r, ms, 0, NULL) == 0) {
            r->b->auth->quota_waits++;
            return 1;
        }
    }
    return 0;
}

/* ---- answers ------------------------------------------------------------------- */

struct rwalk {
    struct auth_undo *u;
    const struct auth_store *s;
    const struct auth_conn *ac;
    bool list; /* filter top-level entries by rights too */
    size_t tlen;
    bool audit_all; /* as in struct walk */
    int err;
};

static bool global_audit(const struct rwalk *w, const char *name)
{
    return w->audit_all && name && strcmp(name, AUDIT_TOPIC) == 0;
}

static bool in_tenant(const struct rwalk *w, const char *name)
{
    return global_audit(w, name) || (name && strncmp(name, w->ac->tenant, w->tlen) == 0 &&
                                     name[w->tlen] == CODEC_TENANT_SEP);
}

/* The first name field of m and its kind, or NULL. */
static const char *msg_key(ProtobufCMessage *m, enum name_kind *kind)
{
    const ProtobufCMessageDescriptor *d = m->descriptor;
    for (unsigned i = 0; i < d->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &d->fields[i];
        if (f->label == PROTOBUF_C_LABEL_REPEATED)
            continue;
        enum name_kind k = field_kind(d, f);
        if (k != NK_NONE) {
            *kind = k;
            return *(char **)((char *)m + f->offset);
        }
    }
    return NULL;
}

static bool keep_entry(struct rwalk *w, ProtobufCMessage *m, unsigned depth)
{
    enum name_kind k = NK_NONE;
    const char *name = msg_key(m, &k);
    if (!name || !name[0])
        return true;
    if (!in_tenant(w, name))
        return false;
    if (!w->list || depth != 0 || global_audit(w, name))
        return true;
    unsigned ops = k == NK_TOPIC ? AUTH_OP_DESCRIBE | AUTH_OP_PRODUCE | AUTH_OP_CONSUME | AUTH_OP_ADMIN
                                 : AUTH_OP_DESCRIBE | AUTH_OP_GROUP | AUTH_OP_ADMIN;
    return auth_allowed_any(w->s, w->ac->tenant, w->ac->principal, (enum auth_res)k,
                            name + w->tlen + 1, ops);
}

static void unscope_str(struct rwalk *w, char **slot)
{
    char *s = *slot;
    if (s && !global_audit(w, s) && in_tenant(w, s) && undo_swap(w->u, (void **)slot, s + w->tlen + 1))
        w->err = -ENOMEM;
}

/* Removes "<tenant>~" from a human message (a copy kept in the undo log). */
static void unscope_text(struct rwalk *w, char **slot)
{
    const char *s = *slot;
    char pat[AUTH_TENANT_MAX + 2];
    snprintf(pat, sizeof pat, "%s%c", w->ac->tenant, CODEC_TENANT_SEP);
    if (!s || !strstr(s, pat))
        return;
    size_t n = strlen(s), pn = strlen(pat);
    char *o = malloc(n + 1), *p = o;
    if (!o) {
        w->err = -ENOMEM;
        return;
    }
    while (*s) {
        if (strncmp(s, pat, pn) == 0)
            s += pn;
        else
            *p++ = *s++;
    }
    *p = '\0';
    if (undo_keep(w->u, o) || undo_swap(w->u, (void **)slot, o))
        w->err = -ENOMEM;
}

static void unscope_msg(struct rwalk *w, ProtobufCMessage *m, unsigned depth)
{
    if (!m || depth > 8)
        return;
    const ProtobufCMessageDescriptor *d = m->descriptor;
    for (unsigned i = 0; i < d->n_fields && !w->err; i++) {
        const ProtobufCFieldDescriptor *f = &d->fields[i];
        char *base = (char *)m + f->offset;
        enum name_kind k = field_kind(d, f);
        if (f->label == PROTOBUF_C_LABEL_REPEATED) {
            size_t *np = (size_t *)((char *)m + f->quantifier_offset);
            void **arr = *(void ***)base;
            /* Only arrays of pointers (strings, messages); scalars are
             * packed arrays of their own width. */
            if (*np == 0 || (f->type != PROTOBUF_C_TYPE_STRING && f->type != PROTOBUF_C_TYPE_MESSAGE))
                continue;
            /* A filtered copy of the array when some entry must go. */
            void **keep = malloc(*np * sizeof *keep);
            if (!keep) {
                w->err = -ENOMEM;
                return;
            }
            size_t kn = 0;
            for (size_t j = 0; j < *np; j++) {
                bool ok = k != NK_NONE ? in_tenant(w, arr[j])
                          : f->type == PROTOBUF_C_TYPE_MESSAGE ? keep_entry(w, arr[j], depth)
                                                                : true;
                if (ok)
                    keep[kn++] = arr[j];
            }
            if (undo_keep(w->u, keep) || undo_swap(w->u, (void **)base, keep) ||
                undo_count(w->u, np, kn)) {
                w->err = -ENOMEM;
                return;
            }
            for (size_t j = 0; j < kn && !w->err; j++) {
                if (k != NK_NONE)
                    unscope_str(w, (char **)&keep[j]);
                else if (f->type == PROTOBUF_C_TYPE_MESSAGE)
                    unscope_msg(w, keep[j], depth + 1);
            }
        } else if (f->type == PROTOBUF_C_TYPE_MESSAGE) {
            unscope_msg(w, *(ProtobufCMessage **)base, depth + 1);
        } else if (k != NK_NONE) {
            unscope_str(w, (char **)base);
        } else if (f->type == PROTOBUF_C_TYPE_STRING && strcmp(f->name, "error_message") == 0) {
            unscope_text(w, (char **)base);
        }
    }
}

/* Admin changes over the protocol (create/delete topic, create, delete or
 * reset group) go to the audit trail with their outcome. The request's
 * names are still in the tenant here. */
static void audit_admin(struct req *r, const Verity__Envelope *env)
{
    switch (r->type) {
    case VERITY__ENVELOPE__BODY_CREATE_TOPIC_REQ:
    case VERITY__ENVELOPE__BODY_DELETE_TOPIC_REQ:
    case VERITY__ENVELOPE__BODY_CREATE_GROUP_REQ:
    case VERITY__ENVELOPE__BODY_DELETE_GROUP_REQ:
    case VERITY__ENVELOPE__BODY_RESET_GROUP_REQ:
        break;
    default:
        return;
    }
    struct auth_conn *ac = r->conn->auth;
    ProtobufCMessage *body = r->msg && r->msg->env ? env_body(r->msg->env) : NULL;
    enum name_kind k = NK_NONE;
    const char *name = body ? msg_key(body, &k) : NULL;
    size_t tl = strlen(ac->tenant);
    if (name && strncmp(name, ac->tenant, tl) == 0 && name[tl] == CODEC_TENANT_SEP)
        name += tl + 1;
    audit_emit(r->b->auth->audit, ac->tenant, "admin_request", "{s:s, s:s, s:s, s:s, s:s}",
               "principal", ac->principal, "type", codec_body_name(r->type), "name",
               name ? name : "", "error", verity_errname(codec_err_from_wire(env->error)),
               "peer", r->conn->peer);
}

struct auth_undo *auth_reply_scope(struct req *r, Verity__Envelope *env, uint64_t payload)
{
    struct auth_conn *ac = r->conn->auth;
    if (!ac || ac->how == HOW_NONE)
        return NULL;
    if (r->type == VERITY__ENVELOPE__BODY_FETCH_REQ ||
        r->type == VERITY__ENVELOPE__BODY_GROUP_FETCH_REQ)
        quota_charge_fetch(r, payload);
    struct auth_undo *u = calloc(1, sizeof *u);
    if (!u)
        return NULL;
    const struct acl_row *row = acl_row(r->type);
    struct rwalk w = {.u = u, .s = r->b->auth->store, .ac = ac,
                      .list = row && (row->flags & LIST), .tlen = strlen(ac->tenant),
                      .audit_all = may_read_audit(r->b->auth->store, ac)};
    audit_admin(r, env);
    unscope_text(&w, &env->error_message);
    unscope_msg(&w, env_body(env), 0);
    /* On -ENOMEM some names may stay qualified: the answer is still the
     * caller's own objects. */
    return u;
}

void auth_reply_unscope(struct auth_undo *u)
{
    if (!u)
        return;
    undo_run(u);
    free(u);
}

/* ---- for the Kafka listener ------------------------------------------------------ */

_Static_assert(sizeof ((struct auth_who *)0)->tenant == AUTH_TENANT_MAX + 1, "tenant size");
_Static_assert(sizeof ((struct auth_who *)0)->principal == AUTH_PRINCIPAL_MAX + 1, "principal size");
_Static_assert(sizeof ((struct auth_who *)0)->key_id == AUTH_KEY_ID_HEX + 1, "key id size");
_Static_assert(sizeof ((struct auth_who *)0)->subject == AUTH_SUBJECT_MAX + 1, "subject size");

bool auth_on(const struct broker *b)
{
    return b->auth != NULL;
}

const char *auth_local_name(const struct broker *b, const char *stored, const char *in)
{
    const char *sep = b->auth && in ? strchr(in, CODEC_TENANT_SEP) : NULL;
    if (!sep)
        return stored;
    size_t tl = (size_t)(sep - in) + 1; /* "acme~" */
    return strncmp(stored, in, tl) == 0 ? stored + tl : stored;
}

int auth_login_key(struct broker *b, const char *key, uint64_t conn_id, const char *peer,
                   struct auth_who *who)
{
    if (!b->auth)
        return VERITY_EUNSUPPORTED;
    memset(who, 0, sizeof *who);
    const struct auth_key *k = NULL;
    if (auth_key_verify(b->auth->store, key, &k)) {
        struct gate g;
        if (may_log(b->auth, &g)) {
            if (g.line)
                blog(BLOG_WARN, "auth_failed",
                     "conn=%" PRIu64 " peer=%s method=kafka_plain suppressed=%" PRIu64, conn_id,
                     peer, g.line_sup);
            audit_emit(b->auth->audit, NULL, "auth_failed", "{s:s, s:s, s:s, s:I}", "method",
                       "kafka_plain", "peer", peer, "port", "kafka", "suppressed",
                       (json_int_t)g.audit_sup);
        }
        return VERITY_EAUTH;
    }
    snprintf(who->tenant, sizeof who->tenant, "%s", k->tenant);
    snprintf(who->principal, sizeof who->principal, "%s", k->principal);
    snprintf(who->key_id, sizeof who->key_id, "%s", k->id);
    blog(BLOG_INFO, "auth_ok",
         "conn=%" PRIu64 " peer=%s tenant=%s principal=%s method=kafka_plain key_id=%s", conn_id,
         peer, k->tenant, k->principal, k->id);
    audit_emit(b->auth->audit, k->tenant, "auth_ok", "{s:s, s:s, s:s, s:s, s:s}", "principal",
               k->principal, "method", "kafka_plain", "key_id", k->id, "peer", peer, "port",
               "kafka");
    return 0;
}

int auth_login_cert(struct broker *b, struct ssl_st *ssl, uint64_t conn_id, const char *peer,
                    struct auth_who *who)
{
    if (!b->auth)
        return VERITY_EUNSUPPORTED;
    char cn[AUTH_SUBJECT_MAX + 1], q[200];
    verified_cn(ssl, cn, sizeof cn);
    if (!cn[0])
        return VERITY_ENOTFOUND;
    const struct auth_cert *m = auth_cert_find(b->auth->store, cn);
    if (!m) {
        blog(BLOG_INFO, "auth_cert_unmapped", "conn=%" PRIu64 " peer=%s subject=%s port=kafka",
             conn_id, peer, blog_q(cn, q, sizeof q));
        return VERITY_ENOTFOUND;
    }
    memset(who, 0, sizeof *who);
    snprintf(who->tenant, sizeof who->tenant, "%s", m->tenant);
    snprintf(who->principal, sizeof who->principal, "%s", m->principal);
    snprintf(who->subject, sizeof who->subject, "%s", cn);
    blog(BLOG_INFO, "auth_ok",
         "conn=%" PRIu64 " peer=%s tenant=%s principal=%s method=cert subject=%s port=kafka",
         conn_id, peer, m->tenant, m->principal, blog_q(cn, q, sizeof q));
    audit_emit(b->auth->audit, m->tenant, "auth_ok", "{s:s, s:s, s:s, s:s, s:s}", "principal",
               m->principal, "method", "cert", "subject", cn, "peer", peer, "port", "kafka");
    return 0;
}

bool auth_who_current(const struct broker *b, const struct auth_who *who)
{
    if (!b->auth)
        return false;
    if (!who->key_id[0]) {
        const struct auth_cert *m = who->subject[0] ? auth_cert_find(b->auth->store, who->subject)
                                                    : NULL;
        return m && strcmp(m->tenant, who->tenant) == 0 &&
               strcmp(m->principal, who->principal) == 0;
    }
    const struct auth_key *k = auth_key_find(b->auth->store, who->key_id);
    return k && strcmp(k->tenant, who->tenant) == 0 && strcmp(k->principal, who->principal) == 0;
}

int auth_who_conn_take(struct broker *b, const struct auth_who *who, uint64_t conn_id,
                       const char *peer, bool *counted, char *why, size_t cap)
{
    *counted = false;
    if (!b->auth)
        return VERITY_EUNSUPPORTED;
    if (conns_count(b->auth, who->tenant, who->principal, counted, why, cap))
        return 0;
    b->auth->quota_refusals++;
    blog(BLOG_WARN, "quota_exceeded", "conn=%" PRIu64 " peer=%s tenant=%s principal=%s "
         "quota=connections port=kafka", conn_id, peer, who->tenant, who->principal);
    audit_emit(b->auth->audit, who->tenant, "quota_exceeded", "{s:s, s:s, s:s, s:s, s:s}",
               "principal", who->principal, "quota", "connections", "reason", why, "peer", peer,
               "port", "kafka");
    return VERITY_EQUOTA;
}

void auth_who_conn_give(struct broker *b, const struct auth_who *who)
{
    if (b->auth)
        conns_uncount(b->auth, who->tenant, who->principal);
}

bool auth_who_allowed(struct broker *b, const struct auth_who *who, int res, const char *name,
                      unsigned ops, uint64_t conn_id, const char *peer, const char *what)
{
    if (!b->auth)
        return false;
    char why[256] = "";
    if (auth_allowed(b->auth->store, who->tenant, who->principal, (enum auth_res)res, name, ops,
                     why, sizeof why))
        return true;
    char q[300];
    struct gate g;
    if (may_log(b->auth, &g)) {
        if (g.line)
            blog(BLOG_WARN, "acl_denied",
                 "conn=%" PRIu64 " peer=%s tenant=%s principal=%s type=%s reason=%s"
                 " suppressed=%" PRIu64,
                 conn_id, peer, who->tenant, who->principal, what, blog_q(why, q, sizeof q),
                 g.line_sup);
        audit_emit(b->auth->audit, who->tenant, "acl_denied", "{s:s, s:s, s:s, s:s, s:s, s:I}",
                   "principal", who->principal, "type", what, "reason", why, "peer", peer, "port",
                   "kafka", "suppressed", (json_int_t)g.audit_sup);
    }
    return false;
}

bool auth_who_allowed_quiet(const struct broker *b, const struct auth_who *who, int res,
                            const char *name, unsigned ops)
{
    return b->auth && auth_allowed(b->auth->store, who->tenant, who->principal,
                                   (enum auth_res)res, name, ops, NULL, 0);
}

void auth_who_fetch_charge(struct broker *b, const struct auth_who *who, uint64_t bytes)
{
    if (b->auth && who && who->tenant[0])
        fetch_charge(b->auth, who->tenant, who->principal, bytes);
}

int auth_who_storage_check(struct broker *b, const struct auth_who *who, uint64_t bytes,
                           uint64_t conn_id, const char *peer)
{
    if (!b->auth || !who || !who->tenant[0])
        return 0;
    char why[300];
    int rc = storage_check(b, who->tenant, bytes, why, sizeof why);
    if (!rc)
        return 0;
    struct auth_state *a = b->auth;
    a->quota_refusals++;
    struct gate g;
    if (may_log(a, &g)) {
        if (g.line)
            blog(BLOG_WARN, "quota_exceeded",
                 "conn=%" PRIu64 " peer=%s tenant=%s principal=%s type=Produce quota=storage_bytes"
                 " port=kafka suppressed=%" PRIu64,
                 conn_id, peer, who->tenant, who->principal, g.line_sup);
        audit_emit(a->audit, who->tenant, "quota_exceeded", "{s:s, s:s, s:s, s:s, s:s, s:I}",
                   "principal", who->principal, "quota", "storage_bytes", "reason", why, "peer",
                   peer, "port", "kafka", "suppressed", (json_int_t)g.audit_sup);
    }
    return rc;
}
