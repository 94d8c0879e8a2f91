/*
 * The security store: parse, save, keys, ACL decisions, quota lookup.
 *
 * File format (auth_file, JSON, written by `verity auth` and read by
 * verityd at start and on SIGHUP):
 *
 *   {"version": 1,
 *    "keys":   [{"id": 16 hex, "tenant": T, "principal": P,
 *                "salt": 32 hex, "hash": 64 hex, "created_ms": N}],
 *    "certs":  [{"subject": CN, "tenant": T, "principal": P}],
 *    "acls":   [{"tenant": T, "principal": P or "*",
 *                "resource": "topic:NAME" | "topic:PREFIX*" | "group:...",
 *                "ops": ["produce", "consume", "group", "describe", "admin"],
 *                "effect": "allow" | "deny"}],
 *    "quotas": [{"tenant": T, "principal": P, "*" (each) or "+" (the tenant),
 *                "produce_bytes_per_s": N, "fetch_bytes_per_s": N}]}
 *
 * A file is valid only as a whole: every entry well formed (names by the
 * tenant/topic rules, hex of the right length, known ops), key ids unique,
 * at most AUTH_ENTRIES_MAX entries a list; otherwise the load fails and
 * (on SIGHUP) the broker keeps the store it has.
 *
 * Decisions: default deny. An ACL matches when its tenant equals the
 * caller's, its principal is the caller's or "*", its resource kind is the
 * one asked about and its pattern matches the name (exact, or a prefix with
 * a trailing '*'; "*" alone is every name). A matching deny for an op wins
 * over every allow for it.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include "broker/auth_store.h"
#include "proto/codec.h"
#include "verity/errors.h"

static const char *const op_names[] = {"produce", "consume", "group", "describe", "admin"};
#define N_OPS (sizeof op_names / sizeof op_names[0])

unsigned auth_op_parse(const char *name)
{
    for (size_t i = 0; i < N_OPS; i++)
        if (strcmp(name, op_names[i]) == 0)
            return 1u << i;
    if (strcmp(name, "all") == 0)
        return AUTH_OP_ALL;
    return 0;
}

void auth_op_names(unsigned ops, char *buf, size_t cap)
{
    size_t n = 0;
    if (cap)
        buf[0] = '\0';
    for (size_t i = 0; i < N_OPS && n < cap; i++)
        if (ops & (1u << i))
            n += (size_t)snprintf(buf + n, cap - n, "%s%s", n ? "," : "", op_names[i]);
}

bool auth_principal_name_ok(const char *p)
{
    size_t n = p ? strnlen(p, AUTH_PRINCIPAL_MAX + 1) : 0;
    if (n == 0 || n > AUTH_PRINCIPAL_MAX)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = p[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-' || c == '@'))
            return false;
    }
    return true;
}

static bool principal_or_any_ok(const char *p)
{
    return (p && strcmp(p, "*") == 0) || auth_principal_name_ok(p);
}

/* An ACL's principal: a name, "*" or "role:NAME". */
static bool acl_principal_ok(const char *p)
{
    if (p && strncmp(p, AUTH_ROLE_PREFIX, strlen(AUTH_ROLE_PREFIX)) == 0)
        return auth_principal_name_ok(p + strlen(AUTH_ROLE_PREFIX));
    return principal_or_any_ok(p);
}

/* Valid pattern: "*", or a name by the topic rule (no tenant separator),
 * optionally ending in '*'. */
