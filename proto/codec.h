/*
 * codec: the frame codec of the Verity wire protocol, shared by the broker
 * and libverity. protobuf-c stays behind this file: it checks a frame's
 * length before anything is decoded, decodes the envelope with an allocator
 * that caps what one decode may allocate, validates requests and responses
 * structurally (names, counts, payload accounting, limits), and maps error
 * codes between include/verity/errors.h and the wire enum.
 *
 * Frame (docs/PROTOCOL.md is the normative text):
 *
 *   off  size
 *     0     4  frame_length     u32 big-endian: bytes after this field
 *     4     4  envelope_length  u32 big-endian: <= frame_length - 4
 *     8     e  envelope         protobuf Verity__Envelope
 *   8+e     p  payload          raw bytes, p = frame_length - 4 - e
 *
 * A frame is valid only if frame_length >= 4, frame_length <= the limit
 * frame_bytes_max, envelope_length <= envelope_bytes_max and
 * envelope_length <= frame_length - 4. The payload holds record batches
 * (storage/batch.h) back to back; Produce and Fetch messages say, per entry
 * and in order, how many payload bytes belong to that entry.
 *
 * Threads: every function is reentrant; a struct codec_msg belongs to one
 * thread at a time.
 */
#ifndef VERITY_PROTO_CODEC_H
#define VERITY_PROTO_CODEC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <protobuf-c/protobuf-c.h>

#include "proto/verity.pb-c.h"
#include "verity/limits.h"

#define CODEC_PROTOCOL_VERSION   1u
#define CODEC_PREFIX_SIZE        8u          /* frame_length + envelope_length */
#define CODEC_ENVELOPE_BYTES_MAX (4u << 20)  /* default protobuf part of a frame */
#define CODEC_DECODE_ALLOC_MAX   (32u << 20) /* default heap for one decode */
/* Limits a client can reach live in include/verity/limits.h. */
#define CODEC_ITEMS_MAX          VERITY_ITEMS_MAX
#define CODEC_STRING_BYTES_MAX   VERITY_STRING_BYTES_MAX
#define CODEC_GROUP_NAME_MAX     VERITY_GROUP_NAME_MAX
#define CODEC_MEMBER_NAME_MAX    VERITY_MEMBER_NAME_MAX
#define CODEC_GROUP_TOPICS_MAX   VERITY_GROUP_TOPICS_MAX
#define CODEC_GROUP_BACKOFF_MAX  VERITY_GROUP_BACKOFF_MAX
#define CODEC_GROUP_FETCH_MAX    VERITY_GROUP_FETCH_MAX

/* Limits the codec enforces; codec_limits_default fills the defaults. */
struct codec_limits {
    uint32_t frame_bytes_max;    /* frame_length ceiling (VERITY_FRAME_BYTES_MAX) */
    uint32_t envelope_bytes_max; /* envelope_length ceiling */
    size_t decode_alloc_max;     /* bytes one envelope decode may allocate */
    uint32_t batch_bytes_max;    /* one produced batch (VERITY_BATCH_BYTES_MAX) */
    uint32_t items_max;          /* repeated entries in one message */
};

void codec_limits_default(struct codec_limits *lim);

/* The parsed prefix of a frame. */
struct codec_frame {
    uint32_t frame_length; /* bytes after the length field */
    uint32_t envelope_length;
    uint32_t payload_length; /* frame_length - 4 - envelope_length */
    size_t total;            /* bytes the whole frame occupies: 4 + frame_length */
};

/*
 * Parses the prefix at buf (avail readable bytes). Returns 0 with *out filled
 * when the 8 prefix bytes are present and valid; 1 when more bytes are needed
 * (fewer than 8, and the first 4 if present are within the limit);
 * VERITY_ELIMIT when frame_length or envelope_length exceeds its limit;
 * VERITY_EPROTO when the lengths are inconsistent. A caller that gets an
 * error must close the connection: the stream cannot be resynchronised.
 */
int codec_frame_peek(const uint8_t *buf, size_t avail, const struct codec_limits *lim,
                     struct codec_frame *out) __attribute__((warn_unused_result));

/* A decoded envelope and the capped allocator that owns its memory. */
struct codec_msg {
    Verity__Envelope *env;    /* owned; freed by codec_msg_free */
    ProtobufCAllocator alloc; /* allocator_data points at this struct */
    size_t used;              /* bytes currently allocated by the decode */
    size_t cap;               /* decode_alloc_max at decode time */
    bool over;                /* an allocation was refused */
};

/*
 * Decodes len envelope bytes. On success *out is a new codec_msg owned by the
 * caller (codec_msg_free). Returns 0; VERITY_ELIMIT when len exceeds
 * envelope_bytes_max or the decode would allocate more than
 * decode_alloc_max; VERITY_EPROTO when the bytes are not an Envelope;
 * -ENOMEM. Does not validate the contents (see codec_validate_*).
 */
int codec_decode(const uint8_t *buf, size_t len, const struct codec_limits *lim,
                 struct codec_msg **out) __attribute__((warn_unused_result));

