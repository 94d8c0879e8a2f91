/*
 * Opening a partition log: list the segments, finish an interrupted
 * retention, check each closed segment's indexes (rebuilding them by a scan
 * when they fail), and recover the active segment.
 *
 * Recovery of the active segment (only it is scanned, so open is fast on any
 * size): start from the last offset-index entry whose batch checks out,
 * re-validate every following batch (header, CRC, records, offset
 * continuity, chain), and at the first bad one decide:
 *   - if a valid batch follows anywhere later in the file, the damage is not
 *     a torn tail: open fails with the first bad offset, nothing is cut;
 *   - otherwise the tail is torn: cut it; vlog_open then appends a recovery
 *     control batch naming the cut offset range, byte count and reason.
 * A read that fails its CRC is re-read once, so a transient read error never
 * causes a cut.
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
#include "storage/slog.h"
#include "storage/vlog_int.h"
#include "verity/errors.h"
#include "verity/limits.h"
#include "verity/verify.h"

/* ---- index checks ---------------------------------------------------------- */

/* Longest prefix of a loaded index that is strictly increasing and inside
 * the segment's valid bytes. */
static size_t idx_valid_prefix(const struct idx *x, uint64_t size, bool time_index)
{
    size_t n = 0;
    for (; n < x->n; n++) {
        const uint8_t *r = idx_raw(x, n);
        uint32_t rel, pos;
        if (time_index) {
            struct tidx_entry t;
            tidx_get(r, &t);
            rel = t.rel_offset;
            pos = t.position;
            if (n > 0) {
                struct tidx_entry p;
                tidx_get(idx_raw(x, n - 1), &p);
                if (t.timestamp <= p.timestamp || rel <= p.rel_offset || pos <= p.position)
                    break;
            }
        } else {
            struct idx_entry e;
            idx_get(r, &e);
            rel = e.rel_offset;
            pos = e.position;
            if (n > 0) {
                struct idx_entry p;
                idx_get(idx_raw(x, n - 1), &p);
                if (rel <= p.rel_offset || pos <= p.position || e.data_records < p.data_records)
                    break;
            } else if (rel != 0 || pos != 0) {
                break;
            }
        }
        if (pos >= size)
            break;
    }
    return n;
}

/*
 * Scans a whole segment from byte 0 and writes fresh index files, leaving
 * them loaded writable. Used when an index is missing or fails its checks.
 * Each batch must pass its checks; a bad batch stops the scan (the caller
 * decides what that means). Returns 0 and sets s->end/size/max_ts, or an
 * error with *bad_pos set.
 */
static int seg_rebuild_index(struct vlog *log, struct seg *s, uint64_t file_size,
                             uint64_t *bad_pos)
{
    char path[PATH_MAX_LOG];
    int rc;
    vl_seg_unload_index(s);
    vl_seg_path(log, s->base, ".index", path);
    log->io->unlink(log->io->ctx, path);
    if ((rc = idx_open(&s->oidx, log->io, path, true)))
        return rc;
    vl_seg_path(log, s->base, ".timeindex", path);
    log->io->unlink(log->io->ctx, path);
    if ((rc = idx_open(&s->tidx, log->io, path, true))) {
        idx_close(&s->oidx);
        return rc;
    }
    s->idx_loaded = true;
    s->bytes_since_index = 0;
    s->tidx_last_ts = INT64_MIN;
    s->max_ts = INT64_MIN;
    uint64_t pos = 0, expected = s->base, records = s->data_records_base;
    while (pos < file_size) {
        struct batch_hdr h;
        const uint8_t *p;
        rc = vl_read_batch_checked(log, s, pos, file_size, &h, &p);
        if (rc == 0 && h.base_offset != expected)
            rc = VERITY_ECORRUPT;
        if (rc) {
            *bad_pos = pos;
            return rc;
        }
        if (pos == 0)
            s->first_ts = h.first_timestamp;
        vl_seg_index_batch(log, s, pos, h.base_offset, records, h.max_timestamp, h.length);
        if (h.max_timestamp > s->max_ts)
            s->max_ts = h.max_timestamp;
        if (!(h.attributes & BATCH_ATTR_CONTROL))
            records += h.record_count;
        expected += h.record_count;
        pos += h.length;
    }
    s->size = pos;
    s->end = expected;
    log->recovery.index_rebuilt = true;
    return 0;
}
/* ---- closed segments ------------------------------------------------------- */

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* Lists the segment base offsets in dir, sorted. */
static int list_segments(const char *dir, uint64_t **out, size_t *n_out)
{
    DIR *d = opendir(dir);
    if (!d)
        return -errno;
    uint64_t *v = NULL;
    size_t n = 0, cap = 0;
    struct dirent *de;
    int rc = 0;
    while ((de = readdir(d))) {
        const char *nm = de->d_name;
        if (strlen(nm) != 24 || strcmp(nm + 20, ".log") != 0)
            continue;
        uint64_t base = 0;
        bool digits = true;
        for (int i = 0; i < 20; i++) {
            if (nm[i] < '0' || nm[i] > '9') {
                digits = false;
                break;
            }
            base = base * 10 + (uint64_t)(nm[i] - '0');
        }
        if (!digits)
            continue;
        if (n == cap) {
            cap = cap ? cap * 2 : 16;
            uint64_t *nv = realloc(v, cap * sizeof *nv);
            if (!nv) {
                rc = -ENOMEM;
                break;
            }
            v = nv;
        }
        v[n++] = base;
    }
    closedir(d);
    if (rc) {
        free(v);
        return rc;
    }
    if (n > 1)
        qsort(v, n, sizeof *v, cmp_u64);
    *out = v;
    *n_out = n;
    return 0;
}

