/*
 * vlog: one partition's log, a directory of segments. Appends validate a
 * client-built batch, stamp its base offset and chain hash, and write it;
 * durability follows the log's policy; reads return file ranges so the broker
 * can send bytes without copying them. Recovery on open cuts a torn tail and
 * records the cut; it never cuts corruption that is not at the tail.
 *
 * Threads: every function is called from one owner thread, except
 * vlog_sync, vlog_wait_durable, vlog_durable_end and vlog_error, which any
 * thread may call. In `group` mode the log runs one commit thread of its own
 * that performs the fdatasyncs and calls cfg.on_durable.
 *
 * Directory layout:
 *   <dir>/<base-offset %020>.log        segment: batches back to back
 *   <dir>/<base-offset %020>.index      sparse offset index (see index.h)
 *   <dir>/<base-offset %020>.timeindex  sparse time index
 *   <dir>/anchor                        signed chain hash preceding the oldest
 *                                       segment, written by retention
 *   <dir>/tree.leaves, tree.hashes,     the partition's Merkle tree over its
 *   tree.state                          batches (storage/merkle.h)
 */
#ifndef VERITY_VLOG_H
#define VERITY_VLOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <openssl/evp.h>

#include "storage/vio.h"

enum vlog_durability {
    VLOG_DURABILITY_ALWAYS = 0, /* fdatasync inside vlog_append, before it returns */
    VLOG_DURABILITY_GROUP = 1,  /* commit thread syncs within group_delay_us / group_bytes_max */
    VLOG_DURABILITY_OS = 2,     /* never sync on append; the OS writes back */
};

struct vlog_config {
    enum vlog_durability durability;
    uint32_t group_delay_us;       /* group: longest an append waits for a sync (2000) */
    uint64_t group_bytes_max;      /* group: sync as soon as this much is unsynced (1 MiB) */
    uint64_t segment_bytes;        /* roll the active segment at this size (1 GiB) */
    int64_t segment_ms;            /* roll when the active segment is older (7 days; 0 = off) */
    uint32_t index_interval_bytes; /* about one index entry per this many bytes (4096) */
    uint32_t checkpoint_records;   /* signed checkpoint every N records (10,000; 0 = off) */
    uint64_t retention_bytes;      /* total size kept by vlog_retain (0 = unlimited) */
    int64_t retention_ms;          /* age kept by vlog_retain (0 = unlimited) */
    EVP_PKEY *signing_key;         /* Ed25519, borrowed for the log's life; NULL = unsigned */
    const struct vio *io;          /* borrowed; NULL = &vio_posix */
    /* Called after a sync made every offset < durable_end durable; from the
     * commit thread in group mode, else from the owner thread. May be NULL. */
    void (*on_durable)(void *arg, uint64_t durable_end);
    void *on_durable_arg;
    /* Zero-filled region kept ahead of the active segment's end (docs/FORMAT.md
     * "Preallocated tail"): appends then overwrite allocated, zeroed blocks
     * and their fdatasync needs no file system journal commit. At most this
     * many bytes ahead (4 MiB; 0 = off), written by a thread of the log. */
    uint64_t prealloc_bytes;
    bool read_only;                /* open without recovery writes (verify, dump) */
    bool tree_off;                 /* no Merkle tree files (storage/merkle.h); default on */
    /* Signed checkpoints also carry the tree's C2SP note (record header
     * verity.tree.checkpoint) when both are set: key name and origin. */
    char tree_name[256];           /* e.g. verity.example/local */
    char tree_origin[512];         /* e.g. verity.example/local/orders/3 */
};

void vlog_config_default(struct vlog_config *cfg);

/* What recovery did on open; cut == false when the tail was clean. */
struct vlog_recovery {
    bool cut;
    bool index_rebuilt;
    uint64_t cut_offset_first;     /* first offset that was cut */
    uint64_t cut_offset_last;      /* last offset seen in the cut bytes (>= first - 1) */
    uint64_t cut_bytes;
    uint64_t cut_position;         /* byte position in the segment where the cut starts */
    char reason[160];
};

struct vlog_info {
    uint64_t start_offset;         /* first offset still stored */
    uint64_t end_offset;           /* next offset to assign */
    uint64_t durable_end;          /* offsets below it are durable */
    uint64_t size_bytes;           /* all segments */
    uint32_t segments;
    int64_t max_timestamp;         /* largest batch max_timestamp appended, or INT64_MIN */
    uint8_t chain[32];             /* chain hash of the last batch */
    int error;                     /* 0, or the sticky error that made the log read-only */
    uint64_t checkpoint_failures;  /* automatic checkpoints after an append that failed */
    int checkpoint_error;          /* the last one's error; 0 once one succeeds again */
};

