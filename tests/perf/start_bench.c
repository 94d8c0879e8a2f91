/*
 * start_bench: broker start time and memory with a large partition log of
 * small batches and a long consumer-group log, without and with snapshots
 * (issue 7 "Bounded state"; figures in docs/PERFORMANCE.md).
 *
 *   start_bench DIR LOG_BYTES GROUP_RECORDS
 *
 * 1. An in-process broker on DIR creates topic "big" (1 partition, os
 *    durability), 64 producer ids and group "bg" (shared) with one member,
 *    then stops.
 * 2. The partition log gets LOG_BYTES of small idempotent batches (8 records
 *    of ~100 bytes, producers in turn, sequences in order; every 16th batch
 *    carries an idempotency key instead) written straight through storage/
 *    (vlog_append, os durability), as a producer would have.
 * 3. The group log is replayed into the group state machine, which then
 *    fetches and acknowledges one message per step, flushing each time, so
 *    each step is one group record; GROUP_RECORDS of them are appended in
 *    batches of 1000 records, as the broker's drain would.
 * 4. verityd (from $VERITY_BIN_DIR) starts on DIR with every *.snap removed
 *    (the whole history replays, what the broker did before snapshots),
 *    is timed until its port accepts, its VmRSS/VmHWM read, and stopped with
 *    SIGTERM (a clean stop writes the snapshots); then it starts again and is
 *    timed and measured the same way (snapshot + tail).
 *
 * Prints one JSON line per phase. Real files, real broker process; the
 * machine's page cache is warm for both starts (the log was just written).
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "broker/broker_int.h"
#include "broker/group/group.h"
#include "storage/batch.h"
#include "storage/vlog.h"
#include "tests/integ/test_broker_util.h"
#include "tests/support/tbroker.h"
#include "tests/support/tinproc.h"

#define PRODUCERS 64

static int64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static double mono_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static void die(const char *what, int rc)
{
    fprintf(stderr, "start_bench: %s: %s\n", what, verity_strerror(rc));
    exit(1);
}

static void setup(const char *dir)
{
    struct tinproc tp;
    tip_config(&tp, dir, NULL);
    int rc = tip_start(&tp);
    if (rc)
        die("broker start", rc);
    struct bh h = {0};
    h.port = tp.port;
    int fd = bh_connect(&h);
    char msg[300];
    if (fd < 0 || bh_create_topic(&h, fd, "big", 1, VERITY__DURABILITY__DURABILITY_OS) ||
        bh_create_topic(&h, fd, "big.dlq", 1, 0))
        die("create topic", VERITY_EINVAL);
    for (int i = 0; i < PRODUCERS; i++) {
        int64_t pid;
        int epoch;
        if (bh_init_producer(&h, fd, 0, &pid, &epoch))
            die("init producer", VERITY_EINVAL);
    }
    const char *topics[] = {"big"};
    struct bh_group_opts o = {0};
    o.mode = VERITY__GROUP_MODE__GROUP_MODE_SHARED;
    o.start = VERITY__GROUP_START__GROUP_START_EARLIEST;
    o.lease_ms = 600000;
    o.session_ms = 600000;
    o.max_deliveries = 5;
    uint64_t member;
    if (bh_create_group(&h, fd, "bg", topics, 1, &o, msg, sizeof msg) ||
        bh_join(&h, fd, "bg", "gen", topics, 1, 600000, &member, msg, sizeof msg))
        die("create group", VERITY_EINVAL);
    close(fd);
    if ((rc = tip_stop(&tp)))
        die("broker stop", rc);
}

static void fill_partition(const char *dir, uint64_t bytes, uint64_t *batches_out)
{
    char path[1200];
    snprintf(path, sizeof path, "%s/topics/big/0", dir);
    struct vlog_config vc;
    vlog_config_default(&vc);
    vc.durability = VLOG_DURABILITY_OS;
    struct vlog *log;
    int rc = vlog_open(path, &vc, wall_ms(), &log, NULL);
    if (rc)
        die("open partition", rc);
    struct batch_builder bb;
    if ((rc = batch_builder_init(&bb, 1 << 16)))
        die("builder", rc);
    int32_t seq[PRODUCERS + 1] = {0};
    uint64_t written = 0, n = 0;
    char val[100];
    memset(val, 'v', sizeof val);
    while (written < bytes) {
        int64_t now = wall_ms();
        batch_builder_reset(&bb);
        for (int i = 0; i < 8; i++) {
            char key[32];
            int kl = snprintf(key, sizeof key, "k%" PRIu64 "-%d", n, i);
            if ((rc = batch_builder_add(&bb, now, key, kl, val, sizeof val, NULL, 0)))
                die("add", rc);
        }
        struct batch_meta m = {0, -1, -1, -1, NULL};
        uint8_t idem_key[16] = {0};
        if (n % 16 == 15) {
            memcpy(idem_key, &n, sizeof n);
            m.idem_key = idem_key;
        } else {
            int pid = 1 + (int)(n % PRODUCERS);
            m.producer_id = pid;
            m.producer_epoch = 0;
            m.base_sequence = seq[pid];
            seq[pid] += 8;
        }
        if ((rc = batch_builder_finish(&bb, &m)) ||
            (rc = vlog_append(log, bb.buf, bb.len, now, NULL)))
            die("append", rc);
        written += bb.len;
        n++;
    }
    batch_builder_deinit(&bb);
    if ((rc = vlog_close(log, wall_ms())))
        die("close partition", rc);
    *batches_out = n;
}

static void fill_groups(const char *dir, uint64_t records, uint64_t hwm_max)
{
    char path[1200];
    snprintf(path, sizeof path, "%s/__groups", dir);
    struct vlog_config vc;
    vlog_config_default(&vc);
    vc.durability = VLOG_DURABILITY_OS;
    vc.segment_bytes = 64u << 20;
    struct vlog *log;
    int rc = vlog_open(path, &vc, wall_ms(), &log, NULL);
    if (rc)
        die("open group log", rc);
    struct group_state *st;
    if ((rc = group_state_new(0, &st)))
        die("group state", rc);
    /* Replay what the broker wrote (create, join). */
    struct vlog_info info;
    vlog_get_info(log, &info);
    size_t cap = VERITY_BATCH_BYTES_MAX;
    uint8_t *buf = malloc(cap);
    for (uint64_t off = info.start_offset; off < info.end_offset;) {
        size_t len = 0;
        if ((rc = vlog_read_copy(log, off, info.end_offset, buf, cap, &len)) || len == 0)
            die("read group log", rc);
        for (size_t p = 0; p < len;) {
            struct batch_hdr h;
            if ((rc = batch_hdr_decode(buf + p, len - p, &h)))
                die("decode", rc);
            if (!(h.attributes & BATCH_ATTR_CONTROL)) {
                struct batch_iter it;
                struct batch_record r;
                batch_iter_init(&it, buf + p, h.length);
                while (batch_iter_next(&it, &r) == 1)
                    if ((rc = group_apply(st, r.value, (size_t)r.value_len)))
                        die("apply", rc);
            }
            off = h.base_offset + h.record_count;
            p += h.length;
        }
    }
    free(buf);
    int64_t now = wall_ms();
    if ((rc = group_recover(st, now)))
        die("recover", rc);
    const uint8_t *rp;
    size_t rl;
    uint64_t seq;
    while (group_next_record(st, &rp, &rl, &seq)) /* records recover emitted */
        ;
    struct group_member_info mi;
    size_t nm = 0;
    if ((rc = group_members(st, "bg", &mi, 1, &nm)) || nm != 1)
        die("member", rc ? rc : VERITY_ENOTFOUND);
    struct batch_builder bb;
    if ((rc = batch_builder_init(&bb, VERITY_BATCH_BYTES_MAX)))
        die("builder", rc);
    uint64_t hwm[1] = {hwm_max}, done = 0;
    size_t in_batch = 0;
    while (done < records) {
        struct group_delivery d[1];
        size_t n = 0;
        uint64_t t;
        now++;
        if ((rc = group_fetch(st, "bg", mi.member_id, 1, hwm, 1, now, d, &n, &t)) || n != 1)
            die("fetch (log too short for GROUP_RECORDS?)", rc ? rc : VERITY_EOFFSET);
        struct group_ref ref = {d[0].pidx, d[0].offset};
        if ((rc = group_ack(st, "bg", mi.member_id, &ref, 1, now, &t)))
            die("ack", rc);
        group_flush(st, now);
        while (group_next_record(st, &rp, &rl, &seq)) {
            if ((rc = batch_builder_add(&bb, now, NULL, -1, rp, (int32_t)rl, NULL, 0)))
                die("add record", rc);
            done++;
            if (++in_batch == 1000) {
                struct batch_meta m = {0, -1, -1, -1, NULL};
                if ((rc = batch_builder_finish(&bb, &m)) ||
                    (rc = vlog_append(log, bb.buf, bb.len, now, NULL)))
                    die("append group batch", rc);
                batch_builder_reset(&bb);
                in_batch = 0;
            }
        }
    }
    if (in_batch) {
        struct batch_meta m = {0, -1, -1, -1, NULL};
        if ((rc = batch_builder_finish(&bb, &m)) ||
            (rc = vlog_append(log, bb.buf, bb.len, now, NULL)))
            die("append group batch", rc);
    }
    batch_builder_deinit(&bb);
    group_state_free(st);
    if ((rc = vlog_close(log, wall_ms())))
        die("close group log", rc);
}

