/*
 * Regression tests for the consumer-group defects of issue 7, each against a
 * real verityd over raw frames (the defects on the client side are pinned
 * in test_client_group.c and test_groups_e2e.c):
 *
 *   waiting_ack_after_move_is_refused   (2) a message returned when its
 *       partition moved may not be acknowledged by its former holder;
 *   reack_names_already                 (3) an ack of a message already done
 *       succeeds but the answer names it, so the member knows it did not
 *       count;
 *   ack_all_or_none_with_upto           (7) an Ack whose upto is refused
 *       applies none of its ranges either;
 *   fetch_generation_is_grant_time      (5) a GroupFetch answer parked on
 *       the group log carries the generation its leases were granted under,
 *       not one a JOIN applied meanwhile;
 *   ack_limit_is_shared                 (6) the broker accepts an Ack of
 *       VERITY_ACK_OFFSETS_MAX offsets and names the limit above it;
 *   join_out_of_memory_changes_nothing  (10) a JoinGroup that cannot get
 *       memory for its answer is refused before the member exists;
 *   idle_group_lag_returns_to_zero_after_restart  (issue 8, item 5) the
 *       checkpoint a clean stop writes is acknowledged by the broker for a
 *       group nobody fetches from.
 */
#include <stdatomic.h>

#include <CUnit/Basic.h>
#include <CUnit/CUnit.h>

#include "test_broker_util.h"
#include "verity/group.h"

static struct bh H;

static const char *const EXTRA[] = {"--log-level", "warn", NULL};

static int suite_init(void)
{
    if (bh_init(&H, "gdefects") || bh_start(&H, EXTRA))
        return -1;
    return 0;
}

static int suite_clean(void)
{
    int rc = bh_stop_sig(&H, SIGTERM);
    bh_cleanup(&H);
    return rc == 0 ? 0 : -1;
}

static int wire(int err)
{
    return (int)codec_err_to_wire(err);
}

/* Produces n records to topic/partition in one batch; base offset or
 * UINT64_MAX. */
static uint64_t produce(struct bh *h, int fd, const char *topic, uint32_t partition, uint32_t n)
{
    uint8_t *b = NULL;
    size_t len = 0;
    struct bh_produced p;
    if (bh_batch(topic, n, -1, -1, -1, NULL, &b, &len))
        return UINT64_MAX;
    int rc = bh_produce(h, fd, topic, partition, b, len, &p);
    free(b);
    return rc || p.error ? UINT64_MAX : p.base_offset;
}

/* The owner of topic/partition in the group's description (0 if none). */
static uint64_t owner_of(int fd, const char *group, uint32_t partition)
{
    struct bh_resp r;
    uint64_t owner = 0;
    if (bh_describe(&H, fd, group, &r))
        return 0;
    const Verity__GroupDescription *d = r.msg->env->describe_group_resp->group;
    for (size_t i = 0; i < d->n_partitions; i++)
        if (d->partitions[i]->partition == partition)
            owner = d->partitions[i]->owner;
    bh_resp_free(&r);
    return owner;
}

/* One Ack with the given ranges (topic/partition/first/count) and uptos;
 * returns the wire error, the answer in *out when 0. */
static int ack_raw(int fd, const char *group, uint64_t member, Verity__GroupAckRange **ranges,
                   size_t n_ranges, Verity__GroupPartitionOffset **upto, size_t n_upto,
                   struct bh_resp *out, char *msg, size_t cap)
{
    Verity__Envelope env = VERITY__ENVELOPE__INIT;
    Verity__AckRequest q = VERITY__ACK_REQUEST__INIT;
    q.group = (char *)group;
    q.member_id = member;
    q.ranges = ranges;
    q.n_ranges = n_ranges;
    q.upto = upto;
    q.n_upto = n_upto;
    env.body_case = VERITY__ENVELOPE__BODY_ACK_REQ;
    env.ack_req = &q;
    return bh_group_call(&H, fd, &env, out, msg, cap);
}

/* A one-partition topic with n records, a group on it with default
 * options and one member that has fetched all n: returns the member id
 * (0 on failure, with the failure asserted). */
