/*
 * group: the consumer-group core, a pure state machine (no I/O, no clock, no
 * randomness). One `struct group_state` holds every group of a broker. Time
 * comes in as an argument (`now_ms`, milliseconds; a value below one already
 * seen is treated as the largest one seen, so the machine's clock never runs
 * backwards). Output goes to two outboxes the caller (the "shell") drains:
 *
 *   records  group-log records to append to the internal group log, in order
 *            (group_next_record). Each record has a sequence number (seq),
 *            1, 2, 3, ... in emission order.
 *   effects  things the shell must do: dead-letter a message, tell a member
 *            it was removed (group_next_effect).
 *
 * Durable state changes only through group_apply(). A command validates its
 * input against the state; if valid it changes volatile state (leases) and
 * emits records, which the machine applies to itself through the same
 * group_apply() path that replay uses. Replaying the records therefore
 * rebuilds the durable state exactly. docs/GROUPS.md describes the model,
 * the record format and the restart bound; broker/group/group_codec.c owns the
 * byte format.
 *
 * Tickets. Every command that changes something returns a ticket: the seq of
 * the record that must be durable in the group log before the command's
 * reply may be sent (0 = reply at once). Acks, terms and deliveries are
 * batched: they go into the group's open "progress" record, whose seq is
 * reserved when its first item arrives and which is emitted by group_flush()
 * (or by the command itself once the batch holds GROUP_BATCH_ITEMS_MAX items
 * or GROUP_BATCH_BYTES_MAX bytes). Records are always emitted in seq order, so
 * "records through seq S are durable" is a prefix of the group log.
 *
 * Lifecycle:
 *
 *     group_state_new ──► REPLAY ──group_recover(now)──► LIVE ──► group_state_free
 *                         group_apply(record)*           commands, queries
 *
 * A broker with an empty group log calls group_recover right after
 * group_state_new. Commands return VERITY_EINVAL in REPLAY; group_apply
 * returns VERITY_EINVAL in LIVE (the live machine applies its own records).
 *
 * Errors. Every command returns 0 or a negative code (include/verity/errors.h)
 * and leaves the state unchanged on error: VERITY_ENOTFOUND (unknown group),
 * VERITY_EMEMBER (unknown or removed member), VERITY_ELEASE (the member does
 * not hold the message's lease), VERITY_EOFFSET (offset never delivered),
 * VERITY_EINVAL (bad argument, wrong topic, wrong mode), VERITY_ELIMIT (a limit
 * below), VERITY_EEXIST (group name taken), -ENOMEM.
 *
 * Threads: one owner thread calls everything; nothing is thread-safe.
 * Pointers returned by queries and by group_next_record / group_next_effect
 * are borrowed and stay valid until the next call that is not a query.
 */
#ifndef VERITY_GROUP_H
#define VERITY_GROUP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "verity/limits.h"

#define GROUP_WUR __attribute__((warn_unused_result))

/* ---- limits (runtime configuration may lower the per-group ones) -------- */
#define GROUP_NAME_MAX VERITY_GROUP_NAME_MAX        /* bytes in a group name */
#define GROUP_MEMBER_NAME_MAX VERITY_MEMBER_NAME_MAX /* bytes in a member's client name */
#define GROUP_TOPICS_MAX VERITY_GROUP_TOPICS_MAX    /* topics per group */
#define GROUP_PARTITIONS_MAX 16384u         /* partitions per group, all topics */
#define GROUP_MEMBERS_MAX 1024u             /* members per group */
#define GROUP_GROUPS_MAX 4096u              /* groups per state */
#define GROUP_BACKOFF_STEPS_MAX VERITY_GROUP_BACKOFF_MAX /* redelivery backoff schedule length */
#define GROUP_ERROR_MAX VERITY_GROUP_ERROR_MAX      /* bytes of nack / term error text kept */
#define GROUP_DELIVERIES_HARD 1000u         /* ceiling for max_deliveries */
#define GROUP_DELAY_MS_MAX (7LL * 86400000) /* longest nack delay, backoff step, lease */
#define GROUP_OFFSET_LIMIT (1ull << 48)     /* offsets and high watermarks stay below */
#define GROUP_BATCH_ITEMS_MAX 65536u        /* progress items before a forced emit */
#define GROUP_BATCH_BYTES_MAX (1u << 20)    /* progress bytes before a forced emit */
#define GROUP_RECORD_BYTES_MAX (4u << 20)   /* no record is longer */
/* One Ack request (client and broker share VERITY_ACK_OFFSETS_MAX) must fit
 * the machine's per-command item limit. */
