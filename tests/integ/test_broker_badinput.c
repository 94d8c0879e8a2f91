/*
 * Bad input against a real verityd over raw sockets: a frame over the
 * limit, a truncated frame, garbage protobuf, payload accounting that does
 * not add up, an unsupported version, batches with a bad CRC, wrong magic
 * or an impossible record count, an unknown topic or partition, a fenced
 * producer epoch, a sequence gap. Each gets its typed error (framing errors:
 * an error frame, then a closed connection); after each, a second
 * connection proves the broker still serves reads and writes. At the end
 * the broker stops on SIGTERM with exit 0 and every log verifies offline.
 */
#include <CUnit/Basic.h>
#include <CUnit/CUnit.h>

#include "storage/verify.h"
#include "test_broker_util.h"

static struct bh H;
static int64_t g_pid;
static int g_epoch;
static int32_t g_seq;
static uint32_t g_alive_n;

#define TOPIC "bad"

static int suite_init(void)
{
    if (bh_init(&H, "badinput") || bh_start(&H, (const char *const[]){"--log-level", "info", NULL}))
        return -1;
    int fd = bh_connect(&H);
    if (fd < 0)
        return -1;
    int rc = bh_create_topic(&H, fd, TOPIC, 2, VERITY__DURABILITY__DURABILITY_ALWAYS);
    if (rc == 0)
        rc = bh_init_producer(&H, fd, 0, &g_pid, &g_epoch);
    close(fd);
    return rc;
}

static int suite_clean(void)
{
    bh_cleanup(&H);
    return 0;
}

/* A fresh connection can still list topics and append a batch. */
static void assert_alive(void)
{
    int fd = bh_connect(&H);
    CU_ASSERT_FATAL(fd >= 0);
    CU_ASSERT_EQUAL(bh_list_topics(&H, fd), 1);
    uint8_t key[16] = {0};
    uint8_t *b;
    size_t len;
    char text[32];
    int tl = snprintf(text, sizeof text, "alive-%u", ++g_alive_n);
    memcpy(key, text, (size_t)tl < sizeof key ? (size_t)tl : sizeof key);
    CU_ASSERT_EQUAL_FATAL(bh_batch("alive", 2, -1, -1, -1, key, &b, &len), 0);
    struct bh_produced p;
    CU_ASSERT_EQUAL(bh_produce(&H, fd, TOPIC, 1, b, len, &p), 0);
    CU_ASSERT_EQUAL(p.error, 0);
    CU_ASSERT_FALSE(p.duplicate);
    CU_ASSERT_EQUAL(p.last_offset, p.base_offset + 1);
    free(b);
    close(fd);
}

/* Reads one frame and expects a request-less error with code want. */
static void expect_error_frame(int fd, int want)
{
    struct codec_msg *m = NULL;
    uint8_t *pl = NULL;
    size_t pl_len = 0;
    int rc = codec_fd_read(fd, NULL, BH_TIMEOUT_MS, &m, &pl, &pl_len);
    CU_ASSERT_EQUAL(rc, 0);
    if (rc == 0) {
        CU_ASSERT_EQUAL(m->env->correlation_id, 0);
        CU_ASSERT_EQUAL((int)m->env->error, want);
        CU_ASSERT(m->env->error_message && m->env->error_message[0]);
        CU_ASSERT_EQUAL(m->env->body_case, VERITY__ENVELOPE__BODY__NOT_SET);
    }
    codec_msg_free(m);
    free(pl);
}

static void put_be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

