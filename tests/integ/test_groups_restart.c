/*
 * Consumer groups across broker crashes: two group consumers (threads of
 * this process, each with its own libverity member and connection) read a
 * 4-partition topic while verityd is killed with SIGKILL and restarted on
 * the same port and data directory three times, once a quarter, a half and
 * three quarters of the messages are acknowledged. The members reconnect on
 * their own and keep their member ids (membership is durable).
 *
 * Every receipt (message, delivery count) and every ack the broker answered
 * with success (message, delivery count of the receipt it acknowledged) is
 * logged with a global sequence number taken when the application sees it.
 * What docs/GROUPS.md ("Restart") promises, checked per message:
 *   - none lost: every message ends with an ack answered with success;
 *   - nothing whose ack was answered is delivered again: no member receives
 *     a message, with a higher delivery count, after another member's ack
 *     of it was answered (a higher count is a later lease; a lease another
 *     member took before the ack was applied would have made the ack fail
 *     with ELEASE). The same member may: its ack cut off by the crash is
 *     resent after the restart and then acknowledges the new lease of that
 *     message which the member already fetched (ordered mode gives a
 *     partition's redeliveries to its owner), and the application still
 *     sees that delivery. A second answered ack of a message is not an
 *     error either: acking a message that is done answers 0;
 *   - counts only rise: no two receipts of a message show the same
 *     delivery count;
 *   - the restart bound: deliveries beyond the first, all restarts
 *     together, are at most 3 x pending_max (the group is created with
 *     pending_max 10,000; in practice it is what was leased at each crash).
 *
 * 100,000 messages per mode (20,000 with VERITY_TEST_QUICK=1), ordered and
 * shared.
 */
#include <CUnit/Basic.h>
#include <CUnit/CUnit.h>
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "tests/support/tbroker.h"
#include "tests/support/tutil.h"
#include "verity/group.h"
#include "verity/verity.h"

#define PARTS 4
#define MEMBERS 2
#define KILLS 3
#define PENDING_MAX 10000u
#define RUN_TIMEOUT_MS 120000

/* ---- broker process --------------------------------------------------------- */

static struct tbroker br;

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int suite_init(void)
{
    if (tb_init(&br, "grestart") != 0 || tb_start(&br) != 0) {
        fprintf(stderr, "cannot start verityd (VERITY_BIN_DIR=%s)\n", getenv("VERITY_BIN_DIR"));
        return -1;
    }
    return 0;
}

static int suite_clean(void)
{
    tb_stop(&br, SIGTERM);
    tb_free(&br);
    return 0;
}

/* ---- bookkeeping ------------------------------------------------------------- */

/* Events, logged per member without locks (each array has one writer:
 * receipts the member's polling thread, acks its I/O thread). */
struct event {
    uint32_t partition;
    uint32_t delivery_count;
    uint64_t offset;
    uint64_t seq;
    int member;
};

struct elog {
    struct event *e;
    size_t cap;
    atomic_size_t n;
    atomic_bool overflow;
};

struct book {
    uint64_t hwm[PARTS];
    bool *is_msg[PARTS];          /* offsets that hold a message (not a control batch) */
    _Atomic uint8_t *acked[PARTS];
    _Atomic uint32_t *last_dc[MEMBERS][PARTS]; /* what member m received last */
    struct elog receipts[MEMBERS];
    struct elog acks[MEMBERS];
    atomic_uint_fast64_t seq;
    atomic_uint_fast64_t acked_distinct;
    atomic_uint_fast64_t ack_failures;
    atomic_uint_fast64_t already;   /* acks answered VERITY_EALREADY */
    atomic_int first_ack_err;     /* of a refused ack (a lease that moved in a restart) */
    atomic_uint_fast64_t bad_receipts;
    atomic_bool stop;
};

static struct book bk;

static void elog_add(struct elog *l, int member, uint32_t p, uint64_t o, uint32_t dc,
                     uint64_t seq)
{
    size_t i = atomic_load(&l->n);
    if (i == l->cap) {
        atomic_store(&l->overflow, true);
        return;
    }
    l->e[i] = (struct event){p, dc, o, seq, member};
    atomic_store(&l->n, i + 1);
}