static long status_kb(pid_t pid, const char *key)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    long v = -1;
    size_t kl = strlen(key);
    while (f && fgets(line, sizeof line, f))
        if (strncmp(line, key, kl) == 0)
            v = atol(line + kl + 1);
    if (f)
        fclose(f);
    return v;
}

/* Starts verityd on dir; returns seconds until its port accepted. */
static double timed_start(const char *dir, const char *phase)
{
    const char *bin_dir = getenv("VERITY_BIN_DIR");
    char bin[512], listen[64], logpath[1200];
    snprintf(bin, sizeof bin, "%s/verityd", bin_dir ? bin_dir : "build/bin");
    uint16_t port = tb_free_port();
    snprintf(listen, sizeof listen, "127.0.0.1:%u", port);
    snprintf(logpath, sizeof logpath, "%s/../verityd-%s.log", dir, phase);
    double t0 = mono_s();
    pid_t pid = fork();
    if (pid == 0) {
        int fd = open(logpath, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd >= 0) {
            dup2(fd, 2);
            close(fd);
        }
        execl(bin, bin, "--data-dir", dir, "--listen", listen, "--http", "off", "--log-level",
              "info", (char *)NULL);
        _exit(127);
    }
    struct bh h = {0};
    h.port = port;
    int fd = -1;
    while ((fd = bh_connect(&h)) < 0) {
        int st;
        if (waitpid(pid, &st, WNOHANG) == pid)
            die("verityd exited during start (see its log)", VERITY_ECLOSED);
        if (mono_s() - t0 > 1800)
            die("start took over 30 min", VERITY_ETIMEOUT);
        usleep(2000); /* polling the port with a deadline, not synchronisation */
    }
    double secs = mono_s() - t0;
    close(fd);
    long rss = status_kb(pid, "VmRSS:"), hwm = status_kb(pid, "VmHWM:");
    kill(pid, SIGTERM);
    int st = 0;
    waitpid(pid, &st, 0);
    double stop = mono_s() - t0 - secs;
    printf("{\"phase\":\"%s\",\"start_s\":%.3f,\"rss_kb\":%ld,\"peak_rss_kb\":%ld,\"stop_s\":%.3f,"
           "\"exit\":%d}\n",
           phase, secs, rss, hwm, stop, WIFEXITED(st) ? WEXITSTATUS(st) : -1);
    fflush(stdout);
    return secs;
}

