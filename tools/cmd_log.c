/*
 * verity log: tools for a partition log directory, read offline.
 *
 *   verity log verify DIR [--pubkey FILE] [--json] [--progress]
 *       Checks every batch (CRC, records, offsets, chain, checkpoints and
 *       their signatures) with storage/verify.c. Exit 0 clean, 1 on a
 *       finding (the first bad offset and why), 2 on a usage error.
 *   verity log dump DIR [--from OFFSET] [--count N] [--json]
 *       Prints batches and records, human-readable or one JSON object per
 *       record. Stops with exit 1 at the first batch that does not validate.
 *   verity log bench ...
 *       Storage benchmark (tools/cmd_log_bench.c).
 *
 * Both verify and dump read the files through storage/verify.h, never
 * through the writer (storage/vlog.c), so they work on a log that the
 * writer would refuse to open.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>
#include <openssl/evp.h>

#include "storage/batch.h"
#include "storage/checkpoint.h"
#include "storage/verify.h"
#include "storage/verify_tree.h"
#include "tools/cmds.h"
#include "verity/errors.h"

static int is_help_arg(const char *a) { return strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0; }

static void hex_str(const uint8_t *p, size_t n, char *out)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[p[i] >> 4];
        out[2 * i + 1] = digits[p[i] & 15];
    }
    out[2 * n] = '\0';
}

/* Strict unsigned decimal parse: digits only, no overflow. */
static bool parse_u64(const char *s, uint64_t *out)
{
    if (!*s)
        return false;
    uint64_t v = 0;
    for (; *s; s++) {
        if (*s < '0' || *s > '9')
            return false;
        unsigned d = (unsigned)(*s - '0');
        if (v > (UINT64_MAX - d) / 10)
            return false;
        v = v * 10 + d;
    }
    *out = v;
    return true;
}

/* ---- verify ---------------------------------------------------------------- */

static void verify_usage(FILE *f)
{
    fprintf(f,
            "usage: verity log verify DIR [--pubkey FILE] [--json] [--progress]\n"
            "  Verifies a partition log offline: batch CRCs and records, offset\n"
            "  continuity, the SHA-256 chain, checkpoints and the anchor.\n"
            "  --pubkey FILE  Ed25519 public key (PEM) that must have signed every\n"
            "                 checkpoint; without it signatures are checked against the\n"
            "                 key each checkpoint embeds (integrity, not origin).\n"
            "  --json         print the report as one JSON object\n"
            "  --progress     progress on stderr (default when stderr is a terminal)\n"
            "  Exit status: 0 clean, 1 a finding (first bad offset and why), a directory\n"
            "  that cannot be read or holds no log, 2 usage.\n");
}

struct progress_state {
    bool printed;
};

static void progress_print(void *arg, uint64_t done, uint64_t total)
{
    struct progress_state *ps = arg;
    if (done >= total && !ps->printed)
        return; /* a short run: the final line alone is noise */
    double pct = total ? 100.0 * (double)done / (double)total : 100.0;
    fprintf(stderr, "\rverify: %" PRIu64 " / %" PRIu64 " MiB (%.0f%%)", done >> 20, total >> 20,
            pct);
    ps->printed = true;
    if (done >= total)
        fputc('\n', stderr);
}

/* A directory with no segment file is not a damaged log but no log at all
 * (verify_log_dir reports it as an ENOTFOUND finding at offset 0). */
static bool not_a_log(const struct verify_report *rep)
{
    return rep->found && rep->segments == 0 && rep->finding.code == VERITY_ENOTFOUND;
}

/* ---- Merkle tree (storage/verify_tree.h) ----------------------------------- */

static json_t *tree_json(const struct verify_tree_report *t, int rc)
{
    return json_pack("{s:b,s:I,s:I,s:I,s:I,s:b,s:s}", "present", t->present, "leaves",
                     (json_int_t)t->leaves, "batches", (json_int_t)t->batches, "notes_checked",
                     (json_int_t)t->notes_checked, "behind",
                     (json_int_t)t->tree_behind, "ok", rc == 0,
                     "reason", t->found ? t->reason : rc ? verity_strerror(rc) : "");
}