static uint64_t one_member_holding(struct bh *h, int fd, const char *topic, const char *group,
                                   uint32_t n)
{
    const char *topics[] = {topic};
    char msg[300];
    struct bh_group_opts o = {0};
    uint64_t a = 0;
    struct bh_fetched f;
    if (bh_create_topic(h, fd, topic, 1, 0) != 0 || produce(h, fd, topic, 0, n) != 0 ||
        bh_create_group(h, fd, group, topics, 1, &o, msg, sizeof msg) != 0 ||
        bh_join(h, fd, group, "a", topics, 1, 0, &a, msg, sizeof msg) != 0 ||
        bh_gfetch(h, fd, group, a, 100, 0, &f) != 0) {
        CU_FAIL("setting up the group failed");
        return 0;
    }
    CU_ASSERT_EQUAL(f.n, n);
    bh_fetched_free(&f);
    return a;
}

/* ---- (2) ------------------------------------------------------------------------------- */

static void test_waiting_ack_after_move_is_refused(void)
{
    int fd = bh_connect(&H);
    CU_ASSERT_FATAL(fd >= 0);
    CU_ASSERT_EQUAL_FATAL(bh_create_topic(&H, fd, "d2t", 2, 0), 0);
    CU_ASSERT_EQUAL_FATAL(produce(&H, fd, "d2t", 0, 5), 0);
    CU_ASSERT_EQUAL_FATAL(produce(&H, fd, "d2t", 1, 5), 0);
    const char *topics[] = {"d2t"};
    char msg[300];
    struct bh_group_opts o = {0};
    CU_ASSERT_EQUAL_FATAL(bh_create_group(&H, fd, "d2", topics, 1, &o, msg, sizeof msg), 0);
    uint64_t a = 0, b = 0;
    CU_ASSERT_EQUAL_FATAL(bh_join(&H, fd, "d2", "a", topics, 1, 0, &a, msg, sizeof msg), 0);
    struct bh_fetched f;
    CU_ASSERT_EQUAL_FATAL(bh_gfetch(&H, fd, "d2", a, 100, 0, &f), 0);
    CU_ASSERT_EQUAL(f.n, 10);
    bh_fetched_free(&f);
    /* B joins: one partition moves, and A's leases on it return with A
     * still named as their last holder. */
    CU_ASSERT_EQUAL_FATAL(bh_join(&H, fd, "d2", "b", topics, 1, 0, &b, msg, sizeof msg), 0);
    uint32_t moved = owner_of(fd, "d2", 0) == b ? 0 : 1;
    CU_ASSERT_EQUAL_FATAL(owner_of(fd, "d2", moved), b);
    CU_ASSERT_EQUAL_FATAL(owner_of(fd, "d2", 1 - moved), a);
    /* A may not acknowledge what moved, as a range or cumulatively... */
    CU_ASSERT_EQUAL(bh_ack(&H, fd, "d2", a, "d2t", moved, 2, 1, false, msg, sizeof msg),
                    wire(VERITY_ELEASE));
    CU_ASSERT_EQUAL(bh_ack(&H, fd, "d2", a, "d2t", moved, 4, 0, true, msg, sizeof msg),
                    wire(VERITY_ELEASE));
    /* ...and nothing of it was acknowledged: B gets all five, count 2. */
    CU_ASSERT_EQUAL_FATAL(bh_gfetch(&H, fd, "d2", b, 100, 0, &f), 0);
    CU_ASSERT_EQUAL(f.n, 5);
    for (size_t i = 0; i < f.n; i++) {
        CU_ASSERT_EQUAL(f.m[i].partition, moved);
        CU_ASSERT_EQUAL(f.m[i].delivery_count, 2);
    }
    bh_fetched_free(&f);
    /* What A still owns it acknowledges. */
    CU_ASSERT_EQUAL(bh_ack(&H, fd, "d2", a, "d2t", 1 - moved, 4, 0, true, msg, sizeof msg), 0);
    close(fd);
}

/* ---- (3) ------------------------------------------------------------------------------- */