static bool pattern_ok(const char *p)
{
    size_t n = strnlen(p, AUTH_PATTERN_MAX + 1);
    if (n == 0 || n > AUTH_PATTERN_MAX)
        return false;
    if (strcmp(p, "*") == 0)
        return true;
    char tmp[AUTH_PATTERN_MAX + 1];
    memcpy(tmp, p, n + 1);
    if (tmp[n - 1] == '*')
        tmp[--n] = '\0';
    if (n == 0 || strchr(tmp, '*') || strchr(tmp, CODEC_TENANT_SEP))
        return false;
    /* A prefix may be "." or start with "__"; only its characters matter. */
    for (size_t i = 0; i < n; i++) {
        char c = tmp[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-'))
            return false;
    }
    return n <= 200;
}

const char *auth_res_name(enum auth_res res)
{
    return res == AUTH_RES_TOPIC ? "topic" : res == AUTH_RES_GROUP ? "group" : "cluster";
}

int auth_resource_parse(const char *text, enum auth_res *res, char *pattern, size_t cap)
{
    const char *p;
    if (strncmp(text, "topic:", 6) == 0) {
        *res = AUTH_RES_TOPIC;
        p = text + 6;
    } else if (strncmp(text, "group:", 6) == 0) {
        *res = AUTH_RES_GROUP;
        p = text + 6;
    } else if (strncmp(text, "cluster:", 8) == 0) {
        *res = AUTH_RES_CLUSTER;
        p = text + 8;
    } else {
        return VERITY_EINVAL;
    }
    if (!pattern_ok(p) || strlen(p) >= cap)
        return VERITY_EINVAL;
    snprintf(pattern, cap, "%s", p);
    return 0;
}

static bool pattern_match(const char *pattern, const char *name)
{
    size_t n = strlen(pattern);
    if (n > 0 && pattern[n - 1] == '*')
        return strncmp(pattern, name, n - 1) == 0;
    return strcmp(pattern, name) == 0;
}

/* ---- hex ------------------------------------------------------------------- */

static void hex_put(const uint8_t *b, size_t n, char *out)
{
    static const char d[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = d[b[i] >> 4];
        out[2 * i + 1] = d[b[i] & 15];
    }
    out[2 * n] = '\0';
}

static int hex_val(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

/* Exactly 2n lowercase hex digits -> n bytes. */
static bool hex_get(const char *s, uint8_t *out, size_t n)
{
    if (!s || strlen(s) != 2 * n)
        return false;
    for (size_t i = 0; i < n; i++) {
        int h = hex_val(s[2 * i]), l = hex_val(s[2 * i + 1]);
        if (h < 0 || l < 0)
            return false;
        out[i] = (uint8_t)(h << 4 | l);
    }
    return true;
}

static bool hex_ok(const char *s, size_t digits)
{
    if (!s || strlen(s) != digits)
        return false;
    for (size_t i = 0; i < digits; i++)
        if (hex_val(s[i]) < 0)
            return false;
    return true;
}

/* ---- lists ----------------------------------------------------------------- */

static int grow(void **arr, size_t *cap, size_t n, size_t elem)
{
    if (n < *cap)
        return 0;
    if (n >= AUTH_ENTRIES_MAX)
        return VERITY_ELIMIT;
    size_t nc = *cap ? *cap * 2 : 8;
    void *p = realloc(*arr, nc * elem);
    if (!p)
        return -ENOMEM;
    *arr = p;
    *cap = nc;
    return 0;
}

#define PUSH(s, list, n, capn, val)                                                                \
    ({                                                                                             \
        int rc_ = grow((void **)&(s)->list, &(s)->capn, (s)->n, sizeof *(s)->list);                \
        if (rc_ == 0)                                                                              \
            (s)->list[(s)->n++] = (val);                                                           \
        rc_;                                                                                       \
    })

struct auth_store *auth_store_new(void)
{
    return calloc(1, sizeof(struct auth_store));
}

void auth_store_free(struct auth_store *s)
{
    if (!s)
        return;
    free(s->keys);
    free(s->certs);
    free(s->acls);
    free(s->quotas);
    free(s->roles);
    free(s);
}

/* ---- keys ------------------------------------------------------------------ */

static void key_hash(const uint8_t salt[16], const char *secret, size_t len, uint8_t out[32])
{
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    unsigned int n = 32;
    if (!ctx || EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) != 1 ||
        EVP_DigestUpdate(ctx, salt, 16) != 1 || EVP_DigestUpdate(ctx, secret, len) != 1 ||
        EVP_DigestFinal_ex(ctx, out, &n) != 1)
        memset(out, 0xff, 32); /* never matches a stored hash of a real secret by chance */
    EVP_MD_CTX_free(ctx);
}

const struct auth_key *auth_key_find(const struct auth_store *s, const char *id)
{
    for (size_t i = 0; i < s->n_keys; i++)
        if (strcmp(s->keys[i].id, id) == 0)
            return &s->keys[i];
    return NULL;
}

int auth_key_create(struct auth_store *s, const char *tenant, const char *principal,
                    int64_t now_ms, char key_out[AUTH_KEY_TEXT_MAX])
{
    if (!codec_tenant_name_ok(tenant) || !auth_principal_name_ok(principal))
        return VERITY_EINVAL;
    struct auth_key k;
    memset(&k, 0, sizeof k);
    uint8_t id[AUTH_KEY_ID_HEX / 2], secret[AUTH_SECRET_HEX / 2];
    do {
        if (RAND_bytes(id, sizeof id) != 1)
            return -EIO;
        hex_put(id, sizeof id, k.id);
    } while (auth_key_find(s, k.id));
    if (RAND_bytes(secret, sizeof secret) != 1 || RAND_bytes(k.salt, sizeof k.salt) != 1)
        return -EIO;
    char sec[AUTH_SECRET_HEX + 1];
    hex_put(secret, sizeof secret, sec);
    key_hash(k.salt, sec, AUTH_SECRET_HEX, k.hash);
    snprintf(k.tenant, sizeof k.tenant, "%s", tenant);
    snprintf(k.principal, sizeof k.principal, "%s", principal);
    k.created_ms = now_ms;
    int rc = PUSH(s, keys, n_keys, cap_keys, k);
    if (rc == 0)
        snprintf(key_out, AUTH_KEY_TEXT_MAX, "vk_%s_%s", k.id, sec);
    OPENSSL_cleanse(secret, sizeof secret);
    OPENSSL_cleanse(sec, sizeof sec);
    return rc;
}

int auth_key_revoke(struct auth_store *s, const char *id)
{
    for (size_t i = 0; i < s->n_keys; i++) {
        if (strcmp(s->keys[i].id, id) == 0) {
            memmove(&s->keys[i], &s->keys[i + 1], (s->n_keys - i - 1) * sizeof s->keys[0]);
            s->n_keys--;
            return 0;
        }
    }
    return VERITY_ENOTFOUND;
}

int auth_key_verify(const struct auth_store *s, const char *text, const struct auth_key **out)
{
    static const uint8_t dummy_salt[16];
    *out = NULL;
    size_t n = text ? strnlen(text, AUTH_KEY_TEXT_MAX) : 0;
    const char *secret = text + 3 + AUTH_KEY_ID_HEX + 1;
    bool shaped = n == AUTH_KEY_TEXT_MAX - 1 && strncmp(text, "vk_", 3) == 0 &&
                  text[3 + AUTH_KEY_ID_HEX] == '_';
    const struct auth_key *k = NULL;
    if (shaped) {
        char id[AUTH_KEY_ID_HEX + 1];
        memcpy(id, text + 3, AUTH_KEY_ID_HEX);
        id[AUTH_KEY_ID_HEX] = '\0';
        k = auth_key_find(s, id);
    }
    /* Hash even for an unknown id or a malformed text, so the time taken
     * does not tell a known id from an unknown one by much. */
    uint8_t h[32];
    key_hash(k ? k->salt : dummy_salt, shaped ? secret : "", shaped ? AUTH_SECRET_HEX : 0, h);
    static const uint8_t zero[32];
    bool ok = CRYPTO_memcmp(h, k ? k->hash : zero, 32) == 0;
    if (!k || !ok)
        return VERITY_EAUTH;
    *out = k;
    return 0;
}

/* ---- certs, acls, quotas ----------------------------------------------------- */

const struct auth_cert *auth_cert_find(const struct auth_store *s, const char *subject)
{
    for (size_t i = 0; i < s->n_certs; i++)
        if (strcmp(s->certs[i].subject, subject) == 0)
            return &s->certs[i];
    return NULL;
}

static bool subject_ok(const char *p)
{
    size_t n = p ? strnlen(p, AUTH_SUBJECT_MAX + 1) : 0;
    if (n == 0 || n > AUTH_SUBJECT_MAX)
        return false;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)p[i] < 0x20 || p[i] == '"' || p[i] == '\\' || p[i] == 0x7f)
            return false;
    return true;
}

int auth_cert_add(struct auth_store *s, const struct auth_cert *c)
{
    if (!subject_ok(c->subject) || !codec_tenant_name_ok(c->tenant) ||
        !auth_principal_name_ok(c->principal))
        return VERITY_EINVAL;
    if (auth_cert_find(s, c->subject))
        return VERITY_EEXIST;
    return PUSH(s, certs, n_certs, cap_certs, *c);
}

int auth_cert_remove(struct auth_store *s, const char *subject)
{
    for (size_t i = 0; i < s->n_certs; i++) {
        if (strcmp(s->certs[i].subject, subject) == 0) {
            memmove(&s->certs[i], &s->certs[i + 1], (s->n_certs - i - 1) * sizeof s->certs[0]);
            s->n_certs--;
            return 0;
        }
    }
    return VERITY_ENOTFOUND;
}

