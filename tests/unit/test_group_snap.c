/*
 * Group snapshots (broker/group/group_snap.h), pure: a seeded random run of
 * the state machine (joins, leaves, fetches, acks, nacks, terms, ticks,
 * flushes, horizons) with a simulated clock, checked at intervals:
 *
 *   snapshot == replay         loading the live state's snapshot gives the
 *                              durable state that replaying every record
 *                              gives (group_snapshot compared byte for byte)
 *   old snapshot + tail        a snapshot taken earlier plus the records
 *                              after it gives the same state too
 *   recover                    both then recover to the same state
 *   bad bytes                  every truncation and random corruption of a
 *                              snapshot is refused or loads without harm
 *                              (ASan), never crashes
 *   busy state                 a snapshot with a progress record open is
 *                              refused (-EAGAIN), not taken half-way
 */
#include <CUnit/Basic.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "broker/group/group.h"
#include "broker/group/group_snap.h"
#include "verity/errors.h"

static struct group_state *st;
static int64_t now;
static uint64_t rng;

struct rec {
    uint8_t *p;
    size_t len;
};
static struct rec *recs;
static size_t n_recs, cap_recs;

static uint64_t rn(uint64_t n)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return n ? rng % n : 0;
}

static const char *const names[2];
static uint64_t members[2][8];
static uint32_t n_members[2];

static void drop_member(int g, uint64_t m)
{
    for (uint32_t i = 0; i < n_members[g]; i++)
        if (members[g][i] == m)
            members[g][i] = members[g][--n_members[g]];
}

static void drain_into(struct group_state *s)
{
    const uint8_t *p;
    size_t len;
    uint64_t seq;
    struct group_effect e;
    while (group_next_record(s, &p, &len, &seq)) {
        if (s != st)
            continue;
        if (n_recs == cap_recs) {
            cap_recs = cap_recs ? 2 * cap_recs : 256;
            recs = realloc(recs, cap_recs * sizeof(*recs));
            CU_ASSERT_PTR_NOT_NULL_FATAL(recs);
        }
        recs[n_recs].p = malloc(len);
        memcpy(recs[n_recs].p, p, len);
        recs[n_recs].len = len;
        n_recs++;
        CU_ASSERT_EQUAL(seq, n_recs);
    }
    while (group_next_effect(s, &e)) {
        /* Dead letters complete at once, as a healthy shell would. */
        uint64_t t;
        if (e.type == GROUP_EFFECT_MEMBER_REMOVED && s == st)
            for (int g = 0; g < 2; g++)
                if (strcmp(e.group, names[g]) == 0)
                    drop_member(g, e.member_id);
        if (e.type == GROUP_EFFECT_DEAD_LETTER) {
            char g[GROUP_NAME_MAX + 1];
            snprintf(g, sizeof g, "%s", e.group);
            CU_ASSERT_EQUAL(
                group_dead_lettered(s, g, (struct group_ref){e.pidx, e.offset}, now, &t), 0);
        }
    }
}

static void drain(void) { drain_into(st); }

static struct group_state *replay(size_t from, struct group_state *r)
{
    if (!r)
        CU_ASSERT_EQUAL_FATAL(group_state_new(0, &r), 0);
    for (size_t i = from; i < n_recs; i++)
        CU_ASSERT_EQUAL_FATAL(group_apply(r, recs[i].p, recs[i].len), 0);
    return r;
}

static uint8_t *durable(const struct group_state *s, size_t *len)
{
    uint8_t *b = NULL;
    CU_ASSERT_EQUAL_FATAL(group_snapshot(s, false, &b, len), 0);
    return b;
}

static bool same_durable(const struct group_state *a, const struct group_state *b)
{
    size_t la, lb;
    uint8_t *x = durable(a, &la), *y = durable(b, &lb);
    bool same = la == lb && memcmp(x, y, la) == 0;
    free(x);
    free(y);
    return same;
}

/* ---- random run ------------------------------------------------------------- */

#define PARTS 4
static const char *const names[2] = {"og", "sg"};
static uint64_t hwm[PARTS];

static void setup(void)
{
    group_state_free(st);
    for (size_t i = 0; i < n_recs; i++)
        free(recs[i].p);
    n_recs = 0;
    now = 1000;
    memset(n_members, 0, sizeof n_members);
    CU_ASSERT_EQUAL_FATAL(group_state_new(0, &st), 0);
    CU_ASSERT_EQUAL_FATAL(group_recover(st, now), 0);
    for (int g = 0; g < 2; g++) {
        struct group_config c;
        group_config_default(&c);
        snprintf(c.name, sizeof c.name, "%s", names[g]);
        c.mode = g == 0 ? GROUP_ORDERED : GROUP_SHARED;
        c.n_topics = 1;
        snprintf(c.topics[0].name, sizeof c.topics[0].name, "orders");
        c.topics[0].partitions = PARTS;
        c.lease_ms = 300;
        c.max_deliveries = 3;
        uint64_t start[PARTS] = {0}, t;
        CU_ASSERT_EQUAL_FATAL(group_create(st, &c, start, PARTS, now, &t), 0);
    }
    for (int p = 0; p < PARTS; p++)
        hwm[p] = 0;
    drain();
}

