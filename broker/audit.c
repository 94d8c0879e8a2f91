/*
 * The audit trail (issue 14): see broker/audit.h.
 *
 * Events wait in one FIFO. The flush (a zero-delay timer) walks it in
 * order and appends runs of events of the same topic as one batch to
 * partition 0 of that topic. An event whose topic is missing starts its
 * creation and stays queued, as does everything behind it for that topic;
 * events of other topics go on. A failed append leaves the run queued and
 * retries after AUDIT_RETRY_MS.
 *
 * In a cluster a topic can only be created by the primary of __meta, and a
 * partition appended to only where it is placed. So an audit topic there
 * has one partition per broker, one replica each (partition i on the
 * cluster's i-th node, broker/cluster.c placement): every broker appends
 * its own events to its own partition. The primary of __meta creates the
 * audit topics: __audit, and <tenant>~__audit for every tenant named in
 * the security store in use (which every broker shares), from a timer
 * (AUDIT_ENSURE_MS), so an event on another broker finds its tenant's
 * topic without that broker having to create it. Events of a broker that
 * is not the primary wait (queued) until the topic's record reaches it.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>
#include <jansson.h>

#include "broker/audit.h"
#include "broker/auth.h"
#include "broker/auth_store.h"
#include "broker/blog.h"
#include "broker/broker_int.h"
#include "broker/cluster.h"
#include "verity/errors.h"

#define AUDIT_RETRY_MS 1000
#define AUDIT_ENSURE_MS 1000  /* cluster: the primary's check of the audit topics */
#define AUDIT_ENSURE_MAX 16u  /* creations started per check */

struct audit_rec {
    char topic[VERITY_TOPIC_NAME_MAX + 1];
    char event[48];
    char *json;
    size_t len;
    int64_t ts_ms;
    TAILQ_ENTRY(audit_rec) link;
};
TAILQ_HEAD(audit_q, audit_rec);

/* A topic whose creation this module started and that is not ready yet. */
struct audit_creating {
    struct audit *a;
    char topic[VERITY_TOPIC_NAME_MAX + 1];
    struct audit_creating *next;
    bool orphan; /* the audit state was freed: the callback only frees this */
};

struct audit {
    struct broker *b;
    struct audit_q q;
    size_t n;
    struct event *flush_ev;
    struct event *ensure_ev; /* cluster only */
    struct audit_creating *creating;
    uint64_t appended, dropped;
    int64_t drop_log_ns;
};

static void flush_cb(evutil_socket_t fd, short what, void *arg);
static void ensure_cb(evutil_socket_t fd, short what, void *arg);

struct audit *audit_new(struct broker *b)
{
    struct audit *a = calloc(1, sizeof *a);
    if (!a)
        return NULL;
    a->b = b;
    TAILQ_INIT(&a->q);
    a->flush_ev = evtimer_new(b->base, flush_cb, a);
    if (cluster_on(b))
        a->ensure_ev = event_new(b->base, -1, EV_PERSIST, ensure_cb, a);
    if (!a->flush_ev || (cluster_on(b) && !a->ensure_ev)) {
        if (a->flush_ev)
            event_free(a->flush_ev);
        free(a);
        return NULL;
    }
    if (a->ensure_ev) {
        struct timeval tv = {AUDIT_ENSURE_MS / 1000, (AUDIT_ENSURE_MS % 1000) * 1000};
        event_add(a->ensure_ev, &tv);
    }
    return a;
}

void audit_free(struct audit *a)
{
    if (!a)
        return;
    struct audit_rec *r;
    while ((r = TAILQ_FIRST(&a->q))) {
        TAILQ_REMOVE(&a->q, r, link);
        free(r->json);
        free(r);
    }
    /* Creations still in flight call back later: they find an orphan. */
    for (struct audit_creating *c = a->creating; c; c = c->next)
        c->orphan = true;
    event_free(a->flush_ev);
    if (a->ensure_ev)
        event_free(a->ensure_ev);
    free(a);
}

void audit_stats(const struct audit *a, struct audit_stats *out)
{
    memset(out, 0, sizeof *out);
    if (!a)
        return;
    out->events = a->appended;
    out->dropped = a->dropped;
    out->queued = a->n;
}

