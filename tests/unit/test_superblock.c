/*
 * Superblock copies (broker/vsr/superblock.c): round trip, every single-bit
 * flip refused, and every combination of four copies each new, old, torn
 * (a prefix of the new bytes over the old), corrupt (one bit flipped) or
 * missing: the valid copy with the highest sequence wins, and with no valid
 * copy the answer is VERITY_ENOTFOUND.
 */
#include <CUnit/Basic.h>
#include <CUnit/CUnit.h>
#include <stdio.h>
#include <string.h>

#include "broker/vsr_hash.h"
#include "broker/vsr/superblock.h"
#include "verity/errors.h"

static struct vsr_superblock sample(uint64_t seq)
{
    struct vsr_superblock s;
    memset(&s, 0, sizeof s);
    s.sequence = seq;
    s.cluster = 7;
    s.replica = 1;
    s.replica_count = 3;
    s.view = 10 + seq;
    s.log_view = 9 + seq;
    s.commit_max = 100 * seq;
    s.sv_op = 100 * seq + 3;
    for (int i = 0; i < 32; i++)
        s.sv_checksum[i] = (uint8_t)(i + seq);
    s.sv_count = seq < VSR_SB_SV_SUMS ? (uint32_t)seq : VSR_SB_SV_SUMS;
    for (uint32_t k = 0; k < s.sv_count; k++)
        for (int i = 0; i < 32; i++)
            s.sv_sums[k][i] = (uint8_t)(k * 40 + (uint32_t)i + seq + 1);
    return s;
}

static void test_round_trip_keeps_every_field(void)
{
    uint8_t b[VSR_SB_SIZE];
    struct vsr_superblock s = sample(5), d;
    vsr_sb_encode(vsr_sha256, NULL, &s, b);
    CU_ASSERT_EQUAL(memcmp(b, "VSB1", 4), 0);
    CU_ASSERT_EQUAL(vsr_sb_decode(vsr_sha256, NULL, b, sizeof b, &d), 0);
    CU_ASSERT_EQUAL(d.sequence, 5);
    CU_ASSERT_EQUAL(d.cluster, 7);
    CU_ASSERT_EQUAL(d.replica, 1);
    CU_ASSERT_EQUAL(d.replica_count, 3);
    CU_ASSERT_EQUAL(d.view, 15);
    CU_ASSERT_EQUAL(d.log_view, 14);
    CU_ASSERT_EQUAL(d.commit_max, 500);
    CU_ASSERT_EQUAL(d.sv_op, 503);
    CU_ASSERT_EQUAL(memcmp(d.sv_checksum, s.sv_checksum, 32), 0);
    CU_ASSERT_EQUAL(d.sv_count, 5);
    CU_ASSERT_EQUAL(memcmp(d.sv_sums, s.sv_sums, sizeof s.sv_sums), 0);
}

static void test_every_bit_flip_is_refused(void)
{
    uint8_t b[VSR_SB_SIZE], x[VSR_SB_SIZE];
    struct vsr_superblock s = sample(3), d;
    vsr_sb_encode(vsr_sha256, NULL, &s, b);
    int refused = 0;
    for (int i = 0; i < VSR_SB_SIZE * 8; i++) {
        memcpy(x, b, sizeof x);
        x[i / 8] ^= (uint8_t)(1u << (i % 8));
        if (vsr_sb_decode(vsr_sha256, NULL, x, sizeof x, &d) == VERITY_ECORRUPT)
            refused++;
    }
    CU_ASSERT_EQUAL(refused, VSR_SB_SIZE * 8);
}

