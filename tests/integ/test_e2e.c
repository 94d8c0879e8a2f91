/*
 * End to end through libverity against a real verityd (fork/exec from
 * $VERITY_BIN_DIR on a free loopback port, mkdtemp data directory, stopped
 * by PID):
 *
 *   - 1,000,000 records (200,000 with VERITY_TEST_QUICK=1) from one
 *     idempotent producer into a 4-partition topic, keyed and unkeyed, with
 *     headers on some; every record read back byte-exact, exactly once, at
 *     the offset its delivery report named, in produce order per partition;
 *   - a consumer that starts at the end and follows sees records produced
 *     after it started (long poll);
 *   - admin calls and their errors; start positions by time;
 *   - the verity CLI's exit codes (0, 1, 2, 3) and its round trip.
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
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "tests/support/tbroker.h"
#include "tests/support/tutil.h"
#include "verity/verity.h"

#define PARTS 4

static struct tbroker br;

static int suite_init(void)
{
    if (tb_init(&br, "e2e") != 0 || tb_start(&br) != 0) {
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

static struct verity_client *admin(void)
{
    struct verity_conn_config cc;
    verity_conn_config_default(&cc);
    cc.broker = br.addr;
    struct verity_client *c = NULL;
    if (verity_client_new(&cc, &c) != 0)
        return NULL;
    if (verity_client_connect(c, 5000) != 0) {
        verity_client_free(c);
        return NULL;
    }
    return c;
}

/* ---- the million ------------------------------------------------------------ */

/* Record i: key "key-<i % 997>" except every tenth (null key); value of
 * 16..200 bytes: the id, then xorshift bytes seeded by the id; every 100th
 * carries two headers. */
static size_t value_of(uint64_t id, uint8_t *buf)
{
    size_t len = 16 + (size_t)(id * 7919 % 185);
    uint64_t x = id * 0x9E3779B97F4A7C15ull + 1;
    memcpy(buf, &id, 8);
    for (size_t i = 8; i < len; i++) {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        buf[i] = (uint8_t)((x * 0x2545F4914F6CDD1Dull) >> 56);
    }
    return len;
}

struct sent {
    uint64_t offset;
    int32_t partition;     /* -1 until acknowledged */
    int err;
};

static struct sent *sent;

static void on_delivery(void *opaque, int err, const struct verity_delivery *d)
{
    struct sent *s = &sent[(uintptr_t)opaque];
    s->err = err;
    if (!err) {
        s->partition = (int32_t)d->partition;
        s->offset = d->offset;
    }
}

