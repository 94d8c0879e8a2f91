/*
 * libverity consumer groups: the client side of docs/GROUPS.md.
 *
 * A group reads one or more topics. Delivery is at least once: every message
 * a member receives is leased to it until an ack deadline; an ack ends the
 * lease, a nack or an expiry makes the message deliverable again with its
 * delivery count raised, and after the group's max_deliveries the broker
 * moves it to the group's dead-letter topic. Two modes (fixed when the group
 * is created): ordered (each partition owned by one member at a time, order
 * kept per partition) and shared (any member may take any message).
 *
 * Two handles, each with its own connection and I/O thread, built on the
 * same connection layer as the rest of libverity (see verity/verity.h for
 * threads, reconnects and errors, which apply here unchanged):
 *
 *   struct verity_group_admin     create, delete, list, describe, pending,
 *                                 reset (the `verity group` CLI)
 *   struct verity_group_consumer  one member: joins, heartbeats, fetches,
 *                                 acks / nacks / extends / terms
 *
 * Member life (all on the consumer's I/O thread, without help from the
 * application): it joins as soon as the connection is up, heartbeats every
 * heartbeat_ms so the session does not run out while the application is busy,
 * keeps up to fetch_inflight GroupFetch requests out while fewer than
 * queue_max messages wait to be polled, and sends the queued acks with the
 * next fetch (or gathers them for ack_linger_ms). When the broker says the member is
 * unknown (its session ran out, or the group was reset), it joins again as a
 * new member: leases of the old member are gone, so the acks still queued for
 * them are reported failed (VERITY_EMEMBER) and messages fetched for the old
 * member and not yet polled are dropped (the broker delivers them again).
 * After a broker restart the member keeps its id (membership is durable).
 *
 * Acks are asynchronous: verity_group_ack queues the ack and returns. The
 * broker's answer reaches the ack callback (result_cb, on the I/O thread) and
 * verity_group_commit, which waits until every ack queued before it has been
 * answered. An ack the broker answered with success is durable in the group
 * log: that message is never delivered again, also not after a broker
 * crash. VERITY_EALREADY: the message was acknowledged before (by this
 * member or another): it is done, but this ack was not the one that counted.
 * An ack that fails (VERITY_ELEASE: the lease expired and the message went
 * to another member, or its partition moved to another member; VERITY_EMEMBER;
 * a connection error after the retries) means the message may be delivered
 * again. verity_group_commit is a barrier: it returns after every ack queued
 * before it was answered, including acks resent one by one after their
 * request failed, with the first failure among them.
 *
 * Ordered mode: the consumer turns acks into cumulative acks ("everything of
 * this partition up to offset X") whenever that is exact, i.e. when no
 * message of the partition below X is still held unacknowledged or was
 * nacked by this member; otherwise it sends ranges. Either way each message
 * is reported once to result_cb.
 *
 * Threads. Every function is thread-safe except verity_group_poll and
 * verity_group_consume, which one thread at a time calls (the polling
 * thread). result_cb and member_cb run on the consumer's I/O thread, one at a
 * time; they must return quickly and must not call verity_group_poll,
 * verity_group_commit, verity_group_connect or verity_group_consumer_free
 * (those return VERITY_EINVAL there); verity_group_ack and friends are fine.
 * Without result_cb and member_cb, a verity_group_poll that waits runs the
 * member's I/O itself (as verity_consumer_poll does); queued acks then leave
 * with the next poll, or 2 ms after the last one, whichever comes first.
 *
 * Ownership. Pointer arguments are borrowed for the call (the library copies
 * what it keeps). Messages returned by verity_group_poll and the memory they
 * point to (key, value, headers) belong to the consumer and stay valid until
 * the next verity_group_poll / verity_group_consume or verity_group_consumer_free.
 * Their `topic` string is interned and stays valid until
 * verity_group_consumer_free, so a (topic, partition, offset) triple may be
 * kept and acknowledged later. Results from the admin calls are owned by the
 * caller and freed with the matching *_free function.
 */
#ifndef VERITY_GROUP_H
#define VERITY_GROUP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "verity/verity.h"

#define VERITY_GROUP_NAME_MAX 200u       /* bytes in a group name */
#define VERITY_GROUP_TOPICS_MAX 16u      /* topics per group */
#define VERITY_GROUP_BACKOFF_MAX 8u      /* steps in a redelivery backoff schedule */
#define VERITY_GROUP_MEMBER_NAME_MAX 128u
#define VERITY_GROUP_ERROR_MAX 256u      /* bytes of nack / term error text the broker keeps */
#define VERITY_GROUP_FETCH_MAX 65536u    /* messages in one fetch */

