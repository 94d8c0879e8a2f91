/*
 * Internals shared by the broker's files: the broker, topics, partitions,
 * the metadata log, connections and requests. Everything here is owned and
 * touched by the event loop thread only, except where a field says
 * otherwise.
 *
 * Lifetimes:
 *   broker   >= topic >= partition (a partition's log and replica close
 *               with it)
 *   conn     lives while its socket is open or a request still refers to it
 *               (refs); once `dead`, replies are dropped
 *   req      from a decoded frame to its reply (or to its connection's death
 *               for fetches, which are cancelled)
 */
#ifndef VERITY_BROKER_INT_H
#define VERITY_BROKER_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/queue.h>

#include <openssl/evp.h>
#include <openssl/ssl.h>

#include "broker/broker.h"
#include "broker/cluster.h"
#include "broker/config.h"
#include "broker/idem.h"
#include "broker/metrics.h"
#include "broker/peer.h"
#include "broker/replica.h"
#include "broker/trace.h"
#include "broker/witness_push.h"
#include "broker/group/group.h"
#include "proto/codec.h"
#include "storage/batch.h"
#include "storage/dirlock.h"
#include "storage/vlog.h"
#include "verity/limits.h"

struct event;
struct event_base;
struct evconnlistener;
struct evhttp;
struct bufferevent;
struct evbuffer;

struct conn;
struct req;
struct topic;
struct partition;
struct cgroup;
struct cluster;
struct prod_wait;
struct fetch_link;

/* ---- topics and partitions ----------------------------------------------- */

struct topic_cfg {
    uint32_t partitions;
    enum topic_durability durability;
    int64_t retention_ms;    /* -1 unlimited */
    int64_t retention_bytes; /* -1 unlimited */
    uint64_t segment_bytes;
    uint32_t max_message_bytes;
    uint32_t replicas; /* replication factor (1 outside a cluster) */
};

/* One produced batch waiting for the high watermark to pass its end. */
struct prod_wait {
    /* NULL for native produces (produce_wait_resolve); the Kafka listener's
     * own resolver otherwise, called in its place with the same contract. */
    void (*resolve)(struct prod_wait *w, int err, uint64_t hw);
    struct partition *part;
    uint64_t end; /* last offset + 1 */
    bool linked;  /* in part->waits */
    bool leader_ack; /* acks=leader on a replicated partition: answered once the
                      * primary's journal holds it (broker/cluster.c) */
    void *ctx;    /* the produce request's state (h_produce.c) */
    size_t idx;   /* entry in that request */
    TAILQ_ENTRY(prod_wait) link;
};

/* One fetch long-polling on a partition. */
struct fetch_link {
    /* NULL for native fetches; the Kafka listener's wake hook otherwise,
     * called in place of fetch_link_wake (arg is its fetch). */
    void (*wake)(struct fetch_link *l, bool final);
    void *arg;
    struct partition *part;
    struct req *req;
    bool linked; /* in part->fetchers */
    TAILQ_ENTRY(fetch_link) link;
};

TAILQ_HEAD(prod_wait_list, prod_wait);
TAILQ_HEAD(fetch_link_list, fetch_link);

struct partition {
    struct broker *b;
    struct topic *topic; /* owner */
    uint32_t id;
    char *dir;               /* owned */
    struct vlog *log;        /* NULL when opening failed (error says why) */
    struct replica *replica; /* NULL with log */
    struct idem idem;
    struct event *durable_ev;        /* activated by the commit thread (on_durable) */
    struct prod_wait_list waits;     /* produces waiting for the high watermark, by end */
    struct fetch_link_list fetchers; /* long-polls waiting for new data */
    int error;                       /* 0, open failure or sticky log error */
    bool error_logged;
    uint64_t snap_offset;            /* log offset the last idem snapshot covers (0: none) */
    uint64_t ckpt_end;        /* log end right after the last checkpoint seen or written */
    int64_t ckpt_pending_ms;  /* when appends after it were first seen (0: none) */
    struct cgroup *cg;        /* its replica group in a cluster (broker/cluster.c), else NULL */
};

/* Writes the partition's idempotence snapshot (<dir>/idem.snap) when the
 * whole log is durable and force is set or snapshot_records records were
 * appended since the last one. 0, or the error (also counted in metrics). */
int part_snapshot(struct partition *p, bool force);

