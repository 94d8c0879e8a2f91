/*
 * verityd behaviour over raw sockets: produce then fetch returns the stored
 * bytes (offsets and chain stamped, CRC intact); a long-poll fetch wakes
 * when a batch commits; ListOffsets (earliest, latest, by time); topic
 * describe, delete and re-create; idempotence (sequences and idempotency
 * keys) survives a kill -9 and restart; the admin HTTP endpoints; and the
 * connection limits (max_connections, max_inflight, idle timeout), each
 * answered with an error that names it.
 */
#include <CUnit/Basic.h>
#include <CUnit/CUnit.h>

#include "storage/verify.h"
#include "test_broker_util.h"

static struct bh H;

static int suite_init(void)
{
    if (bh_init(&H, "basic") || bh_start(&H, NULL))
        return -1;
    int fd = bh_connect(&H);
    if (fd < 0)
        return -1;
    int rc = bh_create_topic(&H, fd, "t", 2, VERITY__DURABILITY__DURABILITY_GROUP);
    close(fd);
    return rc;
}

static int suite_clean(void)
{
    bh_cleanup(&H);
    return 0;
}

struct fetched {
    int error;
    uint64_t hw;
    uint64_t next_offset;
    uint8_t *bytes;
    size_t len;
};

static int fetch(int fd, const char *topic, uint32_t part, uint64_t offset, uint32_t wait_ms,
                 uint32_t min_bytes, struct fetched *out)
{
    Verity__Envelope env = VERITY__ENVELOPE__INIT;
    Verity__FetchRequest q = VERITY__FETCH_REQUEST__INIT;
    Verity__FetchPartition fp = VERITY__FETCH_PARTITION__INIT;
    Verity__FetchPartition *fpp = &fp;
    fp.topic = (char *)topic;
    fp.partition = part;
    fp.offset = offset;
    q.n_partitions = 1;
    q.partitions = &fpp;
    q.max_wait_ms = wait_ms;
    q.min_bytes = min_bytes;
    env.body_case = VERITY__ENVELOPE__BODY_FETCH_REQ;
    env.fetch_req = &q;
    struct bh_resp r;
    memset(out, 0, sizeof *out);
    int rc = bh_call(&H, fd, &env, NULL, 0, &r);
    if (rc)
        return rc;
    const Verity__Envelope *e = r.msg->env;
    if (e->error || e->body_case != VERITY__ENVELOPE__BODY_FETCH_RESP ||
        e->fetch_resp->n_results != 1) {
        bh_resp_free(&r);
        return -1;
    }
    const Verity__FetchResult *f = e->fetch_resp->results[0];
    out->error = (int)f->error;
    out->hw = f->high_watermark;
    out->next_offset = f->next_offset;
    out->len = f->records_bytes;
    out->bytes = r.payload;
    r.payload = NULL;
    bh_resp_free(&r);
    return 0;
}

