/*
 * The zero-filled region ahead of the active segment's end (issue 16,
 * docs/FORMAT.md "Preallocated tail").
 *
 * An append that extends a file changes its size and allocates blocks, so
 * the fdatasync after it must commit the file system's journal (ext4: a jbd2
 * commit, one more ordered disk write). An append that overwrites blocks
 * that are already allocated, written and synced changes no metadata, so
 * its fdatasync writes the data and nothing else. This file keeps such a
 * region ahead of the write position: a thread of the log (started on the
 * first append that wants it) writes zeros past the region's end in chunks
 * of ZERO_CHUNK and fdatasyncs each, off the owner's path; the owner only
 * waits when a batch would pass the region's end, and then only for the
 * write (into the page cache) of the chunk in flight, never for its sync.
 *
 * Region size: it grows with the segment (at least ZERO_MIN, at most
 * cfg.prealloc_bytes ahead, never past segment_bytes), so a small or idle
 * partition holds little zeroed space; it is refilled once less than half
 * of it is left.
 *
 * Safety: zeros are only ever written at or past max(zero_end, zero_wpos),
 * under zero_mu. The owner writes a batch below zero_end without the lock
 * (zero_end only grows while the owner is not cutting), and past it only
 * holding zero_mu, updating zero_wpos before it lets go. So a zero write
 * never lands on a batch. A failed zero fdatasync makes the log read-only
 * like any failed sync (the same file description's next fdatasync would
 * not report the lost writeback). A failed zero write only stops the
 * preallocation of that segment.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdint.h>
#include <string.h>

#include "storage/slog.h"
#include "storage/vlog_int.h"
#include "verity/errors.h"
#include "verity/verify.h"

#define ZERO_MIN (256u << 10)      /* smallest region ahead */
#define ZERO_CHUNK (256u << 10)    /* one zero write and its fdatasync */
#define ZERO_ALIGN (64u << 10)     /* the region ends on this boundary */
#define ZERO_STACK (256u << 10)    /* the thread's stack */

static const uint8_t zeros[ZERO_CHUNK];

int vl_zero_init(struct vlog *log)
{
    int rc = pthread_mutex_init(&log->zero_mu, NULL);
    if (rc)
        return -rc;
    if ((rc = pthread_mutex_init(&log->zero_sync_mu, NULL))) {
        pthread_mutex_destroy(&log->zero_mu);
        return -rc;
    }
    if ((rc = pthread_cond_init(&log->zero_cond, NULL))) {
        pthread_mutex_destroy(&log->zero_mu);
        pthread_mutex_destroy(&log->zero_sync_mu);
        return -rc;
    }
    return 0;
}

void vl_zero_deinit(struct vlog *log)
{
    pthread_mutex_destroy(&log->zero_mu);
    pthread_mutex_destroy(&log->zero_sync_mu);
    pthread_cond_destroy(&log->zero_cond);
}

/* Where the region should end for a segment of size bytes (<= size: none). */
static uint64_t zero_target(const struct vlog *log, uint64_t size)
{
    uint64_t ahead = size < ZERO_MIN ? ZERO_MIN : size;
    if (ahead > log->cfg.prealloc_bytes)
        ahead = log->cfg.prealloc_bytes;
    uint64_t to = (size + ahead + ZERO_ALIGN - 1) / ZERO_ALIGN * ZERO_ALIGN;
    if (to > log->cfg.segment_bytes)
        to = log->cfg.segment_bytes;
    return to;
}

/* Writes and syncs zeros, one chunk per hold of zero_mu, until the region
 * reaches its target (or the log stops, fails, or the segment gave up). */
static void zero_fill(struct vlog *log)
{
    for (;;) {
        pthread_mutex_lock(&log->zero_mu);
        pthread_mutex_lock(&log->mu);
        uint64_t wpos = log->zero_wpos;
        uint64_t zend = log->zero_end;
        int fd = log->sync_fd;
        bool go = !log->zero_stop && !log->zero_failed && log->error == 0 && fd >= 0;
        pthread_mutex_unlock(&log->mu);
        uint64_t from = zend > wpos ? zend : wpos;
        uint64_t to = zero_target(log, wpos);
        if (!go || to <= from) {
            pthread_mutex_unlock(&log->zero_mu);
            return;
        }
        size_t n = to - from > ZERO_CHUNK ? ZERO_CHUNK : (size_t)(to - from);
        int rc = vio_pwrite_all(log->io, fd, zeros, n, (off_t)from);
        if (rc) {
            /* Bytes past the end that are zero or absent are the end of the
             * log either way: nothing to undo. */
            pthread_mutex_lock(&log->mu);
            log->zero_failed = true;
            pthread_mutex_unlock(&log->mu);
            pthread_mutex_unlock(&log->zero_mu);
            slog("warn", "log_prealloc_failed", "dir=%s position=%" PRIu64 " error=%s", log->dir,
                 from, verity_errname(rc));
            return;
        }
        /* The zeros are in place (page cache): appends may use them now.
         * Until the sync below ends, an append's own fdatasync carries them
         * (and the size change) to disk, as without preallocation. The
         * owner never waits for this sync; cuts and rolls do (zero_sync_mu),
         * so fd stays this segment's descriptor until it returns. */
        pthread_mutex_lock(&log->mu);
        VERITY_VERIFY(from + n > log->zero_end);
        __atomic_store_n(&log->zero_end, from + n, __ATOMIC_RELEASE);
        pthread_mutex_unlock(&log->mu);
        pthread_mutex_lock(&log->zero_sync_mu);
        pthread_mutex_unlock(&log->zero_mu);
        rc = log->io->fdatasync(log->io->ctx, fd);
        pthread_mutex_unlock(&log->zero_sync_mu);
        if (rc) {
            vl_set_error(log, rc);
            return;
        }
    }
}

