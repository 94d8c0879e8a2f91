/*
 * The hashes every Verity client must compute identically (client/hash.c):
 * the partitioner and the idempotency key. The murmur2 values are Kafka's own
 * test vectors (clients.common.utils.UtilsTest#testMurmur2), so a key lands in
 * the partition Kafka would choose; the idempotency keys are the first 16
 * bytes of published SHA-256 digests.
 */
#include <CUnit/Basic.h>
#include <CUnit/CUnit.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "verity/verity.h"

struct vec {
    const char *key;
    int32_t murmur2;      /* as Kafka prints it (Java int) */
    uint32_t p4;          /* partition with 4 partitions */
    uint32_t p7;          /* partition with 7 partitions */
};

static const struct vec vecs[] = {
    {"21", -973932308, 0, 3},
    {"foobar", -790332482, 2, 0},
    {"a-little-bit-long-string", -985981536, 0, 1},
    {"a-little-bit-longer-string", -1486304829, 3, 0},
    {"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58897971, 1, 3},
    {"abc", 479470107, 3, 4},
    {"", 275646681, 1, 2},
};

static void test_murmur2_matches_kafka_vectors(void)
{
    for (size_t i = 0; i < sizeof vecs / sizeof vecs[0]; i++) {
        uint32_t h = verity_murmur2(vecs[i].key, strlen(vecs[i].key));
        CU_ASSERT_EQUAL((int32_t)h, vecs[i].murmur2);
    }
}

static void test_partition_is_positive_murmur2_mod_n(void)
{
    for (size_t i = 0; i < sizeof vecs / sizeof vecs[0]; i++) {
        const char *k = vecs[i].key;
        CU_ASSERT_EQUAL(verity_partition_for_key(k, strlen(k), 4), vecs[i].p4);
        CU_ASSERT_EQUAL(verity_partition_for_key(k, strlen(k), 7), vecs[i].p7);
        CU_ASSERT_EQUAL(verity_partition_for_key(k, strlen(k), 1), 0);
        uint32_t expect = ((uint32_t)vecs[i].murmur2 & 0x7fffffffu) % 1024u;
        CU_ASSERT_EQUAL(verity_partition_for_key(k, strlen(k), 1024), expect);
    }
}

static void test_murmur2_reads_every_tail_length(void)
{
    /* Lengths 0..8 exercise each tail case; flipping any byte must change
     * the hash (a tail byte ignored would not). */
    uint8_t buf[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    for (size_t len = 1; len <= sizeof buf; len++) {
        uint32_t h = verity_murmur2(buf, len);
        for (size_t i = 0; i < len; i++) {
            buf[i] ^= 0x80;
            CU_ASSERT_NOT_EQUAL(verity_murmur2(buf, len), h);
            buf[i] ^= 0x80;
        }
    }
}

static void hex16(const uint8_t *k, char *out)
{
    for (int i = 0; i < 16; i++)
        sprintf(out + 2 * i, "%02x", k[i]);
}

static void test_idempotency_key_is_truncated_sha256(void)
{
    uint8_t k[VERITY_IDEM_KEY_SIZE];
    char hex[33];
    verity_idempotency_key("abc", 3, k); /* FIPS 180-2 example */
    hex16(k, hex);
    CU_ASSERT_STRING_EQUAL(hex, "ba7816bf8f01cfea414140de5dae2223");
    verity_idempotency_key("", 0, k);
    hex16(k, hex);
    CU_ASSERT_STRING_EQUAL(hex, "e3b0c44298fc1c149afbf4c8996fb924");
    verity_idempotency_key("order-42", 8, k);
    hex16(k, hex);
    CU_ASSERT_STRING_EQUAL(hex, "3bf8b157c4238eefe5ae4a66eca81c6b");
}

static void test_broker_resolve_order(void)
{
    unsetenv(VERITY_BROKER_ENV);
    CU_ASSERT_STRING_EQUAL(verity_broker_resolve(NULL), VERITY_BROKER_DEFAULT);
    CU_ASSERT_STRING_EQUAL(verity_broker_resolve(""), VERITY_BROKER_DEFAULT);
    setenv(VERITY_BROKER_ENV, "10.0.0.1:1234", 1);
    CU_ASSERT_STRING_EQUAL(verity_broker_resolve(NULL), "10.0.0.1:1234");
    CU_ASSERT_STRING_EQUAL(verity_broker_resolve("h:1"), "h:1");
    unsetenv(VERITY_BROKER_ENV);
}

static void test_durability_names_round_trip(void)
{
    enum verity_durability d;
    const char *names[] = {"default", "always", "group", "os"};
    for (int i = 0; i < 4; i++) {
        CU_ASSERT_EQUAL(verity_durability_parse(names[i], &d), 0);
        CU_ASSERT_EQUAL((int)d, i);
        CU_ASSERT_STRING_EQUAL(verity_durability_name(d), names[i]);
    }
    CU_ASSERT_EQUAL(verity_durability_parse("sometimes", &d), VERITY_EINVAL);
    CU_ASSERT_EQUAL(verity_durability_parse(NULL, &d), VERITY_EINVAL);
}

int main(void)
{
    static const struct {
        const char *name;
        void (*fn)(void);
    } tests[] = {
        {"murmur2_matches_kafka_vectors", test_murmur2_matches_kafka_vectors},
        {"partition_is_positive_murmur2_mod_n", test_partition_is_positive_murmur2_mod_n},
        {"murmur2_reads_every_tail_length", test_murmur2_reads_every_tail_length},
        {"idempotency_key_is_truncated_sha256", test_idempotency_key_is_truncated_sha256},
        {"broker_resolve_order", test_broker_resolve_order},
        {"durability_names_round_trip", test_durability_names_round_trip},
    };
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    CU_pSuite s = CU_add_suite("client_hash", NULL, NULL);
    if (s == NULL)
        goto fail;
    for (size_t i = 0; i < sizeof(tests) / sizeof(tests[0]); i++)
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
