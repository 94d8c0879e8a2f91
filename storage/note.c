/*
 * note: C2SP signed notes, checkpoints, cosignatures and verifier keys
 * (formats and acceptance rule in note.h; spec text: c2sp.org/signed-note,
 * c2sp.org/tlog-checkpoint, c2sp.org/tlog-cosignature). Parsing is strict
 * and bounded: a note is at most NOTE_BYTES_MAX bytes with at most
 * NOTE_SIGS_MAX signature lines; base64 must be canonical and padded.
 */
#include "storage/note.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/sha.h>

#include "verity/errors.h"
#include "verity/verify.h"

static const char em_dash[] = "\xe2\x80\x94"; /* U+2014 */

/* ---- base64 -------------------------------------------------------------- */

static const char b64chars[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/* Two output characters per lookup: pair[v] for a 12-bit v. */
static char b64pair[4096][2];
static pthread_once_t b64pair_once = PTHREAD_ONCE_INIT;

static void b64pair_init(void)
{
    for (int v = 0; v < 4096; v++) {
        b64pair[v][0] = b64chars[v >> 6];
        b64pair[v][1] = b64chars[v & 63];
    }
}

size_t note_b64_encode(const uint8_t *in, size_t n, char *out)
{
    size_t o = 0, i = 0;
    pthread_once(&b64pair_once, b64pair_init);
    /* whole groups without branches (proofs encode 100 KB batches) */
    for (; i + 3 <= n; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
        memcpy(out + o, b64pair[v >> 12], 2);
        memcpy(out + o + 2, b64pair[v & 4095], 2);
        o += 4;
    }
    if (i < n) {
        uint32_t v = (uint32_t)in[i] << 16;
        if (i + 1 < n)
            v |= (uint32_t)in[i + 1] << 8;
        out[o++] = b64chars[(v >> 18) & 63];
        out[o++] = b64chars[(v >> 12) & 63];
        out[o++] = i + 1 < n ? b64chars[(v >> 6) & 63] : '=';
        out[o++] = '=';
    }
    out[o] = '\0';
    return o;
}

static int b64val(char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+')
        return 62;
    if (c == '/')
        return 63;
    return -1;
}

long note_b64_decode(const char *in, size_t n, uint8_t *out, size_t cap)
{
    if (n % 4 != 0)
        return -1;
    size_t o = 0;
    for (size_t i = 0; i < n; i += 4) {
        int v[4];
        int pad = 0;
        for (int j = 0; j < 4; j++) {
            if (in[i + j] == '=' && i + 4 == n && j >= 2) {
                v[j] = 0;
                pad++;
            } else {
                if (pad) /* '=' only at the very end */
                    return -1;
                if ((v[j] = b64val(in[i + j])) < 0)
                    return -1;
            }
        }
        uint32_t w =
            (uint32_t)v[0] << 18 | (uint32_t)v[1] << 12 | (uint32_t)v[2] << 6 | (uint32_t)v[3];
        size_t take = 3 - (size_t)pad;
        if (o + take > cap)
            return -1;
        /* canonical: unused bits of the last group are zero */
        if ((pad == 1 && (w & 0xff)) || (pad == 2 && (w & 0xffff)))
            return -1;
        out[o++] = (uint8_t)(w >> 16);
        if (take > 1)
            out[o++] = (uint8_t)(w >> 8);
        if (take > 2)
            out[o++] = (uint8_t)w;
    }
    return (long)o;
}

/* ---- keys ------------------------------------------------------------------ */

bool note_name_ok(const char *name)
{
    size_t n = strlen(name);
    if (n == 0 || n > NOTE_NAME_MAX)
        return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)name[i];
        if (c <= 0x20 || c == '+' || c == 0x7f)
            return false;
        /* Unicode spaces in UTF-8 (U+0085, U+00A0, U+1680, U+2000-U+200A,
         * U+2028, U+2029, U+202F, U+205F, U+3000): refuse any byte >= 0x80
         * conservatively; key names here are ASCII URLs. */
        if (c >= 0x80)
            return false;
    }
    return true;
}