struct topic {
    char name[VERITY_TOPIC_NAME_MAX + 1];
    struct topic_cfg cfg;
    int64_t created_ms;
    bool ready;               /* creation durable and partitions open */
    bool deleting;            /* delete record appended, not yet durable */
    struct partition **parts; /* cfg.partitions entries (NULL until opened) */
    struct treader *readers;  /* groups reading this topic (groups_on_append's cache) */
    size_t n_readers;
    uint64_t readers_gen;    /* groups.gen the cache was built at (0: never) */
    struct topic *hnext;     /* broker->topic_buckets chain */
    TAILQ_ENTRY(topic) link; /* broker->topics, creation order */
};
TAILQ_HEAD(topic_list, topic);

#define TOPIC_BUCKETS 1024

/* Opens (creating) partition id of t under <data>/topics/<name>/<id>: vlog
 * recovery, idempotence rebuild, replica. A failure is kept in p->error (the
 * partition answers with it) and logged; returns -ENOMEM only. */
int part_open(struct broker *b, struct topic *t, uint32_t id, struct partition **out)
    __attribute__((warn_unused_result));
/* Cluster hooks (broker/cluster.c): the replica's commit callback, and the
 * idempotence state rebuilt from the log (after a primary gave up
 * proposals it had recorded). */
void part_commit_hook(void *arg, uint64_t hw);
int part_rebuild_idem(struct partition *p) __attribute__((warn_unused_result));

/* Fails waiting produces and fetches with err, then closes the log (sync +
 * checkpoint when clean is true, abandon otherwise). Returns the close error. */
int part_close(struct partition *p, int err, bool clean);
/* Effective vlog config of a topic. */
void part_vlog_config(const struct broker *b, const struct topic_cfg *tc, struct vlog_config *vc);
/* Writes a checkpoint when appends are older than checkpoint_interval_ms. */
void part_checkpoint_tick(struct partition *p, int64_t now);
/* The partition's high watermark (0 when it failed to open). */
uint64_t part_hw(const struct partition *p);
/* Called when the high watermark advanced or the partition failed: resolves
 * produce waits and wakes fetchers. */
void part_progress(struct partition *p);

struct topic *topic_find(struct broker *b, const char *name);
/* Only ready, not deleting topics; NULL otherwise. */
struct topic *topic_find_live(struct broker *b, const char *name);
/* Looks up a live partition. Returns 0, or VERITY_ENOTFOUND with msg. */
int topic_partition(struct broker *b, const char *topic, uint32_t partition, struct partition **out,
                    char *msg, size_t cap) __attribute__((warn_unused_result));
/* Adds an empty, not ready topic to the table. NULL on -ENOMEM. */
struct topic *topic_add(struct broker *b, const char *name, const struct topic_cfg *cfg,
                        int64_t created_ms);
/* Opens every partition and marks the topic ready. */
int topic_open_partitions(struct broker *b, struct topic *t) __attribute__((warn_unused_result));
/* Removes t from the table and frees it (partitions must be closed). */
void topic_remove(struct broker *b, struct topic *t);
/* Fills the effective config from a wire config and the broker defaults.
 * Returns 0 or VERITY_EINVAL / VERITY_ELIMIT with msg. */
int topic_cfg_from_wire(const struct broker *b, const Verity__TopicConfig *w, struct topic_cfg *out,
                        char *msg, size_t cap) __attribute__((warn_unused_result));

/* ---- metadata log --------------------------------------------------------- */

struct meta_op;
struct auth_store;
typedef void (*meta_done_fn)(struct broker *b, void *arg, int err);

struct meta_op {
    uint64_t end; /* durable once the meta log's durable end reaches it */
    meta_done_fn done;
    void *arg;
    TAILQ_ENTRY(meta_op) link;
};
TAILQ_HEAD(meta_op_list, meta_op);

struct meta {
    struct vlog *log;
    struct event *durable_ev;
    struct meta_op_list ops; /* appended, waiting to be durable, in order */
    int16_t *epochs;         /* epochs[pid - 1], pid = 1..n_producers */
    size_t n_producers;
    size_t cap_producers;
    uint64_t snap_offset; /* meta log offset the last snapshot covers (0: none) */
    bool loaded;          /* replay finished: memory is the log's state */
    /* the security store's entries made over the network (auth_change
     * records, issue 14); auth.c uses them together with auth_file */
    struct auth_store *auth;
};

/* Opens <data>/__meta and replays it into the broker (topics, producers). */
int meta_open(struct broker *b) __attribute__((warn_unused_result));
int meta_close(struct broker *b, bool clean);
/* Appends one JSON record (borrowed) and calls done(b, arg, err) on the loop
 * once it is durable (err 0) or failed. Returns 0 (done will be called) or
 * an error (done will not be called). */
