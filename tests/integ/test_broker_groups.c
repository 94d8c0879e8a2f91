/*
 * Consumer groups against a real verityd over raw sockets and the frame
 * codec: create, join, fetch (stored batches + delivery ranges), ack
 * (ranges and cumulative), nack with a raised delivery count, lease expiry,
 * term and max_deliveries to the dead-letter topic with its headers, reset,
 * delete, long-poll wake-up, the admin HTTP views, every bad-input case with
 * its typed error and the group state unchanged, and a crash test: verityd
 * is SIGKILLed three times during consumption; no message whose ack was
 * answered comes again, every message is acknowledged in the end, and a
 * message that was delivered but not acknowledged comes back with a higher
 * delivery count (docs/GROUPS.md "Restart").
 *
 * The broker writes a checkpoint control batch every 50 records, so the
 * partitions hold control offsets: a fetch must never hand one out.
 */
#include <CUnit/Basic.h>
#include <CUnit/CUnit.h>

#include "test_broker_util.h"

static struct bh H;
static bool g_quick;

static const char *const EXTRA[] = {
    "--log-level", "info", "--checkpoint-records", "50", "--retention-check-ms", "100", NULL};

static int suite_init(void)
{
    g_quick = getenv("VERITY_TEST_QUICK") && strcmp(getenv("VERITY_TEST_QUICK"), "1") == 0;
    if (bh_init(&H, "groups") || bh_start(&H, EXTRA))
        return -1;
    return 0;
}

static int suite_clean(void)
{
    int rc = bh_stop_sig(&H, SIGTERM);
    bh_cleanup(&H);
    return rc == 0 ? 0 : -1;
}

/* Produces n records "<tag>-<i>" to topic/partition in one batch; returns
 * the base offset (or UINT64_MAX). */
static uint64_t produce(int fd, const char *topic, uint32_t partition, const char *tag, uint32_t n)
{
    uint8_t *b = NULL;
    size_t len = 0;
    struct bh_produced p;
    if (bh_batch(tag, n, -1, -1, -1, NULL, &b, &len))
        return UINT64_MAX;
    int rc = bh_produce(&H, fd, topic, partition, b, len, &p);
    free(b);
    return rc || p.error ? UINT64_MAX : p.base_offset;
}

static const struct bh_group_opts DEFAULTS = {0};

/* A compact text of the group state a failed command must not change
 * (clock-dependent fields left out). */
static char *snapshot(int fd, const char *group)
{
    struct bh_resp r;
    size_t cap = 1 << 16, len = 0;
    char *s = calloc(1, cap);
    if (!s || bh_describe(&H, fd, group, &r))
        return s;
    const Verity__GroupDescription *d = r.msg->env->describe_group_resp->group;
#define PUT(...) len += (size_t)snprintf(s + len, len < cap ? cap - len : 0, __VA_ARGS__)
    PUT("gen=%u tracked=%u leased=%u waiting=%u dlq=%u dead=%llu members=%zu\n", d->generation,
        d->tracked, d->leased, d->waiting, d->dead_letter_pending,
        (unsigned long long)d->dead_lettered, d->n_members);
    for (size_t i = 0; i < d->n_members; i++)
        PUT(" m=%llu leased=%u parts=%zu\n", (unsigned long long)d->members[i]->member_id,
            d->members[i]->leased, d->members[i]->n_assignment);
    for (size_t i = 0; i < d->n_partitions; i++) {
        const Verity__GroupPartitionState *p = d->partitions[i];
        PUT(" %s/%u floor=%llu cur=%llu unacked=%llu leased=%u waiting=%u owner=%llu\n", p->topic,
            p->partition, (unsigned long long)p->ack_floor, (unsigned long long)p->read_cursor,
            (unsigned long long)p->unacked, p->leased, p->waiting, (unsigned long long)p->owner);
    }
    bh_resp_free(&r);
    if (bh_pending(&H, fd, group, 0, 0, &r) == 0) {
        const Verity__GroupPendingResponse *pr = r.msg->env->group_pending_resp;
        PUT("pending=%llu\n", (unsigned long long)pr->total);
        for (size_t i = 0; i < pr->n_entries; i++)
            PUT(" %s/%u@%llu m=%llu n=%u dl=%lld\n", pr->entries[i]->topic,
                pr->entries[i]->partition, (unsigned long long)pr->entries[i]->offset,
                (unsigned long long)pr->entries[i]->member_id, pr->entries[i]->delivery_count,
                (long long)pr->entries[i]->lease_deadline_ms);
        bh_resp_free(&r);
    }
#undef PUT
    return s;
}

/* Finds the value of header key in a record; NULL if absent (buf gets it). */
static const char *header(const struct batch_record *rec, const char *key, char *buf, size_t cap)
{
    size_t pos = 0;
    struct batch_header_kv kv;
    while (batch_header_next(rec, &pos, &kv) == 1) {
        if (kv.key_len == strlen(key) && memcmp(kv.key, key, kv.key_len) == 0) {
            size_t n = kv.value_len > 0 ? (size_t)kv.value_len : 0;
            if (n >= cap)
                n = cap - 1;
            memcpy(buf, kv.value, n);
            buf[n] = '\0';
            return buf;
        }
    }
    return NULL;
}

/* Waits for the first data record of topic/0 (a dead-letter topic); fills
 * rec from *store (malloc'd payload the caller frees). */
static bool first_record(int fd, const char *topic, uint8_t **store, struct batch_record *rec)
{
    int64_t deadline = bh_mono_ms() + BH_TIMEOUT_MS;
    while (bh_mono_ms() < deadline) {
        uint8_t *pl = NULL;
        size_t len = 0;
        if (bh_fetch_raw(&H, fd, topic, 0, 0, &pl, &len) == 0 && len > 0) {
            size_t pos = 0;
            while (pos < len) {
                struct batch_hdr h;
                if (batch_hdr_decode(pl + pos, len - pos, &h) || h.length > len - pos)
                    break;
                if (!(h.attributes & BATCH_ATTR_CONTROL)) {
                    struct batch_iter it;
                    batch_iter_init(&it, pl + pos, h.length);
                    if (batch_iter_next(&it, rec) == 1) {
                        *store = pl;
                        return true;
                    }
                }
                pos += h.length;
            }
        }
        free(pl);
        usleep(50000);
    }
    return false;
}

/* ---- basic flow ------------------------------------------------------------------ */