static void test_reack_names_already(void)
{
    int fd = bh_connect(&H);
    CU_ASSERT_FATAL(fd >= 0);
    uint64_t a = one_member_holding(&H, fd, "d3t", "d3", 6);
    CU_ASSERT_FATAL(a != 0);
    char msg[300];

    Verity__GroupAckRange r1 = VERITY__GROUP_ACK_RANGE__INIT, *rp = &r1;
    r1.topic = "d3t";
    r1.first_offset = 1;
    r1.count = 2; /* 1, 2 */
    struct bh_resp resp;
    CU_ASSERT_EQUAL_FATAL(ack_raw(fd, "d3", a, &rp, 1, NULL, 0, &resp, msg, sizeof msg), 0);
    CU_ASSERT_EQUAL(resp.msg->env->ack_resp->n_already, 0);
    bh_resp_free(&resp);
    /* Again, one more: 1 and 2 were done, 3 counts. */
    r1.count = 3;
    CU_ASSERT_EQUAL_FATAL(ack_raw(fd, "d3", a, &rp, 1, NULL, 0, &resp, msg, sizeof msg), 0);
    const Verity__AckResponse *ar = resp.msg->env->ack_resp;
    CU_ASSERT_EQUAL_FATAL(ar->n_already, 1);
    CU_ASSERT_STRING_EQUAL(ar->already[0]->topic, "d3t");
    CU_ASSERT_EQUAL(ar->already[0]->partition, 0);
    CU_ASSERT_EQUAL(ar->already[0]->first_offset, 1);
    CU_ASSERT_EQUAL(ar->already[0]->count, 2);
    CU_ASSERT_FALSE(ar->already_cut);
    bh_resp_free(&resp);
    /* A cumulative ack with upto_from 0 through 5: 1..3 were done before. */
    Verity__GroupPartitionOffset u = VERITY__GROUP_PARTITION_OFFSET__INIT, *up = &u;
    u.topic = "d3t";
    u.offset = 5;
    uint64_t from = 0;
    Verity__Envelope env = VERITY__ENVELOPE__INIT;
    Verity__AckRequest q = VERITY__ACK_REQUEST__INIT;
    q.group = "d3";
    q.member_id = a;
    q.upto = &up;
    q.n_upto = 1;
    q.upto_from = &from;
    q.n_upto_from = 1;
    env.body_case = VERITY__ENVELOPE__BODY_ACK_REQ;
    env.ack_req = &q;
    CU_ASSERT_EQUAL_FATAL(bh_group_call(&H, fd, &env, &resp, msg, sizeof msg), 0);
    ar = resp.msg->env->ack_resp;
    CU_ASSERT_EQUAL_FATAL(ar->n_already, 1);
    CU_ASSERT_EQUAL(ar->already[0]->first_offset, 1);
    CU_ASSERT_EQUAL(ar->already[0]->count, 3);
    bh_resp_free(&resp);
    close(fd);
}

/* ---- (7) ------------------------------------------------------------------------------- */

static void test_ack_all_or_none_with_upto(void)
{
    int fd = bh_connect(&H);
    CU_ASSERT_FATAL(fd >= 0);
    uint64_t a = one_member_holding(&H, fd, "d7t", "d7", 4);
    CU_ASSERT_FATAL(a != 0);
    char msg[300];
    /* A valid range and an upto beyond what was delivered. */
    Verity__GroupAckRange r1 = VERITY__GROUP_ACK_RANGE__INIT, *rp = &r1;
    r1.topic = "d7t";
    r1.first_offset = 0;
    r1.count = 2;
    Verity__GroupPartitionOffset u = VERITY__GROUP_PARTITION_OFFSET__INIT, *up = &u;
    u.topic = "d7t";
    u.offset = 100;
    struct bh_resp resp;
    CU_ASSERT_EQUAL(ack_raw(fd, "d7", a, &rp, 1, &up, 1, &resp, msg, sizeof msg),
                    wire(VERITY_EOFFSET));
    CU_ASSERT_PTR_NOT_NULL(strstr(msg, "upto"));
    /* Nothing applied: all four are still leased to A. */
    CU_ASSERT_EQUAL_FATAL(bh_pending(&H, fd, "d7", 0, 0, &resp), 0);
    const Verity__GroupPendingResponse *pr = resp.msg->env->group_pending_resp;
    CU_ASSERT_EQUAL(pr->total, 4);
    for (size_t i = 0; i < pr->n_entries; i++)
        CU_ASSERT_EQUAL(pr->entries[i]->member_id, a);
    bh_resp_free(&resp);
    close(fd);
}

