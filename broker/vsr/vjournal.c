/*
 * vjournal: the VSR journal and superblock files (layout in vjournal.h).
 *
 * Invariants: every offset written or read lies inside the file's fixed
 * size (slot < slots, length <= slot bytes), checked before each call;
 * a write returns only after fdatasync.
 */
#include "broker/vsr/vjournal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "broker/vsr/superblock.h"
#include "storage/vio.h"
#include "verity/errors.h"
#include "verity/verify.h"

static int open_sized(struct vjournal *j, const char *dir, const char *name, uint64_t size,
                      int *fd, bool *was_empty)
{
    char path[1200];
    struct stat st;
    snprintf(path, sizeof path, "%s/%s", dir, name);
    *fd = j->io->open(j->io->ctx, path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (*fd < 0)
        return *fd;
    if (j->io->fstat(j->io->ctx, *fd, &st))
        return -EIO;
    if (was_empty)
        *was_empty = st.st_size == 0;
    if ((uint64_t)st.st_size != size) {
        int rc = j->io->ftruncate(j->io->ctx, *fd, (off_t)size);
        if (rc == 0)
            rc = j->io->fsync(j->io->ctx, *fd);
        if (rc)
            return rc < 0 ? rc : -EIO;
    }
    return 0;
}

int vjournal_open(struct vjournal *j, const char *dir, uint32_t slots, uint32_t body_max,
                  const struct vio *io)
{
    memset(j, 0, sizeof *j);
    j->fd_sb = j->fd_prep = j->fd_hdr = -1;
    j->io = io ? io : &vio_posix;
    j->slots = slots;
    j->body_max = body_max;
    j->prep_slot_bytes = 4 + VSR_HEADER_SIZE + body_max;
    if (slots == 0 || body_max == 0)
        return VERITY_EINVAL;
    int rc = j->io->mkdir(j->io->ctx, dir, 0755);
    if (rc && rc != -EEXIST)
        return rc;
    if ((rc = open_sized(j, dir, "superblock", (uint64_t)VSR_SB_COPIES * VSR_SB_SIZE, &j->fd_sb,
                         NULL)) ||
        (rc = open_sized(j, dir, "prepares", (uint64_t)slots * j->prep_slot_bytes, &j->fd_prep,
                         NULL)) ||
        (rc = open_sized(j, dir, "headers", (uint64_t)slots * VSR_HEADER_SIZE, &j->fd_hdr, NULL)) ||
        (rc = vio_fsync_dir(j->io, dir))) {
        vjournal_close(j);
        return rc;
    }
    /* Fresh: no superblock copy was ever written (the file is all zero). */
    uint8_t sb[VSR_SB_COPIES * VSR_SB_SIZE];
    if ((rc = vio_pread_all(j->io, j->fd_sb, sb, sizeof sb, 0))) {
        vjournal_close(j);
        return rc;
    }
    j->fresh = true;
    for (size_t i = 0; i < sizeof sb && j->fresh; i++)
        j->fresh = sb[i] == 0;
    return 0;
}

void vjournal_close(struct vjournal *j)
{
    int *fds[3] = {&j->fd_sb, &j->fd_prep, &j->fd_hdr};
    for (int i = 0; i < 3; i++)
        if (*fds[i] >= 0) {
            (void)j->io->close(j->io->ctx, *fds[i]); /* every write was synced already */
            *fds[i] = -1;
        }
}

int vjournal_write(struct vjournal *j, const struct vsr_write *w)
{
    int rc = vjournal_put(j, w);
    return rc ? rc : vjournal_sync(j, w->kind);
}

int vjournal_sync(struct vjournal *j, uint8_t kind)
{
    int fd = kind == VSR_WRITE_PREPARE ? j->fd_prep : kind == VSR_WRITE_HEADER ? j->fd_hdr
                                                                             : j->fd_sb;
    int rc = j->io->fdatasync(j->io->ctx, fd);
    if (rc)
        return rc < 0 ? rc : -EIO;
    __atomic_fetch_add(&j->syncs, 1, __ATOMIC_RELAXED); /* from several writer threads */
    return 0;
}

int vjournal_put(struct vjournal *j, const struct vsr_write *w)
{
    int fd;
    off_t off;
    uint8_t lenb[4];
    int rc;
    switch (w->kind) {
    case VSR_WRITE_PREPARE:
        if (w->slot >= j->slots || w->len < VSR_HEADER_SIZE ||
            w->len > VSR_HEADER_SIZE + j->body_max)
            return VERITY_EINVAL;
        fd = j->fd_prep;
        off = (off_t)w->slot * j->prep_slot_bytes;
        for (int i = 0; i < 4; i++)
            lenb[i] = (uint8_t)(w->len >> (8 * i));
        /* Length and bytes in one write where possible: both in one page for
         * the common small prepare, and a torn write is caught by the core's
         * checksums either way. */
        if ((rc = vio_pwrite_all(j->io, fd, lenb, 4, off)) ||
            (rc = vio_pwrite_all(j->io, fd, w->bytes, w->len, off + 4)))
            return rc;
        break;
    case VSR_WRITE_HEADER:
        if (w->slot >= j->slots || w->len != VSR_HEADER_SIZE)
            return VERITY_EINVAL;
        fd = j->fd_hdr;
        if ((rc = vio_pwrite_all(j->io, fd, w->bytes, w->len, (off_t)w->slot * VSR_HEADER_SIZE)))
            return rc;
        break;
    case VSR_WRITE_SUPERBLOCK:
        if (w->slot >= VSR_SB_COPIES || w->len != VSR_SB_SIZE)
            return VERITY_EINVAL;
        fd = j->fd_sb;
        if ((rc = vio_pwrite_all(j->io, fd, w->bytes, w->len, (off_t)w->slot * VSR_SB_SIZE)))
            return rc;
        break;
    default:
        return VERITY_EINVAL;
    }
    (void)fd;
    __atomic_fetch_add(&j->writes, 1, __ATOMIC_RELAXED);
    return 0;
}

static int read_at(struct vjournal *j, int fd, off_t off, uint32_t n, uint8_t *buf, uint32_t cap,
                   uint32_t *len)
{
    if (n > cap)
        n = cap;
    if (vio_pread_all(j->io, fd, buf, n, off))
        return -1;
    *len = n;
    return 0;
}

int vjournal_read_prepare(void *ctx, uint32_t slot, uint8_t *buf, uint32_t cap, uint32_t *len)
{
    struct vjournal *j = ctx;
    uint8_t lenb[4];
    if (slot >= j->slots)
        return -1;
    off_t off = (off_t)slot * j->prep_slot_bytes;
    if (vio_pread_all(j->io, j->fd_prep, lenb, 4, off))
        return -1;
    uint32_t n = (uint32_t)lenb[0] | (uint32_t)lenb[1] << 8 | (uint32_t)lenb[2] << 16 |
                 (uint32_t)lenb[3] << 24;
    if (n > j->prep_slot_bytes - 4)
        n = j->prep_slot_bytes - 4; /* damaged length: the core rejects the bytes */
    return read_at(j, j->fd_prep, off + 4, n, buf, cap, len);
}

int vjournal_read_header(void *ctx, uint32_t slot, uint8_t *buf, uint32_t cap, uint32_t *len)
{
    struct vjournal *j = ctx;
    if (slot >= j->slots)
        return -1;
    return read_at(j, j->fd_hdr, (off_t)slot * VSR_HEADER_SIZE, VSR_HEADER_SIZE, buf, cap, len);
}

int vjournal_read_superblock(void *ctx, uint32_t slot, uint8_t *buf, uint32_t cap, uint32_t *len)
{
    struct vjournal *j = ctx;
    if (slot >= VSR_SB_COPIES)
        return -1;
    return read_at(j, j->fd_sb, (off_t)slot * VSR_SB_SIZE, VSR_SB_SIZE, buf, cap, len);
}
