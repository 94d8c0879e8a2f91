/*
 * The zero-filled region ahead of the active segment (storage/vlog_zero.c,
 * docs/FORMAT.md "Preallocated tail"): recovery takes a tail of zero bytes
 * for the end of the log, never a torn or damaged record; rolls and clean
 * closes cut the file to its batches; crashes (tests/support/vio_fault.c)
 * with a zero tail keep every synced batch.
 */
#include <CUnit/Basic.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "storage/batch.h"
#include "storage/verify.h"
#include "storage/vlog.h"
#include "tests/support/tutil.h"
#include "tests/support/vio_fault.h"
#include "verity/errors.h"

struct env {
    char *dir;
    char seg0[4200];
    struct vlog_config cfg;
    struct vlog *log;
    struct batch_builder b;
    uint64_t id;
};

static void env_open(struct env *e, enum vlog_durability d, const struct vio *io)
{
    memset(e, 0, sizeof *e);
    e->dir = tu_tmpdir("zero");
    snprintf(e->seg0, sizeof e->seg0, "%s/%020d.log", e->dir, 0);
    vlog_config_default(&e->cfg);
    e->cfg.durability = d;
    e->cfg.checkpoint_records = 0;
    e->cfg.io = io;
    CU_ASSERT_EQUAL_FATAL(batch_builder_init(&e->b, 1 << 16), 0);
    CU_ASSERT_EQUAL_FATAL(vlog_open(e->dir, &e->cfg, tu_now_ms(), &e->log, NULL), 0);
}

static int env_append(struct env *e)
{
    CU_ASSERT_EQUAL_FATAL(tu_build_batch(&e->b, "z", e->id, 4, 200, 1), 0);
    int rc = vlog_append(e->log, e->b.buf, e->b.len, 1, NULL);
    if (rc == 0)
        e->id += 4;
    return rc;
}

static int env_reopen(struct env *e, uint64_t *bad)
{
    if (e->log)
        vlog_abandon(e->log);
    e->log = NULL;
    return vlog_open(e->dir, &e->cfg, tu_now_ms(), &e->log, bad);
}

static void env_close(struct env *e)
{
    if (e->log)
        vlog_abandon(e->log);
    batch_builder_deinit(&e->b);
    tu_rmrf(e->dir);
    free(e->dir);
}

static uint64_t end_offset(struct vlog *log)
{
    struct vlog_info in;
    vlog_get_info(log, &in);
    return in.end_offset;
}

static uint64_t log_bytes(struct vlog *log)
{
    struct vlog_info in;
    vlog_get_info(log, &in);
    return in.size_bytes;
}

/* Waits (up to 10 s) until the active segment's file is longer than its
 * batches: the zero thread has run. Returns the file's size. */
static int64_t wait_zero_tail(const char *path, uint64_t size)
{
    for (int i = 0; i < 1000; i++) {
        int64_t fs = tu_file_size(path);
        if (fs > (int64_t)size)
            return fs;
        usleep(10000);
    }
    return tu_file_size(path);
}

/* Writes n bytes of value v at off of path (with no log open on it). */
static void put_bytes(const char *path, uint64_t off, size_t n, uint8_t v)
{
    uint8_t *buf = malloc(n);
    CU_ASSERT_PTR_NOT_NULL_FATAL(buf);
    memset(buf, v, n);
    int fd = open(path, O_WRONLY);
    CU_ASSERT_TRUE_FATAL(fd >= 0);
    CU_ASSERT_EQUAL(pwrite(fd, buf, n, (off_t)off), (ssize_t)n);
    close(fd);
    free(buf);
}

static void assert_verifies(const char *dir, uint64_t end)
{
    struct verify_report rep;
    CU_ASSERT_EQUAL(verify_log_dir(dir, NULL, NULL, NULL, &rep), 0);
    CU_ASSERT_FALSE(rep.found);
    if (rep.found)
        fprintf(stderr, "finding at %" PRIu64 ": %s\n", rep.finding.offset, rep.finding.reason);
    CU_ASSERT_EQUAL(rep.end_offset, end);
}

/* The zero thread keeps a region ahead; killed (abandoned) the file keeps
 * it; reopen takes it for the end: no cut, same offsets, appends continue
 * inside it; `log verify` agrees; a clean close cuts the file to its
 * batches. */
