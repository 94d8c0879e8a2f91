/*
 * The transformations of one record and their commitments.
 *
 * Keys. Every share has its own keys, derived from the gateway's 32-byte
 * secret with HKDF-SHA-256 (salt = share id, info = purpose), so pseudonyms
 * and tokens are stable within a share and unlinkable across shares, and
 * nothing secret is stored in the shares topic.
 *
 * Commitments. Every field that is not kept as is gets
 *     commit = b64url(SHA-256("verity-share-commit-v1\0" || salt || canon(v)))
 *     salt   = HMAC-SHA-256(commit key, position "\0" path)[0, 16)
 * where canon(v) is the compact, key-sorted JSON of the original value and
 * position is "topic/partition/offset". The owner can later reveal (v, salt)
 * for one field of one record without revealing any other.
 *
 * Two passes: every new value is computed from the untouched document
 * first, then applied, so a date shift keyed by an entity that another rule
 * hashes still sees the original entity.
 *
 * encrypt: an ephemeral X25519 key derived from (eph key, export id,
 * position, path), ECDH with the recipient's key, HKDF-SHA-256 (salt =
 * epk || rpk, info "verity-share-encrypt-v1") -> AES-256-GCM key and nonce,
 * AAD = path "\0" position. Derived rather than random so that a resumed
 * export re-creates the same bytes (and the same body digest); each key
 * encrypts exactly one value.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/core_names.h>
#include <openssl/sha.h>

#include "consumer/share/share.h"

#define COMMIT_TAG "verity-share-commit-v1"
#define ENC_ALG "X25519-HKDF-SHA256-A256GCM"
#define ENC_INFO "verity-share-encrypt-v1"
#define TOK_AAD "verity-tokenize-v1"

int xf_keys_derive(const uint8_t secret[32], const char *share_id, struct xf_keys *k)
{
    size_t sl = strlen(share_id);
    if (sh_hkdf(secret, 32, share_id, sl, "verity-share hash", 17, k->hash, 32) ||
        sh_hkdf(secret, 32, share_id, sl, "verity-share tokenize", 21, k->siv, 64) ||
        sh_hkdf(secret, 32, share_id, sl, "verity-share shift", 18, k->shift, 32) ||
        sh_hkdf(secret, 32, share_id, sl, "verity-share commit", 19, k->commit, 32) ||
        sh_hkdf(secret, 32, share_id, sl, "verity-share eph", 16, k->eph, 32))
        return VERITY_EINVAL;
    return 0;
}

/* ---- JSON pointers ------------------------------------------------------------ */

/* Next reference token of ptr (after its '/'), unescaped into buf. */
static const char *jp_token(const char *p, char *buf, size_t cap, size_t *len)
{
    size_t o = 0;
    p++; /* '/' */
    while (*p && *p != '/') {
        char c = *p++;
        if (c == '~') {
            c = *p == '1' ? '/' : '~';
            if (*p)
                p++;
        }
        if (o + 1 < cap)
            buf[o++] = c;
    }
    buf[o] = '\0';
    *len = o;
    return p;
}

static json_t *jp_step(const json_t *cur, const char *tok)
{
    if (json_is_object(cur))
        return json_object_get(cur, tok);
    if (json_is_array(cur)) {
        char *end;
        if (!*tok || (tok[0] == '0' && tok[1]) || tok[0] < '0' || tok[0] > '9')
            return NULL;
        unsigned long i = strtoul(tok, &end, 10);
        return *end ? NULL : json_array_get(cur, i);
    }
    return NULL;
}

json_t *jp_get(const json_t *doc, const char *ptr)
{
    char tok[SHARE_SPEC_TEXT_MAX + 1];
    size_t len;
    const json_t *cur = doc;
    const char *p = ptr;
    if (!*p)
        return (json_t *)doc;
    for (int depth = 0; *p == '/' && cur && depth < 64; depth++) {
        p = jp_token(p, tok, sizeof tok, &len);
        cur = jp_step(cur, tok);
    }
    return *p ? NULL : (json_t *)cur;
}

/* Replaces (v != NULL, reference taken) or deletes (v == NULL) the value at
 * ptr; the value must exist. */
