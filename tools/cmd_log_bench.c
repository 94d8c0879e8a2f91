/*
 * verity log bench: storage benchmarks of the partition log, with the raw
 * device figures measured in the same run so every ratio is from one
 * sitting.
 *
 *   probe        4 KiB append + fdatasync latency (p50), 1 MiB write +
 *                fdatasync bandwidth: the disk's own limits
 *   append-100   100-byte records in batches of 1,000, `group` durability
 *   append-1k    1 KiB records in batches of 1,000, `group` durability
 *   always-1     one 100-byte record per append, `always`: latency p50/p99
 *   big          builds a large log (default 5 GiB) in a child that is then
 *                kill -9'd; measures reopen time, random single-record reads
 *                by offset (warm cache), and memory (RSS, anonymous RSS)
 *
 * Everything runs in a scratch directory that is removed afterwards.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "storage/clock.h"
#include "tools/stats.h"
#include "storage/batch.h"
#include "storage/dirlock.h"
#include "storage/vlog.h"
#include "tools/cmds.h"
#include "verity/errors.h"

struct opts {
    const char *dir;
    double big_gib;
    uint64_t records_100;
    uint64_t records_1k;
    int always_n;
    int reads;
    bool json;
    bool skip_big;
    bool only_always;              /* --only-always: just the always-1 run */
    int64_t prealloc;              /* --prealloc-bytes (-1: the default) */
};

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

static void progress(bool on, const char *what, uint64_t done, uint64_t total)
{
    if (on)
        fprintf(stderr, "\r  %s: %3d%%", what, (int)(done * 100 / (total ? total : 1)));
}

static void progress_end(bool on)
{
    if (on)
        fprintf(stderr, "\r%*s\r", 40, "");
}

static long status_kb(const char *field)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long v = -1;
    size_t fl = strlen(field);
    if (!f)
        return -1;
    while (fgets(line, sizeof line, f))
        if (strncmp(line, field, fl) == 0 && line[fl] == ':')
            v = strtol(line + fl + 1, NULL, 10);
    fclose(f);
    return v;
}

static void rm_dir_files(const char *dir)
{
    char cmd[8400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "log bench: could not remove %s\n", dir);
}

/* ---- probe: the disk's own limits ------------------------------------------ */

static int probe(const char *dir, double *fsync_p50_us, double *seq_mb_s)
{
    char path[8192];
    snprintf(path, sizeof path, "%s/probe", dir);
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);
    if (fd < 0)
        return -errno;
    static uint8_t buf4k[4096];
    int64_t lat[500];
    int rc = 0;
    memset(buf4k, 0xa5, sizeof buf4k);
    for (int i = 0; i < 500 && !rc; i++) {
        int64_t t0 = clock_mono_ns();
        if (pwrite(fd, buf4k, sizeof buf4k, (off_t)i * 4096) != (ssize_t)sizeof buf4k ||
            fdatasync(fd))
            rc = -errno;
        lat[i] = clock_mono_ns() - t0;
    }
    qsort(lat, 500, sizeof lat[0], cmp_i64);
    *fsync_p50_us = (double)stats_pct(lat, 500, 0.50) / 1000.0;
    uint8_t *mb = malloc(1 << 20);
    if (!mb) {
        close(fd);
        return -ENOMEM;
    }
    memset(mb, 0x5a, 1 << 20);
    int64_t t0 = clock_mono_ns();
    const int n = 256;
    for (int i = 0; i < n && !rc; i++)
        if (pwrite(fd, mb, 1 << 20, (off_t)i << 20) != 1 << 20 || fdatasync(fd))
            rc = -errno;
    *seq_mb_s = (double)n * (1 << 20) / 1e6 / ((double)(clock_mono_ns() - t0) / 1e9);
    free(mb);
    if (close(fd) && !rc)
        rc = -errno;
    unlink(path);
    return rc;
}

/* ---- appends ------------------------------------------------------------------ */

