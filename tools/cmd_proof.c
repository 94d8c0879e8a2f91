/*
 * verity proof: proofs a third party can check, from a data directory.
 *
 *   verity proof inclusion TOPIC PARTITION OFFSET [--size N] [--no-batch] [--json]
 *   verity proof consistency TOPIC PARTITION OLD NEW [--json]
 *   verity proof checkpoint TOPIC PARTITION [--size N]
 *   verity proof key
 *   verity proof verify FILE|- --key VKEY [--key VKEY ...] [--json]
 *   verity proof cosign TOPIC PARTITION --witness URL --witness-key VKEY (cmd_proof_cosign.c)
 *   verity proof bench ...            (cmd_proof_bench.c)
 *
 * Common options: --data-dir DIR (./data), --key-file FILE (the Ed25519
 * private key, default DIR/keys/verity.key), --name NAME (the key name,
 * default verity.example/local; origins are NAME/TOPIC/PARTITION).
 * The log is opened read-only; a running broker may keep appending.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "storage/checkpoint.h"
#include "storage/merkle.h"
#include "storage/note.h"
#include "storage/proof.h"
#include "storage/vlog.h"
#include "tools/cmds.h"
#include "verity/errors.h"

#define PROOF_PATH_MAX 4096
#define PROOF_KEYS_MAX 16

struct popts {
    const char *data_dir;
    const char *key_file;
    const char *name;
    bool json;
    bool no_batch;
    uint64_t size;
    const char *vkeys[PROOF_KEYS_MAX];
    size_t nvkeys;
    const char *pos[4];
    int npos;
    const char *witness;     /* cosign: witness URL */
    const char *witness_key; /* cosign: its cosignature vkey */
};

int cmd_proof_cosign(struct vlog *log, const struct proof_signer *s, const char *dir,
                     const char *url, const char *wvkey, bool json); /* cmd_proof_cosign.c */

static void proof_usage(FILE *f)
{
    fprintf(
        f,
        "usage: verity proof <command> [options]\n"
        "  inclusion TOPIC PARTITION OFFSET   tlog-proof (or --json) that the record is in the\n"
        "                                     signed tree [--size N] [--no-batch]\n"
        "  consistency TOPIC PARTITION OLD NEW  proof that tree size NEW extends OLD (JSON)\n"
        "  checkpoint TOPIC PARTITION         signed C2SP checkpoint of the durable tree [--size "
        "N]\n"
        "  key                                the verifier key string (name+id+key)\n"
        "  verify FILE|- --key VKEY           check a proof offline (repeat --key for more keys)\n"
        "  cosign TOPIC PARTITION --witness URL --witness-key VKEY\n"
        "                                     get a witness's cosignature (tlog-witness); kept\n"
        "                                     in the partition dir as tree.cosigned\n"
        "  bench [--help]                     tree cost: append on/off, proof time "
        "(PERFORMANCE.md)\n"
        "options: --data-dir DIR (./data)  --key-file FILE (DIR/keys/verity.key)\n"
        "         --name NAME (%s)  --json\n"
        "Exit: 0 ok, 1 failure or proof rejected, 2 usage.\n",
        PROOF_NAME_DEFAULT);
}

static int parse_u64(const char *s, uint64_t *out)
{
    char *end = NULL;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || !end || *end || s[0] == '-' || s[0] == '\0')
        return -1;
    *out = v;
    return 0;
}

static int parse_opts(int argc, char **argv, struct popts *o)
{
    memset(o, 0, sizeof *o);
    o->data_dir = "./data";
    o->name = PROOF_NAME_DEFAULT;
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        bool more = i + 1 < argc;
        if (strcmp(a, "--json") == 0)
            o->json = true;
        else if (strcmp(a, "--no-batch") == 0)
            o->no_batch = true;
        else if (strcmp(a, "--data-dir") == 0 && more)
            o->data_dir = argv[++i];
        else if (strcmp(a, "--key-file") == 0 && more)
            o->key_file = argv[++i];
        else if (strcmp(a, "--name") == 0 && more)
            o->name = argv[++i];
        else if (strcmp(a, "--witness") == 0 && more)
            o->witness = argv[++i];
        else if (strcmp(a, "--witness-key") == 0 && more)
            o->witness_key = argv[++i];
        else if (strcmp(a, "--size") == 0 && more) {
            if (parse_u64(argv[++i], &o->size))
                return -1;
        } else if (strcmp(a, "--key") == 0 && more) {
            if (o->nvkeys >= PROOF_KEYS_MAX)
                return -1;
            o->vkeys[o->nvkeys++] = argv[++i];
        } else if (a[0] == '-' && a[1] != '\0') {
            fprintf(stderr, "verity proof: unknown option '%s'\n", a);
            return -1;
        } else {
            if (o->npos >= 4)
                return -1;
            o->pos[o->npos++] = a;
        }
    }
    return 0;
}