static void step(void)
{
    int g = (int)rn(2);
    const char *gn = names[g];
    uint64_t t;
    now += (int64_t)rn(60);
    for (int p = 0; p < PARTS; p++)
        if (rn(4) == 0 && hwm[p] < 5000)
            hwm[p] += rn(5);
    uint64_t m = n_members[g] ? members[g][rn(n_members[g])] : 0;
    uint64_t op = rn(100);
    if (op < 6 || !m) {
        if (n_members[g] < 8) {
            const char *topics[] = {"orders"};
            uint64_t id;
            CU_ASSERT_EQUAL(group_join(st, gn, "m", topics, 1, 5000, now, &id, &t), 0);
            members[g][n_members[g]++] = id;
        }
    } else if (op < 9) {
        CU_ASSERT_EQUAL(group_leave(st, gn, m, now, &t), 0);
        drop_member(g, m);
    } else if (op < 35) {
        struct group_delivery d[16];
        size_t n = 0;
        int rc = group_fetch(st, gn, m, 1 + rn(16), hwm, PARTS, now, d, &n, &t);
        CU_ASSERT(rc == 0 || rc == VERITY_ELIMIT);
    } else if (op < 70) {
        struct group_pending pend[32];
        size_t n = 0;
        CU_ASSERT_EQUAL(group_pending_list(st, gn, m, pend, 32, &n), 0);
        if (n) {
            const struct group_pending *x = &pend[rn(n < 32 ? n : 32)];
            struct group_ref r = {x->pidx, x->offset};
            int what = (int)rn(10);
            int rc;
            if (what < 7)
                rc = group_ack(st, gn, m, &r, 1, now, &t);
            else if (what < 9)
                rc = group_nack(st, gn, m, r, (int64_t)rn(100), "nacked", now, &t);
            else
                rc = group_term(st, gn, m, r, "terminal", now, &t);
            /* A message held by a member may have moved since the listing. */
            CU_ASSERT(rc == 0 || rc == VERITY_ELEASE);
        }
    } else if (op < 85) {
        group_tick(st, now);
    } else if (op < 95) {
        group_flush(st, now);
    } else {
        uint32_t p = (uint32_t)rn(PARTS);
        CU_ASSERT_EQUAL(group_horizon(st, gn, p, hwm[p] + rn(50), now), 0);
    }
    drain();
}

/* Flushes and drains so the live state is quiescent. */
static void quiesce(void)
{
    group_flush(st, now);
    drain();
}

static void check_load(const uint8_t *snapb, size_t snapn, size_t snap_recs)
{
    struct group_state *full = replay(0, NULL);
    struct group_state *ld = NULL;
    CU_ASSERT_EQUAL_FATAL(group_state_new(0, &ld), 0);
    CU_ASSERT_EQUAL_FATAL(group_snap_load(ld, snapb, snapn), 0);
    CU_ASSERT_EQUAL(group_snap_seq(ld), snap_recs);
    replay(snap_recs, ld);
    CU_ASSERT_TRUE(same_durable(full, ld));
    CU_ASSERT_TRUE(same_durable(full, st));
    group_check(ld);
    CU_ASSERT_EQUAL(group_recover(full, now), 0);
    CU_ASSERT_EQUAL(group_recover(ld, now), 0);
    drain_into(full);
    drain_into(ld);
    CU_ASSERT_TRUE(same_durable(full, ld));
    group_check(ld);
    group_state_free(full);
    group_state_free(ld);
}

