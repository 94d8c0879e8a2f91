/*
 * Internals shared by broker/group/group*.c. Nothing outside broker/group/group*.c
 * includes this file; the API is broker/group/group.h.
 *
 * A group tracks each delivered-but-not-done message as an entry (struct
 * gent) in a pool, found by (pidx, offset) through an open-addressing hash.
 * Entry states, and the function performing each transition:
 *
 *            fetch                ack                  apply(PROGRESS acks)
 *   (new) ─────────► LEASED ──────────────► ACKED ─────────────────────► (freed, done)
 *                    │  ▲  │ nack / expiry / leave / rebalance
 *                    │  │  ▼ (count < max)
 *                    │  └─ WAITING ── ack by last holder ──► ACKED
 *                    │ term, or a return at count >= max
 *                    ▼
 *                 DLQ_WAIT ──dead_lettered──► DLQ_DONE ──apply(PROGRESS)──► (freed, done)
 *
 *   replay: apply(PROGRESS deliveries) creates IDLE entries; group_recover
 *   turns IDLE into WAITING (or DLQ_WAIT when a dead-letter was decided).
 *
 * Durable fields (changed only by apply): partition floor, cursor_logged,
 * done ranges, done_count, owner; entry logged count, dlq flag; members,
 * generation, incarnation; group config. Everything else is volatile.
 */
#ifndef VERITY_GROUP_INT_H
#define VERITY_GROUP_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "broker/group/group.h"
#include "proto/range.h"

#define GNIL UINT32_MAX

enum gent_status {
    GE_FREE = 0,
    GE_IDLE = 1,     /* rebuilt by replay, not yet recovered */
    GE_LEASED = 2,   /* in the lease list */
    GE_WAITING = 3,  /* in its partition's waiting heap */
    GE_ACKED = 4,    /* acked, waiting for the progress record */
    GE_DLQ_WAIT = 5, /* dead-letter effect emitted, waiting for group_dead_lettered */
    GE_DLQ_DONE = 6, /* dead-letter durable, waiting for the progress record */
};

struct gent {
    uint64_t offset;
    uint64_t member_id;  /* holder (LEASED) or last holder; 0 = none since restart */
    int64_t when_ms;     /* LEASED: lease deadline; WAITING: available at */
    int64_t first_ms;    /* first delivery since restart, INT64_MIN if none */
    char *error;         /* malloc'd last error text or NULL */
    uint32_t pidx;
    uint32_t prev, next; /* lease list (LEASED); next = free list link (FREE) */
    uint32_t heap_pos;   /* WAITING: position in the partition heap */
    uint16_t count;      /* deliveries so far (volatile, >= logged) */
    uint16_t logged;     /* deliveries recorded in the group log (durable) */
    uint8_t status;      /* enum gent_status */
    uint8_t dlq;         /* durable: dead-letter decided */
};


struct gpart {
    uint64_t floor;         /* durable: every offset below is done */
    uint64_t cursor_logged; /* durable: offsets below were delivered (per the log) */
    uint64_t cursor;        /* volatile read cursor, >= cursor_logged */
    uint64_t done_count;    /* durable: offsets in done[] */
    struct grange *done;    /* durable: sorted, disjoint, non-adjacent, all above floor */
    uint32_t n_done, cap_done;
    uint32_t *heap;         /* volatile: WAITING entries */
    uint32_t n_heap, cap_heap;
    uint32_t owner;         /* durable (derived): owning member slot, GNIL if none */
    uint32_t topic, partition;
    uint32_t n_leased;      /* volatile */
    uint32_t batch_deliv;   /* volatile: index + 1 of this partition's delivery item in the batch */
    uint32_t batch_horizon; /* volatile: index + 1 of this partition's horizon item in the batch */
    uint64_t horizon;       /* durable: offsets below may have been delivered once unlogged */
    uint64_t horizon_seq;   /* durable: seq of the record that set horizon */
    uint64_t horizon_prev;  /* volatile: the horizon before the last rise (0: none known) */
    uint64_t horizon_prev_seq; /* volatile: seq of the record that set horizon_prev; a first
                                  delivery below horizon_prev waits only for it, not for the
                                  (maybe not yet durable) record of the last rise */
    uint64_t recovered;     /* volatile: horizon at the last restart; first deliveries below
                               it count as the second */
};