static void tree_print(const struct verify_tree_report *t, int rc)
{
    if (!t->present && rc == 0) {
        printf("merkle tree: none (tree.* files absent)\n");
        return;
    }
    if (rc == 0)
        printf("merkle tree: OK, %llu leaves match the batches, %llu signed tree notes in "
               "checkpoints match%s\n",
               (unsigned long long)t->leaves, (unsigned long long)t->notes_checked,
               t->tree_behind ? " (the last batches get their leaves on the next open)" : "");
    else if (t->found)
        printf("merkle tree: FINDING at leaf %llu: %s\n", (unsigned long long)t->leaf, t->reason);
    else
        printf("merkle tree: cannot check: %s\n", verity_strerror(rc));
}

static json_t *report_json(const char *dir, const struct verify_report *rep)
{
    char chain[65];
    hex_str(rep->chain, sizeof rep->chain, chain);
    json_t *recs = json_array();
    for (size_t i = 0; i < rep->recoveries_listed; i++) {
        json_t *parsed = json_loads(rep->recoveries[i].text, JSON_DECODE_ANY, NULL);
        json_array_append_new(recs, json_pack("{s:I, s:o}", "offset",
                                              (json_int_t)rep->recoveries[i].offset, "record",
                                              parsed ? parsed
                                                     : json_string(rep->recoveries[i].text)));
    }
    json_t *finding = json_null();
    if (rep->found)
        finding = json_pack("{s:I, s:s, s:I, s:s, s:i, s:s, s:b}", "offset",
                            (json_int_t)rep->finding.offset, "segment", rep->finding.segment,
                            "position", (json_int_t)rep->finding.position, "code",
                            verity_errname(rep->finding.code), "code_num", rep->finding.code,
                            "reason", rep->finding.reason, "torn_tail", rep->torn_tail);
    return json_pack("{s:s, s:b, s:i, s:I, s:I, s:I, s:I, s:I, s:I, s:b, s:b, s:I, s:I, s:I, "
                     "s:I, s:o, s:s, s:o, s:b}",
                     "dir", dir, "ok", !rep->found, "segments", (int)rep->segments, "batches",
                     (json_int_t)rep->batches, "records", (json_int_t)rep->records,
                     "control_batches", (json_int_t)rep->control_batches, "bytes",
                     (json_int_t)rep->bytes, "start_offset", (json_int_t)rep->start_offset,
                     "end_offset", (json_int_t)rep->end_offset, "anchored", rep->anchored,
                     "origin_checked", rep->origin_checked, "checkpoints_verified",
                     (json_int_t)rep->checkpoints_verified, "checkpoints_unsigned",
                     (json_int_t)rep->checkpoints_unsigned, "recovery_records",
                     (json_int_t)rep->recovery_records, "state_marks", (json_int_t)rep->state_marks,
                     "recoveries", recs, "chain", chain,
                     "finding", finding, "not_a_log", not_a_log(rep));
}

