/*
 * Journal I/O off the loop (broker/vsr/vwriter.c and vgroup's asynchronous
 * path): real files, a real I/O thread, and a gate in the file layer's
 * fdatasync that the test opens and closes, so a sync can be held in flight:
 *
 *   - a job is not reported finished (reap runs nothing, the eventfd stays
 *     quiet) while its fdatasync has not returned; then it is, with rc 0,
 *     and the bytes are in the file;
 *   - a failed fdatasync comes back as the job's rc;
 *   - a one-replica group with a writer: an op does not commit (apply is
 *     not called) while its prepare's sync is held; a second op proposed
 *     meanwhile waits behind it (not handed to the thread: one job per file
 *     in flight) and goes in the next job; both commit, in op order, once
 *     the gate opens; a failed sync stops the group and nothing more is
 *     applied.
 */
#include <CUnit/Basic.h>
#include <CUnit/CUnit.h>
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "broker/vsr_hash.h"
#include "broker/vsr/vgroup.h"
#include "broker/vsr/vwriter.h"
#include "storage/vio.h"
#include "tests/support/tutil.h"
#include "verity/errors.h"

/* ---- a file layer whose fdatasync waits at a gate -------------------------- */

static pthread_mutex_t gmu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t gcv = PTHREAD_COND_INITIALIZER;
static bool gate_open = true;
static bool gate_fail; /* fdatasync returns -EIO */
static int syncs_entered, syncs_left;

static int gated_fdatasync(void *ctx, int fd)
{
    pthread_mutex_lock(&gmu);
    syncs_entered++;
    pthread_cond_broadcast(&gcv);
    while (!gate_open)
        pthread_cond_wait(&gcv, &gmu);
    bool fail = gate_fail;
    pthread_mutex_unlock(&gmu);
    int rc = fail ? -EIO : vio_posix.fdatasync(vio_posix.ctx, fd);
    pthread_mutex_lock(&gmu);
    syncs_left++;
    pthread_mutex_unlock(&gmu);
    (void)ctx;
    return rc;
}

static struct vio gated;

static void gate(bool open)
{
    pthread_mutex_lock(&gmu);
    gate_open = open;
    pthread_cond_broadcast(&gcv);
    pthread_mutex_unlock(&gmu);
}

static void set_fail(bool fail)
{
    pthread_mutex_lock(&gmu);
    gate_fail = fail;
    pthread_mutex_unlock(&gmu);
}

static void *open_later(void *arg)
{
    (void)arg;
    usleep(100 * 1000);
    gate(true);
    return NULL;
}

/* Waits (at most 5 s) until syncs_entered reaches n. */
static bool wait_entered(int n)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += 5;
    pthread_mutex_lock(&gmu);
    int rc = 0;
    while (syncs_entered < n && rc == 0)
        rc = pthread_cond_timedwait(&gcv, &gmu, &ts);
    bool ok = syncs_entered >= n;
    pthread_mutex_unlock(&gmu);
    return ok;
}

static bool fd_ready(int fd, int ms)
{
    struct pollfd p = {.fd = fd, .events = POLLIN};
    return poll(&p, 1, ms) == 1;
}

/* ---- vwriter alone ------------------------------------------------------- */

static int jobs_done;

static void count_done(struct vwjob *jb)
{
    (void)jb;
    jobs_done++;
}