static int jp_put(json_t *doc, const char *ptr, json_t *v)
{
    char tok[SHARE_SPEC_TEXT_MAX + 1];
    size_t len;
    const char *last = strrchr(ptr, '/');
    char parent_ptr[SHARE_SPEC_TEXT_MAX + 1];
    size_t plen = (size_t)(last - ptr);
    memcpy(parent_ptr, ptr, plen);
    parent_ptr[plen] = '\0';
    json_t *parent = jp_get(doc, parent_ptr);
    jp_token(last, tok, sizeof tok, &len);
    int rc = -1;
    if (json_is_object(parent)) {
        rc = v ? json_object_set_new(parent, tok, v) : json_object_del(parent, tok);
        v = NULL;
    } else if (json_is_array(parent)) {
        size_t i = strtoul(tok, NULL, 10);
        rc = v ? json_array_set_new(parent, i, v) : json_array_remove(parent, i);
        v = NULL;
    }
    json_decref(v);
    return rc ? VERITY_EINVAL : 0;
}

/* ---- commitments -------------------------------------------------------------- */

int xf_salt(const struct xf_keys *k, const char *position, const char *path, uint8_t salt[16])
{
    size_t pl = strlen(position), ql = strlen(path);
    char buf[1024];
    if (pl + 1 + ql > sizeof buf)
        return VERITY_EINVAL;
    memcpy(buf, position, pl);
    buf[pl] = '\0';
    memcpy(buf + pl + 1, path, ql);
    uint8_t mac[32];
    if (sh_hmac(k->commit, 32, buf, pl + 1 + ql, mac))
        return VERITY_EINVAL;
    memcpy(salt, mac, 16);
    return 0;
}

int xf_commit_canon(const uint8_t salt[16], const char *canon, size_t n, char out[44])
{
    uint8_t d[32];
    const void *parts[3] = {COMMIT_TAG, salt, canon};
    size_t lens[3] = {sizeof COMMIT_TAG, 16, n}; /* the tag with its NUL */
    int rc = sh_sha256v(parts, lens, 3, d);
    if (rc)
        return rc;
    sh_b64url_enc(d, 32, out);
    return 0;
}

int xf_commit(const uint8_t salt[16], const json_t *orig, char out[44])
{
    char *c = sh_canon(orig);
    if (!c)
        return -ENOMEM;
    int rc = xf_commit_canon(salt, c, strlen(c), out);
    free(c);
    return rc;
}

/* ---- the transformations ------------------------------------------------------ */

static json_t *t_mask(const struct xf_field *f, const json_t *v)
{
    char *owned = NULL;
    const char *s = json_is_string(v) ? json_string_value(v) : (owned = sh_canon(v));
    if (!s)
        return NULL;
    size_t n = strlen(s), cps = 0;
    for (size_t i = 0; i < n; i++)
        cps += ((unsigned char)s[i] & 0xC0) != 0x80;
    char *out = malloc(n + cps + 1);
    size_t o = 0, cp = 0;
    for (size_t i = 0; i < n; i++) {
        bool start = ((unsigned char)s[i] & 0xC0) != 0x80;
        if (start)
            cp++;
        bool keep = f->mask_first ? cp <= f->mask_n : cp + f->mask_n > cps;
        if (keep)
            out[o++] = s[i];
        else if (start)
            out[o++] = '*';
    }
    out[o] = '\0';
    json_t *r = json_string(out);
    free(out);
    free(owned);
    return r;
}

/* canon: the canonical JSON of v when the caller has it (n bytes), or NULL. */
static json_t *t_hash(const struct xf_keys *k, const json_t *v, const char *canon, size_t n)
{
    char *c = canon ? NULL : sh_canon(v);
    uint8_t mac[32];
    char b[48];
    if (!canon && c)
        n = strlen(c);
    if ((!canon && !c) || sh_hmac(k->hash, 32, canon ? canon : c, n, mac)) {
        free(c);
        return NULL;
    }
    free(c);
    sh_b64url_enc(mac, 32, b);
    char out[64];
    snprintf(out, sizeof out, "h1:%s", b);
    return json_string(out);
}

static int siv(const uint8_t key[64], bool enc, const uint8_t *in, size_t n, uint8_t *out,
               uint8_t tag[16])
{
    int rc = VERITY_EINVAL, l;
    EVP_CIPHER *c = EVP_CIPHER_fetch(NULL, "AES-256-SIV", NULL);
    EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
    if (!c || !ctx || EVP_CipherInit_ex2(ctx, c, key, NULL, enc, NULL) != 1)
        goto out;
    if (!enc && EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_SET_TAG, 16, tag) != 1)
        goto out;
    if (EVP_CipherUpdate(ctx, NULL, &l, (const uint8_t *)TOK_AAD, sizeof TOK_AAD - 1) != 1 ||
        EVP_CipherUpdate(ctx, out, &l, in, (int)n) != 1 || EVP_CipherFinal_ex(ctx, out + l, &l) != 1)
        goto out;
    if (enc && EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_GET_TAG, 16, tag) != 1)
        goto out;
    rc = 0;
