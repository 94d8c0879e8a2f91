/*
 * group_deliver: the delivery commands of the consumer-group state machine:
 * fetch, ack, cumulative ack, nack, extend, term, dead-lettered, and lease
 * expiry (called by group_tick).
 *
 * Every command validates all of its input first and returns an error with
 * the state unchanged; then it changes volatile state and adds items to the
 * group's progress batch (deliveries, acks, dead-letter steps), checking the
 * forced-emit thresholds between items (between items the state and the
 * batch are always consistent, so emitting there is safe).
 *
 * Ordering (ordered mode): a partition never hands out an offset while a
 * lower offset of the same partition waits for redelivery: waiting messages
 * go first, lowest offset first, once their backoff ends; new offsets
 * follow. Leases already handed out are not revoked by a nack or an expiry
 * of another message (they are revoked when the partition moves to another
 * member).
 */
#include <errno.h>
#include <string.h>

#include "broker/group/group_int.h"
#include "verity/errors.h"
#include "verity/verify.h"

/* Common prologue: live state, known group, known member. */
static int lookup(struct group_state *st, const char *name, uint64_t member_id, struct group **g,
                  struct gmember **m)
{
    if (!st->live)
        return VERITY_EINVAL;
    *g = gst_find(st, name);
    if (!*g)
        return VERITY_ENOTFOUND;
    *m = gmember_find(*g, member_id);
    if (!*m)
        return VERITY_EMEMBER;
    return 0;
}

static void lease_to(struct group *g, struct gmember *m, uint32_t ei, int64_t now)
{
    struct gent *e = &g->ents[ei];
    VERITY_VERIFY(e->status == GE_IDLE && e->count < UINT16_MAX);
    e->count++;
    e->status = GE_LEASED;
    e->member_id = m->id;
    e->when_ms = now + g->cfg.lease_ms;
    if (e->first_ms == INT64_MIN)
        e->first_ms = now;
    glease_push(g, ei);
    m->n_leased++;
    g->parts[e->pidx].n_leased++;
    g->n_leased++;
}

static void fill(const struct group *g, const struct gent *e, struct group_delivery *out)
{
    const struct gpart *p = &g->parts[e->pidx];
    out->pidx = e->pidx;
    out->topic = p->topic;
    out->partition = p->partition;
    out->offset = e->offset;
    out->delivery_count = e->count;
    out->lease_deadline_ms = e->when_ms;
}

/* What the reply to a fetch waits for: the open progress record (slow), or
 * only the records that raised the horizons of its first deliveries. */
struct fticket {
    bool slow;
    uint64_t horizon_seq;
};

/* Delivers up to want messages of one partition; returns how many. */
static size_t fetch_part(struct group_state *st, struct group *g, struct gmember *m,
                         uint32_t pidx, uint64_t hwm, size_t want, int64_t now,
                         struct group_delivery *out, bool *limited, struct fticket *tk)
{
    struct gpart *p = &g->parts[pidx];
    size_t n = 0;
    while (n < want) {
        uint32_t ei = gheap_top(g, p);
        if (ei == GNIL || g->ents[ei].when_ms > now)
            break;
        struct gent *e = &g->ents[ei];
        if (e->offset >= hwm)
            break; /* a coordinator whose copy of the partition is behind
                    * (a new one in a cluster): it cannot read the message
                    * yet, so neither lease nor count it until it can */
        if (e->count >= g->cfg.max_deliveries) {
            /* Returned where no dead-letter could be decided (leave,
             * rebalance): decide now instead of delivering again. */
            gent_dead_letter(st, g, ei);
        } else {
            gent_detach(g, ei);
            lease_to(g, m, ei, now);
            gbatch_redeliv(st, g, pidx, e->offset, e->count);
            fill(g, e, &out[n++]);
            tk->slow = true;
        }
        gbatch_maybe_emit(st, g, now);
    }
    if (g->cfg.mode == GROUP_ORDERED && p->n_heap > 0)
        return n; /* a lower offset waits: nothing newer goes out */
    while (n < want && p->cursor < hwm) {
        if (g->n_tracked >= g->pending_max) {
            *limited = true;
            break;
        }
        uint64_t off = p->cursor;
        uint32_t ei = gent_alloc(g, pidx, off);
        gbatch_deliv(st, g, pidx, off);
        p->cursor++;
        struct gent *e = &g->ents[ei];
        if (off < p->recovered) {
            /* Below the horizon at the last restart: it may have been
             * delivered once before, unlogged. Count that delivery. */
            e->count = 1;
            if (e->count >= g->cfg.max_deliveries) {
                gent_dead_letter(st, g, ei);
                gbatch_maybe_emit(st, g, now);
                continue;
            }
            lease_to(g, m, ei, now);
            gbatch_redeliv(st, g, pidx, off, e->count);
            tk->slow = true;
        } else {
            lease_to(g, m, ei, now);
            if (off < p->horizon) {
                /* The record that first put off below the horizon: usually
                 * the one before the last rise, durable long ago, while the
                 * last rise's own record may still be on its way to the
                 * disk (relaxed topics: no data sync covers it). */
                uint64_t hs = off < p->horizon_prev ? p->horizon_prev_seq : p->horizon_seq;
                if (hs > tk->horizon_seq)
                    tk->horizon_seq = hs;
            } else {
                tk->slow = true;
            }
        }
        fill(g, e, &out[n++]);
        gbatch_maybe_emit(st, g, now);
    }
    return n;
}