static void test_snapshot_equals_replay_random(void)
{
    uint64_t seeds[] = {7, 99, 0xfeedface};
    const char *q = getenv("VERITY_TEST_QUICK");
    int steps = q && q[0] == '1' ? 1200 : 4000;
    for (size_t s = 0; s < sizeof seeds / sizeof seeds[0]; s++) {
        rng = seeds[s];
        setup();
        uint8_t *old = NULL;
        size_t oldn = 0, old_recs = 0;
        for (int i = 1; i <= steps; i++) {
            step();
            if (i % 400 != 0)
                continue;
            quiesce();
            uint8_t *b = NULL;
            size_t n = 0;
            CU_ASSERT_EQUAL_FATAL(group_snap_encode(st, &b, &n), 0);
            check_load(b, n, n_recs);            /* snapshot, empty tail */
            if (old)
                check_load(old, oldn, old_recs); /* old snapshot + tail */
            free(old);
            old = b;
            oldn = n;
            old_recs = n_recs;
        }
        free(old);
        /* The run did real work: deliveries were tracked and logged. */
        struct group_info gi;
        CU_ASSERT_EQUAL(group_get_info(st, "og", &gi), 0);
        if (getenv("GROUP_TEST_STATS"))
            fprintf(stderr, "seed %llu: %zu records, og gen %u tracked %u dl %llu\n",
                    (unsigned long long)seeds[s], n_recs, gi.generation, gi.n_tracked,
                    (unsigned long long)gi.dead_lettered);
        CU_ASSERT(n_recs > (size_t)steps / 10);
        CU_ASSERT(gi.generation > 2);
    }
}

static void test_open_progress_record_refused(void)
{
    struct group_state *replaying = NULL;
    uint8_t *rb = NULL;
    size_t rl = 0;
    CU_ASSERT_EQUAL_FATAL(group_state_new(0, &replaying), 0);
    CU_ASSERT_EQUAL(group_snap_encode(replaying, &rb, &rl), -EAGAIN); /* not recovered */
    group_state_free(replaying);
    rng = 5;
    setup();
    const char *topics[] = {"orders"};
    uint64_t id, t;
    CU_ASSERT_EQUAL_FATAL(group_join(st, "sg", "m", topics, 1, 5000, now, &id, &t), 0);
    drain();
    hwm[0] = 10;
    struct group_delivery d[4];
    size_t n = 0;
    CU_ASSERT_EQUAL_FATAL(group_fetch(st, "sg", id, 4, hwm, PARTS, now, d, &n, &t), 0);
    CU_ASSERT_TRUE_FATAL(n > 0);
    uint8_t *b = NULL;
    size_t len = 0;
    CU_ASSERT_EQUAL(group_snap_encode(st, &b, &len), -EAGAIN); /* deliveries not yet logged */
    CU_ASSERT_PTR_NULL(b);
    quiesce();
    CU_ASSERT_EQUAL(group_snap_encode(st, &b, &len), 0);
    free(b);
}

static void test_bad_bytes_refused_or_harmless(void)
{
    rng = 11;
    setup();
    for (int i = 0; i < 600; i++)
        step();
    quiesce();
    uint8_t *b = NULL;
    size_t n = 0;
    CU_ASSERT_EQUAL_FATAL(group_snap_encode(st, &b, &n), 0);
    for (size_t cut = 0; cut < n; cut += 1 + cut / 16) {
        struct group_state *x = NULL;
        CU_ASSERT_EQUAL_FATAL(group_state_new(0, &x), 0);
        int rc = group_snap_load(x, b, cut);
        CU_ASSERT(rc == VERITY_ECORRUPT || rc == VERITY_EVERSION);
        group_state_free(x);
    }
    uint8_t *c = malloc(n);
    for (int k = 0; k < 400; k++) {
        memcpy(c, b, n);
        c[rn(n)] ^= (uint8_t)(1u << rn(8));
        struct group_state *x = NULL;
        CU_ASSERT_EQUAL_FATAL(group_state_new(0, &x), 0);
        int rc = group_snap_load(x, c, n);
        CU_ASSERT(rc == 0 || rc == VERITY_ECORRUPT || rc == VERITY_EVERSION ||
                  rc == VERITY_ELIMIT);
        if (rc == 0)
            group_check(x); /* a flip that still forms a valid state */
        group_state_free(x);
    }
    free(c);
    free(b);
}

int main(void)
{
    static const struct {
        const char *name;
        void (*fn)(void);
    } tests[] = {
        {"snapshot (+ tail) equals full replay, random runs", test_snapshot_equals_replay_random},
        {"a replaying state or an open progress record refuses the snapshot",
         test_open_progress_record_refused},
        {"truncated or corrupted snapshots are refused or harmless",
         test_bad_bytes_refused_or_harmless},
    };
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    CU_pSuite s = CU_add_suite("group_snap", NULL, NULL);
    for (size_t i = 0; s && i < sizeof tests / sizeof tests[0]; i++)
        CU_add_test(s, tests[i].name, tests[i].fn);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    unsigned fails = CU_get_number_of_failures() + CU_get_number_of_suites_failed();
    CU_cleanup_registry();
    group_state_free(st);
    for (size_t i = 0; i < n_recs; i++)
        free(recs[i].p);
    free(recs);
    return fails ? 1 : 0;
}
