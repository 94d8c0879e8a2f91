/*
 * Produce: validate each batch at the boundary, apply the producer rules
 * (epoch fencing from the metadata log, sequences and idempotency keys from
 * the partition's idem state), propose the batch to the partition's
 * replicator (which assigns offsets, chains and appends the client's bytes
 * unchanged apart from the base offset and chain hash), and answer once the
 * high watermark passes every appended batch, or the timeout fires.
 *
 * Invariants: an entry is answered with success only when the partition's
 * high watermark is past its last offset, and that includes duplicates (a
 * duplicate of a batch not yet durable waits like the original); an entry
 * is resolved exactly once; the request is answered when every entry is
 * resolved, with results in request order.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include "broker/batchcheck.h"
#include "broker/blog.h"
#include "broker/broker_int.h"
#include "storage/batch.h"
#include "verity/errors.h"
#include "verity/verify.h"

#define MSG_MAX 200

struct produce_ctx {
    struct req *req;
    size_t n;
    size_t pending;               /* entries not yet resolved */
    Verity__ProduceResult *res;   /* n */
    Verity__ProduceResult **ptrs; /* n */
    char (*msgs)[MSG_MAX];        /* n */
    struct prod_wait *waits;      /* n */
    bool *resolved;               /* n */
    struct event *timer;
    long trace_row;               /* sampled path trace row (trace.h), -1 none */
};

static void produce_finish(struct produce_ctx *pc)
{
    struct req *r = pc->req;
    VERITY_VERIFY(pc->pending == 0);
    if (pc->timer)
        event_free(pc->timer);
    Verity__ProduceResponse resp = VERITY__PRODUCE_RESPONSE__INIT;
    resp.n_results = pc->n;
    resp.results = pc->ptrs;
    Verity__Envelope env = VERITY__ENVELOPE__INIT;
    env.body_case = VERITY__ENVELOPE__BODY_PRODUCE_RESP;
    env.produce_resp = &resp;
    r->ctx = NULL;
    struct broker *b = r->b;
    req_reply(r, &env, NULL, 0); /* frees r */
    if (pc->trace_row >= 0)
        trace_answer(b, pc->trace_row, mono_ns());
    free(pc->res);
    free(pc->ptrs);
    free(pc->msgs);
    free(pc->waits);
    free(pc->resolved);
    free(pc);
}

/* Resolves entry i with err (or success at hw). */
static void resolve(struct produce_ctx *pc, size_t i, int err, uint64_t hw, const char *msg)
{
    VERITY_VERIFY(!pc->resolved[i]);
    pc->resolved[i] = true;
    Verity__ProduceResult *o = &pc->res[i];
    o->high_watermark = hw;
    if (err) {
        o->error = codec_err_to_wire(err);
        snprintf(pc->msgs[i], MSG_MAX, "%s", msg ? msg : verity_strerror(err));
        o->error_message = pc->msgs[i];
        pc->req->failed_entry = true;
    }
    pc->pending--;
}

void produce_wait_resolve(struct prod_wait *w, int err, uint64_t hw)
{
    if (w->resolve) {
        w->resolve(w, err, hw);
        return;
    }
    struct produce_ctx *pc = w->ctx;
    VERITY_VERIFY(w->linked);
    TAILQ_REMOVE(&w->part->waits, w, link);
    w->linked = false;
    if (err == 0 && !w->leader_ack)
        VERITY_VERIFY(hw >= w->end);
    char msg[MSG_MAX];
    if (err)
        snprintf(msg, sizeof msg, "batch appended but not committed: %s", verity_strerror(err));
    resolve(pc, w->idx, err, hw, err ? msg : NULL);
    if (pc->pending == 0)
        produce_finish(pc);
}

static void timeout_cb(evutil_socket_t fd, short what, void *arg)
{
    struct produce_ctx *pc = arg;
    (void)fd;
    (void)what;
    for (size_t i = 0; i < pc->n; i++) {
        struct prod_wait *w = &pc->waits[i];
        if (!w->linked)
            continue;
        TAILQ_REMOVE(&w->part->waits, w, link);
        w->linked = false;
        resolve(pc, i, VERITY_ETIMEOUT, part_hw(w->part),
                "batch appended but not durable within the produce timeout; retry to learn "
                "its offset");
    }
    produce_finish(pc);
}

/* Links entry i to wait for end on p, keeping p->waits sorted by end. */
static void wait_on(struct produce_ctx *pc, size_t i, struct partition *p, uint64_t end)
{
    struct prod_wait *w = &pc->waits[i];
    w->part = p;
    w->end = end;
    w->ctx = pc;
    w->idx = i;
    w->leader_ack = false;
    struct prod_wait *at = TAILQ_LAST(&p->waits, prod_wait_list);
    while (at && at->end > end)
        at = TAILQ_PREV(at, prod_wait_list, link);
    if (at)
        TAILQ_INSERT_AFTER(&p->waits, at, w, link);
    else
        TAILQ_INSERT_HEAD(&p->waits, w, link);
    w->linked = true;
}