static void test_good_batch_is_appended(void)
{
    int fd = bh_connect(&H);
    CU_ASSERT_FATAL(fd >= 0);
    uint8_t *b;
    size_t len;
    CU_ASSERT_EQUAL_FATAL(bh_batch("good", 3, g_pid, g_epoch, g_seq, NULL, &b, &len), 0);
    struct bh_produced p;
    CU_ASSERT_EQUAL(bh_produce(&H, fd, TOPIC, 0, b, len, &p), 0);
    CU_ASSERT_EQUAL(p.error, 0);
    CU_ASSERT_EQUAL(p.base_offset, 0);
    CU_ASSERT_EQUAL(p.last_offset, 2);
    /* The same batch again is a duplicate with the original offsets. */
    CU_ASSERT_EQUAL(bh_produce(&H, fd, TOPIC, 0, b, len, &p), 0);
    CU_ASSERT_EQUAL(p.error, 0);
    CU_ASSERT_TRUE(p.duplicate);
    CU_ASSERT_EQUAL(p.base_offset, 0);
    CU_ASSERT_EQUAL(p.last_offset, 2);
    g_seq += 3;
    free(b);
    close(fd);
}

static void test_frame_over_limit_gets_error_and_close(void)
{
    int fd = bh_connect(&H);
    CU_ASSERT_FATAL(fd >= 0);
    uint8_t prefix[8];
    put_be32(prefix, VERITY_FRAME_BYTES_MAX + 1);
    put_be32(prefix + 4, 16);
    CU_ASSERT_EQUAL(bh_write_all(fd, prefix, sizeof prefix), 0);
    /* Keep sending as a real oversized sender would; the broker discards. */
    uint8_t junk[65536];
    memset(junk, 0x5a, sizeof junk);
    for (int i = 0; i < 4; i++)
        (void)bh_write_all(fd, junk, sizeof junk);
    expect_error_frame(fd, VERITY__ERROR_CODE__ERR_LIMIT);
    shutdown(fd, SHUT_WR);
    CU_ASSERT_TRUE(bh_wait_closed(fd, BH_TIMEOUT_MS));
    close(fd);
    assert_alive();
}

static void test_malformed_prefix_gets_error_and_close(void)
{
    int fd = bh_connect(&H);
    CU_ASSERT_FATAL(fd >= 0);
    uint8_t prefix[8];
    put_be32(prefix, 20);
    put_be32(prefix + 4, 100); /* envelope longer than the frame */
    CU_ASSERT_EQUAL(bh_write_all(fd, prefix, sizeof prefix), 0);
    expect_error_frame(fd, VERITY__ERROR_CODE__ERR_PROTO);
    CU_ASSERT_TRUE(bh_wait_closed(fd, BH_TIMEOUT_MS));
    close(fd);
    assert_alive();
}

static void test_truncated_frame_then_close(void)
{
    int fd = bh_connect(&H);
    CU_ASSERT_FATAL(fd >= 0);
    uint8_t part[40];
    memset(part, 0, sizeof part);
    put_be32(part, 1000);
    put_be32(part + 4, 990);
    CU_ASSERT_EQUAL(bh_write_all(fd, part, sizeof part), 0);
    close(fd);
    usleep(50000);
    assert_alive();
    /* The same on a connection with a request in flight before it. */
    fd = bh_connect(&H);
    CU_ASSERT_FATAL(fd >= 0);
    CU_ASSERT_EQUAL(bh_list_topics(&H, fd), 1);
    CU_ASSERT_EQUAL(bh_write_all(fd, part, 6), 0);
    close(fd);
    usleep(50000);
    assert_alive();
}

static void test_garbage_protobuf_gets_proto_error(void)
{
    int fd = bh_connect(&H);
    CU_ASSERT_FATAL(fd >= 0);
    uint8_t frame[8 + 24];
    put_be32(frame, 4 + 24);
    put_be32(frame + 4, 24);
    for (int i = 0; i < 24; i++)
        frame[8 + i] = (uint8_t)(0xff - i * 3); /* unterminated varints, bad wire types */
    CU_ASSERT_EQUAL(bh_write_all(fd, frame, sizeof frame), 0);
    expect_error_frame(fd, VERITY__ERROR_CODE__ERR_PROTO);
    /* Framing is intact: the same connection keeps working. */
    CU_ASSERT_EQUAL(bh_list_topics(&H, fd), 1);
    close(fd);
    assert_alive();
}