static void report_print(const char *dir, const char *pubkey_path,
                         const struct verify_report *rep)
{
    if (not_a_log(rep)) {
        printf("NOT A LOG: %s holds no segment files (<20 digits>.log); nothing to verify "
               "(a partition log is <data_dir>/topics/<topic>/<partition>, or __meta, __groups)\n",
               dir);
        return;
    }
    printf("log %s: %" PRIu32 " segment%s, %" PRIu64 " batch%s, %" PRIu64
           " record%s, %" PRIu64 " bytes, offsets [%" PRIu64 ", %" PRIu64 ")%s\n",
           dir, rep->segments, rep->segments == 1 ? "" : "s", rep->batches,
           rep->batches == 1 ? "" : "es", rep->records, rep->records == 1 ? "" : "s", rep->bytes,
           rep->start_offset, rep->end_offset, rep->anchored ? " (from anchor)" : "");
    if (pubkey_path)
        printf("checkpoints: %" PRIu64 " verified against %s\n", rep->checkpoints_verified,
               pubkey_path);
    else
        printf("checkpoints: %" PRIu64 " signed, %" PRIu64
               " unsigned; origin NOT checked (no --pubkey given)\n",
               rep->checkpoints_verified, rep->checkpoints_unsigned);
    printf("recovery records: %" PRIu64 "\n", rep->recovery_records);
    if (rep->state_marks)
        printf("state marks: %" PRIu64 " (a state installed from a peer: the records before "
               "each do not derive what follows)\n",
               rep->state_marks);
    for (size_t i = 0; i < rep->recoveries_listed; i++)
        printf("  at offset %" PRIu64 ": %s\n", rep->recoveries[i].offset,
               rep->recoveries[i].text);
    if (rep->found) {
        printf("FAIL at offset %" PRIu64 " (%s, byte %" PRIu64 "): %s: %s\n",
               rep->finding.offset, rep->finding.segment[0] ? rep->finding.segment : "-",
               rep->finding.position, verity_errname(rep->finding.code), rep->finding.reason);
        printf("damaged log: %s\n", dir);
        if (rep->torn_tail)
            printf("repair: a torn tail (an interrupted last write); verityd cuts it on its next "
                   "start and records the cut\n");
        else
            printf("repair: keep a copy of the data directory, then restore this log from a "
                   "backup or replica, or move the damaged segment and those after it aside "
                   "(docs/OPERATIONS.md, \"A directory that does not start\")\n");
    } else if (rep->end_offset == rep->start_offset) {
        printf("OK: empty log, chain intact (next offset %" PRIu64 ")\n", rep->end_offset);
    } else {
        printf("OK: chain intact through offset %" PRIu64 ", the last offset in the log (%" PRIu64
               " control batch%s among the offsets: checkpoints, recovery records, state marks)\n",
               rep->end_offset - 1, rep->control_batches, rep->control_batches == 1 ? "" : "es");
    }
}

static int log_verify(int argc, char **argv)
{
    const char *dir = NULL, *pubkey_path = NULL;
    bool json = false, progress = isatty(STDERR_FILENO) != 0;
    for (int i = 1; i < argc; i++) {
        if (is_help_arg(argv[i])) {
            verify_usage(stdout);
            return CMD_EXIT_OK;
        } else if (strcmp(argv[i], "--pubkey") == 0 && i + 1 < argc) {
            pubkey_path = argv[++i];
        } else if (strcmp(argv[i], "--json") == 0) {
            json = true;
        } else if (strcmp(argv[i], "--progress") == 0) {
            progress = true;
        } else if (argv[i][0] != '-' && !dir) {
            dir = argv[i];
        } else {
            fprintf(stderr, "verity log verify: unexpected argument '%s'\n", argv[i]);
            verify_usage(stderr);
            return CMD_EXIT_USAGE;
        }
    }
    if (!dir) {
        verify_usage(stderr);
        return CMD_EXIT_USAGE;
    }
    EVP_PKEY *pub = NULL;
    if (pubkey_path) {
        int rc = ckpt_load_public(pubkey_path, &pub);
        if (rc) {
            fprintf(stderr, "verity log verify: cannot load public key %s: %s\n", pubkey_path,
                    verity_strerror(rc));
            return CMD_EXIT_USAGE;
        }
    }
    struct verify_report *rep = malloc(sizeof *rep);
    if (!rep) {
        EVP_PKEY_free(pub);
        fprintf(stderr, "verity log verify: out of memory\n");
        return CMD_EXIT_FAIL;
    }
    struct progress_state ps = {0};
    int rc = verify_log_dir(dir, pub, progress ? progress_print : NULL, &ps, rep);
    EVP_PKEY_free(pub);
    struct verify_tree_report tree;
    int trc = verify_tree_dir(dir, &tree); /* the Merkle tree against the segments */
    int exit_code = CMD_EXIT_OK;
    if (rc && !rep->found) {
        /* Not a finding about the log's contents: the directory itself
         * cannot be read. Exit 1 (2 is for a bad command line). */
        fprintf(stderr, "verity log verify: cannot read %s: %s\n", dir, verity_strerror(rc));
        if (json) {
            json_t *j = json_pack("{s:s, s:b, s:b, s:s, s:s}", "dir", dir, "ok", 0, "readable", 0,
                                  "error", verity_errname(rc), "error_message",
                                  verity_strerror(rc));
            char *s = j ? json_dumps(j, JSON_COMPACT) : NULL;
            if (s)
                puts(s);
            free(s);
            json_decref(j);
        }
        exit_code = CMD_EXIT_FAIL;
    } else if (json) {
        json_t *j = report_json(dir, rep);
        if (j)
            json_object_set_new(j, "tree", tree_json(&tree, trc));
        char *s = j ? json_dumps(j, JSON_COMPACT) : NULL;
        if (s)
            puts(s);
        else
            fprintf(stderr, "verity log verify: cannot encode the report\n");
        free(s);
        json_decref(j);
        exit_code = rep->found || !s || trc ? CMD_EXIT_FAIL : CMD_EXIT_OK;
    } else {
        report_print(dir, pubkey_path, rep);
        tree_print(&tree, trc);
        exit_code = rep->found || trc ? CMD_EXIT_FAIL : CMD_EXIT_OK;
    }
    free(rep);
    return exit_code;
}

