/*
 * Tests for tests/support/vio_fault: each fault does what vio_fault.h says, on
 * real files in a mkdtemp() directory, and the simulated crash keeps exactly
 * the synced bytes.
 */
#include <CUnit/Basic.h>
#include <CUnit/CUnit.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "storage/vio.h"
#include "tests/support/vio_fault.h"
#include "verity/errors.h"

static char g_dir[] = "/tmp/verity-vio-fault-XXXXXX";
static int g_seq;

/* Returns a fresh path in the test directory ending in suffix (static buffer
 * rotated among four, enough for any one test). */
static const char *tpath(const char *suffix)
{
    static char bufs[4][256];
    char *b = bufs[g_seq % 4];
    snprintf(b, sizeof(bufs[0]), "%s/f%d%s", g_dir, g_seq++, suffix);
    return b;
}

static void fill(unsigned char *buf, size_t n, unsigned seed)
{
    for (size_t i = 0; i < n; i++)
        buf[i] = (unsigned char)(seed * 131u + i * 7u + (i >> 8));
}

static off_t size_of(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 ? st.st_size : -1;
}

/* Reads the whole file at path with plain system calls into buf (at most
 * cap bytes). Returns the byte count or -1. */
static ssize_t slurp(const char *path, unsigned char *buf, size_t cap)
{
    int fd = open(path, O_RDONLY);
    if (fd < 0)
        return -1;
    ssize_t n = pread(fd, buf, cap, 0);
    close(fd);
    return n;
}

/* Opens path through io for appending-style writes (create, read-write). */
static int open_rw(const struct vio *io, const char *path)
{
    return io->open(io->ctx, path, O_RDWR | O_CREAT, 0644);
}

static void test_short_write_returns_fewer_bytes(void)
{
    struct vio_fault *f = vio_fault_new();
    const struct vio *io = vio_fault_io(f);
    const char *p = tpath(".log");
    unsigned char buf[100], back[200];
    fill(buf, sizeof(buf), 1);
    int id = vio_fault_arm(f, &(struct vio_fault_rule){ .op = VF_PWRITE, .kind = VF_SHORT,
                                                        .len = 30 });
    CU_ASSERT_FATAL(id >= 0);
    int fd = open_rw(io, p);
    CU_ASSERT_FATAL(fd >= 0);
    CU_ASSERT_EQUAL(io->pwrite(io->ctx, fd, buf, sizeof(buf), 0), 30);
    CU_ASSERT_EQUAL(vio_fault_fired(f, id), 1);
    CU_ASSERT_EQUAL(size_of(p), 30);
    CU_ASSERT_EQUAL(slurp(p, back, sizeof(back)), 30);
    CU_ASSERT_EQUAL(memcmp(back, buf, 30), 0);
    /* count defaulted to once: the next write is whole */
    CU_ASSERT_EQUAL(io->pwrite(io->ctx, fd, buf + 30, 70, 30), 70);
    CU_ASSERT_EQUAL(vio_fault_fired(f, id), 1);
    CU_ASSERT_EQUAL(io->close(io->ctx, fd), 0);
    vio_fault_free(f);
}

static void test_pwrite_all_completes_through_short_writes(void)
{
    struct vio_fault *f = vio_fault_new();
    const struct vio *io = vio_fault_io(f);
    const char *p = tpath(".log");
    unsigned char buf[1000], back[2000];
    fill(buf, sizeof(buf), 2);
    int id = vio_fault_arm(f, &(struct vio_fault_rule){ .op = VF_PWRITE, .kind = VF_SHORT,
                                                        .count = -1 });
    CU_ASSERT_FATAL(id >= 0);
    int fd = open_rw(io, p);
    CU_ASSERT_FATAL(fd >= 0);
    CU_ASSERT_EQUAL(vio_pwrite_all(io, fd, buf, sizeof(buf), 0), 0);
    /* halving each time until one byte is left: 1000 -> 500 -> ... needs > 5 calls */
    CU_ASSERT(vio_fault_calls(f, VF_PWRITE) > 5);
    CU_ASSERT(vio_fault_fired(f, id) >= 5);
    CU_ASSERT_EQUAL(slurp(p, back, sizeof(back)), (ssize_t)sizeof(buf));
    CU_ASSERT_EQUAL(memcmp(back, buf, sizeof(buf)), 0);
    CU_ASSERT_EQUAL(io->close(io->ctx, fd), 0);
    vio_fault_free(f);
}