/* Reads the chain hash and data-record count at the end of a segment by
 * scanning from its last index entry. */
int vl_seg_tail_state(struct vlog *log, struct seg *s, uint8_t *chain, uint64_t *records)
{
    int rc;
    if ((rc = vl_seg_load_index_mapped(log, s)) && !s->idx_loaded)
        return rc;
    uint64_t pos = 0, recs = s->data_records_base, off = s->base;
    if (s->oidx.n > 0) {
        struct idx_entry e;
        idx_get(idx_raw(&s->oidx, s->oidx.n - 1), &e);
        pos = e.position;
        recs = e.data_records;
        off = s->base + e.rel_offset;
    }
    bool any = false;
    while (pos < s->size) {
        const uint8_t *p;
        struct batch_hdr h;
        if ((rc = vl_read_at(log, s, pos, BATCH_HDR_SIZE, s->size, &p)))
            return rc;
        if ((rc = batch_hdr_decode(p, BATCH_HDR_SIZE, &h)))
            return rc;
        if (h.base_offset != off)
            return VERITY_ECORRUPT;
        memcpy(chain, h.chain, BATCH_CHAIN_SIZE);
        if (!(h.attributes & BATCH_ATTR_CONTROL))
            recs += h.record_count;
        off += h.record_count;
        pos += h.length;
        any = true;
    }
    if (!any)
        return VERITY_ENOTFOUND;
    *records = recs;
    return 0;
}

/*
 * Checks a closed segment's indexes against the segment (entry 0 at offset
 * 0, strictly increasing, inside the file, the last entry's batch has the
 * offset it claims); rebuilds them by scanning when a check fails.
 */
