/*
 * verify_tree: checks a partition's stored Merkle tree (storage/merkle.h)
 * against its segments, for `verity log verify` and the crash test. It
 * reads the segments with the independent reader of verify.c and the tree
 * files read-only, and recomputes everything: leaf i must name batch i
 * (base offset, record count, chain, and prev_chain equal to the previous
 * batch's chain), and every stored hash must equal the hash recomputed from
 * the leaves. A tree shorter than the log is reported (tree_behind), not a
 * finding: a crash between a batch write and its leaf write leaves it so,
 * and the next writable open appends the missing leaves.
 */
#include "storage/verify_tree.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "storage/batch.h"
#include "storage/merkle.h"
#include "storage/verify.h"
#include "verity/errors.h"

static int tree_finding(struct verify_tree_report *o, int code, uint64_t leaf, const char *why)
{
    o->found = true;
    o->code = code;
    o->leaf = leaf;
    snprintf(o->reason, sizeof o->reason, "%s", why);
    return code;
}

/* Recomputes the stored hashes of the first n leaves and compares. */
static int check_hashes(struct mtree *t, uint64_t n, struct verify_tree_report *o)
{
    uint8_t frontier[64][MT_HASH_SIZE], leaf[MT_LEAF_SIZE], h[MT_HASH_SIZE], s[MT_HASH_SIZE];
    int rc;
    for (uint64_t i = 0; i < n; i++) {
        if ((rc = mt_leaf_get(t, i, leaf)))
            return rc;
        mt_leaf_hash(leaf, sizeof leaf, h);
        if ((rc = mt_stored_hash(t, 0, i, s)))
            return rc;
        if (memcmp(h, s, MT_HASH_SIZE) != 0)
            return tree_finding(o, VERITY_ECHAIN, i, "stored leaf hash differs from the leaf data");
        int level = 0;
        for (uint64_t m = i; m & 1; m >>= 1, level++) {
            mt_node_hash(frontier[level], h, h);
            if ((rc = mt_stored_hash(t, level + 1, (i + 1) / (2ull << level) - 1, s)))
                return rc;
            if (memcmp(h, s, MT_HASH_SIZE) != 0)
                return tree_finding(o, VERITY_ECHAIN, i, "stored node hash differs from its children");
        }
        memcpy(frontier[level], h, MT_HASH_SIZE);
    }
    return 0;
}

int verify_tree_dir(const char *dir, struct verify_tree_report *o)
{
    struct verify_segment *segs = NULL;
    struct verify_reader r;
    struct mtree *t = NULL;
    size_t nseg = 0;
    int rc;
    memset(o, 0, sizeof *o);
    if ((rc = mt_open(dir, NULL, true, &t))) {
        if (rc == VERITY_ENOTFOUND)
            return 0; /* no tree files: nothing to check */
        return rc;
    }
    o->present = true;
    o->leaves = mt_size(t);
    if ((rc = verify_reader_init(&r, NULL))) {
        mt_close(t);
        return rc;
    }
    if ((rc = verify_list_segments(dir, &segs, &nseg)))
        goto out;
    uint64_t i = 0;
    bool have_prev = false;
    uint8_t prev[MT_HASH_SIZE];
    /* leaves before the oldest segment (retention) are not checked here */
    if (nseg > 0 && segs[0].base_offset > 0 && o->leaves > 0) {
        if ((rc = mt_find_offset(t, o->leaves, segs[0].base_offset, &i)))
            i = o->leaves; /* tree entirely below the retained log */
    }
    o->first_checked = i;
    for (size_t sidx = 0; sidx < nseg && !o->found; sidx++) {
        if ((rc = verify_reader_open(&r, dir, &segs[sidx])))
            goto out;
        for (;;) {
            const uint8_t *b;
            size_t len;
            uint64_t pos;
            int nrc = verify_reader_next(&r, &b, &len, &pos);
            if (nrc <= 0)
                break; /* end or a damaged tail: verify_log_dir reports those */
            o->batches++;
            struct batch_hdr h;
            if (batch_hdr_decode(b, len, &h))
                break;
            if (i >= o->leaves) {
                i++;
                continue;
            }
            uint8_t data[MT_LEAF_SIZE];
            struct mt_leaf l;
            if ((rc = mt_leaf_get(t, i, data)) || (rc = mt_leaf_decode(data, sizeof data, &l))) {
                tree_finding(o, VERITY_ECORRUPT, i, "leaf data unreadable");
                goto out;
            }
            if (h.base_offset < l.base_offset)
                continue; /* batch below the first checked leaf */
            if (mt_leaf_check_batch(&l, b, len) != 0) {
                rc = tree_finding(o, VERITY_ECHAIN, i, "leaf does not name the batch at its index");
                goto out;
            }
            if (have_prev && memcmp(prev, l.prev_chain, MT_HASH_SIZE) != 0) {
                rc = tree_finding(o, VERITY_ECHAIN, i, "leaf's prev_chain breaks the chain");
                goto out;
            }
            memcpy(prev, l.chain, MT_HASH_SIZE);
            have_prev = true;
            i++;
        }
    }
    o->batches = i;
    if (o->leaves > i) {
        rc = tree_finding(o, VERITY_ECORRUPT, i, "tree has leaves past the end of the log");
        goto out;
    }
    o->tree_behind = i - o->leaves;
    rc = check_hashes(t, o->leaves, o);
out:
    free(segs);
    verify_reader_deinit(&r);
    mt_close(t);
    return rc;
}
