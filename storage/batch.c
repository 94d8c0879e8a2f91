/*
 * Record batch codec: header decode, full validation, chain hash, record
 * iteration and the builder. The byte layout is in batch.h and docs/FORMAT.md.
 *
 * Invariant kept by every function here: no read ever leaves [batch,
 * batch + len); every length read from input is checked against what
 * remains before it is used.
 */
#include "storage/batch.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "storage/crc32c.h"
#include "verity/errors.h"
#include "verity/limits.h"
#include "verity/verify.h"

const struct batch_limits batch_limits_default = {
    .bytes_max = VERITY_BATCH_BYTES_MAX,
    .records_max = VERITY_BATCH_RECORDS_MAX,
    .headers_max = VERITY_RECORD_HEADERS_MAX,
};

/* ---- varints ----------------------------------------------------------- */

static int uvarint_get(const uint8_t **pp, const uint8_t *end, uint64_t *out)
{
    const uint8_t *p = *pp;
    uint64_t v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
        if (p >= end)
            return VERITY_ECORRUPT;
        uint8_t b = *p++;
        v |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80)) {
            *pp = p;
            *out = v;
            return 0;
        }
    }
    return VERITY_ECORRUPT;
}

static int svarint_get(const uint8_t **pp, const uint8_t *end, int64_t *out)
{
    uint64_t u;
    int rc = uvarint_get(pp, end, &u);
    if (rc)
        return rc;
    *out = (int64_t)(u >> 1) ^ -(int64_t)(u & 1);
    return 0;
}

static size_t uvarint_put(uint8_t *p, uint64_t v)
{
    size_t n = 0;
    while (v >= 0x80) {
        p[n++] = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    p[n++] = (uint8_t)v;
    return n;
}

static size_t svarint_put(uint8_t *p, int64_t v)
{
    return uvarint_put(p, ((uint64_t)v << 1) ^ (uint64_t)(v >> 63));
}

/* Reads a length-prefixed byte field; -1 means null when nullable. */
static int bytes_get(const uint8_t **pp, const uint8_t *end, bool nullable, const uint8_t **data,
                     int32_t *len)
{
    int64_t n;
    int rc = svarint_get(pp, end, &n);
    if (rc)
        return rc;
    if (n == -1 && nullable) {
        *data = NULL;
        *len = -1;
        return 0;
    }
    if (n < 0 || n > INT32_MAX || n > end - *pp)
        return VERITY_ECORRUPT;
    *data = *pp;
    *len = (int32_t)n;
    *pp += n;
    return 0;
}

/* ---- header ------------------------------------------------------------ */

int batch_hdr_decode(const uint8_t *b, size_t avail, struct batch_hdr *h)
{
    if (avail < BATCH_HDR_SIZE)
        return VERITY_ECORRUPT;
    if (b[0] != BATCH_MAGIC_0 || b[1] != BATCH_MAGIC_1 || b[2] != BATCH_MAGIC_2 ||
        b[3] != BATCH_MAGIC_3)
        return VERITY_ECORRUPT;
    h->length = get_le32(b + 4);
    h->base_offset = get_le64(b + 8);
    memcpy(h->chain, b + 16, BATCH_CHAIN_SIZE);
    h->crc = get_le32(b + 48);
    h->version = b[52];
    h->attributes = b[53];
    h->record_count = get_le32(b + 56);
    h->last_offset_delta = get_le32(b + 60);
    h->first_timestamp = (int64_t)get_le64(b + 64);
    h->max_timestamp = (int64_t)get_le64(b + 72);
    h->producer_id = (int64_t)get_le64(b + 80);
    h->producer_epoch = (int16_t)get_le16(b + 88);
    h->base_sequence = (int32_t)get_le32(b + 92);
    memcpy(h->idem_key, b + 96, BATCH_IDEM_KEY_SIZE);

    if (h->version != BATCH_VERSION)
        return VERITY_EVERSION;
    if (h->length < BATCH_HDR_SIZE || h->length > VERITY_BATCH_BYTES_MAX + (size_t)BATCH_HDR_SIZE)
        return VERITY_ECORRUPT;
    if (get_le16(b + 54) != 0 || get_le16(b + 90) != 0)
        return VERITY_ECORRUPT;
    if (h->attributes & ~BATCH_ATTR_KNOWN)
        return VERITY_ECORRUPT;
    if (h->record_count == 0 || h->last_offset_delta != h->record_count - 1)
        return VERITY_ECORRUPT;
    /* Each record takes at least 7 bytes, so the count is bounded by length. */
    if (h->record_count > (h->length - BATCH_HDR_SIZE) / 7)
        return VERITY_ECORRUPT;
    return 0;
}

uint32_t batch_crc_compute(const uint8_t *batch, size_t len)
{
    VERITY_VERIFY(len >= BATCH_HDR_SIZE);
    return crc32c(0, batch + BATCH_CRC_FROM, len - BATCH_CRC_FROM);
}

void batch_chain_compute(const uint8_t *prev, const uint8_t *batch, size_t len, uint8_t *out)
{
    VERITY_VERIFY(len >= BATCH_HDR_SIZE);
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    unsigned int n = 0;
    VERITY_VERIFY(ctx != NULL);
    VERITY_VERIFY(EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) == 1);
    VERITY_VERIFY(EVP_DigestUpdate(ctx, prev, BATCH_CHAIN_SIZE) == 1);
    VERITY_VERIFY(EVP_DigestUpdate(ctx, batch, BATCH_OFF_CHAIN) == 1);
    VERITY_VERIFY(EVP_DigestUpdate(ctx, batch + BATCH_OFF_CRC, len - BATCH_OFF_CRC) == 1);
    VERITY_VERIFY(EVP_DigestFinal_ex(ctx, out, &n) == 1 && n == BATCH_CHAIN_SIZE);
    EVP_MD_CTX_free(ctx);
}