out:
    EVP_CIPHER_CTX_free(ctx);
    EVP_CIPHER_free(c);
    return rc;
}

static json_t *t_tokenize(const struct xf_keys *k, const json_t *v)
{
    char *c = sh_canon(v);
    if (!c)
        return NULL;
    size_t n = strlen(c);
    uint8_t *buf = malloc(16 + n + 16);
    json_t *r = NULL;
    if (buf && siv(k->siv, true, (const uint8_t *)c, n, buf + 16, buf) == 0) {
        char *b = malloc(4 * ((16 + n + 2) / 3) + 8);
        if (b) {
            memcpy(b, "t1:", 3);
            sh_b64url_enc(buf, 16 + n, b + 3);
            r = json_string(b);
            free(b);
        }
    }
    free(buf);
    free(c);
    return r;
}

int xf_detokenize(const struct xf_keys *k, const char *path, const char *token, json_t **out)
{
    (void)path;
    if (strncmp(token, "t1:", 3) != 0)
        return VERITY_EINVAL;
    size_t tl = strlen(token + 3), n;
    uint8_t *buf = malloc(tl + 1), *pt = malloc(tl + 1);
    int rc = VERITY_EINVAL;
    if (!buf || !pt || sh_b64url_dec(token + 3, tl, buf, tl, &n) || n < 16)
        goto out;
    if ((rc = siv(k->siv, false, buf + 16, n - 16, pt, buf)))
        goto out;
    *out = json_loadb((const char *)pt, n - 16, JSON_DECODE_ANY, NULL);
    rc = *out ? 0 : VERITY_ECORRUPT;
out:
    free(buf);
    free(pt);
    return rc;
}

static bool date_prefix(const char *s, int *y, int *m, int *d)
{
    for (int i = 0; i < 10; i++) {
        bool dash = i == 4 || i == 7;
        if (dash ? s[i] != '-' : (s[i] < '0' || s[i] > '9'))
            return false;
    }
    *y = (s[0] - '0') * 1000 + (s[1] - '0') * 100 + (s[2] - '0') * 10 + (s[3] - '0');
    *m = (s[5] - '0') * 10 + (s[6] - '0');
    *d = (s[8] - '0') * 10 + (s[9] - '0');
    return *m >= 1 && *m <= 12 && *d >= 1 && *d <= 31;
}

static json_t *t_generalise(const struct xf_field *f, const json_t *v)
{
    char out[96];
    int y, m, d;
    if (f->gen <= GEN_YEAR) {
        if (!json_is_string(v) || !date_prefix(json_string_value(v), &y, &m, &d))
            return json_null();
        /* date_prefix checked "YYYY-MM-DD": the result is its first 10, 7 or 4 characters */
        return json_stringn_nocheck(json_string_value(v),
                                    f->gen == GEN_DAY ? 10 : f->gen == GEN_MONTH ? 7 : 4);
    }
    if (!json_is_number(v))
        return json_null();
    double x = json_number_value(v);
    if (f->gen == GEN_BUCKET) {
        double lo = floor(x / f->bucket) * f->bucket;
        snprintf(out, sizeof out, "[%.15g,%.15g)", lo, lo + f->bucket);
        return json_string(out);
    }
    for (uint32_t i = 0; i < f->range_count; i++)
        if (x >= f->ranges[i].lo && x <= f->ranges[i].hi)
            return json_string(f->ranges[i].label);
    return json_null();
}

static json_t *t_date_shift(const struct xf_field *f, const struct xf_keys *k, const json_t *doc,
                            const json_t *v)
{
    const json_t *ent = jp_get(doc, f->entity);
    int y, m, d;
    if (!ent || !json_is_string(v) || !date_prefix(json_string_value(v), &y, &m, &d))
        return json_null();
    char *c = sh_canon(ent);
    uint8_t mac[32];
    if (!c || sh_hmac(k->shift, 32, c, strlen(c), mac)) {
        free(c);
        return NULL;
    }
    free(c);
    uint64_t r = 0;
    for (int i = 0; i < 8; i++)
        r = r << 8 | mac[i];
    int64_t days = (int64_t)(r % (2ull * f->shift_days_max + 1)) - (int64_t)f->shift_days_max;
    struct tm tm = {0};
    tm.tm_year = y - 1900;
    tm.tm_mon = m - 1;
    tm.tm_mday = d;
    time_t t = timegm(&tm) + (time_t)days * 86400;
    if (!gmtime_r(&t, &tm))
        return json_null();
    const char *s = json_string_value(v);
    size_t n = strlen(s);
    char *out = malloc(n + 8);
    if (!out)
        return NULL;
    snprintf(out, n + 8, "%04d-%02d-%02d%s", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, s + 10);
    json_t *res = json_string(out);
    free(out);
    return res;
}

