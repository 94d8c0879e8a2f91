/*
 * cluster: replica groups inside verityd (cluster.h, docs/REPLICATION.md
 * "Cluster in verityd").
 *
 * A struct cgroup is one replica group on this broker: its vgroup (core,
 * outbox, journal), the applied-position ring, and what the primary has
 * proposed in its current view. Invariants:
 *
 *  - the data log (partition log, or the node-local meta log for __meta)
 *    holds exactly the ops applied here, in op order; the high watermark of
 *    a replicated partition is the log's end;
 *  - the primary stamps a batch only from a known end: the log end once
 *    every op it holds is applied (vsr_op == commit_min), then the end of
 *    its own proposals in that view ("own": own_start..own_end); when it
 *    leaves that view with proposals not yet applied, every produce waiting
 *    on the partition is failed (the client retries and the idempotent
 *    state answers a batch that did commit as a duplicate) and the
 *    idempotence state, which recorded the proposals eagerly, is rebuilt
 *    from the log;
 *  - an op proposed here in the current view is recorded in the idempotence
 *    state at proposal; every other op when applied.
 */
#include "broker/cluster.h"

#include <errno.h>
#include <stddef.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <jansson.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include "broker/blog.h"
#include "broker/broker_int.h"
#include "broker/group/group_snap.h"
#include "broker/meta_snap.h"
#include "broker/vsr/vapplied.h"
#include "broker/vsr/vgroup.h"
#include "broker/vsr/vsr_wire.h"
#include "broker/vsr/vwriter.h"
#include "broker/vsr/xfer_wire.h"
#include "broker/xfer.h"
#include "storage/batch.h"
#include "storage/vio.h"
#include "verity/errors.h"
#include "broker/vsr_hash.h"
#include "verity/verify.h"

#define META_GROUP      "__meta"
#define GROUPS_GROUP    "__groups"
#define C_SLOTS         4096 /* a replica more than half of it behind needs a state transfer */
#define C_PIPELINE      8
#define C_BODY_MAX      (256u << 10) /* largest replicated op (one or more batches) */
#define C_META_BODY_MAX (64u << 10)
/* __groups: one op holds whole group-log batches; a progress record is
 * emitted by 1 MiB (GROUP_BATCH_BYTES_MAX), so 1.25 MiB takes any of them
 * with its batch framing (the journal's prepares file is sparse). */
#define C_GROUPS_BODY_MAX ((1u << 20) + (256u << 10))
#define C_HEARTBEAT     2  /* ticks of PEER_TICK_MS */
#define C_RETRY         4
#define C_TIMEOUT       20 /* 1 s: sets the failover time */

struct qent { /* a stamped batch not yet taken by the core */
    uint8_t *bytes;
    uint32_t len;
};

struct mpend { /* a __meta op proposed here */
    uint64_t request;
    void (*done)(struct broker *, void *, int);
    void *arg;
    struct mpend *next;
};

struct cgroup {
    struct broker *b;
    char name[VERITY_TOPIC_NAME_MAX + 1];
    uint32_t partition;
    uint8_t n, self;
    uint32_t nodes[VSR_REPLICAS_MAX];
    struct vgroup g;
    bool g_open;
    char dir[BCFG_PATH_MAX + 400]; /* the journal's directory */
    int ring_fd;
    bool ring_dirty;
    uint64_t ring_gen;     /* ring writes so far */
    struct vwjob ring_jb;  /* the tick's sync on the writer (ring_sync_async) */
    bool ring_busy;
    uint64_t ring_jb_gen;  /* ring_gen when it was submitted */
    struct vlog *ring_jb_log;
    struct vsr_state st;
    uint64_t st_end;         /* log end at st */
    struct partition *part;  /* NULL for __meta and __groups */
    bool is_groups;          /* __groups (broker/groups_repl.c) */
    struct replica *rep;     /* the partition's replica (part only) */
    uint64_t hw;             /* part: committed end */
    bool hw_moved;
    /* proposals of this primary in own_view */
    bool own_active;
    uint64_t own_view;
    uint64_t own_start, own_end;
    struct {
        uint64_t op, end; /* an op proposed in own_view and the log end after it */
        int64_t t_sub, t_dur; /* trace only: taken by the core; durable in own journal */
    } own_ops[2 * C_PIPELINE];
    size_t own_ops_next;
    uint8_t own_chain[32];
    struct qent *q;
    size_t qn, qcap;
    uint64_t next_request;
    struct mpend *mp; /* __meta ops proposed here, oldest first */
    /* observability */
    uint64_t acked[VSR_REPLICAS_MAX]; /* highest PREPARE_OK op seen per replica */
    uint64_t last_view;
    uint64_t views_seen;    /* view changes seen here */
    uint64_t abandoned;     /* proposals failed by a view change */
    uint64_t applied;       /* ops applied since start */
    bool error_logged;
    bool rejoining; /* rejoin mode (--rejoin, fresh journal): no vote until caught up */
    bool dirty; /* journal writes wait for the flush event */
    struct xfer xf; /* state transfer (section "state transfer") */
    struct gxfer *gx; /* __groups: a state being copied in, or served (section "__groups") */
    struct cgroup *next;
};

struct cluster {
    uint64_t id;
    struct cgroup *meta;
    struct cgroup *grp;    /* __groups (NULL until groups_open) */
    struct cgroup *groups; /* every group, __meta and __groups included */
    struct vsr_msg *scratch;
    struct event *flush_ev; /* makes the journal writes of a burst of frames durable */
    struct vwriter *wr;     /* journal I/O threads (NULL: writes on the loop) */
    struct event *wr_ev;    /* its finished jobs */
    uint64_t frames_in, frames_unrouted, frames_bad;
};

static struct cluster *CL(const struct broker *b)
{
    return b->cluster;
}

bool cluster_on(const struct broker *b)
{
    return b->cfg.cluster_n > 0;
}

static int64_t wall_us(void)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (int64_t)tv.tv_sec * 1000000 + tv.tv_usec;
}

static int self_index(const struct broker *b)
{
    for (uint32_t i = 0; i < b->cfg.cluster_n; i++)
        if (b->cfg.nodes[i].id == b->cfg.node_id)
            return (int)i;
    return -1;
}

/* ---- placement ------------------------------------------------------------ */

uint32_t cluster_part_replicas(const struct broker *b, uint32_t partition, uint32_t replicas,
                               uint32_t *out)
{
    uint32_t n = b->cfg.cluster_n;
    if (replicas > n)
        replicas = n;
    for (uint32_t i = 0; i < replicas; i++)
        out[i] = b->cfg.nodes[(partition + i) % n].id;
    return replicas;
}

bool cluster_part_member(const struct broker *b, uint32_t partition, uint32_t replicas)
{
    uint32_t ids[VSR_REPLICAS_MAX];
    uint32_t n = cluster_part_replicas(b, partition, replicas ? replicas : 1, ids);
    for (uint32_t i = 0; i < n; i++)
        if (ids[i] == b->cfg.node_id)
            return true;
    return false;
}

/* ---- applied-position ring (broker/vsr/vapplied.h) ------------------------ */

/* The ring's file operations: the broker's (a test build's power-loss
 * layer sees the ring as it sees the logs and journals). */
static const struct vio *ring_io(const struct cgroup *cg)
{
    return cg->b->cfg.io ? cg->b->cfg.io : &vio_posix;
}

static int ring_write(struct cgroup *cg)
{
    uint8_t e[VAPPLIED_ENTRY_SIZE];
    off_t at = (off_t)vapplied_encode(&cg->st, cg->st_end, e);
    int w = vio_pwrite_all(ring_io(cg), cg->ring_fd, e, sizeof e, at);
    if (w)
        return w;
    cg->ring_dirty = true;
    cg->ring_gen++;
    return 0;
}

/* Opens the ring and picks the state for a log whose end is log_end.
 * *found false: no usable entry. */
static int ring_open(struct cgroup *cg, uint64_t log_end, bool *found)
{
    char path[sizeof cg->dir + 16];
    if (mkdir(cg->dir, 0755) && errno != EEXIST)
        return -errno;
    snprintf(path, sizeof path, "%s/applied", cg->dir);
    const struct vio *io = ring_io(cg);
    int fd = io->open(io->ctx, path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0)
        return fd;
    cg->ring_fd = fd;
    uint8_t buf[VAPPLIED_FILE_SIZE];
    ssize_t got = io->pread(io->ctx, cg->ring_fd, buf, sizeof buf, 0);
    if (got < 0)
        return (int)got;
    *found = vapplied_pick(buf, (size_t)got, log_end, &cg->st, &cg->st_end);
    return 0;
}

/* Waits for the tick's sync in flight on the writer, if any. */
static void ring_wait(struct cgroup *cg)
{
    if (!cg->ring_busy)
        return;
    vwriter_wait(cg->b->cluster->wr, &cg->ring_jb);
    cg->ring_busy = false;
}

static void ring_sync(struct cgroup *cg, struct vlog *log)
{
    ring_wait(cg);
    if (!cg->ring_dirty || cg->ring_fd < 0)
        return;
    if (log && vlog_sync(log))
        return;
    if (ring_io(cg)->fdatasync(ring_io(cg)->ctx, cg->ring_fd) == 0)
        cg->ring_dirty = false;
}

/* On a writer thread: the data log (vlog_sync is thread-safe: the log's own
 * commit thread calls it), then the ring. */
static int ring_sync_run(struct vwjob *jb)
{
    struct cgroup *cg = jb->arg;
    int rc = cg->ring_jb_log ? vlog_sync(cg->ring_jb_log) : 0;
    if (rc == 0)
        rc = ring_io(cg)->fdatasync(ring_io(cg)->ctx, cg->ring_fd);
    return rc;
}

static void ring_sync_done(struct vwjob *jb)
{
    struct cgroup *cg = jb->arg;
    cg->ring_busy = false;
    /* a ring write after the submission stays for the next tick */
    if (jb->rc == 0 && cg->ring_gen == cg->ring_jb_gen)
        cg->ring_dirty = false;
}

/* The tick's sync of the data log and the ring, off the loop when there is
 * a writer (the loop then never waits 2-10 ms for it every tick). Ring
 * entries written while it runs may become durable before their log bytes:
 * as with the kernel's own writeback, vapplied_pick ignores an entry whose
 * log end the log does not hold. */
static void ring_sync_async(struct cgroup *cg, struct vlog *log)
{
    struct vwriter *wr = cg->b->cluster->wr;
    if (!wr) {
        ring_sync(cg, log);
        return;
    }
    if (cg->ring_busy || !cg->ring_dirty || cg->ring_fd < 0)
        return;
    memset(&cg->ring_jb, 0, sizeof cg->ring_jb);
    cg->ring_jb.fn = ring_sync_run;
    cg->ring_jb.done = ring_sync_done;
    cg->ring_jb.arg = cg;
    cg->ring_jb_gen = cg->ring_gen;
    cg->ring_jb_log = log;
    cg->ring_busy = true;
    vwriter_submit(wr, &cg->ring_jb);
}

/* ---- the group ---------------------------------------------------------- */

static bool is_primary_normal(const struct cgroup *cg)
{
    return cg->g.core && vsr_status(cg->g.core) == VSR_NORMAL && vsr_is_primary(cg->g.core);
}

static uint32_t primary_node(const struct cgroup *cg)
{
    if (!cg->g.core)
        return 0;
    uint64_t v = vsr_view(cg->g.core);
    if (vsr_status(cg->g.core) != VSR_NORMAL)
        return 0;
    return cg->nodes[v % cg->n];
}

/* state transfer (defined at the end) */
static void xf_want(struct cgroup *cg, uint8_t peer);
static int xf_before_apply(struct cgroup *cg);
static int part_install(void *arg, uint64_t op, const uint8_t checksum[VSR_CHECKSUM_SIZE],
                        const uint8_t digest[VSR_CHECKSUM_SIZE]);

