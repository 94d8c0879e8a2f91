/*
 * Single-node replicator: the replica group is this broker alone, so a batch
 * is committed as soon as the local log says it is durable (vlog_durable_end
 * covers it). Invariant: hw never decreases and never exceeds the log's
 * durable end.
 */
#include "broker/replica.h"

#include <errno.h>
#include <stdlib.h>

#include "verity/verify.h"

struct replica_single {
    struct replica base;
    struct vlog *log; /* borrowed */
    uint64_t hw;
};

static int single_propose(struct replica *r, uint8_t *batch, size_t len, int64_t now_ms,
                          struct vlog_append_info *out)
{
    struct replica_single *s = (struct replica_single *)r;
    int rc = vlog_append(s->log, batch, len, now_ms, out);
    if (rc == 0)
        VERITY_VERIFY(out->base_offset >= s->hw);
    return rc;
}

static int single_poll(struct replica *r)
{
    struct replica_single *s = (struct replica_single *)r;
    uint64_t durable = vlog_durable_end(s->log);
    if (durable > s->hw) {
        s->hw = durable;
        if (r->on_commit)
            r->on_commit(r->on_commit_arg, s->hw);
    }
    VERITY_VERIFY(s->hw <= vlog_durable_end(s->log));
    return vlog_error(s->log);
}

static uint64_t single_hw(const struct replica *r)
{
    return ((const struct replica_single *)r)->hw;
}

static void single_free(struct replica *r)
{
    free(r);
}

static const struct replica_ops single_ops = {
    .propose = single_propose,
    .poll = single_poll,
    .high_watermark = single_hw,
    .free = single_free,
};

int replica_single_new(struct vlog *log, replica_commit_fn fn, void *arg, struct replica **out)
{
    struct replica_single *s = calloc(1, sizeof *s);
    if (!s)
        return -ENOMEM;
    s->base.ops = &single_ops;
    s->base.on_commit = fn;
    s->base.on_commit_arg = arg;
    s->log = log;
    s->hw = vlog_durable_end(log);
    *out = &s->base;
    return 0;
}
