/*
 * Internals of the group consumer (client/group*.c). Nothing here is public
 * API; include/verity/group.h is.
 *
 *   group_rset.c    sorted sets of offset ranges (pure)
 *   group_track.c   what the member holds per partition and how its acks go
 *                   on the wire: cumulative where exact, ranges otherwise
 *                   (pure: the caller holds the lock)
 *   group_fetch.c   checking a GroupFetch answer's batches against its
 *                   delivery ranges, and decoding the delivered records
 *                   (pure)
 *   group_admin.c   struct verity_group_admin
 *   group_io.c      the group consumer's I/O thread: join, heartbeat,
 *                   fetch, the ack pipeline, answers
 *   group_consumer.c  struct verity_group_consumer, the application's side:
 *                   acks, commit, poll
 *   group_util.c    names, modes, defaults, frees; wire <-> public structs
 *                   for the admin answers
 */
#ifndef VERITY_CLIENT_GROUP_INT_H
#define VERITY_CLIENT_GROUP_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "client/client_int.h"
#include "proto/range.h"
#include "verity/limits.h"
#include "verity/group.h"

/* ---- group_rset.c: a set of u64 offsets as sorted, disjoint, non-adjacent
 * half-open ranges [lo, hi). ---------------------------------------------- */


struct grset {
    struct grange *r;       /* owned */
    uint32_t n;
    uint32_t cap;
    uint64_t count;         /* offsets in the set */
};

void grset_init(struct grset *s);
void grset_deinit(struct grset *s);
void grset_clear(struct grset *s);
/* Adds [lo, hi) (lo < hi), merging with neighbours. 0 or -ENOMEM. */
int grset_add(struct grset *s, uint64_t lo, uint64_t hi) CL_WUR;
/* Removes [lo, hi) where present. 0 or -ENOMEM (a split needs room); the
 * set is unchanged on error. */
int grset_remove(struct grset *s, uint64_t lo, uint64_t hi) CL_WUR;
/* Makes room for `extra` more ranges, so that the next adds and removes
 * that need at most that many cannot fail. 0 or -ENOMEM. */
int grset_reserve(struct grset *s, uint32_t extra) CL_WUR;
bool grset_contains(const struct grset *s, uint64_t off);
/* Smallest offset in the set, UINT64_MAX when empty. */
uint64_t grset_min(const struct grset *s);
/* Index of the first range with hi > off (s->n when none). */
uint32_t grset_find(const struct grset *s, uint64_t off);
/* Invariants (sorted, disjoint, non-adjacent, count); for tests and asserts. */
bool grset_ok(const struct grset *s);

/* ---- group_track.c: per-partition bookkeeping of a member --------------- */

/*
 * For every (topic, partition) the member has seen:
 *   held    delivered to this member and not yet acked, nacked or termed by
 *           the application (a lease the broker may still think we hold)
 *   acked   acked by the application, not yet sent
 *   nacked  nacked by this member and not delivered to it again since: the
 *           broker still names this member as the last holder, so a
 *           cumulative ack across it would acknowledge a message the
 *           application gave back
 *
 * gtrack_take turns `acked` into wire items. In ordered mode the acked
 * offsets below the smallest held or nacked offset go as one cumulative ack
 * ("upto") per partition while the member's knowledge of the partition is
 * whole (`whole`): the broker's upto acknowledges every not-done offset whose
 * last holder is this member, and each of those was delivered to it while
 * it tracked the partition, so it is still held, nacked or acked here.
 * Knowledge stops being whole when the partition moves away (its held and
 * nacked sets are dropped, but the broker keeps this member as last holder
 * of what it returned) or when a delivery could not be tracked; from then
 * on, for this member id, the partition's acks go as exact ranges. A new
 * member id (gtrack_reset) starts whole: no message names it yet. The other
 * acked offsets go as ranges.
 */
struct gtrack_part {
    uint32_t topic;         /* index into the member's topic table */
    uint32_t partition;
    struct grset held;
    struct grset acked;
    struct grset nacked;
    bool assigned;          /* ordered mode: in the last assignment */
    bool whole;             /* every delivery to this member id is tracked here */
};