void batch_set_base_offset(uint8_t *batch, uint64_t base_offset)
{
    put_le64(batch + BATCH_OFF_BASE_OFFSET, base_offset);
}

void batch_set_chain(uint8_t *batch, const uint8_t *chain)
{
    memcpy(batch + BATCH_OFF_CHAIN, chain, BATCH_CHAIN_SIZE);
}

/* ---- records ----------------------------------------------------------- */

void batch_iter_init(struct batch_iter *it, const uint8_t *batch, size_t len)
{
    it->p = batch + BATCH_HDR_SIZE;
    it->end = batch + len;
    it->index = 0;
    it->count = len >= BATCH_HDR_SIZE ? get_le32(batch + 56) : 0;
    it->first_timestamp = len >= BATCH_HDR_SIZE ? (int64_t)get_le64(batch + 64) : 0;
    if (len < BATCH_HDR_SIZE)
        it->p = it->end = batch;
}

int batch_iter_next(struct batch_iter *it, struct batch_record *r)
{
    if (it->index >= it->count)
        return it->p == it->end ? 0 : VERITY_ECORRUPT;
    uint64_t rlen, odelta, nh;
    int64_t tdelta;
    const uint8_t *p = it->p;
    if (uvarint_get(&p, it->end, &rlen) || rlen < 6 || rlen > (uint64_t)(it->end - p))
        return VERITY_ECORRUPT;
    const uint8_t *rend = p + rlen;
    if (*p++ != 0) /* record attributes */
        return VERITY_ECORRUPT;
    if (svarint_get(&p, rend, &tdelta) || uvarint_get(&p, rend, &odelta))
        return VERITY_ECORRUPT;
    if (odelta != it->index)
        return VERITY_ECORRUPT;
    if (bytes_get(&p, rend, true, &r->key, &r->key_len) ||
        bytes_get(&p, rend, true, &r->value, &r->value_len))
        return VERITY_ECORRUPT;
    if (uvarint_get(&p, rend, &nh) || nh > VERITY_RECORD_HEADERS_MAX)
        return VERITY_ECORRUPT;
    if (__builtin_add_overflow(it->first_timestamp, tdelta, &r->timestamp))
        return VERITY_ECORRUPT;
    r->offset_delta = (uint32_t)odelta;
    r->header_count = (uint32_t)nh;
    r->headers = p;
    r->headers_len = (size_t)(rend - p);
    /* Walk the headers once so that a valid iterator implies valid headers. */
    size_t pos = 0;
    struct batch_header_kv kv;
    uint32_t seen = 0;
    int rc;
    while ((rc = batch_header_next(r, &pos, &kv)) == 1)
        seen++;
    if (rc < 0 || seen != nh || pos != r->headers_len)
        return VERITY_ECORRUPT;
    it->p = rend;
    it->index++;
    return 1;
}