static void test_fetch_returns_stored_batches(void)
{
    int fd = bh_connect(&H);
    CU_ASSERT_FATAL(fd >= 0);
    uint8_t *b[3];
    size_t len[3];
    struct bh_produced p;
    uint64_t expect_base = 0;
    for (int i = 0; i < 3; i++) {
        CU_ASSERT_EQUAL_FATAL(bh_batch("f", 2 + (uint32_t)i, -1, -1, -1, NULL, &b[i], &len[i]), 0);
        CU_ASSERT_EQUAL_FATAL(bh_produce(&H, fd, "t", 0, b[i], len[i], &p), 0);
        CU_ASSERT_EQUAL(p.error, 0);
        CU_ASSERT_EQUAL(p.base_offset, expect_base);
        expect_base = p.last_offset + 1;
    }
    struct fetched f;
    CU_ASSERT_EQUAL_FATAL(fetch(fd, "t", 0, 3, 0, 0, &f), 0);
    CU_ASSERT_EQUAL(f.error, 0);
    CU_ASSERT_EQUAL(f.hw, 9);
    CU_ASSERT_EQUAL(f.next_offset, 9);
    /* Offset 3 lies in the second batch: batches 2 and 3 come back whole. */
    CU_ASSERT_EQUAL_FATAL(f.len, len[1] + len[2]);
    size_t pos = 0;
    uint8_t prev_chain[32];
    for (int i = 1; i < 3; i++) {
        const uint8_t *got = f.bytes + pos;
        struct batch_hdr h;
        CU_ASSERT_EQUAL_FATAL(batch_hdr_decode(got, len[i], &h), 0);
        CU_ASSERT_EQUAL(h.base_offset, i == 1 ? 2u : 5u);
        CU_ASSERT_EQUAL(batch_validate(got, len[i], NULL), 0);
        /* Apart from base offset and chain hash, the bytes are the client's. */
        CU_ASSERT_EQUAL(memcmp(got, b[i], BATCH_OFF_BASE_OFFSET), 0);
        CU_ASSERT_EQUAL(memcmp(got + BATCH_OFF_CRC, b[i] + BATCH_OFF_CRC, len[i] - BATCH_OFF_CRC),
                        0);
        if (i == 2) {
            uint8_t chain[32];
            batch_chain_compute(prev_chain, got, len[i], chain);
            CU_ASSERT_EQUAL(memcmp(chain, got + BATCH_OFF_CHAIN, 32), 0);
        }
        memcpy(prev_chain, got + BATCH_OFF_CHAIN, 32);
        pos += len[i];
    }
    free(f.bytes);
    /* At the high watermark: nothing, no error. Past it: ERR_OFFSET. */
    CU_ASSERT_EQUAL_FATAL(fetch(fd, "t", 0, 9, 0, 0, &f), 0);
    CU_ASSERT_EQUAL(f.error, 0);
    CU_ASSERT_EQUAL(f.len, 0);
    free(f.bytes);
    CU_ASSERT_EQUAL_FATAL(fetch(fd, "t", 0, 10, 0, 0, &f), 0);
    CU_ASSERT_EQUAL(f.error, VERITY__ERROR_CODE__ERR_OFFSET);
    free(f.bytes);
    for (int i = 0; i < 3; i++)
        free(b[i]);
    close(fd);
}

static void test_long_poll_wakes_on_commit(void)
{
    int a = bh_connect(&H), c = bh_connect(&H);
    CU_ASSERT_FATAL(a >= 0 && c >= 0);
    /* Ask partition 1 (empty) to wait up to 5 s for one byte. */
    Verity__Envelope env = VERITY__ENVELOPE__INIT;
    Verity__FetchRequest q = VERITY__FETCH_REQUEST__INIT;
    Verity__FetchPartition fp = VERITY__FETCH_PARTITION__INIT;
    Verity__FetchPartition *fpp = &fp;
    fp.topic = "t";
    fp.partition = 1;
    q.n_partitions = 1;
    q.partitions = &fpp;
    q.max_wait_ms = 5000;
    q.min_bytes = 1;
    env.version = 1;
    env.correlation_id = 4242;
    env.body_case = VERITY__ENVELOPE__BODY_FETCH_REQ;
    env.fetch_req = &q;
    CU_ASSERT_EQUAL_FATAL(codec_fd_write(a, &env, NULL, 0, NULL), 0);
    struct pollfd pf = {.fd = a, .events = POLLIN};
    CU_ASSERT_EQUAL(poll(&pf, 1, 200), 0); /* still waiting */
    int64_t t0 = bh_mono_ms();
    uint8_t *b;
    size_t len;
    struct bh_produced p;
    CU_ASSERT_EQUAL_FATAL(bh_batch("lp", 1, -1, -1, -1, NULL, &b, &len), 0);
    CU_ASSERT_EQUAL_FATAL(bh_produce(&H, c, "t", 1, b, len, &p), 0);
    CU_ASSERT_EQUAL(p.error, 0);
    struct codec_msg *m;
    uint8_t *pl;
    size_t n;
    CU_ASSERT_EQUAL_FATAL(codec_fd_read(a, NULL, BH_TIMEOUT_MS, &m, &pl, &n), 0);
    CU_ASSERT(bh_mono_ms() - t0 < 2000);
    CU_ASSERT_EQUAL(m->env->correlation_id, 4242);
    CU_ASSERT_EQUAL(n, len);
    CU_ASSERT_EQUAL(m->env->fetch_resp->results[0]->high_watermark, 1);
    codec_msg_free(m);
    free(pl);
    free(b);
    close(a);
    close(c);
}

