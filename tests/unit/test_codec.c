/*
 * Frame codec (proto/codec.c): prefix parsing and its limits, encode/decode
 * round trips, the capped decode allocator, request and response
 * validation (payload accounting, names, counts, versions), the error-code
 * mapping, and the blocking fd helpers over a socketpair.
 */
#include <CUnit/Basic.h>
#include <CUnit/CUnit.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "proto/codec.h"
#include "storage/batch.h"
#include "verity/errors.h"
#include "verity/limits.h"

static void put_be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

static void test_peek_needs_eight_bytes(void)
{
    uint8_t p[8];
    struct codec_frame f;
    put_be32(p, 100);
    put_be32(p + 4, 10);
    for (size_t n = 0; n < 8; n++)
        CU_ASSERT_EQUAL(codec_frame_peek(p, n, NULL, &f), 1);
    CU_ASSERT_EQUAL(codec_frame_peek(p, 8, NULL, &f), 0);
    CU_ASSERT_EQUAL(f.frame_length, 100);
    CU_ASSERT_EQUAL(f.envelope_length, 10);
    CU_ASSERT_EQUAL(f.payload_length, 86);
    CU_ASSERT_EQUAL(f.total, 104);
}

static void test_peek_rejects_over_limit_from_four_bytes(void)
{
    uint8_t p[8] = {0};
    struct codec_frame f;
    put_be32(p, VERITY_FRAME_BYTES_MAX + 1);
    CU_ASSERT_EQUAL(codec_frame_peek(p, 4, NULL, &f), VERITY_ELIMIT);
    put_be32(p, VERITY_FRAME_BYTES_MAX);
    put_be32(p + 4, 0);
    CU_ASSERT_EQUAL(codec_frame_peek(p, 8, NULL, &f), 0);
    struct codec_limits lim;
    codec_limits_default(&lim);
    lim.frame_bytes_max = 1000;
    put_be32(p, 1001);
    CU_ASSERT_EQUAL(codec_frame_peek(p, 8, &lim, &f), VERITY_ELIMIT);
    put_be32(p, 0xffffffffu);
    CU_ASSERT_EQUAL(codec_frame_peek(p, 8, NULL, &f), VERITY_ELIMIT);
}

static void test_peek_rejects_inconsistent_lengths(void)
{
    uint8_t p[8];
    struct codec_frame f;
    put_be32(p, 3);
    CU_ASSERT_EQUAL(codec_frame_peek(p, 8, NULL, &f), VERITY_EPROTO);
    put_be32(p, 20);
    put_be32(p + 4, 17);
    CU_ASSERT_EQUAL(codec_frame_peek(p, 8, NULL, &f), VERITY_EPROTO);
    put_be32(p + 4, 16);
    CU_ASSERT_EQUAL(codec_frame_peek(p, 8, NULL, &f), 0);
    CU_ASSERT_EQUAL(f.payload_length, 0);
    struct codec_limits lim;
    codec_limits_default(&lim);
    lim.envelope_bytes_max = 8;
    CU_ASSERT_EQUAL(codec_frame_peek(p, 8, &lim, &f), VERITY_ELIMIT);
}

/* A produce request for two batches of a and b bytes. */
static void produce_env(Verity__Envelope *env, Verity__ProduceRequest *pr, Verity__ProduceBatch *pb,
                        Verity__ProduceBatch **pbp, uint32_t a, uint32_t b)
{
    verity__envelope__init(env);
    verity__produce_request__init(pr);
    for (int i = 0; i < 2; i++) {
        verity__produce_batch__init(&pb[i]);
        pb[i].topic = "orders";
        pb[i].partition = (uint32_t)i;
        pbp[i] = &pb[i];
    }
    pb[0].batch_bytes = a;
    pb[1].batch_bytes = b;
    pr->n_batches = 2;
    pr->batches = pbp;
    env->version = CODEC_PROTOCOL_VERSION;
    env->correlation_id = 0x1234567890ull;
    env->body_case = VERITY__ENVELOPE__BODY_PRODUCE_REQ;
    env->produce_req = pr;
}

