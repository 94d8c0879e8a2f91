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
 * Opening and recovery live in vlog_recover.c, reads in vlog_read.c,
 * segments and buffered reads in vlog_seg.c (vlog_int.h lists them).
 *
 * Durability: `always` syncs inside vlog_append; `group` hands syncs to a
 * commit thread that syncs at once when the last sync ended group_delay_us
 * ago or more, and otherwise waits until then, at most group_delay_us after
 * the first pending append (or until group_bytes_max are pending); `os`
 * never syncs on append.
 * A failed fdatasync is never retried: the error is sticky, the log turns
 * read-only, and every later append returns VERITY_EREADONLY.
 */
#include "storage/slog.h"
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
#include <sys/stat.h>
#include <time.h>

#include "storage/batch.h"
#include "storage/checkpoint.h"
#include "storage/index.h"
#include "storage/clock.h"
#include "storage/vlog_int.h"
#include "verity/errors.h"
#include "verity/limits.h"
#include "verity/verify.h"

#define SCAN_CHUNK (256u << 10)   /* read-ahead of sequential scans */
#define LOOKUP_CHUNK (16u << 10)  /* read-ahead of random lookups */
#define PATH_MAX_LOG 4096

/* ---- small helpers --------------------------------------------------------- */

static bool log_ok(const struct vlog *log)
{
    if (log->nsegs == 0)
        return false;
    for (size_t i = 0; i + 1 < log->nsegs; i++)
        if (log->segs[i]->end != log->segs[i + 1]->base || log->segs[i]->base > log->segs[i]->end)
            return false;
    return vl_active(log)->end == log->end_offset;
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
    cfg->prealloc_bytes = 4u << 20;
}

void vl_set_error(struct vlog *log, int err)
{
    pthread_mutex_lock(&log->mu);
    if (log->error == 0) {
        log->error = err;
        slog("error", "log_read_only", "dir=%s error=%s", log->dir, verity_errname(err));
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
/* ---- writing --------------------------------------------------------------- */

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
    int64_t t0 = clock_mono_ns();
    int rc = log->io->fdatasync(log->io->ctx, fd);
    int64_t t1 = clock_mono_ns();
    pthread_mutex_lock(&log->mu);
    stats_add(log, t1 - t0);
    log->last_sync0_ns = t0;
    log->last_sync1_ns = t1;
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
        vl_set_error(log, rc);
        return rc;
    }
    if (log->cfg.on_durable)
        log->cfg.on_durable(log->cfg.on_durable_arg, target);
    return 0;
}

