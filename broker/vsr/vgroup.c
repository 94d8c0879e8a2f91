/*
 * vgroup: the shell around one replica group's core (vgroup.h).
 *
 * Invariants: the outbox is empty between calls (drain takes everything:
 * messages to send, writes copied into q, commits applied); the writes to
 * one file are performed in the order the core asked, each acknowledged
 * with vsr_on_write_done only after its file's sync returned 0; a failed
 * write or apply stops the group for good (error is sticky, core NULL),
 * because the core must never believe a write durable that is not. With a
 * writer: at most one job per file in flight (st[k].busy), a superblock
 * job only when no other job is in flight and no other job while it is.
 */
#include "broker/vsr/vgroup.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "verity/errors.h"
#include "verity/verify.h"

#define MSGS_CAP    256
#define WRITES_CAP  64
#define COMMITS_CAP 64

static void stop(struct vgroup *g, int err)
{
    if (!g->error)
        g->error = err;
    g->core = NULL;
}

/* Takes everything out of the outbox. */
static void take(struct vgroup *g)
{
    struct vsr_outbox *ob = &g->ob;
    for (size_t k = 0; k < ob->nmsgs; k++)
        if (g->ops->send)
            g->ops->send(g->arg, &ob->msgs[k]);
    for (size_t k = 0; k < ob->nwrites; k++) {
        if (g->nq == g->capq) {
            size_t cap = g->capq ? g->capq * 2 : 16;
            struct vgroup_pending *q = realloc(g->q, cap * sizeof *q);
            if (!q) {
                stop(g, -ENOMEM);
                break;
            }
            g->q = q;
            g->capq = cap;
        }
        struct vgroup_pending *p = &g->q[g->nq];
        p->w = ob->writes[k];
        p->data = malloc(p->w.len ? p->w.len : 1);
        if (!p->data) {
            stop(g, -ENOMEM);
            break;
        }
        memcpy(p->data, ob->writes[k].bytes, p->w.len);
        p->w.bytes = p->data;
        g->nq++;
    }
    /* An installed state comes before the commits of the same call: they
     * are the ops above it (the core applies from the installed op on). */
    if (ob->install && !g->error) {
        int rc = g->ops->install ? g->ops->install(g->arg, ob->install_op, ob->install_checksum,
                                                   ob->install_digest)
                                 : VERITY_EUNSUPPORTED;
        if (rc)
            stop(g, rc);
    }
    for (size_t k = 0; k < ob->ncommits && !g->error; k++) {
        int rc = g->ops->apply(g->arg, &ob->commits[k]);
        if (rc)
            stop(g, rc);
    }
    vsr_outbox_clear(ob);
}

/* Performs the pending writes synchronously (no writer), feeding each
 * completion back. Prepares and header marks pending together are written
 * and then made durable with one fdatasync per file (they are independent:
 * the core asks for a header mark only once its prepare is durable, and a
 * later write to a slot supersedes an earlier one); a superblock copy is
 * written and synced alone, in order. A write is acknowledged to the core
 * only after its file's sync returned. */
static void perform_sync(struct vgroup *g)
{
    while (g->core && g->nq) {
        size_t n = 0;
        if (g->q[0].w.kind == VSR_WRITE_SUPERBLOCK)
            n = 1;
        else
            while (n < g->nq && g->q[n].w.kind != VSR_WRITE_SUPERBLOCK)
                n++;
        struct vgroup_pending *batch = malloc(n * sizeof *batch);
        struct vsr_write *ws = malloc(n * sizeof *ws);
        if (!batch || !ws) {
            free(batch);
            free(ws);
            stop(g, -ENOMEM);
            return;
        }
        memcpy(batch, g->q, n * sizeof *batch);
        memmove(g->q, g->q + n, (g->nq - n) * sizeof *g->q);
        g->nq -= n;
        for (size_t i = 0; i < n; i++)
            ws[i] = batch[i].w;
        int rc = vwriter_perform(&g->j, ws, n);
        if (rc)
            stop(g, rc);
        for (size_t i = 0; i < n; i++) {
            if (g->core) {
                vsr_on_write_done(g->core, &batch[i].w, &g->ob);
                take(g);
            }
            free(batch[i].data);
        }
        free(batch);
        free(ws);
    }
}

static size_t stream_of(uint8_t kind)
{
    return kind == VSR_WRITE_HEADER ? 1 : kind == VSR_WRITE_SUPERBLOCK ? 2 : 0;
}

/* Moves q[i] to the end of stream s's job. False on ENOMEM (group stopped). */
static bool stream_add(struct vgroup *g, struct vgroup_stream *s, const struct vgroup_pending *p)
{
    if (s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 16;
        struct vgroup_pending *items = realloc(s->items, cap * sizeof *items);
        if (items)
            s->items = items;
        struct vsr_write *ws = items ? realloc(s->ws, cap * sizeof *ws) : NULL;
        if (!ws) {
            stop(g, -ENOMEM);
            return false;
        }
        s->ws = ws;
        s->cap = cap;
    }
    s->items[s->n] = *p;
    s->ws[s->n] = p->w;
    s->n++;
    return true;
}

