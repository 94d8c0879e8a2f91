/*
 * The metadata state codec (broker/meta_snap.c): the payload of meta.snap
 * and of a `__meta` state transfer. A round trip keeps every topic, every
 * producer epoch (the allocation high-water mark included) and the
 * auth_change store; every truncation, trailing byte or out-of-range field
 * is refused with VERITY_ECORRUPT and leaves nothing behind; no bit flip
 * crashes the decoder.
 */
#include <CUnit/Basic.h>
#include <CUnit/CUnit.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "broker/auth_store.h"
#include "broker/meta_snap.h"
#include "storage/batch.h"
#include "verity/errors.h"

static struct meta_topic_rec topic(const char *name, uint32_t parts, uint32_t replicas)
{
    struct meta_topic_rec r;
    memset(&r, 0, sizeof r);
    snprintf(r.name, sizeof r.name, "%s", name);
    r.cfg.partitions = parts;
    r.cfg.durability = TDUR_GROUP;
    r.cfg.retention_ms = 3600000;
    r.cfg.retention_bytes = -1;
    r.cfg.segment_bytes = 1u << 20;
    r.cfg.max_message_bytes = 1u << 16;
    r.cfg.replicas = replicas;
    r.created_ms = 1700000000000 + parts;
    return r;
}

/* An image of three topics, four producer ids (one never issued) and an
 * auth store with one ACL; the caller frees it. */
static void sample(struct meta_image *im)
{
    static const int16_t ep[] = {0, -1, 5, INT16_MAX};
    memset(im, 0, sizeof *im);
    im->topics = calloc(3, sizeof *im->topics);
    CU_ASSERT_PTR_NOT_NULL_FATAL(im->topics);
    im->topics[0] = topic("orders", 3, 3);
    im->topics[1] = topic("acme~audit", 1, 1);
    im->topics[2] = topic("t.x-y_z", 64, 5);
    im->topics[2].cfg.durability = TDUR_ALWAYS;
    im->n_topics = 3;
    im->epochs = malloc(sizeof ep);
    CU_ASSERT_PTR_NOT_NULL_FATAL(im->epochs);
    memcpy(im->epochs, ep, sizeof ep);
    im->n_producers = 4;
    const char *auth = "{\"version\": 1, \"acls\": [{\"tenant\": \"acme\", \"principal\": \"svc\","
                       " \"resource\": \"topic:orders*\", \"ops\": [\"produce\"],"
                       " \"effect\": \"allow\"}]}";
    char why[200];
    CU_ASSERT_EQUAL_FATAL(auth_store_parse(auth, strlen(auth), &im->auth, why, sizeof why), 0);
}

static void test_round_trip(void)
{
    struct meta_image a, b;
    uint8_t *buf = NULL;
    size_t len = 0;
    sample(&a);
    CU_ASSERT_EQUAL_FATAL(meta_image_encode(&a, &buf, &len), 0);
    CU_ASSERT_EQUAL_FATAL(meta_image_decode(buf, len, &b), 0);
    CU_ASSERT_EQUAL(b.n_topics, 3);
    for (size_t i = 0; i < 3 && i < b.n_topics; i++) {
        CU_ASSERT_STRING_EQUAL(b.topics[i].name, a.topics[i].name);
        CU_ASSERT_EQUAL(b.topics[i].cfg.partitions, a.topics[i].cfg.partitions);
        CU_ASSERT_EQUAL(b.topics[i].cfg.replicas, a.topics[i].cfg.replicas);
        CU_ASSERT_EQUAL(b.topics[i].cfg.durability, a.topics[i].cfg.durability);
        CU_ASSERT_EQUAL(b.topics[i].cfg.retention_ms, a.topics[i].cfg.retention_ms);
        CU_ASSERT_EQUAL(b.topics[i].cfg.retention_bytes, a.topics[i].cfg.retention_bytes);
        CU_ASSERT_EQUAL(b.topics[i].cfg.segment_bytes, a.topics[i].cfg.segment_bytes);
        CU_ASSERT_EQUAL(b.topics[i].cfg.max_message_bytes, a.topics[i].cfg.max_message_bytes);
        CU_ASSERT_EQUAL(b.topics[i].created_ms, a.topics[i].created_ms);
    }
    /* the high-water mark travels: the next new id is 5, even though id 2
     * was never issued */
    CU_ASSERT_EQUAL(b.n_producers, 4);
    CU_ASSERT_EQUAL(memcmp(b.epochs, a.epochs, 4 * sizeof *a.epochs), 0);
    CU_ASSERT_PTR_NOT_NULL_FATAL(b.auth);
    CU_ASSERT_EQUAL(b.auth->n_acls, 1);
    CU_ASSERT_TRUE(auth_allowed(b.auth, "acme", "svc", AUTH_RES_TOPIC, "orders-1",
                                AUTH_OP_PRODUCE, NULL, 0));
    CU_ASSERT_FALSE(auth_allowed(b.auth, "acme", "svc", AUTH_RES_TOPIC, "orders-1",
                                 AUTH_OP_CONSUME, NULL, 0));
    /* encoding again gives the same bytes */
    uint8_t *buf2 = NULL;
    size_t len2 = 0;
    CU_ASSERT_EQUAL_FATAL(meta_image_encode(&b, &buf2, &len2), 0);
    CU_ASSERT_EQUAL(len2, len);
    CU_ASSERT_EQUAL(memcmp(buf, buf2, len), 0);
    free(buf2);
    free(buf);
    meta_image_free(&a);
    meta_image_free(&b);
    /* the empty state */
    struct meta_image e;
    memset(&e, 0, sizeof e);
    CU_ASSERT_EQUAL_FATAL(meta_image_encode(&e, &buf, &len), 0);
    CU_ASSERT_EQUAL_FATAL(meta_image_decode(buf, len, &b), 0);
    CU_ASSERT_EQUAL(b.n_topics + b.n_producers, 0);
    CU_ASSERT_PTR_NULL(b.auth);
    free(buf);
    meta_image_free(&b);
}

