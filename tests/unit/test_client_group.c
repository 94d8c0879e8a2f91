/*
 * The client-side pieces of consumer groups that need no broker:
 *   - grset (client/group_rset.c) against a bitmap model under random
 *     adds and removes;
 *   - gtrack (client/group_track.c): what a member holds, how acks become
 *     wire items (ranges in shared mode, cumulative acks in ordered mode
 *     only where exact: never across a held or nacked offset), limits on
 *     items per request, reassignment;
 *   - gfetch (client/group_fetch.c): a fetch result is accepted only when
 *     its batches are valid, ascending and hold every delivered offset in a
 *     data batch; decoding returns exactly the delivered records with their
 *     delivery counts and headers;
 *   - the small public helpers (modes, names, config defaults).
 */
#include <CUnit/Basic.h>
#include <CUnit/CUnit.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client/group_int.h"
#include "verity/limits.h"

/* ---- grset ------------------------------------------------------------------ */

#define MODEL_BITS 512

static uint64_t rng = 0x9E3779B97F4A7C15ull;

static uint64_t rnd(void)
{
    rng ^= rng >> 12;
    rng ^= rng << 25;
    rng ^= rng >> 27;
    return rng * 0x2545F4914F6CDD1Dull;
}

static bool model_matches(const struct grset *s, const bool *model)
{
    uint64_t count = 0;
    for (uint64_t i = 0; i < MODEL_BITS; i++) {
        if (grset_contains(s, i) != model[i])
            return false;
        count += model[i];
    }
    return count == s->count;
}

static void test_rset_matches_bitmap_model(void)
{
    struct grset s;
    bool model[MODEL_BITS] = {0};
    grset_init(&s);
    int bad = 0;
    for (int step = 0; step < 20000 && !bad; step++) {
        uint64_t lo = rnd() % MODEL_BITS;
        uint64_t len = 1 + rnd() % (step % 3 == 0 ? 40 : 4);
        uint64_t hi = lo + len > MODEL_BITS ? MODEL_BITS : lo + len;
        bool add = rnd() % 2;
        if (add) {
            CU_ASSERT_EQUAL_FATAL(grset_add(&s, lo, hi), 0);
        } else {
            CU_ASSERT_EQUAL_FATAL(grset_remove(&s, lo, hi), 0);
        }
        for (uint64_t i = lo; i < hi; i++)
            model[i] = add;
        if (!grset_ok(&s) || !model_matches(&s, model))
            bad = step + 1;
    }
    CU_ASSERT_EQUAL(bad, 0);
    /* min is the first set bit */
    uint64_t first = UINT64_MAX;
    for (uint64_t i = 0; i < MODEL_BITS && first == UINT64_MAX; i++)
        if (model[i])
            first = i;
    CU_ASSERT_EQUAL(grset_min(&s), first);
    grset_deinit(&s);
}

static void test_rset_merges_adjacent_and_splits(void)
{
    struct grset s;
    grset_init(&s);
    CU_ASSERT_EQUAL(grset_add(&s, 10, 20), 0);
    CU_ASSERT_EQUAL(grset_add(&s, 30, 40), 0);
    CU_ASSERT_EQUAL(s.n, 2);
    CU_ASSERT_EQUAL(grset_add(&s, 20, 30), 0); /* touches both: one range */
    CU_ASSERT_EQUAL(s.n, 1);
    CU_ASSERT_EQUAL(s.r[0].lo, 10);
    CU_ASSERT_EQUAL(s.r[0].hi, 40);
    CU_ASSERT_EQUAL(s.count, 30);
    CU_ASSERT_EQUAL(grset_remove(&s, 15, 16), 0); /* split */
    CU_ASSERT_EQUAL(s.n, 2);
    CU_ASSERT_FALSE(grset_contains(&s, 15));
    CU_ASSERT_TRUE(grset_contains(&s, 14));
    CU_ASSERT_TRUE(grset_contains(&s, 16));
    CU_ASSERT_EQUAL(s.count, 29);
    CU_ASSERT_EQUAL(grset_remove(&s, 0, 100), 0);
    CU_ASSERT_EQUAL(s.n, 0);
    CU_ASSERT_EQUAL(s.count, 0);
    CU_ASSERT_EQUAL(grset_min(&s), UINT64_MAX);
    CU_ASSERT_TRUE(grset_ok(&s));
    grset_deinit(&s);
}

/* ---- gtrack ------------------------------------------------------------------ */

static struct gack_item *items;
static size_t n_items;

static void take_all(struct gtrack *t)
{
    gack_items_free(items, n_items);
    items = NULL;
    n_items = 0;
    CU_ASSERT_EQUAL_FATAL(gtrack_take(t, SIZE_MAX, UINT64_MAX, &items, &n_items), 0);
}

