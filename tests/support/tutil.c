/* Test helpers (see tutil.h). */
#include "tests/support/tutil.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

char *tu_tmpdir(const char *tag)
{
    const char *base = getenv("TMPDIR");
    char *path = NULL;
    if (asprintf(&path, "%s/verity-%s-XXXXXX", base && *base ? base : "/tmp", tag) < 0)
        abort();
    if (!mkdtemp(path)) {
        perror("mkdtemp");
        abort();
    }
    return path;
}

static int rm_one(const char *p, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(p) && errno != ENOENT ? -1 : 0;
}

void tu_rmrf(const char *path)
{
    if (path)
        nftw(path, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

int64_t tu_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t tu_mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

bool tu_quick(void)
{
    const char *q = getenv("VERITY_TEST_QUICK");
    return q && *q && strcmp(q, "0") != 0;
}

int tu_build_batch(struct batch_builder *b, const char *tag, uint64_t first_id, uint32_t n,
                   size_t value_len, int64_t ts)
{
    char key[64];
    char *val = NULL;
    batch_builder_reset(b);
    if (value_len && !(val = malloc(value_len)))
        return -ENOMEM;
    for (uint32_t i = 0; i < n; i++) {
        int kl = snprintf(key, sizeof key, "%s-%" PRIu64, tag, first_id + i);
        if (val)
            for (size_t j = 0; j < value_len; j++)
                val[j] = (char)('a' + (first_id + i + j) % 26);
        int rc = batch_builder_add(b, ts + i, key, kl, val ? val : key,
                                   val ? (int32_t)value_len : kl, NULL, 0);
        if (rc) {
            free(val);
            return rc;
        }
    }
    free(val);
    return batch_builder_finish(b, NULL);
}

int tu_copy_file(const char *src, const char *dst)
{
    int in = open(src, O_RDONLY), out = -1, rc = 0;
    char buf[1 << 16];
    if (in < 0)
        return -errno;
    out = open(dst, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (out < 0) {
        rc = -errno;
        goto done;
    }
    for (;;) {
        ssize_t r = read(in, buf, sizeof buf);
        if (r < 0) {
            rc = -errno;
            break;
        }
        if (r == 0)
            break;
        if (write(out, buf, (size_t)r) != r) {
            rc = -EIO;
            break;
        }
    }
done:
    close(in);
    if (out >= 0 && close(out) && !rc)
        rc = -errno;
    return rc;
}

int tu_flip_bit(const char *path, uint64_t pos, unsigned bit)
{
    int fd = open(path, O_RDWR);
    unsigned char c;
    if (fd < 0)
        return -errno;
    int rc = 0;
    if (pread(fd, &c, 1, (off_t)pos) != 1)
        rc = -EIO;
    c ^= (unsigned char)(1u << (bit & 7));
    if (!rc && pwrite(fd, &c, 1, (off_t)pos) != 1)
        rc = -EIO;
    if (close(fd) && !rc)
        rc = -errno;
    return rc;
}

int64_t tu_file_size(const char *path)
{
    struct stat st;
    return stat(path, &st) ? -1 : (int64_t)st.st_size;
}