/* ---- dump ------------------------------------------------------------------ */

struct dump_opts {
    const char *dir;
    uint64_t from;
    uint64_t count;          /* records to print; UINT64_MAX = all */
    bool json;
};

static void dump_usage(FILE *f)
{
    fprintf(f, "usage: verity log dump DIR [--from OFFSET] [--count N] [--json]\n"
               "  Prints batches and records from OFFSET (default: the first stored),\n"
               "  at most N records. --json prints one JSON object per record: offset,\n"
               "  timestamp, key, value (UTF-8 text, or base64 with key_encoding /\n"
               "  value_encoding \"base64\"), headers, and the batch fields.\n"
               "  Stops with exit 1 at the first batch that does not validate.\n");
}

static const char *control_name(const uint8_t *key, int32_t key_len)
{
    size_t n = key_len > 0 ? (size_t)key_len : 0;
    if (n == strlen(BATCH_CONTROL_CHECKPOINT) && memcmp(key, BATCH_CONTROL_CHECKPOINT, n) == 0)
        return "checkpoint";
    if (n == strlen(BATCH_CONTROL_RECOVERY) && memcmp(key, BATCH_CONTROL_RECOVERY, n) == 0)
        return "recovery";
    if (n == strlen(BATCH_CONTROL_STATE) && memcmp(key, BATCH_CONTROL_STATE, n) == 0)
        return "state";
    return "unknown";
}

/* Prints bytes as a quoted string with C escapes for anything not printable. */
static void print_bytes(const uint8_t *p, int32_t len)
{
    if (!p || len < 0) {
        fputs("null", stdout);
        return;
    }
    putchar('"');
    for (int32_t i = 0; i < len; i++) {
        uint8_t c = p[i];
        if (c == '"' || c == '\\')
            printf("\\%c", c);
        else if (c >= 0x20 && c < 0x7f)
            putchar(c);
        else
            printf("\\x%02x", c);
    }
    putchar('"');
}

/* Sets obj[name] to the bytes as a JSON string when they are valid UTF-8,
 * else to their base64 and obj[name + "_encoding"] = "base64". */
