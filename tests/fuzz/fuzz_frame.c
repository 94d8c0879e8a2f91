/*
 * libFuzzer target over the broker's input path, with the functions the
 * broker itself calls:
 *   - the input as a byte stream of frames: codec_frame_peek, codec_decode
 *     (capped allocator), codec_validate_request and codec_validate_response,
 *     re-encoding of what decoded;
 *   - for a valid Produce: each batch through produce_check_batch, then the
 *     partition idempotence rules (idem_check / idem_record);
 *   - the input itself as one batch (batch_validate via produce_check_batch,
 *     and the record iterator), as is and with its length and CRC fixed up
 *     so the record decoder behind the CRC is reached.
 * Built and run by tests/fuzz/run.sh. Any crash, sanitizer report, leak or
 * limit violation (a decode using more than its cap) aborts.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "broker/batchcheck.h"
#include "broker/idem.h"
#include "proto/codec.h"
#include "storage/batch.h"
#include "verity/errors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_batch(struct idem *st, const uint8_t *b, size_t len, uint64_t *next_offset)
{
    struct batch_hdr h;
    char msg[256];
    /* produce_check_batch takes const bytes; the log stamps a copy. */
    if (produce_check_batch(b, len, 1u << 20, &h, msg, sizeof msg) != 0)
        return;
    struct batch_iter it;
    struct batch_record r;
    uint32_t n = 0;
    batch_iter_init(&it, b, len);
    while (batch_iter_next(&it, &r) == 1) {
        size_t pos = 0;
        struct batch_header_kv kv;
        while (batch_header_next(&r, &pos, &kv) == 1)
            ;
        n++;
    }
    if (n != h.record_count)
        abort(); /* a validated batch must iterate to its count */
    struct idem_batch dup;
    int rc = idem_check(st, &h, 1000, &dup, msg, sizeof msg);
    if (rc == IDEM_APPEND) {
        if (idem_record(st, &h, *next_offset, *next_offset + h.record_count - 1, 1000))
            abort();
        *next_offset += h.record_count;
    } else if (rc == IDEM_DUPLICATE) {
        if (dup.last_offset < dup.base_offset || dup.last_offset >= *next_offset)
            abort();
    }
}

static void one_frame(struct idem *st, const struct codec_limits *lim, const uint8_t *frame,
                      const struct codec_frame *f, uint64_t *next_offset)
{
    struct codec_msg *m = NULL;
    char msg[256];
    if (codec_decode(frame + CODEC_PREFIX_SIZE, f->envelope_length, lim, &m) != 0)
        return;
    if (m->used > m->cap)
        abort();
    const Verity__Envelope *env = m->env;
    (void)codec_validate_response(env, f->payload_length, lim, msg, sizeof msg);
    int rc = codec_validate_request(env, f->payload_length, lim, msg, sizeof msg);
    if (rc == 0 && env->body_case == VERITY__ENVELOPE__BODY_PRODUCE_REQ) {
        const uint8_t *p = frame + CODEC_PREFIX_SIZE + f->envelope_length;
        size_t pos = 0;
        for (size_t i = 0; i < env->produce_req->n_batches; i++) {
            size_t len = env->produce_req->batches[i]->batch_bytes;
            if (pos + len > f->payload_length)
                abort(); /* validation promised the sums add up */
            check_batch(st, p + pos, len, next_offset);
            pos += len;
        }
        if (pos != f->payload_length)
            abort();
    }
    uint8_t *out = NULL;
    size_t out_len = 0;
    if (codec_encode(env, f->payload_length, lim, &out, &out_len) == 0) {
        struct codec_frame g;
        if (codec_frame_peek(out, out_len, lim, &g) != 0 || g.payload_length != f->payload_length)
            abort();
        free(out);
    }
    codec_msg_free(m);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const uint8_t seed[16] = "fuzz-idem-seed!";
    struct codec_limits lim;
    codec_limits_default(&lim);
    lim.frame_bytes_max = 1u << 20;
    lim.envelope_bytes_max = 1u << 18;
    lim.decode_alloc_max = 1u << 22;
    lim.batch_bytes_max = 1u << 20;
    lim.items_max = 256;
    struct idem st;
    if (idem_init(&st, 64, 64, 600000, seed))
        return 0;
    uint64_t next_offset = 0;
    size_t off = 0;
    for (int frames = 0; frames < 64 && off < size; frames++) {
        struct codec_frame f;
        if (codec_frame_peek(data + off, size - off, &lim, &f) != 0)
            break;
        if (f.total > size - off)
            break;
        one_frame(&st, &lim, data + off, &f, &next_offset);
        off += f.total;
    }
    check_batch(&st, data, size, &next_offset);
    /* The same bytes with batch_length and the CRC made right, so the
     * record decoder behind the CRC check is explored too. */
    if (size >= BATCH_HDR_SIZE && size <= (1u << 20)) {
        uint8_t *copy = malloc(size);
        if (copy) {
            memcpy(copy, data, size);
            put_le32(copy + BATCH_OFF_LENGTH, (uint32_t)size);
            put_le32(copy + BATCH_OFF_CRC, batch_crc_compute(copy, size));
            check_batch(&st, copy, size, &next_offset);
            free(copy);
        }
    }
    idem_deinit(&st);
    return 0;
}
