/*
 * The VSR core on real files (broker/vsr/vjournal.c) with every message
 * through the wire codec (broker/vsr/vsr_wire.c): three replicas, each with
 * its journal and superblock in its own directory, exchange encoded bytes.
 * Requests commit on all three with the same bytes; a backup "killed"
 * (its memory dropped, its files kept) restarts from its journal and
 * catches up; the primary killed hands over to a new primary, which
 * commits more; the old primary restarts from its files and catches up;
 * a superblock copy and a journal slot damaged on a stopped backup's disk
 * do not stop its restart or change what it applies; every replica ends
 * with the same applied bytes, checksums and digests.
 */
#include <CUnit/Basic.h>
#include <CUnit/CUnit.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "broker/vsr_hash.h"
#include "broker/vsr/superblock.h"
#include "broker/vsr/vjournal.h"
#include "broker/vsr/vsr_wire.h"
#include "tests/support/tutil.h"
#include "verity/errors.h"

#define N        3
#define SLOTS    32
#define PIPELINE 4
#define BODY_MAX 256
#define OPS_MAX  256
#define QMAX     8192

struct applied {
    uint8_t body[BODY_MAX];
    uint32_t len;
    uint8_t sum[32], digest[32];
};

struct node {
    char dir[600];
    struct vjournal j;
    void *mem;
    struct vsr *core;
    struct vsr_state state; /* what the "data log" holds: survives a kill */
    struct applied log[OPS_MAX];
    struct vsr_write wq[64]; /* writes to perform, bytes copied */
    uint8_t *wbytes[64];
    size_t nw;
};

struct packet {
    uint8_t to;
    uint8_t *bytes;
    size_t len;
};

static struct node nodes[N];
static struct packet q[QMAX];
static size_t qhead, qtail;
static struct vsr_outbox ob;
static struct vsr_msg ob_msgs[256];
static struct vsr_write ob_writes[256];
static struct vsr_commit ob_commits[256];
static uint8_t *arena;
static char *root;
static bool agreement_ok = true;

static struct vsr_config cfg_of(int i)
{
    struct vsr_config c = {0};
    c.cluster = 99;
    c.replica = (uint8_t)i;
    c.replica_count = N;
    c.slots = SLOTS;
    c.pipeline = PIPELINE;
    c.body_max = BODY_MAX;
    c.heartbeat_ticks = 5;
    c.retry_ticks = 10;
    c.timeout_ticks = 60;
    c.hash = vsr_sha256;
    c.read_prepare = vjournal_read_prepare;
    c.read_header = vjournal_read_header;
    c.read_superblock = vjournal_read_superblock;
    c.ctx = &nodes[i].j;
    return c;
}

static void send_bytes(const struct vsr_msg *m)
{
    if (m->to >= N)
        return; /* replies to clients: the test watches commits instead */
    size_t n = vsr_wire_size(m);
    CU_ASSERT_FATAL(n > 0);
    uint8_t *b = malloc(n);
    CU_ASSERT_FATAL(vsr_wire_encode(m, b, n) == n);
    CU_ASSERT_FATAL(qtail - qhead < QMAX);
    q[qtail % QMAX] = (struct packet){m->to, b, n};
    qtail++;
}

