/*
 * cluster: replica groups inside verityd (issue 10). Every replicated
 * partition is a VSR replica group (broker/vsr/vgroup.h) over the brokers
 * its placement names, and the metadata log is one more group, `__meta`,
 * over every broker of the cluster. Frames arrive from broker/peer.c and are
 * routed to their group here; one shared tick (peer.c's PEER_TICK_MS timer)
 * drives every group.
 *
 * Placement: replica i of partition p of a topic with r replicas is node
 * index (p + i) % n of the cluster section (n nodes, in config order); the
 * primary of view v is replica v % r, so view 0's primaries spread over the
 * brokers. `__meta` has every node, replica i = node index i.
 *
 * Data path: produce on the primary stamps the batch (base offset and chain
 * hash from the end of what it proposed) and proposes the bytes; every
 * replica appends exactly those bytes at commit (vlog_append_exact), so the
 * data log holds committed batches only and the high watermark is its end.
 * The applied position (op, checksum, digest, log end) is kept in a small
 * ring file next to the journal (`applied`), so a restart resumes: it picks
 * the newest entry whose log end the data log still holds and cuts the log
 * back to it (the journal re-applies the rest).
 *
 * Everything runs on the event loop thread.
 */
#ifndef VERITY_BROKER_CLUSTER_H
#define VERITY_BROKER_CLUSTER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "proto/codec.h"

struct broker;
struct partition;
struct topic;
struct evbuffer;
struct req;
typedef struct json_t json_t;

/* True when the broker runs with a cluster section. */
bool cluster_on(const struct broker *b);

/* __meta: recover (before the local meta log is replayed: the applied
 * position, cutting an unapplied tail), start (after replay: the group, the
 * peer hooks), stop. 0 or an error. */
int cluster_meta_recover(struct broker *b) __attribute__((warn_unused_result));
int cluster_meta_start(struct broker *b) __attribute__((warn_unused_result));
void cluster_stop(struct broker *b);
/* meta_append in a cluster: proposes json to __meta; done(b, arg, err) runs
 * once it is committed and in the local meta log. VERITY_ENOTLEADER when
 * this broker is not the primary of __meta (ready to propose). */
int cluster_meta_submit(struct broker *b, const char *json, void (*done)(struct broker *, void *, int),
                        void *arg) __attribute__((warn_unused_result));
/* Fills bi with the client address of node (0: the __meta primary, when
 * known); false when unknown. host points into the broker's config. */
bool cluster_broker_info(struct broker *b, uint32_t node, Verity__BrokerInfo *bi, char *host,
                         size_t cap);
uint32_t cluster_meta_leader(const struct broker *b);

/* Partitions. replicas: the topic's replication factor. */
bool cluster_part_member(const struct broker *b, uint32_t partition, uint32_t replicas);
/* After the partition's log opened, before the idempotence rebuild:
 * restores the applied position (cutting the log back to it). Then, after
 * the rebuild, cluster_part_start opens the group and the replica. 0 or the
 * error (kept in p->error by the caller). */
int cluster_part_open(struct partition *p) __attribute__((warn_unused_result));
int cluster_part_start(struct partition *p) __attribute__((warn_unused_result));
/* Closes the group; the log is synced and left without a checkpoint. */
void cluster_part_close(struct partition *p);
/* 0 when this broker may take produces for p now; VERITY_ENOTLEADER with
 * *leader (node id, 0 when unknown) otherwise. */
int cluster_part_writable(struct partition *p, uint32_t *leader);
/* Primary node id of p (0 unknown) and the replica node ids (n <= 5). */
uint32_t cluster_part_primary(const struct partition *p);
uint32_t cluster_part_replicas(const struct broker *b, uint32_t partition, uint32_t replicas,
                               uint32_t *out);
/* acks=leader: true when the primary's journal holds the batch ending at end
 * (the write is synchronous in the proposal, so: proposed and not failed). */
bool cluster_part_leader_durable(struct partition *p, uint64_t end);
/* Trace (trace_sample > 0): for the newest own op ending at or below hw, the
 * times the core took it and its prepare was durable in this primary's
 * journal (0 when unknown). */
void cluster_part_trace(const struct partition *p, uint64_t hw, int64_t *t_sub, int64_t *t_dur);

/* __groups: the consumer-group log as one replica group over every broker
 * (replica i = node index i, like __meta; broker/groups_repl.c is the
 * groups side). recover: after the group log opened, before its replay
 * (the applied position, cutting an unapplied tail); start: after the
 * replay; stop: before the group log closes. */
int cluster_groups_recover(struct broker *b) __attribute__((warn_unused_result));
int cluster_groups_start(struct broker *b) __attribute__((warn_unused_result));
void cluster_groups_stop(struct broker *b);
/* True when this broker is the primary of __groups and every op it holds
 * is applied (it may coordinate groups now), with the view. */
bool cluster_groups_ready(struct broker *b, uint64_t *view);
/* Node id of the primary of __groups (0: unknown). */
uint32_t cluster_groups_leader(const struct broker *b);
/* Proposes body (whole group-log batches) in view. 0, VERITY_ENOTLEADER
 * (no longer the primary of that view), VERITY_ELIMIT (too large). */
int cluster_groups_submit(struct broker *b, uint64_t view, const uint8_t *body, uint32_t len)
    __attribute__((warn_unused_result));
json_t *cluster_groups_json(struct broker *b);

/* /cluster rows and /metrics. */
json_t *cluster_part_json(struct partition *p);
json_t *cluster_meta_json(struct broker *b);
void cluster_metrics_render(struct broker *b, struct evbuffer *o);

#endif
