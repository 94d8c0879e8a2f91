/*
 * group_snap: durable group state <-> bytes (API in group_snap.h).
 *
 * What is durable is listed in group_int.h: per state the last applied seq,
 * the clock and the next group id; per group its config, id, generation,
 * member incarnation, dead-letter count, members (id, name, session), and per
 * partition the floor, logged read cursor, delivery horizon (and the seq that
 * set it), owner and done ranges; per tracked message its logged delivery
 * count, dead-letter flag and (when dead-lettering) error text. Everything
 * volatile (leases, waiting heaps, open batches, sessions' last-seen times)
 * is what replay would leave it: entries IDLE with count == logged, cursor ==
 * cursor_logged, members last seen at the state's clock.
 *
 * Format (little-endian; str = u32 length + bytes, no terminator):
 *
 *   "GSNP" u32 version (1)
 *   u64 seq_applied, i64 now_ms, u32 next_group_id, u32 n_groups
 *   per group (ascending id):
 *     u32 id, str name, u8 mode, u32 n_topics, n_topics x (str name, u32 partitions),
 *     str dlq_topic, i64 lease_ms, i64 session_ms, u32 max_deliveries,
 *     u32 n_backoff, n_backoff x i64, u32 pending_max,
 *     u32 generation, u64 incarnation, u64 dead_lettered,
 *     u32 n_slots, per slot: u64 member id (0 = free) [, str name, i64 session_ms],
 *     per partition (sum of the topics' partitions):
 *       u64 floor, u64 cursor_logged, u64 horizon, u64 horizon_seq, u32 owner slot
 *       (0xffffffff = none), u32 n_done, n_done x (u64 lo, u64 hi)
 *     u32 n_entries, per entry: u32 pidx, u64 offset, u16 logged, u8 dlq [, str error]
 *
 * A snapshot is valid only if every field is within the limits group.h
 * sets, the group ids are unique and below next_group_id, names are unique
 * and non-empty, a member id's low 16 bits are its slot and its high bits
 * at most the incarnation, every owner is a live member (ordered mode) or
 * none (shared mode), done ranges are sorted, disjoint, non-adjacent, above
 * the floor and below cursor_logged, and every entry lies in [floor,
 * cursor_logged), is not done, is unique and has logged >= 1; and no byte is
 * left over. The file around it carries a CRC (storage/snap.h), so these
 * checks guard against a bug or a crafted file, not bit rot.
 */
#include "broker/group/group_snap.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "broker/group/group_int.h"
#include "verity/errors.h"
#include "verity/verify.h"

#define GSNAP_VERSION 1

/* ---- encoding -------------------------------------------------------------------- */

static void enc_config(struct gwriter *b, const struct group_config *c)
{
    gw_str(b, c->name);
    gw_u8(b, (uint8_t)c->mode);
    gw_u32(b, c->n_topics);
    for (uint32_t t = 0; t < c->n_topics; t++) {
        gw_str(b, c->topics[t].name);
        gw_u32(b, c->topics[t].partitions);
    }
    gw_str(b, c->dlq_topic);
    gw_u64(b, (uint64_t)c->lease_ms);
    gw_u64(b, (uint64_t)c->session_ms);
    gw_u32(b, c->max_deliveries);
    gw_u32(b, c->n_backoff);
    for (uint32_t i = 0; i < c->n_backoff; i++)
        gw_u64(b, (uint64_t)c->backoff_ms[i]);
    gw_u32(b, c->pending_max);
}

/* Entries replay would hold: every tracked message whose delivery is in
 * the log (logged >= 1); in a quiescent state those are all tracked ones
 * that are not waiting for their first delivery record. */
static bool ent_durable(const struct gent *e)
{
    return e->status != GE_FREE && e->logged >= 1;
}

