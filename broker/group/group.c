/*
 * group: the consumer-group state machine's frame: the state object, group
 * lookup, the record and effect outboxes, progress batches, and the
 * administration and membership commands. Delivery commands live in
 * group_deliver.c, record application in group_apply.c, assignment in
 * group_assign.c, queries in group_query.c, the byte format in
 * group_codec.c. docs/GROUPS.md is the overview.
 *
 * Invariants:
 *   - records leave in seq order: an immediate record (CREATE, DELETE, JOIN,
 *     LEAVE, RESET) first emits every open progress record, and open
 *     progress records are emitted oldest seq first (open_head..open_tail);
 *   - every emitted record has been applied to this state through
 *     gapply_record, the same code replay runs (seq_applied == last seq);
 *   - apply never opens a progress batch (in_apply guards it), so applying
 *     a record cannot emit another one.
 *
 * Memory: allocation failure inside apply or while emitting aborts through
 * VERITY_VERIFY: the in-memory state would otherwise diverge from the log.
 * Commands reserve their hot-path memory first and return -ENOMEM with the
 * state unchanged.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "broker/group/group_int.h"
#include "verity/errors.h"
#include "verity/verify.h"

/* ---- small helpers ---------------------------------------------------------- */

static void *grow_or_die(void *p, size_t *cap, size_t need, size_t elem, size_t first)
{
    if (need <= *cap)
        return p;
    size_t c = *cap ? *cap : first;
    while (c < need)
        c *= 2;
    void *q = realloc(p, c * elem);
    VERITY_VERIFY(q != NULL);
    *cap = c;
    return q;
}

static int grow(void **p, size_t *cap, size_t need, size_t elem, size_t first)
{
    if (need <= *cap)
        return 0;
    size_t c = *cap ? *cap : first;
    while (c < need)
        c *= 2;
    void *q = realloc(*p, c * elem);
    if (!q)
        return -ENOMEM;
    *p = q;
    *cap = c;
    return 0;
}

static uint32_t name_hash(const char *s)
{
    uint32_t h = 2166136261u;
    for (; *s; s++)
        h = (h ^ (uint8_t)*s) * 16777619u;
    return h;
}

/* True when the fixed-size field holds a NUL-terminated string. */
static bool str_ok(const char *s, size_t size)
{
    return memchr(s, 0, size) != NULL;
}

int64_t gst_clock(struct group_state *st, int64_t now_ms)
{
    /* Clamped so that now + any delay or session never overflows. */
    const int64_t lim = INT64_C(1) << 62;
    if (now_ms > lim)
        now_ms = lim;
    if (now_ms < -lim)
        now_ms = -lim;
    if (now_ms > st->now_ms)
        st->now_ms = now_ms;
    return st->now_ms;
}

void group_config_default(struct group_config *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    cfg->mode = GROUP_ORDERED;
    cfg->lease_ms = GROUP_LEASE_MS_DEFAULT;
    cfg->session_ms = GROUP_SESSION_MS_DEFAULT;
    cfg->max_deliveries = GROUP_MAX_DELIVERIES_DEFAULT;
    cfg->n_backoff = 3;
    cfg->backoff_ms[0] = 1000;
    cfg->backoff_ms[1] = 5000;
    cfg->backoff_ms[2] = 30000;
    cfg->pending_max = VERITY_PENDING_PER_GROUP_MAX;
}

/* ---- state ------------------------------------------------------------------ */

int group_state_new(uint32_t pending_max, struct group_state **out)
{
    *out = NULL;
    if (pending_max > VERITY_PENDING_PER_GROUP_MAX)
        return VERITY_EINVAL;
    struct group_state *st = calloc(1, sizeof(*st));
    if (!st)
        return -ENOMEM;
    st->pending_cap = pending_max ? pending_max : VERITY_PENDING_PER_GROUP_MAX;
    st->now_ms = INT64_MIN;
    st->seq_next = 1;
    st->next_group_id = 1;
    *out = st;
    return 0;
}

