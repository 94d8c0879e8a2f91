/*
 * Snapshot files (storage/snap.h): round trip, every kind of damage refused,
 * atomic replacement under write faults, and the link to the log (a snapshot
 * matches only a log holding a batch that ends at its offset with its chain
 * hash).
 */
#include <CUnit/Basic.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "storage/batch.h"
#include "storage/snap.h"
#include "storage/vlog.h"
#include "tests/support/tutil.h"
#include "tests/support/vio_fault.h"
#include "verity/errors.h"

static struct snap_hdr hdr(uint64_t offset, uint8_t fill, size_t len)
{
    struct snap_hdr h = {.kind = SNAP_IDEM, .offset = offset, .length = len};
    memset(h.chain, fill, sizeof h.chain);
    return h;
}

static void test_round_trip(void)
{
    char *dir = tu_tmpdir("snap");
    uint8_t payload[300];
    for (size_t i = 0; i < sizeof payload; i++)
        payload[i] = (uint8_t)(i * 7);
    struct snap_hdr h = hdr(1234, 0xab, sizeof payload), back;
    CU_ASSERT_EQUAL_FATAL(snap_write(NULL, dir, "x.snap", &h, payload, sizeof payload), 0);
    uint8_t *p = NULL;
    CU_ASSERT_EQUAL_FATAL(snap_read(NULL, dir, "x.snap", SNAP_IDEM, &back, &p), 0);
    CU_ASSERT_EQUAL(back.offset, 1234);
    CU_ASSERT_EQUAL(back.length, sizeof payload);
    CU_ASSERT_EQUAL(memcmp(back.chain, h.chain, 32), 0);
    CU_ASSERT_EQUAL(memcmp(p, payload, sizeof payload), 0);
    free(p);
    /* An empty payload is a valid snapshot too. */
    struct snap_hdr e = hdr(0, 0, 0);
    CU_ASSERT_EQUAL(snap_write(NULL, dir, "e.snap", &e, "", 0), 0);
    CU_ASSERT_EQUAL(snap_read(NULL, dir, "e.snap", SNAP_IDEM, &back, &p), 0);
    free(p);
    CU_ASSERT_EQUAL(snap_read(NULL, dir, "missing.snap", SNAP_IDEM, &back, &p), -ENOENT);
    tu_rmrf(dir);
    free(dir);
}

static void test_damage_refused(void)
{
    char *dir = tu_tmpdir("snap");
    char path[600];
    uint8_t payload[200] = {1, 2, 3};
    struct snap_hdr h = hdr(99, 0x11, sizeof payload), back;
    uint8_t *p = NULL;
    snprintf(path, sizeof path, "%s/x.snap", dir);
    /* Every bit of header and payload matters. */
    for (uint64_t pos = 0; pos < SNAP_HDR_SIZE + sizeof payload; pos += 7) {
        CU_ASSERT_EQUAL_FATAL(snap_write(NULL, dir, "x.snap", &h, payload, sizeof payload), 0);
        CU_ASSERT_EQUAL_FATAL(tu_flip_bit(path, pos, (unsigned)(pos % 8)), 0);
        int rc = snap_read(NULL, dir, "x.snap", SNAP_IDEM, &back, &p);
        CU_ASSERT_EQUAL(rc, VERITY_ECORRUPT);
        CU_ASSERT_PTR_NULL(p);
    }
    /* Truncated, and another kind. */
    CU_ASSERT_EQUAL_FATAL(snap_write(NULL, dir, "x.snap", &h, payload, sizeof payload), 0);
    CU_ASSERT_EQUAL(snap_read(NULL, dir, "x.snap", SNAP_GROUPS, &back, &p), VERITY_ECORRUPT);
    CU_ASSERT_EQUAL_FATAL(truncate(path, SNAP_HDR_SIZE + 10), 0);
    CU_ASSERT_EQUAL(snap_read(NULL, dir, "x.snap", SNAP_IDEM, &back, &p), VERITY_ECORRUPT);
    CU_ASSERT_EQUAL_FATAL(truncate(path, 10), 0);
    CU_ASSERT_EQUAL(snap_read(NULL, dir, "x.snap", SNAP_IDEM, &back, &p), VERITY_ECORRUPT);
    tu_rmrf(dir);
    free(dir);
}

/* A write that fails (ENOSPC on the temp file, a failed fsync, a failed
 * rename) leaves the previous snapshot readable and no temp file behind. */