static void test_ordered_fetch_ack_and_long_poll(void)
{
    int fd = bh_connect(&H);
    CU_ASSERT_FATAL(fd >= 0);
    CU_ASSERT_EQUAL_FATAL(bh_create_topic(&H, fd, "g1t", 2, 0), 0);
    CU_ASSERT_EQUAL_FATAL(produce(fd, "g1t", 0, "g1t-p0", 5), 0);
    CU_ASSERT_EQUAL_FATAL(produce(fd, "g1t", 1, "g1t-p1", 5), 0);
    const char *topics[] = {"g1t"};
    char msg[300];
    CU_ASSERT_EQUAL_FATAL(bh_create_group(&H, fd, "g1", topics, 1, &DEFAULTS, msg, sizeof msg), 0);
    uint64_t m = 0;
    CU_ASSERT_EQUAL_FATAL(bh_join(&H, fd, "g1", "c1", topics, 1, 0, &m, msg, sizeof msg), 0);
    CU_ASSERT(m != 0);
    struct bh_fetched f;
    CU_ASSERT_EQUAL_FATAL(bh_gfetch(&H, fd, "g1", m, 100, 0, &f), 0);
    CU_ASSERT_EQUAL(f.error, 0);
    CU_ASSERT_FALSE(f.bad_payload);
    CU_ASSERT_EQUAL(f.n, 10);
    for (size_t i = 0; i < f.n; i++) {
        char want[64];
        snprintf(want, sizeof want, "value of g1t-p%u record %llu", f.m[i].partition,
                 (unsigned long long)f.m[i].offset);
        CU_ASSERT_STRING_EQUAL(f.m[i].value, want);
        CU_ASSERT_EQUAL(f.m[i].delivery_count, 1);
    }
    bh_fetched_free(&f);
    CU_ASSERT_EQUAL(bh_ack(&H, fd, "g1", m, "g1t", 0, 4, 0, true, msg, sizeof msg), 0);
    CU_ASSERT_EQUAL(bh_ack(&H, fd, "g1", m, "g1t", 1, 4, 0, true, msg, sizeof msg), 0);
    /* Nothing left: a long-poll waits its time and comes back empty. */
    int64_t t0 = bh_mono_ms();
    CU_ASSERT_EQUAL(bh_gfetch(&H, fd, "g1", m, 100, 300, &f), 0);
    CU_ASSERT_EQUAL(f.n, 0);
    CU_ASSERT(bh_mono_ms() - t0 >= 250);
    bh_fetched_free(&f);
    /* A long-poll wakes when new data is committed. */
    int fd2 = bh_connect(&H);
    CU_ASSERT_FATAL(fd2 >= 0);
    Verity__Envelope env = VERITY__ENVELOPE__INIT;
    Verity__GroupFetchRequest q = VERITY__GROUP_FETCH_REQUEST__INIT;
    q.group = "g1";
    q.member_id = m;
    q.max_messages = 10;
    q.max_wait_ms = 5000;
    env.version = 1;
    env.correlation_id = 4242;
    env.body_case = VERITY__ENVELOPE__BODY_GROUP_FETCH_REQ;
    env.group_fetch_req = &q;
    CU_ASSERT_EQUAL_FATAL(codec_fd_write(fd2, &env, NULL, 0, NULL), 0);
    usleep(100000);
    t0 = bh_mono_ms();
    CU_ASSERT_EQUAL(produce(fd, "g1t", 1, "g1t-late", 1), 5);
    struct codec_msg *cm = NULL;
    uint8_t *pl = NULL;
    size_t pl_len = 0;
    CU_ASSERT_EQUAL_FATAL(codec_fd_read(fd2, NULL, BH_TIMEOUT_MS, &cm, &pl, &pl_len), 0);
    CU_ASSERT(bh_mono_ms() - t0 < 2000);
    CU_ASSERT_EQUAL(cm->env->correlation_id, 4242);
    CU_ASSERT_EQUAL_FATAL(cm->env->body_case, VERITY__ENVELOPE__BODY_GROUP_FETCH_RESP);
    CU_ASSERT_EQUAL(cm->env->group_fetch_resp->messages, 1);
    CU_ASSERT(pl_len > 0);
    codec_msg_free(cm);
    free(pl);
    close(fd2);
    CU_ASSERT_EQUAL(bh_ack(&H, fd, "g1", m, "g1t", 1, 5, 1, false, msg, sizeof msg), 0);
    /* Describe: nothing unacked, floors at the ends. */
    struct bh_resp r;
    CU_ASSERT_EQUAL_FATAL(bh_describe(&H, fd, "g1", &r), 0);
    const Verity__GroupDescription *d = r.msg->env->describe_group_resp->group;
    CU_ASSERT_EQUAL(d->n_members, 1);
    CU_ASSERT_EQUAL(d->n_partitions, 2);
    CU_ASSERT_EQUAL(d->partitions[0]->unacked, 0);
    CU_ASSERT_EQUAL(d->partitions[1]->unacked, 0);
    CU_ASSERT_EQUAL(d->partitions[0]->ack_floor, 5);
    CU_ASSERT_EQUAL(d->partitions[1]->ack_floor, 6);
    CU_ASSERT_EQUAL(d->partitions[0]->owner, m);
    CU_ASSERT_EQUAL(d->leased, 0);
    bh_resp_free(&r);
    close(fd);
}

static void test_shared_nack_redelivers_with_count_2(void)
{
    int fd = bh_connect(&H);
    CU_ASSERT_FATAL(fd >= 0);
    CU_ASSERT_EQUAL_FATAL(bh_create_topic(&H, fd, "g2t", 1, 0), 0);
    CU_ASSERT_EQUAL_FATAL(produce(fd, "g2t", 0, "g2t", 3), 0);
    const char *topics[] = {"g2t"};
    struct bh_group_opts o = {.mode = VERITY__GROUP_MODE__GROUP_MODE_SHARED};
    char msg[300];
    CU_ASSERT_EQUAL_FATAL(bh_create_group(&H, fd, "g2", topics, 1, &o, msg, sizeof msg), 0);
    uint64_t a = 0, b = 0;
    CU_ASSERT_EQUAL_FATAL(bh_join(&H, fd, "g2", "a", topics, 1, 0, &a, msg, sizeof msg), 0);
    CU_ASSERT_EQUAL_FATAL(bh_join(&H, fd, "g2", "b", NULL, 0, 0, &b, msg, sizeof msg), 0);
    struct bh_fetched f;
    CU_ASSERT_EQUAL_FATAL(bh_gfetch(&H, fd, "g2", a, 100, 0, &f), 0);
    CU_ASSERT_EQUAL(f.n, 3);
    bh_fetched_free(&f);
    bool dead = true;
    CU_ASSERT_EQUAL(
        bh_nack(&H, fd, "g2", a, "g2t", 0, 1, -1, "try again", false, &dead, msg, sizeof msg), 0);
    CU_ASSERT_FALSE(dead);
    /* Any member may take it in shared mode; it shows count 2. */
    CU_ASSERT_EQUAL_FATAL(bh_gfetch(&H, fd, "g2", b, 100, 1000, &f), 0);
    CU_ASSERT_EQUAL_FATAL(f.n, 1);
    CU_ASSERT_EQUAL(f.m[0].offset, 1);
    CU_ASSERT_EQUAL(f.m[0].delivery_count, 2);
    CU_ASSERT_STRING_EQUAL(f.m[0].value, "value of g2t record 1");
    bh_fetched_free(&f);
    CU_ASSERT_EQUAL(bh_ack(&H, fd, "g2", b, "g2t", 0, 1, 1, false, msg, sizeof msg), 0);
    CU_ASSERT_EQUAL(bh_ack(&H, fd, "g2", a, "g2t", 0, 0, 1, false, msg, sizeof msg), 0);
    CU_ASSERT_EQUAL(bh_ack(&H, fd, "g2", a, "g2t", 0, 2, 1, false, msg, sizeof msg), 0);
    /* Acknowledging a done message again is not an error. */
    CU_ASSERT_EQUAL(bh_ack(&H, fd, "g2", a, "g2t", 0, 0, 3, false, msg, sizeof msg), 0);
    struct bh_resp r;
    CU_ASSERT_EQUAL_FATAL(bh_describe(&H, fd, "g2", &r), 0);
    CU_ASSERT_EQUAL(r.msg->env->describe_group_resp->group->partitions[0]->ack_floor, 3);
    CU_ASSERT_EQUAL(r.msg->env->describe_group_resp->group->redeliveries, 1);
    bh_resp_free(&r);
    close(fd);
}

/* A one-partition topic holding n messages and an ordered group on it with
 * one lease time and one back-off step; the joined member's id. */
static uint64_t one_member_group(int fd, const char *topic, int n, const char *group,
                                 int64_t lease_ms, int64_t backoff_ms)
{
    CU_ASSERT_EQUAL_FATAL(bh_create_topic(&H, fd, topic, 1, 0), 0);
    CU_ASSERT_EQUAL_FATAL(produce(fd, topic, 0, topic, n), 0);
    const char *topics[] = {topic};
    int64_t backoff[] = {backoff_ms};
    struct bh_group_opts o = {.lease_ms = lease_ms, .backoff_ms = backoff, .n_backoff = 1};
    char msg[300];
    CU_ASSERT_EQUAL_FATAL(bh_create_group(&H, fd, group, topics, 1, &o, msg, sizeof msg), 0);
    uint64_t m = 0;
    CU_ASSERT_EQUAL_FATAL(bh_join(&H, fd, group, "c", topics, 1, 0, &m, msg, sizeof msg), 0);
    return m;
}

static void test_lease_expiry_redelivers(void)
{
    int fd = bh_connect(&H);
    CU_ASSERT_FATAL(fd >= 0);
    uint64_t m = one_member_group(fd, "g3t", 2, "g3", 300, 0);
    char msg[300];
    struct bh_fetched f;
    CU_ASSERT_EQUAL_FATAL(bh_gfetch(&H, fd, "g3", m, 10, 0, &f), 0);
    CU_ASSERT_EQUAL(f.n, 2);
    bh_fetched_free(&f);
    struct bh_resp r;
    CU_ASSERT_EQUAL_FATAL(bh_pending(&H, fd, "g3", m, 0, &r), 0);
    CU_ASSERT_EQUAL(r.msg->env->group_pending_resp->total, 2);
    CU_ASSERT_EQUAL(r.msg->env->group_pending_resp->entries[0]->delivery_count, 1);
    bh_resp_free(&r);
    /* The leases run out; the long-poll is woken by the expiry. */
    CU_ASSERT_EQUAL_FATAL(bh_gfetch(&H, fd, "g3", m, 10, 3000, &f), 0);
    CU_ASSERT_EQUAL_FATAL(f.n, 2);
    CU_ASSERT_EQUAL(f.m[0].offset, 0);
    CU_ASSERT_EQUAL(f.m[0].delivery_count, 2);
    CU_ASSERT_EQUAL(f.m[1].delivery_count, 2);
    bh_fetched_free(&f);
    CU_ASSERT_EQUAL(bh_ack(&H, fd, "g3", m, "g3t", 0, 1, 0, true, msg, sizeof msg), 0);
    close(fd);
}

