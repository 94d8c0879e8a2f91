/*
 * The security store (broker/auth_store.c): keys (shown once, stored as a
 * salted hash, checked in constant time), ACL decisions (default deny,
 * deny wins, prefixes, tenants apart), quota lookup, the file format
 * (round trip through save and load; malformed files refused whole), and
 * the tenant-qualified name rule of proto/codec.c.
 */
#include <CUnit/Basic.h>
#include <CUnit/CUnit.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "broker/auth_store.h"
#include "proto/codec.h"
#include "verity/errors.h"

static void test_key_verifies_and_wrong_secret_does_not(void)
{
    struct auth_store *s = auth_store_new();
    char key[AUTH_KEY_TEXT_MAX];
    CU_ASSERT_EQUAL_FATAL(auth_key_create(s, "acme", "svc-a", 1, key), 0);
    CU_ASSERT_EQUAL(strlen(key), AUTH_KEY_TEXT_MAX - 1);
    const struct auth_key *k = NULL;
    CU_ASSERT_EQUAL(auth_key_verify(s, key, &k), 0);
    CU_ASSERT_PTR_NOT_NULL_FATAL(k);
    CU_ASSERT_STRING_EQUAL(k->tenant, "acme");
    CU_ASSERT_STRING_EQUAL(k->principal, "svc-a");
    char bad[AUTH_KEY_TEXT_MAX];
    memcpy(bad, key, sizeof bad);
    bad[AUTH_KEY_TEXT_MAX - 2] = bad[AUTH_KEY_TEXT_MAX - 2] == '0' ? '1' : '0';
    CU_ASSERT_EQUAL(auth_key_verify(s, bad, &k), VERITY_EAUTH);
    CU_ASSERT_PTR_NULL(k);
    memcpy(bad, key, sizeof bad);
    bad[4] = bad[4] == '0' ? '1' : '0'; /* another id */
    CU_ASSERT_EQUAL(auth_key_verify(s, bad, &k), VERITY_EAUTH);
    CU_ASSERT_EQUAL(auth_key_verify(s, "", &k), VERITY_EAUTH);
    CU_ASSERT_EQUAL(auth_key_verify(s, "vk_", &k), VERITY_EAUTH);
    CU_ASSERT_EQUAL(auth_key_verify(s, NULL, &k), VERITY_EAUTH);
    /* revoked: refused */
    char id[AUTH_KEY_ID_HEX + 1];
    memcpy(id, key + 3, AUTH_KEY_ID_HEX);
    id[AUTH_KEY_ID_HEX] = '\0';
    CU_ASSERT_EQUAL(auth_key_revoke(s, id), 0);
    CU_ASSERT_EQUAL(auth_key_verify(s, key, &k), VERITY_EAUTH);
    CU_ASSERT_EQUAL(auth_key_revoke(s, id), VERITY_ENOTFOUND);
    CU_ASSERT_EQUAL(auth_key_create(s, "a~b", "x", 1, key), VERITY_EINVAL);
    CU_ASSERT_EQUAL(auth_key_create(s, "acme", "", 1, key), VERITY_EINVAL);
    auth_store_free(s);
}

static struct auth_acl acl(const char *t, const char *p, const char *res, unsigned ops, bool deny)
{
    struct auth_acl a;
    memset(&a, 0, sizeof a);
    snprintf(a.tenant, sizeof a.tenant, "%s", t);
    snprintf(a.principal, sizeof a.principal, "%s", p);
    CU_ASSERT_EQUAL(auth_resource_parse(res, &a.res, a.pattern, sizeof a.pattern), 0);
    a.ops = ops;
    a.deny = deny;
    return a;
}