static void test_million_records_round_trip_exactly(void)
{
    const uint64_t n = tu_quick() ? 200000 : 1000000;
    struct verity_client *c = admin();
    CU_ASSERT_PTR_NOT_NULL_FATAL(c);
    struct verity_topic_config tc = {.partitions = PARTS, .durability = VERITY_DURABILITY_GROUP};
    CU_ASSERT_EQUAL_FATAL(verity_topic_create(c, "million", &tc, NULL), 0);

    sent = calloc(n, sizeof *sent);
    CU_ASSERT_PTR_NOT_NULL_FATAL(sent);
    for (uint64_t i = 0; i < n; i++)
        sent[i].partition = -1;
    struct verity_producer_config pc;
    verity_producer_config_default(&pc);
    pc.conn.broker = br.addr;
    struct verity_producer *p = NULL;
    CU_ASSERT_EQUAL_FATAL(verity_producer_new(&pc, &p), 0);
    int64_t t0 = tu_mono_ns();
    uint8_t buf[256];
    char key[32];
    struct verity_header hdrs[2] = {{"trace", 5, "abc", 3}, {"null", 4, NULL, -1}};
    int rc = 0;
    for (uint64_t i = 0; i < n && rc == 0; i++) {
        struct verity_record r = {.value = buf, .value_len = (int32_t)value_of(i, buf)};
        if (i % 10 != 0) {
            r.key = key;
            r.key_len = snprintf(key, sizeof key, "key-%" PRIu64, i % 997);
        }
        if (i % 100 == 0) {
            r.headers = hdrs;
            r.header_count = 2;
        }
        rc = verity_produce(p, "million", VERITY_PARTITION_ANY, &r, on_delivery,
                            (void *)(uintptr_t)i);
    }
    CU_ASSERT_EQUAL(rc, 0);
    CU_ASSERT_EQUAL(verity_producer_flush(p, 60000), 0);
    int64_t t1 = tu_mono_ns();
    int64_t pid;
    int16_t epoch;
    verity_producer_id(p, &pid, &epoch);
    CU_ASSERT(pid > 0);
    verity_producer_free(p, 1000);
    uint64_t acked = 0, per_part[PARTS] = {0};
    for (uint64_t i = 0; i < n; i++) {
        if (sent[i].err == 0 && sent[i].partition >= 0) {
            acked++;
            per_part[sent[i].partition]++;
        }
    }
    CU_ASSERT_EQUAL_FATAL(acked, n);
    for (int i = 0; i < PARTS; i++)
        CU_ASSERT(per_part[i] > 0);
    /* The end offsets agree with the delivery reports. */
    for (uint32_t i = 0; i < PARTS; i++) {
        struct verity_offsets o;
        CU_ASSERT_EQUAL(verity_list_offsets(c, "million", i, VERITY_OFFSET_LATEST, 0, &o), 0);
        CU_ASSERT(o.high_watermark >= per_part[i]);
    }
    verity_client_free(c);

    struct verity_consumer_config ccfg;
    verity_consumer_config_default(&ccfg);
    ccfg.conn.broker = br.addr;
    struct verity_consumer *cons = NULL;
    CU_ASSERT_EQUAL_FATAL(verity_consumer_new(&ccfg, &cons), 0);
    for (uint32_t i = 0; i < PARTS; i++)
        CU_ASSERT_EQUAL(verity_consumer_assign(cons, "million", i, VERITY_START_EARLIEST, 0), 0);
    uint8_t *seen = calloc(n, 1);
    uint64_t got = 0, bad = 0, dup = 0, misplaced = 0, disorder = 0;
    int64_t last_id[PARTS];
    for (int i = 0; i < PARTS; i++)
        last_id[i] = -1;
    int64_t deadline = tu_mono_ns() + 120 * 1000000000LL;
    while (got < n && tu_mono_ns() < deadline) {
        const struct verity_message *m;
        size_t k;
        rc = verity_consumer_poll(cons, 1000, &m, &k, NULL);
        CU_ASSERT_EQUAL_FATAL(rc, 0);
        for (size_t j = 0; j < k; j++) {
            uint64_t id;
            if (m[j].value_len < 16 || m[j].partition >= PARTS) {
                bad++;
                continue;
            }
            memcpy(&id, m[j].value, 8);
            if (id >= n) {
                bad++;
                continue;
            }
            size_t len = value_of(id, buf);
            if ((size_t)m[j].value_len != len || memcmp(m[j].value, buf, len) != 0)
                bad++;
            if (id % 10 != 0) {
                int kl = snprintf(key, sizeof key, "key-%" PRIu64, id % 997);
                if (m[j].key_len != kl || memcmp(m[j].key, key, (size_t)kl) != 0)
                    bad++;
            } else if (m[j].key != NULL || m[j].key_len != -1) {
                bad++;
            }
            if ((id % 100 == 0) != (m[j].header_count == 2))
                bad++;
            if (m[j].header_count == 2 &&
                (m[j].headers[0].key_len != 5 || memcmp(m[j].headers[0].key, "trace", 5) ||
                 m[j].headers[0].value_len != 3 || memcmp(m[j].headers[0].value, "abc", 3) ||
                 m[j].headers[1].value != NULL || m[j].headers[1].value_len != -1))
                bad++;
            if (sent[id].partition != (int32_t)m[j].partition ||
                sent[id].offset != m[j].offset)
                misplaced++;
            if ((int64_t)id <= last_id[m[j].partition])
                disorder++;
            last_id[m[j].partition] = (int64_t)id;
            if (seen[id])
                dup++;
            seen[id] = 1;
            got++;
        }
    }
    int64_t t2 = tu_mono_ns();
    verity_consumer_free(cons);
    CU_ASSERT_EQUAL(got, n);
    CU_ASSERT_EQUAL(bad, 0);
    CU_ASSERT_EQUAL(dup, 0);
    CU_ASSERT_EQUAL(misplaced, 0);
    CU_ASSERT_EQUAL(disorder, 0);
    fprintf(stderr, "\n  %" PRIu64 " records: produced in %.2f s, consumed in %.2f s\n", n,
            (t1 - t0) / 1e9, (t2 - t1) / 1e9);
    free(seen);
    free(sent);
    sent = NULL;
}

