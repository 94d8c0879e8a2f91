/*
 * Kafka Produce (v3-v7): each partition's record set is split into Kafka
 * batches, each converted into a Verity batch (krecords.h), checked like a
 * native batch (produce_check_batch), put through the same producer rules
 * as a native produce (epoch from the metadata log, sequence from the
 * partition's idem state, so a Kafka retry is deduplicated like a Verity
 * one and answered with the original offsets) and proposed to the
 * partition's replicator.
 *
 * acks: 0 gets no response at all (the batches are still appended); 1 and
 * -1 (all) are both answered once the high watermark passes the batch, i.e.
 * once it is durable by the topic's durability policy; Verity has no
 * weaker "leader has it in memory" acknowledgement (docs/KAFKA.md).
 *
 * Quotas (with auth_file): the Produce's record bytes are charged to the
 * SASL principal's produce_bytes_per_s and requests_per_s buckets as a
 * native produce is; a request over them is held for the throttle before
 * it is appended (the broker enforces the rate whatever the client does)
 * and the response carries that throttle in throttle_time_ms. Held
 * requests are released when the connection dies. A Produce that would
 * take the tenant's stored bytes past its storage_bytes is refused, every
 * partition with POLICY_VIOLATION (Produce v3-v7 carry no message; the
 * broker logs and audits quota_exceeded).
 *
 * Invariants: each partition entry is resolved exactly once (appended and
 * durable, refused, or timed out); the response lists topics and partitions
 * in request order.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include "broker/batchcheck.h"
#include "broker/blog.h"
#include "broker/kafka/kafka_int.h"
#include "broker/kafka/kparse.h"
#include "broker/kafka/krecords.h"
#include "verity/errors.h"
#include "verity/verify.h"

#define KMSG_MAX 160

struct kpentry {
    int16_t err;
    int64_t base_offset;
    bool resolved;
    struct prod_wait wait;
};

struct kproduce {
    struct kreq *q;
    struct broker *b;
    struct kprod_req req; /* decoded request; entry i is req.parts[i] */
    size_t n;
    size_t pending;
    struct kpentry *e;
    struct event *timer;
    struct event *hold;  /* a quota throttle before the walk */
    int32_t throttle_ms; /* reported in the response */
    int32_t timeout_ms;  /* the request's */
    bool txn;            /* a transactional produce: refused */
    int16_t refuse;      /* every entry answered with it (storage quota) */
};

#define KP_THROTTLE_MAX_MS 30000

static void kp_free(struct kproduce *kp)
{
    if (kp->timer)
        event_free(kp->timer);
    if (kp->hold)
        event_free(kp->hold);
    free(kp->e);
    kprod_req_free(&kp->req);
    free(kp);
}

static void kp_finish(struct kproduce *kp)
{
    struct kreq *q = kp->q;
    struct broker *b = kp->b;
    struct kw *w = &q->w;
    int16_t v = q->api_version;
    VERITY_VERIFY(kp->pending == 0);
    kw_i32(w, (int32_t)kp->req.n_topics);
    for (size_t ti = 0; ti < kp->req.n_topics; ti++) {
        const struct ktopic_span *t = &kp->req.topics[ti];
        kw_kstr(w, t->name);
        kw_i32(w, (int32_t)t->n);
        char name[VERITY_TOPIC_NAME_MAX + 1];
        bool named = kname_in(q, t->name, false, 0, name, sizeof name) == KE_NONE;
        for (uint32_t k = 0; k < t->n; k++) {
            const struct kpentry *e = &kp->e[t->first + k];
            const struct kprod_part *pp = &kp->req.parts[t->first + k];
            kw_i32(w, pp->partition);
            kw_i16(w, e->err);
            kw_i64(w, e->err ? -1 : e->base_offset);
            kw_i64(w, -1); /* log append time: CreateTime topics */
            if (v >= 5) {
                int64_t start = -1;
                struct partition *p;
                char msg[KMSG_MAX];
                if (named && pp->partition >= 0 &&
                    topic_partition(b, name, (uint32_t)pp->partition, &p, msg, sizeof msg) == 0 &&
                    p->log) {
                    struct vlog_info info;
                    vlog_get_info(p->log, &info);
                    start = (int64_t)info.start_offset;
                }
                kw_i64(w, start);
            }
        }
    }
    kw_i32(w, kp->throttle_ms);
    kp_free(kp);
    kreq_done(q);
}

