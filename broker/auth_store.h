/*
 * The security store (issue 14): API keys, certificate mappings, ACLs and
 * quotas of every tenant, read from and written to one JSON file
 * (`auth_file`). The broker loads it at start and on SIGHUP; `verity auth`
 * edits it. No I/O but auth_store_load/auth_store_save, no libevent, so the
 * unit tests and the fuzz target run it alone.
 *
 * A key as handed to a client: "vk_<id>_<secret>", id 16 hex digits (public,
 * names the key), secret 64 hex digits (32 random bytes). Only
 * SHA-256(salt || secret) with a random 16-byte salt is stored; a 256-bit
 * random secret needs no slow hash (there is nothing to guess a dictionary
 * of). auth_key_verify compares in constant time and hashes as much for an
 * unknown id as for a known one.
 */
#ifndef VERITY_BROKER_AUTH_STORE_H
#define VERITY_BROKER_AUTH_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define AUTH_FILE_BYTES_MAX (8u << 20) /* a larger auth_file is refused */
#define AUTH_ENTRIES_MAX    65536u     /* keys, certs, acls, quotas: each list */
#define AUTH_TENANT_MAX     32u        /* = CODEC_TENANT_NAME_MAX */
#define AUTH_PRINCIPAL_MAX  64u
#define AUTH_SUBJECT_MAX    128u
#define AUTH_PATTERN_MAX    201u       /* a name (200) and a trailing '*' */
#define AUTH_KEY_ID_HEX     16u
#define AUTH_SECRET_HEX     64u
#define AUTH_KEY_TEXT_MAX   (3 + AUTH_KEY_ID_HEX + 1 + AUTH_SECRET_HEX + 1)

enum auth_op {
    AUTH_OP_PRODUCE = 1u << 0,  /* produce, init_producer */
    AUTH_OP_CONSUME = 1u << 1,  /* fetch, list_offsets, a group's topics */
    AUTH_OP_GROUP = 1u << 2,    /* join, fetch, ack, nack, extend, term in a group */
    AUTH_OP_DESCRIBE = 1u << 3, /* metadata, describe, list */
    AUTH_OP_ADMIN = 1u << 4,    /* create, delete, reset */
    AUTH_OP_ALL = (1u << 5) - 1,
};

/* cluster: the broker-wide objects of the admin HTTP port (issue 14):
 * cluster:metrics (/metrics), cluster:peers (/cluster), cluster:trace
 * (/debug/trace), cluster:tenants (every tenant's topics and groups on
 * /v1/topics, /v1/groups and proofs), cluster:audit (the broker-wide audit
 * topic __audit). A rule on them is still a rule of one tenant's principal. */
enum auth_res { AUTH_RES_TOPIC, AUTH_RES_GROUP, AUTH_RES_CLUSTER };

/* "topic", "group", "cluster". */
const char *auth_res_name(enum auth_res res);

struct auth_key {
    char id[AUTH_KEY_ID_HEX + 1];
    char tenant[AUTH_TENANT_MAX + 1];
    char principal[AUTH_PRINCIPAL_MAX + 1];
    uint8_t salt[16];
    uint8_t hash[32]; /* SHA-256(salt || secret) */
    int64_t created_ms;
};

struct auth_cert {
    char subject[AUTH_SUBJECT_MAX + 1]; /* the certificate's subject CN */
    char tenant[AUTH_TENANT_MAX + 1];
    char principal[AUTH_PRINCIPAL_MAX + 1];
};

struct auth_acl {
    char tenant[AUTH_TENANT_MAX + 1];
    char principal[AUTH_PRINCIPAL_MAX + 1]; /* "*": every principal of the tenant */
    enum auth_res res;
    char pattern[AUTH_PATTERN_MAX + 1]; /* "orders", "orders-*", "*" */
    unsigned ops;                       /* enum auth_op bits */
    bool deny;
};

#define AUTH_TENANT_TOTAL "+" /* a quota's principal: the tenant as a whole */

struct auth_quota {
    char tenant[AUTH_TENANT_MAX + 1];
    char principal[AUTH_PRINCIPAL_MAX + 1]; /* "*": each principal of the tenant;
                                               "+": all of them together */
    uint64_t produce_bytes_per_s;           /* 0: none */
    uint64_t fetch_bytes_per_s;             /* 0: none */
    uint64_t requests_per_s;                /* 0: none (every request but Hello, Authenticate) */
    uint64_t connections;                   /* 0: none (authenticated connections at once) */
    uint64_t storage_bytes;                 /* 0: none; only on "+" (the tenant's topics) */
};

/* A role held by a principal of a tenant. An ACL names a role with the
 * principal "role:NAME"; it applies to every principal holding NAME in the
 * ACL's tenant. Deny still wins across the principal's own rules, "*" and
 * its roles (one union of everything that matches). */
#define AUTH_ROLE_PREFIX "role:"
struct auth_role {
    char tenant[AUTH_TENANT_MAX + 1];
    char principal[AUTH_PRINCIPAL_MAX + 1];
    char role[AUTH_PRINCIPAL_MAX + 1];
};

