/*
 * Kafka Fetch (v4-v11) and ListOffsets (v0-v5).
 *
 * Fetch reads whole Verity batches from each requested offset up to the
 * high watermark (vlog_read), converts each into a Kafka record batch v2
 * (krecords.h) and answers with them. Budget: the request's max_bytes
 * (capped by fetch_max_bytes) over the whole response and each partition's
 * partition_max_bytes, counted in stored bytes; the first batch of the
 * response is always sent whole (KIP-74), so a consumer never stalls
 * behind a large batch. Isolation is read_uncommitted either way (there are
 * no transactions). Fetch sessions (v7+) are not kept: session id 0 means
 * every request is a full fetch, which clients accept.
 *
 * Long-poll: fewer than min_bytes ready and max_wait_ms > 0: the fetch
 * links itself to its partitions (fetch_link with the wake hook) and a
 * timer; a partition whose high watermark moves activates the wake event
 * (never calling into the fetch directly); the timer, a topic deletion or
 * shutdown answer with whatever is ready.
 *
 * Quotas (with auth_file): a Fetch of a SASL or certificate principal is
 * charged to requests_per_s and waits, held before it is tried, until the
 * fetch_bytes_per_s buckets are out of debt; the bytes it answers with
 * (stored bytes) are charged after it, as a native fetch's are; the wait is
 * reported in throttle_time_ms. A held fetch is released when its
 * connection dies (kf_cancel frees the hold).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>

#include "broker/blog.h"
#include "broker/kafka/kafka_int.h"
#include "broker/kafka/kparse.h"
#include "broker/kafka/krecords.h"
#include "verity/errors.h"
#include "verity/verify.h"

#define KSPANS 8

struct kfetch {
    struct kreq *q;
    struct broker *b;
    struct kfetch_req req;    /* decoded request */
    size_t n;                 /* req.n_parts */
    struct fetch_link *links; /* n */
    struct event *timer;
    struct event *wake_ev;
    struct event *hold;  /* a quota throttle before the first try */
    int32_t throttle_ms; /* reported in the response */
    bool waiting;
};

#define KF_THROTTLE_MAX_MS 30000

/* One partition's part of the answer. The spans are located when the fetch
 * is tried (to count the bytes against min_bytes and the budgets) and read
 * only when it answers, straight into the response: a long-poll that waits
 * reads nothing, and the records are converted once, in place. */
struct kfout {
    int16_t err;
    int64_t hw;
    int64_t start;
    uint64_t used; /* stored bytes in spans */
    uint64_t pmax; /* stored bytes this partition was allowed */
    struct partition *part;
    size_t n_spans;
    struct vlog_span spans[KSPANS];
};

static void kfout_close(struct kfout *o)
{
    vlog_spans_close(o->spans, o->n_spans);
    o->n_spans = 0;
    o->used = 0;
}

static void kf_free(struct kfetch *kf)
{
    for (size_t i = 0; i < kf->n; i++) {
        struct fetch_link *l = &kf->links[i];
        if (l->linked) {
            TAILQ_REMOVE(&l->part->fetchers, l, link);
            l->linked = false;
        }
    }
    if (kf->timer)
        event_free(kf->timer);
    if (kf->wake_ev)
        event_free(kf->wake_ev);
    if (kf->hold)
        event_free(kf->hold);
    free(kf->links);
    kfetch_req_free(&kf->req);
    free(kf);
}

static void kf_try(struct kfetch *kf, bool final);

static void kf_wake_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    kf_try(arg, false);
}

static void kf_timeout_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    kf_try(arg, true);
}

static void kf_link_wake(struct fetch_link *l, bool final)
{
    struct kfetch *kf = l->arg;
    if (final)
        kf_try(kf, true);
    else
        event_active(kf->wake_ev, EV_READ, 0);
}

/* The quota throttle is over: the fetch goes on as without one. */
static void kf_hold_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    kf_try(arg, false);
}

static void kf_cancel(struct kreq *q)
{
    struct kfetch *kf = q->ctx;
    kf_free(kf);
    q->silent = true;
    kreq_done(q);
}