struct gmember {
    uint64_t id;           /* 0 = free slot */
    char *name;            /* malloc'd */
    int64_t session_ms;
    int64_t last_seen_ms;  /* volatile */
    uint32_t n_leased;     /* volatile */
    uint32_t *parts;       /* ordered mode: owned partitions, ascending (derived) */
    uint32_t n_parts, cap_parts;
    uint32_t rr;           /* volatile: fetch rotation */
};

/* Items of a group's open progress record. */
struct gdeliv { uint32_t pidx; uint64_t lo, hi; };
struct gredeliv { uint32_t pidx; uint16_t count; uint64_t offset; };
struct gdecide { uint32_t pidx; uint16_t count; uint64_t offset; uint32_t err_off, err_len; };
struct gack { uint32_t pidx; uint64_t lo, hi; };
struct gdone { uint32_t pidx; uint64_t offset; };
struct ghorizon { uint32_t pidx; uint64_t offset; };

struct gbatch {
    uint64_t seq;          /* reserved seq; 0 = no open batch */
    struct gdeliv *deliv; size_t n_deliv, cap_deliv;
    struct gredeliv *redeliv; size_t n_redeliv, cap_redeliv;
    struct gdecide *decide; size_t n_decide, cap_decide;
    struct gack *ack; size_t n_ack, cap_ack;
    struct gdone *done; size_t n_done, cap_done;
    struct ghorizon *horizon; size_t n_horizon, cap_horizon;
    char *text; size_t n_text, cap_text;
    size_t items, bytes;   /* for the forced-emit thresholds */
    struct group *prev, *next; /* state's open-batch list, in seq order */
};

struct group {
    struct group_config cfg;
    uint32_t id;
    uint32_t n_parts;
    uint32_t topic_base[GROUP_TOPICS_MAX + 1];
    struct gpart *parts;
    struct gmember *members;
    uint32_t n_slots, cap_slots, n_members;
    uint64_t incarnation;  /* durable: member ids handed out */
    uint32_t generation;   /* durable */
    uint64_t dead_lettered;/* durable */
    uint32_t pending_max;
    /* entry pool */
    struct gent *ents;
    uint32_t cap_ents, n_used, free_head; /* n_used: slots ever used (free list below) */
    uint32_t n_tracked, n_leased, n_waiting, n_dlq;
    /* (pidx, offset) -> entry index + 1 */
    uint64_t *hkeys;
    uint32_t *hvals;
    uint32_t hcap, hmask;
    /* lease list: deadlines non-decreasing from head to tail */
    uint32_t lease_head, lease_tail;
    struct gbatch batch;
    uint32_t rr;           /* shared mode fetch rotation */
    uint64_t *chk;         /* apply scratch, one per partition */
};

/* Growable little-endian writer of the snapshot encoders (group_snap.c,
 * group_query.c; defined in group_codec.c): a failed allocation sets oom,
 * later writes do nothing, the caller checks oom once at the end. */
struct gwriter { uint8_t *p; size_t len, cap; bool oom; };
void gw_bytes(struct gwriter *b, const void *v, size_t n);
void gw_u8(struct gwriter *b, uint8_t v);
void gw_u16(struct gwriter *b, uint16_t v);
void gw_u32(struct gwriter *b, uint32_t v);
void gw_u64(struct gwriter *b, uint64_t v);
void gw_str(struct gwriter *b, const char *s); /* u32 length, then the bytes */

/* Growable byte buffer used by the encoders. */
struct gbuf { uint8_t *p; size_t len, cap; };

struct grec_bytes { size_t off, len; uint64_t seq; };
struct geffect {
    enum group_effect_type type;
    uint32_t pidx, partition, count;
    uint64_t offset, member_id, seq;
    bool timed_out;
    size_t group_off, topic_off, dlq_off, err_off; /* into the effect arena */
};