/* X25519 + HKDF -> 32-byte key || 12-byte nonce. */
static int enc_kdf(EVP_PKEY *mine, const uint8_t peer_pub[32], const uint8_t epk[32],
                   const uint8_t rpk[32], uint8_t okm[44])
{
    int rc = VERITY_EINVAL;
    uint8_t shared[32], salt[64];
    size_t sl = sizeof shared;
    EVP_PKEY *peer = EVP_PKEY_new_raw_public_key(EVP_PKEY_X25519, NULL, peer_pub, 32);
    EVP_PKEY_CTX *dc = peer ? EVP_PKEY_CTX_new(mine, NULL) : NULL;
    if (!dc || EVP_PKEY_derive_init(dc) != 1 || EVP_PKEY_derive_set_peer(dc, peer) != 1 ||
        EVP_PKEY_derive(dc, shared, &sl) != 1 || sl != 32)
        goto out;
    memcpy(salt, epk, 32);
    memcpy(salt + 32, rpk, 32);
    rc = sh_hkdf(shared, 32, salt, 64, ENC_INFO, sizeof ENC_INFO - 1, okm, 44);
out:
    EVP_PKEY_CTX_free(dc);
    EVP_PKEY_free(peer);
    OPENSSL_cleanse(shared, sizeof shared);
    return rc;
}

static int gcm(const uint8_t okm[44], bool enc, const char *aad, size_t aad_len, const uint8_t *in,
               size_t n, uint8_t *out, uint8_t tag[16])
{
    int rc = VERITY_EINVAL, l;
    EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
    if (!ctx || EVP_CipherInit_ex2(ctx, EVP_aes_256_gcm(), okm, okm + 32, enc, NULL) != 1)
        goto out;
    if (!enc && EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_SET_TAG, 16, tag) != 1)
        goto out;
    if (EVP_CipherUpdate(ctx, NULL, &l, (const uint8_t *)aad, (int)aad_len) != 1 ||
        EVP_CipherUpdate(ctx, out, &l, in, (int)n) != 1 || EVP_CipherFinal_ex(ctx, out + l, &l) != 1)
        goto out;
    if (enc && EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_GET_TAG, 16, tag) != 1)
        goto out;
    rc = 0;
out:
    EVP_CIPHER_CTX_free(ctx);
    return rc;
}

static size_t enc_aad(char *buf, size_t cap, const char *path, const char *position)
{
    size_t a = strlen(path), b = strlen(position);
    if (a + 1 + b > cap)
        return 0;
    memcpy(buf, path, a);
    buf[a] = '\0';
    memcpy(buf + a + 1, position, b);
    return a + 1 + b;
}

static json_t *t_encrypt(const struct share_spec *s, const struct xf_keys *k, const char *export_id,
                         const char *position, const char *path, const json_t *v)
{
    json_t *r = NULL;
    char *c = sh_canon(v);
    uint8_t eph[32], epk[32], okm[44], *ct = NULL;
    char aad[1024], info[1024];
    EVP_PKEY *e = NULL;
    size_t il = enc_aad(info, sizeof info, position, path), al;
    if (!c || !il || sh_hkdf(k->eph, 32, export_id, strlen(export_id), info, il, eph, 32))
        goto out;
    e = EVP_PKEY_new_raw_private_key(EVP_PKEY_X25519, NULL, eph, 32);
    if (!e || sh_raw_public(e, epk) || enc_kdf(e, s->rcpt.x25519, epk, s->rcpt.x25519, okm))
        goto out;
    size_t n = strlen(c);
    ct = malloc(n + 16);
    al = enc_aad(aad, sizeof aad, path, position);
    if (!ct || !al || gcm(okm, true, aad, al, (const uint8_t *)c, n, ct, ct + n))
        goto out;
    char epks[48];
    sh_b64url_enc(epk, 32, epks);
    char *cts = sh_b64url_str(ct, n + 16);
    if (cts)
        r = json_pack("{s:s, s:s, s:s}", "alg", ENC_ALG, "epk", epks, "ct", cts);
    free(cts);
out:
    OPENSSL_cleanse(eph, sizeof eph);
    OPENSSL_cleanse(okm, sizeof okm);
    EVP_PKEY_free(e);
    free(ct);
    free(c);
    return r;
}