static void cg_send(void *arg, const struct vsr_msg *m)
{
    struct cgroup *cg = arg;
    if (m->to >= cg->n || m->to == cg->self)
        return; /* replies to clients: the shell answers from the apply */
    if (m->type == VSR_MSG_REQUEST_STATE) {
        /* the shell copies the log (a partition) or the state (__meta,
         * __groups) first */
        xf_want(cg, m->to);
        return;
    }
    (void)peer_send(cg->b, cg->nodes[m->to], cg->name, cg->partition, m);
}

static struct vlog *cg_log(struct cgroup *cg)
{
    return cg->part ? cg->part->log : cg->is_groups ? cg->b->groups.log : cg->b->meta.log;
}

static void cg_note_applied(struct cgroup *cg, const struct vsr_commit *c, uint64_t end)
{
    cg->st.op = c->op;
    memcpy(cg->st.checksum, c->header.checksum, 32);
    memcpy(cg->st.digest, c->digest, 32);
    cg->st_end = end;
    cg->applied++;
}

static void cg_abandon(struct cgroup *cg);

/* An op's body is one or more whole batches, back to back (the primary
 * packs what queued while its pipeline was full into one op). */
static int part_apply(void *arg, const struct vsr_commit *c)
{
    struct cgroup *cg = arg;
    struct partition *p = cg->part;
    struct vlog_append_info ai;
    struct batch_hdr h;
    int rc = 0;
    uint64_t end = cg->hw;
    if (!p->log)
        return VERITY_EREADONLY;
    if ((rc = xf_before_apply(cg)))
        return rc;
    /* The core may have left the view this broker proposed in and commit
     * another primary's ops in the same call (a START_VIEW carrying the
     * commit number). Those are not "own" even when they lie past
     * own_start: give up the old view's proposals first (cg_after would,
     * but only after this call), so every op from here on is recorded in
     * the idempotence state as it is applied. Skipping them left a batch
     * committed by the new view out of the idempotence state of a broker
     * that had been primary before: the client's retry was answered
     * EDUPLICATE without offsets, or, with no later batch, appended again
     * (tests/cluster partition scenario, one-way phase). */
    if (cg->own_active && (!is_primary_normal(cg) || vsr_view(cg->g.core) != cg->own_view))
        cg_abandon(cg);
    for (uint32_t pos = 0; pos < c->header.size;) {
        const uint8_t *bp = c->body + pos;
        uint32_t left = c->header.size - pos;
        if ((rc = batch_hdr_decode(bp, left, &h)) == 0 && (h.length > left || h.length == 0))
            rc = VERITY_ECORRUPT;
        /* vlog_append_exact does not modify the bytes */
        if (rc || (rc = vlog_append_exact(p->log, (uint8_t *)(uintptr_t)bp, h.length, &ai))) {
            blog(BLOG_ERROR, "replica_apply_failed",
                 "topic=%s partition=%" PRIu32 " op=%" PRIu64 " error=%s", cg->name,
                 cg->partition, c->op, verity_errname(rc));
            return rc;
        }
        pos += h.length;
        end = ai.last_offset + 1;
        bool own = cg->own_active && ai.base_offset >= cg->own_start;
        if (!own && !(h.attributes & BATCH_ATTR_CONTROL)) {
            int64_t now = now_ms();
            int64_t t = h.max_timestamp < now ? h.max_timestamp : now;
            if ((rc = idem_record(&p->idem, &h, ai.base_offset, ai.last_offset, t)))
                blog(BLOG_ERROR, "idem_record_failed", "topic=%s partition=%" PRIu32 " error=%s",
                     cg->name, cg->partition, verity_errname(rc));
        }
    }
    cg_note_applied(cg, c, end);
    if ((rc = ring_write(cg)))
        return rc;
    cg->hw = end;
    cg->hw_moved = true;
    return 0;
}

static void meta_noop_done(struct broker *b, void *arg, int err)
{
    (void)b;
    (void)arg;
    if (err)
        blog(BLOG_ERROR, "meta_apply_failed", "error=%s", verity_errname(err));
}

static void gx_abandon(struct cgroup *cg);

static int meta_apply(void *arg, const struct vsr_commit *c)
{
    struct cgroup *cg = arg;
    struct broker *b = cg->b;
    struct mpend **pp = &cg->mp, *own = NULL;
    gx_abandon(cg); /* applied from the journal: a state being copied is older */
    if (c->header.client == b->cfg.node_id) {
        for (; *pp; pp = &(*pp)->next)
            if ((*pp)->request == c->header.request) {
                own = *pp;
                *pp = own->next;
                break;
            }
    }
    char *text = malloc((size_t)c->header.size + 1);
    if (!text)
        return -ENOMEM;
    memcpy(text, c->body, c->header.size);
    text[c->header.size] = '\0';
    int rc;
    if (!own) {
        /* someone else's op (or one this broker gave up on): apply it to
         * memory as the replay would, with its side effects */
        if ((rc = meta_apply_live(b, text)) == -ENOMEM) {
            free(text);
            return rc;
        }
    }
    rc = meta_append_local(b, text, own ? own->done : meta_noop_done, own ? own->arg : NULL);
    free(text);
    if (rc) {
        if (own)
            own->done(b, own->arg, rc);
        free(own);
        return rc;
    }
    free(own);
    struct vlog_info info;
    vlog_get_info(b->meta.log, &info);
    cg_note_applied(cg, c, info.end_offset);
    return ring_write(cg);
}

static void cg_io_done(void *arg);
static const struct vgroup_ops part_ops = {cg_send, part_apply, part_install, cg_io_done};
static int meta_install(void *arg, uint64_t op, const uint8_t checksum[VSR_CHECKSUM_SIZE],
                        const uint8_t digest[VSR_CHECKSUM_SIZE]);
static const struct vgroup_ops meta_ops = {cg_send, meta_apply, meta_install, cg_io_done};

static void cg_fail_queue(struct cgroup *cg)
{
    for (size_t i = 0; i < cg->qn; i++)
        free(cg->q[i].bytes);
    cg->qn = 0;
}

/* The primary left the view it proposed in: proposals that were not applied
 * may never be; fail what waits on them. */
static void cg_abandon(struct cgroup *cg)
{
    struct broker *b = cg->b;
    bool pending = cg->qn > 0 || (cg->part ? cg->own_end > cg->hw : cg->mp != NULL);
    cg->own_active = false;
    cg_fail_queue(cg);
    if (!pending)
        return;
    cg->abandoned++;
    blog(BLOG_WARN, "replica_proposals_abandoned",
         "group=%s partition=%" PRIu32 " view=%" PRIu64 " own_end=%" PRIu64 " applied_end=%" PRIu64,
         cg->name, cg->partition, cg->g.core ? vsr_view(cg->g.core) : 0, cg->own_end, cg->hw);
    if (cg->part) {
        struct partition *p = cg->part;
        while (!TAILQ_EMPTY(&p->waits)) {
            struct prod_wait *w = TAILQ_FIRST(&p->waits);
            produce_wait_resolve(w, VERITY_ENOTLEADER, cg->hw);
            VERITY_VERIFY(TAILQ_FIRST(&p->waits) != w);
        }
        int rc = part_rebuild_idem(p);
        if (rc) {
            blog(BLOG_ERROR, "partition_rebuild_failed", "topic=%s partition=%" PRIu32 " error=%s",
                 cg->name, cg->partition, verity_errname(rc));
            p->error = rc;
        }
    } else {
        struct mpend *m;
        while ((m = cg->mp)) {
            cg->mp = m->next;
            m->done(b, m->arg, VERITY_ENOTLEADER);
            free(m);
        }
    }
}

/* Hands queued proposals to the core while it takes them. For a partition,
 * the batches queued while the pipeline was full go as one op (as many as
 * fit in body_max): one journal write and one round for all of them. */
static void cg_pump(struct cgroup *cg)
{
    while (cg->qn && is_primary_normal(cg) && vsr_view(cg->g.core) == cg->own_view) {
        uint64_t before = vsr_op(cg->g.core);
        uint64_t req = cg->next_request + 1;
        size_t take = 1;
        size_t total = cg->q[0].len;
        while ((cg->part || cg->is_groups) && take < cg->qn && total + cg->q[take].len <= cg->g.cfg.body_max)
            total += cg->q[take++].len;
        uint8_t *body = cg->q[0].bytes;
        if (take > 1) {
            if (!(body = malloc(total)))
                break;
            for (size_t i = 0, at = 0; i < take; at += cg->q[i].len, i++)
                memcpy(body + at, cg->q[i].bytes, cg->q[i].len);
        }
        bool took =
            vgroup_submit_deferred(&cg->g, cg->b->cfg.node_id, req, body, (uint32_t)total) &&
            cg->g.core && vsr_op(cg->g.core) != before;
        if (take > 1)
            free(body);
        if (!took)
            break; /* pipeline full: the next commit or tick tries again */
        struct batch_hdr lh;
        if (batch_hdr_decode(cg->q[take - 1].bytes, cg->q[take - 1].len, &lh) == 0) {
            size_t at = cg->own_ops_next++ % (sizeof cg->own_ops / sizeof cg->own_ops[0]);
            cg->own_ops[at].op = vsr_op(cg->g.core);
            cg->own_ops[at].end = lh.base_offset + lh.record_count;
            cg->own_ops[at].t_sub = cg->b->trace ? mono_ns() : 0;
            cg->own_ops[at].t_dur = 0;
        }
        cg->next_request = req;
        for (size_t i = 0; i < take; i++)
            free(cg->q[i].bytes);
        memmove(cg->q, cg->q + take, (cg->qn - take) * sizeof *cg->q);
        cg->qn -= take;
    }
    /* the proposals' journal writes: one flush for everything proposed in
     * this pass of the loop */
    if (!cg->dirty && vgroup_needs_flush(&cg->g) && CL(cg->b)) {
        cg->dirty = true;
        event_active(CL(cg->b)->flush_ev, EV_READ, 0);
    }
}

/* After every call into the group. */
static void gx_try_pending(struct cgroup *cg);

static void cg_after(struct cgroup *cg)
{
    if (cg->gx)
        gx_try_pending(cg); /* before new records are proposed below */
    if (cg->g.core) {
        uint64_t v = vsr_view(cg->g.core);
        if (v != cg->last_view) {
            cg->last_view = v;
            cg->views_seen++;
            memset(cg->acked, 0, sizeof cg->acked);
        }
        if (cg->rejoining && !vsr_rejoining(cg->g.core, NULL)) {
            cg->rejoining = false;
            blog(BLOG_INFO, "replica_rejoined",
                 "group=%s partition=%" PRIu32 " view=%" PRIu64 " applied=%" PRIu64, cg->name,
                 cg->partition, v, vsr_commit_min(cg->g.core));
        }
    }
    if (cg->own_active && (!is_primary_normal(cg) || vsr_view(cg->g.core) != cg->own_view))
        cg_abandon(cg);
    if (cg->own_active)
        cg_pump(cg);
    if (cg->g.error && !cg->error_logged) {
        cg->error_logged = true;
        blog(BLOG_ERROR, "replica_group_stopped", "group=%s partition=%" PRIu32 " error=%s",
             cg->name, cg->partition, verity_errname(cg->g.error));
        if (cg->part)
            part_progress(cg->part); /* poll reports the sticky error */
    }
    if (cg->hw_moved && cg->part) {
        cg->hw_moved = false;
        groups_on_append(cg->part, cg->hw);
        part_progress(cg->part);
    }
    if (cg->is_groups)
        groups_repl_check(cg->b); /* coordinator: step up or down */
}