_Static_assert(VERITY_ACK_OFFSETS_MAX <= GROUP_BATCH_ITEMS_MAX,
               "an Ack the client may send must be one command of the state machine");

#define GROUP_LEASE_MS_DEFAULT 30000
#define GROUP_SESSION_MS_DEFAULT 30000
#define GROUP_MAX_DELIVERIES_DEFAULT 5u
#define GROUP_HORIZON_AHEAD 1024u           /* delivery horizon: at most this far past the log
                                               end and past the read cursor */

_Static_assert(GROUP_PARTITIONS_MAX >= VERITY_PARTITIONS_MAX, "one full topic fits a group");
_Static_assert(GROUP_PARTITIONS_MAX < (1u << 16), "partition index shares a u64 key with the offset");
_Static_assert(GROUP_MEMBERS_MAX < (1u << 16), "member slot is the low 16 bits of a member id");
_Static_assert(VERITY_PENDING_PER_GROUP_MAX < (1u << 31), "entry indexes are u32");
_Static_assert(GROUP_BATCH_BYTES_MAX + GROUP_ERROR_MAX + 64 < GROUP_RECORD_BYTES_MAX,
               "a forced emit keeps a progress record under the record limit");
_Static_assert(GROUP_RECORD_BYTES_MAX < VERITY_BATCH_BYTES_MAX, "a record fits a batch");

enum group_mode {
    GROUP_ORDERED = 0, /* each partition owned by one member; order kept per partition */
    GROUP_SHARED = 1,  /* any member may take any message */
};

struct group_topic {
    char name[VERITY_TOPIC_NAME_MAX + 1];
    uint32_t partitions; /* 1..VERITY_PARTITIONS_MAX */
};

/* A group's configuration. group_config_default fills the defaults; name,
 * topics and n_topics must then be set. */
struct group_config {
    char name[GROUP_NAME_MAX + 1];
    enum group_mode mode;
    uint32_t n_topics;                         /* 1..GROUP_TOPICS_MAX */
    struct group_topic topics[GROUP_TOPICS_MAX];
    char dlq_topic[VERITY_TOPIC_NAME_MAX + 1]; /* "" = "<first topic>.dlq" */
    int64_t lease_ms;                          /* ack deadline after a delivery (30 s) */
    int64_t session_ms;                        /* member timeout unless join says (30 s) */
    uint32_t max_deliveries;                   /* then dead-letter (5), 1..GROUP_DELIVERIES_HARD */
    uint32_t n_backoff;                        /* 0..GROUP_BACKOFF_STEPS_MAX */
    int64_t backoff_ms[GROUP_BACKOFF_STEPS_MAX]; /* delay before the n-th redelivery */
    uint32_t pending_max;                      /* tracked deliveries, <= VERITY_PENDING_PER_GROUP_MAX */
};

void group_config_default(struct group_config *cfg);

/* A message of a group: pidx is the group's flat partition index (topics in
 * config order, partitions within each), see group_part_index. */
struct group_ref {
    uint32_t pidx;
    uint64_t offset;
};

/* One message handed to a member by group_fetch. */
struct group_delivery {
    uint32_t pidx;
    uint32_t topic;           /* index into the group's topics */
    uint32_t partition;       /* partition number within that topic */
    uint64_t offset;
    uint32_t delivery_count;  /* 1 on first delivery */
    int64_t lease_deadline_ms;
};

enum group_effect_type {
    GROUP_EFFECT_DEAD_LETTER = 1,    /* append the message to dlq_topic, then group_dead_lettered */
    GROUP_EFFECT_MEMBER_REMOVED = 2, /* member left or timed out; tell its connection */
};