/* The partition e names; NULL and *err (unknown, or not authorized). */
static struct partition *kf_part(struct kfetch *kf, const struct kfetch_part *e, int16_t *err)
{
    char name[VERITY_TOPIC_NAME_MAX + 1], msg[160];
    struct partition *p;
    *err = kname_in(kf->q, kf->req.topics[e->topic_idx].name, false, AUTH_OP_CONSUME, name,
                    sizeof name);
    if (*err)
        return NULL;
    if (e->partition < 0 ||
        topic_partition(kf->b, name, (uint32_t)e->partition, &p, msg, sizeof msg)) {
        *err = KE_UNKNOWN_TOPIC_OR_PARTITION;
        return NULL;
    }
    return p;
}

static void kf_arm(struct kfetch *kf, uint32_t wait_ms)
{
    for (size_t i = 0; i < kf->n; i++) {
        int16_t err;
        struct partition *p = kf_part(kf, &kf->req.parts[i], &err);
        if (!p)
            continue;
        bool dup = false;
        for (size_t k = 0; k < i && !dup; k++)
            dup = kf->links[k].linked && kf->links[k].part == p;
        if (dup)
            continue;
        struct fetch_link *l = &kf->links[i];
        l->wake = kf_link_wake;
        l->arg = kf;
        l->part = p;
        l->req = NULL;
        TAILQ_INSERT_TAIL(&p->fetchers, l, link);
        l->linked = true;
    }
    struct timeval tv = {wait_ms / 1000, (wait_ms % 1000) * 1000};
    evtimer_add(kf->timer, &tv);
    kf->waiting = true;
}

/* Locates entry e's batches (o->spans) within max bytes of stored data (the
 * first batch always). Returns the stored bytes located. */
static uint64_t kf_locate(struct kfetch *kf, const struct kfetch_part *e, uint64_t max,
                          struct kfout *o)
{
    int16_t err;
    struct partition *p = kf_part(kf, e, &err);
    if (!p) {
        o->err = err;
        return 0;
    }
    uint32_t leader;
    if (cluster_part_writable(p, &leader) == VERITY_ENOTLEADER) {
        o->err = KE_NOT_LEADER_OR_FOLLOWER; /* replicated: reads go to the primary */
        return 0;
    }
    if (!p->log) {
        o->err = KE_KAFKA_STORAGE_ERROR;
        return 0;
    }
    o->part = p;
    struct vlog_info info;
    vlog_get_info(p->log, &info);
    uint64_t hw = part_hw(p);
    o->hw = (int64_t)hw;
    o->start = (int64_t)info.start_offset;
    if (e->offset < (int64_t)info.start_offset || e->offset > (int64_t)hw) {
        o->err = KE_OFFSET_OUT_OF_RANGE;
        return 0;
    }
    if ((uint64_t)e->offset == hw)
        return 0;
    if (vlog_read(p->log, (uint64_t)e->offset, hw, max ? max : 1, o->spans, KSPANS,
                  &o->n_spans)) {
        o->n_spans = 0;
        o->err = KE_KAFKA_STORAGE_ERROR;
        return 0;
    }
    for (size_t s = 0; s < o->n_spans; s++)
        o->used += o->spans[s].length;
    return o->used;
}

/* The scratch buffer span bytes are read into: one per listener (the event
 * loop is single-threaded), grown to the largest span and let go when that
 * was unusually large. */
static uint8_t *kf_scratch(struct kafka *k, size_t n)
{
    if (k->scratch_cap < n) {
        uint8_t *nb = realloc(k->scratch, n);
        if (!nb)
            return NULL;
        k->scratch = nb;
        k->scratch_cap = n;
    }
    return k->scratch;
}

#define KF_SCRATCH_KEEP (4u << 20)

/* Converts o's spans, from `skip` stored bytes into them (batches a slot
 * already gave), to the end of w. On failure w is cut back to mark and the
 * error code returned. */