static struct vsr_config cg_config(const struct cgroup *cg, uint32_t body_max)
{
    struct vsr_config c;
    memset(&c, 0, sizeof c);
    c.cluster = CL(cg->b)->id;
    c.replica = cg->self;
    c.replica_count = cg->n;
    c.slots = C_SLOTS;
    c.pipeline = C_PIPELINE;
    c.body_max = body_max;
    c.heartbeat_ticks = C_HEARTBEAT;
    c.retry_ticks = C_RETRY;
    c.timeout_ticks = C_TIMEOUT;
    c.hash = vsr_sha256;
    /* node-local: the core reads it only when the journal is fresh */
    c.rejoin = cg->b->cfg.rejoin != 0;
    if (RAND_bytes((unsigned char *)&c.rejoin_nonce, sizeof c.rejoin_nonce) != 1)
        c.rejoin_nonce = (uint64_t)wall_us() ^ ((uint64_t)getpid() << 40);
    return c;
}

static int cg_start(struct cgroup *cg, const struct vgroup_ops *ops, uint32_t body_max)
{
    struct vsr_config c = cg_config(cg, body_max);
    int rc = vgroup_open(&cg->g, cg->dir, &c, &cg->st, ops, cg, cg->b->cfg.io);
    if (rc) {
        blog(BLOG_ERROR, "replica_group_open_failed", "group=%s partition=%" PRIu32 " error=%s",
             cg->name, cg->partition, verity_errname(rc));
        vgroup_close(&cg->g);
        return rc;
    }
    cg->g_open = true;
    if (CL(cg->b)->wr)
        vgroup_set_writer(&cg->g, CL(cg->b)->wr);
    cg->last_view = vsr_view(cg->g.core);
    if ((cg->rejoining = vsr_rejoining(cg->g.core, NULL)))
        blog(BLOG_INFO, "replica_rejoining",
             "group=%s partition=%" PRIu32 " applied=%" PRIu64
             " text=\"votes in no view change until caught up\"",
             cg->name, cg->partition, cg->st.op);
    cg->next_request = (uint64_t)wall_us();
    cg_after(cg);
    return 0;
}

static void cg_link(struct cgroup *cg)
{
    struct cluster *cl = CL(cg->b);
    cg->next = cl->groups;
    cl->groups = cg;
}

static void cg_unlink(struct cgroup *cg)
{
    struct cluster *cl = CL(cg->b);
    for (struct cgroup **pp = &cl->groups; *pp; pp = &(*pp)->next)
        if (*pp == cg) {
            *pp = cg->next;
            break;
        }
}

static void gx_free(struct cgroup *cg);

static void cg_free(struct cgroup *cg)
{
    gx_free(cg);
    if (cg->g_open)
        vgroup_close(&cg->g);
    cg->g_open = false;
    ring_wait(cg);
    cg_fail_queue(cg);
    free(cg->q);
    if (cg->ring_fd >= 0) {
        (void)ring_io(cg)->fdatasync(ring_io(cg)->ctx, cg->ring_fd);
        (void)ring_io(cg)->close(ring_io(cg)->ctx, cg->ring_fd);
    }
    struct mpend *m;
    while ((m = cg->mp)) {
        cg->mp = m->next;
        m->done(cg->b, m->arg, VERITY_ECLOSED);
        free(m);
    }
    free(cg);
}

/* Stamps batch from the end of what this primary proposed and queues it.
 * 0 with *out, or VERITY_ENOTLEADER / VERITY_ELIMIT. */
static int cg_propose_prepare(struct cgroup *cg, uint64_t log_end, const uint8_t *chain)
{
    if (!cg->g.core)
        return cg->g.error ? cg->g.error : VERITY_EREADONLY;
    if (!is_primary_normal(cg))
        return VERITY_ENOTLEADER;
    if (!cg->own_active) {
        /* start proposing only once every op this primary holds is applied:
         * then the log end is the end of the replicated log */
        if (vsr_op(cg->g.core) != vsr_commit_min(cg->g.core))
            return VERITY_ENOTLEADER;
        cg->own_active = true;
        cg->own_view = vsr_view(cg->g.core);
        cg->own_start = cg->own_end = log_end;
        memset(cg->own_ops, 0, sizeof cg->own_ops);
        cg->own_ops_next = 0;
        if (chain)
            memcpy(cg->own_chain, chain, 32);
    }
    return 0;
}

static int cg_enqueue(struct cgroup *cg, const uint8_t *bytes, uint32_t len)
{
    if (cg->qn == cg->qcap) {
        size_t cap = cg->qcap ? cg->qcap * 2 : 16;
        struct qent *q = realloc(cg->q, cap * sizeof *q);
        if (!q)
            return -ENOMEM;
        cg->q = q;
        cg->qcap = cap;
    }
    uint8_t *copy = malloc(len ? len : 1);
    if (!copy)
        return -ENOMEM;
    memcpy(copy, bytes, len);
    cg->q[cg->qn++] = (struct qent){copy, len};
    return 0;
}

/* ---- the partition replica (replica.h) ------------------------------------ */

struct replica_vsr {
    struct replica base;
    struct cgroup *cg;
    uint64_t notified; /* hw last handed to on_commit */
};

static int rv_propose(struct replica *r, uint8_t *batch, size_t len, int64_t now,
                      struct vlog_append_info *out)
{
    struct cgroup *cg = ((struct replica_vsr *)r)->cg;
    struct partition *p = cg->part;
    struct batch_hdr h;
    int rc;
    (void)now;
    if (len > C_BODY_MAX)
        return VERITY_ELIMIT;
    if ((rc = batch_hdr_decode(batch, len, &h)))
        return rc;
    struct vlog_info info;
    vlog_get_info(p->log, &info);
    if ((rc = cg_propose_prepare(cg, info.end_offset, info.chain)))
        return rc;
    uint8_t chain[32];
    batch_set_base_offset(batch, cg->own_end);
    batch_chain_compute(cg->own_chain, batch, len, chain);
    batch_set_chain(batch, chain);
    if ((rc = cg_enqueue(cg, batch, (uint32_t)len)))
        return rc;
    out->base_offset = cg->own_end;
    out->last_offset = cg->own_end + h.record_count - 1;
    cg->own_end += h.record_count;
    memcpy(cg->own_chain, chain, 32);
    cg_pump(cg);
    /* the journal write was synchronous: a proposal the core took is durable
     * on this primary now; the caller waits for the commit */
    return 0;
}

static int rv_poll(struct replica *r)
{
    struct replica_vsr *rv = (struct replica_vsr *)r;
    struct cgroup *cg = rv->cg;
    struct partition *p = cg->part;
    if (cg->hw > rv->notified && r->on_commit && p) {
        rv->notified = cg->hw;
        r->on_commit(r->on_commit_arg, cg->hw);
    }
    if (cg->g.error)
        return cg->g.error;
    return p && p->log ? vlog_error(p->log) : 0;
}

static uint64_t rv_hw(const struct replica *r)
{
    return ((const struct replica_vsr *)r)->cg->hw;
}

static void rv_free(struct replica *r)
{
    free(r);
}

static const struct replica_ops vsr_replica_ops = {
    .propose = rv_propose,
    .poll = rv_poll,
    .high_watermark = rv_hw,
    .free = rv_free,
};

/* The log end this primary's own journal holds durably: the end of its
 * highest op proposed in own_view below the lowest op with a journal write
 * not yet durable (a proposed op's prepare is queued when the core takes
 * it, its mark when the prepare is durable; so every proposed op below
 * that one has both durable). 0 when none is known. Queued proposals are
 * no op yet. */
static uint64_t own_held(const struct cgroup *cg)
{
    uint64_t low = vgroup_unsynced_op(&cg->g);
    uint64_t held = 0;
    for (size_t i = 0; i < sizeof cg->own_ops / sizeof cg->own_ops[0]; i++)
        if (cg->own_ops[i].op && cg->own_ops[i].op < low && cg->own_ops[i].end > held)
            held = cg->own_ops[i].end;
    return held;
}

void cluster_part_trace(const struct partition *p, uint64_t hw, int64_t *t_sub, int64_t *t_dur)
{
    const struct cgroup *cg = p->cg;
    *t_sub = *t_dur = 0;
    if (!cg || !cg->own_active)
        return;
    uint64_t best = 0;
    for (size_t i = 0; i < sizeof cg->own_ops / sizeof cg->own_ops[0]; i++)
        if (cg->own_ops[i].op && cg->own_ops[i].end <= hw && cg->own_ops[i].end > best) {
            best = cg->own_ops[i].end;
            *t_sub = cg->own_ops[i].t_sub;
            *t_dur = cg->own_ops[i].t_dur;
        }
}

bool cluster_part_leader_durable(struct partition *p, uint64_t end)
{
    struct cgroup *cg = p->cg;
    /* not held yet: the produce waits (leader_acks or the commit) */
    if (!cg || !cg->own_active || !cg->g.core)
        return false;
    return end <= own_held(cg);
}

int cluster_part_open(struct partition *p)
{
    struct broker *b = p->b;
    struct cgroup *cg = calloc(1, sizeof *cg);
    int rc;
    if (!cg)
        return -ENOMEM;
    cg->b = b;
    cg->ring_fd = -1;
    cg->part = p;
    snprintf(cg->name, sizeof cg->name, "%s", p->topic->name);
    cg->partition = p->id;
    cg->n = (uint8_t)cluster_part_replicas(b, p->id, p->topic->cfg.replicas, cg->nodes);
    for (uint8_t i = 0; i < cg->n; i++)
        if (cg->nodes[i] == b->cfg.node_id)
            cg->self = i;
    snprintf(cg->dir, sizeof cg->dir, "%s/vsr", p->dir);
    struct vlog_info info;
    vlog_get_info(p->log, &info);
    bool found = false;
    if ((rc = ring_open(cg, info.end_offset, &found)))
        goto fail;
    if (!found && info.end_offset > info.start_offset) {
        blog(BLOG_ERROR, "replica_state_missing",
             "topic=%s partition=%" PRIu32 " end=%" PRIu64
             " (the log holds data but no applied position: not a replica's log)",
             cg->name, cg->partition, info.end_offset);
        rc = VERITY_ECORRUPT;
        goto fail;
    }
    if (info.end_offset > cg->st_end) {
        /* applied but its position not recorded (a crash between the two),
         * or a node-local record: cut back, the journal applies it again */
        blog(BLOG_WARN, "replica_log_cut",
             "topic=%s partition=%" PRIu32 " from=%" PRIu64 " to=%" PRIu64, cg->name,
             cg->partition, info.end_offset, cg->st_end);
        if ((rc = vlog_truncate_tail(p->log, cg->st_end, cg->st_end))) {
            /* the part past the applied end spans segments (a state
             * transfer that rolled one, then a crash): the caller moves
             * the log aside and it is fetched again (part_replica_damaged) */
            if (rc == VERITY_EOFFSET)
                rc = VERITY_ECORRUPT;
            goto fail;
        }
    }
    cg->hw = cg->st_end;
    p->cg = cg;
    return 0;
fail:
    if (cg->ring_fd >= 0)
        (void)ring_io(cg)->close(ring_io(cg)->ctx, cg->ring_fd);
    free(cg);
    return rc;
}

int cluster_part_start(struct partition *p)
{
    struct cgroup *cg = p->cg;
    int rc;
    struct replica_vsr *rv = calloc(1, sizeof *rv);
    if (!rv)
        return -ENOMEM;
    uint32_t body = p->topic->cfg.max_message_bytes;
    if (body > C_BODY_MAX)
        body = C_BODY_MAX;
    if ((rc = cg_start(cg, &part_ops, body))) {
        free(rv);
        return rc;
    }
    rv->base.ops = &vsr_replica_ops;
    rv->base.on_commit = part_commit_hook;
    rv->base.on_commit_arg = p;
    rv->cg = cg;
    rv->notified = cg->hw;
    p->replica = &rv->base;
    cg->rep = p->replica;
    cg_link(cg);
    return 0;
}

void cluster_part_close(struct partition *p)
{
    struct cgroup *cg = p->cg;
    if (!cg)
        return;
    if (cg->g_open)
        cg_unlink(cg);
    if (p->log)
        ring_sync(cg, p->log);
    p->cg = NULL;
    cg_free(cg);
}