static void test_job_waits_for_sync(void)
{
    char *dir = tu_tmpdir("vwriter");
    struct vjournal j;
    CU_ASSERT_EQUAL_FATAL(vjournal_open(&j, dir, 8, 256, &gated), 0);
    struct vwriter *w;
    CU_ASSERT_EQUAL_FATAL(vwriter_open(&w, 1), 0);
    uint8_t a[VSR_HEADER_SIZE + 10], b[VSR_HEADER_SIZE + 20];
    memset(a, 0xa1, sizeof a);
    memset(b, 0xb2, sizeof b);
    struct vsr_write ws[2] = {
        {.kind = VSR_WRITE_PREPARE, .slot = 0, .op = 1, .id = 1, .bytes = a, .len = sizeof a},
        {.kind = VSR_WRITE_PREPARE, .slot = 1, .op = 2, .id = 2, .bytes = b, .len = sizeof b},
    };
    struct vwjob jb = {.j = &j, .w = ws, .n = 2, .done = count_done};
    jobs_done = 0;
    int base = syncs_entered;
    gate(false);
    vwriter_submit(w, &jb);
    CU_ASSERT_FATAL(wait_entered(base + 1)); /* the thread sits in fdatasync */
    usleep(20 * 1000);
    CU_ASSERT_FALSE(fd_ready(vwriter_fd(w), 0));
    CU_ASSERT_EQUAL(vwriter_reap(w), 0);
    CU_ASSERT_EQUAL(jobs_done, 0);
    CU_ASSERT_EQUAL(jb.state, VWJOB_RUNNING);
    gate(true);
    CU_ASSERT_FATAL(fd_ready(vwriter_fd(w), 5000));
    CU_ASSERT_EQUAL(vwriter_reap(w), 1);
    CU_ASSERT_EQUAL(jobs_done, 1);
    CU_ASSERT_EQUAL(jb.rc, 0);
    CU_ASSERT_EQUAL(jb.state, VWJOB_IDLE);
    CU_ASSERT_EQUAL(syncs_entered, base + 1); /* two writes to one file: one sync */
    uint8_t back[512];
    uint32_t len = 0;
    CU_ASSERT_EQUAL(vjournal_read_prepare(&j, 1, back, sizeof back, &len), 0);
    CU_ASSERT_EQUAL(len, sizeof b);
    CU_ASSERT(memcmp(back, b, sizeof b) == 0);

    /* a failing sync: the job's rc */
    set_fail(true);
    struct vwjob jf = {.j = &j, .w = ws, .n = 1, .done = count_done};
    vwriter_submit(w, &jf);
    CU_ASSERT_FATAL(fd_ready(vwriter_fd(w), 5000));
    CU_ASSERT_EQUAL(vwriter_reap(w), 1);
    CU_ASSERT_EQUAL(jf.rc, -EIO);
    set_fail(false);

    /* vwriter_wait: a job held in its sync, waited for without its done */
    gate(false);
    base = syncs_entered;
    struct vwjob jw = {.j = &j, .w = ws, .n = 1, .done = count_done};
    vwriter_submit(w, &jw);
    CU_ASSERT_FATAL(wait_entered(base + 1));
    gate(true);
    vwriter_wait(w, &jw);
    CU_ASSERT_EQUAL(jw.state, VWJOB_IDLE);
    CU_ASSERT_EQUAL(jw.rc, 0);
    CU_ASSERT_EQUAL(vwriter_reap(w), 0);
    CU_ASSERT_EQUAL(jobs_done, 2);

    vwriter_close(w);
    vjournal_close(&j);
    tu_rmrf(dir);
    free(dir);
}

/* ---- a one-replica group through the writer ------------------------------ */

static uint64_t applied[64];
static size_t napplied;
static int io_dones;

static int apply(void *arg, const struct vsr_commit *c)
{
    (void)arg;
    if (napplied < 64)
        applied[napplied] = c->op;
    napplied++;
    return 0;
}

static void io_done(void *arg)
{
    (void)arg;
    io_dones++;
}

static const struct vgroup_ops gops = {NULL, apply, NULL, io_done};

/* Reaps completions for up to ms or until cond holds. */
#define PUMP_UNTIL(w, cond, ms)                                                                \
    do {                                                                                   \
        for (int t_ = 0; t_ < (ms) && !(cond); t_ += 5)                                    \
            if (fd_ready(vwriter_fd(w), 5))                                                \
                (void)vwriter_reap(w);                                                     \
    } while (0)

static void test_group_async(void)
{
    char *dir = tu_tmpdir("vwriter_group");
    struct vwriter *w;
    CU_ASSERT_EQUAL_FATAL(vwriter_open(&w, 2), 0);
    struct vsr_config c = {0};
    c.cluster = 9;
    c.replica = 0;
    c.replica_count = 1;
    c.slots = 32;
    c.pipeline = 4;
    c.body_max = 4096;
    c.heartbeat_ticks = 5;
    c.retry_ticks = 10;
    c.timeout_ticks = 60;
    c.hash = vsr_sha256;
    struct vsr_state st = {0};
    struct vgroup g;
    napplied = 0;
    gate(true);
    CU_ASSERT_EQUAL_FATAL(vgroup_open(&g, dir, &c, &st, &gops, NULL, &gated), 0);
    vgroup_set_writer(&g, w);
    for (int i = 0; i < 200 && !(g.core && vsr_status(g.core) == VSR_NORMAL &&
                                 vsr_is_primary(g.core) && vgroup_unsynced(&g) == 0);
         i++) {
        vgroup_tick(&g);
        PUMP_UNTIL(w, vgroup_unsynced(&g) == 0, 200);
    }
    CU_ASSERT_FATAL(g.core && vsr_status(g.core) == VSR_NORMAL && vsr_is_primary(g.core));
    size_t before = napplied;
    uint64_t op0 = vsr_op(g.core);

    /* op 1: held in its prepare's sync */
    int base = syncs_entered;
    gate(false);
    uint8_t body1[100], body2[200];
    memset(body1, 1, sizeof body1);
    memset(body2, 2, sizeof body2);
    CU_ASSERT_FATAL(vgroup_submit(&g, 7, 1, body1, sizeof body1));
    CU_ASSERT_EQUAL(vsr_op(g.core), op0 + 1);
    CU_ASSERT_FATAL(wait_entered(base + 1));
    CU_ASSERT(g.st[0].busy);
    CU_ASSERT_EQUAL(g.st[0].n, 1);
    /* op 2 meanwhile: queued behind the job in flight, not handed over */
    CU_ASSERT_FATAL(vgroup_submit(&g, 7, 2, body2, sizeof body2));
    CU_ASSERT_EQUAL(vsr_op(g.core), op0 + 2);
    CU_ASSERT_EQUAL(g.nq, 1);
    CU_ASSERT_EQUAL(g.st[0].n, 1);
    CU_ASSERT_FALSE(vgroup_needs_flush(&g)); /* its file's job is in flight */
    CU_ASSERT_EQUAL(vgroup_unsynced(&g), 2);
    CU_ASSERT_EQUAL(vgroup_unsynced_op(&g), op0 + 1); /* acks=leader holds nothing past op0 */
    usleep(30 * 1000);
    CU_ASSERT_EQUAL(vwriter_reap(w), 0);
    CU_ASSERT_EQUAL(napplied, before); /* nothing commits before its sync */
    CU_ASSERT_EQUAL(vsr_commit_max(g.core), op0);

    /* the gate opens: both commit, in op order */
    gate(true);
    PUMP_UNTIL(w, napplied >= before + 2 && vgroup_unsynced(&g) == 0, 5000);
    CU_ASSERT_EQUAL_FATAL(napplied, before + 2);
    CU_ASSERT_EQUAL(applied[before], op0 + 1);
    CU_ASSERT_EQUAL(applied[before + 1], op0 + 2);
    CU_ASSERT_EQUAL(vgroup_unsynced_op(&g), UINT64_MAX);
    CU_ASSERT(io_dones > 0);
    CU_ASSERT_EQUAL(g.error, 0);

    /* a failed sync stops the group: nothing more is applied */
    set_fail(true);
    uint8_t body3[50];
    memset(body3, 3, sizeof body3);
    CU_ASSERT_FATAL(vgroup_submit(&g, 7, 3, body3, sizeof body3));
    PUMP_UNTIL(w, g.error != 0, 5000);
    CU_ASSERT_EQUAL(g.error, -EIO);
    CU_ASSERT(g.core == NULL);
    CU_ASSERT_EQUAL(napplied, before + 2);
    set_fail(false);

    vgroup_close(&g);
    vwriter_close(w);
    tu_rmrf(dir);
    free(dir);
}

