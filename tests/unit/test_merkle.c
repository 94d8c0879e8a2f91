/*
 * Merkle tree and proofs (storage/merkle.h, note.h, tproof.h, proof.h):
 * roots, inclusion and consistency proofs against a naive recursive RFC 6962
 * reference written here; every proof of the small trees verifies and every
 * flipped bit (proof hash, leaf, index, size, root) is rejected; C2SP notes
 * sign, open, and refuse a changed byte; the tree follows the log across
 * reopen, lost state, a torn tree tail and a cut log tail.
 */
#include <CUnit/Basic.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "storage/batch.h"
#include "storage/checkpoint.h"
#include "storage/merkle.h"
#include "storage/note.h"
#include "storage/proof.h"
#include "storage/tproof.h"
#include "storage/verify_tree.h"
#include "storage/vlog.h"
#include "tests/support/tutil.h"
#include "verity/errors.h"

#define H MT_HASH_SIZE

static EVP_PKEY *key_priv;
static char *key_dir;

static int suite_init(void)
{
    char kp[512], pp[512];
    key_dir = tu_tmpdir("merkle-keys");
    snprintf(kp, sizeof kp, "%s/k.key", key_dir);
    snprintf(pp, sizeof pp, "%s/k.pub", key_dir);
    if (ckpt_keygen(kp, pp) || ckpt_load_private(kp, &key_priv))
        return -1;
    return 0;
}

static int suite_clean(void)
{
    EVP_PKEY_free(key_priv);
    tu_rmrf(key_dir);
    free(key_dir);
    return 0;
}

/* ---- naive reference (RFC 6962 section 2.1, recursive, in memory) ------ */

static uint64_t ref_k(uint64_t n)
{
    uint64_t k = 1;
    while (k << 1 < n)
        k <<= 1;
    return k;
}

static void ref_mth(uint8_t (*leaves)[H], uint64_t lo, uint64_t hi, uint8_t out[H])
{
    if (hi == lo) {
        mt_empty_root(out);
        return;
    }
    if (hi - lo == 1) {
        memcpy(out, leaves[lo], H);
        return;
    }
    uint64_t k = ref_k(hi - lo);
    uint8_t l[H], r[H];
    ref_mth(leaves, lo, lo + k, l);
    ref_mth(leaves, lo + k, hi, r);
    mt_node_hash(l, r, out);
}

static void ref_path(uint8_t (*leaves)[H], uint64_t m, uint64_t lo, uint64_t hi, uint8_t (*p)[H],
                     size_t *np)
{
    if (hi - lo <= 1)
        return;
    uint64_t k = ref_k(hi - lo);
    if (m < k) {
        ref_path(leaves, m, lo, lo + k, p, np);
        ref_mth(leaves, lo + k, hi, p[(*np)++]);
    } else {
        ref_path(leaves, m - k, lo + k, hi, p, np);
        ref_mth(leaves, lo, lo + k, p[(*np)++]);
    }
}

static void ref_subproof(uint8_t (*leaves)[H], uint64_t m, uint64_t lo, uint64_t hi, bool b,
                         uint8_t (*p)[H], size_t *np)
{
    uint64_t n = hi - lo;
    if (m == n) {
        if (!b)
            ref_mth(leaves, lo, hi, p[(*np)++]);
        return;
    }
    uint64_t k = ref_k(n);
    if (m <= k) {
        ref_subproof(leaves, m, lo, lo + k, b, p, np);
        ref_mth(leaves, lo + k, hi, p[(*np)++]);
    } else {
        ref_subproof(leaves, m - k, lo + k, hi, false, p, np);
        ref_mth(leaves, lo, lo + k, p[(*np)++]);
    }
}

/* A tree of n synthetic leaves in a fresh directory; leaf hashes in *lh. */
static struct mtree *make_tree(const char *dir, uint64_t n, uint8_t (**lh)[H])
{
    struct mtree *t = NULL;
    CU_ASSERT_EQUAL_FATAL(mt_open(dir, NULL, false, &t), 0);
    *lh = calloc(n + 1, H);
    for (uint64_t i = 0; i < n; i++) {
        struct mt_leaf l = {.base_offset = i * 3, .record_count = 3};
        uint8_t data[MT_LEAF_SIZE];
        memset(l.prev_chain, (int)(i & 0xff), H);
        memset(l.chain, (int)((i + 1) & 0xff), H);
        mt_leaf_encode(&l, data);
        mt_leaf_hash(data, sizeof data, (*lh)[i]);
        CU_ASSERT_EQUAL_FATAL(mt_append(t, data), 0);
    }
    return t;
}