/* Ordered mode: an ack of the message that blocks its partition (waiting
 * for redelivery after its lease ran out) wakes the member's long-poll,
 * which then gets the next offset at once. The broker wakes long-polls on
 * an ack only when it may free something (issue 16): this is the case it
 * must not miss. */
static void test_ack_of_waiting_message_wakes_long_poll(void)
{
    int fd = bh_connect(&H);
    CU_ASSERT_FATAL(fd >= 0);
    uint64_t m = one_member_group(fd, "gwt", 3, "gw", 200, 60000);
    char msg[300];
    struct bh_fetched f;
    CU_ASSERT_EQUAL_FATAL(bh_gfetch(&H, fd, "gw", m, 1, 0, &f), 0);
    CU_ASSERT_EQUAL_FATAL(f.n, 1);
    CU_ASSERT_EQUAL(f.m[0].offset, 0);
    bh_fetched_free(&f);
    /* The lease runs out: offset 0 waits 60 s and holds the partition. */
    usleep(600000);
    CU_ASSERT_EQUAL_FATAL(bh_gfetch(&H, fd, "gw", m, 1, 0, &f), 0);
    CU_ASSERT_EQUAL(f.n, 0);
    bh_fetched_free(&f);
    int fd2 = bh_connect(&H);
    CU_ASSERT_FATAL(fd2 >= 0);
    Verity__Envelope env = VERITY__ENVELOPE__INIT;
    Verity__GroupFetchRequest q = VERITY__GROUP_FETCH_REQUEST__INIT;
    q.group = "gw";
    q.member_id = m;
    q.max_messages = 1;
    q.max_wait_ms = 5000;
    env.version = 1;
    env.correlation_id = 4343;
    env.body_case = VERITY__ENVELOPE__BODY_GROUP_FETCH_REQ;
    env.group_fetch_req = &q;
    CU_ASSERT_EQUAL_FATAL(codec_fd_write(fd2, &env, NULL, 0, NULL), 0);
    usleep(100000);
    int64_t t0 = bh_mono_ms();
    /* Its last holder acknowledges it while it waits. */
    CU_ASSERT_EQUAL(bh_ack(&H, fd, "gw", m, "gwt", 0, 0, 1, false, msg, sizeof msg), 0);
    struct codec_msg *cm = NULL;
    uint8_t *pl = NULL;
    size_t pl_len = 0;
    CU_ASSERT_EQUAL_FATAL(codec_fd_read(fd2, NULL, BH_TIMEOUT_MS, &cm, &pl, &pl_len), 0);
    CU_ASSERT(bh_mono_ms() - t0 < 2000);
    CU_ASSERT_EQUAL(cm->env->correlation_id, 4343);
    CU_ASSERT_EQUAL_FATAL(cm->env->body_case, VERITY__ENVELOPE__BODY_GROUP_FETCH_RESP);
    CU_ASSERT_EQUAL(cm->env->group_fetch_resp->messages, 1);
    codec_msg_free(cm);
    free(pl);
    close(fd2);
    close(fd);
}

/* Checks the dead letter of source topic/0@offset in dlq. */
static void check_dead_letter(int fd, const char *dlq, const char *topic, const char *group,
                              uint64_t offset, const char *count, const char *error)
{
    uint8_t *store = NULL;
    struct batch_record rec;
    CU_ASSERT_FATAL(first_record(fd, dlq, &store, &rec));
    char buf[300], want[64];
    CU_ASSERT_STRING_EQUAL(header(&rec, "verity.source.topic", buf, sizeof buf), topic);
    CU_ASSERT_STRING_EQUAL(header(&rec, "verity.source.partition", buf, sizeof buf), "0");
    snprintf(want, sizeof want, "%llu", (unsigned long long)offset);
    CU_ASSERT_STRING_EQUAL(header(&rec, "verity.source.offset", buf, sizeof buf), want);
    CU_ASSERT_STRING_EQUAL(header(&rec, "verity.group", buf, sizeof buf), group);
    CU_ASSERT_STRING_EQUAL(header(&rec, "verity.delivery_count", buf, sizeof buf), count);
    CU_ASSERT_STRING_EQUAL(header(&rec, "verity.error", buf, sizeof buf), error);
    CU_ASSERT_PTR_NOT_NULL(header(&rec, "verity.source.timestamp", buf, sizeof buf));
    CU_ASSERT(atoll(buf) > 1600000000000LL);
    CU_ASSERT_PTR_NULL(header(&rec, "verity.missing", buf, sizeof buf));
    snprintf(want, sizeof want, "value of %s record %llu", topic, (unsigned long long)offset);
    CU_ASSERT_EQUAL(rec.value_len, (int32_t)strlen(want));
    CU_ASSERT(rec.value_len > 0 && memcmp(rec.value, want, (size_t)rec.value_len) == 0);
    snprintf(want, sizeof want, "%s-%llu", topic, (unsigned long long)offset);
    CU_ASSERT(rec.key_len == (int32_t)strlen(want) && memcmp(rec.key, want, strlen(want)) == 0);
    free(store);
}

/* Waits until the group reports n dead letters completed. */
static bool wait_dead_lettered(int fd, const char *group, uint64_t n)
{
    int64_t deadline = bh_mono_ms() + BH_TIMEOUT_MS;
    while (bh_mono_ms() < deadline) {
        struct bh_resp r;
        if (bh_describe(&H, fd, group, &r) == 0) {
            const Verity__GroupDescription *d = r.msg->env->describe_group_resp->group;
            bool ok = d->dead_lettered == n && d->dead_letter_pending == 0 &&
                      d->partitions[0]->unacked == 0;
            bh_resp_free(&r);
            if (ok)
                return true;
        }
        usleep(20000);
    }
    return false;
}

static void test_term_goes_to_dlq_with_headers(void)
{
    int fd = bh_connect(&H);
    CU_ASSERT_FATAL(fd >= 0);
    CU_ASSERT_EQUAL_FATAL(bh_create_topic(&H, fd, "g4t", 1, 0), 0);
    CU_ASSERT_EQUAL_FATAL(produce(fd, "g4t", 0, "g4t", 1), 0);
    const char *topics[] = {"g4t"};
    char msg[300];
    CU_ASSERT_EQUAL_FATAL(bh_create_group(&H, fd, "g4", topics, 1, &DEFAULTS, msg, sizeof msg), 0);
    uint64_t m = 0;
    CU_ASSERT_EQUAL_FATAL(bh_join(&H, fd, "g4", "c", topics, 1, 0, &m, msg, sizeof msg), 0);
    struct bh_fetched f;
    CU_ASSERT_EQUAL_FATAL(bh_gfetch(&H, fd, "g4", m, 10, 0, &f), 0);
    CU_ASSERT_EQUAL_FATAL(f.n, 1);
    bh_fetched_free(&f);
    CU_ASSERT_EQUAL(
        bh_nack(&H, fd, "g4", m, "g4t", 0, 0, 0, "cannot parse", true, NULL, msg, sizeof msg), 0);
    check_dead_letter(fd, "g4t.dlq", "g4t", "g4", 0, "1", "cannot parse");
    CU_ASSERT(wait_dead_lettered(fd, "g4", 1));
    /* It is done: nothing more to deliver. */
    CU_ASSERT_EQUAL(bh_gfetch(&H, fd, "g4", m, 10, 200, &f), 0);
    CU_ASSERT_EQUAL(f.n, 0);
    bh_fetched_free(&f);
    close(fd);
}

