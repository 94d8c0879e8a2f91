/*
 * Kafka record batch v2 <-> Verity batch; the layouts and the decision are
 * in krecords.h. Pure code over caller memory (fuzzed by
 * tests/fuzz/fuzz_kafka.c through the produce path).
 */
#include "broker/kafka/krecords.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "storage/crc32c.h"
#include "verity/errors.h"
#include "verity/limits.h"
#include "verity/verify.h"

int krec_next(const uint8_t *p, size_t len, size_t *batch_len, char *msg, size_t cap)
{
    if (len < KREC_HDR_SIZE) {
        snprintf(msg, cap, "record set of %zu bytes is shorter than a batch header", len);
        return KERR_CORRUPT_MESSAGE;
    }
    int32_t bl = (int32_t)kbe32(p + 8);
    if (bl < KREC_HDR_SIZE - 12 || (size_t)bl > len - 12) {
        snprintf(msg, cap, "batchLength %" PRId32 " does not fit the %zu bytes given", bl, len);
        return KERR_CORRUPT_MESSAGE;
    }
    if (p[16] != 2) {
        snprintf(msg, cap, "record batch magic %u; only magic 2 (record batch v2) is accepted",
                 p[16]);
        return KERR_UNSUPPORTED_MSG_FMT;
    }
    *batch_len = (size_t)bl + 12;
    return 0;
}

/* Reads one length-prefixed run (varint length, -1 = null when allowed). */
static int get_run(const uint8_t **p, const uint8_t *end, bool nullable, const uint8_t **out,
                   int32_t *len)
{
    int64_t n;
    if (kv_get_varint(p, end, &n))
        return VERITY_ECORRUPT;
    if (n == -1 && nullable) {
        *out = NULL;
        *len = -1;
        return 0;
    }
    if (n < 0 || n > end - *p)
        return VERITY_ECORRUPT;
    *out = *p;
    *len = (int32_t)n;
    *p += n;
    return 0;
}

