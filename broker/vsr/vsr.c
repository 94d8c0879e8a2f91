/*
 * The replication core (see vsr.h for the states, the journal and the
 * header format; docs/REPLICATION.md for the protocol in prose).
 *
 * Invariants (vsr_verify checks them; VERITY_VERIFY stays on in release):
 *   - log_view <= view; commit_min <= op; commit_min <= commit_max;
 *   - a canonical slot for op k in (commit_min, op] holds k in slot k % slots;
 *   - a primary in NORMAL status never has more than `pipeline` uncommitted
 *     ops and has every op in (commit_min, op] canonical and intact on disk
 *     when it enters NORMAL (become_primary);
 *   - a backup sends prepare-ok only for an entry whose prepare and header
 *     mark are durable, and only while its superblock says log_view == view;
 *   - an op is truncated in a view change only when a nack quorum (f + 1
 *     replicas that never prepared it) says so, so no committed op is cut.
 *
 * Journal slot, in memory: the canonical entry this replica believes belongs
 * at op h.op (canon; full when the whole header is known, else only op and
 * checksum, learned from a parent link, a commit or a DVC), and separately
 * what the disk holds durably (disk_*). The replica "has" op k when both
 * agree. A faulty slot was damaged while it may have held an acknowledged
 * entry: the replica sends no nack for any op of that slot until the slot is
 * written again.
 */
#include "broker/vsr/vsr.h"

#include <stdio.h>
#include <string.h>

#include "broker/vsr/superblock.h"
#include "verity/errors.h"
#include "verity/verify.h"

#define BCAST 0xff

struct vsr_slot {
    struct vsr_header h; /* canonical entry (valid when canon) */
    bool canon;
    bool full;       /* h fully known, not just op + checksum */
    bool disk_valid; /* disk holds a durable, marked entry: */
    uint64_t disk_op;
    uint8_t disk_sum[VSR_CHECKSUM_SIZE];
    bool faulty;          /* damaged: no nack for this slot */
    uint64_t faulty_lv;   /* log view when it was found faulty: what it may have
                           * acknowledged there is an entry of that view or older */
    bool unverified;      /* restart: entry not linked to the log: no nack */
    uint8_t wstage;       /* 0 idle, 1 prepare in flight, 2 header mark in flight */
    uint64_t wid;         /* id of the write in flight */
    struct vsr_header wh; /* entry being written */
    uint8_t oks;          /* primary: replicas whose prepare-ok it holds */
    uint64_t rq_tick;     /* ticks + 1 when its repair was last asked for (0: never) */
};

struct client_entry {
    uint64_t client;
    uint64_t request;
    uint64_t op;
    uint8_t checksum[VSR_CHECKSUM_SIZE];
};

struct vsr {
    struct vsr_config cfg;
    uint8_t f;      /* faults tolerated: (n - 1) / 2 */
    uint8_t quorum; /* f + 1: replication, view change and nack quorum */
    enum vsr_status status;
    uint64_t view;
    uint64_t log_view;
    uint64_t op;          /* head of the log */
    uint64_t commit_min;  /* applied */
    uint64_t commit_max;  /* known committed (in this replica's canonical log) */
    uint64_t commit_seen; /* highest commit heard of elsewhere (state transfer) */
    uint8_t commit_sum[VSR_CHECKSUM_SIZE];
    uint8_t digest[VSR_CHECKSUM_SIZE];
    uint8_t root[VSR_CHECKSUM_SIZE];
    uint64_t sv_op; /* head installed when log_view began */
    uint8_t sv_sum[VSR_CHECKSUM_SIZE];
    uint32_t sv_count; /* checksums of the ops below sv_op, for the superblock */
    uint8_t sv_sums[VSR_SB_SV_SUMS][VSR_CHECKSUM_SIZE];

    /* superblock */
    struct vsr_superblock sb;      /* last durable */
    struct vsr_superblock sb_next; /* being written */
    uint8_t sb_bytes[VSR_SB_SIZE];
    bool sb_writing;
    bool sb_again; /* another update asked for while writing */
    uint64_t sb_wid;

    /* view change */
    uint8_t svc_from;  /* START_VIEW_CHANGE senders for view */
    /* pre-vote (leader stickiness): a replica that timed out on its primary
     * proposes pv_view and starts it only when f + 1 replicas (itself
     * included) want it; valid only while pv_view > view and the replica
     * has not heard from its primary since (vc_fresh) */
    uint64_t pv_view;
    uint8_t pv_from; /* replicas that want pv_view (itself included) */
    uint8_t dvc_from;  /* primary: DO_VIEW_CHANGE senders for view */
    bool vc_installed; /* primary: canonical suffix installed */
    bool vc_ready;     /* primary: log intact, superblock update asked */
    bool formatting;   /* fresh replica: first superblock not durable yet */

    /* rejoin (cfg.rejoin: started on a wiped disk): no vote until caught up */
    bool rejoining;
    bool rj_probed;      /* f + 1 peers answered REQUEST_VIEW */
    uint8_t rj_from;     /* peers that answered */
    uint64_t rj_view;    /* highest view they answered */
    bool rj_target_set;  /* a START_VIEW of a view >= rj_view was taken */
    uint64_t rj_target;  /* its head: apply up to here, then vote */
    struct vsr_msg dvc[VSR_REPLICAS_MAX];

    /* timers, in ticks */
    uint64_t ticks;
    uint32_t since_primary;
    uint32_t since_heartbeat;
    uint32_t since_retry;
    uint32_t since_vc;
    uint32_t since_intact; /* primary: ticks with an entry it cannot repair */

    uint64_t wid_next;
    struct client_entry clients[VSR_CLIENTS_MAX];
    struct vsr_counters ctr;
    struct vsr_slot *slots;
    uint8_t *rbuf; /* journal reads: header + body_max */
    uint32_t rbuf_cap;
};

/* ---- small helpers ------------------------------------------------------ */

static void put64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}
static uint64_t get64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v |= (uint64_t)p[i] << (8 * i);
    return v;
}
static void put32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}
static uint32_t get32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static bool sum_eq(const uint8_t *a, const uint8_t *b)
{
    return memcmp(a, b, VSR_CHECKSUM_SIZE) == 0;
}
static int popcount8(uint8_t x)
{
    return __builtin_popcount(x);
}
static uint8_t primary_of(const struct vsr *r, uint64_t view)
{
    return (uint8_t)(view % r->cfg.replica_count);
}
static struct vsr_slot *slot_of(const struct vsr *r, uint64_t op)
{
    return &r->slots[op % r->cfg.slots];
}
static bool plant(const struct vsr *r, uint32_t p)
{
    return (r->cfg.plant & p) != 0;
}

static bool has_op(const struct vsr *r, uint64_t k)
{
    const struct vsr_slot *s = slot_of(r, k);
    return s->canon && s->h.op == k && s->disk_valid && s->disk_op == k &&
           sum_eq(s->disk_sum, s->h.checksum) && s->wstage == 0;
}
static bool canon_at(const struct vsr *r, uint64_t k)
{
    const struct vsr_slot *s = slot_of(r, k);
    return s->canon && s->h.op == k;
}

/* Checksum of op k when known: the applied head, the root, or a canonical slot. */
static bool op_checksum(const struct vsr *r, uint64_t k, uint8_t *out)
{
    if (k == r->commit_min) {
        memcpy(out, r->commit_sum, VSR_CHECKSUM_SIZE);
        return true;
    }
    if (k == 0) {
        memcpy(out, r->root, VSR_CHECKSUM_SIZE);
        return true;
    }
    if (k > r->commit_min && canon_at(r, k)) {
        memcpy(out, slot_of(r, k)->h.checksum, VSR_CHECKSUM_SIZE);
        return true;
    }
    return false;
}

/* ---- header codec ------------------------------------------------------- */

static void header_fields(const struct vsr_header *h, uint8_t out[VSR_HEADER_SIZE])
{
    memset(out + 64, 0, VSR_HEADER_SIZE - 64);
    memcpy(out + 64, h->parent, 32);
    put64(out + 96, h->op);
    put64(out + 104, h->view);
    put32(out + 112, h->size);
    put64(out + 120, h->client);
    put64(out + 128, h->request);
}

void vsr_header_encode(const struct vsr_config *cfg, const struct vsr_header *h,
                       const uint8_t *body, uint8_t out[VSR_HEADER_SIZE])
{
    (void)body; /* h->checksum already covers it (header_seal) */
    VERITY_VERIFY(h->size <= cfg->body_max);
    header_fields(h, out);
    memcpy(out + 32, h->checksum, 32);
    cfg->hash(cfg->ctx, out + 32, VSR_HEADER_SIZE - 32, NULL, 0, out);
}

/* Fills h->checksum from the fields and the body. */
static void header_seal(const struct vsr_config *cfg, struct vsr_header *h, const uint8_t *body)
{
    uint8_t b[VSR_HEADER_SIZE];
    header_fields(h, b);
    cfg->hash(cfg->ctx, b + 64, VSR_HEADER_SIZE - 64, body, h->size, h->checksum);
}

int vsr_header_decode(const struct vsr_config *cfg, const uint8_t in[VSR_HEADER_SIZE],
                      struct vsr_header *h)
{
    uint8_t sum[32];
    cfg->hash(cfg->ctx, in + 32, VSR_HEADER_SIZE - 32, NULL, 0, sum);
    if (!sum_eq(sum, in))
        return VERITY_ECORRUPT;
    if (get32(in + 116) != 0 || get64(in + 136) != 0)
        return VERITY_ECORRUPT;
    memcpy(h->checksum, in + 32, 32);
    memcpy(h->parent, in + 64, 32);
    h->op = get64(in + 96);
    h->view = get64(in + 104);
    h->size = get32(in + 112);
    h->client = get64(in + 120);
    h->request = get64(in + 128);
    if (h->size > cfg->body_max)
        return VERITY_ECORRUPT;
    return 0;
}

int vsr_entry_check(const struct vsr_config *cfg, const uint8_t *bytes, uint32_t len,
                    struct vsr_header *h)
{
    struct vsr_header x;
    uint8_t sum[32];
    if (len < VSR_HEADER_SIZE || vsr_header_decode(cfg, bytes, &x) != 0)
        return VERITY_ECORRUPT;
    if (x.size != len - VSR_HEADER_SIZE)
        return VERITY_ECORRUPT;
    cfg->hash(cfg->ctx, bytes + 64, VSR_HEADER_SIZE - 64, bytes + VSR_HEADER_SIZE, x.size, sum);
    if (!sum_eq(sum, x.checksum))
        return VERITY_ECORRUPT;
    *h = x;
    return 0;
}

void vsr_root_checksum(const struct vsr_config *cfg, uint8_t out[VSR_CHECKSUM_SIZE])
{
    uint8_t b[16];
    memcpy(b, "verity-vsr-root", 8);
    put64(b + 8, cfg->cluster);
    cfg->hash(cfg->ctx, b, sizeof b, NULL, 0, out);
}

/* ---- outbox --------------------------------------------------------------- */

void vsr_outbox_init(struct vsr_outbox *ob, struct vsr_msg *msgs, size_t msgs_cap,
                     struct vsr_write *writes, size_t writes_cap, struct vsr_commit *commits,
                     size_t commits_cap, uint8_t *arena, size_t arena_cap)
{
    memset(ob, 0, sizeof *ob);
    ob->msgs = msgs;
    ob->msgs_cap = msgs_cap;
    ob->writes = writes;
    ob->writes_cap = writes_cap;
    ob->commits = commits;
    ob->commits_cap = commits_cap;
    ob->arena = arena;
    ob->arena_cap = arena_cap;
}

void vsr_outbox_clear(struct vsr_outbox *ob)
{
    ob->nmsgs = ob->nwrites = ob->ncommits = 0;
    ob->install = false;
    ob->arena_used = 0;
}

static uint8_t *ob_alloc(struct vsr_outbox *ob, size_t n)
{
    size_t at = (ob->arena_used + 7) & ~(size_t)7;
    if (at + n > ob->arena_cap)
        return NULL;
    ob->arena_used = at + n;
    return ob->arena + at;
}

static struct vsr_msg *msg_new(struct vsr *r, struct vsr_outbox *ob, uint8_t type, uint8_t to)
{
    if (ob->nmsgs == ob->msgs_cap)
        return NULL; /* the network may drop messages anyway; retries cover it */
    struct vsr_msg *m = &ob->msgs[ob->nmsgs++];
    memset(m, 0, offsetof(struct vsr_msg, window));
    m->type = type;
    m->from = r->cfg.replica;
    m->to = to;
    m->cluster = r->cfg.cluster;
    m->view = r->view;
    m->commit = r->commit_max;
    r->ctr.msgs_out[type]++;
    return m;
}

/* Reads the entry (k, sum) from the journal into r->rbuf and verifies it.
 * Returns the header through h and the body pointer, or false when the disk
 * does not hold it intact (the slot is then marked faulty). */
static bool read_entry(struct vsr *r, uint64_t k, const uint8_t *sum, struct vsr_header *h,
                       const uint8_t **body)
{
    struct vsr_slot *s = slot_of(r, k);
    uint32_t len = 0;
    if (!s->disk_valid || s->disk_op != k || !sum_eq(s->disk_sum, sum) || s->wstage)
        return false;
    /* A read that fails its checksum is tried again: a transient read
     * error must not turn an intact entry into a lost one. */
    for (int attempt = 0; attempt < 3; attempt++) {
        int rc = r->cfg.read_prepare(r->cfg.ctx, (uint32_t)(k % r->cfg.slots), r->rbuf, r->rbuf_cap,
                                     &len);
        if (rc == 0 && vsr_entry_check(&r->cfg, r->rbuf, len, h) == 0 && h->op == k &&
            sum_eq(h->checksum, sum)) {
            *body = r->rbuf + VSR_HEADER_SIZE;
            return true;
        }
    }
    /* The disk copy failed its checksum: treat it as gone and repair it. */
    s->disk_valid = false;
    s->faulty = true;
    s->faulty_lv = r->log_view;
    r->ctr.faulty_found++;
    return false;
}