/* Header keys the broker puts on every dead letter, values as UTF-8 text
 * (docs/PROTOCOL.md, "Dead letters"). The record keeps the source record's
 * key, value and headers besides these. */
#define VERITY_DLQ_HDR_PREFIX "verity."
#define VERITY_DLQ_HDR_TOPIC "verity.source.topic"
#define VERITY_DLQ_HDR_PARTITION "verity.source.partition"   /* decimal */
#define VERITY_DLQ_HDR_OFFSET "verity.source.offset"         /* decimal */
#define VERITY_DLQ_HDR_TIMESTAMP "verity.source.timestamp"   /* ms, decimal */
#define VERITY_DLQ_HDR_GROUP "verity.group"
#define VERITY_DLQ_HDR_COUNT "verity.delivery_count"         /* decimal */
#define VERITY_DLQ_HDR_ERROR "verity.error"                  /* last nack / term text */

enum verity_group_mode {
    VERITY_GROUP_ORDERED = 0,       /* one member per partition, order kept */
    VERITY_GROUP_SHARED = 1,        /* any member, any message */
    VERITY_GROUP_KAFKA = 2,         /* a Kafka classic group: list and describe only */
};

/* "ordered" | "shared". Returns 0 or VERITY_EINVAL. */
int verity_group_mode_parse(const char *s, enum verity_group_mode *out) VERITY_WUR;
const char *verity_group_mode_name(enum verity_group_mode m); /* never NULL */

/* True for 1..VERITY_GROUP_NAME_MAX bytes of [A-Za-z0-9._-], not "." or "..",
 * not starting with "__". */
bool verity_group_name_ok(const char *name);

/* ---- administration ------------------------------------------------------- */

struct verity_group_admin;

/* Zero / NULL means "the broker's default" in every field. */
struct verity_group_config {
    enum verity_group_mode mode;
    const char *const *topics;      /* n_topics existing topics (1..16); borrowed */
    size_t n_topics;
    int64_t lease_ms;               /* ack deadline after a delivery (30000) */
    int64_t session_ms;             /* member timeout unless the member says (30000) */
    uint32_t max_deliveries;        /* then dead-letter (5; at most 1000) */
    uint32_t n_backoff;             /* 0: the default schedule (1 s, 5 s, 30 s) */
    int64_t backoff_ms[VERITY_GROUP_BACKOFF_MAX]; /* delay before the n-th redelivery;
                                       n_backoff == 1 && backoff_ms[0] == 0: none */
    const char *dlq_topic;          /* NULL: "<first topic>.dlq" (created on demand) */
    uint32_t pending_max;           /* deliveries tracked at once */
};

enum verity_group_start {
    VERITY_GROUP_START_EARLIEST = 0, /* first offset still stored */
    VERITY_GROUP_START_LATEST = 1,   /* the high watermark: only new messages */
    VERITY_GROUP_START_OFFSET = 2,   /* every partition at `arg` (clamped to what is stored) */
    VERITY_GROUP_START_TIME = 3,     /* first batch with max_timestamp >= arg (ms since epoch) */
};

/* A partition's position in the group (create, reset). */
struct verity_group_offset {
    char *topic;
    uint32_t partition;
    uint64_t offset;
};
void verity_group_offsets_free(struct verity_group_offset *o, size_t n); /* NULL: no-op */

struct verity_group_member {
    uint64_t member_id;
    char *name;
    int64_t session_ms;
    int64_t last_seen_ms;           /* broker wall clock, ms since the epoch */
    uint32_t leased;                /* messages it holds */
    size_t n_assigned;              /* ordered mode: partitions it owns */
    struct verity_group_offset *assigned; /* offset field unused (0) */
};

struct verity_group_partition {
    char *topic;
    uint32_t partition;
    uint64_t ack_floor;             /* every offset below is done */
    uint64_t read_cursor;           /* next offset never delivered */
    uint64_t high_watermark;
    uint64_t start_offset;          /* first offset still stored */
    uint64_t unacked;               /* lag: offsets in [ack_floor, hwm) not done */
    uint32_t leased;
    uint32_t waiting;               /* returned, waiting for redelivery */
    int64_t oldest_unacked_age_ms;  /* 0: none */
    uint64_t owner;                 /* ordered mode: owning member (0: none) */
    int error;                      /* partition unavailable (0: fine) */
};

