/*
 * Kafka primitive types (see kwire.h). Pure functions over caller memory;
 * no libevent, no broker state, so the fuzzer drives exactly this code.
 */
#include "broker/kafka/kwire.h"

#include <errno.h>
#include <malloc.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "verity/errors.h"

void kr_init(struct kr *r, const uint8_t *buf, size_t len)
{
    r->p = buf;
    r->end = buf + len;
    r->err = 0;
}

/* Returns a pointer to n readable bytes and advances, or NULL (sticky error). */
static const uint8_t *take(struct kr *r, size_t n)
{
    if (r->err || kr_left(r) < n) {
        r->err = VERITY_ECORRUPT;
        return NULL;
    }
    const uint8_t *p = r->p;
    r->p += n;
    return p;
}

int8_t kr_i8(struct kr *r)
{
    const uint8_t *p = take(r, 1);
    return p ? (int8_t)p[0] : 0;
}

int16_t kr_i16(struct kr *r)
{
    const uint8_t *p = take(r, 2);
    return p ? (int16_t)kbe16(p) : 0;
}

int32_t kr_i32(struct kr *r)
{
    const uint8_t *p = take(r, 4);
    return p ? (int32_t)kbe32(p) : 0;
}

int64_t kr_i64(struct kr *r)
{
    const uint8_t *p = take(r, 8);
    return p ? (int64_t)kbe64(p) : 0;
}

static struct kstr run(struct kr *r, int32_t len, bool nullable)
{
    struct kstr s = {NULL, -1};
    if (r->err)
        return s;
    if (len < 0) {
        if (len != -1 || !nullable)
            r->err = VERITY_ECORRUPT;
        return s;
    }
    const uint8_t *p = take(r, (size_t)len);
    if (p) {
        s.p = p;
        s.len = len;
    }
    return s;
}

struct kstr kr_str(struct kr *r, bool nullable)
{
    int16_t len = kr_i16(r);
    return run(r, len, nullable);
}

struct kstr kr_bytes(struct kr *r, bool nullable)
{
    int32_t len = kr_i32(r);
    return run(r, len, nullable);
}

int32_t kr_array(struct kr *r, bool nullable, size_t min_elem)
{
    int32_t n = kr_i32(r);
    if (r->err)
        return 0;
    if (n < 0) {
        if (n != -1 || !nullable) {
            r->err = VERITY_ECORRUPT;
            return 0;
        }
        return -1;
    }
    if (min_elem == 0)
        min_elem = 1;
    if (n > KW_ARRAY_MAX || (size_t)n > kr_left(r) / min_elem) {
        r->err = VERITY_ECORRUPT;
        return 0;
    }
    return n;
}

bool kstr_copy(struct kstr s, char *out, size_t cap)
{
    if (!s.p || s.len < 0 || (size_t)s.len >= cap || memchr(s.p, 0, (size_t)s.len))
        return false;
    memcpy(out, s.p, (size_t)s.len);
    out[s.len] = '\0';
    return true;
}

bool kstr_eq(struct kstr s, const char *z)
{
    size_t n = strlen(z);
    return s.p && (size_t)s.len == n && memcmp(s.p, z, n) == 0;
}

int kv_get_varint(const uint8_t **pp, const uint8_t *end, int64_t *v)
{
    const uint8_t *p = *pp;
    uint64_t u = 0;
    for (unsigned shift = 0; shift < 64; shift += 7) {
        if (p >= end)
            return VERITY_ECORRUPT;
        uint8_t b = *p++;
        if (shift == 63 && (b & 0x7e))
            return VERITY_ECORRUPT;
        u |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80)) {
            *pp = p;
            *v = (int64_t)(u >> 1) ^ -(int64_t)(u & 1);
            return 0;
        }
    }
    return VERITY_ECORRUPT;
}

size_t kv_put_varint(uint8_t *p, int64_t v)
{
    uint64_t u = ((uint64_t)v << 1) ^ (uint64_t)(v >> 63);
    size_t n = 0;
    while (u >= 0x80) {
        p[n++] = (uint8_t)(u | 0x80);
        u >>= 7;
    }
    p[n++] = (uint8_t)u;
    return n;
}

size_t kuv_put(uint8_t *p, uint64_t u)
{
    size_t n = 0;
    while (u >= 0x80) {
        p[n++] = (uint8_t)(u | 0x80);
        u >>= 7;
    }
    p[n++] = (uint8_t)u;
    return n;
}

size_t kv_varint_size(int64_t v)
{
    uint64_t u = ((uint64_t)v << 1) ^ (uint64_t)(v >> 63);
    size_t n = 1;
    while (u >= 0x80) {
        n++;
        u >>= 7;
    }
    return n;
}

void kw_init(struct kw *w)
{
    memset(w, 0, sizeof *w);
}

