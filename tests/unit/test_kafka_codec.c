/*
 * Kafka listener codecs (broker/kafka/): primitive readers stay inside their
 * buffer and bound arrays by the bytes left; zigzag varints at the edges;
 * record batch v2 -> Verity batch -> record batch v2 is byte-identical for a
 * batch a client builds (leader epoch 0, exact maxTimestamp), keeping null
 * keys, null header values, headers in order and per-record timestamps;
 * refusals carry the Kafka code a client expects (CORRUPT_MESSAGE for a bad
 * CRC or a record running past its batch, UNSUPPORTED_COMPRESSION_TYPE);
 * the Produce and Fetch body decoders refuse trailing or missing bytes.
 */
#include <CUnit/Basic.h>
#include <CUnit/CUnit.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "broker/batchcheck.h"
#include "broker/kafka/kparse.h"
#include "broker/kafka/krecords.h"
#include "broker/kafka/kwire.h"
#include "storage/batch.h"
#include "storage/crc32c.h"
#include "verity/errors.h"

static void put_varint(struct kw *w, int64_t v)
{
    uint8_t *p = kw_reserve(w, kv_varint_size(v));
    kv_put_varint(p, v);
}

static void put_run(struct kw *w, const char *s)
{
    if (!s) {
        put_varint(w, -1);
        return;
    }
    put_varint(w, (int64_t)strlen(s));
    kw_raw(w, s, strlen(s));
}

/* A Kafka batch as librdkafka builds it: 3 records, record 1 has a null
 * key, record 2 two headers (the second with a null value). */
static void build_kafka_batch(struct kw *w, int64_t pid, int16_t epoch, int32_t seq)
{
    static const char *keys[3] = {"k0", NULL, "key-two"};
    static const char *vals[3] = {"v0", "value one", ""};
    static const int64_t ts[3] = {1700000000000, 1700000000005, 1700000000002};
    kw_init(w);
    uint8_t *h = kw_reserve(w, KREC_HDR_SIZE);
    memset(h, 0, KREC_HDR_SIZE);
    h[16] = 2;
    kput_be32(h + 23, 2);
    kput_be64(h + 27, (uint64_t)ts[0]);
    kput_be64(h + 35, (uint64_t)ts[1]);
    kput_be64(h + 43, (uint64_t)pid);
    kput_be16(h + 51, (uint16_t)epoch);
    kput_be32(h + 53, (uint32_t)seq);
    kput_be32(h + 57, 3);
    for (int i = 0; i < 3; i++) {
        struct kw r;
        kw_init(&r);
        kw_i8(&r, 0);
        put_varint(&r, ts[i] - ts[0]);
        put_varint(&r, i);
        put_run(&r, keys[i]);
        put_run(&r, vals[i]);
        put_varint(&r, i == 2 ? 2 : 0);
        if (i == 2) {
            put_run(&r, "trace");
            put_run(&r, "abc");
            put_run(&r, "empty");
            put_run(&r, NULL);
        }
        put_varint(w, (int64_t)r.len);
        kw_raw(w, r.buf, r.len);
        kw_deinit(&r);
    }
    kput_be32(w->buf + 8, (uint32_t)(w->len - 12));
    kput_be32(w->buf + 17, crc32c(0, w->buf + KREC_CRC_FROM, w->len - KREC_CRC_FROM));
}

static void test_reader_bounds(void)
{
    uint8_t buf[8] = {0, 0, 0, 5, 0, 3, 'a', 'b'};
    struct kr r;
    kr_init(&r, buf, sizeof buf);
    CU_ASSERT_EQUAL(kr_array(&r, false, 1), 0); /* 5 elements cannot fit in 4 bytes */
    CU_ASSERT_FALSE(kr_ok(&r));
    kr_init(&r, buf + 4, 4);
    struct kstr s = kr_str(&r, false); /* length 3, only 2 bytes */
    CU_ASSERT_PTR_NULL(s.p);
    CU_ASSERT_FALSE(kr_ok(&r));
    CU_ASSERT_EQUAL(kr_i64(&r), 0); /* sticky */
    uint8_t nul[4] = {0xff, 0xff, 0, 0};
    kr_init(&r, nul, 2);
    s = kr_str(&r, true);
    CU_ASSERT(kr_ok(&r) && s.p == NULL && s.len == -1);
    kr_init(&r, nul, 2);
    (void)kr_str(&r, false); /* null where not nullable */
    CU_ASSERT_FALSE(kr_ok(&r));
}