/* Takes everything out of the outbox after a call on node i. */
static void drain(int i)
{
    struct node *nd = &nodes[i];
    for (size_t k = 0; k < ob.nmsgs; k++)
        send_bytes(&ob.msgs[k]);
    for (size_t k = 0; k < ob.nwrites; k++) {
        CU_ASSERT_FATAL(nd->nw < 64);
        nd->wq[nd->nw] = ob.writes[k];
        nd->wbytes[nd->nw] = malloc(ob.writes[k].len);
        memcpy(nd->wbytes[nd->nw], ob.writes[k].bytes, ob.writes[k].len);
        nd->wq[nd->nw].bytes = nd->wbytes[nd->nw];
        nd->nw++;
    }
    for (size_t k = 0; k < ob.ncommits; k++) {
        const struct vsr_commit *c = &ob.commits[k];
        CU_ASSERT_FATAL(c->op == nd->state.op + 1 && c->op < OPS_MAX);
        struct applied *a = &nd->log[c->op];
        a->len = c->header.size;
        memcpy(a->body, c->body, a->len);
        memcpy(a->sum, c->header.checksum, 32);
        memcpy(a->digest, c->digest, 32);
        nd->state.op = c->op;
        memcpy(nd->state.checksum, c->header.checksum, 32);
        memcpy(nd->state.digest, c->digest, 32);
        for (int o = 0; o < N; o++) { /* agreement with whoever applied it before */
            struct node *x = &nodes[o];
            if (o != i && x->state.op >= c->op &&
                (x->log[c->op].len != a->len || memcmp(x->log[c->op].body, a->body, a->len) ||
                 memcmp(x->log[c->op].digest, a->digest, 32)))
                agreement_ok = false;
        }
    }
    CU_ASSERT_FATAL(!ob.install); /* no state transfer in these runs */
    vsr_outbox_clear(&ob);
}

static void start(int i, bool fresh)
{
    struct node *nd = &nodes[i];
    struct vsr_config c = cfg_of(i);
    CU_ASSERT_FATAL(vjournal_open(&nd->j, nd->dir, SLOTS, BODY_MAX, NULL) == 0);
    CU_ASSERT_EQUAL(nd->j.fresh, fresh);
    if (!nd->mem)
        nd->mem = malloc(vsr_size(&c));
    nd->core = vsr_init(nd->mem, &c, &nd->state, fresh, &ob);
    CU_ASSERT_FATAL(nd->core != NULL);
    drain(i);
}

static void kill_node(int i)
{
    struct node *nd = &nodes[i];
    nd->core = NULL; /* writes not yet performed are lost, as in a crash */
    for (size_t k = 0; k < nd->nw; k++)
        free(nd->wbytes[k]);
    nd->nw = 0;
    vjournal_close(&nd->j);
}

/* Performs pending writes and delivers packets; one tick for everyone
 * when there is nothing else to do. Returns false when it only ticked. */
static bool step(void)
{
    bool worked = false;
    for (int i = 0; i < N; i++) {
        struct node *nd = &nodes[i];
        while (nd->core && nd->nw) {
            struct vsr_write w = nd->wq[0];
            uint8_t *b = nd->wbytes[0];
            memmove(nd->wq, nd->wq + 1, (nd->nw - 1) * sizeof *nd->wq);
            memmove(nd->wbytes, nd->wbytes + 1, (nd->nw - 1) * sizeof *nd->wbytes);
            nd->nw--;
            CU_ASSERT_FATAL(vjournal_write(&nd->j, &w) == 0);
            vsr_on_write_done(nd->core, &w, &ob);
            free(b);
            drain(i);
            worked = true;
        }
    }
    size_t budget = qtail - qhead;
    while (budget-- && qhead < qtail) {
        struct packet p = q[qhead % QMAX];
        qhead++;
        struct vsr_msg *m = calloc(1, sizeof *m);
        CU_ASSERT_FATAL(vsr_wire_decode(p.bytes, p.len, m) == 0);
        if (nodes[p.to].core) {
            vsr_on_message(nodes[p.to].core, m, &ob);
            drain(p.to);
        }
        free(m);
        free(p.bytes);
        worked = true;
    }
    if (!worked)
        for (int i = 0; i < N; i++)
            if (nodes[i].core) {
                vsr_on_tick(nodes[i].core, &ob);
                drain(i);
            }
    return worked;
}

static int primary(void)
{
    for (int i = 0; i < N; i++)
        if (nodes[i].core && vsr_status(nodes[i].core) == VSR_NORMAL &&
            vsr_is_primary(nodes[i].core))
            return i;
    return -1;
}

/* Sends request k (body "record-k") from client 1 to every live replica
 * until `need` live replicas applied op `want`, at most ticks_max steps. */
