/*
 * proof: signed checkpoints, inclusion and consistency proofs from a log's
 * Merkle tree, and their offline check (formats in proof.h, tproof.h,
 * note.h). Every proof carries everything a verifier needs to recompute it:
 * leaf data, leaf hash, index, sizes, hashes and the signed checkpoint.
 */
#include "storage/proof.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "storage/batch.h"
#include "storage/merkle.h"
#include "storage/tproof.h"
#include "verity/errors.h"
#include "verity/verify.h"

int proof_signer_init(struct proof_signer *s, EVP_PKEY *key, const char *name, const char *topic,
                      uint32_t partition)
{
    s->key = key;
    s->name = name;
    if (!note_name_ok(name))
        return VERITY_EINVAL;
    int n = snprintf(s->origin, sizeof s->origin, "%s/%s/%" PRIu32, name, topic, partition);
    if (n <= 0 || (size_t)n >= sizeof s->origin || strchr(s->origin, '\n'))
        return VERITY_EINVAL;
    return 0;
}

static struct mtree *usable_tree(struct vlog *log)
{
    struct mtree *t = vlog_tree(log);
    return t && !mt_stale(t) ? t : NULL;
}

int proof_durable_size(struct vlog *log, uint64_t *n)
{
    struct mtree *t = usable_tree(log);
    if (!t)
        return VERITY_EUNSUPPORTED;
    uint64_t size = mt_size(t);
    uint64_t durable = vlog_durable_end(log);
    struct vlog_info info;
    vlog_get_info(log, &info);
    if (durable >= info.end_offset || size == 0) {
        *n = size;
        return 0;
    }
    if (durable == 0) {
        *n = 0;
        return 0;
    }
    uint64_t i;
    int rc = mt_find_offset(t, size, durable - 1, &i);
    if (rc)
        return rc;
    *n = i + 1;
    return 0;
}

/* Signed notes recently made, by (key, name, origin, size): Ed25519 is
 * deterministic, so a cached note is the same bytes a new signature would
 * give, and every proof at the same tree size (the common case: many
 * proofs between two appends) skips the ~60-100 us signature. Shared by all
 * threads under a mutex; a few KB. */
#define NOTE_CACHE_SLOTS 16
struct note_cache_slot {
    bool used;
    uint64_t size;
    uint8_t pub[32];
    char origin[NOTE_ORIGIN_MAX + 1];
    char name[NOTE_NAME_MAX + 1];
    int len;
    char note[PROOF_CHECKPOINT_MAX];
};
static struct note_cache_slot note_cache[NOTE_CACHE_SLOTS];
static unsigned note_cache_next;
static pthread_mutex_t note_cache_mu = PTHREAD_MUTEX_INITIALIZER;

static struct note_cache_slot *note_cache_find(const uint8_t pub[32], const char *name,
                                               const char *origin, uint64_t n)
{
    for (size_t i = 0; i < NOTE_CACHE_SLOTS; i++) {
        struct note_cache_slot *c = &note_cache[i];
        if (c->used && c->size == n && memcmp(c->pub, pub, 32) == 0 &&
            strcmp(c->origin, origin) == 0 && strcmp(c->name, name) == 0)
            return c;
    }
    return NULL;
}

