/*
 * vio: the one table of file operations that storage/ calls. The default
 * table (vio_posix) maps straight to the system calls; tests swap in
 * tests/support/vio_fault.c, which injects short and torn writes, EIO and
 * ENOSPC, failing fsyncs, bit flips on read and a crash that drops every
 * unsynced byte (SQLite's aSyscall[] serves the same purpose).
 *
 * Every function returns >= 0 on success and -errno on failure (never -1 with
 * errno set). The table is shared and must be thread-safe, because the
 * group-commit thread calls fdatasync while the writer appends.
 */
#ifndef VERITY_VIO_H
#define VERITY_VIO_H

#include <stddef.h>
#include <sys/stat.h>
#include <sys/types.h>

struct vio {
    void *ctx; /* passed back as the first argument */
    int (*open)(void *ctx, const char *path, int flags, mode_t mode);   /* returns fd */
    int (*close)(void *ctx, int fd);
    ssize_t (*pread)(void *ctx, int fd, void *buf, size_t n, off_t off);
    ssize_t (*pwrite)(void *ctx, int fd, const void *buf, size_t n, off_t off);
    int (*fdatasync)(void *ctx, int fd);
    int (*fsync)(void *ctx, int fd);
    int (*ftruncate)(void *ctx, int fd, off_t len);
    int (*fstat)(void *ctx, int fd, struct stat *st);
    int (*rename)(void *ctx, const char *from, const char *to);
    int (*unlink)(void *ctx, const char *path);
    int (*mkdir)(void *ctx, const char *path, mode_t mode);
};

/* The real system calls. Never NULL. */
extern const struct vio vio_posix;

/* Writes all n bytes at off, retrying short writes and EINTR. Returns 0 or
 * -errno. A failure may leave a prefix written. */
int vio_pwrite_all(const struct vio *io, int fd, const void *buf, size_t n, off_t off)
    __attribute__((warn_unused_result));
/* Reads exactly n bytes at off. Returns 0, -errno, or VERITY_ECORRUPT when
 * the file ends first. */
int vio_pread_all(const struct vio *io, int fd, void *buf, size_t n, off_t off)
    __attribute__((warn_unused_result));
/* Opens dir and fsyncs it, so a created, renamed or deleted entry is durable. */
int vio_fsync_dir(const struct vio *io, const char *dir) __attribute__((warn_unused_result));

#endif
