/*
 * group_query: read-only views of the consumer-group state (inspection,
 * lag, snapshots for comparison) and the invariant checker. Nothing here
 * changes the state.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "broker/group/group_int.h"
#include "verity/errors.h"
#include "verity/verify.h"

static int find(const struct group_state *st, const char *name, const struct group **g)
{
    *g = gst_find(st, name);
    return *g ? 0 : VERITY_ENOTFOUND;
}

void group_list(const struct group_state *st, const char **names, size_t cap, size_t *n_out)
{
    for (uint32_t i = 0; i < st->n_groups && i < cap; i++)
        names[i] = st->groups[i]->cfg.name;
    *n_out = st->n_groups;
}

int group_part_index(const struct group_state *st, const char *name, const char *topic,
                     uint32_t partition, uint32_t *pidx)
{
    const struct group *g;
    int rc = find(st, name, &g);
    if (rc)
        return rc;
    for (uint32_t t = 0; topic && t < g->cfg.n_topics; t++) {
        if (strcmp(g->cfg.topics[t].name, topic) != 0)
            continue;
        if (partition >= g->cfg.topics[t].partitions)
            return VERITY_EINVAL;
        *pidx = g->topic_base[t] + partition;
        return 0;
    }
    return VERITY_EINVAL;
}

int group_get_info(const struct group_state *st, const char *name, struct group_info *out)
{
    const struct group *g;
    int rc = find(st, name, &g);
    if (rc)
        return rc;
    memset(out, 0, sizeof(*out));
    out->mode = g->cfg.mode;
    out->group_id = g->id;
    out->generation = g->generation;
    out->n_partitions = g->n_parts;
    out->n_members = g->n_members;
    out->n_tracked = g->n_tracked;
    out->n_leased = g->n_leased;
    out->n_waiting = g->n_waiting;
    out->n_dead_letter = g->n_dlq;
    out->dead_lettered = g->dead_lettered;
    out->pending_max = g->pending_max;
    out->cfg = &g->cfg;
    return 0;
}

int group_members(const struct group_state *st, const char *name, struct group_member_info *out,
                  size_t cap, size_t *n_out)
{
    const struct group *g;
    int rc = find(st, name, &g);
    if (rc)
        return rc;
    /* Slots are reused, so sort by id. */
    uint64_t ids[GROUP_MEMBERS_MAX];
    size_t n = 0;
    for (uint32_t s = 0; s < g->n_slots; s++)
        if (g->members[s].id)
            ids[n++] = g->members[s].id;
    for (size_t i = 1; i < n; i++)
        for (size_t j = i; j > 0 && ids[j - 1] > ids[j]; j--) {
            uint64_t t = ids[j];
            ids[j] = ids[j - 1];
            ids[j - 1] = t;
        }
    for (size_t i = 0; i < n && i < cap; i++) {
        const struct gmember *m = gmember_find_c(g, ids[i]);
        out[i] = (struct group_member_info){.member_id = m->id,
                                            .name = m->name,
                                            .session_ms = m->session_ms,
                                            .last_seen_ms = m->last_seen_ms,
                                            .n_leased = m->n_leased,
                                            .n_partitions = m->n_parts};
    }
    *n_out = n;
    return 0;
}

int group_assignment(const struct group_state *st, const char *name, uint64_t member_id,
                     uint32_t *pidx_out, size_t cap, size_t *n_out)
{
    const struct group *g;
    int rc = find(st, name, &g);
    if (rc)
        return rc;
    const struct gmember *m = gmember_find_c(g, member_id);
    if (!m)
        return VERITY_EMEMBER;
    for (uint32_t i = 0; i < m->n_parts && i < cap; i++)
        pidx_out[i] = m->parts[i];
    *n_out = m->n_parts;
    return 0;
}