static void json_set_bytes(json_t *obj, const char *name, const uint8_t *p, int32_t len)
{
    if (!p || len < 0) {
        json_object_set_new(obj, name, json_null());
        return;
    }
    json_t *s = json_stringn((const char *)p, (size_t)len); /* NULL unless valid UTF-8 */
    if (!s) {
        size_t cap = 4 * (((size_t)len + 2) / 3) + 1;
        char *b64 = malloc(cap);
        char enc_key[64];
        if (b64) {
            EVP_EncodeBlock((unsigned char *)b64, p, len);
            s = json_string(b64);
            free(b64);
        }
        snprintf(enc_key, sizeof enc_key, "%s_encoding", name);
        json_object_set_new(obj, enc_key, json_string("base64"));
    }
    json_object_set_new(obj, name, s ? s : json_null());
}

static json_t *checkpoint_json(const struct batch_record *rec)
{
    struct ckpt ck;
    char chain[65], key[65];
    if (rec->value_len != CKPT_PAYLOAD_SIZE || ckpt_decode(rec->value, CKPT_PAYLOAD_SIZE, &ck))
        return json_pack("{s:b}", "valid", 0);
    hex_str(ck.chain, sizeof ck.chain, chain);
    hex_str(ck.pubkey, sizeof ck.pubkey, key);
    return json_pack("{s:b, s:I, s:s, s:I, s:I, s:b, s:s}", "valid", 1, "offset",
                     (json_int_t)ck.offset, "chain", chain, "record_count",
                     (json_int_t)ck.record_count, "time_ms", (json_int_t)ck.time_ms, "signed",
                     ck.is_signed, "pubkey", key);
}

static int dump_record_json(const struct batch_hdr *h, const char *control,
                            const struct batch_record *rec)
{
    json_t *o = json_object();
    json_t *hdrs = json_array();
    struct batch_header_kv kv;
    size_t pos = 0;
    int rc;
    json_object_set_new(o, "offset", json_integer((json_int_t)(h->base_offset + rec->offset_delta)));
    json_object_set_new(o, "timestamp", json_integer(rec->timestamp));
    json_set_bytes(o, "key", rec->key, rec->key_len);
    json_set_bytes(o, "value", rec->value, rec->value_len);
    while ((rc = batch_header_next(rec, &pos, &kv)) == 1) {
        json_t *hj = json_object();
        json_set_bytes(hj, "key", kv.key, (int32_t)kv.key_len);
        json_set_bytes(hj, "value", kv.value, kv.value_len);
        json_array_append_new(hdrs, hj);
    }
    json_object_set_new(o, "headers", hdrs);
    json_object_set_new(o, "batch",
                        json_pack("{s:I, s:I, s:i, s:i, s:o}", "base_offset",
                                  (json_int_t)h->base_offset, "producer_id",
                                  (json_int_t)h->producer_id, "epoch", (int)h->producer_epoch,
                                  "sequence", (int)h->base_sequence, "control",
                                  control ? json_string(control) : json_null()));
    if (control && strcmp(control, "checkpoint") == 0)
        json_object_set_new(o, "checkpoint", checkpoint_json(rec));
    char *s = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    if (!s)
        return -ENOMEM;
    puts(s);
    free(s);
    return rc < 0 ? rc : 0;
}

static void dump_batch_human(const struct batch_hdr *h, uint64_t position, const char *segment,
                             const char *control)
{
    char chain[17];
    hex_str(h->chain, 8, chain);
    printf("batch base_offset=%" PRIu64 " records=%" PRIu32 " bytes=%" PRIu32
           " segment=%s position=%" PRIu64 " first_timestamp=%" PRId64 " max_timestamp=%" PRId64
           " producer_id=%" PRId64 " epoch=%d sequence=%" PRId32 " crc=%08" PRIx32
           " chain=%s...",
           h->base_offset, h->record_count, h->length, segment, position, h->first_timestamp,
           h->max_timestamp, h->producer_id, (int)h->producer_epoch, h->base_sequence, h->crc,
           chain);
    if (h->attributes & BATCH_ATTR_IDEM_KEY) {
        char idem[33];
        hex_str(h->idem_key, sizeof h->idem_key, idem);
        printf(" idempotency_key=%s", idem);
    }
    if (control)
        printf(" control=%s", control);
    putchar('\n');
}