/* True when some item acknowledges offset off of the partition on the wire. */
static bool wire_covers(uint32_t partition, uint64_t off)
{
    for (size_t i = 0; i < n_items; i++) {
        if (items[i].partition != partition)
            continue;
        if (items[i].upto ? off < items[i].hi : (off >= items[i].lo && off < items[i].hi))
            return true;
    }
    return false;
}

static void test_track_shared_acks_go_as_ranges(void)
{
    struct gtrack t;
    gtrack_init(&t, false);
    struct gtrack_part *p = gtrack_part(&t, 0, 3, true);
    CU_ASSERT_PTR_NOT_NULL_FATAL(p);
    CU_ASSERT_PTR_EQUAL(gtrack_part(&t, 0, 3, false), p);
    CU_ASSERT_PTR_NULL(gtrack_part(&t, 1, 3, false));
    CU_ASSERT_EQUAL(gtrack_delivered(&t, p, 100, 110), 0);
    CU_ASSERT_EQUAL(t.held_total, 10);
    CU_ASSERT_EQUAL(gtrack_ack(&t, p, 103, 104), 0);
    CU_ASSERT_EQUAL(gtrack_ack(&t, p, 104, 107), 0);
    CU_ASSERT_EQUAL(gtrack_ack(&t, p, 100, 101), 0);
    CU_ASSERT_EQUAL(t.held_total, 5);
    CU_ASSERT_EQUAL(t.acked_total, 5);
    CU_ASSERT_FALSE(gtrack_holds(p, 103));
    CU_ASSERT_TRUE(gtrack_holds(p, 101));
    take_all(&t);
    CU_ASSERT_EQUAL_FATAL(n_items, 2);
    CU_ASSERT_FALSE(items[0].upto);
    CU_ASSERT_EQUAL(items[0].lo, 100);
    CU_ASSERT_EQUAL(items[0].hi, 101);
    CU_ASSERT_EQUAL(items[1].lo, 103);
    CU_ASSERT_EQUAL(items[1].hi, 107);
    CU_ASSERT_EQUAL(t.acked_total, 0);
    take_all(&t);
    CU_ASSERT_EQUAL(n_items, 0);
    gtrack_deinit(&t);
}

static void test_track_ordered_upto_spans_holes_below_held(void)
{
    struct gtrack t;
    gtrack_init(&t, true);
    struct gtrack_part *p = gtrack_part(&t, 1, 0, true);
    /* 10..19 was never ours (a control batch, or done before we got it). */
    CU_ASSERT_EQUAL(gtrack_delivered(&t, p, 0, 10), 0);
    CU_ASSERT_EQUAL(gtrack_delivered(&t, p, 20, 30), 0);
    CU_ASSERT_EQUAL(gtrack_ack(&t, p, 0, 10), 0);
    CU_ASSERT_EQUAL(gtrack_ack(&t, p, 20, 25), 0);
    take_all(&t);
    CU_ASSERT_EQUAL_FATAL(n_items, 1);
    CU_ASSERT_TRUE(items[0].upto);
    CU_ASSERT_EQUAL(items[0].hi, 25); /* through 24: 25..29 are still held */
    CU_ASSERT_EQUAL_FATAL(items[0].n_report, 2);
    CU_ASSERT_EQUAL(items[0].report[0].lo, 0);
    CU_ASSERT_EQUAL(items[0].report[0].hi, 10);
    CU_ASSERT_EQUAL(items[0].report[1].lo, 20);
    CU_ASSERT_EQUAL(items[0].report[1].hi, 25);
    CU_ASSERT_FALSE(wire_covers(0, 25));
    gtrack_deinit(&t);
}

static void test_track_ordered_never_acks_across_a_nack(void)
{
    struct gtrack t;
    gtrack_init(&t, true);
    struct gtrack_part *p = gtrack_part(&t, 0, 0, true);
    CU_ASSERT_EQUAL(gtrack_delivered(&t, p, 0, 10), 0);
    CU_ASSERT_EQUAL(gtrack_release(&t, p, 5, true), 0);
    CU_ASSERT_EQUAL(gtrack_ack(&t, p, 0, 5), 0);
    CU_ASSERT_EQUAL(gtrack_ack(&t, p, 6, 8), 0);
    CU_ASSERT_EQUAL(gtrack_ack(&t, p, 9, 10), 0);
    take_all(&t);
    CU_ASSERT(n_items >= 2);
    CU_ASSERT_FALSE(wire_covers(0, 5)); /* the nacked message is not acked */
    CU_ASSERT_FALSE(wire_covers(0, 8)); /* nor the one still held */
    for (uint64_t off = 0; off < 10; off++)
        if (off != 5 && off != 8)
            CU_ASSERT_TRUE(wire_covers(0, off));
    /* 5 comes back to us and is acked, 8 too: now one cumulative ack is
     * exact again for later offsets. */
    CU_ASSERT_EQUAL(gtrack_delivered(&t, p, 5, 6), 0);
    CU_ASSERT_EQUAL(gtrack_delivered(&t, p, 10, 20), 0);
    CU_ASSERT_EQUAL(gtrack_ack(&t, p, 5, 6), 0);
    CU_ASSERT_EQUAL(gtrack_ack(&t, p, 8, 9), 0);
    CU_ASSERT_EQUAL(gtrack_ack(&t, p, 10, 15), 0);
    take_all(&t);
    CU_ASSERT_EQUAL_FATAL(n_items, 1);
    CU_ASSERT_TRUE(items[0].upto);
    CU_ASSERT_EQUAL(items[0].hi, 15);
    CU_ASSERT_EQUAL(items[0].n_report, 3);
    gtrack_deinit(&t);
}