static void test_torn_write_leaves_exact_prefix(void)
{
    struct vio_fault *f = vio_fault_new();
    const struct vio *io = vio_fault_io(f);
    const char *p = tpath(".log");
    unsigned char buf[100], back[200];
    fill(buf, sizeof(buf), 3);
    int fd = open_rw(io, p);
    CU_ASSERT_FATAL(fd >= 0);
    CU_ASSERT_EQUAL(vio_pwrite_all(io, fd, buf, 40, 0), 0);
    int id = vio_fault_arm(f, &(struct vio_fault_rule){ .op = VF_PWRITE, .kind = VF_TORN,
                                                        .len = 17 });
    CU_ASSERT_FATAL(id >= 0);
    CU_ASSERT_EQUAL(vio_pwrite_all(io, fd, buf + 40, 60, 40), -EIO);
    CU_ASSERT_EQUAL(vio_fault_fired(f, id), 1);
    CU_ASSERT_EQUAL(slurp(p, back, sizeof(back)), 57);
    CU_ASSERT_EQUAL(memcmp(back, buf, 57), 0);
    CU_ASSERT_EQUAL(io->close(io->ctx, fd), 0);
    vio_fault_free(f);
}

static void test_enospc_and_eio_write_nothing(void)
{
    struct vio_fault *f = vio_fault_new();
    const struct vio *io = vio_fault_io(f);
    const char *p = tpath(".log");
    unsigned char buf[64];
    fill(buf, sizeof(buf), 4);
    int fd = open_rw(io, p);
    CU_ASSERT_FATAL(fd >= 0);
    CU_ASSERT_EQUAL(vio_pwrite_all(io, fd, buf, 10, 0), 0);
    int a = vio_fault_arm(f, &(struct vio_fault_rule){ .op = VF_PWRITE, .kind = VF_ENOSPC });
    int b = vio_fault_arm(f, &(struct vio_fault_rule){ .op = VF_PWRITE, .kind = VF_EIO });
    CU_ASSERT_FATAL(a >= 0 && b >= 0 && a != b);
    CU_ASSERT_EQUAL(io->pwrite(io->ctx, fd, buf, sizeof(buf), 10), -ENOSPC);
    CU_ASSERT_EQUAL(size_of(p), 10);
    /* b was due on the same call but a was armed first: b fires now */
    CU_ASSERT_EQUAL(io->pwrite(io->ctx, fd, buf, sizeof(buf), 10), -EIO);
    CU_ASSERT_EQUAL(size_of(p), 10);
    CU_ASSERT_EQUAL(vio_fault_fired(f, a), 1);
    CU_ASSERT_EQUAL(vio_fault_fired(f, b), 1);
    CU_ASSERT_EQUAL(io->pwrite(io->ctx, fd, buf, sizeof(buf), 10), (ssize_t)sizeof(buf));
    CU_ASSERT_EQUAL(size_of(p), 10 + (off_t)sizeof(buf));
    CU_ASSERT_EQUAL(io->close(io->ctx, fd), 0);
    vio_fault_free(f);
}