static int dump_record_human(const struct batch_hdr *h, const char *control,
                             const struct batch_record *rec)
{
    struct batch_header_kv kv;
    size_t pos = 0;
    int rc;
    printf("  offset=%" PRIu64 " timestamp=%" PRId64 " key=", h->base_offset + rec->offset_delta,
           rec->timestamp);
    print_bytes(rec->key, rec->key_len);
    if (control && strcmp(control, "checkpoint") == 0) {
        struct ckpt ck;
        char chain[65];
        if (rec->value_len == CKPT_PAYLOAD_SIZE && !ckpt_decode(rec->value, CKPT_PAYLOAD_SIZE, &ck)) {
            hex_str(ck.chain, sizeof ck.chain, chain);
            printf(" checkpoint{offset=%" PRIu64 " record_count=%" PRIu64 " time_ms=%" PRId64
                   " signed=%s chain=%s}",
                   ck.offset, ck.record_count, ck.time_ms, ck.is_signed ? "yes" : "no", chain);
        } else {
            fputs(" checkpoint{malformed}", stdout);
        }
    } else {
        fputs(" value=", stdout);
        print_bytes(rec->value, rec->value_len);
    }
    if (rec->header_count)
        fputs(" headers={", stdout);
    for (bool first = true; (rc = batch_header_next(rec, &pos, &kv)) == 1; first = false) {
        if (!first)
            putchar(' ');
        print_bytes(kv.key, (int32_t)kv.key_len);
        putchar('=');
        print_bytes(kv.value, kv.value_len);
    }
    if (rec->header_count)
        putchar('}');
    putchar('\n');
    return rc < 0 ? rc : 0;
}

/* Prints the records of one validated batch that fall in [from, ...), at
 * most *left of them. */
static int dump_batch(const struct dump_opts *o, const uint8_t *b, size_t len, uint64_t position,
                      const char *segment, uint64_t *left)
{
    struct batch_hdr h;
    struct batch_iter it;
    struct batch_record rec;
    const char *control = NULL;
    int rc;
    if ((rc = batch_hdr_decode(b, len, &h)))
        return rc;
    batch_iter_init(&it, b, len);
    if (h.attributes & BATCH_ATTR_CONTROL) {
        struct batch_iter peek = it;
        if (batch_iter_next(&peek, &rec) == 1)
            control = control_name(rec.key, rec.key_len);
    }
    if (!o->json)
        dump_batch_human(&h, position, segment, control);
    while (*left > 0 && (rc = batch_iter_next(&it, &rec)) == 1) {
        if (h.base_offset + rec.offset_delta < o->from)
            continue;
        rc = o->json ? dump_record_json(&h, control, &rec) : dump_record_human(&h, control, &rec);
        if (rc)
            return rc;
        (*left)--;
    }
    return rc < 0 ? rc : 0;
}