/* Reads journal slot `slot` back and checks it holds entry h intact. A
 * prepare is read back before its mark is written, so a durable mark always
 * follows a prepare that was in place: on restart a damaged mark over an
 * intact prepare can only have named that prepare's entry (recover_slot). */
static bool prepare_in_place(struct vsr *r, uint32_t slot, const struct vsr_header *h)
{
    for (int attempt = 0; attempt < 3; attempt++) {
        uint32_t len = 0;
        struct vsr_header x;
        if (r->cfg.read_prepare(r->cfg.ctx, slot, r->rbuf, r->rbuf_cap, &len) == 0 &&
            vsr_entry_check(&r->cfg, r->rbuf, len, &x) == 0 && x.op == h->op &&
            sum_eq(x.checksum, h->checksum))
            return true;
    }
    return false;
}

/* ---- superblock ----------------------------------------------------------- */

static void sb_emit_copy(struct vsr *r, struct vsr_outbox *ob, uint32_t copy)
{
    uint8_t *b = ob_alloc(ob, VSR_SB_SIZE);
    VERITY_VERIFY(b != NULL && ob->nwrites < ob->writes_cap);
    memcpy(b, r->sb_bytes, VSR_SB_SIZE);
    struct vsr_write *w = &ob->writes[ob->nwrites++];
    w->kind = VSR_WRITE_SUPERBLOCK;
    w->slot = copy;
    w->op = 0;
    w->id = r->sb_wid;
    w->bytes = b;
    w->len = VSR_SB_SIZE;
}

/* What the superblock should record now: view, log_view, commit_max and the
 * installed head, over the last durable copy. */
static void sb_wanted(const struct vsr *r, struct vsr_superblock *n)
{
    *n = r->sb;
    n->sequence = r->sb.sequence + 1;
    n->cluster = r->cfg.cluster;
    n->replica = r->cfg.replica;
    n->replica_count = r->cfg.replica_count;
    n->flags = r->rejoining ? VSR_SB_REJOINING : 0;
    n->view = r->view;
    n->log_view = r->log_view;
    /* The commit number only means something for the log of log_view: a
     * new primary that installed a newer log but has not taken the view
     * yet keeps the old one on disk (after a restart it holds the old log). */
    n->commit_max = r->log_view == r->view ? r->commit_max : r->sb.commit_max;
    n->sv_op = r->sv_op;
    memcpy(n->sv_checksum, r->sv_sum, VSR_CHECKSUM_SIZE);
    n->sv_count = r->sv_count;
    memcpy(n->sv_sums, r->sv_sums, sizeof n->sv_sums);
}

/* Same durable meaning (everything but the sequence). */
static bool sb_same(const struct vsr_superblock *a, const struct vsr_superblock *b)
{
    return a->flags == b->flags && a->view == b->view && a->log_view == b->log_view &&
           a->commit_max == b->commit_max &&
           a->sv_op == b->sv_op && sum_eq(a->sv_checksum, b->sv_checksum) &&
           a->sv_count == b->sv_count && memcmp(a->sv_sums, b->sv_sums, sizeof a->sv_sums) == 0;
}

/* The log view's installed head is sv_op: record its checksum and those of
 * the ops just below it. After a crash that lost the head entry (or its
 * body), the superblock still names the entries of the log view below it,
 * so the journal's copies of them can be verified instead of staying
 * unverified (and withholding a nack forever). */
static void sv_capture(struct vsr *r)
{
    VERITY_VERIFY(op_checksum(r, r->sv_op, r->sv_sum)); /* never record an unknown head */
    memset(r->sv_sums, 0, sizeof r->sv_sums);
    r->sv_count = 0;
    for (uint32_t i = 0; i < VSR_SB_SV_SUMS && r->sv_op > i + 1; i++) {
        uint64_t k = r->sv_op - 1 - i;
        if (k < r->commit_min)
            break;
        op_checksum(r, k, r->sv_sums[i]); /* zero when not known */
        r->sv_count = i + 1;
    }
}

/* Asks for the superblock to record view, log_view, commit_max and the
 * installed head. Copies are written one after another; after_sb runs once
 * all are durable. An update asked for while one is being written follows
 * it, unless the one being written already records the same. */
static void sb_request(struct vsr *r, struct vsr_outbox *ob)
{
    struct vsr_superblock want;
    sb_wanted(r, &want);
    if (r->sb_writing) {
        if (!sb_same(&want, &r->sb_next))
            r->sb_again = true;
        return;
    }
    r->sb_next = want;
    struct vsr_superblock disk = want;
    if (plant(r, VSR_PLANT_FORGET_VIEW)) {
        disk.view = 0; /* planted bug (d): the view never reaches the disk */
        disk.log_view = 0;
    }
    vsr_sb_encode(r->cfg.hash, r->cfg.ctx, &disk, r->sb_bytes);
    r->sb_writing = true;
    r->sb_wid = ++r->wid_next;
    sb_emit_copy(r, ob, 0);
}

/* ---- journal writes --------------------------------------------------------- */

/* Writes entry h + body into its slot: prepare first, header mark after. */
static void write_entry(struct vsr *r, struct vsr_outbox *ob, const struct vsr_header *h,
                        const uint8_t *body)
{
    struct vsr_slot *s = slot_of(r, h->op);
    if (ob->nwrites == ob->writes_cap)
        return; /* retried through repair */
    uint8_t *b = ob_alloc(ob, VSR_HEADER_SIZE + h->size);
    if (!b)
        return;
    VERITY_VERIFY(h->op > r->commit_min);
    VERITY_VERIFY(h->op < r->commit_min + 1 + r->cfg.slots);
    vsr_header_encode(&r->cfg, h, body, b);
    memcpy(b + VSR_HEADER_SIZE, body, h->size);
    /* Overwriting a durable copy of the same entry: until the new copy is
     * durable the slot may hold a torn write of an entry this replica
     * acknowledged, so it sends no nack for it meanwhile. */
    if (s->disk_valid && s->disk_op == h->op && sum_eq(s->disk_sum, h->checksum)) {
        s->faulty = true;
        s->faulty_lv = r->log_view;
    }
    s->wstage = 1;
    s->wid = ++r->wid_next;
    s->wh = *h;
    s->disk_valid = false;
    s->unverified = false;
    struct vsr_write *w = &ob->writes[ob->nwrites++];
    w->kind = VSR_WRITE_PREPARE;
    w->slot = (uint32_t)(h->op % r->cfg.slots);
    w->op = h->op;
    w->id = s->wid;
    w->bytes = b;
    w->len = VSR_HEADER_SIZE + h->size;
}

/* ---- canonical log ----------------------------------------------------------- */

/* Sets the canonical entry of op k to checksum sum (and the full header when
 * known). A disk copy that matches supplies the full header. */
static void adopt(struct vsr *r, uint64_t k, const uint8_t *sum, const struct vsr_header *full)
{
    struct vsr_slot *s = slot_of(r, k);
    VERITY_VERIFY(k > r->commit_min);
    if (k >= r->commit_min + 1 + r->cfg.slots)
        return; /* no slot for it until this replica applies more */
    if (s->canon && s->h.op == k && sum_eq(s->h.checksum, sum)) {
        if (full && !s->full) {
            s->h = *full;
            s->full = true;
        }
        return;
    }
    if (s->canon && s->h.op == k)
        r->ctr.stale_dropped++;
    memset(&s->h, 0, sizeof s->h);
    s->canon = true;
    s->full = false;
    s->oks = 0;
    s->rq_tick = 0;
    s->h.op = k;
    memcpy(s->h.checksum, sum, VSR_CHECKSUM_SIZE);
    if (full) {
        VERITY_VERIFY(full->op == k && sum_eq(full->checksum, sum));
        s->h = *full;
        s->full = true;
    } else if (s->disk_valid && s->disk_op == k && sum_eq(s->disk_sum, sum)) {
        struct vsr_header h;
        const uint8_t *body;
        if (read_entry(r, k, sum, &h, &body)) {
            s->h = h;
            s->full = true;
        }
    }
}

/* Follows parent links down from op k, adopting each parent as canonical,
 * until the applied prefix or a link that is not known yet. `follower`: a
 * backup appending (planted bug (c) trusts its own entry there). */
static void link_down(struct vsr *r, uint64_t k, bool follower)
{
    uint64_t steps = 0;
    while (k > r->commit_min + 1 && steps++ < r->cfg.slots) {
        struct vsr_slot *s = slot_of(r, k);
        if (!(s->canon && s->h.op == k && s->full))
            return;
        uint64_t p = k - 1;
        struct vsr_slot *ps = slot_of(r, p);
        if (follower && plant(r, VSR_PLANT_SKIP_CHAIN) && ps->disk_valid && ps->disk_op == p &&
            !(ps->canon && ps->h.op == p)) {
            /* planted bug (c): take whatever the disk holds at p as canonical */
            struct vsr_header h;
            const uint8_t *body;
            if (read_entry(r, p, ps->disk_sum, &h, &body)) {
                ps->h = h;
                ps->canon = ps->full = true;
                ps->oks = 0;
            }
        } else if (!(follower && plant(r, VSR_PLANT_SKIP_CHAIN) && ps->canon && ps->h.op == p)) {
            adopt(r, p, s->h.parent, NULL);
        }
        k = p;
    }
}

/* Drops canonical entries above op (truncation of an uncommitted suffix). */
static void truncate_above(struct vsr *r, uint64_t op)
{
    for (uint64_t k = op + 1; k <= r->op; k++) {
        struct vsr_slot *s = slot_of(r, k);
        if (s->canon && s->h.op == k) {
            s->canon = false;
            s->oks = 0;
            r->ctr.stale_dropped++;
        }
    }
    VERITY_VERIFY(op >= r->commit_min);
    r->op = op;
}

/* A replica takes a newer log view whose log ends at head: whatever its
 * journal holds above head from an older log view was not committed (the new
 * log holds every committed op), and it has acknowledged nothing above head in
 * the new one yet. So the slots of the ops above head may say "never
 * prepared" again: a faulty or unverified flag there is about an older log and
 * would otherwise withhold this replica's nack forever (when the replica that
 * held that entry is gone, no view change could ever truncate past it). Only
 * for a log view newer than the one the flags were set in. */
static void forget_stale_above(struct vsr *r, uint64_t head)
{
    for (uint64_t k = head + 1; k <= r->commit_min + r->cfg.slots; k++) {
        struct vsr_slot *s = slot_of(r, k);
        if (canon_at(r, k) || s->wstage)
            continue;
        s->faulty = false;
        s->unverified = false;
    }
}

/* ---- commits ------------------------------------------------------------------ */

static struct client_entry *client_slot(struct vsr *r, uint64_t client)
{
    return &r->clients[client % VSR_CLIENTS_MAX];
}

static void send_reply(struct vsr *r, struct vsr_outbox *ob, const struct client_entry *c)
{
    struct vsr_msg *m = msg_new(r, ob, VSR_MSG_REPLY, BCAST);
    if (!m)
        return;
    m->client = c->client;
    m->request = c->request;
    m->op = c->op;
    memcpy(m->checksum, c->checksum, VSR_CHECKSUM_SIZE);
}

/* Applies committed ops in order while the log holds them intact. */
static void apply(struct vsr *r, struct vsr_outbox *ob)
{
    while (r->commit_min < r->commit_max && r->commit_min < r->op) {
        uint64_t k = r->commit_min + 1;
        struct vsr_slot *s = slot_of(r, k);
        if (!has_op(r, k) || ob->ncommits == ob->commits_cap)
            return;
        struct vsr_header h;
        const uint8_t *body;
        if (!read_entry(r, k, s->h.checksum, &h, &body))
            return;
        if (!s->full) {
            s->h = h; /* known by checksum only so far: the disk has the rest */
            s->full = true;
        }
        if (!sum_eq(h.parent, r->commit_sum) && !plant(r, VSR_PLANT_SKIP_CHAIN)) {
            /* The entry does not link to the applied prefix: it is stale.
             * Forget it; the parent link from above names the right one. */
            s->canon = false;
            r->ctr.stale_dropped++;
            return;
        }
        uint8_t *copy = ob_alloc(ob, h.size ? h.size : 1);
        if (!copy)
            return;
        memcpy(copy, body, h.size);
        struct vsr_commit *c = &ob->commits[ob->ncommits++];
        c->op = k;
        c->header = h;
        c->body = copy;
        r->cfg.hash(r->cfg.ctx, r->digest, VSR_CHECKSUM_SIZE, h.checksum, VSR_CHECKSUM_SIZE,
                    r->digest);
        memcpy(c->digest, r->digest, VSR_CHECKSUM_SIZE);
        memcpy(r->commit_sum, h.checksum, VSR_CHECKSUM_SIZE);
        r->commit_min = k;
        VERITY_VERIFY(r->commit_min <= r->commit_max);
        if (h.client) {
            struct client_entry *ce = client_slot(r, h.client);
            if (ce->client != h.client || ce->request < h.request) {
                ce->client = h.client;
                ce->request = h.request;
                ce->op = k;
                memcpy(ce->checksum, h.checksum, VSR_CHECKSUM_SIZE);
            }
            if (r->status == VSR_NORMAL && primary_of(r, r->view) == r->cfg.replica)
                send_reply(r, ob, ce);
        }
    }
}