struct member_ctx {
    int idx;
    uint64_t rate;                /* messages per second this member works through */
    struct verity_group_consumer *g;
    int err;
    const char *group;
    const char *topic;
};

static void on_result(void *opaque, int err, const struct verity_group_result *r)
{
    struct member_ctx *m = opaque;
    if (r->op != VERITY_GROUP_OP_ACK)
        return;
    if (err == VERITY_EALREADY) {
        /* Done, but this ack did not count: typically a resend after the
         * connection died of an ack the broker had made durable. */
        atomic_fetch_add(&bk.already, r->count);
        for (uint64_t o = r->first_offset; r->partition < PARTS && o < r->first_offset + r->count;
             o++) {
            uint8_t zero = 0;
            if (o < bk.hwm[r->partition] &&
                atomic_compare_exchange_strong(&bk.acked[r->partition][o], &zero, 2))
                atomic_fetch_add(&bk.acked_distinct, 1);
        }
        return;
    }
    if (err) {
        atomic_fetch_add(&bk.ack_failures, r->count);
        int zero = 0;
        atomic_compare_exchange_strong(&bk.first_ack_err, &zero, err);
        return;
    }
    uint64_t seq = atomic_fetch_add(&bk.seq, 1);
    uint32_t p = r->partition;
    for (uint64_t o = r->first_offset; p < PARTS && o < r->first_offset + r->count; o++) {
        if (o >= bk.hwm[p])
            continue;
        elog_add(&bk.acks[m->idx], m->idx, p, o, atomic_load(&bk.last_dc[m->idx][p][o]), seq);
        if (atomic_exchange(&bk.acked[p][o], 1) == 0)
            atomic_fetch_add(&bk.acked_distinct, 1);
    }
}

static void *member_main(void *arg)
{
    struct member_ctx *m = arg;
    while (!atomic_load(&bk.stop)) {
        const struct verity_group_message *msgs;
        size_t n = 0;
        int rc = verity_group_poll(m->g, 200, &msgs, &n);
        if (rc) {
            m->err = rc;
            break;
        }
        uint64_t seq = atomic_fetch_add(&bk.seq, 1);
        for (size_t i = 0; i < n; i++) {
            uint32_t p = msgs[i].msg.partition;
            uint64_t o = msgs[i].msg.offset;
            uint32_t dc = msgs[i].delivery_count;
            if (p >= PARTS || o >= bk.hwm[p] || !bk.is_msg[p][o]) {
                atomic_fetch_add(&bk.bad_receipts, 1);
                continue;
            }
            elog_add(&bk.receipts[m->idx], m->idx, p, o, dc, seq);
            atomic_store(&bk.last_dc[m->idx][p][o], dc);
        }
        /* "Processing": the batch stays leased meanwhile, and the run lasts
         * long enough for every kill to land mid-consumption. */
        if (n)
            usleep((useconds_t)(n * 1000000u / m->rate));
        if (n && (rc = verity_group_ack_many(m->g, msgs, n)) != 0) {
            m->err = rc;
            break;
        }
    }
    return NULL;
}