/* Handles entry i whose bytes are batch[0, len). Resolves it or links a wait. */
static void produce_one(struct produce_ctx *pc, size_t i, uint8_t *batch, size_t len)
{
    struct broker *b = pc->req->b;
    const Verity__ProduceBatch *e = pc->req->msg->env->produce_req->batches[i];
    char msg[MSG_MAX];
    struct partition *p;
    struct batch_hdr h;
    int rc = topic_partition(b, e->topic, e->partition, &p, msg, sizeof msg);
    if (rc) {
        resolve(pc, i, rc, 0, msg);
        return;
    }
    uint32_t leader = 0;
    if ((rc = cluster_part_writable(p, &leader))) {
        /* a backup, or a primary not ready yet: the client asks the primary */
        pc->res[i].leader = leader;
        snprintf(msg, sizeof msg, "not the primary of partition %" PRIu32 " (primary: node %" PRIu32 ")",
                 p->id, leader);
        resolve(pc, i, rc, part_hw(p), msg);
        return;
    }
    if (!p->replica || p->error) {
        rc = p->error ? p->error : VERITY_EREADONLY;
        snprintf(msg, sizeof msg, "partition unavailable: %s", verity_strerror(rc));
        resolve(pc, i, rc, part_hw(p), msg);
        return;
    }
    uint64_t hw = part_hw(p);
    if ((rc = produce_check_batch(batch, len, p->topic->cfg.max_message_bytes, &h, msg,
                                  sizeof msg))) {
        resolve(pc, i, rc, hw, msg);
        return;
    }
    if (h.producer_id >= 0) {
        int cur = meta_producer_epoch(b, h.producer_id);
        if (cluster_on(b) && (cur < 0 || h.producer_epoch > cur)) {
            /* cluster: the id or epoch may be committed in __meta but not
             * applied on this broker yet; retriable (the client refreshes
             * Metadata and sends again) */
            snprintf(msg, sizeof msg,
                     "producer %" PRId64 " epoch %d not known here yet (metadata catching up)",
                     h.producer_id, (int)h.producer_epoch);
            resolve(pc, i, VERITY_ENOTLEADER, hw, msg);
            return;
        }
        if (cur < 0) {
            snprintf(msg, sizeof msg, "unknown producer id %" PRId64 "; call InitProducer",
                     h.producer_id);
            resolve(pc, i, VERITY_ENOTFOUND, hw, msg);
            return;
        }
        if (h.producer_epoch < cur) {
            snprintf(msg, sizeof msg, "producer %" PRId64 " epoch %d is fenced by epoch %d",
                     h.producer_id, (int)h.producer_epoch, cur);
            resolve(pc, i, VERITY_EFENCED, hw, msg);
            return;
        }
        if (h.producer_epoch > cur) {
            snprintf(msg, sizeof msg, "producer %" PRId64 " epoch %d was never issued (current %d)",
                     h.producer_id, (int)h.producer_epoch, cur);
            resolve(pc, i, VERITY_EINVAL, hw, msg);
            return;
        }
    }
    int64_t now = now_ms();
    struct idem_batch dup;
    idem_expire(&p->idem, now);
    rc = idem_check(&p->idem, &h, now, &dup, msg, sizeof msg);
    if (rc == VERITY_ELIMIT)
        b->met.idem_limit_refusals++;
    if (rc < 0) {
        resolve(pc, i, rc, hw, msg);
        return;
    }
    Verity__ProduceResult *o = &pc->res[i];
    if (rc == IDEM_DUPLICATE) {
        b->met.produce_duplicates++;
        o->base_offset = dup.base_offset;
        o->last_offset = dup.last_offset;
        o->duplicate = true;
        if (dup.last_offset < hw)
            resolve(pc, i, 0, hw, NULL);
        else
            wait_on(pc, i, p, dup.last_offset + 1);
        return;
    }
    struct vlog_append_info ai;
    int64_t t_append = b->trace ? mono_ns() : 0;
    if ((rc = replica_propose(p->replica, batch, len, now, &ai))) {
        if (rc == VERITY_ENOTLEADER) {
            (void)cluster_part_writable(p, &leader);
            pc->res[i].leader = leader;
            snprintf(msg, sizeof msg, "not the primary of partition %" PRIu32 " now", p->id);
            resolve(pc, i, rc, hw, msg);
            return;
        }
        snprintf(msg, sizeof msg, "append failed: %s", verity_strerror(rc));
        blog(BLOG_WARN, "append_failed", "topic=%s partition=%" PRIu32 " error=%s", p->topic->name,
             p->id, verity_errname(rc));
        resolve(pc, i, rc, hw, msg);
        return;
    }
    /* Keys are remembered from their append time, so a producer that sends
     * old event times still gets its retries recognised. A rebuild without
     * a snapshot can only approximate it with the batch time
     * (docs/SNAPSHOTS.md "Exactness"); snapshots keep it. */
    if ((rc = idem_record(&p->idem, &h, ai.base_offset, ai.last_offset, now)))
        blog(BLOG_ERROR, "idem_record_failed", "topic=%s partition=%" PRIu32 " error=%s",
             p->topic->name, p->id, verity_errname(rc));
    groups_on_append(p, ai.last_offset + 1);
    b->met.produce_batches++;
    b->met.produce_records += h.record_count;
    o->base_offset = ai.base_offset;
    o->last_offset = ai.last_offset;
    if (b->trace && pc->trace_row < 0)
        pc->trace_row = trace_produce(b, p, ai.base_offset, pc->req->start_ns, t_append, mono_ns());
    /* acks=leader on a replicated partition: durable in the primary's
     * journal is enough (weaker: docs/REPLICATION.md) */
    if (p->cg && pc->req->msg->env->produce_req->acks == VERITY__ACKS__ACKS_LEADER &&
        cluster_part_leader_durable(p, ai.last_offset + 1)) {
        resolve(pc, i, 0, hw, NULL);
        return;
    }
    wait_on(pc, i, p, ai.last_offset + 1);
    if (p->cg && pc->req->msg->env->produce_req->acks == VERITY__ACKS__ACKS_LEADER)
        pc->waits[i].leader_ack = true; /* resolved after the journal flush */
}

