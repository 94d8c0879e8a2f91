/*
 * verity auth key|acl|cert|quota|role ...: the security store.
 *
 * Without --http: edits auth_file (broker/auth_store.c), which verityd
 * reads at start and on SIGHUP. The file is rewritten atomically (mode
 * 0600); a running broker takes the change after `kill -HUP`, and it
 * applies to open connections at their next request (a revoked key's
 * connections get EAUTH). This is the bootstrap: the first admin key comes
 * from here.
 *
 * With --http HOST:PORT (or VERITY_ADMIN_HTTP): the same commands go to a
 * broker's admin port, POST /v1/security with the key in VERITY_API_KEY
 * (which needs admin on cluster:security; lists need describe). The change
 * becomes a record of the metadata log, applied on every broker of a
 * cluster at once, no SIGHUP (broker/auth_admin.c). A 421 from a broker
 * that is not the primary of __meta is followed to the address it names.
 *
 * A key's secret is printed once, at creation; the store keeps only a
 * salted hash. `verity acl ...` is `verity auth acl ...`, `verity role ...`
 * is `verity auth role ...`.
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
#include "verity/verity.h"

static void usage(FILE *f)
{
    fprintf(f,
            "usage: verity auth [--file PATH | --http HOST:PORT] [--json] COMMAND ...\n"
            "  --file: the security store verityd reads with auth_file (default $VERITY_AUTH_FILE);\n"
            "  send SIGHUP to verityd after a change; open connections follow at their next request.\n"
            "  --http: a broker's admin port (default $VERITY_ADMIN_HTTP), key in $VERITY_API_KEY (admin on\n"
            "  cluster:security); the change goes to the metadata log, every broker applies it at once.\n"
            "  A TLS admin port: --http https://HOST:PORT, or the TLS options (verity --help:\n"
            "  --tls-ca FILE, --tls-cert/--tls-key for mutual TLS, VERITY_TLS_*) as for the protocol port.\n"
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
            "  quota remove --tenant T --principal P  (--http only)\n"
            "  role grant|revoke --tenant T --principal P --role R   ACLs name roles as\n"
            "                                        --principal role:R (or --role R on acl add)\n"
            "  role list [--tenant T]\n"
            "\n"
            "  Default deny: a principal may do only what an allow rule grants; a deny rule wins.\n"
            "  --json prints one JSON object.\n");
}

struct args {
    const char *file, *tenant, *principal, *resource, *ops, *subject, *http, *role;
    uint64_t produce, fetch, requests, conns, storage;
    bool json, deny, have_produce, have_fetch, have_requests, have_conns, have_storage;
};

enum { O_FILE = 1000, O_TENANT, O_PRINCIPAL, O_RESOURCE, O_OPS, O_DENY, O_SUBJECT, O_PRODUCE,
       O_FETCH, O_JSON, O_REQUESTS, O_CONNS, O_STORAGE, O_HTTP, O_ROLE };

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
    {"http", required_argument, NULL, O_HTTP},
    {"role", required_argument, NULL, O_ROLE},
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
        case O_HTTP: a->http = optarg; break;
        case O_ROLE: a->role = optarg; break;
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
    if ((rc = need(a->tenant, "--tenant")) || (rc = need(a->principal ? a->principal : a->role,
                                                          "--principal (or --role)")) ||
        (rc = need(a->resource, "--resource")) || (rc = need(a->ops, "--ops")))
        return rc;
    memset(acl, 0, sizeof *acl);
    snprintf(acl->tenant, sizeof acl->tenant, "%s", a->tenant);
    if (a->principal)
        snprintf(acl->principal, sizeof acl->principal, "%s", a->principal);
    else
        snprintf(acl->principal, sizeof acl->principal, "%s%s", AUTH_ROLE_PREFIX, a->role);
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

static int role_from_args(const struct args *a, struct auth_role *r)
{
    int rc;
    if ((rc = need(a->tenant, "--tenant")) || (rc = need(a->principal, "--principal")) ||
        (rc = need(a->role, "--role")))
        return rc;
    memset(r, 0, sizeof *r);
    if (strlen(a->tenant) >= sizeof r->tenant || strlen(a->principal) >= sizeof r->principal ||
        strlen(a->role) >= sizeof r->role)
        return cli_bad_value("verity auth", "--role", a->role, "names of at most 64 characters");
    snprintf(r->tenant, sizeof r->tenant, "%s", a->tenant);
    snprintf(r->principal, sizeof r->principal, "%s", a->principal);
    snprintf(r->role, sizeof r->role, "%s", a->role);
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
    if (strcmp(what, "role") == 0 && (strcmp(verb, "grant") == 0 || strcmp(verb, "revoke") == 0) &&
        npos == 2) {
        struct auth_role r;
        if ((rc = role_from_args(a, &r)))
            return rc;
        rc = verb[0] == 'g' ? auth_role_grant(s, &r) : auth_role_revoke(s, &r);
        if (rc == VERITY_EEXIST)
            rc = 0;
        else if (rc == 0)
            *dirty = true;
        if (rc)
            return fail(verb[0] == 'g' ? "role grant" : "role revoke", rc,
                        rc == VERITY_EINVAL ? "malformed tenant, principal or role"
                                            : "the principal does not hold the role");
        return 0;
    }
    if (strcmp(what, "role") == 0 && strcmp(verb, "list") == 0 && npos == 2) {
        json_t *arr = json_array();
        for (size_t i = 0; i < s->n_roles; i++) {
            const struct auth_role *r = &s->roles[i];
            if (a->tenant && strcmp(a->tenant, r->tenant) != 0)
                continue;
            if (a->json)
                json_array_append_new(arr, json_pack("{s:s,s:s,s:s}", "tenant", r->tenant,
                                                     "principal", r->principal, "role", r->role));
            else
                printf("%s/%s  %s\n", r->tenant, r->principal, r->role);
        }
        if (a->json)
            print_json(json_pack("{s:o}", "roles", arr));
        else
            json_decref(arr);
        return 0;
    }
    fprintf(stderr, "verity auth: unknown command '%s%s%s'\n(run `verity auth --help` for usage)\n",
            what, verb[0] ? " " : "", verb);
    return CMD_EXIT_USAGE;
}

/* ---- --http: the broker's /v1/security ------------------------------------ */

