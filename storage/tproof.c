/*
 * tproof: the c2sp.org/tlog-proof@v1 text, the c2sp.org/tlog-witness
 * add-checkpoint body, and the offline check of a Verity inclusion proof
 * (formats in tproof.h). Parsers are strict (exact header, canonical
 * decimal and base64, bounded line counts) and never read past len.
 */
#include "storage/tproof.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "storage/batch.h"
#include "verity/errors.h"

static long line_len(const char *p, const char *end)
{
    const char *nl = memchr(p, '\n', (size_t)(end - p));
    return nl ? (long)(nl - p) : -1;
}

static int parse_dec(const char *p, size_t n, uint64_t *out)
{
    uint64_t v = 0;
    if (n == 0 || n > 20 || (n > 1 && p[0] == '0'))
        return VERITY_ECORRUPT;
    for (size_t i = 0; i < n; i++) {
        if (p[i] < '0' || p[i] > '9')
            return VERITY_ECORRUPT;
        uint64_t d = (uint64_t)(p[i] - '0');
        if (v > (UINT64_MAX - d) / 10)
            return VERITY_ECORRUPT;
        v = v * 10 + d;
    }
    *out = v;
    return 0;
}

/* Reads hash lines until a blank line; p is left after the blank line. */
static int parse_hashes(const char **pp, const char *end, uint8_t (*path)[MT_HASH_SIZE], size_t max,
                        size_t *n)
{
    const char *p = *pp;
    *n = 0;
    for (;;) {
        long ll = line_len(p, end);
        if (ll < 0)
            return VERITY_ECORRUPT;
        if (ll == 0) {
            *pp = p + 1;
            return 0;
        }
        if (*n >= max || ll != 44 || note_b64_decode(p, 44, path[*n], MT_HASH_SIZE) != MT_HASH_SIZE)
            return VERITY_ECORRUPT;
        (*n)++;
        p += ll + 1;
    }
}

void tproof_deinit(struct tproof *p)
{
    free(p->extra);
    p->extra = NULL;
    p->extra_len = 0;
}

int tproof_parse(const char *buf, size_t len, struct tproof *out)
{
    const char *p = buf, *end = buf + len;
    memset(out, 0, sizeof *out);
    if (len > TPROOF_BYTES_MAX)
        return VERITY_ECORRUPT;
    long ll = line_len(p, end);
    if (ll != (long)strlen(TPROOF_HEADER) || memcmp(p, TPROOF_HEADER, (size_t)ll) != 0)
        return VERITY_ECORRUPT;
    p += ll + 1;
    ll = line_len(p, end);
    if (ll > 6 && memcmp(p, "extra ", 6) == 0) {
        size_t cap = (size_t)(ll - 6) / 4 * 3 + 3;
        if (!(out->extra = malloc(cap)))
            return -ENOMEM;
        long n = note_b64_decode(p + 6, (size_t)(ll - 6), out->extra, cap);
        if (n < 0)
            goto bad;
        out->extra_len = (size_t)n;
        p += ll + 1;
        ll = line_len(p, end);
    }
    if (ll <= 6 || memcmp(p, "index ", 6) != 0 || parse_dec(p + 6, (size_t)(ll - 6), &out->index))
        goto bad;
    p += ll + 1;
    if (parse_hashes(&p, end, out->path, MT_PROOF_MAX, &out->npath))
        goto bad;
    if (p >= end)
        goto bad;
    out->note = p;
    out->note_len = (size_t)(end - p);
    return 0;
bad:
    tproof_deinit(out);
    return VERITY_ECORRUPT;
}

int tproof_format(const struct tproof *p, char **out, size_t *len)
{
    size_t cap = 64 + (p->extra_len / 3 + 2) * 4 + p->npath * 46 + 32 + p->note_len + 1;
    char *s = malloc(cap);
    if (!s)
        return -ENOMEM;
    size_t o = (size_t)snprintf(s, cap, "%s\n", TPROOF_HEADER);
    if (p->extra_len) {
        memcpy(s + o, "extra ", 6);
        o += 6;
        o += note_b64_encode(p->extra, p->extra_len, s + o);
        s[o++] = '\n';
    }
    o += (size_t)snprintf(s + o, cap - o, "index %" PRIu64 "\n", p->index);
    for (size_t i = 0; i < p->npath; i++) {
        o += note_b64_encode(p->path[i], MT_HASH_SIZE, s + o);
        s[o++] = '\n';
    }
    s[o++] = '\n';
    memcpy(s + o, p->note, p->note_len);
    o += p->note_len;
    s[o] = '\0';
    *out = s;
    *len = o;
    return 0;
}

int tproof_witness_parse(const char *buf, size_t len, struct tproof_witness_req *out)
{
    const char *p = buf, *end = buf + len;
    memset(out, 0, sizeof *out);
    long ll = line_len(p, end);
    if (ll <= 4 || memcmp(p, "old ", 4) != 0 || parse_dec(p + 4, (size_t)(ll - 4), &out->old_size))
        return VERITY_ECORRUPT;
    p += ll + 1;
    if (parse_hashes(&p, end, out->path, TPROOF_WITNESS_PROOF_MAX, &out->npath) || p >= end)
        return VERITY_ECORRUPT;
    out->note = p;
    out->note_len = (size_t)(end - p);
    return 0;
}

