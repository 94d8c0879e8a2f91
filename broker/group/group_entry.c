/*
 * group_entry: the per-group containers behind the consumer-group state
 * machine. Entries (one per delivered, not yet durably done message) live in
 * a pool indexed by u32 and are found by (pidx, offset) through an
 * open-addressing hash with linear probing and backward-shift deletion.
 * LEASED entries sit in one doubly-linked list whose deadlines never
 * decrease from head to tail (every lease is now + lease_ms and the
 * machine's clock never runs backwards), so expiry is a walk from the head.
 * WAITING entries sit in a binary heap per partition, keyed by offset in
 * ordered mode (lowest offset redelivered first, keeping order) and by
 * (available-at, offset) in shared mode. Done offsets above a partition's
 * floor are sorted disjoint ranges that collapse into the floor.
 *
 * Invariants (checked by group_check): every non-FREE entry is in the hash
 * exactly once; LEASED <=> in the lease list; WAITING <=> in its heap at
 * heap_pos; counts n_leased / n_waiting / n_dlq / n_tracked match.
 *
 * Nothing here allocates per message once the pools have grown: growth is
 * by doubling, and commands reserve before they change anything.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "broker/group/group_int.h"
#include "verity/errors.h"
#include "verity/verify.h"

static inline uint64_t hkey(uint32_t pidx, uint64_t offset)
{
    return ((uint64_t)pidx << 48) | offset;
}

static inline uint32_t hslot(const struct group *g, uint64_t key)
{
    uint64_t h = key * 0x9E3779B97F4A7C15ull;
    return (uint32_t)(h >> 32) & g->hmask;
}

static void hash_insert(struct group *g, uint64_t key, uint32_t ei)
{
    uint32_t i = hslot(g, key);
    while (g->hvals[i])
        i = (i + 1) & g->hmask;
    g->hkeys[i] = key;
    g->hvals[i] = ei + 1;
}

static int hash_grow(struct group *g, uint32_t want)
{
    uint32_t cap = g->hcap ? g->hcap : 64;
    while (cap < 2 * (uint64_t)want)
        cap *= 2;
    if (cap == g->hcap)
        return 0;
    uint64_t *keys = malloc((size_t)cap * sizeof(*keys));
    uint32_t *vals = calloc(cap, sizeof(*vals));
    if (!keys || !vals) {
        free(keys);
        free(vals);
        return -ENOMEM;
    }
    uint64_t *okeys = g->hkeys;
    uint32_t *ovals = g->hvals;
    uint32_t ocap = g->hcap;
    g->hkeys = keys;
    g->hvals = vals;
    g->hcap = cap;
    g->hmask = cap - 1;
    for (uint32_t i = 0; i < ocap; i++)
        if (ovals[i])
            hash_insert(g, okeys[i], ovals[i] - 1);
    free(okeys);
    free(ovals);
    return 0;
}

uint32_t gent_find(const struct group *g, uint32_t pidx, uint64_t offset)
{
    if (!g->hcap)
        return GNIL;
    uint64_t key = hkey(pidx, offset);
    for (uint32_t i = hslot(g, key);; i = (i + 1) & g->hmask) {
        if (!g->hvals[i])
            return GNIL;
        if (g->hkeys[i] == key)
            return g->hvals[i] - 1;
    }
}

static void hash_delete(struct group *g, uint64_t key)
{
    uint32_t i = hslot(g, key);
    while (g->hkeys[i] != key || !g->hvals[i]) {
        VERITY_VERIFY(g->hvals[i]);
        i = (i + 1) & g->hmask;
    }
    /* Backward-shift: pull later members of the probe run into the hole. */
    for (uint32_t j = i;;) {
        j = (j + 1) & g->hmask;
        if (!g->hvals[j])
            break;
        uint32_t home = hslot(g, g->hkeys[j]);
        bool movable = (i <= j) ? (home <= i || home > j) : (home <= i && home > j);
        if (movable) {
            g->hkeys[i] = g->hkeys[j];
            g->hvals[i] = g->hvals[j];
            i = j;
        }
    }
    g->hvals[i] = 0;
}

int gent_reserve(struct group *g, uint32_t more)
{
    uint64_t want = (uint64_t)g->n_tracked + more;
    if (want > VERITY_PENDING_PER_GROUP_MAX)
        return VERITY_ELIMIT;
    if (want > g->cap_ents) {
        uint64_t cap = g->cap_ents ? g->cap_ents : 64;
        while (cap < want)
            cap *= 2;
        struct gent *e = realloc(g->ents, (size_t)cap * sizeof(*e));
        if (!e)
            return -ENOMEM;
        g->ents = e;
        g->cap_ents = (uint32_t)cap;
    }
    return hash_grow(g, (uint32_t)want);
}

