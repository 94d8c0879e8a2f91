/*
 * vlog: a partition log (API and directory layout in vlog.h, batch format in
 * batch.h, indexes in index.h).
 *
 * Invariants (checked by log_ok() and VERITY_VERIFY):
 *   - segments are sorted; segs[i]->end == segs[i+1]->base;
 *   - end_offset == active->end; every batch's base offset is the previous
 *     batch's base + record_count (offsets strictly increase, no gaps);
 *   - chain is the chain hash of the last batch written (or the anchor's);
 *   - durable_end <= written_end == end_offset (outside an append);
 *   - once error != 0 it never changes and nothing more is written.
 *
 * Recovery on open (only the last segment is scanned, so open is fast on
 * any size): start from the last offset-index entry whose batch checks out,
 * re-validate every following batch (header, CRC, records, offset
 * continuity, chain), and at the first bad one decide:
 *   - if a valid batch follows anywhere later in the file, the damage is not
 *     a torn tail: open fails with the first bad offset, nothing is cut;
 *   - otherwise the tail is torn: cut it, then append a recovery control
 *     batch naming the cut offset range, byte count and reason.
 * A read that fails its CRC is re-read once, so a transient read error never
 * causes a cut.
 *
 * Durability: `always` syncs inside vlog_append; `group` hands syncs to a
 * commit thread that waits at most group_delay_us after the first pending
 * append (or until group_bytes_max are pending); `os` never syncs on append.
 * A failed fdatasync is never retried: the error is sticky, the log turns
 * read-only, and every later append returns VERITY_EREADONLY.
 */
#include "storage/vlog.h"

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
#include "verity/errors.h"
#include "verity/limits.h"
#include "verity/verify.h"

#define SCAN_CHUNK (256u << 10)   /* read-ahead of sequential scans */
#define LOOKUP_CHUNK (16u << 10)  /* read-ahead of random lookups */
#define PATH_MAX_LOG 4096

struct seg {
    uint64_t base;               /* base offset, the file name */
    uint64_t end;                /* offset after the last batch */
    uint64_t size;               /* valid bytes */
    uint64_t data_records_base;  /* data records below base */
    int64_t max_ts;              /* largest batch max_timestamp, INT64_MIN if none */
    int64_t first_ts;            /* first batch's first_timestamp (age roll) */
    int fd;
    bool idx_loaded;             /* oidx/tidx valid (active: writable heap) */
    struct idx oidx;
    struct idx tidx;
    uint64_t bytes_since_index;  /* active only */
    int64_t tidx_last_ts;        /* active only: last time-index timestamp */
};

struct vlog {
    char *dir;
    struct vlog_config cfg;
    const struct vio *io;
    struct seg **segs;
    size_t nsegs;
    size_t segs_cap;

    /* owner-thread state */
    uint64_t end_offset;
    uint8_t chain[BATCH_CHAIN_SIZE];
    uint64_t data_records;
    uint64_t records_since_ckpt;
    int64_t max_ts;
    bool last_is_checkpoint;
    struct vlog_recovery recovery;
    struct batch_builder ctl;    /* control batches */
    uint8_t *scan_buf;           /* read-ahead for scans */
    size_t scan_cap;
    int scan_fd;
    uint64_t scan_pos;
    size_t scan_len;

    /* shared with the commit thread and vlog_sync callers */
    pthread_mutex_t mu;          /* guards the fields below */
    pthread_cond_t commit_cond;  /* wakes the commit thread */
    pthread_cond_t durable_cond; /* wakes vlog_wait_durable */
    pthread_mutex_t sync_mu;     /* held across one fdatasync and across a roll */
    uint64_t written_end;
    uint64_t synced_end;         /* covered by a successful fdatasync */
    uint64_t durable_end;        /* durable under the policy (os: written) */
    uint64_t pending_bytes;
    int64_t pending_since_ns;
    int sync_fd;
    int error;
    bool stop;
    bool thread_started;
    pthread_t thread;
    struct vlog_sync_stats stats;
};

/* ---- small helpers ----------------------------------------------------- */

static int64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void seg_path(const struct vlog *log, uint64_t base, const char *ext, char *out)
{
    snprintf(out, PATH_MAX_LOG, "%s/%020" PRIu64 "%s", log->dir, base, ext);
}

static struct seg *active(const struct vlog *log)
{
    VERITY_VERIFY(log->nsegs > 0);
    return log->segs[log->nsegs - 1];
}

static bool log_ok(const struct vlog *log)
{
    if (log->nsegs == 0)
        return false;
    for (size_t i = 0; i + 1 < log->nsegs; i++)
        if (log->segs[i]->end != log->segs[i + 1]->base || log->segs[i]->base > log->segs[i]->end)
            return false;
    return active(log)->end == log->end_offset;
}

void vlog_config_default(struct vlog_config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->durability = VLOG_DURABILITY_GROUP;
    cfg->group_delay_us = 2000;
    cfg->group_bytes_max = 1u << 20;
    cfg->segment_bytes = 1ull << 30;
    cfg->segment_ms = 7ll * 24 * 3600 * 1000;
    cfg->index_interval_bytes = 4096;
    cfg->checkpoint_records = 10000;
}

static void set_error(struct vlog *log, int err)
{
    pthread_mutex_lock(&log->mu);
    if (log->error == 0) {
        log->error = err;
        fprintf(stderr, "verity: log %s is now read-only: %s\n", log->dir, verity_strerror(err));
    }
    pthread_cond_broadcast(&log->durable_cond);
    pthread_mutex_unlock(&log->mu);
}

