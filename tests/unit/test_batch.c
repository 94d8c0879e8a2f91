/*
 * Record batch format (storage/batch.h): golden bytes that pin the layout,
 * the chain hash rule, the rejection code for each kind of corruption, and
 * the iterator.
 *
 * The golden batch is built with the builder and compared byte for byte with
 * tests/fixtures/batch_v1.hex; header fields are also checked at their
 * documented offsets and the records against bytes written out here, so a
 * layout change fails this test even if someone regenerates the fixture.
 */
#include <CUnit/Basic.h>
#include <CUnit/CUnit.h>
#include <ctype.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "storage/batch.h"
#include "storage/crc32c.h"
#include "verity/errors.h"
#include "verity/limits.h"

#define TS0 1700000000000LL
#define FIXTURE "batch_v1.hex"

static const uint8_t idem_key[16] = {0xa0, 0xa1, 0xa2, 0xa3, 0xa4, 0xa5, 0xa6, 0xa7,
                                     0xa8, 0xa9, 0xaa, 0xab, 0xac, 0xad, 0xae, 0xaf};

/* The golden batch: two records with a key, a value and one header each. */
static struct batch_builder golden;

static int build_golden(struct batch_builder *b)
{
    struct batch_header_kv h0 = {(const uint8_t *)"h", 1, (const uint8_t *)"x0", 2};
    struct batch_header_kv h1 = {(const uint8_t *)"h", 1, (const uint8_t *)"x1", 2};
    struct batch_meta m = {.attributes = 0, .producer_id = 7, .producer_epoch = 1,
                           .base_sequence = 0, .idem_key = idem_key};
    if (batch_builder_init(b, 4096) || batch_builder_add(b, TS0, "key-0", 5, "value-0", 7, &h0, 1) ||
        batch_builder_add(b, TS0 + 5, "key-1", 5, "value-1", 7, &h1, 1) ||
        batch_builder_finish(b, &m))
        return -1;
    return 0;
}

/* Reads a hex fixture ('#' comments, whitespace ignored) into out. Returns
 * the byte count or -1. Looks in the working directory's tests/fixtures,
 * then next to this source file. */
static long fixture_read(const char *name, uint8_t *out, size_t cap)
{
    char path[512];
    FILE *f = NULL;
    const char *dirs[] = {"tests/fixtures", "../tests/fixtures", "../../tests/fixtures"};
    for (size_t i = 0; i < sizeof dirs / sizeof dirs[0] && !f; i++) {
        snprintf(path, sizeof path, "%s/%s", dirs[i], name);
        f = fopen(path, "r");
    }
    if (!f)
        return -1;
    size_t n = 0;
    int c, hi = -1;
    bool comment = false;
    while ((c = fgetc(f)) != EOF) {
        if (comment) {
            comment = c != '\n';
            continue;
        }
        if (c == '#') {
            comment = true;
            continue;
        }
        if (isspace(c))
            continue;
        if (!isxdigit(c) || n == cap) {
            fclose(f);
            return -1;
        }
        int v = isdigit(c) ? c - '0' : tolower(c) - 'a' + 10;
        if (hi < 0) {
            hi = v;
        } else {
            out[n++] = (uint8_t)(hi << 4 | v);
            hi = -1;
        }
    }
    fclose(f);
    return hi < 0 ? (long)n : -1;
}

/* Recomputes the CRC after a test edits covered bytes, so that the edit
 * itself, not the checksum, is what validation sees. */
static void recrc(uint8_t *b, size_t len) { put_le32(b + BATCH_OFF_CRC, batch_crc_compute(b, len)); }

static uint8_t *golden_copy(void)
{
    uint8_t *c = malloc(golden.len + 64);
    CU_ASSERT_PTR_NOT_NULL_FATAL(c);
    memcpy(c, golden.buf, golden.len);
    return c;
}

/* ---- golden bytes --------------------------------------------------------- */

static void test_golden_bytes_match_fixture(void)
{
    uint8_t fx[1024];
    long n = fixture_read(FIXTURE, fx, sizeof fx);
    CU_ASSERT_FATAL(n > 0);
    CU_ASSERT_EQUAL_FATAL((size_t)n, golden.len);
    for (size_t i = 0; i < golden.len; i++) {
        if (fx[i] != golden.buf[i]) {
            printf("\n  byte %zu: fixture %02x, built %02x\n", i, fx[i], golden.buf[i]);
            CU_FAIL("golden batch differs from tests/fixtures/" FIXTURE);
            break;
        }
    }
    CU_ASSERT_EQUAL(batch_validate(fx, (size_t)n, NULL), 0);
}