static void test_max_deliveries_goes_to_dlq(void)
{
    int fd = bh_connect(&H);
    CU_ASSERT_FATAL(fd >= 0);
    CU_ASSERT_EQUAL_FATAL(bh_create_topic(&H, fd, "g5t", 1, 0), 0);
    CU_ASSERT_EQUAL_FATAL(produce(fd, "g5t", 0, "g5t", 1), 0);
    const char *topics[] = {"g5t"};
    int64_t backoff[] = {0};
    struct bh_group_opts o = {
        .max_deliveries = 2, .backoff_ms = backoff, .n_backoff = 1, .dlq_topic = "g5-dead"};
    char msg[300];
    CU_ASSERT_EQUAL_FATAL(bh_create_group(&H, fd, "g5", topics, 1, &o, msg, sizeof msg), 0);
    uint64_t m = 0;
    CU_ASSERT_EQUAL_FATAL(bh_join(&H, fd, "g5", "c", topics, 1, 0, &m, msg, sizeof msg), 0);
    struct bh_fetched f;
    bool dead = true;
    CU_ASSERT_EQUAL_FATAL(bh_gfetch(&H, fd, "g5", m, 10, 0, &f), 0);
    CU_ASSERT_EQUAL_FATAL(f.n, 1);
    bh_fetched_free(&f);
    CU_ASSERT_EQUAL(
        bh_nack(&H, fd, "g5", m, "g5t", 0, 0, -1, "boom1", false, &dead, msg, sizeof msg), 0);
    CU_ASSERT_FALSE(dead);
    CU_ASSERT_EQUAL_FATAL(bh_gfetch(&H, fd, "g5", m, 10, 1000, &f), 0);
    CU_ASSERT_EQUAL_FATAL(f.n, 1);
    CU_ASSERT_EQUAL(f.m[0].delivery_count, 2);
    bh_fetched_free(&f);
    CU_ASSERT_EQUAL(
        bh_nack(&H, fd, "g5", m, "g5t", 0, 0, -1, "boom2", false, &dead, msg, sizeof msg), 0);
    CU_ASSERT_TRUE(dead);
    check_dead_letter(fd, "g5-dead", "g5t", "g5", 0, "2", "boom2");
    CU_ASSERT(wait_dead_lettered(fd, "g5", 1));
    CU_ASSERT_EQUAL(bh_gfetch(&H, fd, "g5", m, 10, 200, &f), 0);
    CU_ASSERT_EQUAL(f.n, 0);
    bh_fetched_free(&f);
    close(fd);
}

/* ---- bad input ----------------------------------------------------------------- */

/* Runs a failing command: its wire error must be want and the snapshot of
 * group must not change. */
#define EXPECT_REFUSED(fd, group, want, call)                                                      \
    do {                                                                                           \
        char *before_ = snapshot((fd), (group));                                                   \
        int got_ = (call);                                                                         \
        char *after_ = snapshot((fd), (group));                                                    \
        CU_ASSERT_EQUAL(got_, (want));                                                             \
        if (got_ != (want))                                                                        \
            fprintf(stderr, "\n%s:%d: got %d want %d (%s)\n", __FILE__, __LINE__, got_, (want),    \
                    msg);                                                                          \
        CU_ASSERT(msg[0] != '\0');                                                                 \
        CU_ASSERT_STRING_EQUAL(before_, after_);                                                   \
        free(before_);                                                                             \
        free(after_);                                                                              \
    } while (0)

static void test_bad_input_typed_errors_state_unchanged(void)
{
    int fd = bh_connect(&H);
    CU_ASSERT_FATAL(fd >= 0);
    CU_ASSERT_EQUAL_FATAL(bh_create_topic(&H, fd, "g6t", 1, 0), 0);
    CU_ASSERT_EQUAL_FATAL(bh_create_topic(&H, fd, "g6other", 1, 0), 0);
    CU_ASSERT_EQUAL_FATAL(produce(fd, "g6t", 0, "g6t", 6), 0);
    const char *topics[] = {"g6t"};
    const char *wrong[] = {"g6other"};
    int64_t backoff[] = {0};
    struct bh_group_opts o = {.mode = VERITY__GROUP_MODE__GROUP_MODE_SHARED,
                              .lease_ms = 1000,
                              .backoff_ms = backoff,
                              .n_backoff = 1};
    char msg[300] = "";
    CU_ASSERT_EQUAL_FATAL(bh_create_group(&H, fd, "g6", topics, 1, &o, msg, sizeof msg), 0);
    uint64_t a = 0, b = 0, x = 0;
    CU_ASSERT_EQUAL_FATAL(bh_join(&H, fd, "g6", "a", topics, 1, 60000, &a, msg, sizeof msg), 0);
    CU_ASSERT_EQUAL_FATAL(bh_join(&H, fd, "g6", "b", topics, 1, 60000, &b, msg, sizeof msg), 0);
    struct bh_fetched f;
    CU_ASSERT_EQUAL_FATAL(bh_gfetch(&H, fd, "g6", a, 5, 0, &f), 0);
    CU_ASSERT_EQUAL_FATAL(f.n, 5); /* offsets 0..4, leased to a; 5 is never delivered */
    bh_fetched_free(&f);
    msg[0] = '\0';
    EXPECT_REFUSED(fd, "g6", VERITY__ERROR_CODE__ERR_LEASE,
                   bh_ack(&H, fd, "g6", b, "g6t", 0, 0, 1, false, msg, sizeof msg));
    msg[0] = '\0';
    EXPECT_REFUSED(fd, "g6", VERITY__ERROR_CODE__ERR_OFFSET,
                   bh_ack(&H, fd, "g6", a, "g6t", 0, 5, 1, false, msg, sizeof msg));
    msg[0] = '\0';
    /* All or none: a range with one good and one bad offset changes nothing. */
    EXPECT_REFUSED(fd, "g6", VERITY__ERROR_CODE__ERR_OFFSET,
                   bh_ack(&H, fd, "g6", a, "g6t", 0, 3, 3, false, msg, sizeof msg));
    msg[0] = '\0';
    EXPECT_REFUSED(fd, "g6", VERITY__ERROR_CODE__ERR_NOT_FOUND,
                   bh_ack(&H, fd, "nosuchgroup", a, "g6t", 0, 0, 1, false, msg, sizeof msg));
    msg[0] = '\0';
    EXPECT_REFUSED(fd, "g6", VERITY__ERROR_CODE__ERR_MEMBER,
                   bh_ack(&H, fd, "g6", 999999, "g6t", 0, 0, 1, false, msg, sizeof msg));
    msg[0] = '\0';
    EXPECT_REFUSED(fd, "g6", VERITY__ERROR_CODE__ERR_INVALID,
                   bh_join(&H, fd, "g6", "x", wrong, 1, 0, &x, msg, sizeof msg));
    msg[0] = '\0';
    EXPECT_REFUSED(fd, "g6", VERITY__ERROR_CODE__ERR_INVALID,
                   bh_ack(&H, fd, "g6", a, "g6t", 0, 1, 0, true, msg, sizeof msg));
    msg[0] = '\0';
    EXPECT_REFUSED(fd, "g6", VERITY__ERROR_CODE__ERR_INVALID,
                   bh_ack(&H, fd, "g6", a, "g6other", 0, 0, 1, false, msg, sizeof msg));
    msg[0] = '\0';
    EXPECT_REFUSED(fd, "g6", VERITY__ERROR_CODE__ERR_OFFSET,
                   bh_nack(&H, fd, "g6", a, "g6t", 0, 5, -1, "x", false, NULL, msg, sizeof msg));
    msg[0] = '\0';
    EXPECT_REFUSED(fd, "g6", VERITY__ERROR_CODE__ERR_LEASE,
                   bh_nack(&H, fd, "g6", b, "g6t", 0, 0, 0, "x", true, NULL, msg, sizeof msg));
    msg[0] = '\0';
    EXPECT_REFUSED(fd, "g6", VERITY__ERROR_CODE__ERR_NOT_FOUND,
                   bh_join(&H, fd, "nosuchgroup", "x", topics, 1, 0, &x, msg, sizeof msg));
    msg[0] = '\0';
    struct bh_group_opts bad = {.max_deliveries = 5000};
    EXPECT_REFUSED(fd, "g6", VERITY__ERROR_CODE__ERR_LIMIT,
                   bh_create_group(&H, fd, "g6x", topics, 1, &bad, msg, sizeof msg));
    msg[0] = '\0';
    EXPECT_REFUSED(fd, "g6", VERITY__ERROR_CODE__ERR_EXISTS,
                   bh_create_group(&H, fd, "g6", topics, 1, &o, msg, sizeof msg));
    msg[0] = '\0';
    const char *missing[] = {"nosuchtopic"};
    EXPECT_REFUSED(fd, "g6", VERITY__ERROR_CODE__ERR_NOT_FOUND,
                   bh_create_group(&H, fd, "g6y", missing, 1, &o, msg, sizeof msg));
    /* b takes the one never delivered; after the lease moved: a's leases
     * expire, b gets the first two. */
    CU_ASSERT_EQUAL_FATAL(bh_gfetch(&H, fd, "g6", b, 1, 0, &f), 0);
    CU_ASSERT_EQUAL_FATAL(f.n, 1);
    CU_ASSERT_EQUAL(f.m[0].offset, 5);
    bh_fetched_free(&f);
    CU_ASSERT_EQUAL_FATAL(bh_gfetch(&H, fd, "g6", b, 2, 3000, &f), 0);
    CU_ASSERT_EQUAL_FATAL(f.n, 2);
    CU_ASSERT_EQUAL(f.m[0].offset, 0);
    CU_ASSERT_EQUAL(f.m[0].delivery_count, 2);
    bh_fetched_free(&f);
    msg[0] = '\0';
    EXPECT_REFUSED(fd, "g6", VERITY__ERROR_CODE__ERR_LEASE,
                   bh_ack(&H, fd, "g6", a, "g6t", 0, 0, 1, false, msg, sizeof msg));
    CU_ASSERT_PTR_NOT_NULL(strstr(msg, "offset 0"));
    /* b's ack still works; a may still ack what waits after its own lease. */
    CU_ASSERT_EQUAL(bh_ack(&H, fd, "g6", b, "g6t", 0, 0, 2, false, msg, sizeof msg), 0);
    CU_ASSERT_EQUAL(bh_ack(&H, fd, "g6", b, "g6t", 0, 5, 1, false, msg, sizeof msg), 0);
    CU_ASSERT_EQUAL(bh_ack(&H, fd, "g6", a, "g6t", 0, 2, 3, false, msg, sizeof msg), 0);
    struct bh_resp r;
    CU_ASSERT_EQUAL_FATAL(bh_describe(&H, fd, "g6", &r), 0);
    CU_ASSERT_EQUAL(r.msg->env->describe_group_resp->group->partitions[0]->ack_floor, 6);
    bh_resp_free(&r);
    close(fd);
}