static void test_zero_tail_is_the_end(void)
{
    struct env e;
    env_open(&e, VLOG_DURABILITY_ALWAYS, NULL);
    for (int i = 0; i < 20; i++)
        CU_ASSERT_EQUAL(env_append(&e), 0);
    uint64_t bytes = log_bytes(e.log);
    int64_t fs = wait_zero_tail(e.seg0, bytes);
    CU_ASSERT_TRUE(fs >= (int64_t)(256u << 10)); /* at least ZERO_MIN ahead */
    assert_verifies(e.dir, 80);                  /* live, with its zero tail */
    CU_ASSERT_EQUAL_FATAL(env_reopen(&e, NULL), 0);
    CU_ASSERT_FALSE(vlog_last_recovery(e.log)->cut);
    CU_ASSERT_EQUAL(end_offset(e.log), 80);
    CU_ASSERT_EQUAL(log_bytes(e.log), bytes);
    CU_ASSERT_TRUE(tu_file_size(e.seg0) >= fs); /* the tail is kept, not cut */
    for (int i = 0; i < 5; i++)
        CU_ASSERT_EQUAL(env_append(&e), 0);
    CU_ASSERT_EQUAL(end_offset(e.log), 100);
    CU_ASSERT_EQUAL(vlog_close(e.log, tu_now_ms()), 0);
    e.log = NULL;
    /* close: a checkpoint, then the file cut to exactly its batches */
    CU_ASSERT_EQUAL_FATAL(env_reopen(&e, NULL), 0);
    CU_ASSERT_FALSE(vlog_last_recovery(e.log)->cut);
    CU_ASSERT_EQUAL(tu_file_size(e.seg0), (int64_t)log_bytes(e.log));
    CU_ASSERT_EQUAL(end_offset(e.log), 101);
    vlog_abandon(e.log);
    e.log = NULL;
    assert_verifies(e.dir, 101);
    env_close(&e);
}

/* A log written without preallocation (an older build's directory), given
 * a zero tail by hand: the same rule, no cut. Also with only a few zero
 * bytes (shorter than a batch header). */
static void test_zero_tail_added_by_hand(void)
{
    static const size_t tails[] = {1, 7, 64u << 10};
    for (size_t t = 0; t < sizeof tails / sizeof tails[0]; t++) {
        struct env e;
        env_open(&e, VLOG_DURABILITY_ALWAYS, NULL);
        e.cfg.prealloc_bytes = 0;
        CU_ASSERT_EQUAL_FATAL(env_reopen(&e, NULL), 0);
        for (int i = 0; i < 6; i++)
            CU_ASSERT_EQUAL(env_append(&e), 0);
        uint64_t bytes = log_bytes(e.log);
        vlog_abandon(e.log);
        e.log = NULL;
        CU_ASSERT_EQUAL(tu_file_size(e.seg0), (int64_t)bytes);
        put_bytes(e.seg0, bytes, tails[t], 0);
        assert_verifies(e.dir, 24);
        CU_ASSERT_EQUAL_FATAL(env_reopen(&e, NULL), 0);
        CU_ASSERT_FALSE(vlog_last_recovery(e.log)->cut);
        CU_ASSERT_EQUAL(end_offset(e.log), 24);
        CU_ASSERT_EQUAL(env_append(&e), 0);
        vlog_abandon(e.log);
        e.log = NULL;
        assert_verifies(e.dir, 28);
        env_close(&e);
    }
}

/* A torn record followed by zeros: cut and recorded, as any torn tail. */
static void test_torn_record_then_zeros(void)
{
    struct env e;
    env_open(&e, VLOG_DURABILITY_ALWAYS, NULL);
    for (int i = 0; i < 6; i++)
        CU_ASSERT_EQUAL(env_append(&e), 0);
    uint64_t bytes = log_bytes(e.log);
    /* the next batch, written only in part, then the zero region */
    CU_ASSERT_EQUAL_FATAL(tu_build_batch(&e.b, "z", e.id, 4, 200, 1), 0);
    vlog_abandon(e.log);
    e.log = NULL;
    int64_t fs = tu_file_size(e.seg0);
    int fd = open(e.seg0, O_WRONLY);
    CU_ASSERT_TRUE_FATAL(fd >= 0);
    CU_ASSERT_EQUAL(pwrite(fd, e.b.buf, e.b.len / 2, (off_t)bytes), (ssize_t)(e.b.len / 2));
    close(fd);
    if (fs < (int64_t)(bytes + (64u << 10)))
        put_bytes(e.seg0, bytes + e.b.len / 2, (64u << 10), 0);
    struct verify_report rep;
    CU_ASSERT_NOT_EQUAL(verify_log_dir(e.dir, NULL, NULL, NULL, &rep), 0);
    CU_ASSERT_TRUE(rep.found);
    CU_ASSERT_EQUAL_FATAL(env_reopen(&e, NULL), 0);
    const struct vlog_recovery *r = vlog_last_recovery(e.log);
    CU_ASSERT_TRUE(r->cut);
    CU_ASSERT_EQUAL(r->cut_position, bytes);
    CU_ASSERT_EQUAL(r->cut_offset_first, 24);
    CU_ASSERT_EQUAL(end_offset(e.log), 25); /* + the recovery record */
    vlog_abandon(e.log);
    e.log = NULL;
    assert_verifies(e.dir, 25);
    env_close(&e);
}