struct vlog;

/*
 * Opens (creating if needed) the log in dir. now_ms stamps a recovery record
 * if one is written. On corruption that is not a torn tail, returns
 * VERITY_ECORRUPT or VERITY_ECHAIN and, if bad_offset is not NULL, stores the
 * first bad offset there. *out is owned by the caller until vlog_close.
 */
int vlog_open(const char *dir, const struct vlog_config *cfg, int64_t now_ms, struct vlog **out,
              uint64_t *bad_offset) __attribute__((warn_unused_result));

/* Clean close: writes a checkpoint (unless read-only), syncs, frees. Returns
 * the first error met; the log is freed either way. NULL is a no-op. */
int vlog_close(struct vlog *log, int64_t now_ms);

/* Frees without a checkpoint or sync (crash tests, read-only users). */
void vlog_abandon(struct vlog *log);

struct vlog_append_info {
    uint64_t base_offset;
    uint64_t last_offset;
};

/*
 * Validates the len-byte batch (batch_validate), stamps its base offset and
 * chain hash in place (the caller's bytes change), and writes it. Control
 * batches are refused with VERITY_EBADBATCH (only the log writes them).
 * Returns 0; VERITY_EREADONLY after a failed sync; -ENOSPC or -EIO with the
 * log unchanged; or a validation error. In `always` mode returns only after
 * the batch is durable. A nonzero return always means the batch is not in
 * the log (or, after a failed sync, not durable): the automatic checkpoint
 * that may follow the batch never fails the append; its failure is counted
 * in vlog_info.checkpoint_failures and retried on the next append.
 */
int vlog_append(struct vlog *log, uint8_t *batch, size_t len, int64_t now_ms,
                struct vlog_append_info *out) __attribute__((warn_unused_result));

/*
 * Follower calls (storage/vlog_follow.c), for a backup that must hold the
 * primary's bytes exactly.
 *
 * vlog_append_exact: appends the len-byte batch unchanged, after checking
 * that it is valid (batch_validate), that its base offset is this log's end
 * offset (else VERITY_EOFFSET) and that its chain hash is H(tail chain ||
 * batch) (else VERITY_ECHAIN): it must chain from this log's tail. Control
 * batches are accepted (the primary may propose them). No automatic
 * checkpoint follows. Refusals change nothing. The bytes are not modified.
 *
 * vlog_truncate_tail: cuts every batch from offset on (offset must start a
 * batch in the active segment; VERITY_EOFFSET otherwise), after syncing.
 * Refuses (VERITY_EINVAL) to cut below committed_end: only an uncommitted
 * suffix may go. The log verifies afterwards (verify_log_dir) and appends
 * continue from offset. offset == end offset is a no-op.
 */
int vlog_append_exact(struct vlog *log, uint8_t *batch, size_t len, struct vlog_append_info *out)
    __attribute__((warn_unused_result));
int vlog_truncate_tail(struct vlog *log, uint64_t offset, uint64_t committed_end)
    __attribute__((warn_unused_result));

/* Makes everything appended so far durable. Thread-safe. 0 or the error
 * (a failure turns the log read-only for good). */
int vlog_sync(struct vlog *log) __attribute__((warn_unused_result));

/* Blocks until durable_end >= end or timeout_ms passes (-1 = forever).
 * Returns 0, VERITY_ETIMEOUT, or the log's sticky error. Thread-safe. */
int vlog_wait_durable(struct vlog *log, uint64_t end, int timeout_ms);

uint64_t vlog_durable_end(const struct vlog *log); /* thread-safe */
int vlog_error(const struct vlog *log);           /* thread-safe; 0 or sticky error */
void vlog_get_info(const struct vlog *log, struct vlog_info *out);
const struct vlog_recovery *vlog_last_recovery(const struct vlog *log);
const char *vlog_dir(const struct vlog *log);

/* A run of whole batches inside one segment file. fd is the caller's own
 * descriptor of that file (a dup, close-on-exec): the caller closes it. It
 * stays valid whatever the log does meanwhile (a closed segment's cached
 * descriptor may be evicted, retention may delete the file): the bytes it
 * reads are the span's. Two spans are in the same file when their segment
 * fields are equal (descriptor numbers say nothing). */