/* Requests the codec refuses before the broker looks at them. */
static void test_malformed_group_requests_are_refused(void)
{
    int fd = bh_connect(&H);
    CU_ASSERT_FATAL(fd >= 0);
    char msg[300];
    struct bh_group_opts o = {0};
    const char *one[] = {"g1t"};
    /* Group names follow the topic-name rule. */
    CU_ASSERT_EQUAL(bh_create_group(&H, fd, "__internal", one, 1, &o, msg, sizeof msg),
                    VERITY__ERROR_CODE__ERR_INVALID);
    CU_ASSERT_EQUAL(bh_create_group(&H, fd, "has space", one, 1, &o, msg, sizeof msg),
                    VERITY__ERROR_CODE__ERR_INVALID);
    CU_ASSERT_EQUAL(bh_create_group(&H, fd, "", one, 1, &o, msg, sizeof msg),
                    VERITY__ERROR_CODE__ERR_INVALID);
    /* Too many topics, no topic, an unknown mode. */
    const char *many[17];
    for (int i = 0; i < 17; i++)
        many[i] = "g1t";
    CU_ASSERT_EQUAL(bh_create_group(&H, fd, "gx", many, 17, &o, msg, sizeof msg),
                    VERITY__ERROR_CODE__ERR_LIMIT);
    CU_ASSERT_EQUAL(bh_create_group(&H, fd, "gx", one, 0, &o, msg, sizeof msg),
                    VERITY__ERROR_CODE__ERR_INVALID);
    struct bh_group_opts bad_mode = {.mode = (Verity__GroupMode)7};
    CU_ASSERT_EQUAL(bh_create_group(&H, fd, "gx", one, 1, &bad_mode, msg, sizeof msg),
                    VERITY__ERROR_CODE__ERR_INVALID);
    /* A topic named twice. */
    const char *twice[] = {"g1t", "g1t"};
    CU_ASSERT_EQUAL(bh_create_group(&H, fd, "gx", twice, 2, &o, msg, sizeof msg),
                    VERITY__ERROR_CODE__ERR_INVALID);
    /* An ack with nothing in it, an extend with no ranges. */
    Verity__Envelope env = VERITY__ENVELOPE__INIT;
    Verity__AckRequest aq = VERITY__ACK_REQUEST__INIT;
    aq.group = "g1";
    aq.member_id = 1;
    env.body_case = VERITY__ENVELOPE__BODY_ACK_REQ;
    env.ack_req = &aq;
    struct bh_resp r;
    CU_ASSERT_EQUAL(bh_group_call(&H, fd, &env, &r, msg, sizeof msg),
                    VERITY__ERROR_CODE__ERR_INVALID);
    Verity__ExtendRequest eq = VERITY__EXTEND_REQUEST__INIT;
    eq.group = "g1";
    env.body_case = VERITY__ENVELOPE__BODY_EXTEND_REQ;
    env.extend_req = &eq;
    CU_ASSERT_EQUAL(bh_group_call(&H, fd, &env, &r, msg, sizeof msg),
                    VERITY__ERROR_CODE__ERR_INVALID);
    /* A fetch over the ceiling, an over-long member name. */
    Verity__GroupFetchRequest fq = VERITY__GROUP_FETCH_REQUEST__INIT;
    fq.group = "g1";
    fq.max_messages = CODEC_GROUP_FETCH_MAX + 1;
    env.body_case = VERITY__ENVELOPE__BODY_GROUP_FETCH_REQ;
    env.group_fetch_req = &fq;
    CU_ASSERT_EQUAL(bh_group_call(&H, fd, &env, &r, msg, sizeof msg),
                    VERITY__ERROR_CODE__ERR_LIMIT);
    CU_ASSERT_PTR_NOT_NULL(strstr(msg, "max_messages"));
    char name[200];
    memset(name, 'n', sizeof name - 1);
    name[sizeof name - 1] = '\0';
    uint64_t m = 0;
    CU_ASSERT_EQUAL(bh_join(&H, fd, "g1", name, one, 1, 0, &m, msg, sizeof msg),
                    VERITY__ERROR_CODE__ERR_LIMIT);
    /* An ack of more offsets than one request may carry. */
    CU_ASSERT_EQUAL(bh_ack(&H, fd, "g1", 1, "g1t", 0, 0, 70000, false, msg, sizeof msg),
                    VERITY__ERROR_CODE__ERR_LIMIT);
    /* The connection still serves. */
    CU_ASSERT_EQUAL(bh_describe(&H, fd, "g1", &r), 0);
    bh_resp_free(&r);
    close(fd);
}

/* ---- reset, delete, admin views ------------------------------------------------ */