static void test_encode_decode_round_trip(void)
{
    Verity__Envelope env;
    Verity__ProduceRequest pr;
    Verity__ProduceBatch pb[2], *pbp[2];
    produce_env(&env, &pr, pb, pbp, 200, 300);
    uint8_t *head;
    size_t len;
    CU_ASSERT_EQUAL_FATAL(codec_encode(&env, 500, NULL, &head, &len), 0);
    struct codec_frame f;
    CU_ASSERT_EQUAL_FATAL(codec_frame_peek(head, len, NULL, &f), 0);
    CU_ASSERT_EQUAL(f.envelope_length, len - CODEC_PREFIX_SIZE);
    CU_ASSERT_EQUAL(f.payload_length, 500);
    CU_ASSERT_EQUAL(f.total, len + 500);
    struct codec_msg *m;
    CU_ASSERT_EQUAL_FATAL(codec_decode(head + CODEC_PREFIX_SIZE, f.envelope_length, NULL, &m), 0);
    CU_ASSERT_EQUAL(m->env->correlation_id, 0x1234567890ull);
    CU_ASSERT_EQUAL_FATAL(m->env->body_case, VERITY__ENVELOPE__BODY_PRODUCE_REQ);
    CU_ASSERT_EQUAL_FATAL(m->env->produce_req->n_batches, 2);
    CU_ASSERT_STRING_EQUAL(m->env->produce_req->batches[1]->topic, "orders");
    CU_ASSERT_EQUAL(m->env->produce_req->batches[1]->batch_bytes, 300);
    CU_ASSERT(m->used > 0 && m->used <= m->cap);
    char msg[200];
    CU_ASSERT_EQUAL(codec_validate_request(m->env, 500, NULL, msg, sizeof msg), 0);
    CU_ASSERT_EQUAL(codec_validate_request(m->env, 499, NULL, msg, sizeof msg), VERITY_EPROTO);
    CU_ASSERT_PTR_NOT_NULL(strstr(msg, "payload"));
    codec_msg_free(m);
    free(head);
}

static void test_encode_refuses_frame_over_limit(void)
{
    Verity__Envelope env = VERITY__ENVELOPE__INIT;
    env.version = 1;
    uint8_t *head = NULL;
    size_t len = 0;
    CU_ASSERT_EQUAL(codec_encode(&env, VERITY_FRAME_BYTES_MAX, NULL, &head, &len), VERITY_ELIMIT);
    CU_ASSERT_PTR_NULL(head);
    CU_ASSERT_EQUAL(codec_encode(&env, VERITY_FRAME_BYTES_MAX - 64, NULL, &head, &len), 0);
    free(head);
}