int krec_to_verity(const uint8_t *kb, size_t kb_len, struct batch_builder *bb,
                   struct krec_src *src, char *msg, size_t cap)
{
    VERITY_VERIFY(kb_len >= KREC_HDR_SIZE && kbe32(kb + 8) + 12 == kb_len);
    batch_builder_reset(bb);
    uint32_t crc = kbe32(kb + 17);
    if (crc32c(0, kb + KREC_CRC_FROM, kb_len - KREC_CRC_FROM) != crc) {
        snprintf(msg, cap, "record batch CRC32C does not match its bytes");
        return KERR_CORRUPT_MESSAGE;
    }
    uint16_t attr = kbe16(kb + 21);
    if (attr & KREC_ATTR_COMPRESS) {
        snprintf(msg, cap, "compressed batches (codec %u) are not supported; set "
                 "compression.type=none", attr & KREC_ATTR_COMPRESS);
        return KERR_UNSUPPORTED_COMPRESS;
    }
    if (attr & (KREC_ATTR_TXN | KREC_ATTR_CONTROL | KREC_ATTR_LOGTIME)) {
        snprintf(msg, cap, "transactional, control and LogAppendTime batches are not supported");
        return KERR_UNSUPPORTED_MSG_FMT;
    }
    int32_t last_delta = (int32_t)kbe32(kb + 23);
    int64_t base_ts = (int64_t)kbe64(kb + 27);
    src->producer_id = (int64_t)kbe64(kb + 43);
    src->producer_epoch = (int16_t)kbe16(kb + 51);
    src->base_sequence = (int32_t)kbe32(kb + 53);
    int32_t count = (int32_t)kbe32(kb + 57);
    src->record_count = count;
    if (count < 1 || (uint32_t)count > VERITY_BATCH_RECORDS_MAX || last_delta != count - 1) {
        snprintf(msg, cap, "recordCount %" PRId32 " / lastOffsetDelta %" PRId32 " invalid",
                 count, last_delta);
        return KERR_CORRUPT_MESSAGE;
    }
    if (src->producer_id < -1 || (src->producer_id >= 0 && (src->producer_epoch < 0 ||
                                                             src->base_sequence < 0))) {
        snprintf(msg, cap, "inconsistent producer id, epoch and sequence");
        return KERR_INVALID_RECORD;
    }
    const uint8_t *p = kb + KREC_HDR_SIZE, *end = kb + kb_len;
    struct batch_header_kv hdrs[VERITY_RECORD_HEADERS_MAX];
    for (int32_t i = 0; i < count; i++) {
        int64_t rlen, ts_delta, off_delta, nh;
        if (kv_get_varint(&p, end, &rlen) || rlen < 6 || rlen > end - p)
            goto corrupt;
        const uint8_t *rend = p + rlen;
        p++; /* record attributes: unused in v2 */
        const uint8_t *key, *value;
        int32_t key_len, value_len;
        if (kv_get_varint(&p, rend, &ts_delta) || kv_get_varint(&p, rend, &off_delta) ||
            off_delta != i || get_run(&p, rend, true, &key, &key_len) ||
            get_run(&p, rend, true, &value, &value_len) || kv_get_varint(&p, rend, &nh) || nh < 0)
            goto corrupt;
        if (nh > (int64_t)VERITY_RECORD_HEADERS_MAX) {
            snprintf(msg, cap, "record %" PRId32 " has %" PRId64 " headers (max %u)", i, nh,
                     VERITY_RECORD_HEADERS_MAX);
            return KERR_INVALID_RECORD;
        }
        for (int64_t k = 0; k < nh; k++) {
            const uint8_t *hk, *hv;
            int32_t hk_len, hv_len;
            if (get_run(&p, rend, false, &hk, &hk_len) || get_run(&p, rend, true, &hv, &hv_len))
                goto corrupt;
            hdrs[k] = (struct batch_header_kv){hk, (uint32_t)hk_len, hv, hv_len};
        }
        if (p != rend)
            goto corrupt;
        int64_t ts;
        if (__builtin_add_overflow(base_ts, ts_delta, &ts)) {
            snprintf(msg, cap, "record %" PRId32 " timestamp overflows (base %" PRId64
                     " + delta %" PRId64 ")", i, base_ts, ts_delta);
            return KERR_INVALID_TIMESTAMP;
        }
        int rc = batch_builder_add(bb, ts, key, key_len, value, value_len, hdrs,
                                   (uint32_t)nh);
        if (rc == VERITY_EINVAL) {
            snprintf(msg, cap, "record %" PRId32 " timestamp is more than INT64_MAX from the "
                     "batch's first", i);
            return KERR_INVALID_TIMESTAMP;
        }
        if (rc) {
            snprintf(msg, cap, "batch exceeds the topic's max_message_bytes or record limit");
            return KERR_MESSAGE_TOO_LARGE;
        }
    }
    if (p != end)
        goto corrupt;
    struct batch_meta meta = {0, src->producer_id, src->producer_id >= 0 ? src->producer_epoch : -1,
                              src->producer_id >= 0 ? src->base_sequence : -1, NULL};
    if (batch_builder_finish(bb, &meta)) {
        snprintf(msg, cap, "empty batch");
        return KERR_CORRUPT_MESSAGE;
    }
    VERITY_VERIFY(get_le32(bb->buf + 56) == (uint32_t)count);
    return 0;
corrupt:
    snprintf(msg, cap, "record batch does not decode (record bounds, varints or offset deltas)");
    return KERR_CORRUPT_MESSAGE;
}

/* Inline zigzag varint size and writer for the fetch conversion's record
 * loop (kwire.c's out-of-line versions were a fifth of the broker's time
 * in a Kafka catch-up read, several calls per record). */
static inline size_t vsize(int64_t v)
{
    uint64_t u = ((uint64_t)v << 1) ^ (uint64_t)(v >> 63);
    size_t n = 1;
    while (u >= 0x80) {
        n++;
        u >>= 7;
    }
    return n;
}

static inline uint8_t *vput(uint8_t *p, int64_t v)
{
    uint64_t u = ((uint64_t)v << 1) ^ (uint64_t)(v >> 63);
    while (u >= 0x80) {
        *p++ = (uint8_t)(u | 0x80);
        u >>= 7;
    }
    *p++ = (uint8_t)u;
    return p;
}

/* len -1 writes a null run. */
static inline uint8_t *vrun(uint8_t *p, const uint8_t *src, int32_t len)
{
    p = vput(p, len < 0 ? -1 : len);
    if (len > 0) {
        memcpy(p, src, (size_t)len);
        p += len;
    }
    return p;
}

static void put_varint(struct kw *w, int64_t v)
{
    uint8_t *p = kw_reserve(w, kv_varint_size(v));
    if (p)
        (void)kv_put_varint(p, v);
}

/* len -1 writes a null run. */
static void put_run(struct kw *w, const uint8_t *p, int32_t len)
{
    put_varint(w, len < 0 ? -1 : len);
    if (len > 0)
        kw_raw(w, p, (size_t)len);
}