static void test_failed_write_keeps_previous(void)
{
    char *dir = tu_tmpdir("snap");
    struct vio_fault *f = vio_fault_new();
    const struct vio *io = vio_fault_io(f);
    uint8_t a[64] = {0xaa}, b[64] = {0xbb}, *p = NULL;
    struct snap_hdr ha = hdr(1, 1, sizeof a), hb = hdr(2, 2, sizeof b), back;
    CU_ASSERT_EQUAL_FATAL(snap_write(io, dir, "x.snap", &ha, a, sizeof a), 0);
    const struct vio_fault_rule rules[] = {
        {.op = VF_PWRITE, .kind = VF_ENOSPC, .path_suffix = "x.snap.tmp", .after_n = 1},
        {.op = VF_FSYNC, .kind = VF_EIO, .path_suffix = "x.snap.tmp"},
        {.op = VF_RENAME, .kind = VF_EIO, .path_suffix = "x.snap.tmp"},
    };
    for (size_t i = 0; i < 3; i++) {
        int id = vio_fault_arm(f, &rules[i]);
        CU_ASSERT_TRUE_FATAL(id >= 0);
        CU_ASSERT_NOT_EQUAL(snap_write(io, dir, "x.snap", &hb, b, sizeof b), 0);
        CU_ASSERT_EQUAL(vio_fault_fired(f, id), 1);
        vio_fault_disarm_all(f);
        CU_ASSERT_EQUAL(snap_read(NULL, dir, "x.snap", SNAP_IDEM, &back, &p), 0);
        CU_ASSERT_EQUAL(back.offset, 1);
        CU_ASSERT_TRUE(p && p[0] == 0xaa);
        free(p);
        p = NULL;
        char tmp[600];
        snprintf(tmp, sizeof tmp, "%s/x.snap.tmp", dir);
        CU_ASSERT_EQUAL(access(tmp, F_OK), -1);
    }
    CU_ASSERT_EQUAL(snap_write(io, dir, "x.snap", &hb, b, sizeof b), 0);
    CU_ASSERT_EQUAL(snap_read(NULL, dir, "x.snap", SNAP_IDEM, &back, &p), 0);
    CU_ASSERT_EQUAL(back.offset, 2);
    free(p);
    vio_fault_free(f);
    tu_rmrf(dir);
    free(dir);
}

static void test_matches_only_its_log(void)
{
    char *dir = tu_tmpdir("snap");
    struct vlog_config c;
    vlog_config_default(&c);
    c.durability = VLOG_DURABILITY_ALWAYS;
    c.checkpoint_records = 0;
    struct vlog *log;
    CU_ASSERT_EQUAL_FATAL(vlog_open(dir, &c, tu_now_ms(), &log, NULL), 0);
    struct batch_builder b;
    CU_ASSERT_EQUAL_FATAL(batch_builder_init(&b, 1 << 16), 0);
    for (int i = 0; i < 5; i++) {
        CU_ASSERT_EQUAL_FATAL(tu_build_batch(&b, "m", (uint64_t)i * 4, 4, 50, 1), 0);
        CU_ASSERT_EQUAL_FATAL(vlog_append(log, b.buf, b.len, 1, NULL), 0);
    }
    struct snap_hdr h = {.kind = SNAP_IDEM, .offset = 12};
    CU_ASSERT_EQUAL(snap_chain_at(log, 12, h.chain), 0);
    CU_ASSERT_EQUAL(snap_matches(log, &h), 1);
    struct snap_hdr z = {.kind = SNAP_IDEM, .offset = 0};
    CU_ASSERT_EQUAL(snap_matches(log, &z), 1); /* the empty prefix */
    struct snap_hdr bad = h;
    bad.chain[5] ^= 1;
    CU_ASSERT_EQUAL(snap_matches(log, &bad), 0); /* another log's chain */
    bad = h;
    bad.offset = 13;
    CU_ASSERT_EQUAL(snap_matches(log, &bad), 0); /* not a batch boundary */
    bad.offset = 24;
    CU_ASSERT_EQUAL(snap_matches(log, &bad), 0); /* past the end */
    uint8_t chain[32];
    CU_ASSERT_EQUAL(snap_chain_at(log, 13, chain), VERITY_EOFFSET);
    batch_builder_deinit(&b);
    vlog_abandon(log);
    tu_rmrf(dir);
    free(dir);
}

int main(void)
{
    static const struct {
        const char *name;
        void (*fn)(void);
    } tests[] = {
        {"snapshot round trip", test_round_trip},
        {"any damaged byte, truncation or wrong kind is refused", test_damage_refused},
        {"a failed write keeps the previous snapshot, no temp file", test_failed_write_keeps_previous},
        {"a snapshot matches only a log with its offset and chain", test_matches_only_its_log},
    };
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    CU_pSuite s = CU_add_suite("snap", NULL, NULL);
    for (size_t i = 0; s && i < sizeof tests / sizeof tests[0]; i++)
        CU_add_test(s, tests[i].name, tests[i].fn);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    unsigned fails = CU_get_number_of_failures() + CU_get_number_of_suites_failed();
    CU_cleanup_registry();
    return fails ? 1 : 0;
}