int xf_decrypt(EVP_PKEY *rcpt, const json_t *enc, const char *path, const char *position,
               json_t **out)
{
    const json_t *alg = json_object_get(enc, "alg"), *epks = json_object_get(enc, "epk"),
                 *cts = json_object_get(enc, "ct");
    if (!json_is_string(alg) || strcmp(json_string_value(alg), ENC_ALG) != 0 ||
        !json_is_string(epks) || !json_is_string(cts))
        return VERITY_EINVAL;
    uint8_t epk[32], rpk[32], okm[44];
    size_t n, cl = json_string_length(cts);
    if (sh_b64url_dec(json_string_value(epks), json_string_length(epks), epk, 32, &n) || n != 32 ||
        sh_raw_public(rcpt, rpk))
        return VERITY_EINVAL;
    uint8_t *ct = malloc(cl + 1), *pt = malloc(cl + 1);
    char aad[1024];
    int rc = VERITY_EINVAL;
    size_t al = enc_aad(aad, sizeof aad, path, position);
    if (!ct || !pt || !al || sh_b64url_dec(json_string_value(cts), cl, ct, cl, &n) || n < 16)
        goto out;
    if (enc_kdf(rcpt, epk, epk, rpk, okm))
        goto out;
    rc = VERITY_ESIGNATURE;
    if (gcm(okm, false, aad, al, ct, n - 16, pt, ct + n - 16))
        goto out;
    *out = json_loadb((const char *)pt, n - 16, JSON_DECODE_ANY, NULL);
    rc = *out ? 0 : VERITY_ECORRUPT;
out:
    OPENSSL_cleanse(okm, sizeof okm);
    free(ct);
    free(pt);
    return rc;
}

json_t *xf_value(const struct share_spec *s, const struct xf_keys *k, const char *export_id,
                 const char *position, const struct xf_field *f, const json_t *doc,
                 const json_t *v, const char *canon, size_t canon_len)
{
    switch (f->op) {
    case XF_KEEP:
    case XF_DROP: return NULL;
    case XF_REPLACE: return json_deep_copy(f->replace);
    case XF_MASK: return t_mask(f, v);
    case XF_HASH: return t_hash(k, v, canon, canon_len);
    case XF_TOKENIZE: return t_tokenize(k, v);
    case XF_GENERALISE: return t_generalise(f, v);
    case XF_DATE_SHIFT: return t_date_shift(f, k, doc, v);
    case XF_ENCRYPT: return t_encrypt(s, k, export_id, position, f->path, v);
    }
    return NULL;
}

int xf_apply(const struct share_spec *s, const struct xf_keys *k, const char *export_id,
             const char *position, json_t *doc, json_t *commits, char *err, size_t cap)
{
    json_t *nv[SHARE_FIELDS_MAX];
    bool hit[SHARE_FIELDS_MAX];
    int rc = 0;
    for (uint32_t i = 0; i < s->field_count; i++) {
        const struct xf_field *f = &s->fields[i];
        const json_t *v = jp_get(doc, f->path);
        nv[i] = NULL;
        hit[i] = v != NULL && v != doc;
        if (!hit[i] || f->op == XF_KEEP)
            continue;
        uint8_t salt[16];
        char cm[44];
        if (xf_salt(k, position, f->path, salt) || xf_commit(salt, v, cm) ||
            json_object_set_new(commits, f->path, json_string(cm))) {
            rc = VERITY_EINVAL;
            break;
        }
        nv[i] = xf_value(s, k, export_id, position, f, doc, v, NULL, 0);
        if (f->op != XF_DROP && !nv[i]) {
            rc = VERITY_EINVAL;
            if (err && cap)
                snprintf(err, cap, "%s: %s failed", f->path, xf_op_name(f->op));
            hit[i] = false;
            break;
        }
    }
    if (rc) {
        for (uint32_t i = 0; i < s->field_count; i++)
            json_decref(nv[i]);
        return rc;
    }
    /* Deletions last and from the end, so array indices of other rules hold. */
    for (uint32_t i = 0; i < s->field_count; i++)
        if (hit[i] && nv[i] && jp_put(doc, s->fields[i].path, nv[i]))
            rc = VERITY_EINVAL;
    for (uint32_t i = s->field_count; i-- > 0;)
        if (hit[i] && s->fields[i].op == XF_DROP && jp_put(doc, s->fields[i].path, NULL))
            rc = VERITY_EINVAL;
    /* Fields without a rule are not shared: an allow-list. */
    return rc;
}