static int open_closed_segment(struct vlog *log, struct seg *s, uint64_t next_base,
                               uint64_t prev_records_end, bool have_prev_records,
                               uint64_t *bad_offset)
{
    struct stat st;
    int rc = log->io->fstat(log->io->ctx, s->fd, &st);
    if (rc)
        return rc;
    s->size = (uint64_t)st.st_size;
    s->end = next_base;
    rc = vl_seg_load_index_mapped(log, s);
    bool ok = rc == 0 && s->oidx.n > 0 && idx_valid_prefix(&s->oidx, s->size, false) == s->oidx.n &&
              idx_valid_prefix(&s->tidx, s->size, true) == s->tidx.n && s->tidx.n > 0;
    if (ok) {
        struct idx_entry last, first;
        const uint8_t *p;
        struct batch_hdr h;
        idx_get(idx_raw(&s->oidx, 0), &first);
        idx_get(idx_raw(&s->oidx, s->oidx.n - 1), &last);
        ok = s->base + last.rel_offset < next_base &&
             vl_read_at(log, s, last.position, BATCH_HDR_SIZE, s->size, &p) == 0 &&
             batch_hdr_decode(p, BATCH_HDR_SIZE, &h) == 0 &&
             h.base_offset == s->base + last.rel_offset &&
             (!have_prev_records || first.data_records == prev_records_end);
        if (ok) {
            struct tidx_entry t;
            tidx_get(idx_raw(&s->tidx, s->tidx.n - 1), &t);
            s->max_ts = t.timestamp;
            s->data_records_base = first.data_records;
            if (vl_read_at(log, s, 0, BATCH_HDR_SIZE, s->size, &p) == 0 &&
                batch_hdr_decode(p, BATCH_HDR_SIZE, &h) == 0)
                s->first_ts = h.first_timestamp;
        }
    }
    if (ok) {
        vl_seg_unload_index(s); /* mapped again on first lookup */
        return 0;
    }
    slog("info", "log_index_rebuilt", "dir=%s segment=%020" PRIu64 ".log", log->dir, s->base);
    s->data_records_base = prev_records_end;
    uint64_t bad_pos = 0;
    rc = seg_rebuild_index(log, s, s->size, &bad_pos);
    if (rc == 0 && s->end != next_base)
        rc = VERITY_ECORRUPT;
    if (rc) {
        if (bad_offset)
            *bad_offset = s->end;
        return rc == VERITY_ECORRUPT || rc == VERITY_EVERSION ? VERITY_ECORRUPT : rc;
    }
    vl_seg_unload_index(s);
    return 0;
}
/* ---- the active segment ---------------------------------------------------- */

/* True when some byte position after from starts a batch that checks out
 * and continues the log (base offset >= expected): then the damage at from
 * is not a torn tail. */
static bool valid_batch_after(struct vlog *log, struct seg *s, uint64_t from, uint64_t file_size,
                              uint64_t expected)
{
    for (uint64_t pos = from + 1; pos + BATCH_HDR_SIZE <= file_size;) {
        const uint8_t *p;
        size_t avail = (size_t)(file_size - pos < SCAN_CHUNK ? file_size - pos : SCAN_CHUNK);
        if (vl_read_at(log, s, pos, avail, file_size, &p))
            return false;
        const uint8_t *m = memmem(p, avail, "VRB1", 4);
        if (!m) {
            pos += avail > 3 ? avail - 3 : 1;
            continue;
        }
        uint64_t cand = pos + (uint64_t)(m - p);
        struct batch_hdr h;
        const uint8_t *b;
        if (vl_read_batch_checked(log, s, cand, file_size, &h, &b) == 0 && h.base_offset >= expected)
            return true;
        pos = cand + 1;
    }
    return false;
}

static void describe_cut(struct vlog *log, struct seg *s, uint64_t pos, uint64_t file_size,
                         uint64_t expected, const char *why)
{
    struct vlog_recovery *r = &log->recovery;
    r->cut = true;
    r->cut_position = pos;
    r->cut_bytes = file_size - pos;
    r->cut_offset_first = expected;
    r->cut_offset_last = expected - 1;
    /* Name the offsets the torn bytes claimed, where a header is legible. */
    const uint8_t *p;
    struct batch_hdr h;
    if (vl_read_at(log, s, pos, BATCH_HDR_SIZE, file_size, &p) == 0 &&
        batch_hdr_decode(p, BATCH_HDR_SIZE, &h) == 0 && h.base_offset == expected)
        r->cut_offset_last = expected + h.record_count - 1;
    snprintf(r->reason, sizeof r->reason, "%s at byte %" PRIu64 " of %020" PRIu64 ".log", why, pos,
             s->base);
}

/* Where the forward scan of the active segment stands. */
struct tail_cursor {
    uint64_t pos;                   /* byte position of the next batch */
    uint64_t expected;              /* its base offset */
    uint64_t records;               /* data records below it */
    uint8_t chain[BATCH_CHAIN_SIZE]; /* chain hash of the batch before it */
    bool chain_known;               /* false: the batch at pos is trusted, not chained */
    bool zero_tail;                 /* the scan ended at a zero tail */
};

/* Keeps the first n entries of an index: on disk when the log is writable,
 * in memory only when it was opened read-only. */