static void test_reset_delete_and_http(void)
{
    int fd = bh_connect(&H);
    CU_ASSERT_FATAL(fd >= 0);
    CU_ASSERT_EQUAL_FATAL(bh_create_topic(&H, fd, "g7t", 1, 0), 0);
    CU_ASSERT_EQUAL_FATAL(produce(fd, "g7t", 0, "g7t", 4), 0);
    const char *topics[] = {"g7t"};
    struct bh_group_opts o = {.start = VERITY__GROUP_START__GROUP_START_LATEST};
    char msg[300];
    CU_ASSERT_EQUAL_FATAL(bh_create_group(&H, fd, "g7", topics, 1, &o, msg, sizeof msg), 0);
    uint64_t m = 0;
    CU_ASSERT_EQUAL_FATAL(bh_join(&H, fd, "g7", "c", topics, 1, 0, &m, msg, sizeof msg), 0);
    struct bh_fetched f;
    CU_ASSERT_EQUAL_FATAL(bh_gfetch(&H, fd, "g7", m, 10, 0, &f), 0);
    CU_ASSERT_EQUAL(f.n, 0); /* started at the end */
    bh_fetched_free(&f);
    /* Reset to offset 2: offsets 2 and 3 come. */
    Verity__Envelope env = VERITY__ENVELOPE__INIT;
    Verity__ResetGroupRequest rq = VERITY__RESET_GROUP_REQUEST__INIT;
    Verity__GroupPosition pos = VERITY__GROUP_POSITION__INIT;
    pos.start = VERITY__GROUP_START__GROUP_START_OFFSET;
    pos.offset = 2;
    rq.group = "g7";
    rq.position = &pos;
    env.body_case = VERITY__ENVELOPE__BODY_RESET_GROUP_REQ;
    env.reset_group_req = &rq;
    struct bh_resp r;
    CU_ASSERT_EQUAL_FATAL(bh_group_call(&H, fd, &env, &r, msg, sizeof msg), 0);
    CU_ASSERT_EQUAL(r.msg->env->reset_group_resp->n_offsets, 1);
    CU_ASSERT_EQUAL(r.msg->env->reset_group_resp->offsets[0]->offset, 2);
    bh_resp_free(&r);
    CU_ASSERT_EQUAL_FATAL(bh_gfetch(&H, fd, "g7", m, 10, 0, &f), 0);
    CU_ASSERT_EQUAL(f.n, 2);
    if (f.n == 2) {
        CU_ASSERT_EQUAL(f.m[0].offset, 2);
        CU_ASSERT_EQUAL(f.m[0].delivery_count, 1);
    }
    bh_fetched_free(&f);
    /* The admin views name the group and its lag. */
    char *body = bh_http_get(&H, "/v1/groups");
    CU_ASSERT_PTR_NOT_NULL_FATAL(body);
    CU_ASSERT_PTR_NOT_NULL(strstr(body, "\"name\": \"g7\""));
    CU_ASSERT_PTR_NOT_NULL(strstr(body, "\"lag\": 2"));
    free(body);
    body = bh_http_get(&H, "/metrics");
    CU_ASSERT_PTR_NOT_NULL_FATAL(body);
    CU_ASSERT_PTR_NOT_NULL(
        strstr(body, "verity_group_lag{group=\"g7\",topic=\"g7t\",partition=\"0\"} 2"));
    CU_ASSERT_PTR_NOT_NULL(
        strstr(body, "verity_group_pending{group=\"g7\",topic=\"g7t\",partition=\"0\"} 2"));
    CU_ASSERT_PTR_NOT_NULL(strstr(body, "verity_group_dead_letters_total{group=\"g4\"} 1"));
    CU_ASSERT_PTR_NOT_NULL(strstr(body, "verity_group_redeliveries_total{group=\"g2\"} 1"));
    free(body);
    /* ListGroups names it. */
    Verity__ListGroupsRequest lq = VERITY__LIST_GROUPS_REQUEST__INIT;
    env = (Verity__Envelope)VERITY__ENVELOPE__INIT;
    env.body_case = VERITY__ENVELOPE__BODY_LIST_GROUPS_REQ;
    env.list_groups_req = &lq;
    CU_ASSERT_EQUAL_FATAL(bh_group_call(&H, fd, &env, &r, msg, sizeof msg), 0);
    bool found = false;
    for (size_t i = 0; i < r.msg->env->list_groups_resp->n_groups; i++)
        if (strcmp(r.msg->env->list_groups_resp->groups[i]->group, "g7") == 0)
            found = r.msg->env->list_groups_resp->groups[i]->unacked == 2;
    CU_ASSERT_TRUE(found);
    bh_resp_free(&r);
    /* Reset by time: a time after every record resolves to the end, the
     * epoch to the first offset. */
    pos.start = VERITY__GROUP_START__GROUP_START_TIME;
    pos.timestamp_ms = INT64_MAX / 2;
    env = (Verity__Envelope)VERITY__ENVELOPE__INIT;
    env.body_case = VERITY__ENVELOPE__BODY_RESET_GROUP_REQ;
    env.reset_group_req = &rq;
    CU_ASSERT_EQUAL_FATAL(bh_group_call(&H, fd, &env, &r, msg, sizeof msg), 0);
    CU_ASSERT_EQUAL(r.msg->env->reset_group_resp->offsets[0]->offset, 4);
    bh_resp_free(&r);
    pos.timestamp_ms = 0;
    CU_ASSERT_EQUAL_FATAL(bh_group_call(&H, fd, &env, &r, msg, sizeof msg), 0);
    CU_ASSERT_EQUAL(r.msg->env->reset_group_resp->offsets[0]->offset, 0);
    bh_resp_free(&r);
    /* Delete: the group and its members are gone. */
    Verity__DeleteGroupRequest dq = VERITY__DELETE_GROUP_REQUEST__INIT;
    dq.group = "g7";
    env = (Verity__Envelope)VERITY__ENVELOPE__INIT;
    env.body_case = VERITY__ENVELOPE__BODY_DELETE_GROUP_REQ;
    env.delete_group_req = &dq;
    CU_ASSERT_EQUAL_FATAL(bh_group_call(&H, fd, &env, &r, msg, sizeof msg), 0);
    bh_resp_free(&r);
    CU_ASSERT_EQUAL(bh_describe(&H, fd, "g7", &r), VERITY__ERROR_CODE__ERR_NOT_FOUND);
    CU_ASSERT_EQUAL(bh_gfetch(&H, fd, "g7", m, 10, 0, &f), 0);
    CU_ASSERT_EQUAL(f.error, VERITY__ERROR_CODE__ERR_NOT_FOUND);
    bh_fetched_free(&f);
    close(fd);
}

/* ---- sessions ------------------------------------------------------------------- */

static int heartbeat(int fd, const char *group, uint64_t member)
{
    Verity__Envelope env = VERITY__ENVELOPE__INIT;
    Verity__HeartbeatRequest q = VERITY__HEARTBEAT_REQUEST__INIT;
    q.group = (char *)group;
    q.member_id = member;
    env.body_case = VERITY__ENVELOPE__BODY_HEARTBEAT_REQ;
    env.heartbeat_req = &q;
    struct bh_resp r;
    int rc = bh_group_call(&H, fd, &env, &r, NULL, 0);
    if (rc == 0)
        bh_resp_free(&r);
    return rc;
}

static void test_session_timeout_returns_work(void)
{
    int fd = bh_connect(&H);
    CU_ASSERT_FATAL(fd >= 0);
    CU_ASSERT_EQUAL_FATAL(bh_create_topic(&H, fd, "g9t", 1, 0), 0);
    const char *topics[] = {"g9t"};
    int64_t backoff[] = {0};
    struct bh_group_opts o = {
        .mode = VERITY__GROUP_MODE__GROUP_MODE_SHARED, .backoff_ms = backoff, .n_backoff = 1};
    char msg[300];
    CU_ASSERT_EQUAL_FATAL(bh_create_group(&H, fd, "g9", topics, 1, &o, msg, sizeof msg), 0);
    uint64_t a = 0, b = 0;
    CU_ASSERT_EQUAL_FATAL(bh_join(&H, fd, "g9", "a", topics, 1, 400, &a, msg, sizeof msg), 0);
    CU_ASSERT_EQUAL_FATAL(bh_join(&H, fd, "g9", "b", topics, 1, 60000, &b, msg, sizeof msg), 0);
    /* A member that waits in a GroupFetch longer than its session is alive. */
    struct bh_fetched f;
    CU_ASSERT_EQUAL_FATAL(bh_gfetch(&H, fd, "g9", a, 10, 900, &f), 0);
    CU_ASSERT_EQUAL(f.error, 0);
    CU_ASSERT_EQUAL(f.n, 0);
    bh_fetched_free(&f);
    CU_ASSERT_EQUAL(heartbeat(fd, "g9", a), 0);
    /* a takes two messages and goes silent: its session ends, its leases
     * return at once (not after the 30 s lease), b gets them with count 2. */
    CU_ASSERT_EQUAL_FATAL(produce(fd, "g9t", 0, "g9t", 2), 0);
    CU_ASSERT_EQUAL_FATAL(bh_gfetch(&H, fd, "g9", a, 10, 0, &f), 0);
    CU_ASSERT_EQUAL(f.n, 2);
    bh_fetched_free(&f);
    int64_t t0 = bh_mono_ms();
    CU_ASSERT_EQUAL_FATAL(bh_gfetch(&H, fd, "g9", b, 10, 5000, &f), 0);
    CU_ASSERT_EQUAL(f.n, 2);
    if (f.n == 2)
        CU_ASSERT_EQUAL(f.m[0].delivery_count, 2);
    CU_ASSERT(bh_mono_ms() - t0 < 4000);
    bh_fetched_free(&f);
    CU_ASSERT_EQUAL(heartbeat(fd, "g9", a), VERITY__ERROR_CODE__ERR_MEMBER);
    CU_ASSERT_EQUAL(bh_gfetch(&H, fd, "g9", a, 10, 0, &f), 0);
    CU_ASSERT_EQUAL(f.error, VERITY__ERROR_CODE__ERR_MEMBER);
    bh_fetched_free(&f);
    CU_ASSERT_EQUAL(bh_ack(&H, fd, "g9", b, "g9t", 0, 0, 2, false, msg, sizeof msg), 0);
    close(fd);
}

/* ---- retention ------------------------------------------------------------------ */