static void test_known_answers(void)
{
    /* RFC 6962 empty tree, and one leaf of empty data */
    uint8_t h[H];
    mt_empty_root(h);
    CU_ASSERT_EQUAL(h[0], 0xe3);
    CU_ASSERT_EQUAL(h[1], 0xb0);
    CU_ASSERT_EQUAL(h[31], 0x55);
    mt_leaf_hash((const uint8_t *)"", 0, h); /* SHA-256(0x00) = 6e340b9c... */
    CU_ASSERT_EQUAL(h[0], 0x6e);
    CU_ASSERT_EQUAL(h[1], 0x34);
    CU_ASSERT_EQUAL(h[2], 0x0b);
    CU_ASSERT_EQUAL(h[3], 0x9c);
    /* Go's stored hash layout */
    CU_ASSERT_EQUAL(mt_stored_index(0, 0), 0);
    CU_ASSERT_EQUAL(mt_stored_index(0, 1), 1);
    CU_ASSERT_EQUAL(mt_stored_index(1, 0), 2);
    CU_ASSERT_EQUAL(mt_stored_index(0, 2), 3);
    CU_ASSERT_EQUAL(mt_stored_count(2), 3);
    CU_ASSERT_EQUAL(mt_stored_count(4), 7);
}

/* Roots and every inclusion proof equal the reference, and verify. */
static void test_roots_and_inclusion(void)
{
    char *dir = tu_tmpdir("merkle-incl");
    uint8_t(*lh)[H];
    uint64_t n = tu_quick() ? 140 : 300;
    struct mtree *t = make_tree(dir, n, &lh);
    uint8_t(*path)[H] = malloc(MT_PROOF_MAX * H), (*ref)[H] = malloc(MT_PROOF_MAX * H);
    for (uint64_t size = 0; size <= n; size++) {
        uint8_t root[H], rroot[H];
        CU_ASSERT_EQUAL_FATAL(mt_root(t, size, root), 0);
        ref_mth(lh, 0, size, rroot);
        CU_ASSERT_EQUAL_FATAL(memcmp(root, rroot, H), 0);
        if (size > 40 && size % 17 != 0 && size != n && size != 256 && size != 257 && size != 255)
            continue;
        for (uint64_t i = 0; i < size; i++) {
            size_t np = 0, rn = 0;
            CU_ASSERT_EQUAL_FATAL(mt_prove_inclusion(t, i, size, path, &np), 0);
            ref_path(lh, i, 0, size, ref, &rn);
            CU_ASSERT_EQUAL_FATAL(np, rn);
            CU_ASSERT_EQUAL_FATAL(memcmp(path, ref, np * H), 0);
            CU_ASSERT_EQUAL_FATAL(
                mt_verify_inclusion(lh[i], i, size, (const uint8_t(*)[H])path, np, root), 0);
        }
    }
    free(path);
    free(ref);
    free(lh);
    /* the background state sync: after close (which joins it) the state
     * names the whole tree, so a reopen keeps every leaf */
    CU_ASSERT_EQUAL(mt_sync_async(t), 0);
    mt_close(t);
    CU_ASSERT_EQUAL_FATAL(mt_open(dir, NULL, false, &t), 0);
    CU_ASSERT_EQUAL(mt_size(t), n);
    CU_ASSERT_EQUAL(mt_state_size(t), n);
    mt_close(t);
    tu_rmrf(dir);
    free(dir);
}

static void test_consistency(void)
{
    char *dir = tu_tmpdir("merkle-cons");
    uint8_t(*lh)[H];
    uint64_t n = tu_quick() ? 70 : 140;
    struct mtree *t = make_tree(dir, n, &lh);
    uint8_t(*path)[H] = malloc(MT_PROOF_MAX * H), (*ref)[H] = malloc(MT_PROOF_MAX * H);
    for (uint64_t m = 0; m <= n; m++) {
        for (uint64_t size = m; size <= n; size++) {
            uint8_t r1[H], r2[H];
            size_t np = 0, rn = 0;
            CU_ASSERT_EQUAL_FATAL(mt_root(t, m, r1), 0);
            CU_ASSERT_EQUAL_FATAL(mt_root(t, size, r2), 0);
            CU_ASSERT_EQUAL_FATAL(mt_prove_consistency(t, m, size, path, &np), 0);
            if (m > 0 && m < size) {
                ref_subproof(lh, m, 0, size, true, ref, &rn);
                CU_ASSERT_EQUAL_FATAL(np, rn);
                CU_ASSERT_EQUAL_FATAL(memcmp(path, ref, np * H), 0);
            }
            CU_ASSERT_EQUAL_FATAL(
                mt_verify_consistency(m, size, r1, r2, (const uint8_t(*)[H])path, np), 0);
        }
    }
    free(path);
    free(ref);
    free(lh);
    mt_close(t);
    tu_rmrf(dir);
    free(dir);
}