static int list_offset(int fd, const char *topic, Verity__OffsetSpec spec, int64_t ts,
                       uint64_t *out)
{
    Verity__Envelope env = VERITY__ENVELOPE__INIT;
    Verity__ListOffsetsRequest q = VERITY__LIST_OFFSETS_REQUEST__INIT;
    Verity__ListOffsetsPartition lp = VERITY__LIST_OFFSETS_PARTITION__INIT;
    Verity__ListOffsetsPartition *lpp = &lp;
    lp.topic = (char *)topic;
    lp.spec = spec;
    lp.timestamp_ms = ts;
    q.n_partitions = 1;
    q.partitions = &lpp;
    env.body_case = VERITY__ENVELOPE__BODY_LIST_OFFSETS_REQ;
    env.list_offsets_req = &q;
    struct bh_resp r;
    int rc = bh_call(&H, fd, &env, NULL, 0, &r);
    if (rc)
        return rc;
    rc = (int)r.msg->env->list_offsets_resp->results[0]->error;
    *out = r.msg->env->list_offsets_resp->results[0]->offset;
    bh_resp_free(&r);
    return rc;
}

static void test_list_offsets(void)
{
    int fd = bh_connect(&H);
    CU_ASSERT_FATAL(fd >= 0);
    uint64_t off;
    CU_ASSERT_EQUAL(list_offset(fd, "t", VERITY__OFFSET_SPEC__OFFSET_EARLIEST, 0, &off), 0);
    CU_ASSERT_EQUAL(off, 0);
    CU_ASSERT_EQUAL(list_offset(fd, "t", VERITY__OFFSET_SPEC__OFFSET_LATEST, 0, &off), 0);
    CU_ASSERT_EQUAL(off, 9);
    CU_ASSERT_EQUAL(list_offset(fd, "t", VERITY__OFFSET_SPEC__OFFSET_TIMESTAMP, 0, &off), 0);
    CU_ASSERT_EQUAL(off, 0);
    CU_ASSERT_EQUAL(
        list_offset(fd, "t", VERITY__OFFSET_SPEC__OFFSET_TIMESTAMP, INT64_MAX / 2, &off), 0);
    CU_ASSERT_EQUAL(off, 9);
    CU_ASSERT_EQUAL(list_offset(fd, "nope", VERITY__OFFSET_SPEC__OFFSET_LATEST, 0, &off),
                    VERITY__ERROR_CODE__ERR_NOT_FOUND);
    close(fd);
}

static int describe(int fd, const char *name, uint32_t *parts)
{
    Verity__Envelope env = VERITY__ENVELOPE__INIT;
    Verity__DescribeTopicRequest q = VERITY__DESCRIBE_TOPIC_REQUEST__INIT;
    q.name = (char *)name;
    env.body_case = VERITY__ENVELOPE__BODY_DESCRIBE_TOPIC_REQ;
    env.describe_topic_req = &q;
    struct bh_resp r;
    int rc = bh_call(&H, fd, &env, NULL, 0, &r);
    if (rc)
        return rc;
    rc = (int)r.msg->env->error;
    if (rc == 0)
        *parts = (uint32_t)r.msg->env->describe_topic_resp->topic->n_partitions;
    bh_resp_free(&r);
    return rc;
}

static int delete_topic(int fd, const char *name)
{
    Verity__Envelope env = VERITY__ENVELOPE__INIT;
    Verity__DeleteTopicRequest q = VERITY__DELETE_TOPIC_REQUEST__INIT;
    q.name = (char *)name;
    env.body_case = VERITY__ENVELOPE__BODY_DELETE_TOPIC_REQ;
    env.delete_topic_req = &q;
    struct bh_resp r;
    int rc = bh_call(&H, fd, &env, NULL, 0, &r);
    if (rc)
        return rc;
    rc = (int)r.msg->env->error;
    bh_resp_free(&r);
    return rc;
}