int proof_checkpoint(struct vlog *log, const struct proof_signer *s, uint64_t n, char *out,
                     size_t cap)
{
    struct mtree *t = usable_tree(log);
    uint8_t root[MT_HASH_SIZE], pub[32];
    char text[NOTE_ORIGIN_MAX + 128];
    int rc;
    if (!t)
        return VERITY_EUNSUPPORTED;
    if (!s->key)
        return VERITY_EINVAL;
    if ((rc = mt_root(t, n, root)))
        return rc;
    bool cacheable = note_raw_public(s->key, pub) == 0 && strlen(s->name) <= NOTE_NAME_MAX;
    if (cacheable) {
        pthread_mutex_lock(&note_cache_mu);
        struct note_cache_slot *c = note_cache_find(pub, s->name, s->origin, n);
        int len = c && (size_t)c->len < cap ? c->len : -1;
        /* the note names the root: use it only if it is this tree's root */
        if (len >= 0) {
            char b64[64];
            note_b64_encode(root, MT_HASH_SIZE, b64);
            if (!strstr(c->note, b64))
                len = -1;
            else
                memcpy(out, c->note, (size_t)len + 1);
        }
        pthread_mutex_unlock(&note_cache_mu);
        if (len >= 0)
            return len;
    }
    int tl = note_checkpoint_text(s->origin, n, root, text, sizeof text);
    if (tl < 0)
        return tl;
    int nl = note_sign(text, (size_t)tl, s->name, s->key, out, cap);
    if (nl >= 0 && cacheable && (size_t)nl < PROOF_CHECKPOINT_MAX) {
        pthread_mutex_lock(&note_cache_mu);
        struct note_cache_slot *c = note_cache_find(pub, s->name, s->origin, n);
        if (!c)
            c = &note_cache[note_cache_next++ % NOTE_CACHE_SLOTS];
        c->used = true;
        c->size = n;
        memcpy(c->pub, pub, 32);
        snprintf(c->origin, sizeof c->origin, "%s", s->origin);
        snprintf(c->name, sizeof c->name, "%s", s->name);
        memcpy(c->note, out, (size_t)nl + 1);
        c->len = nl;
        pthread_mutex_unlock(&note_cache_mu);
    }
    return nl;
}

static json_t *b64_json(const uint8_t *p, size_t n)
{
    char *s = malloc(4 * ((n + 2) / 3) + 1);
    if (!s)
        return NULL;
    size_t len = note_b64_encode(p, n, s);
    /* base64 is ASCII: skip jansson's UTF-8 scan (~half of a proof that
     * carries a 100 KB batch) */
    json_t *j = json_stringn_nocheck(s, len);
    free(s);
    return j;
}

static json_t *path_json(const uint8_t (*path)[MT_HASH_SIZE], size_t n)
{
    json_t *a = json_array();
    for (size_t i = 0; a && i < n; i++)
        json_array_append_new(a, b64_json(path[i], MT_HASH_SIZE));
    return a;
}

/* Reads the stored bytes of the batch that starts at base. */
static int read_batch(struct vlog *log, uint64_t base, uint8_t **out, size_t *len)
{
    struct vlog_span sp;
    size_t n = 0;
    struct vlog_info info;
    vlog_get_info(log, &info);
    int rc = vlog_read(log, base, info.end_offset, 1, &sp, 1, &n);
    if (rc)
        return rc;
    if (n != 1 || sp.base_offset != base) {
        vlog_spans_close(&sp, n);
        return VERITY_ECORRUPT;
    }
    uint8_t *b = malloc(sp.length);
    rc = b ? vio_pread_all(&vio_posix, sp.fd, b, sp.length, (off_t)sp.position) : -ENOMEM;
    vlog_spans_close(&sp, n);
    if (rc) {
        free(b);
        return rc;
    }
    *out = b;
    *len = sp.length;
    return 0;
}

