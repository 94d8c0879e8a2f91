/*
 * vsr_wire: the byte encoding of replication messages between brokers.
 *
 * Two layers, both little-endian, both decoded with strict length checks
 * (every byte accounted for, no trailing bytes, every count within its
 * limit, enums within range) so a peer's bytes either decode to a message
 * the core may take or are refused with VERITY_EPROTO and change nothing.
 *
 * 1. A peer frame (one per message on the broker-to-broker connection):
 *
 *      off size field
 *        0    4 len      bytes after this field (<= VSR_WIRE_FRAME_MAX)
 *        4    1 kind     enum vsr_wire_kind
 *        5    1 reserved 0
 *        6    2 glen     group name bytes (<= VSR_WIRE_GROUP_MAX)
 *        8 glen group    the replica group: "__meta", or a topic name
 *        . 4    part     partition (0 for __meta)
 *        .  .   payload  the rest (kind MSG: a vsr message, below;
 *                        HELLO: u32 node id of the sender, u64 cluster;
 *                        XFER: a state-transfer message, xfer_wire.h)
 *
 * 2. A vsr message (vsr_wire_encode / vsr_wire_decode):
 *
 *      off size field
 *        0    1 version  VSR_WIRE_VERSION
 *        1    1 type     enum vsr_msg_type
 *        2    1 from     replica index (< VSR_REPLICAS_MAX) or 0xff (client)
 *        3    1 to       replica index or 0xff
 *        4    8 cluster
 *       12    8 view
 *       20    8 commit
 *       28    . fields of the type, in this order, each present only when
 *               the type has it (table `fields` in vsr_wire.c):
 *               log_view u64 | op u64 | op_min u64 (<= op) | checksum 32 |
 *               digest 32 |
 *               client u64, request u64 | header (124: checksum 32,
 *               parent 32, op 8, view 8, size 4, client 8, request 8) |
 *               nack_above u8 (0|1), faulty_n u8 (<= 16), faulty u32 * n |
 *               window_base u64, window_len u8 (<= VSR_WINDOW_MAX),
 *               entries (status u8 (< 4), full u8 (0|1), header 124) * len |
 *               body_len u32, body (PREPARE / REPAIR: body_len == header.size;
 *               HEADERS: 1 to VSR_HEADERS_MAX headers of VSR_HEADER_SIZE bytes
 *               each, as on disk with their hcheck, which the core checks)
 *
 * The header travels as its fields, not its 144 hashed bytes: the core
 * checks every entry it takes against its checksum anyway (REPAIR, PREPARE)
 * and the codec stays free of hashing.
 */
#ifndef VERITY_VSR_WIRE_H
#define VERITY_VSR_WIRE_H

#include <stddef.h>
#include <stdint.h>

#include "broker/vsr/vsr.h"

#define VSR_WIRE_VERSION     1
#define VSR_WIRE_GROUP_MAX   255
#define VSR_WIRE_HDR_FIELDS  124
#define VSR_WIRE_BODY_MAX    (16u << 20)  /* largest body a message may carry */
#define VSR_WIRE_FIXED       28
/* Largest encoded message: every field plus a full window and body. */
#define VSR_WIRE_MSG_MAX                                                                           \
    (VSR_WIRE_FIXED + 8 + 8 + 8 + 32 + 32 + 16 + VSR_WIRE_HDR_FIELDS + 2 + 4 * VSR_FAULTY_LIST_MAX + \
     9 + VSR_WINDOW_MAX * (2 + VSR_WIRE_HDR_FIELDS) + 4 + VSR_WIRE_BODY_MAX)
#define VSR_WIRE_FRAME_HDR_MAX (8 + VSR_WIRE_GROUP_MAX + 4)
#define VSR_WIRE_FRAME_MAX     (VSR_WIRE_FRAME_HDR_MAX + VSR_WIRE_MSG_MAX)

enum vsr_wire_kind {
    VSR_WIRE_HELLO = 1, /* first frame on a connection: who is calling */
    VSR_WIRE_MSG = 2,   /* a vsr message for the named group */
    VSR_WIRE_PING = 3,  /* keepalive of the pair (no payload) */
    VSR_WIRE_XFER = 4,  /* a state-transfer message for the named group (xfer_wire.h) */
    VSR_WIRE_KIND_MAX = 4
};

/* A decoded peer frame; group and payload point into the caller's buffer. */
struct vsr_wire_frame {
    uint8_t kind;
    const char *group; /* not NUL-terminated */
    uint16_t group_len;
    uint32_t partition;
    const uint8_t *payload;
    uint32_t payload_len;
};

/* Bytes vsr_wire_encode will write for m (0 when m cannot be encoded:
 * bad type, counts over their limits, body over VSR_WIRE_BODY_MAX). */
size_t vsr_wire_size(const struct vsr_msg *m);

/* Encodes m into out (cap bytes). Returns the length, or 0 when m cannot be
 * encoded or cap is too small. */
size_t vsr_wire_encode(const struct vsr_msg *m, uint8_t *out, size_t cap);

/* Decodes exactly len bytes into *m. m->body points into in (borrowed; valid
 * while in is). 0, or VERITY_EPROTO (malformed) / VERITY_EVERSION. *m is
 * unspecified after an error. */
int vsr_wire_decode(const uint8_t *in, size_t len, struct vsr_msg *m)
    __attribute__((warn_unused_result));

/* Writes a frame header (len covers header rest + payload_len) into out.
 * Returns the header length, or 0 when the group name is too long or cap is
 * too small. The payload follows it. */
size_t vsr_wire_frame_header(uint8_t kind, const char *group, size_t group_len, uint32_t partition,
                             uint32_t payload_len, uint8_t *out, size_t cap);

/* Length of the frame at the start of in: 0 when more bytes are needed,
 * the total frame length (4 + len) when complete, or VERITY_EPROTO (as a
 * negative value) when the length field is out of range. */
long vsr_wire_frame_len(const uint8_t *in, size_t avail);

/* Decodes one complete frame (exactly len bytes, as vsr_wire_frame_len
 * said). 0 or VERITY_EPROTO. */
int vsr_wire_frame_decode(const uint8_t *in, size_t len, struct vsr_wire_frame *f)
    __attribute__((warn_unused_result));

#endif