uint32_t note_key_id(const char *name, uint8_t type, const uint8_t pub[32])
{
    uint8_t md[SHA256_DIGEST_LENGTH];
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    unsigned int n = 0;
    const uint8_t nl = '\n';
    VERITY_VERIFY(ctx != NULL);
    VERITY_VERIFY(EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) == 1);
    VERITY_VERIFY(EVP_DigestUpdate(ctx, name, strlen(name)) == 1);
    VERITY_VERIFY(EVP_DigestUpdate(ctx, &nl, 1) == 1);
    VERITY_VERIFY(EVP_DigestUpdate(ctx, &type, 1) == 1);
    VERITY_VERIFY(EVP_DigestUpdate(ctx, pub, 32) == 1);
    VERITY_VERIFY(EVP_DigestFinal_ex(ctx, md, &n) == 1 && n == sizeof md);
    EVP_MD_CTX_free(ctx);
    return (uint32_t)md[0] << 24 | (uint32_t)md[1] << 16 | (uint32_t)md[2] << 8 | md[3];
}

int note_raw_public(EVP_PKEY *key, uint8_t pub[32])
{
    size_t len = 32;
    if (!key || EVP_PKEY_get_base_id(key) != EVP_PKEY_ED25519 ||
        EVP_PKEY_get_raw_public_key(key, pub, &len) != 1 || len != 32)
        return VERITY_EINVAL;
    return 0;
}

int note_vkey_format(const char *name, uint8_t type, EVP_PKEY *key, char *out, size_t cap)
{
    uint8_t raw[33];
    char b64[64];
    int rc;
    if (!note_name_ok(name) || (type != NOTE_TYPE_ED25519 && type != NOTE_TYPE_COSIG))
        return VERITY_EINVAL;
    if ((rc = note_raw_public(key, raw + 1)))
        return rc;
    raw[0] = type;
    note_b64_encode(raw, sizeof raw, b64);
    int n = snprintf(out, cap, "%s+%08" PRIx32 "+%s", name, note_key_id(name, type, raw + 1), b64);
    return n > 0 && (size_t)n < cap ? 0 : VERITY_EINVAL;
}

int note_vkey_parse(const char *vkey, struct note_vkey *out)
{
    const char *p1 = strchr(vkey, '+');
    const char *p2 = p1 ? strchr(p1 + 1, '+') : NULL;
    uint8_t raw[40];
    if (!p1 || !p2 || strlen(vkey) > NOTE_VKEY_MAX)
        return VERITY_EINVAL;
    size_t nlen = (size_t)(p1 - vkey);
    if (nlen == 0 || nlen > NOTE_NAME_MAX || p2 - p1 - 1 != 8)
        return VERITY_EINVAL;
    memcpy(out->name, vkey, nlen);
    out->name[nlen] = '\0';
    if (!note_name_ok(out->name))
        return VERITY_EINVAL;
    uint32_t id = 0;
    for (const char *c = p1 + 1; c < p2; c++) {
        int d = (*c >= '0' && *c <= '9') ? *c - '0' : (*c >= 'a' && *c <= 'f') ? *c - 'a' + 10 : -1;
        if (d < 0)
            return VERITY_EINVAL;
        id = id << 4 | (uint32_t)d;
    }
    long n = note_b64_decode(p2 + 1, strlen(p2 + 1), raw, sizeof raw);
    if (n != 33 || (raw[0] != NOTE_TYPE_ED25519 && raw[0] != NOTE_TYPE_COSIG))
        return VERITY_EINVAL;
    out->type = raw[0];
    memcpy(out->pub, raw + 1, 32);
    out->id = id;
    if (note_key_id(out->name, out->type, out->pub) != id)
        return VERITY_EINVAL;
    return 0;
}

/* ---- checkpoint text --------------------------------------------------------- */

int note_checkpoint_text(const char *origin, uint64_t size, const uint8_t root[32], char *out,
                         size_t cap)
{
    char b64[48];
    size_t olen = strlen(origin);
    if (olen == 0 || olen > NOTE_ORIGIN_MAX || strchr(origin, '\n'))
        return VERITY_EINVAL;
    for (size_t i = 0; i < olen; i++)
        if ((unsigned char)origin[i] < 0x20)
            return VERITY_EINVAL;
    note_b64_encode(root, 32, b64);
    int n = snprintf(out, cap, "%s\n%" PRIu64 "\n%s\n", origin, size, b64);
    return n > 0 && (size_t)n < cap ? n : VERITY_EINVAL;
}

/* Next line of [p, end): returns its length without "\n", or -1 when the
 * text ends without a newline. */
static long line_len(const char *p, const char *end)
{
    const char *nl = memchr(p, '\n', (size_t)(end - p));
    return nl ? (long)(nl - p) : -1;
}

static int parse_u64(const char *p, size_t n, uint64_t *out)
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

