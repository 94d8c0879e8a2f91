/*
 * SASL/PLAIN on the Kafka listener, and the names a client sends put inside
 * its tenant (issue 14's keys, tenants and ACLs, for Kafka clients).
 *
 * With auth_file configured every Kafka connection authenticates first:
 * ApiVersions, SaslHandshake v1 (mechanism PLAIN; v0 is refused) and SaslAuthenticate v0-v1
 * are all it may send before; anything else closes the connection
 * (kafka_auth_required). PLAIN's message is authzid NUL authcid NUL passwd:
 * passwd is the API key ("vk_..."), authcid the key's principal (checked:
 * a key for another principal is refused like a wrong key), authzid empty
 * or equal to authcid. A failed attempt is answered with
 * SASL_AUTHENTICATION_FAILED after auth_fail_delay_ms, and the connection
 * is closed (as Apache Kafka does). A key revoked while a connection is
 * open ends that connection at its next request.
 *
 * On a TLS Kafka port a verified client certificate whose subject CN the
 * store maps (verity auth cert add) authenticates the connection at the
 * handshake, as on the native port: no SASL is needed, and the mapping's
 * removal ends the connection at its next request. A certificate without
 * a mapping leaves the connection to SASL; SASL after a certificate login
 * replaces its principal.
 *
 * Once authenticated, every topic and group name is the name inside the
 * principal's tenant, stored as "<tenant>~<name>" exactly as the native
 * protocol stores it, so both protocols see the same topics; ACLs are
 * checked per resource (Produce: produce; Fetch, ListOffsets, OffsetCommit:
 * consume; Metadata, DescribeConfigs, OffsetFetch: describe; CreateTopics,
 * DeleteTopics: admin; the group APIs: group). Without auth_file, names are
 * used as given and nothing is checked.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include "broker/auth.h"
#include "broker/auth_store.h"
#include "broker/blog.h"
#include "broker/kafka/kafka_int.h"
#include "broker/kafka/kparse.h"
#include "proto/codec.h"
#include "verity/errors.h"
#include "verity/limits.h"


bool ksasl_required(const struct kconn *c)
{
    return auth_on(c->k->b) && !c->sasl_done;
}

bool ksasl_current(struct kconn *c)
{
    if (!c->sasl_done)
        return true;
    if (auth_who_current(c->k->b, &c->who))
        return true;
    blog(BLOG_INFO, "auth_revoked", "conn=%" PRIu64 " peer=%s tenant=%s principal=%s port=kafka",
         c->id, c->peer, c->who.tenant, c->who.principal);
    return false;
}

/* The connections quota (issue 14): c, now authenticated as who, is
 * counted under who's principal and tenant, as a native connection is,
 * after it stops counting under the principal it had; false (c then has
 * no principal) when the quota is full, why naming it. */
static bool ksasl_count(struct kconn *c, const struct auth_who *who, char *why, size_t cap)
{
    ksasl_uncount(c);
    c->sasl_done = false;
    c->by_cert = false;
    if (auth_who_conn_take(c->k->b, who, c->id, c->peer, &c->quota_counted, why, cap)) {
        c->quota_refused = true;
        return false;
    }
    c->quota_refused = false;
    c->who = *who;
    c->sasl_done = true;
    return true;
}

void ksasl_uncount(struct kconn *c)
{
    if (c->quota_counted)
        auth_who_conn_give(c->k->b, &c->who);
    c->quota_counted = false;
}

void ksasl_tls(struct kconn *c, struct ssl_st *ssl)
{
    struct auth_who who;
    char why[200];
    if (!auth_on(c->k->b) || c->sasl_done || !ssl)
        return;
    /* a certificate over the connections quota leaves the connection
     * unauthenticated: its first request past ApiVersions closes it
     * (kafka_auth_required reason=quota_connections) */
    if (auth_login_cert(c->k->b, ssl, c->id, c->peer, &who) == 0 &&
        ksasl_count(c, &who, why, sizeof why))
        c->by_cert = true;
}

void k_sasl_handshake(struct kreq *q)
{
    struct kstr mech = kr_str(&q->r, false);
    if (!kr_ok(&q->r)) {
        kreq_malformed(q, "SaslHandshake request does not decode");
        return;
    }
    bool on = auth_on(q->k->b);
    /* v0 would be followed by raw SASL tokens outside Kafka framing; only
     * v1 (SaslAuthenticate) is spoken. librdkafka enables SASL only when
     * the advertised range holds v0, and then sends v1. */
    bool plain = on && q->api_version >= 1 && mech.len == 5 && memcmp(mech.p, "PLAIN", 5) == 0;
    if (plain)
        q->c->sasl_mech = true;
    kw_i16(&q->w, plain                     ? KE_NONE
                  : on && q->api_version >= 1 ? KE_UNSUPPORTED_SASL_MECHANISM
                                              : KE_ILLEGAL_SASL_STATE);
    kw_i32(&q->w, on ? 1 : 0);
    if (on)
        kw_str(&q->w, "PLAIN");
    kreq_done(q);
}

/* A failed SaslAuthenticate: answered after the delay, then the connection
 * closes (kreq_close_after). */
struct ksasl_wait {
    struct kreq *q;
    struct event *ev;
};

static void ksasl_fail_answer(struct kreq *q, const char *msg)
{
    kw_i16(&q->w, KE_SASL_AUTHENTICATION_FAILED);
    kw_str(&q->w, msg);
    kw_i32(&q->w, 0); /* auth_bytes: empty */
    if (q->api_version >= 1)
        kw_i64(&q->w, 0);
    kreq_close_after(q);
    kreq_done(q);
}