static void test_topic_describe_delete_recreate(void)
{
    int fd = bh_connect(&H);
    CU_ASSERT_FATAL(fd >= 0);
    uint32_t parts = 0;
    CU_ASSERT_EQUAL(bh_create_topic(&H, fd, "gone", 3, VERITY__DURABILITY__DURABILITY_OS), 0);
    CU_ASSERT_EQUAL(bh_create_topic(&H, fd, "gone", 3, 0), VERITY__ERROR_CODE__ERR_EXISTS);
    CU_ASSERT_EQUAL(describe(fd, "gone", &parts), 0);
    CU_ASSERT_EQUAL(parts, 3);
    uint8_t *b;
    size_t len;
    struct bh_produced p;
    CU_ASSERT_EQUAL_FATAL(bh_batch("g", 4, -1, -1, -1, NULL, &b, &len), 0);
    CU_ASSERT_EQUAL(bh_produce(&H, fd, "gone", 2, b, len, &p), 0);
    CU_ASSERT_EQUAL(p.error, 0);
    CU_ASSERT_EQUAL(delete_topic(fd, "gone"), 0);
    CU_ASSERT_EQUAL(describe(fd, "gone", &parts), VERITY__ERROR_CODE__ERR_NOT_FOUND);
    CU_ASSERT_EQUAL(delete_topic(fd, "gone"), VERITY__ERROR_CODE__ERR_NOT_FOUND);
    char dir[512];
    snprintf(dir, sizeof dir, "%s/topics/gone", H.data);
    struct stat st;
    CU_ASSERT_NOT_EQUAL(stat(dir, &st), 0);
    /* A new topic of the same name starts empty. */
    CU_ASSERT_EQUAL(bh_create_topic(&H, fd, "gone", 1, 0), 0);
    CU_ASSERT_EQUAL(bh_produce(&H, fd, "gone", 0, b, len, &p), 0);
    CU_ASSERT_EQUAL(p.error, 0);
    CU_ASSERT_EQUAL(p.base_offset, 0);
    free(b);
    close(fd);
}

static void test_idempotence_survives_kill_and_restart(void)
{
    int fd = bh_connect(&H);
    CU_ASSERT_FATAL(fd >= 0);
    int64_t pid = 0;
    int epoch = 0;
    CU_ASSERT_EQUAL_FATAL(bh_init_producer(&H, fd, 0, &pid, &epoch), 0);
    uint8_t *seq_b[3], *key_b;
    size_t seq_len[3], key_len;
    struct bh_produced p, first[3], kfirst;
    for (int i = 0; i < 3; i++) {
        CU_ASSERT_EQUAL_FATAL(bh_batch("s", 2, pid, epoch, 2 * i, NULL, &seq_b[i], &seq_len[i]), 0);
        CU_ASSERT_EQUAL_FATAL(bh_produce(&H, fd, "t", 1, seq_b[i], seq_len[i], &first[i]), 0);
        CU_ASSERT_EQUAL(first[i].error, 0);
    }
    static const uint8_t key[16] = "job-42-attempt";
    CU_ASSERT_EQUAL_FATAL(bh_batch("k", 3, -1, -1, -1, key, &key_b, &key_len), 0);
    CU_ASSERT_EQUAL_FATAL(bh_produce(&H, fd, "t", 1, key_b, key_len, &kfirst), 0);
    CU_ASSERT_EQUAL(kfirst.error, 0);
    close(fd);

    CU_ASSERT_EQUAL_FATAL(bh_stop_sig(&H, SIGKILL), 128 + SIGKILL);
    CU_ASSERT_EQUAL_FATAL(bh_start(&H, NULL), 0);
    fd = bh_connect(&H);
    CU_ASSERT_FATAL(fd >= 0);
    /* Retries of each batch are duplicates with the original offsets. */
    for (int i = 0; i < 3; i++) {
        CU_ASSERT_EQUAL(bh_produce(&H, fd, "t", 1, seq_b[i], seq_len[i], &p), 0);
        CU_ASSERT_EQUAL(p.error, 0);
        CU_ASSERT_TRUE(p.duplicate);
        CU_ASSERT_EQUAL(p.base_offset, first[i].base_offset);
        CU_ASSERT_EQUAL(p.last_offset, first[i].last_offset);
    }
    CU_ASSERT_EQUAL(bh_produce(&H, fd, "t", 1, key_b, key_len, &p), 0);
    CU_ASSERT_EQUAL(p.error, 0);
    CU_ASSERT_TRUE(p.duplicate);
    CU_ASSERT_EQUAL(p.base_offset, kfirst.base_offset);
    /* The producer id and its next sequence survived too. */
    uint8_t *nb;
    size_t nlen;
    CU_ASSERT_EQUAL_FATAL(bh_batch("s", 1, pid, epoch, 6, NULL, &nb, &nlen), 0);
    CU_ASSERT_EQUAL(bh_produce(&H, fd, "t", 1, nb, nlen, &p), 0);
    CU_ASSERT_EQUAL(p.error, 0);
    CU_ASSERT_FALSE(p.duplicate);
    CU_ASSERT_EQUAL(p.base_offset, kfirst.last_offset + 1);
    free(nb);
    for (int i = 0; i < 3; i++)
        free(seq_b[i]);
    free(key_b);
    close(fd);
}