/* Primary: raise commit_max over ops that hold a replication quorum. */
static void primary_commit(struct vsr *r, struct vsr_outbox *ob)
{
    int need = plant(r, VSR_PLANT_COMMIT_MINORITY) ? 1 : r->quorum;
    while (r->commit_max < r->op) {
        uint64_t k = r->commit_max + 1;
        struct vsr_slot *s = slot_of(r, k);
        if (!canon_at(r, k))
            break;
        uint8_t oks = s->oks;
        if (has_op(r, k))
            oks |= (uint8_t)(1u << r->cfg.replica);
        if (popcount8(oks) < need)
            break;
        r->commit_max = k;
    }
    apply(r, ob);
}

/* ---- messages out --------------------------------------------------------------- */

static void send_prepare(struct vsr *r, struct vsr_outbox *ob, uint64_t k, uint8_t to)
{
    struct vsr_slot *s = slot_of(r, k);
    struct vsr_header h;
    const uint8_t *body;
    if (!canon_at(r, k) || !read_entry(r, k, s->h.checksum, &h, &body))
        return;
    uint8_t *copy = ob_alloc(ob, h.size ? h.size : 1);
    if (!copy)
        return;
    memcpy(copy, body, h.size);
    struct vsr_msg *m = msg_new(r, ob, VSR_MSG_PREPARE, to);
    if (!m)
        return;
    m->header = h;
    m->body = copy;
    m->body_len = h.size;
}

static void send_prepare_ok(struct vsr *r, struct vsr_outbox *ob, uint64_t k)
{
    if (r->status != VSR_NORMAL || primary_of(r, r->view) == r->cfg.replica ||
        r->sb.log_view != r->view || !has_op(r, k) || (r->rejoining && !r->rj_probed))
        return;
    struct vsr_msg *m = msg_new(r, ob, VSR_MSG_PREPARE_OK, primary_of(r, r->view));
    if (!m)
        return;
    m->op = k;
    memcpy(m->checksum, slot_of(r, k)->h.checksum, VSR_CHECKSUM_SIZE);
}

/* Whether a faulty slot withholds this replica's nack for op k. The damage
 * was found in log view faulty_lv: what the slot may have held acknowledged
 * is an entry of that view or older. In a newer log view, an op above the
 * installed head (sv_op) is an entry created in the log view itself, which
 * this replica has not written since (a write clears the flag): for such an
 * op the old damage says nothing, and the replica may nack it. */
static bool faulty_for(const struct vsr *r, const struct vsr_slot *s, uint64_t k)
{
    return s->faulty && !(s->faulty_lv < r->log_view && k > r->sv_op);
}

/* What this replica says about op k in a DVC / SV window. */
static void window_entry(struct vsr *r, uint64_t k, struct vsr_wentry *w)
{
    const struct vsr_slot *s = slot_of(r, k);
    memset(w, 0, sizeof *w);
    if (canon_at(r, k) && k > r->commit_min) {
        w->h = s->h;
        w->full = s->full;
        bool other = s->disk_valid && s->disk_op == k && !sum_eq(s->disk_sum, s->h.checksum);
        bool same = s->disk_valid && s->disk_op == k && sum_eq(s->disk_sum, s->h.checksum);
        /* A slot damaged in log view faulty_lv may have held an acknowledged
         * entry of that view or an older one, never one created later: for
         * a canonical entry of a newer view the damage is no reason to hold
         * back a nack (it never wrote that entry since, or the write would
         * have cleared the flag). */
        bool damaged = s->faulty && !(s->full && s->h.view > s->faulty_lv);
        if (has_op(r, k) && s->full)
            w->status = VSR_W_HAVE;
        else if (same || damaged || (s->unverified && !other))
            w->status = VSR_W_HEADER; /* holds it, or may have acknowledged it */
        else
            w->status = VSR_W_NACK; /* never held it durably (or holds another entry) */
        return;
    }
    /* Unverified: the disk holds an entry for this op that no link has
     * named yet; it might be the canonical one. An entry dropped from the
     * canonical log in memory (truncated by a view change, or stale after a
     * restart) was never committed, so holding it is no reason to hold back
     * a nack. */
    bool unverified_here = s->unverified && s->disk_valid && s->disk_op == k;
    if (k <= r->commit_min || faulty_for(r, s, k) || unverified_here) {
        w->status = VSR_W_UNKNOWN;
        if (k == r->commit_min) {
            w->status = VSR_W_HEADER;
            w->h.op = k;
            memcpy(w->h.checksum, r->commit_sum, VSR_CHECKSUM_SIZE);
        }
        return;
    }
    w->status = VSR_W_NACK;
}

static void fill_window(struct vsr *r, struct vsr_msg *m, uint64_t lo, uint64_t hi)
{
    if (lo < 1)
        lo = 1;
    m->window_base = lo;
    m->window_len = 0;
    for (uint64_t k = lo; k <= hi && m->window_len < VSR_WINDOW_MAX; k++)
        window_entry(r, k, &m->window[m->window_len++]);
}

/* What DVC d says about op k: its window, or past it a nack when it has no
 * faulty slot, else nothing. */
static int dvc_status(const struct vsr_msg *d, uint64_t k, uint32_t slots,
                      const struct vsr_wentry **w)
{
    *w = NULL;
    if (k >= d->window_base && k < d->window_base + d->window_len) {
        *w = &d->window[k - d->window_base];
        return (*w)->status;
    }
    if (k >= d->window_base + d->window_len && d->nack_above) {
        for (uint32_t i = 0; i < d->faulty_n && i < VSR_FAULTY_LIST_MAX; i++)
            if (d->faulty[i] == k % slots)
                return VSR_W_UNKNOWN;
        return VSR_W_NACK;
    }
    return VSR_W_UNKNOWN;
}

static void build_dvc(struct vsr *r, struct vsr_msg *m)
{
    memset(m, 0, offsetof(struct vsr_msg, window));
    m->type = VSR_MSG_DO_VIEW_CHANGE;
    m->from = r->cfg.replica;
    m->to = primary_of(r, r->view);
    m->cluster = r->cfg.cluster;
    m->view = r->view;
    m->log_view = r->log_view;
    m->op = r->op;
    m->commit = r->commit_max;
    uint64_t p = r->cfg.pipeline;
    fill_window(r, m, r->op > p ? r->op - p : 1, r->op + p);
    m->nack_above = true;
    m->faulty_n = 0;
    for (uint32_t i = 0; i < r->cfg.slots; i++)
        /* ops past the window are above the installed head: a slot
         * damaged in an older log view does not count there (faulty_for) */
        if ((r->slots[i].faulty && !(r->slots[i].faulty_lv < r->log_view && r->op >= r->sv_op)) ||
            (r->slots[i].unverified && r->slots[i].disk_valid && r->slots[i].disk_op > r->op)) {
            if (m->faulty_n == VSR_FAULTY_LIST_MAX)
                m->nack_above = false; /* too many to list: no nack past the window */
            else
                m->faulty[m->faulty_n++] = i;
        }
}

static void send_start_view(struct vsr *r, struct vsr_outbox *ob, uint8_t to)
{
    struct vsr_msg *m = msg_new(r, ob, VSR_MSG_START_VIEW, to);
    if (!m)
        return;
    m->log_view = r->view;
    m->op = r->op;
    uint64_t p = r->cfg.pipeline;
    fill_window(r, m, r->op > p ? r->op - p : 1, r->op);
}

static void send_svc(struct vsr *r, struct vsr_outbox *ob)
{
    if (r->rejoining)
        return; /* votes in no view change until caught up */
    struct vsr_msg t;
    memset(&t, 0, offsetof(struct vsr_msg, window));
    t.type = VSR_MSG_START_VIEW_CHANGE;
    t.from = r->cfg.replica;
    t.cluster = r->cfg.cluster;
    t.view = r->view;
    t.commit = r->commit_max;
    for (uint8_t i = 0; i < r->cfg.replica_count; i++) {
        if (i == r->cfg.replica)
            continue;
        struct vsr_msg *m = msg_new(r, ob, VSR_MSG_START_VIEW_CHANGE, i);
        if (!m)
            return;
        memcpy(m, &t, offsetof(struct vsr_msg, window));
        m->to = i;
    }
}

/* Repair requests are windowed: an op asked for within the last retry
 * period counts as in flight and is not asked for again before that (a
 * lost request or answer is asked again on the next retry). The retry tick
 * asks for up to `budget` ops; every accepted repair and every batch of
 * headers learned asks for more at once (repairs_ask), so a replica that
 * lags inside the journal keeps a window of repairs in flight instead of
 * one per retry period. */
static bool repair_recent(const struct vsr *r, const struct vsr_slot *s)
{
    return s->rq_tick && r->ticks + 1 - s->rq_tick < r->cfg.retry_ticks;
}

/* Asks for up to budget canonical ops it lacks in (commit_min, op], lowest
 * first: each of a peer in turn (to < 0), of every peer (to_all) or of peer
 * `to`. */
static void repairs_ask(struct vsr *r, struct vsr_outbox *ob, bool to_all, int to_one, int budget)
{
    int sent = 0;
    if (r->cfg.replica_count == 1)
        return; /* nobody to ask (and no peer index to rotate over) */
    for (uint64_t k = r->commit_min + 1; k <= r->op && sent < budget; k++) {
        struct vsr_slot *s = slot_of(r, k);
        if (!canon_at(r, k) || has_op(r, k) || s->wstage || repair_recent(r, s))
            continue;
        for (uint8_t i = 0; i < r->cfg.replica_count; i++) {
            uint8_t to =
                to_all ? i
                : to_one >= 0
                    ? (uint8_t)to_one
                    : (uint8_t)((r->cfg.replica + 1 +
                                 (k + r->ticks / r->cfg.retry_ticks) % (r->cfg.replica_count - 1)) %
                                r->cfg.replica_count);
            if (to == r->cfg.replica)
                continue;
            struct vsr_msg *m = msg_new(r, ob, VSR_MSG_REQUEST_PREPARE, to);
            if (!m)
                return;
            m->op = k;
            memcpy(m->checksum, s->h.checksum, VSR_CHECKSUM_SIZE);
            if (!to_all)
                break;
        }
        s->rq_tick = r->ticks + 1;
        sent++;
    }
}

/* Headers per HEADERS message: at most a quarter of the journal. */
static uint32_t headers_max(const struct vsr *r)
{
    uint32_t n = r->cfg.slots / 4;
    return n < 1 ? 1 : n > VSR_HEADERS_MAX ? VSR_HEADERS_MAX : n;
}

/* Catch-up by headers: the highest op in (commit_min, op] whose canonical
 * checksum is unknown lies just below an op whose checksum is known (the
 * anchor). Asks peer `to` for the headers of the ops from the anchor down,
 * chained by parent links (REQUEST_HEADERS; on_headers takes only what
 * chains down from the anchor). Without this a replica learns the ops it
 * lacks one parent link per repaired entry. */
static void request_headers(struct vsr *r, struct vsr_outbox *ob, int to)
{
    if (r->cfg.replica_count == 1)
        return;
    uint64_t lo = r->commit_min + 1;
    uint64_t top = r->op < r->commit_min + r->cfg.slots ? r->op : r->commit_min + r->cfg.slots;
    uint64_t k = top;
    while (k >= lo && canon_at(r, k))
        k--;
    if (k < lo || k == top)
        return; /* no gap, or nothing known above it to chain from */
    uint64_t hi = k + 1;
    uint32_t n = headers_max(r);
    if (to < 0)
        to = (int)((r->cfg.replica + 1 + (r->ticks / r->cfg.retry_ticks) % (r->cfg.replica_count - 1)) %
                   r->cfg.replica_count);
    struct vsr_msg *m = msg_new(r, ob, VSR_MSG_REQUEST_HEADERS, (uint8_t)to);
    if (!m)
        return;
    m->op = hi;
    m->op_min = hi - lo + 1 > n ? hi - n + 1 : lo;
    memcpy(m->checksum, slot_of(r, hi)->h.checksum, VSR_CHECKSUM_SIZE);
}

/* Asks peers for every canonical op it lacks in (commit_min, op] (windowed,
 * above), and for the headers of the ops whose checksums it does not know. */
static void request_repairs(struct vsr *r, struct vsr_outbox *ob, bool to_all)
{
    repairs_ask(r, ob, to_all, -1, (int)r->cfg.pipeline * 2);
    request_headers(r, ob, -1);
}

static void maybe_request_state(struct vsr *r, struct vsr_outbox *ob)
{
    uint64_t seen = r->commit_seen > r->commit_max ? r->commit_seen : r->commit_max;
    if (seen <= r->commit_min + r->cfg.slots / 2 || r->cfg.replica_count == 1)
        return;
    uint8_t to = (uint8_t)((r->cfg.replica + 1 +
                            (r->ticks / r->cfg.retry_ticks) % (r->cfg.replica_count - 1)) %
                           r->cfg.replica_count);
    struct vsr_msg *m = msg_new(r, ob, VSR_MSG_REQUEST_STATE, to);
    if (m)
        m->op = r->commit_min;
}

/* ---- view change ------------------------------------------------------------------ */

static void vc_process(struct vsr *r, struct vsr_outbox *ob);
static void send_probe(struct vsr *r, struct vsr_outbox *ob);
static void rejoin_target(struct vsr *r, const struct vsr_msg *m);