static int pending_cmp(const void *a, const void *b)
{
    const struct group_pending *x = a, *y = b;
    if (x->first_delivery_ms != y->first_delivery_ms)
        return x->first_delivery_ms < y->first_delivery_ms ? -1 : 1;
    if (x->pidx != y->pidx)
        return x->pidx < y->pidx ? -1 : 1;
    return x->offset < y->offset ? -1 : (x->offset > y->offset);
}

int group_pending_list(const struct group_state *st, const char *name, uint64_t member_id,
                       struct group_pending *out, size_t cap, size_t *n_out)
{
    const struct group *g;
    int rc = find(st, name, &g);
    if (rc)
        return rc;
    if (member_id && !gmember_find_c(g, member_id))
        return VERITY_EMEMBER;
    size_t n = 0, total = 0;
    for (uint32_t ei = g->lease_head; ei != GNIL; ei = g->ents[ei].next) {
        const struct gent *e = &g->ents[ei];
        if (member_id && e->member_id != member_id)
            continue;
        total++;
        struct group_pending p = {.pidx = e->pidx,
                                  .offset = e->offset,
                                  .member_id = e->member_id,
                                  .delivery_count = e->count,
                                  .first_delivery_ms = e->first_ms,
                                  .lease_deadline_ms = e->when_ms};
        if (n < cap) {
            out[n++] = p;
        } else if (cap && pending_cmp(&p, &out[n - 1]) < 0) {
            out[n - 1] = p; /* keep the cap oldest */
        } else {
            continue;
        }
        /* Insertion step keeps out[0..n) sorted. */
        for (size_t j = n - 1; j > 0 && pending_cmp(&out[j], &out[j - 1]) < 0; j--) {
            struct group_pending t = out[j];
            out[j] = out[j - 1];
            out[j - 1] = t;
        }
    }
    *n_out = total;
    return 0;
}

int group_msg(const struct group_state *st, const char *name, struct group_ref ref,
              struct group_msg_info *out)
{
    const struct group *g;
    int rc = find(st, name, &g);
    if (rc)
        return rc;
    if (ref.pidx >= g->n_parts)
        return VERITY_EINVAL;
    memset(out, 0, sizeof(*out));
    const struct gpart *p = &g->parts[ref.pidx];
    uint32_t ei = gent_find(g, ref.pidx, ref.offset);
    if (ei == GNIL) {
        out->state = gdone_has(p, ref.offset) && ref.offset < p->cursor ? GROUP_MSG_DONE
                                                                         : GROUP_MSG_NEW;
        if (ref.offset < p->floor)
            out->state = GROUP_MSG_DONE;
        return 0;
    }
    const struct gent *e = &g->ents[ei];
    out->delivery_count = e->count;
    out->member_id = e->member_id;
    out->deadline_ms = e->when_ms;
    switch (e->status) {
    case GE_LEASED:
        out->state = GROUP_MSG_LEASED;
        break;
    case GE_WAITING:
    case GE_IDLE:
        out->state = GROUP_MSG_WAITING;
        break;
    case GE_DLQ_WAIT:
        out->state = GROUP_MSG_DEAD_LETTER;
        break;
    default:
        out->state = GROUP_MSG_DONE;
        break;
    }
    return 0;
}

int group_get_lag(const struct group_state *st, const char *name, uint32_t pidx, uint64_t hwm,
                  struct group_lag *out)
{
    const struct group *g;
    int rc = find(st, name, &g);
    if (rc)
        return rc;
    if (pidx >= g->n_parts)
        return VERITY_EINVAL;
    const struct gpart *p = &g->parts[pidx];
    memset(out, 0, sizeof(*out));
    out->ack_floor = p->floor;
    out->read_cursor = p->cursor;
    out->done_above_floor = p->done_count;
    out->ranges = p->n_done;
    out->leased = p->n_leased;
    out->waiting = p->n_heap;
    uint64_t end = hwm > p->cursor ? hwm : p->cursor;
    out->unacked = end - p->floor - p->done_count;
    out->oldest_first_delivery_ms = INT64_MIN;
    uint32_t ei = gent_find(g, pidx, p->floor);
    if (ei != GNIL)
        out->oldest_first_delivery_ms = g->ents[ei].first_ms;
    return 0;
}