static int produce(const char *topic, uint64_t n)
{
    struct verity_conn_config conn;
    verity_conn_config_default(&conn);
    conn.broker = br.addr;
    struct verity_client *c = NULL;
    struct verity_topic_config tc = {.partitions = PARTS};
    int rc = verity_client_new(&conn, &c);
    if (rc == 0)
        rc = verity_client_connect(c, 10000);
    if (rc == 0)
        rc = verity_topic_create(c, topic, &tc, NULL);
    struct verity_producer_config pc;
    verity_producer_config_default(&pc);
    pc.conn.broker = br.addr;
    pc.idempotence = true;
    struct verity_producer *p = NULL;
    if (rc == 0)
        rc = verity_producer_new(&pc, &p);
    char value[64];
    for (uint64_t i = 0; rc == 0 && i < n; i++) {
        int vl = snprintf(value, sizeof value, "restart message %" PRIu64, i);
        struct verity_record r = {.value = value, .value_len = vl};
        rc = verity_produce(p, topic, (int32_t)(i % PARTS), &r, NULL, NULL);
    }
    if (rc == 0)
        rc = verity_producer_flush(p, 60000);
    verity_producer_free(p, 10000);
    /* Which offsets hold messages: read the topic back once. */
    struct verity_topic_info *t = NULL;
    if (rc == 0)
        rc = verity_topic_describe(c, topic, &t);
    verity_client_free(c);
    if (rc)
        return rc;
    for (int q = 0; q < PARTS; q++) {
        bk.hwm[q] = t->partitions[q].high_watermark;
        size_t len = bk.hwm[q] + 1;
        bk.acked[q] = calloc(len, sizeof *bk.acked[q]);
        bk.is_msg[q] = calloc(len, sizeof *bk.is_msg[q]);
        for (int m = 0; m < MEMBERS; m++)
            bk.last_dc[m][q] = calloc(len, sizeof *bk.last_dc[m][q]);
    }
    verity_topic_info_free(t, 1);
    struct verity_consumer_config cc;
    verity_consumer_config_default(&cc);
    cc.conn.broker = br.addr;
    cc.fetch_max_wait_ms = 100;
    struct verity_consumer *cons = NULL;
    if ((rc = verity_consumer_new(&cc, &cons)) != 0)
        return rc;
    for (int q = 0; q < PARTS && rc == 0; q++)
        rc = verity_consumer_assign(cons, topic, (uint32_t)q, VERITY_START_EARLIEST, 0);
    uint64_t seen = 0;
    int64_t deadline = mono_ms() + 60000;
    while (rc == 0 && seen < n && mono_ms() < deadline) {
        const struct verity_message *m;
        size_t k = 0;
        rc = verity_consumer_poll(cons, 200, &m, &k, NULL);
        for (size_t i = 0; rc == 0 && i < k; i++) {
            if (m[i].partition < PARTS && m[i].offset < bk.hwm[m[i].partition] &&
                !bk.is_msg[m[i].partition][m[i].offset]) {
                bk.is_msg[m[i].partition][m[i].offset] = true;
                seen++;
            }
        }
    }
    verity_consumer_free(cons);
    return rc == 0 && seen == n ? 0 : rc ? rc : -EIO;
}

static void book_free(void)
{
    for (int q = 0; q < PARTS; q++) {
        free(bk.acked[q]);
        free(bk.is_msg[q]);
        for (int m = 0; m < MEMBERS; m++)
            free(bk.last_dc[m][q]);
    }
    for (int m = 0; m < MEMBERS; m++) {
        free(bk.receipts[m].e);
        free(bk.acks[m].e);
    }
    memset(&bk, 0, sizeof bk);
}

/* ---- judging the logs ---------------------------------------------------------- */

struct verdict {
    uint64_t receipts;
    uint64_t never_received;
    uint64_t lost;
    uint64_t acked_twice;
    uint64_t after_ack;           /* another member's answered ack came first */
    uint64_t after_own_ack;       /* the same member's (see the top of the file) */
    uint64_t count_repeated;
    bool overflow;
};

static int cmp_event(const void *a, const void *b)
{
    const struct event *x = a, *y = b;
    if (x->partition != y->partition)
        return x->partition < y->partition ? -1 : 1;
    if (x->offset != y->offset)
        return x->offset < y->offset ? -1 : 1;
    return x->seq < y->seq ? -1 : x->seq > y->seq;
}

/* All members' events of one kind, sorted by (partition, offset, seq). */
static struct event *gather(struct elog *logs, size_t *n_out, bool *overflow)
{
    size_t n = 0;
    for (int m = 0; m < MEMBERS; m++) {
        n += atomic_load(&logs[m].n);
        *overflow = *overflow || atomic_load(&logs[m].overflow);
    }
    struct event *all = malloc((n ? n : 1) * sizeof *all);
    size_t k = 0;
    for (int m = 0; all && m < MEMBERS; m++) {
        memcpy(all + k, logs[m].e, atomic_load(&logs[m].n) * sizeof *all);
        k += atomic_load(&logs[m].n);
    }
    if (all)
        qsort(all, n, sizeof *all, cmp_event);
    *n_out = all ? n : 0;
    return all;
}