/* list fills the summary fields only (members, partitions empty);
 * describe fills everything. */
struct verity_group_info {
    char *name;
    uint32_t group_id;              /* describe only */
    enum verity_group_mode mode;
    size_t n_topics;
    char **topics;
    char *dlq_topic;                /* describe only */
    int64_t lease_ms, session_ms;   /* describe only */
    uint32_t max_deliveries;        /* describe only */
    uint32_t n_backoff;             /* describe only */
    int64_t backoff_ms[VERITY_GROUP_BACKOFF_MAX];
    uint32_t pending_max;           /* describe only */
    uint32_t generation;
    uint32_t member_count;
    uint64_t unacked;
    uint32_t leased;
    uint32_t waiting;               /* describe only */
    uint32_t tracked;               /* describe only: delivered, not yet durably done */
    uint32_t dead_letter_pending;   /* describe only */
    uint64_t dead_lettered;
    uint64_t redeliveries;          /* describe only: since the broker started */
    size_t n_members;
    struct verity_group_member *members;
    size_t n_partitions;
    struct verity_group_partition *partitions;
};
void verity_group_info_free(struct verity_group_info *g, size_t n); /* NULL: no-op */

struct verity_group_pending_entry {
    char *topic;
    uint32_t partition;
    uint64_t offset;
    uint64_t member_id;
    uint32_t delivery_count;
    int64_t age_ms;                 /* since its first delivery */
    int64_t lease_deadline_ms;      /* broker wall clock */
};
void verity_group_pending_free(struct verity_group_pending_entry *e, size_t n); /* NULL: no-op */

/* Starts the I/O thread, which connects in the background; cfg may be NULL.
 * Returns 0, VERITY_EINVAL (bad broker address) or -errno. */
int verity_group_admin_new(const struct verity_conn_config *cfg, struct verity_group_admin **out)
    VERITY_WUR;
/* As verity_client_connect. */
int verity_group_admin_connect(struct verity_group_admin *a, int timeout_ms) VERITY_WUR;
/* Fails what is pending with VERITY_ECLOSED, stops the thread, frees a. NULL: no-op. */
void verity_group_admin_free(struct verity_group_admin *a);

/*
 * The synchronous admin calls below return 0 or the broker's error
 * (VERITY_ENOTFOUND unknown group or topic, VERITY_EEXIST, VERITY_EINVAL,
 * VERITY_EOFFSET, VERITY_ELIMIT, ...) or a connection error; then
 * verity_last_error_message() has the broker's explanation. Reads are resent
 * after a dropped connection; create, delete and reset are not (the broker
 * may have run them) and fail with the connection error instead.
 */

/* Creates group `name` starting at (start, arg). *start_out (may be NULL) gets
 * the resolved start offsets, one per partition (verity_group_offsets_free). */
int verity_group_create(struct verity_group_admin *a, const char *name,
                        const struct verity_group_config *cfg, enum verity_group_start start,
                        int64_t arg, struct verity_group_offset **start_out, size_t *n_start_out)
    VERITY_WUR;
int verity_group_delete(struct verity_group_admin *a, const char *name) VERITY_WUR;
/* Every group: *out (verity_group_info_free(*out, *n_out)). */
int verity_group_list(struct verity_group_admin *a, struct verity_group_info **out, size_t *n_out)
    VERITY_WUR;
/* One group with members and partitions: verity_group_info_free(*out, 1). */
int verity_group_describe(struct verity_group_admin *a, const char *name,
                          struct verity_group_info **out) VERITY_WUR;
/* The Kafka classic group `name` (the Kafka listener's own namespace): mode
 * VERITY_GROUP_KAFKA; each partition's ack_floor and read_cursor are the
 * committed offset, unacked is the lag to the high watermark; members carry
 * the Kafka member id as their name. VERITY_ENOTFOUND when no Kafka group of
 * that name exists (or the Kafka listener is off). */
int verity_group_describe_kafka(struct verity_group_admin *a, const char *name,
                                struct verity_group_info **out) VERITY_WUR;
/* Leased messages of member_id (0: every member), oldest first, at most max
 * (0: 1000), delivered at least min_age_ms ago. *total_out (may be NULL) gets
 * how many match before max and the age filter. */
