/*
 * Consumer-group state machine (broker/group/group.h), driven with a simulated
 * clock: one test per rule (leases, backoff, dead-letter, term, nack delay,
 * extend, rebalancing, shared mode, cumulative ack, limits, tickets), every
 * bad-input case with the state compared before and after, and a seeded
 * random run whose records rebuild an identical state, plus crash/restart
 * runs that check what a restart may deliver again.
 */
#include <CUnit/Basic.h>
#include <CUnit/CUnit.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "broker/group/group.h"
#include "verity/errors.h"

/* ---- harness ---------------------------------------------------------------- */

static struct group_state *st;
static int64_t now;

struct rec {
    uint8_t *p;
    size_t len;
    uint64_t seq;
};
static struct rec *recs;
static size_t n_recs, cap_recs;

struct eff {
    struct group_effect e;
    char group[GROUP_NAME_MAX + 1];
    char topic[VERITY_TOPIC_NAME_MAX + 1];
    char dlq[VERITY_TOPIC_NAME_MAX + 1];
    char error[GROUP_ERROR_MAX + 1];
};
static struct eff *effs;
static size_t n_effs, cap_effs;

static bool quick(void)
{
    const char *q = getenv("VERITY_TEST_QUICK");
    return q && q[0] == '1';
}

static void drain(void)
{
    const uint8_t *p;
    size_t len;
    uint64_t seq;
    while (group_next_record(st, &p, &len, &seq)) {
        if (n_recs == cap_recs) {
            cap_recs = cap_recs ? 2 * cap_recs : 256;
            recs = realloc(recs, cap_recs * sizeof(*recs));
        }
        recs[n_recs].p = malloc(len);
        memcpy(recs[n_recs].p, p, len);
        recs[n_recs].len = len;
        recs[n_recs].seq = seq;
        CU_ASSERT_EQUAL(seq, n_recs + 1); /* seq order, no gaps */
        n_recs++;
    }
    struct group_effect e;
    while (group_next_effect(st, &e)) {
        if (n_effs == cap_effs) {
            cap_effs = cap_effs ? 2 * cap_effs : 64;
            effs = realloc(effs, cap_effs * sizeof(*effs));
        }
        struct eff *x = &effs[n_effs++];
        x->e = e;
        snprintf(x->group, sizeof(x->group), "%s", e.group);
        snprintf(x->topic, sizeof(x->topic), "%s", e.topic);
        snprintf(x->dlq, sizeof(x->dlq), "%s", e.dlq_topic);
        snprintf(x->error, sizeof(x->error), "%s", e.error);
    }
}

static void clear_log(void)
{
    for (size_t i = 0; i < n_recs; i++)
        free(recs[i].p);
    n_recs = 0;
    n_effs = 0;
}

static void fresh(uint32_t pending_cap)
{
    group_state_free(st);
    clear_log();
    now = 1000;
    CU_ASSERT_EQUAL_FATAL(group_state_new(pending_cap, &st), 0);
    CU_ASSERT_EQUAL_FATAL(group_recover(st, now), 0);
}

static void cfg_init(struct group_config *c, const char *name, enum group_mode mode,
                     uint32_t parts)
{
    group_config_default(c);
    snprintf(c->name, sizeof(c->name), "%s", name);
    c->mode = mode;
    c->n_topics = 1;
    snprintf(c->topics[0].name, sizeof(c->topics[0].name), "orders");
    c->topics[0].partitions = parts;
    c->lease_ms = 1000;
    c->n_backoff = 0;
}

static void create(const struct group_config *c)
{
    uint64_t start[GROUP_PARTITIONS_MAX] = {0}, t;
    uint32_t n = 0;
    for (uint32_t i = 0; i < c->n_topics; i++)
        n += c->topics[i].partitions;
    CU_ASSERT_EQUAL_FATAL(group_create(st, c, start, n, now, &t), 0);
    CU_ASSERT(t > 0);
    drain();
}

static void simple_group(const char *name, enum group_mode mode, uint32_t parts)
{
    struct group_config c;
    cfg_init(&c, name, mode, parts);
    create(&c);
}

static uint64_t join(const char *g, const char *who)
{
    const char *topics[] = {"orders"};
    uint64_t id = 0, t;
    CU_ASSERT_EQUAL_FATAL(group_join(st, g, who, topics, 1, 0, now, &id, &t), 0);
    CU_ASSERT(id != 0);
    drain();
    return id;
}

static uint64_t hwm_all[GROUP_PARTITIONS_MAX];

static void set_hwm(uint32_t n, uint64_t v)
{
    for (uint32_t i = 0; i < n; i++)
        hwm_all[i] = v;
}

static size_t fetch(const char *g, uint64_t m, size_t max, uint32_t parts,
                    struct group_delivery *out)
{
    size_t n = 0;
    uint64_t t;
    CU_ASSERT_EQUAL(group_fetch(st, g, m, max, hwm_all, parts, now, out, &n, &t), 0);
    drain();
    return n;
}

static int ack1(const char *g, uint64_t m, uint32_t pidx, uint64_t off)
{
    struct group_ref r = {pidx, off};
    uint64_t t;
    int rc = group_ack(st, g, m, &r, 1, now, &t);
    drain();
    return rc;
}

static int nack1(const char *g, uint64_t m, uint32_t pidx, uint64_t off, int64_t delay,
                 const char *err)
{
    struct group_ref r = {pidx, off};
    uint64_t t;
    int rc = group_nack(st, g, m, r, delay, err, now, &t);
    drain();
    return rc;
}

static enum group_msg_state msg_state(const char *g, uint32_t pidx, uint64_t off,
                                      uint32_t *count)
{
    struct group_msg_info mi;
    CU_ASSERT_EQUAL(group_msg(st, g, (struct group_ref){pidx, off}, &mi), 0);
    if (count)
        *count = mi.delivery_count;
    return mi.state;
}

static uint8_t *snap(struct group_state *s, bool vol, size_t *len)
{
    uint8_t *b = NULL;
    CU_ASSERT_EQUAL_FATAL(group_snapshot(s, vol, &b, len), 0);
    return b;
}

static struct group_state *replay(size_t n)
{
    struct group_state *r = NULL;
    CU_ASSERT_EQUAL_FATAL(group_state_new(0, &r), 0);
    for (size_t i = 0; i < n; i++)
        CU_ASSERT_EQUAL_FATAL(group_apply(r, recs[i].p, recs[i].len), 0);
    return r;
}

/* Flushes, replays every record into a fresh state, compares the durable
 * snapshots. */
static void assert_replay_equal(void)
{
    group_flush(st, now);
    drain();
    struct group_state *r = replay(n_recs);
    size_t la, lb;
    uint8_t *a = snap(st, false, &la), *b = snap(r, false, &lb);
    CU_ASSERT_EQUAL(la, lb);
    CU_ASSERT(la == lb && memcmp(a, b, la) == 0);
    group_check(st);
    group_check(r);
    free(a);
    free(b);
    group_state_free(r);
}

static const struct eff *last_effect(enum group_effect_type type)
{
    for (size_t i = n_effs; i-- > 0;)
        if (effs[i].e.type == type)
            return &effs[i];
    return NULL;
}

/* ---- leases, backoff, dead-letter --------------------------------------------- */

static void test_lease_expiry_returns_message_with_count_raised(void)
{
    fresh(0);
    simple_group("g", GROUP_SHARED, 1);
    uint64_t m = join("g", "a");
    set_hwm(1, 1);
    struct group_delivery d[4];
    CU_ASSERT_EQUAL_FATAL(fetch("g", m, 4, 1, d), 1);
    CU_ASSERT_EQUAL(d[0].delivery_count, 1);
    CU_ASSERT_EQUAL(d[0].lease_deadline_ms, now + 1000);
    now += 999;
    group_tick(st, now);
    CU_ASSERT_EQUAL(msg_state("g", 0, 0, NULL), GROUP_MSG_LEASED);
    CU_ASSERT_EQUAL(fetch("g", m, 4, 1, d), 0);
    now += 1;
    group_tick(st, now);
    uint32_t count;
    CU_ASSERT_EQUAL(msg_state("g", 0, 0, &count), GROUP_MSG_WAITING);
    CU_ASSERT_EQUAL(fetch("g", m, 4, 1, d), 1);
    CU_ASSERT_EQUAL(d[0].offset, 0);
    CU_ASSERT_EQUAL(d[0].delivery_count, 2);
    assert_replay_equal();
}

/* A coordinator whose copy of a partition is behind (a new coordinator in a
 * cluster: its hwm is its own committed end) neither redelivers nor counts
 * what it cannot read yet. */
static void test_redelivery_waits_for_the_hwm(void)
{
    fresh(0);
    simple_group("g", GROUP_SHARED, 1);
    uint64_t m = join("g", "a");
    set_hwm(1, 3);
    struct group_delivery d[4];
    CU_ASSERT_EQUAL_FATAL(fetch("g", m, 4, 1, d), 3);
    now += 1000;
    group_tick(st, now);
    uint32_t count;
    CU_ASSERT_EQUAL(msg_state("g", 0, 2, &count), GROUP_MSG_WAITING);
    set_hwm(1, 0);
    CU_ASSERT_EQUAL(fetch("g", m, 4, 1, d), 0);
    for (uint64_t o = 0; o < 3; o++) {
        CU_ASSERT_EQUAL(msg_state("g", 0, o, &count), GROUP_MSG_WAITING);
        CU_ASSERT_EQUAL(count, 1);
    }
    set_hwm(1, 3);
    CU_ASSERT_EQUAL(fetch("g", m, 4, 1, d), 3);
    for (size_t i = 0; i < 3; i++)
        CU_ASSERT_EQUAL(d[i].delivery_count, 2);
    assert_replay_equal();
}

static void test_backoff_schedule_applies_to_nack_and_expiry(void)
{
    fresh(0);
    struct group_config c;
    cfg_init(&c, "g", GROUP_SHARED, 1);
    c.n_backoff = 3;
    c.backoff_ms[0] = 100;
    c.backoff_ms[1] = 500;
    c.backoff_ms[2] = 3000;
    c.max_deliveries = 10;
    create(&c);
    uint64_t m = join("g", "a");
    set_hwm(1, 1);
    struct group_delivery d[2];
    const int64_t expect[] = {100, 500, 3000, 3000};
    for (int i = 0; i < 4; i++) {
        CU_ASSERT_EQUAL_FATAL(fetch("g", m, 2, 1, d), 1);
        CU_ASSERT_EQUAL(d[0].delivery_count, (uint32_t)i + 1);
        if (i % 2 == 0) {
            CU_ASSERT_EQUAL(nack1("g", m, 0, 0, -1, NULL), 0);
        } else {
            now = d[0].lease_deadline_ms;
            group_tick(st, now);
        }
        struct group_msg_info mi;
        CU_ASSERT_EQUAL(group_msg(st, "g", (struct group_ref){0, 0}, &mi), 0);
        CU_ASSERT_EQUAL(mi.state, GROUP_MSG_WAITING);
        CU_ASSERT_EQUAL(mi.deadline_ms, now + expect[i]);
        CU_ASSERT_EQUAL(group_next_deadline(st), now + expect[i]);
        now += expect[i] - 1;
        CU_ASSERT_EQUAL(fetch("g", m, 2, 1, d), 0);
        now += 1;
    }
    assert_replay_equal();
}

static void test_max_deliveries_emits_dead_letter_with_fields(void)
{
    fresh(0);
    struct group_config c;
    cfg_init(&c, "billing", GROUP_SHARED, 3);
    c.max_deliveries = 3;
    create(&c);
    uint64_t m = join("billing", "a");
    set_hwm(3, 0);
    hwm_all[2] = 8;
    struct group_delivery d[16];
    CU_ASSERT_EQUAL_FATAL(fetch("billing", m, 16, 3, d), 8);
    /* Offset 5 of partition 2: nack twice, then its lease expires. */
    CU_ASSERT_EQUAL(nack1("billing", m, 2, 5, 0, "bad json"), 0);
    CU_ASSERT_EQUAL_FATAL(fetch("billing", m, 1, 3, d), 1);
    CU_ASSERT_EQUAL(d[0].offset, 5);
    CU_ASSERT_EQUAL(nack1("billing", m, 2, 5, 0, "still bad"), 0);
    CU_ASSERT_EQUAL_FATAL(fetch("billing", m, 1, 3, d), 1);
    CU_ASSERT_EQUAL(d[0].delivery_count, 3);
    size_t before = n_effs;
    now = d[0].lease_deadline_ms;
    group_tick(st, now);
    drain();
    /* Every lease expired; only offset 5 had max_deliveries. */
    CU_ASSERT_EQUAL_FATAL(n_effs, before + 1);
    const struct eff *e = &effs[before];
    CU_ASSERT_EQUAL_FATAL(e->e.type, GROUP_EFFECT_DEAD_LETTER);
    CU_ASSERT_STRING_EQUAL(e->group, "billing");
    CU_ASSERT_STRING_EQUAL(e->topic, "orders");
    CU_ASSERT_STRING_EQUAL(e->dlq, "orders.dlq");
    CU_ASSERT_EQUAL(e->e.partition, 2);
    CU_ASSERT_EQUAL(e->e.offset, 5);
    CU_ASSERT_EQUAL(e->e.delivery_count, 3);
    CU_ASSERT_STRING_EQUAL(e->error, "still bad");
    CU_ASSERT_EQUAL(msg_state("billing", 2, 5, NULL), GROUP_MSG_DEAD_LETTER);
    /* It is never delivered again. */
    now += 100000;
    CU_ASSERT_EQUAL(fetch("billing", m, 16, 3, d), 7);
    for (int i = 0; i < 7; i++)
        CU_ASSERT(d[i].offset != 5);
    /* The shell reports the DLQ append durable: the message is done. */
    uint64_t t;
    CU_ASSERT_EQUAL(group_dead_lettered(st, "billing", (struct group_ref){2, 5}, now, &t), 0);
    CU_ASSERT(t > group_last_seq(st));
    group_flush(st, now);
    drain();
    CU_ASSERT(group_last_seq(st) >= t);
    CU_ASSERT_EQUAL(msg_state("billing", 2, 5, NULL), GROUP_MSG_DONE);
    struct group_info gi;
    CU_ASSERT_EQUAL(group_get_info(st, "billing", &gi), 0);
    CU_ASSERT_EQUAL(gi.dead_lettered, 1);
    CU_ASSERT_EQUAL(gi.n_dead_letter, 0);
    assert_replay_equal();
}

