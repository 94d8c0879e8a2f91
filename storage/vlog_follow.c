/*
 * The calls a backup needs to hold the primary's log byte for byte
 * (vlog.h, "Follower calls"): append exact bytes that chain from the tail,
 * and truncate an uncommitted tail.
 *
 * Invariants: after either call the log's end offset, chain and segment
 * sizes agree with the bytes on disk (checked with VERITY_VERIFY), and a
 * refused call leaves the log unchanged.
 */
#include <errno.h>
#include <string.h>

#include "storage/vlog_int.h"
#include "verity/errors.h"

int vlog_append_exact(struct vlog *log, uint8_t *batch, size_t len, struct vlog_append_info *out)
{
    struct batch_hdr h;
    uint8_t chain[BATCH_CHAIN_SIZE];
    int rc;
    if (log->cfg.read_only || vlog_error(log))
        return VERITY_EREADONLY;
    if ((rc = batch_validate(batch, len, NULL)) || (rc = batch_hdr_decode(batch, len, &h)))
        return rc;
    if (h.base_offset != log->end_offset)
        return VERITY_EOFFSET;
    batch_chain_compute(log->chain, batch, len, chain);
    if (memcmp(chain, h.chain, BATCH_CHAIN_SIZE) != 0)
        return VERITY_ECHAIN;
    uint64_t end_before = log->end_offset;
    if ((rc = vl_append_raw(log, batch, &h, out)))
        return rc;
    /* The write path stamps the same base offset and chain: unchanged bytes. */
    VERITY_VERIFY(memcmp(batch + BATCH_OFF_CHAIN, chain, BATCH_CHAIN_SIZE) == 0);
    VERITY_VERIFY(log->end_offset == end_before + h.record_count);
    VERITY_VERIFY(memcmp(log->chain, chain, BATCH_CHAIN_SIZE) == 0);
    return 0;
}

/* Number of index entries whose position is below pos (entries are sorted). */
static size_t idx_below(const struct idx *x, uint64_t pos, bool time_index)
{
    size_t n = 0;
    for (; n < x->n; n++) {
        uint64_t p;
        if (time_index) {
            struct tidx_entry t;
            tidx_get(idx_raw(x, n), &t);
            p = t.position;
        } else {
            struct idx_entry e;
            idx_get(idx_raw(x, n), &e);
            p = e.position;
        }
        if (p >= pos)
            break;
    }
    return n;
}

int vlog_truncate_tail(struct vlog *log, uint64_t offset, uint64_t committed_end)
{
    int rc;
    if (log->cfg.read_only || vlog_error(log))
        return VERITY_EREADONLY;
    if (offset < committed_end)
        return VERITY_EINVAL; /* never cut what may be committed */
    if (offset > log->end_offset)
        return VERITY_EOFFSET;
    if (offset == log->end_offset)
        return 0;
    struct seg *s = vl_active(log);
    if (offset < s->base)
        return VERITY_EOFFSET; /* only the active segment's tail */

    /* Find the batch that starts at offset; remember the chain, record
     * count and largest timestamp of what stays. */
    uint8_t chain[BATCH_CHAIN_SIZE];
    uint64_t records = s->data_records_base;
    if (s->base == 0 && log->nsegs == 1) {
        memset(chain, 0, sizeof chain);
    } else if (log->nsegs > 1) {
        uint64_t r2;
        if ((rc = vl_seg_tail_state(log, log->segs[log->nsegs - 2], chain, &r2)))
            return rc;
    } else {
        return VERITY_EUNSUPPORTED; /* the chain below comes from the anchor */
    }
    uint64_t pos = 0, off = s->base;
    int64_t max_ts = INT64_MIN;
    bool last_ckpt = false;
    while (off < offset) {
        const uint8_t *p;
        struct batch_hdr h;
        if (pos >= s->size)
            return VERITY_EOFFSET;
        if ((rc = vl_read_at(log, s, pos, BATCH_HDR_SIZE, s->size, &p)) ||
            (rc = batch_hdr_decode(p, BATCH_HDR_SIZE, &h)))
            return rc;
        VERITY_VERIFY(h.base_offset == off);
        memcpy(chain, h.chain, BATCH_CHAIN_SIZE);
        if (!(h.attributes & BATCH_ATTR_CONTROL))
            records += h.record_count;
        if (h.max_timestamp > max_ts)
            max_ts = h.max_timestamp;
        last_ckpt = (h.attributes & BATCH_ATTR_CONTROL) != 0;
        off += h.record_count;
        pos += h.length;
    }
    if (off != offset)
        return VERITY_EOFFSET; /* offset is inside a batch */

    /* Durable first, so the cut is the only change in flight. */
    if ((rc = vlog_sync(log)))
        return rc;
    /* The cut drops the zero tail too; it is refilled after the next append. */
    vl_zero_cut(log);
    pthread_mutex_lock(&log->sync_mu);
    rc = log->io->ftruncate(log->io->ctx, s->fd, (off_t)pos);
    if (!rc)
        rc = log->io->fsync(log->io->ctx, s->fd);
    if (!rc && s->idx_loaded) {
        rc = idx_truncate(&s->oidx, idx_below(&s->oidx, pos, false));
        if (!rc)
            rc = idx_truncate(&s->tidx, idx_below(&s->tidx, pos, true));
    }
    if (rc) {
        /* Where the file ends now is unknown: no zero region is assumed
         * (a later roll or close trims the file to the segment's size). */
        pthread_mutex_unlock(&log->sync_mu);
        vl_zero_cut_done(log, s->size);
        return rc; /* bytes beyond pos may or may not be gone: the caller retries */
    }
    vl_zero_cut_done(log, pos);
    vl_scan_reset(log);
    s->size = pos;
    s->end = offset;
    s->max_ts = max_ts;
    s->tidx_last_ts = max_ts;
    s->bytes_since_index = log->cfg.index_interval_bytes;
    log->end_offset = offset;
    memcpy(log->chain, chain, BATCH_CHAIN_SIZE);
    log->data_records = records;
    log->last_is_checkpoint = last_ckpt;
    log->max_ts = max_ts;
    for (size_t i = 0; i + 1 < log->nsegs; i++)
        if (log->segs[i]->max_ts > log->max_ts)
            log->max_ts = log->segs[i]->max_ts;
    pthread_mutex_lock(&log->mu);
    if (log->written_end > offset)
        log->written_end = offset;
    if (log->synced_end > offset)
        log->synced_end = offset;
    if (__atomic_load_n(&log->durable_end, __ATOMIC_ACQUIRE) > offset)
        __atomic_store_n(&log->durable_end, offset, __ATOMIC_RELEASE);
    log->pending_bytes = 0;
    pthread_mutex_unlock(&log->mu);
    pthread_mutex_unlock(&log->sync_mu);
    /* the Merkle tree had a leaf per cut batch: before, they stayed, and
     * the next appends' leaves followed them (verify: "tree has leaves
     * past the end of the log", found by tests/cluster/repair_e2e.py) */
    vl_tree_cut(log);
    VERITY_VERIFY(vl_active(log)->end == log->end_offset);
    VERITY_VERIFY(s->size == pos);
    return 0;
}