int verity_group_pending(struct verity_group_admin *a, const char *name, uint64_t member_id,
                         uint32_t max, int64_t min_age_ms,
                         struct verity_group_pending_entry **out, size_t *n_out,
                         uint64_t *total_out) VERITY_WUR;
/* Moves every partition of the group to (start, arg) and drops every lease;
 * offsets (n_offsets, may be 0) override single partitions with
 * VERITY_GROUP_START_OFFSET. *out (may be NULL) gets the new positions. */
int verity_group_reset(struct verity_group_admin *a, const char *name,
                       enum verity_group_start start, int64_t arg,
                       const struct verity_group_offset *offsets, size_t n_offsets,
                       struct verity_group_offset **out, size_t *n_out) VERITY_WUR;

/* ---- the group consumer (a member) ----------------------------------------- */

struct verity_group_consumer;

/* What an entry of result_cb reports. */
enum verity_group_op {
    VERITY_GROUP_OP_ACK = 1,
    VERITY_GROUP_OP_NACK = 2,
    VERITY_GROUP_OP_EXTEND = 3,
    VERITY_GROUP_OP_TERM = 4,
};

/* count messages of one partition, first_offset .. first_offset+count-1,
 * all with the same outcome. Valid during the callback. */
struct verity_group_result {
    enum verity_group_op op;
    const char *topic;
    uint32_t partition;
    uint64_t first_offset;
    uint32_t count;
    bool dead_lettered;             /* NACK: it had max_deliveries and went to the DLQ */
    int64_t lease_deadline_ms;      /* EXTEND: the new deadline (broker wall clock) */
};
/* err 0: done (an ack is durable). Runs on the I/O thread. */
typedef void (*verity_group_result_cb)(void *opaque, int err, const struct verity_group_result *r);

/* Membership changes (I/O thread): joined (or joined again as a new member
 * after VERITY_EMEMBER; the call for a join runs before verity_group_connect
 * returns) and, in ordered mode, a new assignment. assigned has n entries
 * (offset fields unused), valid during the callback. */
typedef void (*verity_group_member_cb)(void *opaque, uint64_t member_id, uint32_t generation,
                                       const struct verity_group_offset *assigned, size_t n);

struct verity_group_consumer_config {
    struct verity_conn_config conn;
    const char *group;              /* required; copied */
    const char *const *topics;      /* topics the member expects (each must be the
                                       group's; may be empty); copied */
    size_t n_topics;
    const char *member_name;        /* shown by describe; NULL: conn.client_id or
                                       "libverity"; copied */
    int64_t session_ms;             /* 0: the group's */
    int heartbeat_ms;               /* 0: a third of the session */
    uint32_t fetch_max;             /* messages per fetch (1000) */
    uint32_t fetch_max_bytes;       /* payload budget per fetch (0: broker's) */
    uint32_t fetch_max_wait_ms;     /* long poll (500) */
    uint32_t fetch_inflight;        /* fetches out at once (1) */
    uint32_t queue_max;             /* no fetch is sent while this many messages
                                       wait to be polled (2 * fetch_max); 0: fetch
                                       only while a poll waits on an empty queue */
    int ack_linger_ms;              /* 0: queued acks go with the next fetch,
                                       or at once; > 0: they are gathered this
                                       long into one Ack request (fewer requests
                                       and group-log records at high rates) */
    bool auto_ack;                  /* every message a poll returns and the
                                       application did not ack, nack or term is
                                       acked at the next poll, commit or free */
    verity_group_result_cb result_cb; /* may be NULL */
    verity_group_member_cb member_cb;  /* may be NULL */
    void *opaque;                   /* passed to the callbacks */
};

void verity_group_consumer_config_default(struct verity_group_consumer_config *cfg);

/* One delivered message. msg.topic is interned (see Ownership). */
struct verity_group_message {
    struct verity_message msg;
    uint32_t delivery_count;        /* 1 on first delivery */
    int64_t lease_deadline_ms;      /* broker wall clock, ms since the epoch */
};

/* Starts the member's I/O thread, which connects and joins in the background.
 * Returns 0, VERITY_EINVAL (bad config or broker address), -errno. */
int verity_group_consumer_new(const struct verity_group_consumer_config *cfg,
                              struct verity_group_consumer **out) VERITY_WUR;

/* Waits until the member has joined, at most timeout_ms (-1: no limit).
 * Returns 0; the error that stops it (VERITY_ENOTFOUND: no such group,
 * VERITY_EINVAL: a topic that is not the group's); the error of a connection
 * attempt that failed during the wait (-ECONNREFUSED, ...); or VERITY_ETIMEOUT. */