void gst_group_free(struct group *g)
{
    if (!g)
        return;
    for (uint32_t i = 0; i < g->n_used; i++)
        if (g->ents[i].status != GE_FREE)
            free(g->ents[i].error);
    for (uint32_t i = 0; i < g->n_parts; i++) {
        free(g->parts[i].done);
        free(g->parts[i].heap);
    }
    for (uint32_t i = 0; i < g->cap_slots; i++) {
        free(g->members[i].name);
        free(g->members[i].parts);
    }
    struct gbatch *b = &g->batch;
    free(b->deliv);
    free(b->redeliv);
    free(b->decide);
    free(b->ack);
    free(b->done);
    free(b->horizon);
    free(b->text);
    free(g->parts);
    free(g->members);
    free(g->ents);
    free(g->hkeys);
    free(g->hvals);
    free(g->chk);
    free(g);
}

void group_state_free(struct group_state *st)
{
    if (!st)
        return;
    for (uint32_t i = 0; i < st->n_groups; i++)
        gst_group_free(st->groups[i]);
    free(st->groups);
    free(st->by_name);
    free(st->by_id);
    free(st->rbuf);
    free(st->recs);
    free(st->effs);
    free(st->earena);
    free(st->enc.p);
    free(st);
}

int gst_index_rebuild(struct group_state *st)
{
    uint32_t cap = 16;
    while (cap < 2 * st->n_groups)
        cap *= 2;
    struct group **bn = calloc(cap, sizeof(*bn));
    struct group **bi = calloc(cap, sizeof(*bi));
    if (!bn || !bi) {
        free(bn);
        free(bi);
        return -ENOMEM;
    }
    for (uint32_t i = 0; i < st->n_groups; i++) {
        struct group *g = st->groups[i];
        uint32_t h = name_hash(g->cfg.name) & (cap - 1);
        while (bn[h])
            h = (h + 1) & (cap - 1);
        bn[h] = g;
        h = (g->id * 2654435761u) & (cap - 1);
        while (bi[h])
            h = (h + 1) & (cap - 1);
        bi[h] = g;
    }
    free(st->by_name);
    free(st->by_id);
    st->by_name = bn;
    st->by_id = bi;
    st->hash_cap = cap;
    return 0;
}

struct group *gst_find(const struct group_state *st, const char *name)
{
    if (!name || !st->hash_cap)
        return NULL;
    uint32_t mask = st->hash_cap - 1;
    for (uint32_t h = name_hash(name) & mask; st->by_name[h]; h = (h + 1) & mask)
        if (strcmp(st->by_name[h]->cfg.name, name) == 0)
            return st->by_name[h];
    return NULL;
}

struct group *gst_find_id(const struct group_state *st, uint32_t id)
{
    if (!st->hash_cap)
        return NULL;
    uint32_t mask = st->hash_cap - 1;
    for (uint32_t h = (id * 2654435761u) & mask; st->by_id[h]; h = (h + 1) & mask)
        if (st->by_id[h]->id == id)
            return st->by_id[h];
    return NULL;
}

struct gmember *gmember_find(struct group *g, uint64_t member_id)
{
    uint32_t slot = (uint32_t)(member_id & 0xffff);
    if (member_id == 0 || slot >= g->n_slots || g->members[slot].id != member_id)
        return NULL;
    return &g->members[slot];
}

const struct gmember *gmember_find_c(const struct group *g, uint64_t member_id)
{
    return gmember_find((struct group *)g, member_id);
}

void gmember_touch(struct gmember *m, int64_t now_ms)
{
    if (now_ms > m->last_seen_ms)
        m->last_seen_ms = now_ms;
}

/* ---- outboxes ------------------------------------------------------------------ */