struct dl_seen {
    size_t n;
    struct group_effect e;
    char group[GROUP_NAME_MAX + 1], error[GROUP_ERROR_MAX + 1];
};

static bool dl_visit(void *arg, const struct group_effect *e)
{
    struct dl_seen *s = arg;
    if (s->n++ == 0) {
        s->e = *e;
        snprintf(s->group, sizeof s->group, "%s", e->group);
        snprintf(s->error, sizeof s->error, "%s", e->error);
    }
    return true;
}

/* A decision made live names the record that logs it (the shell appends
 * the dead letter only once that record is durable); a replica that
 * applied the records lists the decision until its completion record. */
static void test_dead_letter_decision_seq_and_replica_list(void)
{
    fresh(0);
    struct group_config c;
    cfg_init(&c, "g", GROUP_SHARED, 1);
    c.max_deliveries = 1;
    create(&c);
    uint64_t m = join("g", "a");
    set_hwm(1, 2);
    struct group_delivery d[2];
    CU_ASSERT_EQUAL_FATAL(fetch("g", m, 2, 1, d), 2);
    group_flush(st, now);
    drain();
    uint64_t before = group_last_seq(st);
    size_t n0 = n_effs;
    CU_ASSERT_EQUAL(nack1("g", m, 0, 1, 0, "bad"), 0);
    drain();
    const struct eff *e = last_effect(GROUP_EFFECT_DEAD_LETTER);
    CU_ASSERT_FATAL(e != NULL && n_effs == n0 + 1);
    /* not logged yet: a seq past the last emitted record */
    CU_ASSERT(e->e.seq > before);
    CU_ASSERT(e->e.seq > group_last_seq(st));
    uint64_t decided = e->e.seq;
    struct dl_seen s = {0};
    group_dead_letters(st, dl_visit, &s); /* live, decided now: not listed */
    CU_ASSERT_EQUAL(s.n, 0);
    group_flush(st, now);
    drain();
    CU_ASSERT(group_last_seq(st) >= decided);
    struct group_state *r = replay(n_recs);
    memset(&s, 0, sizeof s);
    group_dead_letters(r, dl_visit, &s);
    CU_ASSERT_EQUAL_FATAL(s.n, 1);
    CU_ASSERT_STRING_EQUAL(s.group, "g");
    CU_ASSERT_STRING_EQUAL(s.e.topic, "orders");
    CU_ASSERT_STRING_EQUAL(s.e.dlq_topic, "orders.dlq");
    CU_ASSERT_EQUAL(s.e.pidx, 0);
    CU_ASSERT_EQUAL(s.e.offset, 1);
    CU_ASSERT_EQUAL(s.e.delivery_count, 1);
    CU_ASSERT_STRING_EQUAL(s.error, "bad");
    CU_ASSERT_EQUAL(s.e.seq, 0);
    /* recovered, the replica re-emits it as logged already (seq 0) */
    CU_ASSERT_EQUAL(group_recover(r, now), 0);
    struct group_effect re;
    bool got = false;
    while (group_next_effect(r, &re)) {
        if (re.type != GROUP_EFFECT_DEAD_LETTER)
            continue;
        if (re.offset == 1) {
            got = true;
            CU_ASSERT_EQUAL(re.seq, 0);
        } else {
            /* offset 0 (leased at the "crash", max_deliveries 1) is
             * decided by the recovery itself: a new record logs it */
            CU_ASSERT(re.seq > 0);
        }
    }
    CU_ASSERT(got);
    group_state_free(r);
    uint64_t t;
    CU_ASSERT_EQUAL(group_dead_lettered(st, "g", (struct group_ref){0, 1}, now, &t), 0);
    group_flush(st, now);
    drain();
    r = replay(n_recs);
    memset(&s, 0, sizeof s);
    group_dead_letters(r, dl_visit, &s);
    CU_ASSERT_EQUAL(s.n, 0);
    group_state_free(r);
    assert_replay_equal();
}

static void test_term_dead_letters_at_once(void)
{
    fresh(0);
    simple_group("g", GROUP_ORDERED, 1);
    uint64_t m = join("g", "a");
    set_hwm(1, 3);
    struct group_delivery d[4];
    CU_ASSERT_EQUAL_FATAL(fetch("g", m, 4, 1, d), 3);
    uint64_t t;
    CU_ASSERT_EQUAL(group_term(st, "g", m, (struct group_ref){0, 1}, "poison", now, &t), 0);
    drain();
    CU_ASSERT(t > 0);
    const struct eff *e = last_effect(GROUP_EFFECT_DEAD_LETTER);
    CU_ASSERT_FATAL(e != NULL);
    CU_ASSERT_EQUAL(e->e.offset, 1);
    CU_ASSERT_EQUAL(e->e.delivery_count, 1);
    CU_ASSERT_STRING_EQUAL(e->error, "poison");
    CU_ASSERT_EQUAL(ack1("g", m, 0, 1), VERITY_ELEASE);
    /* A cumulative ack passes over the dead-lettered message. */
    CU_ASSERT_EQUAL(group_ack_upto(st, "g", m, 0, 2, now, &t), 0);
    CU_ASSERT_EQUAL(group_dead_lettered(st, "g", (struct group_ref){0, 1}, now, &t), 0);
    group_flush(st, now);
    drain();
    struct group_lag lag;
    CU_ASSERT_EQUAL(group_get_lag(st, "g", 0, 3, &lag), 0);
    CU_ASSERT_EQUAL(lag.ack_floor, 3);
    CU_ASSERT_EQUAL(lag.unacked, 0);
    assert_replay_equal();
}

static void test_nack_delay_holds_message_back(void)
{
    fresh(0);
    simple_group("g", GROUP_SHARED, 1);
    uint64_t m = join("g", "a");
    set_hwm(1, 2);
    struct group_delivery d[4];
    CU_ASSERT_EQUAL_FATAL(fetch("g", m, 4, 1, d), 2);
    CU_ASSERT_EQUAL(nack1("g", m, 0, 0, 2000, NULL), 0);
    CU_ASSERT_EQUAL(nack1("g", m, 0, 1, 0, NULL), 0);
    CU_ASSERT_EQUAL_FATAL(fetch("g", m, 4, 1, d), 1); /* only the undelayed one */
    CU_ASSERT_EQUAL(d[0].offset, 1);
    CU_ASSERT_EQUAL(d[0].delivery_count, 2);
    now += 1999;
    CU_ASSERT_EQUAL(fetch("g", m, 4, 1, d), 0);
    now += 1;
    CU_ASSERT_EQUAL_FATAL(fetch("g", m, 4, 1, d), 1);
    CU_ASSERT_EQUAL(d[0].offset, 0);
    CU_ASSERT_EQUAL(d[0].delivery_count, 2);
    assert_replay_equal();
}

static void test_extend_renews_lease(void)
{
    fresh(0);
    simple_group("g", GROUP_SHARED, 1);
    uint64_t m = join("g", "a");
    set_hwm(1, 1);
    struct group_delivery d[1];
    CU_ASSERT_EQUAL_FATAL(fetch("g", m, 1, 1, d), 1);
    now += 900;
    int64_t dl;
    struct group_ref r = {0, 0};
    CU_ASSERT_EQUAL(group_extend(st, "g", m, &r, 1, now, &dl), 0);
    CU_ASSERT_EQUAL(dl, now + 1000);
    now += 600; /* past the first deadline */
    group_tick(st, now);
    CU_ASSERT_EQUAL(msg_state("g", 0, 0, NULL), GROUP_MSG_LEASED);
    now = dl;
    group_tick(st, now);
    CU_ASSERT_EQUAL(msg_state("g", 0, 0, NULL), GROUP_MSG_WAITING);
    CU_ASSERT_EQUAL(group_extend(st, "g", m, &r, 1, now, &dl), VERITY_ELEASE);
}

static void test_clock_never_runs_backwards(void)
{
    fresh(0);
    simple_group("g", GROUP_SHARED, 1);
    uint64_t m = join("g", "a");
    set_hwm(1, 2);
    struct group_delivery d[2];
    now += 5000;
    CU_ASSERT_EQUAL_FATAL(fetch("g", m, 1, 1, d), 1);
    CU_ASSERT_EQUAL(d[0].lease_deadline_ms, now + 1000);
    /* an older time is taken as the newest seen: the lease is still 1 s */
    int64_t t0 = now;
    now -= 100000;
    CU_ASSERT_EQUAL_FATAL(fetch("g", m, 1, 1, d), 1);
    CU_ASSERT_EQUAL(d[0].lease_deadline_ms, t0 + 1000);
    group_tick(st, now);
    CU_ASSERT_EQUAL(msg_state("g", 0, 0, NULL), GROUP_MSG_LEASED);
    /* extreme times do not overflow */
    now = INT64_MAX;
    group_tick(st, now);
    CU_ASSERT_EQUAL(msg_state("g", 0, 0, NULL), GROUP_MSG_WAITING);
    CU_ASSERT_EQUAL(group_heartbeat(st, "g", m, now), VERITY_EMEMBER); /* session ran out */
    group_check(st);
}

/* ---- membership and ordering ----------------------------------------------------- */

static size_t owned(const char *g, uint64_t m, uint32_t *out)
{
    size_t n = 0;
    CU_ASSERT_EQUAL(group_assignment(st, g, m, out, GROUP_PARTITIONS_MAX, &n), 0);
    return n;
}

static bool subset(const uint32_t *a, size_t na, const uint32_t *b, size_t nb)
{
    for (size_t i = 0; i < na; i++) {
        bool f = false;
        for (size_t j = 0; j < nb && !f; j++)
            f = a[i] == b[j];
        if (!f)
            return false;
    }
    return true;
}

static void test_rebalance_is_sticky_and_balanced(void)
{
    fresh(0);
    simple_group("g", GROUP_ORDERED, 12);
    static uint32_t pa[64], pb[64], pc[64], qa[64], qb[64], qc[64];
    uint64_t a = join("g", "a");
    CU_ASSERT_EQUAL(owned("g", a, pa), 12);
    set_hwm(12, 100);
    struct group_delivery d[64];
    CU_ASSERT_EQUAL_FATAL(fetch("g", a, 24, 12, d), 24); /* 2 per partition */
    uint64_t b = join("g", "b");
    size_t na = owned("g", a, qa), nb = owned("g", b, qb);
    CU_ASSERT_EQUAL(na, 6);
    CU_ASSERT_EQUAL(nb, 6);
    CU_ASSERT(subset(qa, na, pa, 12));
    /* a keeps its leases on the partitions it kept; the moved ones return. */
    for (size_t i = 0; i < 24; i++) {
        bool kept = subset(&d[i].pidx, 1, qa, na);
        CU_ASSERT_EQUAL(msg_state("g", d[i].pidx, d[i].offset, NULL),
                        kept ? GROUP_MSG_LEASED : GROUP_MSG_WAITING);
    }
    memcpy(pa, qa, sizeof(qa));
    memcpy(pb, qb, sizeof(qb));
    uint64_t c = join("g", "c");
    na = owned("g", a, qa);
    nb = owned("g", b, qb);
    size_t nc = owned("g", c, qc);
    CU_ASSERT(na == 4 && nb == 4 && nc == 4);
    CU_ASSERT(subset(qa, na, pa, 6)); /* a and b only gave partitions away */
    CU_ASSERT(subset(qb, nb, pb, 6));
    memcpy(pa, qa, sizeof(qa));
    memcpy(pc, qc, sizeof(qc));
    uint64_t t;
    CU_ASSERT_EQUAL(group_leave(st, "g", b, now, &t), 0);
    drain();
    na = owned("g", a, qa);
    nc = owned("g", c, qc);
    CU_ASSERT(na == 6 && nc == 6);
    CU_ASSERT(subset(pa, 4, qa, na)); /* a and c only gained */
    CU_ASSERT(subset(pc, 4, qc, nc));
    /* c stops heartbeating: removed after its session, a gets everything. */
    for (int i = 0; i < 30; i++) {
        now += 1000;
        CU_ASSERT_EQUAL(group_heartbeat(st, "g", a, now), 0);
        group_tick(st, now);
        drain();
    }
    CU_ASSERT_EQUAL(group_heartbeat(st, "g", c, now), VERITY_EMEMBER);
    const struct eff *e = last_effect(GROUP_EFFECT_MEMBER_REMOVED);
    CU_ASSERT_FATAL(e != NULL);
    CU_ASSERT_EQUAL(e->e.member_id, c);
    CU_ASSERT(e->e.timed_out);
    CU_ASSERT_EQUAL(owned("g", a, qa), 12);
    struct group_info gi;
    CU_ASSERT_EQUAL(group_get_info(st, "g", &gi), 0);
    CU_ASSERT_EQUAL(gi.n_members, 1);
    CU_ASSERT_EQUAL(gi.generation, 5);
    assert_replay_equal();
}

