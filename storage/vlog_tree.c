/*
 * vlog_tree: keeps a partition's Merkle tree (storage/merkle.h) in step with
 * its log. vlog.c calls four hooks: vl_tree_open at the end of vlog_open,
 * vl_tree_append after each batch is written, vl_tree_sync at each checkpoint
 * and at close, vl_tree_close when the log is freed.
 *
 * Invariant after vl_tree_open (writable log, tree on): leaf i is the i-th
 * batch of the log, for every i < mt_size, and mt_size equals the number of
 * batches, so the tree's last leaf ends at the log's end offset. Recovery
 * makes that true: the tree keeps its fsynced prefix (tree.state), drops
 * leaves past the log's end (a cut tail), checks its last leaf against the
 * batch it names, and appends leaves for batches it does not have, read back
 * from the log. A tree that cannot be rebuilt (retention deleted the start
 * of a log whose tree files are gone) is switched off with a message; the
 * log itself stays usable. A failed tree write makes the tree stale (proofs
 * refused) until the next open rebuilds it; it never fails an append.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "storage/merkle.h"
#include "storage/note.h"
#include "storage/slog.h"
#include "storage/vlog_int.h"
#include "verity/errors.h"
#include "verity/limits.h"

/* tree.state is replaced at a checkpoint once this much is unsynced: bounds
 * what the next open re-reads from the log, at 3 fdatasyncs per period. */
#define VL_TREE_SYNC_BYTES  (64ull << 20)
#define VL_TREE_SYNC_LEAVES 65536u
#define CATCHUP_BUF_MIN     ((size_t)1 << 20)                 /* grown when a batch is larger */
#define CATCHUP_BUF_MAX     ((size_t)VERITY_FRAME_BYTES_HARD) /* above any batch */

/* A read buffer that doubles when the next batch does not fit. */
struct cbuf {
    uint8_t *p;
    size_t cap;
};

static int cbuf_grow(struct cbuf *b)
{
    if (b->cap >= CATCHUP_BUF_MAX)
        return VERITY_ELIMIT;
    size_t cap = b->cap ? b->cap * 2 : CATCHUP_BUF_MIN;
    uint8_t *p = realloc(b->p, cap);
    if (!p)
        return -ENOMEM;
    b->p = p;
    b->cap = cap;
    return 0;
}

/* vlog_read_copy into b, growing it until the first batch fits. */
static int read_into(struct vlog *log, uint64_t off, struct cbuf *b, size_t *len)
{
    for (;;) {
        int rc = vlog_read_copy(log, off, log->end_offset, b->p, b->cap, len);
        if (rc != VERITY_ELIMIT)
            return rc;
        if ((rc = cbuf_grow(b)))
            return rc;
    }
}

struct mtree *vlog_tree(struct vlog *log)
{
    return log->tree;
}

/* Reads the whole batch that starts at base into b (grown as needed). */
static int read_batch(struct vlog *log, uint64_t base, struct cbuf *b, size_t *len)
{
    size_t got = 0;
    int rc = read_into(log, base, b, &got);
    const uint8_t *buf = b->p;
    if (rc)
        return rc;
    struct batch_hdr h;
    if (got < BATCH_HDR_SIZE || batch_hdr_decode(buf, got, &h) || h.length > got ||
        h.base_offset != base)
        return VERITY_ECORRUPT;
    *len = h.length;
    return 0;
}

