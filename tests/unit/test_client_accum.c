/*
 * The producer's accumulator (client/accum.c), driven directly with a fake
 * clock: batching limits (bytes, records, a record larger than a batch, the
 * protocol ceiling, the buffer limit), linger and flush, partitioning (key
 * hash, sticky round robin per batch for null keys), idempotent sequences in
 * the batch header, retries that resend the same bytes in order, the
 * five-in-flight rule, new epochs after an unknown outcome, delivery
 * timeouts and fencing.
 */
#include <CUnit/Basic.h>
#include <CUnit/CUnit.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client/client_int.h"
#include "verity/limits.h"

#define T0 1000000
#define WALL 1700000000000LL

static struct accum acc;
static struct acc_topic *topic;

struct seen {
    int count;
    int errors;
    int last_err;
    uint64_t offsets[64];
    uint32_t partitions[64];
    long ids[64];
};
static struct seen seen;

static void on_report(void *opaque, int err, const struct verity_delivery *d)
{
    if (seen.count < 64) {
        seen.offsets[seen.count] = d->offset;
        seen.partitions[seen.count] = d->partition;
        seen.ids[seen.count] = (long)(intptr_t)opaque;
    }
    seen.count++;
    if (err) {
        seen.errors++;
        seen.last_err = err;
    }
}

static void setup(uint32_t partitions, uint32_t batch_bytes, uint32_t batch_records, int linger,
                  bool idem)
{
    struct accum_config cfg = {
        .batch_bytes = batch_bytes,
        .batch_records = batch_records,
        .linger_ms = linger,
        .buffer_bytes_max = 1u << 20,
        .delivery_timeout_ms = 60000,
        .retry_backoff_ms = 10,
        .retry_backoff_max_ms = 80,
        .idempotence = idem,
        .partition_inflight_max = 5,
        .seed = 0,
    };
    memset(&seen, 0, sizeof seen);
    accum_init(&acc, &cfg);
    CU_ASSERT_FATAL(accum_topic_add(&acc, "t", partitions, &topic) == 0);
    if (idem)
        accum_set_identity(&acc, 42, 3);
}

static void teardown(void)
{
    struct pbatch *d = accum_take_done(&acc);
    while (d) {
        struct pbatch *n = d->next;
        pbatch_free(d);
        d = n;
    }
    accum_deinit(&acc);
}

static int add(int32_t partition, const char *key, size_t value_len, long id)
{
    static char value[1 << 16];
    memset(value, 'v', sizeof value);
    struct verity_record r = {
        .key = key,
        .key_len = key ? (int32_t)strlen(key) : 0,
        .value = value,
        .value_len = (int32_t)value_len,
    };
    return accum_append(&acc, topic, partition, &r, on_report, (void *)(intptr_t)id, T0, WALL);
}

/* Reports what is done and frees it. */
static void report_done(void)
{
    struct pbatch *d = accum_take_done(&acc);
    while (d) {
        struct pbatch *n = d->next;
        pbatch_report(d);
        pbatch_free(d);
        d = n;
    }
}

static void test_records_share_a_batch_until_batch_bytes(void)
{
    setup(1, 1000, 1000, 0, true);
    struct pbatch *out[8];
    /* A record with a 100-byte value takes 108 bytes and is admitted when
     * its worst case (161) still fits: seven per 1000-byte batch. */
    size_t need = batch_record_size_max(0, 100, NULL, 0);
    CU_ASSERT_EQUAL(need, 161);
    for (long i = 0; i < 20; i++)
        CU_ASSERT_EQUAL(add(0, NULL, 100, i), 0);
    size_t n = accum_drain(&acc, T0, false, out, 8, 1 << 20);
    CU_ASSERT_EQUAL_FATAL(n, 3);
    uint32_t total = 0;
    for (size_t i = 0; i < n; i++) {
        CU_ASSERT(out[i]->b.len <= 1000);
        if (i + 1 < n)
            CU_ASSERT(out[i]->b.len + need > 1000); /* closed only when full */
        CU_ASSERT_EQUAL(batch_validate(out[i]->b.buf, out[i]->b.len, NULL), 0);
        total += out[i]->b.count;
    }
    CU_ASSERT_EQUAL(out[0]->b.count, 7);
    CU_ASSERT_EQUAL(out[0]->b.len, 112 + 7 * 108);
    CU_ASSERT_EQUAL(total, 20);
    teardown();
}