static int load_key(const struct popts *o, EVP_PKEY **key)
{
    char path[PROOF_PATH_MAX];
    if (o->key_file)
        snprintf(path, sizeof path, "%s", o->key_file);
    else
        snprintf(path, sizeof path, "%s/keys/verity.key", o->data_dir);
    int rc = ckpt_load_private(path, key);
    if (rc)
        fprintf(stderr, "verity proof: cannot load signing key %s: %s\n", path,
                verity_strerror(rc));
    return rc;
}

/* Opens <data>/topics/<topic>/<partition> read-only and the signer. */
static int open_partition(const struct popts *o, struct vlog **log, EVP_PKEY **key,
                          struct proof_signer *s, char *dir)
{
    uint64_t part;
    int rc;
    if (parse_u64(o->pos[1], &part) || part > UINT32_MAX) {
        fprintf(stderr, "verity proof: bad partition '%s'\n", o->pos[1]);
        return VERITY_EINVAL;
    }
    if ((rc = load_key(o, key)))
        return rc;
    if ((rc = proof_signer_init(s, *key, o->name, o->pos[0], (uint32_t)part))) {
        fprintf(stderr, "verity proof: bad key name or topic\n");
        return rc;
    }
    snprintf(dir, PROOF_PATH_MAX, "%s/topics/%s/%" PRIu64, o->data_dir, o->pos[0], part);
    struct vlog_config cfg;
    vlog_config_default(&cfg);
    cfg.read_only = true;
    uint64_t bad = 0;
    if ((rc = vlog_open(dir, &cfg, 0, log, &bad))) {
        fprintf(stderr, "verity proof: cannot open %s: %s\n", dir, verity_strerror(rc));
        return rc;
    }
    if (!vlog_tree(*log)) {
        fprintf(stderr, "verity proof: %s has no Merkle tree (tree.* files)\n", dir);
        return VERITY_EUNSUPPORTED;
    }
    return 0;
}

static void print_json(json_t *j)
{
    char *s = json_dumps(j, JSON_INDENT(2) | JSON_SORT_KEYS);
    if (s)
        printf("%s\n", s);
    free(s);
}

static int run_partition_cmd(const char *cmd, const struct popts *o)
{
    struct vlog *log = NULL;
    EVP_PKEY *key = NULL;
    struct proof_signer s;
    json_t *j = NULL;
    int rc, want = strcmp(cmd, "inclusion") == 0 ? 3 : strcmp(cmd, "consistency") == 0 ? 4 : 2;
    if (o->npos != want) {
        proof_usage(stderr);
        return CMD_EXIT_USAGE;
    }
    uint64_t a = 0, b = 0;
    if ((want >= 3 && parse_u64(o->pos[2], &a)) || (want == 4 && parse_u64(o->pos[3], &b))) {
        proof_usage(stderr);
        return CMD_EXIT_USAGE;
    }
    char dir[PROOF_PATH_MAX];
    if ((rc = open_partition(o, &log, &key, &s, dir)))
        goto out;
    if (strcmp(cmd, "cosign") == 0) {
        if (!o->witness || !o->witness_key) {
            fprintf(stderr, "verity proof cosign: needs --witness URL and --witness-key VKEY\n");
            rc = VERITY_EINVAL;
        } else {
            rc = cmd_proof_cosign(log, &s, dir, o->witness, o->witness_key, o->json);
        }
    } else if (strcmp(cmd, "inclusion") == 0) {
        if ((rc = proof_inclusion(log, &s, a, o->size, !o->no_batch, &j)))
            goto out;
        if (o->json)
            print_json(j);
        else
            fputs(json_string_value(json_object_get(j, "tlog_proof")), stdout);
    } else if (strcmp(cmd, "consistency") == 0) {
        if ((rc = proof_consistency(log, &s, a, b, &j)))
            goto out;
        print_json(j);
    } else {
        char note[PROOF_CHECKPOINT_MAX];
        uint64_t n = o->size;
        if (!n && (rc = proof_durable_size(log, &n)))
            goto out;
        int nl = proof_checkpoint(log, &s, n, note, sizeof note);
        if (nl < 0) {
            rc = nl;
            goto out;
        }
        if (o->json) {
            j = json_pack("{s:s,s:I,s:s#}", "origin", s.origin, "tree_size", (json_int_t)n,
                          "checkpoint", note, (int)nl);
            print_json(j);
        } else {
            fwrite(note, 1, (size_t)nl, stdout);
        }
    }
out:
    if (rc)
        fprintf(stderr, "verity proof %s: %s\n", cmd, verity_strerror(rc));
    json_decref(j);
    vlog_abandon(log);
    EVP_PKEY_free(key);
    return rc ? CMD_EXIT_FAIL : CMD_EXIT_OK;
}