static void enc_group(struct gwriter *b, const struct group *g)
{
    gw_u32(b, g->id);
    enc_config(b, &g->cfg);
    gw_u32(b, g->generation);
    gw_u64(b, g->incarnation);
    gw_u64(b, g->dead_lettered);
    gw_u32(b, g->n_slots);
    for (uint32_t s = 0; s < g->n_slots; s++) {
        const struct gmember *m = &g->members[s];
        gw_u64(b, m->id);
        if (m->id) {
            gw_str(b, m->name);
            gw_u64(b, (uint64_t)m->session_ms);
        }
    }
    for (uint32_t i = 0; i < g->n_parts; i++) {
        const struct gpart *p = &g->parts[i];
        gw_u64(b, p->floor);
        gw_u64(b, p->cursor_logged);
        gw_u64(b, p->horizon);
        gw_u64(b, p->horizon_seq);
        gw_u32(b, p->owner);
        gw_u32(b, p->n_done);
        for (uint32_t k = 0; k < p->n_done; k++) {
            gw_u64(b, p->done[k].lo);
            gw_u64(b, p->done[k].hi);
        }
    }
    uint32_t n = 0;
    for (uint32_t ei = 0; ei < g->n_used; ei++)
        n += ent_durable(&g->ents[ei]);
    gw_u32(b, n);
    for (uint32_t ei = 0; ei < g->n_used; ei++) {
        const struct gent *e = &g->ents[ei];
        if (!ent_durable(e))
            continue;
        gw_u32(b, e->pidx);
        gw_u64(b, e->offset);
        gw_u16(b, e->logged);
        gw_u8(b, e->dlq);
        if (e->dlq)
            gw_str(b, e->error);
    }
}

static int gid_cmp(const void *a, const void *b)
{
    uint32_t x = (*(const struct group *const *)a)->id, y = (*(const struct group *const *)b)->id;
    return x < y ? -1 : (x > y);
}

int group_snap_encode(const struct group_state *st, uint8_t **out, size_t *len)
{
    *out = NULL;
    *len = 0;
    /* Only a recovered (live) machine is a whole state: a REPLAY state may
     * be a replay that stopped half-way. */
    if (!st->live || st->open_head || st->rec_read < st->n_recs || st->in_apply)
        return -EAGAIN;
    if (st->live && st->seq_next != st->seq_applied + 1)
        return -EAGAIN; /* a seq is reserved for a record not yet applied */
    struct group **gs = malloc(((size_t)st->n_groups + 1) * sizeof(*gs));
    if (!gs)
        return -ENOMEM;
    if (st->n_groups)
        memcpy(gs, st->groups, st->n_groups * sizeof(*gs));
    qsort(gs, st->n_groups, sizeof(*gs), gid_cmp);
    struct gwriter b = {0};
    gw_bytes(&b, "GSNP", 4);
    gw_u32(&b, GSNAP_VERSION);
    gw_u64(&b, st->seq_applied);
    gw_u64(&b, (uint64_t)st->now_ms);
    gw_u32(&b, st->next_group_id);
    gw_u32(&b, st->n_groups);
    for (uint32_t i = 0; i < st->n_groups; i++) {
        VERITY_VERIFY(gs[i]->batch.seq == 0);
        enc_group(&b, gs[i]);
    }
    free(gs);
    if (b.oom) {
        free(b.p);
        return -ENOMEM;
    }
    *out = b.p;
    *len = b.len;
    return 0;
}

uint64_t group_snap_seq(const struct group_state *st) { return st->seq_applied; }

/* ---- decoding -------------------------------------------------------------------- */

struct rbuf {
    const uint8_t *p, *end;
    bool bad;
};

static bool r_need(struct rbuf *r, size_t n)
{
    if (r->bad || (size_t)(r->end - r->p) < n) {
        r->bad = true;
        return false;
    }
    return true;
}

static uint64_t r_le(struct rbuf *r, int n)
{
    if (!r_need(r, (size_t)n))
        return 0;
    uint64_t v = 0;
    for (int i = 0; i < n; i++)
        v |= (uint64_t)r->p[i] << (8 * i);
    r->p += n;
    return v;
}

static uint8_t r_u8(struct rbuf *r) { return (uint8_t)r_le(r, 1); }
static uint16_t r_u16(struct rbuf *r) { return (uint16_t)r_le(r, 2); }
static uint32_t r_u32(struct rbuf *r) { return (uint32_t)r_le(r, 4); }
static uint64_t r_u64(struct rbuf *r) { return r_le(r, 8); }