/* ---- (6) ------------------------------------------------------------------------------- */

static void test_ack_limit_is_shared(void)
{
    int fd = bh_connect(&H);
    CU_ASSERT_FATAL(fd >= 0);
    CU_ASSERT_EQUAL_FATAL(bh_create_topic(&H, fd, "d6t", 1, 0), 0);
    /* The log's automatic checkpoints take offsets too: end is the log end. */
    uint32_t n = VERITY_ACK_OFFSETS_MAX + 10;
    uint64_t end = 0;
    for (uint32_t done = 0; done < n; done += 20000) {
        uint32_t k = n - done < 20000 ? n - done : 20000;
        uint64_t base = produce(&H, fd, "d6t", 0, k);
        CU_ASSERT_FATAL(base != UINT64_MAX);
        end = base + k;
    }
    const char *topics[] = {"d6t"};
    char msg[300];
    struct bh_group_opts o = {.mode = VERITY__GROUP_MODE__GROUP_MODE_SHARED};
    CU_ASSERT_EQUAL_FATAL(bh_create_group(&H, fd, "d6", topics, 1, &o, msg, sizeof msg), 0);
    uint64_t a = 0;
    CU_ASSERT_EQUAL_FATAL(bh_join(&H, fd, "d6", "a", topics, 1, 0, &a, msg, sizeof msg), 0);
    size_t got = 0;
    int64_t deadline = bh_mono_ms() + BH_TIMEOUT_MS;
    while (got < n && bh_mono_ms() < deadline) {
        struct bh_fetched f;
        CU_ASSERT_EQUAL_FATAL(bh_gfetch(&H, fd, "d6", a, 10000, 0, &f), 0);
        got += f.n;
        bh_fetched_free(&f);
    }
    CU_ASSERT_EQUAL_FATAL(got, n);
    /* One more than the limit is refused, naming it... */
    CU_ASSERT_EQUAL(bh_ack(&H, fd, "d6", a, "d6t", 0, 0, VERITY_ACK_OFFSETS_MAX + 1, false, msg,
                           sizeof msg),
                    wire(VERITY_ELIMIT));
    char lim[32];
    snprintf(lim, sizeof lim, "%u", VERITY_ACK_OFFSETS_MAX);
    CU_ASSERT_PTR_NOT_NULL(strstr(msg, lim));
    /* ...exactly the limit (what the client sends at most) is accepted. */
    CU_ASSERT_EQUAL(
        bh_ack(&H, fd, "d6", a, "d6t", 0, 0, VERITY_ACK_OFFSETS_MAX, false, msg, sizeof msg), 0);
    CU_ASSERT_EQUAL(bh_ack(&H, fd, "d6", a, "d6t", 0, VERITY_ACK_OFFSETS_MAX,
                           (uint32_t)(end - VERITY_ACK_OFFSETS_MAX), false, msg, sizeof msg),
                    0);
    struct bh_resp resp;
    CU_ASSERT_EQUAL_FATAL(bh_pending(&H, fd, "d6", 0, 0, &resp), 0);
    CU_ASSERT_EQUAL(resp.msg->env->group_pending_resp->total, 0);
    bh_resp_free(&resp);
    close(fd);
}

/* The client side of (6): a member that acks more than the limit at once
 * splits its acks at VERITY_ACK_OFFSETS_MAX; every ack succeeds (before, the
 * client sent up to 100,000 per request and all of them failed ELIMIT). */
struct big_acks {
    atomic_uint_fast64_t ok, failed;
};

static void big_result(void *opaque, int err, const struct verity_group_result *r)
{
    struct big_acks *k = opaque;
    if (r->op == VERITY_GROUP_OP_ACK)
        atomic_fetch_add(err ? &k->failed : &k->ok, r->count);
}

