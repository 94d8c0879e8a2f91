/*
 * verity proof bench: what the Merkle tree costs (docs/PERFORMANCE.md).
 *
 *   verity proof bench [--dir DIR] [--records N] [--rounds R] [--big-gib G]
 *                      [--proofs K] [--json]
 *
 * 1. Append throughput with the tree on and off: R rounds, each appending N
 *    records (default 3,000,000) in batches of 1000 x 100 B under `group`
 *    durability to a fresh log with the tree on, then off; the median of
 *    each mode is reported (rounds alternate so machine load hits both).
 * 2. Proof generation on a log of G GiB (default 5) of such batches: K
 *    random offsets (default 10,000); p50/p99/max of the bare proof (find
 *    the leaf, audit path, root: the O(log n) reads), of the signed JSON
 *    proof (adds the Ed25519 checkpoint signature and encoding), and of
 *    the signed proof carrying the batch bytes (adds a 100 KB read).
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <dirent.h>

#include <jansson.h>

#include "storage/batch.h"
#include "storage/checkpoint.h"
#include "storage/merkle.h"
#include "storage/proof.h"
#include "storage/vlog.h"
#include "tools/cmds.h"
#include "verity/errors.h"

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int64_t cpu_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

static double pct_us(int64_t *v, size_t n, double p)
{
    size_t i = (size_t)(p * (double)(n - 1));
    return (double)v[i] / 1000.0;
}

static void rm_files(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    char p[4400];
    while (d && (e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        unlink(p);
    }
    if (d)
        closedir(d);
    rmdir(dir);
}

static int fill_batch(struct batch_builder *b)
{
    char v[100];
    memset(v, 'v', sizeof v);
    batch_builder_reset(b);
    for (int i = 0; i < 1000; i++) {
        int rc = batch_builder_add(b, 1700000000000, "k", 1, v, (int32_t)sizeof v, NULL, 0);
        if (rc)
            return rc;
    }
    struct batch_meta m = {0, -1, -1, -1, NULL};
    return batch_builder_finish(b, &m);
}

static int append_run(const char *dir, uint64_t records, bool tree_off, enum vlog_durability d,
                      struct batch_builder *b, double *rec_s, struct vlog **keep)
{
    struct vlog_config c;
    struct vlog *log = NULL;
    vlog_config_default(&c);
    c.durability = d;
    c.tree_off = tree_off;
    int rc = vlog_open(dir, &c, 0, &log, NULL);
    if (rc)
        return rc;
    uint64_t batches = records / 1000;
    int64_t t0 = now_ns();
    for (uint64_t i = 0; i < batches && !rc; i++) {
        if ((rc = fill_batch(b)) == 0) /* the log stamps the batch in place */
            rc = vlog_append(log, b->buf, b->len, 0, NULL);
    }
    struct vlog_info info;
    vlog_get_info(log, &info);
    if (!rc)
        rc = vlog_wait_durable(log, info.end_offset, 120000);
    *rec_s = (double)(batches * 1000) / ((double)(now_ns() - t0) / 1e9);
    if (keep && !rc) {
        *keep = log;
        return 0;
    }
    int crc = vlog_close(log, 0);
    return rc ? rc : crc;
}