static int make_batch(struct batch_builder *b, uint32_t n, size_t value_len)
{
    uint8_t *val = malloc(value_len);
    int rc = 0;
    if (!val)
        return -ENOMEM;
    uint64_t x = 88172645463325252ull;
    for (size_t i = 0; i < value_len; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        val[i] = (uint8_t)x;
    }
    batch_builder_reset(b);
    int64_t ts = clock_wall_ms();
    for (uint32_t i = 0; i < n && !rc; i++)
        rc = batch_builder_add(b, ts, NULL, -1, val, (int32_t)value_len, NULL, 0);
    free(val);
    return rc ? rc : batch_builder_finish(b, NULL);
}

/* Appends `records` records of value_len bytes in batches of 1000 under
 * `group`; reports records/s and payload MB/s including the final sync. */
static int bench_append(const char *dir, uint64_t records, size_t value_len, bool show,
                        double *rec_s, double *mb_s)
{
    struct vlog_config c;
    struct vlog *log = NULL;
    struct batch_builder b;
    int rc;
    vlog_config_default(&c);
    c.durability = VLOG_DURABILITY_GROUP;
    if ((rc = batch_builder_init(&b, 1000 * (value_len + 32) + BATCH_HDR_SIZE)))
        return rc;
    if ((rc = make_batch(&b, 1000, value_len)) || (rc = vlog_open(dir, &c, clock_wall_ms(), &log, NULL))) {
        batch_builder_deinit(&b);
        return rc;
    }
    uint64_t batches = records / 1000;
    int64_t t0 = clock_mono_ns();
    for (uint64_t i = 0; i < batches && !rc; i++) {
        rc = vlog_append(log, b.buf, b.len, clock_wall_ms(), NULL);
        if ((i & 255) == 0)
            progress(show, "append", i, batches);
    }
    struct vlog_info info;
    vlog_get_info(log, &info);
    if (!rc)
        rc = vlog_wait_durable(log, info.end_offset, 60000);
    double secs = (double)(clock_mono_ns() - t0) / 1e9;
    progress_end(show);
    *rec_s = (double)(batches * 1000) / secs;
    *mb_s = (double)(batches * 1000) * (double)value_len / 1e6 / secs;
    int crc = vlog_close(log, clock_wall_ms());
    batch_builder_deinit(&b);
    rm_dir_files(dir);
    return rc ? rc : crc;
}

struct always_result {
    double p50, p99, p999, max;
};

static int bench_always(const char *dir, int n, int64_t prealloc, struct always_result *ar)
{
    struct vlog_config c;
    struct vlog *log = NULL;
    struct batch_builder b;
    int rc;
    vlog_config_default(&c);
    c.durability = VLOG_DURABILITY_ALWAYS;
    c.checkpoint_records = 0; /* measure appends only */
    if (prealloc >= 0)
        c.prealloc_bytes = (uint64_t)prealloc;
    int64_t *lat = calloc((size_t)n, sizeof *lat);
    if (!lat)
        return -ENOMEM;
    if ((rc = batch_builder_init(&b, 4096))) {
        free(lat);
        return rc;
    }
    if ((rc = make_batch(&b, 1, 100)) || (rc = vlog_open(dir, &c, clock_wall_ms(), &log, NULL)))
        goto out;
    for (int i = 0; i < n && !rc; i++) {
        int64_t t0 = clock_mono_ns();
        rc = vlog_append(log, b.buf, b.len, clock_wall_ms(), NULL);
        lat[i] = clock_mono_ns() - t0;
    }
    qsort(lat, (size_t)n, sizeof *lat, cmp_i64);
    ar->p50 = (double)stats_pct(lat, (size_t)n, 0.50) / 1000.0;
    ar->p99 = (double)stats_pct(lat, (size_t)n, 0.99) / 1000.0;
    ar->p999 = (double)stats_pct(lat, (size_t)n, 0.999) / 1000.0;
    ar->max = (double)lat[n - 1] / 1000.0;
    int crc = vlog_close(log, clock_wall_ms());
    if (!rc)
        rc = crc;
out:
    batch_builder_deinit(&b);
    free(lat);
    rm_dir_files(dir);
    return rc;
}

/* ---- the big log: reopen after kill -9, random reads, memory ------------------- */

struct big_result {
    double gib;
    double build_s;
    double reopen_ms;
    uint64_t records;
    double read_p50_us, read_p99_us, read_max_us;
    long rss_small_kb, rss_big_kb, anon_small_kb, anon_big_kb;
};