/* Copies a str of at most max bytes (no NUL inside) into out[max + 1]. */
static void r_str(struct rbuf *r, char *out, size_t max)
{
    uint32_t n = r_u32(r);
    out[0] = '\0';
    if (r->bad || n > max || !r_need(r, n)) {
        r->bad = true;
        return;
    }
    if (memchr(r->p, '\0', n)) {
        r->bad = true;
        return;
    }
    memcpy(out, r->p, n);
    out[n] = '\0';
    r->p += n;
}

static int dec_config(struct rbuf *r, struct group_config *c)
{
    memset(c, 0, sizeof *c);
    r_str(r, c->name, GROUP_NAME_MAX);
    uint8_t mode = r_u8(r);
    c->n_topics = r_u32(r);
    if (r->bad || !c->name[0] || mode > GROUP_SHARED || c->n_topics == 0 ||
        c->n_topics > GROUP_TOPICS_MAX)
        return VERITY_ECORRUPT;
    c->mode = (enum group_mode)mode;
    uint64_t parts = 0;
    for (uint32_t t = 0; t < c->n_topics; t++) {
        r_str(r, c->topics[t].name, VERITY_TOPIC_NAME_MAX);
        c->topics[t].partitions = r_u32(r);
        if (r->bad || !c->topics[t].name[0] || c->topics[t].partitions == 0 ||
            c->topics[t].partitions > VERITY_PARTITIONS_MAX)
            return VERITY_ECORRUPT;
        parts += c->topics[t].partitions;
    }
    r_str(r, c->dlq_topic, VERITY_TOPIC_NAME_MAX);
    c->lease_ms = (int64_t)r_u64(r);
    c->session_ms = (int64_t)r_u64(r);
    c->max_deliveries = r_u32(r);
    c->n_backoff = r_u32(r);
    if (r->bad || parts > GROUP_PARTITIONS_MAX || !c->dlq_topic[0] || c->lease_ms <= 0 ||
        c->lease_ms > GROUP_DELAY_MS_MAX || c->session_ms <= 0 || c->max_deliveries == 0 ||
        c->max_deliveries > GROUP_DELIVERIES_HARD || c->n_backoff > GROUP_BACKOFF_STEPS_MAX)
        return VERITY_ECORRUPT;
    for (uint32_t i = 0; i < c->n_backoff; i++) {
        c->backoff_ms[i] = (int64_t)r_u64(r);
        if (c->backoff_ms[i] < 0 || c->backoff_ms[i] > GROUP_DELAY_MS_MAX)
            return VERITY_ECORRUPT;
    }
    c->pending_max = r_u32(r);
    if (r->bad || c->pending_max == 0 || c->pending_max > VERITY_PENDING_PER_GROUP_MAX)
        return VERITY_ECORRUPT;
    return 0;
}

/* A new group with its config and partitions laid out as apply_create does. */
static int group_alloc(const struct group_state *st, const struct group_config *c, uint32_t id,
                       struct group **out)
{
    struct group *g = calloc(1, sizeof(*g));
    if (!g)
        return -ENOMEM;
    g->cfg = *c;
    g->id = id;
    g->pending_max = c->pending_max < st->pending_cap ? c->pending_max : st->pending_cap;
    g->free_head = GNIL;
    g->lease_head = g->lease_tail = GNIL;
    uint32_t base = 0;
    for (uint32_t t = 0; t < c->n_topics; t++) {
        g->topic_base[t] = base;
        base += c->topics[t].partitions;
    }
    g->topic_base[c->n_topics] = base;
    g->n_parts = base;
    g->parts = calloc(base, sizeof(*g->parts));
    g->chk = calloc(base, sizeof(*g->chk));
    if (!g->parts || !g->chk) {
        gst_group_free(g);
        return -ENOMEM;
    }
    for (uint32_t t = 0; t < c->n_topics; t++)
        for (uint32_t k = 0; k < c->topics[t].partitions; k++) {
            struct gpart *p = &g->parts[g->topic_base[t] + k];
            p->topic = t;
            p->partition = k;
            p->owner = GNIL;
        }
    *out = g;
    return 0;
}