static void kp_resolve_entry(struct kproduce *kp, size_t i, int16_t err)
{
    struct kpentry *e = &kp->e[i];
    VERITY_VERIFY(!e->resolved);
    e->resolved = true;
    e->err = err;
    kp->pending--;
}

/* prod_wait hook: the high watermark passed the entry's end, or failed. */
static void kp_wait_resolve(struct prod_wait *w, int err, uint64_t hw)
{
    struct kproduce *kp = w->ctx;
    VERITY_VERIFY(w->linked);
    TAILQ_REMOVE(&w->part->waits, w, link);
    w->linked = false;
    if (err == 0)
        VERITY_VERIFY(hw >= w->end);
    kp_resolve_entry(kp, w->idx, kerr_from_verity(err));
    if (kp->pending == 0)
        kp_finish(kp);
}

static void kp_timeout_cb(evutil_socket_t fd, short what, void *arg)
{
    struct kproduce *kp = arg;
    (void)fd;
    (void)what;
    for (size_t i = 0; i < kp->n; i++) {
        struct prod_wait *w = &kp->e[i].wait;
        if (!w->linked)
            continue;
        TAILQ_REMOVE(&w->part->waits, w, link);
        w->linked = false;
        kp_resolve_entry(kp, i, KE_REQUEST_TIMED_OUT);
    }
    kp_finish(kp);
}

static void kp_wait_on(struct kproduce *kp, size_t i, struct partition *p, uint64_t end)
{
    struct prod_wait *w = &kp->e[i].wait;
    w->resolve = kp_wait_resolve;
    w->part = p;
    w->end = end;
    w->ctx = kp;
    w->idx = i;
    struct prod_wait *at = TAILQ_LAST(&p->waits, prod_wait_list);
    while (at && at->end > end)
        at = TAILQ_PREV(at, prod_wait_list, link);
    if (at)
        TAILQ_INSERT_AFTER(&p->waits, at, w, link);
    else
        TAILQ_INSERT_HEAD(&p->waits, w, link);
    w->linked = true;
}

/* Producer epoch check against the metadata log (as h_produce.c). */
static int16_t kp_epoch_check(struct broker *b, const struct batch_hdr *h)
{
    if (h->producer_id < 0)
        return KE_NONE;
    int cur = meta_producer_epoch(b, h->producer_id);
    if (cur < 0)
        return KE_UNKNOWN_PRODUCER_ID;
    if (h->producer_epoch != cur)
        return KE_INVALID_PRODUCER_EPOCH;
    return KE_NONE;
}

/* Appends one converted batch (bb) to p. Returns 0 with [*base, *end) the
 * offsets it holds (the original ones for a duplicate), or a Kafka code. */