/* Issue 7, defect 1: after a rebalance the broker still names this member
 * as the last holder of what it held and nacked on a partition that moved,
 * but the tracker forgot those offsets; a cumulative ack across them would
 * acknowledge messages the application never acked. */
static void test_track_moved_partition_acks_are_exact(void)
{
    struct gtrack t;
    gtrack_init(&t, true);
    struct gtrack_part *p = gtrack_part(&t, 0, 0, true);
    CU_ASSERT_EQUAL(gtrack_delivered(&t, p, 0, 10), 0);
    CU_ASSERT_EQUAL(gtrack_release(&t, p, 5, true), 0); /* nacked */
    CU_ASSERT_EQUAL(gtrack_ack(&t, p, 0, 5), 0);
    CU_ASSERT_EQUAL(gtrack_ack(&t, p, 6, 8), 0);        /* 8 still held */
    CU_ASSERT_EQUAL(gtrack_ack(&t, p, 9, 10), 0);
    /* The partition moves away before the acks go out. */
    p->assigned = false;
    gtrack_drop_unassigned(&t);
    take_all(&t);
    CU_ASSERT_FALSE(wire_covers(0, 5));
    CU_ASSERT_FALSE(wire_covers(0, 8));
    for (size_t i = 0; i < n_items; i++)
        CU_ASSERT_FALSE(items[i].upto);
    for (uint64_t off = 0; off < 10; off++)
        if (off != 5 && off != 8)
            CU_ASSERT_TRUE(wire_covers(0, off));
    /* It comes back: 5 and 8 may still wait at the broker with this member
     * as last holder, so later acks stay exact too. */
    p->assigned = true;
    CU_ASSERT_EQUAL(gtrack_delivered(&t, p, 10, 20), 0);
    CU_ASSERT_EQUAL(gtrack_ack(&t, p, 10, 12), 0);
    CU_ASSERT_EQUAL(gtrack_ack(&t, p, 14, 20), 0);
    take_all(&t);
    for (size_t i = 0; i < n_items; i++)
        CU_ASSERT_FALSE(items[i].upto);
    CU_ASSERT_FALSE(wire_covers(0, 5));
    CU_ASSERT_FALSE(wire_covers(0, 12));
    CU_ASSERT_FALSE(wire_covers(0, 13));
    /* A new member id starts whole again. */
    gtrack_reset(&t);
    CU_ASSERT_EQUAL(gtrack_delivered(&t, p, 20, 30), 0);
    CU_ASSERT_EQUAL(gtrack_ack(&t, p, 25, 26), 0);
    take_all(&t);
    CU_ASSERT_EQUAL(gtrack_ack(&t, p, 20, 25), 0);
    CU_ASSERT_EQUAL(gtrack_ack(&t, p, 26, 28), 0);
    take_all(&t);
    CU_ASSERT_EQUAL_FATAL(n_items, 1);
    CU_ASSERT_TRUE(items[0].upto);
    CU_ASSERT_EQUAL(items[0].hi, 28);
    /* A delivery that could not be tracked makes the partition exact too. */
    gtrack_lost(&t, p);
    CU_ASSERT_EQUAL(gtrack_delivered(&t, p, 30, 40), 0);
    CU_ASSERT_EQUAL(gtrack_ack(&t, p, 28, 29), 0);
    CU_ASSERT_EQUAL(gtrack_ack(&t, p, 30, 32), 0);
    take_all(&t);
    for (size_t i = 0; i < n_items; i++)
        CU_ASSERT_FALSE(items[i].upto);
    CU_ASSERT_FALSE(wire_covers(0, 29));
    gtrack_deinit(&t);
}

