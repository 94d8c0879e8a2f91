/*
 * group_apply: applies group-log records to the state. This is the only
 * code that changes durable state (see broker/group/group_int.h for which fields
 * are durable); the live machine runs it on every record it emits, replay
 * runs it on every record read back from the group log, so both build the
 * same durable state.
 *
 * Each apply_* first checks that the record fits the state and reserves the
 * memory it needs, returning an error with the state unchanged; only then
 * does it change anything. In the live machine the records were just built
 * from the state, so a failure there is a bug and group.c aborts on it.
 *
 * Side effects on volatile state (live machine only; in replay there are no
 * leases): LEAVE returns the member's leases at once; JOIN and LEAVE in
 * ordered mode return the leases of partitions that moved to another
 * member; RESET drops every tracked delivery.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "broker/group/group_int.h"
#include "verity/errors.h"
#include "verity/verify.h"

static int apply_create(struct group_state *st, const struct grec *r)
{
    if (r->group_id < st->next_group_id || gst_find(st, r->cfg->name) ||
        st->n_groups >= GROUP_GROUPS_MAX)
        return VERITY_ECORRUPT;
    const struct group_config *c = r->cfg;
    if (!c->name[0] || c->n_topics == 0 || c->lease_ms <= 0 || c->session_ms <= 0 ||
        c->max_deliveries == 0 || c->pending_max == 0 || !c->dlq_topic[0])
        return VERITY_ECORRUPT;
    for (uint32_t i = 0; i < c->n_topics; i++)
        if (!c->topics[i].name[0] || c->topics[i].partitions == 0)
            return VERITY_ECORRUPT;
    struct group *g = calloc(1, sizeof(*g));
    if (!g)
        return -ENOMEM;
    g->cfg = *c;
    g->id = r->group_id;
    g->n_parts = r->n_offsets;
    g->pending_max = c->pending_max < st->pending_cap ? c->pending_max : st->pending_cap;
    g->free_head = GNIL;
    g->lease_head = g->lease_tail = GNIL;
    g->parts = calloc(g->n_parts, sizeof(*g->parts));
    g->chk = calloc(g->n_parts, sizeof(*g->chk));
    int rc = -ENOMEM;
    if (!g->parts || !g->chk)
        goto fail;
    uint32_t base = 0;
    for (uint32_t t = 0; t < c->n_topics; t++) {
        g->topic_base[t] = base;
        for (uint32_t k = 0; k < c->topics[t].partitions; k++) {
            struct gpart *p = &g->parts[base + k];
            p->floor = p->cursor_logged = p->cursor = r->offsets[base + k];
            p->horizon = p->floor;
            p->horizon_seq = r->seq;
            p->owner = GNIL;
            p->topic = t;
            p->partition = k;
        }
        base += c->topics[t].partitions;
    }
    g->topic_base[c->n_topics] = base;
    VERITY_VERIFY(base == g->n_parts);
    if (st->n_groups == st->cap_groups) {
        uint32_t cap = st->cap_groups ? 2 * st->cap_groups : 8;
        struct group **gs = realloc(st->groups, cap * sizeof(*gs));
        if (!gs)
            goto fail;
        st->groups = gs;
        st->cap_groups = cap;
    }
    st->groups[st->n_groups++] = g;
    rc = gst_index_rebuild(st);
    if (rc) {
        st->n_groups--;
        goto fail;
    }
    st->next_group_id = r->group_id + 1;
    return 0;
fail:
    gst_group_free(g);
    return rc;
}

static int apply_delete(struct group_state *st, struct group *g)
{
    VERITY_VERIFY(g->batch.seq == 0);
    uint32_t i = 0;
    while (st->groups[i] != g)
        i++;
    st->groups[i] = st->groups[--st->n_groups];
    int rc = gst_index_rebuild(st);
    if (rc) {
        st->groups[st->n_groups++] = g;
        return rc;
    }
    gst_group_free(g);
    return 0;
}

static int apply_join(struct group *g, const struct grec *r)
{
    uint32_t slot = (uint32_t)(r->member_id & 0xffff);
    uint64_t inc = r->member_id >> 16;
    if (slot >= GROUP_MEMBERS_MAX || slot > g->n_slots ||
        (slot < g->n_slots && g->members[slot].id) || inc <= g->incarnation ||
        inc >= (1ull << 47) || g->n_members >= GROUP_MEMBERS_MAX || r->session_ms <= 0)
        return VERITY_ECORRUPT;
    if (slot == g->cap_slots) {
        uint32_t cap = g->cap_slots ? 2 * g->cap_slots : 8;
        struct gmember *m = realloc(g->members, cap * sizeof(*m));
        if (!m)
            return -ENOMEM;
        memset(m + g->cap_slots, 0, (cap - g->cap_slots) * sizeof(*m));
        g->members = m;
        g->cap_slots = cap;
    }
    char *name = strdup(r->member_name);
    if (!name)
        return -ENOMEM;
    if (g->cfg.mode == GROUP_ORDERED && gassign_reserve(g, g->n_members + 1)) {
        free(name);
        return -ENOMEM;
    }
    if (slot == g->n_slots)
        g->n_slots++;
    struct gmember *m = &g->members[slot];
    free(m->name);
    uint32_t *parts = m->parts;
    uint32_t cap_parts = m->cap_parts;
    memset(m, 0, sizeof(*m));
    m->parts = parts;
    m->cap_parts = cap_parts;
    m->id = r->member_id;
    m->name = name;
    m->session_ms = r->session_ms;
    m->last_seen_ms = r->time_ms;
    g->n_members++;
    g->generation++;
    g->incarnation = inc;
    if (g->cfg.mode == GROUP_ORDERED) {
        gassign_rebalance(g);
        glease_return_moved(g, r->time_ms);
    }
    return 0;
}

static int apply_leave(struct group *g, const struct grec *r)
{
    struct gmember *m = gmember_find(g, r->member_id);
    if (!m)
        return VERITY_ECORRUPT;
    if (g->cfg.mode == GROUP_ORDERED && g->n_members > 1 &&
        gassign_reserve(g, g->n_members - 1))
        return -ENOMEM;
    glease_return_member(g, r->member_id, r->time_ms);
    VERITY_VERIFY(m->n_leased == 0);
    free(m->name);
    m->name = NULL;
    m->id = 0;
    m->n_parts = 0;
    g->n_members--;
    g->generation++;
    if (g->cfg.mode == GROUP_ORDERED) {
        gassign_rebalance(g);
        glease_return_moved(g, r->time_ms);
    }
    return 0;
}

static int apply_reset(struct group_state *st, struct group *g, const struct grec *r)
{
    if (r->n_offsets != g->n_parts)
        return VERITY_ECORRUPT;
    VERITY_VERIFY(g->batch.seq == 0);
    (void)st;
    gent_drop_all(g);
    for (uint32_t i = 0; i < g->n_parts; i++) {
        struct gpart *p = &g->parts[i];
        p->floor = p->cursor_logged = p->cursor = r->offsets[i];
        /* Nothing past the new cursor was delivered: the horizon restarts
         * there (a crash must not count the whole replay as delivered). */
        p->horizon = p->floor;
        p->horizon_seq = r->seq;
        p->horizon_prev = p->horizon_prev_seq = 0; /* the old claims end with the reset */
        p->recovered = 0;
        p->n_done = 0;
        p->done_count = 0;
        VERITY_VERIFY(p->n_heap == 0 && p->n_leased == 0);
    }
    g->dead_lettered = 0;
    return 0;
}