static void test_bad_lengths_and_fields_are_refused(void)
{
    uint8_t b[VSR_SB_SIZE + 1];
    struct vsr_superblock s = sample(2), d;
    vsr_sb_encode(vsr_sha256, NULL, &s, b);
    CU_ASSERT_EQUAL(vsr_sb_decode(vsr_sha256, NULL, b, VSR_SB_SIZE - 1, &d), VERITY_ECORRUPT);
    CU_ASSERT_EQUAL(vsr_sb_decode(vsr_sha256, NULL, b, VSR_SB_SIZE + 1, &d), VERITY_ECORRUPT);
    CU_ASSERT_EQUAL(vsr_sb_decode(vsr_sha256, NULL, NULL, VSR_SB_SIZE, &d), VERITY_ECORRUPT);
    /* a well-checksummed copy that breaks a rule: replica >= count */
    s.replica = 3;
    uint8_t c[VSR_SB_SIZE];
    s.replica = 1;
    vsr_sb_encode(vsr_sha256, NULL, &s, c);
    c[24] = 3;
    vsr_sha256(NULL, c, VSR_SB_CHECKSUM_OFF, NULL, 0, c + VSR_SB_CHECKSUM_OFF);
    CU_ASSERT_EQUAL(vsr_sb_decode(vsr_sha256, NULL, c, VSR_SB_SIZE, &d), VERITY_ECORRUPT);
    /* log_view > view */
    vsr_sb_encode(vsr_sha256, NULL, &s, c);
    c[40] = 0xff;
    vsr_sha256(NULL, c, VSR_SB_CHECKSUM_OFF, NULL, 0, c + VSR_SB_CHECKSUM_OFF);
    CU_ASSERT_EQUAL(vsr_sb_decode(vsr_sha256, NULL, c, VSR_SB_SIZE, &d), VERITY_ECORRUPT);
    /* more head checksums than there is room for */
    vsr_sb_encode(vsr_sha256, NULL, &s, c);
    c[96] = VSR_SB_SV_SUMS + 1;
    vsr_sha256(NULL, c, VSR_SB_CHECKSUM_OFF, NULL, 0, c + VSR_SB_CHECKSUM_OFF);
    CU_ASSERT_EQUAL(vsr_sb_decode(vsr_sha256, NULL, c, VSR_SB_SIZE, &d), VERITY_ECORRUPT);
    /* a byte in the reserved space after the checksums in use */
    vsr_sb_encode(vsr_sha256, NULL, &s, c);
    CU_ASSERT_EQUAL(vsr_sb_decode(vsr_sha256, NULL, c, VSR_SB_SIZE, &d), 0);
    c[104 + 32 * s.sv_count] = 1;
    vsr_sha256(NULL, c, VSR_SB_CHECKSUM_OFF, NULL, 0, c + VSR_SB_CHECKSUM_OFF);
    CU_ASSERT_EQUAL(vsr_sb_decode(vsr_sha256, NULL, c, VSR_SB_SIZE, &d), VERITY_ECORRUPT);
    /* flags: the rejoining bit round-trips, any other bit is refused */
    s.flags = VSR_SB_REJOINING;
    vsr_sb_encode(vsr_sha256, NULL, &s, c);
    CU_ASSERT_EQUAL(vsr_sb_decode(vsr_sha256, NULL, c, VSR_SB_SIZE, &d), 0);
    CU_ASSERT_EQUAL(d.flags, VSR_SB_REJOINING);
    for (int bit = 1; bit < 8; bit++) {
        c[26] = (uint8_t)(VSR_SB_REJOINING | (1u << bit));
        vsr_sha256(NULL, c, VSR_SB_CHECKSUM_OFF, NULL, 0, c + VSR_SB_CHECKSUM_OFF);
        CU_ASSERT_EQUAL(vsr_sb_decode(vsr_sha256, NULL, c, VSR_SB_SIZE, &d), VERITY_ECORRUPT);
    }
    s.flags = 0;
}

enum copy_state { C_NEW, C_OLD, C_TORN, C_CORRUPT, C_MISSING, C_STATES };

static void test_every_copy_combination(void)
{
    uint8_t oldb[VSR_SB_SIZE], newb[VSR_SB_SIZE];
    struct vsr_superblock so = sample(4), sn = sample(5);
    vsr_sb_encode(vsr_sha256, NULL, &so, oldb);
    vsr_sb_encode(vsr_sha256, NULL, &sn, newb);
    int combos = 0, bad = 0, reported = 0;
    uint8_t copies[VSR_SB_COPIES][VSR_SB_SIZE];
    for (int code = 0; code < 625; code++) {
        int st[VSR_SB_COPIES], c = code;
        const uint8_t *cp[VSR_SB_COPIES];
        size_t lens[VSR_SB_COPIES];
        int any_new = 0, any_old = 0;
        for (int i = 0; i < VSR_SB_COPIES; i++) {
            st[i] = c % C_STATES;
            c /= C_STATES;
            cp[i] = copies[i];
            lens[i] = VSR_SB_SIZE;
            switch (st[i]) {
            case C_NEW:
                memcpy(copies[i], newb, VSR_SB_SIZE);
                any_new = 1;
                break;
            case C_OLD:
                memcpy(copies[i], oldb, VSR_SB_SIZE);
                any_old = 1;
                break;
            case C_TORN: {
                /* a write of the new copy cut at a byte boundary (never all) */
                size_t cut = 1 + (size_t)((code * 7 + i * 13) % (VSR_SB_SIZE - 1));
                memcpy(copies[i], oldb, VSR_SB_SIZE);
                memcpy(copies[i], newb, cut);
                break;
            }
            case C_CORRUPT:
                memcpy(copies[i], (code + i) % 2 ? newb : oldb, VSR_SB_SIZE);
                copies[i][(code * 31 + i * 17) % VSR_SB_SIZE] ^= (uint8_t)(1u << (code % 8));
                break;
            case C_MISSING:
                cp[i] = NULL;
                lens[i] = 0;
                break;
            }
        }
        /* A torn write whose cut falls after the last byte that differs is
         * simply the new copy; classify by content. */
        for (int i = 0; i < VSR_SB_COPIES; i++)
            if (st[i] == C_TORN && memcmp(copies[i], newb, VSR_SB_SIZE) == 0) {
                st[i] = C_NEW;
                any_new = 1;
            } else if (st[i] == C_TORN && memcmp(copies[i], oldb, VSR_SB_SIZE) == 0) {
                st[i] = C_OLD; /* cut inside the bytes both copies share */
                any_old = 1;
            }
        struct vsr_superblock got;
        int which = -1;
        int rc = vsr_sb_choose(vsr_sha256, NULL, cp, lens, VSR_SB_COPIES, &got, &which);
        combos++;
        if (any_new) {
            if (rc != 0 || got.sequence != 5 || got.view != sn.view || st[which] != C_NEW)
                bad++;
        } else if (any_old) {
            if (rc != 0 || got.sequence != 4 || got.log_view != so.log_view || st[which] != C_OLD)
                bad++;
        } else if (rc != VERITY_ENOTFOUND) {
            bad++;
        }
        if (bad && !reported) {
            reported = 1;
            printf("\ncombination %d: states %d %d %d %d rc %d which %d seq %llu\n", code, st[0],
                   st[1], st[2], st[3], rc, which, (unsigned long long)got.sequence);
        }
    }
    CU_ASSERT_EQUAL(combos, 625);
    CU_ASSERT_EQUAL(bad, 0);
}