uint32_t gent_alloc(struct group *g, uint32_t pidx, uint64_t offset)
{
    uint32_t ei;
    if (g->free_head != GNIL) {
        ei = g->free_head;
        g->free_head = g->ents[ei].next;
    } else {
        VERITY_VERIFY(g->n_used < g->cap_ents);
        ei = g->n_used++;
    }
    VERITY_VERIFY(2 * ((uint64_t)g->n_tracked + 1) <= g->hcap);
    struct gent *e = &g->ents[ei];
    memset(e, 0, sizeof(*e));
    e->offset = offset;
    e->pidx = pidx;
    e->first_ms = INT64_MIN;
    e->prev = e->next = e->heap_pos = GNIL;
    e->status = GE_IDLE;
    hash_insert(g, hkey(pidx, offset), ei);
    g->n_tracked++;
    return ei;
}

void gent_release(struct group *g, uint32_t ei)
{
    struct gent *e = &g->ents[ei];
    VERITY_VERIFY(e->status != GE_FREE && e->status != GE_LEASED && e->status != GE_WAITING);
    if (e->status == GE_DLQ_WAIT || e->status == GE_DLQ_DONE)
        g->n_dlq--;
    hash_delete(g, hkey(e->pidx, e->offset));
    free(e->error);
    e->error = NULL;
    e->status = GE_FREE;
    e->next = g->free_head;
    g->free_head = ei;
    g->n_tracked--;
}

void gent_set_error(struct gent *e, const char *text, size_t len)
{
    if (!text)
        return;
    if (len > GROUP_ERROR_MAX)
        len = GROUP_ERROR_MAX;
    char *s = malloc(len + 1);
    VERITY_VERIFY(s != NULL);
    memcpy(s, text, len);
    s[len] = 0;
    free(e->error);
    e->error = s;
}

/* ---- lease list ---------------------------------------------------------- */

void glease_push(struct group *g, uint32_t ei)
{
    struct gent *e = &g->ents[ei];
    VERITY_VERIFY(g->lease_tail == GNIL || g->ents[g->lease_tail].when_ms <= e->when_ms);
    e->next = GNIL;
    e->prev = g->lease_tail;
    if (g->lease_tail != GNIL)
        g->ents[g->lease_tail].next = ei;
    else
        g->lease_head = ei;
    g->lease_tail = ei;
}

void glease_unlink(struct group *g, uint32_t ei)
{
    struct gent *e = &g->ents[ei];
    if (e->prev != GNIL)
        g->ents[e->prev].next = e->next;
    else
        g->lease_head = e->next;
    if (e->next != GNIL)
        g->ents[e->next].prev = e->prev;
    else
        g->lease_tail = e->prev;
    e->prev = e->next = GNIL;
}

/* ---- waiting heaps --------------------------------------------------------- */

static bool heap_less(const struct group *g, uint32_t a, uint32_t b)
{
    const struct gent *x = &g->ents[a], *y = &g->ents[b];
    if (g->cfg.mode == GROUP_SHARED && x->when_ms != y->when_ms)
        return x->when_ms < y->when_ms;
    return x->offset < y->offset;
}

static void heap_set(struct group *g, struct gpart *p, uint32_t pos, uint32_t ei)
{
    p->heap[pos] = ei;
    g->ents[ei].heap_pos = pos;
}

static void heap_up(struct group *g, struct gpart *p, uint32_t pos)
{
    uint32_t ei = p->heap[pos];
    while (pos > 0) {
        uint32_t parent = (pos - 1) / 2;
        if (!heap_less(g, ei, p->heap[parent]))
            break;
        heap_set(g, p, pos, p->heap[parent]);
        pos = parent;
    }
    heap_set(g, p, pos, ei);
}

static void heap_down(struct group *g, struct gpart *p, uint32_t pos)
{
    uint32_t ei = p->heap[pos];
    for (;;) {
        uint32_t c = 2 * pos + 1;
        if (c >= p->n_heap)
            break;
        if (c + 1 < p->n_heap && heap_less(g, p->heap[c + 1], p->heap[c]))
            c++;
        if (!heap_less(g, p->heap[c], ei))
            break;
        heap_set(g, p, pos, p->heap[c]);
        pos = c;
    }
    heap_set(g, p, pos, ei);
}

