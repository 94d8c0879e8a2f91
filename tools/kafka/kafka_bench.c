/*
 * kafka_bench: W1 and W3 of docs/PERFORMANCE.md through Verity's Kafka
 * listener with librdkafka, to compare with `verity bench` on the native
 * protocol in the same sitting (make bench-kafka).
 *
 *   W1  1,000,000 x 100-byte messages to a one-partition topic, acks=all,
 *       enable.idempotence=true; the rate counts from the first send to the
 *       last delivery report; any failed delivery fails the run.
 *   W3  read those 1,000,000 messages back from the beginning with an
 *       assigned consumer (no group membership, no commits); every message
 *       must arrive once, in order, with W1's bytes. As in `verity bench`'s
 *       W3 (tools/cmd_bench.c), the consumer is created and the reference
 *       payloads are built before the clock starts; the clock runs from the
 *       assignment to the last message checked.
 *
 * usage: kafka_bench BOOTSTRAP TOPIC [--messages N] [--w3-only] [--json]
 *                    [--broker-pid PID] [W3 client options, see --help]
 * The topic must exist, be empty and have one partition (--w3-only: hold
 * what an earlier run wrote). Each workload's client CPU (every librdkafka
 * thread) is reported, and the broker's with --broker-pid.
 */
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include <librdkafka/rdkafka.h>

#define PAYLOAD 100

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* The process's user+system CPU (every librdkafka thread included). */
static double cpu_s(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
           (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

/* A process's user+system CPU from /proc/PID/stat; -1 without a PID. */
static long broker_pid;

static double proc_cpu_s(long pid)
{
    if (pid <= 0)
        return -1;
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%ld/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    size_t len = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[len] = 0;
    char *p = strrchr(buf, ')'); /* the command name may hold spaces */
    unsigned long ut = 0, st = 0;
    if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) != 2)
        return -1;
    return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

static uint64_t delivered, failed;
/* CPU seconds on each workload's clock: the client's, the broker's (-1 unknown). */
static double w1_cpu, w3_cpu, w1_srv = -1, w3_srv = -1;

static void dr_cb(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
    (void)rk;
    (void)opaque;
    if (m->err) {
        if (failed++ < 3)
            fprintf(stderr, "kafka_bench: delivery failed: %s\n", rd_kafka_err2str(m->err));
    } else {
        delivered++;
    }
}

static void fill(char *buf, uint64_t i)
{
    int n = snprintf(buf, PAYLOAD + 1, "%020" PRIu64 "-", i);
    for (int k = n; k < PAYLOAD; k++)
        buf[k] = (char)('a' + (i + (uint64_t)k) % 26);
}

static int set(rd_kafka_conf_t *c, const char *k, const char *v)
{
    char err[256];
    if (rd_kafka_conf_set(c, k, v, err, sizeof err) != RD_KAFKA_CONF_OK) {
        fprintf(stderr, "kafka_bench: %s=%s: %s\n", k, v, err);
        return -1;
    }
    return 0;
}

static double w1(const char *boot, const char *topic, uint64_t n)
{
    char err[256];
    rd_kafka_conf_t *c = rd_kafka_conf_new();
    if (set(c, "bootstrap.servers", boot) || set(c, "enable.idempotence", "true") ||
        set(c, "acks", "all") || set(c, "linger.ms", "5") ||
        set(c, "queue.buffering.max.messages", "1000000") ||
        set(c, "batch.num.messages", "10000"))
        return -1;
    rd_kafka_conf_set_dr_msg_cb(c, dr_cb);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, c, err, sizeof err);
    if (!rk) {
        fprintf(stderr, "kafka_bench: %s\n", err);
        return -1;
    }
    char buf[PAYLOAD + 1];
    double s0 = proc_cpu_s(broker_pid), c0 = cpu_s(), t0 = now_s();
    for (uint64_t i = 0; i < n; i++) {
        fill(buf, i);
        for (;;) {
            rd_kafka_resp_err_t e =
                rd_kafka_producev(rk, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_PARTITION(0),
                                  RD_KAFKA_V_VALUE(buf, PAYLOAD),
                                  RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END);
            if (e == RD_KAFKA_RESP_ERR_NO_ERROR)
                break;
            if (e != RD_KAFKA_RESP_ERR__QUEUE_FULL) {
                fprintf(stderr, "kafka_bench: produce: %s\n", rd_kafka_err2str(e));
                rd_kafka_destroy(rk);
                return -1;
            }
            rd_kafka_poll(rk, 10);
        }
        rd_kafka_poll(rk, 0);
    }
    rd_kafka_flush(rk, 120000);
    double dt = now_s() - t0;
    w1_cpu = cpu_s() - c0;
    if (s0 >= 0)
        w1_srv = proc_cpu_s(broker_pid) - s0;
    rd_kafka_destroy(rk);
    if (failed || delivered != n) {
        fprintf(stderr, "kafka_bench: W1 delivered %" PRIu64 " of %" PRIu64 ", %" PRIu64
                " failed\n", delivered, n, failed);
        return -1;
    }
    return (double)n / dt;
}