static void stream_submit(struct vgroup *g, struct vgroup_stream *s)
{
    s->jb.j = &g->j;
    s->jb.w = s->ws;
    s->jb.n = s->n;
    s->busy = true;
    vwriter_submit(g->wr, &s->jb);
}

/* Hands the queued writes to the writer: a superblock copy at the head of
 * the queue alone once nothing else is in flight; otherwise, for each file
 * with no job in flight, every write to it queued before the next
 * superblock copy, in order, as one job. */
static void dispatch(struct vgroup *g)
{
    if (!g->core || !g->nq || g->st[2].busy)
        return;
    if (g->q[0].w.kind == VSR_WRITE_SUPERBLOCK) {
        if (g->st[0].busy || g->st[1].busy)
            return;
        if (!stream_add(g, &g->st[2], &g->q[0]))
            return;
        memmove(g->q, g->q + 1, (g->nq - 1) * sizeof *g->q);
        g->nq--;
        stream_submit(g, &g->st[2]);
        return;
    }
    size_t keep = 0, i = 0;
    for (; i < g->nq && g->q[i].w.kind != VSR_WRITE_SUPERBLOCK; i++) {
        struct vgroup_stream *s = &g->st[stream_of(g->q[i].w.kind)];
        if (s->busy) {
            g->q[keep++] = g->q[i];
            continue;
        }
        if (!stream_add(g, s, &g->q[i])) {
            g->q[keep++] = g->q[i]; /* stays queued: freed at close */
            continue;
        }
    }
    memmove(g->q + keep, g->q + i, (g->nq - i) * sizeof *g->q);
    g->nq = keep + (g->nq - i);
    for (size_t k = 0; k < 2; k++)
        if (!g->st[k].busy && g->st[k].n) {
            if (g->core)
                stream_submit(g, &g->st[k]);
            else { /* stopped while collecting */
                for (size_t x = 0; x < g->st[k].n; x++)
                    free(g->st[k].items[x].data);
                g->st[k].n = 0;
            }
        }
}

static void perform(struct vgroup *g)
{
    if (g->wr)
        dispatch(g);
    else
        perform_sync(g);
}

/* A job finished (loop thread, from vwriter_reap): its writes are durable
 * (or the group stops), in order; then the next job of each file. */
static void stream_done(struct vwjob *jb)
{
    struct vgroup_stream *s = jb->arg;
    struct vgroup *g = s->g;
    VERITY_VERIFY(!g->busy && s->busy);
    g->busy = true;
    s->busy = false;
    if (jb->rc)
        stop(g, jb->rc);
    for (size_t i = 0; i < s->n; i++) {
        if (g->core) {
            vsr_on_write_done(g->core, &s->items[i].w, &g->ob);
            take(g);
        }
        free(s->items[i].data);
    }
    s->n = 0;
    dispatch(g);
    g->busy = false;
    if (g->ops->io_done)
        g->ops->io_done(g->arg);
}

void vgroup_set_writer(struct vgroup *g, struct vwriter *w)
{
    VERITY_VERIFY(!g->wr && !g->busy);
    g->wr = w;
    for (size_t k = 0; k < 3; k++) {
        g->st[k].g = g;
        g->st[k].jb.done = stream_done;
        g->st[k].jb.arg = &g->st[k];
    }
    if (w && !g->busy) {
        g->busy = true;
        dispatch(g);
        g->busy = false;
    }
}

bool vgroup_needs_flush(const struct vgroup *g)
{
    if (!g->core || !g->nq)
        return false;
    if (!g->wr)
        return true;
    if (g->st[2].busy)
        return false;
    if (g->q[0].w.kind == VSR_WRITE_SUPERBLOCK)
        return !g->st[0].busy && !g->st[1].busy;
    for (size_t i = 0; i < g->nq && g->q[i].w.kind != VSR_WRITE_SUPERBLOCK; i++)
        if (!g->st[stream_of(g->q[i].w.kind)].busy)
            return true;
    return false; /* every queued write waits for its file's job in flight */
}

uint64_t vgroup_unsynced_op(const struct vgroup *g)
{
    uint64_t low = UINT64_MAX;
    for (size_t k = 0; k <= 3; k++) {
        const struct vgroup_pending *p = k < 3 ? g->st[k].items : g->q;
        size_t n = k < 3 ? g->st[k].n : g->nq;
        for (size_t i = 0; i < n; i++) {
            if (p[i].w.kind == VSR_WRITE_SUPERBLOCK)
                return 0;
            if (p[i].w.op < low)
                low = p[i].w.op;
        }
    }
    return low;
}

size_t vgroup_unsynced(const struct vgroup *g)
{
    return g->nq + g->st[0].n + g->st[1].n + g->st[2].n;
}

/* After every call on the core: take the outbox, then perform the writes
 * it asked for, feeding each completion back. */
static void drain(struct vgroup *g)
{
    VERITY_VERIFY(!g->busy);
    g->busy = true;
    take(g);
    perform(g);
    g->busy = false;
}