static void test_session_timeout_returns_work(void)
{
    fresh(0);
    simple_group("g", GROUP_SHARED, 1);
    uint64_t a = join("g", "a"), b = join("g", "b");
    set_hwm(1, 10);
    struct group_delivery d[8];
    CU_ASSERT_EQUAL_FATAL(fetch("g", a, 5, 1, d), 5);
    now += 20000;
    CU_ASSERT_EQUAL(group_heartbeat(st, "g", b, now), 0);
    now += 10000; /* a's session (30 s) ran out; leases expired long ago too */
    group_tick(st, now);
    drain();
    CU_ASSERT_EQUAL(group_heartbeat(st, "g", a, now), VERITY_EMEMBER);
    CU_ASSERT_EQUAL(fetch("g", b, 8, 1, d), 8);
    uint32_t twice = 0;
    for (int i = 0; i < 8; i++)
        twice += d[i].delivery_count == 2;
    CU_ASSERT_EQUAL(twice, 5);
    assert_replay_equal();
}

static void test_ordered_keeps_partition_order(void)
{
    fresh(0);
    simple_group("g", GROUP_ORDERED, 1);
    uint64_t m = join("g", "a");
    set_hwm(1, 10);
    struct group_delivery d[16];
    CU_ASSERT_EQUAL_FATAL(fetch("g", m, 5, 1, d), 5);
    for (int i = 0; i < 5; i++)
        CU_ASSERT_EQUAL(d[i].offset, (uint64_t)i);
    CU_ASSERT_EQUAL(nack1("g", m, 0, 2, 500, NULL), 0);
    /* Offset 2 waits: nothing newer goes out meanwhile. */
    CU_ASSERT_EQUAL(fetch("g", m, 16, 1, d), 0);
    now += 500;
    CU_ASSERT_EQUAL_FATAL(fetch("g", m, 16, 1, d), 6);
    CU_ASSERT_EQUAL(d[0].offset, 2);
    CU_ASSERT_EQUAL(d[0].delivery_count, 2);
    for (int i = 1; i < 6; i++)
        CU_ASSERT_EQUAL(d[i].offset, (uint64_t)i + 4);
    /* Leases expire together: redelivered lowest offset first. */
    now += 1000;
    group_tick(st, now);
    CU_ASSERT_EQUAL_FATAL(fetch("g", m, 16, 1, d), 10);
    for (int i = 0; i < 10; i++)
        CU_ASSERT_EQUAL(d[i].offset, (uint64_t)i);
    assert_replay_equal();
}

static void test_shared_many_members_work_one_partition(void)
{
    fresh(0);
    simple_group("g", GROUP_SHARED, 1);
    uint64_t m[4];
    for (int i = 0; i < 4; i++)
        m[i] = join("g", "w");
    set_hwm(1, 1000);
    static bool seen[40];
    struct group_delivery d[10];
    for (int i = 0; i < 4; i++) {
        CU_ASSERT_EQUAL_FATAL(fetch("g", m[i], 10, 1, d), 10);
        for (int k = 0; k < 10; k++) {
            CU_ASSERT_FATAL(d[k].offset < 40);
            CU_ASSERT(!seen[d[k].offset]);
            seen[d[k].offset] = true;
            struct group_msg_info mi;
            CU_ASSERT_EQUAL(group_msg(st, "g", (struct group_ref){0, d[k].offset}, &mi), 0);
            CU_ASSERT_EQUAL(mi.member_id, m[i]);
        }
        /* Each member acknowledges its own; another member's is refused. */
        CU_ASSERT_EQUAL(ack1("g", m[(i + 1) % 4], 0, d[0].offset), VERITY_ELEASE);
        for (int k = 0; k < 10; k++)
            CU_ASSERT_EQUAL(ack1("g", m[i], 0, d[k].offset), 0);
    }
    size_t n;
    struct group_pending p[4];
    CU_ASSERT_EQUAL(group_pending_list(st, "g", 0, p, 4, &n), 0);
    CU_ASSERT_EQUAL(n, 0);
    group_flush(st, now);
    struct group_lag lag;
    CU_ASSERT_EQUAL(group_get_lag(st, "g", 0, 1000, &lag), 0);
    CU_ASSERT_EQUAL(lag.ack_floor, 40);
    CU_ASSERT_EQUAL(lag.unacked, 960);
    assert_replay_equal();
}

static void test_cumulative_ack_in_one_range(void)
{
    fresh(0);
    simple_group("g", GROUP_ORDERED, 2);
    uint64_t m = join("g", "a");
    set_hwm(2, 1000);
    static struct group_delivery d[2000];
    CU_ASSERT_EQUAL_FATAL(fetch("g", m, 2000, 2, d), 2000);
    uint64_t t;
    CU_ASSERT_EQUAL(group_ack_upto(st, "g", m, 0, 1000, now, &t), VERITY_EOFFSET);
    CU_ASSERT_EQUAL(group_ack_upto(st, "g", m, 0, 899, now, &t), 0);
    CU_ASSERT(t > 0);
    size_t before = n_recs;
    group_flush(st, now);
    drain();
    CU_ASSERT_EQUAL_FATAL(n_recs, before + 1);
    CU_ASSERT(recs[n_recs - 1].len < 64); /* 2 delivery ranges + 1 ack range */
    CU_ASSERT_EQUAL(recs[n_recs - 1].seq, t);
    struct group_lag lag;
    CU_ASSERT_EQUAL(group_get_lag(st, "g", 0, 1000, &lag), 0);
    CU_ASSERT_EQUAL(lag.ack_floor, 900);
    CU_ASSERT_EQUAL(lag.unacked, 100);
    CU_ASSERT_EQUAL(lag.leased, 100);
    /* Acknowledging again below the floor is harmless. */
    CU_ASSERT_EQUAL(group_ack_upto(st, "g", m, 0, 10, now, &t), 0);
    fresh(0);
    simple_group("s", GROUP_SHARED, 1);
    m = join("s", "a");
    CU_ASSERT_EQUAL(group_ack_upto(st, "s", m, 0, 0, now, &t), VERITY_EINVAL);
}

static void test_ack_out_of_order_collapses_into_floor(void)
{
    fresh(0);
    simple_group("g", GROUP_SHARED, 1);
    uint64_t m = join("g", "a");
    set_hwm(1, 100);
    struct group_delivery d[100];
    CU_ASSERT_EQUAL_FATAL(fetch("g", m, 100, 1, d), 100);
    for (uint64_t o = 1; o < 100; o += 2)
        CU_ASSERT_EQUAL(ack1("g", m, 0, o), 0);
    group_flush(st, now);
    drain();
    struct group_lag lag;
    CU_ASSERT_EQUAL(group_get_lag(st, "g", 0, 100, &lag), 0);
    CU_ASSERT_EQUAL(lag.ack_floor, 0);
    CU_ASSERT_EQUAL(lag.ranges, 50);
    CU_ASSERT_EQUAL(lag.done_above_floor, 50);
    for (uint64_t o = 0; o < 100; o += 2)
        CU_ASSERT_EQUAL(ack1("g", m, 0, o), 0);
    group_flush(st, now);
    drain();
    CU_ASSERT_EQUAL(group_get_lag(st, "g", 0, 100, &lag), 0);
    CU_ASSERT_EQUAL(lag.ack_floor, 100);
    CU_ASSERT_EQUAL(lag.ranges, 0);
    CU_ASSERT_EQUAL(lag.unacked, 0);
    assert_replay_equal();
}

/* ---- tickets, limits, inspection -------------------------------------------------- */

static void test_ack_ticket_is_durable_only_after_flush(void)
{
    fresh(0);
    simple_group("g", GROUP_SHARED, 1);
    uint64_t m = join("g", "a");
    set_hwm(1, 3);
    struct group_delivery d[3];
    uint64_t ft;
    size_t n;
    CU_ASSERT_EQUAL(group_fetch(st, "g", m, 3, hwm_all, 1, now, d, &n, &ft), 0);
    CU_ASSERT(ft > group_last_seq(st)); /* deliveries not yet logged */
    struct group_ref r = {0, 1};
    uint64_t t;
    CU_ASSERT_EQUAL(group_ack(st, "g", m, &r, 1, now, &t), 0);
    CU_ASSERT_EQUAL(t, ft); /* same open progress record */
    CU_ASSERT_EQUAL(group_batch_items(st), 2);
    drain();
    size_t before = n_recs;
    group_flush(st, now);
    drain();
    CU_ASSERT_EQUAL(n_recs, before + 1);
    CU_ASSERT_EQUAL(recs[n_recs - 1].seq, t);
    CU_ASSERT_EQUAL(group_batch_items(st), 0);
    enum group_rec_type type;
    uint64_t seq;
    uint32_t gid;
    CU_ASSERT_EQUAL(group_record_peek(recs[n_recs - 1].p, recs[n_recs - 1].len, &type, &seq, &gid),
                    0);
    CU_ASSERT_EQUAL(type, GROUP_REC_PROGRESS);
    /* A join emits the open progress record first, keeping seq order. */
    CU_ASSERT_EQUAL(ack1("g", m, 0, 0), 0);
    uint64_t m2 = join("g", "b");
    CU_ASSERT(m2 != 0);
    CU_ASSERT_EQUAL(group_batch_items(st), 0);
}

static void test_pending_limit_bounds_deliveries(void)
{
    fresh(0);
    struct group_config c;
    cfg_init(&c, "g", GROUP_SHARED, 2);
    c.pending_max = 10;
    create(&c);
    uint64_t m = join("g", "a");
    set_hwm(2, 100);
    struct group_delivery d[20];
    CU_ASSERT_EQUAL(fetch("g", m, 20, 2, d), 10);
    size_t n;
    uint64_t t;
    CU_ASSERT_EQUAL(group_fetch(st, "g", m, 20, hwm_all, 2, now, d, &n, &t), VERITY_ELIMIT);
    CU_ASSERT_EQUAL(n, 0);
    for (int i = 0; i < 10; i++)
        CU_ASSERT_EQUAL(ack1("g", m, d[i].pidx, d[i].offset), 0);
    /* Acked deliveries count until their record is emitted. */
    CU_ASSERT_EQUAL(group_fetch(st, "g", m, 20, hwm_all, 2, now, d, &n, &t), VERITY_ELIMIT);
    group_flush(st, now);
    drain();
    CU_ASSERT_EQUAL(fetch("g", m, 20, 2, d), 10);
    /* The state-wide cap lowers a group's limit. */
    fresh(5);
    cfg_init(&c, "g", GROUP_SHARED, 1);
    create(&c);
    struct group_info gi;
    CU_ASSERT_EQUAL(group_get_info(st, "g", &gi), 0);
    CU_ASSERT_EQUAL(gi.pending_max, 5);
}

static void test_pending_by_member_and_age(void)
{
    fresh(0);
    simple_group("g", GROUP_SHARED, 1);
    uint64_t a = join("g", "a"), b = join("g", "b");
    set_hwm(1, 10);
    struct group_delivery d[4];
    CU_ASSERT_EQUAL(fetch("g", a, 2, 1, d), 2);
    now += 10;
    CU_ASSERT_EQUAL(fetch("g", b, 3, 1, d), 3);
    now += 10;
    CU_ASSERT_EQUAL(fetch("g", a, 1, 1, d), 1);
    struct group_pending p[8];
    size_t n;
    CU_ASSERT_EQUAL(group_pending_list(st, "g", a, p, 8, &n), 0);
    CU_ASSERT_EQUAL_FATAL(n, 3);
    CU_ASSERT(p[0].first_delivery_ms <= p[1].first_delivery_ms &&
              p[1].first_delivery_ms < p[2].first_delivery_ms);
    CU_ASSERT_EQUAL(p[2].offset, 5);
    CU_ASSERT_EQUAL(group_pending_list(st, "g", 0, p, 2, &n), 0);
    CU_ASSERT_EQUAL(n, 6);
    CU_ASSERT_EQUAL(p[0].first_delivery_ms, 1000);
    CU_ASSERT_EQUAL(p[1].first_delivery_ms, 1000);
    struct group_member_info mi[4];
    CU_ASSERT_EQUAL(group_members(st, "g", mi, 4, &n), 0);
    CU_ASSERT_EQUAL(n, 2);
    CU_ASSERT_EQUAL(mi[0].member_id, a);
    CU_ASSERT_EQUAL(mi[0].n_leased, 3);
    CU_ASSERT_EQUAL(mi[1].n_leased, 3);
    struct group_lag lag;
    CU_ASSERT_EQUAL(group_get_lag(st, "g", 0, 10, &lag), 0);
    CU_ASSERT_EQUAL(lag.oldest_first_delivery_ms, 1000);
    CU_ASSERT_EQUAL(lag.unacked, 10);
}