struct group_state {
    bool live;
    int64_t now_ms;          /* largest time seen */
    uint32_t pending_cap;
    uint64_t seq_next;       /* next seq to hand out */
    uint64_t seq_applied;    /* last applied record */
    uint32_t next_group_id;  /* durable */
    struct group **groups;   /* live groups, unordered */
    uint32_t n_groups, cap_groups;
    struct group **by_name, **by_id; /* open addressing, rebuilt on create/delete */
    uint32_t hash_cap;
    struct group *open_head, *open_tail; /* groups with an open batch, seq order */
    size_t open_items;
    /* record outbox */
    uint8_t *rbuf; size_t rlen, rcap;
    struct grec_bytes *recs; size_t n_recs, cap_recs, rec_read;
    /* effect outbox */
    struct geffect *effs; size_t n_effs, cap_effs, eff_read;
    char *earena; size_t elen, ecap;
    struct gbuf enc;         /* encode scratch */
    bool in_apply;           /* inside gapply_record: no batch may open */
};

/* ---- decoded records (group_codec.c) ---- */
struct grec {
    enum group_rec_type type;
    uint64_t seq;
    uint32_t group_id;
    int64_t time_ms;
    /* CREATE */
    struct group_config *cfg; /* heap scratch */
    uint64_t *offsets; uint32_t n_offsets; /* CREATE start, RESET */
    /* JOIN / LEAVE */
    uint64_t member_id;
    int64_t session_ms;
    char member_name[GROUP_MEMBER_NAME_MAX + 1];
    bool timed_out;
    /* PROGRESS */
    struct gdeliv *deliv; size_t n_deliv;
    struct gredeliv *redeliv; size_t n_redeliv;
    struct gdecide *decide; size_t n_decide;
    struct gack *ack; size_t n_ack;
    struct gdone *done; size_t n_done;
    struct ghorizon *horizon; size_t n_horizon; /* version 2 */
    const char *text;       /* decide err_off/err_len index this (the record bytes) */
};

#define GREC_HDR_SIZE 32


int gcodec_create(struct gbuf *b, uint64_t seq, uint32_t gid, int64_t t,
                  const struct group_config *cfg, const uint64_t *start, uint32_t n) GROUP_WUR;
int gcodec_simple(struct gbuf *b, enum group_rec_type type, uint64_t seq, uint32_t gid,
                  int64_t t) GROUP_WUR;
int gcodec_join(struct gbuf *b, uint64_t seq, uint32_t gid, int64_t t, uint64_t member_id,
                int64_t session_ms, const char *name) GROUP_WUR;
int gcodec_leave(struct gbuf *b, uint64_t seq, uint32_t gid, int64_t t, uint64_t member_id,
                 bool timed_out) GROUP_WUR;
int gcodec_reset(struct gbuf *b, uint64_t seq, uint32_t gid, int64_t t, const uint64_t *offsets,
                 uint32_t n) GROUP_WUR;
/* Sorts and merges the batch's acks in place, then encodes. */
int gcodec_progress(struct gbuf *b, uint64_t seq, uint32_t gid, int64_t t,
                    struct gbatch *batch) GROUP_WUR;
/* Decodes rec into r; arrays are malloc'd (grec_free). */
int gcodec_decode(const uint8_t *rec, size_t len, struct grec *r) GROUP_WUR;
void grec_free(struct grec *r);

/* ---- group.c ---- */
void gst_group_free(struct group *g);
int gst_index_rebuild(struct group_state *st) GROUP_WUR;
/* Seq the caller's reply waits for: the open batch, else the last record. */
uint64_t gst_ticket(const struct group_state *st, const struct group *g);
/* Progress items; each opens the batch if needed. */
void gbatch_deliv(struct group_state *st, struct group *g, uint32_t pidx, uint64_t offset);
void gbatch_redeliv(struct group_state *st, struct group *g, uint32_t pidx, uint64_t offset,
                    uint16_t count);
