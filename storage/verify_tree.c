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
#include "storage/checkpoint.h"
#include "storage/merkle.h"
#include "storage/note.h"
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

/* A signed checkpoint batch may carry the tree's C2SP note (record header
 * verity.tree.checkpoint): its signature must verify with the checkpoint's
 * own key, its size must be the batch's leaf index (the batches before it)
 * and its root the tree's root at that size. Returns 0 or a finding. */
static int check_note(struct mtree *t, const uint8_t *b, size_t len, uint64_t index,
                      struct verify_tree_report *o)
{
    struct batch_iter it;
    struct batch_record rec;
    struct batch_header_kv kv;
    size_t pos = 0;
    batch_iter_init(&it, b, len);
    if (batch_iter_next(&it, &rec) != 1 ||
        rec.key_len != (int32_t)strlen(BATCH_CONTROL_CHECKPOINT) ||
        memcmp(rec.key, BATCH_CONTROL_CHECKPOINT, (size_t)rec.key_len) != 0 ||
        rec.value_len != CKPT_PAYLOAD_SIZE)
        return 0;
    while (batch_header_next(&rec, &pos, &kv) == 1) {
        static const char hname[] = "verity.tree.checkpoint";
        if (kv.key_len != sizeof hname - 1 || memcmp(kv.key, hname, kv.key_len) != 0 ||
            kv.value_len <= 0)
            continue;
        const char *note = (const char *)kv.value;
        size_t nlen = (size_t)kv.value_len, tlen = 0;
        struct note_vkey k = {.type = NOTE_TYPE_ED25519};
        /* the signer's name from the first signature line, its key from the payload */
        const char *sig = NULL;
        for (size_t i = 1; i + 4 < nlen; i++)
            if (note[i - 1] == '\n' && note[i] == '\n') {
                sig = note + i + 1;
                break;
            }
        const char *sp = sig ? memchr(sig + 4, ' ', (size_t)(note + nlen - sig - 4)) : NULL;
        if (!sig || !sp || sp - sig - 4 <= 0 || sp - sig - 4 > NOTE_NAME_MAX)
            return tree_finding(o, VERITY_ECORRUPT, index, "malformed tree note in a checkpoint");
        memcpy(k.name, sig + 4, (size_t)(sp - sig - 4));
        memcpy(k.pub, rec.value + 64, 32);
        k.id = note_key_id(k.name, NOTE_TYPE_ED25519, k.pub);
        char origin[NOTE_ORIGIN_MAX + 1];
        uint64_t size = 0;
        uint8_t root[MT_HASH_SIZE], want[MT_HASH_SIZE];
        if (note_open(note, nlen, &k, 1, &tlen, NULL) ||
            note_checkpoint_parse(note, tlen, origin, sizeof origin, &size, root))
            return tree_finding(o, VERITY_ESIGNATURE, index,
                                "tree note in a checkpoint does not verify with its key");
        if (size != index)
            return tree_finding(o, VERITY_ECHAIN, index,
                                "tree note's size is not the batches before its checkpoint");
        if (mt_root(t, size, want) || memcmp(root, want, MT_HASH_SIZE) != 0)
            return tree_finding(o, VERITY_ECHAIN, index, "tree note's root is not the tree's root");
        o->notes_checked++;
    }
    return 0;
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
                return tree_finding(o, VERITY_ECHAIN, i,
                                    "stored node hash differs from its children");
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
            if ((h.attributes & BATCH_ATTR_CONTROL) && (rc = check_note(t, b, len, i, o)))
                goto out;
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