struct group_effect {
    enum group_effect_type type;
    const char *group;       /* borrowed, see the header comment */
    const char *topic;       /* source topic (dead letter) */
    const char *dlq_topic;   /* where to append (dead letter) */
    uint32_t pidx;
    uint32_t partition;      /* partition within topic */
    uint64_t offset;
    uint32_t delivery_count;
    const char *error;       /* last error text from a nack or term; "" if none */
    uint64_t member_id;      /* removed member (member removed) */
    bool timed_out;          /* member removed by session timeout */
    uint64_t seq;            /* dead letter: seq of the record that logs the decision
                                (durable/committed from then on); 0 = logged already */
};

struct group_state;

/* ---- lifecycle ---------------------------------------------------------- */

/* New empty state in REPLAY. pending_max caps every group's pending_max
 * (0 = VERITY_PENDING_PER_GROUP_MAX). *out is owned by the caller. */
int group_state_new(uint32_t pending_max, struct group_state **out) GROUP_WUR;
void group_state_free(struct group_state *st); /* NULL is a no-op */

/* Applies one group-log record in REPLAY. Returns 0, VERITY_ECORRUPT (bad
 * bytes, or a record that does not follow the state: seq gap, unknown group,
 * offsets out of place), VERITY_EVERSION, VERITY_ELIMIT, -ENOMEM; the state is
 * unchanged on error. rec is borrowed for the call. */
int group_apply(struct group_state *st, const uint8_t *rec, size_t len) GROUP_WUR;

/* Ends REPLAY: every message delivered but not acknowledged becomes
 * available again at once (its next delivery raises its count); messages
 * whose dead-letter was decided but not completed get their dead-letter
 * effect again; every member gets a fresh session (last heartbeat = now). */
int group_recover(struct group_state *st, int64_t now_ms) GROUP_WUR;

/* Next record to append to the group log; false when none is left. The
 * bytes stay valid until the next non-query call. */
bool group_next_record(struct group_state *st, const uint8_t **rec, size_t *len, uint64_t *seq);

/* Next effect; false when none is left. Strings as in group_next_record. */
bool group_next_effect(struct group_state *st, struct group_effect *out);

/* Emits every open progress record (acks, deliveries, dead-letter steps).
 * Call on a short timer (a few ms) and when group_batch_items() is large. */
void group_flush(struct group_state *st, int64_t now_ms);

/* Items in open progress records, all groups. */
size_t group_batch_items(const struct group_state *st);

/* Seq of the last record emitted (0 if none). */
uint64_t group_last_seq(const struct group_state *st);

/* Earliest time at which group_tick or group_fetch would find something
 * new to do: a lease expiry or session timeout (may be in the past: call
 * group_tick), or a waiting message whose backoff ends later than the
 * machine's current time (wake long-polling fetches then); INT64_MAX if
 * none. Shells use it to arm their timer. */
int64_t group_next_deadline(const struct group_state *st);

/* ---- administration ----------------------------------------------------- */

/* Creates a group. start has one offset per flat partition (the caller
 * resolves earliest / latest / offset / time to offsets). Emits a CREATE
 * record; *ticket gets its seq. */
int group_create(struct group_state *st, const struct group_config *cfg, const uint64_t *start,
                 size_t n_start, int64_t now_ms, uint64_t *ticket) GROUP_WUR;

/* Deletes a group (its pending deliveries are dropped). DELETE record. */
int group_delete(struct group_state *st, const char *group, int64_t now_ms,
                 uint64_t *ticket) GROUP_WUR;

/* Moves every partition's ack floor and read cursor to offsets[pidx]; drops
 * all leases and tracked deliveries (members keep their membership). */
int group_reset(struct group_state *st, const char *group, const uint64_t *offsets, size_t n,
                int64_t now_ms, uint64_t *ticket) GROUP_WUR;

/* ---- membership ----------------------------------------------------------- */

/* Joins a member. topics names the topics the client expects to consume
 * (each must be one of the group's; the member works all of them).
 * session_ms 0 = the group's default. JOIN record; rebalances in ordered
 * mode. *member_id is the member's id for every later call. */
int group_join(struct group_state *st, const char *group, const char *member_name,
               const char *const *topics, size_t n_topics, int64_t session_ms, int64_t now_ms,
               uint64_t *member_id, uint64_t *ticket) GROUP_WUR;

/* Renews the member's session. Also done by fetch, ack, nack, extend, term. */
int group_heartbeat(struct group_state *st, const char *group, uint64_t member_id,
                    int64_t now_ms) GROUP_WUR;