void vlog_last_sync(const struct vlog *log, int64_t *start_ns, int64_t *end_ns)
{
    pthread_mutex_lock((pthread_mutex_t *)&log->mu);
    *start_ns = log->last_sync0_ns;
    *end_ns = log->last_sync1_ns;
    pthread_mutex_unlock((pthread_mutex_t *)&log->mu);
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
            /* Group commit (issue 16): the sync starts at once when the
             * disk has been idle for group_delay_us (the last sync ended
             * that long ago), so a lone append no longer waits out the
             * delay; under load syncs are group_delay_us apart, and no
             * append waits longer than group_delay_us for its sync. */
            int64_t delay_ns = (int64_t)log->cfg.group_delay_us * 1000;
            int64_t due = log->pending_since_ns + delay_ns;
            if (log->last_sync1_ns + delay_ns < due)
                due = log->last_sync1_ns + delay_ns;
            if (delay_ns > 0 && log->pending_bytes < log->cfg.group_bytes_max && clock_mono_ns() < due) {
                struct timespec ts;
                clock_gettime(CLOCK_MONOTONIC, &ts);
                int64_t wait = due - clock_mono_ns();
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

/* Cuts the active segment's file to its size when it is longer (the zero
 * tail), and syncs the cut. Caller holds zero_mu (vl_zero_cut). */
static int trim_active(struct vlog *log, struct seg *s)
{
    struct stat st;
    int rc = log->io->fstat(log->io->ctx, s->fd, &st);
    if (rc || (uint64_t)st.st_size == s->size)
        return rc;
    if ((rc = log->io->ftruncate(log->io->ctx, s->fd, (off_t)s->size)) ||
        (rc = log->io->fdatasync(log->io->ctx, s->fd)))
        vl_set_error(log, rc);
    return rc;
}

/* Creates the segment that starts at end_offset and makes it active. The
 * old active segment is synced and cut to its exact size first (its zero
 * tail goes), so a closed segment is always durable, holds nothing past its
 * last batch, and is byte-identical on every replica. */
static int roll(struct vlog *log)
{
    char path[PATH_MAX_LOG];
    struct seg *old = vl_active(log);
    int rc;
    vl_zero_cut(log);
    /* Every policy syncs a segment before it is closed, so only the active
     * segment can ever hold unsynced bytes. The cut is durable before the
     * new segment's name can be: no closed segment ever has a zero tail. */
    if ((old->size > 0 && (rc = sync_once(log))) || (rc = trim_active(log, old))) {
        vl_zero_cut_done(log, old->size);
        return rc;
    }
    struct seg *s = vl_seg_new(log->end_offset);
    if (!s) {
        vl_zero_cut_done(log, old->size);
        return -ENOMEM;
    }
    s->data_records_base = log->data_records;
    vl_seg_path(log, s->base, ".log", path);
    s->fd = log->io->open(log->io->ctx, path, O_RDWR | O_CREAT | O_TRUNC, 0644);
    if (s->fd < 0) {
        rc = s->fd;
        s->fd = -1;
        goto fail;
    }
    vl_seg_path(log, s->base, ".index", path);
    if ((rc = idx_open(&s->oidx, log->io, path, true)))
        goto fail;
    vl_seg_path(log, s->base, ".timeindex", path);
    if ((rc = idx_open(&s->tidx, log->io, path, true))) {
        idx_close(&s->oidx);
        goto fail;
    }
    s->idx_loaded = true;
    if ((rc = idx_truncate(&s->oidx, 0)) || (rc = idx_truncate(&s->tidx, 0)))
        goto fail;
    if ((rc = vio_fsync_dir(log->io, log->dir)))
        goto fail;
    if ((rc = vl_segs_push(log, s)))
        goto fail;
    pthread_mutex_lock(&log->sync_mu);
    pthread_mutex_lock(&log->mu);
    log->sync_fd = s->fd;
    pthread_mutex_unlock(&log->mu);
    pthread_mutex_unlock(&log->sync_mu);
    vl_zero_cut_done(log, 0);
    vl_seg_unload_index(old);
    /* Closed and synced: nothing writes or syncs it again, so its descriptor
     * joins the cache (the newest closed segment is the likeliest read). */
    vl_seg_fd_donate(log, old);
    return 0;
fail:
    vl_seg_free(log, s);
    vl_zero_cut_done(log, old->size);
    if (rc == -EIO)
        vl_set_error(log, rc);
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
    struct seg *s = vl_active(log);
    if (s->size > 0 && s->size + h->length > log->cfg.segment_bytes && (rc = roll(log)))
        return rc;
    s = vl_active(log);
    uint64_t base = log->end_offset;
    uint64_t pos = s->size;
    uint8_t chain[BATCH_CHAIN_SIZE];
    batch_set_base_offset(b, base);
    batch_chain_compute(log->chain, b, h->length, chain);
    batch_set_chain(b, chain);
    /* Inside the zero region no lock is needed; past it, zero_mu keeps the
     * zero thread off these bytes (vlog_zero.c). */
    bool zero_locked = vl_zero_enter(log, pos + h->length);
    rc = vio_pwrite_all(log->io, s->fd, b, h->length, (off_t)pos);
    if (rc) {
        /* The cut also drops the zero tail (refilled later): what a failed
         * write left inside it must not stay there. */
        if (!zero_locked)
            vl_zero_cut(log);
        int trc = log->io->ftruncate(log->io->ctx, s->fd, (off_t)pos);
        vl_zero_cut_done(log, pos);
        if (trc)
            vl_set_error(log, trc);
        return rc;
    }
    bool control = (h->attributes & BATCH_ATTR_CONTROL) != 0;
    VERITY_VERIFY(vl_seg_ok(s) && pos == s->size && base == s->end);
    vl_tree_append(log, base, h->record_count, h->length, log->chain, chain);
    vl_seg_index_batch(log, s, pos, base, log->data_records, h->max_timestamp, h->length);
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
    VERITY_VERIFY(log_ok(log) && vl_seg_ok(s));

    pthread_mutex_lock(&log->mu);
    log->zero_wpos = s->size;
    log->written_end = log->end_offset;
    if (log->pending_bytes == 0)
        log->pending_since_ns = clock_mono_ns();
    log->pending_bytes += h->length;
    if (log->cfg.durability == VLOG_DURABILITY_OS) {
        __atomic_store_n(&log->durable_end, log->written_end, __ATOMIC_RELEASE);
        log->pending_bytes = 0;
        pthread_cond_broadcast(&log->durable_cond);
    }
    pthread_mutex_unlock(&log->mu);
    /* Signalled after the unlock (issue 16): the commit thread wakes to a
     * free mutex instead of blocking on ours. written_end was raised under
     * mu, so it cannot miss it: it checks under mu before it waits. */
    if (log->cfg.durability == VLOG_DURABILITY_GROUP)
        pthread_cond_signal(&log->commit_cond);
    if (zero_locked)
        pthread_mutex_unlock(&log->zero_mu);
    vl_zero_after_append(log, s);

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

/* Appends a control batch whose single record is key -> value (with nh
 * headers, the tree's checkpoint note: vlog_tree.c). */
static int append_control(struct vlog *log, const char *key, const void *value, size_t vlen,
                          int64_t now_ms, const struct batch_header_kv *hdrs, uint32_t nh)
{
    struct batch_hdr h;
    int rc;
    batch_builder_reset(&log->ctl);
    if ((rc = batch_builder_add(&log->ctl, now_ms, key, (int32_t)strlen(key), value,
                                (int32_t)vlen, hdrs, nh)))
        return rc;
    struct batch_meta m = {BATCH_ATTR_CONTROL, -1, -1, -1, NULL};
    if ((rc = batch_builder_finish(&log->ctl, &m)))
        return rc;
    if ((rc = batch_hdr_decode(log->ctl.buf, log->ctl.len, &h)))
        return rc;
    return append_batch(log, log->ctl.buf, &h, NULL);
}

int vlog_mark_state(struct vlog *log, const char *note, size_t n, int64_t now_ms)
{
    return append_control(log, BATCH_CONTROL_STATE, note, n, now_ms, NULL, 0);
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
    struct batch_header_kv note;
    char note_buf[VL_TREE_NOTE_MAX];
    uint32_t nh = vl_tree_note(log, &note, note_buf, sizeof note_buf);
    if ((rc = append_control(log, BATCH_CONTROL_CHECKPOINT, payload, sizeof payload, now_ms,
                             &note, nh)))
        return rc;
    log->records_since_ckpt = 0;
    log->last_is_checkpoint = true;
    return vl_tree_sync(log, false);
}

/*
 * The automatic checkpoint that follows a data append. The batch is already
 * in the log (and, in `always` mode, durable and reported through
 * on_durable), so a failure here must not turn into a failed append: the
 * producer would retry a batch that is stored and write it twice. Undoing
 * the append is not an option either (a durable batch may already have been
 * answered to a fetch). So the failure is counted and kept in vlog_info
 * (checkpoint_failures, checkpoint_error), records_since_ckpt stays at the
 * threshold so the next append tries again, and a failure that made the log
 * read-only reaches callers through vlog_error and the durability waits.
 */
static void checkpoint_after_append(struct vlog *log, int64_t now_ms)
{
    uint64_t end = log->end_offset;
    int rc = vlog_checkpoint(log, now_ms);
    if (rc == 0) {
        log->ckpt_error = 0;
        return;
    }
    /* A failed control append leaves the data where it was, unless its
     * sync failed after the write (then the log is read-only for good). */
    VERITY_VERIFY(log->end_offset == end || vlog_error(log) != 0);
    log->ckpt_failures++;
    log->ckpt_error = rc;
    if (log->ckpt_failures == 1 || (log->ckpt_failures & (log->ckpt_failures - 1)) == 0)
        slog("warn", "checkpoint_failed", "dir=%s failures=%" PRIu64 " error=%s", log->dir,
             log->ckpt_failures, verity_errname(rc));
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
        checkpoint_after_append(log, now_ms);
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
/* ---- open / close ---------------------------------------------------------- */

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
    slog("warn", "log_tail_cut",
         "dir=%s cut_offset_first=%" PRIu64 " cut_offset_last=%" PRIu64 " cut_bytes=%" PRIu64
         " cut_position=%" PRIu64 " reason=\"%s\"",
         log->dir, r->cut_offset_first, r->cut_offset_last, r->cut_bytes, r->cut_position, reason);
    int rc = append_control(log, BATCH_CONTROL_RECOVERY, json, (size_t)n, now_ms, NULL, 0);
    if (rc == 0 && log->cfg.durability != VLOG_DURABILITY_ALWAYS)
        rc = sync_once(log);
    return rc;
}

static void log_free(struct vlog *log)
{
    if (!log)
        return;
    /* A failed open may have started it (the recovery record's append). */
    vl_zero_stop(log);
    for (size_t i = 0; i < log->nsegs; i++)
        vl_seg_free(log, log->segs[i]);
    free(log->segs);
    vl_tree_close(log);
    batch_builder_deinit(&log->ctl);
    free(log->scan_buf);
    vl_zero_deinit(log);
    pthread_mutex_destroy(&log->mu);
    pthread_mutex_destroy(&log->sync_mu);
    pthread_cond_destroy(&log->commit_cond);
    pthread_cond_destroy(&log->durable_cond);
    free(log->dir);
    free(log);
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
    if ((rc = vl_zero_init(log))) {
        pthread_mutex_destroy(&log->mu);
        pthread_mutex_destroy(&log->sync_mu);
        free(log);
        return rc;
    }
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&log->commit_cond, &ca);
    pthread_condattr_destroy(&ca);
    pthread_cond_init(&log->durable_cond, NULL);
    log->cfg = *cfg;
    if (cfg->read_only)
        log->cfg.prealloc_bytes = 0;
    log->io = cfg->io ? cfg->io : &vio_posix;
    log->max_ts = INT64_MIN;
    log->sync_fd = -1;
    vl_scan_reset(log);
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
    if ((rc = vl_open_segments(log, now_ms, bad_offset)))
        goto fail;
    struct seg *s = vl_active(log);
    log->end_offset = s->end;
    for (size_t i = 0; i < log->nsegs; i++)
        if (log->segs[i]->max_ts > log->max_ts)
            log->max_ts = log->segs[i]->max_ts;
    log->written_end = log->synced_end = log->durable_end = log->end_offset;
    log->sync_fd = s->fd;
    log->zero_wpos = s->size; /* zero_end: set by recovery */
    VERITY_VERIFY(log_ok(log));
    if (log->recovery.cut && !cfg->read_only && (rc = write_recovery_record(log, now_ms)))
        goto fail;
    if ((rc = vl_tree_open(log)))
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
    vl_zero_stop(log);
    if (!log->cfg.read_only && vlog_error(log) == 0) {
        if (!log->last_is_checkpoint && log->end_offset > 0)
            rc = vlog_checkpoint(log, now_ms);
        if (!rc)
            rc = vl_tree_sync(log, true);
        int src = sync_once(log); /* a no-op when everything is synced */
        if (!rc)
            rc = src;
        /* A cleanly closed log has no zero tail: its files are what an
         * older build wrote, and replicas' files are byte-identical. */
        if (!rc && vlog_error(log) == 0) {
            vl_zero_cut(log);
            rc = trim_active(log, vl_active(log));
            vl_zero_cut_done(log, vl_active(log)->size);
        }
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
    vl_zero_stop(log);
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
    o->checkpoint_failures = log->ckpt_failures;
    o->checkpoint_error = log->ckpt_error;
}
/* ---- retention and age ----------------------------------------------------- */

int vlog_maybe_roll(struct vlog *log, int64_t now_ms)
{
    struct seg *s = vl_active(log);
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
    if ((rc = vl_seg_tail_state(log, log->segs[k - 1], anchor.chain, &records)))
        return rc;
    vl_seg_unload_index(log->segs[k - 1]);
    anchor.offset = log->segs[k]->base;
    anchor.record_count = records;
    anchor.time_ms = now_ms;
    if ((rc = ckpt_anchor_write_io(log->dir, &anchor, log->cfg.signing_key, log->io)))
        return rc;
    vl_scan_reset(log);
    for (size_t i = 0; i < k; i++) {
        char path[PATH_MAX_LOG];
        static const char *const exts[] = {".log", ".index", ".timeindex"};
        uint64_t base = log->segs[i]->base;
        vl_seg_free(log, log->segs[i]);
        for (int e = 0; e < 3; e++) {
            vl_seg_path(log, base, exts[e], path);
            rc = log->io->unlink(log->io->ctx, path);
            if (rc && rc != -ENOENT)
                slog("warn", "segment_delete_failed", "dir=%s path=%s error=%s", log->dir, path,
                     verity_errname(rc));
        }
    }
    memmove(log->segs, log->segs + k, (log->nsegs - k) * sizeof *log->segs);
    log->nsegs -= k;
    if ((rc = vio_fsync_dir(log->io, log->dir)))
        return rc;
    VERITY_VERIFY(log_ok(log));
    return (int)k;
}

/* For storage/vlog_follow.c: the one write path, without the automatic
 * checkpoint that vlog_append adds (a follower must not write node-local
 * batches). */
int vl_append_raw(struct vlog *log, uint8_t *b, const struct batch_hdr *h,
                  struct vlog_append_info *out)
{
    return append_batch(log, b, h, out);
}
