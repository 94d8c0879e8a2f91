/*
 * GroupFetch: lease messages to a member and send the batches that hold
 * them exactly as stored (evbuffer_add_file: sendfile on plaintext
 * sockets), with compact delivery metadata: per partition, ranges of
 * offsets with their delivery count (docs/PROTOCOL.md).
 *
 * One evaluation (gfetch_try):
 *   1. group_fetch leases up to max_messages (fewer when the byte budget
 *      says so: the estimate is budget / the largest average bytes per
 *      offset over the group's partitions);
 *   2. the deliveries are sorted by (partition, offset); per partition the
 *      whole batches covering them are located with vlog_read, and each
 *      batch header is read to find control batches (checkpoints, recovery
 *      records): their offsets are acknowledged by the broker as the same
 *      member and never appear in a range;
 *   3. the answer is parked until the group log is durable through the
 *      fetch's ticket, so a delivery count a member saw is never lower
 *      than the logged one.
 * If nothing user-visible was leased and max_wait_ms > 0, the fetch waits
 * on its group's list; anything that can make a message deliverable wakes
 * it (new data in one of the group's partitions, ack, nack, leave, join,
 * reset, the group timer) through its wake event, never by a direct call.
 *
 * Lifetime: a waiting fetch has a cancel hook (its connection died: unlink
 * and free). A parked one has none: the leases stand and the answer is
 * dropped when it goes out, as for produce.
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

#define FETCH_DEFAULT 1000u
#define ROUNDS_MAX    8 /* fetches that found only control offsets before answering */
#define SPANS_STEP    16
#define FRAME_SLACK   (64u << 10)

struct fpart {
    uint32_t pidx;       /* the group's flat index */
    uint32_t partition;  /* within its topic */
    size_t first, n;     /* slice of the sorted deliveries */
    size_t span0, nspan; /* slice of the spans */
    size_t range0, nrange;
    uint64_t bytes;
    uint64_t hw;
    int error;
};

/* Which file a span reads: descriptor numbers cannot say (each span has its
 * own dup), the log and the segment's base offset can. */
struct span_src {
    const struct vlog *log;
    uint64_t segment;
};

struct answer {
    struct group_delivery *dl; /* sorted deliveries, control offsets removed */
    size_t n_dl, cap_dl;
    struct fpart *parts;
    size_t n_parts, cap_parts;
    struct file_span *spans; /* dup'd fds, owned */
    size_t n_spans, cap_spans;
    struct span_src *orig; /* per span: the segment file it reads */
    size_t cap_orig;
    Verity__GroupDeliveryRange *ranges;
    Verity__GroupDeliveryRange **range_ptrs;
    size_t n_ranges;
    char (*names)[VERITY_TOPIC_NAME_MAX + 1]; /* per part */
    int64_t lease_deadline;
    uint64_t ticket;
    uint32_t generation; /* the group's generation when the leases were granted */
    bool granted;        /* generation is set */
};

struct gfetch {
    struct gpark park; /* first: the callback casts back */
    struct broker *b;
    struct req *req;
    char group[GROUP_NAME_MAX + 1];
    uint64_t member_id;
    struct bgroup *bg; /* while linked */
    bool linked;
    struct gwaiter w; /* in bg->waiters while linked */
    struct event *timer;
    struct event *wake_ev;
    bool armed; /* waiting: linked and timer running */
    uint64_t *hwm;
    size_t n_hwm;
    struct group_delivery *raw; /* group_fetch output */
    size_t cap_raw;
    struct answer ans;
};

static void answer_clear(struct answer *a)
{
    for (size_t i = 0; i < a->n_spans; i++)
        if (a->spans[i].fd >= 0)
            close(a->spans[i].fd);
    free(a->dl);
    free(a->parts);
    free(a->spans);
    free(a->orig);
    free(a->ranges);
    free(a->range_ptrs);
    free(a->names);
    memset(a, 0, sizeof *a);
}

static void unlink_waiter(struct gfetch *f)
{
    if (f->linked) {
        TAILQ_REMOVE(&f->bg->waiters, &f->w, link);
        f->linked = false;
        f->bg = NULL;
    }
    if (f->timer)
        evtimer_del(f->timer);
    f->armed = false;
}

static void gfetch_free(struct gfetch *f)
{
    unlink_waiter(f);
    if (f->timer)
        event_free(f->timer);
    if (f->wake_ev)
        event_free(f->wake_ev);
    answer_clear(&f->ans);
    free(f->hwm);
    free(f->raw);
    free(f);
}