static void test_envelope_without_request_gets_proto_error(void)
{
    int fd = bh_connect(&H);
    CU_ASSERT_FATAL(fd >= 0);
    Verity__Envelope env = VERITY__ENVELOPE__INIT;
    struct bh_resp r;
    CU_ASSERT_EQUAL_FATAL(bh_call(&H, fd, &env, NULL, 0, &r), 0);
    CU_ASSERT_EQUAL(r.msg->env->error, VERITY__ERROR_CODE__ERR_PROTO);
    bh_resp_free(&r);
    /* A response body sent as a request. */
    Verity__HelloResponse hr = VERITY__HELLO_RESPONSE__INIT;
    env.body_case = VERITY__ENVELOPE__BODY_HELLO_RESP;
    env.hello_resp = &hr;
    CU_ASSERT_EQUAL_FATAL(bh_call(&H, fd, &env, NULL, 0, &r), 0);
    CU_ASSERT_EQUAL(r.msg->env->error, VERITY__ERROR_CODE__ERR_PROTO);
    bh_resp_free(&r);
    close(fd);
    assert_alive();
}

static void test_wrong_version_gets_version_error(void)
{
    int fd = bh_connect(&H);
    CU_ASSERT_FATAL(fd >= 0);
    Verity__Envelope env = VERITY__ENVELOPE__INIT;
    Verity__ListTopicsRequest q = VERITY__LIST_TOPICS_REQUEST__INIT;
    env.version = 7;
    env.correlation_id = 99;
    env.body_case = VERITY__ENVELOPE__BODY_LIST_TOPICS_REQ;
    env.list_topics_req = &q;
    CU_ASSERT_EQUAL_FATAL(codec_fd_write(fd, &env, NULL, 0, NULL), 0);
    struct codec_msg *m;
    uint8_t *pl;
    size_t n;
    CU_ASSERT_EQUAL_FATAL(codec_fd_read(fd, NULL, BH_TIMEOUT_MS, &m, &pl, &n), 0);
    CU_ASSERT_EQUAL(m->env->correlation_id, 99);
    CU_ASSERT_EQUAL(m->env->error, VERITY__ERROR_CODE__ERR_VERSION);
    codec_msg_free(m);
    free(pl);
    /* Hello with no common version. */
    Verity__HelloRequest hq = VERITY__HELLO_REQUEST__INIT;
    hq.version_min = 2;
    hq.version_max = 5;
    env.body_case = VERITY__ENVELOPE__BODY_HELLO_REQ;
    env.hello_req = &hq;
    struct bh_resp r;
    CU_ASSERT_EQUAL_FATAL(bh_call(&H, fd, &env, NULL, 0, &r), 0);
    CU_ASSERT_EQUAL(r.msg->env->error, VERITY__ERROR_CODE__ERR_VERSION);
    bh_resp_free(&r);
    close(fd);
    assert_alive();
}

static void test_payload_accounting_mismatch_gets_proto_error(void)
{
    int fd = bh_connect(&H);
    CU_ASSERT_FATAL(fd >= 0);
    uint8_t *b;
    size_t len;
    CU_ASSERT_EQUAL_FATAL(bh_batch("acct", 1, -1, -1, -1, NULL, &b, &len), 0);
    Verity__Envelope env = VERITY__ENVELOPE__INIT;
    Verity__ProduceRequest q = VERITY__PRODUCE_REQUEST__INIT;
    Verity__ProduceBatch pb = VERITY__PRODUCE_BATCH__INIT;
    Verity__ProduceBatch *pbp = &pb;
    pb.topic = TOPIC;
    pb.batch_bytes = (uint32_t)len + 10; /* claims more than the payload holds */
    q.n_batches = 1;
    q.batches = &pbp;
    env.body_case = VERITY__ENVELOPE__BODY_PRODUCE_REQ;
    env.produce_req = &q;
    struct bh_resp r;
    CU_ASSERT_EQUAL_FATAL(bh_call(&H, fd, &env, b, len, &r), 0);
    CU_ASSERT_EQUAL(r.msg->env->error, VERITY__ERROR_CODE__ERR_PROTO);
    CU_ASSERT_PTR_NOT_NULL(strstr(r.msg->env->error_message, "payload"));
    bh_resp_free(&r);
    free(b);
    close(fd);
    assert_alive();
}