static bool same_msg(const struct event *a, const struct event *b)
{
    return a->partition == b->partition && a->offset == b->offset;
}

static struct verdict judge(uint64_t n)
{
    struct verdict v = {0};
    size_t nr, na;
    struct event *r = gather(bk.receipts, &nr, &v.overflow);
    struct event *a = gather(bk.acks, &na, &v.overflow);
    v.receipts = nr;
    size_t i = 0, j = 0;
    uint64_t msgs = 0;
    /* Walk messages in order; i over receipts, j over acks. */
    for (int q = 0; q < PARTS; q++) {
        for (uint64_t o = 0; o < bk.hwm[q]; o++) {
            if (!bk.is_msg[q][o])
                continue;
            msgs++;
            struct event key = {(uint32_t)q, 0, o, 0, 0};
            while (i < nr && cmp_event(&r[i], &key) < 0 && !same_msg(&r[i], &key))
                i++;
            while (j < na && cmp_event(&a[j], &key) < 0 && !same_msg(&a[j], &key))
                j++;
            size_t i0 = i, j0 = j;
            while (i < nr && same_msg(&r[i], &key))
                i++;
            while (j < na && same_msg(&a[j], &key))
                j++;
            if (i == i0)
                v.never_received++;
            /* Lost: no ack answered with success, and the broker never
             * said it was done before (VERITY_EALREADY). */
            if (j == j0 && atomic_load(&bk.acked[q][o]) != 2)
                v.lost++;
            if (j - j0 > 1)
                v.acked_twice++;
            bool bad = false, own = false, rep = false;
            for (size_t x = i0; x < i; x++) {
                for (size_t y = x + 1; y < i; y++)
                    rep = rep || r[x].delivery_count == r[y].delivery_count;
                for (size_t y = j0; y < j; y++) {
                    if (r[x].seq < a[y].seq || r[x].delivery_count <= a[y].delivery_count)
                        continue;
                    if (r[x].member == a[y].member)
                        own = true;
                    else
                        bad = true;
                }
            }
            v.after_ack += bad;
            v.after_own_ack += own;
            v.count_repeated += rep;
        }
    }
    if (msgs != n)
        v.lost += n > msgs ? n - msgs : 0;
    free(r);
    free(a);
    return v;
}

/* ---- the test --------------------------------------------------------------- */