/* The entry for (pidx, offset), created IDLE (replay) if it is missing and
 * the offset is not done; GNIL when it is done. */
static uint32_t entry_for(struct group *g, uint32_t pidx, uint64_t offset)
{
    uint32_t ei = gent_find(g, pidx, offset);
    if (ei != GNIL)
        return ei;
    if (gdone_has(&g->parts[pidx], offset))
        return GNIL;
    VERITY_VERIFY(gent_reserve(g, 1) == 0);
    return gent_alloc(g, pidx, offset);
}

/* Phase 1 of PROGRESS: checks that every item fits the state; reserves the
 * entries replay will create. */
static int progress_check(struct group_state *st, struct group *g, const struct grec *r)
{
    for (uint32_t i = 0; i < g->n_parts; i++)
        g->chk[i] = g->parts[i].cursor_logged;
    uint64_t fresh = 0;
    for (size_t i = 0; i < r->n_deliv; i++) {
        const struct gdeliv *d = &r->deliv[i];
        if (d->pidx >= g->n_parts || d->lo != g->chk[d->pidx])
            return VERITY_ECORRUPT;
        g->chk[d->pidx] = d->hi;
        fresh += d->hi - d->lo;
    }
    for (size_t i = 0; i < r->n_redeliv; i++)
        if (r->redeliv[i].pidx >= g->n_parts || r->redeliv[i].offset >= g->chk[r->redeliv[i].pidx])
            return VERITY_ECORRUPT;
    for (size_t i = 0; i < r->n_decide; i++)
        if (r->decide[i].pidx >= g->n_parts || r->decide[i].offset >= g->chk[r->decide[i].pidx])
            return VERITY_ECORRUPT;
    for (size_t i = 0; i < r->n_ack; i++)
        if (r->ack[i].pidx >= g->n_parts || r->ack[i].hi > g->chk[r->ack[i].pidx])
            return VERITY_ECORRUPT;
    for (size_t i = 0; i < r->n_done; i++)
        if (r->done[i].pidx >= g->n_parts || r->done[i].offset >= g->chk[r->done[i].pidx])
            return VERITY_ECORRUPT;
    for (size_t i = 0; i < r->n_horizon; i++)
        if (r->horizon[i].pidx >= g->n_parts)
            return VERITY_ECORRUPT;
    /* The live machine tracks its deliveries already; replay creates them. */
    if (!st->live) {
        if (fresh > VERITY_PENDING_PER_GROUP_MAX)
            return VERITY_ELIMIT;
        return gent_reserve(g, (uint32_t)fresh);
    }
    return 0;
}

