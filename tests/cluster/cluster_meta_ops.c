/*
 * cluster_meta_ops: makes `__meta` ops cheaply for the cluster tests
 * (tests/cluster/meta_xfer_e2e.py): COUNT InitProducer requests (each a new
 * producer id, one `__meta` op) through libverity's idempotent producer, on
 * THREADS threads, against BROKERS (a bootstrap list). Writes every id
 * issued to OUT, one per line, and prints
 *
 *   {"issued":N,"failed":N,"min":ID,"max":ID,"dup":N}
 *
 * usage: cluster_meta_ops BROKERS COUNT OUT [--threads N] [--timeout-ms MS]
 *
 * Exit 0 when every request got an id and no id was issued twice, 1
 * otherwise.
 */
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "storage/clock.h"
#include "verity/verity.h"

static const char *brokers;
static long per_thread, timeout_ms = 20000;
static int64_t *ids;
static size_t n_ids;
static long failed;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;

/* One InitProducer: a new producer, waited for its id, freed. 0 or -1. */
static int64_t one_init(void)
{
    struct verity_producer_config pc;
    struct verity_producer *p = NULL;
    verity_producer_config_default(&pc);
    pc.conn.broker = brokers;
    pc.conn.request_timeout_ms = 5000;
    pc.idempotence = true;
    if (verity_producer_new(&pc, &p))
        return -1;
    int64_t id = -1;
    int16_t epoch = -1;
    int64_t deadline = clock_mono_ms() + timeout_ms;
    while (clock_mono_ms() < deadline) {
        verity_producer_id(p, &id, &epoch);
        if (id > 0)
            break;
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
    verity_producer_free(p, 0);
    return id > 0 ? id : -1;
}

static void *worker(void *arg)
{
    (void)arg;
    for (long i = 0; i < per_thread; i++) {
        int64_t id = one_init();
        pthread_mutex_lock(&mu);
        if (id > 0)
            ids[n_ids++] = id;
        else
            failed++;
        pthread_mutex_unlock(&mu);
    }
    return NULL;
}

static int cmp_id(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
    if (argc < 4) {
        fprintf(stderr, "usage: cluster_meta_ops BROKERS COUNT OUT [--threads N] [--timeout-ms MS]\n");
        return 2;
    }
    brokers = argv[1];
    long count = strtol(argv[2], NULL, 10);
    const char *out_path = argv[3];
    long threads = 8;
    for (int i = 4; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--threads") == 0)
            threads = strtol(argv[i + 1], NULL, 10);
        else if (strcmp(argv[i], "--timeout-ms") == 0)
            timeout_ms = strtol(argv[i + 1], NULL, 10);
    }
    if (count < 1 || threads < 1 || threads > 64) {
        fprintf(stderr, "cluster_meta_ops: bad COUNT or --threads\n");
        return 2;
    }
    per_thread = (count + threads - 1) / threads;
    ids = calloc((size_t)(per_thread * threads), sizeof *ids);
    pthread_t th[64];
    if (!ids)
        return 1;
    for (long t = 0; t < threads; t++)
        if (pthread_create(&th[t], NULL, worker, NULL))
            return 1;
    for (long t = 0; t < threads; t++)
        pthread_join(th[t], NULL);
    qsort(ids, n_ids, sizeof *ids, cmp_id);
    long dup = 0;
    FILE *out = fopen(out_path, "w");
    if (!out)
        return 1;
    for (size_t i = 0; i < n_ids; i++) {
        if (i && ids[i] == ids[i - 1])
            dup++;
        fprintf(out, "%" PRId64 "\n", ids[i]);
    }
    fclose(out);
    printf("{\"issued\":%zu,\"failed\":%ld,\"min\":%" PRId64 ",\"max\":%" PRId64 ",\"dup\":%ld}\n",
           n_ids, failed, n_ids ? ids[0] : 0, n_ids ? ids[n_ids - 1] : 0, dup);
    free(ids);
    return failed == 0 && dup == 0 ? 0 : 1;
}