/* Removes the member; its leases return to the group at once. LEAVE record. */
int group_leave(struct group_state *st, const char *group, uint64_t member_id, int64_t now_ms,
                uint64_t *ticket) GROUP_WUR;

/* Removes members whose session ran out, returns expired leases (with
 * backoff, or to the dead-letter topic after max_deliveries). */
void group_tick(struct group_state *st, int64_t now_ms);

/* ---- delivery ------------------------------------------------------------- */

/*
 * The delivery horizon of a partition: offsets below it may have been
 * delivered once without a delivery record (see docs/GROUPS.md
 * "Delivery horizon"). The shell calls this when partition pidx's log end
 * moved to end_offset (appended, not necessarily committed). When less than
 * half of GROUP_HORIZON_AHEAD is left between end_offset and the horizon,
 * the horizon rises to min(end_offset + GROUP_HORIZON_AHEAD, read cursor +
 * GROUP_HORIZON_AHEAD) with the group's next progress record, so it is
 * durable before the offsets it covers are committed. A first delivery
 * below a horizon that is already durable may be answered without waiting
 * for its own record (its ticket is the horizon's record); after a restart,
 * first deliveries in [logged read cursor, horizon) show a count of at
 * least 2. A no-op for groups with max_deliveries 1 (a message that was
 * never delivered must not be dead-lettered). Returns 0, VERITY_ENOTFOUND,
 * VERITY_EINVAL (pidx), VERITY_EOFFSET, -ENOMEM.
 */
int group_horizon(struct group_state *st, const char *group, uint32_t pidx, uint64_t end_offset,
                  int64_t now_ms) GROUP_WUR;

/*
 * Leases up to max messages to the member. hwm[pidx] is each partition's end
 * offset (high watermark), n_hwm must equal the group's partition count.
 * Messages available for redelivery come first, then new offsets from each
 * partition's read cursor up to its hwm. Fills out[0..*n_out); the caller
 * reads those offsets from the partition logs. *ticket: send the messages
 * once it is durable (so that a restart never shows a lower delivery count);
 * see docs/GROUPS.md. VERITY_ELIMIT when nothing could be delivered because
 * pending_max deliveries are tracked.
 */
int group_fetch(struct group_state *st, const char *group, uint64_t member_id, size_t max,
                const uint64_t *hwm, size_t n_hwm, int64_t now_ms, struct group_delivery *out,
                size_t *n_out, uint64_t *ticket) GROUP_WUR;

/*
 * Acknowledgement, all or none: q->refs one by one and, in ordered mode,
 * q->upto[i] "everything of partition pidx up to and including offset".
 * Every item is checked before any is applied, so a refused request changes
 * nothing. Who may acknowledge a message:
 *   - the member holding its lease;
 *   - its last holder while it waits for redelivery after the lease ran out
 *     or was given back, only while the message did not move: in ordered
 *     mode the member must still own the partition;
 *   - anyone, when it is already done (acknowledged or dead-lettered): that
 *     ack did not count, and res says so (ref_already, already spans).
 * Returns 0 or the first refusal: VERITY_ELEASE (held by, or last held by,
 * another member, or the partition moved), VERITY_EOFFSET (never
 * delivered), VERITY_EINVAL (bad index, upto in shared mode), and
 * res->failed is the index of the refused item (refs first, then upto).
 */
struct group_ack_req {
    const struct group_ref *refs;   /* n_refs messages */
    size_t n_refs;
    const struct group_ref *upto;   /* n_upto (pidx, last offset) pairs, ordered mode */
    const uint64_t *upto_from;      /* NULL, or per upto the first offset whose
                                       already-done state res should report */
    size_t n_upto;
};

/* Offsets [lo, hi) of partition pidx that were already done before the ack. */
struct group_span {
    uint32_t pidx;
    uint64_t lo, hi;
};

struct group_ack_res {
    uint8_t *ref_already;      /* caller's n_refs flags or NULL: 1 = was done before */
    struct group_span *already;/* caller's array or NULL: upto offsets done before */
    size_t cap_already;        /* entries `already` can take */
    size_t n_already;          /* out: entries filled */
    bool already_cut;          /* out: more spans than cap_already (not all named) */
    size_t failed;             /* out, on refusal: index of the item refused */
};