static void test_batch_records_limit_closes_batch(void)
{
    setup(1, 1 << 20, 3, 0, true);
    struct pbatch *out[8];
    for (long i = 0; i < 7; i++)
        CU_ASSERT_EQUAL(add(0, NULL, 10, i), 0);
    size_t n = accum_drain(&acc, T0, false, out, 8, 1 << 20);
    CU_ASSERT_EQUAL(n, 3);
    if (n == 3) {
        CU_ASSERT_EQUAL(out[0]->b.count, 3);
        CU_ASSERT_EQUAL(out[1]->b.count, 3);
        CU_ASSERT_EQUAL(out[2]->b.count, 1);
    }
    teardown();
}

static void test_large_record_gets_own_batch_and_ceiling_holds(void)
{
    setup(1, 1000, 1000, 0, true);
    struct pbatch *out[8];
    CU_ASSERT_EQUAL(add(0, NULL, 10, 0), 0);
    CU_ASSERT_EQUAL(add(0, NULL, 5000, 1), 0); /* bigger than batch_bytes */
    CU_ASSERT_EQUAL(add(0, NULL, 10, 2), 0);
    size_t n = accum_drain(&acc, T0, false, out, 8, 1 << 20);
    CU_ASSERT_EQUAL(n, 3);
    if (n == 3)
        CU_ASSERT_EQUAL(out[1]->b.count, 1);

    /* Above the protocol's batch ceiling: refused, nothing queued. */
    struct verity_record r = {.value = "x", .value_len = (int32_t)VERITY_BATCH_BYTES_MAX};
    CU_ASSERT_EQUAL(accum_append(&acc, topic, 0, &r, NULL, NULL, T0, WALL), VERITY_ELIMIT);
    struct verity_header h[VERITY_RECORD_HEADERS_MAX + 1];
    memset(h, 0, sizeof h);
    struct verity_record r2 = {.headers = h, .header_count = VERITY_RECORD_HEADERS_MAX + 1};
    CU_ASSERT_EQUAL(accum_append(&acc, topic, 0, &r2, NULL, NULL, T0, WALL), VERITY_ELIMIT);
    struct verity_record r3 = {.key = "k", .key_len = -2};
    CU_ASSERT_EQUAL(accum_append(&acc, topic, 0, &r3, NULL, NULL, T0, WALL), VERITY_EINVAL);
    CU_ASSERT_EQUAL(add(1, NULL, 10, 9), VERITY_EINVAL);  /* no partition 1 */
    CU_ASSERT_EQUAL(add(-5, NULL, 10, 9), VERITY_EINVAL);
    CU_ASSERT_EQUAL(acc.records_queued, 3);
    teardown();
}

static void test_buffer_limit_refuses_then_frees_on_reports(void)
{
    setup(1, 64u << 10, 100000, 0, true);
    acc.cfg.buffer_bytes_max = 200u << 10;
    int rc = 0;
    long i = 0;
    for (; i < 100000 && rc == 0; i++)
        rc = add(0, NULL, 1000, i);
    CU_ASSERT_EQUAL(rc, -ENOBUFS);
    CU_ASSERT(acc.bytes_queued <= acc.cfg.buffer_bytes_max);
    CU_ASSERT(i > 150 && i < 260);
    struct pbatch *out[8];
    size_t n = accum_drain(&acc, T0, true, out, 8, 1 << 20);
    CU_ASSERT(n >= 3);
    for (size_t k = 0; k < n; k++)
        accum_complete(&acc, out[k], 0, 100 * k, false, T0);
    report_done();
    CU_ASSERT_EQUAL(acc.bytes_queued, 0);
    CU_ASSERT_EQUAL(add(0, NULL, 1000, i), 0);
    teardown();
}