/* Size of a record's body (everything after its length field). */
static int64_t record_body_size(const struct batch_record *r, int64_t ts_delta,
                                const struct batch_header_kv *h, uint32_t nh)
{
    int64_t n = 1 + (int64_t)vsize(ts_delta) + (int64_t)vsize(r->offset_delta);
    n += (int64_t)vsize(r->key_len) + (r->key_len > 0 ? r->key_len : 0);
    n += (int64_t)vsize(r->value_len) + (r->value_len > 0 ? r->value_len : 0);
    n += (int64_t)vsize(nh);
    for (uint32_t k = 0; k < nh; k++) {
        n += (int64_t)vsize(h[k].key_len) + h[k].key_len;
        n += (int64_t)vsize(h[k].value_len) + (h[k].value_len > 0 ? h[k].value_len : 0);
    }
    return n;
}

/* The COMMIT control record standing for a Verity control batch. */
static void put_control_record(struct kw *w)
{
    static const uint8_t key[4] = {0, 0, 0, 1};         /* version 0, type 1 = COMMIT */
    static const uint8_t value[6] = {0, 0, 0, 0, 0, 0}; /* version 0, coordinator epoch 0 */
    put_varint(w, 1 + 1 + 1 + 1 + 4 + 1 + 6 + 1);
    kw_i8(w, 0);
    put_varint(w, 0);
    put_varint(w, 0);
    put_run(w, key, 4);
    put_run(w, value, 6);
    put_varint(w, 0);
}

int krec_from_verity(const uint8_t *vb, size_t vb_len, struct kw *w)
{
    struct batch_hdr h;
    int rc = batch_hdr_decode(vb, vb_len, &h);
    if (rc || h.length != vb_len)
        return VERITY_ECORRUPT;
    size_t start = w->len;
    bool control = (h.attributes & BATCH_ATTR_CONTROL) != 0;
    uint8_t *hp = kw_reserve(w, KREC_HDR_SIZE);
    if (!hp)
        return -ENOMEM;
    kput_be64(hp, h.base_offset);
    kput_be32(hp + 12, 0); /* partition leader epoch */
    hp[16] = 2;
    kput_be16(hp + 21, control ? KREC_ATTR_CONTROL | KREC_ATTR_TXN : 0);
    kput_be32(hp + 23, h.last_offset_delta);
    kput_be64(hp + 27, (uint64_t)h.first_timestamp);
    kput_be64(hp + 35, (uint64_t)h.max_timestamp);
    kput_be64(hp + 43, (uint64_t)(control ? -1 : h.producer_id));
    kput_be16(hp + 51, (uint16_t)(control ? -1 : h.producer_epoch));
    kput_be32(hp + 53, (uint32_t)(control ? -1 : h.base_sequence));
    kput_be32(hp + 57, control ? 1 : h.record_count);
    if (control) {
        put_control_record(w);
    } else {
        struct batch_iter it;
        struct batch_record r;
        struct batch_header_kv hdrs[VERITY_RECORD_HEADERS_MAX];
        batch_iter_init(&it, vb, vb_len);
        uint32_t seen = 0;
        while ((rc = batch_iter_next(&it, &r)) == 1) {
            if (r.header_count > VERITY_RECORD_HEADERS_MAX)
                return VERITY_ECORRUPT;
            size_t pos = 0;
            uint32_t nh = 0;
            while (nh < r.header_count && batch_header_next(&r, &pos, &hdrs[nh]) == 1)
                nh++;
            if (nh != r.header_count)
                return VERITY_ECORRUPT;
            /* The stored delta: the iterator refused any record whose
             * first_timestamp + delta overflows, so this difference cannot. */
            int64_t ts_delta = r.timestamp - h.first_timestamp;
            int64_t body = record_body_size(&r, ts_delta, hdrs, nh);
            size_t total = vsize(body) + (size_t)body;
            uint8_t *p = kw_reserve(w, total); /* the whole record at once */
            if (!p)
                return w->err ? w->err : -ENOMEM;
            uint8_t *p0 = p;
            p = vput(p, body);
            *p++ = 0; /* record attributes */
            p = vput(p, ts_delta);
            p = vput(p, r.offset_delta);
            p = vrun(p, r.key, r.key_len);
            p = vrun(p, r.value, r.value_len);
            p = vput(p, nh);
            for (uint32_t k = 0; k < nh; k++) {
                p = vrun(p, hdrs[k].key, (int32_t)hdrs[k].key_len);
                p = vrun(p, hdrs[k].value, hdrs[k].value_len);
            }
            VERITY_VERIFY((size_t)(p - p0) == total);
            seen++;
        }
        if (rc < 0 || seen != h.record_count)
            return VERITY_ECORRUPT;
    }
    if (w->err)
        return w->err;
    uint8_t *b = w->buf + start;
    size_t len = w->len - start;
    kput_be32(b + 8, (uint32_t)(len - 12));
    kput_be32(b + 17, crc32c(0, b + KREC_CRC_FROM, len - KREC_CRC_FROM));
    return 0;
}