int meta_append(struct broker *b, const char *json, meta_done_fn done, void *arg)
    __attribute__((warn_unused_result));
/* In a cluster (broker/cluster.c): meta_append_local appends to this
 * broker's own meta log (what meta_append does without a cluster);
 * meta_apply_live applies a committed record made elsewhere to memory, with
 * its effects (partitions opened or closed). */
int meta_append_local(struct broker *b, const char *json, meta_done_fn done, void *arg)
    __attribute__((warn_unused_result));
int meta_apply_live(struct broker *b, const char *json);
/* An auth_change record (borrowed JSON text) this broker proposed itself,
 * now in its log: applies it to b->meta.auth and tells auth.c (as
 * meta_apply_live does for other brokers' records). 0 or the error. */
int meta_auth_apply(struct broker *b, const char *json);
/* -1 when pid is unknown. */
int meta_producer_epoch(const struct broker *b, int64_t pid);
#define META_PRODUCER_ID_MAX 100000000
/* Grows the epoch table so that meta_producer_set(pid) cannot fail. 0,
 * VERITY_EINVAL (pid out of range) or -ENOMEM; changes no producer. */
int meta_producer_reserve(struct broker *b, int64_t pid) __attribute__((warn_unused_result));
/* Records (in memory) pid's epoch, which must not be older than the one
 * held; grows the table. 0, VERITY_EINVAL or -ENOMEM. Call only for a record
 * that is in the metadata log (replay, or after meta_append succeeded), so
 * memory never runs ahead of the log. */
int meta_producer_set(struct broker *b, int64_t pid, int16_t epoch)
    __attribute__((warn_unused_result));
/* __meta state transfer (cluster; docs/REPLICATION.md "State transfer of
 * `__meta`"). meta_state_encode: the applied metadata state as bytes
 * (broker/meta_snap.h), -EAGAIN before the log is loaded. meta_state_stage:
 * the requester's first half of an install of the decoded state buf (for
 * op): a state mark in the meta log, synced, and meta.xfer.new for the
 * offset after it (*end); the caller then records and syncs the applied
 * position at *end and calls meta_state_adopt, which makes the file
 * meta.xfer and replaces topics (partitions closed or opened), producer ids
 * and epochs, and the auth_change store with im's (taking them). */
struct meta_image;
int meta_state_encode(struct broker *b, uint8_t **out, size_t *len)
    __attribute__((warn_unused_result));
int meta_state_stage(struct broker *b, const uint8_t *buf, size_t len, uint64_t op,
                     uint64_t *end) __attribute__((warn_unused_result));
int meta_state_adopt(struct broker *b, struct meta_image *im, uint64_t end);
/* At open, when the applied ring has no entry (a replica that had applied
 * no op when an install was cut short): drops a staged meta.xfer.new and
 * the state mark it covers at the log's end. 0 or the cut's error. */
int meta_state_unstage(struct broker *b) __attribute__((warn_unused_result));

/* Writes <data>/__meta/meta.snap when the log is durable with nothing
 * waiting and force is set or snapshot_records records were appended since
 * the last one. 0 or the error (logged, counted). */
int meta_snapshot(struct broker *b, bool force);
/* Renames <data>/topics/<name> aside, fsyncs the parent, removes it. */
int meta_remove_topic_dir(struct broker *b, const char *name) __attribute__((warn_unused_result));
/* Sum of the fsync statistics of every log (metrics). */
void meta_sync_stats(struct broker *b, struct vlog_sync_stats *out);

/* ---- connections and requests --------------------------------------------- */

TAILQ_HEAD(conn_list, conn);
TAILQ_HEAD(req_list, req);

struct conn {
    struct broker *b;
    struct bufferevent *bev; /* NULL once dead */
    uint64_t id;
    char peer[64];
    uint32_t inflight;       /* requests decoded and not yet answered */
    uint32_t refs;           /* requests that point here */
    bool closing;            /* answering an error: discard input, close after flush */
    bool dead;               /* socket closed; replies are dropped */
    bool paused;             /* reading paused for output backpressure */
    bool eof;                /* peer closed its side; close once answered */
    struct event *linger_ev; /* closes a `closing` connection at the latest */
    struct req_list reqs;    /* requests in flight */
    TAILQ_ENTRY(conn) link;
    /* resource guards (conn.c) */
    char addr[48];                 /* peer IP address, the per-address cap's key */
    uint64_t reserved;             /* budget held for the frame being received (0: none yet) */
    bool starved;                  /* in b->starved: reading paused until the budget has room */
    bool frame_open;               /* a frame's first bytes arrived; frame_ev runs */
    struct event *frame_ev;        /* frame_timeout_ms for the frame being received */
    TAILQ_ENTRY(conn) starve_link; /* b->starved */
    bool tls;                      /* bev is a bufferevent_openssl */
    bool tls_up;                   /* its handshake completed */
    struct auth_conn *auth;        /* broker/auth.c: the principal (NULL: auth off) */
    struct event *flush_ev;        /* issue 16: writes answers before the loop sleeps (NULL: TLS) */
};