static void test_linger_holds_open_batch_and_flush_sends_it(void)
{
    setup(1, 1 << 20, 1000, 50, true);
    struct pbatch *out[4];
    CU_ASSERT_EQUAL(add(0, NULL, 10, 0), 0);
    CU_ASSERT_EQUAL(accum_drain(&acc, T0 + 10, false, out, 4, 1 << 20), 0);
    CU_ASSERT_EQUAL(accum_next_deadline(&acc, T0 + 10, false), T0 + 50);
    CU_ASSERT_EQUAL(accum_drain(&acc, T0 + 10, true, out, 4, 1 << 20), 1);
    CU_ASSERT_EQUAL(add(0, NULL, 10, 1), 0);
    CU_ASSERT_EQUAL(accum_drain(&acc, T0 + 49, false, out, 4, 1 << 20), 0);
    CU_ASSERT_EQUAL(accum_drain(&acc, T0 + 50, false, out, 4, 1 << 20), 1);
    teardown();
}

static void test_keyed_records_follow_the_hash(void)
{
    setup(7, 1 << 20, 1000, 0, true);
    const char *keys[] = {"21", "foobar", "abc", "a-little-bit-long-string"};
    const uint32_t expect[] = {3, 0, 4, 1};
    for (long i = 0; i < 4; i++)
        CU_ASSERT_EQUAL(add(VERITY_PARTITION_ANY, keys[i], 5, i), 0);
    struct pbatch *out[8];
    size_t n = accum_drain(&acc, T0, false, out, 8, 1 << 20);
    CU_ASSERT_EQUAL(n, 4);
    for (size_t k = 0; k < n; k++) {
        struct batch_iter it;
        struct batch_record r;
        batch_iter_init(&it, out[k]->b.buf, out[k]->b.len);
        CU_ASSERT_EQUAL(batch_iter_next(&it, &r), 1);
        for (int j = 0; j < 4; j++)
            if (r.key_len == (int32_t)strlen(keys[j]) && memcmp(r.key, keys[j], r.key_len) == 0)
                CU_ASSERT_EQUAL(out[k]->partition, expect[j]);
    }
    teardown();
}

static void test_null_keys_stick_to_a_partition_per_batch(void)
{
    setup(3, 1 << 20, 1000, 0, true);
    struct pbatch *out[4];
    uint32_t parts[6];
    for (int round = 0; round < 6; round++) {
        for (long i = 0; i < 4; i++)
            CU_ASSERT_EQUAL(add(VERITY_PARTITION_ANY, NULL, 5, i), 0);
        size_t n = accum_drain(&acc, T0, false, out, 4, 1 << 20);
        CU_ASSERT_EQUAL_FATAL(n, 1); /* all four records in one batch */
        CU_ASSERT_EQUAL(out[0]->b.count, 4);
        parts[round] = out[0]->partition;
        accum_complete(&acc, out[0], 0, 0, false, T0);
    }
    for (int round = 1; round < 6; round++)
        CU_ASSERT_EQUAL(parts[round], (parts[round - 1] + 1) % 3);
    report_done();
    teardown();
}