static int16_t kf_convert(struct kafka *k, struct kfout *o, uint64_t skip, struct kw *w,
                          size_t mark)
{
    int16_t err = KE_NONE;
    for (size_t s = 0; s < o->n_spans && !err; s++) {
        uint64_t pos0 = o->spans[s].position, slen = o->spans[s].length;
        if (skip >= slen && slen > 0) {
            skip -= slen;
            continue;
        }
        pos0 += skip;
        slen -= skip;
        skip = 0;
        size_t len = (size_t)slen;
        uint8_t *buf = kf_scratch(k, len ? len : 1);
        if (!buf) {
            err = KE_UNKNOWN;
            break;
        }
        ssize_t got = pread(o->spans[s].fd, buf, len, (off_t)pos0);
        if (got != (ssize_t)len) {
            err = KE_KAFKA_STORAGE_ERROR;
            break;
        }
        size_t pos = 0;
        while (pos + BATCH_HDR_SIZE <= len) {
            uint32_t blen = get_le32(buf + pos + BATCH_OFF_LENGTH);
            if (blen < BATCH_HDR_SIZE || blen > len - pos || krec_from_verity(buf + pos, blen, w)) {
                err = w->err ? KE_UNKNOWN : KE_KAFKA_STORAGE_ERROR;
                break;
            }
            pos += blen;
        }
    }
    if (err) {
        w->err = 0; /* the partition answers with the error instead */
        w->len = mark;
    }
    return err;
}

/* ---- read-ahead ------------------------------------------------------------
 *
 * librdkafka keeps one Fetch in flight per broker and sends the next only
 * after it has parsed the whole answer, so the conversion of the next range
 * (Verity batches to record batch v2: a third of the broker's time in a
 * Kafka catch-up read) sat on the critical path, one after the other with
 * the client's parse. Now each answered partition leaves a want on its
 * connection (the offset after the last batch sent, and the stored bytes the
 * Fetch allowed); once the answer is written (the connection's output buffer
 * drained: kconn_write_cb), kra_run converts that range into a slot, while
 * the client parses. The next Fetch whose first batch is the slot's first
 * copies the converted bytes (the whole slot, or the batches up to where its
 * own budget ends) and converts only what the slot lacks; the slot is then
 * free. A range is converted ahead only below the high watermark, where the
 * stored bytes no longer change; a partition that closes (deleted topic,
 * shutdown) drops its slots and wants. Memory: at most KRA_SLOTS slots whose
 * buffers hold at most kafka_readahead_bytes together (of a range larger
 * than half of it, the first half is read ahead), let go when the last
 * Kafka connection closes. */

/* Stored bytes converted per read-ahead step: about 0.1-0.2 ms of the event
 * loop, so a Fetch arriving during a read-ahead waits at most that long. */
#define KRA_STEP (256u << 10)

static void kra_step_arm(struct kafka *k);

static struct kra_slot *kra_find(struct kafka *k, const struct partition *p, uint64_t from)
{
    for (size_t i = 0; i < KRA_SLOTS; i++)
        if (k->ra[i].part == p && k->ra[i].from == from)
            return &k->ra[i];
    return NULL;
}

/* The end offset of the Kafka record batch at b (base offset + lastOffsetDelta + 1). */
static uint64_t kra_batch_end(const uint8_t *b)
{
    return kbe64(b) + (uint64_t)(int64_t)(int32_t)kbe32(b + 23) + 1;
}

/* Reads o's spans and writes their batches, converted, at the end of w:
 * the batches a read-ahead slot holds are copied, the rest converted.
 * On failure w is cut back to where it was and the error code returned. */
