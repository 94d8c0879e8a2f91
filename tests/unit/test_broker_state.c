/*
 * Broker state under storage faults and across restarts, with a real broker
 * run in-process (tests/support/tinproc.h) so its logs use the
 * fault-injecting file table, and raw protocol calls over loopback.
 *
 *   produce, checkpoint fails   issue 7 defect 8: the checkpoint after a
 *                               produced batch fails with ENOSPC; the produce
 *                               still succeeds and its retry is a duplicate
 *   InitProducer, meta fails    issue 7 defect 9: a failed metadata append
 *                               changes no id or epoch in memory; the retry
 *                               gets the id/epoch the failed call would have
 *                               had, and a restart agrees with memory
 */
#include <CUnit/Basic.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "broker/broker_int.h"
#include "tests/integ/test_broker_util.h"
#include "tests/support/tinproc.h"
#include "tests/support/tutil.h"
#include "tests/support/vio_fault.h"

#define META_SEG "__meta/00000000000000000000.log"

struct env {
    char *dir;
    struct vio_fault *f;
    struct tinproc tp;
    struct bh h;
    int fd;
};

static void env_start(struct env *e, uint32_t checkpoint_records)
{
    tip_config(&e->tp, e->dir, vio_fault_io(e->f));
    e->tp.cfg.checkpoint_records = checkpoint_records;
    CU_ASSERT_EQUAL_FATAL(tip_start(&e->tp), 0);
    memset(&e->h, 0, sizeof e->h);
    e->h.port = e->tp.port;
    e->fd = bh_connect(&e->h);
    CU_ASSERT_TRUE_FATAL(e->fd >= 0);
}

static void env_open(struct env *e, uint32_t checkpoint_records)
{
    memset(e, 0, sizeof *e);
    e->dir = tu_tmpdir("bstate");
    e->f = vio_fault_new();
    CU_ASSERT_PTR_NOT_NULL_FATAL(e->f);
    env_start(e, checkpoint_records);
}

static void env_stop(struct env *e)
{
    if (e->fd >= 0)
        close(e->fd);
    e->fd = -1;
    CU_ASSERT_EQUAL(tip_stop(&e->tp), 0);
}

static void env_close(struct env *e)
{
    env_stop(e);
    vio_fault_free(e->f);
    tu_rmrf(e->dir);
    free(e->dir);
}

static int arm_once(struct env *e, enum vf_kind kind, const char *suffix, uint64_t after_n)
{
    int id = vio_fault_arm(e->f, &(struct vio_fault_rule){
        .op = VF_PWRITE, .kind = kind, .path_suffix = suffix, .after_n = after_n, .count = 0});
    CU_ASSERT_TRUE_FATAL(id >= 0);
    return id;
}

static void produce(struct env *e, const char *topic, int64_t pid, int epoch, int32_t seq,
                    struct bh_produced *out)
{
    uint8_t *batch = NULL;
    size_t len = 0;
    CU_ASSERT_EQUAL_FATAL(bh_batch("s", 3, pid, epoch, seq, NULL, &batch, &len), 0);
    CU_ASSERT_EQUAL_FATAL(bh_produce(&e->h, e->fd, topic, 0, batch, len, out), 0);
    free(batch);
}

/* Defect 8 end to end: checkpoint_records = 1 makes every produced batch
 * followed by a checkpoint; the first .log write of the partition after
 * arming is the batch, the second its checkpoint, which fails. */
static void test_checkpoint_enospc_produce_once(void)
{
    struct env e;
    env_open(&e, 1);
    CU_ASSERT_EQUAL_FATAL(bh_create_topic(&e.h, e.fd, "t", 1, 0), 0);
    int64_t pid = 0;
    int epoch = -1;
    CU_ASSERT_EQUAL_FATAL(bh_init_producer(&e.h, e.fd, 0, &pid, &epoch), 0);
    struct bh_produced a, r;
    produce(&e, "t", pid, epoch, 0, &a);
    CU_ASSERT_EQUAL(a.error, 0);
    int id = arm_once(&e, VF_ENOSPC, "topics/t/0/00000000000000000000.log", 1);
    produce(&e, "t", pid, epoch, 3, &a);
    CU_ASSERT_EQUAL(vio_fault_fired(e.f, id), 1);
    CU_ASSERT_EQUAL(a.error, 0);
    if (a.error)
        fprintf(stderr, "produce: %s\n", a.message);
    produce(&e, "t", pid, epoch, 3, &r); /* the client's retry */
    CU_ASSERT_EQUAL(r.error, 0);
    CU_ASSERT_TRUE(r.duplicate);
    CU_ASSERT_EQUAL(r.base_offset, a.base_offset);
    CU_ASSERT_EQUAL(r.last_offset, a.last_offset);
    struct partition *p = topic_find(e.tp.b, "t")->parts[0];
    struct vlog_info in;
    vlog_get_info(p->log, &in); /* read from this thread: the loop is idle */
    CU_ASSERT_EQUAL(in.checkpoint_failures, 1);
    env_close(&e);
}