/* Every single-bit change of a proof hash, the leaf, the root or the index
 * is rejected by the bare verifiers. */
static void test_tamper_rejected(void)
{
    char *dir = tu_tmpdir("merkle-tamper");
    uint8_t(*lh)[H];
    static const uint64_t sizes[] = {1, 2, 3, 7, 255, 256, 257};
    struct mtree *t = make_tree(dir, 257, &lh);
    uint8_t path[MT_PROOF_MAX][H];
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
        uint64_t n = sizes[s];
        uint8_t root[H];
        CU_ASSERT_EQUAL_FATAL(mt_root(t, n, root), 0);
        for (uint64_t i = 0; i < n; i += (n > 20 ? 13 : 1)) {
            size_t np = 0;
            CU_ASSERT_EQUAL_FATAL(mt_prove_inclusion(t, i, n, path, &np), 0);
            const uint8_t(*cp)[H] = (const uint8_t(*)[H])path;
            for (size_t k = 0; k < np; k++) {
                path[k][k % H] ^= 1;
                CU_ASSERT_NOT_EQUAL(mt_verify_inclusion(lh[i], i, n, cp, np, root), 0);
                path[k][k % H] ^= 1;
            }
            uint8_t bad[H];
            memcpy(bad, lh[i], H);
            bad[5] ^= 0x80;
            CU_ASSERT_NOT_EQUAL(mt_verify_inclusion(bad, i, n, cp, np, root), 0);
            memcpy(bad, root, H);
            bad[31] ^= 1;
            CU_ASSERT_NOT_EQUAL(mt_verify_inclusion(lh[i], i, n, cp, np, bad), 0);
            CU_ASSERT_NOT_EQUAL(mt_verify_inclusion(lh[i], i ^ 1, n, cp, np, root), 0);
            /* The tree size alone is not always bound by a bare RFC 6962
             * path (sizes 3 and 4 give leaf 0 the same path shape): it is
             * bound by the signed checkpoint, tested in test_signed_tamper. */
            if (np > 0)
                CU_ASSERT_NOT_EQUAL(mt_verify_inclusion(lh[i], i, n, cp, np - 1, root), 0);
        }
        for (uint64_t m = 1; m < n; m += (n > 20 ? 11 : 1)) {
            uint8_t r1[H];
            size_t np = 0;
            CU_ASSERT_EQUAL_FATAL(mt_root(t, m, r1), 0);
            CU_ASSERT_EQUAL_FATAL(mt_prove_consistency(t, m, n, path, &np), 0);
            const uint8_t(*cp)[H] = (const uint8_t(*)[H])path;
            CU_ASSERT_EQUAL(mt_verify_consistency(m, n, r1, root, cp, np), 0);
            for (size_t k = 0; k < np; k++) {
                path[k][3] ^= 4;
                CU_ASSERT_NOT_EQUAL(mt_verify_consistency(m, n, r1, root, cp, np), 0);
                path[k][3] ^= 4;
            }
            uint8_t bad[H];
            memcpy(bad, r1, H);
            bad[0] ^= 1;
            CU_ASSERT_NOT_EQUAL(mt_verify_consistency(m, n, bad, root, cp, np), 0);
            memcpy(bad, root, H);
            bad[0] ^= 1;
            CU_ASSERT_NOT_EQUAL(mt_verify_consistency(m, n, r1, bad, cp, np), 0);
            CU_ASSERT_NOT_EQUAL(mt_verify_consistency(m + 1, n, r1, root, cp, np), 0);
        }
    }
    free(lh);
    mt_close(t);
    tu_rmrf(dir);
    free(dir);
}

