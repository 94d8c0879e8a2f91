/*
 * krecords: Kafka record batch v2 <-> Verity batch (storage/batch.h).
 *
 * Decision (docs/KAFKA.md): a produced Kafka batch is converted into a
 * Verity batch, record for record, and stored like any native batch, so the
 * chain, the signed checkpoints, `verity log verify`, native consumers and
 * groups see one format. Kept exactly: per-record timestamps (CreateTime),
 * keys, values (null stays null), headers in order, producer id, epoch and
 * base sequence. Not kept: Kafka's partition leader epoch (0 on the way out)
 * and a client's maxTimestamp when it disagrees with its records (recomputed).
 * A fetch converts back, one Kafka batch per Verity batch, same base offset
 * and record count, with the CRC32C recomputed over attributes..end. A
 * Verity control batch (checkpoint, recovery) goes out as a Kafka control
 * batch holding one COMMIT marker with producer id -1, which consumers in
 * read_uncommitted skip while advancing past its offset.
 *
 * Kafka record batch v2 (big-endian):
 *   0 baseOffset i64 | 8 batchLength i32 (bytes after this field) |
 *   12 partitionLeaderEpoch i32 | 16 magic i8 (2) | 17 crc u32 (CRC32C of
 *   [21, end)) | 21 attributes i16 (bits 0-2 compression, 3 timestamp type,
 *   4 transactional, 5 control) | 23 lastOffsetDelta i32 | 27 baseTimestamp
 *   i64 | 35 maxTimestamp i64 | 43 producerId i64 | 51 producerEpoch i16 |
 *   53 baseSequence i32 | 57 recordCount i32 | 61 records
 * Record: length varint | attributes i8 | timestampDelta varlong |
 *   offsetDelta varint | keyLength varint | key | valueLength varint | value
 *   | headerCount varint | headers: keyLength varint, key, valueLength
 *   varint, value (all varints zigzag).
 */
#ifndef VERITY_KRECORDS_H
#define VERITY_KRECORDS_H

#include <stddef.h>
#include <stdint.h>

#include "broker/kafka/kwire.h"
#include "storage/batch.h"

#define KREC_HDR_SIZE      61
#define KREC_CRC_FROM      21
#define KREC_ATTR_COMPRESS 0x07
#define KREC_ATTR_LOGTIME  0x08
#define KREC_ATTR_TXN      0x10
#define KREC_ATTR_CONTROL  0x20

/* Kafka error codes the conversion reports. */
#define KERR_CORRUPT_MESSAGE       2
#define KERR_MESSAGE_TOO_LARGE     10
#define KERR_INVALID_TIMESTAMP     32
#define KERR_UNSUPPORTED_MSG_FMT   43
#define KERR_UNSUPPORTED_COMPRESS  76
#define KERR_INVALID_RECORD        87

struct krec_src {
    int64_t producer_id;
    int16_t producer_epoch;
    int32_t base_sequence;
    int32_t record_count;
};

/*
 * Splits off the first Kafka batch of the len bytes at p: *batch_len gets
 * its size. Returns 0, or a Kafka error code (> 0) with msg.
 */
int krec_next(const uint8_t *p, size_t len, size_t *batch_len, char *msg, size_t cap);

/*
 * Converts the Kafka batch kb (kb_len bytes, from krec_next) into a Verity
 * batch in bb (reset first; its capacity bounds the result). Checks magic,
 * CRC, attributes (no compression, no transactions, no control batches),
 * every record's bounds, offset deltas and the header limit. Returns 0 with
 * the batch in bb->buf[0, bb->len) and *src filled, or a Kafka error code
 * (> 0) with one sentence in msg.
 */
int krec_to_verity(const uint8_t *kb, size_t kb_len, struct batch_builder *bb,
                   struct krec_src *src, char *msg, size_t cap);

/*
 * Appends the Kafka form of the Verity batch vb (vb_len bytes, read back
 * from a log) to w. Returns 0, VERITY_ECORRUPT when the batch does not
 * decode, or -ENOMEM (w->err).
 */
int krec_from_verity(const uint8_t *vb, size_t vb_len, struct kw *w);

#endif