int proof_inclusion(struct vlog *log, const struct proof_signer *s, uint64_t offset, uint64_t n,
                    bool with_batch, json_t **out)
{
    struct mtree *t = usable_tree(log);
    struct tproof tp;
    uint8_t leafx[TPROOF_EXTRA_MIN], leaf_hash[MT_HASH_SIZE], root[MT_HASH_SIZE];
    char note[PROOF_CHECKPOINT_MAX];
    struct mt_leaf leaf;
    uint8_t *batch = NULL, *extra = NULL;
    size_t blen = 0;
    char *text = NULL;
    size_t text_len = 0;
    int rc;
    if (!t)
        return VERITY_EUNSUPPORTED;
    memset(&tp, 0, sizeof tp);
    if (n == 0 && (rc = proof_durable_size(log, &n)))
        return rc;
    if ((rc = mt_find_offset(t, n, offset, &tp.index)))
        return rc;
    if ((rc = mt_leaf_get(t, tp.index, leafx)) || (rc = mt_leaf_decode(leafx, MT_LEAF_SIZE, &leaf)))
        return rc;
    put_le64(leafx + MT_LEAF_SIZE, offset);
    mt_leaf_hash(leafx, MT_LEAF_SIZE, leaf_hash);
    if ((rc = mt_prove_inclusion(t, tp.index, n, tp.path, &tp.npath)) || (rc = mt_root(t, n, root)))
        return rc;
    int nl = proof_checkpoint(log, s, n, note, sizeof note);
    if (nl < 0)
        return nl;
    struct vlog_info info;
    vlog_get_info(log, &info);
    if (with_batch && leaf.base_offset >= info.start_offset) {
        if ((rc = read_batch(log, leaf.base_offset, &batch, &blen)))
            return rc;
        if ((rc = mt_leaf_check_batch(&leaf, batch, blen)))
            goto out;
    }
    if (!(extra = malloc(TPROOF_EXTRA_MIN + blen))) {
        rc = -ENOMEM;
        goto out;
    }
    memcpy(extra, leafx, TPROOF_EXTRA_MIN);
    if (blen)
        memcpy(extra + TPROOF_EXTRA_MIN, batch, blen);
    tp.extra = extra;
    tp.extra_len = TPROOF_EXTRA_MIN + blen;
    tp.note = note;
    tp.note_len = (size_t)nl;
    if ((rc = tproof_format(&tp, &text, &text_len)))
        goto out;
    json_t *o = json_object();
    json_object_set_new(o, "type", json_string("inclusion"));
    json_object_set_new(o, "origin", json_string(s->origin));
    json_object_set_new(o, "index", json_integer((json_int_t)tp.index));
    json_object_set_new(o, "tree_size", json_integer((json_int_t)n));
    json_object_set_new(o, "offset", json_integer((json_int_t)offset));
    json_object_set_new(o, "base_offset", json_integer((json_int_t)leaf.base_offset));
    json_object_set_new(o, "record_index", json_integer((json_int_t)(offset - leaf.base_offset)));
    json_object_set_new(o, "leaf", b64_json(leafx, MT_LEAF_SIZE));
    json_object_set_new(o, "leaf_hash", b64_json(leaf_hash, MT_HASH_SIZE));
    json_object_set_new(o, "root", b64_json(root, MT_HASH_SIZE));
    json_object_set_new(o, "proof", path_json((const uint8_t(*)[MT_HASH_SIZE])tp.path, tp.npath));
    json_object_set_new(o, "checkpoint", json_stringn(note, (size_t)nl));
    if (blen) {
        /* leaf data || offset is 84 bytes, a whole number of base64 groups,
         * so the batch's base64 is the tail of the extra line: encode once */
        _Static_assert(TPROOF_EXTRA_MIN % 3 == 0, "extra prefix must be whole base64 groups");
        const char *x = strstr(text, "\nextra ");
        size_t b64len = 4 * ((blen + 2) / 3);
        VERITY_VERIFY(x && (size_t)(x - text) + 7 + TPROOF_EXTRA_MIN / 3 * 4 + b64len <= text_len);
        json_object_set_new(o, "batch",
                            json_stringn_nocheck(x + 7 + TPROOF_EXTRA_MIN / 3 * 4, b64len));
    }
    /* our own text: base64, digits and the note (checked UTF-8 when signed) */
    json_object_set_new(o, "tlog_proof", json_stringn_nocheck(text, text_len));
    *out = o;
out:
    free(text);
    free(extra);
    free(batch);
    return rc;
}