static void test_half_close_still_gets_answers(void)
{
    /* A client that sends its requests and shuts down its write side (as
     * scripts do) still reads every answer, then sees the close. */
    int fd = bh_connect(&H);
    CU_ASSERT_FATAL(fd >= 0);
    uint8_t *b;
    size_t len;
    CU_ASSERT_EQUAL_FATAL(bh_batch("half", 2, -1, -1, -1, NULL, &b, &len), 0);
    Verity__Envelope env = VERITY__ENVELOPE__INIT;
    Verity__ProduceRequest q = VERITY__PRODUCE_REQUEST__INIT;
    Verity__ProduceBatch pb = VERITY__PRODUCE_BATCH__INIT;
    Verity__ProduceBatch *pbp = &pb;
    pb.topic = "t";
    pb.batch_bytes = (uint32_t)len;
    q.n_batches = 1;
    q.batches = &pbp;
    env.version = 1;
    env.correlation_id = 77;
    env.body_case = VERITY__ENVELOPE__BODY_PRODUCE_REQ;
    env.produce_req = &q;
    CU_ASSERT_EQUAL_FATAL(codec_fd_write(fd, &env, b, len, NULL), 0);
    shutdown(fd, SHUT_WR);
    struct codec_msg *m;
    uint8_t *pl;
    size_t n;
    CU_ASSERT_EQUAL_FATAL(codec_fd_read(fd, NULL, BH_TIMEOUT_MS, &m, &pl, &n), 0);
    CU_ASSERT_EQUAL(m->env->correlation_id, 77);
    CU_ASSERT_EQUAL(m->env->produce_resp->results[0]->error, 0);
    codec_msg_free(m);
    free(pl);
    CU_ASSERT_TRUE(bh_wait_closed(fd, 3000));
    free(b);
    close(fd);
}

static void test_admin_http(void)
{
    char *s = bh_http_get(&H, "/health");
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    CU_ASSERT_PTR_NOT_NULL(strstr(s, "200"));
    free(s);
    s = bh_http_get(&H, "/ready");
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    CU_ASSERT_PTR_NOT_NULL(strstr(s, "200"));
    free(s);
    s = bh_http_get(&H, "/metrics");
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    CU_ASSERT_PTR_NOT_NULL(strstr(s, "verity_requests_total{type=\"produce\"}"));
    CU_ASSERT_PTR_NOT_NULL(strstr(s, "verity_request_duration_seconds_bucket{type=\"fetch\""));
    CU_ASSERT_PTR_NOT_NULL(strstr(s, "verity_fsync_duration_seconds_count"));
    CU_ASSERT_PTR_NOT_NULL(strstr(s, "verity_partition_end_offset{topic=\"t\",partition=\"1\"}"));
    CU_ASSERT_PTR_NOT_NULL(strstr(s, "verity_bytes_in_total"));
    free(s);
    s = bh_http_get(&H, "/v1/topics");
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    CU_ASSERT_PTR_NOT_NULL(strstr(s, "application/json"));
    CU_ASSERT_PTR_NOT_NULL(strstr(s, "\"name\": \"t\""));
    free(s);
    s = bh_http_get(&H, "/nope");
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    CU_ASSERT_PTR_NOT_NULL(strstr(s, "404"));
    free(s);
}

static void test_sigterm_then_logs_verify(void)
{
    CU_ASSERT_EQUAL(bh_stop_sig(&H, SIGTERM), 0);
    char dir[512];
    const char *dirs[] = {"topics/t/0", "topics/t/1", "topics/gone/0", "__meta"};
    for (size_t i = 0; i < sizeof dirs / sizeof dirs[0]; i++) {
        struct verify_report rep;
        snprintf(dir, sizeof dir, "%s/%s", H.data, dirs[i]);
        int rc = verify_log_dir(dir, NULL, NULL, NULL, &rep);
        if (rc)
            fprintf(stderr, "%s: %s\n", dir, rep.finding.reason);
        CU_ASSERT_EQUAL(rc, 0);
        CU_ASSERT(rep.checkpoints_unsigned + rep.checkpoints_verified > 0);
    }
}

