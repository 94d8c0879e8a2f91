/*
 * replica: the seam between a partition and its replica group. The broker
 * never writes a partition log directly; it proposes a batch to the
 * partition's replicator and learns from the commit callback when the high
 * watermark moved past it. Consumers (Fetch) read only below the high
 * watermark.
 *
 * The single-node replicator (replica_single_new) is the degenerate group:
 * propose appends to the local log (assigning offsets and chaining), and a
 * batch is committed once the log reports it durable under the topic's
 * policy. A Viewstamped-Replication replicator implements the same ops, with
 * commit meaning "durable on a quorum".
 *
 * Threads: every op runs on the event loop thread. Storage threads only
 * wake the loop (the partition does that); the loop then calls poll.
 */
#ifndef VERITY_BROKER_REPLICA_H
#define VERITY_BROKER_REPLICA_H

#include <stddef.h>
#include <stdint.h>

#include "storage/vlog.h"

struct replica;

/* Called on the loop when the high watermark advanced to hw. */
typedef void (*replica_commit_fn)(void *arg, uint64_t hw);

struct replica_ops {
    /* Orders the validated batch (offsets and chain stamped into the caller's
     * bytes) and starts replicating it. 0 with *out, or the storage error. */
    int (*propose)(struct replica *r, uint8_t *batch, size_t len, int64_t now_ms,
                   struct vlog_append_info *out);
    /* Takes note of progress (storage became durable, a peer answered) and
     * calls the commit callback if the high watermark moved. Returns 0, or
     * the sticky error that stops the group from committing. */
    int (*poll)(struct replica *r);
    uint64_t (*high_watermark)(const struct replica *r);
    void (*free)(struct replica *r);
};

struct replica {
    const struct replica_ops *ops;
    replica_commit_fn on_commit;
    void *on_commit_arg;
};

/*
 * A single-node replicator over log (borrowed; it must outlive the replica).
 * The high watermark starts at the log's durable end. *out is owned by the
 * caller (replica_free). 0 or -ENOMEM.
 */
int replica_single_new(struct vlog *log, replica_commit_fn fn, void *arg, struct replica **out)
    __attribute__((warn_unused_result));

static inline int replica_propose(struct replica *r, uint8_t *batch, size_t len, int64_t now_ms,
                                  struct vlog_append_info *out)
{
    return r->ops->propose(r, batch, len, now_ms, out);
}
static inline int replica_poll(struct replica *r)
{
    return r->ops->poll(r);
}
static inline uint64_t replica_hw(const struct replica *r)
{
    return r->ops->high_watermark(r);
}
static inline void replica_free(struct replica *r)
{
    if (r)
        r->ops->free(r);
}

#endif