static int16_t kf_write_records(struct kafka *k, struct kfout *o, struct kw *w)
{
    size_t mark = w->len;
    uint64_t skip = 0;
    size_t n = 0;
    bool all = false;
    struct kra_slot *sl = o->n_spans ? kra_find(k, o->part, o->spans[0].base_offset) : NULL;
    if (sl) {
        uint64_t end = o->spans[o->n_spans - 1].end_offset;
        if (sl->to <= end) {
            n = sl->len;
            skip = sl->stored;
        } else { /* this Fetch allows less: the slot's batches up to its end */
            while (n + KREC_HDR_SIZE <= sl->len && kra_batch_end(sl->buf + n) < end)
                n += (size_t)kbe32(sl->buf + n + 8) + 12;
            if (n + KREC_HDR_SIZE <= sl->len && kra_batch_end(sl->buf + n) == end) {
                n += (size_t)kbe32(sl->buf + n + 8) + 12;
                all = true;
            } else {
                n = 0; /* not at a batch boundary (cannot happen): convert it all */
            }
        }
        if (n)
            kw_raw(w, sl->buf, n);
        sl->part = NULL; /* used: free for the next range */
        sl->len = 0;
        sl->more = false;
        if (w->err) {
            w->err = 0;
            w->len = mark;
            return KE_UNKNOWN;
        }
    }
    if (n)
        k->ra_hits++;
    else
        k->ra_misses++;
    if (all)
        return KE_NONE;
    return kf_convert(k, o, skip, w, mark);
}

/* Remembers that c's next Fetch of o's partition starts after o's batches. */
static void kra_note(struct kconn *c, const struct kfout *o)
{
    if (!c->k->b->cfg.kafka_readahead_bytes || !o->part || o->n_spans == 0)
        return;
    struct kra_want *free_w = NULL;
    for (size_t i = 0; i < KRA_CONN_PARTS; i++) {
        struct kra_want *x = &c->ra_want[i];
        if (x->part == o->part) {
            free_w = x;
            break;
        }
        if (!x->part && !free_w)
            free_w = x;
    }
    if (!free_w)
        return; /* more partitions than remembered: the rest is converted on demand */
    free_w->part = o->part;
    free_w->from = o->spans[o->n_spans - 1].end_offset;
    free_w->max = o->pmax > o->used ? o->pmax : o->used;
}

/* Capacity of every slot's buffer but skip's. */
static uint64_t kra_cap_others(const struct kafka *k, const struct kra_slot *skip)
{
    uint64_t n = 0;
    for (size_t i = 0; i < KRA_SLOTS; i++)
        if (&k->ra[i] != skip)
            n += k->ra[i].cap;
    return n;
}

static void kra_slot_free(struct kra_slot *sl)
{
    free(sl->buf);
    memset(sl, 0, sizeof *sl);
}