int verity_group_connect(struct verity_group_consumer *g, int timeout_ms) VERITY_WUR;

/* The member id (0 before the join) and the last generation seen. */
void verity_group_member_id(struct verity_group_consumer *g, uint64_t *member_id,
                            uint32_t *generation);

/*
 * Waits up to timeout_ms (-1: forever, 0: not at all) for messages and returns
 * what has arrived: *msgs_out points to *n_out messages (0 on timeout), in
 * offset order per partition. With auto_ack, first acks what the previous
 * poll returned. Returns 0, or the error that stopped the member (the group
 * was deleted: VERITY_ENOTFOUND; ...), once; connection trouble is retried
 * in the background and shows only as empty polls. Polling thread only.
 */
int verity_group_poll(struct verity_group_consumer *g, int timeout_ms,
                      const struct verity_group_message **msgs_out, size_t *n_out) VERITY_WUR;

/* Acknowledges one message. Queued; see result_cb and verity_group_commit.
 * Returns 0, VERITY_EINVAL (a topic this member never saw), VERITY_ECLOSED,
 * or the error that stopped the member (VERITY_ENOTFOUND: group deleted).
 * The same holds for the calls below. */
int verity_group_ack(struct verity_group_consumer *g, const char *topic, uint32_t partition,
                     uint64_t offset) VERITY_WUR;

/* Acknowledges n messages (for example all that a poll returned). */
int verity_group_ack_many(struct verity_group_consumer *g, const struct verity_group_message *m,
                          size_t n) VERITY_WUR;

/* Ordered mode: acknowledges every message of the partition up to and
 * including offset that this member holds or held; sent as one cumulative
 * ack. VERITY_EINVAL in shared mode. */
int verity_group_ack_upto(struct verity_group_consumer *g, const char *topic, uint32_t partition,
                          uint64_t offset) VERITY_WUR;

/* Gives a message back: deliverable again after delay_ms (-1: the group's
 * backoff schedule; 0: at once). error (may be NULL) is kept for the
 * dead-letter headers. After max_deliveries it goes to the dead-letter
 * topic instead (result_cb: dead_lettered). Sent at once. */
int verity_group_nack(struct verity_group_consumer *g, const char *topic, uint32_t partition,
                      uint64_t offset, int64_t delay_ms, const char *error) VERITY_WUR;

/* Renews the lease of one message to now + the group's lease. Sent at once. */
int verity_group_extend(struct verity_group_consumer *g, const char *topic, uint32_t partition,
                        uint64_t offset) VERITY_WUR;

/* Sends the message to the dead-letter topic now (a terminal failure). */
int verity_group_term(struct verity_group_consumer *g, const char *topic, uint32_t partition,
                      uint64_t offset, const char *error) VERITY_WUR;

/* Sends every queued ack (and, with auto_ack, the acks of the last poll) and
 * waits until every ack, nack, extend and term queued before the call was
 * answered, at most timeout_ms (-1: no limit). Returns 0 when all succeeded,
 * else the first error among them (their details went to result_cb), or
 * VERITY_ETIMEOUT. */
int verity_group_commit(struct verity_group_consumer *g, int timeout_ms) VERITY_WUR;

/* What a handler returns for one message (verity_group_consume). */
enum verity_group_action {
    VERITY_GROUP_ACTION_ACK = 0,
    VERITY_GROUP_ACTION_NACK = 1,   /* backoff schedule */
    VERITY_GROUP_ACTION_TERM = 2,
    VERITY_GROUP_ACTION_NONE = 3,   /* the handler acks it later itself */
};
typedef enum verity_group_action (*verity_group_handler)(void *opaque,
                                                         const struct verity_group_message *m);

/* Callback style: one verity_group_poll, then handler(opaque, m) for every
 * message on the calling thread, in order, acting on its answer. Returns
 * the number of messages handled (>= 0) or poll's error. */
int verity_group_consume(struct verity_group_consumer *g, int timeout_ms,
                         verity_group_handler handler, void *opaque) VERITY_WUR;

/* Sends the queued acks, waits for them (at most timeout_ms), leaves the
 * group (its leases return at once), stops the I/O thread and frees g.
 * Messages still held and not acked are redelivered to other members. NULL
 * is a no-op. Not from a callback. */
void verity_group_consumer_free(struct verity_group_consumer *g, int timeout_ms);

#endif
