/*
 * Small helpers of the sharing gateway: base64url, hex, HMAC-SHA-256,
 * HKDF-SHA-256 (OpenSSL 3 EVP_KDF), RFC 3339 times, durations, canonical
 * JSON, atomic file writes and PEM key files.
 */
/* SHA256_* are deprecated in OpenSSL 3; used here on purpose (see sh_sha256v). */
#define OPENSSL_SUPPRESS_DEPRECATED

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/core_names.h>
#include <openssl/hmac.h>
#include <openssl/kdf.h>
#include <openssl/params.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/sha.h>

#include "consumer/share/share.h"

static const char B64U[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

size_t sh_b64url_enc(const uint8_t *in, size_t n, char *out)
{
    size_t o = 0, i = 0;
    for (; i + 3 <= n; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
        out[o++] = B64U[v >> 18];
        out[o++] = B64U[(v >> 12) & 63];
        out[o++] = B64U[(v >> 6) & 63];
        out[o++] = B64U[v & 63];
    }
    if (n - i == 1) {
        uint32_t v = (uint32_t)in[i] << 16;
        out[o++] = B64U[v >> 18];
        out[o++] = B64U[(v >> 12) & 63];
    } else if (n - i == 2) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8;
        out[o++] = B64U[v >> 18];
        out[o++] = B64U[(v >> 12) & 63];
        out[o++] = B64U[(v >> 6) & 63];
    }
    out[o] = '\0';
    return o;
}

char *sh_b64url_str(const uint8_t *in, size_t n)
{
    char *s = malloc(4 * ((n + 2) / 3) + 1);
    if (s)
        sh_b64url_enc(in, n, s);
    return s;
}

static int b64v(char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '-')
        return 62;
    if (c == '_')
        return 63;
    return -1;
}

int sh_b64url_dec(const char *in, size_t n, uint8_t *out, size_t cap, size_t *out_len)
{
    if (n % 4 == 1)
        return VERITY_EINVAL;
    size_t need = n / 4 * 3 + (n % 4 ? n % 4 - 1 : 0);
    if (need > cap)
        return VERITY_EINVAL;
    size_t o = 0;
    uint32_t acc = 0;
    int bits = 0;
    for (size_t i = 0; i < n; i++) {
        int v = b64v(in[i]);
        if (v < 0)
            return VERITY_EINVAL;
        acc = (acc << 6) | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[o++] = (uint8_t)(acc >> bits);
            acc &= (1u << bits) - 1;
        }
    }
    if (acc != 0) /* non-canonical trailing bits */
        return VERITY_EINVAL;
    *out_len = o;
    return 0;
}

void sh_hex(const uint8_t *in, size_t n, char *out)
{
    static const char hx[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = hx[in[i] >> 4];
        out[2 * i + 1] = hx[in[i] & 15];
    }
    out[2 * n] = '\0';
}