/* Appends leaves for every batch in [off, end). */
static int catch_up(struct vlog *log, uint64_t off, uint8_t *prev, struct cbuf *b)
{
    int rc;
    while (off < log->end_offset) {
        size_t len = 0;
        if ((rc = read_into(log, off, b, &len)))
            return rc;
        const uint8_t *buf = b->p;
        VERITY_VERIFY(len > 0);
        for (size_t p = 0; p < len;) {
            struct batch_hdr h;
            if ((rc = batch_hdr_decode(buf + p, len - p, &h)))
                return rc;
            VERITY_VERIFY(h.base_offset == off && h.length <= len - p);
            struct mt_leaf l = {.base_offset = h.base_offset, .record_count = h.record_count};
            uint8_t data[MT_LEAF_SIZE];
            memcpy(l.prev_chain, prev, MT_HASH_SIZE);
            memcpy(l.chain, h.chain, MT_HASH_SIZE);
            mt_leaf_encode(&l, data);
            if ((rc = mt_append(log->tree, data)))
                return rc;
            memcpy(prev, h.chain, MT_HASH_SIZE);
            off = h.base_offset + h.record_count;
            p += h.length;
        }
    }
    return 0;
}

/* Drops tree leaves the log no longer has, checks the last one against its
 * batch; *next gets the offset after the last kept leaf. */
static int align_tail(struct vlog *log, uint8_t *prev, struct cbuf *b, uint64_t *next)
{
    struct mtree *t = log->tree;
    uint8_t data[MT_LEAF_SIZE];
    struct mt_leaf l;
    int rc;
    uint64_t n = mt_size(t);
    if (n > 0 && log->end_offset > 0) {
        uint64_t i;
        if ((rc = mt_find_offset(t, n, log->end_offset - 1, &i)) == 0)
            n = i + 1;
        else if (rc == VERITY_EOFFSET)
            n = 0;
        else
            return rc;
    } else {
        n = 0;
    }
    if ((rc = mt_truncate(t, n)))
        return rc;
    if (n == 0)
        return 0;
    if ((rc = mt_leaf_get(t, n - 1, data)) || (rc = mt_leaf_decode(data, sizeof data, &l)))
        return rc;
    uint64_t start = log->segs[0]->base;
    if (l.base_offset >= start) {
        size_t len = 0;
        if ((rc = read_batch(log, l.base_offset, b, &len)))
            return rc;
        if (mt_leaf_check_batch(&l, b->p, len) != 0)
            return mt_truncate(t, 0); /* disagrees with the log: rebuild */
    }
    memcpy(prev, l.chain, MT_HASH_SIZE);
    *next = l.base_offset + l.record_count;
    return 0;
}

void vl_tree_cut(struct vlog *log)
{
    struct mtree *t = log->tree;
    if (!t || mt_stale(t))
        return;
    uint64_t n = mt_size(t), keep = 0;
    int rc = 0;
    if (n > 0 && log->end_offset > 0) {
        uint64_t i;
        if ((rc = mt_find_offset(t, n, log->end_offset - 1, &i)) == 0)
            keep = i + 1;
    }
    if (rc || (keep < n && mt_truncate(t, keep)))
        mt_set_stale(t); /* rebuilt from the log on the next open */
}

int vl_tree_open(struct vlog *log)
{
    int rc;
    if (log->cfg.tree_off)
        return 0;
    if ((rc = mt_open(log->dir, log->io, log->cfg.read_only, &log->tree))) {
        log->tree = NULL;
        /* a read-only log without tree files (older data) simply has no tree */
        return log->cfg.read_only && rc == VERITY_ENOTFOUND ? 0 : rc;
    }
    if (log->cfg.read_only)
        return 0;
    struct cbuf buf = {NULL, 0};
    uint8_t prev[MT_HASH_SIZE] = {0};
    uint64_t next = 0;
    if ((rc = cbuf_grow(&buf)))
        return rc;
    /* Recovery may have read a torn tail into the read-ahead buffer and then
     * written the recovery record over those bytes: drop it before reading. */
    vl_scan_reset(log);
    if ((rc = align_tail(log, prev, &buf, &next)))
        goto out;
    uint64_t start = log->segs[0]->base;
    if (mt_size(log->tree) == 0 && start > 0) {
        fprintf(stderr,
                "verity: %s: Merkle tree missing and the log no longer starts at offset 0; "
                "tree off for this partition\n",
                log->dir);
        mt_close(log->tree);
        log->tree = NULL;
        goto out;
    }
    if (next < start) {
        fprintf(stderr,
                "verity: %s: Merkle tree ends at %llu, before the log's start %llu; "
                "tree off for this partition\n",
                log->dir, (unsigned long long)next, (unsigned long long)start);
        mt_close(log->tree);
        log->tree = NULL;
        goto out;
    }
    if ((rc = catch_up(log, next, prev, &buf)))
        goto out;
    /* Persist what the catch-up added on the tree's background thread: the
     * next open then starts from here, and this one stays fast (the crash
     * test kills a child within 25 ms of starting it). */
    if (mt_size(log->tree) != mt_state_size(log->tree))
        rc = mt_sync_async(log->tree);
out:
    free(buf.p);
    vl_scan_reset(log); /* leave no tree-time read-ahead behind */
    if (rc) {
        mt_close(log->tree);
        log->tree = NULL;
    }
    return rc;
}