struct vlog_span {
    int fd;
    uint64_t segment;              /* base offset of the segment (its file name) */
    uint64_t position;             /* byte position in the segment */
    uint64_t length;               /* bytes */
    uint64_t base_offset;          /* first batch's base offset */
    uint64_t end_offset;           /* offset after the last record in the span */
};

/*
 * Locates whole batches starting with the one that holds offset, stopping
 * before the first batch that reaches end (exclusive offset bound, e.g. the
 * high watermark) or that would take the total past max_bytes (the first
 * batch is always included). Fills at most spans_max spans; *n_out gets the
 * count (0 when offset == end). VERITY_EOFFSET when offset is below the start
 * or above the end offset; -EMFILE (or another -errno) when a descriptor
 * could not be made, with no span handed out. On success the caller owns
 * every spans[i].fd and must close each (vlog_spans_close).
 */
int vlog_read(struct vlog *log, uint64_t offset, uint64_t end, size_t max_bytes,
              struct vlog_span *spans, size_t spans_max, size_t *n_out)
    __attribute__((warn_unused_result));

/* Closes the n spans' descriptors and sets them to -1 (-1 is skipped). */
void vlog_spans_close(struct vlog_span *spans, size_t n);

/* vlog_read, then copies the bytes into buf (cap bytes). Returns 0 with
 * *len_out bytes of whole batches; VERITY_ELIMIT if the first batch does not
 * fit in cap. */
int vlog_read_copy(struct vlog *log, uint64_t offset, uint64_t end, void *buf, size_t cap,
                   size_t *len_out) __attribute__((warn_unused_result));

/* The first offset whose batch max_timestamp >= ts_ms (binary search over the
 * segments and their time indexes, then a short scan); the end offset when
 * there is none. */
int vlog_offset_for_time(struct vlog *log, int64_t ts_ms, uint64_t *offset_out)
    __attribute__((warn_unused_result));

/* Appends a BATCH_CONTROL_STATE control batch whose value is the n bytes of
 * note (JSON text, for `verity log dump`). 0 or an append error. */
int vlog_mark_state(struct vlog *log, const char *note, size_t n, int64_t now_ms)
    __attribute__((warn_unused_result));

/* Writes a signed checkpoint control batch now. */
int vlog_checkpoint(struct vlog *log, int64_t now_ms) __attribute__((warn_unused_result));

/* Deletes whole closed segments beyond retention_bytes / retention_ms and
 * writes the signed anchor first. Returns the number of segments deleted or
 * an error. */
int vlog_retain(struct vlog *log, int64_t now_ms) __attribute__((warn_unused_result));

/* fdatasync latency histogram: bucket i counts syncs that took < 2^i us
 * (the last bucket takes the rest). Thread-safe snapshot. */
#define VLOG_SYNC_BUCKETS 24
struct vlog_sync_stats {
    uint64_t count;
    uint64_t sum_ns;
    uint64_t buckets[VLOG_SYNC_BUCKETS];
};
void vlog_get_sync_stats(const struct vlog *log, struct vlog_sync_stats *out);
/* CLOCK_MONOTONIC start and end of the newest completed fdatasync (0 none). */
void vlog_last_sync(const struct vlog *log, int64_t *start_ns, int64_t *end_ns);

/* The partition's Merkle tree (storage/merkle.h), valid until vlog_close;
 * NULL when the tree is off. Owner thread only. */
struct mtree;
struct mtree *vlog_tree(struct vlog *log);

/*
 * Closed segments hold no descriptor of their own: a read opens one on
 * demand and keeps it in one process-wide LRU cache of at most max
 * descriptors (VLOG_SEGMENT_FDS_DEFAULT until set; at least 1). A read in
 * progress pins its descriptor, so with T threads reading at once the cache
 * may hold max + T for a moment. An open that fails with EMFILE/ENFILE
 * evicts every unpinned descriptor and tries once more. Thread-safe.
 */
#define VLOG_SEGMENT_FDS_DEFAULT 256
struct vlog_fd_cache_stats {
    uint64_t open;                 /* descriptors cached now */
    uint64_t max;                  /* the bound */
    uint64_t opens;                /* segment files opened on demand, ever */
    uint64_t hits;                 /* reads that found their descriptor cached */
    uint64_t evictions;            /* descriptors closed to stay within max */
};
void vlog_fd_cache_set_max(uint64_t max);
void vlog_fd_cache_get_stats(struct vlog_fd_cache_stats *out);

/* Rolls to a new segment if the active one is older than segment_ms. */
int vlog_maybe_roll(struct vlog *log, int64_t now_ms) __attribute__((warn_unused_result));

#endif
