/*
 * verity log write DIR: appends lines from standard input (or files) to a
 * partition log directory, one record per line, through the same storage
 * engine the broker uses. For the tour, for tests and for building fixture
 * logs; a running broker's partitions must not be written this way.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "storage/clock.h"
#include "storage/batch.h"
#include "storage/checkpoint.h"
#include "storage/dirlock.h"
#include "storage/vlog.h"
#include "tools/cmds.h"
#include "verity/errors.h"
#include "verity/limits.h"

static void usage(FILE *f)
{
    fprintf(f, "usage: verity log write DIR [options] [FILE...]\n"
               "  Appends one record per input line (standard input when no FILE).\n"
               "  --signing-key FILE    Ed25519 private key (verity keygen) for checkpoints\n"
               "  --durability MODE     always | group | os (default always)\n"
               "  --batch N             lines per batch (default 1)\n"
               "  --key-separator S     split each line at the first S into key and value\n"
               "  --json                print a JSON summary\n");
}

struct writer {
    struct vlog *log;
    struct batch_builder b;
    uint32_t per_batch;
    const char *sep;
    uint64_t records, batches, first_offset, last_offset;
};

static int flush_batch(struct writer *w)
{
    int rc;
    struct vlog_append_info info;
    if (w->b.count == 0)
        return 0;
    if ((rc = batch_builder_finish(&w->b, NULL)))
        return rc;
    if ((rc = vlog_append(w->log, w->b.buf, w->b.len, clock_wall_ms(), &info)))
        return rc;
    if (w->batches == 0)
        w->first_offset = info.base_offset;
    w->last_offset = info.last_offset;
    w->batches++;
    batch_builder_reset(&w->b);
    return 0;
}

static int write_stream(struct writer *w, FILE *in)
{
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    int rc = 0;
    while (rc == 0 && (n = getline(&line, &cap, in)) >= 0) {
        if (n > 0 && line[n - 1] == '\n')
            line[--n] = '\0';
        const char *key = NULL, *val = line;
        int32_t klen = -1, vlen = (int32_t)n;
        char *s = w->sep && *w->sep ? strstr(line, w->sep) : NULL;
        if (s) {
            key = line;
            klen = (int32_t)(s - line);
            val = s + strlen(w->sep);
            vlen = (int32_t)(n - (val - line));
        }
        if (n > (ssize_t)VERITY_BATCH_BYTES_MAX / 2) {
            rc = VERITY_ELIMIT;
            break;
        }
        rc = batch_builder_add(&w->b, clock_wall_ms(), key, klen, val, vlen, NULL, 0);
        if (rc == VERITY_ELIMIT && w->b.count > 0) { /* full: flush and retry once */
            if ((rc = flush_batch(w)) == 0)
                rc = batch_builder_add(&w->b, clock_wall_ms(), key, klen, val, vlen, NULL, 0);
        }
        if (rc == 0)
            w->records++;
        if (rc == 0 && w->b.count >= w->per_batch)
            rc = flush_batch(w);
    }
    free(line);
    if (rc == 0 && ferror(in))
        rc = -EIO;
    return rc;
}

static int cmd_log_write_locked(struct writer *wp, struct vlog_config *cfgp, const char *keyfile,
                                const char *dir, bool json, int argc, char **argv);