/* W3's client settings. The defaults are the measured best (docs/
 * PERFORMANCE.md, "W3 through librdkafka's batch API"); the flags restore
 * the earlier choices, to measure what each is worth. */
static struct {
    const char *fetch_bytes; /* fetch.max.bytes = max.partition.fetch.bytes; NULL: librdkafka's */
    bool offset_store;       /* enable.auto.offset.store=true (librdkafka's default) */
    bool check_on_clock;     /* build each expected payload on the clock */
    bool simple_consumer;    /* the plain consumer (consume_start) instead of assign */
} w3o;

/* Checks one message against what W1 sent; false when it is wrong. */
static bool w3_check(const rd_kafka_message_t *m, const char *want, uint64_t got, int64_t *last)
{
    const char *w = want + got * PAYLOAD;
    if (w3o.check_on_clock) {
        fill((char *)want, got);
        w = want;
    }
    bool ok = m->offset > *last && m->len == PAYLOAD && !memcmp(m->payload, w, PAYLOAD);
    *last = m->offset;
    return ok;
}

static double w3(const char *boot, const char *topic, uint64_t n)
{
    char err[256];
    rd_kafka_conf_t *c = rd_kafka_conf_new();
    if (set(c, "bootstrap.servers", boot) ||
        (!w3o.simple_consumer &&
         (set(c, "group.id", "kafka-bench-unused") || set(c, "enable.auto.commit", "false"))) ||
        set(c, "enable.auto.offset.store", w3o.offset_store ? "true" : "false"))
        return -1;
    if (w3o.fetch_bytes &&
        (set(c, "fetch.max.bytes", w3o.fetch_bytes) ||
         set(c, "max.partition.fetch.bytes", w3o.fetch_bytes) ||
         (atol(w3o.fetch_bytes) < 1000000 && set(c, "message.max.bytes", w3o.fetch_bytes))))
        return -1;
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, c, err, sizeof err);
    if (!rk) {
        fprintf(stderr, "kafka_bench: %s\n", err);
        return -1;
    }
    /* Setup, not timed (the W3 definition: the consumer is created before
     * the clock starts): the topic's metadata first. Started before
     * librdkafka knows the partition's leader, the consumer arms its
     * offset-query timer and waits 500 ms before the first ListOffsets,
     * which was a third of every W3 figure here. */
    rd_kafka_topic_t *th = rd_kafka_topic_new(rk, topic, NULL);
    const struct rd_kafka_metadata *md = NULL;
    if (th && rd_kafka_metadata(rk, 0, th, &md, 10000) == RD_KAFKA_RESP_ERR_NO_ERROR)
        rd_kafka_metadata_destroy(md);
    /* What W1 sent, built before the clock as `verity bench` builds its
     * W3 reference (make_payloads). */
    char *want = malloc(w3o.check_on_clock ? PAYLOAD + 1 : n * PAYLOAD + 1);
    if (!want || !th) {
        free(want);
        if (th)
            rd_kafka_topic_destroy(th);
        rd_kafka_destroy(rk);
        return -1;
    }
    for (uint64_t i = 0; !w3o.check_on_clock && i < n; i++)
        fill(want + i * PAYLOAD, i);
    uint64_t got = 0;
    int64_t last = -1;
    bool bad = false, started = false;
    static rd_kafka_message_t *ms[4096];
    double s0 = proc_cpu_s(broker_pid), c0 = cpu_s(), t0 = now_s(), deadline = t0 + 300;
    /* The high-level consumer, assigned (no group membership, no
     * commits), forwards the partition's queue to the consumer queue;
     * --simple-consumer uses the plain one (rd_kafka_consume_start, as
     * `kcat -C`), which reads the partition's queue. Either way messages are taken in batches of
     * up to 4096 (rd_kafka_consume_batch*), as a throughput-minded
     * application does, and every one is checked. */
    rd_kafka_queue_t *qu = NULL;
    if (!w3o.simple_consumer) {
        rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
        rd_kafka_topic_partition_list_add(l, topic, 0)->offset = RD_KAFKA_OFFSET_BEGINNING;
        started = rd_kafka_assign(rk, l) == RD_KAFKA_RESP_ERR_NO_ERROR;
        rd_kafka_topic_partition_list_destroy(l);
        qu = rd_kafka_queue_get_consumer(rk);
        started = started && qu;
    } else {
        started = rd_kafka_consume_start(th, 0, RD_KAFKA_OFFSET_BEGINNING) == 0;
    }
    while (started && got < n && now_s() < deadline && !bad) {
        ssize_t k = qu ? rd_kafka_consume_batch_queue(qu, 100, ms, 4096)
                       : rd_kafka_consume_batch(th, 0, 100, ms, 4096);
        for (ssize_t i = 0; i < k; i++) {
            if (!ms[i]->err && !bad && got < n) {
                bad = !w3_check(ms[i], want, got, &last);
                got++;
            }
            rd_kafka_message_destroy(ms[i]);
        }
    }
    double dt = now_s() - t0;
    w3_cpu = cpu_s() - c0;
    if (s0 >= 0)
        w3_srv = proc_cpu_s(broker_pid) - s0;
    if (!started)
        fprintf(stderr, "kafka_bench: W3 could not start the consumer\n");
    if (qu)
        rd_kafka_queue_destroy(qu);
    else if (started)
        rd_kafka_consume_stop(th, 0);
    free(want);
    rd_kafka_topic_destroy(th);
    if (!w3o.simple_consumer)
        rd_kafka_consumer_close(rk);
    rd_kafka_destroy(rk);
    if (bad || got != n) {
        fprintf(stderr, "kafka_bench: W3 read %" PRIu64 " of %" PRIu64 "%s\n", got, n,
                bad ? " (a message out of order or with other bytes)" : "");
        return -1;
    }
    return (double)n / dt;
}