void vgroup_on_message_deferred(struct vgroup *g, const struct vsr_msg *m)
{
    if (!g->core || g->busy)
        return;
    g->busy = true;
    vsr_on_message(g->core, m, &g->ob);
    take(g);
    g->busy = false;
}

void vgroup_flush(struct vgroup *g)
{
    if (!g->core || g->busy)
        return;
    g->busy = true;
    perform(g);
    g->busy = false;
}

int vgroup_open(struct vgroup *g, const char *dir, const struct vsr_config *cfg,
                const struct vsr_state *state, const struct vgroup_ops *ops, void *arg,
                const struct vio *io)
{
    int rc;
    memset(g, 0, sizeof *g);
    g->j.fd_sb = g->j.fd_prep = g->j.fd_hdr = -1;
    g->ops = ops;
    g->arg = arg;
    g->cfg = *cfg;
    g->cfg.read_prepare = vjournal_read_prepare;
    g->cfg.read_header = vjournal_read_header;
    g->cfg.read_superblock = vjournal_read_superblock;
    g->cfg.ctx = &g->j;
    if ((rc = vjournal_open(&g->j, dir, cfg->slots, cfg->body_max, io)))
        return rc;
    size_t asz = vsr_outbox_arena_size(&g->cfg);
    g->mem = malloc(vsr_size(&g->cfg));
    g->msgs = calloc(MSGS_CAP, sizeof *g->msgs);
    g->writes = calloc(WRITES_CAP, sizeof *g->writes);
    g->commits = calloc(COMMITS_CAP, sizeof *g->commits);
    g->arena = malloc(asz);
    if (!g->mem || !g->msgs || !g->writes || !g->commits || !g->arena) {
        vgroup_close(g);
        return -ENOMEM;
    }
    vsr_outbox_init(&g->ob, g->msgs, MSGS_CAP, g->writes, WRITES_CAP, g->commits, COMMITS_CAP,
                    g->arena, asz);
    g->core = vsr_init(g->mem, &g->cfg, state, g->j.fresh, &g->ob);
    if (!g->core) {
        vgroup_close(g);
        return VERITY_EINVAL;
    }
    drain(g);
    return g->error;
}

void vgroup_close(struct vgroup *g)
{
    for (size_t k = 0; k < 3; k++) {
        struct vgroup_stream *s = &g->st[k];
        if (s->busy)
            vwriter_wait(g->wr, &s->jb); /* the threads use its bytes and fds */
        s->busy = false;
        for (size_t i = 0; i < s->n; i++)
            free(s->items[i].data);
        free(s->items);
        free(s->ws);
        s->items = NULL;
        s->ws = NULL;
        s->n = s->cap = 0;
    }
    for (size_t k = 0; k < g->nq; k++)
        free(g->q[k].data);
    free(g->q);
    free(g->mem);
    free(g->msgs);
    free(g->writes);
    free(g->commits);
    free(g->arena);
    vjournal_close(&g->j);
    g->core = NULL;
    g->q = NULL;
    g->mem = g->arena = NULL;
    g->msgs = NULL;
    g->writes = NULL;
    g->commits = NULL;
    g->nq = g->capq = 0;
}

void vgroup_on_message(struct vgroup *g, const struct vsr_msg *m)
{
    if (!g->core || g->busy)
        return; /* a message arriving while we drain is dropped: the protocol resends */
    vsr_on_message(g->core, m, &g->ob);
    drain(g);
}

void vgroup_peer_lost(struct vgroup *g, uint8_t replica)
{
    if (!g->core || g->busy)
        return;
    vsr_on_peer_lost(g->core, replica, &g->ob);
    drain(g);
}

void vgroup_tick(struct vgroup *g)
{
    if (!g->core || g->busy)
        return;
    vsr_on_tick(g->core, &g->ob);
    drain(g);
}

static bool submit(struct vgroup *g, uint64_t client, uint64_t request, const uint8_t *body,
                   uint32_t len, bool defer);

bool vgroup_submit(struct vgroup *g, uint64_t client, uint64_t request, const uint8_t *body,
                   uint32_t len)
{
    return submit(g, client, request, body, len, false);
}

bool vgroup_submit_deferred(struct vgroup *g, uint64_t client, uint64_t request,
                            const uint8_t *body, uint32_t len)
{
    return submit(g, client, request, body, len, true);
}

static bool submit(struct vgroup *g, uint64_t client, uint64_t request, const uint8_t *body,
                   uint32_t len, bool defer)
{
    if (!g->core || g->busy || vsr_status(g->core) != VSR_NORMAL || !vsr_is_primary(g->core))
        return false;
    struct vsr_msg m;
    memset(&m, 0, offsetof(struct vsr_msg, window));
    m.type = VSR_MSG_REQUEST;
    m.from = 0xff;
    m.to = g->cfg.replica;
    m.cluster = g->cfg.cluster;
    m.view = vsr_view(g->core);
    m.client = client;
    m.request = request;
    m.body = body;
    m.body_len = len;
    if (defer) {
        g->busy = true;
        vsr_on_message(g->core, &m, &g->ob);
        take(g);
        g->busy = false;
        return true;
    }
    vsr_on_message(g->core, &m, &g->ob);
    drain(g);
    return true;
}