#define HTTP_TIMEOUT_MS 10000
#define HTTP_HOPS 3 /* 421 redirections followed to the primary of __meta */

/* Sends body (POST) or nothing (GET) to /v1/security, following 421s.
 * Returns the HTTP status and the answer in *out (JSON when status is
 * 200), or a negative errno (message printed). */
static int http_call(const char *http, const char *what, const char *body, json_t **out)
{
    char addr[300];
    snprintf(addr, sizeof addr, "%s", http);
    *out = NULL;
    for (int hop = 0; hop <= HTTP_HOPS; hop++) {
        char *ans = NULL;
        size_t alen = 0;
        int st = verity_admin_request(addr, body ? "POST" : "GET", "/v1/security", body,
                                      body ? strlen(body) : 0, HTTP_TIMEOUT_MS, 16u << 20, &ans,
                                      &alen);
        if (st < 0) {
            fprintf(stderr, "verity auth: %s: %s: %s\n", what, addr, strerror(-st));
            return st;
        }
        json_error_t jerr;
        json_t *o = json_loadb(ans ? ans : "", alen, 0, &jerr);
        if (st == 421 && o && json_string_value(json_object_get(o, "leader_http")) &&
            json_string_value(json_object_get(o, "leader_http"))[0]) {
            /* the primary's admin port, reached the same way (https or not) */
            const char *lh = json_string_value(json_object_get(o, "leader_http"));
            bool https = strncmp(http, "https://", 8) == 0;
            snprintf(addr, sizeof addr, "%s%s", https && strncmp(lh, "https://", 8) != 0 ? "https://" : "", lh);
            json_decref(o);
            free(ans);
            continue;
        }
        if (st == 421) { /* no primary known yet: wait a little */
            json_decref(o);
            free(ans);
            struct timespec ts = {0, 300 * 1000000L};
            nanosleep(&ts, NULL);
            continue;
        }
        if (st != 200) {
            /* typed: the error name (EDENIED, EAUTH, EFILE, ...) and the message */
            const char *err = st == 401   ? "EAUTH"
                              : st == 403 ? "EDENIED"
                              : o         ? json_string_value(json_object_get(o, "error"))
                                          : NULL;
            const char *msg = o ? json_string_value(json_object_get(o, "message")) : NULL;
            if (!msg && ans) {
                size_t n = strcspn(ans, "\n");
                ans[n] = '\0';
                msg = ans;
            }
            fprintf(stderr, "verity auth: %s: %s (HTTP %d): %s\n", what, err ? err : "error", st,
                    msg ? msg : "");
            json_decref(o);
            free(ans);
            return st;
        }
        free(ans);
        if (!o) {
            fprintf(stderr, "verity auth: %s: %s: not a JSON answer\n", what, addr);
            return -EPROTO;
        }
        *out = o;
        return st;
    }
    fprintf(stderr, "verity auth: %s: no primary of __meta found\n", what);
    return -EAGAIN;
}