static void test_track_term_is_not_a_barrier(void)
{
    struct gtrack t;
    gtrack_init(&t, true);
    struct gtrack_part *p = gtrack_part(&t, 0, 0, true);
    CU_ASSERT_EQUAL(gtrack_delivered(&t, p, 0, 10), 0);
    CU_ASSERT_EQUAL(gtrack_release(&t, p, 4, false), 0); /* termed: on its way to the DLQ */
    CU_ASSERT_EQUAL(gtrack_ack(&t, p, 0, 4), 0);
    CU_ASSERT_EQUAL(gtrack_ack(&t, p, 5, 10), 0);
    take_all(&t);
    CU_ASSERT_EQUAL_FATAL(n_items, 1);
    CU_ASSERT_TRUE(items[0].upto);
    CU_ASSERT_EQUAL(items[0].hi, 10);
    CU_ASSERT_EQUAL(t.held_total, 0);
    gtrack_deinit(&t);
}

static void test_track_ack_upto_acks_only_held(void)
{
    struct gtrack t;
    gtrack_init(&t, true);
    struct gtrack_part *p = gtrack_part(&t, 0, 7, true);
    CU_ASSERT_EQUAL(gtrack_delivered(&t, p, 100, 200), 0);
    CU_ASSERT_EQUAL(gtrack_ack_upto(&t, p, 149), 0);
    CU_ASSERT_EQUAL(t.acked_total, 50);
    CU_ASSERT_EQUAL(t.held_total, 50);
    CU_ASSERT_TRUE(gtrack_holds(p, 150));
    CU_ASSERT_FALSE(gtrack_holds(p, 149));
    CU_ASSERT_EQUAL(gtrack_ack_upto(&t, p, 50), 0); /* nothing held that low */
    CU_ASSERT_EQUAL(t.acked_total, 50);
    take_all(&t);
    CU_ASSERT_EQUAL_FATAL(n_items, 1);
    CU_ASSERT_EQUAL(items[0].lo, 100);
    CU_ASSERT_EQUAL(items[0].hi, 150);
    gtrack_deinit(&t);
}

static void test_track_acks_of_unheld_offsets_go_as_ranges(void)
{
    struct gtrack t;
    gtrack_init(&t, true);
    struct gtrack_part *p = gtrack_part(&t, 0, 0, true);
    CU_ASSERT_EQUAL(gtrack_delivered(&t, p, 50, 60), 0);
    /* The application acks something from before a reconnect. */
    CU_ASSERT_EQUAL(gtrack_ack(&t, p, 10, 11), 0);
    CU_ASSERT_EQUAL(t.held_total, 10);
    take_all(&t);
    CU_ASSERT_EQUAL_FATAL(n_items, 1);
    CU_ASSERT_FALSE(items[0].upto);
    CU_ASSERT_EQUAL(items[0].lo, 10);
    gtrack_deinit(&t);
}

static void test_track_take_respects_item_limit(void)
{
    struct gtrack t;
    gtrack_init(&t, false);
    for (uint32_t part = 0; part < 50; part++) {
        struct gtrack_part *p = gtrack_part(&t, 0, part, true);
        CU_ASSERT_PTR_NOT_NULL_FATAL(p);
        CU_ASSERT_EQUAL(gtrack_delivered(&t, p, 0, 100), 0);
        for (uint64_t o = 0; o < 100; o += 2)
            CU_ASSERT_EQUAL(gtrack_ack(&t, p, o, o + 1), 0);
    }
    CU_ASSERT_EQUAL(t.acked_total, 2500);
    struct gack_item *it = NULL;
    size_t n = 0, total = 0, rounds = 0;
    uint64_t msgs = 0;
    do {
        CU_ASSERT_EQUAL_FATAL(gtrack_take(&t, 300, UINT64_MAX, &it, &n), 0);
        CU_ASSERT(n <= 300);
        for (size_t i = 0; i < n; i++)
            msgs += it[i].hi - it[i].lo;
        total += n;
        gack_items_free(it, n);
        rounds++;
    } while (n > 0 && rounds < 100);
    CU_ASSERT_EQUAL(total, 2500);
    CU_ASSERT_EQUAL(msgs, 2500);
    CU_ASSERT_EQUAL(t.acked_total, 0);
    gtrack_deinit(&t);
}

static void test_track_take_cuts_ranges_at_offset_budget(void)
{
    struct gtrack t;
    gtrack_init(&t, false);
    struct gtrack_part *p = gtrack_part(&t, 0, 0, true);
    CU_ASSERT_EQUAL(gtrack_delivered(&t, p, 0, 250000), 0);
    CU_ASSERT_EQUAL(gtrack_ack(&t, p, 0, 250000), 0);
    uint64_t next = 0;
    for (int round = 0; round < 3; round++) {
        struct gack_item *it = NULL;
        size_t n = 0;
        CU_ASSERT_EQUAL_FATAL(gtrack_take(&t, 10, 100000, &it, &n), 0);
        CU_ASSERT_EQUAL_FATAL(n, 1);
        CU_ASSERT_EQUAL(it[0].lo, next);
        CU_ASSERT_EQUAL(it[0].hi, round < 2 ? next + 100000 : 250000);
        next = it[0].hi;
        gack_items_free(it, n);
        CU_ASSERT_TRUE(grset_ok(&p->acked));
    }
    CU_ASSERT_EQUAL(t.acked_total, 0);
    CU_ASSERT_EQUAL(p->acked.n, 0);
    gtrack_deinit(&t);
}