static void test_after_n_count_and_suffix_select_calls(void)
{
    struct vio_fault *f = vio_fault_new();
    const struct vio *io = vio_fault_io(f);
    const char *plog = tpath(".log"), *pidx = tpath(".idx");
    unsigned char b = 0x5a;
    int id = vio_fault_arm(f, &(struct vio_fault_rule){ .op = VF_PWRITE, .kind = VF_EIO,
                                                        .path_suffix = ".log", .after_n = 3,
                                                        .count = 2 });
    CU_ASSERT_FATAL(id >= 0);
    int fl = open_rw(io, plog), fi = open_rw(io, pidx);
    CU_ASSERT_FATAL(fl >= 0 && fi >= 0);
    ssize_t want[] = { 1, 1, 1, -EIO, -EIO, 1, 1 };
    for (int i = 0; i < 7; i++) {
        CU_ASSERT_EQUAL(io->pwrite(io->ctx, fi, &b, 1, i), 1); /* .idx never matches */
        CU_ASSERT_EQUAL(io->pwrite(io->ctx, fl, &b, 1, i), want[i]);
    }
    CU_ASSERT_EQUAL(vio_fault_fired(f, id), 2);
    CU_ASSERT_EQUAL(vio_fault_calls(f, VF_PWRITE), 14);
    CU_ASSERT_EQUAL(vio_fault_calls(f, VF_OPEN), 2);
    vio_fault_disarm_all(f);
    CU_ASSERT_EQUAL(vio_fault_fired(f, id), 0);
    CU_ASSERT_EQUAL(io->close(io->ctx, fl), 0);
    CU_ASSERT_EQUAL(io->close(io->ctx, fi), 0);
    CU_ASSERT_EQUAL(vio_fault_calls(f, VF_CLOSE), 2);
    vio_fault_free(f);
}

static void test_arm_rejects_invalid_rules(void)
{
    struct vio_fault *f = vio_fault_new();
    CU_ASSERT_EQUAL(vio_fault_arm(f, &(struct vio_fault_rule){ .op = VF_PWRITE,
                                                               .kind = VF_BITFLIP }),
                    -EINVAL);
    CU_ASSERT_EQUAL(vio_fault_arm(f, &(struct vio_fault_rule){ .op = VF_FSYNC,
                                                               .kind = VF_TORN }),
                    -EINVAL);
    CU_ASSERT_EQUAL(vio_fault_arm(f, &(struct vio_fault_rule){ .op = VF_PREAD,
                                                               .kind = VF_BITFLIP, .bit = 8 }),
                    -EINVAL);
    CU_ASSERT_EQUAL(vio_fault_arm(f, &(struct vio_fault_rule){ .op = VF_PWRITE }), -EINVAL);
    CU_ASSERT_EQUAL(vio_fault_arm(f, &(struct vio_fault_rule){ .op = VF_OP_COUNT,
                                                               .kind = VF_EIO }),
                    -EINVAL);
    for (int i = 0; i < VIO_FAULT_RULES_MAX; i++)
        CU_ASSERT_EQUAL(vio_fault_arm(f, &(struct vio_fault_rule){ .op = VF_MKDIR,
                                                                   .kind = VF_EIO,
                                                                   .path_suffix = "x" }),
                        i);
    CU_ASSERT_EQUAL(vio_fault_arm(f, &(struct vio_fault_rule){ .op = VF_MKDIR,
                                                               .kind = VF_EIO }),
                    -ENOSPC);
    vio_fault_free(f);
}