static bool acl_ok(const struct auth_acl *a)
{
    return codec_tenant_name_ok(a->tenant) && acl_principal_ok(a->principal) &&
           pattern_ok(a->pattern) && a->ops != 0 && (a->ops & ~(unsigned)AUTH_OP_ALL) == 0 &&
           (a->res == AUTH_RES_TOPIC || a->res == AUTH_RES_GROUP || a->res == AUTH_RES_CLUSTER);
}

static bool acl_eq(const struct auth_acl *a, const struct auth_acl *b)
{
    return strcmp(a->tenant, b->tenant) == 0 && strcmp(a->principal, b->principal) == 0 &&
           a->res == b->res && strcmp(a->pattern, b->pattern) == 0 && a->ops == b->ops &&
           a->deny == b->deny;
}

int auth_acl_add(struct auth_store *s, const struct auth_acl *a)
{
    if (!acl_ok(a))
        return VERITY_EINVAL;
    for (size_t i = 0; i < s->n_acls; i++)
        if (acl_eq(&s->acls[i], a))
            return VERITY_EEXIST;
    return PUSH(s, acls, n_acls, cap_acls, *a);
}

int auth_acl_remove(struct auth_store *s, const struct auth_acl *a)
{
    for (size_t i = 0; i < s->n_acls; i++) {
        if (acl_eq(&s->acls[i], a)) {
            memmove(&s->acls[i], &s->acls[i + 1], (s->n_acls - i - 1) * sizeof s->acls[0]);
            s->n_acls--;
            return 0;
        }
    }
    return VERITY_ENOTFOUND;
}

int auth_quota_set(struct auth_store *s, const struct auth_quota *q)
{
    bool total = strcmp(q->principal, AUTH_TENANT_TOTAL) == 0;
    if (!codec_tenant_name_ok(q->tenant) || !(total || principal_or_any_ok(q->principal)) ||
        (q->storage_bytes && !total))
        return VERITY_EINVAL;
    for (size_t i = 0; i < s->n_quotas; i++) {
        if (strcmp(s->quotas[i].tenant, q->tenant) == 0 &&
            strcmp(s->quotas[i].principal, q->principal) == 0) {
            s->quotas[i] = *q;
            return 0;
        }
    }
    return PUSH(s, quotas, n_quotas, cap_quotas, *q);
}

const struct auth_quota *auth_quota_find(const struct auth_store *s, const char *tenant,
                                         const char *principal)
{
    const struct auth_quota *any = NULL;
    for (size_t i = 0; i < s->n_quotas; i++) {
        const struct auth_quota *q = &s->quotas[i];
        if (strcmp(q->tenant, tenant) != 0)
            continue;
        if (strcmp(q->principal, principal) == 0)
            return q;
        if (strcmp(q->principal, "*") == 0 && strcmp(principal, AUTH_TENANT_TOTAL) != 0)
            any = q;
    }
    return any;
}

/* ---- roles ---------------------------------------------------------------- */

static bool role_eq(const struct auth_role *a, const struct auth_role *b)
{
    return strcmp(a->tenant, b->tenant) == 0 && strcmp(a->principal, b->principal) == 0 &&
           strcmp(a->role, b->role) == 0;
}

bool auth_role_held(const struct auth_store *s, const char *tenant, const char *principal,
                    const char *role)
{
    for (size_t i = 0; i < s->n_roles; i++) {
        const struct auth_role *r = &s->roles[i];
        if (strcmp(r->role, role) == 0 && strcmp(r->principal, principal) == 0 &&
            strcmp(r->tenant, tenant) == 0)
            return true;
    }
    return false;
}

int auth_role_grant(struct auth_store *s, const struct auth_role *r)
{
    if (!codec_tenant_name_ok(r->tenant) || !auth_principal_name_ok(r->principal) ||
        !auth_principal_name_ok(r->role) ||
        strlen(r->role) + strlen(AUTH_ROLE_PREFIX) > AUTH_PRINCIPAL_MAX)
        return VERITY_EINVAL;
    for (size_t i = 0; i < s->n_roles; i++)
        if (role_eq(&s->roles[i], r))
            return VERITY_EEXIST;
    return PUSH(s, roles, n_roles, cap_roles, *r);
}

int auth_role_revoke(struct auth_store *s, const struct auth_role *r)
{
    for (size_t i = 0; i < s->n_roles; i++) {
        if (role_eq(&s->roles[i], r)) {
            memmove(&s->roles[i], &s->roles[i + 1], (s->n_roles - i - 1) * sizeof s->roles[0]);
            s->n_roles--;
            return 0;
        }
    }
    return VERITY_ENOTFOUND;
}

int auth_quota_remove(struct auth_store *s, const char *tenant, const char *principal)
{
    for (size_t i = 0; i < s->n_quotas; i++) {
        if (strcmp(s->quotas[i].tenant, tenant) == 0 &&
            strcmp(s->quotas[i].principal, principal) == 0) {
            memmove(&s->quotas[i], &s->quotas[i + 1],
                    (s->n_quotas - i - 1) * sizeof s->quotas[0]);
            s->n_quotas--;
            return 0;
        }
    }
    return VERITY_ENOTFOUND;
}

/* The ops of ops that some rule allows and no rule denies. */
static unsigned granted(const struct auth_store *s, const char *tenant, const char *principal,
                        enum auth_res res, const char *name, unsigned ops)
{
    unsigned allow = 0, deny = 0;
    for (size_t i = 0; i < s->n_acls; i++) {
        const struct auth_acl *a = &s->acls[i];
        if (a->res != res || !(a->ops & ops) || strcmp(a->tenant, tenant) != 0)
            continue;
        if (strcmp(a->principal, "*") != 0 && strcmp(a->principal, principal) != 0 &&
            !(strncmp(a->principal, AUTH_ROLE_PREFIX, strlen(AUTH_ROLE_PREFIX)) == 0 &&
              auth_role_held(s, tenant, principal, a->principal + strlen(AUTH_ROLE_PREFIX))))
            continue;
        if (!pattern_match(a->pattern, name))
            continue;
        if (a->deny)
            deny |= a->ops;
        else
            allow |= a->ops;
    }
    return ops & allow & ~deny;
}

bool auth_allowed(const struct auth_store *s, const char *tenant, const char *principal,
                  enum auth_res res, const char *name, unsigned ops, char *why, size_t cap)
{
    unsigned g = granted(s, tenant, principal, res, name, ops);
    if (g == ops)
        return true;
    if (why && cap) {
        char names[64];
        auth_op_names(ops & ~g, names, sizeof names);
        snprintf(why, cap, "principal %s may not %s on %s %s (ACL)", principal, names,
                 auth_res_name(res), name);
    }
    return false;
}

