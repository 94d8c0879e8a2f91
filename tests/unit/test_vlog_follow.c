/*
 * Follower storage calls (storage/vlog_follow.c): a backup that appends the
 * primary's batches with vlog_append_exact holds identical segment bytes and
 * chain; a batch that does not chain from the tail (wrong base offset, wrong
 * chain, another history, damaged bytes) is refused with a typed error and
 * changes nothing; vlog_truncate_tail cuts an uncommitted suffix, refuses to
 * cut below the commit point or inside a batch, and leaves a log that
 * verifies (before and after a reopen) and takes the primary's batches again.
 */
#include <CUnit/Basic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "storage/batch.h"
#include "storage/verify.h"
#include "storage/vlog.h"
#include "tests/support/tutil.h"
#include "verity/errors.h"

#define NB  12
#define BUF (1u << 20)

static void cfg_init(struct vlog_config *c)
{
    vlog_config_default(c);
    c->durability = VLOG_DURABILITY_ALWAYS;
    c->checkpoint_records = 0; /* no node-local batches in the data log */
}

/* The primary: NB batches appended the ordinary way; offsets kept. */
struct primary {
    char *dir;
    struct vlog *log;
    uint64_t base[NB + 1];
};

static void primary_open(struct primary *p, const char *tag, uint32_t salt)
{
    struct vlog_config c;
    struct batch_builder b;
    cfg_init(&c);
    p->dir = tu_tmpdir(tag);
    CU_ASSERT_EQUAL_FATAL(vlog_open(p->dir, &c, tu_now_ms(), &p->log, NULL), 0);
    CU_ASSERT_EQUAL_FATAL(batch_builder_init(&b, BUF), 0);
    for (uint32_t i = 0; i < NB; i++) {
        struct vlog_append_info info;
        CU_ASSERT_EQUAL_FATAL(tu_build_batch(&b, tag, salt + i * 10, 1 + i % 4, 16, 1000 + i), 0);
        CU_ASSERT_EQUAL_FATAL(vlog_append(p->log, b.buf, b.len, 1000, &info), 0);
        p->base[i] = info.base_offset;
        p->base[i + 1] = info.last_offset + 1;
    }
    batch_builder_deinit(&b);
}

static void primary_close(struct primary *p)
{
    vlog_abandon(p->log);
    tu_rmrf(p->dir);
    free(p->dir);
}

/* Batch i of the primary, as it lies on disk. */
static size_t batch_of(struct primary *p, int i, uint8_t *buf)
{
    size_t len = 0;
    CU_ASSERT_EQUAL_FATAL(vlog_read_copy(p->log, p->base[i], p->base[i + 1], buf, BUF, &len), 0);
    return len;
}

/* Length of the file at path without its zero tail (docs/FORMAT.md 5.3),
 * or -1. */
static long data_len(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return -1;
    long n = 0, pos = 0;
    int c;
    while ((c = fgetc(f)) != EOF) {
        pos++;
        if (c != 0)
            n = pos;
    }
    fclose(f);
    return n;
}

/* The two active segments hold the same bytes up to their zero tails,
 * whose lengths depend on when each log's zero thread ran. */
static int files_equal(const char *a, const char *b)
{
    long na = data_len(a), nb = data_len(b);
    FILE *fa = fopen(a, "rb"), *fb = fopen(b, "rb");
    int eq = fa && fb && na >= 0 && na == nb;
    for (long i = 0; eq && i < na; i++)
        if (fgetc(fa) != fgetc(fb))
            eq = 0;
    if (fa)
        fclose(fa);
    if (fb)
        fclose(fb);
    return eq;
}

static int segment_equal(const char *d1, const char *d2)
{
    char a[512], b[512];
    snprintf(a, sizeof a, "%s/00000000000000000000.log", d1);
    snprintf(b, sizeof b, "%s/00000000000000000000.log", d2);
    return files_equal(a, b);
}

static void follower_open(char **dir, struct vlog **log, const char *tag)
{
    struct vlog_config c;
    cfg_init(&c);
    *dir = tu_tmpdir(tag);
    CU_ASSERT_EQUAL_FATAL(vlog_open(*dir, &c, tu_now_ms(), log, NULL), 0);
}

static int verifies(const char *dir, uint64_t end)
{
    struct verify_report rep;
    int rc = verify_log_dir(dir, NULL, NULL, NULL, &rep);
    return rc == 0 && !rep.found && rep.end_offset == end;
}