int cluster_part_writable(struct partition *p, uint32_t *leader)
{
    struct cgroup *cg = p->cg;
    *leader = 0;
    if (!cg) {
        if (p->error == VERITY_ENOTLEADER) {
            uint32_t ids[VSR_REPLICAS_MAX];
            (void)cluster_part_replicas(p->b, p->id, p->topic->cfg.replicas, ids);
            *leader = ids[0]; /* a guess: the client refreshes Metadata */
            return VERITY_ENOTLEADER;
        }
        return 0;
    }
    /* A primary judges sequences (idempotence) and stamps offsets only once
     * it has applied every op it holds: before that its idempotence state
     * lacks batches the old primary committed, and a retry would be taken
     * for out of order (the client then starts a new epoch and writes the
     * batch twice). Not ready yet: NOT_LEADER without a leader, retried. */
    if (is_primary_normal(cg) &&
        (cg->own_active || vsr_op(cg->g.core) == vsr_commit_min(cg->g.core)))
        return 0;
    *leader = primary_node(cg);
    if (*leader == p->b->cfg.node_id)
        *leader = 0;
    return VERITY_ENOTLEADER;
}

uint32_t cluster_part_primary(const struct partition *p)
{
    if (p->cg)
        return primary_node(p->cg);
    return 0;
}

/* ---- __meta ----------------------------------------------------------------- */

static uint64_t cluster_id_of(const struct broker *b)
{
    uint64_t h = 1469598103934665603ull;
    for (uint32_t i = 0; i < b->cfg.cluster_n; i++) {
        char buf[BCFG_NODE_ADDR_MAX + 16];
        int n = snprintf(buf, sizeof buf, "%u=%s;", (unsigned)b->cfg.nodes[i].id,
                         b->cfg.nodes[i].peer);
        for (int k = 0; k < n && k < (int)sizeof buf; k++)
            h = (h ^ (uint8_t)buf[k]) * 1099511628211ull;
    }
    return h ? h : 1;
}

int cluster_meta_recover(struct broker *b)
{
    if (!cluster_on(b))
        return 0;
    int si = self_index(b);
    if (si < 0)
        return VERITY_EINVAL;
    struct cluster *cl = calloc(1, sizeof *cl);
    struct cgroup *cg = calloc(1, sizeof *cg);
    if (cl)
        cl->scratch = calloc(1, sizeof *cl->scratch);
    if (!cl || !cg || !cl->scratch) {
        if (cl)
            free(cl->scratch);
        free(cl);
        free(cg);
        return -ENOMEM;
    }
    cl->id = cluster_id_of(b);
    b->cluster = cl;
    cg->b = b;
    cg->ring_fd = -1;
    snprintf(cg->name, sizeof cg->name, "%s", META_GROUP);
    cg->n = (uint8_t)b->cfg.cluster_n;
    cg->self = (uint8_t)si;
    for (uint32_t i = 0; i < b->cfg.cluster_n; i++)
        cg->nodes[i] = b->cfg.nodes[i].id;
    snprintf(cg->dir, sizeof cg->dir, "%s/__meta/vsr", b->cfg.data_dir);
    cl->meta = cg;
    struct vlog_info info;
    vlog_get_info(b->meta.log, &info);
    bool found = false;
    int rc = ring_open(cg, info.end_offset, &found);
    if (rc)
        return rc;
    if (found && info.end_offset > cg->st_end) {
        blog(BLOG_WARN, "meta_log_cut", "from=%" PRIu64 " to=%" PRIu64, info.end_offset,
             cg->st_end);
        if ((rc = vlog_truncate_tail(b->meta.log, cg->st_end, cg->st_end)))
            return rc;
    }
    /* without an entry: a fresh broker, or one whose records came before
     * the cluster (kept as they are; the group's ops follow them), or one
     * whose first op was a state transfer cut short before it was recorded
     * (its mark goes) */
    if (!found)
        return meta_state_unstage(b);
    return 0;
}

static void on_msg(struct broker *b, uint32_t from, const struct vsr_wire_frame *f);
static void on_xfer(struct broker *b, uint32_t from, const struct vsr_wire_frame *f);
static void on_tick(struct broker *b);
static void on_down(struct broker *b, uint32_t node);
static void flush_cb(evutil_socket_t fd, short what, void *arg);
static void wr_cb(evutil_socket_t fd, short what, void *arg);

/* Journal I/O threads: $VERITY_JOURNAL_THREADS (0 = every journal write on
 * the event loop, as before; default 2: a group's prepares and header
 * marks sync in parallel). */
static int writer_start(struct broker *b)
{
    struct cluster *cl = CL(b);
    int threads = 2;
    const char *e = getenv("VERITY_JOURNAL_THREADS");
    if (e && *e) {
        char *end;
        long v = strtol(e, &end, 10);
        if (*end || v < 0 || v > VWRITER_THREADS_MAX) {
            blog(BLOG_ERROR, "journal_threads_bad", "value=%s max=%d", e, VWRITER_THREADS_MAX);
            return VERITY_EINVAL;
        }
        threads = (int)v;
    }
    if (threads == 0)
        return 0;
    int rc = vwriter_open(&cl->wr, threads);
    if (rc)
        return rc;
    cl->wr_ev = event_new(b->base, vwriter_fd(cl->wr), EV_READ | EV_PERSIST, wr_cb, b);
    if (!cl->wr_ev || event_add(cl->wr_ev, NULL)) {
        if (cl->wr_ev)
            event_free(cl->wr_ev);
        cl->wr_ev = NULL;
        vwriter_close(cl->wr);
        cl->wr = NULL;
        return -ENOMEM;
    }
    return 0;
}

int cluster_meta_start(struct broker *b)
{
    struct cluster *cl = CL(b);
    if (!cl)
        return 0;
    if (!(cl->flush_ev = event_new(b->base, -1, 0, flush_cb, b)))
        return -ENOMEM;
    int wrc = writer_start(b);
    if (wrc)
        return wrc;
    int rc = cg_start(cl->meta, &meta_ops, C_META_BODY_MAX);
    if (rc)
        return rc;
    cg_link(cl->meta);
    b->peers.on_msg = on_msg;
    b->peers.on_xfer = on_xfer;
    b->peers.on_tick = on_tick;
    b->peers.on_down = on_down;
    return 0;
}

void cluster_stop(struct broker *b)
{
    struct cluster *cl = CL(b);
    if (!cl)
        return;
    b->peers.on_msg = NULL;
    b->peers.on_xfer = NULL;
    b->peers.on_tick = NULL;
    b->peers.on_down = NULL;
    cluster_groups_stop(b);
    if (cl->meta) {
        cg_unlink(cl->meta);
        if (b->meta.log)
            ring_sync(cl->meta, b->meta.log);
        cg_free(cl->meta);
        cl->meta = NULL;
    }
    if (cl->flush_ev)
        event_free(cl->flush_ev);
    if (cl->wr_ev)
        event_free(cl->wr_ev);
    vwriter_close(cl->wr); /* every group is closed: no job in flight */
    free(cl->scratch);
    free(cl);
    b->cluster = NULL;
}

uint32_t cluster_meta_leader(const struct broker *b)
{
    struct cluster *cl = CL(b);
    return cl && cl->meta ? primary_node(cl->meta) : 0;
}

int cluster_meta_submit(struct broker *b, const char *json,
                        void (*done)(struct broker *, void *, int), void *arg)
{
    struct cluster *cl = CL(b);
    struct cgroup *cg = cl ? cl->meta : NULL;
    size_t len = strlen(json);
    int rc;
    if (!cg)
        return VERITY_EREADONLY;
    if (len > C_META_BODY_MAX)
        return VERITY_ELIMIT;
    if ((rc = cg_propose_prepare(cg, 0, NULL)))
        return rc;
    struct mpend *m = calloc(1, sizeof *m);
    if (!m || cg_enqueue(cg, (const uint8_t *)json, (uint32_t)len)) {
        free(m);
        return -ENOMEM;
    }
    m->done = done;
    m->arg = arg;
    /* the request number the pump gives this entry: one per queued entry */
    m->request = cg->next_request + cg->qn;
    struct mpend **pp = &cg->mp;
    while (*pp)
        pp = &(*pp)->next;
    *pp = m;
    cg_pump(cg);
    return 0;
}

bool cluster_broker_info(struct broker *b, uint32_t node, Verity__BrokerInfo *bi, char *host,
                         size_t cap)
{
    if (node == 0) {
        node = cluster_meta_leader(b);
        if (node == b->cfg.node_id)
            return false; /* primary but not ready: the client retries here */
    }
    for (uint32_t i = 0; node && i < b->cfg.cluster_n; i++) {
        if (b->cfg.nodes[i].id != node)
            continue;
        uint16_t port = 0;
        if (bcfg_split_hostport(b->cfg.nodes[i].listen, host, cap, &port))
            return false;
        bi->node_id = node;
        bi->host = host;
        bi->port = port;
        return true;
    }
    return false;
}

/* ---- routing and the tick ------------------------------------------------- */

static struct cgroup *route(struct broker *b, const struct vsr_wire_frame *f)
{
    struct cluster *cl = CL(b);
    char name[VERITY_TOPIC_NAME_MAX + 1];
    if (f->group_len == 0 || f->group_len > VERITY_TOPIC_NAME_MAX)
        return NULL;
    memcpy(name, f->group, f->group_len);
    name[f->group_len] = '\0';
    if (strcmp(name, META_GROUP) == 0)
        return f->partition == 0 ? cl->meta : NULL;
    if (strcmp(name, GROUPS_GROUP) == 0)
        return f->partition == 0 && cl->grp && cl->grp->g_open ? cl->grp : NULL;
    struct topic *t = topic_find(b, name);
    if (!t || !t->ready || t->deleting || f->partition >= t->cfg.partitions)
        return NULL;
    struct partition *p = t->parts[f->partition];
    return p && p->cg && p->cg->g_open ? p->cg : NULL;
}

static void on_msg(struct broker *b, uint32_t from, const struct vsr_wire_frame *f)
{
    struct cluster *cl = CL(b);
    if (!cl)
        return;
    cl->frames_in++;
    struct cgroup *cg = route(b, f);
    if (!cg) {
        cl->frames_unrouted++;
        return;
    }
    struct vsr_msg *m = cl->scratch;
    if (vsr_wire_decode(f->payload, f->payload_len, m)) {
        cl->frames_bad++;
        return;
    }
    if (m->to != cg->self || m->from >= cg->n || cg->nodes[m->from] != from ||
        m->cluster != cl->id) {
        cl->frames_bad++;
        return;
    }
    if (m->type == VSR_MSG_STATE || m->type == VSR_MSG_REQUEST_STATE) {
        /* a group's state moves only through the shell's transfer
         * (sections "state transfer", "__groups state transfer"): a bare
         * STATE names an op whose bytes or state this replica does not
         * hold */
        cl->frames_bad++;
        return;
    }
    if (m->type == VSR_MSG_PREPARE_OK && m->op > cg->acked[m->from])
        cg->acked[m->from] = m->op;
    vgroup_on_message_deferred(&cg->g, m);
    if (!cg->dirty && vgroup_needs_flush(&cg->g)) {
        cg->dirty = true;
        event_active(cl->flush_ev, EV_READ, 0);
    }
    /* Catch-up (a backup back from a restart) is the core's: it asks for
     * the headers of the ops it lacks (REQUEST_HEADERS) and keeps a window
     * of repairs in flight (docs/REPLICATION.md "Catch-up"). */
    cg_after(cg);
}

/* acks=leader: the produces whose batches this primary's journal now holds
 * (proposed, taken by the core, every journal write done) are answered
 * without waiting for the commit. */
static void leader_acks(struct cgroup *cg)
{
    struct partition *p = cg->part;
    if (!cg->own_active || !cg->g.core)
        return;
    uint64_t held = own_held(cg);
    /* resolving may free the request and its other waits: rescan */
    for (bool again = true; again;) {
        again = false;
        struct prod_wait *w;
        TAILQ_FOREACH(w, &p->waits, link)
        {
            if (w->end > held)
                break;
            if (w->leader_ack && !w->resolve && w->end > cg->hw) {
                produce_wait_resolve(w, 0, cg->hw);
                again = true;
                break;
            }
        }
    }
}