static void test_notes(void)
{
    uint8_t root[H];
    char text[256], note[1024], vkey[NOTE_VKEY_MAX + 1], origin[NOTE_ORIGIN_MAX + 1];
    struct note_vkey k, other;
    size_t tlen = 0;
    uint64_t size = 0;
    mt_empty_root(root);
    int tl = note_checkpoint_text("verity.example/local/orders/3", 42, root, text, sizeof text);
    CU_ASSERT_FATAL(tl > 0);
    int nl = note_sign(text, (size_t)tl, "verity.example/local", key_priv, note, sizeof note);
    CU_ASSERT_FATAL(nl > tl);
    CU_ASSERT_EQUAL_FATAL(
        note_vkey_format("verity.example/local", NOTE_TYPE_ED25519, key_priv, vkey, sizeof vkey),
        0);
    CU_ASSERT_EQUAL_FATAL(note_vkey_parse(vkey, &k), 0);
    CU_ASSERT_EQUAL(note_open(note, (size_t)nl, &k, 1, &tlen, NULL), 0);
    CU_ASSERT_EQUAL(tlen, (size_t)tl);
    CU_ASSERT_EQUAL(note_checkpoint_parse(note, tlen, origin, sizeof origin, &size, root), 0);
    CU_ASSERT_EQUAL(size, 42);
    CU_ASSERT_STRING_EQUAL(origin, "verity.example/local/orders/3");
    /* every changed byte of the text or signature is refused */
    for (int i = 0; i < nl - 1; i++) {
        if (note[i] == '\n')
            continue;
        note[i] ^= 0x01;
        CU_ASSERT_NOT_EQUAL(note_open(note, (size_t)nl, &k, 1, &tlen, NULL), 0);
        note[i] ^= 0x01;
    }
    /* a key with another name is unknown: nothing verifies */
    other = k;
    strcpy(other.name, "verity.example/other");
    CU_ASSERT_EQUAL(note_open(note, (size_t)nl, &other, 1, &tlen, NULL), VERITY_ESIGNATURE);
    /* key id mismatch in the vkey string is refused */
    vkey[strlen("verity.example/local+")] ^= 1;
    CU_ASSERT_NOT_EQUAL(note_vkey_parse(vkey, &other), 0);
    vkey[strlen("verity.example/local+")] ^= 1;
    /* cosignature: appended line verifies with the cosigner key */
    char line[512], vk2[NOTE_VKEY_MAX + 1], both[2048];
    struct note_vkey ck;
    int ll = note_cosign_line(text, (size_t)tl, "witness.example/w1", key_priv, 1700000000, line,
                              sizeof line);
    CU_ASSERT_FATAL(ll > 0);
    CU_ASSERT_EQUAL_FATAL(
        note_vkey_format("witness.example/w1", NOTE_TYPE_COSIG, key_priv, vk2, sizeof vk2), 0);
    CU_ASSERT_EQUAL_FATAL(note_vkey_parse(vk2, &ck), 0);
    memcpy(both, note, (size_t)nl);
    memcpy(both + nl, line, (size_t)ll);
    uint32_t mask = 0;
    struct note_vkey ks[2];
    CU_ASSERT_EQUAL_FATAL(note_vkey_parse(vkey, &ks[0]), 0);
    ks[1] = ck;
    CU_ASSERT_EQUAL(note_open(both, (size_t)(nl + ll), ks, 2, &tlen, &mask), 0);
    CU_ASSERT_EQUAL(mask, 3u);
    both[nl + ll - 5] ^= 1;
    CU_ASSERT_NOT_EQUAL(note_open(both, (size_t)(nl + ll), ks, 2, &tlen, &mask), 0);
    /* malformed notes */
    CU_ASSERT_EQUAL(note_open("abc\n", 4, &k, 1, &tlen, NULL), VERITY_ECORRUPT);
    CU_ASSERT_EQUAL(note_open("a\n\n\xe2\x80\x94 x\n", 10, &k, 1, &tlen, NULL), VERITY_ECORRUPT);
}