struct gtrack {
    bool ordered;
    bool lost;                   /* a delivery of an unknown partition was not tracked */
    struct gtrack_part **parts;  /* open addressing by (topic, partition) */
    uint32_t cap;                /* power of two */
    uint32_t n;
    uint64_t held_total;
    uint64_t acked_total;
};

/* One wire item of an ack: ranges are all-or-none at the broker; an upto
 * acknowledges [.., offset] of the partition. `lo` is the first offset this
 * member acked in the item (what result_cb reports starts there). */
struct gack_item {
    uint32_t topic;
    uint32_t partition;
    bool upto;
    uint64_t lo;            /* first offset covered (reported) */
    uint64_t hi;            /* exclusive end; an upto acks through hi - 1 */
    struct grange *report;  /* upto: the acked ranges it stands for (owned) */
    uint32_t n_report;
};

void gtrack_init(struct gtrack *t, bool ordered);
void gtrack_deinit(struct gtrack *t);
/* The partition's entry, created when create is true (NULL: not found or
 * out of memory). */
struct gtrack_part *gtrack_part(struct gtrack *t, uint32_t topic, uint32_t partition, bool create);
/* A fetch delivered [lo, hi) of the partition to this member. */
int gtrack_delivered(struct gtrack *t, struct gtrack_part *p, uint64_t lo, uint64_t hi) CL_WUR;
/* The application acked [lo, hi). Offsets not held are acked anyway (the
 * broker decides); they never join a cumulative ack. */
int gtrack_ack(struct gtrack *t, struct gtrack_part *p, uint64_t lo, uint64_t hi) CL_WUR;
/* Ordered mode: ack every held offset <= offset. Returns 0 or -ENOMEM. */
int gtrack_ack_upto(struct gtrack *t, struct gtrack_part *p, uint64_t offset) CL_WUR;
/* The application nacked (nack = true) or termed one offset: no longer held. */
int gtrack_release(struct gtrack *t, struct gtrack_part *p, uint64_t off, bool nack) CL_WUR;
/* True when the partition holds off (delivered, not acked/nacked/termed). */
bool gtrack_holds(const struct gtrack_part *p, uint64_t off);
/* Forgets everything: the member is gone (acked offsets are dropped too; the
 * caller reports them first). */
void gtrack_reset(struct gtrack *t);
/* Ordered mode: forgets held and nacked offsets of partitions not marked
 * assigned (the broker returned those leases when the partition moved);
 * their acks go as ranges from then on. */
void gtrack_drop_unassigned(struct gtrack *t);
/* A delivery of p could not be tracked (or was dropped as stale): p's acks
 * go as ranges from then on; p NULL: every partition's. */
void gtrack_lost(struct gtrack *t, struct gtrack_part *p);

/* Moves acked offsets into items: *out is malloc'd (n_out items, free with
 * gack_items_free). At most max_items items, and ranges (not uptos) that
 * hold at most max_offsets offsets together (a range is cut to fit); the
 * rest stays queued. Returns 0 or -ENOMEM (nothing taken then). */
int gtrack_take(struct gtrack *t, size_t max_items, uint64_t max_offsets, struct gack_item **out,
                size_t *n_out) CL_WUR;
void gack_items_free(struct gack_item *items, size_t n);

/* ---- group_fetch.c: a GroupFetch answer ---------------------------------- */

/* One delivery range of a fetch result, copied from the wire. */
struct gwire_range {
    uint64_t first;
    uint32_t count;
    uint32_t delivery_count;
};

/*
 * Checks the len bytes of whole batches of one fetch result against its
 * ascending, disjoint delivery ranges: every batch valid (header, CRC,
 * records), batches in ascending, non-overlapping offset order, and every
 * offset of every range inside a data (non-control) batch. Returns 0,
 * VERITY_ECORRUPT (bad batch bytes) or VERITY_EPROTO (ranges not ascending,
 * or an offset of a range that the bytes do not hold).
 */
int gfetch_check(const uint8_t *data, size_t len, const struct gwire_range *d, size_t nd) CL_WUR;

/* A decoded message before its pointers are fixed up: header indexes are
 * kept in `headers` as an integer until the header array stops moving. */
struct gdecode {
    struct verity_group_message *msgs; /* growable, owned by the caller */
    size_t n, cap;
    struct verity_header *hdrs;
    size_t nh, hcap;
};