/* After a burst of frames: every dirty group's journal writes, one
 * fdatasync per file and group. */
static void flush_cb(evutil_socket_t fd, short what, void *arg)
{
    struct broker *b = arg;
    struct cluster *cl = CL(b);
    (void)fd;
    (void)what;
    if (!cl)
        return;
    for (struct cgroup *cg = cl->groups; cg; cg = cg->next) {
        if (!cg->dirty)
            continue;
        cg->dirty = false;
        vgroup_flush(&cg->g);
        cg_after(cg);
        if (cg->part)
            leader_acks(cg);
    }
}

/* Journal jobs finished on the I/O threads: vwriter_reap feeds them to
 * their groups (vgroup's stream_done), each then calls cg_io_done. */
static void wr_cb(evutil_socket_t fd, short what, void *arg)
{
    struct broker *b = arg;
    (void)fd;
    (void)what;
    if (CL(b) && CL(b)->wr)
        (void)vwriter_reap(CL(b)->wr);
}

static void cg_io_done(void *arg)
{
    struct cgroup *cg = arg;
    if (cg->b->trace && cg->own_active && cg->g.core) {
        uint64_t low = vgroup_unsynced_op(&cg->g);
        int64_t now = mono_ns();
        for (size_t i = 0; i < sizeof cg->own_ops / sizeof cg->own_ops[0]; i++)
            if (cg->own_ops[i].op && cg->own_ops[i].op < low && !cg->own_ops[i].t_dur)
                cg->own_ops[i].t_dur = now;
    }
    cg_after(cg);
    if (cg->part)
        leader_acks(cg);
}

static void on_tick(struct broker *b)
{
    struct cluster *cl = CL(b);
    if (!cl)
        return;
    for (struct cgroup *cg = cl->groups; cg; cg = cg->next) {
        cg->dirty = false; /* the tick drains every pending write */
        if (cg->xf.active && xfer_mono_ms() - cg->xf.last_ms > XFER_STALL_MS) {
            cg->xf.active = false; /* the peer died or fell silent: the core's next
                                    * REQUEST_STATE names another */
            cg->xf.stalled++;
            blog(BLOG_WARN, "replica_state_transfer_stalled",
                 "topic=%s partition=%" PRIu32 " peer=%" PRIu32 " bytes=%" PRIu64, cg->name,
                 cg->partition, cg->nodes[cg->xf.peer], cg->xf.bytes);
        }
        vgroup_tick(&cg->g);
        cg_after(cg);
        ring_sync_async(cg, cg_log(cg));
    }
}

/* The link to node closed (EOF or error: its process died, kill -9 closes
 * its sockets at once). Every group whose primary it is times out shortly
 * (vsr_on_peer_lost: VSR_LOST_GRACE_TICKS plus the replica's stagger)
 * instead of timeout_ticks after its last message: the failover then
 * starts about 0.8 s sooner. A silent link (a paused broker) still waits
 * for the timeout. */
static void on_down(struct broker *b, uint32_t node)
{
    struct cluster *cl = CL(b);
    if (!cl)
        return;
    for (struct cgroup *cg = cl->groups; cg; cg = cg->next) {
        for (uint32_t i = 0; i < cg->n; i++) {
            if (cg->nodes[i] != node || i == cg->self)
                continue;
            vgroup_peer_lost(&cg->g, (uint8_t)i);
            cg_after(cg);
        }
    }
}

/* ---- observability ---------------------------------------------------------- */

static const char *role_of(const struct cgroup *cg)
{
    if (!cg->g.core)
        return "stopped";
    switch (vsr_status(cg->g.core)) {
    case VSR_NORMAL:
        return vsr_is_primary(cg->g.core) ? "primary" : "backup";
    case VSR_VIEW_CHANGE:
        return "view_change";
    default:
        return "recovering";
    }
}

static json_t *cg_json(struct cgroup *cg)
{
    json_t *replicas = json_array(), *backups = json_array();
    for (uint8_t i = 0; i < cg->n; i++)
        json_array_append_new(replicas, json_integer(cg->nodes[i]));
    uint64_t view = 0, op = 0, cmax = 0, cmin = 0;
    if (cg->g.core) {
        view = vsr_view(cg->g.core);
        op = vsr_op(cg->g.core);
        cmax = vsr_commit_max(cg->g.core);
        cmin = vsr_commit_min(cg->g.core);
    }
    if (is_primary_normal(cg)) {
        for (uint8_t i = 0; i < cg->n; i++) {
            if (i == cg->self)
                continue;
            uint64_t lag = op > cg->acked[i] ? op - cg->acked[i] : 0;
            json_array_append_new(backups, json_pack("{s:i,s:I,s:I}", "id", (int)cg->nodes[i],
                                                     "acked", (json_int_t)cg->acked[i], "lag",
                                                     (json_int_t)lag));
        }
    }
    uint64_t target = 0;
    bool rejoining = cg->g.core && vsr_rejoining(cg->g.core, &target);
    const struct xfer *x = &cg->xf;
    json_t *j = json_pack("{s:s,s:i,s:o,s:i,s:I,s:s,s:I,s:I,s:I,s:I,s:o,s:b,s:I}", "topic", cg->name,
                     "partition", (int)cg->partition, "replicas", replicas, "primary",
                     (int)primary_node(cg), "view", (json_int_t)view, "role", role_of(cg),
                     "commit", (json_int_t)cmax, "op", (json_int_t)op, "applied",
                     (json_int_t)cmin, "end", (json_int_t)cg->st_end, "backups", backups,
                     "rejoining", rejoining, "rejoin_target", (json_int_t)target);
    if (j)
        json_object_set_new(j, "state_transfers",
                            json_pack("{s:I,s:I,s:I,s:I,s:b}", "done", (json_int_t)x->done,
                                      "failed", (json_int_t)x->failed, "stalled",
                                      (json_int_t)x->stalled, "bytes_in", (json_int_t)x->bytes_in,
                                      "active", x->active));
    return j;
}

json_t *cluster_part_json(struct partition *p)
{
    if (!p->cg || !p->cg->g_open)
        return NULL;
    return cg_json(p->cg);
}

json_t *cluster_meta_json(struct broker *b)
{
    struct cluster *cl = CL(b);
    return cl && cl->meta ? cg_json(cl->meta) : NULL;
}

void cluster_metrics_render(struct broker *b, struct evbuffer *o)
{
    struct cluster *cl = CL(b);
    if (!cl)
        return;
    met_family(o, "verity_cluster_frames_total", "counter",
               "Replica-group frames received from peers, by outcome (routed, unrouted: no such "
               "group here, bad: undecodable or not from a member).");
    evbuffer_add_printf(o, "verity_cluster_frames_total{outcome=\"routed\"} %" PRIu64 "\n",
                        cl->frames_in - cl->frames_unrouted - cl->frames_bad);
    evbuffer_add_printf(o, "verity_cluster_frames_total{outcome=\"unrouted\"} %" PRIu64 "\n",
                        cl->frames_unrouted);
    evbuffer_add_printf(o, "verity_cluster_frames_total{outcome=\"bad\"} %" PRIu64 "\n",
                        cl->frames_bad);
    met_family(o, "verity_replica_role", "gauge",
               "1 for the role this broker has in the replica group (primary, backup, "
               "view_change, recovering, stopped).");
    for (struct cgroup *cg = cl->groups; cg; cg = cg->next)
        evbuffer_add_printf(o, "verity_replica_role{group=\"%s\",partition=\"%u\",role=\"%s\"} 1\n",
                            cg->name, (unsigned)cg->partition, role_of(cg));
    met_family(o, "verity_replica_view", "gauge", "Current view of the replica group here.");
    for (struct cgroup *cg = cl->groups; cg; cg = cg->next)
        evbuffer_add_printf(o, "verity_replica_view{group=\"%s\",partition=\"%u\"} %" PRIu64 "\n",
                            cg->name, (unsigned)cg->partition,
                            cg->g.core ? vsr_view(cg->g.core) : 0);
    met_family(o, "verity_replica_commit", "gauge",
               "Highest op known committed (commit_max) in the replica group.");
    for (struct cgroup *cg = cl->groups; cg; cg = cg->next)
        evbuffer_add_printf(o, "verity_replica_commit{group=\"%s\",partition=\"%u\"} %" PRIu64 "\n",
                            cg->name, (unsigned)cg->partition,
                            cg->g.core ? vsr_commit_max(cg->g.core) : 0);
    met_family(o, "verity_replica_applied", "gauge", "Highest op applied here (commit_min).");
    for (struct cgroup *cg = cl->groups; cg; cg = cg->next)
        evbuffer_add_printf(o, "verity_replica_applied{group=\"%s\",partition=\"%u\"} %" PRIu64 "\n",
                            cg->name, (unsigned)cg->partition,
                            cg->g.core ? vsr_commit_min(cg->g.core) : 0);
    met_family(o, "verity_replica_backup_lag", "gauge",
               "On a primary: ops between its head and the highest op each backup acknowledged.");
    for (struct cgroup *cg = cl->groups; cg; cg = cg->next) {
        if (!is_primary_normal(cg))
            continue;
        uint64_t op = vsr_op(cg->g.core);
        for (uint8_t i = 0; i < cg->n; i++)
            if (i != cg->self)
                evbuffer_add_printf(
                    o, "verity_replica_backup_lag{group=\"%s\",partition=\"%u\",node=\"%u\"} %" PRIu64
                       "\n",
                    cg->name, (unsigned)cg->partition, (unsigned)cg->nodes[i],
                    op > cg->acked[i] ? op - cg->acked[i] : 0);
    }
    met_family(o, "verity_replica_view_changes_total", "counter",
               "Views this broker saw the replica group move to since start.");
    for (struct cgroup *cg = cl->groups; cg; cg = cg->next)
        evbuffer_add_printf(o,
                            "verity_replica_view_changes_total{group=\"%s\",partition=\"%u\"} %" PRIu64
                            "\n",
                            cg->name, (unsigned)cg->partition, cg->views_seen);
    met_family(o, "verity_replica_repairs_total", "counter",
               "Journal entries this replica repaired from a peer since start.");
    for (struct cgroup *cg = cl->groups; cg; cg = cg->next)
        evbuffer_add_printf(o, "verity_replica_repairs_total{group=\"%s\",partition=\"%u\"} %" PRIu64
                               "\n",
                            cg->name, (unsigned)cg->partition,
                            cg->g.core ? vsr_counters(cg->g.core)->repairs : 0);
    met_family(o, "verity_replica_state_transfers_total", "counter",
               "State transfers this replica made as the lagging side (the committed log copied "
               "from a peer, then installed; for __groups the coordinator's state, for __meta a "
               "peer's metadata state), by outcome: done, failed (a bad chunk, a peer "
               "behind or refusing, or abandoned because the journal caught up), stalled (the "
               "peer fell silent; the next peer continues).");
    for (struct cgroup *cg = cl->groups; cg; cg = cg->next) {
        static const char *const outcome[] = {"done", "failed", "stalled"};
        uint64_t v[] = {cg->xf.done, cg->xf.failed, cg->xf.stalled};
        for (int k = 0; k < 3; k++)
            evbuffer_add_printf(o,
                                "verity_replica_state_transfers_total{group=\"%s\",partition=\"%u\","
                                "outcome=\"%s\"} %" PRIu64 "\n",
                                cg->name, (unsigned)cg->partition, outcome[k], v[k]);
    }
    met_family(o, "verity_replica_state_transfer_bytes_total", "counter",
               "Log bytes moved by state transfers: in (copied here from a peer), out (served "
               "to a lagging peer).");
    for (struct cgroup *cg = cl->groups; cg; cg = cg->next) {
        evbuffer_add_printf(o,
                            "verity_replica_state_transfer_bytes_total{group=\"%s\",partition=\"%u\","
                            "direction=\"in\"} %" PRIu64 "\n",
                            cg->name, (unsigned)cg->partition, cg->xf.bytes_in);
        evbuffer_add_printf(o,
                            "verity_replica_state_transfer_bytes_total{group=\"%s\",partition=\"%u\","
                            "direction=\"out\"} %" PRIu64 "\n",
                            cg->name, (unsigned)cg->partition, cg->xf.bytes_out);
    }
    met_family(o, "verity_replica_abandoned_total", "counter",
               "Times a primary left its view with proposals not applied (their produces failed "
               "with NOT_LEADER).");
    for (struct cgroup *cg = cl->groups; cg; cg = cg->next)
        evbuffer_add_printf(o, "verity_replica_abandoned_total{group=\"%s\",partition=\"%u\"} %" PRIu64
                               "\n",
                            cg->name, (unsigned)cg->partition, cg->abandoned);
}