/* ---- following ---------------------------------------------------------------- */

struct follow_ctx {
    struct verity_consumer *cons;
    int got;
    int first_value;
};

static void *follow_thread(void *arg)
{
    struct follow_ctx *f = arg;
    int64_t deadline = tu_mono_ns() + 10 * 1000000000LL;
    while (f->got < 5 && tu_mono_ns() < deadline) {
        const struct verity_message *m;
        size_t k;
        if (verity_consumer_poll(f->cons, 500, &m, &k, NULL) != 0)
            break;
        for (size_t j = 0; j < k; j++) {
            if (f->got == 0 && m[j].value_len > 0)
                f->first_value = ((const char *)m[j].value)[0];
            f->got++;
        }
    }
    return NULL;
}

static void test_consumer_from_latest_follows_new_records(void)
{
    struct verity_client *c = admin();
    CU_ASSERT_PTR_NOT_NULL_FATAL(c);
    struct verity_topic_config tc = {.partitions = 1, .durability = VERITY_DURABILITY_OS};
    CU_ASSERT_EQUAL_FATAL(verity_topic_create(c, "follow", &tc, NULL), 0);
    struct verity_producer_config pc;
    verity_producer_config_default(&pc);
    pc.conn.broker = br.addr;
    struct verity_producer *p = NULL;
    CU_ASSERT_EQUAL_FATAL(verity_producer_new(&pc, &p), 0);
    struct verity_record old = {.value = "old", .value_len = 3};
    CU_ASSERT_EQUAL(verity_produce_sync(p, "follow", 0, &old, NULL), 0);

    struct verity_consumer_config ccfg;
    verity_consumer_config_default(&ccfg);
    ccfg.conn.broker = br.addr;
    ccfg.fetch_max_wait_ms = 5000; /* a long poll that new data must cut short */
    struct follow_ctx f = {0};
    CU_ASSERT_EQUAL_FATAL(verity_consumer_new(&ccfg, &f.cons), 0);
    CU_ASSERT_EQUAL(verity_consumer_assign(f.cons, "follow", 0, VERITY_START_LATEST, 0), 0);
    CU_ASSERT_EQUAL(verity_consumer_assign(f.cons, "follow", 0, VERITY_START_LATEST, 0),
                    VERITY_EEXIST);
    /* Wait until the start position is resolved, then produce. */
    uint64_t pos = 0, hw = 0;
    for (int i = 0; i < 500 && verity_consumer_position(f.cons, "follow", 0, &pos, &hw) != 0; i++)
        usleep(10000);
    CU_ASSERT_EQUAL(pos, 1);
    pthread_t th;
    pthread_create(&th, NULL, follow_thread, &f);
    usleep(200000);
    int64_t t0 = tu_mono_ns();
    for (int i = 0; i < 5; i++) {
        struct verity_record r = {.value = "new", .value_len = 3};
        CU_ASSERT_EQUAL(verity_produce_sync(p, "follow", 0, &r, NULL), 0);
    }
    pthread_join(th, NULL);
    int64_t waited_ms = (tu_mono_ns() - t0) / 1000000;
    CU_ASSERT_EQUAL(f.got, 5);
    CU_ASSERT_EQUAL(f.first_value, 'n');
    CU_ASSERT(waited_ms < 4000); /* delivered before the long poll expired */
    verity_consumer_free(f.cons);
    verity_producer_free(p, 1000);
    verity_client_free(c);
}

/* ---- poll runs the I/O loop itself (issue 16) ---------------------------------- */

#define LEND_N 20000

struct lend_ctx {
    struct verity_producer *p;
    int prod_err;
};

/* Produces LEND_N records "<i>" to lend/0 in bursts with pauses, so the
 * consumer finds its queue empty now and then and waits in poll. */
static void *lend_producer(void *arg)
{
    struct lend_ctx *x = arg;
    for (int i = 0; i < LEND_N && !x->prod_err; i++) {
        char v[16];
        int len = snprintf(v, sizeof v, "%d", i);
        struct verity_record r = {.value = v, .value_len = (size_t)len};
        int rc = verity_produce(x->p, "lend", 0, &r, NULL, NULL);
        if (rc)
            x->prod_err = rc;
        if (i % 500 == 499)
            usleep(3000);
    }
    return NULL;
}