void gbatch_ack(struct group_state *st, struct group *g, uint32_t pidx, uint64_t lo, uint64_t hi);
void gbatch_done(struct group_state *st, struct group *g, uint32_t pidx, uint64_t offset);
struct group *gst_find(const struct group_state *st, const char *name);
struct group *gst_find_id(const struct group_state *st, uint32_t id);
int64_t gst_clock(struct group_state *st, int64_t now_ms);
/* Reserves the group's open progress record if needed; returns its seq. */
uint64_t gbatch_open(struct group_state *st, struct group *g);
/* Emits every open progress record with seq <= upto (all when UINT64_MAX). */
void gst_emit_open(struct group_state *st, uint64_t upto, int64_t now_ms);
/* Emits the group's progress record if a threshold is crossed. */
void gbatch_maybe_emit(struct group_state *st, struct group *g, int64_t now_ms);
int gbatch_reserve(struct group *g, size_t deliv, size_t redeliv, size_t ack) GROUP_WUR;
void gst_effect_dead_letter(struct group_state *st, const struct group *g, const struct gent *e);
struct gmember *gmember_find(struct group *g, uint64_t member_id);
const struct gmember *gmember_find_c(const struct group *g, uint64_t member_id);
void gmember_touch(struct gmember *m, int64_t now_ms);
int gapply_record(struct group_state *st, const uint8_t *rec, size_t len) GROUP_WUR;

/* ---- group_entry.c ---- */
int gent_reserve(struct group *g, uint32_t more) GROUP_WUR;
uint32_t gent_alloc(struct group *g, uint32_t pidx, uint64_t offset);
void gent_release(struct group *g, uint32_t ei);
uint32_t gent_find(const struct group *g, uint32_t pidx, uint64_t offset);
void glease_push(struct group *g, uint32_t ei);
void glease_unlink(struct group *g, uint32_t ei);
int gheap_reserve(struct gpart *p, uint32_t more) GROUP_WUR;
void gheap_push(struct group *g, uint32_t ei);
void gheap_remove(struct group *g, uint32_t ei);
uint32_t gheap_top(const struct group *g, const struct gpart *p);
bool gdone_has(const struct gpart *p, uint64_t offset);
int gdone_reserve(struct gpart *p, uint32_t more) GROUP_WUR;
/* Marks [lo, hi) done (parts may already be), collapsing into the floor. */
void gdone_add(struct gpart *p, uint64_t lo, uint64_t hi);
void gent_set_error(struct gent *e, const char *text, size_t len);
/* Takes a LEASED/WAITING/IDLE entry out of its list (status unchanged). */
void gent_detach(struct group *g, uint32_t ei);
/* A message returns (nack, expiry, leave, rebalance, restart): WAITING at
 * at_ms, or DLQ_WAIT with its effect when it had max_deliveries. The entry is
 * detached. */
void gent_return(struct group_state *st, struct group *g, uint32_t ei, int64_t at_ms);
/* Dead-letter decision: DLQ_WAIT, effect, progress item. */
void gent_dead_letter(struct group_state *st, struct group *g, uint32_t ei);
/* Inside apply (LEAVE, JOIN rebalance): returns, at once and without a
 * dead-letter decision, every lease of the member / every lease whose
 * partition its holder no longer owns. */
void glease_return_member(struct group *g, uint64_t member_id, int64_t now_ms);
void glease_return_moved(struct group *g, int64_t now_ms);
void gent_drop_all(struct group *g);
int64_t gbackoff(const struct group *g, uint32_t count);

/* ---- group_deliver.c ---- */
/* Returns every lease whose deadline passed (backoff, or dead-letter). */
void gdeliver_expire(struct group_state *st, struct group *g, int64_t now_ms);

/* ---- group_assign.c ---- */
/* Recomputes the ordered-mode assignment after a join or leave: sticky and
 * balanced. Needs gassign_reserve first. */
void gassign_rebalance(struct group *g);
/* Makes room so that gassign_rebalance cannot fail with n_members members. */
int gassign_reserve(struct group *g, uint32_t n_members) GROUP_WUR;

#endif