static void run_restarts(enum verity_group_mode mode)
{
    const char *mname = verity_group_mode_name(mode);
    char topic[64], group[64];
    snprintf(topic, sizeof topic, "restart-%s", mname);
    snprintf(group, sizeof group, "gr-%s", mname);
    uint64_t n = tu_quick() ? 20000 : 100000;
    memset(&bk, 0, sizeof bk);
    for (int m = 0; m < MEMBERS; m++) {
        bk.receipts[m].cap = bk.acks[m].cap = 2 * n + 4 * PENDING_MAX;
        bk.receipts[m].e = malloc(bk.receipts[m].cap * sizeof(struct event));
        bk.acks[m].e = malloc(bk.acks[m].cap * sizeof(struct event));
        CU_ASSERT_FATAL(bk.receipts[m].e && bk.acks[m].e);
    }
    CU_ASSERT_EQUAL_FATAL(produce(topic, n), 0);

    struct verity_conn_config conn;
    verity_conn_config_default(&conn);
    conn.broker = br.addr;
    struct verity_group_admin *ga = NULL;
    const char *topics[] = {topic};
    struct verity_group_config gc = {.mode = mode, .topics = topics, .n_topics = 1,
                                     .pending_max = PENDING_MAX};
    CU_ASSERT_EQUAL_FATAL(verity_group_admin_new(&conn, &ga), 0);
    CU_ASSERT_EQUAL_FATAL(verity_group_admin_connect(ga, 10000), 0);
    CU_ASSERT_EQUAL_FATAL(verity_group_create(ga, group, &gc, VERITY_GROUP_START_EARLIEST, 0,
                                              NULL, NULL),
                          0);
    verity_group_admin_free(ga);

    struct member_ctx ms[MEMBERS];
    pthread_t th[MEMBERS];
    for (int i = 0; i < MEMBERS; i++) {
        /* Together the members work through the topic in about two seconds. */
        ms[i] = (struct member_ctx){.idx = i, .rate = n / 4, .group = group, .topic = topic};
        struct verity_group_consumer_config cfg;
        verity_group_consumer_config_default(&cfg);
        cfg.conn.broker = br.addr;
        cfg.group = group;
        cfg.topics = topics;
        cfg.n_topics = 1;
        cfg.fetch_max = 500;
        cfg.fetch_max_wait_ms = 100;
        cfg.result_cb = on_result;
        cfg.opaque = &ms[i];
        CU_ASSERT_EQUAL_FATAL(verity_group_consumer_new(&cfg, &ms[i].g), 0);
        CU_ASSERT_EQUAL_FATAL(verity_group_connect(ms[i].g, 10000), 0);
    }
    for (int i = 0; i < MEMBERS; i++)
        pthread_create(&th[i], NULL, member_main, &ms[i]);

    int kills = 0;
    int64_t deadline = mono_ms() + RUN_TIMEOUT_MS;
    while (atomic_load(&bk.acked_distinct) < n && mono_ms() < deadline) {
        if (kills < KILLS && atomic_load(&bk.acked_distinct) >= n * (uint64_t)(kills + 1) / 4) {
            tb_stop(&br, SIGKILL);
            usleep(100000 + 100000 * (useconds_t)kills);
            CU_ASSERT_EQUAL_FATAL(tb_start(&br), 0);
            kills++;
        }
        usleep(5000);
    }
    atomic_store(&bk.stop, true);
    for (int i = 0; i < MEMBERS; i++) {
        pthread_join(th[i], NULL);
        CU_ASSERT_EQUAL(ms[i].err, 0);
        /* Every ack answered; the answer may be an earlier refusal (a
         * lease lost in a restart), counted in ack_failures. */
        int rc = verity_group_commit(ms[i].g, 10000);
        CU_ASSERT(rc != VERITY_ETIMEOUT && rc != VERITY_ECLOSED);
        verity_group_consumer_free(ms[i].g, 5000);
    }

    struct verdict v = judge(n);
    fprintf(stderr, "\n[%s] %" PRIu64 " messages, %d broker kills; receipts %" PRIu64
                    " (%" PRIu64 " beyond the first), acks refused %" PRIu64
                    " (first: %s), already done %" PRIu64 "; lost %"
                    PRIu64 ", acked twice %" PRIu64 ", delivered after an answered ack %" PRIu64
                    " (after its own %" PRIu64 "), counts repeated %" PRIu64 "\n",
            mname, n, kills, v.receipts, v.receipts - (n - v.never_received),
            (uint64_t)atomic_load(&bk.ack_failures), verity_errname(atomic_load(&bk.first_ack_err)),
            (uint64_t)atomic_load(&bk.already), v.lost, v.acked_twice, v.after_ack, v.after_own_ack, v.count_repeated);
    CU_ASSERT_EQUAL(kills, KILLS);
    CU_ASSERT_EQUAL(atomic_load(&bk.bad_receipts), 0);
    CU_ASSERT_FALSE(v.overflow);
    CU_ASSERT_EQUAL(v.lost, 0);
    CU_ASSERT_EQUAL(v.never_received, 0);
    CU_ASSERT_EQUAL(v.after_ack, 0);
    CU_ASSERT_EQUAL(v.count_repeated, 0);
    CU_ASSERT(v.receipts <= n + (uint64_t)KILLS * PENDING_MAX);
    book_free();
}

static void test_ordered_survives_three_broker_kills(void)
{
    run_restarts(VERITY_GROUP_ORDERED);
}

static void test_shared_survives_three_broker_kills(void)
{
    run_restarts(VERITY_GROUP_SHARED);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    static const struct {
        const char *name;
        void (*fn)(void);
    } tests[] = {
        {"ordered_survives_three_broker_kills", test_ordered_survives_three_broker_kills},
        {"shared_survives_three_broker_kills", test_shared_survives_three_broker_kills},
    };
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    CU_pSuite s = CU_add_suite("groups_restart", suite_init, suite_clean);
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
