/*
 * kafka_bench: W1 and W3 of docs/PERFORMANCE.md through Verity's Kafka
 * listener with librdkafka, to compare with `verity bench` on the native
 * protocol in the same sitting (make bench-kafka).
 *
 *   W1  1,000,000 x 100-byte messages to a one-partition topic, acks=all,
 *       enable.idempotence=true; the rate counts from the first send to the
 *       last delivery report; any failed delivery fails the run.
 *   W3  read those 1,000,000 messages back with a plain (assigned, no group)
 *       consumer; every message must arrive once, in order, with W1's bytes.
 *
 * usage: kafka_bench BOOTSTRAP TOPIC [--messages N] [--json]
 * The topic must exist, be empty and have one partition.
 */
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <librdkafka/rdkafka.h>

#define PAYLOAD 100

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static uint64_t delivered, failed;

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
    double t0 = now_s();
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
    rd_kafka_destroy(rk);
    if (failed || delivered != n) {
        fprintf(stderr, "kafka_bench: W1 delivered %" PRIu64 " of %" PRIu64 ", %" PRIu64
                " failed\n", delivered, n, failed);
        return -1;
    }
    return (double)n / dt;
}

static double w3(const char *boot, const char *topic, uint64_t n)
{
    char err[256];
    rd_kafka_conf_t *c = rd_kafka_conf_new();
    if (set(c, "bootstrap.servers", boot) || set(c, "group.id", "kafka-bench-unused") ||
        set(c, "enable.auto.commit", "false") || set(c, "fetch.max.bytes", "4194304") ||
        set(c, "max.partition.fetch.bytes", "4194304"))
        return -1;
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, c, err, sizeof err);
    if (!rk) {
        fprintf(stderr, "kafka_bench: %s\n", err);
        return -1;
    }
    /* Setup, not timed (the W3 definition: the consumer is created before
     * the clock starts): the topic's metadata first. Assigned before
     * librdkafka knows the partition's leader, the consumer arms its
     * offset-query timer and waits 500 ms before the first ListOffsets,
     * which was a third of every W3 figure here. */
    rd_kafka_topic_t *th = rd_kafka_topic_new(rk, topic, NULL);
    const struct rd_kafka_metadata *md = NULL;
    if (th && rd_kafka_metadata(rk, 0, th, &md, 10000) == RD_KAFKA_RESP_ERR_NO_ERROR)
        rd_kafka_metadata_destroy(md);
    if (th)
        rd_kafka_topic_destroy(th);
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(l, topic, 0)->offset = RD_KAFKA_OFFSET_BEGINNING;
    char want[PAYLOAD + 1];
    uint64_t got = 0;
    int64_t last = -1;
    double t0 = now_s(), deadline = t0 + 300;
    rd_kafka_assign(rk, l);
    rd_kafka_topic_partition_list_destroy(l);
    int bad = 0;
    /* Messages are taken from the consumer queue in batches
     * (rd_kafka_consume_batch_queue), as a throughput-minded librdkafka
     * application does; every one is still checked. */
    rd_kafka_queue_t *qu = rd_kafka_queue_get_consumer(rk);
    static rd_kafka_message_t *ms[4096];
    while (got < n && now_s() < deadline && !bad && qu) {
        ssize_t k = rd_kafka_consume_batch_queue(qu, 100, ms, 4096);
        for (ssize_t i = 0; i < k; i++) {
            rd_kafka_message_t *m = ms[i];
            if (!m->err && !bad) {
                fill(want, got);
                if (m->offset <= last || m->len != PAYLOAD || memcmp(m->payload, want, PAYLOAD))
                    bad = 1;
                last = m->offset;
                got++;
            }
            rd_kafka_message_destroy(m);
        }
    }
    if (qu)
        rd_kafka_queue_destroy(qu);
    double dt = now_s() - t0;
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
               "W1 (idempotent acks=all producer) and W3 (plain consumer) with librdkafka.\n"
               "--w3-only reads back what an earlier run wrote to TOPIC (to time W3 alone).\n");
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
        printf("{\"messages\":%" PRIu64 ",\"w1_msgs_per_s\":%.0f,\"w3_msgs_per_s\":%.0f}\n", n, r1,
               r3);
    else
        printf("kafka W1 %.0f msg/s  W3 %.0f msg/s  (%" PRIu64 " x %d B, librdkafka %s)\n", r1, r3,
               n, PAYLOAD, rd_kafka_version_str());
    return 0;
}