int group_fetch(struct group_state *st, const char *name, uint64_t member_id, size_t max,
                const uint64_t *hwm, size_t n_hwm, int64_t now_ms, struct group_delivery *out,
                size_t *n_out, uint64_t *ticket)
{
    *n_out = 0;
    *ticket = 0;
    struct group *g;
    struct gmember *m;
    int rc = lookup(st, name, member_id, &g, &m);
    if (rc)
        return rc;
    if (n_hwm != g->n_parts || !hwm || (max && !out))
        return VERITY_EINVAL;
    for (size_t i = 0; i < n_hwm; i++)
        if (hwm[i] >= GROUP_OFFSET_LIMIT)
            return VERITY_EOFFSET;
    if (max > GROUP_BATCH_ITEMS_MAX)
        max = GROUP_BATCH_ITEMS_MAX;
    uint32_t room = g->pending_max > g->n_tracked ? g->pending_max - g->n_tracked : 0;
    rc = gent_reserve(g, room < max ? room : (uint32_t)max);
    if (!rc)
        rc = gbatch_reserve(g, max < g->n_parts ? max : g->n_parts, max, 0);
    if (rc)
        return rc;
    int64_t now = gst_clock(st, now_ms);
    gmember_touch(m, now);
    bool ordered = g->cfg.mode == GROUP_ORDERED;
    uint32_t np = ordered ? m->n_parts : g->n_parts;
    uint32_t start = ordered ? m->rr : g->rr;
    bool limited = false;
    struct fticket tk = {false, 0};
    size_t n = 0;
    for (uint32_t k = 0; k < np && n < max; k++) {
        uint32_t pidx = ordered ? m->parts[(start + k) % np] : (start + k) % np;
        n += fetch_part(st, g, m, pidx, hwm[pidx], max - n, now, out + n, &limited, &tk);
    }
    if (np) {
        if (ordered)
            m->rr = (start + 1) % np;
        else
            g->rr = (start + 1) % np;
    }
    *n_out = n;
    if (n == 0 && limited)
        return VERITY_ELIMIT;
    if (n)
        *ticket = tk.slow ? gst_ticket(st, g) : tk.horizon_seq;
    return 0;
}

/* Whether m may act as the holder of entry e: it holds the lease, or it
 * was the last holder of a message waiting for redelivery that did not move
 * (in ordered mode the partition is still m's). */
/* member_id 0 on a waiting message: delivered before the last recovery
 * (restart, coordinator change) and to nobody since. The log does not say to
 * whom (deliveries are ranges), so an ack, nack or term of the member that
 * holds it from before is accepted, from any member (shared) or the
 * partition's owner (ordered), until the message goes out again. */