static void test_varint_edges(void)
{
    const int64_t vals[] = {0, -1, 1, 63, -64, 64, INT32_MAX, INT32_MIN, INT64_MAX, INT64_MIN};
    for (size_t i = 0; i < sizeof vals / sizeof vals[0]; i++) {
        uint8_t b[10];
        size_t n = kv_put_varint(b, vals[i]);
        CU_ASSERT_EQUAL(n, kv_varint_size(vals[i]));
        const uint8_t *p = b;
        int64_t v = 0;
        CU_ASSERT_EQUAL(kv_get_varint(&p, b + n, &v), 0);
        CU_ASSERT_EQUAL(v, vals[i]);
        CU_ASSERT_PTR_EQUAL(p, b + n);
        p = b;
        if (n > 1)
            CU_ASSERT_EQUAL(kv_get_varint(&p, b + n - 1, &v), VERITY_ECORRUPT);
    }
    uint8_t over[11];
    memset(over, 0xff, sizeof over);
    const uint8_t *p = over;
    int64_t v;
    CU_ASSERT_EQUAL(kv_get_varint(&p, over + sizeof over, &v), VERITY_ECORRUPT);
}

static void test_batch_roundtrip_identical(void)
{
    struct kw k;
    build_kafka_batch(&k, 42, 3, 100);
    size_t blen;
    char msg[200];
    CU_ASSERT_EQUAL_FATAL(krec_next(k.buf, k.len, &blen, msg, sizeof msg), 0);
    CU_ASSERT_EQUAL(blen, k.len);
    struct batch_builder bb;
    CU_ASSERT_EQUAL_FATAL(batch_builder_init(&bb, 4096), 0);
    struct krec_src src;
    CU_ASSERT_EQUAL_FATAL(krec_to_verity(k.buf, k.len, &bb, &src, msg, sizeof msg), 0);
    CU_ASSERT_EQUAL(src.producer_id, 42);
    struct batch_hdr h;
    CU_ASSERT_EQUAL_FATAL(produce_check_batch(bb.buf, bb.len, 4096, &h, msg, sizeof msg), 0);
    CU_ASSERT_EQUAL(h.record_count, 3);
    CU_ASSERT_EQUAL(h.producer_id, 42);
    CU_ASSERT_EQUAL(h.producer_epoch, 3);
    CU_ASSERT_EQUAL(h.base_sequence, 100);
    CU_ASSERT_EQUAL(h.max_timestamp, 1700000000005);
    /* Records as stored: null key stays null, empty value stays empty. */
    struct batch_iter it;
    struct batch_record r;
    batch_iter_init(&it, bb.buf, bb.len);
    CU_ASSERT_EQUAL(batch_iter_next(&it, &r), 1);
    CU_ASSERT(r.key_len == 2 && memcmp(r.key, "k0", 2) == 0 && r.timestamp == 1700000000000);
    CU_ASSERT_EQUAL(batch_iter_next(&it, &r), 1);
    CU_ASSERT(r.key_len == -1 && r.value_len == 9 && r.timestamp == 1700000000005);
    CU_ASSERT_EQUAL(batch_iter_next(&it, &r), 1);
    CU_ASSERT(r.value_len == 0 && r.header_count == 2);
    size_t pos = 0;
    struct batch_header_kv kv;
    CU_ASSERT_EQUAL(batch_header_next(&r, &pos, &kv), 1);
    CU_ASSERT(kv.key_len == 5 && memcmp(kv.key, "trace", 5) == 0 && kv.value_len == 3);
    CU_ASSERT_EQUAL(batch_header_next(&r, &pos, &kv), 1);
    CU_ASSERT(kv.key_len == 5 && kv.value_len == -1);
    /* And back: byte for byte the batch the client sent. */
    struct kw out;
    kw_init(&out);
    CU_ASSERT_EQUAL_FATAL(krec_from_verity(bb.buf, bb.len, &out), 0);
    CU_ASSERT_EQUAL(out.len, k.len);
    CU_ASSERT(out.len == k.len && memcmp(out.buf, k.buf, k.len) == 0);
    kw_deinit(&out);
    batch_builder_deinit(&bb);
    kw_deinit(&k);
}