static bool submit(uint64_t k, uint64_t want, int need, int steps_max)
{
    char body[64];
    int len = snprintf(body, sizeof body, "record-%llu", (unsigned long long)k);
    for (int s = 0; s < steps_max; s++) {
        if (s % 40 == 0)
            for (int i = 0; i < N; i++) {
                struct vsr_msg m;
                memset(&m, 0, sizeof m);
                m.type = VSR_MSG_REQUEST;
                m.from = 0xff;
                m.to = (uint8_t)i;
                m.cluster = 99;
                m.client = 1;
                m.request = k;
                m.body = (const uint8_t *)body;
                m.body_len = (uint32_t)len;
                send_bytes(&m);
            }
        step();
        int have = 0;
        for (int i = 0; i < N; i++)
            have += nodes[i].core && nodes[i].state.op >= want;
        if (have >= need)
            return true;
    }
    return false;
}

static bool run_until_caught_up(uint64_t op, int steps_max)
{
    for (int s = 0; s < steps_max; s++) {
        bool all = true;
        for (int i = 0; i < N; i++)
            all = all && nodes[i].core && nodes[i].state.op >= op;
        if (all)
            return true;
        step();
    }
    return false;
}

static void same_everywhere(uint64_t upto)
{
    for (uint64_t op = 1; op <= upto; op++)
        for (int i = 1; i < N; i++) {
            CU_ASSERT_EQUAL(nodes[i].log[op].len, nodes[0].log[op].len);
            CU_ASSERT(memcmp(nodes[i].log[op].body, nodes[0].log[op].body, nodes[0].log[op].len) ==
                      0);
            CU_ASSERT(memcmp(nodes[i].log[op].digest, nodes[0].log[op].digest, 32) == 0);
        }
    CU_ASSERT(agreement_ok);
}

static void test_three_replicas_on_files(void)
{
    root = tu_tmpdir("vjournal");
    arena = malloc(1 << 20);
    vsr_outbox_init(&ob, ob_msgs, 256, ob_writes, 256, ob_commits, 256, arena, 1 << 20);
    CU_ASSERT_FATAL(vsr_outbox_arena_size(&(struct vsr_config){.slots = SLOTS, .pipeline = PIPELINE,
                                                                 .body_max = BODY_MAX,
                                                                 .replica_count = N}) <= (1 << 20));
    for (int i = 0; i < N; i++) {
        snprintf(nodes[i].dir, sizeof nodes[i].dir, "%s/r%d", root, i);
        start(i, true);
    }
    uint64_t k = 1, op = 0;
    /* 1. twenty requests commit on all three */
    for (int r = 0; r < 20; r++, k++) {
        CU_ASSERT_FATAL(submit(k, ++op, 3, 5000));
    }
    CU_ASSERT_EQUAL(primary(), 0);
    same_everywhere(op);

    /* 2. a backup killed and restarted from its files catches up */
    kill_node(2);
    for (int r = 0; r < 10; r++, k++)
        CU_ASSERT_FATAL(submit(k, ++op, 2, 5000));
    start(2, false);
    CU_ASSERT(run_until_caught_up(op, 20000));

    /* 3. the primary killed: a new one takes over and commits more */
    kill_node(0);
    int np = -1;
    for (int s = 0; s < 20000 && np < 0; s++) {
        step();
        np = primary();
    }
    CU_ASSERT_FATAL(np == 1 || np == 2);
    for (int r = 0; r < 10; r++, k++)
        CU_ASSERT_FATAL(submit(k, ++op, 2, 20000));
    start(0, false);
    CU_ASSERT(run_until_caught_up(op, 40000));

    /* 4. a backup's superblock copy and journal slot damaged while it is down */
    int victim = np == 1 ? 2 : 1;
    kill_node(victim);
    for (int r = 0; r < 3; r++, k++)
        CU_ASSERT_FATAL(submit(k, ++op, 2, 20000));
    /* Damage on its disk while it is down: one superblock copy, and the
     * prepare of the last op it holds (op - 3, applied already, so the
     * restart must neither trust nor need it). */
    char path[700];
    snprintf(path, sizeof path, "%s/superblock", nodes[victim].dir);
    CU_ASSERT(tu_flip_bit(path, VSR_SB_SIZE * 3 + 40, 1) == 0);
    snprintf(path, sizeof path, "%s/prepares", nodes[victim].dir);
    uint64_t dmg = op - 3;
    uint64_t pos = (dmg % SLOTS) * (4 + VSR_HEADER_SIZE + BODY_MAX) + 4 + VSR_HEADER_SIZE + 1;
    CU_ASSERT(tu_flip_bit(path, pos, 3) == 0);
    start(victim, false);
    CU_ASSERT(run_until_caught_up(op, 40000));
    for (int r = 0; r < 3; r++, k++)
        CU_ASSERT_FATAL(submit(k, ++op, 3, 20000));
    same_everywhere(op);
    uint64_t views = 0;
    for (int i = 0; i < N; i++)
        views += vsr_view(nodes[i].core);
    CU_ASSERT(views > 0);
    printf("\n  ops %llu, view of replica 0 %llu, journal writes r0 %llu\n",
           (unsigned long long)op, (unsigned long long)vsr_view(nodes[0].core),
           (unsigned long long)nodes[0].j.writes);
    for (int i = 0; i < N; i++) {
        kill_node(i);
        free(nodes[i].mem);
    }
    while (qhead < qtail)
        free(q[qhead++ % QMAX].bytes);
    free(arena);
    tu_rmrf(root);
    free(root);
}