static bool unheld_ok(const struct group *g, const struct gmember *m, const struct gent *e)
{
    return e->member_id == 0 && e->status == GE_WAITING &&
           (g->cfg.mode != GROUP_ORDERED ||
            g->parts[e->pidx].owner == (uint32_t)(m->id & 0xffff));
}

static bool holder_ok(const struct group *g, const struct gmember *m, const struct gent *e)
{
    if (unheld_ok(g, m, e))
        return true;
    if (e->member_id != m->id)
        return false;
    if (e->status == GE_LEASED)
        return true;
    VERITY_VERIFY(e->status == GE_WAITING);
    return g->cfg.mode != GROUP_ORDERED ||
           g->parts[e->pidx].owner == (uint32_t)(m->id & 0xffff);
}

/* Whether member m may acknowledge (pidx, offset): 0 (entry in *ei, or
 * GNIL when already done), or the error. */
static int ack_check(const struct group *g, const struct gmember *m, uint32_t pidx,
                     uint64_t offset, uint32_t *ei_out)
{
    *ei_out = GNIL;
    if (pidx >= g->n_parts)
        return VERITY_EINVAL;
    const struct gpart *p = &g->parts[pidx];
    if (offset < p->floor)
        return 0;
    if (offset >= p->cursor)
        return VERITY_EOFFSET;
    uint32_t ei = gent_find(g, pidx, offset);
    if (ei == GNIL) {
        VERITY_VERIFY(gdone_has(p, offset));
        return 0;
    }
    const struct gent *e = &g->ents[ei];
    switch (e->status) {
    case GE_LEASED:
    case GE_WAITING:
        if (!holder_ok(g, m, e))
            return VERITY_ELEASE;
        *ei_out = ei;
        return 0;
    case GE_ACKED:
    case GE_DLQ_DONE:
        return 0;
    default:
        return VERITY_ELEASE; /* dead-letter decided */
    }
}

/* Next offset >= o that is not inside a done range (o has no entry). */
static uint64_t skip_done(const struct gpart *p, uint64_t o)
{
    if (o < p->floor)
        return p->floor;
    uint32_t lo = 0, hi = p->n_done;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (p->done[mid].hi <= o)
            lo = mid + 1;
        else
            hi = mid;
    }
    VERITY_VERIFY(lo < p->n_done && p->done[lo].lo <= o);
    return p->done[lo].hi;
}

/* Whether m may acknowledge everything of pidx up to offset: 0 or the
 * error. Bounded by the partition's entries and done ranges. */
static int upto_check(const struct group *g, const struct gmember *m, uint32_t pidx,
                      uint64_t offset)
{
    if (g->cfg.mode != GROUP_ORDERED || pidx >= g->n_parts)
        return VERITY_EINVAL;
    const struct gpart *p = &g->parts[pidx];
    if (offset >= p->cursor)
        return VERITY_EOFFSET;
    for (uint64_t o = p->floor; o <= offset;) {
        uint32_t ei = gent_find(g, pidx, o);
        if (ei == GNIL) {
            o = skip_done(p, o);
            continue;
        }
        const struct gent *e = &g->ents[ei];
        if ((e->status == GE_LEASED || e->status == GE_WAITING) && !holder_ok(g, m, e))
            return VERITY_ELEASE;
        if (e->status == GE_IDLE)
            return VERITY_ELEASE;
        o++;
    }
    return 0;
}

static void span_note(struct group_ack_res *res, uint32_t pidx, uint64_t lo, uint64_t hi)
{
    if (!res || !res->already || lo >= hi)
        return;
    if (res->n_already) {
        struct group_span *last = &res->already[res->n_already - 1];
        if (last->pidx == pidx && last->hi == lo) {
            last->hi = hi;
            return;
        }
    }
    if (res->n_already == res->cap_already) {
        res->already_cut = true;
        return;
    }
    res->already[res->n_already++] = (struct group_span){pidx, lo, hi};
}

/* Applies a checked upto: acknowledge in runs; a dead-letter in progress
 * splits a run, done offsets join it (acknowledging them again changes
 * nothing) and are named in res from `from` on. */