typedef void (*req_cancel_fn)(struct req *r);

struct req {
    struct broker *b;
    struct conn *conn; /* holds a ref */
    uint64_t corr;
    Verity__Envelope__BodyCase type;
    int64_t start_ns;
    struct codec_msg *msg; /* the decoded request, owned */
    uint8_t *frame;        /* the whole frame, owned; payload points into it */
    uint8_t *payload;
    size_t payload_len;
    void *ctx;             /* handler state */
    req_cancel_fn cancel;  /* called when the connection dies first */
    bool failed_entry;     /* some entry of the answer carried an error */
    uint64_t held;         /* bytes of b->buf_used this request holds until answered */
    struct auth_scope *auth_scope; /* broker/auth.c: names put in the tenant, a quota wait */
    TAILQ_ENTRY(req) link; /* conn->reqs */
};

/* Sends env (version and correlation id are filled in) followed by n file
 * spans (fds are taken over and closed) as the answer to r, then frees r.
 * payload_len must equal the spans' total. */
struct file_span {
    int fd;
    uint64_t position;
    uint64_t length;
};
void req_reply(struct req *r, Verity__Envelope *env, const struct file_span *spans, size_t n);
/* Answers r with a request-level error and no body, then frees r. */
void req_fail(struct req *r, int err, const char *msg);
/* A request-level NOT_LEADER naming broker node (0: none), which the client
 * follows by sending the same request there. */
void req_fail_leader(struct req *r, uint32_t node, const char *msg);

/* Handlers: each answers now or later through req_reply / req_fail. */
void h_hello(struct req *r);
void h_metadata(struct req *r);
void h_create_topic(struct req *r);
void h_delete_topic(struct req *r);
void h_list_topics(struct req *r);
void h_describe_topic(struct req *r);
void h_init_producer(struct req *r);
void h_produce(struct req *r);
void h_fetch(struct req *r);
void h_list_offsets(struct req *r);

/* Produce/fetch hooks used by partitions. produce_wait_resolve unlinks w
 * and answers its entry (err, or success at high watermark hw); it may
 * finish and free the whole request. fetch_link_wake re-evaluates the fetch
 * (final: answer now with what there is); it may free the request. */
void produce_wait_resolve(struct prod_wait *w, int err, uint64_t hw);
void fetch_link_wake(struct fetch_link *l, bool final);

/* ---- consumer groups (broker/groups.c, h_group_*.c, dlq.c) ----------------- */

/* A reply parked until the group log is durable through `ticket`. */
struct gpark;
typedef void (*gpark_fn)(struct broker *b, struct gpark *p, int err);
struct gpark {
    uint64_t ticket; /* group-log seq that must be durable */
    gpark_fn done;   /* err 0, or the group log's sticky error */
    bool linked;     /* in groups.parked */
    TAILQ_ENTRY(gpark) link;
};
TAILQ_HEAD(gpark_list, gpark);

struct gfetch; /* a long-polling GroupFetch (h_group_fetch.c) */
/* A GroupFetch's entry in its group's list of long-polls. */
struct gwaiter {
    struct gfetch *f;
    uint64_t member_id;
    TAILQ_ENTRY(gwaiter) link;
};
TAILQ_HEAD(gwaiter_list, gwaiter);

/* Shell-side companion of one group of the state machine: long-polls and
 * counters. Created on first use, freed with the group. */
struct bgroup {
    char name[GROUP_NAME_MAX + 1];
    struct gwaiter_list waiters; /* GroupFetches waiting for something deliverable */
    uint64_t deliveries;         /* offsets handed out since start */
    uint64_t redeliveries;       /* of those, with delivery count > 1 */
    uint64_t dlq_appended;       /* dead letters appended since start */
    uint64_t control_acked;      /* control-batch offsets acknowledged by the broker */
    uint64_t fetch_answers;      /* GroupFetch answers with messages */
    uint64_t fetch_log_waits;    /* of those, answers that waited for the group log */
    struct bgroup *next;
};

