/*
 * vio_posix: the default file operations table, plus the small helpers every
 * caller needs (write-all, read-all, directory fsync).
 */
#include "storage/vio.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdint.h>
#include <unistd.h>

#include "verity/errors.h"

static int p_open(void *c, const char *path, int flags, mode_t mode)
{
    int fd = open(path, flags | O_CLOEXEC, mode);
    return fd < 0 ? -errno : fd;
}
static int p_close(void *c, int fd) { return close(fd) ? -errno : 0; }
static ssize_t p_pread(void *c, int fd, void *buf, size_t n, off_t off)
{
    ssize_t r = pread(fd, buf, n, off);
    return r < 0 ? -errno : r;
}
static ssize_t p_pwrite(void *c, int fd, const void *buf, size_t n, off_t off)
{
    ssize_t r = pwrite(fd, buf, n, off);
    return r < 0 ? -errno : r;
}
static int p_fdatasync(void *c, int fd) { return fdatasync(fd) ? -errno : 0; }
static int p_fsync(void *c, int fd) { return fsync(fd) ? -errno : 0; }
static int p_ftruncate(void *c, int fd, off_t len) { return ftruncate(fd, len) ? -errno : 0; }
static int p_fstat(void *c, int fd, struct stat *st) { return fstat(fd, st) ? -errno : 0; }
static int p_rename(void *c, const char *a, const char *b) { return rename(a, b) ? -errno : 0; }
static int p_unlink(void *c, const char *p) { return unlink(p) ? -errno : 0; }
static int p_mkdir(void *c, const char *p, mode_t m) { return mkdir(p, m) ? -errno : 0; }

const struct vio vio_posix = {
    .ctx = NULL,
    .open = p_open,
    .close = p_close,
    .pread = p_pread,
    .pwrite = p_pwrite,
    .fdatasync = p_fdatasync,
    .fsync = p_fsync,
    .ftruncate = p_ftruncate,
    .fstat = p_fstat,
    .rename = p_rename,
    .unlink = p_unlink,
    .mkdir = p_mkdir,
};

int vio_pwrite_all(const struct vio *io, int fd, const void *buf, size_t n, off_t off)
{
    const uint8_t *p = buf;
    while (n > 0) {
        ssize_t w = io->pwrite(io->ctx, fd, p, n, off);
        if (w == -EINTR)
            continue;
        if (w < 0)
            return (int)w;
        if (w == 0)
            return -EIO;
        p += w;
        n -= (size_t)w;
        off += w;
    }
    return 0;
}

int vio_pread_all(const struct vio *io, int fd, void *buf, size_t n, off_t off)
{
    uint8_t *p = buf;
    while (n > 0) {
        ssize_t r = io->pread(io->ctx, fd, p, n, off);
        if (r == -EINTR)
            continue;
        if (r < 0)
            return (int)r;
        if (r == 0)
            return VERITY_ECORRUPT;
        p += r;
        n -= (size_t)r;
        off += r;
    }
    return 0;
}

int vio_fsync_dir(const struct vio *io, const char *dir)
{
    int fd = io->open(io->ctx, dir, O_RDONLY | O_DIRECTORY, 0);
    if (fd < 0)
        return fd;
    int rc = io->fsync(io->ctx, fd);
    int rc2 = io->close(io->ctx, fd);
    return rc ? rc : rc2;
}
