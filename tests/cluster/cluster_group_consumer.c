/*
 * cluster_group_consumer: a consumer-group member for the cluster fault
 * tests (tests/cluster/groups_e2e.py, issue 10 item 5). Joins GROUP through
 * libverity's group consumer (bootstrap list BROKERS), acknowledges every
 * message it is given, and writes one JSON line per event to OUT (flushed
 * per line):
 *
 *   {"op":"dlv","v":VALUE,"p":P,"o":O,"c":COUNT}     a delivered message
 *   {"op":"acked","p":P,"o":FIRST,"n":N,"e":ENAME}   an ack result (e "" on
 *                                                    success, EALREADY: done
 *                                                    before)
 *   {"op":"nacked",...}                              a nack result, the same
 *   {"op":"err","e":ENAME}                           a poll that failed
 *
 * Each line also has "t" (wall clock, ms).
 *
 * usage: cluster_group_consumer BROKERS GROUP TOPIC OUT --until-file PATH
 *                               [--idle-ms MS] [--name NAME] [--commit-every N]
 *                               [--nack 0|1] [--poison N]
 *
 * --commit-every N waits for the acks' answers (verity_group_commit) after
 * every N acks, so each round is its own __groups op (groups_e2e.py --down
 * uses 1 to move __groups fast). --nack 1 gives every message back
 * (verity_group_nack, no delay) instead of acknowledging it: a member that
 * only makes group-log traffic. --poison N gives back (verity_group_nack,
 * error text "poison") every message whose value's SEQ (after the last
 * '-') is a multiple of N, and acknowledges the others: the poison
 * messages go to the dead-letter topic after max_deliveries
 * (tests/cluster/dlq_e2e.py).
 *
 * Consumes until PATH exists and then nothing came for --idle-ms (5000),
 * waits for every ack to be answered (verity_group_commit), and exits 0.
 * Errors do not stop it: the library reconnects and follows the
 * coordinator; the test judges from the lines.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "storage/clock.h"
#include "verity/group.h"
#include "verity/verity.h"

static FILE *out;
static pthread_mutex_t out_mu = PTHREAD_MUTEX_INITIALIZER;

/* body: a JSON object without its closing brace */
static void emit(const char *body)
{
    pthread_mutex_lock(&out_mu);
    fprintf(out, "%s,\"t\":%" PRId64 "}\n", body, clock_wall_ms());
    fflush(out);
    pthread_mutex_unlock(&out_mu);
}

static void on_result(void *opaque, int err, const struct verity_group_result *r)
{
    (void)opaque;
    if (r->op != VERITY_GROUP_OP_ACK && r->op != VERITY_GROUP_OP_NACK)
        return;
    char line[200];
    snprintf(line, sizeof line,
             "{\"op\":\"%s\",\"p\":%" PRIu32 ",\"o\":%" PRIu64 ",\"n\":%" PRIu32 ",\"e\":\"%s\"",
             r->op == VERITY_GROUP_OP_ACK ? "acked" : "nacked", r->partition, r->first_offset,
             r->count, err ? verity_errname(err) : "");
    emit(line);
}