static void test_tproof_roundtrip(void)
{
    struct tproof p = {0}, q;
    char *text = NULL;
    size_t len = 0;
    uint8_t extra[100];
    memset(extra, 7, sizeof extra);
    p.index = 8214;
    p.npath = 3;
    memset(p.path, 9, sizeof p.path);
    p.extra = extra;
    p.extra_len = sizeof extra;
    p.note = "o\n1\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n\n\xe2\x80\x94 o AAAA\n";
    p.note_len = strlen(p.note);
    CU_ASSERT_EQUAL_FATAL(tproof_format(&p, &text, &len), 0);
    CU_ASSERT_EQUAL_FATAL(tproof_parse(text, len, &q), 0);
    CU_ASSERT_EQUAL(q.index, 8214);
    CU_ASSERT_EQUAL(q.npath, 3);
    CU_ASSERT_EQUAL(q.extra_len, sizeof extra);
    CU_ASSERT_EQUAL(memcmp(q.extra, extra, sizeof extra), 0);
    CU_ASSERT_EQUAL(q.note_len, p.note_len);
    tproof_deinit(&q);
    /* index with a leading zero, bad header: refused */
    text[strlen(TPROOF_HEADER) - 1] = 'X';
    CU_ASSERT_EQUAL(tproof_parse(text, len, &q), VERITY_ECORRUPT);
    free(text);
    struct tproof_witness_req w;
    const char *body = "old 0\n\no\n1\nx\n";
    CU_ASSERT_EQUAL(tproof_witness_parse(body, strlen(body), &w), 0);
    CU_ASSERT_EQUAL(w.old_size, 0);
    CU_ASSERT_EQUAL(tproof_witness_parse("old 01\n\nx", 9, &w), VERITY_ECORRUPT);
}

/* ---- the tree follows the log --------------------------------------------- */

static void append_batches(struct vlog *log, struct batch_builder *b, uint32_t nb, uint64_t *id)
{
    for (uint32_t i = 0; i < nb; i++) {
        CU_ASSERT_EQUAL_FATAL(tu_build_batch(b, "m", *id, 1 + (uint32_t)(*id % 3), 20, 1000), 0);
        CU_ASSERT_EQUAL_FATAL(vlog_append(log, b->buf, b->len, 1000, NULL), 0);
        *id += 1 + *id % 3;
    }
}

/* Walks the log and checks leaf i names batch i. Returns the batch count. */
static uint64_t check_tree_matches_log(struct vlog *log)
{
    static uint8_t buf[1 << 20];
    struct mtree *t = vlog_tree(log);
    struct vlog_info info;
    uint64_t off = 0, i = 0;
    CU_ASSERT_PTR_NOT_NULL_FATAL(t);
    vlog_get_info(log, &info);
    while (off < info.end_offset) {
        size_t len = 0;
        CU_ASSERT_EQUAL_FATAL(vlog_read_copy(log, off, info.end_offset, buf, sizeof buf, &len), 0);
        for (size_t p = 0; p < len;) {
            struct batch_hdr h;
            uint8_t data[MT_LEAF_SIZE];
            struct mt_leaf l;
            CU_ASSERT_EQUAL_FATAL(batch_hdr_decode(buf + p, len - p, &h), 0);
            CU_ASSERT_EQUAL_FATAL(mt_leaf_get(t, i, data), 0);
            CU_ASSERT_EQUAL_FATAL(mt_leaf_decode(data, sizeof data, &l), 0);
            CU_ASSERT_EQUAL_FATAL(mt_leaf_check_batch(&l, buf + p, h.length), 0);
            off = h.base_offset + h.record_count;
            p += h.length;
            i++;
        }
    }
    CU_ASSERT_EQUAL(mt_size(t), i);
    return i;
}