int proof_leaves(struct vlog *log, uint64_t offset, uint64_t n, uint32_t count, json_t **out)
{
    struct mtree *t = usable_tree(log);
    uint8_t leafx[MT_LEAF_SIZE], path[MT_PROOF_MAX][MT_HASH_SIZE];
    size_t npath;
    uint64_t index;
    int rc;
    if (!t)
        return VERITY_EUNSUPPORTED;
    if (count == 0 || count > PROOF_LEAVES_MAX)
        return VERITY_EINVAL;
    if (n == 0 && (rc = proof_durable_size(log, &n)))
        return rc;
    if ((rc = mt_find_offset(t, n, offset, &index)))
        return rc;
    json_t *o = json_object(), *items = json_array();
    if (!o || !items || json_object_set_new(o, "items", items)) {
        json_decref(o);
        return -ENOMEM;
    }
    json_object_set_new(o, "tree_size", json_integer((json_int_t)n));
    for (uint32_t k = 0; k < count && index + k < n && !rc; k++) {
        struct mt_leaf leaf;
        if ((rc = mt_leaf_get(t, index + k, leafx)) ||
            (rc = mt_leaf_decode(leafx, MT_LEAF_SIZE, &leaf)) ||
            (rc = mt_prove_inclusion(t, index + k, n, path, &npath)))
            break;
        VERITY_VERIFY(k > 0 || (leaf.base_offset <= offset &&
                                offset - leaf.base_offset < leaf.record_count));
        json_t *it = json_object();
        if (!it || json_array_append_new(items, it)) {
            rc = -ENOMEM;
            break;
        }
        json_object_set_new(it, "index", json_integer((json_int_t)(index + k)));
        json_object_set_new(it, "leaf", b64_json(leafx, MT_LEAF_SIZE));
        json_object_set_new(it, "proof",
                            path_json((const uint8_t(*)[MT_HASH_SIZE])path, npath));
    }
    if (rc) {
        json_decref(o);
        return rc;
    }
    *out = o;
    return 0;
}

int proof_consistency(struct vlog *log, const struct proof_signer *s, uint64_t m, uint64_t n,
                      json_t **out)
{
    struct mtree *t = usable_tree(log);
    uint8_t path[MT_PROOF_MAX][MT_HASH_SIZE], r1[MT_HASH_SIZE], r2[MT_HASH_SIZE];
    char n1[PROOF_CHECKPOINT_MAX], n2[PROOF_CHECKPOINT_MAX];
    size_t np = 0;
    int rc;
    if (!t)
        return VERITY_EUNSUPPORTED;
    uint64_t durable;
    if ((rc = proof_durable_size(log, &durable)))
        return rc;
    if (n == 0)
        n = durable;
    if (m > n || n > durable)
        return VERITY_EOFFSET;
    if ((rc = mt_prove_consistency(t, m, n, path, &np)) || (rc = mt_root(t, m, r1)) ||
        (rc = mt_root(t, n, r2)))
        return rc;
    int l1 = proof_checkpoint(log, s, m, n1, sizeof n1);
    if (l1 < 0)
        return l1;
    int l2 = proof_checkpoint(log, s, n, n2, sizeof n2);
    if (l2 < 0)
        return l2;
    json_t *o = json_object();
    json_object_set_new(o, "type", json_string("consistency"));
    json_object_set_new(o, "origin", json_string(s->origin));
    json_object_set_new(o, "old_size", json_integer((json_int_t)m));
    json_object_set_new(o, "new_size", json_integer((json_int_t)n));
    json_object_set_new(o, "old_root", b64_json(r1, MT_HASH_SIZE));
    json_object_set_new(o, "new_root", b64_json(r2, MT_HASH_SIZE));
    json_object_set_new(o, "proof", path_json((const uint8_t(*)[MT_HASH_SIZE])path, np));
    json_object_set_new(o, "old_checkpoint", json_stringn(n1, (size_t)l1));
    json_object_set_new(o, "new_checkpoint", json_stringn(n2, (size_t)l2));
    *out = o;
    return 0;
}

/* ---- offline check ---------------------------------------------------------- */