static void start_view_change(struct vsr *r, struct vsr_outbox *ob, uint64_t v)
{
    VERITY_VERIFY(v >= r->view);
    if (r->rejoining || (v == r->view && r->status == VSR_VIEW_CHANGE))
        return;
    r->view = v;
    r->status = VSR_VIEW_CHANGE;
    r->pv_view = 0;
    r->pv_from = 0;
    r->svc_from = (uint8_t)(1u << r->cfg.replica);
    r->dvc_from = 0;
    r->vc_installed = false;
    r->vc_ready = false;
    r->since_vc = 0;
    for (uint32_t i = 0; i < r->cfg.slots; i++)
        r->slots[i].oks = 0;
    sb_request(r, ob); /* never vote in a view the disk forgets */
    send_svc(r, ob);
}

static void send_dvc(struct vsr *r, struct vsr_outbox *ob)
{
    if (r->status != VSR_VIEW_CHANGE || popcount8(r->svc_from) < r->quorum ||
        r->sb.view < r->view || r->sb_writing || r->rejoining)
        return;
    if (primary_of(r, r->view) == r->cfg.replica) {
        build_dvc(r, &r->dvc[r->cfg.replica]);
        r->dvc_from |= (uint8_t)(1u << r->cfg.replica);
        vc_process(r, ob);
        return;
    }
    struct vsr_msg *m = msg_new(r, ob, VSR_MSG_DO_VIEW_CHANGE, primary_of(r, r->view));
    if (m)
        build_dvc(r, m);
}

/* ---- leader stickiness (pre-vote) -------------------------------------------
 *
 * A replica that still hears its primary does not help anyone replace it.
 * A backup (or a recovering replica) that times out on its primary does not
 * start view v + 1 at once: it sends PRE_VIEW_CHANGE(v + 1) and changes
 * nothing else (no superblock write, no status change). Only when f + 1
 * replicas, itself included, have timed out and want that view does it
 * start the view change (START_VIEW_CHANGE, superblock). A replica that has
 * heard from its primary within the lease (vc_fresh) ignores a pre-vote: it
 * neither joins nor counts it, so one restarted or partitioned replica
 * cannot unseat a primary that a majority still hears. START_VIEW_CHANGE,
 * DO_VIEW_CHANGE and START_VIEW of a newer view are still joined at once:
 * their sender started the view only on f + 1 pre-votes (or its primary
 * handed over, or a view change of its own failed), so a quorum has
 * already moved. Safety does not depend on any of this (it rests on the DVC
 * quorum and durable views, unchanged); docs/REPLICATION.md, "Leader
 * stickiness", has the liveness argument. */

/* True while the replica counts as hearing its primary: NORMAL primary
 * (it hears itself), or a NORMAL / RECOVERING replica whose primary spoke
 * (or which entered its view) less than timeout_ticks - retry_ticks ago.
 * The retry_ticks margin: the backups of a dead primary stopped hearing it
 * at nearly the same time, so when the first of them times out (at
 * timeout_ticks plus its stagger) the others no longer count as fresh,
 * even if their last heartbeat came a few ticks later. */
static bool vc_fresh(const struct vsr *r)
{
    if (r->status == VSR_VIEW_CHANGE)
        return false;
    if (r->status == VSR_NORMAL && primary_of(r, r->view) == r->cfg.replica)
        return true;
    return (uint64_t)r->since_primary + r->cfg.retry_ticks < r->cfg.timeout_ticks;
}

static void send_pvc(struct vsr *r, struct vsr_outbox *ob)
{
    for (uint8_t i = 0; i < r->cfg.replica_count; i++) {
        if (i == r->cfg.replica)
            continue;
        struct vsr_msg *m = msg_new(r, ob, VSR_MSG_PRE_VIEW_CHANGE, i);
        if (!m)
            return;
        m->view = r->pv_view;
    }
}

/* The replica (timed out, not fresh) wants view v: becomes a candidate for
 * it (or for a newer one already proposed), counts `from` (a peer's
 * pre-vote, or none: 0xff), and starts the view change on f + 1. */
static void prevote(struct vsr *r, struct vsr_outbox *ob, uint64_t v, uint8_t from)
{
    if (r->rejoining || vc_fresh(r) || v <= r->view)
        return;
    bool fresh_vote = false;
    if (r->pv_view <= r->view || v > r->pv_view) {
        /* first proposal, or a newer one: votes for another view do not count */
        r->pv_view = v;
        r->pv_from = (uint8_t)(1u << r->cfg.replica);
        fresh_vote = true;
    } else if (v < r->pv_view) {
        return; /* it will hear this replica's newer proposal */
    }
    if (from != 0xff)
        r->pv_from |= (uint8_t)(1u << from);
    if (popcount8(r->pv_from) >= r->quorum) {
        /* The others that want the view join this START_VIEW_CHANGE when
         * it reaches them (a newer view's SVC is always joined), so they
         * count at once, as their own SVC would (one message delay less;
         * the SVC quorum only paces the view change, safety rests on the
         * DVC quorum). */
        uint8_t want = r->pv_from;
        start_view_change(r, ob, r->pv_view);
        r->svc_from |= want;
        send_dvc(r, ob);
        return;
    }
    if (fresh_vote)
        send_pvc(r, ob);
}

/* New primary: with a DVC quorum, install the canonical suffix once, then
 * truncate what a nack quorum disowns, repair the rest, and take the view
 * when the log is intact. Runs again whenever a DVC or a repair arrives. */
static void vc_process(struct vsr *r, struct vsr_outbox *ob)
{
    if (r->status != VSR_VIEW_CHANGE || primary_of(r, r->view) != r->cfg.replica ||
        popcount8(r->dvc_from) < r->quorum || r->vc_ready)
        return;
    if (!((r->dvc_from >> r->cfg.replica) & 1)) {
        /* Its own log always counts (it may be the only one that names an
         * entry); it votes once its superblock holds the view. */
        if (r->sb.view < r->view || r->sb_writing)
            return;
        build_dvc(r, &r->dvc[r->cfg.replica]);
        r->dvc_from |= (uint8_t)(1u << r->cfg.replica);
    }
    if (!r->vc_installed) {
        uint64_t lv = 0, head = 0, commit = r->commit_max;
        for (int i = 0; i < r->cfg.replica_count; i++)
            if ((r->dvc_from >> i) & 1) {
                if (r->dvc[i].log_view > lv)
                    lv = r->dvc[i].log_view;
                if (r->dvc[i].commit > commit)
                    commit = r->dvc[i].commit;
            }
        for (int i = 0; i < r->cfg.replica_count; i++)
            if (((r->dvc_from >> i) & 1) && r->dvc[i].log_view == lv && r->dvc[i].op > head)
                head = r->dvc[i].op;
        /* Protocol-aware: a replica of log view lv whose slot for head + 1 is faulty may
         * have acknowledged an op there that nobody reported. Go on only
         * when a nack quorum says op head + 1 was never prepared (then
         * nothing above it was committed either); else wait for more DVCs. */
        int nacks_next = 0;
        for (int i = 0; i < r->cfg.replica_count; i++) {
            const struct vsr_wentry *w;
            if (!((r->dvc_from >> i) & 1))
                continue;
            /* A replica of an older log view never acknowledged an op of
             * log view lv (it would have installed lv first). */
            if (r->dvc[i].log_view < lv ||
                dvc_status(&r->dvc[i], head + 1, r->cfg.slots, &w) == VSR_W_NACK)
                nacks_next++;
        }
        /* A single replica has nobody to ask: a damaged slot past its head
         * is taken as the torn write of the crash (it has no redundancy to
         * lose anyway). */
        if (nacks_next < r->quorum && r->cfg.replica_count > 1 && !plant(r, VSR_PLANT_TRUNCATE_ONE))
            return;
        if (head < r->commit_min)
            head = r->commit_min;
        if (head >= r->commit_min + r->cfg.slots) {
            /* Too far behind to hold the log: catch up by state transfer. */
            if (commit > r->commit_seen)
                r->commit_seen = commit;
            maybe_request_state(r, ob);
            return;
        }
        /* The primary that prepared head had committed up to head - pipeline. */
        if (head > r->cfg.pipeline && head - r->cfg.pipeline > commit)
            commit = head - r->cfg.pipeline;
        truncate_above(r, r->op > head ? head : r->op);
        r->op = head;
        /* Canonical headers from the DVCs of the newest log view, top down. */
        for (uint64_t k = head; k > r->commit_min && k + VSR_WINDOW_MAX > head; k--) {
            const struct vsr_wentry *best = NULL;
            for (int i = 0; i < r->cfg.replica_count; i++) {
                const struct vsr_msg *d = &r->dvc[i];
                if (!((r->dvc_from >> i) & 1) || d->log_view != lv || k < d->window_base ||
                    k >= d->window_base + d->window_len)
                    continue;
                const struct vsr_wentry *w = &d->window[k - d->window_base];
                bool hdr = w->status == VSR_W_HAVE || w->status == VSR_W_HEADER ||
                           (w->status == VSR_W_NACK && w->h.op == k);
                if (hdr && w->h.op == k && (!best || (w->full && !best->full)))
                    best = w;
            }
            if (best)
                adopt(r, k, best->h.checksum, best->full ? &best->h : NULL);
            else if (k < head && canon_at(r, k + 1) && slot_of(r, k + 1)->full)
                adopt(r, k, slot_of(r, k + 1)->h.parent, NULL);
            else if (slot_of(r, k)->h.op == k)
                slot_of(r, k)->canon = false; /* unknown until a parent link names it */
        }
        for (uint64_t k = head; k > r->commit_min; k--)
            if (k + VSR_WINDOW_MAX <= head && canon_at(r, k))
                slot_of(r, k)->canon = false; /* re-linked from above, or repaired */
        link_down(r, head, false);
        r->commit_max = commit > head ? head : commit;
        if (r->commit_max < r->commit_min)
            r->commit_max = r->commit_min;
        r->vc_installed = true;
    }
    /* Nack quorum: the lowest op above the commit number that f + 1
     * replicas never prepared cannot have been committed; cut from there. */
    for (uint64_t k = r->commit_max + 1; k <= r->op; k++) {
        if (has_op(r, k))
            continue;
        int nacks = 0;
        bool known = canon_at(r, k);
        for (int i = 0; i < r->cfg.replica_count; i++) {
            const struct vsr_wentry *w;
            if (!((r->dvc_from >> i) & 1))
                continue;
            int st = dvc_status(&r->dvc[i], k, r->cfg.slots, &w);
            if (st == VSR_W_NACK)
                nacks++;
            else if (known && w && (w->status == VSR_W_HAVE || w->status == VSR_W_HEADER) &&
                     w->h.op == k && !sum_eq(w->h.checksum, slot_of(r, k)->h.checksum))
                nacks++;
        }
        int need = r->quorum;
        if (plant(r, VSR_PLANT_TRUNCATE_ONE)) {
            /* planted bug (b): the new primary's own word is enough */
            const struct vsr_msg *me = &r->dvc[r->cfg.replica];
            need = 1;
            if (k >= me->window_base && k < me->window_base + me->window_len &&
                me->window[k - me->window_base].status != VSR_W_HAVE)
                nacks = nacks > 0 ? nacks : 1;
        }
        if (nacks >= need) {
            VERITY_VERIFY(k > r->commit_max);
            r->ctr.nack_truncations += r->op - k + 1;
            truncate_above(r, k - 1);
            break;
        }
    }
    for (uint64_t k = r->commit_min + 1; k <= r->op; k++)
        if (!has_op(r, k))
            return; /* repairs are asked for on the retry tick */
    /* Before serving, read the whole log back: a write that went to the
     * wrong place (or rotted) is found here, not by a backup later. */
    for (uint64_t k = r->commit_min + 1; k <= r->op; k++) {
        struct vsr_header h;
        const uint8_t *body;
        if (!read_entry(r, k, slot_of(r, k)->h.checksum, &h, &body))
            return;
    }
    /* Log intact: record the view as this replica's log view, then serve. */
    r->vc_ready = true;
    if (r->view > r->log_view)
        forget_stale_above(r, r->op);
    r->log_view = r->view;
    r->sv_op = r->op;
    sv_capture(r);
    sb_request(r, ob);
}

static void become_primary(struct vsr *r, struct vsr_outbox *ob)
{
    VERITY_VERIFY(r->status == VSR_VIEW_CHANGE && r->vc_ready);
    if (!vsr_log_intact(r)) {
        r->vc_ready = false; /* lost an entry meanwhile: repair it first */
        return;
    }
    r->status = VSR_NORMAL;
    r->ctr.view_changes++;
    r->since_heartbeat = 0;
    r->since_retry = 0;
    for (uint64_t k = r->commit_min + 1; k <= r->op; k++)
        slot_of(r, k)->oks = (uint8_t)(1u << r->cfg.replica);
    for (uint8_t i = 0; i < r->cfg.replica_count; i++)
        if (i != r->cfg.replica)
            send_start_view(r, ob, i);
    primary_commit(r, ob);
}

/* Backup: install a START_VIEW (its superblock update, then NORMAL). */
/* The START_VIEW's own header for its head op, or NULL. */
static const struct vsr_wentry *sv_head_entry(const struct vsr_msg *m)
{
    if (m->window_len == 0 || m->op < m->window_base || m->op >= m->window_base + m->window_len)
        return NULL;
    const struct vsr_wentry *w = &m->window[m->op - m->window_base];
    return w->h.op == m->op && w->status != VSR_W_UNKNOWN ? w : NULL;
}

/* Rejoin: the first START_VIEW taken after f + 1 peers told their views
 * (its view is at least the highest of them, so at least any view this
 * replica voted or acknowledged in before its disk was wiped) names a head
 * at or above every op this replica may have acknowledged then: once it has
 * applied up to there, nothing it says in a view change can disown such an
 * op. */
static void rejoin_target(struct vsr *r, const struct vsr_msg *m)
{
    if (!r->rejoining || r->rj_target_set)
        return;
    r->rj_target_set = true;
    r->rj_target = m->op > m->commit ? m->op : m->commit;
}