static void test_golden_header_fields_at_documented_offsets(void)
{
    const uint8_t *b = golden.buf;
    CU_ASSERT_EQUAL(BATCH_HDR_SIZE, 112);
    CU_ASSERT_EQUAL(golden.len, 160);
    CU_ASSERT(memcmp(b, "VRB1", 4) == 0);
    CU_ASSERT_EQUAL(get_le32(b + 4), 160);
    CU_ASSERT_EQUAL(get_le64(b + 8), 0);
    for (int i = 16; i < 48; i++)
        CU_ASSERT_EQUAL(b[i], 0);
    CU_ASSERT_EQUAL(get_le32(b + 48), 0x28639fe2u);
    CU_ASSERT_EQUAL(get_le32(b + 48), crc32c(0, b + 52, golden.len - 52));
    CU_ASSERT_EQUAL(b[52], 1);
    CU_ASSERT_EQUAL(b[53], BATCH_ATTR_IDEM_KEY);
    CU_ASSERT_EQUAL(get_le16(b + 54), 0);
    CU_ASSERT_EQUAL(get_le32(b + 56), 2);
    CU_ASSERT_EQUAL(get_le32(b + 60), 1);
    CU_ASSERT_EQUAL((int64_t)get_le64(b + 64), TS0);
    CU_ASSERT_EQUAL((int64_t)get_le64(b + 72), TS0 + 5);
    CU_ASSERT_EQUAL((int64_t)get_le64(b + 80), 7);
    CU_ASSERT_EQUAL((int16_t)get_le16(b + 88), 1);
    CU_ASSERT_EQUAL(get_le16(b + 90), 0);
    CU_ASSERT_EQUAL((int32_t)get_le32(b + 92), 0);
    CU_ASSERT(memcmp(b + 96, idem_key, 16) == 0);

    /* The records, written out from the layout in batch.h. */
    static const uint8_t rec0[] = {0x17, 0x00, 0x00, 0x00, 0x0a, 'k', 'e', 'y', '-', '0', 0x0e,
                                   'v', 'a', 'l', 'u', 'e', '-', '0', 0x01, 0x01, 'h', 0x04,
                                   'x', '0'};
    static const uint8_t rec1[] = {0x17, 0x00, 0x0a, 0x01, 0x0a, 'k', 'e', 'y', '-', '1', 0x0e,
                                   'v', 'a', 'l', 'u', 'e', '-', '1', 0x01, 0x01, 'h', 0x04,
                                   'x', '1'};
    CU_ASSERT(memcmp(b + 112, rec0, sizeof rec0) == 0);
    CU_ASSERT(memcmp(b + 136, rec1, sizeof rec1) == 0);

    /* The decoder reads the same fields. */
    struct batch_hdr h;
    CU_ASSERT_EQUAL_FATAL(batch_hdr_decode(b, golden.len, &h), 0);
    CU_ASSERT_EQUAL(h.length, 160);
    CU_ASSERT_EQUAL(h.record_count, 2);
    CU_ASSERT_EQUAL(h.producer_id, 7);
    CU_ASSERT_EQUAL(h.producer_epoch, 1);
    CU_ASSERT_EQUAL(h.base_sequence, 0);
    CU_ASSERT_EQUAL(h.first_timestamp, TS0);
    CU_ASSERT_EQUAL(h.max_timestamp, TS0 + 5);
    CU_ASSERT_EQUAL(h.attributes, BATCH_ATTR_IDEM_KEY);
    CU_ASSERT(memcmp(h.idem_key, idem_key, 16) == 0);
}

/* ---- chain hash ----------------------------------------------------------- */

static void sha256_parts(const uint8_t *a, size_t an, const uint8_t *b, size_t bn,
                         const uint8_t *c, size_t cn, uint8_t *out)
{
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    unsigned n = 0;
    CU_ASSERT_PTR_NOT_NULL_FATAL(ctx);
    EVP_DigestInit_ex(ctx, EVP_sha256(), NULL);
    EVP_DigestUpdate(ctx, a, an);
    EVP_DigestUpdate(ctx, b, bn);
    EVP_DigestUpdate(ctx, c, cn);
    EVP_DigestFinal_ex(ctx, out, &n);
    EVP_MD_CTX_free(ctx);
}