bool auth_allowed_any(const struct auth_store *s, const char *tenant, const char *principal,
                      enum auth_res res, const char *name, unsigned ops)
{
    return granted(s, tenant, principal, res, name, ops) != 0;
}

/* ---- parse ----------------------------------------------------------------- */

static int bad(char *why, size_t cap, const char *list, size_t i, const char *what)
{
    if (why && cap)
        snprintf(why, cap, "%s[%zu]: %s", list, i, what);
    return VERITY_EINVAL;
}

static bool str_field(json_t *o, const char *name, char *out, size_t cap)
{
    const char *v = json_string_value(json_object_get(o, name));
    if (!v || strlen(v) >= cap)
        return false;
    memcpy(out, v, strlen(v) + 1);
    return true;
}

static bool u64_field(json_t *o, const char *name, uint64_t *out, bool required)
{
    json_t *v = json_object_get(o, name);
    if (!v) {
        *out = 0;
        return !required;
    }
    if (!json_is_integer(v) || json_integer_value(v) < 0)
        return false;
    *out = (uint64_t)json_integer_value(v);
    return true;
}

static int parse_keys(struct auth_store *s, json_t *arr, char *why, size_t cap)
{
    size_t i;
    json_t *o;
    json_array_foreach(arr, i, o) {
        struct auth_key k;
        memset(&k, 0, sizeof k);
        char salt[40], hash[72];
        uint64_t created = 0;
        if (!json_is_object(o) || !str_field(o, "id", k.id, sizeof k.id) ||
            !hex_ok(k.id, AUTH_KEY_ID_HEX) || !str_field(o, "tenant", k.tenant, sizeof k.tenant) ||
            !codec_tenant_name_ok(k.tenant) ||
            !str_field(o, "principal", k.principal, sizeof k.principal) ||
            !auth_principal_name_ok(k.principal) || !str_field(o, "salt", salt, sizeof salt) ||
            !hex_get(salt, k.salt, sizeof k.salt) || !str_field(o, "hash", hash, sizeof hash) ||
            !hex_get(hash, k.hash, sizeof k.hash) || !u64_field(o, "created_ms", &created, false) ||
            created > INT64_MAX)
            return bad(why, cap, "keys", i, "needs id (16 hex), tenant, principal, salt (32 hex), "
                                            "hash (64 hex)");
        k.created_ms = (int64_t)created;
        if (auth_key_find(s, k.id))
            return bad(why, cap, "keys", i, "duplicate id");
        int rc = PUSH(s, keys, n_keys, cap_keys, k);
        if (rc)
            return rc == VERITY_ELIMIT ? bad(why, cap, "keys", i, "too many entries"), VERITY_ELIMIT
                                       : rc;
    }
    return 0;
}

static int parse_certs(struct auth_store *s, json_t *arr, char *why, size_t cap)
{
    size_t i;
    json_t *o;
    json_array_foreach(arr, i, o) {
        struct auth_cert c;
        memset(&c, 0, sizeof c);
        if (!json_is_object(o) || !str_field(o, "subject", c.subject, sizeof c.subject) ||
            !str_field(o, "tenant", c.tenant, sizeof c.tenant) ||
            !str_field(o, "principal", c.principal, sizeof c.principal))
            return bad(why, cap, "certs", i, "needs subject, tenant, principal");
        int rc = auth_cert_add(s, &c);
        if (rc == VERITY_EINVAL || rc == VERITY_EEXIST)
            return bad(why, cap, "certs", i, rc == VERITY_EEXIST ? "duplicate subject"
                                                                  : "malformed field");
        if (rc)
            return rc;
    }
    return 0;
}

static int parse_acls(struct auth_store *s, json_t *arr, char *why, size_t cap)
{
    size_t i;
    json_t *o;
    json_array_foreach(arr, i, o) {
        struct auth_acl a;
        memset(&a, 0, sizeof a);
        char res[AUTH_PATTERN_MAX + 16], effect[8];
        json_t *ops = json_object_get(o, "ops");
        if (!json_is_object(o) || !str_field(o, "tenant", a.tenant, sizeof a.tenant) ||
            !str_field(o, "principal", a.principal, sizeof a.principal) ||
            !str_field(o, "resource", res, sizeof res) ||
            !str_field(o, "effect", effect, sizeof effect) || !json_is_array(ops) ||
            json_array_size(ops) == 0 || json_array_size(ops) > 8)
            return bad(why, cap, "acls", i, "needs tenant, principal, resource, ops, effect");
        if (auth_resource_parse(res, &a.res, a.pattern, sizeof a.pattern) != 0)
            return bad(why, cap, "acls", i, "resource must be topic:PATTERN, group:PATTERN or cluster:PATTERN");
        if (strcmp(effect, "allow") != 0 && strcmp(effect, "deny") != 0)
            return bad(why, cap, "acls", i, "effect must be allow or deny");
        a.deny = effect[0] == 'd';
        size_t j;
        json_t *op;
        json_array_foreach(ops, j, op) {
            unsigned bit = json_is_string(op) ? auth_op_parse(json_string_value(op)) : 0;
            if (!bit)
                return bad(why, cap, "acls", i,
                           "unknown op (produce, consume, group, describe, admin, all)");
            a.ops |= bit;
        }
        int rc = auth_acl_add(s, &a);
        if (rc == VERITY_EEXIST)
            continue; /* the same rule twice changes nothing */
        if (rc == VERITY_EINVAL)
            return bad(why, cap, "acls", i, "malformed tenant or principal");
        if (rc)
            return rc;
    }
    return 0;
}

static int parse_quotas(struct auth_store *s, json_t *arr, char *why, size_t cap)
{
    size_t i;
    json_t *o;
    json_array_foreach(arr, i, o) {
        struct auth_quota q;
        memset(&q, 0, sizeof q);
        if (!json_is_object(o) || !str_field(o, "tenant", q.tenant, sizeof q.tenant) ||
            !str_field(o, "principal", q.principal, sizeof q.principal) ||
            !u64_field(o, "produce_bytes_per_s", &q.produce_bytes_per_s, false) ||
            !u64_field(o, "fetch_bytes_per_s", &q.fetch_bytes_per_s, false) ||
            !u64_field(o, "requests_per_s", &q.requests_per_s, false) ||
            !u64_field(o, "connections", &q.connections, false) ||
            !u64_field(o, "storage_bytes", &q.storage_bytes, false))
            return bad(why, cap, "quotas", i,
                       "needs tenant, principal; produce_bytes_per_s, fetch_bytes_per_s, "
                       "requests_per_s, connections, storage_bytes >= 0");
        int rc = auth_quota_set(s, &q);
        if (rc == VERITY_EINVAL)
            return bad(why, cap, "quotas", i,
                       "malformed tenant or principal (or storage_bytes on a principal: only "
                       "on \"+\", the tenant as a whole)");
        if (rc)
            return rc;
    }
    return 0;
}