static void test_client_splits_acks_at_the_limit(void)
{
    int fd = bh_connect(&H);
    CU_ASSERT_FATAL(fd >= 0);
    CU_ASSERT_EQUAL_FATAL(bh_create_topic(&H, fd, "d6c", 1, 0), 0);
    uint32_t n = VERITY_ACK_OFFSETS_MAX + 5000;
    for (uint32_t done = 0; done < n; done += 20000)
        CU_ASSERT_FATAL(produce(&H, fd, "d6c", 0, n - done < 20000 ? n - done : 20000) !=
                        UINT64_MAX);
    const char *topics[] = {"d6c"};
    char msg[300], addr[64];
    struct bh_group_opts o = {.mode = VERITY__GROUP_MODE__GROUP_MODE_SHARED};
    CU_ASSERT_EQUAL_FATAL(bh_create_group(&H, fd, "d6cg", topics, 1, &o, msg, sizeof msg), 0);
    snprintf(addr, sizeof addr, "127.0.0.1:%u", (unsigned)H.port);
    struct big_acks k = {0};
    struct verity_group_consumer_config cfg;
    verity_group_consumer_config_default(&cfg);
    cfg.conn.broker = addr;
    cfg.group = "d6cg";
    cfg.topics = topics;
    cfg.n_topics = 1;
    cfg.fetch_max = 10000;
    cfg.queue_max = n + 20000; /* hold everything before acking any */
    cfg.ack_linger_ms = 60000;
    cfg.result_cb = big_result;
    cfg.opaque = &k;
    struct verity_group_consumer *g = NULL;
    CU_ASSERT_EQUAL_FATAL(verity_group_consumer_new(&cfg, &g), 0);
    CU_ASSERT_EQUAL_FATAL(verity_group_connect(g, 10000), 0);
    /* Poll everything, keeping no message pointers: ack by position. */
    static uint8_t seen[VERITY_ACK_OFFSETS_MAX + 6000];
    uint64_t got = 0, max_off = 0;
    int64_t deadline = bh_mono_ms() + BH_TIMEOUT_MS;
    while (got < n && bh_mono_ms() < deadline) {
        const struct verity_group_message *m;
        size_t nm = 0;
        if (verity_group_poll(g, 200, &m, &nm) != 0)
            continue;
        for (size_t i = 0; i < nm; i++) {
            uint64_t off = m[i].msg.offset;
            if (off < sizeof seen && !seen[off]) {
                seen[off] = 1;
                got++;
                if (off > max_off)
                    max_off = off;
            }
        }
    }
    CU_ASSERT_EQUAL_FATAL(got, n);
    for (uint64_t off = 0; off <= max_off; off++)
        if (seen[off])
            CU_ASSERT_EQUAL(verity_group_ack(g, "d6c", 0, off), 0);
    CU_ASSERT_EQUAL(verity_group_commit(g, 30000), 0);
    CU_ASSERT_EQUAL(atomic_load(&k.ok), n);
    CU_ASSERT_EQUAL(atomic_load(&k.failed), 0);
    verity_group_consumer_free(g, 5000);
    struct bh_resp resp;
    CU_ASSERT_EQUAL_FATAL(bh_pending(&H, fd, "d6cg", 0, 0, &resp), 0);
    CU_ASSERT_EQUAL(resp.msg->env->group_pending_resp->total, 0);
    bh_resp_free(&resp);
    close(fd);
}

/* ---- (5) ------------------------------------------------------------------------------- */

