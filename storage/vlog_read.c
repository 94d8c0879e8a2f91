/*
 * Reads of a partition log by offset and by time. Both locate a batch with a
 * binary search (segments by base offset, then the sparse index) and then
 * scan batch headers, checking each base offset, so a stale index entry can
 * slow a read down but never misdirect it.
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
#include <unistd.h>

#include "storage/batch.h"
#include "storage/checkpoint.h"
#include "storage/index.h"
#include "storage/vlog_int.h"
#include "verity/errors.h"
#include "verity/limits.h"
#include "verity/verify.h"

/* ---- reading --------------------------------------------------------------- */

/* Index of the segment that holds offset (base <= offset < end, or the
 * active segment for offset == end_offset). */
static size_t seg_find(const struct vlog *log, uint64_t offset)
{
    size_t lo = 0, hi = log->nsegs - 1;
    while (lo < hi) {
        size_t mid = lo + (hi - lo + 1) / 2;
        if (log->segs[mid]->base <= offset)
            lo = mid;
        else
            hi = mid - 1;
    }
    return lo;
}

/* Byte position of a batch at or before offset in s, from the index. The
 * scan that follows checks every header it passes, so a bad index can only
 * slow a read down, never misdirect it. */
static int seg_start_pos(struct vlog *log, struct seg *s, uint64_t offset, uint64_t *pos,
                         uint64_t *at)
{
    int rc;
    if (!s->idx_loaded && (rc = vl_seg_load_index_mapped(log, s)))
        return rc;
    *pos = 0;
    *at = s->base;
    long i = idx_find_offset(&s->oidx, (uint32_t)(offset - s->base));
    if (i >= 0) {
        struct idx_entry e;
        idx_get(idx_raw(&s->oidx, (size_t)i), &e);
        if (e.position < s->size) {
            *pos = e.position;
            *at = s->base + e.rel_offset;
        }
    }
    return 0;
}

/* What vlog_read hands out: non-empty spans of increasing, contiguous
 * offsets, all below end. */
static bool spans_ok(const struct vlog_span *sp, size_t n, uint64_t end)
{
    for (size_t i = 0; i < n; i++) {
        if (sp[i].length < BATCH_HDR_SIZE || sp[i].base_offset >= sp[i].end_offset ||
            sp[i].base_offset >= end)
            return false;
        if (i > 0 && sp[i].base_offset != sp[i - 1].end_offset)
            return false;
    }
    return true;
}

/* vlog_read without descriptors: fills the spans' positions, lengths,
 * offsets and segments, and sets every fd to -1. */
static int locate(struct vlog *log, uint64_t offset, uint64_t end, size_t max_bytes,
                  struct vlog_span *spans, size_t spans_max, size_t *n_out)
{
    int rc;
    *n_out = 0;
    if (offset < log->segs[0]->base || offset > log->end_offset)
        return VERITY_EOFFSET;
    if (end > log->end_offset)
        end = log->end_offset;
    if (offset >= end || spans_max == 0)
        return 0;
    size_t si = seg_find(log, offset);
    uint64_t total = 0;
    bool first = true;
    for (; si < log->nsegs && *n_out < spans_max; si++) {
        struct seg *s = log->segs[si];
        uint64_t pos, at;
        if ((rc = seg_start_pos(log, s, offset, &pos, &at)))
            return rc;
        struct vlog_span *sp = NULL;
        while (pos < s->size) {
            const uint8_t *p;
            struct batch_hdr h;
            if ((rc = vl_read_ahead(log, s, pos, BATCH_HDR_SIZE, s->size, LOOKUP_CHUNK, &p)))
                return rc;
            if ((rc = batch_hdr_decode(p, BATCH_HDR_SIZE, &h)))
                return rc;
            if (h.base_offset != at) {
                /* A stale index entry: fall back to scanning the segment. */
                if (pos == 0)
                    return VERITY_ECORRUPT;
                pos = 0;
                at = s->base;
                continue;
            }
            uint64_t next = h.base_offset + h.record_count;
            /* Paired with append_batch: every batch advances the offset. */
            VERITY_VERIFY(next > h.base_offset && h.length >= BATCH_HDR_SIZE);
            if (next <= offset) {
                pos += h.length;
                at = next;
                continue;
            }
            if (h.base_offset >= end)
                goto done;
            if (!first && total + h.length > max_bytes)
                goto done;
            if (!sp) {
                sp = &spans[(*n_out)++];
                sp->fd = -1;
                sp->segment = s->base;
                sp->position = pos;
                sp->length = 0;
                sp->base_offset = h.base_offset;
            }
            sp->length += h.length;
            sp->end_offset = next;
            total += h.length;
            first = false;
            pos += h.length;
            at = next;
            offset = next;
        }
    }
done:
    VERITY_VERIFY(*n_out <= spans_max && spans_ok(spans, *n_out, end));
    return 0;
}

