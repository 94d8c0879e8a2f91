/*
 * CRC32C: both implementations against the published iSCSI vectors (RFC 3720
 * appendix B.4, plus the standard "123456789" check value), the hardware path
 * against the table path on random lengths and alignments, and incremental
 * computation over arbitrary splits.
 */
#include <CUnit/Basic.h>
#include <CUnit/CUnit.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "storage/crc32c.h"

typedef uint32_t (*crc_fn)(uint32_t, const void *, size_t);

/* xorshift64*: deterministic, seeded per test so failures replay. */
static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static uint64_t rng(void)
{
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 0x2545F4914F6CDD1Dull;
}

static int quick(void)
{
    const char *q = getenv("VERITY_TEST_QUICK");
    return q && *q == '1';
}

static void check_vectors(crc_fn f, const char *name)
{
    uint8_t buf[32];
    memset(buf, 0, sizeof buf);
    CU_ASSERT_EQUAL(f(0, buf, 32), 0x8A9136AAu);
    memset(buf, 0xff, sizeof buf);
    CU_ASSERT_EQUAL(f(0, buf, 32), 0x62A8AB43u);
    for (int i = 0; i < 32; i++)
        buf[i] = (uint8_t)i;
    CU_ASSERT_EQUAL(f(0, buf, 32), 0x46DD794Eu);
    for (int i = 0; i < 32; i++)
        buf[i] = (uint8_t)(31 - i);
    CU_ASSERT_EQUAL(f(0, buf, 32), 0x113FDB5Cu);
    CU_ASSERT_EQUAL(f(0, "123456789", 9), 0xE3069283u);
    CU_ASSERT_EQUAL(f(0, "", 0), 0u);
    /* One byte: 'a' -> 0xC1D04330 (same convention, checked independently). */
    CU_ASSERT_EQUAL(f(0, "a", 1), 0xC1D04330u);
    (void)name;
}

static void test_sw_matches_rfc3720_vectors(void) { check_vectors(crc32c_sw, "sw"); }

static void test_hw_matches_rfc3720_vectors(void)
{
    if (!crc32c_hw_available()) {
        printf("(no hardware CRC32C on this CPU; hw path not tested) ");
        return;
    }
    check_vectors(crc32c_hw, "hw");
}

static void test_dispatch_matches_rfc3720_vectors(void) { check_vectors(crc32c, "dispatch"); }

/* Every length 0..300 at every alignment 0..15, then random long buffers. */
static void test_hw_equals_sw_on_random_buffers(void)
{
    enum { CAP = 1 << 20 };
    uint8_t *buf = malloc(CAP + 16);
    CU_ASSERT_PTR_NOT_NULL_FATAL(buf);
    for (size_t i = 0; i < CAP + 16; i++)
        buf[i] = (uint8_t)rng();
    crc_fn other = crc32c_hw_available() ? crc32c_hw : crc32c;
    for (size_t align = 0; align < 16; align++)
        for (size_t len = 0; len <= 300; len++) {
            uint32_t seed = (uint32_t)rng();
            CU_ASSERT_EQUAL_FATAL(crc32c_sw(seed, buf + align, len), other(seed, buf + align, len));
        }
    /* Around the hardware path's three-block rounds (3 x 4096 bytes). */
    static const size_t edges[] = {12287, 12288, 12289, 12295, 24575, 24576, 24583, 36871};
    for (size_t e = 0; e < sizeof edges / sizeof edges[0]; e++)
        for (size_t align = 0; align < 9; align++) {
            uint32_t seed = (uint32_t)rng();
            CU_ASSERT_EQUAL_FATAL(crc32c_sw(seed, buf + align, edges[e]),
                                  other(seed, buf + align, edges[e]));
        }
    int rounds = quick() ? 50 : 500;
    for (int i = 0; i < rounds; i++) {
        size_t align = rng() % 16, len = rng() % CAP;
        CU_ASSERT_EQUAL_FATAL(crc32c_sw(0, buf + align, len), other(0, buf + align, len));
    }
    free(buf);
}

/* crc(a || b) == crc(crc(a), b) for any split, on both paths. */
static void test_incremental_equals_one_shot(void)
{
    enum { LEN = 4096 };
    uint8_t buf[LEN];
    for (size_t i = 0; i < LEN; i++)
        buf[i] = (uint8_t)rng();
    crc_fn fns[2] = {crc32c_sw, crc32c_hw_available() ? crc32c_hw : crc32c_sw};
    for (int k = 0; k < 2; k++) {
        uint32_t whole = fns[k](0, buf, LEN);
        for (size_t split = 0; split <= LEN; split += 1 + split / 8) {
            uint32_t c = fns[k](0, buf, split);
            CU_ASSERT_EQUAL_FATAL(fns[k](c, buf + split, LEN - split), whole);
        }
        /* Many small random pieces. */
        uint32_t c = 0;
        size_t pos = 0;
        while (pos < LEN) {
            size_t n = rng() % 37;
            if (n > LEN - pos)
                n = LEN - pos;
            c = fns[k](c, buf + pos, n);
            pos += n;
        }
        CU_ASSERT_EQUAL(c, whole);
    }
    /* The RFC vector computed in two halves. */
    CU_ASSERT_EQUAL(crc32c(crc32c(0, "1234", 4), "56789", 5), 0xE3069283u);
}

/* A single flipped bit always changes the CRC (CRC32C detects all 1-bit
 * errors); this is what batch validation relies on. */
static void test_single_bit_flip_changes_crc(void)
{
    uint8_t buf[512];
    for (size_t i = 0; i < sizeof buf; i++)
        buf[i] = (uint8_t)rng();
    uint32_t good = crc32c(0, buf, sizeof buf);
    for (size_t bit = 0; bit < sizeof buf * 8; bit++) {
        buf[bit / 8] ^= (uint8_t)(1u << (bit % 8));
        CU_ASSERT_NOT_EQUAL_FATAL(crc32c(0, buf, sizeof buf), good);
        buf[bit / 8] ^= (uint8_t)(1u << (bit % 8));
    }
}

int main(void)
{
    static const struct {
        const char *name;
        void (*fn)(void);
    } tests[] = {
        {"sw_matches_rfc3720_vectors", test_sw_matches_rfc3720_vectors},
        {"hw_matches_rfc3720_vectors", test_hw_matches_rfc3720_vectors},
        {"dispatch_matches_rfc3720_vectors", test_dispatch_matches_rfc3720_vectors},
        {"hw_equals_sw_on_random_buffers", test_hw_equals_sw_on_random_buffers},
        {"incremental_equals_one_shot", test_incremental_equals_one_shot},
        {"single_bit_flip_changes_crc", test_single_bit_flip_changes_crc},
    };
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    CU_pSuite s = CU_add_suite("crc32c", NULL, NULL);
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