static void test_sequences_and_identity_are_in_the_header(void)
{
    setup(2, 300, 1000, 0, true);
    struct pbatch *out[8];
    for (long i = 0; i < 6; i++)
        CU_ASSERT_EQUAL(add(0, NULL, 50, i), 0);
    CU_ASSERT_EQUAL(add(1, NULL, 50, 6), 0);
    size_t n = accum_drain(&acc, T0, false, out, 8, 1 << 20);
    CU_ASSERT_FATAL(n >= 3);
    int32_t next0 = 0;
    for (size_t k = 0; k < n; k++) {
        struct batch_hdr h;
        CU_ASSERT_EQUAL_FATAL(batch_hdr_decode(out[k]->b.buf, out[k]->b.len, &h), 0);
        CU_ASSERT_EQUAL(h.producer_id, 42);
        CU_ASSERT_EQUAL(h.producer_epoch, 3);
        if (out[k]->partition == 0) {
            CU_ASSERT_EQUAL(h.base_sequence, next0);
            next0 += (int32_t)h.record_count;
        } else {
            CU_ASSERT_EQUAL(h.base_sequence, 0);
        }
        CU_ASSERT_EQUAL(batch_validate(out[k]->b.buf, out[k]->b.len, NULL), 0);
    }
    CU_ASSERT_EQUAL(next0, 6);
    teardown();
}

static void test_without_idempotence_no_producer_fields(void)
{
    setup(1, 1 << 20, 1000, 0, false);
    struct pbatch *out[2];
    CU_ASSERT_EQUAL(add(0, NULL, 5, 0), 0);
    CU_ASSERT_EQUAL(accum_drain(&acc, T0, false, out, 2, 1 << 20), 1);
    struct batch_hdr h;
    CU_ASSERT_EQUAL(batch_hdr_decode(out[0]->b.buf, out[0]->b.len, &h), 0);
    CU_ASSERT_EQUAL(h.producer_id, -1);
    CU_ASSERT_EQUAL(h.producer_epoch, -1);
    CU_ASSERT_EQUAL(h.base_sequence, -1);
    teardown();
}

static void test_nothing_is_sent_before_the_producer_id(void)
{
    setup(1, 1 << 20, 1000, 0, false);
    acc.cfg.idempotence = true; /* as a producer right after creation */
    struct pbatch *out[2];
    CU_ASSERT_EQUAL(add(0, NULL, 5, 0), 0);
    CU_ASSERT_EQUAL(accum_drain(&acc, T0, false, out, 2, 1 << 20), 0);
    accum_set_identity(&acc, 7, 0);
    CU_ASSERT_EQUAL(accum_drain(&acc, T0, false, out, 2, 1 << 20), 1);
    teardown();
}

static void test_retry_resends_same_bytes_in_order(void)
{
    setup(1, 1 << 20, 2, 0, true); /* two records per batch */
    struct pbatch *out[8];
    for (long i = 0; i < 6; i++)
        CU_ASSERT_EQUAL(add(0, NULL, 60, i), 0);
    size_t n = accum_drain(&acc, T0, false, out, 8, 1 << 20);
    CU_ASSERT_EQUAL_FATAL(n, 3);
    uint8_t *copy0 = malloc(out[0]->b.len);
    size_t len0 = out[0]->b.len;
    memcpy(copy0, out[0]->b.buf, len0);
    struct pbatch *first = out[0], *second = out[1];

    /* The first fails on a dropped connection; the others are still out. */
    accum_complete(&acc, first, -ECONNRESET, 0, false, T0);
    CU_ASSERT_EQUAL(accum_drain(&acc, T0 + 1000, false, out, 8, 1 << 20), 0);
    accum_complete(&acc, second, VERITY_EOUTOFORDER, 0, false, T0 + 1);
    for (size_t k = 2; k < n; k++)
        accum_complete(&acc, out[k], VERITY_EOUTOFORDER, 0, false, T0 + 1);
    CU_ASSERT_FALSE(acc.need_reinit); /* a gap behind a failed batch is expected */
    CU_ASSERT_EQUAL(seen.count, 0);
    /* Backoff first, then everything again from the oldest, same bytes. */
    CU_ASSERT_EQUAL(accum_drain(&acc, T0 + 2, false, out, 8, 1 << 20), 0);
    size_t n2 = accum_drain(&acc, T0 + 1000, false, out, 8, 1 << 20);
    CU_ASSERT_EQUAL(n2, n);
    CU_ASSERT_PTR_EQUAL(out[0], first);
    CU_ASSERT_EQUAL(out[0]->b.len, len0);
    CU_ASSERT_EQUAL(memcmp(out[0]->b.buf, copy0, len0), 0);
    CU_ASSERT_EQUAL(out[0]->attempts, 2);
    /* Answers out of order: reports still come in produce order. */
    for (size_t k = n2; k-- > 0;)
        accum_complete(&acc, out[k], 0, 10 * k, k == 0, T0 + 1001);
    report_done();
    CU_ASSERT_EQUAL(seen.count, 6);
    for (long i = 0; i < 6 && i < seen.count; i++)
        CU_ASSERT_EQUAL(seen.ids[i], i);
    CU_ASSERT_EQUAL(seen.offsets[0], 0);
    CU_ASSERT_EQUAL(seen.offsets[1], 1);
    CU_ASSERT_EQUAL(seen.errors, 0);
    free(copy0);
    teardown();
}

