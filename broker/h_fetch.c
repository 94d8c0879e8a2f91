/*
 * Fetch: whole batches from each requested offset up to the partition's
 * high watermark, sent as they lie in the segment files (evbuffer_add_file:
 * sendfile on plaintext sockets), with long-poll.
 *
 * Budget: the response payload stays within max_bytes (the request's, capped
 * by fetch_max_bytes); each partition within its own max_bytes; the first
 * batch of the response is always sent whole, so a consumer never stalls
 * behind a batch larger than its budget. A later partition whose first
 * batch does not fit is answered with no bytes this time.
 *
 * Long-poll: when fewer than min_bytes are ready and max_wait_ms > 0, the
 * fetch links itself to each of its partitions and waits. A partition whose
 * high watermark moves activates the fetch's wake event (never calling into
 * the fetch directly, so partitions can walk their lists safely); the fetch
 * then re-evaluates. The timer, a topic deletion or shutdown answer it with
 * whatever is ready.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>

#include "broker/blog.h"
#include "broker/broker_int.h"
#include "verity/errors.h"
#include "verity/verify.h"

#define SPANS_PER_PARTITION 8
#define MSG_MAX             200

struct fetch_ctx {
    struct req *req;
    size_t n;                 /* partitions requested */
    struct fetch_link *links; /* n; only the first of duplicate partitions links */
    struct event *timer;
    struct event *wake_ev;
    bool waiting; /* links and timer armed */
};

static void fetch_ctx_free(struct fetch_ctx *fc)
{
    for (size_t i = 0; i < fc->n; i++) {
        struct fetch_link *l = &fc->links[i];
        if (l->linked) {
            TAILQ_REMOVE(&l->part->fetchers, l, link);
            l->linked = false;
        }
    }
    if (fc->timer)
        event_free(fc->timer);
    if (fc->wake_ev)
        event_free(fc->wake_ev);
    free(fc->links);
    free(fc);
}

/* Evaluates the fetch; answers it when enough is ready or final. */
static void fetch_try(struct fetch_ctx *fc, bool final);

static void fetch_wake_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    fetch_try(arg, false);
}

static void fetch_timeout_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    fetch_try(arg, true);
}

void fetch_link_wake(struct fetch_link *l, bool final)
{
    if (l->wake) {
        l->wake(l, final);
        return;
    }
    struct fetch_ctx *fc = l->req->ctx;
    if (final)
        fetch_try(fc, true);
    else
        event_active(fc->wake_ev, EV_READ, 0);
}

static void fetch_cancel(struct req *r)
{
    fetch_ctx_free(r->ctx);
    r->ctx = NULL;
    req_fail(r, VERITY_ECLOSED, "connection closed");
}

static void arm(struct fetch_ctx *fc, uint32_t wait_ms)
{
    struct broker *b = fc->req->b;
    const Verity__FetchRequest *q = fc->req->msg->env->fetch_req;
    for (size_t i = 0; i < fc->n; i++) {
        const Verity__FetchPartition *e = q->partitions[i];
        struct partition *p;
        char msg[MSG_MAX];
        if (topic_partition(b, e->topic, e->partition, &p, msg, sizeof msg))
            continue;
        bool dup = false;
        for (size_t k = 0; k < i && !dup; k++)
            dup = fc->links[k].linked && fc->links[k].part == p;
        if (dup)
            continue;
        struct fetch_link *l = &fc->links[i];
        l->part = p;
        l->req = fc->req;
        TAILQ_INSERT_TAIL(&p->fetchers, l, link);
        l->linked = true;
    }
    struct timeval tv = {wait_ms / 1000, (wait_ms % 1000) * 1000};
    evtimer_add(fc->timer, &tv);
    fc->waiting = true;
}

struct fetch_part {
    struct vlog_span spans[SPANS_PER_PARTITION];
    size_t n_spans;
};