static void test_tree_follows_log(void)
{
    char *dir = tu_tmpdir("merkle-vlog");
    char path[600];
    struct vlog_config cfg;
    struct vlog *log = NULL;
    struct batch_builder b;
    uint64_t id = 0, bad = 0;
    uint8_t r1[H], r2[H];
    CU_ASSERT_EQUAL_FATAL(batch_builder_init(&b, 1 << 16), 0);
    vlog_config_default(&cfg);
    cfg.durability = VLOG_DURABILITY_OS;
    cfg.signing_key = key_priv;
    cfg.checkpoint_records = 50;
    cfg.segment_bytes = 8192; /* several segments */
    snprintf(cfg.tree_name, sizeof cfg.tree_name, "verity.example/t");
    snprintf(cfg.tree_origin, sizeof cfg.tree_origin, "verity.example/t/orders/3");
    CU_ASSERT_EQUAL_FATAL(vlog_open(dir, &cfg, 1000, &log, &bad), 0);
    append_batches(log, &b, 300, &id);
    uint64_t n = check_tree_matches_log(log);
    CU_ASSERT(n > 300); /* checkpoint batches are leaves too */
    CU_ASSERT_EQUAL(mt_root(vlog_tree(log), n, r1), 0);
    CU_ASSERT_EQUAL_FATAL(vlog_close(log, 2000), 0);
    /* checkpoints carry signed tree notes that match the tree */
    struct verify_tree_report vt;
    CU_ASSERT_EQUAL(verify_tree_dir(dir, &vt), 0);
    CU_ASSERT(vt.notes_checked >= 6);
    CU_ASSERT_EQUAL(vt.leaves, n + 1);
    CU_ASSERT_EQUAL(vt.tree_behind, 0);
    /* a changed stored hash is a finding */
    snprintf(path, sizeof path, "%s/tree.hashes", dir);
    CU_ASSERT_EQUAL(tu_flip_bit(path, 32 * 9 + 3, 1), 0);
    CU_ASSERT_NOT_EQUAL(verify_tree_dir(dir, &vt), 0);
    CU_ASSERT_TRUE(vt.found);
    CU_ASSERT_EQUAL(tu_flip_bit(path, 32 * 9 + 3, 1), 0);

    /* reopen: same tree plus the close checkpoint's leaf */
    CU_ASSERT_EQUAL_FATAL(vlog_open(dir, &cfg, 3000, &log, &bad), 0);
    uint64_t n2 = check_tree_matches_log(log);
    CU_ASSERT_EQUAL(mt_root(vlog_tree(log), n2, r2), 0);
    vlog_abandon(log);

    /* lost state: rebuilt from the log, same root */
    snprintf(path, sizeof path, "%s/tree.state", dir);
    CU_ASSERT_EQUAL(unlink(path), 0);
    CU_ASSERT_EQUAL_FATAL(vlog_open(dir, &cfg, 3000, &log, &bad), 0);
    CU_ASSERT_EQUAL(check_tree_matches_log(log), n2);
    CU_ASSERT_EQUAL(mt_root(vlog_tree(log), n2, r1), 0);
    CU_ASSERT_EQUAL(memcmp(r1, r2, H), 0);
    vlog_abandon(log);

    /* garbage past the synced size and a torn leaf: cut and recomputed */
    snprintf(path, sizeof path, "%s/tree.leaves", dir);
    int fd = open(path, O_WRONLY | O_APPEND);
    CU_ASSERT_FATAL(fd >= 0);
    CU_ASSERT_EQUAL(write(fd, "garbage-garbage-garbage", 23), 23);
    close(fd);
    CU_ASSERT_EQUAL_FATAL(vlog_open(dir, &cfg, 3000, &log, &bad), 0);
    CU_ASSERT_EQUAL(check_tree_matches_log(log), n2);
    CU_ASSERT_EQUAL(mt_root(vlog_tree(log), n2, r1), 0);
    CU_ASSERT_EQUAL(memcmp(r1, r2, H), 0);
    /* the proof layer signs only what is durable, and its proofs verify */
    struct proof_signer s;
    json_t *j = NULL, *sum = NULL;
    char vkey[NOTE_VKEY_MAX + 1];
    struct note_vkey k;
    CU_ASSERT_EQUAL_FATAL(proof_signer_init(&s, key_priv, "verity.example/t", "orders", 3), 0);
    CU_ASSERT_EQUAL_FATAL(proof_inclusion(log, &s, 17, 0, true, &j), 0);
    CU_ASSERT_EQUAL_FATAL(note_vkey_format("verity.example/t", 1, key_priv, vkey, sizeof vkey), 0);
    CU_ASSERT_EQUAL_FATAL(note_vkey_parse(vkey, &k), 0);
    char *txt = json_dumps(j, 0);
    CU_ASSERT_EQUAL(proof_verify_text(txt, strlen(txt), &k, 1, &sum), 0);
    json_decref(sum);
    const char *tl = json_string_value(json_object_get(j, "tlog_proof"));
    CU_ASSERT_EQUAL(proof_verify_text(tl, strlen(tl), &k, 1, &sum), 0);
    CU_ASSERT(json_is_true(json_object_get(sum, "batch_checked")));
    json_decref(sum);
    free(txt);
    json_decref(j);
    CU_ASSERT_EQUAL_FATAL(proof_consistency(log, &s, 5, 0, &j), 0);
    txt = json_dumps(j, 0);
    CU_ASSERT_EQUAL(proof_verify_text(txt, strlen(txt), &k, 1, &sum), 0);
    json_decref(sum);
    free(txt);
    json_decref(j);
    vlog_abandon(log);

    /* tree off: no files, appends work */
    char *dir2 = tu_tmpdir("merkle-off");
    cfg.tree_off = true;
    CU_ASSERT_EQUAL_FATAL(vlog_open(dir2, &cfg, 1000, &log, &bad), 0);
    append_batches(log, &b, 5, &id);
    CU_ASSERT_PTR_NULL(vlog_tree(log));
    CU_ASSERT_EQUAL(vlog_close(log, 2000), 0);
    snprintf(path, sizeof path, "%s/tree.leaves", dir2);
    CU_ASSERT_NOT_EQUAL(access(path, F_OK), 0);
    batch_builder_deinit(&b);
    tu_rmrf(dir);
    tu_rmrf(dir2);
    free(dir);
    free(dir2);
}