static int bench_big(const char *dir, const struct opts *o, bool show, struct big_result *r)
{
    int pfd[2];
    if (pipe(pfd))
        return -errno;
    uint64_t target = (uint64_t)(o->big_gib * (double)(1ull << 30));
    int64_t t0 = clock_mono_ns();
    pid_t pid = fork();
    if (pid < 0)
        return -errno;
    if (pid == 0) {
        /* Child: write the log with `os` durability, say so, and wait to be
         * killed: the parent measures recovery after an unclean stop. */
        struct vlog_config c;
        struct vlog *log = NULL;
        struct batch_builder b;
        close(pfd[0]);
        vlog_config_default(&c);
        c.durability = VLOG_DURABILITY_OS;
        if (batch_builder_init(&b, 200000) || make_batch(&b, 1000, 100) ||
            vlog_open(dir, &c, clock_wall_ms(), &log, NULL))
            _exit(3);
        struct vlog_info info;
        uint64_t i = 0;
        do {
            if (vlog_append(log, b.buf, b.len, clock_wall_ms(), NULL))
                _exit(4);
            vlog_get_info(log, &info);
            if ((++i & 1023) == 0)
                progress(show, "building big log", info.size_bytes, target);
        } while (info.size_bytes < target);
        progress_end(show);
        char done = 1;
        if (write(pfd[1], &done, 1) != 1)
            _exit(5);
        pause();
        _exit(0);
    }
    close(pfd[1]);
    char done = 0;
    ssize_t got = read(pfd[0], &done, 1);
    close(pfd[0]);
    kill(pid, SIGKILL);
    int status;
    waitpid(pid, &status, 0);
    if (got != 1)
        return VERITY_EINVAL;
    r->build_s = (double)(clock_mono_ns() - t0) / 1e9;

    r->rss_small_kb = status_kb("VmRSS");
    r->anon_small_kb = status_kb("RssAnon");
    struct vlog_config c;
    struct vlog *log = NULL;
    vlog_config_default(&c);
    int64_t t1 = clock_mono_ns();
    int rc = vlog_open(dir, &c, clock_wall_ms(), &log, NULL);
    r->reopen_ms = (double)(clock_mono_ns() - t1) / 1e6;
    if (rc)
        return rc;
    struct vlog_info info;
    vlog_get_info(log, &info);
    r->records = info.end_offset;
    r->gib = (double)info.size_bytes / (double)(1ull << 30);

    /* Random single-record reads by offset: locate the batch through the
     * index, copy it, and find the record in it. */
    int64_t *lat = calloc((size_t)o->reads, sizeof *lat);
    uint8_t *buf = malloc(1 << 20);
    if (!lat || !buf) {
        free(lat);
        free(buf);
        vlog_abandon(log);
        return -ENOMEM;
    }
    uint64_t x = 0x9E3779B97F4A7C15ull;
    for (int pass = 0; pass < 2 && !rc; pass++) { /* pass 0 warms the cache */
        for (int i = 0; i < o->reads && !rc; i++) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            uint64_t off = x % info.end_offset;
            int64_t t = clock_mono_ns();
            size_t len = 0;
            rc = vlog_read_copy(log, off, off + 1, buf, 1 << 20, &len);
            struct batch_iter it;
            struct batch_record rec;
            struct batch_hdr h;
            bool found = false;
            if (!rc && batch_hdr_decode(buf, len, &h) == 0) {
                batch_iter_init(&it, buf, h.length);
                while (batch_iter_next(&it, &rec) == 1)
                    if (h.base_offset + rec.offset_delta == off) {
                        found = true;
                        break;
                    }
            }
            if (!rc && !found)
                rc = VERITY_ENOTFOUND;
            lat[i] = clock_mono_ns() - t;
        }
    }
    if (!rc) {
        qsort(lat, (size_t)o->reads, sizeof *lat, cmp_i64);
        r->read_p50_us = (double)stats_pct(lat, (size_t)o->reads, 0.50) / 1000.0;
        r->read_p99_us = (double)stats_pct(lat, (size_t)o->reads, 0.99) / 1000.0;
        r->read_max_us = (double)lat[o->reads - 1] / 1000.0;
    }
    r->rss_big_kb = status_kb("VmRSS");
    r->anon_big_kb = status_kb("RssAnon");
    free(lat);
    free(buf);
    vlog_abandon(log);
    rm_dir_files(dir);
    return rc;
}