/* One nonzero byte anywhere in the zero region: not the end. Nothing valid
 * follows, so recovery cuts it like a torn tail and records why; `log
 * verify` reports it before that. */
static void test_bit_flip_in_zero_region(void)
{
    static const uint64_t where[] = {0, BATCH_HDR_SIZE - 1, BATCH_HDR_SIZE, 5000, (64u << 10) - 1};
    for (size_t w = 0; w < sizeof where / sizeof where[0]; w++) {
        struct env e;
        env_open(&e, VLOG_DURABILITY_ALWAYS, NULL);
        e.cfg.prealloc_bytes = 0;
        CU_ASSERT_EQUAL_FATAL(env_reopen(&e, NULL), 0);
        for (int i = 0; i < 6; i++)
            CU_ASSERT_EQUAL(env_append(&e), 0);
        uint64_t bytes = log_bytes(e.log);
        vlog_abandon(e.log);
        e.log = NULL;
        put_bytes(e.seg0, bytes, 64u << 10, 0);
        put_bytes(e.seg0, bytes + where[w], 1, 0x10);
        struct verify_report rep;
        CU_ASSERT_NOT_EQUAL(verify_log_dir(e.dir, NULL, NULL, NULL, &rep), 0);
        CU_ASSERT_TRUE(rep.found && rep.finding.position == bytes);
        CU_ASSERT_EQUAL_FATAL(env_reopen(&e, NULL), 0);
        const struct vlog_recovery *r = vlog_last_recovery(e.log);
        CU_ASSERT_TRUE(r->cut);
        CU_ASSERT_EQUAL(r->cut_position, bytes);
        CU_ASSERT_EQUAL(r->cut_bytes, 64u << 10);
        if (where[w] >= BATCH_HDR_SIZE)
            CU_ASSERT_PTR_NOT_NULL(strstr(r->reason, "nonzero bytes in the zero tail"));
        CU_ASSERT_EQUAL(end_offset(e.log), 25);
        vlog_abandon(e.log);
        e.log = NULL;
        assert_verifies(e.dir, 25);
        env_close(&e);
    }
}

/* A zeroed header with valid batches after it is damage before the tail:
 * open refuses, nothing is cut. */
static void test_zeroed_header_mid_log_refused(void)
{
    struct env e;
    env_open(&e, VLOG_DURABILITY_ALWAYS, NULL);
    e.cfg.prealloc_bytes = 0;
    e.cfg.index_interval_bytes = 1u << 30; /* recovery scans from byte 0 */
    CU_ASSERT_EQUAL_FATAL(env_reopen(&e, NULL), 0);
    uint64_t at = 0;
    for (int i = 0; i < 6; i++) {
        if (i == 4)
            at = log_bytes(e.log); /* where the fifth batch starts */
        CU_ASSERT_EQUAL(env_append(&e), 0);
    }
    uint64_t bytes = log_bytes(e.log);
    vlog_abandon(e.log);
    e.log = NULL;
    put_bytes(e.seg0, at, BATCH_HDR_SIZE, 0);
    uint64_t bad = 0;
    CU_ASSERT_EQUAL(env_reopen(&e, &bad), VERITY_ECORRUPT);
    CU_ASSERT_EQUAL(bad, 16);
    CU_ASSERT_EQUAL(tu_file_size(e.seg0), (int64_t)bytes);
    env_close(&e);
}

/* Rolls cut the closed segment to its batches: many segments, every closed
 * one exactly its bytes (verify names any zero tail in a closed segment). */
