/*
 * Authentication, tenants, ACLs and quotas on the protocol port (issue 14).
 * Off (b->auth == NULL, every hook a no-op the callers skip) unless
 * auth_file is configured. See broker/auth.c.
 */
#ifndef VERITY_BROKER_AUTH_H
#define VERITY_BROKER_AUTH_H

#include <stdbool.h>
#include <stdint.h>

#include "broker/auth_store.h"
#include "proto/codec.h"

struct broker;
struct conn;
struct req;
struct ssl_st;

#define AUTH_PREAUTH_FRAME_BYTES 4096u /* largest frame before a principal is known */
#define AUTH_FAILS_PER_CONN 3u         /* failed attempts before the connection is closed */

/* Loads auth_file (broker start). 0, or an error logged as auth_config_failed. */
int auth_open(struct broker *b) __attribute__((warn_unused_result));
void auth_close(struct broker *b);
/* SIGHUP: reloads auth_file; a broken file keeps the store in use. The
 * store in use is auth_file's entries merged with those of the metadata
 * log (b->meta.auth, auth_store_merge: the file's entry stays on a clash,
 * deny wins across both). */
void auth_reload(struct broker *b);
/* An auth_change record was applied to b->meta.auth (this broker's
 * proposal, another broker's, in a cluster): rebuilds the store in use, so
 * open connections follow at their next request, and audits the change
 * with the principal `by` ("tenant/principal") that made it. */
void auth_meta_changed(struct broker *b, const struct auth_change *c, const char *by);
/* b->meta.auth was replaced as a whole (a `__meta` state transfer):
 * rebuilds the store in use and audits what changed. */
void auth_meta_replaced(struct broker *b);
/* auth_file's entries alone (NULL without auth). */
const struct auth_store *auth_store_file(struct broker *b);

/* A new protocol connection: starts its authentication deadline. 0 or -ENOMEM. */
int auth_conn_open(struct conn *c) __attribute__((warn_unused_result));
void auth_conn_close(struct conn *c);
/* The TLS handshake finished: a client certificate whose subject CN is
 * mapped in the store gives the connection its principal. */
void auth_conn_tls(struct conn *c, struct ssl_st *ssl);
/* Whether a frame of total bytes may be read now (false: too large before
 * authentication; the caller closes with VERITY_EAUTH). */
bool auth_frame_ok(const struct conn *c, uint64_t total);

/* Runs before dispatch on a broker with auth: checks the principal, the
 * ACLs and quotas, and puts the request's names into the tenant. Returns 0
 * (dispatch r now) or 1 (r was answered or will be dispatched later). */
int auth_gate(struct req *r);

/* Around encoding an answer: takes the tenant off names, drops other
 * tenants' entries and charges fetch quotas; unscope puts everything back
 * (the handler owns env). */
struct auth_undo;
struct auth_undo *auth_reply_scope(struct req *r, Verity__Envelope *env, uint64_t payload);
void auth_reply_unscope(struct auth_undo *u);

/* Releases what auth_gate put on r (before r's message is freed). */
void auth_req_release(struct req *r);

/* The Authenticate request. */
void h_authenticate(struct req *r);

/* ---- for the Kafka listener (SASL/PLAIN, broker/kafka/ksasl.c) ----------- */

/* A principal as the Kafka listener keeps it per connection. */
struct auth_who {
    char tenant[33];    /* AUTH_TENANT_MAX + 1 */
    char principal[65]; /* AUTH_PRINCIPAL_MAX + 1 */
    char key_id[17];    /* AUTH_KEY_ID_HEX + 1; "" for a certificate */
    char subject[129];  /* AUTH_SUBJECT_MAX + 1: a certificate's mapped CN; "" for a key */
};

/* Whether the broker checks principals (auth_file configured). */
bool auth_on(const struct broker *b);
/* The name a tenant's principals use for `stored`, a name as stored: with
 * auth_file, when stored is inside the tenant of `in` (also a stored name:
 * "acme~orders" and "acme~g1"), stored without "acme~"; else stored. For
 * names the broker writes into a tenant's records (dead-letter headers),
 * which its principals send back as names. The result points into stored. */
const char *auth_local_name(const struct broker *b, const char *stored, const char *in);
/* Checks an API key text; 0 and *who, or VERITY_EAUTH (logged auth_failed
 * or auth_ok with method=kafka_plain, conn and peer as given). */
int auth_login_key(struct broker *b, const char *key, uint64_t conn_id, const char *peer,
                   struct auth_who *who) __attribute__((warn_unused_result));
/* A TLS client certificate on the Kafka port: when it verified and its
 * subject CN is mapped in the store, 0 and *who (logged and audited auth_ok
 * method=cert port=kafka); VERITY_ENOTFOUND when there is no certificate
 * or no mapping (auth_cert_unmapped logged), VERITY_EUNSUPPORTED without
 * auth. */
int auth_login_cert(struct broker *b, struct ssl_st *ssl, uint64_t conn_id, const char *peer,
                    struct auth_who *who) __attribute__((warn_unused_result));
/* Whether who's key (or certificate mapping) still exists (a revoked key
 * or a removed mapping ends the session). */
bool auth_who_current(const struct broker *b, const struct auth_who *who);
/* The connections quota for a Kafka connection that authenticated as who
 * (SASL or certificate): counts it under who's principal and tenant, with
 * the native connections (*counted: it was, and auth_who_conn_give must
 * release it when the connection closes or changes principal); or
 * VERITY_EQUOTA, the quota named in why, logged and audited
 * quota_exceeded quota=connections port=kafka. */