/* Appends the encoded record in st->enc to the outbox, then applies it. */
static void emit(struct group_state *st)
{
    if (st->rec_read == st->n_recs) {
        st->rlen = 0;
        st->n_recs = 0;
        st->rec_read = 0;
    }
    size_t len = st->enc.len;
    st->rbuf = grow_or_die(st->rbuf, &st->rcap, st->rlen + len, 1, 4096);
    st->recs = grow_or_die(st->recs, &st->cap_recs, st->n_recs + 1, sizeof(*st->recs), 16);
    memcpy(st->rbuf + st->rlen, st->enc.p, len);
    enum group_rec_type type;
    uint64_t seq;
    uint32_t gid;
    VERITY_VERIFY(group_record_peek(st->enc.p, len, &type, &seq, &gid) == 0);
    st->recs[st->n_recs++] = (struct grec_bytes){.off = st->rlen, .len = len, .seq = seq};
    st->rlen += len;
    int rc = gapply_record(st, st->enc.p, len);
    VERITY_VERIFY(rc == 0);
}

bool group_next_record(struct group_state *st, const uint8_t **rec, size_t *len, uint64_t *seq)
{
    if (st->rec_read == st->n_recs)
        return false;
    const struct grec_bytes *r = &st->recs[st->rec_read++];
    *rec = st->rbuf + r->off;
    *len = r->len;
    *seq = r->seq;
    return true;
}

static size_t arena_put(struct group_state *st, const char *s)
{
    size_t n = s ? strlen(s) : 0;
    st->earena = grow_or_die(st->earena, &st->ecap, st->elen + n + 1, 1, 1024);
    size_t off = st->elen;
    if (n)
        memcpy(st->earena + off, s, n);
    st->earena[off + n] = 0;
    st->elen += n + 1;
    return off;
}

static struct geffect *effect_push(struct group_state *st, const struct group *g,
                                   enum group_effect_type type)
{
    if (st->eff_read == st->n_effs) {
        st->n_effs = 0;
        st->eff_read = 0;
        st->elen = 0;
    }
    st->effs = grow_or_die(st->effs, &st->cap_effs, st->n_effs + 1, sizeof(*st->effs), 16);
    struct geffect *e = &st->effs[st->n_effs++];
    memset(e, 0, sizeof(*e));
    e->type = type;
    e->group_off = arena_put(st, g->cfg.name);
    e->topic_off = e->dlq_off = e->err_off = arena_put(st, "");
    return e;
}

void gst_effect_dead_letter(struct group_state *st, const struct group *g, const struct gent *en)
{
    struct geffect *e = effect_push(st, g, GROUP_EFFECT_DEAD_LETTER);
    const struct gpart *p = &g->parts[en->pidx];
    e->pidx = en->pidx;
    e->partition = p->partition;
    e->offset = en->offset;
    e->count = en->count;
    e->member_id = en->member_id;
    e->topic_off = arena_put(st, g->cfg.topics[p->topic].name);
    e->dlq_off = arena_put(st, g->cfg.dlq_topic);
    e->err_off = arena_put(st, en->error);
    /* decided now: the open batch logs it; replayed: logged already */
    e->seq = en->dlq ? 0 : g->batch.seq;
}

static void effect_member_removed(struct group_state *st, const struct group *g, uint64_t id,
                                  bool timed_out)
{
    struct geffect *e = effect_push(st, g, GROUP_EFFECT_MEMBER_REMOVED);
    e->member_id = id;
    e->timed_out = timed_out;
}

bool group_next_effect(struct group_state *st, struct group_effect *out)
{
    if (st->eff_read == st->n_effs)
        return false;
    const struct geffect *e = &st->effs[st->eff_read++];
    memset(out, 0, sizeof(*out));
    out->type = e->type;
    out->group = st->earena + e->group_off;
    out->topic = st->earena + e->topic_off;
    out->dlq_topic = st->earena + e->dlq_off;
    out->error = st->earena + e->err_off;
    out->pidx = e->pidx;
    out->partition = e->partition;
    out->offset = e->offset;
    out->delivery_count = e->count;
    out->member_id = e->member_id;
    out->timed_out = e->timed_out;
    out->seq = e->seq;
    return true;
}

/* ---- progress batches ------------------------------------------------------------ */