int note_checkpoint_parse(const char *text, size_t len, char *origin, size_t origin_cap,
                          uint64_t *size, uint8_t root[32])
{
    const char *p = text, *end = text + len;
    long l0 = line_len(p, end);
    if (l0 <= 0 || (size_t)l0 >= origin_cap)
        return VERITY_ECORRUPT;
    memcpy(origin, p, (size_t)l0);
    origin[l0] = '\0';
    p += l0 + 1;
    long l1 = line_len(p, end);
    if (l1 <= 0 || parse_u64(p, (size_t)l1, size))
        return VERITY_ECORRUPT;
    p += l1 + 1;
    long l2 = line_len(p, end);
    if (l2 != 44 || note_b64_decode(p, 44, root, 32) != 32)
        return VERITY_ECORRUPT;
    return 0;
}

/* ---- signing --------------------------------------------------------------- */

static int ed25519_sign(EVP_PKEY *key, const uint8_t *msg, size_t len, uint8_t sig[64])
{
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    size_t slen = 64;
    int rc = 0;
    if (!md)
        return -ENOMEM;
    if (EVP_DigestSignInit(md, NULL, NULL, NULL, key) != 1 ||
        EVP_DigestSign(md, sig, &slen, msg, len) != 1 || slen != 64)
        rc = VERITY_EINVAL;
    EVP_MD_CTX_free(md);
    return rc;
}

static bool ed25519_verify(const uint8_t pub[32], const uint8_t *msg, size_t len,
                           const uint8_t sig[64])
{
    EVP_PKEY *k = EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, NULL, pub, 32);
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    bool ok = k && md && EVP_DigestVerifyInit(md, NULL, NULL, NULL, k) == 1 &&
              EVP_DigestVerify(md, sig, 64, msg, len) == 1;
    EVP_MD_CTX_free(md);
    EVP_PKEY_free(k);
    return ok;
}

static bool text_ok(const char *text, size_t len)
{
    if (len == 0 || text[len - 1] != '\n' || len > NOTE_BYTES_MAX)
        return false;
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)text[i] < 0x20 && text[i] != '\n')
            return false;
    return true;
}

static int sig_line(const char *name, const uint8_t *sig, size_t siglen, char *out, size_t cap)
{
    char b64[160];
    if (siglen > 100)
        return VERITY_EINVAL;
    note_b64_encode(sig, siglen, b64);
    int n = snprintf(out, cap, "%s %s %s\n", em_dash, name, b64);
    return n > 0 && (size_t)n < cap ? n : VERITY_EINVAL;
}

int note_sign(const char *text, size_t len, const char *name, EVP_PKEY *key, char *out, size_t cap)
{
    uint8_t pub[32], sig[4 + 64];
    int rc;
    if (!text_ok(text, len) || !note_name_ok(name) || cap < len + 2)
        return VERITY_EINVAL;
    if ((rc = note_raw_public(key, pub)))
        return rc;
    uint32_t id = note_key_id(name, NOTE_TYPE_ED25519, pub);
    sig[0] = (uint8_t)(id >> 24), sig[1] = (uint8_t)(id >> 16), sig[2] = (uint8_t)(id >> 8);
    sig[3] = (uint8_t)id;
    if ((rc = ed25519_sign(key, (const uint8_t *)text, len, sig + 4)))
        return rc;
    memmove(out, text, len);
    out[len] = '\n';
    int n = sig_line(name, sig, sizeof sig, out + len + 1, cap - len - 1);
    if (n < 0)
        return n;
    return (int)(len + 1 + (size_t)n);
}

/* "cosignature/v1\ntime <t>\n" || text, in a heap buffer. */
static uint8_t *cosig_message(const char *text, size_t len, uint64_t t, size_t *mlen)
{
    char hdr[64];
    int h = snprintf(hdr, sizeof hdr, "cosignature/v1\ntime %" PRIu64 "\n", t);
    uint8_t *m = malloc((size_t)h + len);
    if (!m)
        return NULL;
    memcpy(m, hdr, (size_t)h);
    memcpy(m + h, text, len);
    *mlen = (size_t)h + len;
    return m;
}

