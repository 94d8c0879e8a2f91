/*
 * An idempotent producer keeps sending while verityd is killed with SIGKILL
 * and restarted on the same port and data directory, six times (at random
 * moments, so requests are in flight, half-written or waiting for their
 * fdatasync when the broker dies). The producer retries on its own.
 *
 * Afterwards the whole topic is read back and every record id counted:
 *   - every record whose acknowledgement the producer saw is present exactly
 *     once (the topic's durability is `always`, so an ack means synced);
 *   - no record is present twice, acknowledged or not: retries resend the
 *     same batch bytes and the broker recognises them by producer id, epoch
 *     and sequence, also after it rebuilt that state from its log.
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
#include "verity/verity.h"

#define PARTS 3
#define KILLS 6
#define IDS_MAX 4000000u

static struct tbroker br;

static int suite_init(void)
{
    if (tb_init(&br, "pcrash") != 0 || tb_start(&br) != 0) {
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

/* ---- the producer ------------------------------------------------------------ */

static _Atomic uint8_t *acked;     /* per id: 1 once acknowledged */
static atomic_uint_fast64_t n_acked, n_failed, n_dup_reports;
static atomic_int first_error;
static atomic_bool stop_producing;
static atomic_uint_fast64_t produced;

static void on_delivery(void *opaque, int err, const struct verity_delivery *d)
{
    uint64_t id = (uintptr_t)opaque;
    if (err == 0 || err == VERITY_EDUPLICATE) {
        atomic_store(&acked[id], 1);
        atomic_fetch_add(&n_acked, 1);
        if (d->duplicate)
            atomic_fetch_add(&n_dup_reports, 1);
    } else {
        atomic_fetch_add(&n_failed, 1);
        int zero = 0;
        atomic_compare_exchange_strong(&first_error, &zero, err);
    }
}

static void *producer_main(void *arg)
{
    struct verity_producer *p = arg;
    char value[64];
    for (uint64_t id = 0; id < IDS_MAX && !atomic_load(&stop_producing); id++) {
        memcpy(value, &id, 8);
        int len = 8 + snprintf(value + 8, sizeof value - 8, "crash-test record %" PRIu64, id);
        struct verity_record r = {.value = value, .value_len = len};
        int rc = verity_produce(p, "crash", VERITY_PARTITION_ANY, &r, on_delivery,
                                (void *)(uintptr_t)id);
        if (rc) {
            fprintf(stderr, "produce %" PRIu64 ": %s\n", id, verity_strerror(rc));
            break;
        }
        atomic_store(&produced, id + 1);
        /* Keep the rate moderate so the log stays small and kills land
         * among requests in flight rather than in a full buffer. */
        if (id % 64 == 63)
            usleep(1000);
    }
    return NULL;
}

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