/* ---- state transfer (broker/xfer.h) ------------------------------------------ */

static void xf_send(struct cgroup *cg, uint8_t to, struct xfer_msg *m)
{
    m->from = cg->self;
    m->to = to;
    m->cluster = CL(cg->b)->id;
    size_t n = xfer_wire_size(m);
    uint8_t *buf = n ? malloc(n) : NULL;
    if (!buf)
        return;
    if (xfer_wire_encode(m, buf, n) == n &&
        !peer_send_payload(cg->b, cg->nodes[to], VSR_WIRE_XFER, cg->name, cg->partition, buf, n) &&
        m->type == XFER_GET)
        cg->xf.last_ms = 0; /* link down: count it stalled on the next tick */
    free(buf);
}

static void xf_get(struct cgroup *cg)
{
    struct vlog_info info;
    vlog_get_info(cg->part->log, &info);
    struct xfer_msg m;
    memset(&m, 0, sizeof m);
    m.type = XFER_GET;
    m.xid = cg->xf.xid;
    m.from_offset = info.end_offset;
    m.max_bytes = XFER_CHUNK_MAX;
    xf_send(cg, cg->xf.peer, &m);
}

/* Cuts what a transfer copied past the applied position. */
static int xf_cut_back(struct cgroup *cg)
{
    struct vlog_info info;
    vlog_get_info(cg->part->log, &info);
    if (info.end_offset <= cg->st_end)
        return 0;
    ring_wait(cg); /* its vlog_sync must not meet the truncation */
    int rc = vlog_truncate_tail(cg->part->log, cg->st_end, cg->st_end);
    if (rc)
        blog(BLOG_ERROR, "replica_state_transfer_cut_failed",
             "topic=%s partition=%" PRIu32 " from=%" PRIu64 " to=%" PRIu64 " error=%s", cg->name,
             cg->partition, info.end_offset, cg->st_end, verity_errname(rc));
    return rc;
}

static void xf_fail(struct cgroup *cg, int err, const char *why)
{
    struct xfer *x = &cg->xf;
    x->active = false;
    x->failed++;
    x->last_error = err;
    blog(BLOG_WARN, "replica_state_transfer_failed",
         "topic=%s partition=%" PRIu32 " peer=%" PRIu32 " reason=%s error=%s bytes=%" PRIu64,
         cg->name, cg->partition, cg->nodes[x->peer], why, verity_errname(err), x->bytes);
    (void)xf_cut_back(cg);
}

/* The core asked a peer for a state (REQUEST_STATE to replica peer): copy
 * the log from that peer first. The core asks once per retry period,
 * naming the peers in turn, so a transfer whose peer stalled is taken up
 * by the next one (from the log end reached so far). */
static void gx_want(struct cgroup *cg, uint8_t peer);

static void xf_want(struct cgroup *cg, uint8_t peer)
{
    struct xfer *x = &cg->xf;
    if (!cg->part) { /* __meta, __groups: the state, not the log */
        gx_want(cg, peer);
        return;
    }
    if (x->active || cg->g.error || !cg->part->log || peer >= cg->n)
        return;
    struct vlog_info info;
    vlog_get_info(cg->part->log, &info);
    x->active = true;
    x->peer = peer;
    x->xid = (uint64_t)wall_us() ^ ((uint64_t)x->started << 40);
    x->started_ms = x->last_ms = xfer_mono_ms();
    x->from_end = info.end_offset;
    x->bytes = 0;
    x->started++;
    blog(BLOG_INFO, "replica_state_transfer_started",
         "topic=%s partition=%" PRIu32 " peer=%" PRIu32 " applied=%" PRIu64 " from=%" PRIu64,
         cg->name, cg->partition, cg->nodes[peer], cg->g.core ? vsr_commit_min(cg->g.core) : 0,
         info.end_offset);
    xf_get(cg);
}

/* Before the core applies an op: bytes a transfer copied past the applied
 * position go (the op's batches start at the applied end). */
static int xf_before_apply(struct cgroup *cg)
{
    struct vlog_info info;
    vlog_get_info(cg->part->log, &info);
    if (info.end_offset <= cg->st_end)
        return 0;
    if (cg->xf.active) {
        cg->xf.active = false;
        cg->xf.failed++;
        blog(BLOG_INFO, "replica_state_transfer_abandoned",
             "topic=%s partition=%" PRIu32 " reason=applied_from_journal", cg->name,
             cg->partition);
    }
    return xf_cut_back(cg);
}

/* The core installs the state the shell handed it: the log is already
 * there; record the position. */
static int part_install(void *arg, uint64_t op, const uint8_t checksum[VSR_CHECKSUM_SIZE],
                        const uint8_t digest[VSR_CHECKSUM_SIZE])
{
    struct cgroup *cg = arg;
    struct xfer *x = &cg->xf;
    if (!x->installing || op != x->inst_op)
        return VERITY_EUNSUPPORTED; /* a state this shell did not copy */
    struct vlog_info info;
    vlog_get_info(cg->part->log, &info);
    if (memcmp(info.chain, x->inst_chain, 32) != 0 || info.end_offset != x->inst_end)
        return VERITY_ECHAIN;
    cg->st.op = op;
    memcpy(cg->st.checksum, checksum, 32);
    memcpy(cg->st.digest, digest, 32);
    cg->st_end = info.end_offset;
    int rc = ring_write(cg);
    if (rc)
        return rc;
    cg->hw = cg->st_end;
    cg->hw_moved = true;
    /* the copied batches are in no idempotence state yet */
    if ((rc = part_rebuild_idem(cg->part))) {
        blog(BLOG_ERROR, "partition_rebuild_failed", "topic=%s partition=%" PRIu32 " error=%s",
             cg->name, cg->partition, verity_errname(rc));
        return rc;
    }
    return 0;
}

/* Hands the core a STATE for op (the shell holds what it names); the core
 * calls the group's install op from inside, with x->installing set. True
 * when the core took it (applied through op, position recorded). */
static bool xf_hand_state(struct cgroup *cg, uint8_t from, uint64_t op,
                          const uint8_t checksum[VSR_CHECKSUM_SIZE],
                          const uint8_t digest[VSR_CHECKSUM_SIZE])
{
    struct vsr_msg *q = CL(cg->b)->scratch;
    memset(q, 0, offsetof(struct vsr_msg, window));
    q->type = VSR_MSG_STATE;
    q->from = from;
    q->to = cg->self;
    q->cluster = CL(cg->b)->id;
    q->view = vsr_view(cg->g.core);
    q->commit = op;
    q->op = op;
    memcpy(q->checksum, checksum, VSR_CHECKSUM_SIZE);
    memcpy(q->digest, digest, VSR_CHECKSUM_SIZE);
    cg->xf.installing = true;
    cg->xf.inst_op = op;
    vgroup_on_message(&cg->g, q);
    cg->xf.installing = false;
    return cg->g.core && vsr_commit_min(cg->g.core) >= op && cg->st.op >= op;
}

static void xf_install(struct cgroup *cg, const struct xfer_msg *m)
{
    struct xfer *x = &cg->xf;
    uint64_t before = vsr_commit_min(cg->g.core);
    x->inst_end = m->end;
    memcpy(x->inst_chain, m->chain, 32);
    if (!xf_hand_state(cg, m->from, m->op, m->checksum, m->digest)) {
        xf_fail(cg, cg->g.error ? cg->g.error : VERITY_EINVAL, "core_refused");
        return;
    }
    x->active = false;
    x->done++;
    blog(BLOG_INFO, "replica_state_transferred",
         "topic=%s partition=%" PRIu32 " peer=%" PRIu32 " ops=%" PRIu64 " op=%" PRIu64
         " end=%" PRIu64 " bytes=%" PRIu64 " ms=%" PRId64,
         cg->name, cg->partition, cg->nodes[x->peer], m->op - before, m->op, cg->st_end, x->bytes,
         xfer_mono_ms() - x->started_ms);
}

static void xf_on_data(struct cgroup *cg, const struct xfer_msg *m)
{
    struct xfer *x = &cg->xf;
    if (!x->active || m->xid != x->xid || m->from != x->peer || !cg->g.core)
        return; /* an answer to a transfer given up */
    struct vlog_info info;
    vlog_get_info(cg->part->log, &info);
    if (m->from_offset != info.end_offset)
        return;
    x->last_ms = xfer_mono_ms();
    if (m->end < info.end_offset) {
        xf_fail(cg, VERITY_EOFFSET, "peer_behind");
        return;
    }
    int rc = xfer_append_chunk(cg->part->log, m->data, m->len);
    if (rc) {
        x->bad++;
        xf_fail(cg, rc, "bad_chunk");
        return;
    }
    x->bytes += m->len;
    x->bytes_in += m->len;
    vlog_get_info(cg->part->log, &info);
    if (info.end_offset < m->end) {
        if (m->len == 0) {
            x->bad++;
            xf_fail(cg, VERITY_EPROTO, "no_progress");
        } else {
            xf_get(cg);
        }
        return;
    }
    if (info.end_offset > m->end) {
        x->bad++;
        xf_fail(cg, VERITY_EPROTO, "past_end");
        return;
    }
    if (memcmp(info.chain, m->chain, 32) != 0) {
        x->bad++;
        xf_fail(cg, VERITY_ECHAIN, "chain_mismatch");
        return;
    }
    if (m->op <= vsr_commit_min(cg->g.core)) {
        /* nothing newer than what is applied here */
        if (info.end_offset == cg->st_end)
            x->active = false;
        else
            xf_fail(cg, VERITY_EINVAL, "not_newer");
        return;
    }
    xf_install(cg, m);
}

static void xf_serve(struct cgroup *cg, const struct xfer_msg *m)
{
    struct xfer_msg a;
    memset(&a, 0, sizeof a);
    a.xid = m->xid;
    uint8_t *buf = NULL;
    size_t len = 0;
    int rc = 0;
    if (!cg->part || !cg->part->log || !cg->g.core)
        rc = VERITY_EUNSUPPORTED;
    else if (m->from_offset > cg->st_end)
        rc = VERITY_EOFFSET;
    else if (!(buf = malloc(m->max_bytes)))
        rc = -ENOMEM;
    else
        rc = xfer_read_chunk(cg->part->log, m->from_offset, cg->st_end, buf, m->max_bytes, &len);
    if (rc) {
        a.type = XFER_ERR;
        a.code = rc < 0 ? rc : VERITY_EINVAL;
    } else {
        a.type = XFER_DATA;
        a.op = cg->st.op;
        memcpy(a.checksum, cg->st.checksum, 32);
        memcpy(a.digest, cg->st.digest, 32);
        struct vlog_info li;
        vlog_get_info(cg->part->log, &li);
        if (li.end_offset == cg->st_end) {
            memcpy(a.chain, li.chain, 32);
        } else { /* this replica is itself copying past its applied end */
            a.type = XFER_ERR;
            a.code = VERITY_EOFFSET;
        }
        a.end = cg->st_end;
        a.from_offset = m->from_offset;
        a.data = buf;
        a.len = (uint32_t)len;
        cg->xf.bytes_out += len;
        cg->xf.chunks_out++;
    }
    xf_send(cg, m->from, &a);
    free(buf);
}

