/*
 * cluster_producer: the history recorder's producer for the cluster fault
 * tests (tests/cluster/, issue 10). Produces values "NAME-SEQ" (SEQ from 0)
 * to TOPIC with libverity's idempotent producer at the given acks, with a key
 * per value so they spread over the partitions, and writes one JSON line per
 * event to OUT (flushed per line, so a kill -9 of this process leaves a
 * readable history):
 *
 *   {"op":"send","v":"NAME-SEQ"}                   before verity_produce
 *   {"op":"ack","v":..,"p":P,"o":O}                delivery report, no error
 *   {"op":"ack","v":..,"p":P,"o":null}             VERITY_EDUPLICATE: written before,
 *                                                  offset no longer known to the broker
 *   {"op":"fail","v":..,"e":"ENAME"}               delivery report with an error
 *
 * Each line also has "t": the wall clock in ms when it was written (the
 * fault tests time cuts and heals against it).
 *
 * usage: cluster_producer BROKERS TOPIC OUT --name NAME --seconds S
 *                         [--rate N/s] [--acks quorum|leader]
 *
 * Stops issuing after S seconds, then waits (up to the delivery timeout) for
 * the outstanding reports. Exit 0 when every report arrived (errors
 * included), 1 otherwise.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "storage/clock.h"
#include "verity/verity.h"

static FILE *out;
static pthread_mutex_t out_mu = PTHREAD_MUTEX_INITIALIZER;

/* line: one JSON object ending in "}\n"; a "t" (wall clock, ms) is added. */
static void emit(const char *body)
{
    char line[320];
    size_t n = strlen(body);
    snprintf(line, sizeof line, "%.*s,\"t\":%" PRId64 "}\n", (int)(n >= 2 ? n - 2 : 0), body,
             clock_wall_ms());
    pthread_mutex_lock(&out_mu);
    fputs(line, out);
    fflush(out);
    pthread_mutex_unlock(&out_mu);
}

static void report(void *opaque, int err, const struct verity_delivery *d)
{
    char *v = opaque;
    char line[256];
    if (err == 0)
        snprintf(line, sizeof line, "{\"op\":\"ack\",\"v\":\"%s\",\"p\":%u,\"o\":%" PRIu64 "}\n", v,
                 d->partition, d->offset);
    else if (err == VERITY_EDUPLICATE) /* written before; the broker no longer names its offset */
        snprintf(line, sizeof line, "{\"op\":\"ack\",\"v\":\"%s\",\"p\":%u,\"o\":null}\n", v,
                 d->partition);
    else
        snprintf(line, sizeof line, "{\"op\":\"fail\",\"v\":\"%s\",\"e\":\"%s\"}\n", v,
                 verity_errname(err));
    emit(line);
    free(v);
}

int main(int argc, char **argv)
{
    const char *name = "p", *acks = "quorum";
    double seconds = 10, rate = 200;
    if (argc < 4 || strcmp(argv[1], "--help") == 0) {
        fprintf(argc < 4 ? stderr : stdout,
                "usage: cluster_producer BROKERS TOPIC OUT --name NAME --seconds S "
                "[--rate N] [--acks quorum|leader]\n");
        return argc < 4 ? 2 : 0;
    }
    for (int i = 4; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--name") == 0)
            name = argv[i + 1];
        else if (strcmp(argv[i], "--seconds") == 0)
            seconds = atof(argv[i + 1]);
        else if (strcmp(argv[i], "--rate") == 0)
            rate = atof(argv[i + 1]);
        else if (strcmp(argv[i], "--acks") == 0)
            acks = argv[i + 1];
        else {
            fprintf(stderr, "cluster_producer: unknown option %s\n", argv[i]);
            return 2;
        }
    }
    out = fopen(argv[3], "a");
    if (!out) {
        perror(argv[3]);
        return 1;
    }
    struct verity_producer_config pc;
    verity_producer_config_default(&pc);
    pc.conn.broker = argv[1];
    pc.conn.request_timeout_ms = 5000;
    pc.idempotence = true;
    pc.linger_ms = 2;
    pc.delivery_timeout_ms = 60000;
    if (verity_acks_parse(acks, &pc.acks) != 0) {
        fprintf(stderr, "cluster_producer: bad --acks %s\n", acks);
        return 2;
    }
    struct verity_producer *p = NULL;
    int rc = verity_producer_new(&pc, &p);
    if (rc) {
        fprintf(stderr, "cluster_producer: %s\n", verity_strerror(rc));
        return 1;
    }
    int64_t start = clock_mono_ms(), end = start + (int64_t)(seconds * 1000);
    uint64_t seq = 0;
    while (clock_mono_ms() < end) {
        /* Pace: value seq is due at start + seq / rate. */
        int64_t due = start + (int64_t)((double)seq * 1000.0 / rate);
        int64_t now = clock_mono_ms();
        if (due > now) {
            struct timespec ts = {0, (long)((due - now) * 1000000)};
            nanosleep(&ts, NULL);
        }
        char *v = malloc(64);
        if (!v)
            break;
        snprintf(v, 64, "%s-%" PRIu64, name, seq);
        char line[128];
        snprintf(line, sizeof line, "{\"op\":\"send\",\"v\":\"%s\"}\n", v);
        emit(line);
        struct verity_record rec = {.key = v, .key_len = (int32_t)strlen(v), .value = v,
                                    .value_len = (int32_t)strlen(v)};
        rc = verity_produce(p, argv[2], VERITY_PARTITION_ANY, &rec, report, v);
        if (rc) {
            /* Not queued: certainly not written. */
            snprintf(line, sizeof line, "{\"op\":\"fail\",\"v\":\"%s\",\"e\":\"%s\"}\n", v,
                     verity_errname(rc));
            emit(line);
            free(v);
        }
        seq++;
    }
    rc = verity_producer_flush(p, pc.delivery_timeout_ms + 5000);
    verity_producer_free(p, 1000);
    fclose(out);
    fprintf(stderr, "cluster_producer: %" PRIu64 " sent, flush %s\n", seq,
            rc ? verity_strerror(rc) : "ok");
    return rc ? 1 : 0;
}