static void test_chain_of_golden_with_zero_prev_is_pinned(void)
{
    static const uint8_t want[32] = {
        0x38, 0xc4, 0xb0, 0xed, 0x94, 0x6f, 0xb0, 0x2a, 0x73, 0xa9, 0xe0, 0xde, 0x4b, 0xa9, 0xbe, 0x21,
        0x96, 0xe7, 0x27, 0x67, 0xce, 0x42, 0x98, 0x8c, 0xc9, 0x8c, 0x57, 0x70, 0x5a, 0x12, 0xa0, 0x36};
    uint8_t zero[32] = {0}, chain[32], independent[32];
    batch_chain_compute(zero, golden.buf, golden.len, chain);
    CU_ASSERT(memcmp(chain, want, 32) == 0);
    /* The rule written out: SHA-256(prev || bytes[0,16) || bytes[48,len)). */
    sha256_parts(zero, 32, golden.buf, 16, golden.buf + 48, golden.len - 48, independent);
    CU_ASSERT(memcmp(chain, independent, 32) == 0);
}

static void test_chain_covers_base_offset_and_prev_not_chain_field(void)
{
    uint8_t *b = golden_copy();
    uint8_t zero[32] = {0}, c0[32], c1[32], prev[32];
    batch_chain_compute(zero, b, golden.len, c0);
    /* Stamping the chain field does not change the hash (it is excluded). */
    batch_set_chain(b, c0);
    batch_chain_compute(zero, b, golden.len, c1);
    CU_ASSERT(memcmp(c0, c1, 32) == 0);
    /* The base offset is covered, and stamping it keeps the CRC valid. */
    batch_set_base_offset(b, 42);
    CU_ASSERT_EQUAL(get_le64(b + 8), 42);
    batch_chain_compute(zero, b, golden.len, c1);
    CU_ASSERT(memcmp(c0, c1, 32) != 0);
    CU_ASSERT_EQUAL(batch_validate(b, golden.len, NULL), 0);
    /* So is the previous chain. */
    batch_set_base_offset(b, 0);
    memset(prev, 0, 32);
    prev[31] = 1;
    batch_chain_compute(prev, b, golden.len, c1);
    CU_ASSERT(memcmp(c0, c1, 32) != 0);
    free(b);
}

/* ---- rejection codes ------------------------------------------------------ */

static void test_golden_validates(void) { CU_ASSERT_EQUAL(batch_validate(golden.buf, golden.len, NULL), 0); }

static void test_wrong_magic_is_corrupt(void)
{
    uint8_t *b = golden_copy();
    b[3] = '2';
    CU_ASSERT_EQUAL(batch_validate(b, golden.len, NULL), VERITY_ECORRUPT);
    struct batch_hdr h;
    CU_ASSERT_EQUAL(batch_hdr_decode(b, golden.len, &h), VERITY_ECORRUPT);
    free(b);
}

static void test_version_2_is_eversion(void)
{
    uint8_t *b = golden_copy();
    b[52] = 2;
    recrc(b, golden.len);
    CU_ASSERT_EQUAL(batch_validate(b, golden.len, NULL), VERITY_EVERSION);
    free(b);
}

static void test_bad_crc_is_corrupt(void)
{
    uint8_t *b = golden_copy();
    b[48] ^= 1;
    CU_ASSERT_EQUAL(batch_validate(b, golden.len, NULL), VERITY_ECORRUPT);
    b[48] ^= 1;
    b[golden.len - 1] ^= 0x80; /* a covered byte */
    CU_ASSERT_EQUAL(batch_validate(b, golden.len, NULL), VERITY_ECORRUPT);
    free(b);
}