static void upto_apply(struct group_state *st, struct group *g, uint32_t pidx, uint64_t offset,
                       uint64_t from, struct group_ack_res *res)
{
    struct gpart *p = &g->parts[pidx];
    if (from < p->floor)
        span_note(res, pidx, from, p->floor < offset + 1 ? p->floor : offset + 1);
    uint64_t run = UINT64_MAX, o = p->floor;
    while (o <= offset) {
        uint32_t ei = gent_find(g, pidx, o);
        uint64_t next = o + 1;
        bool in_run = true;
        if (ei == GNIL) {
            next = skip_done(p, o);
            if (next > offset + 1)
                next = offset + 1;
            span_note(res, pidx, o > from ? o : from, next);
        } else if (g->ents[ei].status == GE_DLQ_WAIT || g->ents[ei].status == GE_DLQ_DONE) {
            in_run = false;
            if (g->ents[ei].status == GE_DLQ_DONE && o >= from)
                span_note(res, pidx, o, o + 1);
        } else if (g->ents[ei].status == GE_ACKED) {
            if (o >= from)
                span_note(res, pidx, o, o + 1);
        } else {
            VERITY_VERIFY(g->ents[ei].status == GE_LEASED || g->ents[ei].status == GE_WAITING);
            gent_detach(g, ei);
            g->ents[ei].status = GE_ACKED;
        }
        if (in_run && run == UINT64_MAX)
            run = o;
        if (!in_run && run != UINT64_MAX) {
            gbatch_ack(st, g, pidx, run, o);
            run = UINT64_MAX;
        }
        o = next;
    }
    if (run != UINT64_MAX)
        gbatch_ack(st, g, pidx, run, offset + 1);
}

int group_ack_all(struct group_state *st, const char *name, uint64_t member_id,
                  const struct group_ack_req *q, int64_t now_ms, struct group_ack_res *res,
                  uint64_t *ticket)
{
    *ticket = 0;
    if (res) {
        res->n_already = 0;
        res->already_cut = false;
        res->failed = 0;
    }
    struct group *g;
    struct gmember *m;
    int rc = lookup(st, name, member_id, &g, &m);
    if (rc)
        return rc;
    if ((q->n_refs && !q->refs) || (q->n_upto && !q->upto) ||
        q->n_refs > GROUP_BATCH_ITEMS_MAX || q->n_upto > GROUP_PARTITIONS_MAX)
        return VERITY_EINVAL;
    /* Check everything first: all or none. */
    uint32_t ei;
    for (size_t i = 0; i < q->n_refs + q->n_upto; i++) {
        if (i < q->n_refs)
            rc = ack_check(g, m, q->refs[i].pidx, q->refs[i].offset, &ei);
        else
            rc = upto_check(g, m, q->upto[i - q->n_refs].pidx, q->upto[i - q->n_refs].offset);
        if (rc) {
            if (res)
                res->failed = i;
            return rc;
        }
    }
    rc = gbatch_reserve(g, 0, 0, q->n_refs + q->n_upto);
    if (rc)
        return rc;
    int64_t now = gst_clock(st, now_ms);
    gmember_touch(m, now);
    for (size_t i = 0; i < q->n_refs; i++) {
        VERITY_VERIFY(ack_check(g, m, q->refs[i].pidx, q->refs[i].offset, &ei) == 0);
        if (res && res->ref_already)
            res->ref_already[i] = ei == GNIL;
        if (ei == GNIL)
            continue; /* done before: this ack did not count */
        gent_detach(g, ei);
        g->ents[ei].status = GE_ACKED;
        gbatch_ack(st, g, q->refs[i].pidx, q->refs[i].offset, q->refs[i].offset + 1);
        gbatch_maybe_emit(st, g, now);
    }
    for (size_t i = 0; i < q->n_upto; i++) {
        uint64_t from = q->upto_from ? q->upto_from[i] : 0;
        /* An earlier item may have changed the span; it stays acceptable
         * (acks only turn held messages into done ones). */
        VERITY_VERIFY(upto_check(g, m, q->upto[i].pidx, q->upto[i].offset) == 0);
        upto_apply(st, g, q->upto[i].pidx, q->upto[i].offset, from, res);
        gbatch_maybe_emit(st, g, now);
    }
    *ticket = gst_ticket(st, g);
    return 0;
}