static void raise_logged(struct gent *e, uint16_t count)
{
    if (count > e->logged)
        e->logged = count;
    if (e->count < e->logged)
        e->count = e->logged;
}

/* Frees the entry (if any) and marks the offset done. */
static void entry_done(struct group *g, uint32_t ei)
{
    gent_detach(g, ei);
    gent_release(g, ei);
}

static int apply_progress(struct group_state *st, struct group *g, const struct grec *r)
{
    int rc = progress_check(st, g, r);
    if (rc)
        return rc;
    for (size_t i = 0; i < r->n_deliv; i++) {
        const struct gdeliv *d = &r->deliv[i];
        struct gpart *p = &g->parts[d->pidx];
        for (uint64_t o = d->lo; o < d->hi; o++) {
            uint32_t ei = gent_find(g, d->pidx, o);
            if (ei == GNIL) {
                VERITY_VERIFY(!st->live);
                ei = gent_alloc(g, d->pidx, o);
            }
            raise_logged(&g->ents[ei], 1);
        }
        p->cursor_logged = d->hi;
        if (p->cursor < d->hi)
            p->cursor = d->hi;
    }
    for (size_t i = 0; i < r->n_redeliv; i++) {
        const struct gredeliv *d = &r->redeliv[i];
        uint32_t ei = entry_for(g, d->pidx, d->offset);
        if (ei != GNIL)
            raise_logged(&g->ents[ei], d->count);
    }
    for (size_t i = 0; i < r->n_decide; i++) {
        const struct gdecide *d = &r->decide[i];
        uint32_t ei = entry_for(g, d->pidx, d->offset);
        if (ei == GNIL)
            continue;
        struct gent *e = &g->ents[ei];
        raise_logged(e, d->count);
        e->dlq = 1;
        if (!st->live)
            gent_set_error(e, r->text + d->err_off, d->err_len);
    }
    for (size_t i = 0; i < r->n_ack; i++) {
        const struct gack *a = &r->ack[i];
        struct gpart *p = &g->parts[a->pidx];
        VERITY_VERIFY(gdone_reserve(p, 1) == 0);
        for (uint64_t o = a->lo < p->floor ? p->floor : a->lo; o < a->hi; o++) {
            uint32_t ei = gent_find(g, a->pidx, o);
            if (ei == GNIL)
                continue;
            VERITY_VERIFY(!st->live || g->ents[ei].status == GE_ACKED);
            entry_done(g, ei);
        }
        gdone_add(p, a->lo, a->hi);
    }
    for (size_t i = 0; i < r->n_done; i++) {
        const struct gdone *d = &r->done[i];
        struct gpart *p = &g->parts[d->pidx];
        uint32_t ei = gent_find(g, d->pidx, d->offset);
        if (ei != GNIL) {
            VERITY_VERIFY(!st->live || g->ents[ei].status == GE_DLQ_DONE);
            entry_done(g, ei);
        }
        if (!gdone_has(p, d->offset)) {
            g->dead_lettered++;
            VERITY_VERIFY(gdone_reserve(p, 1) == 0);
            gdone_add(p, d->offset, d->offset + 1);
        }
    }
    for (size_t i = 0; i < r->n_horizon; i++) {
        struct gpart *p = &g->parts[r->horizon[i].pidx];
        if (r->horizon[i].offset > p->horizon) {
            p->horizon_prev = p->horizon;
            p->horizon_prev_seq = p->horizon_seq;
            p->horizon = r->horizon[i].offset;
            p->horizon_seq = r->seq;
        }
    }
    return 0;
}

int gapply_record(struct group_state *st, const uint8_t *rec, size_t len)
{
    struct grec r;
    int rc = gcodec_decode(rec, len, &r);
    if (rc)
        return rc;
    rc = VERITY_ECORRUPT;
    if (r.seq != st->seq_applied + 1)
        goto out;
    struct group *g = NULL;
    if (r.type != GROUP_REC_CREATE) {
        g = gst_find_id(st, r.group_id);
        if (!g)
            goto out;
    }
    st->in_apply = true;
    switch (r.type) {
    case GROUP_REC_CREATE:
        rc = apply_create(st, &r);
        break;
    case GROUP_REC_DELETE:
        rc = apply_delete(st, g);
        break;
    case GROUP_REC_JOIN:
        rc = apply_join(g, &r);
        break;
    case GROUP_REC_LEAVE:
        rc = apply_leave(g, &r);
        break;
    case GROUP_REC_RESET:
        rc = apply_reset(st, g, &r);
        break;
    case GROUP_REC_PROGRESS:
        rc = apply_progress(st, g, &r);
        break;
    }
    st->in_apply = false;
    if (rc == 0) {
        st->seq_applied = r.seq;
        gst_clock(st, r.time_ms);
    }
out:
    grec_free(&r);
    return rc;
}

int group_apply(struct group_state *st, const uint8_t *rec, size_t len)
{
    if (st->live || !rec)
        return VERITY_EINVAL;
    return gapply_record(st, rec, len);
}