static void test_length_mismatch_is_corrupt(void)
{
    uint8_t *b = golden_copy();
    b[golden.len] = 0;
    /* More bytes given than the header says. */
    CU_ASSERT_EQUAL(batch_validate(b, golden.len + 1, NULL), VERITY_ECORRUPT);
    /* Fewer. */
    CU_ASSERT_EQUAL(batch_validate(b, golden.len - 1, NULL), VERITY_ECORRUPT);
    /* Header says more than there is, CRC recomputed over what is there. */
    put_le32(b + 4, (uint32_t)golden.len + 1);
    recrc(b, golden.len);
    CU_ASSERT_EQUAL(batch_validate(b, golden.len, NULL), VERITY_ECORRUPT);
    /* Header length below the header size. */
    put_le32(b + 4, 100);
    CU_ASSERT_EQUAL(batch_validate(b, golden.len, NULL), VERITY_ECORRUPT);
    /* Fewer bytes than a header. */
    CU_ASSERT_EQUAL(batch_validate(b, 50, NULL), VERITY_ECORRUPT);
    free(b);
}

static void test_record_count_zero_or_impossible_is_corrupt(void)
{
    uint8_t *b = golden_copy();
    put_le32(b + 56, 0);
    put_le32(b + 60, 0);
    recrc(b, golden.len);
    CU_ASSERT_EQUAL(batch_validate(b, golden.len, NULL), VERITY_ECORRUPT);
    /* Huge, with a consistent last_offset_delta: more records than bytes. */
    put_le32(b + 56, 0xfffffff0u);
    put_le32(b + 60, 0xffffffefu);
    recrc(b, golden.len);
    CU_ASSERT_EQUAL(batch_validate(b, golden.len, NULL), VERITY_ECORRUPT);
    /* Three claimed, two present. */
    put_le32(b + 56, 3);
    put_le32(b + 60, 2);
    recrc(b, golden.len);
    CU_ASSERT_EQUAL(batch_validate(b, golden.len, NULL), VERITY_ECORRUPT);
    /* One claimed, two present (trailing bytes). */
    put_le32(b + 56, 1);
    put_le32(b + 60, 0);
    recrc(b, golden.len);
    CU_ASSERT_EQUAL(batch_validate(b, golden.len, NULL), VERITY_ECORRUPT);
    /* last_offset_delta inconsistent with the count. */
    put_le32(b + 56, 2);
    put_le32(b + 60, 2);
    recrc(b, golden.len);
    CU_ASSERT_EQUAL(batch_validate(b, golden.len, NULL), VERITY_ECORRUPT);
    free(b);
}

static void test_offset_delta_wrong_is_corrupt(void)
{
    uint8_t *b = golden_copy();
    CU_ASSERT_EQUAL_FATAL(b[136 + 3], 0x01); /* record 1's offset_delta */
    b[136 + 3] = 0x00;
    recrc(b, golden.len);
    CU_ASSERT_EQUAL(batch_validate(b, golden.len, NULL), VERITY_ECORRUPT);
    b[136 + 3] = 0x02;
    recrc(b, golden.len);
    CU_ASSERT_EQUAL(batch_validate(b, golden.len, NULL), VERITY_ECORRUPT);
    free(b);
}

static void test_truncated_record_is_corrupt(void)
{
    uint8_t *b = golden_copy();
    size_t len = golden.len - 1; /* cut the last byte of record 1 */
    put_le32(b + 4, (uint32_t)len);
    recrc(b, len);
    CU_ASSERT_EQUAL(batch_validate(b, len, NULL), VERITY_ECORRUPT);
    /* A record length pointing past the end. */
    memcpy(b, golden.buf, golden.len);
    b[136] = 0x30;
    recrc(b, golden.len);
    CU_ASSERT_EQUAL(batch_validate(b, golden.len, NULL), VERITY_ECORRUPT);
    free(b);
}

static void test_max_timestamp_mismatch_is_badbatch(void)
{
    uint8_t *b = golden_copy();
    put_le64(b + 72, (uint64_t)(TS0 + 6));
    recrc(b, golden.len);
    CU_ASSERT_EQUAL(batch_validate(b, golden.len, NULL), VERITY_EBADBATCH);
    put_le64(b + 72, (uint64_t)TS0);
    recrc(b, golden.len);
    CU_ASSERT_EQUAL(batch_validate(b, golden.len, NULL), VERITY_EBADBATCH);
    free(b);
}

static void test_nonzero_reserved_is_corrupt(void)
{
    uint8_t *b = golden_copy();
    b[54] = 1;
    recrc(b, golden.len);
    CU_ASSERT_EQUAL(batch_validate(b, golden.len, NULL), VERITY_ECORRUPT);
    b[54] = 0;
    b[91] = 0x80;
    recrc(b, golden.len);
    CU_ASSERT_EQUAL(batch_validate(b, golden.len, NULL), VERITY_ECORRUPT);
    free(b);
}