static void test_acl_default_deny_allow_prefix_and_deny_wins(void)
{
    struct auth_store *s = auth_store_new();
    struct auth_acl a1 = acl("acme", "reader", "topic:orders*", AUTH_OP_CONSUME, false);
    struct auth_acl a2 = acl("acme", "reader", "topic:orders-secret", AUTH_OP_CONSUME, true);
    struct auth_acl a3 = acl("acme", "*", "group:g1", AUTH_OP_GROUP, false);
    CU_ASSERT_EQUAL(auth_acl_add(s, &a1), 0);
    CU_ASSERT_EQUAL(auth_acl_add(s, &a2), 0);
    CU_ASSERT_EQUAL(auth_acl_add(s, &a3), 0);
    CU_ASSERT_EQUAL(auth_acl_add(s, &a3), VERITY_EEXIST);
    char why[200];
    CU_ASSERT_TRUE(auth_allowed(s, "acme", "reader", AUTH_RES_TOPIC, "orders", AUTH_OP_CONSUME, why, sizeof why));
    CU_ASSERT_TRUE(auth_allowed(s, "acme", "reader", AUTH_RES_TOPIC, "orders-eu", AUTH_OP_CONSUME, NULL, 0));
    CU_ASSERT_FALSE(auth_allowed(s, "acme", "reader", AUTH_RES_TOPIC, "orders-secret", AUTH_OP_CONSUME, why, sizeof why));
    CU_ASSERT_PTR_NOT_NULL(strstr(why, "may not consume"));
    CU_ASSERT_FALSE(auth_allowed(s, "acme", "reader", AUTH_RES_TOPIC, "orders", AUTH_OP_PRODUCE, NULL, 0));
    CU_ASSERT_FALSE(auth_allowed(s, "acme", "reader", AUTH_RES_TOPIC, "order", AUTH_OP_CONSUME, NULL, 0));
    CU_ASSERT_FALSE(auth_allowed(s, "beta", "reader", AUTH_RES_TOPIC, "orders", AUTH_OP_CONSUME, NULL, 0));
    CU_ASSERT_FALSE(auth_allowed(s, "acme", "writer", AUTH_RES_TOPIC, "orders", AUTH_OP_CONSUME, NULL, 0));
    CU_ASSERT_FALSE(auth_allowed(s, "acme", "reader", AUTH_RES_GROUP, "orders", AUTH_OP_CONSUME, NULL, 0));
    CU_ASSERT_TRUE(auth_allowed(s, "acme", "anyone", AUTH_RES_GROUP, "g1", AUTH_OP_GROUP, NULL, 0));
    CU_ASSERT_FALSE(auth_allowed(s, "acme", "anyone", AUTH_RES_GROUP, "g10", AUTH_OP_GROUP, NULL, 0));
    /* every op asked must be granted */
    CU_ASSERT_FALSE(auth_allowed(s, "acme", "reader", AUTH_RES_TOPIC, "orders", AUTH_OP_CONSUME | AUTH_OP_ADMIN, NULL, 0));
    CU_ASSERT_TRUE(auth_allowed_any(s, "acme", "reader", AUTH_RES_TOPIC, "orders", AUTH_OP_CONSUME | AUTH_OP_ADMIN));
    /* removing the allow: denied again */
    CU_ASSERT_EQUAL(auth_acl_remove(s, &a1), 0);
    CU_ASSERT_FALSE(auth_allowed(s, "acme", "reader", AUTH_RES_TOPIC, "orders", AUTH_OP_CONSUME, NULL, 0));
    CU_ASSERT_EQUAL(auth_acl_remove(s, &a1), VERITY_ENOTFOUND);
    enum auth_res r;
    char pat[AUTH_PATTERN_MAX + 1];
    CU_ASSERT_EQUAL(auth_resource_parse("topic:a*b", &r, pat, sizeof pat), VERITY_EINVAL);
    CU_ASSERT_EQUAL(auth_resource_parse("topic:t~x", &r, pat, sizeof pat), VERITY_EINVAL);
    CU_ASSERT_EQUAL(auth_resource_parse("queue:x", &r, pat, sizeof pat), VERITY_EINVAL);
    CU_ASSERT_EQUAL(auth_resource_parse("group:*", &r, pat, sizeof pat), 0);
    auth_store_free(s);
}

