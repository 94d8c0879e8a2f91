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