int gheap_reserve(struct gpart *p, uint32_t more)
{
    uint64_t want = (uint64_t)p->n_heap + more;
    if (want <= p->cap_heap)
        return 0;
    uint64_t cap = p->cap_heap ? p->cap_heap : 16;
    while (cap < want)
        cap *= 2;
    uint32_t *h = realloc(p->heap, (size_t)cap * sizeof(*h));
    if (!h)
        return -ENOMEM;
    p->heap = h;
    p->cap_heap = (uint32_t)cap;
    return 0;
}

void gheap_push(struct group *g, uint32_t ei)
{
    struct gpart *p = &g->parts[g->ents[ei].pidx];
    VERITY_VERIFY(gheap_reserve(p, 1) == 0);
    p->n_heap++;
    heap_set(g, p, p->n_heap - 1, ei);
    heap_up(g, p, p->n_heap - 1);
}

void gheap_remove(struct group *g, uint32_t ei)
{
    struct gpart *p = &g->parts[g->ents[ei].pidx];
    uint32_t pos = g->ents[ei].heap_pos;
    VERITY_VERIFY(pos < p->n_heap && p->heap[pos] == ei);
    uint32_t last = p->heap[--p->n_heap];
    g->ents[ei].heap_pos = GNIL;
    if (pos == p->n_heap)
        return;
    heap_set(g, p, pos, last);
    heap_up(g, p, pos);
    heap_down(g, p, g->ents[last].heap_pos);
}

uint32_t gheap_top(const struct group *g, const struct gpart *p)
{
    (void)g;
    return p->n_heap ? p->heap[0] : GNIL;
}

/* ---- done ranges ------------------------------------------------------------ */