void gfetch_wake(struct gfetch *f)
{
    event_active(f->wake_ev, EV_READ, 0);
}

/* Sends the prepared answer (spans handed over to req_reply). */
static void send_answer(struct gfetch *f)
{
    struct answer *a = &f->ans;
    struct req *r = f->req;
    struct group_info info;
    uint32_t generation = 0;
    /* Leases carry the generation they were granted under: a JOIN applied
     * while the answer waited for the group log must not vouch for them
     * (the client would take back a partition that moved). */
    if (a->granted)
        generation = a->generation;
    else if (f->b->groups.st && group_get_info(f->b->groups.st, f->group, &info) == 0)
        generation = info.generation;
    Verity__GroupFetchResult *res = calloc(a->n_parts ? a->n_parts : 1, sizeof *res);
    Verity__GroupFetchResult **ptrs = calloc(a->n_parts ? a->n_parts : 1, sizeof *ptrs);
    if (!res || !ptrs) {
        free(res);
        free(ptrs);
        req_fail(r, -ENOMEM, NULL);
        return;
    }
    uint32_t messages = 0;
    for (size_t i = 0; i < a->n_parts; i++) {
        const struct fpart *fp = &a->parts[i];
        Verity__GroupFetchResult *o = &res[i];
        verity__group_fetch_result__init(o);
        o->topic = a->names[i];
        o->partition = fp->partition;
        for (size_t k = 0; k < fp->nrange; k++)
            messages += a->ranges[fp->range0 + k].count;
        o->n_ranges = fp->nrange;
        o->ranges = a->range_ptrs + fp->range0;
        o->records_bytes = (uint32_t)fp->bytes;
        o->high_watermark = fp->hw;
        if (fp->error) {
            o->error = codec_err_to_wire(fp->error);
            o->error_message = "partition unavailable; the leases return when they expire";
        }
        ptrs[i] = o;
    }
    Verity__GroupFetchResponse resp = VERITY__GROUP_FETCH_RESPONSE__INIT;
    resp.n_results = a->n_parts;
    resp.results = ptrs;
    resp.lease_deadline_ms = a->lease_deadline;
    resp.generation = generation;
    resp.messages = messages;
    Verity__Envelope env = VERITY__ENVELOPE__INIT;
    env.body_case = VERITY__ENVELOPE__BODY_GROUP_FETCH_RESP;
    env.group_fetch_resp = &resp;
    size_t n_spans = a->n_spans;
    a->n_spans = 0; /* req_reply takes the fds */
    if (f->b->trace) {
        int64_t t = mono_ns();
        for (size_t i = 0; i < a->n_parts; i++)
            for (size_t k = 0; k < a->parts[i].nrange; k++) {
                const Verity__GroupDeliveryRange *rg = &a->ranges[a->parts[i].range0 + k];
                trace_deliver(f->b, a->names[i], a->parts[i].partition, rg->first_offset,
                              rg->first_offset + rg->count, t);
            }
    }
    req_reply(r, &env, a->spans, n_spans);
    free(res);
    free(ptrs);
}

static void parked_done(struct broker *b, struct gpark *p, int err)
{
    struct gfetch *f = (struct gfetch *)p;
    (void)b;
    if (err) {
        char msg[200];
        snprintf(msg, sizeof msg, "the group log could not record the deliveries: %s",
                 verity_strerror(err));
        req_fail(f->req, err, msg);
    } else {
        send_answer(f);
    }
    gfetch_free(f);
}

/* Answers now with nothing, or with err. */
void gfetch_fail(struct gfetch *f, int err, const char *msg)
{
    struct req *r = f->req;
    unlink_waiter(f);
    r->ctx = NULL;
    r->cancel = NULL;
    if (err) {
        req_fail(r, err, msg);
    } else {
        answer_clear(&f->ans);
        send_answer(f);
    }
    gfetch_free(f);
}

static void fetch_cancel(struct req *r)
{
    struct gfetch *f = r->ctx;
    r->ctx = NULL;
    r->cancel = NULL;
    gfetch_free(f);
    req_fail(r, VERITY_ECLOSED, "connection closed");
}

/* ---- building the answer --------------------------------------------------------- */