int vlog_error(const struct vlog *log)
{
    return __atomic_load_n(&log->error, __ATOMIC_ACQUIRE);
}

uint64_t vlog_durable_end(const struct vlog *log)
{
    return __atomic_load_n(&log->durable_end, __ATOMIC_ACQUIRE);
}

const struct vlog_recovery *vlog_last_recovery(const struct vlog *log) { return &log->recovery; }
const char *vlog_dir(const struct vlog *log) { return log->dir; }

/* ---- buffered reads ------------------------------------------------------ */

static void scan_reset(struct vlog *log)
{
    log->scan_fd = -1;
    log->scan_len = 0;
}

/*
 * Points *out at len bytes of fd at pos, reading ahead up to limit (the
 * segment's valid size). The pointer is valid until the next call. Returns 0,
 * VERITY_ECORRUPT when [pos, pos+len) passes limit, or -errno.
 */
static int read_ahead(struct vlog *log, int fd, uint64_t pos, size_t len, uint64_t limit,
                      size_t ahead, const uint8_t **out)
{
    if (pos > limit || len > limit - pos)
        return VERITY_ECORRUPT;
    if (fd == log->scan_fd && pos >= log->scan_pos && pos + len <= log->scan_pos + log->scan_len) {
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
    scan_reset(log);
    int rc = vio_pread_all(log->io, fd, log->scan_buf, want, (off_t)pos);
    if (rc < 0)
        return rc;
    log->scan_fd = fd;
    log->scan_pos = pos;
    log->scan_len = want;
    *out = log->scan_buf;
    return 0;
}

/* Sequential scans read ahead a large chunk; random lookups a small one. */
static int read_at(struct vlog *log, int fd, uint64_t pos, size_t len, uint64_t limit,
                   const uint8_t **out)
{
    return read_ahead(log, fd, pos, len, limit, SCAN_CHUNK, out);
}

/* Reads and fully checks the batch at pos; on a CRC failure reads it once
 * more from the file, so a transient read error is not taken for damage. */
static int read_batch_checked(struct vlog *log, struct seg *s, uint64_t pos, uint64_t limit,
                              struct batch_hdr *h, const uint8_t **out)
{
    const uint8_t *p;
    int rc = read_at(log, s->fd, pos, BATCH_HDR_SIZE, limit, &p);
    if (rc)
        return rc;
    if ((rc = batch_hdr_decode(p, BATCH_HDR_SIZE, h)))
        return rc;
    for (int attempt = 0; attempt < 2; attempt++) {
        if ((rc = read_at(log, s->fd, pos, h->length, limit, &p)))
            return rc;
        rc = batch_validate(p, h->length, NULL);
        if (rc == 0 || rc != VERITY_ECORRUPT)
            break;
        scan_reset(log);
    }
    *out = p;
    return rc;
}

/* ---- indexes ------------------------------------------------------------- */

static int seg_load_index_mapped(struct vlog *log, struct seg *s)
{
    char path[PATH_MAX_LOG];
    int rc;
    if (s->idx_loaded)
        return 0;
    seg_path(log, s->base, ".index", path);
    if ((rc = idx_open(&s->oidx, log->io, path, false)))
        return rc;
    seg_path(log, s->base, ".timeindex", path);
    if ((rc = idx_open(&s->tidx, log->io, path, false))) {
        idx_close(&s->oidx);
        return rc;
    }
    s->idx_loaded = true;
    return 0;
}

static void seg_unload_index(struct seg *s)
{
    if (!s->idx_loaded)
        return;
    idx_close(&s->oidx);
    idx_close(&s->tidx);
    s->idx_loaded = false;
}

/* Adds index entries for the batch just written at pos (active segment). */
static void seg_index_batch(struct vlog *log, struct seg *s, uint64_t pos, uint64_t base,
                            uint64_t data_records_before, int64_t max_ts, uint32_t len)
{
    if (s->oidx.n == 0 || s->bytes_since_index >= log->cfg.index_interval_bytes) {
        uint8_t raw[IDX_ENTRY_SIZE];
        struct idx_entry e = {(uint32_t)(base - s->base), (uint32_t)pos, data_records_before};
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
    seg_unload_index(s);
    seg_path(log, s->base, ".index", path);
    log->io->unlink(log->io->ctx, path);
    if ((rc = idx_open(&s->oidx, log->io, path, true)))
        return rc;
    seg_path(log, s->base, ".timeindex", path);
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
        rc = read_batch_checked(log, s, pos, file_size, &h, &p);
        if (rc == 0 && h.base_offset != expected)
            rc = VERITY_ECORRUPT;
        if (rc) {
            *bad_pos = pos;
            return rc;
        }
        if (pos == 0)
            s->first_ts = h.first_timestamp;
        seg_index_batch(log, s, pos, h.base_offset, records, h.max_timestamp, h.length);
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

/* ---- segment list -------------------------------------------------------- */

static int segs_push(struct vlog *log, struct seg *s)
{
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

static struct seg *seg_new(uint64_t base)
{
    struct seg *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    s->base = s->end = base;
    s->fd = -1;
    s->max_ts = INT64_MIN;
    s->tidx_last_ts = INT64_MIN;
    s->first_ts = INT64_MIN;
    return s;
}

static void seg_free(struct vlog *log, struct seg *s)
{
    if (!s)
        return;
    seg_unload_index(s);
    if (s->fd >= 0)
        log->io->close(log->io->ctx, s->fd); /* data was synced or is abandoned */
    free(s);
}

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

/* ---- open: closed segments ------------------------------------------------ */

/* Reads the chain hash and data-record count at the end of a segment by
 * scanning from its last index entry. */
static int seg_tail_state(struct vlog *log, struct seg *s, uint8_t *chain, uint64_t *records)
{
    int rc;
    if ((rc = seg_load_index_mapped(log, s)) && !s->idx_loaded)
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
        if ((rc = read_at(log, s->fd, pos, BATCH_HDR_SIZE, s->size, &p)))
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
    rc = seg_load_index_mapped(log, s);
    bool ok = rc == 0 && s->oidx.n > 0 && idx_valid_prefix(&s->oidx, s->size, false) == s->oidx.n &&
              idx_valid_prefix(&s->tidx, s->size, true) == s->tidx.n && s->tidx.n > 0;
    if (ok) {
        struct idx_entry last, first;
        const uint8_t *p;
        struct batch_hdr h;
        idx_get(idx_raw(&s->oidx, 0), &first);
        idx_get(idx_raw(&s->oidx, s->oidx.n - 1), &last);
        ok = s->base + last.rel_offset < next_base &&
             read_at(log, s->fd, last.position, BATCH_HDR_SIZE, s->size, &p) == 0 &&
             batch_hdr_decode(p, BATCH_HDR_SIZE, &h) == 0 &&
             h.base_offset == s->base + last.rel_offset &&
             (!have_prev_records || first.data_records == prev_records_end);
        if (ok) {
            struct tidx_entry t;
            tidx_get(idx_raw(&s->tidx, s->tidx.n - 1), &t);
            s->max_ts = t.timestamp;
            s->data_records_base = first.data_records;
            if (read_at(log, s->fd, 0, BATCH_HDR_SIZE, s->size, &p) == 0 &&
                batch_hdr_decode(p, BATCH_HDR_SIZE, &h) == 0)
                s->first_ts = h.first_timestamp;
        }
    }
    if (ok) {
        seg_unload_index(s); /* mapped again on first lookup */
        return 0;
    }
    fprintf(stderr, "verity: rebuilding index of %s/%020" PRIu64 ".log\n", log->dir, s->base);
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
    seg_unload_index(s);
    return 0;
}

/* ---- open: the last segment (recovery) ------------------------------------ */

/* True when some byte position after from starts a batch that checks out
 * and continues the log (base offset >= expected): then the damage at from
 * is not a torn tail. */
static bool valid_batch_after(struct vlog *log, struct seg *s, uint64_t from, uint64_t file_size,
                              uint64_t expected)
{
    for (uint64_t pos = from + 1; pos + BATCH_HDR_SIZE <= file_size;) {
        const uint8_t *p;
        size_t avail = (size_t)(file_size - pos < SCAN_CHUNK ? file_size - pos : SCAN_CHUNK);
        if (read_at(log, s->fd, pos, avail, file_size, &p))
            return false;
        const uint8_t *m = memmem(p, avail, "VRB1", 4);
        if (!m) {
            pos += avail > 3 ? avail - 3 : 1;
            continue;
        }
        uint64_t cand = pos + (uint64_t)(m - p);
        struct batch_hdr h;
        const uint8_t *b;
        if (read_batch_checked(log, s, cand, file_size, &h, &b) == 0 && h.base_offset >= expected)
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
    if (read_at(log, s->fd, pos, BATCH_HDR_SIZE, file_size, &p) == 0 &&
        batch_hdr_decode(p, BATCH_HDR_SIZE, &h) == 0 && h.base_offset == expected)
        r->cut_offset_last = expected + h.record_count - 1;
    snprintf(r->reason, sizeof r->reason, "%s at byte %" PRIu64 " of %020" PRIu64 ".log", why, pos,
             s->base);
}

/*
 * Recovers the active segment: validates from the last good index entry to
 * the end of the file, cuts a torn tail, refuses mid-file damage.
 * prev_chain/prev_records describe the log just below s->base.
 */
static int recover_last(struct vlog *log, struct seg *s, const uint8_t *prev_chain,
                        uint64_t prev_records, uint64_t *bad_offset)
{
    char path[PATH_MAX_LOG];
    struct stat st;
    int rc = log->io->fstat(log->io->ctx, s->fd, &st);
    if (rc)
        return rc;
    uint64_t file_size = (uint64_t)st.st_size;
    seg_path(log, s->base, ".index", path);
    if ((rc = idx_open(&s->oidx, log->io, path, !log->cfg.read_only)))
        return rc;
    seg_path(log, s->base, ".timeindex", path);
    if ((rc = idx_open(&s->tidx, log->io, path, !log->cfg.read_only))) {
        idx_close(&s->oidx);
        return rc;
    }
    s->idx_loaded = true;

    /* Find the last index entry whose batch checks out. */
    size_t n = idx_valid_prefix(&s->oidx, file_size, false);
    uint64_t pos = 0, expected = s->base, records = prev_records;
    uint8_t chain[BATCH_CHAIN_SIZE];
    bool chain_known = true;
    memcpy(chain, prev_chain, BATCH_CHAIN_SIZE);
    while (n > 0) {
        struct idx_entry e;
        struct batch_hdr h;
        const uint8_t *p;
        idx_get(idx_raw(&s->oidx, n - 1), &e);
        if (read_batch_checked(log, s, e.position, file_size, &h, &p) == 0 &&
            h.base_offset == s->base + e.rel_offset) {
            pos = e.position;
            expected = h.base_offset;
            records = e.data_records;
            chain_known = false; /* the batch at pos is trusted; its successors are chained */
            break;
        }
        n--;
    }
    if (!log->cfg.read_only && n != s->oidx.n && (rc = idx_truncate(&s->oidx, n)))
        return rc;
    if (log->cfg.read_only)
        s->oidx.n = n;
    if (n == 0)
        s->oidx.n = log->cfg.read_only ? 0 : s->oidx.n;

    /* Re-validate every batch from pos to the end. Index entries are re-added
     * from pos on, so drop the entry at pos (it is appended again). */
    if (n > 0 && !log->cfg.read_only && (rc = idx_truncate(&s->oidx, n - 1)))
        return rc;
    if (n > 0 && log->cfg.read_only)
        s->oidx.n = n - 1;
    size_t tn = idx_valid_prefix(&s->tidx, pos + 1, true);
    while (tn > 0) {
        struct tidx_entry t;
        tidx_get(idx_raw(&s->tidx, tn - 1), &t);
        if (t.position < pos)
            break;
        tn--;
    }
    if (!log->cfg.read_only && (rc = idx_truncate(&s->tidx, tn)))
        return rc;
    if (log->cfg.read_only)
        s->tidx.n = tn;
    s->tidx_last_ts = INT64_MIN;
    s->max_ts = INT64_MIN;
    if (tn > 0) {
        struct tidx_entry t;
        tidx_get(idx_raw(&s->tidx, tn - 1), &t);
        s->tidx_last_ts = s->max_ts = t.timestamp;
    }
    s->bytes_since_index = log->cfg.index_interval_bytes; /* first re-added batch is indexed */

    const char *why = NULL;
    while (pos < file_size) {
        struct batch_hdr h;
        const uint8_t *p;
        if (file_size - pos < BATCH_HDR_SIZE) {
            why = "torn batch header";
            break;
        }
        rc = read_batch_checked(log, s, pos, file_size, &h, &p);
        if (rc == VERITY_ECORRUPT && h.length > file_size - pos &&
            batch_hdr_decode(p, BATCH_HDR_SIZE, &h) == 0) {
            why = "batch extends past the end of the file";
            break;
        }
        if (rc) {
            why = rc == VERITY_ECORRUPT ? "batch fails its CRC or structure check" : "invalid batch";
            break;
        }
        if (h.base_offset != expected) {
            why = "batch offset does not continue the log";
            break;
        }
        if (chain_known) {
            uint8_t c[BATCH_CHAIN_SIZE];
            batch_chain_compute(chain, p, h.length, c);
            if (memcmp(c, h.chain, BATCH_CHAIN_SIZE) != 0) {
                why = "chain hash does not link";
                break;
            }
        }
        if (pos == 0)
            s->first_ts = h.first_timestamp;
        if (!log->cfg.read_only)
            seg_index_batch(log, s, pos, h.base_offset, records, h.max_timestamp, h.length);
        if (h.max_timestamp > s->max_ts)
            s->max_ts = h.max_timestamp;
        memcpy(chain, h.chain, BATCH_CHAIN_SIZE);
        chain_known = true;
        log->last_is_checkpoint = (h.attributes & BATCH_ATTR_CONTROL) && h.record_count == 1 &&
                                  h.length > BATCH_HDR_SIZE;
        if (!(h.attributes & BATCH_ATTR_CONTROL))
            records += h.record_count;
        expected += h.record_count;
        pos += h.length;
    }
    if (why) {
        if (valid_batch_after(log, s, pos, file_size, expected)) {
            if (bad_offset)
                *bad_offset = expected;
            fprintf(stderr,
                    "verity: %s: corruption before the tail at offset %" PRIu64
                    " (byte %" PRIu64 " of %020" PRIu64 ".log): %s; refusing to open\n",
                    log->dir, expected, pos, s->base, why);
            return strstr(why, "chain") ? VERITY_ECHAIN : VERITY_ECORRUPT;
        }
        describe_cut(log, s, pos, file_size, expected, why);
        if (!log->cfg.read_only) {
            if ((rc = log->io->ftruncate(log->io->ctx, s->fd, (off_t)pos)) ||
                (rc = log->io->fdatasync(log->io->ctx, s->fd)))
                return rc;
        }
    }
    s->size = pos;
    s->end = expected;
    memcpy(log->chain, chain, BATCH_CHAIN_SIZE);
    log->data_records = records;
    return 0;
}

/* ---- writing ------------------------------------------------------------- */

static void stats_add(struct vlog *log, int64_t ns)
{
    uint64_t us = (uint64_t)(ns / 1000);
    int b = 0;
    while (b < VLOG_SYNC_BUCKETS - 1 && us >= (1ull << b))
        b++;
    log->stats.count++;
    log->stats.sum_ns += (uint64_t)ns;
    log->stats.buckets[b]++;
}

void vlog_get_sync_stats(const struct vlog *log, struct vlog_sync_stats *out)
{
    pthread_mutex_lock((pthread_mutex_t *)&log->mu);
    *out = log->stats;
    pthread_mutex_unlock((pthread_mutex_t *)&log->mu);
}

/* One fdatasync covering everything written so far. Never retried. */
static int sync_once(struct vlog *log)
{
    pthread_mutex_lock(&log->sync_mu);
    pthread_mutex_lock(&log->mu);
    uint64_t target = log->written_end;
    int fd = log->sync_fd;
    int err = log->error;
    bool needed = target > log->synced_end;
    log->pending_bytes = 0;
    log->pending_since_ns = 0;
    pthread_mutex_unlock(&log->mu);
    if (err || !needed) {
        pthread_mutex_unlock(&log->sync_mu);
        return err ? VERITY_EREADONLY : 0;
    }
    int64_t t0 = mono_ns();
    int rc = log->io->fdatasync(log->io->ctx, fd);
    int64_t t1 = mono_ns();
    pthread_mutex_lock(&log->mu);
    stats_add(log, t1 - t0);
    if (rc == 0) {
        VERITY_VERIFY(target >= log->synced_end);
        log->synced_end = target;
        if (target > log->durable_end)
            __atomic_store_n(&log->durable_end, target, __ATOMIC_RELEASE);
        pthread_cond_broadcast(&log->durable_cond);
    }
    pthread_mutex_unlock(&log->mu);
    pthread_mutex_unlock(&log->sync_mu);
    if (rc) {
        set_error(log, rc);
        return rc;
    }
    if (log->cfg.on_durable)
        log->cfg.on_durable(log->cfg.on_durable_arg, target);
    return 0;
}

int vlog_sync(struct vlog *log)
{
    return sync_once(log);
}

static void *commit_thread(void *arg)
{
    struct vlog *log = arg;
    pthread_mutex_lock(&log->mu);
    while (!log->stop) {
        if (log->error == 0 && log->written_end > log->synced_end) {
            int64_t delay_ns = (int64_t)log->cfg.group_delay_us * 1000;
            int64_t due = log->pending_since_ns + delay_ns;
            if (delay_ns > 0 && log->pending_bytes < log->cfg.group_bytes_max && mono_ns() < due) {
                struct timespec ts;
                clock_gettime(CLOCK_MONOTONIC, &ts);
                int64_t wait = due - mono_ns();
                if (wait > 0) {
                    int64_t abs = (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec + wait;
                    ts.tv_sec = abs / 1000000000;
                    ts.tv_nsec = abs % 1000000000;
                    pthread_cond_timedwait(&log->commit_cond, &log->mu, &ts);
                }
                continue;
            }
            pthread_mutex_unlock(&log->mu);
            (void)sync_once(log); /* a failure is sticky in log->error */
            pthread_mutex_lock(&log->mu);
            continue;
        }
        pthread_cond_wait(&log->commit_cond, &log->mu);
    }
    pthread_mutex_unlock(&log->mu);
    return NULL;
}

/* Creates the segment that starts at end_offset and makes it active. The
 * old active segment is synced first, so a closed segment is always durable. */
static int roll(struct vlog *log)
{
    char path[PATH_MAX_LOG];
    struct seg *old = active(log);
    struct seg *s = seg_new(log->end_offset);
    int rc;
    if (!s)
        return -ENOMEM;
    s->data_records_base = log->data_records;
    seg_path(log, s->base, ".log", path);
    s->fd = log->io->open(log->io->ctx, path, O_RDWR | O_CREAT | O_TRUNC, 0644);
    if (s->fd < 0) {
        rc = s->fd;
        s->fd = -1;
        goto fail;
    }
    seg_path(log, s->base, ".index", path);
    if ((rc = idx_open(&s->oidx, log->io, path, true)))
        goto fail;
    seg_path(log, s->base, ".timeindex", path);
    if ((rc = idx_open(&s->tidx, log->io, path, true))) {
        idx_close(&s->oidx);
        goto fail;
    }
    s->idx_loaded = true;
    if ((rc = idx_truncate(&s->oidx, 0)) || (rc = idx_truncate(&s->tidx, 0)))
        goto fail;
    if ((rc = vio_fsync_dir(log->io, log->dir)))
        goto fail;
    /* Every policy syncs a segment before it is closed, so only the active
     * segment can ever hold unsynced bytes. */
    if (old->size > 0 && (rc = sync_once(log)))
        goto fail;
    if ((rc = segs_push(log, s)))
        goto fail;
    pthread_mutex_lock(&log->sync_mu);
    pthread_mutex_lock(&log->mu);
    log->sync_fd = s->fd;
    pthread_mutex_unlock(&log->mu);
    pthread_mutex_unlock(&log->sync_mu);
    seg_unload_index(old);
    return 0;
fail:
    seg_free(log, s);
    if (rc == -EIO)
        set_error(log, rc);
    return rc;
}

/*
 * Writes one batch (client or control) at the end of the active segment.
 * On a write error the segment is cut back to where it was, so the log is
 * unchanged; if even that fails the log turns read-only.
 */
static int append_batch(struct vlog *log, uint8_t *b, const struct batch_hdr *h,
                        struct vlog_append_info *out)
{
    int rc;
    if (vlog_error(log))
        return VERITY_EREADONLY;
    VERITY_VERIFY(log_ok(log));
    struct seg *s = active(log);
    if (s->size > 0 && s->size + h->length > log->cfg.segment_bytes && (rc = roll(log)))
        return rc;
    s = active(log);
    uint64_t base = log->end_offset;
    uint64_t pos = s->size;
    uint8_t chain[BATCH_CHAIN_SIZE];
    batch_set_base_offset(b, base);
    batch_chain_compute(log->chain, b, h->length, chain);
    batch_set_chain(b, chain);
    rc = vio_pwrite_all(log->io, s->fd, b, h->length, (off_t)pos);
    if (rc) {
        int trc = log->io->ftruncate(log->io->ctx, s->fd, (off_t)pos);
        if (trc)
            set_error(log, trc);
        return rc;
    }
    bool control = (h->attributes & BATCH_ATTR_CONTROL) != 0;
    seg_index_batch(log, s, pos, base, log->data_records, h->max_timestamp, h->length);
    if (pos == 0)
        s->first_ts = h->first_timestamp;
    s->size += h->length;
    s->end = base + h->record_count;
    if (h->max_timestamp > s->max_ts)
        s->max_ts = h->max_timestamp;
    if (h->max_timestamp > log->max_ts)
        log->max_ts = h->max_timestamp;
    memcpy(log->chain, chain, BATCH_CHAIN_SIZE);
    log->end_offset = s->end;
    if (!control)
        log->data_records += h->record_count;
    log->last_is_checkpoint = false;
    VERITY_VERIFY(log->end_offset > base);
    VERITY_VERIFY(log_ok(log));

    pthread_mutex_lock(&log->mu);
    log->written_end = log->end_offset;
    if (log->pending_bytes == 0)
        log->pending_since_ns = mono_ns();
    log->pending_bytes += h->length;
    if (log->cfg.durability == VLOG_DURABILITY_OS) {
        __atomic_store_n(&log->durable_end, log->written_end, __ATOMIC_RELEASE);
        log->pending_bytes = 0;
        pthread_cond_broadcast(&log->durable_cond);
    } else if (log->cfg.durability == VLOG_DURABILITY_GROUP) {
        pthread_cond_signal(&log->commit_cond);
    }
    pthread_mutex_unlock(&log->mu);

    if (out) {
        out->base_offset = base;
        out->last_offset = log->end_offset - 1;
    }
    if (log->cfg.durability == VLOG_DURABILITY_ALWAYS)
        return sync_once(log);
    if (log->cfg.durability == VLOG_DURABILITY_OS && log->cfg.on_durable)
        log->cfg.on_durable(log->cfg.on_durable_arg, log->end_offset);
    return 0;
}

/* Appends a control batch whose single record is key -> value. */
static int append_control(struct vlog *log, const char *key, const void *value, size_t vlen,
                          int64_t now_ms)
{
    struct batch_hdr h;
    int rc;
    batch_builder_reset(&log->ctl);
    if ((rc = batch_builder_add(&log->ctl, now_ms, key, (int32_t)strlen(key), value,
                                (int32_t)vlen, NULL, 0)))
        return rc;
    struct batch_meta m = {BATCH_ATTR_CONTROL, -1, -1, -1, NULL};
    if ((rc = batch_builder_finish(&log->ctl, &m)))
        return rc;
    if ((rc = batch_hdr_decode(log->ctl.buf, log->ctl.len, &h)))
        return rc;
    return append_batch(log, log->ctl.buf, &h, NULL);
}

int vlog_checkpoint(struct vlog *log, int64_t now_ms)
{
    uint8_t payload[CKPT_PAYLOAD_SIZE];
    struct ckpt ck = {0};
    int rc;
    ck.offset = log->end_offset;
    memcpy(ck.chain, log->chain, BATCH_CHAIN_SIZE);
    ck.record_count = log->data_records;
    ck.time_ms = now_ms;
    if ((rc = ckpt_encode(&ck, log->cfg.signing_key, payload)))
        return rc;
    if ((rc = append_control(log, BATCH_CONTROL_CHECKPOINT, payload, sizeof payload, now_ms)))
        return rc;
    log->records_since_ckpt = 0;
    log->last_is_checkpoint = true;
    return 0;
}

int vlog_append(struct vlog *log, uint8_t *batch, size_t len, int64_t now_ms,
                struct vlog_append_info *out)
{
    struct batch_hdr h;
    int rc;
    if (log->cfg.read_only)
        return VERITY_EREADONLY;
    if (vlog_error(log))
        return VERITY_EREADONLY;
    if ((rc = batch_validate(batch, len, NULL)))
        return rc;
    if ((rc = batch_hdr_decode(batch, len, &h)))
        return rc;
    if (h.attributes & BATCH_ATTR_CONTROL)
        return VERITY_EBADBATCH;
    if ((rc = append_batch(log, batch, &h, out)))
        return rc;
    log->records_since_ckpt += h.record_count;
    if (log->cfg.checkpoint_records && log->records_since_ckpt >= log->cfg.checkpoint_records)
        return vlog_checkpoint(log, now_ms);
    return 0;
}

int vlog_wait_durable(struct vlog *log, uint64_t end, int timeout_ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    if (timeout_ms >= 0) {
        ts.tv_sec += timeout_ms / 1000;
        ts.tv_nsec += (long)(timeout_ms % 1000) * 1000000;
        if (ts.tv_nsec >= 1000000000) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000;
        }
    }
    int rc = 0;
    pthread_mutex_lock(&log->mu);
    while (log->durable_end < end && log->error == 0) {
        if (timeout_ms < 0) {
            pthread_cond_wait(&log->durable_cond, &log->mu);
        } else if (pthread_cond_timedwait(&log->durable_cond, &log->mu, &ts) == ETIMEDOUT) {
            rc = VERITY_ETIMEOUT;
            break;
        }
    }
    if (log->durable_end < end && log->error)
        rc = VERITY_EREADONLY;
    pthread_mutex_unlock(&log->mu);
    return rc;
}

/* ---- open / close --------------------------------------------------------- */

/* Copies s into out as the body of a JSON string (quotes, backslashes and
 * control characters escaped). */
static void json_escape(const char *s, char *out, size_t cap)
{
    size_t o = 0;
    for (; *s && o + 7 < cap; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') {
            out[o++] = '\\';
            out[o++] = (char)c;
        } else if (c < 0x20) {
            o += (size_t)snprintf(out + o, cap - o, "\\u%04x", c);
        } else {
            out[o++] = (char)c;
        }
    }
    out[o] = '\0';
}

static int write_recovery_record(struct vlog *log, int64_t now_ms)
{
    char json[1024], reason[400];
    const struct vlog_recovery *r = &log->recovery;
    json_escape(r->reason, reason, sizeof reason);
    int n = snprintf(json, sizeof json,
                     "{\"cut_offset_first\":%" PRIu64 ",\"cut_offset_last\":%" PRIu64
                     ",\"cut_bytes\":%" PRIu64 ",\"cut_position\":%" PRIu64 ",\"reason\":\"%s\"}",
                     r->cut_offset_first, r->cut_offset_last, r->cut_bytes, r->cut_position,
                     reason);
    fprintf(stderr, "verity: %s: recovery cut a torn tail: %s\n", log->dir, json);
    int rc = append_control(log, BATCH_CONTROL_RECOVERY, json, (size_t)n, now_ms);
    if (rc == 0 && log->cfg.durability != VLOG_DURABILITY_ALWAYS)
        rc = sync_once(log);
    return rc;
}

static void log_free(struct vlog *log)
{
    if (!log)
        return;
    for (size_t i = 0; i < log->nsegs; i++)
        seg_free(log, log->segs[i]);
    free(log->segs);
    batch_builder_deinit(&log->ctl);
    free(log->scan_buf);
    pthread_mutex_destroy(&log->mu);
    pthread_mutex_destroy(&log->sync_mu);
    pthread_cond_destroy(&log->commit_cond);
    pthread_cond_destroy(&log->durable_cond);
    free(log->dir);
    free(log);
}

static int open_segments(struct vlog *log, int64_t now_ms, uint64_t *bad_offset)
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
            seg_path(log, bases[first], exts[e], path);
            (void)log->io->unlink(log->io->ctx, path); /* best effort: already retained */
        }
        first++;
    }
    if (nb == first) {
        free(bases);
        if (log->cfg.read_only)
            return VERITY_ENOTFOUND;
        uint64_t base = have_anchor ? anchor.offset : 0;
        struct seg *s = seg_new(base);
        if (!s || (rc = segs_push(log, s))) {
            free(s);
            return rc ? rc : -ENOMEM;
        }
        char path[PATH_MAX_LOG];
        seg_path(log, base, ".log", path);
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
        fprintf(stderr, "verity: %s: anchor offset does not match the oldest segment\n", log->dir);
        return VERITY_ECHAIN;
    }
    bool have_records = true;
    for (size_t i = first; i < nb; i++) {
        char path[PATH_MAX_LOG];
        struct seg *s = seg_new(bases[i]);
        if (!s || (rc = segs_push(log, s))) {
            free(s);
            rc = rc ? rc : -ENOMEM;
            goto out;
        }
        bool last = i + 1 == nb;
        seg_path(log, s->base, ".log", path);
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
            if ((rc = seg_tail_state(log, s, chain, &records))) {
                if (bad_offset)
                    *bad_offset = s->base;
                goto out;
            }
            seg_unload_index(s);
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

int vlog_open(const char *dir, const struct vlog_config *cfg, int64_t now_ms, struct vlog **out,
              uint64_t *bad_offset)
{
    struct vlog *log = calloc(1, sizeof *log);
    int rc;
    if (!log)
        return -ENOMEM;
    pthread_mutex_init(&log->mu, NULL);
    pthread_mutex_init(&log->sync_mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&log->commit_cond, &ca);
    pthread_condattr_destroy(&ca);
    pthread_cond_init(&log->durable_cond, NULL);
    log->cfg = *cfg;
    log->io = cfg->io ? cfg->io : &vio_posix;
    log->max_ts = INT64_MIN;
    log->sync_fd = -1;
    scan_reset(log);
    if (log->cfg.index_interval_bytes == 0)
        log->cfg.index_interval_bytes = 4096;
    if (log->cfg.segment_bytes == 0 || log->cfg.segment_bytes > (1ull << 31))
        log->cfg.segment_bytes = 1ull << 30;
    if (!(log->dir = strdup(dir))) {
        rc = -ENOMEM;
        goto fail;
    }
    if ((rc = batch_builder_init(&log->ctl, 4096)))
        goto fail;
    if (!cfg->read_only) {
        rc = log->io->mkdir(log->io->ctx, dir, 0755);
        if (rc && rc != -EEXIST)
            goto fail;
    }
    if ((rc = open_segments(log, now_ms, bad_offset)))
        goto fail;
    struct seg *s = active(log);
    log->end_offset = s->end;
    for (size_t i = 0; i < log->nsegs; i++)
        if (log->segs[i]->max_ts > log->max_ts)
            log->max_ts = log->segs[i]->max_ts;
    log->written_end = log->synced_end = log->durable_end = log->end_offset;
    log->sync_fd = s->fd;
    VERITY_VERIFY(log_ok(log));
    if (log->recovery.cut && !cfg->read_only && (rc = write_recovery_record(log, now_ms)))
        goto fail;
    if (cfg->durability == VLOG_DURABILITY_GROUP && !cfg->read_only) {
        if ((rc = -pthread_create(&log->thread, NULL, commit_thread, log)))
            goto fail;
        log->thread_started = true;
    }
    *out = log;
    return 0;
fail:
    log_free(log);
    return rc;
}

static void stop_thread(struct vlog *log)
{
    if (!log->thread_started)
        return;
    pthread_mutex_lock(&log->mu);
    log->stop = true;
    pthread_cond_signal(&log->commit_cond);
    pthread_mutex_unlock(&log->mu);
    pthread_join(log->thread, NULL);
    log->thread_started = false;
}

int vlog_close(struct vlog *log, int64_t now_ms)
{
    int rc = 0;
    if (!log)
        return 0;
    stop_thread(log);
    if (!log->cfg.read_only && vlog_error(log) == 0) {
        if (!log->last_is_checkpoint && log->end_offset > 0)
            rc = vlog_checkpoint(log, now_ms);
        int src = sync_once(log); /* a no-op when everything is synced */
        if (!rc)
            rc = src;
    }
    if (!rc)
        rc = vlog_error(log);
    log_free(log);
    return rc;
}

void vlog_abandon(struct vlog *log)
{
    if (!log)
        return;
    stop_thread(log);
    log_free(log);
}

void vlog_get_info(const struct vlog *log, struct vlog_info *o)
{
    memset(o, 0, sizeof *o);
    o->start_offset = log->segs[0]->base;
    o->end_offset = log->end_offset;
    o->durable_end = vlog_durable_end(log);
    for (size_t i = 0; i < log->nsegs; i++)
        o->size_bytes += log->segs[i]->size;
    o->segments = (uint32_t)log->nsegs;
    o->max_timestamp = log->max_ts;
    memcpy(o->chain, log->chain, BATCH_CHAIN_SIZE);
    o->error = vlog_error(log);
}

/* ---- reading -------------------------------------------------------------- */

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
    if (!s->idx_loaded && (rc = seg_load_index_mapped(log, s)))
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

int vlog_read(struct vlog *log, uint64_t offset, uint64_t end, size_t max_bytes,
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
            if ((rc = read_ahead(log, s->fd, pos, BATCH_HDR_SIZE, s->size, LOOKUP_CHUNK, &p)))
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
                sp->fd = s->fd;
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
    return 0;
}

int vlog_read_copy(struct vlog *log, uint64_t offset, uint64_t end, void *buf, size_t cap,
                   size_t *len_out)
{
    struct vlog_span spans[16];
    size_t n = 0;
    int rc = vlog_read(log, offset, end, cap, spans, 16, &n);
    *len_out = 0;
    if (rc)
        return rc;
    size_t used = 0;
    for (size_t i = 0; i < n; i++) {
        if (spans[i].length > cap - used)
            return used ? 0 : VERITY_ELIMIT;
        if ((rc = vio_pread_all(log->io, spans[i].fd, (uint8_t *)buf + used, spans[i].length,
                                (off_t)spans[i].position)))
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
        if (!s->idx_loaded && (rc = seg_load_index_mapped(log, s)))
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
            if ((rc = read_at(log, s->fd, pos, BATCH_HDR_SIZE, s->size, &p)))
                return rc;
            if ((rc = batch_hdr_decode(p, BATCH_HDR_SIZE, &h)))
                return rc;
            if (h.base_offset != at)
                return VERITY_ECORRUPT;
            if (h.max_timestamp >= ts) {
                *offset_out = h.base_offset;
                return 0;
            }
            pos += h.length;
            at += h.record_count;
        }
    }
    *offset_out = log->end_offset;
    return 0;
}

/* ---- retention and age ------------------------------------------------------ */

int vlog_maybe_roll(struct vlog *log, int64_t now_ms)
{
    struct seg *s = active(log);
    if (log->cfg.read_only || log->cfg.segment_ms <= 0 || s->size == 0 || s->first_ts == INT64_MIN)
        return 0;
    if (now_ms - s->first_ts < log->cfg.segment_ms)
        return 0;
    return roll(log);
}

int vlog_retain(struct vlog *log, int64_t now_ms)
{
    int rc;
    if (log->cfg.read_only || (log->cfg.retention_bytes == 0 && log->cfg.retention_ms <= 0))
        return 0;
    if (vlog_error(log))
        return VERITY_EREADONLY;
    uint64_t total = 0;
    for (size_t i = 0; i < log->nsegs; i++)
        total += log->segs[i]->size;
    size_t k = 0;
    while (k + 1 < log->nsegs) {
        struct seg *s = log->segs[k];
        bool over_size = log->cfg.retention_bytes && total > log->cfg.retention_bytes;
        bool too_old = log->cfg.retention_ms > 0 && s->max_ts != INT64_MIN &&
                       s->max_ts < now_ms - log->cfg.retention_ms;
        if (!over_size && !too_old)
            break;
        total -= s->size;
        k++;
    }
    if (k == 0)
        return 0;
    /* The anchor names the chain just below the new oldest segment; it is
     * durable before anything is deleted. */
    struct ckpt anchor = {0};
    uint64_t records = 0;
    if ((rc = seg_tail_state(log, log->segs[k - 1], anchor.chain, &records)))
        return rc;
    seg_unload_index(log->segs[k - 1]);
    anchor.offset = log->segs[k]->base;
    anchor.record_count = records;
    anchor.time_ms = now_ms;
    if ((rc = ckpt_anchor_write_io(log->dir, &anchor, log->cfg.signing_key, log->io)))
        return rc;
    scan_reset(log);
    for (size_t i = 0; i < k; i++) {
        char path[PATH_MAX_LOG];
        static const char *const exts[] = {".log", ".index", ".timeindex"};
        uint64_t base = log->segs[i]->base;
        seg_free(log, log->segs[i]);
        for (int e = 0; e < 3; e++) {
            seg_path(log, base, exts[e], path);
            rc = log->io->unlink(log->io->ctx, path);
            if (rc && rc != -ENOENT)
                fprintf(stderr, "verity: %s: cannot delete %s: %s\n", log->dir, path,
                        verity_strerror(rc));
        }
    }
    memmove(log->segs, log->segs + k, (log->nsegs - k) * sizeof *log->segs);
    log->nsegs -= k;
    if ((rc = vio_fsync_dir(log->io, log->dir)))
        return rc;
    VERITY_VERIFY(log_ok(log));
    return (int)k;
}