static void gx_on_xfer(struct cgroup *cg, const struct xfer_msg *m);

static void on_xfer(struct broker *b, uint32_t from, const struct vsr_wire_frame *f)
{
    struct cluster *cl = CL(b);
    if (!cl)
        return;
    cl->frames_in++;
    struct cgroup *cg = route(b, f);
    if (!cg) {
        cl->frames_unrouted++;
        return;
    }
    struct xfer_msg m;
    if (xfer_wire_decode(f->payload, f->payload_len, &m) || m.to != cg->self ||
        m.from >= cg->n || cg->nodes[m.from] != from || m.cluster != cl->id) {
        cl->frames_bad++;
        cg->xf.bad++;
        return;
    }
    if (!cg->part) {
        gx_on_xfer(cg, &m);
        cg_after(cg);
        return;
    }
    switch (m.type) {
    case XFER_GET:
        xf_serve(cg, &m);
        break;
    case XFER_DATA:
        xf_on_data(cg, &m);
        break;
    default:
        if (cg->xf.active && m.xid == cg->xf.xid && m.from == cg->xf.peer)
            xf_fail(cg, m.code, "peer_refused");
        break;
    }
    cg_after(cg);
}

/* ---- __groups (the consumer-group log; broker/groups_repl.c) ------------------ */

/* An op of __groups is one or more group-log batches back to back. Every
 * replica hands it to the groups shell, which appends the batches to its
 * local group log and, unless this broker proposed them in its current
 * coordination (its state machine applied them live), applies each record. */
static void gx_abandon(struct cgroup *cg);

static int grp_apply(void *arg, const struct vsr_commit *c)
{
    struct cgroup *cg = arg;
    struct broker *b = cg->b;
    /* as part_apply: a START_VIEW may carry the commit of another
     * primary's ops in the same call; give up the old view first */
    if (cg->own_active && (!is_primary_normal(cg) || vsr_view(cg->g.core) != cg->own_view))
        cg_abandon(cg);
    bool own = cg->own_active && c->header.client == b->cfg.node_id;
    uint64_t end = 0;
    gx_abandon(cg);
    int rc = groups_repl_apply(b, c->body, c->header.size, own, cg->own_view, &end);
    if (rc) {
        blog(BLOG_ERROR, "replica_apply_failed", "group=%s op=%" PRIu64 " error=%s", cg->name,
             c->op, verity_errname(rc));
        return rc;
    }
    cg_note_applied(cg, c, end);
    return ring_write(cg);
}

static int grp_install(void *arg, uint64_t op, const uint8_t checksum[VSR_CHECKSUM_SIZE],
                       const uint8_t digest[VSR_CHECKSUM_SIZE]);

static const struct vgroup_ops grp_ops = {cg_send, grp_apply, grp_install, cg_io_done};

int cluster_groups_recover(struct broker *b)
{
    struct cluster *cl = CL(b);
    if (!cl || !b->groups.log)
        return 0;
    struct cgroup *cg = calloc(1, sizeof *cg);
    if (!cg)
        return -ENOMEM;
    cg->b = b;
    cg->ring_fd = -1;
    cg->is_groups = true;
    snprintf(cg->name, sizeof cg->name, "%s", GROUPS_GROUP);
    cg->n = cl->meta->n;
    cg->self = cl->meta->self;
    memcpy(cg->nodes, cl->meta->nodes, sizeof cg->nodes);
    snprintf(cg->dir, sizeof cg->dir, "%s/__groups/vsr", b->cfg.data_dir);
    cl->grp = cg;
    struct vlog_info info;
    vlog_get_info(b->groups.log, &info);
    bool found = false;
    int rc = ring_open(cg, info.end_offset, &found);
    if (rc)
        return rc;
    if (!found && info.end_offset > info.start_offset) {
        /* a group log written before this broker joined a cluster (or
         * without its ring): its records are not the replicated ones */
        blog(BLOG_ERROR, "replica_state_missing",
             "group=%s end=%" PRIu64 " (the group log holds records but no applied position)",
             GROUPS_GROUP, info.end_offset);
        return VERITY_ECORRUPT;
    }
    if (found && info.end_offset > cg->st_end) {
        blog(BLOG_WARN, "group_log_cut", "from=%" PRIu64 " to=%" PRIu64, info.end_offset,
             cg->st_end);
        if ((rc = vlog_truncate_tail(b->groups.log, cg->st_end, cg->st_end)))
            return rc;
    }
    return 0;
}

int cluster_groups_start(struct broker *b)
{
    struct cluster *cl = CL(b);
    if (!cl || !cl->grp)
        return 0;
    int rc = cg_start(cl->grp, &grp_ops, C_GROUPS_BODY_MAX);
    if (rc)
        return rc;
    cg_link(cl->grp);
    return 0;
}

void cluster_groups_stop(struct broker *b)
{
    struct cluster *cl = CL(b);
    struct cgroup *cg = cl ? cl->grp : NULL;
    if (!cg)
        return;
    if (cg->g_open)
        cg_unlink(cg);
    if (b->groups.log)
        ring_sync(cg, b->groups.log);
    cl->grp = NULL;
    cg_free(cg);
}

bool cluster_groups_ready(struct broker *b, uint64_t *view)
{
    struct cluster *cl = CL(b);
    struct cgroup *cg = cl ? cl->grp : NULL;
    if (!cg || !cg->g_open || !is_primary_normal(cg))
        return false;
    /* ready: every op it holds applied (its state is the committed one), or
     * proposing in this view already */
    if (!(cg->own_active && vsr_view(cg->g.core) == cg->own_view) &&
        vsr_op(cg->g.core) != vsr_commit_min(cg->g.core))
        return false;
    *view = vsr_view(cg->g.core);
    return true;
}

uint32_t cluster_groups_leader(const struct broker *b)
{
    struct cluster *cl = CL(b);
    return cl && cl->grp && cl->grp->g_open ? primary_node(cl->grp) : 0;
}

int cluster_groups_submit(struct broker *b, uint64_t view, const uint8_t *body, uint32_t len)
{
    struct cluster *cl = CL(b);
    struct cgroup *cg = cl ? cl->grp : NULL;
    int rc;
    if (!cg || !cg->g_open)
        return VERITY_EREADONLY;
    if (len > C_GROUPS_BODY_MAX)
        return VERITY_ELIMIT;
    if (!is_primary_normal(cg) || vsr_view(cg->g.core) != view)
        return VERITY_ENOTLEADER;
    if ((rc = cg_propose_prepare(cg, 0, NULL)))
        return rc;
    if (cg->own_view != view)
        return VERITY_ENOTLEADER;
    if ((rc = cg_enqueue(cg, body, len)))
        return rc;
    cg_pump(cg);
    return 0;
}

json_t *cluster_groups_json(struct broker *b)
{
    struct cluster *cl = CL(b);
    return cl && cl->grp && cl->grp->g_open ? cg_json(cl->grp) : NULL;
}

/* ---- __groups and __meta state transfer ------------------------------------------------ */

/* A __groups replica more than half a journal behind cannot catch up from
 * the journal. Its group log is node-local (every replica restamps what it
 * appends), so the partitions' log copy does not apply: the state is what
 * moves. The coordinator, at a moment when every record of its live state
 * is committed, encodes it (group_snap_encode: the snapshot format) and
 * serves it in chunks under the transfer's xid (DATA: op, checksum and
 * digest of its applied op, chain = SHA-256 of the whole encoding, end =
 * its length, from_offset = a byte offset into it). A backup answers ERR
 * (-EAGAIN): its state is a replay, not an encodable live one, and the core
 * names the peers in turn. The requester loads the bytes into a new state
 * (a bad encoding is refused before anything changes), then hands the core
 * a STATE; the core's install (grp_install) writes a state mark into the
 * group log and the snapshot for the offset after it, then the applied
 * ring entry (groups_snap_install has the crash argument).
 *
 * __meta moves the same way, with its own state (meta_snap.h: topics,
 * producer ids and epochs with the allocation high-water mark, the
 * auth_change store), from any replica: a replica's memory is its applied
 * state, except on the primary while its own proposals are in flight
 * (their effects are made at proposal), so that one puts the first GET off
 * until they are applied, as the coordinator does. The install
 * (meta_install) writes a state mark and meta.xfer.new (meta_state_stage),
 * then the applied ring entry, synced, then replaces the live state
 * (meta_state_adopt). */

#define GX_BYTES_MAX (1ull << 30) /* a group state larger than this is refused */

struct gxfer {
    /* requester: the state being copied in */
    uint8_t *buf;
    size_t len, total;
    uint64_t op;
    uint8_t checksum[32], digest[32], sha[32];
    struct group_state *st; /* __groups: loaded, handed to grp_install */
    struct meta_image mim;  /* __meta: decoded, handed to meta_install */
    bool mim_ok;
    /* server: a first GET the coordinator could not serve at once (records
     * in flight), tried again after each commit (gx_try_pending) */
    bool pend;
    uint64_t pend_xid;
    uint8_t pend_from;
    uint32_t pend_max;
    int64_t pend_ms;
    /* server: the encoding served under one xid */
    uint8_t *sbuf;
    size_t slen;
    uint64_t sxid, sop;
    uint8_t sfrom;
    uint8_t schecksum[32], sdigest[32], ssha[32];
};

static struct gxfer *gx_get(struct cgroup *cg)
{
    if (!cg->gx)
        cg->gx = calloc(1, sizeof *cg->gx);
    return cg->gx;
}

static void gx_drop_in(struct gxfer *g)
{
    free(g->buf);
    g->buf = NULL;
    g->len = g->total = 0;
    group_state_free(g->st);
    g->st = NULL;
    if (g->mim_ok)
        meta_image_free(&g->mim);
    g->mim_ok = false;
}

static void gx_free(struct cgroup *cg)
{
    if (!cg->gx)
        return;
    gx_drop_in(cg->gx);
    free(cg->gx->sbuf);
    free(cg->gx);
    cg->gx = NULL;
}

static void gx_fail(struct cgroup *cg, int err, const char *why)
{
    struct xfer *x = &cg->xf;
    x->active = false;
    x->failed++;
    x->last_error = err;
    if (cg->gx)
        gx_drop_in(cg->gx);
    blog(BLOG_WARN, "replica_state_transfer_failed",
         "group=%s peer=%" PRIu32 " reason=%s error=%s bytes=%" PRIu64, cg->name,
         cg->nodes[x->peer], why, verity_errname(err), x->bytes);
}

static void gx_abandon(struct cgroup *cg)
{
    if (!cg->xf.active || cg->xf.installing)
        return;
    cg->xf.active = false;
    cg->xf.failed++;
    if (cg->gx)
        gx_drop_in(cg->gx);
    blog(BLOG_INFO, "replica_state_transfer_abandoned", "group=%s reason=applied_from_journal",
         cg->name);
}

static void gx_ask(struct cgroup *cg)
{
    struct xfer_msg m;
    memset(&m, 0, sizeof m);
    m.type = XFER_GET;
    m.xid = cg->xf.xid;
    m.from_offset = cg->gx->len;
    m.max_bytes = XFER_CHUNK_MAX;
    xf_send(cg, cg->xf.peer, &m);
}

static void gx_want(struct cgroup *cg, uint8_t peer)
{
    struct xfer *x = &cg->xf;
    if (x->active || cg->g.error || !cg->g.core || peer >= cg->n || !gx_get(cg))
        return;
    gx_drop_in(cg->gx);
    x->active = true;
    x->peer = peer;
    x->xid = (uint64_t)wall_us() ^ ((uint64_t)x->started << 40);
    x->started_ms = x->last_ms = xfer_mono_ms();
    x->from_end = 0;
    x->bytes = 0;
    x->started++;
    blog(BLOG_INFO, "replica_state_transfer_started",
         "group=%s peer=%" PRIu32 " applied=%" PRIu64, cg->name, cg->nodes[peer],
         vsr_commit_min(cg->g.core));
    gx_ask(cg);
}