int auth_who_conn_take(struct broker *b, const struct auth_who *who, uint64_t conn_id,
                       const char *peer, bool *counted, char *why, size_t cap)
    __attribute__((warn_unused_result));
void auth_who_conn_give(struct broker *b, const struct auth_who *who);
/* Whether who may do ops on the named resource (name inside the tenant);
 * a refusal is logged acl_denied (rate-limited) with what it names. */
bool auth_who_allowed(struct broker *b, const struct auth_who *who, int res, const char *name,
                      unsigned ops, uint64_t conn_id, const char *peer, const char *what);
/* The same, not logged (listing what a principal may see). */
bool auth_who_allowed_quiet(const struct broker *b, const struct auth_who *who, int res,
                            const char *name, unsigned ops);
/* Quotas for a Kafka Produce of `bytes` by who: charges the request and
 * the bytes to who's buckets (its principal's or "*", and the tenant's
 * "+"), as a native produce is charged. Returns the throttle in ms (0:
 * within its quotas), the quota named in which. */
int64_t auth_who_produce_throttle_ms(struct broker *b, const struct auth_who *who, uint64_t bytes,
                                     char *which, size_t cap);
/* Quotas for a Kafka Fetch by who: charges the request to requests_per_s
 * and returns the wait (ms) until who's fetch_bytes_per_s buckets (its
 * principal's or "*", and the tenant's "+") are out of debt, the quota
 * named in which; 0: none. The bytes the answer carries are charged after
 * it with auth_who_fetch_charge, as a native fetch is. */
int64_t auth_who_fetch_throttle_ms(struct broker *b, const struct auth_who *who, char *which,
                                   size_t cap);
void auth_who_fetch_charge(struct broker *b, const struct auth_who *who, uint64_t bytes);
/* storage_bytes of who's tenant for a Kafka Produce of `bytes`: 0, or
 * VERITY_EQUOTA (logged and audited quota_exceeded, rate-limited). */
int auth_who_storage_check(struct broker *b, const struct auth_who *who, uint64_t bytes,
                           uint64_t conn_id, const char *peer) __attribute__((warn_unused_result));
/* The audit trail of this broker (broker/audit.h), NULL without auth. */
struct audit *auth_audit(struct broker *b);

/* ---- the admin HTTP port (broker/auth_http.c) ------------------------------
 * With auth_file, every path but /health and /ready needs a principal: an
 * API key as `Authorization: Bearer vk_...`, or a mapped client
 * certificate on a TLS admin port. Per route: /metrics, /cluster and
 * /debug/trace need describe on cluster:metrics, cluster:peers and
 * cluster:trace; /v1/topics and /v1/groups list the caller's tenant's
 * objects it has rights on (every tenant's with describe on
 * cluster:tenants); proofs and tiles of topic T need consume on T in the
 * caller's tenant (T named as stored, "<tenant>~name"). */
struct evhttp_request;

/* Whether req may go on; false: it was answered (401, 403). Without auth:
 * true. Sets the request's principal for auth_http_visible. */
bool auth_http_check(struct broker *b, struct evhttp_request *req);

/* Whether the principal of the HTTP request being answered sees the object
 * (res topic or group, name as stored) in /v1/topics, /v1/groups. */
bool auth_http_visible(struct broker *b, enum auth_res res, const char *name);

/* For auth_http.c: the store in use, the log rate limit, the principal of
 * the HTTP request being answered. */
struct auth_http_who {
    bool set;
    bool all_tenants; /* describe on cluster:tenants */
    char tenant[AUTH_TENANT_MAX + 1];
    char principal[AUTH_PRINCIPAL_MAX + 1];
};
struct auth_http_stats {
    uint64_t unauthenticated; /* 401 */
    uint64_t denied;          /* 403 */
    uint64_t late;            /* 401s waiting out auth_fail_delay_ms now */
};
const struct auth_store *auth_store_in_use(struct broker *b);
struct auth_http_stats *auth_http_stats(struct broker *b);
/* The 401s waiting out auth_fail_delay_ms (auth_http.c), a list. */
struct auth_http_late;
struct auth_http_late **auth_http_late_list(struct broker *b);
/* Answers the 401s still waiting, now: http_stop calls it before
 * evhttp_free (which would free their requests under the timers). */
void auth_http_flush(struct broker *b);

/* ---- /v1/security: the store over the network (broker/auth_admin.c) ------
 * GET lists the store in use (keys without hashes), each entry with its
 * source ("file" or "meta"); needs describe on cluster:security. POST takes
 * one change (auth_change_parse) and needs admin on cluster:security: it
 * is proposed as an auth_change record of the metadata log (in a cluster,
 * on the primary of __meta; elsewhere 421 naming it) and answered once the
 * record is in the log and applied. */
void auth_admin_handle(struct broker *b, struct evhttp_request *req);
/* Answers the changes still waiting (shutdown: before evhttp_free). */
void auth_admin_flush(struct broker *b);
struct auth_admin_op;
struct auth_admin_op **auth_admin_list(struct broker *b);

/* Metrics of auth and the audit trail (nothing without auth_file). */
struct evbuffer;
void auth_metrics_render(struct broker *b, struct evbuffer *o);
/* A failure event a client caused: whether to record it (audit), whether to
 * log it too, and how many were dropped before (log, audit). */
bool auth_log_ok(struct broker *b, bool *line, uint64_t *line_sup, uint64_t *audit_sup);
struct auth_http_who *auth_http_who(struct broker *b);

#endif
