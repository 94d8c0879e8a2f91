/*
 * Internals shared by the partition log's files (storage/vlog*.c). Nothing
 * outside storage/ includes this; the API is storage/vlog.h.
 *
 *   vlog.c          lifecycle, appends, durability (commit thread), retention
 *   vlog_seg.c      segments and their indexes, buffered reads
 *   vlog_recover.c  opening a directory: index checks, recovery of the tail
 *   vlog_read.c     reads by offset and by time
 *   vlog_tree.c     the Merkle tree hooks (storage/merkle.h)
 *   vlog_fdc.c      the process-wide descriptor cache of closed segments
 */
#ifndef VERITY_VLOG_INT_H
#define VERITY_VLOG_INT_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "storage/batch.h"
#include "storage/index.h"
#include "storage/vlog.h"
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
    /* Own descriptor: the active segment's, and a closed segment's only
     * while open checks it; -1 otherwise (reads then go through the
     * descriptor cache, vl_seg_fd_get). Owner thread. */
    int fd;
    /* The descriptor cache's fields (vlog_fdc.c), guarded by its mutex. */
    int cache_fd;                /* cached descriptor of a closed segment, or -1 */
    uint32_t cache_pins;         /* reads using cache_fd now: not evictable */
    struct seg *lru_newer;       /* the cache's LRU list (NULL at its ends) */
    struct seg *lru_older;
    const struct vio *io;        /* closes cache_fd on eviction, from any thread */
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
    uint64_t ckpt_failures;      /* automatic checkpoints that failed after an append */
    int ckpt_error;              /* error of the last one, 0 once one succeeds again */
    struct vlog_recovery recovery;
    struct batch_builder ctl;    /* control batches */
    uint8_t *scan_buf;           /* read-ahead for scans */
    size_t scan_cap;
    const struct seg *scan_seg;  /* whose bytes scan_buf holds (NULL: none); by
                                  * segment, not descriptor: a number may be reused */
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
    int64_t last_sync0_ns, last_sync1_ns; /* the newest fdatasync (under mu) */

    /* The zero-filled region ahead of the active segment's end (vlog_zero.c).
     * zero_mu is held by whoever writes zeros, writes a batch past zero_end,
     * or cuts or switches the active file; zero_sync_mu by the zero thread
     * across its fdatasync and by cuts and rolls (after zero_mu), never by
     * an append. The fields below them are guarded by mu. */
    pthread_mutex_t zero_mu;
    pthread_mutex_t zero_sync_mu;
    pthread_cond_t zero_cond;    /* wakes the zero thread */
    uint64_t zero_end;           /* bytes [wpos, zero_end) of the active file are
                                  * zero, written (synced soon after; atomic
                                  * reads by the owner) */
    uint64_t zero_wpos;          /* the active segment's size (its end position) */
    bool zero_want;              /* the owner asks for more */
    bool zero_failed;            /* a zero write failed: none more in this segment */
    bool zero_stop;
    bool zero_started;
    pthread_t zero_thread;

    struct mtree *tree;          /* Merkle tree (vlog_tree.c); NULL when off */
    uint64_t tree_unsynced_bytes; /* log bytes appended since tree.state was replaced */
};

/* ---- small helpers ----------------------------------------------------- */

/* Only the active segment is ever written. */
static inline struct seg *vl_active(const struct vlog *log)
{
    VERITY_VERIFY(log->nsegs > 0);
    return log->segs[log->nsegs - 1];
}

/* A segment's invariant: it starts at its base, holds bytes exactly when it
 * holds offsets (every batch has at least one record), and stays within the
 * 32-bit positions its indexes store. */
static inline bool vl_seg_ok(const struct seg *s)
{
    return s->base <= s->end && (s->size == 0) == (s->end == s->base) &&
           s->size <= UINT32_MAX && s->end - s->base <= UINT32_MAX;
}

/* vlog_seg.c: segments, their indexes, buffered reads */
void vl_seg_path(const struct vlog *log, uint64_t base, const char *ext, char *out);
struct seg *vl_seg_new(uint64_t base);
void vl_seg_free(struct vlog *log, struct seg *s);
int vl_segs_push(struct vlog *log, struct seg *s) __attribute__((warn_unused_result));
void vl_scan_reset(struct vlog *log);
int vl_read_ahead(struct vlog *log, struct seg *s, uint64_t pos, size_t len, uint64_t limit,
                  size_t ahead, const uint8_t **out) __attribute__((warn_unused_result));
int vl_read_at(struct vlog *log, struct seg *s, uint64_t pos, size_t len, uint64_t limit,
               const uint8_t **out) __attribute__((warn_unused_result));
/* Reads exactly n bytes of s at off through the log's vio (vio_pread_all). */
int vl_seg_pread(struct vlog *log, struct seg *s, void *buf, size_t n, uint64_t off)
    __attribute__((warn_unused_result));
int vl_read_batch_checked(struct vlog *log, struct seg *s, uint64_t pos, uint64_t limit,
                          struct batch_hdr *h, const uint8_t **out)
    __attribute__((warn_unused_result));