static void test_at_most_five_batches_in_flight_per_partition(void)
{
    setup(2, 200, 1000, 0, true);
    struct pbatch *out[16];
    for (long i = 0; i < 10; i++)
        CU_ASSERT_EQUAL(add(0, NULL, 100, i), 0);
    CU_ASSERT_EQUAL(add(1, NULL, 100, 10), 0);
    size_t n = accum_drain(&acc, T0, false, out, 16, 1 << 20);
    CU_ASSERT_EQUAL(n, 6); /* five of partition 0, one of partition 1 */
    CU_ASSERT_EQUAL(topic->parts[0].inflight, 5);
    CU_ASSERT_EQUAL(accum_drain(&acc, T0, false, out + n, 16 - n, 1 << 20), 0);
    size_t k = 0;
    while (out[k]->partition != 0)
        k++;
    accum_complete(&acc, out[k], 0, 0, false, T0);
    CU_ASSERT_EQUAL(accum_drain(&acc, T0, false, out, 16, 1 << 20), 1);
    teardown();
}

static void test_request_byte_budget_is_respected(void)
{
    setup(4, 1000, 1000, 0, true);
    struct pbatch *out[16];
    for (long i = 0; i < 4; i++)
        CU_ASSERT_EQUAL(add((int32_t)i, NULL, 700, i), 0);
    size_t n = accum_drain(&acc, T0, false, out, 16, 1500);
    CU_ASSERT_EQUAL(n, 1); /* two would pass 1500 bytes */
    n = accum_drain(&acc, T0, false, out, 2, 1 << 20);
    CU_ASSERT_EQUAL(n, 2);
    teardown();
}

static void test_fatal_error_reports_and_new_epoch_restamps(void)
{
    setup(1, 1 << 20, 2, 0, true);
    struct pbatch *out[8];
    for (long i = 0; i < 6; i++)
        CU_ASSERT_EQUAL(add(0, NULL, 60, i), 0);
    size_t n = accum_drain(&acc, T0, false, out, 8, 1 << 20);
    CU_ASSERT_EQUAL_FATAL(n, 3);
    int first_count = (int)out[0]->b.count;
    accum_complete(&acc, out[0], VERITY_EBADBATCH, 0, false, T0);
    CU_ASSERT_TRUE(acc.need_reinit);
    for (size_t k = 1; k < n; k++)
        accum_complete(&acc, out[k], VERITY_EOUTOFORDER, 0, false, T0);
    report_done();
    CU_ASSERT_EQUAL(seen.errors, first_count);
    CU_ASSERT_EQUAL(seen.count, first_count);
    CU_ASSERT_EQUAL(seen.last_err, VERITY_EBADBATCH);
    CU_ASSERT_EQUAL(accum_drain(&acc, T0 + 5000, false, out, 8, 1 << 20), 0);
    accum_set_identity(&acc, 42, 4);
    size_t n2 = accum_drain(&acc, T0 + 5000, false, out, 8, 1 << 20);
    CU_ASSERT_EQUAL(n2, n - 1);
    int32_t seq = 0;
    for (size_t k = 0; k < n2; k++) {
        struct batch_hdr h;
        CU_ASSERT_EQUAL(batch_hdr_decode(out[k]->b.buf, out[k]->b.len, &h), 0);
        CU_ASSERT_EQUAL(h.producer_epoch, 4);
        CU_ASSERT_EQUAL(h.base_sequence, seq);
        seq += (int32_t)h.record_count;
        CU_ASSERT_EQUAL(batch_validate(out[k]->b.buf, out[k]->b.len, NULL), 0);
    }
    teardown();
}