int group_ack(struct group_state *st, const char *name, uint64_t member_id,
              const struct group_ref *refs, size_t n, int64_t now_ms, uint64_t *ticket)
{
    struct group_ack_req q = {.refs = refs, .n_refs = n};
    return group_ack_all(st, name, member_id, &q, now_ms, NULL, ticket);
}

int group_ack_upto(struct group_state *st, const char *name, uint64_t member_id, uint32_t pidx,
                   uint64_t offset, int64_t now_ms, uint64_t *ticket)
{
    struct group_ref u = {pidx, offset};
    struct group_ack_req q = {.upto = &u, .n_upto = 1};
    return group_ack_all(st, name, member_id, &q, now_ms, NULL, ticket);
}

/* The entry of a message the member holds a lease on, or the error.
 * waiting_ok: also one whose lease ran out and that nobody got since;
 * recovered_ok: also one unheld since the last recovery (unheld_ok). */
static int held(const struct group *g, const struct gmember *m, struct group_ref ref,
                bool waiting_ok, bool recovered_ok, uint32_t *ei_out)
{
    if (ref.pidx >= g->n_parts)
        return VERITY_EINVAL;
    if (ref.offset >= g->parts[ref.pidx].cursor)
        return VERITY_EOFFSET;
    uint32_t ei = gent_find(g, ref.pidx, ref.offset);
    if (ei == GNIL)
        return VERITY_ELEASE;
    const struct gent *e = &g->ents[ei];
    bool ok = e->status == GE_LEASED || (waiting_ok && e->status == GE_WAITING);
    if (!(recovered_ok && unheld_ok(g, m, e)) && (!ok || e->member_id != m->id))
        return VERITY_ELEASE;
    *ei_out = ei;
    return 0;
}

int group_nack(struct group_state *st, const char *name, uint64_t member_id,
               struct group_ref ref, int64_t delay_ms, const char *error, int64_t now_ms,
               uint64_t *ticket)
{
    *ticket = 0;
    struct group *g;
    struct gmember *m;
    int rc = lookup(st, name, member_id, &g, &m);
    if (rc)
        return rc;
    if (delay_ms > GROUP_DELAY_MS_MAX)
        return VERITY_EINVAL;
    uint32_t ei;
    rc = held(g, m, ref, false, true, &ei);
    if (rc)
        return rc;
    int64_t now = gst_clock(st, now_ms);
    gmember_touch(m, now);
    struct gent *e = &g->ents[ei];
    if (error && error[0])
        gent_set_error(e, error, strnlen(error, GROUP_ERROR_MAX));
    int64_t delay = delay_ms >= 0 ? delay_ms : gbackoff(g, e->count);
    gent_return(st, g, ei, now + delay);
    if (e->status == GE_DLQ_WAIT) {
        *ticket = gst_ticket(st, g);
        gbatch_maybe_emit(st, g, now);
    }
    return 0;
}

int group_extend(struct group_state *st, const char *name, uint64_t member_id,
                 const struct group_ref *refs, size_t n, int64_t now_ms, int64_t *deadline_ms)
{
    *deadline_ms = 0;
    struct group *g;
    struct gmember *m;
    int rc = lookup(st, name, member_id, &g, &m);
    if (rc)
        return rc;
    if (n && !refs)
        return VERITY_EINVAL;
    uint32_t ei;
    for (size_t i = 0; i < n; i++) {
        rc = held(g, m, refs[i], false, false, &ei);
        if (rc)
            return rc;
    }
    int64_t now = gst_clock(st, now_ms);
    gmember_touch(m, now);
    int64_t deadline = now + g->cfg.lease_ms;
    for (size_t i = 0; i < n; i++) {
        VERITY_VERIFY(held(g, m, refs[i], false, false, &ei) == 0);
        glease_unlink(g, ei);
        g->ents[ei].when_ms = deadline;
        glease_push(g, ei);
    }
    *deadline_ms = deadline;
    return 0;
}