static int dl_cmp(const void *x, const void *y)
{
    const struct group_delivery *a = x, *b = y;
    if (a->pidx != b->pidx)
        return a->pidx < b->pidx ? -1 : 1;
    return a->offset < b->offset ? -1 : a->offset > b->offset;
}

static int grow(void **p, size_t *cap, size_t need, size_t elem)
{
    if (need <= *cap)
        return 0;
    size_t ncap = *cap ? *cap : 16;
    while (ncap < need)
        ncap *= 2;
    void *np = realloc(*p, ncap * elem);
    if (!np)
        return -ENOMEM;
    *p = np;
    *cap = ncap;
    return 0;
}

/* Appends s to the answer, which takes its descriptor (s->fd becomes -1)
 * unless s extends the previous span (then the caller still closes it). */
static int add_span(struct answer *a, const struct vlog *log, struct vlog_span *s)
{
    if (a->n_spans > 0) {
        /* Spans hold whole batches in offset order; a span that continues
         * the previous one in the same segment file extends it. */
        struct file_span *last = &a->spans[a->n_spans - 1];
        const struct span_src *o = &a->orig[a->n_spans - 1];
        if (o->log == log && o->segment == s->segment &&
            last->position + last->length == s->position) {
            last->length += s->length;
            return 0;
        }
    }
    int rc = grow((void **)&a->spans, &a->cap_spans, a->n_spans + 1, sizeof *a->spans);
    if (rc == 0)
        rc = grow((void **)&a->orig, &a->cap_orig, a->n_spans + 1, sizeof *a->orig);
    if (rc)
        return rc;
    a->orig[a->n_spans] = (struct span_src){log, s->segment};
    a->spans[a->n_spans++] = (struct file_span){s->fd, s->position, s->length};
    s->fd = -1;
    return 0;
}

/*
 * Locates the batches of the deliveries dl[first, first + n) of partition
 * p (sorted by offset), appends their spans, and collects the offsets held
 * by control batches into ctl (refs for an ack). Returns 0 or an error
 * (the partition then gets no bytes).
 */
static int locate(struct answer *a, struct partition *p, struct fpart *fp, struct group_ref **ctl,
                  size_t *n_ctl, size_t *cap_ctl)
{
    const struct group_delivery *d = a->dl + fp->first;
    uint64_t covered = 0; /* offsets below are in spans already */
    int rc = 0;
    fp->span0 = a->n_spans;
    size_t i = 0;
    while (i < fp->n) {
        /* A run of consecutive offsets. */
        size_t j = i + 1;
        while (j < fp->n && d[j].offset == d[j - 1].offset + 1)
            j++;
        uint64_t lo = d[i].offset, hi = d[j - 1].offset + 1;
        if (lo < covered)
            lo = covered;
        while (lo < hi) {
            struct vlog_span sp[SPANS_STEP];
            size_t ns = 0;
            if ((rc = vlog_read(p->log, lo, hi, SIZE_MAX, sp, SPANS_STEP, &ns)))
                return rc;
            if (ns == 0)
                return VERITY_EOFFSET;
            for (size_t k = 0; k < ns && rc == 0; k++) {
                /* Control batches: read each batch header of the span. */
                uint64_t pos = sp[k].position, stop = sp[k].position + sp[k].length;
                while (pos < stop && rc == 0) {
                    uint8_t hb[BATCH_HDR_SIZE];
                    struct batch_hdr h;
                    if (pread(sp[k].fd, hb, sizeof hb, (off_t)pos) != (ssize_t)sizeof hb)
                        rc = -EIO;
                    else if ((rc = batch_hdr_decode(hb, sizeof hb, &h)) == 0 &&
                             h.length > stop - pos)
                        rc = VERITY_ECORRUPT;
                    if (rc)
                        break;
                    if (h.attributes & BATCH_ATTR_CONTROL) {
                        uint64_t cend = h.base_offset + h.record_count;
                        for (size_t x = i; x < fp->n; x++) {
                            if (d[x].offset >= cend)
                                break;
                            if (d[x].offset < h.base_offset)
                                continue;
                            if ((rc = grow((void **)ctl, cap_ctl, *n_ctl + 1, sizeof **ctl)))
                                break;
                            (*ctl)[(*n_ctl)++] = (struct group_ref){d[x].pidx, d[x].offset};
                        }
                    }
                    pos += h.length;
                }
                if (rc == 0 && covered < sp[k].end_offset) {
                    uint64_t len = sp[k].length;
                    if ((rc = add_span(a, p->log, &sp[k])) == 0)
                        fp->bytes += len;
                }
                if (rc == 0)
                    covered = sp[k].end_offset;
            }
            vlog_spans_close(sp, ns); /* those the answer did not take */
            if (rc)
                return rc;
            lo = covered;
        }
        i = j;
    }
    fp->nspan = a->n_spans - fp->span0;
    return 0;
}