/*
 * Appends the records of a checked result whose offsets lie in the ranges
 * to out, in offset order, with topic, partition, delivery count and lease
 * deadline set; header pointers stay indexes until gdecode_finish. The
 * records point into data. Returns 0, -ENOMEM, VERITY_ECORRUPT.
 */
int gfetch_decode(const uint8_t *data, size_t len, const struct gwire_range *d, size_t nd,
                  const char *topic, uint32_t partition, int64_t lease_deadline_ms,
                  struct gdecode *out) CL_WUR;
/* Turns header indexes into pointers once every result is decoded. */
void gdecode_finish(struct gdecode *out);
void gdecode_deinit(struct gdecode *out);

/* ---- group_io.c / group_consumer.c: the group consumer ------------------- */

#define GC_RETRY_MS 100            /* after a transient fetch error (pending limit, ...) */
#define GC_TOPICS_MAX 64u          /* distinct topic names a member keeps */
#define GC_ACK_ITEMS_MAX 1024u     /* items in one Ack request */
_Static_assert(GC_ACK_ITEMS_MAX <= VERITY_ITEMS_MAX, "an Ack's items fit one protocol message");
#define GC_ACK_OFFSETS_MAX VERITY_ACK_OFFSETS_MAX /* the broker's cap, include/verity/limits.h */
#define GC_ERRS_MAX 256u           /* failed requests remembered for commit */
#define GC_RUNS_MAX 4096u          /* auto-ack runs remembered from one poll */

enum gstate { G_UNJOINED = 0, G_JOINING, G_JOINED, G_FAILED, G_CLOSING };

enum greq_kind { GR_JOIN, GR_HEARTBEAT, GR_LEAVE, GR_FETCH, GR_ACK, GR_NACK, GR_EXTEND, GR_TERM };

struct greq {
    struct greq *prev, *next;     /* outstanding (ack/nack/extend/term only) */
    struct verity_group_consumer *g;
    enum greq_kind kind;
    uint64_t id;                  /* commit accounting (0: not counted) */
    uint64_t member_id;
    struct gack_item *items;      /* GR_ACK, owned */
    size_t n_items;
    bool single;                  /* GR_ACK: a resend of one item after a failed batch */
    uint32_t topic, partition;    /* nack / extend / term */
    uint64_t offset;
    struct cl_wait *wait;         /* GR_LEAVE from free */
};

/* A nack, extend or term waiting to be sent (mu). */
struct gop {
    struct gop *next;
    enum greq_kind kind;
    uint32_t topic, partition;
    uint64_t offset;
    int64_t delay_ms;             /* nack: wire semantics already */
    char *error;
};

struct gq_result {
    uint32_t topic;
    uint32_t partition;
    const uint8_t *data;
    size_t len;
    struct gwire_range *d;
    size_t nd;
    bool dropped;                 /* the partition moved away before the poll */
    const char *wire_topic;       /* the answer's name; valid in fetch_done only */
};

/* One GroupFetch answer waiting to be polled, or held by the last poll. */
struct gq_fetch {
    struct gq_fetch *next;
    uint8_t *payload;             /* owned; results point into it */
    struct gq_result *results;
    size_t n_results;
    uint64_t member_id;
    uint32_t messages;
    int64_t lease_deadline_ms;
};

struct gerr {
    uint64_t id;
    int err;
};

/* A run of consecutive offsets one poll returned (auto-ack). */
struct grun {
    uint32_t topic, partition;
    uint64_t lo, hi;
};

struct verity_group_consumer {
    struct verity_group_consumer_config cfg; /* strings point to the copies below */
    char *group;
    char **topics;
    char *member_name;
    char *client_id;
    char *broker;
    struct cl_loop loop;
    struct conn *conn;            /* loop thread */
    struct event *kick_ev;
    struct event *timer_ev;