static int parse_roles(struct auth_store *s, json_t *arr, char *why, size_t cap)
{
    size_t i;
    json_t *o;
    json_array_foreach(arr, i, o) {
        struct auth_role r;
        memset(&r, 0, sizeof r);
        if (!json_is_object(o) || !str_field(o, "tenant", r.tenant, sizeof r.tenant) ||
            !str_field(o, "principal", r.principal, sizeof r.principal) ||
            !str_field(o, "role", r.role, sizeof r.role))
            return bad(why, cap, "roles", i, "needs tenant, principal, role");
        int rc = auth_role_grant(s, &r);
        if (rc == VERITY_EEXIST)
            continue;
        if (rc == VERITY_EINVAL)
            return bad(why, cap, "roles", i, "malformed tenant, principal or role");
        if (rc)
            return rc;
    }
    return 0;
}

int auth_store_parse(const char *buf, size_t len, struct auth_store **out, char *why, size_t cap)
{
    *out = NULL;
    if (why && cap)
        why[0] = '\0';
    if (len > AUTH_FILE_BYTES_MAX) {
        if (why && cap)
            snprintf(why, cap, "larger than %u bytes", AUTH_FILE_BYTES_MAX);
        return VERITY_ELIMIT;
    }
    json_error_t jerr;
    json_t *root = json_loadb(buf, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!root || !json_is_object(root)) {
        if (why && cap)
            snprintf(why, cap, "not a JSON object: %s (line %d)", root ? "" : jerr.text,
                     root ? 0 : jerr.line);
        json_decref(root);
        return VERITY_EINVAL;
    }
    int rc = 0;
    struct auth_store *s = auth_store_new();
    if (!s) {
        rc = -ENOMEM;
        goto out;
    }
    json_t *v = json_object_get(root, "version");
    if (!json_is_integer(v) || json_integer_value(v) != 1) {
        if (why && cap)
            snprintf(why, cap, "version must be 1");
        rc = VERITY_EINVAL;
        goto out;
    }
    static const char *const lists[] = {"keys", "certs", "acls", "quotas", "roles"};
    for (size_t i = 0; i < 5 && rc == 0; i++) {
        json_t *arr = json_object_get(root, lists[i]);
        if (!arr)
            continue;
        if (!json_is_array(arr) || json_array_size(arr) > AUTH_ENTRIES_MAX) {
            if (why && cap)
                snprintf(why, cap, "%s: not an array of at most %u entries", lists[i],
                         AUTH_ENTRIES_MAX);
            rc = VERITY_EINVAL;
            break;
        }
        rc = i == 0   ? parse_keys(s, arr, why, cap)
             : i == 1 ? parse_certs(s, arr, why, cap)
             : i == 2 ? parse_acls(s, arr, why, cap)
             : i == 3 ? parse_quotas(s, arr, why, cap)
                      : parse_roles(s, arr, why, cap);
    }
out:
    json_decref(root);
    if (rc) {
        auth_store_free(s);
        return rc;
    }
    *out = s;
    return 0;
}

int auth_store_load(const char *path, bool missing_ok, struct auth_store **out, char *why,
                    size_t cap)
{
    *out = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        int e = errno;
        if (e == ENOENT && missing_ok) {
            *out = auth_store_new();
            return *out ? 0 : -ENOMEM;
        }
        if (why && cap)
            snprintf(why, cap, "%s: %s", path, strerror(e));
        return -e;
    }
    struct stat st;
    char *buf = NULL;
    int rc = 0;
    if (fstat(fd, &st) != 0) {
        rc = -errno;
        goto out;
    }
    if ((uint64_t)st.st_size > AUTH_FILE_BYTES_MAX) {
        if (why && cap)
            snprintf(why, cap, "%s: larger than %u bytes", path, AUTH_FILE_BYTES_MAX);
        rc = VERITY_ELIMIT;
        goto out;
    }
    size_t n = (size_t)st.st_size, got = 0;
    buf = malloc(n + 1);
    if (!buf) {
        rc = -ENOMEM;
        goto out;
    }
    while (got < n) {
        ssize_t k = read(fd, buf + got, n - got);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0) {
            rc = k < 0 ? -errno : -EIO;
            goto out;
        }
        got += (size_t)k;
    }
    char inner[200];
    rc = auth_store_parse(buf, n, out, inner, sizeof inner);
    if (rc && why && cap)
        snprintf(why, cap, "%s: %s", path, inner);
out:
    if (rc && why && cap && !why[0])
        snprintf(why, cap, "%s: %s", path, verity_strerror(rc));
    free(buf);
    close(fd);
    return rc;
}

/* ---- save ------------------------------------------------------------------ */

static json_t *store_json(const struct auth_store *s)
{
    json_t *root = json_object(), *keys = json_array(), *certs = json_array(),
           *acls = json_array(), *quotas = json_array();
    json_object_set_new(root, "version", json_integer(1));
    for (size_t i = 0; i < s->n_keys; i++) {
        const struct auth_key *k = &s->keys[i];
        char salt[33], hash[65];
        hex_put(k->salt, 16, salt);
        hex_put(k->hash, 32, hash);
        json_array_append_new(keys, json_pack("{s:s,s:s,s:s,s:s,s:s,s:I}", "id", k->id, "tenant",
                                              k->tenant, "principal", k->principal, "salt", salt,
                                              "hash", hash, "created_ms",
                                              (json_int_t)k->created_ms));
    }
    for (size_t i = 0; i < s->n_certs; i++)
        json_array_append_new(certs, json_pack("{s:s,s:s,s:s}", "subject", s->certs[i].subject,
                                               "tenant", s->certs[i].tenant, "principal",
                                               s->certs[i].principal));
    for (size_t i = 0; i < s->n_acls; i++) {
        const struct auth_acl *a = &s->acls[i];
        char res[AUTH_PATTERN_MAX + 16];
        snprintf(res, sizeof res, "%s:%s", auth_res_name(a->res),
                 a->pattern);
        json_t *ops = json_array();
        for (size_t j = 0; j < N_OPS; j++)
            if (a->ops & (1u << j))
                json_array_append_new(ops, json_string(op_names[j]));
        json_array_append_new(acls, json_pack("{s:s,s:s,s:s,s:o,s:s}", "tenant", a->tenant,
                                              "principal", a->principal, "resource", res, "ops",
                                              ops, "effect", a->deny ? "deny" : "allow"));
    }
    for (size_t i = 0; i < s->n_quotas; i++) {
        const struct auth_quota *q = &s->quotas[i];
        json_array_append_new(quotas,
                              json_pack("{s:s,s:s,s:I,s:I,s:I,s:I,s:I}", "tenant", q->tenant,
                                        "principal", q->principal, "produce_bytes_per_s",
                                        (json_int_t)q->produce_bytes_per_s, "fetch_bytes_per_s",
                                        (json_int_t)q->fetch_bytes_per_s, "requests_per_s",
                                        (json_int_t)q->requests_per_s, "connections",
                                        (json_int_t)q->connections, "storage_bytes",
                                        (json_int_t)q->storage_bytes));
    }
    json_object_set_new(root, "keys", keys);
    json_object_set_new(root, "certs", certs);
    json_object_set_new(root, "acls", acls);
    json_object_set_new(root, "quotas", quotas);
    if (s->n_roles) {
        json_t *roles = json_array();
        for (size_t i = 0; i < s->n_roles; i++)
            json_array_append_new(roles, json_pack("{s:s,s:s,s:s}", "tenant", s->roles[i].tenant,
                                                   "principal", s->roles[i].principal, "role",
                                                   s->roles[i].role));
        json_object_set_new(root, "roles", roles);
    }
    return root;
}