/* mt_find_offset (the in-memory run index plus the search within a run)
 * against a linear scan, for every offset, across run boundaries, after a
 * truncation, after a reopen, and for a read-only open. */
static void find_all(struct mtree *t, uint64_t n, const uint64_t *base, const uint32_t *cnt)
{
    uint64_t end = n ? base[n - 1] + cnt[n - 1] : 0, idx = 0;
    for (uint64_t o = 0; o < end + 3; o++) {
        uint64_t want = UINT64_MAX;
        for (uint64_t i = 0; i < n; i++)
            if (base[i] <= o && o < base[i] + cnt[i])
                want = i;
        int rc = mt_find_offset(t, n, o, &idx);
        if (want == UINT64_MAX) {
            CU_ASSERT_EQUAL(rc, VERITY_EOFFSET);
        } else {
            CU_ASSERT_EQUAL(rc, 0);
            CU_ASSERT_EQUAL(idx, want);
        }
    }
}

static void test_find_offset(void)
{
    char *dir = tu_tmpdir("merkle-find");
    enum { N = 1100 };
    static uint64_t base[N];
    static uint32_t cnt[N];
    struct mtree *t = NULL;
    CU_ASSERT_EQUAL_FATAL(mt_open(dir, NULL, false, &t), 0);
    uint64_t off = 0;
    for (uint64_t i = 0; i < N; i++) {
        struct mt_leaf l = {.base_offset = off, .record_count = (uint32_t)(1 + (i * 7) % 5)};
        uint8_t data[MT_LEAF_SIZE];
        base[i] = off;
        cnt[i] = l.record_count;
        off += l.record_count;
        mt_leaf_encode(&l, data);
        CU_ASSERT_EQUAL_FATAL(mt_append(t, data), 0);
    }
    static const uint64_t sizes[] = {N, 1, 255, 256, 257, 513, 1024};
    for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++)
        find_all(t, sizes[k], base, cnt);
    CU_ASSERT_EQUAL(mt_truncate(t, 600), 0);
    find_all(t, 600, base, cnt);
    CU_ASSERT_EQUAL(mt_truncate(t, 512), 0);
    find_all(t, 512, base, cnt);
    uint64_t idx;
    CU_ASSERT_EQUAL(mt_find_offset(t, 513, base[512], &idx), VERITY_EOFFSET); /* beyond size */
    CU_ASSERT_EQUAL(mt_sync(t), 0);
    mt_close(t);
    CU_ASSERT_EQUAL_FATAL(mt_open(dir, NULL, true, &t), 0);
    CU_ASSERT_EQUAL(mt_size(t), 512);
    find_all(t, 512, base, cnt);
    mt_close(t);
    tu_rmrf(dir);
    free(dir);
}