/* Closing a group whose job sits in its sync waits for it (the thread uses
 * the journal's fds and the write bytes until then). */
static void test_close_in_flight(void)
{
    char *dir = tu_tmpdir("vwriter_close");
    struct vwriter *w;
    CU_ASSERT_EQUAL_FATAL(vwriter_open(&w, 1), 0);
    struct vsr_config c = {0};
    c.cluster = 9;
    c.replica_count = 1;
    c.slots = 32;
    c.pipeline = 4;
    c.body_max = 4096;
    c.heartbeat_ticks = 5;
    c.retry_ticks = 10;
    c.timeout_ticks = 60;
    c.hash = vsr_sha256;
    struct vsr_state st = {0};
    struct vgroup g;
    gate(true);
    CU_ASSERT_EQUAL_FATAL(vgroup_open(&g, dir, &c, &st, &gops, NULL, &gated), 0);
    vgroup_set_writer(&g, w);
    for (int i = 0; i < 200 && !(g.core && vsr_status(g.core) == VSR_NORMAL &&
                                 vsr_is_primary(g.core) && vgroup_unsynced(&g) == 0);
         i++) {
        vgroup_tick(&g);
        PUMP_UNTIL(w, vgroup_unsynced(&g) == 0, 200);
    }
    CU_ASSERT_FATAL(g.core && vsr_is_primary(g.core));
    int base = syncs_entered;
    gate(false);
    uint8_t body[64];
    memset(body, 9, sizeof body);
    CU_ASSERT_FATAL(vgroup_submit(&g, 7, 1, body, sizeof body));
    CU_ASSERT_FATAL(wait_entered(base + 1));
    pthread_mutex_lock(&gmu);
    int left = syncs_left;
    pthread_mutex_unlock(&gmu);
    pthread_t opener;
    CU_ASSERT_FATAL(pthread_create(&opener, NULL, open_later, NULL) == 0);
    vgroup_close(&g); /* returns only after the held sync returned */
    pthread_mutex_lock(&gmu);
    CU_ASSERT(syncs_left >= left + 1);
    pthread_mutex_unlock(&gmu);
    pthread_join(opener, NULL);
    CU_ASSERT_EQUAL(vwriter_reap(w), 0); /* its completion was dropped */
    vwriter_close(w);
    tu_rmrf(dir);
    free(dir);
}

int main(void)
{
    gated = vio_posix;
    gated.fdatasync = gated_fdatasync;
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    CU_pSuite s = CU_add_suite("vwriter", NULL, NULL);
    CU_add_test(s, "a job is finished only after its fdatasync returned", test_job_waits_for_sync);
    CU_add_test(s, "a group through the writer: no commit before the sync, op order kept",
                test_group_async);
    CU_add_test(s, "closing a group waits for its job in flight", test_close_in_flight);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    unsigned fails = CU_get_number_of_failures();
    CU_cleanup_registry();
    return fails ? 1 : 0;
}