/* A group that reads a topic: its name, the flat index of partition 0 and
 * the partition count the group knows (a re-created topic may differ). */
struct treader {
    char group[GROUP_NAME_MAX + 1];
    uint32_t base;
    uint32_t partitions;
};

struct dlq_job; /* a dead letter on its way (dlq.c) */
TAILQ_HEAD(dlq_job_list, dlq_job);

/* One appended group-log batch: durable once the log's durable end reaches
 * end; then every record through seq is durable. */
struct gend {
    uint64_t end;
    uint64_t seq;
};

struct groups {
    struct group_state *st;   /* the state machine (broker/group/group.h) */
    struct vlog *log;         /* <data-dir>/__groups */
    struct event *durable_ev; /* activated by the commit thread */
    struct event *flush_ev;   /* group_flush at the end of this loop pass */
    struct event *lazy_ev;    /* group_flush within a few ms (nobody waits for it) */
    struct event *timer_ev;   /* group_tick at group_next_deadline */
    struct event *retry_ev;   /* dead letters waiting to be retried */
    int64_t timer_at;         /* wall ms the timer is armed for (INT64_MAX: none) */
    bool flush_armed;
    bool in_after;            /* inside groups_after (no recursion) */
    struct gpark_list parked; /* by ticket, ascending */
    uint64_t seq_appended;    /* last record written to the log */
    uint64_t seq_durable;     /* records through this seq are durable */
    struct gend *ends;        /* FIFO of appended batches not yet durable */
    size_t ends_head, ends_n, ends_cap;
    struct batch_builder bb; /* packs records into one batch */
    struct bgroup *list;
    struct dlq_job_list dlq_jobs; /* dead letters in progress */
    size_t n_dlq_jobs;
    int64_t dlq_scan_warned_ms; /* dlq_scan: last failure logged (at most every 10 s) */
    int error;        /* sticky: the group log failed; groups are read-only */
    uint64_t gen;     /* raised when a group is created or deleted */
    uint64_t records; /* records appended since start */
    uint64_t batches; /* log batches appended since start */
    uint64_t snap_offset; /* group log offset the last snapshot covers (0: none) */
    /* cluster (broker/groups_repl.c): the group log is the replica group
     * __groups; its primary is the coordinator of every group */
    bool repl;            /* in a cluster */
    bool coord;           /* this broker coordinates (runs the machine live) */
    bool lost_view;       /* a proposal was refused: step down */
    uint64_t coord_view;  /* the view of __groups it coordinates in */
    uint64_t takeovers;   /* times this broker became the coordinator */
    uint64_t stepdowns;   /* times it gave up (state rebuilt from the log) */
};

/* Group snapshots (broker/groups_snap.c). groups_snap_load loads
 * <data>/__groups/groups.snap into the new state machine and sets *from to
 * the offset the replay starts at (0 without a usable snapshot); 0 or
 * -ENOMEM. groups_snap_reset discards a loaded state (replay of the tail
 * failed) for a new empty one, logged and counted. groups_snapshot writes
 * one when quiescent and durable (force, or snapshot_records since the last);
 * 0 or the error (logged and counted). */
int groups_snap_load(struct broker *b, uint64_t *from) __attribute__((warn_unused_result));
/* Builds b->groups.st (new, nothing applied) from the snapshot and the log's
 * tail, or the whole log when the snapshot is unusable; *applied counts the
 * records replayed. 0 or the replay's error (a record refused, a state mark
 * without its snapshot: VERITY_ECORRUPT). */
int groups_load_state(struct broker *b, uint64_t *applied) __attribute__((warn_unused_result));
/* State transfer of __groups (broker/cluster.c). groups_repl_state encodes
 * the coordinator's state when every record of it is committed (-EAGAIN
 * otherwise, or when this broker does not coordinate). groups_snap_install
 * makes st (loaded from the len bytes of buf) this replica's state: a state
 * mark is appended to the group log, then the snapshot is written for the
 * offset after it; *end is that offset. st is taken over (freed on error). */
int groups_repl_state(struct broker *b, uint8_t **out, size_t *len)
    __attribute__((warn_unused_result));
int groups_snap_install(struct broker *b, struct group_state *st, const uint8_t *buf, size_t len,
                        uint64_t op, uint64_t *end) __attribute__((warn_unused_result));
int groups_snap_reset(struct broker *b, const char *why) __attribute__((warn_unused_result));
int groups_snapshot(struct broker *b, bool force);

/* Opens <data>/__groups, replays it into the state machine and recovers.
 * Called after the topics are open. */
