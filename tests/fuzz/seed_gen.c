/*
 * Writes the seed corpus for fuzz_frame into the directory given as argv[1]:
 * well-formed frames of every request type (a Produce carrying real batches,
 * idempotent and keyed), the consumer-group requests, a GroupFetch response,
 * a response, a bare batch, and a few near misses.
 * Built and run by tests/fuzz/run.sh.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "broker/group/group.h"
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

/* Group-log records as fuzz_frame reads them: one selector byte (how many
 * records of its own log to apply first) then the record. */
static int group_seeds(const char *dir)
{
    struct group_state *st = NULL;
    if (group_state_new(1000, &st) || group_recover(st, 1000))
        return -1;
    struct group_config c;
    group_config_default(&c);
    snprintf(c.name, sizeof c.name, "g");
    c.n_topics = 1;
    snprintf(c.topics[0].name, sizeof c.topics[0].name, "orders");
    c.topics[0].partitions = 2;
    uint64_t start[2] = {0, 5}, t, m;
    const char *topics[] = {"orders"};
    uint64_t hwm[2] = {10, 12};
    struct group_delivery d[8];
    size_t n;
    int rc = 0;
    if (group_create(st, &c, start, 2, 1000, &t) ||
        group_join(st, "g", "m", topics, 1, 0, 1000, &m, &t) ||
        group_horizon(st, "g", 0, 20, 1000) ||
        group_fetch(st, "g", m, 8, hwm, 2, 1001, d, &n, &t) || n < 3 ||
        group_ack(st, "g", m, (struct group_ref[]){{d[0].pidx, d[0].offset}}, 1, 1002, &t) ||
        group_term(st, "g", m, (struct group_ref){d[2].pidx, d[2].offset}, "bad", 1002, &t))
        rc = -1;
    group_flush(st, 1003);
    const uint8_t *rec;
    size_t len;
    uint64_t seq;
    uint8_t k = 0;
    while (rc == 0 && group_next_record(st, &rec, &len, &seq)) {
        char name[32];
        snprintf(name, sizeof name, "grec_%u", k);
        rc |= write_file(dir, name, &k, 1, rec, len);
        k++;
    }
    group_state_free(st);
    return rc;
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

    Verity__CreateGroupRequest cg = VERITY__CREATE_GROUP_REQUEST__INIT;
    Verity__GroupConfig gc = VERITY__GROUP_CONFIG__INIT;
    Verity__GroupPosition gp = VERITY__GROUP_POSITION__INIT;
    Verity__GroupPartitionOffset gpo = VERITY__GROUP_PARTITION_OFFSET__INIT;
    Verity__GroupPartitionOffset *gpop = &gpo;
    char *gtopics[1] = {"orders"};
    int64_t backoff[2] = {0, 500};
    gc.mode = VERITY__GROUP_MODE__GROUP_MODE_SHARED;
    gc.n_topics = 1;
    gc.topics = gtopics;
    gc.lease_ms = 1000;
    gc.max_deliveries = 3;
    gc.n_backoff_ms = 2;
    gc.backoff_ms = backoff;
    gpo.topic = "orders";
    gpo.offset = 3;
    gp.start = VERITY__GROUP_START__GROUP_START_OFFSET;
    gp.n_offsets = 1;
    gp.offsets = &gpop;
    cg.group = "g";
    cg.config = &gc;
    cg.start = &gp;
    env.body_case = VERITY__ENVELOPE__BODY_CREATE_GROUP_REQ;
    env.create_group_req = &cg;
    rc |= frame(dir, "create_group", &env, NULL, 0);

    Verity__JoinGroupRequest jg = VERITY__JOIN_GROUP_REQUEST__INIT;
    jg.group = "g";
    jg.member_name = "m";
    jg.n_topics = 1;
    jg.topics = gtopics;
    env.body_case = VERITY__ENVELOPE__BODY_JOIN_GROUP_REQ;
    env.join_group_req = &jg;
    rc |= frame(dir, "join_group", &env, NULL, 0);

    Verity__GroupFetchRequest gf = VERITY__GROUP_FETCH_REQUEST__INIT;
    gf.group = "g";
    gf.member_id = 65536;
    gf.max_messages = 1000;
    gf.max_wait_ms = 100;
    env.body_case = VERITY__ENVELOPE__BODY_GROUP_FETCH_REQ;
    env.group_fetch_req = &gf;
    rc |= frame(dir, "group_fetch", &env, NULL, 0);

    Verity__AckRequest ak = VERITY__ACK_REQUEST__INIT;
    Verity__GroupAckRange ar = VERITY__GROUP_ACK_RANGE__INIT;
    Verity__GroupAckRange *arp = &ar;
    ar.topic = "orders";
    ar.first_offset = 3;
    ar.count = 4;
    ak.group = "g";
    ak.member_id = 65536;
    ak.n_ranges = 1;
    ak.ranges = &arp;
    ak.n_upto = 1;
    ak.upto = &gpop;
    env.body_case = VERITY__ENVELOPE__BODY_ACK_REQ;
    env.ack_req = &ak;
    rc |= frame(dir, "ack", &env, NULL, 0);

    Verity__NackRequest nk = VERITY__NACK_REQUEST__INIT;
    nk.group = "g";
    nk.member_id = 65536;
    nk.topic = "orders";
    nk.offset = 3;
    nk.delay_ms = -1;
    nk.error = "failed";
    env.body_case = VERITY__ENVELOPE__BODY_NACK_REQ;
    env.nack_req = &nk;
    rc |= frame(dir, "nack", &env, NULL, 0);

    Verity__ResetGroupRequest rg = VERITY__RESET_GROUP_REQUEST__INIT;
    rg.group = "g";
    rg.position = &gp;
    env.body_case = VERITY__ENVELOPE__BODY_RESET_GROUP_REQ;
    env.reset_group_req = &rg;
    rc |= frame(dir, "reset_group", &env, NULL, 0);

    Verity__GroupFetchResponse gfr = VERITY__GROUP_FETCH_RESPONSE__INIT;
    Verity__GroupFetchResult gres = VERITY__GROUP_FETCH_RESULT__INIT;
    Verity__GroupFetchResult *gresp = &gres;
    Verity__GroupDeliveryRange gdr = VERITY__GROUP_DELIVERY_RANGE__INIT;
    Verity__GroupDeliveryRange *gdrp = &gdr;
    gdr.first_offset = 1;
    gdr.count = 2;
    gdr.delivery_count = 1;
    gres.topic = "orders";
    gres.records_bytes = (uint32_t)b1.len;
    gres.n_ranges = 1;
    gres.ranges = &gdrp;
    gfr.n_results = 1;
    gfr.results = &gresp;
    gfr.messages = 2;
    env.body_case = VERITY__ENVELOPE__BODY_GROUP_FETCH_RESP;
    env.group_fetch_resp = &gfr;
    rc |= frame(dir, "group_fetch_resp", &env, payload, b1.len);

    rc |= group_seeds(dir);
    rc |= write_file(dir, "batch", b1.buf, b1.len, NULL, 0);
    rc |= write_file(dir, "batch_keyed", b2.buf, b2.len, NULL, 0);
    uint8_t bad[16] = {0, 0, 0, 12, 0, 0, 0, 8, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
    rc |= write_file(dir, "garbage_envelope", bad, sizeof bad, NULL, 0);
    batch_builder_deinit(&b1);
    batch_builder_deinit(&b2);
    return rc ? 1 : 0;
}