static int hexv(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

int sh_unhex(const char *s, uint8_t *out, size_t n)
{
    if (strlen(s) != 2 * n)
        return VERITY_EINVAL;
    for (size_t i = 0; i < n; i++) {
        int a = hexv(s[2 * i]), b = hexv(s[2 * i + 1]);
        if (a < 0 || b < 0)
            return VERITY_EINVAL;
        out[i] = (uint8_t)(a << 4 | b);
    }
    return 0;
}

/*
 * SHA-256 and HMAC-SHA-256 through OpenSSL's low-level SHA256_* functions.
 * They are deprecated in OpenSSL 3 (still present, same SHA-NI/AVX code
 * underneath), but on the short inputs of an export (positions, paths,
 * single values) the EVP interface's per-call provider dispatch cost two
 * to three times the hashing itself, and an export computes about eleven
 * digests per record: with EVP they were the largest item of the
 * gateway's CPU (perf, docs/PERFORMANCE.md). The deprecation warning is
 * suppressed for this file only (OPENSSL_SUPPRESS_DEPRECATED above).
 *
 * HMAC keeps, per thread, the SHA-256 states after the padded inner and
 * outer keys of the last few keys used (an export uses two per share), so
 * an HMAC of a short message is two compressions instead of four; keys are
 * matched with CRYPTO_memcmp, and sh_hmac_forget wipes the cache.
 */
int sh_sha256v(const void *const *parts, const size_t *lens, size_t n, uint8_t out[32])
{
    SHA256_CTX c;
    int ok = SHA256_Init(&c) == 1;
    for (size_t i = 0; ok && i < n; i++)
        ok = SHA256_Update(&c, parts[i], lens[i]) == 1;
    ok = ok && SHA256_Final(out, &c) == 1;
    return ok ? 0 : VERITY_EINVAL;
}

#define HMAC_CACHE 4
struct hmac_pre {
    uint8_t key[64];
    size_t klen;
    bool used;
    SHA256_CTX in, out;           /* after the inner / outer padded key */
};
static __thread struct hmac_pre tl_hmac[HMAC_CACHE];
static __thread unsigned tl_hmac_next;

void sh_hmac_forget(void)
{
    OPENSSL_cleanse(tl_hmac, sizeof tl_hmac);
    tl_hmac_next = 0;
}

static const struct hmac_pre *hmac_key(const uint8_t *key, size_t klen)
{
    for (unsigned i = 0; i < HMAC_CACHE; i++)
        if (tl_hmac[i].used && tl_hmac[i].klen == klen && CRYPTO_memcmp(tl_hmac[i].key, key, klen) == 0)
            return &tl_hmac[i];
    struct hmac_pre *h = &tl_hmac[tl_hmac_next++ % HMAC_CACHE];
    uint8_t ipad[64], opad[64];
    memset(ipad, 0x36, sizeof ipad);
    memset(opad, 0x5c, sizeof opad);
    for (size_t i = 0; i < klen; i++) {
        ipad[i] ^= key[i];
        opad[i] ^= key[i];
    }
    h->used = SHA256_Init(&h->in) == 1 && SHA256_Update(&h->in, ipad, 64) == 1 &&
              SHA256_Init(&h->out) == 1 && SHA256_Update(&h->out, opad, 64) == 1;
    OPENSSL_cleanse(ipad, sizeof ipad);
    OPENSSL_cleanse(opad, sizeof opad);
    if (!h->used)
        return NULL;
    memcpy(h->key, key, klen);
    h->klen = klen;
    return h;
}

/* HMAC-SHA-256 (RFC 2104); keys of at most 64 bytes. */
int sh_hmac(const uint8_t *key, size_t klen, const void *d, size_t n, uint8_t out[32])
{
    if (klen > 64)
        return VERITY_EINVAL;
    const struct hmac_pre *h = hmac_key(key, klen);
    if (!h)
        return VERITY_EINVAL;
    SHA256_CTX c = h->in;
    uint8_t inner[32];
    int ok = SHA256_Update(&c, d, n) == 1 && SHA256_Final(inner, &c) == 1;
    c = h->out;
    ok = ok && SHA256_Update(&c, inner, 32) == 1 && SHA256_Final(out, &c) == 1;
    OPENSSL_cleanse(&c, sizeof c);
    return ok ? 0 : VERITY_EINVAL;
}

int sh_hkdf(const uint8_t *ikm, size_t ikm_len, const void *salt, size_t salt_len,
            const void *info, size_t info_len, uint8_t *out, size_t out_len)
{
    int rc = VERITY_EINVAL;
    EVP_KDF *kdf = EVP_KDF_fetch(NULL, "HKDF", NULL);
    EVP_KDF_CTX *ctx = kdf ? EVP_KDF_CTX_new(kdf) : NULL;
    if (!ctx)
        goto out;
    OSSL_PARAM ps[5], *p = ps;
    *p++ = OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, (char *)"SHA256", 0);
    *p++ = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY, (void *)ikm, ikm_len);
    if (salt_len)
        *p++ = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_SALT, (void *)salt, salt_len);
    *p++ = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO, (void *)info, info_len);
    *p = OSSL_PARAM_construct_end();
    if (EVP_KDF_derive(ctx, out, out_len, ps) == 1)
        rc = 0;
out:
    EVP_KDF_CTX_free(ctx);
    EVP_KDF_free(kdf);
    return rc;
}

int sh_random(uint8_t *out, size_t n)
{
    return RAND_bytes(out, (int)n) == 1 ? 0 : -EIO;
}

static int digits(const char *s, int n, int *out)
{
    int v = 0;
    for (int i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (s[i] - '0');
    }
    *out = v;
    return 0;
}

int sh_time_parse(const char *s, int64_t *ms_out)
{
    int Y, M, D, h = 0, mi = 0, se = 0, ms = 0, off = 0;
    size_t n = strlen(s);
    if (n < 10 || digits(s, 4, &Y) || s[4] != '-' || digits(s + 5, 2, &M) || s[7] != '-' ||
        digits(s + 8, 2, &D))
        return VERITY_EINVAL;
    const char *p = s + 10;
    if (*p) {
        if ((*p != 'T' && *p != 't' && *p != ' ') || strlen(p) < 9 || digits(p + 1, 2, &h) ||
            p[3] != ':' || digits(p + 4, 2, &mi) || p[6] != ':' || digits(p + 7, 2, &se))
            return VERITY_EINVAL;
        p += 9;
        if (*p == '.') {
            p++;
            int k = 0;
            while (*p >= '0' && *p <= '9' && k < 9) {
                if (k < 3)
                    ms = ms * 10 + (*p - '0');
                p++, k++;
            }
            if (k == 0)
                return VERITY_EINVAL;
            for (; k < 3; k++)
                ms *= 10;
        }
        if (*p == 'Z' || *p == 'z') {
            p++;
        } else if ((*p == '+' || *p == '-') && strlen(p) == 6 && p[3] == ':') {
            int oh, om;
            if (digits(p + 1, 2, &oh) || digits(p + 4, 2, &om) || oh > 23 || om > 59)
                return VERITY_EINVAL;
            off = (oh * 60 + om) * (*p == '+' ? 1 : -1);
            p += 6;
        } else {
            return VERITY_EINVAL;
        }
        if (*p)
            return VERITY_EINVAL;
    }
    if (M < 1 || M > 12 || D < 1 || D > 31 || h > 23 || mi > 59 || se > 60)
        return VERITY_EINVAL;
    struct tm tm = {0};
    tm.tm_year = Y - 1900;
    tm.tm_mon = M - 1;
    tm.tm_mday = D;
    tm.tm_hour = h;
    tm.tm_min = mi;
    tm.tm_sec = se;
    time_t t = timegm(&tm);
    if (tm.tm_mday != D) /* 2026-02-31 */
        return VERITY_EINVAL;
    *ms_out = ((int64_t)t - (int64_t)off * 60) * 1000 + ms;
    return 0;
}