/* Converts want x's range into a slot. */
static void kra_fill(struct kafka *k, const struct kra_want *x)
{
    struct partition *p = x->part;
    uint64_t limit = k->b->cfg.kafka_readahead_bytes;
    uint64_t max = x->max < limit / 2 ? x->max : limit / 2; /* a larger range: its start */
    if (!p->log || max == 0)
        return;
    uint64_t hw = part_hw(p);
    struct vlog_info info;
    vlog_get_info(p->log, &info);
    if (x->from >= hw || x->from < info.start_offset)
        return; /* nothing stable to convert yet (a long-poll will wait for it) */
    struct kfout o = {.part = p};
    uint64_t step = max < KRA_STEP ? max : KRA_STEP; /* the rest in later steps */
    if (vlog_read(p->log, x->from, hw, step, o.spans, KSPANS, &o.n_spans) || o.n_spans == 0) {
        vlog_spans_close(o.spans, o.n_spans);
        return;
    }
    for (size_t s = 0; s < o.n_spans; s++)
        o.used += o.spans[s].length;
    uint64_t from = o.spans[0].base_offset;
    size_t need = (size_t)(o.used > max ? o.used : max) + 64; /* room for every step */
    if (o.used > limit / 2 || kra_find(k, p, from)) {
        kfout_close(&o);
        return;
    }
    /* a free slot whose buffer fits, else a free one, else the least
     * recently used; then room under the cap, from the others' buffers */
    struct kra_slot *sl = NULL;
    for (size_t i = 0; i < KRA_SLOTS; i++) {
        struct kra_slot *c = &k->ra[i];
        if (!c->part && c->cap >= need) {
            sl = c;
            break;
        }
    }
    for (size_t i = 0; i < KRA_SLOTS && !sl; i++)
        if (!k->ra[i].part)
            sl = &k->ra[i];
    if (!sl) { /* every slot holds a range: the least recently made goes */
        sl = &k->ra[0];
        for (size_t i = 1; i < KRA_SLOTS; i++)
            if (k->ra[i].tick < sl->tick)
                sl = &k->ra[i];
    }
    sl->part = NULL;
    sl->len = 0;
    sl->more = false;
    while (kra_cap_others(k, sl) + need > limit) {
        struct kra_slot *v = NULL; /* free slots' buffers go first, then the oldest */
        for (size_t i = 0; i < KRA_SLOTS; i++) {
            struct kra_slot *c = &k->ra[i];
            if (c == sl || !c->cap)
                continue;
            if (!v || (!c->part && v->part) || (!c->part == !v->part && c->tick < v->tick))
                v = c;
        }
        if (!v)
            break;
        kra_slot_free(v);
    }
    struct kw w = {sl->buf, 0, sl->cap, 0};
    if (w.cap < need) {
        free(w.buf);
        w = (struct kw){0};
        sl->buf = NULL;
        sl->cap = 0;
    }
    if (!kw_grow(&w, need) || kf_convert(k, &o, 0, &w, 0) ||
        kra_cap_others(k, sl) + w.cap > limit) { /* grown past the cap: dropped */
        kfout_close(&o);
        kw_deinit(&w);
        sl->buf = NULL;
        sl->cap = 0;
        sl->len = 0;
        return;
    }
    sl->buf = w.buf;
    sl->cap = w.cap;
    sl->len = w.len;
    sl->part = p;
    sl->from = from;
    sl->to = o.spans[o.n_spans - 1].end_offset;
    sl->stored = o.used;
    sl->want = max;
    sl->more = sl->stored < max && sl->to < hw;
    sl->tick = ++k->ra_tick;
    kfout_close(&o);
    if (sl->more)
        kra_step_arm(k);
}

/* Extends slot sl by one step (KRA_STEP stored bytes, at least one batch):
 * false when it is complete or cannot go on (it stays usable as it is). */
static bool kra_extend(struct kafka *k, struct kra_slot *sl)
{
    struct partition *p = sl->part;
    if (!p || !p->log || sl->stored >= sl->want)
        return false;
    uint64_t hw = part_hw(p);
    if (sl->to >= hw)
        return false;
    uint64_t left = sl->want - sl->stored;
    struct kfout o = {.part = p};
    if (vlog_read(p->log, sl->to, hw, left < KRA_STEP ? left : KRA_STEP, o.spans, KSPANS,
                  &o.n_spans) || o.n_spans == 0 || o.spans[0].base_offset != sl->to) {
        kfout_close(&o);
        return false;
    }
    for (size_t s = 0; s < o.n_spans; s++)
        o.used += o.spans[s].length;
    if (sl->stored + o.used > sl->want) { /* a batch past this range's budget */
        kfout_close(&o);
        return false;
    }
    struct kw w = {sl->buf, sl->len, sl->cap, 0};
    int16_t err = kf_convert(k, &o, 0, &w, sl->len);
    /* the buffer may have moved even when the conversion failed */
    sl->buf = w.buf;
    sl->cap = w.cap;
    if (err || kra_cap_others(k, sl) + sl->cap > k->b->cfg.kafka_readahead_bytes) {
        if (err) {
            kfout_close(&o);
            return false;
        }
        kfout_close(&o);
        kra_slot_free(sl); /* grown past the cap: dropped */
        return false;
    }
    sl->len = w.len;
    sl->to = o.spans[o.n_spans - 1].end_offset;
    sl->stored += o.used;
    kfout_close(&o);
    return sl->stored < sl->want && sl->to < hw;
}

/* One step for every slot still being converted; the loop serves the
 * connections between steps, so a Fetch that arrives meanwhile is answered
 * at once (from the part converted so far, converting the rest itself). */
