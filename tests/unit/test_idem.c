/*
 * Partition idempotence state (broker/idem.h): producer retention, and the
 * snapshot encoding (round trip, refusal of bad bytes leaving the state
 * empty, limits).
 */
#include <CUnit/Basic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "broker/idem.h"
#include "verity/errors.h"

static const uint8_t seed[16] = "idem-test-seed!";

static struct batch_hdr prod(int64_t pid, int16_t epoch, int32_t seq, uint32_t n)
{
    struct batch_hdr h;
    memset(&h, 0, sizeof h);
    h.producer_id = pid;
    h.producer_epoch = epoch;
    h.base_sequence = seq;
    h.record_count = n;
    return h;
}

static struct batch_hdr keyed(uint8_t k)
{
    struct batch_hdr h = prod(-1, -1, -1, 1);
    h.attributes = BATCH_ATTR_IDEM_KEY;
    memset(h.idem_key, k, sizeof h.idem_key);
    return h;
}

static void fill(struct idem *s)
{
    uint64_t off = 0;
    for (int r = 0; r < 8; r++)
        for (int64_t pid = 1; pid <= 5; pid++) {
            struct batch_hdr h = prod(pid, 0, r * 2, 2);
            CU_ASSERT_EQUAL_FATAL(idem_record(s, &h, off, off + 1, 1000 + pid * 100 + r), 0);
            off += 2;
        }
    for (uint8_t k = 0; k < 20; k++) {
        struct batch_hdr h = keyed(k);
        CU_ASSERT_EQUAL_FATAL(idem_record(s, &h, off, off, 2000 + k), 0);
        off++;
    }
}

static void test_producers_expire_after_retention(void)
{
    struct idem s;
    CU_ASSERT_EQUAL_FATAL(idem_init(&s, 100, 100, 600000, seed), 0);
    s.producer_retention_ms = 1000;
    fill(&s); /* producer p's newest batch is at 1000 + 100 p + 7 */
    CU_ASSERT_EQUAL(idem_expire_producers(&s, 2000), 0);
    CU_ASSERT_EQUAL(idem_expire_producers(&s, 2208), 2); /* 1107 and 1207 < 1208 */
    CU_ASSERT_PTR_NULL(idem_producer_get(&s, 1));
    CU_ASSERT_PTR_NULL(idem_producer_get(&s, 2));
    CU_ASSERT_PTR_NOT_NULL(idem_producer_get(&s, 3));
    CU_ASSERT_EQUAL(s.pcount, 3);
    /* A forgotten producer is new again: it starts at sequence 0 (its
     * client starts a new epoch on the refusal of a later one). */
    struct batch_hdr h = prod(1, 0, 2, 2), h0 = prod(1, 1, 0, 2);
    struct idem_batch dup;
    CU_ASSERT_EQUAL(idem_check(&s, &h, 3000, &dup, NULL, 0), VERITY_EOUTOFORDER);
    CU_ASSERT_EQUAL(idem_check(&s, &h0, 3000, &dup, NULL, 0), IDEM_APPEND);
    s.producer_retention_ms = 0; /* never */
    CU_ASSERT_EQUAL(idem_expire_producers(&s, INT64_MAX / 2), 0);
    idem_deinit(&s);
}

/* A producer the partition does not know starts at sequence 0: a later
 * batch first, then a retry of the earlier one, would have been answered
 * as a duplicate and never written (seen in a cluster kill loop). */
static void test_unknown_producer_starts_at_zero(void)
{
    struct idem s;
    struct idem_batch dup;
    char msg[200];
    CU_ASSERT_EQUAL_FATAL(idem_init(&s, 100, 100, 600000, seed), 0);
    struct batch_hdr second = prod(7, 0, 1, 1), first = prod(7, 0, 0, 1);
    CU_ASSERT_EQUAL(idem_check(&s, &second, 1000, &dup, msg, sizeof msg), VERITY_EOUTOFORDER);
    CU_ASSERT_PTR_NOT_NULL(strstr(msg, "not known on this partition"));
    CU_ASSERT_EQUAL(idem_check(&s, &first, 1000, &dup, msg, sizeof msg), IDEM_APPEND);
    CU_ASSERT_EQUAL_FATAL(idem_record(&s, &first, 0, 0, 1000), 0);
    CU_ASSERT_EQUAL(idem_check(&s, &second, 1001, &dup, msg, sizeof msg), IDEM_APPEND);
    CU_ASSERT_EQUAL_FATAL(idem_record(&s, &second, 1, 1, 1001), 0);
    CU_ASSERT_EQUAL(idem_check(&s, &first, 1002, &dup, msg, sizeof msg), IDEM_DUPLICATE);
    /* expired state: a later sequence is refused, a new epoch at 0 goes */
    s.producer_retention_ms = 10;
    CU_ASSERT_EQUAL(idem_expire_producers(&s, 5000), 1);
    struct batch_hdr later = prod(7, 0, 2, 1), fresh = prod(7, 1, 0, 1);
    CU_ASSERT_EQUAL(idem_check(&s, &later, 5000, &dup, msg, sizeof msg), VERITY_EOUTOFORDER);
    CU_ASSERT_EQUAL(idem_check(&s, &fresh, 5000, &dup, msg, sizeof msg), IDEM_APPEND);
    idem_deinit(&s);
}