static void test_init_producer_meta_failure_changes_nothing(void)
{
    struct env e;
    env_open(&e, 10000);
    CU_ASSERT_EQUAL_FATAL(bh_create_topic(&e.h, e.fd, "t", 1, 0), 0);
    int64_t pid = 0;
    int epoch = -1;
    /* A new id whose record cannot be written. */
    int id = arm_once(&e, VF_ENOSPC, META_SEG, 0);
    CU_ASSERT_NOT_EQUAL(bh_init_producer(&e.h, e.fd, 0, &pid, &epoch), 0);
    CU_ASSERT_EQUAL(vio_fault_fired(e.f, id), 1);
    CU_ASSERT_EQUAL(meta_producer_epoch(e.tp.b, 1), -1); /* not allocated */
    CU_ASSERT_EQUAL_FATAL(bh_init_producer(&e.h, e.fd, 0, &pid, &epoch), 0);
    CU_ASSERT_EQUAL(pid, 1);
    CU_ASSERT_EQUAL(epoch, 0);
    /* A new epoch whose record cannot be written: epoch 0 stays current. */
    id = arm_once(&e, VF_ENOSPC, META_SEG, 0);
    int64_t pid2 = 0;
    int epoch2 = -1;
    CU_ASSERT_NOT_EQUAL(bh_init_producer(&e.h, e.fd, 1, &pid2, &epoch2), 0);
    CU_ASSERT_EQUAL(vio_fault_fired(e.f, id), 1);
    CU_ASSERT_EQUAL(meta_producer_epoch(e.tp.b, 1), 0);
    struct bh_produced o;
    produce(&e, "t", 1, 0, 0, &o);
    CU_ASSERT_EQUAL(o.error, 0); /* not fenced by an epoch that is not in the log */
    CU_ASSERT_EQUAL_FATAL(bh_init_producer(&e.h, e.fd, 1, &pid2, &epoch2), 0);
    CU_ASSERT_EQUAL(pid2, 1);
    CU_ASSERT_EQUAL(epoch2, 1);
    /* Restart: what was in memory is what the log says. */
    env_stop(&e);
    vio_fault_disarm_all(e.f);
    env_start(&e, 10000);
    CU_ASSERT_EQUAL(meta_producer_epoch(e.tp.b, 1), 1);
    CU_ASSERT_EQUAL(meta_producer_epoch(e.tp.b, 2), -1);
    CU_ASSERT_EQUAL(e.tp.b->meta.n_producers, 1);
    produce(&e, "t", 1, 0, 3, &o);
    CU_ASSERT_NOT_EQUAL(o.error, 0); /* epoch 0 is fenced by 1 */
    produce(&e, "t", 1, 1, 0, &o);
    CU_ASSERT_EQUAL(o.error, 0);
    CU_ASSERT_EQUAL_FATAL(bh_init_producer(&e.h, e.fd, 0, &pid, &epoch), 0);
    CU_ASSERT_EQUAL(pid, 2);
    env_close(&e);
}

int main(void)
{
    static const struct {
        const char *name;
        void (*fn)(void);
    } tests[] = {
        {"checkpoint ENOSPC after a produce: success, retry is a duplicate",
         test_checkpoint_enospc_produce_once},
        {"InitProducer whose metadata append fails changes no id or epoch",
         test_init_producer_meta_failure_changes_nothing},
    };
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    CU_pSuite s = CU_add_suite("broker_state", NULL, NULL);
    for (size_t i = 0; s && i < sizeof tests / sizeof tests[0]; i++)
        CU_add_test(s, tests[i].name, tests[i].fn);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    unsigned fails = CU_get_number_of_failures() + CU_get_number_of_suites_failed();
    CU_cleanup_registry();
    return fails ? 1 : 0;
}