static void test_reset_and_delete(void)
{
    fresh(0);
    simple_group("g", GROUP_SHARED, 2);
    uint64_t m = join("g", "a");
    set_hwm(2, 50);
    struct group_delivery d[20];
    CU_ASSERT_EQUAL(fetch("g", m, 20, 2, d), 20);
    CU_ASSERT_EQUAL(ack1("g", m, d[0].pidx, d[0].offset), 0);
    uint64_t off[2] = {40, 7}, t;
    CU_ASSERT_EQUAL(group_reset(st, "g", off, 1, now, &t), VERITY_EINVAL);
    CU_ASSERT_EQUAL(group_reset(st, "g", off, 2, now, &t), 0);
    drain();
    struct group_lag lag;
    CU_ASSERT_EQUAL(group_get_lag(st, "g", 0, 50, &lag), 0);
    CU_ASSERT_EQUAL(lag.ack_floor, 40);
    CU_ASSERT_EQUAL(lag.read_cursor, 40);
    CU_ASSERT_EQUAL(lag.leased, 0);
    CU_ASSERT_EQUAL(group_get_lag(st, "g", 1, 50, &lag), 0);
    CU_ASSERT_EQUAL(lag.ack_floor, 7);
    CU_ASSERT_EQUAL(fetch("g", m, 20, 2, d), 20);
    CU_ASSERT(d[0].offset == 40 || d[0].offset == 7);
    assert_replay_equal();
    CU_ASSERT_EQUAL(group_delete(st, "g", now, &t), 0);
    drain();
    struct group_info gi;
    CU_ASSERT_EQUAL(group_get_info(st, "g", &gi), VERITY_ENOTFOUND);
    CU_ASSERT_EQUAL(group_delete(st, "g", now, &t), VERITY_ENOTFOUND);
    assert_replay_equal();
}

static void test_multi_topic_group_numbers_partitions_flat(void)
{
    fresh(0);
    struct group_config c;
    cfg_init(&c, "multi", GROUP_ORDERED, 2);
    c.n_topics = 2;
    snprintf(c.topics[1].name, sizeof(c.topics[1].name), "payments");
    c.topics[1].partitions = 3;
    create(&c);
    struct group_info gi;
    CU_ASSERT_EQUAL(group_get_info(st, "multi", &gi), 0);
    CU_ASSERT_EQUAL(gi.n_partitions, 5);
    CU_ASSERT_STRING_EQUAL(gi.cfg->dlq_topic, "orders.dlq");
    uint32_t pidx = 99;
    CU_ASSERT_EQUAL(group_part_index(st, "multi", "payments", 2, &pidx), 0);
    CU_ASSERT_EQUAL(pidx, 4);
    CU_ASSERT_EQUAL(group_part_index(st, "multi", "payments", 3, &pidx), VERITY_EINVAL);
    CU_ASSERT_EQUAL(group_part_index(st, "multi", "nope", 0, &pidx), VERITY_EINVAL);
    const char *topics[] = {"payments"};
    uint64_t m, t;
    CU_ASSERT_EQUAL(group_join(st, "multi", "a", topics, 1, 0, now, &m, &t), 0);
    drain();
    set_hwm(5, 0);
    hwm_all[4] = 2;
    struct group_delivery d[4];
    CU_ASSERT_EQUAL_FATAL(fetch("multi", m, 4, 5, d), 2);
    CU_ASSERT_EQUAL(d[0].pidx, 4);
    CU_ASSERT_EQUAL(d[0].topic, 1);
    CU_ASSERT_EQUAL(d[0].partition, 2);
    CU_ASSERT_EQUAL(group_term(st, "multi", m, (struct group_ref){4, 1}, NULL, now, &t), 0);
    drain();
    const struct eff *e = last_effect(GROUP_EFFECT_DEAD_LETTER);
    CU_ASSERT_FATAL(e != NULL);
    CU_ASSERT_STRING_EQUAL(e->topic, "payments");
    CU_ASSERT_EQUAL(e->e.partition, 2);
    CU_ASSERT_STRING_EQUAL(e->error, "");
    assert_replay_equal();
}

/* ---- bad input: typed error, state unchanged --------------------------------------- */

static uint8_t *snap_before;
static size_t snap_len;

static void mark(void)
{
    drain();
    free(snap_before);
    snap_before = snap(st, true, &snap_len);
}

static void unchanged(int line)
{
    size_t len;
    uint8_t *now_snap = snap(st, true, &len);
    bool same = len == snap_len && memcmp(now_snap, snap_before, len) == 0;
    if (!same)
        fprintf(stderr, "state changed at line %d\n", line);
    CU_ASSERT(same);
    const uint8_t *p;
    size_t l;
    uint64_t s;
    CU_ASSERT(!group_next_record(st, &p, &l, &s)); /* and nothing emitted */
    free(now_snap);
}

#define EXPECT(call, code)                                                                         \
    do {                                                                                           \
        mark();                                                                                    \
        CU_ASSERT_EQUAL((call), (code));                                                           \
        unchanged(__LINE__);                                                                       \
    } while (0)

static void test_bad_input_is_typed_and_changes_nothing(void)
{
    fresh(0);
    simple_group("g", GROUP_SHARED, 2);
    uint64_t a = join("g", "a"), b = join("g", "b");
    set_hwm(2, 10);
    struct group_delivery d[4];
    CU_ASSERT_EQUAL_FATAL(fetch("g", a, 2, 2, d), 2);
    uint32_t pa = d[0].pidx;
    uint64_t oa = d[0].offset;
    uint64_t t;
    int64_t dl;
    size_t n;
    const char *good[] = {"orders"}, *bad[] = {"payments"}, *mixed[] = {"orders", "nope"};
    uint64_t id;
    struct group_ref never = {pa, 9}, theirs = {pa, oa}, badp = {5, 0};
    now += 1;
    /* ack of an offset never delivered */
    EXPECT(group_ack(st, "g", a, &never, 1, now, &t), VERITY_EOFFSET);
    /* ack by a member that is not the lease holder */
    EXPECT(group_ack(st, "g", b, &theirs, 1, now, &t), VERITY_ELEASE);
    /* all or none: one bad ref refuses the whole ack */
    struct group_ref two[2] = {{pa, oa}, {pa, 9}};
    EXPECT(group_ack(st, "g", a, two, 2, now, &t), VERITY_EOFFSET);
    /* unknown group, unknown member */
    EXPECT(group_ack(st, "nope", a, &theirs, 1, now, &t), VERITY_ENOTFOUND);
    EXPECT(group_fetch(st, "nope", a, 4, hwm_all, 2, now, d, &n, &t), VERITY_ENOTFOUND);
    EXPECT(group_ack(st, "g", 12345, &theirs, 1, now, &t), VERITY_EMEMBER);
    EXPECT(group_fetch(st, "g", a + 7, 4, hwm_all, 2, now, d, &n, &t), VERITY_EMEMBER);
    EXPECT(group_heartbeat(st, "g", 0, now), VERITY_EMEMBER);
    EXPECT(group_leave(st, "g", 99, now, &t), VERITY_EMEMBER);
    /* a join with a wrong topic */
    EXPECT(group_join(st, "g", "c", bad, 1, 0, now, &id, &t), VERITY_EINVAL);
    EXPECT(group_join(st, "g", "c", mixed, 2, 0, now, &id, &t), VERITY_EINVAL);
    EXPECT(group_join(st, "g", "c", good, 0, 0, now, &id, &t), VERITY_EINVAL);
    EXPECT(group_join(st, "nope", "c", good, 1, 0, now, &id, &t), VERITY_ENOTFOUND);
    /* nack / extend / term of a message not held */
    EXPECT(group_nack(st, "g", b, theirs, -1, "x", now, &t), VERITY_ELEASE);
    EXPECT(group_nack(st, "g", a, never, -1, "x", now, &t), VERITY_EOFFSET);
    EXPECT(group_nack(st, "g", a, theirs, GROUP_DELAY_MS_MAX + 1, "x", now, &t), VERITY_EINVAL);
    EXPECT(group_extend(st, "g", b, &theirs, 1, now, &dl), VERITY_ELEASE);
    EXPECT(group_term(st, "g", b, theirs, "x", now, &t), VERITY_ELEASE);
    /* partition out of range, wrong hwm count, hwm beyond the offset limit */
    EXPECT(group_ack(st, "g", a, &badp, 1, now, &t), VERITY_EINVAL);
    EXPECT(group_fetch(st, "g", a, 4, hwm_all, 1, now, d, &n, &t), VERITY_EINVAL);
    uint64_t huge[2] = {GROUP_OFFSET_LIMIT, 0};
    EXPECT(group_fetch(st, "g", a, 4, huge, 2, now, d, &n, &t), VERITY_EOFFSET);
    /* cumulative ack in shared mode; dead-lettered report for a live lease */
    EXPECT(group_ack_upto(st, "g", a, pa, oa, now, &t), VERITY_EINVAL);
    EXPECT(group_dead_lettered(st, "g", theirs, now, &t), VERITY_EINVAL);
    EXPECT(group_dead_lettered(st, "g", never, now, &t), VERITY_ENOTFOUND);
    /* ack after the lease moved: expired and redelivered to another member */
    now += 1000;
    group_tick(st, now);
    CU_ASSERT_EQUAL_FATAL(fetch("g", b, 1, 2, d), 1);
    struct group_ref moved = {d[0].pidx, d[0].offset};
    EXPECT(group_ack(st, "g", a, &moved, 1, now, &t), VERITY_ELEASE);
    EXPECT(group_nack(st, "g", a, moved, 0, NULL, now, &t), VERITY_ELEASE);
    /* bad configurations and duplicate groups */
    struct group_config c;
    cfg_init(&c, "g", GROUP_SHARED, 1);
    uint64_t z[4] = {0};
    EXPECT(group_create(st, &c, z, 1, now, &t), VERITY_EEXIST);
    cfg_init(&c, "h", GROUP_SHARED, 1);
    EXPECT(group_create(st, &c, z, 2, now, &t), VERITY_EINVAL);
    c.max_deliveries = 0;
    EXPECT(group_create(st, &c, z, 1, now, &t), VERITY_EINVAL);
    cfg_init(&c, "h", GROUP_SHARED, 1);
    c.lease_ms = -5;
    EXPECT(group_create(st, &c, z, 1, now, &t), VERITY_EINVAL);
    cfg_init(&c, "", GROUP_SHARED, 1);
    EXPECT(group_create(st, &c, z, 1, now, &t), VERITY_EINVAL);
    cfg_init(&c, "h", GROUP_SHARED, 1);
    c.n_topics = 2;
    snprintf(c.topics[1].name, sizeof(c.topics[1].name), "orders");
    c.topics[1].partitions = 1;
    EXPECT(group_create(st, &c, z, 2, now, &t), VERITY_EINVAL);
    /* replay-only and live-only calls */
    EXPECT(group_apply(st, recs[0].p, recs[0].len), VERITY_EINVAL);
    EXPECT(group_recover(st, now), VERITY_EINVAL);
    free(snap_before);
    snap_before = NULL;
}

static void test_late_ack_by_last_holder_is_accepted(void)
{
    fresh(0);
    simple_group("g", GROUP_SHARED, 1);
    uint64_t a = join("g", "a"), b = join("g", "b");
    set_hwm(1, 1);
    struct group_delivery d[1];
    CU_ASSERT_EQUAL_FATAL(fetch("g", a, 1, 1, d), 1);
    now += 1000;
    group_tick(st, now); /* expired, waiting: nobody else holds it */
    CU_ASSERT_EQUAL(ack1("g", b, 0, 0), VERITY_ELEASE);
    CU_ASSERT_EQUAL(ack1("g", a, 0, 0), 0);
    CU_ASSERT_EQUAL(fetch("g", b, 1, 1, d), 0);
    CU_ASSERT_EQUAL(ack1("g", a, 0, 0), 0); /* again: still fine */
}

/* A coordinator change (or restart) between a delivery and its ack: the
 * new state knows the message was delivered but not to whom (deliveries
 * are logged as ranges). The member that holds it acks with the lease it
 * got from the old coordinator: accepted while nobody got it since; once
 * it went out again, only the new holder's ack counts. */
