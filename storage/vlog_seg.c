/*
 * Segments of a partition log, their sparse indexes, and the buffered reads
 * every scan goes through (storage/vlog_int.h). A closed segment's indexes
 * are mapped read-only on first use; the active segment's live on the heap.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "storage/batch.h"
#include "storage/checkpoint.h"
#include "storage/index.h"
#include "storage/vlog_int.h"
#include "verity/errors.h"
#include "verity/limits.h"
#include "verity/verify.h"

/* ---- segment list ---------------------------------------------------------- */

void vl_seg_path(const struct vlog *log, uint64_t base, const char *ext, char *out)
{
    snprintf(out, PATH_MAX_LOG, "%s/%020" PRIu64 "%s", log->dir, base, ext);
}

int vl_segs_push(struct vlog *log, struct seg *s)
{
    /* Segments are kept in base order: reads binary-search them. */
    VERITY_VERIFY(log->nsegs == 0 || log->segs[log->nsegs - 1]->base < s->base);
    if (log->nsegs == log->segs_cap) {
        size_t cap = log->segs_cap ? log->segs_cap * 2 : 8;
        struct seg **n = realloc(log->segs, cap * sizeof *n);
        if (!n)
            return -ENOMEM;
        log->segs = n;
        log->segs_cap = cap;
    }
    log->segs[log->nsegs++] = s;
    return 0;
}

struct seg *vl_seg_new(uint64_t base)
{
    struct seg *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    s->base = s->end = base;
    s->fd = -1;
    s->cache_fd = -1;
    s->max_ts = INT64_MIN;
    s->tidx_last_ts = INT64_MIN;
    s->first_ts = INT64_MIN;
    return s;
}

void vl_seg_free(struct vlog *log, struct seg *s)
{
    if (!s)
        return;
    vl_seg_unload_index(s);
    vl_seg_fd_drop(s);
    if (s->fd >= 0)
        log->io->close(log->io->ctx, s->fd); /* data was synced or is abandoned */
    free(s);
}
/* ---- buffered reads -------------------------------------------------------- */

void vl_scan_reset(struct vlog *log)
{
    log->scan_seg = NULL;
    log->scan_len = 0;
}

int vl_seg_pread(struct vlog *log, struct seg *s, void *buf, size_t n, uint64_t off)
{
    int fd = vl_seg_fd_get(log, s);
    if (fd < 0)
        return fd;
    int rc = vio_pread_all(log->io, fd, buf, n, (off_t)off);
    vl_seg_fd_put(s, fd);
    return rc;
}

/*
 * Points *out at len bytes of segment s at pos, reading ahead up to limit
 * (the segment's valid size). The pointer is valid until the next call.
 * Returns 0, VERITY_ECORRUPT when [pos, pos+len) passes limit, or -errno.
 * The buffer is keyed by segment: only the active segment ever changes, and
 * the calls that cut it (recovery, vlog_truncate_tail) reset the buffer.
 */
int vl_read_ahead(struct vlog *log, struct seg *s, uint64_t pos, size_t len, uint64_t limit,
                  size_t ahead, const uint8_t **out)
{
    if (pos > limit || len > limit - pos)
        return VERITY_ECORRUPT;
    if (s == log->scan_seg && pos >= log->scan_pos && pos + len <= log->scan_pos + log->scan_len) {
        *out = log->scan_buf + (pos - log->scan_pos);
        return 0;
    }
    size_t want = len > ahead ? len : ahead;
    if (want > limit - pos)
        want = (size_t)(limit - pos);
    if (want > log->scan_cap) {
        uint8_t *nb = realloc(log->scan_buf, want);
        if (!nb)
            return -ENOMEM;
        log->scan_buf = nb;
        log->scan_cap = want;
    }
    vl_scan_reset(log);
    int rc = vl_seg_pread(log, s, log->scan_buf, want, pos);
    if (rc < 0)
        return rc;
    log->scan_seg = s;
    log->scan_pos = pos;
    log->scan_len = want;
    *out = log->scan_buf;
    VERITY_VERIFY(want >= len && want <= log->scan_cap);
    return 0;
}