static void test_track_reassignment_forgets_moved_partitions(void)
{
    struct gtrack t;
    gtrack_init(&t, true);
    struct gtrack_part *a = gtrack_part(&t, 0, 0, true);
    struct gtrack_part *b = gtrack_part(&t, 0, 1, true);
    CU_ASSERT_EQUAL(gtrack_delivered(&t, a, 0, 10), 0);
    CU_ASSERT_EQUAL(gtrack_delivered(&t, b, 0, 10), 0);
    CU_ASSERT_EQUAL(gtrack_release(&t, b, 3, true), 0);
    b->assigned = false;
    gtrack_drop_unassigned(&t);
    CU_ASSERT_EQUAL(t.held_total, 10);
    CU_ASSERT_EQUAL(b->held.count, 0);
    CU_ASSERT_EQUAL(b->nacked.count, 0);
    CU_ASSERT_EQUAL(a->held.count, 10);
    gtrack_reset(&t);
    CU_ASSERT_EQUAL(t.held_total, 0);
    CU_ASSERT_EQUAL(a->held.count, 0);
    gtrack_deinit(&t);
}

static void test_track_many_partitions_found_again(void)
{
    struct gtrack t;
    gtrack_init(&t, false);
    for (uint32_t topic = 0; topic < 4; topic++)
        for (uint32_t part = 0; part < 300; part++) {
            struct gtrack_part *p = gtrack_part(&t, topic, part, true);
            CU_ASSERT_PTR_NOT_NULL_FATAL(p);
            CU_ASSERT_EQUAL(gtrack_delivered(&t, p, part, part + 1 + topic), 0);
        }
    CU_ASSERT_EQUAL(t.n, 1200);
    int wrong = 0;
    for (uint32_t topic = 0; topic < 4; topic++)
        for (uint32_t part = 0; part < 300; part++) {
            struct gtrack_part *p = gtrack_part(&t, topic, part, false);
            if (!p || p->topic != topic || p->partition != part ||
                p->held.count != 1 + topic || !gtrack_holds(p, part))
                wrong++;
        }
    CU_ASSERT_EQUAL(wrong, 0);
    gtrack_deinit(&t);
}

/* ---- gfetch ------------------------------------------------------------------ */

/* Appends a batch of n records "v<base+i>" at base offset base to buf. Every
 * third record has a header. control: a control batch. */
static size_t put_batch(uint8_t *buf, uint64_t base, uint32_t n, bool control)
{
    struct batch_builder b;
    CU_ASSERT_EQUAL_FATAL(batch_builder_init(&b, 64 * 1024), 0);
    for (uint32_t i = 0; i < n; i++) {
        char v[32];
        int vl = snprintf(v, sizeof v, "v%llu", (unsigned long long)(base + i));
        struct batch_header_kv h = {(const uint8_t *)"h", 1, (const uint8_t *)v, vl};
        CU_ASSERT_EQUAL_FATAL(batch_builder_add(&b, 1000 + i, NULL, -1, v, vl,
                                                i % 3 == 0 ? &h : NULL, i % 3 == 0),
                              0);
    }
    struct batch_meta m = {control ? BATCH_ATTR_CONTROL : 0, -1, -1, -1, NULL};
    CU_ASSERT_EQUAL_FATAL(batch_builder_finish(&b, &m), 0);
    memcpy(buf, b.buf, b.len);
    batch_set_base_offset(buf, base);
    size_t len = b.len;
    batch_builder_deinit(&b);
    return len;
}

static uint8_t fbuf[1 << 20];

