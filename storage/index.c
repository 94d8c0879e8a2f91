/*
 * Sparse offset and time indexes of a segment (format in index.h). Pure data
 * structure plus its file; validation against the segment is the caller's
 * (storage/vlog.c) because only it knows the segment's valid length.
 */
#include "storage/index.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "storage/batch.h"
#include "verity/errors.h"
#include "verity/verify.h"

void idx_put(uint8_t *raw, const struct idx_entry *e)
{
    put_le32(raw, e->rel_offset);
    put_le32(raw + 4, e->position);
    put_le64(raw + 8, e->data_records);
}

void idx_get(const uint8_t *raw, struct idx_entry *e)
{
    e->rel_offset = get_le32(raw);
    e->position = get_le32(raw + 4);
    e->data_records = get_le64(raw + 8);
}

void tidx_put(uint8_t *raw, const struct tidx_entry *e)
{
    put_le64(raw, (uint64_t)e->timestamp);
    put_le32(raw + 8, e->rel_offset);
    put_le32(raw + 12, e->position);
}

void tidx_get(const uint8_t *raw, struct tidx_entry *e)
{
    e->timestamp = (int64_t)get_le64(raw);
    e->rel_offset = get_le32(raw + 8);
    e->position = get_le32(raw + 12);
}

/* Writable indexes live on the heap (n <= cap) and may have a file; read-only
 * ones are a whole-entry mapping (or empty); never both. */
static bool idx_ok(const struct idx *x)
{
    if (x->heap && x->map)
        return false;
    if (x->heap)
        return x->n <= x->cap;
    if (x->fd >= 0)
        return false;
    return x->map ? x->n * IDX_ENTRY_SIZE == x->map_len : x->n == 0;
}

const uint8_t *idx_raw(const struct idx *x, size_t i)
{
    VERITY_VERIFY(i < x->n);
    return (x->heap ? x->heap : x->map) + i * IDX_ENTRY_SIZE;
}

int idx_open(struct idx *x, const struct vio *io, const char *path, bool writable)
{
    struct stat st;
    int rc = 0;
    memset(x, 0, sizeof *x);
    x->io = io;
    x->fd = -1;
    int fd = io->open(io->ctx, path, writable ? O_RDWR | O_CREAT : O_RDONLY, 0644);
    if (fd < 0)
        return (!writable && fd == -ENOENT) ? 0 : fd;
    if ((rc = io->fstat(io->ctx, fd, &st)) < 0)
        goto fail;
    size_t n = (size_t)st.st_size / IDX_ENTRY_SIZE;
    size_t bytes = n * IDX_ENTRY_SIZE;
    if (writable) {
        x->cap = n < 64 ? 64 : n * 2;
        x->heap = malloc(x->cap * IDX_ENTRY_SIZE);
        if (!x->heap) {
            rc = -ENOMEM;
            goto fail;
        }
        if (bytes && (rc = vio_pread_all(io, fd, x->heap, bytes, 0)) < 0)
            goto fail;
        if ((off_t)bytes != st.st_size && (rc = io->ftruncate(io->ctx, fd, (off_t)bytes)) < 0)
            goto fail;
        x->fd = fd;
        x->n = n;
        VERITY_VERIFY(idx_ok(x));
        return 0;
    }
    if (bytes) {
        void *m = mmap(NULL, bytes, PROT_READ, MAP_SHARED, fd, 0);
        if (m == MAP_FAILED) {
            rc = -errno;
            goto fail;
        }
        x->map = m;
        x->map_len = bytes;
    }
    x->n = n;
    io->close(io->ctx, fd); /* read-only: close result carries no data */
    VERITY_VERIFY(idx_ok(x));
    return 0;
fail:
    free(x->heap);
    x->heap = NULL;
    io->close(io->ctx, fd);
    return rc;
}

void idx_close(struct idx *x)
{
    if (x->map)
        munmap((void *)x->map, x->map_len);
    free(x->heap);
    if (x->fd >= 0)
        x->io->close(x->io->ctx, x->fd); /* index is rebuildable; a lost tail is tolerated */
    memset(x, 0, sizeof *x);
    x->fd = -1;
}

void idx_append_raw(struct idx *x, const uint8_t *entry)
{
    VERITY_VERIFY(x->heap != NULL && idx_ok(x));
    if (x->n == x->cap) {
        uint8_t *p = realloc(x->heap, x->cap * 2 * IDX_ENTRY_SIZE);
        if (!p) {
            x->write_failed = true; /* lookups fall back to an earlier entry */
            return;
        }
        x->heap = p;
        x->cap *= 2;
    }
    memcpy(x->heap + x->n * IDX_ENTRY_SIZE, entry, IDX_ENTRY_SIZE);
    if (!x->write_failed && x->fd >= 0 &&
        vio_pwrite_all(x->io, x->fd, entry, IDX_ENTRY_SIZE, (off_t)(x->n * IDX_ENTRY_SIZE)) < 0)
        x->write_failed = true;
    x->n++;
    VERITY_VERIFY(idx_ok(x));
}

int idx_truncate(struct idx *x, size_t n)
{
    VERITY_VERIFY(x->heap != NULL && n <= x->n && idx_ok(x));
    x->n = n;
    if (x->fd >= 0)
        return x->io->ftruncate(x->io->ctx, x->fd, (off_t)(n * IDX_ENTRY_SIZE));
    return 0;
}

long idx_find_offset(const struct idx *x, uint32_t rel)
{
    long lo = 0, hi = (long)x->n - 1, best = -1;
    while (lo <= hi) {
        long mid = lo + (hi - lo) / 2;
        if (get_le32(idx_raw(x, (size_t)mid)) <= rel) {
            best = mid;
            lo = mid + 1;
        } else {
            hi = mid - 1;
        }
    }
    return best;
}

long tidx_find_before(const struct idx *x, int64_t ts)
{
    long lo = 0, hi = (long)x->n - 1, best = -1;
    while (lo <= hi) {
        long mid = lo + (hi - lo) / 2;
        if ((int64_t)get_le64(idx_raw(x, (size_t)mid)) < ts) {
            best = mid;
            lo = mid + 1;
        } else {
            hi = mid - 1;
        }
    }
    return best;
}
