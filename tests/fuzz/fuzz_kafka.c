/*
 * libFuzzer target over the Kafka listener's decoders (broker/kafka/), with
 * the functions the listener itself calls:
 *   - the input as a stream of Kafka frames: the size prefix bounded like
 *     kconn.c does, the request header (kwire), then the Produce or Fetch
 *     body through kprod_parse / kfetch_parse for every advertised version;
 *   - every Produce record set, and the input itself as one record set (as
 *     is, and with batchLength and CRC32C fixed up so the record decoder
 *     behind the CRC is reached), through krec_next and krec_to_verity;
 *   - the input as a SASL PLAIN message (ksasl_plain_parse).
 * Properties checked (abort on violation): a converted batch passes the
 * native boundary check (produce_check_batch) and has the Kafka batch's
 * record count; converting it back (krec_from_verity) yields a Kafka batch
 * whose CRC is right and which converts to exactly the same Verity bytes.
 * Built and run by tests/fuzz/run.sh.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "broker/batchcheck.h"
#include "broker/kafka/kparse.h"
#include "broker/kafka/krecords.h"
#include "broker/kafka/kwire.h"
#include "storage/batch.h"
#include "storage/crc32c.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FRAME_MAX (1u << 20)

/* One Kafka batch -> Verity -> Kafka -> Verity; the two Verity forms agree. */
static void roundtrip(const uint8_t *kb, size_t len)
{
    struct batch_builder bb, bb2;
    if (batch_builder_init(&bb, len * 2 + 1024))
        return;
    if (batch_builder_init(&bb2, len * 2 + 1024)) {
        batch_builder_deinit(&bb);
        return;
    }
    char msg[200];
    struct krec_src src;
    if (krec_to_verity(kb, len, &bb, &src, msg, sizeof msg) == 0) {
        struct batch_hdr h;
        if (produce_check_batch(bb.buf, bb.len, (uint32_t)bb.cap, &h, msg, sizeof msg) != 0)
            abort(); /* a converted batch must pass the native check */
        if (h.record_count != (uint32_t)src.record_count)
            abort();
        struct kw w;
        kw_init(&w);
        if (krec_from_verity(bb.buf, bb.len, &w) == 0) {
            if (crc32c(0, w.buf + KREC_CRC_FROM, w.len - KREC_CRC_FROM) != kbe32(w.buf + 17))
                abort();
            size_t blen;
            struct krec_src src2;
            if (krec_next(w.buf, w.len, &blen, msg, sizeof msg) != 0 || blen != w.len)
                abort();
            if (krec_to_verity(w.buf, w.len, &bb2, &src2, msg, sizeof msg) != 0)
                abort();
            if (bb2.len != bb.len || memcmp(bb2.buf + BATCH_CRC_FROM, bb.buf + BATCH_CRC_FROM,
                                            bb.len - BATCH_CRC_FROM) != 0)
                abort(); /* the round trip changed a byte */
        } else if (!w.err) {
            abort(); /* our own valid batch must convert back */
        }
        kw_deinit(&w);
    }
    batch_builder_deinit(&bb);
    batch_builder_deinit(&bb2);
}

static void record_set(const uint8_t *p, size_t len)
{
    char msg[200];
    for (int n = 0; len > 0 && n < 64; n++) {
        size_t blen;
        if (krec_next(p, len, &blen, msg, sizeof msg) != 0)
            return;
        roundtrip(p, blen);
        p += blen;
        len -= blen;
    }
}

/* The input as one batch with its length and CRC made right. */
static void fixed_batch(const uint8_t *data, size_t size)
{
    if (size < KREC_HDR_SIZE || size > FRAME_MAX)
        return;
    uint8_t *b = malloc(size);
    if (!b)
        return;
    memcpy(b, data, size);
    kput_be32(b + 8, (uint32_t)(size - 12));
    b[16] = 2;
    kput_be32(b + 17, crc32c(0, b + KREC_CRC_FROM, size - KREC_CRC_FROM));
    record_set(b, size);
    free(b);
}

static void request(const uint8_t *f, size_t len)
{
    struct kr r;
    kr_init(&r, f, len);
    int16_t key = kr_i16(&r);
    (void)kr_i16(&r); /* every advertised version of the body is tried below */
    (void)kr_i32(&r);
    (void)kr_str(&r, true);
    if (!kr_ok(&r))
        return;
    struct kr body = r;
    if (key == 0) {
        for (int16_t v = 3; v <= 7; v++) {
            struct kprod_req q;
            r = body;
            if (kprod_parse(&r, v, &q) == 0) {
                for (size_t i = 0; i < q.n_parts; i++) {
                    if (q.parts[i].topic_idx >= q.n_topics)
                        abort();
                    if (q.parts[i].records.p)
                        record_set(q.parts[i].records.p, (size_t)q.parts[i].records.len);
                }
                kprod_req_free(&q);
            }
        }
    } else if (key == 1) {
        for (int16_t v = 4; v <= 11; v++) {
            struct kfetch_req q;
            r = body;
            if (kfetch_parse(&r, v, &q) == 0) {
                for (size_t i = 0; i < q.n_parts; i++)
                    if (q.parts[i].topic_idx >= q.n_topics)
                        abort();
                kfetch_req_free(&q);
            }
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const uint8_t *p = data;
    size_t left = size;
    for (int n = 0; left >= 4 && n < 16; n++) {
        int32_t fsize = (int32_t)kbe32(p);
        if (fsize < 10 || (size_t)fsize > left - 4 || (uint32_t)fsize > FRAME_MAX)
            break;
        request(p + 4, (size_t)fsize);
        p += 4 + (size_t)fsize;
        left -= 4 + (size_t)fsize;
    }
    record_set(data, size);
    fixed_batch(data, size);
    /* SASL PLAIN's message: three parts inside the copy, or refused. */
    char buf[KSASL_PLAIN_MAX + 1];
    const char *z, *c, *pw;
    if (ksasl_plain_parse(data, (int32_t)(size > KSASL_PLAIN_MAX + 1 ? KSASL_PLAIN_MAX + 1 : size),
                          buf, sizeof buf, &z, &c, &pw) == 0) {
        if (size > KSASL_PLAIN_MAX || strlen(z) + strlen(c) + strlen(pw) + 2 != size)
            abort();
    }
    /* Varint decoder on its own: never reads past the end. */
    const uint8_t *vp = data, *end = data + size;
    int64_t v;
    while (vp < end && kv_get_varint(&vp, end, &v) == 0) {
        uint8_t out[10];
        if (kv_put_varint(out, v) != kv_varint_size(v))
            abort();
    }
    return 0;
}