static void test_ack_after_recovery_is_accepted(void)
{
    for (int mode = 0; mode < 2; mode++) {
        fresh(0);
        simple_group("g", mode ? GROUP_ORDERED : GROUP_SHARED, 1);
        uint64_t a = join("g", "a");
        set_hwm(1, 4);
        struct group_delivery d[4];
        CU_ASSERT_EQUAL_FATAL(fetch("g", a, 4, 1, d), 4);
        group_flush(st, now);
        drain();
        /* the new coordinator: the committed records, then recovery */
        struct group_state *r = replay(n_recs);
        group_state_free(st);
        st = r;
        CU_ASSERT_EQUAL_FATAL(group_recover(st, now), 0);
        drain();
        /* offset 3: the holder's nack, then its term, are accepted too */
        CU_ASSERT_EQUAL(nack1("g", a, 0, 3, 60000, "bad"), 0);
        CU_ASSERT_EQUAL(msg_state("g", 0, 3, NULL), GROUP_MSG_WAITING);
        uint64_t tk;
        CU_ASSERT_EQUAL(group_term(st, "g", a, (struct group_ref){0, 3}, "worse", now, &tk), 0);
        drain();
        CU_ASSERT_EQUAL(msg_state("g", 0, 3, NULL), GROUP_MSG_DEAD_LETTER);
        /* an extend has no lease to extend */
        int64_t dl;
        struct group_ref r0 = {0, 0};
        CU_ASSERT_EQUAL(group_extend(st, "g", a, &r0, 1, now, &dl), VERITY_ELEASE);
        CU_ASSERT_EQUAL(ack1("g", a, 0, 0), 0);
        CU_ASSERT_EQUAL(msg_state("g", 0, 0, NULL), GROUP_MSG_DONE);
        /* offset 1 goes out again (to a): its old ack is still its holder's */
        CU_ASSERT_EQUAL_FATAL(fetch("g", a, 1, 1, d), 1);
        CU_ASSERT_EQUAL(d[0].offset, 1);
        CU_ASSERT_EQUAL(d[0].delivery_count, 2);
        CU_ASSERT_EQUAL(ack1("g", a, 0, 1), 0);
        if (mode == 0) {
            /* shared: offset 2 goes to b; a's late ack is refused now */
            uint64_t b = join("g", "b");
            CU_ASSERT_EQUAL_FATAL(fetch("g", b, 1, 1, d), 1);
            CU_ASSERT_EQUAL(d[0].offset, 2);
            CU_ASSERT_EQUAL(ack1("g", a, 0, 2), VERITY_ELEASE);
            CU_ASSERT_EQUAL(ack1("g", b, 0, 2), 0);
        } else {
            CU_ASSERT_EQUAL(ack1("g", a, 0, 2), 0);
        }
        assert_replay_equal();
    }
}

static void test_corrupt_records_are_refused(void)
{
    fresh(0);
    simple_group("g", GROUP_SHARED, 2);
    uint64_t m = join("g", "a");
    set_hwm(2, 10);
    struct group_delivery d[8];
    CU_ASSERT_EQUAL(fetch("g", m, 8, 2, d), 8);
    CU_ASSERT_EQUAL(nack1("g", m, d[0].pidx, d[0].offset, 0, "err"), 0);
    CU_ASSERT_EQUAL(group_horizon(st, "g", 1, 30, now), 0); /* a version-2 record */
    group_flush(st, now);
    drain();
    struct group_state *r = NULL;
    CU_ASSERT_EQUAL_FATAL(group_state_new(0, &r), 0);
    for (size_t i = 0; i < n_recs; i++) {
        uint8_t *p = malloc(recs[i].len);
        /* every single-bit flip is refused, and the state does not move */
        for (size_t bit = 0; bit < recs[i].len * 8; bit += 7) {
            memcpy(p, recs[i].p, recs[i].len);
            p[bit / 8] ^= (uint8_t)(1u << (bit % 8));
            size_t l1, l2;
            uint8_t *b1 = snap(r, true, &l1);
            int rc = group_apply(r, p, recs[i].len);
            CU_ASSERT(rc == VERITY_ECORRUPT || rc == VERITY_EVERSION);
            uint8_t *b2 = snap(r, true, &l2);
            CU_ASSERT(l1 == l2 && memcmp(b1, b2, l1) == 0);
            free(b1);
            free(b2);
        }
        /* truncated */
        CU_ASSERT_EQUAL(group_apply(r, recs[i].p, recs[i].len - 1), VERITY_ECORRUPT);
        free(p);
        CU_ASSERT_EQUAL_FATAL(group_apply(r, recs[i].p, recs[i].len), 0);
        /* the same record twice: seq does not follow */
        CU_ASSERT_EQUAL(group_apply(r, recs[i].p, recs[i].len), VERITY_ECORRUPT);
    }
    group_state_free(r);
}


/* ---- delivery horizon ------------------------------------------------------------------ */

/* Replays the first keep records into a new state and recovers it (the
 * crash lost the rest); st becomes the new state. */
static void crash_to(size_t keep)
{
    for (size_t i = keep; i < n_recs; i++)
        free(recs[i].p);
    n_recs = keep;
    struct group_state *r = replay(keep);
    group_state_free(st);
    st = r;
    CU_ASSERT_EQUAL_FATAL(group_recover(st, now), 0);
    drain();
}

static void test_horizon_answers_first_deliveries_early(void)
{
    fresh(0);
    simple_group("g", GROUP_ORDERED, 1);
    uint64_t m = join("g", "a");
    set_hwm(1, 0);
    /* The partition's end moves to 10 before anything is committed: the
     * horizon goes GROUP_HORIZON_AHEAD past the read cursor (0). */
    const uint64_t H = GROUP_HORIZON_AHEAD;
    CU_ASSERT_EQUAL(group_horizon(st, "g", 0, 10, now), 0);
    CU_ASSERT_EQUAL(group_horizon(st, "g", 0, 8, now), 0); /* never lowers */
    CU_ASSERT_EQUAL(group_horizon(st, "g", 0, 20, now), 0); /* enough lead: no item */
    group_flush(st, now);
    drain();
    uint64_t hseq = n_recs; /* the record that carries the horizon */
    set_hwm(1, 6);
    static struct group_delivery d[2 * GROUP_HORIZON_AHEAD];
    size_t n = 0;
    uint64_t t;
    CU_ASSERT_EQUAL(group_fetch(st, "g", m, 16, hwm_all, 1, now, d, &n, &t), 0);
    CU_ASSERT_EQUAL(n, 6);
    CU_ASSERT_EQUAL(t, hseq); /* already durable: no wait for the delivery record */
    for (size_t i = 0; i < n; i++)
        CU_ASSERT_EQUAL(d[i].delivery_count, 1);
    drain();
    /* A fetch that reaches past the horizon waits for its own record. */
    set_hwm(1, H + 6);
    CU_ASSERT_EQUAL(group_fetch(st, "g", m, 2 * GROUP_HORIZON_AHEAD, hwm_all, 1, now, d, &n, &t),
                    0);
    CU_ASSERT_EQUAL(n, H);
    CU_ASSERT(t > hseq);
    drain();
    /* Crash before the delivery records: offsets below the horizon come
     * again with a count of 2 (the early answers showed 1), the rest with 1. */
    crash_to((size_t)hseq);
    /* Members survive a restart (their JOIN is durable). */
    CU_ASSERT_EQUAL(group_heartbeat(st, "g", m, now), 0);
    CU_ASSERT_EQUAL(group_fetch(st, "g", m, 2 * GROUP_HORIZON_AHEAD, hwm_all, 1, now, d, &n, &t),
                    0);
    CU_ASSERT_EQUAL(n, H + 6);
    for (size_t i = 0; i < n; i++)
        CU_ASSERT_EQUAL(d[i].delivery_count, d[i].offset < H ? 2u : 1u);
    drain();
    assert_replay_equal();
    /* A second crash keeps the raised counts. */
    group_flush(st, now);
    drain();
    crash_to(n_recs);
    CU_ASSERT_EQUAL(group_fetch(st, "g", m, 2 * GROUP_HORIZON_AHEAD, hwm_all, 1, now, d, &n, &t),
                    0);
    CU_ASSERT_EQUAL(n, H + 6);
    for (size_t i = 0; i < n; i++)
        CU_ASSERT_EQUAL(d[i].delivery_count, d[i].offset < H ? 3u : 2u);
    drain();
}

/* A rise of the horizon must not hold back offsets the previous horizon
 * already covered: their ticket stays the previous horizon's record (long
 * durable), not the new record, which may still be on its way to the disk
 * (a relaxed topic: no data sync covers it). Offsets only the new record
 * covers wait for it; past it, for the delivery record. A crash that loses
 * the new record still counts every early answer. (Before, every first
 * delivery after a rise waited for the rise's record: issue 16.) */
static void test_horizon_rise_keeps_old_tickets(void)
{
    fresh(0);
    simple_group("g", GROUP_SHARED, 1);
    uint64_t m = join("g", "a");
    const uint64_t H = GROUP_HORIZON_AHEAD;
    CU_ASSERT_EQUAL(group_horizon(st, "g", 0, 10, now), 0);
    group_flush(st, now);
    drain();
    uint64_t hseq = n_recs; /* horizon H */
    static struct group_delivery d[2 * GROUP_HORIZON_AHEAD];
    size_t n = 0;
    uint64_t t;
    set_hwm(1, 200);
    CU_ASSERT_EQUAL(group_fetch(st, "g", m, 200, hwm_all, 1, now, d, &n, &t), 0);
    CU_ASSERT_EQUAL(n, 200);
    CU_ASSERT_EQUAL(t, hseq);
    group_flush(st, now);
    drain();
    size_t keep = n_recs; /* durable: the deliveries of [0, 200) */
    /* The log end passes H - H/2: the horizon rises to cursor + H. */
    CU_ASSERT_EQUAL(group_horizon(st, "g", 0, H / 2 + 100, now), 0);
    group_flush(st, now);
    drain();
    uint64_t h2seq = n_recs; /* horizon 200 + H, not durable in this test's story */
    CU_ASSERT(h2seq > hseq);
    set_hwm(1, 210);
    CU_ASSERT_EQUAL(group_fetch(st, "g", m, 16, hwm_all, 1, now, d, &n, &t), 0);
    CU_ASSERT_EQUAL(n, 10);
    CU_ASSERT_EQUAL(t, hseq); /* below the old horizon: no wait for the rise */
    drain();
    set_hwm(1, H + 10);
    CU_ASSERT_EQUAL(group_fetch(st, "g", m, 2 * GROUP_HORIZON_AHEAD, hwm_all, 1, now, d, &n, &t),
                    0);
    CU_ASSERT_EQUAL(n, H + 10 - 210);
    CU_ASSERT_EQUAL(t, h2seq); /* reaches past the old horizon: waits for the rise */
    drain();
    set_hwm(1, 200 + H + 1);
    CU_ASSERT_EQUAL(group_fetch(st, "g", m, 2 * GROUP_HORIZON_AHEAD, hwm_all, 1, now, d, &n, &t),
                    0);
    CU_ASSERT_EQUAL(n, 200 + H + 1 - (H + 10));
    CU_ASSERT(t > h2seq); /* past the new horizon: its own record */
    drain();
    /* Crash with only the deliveries of [0, 200) durable (the rise lost):
     * [200, 210) was answered on the old horizon and comes again with a
     * count of 2; [210, H) too (still under the durable horizon). */
    crash_to(keep);
    CU_ASSERT_EQUAL(group_heartbeat(st, "g", m, now), 0);
    set_hwm(1, 210);
    CU_ASSERT_EQUAL(group_fetch(st, "g", m, 2 * GROUP_HORIZON_AHEAD, hwm_all, 1, now, d, &n, &t),
                    0);
    CU_ASSERT_EQUAL(n, 210);
    for (size_t i = 0; i < n; i++)
        CU_ASSERT_EQUAL(d[i].delivery_count, 2u);
    drain();
    /* A reset forgets the previous horizon too (a rise first, so there is
     * one to forget). */
    CU_ASSERT_EQUAL(group_horizon(st, "g", 0, H / 2 + 100, now), 0);
    group_flush(st, now);
    drain();
    uint64_t zero = 0;
    CU_ASSERT_EQUAL(group_reset(st, "g", &zero, 1, now, &t), 0);
    drain();
    uint64_t rseq = n_recs;
    set_hwm(1, 5);
    CU_ASSERT_EQUAL(group_fetch(st, "g", m, 8, hwm_all, 1, now, d, &n, &t), 0);
    CU_ASSERT_EQUAL(n, 5);
    CU_ASSERT(t > rseq); /* horizon at 0 after the reset: waits for its record */
    drain();
    assert_replay_equal();
}

static void test_horizon_window_and_reset(void)
{
    fresh(0);
    simple_group("g", GROUP_SHARED, 1);
    uint64_t m = join("g", "a");
    /* The horizon runs at most GROUP_HORIZON_AHEAD past the read cursor. */
    CU_ASSERT_EQUAL(group_horizon(st, "g", 0, 1000000, now), 0);
    group_flush(st, now);
    drain();
    uint64_t hseq = n_recs;
    set_hwm(1, GROUP_HORIZON_AHEAD + 5);
    struct group_delivery d[8];
    size_t n = 0;
    uint64_t t;
    /* Deliver up to the window: early tickets; one past it: a wait. */
    uint64_t got = 0;
    while (got < GROUP_HORIZON_AHEAD) {
        CU_ASSERT_EQUAL_FATAL(group_fetch(st, "g", m, 8, hwm_all, 1, now, d, &n, &t), 0);
        CU_ASSERT_EQUAL_FATAL(n, 8);
        CU_ASSERT_EQUAL(t, hseq);
        for (size_t i = 0; i < n; i++) {
            struct group_ref r = {0, d[i].offset};
            CU_ASSERT_EQUAL(group_ack(st, "g", m, &r, 1, now, &t), 0);
        }
        got += n;
        drain();
    }
    CU_ASSERT_EQUAL(group_fetch(st, "g", m, 1, hwm_all, 1, now, d, &n, &t), 0);
    CU_ASSERT_EQUAL(n, 1);
    CU_ASSERT(t > hseq);
    drain();
    /* A reset moves the horizon to the new position: a crash right after it
     * does not count the replayed messages as delivered. */
    uint64_t zero = 0;
    CU_ASSERT_EQUAL(group_reset(st, "g", &zero, 1, now, &t), 0);
    drain();
    crash_to(n_recs);
    m = join("g", "b");
    CU_ASSERT_EQUAL(group_fetch(st, "g", m, 8, hwm_all, 1, now, d, &n, &t), 0);
    CU_ASSERT_EQUAL(n, 8);
    for (size_t i = 0; i < n; i++)
        CU_ASSERT_EQUAL(d[i].delivery_count, 1);
    drain();
    /* Bad input: unknown group, partition out of range, offset too large. */
    CU_ASSERT_EQUAL(group_horizon(st, "nope", 0, 5, now), VERITY_ENOTFOUND);
    CU_ASSERT_EQUAL(group_horizon(st, "g", 1, 5, now), VERITY_EINVAL);
    CU_ASSERT_EQUAL(group_horizon(st, "g", 0, GROUP_OFFSET_LIMIT, now), VERITY_EOFFSET);
    assert_replay_equal();
}