static void usage(FILE *f)
{
    fprintf(f,
            "usage: verity log bench [--dir DIR] [--big-gib N] [--skip-big] [--json]\n"
            "  Storage benchmarks of the partition log (see docs/PERFORMANCE.md).\n"
            "  --dir DIR        scratch directory (default: a new one under /tmp); removed after\n"
            "  --big-gib N      size of the log for the reopen / random read run (default 5)\n"
            "  --skip-big       skip that run\n"
            "  --records N      records for the append-100 run (default 10000000)\n"
            "  --always N       appends in the always-1 run (default 5000)\n"
            "  --only-always    run only the probe and the always-1 run\n"
            "  --prealloc-bytes N  zero-filled region ahead of the active segment\n"
            "                   (default 4194304; 0 = off; docs/FORMAT.md)\n"
            "  --json           one JSON object on stdout\n");
}

int cmd_log_bench(int argc, char **argv)
{
    struct opts o = {NULL, 5.0, 10000000, 2000000, 5000, 100000, false, false, false, -1};
    static const struct option lo[] = {{"dir", required_argument, 0, 'd'},
                                       {"big-gib", required_argument, 0, 'g'},
                                       {"skip-big", no_argument, 0, 's'},
                                       {"records", required_argument, 0, 'r'},
                                       {"json", no_argument, 0, 'j'},
                                       {"always", required_argument, 0, 'a'},
                                       {"only-always", no_argument, 0, 'o'},
                                       {"prealloc-bytes", required_argument, 0, 'p'},
                                       {"help", no_argument, 0, 'h'},
                                       {0, 0, 0, 0}};
    int ch;
    optind = 1;
    while ((ch = getopt_long(argc, argv, "h", lo, NULL)) != -1) {
        switch (ch) {
        case 'd': o.dir = optarg; break;
        case 'g': o.big_gib = atof(optarg); break;
        case 's': o.skip_big = true; break;
        case 'r': o.records_100 = strtoull(optarg, NULL, 10); break;
        case 'j': o.json = true; break;
        case 'a': o.always_n = atoi(optarg); break;
        case 'o': o.only_always = true; break;
        case 'p': o.prealloc = strtoll(optarg, NULL, 10); break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (optind != argc || o.big_gib <= 0 || o.records_100 < 1000 || o.always_n < 1) {
        usage(stderr);
        return 2;
    }
    char tmpl[] = "/tmp/verity-logbench-XXXXXX";
    char base[4096], dir[4200];
    if (o.dir) {
        snprintf(base, sizeof base, "%s", o.dir);
        if (mkdir(base, 0755) && errno != EEXIST) {
            perror("log bench: mkdir");
            return 1;
        }
        /* A scratch directory the user names may be a live broker's. */
        static struct dirlock probe_lock;
        pid_t owner = 0;
        char held[4096] = "";
        int lrc = dirlock_acquire_tree(&probe_lock, base, &owner, held, sizeof held);
        if (lrc) {
            if (lrc == -EBUSY)
                fprintf(stderr, "log bench: %s: data directory in use by PID %ld\n", held,
                        (long)owner);
            else
                fprintf(stderr, "log bench: cannot lock %s: %s\n", base, verity_strerror(lrc));
            return 1;
        }
        /* Held until the process exits (the kernel drops it then). */
    } else if (!mkdtemp(tmpl)) {
        perror("log bench: mkdtemp");
        return 1;
    } else {
        snprintf(base, sizeof base, "%s", tmpl);
    }
    bool show = isatty(2) && !o.json;
    int rc;
    double fs_p50 = 0, seq = 0, r100 = 0, mb100 = 0, r1k = 0, mb1k = 0;
    struct always_result ar = {0};
    struct big_result big = {0};
    if ((rc = probe(base, &fs_p50, &seq)))
        goto fail;
    if (!o.json)
        printf("probe       fdatasync after 4 KiB append p50 %.1f us; 1 MiB write+fdatasync %.0f MB/s\n",
               fs_p50, seq);
    if (o.only_always)
        goto always;
    snprintf(dir, sizeof dir, "%s/a100", base);
    if ((rc = bench_append(dir, o.records_100, 100, show, &r100, &mb100)))
        goto fail;
    if (!o.json)
        printf("append-100  group, batches of 1000 x 100 B: %.0f records/s (%.1f MB/s)\n", r100, mb100);
    snprintf(dir, sizeof dir, "%s/a1k", base);
    if ((rc = bench_append(dir, o.records_1k, 1024, show, &r1k, &mb1k)))
        goto fail;
    if (!o.json)
        printf("append-1k   group, batches of 1000 x 1 KiB: %.0f records/s (%.1f MB/s)\n", r1k, mb1k);
always:
    snprintf(dir, sizeof dir, "%s/always", base);
    if ((rc = bench_always(dir, o.always_n, o.prealloc, &ar)))
        goto fail;
    if (!o.json)
        printf("always-1    one 100 B record per append (%d): p50 %.1f us, p99 %.1f us, "
               "p999 %.1f us, max %.1f us (raw fdatasync p50 %.1f us, ratio %.2f)\n",
               o.always_n, ar.p50, ar.p99, ar.p999, ar.max, fs_p50, ar.p50 / fs_p50);
    if (!o.skip_big && !o.only_always) {
        snprintf(dir, sizeof dir, "%s/big", base);
        if ((rc = bench_big(dir, &o, show, &big)))
            goto fail;
        if (!o.json) {
            printf("big         %.2f GiB, %" PRIu64 " records, built in %.1f s, killed with SIGKILL\n",
                   big.gib, big.records, big.build_s);
            printf("reopen      after kill -9: %.1f ms\n", big.reopen_ms);
            printf("read        random record by offset, warm: p50 %.1f us, p99 %.1f us, max %.1f us\n",
                   big.read_p50_us, big.read_p99_us, big.read_max_us);
            printf("memory      RSS %ld KiB before open, %ld KiB after open+reads; anonymous %ld -> %ld KiB\n",
                   big.rss_small_kb, big.rss_big_kb, big.anon_small_kb, big.anon_big_kb);
        }
    }
    if (o.json) {
        json_t *j = json_pack("{s:f,s:f,s:f,s:f,s:f,s:f,s:f,s:f}", "fdatasync_4k_p50_us", fs_p50,
                              "seq_fdatasync_MB_per_s", seq, "append100_records_per_s", r100,
                              "append100_MB_per_s", mb100, "append1k_records_per_s", r1k,
                              "append1k_MB_per_s", mb1k, "always1_p50_us", ar.p50,
                              "always1_p99_us", ar.p99);
        if (j) {
            json_object_set_new(j, "always1_p999_us", json_real(ar.p999));
            json_object_set_new(j, "always1_max_us", json_real(ar.max));
        }
        if (j && !o.skip_big && !o.only_always) {
            json_object_set_new(j, "big_gib", json_real(big.gib));
            json_object_set_new(j, "reopen_ms", json_real(big.reopen_ms));
            json_object_set_new(j, "read_p50_us", json_real(big.read_p50_us));
            json_object_set_new(j, "read_p99_us", json_real(big.read_p99_us));
            json_object_set_new(j, "rss_before_kb", json_integer(big.rss_small_kb));
            json_object_set_new(j, "rss_after_kb", json_integer(big.rss_big_kb));
            json_object_set_new(j, "anon_before_kb", json_integer(big.anon_small_kb));
            json_object_set_new(j, "anon_after_kb", json_integer(big.anon_big_kb));
        }
        char *s = j ? json_dumps(j, JSON_COMPACT) : NULL;
        if (s)
            puts(s);
        free(s);
        json_decref(j);
    }
    if (!o.dir)
        rm_dir_files(base);
    return 0;
fail:
    progress_end(show);
    fprintf(stderr, "log bench: %s\n", verity_strerror(rc));
    if (!o.dir)
        rm_dir_files(base);
    return 1;
}