static void test_attribute_rules(void)
{
    uint8_t *b = golden_copy();
    b[53] |= 0x40; /* unknown bit */
    recrc(b, golden.len);
    CU_ASSERT_EQUAL(batch_validate(b, golden.len, NULL), VERITY_ECORRUPT);
    b[53] = BATCH_ATTR_IDEM_KEY | 1; /* compression: not supported in v1 */
    recrc(b, golden.len);
    CU_ASSERT_EQUAL(batch_validate(b, golden.len, NULL), VERITY_EUNSUPPORTED);
    b[53] = 0; /* idempotency key bytes without the bit */
    recrc(b, golden.len);
    CU_ASSERT_EQUAL(batch_validate(b, golden.len, NULL), VERITY_EBADBATCH);
    b[53] = BATCH_ATTR_IDEM_KEY | BATCH_ATTR_CONTROL; /* a control batch holds one record */
    recrc(b, golden.len);
    CU_ASSERT_EQUAL(batch_validate(b, golden.len, NULL), VERITY_EBADBATCH);
    free(b);
}

/* first_timestamp + timestamp_delta must not overflow: a client can send
 * any i64 in both, and the sum is signed arithmetic. */
static void test_timestamp_overflow_is_corrupt(void)
{
    struct batch_builder bb;
    CU_ASSERT_EQUAL_FATAL(batch_builder_init(&bb, 1024), 0);
    CU_ASSERT_EQUAL_FATAL(batch_builder_add(&bb, 0, "k", 1, "v", 1, NULL, 0), 0);
    CU_ASSERT_EQUAL_FATAL(batch_builder_add(&bb, 1, "k", 1, "v", 1, NULL, 0), 0);
    CU_ASSERT_EQUAL_FATAL(batch_builder_finish(&bb, NULL), 0);
    put_le64(bb.buf + 64, (uint64_t)INT64_MAX); /* record 1: INT64_MAX + 1 */
    recrc(bb.buf, bb.len);
    CU_ASSERT_EQUAL(batch_validate(bb.buf, bb.len, NULL), VERITY_ECORRUPT);
    put_le64(bb.buf + 64, (uint64_t)INT64_MIN); /* record 1: INT64_MIN + 1, fine */
    put_le64(bb.buf + 72, (uint64_t)(INT64_MIN + 1));
    recrc(bb.buf, bb.len);
    CU_ASSERT_EQUAL(batch_validate(bb.buf, bb.len, NULL), 0);
    batch_builder_deinit(&bb);
}

/* ---- hand-encoded records for cases the builder refuses to make ----------- */