static void test_decode_rejects_garbage(void)
{
    static const uint8_t junk[][8] = {
        {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, /* endless varint */
        {0x0a, 0x7f, 0x01, 0x02, 0, 0, 0, 0},             /* length past the end */
        {0x07, 0, 0, 0, 0, 0, 0, 0},                      /* wire type 7 */
    };
    for (size_t i = 0; i < sizeof junk / sizeof junk[0]; i++) {
        struct codec_msg *m = (struct codec_msg *)1;
        CU_ASSERT_EQUAL(codec_decode(junk[i], sizeof junk[i], NULL, &m), VERITY_EPROTO);
        CU_ASSERT_PTR_NULL(m);
    }
}

static void test_decode_caps_allocation(void)
{
    /* 3000 empty ProduceBatch entries: 6 bytes each on the wire, far more
     * once decoded. */
    Verity__ProduceRequest pr = VERITY__PRODUCE_REQUEST__INIT;
    Verity__ProduceBatch *pb = calloc(3000, sizeof *pb);
    Verity__ProduceBatch **pbp = calloc(3000, sizeof *pbp);
    CU_ASSERT_PTR_NOT_NULL_FATAL(pb);
    CU_ASSERT_PTR_NOT_NULL_FATAL(pbp);
    for (int i = 0; i < 3000; i++) {
        verity__produce_batch__init(&pb[i]);
        pb[i].topic = "t";
        pbp[i] = &pb[i];
    }
    pr.n_batches = 3000;
    pr.batches = pbp;
    Verity__Envelope env = VERITY__ENVELOPE__INIT;
    env.version = 1;
    env.body_case = VERITY__ENVELOPE__BODY_PRODUCE_REQ;
    env.produce_req = &pr;
    uint8_t *head;
    size_t len;
    CU_ASSERT_EQUAL_FATAL(codec_encode(&env, 0, NULL, &head, &len), 0);
    struct codec_limits lim;
    codec_limits_default(&lim);
    lim.decode_alloc_max = 4 * (len - CODEC_PREFIX_SIZE);
    struct codec_msg *m = NULL;
    CU_ASSERT_EQUAL(codec_decode(head + CODEC_PREFIX_SIZE, len - CODEC_PREFIX_SIZE, &lim, &m),
                    VERITY_ELIMIT);
    CU_ASSERT_PTR_NULL(m);
    CU_ASSERT_EQUAL(codec_decode(head + CODEC_PREFIX_SIZE, len - CODEC_PREFIX_SIZE, NULL, &m), 0);
    CU_ASSERT_PTR_NOT_NULL_FATAL(m);
    CU_ASSERT(m->used > lim.decode_alloc_max);
    codec_msg_free(m);
    lim.envelope_bytes_max = (uint32_t)(len - CODEC_PREFIX_SIZE - 1);
    CU_ASSERT_EQUAL(codec_decode(head + CODEC_PREFIX_SIZE, len - CODEC_PREFIX_SIZE, &lim, &m),
                    VERITY_ELIMIT);
    free(head);
    free(pb);
    free(pbp);
}

static void test_validate_request_rules(void)
{
    Verity__Envelope env;
    Verity__ProduceRequest pr;
    Verity__ProduceBatch pb[2], *pbp[2];
    char msg[200];
    produce_env(&env, &pr, pb, pbp, 200, 300);
    CU_ASSERT_EQUAL(codec_validate_request(&env, 500, NULL, msg, sizeof msg), 0);
    env.version = 2;
    CU_ASSERT_EQUAL(codec_validate_request(&env, 500, NULL, msg, sizeof msg), VERITY_EVERSION);
    env.version = 1;
    pb[0].batch_bytes = BATCH_HDR_SIZE - 1;
    CU_ASSERT_EQUAL(codec_validate_request(&env, BATCH_HDR_SIZE - 1 + 300, NULL, msg, sizeof msg),
                    VERITY_EBADBATCH);
    pb[0].batch_bytes = VERITY_BATCH_BYTES_MAX + 1;
    CU_ASSERT_EQUAL(
        codec_validate_request(&env, VERITY_BATCH_BYTES_MAX + 301ull, NULL, msg, sizeof msg),
        VERITY_ELIMIT);
    CU_ASSERT_PTR_NOT_NULL(strstr(msg, "max_batch_bytes"));
    pb[0].batch_bytes = 200;
    pb[1].topic = "bad/name";
    CU_ASSERT_EQUAL(codec_validate_request(&env, 500, NULL, msg, sizeof msg), VERITY_EINVAL);
    pb[1].topic = "__internal";
    CU_ASSERT_EQUAL(codec_validate_request(&env, 500, NULL, msg, sizeof msg), VERITY_EINVAL);
    pb[1].topic = "orders";
    pr.n_batches = 0;
    CU_ASSERT_EQUAL(codec_validate_request(&env, 0, NULL, msg, sizeof msg), VERITY_EINVAL);

    /* A response in a request frame, an empty envelope, payload on a
     * request that carries none. */
    Verity__Envelope e2 = VERITY__ENVELOPE__INIT;
    Verity__HelloResponse hr = VERITY__HELLO_RESPONSE__INIT;
    e2.version = 1;
    CU_ASSERT_EQUAL(codec_validate_request(&e2, 0, NULL, msg, sizeof msg), VERITY_EPROTO);
    e2.body_case = VERITY__ENVELOPE__BODY_HELLO_RESP;
    e2.hello_resp = &hr;
    CU_ASSERT_EQUAL(codec_validate_request(&e2, 0, NULL, msg, sizeof msg), VERITY_EPROTO);
    Verity__ListTopicsRequest lt = VERITY__LIST_TOPICS_REQUEST__INIT;
    e2.body_case = VERITY__ENVELOPE__BODY_LIST_TOPICS_REQ;
    e2.list_topics_req = &lt;
    CU_ASSERT_EQUAL(codec_validate_request(&e2, 0, NULL, msg, sizeof msg), 0);
    CU_ASSERT_EQUAL(codec_validate_request(&e2, 1, NULL, msg, sizeof msg), VERITY_EPROTO);

    /* Counts above items_max name the limit. */
    struct codec_limits lim;
    codec_limits_default(&lim);
    lim.items_max = 1;
    produce_env(&env, &pr, pb, pbp, 200, 300);
    CU_ASSERT_EQUAL(codec_validate_request(&env, 500, &lim, msg, sizeof msg), VERITY_ELIMIT);
    CU_ASSERT_PTR_NOT_NULL(strstr(msg, "items_max"));

    /* Unknown enum values from the wire. */
    Verity__ListOffsetsRequest lo = VERITY__LIST_OFFSETS_REQUEST__INIT;
    Verity__ListOffsetsPartition lp = VERITY__LIST_OFFSETS_PARTITION__INIT;
    Verity__ListOffsetsPartition *lpp = &lp;
    lp.topic = "t";
    lp.spec = (Verity__OffsetSpec)7;
    lo.n_partitions = 1;
    lo.partitions = &lpp;
    e2.body_case = VERITY__ENVELOPE__BODY_LIST_OFFSETS_REQ;
    e2.list_offsets_req = &lo;
    CU_ASSERT_EQUAL(codec_validate_request(&e2, 0, NULL, msg, sizeof msg), VERITY_EINVAL);
    Verity__CreateTopicRequest ct = VERITY__CREATE_TOPIC_REQUEST__INIT;
    Verity__TopicConfig tc = VERITY__TOPIC_CONFIG__INIT;
    ct.name = "ok";
    ct.config = &tc;
    tc.durability = (Verity__Durability)9;
    e2.body_case = VERITY__ENVELOPE__BODY_CREATE_TOPIC_REQ;
    e2.create_topic_req = &ct;
    CU_ASSERT_EQUAL(codec_validate_request(&e2, 0, NULL, msg, sizeof msg), VERITY_EINVAL);
    tc.durability = VERITY__DURABILITY__DURABILITY_OS;
    tc.partitions = VERITY_PARTITIONS_MAX + 1;
    CU_ASSERT_EQUAL(codec_validate_request(&e2, 0, NULL, msg, sizeof msg), VERITY_ELIMIT);
    tc.partitions = 3;
    CU_ASSERT_EQUAL(codec_validate_request(&e2, 0, NULL, msg, sizeof msg), 0);
}

static void test_validate_response_fetch_accounting(void)
{
    Verity__FetchResult r[2], *rp[2] = {&r[0], &r[1]};
    Verity__FetchResponse fr = VERITY__FETCH_RESPONSE__INIT;
    verity__fetch_result__init(&r[0]);
    verity__fetch_result__init(&r[1]);
    r[0].records_bytes = 100;
    r[1].records_bytes = 50;
    fr.n_results = 2;
    fr.results = rp;
    Verity__Envelope env = VERITY__ENVELOPE__INIT;
    env.version = 1;
    env.body_case = VERITY__ENVELOPE__BODY_FETCH_RESP;
    env.fetch_resp = &fr;
    char msg[200];
    CU_ASSERT_EQUAL(codec_validate_response(&env, 150, NULL, msg, sizeof msg), 0);
    CU_ASSERT_EQUAL(codec_validate_response(&env, 151, NULL, msg, sizeof msg), VERITY_EPROTO);
    /* An error-only response is valid; an empty success is not. */
    Verity__Envelope e2 = VERITY__ENVELOPE__INIT;
    e2.version = 1;
    CU_ASSERT_EQUAL(codec_validate_response(&e2, 0, NULL, msg, sizeof msg), VERITY_EPROTO);
    e2.error = VERITY__ERROR_CODE__ERR_LIMIT;
    CU_ASSERT_EQUAL(codec_validate_response(&e2, 0, NULL, msg, sizeof msg), 0);
    e2.error = (Verity__ErrorCode)77;
    CU_ASSERT_EQUAL(codec_validate_response(&e2, 0, NULL, msg, sizeof msg), VERITY_EPROTO);
}

static void test_error_codes_map_both_ways(void)
{
    for (int e = VERITY_ECORRUPT; e > VERITY_ELAST; e--) {
        Verity__ErrorCode w = codec_err_to_wire(e);
        CU_ASSERT_EQUAL((int)w, -e - 4096);
        CU_ASSERT_EQUAL(codec_err_from_wire(w), e);
    }
    CU_ASSERT_EQUAL(codec_err_to_wire(0), VERITY__ERROR_CODE__ERR_NONE);
    CU_ASSERT_EQUAL(codec_err_to_wire(VERITY_ECORRUPT), VERITY__ERROR_CODE__ERR_CORRUPT);
    CU_ASSERT_EQUAL(codec_err_to_wire(VERITY_EFENCED), VERITY__ERROR_CODE__ERR_FENCED);
    CU_ASSERT_EQUAL(codec_err_to_wire(VERITY_EOUTOFORDER),
                    VERITY__ERROR_CODE__ERR_OUT_OF_ORDER_SEQUENCE);
    CU_ASSERT_EQUAL(codec_err_to_wire(-ENOSPC), VERITY__ERROR_CODE__ERR_NO_SPACE);
    CU_ASSERT_EQUAL(codec_err_from_wire(VERITY__ERROR_CODE__ERR_NO_SPACE), -ENOSPC);
    CU_ASSERT_EQUAL(codec_err_to_wire(-EIO), VERITY__ERROR_CODE__ERR_IO);
    CU_ASSERT_EQUAL(codec_err_to_wire(-EPERM), VERITY__ERROR_CODE__ERR_SYSTEM);
    CU_ASSERT_EQUAL(codec_err_from_wire((Verity__ErrorCode)99), VERITY_EPROTO);
}

static void test_topic_names(void)
{
    char longname[VERITY_TOPIC_NAME_MAX + 2];
    memset(longname, 'a', sizeof longname);
    longname[VERITY_TOPIC_NAME_MAX] = '\0';
    CU_ASSERT(codec_topic_name_ok(longname, false));
    longname[VERITY_TOPIC_NAME_MAX] = 'a';
    longname[VERITY_TOPIC_NAME_MAX + 1] = '\0';
    CU_ASSERT(!codec_topic_name_ok(longname, false));
    CU_ASSERT(codec_topic_name_ok("orders.v2_eu-west", false));
    CU_ASSERT(!codec_topic_name_ok("", false));
    CU_ASSERT(!codec_topic_name_ok(".", false));
    CU_ASSERT(!codec_topic_name_ok("..", true));
    CU_ASSERT(!codec_topic_name_ok("a/b", false));
    CU_ASSERT(!codec_topic_name_ok("a b", false));
    CU_ASSERT(!codec_topic_name_ok("__meta", false));
    CU_ASSERT(codec_topic_name_ok("__meta", true));
    CU_ASSERT(!codec_topic_name_ok(NULL, true));
}

static void test_body_table(void)
{
    CU_ASSERT(codec_is_request(VERITY__ENVELOPE__BODY_FETCH_REQ));
    CU_ASSERT(!codec_is_request(VERITY__ENVELOPE__BODY_FETCH_RESP));
    CU_ASSERT(codec_is_response(VERITY__ENVELOPE__BODY_FETCH_RESP));
    CU_ASSERT_EQUAL(codec_response_case(VERITY__ENVELOPE__BODY_PRODUCE_REQ),
                    VERITY__ENVELOPE__BODY_PRODUCE_RESP);
    CU_ASSERT_STRING_EQUAL(codec_body_name(VERITY__ENVELOPE__BODY_LIST_OFFSETS_REQ),
                           "list_offsets");
    CU_ASSERT_STRING_EQUAL(codec_body_name(VERITY__ENVELOPE__BODY__NOT_SET), "none");
}

static void test_fd_helpers_round_trip(void)
{
    int sv[2];
    CU_ASSERT_EQUAL_FATAL(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    Verity__Envelope env;
    Verity__ProduceRequest pr;
    Verity__ProduceBatch pb[2], *pbp[2];
    produce_env(&env, &pr, pb, pbp, 120, 130);
    uint8_t payload[250];
    for (size_t i = 0; i < sizeof payload; i++)
        payload[i] = (uint8_t)i;
    CU_ASSERT_EQUAL_FATAL(codec_fd_write(sv[0], &env, payload, sizeof payload, NULL), 0);
    struct codec_msg *m;
    uint8_t *pl;
    size_t pl_len;
    CU_ASSERT_EQUAL_FATAL(codec_fd_read(sv[1], NULL, 1000, &m, &pl, &pl_len), 0);
    CU_ASSERT_EQUAL(pl_len, sizeof payload);
    CU_ASSERT_EQUAL(memcmp(pl, payload, sizeof payload), 0);
    CU_ASSERT_EQUAL(m->env->produce_req->batches[0]->batch_bytes, 120);
    codec_msg_free(m);
    free(pl);
    /* Nothing to read: a timeout; then a closed peer. */
    CU_ASSERT_EQUAL(codec_fd_read(sv[1], NULL, 50, &m, &pl, &pl_len), VERITY_ETIMEOUT);
    /* A truncated frame then close: ECLOSED, nothing returned. */
    uint8_t half[6] = {0, 0, 0, 100, 0, 0};
    CU_ASSERT_EQUAL(write(sv[0], half, sizeof half), (ssize_t)sizeof half);
    close(sv[0]);
    CU_ASSERT_EQUAL(codec_fd_read(sv[1], NULL, 1000, &m, &pl, &pl_len), VERITY_ECLOSED);
    CU_ASSERT_PTR_NULL(m);
    close(sv[1]);
}

static void test_fd_read_rejects_oversized_prefix(void)
{
    int sv[2];
    CU_ASSERT_EQUAL_FATAL(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    uint8_t p[8];
    put_be32(p, VERITY_FRAME_BYTES_MAX + 5);
    put_be32(p + 4, 0);
    CU_ASSERT_EQUAL(write(sv[0], p, sizeof p), (ssize_t)sizeof p);
    struct codec_msg *m;
    uint8_t *pl;
    size_t pl_len;
    CU_ASSERT_EQUAL(codec_fd_read(sv[1], NULL, 1000, &m, &pl, &pl_len), VERITY_ELIMIT);
    close(sv[0]);
    close(sv[1]);
}

int main(void)
{
    static const struct {
        const char *name;
        void (*fn)(void);
    } tests[] = {
        {"peek_needs_eight_bytes", test_peek_needs_eight_bytes},
        {"peek_rejects_over_limit_from_four_bytes", test_peek_rejects_over_limit_from_four_bytes},
        {"peek_rejects_inconsistent_lengths", test_peek_rejects_inconsistent_lengths},
        {"encode_decode_round_trip", test_encode_decode_round_trip},
        {"encode_refuses_frame_over_limit", test_encode_refuses_frame_over_limit},
        {"decode_rejects_garbage", test_decode_rejects_garbage},
        {"decode_caps_allocation", test_decode_caps_allocation},
        {"validate_request_rules", test_validate_request_rules},
        {"validate_response_fetch_accounting", test_validate_response_fetch_accounting},
        {"error_codes_map_both_ways", test_error_codes_map_both_ways},
        {"topic_names", test_topic_names},
        {"body_table", test_body_table},
        {"fd_helpers_round_trip", test_fd_helpers_round_trip},
        {"fd_read_rejects_oversized_prefix", test_fd_read_rejects_oversized_prefix},
    };
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    CU_pSuite s = CU_add_suite("codec", NULL, NULL);
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
