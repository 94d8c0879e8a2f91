/*
 * produce_consume: the smallest complete libverity program.
 *
 *   produce_consume [HOST:PORT] [TOPIC]
 *
 * Creates TOPIC (default "example", 2 partitions; an existing topic is
 * fine), produces ten keyed records asynchronously and one synchronously,
 * flushes, then reads both partitions from the earliest offset until it has
 * seen every record it wrote and prints them. Exit status 0 on success, 1 on
 * any failure, 3 when the broker cannot be reached.
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "verity/verity.h"

static int acked;

/* Runs on the producer's I/O thread, once per record. */
static void on_delivery(void *opaque, int err, const struct verity_delivery *d)
{
    const char *what = opaque;
    if (err) {
        fprintf(stderr, "%s: not delivered: %s\n", what, verity_strerror(err));
        return;
    }
    __atomic_add_fetch(&acked, 1, __ATOMIC_RELAXED);
    printf("acked %s -> %s/%" PRIu32 "@%" PRIu64 "\n", what, d->topic, d->partition, d->offset);
}

int main(int argc, char **argv)
{
    const char *topic = argc > 2 ? argv[2] : "example";
    struct verity_conn_config conn;
    verity_conn_config_default(&conn);
    conn.broker = argc > 1 ? argv[1] : NULL; /* NULL: $VERITY_BROKER or 127.0.0.1:9720 */

    /* Admin: create the topic. */
    struct verity_client *admin = NULL;
    int rc = verity_client_new(&conn, &admin);
    if (rc == 0)
        rc = verity_client_connect(admin, 5000);
    if (rc) {
        fprintf(stderr, "cannot reach %s: %s\n", verity_broker_resolve(conn.broker),
                verity_strerror(rc));
        verity_client_free(admin);
        return verity_err_unreachable(rc) ? 3 : 1;
    }
    struct verity_topic_config tc = {.partitions = 2, .durability = VERITY_DURABILITY_ALWAYS};
    rc = verity_topic_create(admin, topic, &tc, NULL);
    if (rc && rc != VERITY_EEXIST) {
        fprintf(stderr, "create %s: %s\n", topic, verity_last_error_message());
        verity_client_free(admin);
        return 1;
    }

    /* Producer: ten records asynchronously, one synchronously. */
    struct verity_producer_config pc;
    verity_producer_config_default(&pc);
    pc.conn = conn;
    pc.linger_ms = 5;
    struct verity_producer *prod = NULL;
    if ((rc = verity_producer_new(&pc, &prod)) != 0) {
        fprintf(stderr, "producer: %s\n", verity_strerror(rc));
        verity_client_free(admin);
        return 1;
    }
    static const char *names[10] = {"r0", "r1", "r2", "r3", "r4", "r5", "r6", "r7", "r8", "r9"};
    for (int i = 0; i < 10 && rc == 0; i++) {
        char value[32];
        int n = snprintf(value, sizeof value, "hello %d", i);
        struct verity_header h = {"source", 6, "example", 7};
        struct verity_record r = {.key = names[i], .key_len = 2, .value = value,
                                  .value_len = n, .headers = &h, .header_count = 1};
        rc = verity_produce(prod, topic, VERITY_PARTITION_ANY, &r, on_delivery, (void *)names[i]);
    }
    if (rc == 0)
        rc = verity_producer_flush(prod, 30000);
    struct verity_delivery d;
    struct verity_record last = {.key = "sync", .key_len = 4, .value = "goodbye", .value_len = 7};
    if (rc == 0)
        rc = verity_produce_sync(prod, topic, VERITY_PARTITION_ANY, &last, &d);
    verity_producer_free(prod, 5000);
    if (rc || acked != 10) {
        fprintf(stderr, "produce failed: %s (%d acked)\n", verity_strerror(rc), acked);
        verity_client_free(admin);
        return 1;
    }
    printf("acked sync -> partition %" PRIu32 "@%" PRIu64 "\n", d.partition, d.offset);

    /* Consumer: both partitions from the start, until the end offsets seen now. */
    uint64_t end[2], pos[2] = {0, 0};
    for (uint32_t p = 0; p < 2; p++) {
        struct verity_offsets o;
        if ((rc = verity_list_offsets(admin, topic, p, VERITY_OFFSET_LATEST, 0, &o)) != 0) {
            fprintf(stderr, "offsets: %s\n", verity_last_error_message());
            verity_client_free(admin);
            return 1;
        }
        end[p] = o.offset;
    }
    verity_client_free(admin);

    struct verity_consumer_config cc;
    verity_consumer_config_default(&cc);
    cc.conn = conn;
    struct verity_consumer *cons = NULL;
    if ((rc = verity_consumer_new(&cc, &cons)) != 0)
        return 1;
    for (uint32_t p = 0; p < 2 && rc == 0; p++)
        rc = verity_consumer_assign(cons, topic, p, VERITY_START_EARLIEST, 0);
    int seen = 0;
    while (rc == 0 && (pos[0] < end[0] || pos[1] < end[1])) {
        const struct verity_message *m;
        size_t n;
        rc = verity_consumer_poll(cons, 5000, &m, &n, NULL);
        if (rc == 0 && n == 0)
            rc = VERITY_ETIMEOUT;
        for (size_t i = 0; rc == 0 && i < n; i++) {
            printf("%s/%" PRIu32 "@%" PRIu64 " key=%.*s value=%.*s\n", m[i].topic, m[i].partition,
                   m[i].offset, m[i].key_len < 0 ? 0 : (int)m[i].key_len,
                   m[i].key ? (const char *)m[i].key : "", m[i].value_len < 0 ? 0 : (int)m[i].value_len,
                   m[i].value ? (const char *)m[i].value : "");
            pos[m[i].partition] = m[i].offset + 1;
            seen++;
        }
    }
    verity_consumer_free(cons);
    if (rc) {
        fprintf(stderr, "consume failed: %s\n", verity_strerror(rc));
        return 1;
    }
    printf("read %d records\n", seen);
    return seen >= 11 ? 0 : 1;
}