static int idx_cut(const struct vlog *log, struct idx *x, size_t n)
{
    if (log->cfg.read_only) {
        x->n = n;
        return 0;
    }
    return idx_truncate(x, n);
}

static int tail_load_indexes(struct vlog *log, struct seg *s)
{
    char path[PATH_MAX_LOG];
    int rc;
    vl_seg_path(log, s->base, ".index", path);
    if ((rc = idx_open(&s->oidx, log->io, path, !log->cfg.read_only)))
        return rc;
    vl_seg_path(log, s->base, ".timeindex", path);
    if ((rc = idx_open(&s->tidx, log->io, path, !log->cfg.read_only))) {
        idx_close(&s->oidx);
        return rc;
    }
    s->idx_loaded = true;
    return 0;
}

/*
 * Picks where the scan starts: the last offset-index entry whose batch checks
 * out (that batch is trusted; its successors are chained to it), or byte 0
 * with the chain and count below the segment. Cuts both indexes back to
 * before that point, since the scan re-adds entries from there on.
 */
static int tail_start(struct vlog *log, struct seg *s, uint64_t file_size, const uint8_t *prev_chain,
                      uint64_t prev_records, struct tail_cursor *c)
{
    int rc;
    size_t n = idx_valid_prefix(&s->oidx, file_size, false);
    c->pos = 0;
    c->expected = s->base;
    c->records = prev_records;
    c->chain_known = true;
    memcpy(c->chain, prev_chain, BATCH_CHAIN_SIZE);
    for (; n > 0; n--) {
        struct idx_entry e;
        struct batch_hdr h;
        const uint8_t *p;
        idx_get(idx_raw(&s->oidx, n - 1), &e);
        if (vl_read_batch_checked(log, s, e.position, file_size, &h, &p) == 0 &&
            h.base_offset == s->base + e.rel_offset) {
            c->pos = e.position;
            c->expected = h.base_offset;
            c->records = e.data_records;
            c->chain_known = false;
            break;
        }
    }
    if ((rc = idx_cut(log, &s->oidx, n > 0 ? n - 1 : 0)))
        return rc;
    size_t tn = idx_valid_prefix(&s->tidx, c->pos + 1, true);
    while (tn > 0) {
        struct tidx_entry t;
        tidx_get(idx_raw(&s->tidx, tn - 1), &t);
        if (t.position < c->pos)
            break;
        tn--;
    }
    if ((rc = idx_cut(log, &s->tidx, tn)))
        return rc;
    s->tidx_last_ts = s->max_ts = INT64_MIN;
    if (tn > 0) {
        struct tidx_entry t;
        tidx_get(idx_raw(&s->tidx, tn - 1), &t);
        s->tidx_last_ts = s->max_ts = t.timestamp;
    }
    s->bytes_since_index = log->cfg.index_interval_bytes; /* first re-added batch is indexed */
    return 0;
}

static bool is_checkpoint(const struct batch_hdr *h, const uint8_t *batch)
{
    struct batch_iter it;
    struct batch_record r;
    if (!(h->attributes & BATCH_ATTR_CONTROL))
        return false;
    batch_iter_init(&it, batch, h->length);
    return batch_iter_next(&it, &r) == 1 && r.key_len == (int32_t)strlen(BATCH_CONTROL_CHECKPOINT) &&
           memcmp(r.key, BATCH_CONTROL_CHECKPOINT, (size_t)r.key_len) == 0;
}

static bool all_zero(const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i])
            return false;
    return true;
}

/* Validates batches from c->pos to the end of the file, re-adding index
 * entries. Returns NULL at a clean end, or why the batch at c->pos is bad. */