uint64_t gbatch_open(struct group_state *st, struct group *g)
{
    VERITY_VERIFY(st->live && !st->in_apply);
    struct gbatch *b = &g->batch;
    if (b->seq)
        return b->seq;
    b->seq = st->seq_next++;
    b->prev = st->open_tail;
    b->next = NULL;
    if (st->open_tail)
        st->open_tail->batch.next = g;
    else
        st->open_head = g;
    st->open_tail = g;
    return b->seq;
}

int gbatch_reserve(struct group *g, size_t deliv, size_t redeliv, size_t ack)
{
    struct gbatch *b = &g->batch;
    int rc = grow((void **)&b->deliv, &b->cap_deliv, b->n_deliv + deliv, sizeof(*b->deliv), 16);
    if (!rc)
        rc = grow((void **)&b->redeliv, &b->cap_redeliv, b->n_redeliv + redeliv,
                  sizeof(*b->redeliv), 16);
    if (!rc)
        rc = grow((void **)&b->ack, &b->cap_ack, b->n_ack + ack, sizeof(*b->ack), 64);
    return rc;
}

static void batch_item(struct group_state *st, struct gbatch *b, size_t bytes)
{
    b->items++;
    b->bytes += bytes;
    st->open_items++;
}

void gbatch_deliv(struct group_state *st, struct group *g, uint32_t pidx, uint64_t offset)
{
    gbatch_open(st, g);
    struct gbatch *b = &g->batch;
    struct gpart *p = &g->parts[pidx];
    if (p->batch_deliv) {
        struct gdeliv *d = &b->deliv[p->batch_deliv - 1];
        VERITY_VERIFY(d->pidx == pidx && d->hi == offset);
        d->hi++;
        return;
    }
    b->deliv = grow_or_die(b->deliv, &b->cap_deliv, b->n_deliv + 1, sizeof(*b->deliv), 16);
    b->deliv[b->n_deliv++] = (struct gdeliv){.pidx = pidx, .lo = offset, .hi = offset + 1};
    p->batch_deliv = (uint32_t)b->n_deliv;
    batch_item(st, b, 30);
}

void gbatch_redeliv(struct group_state *st, struct group *g, uint32_t pidx, uint64_t offset,
                    uint16_t count)
{
    gbatch_open(st, g);
    struct gbatch *b = &g->batch;
    b->redeliv = grow_or_die(b->redeliv, &b->cap_redeliv, b->n_redeliv + 1, sizeof(*b->redeliv), 16);
    b->redeliv[b->n_redeliv++] = (struct gredeliv){.pidx = pidx, .offset = offset, .count = count};
    batch_item(st, b, 30);
}

void gbatch_ack(struct group_state *st, struct group *g, uint32_t pidx, uint64_t lo, uint64_t hi)
{
    gbatch_open(st, g);
    struct gbatch *b = &g->batch;
    if (b->n_ack && b->ack[b->n_ack - 1].pidx == pidx && b->ack[b->n_ack - 1].hi == lo) {
        b->ack[b->n_ack - 1].hi = hi;
        return;
    }
    b->ack = grow_or_die(b->ack, &b->cap_ack, b->n_ack + 1, sizeof(*b->ack), 64);
    b->ack[b->n_ack++] = (struct gack){.pidx = pidx, .lo = lo, .hi = hi};
    batch_item(st, b, 30);
}

void gbatch_done(struct group_state *st, struct group *g, uint32_t pidx, uint64_t offset)
{
    gbatch_open(st, g);
    struct gbatch *b = &g->batch;
    b->done = grow_or_die(b->done, &b->cap_done, b->n_done + 1, sizeof(*b->done), 16);
    b->done[b->n_done++] = (struct gdone){.pidx = pidx, .offset = offset};
    batch_item(st, b, 20);
}