/* ---- snapshot --------------------------------------------------------------------- */

static int u64_cmp(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : (x > y);
}

static void snap_config(struct gwriter *b, const struct group_config *c)
{
    gw_str(b, c->name);
    gw_u64(b, c->mode);
    gw_u64(b, c->n_topics);
    for (uint32_t i = 0; i < c->n_topics; i++) {
        gw_str(b, c->topics[i].name);
        gw_u64(b, c->topics[i].partitions);
    }
    gw_str(b, c->dlq_topic);
    gw_u64(b, (uint64_t)c->lease_ms);
    gw_u64(b, (uint64_t)c->session_ms);
    gw_u64(b, c->max_deliveries);
    gw_u64(b, c->n_backoff);
    for (uint32_t i = 0; i < c->n_backoff; i++)
        gw_u64(b, (uint64_t)c->backoff_ms[i]);
    gw_u64(b, c->pending_max);
}

static int snap_group_enc(struct gwriter *b, const struct group *g, bool vol)
{
    gw_u64(b, g->id);
    snap_config(b, &g->cfg);
    gw_u64(b, g->generation);
    gw_u64(b, g->incarnation);
    gw_u64(b, g->dead_lettered);
    gw_u64(b, g->n_members);
    for (uint32_t s = 0; s < g->n_slots; s++) {
        const struct gmember *m = &g->members[s];
        if (!m->id)
            continue;
        gw_u64(b, m->id);
        gw_str(b, m->name);
        gw_u64(b, (uint64_t)m->session_ms);
        if (vol) {
            gw_u64(b, (uint64_t)m->last_seen_ms);
            gw_u64(b, m->n_leased);
        }
    }
    for (uint32_t i = 0; i < g->n_parts; i++) {
        const struct gpart *p = &g->parts[i];
        gw_u64(b, p->floor);
        gw_u64(b, p->cursor_logged);
        gw_u64(b, p->horizon);
        gw_u64(b, p->horizon_seq);
        gw_u64(b, p->owner);
        gw_u64(b, p->done_count);
        gw_u64(b, p->n_done);
        for (uint32_t k = 0; k < p->n_done; k++) {
            gw_u64(b, p->done[k].lo);
            gw_u64(b, p->done[k].hi);
        }
        if (vol) {
            gw_u64(b, p->cursor);
            gw_u64(b, p->n_leased);
            gw_u64(b, p->n_heap);
            gw_u64(b, p->recovered);
        }
    }
    /* Entries in (pidx, offset) order: the hash key sorts that way. */
    uint64_t *keys = malloc(((size_t)g->n_tracked + 1) * sizeof(*keys));
    if (!keys)
        return -ENOMEM;
    uint32_t n = 0;
    for (uint32_t ei = 0; ei < g->n_used; ei++)
        if (g->ents[ei].status != GE_FREE)
            keys[n++] = ((uint64_t)g->ents[ei].pidx << 48) | g->ents[ei].offset;
    VERITY_VERIFY(n == g->n_tracked);
    qsort(keys, n, sizeof(*keys), u64_cmp);
    gw_u64(b, n);
    for (uint32_t i = 0; i < n; i++) {
        const struct gent *e = &g->ents[gent_find(g, (uint32_t)(keys[i] >> 48),
                                                  keys[i] & (GROUP_OFFSET_LIMIT - 1))];
        gw_u64(b, e->pidx);
        gw_u64(b, e->offset);
        gw_u64(b, e->logged);
        gw_u64(b, e->dlq);
        if (e->dlq || vol)
            gw_str(b, e->error);
        if (vol) {
            gw_u64(b, e->status);
            gw_u64(b, e->count);
            gw_u64(b, e->member_id);
            gw_u64(b, (uint64_t)e->when_ms);
            gw_u64(b, (uint64_t)e->first_ms);
        }
    }
    free(keys);
    if (vol) {
        const struct gbatch *bt = &g->batch;
        gw_u64(b, bt->seq);
        gw_u64(b, bt->items);
        gw_u64(b, g->lease_head);
        gw_u64(b, g->rr);
    }
    return 0;
}