static int run_key(const struct popts *o)
{
    EVP_PKEY *key = NULL;
    char vkey[NOTE_VKEY_MAX + 1];
    int rc = load_key(o, &key);
    if (!rc)
        rc = note_vkey_format(o->name, NOTE_TYPE_ED25519, key, vkey, sizeof vkey);
    EVP_PKEY_free(key);
    if (rc) {
        fprintf(stderr, "verity proof key: %s\n", verity_strerror(rc));
        return CMD_EXIT_FAIL;
    }
    if (o->json) {
        json_t *j = json_pack("{s:s,s:s}", "name", o->name, "vkey", vkey);
        print_json(j);
        json_decref(j);
    } else {
        printf("%s\n", vkey);
    }
    return CMD_EXIT_OK;
}

static char *read_all(const char *path, size_t *len)
{
    FILE *f = strcmp(path, "-") == 0 ? stdin : fopen(path, "rb");
    size_t cap = 1 << 16, n = 0;
    char *buf = f ? malloc(cap + 1) : NULL;
    while (buf) {
        size_t r = fread(buf + n, 1, cap - n, f);
        n += r;
        if (n < cap)
            break;
        if (cap >= (size_t)64 << 20) { /* proofs are far smaller */
            free(buf);
            buf = NULL;
            break;
        }
        char *nb = realloc(buf, cap * 2 + 1);
        if (!nb) {
            free(buf);
            buf = NULL;
            break;
        }
        buf = nb;
        cap *= 2;
    }
    if (f && f != stdin)
        fclose(f);
    if (buf) {
        buf[n] = '\0';
        *len = n;
    }
    return buf;
}

static int run_verify(const struct popts *o)
{
    struct note_vkey keys[PROOF_KEYS_MAX];
    if (o->npos != 1 || o->nvkeys == 0) {
        fprintf(stderr, "verity proof verify: need FILE and at least one --key VKEY\n");
        return CMD_EXIT_USAGE;
    }
    for (size_t i = 0; i < o->nvkeys; i++) {
        if (note_vkey_parse(o->vkeys[i], &keys[i])) {
            fprintf(stderr, "verity proof verify: bad verifier key '%s'\n", o->vkeys[i]);
            return CMD_EXIT_USAGE;
        }
    }
    size_t len = 0;
    char *buf = read_all(o->pos[0], &len);
    if (!buf) {
        fprintf(stderr, "verity proof verify: cannot read %s\n", o->pos[0]);
        return CMD_EXIT_FAIL;
    }
    json_t *sum = NULL;
    int rc = proof_verify_text(buf, len, keys, o->nvkeys, &sum);
    free(buf);
    if (rc) {
        if (o->json) {
            json_t *j = json_pack("{s:b,s:s}", "ok", 0, "error", verity_errname(rc));
            print_json(j);
            json_decref(j);
        }
        fprintf(stderr, "verity proof verify: REJECTED: %s\n", verity_strerror(rc));
        return CMD_EXIT_FAIL;
    }
    json_object_set_new(sum, "ok", json_true());
    if (o->json) {
        print_json(sum);
    } else {
        json_t *ty = json_object_get(sum, "type");
        if (strcmp(json_string_value(ty), "inclusion") == 0)
            printf("OK: offset %" JSON_INTEGER_FORMAT " (leaf %" JSON_INTEGER_FORMAT
                   ") is in %s at tree size %" JSON_INTEGER_FORMAT "%s\n",
                   json_integer_value(json_object_get(sum, "offset")),
                   json_integer_value(json_object_get(sum, "index")),
                   json_string_value(json_object_get(sum, "origin")),
                   json_integer_value(json_object_get(sum, "tree_size")),
                   json_is_true(json_object_get(sum, "batch_checked")) ? " (batch bytes checked)"
                                                                       : "");
        else
            printf("OK: %s tree size %" JSON_INTEGER_FORMAT " extends size %" JSON_INTEGER_FORMAT
                   "\n",
                   json_string_value(json_object_get(sum, "origin")),
                   json_integer_value(json_object_get(sum, "new_size")),
                   json_integer_value(json_object_get(sum, "old_size")));
    }
    json_decref(sum);
    return CMD_EXIT_OK;
}

int cmd_proof(int argc, char **argv)
{
    struct popts o;
    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        proof_usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? CMD_EXIT_USAGE : CMD_EXIT_OK;
    }
    const char *cmd = argv[1];
    if (strcmp(cmd, "bench") == 0)
        return cmd_proof_bench(argc - 1, argv + 1);
    if (parse_opts(argc, argv, &o)) {
        proof_usage(stderr);
        return CMD_EXIT_USAGE;
    }
    if (strcmp(cmd, "inclusion") == 0 || strcmp(cmd, "consistency") == 0 ||
        strcmp(cmd, "checkpoint") == 0 || strcmp(cmd, "cosign") == 0)
        return run_partition_cmd(cmd, &o);
    if (strcmp(cmd, "key") == 0)
        return run_key(&o);
    if (strcmp(cmd, "verify") == 0)
        return run_verify(&o);
    fprintf(stderr, "verity proof: unknown command '%s'\n", cmd);
    proof_usage(stderr);
    return CMD_EXIT_USAGE;
}