int group_horizon(struct group_state *st, const char *name, uint32_t pidx, uint64_t end_offset,
                  int64_t now_ms)
{
    if (!st->live)
        return VERITY_EINVAL;
    struct group *g = gst_find(st, name);
    if (!g)
        return VERITY_ENOTFOUND;
    if (pidx >= g->n_parts)
        return VERITY_EINVAL;
    if (end_offset >= GROUP_OFFSET_LIMIT)
        return VERITY_EOFFSET;
    if (g->cfg.max_deliveries < 2)
        return 0;
    struct gpart *p = &g->parts[pidx];
    struct gbatch *b = &g->batch;
    uint64_t have = p->batch_horizon ? b->horizon[p->batch_horizon - 1].offset : p->horizon;
    if (have >= end_offset + GROUP_HORIZON_AHEAD / 2)
        return 0; /* enough lead left */
    uint64_t h = p->cursor + GROUP_HORIZON_AHEAD;
    if (h > end_offset + GROUP_HORIZON_AHEAD)
        h = end_offset + GROUP_HORIZON_AHEAD;
    if (h >= GROUP_OFFSET_LIMIT)
        h = GROUP_OFFSET_LIMIT - 1;
    if (h <= have)
        return 0;
    if (p->batch_horizon) {
        b->horizon[p->batch_horizon - 1].offset = h;
        return 0;
    }
    int rc = grow((void **)&b->horizon, &b->cap_horizon, b->n_horizon + 1, sizeof(*b->horizon), 16);
    if (rc)
        return rc;
    gbatch_open(st, g);
    b->horizon[b->n_horizon++] = (struct ghorizon){.pidx = pidx, .offset = h};
    p->batch_horizon = (uint32_t)b->n_horizon;
    batch_item(st, b, 20);
    gbatch_maybe_emit(st, g, gst_clock(st, now_ms));
    return 0;
}

static void batch_emit(struct group_state *st, struct group *g, int64_t now_ms)
{
    struct gbatch *b = &g->batch;
    VERITY_VERIFY(b->seq && st->open_head == g);
    VERITY_VERIFY(gcodec_progress(&st->enc, b->seq, g->id, now_ms, b) == 0);
    st->open_head = b->next;
    if (st->open_head)
        st->open_head->batch.prev = NULL;
    else
        st->open_tail = NULL;
    for (size_t i = 0; i < b->n_deliv; i++)
        g->parts[b->deliv[i].pidx].batch_deliv = 0;
    for (size_t i = 0; i < b->n_horizon; i++)
        g->parts[b->horizon[i].pidx].batch_horizon = 0;
    st->open_items -= b->items;
    b->seq = 0;
    b->prev = b->next = NULL;
    b->n_deliv = b->n_redeliv = b->n_decide = b->n_ack = b->n_done = b->n_text = 0;
    b->n_horizon = 0;
    b->items = b->bytes = 0;
    emit(st);
}

void gst_emit_open(struct group_state *st, uint64_t upto, int64_t now_ms)
{
    while (st->open_head && st->open_head->batch.seq <= upto)
        batch_emit(st, st->open_head, now_ms);
}

void gbatch_maybe_emit(struct group_state *st, struct group *g, int64_t now_ms)
{
    const struct gbatch *b = &g->batch;
    if (b->seq && (b->items >= GROUP_BATCH_ITEMS_MAX || b->bytes >= GROUP_BATCH_BYTES_MAX))
        gst_emit_open(st, b->seq, now_ms);
}

uint64_t gst_ticket(const struct group_state *st, const struct group *g)
{
    return g->batch.seq ? g->batch.seq : st->seq_next - 1;
}

void group_flush(struct group_state *st, int64_t now_ms)
{
    if (!st->live)
        return;
    gst_emit_open(st, UINT64_MAX, gst_clock(st, now_ms));
}

size_t group_batch_items(const struct group_state *st)
{
    return st->open_items;
}

uint64_t group_last_seq(const struct group_state *st)
{
    return st->seq_applied;
}

/* Starts an immediate record: emits every open batch, then hands out a seq. */
static uint64_t immediate_seq(struct group_state *st, int64_t now_ms)
{
    gst_emit_open(st, UINT64_MAX, now_ms);
    return st->seq_next++;
}