static const char *tail_scan(struct vlog *log, struct seg *s, uint64_t file_size,
                             struct tail_cursor *c)
{
    while (c->pos < file_size) {
        struct batch_hdr h;
        const uint8_t *p;
        /* The zero tail (docs/FORMAT.md "Preallocated tail"): a header
         * position where every byte from there to the end of the file is
         * zero is the end of the log. Zero header bytes followed by
         * anything else are damage, judged like any bad batch below. */
        size_t head = file_size - c->pos < BATCH_HDR_SIZE ? (size_t)(file_size - c->pos)
                                                           : BATCH_HDR_SIZE;
        if (vl_read_at(log, s, c->pos, head, file_size, &p) == 0 && all_zero(p, head)) {
            int64_t last = vl_last_nonzero(log, s, c->pos, file_size);
            if (last < 0)
                return "zero tail unreadable";
            if ((uint64_t)last == c->pos) {
                c->zero_tail = true;
                return NULL;
            }
            return "nonzero bytes in the zero tail";
        }
        if (file_size - c->pos < BATCH_HDR_SIZE)
            return "torn batch header";
        int rc = vl_read_batch_checked(log, s, c->pos, file_size, &h, &p);
        if (rc == VERITY_ECORRUPT && h.length > file_size - c->pos &&
            batch_hdr_decode(p, BATCH_HDR_SIZE, &h) == 0)
            return "batch extends past the end of the file";
        if (rc)
            return rc == VERITY_ECORRUPT ? "batch fails its CRC or structure check" : "invalid batch";
        if (h.base_offset != c->expected)
            return "batch offset does not continue the log";
        if (c->chain_known) {
            uint8_t chain[BATCH_CHAIN_SIZE];
            batch_chain_compute(c->chain, p, h.length, chain);
            if (memcmp(chain, h.chain, BATCH_CHAIN_SIZE) != 0)
                return "chain hash does not link";
        }
        if (c->pos == 0)
            s->first_ts = h.first_timestamp;
        if (!log->cfg.read_only)
            vl_seg_index_batch(log, s, c->pos, h.base_offset, c->records, h.max_timestamp,
                               h.length);
        if (h.max_timestamp > s->max_ts)
            s->max_ts = h.max_timestamp;
        memcpy(c->chain, h.chain, BATCH_CHAIN_SIZE);
        c->chain_known = true;
        log->last_is_checkpoint = is_checkpoint(&h, p);
        if (!(h.attributes & BATCH_ATTR_CONTROL))
            c->records += h.record_count;
        c->expected += h.record_count;
        c->pos += h.length;
    }
    return NULL;
}

/*
 * Recovers the active segment: validates from the last good index entry to
 * the end of the file, cuts a torn tail, refuses mid-file damage.
 * prev_chain/prev_records describe the log just below s->base.
 */
static int recover_last(struct vlog *log, struct seg *s, const uint8_t *prev_chain,
                        uint64_t prev_records, uint64_t *bad_offset)
{
    struct stat st;
    struct tail_cursor c;
    int rc = log->io->fstat(log->io->ctx, s->fd, &st);
    if (rc)
        return rc;
    uint64_t file_size = (uint64_t)st.st_size;
    c.zero_tail = false;
    if ((rc = tail_load_indexes(log, s)) ||
        (rc = tail_start(log, s, file_size, prev_chain, prev_records, &c)))
        return rc;
    const char *why = tail_scan(log, s, file_size, &c);
    if (why) {
        if (valid_batch_after(log, s, c.pos, file_size, c.expected)) {
            if (bad_offset)
                *bad_offset = c.expected;
            char q[256];
            slog("error", "log_corrupt",
                 "dir=%s offset=%" PRIu64 " position=%" PRIu64 " segment=%020" PRIu64
                 ".log reason=%s text=\"corruption before the tail; refusing to open; run verity "
                 "log verify on it\"",
                 log->dir, c.expected, c.pos, s->base, slog_q(why, q, sizeof q));
            return strstr(why, "chain") ? VERITY_ECHAIN : VERITY_ECORRUPT;
        }
        describe_cut(log, s, c.pos, file_size, c.expected, why);
        /* The read-ahead may hold cut bytes past c.pos, where the recovery
         * record goes next. */
        vl_scan_reset(log);
        if (!log->cfg.read_only &&
            ((rc = log->io->ftruncate(log->io->ctx, s->fd, (off_t)c.pos)) ||
             (rc = log->io->fdatasync(log->io->ctx, s->fd))))
            return rc;
    }
    VERITY_VERIFY(c.pos <= file_size && c.expected >= s->base);
    VERITY_VERIFY(!why || !c.zero_tail);
    /* The file's length now: a kept zero tail is the region appends fill. */
    log->zero_end = why && !log->cfg.read_only ? c.pos : file_size;
    s->size = c.pos;
    s->end = c.expected;
    memcpy(log->chain, c.chain, BATCH_CHAIN_SIZE);
    log->data_records = c.records;
    return 0;
}