static void test_horizon_off_when_max_deliveries_is_1(void)
{
    fresh(0);
    struct group_config c;
    cfg_init(&c, "g", GROUP_ORDERED, 1);
    c.max_deliveries = 1;
    create(&c);
    uint64_t m = join("g", "a");
    CU_ASSERT_EQUAL(group_horizon(st, "g", 0, 4, now), 0);
    CU_ASSERT_EQUAL(group_batch_items(st), 0); /* no horizon for such a group */
    group_flush(st, now);
    drain();
    size_t keep = n_recs;
    set_hwm(1, 6);
    struct group_delivery d[8];
    size_t n = 0;
    uint64_t t;
    CU_ASSERT_EQUAL(group_fetch(st, "g", m, 8, hwm_all, 1, now, d, &n, &t), 0);
    CU_ASSERT_EQUAL(n, 6);
    CU_ASSERT(t > keep); /* answered only once its own record is durable */
    drain();
    /* That record was lost: the fetch was never answered, so a restart
     * delivers everything once, and dead-letters nothing. */
    crash_to(keep);
    CU_ASSERT_EQUAL(fetch("g", m, 8, 1, d), 6);
    for (size_t i = 0; i < 6; i++)
        CU_ASSERT_EQUAL(d[i].delivery_count, 1);
    CU_ASSERT_PTR_NULL(last_effect(GROUP_EFFECT_DEAD_LETTER));
    assert_replay_equal();
}

/* ---- seeded random runs: replay equality and the restart bound -------------------------- */

#define R_GROUPS 2
#define R_PARTS_MAX 4
#define R_OFF_MAX 4096
#define R_MEMBERS_MAX 6

static uint64_t rng;

static uint64_t rnd(void)
{
    rng ^= rng >> 12;
    rng ^= rng << 25;
    rng ^= rng >> 27;
    return rng * 2685821657736338717ull;
}

static uint64_t rn(uint64_t n)
{
    return n ? rnd() % n : 0;
}

struct rgroup {
    const char *name;
    uint32_t parts;
    bool ordered;
    uint64_t members[R_MEMBERS_MAX];
    uint32_t n_members;
    uint64_t hwm[R_PARTS_MAX];
    uint64_t done_ticket[R_PARTS_MAX][R_OFF_MAX];  /* first answered ack or dead-letter */
    uint64_t decide_ticket[R_PARTS_MAX][R_OFF_MAX]; /* term / dead-letter decision */
    uint32_t sent_count[R_PARTS_MAX][R_OFF_MAX];   /* not kept per ticket: see dlog */
};

struct dl {
    uint8_t g;
    uint8_t pidx;
    uint16_t count;
    uint32_t offset;
    uint64_t ticket;
};

static struct rgroup rg[R_GROUPS];
static struct dl *dlog;
static size_t n_dlog, cap_dlog;
static struct group_ref dlq_pending[R_GROUPS][4096];
static size_t n_dlq_pending[R_GROUPS];
static size_t effs_seen;

static void r_setup(bool with_reset_groups)
{
    (void)with_reset_groups;
    fresh(0);
    memset(rg, 0, sizeof(rg));
    n_dlog = 0;
    effs_seen = 0;
    memset(n_dlq_pending, 0, sizeof(n_dlq_pending));
    for (int i = 0; i < R_GROUPS; i++) {
        struct rgroup *g = &rg[i];
        g->name = i == 0 ? "og" : "sg";
        g->ordered = i == 0;
        g->parts = i == 0 ? 4 : 3;
        for (uint32_t p = 0; p < R_PARTS_MAX; p++)
            for (uint32_t o = 0; o < R_OFF_MAX; o++)
                g->done_ticket[p][o] = g->decide_ticket[p][o] = UINT64_MAX;
        struct group_config c;
        cfg_init(&c, g->name, g->ordered ? GROUP_ORDERED : GROUP_SHARED, g->parts);
        c.lease_ms = 500;
        c.session_ms = 3000;
        c.max_deliveries = 4;
        c.n_backoff = 2;
        c.backoff_ms[0] = 50;
        c.backoff_ms[1] = 200;
        c.pending_max = 300;
        create(&c);
    }
}

static void set_done(struct rgroup *g, uint32_t p, uint64_t o, uint64_t t)
{
    if (o < R_OFF_MAX && g->done_ticket[p][o] == UINT64_MAX)
        g->done_ticket[p][o] = t;
}

/* Reacts to new effects: reports some dead-letters at once, others later. */
static void r_effects(void)
{
    drain();
    for (; effs_seen < n_effs; effs_seen++) {
        const struct eff *e = &effs[effs_seen];
        if (e->e.type != GROUP_EFFECT_DEAD_LETTER)
            continue;
        int gi = strcmp(e->group, "og") == 0 ? 0 : 1;
        if (n_dlq_pending[gi] < 4096)
            dlq_pending[gi][n_dlq_pending[gi]++] = (struct group_ref){e->e.pidx, e->e.offset};
    }
}

static void r_report_dlq(int gi)
{
    struct rgroup *g = &rg[gi];
    while (n_dlq_pending[gi] && rn(2)) {
        size_t k = rn(n_dlq_pending[gi]);
        struct group_ref r = dlq_pending[gi][k];
        dlq_pending[gi][k] = dlq_pending[gi][--n_dlq_pending[gi]];
        uint64_t t;
        int rc = group_dead_lettered(st, g->name, r, now, &t);
        CU_ASSERT(rc == 0 || rc == VERITY_ENOTFOUND);
        if (rc == 0)
            set_done(g, r.pidx, r.offset, t);
    }
}

static uint64_t r_member(struct rgroup *g)
{
    return g->n_members ? g->members[rn(g->n_members)] : 0;
}

static size_t r_held(struct rgroup *g, uint64_t m, struct group_pending *p, size_t cap)
{
    size_t n = 0;
    CU_ASSERT_EQUAL(group_pending_list(st, g->name, m, p, cap, &n), 0);
    return n < cap ? n : cap;
}

static void r_drop_member(struct rgroup *g, uint64_t id)
{
    for (uint32_t i = 0; i < g->n_members; i++)
        if (g->members[i] == id)
            g->members[i] = g->members[--g->n_members];
}

static void r_step(void)
{
    int gi = (int)rn(R_GROUPS);
    struct rgroup *g = &rg[gi];
    uint64_t m = r_member(g), t;
    struct group_pending p[64];
    struct group_delivery d[64];
    size_t n;
    int rc;
    now += (int64_t)rn(120);
    uint64_t op = rn(100);
    if (op < 5 || g->n_members == 0) {
        if (g->n_members < R_MEMBERS_MAX)
            g->members[g->n_members++] = join(g->name, "r");
    } else if (op < 7) {
        CU_ASSERT_EQUAL(group_leave(st, g->name, m, now, &t), 0);
        r_drop_member(g, m);
    } else if (op < 30) {
        uint64_t ft;
        rc = group_fetch(st, g->name, m, 1 + rn(20), g->hwm, g->parts, now, d, &n, &ft);
        CU_ASSERT(rc == 0 || rc == VERITY_ELIMIT);
        for (size_t i = 0; i < n; i++) {
            if (n_dlog == cap_dlog) {
                cap_dlog = cap_dlog ? 2 * cap_dlog : 4096;
                dlog = realloc(dlog, cap_dlog * sizeof(*dlog));
            }
            dlog[n_dlog++] = (struct dl){(uint8_t)gi, (uint8_t)d[i].pidx,
                                         (uint16_t)d[i].delivery_count, (uint32_t)d[i].offset, ft};
            CU_ASSERT(ft > 0);
        }
    } else if (op < 55) {
        size_t h = r_held(g, m, p, 64);
        struct group_ref refs[8];
        size_t k = 0;
        for (size_t i = 0; i < h && k < 8; i++)
            if (rn(2))
                refs[k++] = (struct group_ref){p[i].pidx, p[i].offset};
        rc = group_ack(st, g->name, m, refs, k, now, &t);
        CU_ASSERT_EQUAL(rc, 0);
        for (size_t i = 0; i < k && rc == 0; i++)
            set_done(g, refs[i].pidx, refs[i].offset, t);
    } else if (op < 60 && g->ordered) {
        size_t h = r_held(g, m, p, 64);
        if (h) {
            const struct group_pending *x = &p[rn(h)];
            struct group_lag lag;
            CU_ASSERT_EQUAL(group_get_lag(st, g->name, x->pidx, 0, &lag), 0);
            /* which offsets this ack covers: held by m, or acked before */
            static uint8_t cover[R_OFF_MAX];
            for (uint64_t o = lag.ack_floor; o <= x->offset; o++) {
                struct group_msg_info mi;
                CU_ASSERT_EQUAL(group_msg(st, g->name, (struct group_ref){x->pidx, o}, &mi), 0);
                cover[o] = (mi.state == GROUP_MSG_LEASED || mi.state == GROUP_MSG_WAITING) &&
                           mi.member_id == m;
                if (!cover[o] && (mi.state == GROUP_MSG_LEASED || mi.state == GROUP_MSG_WAITING))
                    cover[o] = 2; /* someone else's: the ack must be refused */
            }
            bool refused = false;
            for (uint64_t o = lag.ack_floor; o <= x->offset; o++)
                refused |= cover[o] == 2;
            rc = group_ack_upto(st, g->name, m, x->pidx, x->offset, now, &t);
            CU_ASSERT_EQUAL(rc, refused ? VERITY_ELEASE : 0);
            for (uint64_t o = lag.ack_floor; o <= x->offset && rc == 0; o++)
                if (cover[o] == 1)
                    set_done(g, x->pidx, o, t);
        }
    } else if (op < 70) {
        size_t h = r_held(g, m, p, 64);
        if (h) {
            const struct group_pending *x = &p[rn(h)];
            int64_t delay = rn(3) == 0 ? -1 : (int64_t)rn(400);
            rc = group_nack(st, g->name, m, (struct group_ref){x->pidx, x->offset}, delay,
                            rn(2) ? "nack error" : NULL, now, &t);
            CU_ASSERT_EQUAL(rc, 0);
        }
    } else if (op < 75) {
        size_t h = r_held(g, m, p, 64);
        if (h) {
            struct group_ref r = {p[0].pidx, p[0].offset};
            int64_t dl;
            CU_ASSERT_EQUAL(group_extend(st, g->name, m, &r, 1, now, &dl), 0);
        }
    } else if (op < 77) {
        size_t h = r_held(g, m, p, 64);
        if (h) {
            const struct group_pending *x = &p[rn(h)];
            rc = group_term(st, g->name, m, (struct group_ref){x->pidx, x->offset}, "term",
                            now, &t);
            CU_ASSERT_EQUAL(rc, 0);
            if (x->offset < R_OFF_MAX)
                g->decide_ticket[x->pidx][x->offset] = t;
        }
    } else if (op < 85) {
        for (uint32_t i = 0; i < g->n_members; i++)
            if (rn(8))
                CU_ASSERT_EQUAL(group_heartbeat(st, g->name, g->members[i], now), 0);
    } else if (op < 92) {
        group_tick(st, now);
    } else if (op < 96) {
        group_flush(st, now);
    } else {
        uint32_t pi = (uint32_t)rn(g->parts);
        /* The shell raises the horizon when the log end moves, before the
         * high watermark follows. */
        uint64_t end = g->hwm[pi] + rn(60);
        if (end > R_OFF_MAX)
            end = R_OFF_MAX;
        if (rn(2))
            CU_ASSERT_EQUAL(group_horizon(st, g->name, pi, end, now), 0);
        g->hwm[pi] = rn(4) ? end : g->hwm[pi] + (end - g->hwm[pi]) / 2;
    }
    r_effects();
    r_report_dlq(gi);
    drain();
    /* members removed by a session timeout leave the model too */
    for (size_t i = 0; i < n_effs; i++)
        if (effs[i].e.type == GROUP_EFFECT_MEMBER_REMOVED)
            for (int k = 0; k < R_GROUPS; k++)
                if (strcmp(effs[i].group, rg[k].name) == 0)
                    r_drop_member(&rg[k], effs[i].e.member_id);
}