int groups_open(struct broker *b) __attribute__((warn_unused_result));
/* Fails everything parked or waiting and closes the log. */
int groups_close(struct broker *b, bool clean);
/* Drains the state machine's records (appended to the group log) and effects
 * (dead letters, removed members), schedules the flush and re-arms the
 * timer. Call after every group command. */
void groups_after(struct broker *b);
/* Parks p until the group log is durable through ticket (0: now). p->done
 * is called exactly once, possibly before this returns. */
void groups_park(struct broker *b, struct gpark *p, uint64_t ticket);
/* 0, or the error (with msg) that makes group commands fail now: the group
 * log failed or is not open. */
int groups_writable(struct broker *b, char *msg, size_t cap) __attribute__((warn_unused_result));
/* groups.c internals used by groups_repl.c: answer parked replies whose
 * ticket is durable (committed); fail every parked reply / long-poll. */
void groups_answer_parked(struct broker *b);
void groups_fail_parked(struct broker *b, int err);
void groups_fail_waiters(struct broker *b, int err, const char *msg);
/* Cluster (broker/groups_repl.c). groups_live: this broker runs the state
 * machine live (a single broker, or the coordinator). groups_repl_check:
 * steps up (recover, timers) or down (state rebuilt from the committed
 * log) as the primary of __groups moves. groups_repl_apply: a committed op
 * of __groups (whole group-log batches); own: proposed by this broker as
 * coordinator in view own_view (already applied to its state). *end gets
 * the local group log's end. groups_route: answers a group request with
 * NOT_LEADER when this broker is not the coordinator (true: answered). */
bool groups_live(const struct broker *b);
void groups_repl_check(struct broker *b);
int groups_repl_apply(struct broker *b, const uint8_t *body, uint32_t len, bool own,
                      uint64_t own_view, uint64_t *end) __attribute__((warn_unused_result));
bool groups_route(struct req *r);
/* GET /cluster's "groups" row: __groups' replica row plus coordinator,
 * last_seq, committed_seq and state (SHA-256 of the durable state). */
json_t *groups_repl_json(struct broker *b);
int groups_check_topics(struct broker *b, const struct group_config *cfg, char *msg, size_t cap)
    __attribute__((warn_unused_result));
/* The companion of group name (created when the group exists); NULL when
 * the state machine does not know the group (or -ENOMEM). */
struct bgroup *bgroup_get(struct broker *b, const char *name);
/* Drops the companion of a deleted group (its waiters must be gone). */
void bgroup_drop(struct broker *b, const char *name);
/* Wakes the long-polls of one group / of every group. */
void groups_wake(struct bgroup *bg);
void groups_wake_all(struct broker *b);
/* Partition hooks: p's high watermark moved (wake long-polls of groups
 * reading it, finish dead letters appended to it); p is closing. */
void groups_on_commit(struct partition *p, uint64_t hw);
void groups_part_closing(struct partition *p);
/* p's log end moved to end (a batch was appended, not yet committed): raise
 * the delivery horizon of every group reading p (group_horizon). */
void groups_on_append(struct partition *p, uint64_t end);
/* A group was created or deleted: the per-topic reader caches are stale. */
void groups_changed(struct broker *b);
/* Acknowledges, for every group, control offsets (checkpoints, recovery
 * records) its read cursor stands on near the high watermark, so an idle
 * group's lag returns to 0 (broker/groups_control.c). Loop thread. */
void groups_skip_control_tails(struct broker *b);
/* The group's high watermark per flat partition (n entries; 0 for a
 * partition that is unavailable). */
void groups_hwm(struct broker *b, const struct group_config *cfg, uint64_t *hwm, size_t n);
/* The live partition behind flat index pidx of cfg, or NULL. */
struct partition *groups_part(struct broker *b, const struct group_config *cfg, uint32_t pidx);
/* Maps (topic, partition) of a request to the group's flat index; 0 or
 * VERITY_EINVAL / VERITY_ENOTFOUND with msg. */
int groups_pidx(struct broker *b, const char *group, const char *topic, uint32_t partition,
                uint32_t *pidx, char *msg, size_t cap) __attribute__((warn_unused_result));
/* Answers r with the error rc of a group command, phrased for group and
 * member (detail, may be NULL, is appended). */
void group_fail(struct req *r, int rc, const char *group, uint64_t member_id, const char *detail);
/* Topic index and partition of flat index pidx of cfg (false when out of range). */
bool groups_pidx_split(const struct group_config *cfg, uint32_t pidx, uint32_t *topic,
                       uint32_t *partition);