static void test_roll_trims(void)
{
    struct env e;
    env_open(&e, VLOG_DURABILITY_GROUP, NULL);
    e.cfg.segment_bytes = 300u << 10;
    CU_ASSERT_EQUAL_FATAL(env_reopen(&e, NULL), 0);
    for (int i = 0; i < 2000; i++)
        CU_ASSERT_EQUAL_FATAL(env_append(&e), 0);
    struct vlog_info in;
    vlog_get_info(e.log, &in);
    CU_ASSERT_TRUE(in.segments >= 3);
    CU_ASSERT_EQUAL(vlog_wait_durable(e.log, in.end_offset, 10000), 0);
    vlog_abandon(e.log); /* the active one keeps its tail */
    e.log = NULL;
    assert_verifies(e.dir, 8000);
    struct verify_segment *segs = NULL;
    size_t n = 0;
    CU_ASSERT_EQUAL_FATAL(verify_list_segments(e.dir, &segs, &n), 0);
    struct verify_report rep;
    for (size_t i = 0; i + 1 < n; i++)
        CU_ASSERT_TRUE(segs[i].size <= (300u << 10)); /* no tail past the roll size */
    free(segs);
    /* A closed segment given a zero tail by hand is a finding. */
    put_bytes(e.seg0, (uint64_t)tu_file_size(e.seg0), 4096, 0);
    CU_ASSERT_NOT_EQUAL(verify_log_dir(e.dir, NULL, NULL, NULL, &rep), 0);
    CU_ASSERT_TRUE(rep.found && strstr(rep.finding.reason, "zero tail") != NULL);
    env_close(&e);
}

/* Power loss (vio_fault's crash: unsynced bytes and sizes are lost) with
 * the zero thread running, in every mode: each synced batch survives, the
 * log opens without refusing, verifies, and continues. */
static void crash_with_zero_tail(enum vlog_durability d)
{
    for (int round = 0; round < 3; round++) {
        struct vio_fault *f = vio_fault_new();
        CU_ASSERT_PTR_NOT_NULL_FATAL(f);
        struct env e;
        env_open(&e, d, vio_fault_io(f));
        for (int i = 0; i < 40 + 30 * round; i++)
            CU_ASSERT_EQUAL(env_append(&e), 0);
        if (d != VLOG_DURABILITY_ALWAYS)
            CU_ASSERT_EQUAL(vlog_sync(e.log), 0);
        uint64_t synced = end_offset(e.log);
        if (round > 0)
            (void)wait_zero_tail(e.seg0, log_bytes(e.log));
        for (int i = 0; i < 10 * round; i++)
            CU_ASSERT_EQUAL(env_append(&e), 0);
        uint64_t written = end_offset(e.log);
        vlog_abandon(e.log);
        e.log = NULL;
        CU_ASSERT_EQUAL(vio_fault_crash(f), 0);
        CU_ASSERT_EQUAL_FATAL(env_reopen(&e, NULL), 0);
        uint64_t end = end_offset(e.log);
        const struct vlog_recovery *r = vlog_last_recovery(e.log);
        if (r->cut)
            end--; /* its recovery record */
        CU_ASSERT_TRUE(end >= synced && end <= written);
        CU_ASSERT_EQUAL(end % 4, 0);
        CU_ASSERT_EQUAL(env_append(&e), 0);
        uint64_t after = end_offset(e.log);
        CU_ASSERT_EQUAL(vlog_close(e.log, tu_now_ms()), 0);
        e.log = NULL;
        assert_verifies(e.dir, after + 1);
        env_close(&e);
        vio_fault_free(f);
    }
}

static void test_crash_always(void) { crash_with_zero_tail(VLOG_DURABILITY_ALWAYS); }
static void test_crash_group(void) { crash_with_zero_tail(VLOG_DURABILITY_GROUP); }
static void test_crash_os(void) { crash_with_zero_tail(VLOG_DURABILITY_OS); }

int main(void)
{
    static const struct {
        const char *name;
        void (*fn)(void);
    } tests[] = {
        {"zero tail is the end; appends fill it; close trims", test_zero_tail_is_the_end},
        {"zero tail added to an old log by hand", test_zero_tail_added_by_hand},
        {"torn record followed by zeros is cut", test_torn_record_then_zeros},
        {"bit flip in the zero region is not the end", test_bit_flip_in_zero_region},
        {"zeroed header before valid batches: refused", test_zeroed_header_mid_log_refused},
        {"rolls trim closed segments", test_roll_trims},
        {"crash with a zero tail (always)", test_crash_always},
        {"crash with a zero tail (group)", test_crash_group},
        {"crash with a zero tail (os)", test_crash_os},
    };
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    CU_pSuite s = CU_add_suite("vlog_zero", NULL, NULL);
    for (size_t i = 0; s && i < sizeof tests / sizeof tests[0]; i++)
        CU_add_test(s, tests[i].name, tests[i].fn);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    unsigned fails = CU_get_number_of_failures() + CU_get_number_of_suites_failed();
    CU_cleanup_registry();
    return fails ? 1 : 0;
}