static void test_gap_at_oldest_batch_asks_for_new_epoch(void)
{
    setup(1, 1 << 20, 1000, 0, true);
    struct pbatch *out[2];
    CU_ASSERT_EQUAL(add(0, NULL, 5, 0), 0);
    CU_ASSERT_EQUAL(accum_drain(&acc, T0, false, out, 2, 1 << 20), 1);
    accum_complete(&acc, out[0], VERITY_EOUTOFORDER, 0, false, T0);
    CU_ASSERT_TRUE(acc.need_reinit);
    CU_ASSERT_EQUAL(seen.count, 0); /* kept for a resend */
    accum_set_identity(&acc, 43, 0);
    CU_ASSERT_EQUAL(accum_drain(&acc, T0 + 1000, false, out, 2, 1 << 20), 1);
    struct batch_hdr h;
    CU_ASSERT_EQUAL(batch_hdr_decode(out[0]->b.buf, out[0]->b.len, &h), 0);
    CU_ASSERT_EQUAL(h.producer_id, 43);
    CU_ASSERT_EQUAL(h.base_sequence, 0);
    teardown();
}

static void test_delivery_timeout_fails_queued_batches(void)
{
    setup(1, 1 << 20, 1000, 100000, true);
    CU_ASSERT_EQUAL(add(0, NULL, 5, 0), 0);
    CU_ASSERT_EQUAL(add(0, NULL, 5, 1), 0);
    accum_expire(&acc, T0 + 59999);
    report_done();
    CU_ASSERT_EQUAL(seen.count, 0);
    CU_ASSERT_EQUAL(accum_next_deadline(&acc, T0, false), T0 + 60000);
    accum_expire(&acc, T0 + 60000);
    report_done();
    CU_ASSERT_EQUAL(seen.count, 2);
    CU_ASSERT_EQUAL(seen.last_err, VERITY_ETIMEOUT);
    CU_ASSERT_FALSE(acc.need_reinit); /* never sealed: no sequence was used */
    teardown();
}

static void test_fenced_producer_stops(void)
{
    setup(1, 1 << 20, 1000, 0, true);
    struct pbatch *out[2];
    CU_ASSERT_EQUAL(add(0, NULL, 5, 0), 0);
    CU_ASSERT_EQUAL(accum_drain(&acc, T0, false, out, 2, 1 << 20), 1);
    CU_ASSERT_EQUAL(add(0, NULL, 5, 1), 0);
    accum_complete(&acc, out[0], VERITY_EFENCED, 0, false, T0);
    report_done();
    CU_ASSERT_EQUAL(seen.count, 2);
    CU_ASSERT_EQUAL(seen.last_err, VERITY_EFENCED);
    CU_ASSERT_EQUAL(add(0, NULL, 5, 2), VERITY_EFENCED);
    teardown();
}