static int dec_members(struct rbuf *r, struct group *g)
{
    uint32_t n_slots = r_u32(r);
    if (r->bad || n_slots > GROUP_MEMBERS_MAX)
        return VERITY_ECORRUPT;
    if (n_slots) {
        g->members = calloc(n_slots, sizeof(*g->members));
        if (!g->members)
            return -ENOMEM;
    }
    g->cap_slots = g->n_slots = n_slots;
    for (uint32_t s = 0; s < n_slots; s++) {
        struct gmember *m = &g->members[s];
        uint64_t id = r_u64(r);
        if (r->bad)
            return VERITY_ECORRUPT;
        if (!id)
            continue;
        char name[GROUP_MEMBER_NAME_MAX + 1];
        r_str(r, name, GROUP_MEMBER_NAME_MAX);
        int64_t session = (int64_t)r_u64(r);
        if (r->bad || (id & 0xffff) != s || (id >> 16) == 0 || (id >> 16) > g->incarnation ||
            session <= 0)
            return VERITY_ECORRUPT;
        if (!(m->name = strdup(name)))
            return -ENOMEM;
        m->id = id;
        m->session_ms = session;
        g->n_members++;
    }
    return 0;
}

static int dec_parts(const struct group_state *st, struct rbuf *r, struct group *g,
                     uint64_t seq_applied)
{
    for (uint32_t i = 0; i < g->n_parts; i++) {
        struct gpart *p = &g->parts[i];
        p->floor = r_u64(r);
        p->cursor_logged = p->cursor = r_u64(r);
        p->horizon = r_u64(r);
        p->horizon_seq = r_u64(r);
        p->owner = r_u32(r);
        uint32_t n_done = r_u32(r);
        if (r->bad || p->floor > p->cursor_logged || p->cursor_logged >= GROUP_OFFSET_LIMIT ||
            p->horizon >= GROUP_OFFSET_LIMIT || p->horizon_seq > seq_applied)
            return VERITY_ECORRUPT;
        if (p->owner != GNIL &&
            (g->cfg.mode != GROUP_ORDERED || p->owner >= g->n_slots || !g->members[p->owner].id))
            return VERITY_ECORRUPT;
        if ((uint64_t)n_done * 16 > (uint64_t)(r->end - r->p))
            return VERITY_ECORRUPT;
        int rc = gdone_reserve(p, n_done);
        if (rc)
            return rc;
        uint64_t prev = p->floor;
        for (uint32_t k = 0; k < n_done; k++) {
            uint64_t lo = r_u64(r), hi = r_u64(r);
            if (r->bad || lo <= prev || lo >= hi || hi > p->cursor_logged)
                return VERITY_ECORRUPT;
            p->done[k].lo = lo;
            p->done[k].hi = hi;
            p->done_count += hi - lo;
            prev = hi;
        }
        p->n_done = n_done;
    }
    (void)st;
    return 0;
}

/* members[].parts from the owners, ascending (as gassign_rebalance leaves
 * them). */
static int derive_parts(struct group *g)
{
    if (g->cfg.mode != GROUP_ORDERED || g->n_members == 0)
        return 0;
    int rc = gassign_reserve(g, g->n_members);
    if (rc)
        return rc;
    for (uint32_t s = 0; s < g->n_slots; s++)
        g->members[s].n_parts = 0;
    for (uint32_t p = 0; p < g->n_parts; p++) {
        uint32_t o = g->parts[p].owner;
        if (o == GNIL)
            continue;
        struct gmember *m = &g->members[o];
        if (m->n_parts == m->cap_parts) {
            uint32_t cap = m->cap_parts ? 2 * m->cap_parts : 8;
            uint32_t *np = realloc(m->parts, cap * sizeof(*np));
            if (!np)
                return -ENOMEM;
            m->parts = np;
            m->cap_parts = cap;
        }
        m->parts[m->n_parts++] = p;
    }
    return 0;
}

