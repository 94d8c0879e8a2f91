/*
 * Snapshot files (format and rules in snap.h).
 *
 * Invariants: a snapshot on disk is whole or absent under its final name
 * (only a fully written and synced temp file is renamed to it); the header
 * checked after the read is the one built before the write (snap_hdr_ok on
 * both sides).
 */
#include "storage/snap.h"

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "storage/batch.h"
#include "storage/crc32c.h"
#include "storage/vlog.h"
#include "verity/errors.h"
#include "verity/verify.h"

#define SNAP_VERSION 1
#define SNAP_PATH_MAX 4096

static bool snap_hdr_ok(const struct snap_hdr *h)
{
    return (h->kind == SNAP_IDEM || h->kind == SNAP_META || h->kind == SNAP_GROUPS) &&
           h->length <= SNAP_BYTES_MAX;
}

static void encode_hdr(const struct snap_hdr *h, uint32_t payload_crc, uint8_t *out)
{
    memcpy(out, "VSNP", 4);
    put_le16(out + 4, SNAP_VERSION);
    put_le16(out + 6, (uint16_t)h->kind);
    put_le64(out + 8, h->offset);
    memcpy(out + 16, h->chain, 32);
    put_le64(out + 48, h->length);
    put_le32(out + 56, payload_crc);
    put_le32(out + 60, crc32c(0, out, 60));
}

int snap_write(const struct vio *io, const char *dir, const char *name, const struct snap_hdr *h,
               const void *payload, size_t len)
{
    char path[SNAP_PATH_MAX], tmp[SNAP_PATH_MAX + 8];
    uint8_t hdr[SNAP_HDR_SIZE];
    int fd = -1, rc;
    if (!io)
        io = &vio_posix;
    VERITY_VERIFY(snap_hdr_ok(h));
    VERITY_VERIFY(h->length == len);
    if ((size_t)snprintf(path, sizeof path, "%s/%s", dir, name) >= sizeof path)
        return -ENAMETOOLONG;
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    encode_hdr(h, crc32c(0, payload, len), hdr);
    fd = io->open(io->ctx, tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0)
        return fd;
    if ((rc = vio_pwrite_all(io, fd, hdr, sizeof hdr, 0)) ||
        (rc = vio_pwrite_all(io, fd, payload, len, SNAP_HDR_SIZE)) ||
        (rc = io->fsync(io->ctx, fd))) {
        (void)io->close(io->ctx, fd);
        (void)io->unlink(io->ctx, tmp);
        return rc;
    }
    if ((rc = io->close(io->ctx, fd))) {
        (void)io->unlink(io->ctx, tmp);
        return rc;
    }
    if ((rc = io->rename(io->ctx, tmp, path))) {
        (void)io->unlink(io->ctx, tmp);
        return rc;
    }
    return vio_fsync_dir(io, dir);
}

int snap_read(const struct vio *io, const char *dir, const char *name, enum snap_kind kind,
              struct snap_hdr *h, uint8_t **payload)
{
    char path[SNAP_PATH_MAX];
    uint8_t hdr[SNAP_HDR_SIZE];
    uint8_t *buf = NULL;
    struct stat st;
    int fd, rc;
    *payload = NULL;
    if (!io)
        io = &vio_posix;
    if ((size_t)snprintf(path, sizeof path, "%s/%s", dir, name) >= sizeof path)
        return -ENAMETOOLONG;
    fd = io->open(io->ctx, path, O_RDONLY, 0);
    if (fd < 0)
        return fd;
    if ((rc = io->fstat(io->ctx, fd, &st)))
        goto out;
    rc = VERITY_ECORRUPT;
    if (st.st_size < SNAP_HDR_SIZE || vio_pread_all(io, fd, hdr, sizeof hdr, 0))
        goto out;
    if (memcmp(hdr, "VSNP", 4) != 0 || get_le16(hdr + 4) != SNAP_VERSION ||
        get_le16(hdr + 6) != (uint16_t)kind || get_le32(hdr + 60) != crc32c(0, hdr, 60))
        goto out;
    h->kind = kind;
    h->offset = get_le64(hdr + 8);
    memcpy(h->chain, hdr + 16, 32);
    h->length = get_le64(hdr + 48);
    if (!snap_hdr_ok(h) || (uint64_t)st.st_size != SNAP_HDR_SIZE + h->length)
        goto out;
    buf = malloc(h->length ? h->length : 1);
    if (!buf) {
        rc = -ENOMEM;
        goto out;
    }
    if ((rc = vio_pread_all(io, fd, buf, h->length, SNAP_HDR_SIZE)))
        goto out;
    if (crc32c(0, buf, h->length) != get_le32(hdr + 56)) {
        rc = VERITY_ECORRUPT;
        goto out;
    }
    VERITY_VERIFY(snap_hdr_ok(h));
    *payload = buf;
    buf = NULL;
    rc = 0;
out:
    free(buf);
    (void)io->close(io->ctx, fd);
    return rc;
}

int snap_chain_at(struct vlog *log, uint64_t end, uint8_t chain[32])
{
    struct vlog_span span;
    size_t n = 0;
    uint8_t hb[BATCH_HDR_SIZE];
    struct batch_hdr bh;
    int rc;
    if (end == 0) {
        memset(chain, 0, 32);
        return 0;
    }
    if ((rc = vlog_read(log, end - 1, end, 1, &span, 1, &n)))
        return rc;
    if (n == 0)
        return VERITY_EOFFSET;
    rc = vio_pread_all(&vio_posix, span.fd, hb, sizeof hb, (off_t)span.position);
    vlog_spans_close(&span, n);
    if (rc || (rc = batch_hdr_decode(hb, sizeof hb, &bh)))
        return rc;
    if (bh.base_offset + bh.record_count != end)
        return VERITY_EOFFSET;
    VERITY_VERIFY(bh.base_offset < end);
    memcpy(chain, bh.chain, 32);
    return 0;
}

int snap_matches(struct vlog *log, const struct snap_hdr *h)
{
    struct vlog_info info;
    uint8_t chain[32];
    vlog_get_info(log, &info);
    if (h->offset > info.end_offset || h->offset < info.start_offset)
        return 0;
    if (h->offset == info.start_offset && h->offset > 0) {
        /* The batch ending there was removed by retention: the anchor holds
         * its chain, but the state below the start cannot be checked. */
        return 0;
    }
    if (snap_chain_at(log, h->offset, chain))
        return 0;
    return memcmp(chain, h->chain, 32) == 0;
}

void snap_remove(const struct vio *io, const char *dir, const char *name)
{
    char path[SNAP_PATH_MAX];
    if (!io)
        io = &vio_posix;
    snprintf(path, sizeof path, "%s/%s", dir, name);
    (void)io->unlink(io->ctx, path);
}