int group_term(struct group_state *st, const char *name, uint64_t member_id,
               struct group_ref ref, const char *error, int64_t now_ms, uint64_t *ticket)
{
    *ticket = 0;
    struct group *g;
    struct gmember *m;
    int rc = lookup(st, name, member_id, &g, &m);
    if (rc)
        return rc;
    uint32_t ei;
    rc = held(g, m, ref, true, true, &ei);
    if (rc)
        return rc;
    int64_t now = gst_clock(st, now_ms);
    gmember_touch(m, now);
    if (error && error[0])
        gent_set_error(&g->ents[ei], error, strnlen(error, GROUP_ERROR_MAX));
    gent_dead_letter(st, g, ei);
    *ticket = gst_ticket(st, g);
    gbatch_maybe_emit(st, g, now);
    return 0;
}

int group_skip_control(struct group_state *st, const char *name, uint32_t pidx, uint64_t offset,
                       int64_t now_ms, uint64_t *ticket)
{
    *ticket = 0;
    if (!st->live)
        return VERITY_EINVAL;
    struct group *g = gst_find(st, name);
    if (!g)
        return VERITY_ENOTFOUND;
    if (pidx >= g->n_parts || offset >= GROUP_OFFSET_LIMIT - 1)
        return VERITY_EINVAL;
    struct gpart *p = &g->parts[pidx];
    if (offset != p->cursor)
        return VERITY_EOFFSET;
    if (g->n_tracked >= g->pending_max)
        return VERITY_ELIMIT;
    int rc = gent_reserve(g, 1);
    if (!rc)
        rc = gbatch_reserve(g, 1, 0, 1);
    if (rc)
        return rc;
    int64_t now = gst_clock(st, now_ms);
    /* Delivered (so replay finds the entry) and acknowledged in one record. */
    uint32_t ei = gent_alloc(g, pidx, offset);
    VERITY_VERIFY(g->ents[ei].status == GE_IDLE);
    gbatch_deliv(st, g, pidx, offset);
    p->cursor++;
    g->ents[ei].status = GE_ACKED;
    gbatch_ack(st, g, pidx, offset, offset + 1);
    gbatch_maybe_emit(st, g, now);
    *ticket = gst_ticket(st, g);
    VERITY_VERIFY(p->cursor == offset + 1);
    return 0;
}

int group_dead_lettered(struct group_state *st, const char *name, struct group_ref ref,
                        int64_t now_ms, uint64_t *ticket)
{
    *ticket = 0;
    if (!st->live)
        return VERITY_EINVAL;
    struct group *g = gst_find(st, name);
    if (!g)
        return VERITY_ENOTFOUND;
    if (ref.pidx >= g->n_parts)
        return VERITY_EINVAL;
    uint32_t ei = gent_find(g, ref.pidx, ref.offset);
    if (ei == GNIL) {
        /* Reported again after its record was emitted: done. */
        if (ref.offset < g->parts[ref.pidx].cursor && gdone_has(&g->parts[ref.pidx], ref.offset)) {
            *ticket = gst_ticket(st, g);
            return 0;
        }
        return VERITY_ENOTFOUND;
    }
    struct gent *e = &g->ents[ei];
    if (e->status == GE_DLQ_DONE) {
        *ticket = gst_ticket(st, g);
        return 0;
    }
    if (e->status != GE_DLQ_WAIT)
        return VERITY_EINVAL;
    int64_t now = gst_clock(st, now_ms);
    e->status = GE_DLQ_DONE;
    gbatch_done(st, g, ref.pidx, ref.offset);
    *ticket = gst_ticket(st, g);
    gbatch_maybe_emit(st, g, now);
    return 0;
}

void gdeliver_expire(struct group_state *st, struct group *g, int64_t now)
{
    while (g->lease_head != GNIL && g->ents[g->lease_head].when_ms <= now) {
        uint32_t ei = g->lease_head;
        gent_return(st, g, ei, now + gbackoff(g, g->ents[ei].count));
        gbatch_maybe_emit(st, g, now);
    }
}