static void test_sync_eio_returns_eio_and_loses_unsynced_data(void)
{
    struct vio_fault *f = vio_fault_new();
    const struct vio *io = vio_fault_io(f);
    const char *p = tpath(".log");
    unsigned char buf[300], back[600];
    fill(buf, sizeof(buf), 5);
    int fd = open_rw(io, p);
    CU_ASSERT_FATAL(fd >= 0);
    CU_ASSERT_EQUAL(vio_pwrite_all(io, fd, buf, 100, 0), 0);
    CU_ASSERT_EQUAL(io->fdatasync(io->ctx, fd), 0);
    CU_ASSERT_EQUAL(vio_pwrite_all(io, fd, buf + 100, 100, 100), 0);
    int a = vio_fault_arm(f, &(struct vio_fault_rule){ .op = VF_FDATASYNC, .kind = VF_EIO });
    int b = vio_fault_arm(f, &(struct vio_fault_rule){ .op = VF_FSYNC, .kind = VF_EIO });
    CU_ASSERT_FATAL(a >= 0 && b >= 0);
    CU_ASSERT_EQUAL(io->fdatasync(io->ctx, fd), -EIO);
    CU_ASSERT_EQUAL(io->fsync(io->ctx, fd), -EIO);
    /* A retried sync succeeds, yet (as on Linux) does not make the data durable. */
    CU_ASSERT_EQUAL(vio_pwrite_all(io, fd, buf + 200, 100, 200), 0);
    CU_ASSERT_EQUAL(io->fdatasync(io->ctx, fd), 0);
    off_t durable = -1;
    CU_ASSERT_EQUAL(vio_fault_durable_len(f, p, &durable), 0);
    CU_ASSERT_EQUAL(durable, 100);
    CU_ASSERT_EQUAL(size_of(p), 300);
    CU_ASSERT_EQUAL(vio_fault_crash(f), 0);
    CU_ASSERT_EQUAL(slurp(p, back, sizeof(back)), 100);
    CU_ASSERT_EQUAL(memcmp(back, buf, 100), 0);
    CU_ASSERT_EQUAL(io->close(io->ctx, fd), 0);
    vio_fault_free(f);
}

static void test_bitflip_changes_one_read_bit_not_the_file(void)
{
    struct vio_fault *f = vio_fault_new();
    const struct vio *io = vio_fault_io(f);
    const char *p = tpath(".log"), *q = tpath(".idx");
    unsigned char buf[256], got[256], disk[512];
    fill(buf, sizeof(buf), 6);
    int fd = open_rw(io, p), fq = open_rw(io, q);
    CU_ASSERT_FATAL(fd >= 0 && fq >= 0);
    CU_ASSERT_EQUAL(vio_pwrite_all(io, fd, buf, sizeof(buf), 0), 0);
    CU_ASSERT_EQUAL(vio_pwrite_all(io, fq, buf, sizeof(buf), 0), 0);
    int id = vio_fault_arm(f, &(struct vio_fault_rule){ .op = VF_PREAD, .kind = VF_BITFLIP,
                                                        .path_suffix = ".log",
                                                        .position = 150, .bit = 3 });
    CU_ASSERT_FATAL(id >= 0);
    /* Reads not covering byte 150, or of another file, are clean and do not count. */
    CU_ASSERT_EQUAL(vio_pread_all(io, fd, got, 100, 0), 0);
    CU_ASSERT_EQUAL(memcmp(got, buf, 100), 0);
    CU_ASSERT_EQUAL(vio_pread_all(io, fq, got, sizeof(got), 0), 0);
    CU_ASSERT_EQUAL(memcmp(got, buf, sizeof(got)), 0);
    CU_ASSERT_EQUAL(vio_fault_fired(f, id), 0);

    CU_ASSERT_EQUAL(vio_pread_all(io, fd, got, 156, 100), 0);
    CU_ASSERT_EQUAL(vio_fault_fired(f, id), 1);
    int bits = 0;
    for (int i = 0; i < 156; i++)
        bits += __builtin_popcount((unsigned)(got[i] ^ buf[100 + i]));
    CU_ASSERT_EQUAL(bits, 1);
    CU_ASSERT_EQUAL(got[50] ^ buf[150], 1u << 3);
    /* the file itself is unchanged, and the rule fired only once */
    CU_ASSERT_EQUAL(slurp(p, disk, sizeof(disk)), (ssize_t)sizeof(buf));
    CU_ASSERT_EQUAL(memcmp(disk, buf, sizeof(buf)), 0);
    CU_ASSERT_EQUAL(vio_pread_all(io, fd, got, sizeof(got), 0), 0);
    CU_ASSERT_EQUAL(memcmp(got, buf, sizeof(got)), 0);
    CU_ASSERT_EQUAL(io->close(io->ctx, fd), 0);
    CU_ASSERT_EQUAL(io->close(io->ctx, fq), 0);
    vio_fault_free(f);
}