static void test_bad_writes_refused(void)
{
    char *d = tu_tmpdir("vjournal-bad");
    char sub[600];
    snprintf(sub, sizeof sub, "%s/j", d);
    struct vjournal j;
    CU_ASSERT_FATAL(vjournal_open(&j, sub, 4, 16, NULL) == 0);
    CU_ASSERT(j.fresh);
    uint8_t b[VSR_HEADER_SIZE + 32] = {0};
    struct vsr_write w = {.kind = VSR_WRITE_PREPARE, .slot = 4, .bytes = b, .len = VSR_HEADER_SIZE};
    CU_ASSERT_EQUAL(vjournal_write(&j, &w), VERITY_EINVAL); /* slot out of range */
    w.slot = 0;
    w.len = VSR_HEADER_SIZE + 17;
    CU_ASSERT_EQUAL(vjournal_write(&j, &w), VERITY_EINVAL); /* body over body_max */
    w.kind = VSR_WRITE_HEADER;
    w.len = 10;
    CU_ASSERT_EQUAL(vjournal_write(&j, &w), VERITY_EINVAL);
    w.kind = VSR_WRITE_SUPERBLOCK;
    w.slot = 4;
    w.len = 128;
    CU_ASSERT_EQUAL(vjournal_write(&j, &w), VERITY_EINVAL);
    w.kind = VSR_WRITE_PREPARE;
    w.slot = 3;
    w.len = VSR_HEADER_SIZE + 5;
    memset(b, 0xab, sizeof b);
    CU_ASSERT_EQUAL(vjournal_write(&j, &w), 0);
    uint8_t r[VSR_HEADER_SIZE + 32];
    uint32_t len = 0;
    CU_ASSERT_EQUAL(vjournal_read_prepare(&j, 3, r, sizeof r, &len), 0);
    CU_ASSERT_EQUAL(len, VSR_HEADER_SIZE + 5);
    CU_ASSERT(memcmp(r, b, len) == 0);
    CU_ASSERT_EQUAL(vjournal_read_prepare(&j, 0, r, sizeof r, &len), 0);
    CU_ASSERT_EQUAL(len, 0); /* never written */
    CU_ASSERT(vjournal_read_prepare(&j, 4, r, sizeof r, &len) < 0);
    vjournal_close(&j);
    CU_ASSERT_FATAL(vjournal_open(&j, sub, 4, 16, NULL) == 0);
    CU_ASSERT(j.fresh); /* superblock never written: still fresh */
    vjournal_close(&j);
    tu_rmrf(d);
    free(d);
}

int main(void)
{
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    CU_pSuite s = CU_add_suite("vjournal", NULL, NULL);
    CU_add_test(s, "bad writes refused, reads bounded", test_bad_writes_refused);
    CU_add_test(s, "three replicas on files, wire bytes, kills and repair",
                test_three_replicas_on_files);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    unsigned fails = CU_get_number_of_failures();
    CU_cleanup_registry();
    return fails ? 1 : 0;
}