/* Issue 16: answers are written by the connection's flush event in the pass
 * that made them; what the socket does not take stays with the bufferevent,
 * and a connection paused for write_buffer_bytes is left to it entirely.
 * A reader that pipelines fetches and reads nothing until all are sent gets
 * every answer whole and in order, through partial writes and a pause. */
static void test_slow_reader_gets_every_answer(void)
{
    struct bh S;
    CU_ASSERT_EQUAL_FATAL(bh_init(&S, "slowreader"), 0);
    const char *const args[] = {"--write-buffer-bytes", "65536", "--checkpoint-records", "0",
                                "--checkpoint-interval-ms", "0", NULL};
    CU_ASSERT_EQUAL_FATAL(bh_start(&S, args), 0);
    int fd = bh_connect(&S);
    CU_ASSERT_FATAL(fd >= 0);
    CU_ASSERT_EQUAL_FATAL(bh_create_topic(&S, fd, "s", 1, VERITY__DURABILITY__DURABILITY_OS), 0);
    size_t total = 0;
    uint64_t end = 0;
    for (int i = 0; i < 4; i++) {
        uint8_t *b;
        size_t len;
        struct bh_produced p;
        CU_ASSERT_EQUAL_FATAL(bh_batch("slow", 4000, -1, -1, -1, NULL, &b, &len), 0);
        CU_ASSERT_EQUAL_FATAL(bh_produce(&S, fd, "s", 0, b, len, &p), 0);
        CU_ASSERT_EQUAL(p.error, 0);
        end = p.last_offset + 1;
        total += len;
        free(b);
    }
    enum { N = 24 };
    for (int i = 0; i < N; i++) {
        Verity__Envelope env = VERITY__ENVELOPE__INIT;
        Verity__FetchRequest q = VERITY__FETCH_REQUEST__INIT;
        Verity__FetchPartition fp = VERITY__FETCH_PARTITION__INIT;
        Verity__FetchPartition *fpp = &fp;
        fp.topic = "s";
        q.n_partitions = 1;
        q.partitions = &fpp;
        env.version = 1;
        env.correlation_id = 1000 + (uint64_t)i;
        env.body_case = VERITY__ENVELOPE__BODY_FETCH_REQ;
        env.fetch_req = &q;
        CU_ASSERT_EQUAL_FATAL(codec_fd_write(fd, &env, NULL, 0, NULL), 0);
    }
    int whole = 0;
    for (int i = 0; i < N; i++) {
        struct codec_msg *m = NULL;
        uint8_t *pl = NULL;
        size_t n = 0;
        CU_ASSERT_EQUAL_FATAL(codec_fd_read(fd, NULL, BH_TIMEOUT_MS, &m, &pl, &n), 0);
        const Verity__Envelope *e = m->env;
        CU_ASSERT_EQUAL(e->correlation_id, 1000 + (uint64_t)i);
        if (e->error == 0 && e->body_case == VERITY__ENVELOPE__BODY_FETCH_RESP &&
            e->fetch_resp->n_results == 1 && e->fetch_resp->results[0]->records_bytes == total &&
            n == total && e->fetch_resp->results[0]->next_offset == end) {
            size_t pos = 0;
            int batches = 0;
            struct batch_hdr h;
            while (pos < n && batch_hdr_decode(pl + pos, n - pos, &h) == 0 &&
                   batch_validate(pl + pos, h.length, NULL) == 0) {
                pos += h.length;
                batches++;
            }
            if (pos == n && batches == 4)
                whole++;
        } else if (i == 0) {
            fprintf(stderr, "answer: error %d body %d bytes %zu of %zu\n", (int)e->error,
                    (int)e->body_case, n, total);
        }
        codec_msg_free(m);
        free(pl);
    }
    CU_ASSERT_EQUAL(whole, N);
    /* The connection still works after the pause. */
    CU_ASSERT_EQUAL(bh_list_topics(&S, fd), 1);
    close(fd);
    CU_ASSERT_EQUAL(bh_stop_sig(&S, SIGTERM), 0);
    bh_cleanup(&S);
}

/* ---- limits, on a broker of their own ---------------------------------------- */