/* First offset still stored in topic/0 (ListOffsets earliest). */
static uint64_t earliest(int fd, const char *topic)
{
    Verity__Envelope env = VERITY__ENVELOPE__INIT;
    Verity__ListOffsetsRequest q = VERITY__LIST_OFFSETS_REQUEST__INIT;
    Verity__ListOffsetsPartition lp = VERITY__LIST_OFFSETS_PARTITION__INIT;
    Verity__ListOffsetsPartition *lpp = &lp;
    lp.topic = (char *)topic;
    lp.spec = VERITY__OFFSET_SPEC__OFFSET_EARLIEST;
    q.n_partitions = 1;
    q.partitions = &lpp;
    env.body_case = VERITY__ENVELOPE__BODY_LIST_OFFSETS_REQ;
    env.list_offsets_req = &q;
    struct bh_resp r;
    uint64_t off = 0;
    if (bh_call(&H, fd, &env, NULL, 0, &r) == 0) {
        if (!r.msg->env->error && r.msg->env->list_offsets_resp->n_results == 1)
            off = r.msg->env->list_offsets_resp->results[0]->offset;
        bh_resp_free(&r);
    }
    return off;
}

static void test_offsets_retention_deleted_are_skipped(void)
{
    int fd = bh_connect(&H);
    CU_ASSERT_FATAL(fd >= 0);
    Verity__Envelope env = VERITY__ENVELOPE__INIT;
    Verity__CreateTopicRequest ct = VERITY__CREATE_TOPIC_REQUEST__INIT;
    Verity__TopicConfig tc = VERITY__TOPIC_CONFIG__INIT;
    tc.partitions = 1;
    tc.segment_bytes = 4096;
    tc.retention_bytes = 4096;
    ct.name = "g8t";
    ct.config = &tc;
    env.body_case = VERITY__ENVELOPE__BODY_CREATE_TOPIC_REQ;
    env.create_topic_req = &ct;
    struct bh_resp r;
    char msg[300];
    CU_ASSERT_EQUAL_FATAL(bh_group_call(&H, fd, &env, &r, msg, sizeof msg), 0);
    bh_resp_free(&r);
    const char *topics[] = {"g8t"};
    int64_t backoff[] = {0};
    struct bh_group_opts o = {.lease_ms = 300, .backoff_ms = backoff, .n_backoff = 1};
    CU_ASSERT_EQUAL_FATAL(bh_create_group(&H, fd, "g8", topics, 1, &o, msg, sizeof msg), 0);
    uint64_t m = 0;
    CU_ASSERT_EQUAL_FATAL(bh_join(&H, fd, "g8", "c", topics, 1, 60000, &m, msg, sizeof msg), 0);
    CU_ASSERT_EQUAL_FATAL(produce(fd, "g8t", 0, "g8t", 20), 0);
    struct bh_fetched f;
    CU_ASSERT_EQUAL_FATAL(bh_gfetch(&H, fd, "g8", m, 20, 0, &f), 0);
    CU_ASSERT_EQUAL(f.n, 20); /* leased, never acknowledged */
    bh_fetched_free(&f);
    /* More data rolls segments; retention deletes the first ones. */
    for (int i = 0; i < 12; i++)
        CU_ASSERT_FATAL(produce(fd, "g8t", 0, "g8t-more", 20) != UINT64_MAX);
    uint64_t start = 0;
    int64_t deadline = bh_mono_ms() + BH_TIMEOUT_MS;
    while ((start = earliest(fd, "g8t")) < 20 && bh_mono_ms() < deadline)
        usleep(50000);
    CU_ASSERT_FATAL(start >= 20);
    /* The leases expire; what retention deleted is not handed out again
     * (the broker acknowledges it), the rest is. */
    uint64_t got = 0;
    deadline = bh_mono_ms() + BH_TIMEOUT_MS;
    while (bh_mono_ms() < deadline) {
        CU_ASSERT_EQUAL_FATAL(bh_gfetch(&H, fd, "g8", m, 500, 500, &f), 0);
        CU_ASSERT_EQUAL(f.error, 0);
        CU_ASSERT_FALSE(f.bad_payload);
        for (size_t k = 0; k < f.n; k++) {
            CU_ASSERT(f.m[k].offset >= start);
            CU_ASSERT_EQUAL(
                bh_ack(&H, fd, "g8", m, "g8t", 0, f.m[k].offset, 1, false, msg, sizeof msg), 0);
        }
        got += f.n;
        size_t n = f.n;
        bh_fetched_free(&f);
        if (n == 0 && got > 0)
            break;
    }
    CU_ASSERT(got > 0);
    CU_ASSERT_EQUAL_FATAL(bh_describe(&H, fd, "g8", &r), 0);
    const Verity__GroupPartitionState *ps = r.msg->env->describe_group_resp->group->partitions[0];
    CU_ASSERT_EQUAL(ps->unacked, 0);
    CU_ASSERT(ps->ack_floor >= start);
    bh_resp_free(&r);
    close(fd);
}

/* ---- crash test ---------------------------------------------------------------------- */

#define CR_PARTS 2
#define CR_EXTRA 1200 /* records per partition produced after the last restart */

struct cr_state {
    uint32_t n;                 /* data records per partition */
    uint8_t *acked[CR_PARTS];   /* per offset: ack answered */
    uint8_t *seen[CR_PARTS];    /* per offset: highest delivery count seen */
    uint8_t *data[CR_PARTS];    /* per offset: a data record (not a control batch) */
    uint64_t end[CR_PARTS];     /* partition end after producing */
    uint64_t redelivered_acked; /* violations: delivered again after an answered ack */
    uint64_t count_not_raised;  /* violations: redelivered without a higher count */
    uint64_t bad_values;
};

/* Consumes up to rounds fetches; acks each fetch cumulatively. Returns the
 * number of data offsets acknowledged so far, or -1 on a transport error. */
static int consume(struct cr_state *s, int fd, uint64_t *member, int rounds)
{
    const char *topics[] = {"crt"};
    char msg[300];
    for (int i = 0; i < rounds; i++) {
        struct bh_fetched f;
        int rc = bh_gfetch(&H, fd, "crg", *member, 150, 200, &f);
        if (rc)
            return -1;
        if (f.error == VERITY__ERROR_CODE__ERR_MEMBER) {
            bh_fetched_free(&f);
            if (bh_join(&H, fd, "crg", "crash", topics, 1, 60000, member, msg, sizeof msg))
                return -1;
            continue;
        }
        CU_ASSERT_EQUAL(f.error, 0);
        CU_ASSERT_FALSE(f.bad_payload);
        uint64_t hi[CR_PARTS] = {0};
        bool any[CR_PARTS] = {false};
        for (size_t k = 0; k < f.n; k++) {
            const struct bh_msg *m = &f.m[k];
            if (m->partition >= CR_PARTS || m->offset >= s->end[m->partition] ||
                !s->data[m->partition][m->offset]) {
                s->bad_values++;
                continue;
            }
            uint32_t p = m->partition;
            if (s->acked[p][m->offset])
                s->redelivered_acked++;
            if (s->seen[p][m->offset] && m->delivery_count <= s->seen[p][m->offset])
                s->count_not_raised++;
            s->seen[p][m->offset] = (uint8_t)(m->delivery_count < 255 ? m->delivery_count : 255);
            char want[64];
            snprintf(want, sizeof want, "value of crt-p%u-", p);
            if (strncmp(m->value, want, strlen(want)) != 0)
                s->bad_values++;
            if (!any[p] || m->offset > hi[p])
                hi[p] = m->offset;
            any[p] = true;
        }
        bh_fetched_free(&f);
        for (uint32_t p = 0; p < CR_PARTS; p++) {
            if (!any[p])
                continue;
            rc = bh_ack(&H, fd, "crg", *member, "crt", p, hi[p], 0, true, msg, sizeof msg);
            if (rc < 0)
                return -1;
            CU_ASSERT_EQUAL(rc, 0);
            if (rc == 0)
                for (uint64_t o = 0; o <= hi[p]; o++)
                    s->acked[p][o] = 1;
        }
    }
    int done = 0;
    for (uint32_t p = 0; p < CR_PARTS; p++)
        for (uint64_t o = 0; o < s->end[p]; o++)
            done += s->data[p][o] && s->acked[p][o];
    return done;
}

/* Sends a fetch and an ack without reading the answers, then SIGKILLs. */
static void kill_mid_flight(int fd, uint64_t member)
{
    Verity__Envelope env = VERITY__ENVELOPE__INIT;
    Verity__GroupFetchRequest q = VERITY__GROUP_FETCH_REQUEST__INIT;
    q.group = "crg";
    q.member_id = member;
    q.max_messages = 150;
    env.version = 1;
    env.correlation_id = 777;
    env.body_case = VERITY__ENVELOPE__BODY_GROUP_FETCH_REQ;
    env.group_fetch_req = &q;
    CU_ASSERT_EQUAL(codec_fd_write(fd, &env, NULL, 0, NULL), 0);
    usleep(2000);
    CU_ASSERT_EQUAL(bh_stop_sig(&H, SIGKILL), 128 + SIGKILL);
}