static void test_fetch_generation_is_grant_time(void)
{
    /* A broker whose group log takes 800 ms to sync: a fetch answer that
     * waits for its record is still parked when B's JOIN is applied. */
    struct bh h2;
    static const char *const slow[] = {"--log-level",        "warn",  "--group-log-durability",
                                       "group",              "--group-log-delay-us", "800000",
                                       NULL};
    CU_ASSERT_EQUAL_FATAL(bh_init(&h2, "gdefects-gen"), 0);
    CU_ASSERT_EQUAL_FATAL(bh_start(&h2, slow), 0);
    int fd = bh_connect(&h2), fd2 = bh_connect(&h2);
    CU_ASSERT_FATAL(fd >= 0 && fd2 >= 0);
    CU_ASSERT_EQUAL_FATAL(bh_create_topic(&h2, fd, "d5t", 2, 0), 0);
    CU_ASSERT_EQUAL_FATAL(produce(&h2, fd, "d5t", 0, 3), 0);
    CU_ASSERT_EQUAL_FATAL(produce(&h2, fd, "d5t", 1, 3), 0);
    const char *topics[] = {"d5t"};
    char msg[300];
    /* max_deliveries 1 turns the delivery horizon off: every first
     * delivery waits for its own group-log record. */
    struct bh_group_opts o = {.max_deliveries = 1};
    CU_ASSERT_EQUAL_FATAL(bh_create_group(&h2, fd, "d5", topics, 1, &o, msg, sizeof msg), 0);
    uint64_t a = 0, b = 0;
    CU_ASSERT_EQUAL_FATAL(bh_join(&h2, fd, "d5", "a", topics, 1, 0, &a, msg, sizeof msg), 0);
    struct bh_resp r;
    CU_ASSERT_EQUAL_FATAL(bh_describe(&h2, fd, "d5", &r), 0);
    uint32_t gen_a = r.msg->env->describe_group_resp->group->generation;
    bh_resp_free(&r);

    Verity__Envelope env = VERITY__ENVELOPE__INIT;
    Verity__GroupFetchRequest q = VERITY__GROUP_FETCH_REQUEST__INIT;
    q.group = "d5";
    q.member_id = a;
    q.max_messages = 100;
    env.version = CODEC_PROTOCOL_VERSION;
    env.correlation_id = 77;
    env.body_case = VERITY__ENVELOPE__BODY_GROUP_FETCH_REQ;
    env.group_fetch_req = &q;
    int64_t t0 = bh_mono_ms();
    CU_ASSERT_EQUAL_FATAL(codec_fd_write(fd, &env, NULL, 0, NULL), 0);
    /* B joins while A's answer waits; the join's own answer waits too. */
    CU_ASSERT_EQUAL_FATAL(bh_join(&h2, fd2, "d5", "b", topics, 1, 0, &b, msg, sizeof msg), 0);
    struct codec_msg *cm = NULL;
    uint8_t *pl = NULL;
    size_t pl_len = 0;
    CU_ASSERT_EQUAL_FATAL(codec_fd_read(fd, NULL, BH_TIMEOUT_MS, &cm, &pl, &pl_len), 0);
    CU_ASSERT_EQUAL_FATAL(cm->env->body_case, VERITY__ENVELOPE__BODY_GROUP_FETCH_RESP);
    const Verity__GroupFetchResponse *gr = cm->env->group_fetch_resp;
    CU_ASSERT(bh_mono_ms() - t0 >= 500); /* it did wait for the log */
    CU_ASSERT_EQUAL(gr->messages, 6);
    CU_ASSERT_EQUAL(gr->generation, gen_a);
    CU_ASSERT_EQUAL_FATAL(bh_describe(&h2, fd, "d5", &r), 0);
    CU_ASSERT(r.msg->env->describe_group_resp->group->generation > gen_a);
    bh_resp_free(&r);
    codec_msg_free(cm);
    free(pl);
    close(fd);
    close(fd2);
    CU_ASSERT_EQUAL(bh_stop_sig(&h2, SIGTERM), 0);
    bh_cleanup(&h2);
}

/* ---- (10) ------------------------------------------------------------------------------ */

static void test_join_out_of_memory_changes_nothing(void)
{
    struct bh h2;
    CU_ASSERT_EQUAL_FATAL(bh_init(&h2, "gdefects-oom"), 0);
    setenv("VERITY_FAULTS", "mcmd_alloc", 1);
    int rc = bh_start(&h2, EXTRA);
    unsetenv("VERITY_FAULTS");
    CU_ASSERT_EQUAL_FATAL(rc, 0);
    int fd = bh_connect(&h2);
    CU_ASSERT_FATAL(fd >= 0);
    CU_ASSERT_EQUAL_FATAL(bh_create_topic(&h2, fd, "d10t", 1, 0), 0);
    const char *topics[] = {"d10t"};
    char msg[300];
    struct bh_group_opts o = {0};
    CU_ASSERT_EQUAL_FATAL(bh_create_group(&h2, fd, "d10", topics, 1, &o, msg, sizeof msg), 0);
    uint64_t a = 0;
    CU_ASSERT_EQUAL(bh_join(&h2, fd, "d10", "a", topics, 1, 0, &a, msg, sizeof msg),
                    wire(-ENOMEM));
    CU_ASSERT_PTR_NOT_NULL(strstr(msg, "not applied"));
    /* The member does not exist and the generation did not move. */
    struct bh_resp r;
    CU_ASSERT_EQUAL_FATAL(bh_describe(&h2, fd, "d10", &r), 0);
    CU_ASSERT_EQUAL(r.msg->env->describe_group_resp->group->n_members, 0);
    CU_ASSERT_EQUAL(r.msg->env->describe_group_resp->group->generation, 0);
    bh_resp_free(&r);
    close(fd);
    CU_ASSERT_EQUAL(bh_stop_sig(&h2, SIGTERM), 0);
    bh_cleanup(&h2);
}