struct auth_store {
    struct auth_key *keys;
    size_t n_keys, cap_keys;
    struct auth_cert *certs;
    size_t n_certs, cap_certs;
    struct auth_acl *acls;
    size_t n_acls, cap_acls;
    struct auth_quota *quotas;
    size_t n_quotas, cap_quotas;
    struct auth_role *roles;
    size_t n_roles, cap_roles;
};

/* Parses the JSON text buf[0..len). Returns 0 and a new store in *out (free
 * with auth_store_free), or VERITY_EINVAL / VERITY_ELIMIT / -ENOMEM with a
 * message naming the entry in why. Never reads past len. */
int auth_store_parse(const char *buf, size_t len, struct auth_store **out, char *why, size_t cap)
    __attribute__((warn_unused_result));

/* Reads and parses path. missing_ok: a missing file gives an empty store. */
int auth_store_load(const char *path, bool missing_ok, struct auth_store **out, char *why,
                    size_t cap) __attribute__((warn_unused_result));

/* Writes s to path atomically (temporary file, fsync, rename, directory
 * fsync), mode 0600. 0 or -errno. */
int auth_store_save(const struct auth_store *s, const char *path)
    __attribute__((warn_unused_result));

struct auth_store *auth_store_new(void);
void auth_store_free(struct auth_store *s);

/* Makes a key for tenant/principal; writes its text ("vk_...", shown once)
 * to key_out (AUTH_KEY_TEXT_MAX bytes). 0, VERITY_EINVAL (bad names) or
 * -ENOMEM. */
int auth_key_create(struct auth_store *s, const char *tenant, const char *principal,
                    int64_t now_ms, char key_out[AUTH_KEY_TEXT_MAX])
    __attribute__((warn_unused_result));

/* Removes the key with this id. 0 or VERITY_ENOTFOUND. */
int auth_key_revoke(struct auth_store *s, const char *id) __attribute__((warn_unused_result));

/* Checks a key text. Returns 0 and the key (valid until s changes) in *out,
 * or VERITY_EAUTH (malformed, unknown id, wrong secret: the same answer).
 * Constant time in the secret. */
int auth_key_verify(const struct auth_store *s, const char *text, const struct auth_key **out)
    __attribute__((warn_unused_result));

/* The key with this id, or NULL. */
const struct auth_key *auth_key_find(const struct auth_store *s, const char *id);

/* The mapping for a certificate subject CN, or NULL. */
const struct auth_cert *auth_cert_find(const struct auth_store *s, const char *subject);

int auth_cert_add(struct auth_store *s, const struct auth_cert *c) __attribute__((warn_unused_result));
int auth_cert_remove(struct auth_store *s, const char *subject) __attribute__((warn_unused_result));

/* Adds an ACL (VERITY_EINVAL when a field is malformed, VERITY_EEXIST when
 * the same rule is there). */
int auth_acl_add(struct auth_store *s, const struct auth_acl *a) __attribute__((warn_unused_result));
/* Removes the rule equal to a (all fields). 0 or VERITY_ENOTFOUND. */
int auth_acl_remove(struct auth_store *s, const struct auth_acl *a) __attribute__((warn_unused_result));

/* Sets (replaces) the quota of tenant/principal. */
int auth_quota_set(struct auth_store *s, const struct auth_quota *q) __attribute__((warn_unused_result));

/* Whether principal of tenant may do every op in ops on the named resource
 * (the name inside the tenant). Default deny; a matching deny rule wins over
 * any allow. When it may not and why is given, names the op refused. */
bool auth_allowed(const struct auth_store *s, const char *tenant, const char *principal,
                  enum auth_res res, const char *name, unsigned ops, char *why, size_t cap);

/* Whether principal may do at least one op of ops on the resource. */
bool auth_allowed_any(const struct auth_store *s, const char *tenant, const char *principal,
                      enum auth_res res, const char *name, unsigned ops);

/* The quota for tenant/principal: an exact entry, else the tenant's "*"
 * entry, else NULL. With principal "+": the tenant's "+" entry or NULL. */
const struct auth_quota *auth_quota_find(const struct auth_store *s, const char *tenant,
                                         const char *principal);

/* "produce" ... -> bit, 0 when unknown. auth_op_names writes "produce,consume". */
unsigned auth_op_parse(const char *name);
void auth_op_names(unsigned ops, char *buf, size_t cap);

/* "topic:orders*", "group:g*", "cluster:metrics" -> res and pattern. 0 or VERITY_EINVAL. */
int auth_resource_parse(const char *text, enum auth_res *res, char *pattern, size_t cap)
    __attribute__((warn_unused_result));

bool auth_principal_name_ok(const char *p);

/* Role grants. 0, VERITY_EINVAL, VERITY_EEXIST / VERITY_ENOTFOUND. */
int auth_role_grant(struct auth_store *s, const struct auth_role *r) __attribute__((warn_unused_result));
int auth_role_revoke(struct auth_store *s, const struct auth_role *r) __attribute__((warn_unused_result));
/* Whether principal of tenant holds role. */
bool auth_role_held(const struct auth_store *s, const char *tenant, const char *principal,
                    const char *role);
