/*
 * kwire: the Kafka protocol's primitive types (big-endian integers, int16-
 * length strings, int32-length bytes and arrays, zigzag varints), read from
 * a bounded buffer and written to a growable one. Only the non-flexible
 * (pre-KIP-482) encodings are implemented: the listener advertises no
 * flexible version (docs/KAFKA.md).
 *
 * Reading never goes past the end of the buffer: a read that would sets
 * r->err (sticky) and returns a zero value, so a handler decodes a whole
 * request and checks kr_ok() once. Arrays are bounded by the bytes left
 * (an element takes at least one byte) and by KW_ARRAY_MAX.
 *
 * Writing grows an owned buffer; an allocation failure is sticky too
 * (w->err), checked once when the response is sent.
 */
#ifndef VERITY_KWIRE_H
#define VERITY_KWIRE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define KW_ARRAY_MAX   100000 /* elements in any request array */
#define KW_STRING_MAX  32767  /* int16 length */

struct kr {
    const uint8_t *p;
    const uint8_t *end;
    int err; /* 0, or VERITY_ECORRUPT once a read ran past the end */
};

/* A borrowed string or byte run inside the request buffer. */
struct kstr {
    const uint8_t *p; /* NULL for a null string / bytes */
    int32_t len;      /* -1 when null */
};

void kr_init(struct kr *r, const uint8_t *buf, size_t len);
static inline bool kr_ok(const struct kr *r) { return r->err == 0; }
static inline size_t kr_left(const struct kr *r) { return (size_t)(r->end - r->p); }
int8_t kr_i8(struct kr *r);
int16_t kr_i16(struct kr *r);
int32_t kr_i32(struct kr *r);
int64_t kr_i64(struct kr *r);
/* int16 length, -1 = null (allowed only when nullable). */
struct kstr kr_str(struct kr *r, bool nullable);
/* int32 length, -1 = null. */
struct kstr kr_bytes(struct kr *r, bool nullable);
/* int32 count of an array whose elements take at least min_elem bytes;
 * -1 (null) only when nullable. Bounded by the bytes left and KW_ARRAY_MAX. */
int32_t kr_array(struct kr *r, bool nullable, size_t min_elem);
/* Copies s into a NUL-terminated buffer of cap bytes; false when it does not
 * fit, is null, or holds a NUL. */
bool kstr_copy(struct kstr s, char *out, size_t cap);
bool kstr_eq(struct kstr s, const char *z);

/* Zigzag varints (Kafka record fields). 0 and *v set, or VERITY_ECORRUPT. */
int kv_get_varint(const uint8_t **p, const uint8_t *end, int64_t *v);
/* Bytes written (at most 10). */
size_t kv_put_varint(uint8_t *p, int64_t v);
size_t kv_varint_size(int64_t v);
/* Unsigned varint (flexible versions' compact lengths); bytes written. */
size_t kuv_put(uint8_t *p, uint64_t v);

struct kw {
    uint8_t *buf; /* owned */
    size_t len;
    size_t cap;
    int err; /* -ENOMEM once an allocation failed */
};

void kw_init(struct kw *w);
void kw_deinit(struct kw *w);
/* Large answer buffers are kept for the next answer instead of going back to
 * the allocator: a fresh multi-megabyte buffer is fresh pages, and faulting
 * them in cost more than converting the records into them. kw_pool_take
 * gives an empty w at least n bytes of capacity (from the pool when one
 * fits); kw_pool_give takes a buffer back (freeing it when the pool is full
 * or the buffer small or huge). Process-wide, locked. */
void kw_pool_take(struct kw *w, size_t n);
void kw_pool_give(void *buf);
/* Room for n more bytes; returns where they go, or NULL (w->err set). */
/* n more bytes at the end of w (NULL once w->err is set). The fast path is
 * inline: the record converter calls it several times per record. */
uint8_t *kw_reserve_grow(struct kw *w, size_t n);
static inline uint8_t *kw_reserve(struct kw *w, size_t n)
{
    if (__builtin_expect(w->err == 0 && w->cap - w->len >= n, 1)) {
        uint8_t *p = w->buf + w->len;
        w->len += n;
        return p;
    }
    return kw_reserve_grow(w, n);
}
/* Capacity for n more bytes without writing them (one allocation up front
 * instead of doublings); false (w->err set) when it cannot be had. */
bool kw_grow(struct kw *w, size_t n);
void kw_i8(struct kw *w, int8_t v);
void kw_i16(struct kw *w, int16_t v);
void kw_i32(struct kw *w, int32_t v);
void kw_i64(struct kw *w, int64_t v);
void kw_bool(struct kw *w, bool v);
void kw_raw(struct kw *w, const void *p, size_t n);
/* int16-length string; NULL writes a null string (-1). */
void kw_str(struct kw *w, const char *s);
void kw_kstr(struct kw *w, struct kstr s);
/* Overwrites a big-endian int32 at pos (a length or count placeholder). */
void kw_put_i32_at(struct kw *w, size_t pos, int32_t v);

static inline uint16_t kbe16(const uint8_t *p) { return (uint16_t)(p[0] << 8 | p[1]); }
static inline uint32_t kbe32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}
static inline uint64_t kbe64(const uint8_t *p) { return (uint64_t)kbe32(p) << 32 | kbe32(p + 4); }
static inline void kput_be16(uint8_t *p, uint16_t v) { p[0] = v >> 8; p[1] = (uint8_t)v; }
static inline void kput_be32(uint8_t *p, uint32_t v)
{
    p[0] = v >> 24; p[1] = (uint8_t)(v >> 16); p[2] = (uint8_t)(v >> 8); p[3] = (uint8_t)v;
}
static inline void kput_be64(uint8_t *p, uint64_t v)
{
    kput_be32(p, (uint32_t)(v >> 32));
    kput_be32(p + 4, (uint32_t)v);
}

#endif
