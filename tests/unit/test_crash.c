/*
 * Crash test: a child process appends with `always` durability and tells the
 * parent, through a pipe, the base offset and SHA-256 of every batch whose
 * append was acknowledged. The parent kill -9's it at random moments (at
 * least 50 times, seed printed so a failure replays). After each kill the
 * parent reopens the log and checks that every acknowledged batch is there
 * byte-identical, that the chain verifies, and that nothing past the
 * recovered end is visible. Then the next child continues the same log.
 */

#include <CUnit/Basic.h>
#include <errno.h>
#include <inttypes.h>
#include <openssl/evp.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "storage/batch.h"
#include "storage/verify.h"
#include "storage/verify_tree.h"
#include "storage/vlog.h"
#include "tests/support/tutil.h"
#include "verity/errors.h"

#define ACK_BYTES 40 /* u64 base offset + 32-byte SHA-256 of the stored batch */

struct acked {
    uint64_t offset;
    uint8_t sha[32];
};

static void sha256(const uint8_t *p, size_t n, uint8_t *out)
{
    unsigned int len = 0;
    EVP_Digest(p, n, out, &len, EVP_sha256(), NULL);
}

static uint64_t rng_state;
static uint64_t rng(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

/* The child: append until killed, reporting each acknowledged batch. */
static void child_run(const char *dir, int wfd, uint64_t seed)
{
    struct vlog_config c;
    struct vlog *log = NULL;
    struct batch_builder b;
    vlog_config_default(&c);
    c.durability = VLOG_DURABILITY_ALWAYS;
    c.segment_bytes = 256 << 10; /* rolls happen during the test too */
    c.checkpoint_records = 200;
    if (batch_builder_init(&b, 1 << 16) || vlog_open(dir, &c, tu_now_ms(), &log, NULL))
        _exit(3);
    rng_state = seed | 1;
    for (uint64_t i = 0;; i++) {
        uint32_t n = 1 + (uint32_t)(rng() % 8);
        if (tu_build_batch(&b, "crash", seed * 1000000 + i * 10, n, 50 + rng() % 300,
                           tu_now_ms()))
            _exit(4);
        struct vlog_append_info info;
        if (vlog_append(log, b.buf, b.len, tu_now_ms(), &info))
            _exit(5);
        uint8_t msg[ACK_BYTES];
        put_le64(msg, info.base_offset);
        sha256(b.buf, b.len, msg + 8);
        if (write(wfd, msg, sizeof msg) != (ssize_t)sizeof msg)
            _exit(6);
    }
}

static void check_round(const char *dir, const struct acked *acks, size_t nacks, int round)
{
    struct vlog_config c;
    struct vlog *log = NULL;
    static uint8_t buf[1 << 20];
    vlog_config_default(&c);
    c.durability = VLOG_DURABILITY_ALWAYS;
    c.segment_bytes = 256 << 10;
    c.checkpoint_records = 200;
    int rc = vlog_open(dir, &c, tu_now_ms(), &log, NULL);
    CU_ASSERT_EQUAL_FATAL(rc, 0);
    struct vlog_info info;
    vlog_get_info(log, &info);
    size_t bad = 0;
    for (size_t i = 0; i < nacks; i++) {
        size_t len = 0;
        struct batch_hdr h;
        uint8_t sha[32];
        if (vlog_read_copy(log, acks[i].offset, UINT64_MAX, buf, sizeof buf, &len) ||
            batch_hdr_decode(buf, len, &h) || h.base_offset != acks[i].offset) {
            bad++;
            continue;
        }
        sha256(buf, h.length, sha);
        if (memcmp(sha, acks[i].sha, 32) != 0)
            bad++;
    }
    if (bad)
        fprintf(stderr, "round %d: %zu of %zu acknowledged batches missing or changed\n", round,
                bad, nacks);
    CU_ASSERT_EQUAL(bad, 0);
    /* Nothing past the recovered end. */
    struct vlog_span sp[2];
    size_t n = 7;
    CU_ASSERT_EQUAL(vlog_read(log, info.end_offset, UINT64_MAX, 1 << 20, sp, 2, &n), 0);
    CU_ASSERT_EQUAL(n, 0);
    CU_ASSERT_EQUAL(vlog_read(log, info.end_offset + 1, UINT64_MAX, 1 << 20, sp, 2, &n),
                    VERITY_EOFFSET);
    if (nacks)
        CU_ASSERT_TRUE(info.end_offset > acks[nacks - 1].offset);
    vlog_abandon(log); /* leave the log as the crash left it (plus any recovery record) */
    struct verify_report rep;
    CU_ASSERT_EQUAL(verify_log_dir(dir, NULL, NULL, NULL, &rep), 0);
    CU_ASSERT_FALSE(rep.found);
    if (rep.found)
        fprintf(stderr, "round %d: verify: %s at %" PRIu64 "\n", round, rep.finding.reason,
                rep.finding.offset);
    CU_ASSERT_EQUAL(rep.end_offset, info.end_offset);
    /* The Merkle tree was brought back in step by the reopen: one leaf per
     * batch, every stored hash recomputes (storage/verify_tree.h). */
    struct verify_tree_report tree;
    CU_ASSERT_EQUAL(verify_tree_dir(dir, &tree), 0);
    CU_ASSERT_TRUE(tree.present);
    CU_ASSERT_EQUAL(tree.tree_behind, 0);
    CU_ASSERT_EQUAL(tree.leaves, rep.batches);
    if (tree.found || tree.tree_behind || tree.leaves != rep.batches)
        fprintf(stderr, "round %d: tree: %s (leaves %" PRIu64 ", batches %" PRIu64 ")\n", round,
                tree.reason, tree.leaves, rep.batches);
}

static void test_kill9_loses_no_acknowledged_batch(void)
{
    char *dir = tu_tmpdir("crash");
    const int kills = 50;
    uint64_t seed = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 20);
    const char *env_seed = getenv("VERITY_CRASH_SEED");
    if (env_seed)
        seed = strtoull(env_seed, NULL, 0);
    fprintf(stderr, "\n  crash test seed %" PRIu64 " (VERITY_CRASH_SEED to replay)\n", seed);
    rng_state = seed | 1;
    size_t cap = 1 << 16, nacks = 0;
    struct acked *acks = malloc(cap * sizeof *acks);
    CU_ASSERT_PTR_NOT_NULL_FATAL(acks);
    int killed = 0;
    for (int round = 0; round < kills; round++) {
        int pfd[2];
        CU_ASSERT_EQUAL_FATAL(pipe(pfd), 0);
        uint64_t child_seed = rng();
        pid_t pid = fork();
        CU_ASSERT_TRUE_FATAL(pid >= 0);
        if (pid == 0) {
            close(pfd[0]);
            child_run(dir, pfd[1], child_seed % 1000000);
        }
        close(pfd[1]);
        /* On odd rounds, first wait (with a deadline) until the child has
         * acknowledged a batch: under ASan on a loaded machine opening the
         * log can take longer than 25 ms, and a run where no child ever
         * appends checks nothing. Even rounds still kill from the fork, so
         * some kills land during open and recovery. */
        if (round & 1) {
            struct pollfd pf = {.fd = pfd[0], .events = POLLIN};
            (void)poll(&pf, 1, 5000);
        }
        /* Kill at a random moment: 1 to 25 ms after that. */
        struct timespec ts = {0, (long)(1000000 + rng() % 24000000)};
        nanosleep(&ts, NULL);
        CU_ASSERT_EQUAL(kill(pid, SIGKILL), 0);
        int status = 0;
        CU_ASSERT_EQUAL(waitpid(pid, &status, 0), pid);
        if (WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL)
            killed++;
        else
            fprintf(stderr, "round %d: child exited with status %d\n", round, status);
        uint8_t msg[ACK_BYTES];
        ssize_t r;
        while ((r = read(pfd[0], msg, sizeof msg)) == (ssize_t)sizeof msg) {
            if (nacks == cap) {
                cap *= 2;
                acks = realloc(acks, cap * sizeof *acks);
                CU_ASSERT_PTR_NOT_NULL_FATAL(acks);
            }
            acks[nacks].offset = get_le64(msg);
            memcpy(acks[nacks].sha, msg + 8, 32);
            nacks++;
        }
        close(pfd[0]);
        check_round(dir, acks, nacks, round);
        if (CU_get_number_of_failures())
            break;
    }
    fprintf(stderr, "  %d kills, %zu acknowledged batches checked after each\n", killed, nacks);
    CU_ASSERT_TRUE(killed >= kills);
    CU_ASSERT_TRUE(nacks > 0);
    free(acks);
    tu_rmrf(dir);
    free(dir);
}

int main(void)
{
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    CU_pSuite s = CU_add_suite("crash", NULL, NULL);
    if (s)
        CU_add_test(s, "kill -9 at random moments loses no acknowledged batch",
                    test_kill9_loses_no_acknowledged_batch);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    unsigned fails = CU_get_number_of_failures() + CU_get_number_of_suites_failed();
    CU_cleanup_registry();
    return fails ? 1 : 0;
}