int vl_seg_load_index_mapped(struct vlog *log, struct seg *s) __attribute__((warn_unused_result));
void vl_seg_unload_index(struct seg *s);
void vl_seg_index_batch(struct vlog *log, struct seg *s, uint64_t pos, uint64_t base,
                        uint64_t data_records_before, int64_t max_ts, uint32_t len);

/*
 * vlog_fdc.c: closed segments' descriptors, opened on demand and kept in one
 * process-wide LRU of at most vlog_fd_cache_set_max() descriptors.
 *
 * vl_seg_fd_get: a descriptor to read s with: s->fd when the segment holds
 * its own, else the cached one (opened read-only if none), pinned so no
 * thread evicts it until vl_seg_fd_put. Owner thread of s's log. Returns the
 * descriptor or -errno.
 * vl_seg_fd_put: ends what vl_seg_fd_get began (fd is its result).
 * vl_seg_fd_donate: a segment that just closed (roll, or checked at open)
 * hands its own descriptor to the cache; s->fd becomes -1.
 * vl_seg_fd_drop: closes and forgets s's cached descriptor (retention, log
 * close). s must not be pinned.
 */
int vl_seg_fd_get(struct vlog *log, struct seg *s) __attribute__((warn_unused_result));
void vl_seg_fd_put(struct seg *s, int fd);
void vl_seg_fd_donate(struct vlog *log, struct seg *s);
void vl_seg_fd_drop(struct seg *s);
/* Closes every unpinned cached descriptor (after an EMFILE or ENFILE). */
void vl_fdc_make_room(void);

/* vlog_zero.c: the zero-filled region ahead of the active segment.
 * vl_zero_init/deinit: the mutex and condition (open, free).
 * vl_zero_after_append: the owner, after a batch was written (s->size is the
 * new end): wakes the zero thread (started on first use) when less than half
 * the wanted region is left.
 * vl_zero_stop: joins the thread (close, abandon).
 * vl_zero_cut: the active file is about to be cut, truncated or rolled:
 * takes zero_mu and zero_sync_mu (no zero write or sync is in flight after
 * it); vl_zero_cut_done(log,
 * end) releases it with the active file's new length, which is also the
 * active segment's size (the region is refilled after the next append). */
int vl_zero_init(struct vlog *log);
void vl_zero_deinit(struct vlog *log);
void vl_zero_after_append(struct vlog *log, struct seg *s);
void vl_zero_stop(struct vlog *log);
void vl_zero_cut(struct vlog *log);
void vl_zero_cut_done(struct vlog *log, uint64_t file_end);
/* Whether the batch written at [pos, end) lies within the zero region (no
 * lock needed), else takes zero_mu (returns true: release with
 * pthread_mutex_unlock(&log->zero_mu) after the write). */
bool vl_zero_enter(struct vlog *log, uint64_t end);
/* Position after the last nonzero byte of s in [from, file_size) (from when
 * all are zero), or -errno. */
int64_t vl_last_nonzero(struct vlog *log, struct seg *s, uint64_t from, uint64_t file_size);
void vl_set_error(struct vlog *log, int err);

/* vlog.c: the write path, for vlog_follow.c */
int vl_append_raw(struct vlog *log, uint8_t *b, const struct batch_hdr *h,
                  struct vlog_append_info *out) __attribute__((warn_unused_result));

/* vlog_recover.c: opening a directory of segments, recovery */
int vl_open_segments(struct vlog *log, int64_t now_ms, uint64_t *bad_offset)
    __attribute__((warn_unused_result));
int vl_seg_tail_state(struct vlog *log, struct seg *s, uint8_t *chain, uint64_t *records)
    __attribute__((warn_unused_result));

/* vlog_tree.c: the partition's Merkle tree follows the log */
int vl_tree_open(struct vlog *log) __attribute__((warn_unused_result));
/* After a cut of the log's tail (vlog_truncate_tail): drops the leaves of
 * the batches cut (the tree is marked stale when that fails). */
void vl_tree_cut(struct vlog *log);
void vl_tree_append(struct vlog *log, uint64_t base, uint32_t records, uint32_t len,
                    const uint8_t *prev_chain, const uint8_t *chain);
/* The signed C2SP checkpoint note of the tree as it is now (size = batches
 * so far), as a record header for the checkpoint control batch: returns 1
 * with *kv pointing into buf, or 0 (no header) when the tree is off, the
 * log unsigned or cfg.tree_origin empty. */
#define VL_TREE_NOTE_MAX 2048
#define VL_TREE_NOTE_HEADER "verity.tree.checkpoint"
uint32_t vl_tree_note(struct vlog *log, struct batch_header_kv *kv, char *buf, size_t cap);
/* Persists the tree's state at a checkpoint once enough is unsynced
 * (VL_TREE_SYNC_*), or always with force (close). Never fails the log. */
int vl_tree_sync(struct vlog *log, bool force) __attribute__((warn_unused_result));
void vl_tree_close(struct vlog *log);

#endif