static int http_change(const struct args *a, const char *what, json_t *change)
{
    char *body = change ? json_dumps(change, JSON_COMPACT) : NULL;
    json_decref(change);
    if (!body)
        return fail(what, -ENOMEM, NULL);
    json_t *o = NULL;
    int st = http_call(a->http, what, body, &o);
    free(body);
    if (st != 200)
        return CMD_EXIT_FAIL;
    const char *key = json_string_value(json_object_get(o, "key"));
    if (a->json) {
        char *t = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
        if (t)
            printf("%s\n", t);
        free(t);
    } else if (key) {
        printf("%s\n", key);
        fprintf(stderr, "verity auth: key %s: shown once, store it now\n",
                json_string_value(json_object_get(o, "id")));
    }
    json_decref(o);
    return 0;
}

static json_t *acl_change(const char *op, const struct auth_acl *x)
{
    char ops[64], res[AUTH_PATTERN_MAX + 16];
    auth_op_names(x->ops, ops, sizeof ops);
    snprintf(res, sizeof res, "%s:%s", auth_res_name(x->res), x->pattern);
    return json_pack("{s:s,s:s,s:s,s:s,s:s,s:s}", "op", op, "tenant", x->tenant, "principal",
                     x->principal, "resource", res, "ops", ops, "effect",
                     x->deny ? "deny" : "allow");
}

/* Prints the list `list` of GET /v1/security, filtered by --tenant. */
static int http_list(const struct args *a, const char *list)
{
    json_t *o = NULL;
    char what[32];
    snprintf(what, sizeof what, "%s list", list);
    if (http_call(a->http, what, NULL, &o) != 200)
        return CMD_EXIT_FAIL;
    json_t *arr = json_object_get(o, list), *keep = json_array();
    size_t i;
    json_t *e;
    json_array_foreach(arr, i, e) {
        const char *t = json_string_value(json_object_get(e, "tenant"));
        if (a->tenant && (!t || strcmp(t, a->tenant) != 0))
            continue;
        json_array_append(keep, e);
        if (a->json)
            continue;
#define F(k) (json_string_value(json_object_get(e, k)) ? json_string_value(json_object_get(e, k)) : "")
        const char *src = F("source");
        if (strcmp(list, "keys") == 0)
            printf("%s  %s/%s  %s\n", F("id"), F("tenant"), F("principal"), src);
        else if (strcmp(list, "acls") == 0)
            printf("%s  %s/%s  %s  %s  %s\n", strcmp(F("effect"), "deny") == 0 ? "deny " : "allow",
                   F("tenant"), F("principal"), F("resource"), F("ops"), src);
        else if (strcmp(list, "certs") == 0)
            printf("%s  %s/%s  %s\n", F("subject"), F("tenant"), F("principal"), src);
        else if (strcmp(list, "roles") == 0)
            printf("%s/%s  %s  %s\n", F("tenant"), F("principal"), F("role"), src);
        else
            printf("%s/%s  produce_bytes_per_s=%" PRId64 " fetch_bytes_per_s=%" PRId64
                   " requests_per_s=%" PRId64 " connections=%" PRId64 " storage_bytes=%" PRId64
                   "  %s\n",
                   F("tenant"), F("principal"),
                   (int64_t)json_integer_value(json_object_get(e, "produce_bytes_per_s")),
                   (int64_t)json_integer_value(json_object_get(e, "fetch_bytes_per_s")),
                   (int64_t)json_integer_value(json_object_get(e, "requests_per_s")),
                   (int64_t)json_integer_value(json_object_get(e, "connections")),
                   (int64_t)json_integer_value(json_object_get(e, "storage_bytes")), src);
#undef F
    }
    if (a->json)
        print_json(json_pack("{s:O}", list, keep));
    json_decref(keep);
    json_decref(o);
    return 0;
}