/*
 * poll borrows the consumer's I/O loop while it waits, and the loop thread
 * takes it back after 2 ms of absence or when work is posted: records must
 * come exactly once and in order whichever thread read them; a poll with a
 * timeout must end at its timeout although the borrowed loop has nothing to
 * do for seconds (the long poll's max wait); an assign made while the poller
 * is away must be served without a poll.
 */
static void test_poll_borrowing_the_io_loop_loses_nothing(void)
{
    struct verity_client *c = admin();
    CU_ASSERT_PTR_NOT_NULL_FATAL(c);
    struct verity_topic_config tc = {.partitions = 2, .durability = VERITY_DURABILITY_OS};
    CU_ASSERT_EQUAL_FATAL(verity_topic_create(c, "lend", &tc, NULL), 0);
    struct verity_producer_config pc;
    verity_producer_config_default(&pc);
    pc.conn.broker = br.addr;
    struct lend_ctx x = {0};
    CU_ASSERT_EQUAL_FATAL(verity_producer_new(&pc, &x.p), 0);

    struct verity_consumer_config ccfg;
    verity_consumer_config_default(&ccfg);
    ccfg.conn.broker = br.addr;
    ccfg.fetch_max_wait_ms = 5000; /* the borrowed loop sees no event for 5 s */
    struct verity_consumer *cons = NULL;
    CU_ASSERT_EQUAL_FATAL(verity_consumer_new(&ccfg, &cons), 0);
    CU_ASSERT_EQUAL(verity_consumer_assign(cons, "lend", 0, VERITY_START_EARLIEST, 0), 0);

    /* Empty topic: each poll waits its whole timeout, running the loop
     * (from the second on, once the loop thread has lent it). */
    const struct verity_message *m;
    size_t n;
    for (int i = 0; i < 5; i++) {
        int64_t t0 = tu_mono_ns();
        CU_ASSERT_EQUAL(verity_consumer_poll(cons, 50, &m, &n, NULL), 0);
        int64_t ms = (tu_mono_ns() - t0) / 1000000;
        CU_ASSERT_EQUAL(n, 0);
        CU_ASSERT(ms >= 49 && ms < 1000);
    }

    pthread_t th;
    pthread_create(&th, NULL, lend_producer, &x);
    int next = 0, bad = 0;
    uint64_t last_off = 0;
    unsigned seed = 7;
    int64_t end = tu_mono_ns() + 60 * 1000000000LL;
    while (next < LEND_N && !bad && tu_mono_ns() < end) {
        int to = (int)(rand_r(&seed) % 3) == 0 ? 1 : 100;
        CU_ASSERT_EQUAL_FATAL(verity_consumer_poll(cons, to, &m, &n, NULL), 0);
        for (size_t i = 0; i < n; i++) {
            char want[16];
            int len = snprintf(want, sizeof want, "%d", next);
            /* offsets increase (checkpoints take some: not contiguous) */
            if ((next > 0 && m[i].offset <= last_off) || m[i].value_len != len ||
                memcmp(m[i].value, want, (size_t)len) != 0)
                bad++;
            last_off = m[i].offset;
            next++;
        }
        /* away from poll now and then: longer than the 2 ms the loop
         * thread leaves a lent loop idle, so the loop changes hands */
        if (rand_r(&seed) % 8 == 0)
            usleep(rand_r(&seed) % 4000);
    }
    pthread_join(th, NULL);
    CU_ASSERT_EQUAL(x.prod_err, 0);
    CU_ASSERT_EQUAL(bad, 0);
    CU_ASSERT_EQUAL(next, LEND_N);

    /* An assign while this thread is away from poll: the loop comes back
     * to the loop thread, which resolves the start position meanwhile. */
    struct verity_record r = {.value = "p1", .value_len = 2};
    CU_ASSERT_EQUAL(verity_produce_sync(x.p, "lend", 1, &r, NULL), 0);
    CU_ASSERT_EQUAL(verity_consumer_assign(cons, "lend", 1, VERITY_START_EARLIEST, 0), 0);
    uint64_t pos = 1, hw = 0;
    int rc = VERITY_ETIMEOUT;
    for (int i = 0; i < 300 && rc != 0; i++) {
        usleep(10000);
        rc = verity_consumer_position(cons, "lend", 1, &pos, &hw);
    }
    CU_ASSERT_EQUAL(rc, 0);
    CU_ASSERT_EQUAL(pos, 0);
    size_t got = 0;
    for (int i = 0; i < 50 && got == 0; i++) {
        CU_ASSERT_EQUAL(verity_consumer_poll(cons, 100, &m, &n, NULL), 0);
        for (size_t k = 0; k < n; k++)
            got += m[k].partition == 1 && m[k].value_len == 2 ? 1 : 0;
    }
    CU_ASSERT_EQUAL(got, 1);
    verity_consumer_free(cons);
    verity_producer_free(x.p, 1000);
    verity_client_free(c);
}