static void test_exact_append_makes_identical_bytes(void)
{
    struct primary p;
    uint8_t *buf = malloc(BUF);
    char *fdir;
    struct vlog *f;
    primary_open(&p, "vf-prim", 0);
    follower_open(&fdir, &f, "vf-foll");
    for (int i = 0; i < NB; i++) {
        size_t len = batch_of(&p, i, buf);
        struct vlog_append_info info;
        CU_ASSERT_EQUAL(vlog_append_exact(f, buf, len, &info), 0);
        CU_ASSERT_EQUAL(info.base_offset, p.base[i]);
    }
    struct vlog_info a, b;
    vlog_get_info(p.log, &a);
    vlog_get_info(f, &b);
    CU_ASSERT_EQUAL(a.end_offset, b.end_offset);
    CU_ASSERT_EQUAL(memcmp(a.chain, b.chain, 32), 0);
    CU_ASSERT_TRUE(segment_equal(p.dir, fdir));
    CU_ASSERT_TRUE(verifies(fdir, p.base[NB]));
    vlog_abandon(f);
    tu_rmrf(fdir);
    free(fdir);
    primary_close(&p);
    free(buf);
}

static void test_exact_append_refuses_what_does_not_chain(void)
{
    struct primary p, other;
    uint8_t *buf = malloc(BUF);
    char *fdir;
    struct vlog *f;
    struct vlog_info before, after;
    primary_open(&p, "vf-prim2", 0);
    primary_open(&other, "vf-other", 5000); /* another history, same offsets */
    follower_open(&fdir, &f, "vf-foll2");
    for (int i = 0; i < 4; i++) {
        size_t len = batch_of(&p, i, buf);
        CU_ASSERT_EQUAL_FATAL(vlog_append_exact(f, buf, len, NULL), 0);
    }
    vlog_get_info(f, &before);
    size_t len;

    /* skipping a batch: base offset is not the tail */
    len = batch_of(&p, 5, buf);
    CU_ASSERT_EQUAL(vlog_append_exact(f, buf, len, NULL), VERITY_EOFFSET);
    /* a batch again: base offset below the tail */
    len = batch_of(&p, 2, buf);
    CU_ASSERT_EQUAL(vlog_append_exact(f, buf, len, NULL), VERITY_EOFFSET);
    /* the right offset from another history: does not chain */
    CU_ASSERT_EQUAL(other.base[4], p.base[4]);
    len = batch_of(&other, 4, buf);
    CU_ASSERT_EQUAL(vlog_append_exact(f, buf, len, NULL), VERITY_ECHAIN);
    /* the right batch with one chain bit flipped (the CRC does not cover it) */
    len = batch_of(&p, 4, buf);
    buf[20] ^= 1;
    CU_ASSERT_EQUAL(vlog_append_exact(f, buf, len, NULL), VERITY_ECHAIN);
    /* damaged body: the batch itself is refused */
    len = batch_of(&p, 4, buf);
    buf[len - 1] ^= 0x40;
    CU_ASSERT_EQUAL(vlog_append_exact(f, buf, len, NULL), VERITY_ECORRUPT);

    vlog_get_info(f, &after);
    CU_ASSERT_EQUAL(after.end_offset, before.end_offset);
    CU_ASSERT_EQUAL(after.size_bytes, before.size_bytes);
    CU_ASSERT_EQUAL(memcmp(after.chain, before.chain, 32), 0);
    CU_ASSERT_TRUE(verifies(fdir, p.base[4]));
    /* and the right batch still goes in */
    len = batch_of(&p, 4, buf);
    CU_ASSERT_EQUAL(vlog_append_exact(f, buf, len, NULL), 0);
    vlog_abandon(f);
    tu_rmrf(fdir);
    free(fdir);
    primary_close(&p);
    primary_close(&other);
    free(buf);
}