/* First timestamp of the batch that holds offset in p; INT64_MIN if none. */
int64_t groups_batch_ts(struct partition *p, uint64_t offset);
/* Long-poll hooks (h_group_fetch.c): wake re-evaluates; fail answers the
 * waiting fetch with err (member removed, group deleted, shutdown). */
void gfetch_wake(struct gfetch *f);
void gfetch_fail(struct gfetch *f, int err, const char *msg);

/* Dead letters (dlq.c): start one (the effect's strings are copied). */
void dlq_start(struct broker *b, const struct group_effect *e);
/* Retries jobs that wait for a topic or failed; called on a timer. */
void dlq_retry(struct broker *b);
/* The high watermark of p moved / p closes: finish or fail its jobs. */
void dlq_on_commit(struct partition *p, uint64_t hw);
void dlq_part_closing(struct partition *p);
void dlq_free_all(struct broker *b);
/* The group log's durable (cluster: committed) seq moved: jobs whose
 * decision it now covers go on. */
void dlq_on_durable(struct broker *b);
/* Cluster, on a broker that does not coordinate: the parts of committed
 * dead-letter decisions that are this broker's (dlq.c). dlq_arm_scan
 * arms the retry event for the next scan. */
void dlq_scan(struct broker *b);
void dlq_arm_scan(struct broker *b);

/* Starts creating topic name with config tc: metadata record, then done(b,
 * arg, err) once durable and the partitions are open (err != 0: the topic
 * is gone again). Returns 0 (done will be called) or an error with msg. */
int topic_create_start(struct broker *b, const char *name, const struct topic_cfg *tc,
                       meta_done_fn done, void *arg, char *msg, size_t cap)
    __attribute__((warn_unused_result));
/* The same for a name starting with "__" (issue 14: the audit topics). */
int topic_create_internal_start(struct broker *b, const char *name, const struct topic_cfg *tc,
                                meta_done_fn done, void *arg, char *msg, size_t cap)
    __attribute__((warn_unused_result));

/* Group request handlers. */
void h_create_group(struct req *r);
void h_delete_group(struct req *r);
void h_list_groups(struct req *r);
void h_describe_group(struct req *r);
void h_group_pending(struct req *r);
void h_reset_group(struct req *r);
void h_join_group(struct req *r);
void h_heartbeat(struct req *r);
void h_leave_group(struct req *r);
void h_group_fetch(struct req *r);
void h_ack(struct req *r);
void h_nack(struct req *r);
void h_extend(struct req *r);
void h_term(struct req *r);

/* ---- the broker ----------------------------------------------------------- */

struct broker {
    struct broker_config cfg;
    struct codec_limits limits; /* from cfg */
    struct event_base *base;
    struct evconnlistener *listener;
    struct evhttp *http;
    struct event *sig_term;
    struct event *sig_int;
    struct event *tick_ev; /* 1 s housekeeping */
    struct event *stop_ev; /* polls for in-flight requests during shutdown */
    int64_t stop_deadline_ns;
    int64_t last_retention_ms;
    char listen_addr[BCFG_ADDR_MAX + 16]; /* bound address, port resolved */
    char http_addr[BCFG_ADDR_MAX + 16];
    EVP_PKEY *signing_key; /* owned; NULL = unsigned checkpoints */
    struct meta meta;
    struct groups groups;
    struct kafka *kafka; /* the Kafka listener (broker/kafka/), NULL when off */
    struct peers peers;  /* cluster links (broker/peer.c); peers.on = false without a cluster */
    struct cluster *cluster; /* replica groups (broker/cluster.c); NULL without a cluster */
    struct topic_list topics;
    struct topic *topic_buckets[TOPIC_BUCKETS];
    size_t n_topics;
    struct conn_list conns;
    size_t n_conns;
    uint64_t next_conn_id;
    struct metrics met;
    /* resource guards (conn.c): the buffered-bytes budget, per-address
     * counts, accept back-off, admin HTTP connections */
    uint64_t buf_used;          /* frames being received (reserved) + requests unanswered */
    uint64_t buf_peak;          /* highest buf_used since memory was last trimmed */
    TAILQ_HEAD(, conn) starved; /* connections waiting for budget, oldest first */
    struct event *resume_ev;    /* resumes starved connections on the next loop pass */
    struct addr_slot **addr_buckets;
    struct event *accept_retry_ev; /* re-enables accepting after an fd shortage */
    uint32_t accept_backoff_ms;
    int64_t accept_log_ns;      /* when accept_failed was last logged */
    uint64_t accept_suppressed; /* accept failures since then, not logged */
    int64_t reject_log_ns;      /* the second counted for frame_rejected lines */
    uint32_t reject_log_n;      /* frame_rejected lines in it */
    uint64_t reject_suppressed; /* frame_rejected lines not logged since the last */
    struct http_guard *http_guard;
    /* TLS (tls.c, conn.c): NULL = plaintext; replaced on SIGHUP */
    SSL_CTX *tls_ctx;
    struct event *sig_hup;
    int64_t tls_log_ns;          /* start of the current second of tls log lines */
    uint32_t tls_log_n;          /* lines logged in it */
    uint64_t tls_log_suppressed; /* lines not logged since */
    struct auth_state *auth;     /* broker/auth.c: NULL unless auth_file is set */
    uint64_t fd_limit;          /* RLIMIT_NOFILE soft limit after raising it at start */
    int64_t started_ms;         /* wall time of the start (process_start_time_seconds) */
    uint8_t idem_seed[16];
    struct dirlock lock; /* <data_dir>/verity.lock, held from start to free */
    struct trace *trace; /* sampled path trace (trace.h); NULL when trace_sample is 0 */
    struct wpush *wpush; /* witness push (witness_push.h); NULL without witnesses */
    bool ready; /* serving (after startup, before shutdown) */
    bool stopping;
    int exit_code;
};