void sh_time_fmt(int64_t ms, char out[32])
{
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    if (!gmtime_r(&t, &tm) || strftime(out, 32, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
        strcpy(out, "1970-01-01T00:00:00Z");
}

int sh_duration_parse(const char *s, int64_t *ms_out)
{
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || end == s || v <= 0 || v > 100000000LL)
        return VERITY_EINVAL;
    int64_t unit;
    if (strcmp(end, "s") == 0)
        unit = 1000;
    else if (strcmp(end, "m") == 0)
        unit = 60000;
    else if (strcmp(end, "h") == 0)
        unit = 3600000;
    else if (strcmp(end, "d") == 0)
        unit = 86400000;
    else
        return VERITY_EINVAL;
    *ms_out = v * unit;
    return 0;
}

int64_t sh_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

struct canon_buf {
    char *p;
    size_t n, cap;
};

static int canon_put(const char *b, size_t n, void *arg)
{
    struct canon_buf *c = arg;
    if (c->cap - c->n <= n) {
        size_t cap = c->cap ? c->cap : 64;
        while (cap - c->n <= n)
            cap *= 2;
        char *np = realloc(c->p, cap);
        if (!np)
            return -1;
        c->p = np;
        c->cap = cap;
    }
    memcpy(c->p + c->n, b, n);
    c->n += n;
    c->p[c->n] = '\0';
    return 0;
}

/* Written through a callback into a libc buffer (not json_dumps): callers
 * free() it, whatever allocator jansson uses (the gateway gives jansson a
 * per-record arena, gateway.c). */
char *sh_canon(const json_t *v)
{
    struct canon_buf c = {0};
    if (json_dump_callback(v, canon_put, &c,
                           JSON_COMPACT | JSON_SORT_KEYS | JSON_ENCODE_ANY |
                               JSON_REAL_PRECISION(17)) != 0 ||
        !c.p) {
        free(c.p);
        return NULL;
    }
    return c.p;
}

int sh_read_file(const char *path, size_t max, char **out, size_t *len_out)
{
    int rc = 0;
    char *buf = NULL;
    FILE *f = fopen(path, "rb");
    if (!f)
        return -errno;
    buf = malloc(max + 1);
    if (!buf) {
        rc = -ENOMEM;
        goto out;
    }
    size_t n = fread(buf, 1, max + 1, f);
    if (ferror(f)) {
        rc = -EIO;
        goto out;
    }
    if (n > max) {
        rc = VERITY_ELIMIT;
        goto out;
    }
    buf[n] = '\0';
    *out = buf;
    buf = NULL;
    if (len_out)
        *len_out = n;
out:
    free(buf);
    fclose(f);
    return rc;
}

int sh_write_file(const char *path, const void *data, size_t len, int mode)
{
    char tmp[4200];
    if ((size_t)snprintf(tmp, sizeof tmp, "%s.tmp", path) >= sizeof tmp)
        return VERITY_EINVAL;
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
    if (fd < 0)
        return -errno;
    const uint8_t *p = data;
    size_t left = len;
    while (left) {
        ssize_t w = write(fd, p, left);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            int e = -errno;
            close(fd);
            unlink(tmp);
            return e;
        }
        p += w;
        left -= (size_t)w;
    }
    if (fsync(fd) != 0 || close(fd) != 0) {
        int e = -errno;
        unlink(tmp);
        return e;
    }
    if (rename(tmp, path) != 0)
        return -errno;
    return 0;
}

int sh_load_private(const char *path, EVP_PKEY **out)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return -errno;
    EVP_PKEY *k = PEM_read_PrivateKey(f, NULL, NULL, NULL);
    fclose(f);
    if (!k)
        return VERITY_EINVAL;
    *out = k;
    return 0;
}

int sh_load_public(const char *path, EVP_PKEY **out)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return -errno;
    EVP_PKEY *k = PEM_read_PUBKEY(f, NULL, NULL, NULL);
    fclose(f);
    if (!k)
        return VERITY_EINVAL;
    *out = k;
    return 0;
}

int sh_raw_public(EVP_PKEY *k, uint8_t out[32])
{
    size_t n = 32;
    if (EVP_PKEY_get_raw_public_key(k, out, &n) != 1 || n != 32)
        return VERITY_EINVAL;
    return 0;
}