static void install_start_view(struct vsr *r, struct vsr_outbox *ob, const struct vsr_msg *m)
{
    /* A START_VIEW must name its head entry (else the installed head would
     * be unknown, and the superblock would record no checksum for it). */
    if (m->op > r->commit_min && !sv_head_entry(m))
        return;
    r->view = m->view;
    r->status = VSR_VIEW_CHANGE; /* until the superblock says log_view == view */
    r->vc_ready = false;
    r->vc_installed = false;
    r->svc_from = 0;
    r->since_vc = 0;
    r->since_primary = 0;
    uint64_t head = m->op < r->commit_min ? r->commit_min : m->op;
    if (head >= r->commit_min + r->cfg.slots) {
        /* Too far behind to hold this log: state transfer first. The
         * commit number is not this log's: it only says how far to go. */
        if (m->commit > r->commit_seen)
            r->commit_seen = m->commit;
        rejoin_target(r, m);
        if (r->rejoining)
            r->status = VSR_RECOVERING; /* asks again once the state is here */
        maybe_request_state(r, ob);
        return;
    }
    rejoin_target(r, m);
    /* A START_VIEW of the view its log already belongs to (a late or
     * repeated one) never cuts: entries past its head came from the same
     * primary after it was sent. */
    uint64_t sv_head = head;
    uint8_t known[VSR_CHECKSUM_SIZE];
    if (m->view == r->log_view && r->op > head && op_checksum(r, r->op, known))
        head = r->op;
    truncate_above(r, r->op > head ? head : r->op);
    if (head > r->op)
        r->op = head;
    /* Forget the old suffix: only what the START_VIEW names, and what its
     * parent links name from there down, is canonical now. */
    for (uint64_t k = r->commit_min + 1; k <= sv_head; k++)
        if (canon_at(r, k))
            slot_of(r, k)->canon = false;
    for (uint32_t i = 0; i < m->window_len; i++) {
        const struct vsr_wentry *w = &m->window[i];
        uint64_t k = m->window_base + i;
        if (k <= r->commit_min || k > head || w->h.op != k)
            continue;
        /* Every header the new primary names is canonical in its view,
         * whatever it says about its own copy (one still being written
         * reads NACK). */
        if (w->status != VSR_W_UNKNOWN)
            adopt(r, k, w->h.checksum, w->full ? &w->h : NULL);
    }
    for (uint64_t k = head; k > r->commit_min; k--)
        if (!canon_at(r, k) && k < head && canon_at(r, k + 1) && slot_of(r, k + 1)->full)
            adopt(r, k, slot_of(r, k + 1)->h.parent, NULL);
    link_down(r, head, true);
    if (m->commit > r->commit_max)
        r->commit_max = m->commit > head ? head : m->commit;
    if (m->view > r->log_view)
        forget_stale_above(r, head);
    r->log_view = m->view;
    r->sv_op = head;
    sv_capture(r);
    sb_request(r, ob);
}

static void become_backup(struct vsr *r, struct vsr_outbox *ob)
{
    r->status = VSR_NORMAL;
    r->since_primary = 0;
    for (uint64_t k = r->commit_min + 1; k <= r->op; k++)
        if (has_op(r, k) && k > r->commit_max)
            send_prepare_ok(r, ob, k);
    apply(r, ob);
}

/* Runs when a superblock update is durable. */
static void after_sb(struct vsr *r, struct vsr_outbox *ob)
{
    if (r->formatting) {
        r->formatting = false;
        if (r->rejoining) {
            send_probe(r, ob); /* stays RECOVERING: learn the view first */
            return;
        }
        if (r->view == 0 && r->status == VSR_RECOVERING) {
            r->status = VSR_NORMAL;
            r->since_primary = 0;
        }
        return;
    }
    if (r->status != VSR_NORMAL && r->sb.log_view == r->view && r->log_view == r->view) {
        if (primary_of(r, r->view) == r->cfg.replica) {
            if (r->status == VSR_VIEW_CHANGE && r->vc_ready)
                become_primary(r, ob);
        } else {
            become_backup(r, ob);
        }
    }
    if (r->status == VSR_VIEW_CHANGE)
        send_dvc(r, ob);
}

/* Rejoin: asks every peer for its view (answers carry the nonce of this
 * start, so an answer to an earlier life's question does not count). */
static void send_probe(struct vsr *r, struct vsr_outbox *ob)
{
    for (uint8_t i = 0; i < r->cfg.replica_count; i++) {
        if (i == r->cfg.replica)
            continue;
        struct vsr_msg *m = msg_new(r, ob, VSR_MSG_REQUEST_VIEW, i);
        if (!m)
            return;
        m->op = r->cfg.rejoin_nonce;
    }
}

static void enter_recovering(struct vsr *r, struct vsr_outbox *ob, uint64_t v)
{
    r->view = v;
    r->status = VSR_RECOVERING;
    r->since_primary = 0;
    struct vsr_msg *m = msg_new(r, ob, VSR_MSG_REQUEST_START_VIEW, primary_of(r, v));
    (void)m;
}

/* ---- message handlers ----------------------------------------------------------- */

static void on_request(struct vsr *r, struct vsr_outbox *ob, const struct vsr_msg *m)
{
    if (r->status != VSR_NORMAL || primary_of(r, r->view) != r->cfg.replica || m->client == 0 ||
        m->body_len > r->cfg.body_max)
        return;
    struct client_entry *ce = client_slot(r, m->client);
    if (ce->client == m->client && m->request <= ce->request) {
        if (m->request == ce->request)
            send_reply(r, ob, ce);
        return;
    }
    for (uint64_t k = r->commit_max + 1; k <= r->op; k++) {
        const struct vsr_slot *s = slot_of(r, k);
        if (s->full && s->h.client == m->client && s->h.request >= m->request)
            return; /* in the pipeline already */
    }
    uint64_t k = r->op + 1;
    if (r->op - r->commit_max >= r->cfg.pipeline || k >= r->commit_min + 1 + r->cfg.slots ||
        ob->nwrites == ob->writes_cap || slot_of(r, k)->wstage)
        return; /* the client retries */
    struct vsr_header h = {0};
    VERITY_VERIFY(op_checksum(r, r->op, h.parent));
    h.op = k;
    h.view = r->view;
    h.size = m->body_len;
    h.client = m->client;
    h.request = m->request;
    header_seal(&r->cfg, &h, m->body);
    struct vsr_slot *s = slot_of(r, k);
    s->canon = s->full = true;
    s->h = h;
    s->oks = 0;
    r->op = k;
    size_t nw = ob->nwrites;
    write_entry(r, ob, &h, m->body);
    if (ob->nwrites == nw) {
        s->canon = false; /* no room in the outbox: the client retries */
        r->op = k - 1;
        return;
    }
    for (uint8_t i = 0; i < r->cfg.replica_count; i++) {
        if (i == r->cfg.replica)
            continue;
        struct vsr_msg *p = msg_new(r, ob, VSR_MSG_PREPARE, i);
        if (!p)
            break;
        p->header = h;
        p->body = ob->writes[ob->nwrites - 1].bytes + VSR_HEADER_SIZE;
        p->body_len = h.size;
    }
    VERITY_VERIFY(r->op - r->commit_max <= r->cfg.pipeline);
}

/* A backup hears from the primary of a newer view than its own. */
static bool catch_up_view(struct vsr *r, struct vsr_outbox *ob, const struct vsr_msg *m)
{
    if (m->view > r->view) {
        enter_recovering(r, ob, m->view);
        return true;
    }
    return false;
}

static void on_prepare(struct vsr *r, struct vsr_outbox *ob, const struct vsr_msg *m)
{
    if (catch_up_view(r, ob, m) || m->view != r->view || r->status != VSR_NORMAL ||
        primary_of(r, r->view) == r->cfg.replica || m->from != primary_of(r, r->view))
        return;
    r->since_primary = 0;
    const struct vsr_header *h = &m->header;
    struct vsr_header x = *h;
    if (m->body_len != h->size || h->size > r->cfg.body_max || h->view > m->view || h->op == 0)
        return;
    header_seal(&r->cfg, &x, m->body);
    if (!sum_eq(x.checksum, h->checksum))
        return; /* a body that does not match its checksum */
    uint64_t k = h->op;
    if (m->commit > r->commit_max)
        r->commit_max = m->commit;
    if (k <= r->commit_min) {
        /* Applied here already (a new primary may know less): say so, it
         * is durable here. */
        const struct vsr_slot *s = slot_of(r, k);
        if (r->sb.log_view == r->view && s->disk_valid && s->disk_op == k &&
            sum_eq(s->disk_sum, h->checksum)) {
            struct vsr_msg *ok = msg_new(r, ob, VSR_MSG_PREPARE_OK, m->from);
            if (ok) {
                ok->op = k;
                memcpy(ok->checksum, h->checksum, VSR_CHECKSUM_SIZE);
            }
        }
        return;
    }
    if (k >= r->commit_min + 1 + r->cfg.slots) {
        apply(r, ob);
        return; /* no room until this replica catches up */
    }
    if (canon_at(r, k) && sum_eq(slot_of(r, k)->h.checksum, h->checksum) &&
        (has_op(r, k) || slot_of(r, k)->wstage)) {
        send_prepare_ok(r, ob, k);
        apply(r, ob);
        return;
    }
    if (k > r->op)
        r->op = k;
    /* Chain check: the entry below must be h's parent; a different entry
     * there is stale and gets repaired (planted bug (c) skips this). */
    if (k - 1 > r->commit_min && !plant(r, VSR_PLANT_SKIP_CHAIN))
        adopt(r, k - 1, h->parent, NULL);
    else if (k - 1 == r->commit_min && !sum_eq(h->parent, r->commit_sum) &&
             !plant(r, VSR_PLANT_SKIP_CHAIN))
        return; /* does not link to what this replica applied */
    adopt(r, k, h->checksum, h);
    if (has_op(r, k))
        send_prepare_ok(r, ob, k); /* the disk held it already */
    else
        write_entry(r, ob, h, m->body);
    link_down(r, k, true);
    apply(r, ob);
}

static void on_prepare_ok(struct vsr *r, struct vsr_outbox *ob, const struct vsr_msg *m)
{
    if (m->view != r->view || r->status != VSR_NORMAL || primary_of(r, r->view) != r->cfg.replica ||
        m->op <= r->commit_max || m->op > r->op)
        return;
    struct vsr_slot *s = slot_of(r, m->op);
    if (!canon_at(r, m->op) || !sum_eq(s->h.checksum, m->checksum))
        return;
    s->oks |= (uint8_t)(1u << m->from);
    primary_commit(r, ob);
}

static void on_commit(struct vsr *r, struct vsr_outbox *ob, const struct vsr_msg *m)
{
    if (catch_up_view(r, ob, m) || m->view != r->view || r->status != VSR_NORMAL ||
        m->from != primary_of(r, r->view) || primary_of(r, r->view) == r->cfg.replica)
        return;
    r->since_primary = 0;
    if (m->commit <= r->commit_min)
        return;
    if (m->commit > r->commit_seen)
        r->commit_seen = m->commit;
    if (m->commit > r->commit_max)
        r->commit_max = m->commit;
    if (m->commit < r->commit_min + 1 + r->cfg.slots) {
        if (m->commit > r->op)
            r->op = m->commit;
        adopt(r, m->commit, m->checksum, NULL);
        link_down(r, m->commit, true);
    }
    apply(r, ob);
}

static void on_svc(struct vsr *r, struct vsr_outbox *ob, const struct vsr_msg *m)
{
    if (m->view < r->view || r->rejoining)
        return;
    if (m->view == r->view && r->status == VSR_NORMAL) {
        if (primary_of(r, r->view) == r->cfg.replica)
            send_start_view(r, ob, m->from);
        return;
    }
    if (m->view > r->view || r->status == VSR_RECOVERING)
        start_view_change(r, ob, m->view);
    r->svc_from |= (uint8_t)(1u << m->from);
    send_dvc(r, ob);
}

/* A pre-vote: the sender timed out on its primary and wants view m->view. A
 * replica that still hears its primary ignores it (its primary answers
 * with START_VIEW: a sender that is behind catches up); one that has timed
 * out too (or is in a view change) counts it and may start the view. */
static void on_pvc(struct vsr *r, struct vsr_outbox *ob, const struct vsr_msg *m)
{
    if (r->rejoining)
        return;
    if (m->view > r->view + 1) {
        /* A pre-vote for view x comes from a replica in view x - 1 (a
         * candidate always proposes its view + 1): a newer view than this
         * replica's exists, so its own
         * primary is being (or was) replaced whatever it hears. Join, as a
         * START_VIEW_CHANGE of a newer view; else a primary with no working
         * quorum left could keep a replica that moved on stranded. */
        start_view_change(r, ob, m->view);
        r->svc_from |= (uint8_t)(1u << m->from);
        send_dvc(r, ob);
        return;
    }
    if (r->status == VSR_NORMAL && primary_of(r, r->view) == r->cfg.replica) {
        send_start_view(r, ob, m->from);
        return;
    }
    prevote(r, ob, m->view, m->from);
}

static void on_dvc(struct vsr *r, struct vsr_outbox *ob, const struct vsr_msg *m)
{
    if (m->view < r->view || primary_of(r, m->view) != r->cfg.replica ||
        m->window_len > VSR_WINDOW_MAX || m->log_view > m->view ||
        m->faulty_n > VSR_FAULTY_LIST_MAX || r->rejoining)
        return;
    if (m->view == r->view && r->status == VSR_NORMAL) {
        send_start_view(r, ob, m->from);
        return;
    }
    if (m->view > r->view || r->status == VSR_RECOVERING)
        start_view_change(r, ob, m->view);
    r->svc_from |= (uint8_t)(1u << m->from);
    r->dvc[m->from] = *m;
    r->dvc_from |= (uint8_t)(1u << m->from);
    send_dvc(r, ob);
    vc_process(r, ob);
}