void vl_tree_append(struct vlog *log, uint64_t base, uint32_t records, uint32_t len,
                    const uint8_t *prev_chain, const uint8_t *chain)
{
    log->tree_unsynced_bytes += len;
    if (!log->tree || mt_stale(log->tree))
        return;
    struct mt_leaf l = {.base_offset = base, .record_count = records};
    uint8_t data[MT_LEAF_SIZE];
    memcpy(l.prev_chain, prev_chain, MT_HASH_SIZE);
    memcpy(l.chain, chain, MT_HASH_SIZE);
    mt_leaf_encode(&l, data);
    int rc = mt_append(log->tree, data);
    if (rc) {
        mt_set_stale(log->tree);
        slog("error", "merkle_tree_failed", "dir=%s op=write error=%s (proofs off until reopen)",
             log->dir, verity_errname(rc));
    }
}

uint32_t vl_tree_note(struct vlog *log, struct batch_header_kv *kv, char *buf, size_t cap)
{
    char text[NOTE_ORIGIN_MAX + 128];
    uint8_t root[MT_HASH_SIZE];
    if (!log->tree || mt_stale(log->tree) || !log->cfg.signing_key || !log->cfg.tree_origin[0] ||
        !log->cfg.tree_name[0])
        return 0;
    uint64_t n = mt_size(log->tree);
    if (mt_root(log->tree, n, root))
        return 0;
    int tl = note_checkpoint_text(log->cfg.tree_origin, n, root, text, sizeof text);
    if (tl < 0)
        return 0;
    int nl = note_sign(text, (size_t)tl, log->cfg.tree_name, log->cfg.signing_key, buf, cap);
    if (nl < 0)
        return 0;
    kv->key = (const uint8_t *)VL_TREE_NOTE_HEADER;
    kv->key_len = (uint32_t)strlen(VL_TREE_NOTE_HEADER);
    kv->value = (const uint8_t *)buf;
    kv->value_len = nl;
    return 1;
}

int vl_tree_sync(struct vlog *log, bool force)
{
    if (!log->tree || mt_stale(log->tree) || log->cfg.read_only)
        return 0;
    uint64_t behind = mt_size(log->tree) - mt_state_size(log->tree);
    if (behind == 0 ||
        (!force && behind < VL_TREE_SYNC_LEAVES && log->tree_unsynced_bytes < VL_TREE_SYNC_BYTES))
        return 0;
    log->tree_unsynced_bytes = 0;
    /* the periodic one runs off the owner thread: its fdatasyncs may wait
     * for the filesystem journal, which cost appends ~20 % when inline */
    int rc = force ? mt_sync(log->tree) : mt_sync_async(log->tree);
    if (rc) {
        mt_set_stale(log->tree);
        slog("error", "merkle_tree_failed", "dir=%s op=sync error=%s (proofs off until reopen)",
             log->dir, verity_errname(rc));
    }
    return 0;
}

void vl_tree_close(struct vlog *log)
{
    mt_close(log->tree);
    log->tree = NULL;
}
