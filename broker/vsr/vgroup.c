/*
 * vgroup: the shell around one replica group's core (vgroup.h).
 *
 * Invariants: the outbox is empty between calls (drain takes everything:
 * messages to send, writes copied into q, commits applied); writes are
 * performed in the order the core asked, each acknowledged with
 * vsr_on_write_done only after vjournal_write returned 0; a failed write or
 * apply stops the group for good (error is sticky, core NULL), because the
 * core must never believe a write durable that is not.
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

/* Performs the pending writes, feeding each completion back. Prepares and
 * header marks pending together are written and then made durable with one
 * fdatasync per file (they are independent: the core asks for a header mark
 * only once its prepare is durable, and never for two writes to one slot at
 * once); a superblock copy is written and synced alone, in order. A write is
 * acknowledged to the core only after its file's sync returned. */
static void perform(struct vgroup *g)
{
    while (g->core && g->nq) {
        size_t n = 0;
        if (g->q[0].w.kind == VSR_WRITE_SUPERBLOCK)
            n = 1;
        else
            while (n < g->nq && g->q[n].w.kind != VSR_WRITE_SUPERBLOCK)
                n++;
        struct vgroup_pending *batch = malloc(n * sizeof *batch);
        if (!batch) {
            stop(g, -ENOMEM);
            return;
        }
        memcpy(batch, g->q, n * sizeof *batch);
        memmove(g->q, g->q + n, (g->nq - n) * sizeof *g->q);
        g->nq -= n;
        bool kinds[4] = {false, false, false, false};
        int rc = 0;
        for (size_t i = 0; i < n && rc == 0; i++) {
            rc = vjournal_put(&g->j, &batch[i].w);
            kinds[batch[i].w.kind & 3] = true;
        }
        for (uint8_t k = 1; k <= 3 && rc == 0; k++)
            if (kinds[k])
                rc = vjournal_sync(&g->j, k);
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
    }
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