static void test_batch_refusals(void)
{
    struct kw k;
    char msg[200];
    struct batch_builder bb;
    struct krec_src src;
    CU_ASSERT_EQUAL_FATAL(batch_builder_init(&bb, 4096), 0);
    build_kafka_batch(&k, -1, -1, -1);
    k.buf[k.len - 1] ^= 1; /* payload byte: CRC no longer matches */
    CU_ASSERT_EQUAL(krec_to_verity(k.buf, k.len, &bb, &src, msg, sizeof msg), KERR_CORRUPT_MESSAGE);
    kw_deinit(&k);
    build_kafka_batch(&k, -1, -1, -1);
    kput_be16(k.buf + 21, 1); /* gzip */
    kput_be32(k.buf + 17, crc32c(0, k.buf + KREC_CRC_FROM, k.len - KREC_CRC_FROM));
    CU_ASSERT_EQUAL(krec_to_verity(k.buf, k.len, &bb, &src, msg, sizeof msg),
                    KERR_UNSUPPORTED_COMPRESS);
    kw_deinit(&k);
    build_kafka_batch(&k, -1, -1, -1);
    k.buf[KREC_HDR_SIZE] = 0x7e; /* first record claims 63 bytes: past the batch */
    kput_be32(k.buf + 17, crc32c(0, k.buf + KREC_CRC_FROM, k.len - KREC_CRC_FROM));
    CU_ASSERT_EQUAL(krec_to_verity(k.buf, k.len, &bb, &src, msg, sizeof msg), KERR_CORRUPT_MESSAGE);
    size_t blen;
    k.buf[16] = 1; /* magic 1 */
    CU_ASSERT_EQUAL(krec_next(k.buf, k.len, &blen, msg, sizeof msg), KERR_UNSUPPORTED_MSG_FMT);
    CU_ASSERT_EQUAL(krec_next(k.buf, 30, &blen, msg, sizeof msg), KERR_CORRUPT_MESSAGE);
    kw_deinit(&k);
    /* baseTimestamp + timestampDelta past INT64_MAX: a typed refusal, not
     * signed overflow (fuzz_kafka found this under UBSan). */
    build_kafka_batch(&k, -1, -1, -1);
    kput_be64(k.buf + 27, (uint64_t)INT64_MAX - 2);
    kput_be32(k.buf + 17, crc32c(0, k.buf + KREC_CRC_FROM, k.len - KREC_CRC_FROM));
    CU_ASSERT_EQUAL(krec_to_verity(k.buf, k.len, &bb, &src, msg, sizeof msg),
                    KERR_INVALID_TIMESTAMP);
    kw_deinit(&k);
    batch_builder_deinit(&bb);
}

/* A native batch spanning the whole int64 range the builder allows (first
 * record INT64_MAX, a later one at -1): the Kafka view of it carries each
 * timestamp exactly and reads back through the Kafka decoder. */