int cmd_log_write(int argc, char **argv)
{
    static const struct option lo[] = {{"signing-key", required_argument, 0, 'k'},
                                       {"durability", required_argument, 0, 'd'},
                                       {"batch", required_argument, 0, 'b'},
                                       {"key-separator", required_argument, 0, 's'},
                                       {"json", no_argument, 0, 'j'},
                                       {"help", no_argument, 0, 'h'},
                                       {0, 0, 0, 0}};
    const char *keyfile = NULL;
    bool json = false;
    struct writer w = {0};
    struct vlog_config cfg;
    int ch, rc = 0;
    vlog_config_default(&cfg);
    cfg.durability = VLOG_DURABILITY_ALWAYS;
    w.per_batch = 1;
    optind = 1;
    while ((ch = getopt_long(argc, argv, "h", lo, NULL)) != -1) {
        switch (ch) {
        case 'k': keyfile = optarg; break;
        case 'd':
            if (!strcmp(optarg, "always"))
                cfg.durability = VLOG_DURABILITY_ALWAYS;
            else if (!strcmp(optarg, "group"))
                cfg.durability = VLOG_DURABILITY_GROUP;
            else if (!strcmp(optarg, "os"))
                cfg.durability = VLOG_DURABILITY_OS;
            else {
                fprintf(stderr, "log write: --durability must be always, group or os\n");
                return 2;
            }
            break;
        case 'b': {
            char *end;
            unsigned long v = strtoul(optarg, &end, 10);
            if (*end || v == 0 || v > VERITY_BATCH_RECORDS_MAX) {
                fprintf(stderr, "log write: --batch must be 1..%u\n", VERITY_BATCH_RECORDS_MAX);
                return 2;
            }
            w.per_batch = (uint32_t)v;
            break;
        }
        case 's': w.sep = optarg; break;
        case 'j': json = true; break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (optind >= argc) {
        usage(stderr);
        return 2;
    }
    const char *dir = argv[optind++];
    /* The same one-owner rule as verityd: never append to a log a broker
     * (or another writer) has open. */
    struct dirlock lock = {0};
    pid_t owner = 0;
    char held[4096] = "";
    if (mkdir(dir, 0755) && errno != EEXIST) {
        fprintf(stderr, "log write: cannot create %s: %s\n", dir, strerror(errno));
        return 1;
    }
    if ((rc = dirlock_acquire_tree(&lock, dir, &owner, held, sizeof held))) {
        if (rc == -EBUSY)
            fprintf(stderr, "log write: %s: data directory in use by PID %ld (lock %s/%s)\n",
                    dir, (long)owner, held, DIRLOCK_NAME);
        else
            fprintf(stderr, "log write: cannot lock %s: %s\n", dir, verity_strerror(rc));
        return 1;
    }
    rc = cmd_log_write_locked(&w, &cfg, keyfile, dir, json, argc, argv);
    dirlock_release(&lock);
    return rc;
}

static int cmd_log_write_locked(struct writer *wp, struct vlog_config *cfgp, const char *keyfile,
                                const char *dir, bool json, int argc, char **argv)
{
    struct writer w = *wp;
    struct vlog_config cfg = *cfgp;
    EVP_PKEY *key = NULL;
    int rc = 0;
    if (keyfile && (rc = ckpt_load_private(keyfile, &key))) {
        fprintf(stderr, "log write: cannot load %s: %s\n", keyfile, verity_strerror(rc));
        return 1;
    }
    cfg.signing_key = key;
    uint64_t bad = 0;
    if ((rc = batch_builder_init(&w.b, VERITY_BATCH_BYTES_MAX))) {
        EVP_PKEY_free(key);
        return 1;
    }
    if ((rc = vlog_open(dir, &cfg, clock_wall_ms(), &w.log, &bad))) {
        fprintf(stderr, "log write: cannot open %s: %s", dir, verity_strerror(rc));
        if (rc == VERITY_ECORRUPT || rc == VERITY_ECHAIN)
            fprintf(stderr, " (first bad offset %" PRIu64 ")", bad);
        fputc('\n', stderr);
        batch_builder_deinit(&w.b);
        EVP_PKEY_free(key);
        return 1;
    }
    if (optind == argc) {
        rc = write_stream(&w, stdin);
    } else {
        for (int i = optind; i < argc && rc == 0; i++) {
            FILE *f = fopen(argv[i], "r");
            if (!f) {
                rc = -errno;
                fprintf(stderr, "log write: %s: %s\n", argv[i], strerror(errno));
                break;
            }
            rc = write_stream(&w, f);
            fclose(f);
        }
    }
    if (rc == 0)
        rc = flush_batch(&w);
    int crc = vlog_close(w.log, clock_wall_ms());
    if (rc == 0)
        rc = crc;
    batch_builder_deinit(&w.b);
    EVP_PKEY_free(key);
    if (rc) {
        fprintf(stderr, "log write: %s\n", verity_strerror(rc));
        return 1;
    }
    if (json)
        printf("{\"records\":%" PRIu64 ",\"batches\":%" PRIu64 ",\"first_offset\":%" PRIu64
               ",\"last_offset\":%" PRIu64 "}\n",
               w.records, w.batches, w.first_offset, w.last_offset);
    else if (w.batches)
        printf("wrote %" PRIu64 " record%s in %" PRIu64 " batch%s, offsets %" PRIu64 "..%" PRIu64
               "\n",
               w.records, w.records == 1 ? "" : "s", w.batches, w.batches == 1 ? "" : "es",
               w.first_offset, w.last_offset);
    else
        printf("wrote nothing (no input lines)\n");
    return 0;
}
