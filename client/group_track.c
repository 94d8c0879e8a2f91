/*
 * gtrack: what a group member holds, per (topic, partition), and how the
 * acks of its application become wire items. Pure: no I/O, no clock, no
 * locks (the group consumer calls it with its mutex held).
 *
 * The rule for cumulative acks (ordered mode only) is explained in
 * client/group_int.h: while the member's knowledge of a partition is whole,
 * the acked offsets below min(held, nacked) go as one "upto"; every other
 * acked offset goes in a range.
 * Offsets acked without being held (acks for a former lease, repeated acks)
 * go as ranges too: the broker decides what they mean.
 *
 * Partitions are found through an open-addressing table keyed by
 * (topic, partition); it only grows (a member sees at most the group's
 * partitions).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "client/group_int.h"
#include "verity/verify.h"

static uint32_t slot_of(uint32_t topic, uint32_t partition, uint32_t cap)
{
    uint64_t k = ((uint64_t)topic << 32) | partition;
    k *= 0x9E3779B97F4A7C15ull;
    return (uint32_t)(k >> 32) & (cap - 1);
}

void gtrack_init(struct gtrack *t, bool ordered)
{
    memset(t, 0, sizeof *t);
    t->ordered = ordered;
}

static void part_free(struct gtrack_part *p)
{
    grset_deinit(&p->held);
    grset_deinit(&p->acked);
    grset_deinit(&p->nacked);
    free(p);
}

void gtrack_deinit(struct gtrack *t)
{
    for (uint32_t i = 0; i < t->cap; i++)
        if (t->parts[i])
            part_free(t->parts[i]);
    free(t->parts);
    memset(t, 0, sizeof *t);
}

static int grow(struct gtrack *t)
{
    uint32_t cap = t->cap ? t->cap * 2 : 16;
    struct gtrack_part **parts = calloc(cap, sizeof *parts);
    if (!parts)
        return -ENOMEM;
    for (uint32_t i = 0; i < t->cap; i++) {
        struct gtrack_part *p = t->parts[i];
        if (!p)
            continue;
        uint32_t s = slot_of(p->topic, p->partition, cap);
        while (parts[s])
            s = (s + 1) & (cap - 1);
        parts[s] = p;
    }
    free(t->parts);
    t->parts = parts;
    t->cap = cap;
    return 0;
}

struct gtrack_part *gtrack_part(struct gtrack *t, uint32_t topic, uint32_t partition, bool create)
{
    if (t->cap) {
        uint32_t s = slot_of(topic, partition, t->cap);
        /* Bounded: the table is at most half full. */
        while (t->parts[s]) {
            if (t->parts[s]->topic == topic && t->parts[s]->partition == partition)
                return t->parts[s];
            s = (s + 1) & (t->cap - 1);
        }
    }
    if (!create)
        return NULL;
    if ((t->n + 1) * 2 > t->cap && grow(t) != 0)
        return NULL;
    struct gtrack_part *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    p->topic = topic;
    p->partition = partition;
    p->assigned = true;
    p->whole = !t->lost;
    grset_init(&p->held);
    grset_init(&p->acked);
    grset_init(&p->nacked);
    uint32_t s = slot_of(topic, partition, t->cap);
    while (t->parts[s])
        s = (s + 1) & (t->cap - 1);
    t->parts[s] = p;
    t->n++;
    return p;
}

int gtrack_delivered(struct gtrack *t, struct gtrack_part *p, uint64_t lo, uint64_t hi)
{
    VERITY_VERIFY(lo < hi);
    if (grset_reserve(&p->nacked, 1) || grset_reserve(&p->held, 1))
        return -ENOMEM;
    uint64_t before = p->held.count;
    /* A redelivery of something we nacked: we hold it again. Something we
     * acked and get again (our ack was not durable before a restart, or
     * failed) is held again too: the earlier ack stays queued and the new
     * lease waits for the application's answer. */
    VERITY_VERIFY(grset_remove(&p->nacked, lo, hi) == 0);
    VERITY_VERIFY(grset_add(&p->held, lo, hi) == 0);
    t->held_total += p->held.count - before;
    return 0;
}

int gtrack_ack(struct gtrack *t, struct gtrack_part *p, uint64_t lo, uint64_t hi)
{
    /* Reserve first: an add needs at most one more range, a removal splits
     * at most one; afterwards nothing can fail half way. */
    if (grset_reserve(&p->acked, 1) || grset_reserve(&p->held, 1))
        return -ENOMEM;
    uint64_t held0 = p->held.count, acked0 = p->acked.count;
    VERITY_VERIFY(grset_add(&p->acked, lo, hi) == 0);
    VERITY_VERIFY(grset_remove(&p->held, lo, hi) == 0);
    t->held_total -= held0 - p->held.count;
    t->acked_total += p->acked.count - acked0;
    return 0;
}

int gtrack_ack_upto(struct gtrack *t, struct gtrack_part *p, uint64_t offset)
{
    /* Ack every held range at or below offset; bounded by the ranges. */
    while (p->held.n && p->held.r[0].lo <= offset) {
        uint64_t lo = p->held.r[0].lo;
        uint64_t hi = p->held.r[0].hi <= offset ? p->held.r[0].hi : offset + 1;
        int rc = gtrack_ack(t, p, lo, hi);
        if (rc)
            return rc;
    }
    return 0;
}