static void fetch_try(struct fetch_ctx *fc, bool final)
{
    struct req *r = fc->req;
    struct broker *b = r->b;
    const Verity__FetchRequest *q = r->msg->env->fetch_req;
    size_t n = fc->n;
    uint64_t budget = q->max_bytes && q->max_bytes < b->cfg.fetch_max_bytes
                          ? q->max_bytes
                          : b->cfg.fetch_max_bytes;
    Verity__FetchResult *res = calloc(n, sizeof *res);
    Verity__FetchResult **ptrs = calloc(n, sizeof *ptrs);
    char(*msgs)[MSG_MAX] = calloc(n, sizeof *msgs);
    struct fetch_part *fp = calloc(n, sizeof *fp);
    struct file_span *out = NULL;
    size_t n_out = 0;
    int fatal = 0;
    if (!res || !ptrs || !msgs || !fp) {
        fatal = -ENOMEM;
        goto done;
    }
    uint64_t total = 0;
    bool any_error = false;
    for (size_t i = 0; i < n; i++) {
        const Verity__FetchPartition *e = q->partitions[i];
        Verity__FetchResult *o = &res[i];
        verity__fetch_result__init(o);
        ptrs[i] = o;
        o->topic = e->topic;
        o->partition = e->partition;
        o->next_offset = e->offset;
        struct partition *p;
        int rc = topic_partition(b, e->topic, e->partition, &p, msgs[i], MSG_MAX);
        if (rc == 0 && !p->log) {
            rc = p->error ? p->error : VERITY_EREADONLY;
            snprintf(msgs[i], MSG_MAX, "partition unavailable: %s", verity_strerror(rc));
        }
        uint32_t leader = 0;
        if (rc == 0 && p->cg && cluster_part_writable(p, &leader)) {
            /* replicated: reads go to the primary (a backup's prefix is
             * committed but may be behind) */
            rc = VERITY_ENOTLEADER;
            snprintf(msgs[i], MSG_MAX, "not the primary of partition %" PRIu32 " (primary: node %" PRIu32 ")",
                     p->id, leader);
        }
        if (rc == 0) {
            struct vlog_info info;
            vlog_get_info(p->log, &info);
            uint64_t hw = part_hw(p);
            o->high_watermark = hw;
            o->start_offset = info.start_offset;
            if (e->offset < info.start_offset || e->offset > hw) {
                rc = VERITY_EOFFSET;
                snprintf(msgs[i], MSG_MAX,
                         "offset %" PRIu64 " is outside [%" PRIu64 ", %" PRIu64 "]", e->offset,
                         info.start_offset, hw);
            } else {
                uint64_t left = total < budget ? budget - total : 0;
                uint64_t pmax = e->max_bytes && e->max_bytes < left ? e->max_bytes : left;
                rc = vlog_read(p->log, e->offset, hw, pmax ? pmax : 1, fp[i].spans,
                               SPANS_PER_PARTITION, &fp[i].n_spans);
                if (rc)
                    snprintf(msgs[i], MSG_MAX, "read failed: %s", verity_strerror(rc));
            }
        }
        if (rc) {
            o->error = codec_err_to_wire(rc);
            o->error_message = msgs[i];
            fp[i].n_spans = 0;
            any_error = true;
            r->failed_entry = true;
            continue;
        }
        uint64_t bytes = 0;
        for (size_t k = 0; k < fp[i].n_spans; k++)
            bytes += fp[i].spans[k].length;
        if (bytes > 0 && total > 0 && total + bytes > budget) {
            /* its first batch does not fit after the others */
            vlog_spans_close(fp[i].spans, fp[i].n_spans);
            fp[i].n_spans = 0;
            bytes = 0;
        }
        if (fp[i].n_spans > 0)
            o->next_offset = fp[i].spans[fp[i].n_spans - 1].end_offset;
        o->records_bytes = (uint32_t)bytes;
        total += bytes;
    }
    if (!final && !any_error && total < q->min_bytes && q->max_wait_ms > 0 && !b->stopping) {
        if (!fc->waiting) {
            uint32_t wait = q->max_wait_ms < b->cfg.fetch_max_wait_ms ? q->max_wait_ms
                                                                      : b->cfg.fetch_max_wait_ms;
            arm(fc, wait);
        }
        for (size_t i = 0; i < n; i++)
            vlog_spans_close(fp[i].spans, fp[i].n_spans);
        free(res);
        free(ptrs);
        free(msgs);
        free(fp);
        return;
    }
    size_t n_spans = 0;
    for (size_t i = 0; i < n; i++)
        n_spans += fp[i].n_spans;
    out = calloc(n_spans ? n_spans : 1, sizeof *out);
    if (!out) {
        fatal = -ENOMEM;
        goto done;
    }
    for (size_t i = 0; i < n && !fatal; i++) {
        for (size_t k = 0; k < fp[i].n_spans; k++) {
            /* The answer takes the span's own descriptor (vlog_read's dup). */
            out[n_out].fd = fp[i].spans[k].fd;
            fp[i].spans[k].fd = -1;
            out[n_out].position = fp[i].spans[k].position;
            out[n_out].length = fp[i].spans[k].length;
            n_out++;
        }
    }
done:
    r->ctx = NULL;
    r->cancel = NULL;
    fetch_ctx_free(fc);
    for (size_t i = 0; fp && i < n; i++)
        vlog_spans_close(fp[i].spans, fp[i].n_spans); /* those not handed on */
    if (fatal) {
        for (size_t i = 0; i < n_out; i++)
            close(out[i].fd);
        req_fail(r, fatal, "fetch could not be answered");
    } else {
        Verity__FetchResponse resp = VERITY__FETCH_RESPONSE__INIT;
        resp.n_results = n;
        resp.results = ptrs;
        Verity__Envelope env = VERITY__ENVELOPE__INIT;
        env.body_case = VERITY__ENVELOPE__BODY_FETCH_RESP;
        env.fetch_resp = &resp;
        if (b->trace) {
            int64_t t = mono_ns();
            for (size_t i = 0; i < n; i++)
                if (res[i].records_bytes)
                    trace_deliver(b, res[i].topic, res[i].partition,
                                  r->msg->env->fetch_req->partitions[i]->offset,
                                  res[i].next_offset, t);
        }
        req_reply(r, &env, out, n_out);
    }
    free(out);
    free(res);
    free(ptrs);
    free(msgs);
    free(fp);
}

void h_fetch(struct req *r)
{
    struct broker *b = r->b;
    size_t n = r->msg->env->fetch_req->n_partitions;
    struct fetch_ctx *fc = calloc(1, sizeof *fc);
    if (fc) {
        fc->links = calloc(n, sizeof *fc->links);
        fc->timer = evtimer_new(b->base, fetch_timeout_cb, fc);
        fc->wake_ev = event_new(b->base, -1, 0, fetch_wake_cb, fc);
    }
    if (!fc || !fc->links || !fc->timer || !fc->wake_ev) {
        if (fc)
            fetch_ctx_free(fc);
        req_fail(r, -ENOMEM, NULL);
        return;
    }
    fc->req = r;
    fc->n = n;
    r->ctx = fc;
    r->cancel = fetch_cancel;
    fetch_try(fc, false);
}