static void test_batch_extreme_timestamps(void)
{
    struct batch_builder bb;
    CU_ASSERT_EQUAL_FATAL(batch_builder_init(&bb, 4096), 0);
    CU_ASSERT_EQUAL_FATAL(batch_builder_add(&bb, INT64_MAX, NULL, -1, "a", 1, NULL, 0), 0);
    CU_ASSERT_EQUAL_FATAL(batch_builder_add(&bb, -1, NULL, -1, "b", 1, NULL, 0), 0);
    struct batch_meta meta = {0, -1, -1, -1, NULL};
    CU_ASSERT_EQUAL_FATAL(batch_builder_finish(&bb, &meta), 0);
    struct kw out;
    kw_init(&out);
    CU_ASSERT_EQUAL_FATAL(krec_from_verity(bb.buf, bb.len, &out), 0);
    struct batch_builder back;
    CU_ASSERT_EQUAL_FATAL(batch_builder_init(&back, 4096), 0);
    struct krec_src src;
    char msg[200];
    CU_ASSERT_EQUAL_FATAL(krec_to_verity(out.buf, out.len, &back, &src, msg, sizeof msg), 0);
    struct batch_iter it;
    struct batch_record r;
    batch_iter_init(&it, back.buf, back.len);
    CU_ASSERT(batch_iter_next(&it, &r) == 1 && r.timestamp == INT64_MAX);
    CU_ASSERT(batch_iter_next(&it, &r) == 1 && r.timestamp == -1);
    batch_builder_deinit(&back);
    kw_deinit(&out);
    batch_builder_deinit(&bb);
}

static void test_request_bodies(void)
{
    struct kw w;
    kw_init(&w);
    kw_str(&w, NULL);
    kw_i16(&w, -1);
    kw_i32(&w, 30000);
    kw_i32(&w, 1);
    kw_str(&w, "t");
    kw_i32(&w, 2);
    kw_i32(&w, 0);
    kw_i32(&w, 3);
    kw_raw(&w, "abc", 3);
    kw_i32(&w, 1);
    kw_i32(&w, -1);
    struct kr r;
    struct kprod_req q;
    kr_init(&r, w.buf, w.len);
    CU_ASSERT_EQUAL_FATAL(kprod_parse(&r, 3, &q), 0);
    CU_ASSERT_EQUAL(q.n_topics, 1);
    CU_ASSERT_EQUAL(q.n_parts, 2);
    CU_ASSERT(q.parts[0].records.len == 3 && q.parts[1].records.p == NULL);
    kprod_req_free(&q);
    kr_init(&r, w.buf, w.len - 1); /* truncated */
    CU_ASSERT_EQUAL(kprod_parse(&r, 3, &q), VERITY_ECORRUPT);
    kw_i8(&w, 0); /* trailing byte */
    kr_init(&r, w.buf, w.len);
    CU_ASSERT_EQUAL(kprod_parse(&r, 3, &q), VERITY_ECORRUPT);
    kw_deinit(&w);
    /* Fetch v4: one topic, one partition. */
    kw_init(&w);
    kw_i32(&w, -1);
    kw_i32(&w, 500);
    kw_i32(&w, 1);
    kw_i32(&w, 1 << 20);
    kw_i8(&w, 0);
    kw_i32(&w, 1);
    kw_str(&w, "t");
    kw_i32(&w, 1);
    kw_i32(&w, 2);
    kw_i64(&w, 77);
    kw_i32(&w, 4096);
    struct kfetch_req f;
    kr_init(&r, w.buf, w.len);
    CU_ASSERT_EQUAL_FATAL(kfetch_parse(&r, 4, &f), 0);
    CU_ASSERT(f.n_parts == 1 && f.parts[0].partition == 2 && f.parts[0].offset == 77 &&
              f.parts[0].max_bytes == 4096 && f.max_wait_ms == 500);
    kfetch_req_free(&f);
    kr_init(&r, w.buf, w.len);
    CU_ASSERT_EQUAL(kfetch_parse(&r, 5, &f), VERITY_ECORRUPT); /* v5 needs log_start_offset */
    kw_deinit(&w);
}

int main(void)
{
    static const struct {
        const char *name;
        void (*fn)(void);
    } tests[] = {
        {"reader_bounds", test_reader_bounds},
        {"varint_edges", test_varint_edges},
        {"batch_roundtrip_identical", test_batch_roundtrip_identical},
        {"batch_refusals", test_batch_refusals},
        {"batch_extreme_timestamps", test_batch_extreme_timestamps},
        {"request_bodies", test_request_bodies},
    };
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    CU_pSuite s = CU_add_suite("kafka_codec", NULL, NULL);
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
