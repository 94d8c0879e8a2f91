/*
 * The descriptor cache of closed segments (vlog.h, "Closed segments hold no
 * descriptor of their own"; vlog_int.h, vl_seg_fd_*).
 *
 * An idle partition used to keep one descriptor open per closed segment, so
 * partitions × segments had to fit in RLIMIT_NOFILE. Now only the active
 * segment keeps its own; a closed segment's file is opened read-only when a
 * read needs it and stays in one process-wide LRU list, newest first, until
 * more than max_open are cached. One bound for the process rather than one
 * per log, because the limit it protects (RLIMIT_NOFILE) is the process's.
 *
 * A read pins the descriptor between vl_seg_fd_get and vl_seg_fd_put, so a
 * thread reading another log cannot close it under the read (a closed and
 * reused descriptor number would read another file's bytes). What a read
 * hands out beyond that (vlog_read's spans) is a dup the caller owns.
 *
 * State, all guarded by mu: the list (newest, oldest, each segment's
 * lru_newer/lru_older), each segment's cache_fd and cache_pins, and the
 * counters. Invariants (cache_ok): a segment is listed exactly when its
 * cache_fd >= 0; n_open is the list's length; a pinned segment is never
 * evicted; a segment with a descriptor of its own (s->fd >= 0) is not listed
 * (checked where one is handed over).
 */
#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <unistd.h>

#include "storage/vlog_int.h"
#include "verity/errors.h"
#include "verity/verify.h"

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static struct seg *newest;       /* most recently used */
static struct seg *oldest;       /* the next to evict (if unpinned) */
static uint64_t n_open;          /* segments listed */
static uint64_t max_open = VLOG_SEGMENT_FDS_DEFAULT;
static uint64_t n_opens, n_hits, n_evictions;

/* Walks the list (O(n), debug builds only through assert). */
static bool cache_ok(void)
{
    uint64_t n = 0;
    const struct seg *prev = NULL;
    for (const struct seg *s = newest; s; s = s->lru_older) {
        if (s->cache_fd < 0 || s->lru_newer != prev)
            return false;
        prev = s;
        n++;
    }
    return prev == oldest && n == n_open;
}

static void list_remove(struct seg *s)
{
    if (s->lru_newer)
        s->lru_newer->lru_older = s->lru_older;
    else
        newest = s->lru_older;
    if (s->lru_older)
        s->lru_older->lru_newer = s->lru_newer;
    else
        oldest = s->lru_newer;
    s->lru_newer = s->lru_older = NULL;
}

static void list_push_newest(struct seg *s)
{
    s->lru_newer = NULL;
    s->lru_older = newest;
    if (newest)
        newest->lru_newer = s;
    newest = s;
    if (!oldest)
        oldest = s;
}

/* Closes s's cached descriptor. The file is a closed segment, synced before
 * it closed and only read since: a failing close loses nothing. */
static void forget(struct seg *s)
{
    list_remove(s);
    (void)s->io->close(s->io->ctx, s->cache_fd);
    s->cache_fd = -1;
    n_open--;
}

/* Evicts unpinned descriptors, oldest first, until at most keep are cached
 * or only pinned ones are left. Under mu; a close here does no I/O. */
static void evict_to(uint64_t keep)
{
    struct seg *s = oldest;
    while (n_open > keep && s) {
        struct seg *newer = s->lru_newer;
        if (s->cache_pins == 0) {
            forget(s);
            n_evictions++;
        }
        s = newer;
    }
}

int vl_seg_fd_get(struct vlog *log, struct seg *s)
{
    if (s->fd >= 0)
        return s->fd;
    pthread_mutex_lock(&mu);
    if (s->cache_fd >= 0) {
        s->cache_pins++;
        n_hits++;
        list_remove(s);
        list_push_newest(s);
        int fd = s->cache_fd;
        pthread_mutex_unlock(&mu);
        return fd;
    }
    pthread_mutex_unlock(&mu);

    /* Opened outside the lock: only s's owner thread opens s. */
    char path[PATH_MAX_LOG];
    vl_seg_path(log, s->base, ".log", path);
    int fd = log->io->open(log->io->ctx, path, O_RDONLY, 0);
    if (fd == -EMFILE || fd == -ENFILE) {
        vl_fdc_make_room();
        fd = log->io->open(log->io->ctx, path, O_RDONLY, 0);
    }
    if (fd < 0)
        return fd;
    pthread_mutex_lock(&mu);
    VERITY_VERIFY(s->cache_fd < 0 && s->cache_pins == 0);
    s->io = log->io;
    s->cache_fd = fd;
    s->cache_pins = 1;
    list_push_newest(s);
    n_open++;
    n_opens++;
    evict_to(max_open);
    assert(cache_ok());
    pthread_mutex_unlock(&mu);
    return fd;
}

void vl_fdc_make_room(void)
{
    /* Out of descriptors: what the cache holds is the one thing here that
     * can be given back. */
    pthread_mutex_lock(&mu);
    evict_to(0);
    pthread_mutex_unlock(&mu);
}

void vl_seg_fd_put(struct seg *s, int fd)
{
    if (s->fd >= 0) {
        VERITY_VERIFY(fd == s->fd);
        return;
    }
    pthread_mutex_lock(&mu);
    VERITY_VERIFY(s->cache_fd == fd && s->cache_pins > 0);
    s->cache_pins--;
    if (n_open > max_open)
        evict_to(max_open); /* what a pin kept over the bound */
    pthread_mutex_unlock(&mu);
}

void vl_seg_fd_donate(struct vlog *log, struct seg *s)
{
    if (s->fd < 0)
        return;
    pthread_mutex_lock(&mu);
    VERITY_VERIFY(s->cache_fd < 0 && s->cache_pins == 0);
    s->io = log->io;
    s->cache_fd = s->fd;
    s->fd = -1;
    list_push_newest(s);
    n_open++;
    evict_to(max_open);
    assert(cache_ok());
    pthread_mutex_unlock(&mu);
}

void vl_seg_fd_drop(struct seg *s)
{
    pthread_mutex_lock(&mu);
    if (s->cache_fd >= 0) {
        VERITY_VERIFY(s->cache_pins == 0);
        forget(s);
    }
    assert(cache_ok());
    pthread_mutex_unlock(&mu);
}

void vlog_fd_cache_set_max(uint64_t max)
{
    pthread_mutex_lock(&mu);
    max_open = max ? max : 1;
    evict_to(max_open);
    pthread_mutex_unlock(&mu);
}

void vlog_fd_cache_get_stats(struct vlog_fd_cache_stats *out)
{
    pthread_mutex_lock(&mu);
    out->open = n_open;
    out->max = max_open;
    out->opens = n_opens;
    out->hits = n_hits;
    out->evictions = n_evictions;
    pthread_mutex_unlock(&mu);
}