static void test_fetch_check_accepts_covered_ranges(void)
{
    size_t len = put_batch(fbuf, 100, 10, false);
    len += put_batch(fbuf + len, 110, 1, true);
    len += put_batch(fbuf + len, 111, 10, false);
    len += put_batch(fbuf + len, 500, 5, false); /* shared mode: a later batch */
    struct gwire_range d[] = {{103, 7, 1}, {111, 3, 2}, {502, 2, 1}};
    CU_ASSERT_EQUAL(gfetch_check(fbuf, len, d, 3), 0);
    /* A range across the control batch is not delivered data. */
    struct gwire_range over_control[] = {{108, 5, 1}};
    CU_ASSERT_EQUAL(gfetch_check(fbuf, len, over_control, 1), VERITY_EPROTO);
    /* An offset the bytes do not hold (between batches). */
    struct gwire_range gap[] = {{120, 2, 1}};
    CU_ASSERT_EQUAL(gfetch_check(fbuf, len, gap, 1), VERITY_EPROTO);
    struct gwire_range past[] = {{504, 2, 1}};
    CU_ASSERT_EQUAL(gfetch_check(fbuf, len, past, 1), VERITY_EPROTO);
    struct gwire_range before[] = {{90, 20, 1}};
    CU_ASSERT_EQUAL(gfetch_check(fbuf, len, before, 1), VERITY_EPROTO);
    /* Ranges must ascend without overlap and be non-empty. */
    struct gwire_range unordered[] = {{111, 3, 1}, {103, 2, 1}};
    CU_ASSERT_EQUAL(gfetch_check(fbuf, len, unordered, 2), VERITY_EPROTO);
    struct gwire_range overlap[] = {{103, 3, 1}, {105, 2, 1}};
    CU_ASSERT_EQUAL(gfetch_check(fbuf, len, overlap, 2), VERITY_EPROTO);
    struct gwire_range empty[] = {{103, 0, 1}};
    CU_ASSERT_EQUAL(gfetch_check(fbuf, len, empty, 1), VERITY_EPROTO);
    /* No ranges, no bytes: fine (nothing delivered). */
    CU_ASSERT_EQUAL(gfetch_check(NULL, 0, NULL, 0), 0);
}

static void test_fetch_check_rejects_bad_bytes(void)
{
    size_t a = put_batch(fbuf, 0, 10, false);
    size_t len = a + put_batch(fbuf + a, 10, 10, false);
    struct gwire_range d[] = {{0, 20, 1}};
    CU_ASSERT_EQUAL(gfetch_check(fbuf, len, d, 1), 0);
    /* A flipped payload byte fails the CRC. */
    fbuf[a + 150] ^= 0x40;
    CU_ASSERT_EQUAL(gfetch_check(fbuf, len, d, 1), VERITY_ECORRUPT);
    fbuf[a + 150] ^= 0x40;
    /* A truncated answer. */
    CU_ASSERT_EQUAL(gfetch_check(fbuf, len - 1, d, 1), VERITY_ECORRUPT);
    CU_ASSERT_EQUAL(gfetch_check(fbuf, 50, d, 1), VERITY_ECORRUPT);
    /* Batches out of order. */
    uint8_t *swapped = malloc(len);
    CU_ASSERT_PTR_NOT_NULL_FATAL(swapped);
    memcpy(swapped, fbuf + a, len - a);
    memcpy(swapped + (len - a), fbuf, a);
    CU_ASSERT_EQUAL(gfetch_check(swapped, len, d, 1), VERITY_EPROTO);
    free(swapped);
    /* Garbage never crashes the check. */
    for (int round = 0; round < 2000; round++) {
        uint8_t junk[512];
        for (size_t i = 0; i < sizeof junk; i += 8) {
            uint64_t r = rnd();
            memcpy(junk + i, &r, 8);
        }
        if (round % 2)
            memcpy(junk, fbuf, 64); /* a plausible header */
        CU_ASSERT_NOT_EQUAL(gfetch_check(junk, sizeof junk, d, 1), 0);
    }
}

