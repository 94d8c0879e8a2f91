/*
 * Connection load: 1,000 idle connections plus 8 active idempotent producers
 * against one real verityd. Every producer's records are acknowledged and
 * read back exactly once, every idle connection is still open and still
 * answered afterwards, and the broker's resident memory stays bounded (the
 * figure is printed; the bound asserted is generous, the printed figure is
 * what docs/PERFORMANCE.md quotes).
 */
#include <CUnit/Basic.h>
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "tests/integ/test_broker_util.h"
#include "tests/support/tutil.h"
#include "verity/verity.h"

#define IDLE_CONNS 1000
#define PRODUCERS 8
#define RSS_BOUND_KB (256 * 1024)

static struct bh broker;
static int producers_done;
static char broker_addr[64];

static long rss_kb(pid_t pid)
{
    char path[64], line[256];
    long v = -1;
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    while (fgets(line, sizeof line, f))
        if (strncmp(line, "VmRSS:", 6) == 0)
            v = strtol(line + 6, NULL, 10);
    fclose(f);
    return v;
}

struct prod_arg {
    int id;
    uint32_t count;
    int failures;
    uint64_t acked;
};

static void on_delivery(void *opaque, int err, const struct verity_delivery *d)
{
    struct prod_arg *a = opaque;
    (void)d;
    if (err)
        __atomic_add_fetch(&a->failures, 1, __ATOMIC_RELAXED);
    else
        __atomic_add_fetch(&a->acked, 1, __ATOMIC_RELAXED);
}

static void *producer_main(void *p)
{
    struct prod_arg *a = p;
    struct verity_producer_config cfg;
    struct verity_producer *prod = NULL;
    verity_producer_config_default(&cfg);
    cfg.conn.broker = broker_addr;
    cfg.linger_ms = 1;
    if (verity_producer_new(&cfg, &prod)) {
        a->failures++;
        return NULL;
    }
    char val[100];
    for (uint32_t i = 0; i < a->count; i++) {
        int n = snprintf(val, sizeof val, "p%d-%u", a->id, i);
        memset(val + n, 'x', sizeof val - (size_t)n);
        struct verity_record r = {.key = val, .key_len = n, .value = val, .value_len = sizeof val};
        if (verity_produce(prod, "load", VERITY_PARTITION_ANY, &r, on_delivery, a)) {
            a->failures++;
            break;
        }
    }
    if (verity_producer_flush(prod, 60000))
        a->failures++;
    verity_producer_free(prod, 10000);
    __atomic_add_fetch(&producers_done, 1, __ATOMIC_RELEASE);
    return NULL;
}