/* The witness push's readers of add-checkpoint answers (tproof.h). */
static void test_witness_answers(void)
{
    uint8_t root[H];
    char text[256], note[1024], line[512], vkw[NOTE_VKEY_MAX + 1], body[2048];
    struct note_vkey wk;
    memset(root, 7, H);
    int tl = note_checkpoint_text("verity.example/t/orders/0", 12, root, text, sizeof text);
    CU_ASSERT_FATAL(tl > 0);
    int nl = note_sign(text, (size_t)tl, "verity.example/t", key_priv, note, sizeof note);
    CU_ASSERT_FATAL(nl > 0);
    int ll = note_cosign_line(text, (size_t)tl, "witness.example/w1", key_priv, 1700000000, line,
                              sizeof line);
    CU_ASSERT_FATAL(ll > 0);
    CU_ASSERT_EQUAL_FATAL(
        note_vkey_format("witness.example/w1", NOTE_TYPE_COSIG, key_priv, vkw, sizeof vkw), 0);
    CU_ASSERT_EQUAL_FATAL(note_vkey_parse(vkw, &wk), 0);
    CU_ASSERT_EQUAL(tproof_cosig_check(note, (size_t)nl, line, (size_t)ll, &wk), 0);
    /* two lines, the second from another witness: still fine */
    snprintf(body, sizeof body, "%s%s", line, line);
    char *other = strstr(body + ll, "w1");
    other[1] = '9';
    CU_ASSERT_EQUAL(tproof_cosig_check(note, (size_t)nl, body, strlen(body), &wk), 0);
    /* a changed signature byte, another note, no line of that key: refused */
    snprintf(body, sizeof body, "%s", line);
    body[ll - 5] = body[ll - 5] == 'A' ? 'B' : 'A';
    CU_ASSERT_EQUAL(tproof_cosig_check(note, (size_t)nl, body, (size_t)ll, &wk), VERITY_ESIGNATURE);
    char note2[1024];
    root[0] ^= 1;
    tl = note_checkpoint_text("verity.example/t/orders/0", 12, root, text, sizeof text);
    int nl2 = note_sign(text, (size_t)tl, "verity.example/t", key_priv, note2, sizeof note2);
    CU_ASSERT_EQUAL(tproof_cosig_check(note2, (size_t)nl2, line, (size_t)ll, &wk),
                    VERITY_ESIGNATURE);
    snprintf(body, sizeof body, "%s", line);
    strstr(body, "w1")[1] = '9';
    CU_ASSERT_EQUAL(tproof_cosig_check(note, (size_t)nl, body, (size_t)ll, &wk), VERITY_ESIGNATURE);
    /* not signature lines */
    static const char *bad[] = {"", "\n", "hello\n", "\xe2\x80\x94 x", "\xe2\x80\x94 \n",
                                "text\n\n\xe2\x80\x94 witness.example/w1 AAAA\n"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        CU_ASSERT_EQUAL(tproof_cosig_check(note, (size_t)nl, bad[i], strlen(bad[i]), &wk),
                        VERITY_ECORRUPT);
    snprintf(body, sizeof body, "%s", line);
    body[3] = '\0';
    CU_ASSERT_EQUAL(tproof_cosig_check(note, (size_t)nl, body, (size_t)ll, &wk), VERITY_ECORRUPT);
    /* 409 bodies */
    uint64_t v = 0;
    CU_ASSERT_EQUAL(tproof_size_parse("77\n", 3, &v), 0);
    CU_ASSERT_EQUAL(v, 77);
    CU_ASSERT_EQUAL(tproof_size_parse("0", 1, &v), 0);
    CU_ASSERT_EQUAL(v, 0);
    CU_ASSERT_EQUAL(tproof_size_parse("18446744073709551615\n", 21, &v), 0);
    CU_ASSERT_EQUAL(v, UINT64_MAX);
    static const char *badsz[] = {"", "\n", "-1\n", "077\n", "7 \n", "18446744073709551616",
                                  "12\n\n", "x"};
    for (size_t i = 0; i < sizeof badsz / sizeof badsz[0]; i++)
        CU_ASSERT_EQUAL(tproof_size_parse(badsz[i], strlen(badsz[i]), &v), VERITY_ECORRUPT);
}

int main(void)
{
    static const struct {
        const char *name;
        void (*fn)(void);
    } tests[] = {
        {"known answers and stored layout", test_known_answers},
        {"roots and inclusion proofs equal RFC 6962 reference", test_roots_and_inclusion},
        {"consistency proofs for every size pair", test_consistency},
        {"flipped bits rejected", test_tamper_rejected},
        {"C2SP notes, vkeys, cosignatures", test_notes},
        {"tlog-proof and witness body round trip", test_tproof_roundtrip},
        {"tree follows the log: reopen, lost state, torn tail", test_tree_follows_log},
        {"leaf of an offset: run index, truncation, reopen", test_find_offset},
        {"witness answers: cosignature lines, 409 sizes", test_witness_answers},
    };
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    CU_pSuite s = CU_add_suite("merkle", suite_init, suite_clean);
    for (size_t i = 0; s && i < sizeof tests / sizeof tests[0]; i++)
        CU_add_test(s, tests[i].name, tests[i].fn);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    unsigned fails = CU_get_number_of_failures() + CU_get_number_of_suites_failed();
    CU_cleanup_registry();
    return fails ? 1 : 0;
}