int group_ack_all(struct group_state *st, const char *group, uint64_t member_id,
                  const struct group_ack_req *q, int64_t now_ms, struct group_ack_res *res,
                  uint64_t *ticket) GROUP_WUR;

/* group_ack_all with refs only, no result details. */
int group_ack(struct group_state *st, const char *group, uint64_t member_id,
              const struct group_ref *refs, size_t n, int64_t now_ms, uint64_t *ticket) GROUP_WUR;

/* group_ack_all with one upto only. */
int group_ack_upto(struct group_state *st, const char *group, uint64_t member_id, uint32_t pidx,
                   uint64_t offset, int64_t now_ms, uint64_t *ticket) GROUP_WUR;

/* Returns a leased message. delay_ms < 0: the backoff schedule decides;
 * otherwise it becomes available after delay_ms (0 = at once). error (may be
 * NULL) is kept for the dead-letter effect, cut to GROUP_ERROR_MAX bytes.
 * Dead-letters instead once the message had max_deliveries deliveries. */
int group_nack(struct group_state *st, const char *group, uint64_t member_id,
               struct group_ref ref, int64_t delay_ms, const char *error, int64_t now_ms,
               uint64_t *ticket) GROUP_WUR;

/* Renews the leases of n messages held by the member to now + lease_ms; all
 * or none. *deadline_ms gets the new deadline. */
int group_extend(struct group_state *st, const char *group, uint64_t member_id,
                 const struct group_ref *refs, size_t n, int64_t now_ms,
                 int64_t *deadline_ms) GROUP_WUR;

/* Terminal ack: sends the message to the dead-letter topic at once. */
int group_term(struct group_state *st, const char *group, uint64_t member_id,
               struct group_ref ref, const char *error, int64_t now_ms, uint64_t *ticket) GROUP_WUR;

/* The shell vouches that offset, the partition's next never-delivered
 * offset (its read cursor), holds a control record (checkpoint, recovery
 * record), not a message: the group passes it as delivered and acknowledged
 * by the broker, so an idle group's lag returns to 0. VERITY_EOFFSET when
 * offset is not the cursor, VERITY_ELIMIT at pending_max. */
int group_skip_control(struct group_state *st, const char *group, uint32_t pidx, uint64_t offset,
                       int64_t now_ms, uint64_t *ticket) GROUP_WUR;

/* The shell reports that a dead-letter effect's append is durable. */
int group_dead_lettered(struct group_state *st, const char *group, struct group_ref ref,
                        int64_t now_ms, uint64_t *ticket) GROUP_WUR;

/* ---- queries (no state change) ------------------------------------------- */

/* Visits every message whose dead-letter was decided in a record this state
 * applied and is not completed yet: in REPLAY (a cluster's replica, which
 * applies committed records only) the committed decisions; in LIVE the
 * effects re-emitted by group_recover. A decision made live and not yet in
 * a record is not visited. e is valid during the call (seq 0, member_id 0);
 * fn returns false to stop. */
void group_dead_letters(const struct group_state *st,
                        bool (*fn)(void *arg, const struct group_effect *e), void *arg);

/* Names of every group (borrowed, valid until the next non-query call), in
 * no particular order; *n_out gets the total, at most cap are written. */
void group_list(const struct group_state *st, const char **names, size_t cap, size_t *n_out);

/* Flat partition index of (topic, partition). */
int group_part_index(const struct group_state *st, const char *group, const char *topic,
                     uint32_t partition, uint32_t *pidx) GROUP_WUR;

struct group_info {
    enum group_mode mode;
    uint32_t group_id;
    uint32_t generation;     /* raised by every join and leave */
    uint32_t n_partitions;
    uint32_t n_members;
    uint32_t n_tracked;      /* delivered, not yet durably done (counts against pending_max) */
    uint32_t n_leased;
    uint32_t n_waiting;      /* returned, waiting for redelivery */
    uint32_t n_dead_letter;  /* dead-letter decided, not yet completed */
    uint64_t dead_lettered;  /* messages dead-lettered since create or reset */
    uint32_t pending_max;
    const struct group_config *cfg; /* borrowed */
};
int group_get_info(const struct group_state *st, const char *group, struct group_info *out) GROUP_WUR;