/* ---- the directory --------------------------------------------------------- */

int vl_open_segments(struct vlog *log, int64_t now_ms, uint64_t *bad_offset)
{
    uint64_t *bases = NULL;
    size_t nb = 0;
    int rc;
    struct ckpt anchor;
    bool have_anchor = false;
    uint8_t chain[BATCH_CHAIN_SIZE] = {0};
    uint64_t records = 0;

    if ((rc = ckpt_anchor_read_io(log->dir, &anchor, NULL, log->io)) == 0) {
        have_anchor = true;
        memcpy(chain, anchor.chain, BATCH_CHAIN_SIZE);
        records = anchor.record_count;
    } else if (rc != VERITY_ENOTFOUND) {
        return rc;
    }
    if ((rc = list_segments(log->dir, &bases, &nb)))
        return rc;
    /* Finish a retention that stopped between writing the anchor and
     * deleting the segments below it. */
    size_t first = 0;
    while (have_anchor && first + 1 < nb && bases[first + 1] <= anchor.offset) {
        char path[PATH_MAX_LOG];
        static const char *const exts[] = {".log", ".index", ".timeindex"};
        for (int e = 0; e < 3 && !log->cfg.read_only; e++) {
            vl_seg_path(log, bases[first], exts[e], path);
            (void)log->io->unlink(log->io->ctx, path); /* best effort: already retained */
        }
        first++;
    }
    if (nb == first) {
        free(bases);
        if (log->cfg.read_only)
            return VERITY_ENOTFOUND;
        uint64_t base = have_anchor ? anchor.offset : 0;
        struct seg *s = vl_seg_new(base);
        if (!s || (rc = vl_segs_push(log, s))) {
            free(s);
            return rc ? rc : -ENOMEM;
        }
        char path[PATH_MAX_LOG];
        vl_seg_path(log, base, ".log", path);
        s->fd = log->io->open(log->io->ctx, path, O_RDWR | O_CREAT, 0644);
        if (s->fd < 0) {
            rc = s->fd;
            s->fd = -1;
            return rc;
        }
        if ((rc = vio_fsync_dir(log->io, log->dir)))
            return rc;
        s->data_records_base = records;
        return recover_last(log, s, chain, records, bad_offset);
    }
    if (have_anchor && bases[first] != anchor.offset) {
        free(bases);
        if (bad_offset)
            *bad_offset = anchor.offset;
        slog("error", "log_anchor_mismatch", "dir=%s text=\"anchor offset does not match the oldest segment\"", log->dir);
        return VERITY_ECHAIN;
    }
    bool have_records = true;
    for (size_t i = first; i < nb; i++) {
        char path[PATH_MAX_LOG];
        struct seg *s = vl_seg_new(bases[i]);
        if (!s || (rc = vl_segs_push(log, s))) {
            free(s);
            rc = rc ? rc : -ENOMEM;
            goto out;
        }
        bool last = i + 1 == nb;
        vl_seg_path(log, s->base, ".log", path);
        s->fd = log->io->open(log->io->ctx, path, (last && !log->cfg.read_only) ? O_RDWR : O_RDONLY, 0);
        if (s->fd < 0) {
            rc = s->fd;
            s->fd = -1;
            goto out;
        }
        if (!last) {
            rc = open_closed_segment(log, s, bases[i + 1], records, have_records, bad_offset);
            if (rc)
                goto out;
            /* The chain and record count at this segment's end. */
            if ((rc = vl_seg_tail_state(log, s, chain, &records))) {
                if (bad_offset)
                    *bad_offset = s->base;
                goto out;
            }
            vl_seg_unload_index(s);
            /* Checked: from now on it is read through the descriptor cache. */
            vl_seg_fd_donate(log, s);
            have_records = true;
        } else {
            s->data_records_base = records;
            if ((rc = recover_last(log, s, chain, records, bad_offset)))
                goto out;
        }
    }
out:
    free(bases);
    return rc;
}