/* Produces a damaged copy of a good batch and expects want on the entry. */
static void produce_damaged(void (*damage)(uint8_t *b, size_t len), int want)
{
    int fd = bh_connect(&H);
    CU_ASSERT_FATAL(fd >= 0);
    uint8_t *b;
    size_t len;
    CU_ASSERT_EQUAL_FATAL(bh_batch("damaged", 4, -1, -1, -1, NULL, &b, &len), 0);
    damage(b, len);
    struct bh_produced p;
    CU_ASSERT_EQUAL(bh_produce(&H, fd, TOPIC, 0, b, len, &p), 0);
    CU_ASSERT_EQUAL(p.error, want);
    CU_ASSERT(p.message[0] != '\0');
    free(b);
    close(fd);
    assert_alive();
}

static void flip_record_byte(uint8_t *b, size_t len)
{
    b[len - 3] ^= 0x40;
}

static void wrong_magic(uint8_t *b, size_t len)
{
    (void)len;
    b[0] = 'X';
}

/* record_count far beyond what the bytes can hold, CRC recomputed so only
 * the count is wrong. */
static void impossible_count(uint8_t *b, size_t len)
{
    put_le32(b + 56, 1000000);
    put_le32(b + 60, 1000000 - 1);
    put_le32(b + 48, batch_crc_compute(b, len));
}

static void control_batch(uint8_t *b, size_t len)
{
    b[53] |= BATCH_ATTR_CONTROL;
    put_le32(b + 48, batch_crc_compute(b, len));
}

static void test_bad_crc_gets_corrupt(void)
{
    produce_damaged(flip_record_byte, VERITY__ERROR_CODE__ERR_CORRUPT);
}

static void test_wrong_magic_gets_corrupt(void)
{
    produce_damaged(wrong_magic, VERITY__ERROR_CODE__ERR_CORRUPT);
}

static void test_impossible_record_count_gets_corrupt(void)
{
    produce_damaged(impossible_count, VERITY__ERROR_CODE__ERR_CORRUPT);
}

static void test_control_batch_from_client_is_refused(void)
{
    produce_damaged(control_batch, VERITY__ERROR_CODE__ERR_BAD_BATCH);
}

static void test_unknown_topic_and_partition_get_not_found(void)
{
    int fd = bh_connect(&H);
    CU_ASSERT_FATAL(fd >= 0);
    uint8_t *b;
    size_t len;
    CU_ASSERT_EQUAL_FATAL(bh_batch("nowhere", 1, -1, -1, -1, NULL, &b, &len), 0);
    struct bh_produced p;
    CU_ASSERT_EQUAL(bh_produce(&H, fd, "no-such-topic", 0, b, len, &p), 0);
    CU_ASSERT_EQUAL(p.error, VERITY__ERROR_CODE__ERR_NOT_FOUND);
    CU_ASSERT_EQUAL(bh_produce(&H, fd, TOPIC, 7, b, len, &p), 0);
    CU_ASSERT_EQUAL(p.error, VERITY__ERROR_CODE__ERR_NOT_FOUND);
    CU_ASSERT_PTR_NOT_NULL(strstr(p.message, "partition"));
    free(b);
    close(fd);
    assert_alive();
}