/* Builds ranges for fp from its deliveries, skipping the control offsets
 * (ctl is sorted, as the deliveries are). */
static int make_ranges(struct answer *a, struct fpart *fp, const struct group_ref *ctl,
                       size_t n_ctl)
{
    const struct group_delivery *d = a->dl + fp->first;
    size_t c = 0;
    fp->range0 = a->n_ranges;
    for (size_t i = 0; i < fp->n; i++) {
        while (c < n_ctl && (ctl[c].pidx < d[i].pidx ||
                             (ctl[c].pidx == d[i].pidx && ctl[c].offset < d[i].offset)))
            c++;
        if (c < n_ctl && ctl[c].pidx == d[i].pidx && ctl[c].offset == d[i].offset)
            continue;
        Verity__GroupDeliveryRange *last =
            a->n_ranges > fp->range0 ? &a->ranges[a->n_ranges - 1] : NULL;
        if (last && last->first_offset + last->count == d[i].offset &&
            last->delivery_count == d[i].delivery_count) {
            last->count++;
            continue;
        }
        Verity__GroupDeliveryRange *rg = &a->ranges[a->n_ranges++];
        verity__group_delivery_range__init(rg);
        rg->first_offset = d[i].offset;
        rg->count = 1;
        rg->delivery_count = d[i].delivery_count;
    }
    fp->nrange = a->n_ranges - fp->range0;
    return 0;
}

/*
 * Turns the n raw deliveries into the answer: sorted, located, control
 * offsets acknowledged. *n_user gets the offsets a member will see.
 */