static void test_crash_truncates_to_synced_length(void)
{
    struct vio_fault *f = vio_fault_new();
    const struct vio *io = vio_fault_io(f);
    const char *synced = tpath(".log"), *never = tpath(".log"), *untouched = tpath(".idx");
    unsigned char buf[4096], back[8192];
    fill(buf, sizeof(buf), 7);

    /* a file that existed before, opened but never written: left alone */
    int pre = open(untouched, O_WRONLY | O_CREAT, 0644);
    CU_ASSERT_FATAL(pre >= 0);
    CU_ASSERT_EQUAL(write(pre, buf, 123), 123);
    CU_ASSERT_EQUAL(close(pre), 0);
    int fu = io->open(io->ctx, untouched, O_RDONLY, 0);
    CU_ASSERT_FATAL(fu >= 0);

    int fs = open_rw(io, synced), fn = open_rw(io, never);
    CU_ASSERT_FATAL(fs >= 0 && fn >= 0);
    CU_ASSERT_EQUAL(vio_pwrite_all(io, fs, buf, 1000, 0), 0);
    CU_ASSERT_EQUAL(io->fdatasync(io->ctx, fs), 0);
    CU_ASSERT_EQUAL(vio_pwrite_all(io, fs, buf + 1000, 1500, 1000), 0);
    CU_ASSERT_EQUAL(io->fsync(io->ctx, fs), 0);
    CU_ASSERT_EQUAL(vio_pwrite_all(io, fs, buf + 2500, 1596, 2500), 0);
    CU_ASSERT_EQUAL(vio_pwrite_all(io, fn, buf, 777, 0), 0);
    /* unsynced data survives close, as it does in a page cache */
    CU_ASSERT_EQUAL(io->close(io->ctx, fn), 0);
    CU_ASSERT_EQUAL(size_of(synced), 4096);
    CU_ASSERT_EQUAL(size_of(never), 777);

    CU_ASSERT_EQUAL(vio_fault_crash(f), 0);
    CU_ASSERT_EQUAL(slurp(synced, back, sizeof(back)), 2500);
    CU_ASSERT_EQUAL(memcmp(back, buf, 2500), 0);
    CU_ASSERT_EQUAL(size_of(never), 0);
    CU_ASSERT_EQUAL(size_of(untouched), 123);

    /* descriptors from before the crash are dead until closed */
    CU_ASSERT_EQUAL(io->pwrite(io->ctx, fs, buf, 10, 2500), -EIO);
    CU_ASSERT_EQUAL(io->fdatasync(io->ctx, fs), -EIO);
    CU_ASSERT_EQUAL(size_of(synced), 2500);
    CU_ASSERT_EQUAL(io->close(io->ctx, fs), 0);
    CU_ASSERT_EQUAL(io->close(io->ctx, fu), 0);

    /* reopened, the file is tracked afresh from its post-crash size */
    fs = open_rw(io, synced);
    CU_ASSERT_FATAL(fs >= 0);
    CU_ASSERT_EQUAL(vio_pwrite_all(io, fs, buf + 2500, 100, 2500), 0);
    CU_ASSERT_EQUAL(vio_fault_crash(f), 0);
    CU_ASSERT_EQUAL(size_of(synced), 2500);
    CU_ASSERT_EQUAL(io->close(io->ctx, fs), 0);
    vio_fault_free(f);
}