static void arm(struct audit *a, int64_t ms)
{
    struct timeval tv = {(time_t)(ms / 1000), (suseconds_t)(ms % 1000) * 1000};
    if (ms == 0 || !evtimer_pending(a->flush_ev, NULL))
        evtimer_add(a->flush_ev, &tv);
}

static void drop(struct audit *a, const char *event, const char *why)
{
    a->dropped++;
    int64_t now = mono_ns();
    if (now - a->drop_log_ns >= 1000000000) { /* one line a second at most */
        a->drop_log_ns = now;
        blog(BLOG_WARN, "audit_dropped", "event=%s reason=\"%s\" dropped_total=%" PRIu64, event,
             why, a->dropped);
    }
}

static int enqueue(struct audit *a, const char *topic, const char *event, const char *json,
                   size_t len, int64_t ts)
{
    if (a->n >= AUDIT_QUEUE_MAX) {
        drop(a, event, "queue full");
        return VERITY_ELIMIT;
    }
    struct audit_rec *r = calloc(1, sizeof *r);
    char *j = r ? malloc(len) : NULL;
    if (!j) {
        free(r);
        drop(a, event, "out of memory");
        return -ENOMEM;
    }
    memcpy(j, json, len);
    snprintf(r->topic, sizeof r->topic, "%s", topic);
    snprintf(r->event, sizeof r->event, "%s", event);
    r->json = j;
    r->len = len;
    r->ts_ms = ts;
    TAILQ_INSERT_TAIL(&a->q, r, link);
    a->n++;
    return 0;
}