/* ---- administration ------------------------------------------------------------------ */

/* Validates *in and writes its normalized form to *c: defaults filled in
 * (dlq topic, pending_max) and every unused byte zero, so equal configs
 * encode and compare equal. */
static int config_check(const struct group_state *st, const struct group_config *in,
                        struct group_config *c)
{
    memset(c, 0, sizeof(*c));
    if (!str_ok(in->name, sizeof(in->name)) || !in->name[0] ||
        (unsigned)in->mode > GROUP_SHARED || in->n_topics == 0 ||
        in->n_topics > GROUP_TOPICS_MAX || !str_ok(in->dlq_topic, sizeof(in->dlq_topic)))
        return VERITY_EINVAL;
    uint64_t total = 0;
    for (uint32_t i = 0; i < in->n_topics; i++) {
        const struct group_topic *t = &in->topics[i];
        if (!str_ok(t->name, sizeof(t->name)) || !t->name[0] || t->partitions == 0 ||
            t->partitions > VERITY_PARTITIONS_MAX)
            return VERITY_EINVAL;
        for (uint32_t j = 0; j < i; j++)
            if (strcmp(in->topics[j].name, t->name) == 0)
                return VERITY_EINVAL;
        total += t->partitions;
        strcpy(c->topics[i].name, t->name);
        c->topics[i].partitions = t->partitions;
    }
    if (total > GROUP_PARTITIONS_MAX)
        return VERITY_ELIMIT;
    if (in->lease_ms <= 0 || in->lease_ms > GROUP_DELAY_MS_MAX || in->session_ms <= 0 ||
        in->session_ms > GROUP_DELAY_MS_MAX || in->max_deliveries == 0 ||
        in->max_deliveries > GROUP_DELIVERIES_HARD || in->n_backoff > GROUP_BACKOFF_STEPS_MAX)
        return VERITY_EINVAL;
    for (uint32_t i = 0; i < in->n_backoff; i++) {
        if (in->backoff_ms[i] < 0 || in->backoff_ms[i] > GROUP_DELAY_MS_MAX)
            return VERITY_EINVAL;
        c->backoff_ms[i] = in->backoff_ms[i];
    }
    if (in->dlq_topic[0]) {
        strcpy(c->dlq_topic, in->dlq_topic);
    } else {
        size_t n = strlen(in->topics[0].name);
        if (n + 4 > VERITY_TOPIC_NAME_MAX)
            return VERITY_EINVAL;
        memcpy(c->dlq_topic, in->topics[0].name, n);
        memcpy(c->dlq_topic + n, ".dlq", 5);
    }
    strcpy(c->name, in->name);
    c->mode = in->mode;
    c->n_topics = in->n_topics;
    c->lease_ms = in->lease_ms;
    c->session_ms = in->session_ms;
    c->max_deliveries = in->max_deliveries;
    c->n_backoff = in->n_backoff;
    c->pending_max = in->pending_max;
    if (c->pending_max == 0 || c->pending_max > st->pending_cap)
        c->pending_max = st->pending_cap;
    return 0;
}

int group_create(struct group_state *st, const struct group_config *cfg, const uint64_t *start,
                 size_t n_start, int64_t now_ms, uint64_t *ticket)
{
    *ticket = 0;
    if (!st->live || !cfg)
        return VERITY_EINVAL;
    struct group_config c;
    int rc = config_check(st, cfg, &c);
    if (rc)
        return rc;
    uint64_t total = 0;
    for (uint32_t i = 0; i < c.n_topics; i++)
        total += c.topics[i].partitions;
    if (n_start != total || !start)
        return VERITY_EINVAL;
    for (size_t i = 0; i < n_start; i++)
        if (start[i] >= GROUP_OFFSET_LIMIT)
            return VERITY_EOFFSET;
    if (gst_find(st, c.name))
        return VERITY_EEXIST;
    if (st->n_groups >= GROUP_GROUPS_MAX)
        return VERITY_ELIMIT;
    int64_t now = gst_clock(st, now_ms);
    uint64_t seq = immediate_seq(st, now);
    VERITY_VERIFY(gcodec_create(&st->enc, seq, st->next_group_id, now, &c, start,
                                (uint32_t)n_start) == 0);
    emit(st);
    *ticket = seq;
    return 0;
}