struct group_member_info {
    uint64_t member_id;
    const char *name;          /* borrowed */
    int64_t session_ms;
    int64_t last_seen_ms;
    uint32_t n_leased;
    uint32_t n_partitions;     /* ordered mode: partitions owned */
};
/* Members in id order; *n_out gets the total, at most cap are written. */
int group_members(const struct group_state *st, const char *group, struct group_member_info *out,
                  size_t cap, size_t *n_out) GROUP_WUR;

/* Ordered mode: partitions owned by the member, ascending. */
int group_assignment(const struct group_state *st, const char *group, uint64_t member_id,
                     uint32_t *pidx_out, size_t cap, size_t *n_out) GROUP_WUR;

struct group_pending {
    uint32_t pidx;
    uint64_t offset;
    uint64_t member_id;
    uint32_t delivery_count;
    int64_t first_delivery_ms; /* first delivery since the last restart */
    int64_t lease_deadline_ms;
};
/* Leased messages of one member (member_id 0 = all), oldest first delivery
 * first; *n_out gets the total, at most cap are written. */
int group_pending_list(const struct group_state *st, const char *group, uint64_t member_id,
                       struct group_pending *out, size_t cap, size_t *n_out) GROUP_WUR;

enum group_msg_state {
    GROUP_MSG_NEW = 0,       /* at or above the read cursor: never delivered */
    GROUP_MSG_LEASED = 1,
    GROUP_MSG_WAITING = 2,   /* returned, waiting for redelivery */
    GROUP_MSG_DONE = 3,      /* acknowledged or dead-lettered (maybe not durable yet) */
    GROUP_MSG_DEAD_LETTER = 4, /* dead-letter decided, append not yet reported */
};
struct group_msg_info {
    enum group_msg_state state;
    uint32_t delivery_count;
    uint64_t member_id;        /* holder, or last holder */
    int64_t deadline_ms;       /* lease deadline, or when a waiting message is available */
};
int group_msg(const struct group_state *st, const char *group, struct group_ref ref,
              struct group_msg_info *out) GROUP_WUR;

struct group_lag {
    uint64_t ack_floor;        /* every offset below is done */
    uint64_t read_cursor;      /* next offset never delivered */
    uint64_t unacked;          /* offsets in [ack_floor, hwm) not done */
    uint64_t done_above_floor; /* done offsets above the floor */
    uint32_t ranges;           /* done ranges above the floor (memory used) */
    uint32_t leased;
    uint32_t waiting;
    int64_t oldest_first_delivery_ms; /* of the message at the floor if delivered, else INT64_MIN */
};
/* Lag of one partition against its high watermark. The oldest unacked
 * message is at ack_floor; the shell reads its timestamp for its age. */
int group_get_lag(const struct group_state *st, const char *group, uint32_t pidx, uint64_t hwm,
                  struct group_lag *out) GROUP_WUR;

/* Deterministic encoding of the whole state for comparison: the durable
 * part only (what replay rebuilds), or with volatile fields too (leases,
 * waiting times, open batches). *buf is malloc'd, the caller frees it. */
int group_snapshot(const struct group_state *st, bool with_volatile, uint8_t **buf,
                   size_t *len) GROUP_WUR;

/* Checks every internal invariant; aborts through VERITY_VERIFY on failure.
 * O(state size); for tests and debug builds. */
void group_check(const struct group_state *st);

/* ---- record codec (broker/group/group_codec.c) -------------------------------- */

enum group_rec_type {
    GROUP_REC_CREATE = 1,
    GROUP_REC_DELETE = 2,
    GROUP_REC_JOIN = 3,
    GROUP_REC_LEAVE = 4,
    GROUP_REC_RESET = 5,
    GROUP_REC_PROGRESS = 6,
};

/* Reads a record's header: its length (from the bytes), type, seq and group
 * id, after checking magic, version, length and CRC. 0, VERITY_ECORRUPT or
 * VERITY_EVERSION. For tools that dump a group log. */
int group_record_peek(const uint8_t *rec, size_t len, enum group_rec_type *type, uint64_t *seq,
                      uint32_t *group_id) GROUP_WUR;

#endif