static void kra_step_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct kafka *k = arg;
    bool again = false;
    for (size_t i = 0; i < KRA_SLOTS; i++) {
        struct kra_slot *sl = &k->ra[i];
        if (!sl->part || !sl->more)
            continue;
        sl->more = !k->b->stopping && kra_extend(k, sl);
        again = again || sl->more;
    }
    if (again)
        kra_step_arm(k);
}

static void kra_step_arm(struct kafka *k)
{
    if (!k->ra_step_ev && !(k->ra_step_ev = evtimer_new(k->b->base, kra_step_cb, k)))
        return; /* no steps: the Fetch converts the rest */
    struct timeval tv = {0, 0}; /* after the loop has looked at the sockets */
    evtimer_add(k->ra_step_ev, &tv);
}

void kra_run(struct kconn *c)
{
    struct kafka *k = c->k;
    for (size_t i = 0; i < KRA_CONN_PARTS; i++) {
        struct kra_want x = c->ra_want[i];
        c->ra_want[i].part = NULL;
        if (x.part && k->b->cfg.kafka_readahead_bytes && !k->b->stopping)
            kra_fill(k, &x);
    }
    if (k->scratch_cap > KF_SCRATCH_KEEP) {
        free(k->scratch);
        k->scratch = NULL;
        k->scratch_cap = 0;
    }
}

void kra_part_gone(struct kafka *k, struct partition *p)
{
    for (size_t i = 0; i < KRA_SLOTS; i++)
        if (k->ra[i].part == p) {
            k->ra[i].part = NULL;
            k->ra[i].len = 0;
            k->ra[i].more = false;
        }
    struct kconn *c;
    TAILQ_FOREACH(c, &k->conns, link)
    for (size_t i = 0; i < KRA_CONN_PARTS; i++)
        if (c->ra_want[i].part == p)
            c->ra_want[i].part = NULL;
}

void kra_release(struct kafka *k)
{
    for (size_t i = 0; i < KRA_SLOTS; i++)
        kra_slot_free(&k->ra[i]);
    if (k->ra_step_ev)
        event_free(k->ra_step_ev);
    k->ra_step_ev = NULL;
}

static void kf_respond(struct kfetch *kf, struct kfout *out, uint64_t stored)
{
    struct kreq *q = kf->q;
    struct kw *w = &q->w;
    int16_t v = q->api_version;
    /* Kafka's record batch is a little smaller than Verity's per batch and
     * about the same per record: the stored bytes plus the partition
     * headers are enough room, whatever the mix. */
    kw_pool_take(w, stored + 64 + kf->n * 64);
    (void)kw_grow(w, stored + 64 + kf->n * 64);
    kw_i32(w, kf->throttle_ms);
    if (v >= 7) {
        kw_i16(w, KE_NONE);
        kw_i32(w, 0); /* session id: sessions are not kept */
    }
    kw_i32(w, (int32_t)kf->req.n_topics);
    for (size_t ti = 0; ti < kf->req.n_topics; ti++) {
        const struct ktopic_span *t = &kf->req.topics[ti];
        kw_kstr(w, t->name);
        kw_i32(w, (int32_t)t->n);
        for (uint32_t k = 0; k < t->n; k++) {
            const struct kfetch_part *e = &kf->req.parts[t->first + k];
            struct kfout *o = &out[t->first + k];
            kw_i32(w, e->partition);
            size_t err_at = w->len;
            kw_i16(w, o->err);
            kw_i64(w, o->hw);
            kw_i64(w, o->hw); /* last stable offset: no transactions */
            if (v >= 5)
                kw_i64(w, o->start);
            kw_i32(w, 0); /* aborted transactions */
            if (v >= 11)
                kw_i32(w, -1); /* preferred read replica */
            size_t len_at = w->len;
            kw_i32(w, 0);
            if (o->err || o->n_spans == 0 || w->err)
                continue;
            int16_t err = kf_write_records(kf->b->kafka, o, w);
            if (!err)
                kra_note(q->c, o);
            if (err) {
                if (!w->err)
                    kput_be16(w->buf + err_at, (uint16_t)err);
                blog(BLOG_WARN, "kafka_fetch_read_failed", "topic_index=%zu partition=%" PRId32
                     " offset=%" PRId64 " error=%d", ti, e->partition, e->offset, err);
            } else if (!w->err) {
                kput_be32(w->buf + len_at, (uint32_t)(w->len - len_at - 4));
            }
        }
    }
    if (kf->b->kafka->scratch_cap > KF_SCRATCH_KEEP) {
        free(kf->b->kafka->scratch);
        kf->b->kafka->scratch = NULL;
        kf->b->kafka->scratch_cap = 0;
    }
}