static void test_truncate_tail_leaves_a_log_that_verifies(void)
{
    struct primary p, other;
    uint8_t *buf = malloc(BUF);
    char *fdir;
    struct vlog *f;
    primary_open(&p, "vf-prim3", 0);
    primary_open(&other, "vf-other3", 7000);
    follower_open(&fdir, &f, "vf-foll3");
    /* The follower took 6 of the primary's batches, then 4 of a deposed
     * primary's (an uncommitted suffix from another history). */
    for (int i = 0; i < 6; i++) {
        size_t len = batch_of(&p, i, buf);
        CU_ASSERT_EQUAL_FATAL(vlog_append_exact(f, buf, len, NULL), 0);
    }
    CU_ASSERT_EQUAL_FATAL(vlog_truncate_tail(f, p.base[6], p.base[6]), 0); /* no-op */
    struct vlog_config c;
    cfg_init(&c);
    {
        /* branch: the other history's batches re-chained onto this tail */
        struct batch_builder b;
        CU_ASSERT_EQUAL_FATAL(batch_builder_init(&b, BUF), 0);
        for (int i = 0; i < 4; i++) {
            CU_ASSERT_EQUAL_FATAL(tu_build_batch(&b, "stale", 9000 + (uint64_t)i, 2, 8, 5), 0);
            CU_ASSERT_EQUAL_FATAL(vlog_append(f, b.buf, b.len, 5, NULL), 0);
        }
        batch_builder_deinit(&b);
    }
    struct vlog_info before, after;
    vlog_get_info(f, &before);
    CU_ASSERT_TRUE(before.end_offset > p.base[6]);

    /* refusals: below the commit point, inside a batch, past the end */
    CU_ASSERT_EQUAL(vlog_truncate_tail(f, p.base[3], p.base[5]), VERITY_EINVAL);
    CU_ASSERT_EQUAL(vlog_truncate_tail(f, p.base[6] + 1, p.base[6]), VERITY_EOFFSET);
    CU_ASSERT_EQUAL(vlog_truncate_tail(f, before.end_offset + 1, 0), VERITY_EOFFSET);
    vlog_get_info(f, &after);
    CU_ASSERT_EQUAL(after.end_offset, before.end_offset);
    CU_ASSERT_EQUAL(memcmp(after.chain, before.chain, 32), 0);

    /* cut the uncommitted suffix: the log verifies and ends at the cut */
    CU_ASSERT_EQUAL(vlog_truncate_tail(f, p.base[6], p.base[6]), 0);
    vlog_get_info(f, &after);
    CU_ASSERT_EQUAL(after.end_offset, p.base[6]);
    CU_ASSERT_TRUE(verifies(fdir, p.base[6]));

    /* the primary's batches chain again, and the bytes end up identical */
    for (int i = 6; i < NB; i++) {
        size_t len = batch_of(&p, i, buf);
        CU_ASSERT_EQUAL(vlog_append_exact(f, buf, len, NULL), 0);
    }
    CU_ASSERT_TRUE(segment_equal(p.dir, fdir));
    CU_ASSERT_TRUE(verifies(fdir, p.base[NB]));

    /* a cut into the middle of the primary's history, then a reopen */
    CU_ASSERT_EQUAL(vlog_truncate_tail(f, p.base[9], p.base[8]), 0);
    vlog_abandon(f);
    CU_ASSERT_TRUE(verifies(fdir, p.base[9]));
    CU_ASSERT_EQUAL_FATAL(vlog_open(fdir, &c, tu_now_ms(), &f, NULL), 0);
    vlog_get_info(f, &after);
    CU_ASSERT_EQUAL(after.end_offset, p.base[9]);
    CU_ASSERT_FALSE(vlog_last_recovery(f)->cut); /* nothing torn: a clean cut */
    size_t len = batch_of(&p, 9, buf);
    CU_ASSERT_EQUAL(vlog_append_exact(f, buf, len, NULL), 0);
    /* cutting everything in the only segment is allowed when uncommitted */
    CU_ASSERT_EQUAL(vlog_truncate_tail(f, 0, 0), 0);
    vlog_get_info(f, &after);
    CU_ASSERT_EQUAL(after.end_offset, 0);
    len = batch_of(&p, 0, buf);
    CU_ASSERT_EQUAL(vlog_append_exact(f, buf, len, NULL), 0);
    CU_ASSERT_EQUAL(vlog_close(f, tu_now_ms()), 0);
    CU_ASSERT_TRUE(verifies(fdir, p.base[1] + 1)); /* vlog_close added its checkpoint */
    tu_rmrf(fdir);
    free(fdir);
    primary_close(&p);
    primary_close(&other);
    free(buf);
}

int main(void)
{
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    CU_pSuite s = CU_add_suite("vlog_follow", NULL, NULL);
    CU_add_test(s, "exact append makes identical bytes", test_exact_append_makes_identical_bytes);
    CU_add_test(s, "exact append refuses what does not chain",
                test_exact_append_refuses_what_does_not_chain);
    CU_add_test(s, "truncate tail leaves a log that verifies",
                test_truncate_tail_leaves_a_log_that_verifies);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    unsigned failed = CU_get_number_of_failures();
    CU_cleanup_registry();
    return failed ? 1 : 0;
}