static int dump_run(const struct dump_opts *o)
{
    struct verify_segment *segs = NULL;
    struct verify_reader r = {.fd = -1};
    size_t n = 0, first = 0;
    uint64_t left = o->count, expected = 0;
    const uint8_t *b;
    size_t len;
    uint64_t position = 0;
    int rc = verify_list_segments(o->dir, &segs, &n);
    if (rc) {
        fprintf(stderr, "verity log dump: cannot read %s: %s\n", o->dir, verity_strerror(rc));
        return CMD_EXIT_USAGE;
    }
    /* Start in the last segment whose base is at or below from. */
    while (first + 1 < n && segs[first + 1].base_offset <= o->from)
        first++;
    if ((rc = verify_reader_init(&r, NULL)))
        goto out;
    for (size_t i = first; i < n && left > 0 && rc == 0; i++) {
        if ((rc = verify_reader_open(&r, o->dir, &segs[i])))
            break;
        expected = segs[i].base_offset;
        while (left > 0 && (rc = verify_reader_next(&r, &b, &len, &position)) == 1) {
            if ((rc = batch_validate(b, len, NULL)))
                break;
            uint64_t base = get_le64(b + BATCH_OFF_BASE_OFFSET);
            uint32_t count = get_le32(b + 56);
            expected = base + count;
            if (expected <= o->from)
                continue;
            if ((rc = dump_batch(o, b, len, position, segs[i].name, &left)))
                break;
        }
        if (rc < 0)
            fprintf(stderr, "verity log dump: stopped at offset %" PRIu64 " (%s, byte %" PRIu64
                    "): %s%s\n",
                    expected, segs[i].name, position, r.torn ? "torn tail: " : "",
                    verity_strerror(rc));
    }
out:
    verify_reader_deinit(&r);
    free(segs);
    if (fflush(stdout) != 0)
        rc = -errno;
    return rc < 0 ? CMD_EXIT_FAIL : CMD_EXIT_OK;
}

static int log_dump(int argc, char **argv)
{
    struct dump_opts o = {.count = UINT64_MAX};
    for (int i = 1; i < argc; i++) {
        if (is_help_arg(argv[i])) {
            dump_usage(stdout);
            return CMD_EXIT_OK;
        } else if (strcmp(argv[i], "--from") == 0 && i + 1 < argc &&
                   parse_u64(argv[i + 1], &o.from)) {
            i++;
        } else if (strcmp(argv[i], "--count") == 0 && i + 1 < argc &&
                   parse_u64(argv[i + 1], &o.count)) {
            i++;
        } else if (strcmp(argv[i], "--json") == 0) {
            o.json = true;
        } else if (argv[i][0] != '-' && !o.dir) {
            o.dir = argv[i];
        } else {
            fprintf(stderr, "verity log dump: unexpected or malformed argument '%s'\n", argv[i]);
            dump_usage(stderr);
            return CMD_EXIT_USAGE;
        }
    }
    if (!o.dir) {
        dump_usage(stderr);
        return CMD_EXIT_USAGE;
    }
    return dump_run(&o);
}

/* ---- dispatch -------------------------------------------------------------- */

struct log_cmd {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *help;
};

static const struct log_cmd log_cmds[] = {
    {"verify", log_verify, "verify CRCs, offsets, the hash chain and signed checkpoints"},
    {"dump", log_dump, "print batches and records (text or JSON lines)"},
    {"write", cmd_log_write, "append lines from stdin or files to a log directory"},
    {"bench", cmd_log_bench, "storage benchmark: append and read throughput, latency"},
};

static void log_usage(FILE *f)
{
    fprintf(f, "usage: verity log <subcommand> [args...]\n\nsubcommands:\n");
    for (size_t i = 0; i < sizeof log_cmds / sizeof log_cmds[0]; i++)
        fprintf(f, "  %-8s %s\n", log_cmds[i].name, log_cmds[i].help);
    fprintf(f, "\nRun `verity log <subcommand> --help` for its options.\n");
}

int cmd_log(int argc, char **argv)
{
    if (argc < 2) {
        log_usage(stderr);
        return CMD_EXIT_USAGE;
    }
    if (is_help_arg(argv[1]) || strcmp(argv[1], "help") == 0) {
        log_usage(stdout);
        return CMD_EXIT_OK;
    }
    for (size_t i = 0; i < sizeof log_cmds / sizeof log_cmds[0]; i++)
        if (strcmp(log_cmds[i].name, argv[1]) == 0)
            return log_cmds[i].run(argc - 1, argv + 1);
    fprintf(stderr, "verity log: unknown subcommand '%s'\n\n", argv[1]);
    log_usage(stderr);
    return CMD_EXIT_USAGE;
}