static void test_crash_honours_ftruncate_rename_and_rewrite(void)
{
    struct vio_fault *f = vio_fault_new();
    const struct vio *io = vio_fault_io(f);
    char tmp[256], fin[256];
    snprintf(tmp, sizeof(tmp), "%s", tpath(".tmp"));
    snprintf(fin, sizeof(fin), "%s", tpath(".ckpt"));
    const char *cut = tpath(".log");
    unsigned char buf[512], back[1024];
    fill(buf, sizeof(buf), 8);

    /* ftruncate below the synced length: the cut survives, nothing regrows */
    int fc = open_rw(io, cut);
    CU_ASSERT_FATAL(fc >= 0);
    CU_ASSERT_EQUAL(vio_pwrite_all(io, fc, buf, 500, 0), 0);
    CU_ASSERT_EQUAL(io->fdatasync(io->ctx, fc), 0);
    CU_ASSERT_EQUAL(io->ftruncate(io->ctx, fc, 200), 0);
    CU_ASSERT_EQUAL(vio_pwrite_all(io, fc, buf + 200, 100, 200), 0);

    /* write-then-rename: durability follows the file to its new name */
    int ft = open_rw(io, tmp);
    CU_ASSERT_FATAL(ft >= 0);
    CU_ASSERT_EQUAL(vio_pwrite_all(io, ft, buf, 64, 0), 0);
    CU_ASSERT_EQUAL(io->fsync(io->ctx, ft), 0);
    CU_ASSERT_EQUAL(vio_pwrite_all(io, ft, buf + 64, 36, 64), 0);
    CU_ASSERT_EQUAL(io->close(io->ctx, ft), 0);
    CU_ASSERT_EQUAL(io->rename(io->ctx, tmp, fin), 0);
    off_t d = -1;
    CU_ASSERT_EQUAL(vio_fault_durable_len(f, tmp, &d), -ENOENT);
    CU_ASSERT_EQUAL(vio_fault_durable_len(f, fin, &d), 0);
    CU_ASSERT_EQUAL(d, 64);

    CU_ASSERT_EQUAL(vio_fault_crash(f), 0);
    CU_ASSERT_EQUAL(slurp(cut, back, sizeof(back)), 200);
    CU_ASSERT_EQUAL(memcmp(back, buf, 200), 0);
    CU_ASSERT_EQUAL(slurp(fin, back, sizeof(back)), 64);
    CU_ASSERT_EQUAL(memcmp(back, buf, 64), 0);
    CU_ASSERT_EQUAL(io->close(io->ctx, fc), 0);

    /* a rewrite below the synced length makes the rewritten tail unsafe */
    fc = open_rw(io, cut);
    CU_ASSERT_FATAL(fc >= 0);
    CU_ASSERT_EQUAL(vio_pwrite_all(io, fc, buf, 10, 150), 0);
    CU_ASSERT_EQUAL(vio_fault_durable_len(f, cut, &d), 0);
    CU_ASSERT_EQUAL(d, 150);
    CU_ASSERT_EQUAL(io->close(io->ctx, fc), 0);
    CU_ASSERT_EQUAL(io->unlink(io->ctx, cut), 0);
    CU_ASSERT_EQUAL(vio_fault_durable_len(f, cut, &d), -ENOENT);
    CU_ASSERT_EQUAL(vio_fault_crash(f), 0);
    CU_ASSERT_EQUAL(size_of(cut), -1);
    vio_fault_free(f);
}

static void test_path_ops_inject_and_count(void)
{
    struct vio_fault *f = vio_fault_new();
    const struct vio *io = vio_fault_io(f);
    char d[256];
    snprintf(d, sizeof(d), "%s", tpath(".dir"));
    int id = vio_fault_arm(f, &(struct vio_fault_rule){ .op = VF_MKDIR, .kind = VF_ENOSPC,
                                                        .path_suffix = ".dir" });
    CU_ASSERT_FATAL(id >= 0);
    CU_ASSERT_EQUAL(io->mkdir(io->ctx, d, 0755), -ENOSPC);
    CU_ASSERT_EQUAL(size_of(d), -1);
    CU_ASSERT_EQUAL(io->mkdir(io->ctx, d, 0755), 0);
    CU_ASSERT_EQUAL(vio_fault_arm(f, &(struct vio_fault_rule){ .op = VF_FSYNC, .kind = VF_EIO,
                                                               .path_suffix = ".dir" }),
                    1);
    CU_ASSERT_EQUAL(vio_fsync_dir(io, d), -EIO);
    CU_ASSERT_EQUAL(vio_fsync_dir(io, d), 0);
    CU_ASSERT_EQUAL(vio_fault_calls(f, VF_MKDIR), 2);
    CU_ASSERT_EQUAL(vio_fault_calls(f, VF_FSYNC), 2);
    CU_ASSERT_EQUAL(vio_fault_calls(f, VF_CLOSE), 2);
    CU_ASSERT_EQUAL(rmdir(d), 0);
    vio_fault_free(f);
}