static void test_fenced_epoch_gets_fenced(void)
{
    int fd = bh_connect(&H);
    CU_ASSERT_FATAL(fd >= 0);
    int64_t pid2 = 0;
    int epoch2 = 0;
    CU_ASSERT_EQUAL_FATAL(bh_init_producer(&H, fd, g_pid, &pid2, &epoch2), 0);
    CU_ASSERT_EQUAL(pid2, g_pid);
    CU_ASSERT_EQUAL(epoch2, g_epoch + 1);
    uint8_t *b;
    size_t len;
    struct bh_produced p;
    CU_ASSERT_EQUAL_FATAL(bh_batch("old", 1, g_pid, g_epoch, g_seq, NULL, &b, &len), 0);
    CU_ASSERT_EQUAL(bh_produce(&H, fd, TOPIC, 0, b, len, &p), 0);
    CU_ASSERT_EQUAL(p.error, VERITY__ERROR_CODE__ERR_FENCED);
    free(b);
    /* The new epoch starts at sequence 0 and is accepted. */
    g_epoch = epoch2;
    g_seq = 0;
    CU_ASSERT_EQUAL_FATAL(bh_batch("new", 1, g_pid, g_epoch, g_seq, NULL, &b, &len), 0);
    CU_ASSERT_EQUAL(bh_produce(&H, fd, TOPIC, 0, b, len, &p), 0);
    CU_ASSERT_EQUAL(p.error, 0);
    CU_ASSERT_FALSE(p.duplicate);
    g_seq++;
    free(b);
    /* An epoch the broker never issued is refused too. */
    CU_ASSERT_EQUAL_FATAL(bh_batch("future", 1, g_pid, g_epoch + 5, 0, NULL, &b, &len), 0);
    CU_ASSERT_EQUAL(bh_produce(&H, fd, TOPIC, 0, b, len, &p), 0);
    CU_ASSERT_EQUAL(p.error, VERITY__ERROR_CODE__ERR_INVALID);
    free(b);
    close(fd);
    assert_alive();
}

static void test_sequence_gap_gets_out_of_order(void)
{
    int fd = bh_connect(&H);
    CU_ASSERT_FATAL(fd >= 0);
    uint8_t *b;
    size_t len;
    struct bh_produced p;
    CU_ASSERT_EQUAL_FATAL(bh_batch("gap", 1, g_pid, g_epoch, g_seq + 3, NULL, &b, &len), 0);
    CU_ASSERT_EQUAL(bh_produce(&H, fd, TOPIC, 0, b, len, &p), 0);
    CU_ASSERT_EQUAL(p.error, VERITY__ERROR_CODE__ERR_OUT_OF_ORDER_SEQUENCE);
    free(b);
    /* An unknown producer id. */
    CU_ASSERT_EQUAL_FATAL(bh_batch("ghost", 1, 9999, 0, 0, NULL, &b, &len), 0);
    CU_ASSERT_EQUAL(bh_produce(&H, fd, TOPIC, 0, b, len, &p), 0);
    CU_ASSERT_EQUAL(p.error, VERITY__ERROR_CODE__ERR_NOT_FOUND);
    free(b);
    close(fd);
    assert_alive();
}

static void test_many_requests_in_flight_on_one_connection(void)
{
    /* 50 pipelined produces before reading any answer: every one answered,
     * matched by correlation id. */
    int fd = bh_connect(&H);
    CU_ASSERT_FATAL(fd >= 0);
    enum { N = 50 };
    uint8_t *b[N];
    size_t len[N];
    bool seen[N] = {false};
    for (int i = 0; i < N; i++) {
        uint8_t key[16] = {0};
        char text[32];
        int tl = snprintf(text, sizeof text, "pipe-%d", i);
        memcpy(key, text, (size_t)tl < sizeof key ? (size_t)tl : sizeof key);
        CU_ASSERT_EQUAL_FATAL(bh_batch("pipe", 1, -1, -1, -1, key, &b[i], &len[i]), 0);
        Verity__Envelope env = VERITY__ENVELOPE__INIT;
        Verity__ProduceRequest q = VERITY__PRODUCE_REQUEST__INIT;
        Verity__ProduceBatch pb = VERITY__PRODUCE_BATCH__INIT;
        Verity__ProduceBatch *pbp = &pb;
        pb.topic = TOPIC;
        pb.partition = 1;
        pb.batch_bytes = (uint32_t)len[i];
        q.n_batches = 1;
        q.batches = &pbp;
        env.version = 1;
        env.correlation_id = 1000 + (uint64_t)i;
        env.body_case = VERITY__ENVELOPE__BODY_PRODUCE_REQ;
        env.produce_req = &q;
        CU_ASSERT_EQUAL_FATAL(codec_fd_write(fd, &env, b[i], len[i], NULL), 0);
    }
    for (int i = 0; i < N; i++) {
        struct codec_msg *m;
        uint8_t *pl;
        size_t n;
        CU_ASSERT_EQUAL_FATAL(codec_fd_read(fd, NULL, BH_TIMEOUT_MS, &m, &pl, &n), 0);
        uint64_t c = m->env->correlation_id;
        CU_ASSERT_FATAL(c >= 1000 && c < 1000 + N);
        CU_ASSERT_FALSE(seen[c - 1000]);
        seen[c - 1000] = true;
        CU_ASSERT_EQUAL(m->env->error, 0);
        CU_ASSERT_EQUAL(m->env->produce_resp->results[0]->error, 0);
        codec_msg_free(m);
        free(pl);
    }
    for (int i = 0; i < N; i++)
        free(b[i]);
    close(fd);
    assert_alive();
}