void vlog_spans_close(struct vlog_span *spans, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (spans[i].fd >= 0)
            (void)close(spans[i].fd); /* a read-only use of the caller's dup */
        spans[i].fd = -1;
    }
}

int vlog_read(struct vlog *log, uint64_t offset, uint64_t end, size_t max_bytes,
              struct vlog_span *spans, size_t spans_max, size_t *n_out)
{
    int rc = locate(log, offset, end, max_bytes, spans, spans_max, n_out);
    if (rc)
        return rc;
    /* Each span gets a descriptor of its own, so what the caller holds
     * outlives an eviction from the cache and any later call on the log. */
    for (size_t i = 0; i < *n_out; i++) {
        struct seg *s = log->segs[seg_find(log, spans[i].segment)];
        VERITY_VERIFY(s->base == spans[i].segment && spans[i].position + spans[i].length <= s->size);
        int fd = vl_seg_fd_get(log, s);
        if (fd < 0) {
            rc = fd;
        } else {
            spans[i].fd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
            rc = spans[i].fd < 0 ? -errno : 0;
            vl_seg_fd_put(s, fd);
        }
        if (rc) {
            vlog_spans_close(spans, i);
            *n_out = 0;
            return rc;
        }
    }
    return 0;
}

int vlog_read_copy(struct vlog *log, uint64_t offset, uint64_t end, void *buf, size_t cap,
                   size_t *len_out)
{
    struct vlog_span spans[16];
    size_t n = 0;
    int rc = locate(log, offset, end, cap, spans, 16, &n);
    *len_out = 0;
    if (rc)
        return rc;
    size_t used = 0;
    for (size_t i = 0; i < n; i++) {
        if (spans[i].length > cap - used)
            return used ? 0 : VERITY_ELIMIT;
        /* Through the log's own descriptor (and its vio), no dup needed. */
        struct seg *s = log->segs[seg_find(log, spans[i].segment)];
        VERITY_VERIFY(s->base == spans[i].segment);
        if ((rc = vl_seg_pread(log, s, (uint8_t *)buf + used, spans[i].length,
                               spans[i].position)))
            return rc;
        /* Check what was read (header, CRC, offset continuity), so a bad
         * read is reported, never returned. Records are bounds-checked by
         * the iterator whoever walks them. */
        uint64_t expect = spans[i].base_offset;
        for (size_t p = used; p < used + spans[i].length;) {
            struct batch_hdr h;
            const uint8_t *b = (const uint8_t *)buf + p;
            if (batch_hdr_decode(b, used + spans[i].length - p, &h) ||
                h.length > used + spans[i].length - p || batch_crc_compute(b, h.length) != h.crc ||
                h.base_offset != expect)
                return VERITY_ECORRUPT;
            expect += h.record_count;
            p += h.length;
        }
        used += spans[i].length;
        *len_out = used;
    }
    return 0;
}

int vlog_offset_for_time(struct vlog *log, int64_t ts, uint64_t *offset_out)
{
    int rc;
    for (size_t si = 0; si < log->nsegs; si++) {
        struct seg *s = log->segs[si];
        if (s->max_ts < ts)
            continue;
        if (!s->idx_loaded && (rc = vl_seg_load_index_mapped(log, s)))
            return rc;
        uint64_t pos = 0, at = s->base;
        long i = tidx_find_before(&s->tidx, ts);
        if (i >= 0) {
            struct tidx_entry t;
            tidx_get(idx_raw(&s->tidx, (size_t)i), &t);
            if (t.position < s->size) {
                pos = t.position;
                at = s->base + t.rel_offset;
            }
        }
        while (pos < s->size) {
            const uint8_t *p;
            struct batch_hdr h;
            if ((rc = vl_read_at(log, s, pos, BATCH_HDR_SIZE, s->size, &p)))
                return rc;
            if ((rc = batch_hdr_decode(p, BATCH_HDR_SIZE, &h)))
                return rc;
            if (h.base_offset != at)
                return VERITY_ECORRUPT;
            if (h.max_timestamp >= ts) {
                *offset_out = h.base_offset;
                VERITY_VERIFY(*offset_out < log->end_offset);
                return 0;
            }
            pos += h.length;
            at += h.record_count;
        }
    }
    *offset_out = log->end_offset;
    return 0;
}