static int json_b64(json_t *o, const char *key, uint8_t *out, size_t cap, size_t *len)
{
    json_t *v = json_object_get(o, key);
    if (!json_is_string(v))
        return VERITY_ECORRUPT;
    long n = note_b64_decode(json_string_value(v), json_string_length(v), out, cap);
    if (n < 0)
        return VERITY_ECORRUPT;
    *len = (size_t)n;
    return 0;
}

static int json_u64(json_t *o, const char *key, uint64_t *out)
{
    json_t *v = json_object_get(o, key);
    if (!json_is_integer(v) || json_integer_value(v) < 0)
        return VERITY_ECORRUPT;
    *out = (uint64_t)json_integer_value(v);
    return 0;
}

static int json_path(json_t *o, uint8_t (*path)[MT_HASH_SIZE], size_t *np)
{
    json_t *a = json_object_get(o, "proof");
    if (!json_is_array(a) || json_array_size(a) > MT_PROOF_MAX)
        return VERITY_ECORRUPT;
    *np = json_array_size(a);
    for (size_t i = 0; i < *np; i++) {
        json_t *v = json_array_get(a, i);
        if (!json_is_string(v) || note_b64_decode(json_string_value(v), json_string_length(v),
                                                  path[i], MT_HASH_SIZE) != MT_HASH_SIZE)
            return VERITY_ECORRUPT;
    }
    return 0;
}

/* Opens a checkpoint note from a JSON string field: size and root. */
static int json_checkpoint(json_t *o, const char *key, const struct note_vkey *keys, size_t nkeys,
                           char *origin, uint64_t *size, uint8_t root[MT_HASH_SIZE])
{
    json_t *v = json_object_get(o, key);
    size_t tlen = 0;
    int rc;
    if (!json_is_string(v))
        return VERITY_ECORRUPT;
    if ((rc = note_open(json_string_value(v), json_string_length(v), keys, nkeys, &tlen, NULL)))
        return rc;
    return note_checkpoint_parse(json_string_value(v), tlen, origin, NOTE_ORIGIN_MAX + 1, size,
                                 root);
}

static int verify_inclusion_json(json_t *o, const struct note_vkey *keys, size_t nkeys,
                                 json_t **summary)
{
    struct tproof tp;
    struct tproof_result res;
    uint8_t leaf[MT_LEAF_SIZE], lh[MT_HASH_SIZE], lh2[MT_HASH_SIZE];
    size_t ll = 0, hl = 0, blen = 0;
    uint64_t size = 0, offset = 0;
    int rc;
    memset(&tp, 0, sizeof tp);
    json_t *cp = json_object_get(o, "checkpoint");
    json_t *bj = json_object_get(o, "batch");
    if (!json_is_string(cp))
        return VERITY_ECORRUPT;
    if ((rc = json_b64(o, "leaf", leaf, sizeof leaf, &ll)) || ll != MT_LEAF_SIZE ||
        (rc = json_b64(o, "leaf_hash", lh, sizeof lh, &hl)) || hl != MT_HASH_SIZE ||
        (rc = json_u64(o, "index", &tp.index)) || (rc = json_u64(o, "tree_size", &size)) ||
        (rc = json_u64(o, "offset", &offset)) || (rc = json_path(o, tp.path, &tp.npath)))
        return rc ? rc : VERITY_ECORRUPT;
    mt_leaf_hash(leaf, MT_LEAF_SIZE, lh2);
    if (memcmp(lh, lh2, MT_HASH_SIZE) != 0)
        return VERITY_ECHAIN;
    size_t bcap = json_is_string(bj) ? json_string_length(bj) / 4 * 3 + 3 : 0;
    if (!(tp.extra = malloc(TPROOF_EXTRA_MIN + bcap)))
        return -ENOMEM;
    memcpy(tp.extra, leaf, MT_LEAF_SIZE);
    put_le64(tp.extra + MT_LEAF_SIZE, offset);
    if (bcap && (rc = json_b64(o, "batch", tp.extra + TPROOF_EXTRA_MIN, bcap, &blen)))
        goto out;
    tp.extra_len = TPROOF_EXTRA_MIN + blen;
    tp.note = json_string_value(cp);
    tp.note_len = json_string_length(cp);
    if ((rc = tproof_verify(&tp, keys, nkeys, &res)))
        goto out;
    if (res.tree_size != size) {
        rc = VERITY_ECHAIN;
        goto out;
    }
    *summary = json_pack("{s:s,s:s,s:I,s:I,s:I,s:I,s:b}", "type", "inclusion", "origin", res.origin,
                         "index", (json_int_t)tp.index, "tree_size", (json_int_t)res.tree_size,
                         "offset", (json_int_t)res.offset, "base_offset",
                         (json_int_t)res.leaf.base_offset, "batch_checked", res.batch_checked);
out:
    tproof_deinit(&tp);
    return rc;
}