/* Whether this replica can encode its state for a transfer: 1 now, 0 not
 * yet (records of its own in flight: the request is put off), -EAGAIN not
 * this replica (the requester asks the next peer). */
static int gx_can_serve(struct cgroup *cg)
{
    struct vsr *core = cg->g.core;
    if (cg->is_groups) {
        if (!is_primary_normal(cg) || !cg->b->groups.coord)
            return -EAGAIN;
        return vsr_op(core) == vsr_commit_min(core) && !cg->qn &&
               cg->st.op == vsr_commit_min(core) && cg->st.op != 0;
    }
    /* __meta: every replica's memory is its applied state but a primary's
     * with own proposals in flight (made at proposal: cluster_meta_submit) */
    if (cg->st.op == 0 || cg->st.op != vsr_commit_min(core) || cg->xf.active)
        return -EAGAIN;
    return !cg->mp && !cg->qn;
}

static void gx_serve(struct cgroup *cg, const struct xfer_msg *m)
{
    struct xfer_msg a;
    memset(&a, 0, sizeof a);
    a.xid = m->xid;
    a.type = XFER_ERR;
    struct gxfer *g = gx_get(cg);
    int rc = 0;
    if (!g || !cg->g.core) {
        a.code = g ? VERITY_EUNSUPPORTED : -ENOMEM;
        goto send;
    }
    if (!g->sbuf || g->sxid != m->xid || g->sfrom != m->from) {
        /* a new transfer: encode now, if the live state is all committed
         * and applied (no op of this primary in flight) */
        free(g->sbuf);
        g->sbuf = NULL;
        if (m->from_offset != 0) {
            a.code = VERITY_EOFFSET;
            goto send;
        }
        int can = gx_can_serve(cg);
        if (can < 0) {
            a.code = -EAGAIN; /* not this replica: the requester asks the next peer */
            goto send;
        }
        rc = -EAGAIN;
        if (can)
            rc = cg->is_groups ? groups_repl_state(cg->b, &g->sbuf, &g->slen)
                               : meta_state_encode(cg->b, &g->sbuf, &g->slen);
        if (rc == -EAGAIN) {
            /* records in flight: answer right after a commit leaves none
             * (gx_try_pending), within the requester's stall time */
            if (!g->pend || g->pend_xid != m->xid || g->pend_from != m->from)
                g->pend_ms = xfer_mono_ms();
            g->pend = true;
            g->pend_xid = m->xid;
            g->pend_from = m->from;
            g->pend_max = m->max_bytes;
            return;
        }
        g->pend = false;
        if (rc) {
            a.code = rc < 0 ? rc : VERITY_EINVAL;
            goto send;
        }
        unsigned n = 0;
        if (EVP_Digest(g->sbuf, g->slen, g->ssha, &n, EVP_sha256(), NULL) != 1) {
            free(g->sbuf);
            g->sbuf = NULL;
            a.code = VERITY_EINVAL;
            goto send;
        }
        g->sxid = m->xid;
        g->sfrom = m->from;
        g->sop = cg->st.op;
        memcpy(g->schecksum, cg->st.checksum, 32);
        memcpy(g->sdigest, cg->st.digest, 32);
    }
    if (m->from_offset > g->slen) {
        a.code = VERITY_EOFFSET;
        goto send;
    }
    size_t left = g->slen - m->from_offset;
    a.type = XFER_DATA;
    a.op = g->sop;
    memcpy(a.checksum, g->schecksum, 32);
    memcpy(a.digest, g->sdigest, 32);
    memcpy(a.chain, g->ssha, 32);
    a.end = g->slen;
    a.from_offset = m->from_offset;
    a.data = g->sbuf + m->from_offset;
    a.len = (uint32_t)(left < m->max_bytes ? left : m->max_bytes);
    cg->xf.bytes_out += a.len;
    cg->xf.chunks_out++;
send:
    xf_send(cg, m->from, &a);
    if (g && g->sbuf && a.type == XFER_DATA && a.from_offset + a.len == g->slen) {
        free(g->sbuf); /* the last chunk: a retry of it starts over */
        g->sbuf = NULL;
    }
}

/* After a call on the __groups core: a first GET put off because the
 * coordinator had records in flight is served now if it has none. */
static void gx_try_pending(struct cgroup *cg)
{
    struct gxfer *g = cg->gx;
    if (!g->pend)
        return;
    if (xfer_mono_ms() - g->pend_ms > XFER_STALL_MS) {
        g->pend = false; /* the requester gave up on this peer by now */
        return;
    }
    if (!cg->g.core || gx_can_serve(cg) == 0)
        return; /* still in flight (not this replica any more: answered EAGAIN) */
    struct xfer_msg m;
    memset(&m, 0, sizeof m);
    m.type = XFER_GET;
    m.xid = g->pend_xid;
    m.from = g->pend_from;
    m.to = cg->self;
    m.max_bytes = g->pend_max;
    gx_serve(cg, &m);
}

static void gx_install(struct cgroup *cg)
{
    struct xfer *x = &cg->xf;
    struct gxfer *g = cg->gx;
    uint64_t before = vsr_commit_min(cg->g.core);
    if (!xf_hand_state(cg, x->peer, g->op, g->checksum, g->digest)) {
        gx_fail(cg, cg->g.error ? cg->g.error : VERITY_EINVAL, "core_refused");
        return;
    }
    x->active = false;
    x->done++;
    blog(BLOG_INFO, "replica_state_transferred",
         "group=%s peer=%" PRIu32 " ops=%" PRIu64 " op=%" PRIu64 " end=%" PRIu64
         " bytes=%" PRIu64 " ms=%" PRId64,
         cg->name, cg->nodes[x->peer], g->op - before, g->op, cg->st_end, x->bytes,
         xfer_mono_ms() - x->started_ms);
    gx_drop_in(g);
}

static void gx_on_data(struct cgroup *cg, const struct xfer_msg *m)
{
    struct xfer *x = &cg->xf;
    struct gxfer *g = cg->gx;
    if (!x->active || !g || m->xid != x->xid || m->from != x->peer || !cg->g.core ||
        m->from_offset != g->len)
        return; /* an answer to a transfer given up, or a repeat */
    x->last_ms = xfer_mono_ms();
    if (g->len == 0 && !g->buf) {
        if (m->end == 0 || m->end > GX_BYTES_MAX) {
            x->bad++;
            gx_fail(cg, VERITY_ELIMIT, "state_size");
            return;
        }
        if (m->op <= vsr_commit_min(cg->g.core)) {
            gx_fail(cg, VERITY_EINVAL, "not_newer");
            return;
        }
        if (!(g->buf = malloc(m->end))) {
            gx_fail(cg, -ENOMEM, "no_memory");
            return;
        }
        g->total = m->end;
        g->op = m->op;
        memcpy(g->checksum, m->checksum, 32);
        memcpy(g->digest, m->digest, 32);
        memcpy(g->sha, m->chain, 32);
    } else if (m->op != g->op || m->end != g->total || memcmp(m->chain, g->sha, 32) != 0) {
        x->bad++;
        gx_fail(cg, VERITY_EPROTO, "state_changed");
        return;
    }
    if (m->len > g->total - g->len || (m->len == 0 && g->len < g->total)) {
        x->bad++;
        gx_fail(cg, VERITY_EPROTO, m->len ? "past_end" : "no_progress");
        return;
    }
    memcpy(g->buf + g->len, m->data, m->len);
    g->len += m->len;
    x->bytes += m->len;
    x->bytes_in += m->len;
    if (g->len < g->total) {
        gx_ask(cg);
        return;
    }
    uint8_t md[32];
    unsigned n = 0;
    if (EVP_Digest(g->buf, g->len, md, &n, EVP_sha256(), NULL) != 1 || n != 32 ||
        memcmp(md, g->sha, 32) != 0) {
        x->bad++;
        gx_fail(cg, VERITY_ECHAIN, "digest_mismatch");
        return;
    }
    if (g->op <= vsr_commit_min(cg->g.core)) {
        x->active = false; /* caught up from the journal meanwhile */
        gx_drop_in(g);
        return;
    }
    int rc;
    if (cg->is_groups) {
        if ((rc = group_state_new(cg->b->cfg.group_pending_max, &g->st)) == 0)
            rc = group_snap_load(g->st, g->buf, g->len);
    } else if ((rc = meta_image_decode(g->buf, g->len, &g->mim)) == 0) {
        g->mim_ok = true;
    }
    if (rc) {
        x->bad++;
        gx_fail(cg, rc, "bad_state");
        return;
    }
    gx_install(cg);
}

static void gx_on_xfer(struct cgroup *cg, const struct xfer_msg *m)
{
    switch (m->type) {
    case XFER_GET:
        gx_serve(cg, m);
        break;
    case XFER_DATA:
        gx_on_data(cg, m);
        break;
    default:
        if (cg->xf.active && m->xid == cg->xf.xid && m->from == cg->xf.peer)
            gx_fail(cg, m->code, "peer_refused");
        break;
    }
}

/* The core installs the state gx_install handed it: make it this replica's
 * (state mark, snapshot), then the applied position. */
static int grp_install(void *arg, uint64_t op, const uint8_t checksum[VSR_CHECKSUM_SIZE],
                       const uint8_t digest[VSR_CHECKSUM_SIZE])
{
    struct cgroup *cg = arg;
    struct xfer *x = &cg->xf;
    struct gxfer *g = cg->gx;
    if (!x->installing || op != x->inst_op || !g || !g->st)
        return VERITY_EUNSUPPORTED; /* a state this shell did not copy */
    struct group_state *st = g->st;
    g->st = NULL; /* groups_snap_install takes it over */
    uint64_t end = 0;
    int rc = groups_snap_install(cg->b, st, g->buf, g->len, op, &end);
    if (rc)
        return rc;
    cg->st.op = op;
    memcpy(cg->st.checksum, checksum, 32);
    memcpy(cg->st.digest, digest, 32);
    cg->st_end = end;
    return ring_write(cg);
}

/* The core installs the __meta state gx_install handed it: the mark and
 * meta.xfer.new, the applied position (synced: the log is never cut below
 * the mark again), then the live state. */
static int meta_install(void *arg, uint64_t op, const uint8_t checksum[VSR_CHECKSUM_SIZE],
                        const uint8_t digest[VSR_CHECKSUM_SIZE])
{
    struct cgroup *cg = arg;
    struct xfer *x = &cg->xf;
    struct gxfer *g = cg->gx;
    struct broker *b = cg->b;
    if (!x->installing || op != x->inst_op || !g || !g->mim_ok)
        return VERITY_EUNSUPPORTED; /* a state this shell did not copy */
    uint64_t end = 0;
    int rc = meta_state_stage(b, g->buf, g->len, op, &end);
    if (rc)
        return rc;
    /* test fault points: a crash with the state staged but its op not
     * recorded (the old state must load), and recorded but not adopted
     * (the new one must) */
    if (broker_fault("meta_install_crash_staged"))
        _exit(86);
    cg->st.op = op;
    memcpy(cg->st.checksum, checksum, 32);
    memcpy(cg->st.digest, digest, 32);
    cg->st_end = end;
    if ((rc = ring_write(cg)))
        return rc;
    ring_wait(cg);
    if ((rc = ring_io(cg)->fdatasync(ring_io(cg)->ctx, cg->ring_fd)))
        return rc;
    cg->ring_dirty = false;
    if (broker_fault("meta_install_crash_recorded"))
        _exit(86);
    rc = meta_state_adopt(b, &g->mim, end);
    meta_image_free(&g->mim);
    g->mim_ok = false;
    /* a topic that failed to open is logged (as a committed create would
     * be); only running out of memory stops the group */
    return rc == -ENOMEM ? rc : 0;
}