int group_delete(struct group_state *st, const char *name, int64_t now_ms, uint64_t *ticket)
{
    *ticket = 0;
    if (!st->live)
        return VERITY_EINVAL;
    struct group *g = gst_find(st, name);
    if (!g)
        return VERITY_ENOTFOUND;
    int64_t now = gst_clock(st, now_ms);
    uint64_t seq = immediate_seq(st, now);
    VERITY_VERIFY(gcodec_simple(&st->enc, GROUP_REC_DELETE, seq, g->id, now) == 0);
    emit(st);
    *ticket = seq;
    return 0;
}

int group_reset(struct group_state *st, const char *name, const uint64_t *offsets, size_t n,
                int64_t now_ms, uint64_t *ticket)
{
    *ticket = 0;
    if (!st->live)
        return VERITY_EINVAL;
    struct group *g = gst_find(st, name);
    if (!g)
        return VERITY_ENOTFOUND;
    if (n != g->n_parts || !offsets)
        return VERITY_EINVAL;
    for (size_t i = 0; i < n; i++)
        if (offsets[i] >= GROUP_OFFSET_LIMIT)
            return VERITY_EOFFSET;
    int64_t now = gst_clock(st, now_ms);
    uint64_t seq = immediate_seq(st, now);
    VERITY_VERIFY(gcodec_reset(&st->enc, seq, g->id, now, offsets, (uint32_t)n) == 0);
    emit(st);
    *ticket = seq;
    return 0;
}

/* ---- membership ------------------------------------------------------------------------ */

int group_join(struct group_state *st, const char *name, const char *member_name,
               const char *const *topics, size_t n_topics, int64_t session_ms, int64_t now_ms,
               uint64_t *member_id, uint64_t *ticket)
{
    *ticket = 0;
    *member_id = 0;
    if (!st->live)
        return VERITY_EINVAL;
    struct group *g = gst_find(st, name);
    if (!g)
        return VERITY_ENOTFOUND;
    if (!member_name)
        member_name = "";
    if (strnlen(member_name, GROUP_MEMBER_NAME_MAX + 1) > GROUP_MEMBER_NAME_MAX)
        return VERITY_EINVAL;
    if (n_topics == 0 || !topics)
        return VERITY_EINVAL;
    for (size_t i = 0; i < n_topics; i++) {
        bool found = false;
        for (uint32_t t = 0; t < g->cfg.n_topics && topics[i] && !found; t++)
            found = strcmp(g->cfg.topics[t].name, topics[i]) == 0;
        if (!found)
            return VERITY_EINVAL;
    }
    if (session_ms == 0)
        session_ms = g->cfg.session_ms;
    if (session_ms < 0 || session_ms > GROUP_DELAY_MS_MAX)
        return VERITY_EINVAL;
    if (g->n_members >= GROUP_MEMBERS_MAX)
        return VERITY_ELIMIT;
    uint32_t slot = 0;
    while (slot < g->n_slots && g->members[slot].id)
        slot++;
    uint64_t id = ((g->incarnation + 1) << 16) | slot;
    int64_t now = gst_clock(st, now_ms);
    uint64_t seq = immediate_seq(st, now);
    VERITY_VERIFY(gcodec_join(&st->enc, seq, g->id, now, id, session_ms, member_name) == 0);
    emit(st);
    *member_id = id;
    *ticket = seq;
    return 0;
}

int group_heartbeat(struct group_state *st, const char *name, uint64_t member_id, int64_t now_ms)
{
    if (!st->live)
        return VERITY_EINVAL;
    struct group *g = gst_find(st, name);
    if (!g)
        return VERITY_ENOTFOUND;
    struct gmember *m = gmember_find(g, member_id);
    if (!m)
        return VERITY_EMEMBER;
    gmember_touch(m, gst_clock(st, now_ms));
    return 0;
}