int main(int argc, char **argv)
{
    if (argc >= 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
        printf("usage: kafka_bench BOOTSTRAP TOPIC [--messages N] [--w3-only] [--json]\n"
               "                   [--broker-pid PID] [W3 options]\n"
               "W1 (idempotent acks=all producer) and W3 (assigned consumer) with librdkafka.\n"
               "--w3-only reads back what an earlier run wrote to TOPIC (to time W3 alone).\n"
               "--broker-pid PID also reports the broker's CPU on each workload's clock.\n"
               "W3 options (each restores an earlier choice, to measure what it costs):\n"
               "  --fetch-bytes N     fetch.max.bytes = max.partition.fetch.bytes = N\n"
               "                      (default: librdkafka's, 1 MiB per partition)\n"
               "  --offset-store      enable.auto.offset.store=true (default false)\n"
               "  --check-on-clock    build each expected payload on the clock\n"
               "  --simple-consumer   rd_kafka_consume_start + rd_kafka_consume_batch\n");
        return 0;
    }
    if (argc >= 2 && !strcmp(argv[1], "--version")) {
        printf("kafka_bench (verity) librdkafka %s\n", rd_kafka_version_str());
        return 0;
    }
    if (argc < 3) {
        fprintf(stderr, "usage: kafka_bench BOOTSTRAP TOPIC [--messages N] [--w3-only] [--json]\n");
        return 2;
    }
    uint64_t n = 1000000;
    bool json = false, w3_only = false;
    for (int i = 3; i < argc; i++) {
        if (!strcmp(argv[i], "--messages") && i + 1 < argc)
            n = strtoull(argv[++i], NULL, 10);
        else if (!strcmp(argv[i], "--json"))
            json = true;
        else if (!strcmp(argv[i], "--w3-only"))
            w3_only = true;
        else if (!strcmp(argv[i], "--broker-pid") && i + 1 < argc)
            broker_pid = atol(argv[++i]);
        else if (!strcmp(argv[i], "--fetch-bytes") && i + 1 < argc)
            w3o.fetch_bytes = argv[++i];
        else if (!strcmp(argv[i], "--offset-store"))
            w3o.offset_store = true;
        else if (!strcmp(argv[i], "--check-on-clock"))
            w3o.check_on_clock = true;
        else if (!strcmp(argv[i], "--simple-consumer"))
            w3o.simple_consumer = true;
        else {
            fprintf(stderr, "kafka_bench: unknown argument %s\n", argv[i]);
            return 2;
        }
    }
    double r1 = w3_only ? 0 : w1(argv[1], argv[2], n);
    if (r1 < 0)
        return 1;
    double r3 = w3(argv[1], argv[2], n);
    if (r3 < 0)
        return 1;
    if (json)
        printf("{\"messages\":%" PRIu64 ",\"w1_msgs_per_s\":%.0f,\"w3_msgs_per_s\":%.0f,"
               "\"w1_client_cpu_s\":%.3f,\"w3_client_cpu_s\":%.3f,"
               "\"w1_broker_cpu_s\":%.2f,\"w3_broker_cpu_s\":%.2f}\n",
               n, r1, r3, w1_cpu, w3_cpu, w1_srv, w3_srv);
    else
        printf("kafka W1 %.0f msg/s  W3 %.0f msg/s  (%" PRIu64 " x %d B, librdkafka %s; "
               "client CPU W1 %.2f s, W3 %.2f s)\n",
               r1, r3, n, PAYLOAD, rd_kafka_version_str(), w1_cpu, w3_cpu);
    return 0;
}