void h_produce(struct req *r)
{
    struct broker *b = r->b;
    const Verity__ProduceRequest *q = r->msg->env->produce_req;
    size_t n = q->n_batches;
    struct produce_ctx *pc = calloc(1, sizeof *pc);
    if (pc) {
        pc->trace_row = -1;
        pc->res = calloc(n, sizeof *pc->res);
        pc->ptrs = calloc(n, sizeof *pc->ptrs);
        pc->msgs = calloc(n, sizeof *pc->msgs);
        pc->waits = calloc(n, sizeof *pc->waits);
        pc->resolved = calloc(n, sizeof *pc->resolved);
        pc->timer = evtimer_new(b->base, timeout_cb, pc);
    }
    if (!pc || !pc->res || !pc->ptrs || !pc->msgs || !pc->waits || !pc->resolved || !pc->timer) {
        if (pc) {
            if (pc->timer)
                event_free(pc->timer);
            free(pc->res);
            free(pc->ptrs);
            free(pc->msgs);
            free(pc->waits);
            free(pc->resolved);
            free(pc);
        }
        req_fail(r, -ENOMEM, NULL);
        return;
    }
    pc->req = r;
    pc->n = n;
    pc->pending = n;
    /* No cancel hook: when the connection dies first, the entries still
     * resolve (their batches may be in the log) and the answer is dropped. */
    r->ctx = pc;
    for (size_t i = 0; i < n; i++) {
        verity__produce_result__init(&pc->res[i]);
        pc->res[i].topic = q->batches[i]->topic;
        pc->res[i].partition = q->batches[i]->partition;
        pc->ptrs[i] = &pc->res[i];
    }
    /* Hold one extra pending count so no entry can finish the request while
     * the loop still walks the entries. */
    pc->pending++;
    size_t pos = 0;
    for (size_t i = 0; i < n; i++) {
        size_t len = q->batches[i]->batch_bytes;
        VERITY_VERIFY(pos + len <= r->payload_len);
        produce_one(pc, i, r->payload + pos, len);
        pos += len;
    }
    VERITY_VERIFY(pos == r->payload_len);
    /* The batches are in the log (or refused): let the payload go now, so
     * produces waiting for durability hold only their envelopes. */
    free(r->frame);
    r->frame = NULL;
    r->payload = NULL;
    r->payload_len = 0;
    pc->pending--;
    if (pc->pending == 0) {
        produce_finish(pc);
        return;
    }
    /* Storage may already have made some of them durable (os mode). */
    uint32_t tmo = q->timeout_ms && q->timeout_ms < b->cfg.produce_timeout_ms
                       ? q->timeout_ms
                       : b->cfg.produce_timeout_ms;
    struct timeval tv = {tmo / 1000, (tmo % 1000) * 1000};
    evtimer_add(pc->timer, &tv);
}