int main(int argc, char **argv)
{
    if (argc == 2 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "--version") == 0)) {
        printf("start_bench DIR LOG_BYTES GROUP_RECORDS  (broker start time without and with "
               "snapshots; see the file header)\n");
        return 0;
    }
    if (argc != 4) {
        fprintf(stderr, "usage: start_bench DIR LOG_BYTES GROUP_RECORDS\n");
        return 2;
    }
    const char *dir = argv[1];
    uint64_t bytes = strtoull(argv[2], NULL, 10), grecs = strtoull(argv[3], NULL, 10);
    double t0 = mono_s();
    setup(dir);
    uint64_t batches = 0;
    fill_partition(dir, bytes, &batches);
    double t1 = mono_s();
    fill_groups(dir, grecs, batches * 8);
    double t2 = mono_s();
    printf("{\"phase\":\"generate\",\"log_bytes\":%" PRIu64 ",\"batches\":%" PRIu64
           ",\"group_records\":%" PRIu64 ",\"partition_s\":%.1f,\"groups_s\":%.1f}\n",
           bytes, batches, grecs, t1 - t0, t2 - t1);
    fflush(stdout);
    char cmd[1400];
    snprintf(cmd, sizeof cmd, "find '%s' -name '*.snap' -delete", dir);
    if (system(cmd) != 0)
        die("remove snapshots", -EIO);
    timed_start(dir, "full_replay");
    timed_start(dir, "snapshot");
    return 0;
}