static void leave(struct group_state *st, struct group *g, uint64_t member_id, bool timed_out,
                  int64_t now)
{
    uint64_t seq = immediate_seq(st, now);
    VERITY_VERIFY(gcodec_leave(&st->enc, seq, g->id, now, member_id, timed_out) == 0);
    emit(st);
}

int group_leave(struct group_state *st, const char *name, uint64_t member_id, int64_t now_ms,
                uint64_t *ticket)
{
    *ticket = 0;
    if (!st->live)
        return VERITY_EINVAL;
    struct group *g = gst_find(st, name);
    if (!g)
        return VERITY_ENOTFOUND;
    if (!gmember_find(g, member_id))
        return VERITY_EMEMBER;
    leave(st, g, member_id, false, gst_clock(st, now_ms));
    *ticket = st->seq_applied;
    return 0;
}

void group_tick(struct group_state *st, int64_t now_ms)
{
    if (!st->live)
        return;
    int64_t now = gst_clock(st, now_ms);
    for (uint32_t i = 0; i < st->n_groups; i++) {
        struct group *g = st->groups[i];
        gdeliver_expire(st, g, now);
        for (uint32_t s = 0; s < g->n_slots; s++) {
            const struct gmember *m = &g->members[s];
            if (m->id && m->last_seen_ms <= now - m->session_ms) {
                uint64_t id = m->id;
                leave(st, g, id, true, now);
                effect_member_removed(st, g, id, true);
            }
        }
    }
}

int group_recover(struct group_state *st, int64_t now_ms)
{
    if (st->live)
        return VERITY_EINVAL;
    st->live = true;
    int64_t now = gst_clock(st, now_ms);
    st->seq_next = st->seq_applied + 1;
    for (uint32_t i = 0; i < st->n_groups; i++) {
        struct group *g = st->groups[i];
        for (uint32_t s = 0; s < g->n_slots; s++)
            if (g->members[s].id)
                g->members[s].last_seen_ms = now;
        for (uint32_t p = 0; p < g->n_parts; p++) {
            struct gpart *gp = &g->parts[p];
            VERITY_VERIFY(gp->cursor == gp->cursor_logged);
            /* First deliveries below the horizon may have happened unlogged. */
            gp->recovered = gp->horizon > gp->cursor ? gp->horizon : 0;
        }
        for (uint32_t ei = 0; ei < g->n_used; ei++) {
            struct gent *e = &g->ents[ei];
            if (e->status != GE_IDLE)
                continue;
            e->count = e->logged;
            if (e->dlq) {
                e->status = GE_DLQ_WAIT;
                g->n_dlq++;
                gst_effect_dead_letter(st, g, e);
            } else {
                gent_return(st, g, ei, now);
                gbatch_maybe_emit(st, g, now);
            }
        }
    }
    return 0;
}

int64_t group_next_deadline(const struct group_state *st)
{
    int64_t t = INT64_MAX;
    for (uint32_t i = 0; i < st->n_groups; i++) {
        const struct group *g = st->groups[i];
        if (g->lease_head != GNIL && g->ents[g->lease_head].when_ms < t)
            t = g->ents[g->lease_head].when_ms;
        for (uint32_t s = 0; s < g->n_slots; s++) {
            const struct gmember *m = &g->members[s];
            if (m->id && m->last_seen_ms + m->session_ms < t)
                t = m->last_seen_ms + m->session_ms;
        }
        if (g->n_waiting == 0)
            continue;
        for (uint32_t p = 0; p < g->n_parts; p++) {
            /* Only a future availability: one already due waits for a
             * fetch, not for a timer. */
            uint32_t ei = gheap_top(g, &g->parts[p]);
            if (ei != GNIL && g->ents[ei].when_ms > st->now_ms && g->ents[ei].when_ms < t)
                t = g->ents[ei].when_ms;
        }
    }
    return t;
}
