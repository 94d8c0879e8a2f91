/*
 * vsr_sim: a deterministic simulator that tries to break the replication
 * core (broker/vsr/). One thread runs N replicas (1, 3 or 5) and a few
 * clients from one seed: simulated ticks and timers, a network that drops,
 * delays, duplicates, reorders and partitions (symmetric, one-way, one
 * replica isolated, primary isolated), disks that lose unacknowledged writes
 * on a crash, tear them, corrupt reads and writes and misdirect writes, and
 * replicas that crash, restart and pause. Fault rates are drawn per seed.
 *
 * Checkers run after every step (every delivered message, tick and write
 * completion): replicas agree on the committed prefix byte for byte and hash
 * for hash; every op acknowledged to a client is in it; a commit is never
 * undone; a replica that becomes primary holds every op of its log intact on
 * its disk. Liveness: after the fault phase the faults stop and the network
 * heals; every replica runs, or (every other seed) the replicas whose disks
 * took persistent faults stay down so that only a bare majority runs; the
 * clients must each get LIVENESS_REQUESTS more replies within LIVENESS_TICKS
 * ticks.
 *
 * Fault model that keeps a committed entry recoverable: persistent disk
 * faults (corrupt and misdirected writes) hit only a per-seed set of at most
 * f replicas; torn and lost writes (crash) hit anyone but only writes that
 * were not complete (never acknowledged); read corruption is transient; the
 * last two superblock copies of an update are never corrupted on write; the
 * header mark ("prepared" mark) is never misdirected (docs/REPLICATION.md).
 *
 * A failing seed prints itself and the command that replays it.
 */
#include <getopt.h>
#include <stddef.h>
#include <inttypes.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "broker/vsr/superblock.h"
#include "broker/vsr/vsr.h"

#define SIM_VERSION       "1.0"
#define SLOTS             32
#define PIPELINE          4
#define BODY_MAX          48
#define CLIENTS_MAX       32
#define FAULT_TICKS       2500
#define LIVENESS_TICKS    4000
#define LIVENESS_REQUESTS 3
#define MSGS_CAP          1024
#define WRITES_CAP        256
#define COMMITS_CAP       256
#define OPS_MAX           200000
/* largest message body: a prepare's or a HEADERS message's (slots / 4
 * headers, the core's limit) */
#define PKT_BODY_MAX (BODY_MAX > SLOTS / 4 * VSR_HEADER_SIZE ? BODY_MAX : SLOTS / 4 * VSR_HEADER_SIZE)
/* largest write: a prepare (header + body) or a superblock copy */
#define WRITE_MAX (VSR_HEADER_SIZE + BODY_MAX > VSR_SB_SIZE ? VSR_HEADER_SIZE + BODY_MAX : VSR_SB_SIZE)

/* ---- PRNG (splitmix64) --------------------------------------------------- */

static uint64_t rng_s;
static int g_verbose;
static int g_trace;
static int g_clients = 3;
static int g_last_liveness; /* the last failure was a liveness failure */
#define TRACE(...)                                                                                 \
    do {                                                                                           \
        if (g_trace) {                                                                             \
            fprintf(stderr, "[%6" PRIu64 "] ", W.now);                                             \
            fprintf(stderr, __VA_ARGS__);                                                          \
        }                                                                                          \
    } while (0)
