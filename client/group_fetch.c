/*
 * A GroupFetch answer, one result (topic, partition) at a time: the batches
 * as they lie in the partition log, and the delivery ranges saying which of
 * their records this member was given (docs/PROTOCOL.md, consumer groups).
 * Pure functions: the group consumer checks a result on its I/O thread
 * when it arrives and decodes it on the polling thread.
 *
 * A result is accepted only if every batch passes batch_validate (header,
 * CRC, every record), batches come in ascending offset order without
 * overlap, the ranges are ascending and disjoint, and every offset of every
 * range lies in a data batch (not a control batch). Records outside the
 * ranges (the rest of a batch, control batches) are skipped.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "client/group_int.h"
#include "verity/limits.h"

int gfetch_check(const uint8_t *data, size_t len, const struct gwire_range *d, size_t nd)
{
    for (size_t i = 0; i < nd; i++) {
        if (d[i].count == 0 || d[i].first + d[i].count < d[i].first)
            return VERITY_EPROTO;
        if (i > 0 && d[i].first < d[i - 1].first + d[i - 1].count)
            return VERITY_EPROTO;
    }
    size_t pos = 0;
    size_t ri = 0;              /* first range not yet fully covered */
    uint64_t covered = nd ? d[0].first : 0; /* next offset of range ri to cover */
    uint64_t prev_end = 0;
    bool first = true;
    while (pos < len) {
        struct batch_hdr h;
        if (len - pos < BATCH_HDR_SIZE || batch_hdr_decode(data + pos, len - pos, &h) != 0 ||
            h.length > len - pos || batch_validate(data + pos, h.length, NULL) != 0)
            return VERITY_ECORRUPT;
        uint64_t end = h.base_offset + h.record_count;
        if (end < h.base_offset || (!first && h.base_offset < prev_end))
            return VERITY_EPROTO;
        first = false;
        prev_end = end;
        pos += h.length;
        if (h.attributes & BATCH_ATTR_CONTROL)
            continue;
        /* Cover what this batch holds of the ranges, in order. */
        while (ri < nd && covered >= h.base_offset && covered < end) {
            uint64_t rend = d[ri].first + d[ri].count;
            covered = rend <= end ? rend : end;
            if (covered == rend && ++ri < nd)
                covered = d[ri].first;
        }
        if (ri < nd && covered < h.base_offset)
            return VERITY_EPROTO; /* an offset of a range fell between batches */
    }
    return ri == nd ? 0 : VERITY_EPROTO;
}

static int msgs_reserve(struct gdecode *o, size_t n)
{
    if (n <= o->cap)
        return 0;
    size_t cap = o->cap ? o->cap : 256;
    while (cap < n)
        cap *= 2;
    struct verity_group_message *m = realloc(o->msgs, cap * sizeof *m);
    if (!m)
        return -ENOMEM;
    o->msgs = m;
    o->cap = cap;
    return 0;
}

static int hdrs_reserve(struct gdecode *o, size_t n)
{
    if (n <= o->hcap)
        return 0;
    size_t cap = o->hcap ? o->hcap : 64;
    while (cap < n)
        cap *= 2;
    struct verity_header *h = realloc(o->hdrs, cap * sizeof *h);
    if (!h)
        return -ENOMEM;
    o->hdrs = h;
    o->hcap = cap;
    return 0;
}

int gfetch_decode(const uint8_t *data, size_t len, const struct gwire_range *d, size_t nd,
                  const char *topic, uint32_t partition, int64_t lease_deadline_ms,
                  struct gdecode *out)
{
    size_t pos = 0, ri = 0;
    while (pos < len && ri < nd) {
        const uint8_t *b = data + pos;
        uint32_t blen = get_le32(b + BATCH_OFF_LENGTH);
        uint64_t base = get_le64(b + BATCH_OFF_BASE_OFFSET);
        uint32_t count = get_le32(b + 56);
        pos += blen;
        if (b[53] & BATCH_ATTR_CONTROL)
            continue;
        uint64_t end = base + count;
        while (ri < nd && d[ri].first + d[ri].count <= base)
            ri++;
        if (ri == nd || d[ri].first >= end)
            continue;
        if (msgs_reserve(out, out->n + count))
            return -ENOMEM;
        struct batch_iter it;
        struct batch_record r;
        int rc;
        batch_iter_init(&it, b, blen);
        while ((rc = batch_iter_next(&it, &r)) == 1) {
            uint64_t off = base + r.offset_delta;
            while (ri < nd && d[ri].first + d[ri].count <= off)
                ri++;
            if (ri == nd)
                break;
            if (off < d[ri].first)
                continue;
            struct verity_group_message *m = &out->msgs[out->n++];
            m->msg.topic = topic;
            m->msg.partition = partition;
            m->msg.offset = off;
            m->msg.timestamp_ms = r.timestamp;
            m->msg.key = r.key;
            m->msg.key_len = r.key_len;
            m->msg.value = r.value;
            m->msg.value_len = r.value_len;
            m->msg.header_count = r.header_count;
            m->msg.chain_hash = b + BATCH_OFF_CHAIN;
            m->msg.batch_last_offset = base + get_le32(b + 56) - 1;
            m->msg.headers = (const struct verity_header *)(uintptr_t)out->nh;
            m->delivery_count = d[ri].delivery_count;
            m->lease_deadline_ms = lease_deadline_ms;
            if (r.header_count) {
                if (hdrs_reserve(out, out->nh + r.header_count))
                    return -ENOMEM;
                size_t hp = 0;
                struct batch_header_kv kv;
                uint32_t got = 0;
                while (got < r.header_count && batch_header_next(&r, &hp, &kv) == 1) {
                    struct verity_header *h = &out->hdrs[out->nh++];
                    h->key = (const char *)kv.key;
                    h->key_len = kv.key_len;
                    h->value = kv.value;
                    h->value_len = kv.value_len;
                    got++;
                }
                m->msg.header_count = got;
            }
        }
        if (rc < 0)
            return VERITY_ECORRUPT;
    }
    return 0;
}

void gdecode_finish(struct gdecode *out)
{
    for (size_t i = 0; i < out->n; i++) {
        struct verity_message *m = &out->msgs[i].msg;
        size_t idx = (size_t)(uintptr_t)m->headers;
        m->headers = m->header_count ? &out->hdrs[idx] : NULL;
    }
}

void gdecode_deinit(struct gdecode *out)
{
    free(out->msgs);
    free(out->hdrs);
    memset(out, 0, sizeof *out);
}