int auth_store_save(const struct auth_store *s, const char *path)
{
    json_t *root = store_json(s);
    char *text = root ? json_dumps(root, JSON_INDENT(1) | JSON_PRESERVE_ORDER) : NULL;
    json_decref(root);
    if (!text)
        return -ENOMEM;
    char tmp[4096], dir[4096];
    int rc = 0, fd = -1;
    if ((size_t)snprintf(tmp, sizeof tmp, "%s.tmp", path) >= sizeof tmp) {
        rc = -ENAMETOOLONG;
        goto out;
    }
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) {
        rc = -errno;
        goto out;
    }
    size_t n = strlen(text), put = 0;
    while (put < n) {
        ssize_t k = write(fd, text + put, n - put);
        if (k < 0 && errno == EINTR)
            continue;
        if (k < 0) {
            rc = -errno;
            goto out;
        }
        put += (size_t)k;
    }
    if (write(fd, "\n", 1) != 1 || fsync(fd) != 0) {
        rc = -errno;
        goto out;
    }
    if (close(fd) != 0) {
        fd = -1;
        rc = -errno;
        goto out;
    }
    fd = -1;
    if (rename(tmp, path) != 0) {
        rc = -errno;
        goto out;
    }
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    if (slash)
        *(slash == dir ? slash + 1 : slash) = '\0';
    else
        snprintf(dir, sizeof dir, ".");
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        if (fsync(dfd) != 0)
            rc = -errno;
        close(dfd);
    }
out:
    if (fd >= 0) {
        close(fd);
        unlink(tmp);
    }
    free(text);
    return rc;
}