static uint64_t rnd(void)
{
    uint64_t z = (rng_s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}
static uint64_t rnd_n(uint64_t n)
{
    return n ? rnd() % n : 0;
}
/* true with probability ppm / 1,000,000 */
static int chance(uint32_t ppm)
{
    return rnd_n(1000000) < ppm;
}

/* ---- hashing (SHA-256 through OpenSSL, one context) ------------------------ */

static EVP_MD_CTX *md;
static void sim_hash(void *ctx, const void *a, size_t alen, const void *b, size_t blen,
                     uint8_t out[32])
{
    unsigned n = 0;
    (void)ctx;
    if (EVP_DigestInit_ex(md, EVP_sha256(), NULL) != 1 || EVP_DigestUpdate(md, a, alen) != 1 ||
        (blen && EVP_DigestUpdate(md, b, blen) != 1) || EVP_DigestFinal_ex(md, out, &n) != 1) {
        fprintf(stderr, "sha256 failed\n");
        abort();
    }
}

/* ---- world ------------------------------------------------------------------- */

struct rates {
    uint32_t drop, dup, delay_max, partition, crash, pause; /* ppm per event/tick */
    uint32_t torn, corrupt_write, misdirect, corrupt_read;
    uint32_t write_delay_max;
    uint32_t wipe; /* ppm per restart of a replica of the faulty-disk set */
};

struct packet {
    uint64_t at, seq;
    int to_client; /* -1: to replica msg.to */
    struct vsr_msg msg;
    uint8_t body[PKT_BODY_MAX];
};

struct pwrite {
    uint64_t at;
    struct vsr_write w;
    uint8_t bytes[WRITE_MAX];
};

struct disk {
    uint8_t prep[SLOTS][VSR_HEADER_SIZE + BODY_MAX];
    uint32_t prep_len[SLOTS];
    uint8_t hdr[SLOTS][VSR_HEADER_SIZE];
    uint32_t hdr_len[SLOTS];
    uint8_t sb[VSR_SB_COPIES][VSR_SB_SIZE];
    uint32_t sb_len[VSR_SB_COPIES];
    struct pwrite *q; /* FIFO of writes in flight */
    size_t nq, capq;
};

struct node {
    struct vsr *core;
    void *mem;
    struct disk disk;
    struct vsr_state state; /* durable applied prefix */
    int up, paused_until_set;
    uint64_t down_until, paused_until;
    int faulty_disk;            /* may get persistent disk faults */
    int formatted;              /* a superblock update completed once */
    int rejoin;                 /* its disk was wiped once: starts with cfg.rejoin */
    uint64_t last_view_primary; /* view in which the checker last saw it primary */
    int was_primary;
    int tr_status;
    uint64_t tr_view, tr_op;
};

struct client {
    uint64_t id, request, sent_at;
    uint8_t body[BODY_MAX];
    uint32_t len;
    uint64_t replies;
};

struct canon {
    int set;
    uint8_t sum[32];
    uint8_t digest[32];
    uint8_t body[BODY_MAX];
    uint32_t len;
};

struct counters {
    uint64_t runs, ticks, commits, msgs, drops, dups, partitions, crashes, pauses, torn,
        corrupt_writes, misdirects, corrupt_reads, acks, ops, wipes;
    struct vsr_counters core;
};

static struct {
    uint64_t seed;
    int n;
    uint32_t plant;
    struct rates rt;
    struct node nodes[VSR_REPLICAS_MAX];
    struct client clients[CLIENTS_MAX];
    int nclients;
    struct packet *pk;
    size_t npk, cappk;
    uint64_t now, pseq;
    uint8_t part[VSR_REPLICAS_MAX][VSR_REPLICAS_MAX]; /* 1: a -> b cut */
    uint64_t part_until;
    int faults_on;
    struct canon *canon;
    uint64_t canon_max;
    struct vsr_outbox ob;
    struct vsr_msg *ob_msgs;
    struct vsr_write *ob_writes;
    struct vsr_commit *ob_commits;
    uint8_t *ob_arena;
    struct counters c;
    char fail[256];
    int verbose;
    int cur; /* replica whose outbox is drained */
    uint64_t nonce; /* rejoin nonces: one per start */
    uint64_t wipe_s; /* PRNG state of the wipe fault (its own stream: seeds
                      * without a wipe run exactly as before it existed) */
} W;
static int g_no_wipe;

static uint64_t wipe_rnd(void)
{
    uint64_t z = (W.wipe_s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static void failf(const char *fmt, const char *a, uint64_t x, uint64_t y)
{
    if (W.fail[0])
        return;
    snprintf(W.fail, sizeof W.fail, fmt, a, x, y);
}

/* ---- disk callbacks ------------------------------------------------------------- */

static int read_copy(const uint8_t *src, uint32_t len, uint8_t *buf, uint32_t cap, uint32_t *out,
                     int node)
{
    if (len > cap)
        return -1;
    memcpy(buf, src, len);
    *out = len;
    if (len && W.faults_on && chance(W.rt.corrupt_read)) {
        buf[rnd_n(len)] ^= (uint8_t)(1u << rnd_n(8));
        W.c.corrupt_reads++;
    }
    (void)node;
    return 0;
}
static int rd_prepare(void *ctx, uint32_t slot, uint8_t *buf, uint32_t cap, uint32_t *len)
{
    struct node *nd = ctx;
    return read_copy(nd->disk.prep[slot], nd->disk.prep_len[slot], buf, cap, len, 0);
}
static int rd_header(void *ctx, uint32_t slot, uint8_t *buf, uint32_t cap, uint32_t *len)
{
    struct node *nd = ctx;
    return read_copy(nd->disk.hdr[slot], nd->disk.hdr_len[slot], buf, cap, len, 0);
}
static int rd_sb(void *ctx, uint32_t slot, uint8_t *buf, uint32_t cap, uint32_t *len)
{
    struct node *nd = ctx;
    return read_copy(nd->disk.sb[slot], nd->disk.sb_len[slot], buf, cap, len, 0);
}

/* Stores a write's bytes at its place (or, misdirected, at another slot). */
static void disk_store(struct disk *d, const struct vsr_write *w, const uint8_t *b, uint32_t len)
{
    switch (w->kind) {
    case VSR_WRITE_PREPARE:
        memcpy(d->prep[w->slot], b, len);
        d->prep_len[w->slot] = len;
        break;
    case VSR_WRITE_HEADER:
        memcpy(d->hdr[w->slot], b, len);
        d->hdr_len[w->slot] = len;
        break;
    case VSR_WRITE_SUPERBLOCK:
        memcpy(d->sb[w->slot], b, len);
        d->sb_len[w->slot] = len;
        break;
    }
}

/* ---- node lifecycle ------------------------------------------------------------------ */

static struct vsr_config node_cfg(int i)
{
    struct vsr_config c = {0};
    c.cluster = 7;
    c.replica = (uint8_t)i;
    c.replica_count = (uint8_t)W.n;
    c.slots = SLOTS;
    c.pipeline = PIPELINE;
    c.body_max = BODY_MAX;
    c.heartbeat_ticks = 5;
    c.retry_ticks = 10;
    c.timeout_ticks = 60;
    c.hash = sim_hash;
    c.read_prepare = rd_prepare;
    c.read_header = rd_header;
    c.read_superblock = rd_sb;
    c.ctx = &W.nodes[i];
    c.plant = W.plant;
    c.rejoin = W.nodes[i].rejoin != 0;
    return c;
}

static void drain(int i);

static void node_start(int i, int fresh)
{
    struct node *nd = &W.nodes[i];
    struct vsr_config cfg = node_cfg(i);
    cfg.rejoin_nonce = ++W.nonce;
    if (!nd->mem)
        nd->mem = malloc(vsr_size(&cfg));
    nd->core = vsr_init(nd->mem, &cfg, &nd->state, fresh || !nd->formatted, &W.ob);
    if (!nd->core) {
        failf("%s: replica %" PRIu64 " cannot start (no valid superblock) at tick %" PRIu64,
              "restart", (uint64_t)i, W.now);
        return;
    }
    nd->up = 1;
    nd->was_primary = 0;
    TRACE("r%d start %s view %" PRIu64 " log_view %" PRIu64 " op %" PRIu64 " commit %" PRIu64 "\n",
          i, vsr_status_name(vsr_status(nd->core)), vsr_view(nd->core), vsr_log_view(nd->core),
          vsr_op(nd->core), vsr_commit_min(nd->core));
    drain(i);
}

static void node_crash(int i)
{
    struct node *nd = &W.nodes[i];
    struct disk *d = &nd->disk;
    /* Writes in flight: lost, or torn (a prefix lands over the old bytes). */
    for (size_t k = 0; k < d->nq; k++) {
        struct pwrite *p = &d->q[k];
        if (chance(W.rt.torn)) {
            uint32_t cut = (uint32_t)rnd_n(p->w.len);
            struct vsr_write w = p->w;
            uint8_t tmp[WRITE_MAX];
            const uint8_t *old = w.kind == VSR_WRITE_PREPARE  ? d->prep[w.slot]
                                 : w.kind == VSR_WRITE_HEADER ? d->hdr[w.slot]
                                                              : d->sb[w.slot];
            memcpy(tmp, old, p->w.len);
            memcpy(tmp, p->bytes, cut);
            for (uint32_t j = cut; j < p->w.len; j++)
                if (rnd_n(4) == 0)
                    tmp[j] = (uint8_t)rnd();
            disk_store(d, &w, tmp, p->w.len);
            W.c.torn++;
        }
    }
    d->nq = 0;
    TRACE("r%d crash\n", i);
    nd->up = 0;
    nd->core = NULL;
    W.c.crashes++;
}

/* The wipe fault: a replica of the faulty-disk set (at most f) that is down
 * loses its whole disk (journal, header marks, superblock) and its applied
 * state, and restarts fresh with cfg.rejoin (as an operator replaces a dead
 * disk and starts the broker with --rejoin). The checkers are told: its
 * applied prefix starts again from 0. Messages it sent before are dropped
 * from the network (assumption: the disk is replaced after every message the
 * old replica sent was delivered or lost; docs/REPLICATION.md). */
static void node_wipe(int i)
{
    struct node *nd = &W.nodes[i];
    struct disk *d = &nd->disk;
    memset(d->prep, 0, sizeof d->prep);
    memset(d->prep_len, 0, sizeof d->prep_len);
    memset(d->hdr, 0, sizeof d->hdr);
    memset(d->hdr_len, 0, sizeof d->hdr_len);
    memset(d->sb, 0, sizeof d->sb);
    memset(d->sb_len, 0, sizeof d->sb_len);
    d->nq = 0;
    memset(&nd->state, 0, sizeof nd->state);
    nd->formatted = 0;
    nd->rejoin = 1;
    size_t k = 0;
    for (size_t j = 0; j < W.npk; j++)
        if (W.pk[j].to_client >= 0 || W.pk[j].msg.from != i)
            W.pk[k++] = W.pk[j];
    W.npk = k;
    W.c.wipes++;
    TRACE("r%d wiped\n", i);
}

/* ---- network --------------------------------------------------------------------------- */

static void net_send(const struct vsr_msg *m, int to_client)
{
    int copies = 1;
    if (W.faults_on) {
        if (chance(W.rt.drop)) {
            W.c.drops++;
            return;
        }
        if (chance(W.rt.dup)) {
            copies = 2;
            W.c.dups++;
        }
    }
    /* cut links (fault phase, or a scenario's partition) */
    if (to_client < 0 && m->from < W.n && m->to < W.n && W.part[m->from][m->to])
        return;
    for (int c = 0; c < copies; c++) {
        if (W.npk == W.cappk) {
            W.cappk = W.cappk ? W.cappk * 2 : 256;
            W.pk = realloc(W.pk, W.cappk * sizeof *W.pk);
        }
        struct packet *p = &W.pk[W.npk++];
        uint64_t delay = 1 + (W.faults_on ? rnd_n(W.rt.delay_max) : rnd_n(3));
        p->at = W.now + delay;
        p->seq = W.pseq++;
        p->to_client = to_client;
        p->msg = *m;
        if (m->body_len) {
            if (m->body_len > sizeof p->body)
                abort(); /* the core sent more than it may */
            memcpy(p->body, m->body, m->body_len);
        }
        p->msg.body = NULL;
    }
    W.c.msgs++;
}

/* ---- applying the outbox and checking ----------------------------------------------------- */

static struct canon *canon_at(uint64_t op)
{
    if (op >= OPS_MAX)
        return NULL;
    if (op > W.canon_max)
        W.canon_max = op;
    return &W.canon[op];
}

static void check_commit(int i, const struct vsr_commit *c)
{
    struct node *nd = &W.nodes[i];
    if (c->op != nd->state.op + 1) {
        failf("%s: replica %" PRIu64 " applied op %" PRIu64 " out of order", "order", (uint64_t)i,
              c->op);
        return;
    }
    struct canon *k = canon_at(c->op);
    if (!k)
        return;
    if (!k->set) {
        k->set = 1;
        memcpy(k->sum, c->header.checksum, 32);
        memcpy(k->digest, c->digest, 32);
        memcpy(k->body, c->body, c->header.size);
        k->len = c->header.size;
    } else if (memcmp(k->sum, c->header.checksum, 32) || memcmp(k->digest, c->digest, 32) ||
               k->len != c->header.size || memcmp(k->body, c->body, k->len)) {
        failf("%s: replica %" PRIu64 " committed a different op %" PRIu64
              " (checksum/bytes differ from another replica's)",
              "agreement", (uint64_t)i, c->op);
        return;
    }
    TRACE("r%d commit op %" PRIu64 " sum %02x%02x view %" PRIu64 "\n", i, c->op,
          c->header.checksum[0], c->header.checksum[1], c->header.view);
    nd->state.op = c->op;
    memcpy(nd->state.checksum, c->header.checksum, 32);
    memcpy(nd->state.digest, c->digest, 32);
    W.c.commits++;
}

static void drain(int i)
{
    struct node *nd = &W.nodes[i];
    struct vsr_outbox *ob = &W.ob;
    if (ob->install) {
        struct canon *k = canon_at(ob->install_op);
        if (ob->install_op <= nd->state.op)
            failf("%s: replica %" PRIu64 " installed a state at op %" PRIu64 " not past its own",
                  "undo", (uint64_t)i, ob->install_op);
        else if (!k || !k->set || memcmp(k->sum, ob->install_checksum, 32) ||
                 memcmp(k->digest, ob->install_digest, 32))
            failf("%s: replica %" PRIu64 " installed a state at op %" PRIu64
                  " that no replica committed",
                  "agreement", (uint64_t)i, ob->install_op);
        nd->state.op = ob->install_op;
        memcpy(nd->state.checksum, ob->install_checksum, 32);
        memcpy(nd->state.digest, ob->install_digest, 32);
    }
    for (size_t k = 0; k < ob->ncommits; k++)
        check_commit(i, &ob->commits[k]);
    for (size_t k = 0; k < ob->nwrites; k++) {
        struct disk *d = &nd->disk;
        if (d->nq == d->capq) {
            d->capq = d->capq ? d->capq * 2 : 64;
            d->q = realloc(d->q, d->capq * sizeof *d->q);
        }
        struct pwrite *p = &d->q[d->nq];
        uint64_t last = d->nq ? d->q[d->nq - 1].at : W.now;
        p->at = (last > W.now ? last : W.now) + 1 + rnd_n(W.rt.write_delay_max);
        p->w = ob->writes[k];
        memcpy(p->bytes, ob->writes[k].bytes, ob->writes[k].len);
        p->w.bytes = NULL;
        d->nq++;
    }
    for (size_t k = 0; k < ob->nmsgs; k++) {
        const struct vsr_msg *m = &ob->msgs[k];
        if (m->type == VSR_MSG_REPLY) {
            for (int c = 0; c < W.nclients; c++)
                if (W.clients[c].id == m->client)
                    net_send(m, c);
        } else {
            net_send(m, -1);
        }
    }
    vsr_outbox_clear(ob);
}

/* The checkers that look at every replica after each step. */
static void check_all(void)
{
    for (int i = 0; i < W.n; i++) {
        struct node *nd = &W.nodes[i];
        if (!nd->up)
            continue;
        if (vsr_commit_min(nd->core) != nd->state.op)
            failf("%s: replica %" PRIu64 " core commit_min differs from applied %" PRIu64, "state",
                  (uint64_t)i, nd->state.op);
        int prim = vsr_is_primary(nd->core);
        if (g_trace && (nd->tr_status != (int)vsr_status(nd->core) ||
                        nd->tr_view != vsr_view(nd->core) || nd->tr_op != vsr_op(nd->core))) {
            TRACE("r%d %s view %" PRIu64 " log_view %" PRIu64 " op %" PRIu64 " commit %" PRIu64
                  "/%" PRIu64 "%s\n",
                  i, vsr_status_name(vsr_status(nd->core)), vsr_view(nd->core),
                  vsr_log_view(nd->core), vsr_op(nd->core), vsr_commit_min(nd->core),
                  vsr_commit_max(nd->core), prim ? " PRIMARY" : "");
            nd->tr_status = (int)vsr_status(nd->core);
            nd->tr_view = vsr_view(nd->core);
            nd->tr_op = vsr_op(nd->core);
        }
        if (prim && (!nd->was_primary || nd->last_view_primary != vsr_view(nd->core))) {
            /* Became primary: every op of its log intact on its own disk. */
            if (!vsr_log_intact(nd->core))
                failf("%s: replica %" PRIu64 " became primary of view %" PRIu64
                      " with unrepaired entries",
                      "primary", (uint64_t)i, vsr_view(nd->core));
            struct vsr_config cfg = node_cfg(i);
            for (uint64_t k = vsr_commit_min(nd->core) + 1; k <= vsr_op(nd->core); k++) {
                uint8_t want[32];
                struct vsr_header h;
                uint32_t s = (uint32_t)(k % SLOTS);
                if (!vsr_checksum_of(nd->core, k, want) ||
                    vsr_entry_check(&cfg, nd->disk.prep[s], nd->disk.prep_len[s], &h) != 0 ||
                    h.op != k || memcmp(h.checksum, want, 32) != 0) {
                    failf("%s: replica %" PRIu64 " primary with op %" PRIu64
                          " not intact on its disk",
                          "primary", (uint64_t)i, k);
                    break;
                }
            }
            nd->last_view_primary = vsr_view(nd->core);
        }
        nd->was_primary = prim;
    }
}

/* ---- the event loop ------------------------------------------------------------------------- */

static void deliver(struct packet *p)
{
    struct vsr_msg m = p->msg;
    m.body = m.body_len ? p->body : NULL;
    if (p->to_client >= 0) {
        struct client *c = &W.clients[p->to_client];
        if (m.request != c->request || c->len == 0)
            return;
        struct canon *k = canon_at(m.op);
        if (!k || !k->set || memcmp(k->sum, m.checksum, 32) != 0) {
            failf("%s: client %" PRIu64 " acknowledged op %" PRIu64
                  " that is not in the committed prefix",
                  "ack", c->id, m.op);
            return;
        }
        W.c.acks++;
        c->replies++;
        c->request++;
        c->len = 0;
        return;
    }
    int to = m.to;
    if (to >= W.n || !W.nodes[to].up || W.nodes[to].paused_until > W.now)
        return;
    vsr_on_message(W.nodes[to].core, &m, &W.ob);
    drain(to);
}

static void client_step(struct client *c)
{
    if (c->len == 0) {
        c->len = 1 + (uint32_t)rnd_n(BODY_MAX);
        for (uint32_t j = 0; j < c->len; j++)
            c->body[j] = (uint8_t)rnd();
        c->sent_at = 0;
    }
    if (c->sent_at && W.now - c->sent_at < 40)
        return;
    c->sent_at = W.now;
    for (int i = 0; i < W.n; i++) {
        struct vsr_msg m;
        memset(&m, 0, offsetof(struct vsr_msg, window));
        m.type = VSR_MSG_REQUEST;
        m.from = 0xff;
        m.to = (uint8_t)i;
        m.cluster = 7;
        m.client = c->id;
        m.request = c->request;
        m.body = c->body;
        m.body_len = c->len;
        net_send(&m, -1);
    }
}

static void inject_faults(void)
{
    /* partitions */
    if (W.part_until && W.now >= W.part_until) {
        memset(W.part, 0, sizeof W.part);
        W.part_until = 0;
    }
    if (!W.part_until && W.n > 1 && chance(W.rt.partition)) {
        int kind = (int)rnd_n(4);
        int a = (int)rnd_n((uint64_t)W.n);
        if (kind == 3) { /* primary isolated */
            for (int i = 0; i < W.n; i++)
                if (W.nodes[i].up && vsr_is_primary(W.nodes[i].core))
                    a = i;
        }
        for (int i = 0; i < W.n; i++)
            for (int j = 0; j < W.n; j++) {
                if (i == j)
                    continue;
                if (kind == 0 || kind == 3) /* one replica isolated both ways */
                    W.part[i][j] = (i == a || j == a);
                else if (kind == 1) /* one way: a hears nobody */
                    W.part[i][j] = (j == a);
                else /* random split, maybe asymmetric */
                    W.part[i][j] = (uint8_t)(rnd_n(2) && ((i ^ j) & 1));
            }
        W.part_until = W.now + 50 + rnd_n(400);
        W.c.partitions++;
    }
    for (int i = 0; i < W.n; i++) {
        struct node *nd = &W.nodes[i];
        if (nd->up && chance(W.rt.crash)) {
            node_crash(i);
            nd->down_until = W.now + 10 + rnd_n(300);
            /* its connections close: the others get the shell's hint
             * (vsr_on_peer_lost), as verityd's peer links give it */
            for (int j = 0; j < W.n && !W.fail[0]; j++) {
                struct node *o = &W.nodes[j];
                if (j == i || !o->up || o->paused_until > W.now)
                    continue;
                vsr_on_peer_lost(o->core, (uint8_t)i, &W.ob);
                drain(j);
                check_all();
            }
        } else if (!nd->up && W.now >= nd->down_until && !W.fail[0]) {
            if (nd->faulty_disk && W.rt.wipe && wipe_rnd() % 1000000 < W.rt.wipe)
                node_wipe(i);
            node_start(i, 0);
        } else if (nd->up && nd->paused_until <= W.now && chance(W.rt.pause)) {
            nd->paused_until = W.now + 10 + rnd_n(200);
            W.c.pauses++;
        }
    }
}

static void complete_writes(int i)
{
    struct node *nd = &W.nodes[i];
    struct disk *d = &nd->disk;
    while (nd->up && d->nq && d->q[0].at <= W.now && !W.fail[0]) {
        struct pwrite p = d->q[0];
        memmove(d->q, d->q + 1, (d->nq - 1) * sizeof *d->q);
        d->nq--;
        uint8_t *b = p.bytes;
        struct vsr_write w = p.w;
        int persist_faults = W.faults_on && nd->faulty_disk;
        if (persist_faults && chance(W.rt.corrupt_write) &&
            !(w.kind == VSR_WRITE_SUPERBLOCK && w.slot >= VSR_SB_COPIES - 2)) {
            b[rnd_n(w.len)] ^= (uint8_t)(1u << rnd_n(8));
            W.c.corrupt_writes++;
        }
        if (persist_faults && w.kind == VSR_WRITE_PREPARE && chance(W.rt.misdirect)) {
            struct vsr_write x = w;
            x.slot = (uint32_t)((w.slot + 1 + rnd_n(SLOTS - 1)) % SLOTS);
            disk_store(d, &x, b, w.len);
            W.c.misdirects++;
        } else {
            disk_store(d, &w, b, w.len);
        }
        if (w.kind == VSR_WRITE_SUPERBLOCK && w.slot == VSR_SB_COPIES - 1)
            nd->formatted = 1;
        if (w.kind != VSR_WRITE_SUPERBLOCK)
            TRACE("r%d write %s slot %u op %" PRIu64 " sum %02x%02x done\n", i,
                  w.kind == VSR_WRITE_PREPARE ? "prepare" : "mark", w.slot, w.op, b[32], b[33]);
        vsr_on_write_done(nd->core, &w, &W.ob);
        drain(i);
        check_all();
    }
}

static int cmp_packet(const void *a, const void *b)
{
    const struct packet *x = a, *y = b;
    if (x->at != y->at)
        return x->at < y->at ? -1 : 1;
    return x->seq < y->seq ? -1 : x->seq > y->seq;
}

static void step_tick(void)
{
    W.now++;
    W.c.ticks++;
    if (W.faults_on)
        inject_faults();
    for (int i = 0; i < W.n && !W.fail[0]; i++) {
        struct node *nd = &W.nodes[i];
        if (!nd->up || nd->paused_until > W.now)
            continue;
        vsr_on_tick(nd->core, &W.ob);
        drain(i);
        check_all();
        complete_writes(i);
    }
    /* deliver what is due, in (time, sequence) order */
    if (W.npk) {
        qsort(W.pk, W.npk, sizeof *W.pk, cmp_packet);
        size_t due = 0;
        while (due < W.npk && W.pk[due].at <= W.now)
            due++;
        if (due) {
            struct packet *batch = malloc(due * sizeof *batch);
            memcpy(batch, W.pk, due * sizeof *batch);
            memmove(W.pk, W.pk + due, (W.npk - due) * sizeof *W.pk);
            W.npk -= due;
            for (size_t k = 0; k < due && !W.fail[0]; k++) {
                /* a paused replica gets its messages later */
                int to = batch[k].to_client < 0 ? batch[k].msg.to : -1;
                if (to >= 0 && to < W.n && W.nodes[to].up && W.nodes[to].paused_until > W.now) {
                    batch[k].at = W.nodes[to].paused_until;
                    if (W.npk == W.cappk) {
                        W.cappk *= 2;
                        W.pk = realloc(W.pk, W.cappk * sizeof *W.pk);
                    }
                    W.pk[W.npk++] = batch[k];
                    continue;
                }
                deliver(&batch[k]);
                check_all();
            }
            free(batch);
        }
    }
    for (int c = 0; c < W.nclients; c++)
        client_step(&W.clients[c]);
}

static void draw_rates(void)
{
    struct rates *r = &W.rt;
    r->drop = (uint32_t)rnd_n(300000);
    r->dup = (uint32_t)rnd_n(500000);
    r->delay_max = 1 + (uint32_t)rnd_n(20);
    r->partition = (uint32_t)rnd_n(4000);
    r->crash = (uint32_t)rnd_n(3000);
    r->pause = (uint32_t)rnd_n(2000);
    r->torn = (uint32_t)rnd_n(100000);
    r->corrupt_write = (uint32_t)rnd_n(100000);
    r->misdirect = (uint32_t)rnd_n(100000);
    r->corrupt_read = (uint32_t)rnd_n(20000);
    r->write_delay_max = 1 + (uint32_t)rnd_n(6);
}

static void world_free(void)
{
    for (int i = 0; i < VSR_REPLICAS_MAX; i++) {
        free(W.nodes[i].mem);
        free(W.nodes[i].disk.q);
    }
    free(W.pk);
    free(W.canon);
    free(W.ob_msgs);
    free(W.ob_writes);
    free(W.ob_commits);
    free(W.ob_arena);
}

static void add_core_counters(struct vsr_counters *sum, const struct vsr_counters *c)
{
    sum->view_changes += c->view_changes;
    sum->repairs += c->repairs;
    sum->state_transfers += c->state_transfers;
    sum->nack_truncations += c->nack_truncations;
    sum->faulty_found += c->faulty_found;
    sum->torn_found += c->torn_found;
    sum->stale_dropped += c->stale_dropped;
    sum->rejoins += c->rejoins;
    sum->headers_learned += c->headers_learned;
    for (int t = 0; t < VSR_MSG_TYPE_COUNT; t++) {
        sum->msgs_in[t] += c->msgs_in[t];
        sum->msgs_out[t] += c->msgs_out[t];
    }
}

static void dump_line(void *arg, const char *line)
{
    fprintf(arg, "%s\n", line);
}

/* Runs one seed. Returns 0 when every checker passed. */
static int run_seed(uint64_t seed, int replicas, uint32_t plant, int no_faults, uint64_t ticks,
                    struct counters *total)
{
    memset(&W, 0, sizeof W);
    W.seed = seed;
    rng_s = seed * 0x2545F4914F6CDD1Dull + 1;
    W.plant = plant;
    W.nclients = g_clients;
    static const int sizes[] = {1, 3, 3, 3, 5, 5};
    W.n = replicas ? replicas : sizes[rnd_n(6)];
    draw_rates();
    W.wipe_s = seed * 0x9FB21C651E98DF25ull + 3;
    /* half the seeds wipe: 20-100 % of the restarts of a faulty-disk replica */
    if (!g_no_wipe && wipe_rnd() % 2)
        W.rt.wipe = 200000 + (uint32_t)(wipe_rnd() % 800001);
    if (no_faults)
        memset(&W.rt, 0, sizeof W.rt), W.rt.delay_max = 1, W.rt.write_delay_max = 1;
    W.canon = calloc(OPS_MAX, sizeof *W.canon);
    struct vsr_config cfg0;
    W.ob_msgs = calloc(MSGS_CAP, sizeof *W.ob_msgs);
    W.ob_writes = calloc(WRITES_CAP, sizeof *W.ob_writes);
    W.ob_commits = calloc(COMMITS_CAP, sizeof *W.ob_commits);
    cfg0 = node_cfg(0);
    size_t arena = vsr_outbox_arena_size(&cfg0);
    W.ob_arena = malloc(arena);
    vsr_outbox_init(&W.ob, W.ob_msgs, MSGS_CAP, W.ob_writes, WRITES_CAP, W.ob_commits, COMMITS_CAP,
                    W.ob_arena, arena);
    /* persistent disk faults: at most f replicas */
    int f = (W.n - 1) / 2;
    for (int k = 0; k < f; k++)
        W.nodes[rnd_n((uint64_t)W.n)].faulty_disk = 1;
    for (int c = 0; c < W.nclients; c++) {
        W.clients[c].id = 1000 + (uint64_t)c;
        W.clients[c].request = 1;
    }
    W.faults_on = !no_faults;
    for (int i = 0; i < W.n; i++)
        node_start(i, 1);
    uint64_t fault_ticks = ticks ? ticks : FAULT_TICKS;
    while (W.now < fault_ticks && !W.fail[0])
        step_tick();
    uint64_t want[CLIENTS_MAX];
    if (!W.fail[0] && !no_faults) {
        /* Heal: faults stop and the network is clean. Every replica runs,
         * or (every other seed) only a majority: the replicas whose disks
         * took persistent faults (at most f) stay down, so the majority
         * holds an intact copy of every committed entry. */
        W.faults_on = 0;
        memset(W.part, 0, sizeof W.part);
        W.part_until = 0;
        int minority_down = W.n > 1 && rnd_n(2);
        for (int i = 0; i < W.n; i++) {
            W.nodes[i].paused_until = 0;
            if (minority_down && W.nodes[i].faulty_disk) {
                if (W.nodes[i].up)
                    node_crash(i);
                W.nodes[i].down_until = UINT64_MAX;
            } else if (!W.nodes[i].up) {
                node_start(i, 0);
            }
        }
        for (int c = 0; c < W.nclients; c++)
            want[c] = W.clients[c].replies + LIVENESS_REQUESTS;
        uint64_t deadline = W.now + LIVENESS_TICKS;
        int done = 0;
        while (!W.fail[0] && W.now < deadline && !done) {
            step_tick();
            done = 1;
            for (int c = 0; c < W.nclients; c++)
                if (W.clients[c].replies < want[c])
                    done = 0;
            /* with every replica up, a wiped one must finish its rejoin */
            for (int i = 0; i < W.n && !minority_down; i++)
                if (W.nodes[i].up && vsr_rejoining(W.nodes[i].core, NULL))
                    done = 0;
        }
        if (!W.fail[0] && !done)
            failf("%s: no progress (or a rejoin not finished) within %" PRIu64
                  " ticks after faults stopped (%" PRIu64 " replicas)",
                  "liveness", LIVENESS_TICKS, (uint64_t)W.n);
    }
    for (int i = 0; i < W.n; i++)
        if (W.nodes[i].core)
            add_core_counters(&W.c.core, vsr_counters(W.nodes[i].core));
    W.c.runs = 1;
    for (uint64_t k = 1; k <= W.canon_max; k++)
        W.c.ops += W.canon[k].set;
    if (total) {
        uint64_t *a = (uint64_t *)total, *b = (uint64_t *)&W.c;
        for (size_t k = 0; k < offsetof(struct counters, core) / sizeof(uint64_t); k++)
            a[k] += b[k];
        add_core_counters(&total->core, &W.c.core);
    }
    int failed = W.fail[0] != 0;
    g_last_liveness = strncmp(W.fail, "liveness", 8) == 0;
    if (failed)
        for (int i = 0; i < W.n; i++) {
            struct node *nd = &W.nodes[i];
            if (!nd->core) {
                fprintf(stderr, "  replica %d down\n", i);
                continue;
            }
            fprintf(stderr,
                    "  replica %d %s view %" PRIu64 " log_view %" PRIu64 " op %" PRIu64
                    " commit_min %" PRIu64 " commit_max %" PRIu64
                    " intact %d faulty_disk %d rejoining %d\n",
                    i, vsr_status_name(vsr_status(nd->core)), vsr_view(nd->core),
                    vsr_log_view(nd->core), vsr_op(nd->core), vsr_commit_min(nd->core),
                    vsr_commit_max(nd->core), vsr_log_intact(nd->core), nd->faulty_disk,
                    vsr_rejoining(nd->core, NULL));
            if (g_verbose)
                vsr_debug_dump(nd->core, dump_line, stderr);
        }
    if (failed || g_verbose)
        fprintf(failed ? stderr : stdout, "%s seed=%" PRIu64 " replicas=%d ticks=%" PRIu64 "%s%s\n",
                failed ? "FAIL" : "ok", seed, W.n, W.now, failed ? ": " : "", W.fail);
    world_free();
    return failed;
}

static void print_counters(const struct counters *c, int json, double secs)
{
    const struct vsr_counters *k = &c->core;
    if (json) {
        printf("{\"ops\":%" PRIu64 ",\"runs\":%" PRIu64 ",\"ticks\":%" PRIu64
               ",\"commits\":%" PRIu64 ",\"acks\":%" PRIu64
               ",\"seconds\":%.2f,\"view_changes\":%" PRIu64 ",\"repairs\":%" PRIu64
               ",\"state_transfers\":%" PRIu64 ",\"nack_truncations\":%" PRIu64
               ",\"faulty_found\":%" PRIu64 ",\"torn_found\":%" PRIu64 ",\"stale_dropped\":%" PRIu64
               ",\"rejoins\":%" PRIu64 ",\"headers_learned\":%" PRIu64 ",\"faults\":{\"drops\":%" PRIu64 ",\"dups\":%" PRIu64 ",\"partitions\":%" PRIu64
               ",\"crashes\":%" PRIu64 ",\"pauses\":%" PRIu64 ",\"torn\":%" PRIu64
               ",\"corrupt_writes\":%" PRIu64 ",\"misdirects\":%" PRIu64
               ",\"corrupt_reads\":%" PRIu64 ",\"wipes\":%" PRIu64 "},\"messages\":{",
               c->ops, c->runs, c->ticks, c->commits, c->acks, secs, k->view_changes, k->repairs,
               k->state_transfers, k->nack_truncations, k->faulty_found, k->torn_found,
               k->stale_dropped, k->rejoins, k->headers_learned, c->drops, c->dups, c->partitions, c->crashes, c->pauses,
               c->torn, c->corrupt_writes, c->misdirects, c->corrupt_reads, c->wipes);
        for (int t = 1; t < VSR_MSG_TYPE_COUNT; t++)
            printf("%s\"%s\":%" PRIu64, t > 1 ? "," : "", vsr_msg_name(t), k->msgs_in[t]);
        printf("}}\n");
        return;
    }
    printf("runs %" PRIu64 "  ticks %" PRIu64 "  ops committed %" PRIu64
           " (%.0f/s)  applied %" PRIu64 "  acks %" PRIu64 "  %.2fs\n",
           c->runs, c->ticks, c->ops, secs > 0 ? (double)c->ops / secs : 0.0, c->commits, c->acks,
           secs);
    printf("core: view_changes %" PRIu64 "  repairs %" PRIu64 "  state_transfers %" PRIu64
           "  nack_truncations %" PRIu64 "  faulty_found %" PRIu64 "  torn_found %" PRIu64
           "  stale_dropped %" PRIu64 "  rejoins %" PRIu64 "  headers_learned %" PRIu64 "\n",
           k->view_changes, k->repairs, k->state_transfers, k->nack_truncations, k->faulty_found,
           k->torn_found, k->stale_dropped, k->rejoins, k->headers_learned);
    printf("faults: drops %" PRIu64 "  dups %" PRIu64 "  partitions %" PRIu64 "  crashes %" PRIu64
           "  pauses %" PRIu64 "  torn %" PRIu64 "  corrupt_writes %" PRIu64 "  misdirects %" PRIu64
           "  corrupt_reads %" PRIu64 "  wipes %" PRIu64 "\n",
           c->drops, c->dups, c->partitions, c->crashes, c->pauses, c->torn, c->corrupt_writes,
           c->misdirects, c->corrupt_reads, c->wipes);
    printf("messages received:");
    for (int t = 1; t < VSR_MSG_TYPE_COUNT; t++)
        printf(" %s %" PRIu64, vsr_msg_name(t), k->msgs_in[t]);
    printf("\n");
}


/* ---- scenarios: leader stickiness and failover (--scenarios) ----------------
 *
 * Deterministic runs, no random faults: a healthy group of 3 or 5 with
 * clients, then one event. A replica that restarts while its links to the
 * primary are still down, or a minority cut off from the primary only, must
 * not change the view (the primary still has a majority); a dead primary, a
 * primary cut off from everyone, or a majority cut off from it, must be
 * replaced within a bound. Every checker of the seeds runs too. */

#define SC_TIMEOUT 60 /* node_cfg's timeout_ticks */

static void sc_init(uint64_t seed, int n)
{
    memset(&W, 0, sizeof W);
    W.seed = seed;
    rng_s = seed * 0x2545F4914F6CDD1Dull + 1;
    W.nclients = g_clients;
    W.n = n;
    W.rt.delay_max = 1;
    W.rt.write_delay_max = 1;
    W.canon = calloc(OPS_MAX, sizeof *W.canon);
    W.ob_msgs = calloc(MSGS_CAP, sizeof *W.ob_msgs);
    W.ob_writes = calloc(WRITES_CAP, sizeof *W.ob_writes);
    W.ob_commits = calloc(COMMITS_CAP, sizeof *W.ob_commits);
    struct vsr_config cfg0 = node_cfg(0);
    size_t arena = vsr_outbox_arena_size(&cfg0);
    W.ob_arena = malloc(arena);
    vsr_outbox_init(&W.ob, W.ob_msgs, MSGS_CAP, W.ob_writes, WRITES_CAP, W.ob_commits, COMMITS_CAP,
                    W.ob_arena, arena);
    for (int c = 0; c < W.nclients; c++) {
        W.clients[c].id = 1000 + (uint64_t)c;
        W.clients[c].request = 1;
    }
    for (int i = 0; i < W.n; i++)
        node_start(i, 1);
}

/* The primary of the newest view (an isolated old primary may still think
 * it is one), or -1. */
static int sc_primary(void)
{
    int p = -1;
    for (int i = 0; i < W.n; i++)
        if (W.nodes[i].up && vsr_is_primary(W.nodes[i].core) &&
            (p < 0 || vsr_view(W.nodes[i].core) > vsr_view(W.nodes[p].core)))
            p = i;
    return p;
}

static uint64_t sc_replies(void)
{
    uint64_t n = 0;
    for (int c = 0; c < W.nclients; c++)
        n += W.clients[c].replies;
    return n;
}

/* Cuts (or heals) the links between a and b, both ways or only a -> b. */
static void sc_cut(int a, int b, int both, uint8_t on)
{
    W.part[a][b] = on;
    if (both)
        W.part[b][a] = on;
}

/* A crash as verityd's peers see it: what the replica sent before it died
 * arrives (TCP delivers it before the EOF), then the link-lost hint. */
static void sc_crash(int i)
{
    node_crash(i);
    for (int t = 0; t < 4 && !W.fail[0]; t++) /* net delay is 1-3 ticks */
        step_tick();
    for (int j = 0; j < W.n; j++)
        if (j != i && W.nodes[j].up) {
            vsr_on_peer_lost(W.nodes[j].core, (uint8_t)i, &W.ob);
            drain(j);
        }
}

/* Runs `ticks` ticks; returns the first tick at which any running replica
 * is in a view other than v (0: none), or stops early at a failure. */
static uint64_t sc_run_same_view(uint64_t ticks, uint64_t v)
{
    uint64_t end = W.now + ticks, moved = 0;
    while (W.now < end && !W.fail[0]) {
        step_tick();
        for (int i = 0; i < W.n && !moved; i++)
            if (W.nodes[i].up && vsr_view(W.nodes[i].core) != v)
                moved = W.now;
    }
    return moved;
}

/* Runs until a replica is primary of a view above v and the clients got a
 * new reply from it; returns the ticks until that primary served
 * (UINT64_MAX: not both within `ticks`). */
static uint64_t sc_run_until_new_primary(uint64_t ticks, uint64_t v)
{
    uint64_t t0 = W.now, r0 = 0, at = UINT64_MAX;
    while (W.now < t0 + ticks && !W.fail[0]) {
        step_tick();
        int p = sc_primary();
        if (at == UINT64_MAX && p >= 0 && vsr_view(W.nodes[p].core) > v) {
            at = W.now - t0;
            r0 = sc_replies();
        }
        if (at != UINT64_MAX && sc_replies() > r0)
            return at;
    }
    return UINT64_MAX;
}

/* Runs until replica i is a NORMAL backup of view v with the primary's
 * commit applied; returns the ticks (UINT64_MAX: not within `ticks`). */
static uint64_t sc_run_until_caught_up(int i, uint64_t v, uint64_t ticks)
{
    uint64_t t0 = W.now;
    while (W.now < t0 + ticks && !W.fail[0]) {
        step_tick();
        int p = sc_primary();
        struct vsr *c = W.nodes[i].core;
        if (p >= 0 && p != i && W.nodes[i].up && vsr_status(c) == VSR_NORMAL &&
            vsr_view(c) == v && vsr_view(W.nodes[p].core) == v &&
            vsr_commit_min(c) + 2 * PIPELINE >= vsr_commit_min(W.nodes[p].core))
            return W.now - t0;
    }
    return UINT64_MAX;
}

enum sc_kind {
    SC_RESTART_LATE_LINKS, /* a backup restarts; its links to the primary come back late */
    SC_BACKUP_CUT,         /* a backup cut from the primary only (both ways) */
    SC_BACKUP_DEAF,        /* a backup hears nothing from the primary (one way) */
    SC_MINORITY_CUT,       /* 5 replicas: two backups cut from the primary */
    SC_PRIMARY_DEAD,       /* the primary crashes (peers get the lost-link hint) */
    SC_PRIMARY_ISOLATED,   /* the primary cut from everyone (no hint) */
    SC_MAJORITY_CUT,       /* 5 replicas: three backups cut from the primary */
    SC_COUNT
};
static const char *const sc_names[SC_COUNT] = {
    "restart-late-links", "backup-cut", "backup-deaf", "minority-cut",
    "primary-dead", "primary-isolated", "majority-cut"};

static uint64_t sc_stat_max[SC_COUNT], sc_stat_sum[SC_COUNT], sc_stat_n[SC_COUNT];

/* One scenario on one seed: 0 when it holds. `victim` picks the backup. */
static int run_scenario(enum sc_kind k, int n, uint64_t seed, int victim)
{
    sc_init(seed, n);
    /* settle: a primary serves and the clients get replies */
    uint64_t r0 = sc_replies();
    while (W.now < 400 && !W.fail[0] && (sc_primary() < 0 || sc_replies() < r0 + 10))
        step_tick();
    int p = sc_primary();
    int rc = 0;
    if (p < 0 || W.fail[0]) {
        failf("%s: no primary serving after %" PRIu64 " ticks (%" PRIu64 ")", "scenario", W.now,
              0);
        goto out;
    }
    for (int t = 0; t < 50 && !W.fail[0]; t++)
        step_tick(); /* some ops in flight and applied everywhere */
    uint64_t v = vsr_view(W.nodes[p].core);
    int b = (p + 1 + victim % (n - 1)) % n; /* a backup */
    uint64_t hold = 6 * SC_TIMEOUT;         /* longer than any staggered timeout */
    uint64_t took = 0, moved = 0;
    switch (k) {
    case SC_RESTART_LATE_LINKS:
        sc_crash(b);
        moved = sc_run_same_view(50, v);
        sc_cut(b, p, 1, 1);
        node_start(b, 0);
        if (!moved)
            moved = sc_run_same_view(hold, v);
        sc_cut(b, p, 1, 0);
        break;
    case SC_BACKUP_CUT:
    case SC_BACKUP_DEAF:
        sc_cut(p, b, k == SC_BACKUP_CUT, 1);
        moved = sc_run_same_view(hold, v);
        sc_cut(p, b, 1, 0);
        break;
    case SC_MINORITY_CUT: {
        int b2 = (b + 1) % n == p ? (b + 2) % n : (b + 1) % n;
        sc_cut(p, b, 1, 1);
        sc_cut(p, b2, 1, 1);
        moved = sc_run_same_view(hold, v);
        memset(W.part, 0, sizeof W.part);
        break;
    }
    case SC_PRIMARY_DEAD:
        sc_crash(p);
        took = sc_run_until_new_primary(hold, v);
        break;
    case SC_PRIMARY_ISOLATED:
        for (int j = 0; j < n; j++)
            if (j != p)
                sc_cut(p, j, 1, 1);
        took = sc_run_until_new_primary(hold, v);
        memset(W.part, 0, sizeof W.part);
        break;
    case SC_MAJORITY_CUT:
        for (int j = 0, c = 0; j < n && c < 3; j++)
            if (j != p && j != (p + 1) % n) {
                sc_cut(p, j, 1, 1);
                c++;
            }
        took = sc_run_until_new_primary(hold, v);
        memset(W.part, 0, sizeof W.part);
        break;
    default:
        break;
    }
    if (W.fail[0])
        goto out;
    if (k <= SC_MINORITY_CUT) {
        if (moved) {
            failf("%s: the view changed (tick %" PRIu64 ") although the primary kept a "
                  "majority (view %" PRIu64 ")",
                  "stickiness", moved, v);
            goto out;
        }
        /* healed: the backup follows the same primary again */
        took = sc_run_until_caught_up(b, v, 10 * SC_TIMEOUT);
        if (took == UINT64_MAX || sc_primary() != p)
            failf("%s: replica %" PRIu64 " not back as a backup of view %" PRIu64
                  " after the links healed",
                  "liveness", (uint64_t)b, v);
    } else {
        /* The bound: the staggered timeout of the slowest backup, a view
         * change (a few round trips and superblock writes) and a reply. */
        uint64_t bound = 2 * SC_TIMEOUT + (uint64_t)n * 10;
        if (took == UINT64_MAX || took > bound)
            failf("%s: no new primary serving within %" PRIu64 " ticks (view %" PRIu64 ")",
                  "failover", bound, v);
        else {
            /* the old primary (back, or reachable again) follows the new view */
            if (k == SC_PRIMARY_DEAD)
                node_start(p, 0);
            int np = sc_primary();
            uint64_t nv = vsr_view(W.nodes[np].core);
            if (!W.fail[0] && sc_run_until_caught_up(p, nv, 10 * SC_TIMEOUT) == UINT64_MAX &&
                sc_primary() >= 0)
                failf("%s: the old primary %" PRIu64 " does not follow view %" PRIu64,
                      "liveness", (uint64_t)p, vsr_view(W.nodes[sc_primary()].core));
        }
    }
    if (!W.fail[0] && took != UINT64_MAX) {
        sc_stat_sum[k] += took;
        sc_stat_n[k]++;
        if (took > sc_stat_max[k])
            sc_stat_max[k] = took;
    }
out:
    rc = W.fail[0] != 0;
    if (rc) {
        fprintf(stderr, "FAIL scenario %s replicas=%d seed=%" PRIu64 " victim=%d: %s\n",
                sc_names[k], n, seed, victim, W.fail);
        for (int i = 0; i < W.n; i++)
            if (W.nodes[i].core)
                fprintf(stderr, "  replica %d %s view %" PRIu64 " log_view %" PRIu64
                        " commit_min %" PRIu64 "\n",
                        i, vsr_status_name(vsr_status(W.nodes[i].core)),
                        vsr_view(W.nodes[i].core), vsr_log_view(W.nodes[i].core),
                        vsr_commit_min(W.nodes[i].core));
            else
                fprintf(stderr, "  replica %d down\n", i);
    }
    world_free();
    return rc;
}

/* Every scenario on `seeds` seeds, each victim backup. Returns failures. */
static int run_scenarios(uint64_t start, uint64_t seeds, int only)
{
    int failed = 0;
    for (int k = 0; k < SC_COUNT; k++) {
        if (only >= 0 && k != only)
            continue;
        for (int n = 3; n <= 5; n += 2) {
            if ((k == SC_MINORITY_CUT || k == SC_MAJORITY_CUT) && n != 5)
                continue;
            int fails = 0, runs = 0;
            for (uint64_t s = start; s < start + seeds; s++)
                for (int victim = 0; victim < n - 1; victim++) {
                    if (k >= SC_PRIMARY_DEAD && victim > 0)
                        break; /* no backup to choose */
                    fails += run_scenario((enum sc_kind)k, n, s, victim);
                    runs++;
                }
            printf("scenario %-19s replicas %d: %d of %d runs failed", sc_names[k], n, fails,
                   runs);
            if (sc_stat_n[k])
                printf("  (%s ticks: mean %.1f, max %" PRIu64 ")",
                       k <= SC_MINORITY_CUT ? "rejoin" : "failover",
                       (double)sc_stat_sum[k] / (double)sc_stat_n[k], sc_stat_max[k]);
            printf("\n");
            sc_stat_sum[k] = sc_stat_n[k] = sc_stat_max[k] = 0;
            failed += fails;
        }
    }
    return failed;
}

/* Seeds that once failed and were fixed (docs/REPLICATION.md, "Long run"):
 * `--regressions` replays each of them; make test-sim runs it. */
static const uint64_t regression_seeds[] = {
    /* 20,000-seed run at 851bd1d: liveness failures */
    360, 591, 993, 2042, 2320, 3029, 4221, 5012, 7092, 7926, 11734, 11845, 15075, 17402, 18679,
    19170, 19174, 19601, 19942,
    /* found while fixing those (liveness), and 23770 (a single replica
     * divided by zero asking nobody for a repair) */
    31, 2160, 2830, 3218, 3664, 6444, 9190, 9770, 10071, 21101, 23366, 23770,
    /* leader stickiness, first version (liveness: a replica stranded in a
     * newer view next to a primary that ignored its pre-votes) */
    378, 412, 914};

static void usage(FILE *f)
{
    fprintf(f,
            "usage: vsr_sim [options]\n"
            "  --seeds N       run seeds START .. START+N-1 (default 1)\n"
            "  --start S       first seed (default 1)\n"
            "  --seed S        run exactly seed S (replay)\n"
            "  --regressions   run the seeds that once failed (fixed since)\n"
            "  --scenarios     deterministic leader-stickiness and failover scenarios\n"
            "                  (SEEDS seeds each, from START; --scenario NAME: one)\n"
            "  --replicas N    1, 3 or 5 (default: drawn per seed)\n"
            "  --plant X       planted bug a|b|c|d|e (simulator self-test only)\n"
            "  --no-wipe       no wipe fault (a replica's whole disk lost, rejoin)\n"
            "  --expect-fail   exit 0 only if some seed fails (for planted bugs)\n"
            "  --safety-only   with --expect-fail: only a safety checker counts\n"
            "  --no-faults     no faults (throughput)\n"
            "  --clients N     clients, one request in flight each (default 3)\n"
            "  --ticks T       ticks of the fault phase (default %d)\n"
            "  --json          counters as one JSON object\n"
            "  --verbose       one line per seed\n"
            "  --help, --version\n",
            FAULT_TICKS);
}

int main(int argc, char **argv)
{
    uint64_t seeds = 1, start = 1, ticks = 0;
    int replicas = 0, json = 0, verbose = 0, expect_fail = 0, no_faults = 0, safety_only = 0;
    uint32_t plant = 0;
    int regressions = 0, scenarios = 0, scenario_only = -1;
    char plant_name[4] = "";
    static const struct option opts[] = {
        {"seeds", 1, 0, 'n'},       {"start", 1, 0, 's'},   {"seed", 1, 0, 'S'},
        {"replicas", 1, 0, 'r'},    {"plant", 1, 0, 'p'},   {"expect-fail", 0, 0, 'e'},
        {"no-faults", 0, 0, 'z'},   {"ticks", 1, 0, 't'},   {"json", 0, 0, 'j'},
        {"verbose", 0, 0, 'v'},     {"help", 0, 0, 'h'},    {"version", 0, 0, 'V'},
        {"safety-only", 0, 0, 'y'}, {"clients", 1, 0, 'c'},   {"regressions", 0, 0, 'R'},
        {"no-wipe", 0, 0, 'W'},     {"scenarios", 0, 0, 'X'}, {"scenario", 1, 0, 'x'},
        {0, 0, 0, 0}};
    int o;
    while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (o) {
        case 'n':
            seeds = strtoull(optarg, NULL, 10);
            break;
        case 's':
            start = strtoull(optarg, NULL, 10);
            break;
        case 'S':
            start = strtoull(optarg, NULL, 10);
            seeds = 1;
            break;
        case 'r':
            replicas = atoi(optarg);
            break;
        case 'p':
            if (strlen(optarg) != 1 || optarg[0] < 'a' || optarg[0] > 'e') {
                fprintf(stderr, "vsr_sim: --plant takes a, b, c, d or e\n");
                return 2;
            }
            plant = 1u << (optarg[0] - 'a');
            snprintf(plant_name, sizeof plant_name, "%c", optarg[0]);
            break;
        case 'e':
            expect_fail = 1;
            break;
        case 'R':
            regressions = 1;
            break;
        case 'W':
            g_no_wipe = 1;
            break;
        case 'X':
            scenarios = 1;
            break;
        case 'x':
            scenarios = 1;
            for (scenario_only = 0; scenario_only < SC_COUNT; scenario_only++)
                if (strcmp(optarg, sc_names[scenario_only]) == 0)
                    break;
            if (scenario_only == SC_COUNT) {
                fprintf(stderr, "vsr_sim: unknown scenario %s\n", optarg);
                return 2;
            }
            break;
        case 'y':
            safety_only = 1;
            break;
        case 'c':
            g_clients = atoi(optarg);
            if (g_clients < 1 || g_clients > CLIENTS_MAX) {
                fprintf(stderr, "vsr_sim: --clients takes 1..%d\n", CLIENTS_MAX);
                return 2;
            }
            break;
        case 'z':
            no_faults = 1;
            break;
        case 't':
            ticks = strtoull(optarg, NULL, 10);
            break;
        case 'j':
            json = 1;
            break;
        case 'v':
            verbose = 1;
            break;
        case 'h':
            usage(stdout);
            return 0;
        case 'V':
            printf("vsr_sim %s\n", SIM_VERSION);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (replicas && replicas != 1 && replicas != 3 && replicas != 5) {
        fprintf(stderr, "vsr_sim: --replicas takes 1, 3 or 5\n");
        return 2;
    }
    md = EVP_MD_CTX_new();
    g_trace = getenv("VSR_SIM_TRACE") != NULL;
    struct counters total;
    memset(&total, 0, sizeof total);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    if (scenarios) {
        int sf = run_scenarios(start, seeds, scenario_only);
        EVP_MD_CTX_free(md);
        if (sf)
            fprintf(stderr, "vsr_sim: %d scenario runs failed\n", sf);
        return sf ? 1 : 0;
    }
    uint64_t failed = 0, first_fail = 0;
    size_t nreg = sizeof regression_seeds / sizeof regression_seeds[0];
    if (regressions)
        seeds = nreg;
    for (uint64_t i = 0; i < seeds; i++) {
        uint64_t s = regressions ? regression_seeds[i] : start + i;
        g_verbose = verbose;
        int rc = run_seed(s, replicas, plant, no_faults, ticks, &total);
        if (rc && expect_fail && safety_only && g_last_liveness) {
            printf("seed %" PRIu64 ": liveness failure (not counted: --safety-only)\n", s);
            continue;
        }
        if (rc) {
            if (!failed)
                first_fail = s;
            failed++;
            fprintf(stderr, "replay: %s --seed %" PRIu64 "%s%s%s%s%s\n", argv[0], s,
                    g_no_wipe ? " --no-wipe" : "", plant ? " --plant " : "", plant_name,
                    replicas ? " --replicas " : "",
                    replicas ? (replicas == 1   ? "1"
                                : replicas == 3 ? "3"
                                                : "5")
                             : "");
            if (expect_fail)
                break;
        }
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double secs = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    print_counters(&total, json, secs);
    EVP_MD_CTX_free(md);
    if (expect_fail) {
        if (failed) {
            printf("planted bug %s caught at seed %" PRIu64 "\n", plant_name, first_fail);
            return 0;
        }
        printf("planted bug %s NOT caught in %" PRIu64 " seeds\n", plant_name, seeds);
        return 1;
    }
    if (failed)
        fprintf(stderr, "vsr_sim: %" PRIu64 " of %" PRIu64 " seeds failed\n", failed, seeds);
    return failed ? 1 : 0;
}