static void kf_try(struct kfetch *kf, bool final)
{
    struct broker *b = kf->b;
    int64_t t0 = mono_ns();
    struct kfout *out = calloc(kf->n ? kf->n : 1, sizeof *out);
    if (!out) {
        struct kreq *q = kf->q;
        kf_free(kf);
        kreq_malformed(q, "out of memory");
        return;
    }
    uint64_t budget = kf->req.max_bytes > 0 && (uint32_t)kf->req.max_bytes < b->cfg.fetch_max_bytes
                          ? (uint64_t)kf->req.max_bytes
                          : b->cfg.fetch_max_bytes;
    uint64_t total = 0;
    bool any_error = false;
    for (size_t i = 0; i < kf->n; i++) {
        struct kfout *o = &out[i];
        o->hw = -1;
        o->start = -1;
        const struct kfetch_part *e = &kf->req.parts[i];
        uint64_t left = total < budget ? budget - total : 0;
        uint64_t pmax = e->max_bytes > 0 && (uint64_t)e->max_bytes < left ? (uint64_t)e->max_bytes
                                                                          : left;
        if (pmax == 0)
            pmax = 1; /* located anyway for the offsets; dropped below if over budget */
        o->pmax = pmax;
        uint64_t used = kf_locate(kf, e, pmax, o);
        if (o->err)
            any_error = true;
        if (used > 0 && total > 0 && total + used > budget) {
            kfout_close(o); /* its first batch does not fit after the others */
            used = 0;
        }
        total += used;
    }
    if (!final && !any_error && total < (uint64_t)(kf->req.min_bytes > 0 ? kf->req.min_bytes : 1) &&
        kf->req.max_wait_ms > 0 && !b->stopping) {
        for (size_t i = 0; i < kf->n; i++)
            kfout_close(&out[i]);
        free(out);
        if (!kf->waiting) {
            uint32_t wait = (uint32_t)kf->req.max_wait_ms < b->cfg.fetch_max_wait_ms
                                ? (uint32_t)kf->req.max_wait_ms
                                : b->cfg.fetch_max_wait_ms;
            kf_arm(kf, wait);
        }
        return;
    }
    struct kreq *q = kf->q;
    kf_respond(kf, out, total);
    if (q->c->sasl_done) /* the bytes sent: the next fetch waits for them */
        auth_who_fetch_charge(b, &q->c->who, total);
    for (size_t i = 0; i < kf->n; i++)
        kfout_close(&out[i]);
    free(out);
    kf_free(kf);
    blog(BLOG_DEBUG, "kafka_fetch_answered", "bytes=%zu stored_bytes=%" PRIu64 " us=%" PRId64
         " readahead_hits=%" PRIu64 " readahead_misses=%" PRIu64, q->w.len, total,
         (mono_ns() - t0) / 1000, b->kafka->ra_hits, b->kafka->ra_misses);
    kreq_done(q);
}