char *auth_store_dump(const struct auth_store *s)
{
    json_t *root = store_json(s);
    char *text = root ? json_dumps(root, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
    json_decref(root);
    return text;
}

/* ---- merge ----------------------------------------------------------------- */

int auth_store_merge(const struct auth_store *base, const struct auth_store *extra,
                     struct auth_store **out)
{
    *out = NULL;
    struct auth_store *s = auth_store_new();
    if (!s)
        return -ENOMEM;
    int rc = 0;
    for (size_t i = 0; rc == 0 && i < base->n_keys; i++)
        rc = PUSH(s, keys, n_keys, cap_keys, base->keys[i]);
    for (size_t i = 0; rc == 0 && i < base->n_certs; i++)
        rc = PUSH(s, certs, n_certs, cap_certs, base->certs[i]);
    for (size_t i = 0; rc == 0 && i < base->n_acls; i++)
        rc = PUSH(s, acls, n_acls, cap_acls, base->acls[i]);
    for (size_t i = 0; rc == 0 && i < base->n_quotas; i++)
        rc = PUSH(s, quotas, n_quotas, cap_quotas, base->quotas[i]);
    for (size_t i = 0; rc == 0 && i < base->n_roles; i++)
        rc = PUSH(s, roles, n_roles, cap_roles, base->roles[i]);
    for (size_t i = 0; rc == 0 && i < extra->n_keys; i++)
        if (!auth_key_find(s, extra->keys[i].id))
            rc = PUSH(s, keys, n_keys, cap_keys, extra->keys[i]);
    for (size_t i = 0; rc == 0 && i < extra->n_certs; i++)
        if (!auth_cert_find(s, extra->certs[i].subject))
            rc = PUSH(s, certs, n_certs, cap_certs, extra->certs[i]);
    for (size_t i = 0; rc == 0 && i < extra->n_acls; i++)
        if ((rc = auth_acl_add(s, &extra->acls[i])) == VERITY_EEXIST || rc == VERITY_EINVAL)
            rc = 0;
    for (size_t i = 0; rc == 0 && i < extra->n_quotas; i++)
        if ((rc = auth_quota_set(s, &extra->quotas[i])) == VERITY_EINVAL)
            rc = 0;
    for (size_t i = 0; rc == 0 && i < extra->n_roles; i++)
        if ((rc = auth_role_grant(s, &extra->roles[i])) == VERITY_EEXIST || rc == VERITY_EINVAL)
            rc = 0;
    if (rc) {
        auth_store_free(s);
        return rc;
    }
    *out = s;
    return 0;
}

/* ---- changes --------------------------------------------------------------- */

static const char *const change_names[] = {
    NULL,         "key_create", "key_add",      "key_revoke", "acl_add",    "acl_remove",
    "cert_add",   "cert_remove", "quota_set",   "quota_remove", "role_grant", "role_revoke",
};
#define N_CHANGES (sizeof change_names / sizeof change_names[0])

const char *auth_change_name(enum auth_change_op op)
{
    return (unsigned)op < N_CHANGES ? change_names[op] : NULL;
}

static int ch_bad(char *why, size_t cap, const char *what)
{
    if (why && cap)
        snprintf(why, cap, "%s", what);
    return VERITY_EINVAL;
}

/* "ops": an array of names or one comma-separated string. */
static bool ops_field(json_t *o, unsigned *out)
{
    json_t *v = json_object_get(o, "ops");
    *out = 0;
    if (json_is_string(v)) {
        char buf[128];
        const char *t = json_string_value(v);
        if (strlen(t) >= sizeof buf)
            return false;
        snprintf(buf, sizeof buf, "%s", t);
        for (char *save = NULL, *p = strtok_r(buf, ",", &save); p; p = strtok_r(NULL, ",", &save)) {
            unsigned bit = auth_op_parse(p);
            if (!bit)
                return false;
            *out |= bit;
        }
        return *out != 0;
    }
    if (!json_is_array(v) || json_array_size(v) == 0 || json_array_size(v) > 8)
        return false;
    size_t j;
    json_t *op;
    json_array_foreach(v, j, op) {
        unsigned bit = json_is_string(op) ? auth_op_parse(json_string_value(op)) : 0;
        if (!bit)
            return false;
        *out |= bit;
    }
    return true;
}

static int change_from(json_t *o, bool from_log, struct auth_change *c, char *why, size_t cap)
{
    memset(c, 0, sizeof *c);
    if (!json_is_object(o))
        return ch_bad(why, cap, "not a JSON object");
    const char *op = json_string_value(json_object_get(o, "op"));
    for (size_t i = 1; op && i < N_CHANGES; i++)
        if (strcmp(op, change_names[i]) == 0)
            c->op = (enum auth_change_op)i;
    if (!c->op)
        return ch_bad(why, cap, "op must be key_create, key_revoke, acl_add, acl_remove, "
                                "cert_add, cert_remove, quota_set, quota_remove, role_grant or "
                                "role_revoke");
    if ((c->op == AUTH_CH_KEY_ADD && !from_log) || (c->op == AUTH_CH_KEY_CREATE && from_log))
        return ch_bad(why, cap, from_log ? "key_create in the log" : "key_add is the broker's own");
    switch (c->op) {
    case AUTH_CH_KEY_CREATE:
        if (!str_field(o, "tenant", c->key.tenant, sizeof c->key.tenant) ||
            !codec_tenant_name_ok(c->key.tenant) ||
            !str_field(o, "principal", c->key.principal, sizeof c->key.principal) ||
            !auth_principal_name_ok(c->key.principal))
            return ch_bad(why, cap, "key_create needs tenant (1-32 of [A-Za-z0-9_-]) and "
                                    "principal (1-64 of [A-Za-z0-9._@-])");
        return 0;
    case AUTH_CH_KEY_ADD: {
        char salt[40], hash[72];
        uint64_t created = 0;
        if (!str_field(o, "id", c->key.id, sizeof c->key.id) || !hex_ok(c->key.id, AUTH_KEY_ID_HEX) ||
            !str_field(o, "tenant", c->key.tenant, sizeof c->key.tenant) ||
            !codec_tenant_name_ok(c->key.tenant) ||
            !str_field(o, "principal", c->key.principal, sizeof c->key.principal) ||
            !auth_principal_name_ok(c->key.principal) || !str_field(o, "salt", salt, sizeof salt) ||
            !hex_get(salt, c->key.salt, sizeof c->key.salt) ||
            !str_field(o, "hash", hash, sizeof hash) ||
            !hex_get(hash, c->key.hash, sizeof c->key.hash) ||
            !u64_field(o, "created_ms", &created, false) || created > INT64_MAX)
            return ch_bad(why, cap, "key_add needs id, tenant, principal, salt, hash");
        c->key.created_ms = (int64_t)created;
        return 0;
    }
    case AUTH_CH_KEY_REVOKE:
        if (!str_field(o, "id", c->key.id, sizeof c->key.id) || !hex_ok(c->key.id, AUTH_KEY_ID_HEX))
            return ch_bad(why, cap, "key_revoke needs id (16 hex digits)");
        return 0;
    case AUTH_CH_ACL_ADD:
    case AUTH_CH_ACL_REMOVE: {
        char res[AUTH_PATTERN_MAX + 16], effect[8] = "allow";
        json_t *e = json_object_get(o, "effect");
        if (!str_field(o, "tenant", c->acl.tenant, sizeof c->acl.tenant) ||
            !str_field(o, "principal", c->acl.principal, sizeof c->acl.principal) ||
            !str_field(o, "resource", res, sizeof res) || !ops_field(o, &c->acl.ops) ||
            (e && !str_field(o, "effect", effect, sizeof effect)))
            return ch_bad(why, cap, "acl needs tenant, principal, resource, ops (produce, "
                                    "consume, group, describe, admin, all), effect");
        if (auth_resource_parse(res, &c->acl.res, c->acl.pattern, sizeof c->acl.pattern) != 0)
            return ch_bad(why, cap, "resource must be topic:PATTERN, group:PATTERN or "
                                    "cluster:PATTERN");
        if (strcmp(effect, "allow") != 0 && strcmp(effect, "deny") != 0)
            return ch_bad(why, cap, "effect must be allow or deny");
        c->acl.deny = effect[0] == 'd';
        if (!acl_ok(&c->acl))
            return ch_bad(why, cap, "malformed tenant or principal (a name, '*' or role:NAME)");
        return 0;
    }
    case AUTH_CH_CERT_ADD:
        if (!str_field(o, "subject", c->cert.subject, sizeof c->cert.subject) ||
            !subject_ok(c->cert.subject) ||
            !str_field(o, "tenant", c->cert.tenant, sizeof c->cert.tenant) ||
            !codec_tenant_name_ok(c->cert.tenant) ||
            !str_field(o, "principal", c->cert.principal, sizeof c->cert.principal) ||
            !auth_principal_name_ok(c->cert.principal))
            return ch_bad(why, cap, "cert_add needs subject, tenant, principal");
        return 0;
    case AUTH_CH_CERT_REMOVE:
        if (!str_field(o, "subject", c->cert.subject, sizeof c->cert.subject) ||
            !subject_ok(c->cert.subject))
            return ch_bad(why, cap, "cert_remove needs subject");
        return 0;
    case AUTH_CH_QUOTA_SET:
    case AUTH_CH_QUOTA_REMOVE: {
        struct auth_quota *q = &c->quota;
        bool total;
        if (!str_field(o, "tenant", q->tenant, sizeof q->tenant) ||
            !codec_tenant_name_ok(q->tenant) ||
            !str_field(o, "principal", q->principal, sizeof q->principal) ||
            !((total = strcmp(q->principal, AUTH_TENANT_TOTAL) == 0) ||
              principal_or_any_ok(q->principal)))
            return ch_bad(why, cap, "quota needs tenant and principal (a name, '*' or '+')");
        if (c->op == AUTH_CH_QUOTA_REMOVE)
            return 0;
        static const char *const f[] = {"produce_bytes_per_s", "fetch_bytes_per_s",
                                        "requests_per_s", "connections", "storage_bytes"};
        uint64_t *dst[] = {&q->produce_bytes_per_s, &q->fetch_bytes_per_s, &q->requests_per_s,
                           &q->connections, &q->storage_bytes};
        for (size_t i = 0; i < 5; i++) {
            if (!json_object_get(o, f[i]))
                continue;
            if (!u64_field(o, f[i], dst[i], true))
                return ch_bad(why, cap, "quota values are integers >= 0");
            c->quota_has |= 1u << i;
        }
        if (from_log && c->quota_has != AUTH_Q_ALL)
            return ch_bad(why, cap, "quota_set in the log names every field");
        if (q->storage_bytes && !total)
            return ch_bad(why, cap, "storage_bytes only on principal '+' (the tenant)");
        return 0;
    }
    case AUTH_CH_ROLE_GRANT:
    case AUTH_CH_ROLE_REVOKE:
        if (!str_field(o, "tenant", c->role.tenant, sizeof c->role.tenant) ||
            !str_field(o, "principal", c->role.principal, sizeof c->role.principal) ||
            !str_field(o, "role", c->role.role, sizeof c->role.role) ||
            !codec_tenant_name_ok(c->role.tenant) || !auth_principal_name_ok(c->role.principal) ||
            !auth_principal_name_ok(c->role.role) ||
            strlen(c->role.role) + strlen(AUTH_ROLE_PREFIX) > AUTH_PRINCIPAL_MAX)
            return ch_bad(why, cap, "role needs tenant, principal and role (1-59 of "
                                    "[A-Za-z0-9._@-])");
        return 0;
    }
    return ch_bad(why, cap, "unknown op");
}

int auth_change_from_json(struct json_t *o, bool from_log, struct auth_change *out, char *why,
                          size_t cap)
{
    if (why && cap)
        why[0] = '\0';
    return change_from(o, from_log, out, why, cap);
}

int auth_change_parse(const char *buf, size_t len, bool from_log, struct auth_change *out,
                      char *why, size_t cap)
{
    memset(out, 0, sizeof *out);
    if (why && cap)
        why[0] = '\0';
    if (len > 65536)
        return ch_bad(why, cap, "larger than 64 KiB");
    json_error_t jerr;
    json_t *o = json_loadb(buf, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!o)
        return ch_bad(why, cap, "not JSON");
    int rc = change_from(o, from_log, out, why, cap);
    json_decref(o);
    return rc;
}

char *auth_change_dump(const struct auth_change *c)
{
    const char *op = auth_change_name(c->op);
    json_t *o = NULL;
    char a[80], b[80];
    switch (c->op) {
    case AUTH_CH_KEY_CREATE:
        o = json_pack("{s:s,s:s,s:s}", "op", op, "tenant", c->key.tenant, "principal",
                      c->key.principal);
        break;
    case AUTH_CH_KEY_ADD:
        hex_put(c->key.salt, 16, a);
        hex_put(c->key.hash, 32, b);
        o = json_pack("{s:s,s:s,s:s,s:s,s:s,s:s,s:I}", "op", op, "id", c->key.id, "tenant",
                      c->key.tenant, "principal", c->key.principal, "salt", a, "hash", b,
                      "created_ms", (json_int_t)c->key.created_ms);
        break;
    case AUTH_CH_KEY_REVOKE:
        o = json_pack("{s:s,s:s}", "op", op, "id", c->key.id);
        break;
    case AUTH_CH_ACL_ADD:
    case AUTH_CH_ACL_REMOVE: {
        char res[AUTH_PATTERN_MAX + 16], ops[64];
        snprintf(res, sizeof res, "%s:%s", auth_res_name(c->acl.res), c->acl.pattern);
        auth_op_names(c->acl.ops, ops, sizeof ops);
        o = json_pack("{s:s,s:s,s:s,s:s,s:s,s:s}", "op", op, "tenant", c->acl.tenant, "principal",
                      c->acl.principal, "resource", res, "ops", ops, "effect",
                      c->acl.deny ? "deny" : "allow");
        break;
    }
    case AUTH_CH_CERT_ADD:
        o = json_pack("{s:s,s:s,s:s,s:s}", "op", op, "subject", c->cert.subject, "tenant",
                      c->cert.tenant, "principal", c->cert.principal);
        break;
    case AUTH_CH_CERT_REMOVE:
        o = json_pack("{s:s,s:s}", "op", op, "subject", c->cert.subject);
        break;
    case AUTH_CH_QUOTA_SET:
        o = json_pack("{s:s,s:s,s:s,s:I,s:I,s:I,s:I,s:I}", "op", op, "tenant", c->quota.tenant,
                      "principal", c->quota.principal, "produce_bytes_per_s",
                      (json_int_t)c->quota.produce_bytes_per_s, "fetch_bytes_per_s",
                      (json_int_t)c->quota.fetch_bytes_per_s, "requests_per_s",
                      (json_int_t)c->quota.requests_per_s, "connections",
                      (json_int_t)c->quota.connections, "storage_bytes",
                      (json_int_t)c->quota.storage_bytes);
        break;
    case AUTH_CH_QUOTA_REMOVE:
        o = json_pack("{s:s,s:s,s:s}", "op", op, "tenant", c->quota.tenant, "principal",
                      c->quota.principal);
        break;
    case AUTH_CH_ROLE_GRANT:
    case AUTH_CH_ROLE_REVOKE:
        o = json_pack("{s:s,s:s,s:s,s:s}", "op", op, "tenant", c->role.tenant, "principal",
                      c->role.principal, "role", c->role.role);
        break;
    }
    char *text = o ? json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
    json_decref(o);
    return text;
}

int auth_change_apply(struct auth_store *s, const struct auth_change *c)
{
    switch (c->op) {
    case AUTH_CH_KEY_ADD:
        if (auth_key_find(s, c->key.id))
            return VERITY_EEXIST;
        return PUSH(s, keys, n_keys, cap_keys, c->key);
    case AUTH_CH_KEY_REVOKE:
        return auth_key_revoke(s, c->key.id);
    case AUTH_CH_ACL_ADD:
        return auth_acl_add(s, &c->acl);
    case AUTH_CH_ACL_REMOVE:
        return auth_acl_remove(s, &c->acl);
    case AUTH_CH_CERT_ADD:
        return auth_cert_add(s, &c->cert);
    case AUTH_CH_CERT_REMOVE:
        return auth_cert_remove(s, c->cert.subject);
    case AUTH_CH_QUOTA_SET:
        return auth_quota_set(s, &c->quota);
    case AUTH_CH_QUOTA_REMOVE:
        return auth_quota_remove(s, c->quota.tenant, c->quota.principal);
    case AUTH_CH_ROLE_GRANT:
        return auth_role_grant(s, &c->role);
    case AUTH_CH_ROLE_REVOKE:
        return auth_role_revoke(s, &c->role);
    case AUTH_CH_KEY_CREATE:
        break;
    }
    return VERITY_EINVAL;
}