void audit_emit(struct audit *a, const char *tenant, const char *event, const char *fmt, ...)
{
    if (!a)
        return;
    if (a->b->stopping) {
        drop(a, event, "broker stopping");
        return;
    }
    int64_t ts = now_ms();
    json_t *o = NULL;
    if (fmt) {
        va_list ap;
        va_start(ap, fmt);
        json_error_t err;
        o = json_vpack_ex(&err, 0, fmt, ap);
        va_end(ap);
    } else {
        o = json_object();
    }
    if (!o || json_object_set_new(o, "ts_ms", json_integer(ts)) ||
        json_object_set_new(o, "event", json_string(event)) ||
        json_object_set_new(o, "tenant", json_string(tenant ? tenant : "")) ||
        (cluster_on(a->b) &&
         json_object_set_new(o, "node", json_integer((json_int_t)a->b->cfg.node_id)))) {
        json_decref(o);
        drop(a, event, "out of memory");
        return;
    }
    char *text = json_dumps(o, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(o);
    if (!text) {
        drop(a, event, "out of memory");
        return;
    }
    size_t len = strlen(text);
    enqueue(a, AUDIT_TOPIC, event, text, len, ts);
    if (tenant && tenant[0]) {
        char t[VERITY_TOPIC_NAME_MAX + 1];
        snprintf(t, sizeof t, "%s%c%s", tenant, CODEC_TENANT_SEP, AUDIT_TOPIC);
        enqueue(a, t, event, text, len, ts);
    }
    free(text);
    arm(a, 0);
}

/* ---- topics ------------------------------------------------------------------ */

static void created_cb(struct broker *b, void *arg, int err)
{
    struct audit_creating *c = arg;
    if (c->orphan) {
        free(c);
        return;
    }
    struct audit *a = c->a;
    for (struct audit_creating **pp = &a->creating; *pp; pp = &(*pp)->next) {
        if (*pp == c) {
            *pp = c->next;
            break;
        }
    }
    if (err)
        blog(BLOG_WARN, "audit_topic_failed", "topic=%s error=%s", c->topic, verity_errname(err));
    else
        blog(BLOG_INFO, "audit_topic_created", "topic=%s", c->topic);
    free(c);
    (void)b;
    arm(a, err ? AUDIT_RETRY_MS : 0);
}

static bool creating(const struct audit *a, const char *topic)
{
    for (const struct audit_creating *c = a->creating; c; c = c->next)
        if (strcmp(c->topic, topic) == 0)
            return true;
    return false;
}

/* Starts creating topic. 0, or an error (retry later). */
static int create(struct audit *a, const char *topic)
{
    struct broker *b = a->b;
    char msg[256];
    struct topic_cfg tc;
    int rc = topic_cfg_from_wire(b, NULL, &tc, msg, sizeof msg);
    if (rc)
        return rc;
    /* one partition per broker of a cluster, each on its own broker */
    tc.partitions = cluster_on(b) ? b->cfg.cluster_n : 1;
    tc.replicas = 1;
    tc.retention_ms = -1; /* an audit trail is kept */
    tc.retention_bytes = -1;
    if (b->n_topics >= b->cfg.max_topics)
        return VERITY_ELIMIT;
    struct audit_creating *c = calloc(1, sizeof *c);
    if (!c)
        return -ENOMEM;
    c->a = a;
    snprintf(c->topic, sizeof c->topic, "%s", topic);
    c->next = a->creating;
    a->creating = c;
    rc = topic_create_internal_start(b, topic, &tc, created_cb, c, msg, sizeof msg);
    if (rc) {
        a->creating = c->next;
        free(c);
        /* cluster: not (or not yet) the primary of __meta; the primary
         * creates it (ensure_cb) and the record brings it here */
        if (rc != VERITY_ENOTLEADER)
            blog(BLOG_WARN, "audit_topic_failed", "topic=%s error=%s", topic,
                 verity_errname(rc));
        return rc;
    }
    return 0;
}

/* cluster: true when this broker is the primary of __meta (it alone
 * creates topics). */
static bool meta_primary(struct broker *b)
{
    return !cluster_on(b) || cluster_meta_leader(b) == b->cfg.node_id;
}

/* Creates the audit topic of tenant ("" or NULL: the broker-wide one) when
 * it is missing and not being created. *started counts the creations. */
static void ensure_one(struct audit *a, const char *tenant, unsigned *started)
{
    char t[VERITY_TOPIC_NAME_MAX + 1];
    if (tenant && tenant[0])
        snprintf(t, sizeof t, "%s%c%s", tenant, CODEC_TENANT_SEP, AUDIT_TOPIC);
    else
        snprintf(t, sizeof t, "%s", AUDIT_TOPIC);
    if (*started >= AUDIT_ENSURE_MAX || topic_find(a->b, t) || creating(a, t))
        return;
    if (create(a, t) == 0)
        (*started)++;
    else
        *started = AUDIT_ENSURE_MAX; /* not now (not the primary, limits): next tick */
}

/* cluster: the primary of __meta makes sure every tenant of the store in
 * use has its audit topic, so that events on any broker find it. */
static void ensure_cb(evutil_socket_t fd, short what, void *arg)
{
    struct audit *a = arg;
    struct broker *b = a->b;
    (void)fd;
    (void)what;
    if (b->stopping || !meta_primary(b))
        return;
    const struct auth_store *s = auth_store_in_use(b);
    unsigned started = 0;
    ensure_one(a, NULL, &started);
    for (size_t i = 0; s && i < s->n_keys; i++)
        ensure_one(a, s->keys[i].tenant, &started);
    for (size_t i = 0; s && i < s->n_certs; i++)
        ensure_one(a, s->certs[i].tenant, &started);
    for (size_t i = 0; s && i < s->n_acls; i++)
        ensure_one(a, s->acls[i].tenant, &started);
    for (size_t i = 0; s && i < s->n_roles; i++)
        ensure_one(a, s->roles[i].tenant, &started);
    for (size_t i = 0; s && i < s->n_quotas; i++)
        ensure_one(a, s->quotas[i].tenant, &started);
}

/* The partition of an audit topic this broker appends to: the only one
 * outside a cluster; in a cluster the one placed on this broker. NULL when
 * none can take an append now. */
static struct partition *own_part(struct broker *b, struct topic *t)
{
    if (t->deleting)
        return NULL;
    for (uint32_t i = 0; i < t->cfg.partitions; i++) {
        struct partition *p = t->parts[i];
        uint32_t leader;
        if (p && p->replica && !p->error &&
            (!cluster_on(b) || cluster_part_writable(p, &leader) == 0))
            return p;
    }
    return NULL;
}

/* ---- flush ------------------------------------------------------------------- */

#define RUN_WAIT 1  /* the topic is being created here: its callback flushes again */
#define RUN_LATER 2 /* not ready for another reason (loading): retry on the timer */

/* Appends the run of events for topic starting at first (at most
 * AUDIT_BATCH_MAX, each removed from the queue once appended). 0, RUN_WAIT,
 * RUN_LATER, or an error. */
static int append_run(struct audit *a, struct audit_rec *first)
{
    struct broker *b = a->b;
    struct topic *t = topic_find(b, first->topic);
    if (!t) {
        if (creating(a, first->topic))
            return RUN_WAIT;
        if (!meta_primary(b))
            return RUN_LATER; /* the primary creates it (ensure_cb) */
        int rc = create(a, first->topic);
        return rc == VERITY_ENOTLEADER ? RUN_LATER : rc ? rc : RUN_WAIT;
    }
    if (!t->ready)
        return creating(a, first->topic) ? RUN_WAIT : RUN_LATER;
    struct partition *p = own_part(b, t);
    if (!p) {
        struct partition *p0 = t->deleting ? NULL : t->parts[0];
        return p0 && p0->error && p0->error != VERITY_ENOTLEADER ? p0->error : VERITY_EREADONLY;
    }
    struct audit_rec *run[AUDIT_BATCH_MAX];
    size_t n = 0, need = BATCH_HDR_SIZE;
    for (struct audit_rec *r = first; r && n < AUDIT_BATCH_MAX; r = TAILQ_NEXT(r, link)) {
        if (strcmp(r->topic, first->topic) != 0)
            continue;
        size_t one = batch_record_size_max(strlen(r->event), r->len, NULL, 0);
        if (n > 0 && need + one > t->cfg.max_message_bytes)
            break;
        need += one;
        run[n++] = r;
    }
    struct batch_builder bb = {0};
    int rc = batch_builder_init(&bb, need);
    for (size_t i = 0; rc == 0 && i < n; i++)
        rc = batch_builder_add(&bb, run[i]->ts_ms, run[i]->event, (int32_t)strlen(run[i]->event),
                               run[i]->json, (int32_t)run[i]->len, NULL, 0);
    struct batch_meta bm = {0, -1, -1, -1, NULL};
    if (rc == 0)
        rc = batch_builder_finish(&bb, &bm);
    struct vlog_append_info ai;
    if (rc == 0)
        rc = replica_propose(p->replica, bb.buf, bb.len, now_ms(), &ai);
    batch_builder_deinit(&bb);
    if (rc)
        return rc;
    groups_on_append(p, ai.last_offset + 1);
    for (size_t i = 0; i < n; i++) {
        TAILQ_REMOVE(&a->q, run[i], link);
        a->n--;
        a->appended++;
        free(run[i]->json);
        free(run[i]);
    }
    return 0;
}

static void flush_cb(evutil_socket_t fd, short what, void *arg)
{
    struct audit *a = arg;
    (void)fd;
    (void)what;
    if (a->b->stopping)
        return;
    /* Topics that must wait (creation, failure) this round. */
    char waiting[8][VERITY_TOPIC_NAME_MAX + 1];
    size_t nw = 0;
    bool retry = false;
    struct audit_rec *r = TAILQ_FIRST(&a->q);
    while (r) {
        bool skip = false;
        for (size_t i = 0; i < nw && !skip; i++)
            skip = strcmp(waiting[i], r->topic) == 0;
        if (skip) {
            r = TAILQ_NEXT(r, link);
            continue;
        }
        struct audit_rec *prev = TAILQ_PREV(r, audit_q, link);
        int rc = append_run(a, r);
        if (rc == 0) {
            r = prev ? TAILQ_NEXT(prev, link) : TAILQ_FIRST(&a->q);
            continue;
        }
        if (rc == RUN_LATER) {
            retry = true;
        } else if (rc != RUN_WAIT) {
            retry = true;
            char q[32];
            snprintf(q, sizeof q, "%s", verity_errname(rc));
            blog(BLOG_WARN, "audit_append_failed", "topic=%s error=%s (retried)", r->topic, q);
        }
        if (nw == sizeof waiting / sizeof waiting[0])
            break; /* the rest next round */
        snprintf(waiting[nw++], sizeof waiting[0], "%s", r->topic);
        r = TAILQ_NEXT(r, link);
    }
    if (retry || (a->n > 0 && nw == sizeof waiting / sizeof waiting[0]))
        arm(a, AUDIT_RETRY_MS);
}