/* ---- admin ------------------------------------------------------------------- */

static void test_admin_calls_and_their_errors(void)
{
    struct verity_client *c = admin();
    CU_ASSERT_PTR_NOT_NULL_FATAL(c);
    struct verity_topic_config tc = {.partitions = 3, .durability = VERITY_DURABILITY_ALWAYS};
    struct verity_topic_info *t = NULL;
    CU_ASSERT_EQUAL_FATAL(verity_topic_create(c, "adm", &tc, &t), 0);
    CU_ASSERT_STRING_EQUAL(t->name, "adm");
    CU_ASSERT_EQUAL(t->config.partitions, 3);
    CU_ASSERT_EQUAL(t->config.durability, VERITY_DURABILITY_ALWAYS);
    verity_topic_info_free(t, 1);
    CU_ASSERT_EQUAL(verity_topic_create(c, "adm", &tc, NULL), VERITY_EEXIST);
    CU_ASSERT(strstr(verity_last_error_message(), "adm") != NULL);
    CU_ASSERT_EQUAL(verity_topic_create(c, "bad name", &tc, NULL), VERITY_EINVAL);
    CU_ASSERT_EQUAL(verity_topic_describe(c, "absent", &t), VERITY_ENOTFOUND);

    CU_ASSERT_EQUAL_FATAL(verity_topic_describe(c, "adm", &t), 0);
    CU_ASSERT_EQUAL(t->partition_count, 3);
    verity_topic_info_free(t, 1);
    size_t n = 0;
    CU_ASSERT_EQUAL(verity_topic_list(c, false, &t, &n), 0);
    bool found = false;
    for (size_t i = 0; i < n; i++)
        found |= strcmp(t[i].name, "adm") == 0;
    CU_ASSERT_TRUE(found);
    verity_topic_info_free(t, n);

    const char *names[2] = {"adm", "absent"};
    uint32_t node = 0;
    CU_ASSERT_EQUAL(verity_metadata(c, names, 2, &t, &n, &node), 0);
    CU_ASSERT_EQUAL(n, 2);
    if (n == 2) {
        CU_ASSERT_EQUAL(t[0].error, 0);
        CU_ASSERT_EQUAL(t[1].error, VERITY_ENOTFOUND);
    }
    CU_ASSERT_EQUAL(node, 1);
    verity_topic_info_free(t, n);

    /* Offsets by time: before anything, at the high watermark. */
    struct verity_producer_config pc;
    verity_producer_config_default(&pc);
    pc.conn.broker = br.addr;
    struct verity_producer *p = NULL;
    CU_ASSERT_EQUAL_FATAL(verity_producer_new(&pc, &p), 0);
    struct verity_record r1 = {.value = "a", .value_len = 1, .timestamp_ms = 1000};
    struct verity_record r2 = {.value = "b", .value_len = 1, .timestamp_ms = 5000};
    struct verity_delivery d;
    CU_ASSERT_EQUAL(verity_produce_sync(p, "adm", 2, &r1, &d), 0);
    CU_ASSERT_EQUAL(d.offset, 0);
    CU_ASSERT_EQUAL(d.partition, 2);
    CU_ASSERT_EQUAL(verity_produce_sync(p, "adm", 2, &r2, &d), 0);
    CU_ASSERT_EQUAL(d.offset, 1);
    CU_ASSERT_EQUAL(d.timestamp_ms, 5000);
    CU_ASSERT_EQUAL(verity_produce(p, "adm", 3, &r1, NULL, NULL), VERITY_EINVAL);
    CU_ASSERT_EQUAL(verity_produce(p, "absent", 0, &r1, NULL, NULL), VERITY_ENOTFOUND);
    verity_producer_free(p, 1000);
    struct verity_offsets o;
    CU_ASSERT_EQUAL(verity_list_offsets(c, "adm", 2, VERITY_OFFSET_TIMESTAMP, 3000, &o), 0);
    CU_ASSERT_EQUAL(o.offset, 1);
    CU_ASSERT_EQUAL(verity_list_offsets(c, "adm", 2, VERITY_OFFSET_TIMESTAMP, 9000, &o), 0);
    CU_ASSERT_EQUAL(o.offset, 2);
    CU_ASSERT_EQUAL(verity_list_offsets(c, "adm", 2, VERITY_OFFSET_EARLIEST, 0, &o), 0);
    CU_ASSERT_EQUAL(o.offset, 0);
    CU_ASSERT_EQUAL(o.high_watermark, 2);

    CU_ASSERT_EQUAL(verity_topic_delete(c, "adm"), 0);
    CU_ASSERT_EQUAL(verity_topic_delete(c, "adm"), VERITY_ENOTFOUND);
    verity_client_free(c);

    /* Nobody listening: the client says so instead of waiting forever. */
    struct verity_conn_config cc;
    verity_conn_config_default(&cc);
    char addr[64];
    snprintf(addr, sizeof addr, "127.0.0.1:%u", tb_free_port());
    cc.broker = addr;
    cc.request_timeout_ms = 500;
    CU_ASSERT_EQUAL_FATAL(verity_client_new(&cc, &c), 0);
    int rc = verity_client_connect(c, 2000);
    CU_ASSERT_EQUAL(rc, -ECONNREFUSED);
    CU_ASSERT_TRUE(verity_err_unreachable(rc));
    CU_ASSERT_EQUAL(verity_topic_list(c, false, &t, &n), -ECONNREFUSED);
    verity_client_free(c);
    cc.broker = "no-port";
    CU_ASSERT_EQUAL(verity_client_new(&cc, &c), VERITY_EINVAL);
}