/* ---- issue 8 item 5 ------------------------------------------------------------------ */

/* Unacknowledged offsets of d's only partition, polled until it is 0 or the
 * deadline passes. */
static uint64_t unacked_after(struct bh *h, int fd, const char *group, int64_t wait_ms)
{
    int64_t deadline = bh_mono_ms() + wait_ms;
    uint64_t un = UINT64_MAX;
    for (;;) {
        struct bh_resp r;
        if (bh_describe(h, fd, group, &r) == 0) {
            un = r.msg->env->describe_group_resp->group->partitions[0]->unacked;
            bh_resp_free(&r);
        }
        if (un == 0 || bh_mono_ms() >= deadline)
            return un;
        struct timespec ts = {0, 50 * 1000000};
        nanosleep(&ts, NULL); /* polling interval of a condition wait */
    }
}

static void test_idle_group_lag_returns_to_zero_after_restart(void)
{
    struct bh h2;
    CU_ASSERT_EQUAL_FATAL(bh_init(&h2, "gdefects-lag"), 0);
    CU_ASSERT_EQUAL_FATAL(bh_start(&h2, EXTRA), 0);
    int fd = bh_connect(&h2);
    CU_ASSERT_FATAL(fd >= 0);
    uint64_t a = one_member_holding(&h2, fd, "lagt", "lag", 7);
    CU_ASSERT_FATAL(a != 0);
    char msg[300];
    CU_ASSERT_EQUAL(bh_ack(&h2, fd, "lag", a, "lagt", 0, 6, 0, true, msg, sizeof msg), 0);
    CU_ASSERT_EQUAL(unacked_after(&h2, fd, "lag", 0), 0);
    close(fd);
    /* A clean stop writes a checkpoint control batch at the end of the
     * partition; nobody fetches after the restart. */
    CU_ASSERT_EQUAL_FATAL(bh_stop_sig(&h2, SIGTERM), 0);
    CU_ASSERT_EQUAL_FATAL(bh_start(&h2, EXTRA), 0);
    fd = bh_connect(&h2);
    CU_ASSERT_FATAL(fd >= 0);
    CU_ASSERT_EQUAL(unacked_after(&h2, fd, "lag", 5000), 0);
    close(fd);
    CU_ASSERT_EQUAL(bh_stop_sig(&h2, SIGTERM), 0);
    bh_cleanup(&h2);
}

int main(void)
{
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    CU_TestInfo tests[] = {
        {"waiting_ack_after_move_is_refused", test_waiting_ack_after_move_is_refused},
        {"reack_names_already", test_reack_names_already},
        {"ack_all_or_none_with_upto", test_ack_all_or_none_with_upto},
        {"ack_limit_is_shared", test_ack_limit_is_shared},
        {"client_splits_acks_at_the_limit", test_client_splits_acks_at_the_limit},
        {"fetch_generation_is_grant_time", test_fetch_generation_is_grant_time},
        {"join_out_of_memory_changes_nothing", test_join_out_of_memory_changes_nothing},
        {"idle_group_lag_returns_to_zero_after_restart",
         test_idle_group_lag_returns_to_zero_after_restart},
        CU_TEST_INFO_NULL,
    };
    CU_SuiteInfo suites[] = {
        {"group_defects", suite_init, suite_clean, NULL, NULL, tests},
        CU_SUITE_INFO_NULL,
    };
    if (CU_register_suites(suites) != CUE_SUCCESS)
        return 1;
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    unsigned failed = CU_get_number_of_failures() + CU_get_number_of_tests_failed();
    CU_cleanup_registry();
    return failed ? 1 : 0;
}