static void test_random_run_replays_to_same_state(void)
{
    uint64_t seeds[] = {1, 42, 0xdeadbeef};
    int steps = quick() ? 1500 : 6000;
    for (size_t s = 0; s < sizeof(seeds) / sizeof(seeds[0]); s++) {
        rng = seeds[s];
        r_setup(false);
        for (int i = 0; i < steps; i++) {
            r_step();
            if (i % 500 == 499) {
                group_check(st);
                assert_replay_equal();
            }
            if (i == steps / 2) {
                uint64_t off[4] = {3, 0, 5, 1}, t;
                CU_ASSERT_EQUAL(group_reset(st, "sg", off, 3, now, &t), 0);
                drain();
                memset(n_dlq_pending, 0, sizeof(n_dlq_pending));
                for (uint32_t p = 0; p < 3; p++)
                    if (rg[1].hwm[p] < off[p])
                        rg[1].hwm[p] = off[p];
            }
        }
        assert_replay_equal();
        struct group_info gi[2];
        CU_ASSERT_EQUAL(group_get_info(st, "og", &gi[0]), 0);
        CU_ASSERT_EQUAL(group_get_info(st, "sg", &gi[1]), 0);
        if (getenv("GROUP_TEST_STATS"))
            fprintf(stderr, "seed %lu: %zu records, %zu deliveries, og dl=%lu gen=%u, sg dl=%lu\n",
                    (unsigned long)seeds[s], n_recs, n_dlog, (unsigned long)gi[0].dead_lettered,
                    gi[0].generation, (unsigned long)gi[1].dead_lettered);
        /* the run did real work */
        CU_ASSERT(n_dlog > (size_t)steps / 4);
    }
}

static uint64_t crash_again; /* redeliveries after restarts, all runs */

/* Crash at a random point: only a prefix of the group log survives. */
static void crash_check(size_t keep)
{
    uint64_t S = keep;
    struct group_state *live = st;
    for (size_t i = keep; i < n_recs; i++)
        free(recs[i].p);
    n_recs = keep; /* the lost tail: the restarted state reuses its seqs */
    struct group_state *r = replay(keep);
    st = r;
    size_t effs_before = n_effs;
    CU_ASSERT_EQUAL_FATAL(group_recover(r, now), 0);
    group_check(r);
    drain();
    for (int gi = 0; gi < R_GROUPS; gi++) {
        struct rgroup *g = &rg[gi];
        struct group_info info;
        CU_ASSERT_EQUAL_FATAL(group_get_info(r, g->name, &info), 0);
        /* the restart bound: what may come again is what was tracked */
        CU_ASSERT(info.n_waiting + info.n_dead_letter <= info.pending_max);
        uint32_t redeliverable = 0;
        for (uint32_t p = 0; p < g->parts; p++) {
            for (uint64_t o = 0; o < g->hwm[p]; o++) {
                uint32_t count;
                enum group_msg_state ms = msg_state(g->name, p, o, &count);
                bool answered = g->done_ticket[p][o] <= S;
                CU_ASSERT_EQUAL(ms == GROUP_MSG_DONE, answered);
                if (ms == GROUP_MSG_DONE && !answered)
                    fprintf(stderr, "%s/%u/%lu done without an answered ack (S=%lu)\n", g->name,
                            p, (unsigned long)o, (unsigned long)S);
                if (g->decide_ticket[p][o] <= S && !answered)
                    CU_ASSERT_EQUAL(ms, GROUP_MSG_DEAD_LETTER);
                redeliverable += ms == GROUP_MSG_WAITING;
            }
        }
        CU_ASSERT_EQUAL(redeliverable, info.n_waiting);
        /* every re-emitted dead-letter is for a decided message */
        for (size_t i = effs_before; i < n_effs; i++)
            if (effs[i].e.type == GROUP_EFFECT_DEAD_LETTER && strcmp(effs[i].group, g->name) == 0)
                CU_ASSERT_EQUAL(msg_state(g->name, effs[i].e.pidx, effs[i].e.offset, NULL),
                                GROUP_MSG_DEAD_LETTER);
        /* fetch everything: counts go above anything sent before the crash */
        uint64_t m = join(g->name, "after");
        static uint32_t sent[R_PARTS_MAX][R_OFF_MAX];
        memset(sent, 0, sizeof(sent));
        for (size_t i = 0; i < n_dlog; i++)
            if (dlog[i].g == gi && dlog[i].ticket <= S && dlog[i].count > sent[dlog[i].pidx][dlog[i].offset])
                sent[dlog[i].pidx][dlog[i].offset] = dlog[i].count;
        size_t members = 0;
        struct group_member_info mi[R_MEMBERS_MAX + 1];
        CU_ASSERT_EQUAL(group_members(r, g->name, mi, R_MEMBERS_MAX + 1, &members), 0);
        uint32_t again = 0;
        for (int round = 0; round < 200; round++) {
            size_t total = 0;
            for (size_t k = 0; k < members && k <= R_MEMBERS_MAX; k++) {
                struct group_delivery d[256];
                size_t n = 0;
                uint64_t t;
                int rc = group_fetch(r, g->name, mi[k].member_id, 256, g->hwm, g->parts, now, d,
                                     &n, &t);
                CU_ASSERT(rc == 0 || rc == VERITY_ELIMIT);
                for (size_t i = 0; i < n; i++) {
                    CU_ASSERT(d[i].delivery_count > sent[d[i].pidx][d[i].offset]);
                    again += sent[d[i].pidx][d[i].offset] > 0;
                    struct group_ref ref = {d[i].pidx, d[i].offset};
                    CU_ASSERT_EQUAL(group_ack(r, g->name, mi[k].member_id, &ref, 1, now, &t), 0);
                }
                total += n;
            }
            group_flush(r, now);
            drain();
            if (total == 0)
                break;
        }
        CU_ASSERT(again <= info.pending_max);
        crash_again += again;
        (void)m;
        /* nothing unacknowledged was lost: all is done or dead-lettered now */
        for (uint32_t p = 0; p < g->parts; p++)
            for (uint64_t o = 0; o < g->hwm[p]; o++) {
                enum group_msg_state ms = msg_state(g->name, p, o, NULL);
                CU_ASSERT(ms == GROUP_MSG_DONE || ms == GROUP_MSG_DEAD_LETTER);
            }
    }
    group_state_free(r);
    st = live;
}

/* ---- model check: rebalances interleaved with acks, nacks, extends, expiries ---------- */

/*
 * An independent model of who may acknowledge what, checked against the
 * state machine after every step of a seeded random run (issue 7, "what it
 * must show" 2):
 *   - safety of acks: every message the machine calls done was named in an
 *     ack (a range, or an upto covering it) answered with success while the
 *     acking member was its last recipient and, in ordered mode, owned the
 *     partition; or it was dead-lettered;
 *   - one holder: every message the machine calls leased is leased to the
 *     member it was last delivered to, and when a message is delivered again
 *     the previous holder can no longer extend it;
 *   - liveness: after the random steps a single member drains the group and
 *     every message ends acknowledged or dead-lettered.
 * The model learns deliveries from group_fetch's output, ownership from
 * group_assignment (what a member is told), dead-letters from the effects:
 * only what a client or the shell can see.
 */
#define M_PARTS 3
#define M_OFF 300
#define M_MEMBERS 4

struct mgroup {
    const char *name;
    bool ordered;
    uint32_t parts;
    uint64_t members[M_MEMBERS];
    uint32_t n_members;
    uint64_t hwm[M_PARTS];
    uint64_t last[M_PARTS][M_OFF]; /* last recipient, 0 = never delivered */
    bool ok_done[M_PARTS][M_OFF];  /* a rightful ack or a dead-letter covered it */
    bool dead[M_PARTS][M_OFF];     /* dead-letter decided (effect seen) */
};

static struct mgroup mg[2];
static uint64_t m_checks, m_refused, m_acks, m_uptos, m_redeliveries, m_rebalances;

static bool m_owns(struct mgroup *g, uint64_t m, uint32_t pidx)
{
    if (!g->ordered)
        return true;
    uint32_t own[M_PARTS];
    size_t n = 0;
    if (group_assignment(st, g->name, m, own, M_PARTS, &n) != 0)
        return false;
    for (size_t i = 0; i < n && i < M_PARTS; i++)
        if (own[i] == pidx)
            return true;
    return false;
}

/* Whether m may rightfully acknowledge (pidx, off) now, per the model. */
static bool m_rightful(struct mgroup *g, uint64_t m, uint32_t pidx, uint64_t off)
{
    return g->last[pidx][off] == m && !g->dead[pidx][off] && m_owns(g, m, pidx);
}

static void m_drop(struct mgroup *g, uint64_t id)
{
    for (uint32_t i = 0; i < g->n_members; i++)
        if (g->members[i] == id)
            g->members[i] = g->members[--g->n_members];
}

static void m_effects(void)
{
    drain();
    for (; effs_seen < n_effs; effs_seen++) {
        const struct eff *e = &effs[effs_seen];
        struct mgroup *g = strcmp(e->group, mg[0].name) == 0 ? &mg[0] : &mg[1];
        if (e->e.type == GROUP_EFFECT_MEMBER_REMOVED) {
            m_drop(g, e->e.member_id);
        } else if (e->e.type == GROUP_EFFECT_DEAD_LETTER) {
            g->dead[e->e.pidx][e->e.offset] = true;
            g->ok_done[e->e.pidx][e->e.offset] = true;
            uint64_t t;
            CU_ASSERT_EQUAL(group_dead_lettered(st, g->name,
                                                (struct group_ref){e->e.pidx, e->e.offset}, now,
                                                &t),
                            0);
        }
    }
}

/* The machine's view of every message against the model. */
static void m_check(struct mgroup *g)
{
    for (uint32_t p = 0; p < g->parts; p++)
        for (uint64_t o = 0; o < g->hwm[p]; o++) {
            struct group_msg_info mi;
            CU_ASSERT_EQUAL_FATAL(group_msg(st, g->name, (struct group_ref){p, o}, &mi), 0);
            m_checks++;
            if (mi.state == GROUP_MSG_DONE && !g->ok_done[p][o]) {
                CU_FAIL("a message is done that no rightful holder acknowledged");
                fprintf(stderr, "  group %s p%u o%llu last=%llu\n", g->name, p,
                        (unsigned long long)o, (unsigned long long)g->last[p][o]);
                g->ok_done[p][o] = true; /* report once */
            }
            if (mi.state == GROUP_MSG_LEASED && mi.member_id != g->last[p][o])
                CU_FAIL("a message is leased to a member it was not last delivered to");
        }
}

static void m_fetch(struct mgroup *g, uint64_t m)
{
    struct group_delivery d[32];
    size_t n = 0;
    uint64_t t;
    int rc = group_fetch(st, g->name, m, 1 + rn(32), g->hwm, g->parts, now, d, &n, &t);
    CU_ASSERT(rc == 0 || rc == VERITY_ELIMIT);
    for (size_t i = 0; i < n; i++) {
        uint64_t prev = g->last[d[i].pidx][d[i].offset];
        CU_ASSERT_FALSE(g->ok_done[d[i].pidx][d[i].offset] && !g->dead[d[i].pidx][d[i].offset]);
        if (prev && prev != m) {
            /* The previous holder's lease is over: it cannot extend it. */
            int64_t dl;
            struct group_ref r = {d[i].pidx, d[i].offset};
            int erc = group_extend(st, g->name, prev, &r, 1, now, &dl);
            CU_ASSERT(erc == VERITY_ELEASE || erc == VERITY_EMEMBER);
            m_redeliveries++;
        }
        g->last[d[i].pidx][d[i].offset] = m;
    }
}

/* Messages whose last recipient is m, up to cap (some of them at random). */
static size_t m_mine(struct mgroup *g, uint64_t m, struct group_ref *out, size_t cap)
{
    size_t n = 0;
    for (uint32_t p = 0; p < g->parts && n < cap; p++)
        for (uint64_t o = 0; o < g->hwm[p] && n < cap; o++)
            if (g->last[p][o] == m && rn(3) == 0)
                out[n++] = (struct group_ref){p, o};
    return n;
}

static void m_ack(struct mgroup *g, uint64_t m)
{
    struct group_ref refs[8];
    size_t k = m_mine(g, m, refs, 8);
    /* Sometimes also a message delivered to another member. */
    if (k < 8 && rn(4) == 0) {
        uint32_t p = (uint32_t)rn(g->parts);
        if (g->hwm[p]) {
            uint64_t o = rn(g->hwm[p]);
            if (g->last[p][o])
                refs[k++] = (struct group_ref){p, o};
        }
    }
    if (k == 0)
        return;
    bool rightful[8];
    for (size_t i = 0; i < k; i++)
        rightful[i] = m_rightful(g, m, refs[i].pidx, refs[i].offset);
    uint64_t t;
    int rc = group_ack(st, g->name, m, refs, k, now, &t);
    if (rc) {
        m_refused++;
        return;
    }
    m_acks++;
    for (size_t i = 0; i < k; i++) {
        if (rightful[i])
            g->ok_done[refs[i].pidx][refs[i].offset] = true;
        /* Accepted but not rightful: only if it was done before (checked
         * by m_check: it must already be ok_done). */
    }
}

static void m_upto(struct mgroup *g, uint64_t m)
{
    uint32_t p = (uint32_t)rn(g->parts);
    if (!g->ordered || g->hwm[p] == 0)
        return;
    uint64_t off = rn(g->hwm[p]);
    bool rightful[M_OFF];
    for (uint64_t o = 0; o <= off; o++)
        rightful[o] = m_rightful(g, m, p, o);
    uint64_t t;
    int rc = group_ack_upto(st, g->name, m, p, off, now, &t);
    if (rc) {
        m_refused++;
        return;
    }
    m_uptos++;
    for (uint64_t o = 0; o <= off; o++)
        if (rightful[o])
            g->ok_done[p][o] = true;
}