int main(int argc, char **argv)
{
    if (argc < 5) {
        fprintf(stderr, "usage: cluster_group_consumer BROKERS GROUP TOPIC OUT --until-file PATH "
                        "[--idle-ms MS] [--name NAME] [--commit-every N] [--nack 0|1] "
                        "[--poison N]\n");
        return 2;
    }
    const char *brokers = argv[1], *group = argv[2], *topic = argv[3], *path = argv[4];
    const char *until = NULL, *name = "groups-e2e";
    int64_t idle_ms = 5000;
    long commit_every = 0, since_commit = 0;
    int nack = 0;
    long poison = 0;
    for (int i = 5; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--until-file") == 0)
            until = argv[i + 1];
        else if (strcmp(argv[i], "--idle-ms") == 0)
            idle_ms = atoll(argv[i + 1]);
        else if (strcmp(argv[i], "--name") == 0)
            name = argv[i + 1];
        else if (strcmp(argv[i], "--commit-every") == 0)
            commit_every = atol(argv[i + 1]);
        else if (strcmp(argv[i], "--nack") == 0)
            nack = atoi(argv[i + 1]);
        else if (strcmp(argv[i], "--poison") == 0)
            poison = atol(argv[i + 1]);
    }
    if (!until) {
        fprintf(stderr, "cluster_group_consumer: --until-file is required\n");
        return 2;
    }
    if (!(out = fopen(path, "a"))) {
        perror(path);
        return 1;
    }
    struct verity_group_consumer_config cfg;
    verity_group_consumer_config_default(&cfg);
    cfg.conn.broker = brokers;
    cfg.conn.client_id = name;
    cfg.group = group;
    const char *topics[] = {topic};
    cfg.topics = topics;
    cfg.n_topics = 1;
    cfg.member_name = name;
    cfg.fetch_max = 200;
    cfg.result_cb = on_result;
    struct verity_group_consumer *g = NULL;
    int rc = verity_group_consumer_new(&cfg, &g);
    if (rc) {
        fprintf(stderr, "cluster_group_consumer: %s\n", verity_strerror(rc));
        return 1;
    }
    int64_t last = clock_mono_ms();
    for (;;) {
        const struct verity_group_message *m = NULL;
        size_t n = 0;
        rc = verity_group_poll(g, 500, &m, &n);
        if (rc) {
            char line[120];
            snprintf(line, sizeof line, "{\"op\":\"err\",\"e\":\"%s\"", verity_errname(rc));
            emit(line);
            usleep(100 * 1000);
        }
        for (size_t i = 0; rc == 0 && i < n; i++) {
            char line[400];
            snprintf(line, sizeof line,
                     "{\"op\":\"dlv\",\"v\":\"%.*s\",\"p\":%" PRIu32 ",\"o\":%" PRIu64
                     ",\"c\":%" PRIu32,
                     (int)(m[i].msg.value_len < 0     ? 0
                           : m[i].msg.value_len < 200 ? m[i].msg.value_len
                                                      : 200),
                     (const char *)m[i].msg.value, m[i].msg.partition, m[i].msg.offset,
                     m[i].delivery_count);
            emit(line);
            bool bad = nack != 0;
            if (poison > 0 && m[i].msg.value_len > 0) {
                const char *v = m[i].msg.value;
                int32_t k = m[i].msg.value_len;
                while (k > 0 && v[k - 1] != '-')
                    k--;
                long seq = 0;
                for (int32_t x = k; x < m[i].msg.value_len && v[x] >= '0' && v[x] <= '9'; x++)
                    seq = seq * 10 + (v[x] - '0');
                bad = k > 0 && seq % poison == 0;
            }
            int arc = bad ? verity_group_nack(g, m[i].msg.topic, m[i].msg.partition,
                                              m[i].msg.offset, 0, nack ? "churn" : "poison")
                          : verity_group_ack(g, m[i].msg.topic, m[i].msg.partition, m[i].msg.offset);
            if (arc) {
                snprintf(line, sizeof line, "{\"op\":\"err\",\"e\":\"ack:%s\"", verity_errname(arc));
                emit(line);
            }
            if (commit_every > 0 && ++since_commit >= commit_every) {
                since_commit = 0;
                int crc = verity_group_commit(g, 30000);
                if (crc) {
                    snprintf(line, sizeof line, "{\"op\":\"err\",\"e\":\"commit:%s\"",
                             verity_errname(crc));
                    emit(line);
                }
            }
        }
        if (n > 0)
            last = clock_mono_ms();
        if (access(until, F_OK) == 0 && clock_mono_ms() - last >= idle_ms)
            break;
    }
    rc = verity_group_commit(g, 30000);
    if (rc) {
        char line[120];
        snprintf(line, sizeof line, "{\"op\":\"err\",\"e\":\"commit:%s\"", verity_errname(rc));
        emit(line);
    }
    verity_group_consumer_free(g, 10000);
    fclose(out);
    return 0;
}