/* ---- CLI ---------------------------------------------------------------------- */

/* Runs `verity args...` with stdin from in (may be NULL), stdout into out.
 * Returns the exit status. */
static int run_cli(const char *in, char *out, size_t out_cap, const char *const *args)
{
    const char *dir = getenv("VERITY_BIN_DIR");
    char bin[512];
    snprintf(bin, sizeof bin, "%s/verity", dir ? dir : "build/bin");
    int pin[2], pout[2];
    if (pipe(pin) || pipe(pout))
        return -1;
    pid_t pid = fork();
    if (pid == 0) {
        dup2(pin[0], 0);
        dup2(pout[1], 1);
        int devnull = open("/dev/null", O_WRONLY);
        dup2(devnull, 2);
        close(pin[1]);
        close(pout[0]);
        const char *argv[32] = {bin};
        int i = 0;
        while (args[i] && i < 30) {
            argv[i + 1] = args[i];
            i++;
        }
        argv[i + 1] = NULL;
        setenv(VERITY_BROKER_ENV, br.addr, 1);
        execv(bin, (char *const *)argv);
        _exit(127);
    }
    close(pin[0]);
    close(pout[1]);
    if (in && write(pin[1], in, strlen(in)) < 0)
        perror("write");
    close(pin[1]);
    size_t got = 0;
    ssize_t r;
    while (got + 1 < out_cap && (r = read(pout[0], out + got, out_cap - 1 - got)) > 0)
        got += (size_t)r;
    out[got] = '\0';
    char drain[256];
    while (read(pout[0], drain, sizeof drain) > 0)
        ;
    close(pout[0]);
    int status = 0;
    waitpid(pid, &status, 0);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

static void test_cli_round_trip_and_exit_codes(void)
{
    static char out[8192];
    CU_ASSERT_EQUAL(run_cli(NULL, out, sizeof out,
                            (const char *[]){"topic", "create", "cli", "--partitions", "2",
                                             "--durability", "os", NULL}),
                    0);
    CU_ASSERT_EQUAL(run_cli(NULL, out, sizeof out,
                            (const char *[]){"topic", "create", "cli", NULL}),
                    1);
    CU_ASSERT_EQUAL(run_cli(NULL, out, sizeof out, (const char *[]){"topic", NULL}), 2);
    CU_ASSERT_EQUAL(run_cli(NULL, out, sizeof out,
                            (const char *[]){"topic", "list", "--broker", "127.0.0.1:1", NULL}),
                    3);
    CU_ASSERT_EQUAL(run_cli("k1=one\nk2=two\nthree\n", out, sizeof out,
                            (const char *[]){"produce", "cli", "--key-separator", "=",
                                             "--header", "h=v", "--json", NULL}),
                    0);
    CU_ASSERT(strstr(out, "\"acked\":3") != NULL);
    /* The same idempotency key twice: stored once. */
    for (int i = 0; i < 2; i++) {
        CU_ASSERT_EQUAL(run_cli("x\ny\n", out, sizeof out,
                                (const char *[]){"produce", "cli", "--idempotency-key", "job-7",
                                                 "--json", NULL}),
                        0);
        CU_ASSERT(strstr(out, i == 0 ? "\"duplicates\":0" : "\"duplicates\":2") != NULL);
    }
    CU_ASSERT_EQUAL(run_cli(NULL, out, sizeof out,
                            (const char *[]){"consume", "cli", "--format", "json", NULL}),
                    0);
    int lines = 0;
    for (const char *s = out; (s = strchr(s, '\n')); s++)
        lines++;
    CU_ASSERT_EQUAL(lines, 5);
    CU_ASSERT(strstr(out, "\"key\":\"k1\",\"value\":\"one\"") != NULL);
    CU_ASSERT(strstr(out, "\"headers\":[{\"key\":\"h\",\"value\":\"v\"}]") != NULL);
    CU_ASSERT_EQUAL(run_cli(NULL, out, sizeof out,
                            (const char *[]){"consume", "cli", "--count", "2", NULL}),
                    0);
    lines = 0;
    for (const char *s = out; (s = strchr(s, '\n')); s++)
        lines++;
    CU_ASSERT_EQUAL(lines, 2);
    CU_ASSERT_EQUAL(run_cli(NULL, out, sizeof out,
                            (const char *[]){"consume", "cli", "--from", "99", NULL}),
                    1); /* past the end: out of range */
    CU_ASSERT_EQUAL(run_cli(NULL, out, sizeof out,
                            (const char *[]){"consume", "cli", "--from", "yesterday", NULL}),
                    2);
    CU_ASSERT_EQUAL(run_cli(NULL, out, sizeof out,
                            (const char *[]){"offsets", "cli", "--json", NULL}),
                    0);
    CU_ASSERT(strstr(out, "\"end_offset\"") != NULL);
    CU_ASSERT_EQUAL(run_cli(NULL, out, sizeof out, (const char *[]){"offsets", "nope", NULL}), 1);
    CU_ASSERT_EQUAL(run_cli(NULL, out, sizeof out,
                            (const char *[]){"broker", "status", "--json", NULL}),
                    0);
    CU_ASSERT(strstr(out, "\"up\":true") != NULL);
    CU_ASSERT_EQUAL(run_cli(NULL, out, sizeof out,
                            (const char *[]){"broker", "status", "--broker", "127.0.0.1:1", NULL}),
                    3);
    CU_ASSERT_EQUAL(run_cli(NULL, out, sizeof out, (const char *[]){"consume", "--help", NULL}),
                    0);
    CU_ASSERT(strstr(out, "usage: verity consume") != NULL);
}

int main(void)
{
    static const struct {
        const char *name;
        void (*fn)(void);
    } tests[] = {
        {"million_records_round_trip_exactly", test_million_records_round_trip_exactly},
        {"consumer_from_latest_follows_new_records",
         test_consumer_from_latest_follows_new_records},
        {"poll_borrowing_the_io_loop_loses_nothing",
         test_poll_borrowing_the_io_loop_loses_nothing},
        {"admin_calls_and_their_errors", test_admin_calls_and_their_errors},
        {"cli_round_trip_and_exit_codes", test_cli_round_trip_and_exit_codes},
    };
    signal(SIGPIPE, SIG_IGN);
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    CU_pSuite s = CU_add_suite("e2e", suite_init, suite_clean);
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