static void ksasl_wait_free(struct ksasl_wait *sw)
{
    event_free(sw->ev);
    free(sw);
}

static void ksasl_wait_cb(evutil_socket_t fd, short what, void *arg)
{
    struct ksasl_wait *sw = arg;
    struct kreq *q = sw->q;
    (void)fd;
    (void)what;
    ksasl_wait_free(sw);
    q->ctx = NULL;
    q->cancel = NULL;
    ksasl_fail_answer(q, "authentication failed (unknown, wrong or revoked key, or another "
                         "principal's key)");
}

static void ksasl_wait_cancel(struct kreq *q)
{
    ksasl_wait_free(q->ctx);
    q->silent = true;
    kreq_done(q);
}

static void ksasl_fail(struct kreq *q)
{
    uint32_t ms = q->k->b->cfg.auth_fail_delay_ms;
    struct ksasl_wait *sw = ms ? calloc(1, sizeof *sw) : NULL;
    if (sw)
        sw->ev = evtimer_new(q->k->b->base, ksasl_wait_cb, sw);
    if (!sw || !sw->ev) {
        free(sw);
        ksasl_fail_answer(q, "authentication failed");
        return;
    }
    sw->q = q;
    q->ctx = sw;
    q->cancel = ksasl_wait_cancel;
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    evtimer_add(sw->ev, &tv);
}

void k_sasl_authenticate(struct kreq *q)
{
    struct kconn *c = q->c;
    struct kstr auth = kr_bytes(&q->r, false);
    if (!kr_ok(&q->r)) {
        kreq_malformed(q, "SaslAuthenticate request does not decode");
        return;
    }
    /* a connection authenticated by its certificate may still log in with
     * SASL (SASL_SSL with a client certificate): the SASL principal wins,
     * as on Apache Kafka */
    if (!auth_on(q->k->b) || !c->sasl_mech || (c->sasl_done && !c->by_cert)) {
        kw_i16(&q->w, KE_ILLEGAL_SASL_STATE);
        kw_str(&q->w, c->sasl_done ? "already authenticated"
                                   : "SaslHandshake with mechanism PLAIN comes first");
        kw_i32(&q->w, 0);
        if (q->api_version >= 1)
            kw_i64(&q->w, 0);
        kreq_close_after(q);
        kreq_done(q);
        return;
    }
    char buf[KSASL_PLAIN_MAX + 1];
    const char *authzid = NULL, *authcid = NULL, *passwd = NULL;
    if (ksasl_plain_parse(auth.p, auth.len, buf, sizeof buf, &authzid, &authcid, &passwd))
        passwd = NULL;
    struct auth_who who;
    if (!passwd || (authzid[0] && strcmp(authzid, authcid) != 0) ||
        auth_login_key(q->k->b, passwd, c->id, c->peer, &who) ||
        strcmp(who.principal, authcid) != 0) {
        c->sasl_mech = false;
        ksasl_fail(q);
        return;
    }
    char why[200];
    if (!ksasl_count(c, &who, why, sizeof why)) {
        /* over the connections quota: refused at once, naming the quota
         * (not a wrong key: no delay), and the connection closes */
        c->sasl_mech = false;
        ksasl_fail_answer(q, why);
        return;
    }
    kw_i16(&q->w, KE_NONE);
    kw_str(&q->w, NULL);
    kw_i32(&q->w, 0);
    if (q->api_version >= 1)
        kw_i64(&q->w, 0); /* session lifetime: none (re-authentication is not asked for) */
    kreq_done(q);
}

/* ---- names ----------------------------------------------------------------- */

int16_t kname_in(struct kreq *q, struct kstr s, bool group, unsigned ops, char *out, size_t cap)
{
    int16_t bad = group ? KE_INVALID_GROUP_ID : KE_UNKNOWN_TOPIC_OR_PARTITION;
    struct kconn *c = q->c;
    if (!c->sasl_done)
        return kstr_copy(s, out, cap) && out[0] ? KE_NONE : bad;
    size_t tl = strlen(c->who.tenant);
    if (!s.p || s.len <= 0 || tl + 1 + (size_t)s.len >= cap ||
        memchr(s.p, CODEC_TENANT_SEP, (size_t)s.len) || memchr(s.p, '\0', (size_t)s.len))
        return bad;
    char name[VERITY_TOPIC_NAME_MAX + 1];
    if (!kstr_copy(s, name, sizeof name) || !name[0])
        return bad;
    if (ops && !auth_who_allowed(q->k->b, &c->who, group ? AUTH_RES_GROUP : AUTH_RES_TOPIC, name,
                                 ops, c->id, c->peer, kapi_name(q->api_key)))
        return group ? KE_GROUP_AUTHORIZATION_FAILED : KE_TOPIC_AUTHORIZATION_FAILED;
    snprintf(out, cap, "%s%c%s", c->who.tenant, CODEC_TENANT_SEP, name);
    return KE_NONE;
}

const char *kname_out(const struct kreq *q, const char *full)
{
    const struct kconn *c = q->c;
    if (!c->sasl_done)
        return full;
    size_t tl = strlen(c->who.tenant);
    if (strncmp(full, c->who.tenant, tl) != 0 || full[tl] != CODEC_TENANT_SEP)
        return NULL;
    return full + tl + 1;
}

bool kname_visible(struct kreq *q, const char *full, unsigned ops)
{
    const char *n = kname_out(q, full);
    if (!n)
        return false;
    if (!q->c->sasl_done)
        return true;
    return auth_who_allowed_quiet(q->k->b, &q->c->who, AUTH_RES_TOPIC, n, ops);
}