static size_t uv(uint8_t *p, uint64_t v)
{
    size_t n = 0;
    while (v >= 0x80) {
        p[n++] = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    p[n++] = (uint8_t)v;
    return n;
}

static size_t sv(uint8_t *p, int64_t v) { return uv(p, ((uint64_t)v << 1) ^ (uint64_t)(v >> 63)); }

/* One batch with one record carrying nh headers "k" = null; the record is
 * encoded here, independently of the builder. Returns the length. */
static size_t raw_batch_with_headers(uint8_t *b, uint32_t nh)
{
    uint8_t body[4096];
    size_t n = 0;
    body[n++] = 0;            /* attributes */
    n += sv(body + n, 0);     /* timestamp delta */
    n += uv(body + n, 0);     /* offset delta */
    n += sv(body + n, -1);    /* null key */
    n += sv(body + n, 1);     /* value "v" */
    body[n++] = 'v';
    n += uv(body + n, nh);
    for (uint32_t i = 0; i < nh; i++) {
        n += uv(body + n, 1);
        body[n++] = 'k';
        n += sv(body + n, -1);
    }
    memset(b, 0, BATCH_HDR_SIZE);
    size_t len = BATCH_HDR_SIZE;
    len += uv(b + len, n);
    memcpy(b + len, body, n);
    len += n;
    memcpy(b, "VRB1", 4);
    put_le32(b + 4, (uint32_t)len);
    b[52] = 1;
    put_le32(b + 56, 1);
    put_le32(b + 60, 0);
    put_le64(b + 64, (uint64_t)TS0);
    put_le64(b + 72, (uint64_t)TS0);
    put_le64(b + 80, (uint64_t)-1);
    put_le16(b + 88, (uint16_t)-1);
    put_le32(b + 92, (uint32_t)-1);
    recrc(b, len);
    return len;
}

static void test_header_count_over_limit(void)
{
    uint8_t b[8192];
    /* At the format ceiling: valid. */
    size_t len = raw_batch_with_headers(b, VERITY_RECORD_HEADERS_MAX);
    CU_ASSERT_EQUAL(batch_validate(b, len, NULL), 0);
    /* Over a configured limit: ELIMIT. */
    struct batch_limits lim = batch_limits_default;
    lim.headers_max = 3;
    len = raw_batch_with_headers(b, 4);
    CU_ASSERT_EQUAL(batch_validate(b, len, NULL), 0);
    CU_ASSERT_EQUAL(batch_validate(b, len, &lim), VERITY_ELIMIT);
    /* Over the format ceiling: not a valid record at all. */
    len = raw_batch_with_headers(b, VERITY_RECORD_HEADERS_MAX + 1);
    CU_ASSERT_EQUAL(batch_validate(b, len, NULL), VERITY_ECORRUPT);
    /* A header count larger than the headers present. */
    len = raw_batch_with_headers(b, 2);
    uint8_t *count = b + len - 2 * 3 - 1;
    CU_ASSERT_EQUAL_FATAL(*count, 2);
    *count = 3;
    recrc(b, len);
    CU_ASSERT_EQUAL(batch_validate(b, len, NULL), VERITY_ECORRUPT);
}

static void test_size_and_record_limits(void)
{
    struct batch_limits lim = batch_limits_default;
    lim.bytes_max = (uint32_t)golden.len - 1;
    CU_ASSERT_EQUAL(batch_validate(golden.buf, golden.len, &lim), VERITY_ELIMIT);
    lim = batch_limits_default;
    lim.records_max = 1;
    CU_ASSERT_EQUAL(batch_validate(golden.buf, golden.len, &lim), VERITY_ELIMIT);
}

/* Random garbage and every truncation of the golden batch never validate
 * and never read out of bounds (run under ASan). */
static void test_truncations_and_garbage_never_validate(void)
{
    for (size_t len = 0; len < golden.len; len++) {
        uint8_t *b = malloc(len ? len : 1);
        CU_ASSERT_PTR_NOT_NULL_FATAL(b);
        memcpy(b, golden.buf, len);
        CU_ASSERT_NOT_EQUAL(batch_validate(b, len, NULL), 0);
        free(b);
    }
    uint64_t s = 88172645463325252ull;
    uint8_t g[512];
    for (int round = 0; round < 2000; round++) {
        for (size_t i = 0; i < sizeof g; i++) {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            g[i] = (uint8_t)s;
        }
        memcpy(g, "VRB1", 4);
        g[52] = 1;
        CU_ASSERT_NOT_EQUAL(batch_validate(g, 112 + s % 400, NULL), 0);
    }
}

/* ---- iterator -------------------------------------------------------------- */

static void test_iterator_returns_records_and_headers_exactly(void)
{
    struct batch_iter it;
    struct batch_record r;
    struct batch_header_kv kv;
    batch_iter_init(&it, golden.buf, golden.len);
    for (int i = 0; i < 2; i++) {
        char key[24], val[24], hv[24];
        snprintf(key, sizeof key, "key-%d", i);
        snprintf(val, sizeof val, "value-%d", i);
        snprintf(hv, sizeof hv, "x%d", i);
        CU_ASSERT_EQUAL_FATAL(batch_iter_next(&it, &r), 1);
        CU_ASSERT_EQUAL(r.timestamp, TS0 + 5 * i);
        CU_ASSERT_EQUAL(r.offset_delta, (uint32_t)i);
        CU_ASSERT_EQUAL(r.key_len, 5);
        CU_ASSERT(memcmp(r.key, key, 5) == 0);
        CU_ASSERT_EQUAL(r.value_len, 7);
        CU_ASSERT(memcmp(r.value, val, 7) == 0);
        CU_ASSERT_EQUAL(r.header_count, 1);
        size_t pos = 0;
        CU_ASSERT_EQUAL_FATAL(batch_header_next(&r, &pos, &kv), 1);
        CU_ASSERT_EQUAL(kv.key_len, 1);
        CU_ASSERT(memcmp(kv.key, "h", 1) == 0);
        CU_ASSERT_EQUAL(kv.value_len, 2);
        CU_ASSERT(memcmp(kv.value, hv, 2) == 0);
        CU_ASSERT_EQUAL(batch_header_next(&r, &pos, &kv), 0);
    }
    CU_ASSERT_EQUAL(batch_iter_next(&it, &r), 0);
}

static void test_iterator_handles_null_and_empty_fields(void)
{
    struct batch_builder b;
    struct batch_header_kv hs[2] = {{(const uint8_t *)"a", 1, NULL, -1},
                                    {(const uint8_t *)"bb", 2, (const uint8_t *)"", 0}};
    CU_ASSERT_EQUAL_FATAL(batch_builder_init(&b, 1024), 0);
    CU_ASSERT_EQUAL_FATAL(batch_builder_add(&b, 50, NULL, 0, NULL, 0, NULL, 0), 0);
    CU_ASSERT_EQUAL_FATAL(batch_builder_add(&b, 40, "", 0, "v", 1, hs, 2), 0);
    CU_ASSERT_EQUAL_FATAL(batch_builder_finish(&b, NULL), 0);
    CU_ASSERT_EQUAL(batch_validate(b.buf, b.len, NULL), 0);
    struct batch_hdr h;
    CU_ASSERT_EQUAL_FATAL(batch_hdr_decode(b.buf, b.len, &h), 0);
    CU_ASSERT_EQUAL(h.first_timestamp, 50);
    CU_ASSERT_EQUAL(h.max_timestamp, 50); /* a later record may be older */
    CU_ASSERT_EQUAL(h.producer_id, -1);
    CU_ASSERT_EQUAL(h.producer_epoch, -1);
    CU_ASSERT_EQUAL(h.base_sequence, -1);
    CU_ASSERT_EQUAL(h.attributes, 0);

    struct batch_iter it;
    struct batch_record r;
    struct batch_header_kv kv;
    size_t pos = 0;
    batch_iter_init(&it, b.buf, b.len);
    CU_ASSERT_EQUAL_FATAL(batch_iter_next(&it, &r), 1);
    CU_ASSERT_PTR_NULL(r.key);
    CU_ASSERT_EQUAL(r.key_len, -1);
    CU_ASSERT_PTR_NULL(r.value);
    CU_ASSERT_EQUAL(r.value_len, -1);
    CU_ASSERT_EQUAL(r.header_count, 0);
    CU_ASSERT_EQUAL(batch_iter_next(&it, &r), 1);
    CU_ASSERT_EQUAL(r.timestamp, 40);
    CU_ASSERT_PTR_NOT_NULL(r.key);
    CU_ASSERT_EQUAL(r.key_len, 0);
    CU_ASSERT_EQUAL(r.value_len, 1);
    CU_ASSERT_EQUAL(r.header_count, 2);
    CU_ASSERT_EQUAL_FATAL(batch_header_next(&r, &pos, &kv), 1);
    CU_ASSERT_EQUAL(kv.key_len, 1);
    CU_ASSERT_PTR_NULL(kv.value);
    CU_ASSERT_EQUAL(kv.value_len, -1);
    CU_ASSERT_EQUAL_FATAL(batch_header_next(&r, &pos, &kv), 1);
    CU_ASSERT_EQUAL(kv.key_len, 2);
    CU_ASSERT(memcmp(kv.key, "bb", 2) == 0);
    CU_ASSERT_EQUAL(kv.value_len, 0);
    CU_ASSERT_EQUAL(batch_header_next(&r, &pos, &kv), 0);
    CU_ASSERT_EQUAL(batch_iter_next(&it, &r), 0);
    batch_builder_deinit(&b);
}

static void test_builder_refuses_what_does_not_fit(void)
{
    struct batch_builder b;
    uint8_t big[512];
    memset(big, 'z', sizeof big);
    CU_ASSERT_EQUAL_FATAL(batch_builder_init(&b, 256), 0);
    CU_ASSERT_EQUAL(batch_builder_finish(&b, NULL), VERITY_EINVAL); /* empty */
    CU_ASSERT_EQUAL(batch_builder_add(&b, 1, NULL, 0, big, sizeof big, NULL, 0), VERITY_ELIMIT);
    CU_ASSERT_EQUAL(batch_builder_add(&b, 1, NULL, 0, big, 10, NULL, 0), 0);
    CU_ASSERT_EQUAL(batch_builder_finish(&b, NULL), 0);
    CU_ASSERT_EQUAL(batch_validate(b.buf, b.len, NULL), 0);
    batch_builder_deinit(&b);
}

/* Timestamps are deltas from the first: the extremes of int64 each fit, but
 * a second record more than INT64_MAX from the first is refused, not
 * wrapped into a batch the iterator would then call corrupt. */
static void test_builder_refuses_unrepresentable_timestamp(void)
{
    struct batch_builder b;
    CU_ASSERT_EQUAL_FATAL(batch_builder_init(&b, 4096), 0);
    CU_ASSERT_EQUAL(batch_builder_add(&b, INT64_MAX, NULL, -1, "a", 1, NULL, 0), 0);
    CU_ASSERT_EQUAL(batch_builder_add(&b, INT64_MIN, NULL, -1, "b", 1, NULL, 0), VERITY_EINVAL);
    CU_ASSERT_EQUAL(batch_builder_add(&b, -1, NULL, -1, "c", 1, NULL, 0), 0);
    CU_ASSERT_EQUAL_FATAL(batch_builder_finish(&b, NULL), 0);
    CU_ASSERT_EQUAL(batch_validate(b.buf, b.len, NULL), 0);
    struct batch_iter it;
    struct batch_record r;
    batch_iter_init(&it, b.buf, b.len);
    CU_ASSERT(batch_iter_next(&it, &r) == 1 && r.timestamp == INT64_MAX);
    CU_ASSERT(batch_iter_next(&it, &r) == 1 && r.timestamp == -1);
    CU_ASSERT_EQUAL(batch_iter_next(&it, &r), 0);
    batch_builder_deinit(&b);
}

static int suite_init(void) { return build_golden(&golden); }

static int suite_clean(void)
{
    batch_builder_deinit(&golden);
    return 0;
}

int main(void)
{
    static const struct {
        const char *name;
        void (*fn)(void);
    } tests[] = {
        {"golden_bytes_match_fixture", test_golden_bytes_match_fixture},
        {"golden_header_fields_at_documented_offsets",
         test_golden_header_fields_at_documented_offsets},
        {"chain_of_golden_with_zero_prev_is_pinned", test_chain_of_golden_with_zero_prev_is_pinned},
        {"chain_covers_base_offset_and_prev_not_chain_field",
         test_chain_covers_base_offset_and_prev_not_chain_field},
        {"golden_validates", test_golden_validates},
        {"wrong_magic_is_corrupt", test_wrong_magic_is_corrupt},
        {"version_2_is_eversion", test_version_2_is_eversion},
        {"bad_crc_is_corrupt", test_bad_crc_is_corrupt},
        {"length_mismatch_is_corrupt", test_length_mismatch_is_corrupt},
        {"record_count_zero_or_impossible_is_corrupt",
         test_record_count_zero_or_impossible_is_corrupt},
        {"offset_delta_wrong_is_corrupt", test_offset_delta_wrong_is_corrupt},
        {"truncated_record_is_corrupt", test_truncated_record_is_corrupt},
        {"max_timestamp_mismatch_is_badbatch", test_max_timestamp_mismatch_is_badbatch},
        {"nonzero_reserved_is_corrupt", test_nonzero_reserved_is_corrupt},
        {"attribute_rules", test_attribute_rules},
        {"timestamp_overflow_is_corrupt", test_timestamp_overflow_is_corrupt},
        {"header_count_over_limit", test_header_count_over_limit},
        {"size_and_record_limits", test_size_and_record_limits},
        {"truncations_and_garbage_never_validate", test_truncations_and_garbage_never_validate},
        {"iterator_returns_records_and_headers_exactly",
         test_iterator_returns_records_and_headers_exactly},
        {"iterator_handles_null_and_empty_fields", test_iterator_handles_null_and_empty_fields},
        {"builder_refuses_what_does_not_fit", test_builder_refuses_what_does_not_fit},
        {"builder_refuses_unrepresentable_timestamp",
         test_builder_refuses_unrepresentable_timestamp},
    };
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    CU_pSuite s = CU_add_suite("batch", suite_init, suite_clean);
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