int batch_header_next(const struct batch_record *r, size_t *pos, struct batch_header_kv *kv)
{
    const uint8_t *p = r->headers + *pos;
    const uint8_t *end = r->headers + r->headers_len;
    if (p == end)
        return 0;
    uint64_t klen;
    if (uvarint_get(&p, end, &klen) || klen > (uint64_t)(end - p))
        return VERITY_ECORRUPT;
    kv->key = p;
    kv->key_len = (uint32_t)klen;
    p += klen;
    if (bytes_get(&p, end, true, &kv->value, &kv->value_len))
        return VERITY_ECORRUPT;
    *pos = (size_t)(p - r->headers);
    return 1;
}

int batch_validate(const uint8_t *batch, size_t len, const struct batch_limits *lim)
{
    struct batch_hdr h;
    int rc;
    if (!lim)
        lim = &batch_limits_default;
    if ((rc = batch_hdr_decode(batch, len, &h)))
        return rc;
    if (h.length != len)
        return VERITY_ECORRUPT;
    if (len > lim->bytes_max || h.record_count > lim->records_max)
        return VERITY_ELIMIT;
    if (batch_crc_compute(batch, len) != h.crc)
        return VERITY_ECORRUPT;
    if ((h.attributes & BATCH_ATTR_COMPRESSION_MASK) != 0)
        return VERITY_EUNSUPPORTED;
    if (!(h.attributes & BATCH_ATTR_IDEM_KEY)) {
        static const uint8_t zero[BATCH_IDEM_KEY_SIZE];
        if (memcmp(h.idem_key, zero, sizeof zero) != 0)
            return VERITY_EBADBATCH;
    }
    if ((h.attributes & BATCH_ATTR_CONTROL) && h.record_count != 1)
        return VERITY_EBADBATCH;

    struct batch_iter it;
    struct batch_record r;
    int64_t ts_max = INT64_MIN;
    batch_iter_init(&it, batch, len);
    while ((rc = batch_iter_next(&it, &r)) == 1) {
        if (r.header_count > lim->headers_max || r.key_len > (int32_t)VERITY_KEY_BYTES_MAX)
            return VERITY_ELIMIT;
        if (r.timestamp > ts_max)
            ts_max = r.timestamp;
    }
    if (rc < 0 || it.index != h.record_count)
        return VERITY_ECORRUPT;
    if (ts_max != h.max_timestamp)
        return VERITY_EBADBATCH;
    return 0;
}

/* ---- builder ------------------------------------------------------------ */

/* The builder's invariant: the header slot is reserved, the body fits the
 * buffer, and the record count stays within the batch limit. */
static bool builder_ok(const struct batch_builder *b)
{
    return b->buf && b->len >= BATCH_HDR_SIZE && b->len <= b->cap &&
           b->count <= VERITY_BATCH_RECORDS_MAX;
}

int batch_builder_init(struct batch_builder *b, size_t cap)
{
    memset(b, 0, sizeof *b);
    if (cap < BATCH_HDR_SIZE + 16)
        cap = BATCH_HDR_SIZE + 16;
    b->buf = malloc(cap);
    if (!b->buf)
        return -ENOMEM;
    b->cap = cap;
    batch_builder_reset(b);
    return 0;
}

void batch_builder_deinit(struct batch_builder *b)
{
    free(b->buf);
    memset(b, 0, sizeof *b);
}

void batch_builder_reset(struct batch_builder *b)
{
    b->len = BATCH_HDR_SIZE;
    b->count = 0;
    b->first_timestamp = 0;
    b->max_timestamp = INT64_MIN;
}

size_t batch_record_size_max(size_t key_len, size_t value_len, const struct batch_header_kv *h,
                             size_t nh)
{
    size_t n = 10 + 1 + 10 + 10 + 10 + key_len + 10 + value_len + 10;
    for (size_t i = 0; i < nh; i++)
        n += 10 + h[i].key_len + 10 + (h[i].value_len > 0 ? (size_t)h[i].value_len : 0);
    return n;
}