static int gid_cmp(const void *a, const void *b)
{
    uint32_t x = (*(const struct group *const *)a)->id, y = (*(const struct group *const *)b)->id;
    return x < y ? -1 : (x > y);
}

int group_snapshot(const struct group_state *st, bool with_volatile, uint8_t **buf, size_t *len)
{
    *buf = NULL;
    *len = 0;
    struct gwriter b = {0};
    struct group **gs = malloc(((size_t)st->n_groups + 1) * sizeof(*gs));
    if (!gs)
        return -ENOMEM;
    if (st->n_groups)
        memcpy(gs, st->groups, st->n_groups * sizeof(*gs));
    qsort(gs, st->n_groups, sizeof(*gs), gid_cmp);
    gw_u64(&b, st->seq_applied);
    gw_u64(&b, st->next_group_id);
    gw_u64(&b, st->n_groups);
    int rc = 0;
    for (uint32_t i = 0; i < st->n_groups && !rc; i++)
        rc = snap_group_enc(&b, gs[i], with_volatile);
    if (with_volatile) {
        gw_u64(&b, (uint64_t)st->now_ms);
        gw_u64(&b, st->seq_next);
    }
    free(gs);
    if (!rc && b.oom)
        rc = -ENOMEM;
    if (rc) {
        free(b.p);
        return rc;
    }
    *buf = b.p;
    *len = b.len;
    return 0;
}

/* ---- invariants ------------------------------------------------------------------------ */

static void check_group(const struct group_state *st, const struct group *g)
{
    uint32_t n = 0, leased = 0, waiting = 0, dlq = 0;
    for (uint32_t ei = 0; ei < g->n_used; ei++) {
        const struct gent *e = &g->ents[ei];
        if (e->status == GE_FREE)
            continue;
        n++;
        const struct gpart *p = &g->parts[e->pidx];
        VERITY_VERIFY(e->pidx < g->n_parts);
        VERITY_VERIFY(e->offset >= p->floor && e->offset < p->cursor);
        VERITY_VERIFY(!gdone_has(p, e->offset));
        VERITY_VERIFY(gent_find(g, e->pidx, e->offset) == ei);
        VERITY_VERIFY(e->count >= e->logged);
        if (e->status == GE_LEASED)
            leased++;
        if (e->status == GE_WAITING) {
            waiting++;
            VERITY_VERIFY(e->heap_pos < p->n_heap && p->heap[e->heap_pos] == ei);
        }
        if (e->status == GE_DLQ_WAIT || e->status == GE_DLQ_DONE)
            dlq++;
    }
    VERITY_VERIFY(n == g->n_tracked && leased == g->n_leased && waiting == g->n_waiting &&
                  dlq == g->n_dlq);
    uint32_t walked = 0;
    int64_t last = INT64_MIN;
    for (uint32_t ei = g->lease_head; ei != GNIL; ei = g->ents[ei].next) {
        const struct gent *e = &g->ents[ei];
        VERITY_VERIFY(e->status == GE_LEASED && e->when_ms >= last);
        VERITY_VERIFY(gmember_find_c(g, e->member_id) != NULL);
        last = e->when_ms;
        walked++;
    }
    VERITY_VERIFY(walked == leased);
    uint32_t heap_total = 0, part_leased = 0;
    for (uint32_t i = 0; i < g->n_parts; i++) {
        const struct gpart *p = &g->parts[i];
        VERITY_VERIFY(p->cursor_logged <= p->cursor && p->floor <= p->cursor_logged);
        VERITY_VERIFY(p->horizon < GROUP_OFFSET_LIMIT && p->horizon_seq <= st->seq_applied);
        VERITY_VERIFY(p->horizon_prev <= p->horizon && p->horizon_prev_seq <= p->horizon_seq);
        uint64_t sum = 0, prev = p->floor;
        for (uint32_t k = 0; k < p->n_done; k++) {
            VERITY_VERIFY(p->done[k].lo > prev && p->done[k].lo < p->done[k].hi);
            VERITY_VERIFY(p->done[k].hi <= p->cursor_logged);
            prev = p->done[k].hi;
            sum += p->done[k].hi - p->done[k].lo;
        }
        VERITY_VERIFY(sum == p->done_count);
        heap_total += p->n_heap;
        part_leased += p->n_leased;
        for (uint32_t k = 1; k < p->n_heap; k++) {
            const struct gent *c = &g->ents[p->heap[k]], *par = &g->ents[p->heap[(k - 1) / 2]];
            if (g->cfg.mode == GROUP_ORDERED)
                VERITY_VERIFY(par->offset <= c->offset);
            else
                VERITY_VERIFY(par->when_ms <= c->when_ms);
        }
    }
    VERITY_VERIFY(heap_total == waiting && part_leased == leased);
    uint32_t members = 0, member_leased = 0, min_p = UINT32_MAX, max_p = 0;
    for (uint32_t s = 0; s < g->n_slots; s++) {
        const struct gmember *m = &g->members[s];
        if (!m->id)
            continue;
        members++;
        member_leased += m->n_leased;
        VERITY_VERIFY((m->id & 0xffff) == s);
        if (g->cfg.mode == GROUP_ORDERED) {
            for (uint32_t k = 0; k < m->n_parts; k++)
                VERITY_VERIFY(g->parts[m->parts[k]].owner == s &&
                              (k == 0 || m->parts[k - 1] < m->parts[k]));
            if (m->n_parts < min_p)
                min_p = m->n_parts;
            if (m->n_parts > max_p)
                max_p = m->n_parts;
        }
    }
    VERITY_VERIFY(members == g->n_members && member_leased == leased);
    if (g->cfg.mode == GROUP_ORDERED && members > 0)
        VERITY_VERIFY(max_p - min_p <= 1);
}