static int build(struct gfetch *f, const struct group_info *info, size_t n, size_t *n_user)
{
    struct broker *b = f->b;
    struct answer *a = &f->ans;
    const struct group_config *gc = info->cfg;
    struct group_ref *ctl = NULL;
    size_t n_ctl = 0, cap_ctl = 0;
    int rc = 0;
    *n_user = 0;
    answer_clear(a);
    a->dl = malloc(n * sizeof *a->dl);
    a->ranges = calloc(n, sizeof *a->ranges);
    a->range_ptrs = calloc(n, sizeof *a->range_ptrs);
    if (!a->dl || !a->ranges || !a->range_ptrs)
        return -ENOMEM;
    memcpy(a->dl, f->raw, n * sizeof *a->dl);
    a->n_dl = n;
    bool sorted = true;
    for (size_t i = 1; i < n && sorted; i++)
        sorted = dl_cmp(&a->dl[i - 1], &a->dl[i]) < 0;
    if (!sorted)
        qsort(a->dl, n, sizeof *a->dl, dl_cmp);
    for (size_t i = 0; i < n; i++) {
        if (a->dl[i].lease_deadline_ms > a->lease_deadline)
            a->lease_deadline = a->dl[i].lease_deadline_ms;
        if (a->n_parts == 0 || a->parts[a->n_parts - 1].pidx != a->dl[i].pidx) {
            if ((rc = grow((void **)&a->parts, &a->cap_parts, a->n_parts + 1, sizeof *a->parts)))
                return rc;
            a->parts[a->n_parts++] = (struct fpart){.pidx = a->dl[i].pidx, .first = i};
        }
        a->parts[a->n_parts - 1].n++;
    }
    a->names = calloc(a->n_parts ? a->n_parts : 1, sizeof *a->names);
    if (!a->names)
        return -ENOMEM;
    for (size_t i = 0; i < a->n_parts; i++) {
        struct fpart *fp = &a->parts[i];
        uint32_t ti = 0, part = 0;
        VERITY_VERIFY(groups_pidx_split(gc, fp->pidx, &ti, &part));
        fp->partition = part;
        snprintf(a->names[i], sizeof a->names[i], "%s", gc->topics[ti].name);
        struct partition *p = groups_part(b, gc, fp->pidx);
        fp->hw = fp->pidx < f->n_hwm ? f->hwm[fp->pidx] : 0;
        size_t span_mark = a->n_spans, ctl_mark = n_ctl;
        uint64_t bytes_mark = fp->bytes;
        if (p) {
            /* Offsets retention deleted before they were acknowledged are
             * gone: the broker acknowledges them (logged), as it does
             * control offsets, instead of handing out what it cannot send. */
            struct vlog_info vi;
            vlog_get_info(p->log, &vi);
            size_t gone = 0;
            while (gone < fp->n && a->dl[fp->first + gone].offset < vi.start_offset)
                gone++;
            if (gone > 0) {
                if ((rc = grow((void **)&ctl, &cap_ctl, n_ctl + gone, sizeof *ctl)))
                    break;
                for (size_t k = 0; k < gone; k++)
                    ctl[n_ctl++] = (struct group_ref){fp->pidx, a->dl[fp->first + k].offset};
                ctl_mark = n_ctl;
                fp->first += gone;
                fp->n -= gone;
                char q[GROUP_NAME_MAX + 8];
                blog(BLOG_WARN, "group_retention_skip",
                     "group=%s topic=%s partition=%" PRIu32 " offsets=%zu first=%" PRIu64
                     " start_offset=%" PRIu64,
                     blog_q(f->group, q, sizeof q), gc->topics[ti].name, part, gone,
                     ctl[n_ctl - gone].offset, vi.start_offset);
            }
        }
        int lrc = !p ? VERITY_ENOTFOUND : fp->n ? locate(a, p, fp, &ctl, &n_ctl, &cap_ctl) : 0;
        if (lrc) {
            if (lrc == -ENOMEM) {
                rc = lrc;
                break;
            }
            /* Unreadable: no bytes, the leases expire and return. */
            for (size_t k = span_mark; k < a->n_spans; k++)
                close(a->spans[k].fd);
            a->n_spans = span_mark;
            n_ctl = ctl_mark;
            fp->bytes = bytes_mark;
            fp->span0 = span_mark;
            fp->nspan = 0;
            fp->error = lrc;
            fp->nrange = 0;
            fp->range0 = a->n_ranges;
            char q[GROUP_NAME_MAX + 8];
            blog(BLOG_WARN, "group_fetch_read_failed",
                 "group=%s topic=%s partition=%" PRIu32 " error=%s", blog_q(f->group, q, sizeof q),
                 gc->topics[ti].name, part, verity_errname(lrc));
            continue;
        }
        make_ranges(a, fp, ctl + ctl_mark, n_ctl - ctl_mark);
        for (size_t k = 0; k < fp->nrange; k++)
            *n_user += a->ranges[fp->range0 + k].count;
    }
    if (rc == 0 && n_ctl > 0) {
        uint64_t t2 = 0;
        int arc = group_ack(b->groups.st, f->group, f->member_id, ctl, n_ctl, now_ms(), &t2);
        /* The answer does not wait for this ack: if it is lost in a crash,
         * the control offsets are delivered and acknowledged again. */
        if (arc == 0) {
            struct bgroup *bg = bgroup_get(b, f->group);
            if (bg)
                bg->control_acked += n_ctl;
        }
    }
    free(ctl);
    if (rc)
        return rc;
    /* Drop partitions with nothing for the member (only control offsets). */
    size_t w = 0;
    for (size_t i = 0; i < a->n_parts; i++) {
        struct fpart *fp = &a->parts[i];
        if (fp->nrange == 0 && !fp->error) {
            for (size_t k = fp->span0; k < fp->span0 + fp->nspan; k++) {
                close(a->spans[k].fd);
                a->spans[k].fd = -1;
                a->spans[k].length = 0;
            }
            continue;
        }
        if (w != i) {
            a->parts[w] = *fp;
            memcpy(a->names[w], a->names[i], sizeof a->names[w]);
        }
        w++;
    }
    a->n_parts = w;
    /* Compact the spans: closed ones (fd -1) go. */
    size_t ws = 0;
    for (size_t k = 0; k < a->n_spans; k++) {
        if (a->spans[k].fd >= 0) {
            a->orig[ws] = a->orig[k];
            a->spans[ws++] = a->spans[k];
        }
    }
    a->n_spans = ws;
    for (size_t k = 0; k < a->n_ranges; k++)
        a->range_ptrs[k] = &a->ranges[k];
    return 0;
}

/* ---- evaluation -------------------------------------------------------------------- */

/* Messages the byte budget allows, from the largest average message size
 * over the group's partitions. */