static void test_fetch_decode_returns_exactly_the_delivered_records(void)
{
    size_t len = put_batch(fbuf, 100, 10, false);
    len += put_batch(fbuf + len, 110, 1, true);
    size_t second = len;
    len += put_batch(fbuf + len, 111, 10, false);
    /* Distinct chain hashes on the two data batches (the log sets them;
     * the check does not read them). */
    uint8_t chain_a[BATCH_CHAIN_SIZE], chain_b[BATCH_CHAIN_SIZE];
    memset(chain_a, 0xa1, sizeof chain_a);
    memset(chain_b, 0xb2, sizeof chain_b);
    batch_set_chain(fbuf, chain_a);
    batch_set_chain(fbuf + second, chain_b);
    struct gwire_range d[] = {{103, 2, 1}, {107, 1, 3}, {111, 10, 2}};
    CU_ASSERT_EQUAL_FATAL(gfetch_check(fbuf, len, d, 3), 0);
    struct gdecode dec = {0};
    CU_ASSERT_EQUAL_FATAL(gfetch_decode(fbuf, len, d, 3, "t", 4, 123456, &dec), 0);
    gdecode_finish(&dec);
    CU_ASSERT_EQUAL_FATAL(dec.n, 13);
    static const uint64_t want[] = {103, 104, 107, 111, 112, 113, 114, 115, 116, 117, 118, 119, 120};
    static const uint32_t count[] = {1, 1, 3, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2};
    for (size_t i = 0; i < dec.n; i++) {
        const struct verity_group_message *m = &dec.msgs[i];
        char v[32];
        int vl = snprintf(v, sizeof v, "v%llu", (unsigned long long)want[i]);
        CU_ASSERT_EQUAL(m->msg.offset, want[i]);
        CU_ASSERT_EQUAL(m->delivery_count, count[i]);
        CU_ASSERT_EQUAL(m->lease_deadline_ms, 123456);
        CU_ASSERT_STRING_EQUAL(m->msg.topic, "t");
        CU_ASSERT_EQUAL(m->msg.partition, 4);
        CU_ASSERT_EQUAL(m->msg.value_len, vl);
        CU_ASSERT(m->msg.value && memcmp(m->msg.value, v, (size_t)vl) == 0);
        CU_ASSERT_EQUAL(m->msg.key_len, -1);
        /* The chain hash and last offset of the batch that holds it. */
        bool in_a = want[i] < 110;
        CU_ASSERT_PTR_NOT_NULL_FATAL(m->msg.chain_hash);
        CU_ASSERT(memcmp(m->msg.chain_hash, in_a ? chain_a : chain_b, BATCH_CHAIN_SIZE) == 0);
        CU_ASSERT_EQUAL(m->msg.batch_last_offset, in_a ? 109u : 120u);
        /* Header on every third record of its batch, carrying the value. */
        uint64_t base = want[i] < 110 ? 100 : 111;
        bool has = (want[i] - base) % 3 == 0;
        CU_ASSERT_EQUAL(m->msg.header_count, has ? 1u : 0u);
        if (has && m->msg.headers) {
            CU_ASSERT_EQUAL(m->msg.headers[0].key_len, 1);
            CU_ASSERT_EQUAL(m->msg.headers[0].value_len, vl);
            CU_ASSERT(memcmp(m->msg.headers[0].value, v, (size_t)vl) == 0);
        }
    }
    gdecode_deinit(&dec);
}

/* ---- helpers ------------------------------------------------------------------ */

static void test_modes_names_and_defaults(void)
{
    enum verity_group_mode m;
    CU_ASSERT_EQUAL(verity_group_mode_parse("ordered", &m), 0);
    CU_ASSERT_EQUAL(m, VERITY_GROUP_ORDERED);
    CU_ASSERT_EQUAL(verity_group_mode_parse("shared", &m), 0);
    CU_ASSERT_EQUAL(m, VERITY_GROUP_SHARED);
    CU_ASSERT_EQUAL(verity_group_mode_parse("Shared", &m), VERITY_EINVAL);
    CU_ASSERT_EQUAL(verity_group_mode_parse(NULL, &m), VERITY_EINVAL);
    CU_ASSERT_STRING_EQUAL(verity_group_mode_name(VERITY_GROUP_SHARED), "shared");
    CU_ASSERT_STRING_EQUAL(verity_group_mode_name(VERITY_GROUP_ORDERED), "ordered");
    CU_ASSERT_TRUE(verity_group_name_ok("orders-v2.workers_1"));
    CU_ASSERT_FALSE(verity_group_name_ok(""));
    CU_ASSERT_FALSE(verity_group_name_ok(".."));
    CU_ASSERT_FALSE(verity_group_name_ok("__internal"));
    CU_ASSERT_FALSE(verity_group_name_ok("a b"));
    CU_ASSERT_FALSE(verity_group_name_ok(NULL));
    char longname[VERITY_GROUP_NAME_MAX + 2];
    memset(longname, 'g', sizeof longname - 1);
    longname[sizeof longname - 1] = '\0';
    CU_ASSERT_FALSE(verity_group_name_ok(longname));
    longname[VERITY_GROUP_NAME_MAX] = '\0';
    CU_ASSERT_TRUE(verity_group_name_ok(longname));
    struct verity_group_consumer_config c;
    verity_group_consumer_config_default(&c);
    CU_ASSERT_EQUAL(c.fetch_max, 1000);
    CU_ASSERT_EQUAL(c.fetch_inflight, 1);
    CU_ASSERT_EQUAL(c.queue_max, 2000);
    CU_ASSERT_EQUAL(c.conn.request_timeout_ms, 30000);
    CU_ASSERT_FALSE(c.auto_ack);
}

static void test_consumer_rejects_bad_config(void)
{
    struct verity_group_consumer_config c;
    struct verity_group_consumer *g = NULL;
    verity_group_consumer_config_default(&c);
    CU_ASSERT_EQUAL(verity_group_consumer_new(&c, &g), VERITY_EINVAL); /* no group */
    c.group = "bad name";
    CU_ASSERT_EQUAL(verity_group_consumer_new(&c, &g), VERITY_EINVAL);
    c.group = "g";
    const char *topics[] = {"ok", "not ok"};
    c.topics = topics;
    c.n_topics = 2;
    CU_ASSERT_EQUAL(verity_group_consumer_new(&c, &g), VERITY_EINVAL);
    c.n_topics = 1;
    c.fetch_max = VERITY_GROUP_FETCH_MAX + 1;
    CU_ASSERT_EQUAL(verity_group_consumer_new(&c, &g), VERITY_EINVAL);
    c.fetch_max = 10;
    c.conn.broker = "no-port-here";
    CU_ASSERT_EQUAL(verity_group_consumer_new(&c, &g), VERITY_EINVAL);
    CU_ASSERT_PTR_NULL(g);
}