static void test_quota_exact_entry_before_tenant_wide(void)
{
    struct auth_store *s = auth_store_new();
    struct auth_quota q = {.tenant = "acme", .principal = "*", .produce_bytes_per_s = 100};
    CU_ASSERT_EQUAL(auth_quota_set(s, &q), 0);
    struct auth_quota q2 = {.tenant = "acme", .principal = "svc", .produce_bytes_per_s = 7};
    CU_ASSERT_EQUAL(auth_quota_set(s, &q2), 0);
    CU_ASSERT_EQUAL(auth_quota_find(s, "acme", "svc")->produce_bytes_per_s, 7);
    CU_ASSERT_EQUAL(auth_quota_find(s, "acme", "other")->produce_bytes_per_s, 100);
    CU_ASSERT_PTR_NULL(auth_quota_find(s, "beta", "svc"));
    auth_store_free(s);
}

/* issue 14: "+" is the tenant as a whole: found only by itself, never
 * through "*"; storage_bytes only on it; the new fields survive a file. */
static void test_quota_tenant_total_and_new_fields(void)
{
    struct auth_store *s = auth_store_new();
    struct auth_quota any = {.tenant = "acme", .principal = "*", .requests_per_s = 5};
    CU_ASSERT_EQUAL(auth_quota_set(s, &any), 0);
    CU_ASSERT_PTR_NULL(auth_quota_find(s, "acme", AUTH_TENANT_TOTAL));
    struct auth_quota tot = {.tenant = "acme", .principal = AUTH_TENANT_TOTAL, .connections = 3,
                             .storage_bytes = 1000, .requests_per_s = 50};
    CU_ASSERT_EQUAL(auth_quota_set(s, &tot), 0);
    CU_ASSERT_EQUAL(auth_quota_find(s, "acme", AUTH_TENANT_TOTAL)->storage_bytes, 1000);
    CU_ASSERT_EQUAL(auth_quota_find(s, "acme", "svc")->requests_per_s, 5);
    struct auth_quota bad = {.tenant = "acme", .principal = "svc", .storage_bytes = 1};
    CU_ASSERT_EQUAL(auth_quota_set(s, &bad), VERITY_EINVAL);
    struct auth_acl a = acl("acme", "ops", "cluster:metrics", AUTH_OP_DESCRIBE, false);
    CU_ASSERT_EQUAL(a.res, AUTH_RES_CLUSTER);
    CU_ASSERT_EQUAL(auth_acl_add(s, &a), 0);
    CU_ASSERT_TRUE(auth_allowed(s, "acme", "ops", AUTH_RES_CLUSTER, "metrics", AUTH_OP_DESCRIBE,
                                NULL, 0));
    CU_ASSERT_FALSE(auth_allowed(s, "acme", "ops", AUTH_RES_TOPIC, "metrics", AUTH_OP_DESCRIBE,
                                 NULL, 0));
    CU_ASSERT_FALSE(auth_allowed(s, "acme", "ops", AUTH_RES_CLUSTER, "trace", AUTH_OP_DESCRIBE,
                                 NULL, 0));
    char path[] = "/tmp/verity-auth-XXXXXX";
    int fd = mkstemp(path);
    CU_ASSERT_FATAL(fd >= 0);
    close(fd);
    CU_ASSERT_EQUAL(auth_store_save(s, path), 0);
    struct auth_store *t = NULL;
    char why[200];
    CU_ASSERT_EQUAL_FATAL(auth_store_load(path, false, &t, why, sizeof why), 0);
    const struct auth_quota *q = auth_quota_find(t, "acme", AUTH_TENANT_TOTAL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(q);
    CU_ASSERT_EQUAL(q->connections, 3);
    CU_ASSERT_EQUAL(q->storage_bytes, 1000);
    CU_ASSERT_EQUAL(q->requests_per_s, 50);
    CU_ASSERT_EQUAL(t->n_acls, 1);
    CU_ASSERT_EQUAL(t->acls[0].res, AUTH_RES_CLUSTER);
    auth_store_free(t);
    unlink(path);
    static const char *const bad_files[] = {
        "{\"version\": 1, \"quotas\": [{\"tenant\": \"a\", \"principal\": \"p\", "
        "\"storage_bytes\": 1}]}",
        "{\"version\": 1, \"quotas\": [{\"tenant\": \"a\", \"principal\": \"+\", "
        "\"connections\": -1}]}",
        "{\"version\": 1, \"acls\": [{\"tenant\": \"a\", \"principal\": \"p\", \"resource\": "
        "\"cluster:a~b\", \"ops\": [\"describe\"], \"effect\": \"allow\"}]}",
    };
    for (size_t i = 0; i < sizeof bad_files / sizeof bad_files[0]; i++) {
        CU_ASSERT_NOT_EQUAL(auth_store_parse(bad_files[i], strlen(bad_files[i]), &t, why, sizeof why), 0);
        CU_ASSERT_PTR_NULL(t);
    }
    auth_store_free(s);
}

static void test_file_round_trip(void)
{
    char path[] = "/tmp/verity-auth-XXXXXX";
    int fd = mkstemp(path);
    CU_ASSERT_FATAL(fd >= 0);
    close(fd);
    struct auth_store *s = auth_store_new();
    char key[AUTH_KEY_TEXT_MAX];
    CU_ASSERT_EQUAL(auth_key_create(s, "acme", "svc-a", 42, key), 0);
    struct auth_acl a = acl("acme", "svc-a", "topic:x*", AUTH_OP_PRODUCE | AUTH_OP_DESCRIBE, true);
    CU_ASSERT_EQUAL(auth_acl_add(s, &a), 0);
    struct auth_cert c = {.subject = "verity-client", .tenant = "acme", .principal = "svc-a"};
    CU_ASSERT_EQUAL(auth_cert_add(s, &c), 0);
    struct auth_quota q = {.tenant = "acme", .principal = "svc-a", .fetch_bytes_per_s = 9};
    CU_ASSERT_EQUAL(auth_quota_set(s, &q), 0);
    CU_ASSERT_EQUAL(auth_store_save(s, path), 0);
    struct auth_store *t = NULL;
    char why[200];
    CU_ASSERT_EQUAL_FATAL(auth_store_load(path, false, &t, why, sizeof why), 0);
    const struct auth_key *k = NULL;
    CU_ASSERT_EQUAL(auth_key_verify(t, key, &k), 0);
    CU_ASSERT_EQUAL(t->n_acls, 1);
    CU_ASSERT_TRUE(t->acls[0].deny);
    CU_ASSERT_EQUAL(t->acls[0].ops, AUTH_OP_PRODUCE | AUTH_OP_DESCRIBE);
    CU_ASSERT_STRING_EQUAL(t->acls[0].pattern, "x*");
    CU_ASSERT_PTR_NOT_NULL(auth_cert_find(t, "verity-client"));
    CU_ASSERT_EQUAL(auth_quota_find(t, "acme", "svc-a")->fetch_bytes_per_s, 9);
    auth_store_free(s);
    auth_store_free(t);
    unlink(path);
    CU_ASSERT_EQUAL(auth_store_load(path, false, &t, why, sizeof why), -ENOENT);
    CU_ASSERT_EQUAL(auth_store_load(path, true, &t, why, sizeof why), 0);
    CU_ASSERT_EQUAL(t->n_keys, 0);
    auth_store_free(t);
}

static void test_malformed_files_refused_whole(void)
{
    static const char *const bad[] = {
        "",
        "[]",
        "{\"version\": 2}",
        "{\"version\": 1, \"keys\": {}}",
        "{\"version\": 1, \"keys\": [{\"id\": \"zz\"}]}",
        "{\"version\": 1, \"keys\": [{\"id\": \"0123456789abcdef\", \"tenant\": \"a\", "
        "\"principal\": \"p\", \"salt\": \"00\", \"hash\": \"00\"}]}",
        "{\"version\": 1, \"acls\": [{\"tenant\": \"a\", \"principal\": \"p\", \"resource\": "
        "\"topic:x\", \"ops\": [\"fly\"], \"effect\": \"allow\"}]}",
        "{\"version\": 1, \"acls\": [{\"tenant\": \"a\", \"principal\": \"p\", \"resource\": "
        "\"topic:x\", \"ops\": [\"produce\"], \"effect\": \"maybe\"}]}",
        "{\"version\": 1, \"quotas\": [{\"tenant\": \"a\", \"principal\": \"p\", "
        "\"produce_bytes_per_s\": -1}]}",
        "{\"version\": 1, \"certs\": [{\"subject\": \"x\", \"tenant\": \"__t\", \"principal\": \"p\"}]}",
        "{\"version\": 1, \"version\": 1}",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct auth_store *s = NULL;
        char why[200] = "";
        int rc = auth_store_parse(bad[i], strlen(bad[i]), &s, why, sizeof why);
        CU_ASSERT_NOT_EQUAL(rc, 0);
        CU_ASSERT_PTR_NULL(s);
        CU_ASSERT(why[0] != '\0');
    }
    struct auth_store *s = NULL;
    const char *ok = "{\"version\": 1}";
    CU_ASSERT_EQUAL(auth_store_parse(ok, strlen(ok), &s, NULL, 0), 0);
    auth_store_free(s);
}

static void test_tenant_qualified_names(void)
{
    CU_ASSERT_TRUE(codec_topic_name_ok("acme~orders", false));
    CU_ASSERT_TRUE(codec_group_name_ok("acme~g1"));
    CU_ASSERT_FALSE(codec_topic_name_ok("acme~", false));
    CU_ASSERT_FALSE(codec_topic_name_ok("~orders", false));
    CU_ASSERT_FALSE(codec_topic_name_ok("a~b~c", false));
    CU_ASSERT_FALSE(codec_topic_name_ok("a.b~c", false));
    CU_ASSERT_FALSE(codec_topic_name_ok("acme~__x", false));
    CU_ASSERT_TRUE(codec_topic_name_ok("acme~__x", true));
    CU_ASSERT_FALSE(codec_tenant_name_ok("__sys"));
    CU_ASSERT_FALSE(codec_tenant_name_ok("abcdefghijklmnopqrstuvwxyz0123456"));
    CU_ASSERT_TRUE(codec_tenant_name_ok("abcdefghijklmnopqrstuvwxyz012345"));
}

static struct auth_role role(const char *t, const char *p, const char *r)
{
    struct auth_role x;
    memset(&x, 0, sizeof x);
    snprintf(x.tenant, sizeof x.tenant, "%s", t);
    snprintf(x.principal, sizeof x.principal, "%s", p);
    snprintf(x.role, sizeof x.role, "%s", r);
    return x;
}

static void test_roles_and_deny_across_principal_and_roles(void)
{
    struct auth_store *s = auth_store_new();
    struct auth_acl r_allow = acl("acme", "role:readers", "topic:orders*", AUTH_OP_CONSUME, false);
    struct auth_acl p_allow = acl("acme", "svc", "topic:audit", AUTH_OP_CONSUME, false);
    struct auth_acl r_deny = acl("acme", "role:frozen", "topic:audit", AUTH_OP_CONSUME, true);
    CU_ASSERT_EQUAL(auth_acl_add(s, &r_allow), 0);
    CU_ASSERT_EQUAL(auth_acl_add(s, &p_allow), 0);
    CU_ASSERT_EQUAL(auth_acl_add(s, &r_deny), 0);
    /* a role rule grants nothing to a principal without the role */
    CU_ASSERT_FALSE(auth_allowed(s, "acme", "svc", AUTH_RES_TOPIC, "orders", AUTH_OP_CONSUME, NULL, 0));
    struct auth_role g = role("acme", "svc", "readers");
    CU_ASSERT_EQUAL(auth_role_grant(s, &g), 0);
    CU_ASSERT_EQUAL(auth_role_grant(s, &g), VERITY_EEXIST);
    CU_ASSERT_TRUE(auth_allowed(s, "acme", "svc", AUTH_RES_TOPIC, "orders", AUTH_OP_CONSUME, NULL, 0));
    /* the role of the same name in another tenant does not count */
    CU_ASSERT_FALSE(auth_allowed(s, "beta", "svc", AUTH_RES_TOPIC, "orders", AUTH_OP_CONSUME, NULL, 0));
    struct auth_role g2 = role("beta", "svc", "readers");
    CU_ASSERT_EQUAL(auth_role_grant(s, &g2), 0);
    CU_ASSERT_FALSE(auth_allowed(s, "beta", "svc", AUTH_RES_TOPIC, "orders", AUTH_OP_CONSUME, NULL, 0));
    /* a role's deny wins over the principal's own allow */
    CU_ASSERT_TRUE(auth_allowed(s, "acme", "svc", AUTH_RES_TOPIC, "audit", AUTH_OP_CONSUME, NULL, 0));
    struct auth_role gf = role("acme", "svc", "frozen");
    CU_ASSERT_EQUAL(auth_role_grant(s, &gf), 0);
    CU_ASSERT_FALSE(auth_allowed(s, "acme", "svc", AUTH_RES_TOPIC, "audit", AUTH_OP_CONSUME, NULL, 0));
    CU_ASSERT_EQUAL(auth_role_revoke(s, &gf), 0);
    CU_ASSERT_EQUAL(auth_role_revoke(s, &gf), VERITY_ENOTFOUND);
    CU_ASSERT_TRUE(auth_allowed(s, "acme", "svc", AUTH_RES_TOPIC, "audit", AUTH_OP_CONSUME, NULL, 0));
    /* malformed role names */
    struct auth_role bad = role("acme", "svc", "a:b");
    CU_ASSERT_EQUAL(auth_role_grant(s, &bad), VERITY_EINVAL);
    struct auth_acl bad_acl = acl("acme", "role:", "topic:x", AUTH_OP_CONSUME, false);
    CU_ASSERT_EQUAL(auth_acl_add(s, &bad_acl), VERITY_EINVAL);
    /* roles survive the file format */
    char *text = auth_store_dump(s);
    struct auth_store *back = NULL;
    char why[200];
    CU_ASSERT_EQUAL_FATAL(auth_store_parse(text, strlen(text), &back, why, sizeof why), 0);
    CU_ASSERT_EQUAL(back->n_roles, s->n_roles);
    CU_ASSERT_TRUE(auth_allowed(back, "acme", "svc", AUTH_RES_TOPIC, "orders", AUTH_OP_CONSUME, NULL, 0));
    free(text);
    auth_store_free(back);
    auth_store_free(s);
}

static void test_merge_file_then_meta(void)
{
    struct auth_store *file = auth_store_new(), *meta = auth_store_new(), *m = NULL;
    char k1[AUTH_KEY_TEXT_MAX], k2[AUTH_KEY_TEXT_MAX];
    CU_ASSERT_EQUAL(auth_key_create(file, "ops", "admin", 1, k1), 0);
    CU_ASSERT_EQUAL(auth_key_create(meta, "acme", "svc", 2, k2), 0);
    struct auth_acl fdeny = acl("acme", "svc", "topic:frozen", AUTH_OP_CONSUME, true);
    struct auth_acl mallow = acl("acme", "svc", "topic:*", AUTH_OP_CONSUME, false);
    CU_ASSERT_EQUAL(auth_acl_add(file, &fdeny), 0);
    CU_ASSERT_EQUAL(auth_acl_add(meta, &mallow), 0);
    struct auth_quota qf = {.tenant = "acme", .principal = "svc", .requests_per_s = 5};
    struct auth_quota qm = {.tenant = "acme", .principal = "svc", .requests_per_s = 50};
    CU_ASSERT_EQUAL(auth_quota_set(file, &qf), 0);
    CU_ASSERT_EQUAL(auth_quota_set(meta, &qm), 0);
    struct auth_cert cf = {.subject = "cn1", .tenant = "acme", .principal = "a"};
    struct auth_cert cm = {.subject = "cn1", .tenant = "acme", .principal = "b"};
    CU_ASSERT_EQUAL(auth_cert_add(file, &cf), 0);
    CU_ASSERT_EQUAL(auth_cert_add(meta, &cm), 0);
    CU_ASSERT_EQUAL_FATAL(auth_store_merge(file, meta, &m), 0);
    const struct auth_key *k;
    CU_ASSERT_EQUAL(auth_key_verify(m, k1, &k), 0);
    CU_ASSERT_EQUAL(auth_key_verify(m, k2, &k), 0);
    CU_ASSERT_TRUE(auth_allowed(m, "acme", "svc", AUTH_RES_TOPIC, "orders", AUTH_OP_CONSUME, NULL, 0));
    CU_ASSERT_FALSE(auth_allowed(m, "acme", "svc", AUTH_RES_TOPIC, "frozen", AUTH_OP_CONSUME, NULL, 0));
    CU_ASSERT_EQUAL(auth_quota_find(m, "acme", "svc")->requests_per_s, 50u); /* meta replaces */
    CU_ASSERT_STRING_EQUAL(auth_cert_find(m, "cn1")->principal, "a");       /* file stays */
    auth_store_free(m);
    auth_store_free(file);
    auth_store_free(meta);
}

static void test_change_parse_apply_dump(void)
{
    struct auth_change c;
    char why[200];
    const char *req = "{\"op\":\"acl_add\",\"tenant\":\"acme\",\"principal\":\"role:r1\","
                      "\"resource\":\"topic:o*\",\"ops\":\"consume,describe\",\"effect\":\"deny\"}";
    CU_ASSERT_EQUAL_FATAL(auth_change_parse(req, strlen(req), false, &c, why, sizeof why), 0);
    CU_ASSERT_EQUAL(c.op, AUTH_CH_ACL_ADD);
    CU_ASSERT_TRUE(c.acl.deny);
    CU_ASSERT_EQUAL(c.acl.ops, AUTH_OP_CONSUME | AUTH_OP_DESCRIBE);
    char *text = auth_change_dump(&c);
    struct auth_change d;
    CU_ASSERT_EQUAL(auth_change_parse(text, strlen(text), true, &d, why, sizeof why), 0);
    CU_ASSERT_EQUAL(memcmp(&c.acl, &d.acl, sizeof c.acl), 0);
    free(text);
    struct auth_store *s = auth_store_new();
    CU_ASSERT_EQUAL(auth_change_apply(s, &c), 0);
    CU_ASSERT_EQUAL(auth_change_apply(s, &c), VERITY_EEXIST);
    c.op = AUTH_CH_ACL_REMOVE;
    CU_ASSERT_EQUAL(auth_change_apply(s, &c), 0);
    CU_ASSERT_EQUAL(auth_change_apply(s, &c), VERITY_ENOTFOUND);
    /* a request may not bring its own hash; a log record holds no key_create */
    const char *add = "{\"op\":\"key_add\",\"id\":\"0123456789abcdef\",\"tenant\":\"a\","
                      "\"principal\":\"p\",\"salt\":\"00112233445566778899aabbccddeeff\","
                      "\"hash\":\"00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\"}";
    CU_ASSERT_EQUAL(auth_change_parse(add, strlen(add), false, &c, why, sizeof why), VERITY_EINVAL);
    CU_ASSERT_EQUAL(auth_change_parse(add, strlen(add), true, &c, why, sizeof why), 0);
    const char *create = "{\"op\":\"key_create\",\"tenant\":\"a\",\"principal\":\"p\"}";
    CU_ASSERT_EQUAL(auth_change_parse(create, strlen(create), true, &c, why, sizeof why), VERITY_EINVAL);
    CU_ASSERT_EQUAL(auth_change_parse(create, strlen(create), false, &c, why, sizeof why), 0);
    CU_ASSERT_EQUAL(auth_change_apply(s, &c), VERITY_EINVAL);
    /* malformed: refused with a reason */
    static const char *const bad[] = {
        "{\"op\":\"acl_add\",\"tenant\":\"a~b\",\"principal\":\"p\",\"resource\":\"topic:x\",\"ops\":\"all\"}",
        "{\"op\":\"acl_add\",\"tenant\":\"a\",\"principal\":\"p\",\"resource\":\"queue:x\",\"ops\":\"all\"}",
        "{\"op\":\"acl_add\",\"tenant\":\"a\",\"principal\":\"p\",\"resource\":\"topic:x\",\"ops\":\"fly\"}",
        "{\"op\":\"quota_set\",\"tenant\":\"a\",\"principal\":\"p\",\"storage_bytes\":5}",
        "{\"op\":\"quota_set\",\"tenant\":\"a\",\"principal\":\"p\",\"connections\":-1}",
        "{\"op\":\"role_grant\",\"tenant\":\"a\",\"principal\":\"p\",\"role\":\"\"}",
        "{\"op\":\"key_revoke\",\"id\":\"xyz\"}",
        "{\"op\":\"nope\"}",
        "[1]",
        "{\"op\":\"key_revoke\",\"id\":\"0123456789abcdef\",\"id\":\"0123456789abcdee\"}",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        why[0] = '\0';
        CU_ASSERT_EQUAL(auth_change_parse(bad[i], strlen(bad[i]), false, &c, why, sizeof why),
                        VERITY_EINVAL);
        CU_ASSERT_NOT_EQUAL(why[0], '\0');
    }
    auth_store_free(s);
}

int main(void)
{
    static const struct {
        const char *name;
        void (*fn)(void);
    } tests[] = {
        {"key_verifies_and_wrong_secret_does_not", test_key_verifies_and_wrong_secret_does_not},
        {"acl_default_deny_allow_prefix_and_deny_wins",
         test_acl_default_deny_allow_prefix_and_deny_wins},
        {"quota_exact_entry_before_tenant_wide", test_quota_exact_entry_before_tenant_wide},
        {"quota_tenant_total_and_new_fields", test_quota_tenant_total_and_new_fields},
        {"file_round_trip", test_file_round_trip},
        {"malformed_files_refused_whole", test_malformed_files_refused_whole},
        {"tenant_qualified_names", test_tenant_qualified_names},
        {"roles_and_deny_across_principal_and_roles", test_roles_and_deny_across_principal_and_roles},
        {"merge_file_then_meta", test_merge_file_then_meta},
        {"change_parse_apply_dump", test_change_parse_apply_dump},
    };
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    CU_pSuite s = CU_add_suite("auth_store", NULL, NULL);
    if (s == NULL)
        goto fail;
    for (size_t i = 0; i < sizeof(tests) / sizeof(tests[0]); i++)
        if (CU_add_test(s, tests[i].name, tests[i].fn) == NULL)
            goto fail;
    CU_basic_set_mode(CU_BRM_VERBOSE);
    if (CU_basic_run_tests() != CUE_SUCCESS)
        goto fail;
    unsigned failed = CU_get_number_of_failures() + CU_get_number_of_suites_failed();
    CU_cleanup_registry();
    return failed ? 1 : 0;
fail:
    CU_cleanup_registry();
    return 1;
}