static void on_start_view(struct vsr *r, struct vsr_outbox *ob, const struct vsr_msg *m)
{
    if (m->view < r->view || (m->view == r->view && r->status == VSR_NORMAL) ||
        m->from != primary_of(r, m->view) || primary_of(r, m->view) == r->cfg.replica ||
        m->window_len > VSR_WINDOW_MAX || (r->rejoining && !r->rj_probed))
        return;
    install_start_view(r, ob, m);
}

static void on_request_start_view(struct vsr *r, struct vsr_outbox *ob, const struct vsr_msg *m)
{
    if (m->view == r->view && r->status == VSR_NORMAL && primary_of(r, r->view) == r->cfg.replica)
        send_start_view(r, ob, m->from);
}

static void on_request_prepare(struct vsr *r, struct vsr_outbox *ob, const struct vsr_msg *m)
{
    struct vsr_header h;
    const uint8_t *body;
    if (m->op == 0 || !read_entry(r, m->op, m->checksum, &h, &body))
        return;
    uint8_t *copy = ob_alloc(ob, h.size ? h.size : 1);
    if (!copy)
        return;
    memcpy(copy, body, h.size);
    struct vsr_msg *a = msg_new(r, ob, VSR_MSG_REPAIR, m->from);
    if (!a)
        return;
    a->header = h;
    a->body = copy;
    a->body_len = h.size;
}

static void on_repair(struct vsr *r, struct vsr_outbox *ob, const struct vsr_msg *m)
{
    const struct vsr_header *h = &m->header;
    uint64_t k = h->op;
    if (k <= r->commit_min || k > r->op || m->body_len != h->size || h->size > r->cfg.body_max)
        return;
    struct vsr_slot *s = slot_of(r, k);
    if (!canon_at(r, k) || !sum_eq(s->h.checksum, h->checksum) || has_op(r, k) || s->wstage)
        return;
    struct vsr_header x = *h;
    header_seal(&r->cfg, &x, m->body);
    if (!sum_eq(x.checksum, h->checksum))
        return;
    s->h = *h;
    s->full = true;
    r->ctr.repairs++;
    write_entry(r, ob, h, m->body);
    link_down(r, k, primary_of(r, r->view) != r->cfg.replica);
    /* Keep the window full: one more op from the peer that answered. */
    repairs_ask(r, ob, false, m->from, 1);
}

/* The header of the entry (k, sum) if this replica knows it: a fully known
 * canonical slot (applied or not), else its durable header mark. */
static bool header_of(struct vsr *r, uint64_t k, const uint8_t *sum, struct vsr_header *h)
{
    const struct vsr_slot *s = slot_of(r, k);
    if (s->canon && s->full && s->h.op == k && sum_eq(s->h.checksum, sum)) {
        *h = s->h;
        return true;
    }
    if (!s->disk_valid || s->disk_op != k || !sum_eq(s->disk_sum, sum) || s->wstage)
        return false;
    uint32_t len = 0;
    if (r->cfg.read_header(r->cfg.ctx, (uint32_t)(k % r->cfg.slots), r->rbuf, r->rbuf_cap, &len) !=
            0 ||
        len < VSR_HEADER_SIZE || vsr_header_decode(&r->cfg, r->rbuf, h) != 0)
        return false;
    return h->op == k && sum_eq(h->checksum, sum);
}

/* A peer asks for the headers of [op_min, op], chained down from the entry
 * (op, checksum): the answer stops at the first one this replica does not
 * know, so it is always a chain (the asker checks it again). */
static void on_request_headers(struct vsr *r, struct vsr_outbox *ob, const struct vsr_msg *m)
{
    uint32_t max = headers_max(r);
    if (m->op == 0 || m->op_min == 0 || m->op_min > m->op)
        return;
    uint8_t *b = ob_alloc(ob, (size_t)max * VSR_HEADER_SIZE);
    if (!b)
        return;
    uint8_t want[VSR_CHECKSUM_SIZE];
    memcpy(want, m->checksum, VSR_CHECKSUM_SIZE);
    uint32_t n = 0;
    for (uint64_t k = m->op; k >= m->op_min && n < max; k--) {
        struct vsr_header h;
        if (!header_of(r, k, want, &h))
            break;
        vsr_header_encode(&r->cfg, &h, NULL, b + (size_t)n * VSR_HEADER_SIZE);
        memcpy(want, h.parent, VSR_CHECKSUM_SIZE);
        n++;
    }
    if (n == 0)
        return;
    struct vsr_msg *a = msg_new(r, ob, VSR_MSG_HEADERS, m->from);
    if (!a)
        return;
    a->op = m->op;
    a->body = b;
    a->body_len = n * VSR_HEADER_SIZE;
}

/* Headers from a peer. One is taken only when its checksum is the canonical
 * checksum this replica already trusts at its op (from a prepare, a commit,
 * a view change or a parent link): its parent is then canonical at op - 1,
 * exactly as a parent link of a repaired entry, and the next header must
 * match that. A header that does not chain is ignored. Only checksums are
 * learned (adopt without the full header): the bodies come by repair, each
 * checked against its checksum, and apply checks every parent link again. */
static void on_headers(struct vsr *r, struct vsr_outbox *ob, const struct vsr_msg *m)
{
    uint32_t n = m->body_len / VSR_HEADER_SIZE;
    if (m->body_len == 0 || m->body_len % VSR_HEADER_SIZE || n > headers_max(r) || !m->body)
        return;
    uint32_t learned = 0;
    for (uint32_t i = 0; i < n; i++) {
        struct vsr_header h;
        if (vsr_header_decode(&r->cfg, m->body + (size_t)i * VSR_HEADER_SIZE, &h) != 0)
            break;
        uint64_t k = h.op;
        if (k <= r->commit_min + 1 || k > r->op || k >= r->commit_min + 1 + r->cfg.slots)
            continue;
        if (!canon_at(r, k) || !sum_eq(slot_of(r, k)->h.checksum, h.checksum))
            continue; /* not chained to a trusted checksum */
        if (canon_at(r, k - 1) && sum_eq(slot_of(r, k - 1)->h.checksum, h.parent))
            continue;
        adopt(r, k - 1, h.parent, NULL);
        learned++;
    }
    if (!learned)
        return;
    r->ctr.headers_learned += learned;
    repairs_ask(r, ob, false, m->from, (int)r->cfg.pipeline * 4);
    request_headers(r, ob, m->from);
}

static void on_request_state(struct vsr *r, struct vsr_outbox *ob, const struct vsr_msg *m)
{
    if (r->commit_min <= m->op)
        return;
    struct vsr_msg *a = msg_new(r, ob, VSR_MSG_STATE, m->from);
    if (!a)
        return;
    a->op = r->commit_min;
    memcpy(a->checksum, r->commit_sum, VSR_CHECKSUM_SIZE);
    memcpy(a->digest, r->digest, VSR_CHECKSUM_SIZE);
}

static void on_state(struct vsr *r, struct vsr_outbox *ob, const struct vsr_msg *m)
{
    /* Bounded by what it has heard is committed (commit_seen: a START_VIEW
     * too far ahead to install raises only that, not commit_max). */
    uint64_t seen = r->commit_seen > r->commit_max ? r->commit_seen : r->commit_max;
    if (m->op <= r->commit_min || m->op > seen + r->cfg.slots * 4)
        return;
    /* A committed prefix from a peer: everything up to m->op is applied. */
    r->commit_min = m->op;
    memcpy(r->commit_sum, m->checksum, VSR_CHECKSUM_SIZE);
    memcpy(r->digest, m->digest, VSR_CHECKSUM_SIZE);
    if (r->commit_max < m->op)
        r->commit_max = m->op;
    if (r->op < m->op)
        r->op = m->op;
    ob->install = true;
    ob->install_op = m->op;
    memcpy(ob->install_checksum, m->checksum, VSR_CHECKSUM_SIZE);
    memcpy(ob->install_digest, m->digest, VSR_CHECKSUM_SIZE);
    r->ctr.state_transfers++;
    for (uint64_t k = r->op; k > r->commit_min + 1; k--)
        if (canon_at(r, k) && slot_of(r, k)->full) {
            link_down(r, k, false);
            break;
        }
    apply(r, ob);
}

/* A rejoining replica asks for views. A replica that rejoins itself does
 * not answer: its view says nothing about what it promised before. */
static void on_request_view(struct vsr *r, struct vsr_outbox *ob, const struct vsr_msg *m)
{
    if (r->rejoining)
        return;
    struct vsr_msg *a = msg_new(r, ob, VSR_MSG_VIEW, m->from);
    if (a)
        a->op = m->op;
}

/* Rejoin: waits for a START_VIEW of view v (asks its primary, unless that
 * is itself: then the others move past v without it). */
static void rejoin_follow(struct vsr *r, struct vsr_outbox *ob, uint64_t v)
{
    r->view = v;
    r->status = VSR_RECOVERING;
    r->since_primary = 0;
    if (primary_of(r, v) != r->cfg.replica)
        msg_new(r, ob, VSR_MSG_REQUEST_START_VIEW, primary_of(r, v));
}

static void on_view(struct vsr *r, struct vsr_outbox *ob, const struct vsr_msg *m)
{
    if (!r->rejoining || m->op != r->cfg.rejoin_nonce)
        return;
    if (!r->rj_probed) {
        r->rj_from |= (uint8_t)(1u << m->from);
        if (m->view > r->rj_view)
            r->rj_view = m->view;
        if (popcount8(r->rj_from) < r->quorum)
            return;
        /* f + 1 peers answered: any view this replica took part in before
         * its disk was wiped is at most rj_view (a view began only with f
         * + 1 replicas in it, f of them other than this one). Follow a
         * START_VIEW of rj_view or newer only. */
        r->rj_probed = true;
        rejoin_follow(r, ob, r->rj_view > r->view ? r->rj_view : r->view);
        return;
    }
    if (m->view > r->view)
        rejoin_follow(r, ob, m->view);
}

/* Rejoin ends once the replica has applied the head of the first START_VIEW
 * it took; the superblock records it. */
static void rejoin_check(struct vsr *r, struct vsr_outbox *ob)
{
    if (!r->rejoining || !r->rj_target_set || r->status != VSR_NORMAL ||
        r->commit_min < r->rj_target)
        return;
    r->rejoining = false;
    r->ctr.rejoins++;
    sb_request(r, ob);
}

/* Ticks of a rejoining replica: it never times out into a view change. */
static void rejoin_tick(struct vsr *r, struct vsr_outbox *ob, bool retry, uint32_t timeout)
{
    if (r->formatting)
        return; /* first superblock not durable yet */
    switch (r->status) {
    case VSR_NORMAL: /* a backup (never a primary while rejoining) */
        if (++r->since_primary >= timeout) {
            r->since_primary = 0;
            send_probe(r, ob); /* a newer view may have begun without it */
        }
        if (retry) {
            request_repairs(r, ob, false);
            maybe_request_state(r, ob);
        }
        break;
    case VSR_VIEW_CHANGE: /* installing a START_VIEW */
        if (++r->since_vc >= 2 * timeout) {
            rejoin_follow(r, ob, r->view);
            break;
        }
        if (retry && r->log_view == r->view && !r->sb_writing && r->sb.log_view != r->view)
            sb_request(r, ob);
        break;
    case VSR_RECOVERING:
        if (retry) {
            if (!r->rj_probed || primary_of(r, r->view) == r->cfg.replica)
                send_probe(r, ob);
            else
                msg_new(r, ob, VSR_MSG_REQUEST_START_VIEW, primary_of(r, r->view));
            request_repairs(r, ob, false);
            maybe_request_state(r, ob);
        }
        break;
    }
}

typedef void (*handler_fn)(struct vsr *, struct vsr_outbox *, const struct vsr_msg *);

static const handler_fn handlers[VSR_MSG_TYPE_COUNT] = {
    [VSR_MSG_REQUEST] = on_request,
    [VSR_MSG_PREPARE] = on_prepare,
    [VSR_MSG_PREPARE_OK] = on_prepare_ok,
    [VSR_MSG_COMMIT] = on_commit,
    [VSR_MSG_START_VIEW_CHANGE] = on_svc,
    [VSR_MSG_DO_VIEW_CHANGE] = on_dvc,
    [VSR_MSG_START_VIEW] = on_start_view,
    [VSR_MSG_REQUEST_START_VIEW] = on_request_start_view,
    [VSR_MSG_REQUEST_PREPARE] = on_request_prepare,
    [VSR_MSG_REPAIR] = on_repair,
    [VSR_MSG_REQUEST_STATE] = on_request_state,
    [VSR_MSG_STATE] = on_state,
    [VSR_MSG_REQUEST_VIEW] = on_request_view,
    [VSR_MSG_VIEW] = on_view,
    [VSR_MSG_REQUEST_HEADERS] = on_request_headers,
    [VSR_MSG_HEADERS] = on_headers,
    [VSR_MSG_PRE_VIEW_CHANGE] = on_pvc,
};

void vsr_on_message(struct vsr *r, const struct vsr_msg *m, struct vsr_outbox *ob)
{
    vsr_outbox_clear(ob);
    if (m->type == 0 || m->type >= VSR_MSG_TYPE_COUNT || !handlers[m->type] ||
        m->cluster != r->cfg.cluster)
        return;
    if (m->type != VSR_MSG_REQUEST &&
        (m->from >= r->cfg.replica_count || m->from == r->cfg.replica))
        return;
    r->ctr.msgs_in[m->type]++;
    handlers[m->type](r, ob, m);
    rejoin_check(r, ob);
    vsr_verify(r);
}