static void *zero_thread(void *arg)
{
    struct vlog *log = arg;
    pthread_mutex_lock(&log->mu);
    while (!log->zero_stop) {
        if (!log->zero_want) {
            pthread_cond_wait(&log->zero_cond, &log->mu);
            continue;
        }
        log->zero_want = false;
        pthread_mutex_unlock(&log->mu);
        zero_fill(log);
        pthread_mutex_lock(&log->mu);
    }
    pthread_mutex_unlock(&log->mu);
    return NULL;
}

void vl_zero_after_append(struct vlog *log, struct seg *s)
{
    if (log->cfg.prealloc_bytes == 0)
        return;
    uint64_t to = zero_target(log, s->size);
    uint64_t zend = __atomic_load_n(&log->zero_end, __ATOMIC_ACQUIRE);
    /* Refill once less than half the wanted region is left. */
    if (to <= zend || zend >= s->size + (to - s->size) / 2)
        return;
    pthread_mutex_lock(&log->mu);
    bool start = false;
    if (!log->zero_stop && !log->zero_failed && log->error == 0) {
        log->zero_want = true;
        start = !log->zero_started;
        if (start)
            log->zero_started = true;
    }
    pthread_mutex_unlock(&log->mu);
    if (start) {
        pthread_attr_t a;
        int rc = pthread_attr_init(&a);
        if (rc == 0) {
            (void)pthread_attr_setstacksize(&a, ZERO_STACK);
            rc = pthread_create(&log->zero_thread, &a, zero_thread, log);
            pthread_attr_destroy(&a);
        }
        if (rc) {
            pthread_mutex_lock(&log->mu);
            log->zero_started = false;
            log->zero_failed = true;
            pthread_mutex_unlock(&log->mu);
            slog("warn", "log_prealloc_failed", "dir=%s error=%s", log->dir,
                 verity_errname(-rc));
        }
        return;
    }
    pthread_cond_signal(&log->zero_cond);
}

void vl_zero_stop(struct vlog *log)
{
    pthread_mutex_lock(&log->mu);
    log->zero_stop = true;
    bool started = log->zero_started;
    log->zero_started = false;
    pthread_cond_signal(&log->zero_cond);
    pthread_mutex_unlock(&log->mu);
    if (started)
        pthread_join(log->zero_thread, NULL);
}

bool vl_zero_enter(struct vlog *log, uint64_t end)
{
    if (log->cfg.prealloc_bytes == 0 || end <= __atomic_load_n(&log->zero_end, __ATOMIC_ACQUIRE))
        return false;
    pthread_mutex_lock(&log->zero_mu);
    return true;
}

void vl_zero_cut(struct vlog *log)
{
    pthread_mutex_lock(&log->zero_mu);
    pthread_mutex_lock(&log->zero_sync_mu);
}

void vl_zero_cut_done(struct vlog *log, uint64_t file_end)
{
    pthread_mutex_lock(&log->mu);
    log->zero_wpos = file_end;
    __atomic_store_n(&log->zero_end, file_end, __ATOMIC_RELEASE);
    log->zero_failed = false;
    pthread_mutex_unlock(&log->mu);
    pthread_mutex_unlock(&log->zero_sync_mu);
    pthread_mutex_unlock(&log->zero_mu);
}

int64_t vl_last_nonzero(struct vlog *log, struct seg *s, uint64_t from, uint64_t file_size)
{
    uint64_t last = from;
    for (uint64_t pos = from; pos < file_size;) {
        const uint8_t *p;
        size_t n = file_size - pos < SCAN_CHUNK ? (size_t)(file_size - pos) : SCAN_CHUNK;
        int rc = vl_read_at(log, s, pos, n, file_size, &p);
        if (rc)
            return rc;
        for (size_t i = n; i > 0; i--)
            if (p[i - 1]) {
                last = pos + i;
                break;
            }
        pos += n;
    }
    return (int64_t)last;
}
