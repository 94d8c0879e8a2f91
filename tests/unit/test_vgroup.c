/*
 * A replicated partition log in one process (issue 10, step 3 in
 * miniature): three replicas, each a vgroup (core + journal on files) and
 * a partition vlog. The primary builds each batch's bytes (base offset and
 * chain hash from its log's end), proposes them as the op body; every
 * replica appends exactly those bytes on commit (vlog_append_exact). Every
 * message goes through the wire codec. A backup killed and restarted, then
 * the primary killed and replaced: in the end every replica's segment files
 * are identical byte for byte and hold every committed batch.
 */
#include <CUnit/Basic.h>
#include <CUnit/CUnit.h>
#include <dirent.h>
#include <poll.h>
#include <sys/stat.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "broker/vsr_hash.h"
#include "broker/vsr/vgroup.h"
#include "broker/vsr/vsr_wire.h"
#include "storage/batch.h"
#include "storage/vlog.h"
#include "tests/support/tutil.h"
#include "verity/errors.h"

#define N     3
#define QMAX  8192
#define BUF   (1u << 16)

struct rep {
    int i;
    bool up;
    char dir[600], logdir[700], jdir[700];
    struct vlog *log;
    struct vgroup g;
    struct vsr_state state; /* kept with the log (a sidecar in the broker) */
    int apply_errors;
};

struct packet {
    uint8_t to;
    uint8_t *bytes;
    size_t len;
};

static struct rep reps[N];
static struct vwriter *wr; /* set: every replica's writes on the I/O threads */
static struct packet q[QMAX];
static size_t qhead, qtail;

static void net_send(void *arg, const struct vsr_msg *m)
{
    (void)arg;
    if (m->to >= N || qtail - qhead >= QMAX)
        return;
    size_t n = vsr_wire_size(m);
    uint8_t *b = malloc(n);
    if (!b || vsr_wire_encode(m, b, n) != n) {
        free(b);
        return;
    }
    q[qtail++ % QMAX] = (struct packet){m->to, b, n};
}

static int apply(void *arg, const struct vsr_commit *c)
{
    struct rep *r = arg;
    uint8_t *copy = malloc(c->header.size);
    memcpy(copy, c->body, c->header.size);
    struct vlog_append_info info;
    int rc = vlog_append_exact(r->log, copy, c->header.size, &info);
    free(copy);
    if (rc) {
        r->apply_errors++;
        return rc;
    }
    r->state.op = c->op;
    memcpy(r->state.checksum, c->header.checksum, 32);
    memcpy(r->state.digest, c->digest, 32);
    return 0;
}

static const struct vgroup_ops ops = {net_send, apply, NULL, NULL};

static void rep_start(int i)
{
    struct rep *r = &reps[i];
    struct vlog_config lc;
    vlog_config_default(&lc);
    lc.durability = VLOG_DURABILITY_ALWAYS;
    lc.checkpoint_records = 0; /* no node-local batches in a replicated log */
    lc.tree_off = true;
    CU_ASSERT_EQUAL_FATAL(vlog_open(r->logdir, &lc, 1000, &r->log, NULL), 0);
    struct vsr_config c = {0};
    c.cluster = 5;
    c.replica = (uint8_t)i;
    c.replica_count = N;
    c.slots = 32;
    c.pipeline = 4;
    c.body_max = BUF;
    c.heartbeat_ticks = 5;
    c.retry_ticks = 10;
    c.timeout_ticks = 60;
    c.hash = vsr_sha256;
    CU_ASSERT_EQUAL_FATAL(vgroup_open(&r->g, r->jdir, &c, &r->state, &ops, r, NULL), 0);
    if (wr)
        vgroup_set_writer(&r->g, wr);
    r->up = true;
}

static void rep_kill(int i)
{
    struct rep *r = &reps[i];
    vgroup_close(&r->g);
    vlog_abandon(r->log); /* durability always: every appended byte is synced */
    r->log = NULL;
    r->up = false;
}