int batch_builder_add(struct batch_builder *b, int64_t ts, const void *key, int32_t key_len,
                      const void *value, int32_t value_len, const struct batch_header_kv *hdrs,
                      uint32_t nh)
{
    if (!key)
        key_len = -1;
    if (!value)
        value_len = -1;
    VERITY_VERIFY(builder_ok(b));
    if (key_len < -1 || value_len < -1 || (nh > 0 && !hdrs))
        return VERITY_EINVAL;
    for (uint32_t i = 0; i < nh; i++)
        if (hdrs[i].value && hdrs[i].value_len < -1)
            return VERITY_EINVAL;
    if (key_len > (int32_t)VERITY_KEY_BYTES_MAX)
        return VERITY_ELIMIT;
    if (nh > VERITY_RECORD_HEADERS_MAX || b->count >= VERITY_BATCH_RECORDS_MAX)
        return VERITY_ELIMIT;
    size_t need = batch_record_size_max(key_len > 0 ? (size_t)key_len : 0,
                                        value_len > 0 ? (size_t)value_len : 0, hdrs, nh);
    if (need > b->cap - b->len)
        return VERITY_ELIMIT;
    /* Every record's timestamp is stored as a delta from the first; one that
     * cannot be (the two are more than INT64_MAX apart) is refused here, as
     * the iterator would refuse it when read. */
    int64_t tdelta;
    if (__builtin_sub_overflow(ts, b->count == 0 ? ts : b->first_timestamp, &tdelta))
        return VERITY_EINVAL;
    if (b->count == 0)
        b->first_timestamp = ts;

    /* Encode the body after a 5-byte gap, then move it next to its length. */
    uint8_t *start = b->buf + b->len;
    uint8_t *p = start + 5;
    *p++ = 0;
    p += svarint_put(p, tdelta);
    p += uvarint_put(p, b->count);
    p += svarint_put(p, key_len);
    if (key_len > 0) {
        memcpy(p, key, (size_t)key_len);
        p += key_len;
    }
    p += svarint_put(p, value_len);
    if (value_len > 0) {
        memcpy(p, value, (size_t)value_len);
        p += value_len;
    }
    p += uvarint_put(p, nh);
    for (uint32_t i = 0; i < nh; i++) {
        p += uvarint_put(p, hdrs[i].key_len);
        memcpy(p, hdrs[i].key, hdrs[i].key_len);
        p += hdrs[i].key_len;
        int32_t vl = hdrs[i].value ? hdrs[i].value_len : -1;
        p += svarint_put(p, vl);
        if (vl > 0) {
            memcpy(p, hdrs[i].value, (size_t)vl);
            p += vl;
        }
    }
    size_t body = (size_t)(p - (start + 5));
    uint8_t lenbuf[10];
    size_t ln = uvarint_put(lenbuf, body);
    memmove(start + ln, start + 5, body);
    memcpy(start, lenbuf, ln);
    VERITY_VERIFY(ln + body <= need); /* the bound checked before writing held */
    b->len += ln + body;
    b->count++;
    if (ts > b->max_timestamp)
        b->max_timestamp = ts;
    VERITY_VERIFY(builder_ok(b));
    return 0;
}

int batch_builder_finish(struct batch_builder *b, const struct batch_meta *m)
{
    if (b->count == 0)
        return VERITY_EINVAL;
    VERITY_VERIFY(builder_ok(b));
    uint8_t *h = b->buf;
    uint8_t attrs = m ? m->attributes & BATCH_ATTR_CONTROL : 0;
    memset(h, 0, BATCH_HDR_SIZE);
    h[0] = BATCH_MAGIC_0;
    h[1] = BATCH_MAGIC_1;
    h[2] = BATCH_MAGIC_2;
    h[3] = BATCH_MAGIC_3;
    put_le32(h + 4, (uint32_t)b->len);
    h[52] = BATCH_VERSION;
    put_le32(h + 56, b->count);
    put_le32(h + 60, b->count - 1);
    put_le64(h + 64, (uint64_t)b->first_timestamp);
    put_le64(h + 72, (uint64_t)b->max_timestamp);
    put_le64(h + 80, (uint64_t)(m ? m->producer_id : -1));
    put_le16(h + 88, (uint16_t)(m ? m->producer_epoch : -1));
    put_le32(h + 92, (uint32_t)(m ? m->base_sequence : -1));
    if (m && m->idem_key) {
        attrs |= BATCH_ATTR_IDEM_KEY;
        memcpy(h + 96, m->idem_key, BATCH_IDEM_KEY_SIZE);
    }
    h[53] = attrs;
    put_le32(h + 48, batch_crc_compute(h, b->len));
    /* Paired with the reader: what was written decodes to what was meant. */
    struct batch_hdr back;
    VERITY_VERIFY(batch_hdr_decode(h, b->len, &back) == 0 && back.length == b->len &&
                  back.record_count == b->count);
    return 0;
}