int tproof_witness_format(const struct tproof_witness_req *r, char **out, size_t *len)
{
    size_t cap = 32 + r->npath * 46 + 2 + r->note_len + 1;
    char *s = malloc(cap);
    if (!s)
        return -ENOMEM;
    size_t o = (size_t)snprintf(s, cap, "old %" PRIu64 "\n", r->old_size);
    for (size_t i = 0; i < r->npath; i++) {
        o += note_b64_encode(r->path[i], MT_HASH_SIZE, s + o);
        s[o++] = '\n';
    }
    s[o++] = '\n';
    memcpy(s + o, r->note, r->note_len);
    o += r->note_len;
    s[o] = '\0';
    *out = s;
    *len = o;
    return 0;
}

/* The batch holds a record at index rec (walks every record: bounded by
 * the batch length). */
static int batch_has_record(const uint8_t *b, size_t len, uint32_t rec)
{
    struct batch_iter it;
    struct batch_record r;
    int rc;
    batch_iter_init(&it, b, len);
    while ((rc = batch_iter_next(&it, &r)) == 1)
        if (r.offset_delta == rec)
            return 0;
    return VERITY_ECHAIN;
}

int tproof_verify(const struct tproof *p, const struct note_vkey *keys, size_t nkeys,
                  struct tproof_result *out)
{
    size_t tlen = 0;
    uint8_t leaf_hash[MT_HASH_SIZE];
    int rc;
    memset(out, 0, sizeof *out);
    if ((rc = note_open(p->note, p->note_len, keys, nkeys, &tlen, NULL)))
        return rc;
    if ((rc = note_checkpoint_parse(p->note, tlen, out->origin, sizeof out->origin, &out->tree_size,
                                    out->root)))
        return rc;
    if (!p->extra || p->extra_len < TPROOF_EXTRA_MIN)
        return VERITY_ECORRUPT;
    if ((rc = mt_leaf_decode(p->extra, MT_LEAF_SIZE, &out->leaf)))
        return rc;
    mt_leaf_hash(p->extra, MT_LEAF_SIZE, leaf_hash);
    if (p->index >= out->tree_size)
        return VERITY_ECHAIN;
    if ((rc = mt_verify_inclusion(leaf_hash, p->index, out->tree_size,
                                  (const uint8_t(*)[MT_HASH_SIZE])p->path, p->npath, out->root)))
        return rc == VERITY_EINVAL ? VERITY_ECHAIN : rc;
    out->offset = get_le64(p->extra + MT_LEAF_SIZE);
    if (out->offset < out->leaf.base_offset ||
        out->offset - out->leaf.base_offset >= out->leaf.record_count)
        return VERITY_ECHAIN;
    if (p->extra_len > TPROOF_EXTRA_MIN) {
        const uint8_t *b = p->extra + TPROOF_EXTRA_MIN;
        size_t blen = p->extra_len - TPROOF_EXTRA_MIN;
        if ((rc = mt_leaf_check_batch(&out->leaf, b, blen)))
            return rc;
        if ((rc = batch_has_record(b, blen, (uint32_t)(out->offset - out->leaf.base_offset))))
            return rc;
        out->batch_checked = 1;
    }
    return 0;
}

int tproof_cosig_check(const char *note, size_t note_len, const char *body, size_t blen,
                       const struct note_vkey *wkey)
{
    static const char dash[] = "\xe2\x80\x94 ";
    if (blen == 0 || blen > TPROOF_COSIG_BODY_MAX || body[blen - 1] != '\n' ||
        memchr(body, '\0', blen))
        return VERITY_ECORRUPT;
    for (const char *p = body; p < body + blen;) {
        const char *nl = memchr(p, '\n', (size_t)(body + blen - p));
        if (!nl || (size_t)(nl - p) < sizeof dash || memcmp(p, dash, sizeof dash - 1) != 0)
            return VERITY_ECORRUPT;
        p = nl + 1;
    }
    char *all = malloc(note_len + blen + 1);
    if (!all)
        return -ENOMEM;
    memcpy(all, note, note_len);
    memcpy(all + note_len, body, blen);
    all[note_len + blen] = '\0';
    size_t tlen = 0;
    uint32_t mask = 0;
    int rc = note_open(all, note_len + blen, wkey, 1, &tlen, &mask);
    free(all);
    if (rc == VERITY_ECORRUPT)
        return rc;
    /* the body holds signature lines only, so the signed text is ours */
    return rc || !(mask & 1) ? VERITY_ESIGNATURE : 0;
}

int tproof_size_parse(const char *body, size_t len, uint64_t *size)
{
    if (len > 0 && body[len - 1] == '\n')
        len--;
    return parse_dec(body, len, size) ? VERITY_ECORRUPT : 0;
}