static void m_step(void)
{
    struct mgroup *g = &mg[rn(2)];
    uint64_t m = g->n_members ? g->members[rn(g->n_members)] : 0, t;
    struct group_ref refs[4];
    now += (int64_t)rn(150);
    uint64_t op = rn(100);
    if (op < 6 || g->n_members == 0) {
        if (g->n_members < M_MEMBERS) {
            g->members[g->n_members++] = join(g->name, "m");
            m_rebalances++;
        }
    } else if (op < 9) {
        CU_ASSERT_EQUAL(group_leave(st, g->name, m, now, &t), 0);
        m_drop(g, m);
        m_rebalances++;
    } else if (op < 35) {
        m_fetch(g, m);
    } else if (op < 55) {
        m_ack(g, m);
    } else if (op < 62) {
        m_upto(g, m);
    } else if (op < 70) {
        size_t k = m_mine(g, m, refs, 1);
        if (k) {
            int rc = group_nack(st, g->name, m, refs[0], rn(2) ? -1 : (int64_t)rn(300), NULL,
                                now, &t);
            CU_ASSERT(rc == 0 || rc == VERITY_ELEASE);
        }
    } else if (op < 76) {
        size_t k = m_mine(g, m, refs, 4);
        int64_t dl;
        int rc = k ? group_extend(st, g->name, m, refs, k, now, &dl) : 0;
        CU_ASSERT(rc == 0 || rc == VERITY_ELEASE);
    } else if (op < 78) {
        size_t k = m_mine(g, m, refs, 1);
        if (k) {
            int rc = group_term(st, g->name, m, refs[0], "term", now, &t);
            CU_ASSERT(rc == 0 || rc == VERITY_ELEASE);
        }
    } else if (op < 86) {
        for (uint32_t i = 0; i < g->n_members; i++)
            if (rn(6))
                CU_ASSERT_EQUAL(group_heartbeat(st, g->name, g->members[i], now), 0);
    } else if (op < 93) {
        group_tick(st, now);
    } else if (op < 96) {
        group_flush(st, now);
    } else {
        uint32_t p = (uint32_t)rn(g->parts);
        g->hwm[p] += rn(40);
        if (g->hwm[p] > M_OFF)
            g->hwm[p] = M_OFF;
    }
    m_effects();
    m_check(g);
}

/* One member drains the group: everything ends done. */
static void m_drain(struct mgroup *g)
{
    m_effects(); /* members a session timeout removed leave the model */
    while (g->n_members > 0) {
        uint64_t t;
        int rc = group_leave(st, g->name, g->members[0], now, &t);
        CU_ASSERT(rc == 0 || rc == VERITY_EMEMBER);
        m_drop(g, g->members[0]);
    }
    g->members[g->n_members++] = join(g->name, "drain");
    uint64_t m = g->members[0];
    for (int round = 0; round < 20000; round++) {
        now += 100;
        CU_ASSERT_EQUAL(group_heartbeat(st, g->name, m, now), 0);
        group_tick(st, now);
        m_fetch(g, m);
        struct group_ref refs[64];
        size_t k = 0;
        for (uint32_t p = 0; p < g->parts && k < 64; p++)
            for (uint64_t o = 0; o < g->hwm[p] && k < 64; o++)
                if (g->last[p][o] == m && !g->ok_done[p][o])
                    refs[k++] = (struct group_ref){p, o};
        uint64_t t;
        if (k && group_ack(st, g->name, m, refs, k, now, &t) == 0)
            for (size_t i = 0; i < k; i++)
                g->ok_done[refs[i].pidx][refs[i].offset] = true;
        group_flush(st, now);
        m_effects();
        bool all = true;
        for (uint32_t p = 0; p < g->parts && all; p++) {
            struct group_lag lag;
            CU_ASSERT_EQUAL_FATAL(group_get_lag(st, g->name, p, g->hwm[p], &lag), 0);
            all = lag.unacked == 0;
        }
        if (all)
            break;
    }
    m_check(g);
    for (uint32_t p = 0; p < g->parts; p++) {
        struct group_lag lag;
        CU_ASSERT_EQUAL_FATAL(group_get_lag(st, g->name, p, g->hwm[p], &lag), 0);
        CU_ASSERT_EQUAL(lag.unacked, 0);
        CU_ASSERT_EQUAL(lag.ack_floor, g->hwm[p]);
    }
}

static void test_model_rebalance_ack_nack_extend_expiry(void)
{
    int seeds = quick() ? 4 : 24, steps = quick() ? 1500 : 4000;
    for (int s = 0; s < seeds; s++) {
        uint64_t seed = 0x9e3779b97f4a7c15ull * (uint64_t)(s + 1);
        rng = seed;
        fresh(0);
        effs_seen = 0;
        memset(mg, 0, sizeof mg);
        for (int i = 0; i < 2; i++) {
            struct mgroup *g = &mg[i];
            g->name = i == 0 ? "mo" : "ms";
            g->ordered = i == 0;
            g->parts = i == 0 ? 3 : 2;
            struct group_config c;
            cfg_init(&c, g->name, g->ordered ? GROUP_ORDERED : GROUP_SHARED, g->parts);
            c.lease_ms = 400;
            c.session_ms = 2500;
            c.max_deliveries = 5;
            c.pending_max = 200;
            create(&c);
        }
        unsigned failed0 = CU_get_number_of_failures();
        for (int i = 0; i < steps; i++)
            m_step();
        m_drain(&mg[0]);
        m_drain(&mg[1]);
        if (CU_get_number_of_failures() != failed0)
            fprintf(stderr, "model check failed for seed %llu (s=%d)\n",
                    (unsigned long long)seed, s);
    }
    fprintf(stderr,
            "\n[model] %d seeds x %d steps: %llu state checks, %llu acks, %llu uptos, %llu "
            "refused, %llu redeliveries to another member, %llu joins/leaves\n",
            seeds, steps, (unsigned long long)m_checks, (unsigned long long)m_acks,
            (unsigned long long)m_uptos, (unsigned long long)m_refused,
            (unsigned long long)m_redeliveries, (unsigned long long)m_rebalances);
    CU_ASSERT(m_redeliveries > 0 && m_uptos > 0 && m_refused > 0 && m_rebalances > 0);
}

static void test_restart_redelivers_only_unanswered(void)
{
    int runs = quick() ? 3 : 10;
    for (int run = 0; run < runs; run++) {
        rng = 1000 + (uint64_t)run;
        r_setup(false);
        int steps = 400 + (int)rn(quick() ? 800 : 3000);
        for (int i = 0; i < steps; i++)
            r_step();
        drain();
        /* lose a random tail of the log (possibly nothing) */
        size_t keep = n_recs - rn(n_recs < 6 ? n_recs : 6);
        crash_check(keep);
    }
    CU_ASSERT(crash_again > 0); /* the count check above was exercised */
    if (getenv("GROUP_TEST_STATS"))
        fprintf(stderr, "restarts delivered %lu messages again\n", (unsigned long)crash_again);
}

/* ---- throughput -------------------------------------------------------------------------------- */

static double secs(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static void test_throughput_ordered_and_shared(void)
{
    uint64_t total = quick() ? 200000 : 4000000;
    static struct group_delivery d[4096];
    struct group_ref refs[4096];
    for (int mode = 0; mode < 2; mode++) {
        fresh(0);
        struct group_config c;
        cfg_init(&c, "p", mode == 0 ? GROUP_ORDERED : GROUP_SHARED, 8);
        c.lease_ms = 60000;
        create(&c);
        uint64_t m = join("p", "a");
        set_hwm(8, GROUP_OFFSET_LIMIT - 1);
        uint64_t acked = 0, t;
        double t0 = secs();
        while (acked < total) {
            size_t n;
            CU_ASSERT_EQUAL_FATAL(group_fetch(st, "p", m, 4096, hwm_all, 8, now, d, &n, &t), 0);
            if (mode == 0) {
                uint64_t last[8] = {0};
                bool any[8] = {false};
                for (size_t i = 0; i < n; i++) {
                    last[d[i].pidx] = d[i].offset;
                    any[d[i].pidx] = true;
                }
                for (uint32_t p = 0; p < 8; p++)
                    if (any[p])
                        CU_ASSERT_EQUAL_FATAL(group_ack_upto(st, "p", m, p, last[p], now, &t), 0);
            } else {
                for (size_t i = 0; i < n; i++)
                    refs[i] = (struct group_ref){d[i].pidx, d[i].offset};
                CU_ASSERT_EQUAL_FATAL(group_ack(st, "p", m, refs, n, now, &t), 0);
            }
            acked += n;
            group_flush(st, now);
            const uint8_t *rp;
            size_t rl;
            uint64_t rs;
            while (group_next_record(st, &rp, &rl, &rs))
                ;
        }
        double rate = (double)acked / (secs() - t0);
        printf("\n    %s mode: %.0f fetched+acked msgs/s ", mode == 0 ? "ordered" : "shared", rate);
        if (!quick())
            CU_ASSERT(rate > (mode == 0 ? 1000000.0 : 500000.0));
        struct group_info gi;
        CU_ASSERT_EQUAL(group_get_info(st, "p", &gi), 0);
        CU_ASSERT_EQUAL(gi.n_tracked, 0);
    }
}

/* ---- main --------------------------------------------------------------------------------------- */

static int suite_clean(void)
{
    group_state_free(st);
    st = NULL;
    clear_log();
    free(recs);
    free(effs);
    free(dlog);
    free(snap_before);
    return 0;
}

int main(void)
{
    static const struct {
        const char *name;
        void (*fn)(void);
    } tests[] = {
        {"lease_expiry_returns_message_with_count_raised",
         test_lease_expiry_returns_message_with_count_raised},
        {"redelivery_waits_for_the_hwm", test_redelivery_waits_for_the_hwm},
        {"backoff_schedule_applies_to_nack_and_expiry",
         test_backoff_schedule_applies_to_nack_and_expiry},
        {"max_deliveries_emits_dead_letter_with_fields",
         test_max_deliveries_emits_dead_letter_with_fields},
        {"term_dead_letters_at_once", test_term_dead_letters_at_once},
        {"dead_letter_decision_seq_and_replica_list",
         test_dead_letter_decision_seq_and_replica_list},
        {"nack_delay_holds_message_back", test_nack_delay_holds_message_back},
        {"extend_renews_lease", test_extend_renews_lease},
        {"clock_never_runs_backwards", test_clock_never_runs_backwards},
        {"rebalance_is_sticky_and_balanced", test_rebalance_is_sticky_and_balanced},
        {"session_timeout_returns_work", test_session_timeout_returns_work},
        {"ordered_keeps_partition_order", test_ordered_keeps_partition_order},
        {"shared_many_members_work_one_partition", test_shared_many_members_work_one_partition},
        {"cumulative_ack_in_one_range", test_cumulative_ack_in_one_range},
        {"ack_out_of_order_collapses_into_floor", test_ack_out_of_order_collapses_into_floor},
        {"ack_ticket_is_durable_only_after_flush", test_ack_ticket_is_durable_only_after_flush},
        {"pending_limit_bounds_deliveries", test_pending_limit_bounds_deliveries},
        {"pending_by_member_and_age", test_pending_by_member_and_age},
        {"reset_and_delete", test_reset_and_delete},
        {"multi_topic_group_numbers_partitions_flat",
         test_multi_topic_group_numbers_partitions_flat},
        {"bad_input_is_typed_and_changes_nothing", test_bad_input_is_typed_and_changes_nothing},
        {"late_ack_by_last_holder_is_accepted", test_late_ack_by_last_holder_is_accepted},
        {"ack_after_recovery_is_accepted", test_ack_after_recovery_is_accepted},
        {"corrupt_records_are_refused", test_corrupt_records_are_refused},
        {"horizon_answers_first_deliveries_early", test_horizon_answers_first_deliveries_early},
        {"horizon_window_and_reset", test_horizon_window_and_reset},
        {"horizon_rise_keeps_old_tickets", test_horizon_rise_keeps_old_tickets},
        {"horizon_off_when_max_deliveries_is_1", test_horizon_off_when_max_deliveries_is_1},
        {"random_run_replays_to_same_state", test_random_run_replays_to_same_state},
        {"model_rebalance_ack_nack_extend_expiry", test_model_rebalance_ack_nack_extend_expiry},
        {"restart_redelivers_only_unanswered", test_restart_redelivers_only_unanswered},
        {"throughput_ordered_and_shared", test_throughput_ordered_and_shared},
    };
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    CU_pSuite s = CU_add_suite("group", NULL, suite_clean);
    if (s == NULL)
        goto fail;
    for (size_t i = 0; i < sizeof(tests) / sizeof(tests[0]); i++)
        if (CU_add_test(s, tests[i].name, tests[i].fn) == NULL)
            goto fail;
    CU_basic_set_mode(CU_BRM_VERBOSE);
    if (CU_basic_run_tests() != CUE_SUCCESS)
        goto fail;
    unsigned failed = CU_get_number_of_failures() + CU_get_number_of_suites_failed();
    CU_cleanup_registry();
    return failed ? 1 : 0;
fail:
    CU_cleanup_registry();
    return 1;
}