/* Removes the quota entry of tenant/principal. 0 or VERITY_ENOTFOUND. */
int auth_quota_remove(struct auth_store *s, const char *tenant, const char *principal)
    __attribute__((warn_unused_result));

/* The store as the JSON text of auth_file (malloc'd), NULL on no memory. */
char *auth_store_dump(const struct auth_store *s);

/* A new store: every entry of base, then every entry of extra not already
 * there (keys by id, certificate mappings by subject, ACLs and role grants
 * by equality: base's entry stays); a quota entry of extra replaces
 * base's for the same tenant/principal. 0 or -ENOMEM / VERITY_ELIMIT. */
int auth_store_merge(const struct auth_store *base, const struct auth_store *extra,
                     struct auth_store **out) __attribute__((warn_unused_result));

/* ---- changes made over the network (issue 14) -------------------------------
 * One change of the security store, as an admin principal sends it to
 * POST /v1/security and as it is kept in the metadata log. JSON objects:
 *
 *   {"op":"key_create","tenant":T,"principal":P}         (request only)
 *   {"op":"key_add","id":..,"tenant":T,"principal":P,"salt":..,"hash":..,
 *    "created_ms":N}                                      (log only: made
 *                                       by the broker from a key_create)
 *   {"op":"key_revoke","id":ID}
 *   {"op":"acl_add"|"acl_remove","tenant":T,"principal":P|"*"|"role:R",
 *    "resource":"topic:PAT"|..,"ops":["produce",..],"effect":"allow"|"deny"}
 *   {"op":"cert_add","subject":CN,"tenant":T,"principal":P}
 *   {"op":"cert_remove","subject":CN}
 *   {"op":"quota_set","tenant":T,"principal":P|"*"|"+",
 *    "produce_bytes_per_s":N,..}   (fields left out: kept as they are)
 *   {"op":"quota_remove","tenant":T,"principal":P}
 *   {"op":"role_grant"|"role_revoke","tenant":T,"principal":P,"role":R}
 */
enum auth_change_op {
    AUTH_CH_KEY_CREATE = 1,
    AUTH_CH_KEY_ADD,
    AUTH_CH_KEY_REVOKE,
    AUTH_CH_ACL_ADD,
    AUTH_CH_ACL_REMOVE,
    AUTH_CH_CERT_ADD,
    AUTH_CH_CERT_REMOVE,
    AUTH_CH_QUOTA_SET,
    AUTH_CH_QUOTA_REMOVE,
    AUTH_CH_ROLE_GRANT,
    AUTH_CH_ROLE_REVOKE,
};

/* quota_has bits: the quota fields a quota_set names. */
enum { AUTH_Q_PRODUCE = 1, AUTH_Q_FETCH = 2, AUTH_Q_REQUESTS = 4, AUTH_Q_CONNS = 8,
       AUTH_Q_STORAGE = 16, AUTH_Q_ALL = 31 };

struct auth_change {
    enum auth_change_op op;
    struct auth_key key;     /* KEY_CREATE: tenant, principal; KEY_ADD: all; KEY_REVOKE: id */
    struct auth_acl acl;     /* ACL_* */
    struct auth_cert cert;   /* CERT_*: CERT_REMOVE uses subject only */
    struct auth_quota quota; /* QUOTA_*: QUOTA_REMOVE uses tenant, principal */
    unsigned quota_has;      /* QUOTA_SET: AUTH_Q_* bits given */
    struct auth_role role;   /* ROLE_* */
};

/* "acl_add" ..., NULL for an unknown op. */
const char *auth_change_name(enum auth_change_op op);

/* Decodes buf[0..len), a JSON object as above, checking every field.
 * from_log: key_add is accepted and key_create is not (a request may not
 * bring its own hash; a log record never holds a key_create). 0 or
 * VERITY_EINVAL with the reason in why. Never reads past len. */
int auth_change_parse(const char *buf, size_t len, bool from_log, struct auth_change *out,
                      char *why, size_t cap) __attribute__((warn_unused_result));

/* The same from a parsed JSON object (a jansson json_t *). */
struct json_t;
int auth_change_from_json(struct json_t *o, bool from_log, struct auth_change *out, char *why,
                          size_t cap) __attribute__((warn_unused_result));

/* The change as a JSON object (malloc'd text), NULL on no memory. A
 * quota_set is written with every field. */
char *auth_change_dump(const struct auth_change *c);

/* Applies c to s: 0, VERITY_EEXIST (already there: an ACL, a role, a
 * mapping), VERITY_ENOTFOUND (nothing to remove), VERITY_EINVAL. A
 * KEY_CREATE is not applied (VERITY_EINVAL): the broker turns it into a
 * KEY_ADD first. */
int auth_change_apply(struct auth_store *s, const struct auth_change *c)
    __attribute__((warn_unused_result));

#endif