/* Produces records [from, from + n) of every partition in batches of 100
 * (the last may be shorter) and marks their offsets as data. */
static void produce_share(struct cr_state *s, int fd, uint32_t from, uint32_t n)
{
    for (uint32_t p = 0; p < CR_PARTS; p++) {
        for (uint32_t i = from; i < from + n; i += 100) {
            uint32_t k = from + n - i < 100 ? from + n - i : 100;
            char tag[32];
            snprintf(tag, sizeof tag, "crt-p%u-%u", p, i);
            uint64_t base = produce(fd, "crt", p, tag, k);
            CU_ASSERT_FATAL(base != UINT64_MAX && base + k <= s->n + CR_EXTRA + 1000);
            for (uint64_t o = base; o < base + k; o++)
                s->data[p][o] = 1;
            s->end[p] = base + k;
        }
    }
}

static void test_kill9_during_consumption(void)
{
    struct cr_state s = {0};
    s.n = g_quick ? 400 : 2000;
    int fd = bh_connect(&H);
    CU_ASSERT_FATAL(fd >= 0);
    CU_ASSERT_EQUAL_FATAL(bh_create_topic(&H, fd, "crt", CR_PARTS, 0), 0);
    for (uint32_t p = 0; p < CR_PARTS; p++) {
        s.acked[p] = calloc(s.n + CR_EXTRA + 1000, 1);
        s.seen[p] = calloc(s.n + CR_EXTRA + 1000, 1);
        s.data[p] = calloc(s.n + CR_EXTRA + 1000, 1);
        CU_ASSERT_FATAL(s.acked[p] && s.seen[p] && s.data[p]);
    }
    /* Half the records exist before the group, half are produced while it
     * consumes (so deliveries below the delivery horizon are answered early
     * and the crash must still raise their counts). */
    produce_share(&s, fd, 0, s.n / 2);
    const char *topics[] = {"crt"};
    int64_t backoff[] = {0};
    struct bh_group_opts o = {.lease_ms = 2000,
                              .session_ms = 60000,
                              .max_deliveries = 100,
                              .backoff_ms = backoff,
                              .n_backoff = 1};
    char msg[300];
    CU_ASSERT_EQUAL_FATAL(bh_create_group(&H, fd, "crg", topics, 1, &o, msg, sizeof msg), 0);
    uint64_t member = 0;
    CU_ASSERT_EQUAL_FATAL(
        bh_join(&H, fd, "crg", "crash", topics, 1, 60000, &member, msg, sizeof msg), 0);
    int total = (int)(s.n * CR_PARTS);
    int per_phase = (int)(s.n * CR_PARTS / 150 / 4) + 1;
    for (int kill = 0; kill < 3; kill++) {
        produce_share(&s, fd, s.n / 2 + (uint32_t)kill * (s.n / 6), s.n / 6);
        int done = consume(&s, fd, &member, per_phase);
        CU_ASSERT(done >= 0 && done < total);
        /* Leave leases out, then crash with a fetch in flight. */
        struct bh_fetched f;
        CU_ASSERT_EQUAL(bh_gfetch(&H, fd, "crg", member, 50, 0, &f), 0);
        for (size_t k = 0; k < f.n; k++)
            if (f.m[k].partition < CR_PARTS)
                s.seen[f.m[k].partition][f.m[k].offset] = (uint8_t)f.m[k].delivery_count;
        bh_fetched_free(&f);
        kill_mid_flight(fd, member);
        close(fd);
        CU_ASSERT_EQUAL_FATAL(bh_start(&H, EXTRA), 0);
        fd = bh_connect(&H);
        CU_ASSERT_FATAL(fd >= 0);
    }
    /* The rest, plus more than the delivery horizon a restart counts as
     * possibly delivered, so the last phase also answers on the horizon. */
    produce_share(&s, fd, s.n / 2 + 3 * (s.n / 6), s.n - s.n / 2 - 3 * (s.n / 6));
    for (uint32_t x = 0; x < CR_EXTRA; x += 100) {
        CU_ASSERT_FATAL(consume(&s, fd, &member, 3) >= 0); /* catch up, then follow */
        produce_share(&s, fd, s.n + x, 100);
    }
    total = 0;
    for (uint32_t p = 0; p < CR_PARTS; p++)
        for (uint64_t off = 0; off < s.end[p]; off++)
            total += s.data[p][off];
    int done = 0;
    int64_t deadline = bh_mono_ms() + 60000;
    while (done < total && bh_mono_ms() < deadline) {
        done = consume(&s, fd, &member, 10);
        CU_ASSERT_FATAL(done >= 0);
    }
    CU_ASSERT_EQUAL(done, total);            /* nothing lost */
    CU_ASSERT_EQUAL(s.redelivered_acked, 0); /* no answered ack came back */
    CU_ASSERT_EQUAL(s.count_not_raised, 0);  /* every redelivery raised its count */
    CU_ASSERT_EQUAL(s.bad_values, 0);        /* no control offset, no foreign record */
    uint64_t again = 0;
    for (uint32_t p = 0; p < CR_PARTS; p++)
        for (uint64_t off = 0; off < s.end[p]; off++)
            again += s.seen[p][off] > 1;
    /* Each crash left leases out, so redeliveries happened. */
    CU_ASSERT(again > 0);
    if (done != total || s.redelivered_acked || s.count_not_raised || s.bad_values || !again)
        fprintf(stderr,
                "\ncrash test: done=%d/%d again=%llu redelivered_acked=%llu not_raised=%llu "
                "bad=%llu\n",
                done, total, (unsigned long long)again, (unsigned long long)s.redelivered_acked,
                (unsigned long long)s.count_not_raised, (unsigned long long)s.bad_values);
    /* After the last restart records were produced while the group read:
     * some answers went out on the delivery horizon without a log wait. */
    char *body = bh_http_get(&H, "/metrics");
    CU_ASSERT_PTR_NOT_NULL_FATAL(body);
    const char *a = strstr(body, "verity_group_fetch_answers_total{group=\"crg\"} ");
    const char *w = strstr(body, "verity_group_fetch_log_waits_total{group=\"crg\"} ");
    CU_ASSERT_FATAL(a && w);
    long answers = atol(strchr(a, '}') + 2), waits = atol(strchr(w, '}') + 2);
    CU_ASSERT(answers > 0 && waits < answers);
    if (!(answers > 0 && waits < answers))
        fprintf(stderr, "\nfetch answers %ld, log waits %ld\n", answers, waits);
    free(body);
    /* Earlier groups survived the restarts. */
    struct bh_resp r;
    CU_ASSERT_EQUAL(bh_describe(&H, fd, "g2", &r), 0);
    if (r.msg) {
        CU_ASSERT_EQUAL(r.msg->env->describe_group_resp->group->partitions[0]->ack_floor, 3);
        bh_resp_free(&r);
    }
    for (uint32_t p = 0; p < CR_PARTS; p++) {
        free(s.acked[p]);
        free(s.seen[p]);
        free(s.data[p]);
    }
    close(fd);
}

int main(void)
{
    CU_TestInfo tests[] = {
        {"ordered_fetch_ack_and_long_poll", test_ordered_fetch_ack_and_long_poll},
        {"shared_nack_redelivers_with_count_2", test_shared_nack_redelivers_with_count_2},
        {"lease_expiry_redelivers", test_lease_expiry_redelivers},
        {"ack_of_waiting_message_wakes_long_poll", test_ack_of_waiting_message_wakes_long_poll},
        {"term_goes_to_dlq_with_headers", test_term_goes_to_dlq_with_headers},
        {"max_deliveries_goes_to_dlq", test_max_deliveries_goes_to_dlq},
        {"bad_input_typed_errors_state_unchanged", test_bad_input_typed_errors_state_unchanged},
        {"malformed_group_requests_are_refused", test_malformed_group_requests_are_refused},
        {"reset_delete_and_http", test_reset_delete_and_http},
        {"session_timeout_returns_work", test_session_timeout_returns_work},
        {"offsets_retention_deleted_are_skipped", test_offsets_retention_deleted_are_skipped},
        {"kill9_during_consumption", test_kill9_during_consumption},
        CU_TEST_INFO_NULL,
    };
    CU_SuiteInfo suites[] = {
        {"broker_groups", suite_init, suite_clean, NULL, NULL, tests},
        CU_SUITE_INFO_NULL,
    };
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    if (CU_register_suites(suites) != CUE_SUCCESS) {
        CU_cleanup_registry();
        return 1;
    }
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    unsigned fails = CU_get_number_of_failures() + CU_get_number_of_suites_failed();
    CU_cleanup_registry();
    return fails ? 1 : 0;
}