static void test_truncation_and_trailing(void)
{
    struct meta_image a, b;
    uint8_t *buf = NULL;
    size_t len = 0;
    sample(&a);
    CU_ASSERT_EQUAL_FATAL(meta_image_encode(&a, &buf, &len), 0);
    /* without the auth section the image is whole (older snapshots) */
    size_t no_auth = 4 + get_le32(buf) + 8 + 2 * 4;
    for (size_t n = 0; n < len; n++) {
        int rc = meta_image_decode(buf, n, &b);
        if (n == no_auth) {
            CU_ASSERT_EQUAL(rc, 0);
            CU_ASSERT_PTR_NULL(b.auth);
            meta_image_free(&b);
        } else {
            CU_ASSERT_EQUAL(rc, VERITY_ECORRUPT);
            CU_ASSERT_PTR_NULL(b.topics);
            CU_ASSERT_PTR_NULL(b.epochs);
            CU_ASSERT_PTR_NULL(b.auth);
        }
    }
    uint8_t *more = malloc(len + 1);
    CU_ASSERT_PTR_NOT_NULL_FATAL(more);
    memcpy(more, buf, len);
    more[len] = 0;
    CU_ASSERT_EQUAL(meta_image_decode(more, len + 1, &b), VERITY_ECORRUPT);
    free(more);
    free(buf);
    meta_image_free(&a);
}

/* Encodes topics JSON text and a producer table by hand. */
static uint8_t *raw(const char *json, const int16_t *ep, uint64_t np, size_t *len)
{
    size_t j = strlen(json);
    *len = 4 + j + 8 + 2 * (size_t)np;
    uint8_t *b = malloc(*len);
    put_le32(b, (uint32_t)j);
    memcpy(b + 4, json, j);
    put_le64(b + 4 + j, np);
    for (uint64_t i = 0; i < np; i++)
        put_le16(b + 12 + j + 2 * i, (uint16_t)ep[i]);
    return b;
}