/* Frees a codec_msg and its envelope. NULL is a no-op. */
void codec_msg_free(struct codec_msg *msg);

/*
 * Encodes the prefix and env for a frame whose payload will be payload_len
 * bytes (sent by the caller right after). On success *out is a malloc'd
 * buffer of *out_len bytes owned by the caller. Returns 0, VERITY_ELIMIT
 * when the frame would exceed lim's frame_bytes_max or envelope_bytes_max
 * (lim NULL: defaults), or -ENOMEM.
 */
int codec_encode(const Verity__Envelope *env, uint64_t payload_len, const struct codec_limits *lim,
                 uint8_t **out, size_t *out_len) __attribute__((warn_unused_result));

/*
 * Structural validation of a decoded request envelope whose frame carried
 * payload_len payload bytes: protocol version, a request body (not a
 * response, not empty), string lengths, topic names, entry counts
 * (items_max), and for Produce that every batch_bytes is within
 * [BATCH_HDR_SIZE, batch_bytes_max] and they sum to payload_len (other
 * requests carry no payload). Returns 0; VERITY_EVERSION; VERITY_EPROTO;
 * VERITY_EINVAL; VERITY_ELIMIT. On error writes a message that names the
 * field or limit into msg (msg_cap bytes, may be 0).
 */
int codec_validate_request(const Verity__Envelope *env, uint64_t payload_len,
                           const struct codec_limits *lim, char *msg, size_t msg_cap)
    __attribute__((warn_unused_result));

/*
 * Structural validation of a decoded response envelope (client side): a
 * response body or an error, entry counts, and for Fetch that the
 * records_bytes sum to payload_len (other responses carry no payload).
 * Returns 0, VERITY_EVERSION, VERITY_EPROTO or VERITY_ELIMIT with msg.
 */
int codec_validate_response(const Verity__Envelope *env, uint64_t payload_len,
                            const struct codec_limits *lim, char *msg, size_t msg_cap)
    __attribute__((warn_unused_result));

/* True for 1..VERITY_TOPIC_NAME_MAX bytes of [A-Za-z0-9._-], not "." or
 * "..", and (unless allow_internal) not starting with "__". */
bool codec_topic_name_ok(const char *name, bool allow_internal);

/* True for 1..CODEC_GROUP_NAME_MAX bytes of [A-Za-z0-9._-], not "." or "..",
 * not starting with "__" (the topic name rule). */
bool codec_group_name_ok(const char *name);

/* Tenants (issue 14). On a broker with authentication, a tenant's object
 * "orders" is stored as "<tenant>~orders"; codec_topic_name_ok and
 * codec_group_name_ok accept such a tenant-qualified name (one separator, a
 * valid tenant before it, a valid name after it). codec_tenant_name_ok: 1..
 * CODEC_TENANT_NAME_MAX bytes of [A-Za-z0-9_-], not starting with "__". */
#define CODEC_TENANT_SEP      '~'
#define CODEC_TENANT_NAME_MAX 32u
#define CODEC_API_KEY_MAX     128u /* bytes of an api_key in Authenticate */
bool codec_tenant_name_ok(const char *name);

/* Error code mapping. err is 0, a VERITY_E* code or -errno. */
Verity__ErrorCode codec_err_to_wire(int err);
/* The inverse; unknown wire codes map to VERITY_EPROTO, ERR_SYSTEM to -EIO. */
int codec_err_from_wire(Verity__ErrorCode code);

/* True when the case is a request / a response. */
bool codec_is_request(Verity__Envelope__BodyCase c);
bool codec_is_response(Verity__Envelope__BodyCase c);
/* The response case that answers request case c (NOT_SET if none). */
Verity__Envelope__BodyCase codec_response_case(Verity__Envelope__BodyCase c);
/* Short name for logs and metrics ("produce", "fetch", ...); never NULL. */
const char *codec_body_name(Verity__Envelope__BodyCase c);

/* ---- blocking helpers (CLI, tests) -------------------------------------- */

/*
 * Writes one frame (env, then payload_len bytes of payload) to a blocking fd.
 * Returns 0, an encode error, or -errno.
 */
int codec_fd_write(int fd, const Verity__Envelope *env, const void *payload, size_t payload_len,
                   const struct codec_limits *lim) __attribute__((warn_unused_result));

/*
 * Reads one frame from fd, waiting at most timeout_ms for each chunk (-1:
 * forever). On success *msg is the decoded envelope (codec_msg_free) and
 * *payload a malloc'd copy of the payload (NULL when empty; free()) of
 * *payload_len bytes. Returns 0; VERITY_ECLOSED on EOF; VERITY_ETIMEOUT;
 * VERITY_ELIMIT / VERITY_EPROTO on a bad frame; -errno.
 */
int codec_fd_read(int fd, const struct codec_limits *lim, int timeout_ms, struct codec_msg **msg,
                  uint8_t **payload, size_t *payload_len) __attribute__((warn_unused_result));

#endif