struct writer_arg {
    const struct vio *io;
    int fd;
    int rc;
};

static void *writer_main(void *p)
{
    struct writer_arg *a = p;
    unsigned char rec[97];
    fill(rec, sizeof(rec), 9);
    int n = getenv("VERITY_TEST_QUICK") ? 200 : 1000;
    for (int i = 0; i < n && a->rc == 0; i++)
        a->rc = vio_pwrite_all(a->io, a->fd, rec, sizeof(rec), (off_t)i * (off_t)sizeof(rec));
    return NULL;
}

/* The writer appends while this thread syncs, as the group-commit thread
 * does. After the crash the file is exactly as long as the last sync saw. */
static void test_concurrent_append_and_sync(void)
{
    struct vio_fault *f = vio_fault_new();
    const struct vio *io = vio_fault_io(f);
    const char *p = tpath(".log");
    struct writer_arg a = { .io = io, .fd = open_rw(io, p), .rc = 0 };
    CU_ASSERT_FATAL(a.fd >= 0);
    CU_ASSERT_FATAL(vio_fault_arm(f, &(struct vio_fault_rule){ .op = VF_PWRITE,
                                                               .kind = VF_SHORT,
                                                               .after_n = 1, .count = -1 }) >= 0);
    pthread_t t;
    CU_ASSERT_FATAL(pthread_create(&t, NULL, writer_main, &a) == 0);
    int syncs = 0;
    for (int i = 0; i < 20; i++)
        syncs += io->fdatasync(io->ctx, a.fd) == 0;
    CU_ASSERT_EQUAL(pthread_join(t, NULL), 0);
    CU_ASSERT_EQUAL(a.rc, 0);
    CU_ASSERT_EQUAL(syncs, 20);
    off_t d = -1, full = size_of(p);
    CU_ASSERT_EQUAL(vio_fault_durable_len(f, p, &d), 0);
    CU_ASSERT(d >= 0 && d <= full);
    CU_ASSERT_EQUAL(vio_fault_crash(f), 0);
    CU_ASSERT_EQUAL(size_of(p), d);
    CU_ASSERT_EQUAL(io->close(io->ctx, a.fd), 0);
    vio_fault_free(f);
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    return remove(path);
}

static int suite_init(void)
{
    return mkdtemp(g_dir) == NULL ? -1 : 0;
}

static int suite_clean(void)
{
    return nftw(g_dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

int main(void)
{
    static const struct {
        const char *name;
        void (*fn)(void);
    } tests[] = {
        { "short_write_returns_fewer_bytes", test_short_write_returns_fewer_bytes },
        { "pwrite_all_completes_through_short_writes",
          test_pwrite_all_completes_through_short_writes },
        { "torn_write_leaves_exact_prefix", test_torn_write_leaves_exact_prefix },
        { "enospc_and_eio_write_nothing", test_enospc_and_eio_write_nothing },
        { "after_n_count_and_suffix_select_calls", test_after_n_count_and_suffix_select_calls },
        { "arm_rejects_invalid_rules", test_arm_rejects_invalid_rules },
        { "sync_eio_returns_eio_and_loses_unsynced_data",
          test_sync_eio_returns_eio_and_loses_unsynced_data },
        { "bitflip_changes_one_read_bit_not_the_file",
          test_bitflip_changes_one_read_bit_not_the_file },
        { "crash_truncates_to_synced_length", test_crash_truncates_to_synced_length },
        { "crash_honours_ftruncate_rename_and_rewrite",
          test_crash_honours_ftruncate_rename_and_rewrite },
        { "path_ops_inject_and_count", test_path_ops_inject_and_count },
        { "concurrent_append_and_sync", test_concurrent_append_and_sync },
    };
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    CU_pSuite s = CU_add_suite("vio_fault", suite_init, suite_clean);
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
