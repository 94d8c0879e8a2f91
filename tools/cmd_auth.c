/*
 * verity auth key|acl|cert|quota ...: edits the security store (auth_file,
 * broker/auth_store.c) that verityd reads at start and on SIGHUP. The file
 * is rewritten atomically (mode 0600); a running broker takes the change
 * after `kill -HUP`, and it applies to open connections at their next
 * request (a revoked key's connections get EAUTH).
 *
 * A key's secret is printed once, at creation; the file keeps only a salted
 * hash. `verity acl ...` is the same as `verity auth acl ...`.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "broker/auth_store.h"
#include "tools/cli_args.h"
#include "tools/cmds.h"
#include "verity/errors.h"

static void usage(FILE *f)
{
    fprintf(f,
            "usage: verity auth [--file PATH] [--json] COMMAND ...\n"
            "  The security store verityd reads with auth_file (default path: $VERITY_AUTH_FILE).\n"
            "  Send SIGHUP to verityd after a change; open connections follow at their next request.\n"
            "\n"
            "  key create --tenant T --principal P   make an API key; its text is printed once\n"
            "  key list [--tenant T]                 key ids, tenants, principals (never secrets)\n"
            "  key revoke ID                         remove a key\n"
            "  acl add|remove --tenant T --principal P|'*' --resource topic:PAT|group:PAT|cluster:PAT\n"
            "          --ops produce,consume,group,describe,admin|all [--deny]\n"
            "                                        PAT: a name, a prefix ending in '*', or '*'\n"
            "                                        cluster: metrics, peers, trace, tenants, audit\n"
            "                                        (the admin HTTP port, docs/SECURITY.md)\n"
            "  acl list [--tenant T]\n"
            "  cert add --subject CN --tenant T --principal P   map a client certificate\n"
            "  cert remove --subject CN\n"
            "  cert list\n"
            "  quota set --tenant T --principal P|'*'|'+' [--produce-bytes-per-s N]\n"
            "          [--fetch-bytes-per-s N] [--requests-per-s N] [--connections N]\n"
            "          [--storage-bytes N]           (0: no limit)\n"
            "                                        '*': each principal of T; '+': T as a whole\n"
            "                                        (--storage-bytes only on '+')\n"
            "  quota list\n"
            "\n"
            "  Default deny: a principal may do only what an allow rule grants; a deny rule wins.\n"
            "  --json prints one JSON object.\n");
}

struct args {
    const char *file, *tenant, *principal, *resource, *ops, *subject;
    uint64_t produce, fetch, requests, conns, storage;
    bool json, deny, have_produce, have_fetch, have_requests, have_conns, have_storage;
};

enum { O_FILE = 1000, O_TENANT, O_PRINCIPAL, O_RESOURCE, O_OPS, O_DENY, O_SUBJECT, O_PRODUCE,
       O_FETCH, O_JSON, O_REQUESTS, O_CONNS, O_STORAGE };

static const struct option opts[] = {
    {"file", required_argument, NULL, O_FILE},
    {"tenant", required_argument, NULL, O_TENANT},
    {"principal", required_argument, NULL, O_PRINCIPAL},
    {"resource", required_argument, NULL, O_RESOURCE},
    {"ops", required_argument, NULL, O_OPS},
    {"deny", no_argument, NULL, O_DENY},
    {"subject", required_argument, NULL, O_SUBJECT},
    {"produce-bytes-per-s", required_argument, NULL, O_PRODUCE},
    {"fetch-bytes-per-s", required_argument, NULL, O_FETCH},
    {"requests-per-s", required_argument, NULL, O_REQUESTS},
    {"connections", required_argument, NULL, O_CONNS},
    {"storage-bytes", required_argument, NULL, O_STORAGE},
    {"json", no_argument, NULL, O_JSON},
    {"help", no_argument, NULL, 'h'},
    {NULL, 0, NULL, 0},
};

static bool parse_u64(const char *s, uint64_t *out)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s || *end || s[0] == '-')
        return false;
    *out = v;
    return true;
}

/* Parses options anywhere after the command words; operands go to pos. */
static int parse(int argc, char **argv, struct args *a, char **pos, int *npos, int maxpos)
{
    optind = 1;
    opterr = 0;
    int c;
    *npos = 0;
    while ((c = CLI_GETOPT(argc, argv, "+h", opts)) != -1 || optind < argc) {
        if (c == -1) {
            if (*npos >= maxpos) {
                cli_why = "too many operands";
                return cli_bad_args("verity auth", -1, opts, argv, usage);
            }
            pos[(*npos)++] = argv[optind++];
            continue;
        }
        switch (c) {
        case 'h':
            usage(stdout);
            return -1;
        case O_FILE: a->file = optarg; break;
        case O_TENANT: a->tenant = optarg; break;
        case O_PRINCIPAL: a->principal = optarg; break;
        case O_RESOURCE: a->resource = optarg; break;
        case O_OPS: a->ops = optarg; break;
        case O_DENY: a->deny = true; break;
        case O_SUBJECT: a->subject = optarg; break;
        case O_JSON: a->json = true; break;
        case O_PRODUCE:
            if (!parse_u64(optarg, &a->produce))
                return cli_bad_value("verity auth", "--produce-bytes-per-s", optarg, "bytes >= 0");
            a->have_produce = true;
            break;
        case O_FETCH:
            if (!parse_u64(optarg, &a->fetch))
                return cli_bad_value("verity auth", "--fetch-bytes-per-s", optarg, "bytes >= 0");
            a->have_fetch = true;
            break;
        case O_REQUESTS:
            if (!parse_u64(optarg, &a->requests))
                return cli_bad_value("verity auth", "--requests-per-s", optarg, "a count >= 0");
            a->have_requests = true;
            break;
        case O_CONNS:
            if (!parse_u64(optarg, &a->conns))
                return cli_bad_value("verity auth", "--connections", optarg, "a count >= 0");
            a->have_conns = true;
            break;
        case O_STORAGE:
            if (!parse_u64(optarg, &a->storage))
                return cli_bad_value("verity auth", "--storage-bytes", optarg, "bytes >= 0");
            a->have_storage = true;
            break;
        default:
            return cli_bad_args("verity auth", c, opts, argv, usage);
        }
    }
    return 0;
}

