/*
 * Writes the seed corpus for fuzz_frame into the directory given as argv[1]:
 * well-formed frames of every request type (a Produce carrying real batches,
 * idempotent and keyed), a response, a bare batch, and a few near misses.
 * Built and run by tests/fuzz/run.sh.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proto/codec.h"
#include "storage/batch.h"

static int write_file(const char *dir, const char *name, const uint8_t *a, size_t alen,
                      const uint8_t *b, size_t blen)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    if (!f)
        return -1;
    int rc = (alen && fwrite(a, 1, alen, f) != alen) || (blen && fwrite(b, 1, blen, f) != blen);
    return fclose(f) || rc ? -1 : 0;
}

static int frame(const char *dir, const char *name, Verity__Envelope *env, const uint8_t *pl,
                 size_t pl_len)
{
    uint8_t *head;
    size_t len;
    env->version = 1;
    env->correlation_id = 7;
    if (codec_encode(env, pl_len, NULL, &head, &len))
        return -1;
    int rc = write_file(dir, name, head, len, pl, pl_len);
    free(head);
    return rc;
}

static int batch(struct batch_builder *b, int64_t pid, int epoch, int32_t seq, const uint8_t *key,
                 uint32_t n)
{
    batch_builder_reset(b);
    for (uint32_t i = 0; i < n; i++) {
        char k[16], v[32];
        int kl = snprintf(k, sizeof k, "k%u", i);
        int vl = snprintf(v, sizeof v, "value-%u", i);
        struct batch_header_kv h = {(const uint8_t *)"h", 1, (const uint8_t *)"x", 1};
        if (batch_builder_add(b, 1700000000000 + i, k, kl, v, vl, &h, i % 2))
            return -1;
    }
    struct batch_meta m = {0, pid, (int16_t)epoch, seq, key};
    return batch_builder_finish(b, &m);
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: seed_gen DIR\n");
        return 2;
    }
    const char *dir = argv[1];
    struct batch_builder b1, b2;
    if (batch_builder_init(&b1, 4096) || batch_builder_init(&b2, 4096))
        return 1;
    static const uint8_t key[16] = "idempotency-key";
    if (batch(&b1, 1, 0, 0, NULL, 3) || batch(&b2, -1, -1, -1, key, 2))
        return 1;
    uint8_t payload[8192];
    memcpy(payload, b1.buf, b1.len);
    memcpy(payload + b1.len, b2.buf, b2.len);
    int rc = 0;

    Verity__Envelope env = VERITY__ENVELOPE__INIT;
    Verity__ProduceRequest pr = VERITY__PRODUCE_REQUEST__INIT;
    Verity__ProduceBatch pb[2] = {VERITY__PRODUCE_BATCH__INIT, VERITY__PRODUCE_BATCH__INIT};
    Verity__ProduceBatch *pbp[2] = {&pb[0], &pb[1]};
    pb[0].topic = "orders";
    pb[0].batch_bytes = (uint32_t)b1.len;
    pb[1].topic = "orders";
    pb[1].partition = 1;
    pb[1].batch_bytes = (uint32_t)b2.len;
    pr.n_batches = 2;
    pr.batches = pbp;
    pr.timeout_ms = 1000;
    env.body_case = VERITY__ENVELOPE__BODY_PRODUCE_REQ;
    env.produce_req = &pr;
    rc |= frame(dir, "produce", &env, payload, b1.len + b2.len);
    pr.n_batches = 1;
    rc |= frame(dir, "produce_one", &env, payload, b1.len);

    Verity__FetchRequest fr = VERITY__FETCH_REQUEST__INIT;
    Verity__FetchPartition fp = VERITY__FETCH_PARTITION__INIT;
    Verity__FetchPartition *fpp = &fp;
    fp.topic = "orders";
    fp.offset = 5;
    fr.n_partitions = 1;
    fr.partitions = &fpp;
    fr.max_wait_ms = 100;
    fr.min_bytes = 1;
    env.body_case = VERITY__ENVELOPE__BODY_FETCH_REQ;
    env.fetch_req = &fr;
    rc |= frame(dir, "fetch", &env, NULL, 0);

    Verity__CreateTopicRequest ct = VERITY__CREATE_TOPIC_REQUEST__INIT;
    Verity__TopicConfig tc = VERITY__TOPIC_CONFIG__INIT;
    tc.partitions = 3;
    tc.durability = VERITY__DURABILITY__DURABILITY_ALWAYS;
    tc.retention_ms = -1;
    ct.name = "orders";
    ct.config = &tc;
    env.body_case = VERITY__ENVELOPE__BODY_CREATE_TOPIC_REQ;
    env.create_topic_req = &ct;
    rc |= frame(dir, "create_topic", &env, NULL, 0);

    Verity__ListOffsetsRequest lo = VERITY__LIST_OFFSETS_REQUEST__INIT;
    Verity__ListOffsetsPartition lp = VERITY__LIST_OFFSETS_PARTITION__INIT;
    Verity__ListOffsetsPartition *lpp = &lp;
    lp.topic = "orders";
    lp.spec = VERITY__OFFSET_SPEC__OFFSET_TIMESTAMP;
    lp.timestamp_ms = 1700000000000;
    lo.n_partitions = 1;
    lo.partitions = &lpp;
    env.body_case = VERITY__ENVELOPE__BODY_LIST_OFFSETS_REQ;
    env.list_offsets_req = &lo;
    rc |= frame(dir, "list_offsets", &env, NULL, 0);

    Verity__MetadataRequest md = VERITY__METADATA_REQUEST__INIT;
    char *topics[2] = {"orders", "__meta"};
    md.n_topics = 2;
    md.topics = topics;
    env.body_case = VERITY__ENVELOPE__BODY_METADATA_REQ;
    env.metadata_req = &md;
    rc |= frame(dir, "metadata", &env, NULL, 0);

    Verity__HelloRequest hq = VERITY__HELLO_REQUEST__INIT;
    hq.version_min = 1;
    hq.version_max = 1;
    hq.client_id = "seed";
    env.body_case = VERITY__ENVELOPE__BODY_HELLO_REQ;
    env.hello_req = &hq;
    rc |= frame(dir, "hello", &env, NULL, 0);

    Verity__InitProducerRequest ip = VERITY__INIT_PRODUCER_REQUEST__INIT;
    ip.producer_id = 1;
    env.body_case = VERITY__ENVELOPE__BODY_INIT_PRODUCER_REQ;
    env.init_producer_req = &ip;
    rc |= frame(dir, "init_producer", &env, NULL, 0);

    Verity__FetchResponse fres = VERITY__FETCH_RESPONSE__INIT;
    Verity__FetchResult fre = VERITY__FETCH_RESULT__INIT;
    Verity__FetchResult *frep = &fre;
    fre.topic = "orders";
    fre.records_bytes = (uint32_t)b1.len;
    fres.n_results = 1;
    fres.results = &frep;
    env.body_case = VERITY__ENVELOPE__BODY_FETCH_RESP;
    env.fetch_resp = &fres;
    rc |= frame(dir, "fetch_resp", &env, payload, b1.len);

    rc |= write_file(dir, "batch", b1.buf, b1.len, NULL, 0);
    rc |= write_file(dir, "batch_keyed", b2.buf, b2.len, NULL, 0);
    uint8_t bad[16] = {0, 0, 0, 12, 0, 0, 0, 8, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
    rc |= write_file(dir, "garbage_envelope", bad, sizeof bad, NULL, 0);
    batch_builder_deinit(&b1);
    batch_builder_deinit(&b2);
    return rc ? 1 : 0;
}