void kw_deinit(struct kw *w)
{
    free(w->buf);
    memset(w, 0, sizeof *w);
}

#define KW_POOL_N 4
#define KW_POOL_MIN (64u << 10)
#define KW_POOL_MAX (16u << 20)

static pthread_mutex_t kw_pool_mu = PTHREAD_MUTEX_INITIALIZER;
static void *kw_pool[KW_POOL_N];
static size_t kw_pool_cap[KW_POOL_N];
static size_t kw_pool_n;

void kw_pool_take(struct kw *w, size_t n)
{
    if (w->buf || w->err || n < KW_POOL_MIN)
        return;
    void *buf = NULL;
    size_t cap = 0;
    pthread_mutex_lock(&kw_pool_mu);
    for (size_t i = 0; i < kw_pool_n; i++) {
        if (kw_pool_cap[i] >= n) {
            buf = kw_pool[i];
            cap = kw_pool_cap[i];
            kw_pool_n--;
            kw_pool[i] = kw_pool[kw_pool_n];
            kw_pool_cap[i] = kw_pool_cap[kw_pool_n];
            break;
        }
    }
    pthread_mutex_unlock(&kw_pool_mu);
    if (buf) {
        w->buf = buf;
        w->cap = cap;
    }
}

void kw_pool_give(void *buf)
{
    if (!buf)
        return;
    size_t cap = malloc_usable_size(buf);
    if (cap >= KW_POOL_MIN && cap <= KW_POOL_MAX) {
        pthread_mutex_lock(&kw_pool_mu);
        if (kw_pool_n < KW_POOL_N) {
            kw_pool[kw_pool_n] = buf;
            kw_pool_cap[kw_pool_n] = cap;
            kw_pool_n++;
            buf = NULL;
        }
        pthread_mutex_unlock(&kw_pool_mu);
    }
    free(buf);
}

bool kw_grow(struct kw *w, size_t n)
{
    if (w->err)
        return false;
    if (w->cap - w->len >= n)
        return true;
    if (n > SIZE_MAX - w->len) {
        w->err = -ENOMEM;
        return false;
    }
    uint8_t *nb = realloc(w->buf, w->len + n);
    if (!nb) {
        w->err = -ENOMEM;
        return false;
    }
    w->buf = nb;
    w->cap = w->len + n;
    return true;
}

uint8_t *kw_reserve_grow(struct kw *w, size_t n)
{
    if (w->err)
        return NULL;
    if (w->cap - w->len < n) {
        size_t cap = w->cap ? w->cap : 256;
        while (cap - w->len < n) {
            if (cap > SIZE_MAX / 2) {
                w->err = -ENOMEM;
                return NULL;
            }
            cap *= 2;
        }
        uint8_t *nb = realloc(w->buf, cap);
        if (!nb) {
            w->err = -ENOMEM;
            return NULL;
        }
        w->buf = nb;
        w->cap = cap;
    }
    uint8_t *p = w->buf + w->len;
    w->len += n;
    return p;
}

void kw_i8(struct kw *w, int8_t v)
{
    uint8_t *p = kw_reserve(w, 1);
    if (p)
        p[0] = (uint8_t)v;
}

void kw_i16(struct kw *w, int16_t v)
{
    uint8_t *p = kw_reserve(w, 2);
    if (p)
        kput_be16(p, (uint16_t)v);
}

void kw_i32(struct kw *w, int32_t v)
{
    uint8_t *p = kw_reserve(w, 4);
    if (p)
        kput_be32(p, (uint32_t)v);
}

void kw_i64(struct kw *w, int64_t v)
{
    uint8_t *p = kw_reserve(w, 8);
    if (p)
        kput_be64(p, (uint64_t)v);
}

void kw_bool(struct kw *w, bool v)
{
    kw_i8(w, v ? 1 : 0);
}

void kw_raw(struct kw *w, const void *src, size_t n)
{
    uint8_t *p = kw_reserve(w, n);
    if (p && n)
        memcpy(p, src, n);
}

void kw_str(struct kw *w, const char *s)
{
    if (!s) {
        kw_i16(w, -1);
        return;
    }
    size_t n = strlen(s);
    if (n > KW_STRING_MAX)
        n = KW_STRING_MAX;
    kw_i16(w, (int16_t)n);
    kw_raw(w, s, n);
}

void kw_kstr(struct kw *w, struct kstr s)
{
    if (!s.p || s.len < 0) {
        kw_i16(w, -1);
        return;
    }
    kw_i16(w, (int16_t)s.len);
    kw_raw(w, s.p, (size_t)s.len);
}

void kw_put_i32_at(struct kw *w, size_t pos, int32_t v)
{
    if (!w->err && pos + 4 <= w->len)
        kput_be32(w->buf + pos, (uint32_t)v);
}