/* A backup or recovering replica past its own timeout: proposes view + 1
 * (once), and asks again every retry period until f + 1 want it or its
 * primary speaks. */
static void candidate_tick(struct vsr *r, struct vsr_outbox *ob, bool retry)
{
    if (r->pv_view <= r->view)
        prevote(r, ob, r->view + 1, 0xff);
    else if (retry)
        send_pvc(r, ob);
}

void vsr_on_tick(struct vsr *r, struct vsr_outbox *ob)
{
    vsr_outbox_clear(ob);
    r->ticks++;
    bool primary = primary_of(r, r->view) == r->cfg.replica;
    bool retry = ++r->since_retry >= r->cfg.retry_ticks;
    if (retry)
        r->since_retry = 0;
    uint32_t timeout = r->cfg.timeout_ticks + r->cfg.replica * r->cfg.retry_ticks;
    if (r->rejoining) {
        rejoin_tick(r, ob, retry, timeout);
        apply(r, ob);
        rejoin_check(r, ob);
        vsr_verify(r);
        return;
    }
    if (vc_fresh(r)) {
        r->pv_view = 0; /* it hears its primary (again): no candidacy */
        r->pv_from = 0;
    }
    switch (r->status) {
    case VSR_NORMAL:
        if (primary) {
            if (++r->since_heartbeat >= r->cfg.heartbeat_ticks) {
                r->since_heartbeat = 0;
                for (uint8_t i = 0; i < r->cfg.replica_count; i++) {
                    if (i == r->cfg.replica)
                        continue;
                    struct vsr_msg *m = msg_new(r, ob, VSR_MSG_COMMIT, i);
                    if (m && !op_checksum(r, r->commit_max, m->checksum))
                        ob->nmsgs--; /* not applied nor canonical yet: next beat */
                }
            }
            /* A primary that lost an entry and cannot get it back from any
             * backup hands over: the view change truncates it by nack
             * quorum if nobody holds it. */
            bool lost = false;
            for (uint64_t k = r->commit_min + 1; k <= r->op && !lost; k++)
                lost = !has_op(r, k) && !slot_of(r, k)->wstage; /* not merely in flight */
            if (!lost)
                r->since_intact = 0;
            else if (++r->since_intact >= timeout) {
                r->since_intact = 0;
                start_view_change(r, ob, r->view + 1);
                break;
            }
            if (retry) {
                for (uint64_t k = r->commit_max + 1; k <= r->op; k++)
                    for (uint8_t i = 0; i < r->cfg.replica_count; i++)
                        if (i != r->cfg.replica && !((slot_of(r, k)->oks >> i) & 1))
                            send_prepare(r, ob, k, i);
                request_repairs(r, ob, false);
            }
        } else {
            if (r->since_primary < UINT32_MAX)
                r->since_primary++;
            if (r->since_primary >= timeout) {
                candidate_tick(r, ob, retry);
                if (r->status != VSR_NORMAL)
                    break;
            }
            if (retry) {
                request_repairs(r, ob, false);
                maybe_request_state(r, ob);
            }
        }
        break;
    case VSR_VIEW_CHANGE:
        if (++r->since_vc >= 2 * timeout) {
            start_view_change(r, ob, r->view + 1);
            break;
        }
        if (retry) {
            send_svc(r, ob);
            send_dvc(r, ob);
            if (primary && !r->vc_ready) {
                request_repairs(r, ob, true);
                maybe_request_state(r, ob);
                vc_process(r, ob);
            }
            if (!primary && r->log_view == r->view && !r->sb_writing && r->sb.log_view != r->view)
                sb_request(r, ob);
        }
        break;
    case VSR_RECOVERING:
        if (r->since_primary < UINT32_MAX)
            r->since_primary++;
        if (r->since_primary >= timeout) {
            candidate_tick(r, ob, retry);
            if (r->status != VSR_RECOVERING)
                break;
        }
        if (retry) {
            msg_new(r, ob, VSR_MSG_REQUEST_START_VIEW, primary_of(r, r->view));
            request_repairs(r, ob, false);
            maybe_request_state(r, ob);
        }
        break;
    }
    apply(r, ob);
    vsr_verify(r);
}

void vsr_on_peer_lost(struct vsr *r, uint8_t replica, struct vsr_outbox *ob)
{
    vsr_outbox_clear(ob);
    if (r->status != VSR_NORMAL || r->rejoining || replica >= r->cfg.replica_count ||
        replica == r->cfg.replica || replica != primary_of(r, r->view))
        return;
    uint32_t at = r->cfg.timeout_ticks > VSR_LOST_GRACE_TICKS
                      ? r->cfg.timeout_ticks - VSR_LOST_GRACE_TICKS
                      : 0;
    if (r->since_primary < at)
        r->since_primary = at;
    vsr_verify(r);
}

void vsr_on_write_done(struct vsr *r, const struct vsr_write *w, struct vsr_outbox *ob)
{
    vsr_outbox_clear(ob);
    if (w->kind == VSR_WRITE_SUPERBLOCK) {
        if (!r->sb_writing || w->id != r->sb_wid)
            return;
        if (w->slot + 1 < VSR_SB_COPIES) {
            sb_emit_copy(r, ob, w->slot + 1);
            return;
        }
        r->sb = r->sb_next;
        r->sb_writing = false;
        /* What is durable now may already be what the replica waits for:
         * act on it even when a newer update follows (a backup that keeps
         * hearing START_VIEW while writing must not wait forever). */
        if (r->sb_again) {
            struct vsr_superblock want;
            r->sb_again = false;
            sb_wanted(r, &want);
            if (!sb_same(&want, &r->sb))
                sb_request(r, ob);
        }
        after_sb(r, ob);
        rejoin_check(r, ob);
        vsr_verify(r);
        return;
    }
    if (w->slot >= r->cfg.slots)
        return;
    struct vsr_slot *s = &r->slots[w->slot];
    if (s->wid != w->id)
        return; /* superseded by a later write to the slot */
    if (w->kind == VSR_WRITE_PREPARE && s->wstage == 1) {
        if (!prepare_in_place(r, w->slot, &s->wh)) {
            /* The prepare did not land where it was meant to (misdirected
             * or rotted): no mark, no prepare-ok; the entry is repaired. */
            s->wstage = 0;
            s->disk_valid = false;
            r->ctr.faulty_found++;
            return;
        }
        uint8_t *b = ob_alloc(ob, VSR_HEADER_SIZE);
        VERITY_VERIFY(b != NULL && ob->nwrites < ob->writes_cap);
        vsr_header_encode(&r->cfg, &s->wh, NULL, b);
        s->wstage = 2;
        struct vsr_write *x = &ob->writes[ob->nwrites++];
        x->kind = VSR_WRITE_HEADER;
        x->slot = w->slot;
        x->op = s->wh.op;
        x->id = s->wid;
        x->bytes = b;
        x->len = VSR_HEADER_SIZE;
        return;
    }
    if (w->kind != VSR_WRITE_HEADER || s->wstage != 2)
        return;
    s->wstage = 0;
    s->disk_valid = true;
    s->disk_op = s->wh.op;
    memcpy(s->disk_sum, s->wh.checksum, VSR_CHECKSUM_SIZE);
    s->faulty = false;
    uint64_t k = s->wh.op;
    if (has_op(r, k)) {
        if (r->status == VSR_NORMAL && primary_of(r, r->view) == r->cfg.replica)
            primary_commit(r, ob);
        else if (r->status == VSR_NORMAL && k > r->commit_min)
            send_prepare_ok(r, ob, k);
        else if (r->status == VSR_VIEW_CHANGE)
            vc_process(r, ob);
    }
    apply(r, ob);
    rejoin_check(r, ob);
    vsr_verify(r);
}

/* ---- init: superblock and journal recovery ------------------------------------------ */

size_t vsr_size(const struct vsr_config *cfg)
{
    size_t n = (sizeof(struct vsr) + 15) & ~(size_t)15;
    n += ((size_t)cfg->slots * sizeof(struct vsr_slot) + 15) & ~(size_t)15;
    n += VSR_HEADER_SIZE + (size_t)cfg->body_max;
    return n;
}

size_t vsr_outbox_arena_size(const struct vsr_config *cfg)
{
    size_t per = VSR_HEADER_SIZE + (size_t)cfg->body_max + 8;
    size_t init_scratch = (size_t)cfg->slots * (sizeof(struct vsr_header) + 1) + 16;
    return per * ((size_t)cfg->slots + (size_t)cfg->pipeline * VSR_REPLICAS_MAX * 4 + 16) +
           4 * VSR_SB_SIZE + init_scratch;
}

static bool all_zero(const uint8_t *b, uint32_t len)
{
    for (uint32_t i = 0; i < len; i++)
        if (b[i])
            return false;
    return true;
}

/* Classifies journal slot i from its prepare and its header mark (PAR). */
static void recover_slot(struct vsr *r, uint32_t i, struct vsr_header *cand, bool *has_cand)
{
    struct vsr_slot *s = &r->slots[i];
    struct vsr_header p, h;
    uint32_t plen = 0, hlen = 0;
    bool pv = false, hv = false, pempty, hempty;
    int rc = 0;
    /* Each read is tried up to three times: a transient read error must not
     * make an intact slot look damaged. */
    for (int attempt = 0; attempt < 3 && !pv; attempt++) {
        rc = r->cfg.read_prepare(r->cfg.ctx, i, r->rbuf, r->rbuf_cap, &plen);
        pv = rc == 0 && vsr_entry_check(&r->cfg, r->rbuf, plen, &p) == 0 &&
             p.op % r->cfg.slots == i && p.op > 0;
    }
    pempty = rc == 0 &&
             (plen == 0 || all_zero(r->rbuf, plen < VSR_HEADER_SIZE ? plen : VSR_HEADER_SIZE));
    uint8_t hb[VSR_HEADER_SIZE];
    for (int attempt = 0; attempt < 3 && !hv; attempt++) {
        rc = r->cfg.read_header(r->cfg.ctx, i, hb, sizeof hb, &hlen);
        hv = rc == 0 && hlen == VSR_HEADER_SIZE && vsr_header_decode(&r->cfg, hb, &h) == 0 &&
             h.op % r->cfg.slots == i && h.op > 0;
    }
    hempty = rc == 0 && (hlen == 0 || all_zero(hb, hlen));
    if (hv && h.op > r->sv_op && h.view < r->log_view && h.op > r->commit_min) {
        /* The mark names an entry above the installed head of its log view
         * but from an older view: every entry above that head is created in
         * the log view itself, so this one is not in the replica's log, was
         * not committed before the log view began, and was not acknowledged
         * in it. Whatever the replica acknowledged there long ago is no
         * reason to withhold its nack now: the mark counts as absent. */
        hv = false;
        hempty = true;
        r->ctr.stale_dropped++;
    }
    *has_cand = false;
    if (pv && hv && sum_eq(p.checksum, h.checksum)) {
        s->disk_valid = true; /* intact and marked */
    } else if (pv && hv && h.op > p.op) {
        /* The mark names a newer entry whose prepare is gone: corruption
         * (a misdirected or lost write) of an entry it may have acked. */
        if (h.op > r->commit_min) {
            s->faulty = true;
            s->faulty_lv = r->log_view;
            r->ctr.faulty_found++;
            *cand = h;
            *has_cand = true;
        }
        return;
    } else if (pv && hv && h.op == p.op) {
        /* Mark and prepare name different entries for one op: either the
         * prepare of the marked entry went astray, or a newer prepare was
         * never marked. The mark may have been acknowledged: faulty, unless
         * that op is applied already (a slot's ops only grow, so nothing
         * newer was written here). */
        if (h.op <= r->commit_min) {
            r->ctr.torn_found++;
            return;
        }
        s->faulty = true;
        s->faulty_lv = r->log_view;
        r->ctr.faulty_found++;
        s->disk_valid = true;
        s->disk_op = p.op;
        memcpy(s->disk_sum, p.checksum, VSR_CHECKSUM_SIZE);
        *cand = h.op > r->commit_min ? h : p;
        *has_cand = h.op > r->commit_min;
        return;
    } else if (pv && hv) {
        /* prepare newer than its mark: written, never marked, never acked */
        r->ctr.torn_found++;
        return;
    } else if (pv && !hv && !hempty) {
        /* The mark is damaged but the prepare is intact. A mark is written
         * only after its prepare was read back in place, and a slot's ops
         * only grow, so the mark named this entry (a torn or damaged mark
         * of it): keep the entry; nothing newer was acknowledged here. */
        r->ctr.torn_found++;
        if (p.op <= r->commit_min)
            return; /* applied already */
        s->disk_valid = true;
    } else if (pv && !hv) {
        r->ctr.torn_found++; /* never marked: not acknowledged */
        return;
    } else if (hv) {
        if (h.op > r->commit_min) { /* marked entry, bad prepare: corruption */
            s->faulty = true;
            s->faulty_lv = r->log_view;
            r->ctr.faulty_found++;
            *cand = h;
            *has_cand = true;
        } else if (!pempty) {
            r->ctr.torn_found++; /* torn write over an applied entry */
        }
        return;
    } else {
        if (!hempty) {
            s->faulty = true; /* mark damaged: cannot tell, assume the worst */
            s->faulty_lv = r->log_view;
            r->ctr.faulty_found++;
        } else if (!pempty) {
            r->ctr.torn_found++;
        }
        return;
    }
    s->disk_op = p.op;
    memcpy(s->disk_sum, p.checksum, VSR_CHECKSUM_SIZE);
    *cand = p;
    *has_cand = p.op > r->commit_min;
}