/* With a writer: feeds finished jobs back; waits up to ms for one when
 * some replica has writes in flight. True when one was fed. */
static bool reap(int ms)
{
    if (!wr)
        return false;
    bool inflight = false;
    for (int i = 0; i < N; i++)
        inflight = inflight || (reps[i].up && vgroup_unsynced(&reps[i].g));
    struct pollfd p = {.fd = vwriter_fd(wr), .events = POLLIN};
    if (poll(&p, 1, inflight ? ms : 0) != 1)
        return false;
    return vwriter_reap(wr) > 0;
}

static void step(void)
{
    bool reaped = reap(0);
    size_t budget = qtail - qhead;
    bool worked = budget > 0 || reaped;
    if (!worked)
        worked = reap(100); /* a write in flight: no tick before it lands */
    while (budget--) {
        struct packet p = q[qhead++ % QMAX];
        struct vsr_msg *m = calloc(1, sizeof *m);
        CU_ASSERT_FATAL(vsr_wire_decode(p.bytes, p.len, m) == 0);
        if (reps[p.to].up)
            vgroup_on_message(&reps[p.to].g, m);
        free(m);
        free(p.bytes);
    }
    if (!worked)
        for (int i = 0; i < N; i++)
            if (reps[i].up)
                vgroup_tick(&reps[i].g);
}

static uint64_t end_of(int i)
{
    struct vlog_info inf;
    vlog_get_info(reps[i].log, &inf);
    return inf.end_offset;
}

static int primary(void)
{
    for (int i = 0; i < N; i++)
        if (reps[i].up && reps[i].g.core && vsr_status(reps[i].g.core) == VSR_NORMAL &&
            vsr_is_primary(reps[i].g.core) &&
            vsr_commit_min(reps[i].g.core) == vsr_op(reps[i].g.core))
            return i;
    return -1;
}

static uint64_t request_no;

/* The primary stamps a batch of n records from its log's end and proposes
 * it; runs until `need` live replicas hold it. */
static bool produce(struct batch_builder *bb, uint64_t id, uint32_t n, int need)
{
    int p = -1;
    for (int s = 0; s < 40000 && p < 0; s++) {
        p = primary();
        if (p < 0)
            step();
    }
    if (p < 0)
        return false;
    CU_ASSERT_FATAL(tu_build_batch(bb, "vgroup", id, n, 24, 1000 + (int64_t)id) == 0);
    struct vlog_info inf;
    vlog_get_info(reps[p].log, &inf);
    uint8_t chain[32];
    batch_set_base_offset(bb->buf, inf.end_offset);
    batch_chain_compute(inf.chain, bb->buf, bb->len, chain);
    batch_set_chain(bb->buf, chain);
    uint64_t want = inf.end_offset + n;
    uint64_t req = ++request_no;
    for (int s = 0; s < 40000; s++) {
        if (s % 50 == 0 && reps[p].up)
            vgroup_submit(&reps[p].g, 1, req, bb->buf, (uint32_t)bb->len);
        step();
        int have = 0;
        for (int i = 0; i < N; i++)
            have += reps[i].up && end_of(i) >= want;
        if (have >= need)
            return true;
    }
    return false;
}

static bool caught_up(int steps)
{
    for (int s = 0; s < steps; s++) {
        uint64_t e0 = end_of(0);
        bool same = true;
        for (int i = 1; i < N; i++)
            same = same && end_of(i) == e0;
        if (same)
            return true;
        step();
    }
    return false;
}

static int files_equal(const char *a, const char *b)
{
    FILE *fa = fopen(a, "rb"), *fb = fopen(b, "rb");
    int eq = fa && fb;
    while (eq) {
        int x = fgetc(fa), y = fgetc(fb);
        if (x != y)
            eq = 0;
        if (x == EOF || y == EOF)
            break;
    }
    if (fa)
        fclose(fa);
    if (fb)
        fclose(fb);
    return eq;
}