static int16_t kp_append(struct broker *b, struct partition *p, struct batch_builder *bb,
                         int64_t *base, uint64_t *end)
{
    char msg[KMSG_MAX];
    struct batch_hdr h;
    int rc = produce_check_batch(bb->buf, bb->len, p->topic->cfg.max_message_bytes, &h, msg,
                                 sizeof msg);
    if (rc)
        return kerr_from_verity(rc);
    int16_t ke = kp_epoch_check(b, &h);
    if (ke)
        return ke;
    int64_t now = now_ms();
    struct idem_batch dup;
    idem_expire(&p->idem, now);
    rc = idem_check(&p->idem, &h, now, &dup, msg, sizeof msg);
    if (rc < 0)
        return kerr_from_verity(rc);
    if (rc == IDEM_DUPLICATE) {
        b->met.produce_duplicates++;
        *base = (int64_t)dup.base_offset;
        *end = dup.last_offset + 1;
        return KE_NONE;
    }
    struct vlog_append_info ai;
    if ((rc = replica_propose(p->replica, bb->buf, bb->len, now, &ai))) {
        blog(BLOG_WARN, "append_failed", "topic=%s partition=%" PRIu32 " error=%s via=kafka",
             p->topic->name, p->id, verity_errname(rc));
        return kerr_from_verity(rc);
    }
    if ((rc = idem_record(&p->idem, &h, ai.base_offset, ai.last_offset, now)))
        blog(BLOG_ERROR, "idem_record_failed", "topic=%s partition=%" PRIu32 " error=%s",
             p->topic->name, p->id, verity_errname(rc));
    groups_on_append(p, ai.last_offset + 1);
    b->met.produce_batches++;
    b->met.produce_records += h.record_count;
    *base = (int64_t)ai.base_offset;
    *end = ai.last_offset + 1;
    return KE_NONE;
}

/* Handles entry i: resolves it now or links its wait. */
static void kp_entry(struct kproduce *kp, size_t i, bool silent)
{
    struct broker *b = kp->b;
    struct kpentry *e = &kp->e[i];
    const struct kprod_part *pp = &kp->req.parts[i];
    char name[VERITY_TOPIC_NAME_MAX + 1], msg[KMSG_MAX];
    struct partition *p;
    int16_t nerr = kname_in(kp->q, kp->req.topics[pp->topic_idx].name, false, AUTH_OP_PRODUCE,
                            name, sizeof name);
    if (nerr) {
        kp_resolve_entry(kp, i, nerr);
        return;
    }
    if (pp->partition < 0 || topic_partition(b, name, (uint32_t)pp->partition, &p, msg, sizeof msg)) {
        kp_resolve_entry(kp, i, KE_UNKNOWN_TOPIC_OR_PARTITION);
        return;
    }
    if (!p->replica || p->error) {
        kp_resolve_entry(kp, i, KE_KAFKA_STORAGE_ERROR);
        return;
    }
    if (!pp->records.p || pp->records.len == 0) {
        kp_resolve_entry(kp, i, KE_CORRUPT_MESSAGE);
        return;
    }
    size_t cap = (size_t)pp->records.len * 2 + 1024;
    if (cap > b->cfg.max_batch_bytes)
        cap = b->cfg.max_batch_bytes;
    struct batch_builder bb;
    if (batch_builder_init(&bb, cap)) {
        kp_resolve_entry(kp, i, KE_UNKNOWN);
        return;
    }
    const uint8_t *rp = pp->records.p;
    size_t left = (size_t)pp->records.len;
    uint64_t end_max = 0;
    bool first = true;
    int16_t err = KE_NONE;
    while (left > 0 && !err) {
        size_t blen;
        struct krec_src src;
        int kc = krec_next(rp, left, &blen, msg, sizeof msg);
        if (kc == 0)
            kc = krec_to_verity(rp, blen, &bb, &src, msg, sizeof msg);
        if (kc) {
            blog(BLOG_DEBUG, "kafka_batch_refused", "topic=%s partition=%" PRId32 " code=%d "
                 "reason=%s", name, pp->partition, kc, msg);
            err = (int16_t)kc;
            break;
        }
        int64_t base = -1;
        uint64_t end = 0;
        err = kp_append(b, p, &bb, &base, &end);
        if (!err) {
            if (first)
                e->base_offset = base;
            first = false;
            end_max = end > end_max ? end : end_max;
        }
        rp += blen;
        left -= blen;
    }
    batch_builder_deinit(&bb);
    if (err || silent) {
        kp_resolve_entry(kp, i, err);
        return;
    }
    if (end_max <= part_hw(p))
        kp_resolve_entry(kp, i, KE_NONE);
    else
        kp_wait_on(kp, i, p, end_max);
}