/* Rebuilds the canonical log from the candidates: entries prepared in
 * log_view above the installed head, then parent links down from the top. */
static void recover_log(struct vsr *r, const struct vsr_header *cands, const bool *has)
{
    uint64_t head = r->sv_op > r->commit_min ? r->sv_op : r->commit_min;
    for (uint32_t i = 0; i < r->cfg.slots; i++) {
        if (!has[i])
            continue;
        const struct vsr_header *c = &cands[i];
        if (c->op > r->sv_op && c->view == r->log_view && c->op > r->commit_min &&
            c->op < r->commit_min + 1 + r->cfg.slots) {
            struct vsr_slot *s = &r->slots[i];
            s->h = *c;
            s->canon = s->full = true;
            if (c->op > head)
                head = c->op;
        } else if (c->op <= r->sv_op && c->op > r->commit_min) {
            r->slots[i].unverified = true; /* until a link from above names it */
        }
    }
    r->op = head;
    if (r->sv_op > r->commit_min && r->sv_op + r->cfg.slots > head) {
        struct vsr_slot *s = slot_of(r, r->sv_op);
        if (has[r->sv_op % r->cfg.slots] && cands[r->sv_op % r->cfg.slots].op == r->sv_op &&
            sum_eq(cands[r->sv_op % r->cfg.slots].checksum, r->sv_sum)) {
            s->h = cands[r->sv_op % r->cfg.slots];
            s->canon = s->full = true;
            s->unverified = false;
        } else if (!canon_at(r, r->sv_op)) {
            adopt(r, r->sv_op, r->sv_sum, NULL);
        }
    }
    /* The superblock names the entries just below the installed head. */
    for (uint32_t i = 0; i < r->sv_count && r->sv_op > i + 1; i++) {
        uint64_t k = r->sv_op - 1 - i;
        uint32_t ki = (uint32_t)(k % r->cfg.slots);
        if (k <= r->commit_min || k + r->cfg.slots <= head || all_zero(r->sv_sums[i], 32))
            continue;
        struct vsr_slot *s = slot_of(r, k);
        if (has[ki] && cands[ki].op == k && sum_eq(cands[ki].checksum, r->sv_sums[i])) {
            s->h = cands[ki];
            s->canon = s->full = true;
            s->unverified = false;
        } else if (!canon_at(r, k)) {
            adopt(r, k, r->sv_sums[i], NULL);
        }
    }
    /* Walk down: each full canonical entry names its parent. */
    for (uint64_t k = head; k > r->commit_min + 1 && k + r->cfg.slots > head; k--) {
        struct vsr_slot *s = slot_of(r, k);
        if (!(s->canon && s->h.op == k && s->full))
            continue;
        uint64_t p = k - 1;
        struct vsr_slot *ps = slot_of(r, p);
        uint32_t pi = (uint32_t)(p % r->cfg.slots);
        if (has[pi] && cands[pi].op == p && sum_eq(cands[pi].checksum, s->h.parent)) {
            ps->h = cands[pi];
            ps->canon = ps->full = true;
            ps->unverified = false;
        } else if (!(ps->canon && ps->h.op == p && sum_eq(ps->h.checksum, s->h.parent))) {
            adopt(r, p, s->h.parent, NULL);
        }
    }
    for (uint32_t i = 0; i < r->cfg.slots; i++) {
        struct vsr_slot *s = &r->slots[i];
        if (s->canon && (s->h.op <= r->commit_min || s->h.op > r->op))
            s->canon = false;
        if (has[i] && !s->canon && cands[i].op > r->sv_op && cands[i].view != r->log_view)
            r->ctr.stale_dropped++; /* truncated by the view it installed */
    }
}

struct vsr *vsr_init(void *mem, const struct vsr_config *cfg, const struct vsr_state *state,
                     bool fresh, struct vsr_outbox *ob)
{
    vsr_outbox_clear(ob);
    if (!cfg->hash || !cfg->read_prepare || !cfg->read_header || !cfg->read_superblock ||
        cfg->replica_count == 0 || cfg->replica_count > VSR_REPLICAS_MAX ||
        cfg->replica_count % 2 == 0 || cfg->replica >= cfg->replica_count || cfg->pipeline == 0 ||
        cfg->pipeline > VSR_PIPELINE_MAX || cfg->slots <= 2 * cfg->pipeline + 2 ||
        cfg->retry_ticks == 0 || cfg->heartbeat_ticks == 0 || cfg->timeout_ticks == 0)
        return NULL;
    memset(mem, 0, vsr_size(cfg));
    struct vsr *r = mem;
    uint8_t *p = (uint8_t *)mem + ((sizeof(struct vsr) + 15) & ~(size_t)15);
    r->slots = (struct vsr_slot *)p;
    p += ((size_t)cfg->slots * sizeof(struct vsr_slot) + 15) & ~(size_t)15;
    r->rbuf = p;
    r->rbuf_cap = VSR_HEADER_SIZE + cfg->body_max;
    r->cfg = *cfg;
    r->f = (uint8_t)((cfg->replica_count - 1) / 2);
    r->quorum = (uint8_t)(r->f + 1);
    vsr_root_checksum(cfg, r->root);
    /* A single replica has nobody to learn from: its wiped disk is a new log. */
    bool rejoin = cfg->rejoin && cfg->replica_count > 1 && !plant(r, VSR_PLANT_IGNORE_REJOIN);

    r->commit_min = state->op;
    if (state->op == 0) {
        memcpy(r->commit_sum, r->root, VSR_CHECKSUM_SIZE);
        memset(r->digest, 0, VSR_CHECKSUM_SIZE);
    } else {
        memcpy(r->commit_sum, state->checksum, VSR_CHECKSUM_SIZE);
        memcpy(r->digest, state->digest, VSR_CHECKSUM_SIZE);
    }

    /* Superblock: the valid copy with the highest sequence. */
    uint8_t copies[VSR_SB_COPIES][VSR_SB_SIZE];
    const uint8_t *cp[VSR_SB_COPIES];
    size_t lens[VSR_SB_COPIES];
    for (uint32_t i = 0; i < VSR_SB_COPIES; i++) {
        uint32_t len = 0;
        int rc = cfg->read_superblock(cfg->ctx, i, copies[i], VSR_SB_SIZE, &len);
        cp[i] = rc == 0 ? copies[i] : NULL;
        lens[i] = len;
    }
    struct vsr_superblock sb;
    int rc = vsr_sb_choose(cfg->hash, cfg->ctx, cp, lens, VSR_SB_COPIES, &sb, NULL);
    if (rc == 0 && (sb.cluster != cfg->cluster || sb.replica != cfg->replica ||
                    sb.replica_count != cfg->replica_count))
        return NULL;
    if (rc != 0) {
        if (!fresh || state->op != 0)
            return NULL;            /* a replica that lost its superblock must not vote */
        r->status = VSR_RECOVERING; /* NORMAL once the superblock is durable */
        r->formatting = true;
        r->rejoining = rejoin; /* recorded in that superblock */
        memcpy(r->sv_sum, r->root, VSR_CHECKSUM_SIZE);
        sb_request(r, ob);
        vsr_verify(r);
        return r;
    }
    r->sb = sb;
    r->rejoining = (sb.flags & VSR_SB_REJOINING) != 0; /* a rejoin in progress resumes */
    r->view = sb.view;
    r->log_view = sb.log_view;
    r->commit_max = sb.commit_max > state->op ? sb.commit_max : state->op;
    r->sv_op = sb.sv_op;
    memcpy(r->sv_sum, sb.sv_checksum, VSR_CHECKSUM_SIZE);
    r->sv_count = sb.sv_count;
    memcpy(r->sv_sums, sb.sv_sums, sizeof r->sv_sums);

    /* Journal: classify every slot, then rebuild the canonical log. The
     * candidate headers live in the outbox arena only during init. */
    struct vsr_header *cands =
        (struct vsr_header *)ob_alloc(ob, sizeof(struct vsr_header) * cfg->slots);
    bool *has = (bool *)ob_alloc(ob, sizeof(bool) * cfg->slots);
    VERITY_VERIFY(cands != NULL && has != NULL);
    for (uint32_t i = 0; i < cfg->slots; i++)
        recover_slot(r, i, &cands[i], &has[i]);
    recover_log(r, cands, has);
    if (r->commit_max > r->op)
        r->commit_max = r->op;
    vsr_outbox_clear(ob);

    if (r->rejoining) {
        r->status = VSR_RECOVERING;
        send_probe(r, ob);
    } else if (cfg->replica_count == 1 || primary_of(r, r->view) == cfg->replica)
        start_view_change(r, ob, r->view + 1); /* never resume as primary of an old view */
    else if (r->log_view < r->view)
        start_view_change(r, ob, r->view);
    else
        enter_recovering(r, ob, r->view);
    vsr_verify(r);
    return r;
}

/* ---- read-only views ---------------------------------------------------------------- */

enum vsr_status vsr_status(const struct vsr *r)
{
    return r->status;
}
uint64_t vsr_view(const struct vsr *r)
{
    return r->view;
}
uint64_t vsr_log_view(const struct vsr *r)
{
    return r->log_view;
}
uint64_t vsr_op(const struct vsr *r)
{
    return r->op;
}
uint64_t vsr_commit_min(const struct vsr *r)
{
    return r->commit_min;
}
uint64_t vsr_commit_max(const struct vsr *r)
{
    return r->commit_max;
}
bool vsr_rejoining(const struct vsr *r, uint64_t *target)
{
    if (target)
        *target = r->rj_target_set ? r->rj_target : 0;
    return r->rejoining;
}

bool vsr_is_primary(const struct vsr *r)
{
    return r->status == VSR_NORMAL && primary_of(r, r->view) == r->cfg.replica;
}
const struct vsr_counters *vsr_counters(const struct vsr *r)
{
    return &r->ctr;
}

bool vsr_log_intact(const struct vsr *r)
{
    for (uint64_t k = r->commit_min + 1; k <= r->op; k++)
        if (!has_op(r, k))
            return false;
    return true;
}

bool vsr_checksum_of(const struct vsr *r, uint64_t op, uint8_t out[VSR_CHECKSUM_SIZE])
{
    return op_checksum(r, op, out);
}

void vsr_verify(const struct vsr *r)
{
    VERITY_VERIFY(r->log_view <= r->view);
    VERITY_VERIFY(r->commit_min <= r->op);
    VERITY_VERIFY(r->commit_min <= r->commit_max);
    VERITY_VERIFY(r->sb.log_view <= r->sb.view);
    VERITY_VERIFY(r->status == VSR_NORMAL || r->status == VSR_VIEW_CHANGE ||
                  r->status == VSR_RECOVERING);
    VERITY_VERIFY(!r->rejoining || !vsr_is_primary(r)); /* never serves before it votes */
    if (vsr_is_primary(r) && !plant(r, VSR_PLANT_COMMIT_MINORITY))
        VERITY_VERIFY(r->op - r->commit_max <= r->cfg.pipeline);
    for (uint64_t k = r->commit_min + 1; k <= r->op && k <= r->commit_min + r->cfg.slots; k++) {
        const struct vsr_slot *s = slot_of(r, k);
        VERITY_VERIFY(!s->canon || s->h.op % r->cfg.slots == k % r->cfg.slots);
    }
}

const char *vsr_msg_name(int type)
{
    static const char *const names[VSR_MSG_TYPE_COUNT] = {"none",
                                                          "request",
                                                          "reply",
                                                          "prepare",
                                                          "prepare_ok",
                                                          "commit",
                                                          "start_view_change",
                                                          "do_view_change",
                                                          "start_view",
                                                          "request_start_view",
                                                          "request_prepare",
                                                          "repair",
                                                          "request_state",
                                                          "state",
                                                          "request_view",
                                                          "view",
                                                          "request_headers",
                                                          "headers",
                                                          "pre_view_change"};
    return type > 0 && type < VSR_MSG_TYPE_COUNT ? names[type] : "unknown";
}

const char *vsr_status_name(enum vsr_status s)
{
    switch (s) {
    case VSR_NORMAL:
        return "normal";
    case VSR_VIEW_CHANGE:
        return "view_change";
    case VSR_RECOVERING:
        return "recovering";
    }
    return "unknown";
}

void vsr_debug_dump(const struct vsr *r, void (*out)(void *arg, const char *line), void *arg)
{
    char line[256];
    for (uint64_t k = r->commit_min + 1; k <= r->op && k <= r->commit_min + r->cfg.slots; k++) {
        const struct vsr_slot *s = slot_of(r, k);
        snprintf(
            line, sizeof line,
            "    op %llu: canon %d hop %llu full %d disk_valid %d disk_op %llu match %d faulty %d "
            "unverified %d wstage %d oks %x sum %02x%02x",
            (unsigned long long)k, s->canon, (unsigned long long)s->h.op, s->full, s->disk_valid,
            (unsigned long long)s->disk_op, sum_eq(s->disk_sum, s->h.checksum), s->faulty,
            s->unverified, s->wstage, s->oks, s->h.checksum[0], s->h.checksum[1]);
        out(arg, line);
    }
    snprintf(line, sizeof line,
             "    svc %x dvc %x installed %d ready %d sb view %llu log_view %llu writing %d "
             "pre-vote view %llu from %x",
             r->svc_from, r->dvc_from, r->vc_installed, r->vc_ready, (unsigned long long)r->sb.view,
             (unsigned long long)r->sb.log_view, r->sb_writing, (unsigned long long)r->pv_view,
             r->pv_from);
    out(arg, line);
}