static void test_explicit_batch_carries_idempotency_key(void)
{
    setup(4, 1 << 20, 1000, 1000, true);
    uint8_t key[16];
    verity_idempotency_key("order-42", 8, key);
    struct verity_record recs[3] = {
        {.value = "a", .value_len = 1},
        {.value = "b", .value_len = 1},
        {.value = "c", .value_len = 1},
    };
    CU_ASSERT_EQUAL(add(2, NULL, 5, 0), 0); /* an open batch it must not join */
    CU_ASSERT_EQUAL(accum_append_batch(&acc, topic, 2, recs, 3, key, on_report, NULL, T0, WALL),
                    0);
    struct pbatch *out[4];
    size_t n = accum_drain(&acc, T0, false, out, 4, 1 << 20);
    CU_ASSERT_EQUAL_FATAL(n, 2); /* closed by the explicit batch despite linger */
    CU_ASSERT_EQUAL(out[1]->b.count, 3);
    struct batch_hdr h;
    CU_ASSERT_EQUAL(batch_hdr_decode(out[1]->b.buf, out[1]->b.len, &h), 0);
    CU_ASSERT(h.attributes & BATCH_ATTR_IDEM_KEY);
    CU_ASSERT_EQUAL(memcmp(h.idem_key, key, 16), 0);
    /* Deduplicated by its key: no producer id, no sequence taken. */
    CU_ASSERT_EQUAL(h.producer_id, -1);
    CU_ASSERT_EQUAL(h.producer_epoch, -1);
    CU_ASSERT_EQUAL(h.base_sequence, -1);
    CU_ASSERT_EQUAL(batch_validate(out[1]->b.buf, out[1]->b.len, NULL), 0);
    CU_ASSERT_EQUAL(batch_hdr_decode(out[0]->b.buf, out[0]->b.len, &h), 0);
    CU_ASSERT_EQUAL(h.producer_id, 42);
    CU_ASSERT_EQUAL(h.base_sequence, 0);
    CU_ASSERT_EQUAL(topic->parts[2].next_sequence, 1);
    CU_ASSERT_EQUAL(accum_append_batch(&acc, topic, 2, recs, 0, key, NULL, NULL, T0, WALL),
                    VERITY_EINVAL);
    teardown();
}

int main(void)
{
    static const struct {
        const char *name;
        void (*fn)(void);
    } tests[] = {
        {"records_share_a_batch_until_batch_bytes", test_records_share_a_batch_until_batch_bytes},
        {"batch_records_limit_closes_batch", test_batch_records_limit_closes_batch},
        {"large_record_gets_own_batch_and_ceiling_holds",
         test_large_record_gets_own_batch_and_ceiling_holds},
        {"buffer_limit_refuses_then_frees_on_reports",
         test_buffer_limit_refuses_then_frees_on_reports},
        {"linger_holds_open_batch_and_flush_sends_it",
         test_linger_holds_open_batch_and_flush_sends_it},
        {"keyed_records_follow_the_hash", test_keyed_records_follow_the_hash},
        {"null_keys_stick_to_a_partition_per_batch", test_null_keys_stick_to_a_partition_per_batch},
        {"sequences_and_identity_are_in_the_header", test_sequences_and_identity_are_in_the_header},
        {"without_idempotence_no_producer_fields", test_without_idempotence_no_producer_fields},
        {"nothing_is_sent_before_the_producer_id", test_nothing_is_sent_before_the_producer_id},
        {"retry_resends_same_bytes_in_order", test_retry_resends_same_bytes_in_order},
        {"at_most_five_batches_in_flight_per_partition",
         test_at_most_five_batches_in_flight_per_partition},
        {"request_byte_budget_is_respected", test_request_byte_budget_is_respected},
        {"fatal_error_reports_and_new_epoch_restamps",
         test_fatal_error_reports_and_new_epoch_restamps},
        {"gap_at_oldest_batch_asks_for_new_epoch", test_gap_at_oldest_batch_asks_for_new_epoch},
        {"delivery_timeout_fails_queued_batches", test_delivery_timeout_fails_queued_batches},
        {"fenced_producer_stops", test_fenced_producer_stops},
        {"explicit_batch_carries_idempotency_key", test_explicit_batch_carries_idempotency_key},
    };
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    CU_pSuite s = CU_add_suite("client_accum", NULL, NULL);
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
