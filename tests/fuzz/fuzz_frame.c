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
 *   - the input as consumer-group log records (broker/group/group.h): applied
 *     with group_apply to a state that holds one group, as is and with the
 *     record's length and CRC fixed up so the body decoder and the apply
 *     rules are reached; the state must stay consistent (group_check) and
 *     recover.
 *   - the input as snapshot payloads (issue 7): idem_decode into an empty
 *     partition state, and group_snap_load into a new group state (as is,
 *     and behind a valid magic and version so the body decoder is reached);
 *     a state that loads must pass group_check and recover.
 * Built and run by tests/fuzz/run.sh. Any crash, sanitizer report, leak or
 * limit violation (a decode using more than its cap) aborts.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "broker/batchcheck.h"
#include "broker/idem.h"
#include "broker/group/group.h"
#include "broker/group/group_snap.h"
#include "proto/codec.h"
#include "storage/crc32c.h"
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

/* A group log holding one group ("g", 2 partitions of "orders", one member,
 * a few deliveries), built once by the live machine. */
static uint8_t *glog;
static size_t *glog_len, glog_n;

static void glog_build(void)
{
    struct group_state *st = NULL;
    if (group_state_new(1000, &st) || group_recover(st, 1000))
        abort();
    struct group_config c;
    group_config_default(&c);
    snprintf(c.name, sizeof c.name, "g");
    c.n_topics = 1;
    snprintf(c.topics[0].name, sizeof c.topics[0].name, "orders");
    c.topics[0].partitions = 2;
    uint64_t start[2] = {0, 5}, t, m;
    const char *topics[] = {"orders"};
    uint64_t hwm[2] = {10, 12};
    struct group_delivery d[8];
    size_t n;
    if (group_create(st, &c, start, 2, 1000, &t) ||
        group_join(st, "g", "m", topics, 1, 0, 1000, &m, &t) ||
        group_horizon(st, "g", 0, 20, 1000) || group_fetch(st, "g", m, 8, hwm, 2, 1001, d, &n, &t))
        abort();
    struct group_ref r = {d[0].pidx, d[0].offset};
    if (group_ack(st, "g", m, &r, 1, 1002, &t) ||
        group_nack(st, "g", m, (struct group_ref){d[1].pidx, d[1].offset}, 0, "e", 1002, &t))
        abort();
    group_flush(st, 1003);
    size_t cap = 1 << 16, used = 0;
    glog = malloc(cap);
    glog_len = calloc(16, sizeof *glog_len);
    const uint8_t *rec;
    size_t len;
    uint64_t seq;
    while (group_next_record(st, &rec, &len, &seq) && glog_n < 16 && used + len <= cap) {
        memcpy(glog + used, rec, len);
        glog_len[glog_n++] = len;
        used += len;
    }
    group_state_free(st);
}

/* Applies the first k records of glog, then rec (len bytes). */
static void group_one(const uint8_t *rec, size_t len, size_t k)
{
    struct group_state *st = NULL;
    if (group_state_new(1000, &st))
        return;
    size_t pos = 0;
    for (size_t i = 0; i < k && i < glog_n; i++) {
        if (group_apply(st, glog + pos, glog_len[i]))
            abort(); /* the machine's own records always apply */
        pos += glog_len[i];
    }
    uint8_t *before = NULL, *after = NULL;
    size_t lb = 0, la = 0;
    if (group_snapshot(st, true, &before, &lb))
        abort();
    int rc = group_apply(st, rec, len);
    if (group_snapshot(st, true, &after, &la))
        abort();
    if (rc != 0 && (la != lb || memcmp(before, after, la) != 0))
        abort(); /* a refused record changed the state */
    free(before);
    free(after);
    group_check(st);
    if (group_recover(st, 5000))
        abort();
    group_check(st);
    group_state_free(st);
}

static void group_records(const uint8_t *data, size_t size)
{
    if (size < 1 || size > (1u << 16))
        return;
    size_t k = data[0] % (glog_n + 1);
    group_one(data + 1, size - 1, k);
    /* Length, seq and CRC made right: the body decoder and apply rules. */
    if (size - 1 >= 32) {
        uint8_t *copy = malloc(size - 1);
        if (!copy)
            return;
        memcpy(copy, data + 1, size - 1);
        size_t n = size - 1;
        copy[0] = 'V';
        copy[1] = 'G';
        for (int i = 0; i < 4; i++)
            copy[4 + i] = (uint8_t)(n >> (8 * i));
        for (int i = 0; i < 8; i++)
            copy[8 + i] = (uint8_t)((k + 1) >> (8 * i));
        uint32_t c = crc32c(0, copy, 28);
        c = crc32c(c, copy + 32, n - 32);
        for (int i = 0; i < 4; i++)
            copy[28 + i] = (uint8_t)(c >> (8 * i));
        group_one(copy, n, k);
        free(copy);
    }
}

static void group_snap_one(const uint8_t *b, size_t len)
{
    struct group_state *st = NULL;
    if (group_state_new(1000, &st))
        return;
    if (group_snap_load(st, b, len) == 0) {
        group_check(st);
        if (group_recover(st, 1u << 30))
            abort();
        group_check(st);
    }
    group_state_free(st);
}

static void snapshots(const uint8_t *data, size_t size)
{
    static const uint8_t seed[16] = "fuzz-snap-seed!";
    struct idem s;
    if (idem_init(&s, 64, 64, 600000, seed) == 0) {
        int rc = idem_decode(&s, data, size);
        if (rc != 0 && (s.pcount || s.kcount))
            abort(); /* a refused snapshot leaves the state empty */
        idem_deinit(&s);
    }
    if (size > (1u << 16))
        return;
    group_snap_one(data, size);
    uint8_t *copy = malloc(size + 8);
    if (!copy)
        return;
    memcpy(copy, "GSNP\x01\0\0\0", 8);
    memcpy(copy + 8, data, size);
    group_snap_one(copy, size + 8);
    free(copy);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!glog)
        glog_build();
    group_records(data, size);
    snapshots(data, size);
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