static int verify_consistency_json(json_t *o, const struct note_vkey *keys, size_t nkeys,
                                   json_t **summary)
{
    uint8_t path[MT_PROOF_MAX][MT_HASH_SIZE], r1[MT_HASH_SIZE], r2[MT_HASH_SIZE];
    char o1[NOTE_ORIGIN_MAX + 1], o2[NOTE_ORIGIN_MAX + 1];
    uint64_t m = 0, n = 0, s1 = 0, s2 = 0;
    size_t np = 0;
    int rc;
    if ((rc = json_u64(o, "old_size", &m)) || (rc = json_u64(o, "new_size", &n)) ||
        (rc = json_path(o, path, &np)))
        return rc;
    if ((rc = json_checkpoint(o, "old_checkpoint", keys, nkeys, o1, &s1, r1)) ||
        (rc = json_checkpoint(o, "new_checkpoint", keys, nkeys, o2, &s2, r2)))
        return rc;
    if (s1 != m || s2 != n || strcmp(o1, o2) != 0)
        return VERITY_ECHAIN;
    if ((rc = mt_verify_consistency(m, n, r1, r2, (const uint8_t(*)[MT_HASH_SIZE])path, np)))
        return rc == VERITY_EINVAL ? VERITY_ECHAIN : rc;
    *summary = json_pack("{s:s,s:s,s:I,s:I}", "type", "consistency", "origin", o1, "old_size",
                         (json_int_t)m, "new_size", (json_int_t)n);
    return 0;
}

int proof_verify_text(const char *buf, size_t len, const struct note_vkey *keys, size_t nkeys,
                      json_t **summary)
{
    int rc;
    *summary = NULL;
    if (len > 0 && buf[0] == '{') {
        json_error_t err;
        json_t *o = json_loadb(buf, len, JSON_REJECT_DUPLICATES, &err);
        if (!o)
            return VERITY_ECORRUPT;
        json_t *ty = json_object_get(o, "type");
        if (json_is_string(ty) && strcmp(json_string_value(ty), "inclusion") == 0)
            rc = verify_inclusion_json(o, keys, nkeys, summary);
        else if (json_is_string(ty) && strcmp(json_string_value(ty), "consistency") == 0)
            rc = verify_consistency_json(o, keys, nkeys, summary);
        else
            rc = VERITY_ECORRUPT;
        json_decref(o);
        return rc;
    }
    struct tproof tp;
    struct tproof_result res;
    if ((rc = tproof_parse(buf, len, &tp)))
        return rc;
    rc = tproof_verify(&tp, keys, nkeys, &res);
    if (!rc)
        *summary =
            json_pack("{s:s,s:s,s:I,s:I,s:I,s:I,s:b}", "type", "inclusion", "origin", res.origin,
                      "index", (json_int_t)tp.index, "tree_size", (json_int_t)res.tree_size,
                      "offset", (json_int_t)res.offset, "base_offset",
                      (json_int_t)res.leaf.base_offset, "batch_checked", res.batch_checked);
    tproof_deinit(&tp);
    return rc;
}