static void test_unreachable_broker_is_reported(void)
{
    /* Port 1 on loopback: nothing listens there. */
    struct verity_group_consumer_config c;
    struct verity_group_consumer *g = NULL;
    verity_group_consumer_config_default(&c);
    c.group = "g";
    c.conn.broker = "127.0.0.1:1";
    CU_ASSERT_EQUAL_FATAL(verity_group_consumer_new(&c, &g), 0);
    int rc = verity_group_connect(g, 5000);
    CU_ASSERT_TRUE(verity_err_unreachable(rc));
    /* Acks and polls while unjoined are queued / empty, never a crash. */
    const struct verity_group_message *m;
    size_t n = 99;
    CU_ASSERT_EQUAL(verity_group_poll(g, 10, &m, &n), 0);
    CU_ASSERT_EQUAL(n, 0);
    CU_ASSERT_EQUAL(verity_group_ack(g, "unknown-topic", 0, 1), VERITY_EINVAL);
    CU_ASSERT_EQUAL(verity_group_commit(g, 50), VERITY_ETIMEOUT);
    verity_group_consumer_free(g, 100);

    struct verity_group_admin *a = NULL;
    struct verity_conn_config cc;
    verity_conn_config_default(&cc);
    cc.broker = "127.0.0.1:1";
    CU_ASSERT_EQUAL_FATAL(verity_group_admin_new(&cc, &a), 0);
    CU_ASSERT_TRUE(verity_err_unreachable(verity_group_admin_connect(a, 5000)));
    struct verity_group_info *info = NULL;
    CU_ASSERT_EQUAL(verity_group_describe(a, "bad name", &info), VERITY_EINVAL);
    CU_ASSERT_PTR_NULL(info);
    verity_group_admin_free(a);
}

int main(void)
{
    static const struct {
        const char *name;
        void (*fn)(void);
    } tests[] = {
        {"rset_matches_bitmap_model", test_rset_matches_bitmap_model},
        {"rset_merges_adjacent_and_splits", test_rset_merges_adjacent_and_splits},
        {"track_shared_acks_go_as_ranges", test_track_shared_acks_go_as_ranges},
        {"track_ordered_upto_spans_holes_below_held",
         test_track_ordered_upto_spans_holes_below_held},
        {"track_ordered_never_acks_across_a_nack", test_track_ordered_never_acks_across_a_nack},
        {"track_term_is_not_a_barrier", test_track_term_is_not_a_barrier},
        {"track_moved_partition_acks_are_exact", test_track_moved_partition_acks_are_exact},
        {"track_ack_upto_acks_only_held", test_track_ack_upto_acks_only_held},
        {"track_acks_of_unheld_offsets_go_as_ranges",
         test_track_acks_of_unheld_offsets_go_as_ranges},
        {"track_take_respects_item_limit", test_track_take_respects_item_limit},
        {"track_take_cuts_ranges_at_offset_budget", test_track_take_cuts_ranges_at_offset_budget},
        {"track_reassignment_forgets_moved_partitions",
         test_track_reassignment_forgets_moved_partitions},
        {"track_many_partitions_found_again", test_track_many_partitions_found_again},
        {"fetch_check_accepts_covered_ranges", test_fetch_check_accepts_covered_ranges},
        {"fetch_check_rejects_bad_bytes", test_fetch_check_rejects_bad_bytes},
        {"fetch_decode_returns_exactly_the_delivered_records",
         test_fetch_decode_returns_exactly_the_delivered_records},
        {"modes_names_and_defaults", test_modes_names_and_defaults},
        {"consumer_rejects_bad_config", test_consumer_rejects_bad_config},
        {"unreachable_broker_is_reported", test_unreachable_broker_is_reported},
    };
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    CU_pSuite s = CU_add_suite("client_group", NULL, NULL);
    if (s == NULL)
        goto fail;
    for (size_t i = 0; i < sizeof(tests) / sizeof(tests[0]); i++)
        if (CU_add_test(s, tests[i].name, tests[i].fn) == NULL)
            goto fail;
    CU_basic_set_mode(CU_BRM_VERBOSE);
    if (CU_basic_run_tests() != CUE_SUCCESS)
        goto fail;
    unsigned failed = CU_get_number_of_failures() + CU_get_number_of_suites_failed();
    gack_items_free(items, n_items);
    CU_cleanup_registry();
    return failed ? 1 : 0;
fail:
    CU_cleanup_registry();
    return 1;
}