/* First range whose hi >= offset. */
static uint32_t done_lower(const struct gpart *p, uint64_t offset)
{
    uint32_t lo = 0, hi = p->n_done;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (p->done[mid].hi < offset)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

bool gdone_has(const struct gpart *p, uint64_t offset)
{
    if (offset < p->floor)
        return true;
    uint32_t i = done_lower(p, offset + 1);
    return i < p->n_done && p->done[i].lo <= offset;
}

int gdone_reserve(struct gpart *p, uint32_t more)
{
    uint64_t want = (uint64_t)p->n_done + more;
    if (want <= p->cap_done)
        return 0;
    uint64_t cap = p->cap_done ? p->cap_done : 8;
    while (cap < want)
        cap *= 2;
    struct grange *r = realloc(p->done, (size_t)cap * sizeof(*r));
    if (!r)
        return -ENOMEM;
    p->done = r;
    p->cap_done = (uint32_t)cap;
    return 0;
}

void gdone_add(struct gpart *p, uint64_t lo, uint64_t hi)
{
    if (lo < p->floor)
        lo = p->floor;
    if (lo >= hi)
        return;
    uint32_t i = done_lower(p, lo), j = i;
    uint64_t nlo = lo, nhi = hi;
    while (j < p->n_done && p->done[j].lo <= hi) {
        if (p->done[j].lo < nlo)
            nlo = p->done[j].lo;
        if (p->done[j].hi > nhi)
            nhi = p->done[j].hi;
        p->done_count -= p->done[j].hi - p->done[j].lo;
        j++;
    }
    if (nlo == p->floor) {
        /* The merged range starts at the floor: it collapses. */
        VERITY_VERIFY(i == 0);
        p->floor = nhi;
        if (j && p->n_done > j)
            memmove(p->done, p->done + j, (p->n_done - j) * sizeof(*p->done));
        p->n_done -= j;
        return;
    }
    if (i == j) {
        VERITY_VERIFY(gdone_reserve(p, 1) == 0);
        memmove(p->done + i + 1, p->done + i, (p->n_done - i) * sizeof(*p->done));
        p->n_done++;
    } else if (j - i > 1) {
        memmove(p->done + i + 1, p->done + j, (p->n_done - j) * sizeof(*p->done));
        p->n_done -= j - i - 1;
    }
    p->done[i].lo = nlo;
    p->done[i].hi = nhi;
    p->done_count += nhi - nlo;
}

/* ---- transitions -------------------------------------------------------------- */

void gent_detach(struct group *g, uint32_t ei)
{
    struct gent *e = &g->ents[ei];
    if (e->status == GE_LEASED) {
        glease_unlink(g, ei);
        struct gmember *m = gmember_find(g, e->member_id);
        VERITY_VERIFY(m && m->n_leased > 0);
        m->n_leased--;
        g->parts[e->pidx].n_leased--;
        g->n_leased--;
    } else if (e->status == GE_WAITING) {
        gheap_remove(g, ei);
        g->n_waiting--;
    } else {
        return;
    }
    e->status = GE_IDLE;
}

int64_t gbackoff(const struct group *g, uint32_t count)
{
    if (g->cfg.n_backoff == 0 || count == 0)
        return 0;
    uint32_t i = count - 1;
    if (i >= g->cfg.n_backoff)
        i = g->cfg.n_backoff - 1;
    return g->cfg.backoff_ms[i];
}

void gent_dead_letter(struct group_state *st, struct group *g, uint32_t ei)
{
    struct gent *e = &g->ents[ei];
    gent_detach(g, ei);
    e->status = GE_DLQ_WAIT;
    g->n_dlq++;
    if (!e->dlq) {
        /* Decided now (not a replayed decision): log it. */
        gbatch_open(st, g);
        struct gbatch *b = &g->batch;
        size_t len = e->error ? strlen(e->error) : 0;
        if (b->n_decide == b->cap_decide) {
            size_t cap = b->cap_decide ? 2 * b->cap_decide : 16;
            struct gdecide *d = realloc(b->decide, cap * sizeof(*d));
            VERITY_VERIFY(d != NULL);
            b->decide = d;
            b->cap_decide = cap;
        }
        if (b->n_text + len > b->cap_text) {
            size_t cap = b->cap_text ? b->cap_text : 1024;
            while (cap < b->n_text + len)
                cap *= 2;
            char *t = realloc(b->text, cap);
            VERITY_VERIFY(t != NULL);
            b->text = t;
            b->cap_text = cap;
        }
        if (len)
            memcpy(b->text + b->n_text, e->error, len);
        b->decide[b->n_decide++] = (struct gdecide){.pidx = e->pidx,
                                                    .offset = e->offset,
                                                    .count = e->count,
                                                    .err_off = (uint32_t)b->n_text,
                                                    .err_len = (uint32_t)len};
        b->n_text += len;
        b->items++;
        b->bytes += 40 + len;
        st->open_items++;
    }
    gst_effect_dead_letter(st, g, e);
}

void gent_return(struct group_state *st, struct group *g, uint32_t ei, int64_t at_ms)
{
    struct gent *e = &g->ents[ei];
    gent_detach(g, ei);
    if (e->count >= g->cfg.max_deliveries) {
        gent_dead_letter(st, g, ei);
        return;
    }
    e->status = GE_WAITING;
    e->when_ms = at_ms;
    gheap_push(g, ei);
    g->n_waiting++;
}

/* A return that may not decide a dead-letter (it runs inside apply, where
 * no progress item may be added): the entry waits; fetch dead-letters it
 * when it surfaces with count >= max_deliveries. */
static void return_quiet(struct group *g, uint32_t ei, int64_t at_ms)
{
    struct gent *e = &g->ents[ei];
    gent_detach(g, ei);
    e->status = GE_WAITING;
    e->when_ms = at_ms;
    gheap_push(g, ei);
    g->n_waiting++;
}

void glease_return_member(struct group *g, uint64_t member_id, int64_t now_ms)
{
    uint32_t ei = g->lease_head;
    while (ei != GNIL) {
        uint32_t next = g->ents[ei].next;
        if (g->ents[ei].member_id == member_id)
            return_quiet(g, ei, now_ms);
        ei = next;
    }
}

void glease_return_moved(struct group *g, int64_t now_ms)
{
    uint32_t ei = g->lease_head;
    while (ei != GNIL) {
        uint32_t next = g->ents[ei].next;
        const struct gent *e = &g->ents[ei];
        if (g->parts[e->pidx].owner != (uint32_t)(e->member_id & 0xffff))
            return_quiet(g, ei, now_ms);
        ei = next;
    }
}

void gent_drop_all(struct group *g)
{
    for (uint32_t ei = 0; ei < g->n_used; ei++) {
        struct gent *e = &g->ents[ei];
        if (e->status == GE_FREE)
            continue;
        gent_detach(g, ei);
        gent_release(g, ei);
    }
    VERITY_VERIFY(g->n_tracked == 0 && g->n_leased == 0 && g->n_waiting == 0 && g->n_dlq == 0);
}