static void test_bad_fields(void)
{
#define T(extra)                                                                                 \
    "[{\"type\":\"create_topic\",\"name\":\"a\",\"partitions\":1,\"durability\":\"group\","   \
    "\"retention_ms\":-1,\"retention_bytes\":-1,\"segment_bytes\":4096,"                      \
    "\"max_message_bytes\":1024" extra "}]"
    static const char *const bad[] = {
        "{}",
        "[1]",
        "[{\"type\":\"delete_topic\",\"name\":\"a\"}]",
        T(",\"replicas\":2"),
        T(",\"replicas\":7"),
        "[{\"type\":\"create_topic\",\"name\":\"a\",\"partitions\":0,\"durability\":\"group\","
        "\"retention_ms\":-1,\"retention_bytes\":-1,\"segment_bytes\":4096,"
        "\"max_message_bytes\":1024}]",
        "[{\"type\":\"create_topic\",\"name\":\"a/b\",\"partitions\":1,\"durability\":\"group\","
        "\"retention_ms\":-1,\"retention_bytes\":-1,\"segment_bytes\":4096,"
        "\"max_message_bytes\":1024}]",
        "[{\"type\":\"create_topic\",\"name\":\"a\",\"partitions\":1,\"durability\":\"sometimes\","
        "\"retention_ms\":-1,\"retention_bytes\":-1,\"segment_bytes\":4096,"
        "\"max_message_bytes\":1024}]",
        "[{\"type\":\"create_topic\",\"name\":\"a\",\"partitions\":1,\"durability\":\"group\","
        "\"retention_ms\":-1,\"retention_bytes\":-1,\"segment_bytes\":100,"
        "\"max_message_bytes\":1024}]",
        /* one topic per name */
        "[{\"type\":\"create_topic\",\"name\":\"a\",\"partitions\":1,\"durability\":\"group\","
        "\"retention_ms\":-1,\"retention_bytes\":-1,\"segment_bytes\":4096,"
        "\"max_message_bytes\":1024},"
        "{\"type\":\"create_topic\",\"name\":\"a\",\"partitions\":2,\"durability\":\"group\","
        "\"retention_ms\":-1,\"retention_bytes\":-1,\"segment_bytes\":4096,"
        "\"max_message_bytes\":1024}]",
        "[{\"type\":\"create_topic\"",
    };
    struct meta_image b;
    size_t len;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        uint8_t *buf = raw(bad[i], NULL, 0, &len);
        CU_ASSERT_EQUAL(meta_image_decode(buf, len, &b), VERITY_ECORRUPT);
        CU_ASSERT_PTR_NULL(b.topics);
        free(buf);
    }
    /* the good record decodes, replicas 1/3/5 or absent */
    static const char *const good[] = {T(""), T(",\"replicas\":5")};
    for (size_t i = 0; i < 2; i++) {
        uint8_t *buf = raw(good[i], NULL, 0, &len);
        CU_ASSERT_EQUAL(meta_image_decode(buf, len, &b), 0);
        CU_ASSERT_EQUAL(b.n_topics, 1);
        meta_image_free(&b);
        free(buf);
    }
    /* epochs: -1 (not issued) .. INT16_MAX; -2 is refused */
    int16_t ep[] = {-1, 0, INT16_MAX, -2};
    uint8_t *buf = raw("[]", ep, 3, &len);
    CU_ASSERT_EQUAL(meta_image_decode(buf, len, &b), 0);
    CU_ASSERT_EQUAL(b.n_producers, 3);
    meta_image_free(&b);
    free(buf);
    buf = raw("[]", ep, 4, &len);
    CU_ASSERT_EQUAL(meta_image_decode(buf, len, &b), VERITY_ECORRUPT);
    CU_ASSERT_PTR_NULL(b.epochs);
    free(buf);
    /* a producer count past META_PRODUCER_ID_MAX, or past the bytes there */
    buf = raw("[]", NULL, 0, &len);
    put_le64(buf + 6, (uint64_t)META_PRODUCER_ID_MAX + 1);
    CU_ASSERT_EQUAL(meta_image_decode(buf, len, &b), VERITY_ECORRUPT);
    put_le64(buf + 6, 1);
    CU_ASSERT_EQUAL(meta_image_decode(buf, len, &b), VERITY_ECORRUPT);
    free(buf);
    /* an auth section that is not a store */
    buf = raw("[]", NULL, 0, &len);
    uint8_t *ab = malloc(len + 4 + 2);
    memcpy(ab, buf, len);
    put_le32(ab + len, 2);
    memcpy(ab + len + 4, "{}", 2);
    CU_ASSERT_EQUAL(meta_image_decode(ab, len + 6, &b), VERITY_ECORRUPT);
    CU_ASSERT_PTR_NULL(b.auth);
    free(ab);
    free(buf);
    /* encode refuses what would not decode */
    struct meta_image big;
    memset(&big, 0, sizeof big);
    big.n_producers = (uint64_t)META_PRODUCER_ID_MAX + 1;
    uint8_t *out = NULL;
    CU_ASSERT_EQUAL(meta_image_encode(&big, &out, &len), VERITY_EINVAL);
#undef T
}

static void test_bit_flips(void)
{
    struct meta_image a, b;
    uint8_t *buf = NULL;
    size_t len = 0;
    sample(&a);
    CU_ASSERT_EQUAL_FATAL(meta_image_encode(&a, &buf, &len), 0);
    size_t ok = 0, refused = 0;
    for (size_t i = 0; i < len; i++) {
        for (int bit = 0; bit < 8; bit += 3) {
            buf[i] ^= (uint8_t)(1u << bit);
            int rc = meta_image_decode(buf, len, &b);
            CU_ASSERT(rc == 0 || rc == VERITY_ECORRUPT);
            if (rc == 0) {
                ok++;
                meta_image_free(&b);
            } else {
                refused++;
            }
            buf[i] ^= (uint8_t)(1u << bit);
        }
    }
    CU_ASSERT(refused > 0);
    (void)ok;
    free(buf);
    meta_image_free(&a);
}

int main(void)
{
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    CU_pSuite s = CU_add_suite("meta_snap", NULL, NULL);
    CU_add_test(s, "round trip: topics, epochs and high-water mark, auth store", test_round_trip);
    CU_add_test(s, "every truncation and a trailing byte refused, nothing kept",
                test_truncation_and_trailing);
    CU_add_test(s, "out-of-range fields, duplicate names, bad epochs and auth refused",
                test_bad_fields);
    CU_add_test(s, "bit flips decode or are refused", test_bit_flips);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    unsigned fails = CU_get_number_of_failures();
    CU_cleanup_registry();
    return fails ? 1 : 0;
}