int note_cosign_line(const char *text, size_t len, const char *name, EVP_PKEY *key, uint64_t time_s,
                     char *out, size_t cap)
{
    uint8_t pub[32], sig[4 + 8 + 64];
    size_t mlen = 0;
    int rc;
    if (!text_ok(text, len) || !note_name_ok(name) || time_s > INT64_MAX)
        return VERITY_EINVAL;
    if ((rc = note_raw_public(key, pub)))
        return rc;
    uint32_t id = note_key_id(name, NOTE_TYPE_COSIG, pub);
    for (int i = 0; i < 4; i++)
        sig[i] = (uint8_t)(id >> (24 - 8 * i));
    for (int i = 0; i < 8; i++)
        sig[4 + i] = (uint8_t)(time_s >> (56 - 8 * i));
    uint8_t *m = cosig_message(text, len, time_s, &mlen);
    if (!m)
        return -ENOMEM;
    rc = ed25519_sign(key, m, mlen, sig + 12);
    free(m);
    if (rc)
        return rc;
    return sig_line(name, sig, sizeof sig, out, cap);
}

/* ---- verification ---------------------------------------------------------- */

/* Checks one signature by a matching key. */
static bool sig_verifies(const struct note_vkey *k, const char *text, size_t tlen,
                         const uint8_t *sig, size_t slen)
{
    if (k->type == NOTE_TYPE_ED25519)
        return slen == 4 + 64 && ed25519_verify(k->pub, (const uint8_t *)text, tlen, sig + 4);
    if (slen != 4 + 8 + 64)
        return false;
    uint64_t t = 0;
    for (int i = 0; i < 8; i++)
        t = t << 8 | sig[4 + i];
    if (t > INT64_MAX)
        return false;
    size_t mlen = 0;
    uint8_t *m = cosig_message(text, tlen, t, &mlen);
    bool ok = m && ed25519_verify(k->pub, m, mlen, sig + 12);
    free(m);
    return ok;
}

int note_open(const char *msg, size_t len, const struct note_vkey *keys, size_t nkeys,
              size_t *text_len, uint32_t *verified)
{
    if (len == 0 || len > NOTE_BYTES_MAX || msg[len - 1] != '\n')
        return VERITY_ECORRUPT;
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)msg[i] < 0x20 && msg[i] != '\n')
            return VERITY_ECORRUPT;
    /* the text ends at the last "\n\n" */
    size_t split = 0;
    bool found = false;
    for (size_t i = len - 1; i > 0; i--) {
        if (msg[i] == '\n' && msg[i - 1] == '\n') {
            split = i; /* msg[0, split) is the text, msg[split] the blank line */
            found = true;
            break;
        }
    }
    if (!found || split == 0)
        return VERITY_ECORRUPT;
    size_t tlen = split;
    const char *p = msg + split + 1, *end = msg + len;
    uint32_t ok_mask = 0;
    int nsig = 0;
    bool bad = false;
    if (p >= end)
        return VERITY_ECORRUPT;
    while (p < end) {
        long ll = line_len(p, end);
        if (ll <= 0 || ++nsig > NOTE_SIGS_MAX)
            return VERITY_ECORRUPT;
        const char *le = p + ll;
        if ((size_t)ll < 5 || memcmp(p, em_dash, 3) != 0 || p[3] != ' ')
            return VERITY_ECORRUPT;
        const char *name = p + 4;
        const char *sp = memchr(name, ' ', (size_t)(le - name));
        if (!sp || sp == name || (size_t)(sp - name) > NOTE_NAME_MAX)
            return VERITY_ECORRUPT;
        char nm[NOTE_NAME_MAX + 1];
        memcpy(nm, name, (size_t)(sp - name));
        nm[sp - name] = '\0';
        if (!note_name_ok(nm))
            return VERITY_ECORRUPT;
        uint8_t sig[512];
        long slen = note_b64_decode(sp + 1, (size_t)(le - sp - 1), sig, sizeof sig);
        if (slen < 5)
            return VERITY_ECORRUPT;
        uint32_t id =
            (uint32_t)sig[0] << 24 | (uint32_t)sig[1] << 16 | (uint32_t)sig[2] << 8 | sig[3];
        for (size_t k = 0; k < nkeys && k < 32; k++) {
            if (keys[k].id != id || strcmp(keys[k].name, nm) != 0)
                continue;
            if (sig_verifies(&keys[k], msg, tlen, sig, (size_t)slen))
                ok_mask |= 1u << k;
            else
                bad = true;
        }
        p = le + 1;
    }
    if (bad || ok_mask == 0)
        return VERITY_ESIGNATURE;
    *text_len = tlen;
    if (verified)
        *verified = ok_mask;
    return 0;
}