/* Appends every entry (or resolves it) and answers now or once durable. */
static void kp_walk(struct kproduce *kp)
{
    struct broker *b = kp->b;
    bool silent = kp->q->silent;
    kp->pending = kp->n + 1; /* held while the entries are walked */
    for (size_t i = 0; i < kp->n; i++) {
        if (kp->txn)
            kp_resolve_entry(kp, i, KE_INVALID_REQUEST); /* transactions: not supported */
        else if (kp->refuse)
            kp_resolve_entry(kp, i, kp->refuse);
        else
            kp_entry(kp, i, silent);
    }
    /* The frame stays until the response: topic names point into it. */
    kp->pending--;
    if (kp->pending == 0) {
        kp_finish(kp);
        return;
    }
    int32_t timeout_ms = kp->timeout_ms;
    uint32_t tmo = timeout_ms > 0 && (uint32_t)timeout_ms < b->cfg.produce_timeout_ms
                       ? (uint32_t)timeout_ms
                       : b->cfg.produce_timeout_ms;
    struct timeval tv = {tmo / 1000, (tmo % 1000) * 1000};
    evtimer_add(kp->timer, &tv);
}

static void kp_hold_cb(evutil_socket_t fd, short what, void *arg)
{
    struct kproduce *kp = arg;
    (void)fd;
    (void)what;
    kp->q->cancel = NULL; /* from here the entries resolve as without a hold */
    kp->q->ctx = NULL;
    kp_walk(kp);
}

/* The connection died during a hold: nothing was appended yet. */
static void kp_cancel(struct kreq *q)
{
    struct kproduce *kp = q->ctx;
    kp_free(kp);
    kreq_done(q);
}

void k_produce(struct kreq *q)
{
    struct broker *b = q->k->b;
    struct kproduce *kp = calloc(1, sizeof *kp);
    if (!kp) {
        kreq_malformed(q, "out of memory");
        return;
    }
    kp->q = q;
    kp->b = b;
    if (kprod_parse(&q->r, q->api_version, &kp->req)) {
        kp_free(kp);
        kreq_malformed(q, "Produce request does not decode");
        return;
    }
    struct kstr txn = kp->req.txn;
    int16_t acks = kp->req.acks;
    int32_t timeout_ms = kp->req.timeout_ms;
    kp->n = kp->req.n_parts;
    kp->e = calloc(kp->n ? kp->n : 1, sizeof *kp->e);
    kp->timer = evtimer_new(b->base, kp_timeout_cb, kp);
    if (!kp->e || !kp->timer) {
        kp_free(kp);
        kreq_malformed(q, "out of memory");
        return;
    }
    q->silent = acks == 0;
    kp->timeout_ms = timeout_ms;
    kp->txn = txn.p != NULL;
    if (auth_on(b) && q->c->sasl_done) {
        uint64_t bytes = 0;
        for (size_t i = 0; i < kp->n; i++)
            if (kp->req.parts[i].records.len > 0)
                bytes += (uint64_t)kp->req.parts[i].records.len;
        /* storage_bytes of the tenant: refused before any throttle, as a
         * native produce is (POLICY_VIOLATION: not retried by clients) */
        if (!kp->txn && auth_who_storage_check(b, &q->c->who, bytes, q->c->id, q->c->peer)) {
            kp->refuse = KE_POLICY_VIOLATION;
            kp_walk(kp);
            return;
        }
        char which[200] = "";
        int64_t ms = auth_who_produce_throttle_ms(b, &q->c->who, bytes, which, sizeof which);
        if (ms > 0) {
            kp->throttle_ms = (int32_t)(ms < KP_THROTTLE_MAX_MS ? ms : KP_THROTTLE_MAX_MS);
            struct timeval tv = {kp->throttle_ms / 1000, (kp->throttle_ms % 1000) * 1000};
            if ((kp->hold = evtimer_new(b->base, kp_hold_cb, kp)) &&
                evtimer_add(kp->hold, &tv) == 0) {
                q->ctx = kp;
                q->cancel = kp_cancel;
                return;
            }
        }
    }
    kp_walk(kp);
}