void k_fetch(struct kreq *q)
{
    struct broker *b = q->k->b;
    struct kfetch *kf = calloc(1, sizeof *kf);
    if (!kf) {
        kreq_malformed(q, "out of memory");
        return;
    }
    kf->q = q;
    kf->b = b;
    if (kfetch_parse(&q->r, q->api_version, &kf->req)) {
        kf_free(kf);
        kreq_malformed(q, "Fetch request does not decode");
        return;
    }
    kf->n = kf->req.n_parts;
    kf->links = calloc(kf->n ? kf->n : 1, sizeof *kf->links);
    kf->timer = evtimer_new(b->base, kf_timeout_cb, kf);
    kf->wake_ev = event_new(b->base, -1, 0, kf_wake_cb, kf);
    if (!kf->links || !kf->timer || !kf->wake_ev) {
        kf_free(kf);
        kreq_malformed(q, "out of memory");
        return;
    }
    q->ctx = kf;
    q->cancel = kf_cancel;
    if (auth_on(b) && q->c->sasl_done) {
        char which[200] = "";
        int64_t ms = auth_who_fetch_throttle_ms(b, &q->c->who, which, sizeof which);
        if (ms > 0) {
            kf->throttle_ms = (int32_t)(ms < KF_THROTTLE_MAX_MS ? ms : KF_THROTTLE_MAX_MS);
            struct timeval tv = {kf->throttle_ms / 1000, (kf->throttle_ms % 1000) * 1000};
            if ((kf->hold = evtimer_new(b->base, kf_hold_cb, kf)) &&
                evtimer_add(kf->hold, &tv) == 0)
                return;
        }
    }
    kf_try(kf, false);
}

/* ---- ListOffsets ----------------------------------------------------------- */

void k_list_offsets(struct kreq *q)
{
    struct broker *b = q->k->b;
    struct kr *r = &q->r;
    struct kw *w = &q->w;
    int16_t v = q->api_version;
    (void)kr_i32(r); /* replica id */
    if (v >= 2) {
        (void)kr_i8(r);
        kw_i32(w, 0); /* throttle */
    }
    int32_t nt = kr_array(r, false, 6);
    kw_i32(w, nt);
    for (int32_t t = 0; t < nt && kr_ok(r); t++) {
        struct kstr tname = kr_str(r, false);
        char name[VERITY_TOPIC_NAME_MAX + 1];
        int16_t nerr = kname_in(q, tname, false, AUTH_OP_CONSUME, name, sizeof name);
        bool named = nerr == KE_NONE;
        kw_kstr(w, tname);
        int32_t np = kr_array(r, false, 12);
        kw_i32(w, np);
        for (int32_t k = 0; k < np && kr_ok(r); k++) {
            int32_t part = kr_i32(r);
            if (v >= 4)
                (void)kr_i32(r);
            int64_t ts = kr_i64(r);
            if (v == 0)
                (void)kr_i32(r); /* max_num_offsets */
            struct partition *p = NULL;
            char msg[160];
            uint32_t leader;
            int16_t err = KE_NONE;
            int64_t off = -1, ts_out = -1;
            if (!named)
                err = nerr;
            else if (part < 0 || topic_partition(b, name, (uint32_t)part, &p, msg, sizeof msg))
                err = KE_UNKNOWN_TOPIC_OR_PARTITION;
            else if (cluster_part_writable(p, &leader) == VERITY_ENOTLEADER)
                err = KE_NOT_LEADER_OR_FOLLOWER;
            else if (!p->log)
                err = KE_KAFKA_STORAGE_ERROR;
            if (!err) {
                struct vlog_info info;
                vlog_get_info(p->log, &info);
                uint64_t hw = part_hw(p);
                if (ts == -1) {
                    off = (int64_t)hw;
                } else if (ts == -2) {
                    off = (int64_t)info.start_offset;
                } else {
                    uint64_t o = 0;
                    if (vlog_offset_for_time(p->log, ts, &o))
                        err = KE_KAFKA_STORAGE_ERROR;
                    else if (o < hw) {
                        off = (int64_t)o;
                        ts_out = ts;
                    }
                }
            }
            kw_i32(w, part);
            kw_i16(w, err);
            if (v == 0) {
                kw_i32(w, off >= 0 ? 1 : 0);
                if (off >= 0)
                    kw_i64(w, off);
            } else {
                kw_i64(w, ts_out);
                kw_i64(w, off);
                if (v >= 4)
                    kw_i32(w, 0); /* leader epoch */
            }
        }
    }
    if (!kr_ok(r)) {
        kreq_malformed(q, "ListOffsets request does not decode");
        return;
    }
    kreq_done(q);
}
