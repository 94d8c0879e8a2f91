/*
 * Record batch: the unit of write, replication and fetch. Built by clients in
 * the on-disk layout; the log validates it, stamps the base offset and chain
 * hash in place, and appends the bytes unchanged. docs/FORMAT.md is the
 * normative description; tests/unit/test_batch.c pins it with golden bytes.
 *
 * Header (112 bytes, all integers little-endian):
 *
 *   off size field
 *     0    4 magic             'V' 'R' 'B' '1'
 *     4    4 batch_length      u32, whole batch including this header
 *     8    8 base_offset       u64, offset of the first record; set by the log
 *    16   32 chain_hash        SHA-256(prev_chain || bytes[0,16) || bytes[48,len)),
 *                              set by the log; prev_chain is the previous
 *                              batch's chain_hash (32 zero bytes for the first)
 *    48    4 crc32c            CRC32C of bytes [52, batch_length)
 *    52    1 version           1
 *    53    1 attributes        bits 0-2 compression (0 only), bit 4 control
 *                              batch, bit 5 idempotency key present
 *    54    2 reserved          0
 *    56    4 record_count      u32, 1..VERITY_BATCH_RECORDS_MAX
 *    60    4 last_offset_delta u32, record_count - 1
 *    64    8 first_timestamp   i64 ms since the epoch
 *    72    8 max_timestamp     i64 ms, the largest record timestamp
 *    80    8 producer_id       i64, -1 when none
 *    88    2 producer_epoch    i16, -1 when none
 *    90    2 reserved          0
 *    92    4 base_sequence     i32, -1 when none
 *    96   16 idempotency_key   16 bytes, zero unless attribute bit 5
 *   112      records
 *
 * Record (varints are LEB128; s = zigzag-signed):
 *   length uvarint (bytes after this field) | attributes u8 (0) |
 *   timestamp_delta svarint | offset_delta uvarint (== index) |
 *   key_length svarint (-1 null) | key | value_length svarint (-1 null) |
 *   value | header_count uvarint | headers: key_length uvarint, key,
 *   value_length svarint (-1 null), value
 *
 * A batch is valid only if: magic and version match, batch_length equals the
 * bytes it occupies, reserved bytes are zero, the CRC matches, record_count
 * records decode exactly to the end, each offset_delta equals its index,
 * last_offset_delta == record_count - 1, and max_timestamp equals the largest
 * record timestamp. The chain is checked by whoever knows prev_chain.
 */
#ifndef VERITY_BATCH_H
#define VERITY_BATCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define BATCH_MAGIC_0 'V'
#define BATCH_MAGIC_1 'R'
#define BATCH_MAGIC_2 'B'
#define BATCH_MAGIC_3 '1'
#define BATCH_VERSION 1
#define BATCH_HDR_SIZE 112
#define BATCH_CHAIN_SIZE 32
#define BATCH_IDEM_KEY_SIZE 16
#define BATCH_CRC_FROM 52

#define BATCH_OFF_LENGTH 4
#define BATCH_OFF_BASE_OFFSET 8
#define BATCH_OFF_CHAIN 16
#define BATCH_OFF_CRC 48

#define BATCH_ATTR_COMPRESSION_MASK 0x07u
#define BATCH_ATTR_CONTROL 0x10u
#define BATCH_ATTR_IDEM_KEY 0x20u
#define BATCH_ATTR_KNOWN (BATCH_ATTR_COMPRESSION_MASK | BATCH_ATTR_CONTROL | BATCH_ATTR_IDEM_KEY)

/* Control batches hold one record whose key names the control type. */
#define BATCH_CONTROL_CHECKPOINT "verity.checkpoint"
#define BATCH_CONTROL_RECOVERY "verity.recovery"
/* A state installed from a peer (a replica group's state transfer) follows:
 * the records before it do not derive the state after it; the owner keeps
 * a snapshot at the offset after this batch (broker/groups_snap.c). */
#define BATCH_CONTROL_STATE "verity.state"

struct batch_hdr {
    uint32_t length;
    uint64_t base_offset;
    uint8_t chain[BATCH_CHAIN_SIZE];
    uint32_t crc;
    uint8_t version;
    uint8_t attributes;
    uint32_t record_count;
    uint32_t last_offset_delta;
    int64_t first_timestamp;
    int64_t max_timestamp;
    int64_t producer_id;
    int16_t producer_epoch;
    int32_t base_sequence;
    uint8_t idem_key[BATCH_IDEM_KEY_SIZE];
};

struct batch_limits {
    uint32_t bytes_max;       /* whole batch */
    uint32_t records_max;     /* records in the batch */
    uint32_t headers_max;     /* headers per record */
};

/* The defaults from include/verity/limits.h. */
extern const struct batch_limits batch_limits_default;

/* Little-endian helpers; never write a padded struct to disk. */
static inline void put_le16(uint8_t *p, uint16_t v) { p[0] = v; p[1] = v >> 8; }
static inline void put_le32(uint8_t *p, uint32_t v)
{
    p[0] = v; p[1] = v >> 8; p[2] = v >> 16; p[3] = v >> 24;
}
static inline void put_le64(uint8_t *p, uint64_t v)
{
    put_le32(p, (uint32_t)v);
    put_le32(p + 4, (uint32_t)(v >> 32));
}
static inline uint16_t get_le16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }
static inline uint32_t get_le32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static inline uint64_t get_le64(const uint8_t *p)
{
    return (uint64_t)get_le32(p) | (uint64_t)get_le32(p + 4) << 32;
}