    pthread_mutex_t mu;
    pthread_cond_t cv;
    /* (mu) */
    enum gstate state;
    int fatal;                    /* FAILED: why */
    bool fatal_reported;
    bool ready;                   /* connection up */
    int conn_err;
    uint64_t conn_failures;
    uint64_t member_id;
    uint32_t generation;          /* of the assignment applied last */
    uint32_t gen_seen;            /* highest generation any answer showed */
    bool ordered;
    bool mode_known;
    int64_t lease_ms;
    int64_t session_ms;
    char *interned[GC_TOPICS_MAX];
    uint32_t n_interned;
    struct gtrack track;
    struct gop *ops_head, *ops_tail;
    struct gq_fetch *q_head, *q_tail;
    uint64_t q_msgs;
    bool poll_waiting;
    bool kick_pending;
    bool left;                    /* LeaveGroup sent: never join again */
    uint64_t next_id;             /* last id handed out */
    struct greq *out_head, *out_tail;
    uint64_t flush_want;          /* flush requests made */
    uint64_t flush_done;          /* flush requests served */
    uint64_t flush_barrier;       /* ids <= this belong to served flushes */
    struct gerr errs[GC_ERRS_MAX];
    uint32_t n_errs;
    struct grun *runs;            /* auto-ack: what the last poll returned */
    uint32_t n_runs;
    uint64_t proto_errors;        /* answers dropped as malformed */

    /* loop thread */
    uint32_t fetch_inflight;
    bool hb_inflight;
    bool hb_now;                  /* generation changed: ask for the assignment */
    int64_t last_member_req_ms;   /* last request that renews the session */
    int64_t ack_due_ms;           /* acks queued since; INT64_MAX when none */
    int64_t retry_at_ms;          /* fetch retry after a transient error */

    /* polling thread */
    struct gq_fetch *held;
    struct gdecode dec;
};

/* A LeaveGroup asked for by verity_group_consumer_free. */
struct leave_job {
    struct verity_group_consumer *g;
    struct cl_wait *w;
};

/* group_io.c: the I/O thread's side; the application's side calls these. */
bool gio_closing(struct verity_group_consumer *g);
/* Wakes the I/O thread (coalesced); any thread, mu not held. */
void gio_kick(struct verity_group_consumer *g);
/* gio_kick; nudge false (poll's own kicks): a loop lent idle to the polling
 * thread stays lent, the kick runs when that thread runs the loop again or
 * when the loop thread takes it back (at most 2 ms later, client/loop.c). */
void gio_kick_ex(struct verity_group_consumer *g, bool nudge);
/* cl_loop on_lent: a poll waiting for the loop tries again. */
void gio_on_lent(void *arg);
/* Index of topic name in the member's table, adding it (mu held); -1 when
 * the table is full or memory runs out. */
int gio_intern(struct verity_group_consumer *g, const char *name);
/* Index of an interned topic (pointer or name), -1 when unknown (mu held). */
int gio_topic_index(struct verity_group_consumer *g, const char *name);
void gio_fetch_free(struct gq_fetch *f);
void gio_op_free(struct gop *op);
/* Sends what is due: join, ops, acks, fetches, heartbeats (loop thread). */
void gio_pump(struct verity_group_consumer *g);
void gio_kick_cb(evutil_socket_t fd, short what, void *arg);
void gio_timer_cb(evutil_socket_t fd, short what, void *arg);
void gio_start_job(void *arg);
void gio_stop_job(void *arg);
/* Loop job: sends LeaveGroup for the member; signals the leave_job's wait. */
void gio_leave_job(void *arg);
extern const struct conn_events gio_events;

/* ---- group_util.c: wire conversions --------------------------------------------------------- */

enum verity_group_mode gw_mode_from_wire(int m);
int gw_mode_to_wire(enum verity_group_mode m);
int gw_start_to_wire(enum verity_group_start s);
/* Wire -> public; 0 or -ENOMEM (out is cleared on error). */
int gw_info_from_summary(const Verity__GroupSummary *s, struct verity_group_info *out) CL_WUR;
int gw_info_from_description(const Verity__GroupDescription *d, struct verity_group_info *out)
    CL_WUR;
int gw_offsets_from_wire(Verity__GroupPartitionOffset *const *w, size_t n,
                         struct verity_group_offset **out) CL_WUR;
int gw_pending_from_wire(Verity__GroupPendingEntry *const *w, size_t n,
                         struct verity_group_pending_entry **out) CL_WUR;
/* Frees the fields of one info (not the struct). */
void gw_info_clear(struct verity_group_info *g);

#endif