static size_t budget_messages(struct broker *b, const struct group_config *gc, uint32_t n_parts,
                              uint64_t budget)
{
    uint64_t avg = 1;
    for (uint32_t k = 0; k < n_parts; k++) {
        struct partition *p = groups_part(b, gc, k);
        if (!p)
            continue;
        struct vlog_info vi;
        vlog_get_info(p->log, &vi);
        uint64_t n = vi.end_offset - vi.start_offset;
        if (n > 0 && vi.size_bytes / n > avg)
            avg = vi.size_bytes / n;
    }
    uint64_t m = budget / avg;
    return m < 1 ? 1 : m > SIZE_MAX ? SIZE_MAX : (size_t)m;
}

/*
 * New offsets are leased by count, so a fetch of max offsets usually ends
 * inside a batch that then goes out whole, and the next fetch sends it
 * again. Where more than max offsets are ready, stop each partition's new
 * deliveries at the start of the batch that holds cursor + max (when that
 * is past the cursor): fetches then end on batch boundaries and each stored
 * batch is sent once. Only for groups of up to ALIGN_PARTS_MAX partitions
 * (it costs an index lookup per partition).
 */
#define ALIGN_PARTS_MAX 64

static void align_to_batches(struct gfetch *f, const struct group_info *info, size_t max)
{
    if (info->n_partitions > ALIGN_PARTS_MAX)
        return;
    for (uint32_t k = 0; k < info->n_partitions && k < f->n_hwm; k++) {
        struct group_lag lag;
        if (group_get_lag(f->b->groups.st, f->group, k, f->hwm[k], &lag))
            continue;
        uint64_t want = lag.read_cursor + max;
        if (f->hwm[k] <= want)
            continue;
        struct partition *p = groups_part(f->b, info->cfg, k);
        struct vlog_span sp;
        size_t n = 0;
        if (!p || vlog_read(p->log, want, want + 1, 1, &sp, 1, &n) || n == 0)
            continue;
        vlog_spans_close(&sp, n); /* only the batch boundary is wanted */
        if (sp.base_offset > lag.read_cursor && sp.base_offset < f->hwm[k])
            f->hwm[k] = sp.base_offset;
    }
}

static void arm_wait(struct gfetch *f, uint32_t wait_ms)
{
    struct bgroup *bg = bgroup_get(f->b, f->group);
    if (!bg) {
        gfetch_fail(f, VERITY_ENOTFOUND, "the group was deleted");
        return;
    }
    f->bg = bg;
    f->w.f = f;
    f->w.member_id = f->member_id;
    TAILQ_INSERT_TAIL(&bg->waiters, &f->w, link);
    f->linked = true;
    struct timeval tv = {wait_ms / 1000, (wait_ms % 1000) * 1000};
    evtimer_add(f->timer, &tv);
    f->armed = true;
    f->req->cancel = fetch_cancel;
}