static void verify_dir(const char *dir)
{
    struct verify_report rep;
    int rc = verify_log_dir(dir, NULL, NULL, NULL, &rep);
    if (rc)
        fprintf(stderr, "verify %s: %s (%s)\n", dir, verity_errname(rc),
                rep.found ? rep.finding.reason : "");
    CU_ASSERT_EQUAL(rc, 0);
    CU_ASSERT_FALSE(rep.found);
}

static void test_sigterm_exits_zero_and_logs_verify(void)
{
    CU_ASSERT_EQUAL(bh_stop_sig(&H, SIGTERM), 0);
    char dir[512];
    for (int p = 0; p < 2; p++) {
        snprintf(dir, sizeof dir, "%s/topics/%s/%d", H.data, TOPIC, p);
        verify_dir(dir);
    }
    snprintf(dir, sizeof dir, "%s/__meta", H.data);
    verify_dir(dir);
    /* Partition 0 holds the good batches only: 3 + 1 records plus the
     * checkpoints the log wrote; the damaged ones never reached it. */
    struct verify_report rep;
    snprintf(dir, sizeof dir, "%s/topics/%s/0", H.data, TOPIC);
    CU_ASSERT_EQUAL(verify_log_dir(dir, NULL, NULL, NULL, &rep), 0);
    CU_ASSERT_EQUAL(rep.records, 4);
}

int main(void)
{
    static const struct {
        const char *name;
        void (*fn)(void);
    } tests[] = {
        {"good_batch_is_appended", test_good_batch_is_appended},
        {"frame_over_limit_gets_error_and_close", test_frame_over_limit_gets_error_and_close},
        {"malformed_prefix_gets_error_and_close", test_malformed_prefix_gets_error_and_close},
        {"truncated_frame_then_close", test_truncated_frame_then_close},
        {"garbage_protobuf_gets_proto_error", test_garbage_protobuf_gets_proto_error},
        {"envelope_without_request_gets_proto_error",
         test_envelope_without_request_gets_proto_error},
        {"wrong_version_gets_version_error", test_wrong_version_gets_version_error},
        {"payload_accounting_mismatch_gets_proto_error",
         test_payload_accounting_mismatch_gets_proto_error},
        {"bad_crc_gets_corrupt", test_bad_crc_gets_corrupt},
        {"wrong_magic_gets_corrupt", test_wrong_magic_gets_corrupt},
        {"impossible_record_count_gets_corrupt", test_impossible_record_count_gets_corrupt},
        {"control_batch_from_client_is_refused", test_control_batch_from_client_is_refused},
        {"unknown_topic_and_partition_get_not_found",
         test_unknown_topic_and_partition_get_not_found},
        {"fenced_epoch_gets_fenced", test_fenced_epoch_gets_fenced},
        {"sequence_gap_gets_out_of_order", test_sequence_gap_gets_out_of_order},
        {"many_requests_in_flight_on_one_connection",
         test_many_requests_in_flight_on_one_connection},
        {"sigterm_exits_zero_and_logs_verify", test_sigterm_exits_zero_and_logs_verify},
    };
    signal(SIGPIPE, SIG_IGN);
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    CU_pSuite s = CU_add_suite("broker_badinput", suite_init, suite_clean);
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