static void test_update_interrupted_after_each_copy(void)
{
    /* Copies are written 0, 1, 2, 3; a crash after k copies leaves k new
     * copies, possibly one torn one next, and the old rest. */
    uint8_t oldb[VSR_SB_SIZE], newb[VSR_SB_SIZE], copies[VSR_SB_COPIES][VSR_SB_SIZE];
    struct vsr_superblock so = sample(8), sn = sample(9), got;
    vsr_sb_encode(vsr_sha256, NULL, &so, oldb);
    vsr_sb_encode(vsr_sha256, NULL, &sn, newb);
    for (int k = 0; k <= VSR_SB_COPIES; k++)
        for (int torn = 0; torn < 2; torn++) {
            const uint8_t *cp[VSR_SB_COPIES];
            size_t lens[VSR_SB_COPIES];
            for (int i = 0; i < VSR_SB_COPIES; i++) {
                memcpy(copies[i], i < k ? newb : oldb, VSR_SB_SIZE);
                if (torn && i == k)
                    memcpy(copies[i], newb, VSR_SB_SIZE / 2);
                cp[i] = copies[i];
                lens[i] = VSR_SB_SIZE;
            }
            CU_ASSERT_EQUAL(vsr_sb_choose(vsr_sha256, NULL, cp, lens, VSR_SB_COPIES, &got, NULL), 0);
            CU_ASSERT_EQUAL(got.sequence, k > 0 ? 9u : 8u);
        }
}

static void test_same_sequence_disagreement_is_corrupt(void)
{
    uint8_t a[VSR_SB_SIZE], b[VSR_SB_SIZE];
    struct vsr_superblock s = sample(6), t = sample(6), got;
    t.view += 1;
    vsr_sb_encode(vsr_sha256, NULL, &s, a);
    vsr_sb_encode(vsr_sha256, NULL, &t, b);
    const uint8_t *cp[2] = {a, b};
    size_t lens[2] = {VSR_SB_SIZE, VSR_SB_SIZE};
    CU_ASSERT_EQUAL(vsr_sb_choose(vsr_sha256, NULL, cp, lens, 2, &got, NULL), VERITY_ECORRUPT);
}

int main(void)
{
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    CU_pSuite s = CU_add_suite("superblock", NULL, NULL);
    CU_add_test(s, "round trip keeps every field", test_round_trip_keeps_every_field);
    CU_add_test(s, "every bit flip is refused", test_every_bit_flip_is_refused);
    CU_add_test(s, "bad lengths and fields are refused", test_bad_lengths_and_fields_are_refused);
    CU_add_test(s, "every copy combination (625)", test_every_copy_combination);
    CU_add_test(s, "update interrupted after each copy", test_update_interrupted_after_each_copy);
    CU_add_test(s, "same sequence disagreement is corrupt",
                test_same_sequence_disagreement_is_corrupt);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    unsigned failed = CU_get_number_of_failures();
    CU_cleanup_registry();
    return failed ? 1 : 0;
}