static int fail(const char *what, int rc, const char *why)
{
    fprintf(stderr, "verity auth: %s: %s\n", what, why && why[0] ? why : verity_strerror(rc));
    return CMD_EXIT_FAIL;
}

static int need(const char *v, const char *opt)
{
    if (v)
        return 0;
    fprintf(stderr, "verity auth: %s is required\n(run `verity auth --help` for usage)\n", opt);
    return CMD_EXIT_USAGE;
}

static void print_json(json_t *o)
{
    char *s = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
    if (s)
        printf("%s\n", s);
    free(s);
    json_decref(o);
}

static int acl_from_args(const struct args *a, struct auth_acl *acl)
{
    int rc;
    if ((rc = need(a->tenant, "--tenant")) || (rc = need(a->principal, "--principal")) ||
        (rc = need(a->resource, "--resource")) || (rc = need(a->ops, "--ops")))
        return rc;
    memset(acl, 0, sizeof *acl);
    snprintf(acl->tenant, sizeof acl->tenant, "%s", a->tenant);
    snprintf(acl->principal, sizeof acl->principal, "%s", a->principal);
    if (auth_resource_parse(a->resource, &acl->res, acl->pattern, sizeof acl->pattern) != 0)
        return cli_bad_value("verity auth", "--resource", a->resource,
                             "topic:PATTERN, group:PATTERN or cluster:PATTERN (a name, PREFIX*, or *)");
    char ops[128];
    snprintf(ops, sizeof ops, "%s", a->ops);
    for (char *save = NULL, *t = strtok_r(ops, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        unsigned bit = auth_op_parse(t);
        if (!bit)
            return cli_bad_value("verity auth", "--ops", a->ops,
                                 "comma-separated produce,consume,group,describe,admin or all");
        acl->ops |= bit;
    }
    acl->deny = a->deny;
    return 0;
}

static int run(struct auth_store *s, const struct args *a, char **pos, int npos, bool *dirty)
{
    const char *what = npos > 0 ? pos[0] : "";
    const char *verb = npos > 1 ? pos[1] : "";
    int rc;
    *dirty = false;
    if (strcmp(what, "key") == 0 && strcmp(verb, "create") == 0 && npos == 2) {
        if ((rc = need(a->tenant, "--tenant")) || (rc = need(a->principal, "--principal")))
            return rc;
        char key[AUTH_KEY_TEXT_MAX];
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        rc = auth_key_create(s, a->tenant, a->principal,
                             (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000, key);
        if (rc == VERITY_EINVAL)
            return fail("key create", rc,
                        "tenant: 1-32 of [A-Za-z0-9_-]; principal: 1-64 of [A-Za-z0-9._@-]");
        if (rc)
            return fail("key create", rc, NULL);
        *dirty = true;
        const struct auth_key *k = &s->keys[s->n_keys - 1];
        if (a->json)
            print_json(json_pack("{s:s,s:s,s:s,s:s}", "id", k->id, "tenant", k->tenant,
                                 "principal", k->principal, "key", key));
        else
            printf("%s\n", key);
        fprintf(stderr, "verity auth: key %s for %s/%s: shown once, store it now\n", k->id,
                k->tenant, k->principal);
        return 0;
    }
    if (strcmp(what, "key") == 0 && strcmp(verb, "list") == 0 && npos == 2) {
        json_t *arr = json_array();
        for (size_t i = 0; i < s->n_keys; i++) {
            const struct auth_key *k = &s->keys[i];
            if (a->tenant && strcmp(a->tenant, k->tenant) != 0)
                continue;
            if (a->json)
                json_array_append_new(arr, json_pack("{s:s,s:s,s:s,s:I}", "id", k->id, "tenant",
                                                     k->tenant, "principal", k->principal,
                                                     "created_ms", (json_int_t)k->created_ms));
            else
                printf("%s  %s/%s\n", k->id, k->tenant, k->principal);
        }
        if (a->json)
            print_json(json_pack("{s:o}", "keys", arr));
        else
            json_decref(arr);
        return 0;
    }
    if (strcmp(what, "key") == 0 && strcmp(verb, "revoke") == 0 && npos == 3) {
        if ((rc = auth_key_revoke(s, pos[2])))
            return fail("key revoke", rc, "no key with this id");
        *dirty = true;
        if (a->json)
            print_json(json_pack("{s:s,s:b}", "id", pos[2], "revoked", 1));
        return 0;
    }
    if (strcmp(what, "acl") == 0 && (strcmp(verb, "add") == 0 || strcmp(verb, "remove") == 0) &&
        npos == 2) {
        struct auth_acl acl;
        if ((rc = acl_from_args(a, &acl)))
            return rc;
        rc = verb[0] == 'a' ? auth_acl_add(s, &acl) : auth_acl_remove(s, &acl);
        if (rc == VERITY_EEXIST)
            rc = 0; /* adding a rule that is there changes nothing */
        else if (rc == 0)
            *dirty = true;
        if (rc)
            return fail(verb[0] == 'a' ? "acl add" : "acl remove", rc,
                        rc == VERITY_EINVAL ? "malformed tenant or principal"
                                            : "no such rule (all fields must match)");
        if (a->json)
            print_json(json_pack("{s:s,s:b}", "acl", verb, "changed", *dirty));
        return 0;
    }
    if (strcmp(what, "acl") == 0 && strcmp(verb, "list") == 0 && npos == 2) {
        json_t *arr = json_array();
        for (size_t i = 0; i < s->n_acls; i++) {
            const struct auth_acl *x = &s->acls[i];
            if (a->tenant && strcmp(a->tenant, x->tenant) != 0)
                continue;
            char ops[64], res[AUTH_PATTERN_MAX + 16];
            auth_op_names(x->ops, ops, sizeof ops);
            snprintf(res, sizeof res, "%s:%s", auth_res_name(x->res),
                     x->pattern);
            if (a->json)
                json_array_append_new(arr, json_pack("{s:s,s:s,s:s,s:s,s:s}", "tenant", x->tenant,
                                                     "principal", x->principal, "resource", res,
                                                     "ops", ops, "effect",
                                                     x->deny ? "deny" : "allow"));
            else
                printf("%s  %s/%s  %s  %s\n", x->deny ? "deny " : "allow", x->tenant,
                       x->principal, res, ops);
        }
        if (a->json)
            print_json(json_pack("{s:o}", "acls", arr));
        else
            json_decref(arr);
        return 0;
    }
    if (strcmp(what, "cert") == 0 && strcmp(verb, "add") == 0 && npos == 2) {
        if ((rc = need(a->subject, "--subject")) || (rc = need(a->tenant, "--tenant")) ||
            (rc = need(a->principal, "--principal")))
            return rc;
        struct auth_cert c;
        memset(&c, 0, sizeof c);
        snprintf(c.subject, sizeof c.subject, "%s", a->subject);
        snprintf(c.tenant, sizeof c.tenant, "%s", a->tenant);
        snprintf(c.principal, sizeof c.principal, "%s", a->principal);
        if ((rc = auth_cert_add(s, &c)))
            return fail("cert add", rc, rc == VERITY_EEXIST ? "subject already mapped"
                                                             : "malformed subject, tenant or principal");
        *dirty = true;
        return 0;
    }
    if (strcmp(what, "cert") == 0 && strcmp(verb, "remove") == 0 && npos == 2) {
        if ((rc = need(a->subject, "--subject")))
            return rc;
        if ((rc = auth_cert_remove(s, a->subject)))
            return fail("cert remove", rc, "subject not mapped");
        *dirty = true;
        return 0;
    }
    if (strcmp(what, "cert") == 0 && strcmp(verb, "list") == 0 && npos == 2) {
        json_t *arr = json_array();
        for (size_t i = 0; i < s->n_certs; i++) {
            const struct auth_cert *c = &s->certs[i];
            if (a->json)
                json_array_append_new(arr, json_pack("{s:s,s:s,s:s}", "subject", c->subject,
                                                     "tenant", c->tenant, "principal",
                                                     c->principal));
            else
                printf("%s  %s/%s\n", c->subject, c->tenant, c->principal);
        }
        if (a->json)
            print_json(json_pack("{s:o}", "certs", arr));
        else
            json_decref(arr);
        return 0;
    }
    if (strcmp(what, "quota") == 0 && strcmp(verb, "set") == 0 && npos == 2) {
        if ((rc = need(a->tenant, "--tenant")) || (rc = need(a->principal, "--principal")))
            return rc;
        struct auth_quota q;
        memset(&q, 0, sizeof q);
        snprintf(q.tenant, sizeof q.tenant, "%s", a->tenant);
        snprintf(q.principal, sizeof q.principal, "%s", a->principal);
        const struct auth_quota *old = auth_quota_find(s, a->tenant, a->principal);
        if (old && strcmp(old->principal, a->principal) == 0)
            q = *old;
        if (a->have_produce)
            q.produce_bytes_per_s = a->produce;
        if (a->have_fetch)
            q.fetch_bytes_per_s = a->fetch;
        if (a->have_requests)
            q.requests_per_s = a->requests;
        if (a->have_conns)
            q.connections = a->conns;
        if (a->have_storage)
            q.storage_bytes = a->storage;
        if ((rc = auth_quota_set(s, &q)))
            return fail("quota set", rc,
                        "malformed tenant or principal (--storage-bytes only with --principal '+')");
        *dirty = true;
        return 0;
    }
    if (strcmp(what, "quota") == 0 && strcmp(verb, "list") == 0 && npos == 2) {
        json_t *arr = json_array();
        for (size_t i = 0; i < s->n_quotas; i++) {
            const struct auth_quota *q = &s->quotas[i];
            if (a->json)
                json_array_append_new(
                    arr, json_pack("{s:s,s:s,s:I,s:I,s:I,s:I,s:I}", "tenant", q->tenant,
                                   "principal", q->principal, "produce_bytes_per_s",
                                   (json_int_t)q->produce_bytes_per_s, "fetch_bytes_per_s",
                                   (json_int_t)q->fetch_bytes_per_s, "requests_per_s",
                                   (json_int_t)q->requests_per_s, "connections",
                                   (json_int_t)q->connections, "storage_bytes",
                                   (json_int_t)q->storage_bytes));
            else
                printf("%s/%s  produce_bytes_per_s=%" PRIu64 " fetch_bytes_per_s=%" PRIu64
                       " requests_per_s=%" PRIu64 " connections=%" PRIu64 " storage_bytes=%" PRIu64
                       "\n",
                       q->tenant, q->principal, q->produce_bytes_per_s, q->fetch_bytes_per_s,
                       q->requests_per_s, q->connections, q->storage_bytes);
        }
        if (a->json)
            print_json(json_pack("{s:o}", "quotas", arr));
        else
            json_decref(arr);
        return 0;
    }
    fprintf(stderr, "verity auth: unknown command '%s%s%s'\n(run `verity auth --help` for usage)\n",
            what, verb[0] ? " " : "", verb);
    return CMD_EXIT_USAGE;
}

int cmd_auth(int argc, char **argv)
{
    struct args a;
    memset(&a, 0, sizeof a);
    a.file = getenv("VERITY_AUTH_FILE");
    char *pos[4];
    int npos = 0;
    /* `verity acl ...` is `verity auth acl ...`. */
    bool acl_alias = strcmp(argv[0], "acl") == 0;
    int rc = parse(argc, argv, &a, pos + (acl_alias ? 1 : 0), &npos, acl_alias ? 3 : 4);
    if (rc < 0)
        return CMD_EXIT_OK; /* --help */
    if (rc)
        return rc;
    if (acl_alias) {
        pos[0] = "acl";
        npos++;
    }
    if (npos == 0) {
        usage(stderr);
        return CMD_EXIT_USAGE;
    }
    if (!a.file || !a.file[0]) {
        fprintf(stderr, "verity auth: no store: give --file PATH or set VERITY_AUTH_FILE\n");
        return CMD_EXIT_USAGE;
    }
    struct auth_store *s = NULL;
    char why[400];
    if ((rc = auth_store_load(a.file, true, &s, why, sizeof why)))
        return fail("load", rc, why);
    bool dirty = false;
    rc = run(s, &a, pos, npos, &dirty);
    if (rc == 0 && dirty) {
        int src = auth_store_save(s, a.file);
        if (src) {
            fprintf(stderr, "verity auth: writing %s: %s\n", a.file, verity_strerror(src));
            rc = CMD_EXIT_FAIL;
        }
    }
    auth_store_free(s);
    return rc;
}