static void test_acked_records_survive_kills_exactly_once(void)
{
    struct verity_conn_config cc;
    verity_conn_config_default(&cc);
    cc.broker = br.addr;
    struct verity_client *c = NULL;
    CU_ASSERT_EQUAL_FATAL(verity_client_new(&cc, &c), 0);
    CU_ASSERT_EQUAL_FATAL(verity_client_connect(c, 5000), 0);
    struct verity_topic_config tc = {.partitions = PARTS, .durability = VERITY_DURABILITY_ALWAYS};
    CU_ASSERT_EQUAL_FATAL(verity_topic_create(c, "crash", &tc, NULL), 0);
    verity_client_free(c);

    acked = calloc(IDS_MAX, 1);
    CU_ASSERT_PTR_NOT_NULL_FATAL(acked);
    struct verity_producer_config pc;
    verity_producer_config_default(&pc);
    pc.conn.broker = br.addr;
    pc.conn.reconnect_backoff_ms = 20;
    pc.conn.reconnect_backoff_max_ms = 200;
    pc.conn.request_timeout_ms = 10000;
    pc.linger_ms = 2;
    pc.block_ms = 60000;
    pc.delivery_timeout_ms = 120000;
    pc.retry_backoff_ms = 10;
    pc.retry_backoff_max_ms = 200;
    struct verity_producer *p = NULL;
    CU_ASSERT_EQUAL_FATAL(verity_producer_new(&pc, &p), 0);
    pthread_t th;
    pthread_create(&th, NULL, producer_main, p);

    unsigned seed = (unsigned)time(NULL);
    fprintf(stderr, "\n  seed %u\n", seed);
    int kills = 0, restarts_ok = 0;
    uint64_t before[KILLS];
    for (int k = 0; k < KILLS; k++) {
        sleep_ms(250 + rand_r(&seed) % 500);
        before[k] = atomic_load(&n_acked);
        kill(br.pid, SIGKILL);
        waitpid(br.pid, NULL, 0);
        br.pid = 0;
        kills++;
        sleep_ms(50 + rand_r(&seed) % 250);
        if (tb_start(&br) == 0)
            restarts_ok++;
        else
            break;
        /* the producer recovers: acks resume after the restart (bounded
         * wait: a loaded machine may need more than the next kill's delay) */
        int64_t t0 = tu_mono_ns(), until = t0 + 20 * 1000000000LL;
        while (atomic_load(&n_acked) <= before[k] && tu_mono_ns() < until)
            sleep_ms(10);
        fprintf(stderr, "  kill %d: acks resumed %.0f ms after the restart\n", k + 1,
                (double)(tu_mono_ns() - t0) / 1e6);
    }
    /* Some more traffic after the last restart, then finish. */
    sleep_ms(500);
    atomic_store(&stop_producing, true);
    pthread_join(th, NULL);
    CU_ASSERT_EQUAL(verity_producer_flush(p, 60000), 0);
    int64_t pid;
    int16_t epoch;
    verity_producer_id(p, &pid, &epoch);
    verity_producer_free(p, 1000);
    CU_ASSERT_EQUAL(kills, KILLS);
    CU_ASSERT_EQUAL(restarts_ok, KILLS);
    /* Progress between kills: the producer recovered every time (within
     * 20 s of each restart). */
    for (int k = 1; k < kills; k++)
        CU_ASSERT(before[k] > before[k - 1]);

    /* Read everything back and count each id. */
    uint64_t total = atomic_load(&produced);
    uint8_t *count = calloc(total ? total : 1, 1);
    struct verity_consumer_config ccfg;
    verity_consumer_config_default(&ccfg);
    ccfg.conn.broker = br.addr;
    struct verity_consumer *cons = NULL;
    CU_ASSERT_EQUAL_FATAL(verity_consumer_new(&ccfg, &cons), 0);
    CU_ASSERT_EQUAL_FATAL(verity_client_new(&cc, &c), 0);
    uint64_t end[PARTS] = {0}, pos[PARTS] = {0};
    for (uint32_t i = 0; i < PARTS; i++) {
        struct verity_offsets o;
        CU_ASSERT_EQUAL(verity_list_offsets(c, "crash", i, VERITY_OFFSET_LATEST, 0, &o), 0);
        end[i] = o.offset;
        CU_ASSERT_EQUAL(verity_consumer_assign(cons, "crash", i, VERITY_START_EARLIEST, 0), 0);
    }
    verity_client_free(c);
    uint64_t found = 0, twice = 0, foreign = 0;
    int64_t deadline = tu_mono_ns() + 60 * 1000000000LL;
    bool done = false;
    while (!done && tu_mono_ns() < deadline) {
        const struct verity_message *m;
        size_t k;
        CU_ASSERT_EQUAL_FATAL(verity_consumer_poll(cons, 500, &m, &k, NULL), 0);
        for (size_t j = 0; j < k; j++) {
            uint64_t id;
            if (m[j].value_len < 8) {
                foreign++;
                continue;
            }
            memcpy(&id, m[j].value, 8);
            if (id >= total) {
                foreign++;
                continue;
            }
            if (count[id]++)
                twice++;
            found++;
        }
        done = true;
        for (uint32_t i = 0; i < PARTS; i++) {
            uint64_t hw;
            if (verity_consumer_position(cons, "crash", i, &pos[i], &hw) != 0 || pos[i] < end[i])
                done = false;
        }
    }
    verity_consumer_free(cons);
    CU_ASSERT_TRUE(done);
    uint64_t lost = 0;
    for (uint64_t id = 0; id < total; id++)
        if (atomic_load(&acked[id]) && count[id] != 1)
            lost++;
    fprintf(stderr,
            "  %d kills; %" PRIu64 " produced, %" PRIu64 " acked (%" PRIu64
            " as duplicates), %" PRIu64 " failed (%s); %" PRIu64 " found, %" PRIu64
            " twice, %" PRIu64 " acked but missing; producer %" PRId64 " epoch %d\n",
            kills, total, (uint64_t)atomic_load(&n_acked), (uint64_t)atomic_load(&n_dup_reports),
            (uint64_t)atomic_load(&n_failed),
            atomic_load(&first_error) ? verity_strerror(atomic_load(&first_error)) : "-", found,
            twice, lost, pid, epoch);
    CU_ASSERT(atomic_load(&n_acked) > 0);
    CU_ASSERT_EQUAL(lost, 0);
    CU_ASSERT_EQUAL(twice, 0);
    CU_ASSERT_EQUAL(foreign, 0);
    CU_ASSERT(found >= atomic_load(&n_acked));
    free(count);
    free((void *)acked);
}

int main(void)
{
    static const struct {
        const char *name;
        void (*fn)(void);
    } tests[] = {
        {"acked_records_survive_kills_exactly_once",
         test_acked_records_survive_kills_exactly_once},
    };
    signal(SIGPIPE, SIG_IGN);
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    CU_pSuite s = CU_add_suite("producer_crash", suite_init, suite_clean);
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