static void gfetch_try(struct gfetch *f, bool final)
{
    struct broker *b = f->b;
    struct req *r = f->req;
    const Verity__GroupFetchRequest *q = r->msg->env->group_fetch_req;
    struct group_state *st = b->groups.st;
    char msg[300];
    int rc = groups_writable(b, msg, sizeof msg);
    if (rc) {
        gfetch_fail(f, rc, msg);
        return;
    }
    struct group_info info;
    if ((rc = group_get_info(st, f->group, &info))) {
        unlink_waiter(f);
        r->ctx = NULL;
        r->cancel = NULL;
        group_fail(r, rc, f->group, f->member_id, NULL);
        gfetch_free(f);
        return;
    }
    if (f->n_hwm != info.n_partitions) {
        free(f->hwm);
        f->hwm = calloc(info.n_partitions ? info.n_partitions : 1, sizeof *f->hwm);
        f->n_hwm = f->hwm ? info.n_partitions : 0;
        if (!f->hwm) {
            gfetch_fail(f, -ENOMEM, NULL);
            return;
        }
    }
    uint64_t budget = q->max_bytes && q->max_bytes < b->cfg.fetch_max_bytes
                          ? q->max_bytes
                          : b->cfg.fetch_max_bytes;
    size_t max = q->max_messages ? q->max_messages : FETCH_DEFAULT;
    if (max > CODEC_GROUP_FETCH_MAX)
        max = CODEC_GROUP_FETCH_MAX;
    size_t by_bytes = budget_messages(b, info.cfg, info.n_partitions, budget);
    if (by_bytes < max)
        max = by_bytes;
    if (f->cap_raw < max) {
        free(f->raw);
        f->raw = malloc(max * sizeof *f->raw);
        f->cap_raw = f->raw ? max : 0;
        if (!f->raw) {
            gfetch_fail(f, -ENOMEM, NULL);
            return;
        }
    }
    size_t n_user = 0;
    uint64_t ticket = 0;
    for (int round = 0; round < ROUNDS_MAX && n_user == 0; round++) {
        groups_hwm(b, info.cfg, f->hwm, f->n_hwm);
        align_to_batches(f, &info, max);
        size_t n = 0;
        uint64_t t1 = 0;
        rc = group_fetch(st, f->group, f->member_id, max, f->hwm, f->n_hwm, now_ms(), f->raw, &n,
                         &t1);
        if (rc || n == 0)
            break;
        ticket = t1; /* earlier rounds held only control offsets: nothing to wait for */
        if ((rc = build(f, &info, n, &n_user)))
            break;
    }
    if (n_user > 0) {
        f->ans.generation = info.generation;
        f->ans.granted = true;
    }
    groups_after(b);
    if (rc == VERITY_ELIMIT && n_user == 0) {
        snprintf(msg, sizeof msg,
                 "group %s tracks %" PRIu32 " deliveries (pending_max): ack some first", f->group,
                 info.pending_max);
        gfetch_fail(f, rc, msg);
        return;
    }
    if (rc && rc != VERITY_ELIMIT) {
        unlink_waiter(f);
        r->ctx = NULL;
        r->cancel = NULL;
        group_fail(r, rc, f->group, f->member_id, NULL);
        gfetch_free(f);
        return;
    }
    if (n_user == 0) {
        answer_clear(&f->ans);
        if (!final && q->max_wait_ms > 0 && !b->stopping) {
            if (!f->armed) {
                uint32_t wait = q->max_wait_ms < b->cfg.fetch_max_wait_ms
                                    ? q->max_wait_ms
                                    : b->cfg.fetch_max_wait_ms;
                arm_wait(f, wait);
            }
            return;
        }
        gfetch_fail(f, 0, NULL);
        return;
    }
    /* Frame guard: the estimate was off by more than the frame's slack. */
    uint64_t total = 0;
    for (size_t i = 0; i < f->ans.n_parts; i++)
        total += f->ans.parts[i].bytes;
    if (total + FRAME_SLACK > b->cfg.max_frame_bytes)
        blog(BLOG_WARN, "group_fetch_too_large",
             "group=%s bytes=%" PRIu64 " (the answer will be refused; its leases expire)", f->group,
             total);
    struct bgroup *bg = bgroup_get(b, f->group);
    if (bg) {
        bg->deliveries += n_user;
        for (size_t k = 0; k < f->ans.n_ranges; k++)
            if (f->ans.ranges[k].delivery_count > 1)
                bg->redeliveries += f->ans.ranges[k].count;
    }
    unlink_waiter(f);
    r->cancel = NULL; /* leases stand; the answer is dropped if the connection dies */
    f->park.done = parked_done;
    if (bg) {
        bg->fetch_answers++;
        bg->fetch_log_waits += ticket > b->groups.seq_durable;
    }
    groups_park(b, &f->park, ticket);
}

static void wake_cb(evutil_socket_t fd, short what, void *arg)
{
    struct gfetch *f = arg;
    (void)fd;
    (void)what;
    if (f->armed)
        gfetch_try(f, false);
}

static void timeout_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    gfetch_try(arg, true);
}

void h_group_fetch(struct req *r)
{
    struct broker *b = r->b;
    const Verity__GroupFetchRequest *q = r->msg->env->group_fetch_req;
    if (!b->groups.st) {
        req_fail(r, VERITY_ECLOSED, "consumer groups are not available");
        return;
    }
    struct gfetch *f = calloc(1, sizeof *f);
    if (f) {
        f->timer = evtimer_new(b->base, timeout_cb, f);
        f->wake_ev = event_new(b->base, -1, 0, wake_cb, f);
    }
    if (!f || !f->timer || !f->wake_ev) {
        if (f)
            gfetch_free(f);
        req_fail(r, -ENOMEM, NULL);
        return;
    }
    f->b = b;
    f->req = r;
    f->member_id = q->member_id;
    snprintf(f->group, sizeof f->group, "%s", q->group);
    r->ctx = f;
    gfetch_try(f, false);
}