static int run_http(const struct args *a, char **pos, int npos)
{
    const char *what = npos > 0 ? pos[0] : "";
    const char *verb = npos > 1 ? pos[1] : "";
    int rc;
    if (strcmp(verb, "list") == 0 && npos == 2 &&
        (strcmp(what, "key") == 0 || strcmp(what, "acl") == 0 || strcmp(what, "cert") == 0 ||
         strcmp(what, "quota") == 0 || strcmp(what, "role") == 0)) {
        char list[16];
        snprintf(list, sizeof list, "%ss", what);
        return http_list(a, list);
    }
    if (strcmp(what, "key") == 0 && strcmp(verb, "create") == 0 && npos == 2) {
        if ((rc = need(a->tenant, "--tenant")) || (rc = need(a->principal, "--principal")))
            return rc;
        return http_change(a, "key create",
                           json_pack("{s:s,s:s,s:s}", "op", "key_create", "tenant", a->tenant,
                                     "principal", a->principal));
    }
    if (strcmp(what, "key") == 0 && strcmp(verb, "revoke") == 0 && npos == 3)
        return http_change(a, "key revoke", json_pack("{s:s,s:s}", "op", "key_revoke", "id", pos[2]));
    if (strcmp(what, "acl") == 0 && (strcmp(verb, "add") == 0 || strcmp(verb, "remove") == 0) &&
        npos == 2) {
        struct auth_acl acl;
        if ((rc = acl_from_args(a, &acl)))
            return rc;
        return http_change(a, verb[0] == 'a' ? "acl add" : "acl remove",
                           acl_change(verb[0] == 'a' ? "acl_add" : "acl_remove", &acl));
    }
    if (strcmp(what, "cert") == 0 && strcmp(verb, "add") == 0 && npos == 2) {
        if ((rc = need(a->subject, "--subject")) || (rc = need(a->tenant, "--tenant")) ||
            (rc = need(a->principal, "--principal")))
            return rc;
        return http_change(a, "cert add",
                           json_pack("{s:s,s:s,s:s,s:s}", "op", "cert_add", "subject", a->subject,
                                     "tenant", a->tenant, "principal", a->principal));
    }
    if (strcmp(what, "cert") == 0 && strcmp(verb, "remove") == 0 && npos == 2) {
        if ((rc = need(a->subject, "--subject")))
            return rc;
        return http_change(a, "cert remove",
                           json_pack("{s:s,s:s}", "op", "cert_remove", "subject", a->subject));
    }
    if (strcmp(what, "quota") == 0 && (strcmp(verb, "set") == 0 || strcmp(verb, "remove") == 0) &&
        npos == 2) {
        if ((rc = need(a->tenant, "--tenant")) || (rc = need(a->principal, "--principal")))
            return rc;
        bool set = verb[0] == 's';
        json_t *c = json_pack("{s:s,s:s,s:s}", "op", set ? "quota_set" : "quota_remove", "tenant",
                              a->tenant, "principal", a->principal);
        if (c && set) {
            if (a->have_produce)
                json_object_set_new(c, "produce_bytes_per_s", json_integer((json_int_t)a->produce));
            if (a->have_fetch)
                json_object_set_new(c, "fetch_bytes_per_s", json_integer((json_int_t)a->fetch));
            if (a->have_requests)
                json_object_set_new(c, "requests_per_s", json_integer((json_int_t)a->requests));
            if (a->have_conns)
                json_object_set_new(c, "connections", json_integer((json_int_t)a->conns));
            if (a->have_storage)
                json_object_set_new(c, "storage_bytes", json_integer((json_int_t)a->storage));
        }
        return http_change(a, set ? "quota set" : "quota remove", c);
    }
    if (strcmp(what, "role") == 0 && (strcmp(verb, "grant") == 0 || strcmp(verb, "revoke") == 0) &&
        npos == 2) {
        struct auth_role r;
        if ((rc = role_from_args(a, &r)))
            return rc;
        return http_change(a, verb[0] == 'g' ? "role grant" : "role revoke",
                           json_pack("{s:s,s:s,s:s,s:s}", "op",
                                     verb[0] == 'g' ? "role_grant" : "role_revoke", "tenant",
                                     r.tenant, "principal", r.principal, "role", r.role));
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
    a.http = getenv("VERITY_ADMIN_HTTP");
    char *pos[4];
    int npos = 0;
    /* `verity acl ...` is `verity auth acl ...`, `verity role` `verity auth role`. */
    bool alias = strcmp(argv[0], "acl") == 0 || strcmp(argv[0], "role") == 0;
    int rc = parse(argc, argv, &a, pos + (alias ? 1 : 0), &npos, alias ? 3 : 4);
    if (rc < 0)
        return CMD_EXIT_OK; /* --help */
    if (rc)
        return rc;
    if (alias) {
        pos[0] = argv[0];
        npos++;
    }
    if (npos == 0) {
        usage(stderr);
        return CMD_EXIT_USAGE;
    }
    if (a.http && a.http[0])
        return run_http(&a, pos, npos);
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
