/*
 * xfer_wire: the byte encoding of state-transfer messages between brokers
 * (docs/REPLICATION.md "State transfer"). They travel in peer frames of kind
 * VSR_WIRE_XFER (vsr_wire.h), beside the vsr messages of the same group.
 *
 * A replica too far behind to catch up from the journal asks a peer for
 * the committed batches of its data log from its own log end (GET); the
 * peer answers with up to max_bytes of whole batches (DATA) and names its
 * applied position (op, checksum, digest: the core's, chain: its log's
 * chain hash at end, end: its log end at op), or refuses (ERR). The requester appends each batch
 * with vlog_append_exact and asks again from its new end until it reaches
 * the peer's end.
 *
 * Payload (little-endian), decoded with strict length checks (every byte
 * accounted for, enums in range, len <= XFER_CHUNK_MAX) so that a peer's
 * bytes either decode or are refused with VERITY_EPROTO:
 *
 *      off size field
 *        0    1 version   XFER_WIRE_VERSION
 *        1    1 type      enum xfer_type
 *        2    1 from      replica index of the sender (< VSR_REPLICAS_MAX)
 *        3    1 to        replica index of the receiver
 *        4    8 cluster
 *       12    8 xid       transfer id chosen by the requester
 *       GET:  20 8 from_offset, 28 4 max_bytes (1..XFER_CHUNK_MAX)
 *       DATA: 20 8 op, 28 32 checksum, 60 32 digest, 92 32 chain, 124 8 end,
 *             132 8 from_offset (== the GET's), 140 4 len, 144 len bytes
 *             (whole batches; from_offset + records <= end)
 *       ERR:  20 4 code (a VERITY_E* value, negative)
 */
#ifndef VERITY_VSR_XFER_WIRE_H
#define VERITY_VSR_XFER_WIRE_H

#include <stddef.h>
#include <stdint.h>

#include "broker/vsr/vsr.h"

#define XFER_WIRE_VERSION 1
#define XFER_CHUNK_MAX    (1u << 20) /* bytes of batches in one DATA */
#define XFER_GET_SIZE     32
#define XFER_DATA_FIXED   144
#define XFER_ERR_SIZE     24
#define XFER_WIRE_MAX     (XFER_DATA_FIXED + XFER_CHUNK_MAX)

enum xfer_type {
    XFER_GET = 1,
    XFER_DATA = 2,
    XFER_ERR = 3,
};

struct xfer_msg {
    uint8_t type;
    uint8_t from, to;
    uint64_t cluster;
    uint64_t xid;
    uint64_t from_offset;   /* GET, DATA */
    uint32_t max_bytes;     /* GET */
    uint64_t op;            /* DATA: the sender's applied op */
    uint8_t checksum[VSR_CHECKSUM_SIZE];
    uint8_t digest[VSR_CHECKSUM_SIZE]; /* DATA: the core's digest at op */
    uint8_t chain[VSR_CHECKSUM_SIZE];  /* DATA: the log's chain hash at end */
    uint64_t end;           /* DATA: the sender's log end at op */
    const uint8_t *data;    /* DATA: borrowed from the input */
    uint32_t len;
    int32_t code;           /* ERR */
};

/* Bytes xfer_wire_encode writes for m (0: not encodable). */
size_t xfer_wire_size(const struct xfer_msg *m);
/* Encodes m into out; the length, or 0 when m is not encodable or cap is
 * too small. */
size_t xfer_wire_encode(const struct xfer_msg *m, uint8_t *out, size_t cap);
/* Decodes exactly len bytes. 0, VERITY_EPROTO or VERITY_EVERSION; m->data
 * points into in. */
int xfer_wire_decode(const uint8_t *in, size_t len, struct xfer_msg *m)
    __attribute__((warn_unused_result));

#endif