static void test_limits_are_named(void)
{
    struct bh L;
    CU_ASSERT_EQUAL_FATAL(bh_init(&L, "limits"), 0);
    const char *const args[] = {
        "--max-connections", "3", "--max-inflight", "2", "--idle-timeout-ms", "300", NULL};
    CU_ASSERT_EQUAL_FATAL(bh_start(&L, args), 0);
    int fd = bh_connect(&L);
    CU_ASSERT_FATAL(fd >= 0);
    CU_ASSERT_EQUAL(bh_create_topic(&L, fd, "l", 1, 0), 0);

    /* max_inflight: five long-polls pipelined, the last three refused. */
    for (int i = 0; i < 5; i++) {
        Verity__Envelope env = VERITY__ENVELOPE__INIT;
        Verity__FetchRequest q = VERITY__FETCH_REQUEST__INIT;
        Verity__FetchPartition fp = VERITY__FETCH_PARTITION__INIT;
        Verity__FetchPartition *fpp = &fp;
        fp.topic = "l";
        q.n_partitions = 1;
        q.partitions = &fpp;
        q.max_wait_ms = 1000;
        q.min_bytes = 1;
        env.version = 1;
        env.correlation_id = 100 + (uint64_t)i;
        env.body_case = VERITY__ENVELOPE__BODY_FETCH_REQ;
        env.fetch_req = &q;
        CU_ASSERT_EQUAL_FATAL(codec_fd_write(fd, &env, NULL, 0, NULL), 0);
    }
    int limited = 0, waited = 0;
    for (int i = 0; i < 5; i++) {
        struct codec_msg *m;
        uint8_t *pl;
        size_t n;
        CU_ASSERT_EQUAL_FATAL(codec_fd_read(fd, NULL, BH_TIMEOUT_MS, &m, &pl, &n), 0);
        if (m->env->error == VERITY__ERROR_CODE__ERR_LIMIT) {
            limited++;
            CU_ASSERT_PTR_NOT_NULL(strstr(m->env->error_message, "max_inflight"));
        } else if (m->env->error == 0) {
            waited++;
        }
        codec_msg_free(m);
        free(pl);
    }
    CU_ASSERT_EQUAL(limited, 3);
    CU_ASSERT_EQUAL(waited, 2);

    /* max_connections: the fourth connection gets an error and is closed. */
    int c2 = bh_connect(&L), c3 = bh_connect(&L);
    CU_ASSERT(c2 >= 0 && c3 >= 0);
    CU_ASSERT_EQUAL(bh_list_topics(&L, c3), 1);
    int c4 = bh_connect(&L);
    CU_ASSERT_FATAL(c4 >= 0);
    struct codec_msg *m = NULL;
    uint8_t *pl;
    size_t n;
    CU_ASSERT_EQUAL(codec_fd_read(c4, NULL, BH_TIMEOUT_MS, &m, &pl, &n), 0);
    if (m) {
        CU_ASSERT_EQUAL(m->env->error, VERITY__ERROR_CODE__ERR_LIMIT);
        CU_ASSERT_PTR_NOT_NULL(strstr(m->env->error_message, "max_connections"));
        codec_msg_free(m);
        free(pl);
    }
    CU_ASSERT_TRUE(bh_wait_closed(c4, 2000));
    close(c4);

    /* idle_timeout_ms: a connection that never sends is closed. */
    CU_ASSERT_TRUE(bh_wait_closed(c2, 3000));
    close(c2);
    close(c3);
    close(fd);
    CU_ASSERT_EQUAL(bh_stop_sig(&L, SIGTERM), 0);
    bh_cleanup(&L);
}

int main(void)
{
    static const struct {
        const char *name;
        void (*fn)(void);
    } tests[] = {
        {"fetch_returns_stored_batches", test_fetch_returns_stored_batches},
        {"long_poll_wakes_on_commit", test_long_poll_wakes_on_commit},
        {"list_offsets", test_list_offsets},
        {"topic_describe_delete_recreate", test_topic_describe_delete_recreate},
        {"idempotence_survives_kill_and_restart", test_idempotence_survives_kill_and_restart},
        {"half_close_still_gets_answers", test_half_close_still_gets_answers},
        {"admin_http", test_admin_http},
        {"sigterm_then_logs_verify", test_sigterm_then_logs_verify},
        {"limits_are_named", test_limits_are_named},
        {"slow_reader_gets_every_answer", test_slow_reader_gets_every_answer},
    };
    signal(SIGPIPE, SIG_IGN);
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    CU_pSuite s = CU_add_suite("broker_basic", suite_init, suite_clean);
    if (!s)
        goto fail;
    for (size_t i = 0; i < sizeof tests / sizeof tests[0]; i++)
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