static void test_idle_connections_and_active_producers(void)
{
    struct rlimit rl;
    CU_ASSERT_EQUAL_FATAL(getrlimit(RLIMIT_NOFILE, &rl), 0);
    if (rl.rlim_cur < IDLE_CONNS + 200 && rl.rlim_max >= IDLE_CONNS + 200) {
        rl.rlim_cur = rl.rlim_max; /* inherited by the broker we fork */
        CU_ASSERT_EQUAL_FATAL(setrlimit(RLIMIT_NOFILE, &rl), 0);
    }
    CU_ASSERT_TRUE_FATAL(rl.rlim_cur >= IDLE_CONNS + 200);
    CU_ASSERT_EQUAL_FATAL(bh_init(&broker, "load"), 0);
    CU_ASSERT_EQUAL_FATAL(bh_start(&broker, NULL), 0);
    snprintf(broker_addr, sizeof broker_addr, "127.0.0.1:%u", broker.port);
    long rss_start = rss_kb(broker.pid);

    int ctl = bh_connect(&broker);
    CU_ASSERT_TRUE_FATAL(ctl >= 0);
    CU_ASSERT_EQUAL_FATAL(bh_create_topic(&broker, ctl, "load", 4, VERITY__DURABILITY__DURABILITY_GROUP), 0);

    static int idle[IDLE_CONNS];
    int opened = 0;
    for (int i = 0; i < IDLE_CONNS; i++) {
        idle[i] = bh_connect(&broker);
        if (idle[i] >= 0)
            opened++;
    }
    CU_ASSERT_EQUAL_FATAL(opened, IDLE_CONNS);
    /* Every idle connection says hello once, so each is a real client. */
    int hello_ok = 0;
    for (int i = 0; i < IDLE_CONNS; i++)
        if (bh_list_topics(&broker, idle[i]) >= 0)
            hello_ok++;
    CU_ASSERT_EQUAL(hello_ok, IDLE_CONNS);
    long rss_idle = rss_kb(broker.pid);

    uint32_t per = tu_quick() ? 10000 : 50000;
    pthread_t th[PRODUCERS];
    struct prod_arg args[PRODUCERS];
    int64_t t0 = bh_mono_ms();
    for (int i = 0; i < PRODUCERS; i++) {
        args[i] = (struct prod_arg){.id = i, .count = per};
        CU_ASSERT_EQUAL_FATAL(pthread_create(&th[i], NULL, producer_main, &args[i]), 0);
    }
    long rss_peak = rss_idle;
    while (__atomic_load_n(&producers_done, __ATOMIC_ACQUIRE) < PRODUCERS) {
        long r = rss_kb(broker.pid);
        if (r > rss_peak)
            rss_peak = r;
        usleep(50000);
    }
    for (int i = 0; i < PRODUCERS; i++)
        pthread_join(th[i], NULL);
    int64_t ms = bh_mono_ms() - t0;
    uint64_t acked = 0;
    for (int i = 0; i < PRODUCERS; i++) {
        CU_ASSERT_EQUAL(args[i].failures, 0);
        CU_ASSERT_EQUAL(args[i].acked, per);
        acked += args[i].acked;
    }

    /* No idle connection was dropped, and each still gets answers. */
    int still_open = 0, answered = 0;
    for (int i = 0; i < IDLE_CONNS; i++) {
        struct pollfd p = {.fd = idle[i], .events = POLLIN};
        if (poll(&p, 1, 0) == 0)
            still_open++;
    }
    CU_ASSERT_EQUAL(still_open, IDLE_CONNS);
    for (int i = 0; i < IDLE_CONNS; i += 10)
        if (bh_list_topics(&broker, idle[i]) >= 0)
            answered++;
    CU_ASSERT_EQUAL(answered, IDLE_CONNS / 10);

    /* Read everything back: each producer's records exactly once. */
    struct verity_consumer_config ccfg;
    struct verity_consumer *cons = NULL;
    verity_consumer_config_default(&ccfg);
    ccfg.conn.broker = broker_addr;
    CU_ASSERT_EQUAL_FATAL(verity_consumer_new(&ccfg, &cons), 0);
    for (uint32_t p = 0; p < 4; p++)
        CU_ASSERT_EQUAL(verity_consumer_assign(cons, "load", p, VERITY_START_EARLIEST, 0), 0);
    uint8_t *seen = calloc((size_t)PRODUCERS * per, 1);
    uint64_t got = 0, dup = 0;
    int64_t deadline = bh_mono_ms() + 60000;
    while (got < acked && bh_mono_ms() < deadline) {
        const struct verity_message *m;
        size_t n = 0;
        if (verity_consumer_poll(cons, 500, &m, &n, NULL))
            break;
        for (size_t i = 0; i < n; i++) {
            int pid_ = -1;
            unsigned idx = 0;
            if (m[i].key_len > 0 && sscanf((const char *)m[i].key, "p%d-%u", &pid_, &idx) == 2 &&
                pid_ >= 0 && pid_ < PRODUCERS && idx < per) {
                if (seen[(size_t)pid_ * per + idx]++)
                    dup++;
                else
                    got++;
            }
        }
    }
    verity_consumer_free(cons);
    free(seen);
    CU_ASSERT_EQUAL(got, acked);
    CU_ASSERT_EQUAL(dup, 0);

    long rss_end = rss_kb(broker.pid);
    fprintf(stderr,
            "\n  %d idle connections + %d producers: %" PRIu64 " records acked in %" PRId64
            " ms; broker RSS %ld KiB at start, %ld KiB with the idle connections, peak %ld KiB, "
            "%ld KiB at the end\n",
            IDLE_CONNS, PRODUCERS, acked, ms, rss_start, rss_idle, rss_peak, rss_end);
    CU_ASSERT_TRUE(rss_peak > 0 && rss_peak < RSS_BOUND_KB);
    for (int i = 0; i < IDLE_CONNS; i++)
        close(idle[i]);
    close(ctl);
    CU_ASSERT_EQUAL(bh_stop_sig(&broker, SIGTERM), 0);
    bh_cleanup(&broker);
}

int main(void)
{
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    CU_pSuite s = CU_add_suite("load", NULL, NULL);
    if (s)
        CU_add_test(s, "1000 idle connections and 8 producers, all served, memory bounded",
                    test_idle_connections_and_active_producers);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    unsigned fails = CU_get_number_of_failures() + CU_get_number_of_suites_failed();
    CU_cleanup_registry();
    return fails ? 1 : 0;
}