int gtrack_release(struct gtrack *t, struct gtrack_part *p, uint64_t off, bool nack)
{
    if (grset_reserve(&p->nacked, 1) || grset_reserve(&p->held, 1))
        return -ENOMEM;
    uint64_t held0 = p->held.count;
    if (nack)
        VERITY_VERIFY(grset_add(&p->nacked, off, off + 1) == 0);
    VERITY_VERIFY(grset_remove(&p->held, off, off + 1) == 0);
    t->held_total -= held0 - p->held.count;
    return 0;
}

bool gtrack_holds(const struct gtrack_part *p, uint64_t off)
{
    return grset_contains(&p->held, off);
}

void gtrack_reset(struct gtrack *t)
{
    for (uint32_t i = 0; i < t->cap; i++) {
        struct gtrack_part *p = t->parts[i];
        if (!p)
            continue;
        grset_clear(&p->held);
        grset_clear(&p->acked);
        grset_clear(&p->nacked);
        p->whole = true;
    }
    t->held_total = 0;
    t->acked_total = 0;
    t->lost = false;
}

void gtrack_lost(struct gtrack *t, struct gtrack_part *p)
{
    if (p) {
        p->whole = false;
        return;
    }
    t->lost = true;
    for (uint32_t i = 0; i < t->cap; i++)
        if (t->parts[i])
            t->parts[i]->whole = false;
}

void gtrack_drop_unassigned(struct gtrack *t)
{
    for (uint32_t i = 0; i < t->cap; i++) {
        struct gtrack_part *p = t->parts[i];
        if (!p || p->assigned)
            continue;
        t->held_total -= p->held.count;
        grset_clear(&p->held);
        grset_clear(&p->nacked);
        p->whole = false;
    }
}

void gack_items_free(struct gack_item *items, size_t n)
{
    if (!items)
        return;
    for (size_t i = 0; i < n; i++)
        free(items[i].report);
    free(items);
}

int gtrack_take(struct gtrack *t, size_t max_items, uint64_t max_offsets, struct gack_item **out,
                size_t *n_out)
{
    *out = NULL;
    *n_out = 0;
    if (t->acked_total == 0 || max_items == 0 || max_offsets == 0)
        return 0;
    size_t want = 0;
    for (uint32_t i = 0; i < t->cap; i++)
        if (t->parts[i])
            want += t->parts[i]->acked.n;
    if (want > max_items)
        want = max_items;
    struct gack_item *items = calloc(want, sizeof *items);
    if (!items)
        return -ENOMEM;
    size_t n = 0;
    uint64_t budget = max_offsets;
    for (uint32_t i = 0; i < t->cap && n < want && budget > 0; i++) {
        struct gtrack_part *p = t->parts[i];
        if (!p || p->acked.n == 0)
            continue;
        uint32_t k = 0; /* ranges of p->acked consumed whole */
        uint64_t taken = 0;
        if (t->ordered && p->whole) {
            uint64_t barrier = grset_min(&p->held);
            uint64_t nb = grset_min(&p->nacked);
            if (nb < barrier)
                barrier = nb;
            uint32_t below = 0;
            while (below < p->acked.n && p->acked.r[below].hi <= barrier)
                below++;
            /* One cumulative ack stands for two ranges or more; a single
             * range goes as a range, which the broker checks strictly. */
            if (below >= 2) {
                struct grange *rep = malloc((size_t)below * sizeof *rep);
                if (!rep) {
                    gack_items_free(items, n);
                    return -ENOMEM;
                }
                memcpy(rep, p->acked.r, (size_t)below * sizeof *rep);
                items[n++] = (struct gack_item){p->topic, p->partition, true, rep[0].lo,
                                                rep[below - 1].hi, rep, below};
                for (uint32_t j = 0; j < below; j++)
                    taken += rep[j].hi - rep[j].lo;
                k = below;
            }
        }
        uint64_t cut = 0; /* offsets taken from the front of range k, not whole */
        for (; k < p->acked.n && n < want && budget > 0; k++) {
            struct grange r = p->acked.r[k];
            if (r.hi - r.lo > budget) {
                cut = budget;
                r.hi = r.lo + cut;
            }
            items[n++] = (struct gack_item){p->topic, p->partition, false, r.lo, r.hi, NULL, 0};
            taken += r.hi - r.lo;
            budget -= r.hi - r.lo;
            if (cut)
                break;
        }
        /* Drop what was taken from the front of acked. */
        memmove(p->acked.r, p->acked.r + k, (size_t)(p->acked.n - k) * sizeof p->acked.r[0]);
        p->acked.n -= k;
        if (cut)
            p->acked.r[0].lo += cut;
        p->acked.count -= taken;
        t->acked_total -= taken;
        VERITY_VERIFY(grset_ok(&p->acked));
    }
    *out = items;
    *n_out = n;
    return 0;
}