static int dec_entries(struct rbuf *r, struct group *g)
{
    uint32_t n = r_u32(r);
    if (r->bad || n > VERITY_PENDING_PER_GROUP_MAX || (uint64_t)n * 15 > (uint64_t)(r->end - r->p))
        return VERITY_ECORRUPT;
    int rc = gent_reserve(g, n);
    if (rc)
        return rc;
    for (uint32_t i = 0; i < n; i++) {
        uint32_t pidx = r_u32(r);
        uint64_t offset = r_u64(r);
        uint16_t logged = r_u16(r);
        uint8_t dlq = r_u8(r);
        if (r->bad || pidx >= g->n_parts || logged == 0 || logged > GROUP_DELIVERIES_HARD ||
            dlq > 1)
            return VERITY_ECORRUPT;
        const struct gpart *p = &g->parts[pidx];
        if (offset < p->floor || offset >= p->cursor_logged || gdone_has(p, offset) ||
            gent_find(g, pidx, offset) != GNIL)
            return VERITY_ECORRUPT;
        uint32_t ei = gent_alloc(g, pidx, offset);
        struct gent *e = &g->ents[ei];
        e->logged = e->count = logged;
        e->dlq = dlq;
        if (dlq) {
            char err[GROUP_ERROR_MAX + 1];
            r_str(r, err, GROUP_ERROR_MAX);
            if (r->bad)
                return VERITY_ECORRUPT;
            gent_set_error(e, err, strlen(err));
        }
        VERITY_VERIFY(e->status == GE_IDLE);
    }
    return 0;
}

static int dec_group(struct group_state *st, struct rbuf *r, uint64_t seq_applied)
{
    struct group_config *c = malloc(sizeof *c);
    struct group *g = NULL;
    if (!c)
        return -ENOMEM;
    uint32_t id = r_u32(r);
    int rc = dec_config(r, c);
    if (rc == 0 && (id == 0 || id >= st->next_group_id || gst_find_id(st, id) ||
                    gst_find(st, c->name)))
        rc = VERITY_ECORRUPT;
    if (rc == 0)
        rc = group_alloc(st, c, id, &g);
    free(c);
    if (rc)
        return rc;
    g->generation = r_u32(r);
    g->incarnation = r_u64(r);
    g->dead_lettered = r_u64(r);
    if (r->bad || g->incarnation >= (1ull << 47))
        rc = VERITY_ECORRUPT;
    if (rc == 0)
        rc = dec_members(r, g);
    if (rc == 0)
        rc = dec_parts(st, r, g, seq_applied);
    if (rc == 0)
        rc = derive_parts(g);
    if (rc == 0)
        rc = dec_entries(r, g);
    if (rc == 0 && st->n_groups == st->cap_groups) {
        uint32_t cap = st->cap_groups ? 2 * st->cap_groups : 8;
        struct group **gs = realloc(st->groups, cap * sizeof(*gs));
        if (!gs)
            rc = -ENOMEM;
        else {
            st->groups = gs;
            st->cap_groups = cap;
        }
    }
    if (rc == 0) {
        st->groups[st->n_groups++] = g;
        if ((rc = gst_index_rebuild(st)))
            st->n_groups--;
    }
    if (rc)
        gst_group_free(g);
    return rc;
}

int group_snap_load(struct group_state *st, const uint8_t *buf, size_t len)
{
    VERITY_VERIFY(!st->live && st->n_groups == 0 && st->seq_applied == 0);
    struct rbuf r = {buf, buf + len, false};
    if (len < 8 || memcmp(buf, "GSNP", 4) != 0)
        return VERITY_ECORRUPT;
    r.p += 4;
    if (r_u32(&r) != GSNAP_VERSION)
        return VERITY_EVERSION;
    uint64_t seq = r_u64(&r);
    int64_t now = (int64_t)r_u64(&r);
    uint32_t next_id = r_u32(&r);
    uint32_t n = r_u32(&r);
    if (r.bad || n > GROUP_GROUPS_MAX || next_id == 0)
        return VERITY_ECORRUPT;
    st->next_group_id = next_id;
    for (uint32_t i = 0; i < n; i++) {
        int rc = dec_group(st, &r, seq);
        if (rc)
            return rc;
    }
    if (r.bad || r.p != r.end)
        return VERITY_ECORRUPT;
    st->seq_applied = seq;
    st->seq_next = seq + 1;
    st->now_ms = now;
    for (uint32_t i = 0; i < st->n_groups; i++) {
        struct group *g = st->groups[i];
        for (uint32_t s = 0; s < g->n_slots; s++)
            if (g->members[s].id)
                g->members[s].last_seen_ms = now;
    }
    return 0;
}