int64_t now_ms(void);
/* Fault points for tests (SQLite's sqlite3FaultSim): true when the
 * comma-separated list in $VERITY_FAULTS, read once at the first call,
 * names site. Lets a test make an allocation fail where nothing else can. */
bool broker_fault(const char *site);
int64_t mono_ns(void);

/* Admin HTTP server (broker/http.c). */
int http_start(struct broker *b) __attribute__((warn_unused_result));
/* http_proof.c: /v1/proof/... and /tlog/... (tiles); true when it answered. */
struct evhttp_request;
bool http_proof_handle(struct broker *b, struct evhttp_request *req);
void http_stop(struct broker *b);

/* Protocol listener and connections (broker/conn.c). */
int conn_listen(struct broker *b) __attribute__((warn_unused_result));
/* Stops accepting new connections. */
void conn_stop_accepting(struct broker *b);
/* Answers err/msg with correlation id 0, then closes c (auth.c). */
void conn_close_error(struct conn *c, int err, const char *msg);
/* Runs r's handler (auth.c, after a quota wait). */
void conn_dispatch(struct req *r);
/* Closes every connection (requests still in flight are dropped). */
void conn_close_all(struct broker *b);
/* Total requests in flight on every connection. */
size_t conn_inflight_total(const struct broker *b);
/* Resource guards (conn.c): set up / torn down with the broker; the
 * 1-second tick returns memory after a load and sweeps HTTP connections. */
int conn_guards_init(struct broker *b) __attribute__((warn_unused_result));
void conn_guards_free(struct broker *b);
void conn_guards_tick(struct broker *b);
/* A TLS handshake on port ("client" or "admin") failed: a warning, at most
 * 10 lines a second (conn.c). */
void conn_tls_failed(struct broker *b, const char *port, const char *peer, const char *reason);

/* Admin HTTP connection cap (conn.c), installed by http_start. */
int http_guard_install(struct broker *b, struct evhttp *http, struct evconnlistener *lev)
    __attribute__((warn_unused_result));
/* Renders the guards' and the process's metrics (broker/ops_metrics.c). */
void ops_metrics_render(struct broker *b, struct evbuffer *o);
/* Partitions answering with an error, and of those read-only (ops_metrics.c). */
void ops_partition_errors(struct broker *b, uint64_t *in_error, uint64_t *read_only);
/* Descriptors open in this process (ops_metrics.c). */
uint64_t ops_open_fds(void);
/* 0 when a topic of n partitions fits in the descriptor limit, else
 * VERITY_ELIMIT with msg naming the limit (ops_metrics.c). */
int ops_fds_check(struct broker *b, uint32_t partitions, char *msg, size_t cap)
    __attribute__((warn_unused_result));

/* Fills a TopicMetadata for t (strings borrowed from t; partitions array
 * malloc'd, free with topic_md_free). */
int topic_md_fill(struct broker *b, struct topic *t, bool with_partitions,
                  Verity__TopicMetadata *md, Verity__TopicConfig *cfg)
    __attribute__((warn_unused_result));
void topic_md_free(Verity__TopicMetadata *md);

/* Wire durability <-> topic durability. */
Verity__Durability topic_durability_to_wire(enum topic_durability d);

#endif