/*
 * Decodes and checks the fixed header of the batch at buf, of which avail
 * bytes are readable (at least BATCH_HDR_SIZE). Checks magic, version,
 * reserved bytes, attributes, length >= header and record_count relations;
 * not the CRC. Returns 0, VERITY_ECORRUPT (not a batch), or VERITY_EVERSION.
 */
int batch_hdr_decode(const uint8_t *buf, size_t avail, struct batch_hdr *out)
    __attribute__((warn_unused_result));

/* CRC32C over bytes [52, len) of a batch of len bytes. */
uint32_t batch_crc_compute(const uint8_t *batch, size_t len);

/*
 * Full validation of a len-byte batch: header, limits (lim may be NULL for
 * the defaults), CRC, and every record. Returns 0, VERITY_ECORRUPT (bad
 * bytes), VERITY_EBADBATCH (well formed but violates a rule), VERITY_ELIMIT,
 * or VERITY_EVERSION. Does not check base_offset or the chain.
 */
int batch_validate(const uint8_t *batch, size_t len, const struct batch_limits *lim)
    __attribute__((warn_unused_result));

/* out = SHA-256(prev || batch[0,16) || batch[48,len)). prev is 32 bytes. */
void batch_chain_compute(const uint8_t *prev, const uint8_t *batch, size_t len, uint8_t *out);

/* Stamp the log-assigned fields in place (not covered by the CRC). */
void batch_set_base_offset(uint8_t *batch, uint64_t base_offset);
void batch_set_chain(uint8_t *batch, const uint8_t *chain);

/* ---- records ------------------------------------------------------------ */

struct batch_record {
    int64_t timestamp;          /* absolute, ms */
    uint32_t offset_delta;
    const uint8_t *key;         /* borrowed from the batch; NULL when null */
    int32_t key_len;            /* -1 when null */
    const uint8_t *value;
    int32_t value_len;          /* -1 when null */
    uint32_t header_count;
    const uint8_t *headers;     /* encoded headers, walk with batch_header_next */
    size_t headers_len;
};

struct batch_header_kv {
    const uint8_t *key;
    uint32_t key_len;
    const uint8_t *value;       /* NULL when null */
    int32_t value_len;          /* -1 when null */
};

struct batch_iter {
    const uint8_t *p;
    const uint8_t *end;
    uint32_t index;
    uint32_t count;
    int64_t first_timestamp;
};

/* Iterates a batch that passed batch_validate (or at least batch_hdr_decode;
 * the iterator still bounds-checks every field). */
void batch_iter_init(struct batch_iter *it, const uint8_t *batch, size_t len);
/* Returns 1 with *out filled, 0 at the end, VERITY_ECORRUPT on bad bytes. */
int batch_iter_next(struct batch_iter *it, struct batch_record *out);
/* Walks rec->headers: *pos starts at 0. Returns 1, 0 at the end, or <0. */
int batch_header_next(const struct batch_record *rec, size_t *pos, struct batch_header_kv *out);

/* ---- builder ------------------------------------------------------------ */

struct batch_builder {
    uint8_t *buf;               /* owned */
    size_t cap;
    size_t len;
    uint32_t count;
    int64_t first_timestamp;
    int64_t max_timestamp;
};

struct batch_meta {
    uint8_t attributes;         /* BATCH_ATTR_CONTROL or 0; idem bit set for you */
    int64_t producer_id;        /* -1 none */
    int16_t producer_epoch;     /* -1 none */
    int32_t base_sequence;      /* -1 none */
    const uint8_t *idem_key;    /* 16 bytes or NULL */
};

/* Allocates a builder able to hold a batch of up to cap bytes. */
int batch_builder_init(struct batch_builder *b, size_t cap) __attribute__((warn_unused_result));
void batch_builder_deinit(struct batch_builder *b);
void batch_builder_reset(struct batch_builder *b);
/* Bytes one record with these sizes adds to a batch (upper bound). */
size_t batch_record_size_max(size_t key_len, size_t value_len, const struct batch_header_kv *h,
                             size_t nh);
/* Appends a record (key/value may be NULL for null). Returns 0, VERITY_ELIMIT
 * when it does not fit in cap or the record limit, or VERITY_EINVAL for bad
 * lengths or a timestamp more than INT64_MAX from the batch's first. */
int batch_builder_add(struct batch_builder *b, int64_t timestamp, const void *key, int32_t key_len,
                      const void *value, int32_t value_len, const struct batch_header_kv *headers,
                      uint32_t header_count) __attribute__((warn_unused_result));
/* Writes the header and CRC. The batch is b->buf[0, b->len); it stays valid
 * until the next add or reset. Returns 0, or VERITY_EINVAL when empty. */
int batch_builder_finish(struct batch_builder *b, const struct batch_meta *meta)
    __attribute__((warn_unused_result));

#endif