static void test_snapshot_round_trip(void)
{
    struct idem a, b;
    CU_ASSERT_EQUAL_FATAL(idem_init(&a, 100, 100, 600000, seed), 0);
    CU_ASSERT_EQUAL_FATAL(idem_init(&b, 100, 100, 600000, (const uint8_t *)"other-seed-here"), 0);
    fill(&a);
    uint8_t *buf = NULL, *buf2 = NULL;
    size_t len = 0, len2 = 0;
    CU_ASSERT_EQUAL_FATAL(idem_encode(&a, &buf, &len), 0);
    CU_ASSERT_EQUAL_FATAL(idem_decode(&b, buf, len), 0);
    CU_ASSERT_EQUAL(b.pcount, 5);
    CU_ASSERT_EQUAL(b.kcount, 20);
    /* Same answers: a retry of each producer's newest batch and of a key. */
    for (int64_t pid = 1; pid <= 5; pid++) {
        struct batch_hdr h = prod(pid, 0, 14, 2);
        struct idem_batch d1, d2;
        CU_ASSERT_EQUAL(idem_check(&a, &h, 2500, &d1, NULL, 0), IDEM_DUPLICATE);
        CU_ASSERT_EQUAL(idem_check(&b, &h, 2500, &d2, NULL, 0), IDEM_DUPLICATE);
        CU_ASSERT_EQUAL(memcmp(&d1, &d2, sizeof d1), 0);
        const struct idem_producer *p = idem_producer_get(&a, pid), *q = idem_producer_get(&b, pid);
        CU_ASSERT_TRUE(p && q && p->last_ms == q->last_ms && p->n == q->n);
    }
    struct batch_hdr k = keyed(7);
    struct idem_batch d;
    CU_ASSERT_EQUAL(idem_check(&b, &k, 2500, &d, NULL, 0), IDEM_DUPLICATE);
    CU_ASSERT_EQUAL(d.base_offset, 80 + 7);
    /* Key order (FIFO) survives: expiry removes the oldest first. */
    idem_expire(&b, 2005 + 600000);
    CU_ASSERT_EQUAL(b.kcount, 15);
    /* Encoding b before expiry would equal a's bytes modulo order; check
     * a second round trip keeps the count. */
    CU_ASSERT_EQUAL_FATAL(idem_encode(&b, &buf2, &len2), 0);
    CU_ASSERT_EQUAL(len2, len - 5 * 40);
    free(buf);
    free(buf2);
    idem_deinit(&a);
    idem_deinit(&b);
}

static void test_snapshot_bad_bytes_leave_state_empty(void)
{
    struct idem a;
    CU_ASSERT_EQUAL_FATAL(idem_init(&a, 100, 100, 600000, seed), 0);
    fill(&a);
    uint8_t *buf = NULL;
    size_t len = 0;
    CU_ASSERT_EQUAL_FATAL(idem_encode(&a, &buf, &len), 0);
    for (size_t cut = 0; cut < len; cut += 3) {
        struct idem b;
        CU_ASSERT_EQUAL_FATAL(idem_init(&b, 100, 100, 600000, seed), 0);
        CU_ASSERT_EQUAL(idem_decode(&b, buf, cut), VERITY_ECORRUPT);
        CU_ASSERT_EQUAL(b.pcount + b.kcount, 0);
        idem_deinit(&b);
    }
    /* Invalid fields: a negative pid, n above the ring, a duplicate pid. */
    uint8_t *c = malloc(len);
    memcpy(c, buf, len);
    c[4 + 7] = 0x80; /* first producer's pid < 0 */
    struct idem b;
    CU_ASSERT_EQUAL_FATAL(idem_init(&b, 100, 100, 600000, seed), 0);
    CU_ASSERT_EQUAL(idem_decode(&b, c, len), VERITY_ECORRUPT);
    memcpy(c, buf, len);
    c[4 + 10] = IDEM_SEQ_KEEP + 1;
    CU_ASSERT_EQUAL(idem_decode(&b, c, len), VERITY_ECORRUPT);
    memcpy(c, buf, len);
    memcpy(c + 4 + 140, c + 4, 8); /* second producer gets the first one's pid */
    CU_ASSERT_EQUAL(idem_decode(&b, c, len), VERITY_ECORRUPT);
    CU_ASSERT_EQUAL(b.pcount + b.kcount, 0);
    idem_deinit(&b);
    /* Limits below what the snapshot holds. */
    CU_ASSERT_EQUAL_FATAL(idem_init(&b, 4, 100, 600000, seed), 0);
    CU_ASSERT_EQUAL(idem_decode(&b, buf, len), VERITY_ELIMIT);
    idem_deinit(&b);
    CU_ASSERT_EQUAL_FATAL(idem_init(&b, 100, 10, 600000, seed), 0);
    CU_ASSERT_EQUAL(idem_decode(&b, buf, len), VERITY_ELIMIT);
    CU_ASSERT_EQUAL(b.pcount + b.kcount, 0);
    idem_deinit(&b);
    free(c);
    free(buf);
    idem_deinit(&a);
}

int main(void)
{
    static const struct {
        const char *name;
        void (*fn)(void);
    } tests[] = {
        {"producers expire after producer_retention_ms", test_producers_expire_after_retention},
        {"an unknown producer starts at sequence 0", test_unknown_producer_starts_at_zero},
        {"snapshot round trip answers the same", test_snapshot_round_trip},
        {"bad snapshot bytes are refused and leave the state empty",
         test_snapshot_bad_bytes_leave_state_empty},
    };
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    CU_pSuite s = CU_add_suite("idem", NULL, NULL);
    for (size_t i = 0; s && i < sizeof tests / sizeof tests[0]; i++)
        CU_add_test(s, tests[i].name, tests[i].fn);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    unsigned fails = CU_get_number_of_failures() + CU_get_number_of_suites_failed();
    CU_cleanup_registry();
    return fails ? 1 : 0;
}