/* Sequential scans read ahead a large chunk; random lookups a small one. */
int vl_read_at(struct vlog *log, struct seg *s, uint64_t pos, size_t len, uint64_t limit,
               const uint8_t **out)
{
    return vl_read_ahead(log, s, pos, len, limit, SCAN_CHUNK, out);
}

/* Reads and fully checks the batch at pos; on a CRC failure reads it once
 * more from the file, so a transient read error is not taken for damage. */
int vl_read_batch_checked(struct vlog *log, struct seg *s, uint64_t pos, uint64_t limit,
                              struct batch_hdr *h, const uint8_t **out)
{
    const uint8_t *p;
    int rc = vl_read_at(log, s, pos, BATCH_HDR_SIZE, limit, &p);
    if (rc)
        return rc;
    if ((rc = batch_hdr_decode(p, BATCH_HDR_SIZE, h)))
        return rc;
    for (int attempt = 0; attempt < 2; attempt++) {
        if ((rc = vl_read_at(log, s, pos, h->length, limit, &p)))
            return rc;
        rc = batch_validate(p, h->length, NULL);
        if (rc == 0 || rc != VERITY_ECORRUPT)
            break;
        vl_scan_reset(log);
    }
    *out = p;
    return rc;
}
/* ---- indexes --------------------------------------------------------------- */

static int load_index_mapped(struct vlog *log, struct seg *s);

/* Maps a closed segment's indexes (their descriptors close once mapped);
 * out of descriptors, the cache gives its own back and the load is tried
 * once more. */
int vl_seg_load_index_mapped(struct vlog *log, struct seg *s)
{
    int rc = load_index_mapped(log, s);
    if (rc == -EMFILE || rc == -ENFILE) {
        vl_fdc_make_room();
        rc = load_index_mapped(log, s);
    }
    return rc;
}

static int load_index_mapped(struct vlog *log, struct seg *s)
{
    char path[PATH_MAX_LOG];
    int rc;
    if (s->idx_loaded)
        return 0;
    vl_seg_path(log, s->base, ".index", path);
    if ((rc = idx_open(&s->oidx, log->io, path, false)))
        return rc;
    vl_seg_path(log, s->base, ".timeindex", path);
    if ((rc = idx_open(&s->tidx, log->io, path, false))) {
        idx_close(&s->oidx);
        return rc;
    }
    s->idx_loaded = true;
    return 0;
}

void vl_seg_unload_index(struct seg *s)
{
    if (!s->idx_loaded)
        return;
    idx_close(&s->oidx);
    idx_close(&s->tidx);
    s->idx_loaded = false;
}

/* Adds index entries for the batch just written at pos (active segment). */
void vl_seg_index_batch(struct vlog *log, struct seg *s, uint64_t pos, uint64_t base,
                            uint64_t data_records_before, int64_t max_ts, uint32_t len)
{
    /* Relative offsets and positions fit the index's 32-bit fields. */
    VERITY_VERIFY(base >= s->base && base - s->base <= UINT32_MAX && pos + len <= UINT32_MAX);
    if (s->oidx.n == 0 || s->bytes_since_index >= log->cfg.index_interval_bytes) {
        uint8_t raw[IDX_ENTRY_SIZE];
        struct idx_entry e = {(uint32_t)(base - s->base), (uint32_t)pos, data_records_before};
        if (s->oidx.n > 0) {
            /* Entries strictly increase (index.h's validity rule). */
            struct idx_entry last;
            idx_get(idx_raw(&s->oidx, s->oidx.n - 1), &last);
            VERITY_VERIFY(last.rel_offset < e.rel_offset && last.position < e.position &&
                          last.data_records <= e.data_records);
        }
        idx_put(raw, &e);
        idx_append_raw(&s->oidx, raw);
        if (max_ts > s->tidx_last_ts || s->tidx.n == 0) {
            int64_t ts = max_ts > s->max_ts ? max_ts : s->max_ts;
            struct tidx_entry t = {ts, (uint32_t)(base - s->base), (uint32_t)pos};
            tidx_put(raw, &t);
            idx_append_raw(&s->tidx, raw);
            s->tidx_last_ts = ts;
        }
        s->bytes_since_index = 0;
    }
    s->bytes_since_index += len;
}