void group_check(const struct group_state *st)
{
    size_t items = 0;
    uint64_t seq = 0;
    for (const struct group *g = st->open_head; g; g = g->batch.next) {
        VERITY_VERIFY(g->batch.seq > seq && g->batch.seq > st->seq_applied);
        seq = g->batch.seq;
        items += g->batch.items;
    }
    VERITY_VERIFY(items == st->open_items);
    for (uint32_t i = 0; i < st->n_groups; i++) {
        VERITY_VERIFY(gst_find(st, st->groups[i]->cfg.name) == st->groups[i]);
        VERITY_VERIFY(gst_find_id(st, st->groups[i]->id) == st->groups[i]);
        check_group(st, st->groups[i]);
    }
}

void group_dead_letters(const struct group_state *st,
                        bool (*fn)(void *arg, const struct group_effect *e), void *arg)
{
    for (uint32_t i = 0; i < st->n_groups; i++) {
        const struct group *g = st->groups[i];
        if (g->n_dlq == 0 && st->live)
            continue;
        for (uint32_t ei = 0; ei < g->n_used; ei++) {
            const struct gent *e = &g->ents[ei];
            if (!e->dlq || (e->status != GE_IDLE && e->status != GE_DLQ_WAIT))
                continue;
            const struct gpart *p = &g->parts[e->pidx];
            struct group_effect out = {
                .type = GROUP_EFFECT_DEAD_LETTER,
                .group = g->cfg.name,
                .topic = g->cfg.topics[p->topic].name,
                .dlq_topic = g->cfg.dlq_topic,
                .pidx = e->pidx,
                .partition = p->partition,
                .offset = e->offset,
                .delivery_count = e->logged,
                .error = e->error ? e->error : "",
            };
            if (!fn(arg, &out))
                return;
        }
    }
}