int cmd_proof_bench(int argc, char **argv)
{
    const char *base_opt = NULL;
    uint64_t records = 3000000, proofs = 10000;
    int rounds = 3;
    uint32_t gap_us = 0;
    double big_gib = 5;
    bool json = false;
    setvbuf(stdout, NULL, _IOLBF, 0);
    static const struct option lo[] = {
        {"dir", required_argument, 0, 'd'},    {"records", required_argument, 0, 'r'},
        {"rounds", required_argument, 0, 'n'}, {"big-gib", required_argument, 0, 'g'},
        {"proofs", required_argument, 0, 'p'}, {"json", no_argument, 0, 'j'},
        {"gap-us", required_argument, 0, 'G'}, {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0}};
    int ch;
    optind = 1;
    while ((ch = getopt_long(argc, argv, "h", lo, NULL)) != -1) {
        switch (ch) {
        case 'd':
            base_opt = optarg;
            break;
        case 'r':
            records = strtoull(optarg, NULL, 10);
            break;
        case 'n':
            rounds = atoi(optarg);
            break;
        case 'g':
            big_gib = atof(optarg);
            break;
        case 'p':
            proofs = strtoull(optarg, NULL, 10);
            break;
        case 'j':
            json = true;
            break;
        case 'G':
            gap_us = (uint32_t)strtoul(optarg, NULL, 10);
            break;
        case 'h':
            printf("usage: verity proof bench [--dir DIR] [--records N] [--rounds R] "
                   "[--big-gib G] [--proofs K] [--gap-us U] [--json]\n"
                   "  Append throughput tree on vs off (batches of 1000 x 100 B, group),\n"
                   "  then proof generation time for random offsets in a G GiB log.\n"
                   "  --gap-us U: sleep U us before each timed proof (requests arriving\n"
                   "  one by one, as a server sees them; default 0: back to back).\n");
            return CMD_EXIT_OK;
        default:
            return CMD_EXIT_USAGE;
        }
    }
    if (records < 1000 || rounds < 1 || rounds > 20 || proofs < 1 || big_gib < 0)
        return CMD_EXIT_USAGE;
    char tmpl[] = "/tmp/verity-proofbench-XXXXXX", base[4096], dir[4200];
    if (base_opt) {
        snprintf(base, sizeof base, "%s", base_opt);
        if (mkdir(base, 0755) && errno != EEXIST)
            return CMD_EXIT_FAIL;
    } else if (!mkdtemp(tmpl)) {
        return CMD_EXIT_FAIL;
    } else {
        snprintf(base, sizeof base, "%s", tmpl);
    }
    struct batch_builder b;
    int rc = batch_builder_init(&b, 1000 * 140 + BATCH_HDR_SIZE);
    if (rc)
        return CMD_EXIT_FAIL;
    double on[20], off[20];
    for (int r = 0; r < rounds && !rc; r++) {
        snprintf(dir, sizeof dir, "%s/on", base);
        rc = append_run(dir, records, false, VLOG_DURABILITY_GROUP, &b, &on[r], NULL);
        rm_files(dir);
        snprintf(dir, sizeof dir, "%s/off", base);
        if (!rc)
            rc = append_run(dir, records, true, VLOG_DURABILITY_GROUP, &b, &off[r], NULL);
        rm_files(dir);
        if (!json && !rc)
            printf("round %d: tree on %.0f records/s, off %.0f records/s\n", r + 1, on[r], off[r]);
    }
    /* medians */
    double on_m = 0, off_m = 0;
    if (!rc) {
        for (int i = 0; i < rounds; i++)
            for (int j = i + 1; j < rounds; j++) {
                if (on[j] < on[i]) {
                    double t = on[i];
                    on[i] = on[j];
                    on[j] = t;
                }
                if (off[j] < off[i]) {
                    double t = off[i];
                    off[i] = off[j];
                    off[j] = t;
                }
            }
        on_m = on[rounds / 2];
        off_m = off[rounds / 2];
        if (!json)
            printf("append      batches of 1000 x 100 B, group: tree on %.0f records/s, off %.0f "
                   "records/s (median of %d): %+.1f %%\n",
                   on_m, off_m, rounds, (on_m / off_m - 1) * 100);
    }
    /* proofs on a big log */
    double p[5][3] = {{0}};
    uint64_t preempted_out = 0;
    double calm_p99_out = 0;
    uint64_t leaves = 0;
    double gib = 0;
    if (!rc && big_gib > 0) {
        struct vlog *log = NULL;
        double rs;
        uint64_t big_records = (uint64_t)(big_gib * (double)(1ull << 30) / (double)(b.len) * 1000);
        snprintf(dir, sizeof dir, "%s/big", base);
        rc = append_run(dir, big_records, false, VLOG_DURABILITY_OS, &b, &rs, NULL);
        /* measure a settled log, as a broker serving proofs has one: closed
         * (synced), reopened, warmed with a first pass of proofs */
        if (!rc)
            rc = vlog_open(dir, &(struct vlog_config){.durability = VLOG_DURABILITY_OS}, 0, &log,
                           NULL);
        EVP_PKEY *key = NULL;
        char kp[4400], pp[4400];
        snprintf(kp, sizeof kp, "%s/k.key", base);
        snprintf(pp, sizeof pp, "%s/k.pub", base);
        if (!rc && !(rc = ckpt_keygen(kp, pp)))
            rc = ckpt_load_private(kp, &key);
        struct proof_signer s;
        if (!rc)
            rc = proof_signer_init(&s, key, PROOF_NAME_DEFAULT, "bench", 0);
        struct vlog_info info;
        if (!rc) {
            vlog_get_info(log, &info);
            leaves = mt_size(vlog_tree(log));
            gib = (double)info.size_bytes / (double)(1ull << 30);
        }
        int64_t *t[5], *calm = calloc(proofs, sizeof(int64_t));
        uint64_t n_preempted = 0, n_calm = 0, minflt = 0, majflt = 0;
        for (int k = 0; k < 5; k++)
            t[k] = calloc(proofs, sizeof(int64_t));
        uint64_t seed = 88172645463325252ull;
        uint8_t path[MT_PROOF_MAX][MT_HASH_SIZE], root[MT_HASH_SIZE];
        for (uint64_t i = 0; i < 2 * proofs && !rc; i++) {
            bool warm = i < proofs;
            seed ^= seed << 13, seed ^= seed >> 7, seed ^= seed << 17;
            uint64_t at = seed % info.end_offset, idx;
            size_t np = 0;
            struct rusage ru0, ru1;
            if (gap_us && !warm) /* proofs arrive like requests, not back to back */
                usleep(gap_us);
            getrusage(RUSAGE_THREAD, &ru0);
            int64_t c0 = cpu_ns();
            int64_t t0 = now_ns();
            struct mtree *tr = vlog_tree(log);
            if ((rc = mt_find_offset(tr, leaves, at, &idx)) ||
                (rc = mt_prove_inclusion(tr, idx, leaves, path, &np)) ||
                (rc = mt_root(tr, leaves, root)))
                break;
            int64_t t1 = now_ns();
            int64_t c1 = cpu_ns();
            getrusage(RUSAGE_THREAD, &ru1);
            if (warm)
                continue;
            /* why a proof took long: descheduled (involuntary context
             * switch: another process took the core), page faults */
            if (ru1.ru_nivcsw != ru0.ru_nivcsw || ru1.ru_nvcsw != ru0.ru_nvcsw)
                n_preempted++;
            else
                calm[n_calm++] = t1 - t0;
            minflt += (uint64_t)(ru1.ru_minflt - ru0.ru_minflt);
            majflt += (uint64_t)(ru1.ru_majflt - ru0.ru_majflt);
            json_t *j = NULL;
            if ((rc = proof_inclusion(log, &s, at, leaves, false, &j)))
                break;
            int64_t t2 = now_ns();
            json_decref(j);
            int64_t c2 = cpu_ns();
            if ((rc = proof_inclusion(log, &s, at, leaves, true, &j)))
                break;
            int64_t t3 = now_ns();
            t[4][i - proofs] = cpu_ns() - c2;
            json_decref(j);
            t[0][i - proofs] = t1 - t0, t[1][i - proofs] = t2 - t1, t[2][i - proofs] = t3 - t2;
            t[3][i - proofs] = c1 - c0;
        }
        for (int k = 0; k < 5 && !rc; k++) {
            qsort(t[k], proofs, sizeof(int64_t), cmp_i64);
            p[k][0] = pct_us(t[k], proofs, 0.5);
            p[k][1] = pct_us(t[k], proofs, 0.99);
            p[k][2] = (double)t[k][proofs - 1] / 1000.0;
        }
        double calm_p99 = 0;
        if (!rc && n_calm) {
            qsort(calm, n_calm, sizeof(int64_t), cmp_i64);
            calm_p99 = pct_us(calm, n_calm, 0.99);
        }
        free(calm);
        for (int k = 0; k < 5; k++)
            free(t[k]);
        EVP_PKEY_free(key);
        vlog_abandon(log);
        rm_files(dir);
        unlink(kp);
        unlink(pp);
        if (!json && !rc) {
            printf("proof log   %.2f GiB, %" PRIu64 " batches (leaves), %" PRIu64
                   " random offsets\n",
                   gib, leaves, proofs);
            static const char *what[5] = {"bare proof (leaf, path, root)",
                                          "signed JSON + tlog-proof", "same, with batch bytes",
                                          "bare proof, thread CPU time",
                                          "with batch bytes, CPU time"};
            for (int k = 0; k < 5; k++)
                printf("proof       %-30s p50 %.1f us, p99 %.1f us, max %.1f us\n", what[k],
                       p[k][0], p[k][1], p[k][2]);
            printf("proof       bare proofs descheduled meanwhile (context switch) %" PRIu64
                   " of %" PRIu64 "; p99 of the others %.1f us; page faults minor %" PRIu64
                   " major %" PRIu64 "\n",
                   n_preempted, proofs, calm_p99, minflt, majflt);
        }
        preempted_out = n_preempted;
        calm_p99_out = calm_p99;
    }
    batch_builder_deinit(&b);
    if (!base_opt)
        rm_files(base);
    if (rc) {
        fprintf(stderr, "proof bench: %s\n", verity_strerror(rc));
        return CMD_EXIT_FAIL;
    }
    if (json) {
        json_t *j =
            json_pack("{s:f,s:f,s:i,s:f,s:I,s:f,s:f,s:f,s:f,s:f,s:f}", "append_tree_on_rec_s", on_m,
                      "append_tree_off_rec_s", off_m, "rounds", rounds, "proof_log_gib", gib,
                      "proof_leaves", (json_int_t)leaves, "bare_p50_us", p[0][0], "bare_p99_us",
                      p[0][1], "signed_p50_us", p[1][0], "signed_p99_us", p[1][1],
                      "with_batch_p50_us", p[2][0], "with_batch_p99_us", p[2][1]);
        json_object_set_new(j, "bare_cpu_p99_us", json_real(p[3][1]));
        json_object_set_new(j, "with_batch_cpu_p99_us", json_real(p[4][1]));
        json_object_set_new(j, "bare_descheduled", json_integer((json_int_t)preempted_out));
        json_object_set_new(j, "bare_not_descheduled_p99_us", json_real(calm_p99_out));
        char *s = json_dumps(j, JSON_COMPACT);
        puts(s);
        free(s);
        json_decref(j);
    }
    return CMD_EXIT_OK;
}