/* Every *.log segment of replica 0 exists in the others with the same bytes. */
static int compare_segments(void)
{
    DIR *d = opendir(reps[0].logdir);
    struct dirent *e;
    int segs = 0;
    while (d && (e = readdir(d))) {
        size_t l = strlen(e->d_name);
        if (l < 5 || strcmp(e->d_name + l - 4, ".log") != 0)
            continue;
        segs++;
        for (int i = 1; i < N; i++) {
            char a[1024], b[1024];
            snprintf(a, sizeof a, "%s/%s", reps[0].logdir, e->d_name);
            snprintf(b, sizeof b, "%s/%s", reps[i].logdir, e->d_name);
            CU_ASSERT(files_equal(a, b));
        }
    }
    if (d)
        closedir(d);
    return segs;
}

static void replicated_log(void)
{
    char *root = tu_tmpdir("vgroup");
    struct batch_builder bb;
    CU_ASSERT_FATAL(batch_builder_init(&bb, BUF) == 0);
    for (int i = 0; i < N; i++) {
        reps[i].i = i;
        snprintf(reps[i].dir, sizeof reps[i].dir, "%s/r%d", root, i);
        CU_ASSERT_FATAL(mkdir(reps[i].dir, 0755) == 0);
        snprintf(reps[i].logdir, sizeof reps[i].logdir, "%s/r%d/log", root, i);
        snprintf(reps[i].jdir, sizeof reps[i].jdir, "%s/r%d/vsr", root, i);
        rep_start(i);
    }
    uint64_t id = 0, records = 0;
    for (int k = 0; k < 15; k++, id += 10) {
        CU_ASSERT_FATAL(produce(&bb, id, 1 + k % 4, 3));
        records += 1 + k % 4;
    }
    CU_ASSERT_EQUAL(end_of(0), records);
    rep_kill(2);
    for (int k = 0; k < 8; k++, id += 10) {
        CU_ASSERT_FATAL(produce(&bb, id, 2, 2));
        records += 2;
    }
    rep_start(2);
    CU_ASSERT(caught_up(40000));
    int old = primary();
    CU_ASSERT_FATAL(old >= 0);
    rep_kill(old);
    for (int k = 0; k < 8; k++, id += 10) {
        CU_ASSERT_FATAL(produce(&bb, id, 3, 2));
        records += 3;
    }
    CU_ASSERT(primary() != old);
    rep_start(old);
    CU_ASSERT(caught_up(80000));
    for (int i = 0; i < N; i++) {
        CU_ASSERT_EQUAL(end_of(i), records);
        CU_ASSERT_EQUAL(reps[i].apply_errors, 0);
    }
    for (int i = 0; i < N; i++) {
        CU_ASSERT_EQUAL_FATAL(vlog_sync(reps[i].log), 0);
    }
    CU_ASSERT(compare_segments() >= 1);
    printf("\n  records %llu, view %llu, primary now %d\n", (unsigned long long)records,
           (unsigned long long)vsr_view(reps[0].g.core), primary());
    for (int i = 0; i < N; i++)
        rep_kill(i);
    while (qhead < qtail)
        free(q[qhead++ % QMAX].bytes);
    batch_builder_deinit(&bb);
    tu_rmrf(root);
    free(root);
}

static void test_replicated_log(void)
{
    replicated_log();
}

/* The same with every journal write on two I/O threads (the broker's way):
 * completions come back later, kills close groups with writes in flight. */
static void test_replicated_log_async(void)
{
    qhead = qtail = 0;
    memset(reps, 0, sizeof reps); /* the first run's applied states */
    CU_ASSERT_EQUAL_FATAL(vwriter_open(&wr, 2), 0);
    replicated_log();
    vwriter_close(wr);
    wr = NULL;
}

int main(void)
{
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    CU_pSuite s = CU_add_suite("vgroup", NULL, NULL);
    CU_add_test(s, "replicated partition log: exact bytes on every replica through kills",
                test_replicated_log);
    CU_add_test(s, "the same with the journal writes on I/O threads", test_replicated_log_async);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    unsigned fails = CU_get_number_of_failures();
    CU_cleanup_registry();
    return fails ? 1 : 0;
}
