/*
 * The sharing gateway's pure parts (consumer/share): PASETO v4.public with
 * the official test vectors and PAE examples, every transformation and its
 * commitment, the rule parsers, profiles, the spec's round trip and scope
 * digest, and export files: an untouched one verifies; a changed byte, a
 * dropped or reordered record, a changed manifest and a forged signature do
 * not; a revealed original checks against its commitment, a wrong one not.
 */
#include <CUnit/Basic.h>
#include <CUnit/CUnit.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "consumer/share/share.h"
#include "tests/support/tutil.h"

/* ---- PASETO ------------------------------------------------------------------------ */

/* paseto-standard test vectors v4.json: 4-S-1, 4-S-2, 4-S-3 */
static const char *V4_SK_SEED = "b4cbfb43df4ce210727d953e4a713307fa19bb7d9f85041438d9e11b942a3774";
static const char *V4_PK = "1eb9dbbbbc047c03fd70604e0071f0987e16b28b757225c11f00415d0e20b1a2";
static const char *V4_MSG = "{\"data\":\"this is a signed message\",\"exp\":\"2022-01-01T00:00:00+00:00\"}";
static const char *V4_FOOTER = "{\"kid\":\"zVhMiPBP9fRf2snEcT7gFTioeA9COcNy9DfgL1W60haN\"}";
static const struct {
    const char *name, *footer, *implicit, *token;
} V4[] = {
    {"4-S-1", "", "",
     "v4.public.eyJkYXRhIjoidGhpcyBpcyBhIHNpZ25lZCBtZXNzYWdlIiwiZXhwIjoiMjAyMi0wMS0wMVQwMDowMDowMCswMDowMCJ9bg_XBBzds8lTZShVlwwKSgeKpLT3yukTw6JUz3W4h_ExsQV-P0V54zemZDcAxFaSeef1QlXEFtkqxT1ciiQEDA"},
    {"4-S-2", "FOOTER", "",
     "v4.public.eyJkYXRhIjoidGhpcyBpcyBhIHNpZ25lZCBtZXNzYWdlIiwiZXhwIjoiMjAyMi0wMS0wMVQwMDowMDowMCswMDowMCJ9v3Jt8mx_TdM2ceTGoqwrh4yDFn0XsHvvV_D0DtwQxVrJEBMl0F2caAdgnpKlt4p7xBnx1HcO-SPo8FPp214HDw.eyJraWQiOiJ6VmhNaVBCUDlmUmYyc25FY1Q3Z0ZUaW9lQTlDT2NOeTlEZmdMMVc2MGhhTiJ9"},
    {"4-S-3", "FOOTER", "{\"test-vector\":\"4-S-3\"}",
     "v4.public.eyJkYXRhIjoidGhpcyBpcyBhIHNpZ25lZCBtZXNzYWdlIiwiZXhwIjoiMjAyMi0wMS0wMVQwMDowMDowMCswMDowMCJ9NPWciuD3d0o5eXJXG5pJy-DiVEoyPYWs1YSTwWHNJq6DZD3je5gf-0M4JR9ipdUSJbIovzmBECeaWmaqcaP0DQ.eyJraWQiOiJ6VmhNaVBCUDlmUmYyc25FY1Q3Z0ZUaW9lQTlDT2NOeTlEZmdMMVc2MGhhTiJ9"},
};

static EVP_PKEY *v4_sk(void)
{
    uint8_t seed[32];
    CU_ASSERT_FATAL(sh_unhex(V4_SK_SEED, seed, 32) == 0);
    return EVP_PKEY_new_raw_private_key(EVP_PKEY_ED25519, NULL, seed, 32);
}

static EVP_PKEY *v4_pk(void)
{
    uint8_t pk[32];
    CU_ASSERT_FATAL(sh_unhex(V4_PK, pk, 32) == 0);
    return EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, NULL, pk, 32);
}

static void test_paseto_pae_spec_examples(void)
{
    uint8_t *out;
    size_t n;
    CU_ASSERT_EQUAL_FATAL(paseto_pae(NULL, NULL, 0, &out, &n), 0);
    CU_ASSERT_EQUAL(n, 8);
    CU_ASSERT(memcmp(out, "\0\0\0\0\0\0\0\0", 8) == 0);
    free(out);
    const uint8_t *p1[1] = {(const uint8_t *)""};
    size_t l1[1] = {0};
    CU_ASSERT_EQUAL_FATAL(paseto_pae(p1, l1, 1, &out, &n), 0);
    CU_ASSERT_EQUAL(n, 16);
    CU_ASSERT(memcmp(out, "\x01\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0", 16) == 0);
    free(out);
    const uint8_t *p2[1] = {(const uint8_t *)"test"};
    size_t l2[1] = {4};
    CU_ASSERT_EQUAL_FATAL(paseto_pae(p2, l2, 1, &out, &n), 0);
    CU_ASSERT_EQUAL(n, 20);
    CU_ASSERT(memcmp(out, "\x01\0\0\0\0\0\0\0\x04\0\0\0\0\0\0\0test", 20) == 0);
    free(out);
}

static void test_paseto_v4_public_official_vectors(void)
{
    EVP_PKEY *sk = v4_sk(), *pk = v4_pk();
    for (size_t i = 0; i < sizeof V4 / sizeof V4[0]; i++) {
        const char *footer = strcmp(V4[i].footer, "FOOTER") == 0 ? V4_FOOTER : NULL;
        char *tok = NULL;
        CU_ASSERT_EQUAL_FATAL(paseto_v4_sign(sk, (const uint8_t *)V4_MSG, strlen(V4_MSG), footer,
                                             V4[i].implicit, &tok),
                              0);
        /* Ed25519 is deterministic: the token must be the vector, byte for byte */
        CU_ASSERT_STRING_EQUAL(tok, V4[i].token);
        free(tok);
        uint8_t *m;
        size_t ml;
        char *f;
        CU_ASSERT_EQUAL_FATAL(paseto_v4_verify(pk, V4[i].token, V4[i].implicit, &m, &ml, &f), 0);
        CU_ASSERT_EQUAL(ml, strlen(V4_MSG));
        CU_ASSERT(memcmp(m, V4_MSG, ml) == 0);
        CU_ASSERT_STRING_EQUAL(f, footer ? footer : "");
        free(m);
        free(f);
        /* a wrong implicit assertion fails */
        CU_ASSERT_EQUAL(paseto_v4_verify(pk, V4[i].token, "other", &m, &ml, &f), VERITY_ESIGNATURE);
    }
    EVP_PKEY_free(sk);
    EVP_PKEY_free(pk);
}

static void test_paseto_rejects_tampered_foreign_and_malformed(void)
{
    EVP_PKEY *pk = v4_pk();
    uint8_t *m;
    size_t ml;
    char *f;
    char tok[512];
    snprintf(tok, sizeof tok, "%s", V4[0].token);
    tok[20] = tok[20] == 'A' ? 'B' : 'A'; /* payload byte */
    CU_ASSERT_EQUAL(paseto_v4_verify(pk, tok, "", &m, &ml, &f), VERITY_ESIGNATURE);
    /* signed by another key */
    EVP_PKEY *other = NULL;
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_id(EVP_PKEY_ED25519, NULL);
    CU_ASSERT_FATAL(EVP_PKEY_keygen_init(ctx) == 1 && EVP_PKEY_keygen(ctx, &other) == 1);
    EVP_PKEY_CTX_free(ctx);
    char *t2;
    CU_ASSERT_EQUAL_FATAL(paseto_v4_sign(other, (const uint8_t *)V4_MSG, strlen(V4_MSG), NULL, "", &t2), 0);
    CU_ASSERT_EQUAL(paseto_v4_verify(pk, t2, "", &m, &ml, &f), VERITY_ESIGNATURE);
    free(t2);
    const char *bad[] = {"", "v4.public.", "v4.local.AAAA", "v3.public.AAAA", "v4.public.AA=",
                         "v4.public.AAAA", "v4.public.!!!!", "v4.public.AAAA.", "v4.public.A.B.C"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        CU_ASSERT_EQUAL(paseto_v4_verify(pk, bad[i], "", &m, &ml, &f), VERITY_EINVAL);
    EVP_PKEY_free(other);
    EVP_PKEY_free(pk);
}

/* ---- transformations ---------------------------------------------------------------- */

static uint8_t SECRET[32] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10};

static void spec_with(struct share_spec *s, const char *id, const char *const *rules, size_t n)
{
    json_t *fields = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(fields, json_string(rules[i]));
    json_t *j = json_pack("{s:s, s:[s], s:[], s:o, s:I, s:I, s:{s:s}}", "id", id, "topics",
                          "visits", "filter", "fields", fields, "created_ms", (json_int_t)1,
                          "expires_ms", (json_int_t)4102444800000LL, "recipient", "name", "Acme");
    char err[256] = "";
    int rc = share_spec_from_json(j, s, err, sizeof err);
    if (rc)
        fprintf(stderr, "spec: %s\n", err);
    CU_ASSERT_EQUAL_FATAL(rc, 0);
    json_decref(j);
}

static const char *ID_A = "0123456789abcdef0123456789abcdef";
static const char *ID_B = "fedcba9876543210fedcba9876543210";

static json_t *apply1(const struct share_spec *s, const char *doc_text, const char *pos,
                      json_t **commits_out)
{
    struct xf_keys k;
    CU_ASSERT_FATAL(xf_keys_derive(SECRET, s->id, &k) == 0);
    json_t *doc = json_loads(doc_text, 0, NULL), *commits = json_object();
    CU_ASSERT_FATAL(doc != NULL);
    char err[128];
    CU_ASSERT_EQUAL(xf_apply(s, &k, "exp1", pos, doc, commits, err, sizeof err), 0);
    if (commits_out)
        *commits_out = commits;
    else
        json_decref(commits);
    return doc;
}

static const char *str_at(const json_t *doc, const char *ptr)
{
    return json_string_value(jp_get(doc, ptr));
}

static void test_xf_keep_drop_replace(void)
{
    struct share_spec s;
    const char *r[] = {"/a=keep", "/b=drop", "/c=replace:\"REDACTED\"", "/d/e=replace:42"};
    spec_with(&s, ID_A, r, 4);
    json_t *commits;
    json_t *d = apply1(&s, "{\"a\":\"x\",\"b\":\"secret\",\"c\":\"y\",\"d\":{\"e\":1,\"f\":2}}",
                       "visits/0/1", &commits);
    CU_ASSERT_STRING_EQUAL(str_at(d, "/a"), "x");
    CU_ASSERT_PTR_NULL(jp_get(d, "/b"));
    CU_ASSERT_STRING_EQUAL(str_at(d, "/c"), "REDACTED");
    CU_ASSERT_EQUAL(json_integer_value(jp_get(d, "/d/e")), 42);
    /* kept: no commitment; everything else: one */
    CU_ASSERT_PTR_NULL(json_object_get(commits, "/a"));
    CU_ASSERT_PTR_NOT_NULL(json_object_get(commits, "/b"));
    CU_ASSERT_PTR_NOT_NULL(json_object_get(commits, "/c"));
    CU_ASSERT_PTR_NOT_NULL(json_object_get(commits, "/d/e"));
    json_decref(d);
    json_decref(commits);
    share_spec_deinit(&s);
}

static void test_xf_mask_first_and_last(void)
{
    struct share_spec s;
    const char *r[] = {"/card=mask:last:4", "/name=mask:first:2", "/num=mask:last:2"};
    spec_with(&s, ID_A, r, 3);
    json_t *d = apply1(&s, "{\"card\":\"4111111111111234\",\"name\":\"Zoë Smith\",\"num\":12345}",
                       "t/0/0", NULL);
    CU_ASSERT_STRING_EQUAL(str_at(d, "/card"), "************1234");
    CU_ASSERT_STRING_EQUAL(str_at(d, "/name"), "Zo*******");
    CU_ASSERT_STRING_EQUAL(str_at(d, "/num"), "***45");
    json_decref(d);
    share_spec_deinit(&s);
}

static void test_xf_hash_stable_within_share_different_across(void)
{
    struct share_spec a, b;
    const char *r[] = {"/pid=hash"};
    spec_with(&a, ID_A, r, 1);
    spec_with(&b, ID_B, r, 1);
    json_t *a1 = apply1(&a, "{\"pid\":\"p-17\"}", "visits/0/1", NULL);
    json_t *a2 = apply1(&a, "{\"pid\":\"p-17\"}", "visits/1/99", NULL);
    json_t *a3 = apply1(&a, "{\"pid\":\"p-18\"}", "visits/0/2", NULL);
    json_t *b1 = apply1(&b, "{\"pid\":\"p-17\"}", "visits/0/1", NULL);
    CU_ASSERT_STRING_EQUAL(str_at(a1, "/pid"), str_at(a2, "/pid"));
    CU_ASSERT_STRING_NOT_EQUAL(str_at(a1, "/pid"), str_at(a3, "/pid"));
    CU_ASSERT_STRING_NOT_EQUAL(str_at(a1, "/pid"), str_at(b1, "/pid"));
    CU_ASSERT(strncmp(str_at(a1, "/pid"), "h1:", 3) == 0);
    CU_ASSERT(strstr(str_at(a1, "/pid"), "p-17") == NULL);
    json_decref(a1), json_decref(a2), json_decref(a3), json_decref(b1);
    share_spec_deinit(&a);
    share_spec_deinit(&b);
}

static void test_xf_tokenize_deterministic_and_reversible_by_owner(void)
{
    struct share_spec s, o;
    const char *r[] = {"/acct=tokenize"};
    spec_with(&s, ID_A, r, 1);
    spec_with(&o, ID_B, r, 1);
    json_t *d1 = apply1(&s, "{\"acct\":\"DE44 5001 0517 5407 3249 31\"}", "t/0/1", NULL);
    json_t *d2 = apply1(&s, "{\"acct\":\"DE44 5001 0517 5407 3249 31\"}", "t/0/2", NULL);
    CU_ASSERT_STRING_EQUAL(str_at(d1, "/acct"), str_at(d2, "/acct"));
    struct xf_keys k, ko;
    CU_ASSERT_FATAL(xf_keys_derive(SECRET, ID_A, &k) == 0 && xf_keys_derive(SECRET, ID_B, &ko) == 0);
    json_t *back = NULL;
    CU_ASSERT_EQUAL_FATAL(xf_detokenize(&k, "/acct", str_at(d1, "/acct"), &back), 0);
    CU_ASSERT_STRING_EQUAL(json_string_value(back), "DE44 5001 0517 5407 3249 31");
    json_decref(back);
    /* another share's key cannot open it (SIV authenticates) */
    CU_ASSERT_NOT_EQUAL(xf_detokenize(&ko, "/acct", str_at(d1, "/acct"), &back), 0);
    json_decref(d1), json_decref(d2);
    share_spec_deinit(&s);
    share_spec_deinit(&o);
}

static void test_xf_generalise_dates_buckets_ranges(void)
{
    struct share_spec s;
    const char *r[] = {"/d1=generalise:day", "/d2=generalise:month", "/d3=generalise:year",
                       "/n=generalise:bucket:10", "/age=generalise:ranges:0-17=child,18-64=adult,65-=senior",
                       "/bad=generalise:month"};
    spec_with(&s, ID_A, r, 6);
    json_t *d = apply1(&s,
                       "{\"d1\":\"2026-03-14T10:22:00Z\",\"d2\":\"2026-03-14\",\"d3\":\"2026-03-14\","
                       "\"n\":47,\"age\":70,\"bad\":\"yesterday\"}",
                       "t/0/1", NULL);
    CU_ASSERT_STRING_EQUAL(str_at(d, "/d1"), "2026-03-14");
    CU_ASSERT_STRING_EQUAL(str_at(d, "/d2"), "2026-03");
    CU_ASSERT_STRING_EQUAL(str_at(d, "/d3"), "2026");
    CU_ASSERT_STRING_EQUAL(str_at(d, "/n"), "[40,50)");
    CU_ASSERT_STRING_EQUAL(str_at(d, "/age"), "senior");
    CU_ASSERT(json_is_null(jp_get(d, "/bad")));
    json_decref(d);
    share_spec_deinit(&s);
}

static int day_diff(const char *a, const char *b)
{
    int64_t x, y;
    char da[11], db[11];
    snprintf(da, sizeof da, "%s", a);
    snprintf(db, sizeof db, "%s", b);
    CU_ASSERT_FATAL(sh_time_parse(da, &x) == 0 && sh_time_parse(db, &y) == 0);
    return (int)((x - y) / 86400000);
}

static void test_xf_date_shift_same_per_entity(void)
{
    struct share_spec s;
    const char *r[] = {"/admit=date_shift:/pid:30", "/discharge=date_shift:/pid:30", "/pid=hash"};
    spec_with(&s, ID_A, r, 3);
    int shifts[20];
    bool some_differ = false;
    for (int i = 0; i < 20; i++) {
        char doc[200];
        snprintf(doc, sizeof doc,
                 "{\"pid\":\"p%d\",\"admit\":\"2026-01-10\",\"discharge\":\"2026-01-15T08:00:00Z\"}", i);
        json_t *d = apply1(&s, doc, "t/0/1", NULL);
        int s1 = day_diff(str_at(d, "/admit"), "2026-01-10");
        int s2 = day_diff(str_at(d, "/discharge"), "2026-01-15");
        CU_ASSERT_EQUAL(s1, s2); /* both fields of one entity move together */
        CU_ASSERT(s1 >= -30 && s1 <= 30);
        CU_ASSERT(strstr(str_at(d, "/discharge"), "T08:00:00Z") != NULL);
        shifts[i] = s1;
        if (i && shifts[i] != shifts[0])
            some_differ = true;
        json_decref(d);
    }
    CU_ASSERT(some_differ);
    /* the same entity in another record: the same shift */
    json_t *d = apply1(&s, "{\"pid\":\"p3\",\"admit\":\"2026-05-01\"}", "t/0/9", NULL);
    CU_ASSERT_EQUAL(day_diff(str_at(d, "/admit"), "2026-05-01"), shifts[3]);
    json_decref(d);
    share_spec_deinit(&s);
}

static EVP_PKEY *x25519_new(uint8_t pub[32])
{
    EVP_PKEY *k = NULL;
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_id(EVP_PKEY_X25519, NULL);
    CU_ASSERT_FATAL(EVP_PKEY_keygen_init(ctx) == 1 && EVP_PKEY_keygen(ctx, &k) == 1);
    EVP_PKEY_CTX_free(ctx);
    CU_ASSERT_FATAL(sh_raw_public(k, pub) == 0);
    return k;
}

static void test_xf_encrypt_decrypts_only_with_recipient_key_and_aad(void)
{
    uint8_t pub[32], pub2[32];
    EVP_PKEY *rk = x25519_new(pub), *other = x25519_new(pub2);
    struct share_spec s;
    const char *r[] = {"/ssn=encrypt"};
    json_t *fields = json_pack("[s]", r[0]);
    char kb[48];
    sh_b64url_enc(pub, 32, kb);
    json_t *j = json_pack("{s:s, s:[s], s:[], s:o, s:I, s:I, s:{s:s, s:s}}", "id", ID_A, "topics",
                          "visits", "filter", "fields", fields, "created_ms", (json_int_t)1,
                          "expires_ms", (json_int_t)4102444800000LL, "recipient", "name", "Acme",
                          "x25519", kb);
    CU_ASSERT_EQUAL_FATAL(share_spec_from_json(j, &s, NULL, 0), 0);
    json_decref(j);
    json_t *d = apply1(&s, "{\"ssn\":\"123-45-6789\"}", "visits/1/7", NULL);
    json_t *enc = jp_get(d, "/ssn"), *out = NULL;
    CU_ASSERT_FATAL(json_is_object(enc));
    CU_ASSERT_EQUAL_FATAL(xf_decrypt(rk, enc, "/ssn", "visits/1/7", &out), 0);
    CU_ASSERT_STRING_EQUAL(json_string_value(out), "123-45-6789");
    json_decref(out);
    /* the field path and record position are bound as associated data */
    CU_ASSERT_NOT_EQUAL(xf_decrypt(rk, enc, "/ssn", "visits/1/8", &out), 0);
    CU_ASSERT_NOT_EQUAL(xf_decrypt(rk, enc, "/other", "visits/1/7", &out), 0);
    CU_ASSERT_NOT_EQUAL(xf_decrypt(other, enc, "/ssn", "visits/1/7", &out), 0);
    /* an encrypt rule without a recipient key is refused at creation */
    struct share_spec bad;
    fields = json_pack("[s]", r[0]);
    j = json_pack("{s:s, s:[s], s:[], s:o, s:I, s:I, s:{s:s}}", "id", ID_A, "topics", "v",
                  "filter", "fields", fields, "created_ms", (json_int_t)1, "expires_ms",
                  (json_int_t)4102444800000LL, "recipient", "name", "Acme");
    CU_ASSERT_EQUAL(share_spec_from_json(j, &bad, NULL, 0), VERITY_EINVAL);
    json_decref(j);
    json_decref(d);
    share_spec_deinit(&s);
    EVP_PKEY_free(rk);
    EVP_PKEY_free(other);
}

static void test_xf_commitment_reveals_original_only(void)
{
    struct xf_keys k;
    CU_ASSERT_FATAL(xf_keys_derive(SECRET, ID_A, &k) == 0);
    uint8_t salt[16], salt2[16];
    char c1[44], c2[44], c3[44];
    json_t *v = json_string("Jane Doe"), *w = json_string("John Doe");
    CU_ASSERT(xf_salt(&k, "visits/0/1", "/name", salt) == 0);
    CU_ASSERT(xf_salt(&k, "visits/0/2", "/name", salt2) == 0);
    CU_ASSERT(memcmp(salt, salt2, 16) != 0); /* salted per record and field */
    CU_ASSERT(xf_commit(salt, v, c1) == 0 && xf_commit(salt, w, c2) == 0 &&
              xf_commit(salt2, v, c3) == 0);
    CU_ASSERT_STRING_NOT_EQUAL(c1, c2);
    CU_ASSERT_STRING_NOT_EQUAL(c1, c3);
    json_decref(v);
    json_decref(w);
}

/* ---- parsers -------------------------------------------------------------------------- */

static void test_rules_and_predicates_parse_or_refuse(void)
{
    const char *good[] = {"/a=keep", "/a~1b=drop", "/x/0=hash", "/d=date_shift:/p:7",
                          "/m=mask:first:0", "/g=generalize:year", "/r=replace:{\"k\":1}"};
    const char *bad[] = {"a=keep", "/a", "/a=", "/a=shred", "/a=keep:1", "/a=mask", "/a=mask:last:x",
                         "/a=generalise", "/a=generalise:week", "/a=generalise:bucket:0",
                         "/a=generalise:ranges:", "/a=generalise:ranges:5=x", "/a=date_shift:p:3",
                         "/a=date_shift:/p:0", "/a~2=keep", "/a=replace"};
    struct xf_field f;
    char err[256];
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        CU_ASSERT_EQUAL(xf_field_parse(good[i], &f, err, sizeof err), 0);
        xf_field_deinit(&f);
    }
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        err[0] = '\0';
        CU_ASSERT_EQUAL(xf_field_parse(bad[i], &f, err, sizeof err), VERITY_EINVAL);
        CU_ASSERT(err[0] != '\0');
    }
    struct share_pred p;
    json_t *doc = json_loads("{\"type\":\"visit\",\"amount\":120,\"tags\":[\"a\"]}", 0, NULL);
    struct {
        const char *text;
        bool match;
    } preds[] = {{"/type==\"visit\"", true}, {"/type==visit", true}, {"/type!=visit", false},
                 {"/amount>=120", true},     {"/amount>120", false},  {"/amount<1000", true},
                 {"/tags/0==a", true},       {"/missing exists", false}, {"/tags exists", true}};
    for (size_t i = 0; i < sizeof preds / sizeof preds[0]; i++) {
        CU_ASSERT_EQUAL_FATAL(share_pred_parse(preds[i].text, &p, err, sizeof err), 0);
        CU_ASSERT_EQUAL(share_pred_match(&p, doc), preds[i].match);
        share_pred_deinit(&p);
    }
    const char *badp[] = {"type==x", "/type", "/type==", "/type~3==x", "/a<[1]"};
    for (size_t i = 0; i < sizeof badp / sizeof badp[0]; i++)
        CU_ASSERT_EQUAL(share_pred_parse(badp[i], &p, err, sizeof err), VERITY_EINVAL);
    json_decref(doc);
}

static void test_profile_parse_and_dump(void)
{
    char *s = share_profile_dump("https://127.0.0.1:9743/v1", "v4.public.AAAA", 4102444800000LL);
    struct share_profile p;
    char err[256];
    CU_ASSERT_EQUAL_FATAL(share_profile_parse(s, strlen(s), &p, err, sizeof err), 0);
    CU_ASSERT_STRING_EQUAL(p.endpoint, "https://127.0.0.1:9743/v1");
    CU_ASSERT_EQUAL(p.expires_ms, 4102444800000LL);
    share_profile_deinit(&p);
    free(s);
    const char *bad[] = {"", "[]", "{\"shareCredentialsVersion\":2}",
                         "{\"shareCredentialsVersion\":1,\"endpoint\":\"http://x\",\"bearerToken\":\"v4.public.A\"}",
                         "{\"shareCredentialsVersion\":1,\"endpoint\":\"https://x\",\"bearerToken\":\"abc\"}",
                         "{\"shareCredentialsVersion\":1,\"endpoint\":\"https://x\",\"bearerToken\":\"v4.public.A\",\"expirationTime\":\"soon\"}"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        CU_ASSERT_EQUAL(share_profile_parse(bad[i], strlen(bad[i]), &p, err, sizeof err), VERITY_EINVAL);
}

static void test_spec_round_trip_keeps_scope_digest_and_token_binds_it(void)
{
    struct share_spec s, t;
    const char *r[] = {"/pid=hash", "/d=generalise:month", "/name=drop"};
    spec_with(&s, ID_A, r, 3);
    json_t *j = share_spec_to_json(&s);
    CU_ASSERT_EQUAL_FATAL(share_spec_from_json(j, &t, NULL, 0), 0);
    uint8_t d1[32], d2[32];
    CU_ASSERT(share_scope_digest(&s, d1) == 0 && share_scope_digest(&t, d2) == 0);
    CU_ASSERT(memcmp(d1, d2, 32) == 0);
    EVP_PKEY *sk = v4_sk(), *pk = v4_pk();
    char *tok;
    CU_ASSERT_EQUAL_FATAL(share_token_issue(sk, &s, &tok), 0);
    struct share_claims c;
    CU_ASSERT_EQUAL(share_token_check(pk, tok, &c), 0);
    CU_ASSERT_STRING_EQUAL(c.sid, ID_A);
    CU_ASSERT(memcmp(c.scope, d1, 32) == 0);
    free(tok);
    json_decref(j);
    share_spec_deinit(&s);
    share_spec_deinit(&t);
    EVP_PKEY_free(sk);
    EVP_PKEY_free(pk);
}

/* ---- export files ------------------------------------------------------------------------ */

static char *tmp;
static char path_ok[600];

/* When set, write_export writes record 1's line with mangle_from replaced
 * by mangle_to (and signs that). */
static const char *mangle_from, *mangle_to;

/* Writes a three-record export signed with the 4-S vector key. */
static void write_export(const char *path, EVP_PKEY *sk)
{
    struct share_spec s;
    const char *r[] = {"/pid=hash", "/name=drop", "/dx=keep"};
    spec_with(&s, ID_A, r, 3);
    struct xf_keys k;
    CU_ASSERT_FATAL(xf_keys_derive(SECRET, ID_A, &k) == 0);
    FILE *f = fopen(path, "wb");
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    EVP_DigestInit_ex(md, EVP_sha256(), NULL);
    char line[4096];
    int n = snprintf(line, sizeof line,
                     "{\"export\":\"e1\",\"share\":\"%s\",\"type\":\"export\",\"version\":1}\n", ID_A);
    fwrite(line, 1, (size_t)n, f);
    EVP_DigestUpdate(md, line, (size_t)n);
    for (int i = 0; i < 3; i++) {
        char doc[128], pos[64];
        snprintf(doc, sizeof doc, "{\"pid\":\"p%d\",\"name\":\"N%d\",\"dx\":\"flu\"}", i, i);
        snprintf(pos, sizeof pos, "visits/0/%d", 10 + i);
        json_t *commits, *d = apply1(&s, doc, pos, &commits);
        json_t *rec = json_pack("{s:s, s:i, s:s, s:s, s:i, s:i, s:i, s:O, s:O}", "type", "record",
                                "i", i, "pos", pos, "topic", "visits", "partition", 0, "offset",
                                10 + i, "ts", 1, "value", d, "commit", commits);
        char *t = json_dumps(rec, JSON_COMPACT | JSON_SORT_KEYS);
        n = snprintf(line, sizeof line, "%s\n", t);
        char *at = i == 1 && mangle_from ? strstr(line, mangle_from) : NULL;
        if (at) {
            char rest[4096];
            snprintf(rest, sizeof rest, "%s", at + strlen(mangle_from));
            n = (int)(at - line) + snprintf(at, sizeof line - (size_t)(at - line), "%s%s", mangle_to, rest);
        }
        CU_ASSERT_FATAL(!i || i != 1 || !mangle_from || at);
        fwrite(line, 1, (size_t)n, f);
        EVP_DigestUpdate(md, line, (size_t)n);
        free(t);
        json_decref(rec);
        json_decref(d);
        json_decref(commits);
    }
    uint8_t dg[32];
    unsigned dl;
    EVP_DigestFinal_ex(md, dg, &dl);
    EVP_MD_CTX_free(md);
    struct export_source src = {.topic = (char *)"visits", .partition = 0, .from = 10, .to = 13};
    char *m = export_manifest(sk, &s, "e1", 3, 4, 0, dg, &src, 1, 1000);
    CU_ASSERT_PTR_NOT_NULL_FATAL(m);
    fputs(m, f);
    free(m);
    fclose(f);
    share_spec_deinit(&s);
}

/* Rewrites path with line `a` and `b` swapped (b = -1: line a dropped). */
static void edit_lines(const char *in, const char *out, int a, int b)
{
    char *lines[16];
    size_t n = 0, cap = 0;
    FILE *f = fopen(in, "rb");
    char *l = NULL;
    ssize_t got;
    while ((got = getline(&l, &cap, f)) > 0 && n < 16) {
        lines[n++] = l;
        l = NULL;
        cap = 0;
    }
    free(l);
    fclose(f);
    f = fopen(out, "wb");
    for (size_t i = 0; i < n; i++) {
        size_t j = i;
        if (b >= 0 && i == (size_t)a)
            j = (size_t)b;
        else if (b >= 0 && i == (size_t)b)
            j = (size_t)a;
        else if (b < 0 && i == (size_t)a)
            continue;
        fputs(lines[j], f);
    }
    fclose(f);
    for (size_t i = 0; i < n; i++)
        free(lines[i]);
}

static int verify_file(const char *p, EVP_PKEY *pk, char *err, size_t cap)
{
    struct verify_report r;
    return export_verify(p, pk, NULL, NULL, false, &r, err, cap);
}

static void test_export_verify_accepts_untouched_rejects_tampering(void)
{
    EVP_PKEY *sk = v4_sk(), *pk = v4_pk();
    snprintf(path_ok, sizeof path_ok, "%s/ok.ndjson", tmp);
    write_export(path_ok, sk);
    char err[512], p[600];
    struct verify_report r;
    CU_ASSERT_EQUAL(export_verify(path_ok, pk, NULL, NULL, false, &r, err, sizeof err), 0);
    CU_ASSERT_EQUAL(r.records, 3);
    /* a changed byte in a record */
    snprintf(p, sizeof p, "%s/byte.ndjson", tmp);
    CU_ASSERT_EQUAL_FATAL(tu_copy_file(path_ok, p), 0);
    FILE *f = fopen(p, "r+b");
    char buf[4096];
    size_t n = fread(buf, 1, sizeof buf, f);
    char *flu = memmem(buf, n, "flu", 3);
    CU_ASSERT_FATAL(flu != NULL);
    fseek(f, flu - buf, SEEK_SET);
    fputc('F', f);
    fclose(f);
    CU_ASSERT_EQUAL(verify_file(p, pk, err, sizeof err), VERITY_ECORRUPT);
    /* a dropped record, two reordered records */
    snprintf(p, sizeof p, "%s/drop.ndjson", tmp);
    edit_lines(path_ok, p, 2, -1);
    CU_ASSERT_EQUAL(verify_file(p, pk, err, sizeof err), VERITY_ECORRUPT);
    snprintf(p, sizeof p, "%s/swap.ndjson", tmp);
    edit_lines(path_ok, p, 1, 2);
    CU_ASSERT_EQUAL(verify_file(p, pk, err, sizeof err), VERITY_ECORRUPT);
    /* the manifest dropped (truncated export) */
    snprintf(p, sizeof p, "%s/trunc.ndjson", tmp);
    edit_lines(path_ok, p, 4, -1);
    CU_ASSERT_EQUAL(verify_file(p, pk, err, sizeof err), VERITY_ECORRUPT);
    /* a changed manifest (record count), not re-signed */
    snprintf(p, sizeof p, "%s/manifest.ndjson", tmp);
    CU_ASSERT_EQUAL_FATAL(tu_copy_file(path_ok, p), 0);
    f = fopen(p, "r+b");
    n = fread(buf, 1, sizeof buf, f);
    char *rc = memmem(buf, n, "\"records\":3", 11);
    CU_ASSERT_FATAL(rc != NULL);
    fseek(f, rc - buf + 10, SEEK_SET);
    fputc('2', f);
    fclose(f);
    CU_ASSERT_EQUAL(verify_file(p, pk, err, sizeof err), VERITY_ESIGNATURE);
    /* a forged signature: the same manifest signed by another key */
    EVP_PKEY *other = NULL;
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_id(EVP_PKEY_ED25519, NULL);
    CU_ASSERT_FATAL(EVP_PKEY_keygen_init(ctx) == 1 && EVP_PKEY_keygen(ctx, &other) == 1);
    EVP_PKEY_CTX_free(ctx);
    snprintf(p, sizeof p, "%s/forged.ndjson", tmp);
    write_export(p, other);
    CU_ASSERT_EQUAL(verify_file(p, pk, err, sizeof err), VERITY_ESIGNATURE);
    /* ... and verifies with its own key: the check is the key, not the format */
    CU_ASSERT_EQUAL(verify_file(p, other, err, sizeof err), 0);
    EVP_PKEY_free(other);
    EVP_PKEY_free(sk);
    EVP_PKEY_free(pk);
}

/* Record lines spelled in ways the verifier's scanner declines (escapes,
 * strings for numbers, duplicates) get jansson's verdict: the same as
 * before the scanner, whether the line is acceptable or not. */
static void test_export_verify_same_verdict_for_unusual_spellings(void)
{
    EVP_PKEY *sk = v4_sk(), *pk = v4_pk();
    struct {
        const char *from, *to;
        int want;
    } c[] = {
        {"\"type\":\"record\"", "\"type\":\"rec\\u006frd\"", 0},
        {"\"topic\":\"visits\"", "\"topic\":\"vis\\u0069ts\"", 0},
        {"\"i\":1,", "\"i\" : 1 ,", 0},
        {"\"i\":1,", "\"i\":\"1\",", VERITY_ECORRUPT},
        {"\"i\":1,", "\"i\":1.0,", VERITY_ECORRUPT},
        {"\"i\":1,", "\"i\":01,", VERITY_ECORRUPT},
        {"\"i\":1,", "\"i\":1,\"i\":1,", VERITY_ECORRUPT},
        {"\"offset\":11", "\"offset\":\"11\"", VERITY_ECORRUPT},
        {"\"offset\":11", "\"offset\":99", VERITY_ECORRUPT},
        {"\"partition\":0", "\"partition\":1", VERITY_ECORRUPT},
        {"\"topic\":\"visits\"", "\"topic\":\"visit\"", VERITY_ECORRUPT},
    };
    char p[600], err[512];
    for (size_t i = 0; i < sizeof c / sizeof c[0]; i++) {
        snprintf(p, sizeof p, "%s/spell%zu.ndjson", tmp, i);
        mangle_from = c[i].from;
        mangle_to = c[i].to;
        write_export(p, sk);
        mangle_from = mangle_to = NULL;
        int rc = verify_file(p, pk, err, sizeof err);
        CU_ASSERT_EQUAL(rc, c[i].want);
        if (rc != c[i].want)
            fprintf(stderr, "\ncase %zu (%s): %d %s\n", i, c[i].to, rc, err);
    }
    EVP_PKEY_free(sk);
    EVP_PKEY_free(pk);
}

static void test_reveal_checks_against_commitment(void)
{
    struct xf_keys k;
    CU_ASSERT_FATAL(xf_keys_derive(SECRET, ID_A, &k) == 0);
    json_t *v = json_string("N1");
    json_t *rv = export_reveal(&k, "visits/0/11", "/name", v);
    char err[256];
    CU_ASSERT_EQUAL(export_check_reveal(path_ok, rv, err, sizeof err), 0);
    json_object_set_new(rv, "value", json_string("N2"));
    CU_ASSERT_EQUAL(export_check_reveal(path_ok, rv, err, sizeof err), VERITY_ESIGNATURE);
    json_decref(rv);
    rv = export_reveal(&k, "visits/0/99", "/name", v);
    CU_ASSERT_EQUAL(export_check_reveal(path_ok, rv, err, sizeof err), VERITY_ENOTFOUND);
    json_decref(rv);
    json_decref(v);
}

static void test_time_and_duration_parsing(void)
{
    int64_t ms;
    CU_ASSERT(sh_time_parse("2026-01-01T00:00:00Z", &ms) == 0 && ms == 1767225600000LL);
    CU_ASSERT(sh_time_parse("2026-01-01T01:00:00+01:00", &ms) == 0 && ms == 1767225600000LL);
    CU_ASSERT(sh_time_parse("2026-01-01", &ms) == 0 && ms == 1767225600000LL);
    CU_ASSERT(sh_time_parse("2026-02-31", &ms) != 0);
    CU_ASSERT(sh_time_parse("2026-01-01T00:00Z", &ms) != 0);
    CU_ASSERT(sh_duration_parse("7d", &ms) == 0 && ms == 7 * 86400000LL);
    CU_ASSERT(sh_duration_parse("7w", &ms) != 0);
    CU_ASSERT(sh_duration_parse("-1d", &ms) != 0);
}


/* RFC 4231 test cases 1, 2 and 3 (a key longer than a block is refused:
 * sh_hmac takes keys of at most 64 bytes), each twice (the second time the
 * padded-key states come from the per-thread cache), and with the cache
 * shared between keys. */
static void test_hmac_rfc4231_vectors(void)
{
    uint8_t k1[20], mac[32], k3[20];
    char hex[65];
    memset(k1, 0x0b, sizeof k1);
    memset(k3, 0xaa, sizeof k3);
    uint8_t d3[50];
    memset(d3, 0xdd, sizeof d3);
    for (int round = 0; round < 2; round++) {
        CU_ASSERT_FATAL(sh_hmac(k1, sizeof k1, "Hi There", 8, mac) == 0);
        sh_hex(mac, 32, hex);
        CU_ASSERT_STRING_EQUAL(hex, "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7");
        CU_ASSERT_FATAL(sh_hmac((const uint8_t *)"Jefe", 4, "what do ya want for nothing?", 28, mac) == 0);
        sh_hex(mac, 32, hex);
        CU_ASSERT_STRING_EQUAL(hex, "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
        CU_ASSERT_FATAL(sh_hmac(k3, sizeof k3, d3, sizeof d3, mac) == 0);
        sh_hex(mac, 32, hex);
        CU_ASSERT_STRING_EQUAL(hex, "773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe");
        /* more keys than the cache holds, then the first again */
        for (uint8_t i = 0; i < 6; i++) {
            uint8_t kk[32] = {i};
            CU_ASSERT_FATAL(sh_hmac(kk, sizeof kk, "x", 1, mac) == 0);
        }
        if (round == 1)
            sh_hmac_forget();
    }
    uint8_t big[65] = {0};
    CU_ASSERT_EQUAL(sh_hmac(big, sizeof big, "x", 1, mac), VERITY_EINVAL);
    /* SHA-256 of "abc" in two parts (FIPS 180-2) */
    const void *parts[2] = {"a", "bc"};
    size_t lens[2] = {1, 2};
    CU_ASSERT_FATAL(sh_sha256v(parts, lens, 2, mac) == 0);
    sh_hex(mac, 32, hex);
    CU_ASSERT_STRING_EQUAL(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

/* ---- record lines: the scanner path and the tree path ------------------------------ */

/* Both paths on one record: the same verdict and the same bytes whenever
 * the scanner does not decline. Returns the scanner's verdict. */
static int line_both(const struct xf_plan *pl, const struct share_spec *s, const char *rec,
                     int64_t ts, char *line, size_t cap)
{
    struct xf_keys k;
    CU_ASSERT_FATAL(xf_keys_derive(SECRET, s->id, &k) == 0);
    struct xf_rec r = {.topic = "visits", .partition = 2, .offset = 77, .ts_ms = ts,
                       .value = rec, .len = strlen(rec), .index = 9};
    struct sh_buf a = {0}, b = {0};
    char err[128];
    int fa = xf_line_fast(pl, s, &k, "exp1", &r, &a, err, sizeof err);
    int tb = xf_line_tree(pl, s, &k, "exp1", &r, &b, err, sizeof err);
    if (fa != XF_LINE_FALLBACK) {
        CU_ASSERT_EQUAL(fa, tb);
        CU_ASSERT_EQUAL(a.n, b.n);
        CU_ASSERT(a.n == b.n && (a.n == 0 || memcmp(a.p, b.p, a.n) == 0));
        if (a.n != b.n || (a.n && memcmp(a.p, b.p, a.n)))
            fprintf(stderr, "\nscanner: %.*s\ntree:    %.*s\n", (int)a.n, a.p, (int)b.n, b.p);
    }
    if (line)
        snprintf(line, cap, "%.*s", (int)b.n, b.n ? b.p : "");
    sh_buf_free(&a);
    sh_buf_free(&b);
    return fa == XF_LINE_FALLBACK ? (tb == XF_LINE_NOT_OBJECT ? -1000 - tb : 1000 + tb) : fa;
}

static void test_line_scanner_and_tree_give_the_same_bytes(void)
{
    struct share_spec s;
    const char *r[] = {"/patient_id=hash", "/card=mask:last:4", "/visit_date=generalise:month",
                       "/diagnosis=keep", "/name=drop", "/n=generalise:bucket:10", "/a~1b=keep",
                       "/obj=keep"};
    spec_with(&s, ID_A, r, 8);
    struct xf_plan pl;
    CU_ASSERT_FATAL(xf_plan_init(&pl, &s) == 0);
    CU_ASSERT(pl.fast);
    CU_ASSERT(!pl.mini);
    char line[4096];
    /* the bench's record: the scanner takes it, and the line is what it must be */
    const char *rec = "{\"patient_id\":\"p7\",\"card\":\"4111111111000007\",\"visit_date\":"
                      "\"2026-08-08T10:00:00Z\",\"diagnosis\":\"dx7\",\"name\":\"Patient 7\","
                      "\"type\":\"visit\"}";
    CU_ASSERT_EQUAL(line_both(&pl, &s, rec, 5, line, sizeof line), 0);
    json_t *j = json_loads(line, 0, NULL), *v = json_object_get(j, "value");
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(j, "pos")), "visits/2/77");
    CU_ASSERT_EQUAL(json_integer_value(json_object_get(j, "i")), 9);
    CU_ASSERT_EQUAL(json_object_size(v), 4);
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(v, "card")), "************0007");
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(v, "visit_date")), "2026-08");
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(v, "diagnosis")), "dx7");
    CU_ASSERT_EQUAL(json_object_size(json_object_get(j, "commit")), 4); /* name dropped, committed */
    json_decref(j);
    /* records the scanner takes, each compared byte for byte with the tree */
    const char *same[] = {
        "{}",
        " {\"n\" : 42.5 , \"obj\":{\"x\":[1,2,{\"y\":null}],\"z\":true}}\n",
        "{\"n\":-0,\"a/b\":\"slash key\",\"diagnosis\":1e2,\"card\":12345}",
        "{\"diagnosis\":\"caf\xc3\xa9 \xe2\x80\xa8 \x7f\",\"card\":\"Zo\xc3\xab Smith\"}",
        "{\"diagnosis\":\"\\u00e9\\n\\\"q\\\"\",\"card\":\"a\\tb\",\"patient_id\":\"\\ud83d\\ude00\"}",
        "{\"obj\":{\"k\":\"\\/\"},\"n\":1.0,\"visit_date\":\"not a date\",\"other\":[[],{}]}",
        "{\"patient_id\":[1,\"x\"],\"card\":null,\"name\":{\"first\":\"A\"},\"n\":123456789012345678}",
        "{\"n\":1.7976931348623157e308,\"diagnosis\":0.1}",
        "{\"diagnosis\":\"say \\\"hi\\\"\",\"card\":\"x\\\"y\\\"z\\\\1\"}",
    };
    for (size_t i = 0; i < sizeof same / sizeof same[0]; i++) {
        int rc = line_both(&pl, &s, same[i], 5, NULL, 0);
        CU_ASSERT_EQUAL(rc, 0);
        if (rc)
            fprintf(stderr, "\nrecord %zu: %d\n", i, rc);
    }
    /* declined by the scanner, decided by jansson: taken / not an object */
    CU_ASSERT_EQUAL(line_both(&pl, &s, "{\"di\\u0061gnosis\":\"x\"}", 5, line, sizeof line), 1000);
    CU_ASSERT_EQUAL(line_both(&pl, &s, "{\"n\":1234567890123456789}", 5, NULL, 0), 1000);
    CU_ASSERT_EQUAL(line_both(&pl, &s, "{\"a\":1,\"a\":2}", 5, NULL, 0), -1002);
    CU_ASSERT_EQUAL(line_both(&pl, &s, "{\"o\":{\"a\":1,\"a\":2}}", 5, NULL, 0), -1002);
    CU_ASSERT_EQUAL(line_both(&pl, &s, "{\"a\":\"\\u0000\"}", 5, NULL, 0), -1002);
    CU_ASSERT_EQUAL(line_both(&pl, &s, "{\"a\":\"\\udc00\"}", 5, NULL, 0), -1002);
    CU_ASSERT_EQUAL(line_both(&pl, &s, "{\"a\":1e999}", 5, NULL, 0), -1002);
    CU_ASSERT_EQUAL(line_both(&pl, &s, "{\"a\":01}", 5, NULL, 0), -1002);
    CU_ASSERT_EQUAL(line_both(&pl, &s, "{\"a\":\"\xc0\xaf\"}", 5, NULL, 0), -1002);
    CU_ASSERT_EQUAL(line_both(&pl, &s, "{\"a\":1} x", 5, NULL, 0), -1002);
    CU_ASSERT_EQUAL(line_both(&pl, &s, "[1,2]", 5, NULL, 0), -1002);
    CU_ASSERT_EQUAL(line_both(&pl, &s, "{\"a\":\"tab\tin string\"}", 5, NULL, 0), -1002);
    xf_plan_deinit(&pl);
    share_spec_deinit(&s);

    /* predicates and date_shift: the small doc answers as the whole doc would */
    const char *r2[] = {"/pid=hash", "/d=date_shift:/pid:30", "/res=generalise:ranges:0-9=low,10-=high"};
    spec_with(&s, ID_B, r2, 3);
    CU_ASSERT_FATAL(share_pred_parse("/type==\"visit\"", &s.preds[0], line, sizeof line) == 0);
    CU_ASSERT_FATAL(share_pred_parse("/tags/1 exists", &s.preds[1], line, sizeof line) == 0);
    s.pred_count = 2;
    s.from_time_ms = 10;
    CU_ASSERT_FATAL(xf_plan_init(&pl, &s) == 0);
    CU_ASSERT(pl.fast && pl.mini);
    CU_ASSERT_EQUAL(line_both(&pl, &s, "{\"type\":\"visit\",\"tags\":[1,2],\"pid\":\"p1\",\"d\":\"2026-03-01\",\"res\":12}", 10, NULL, 0), 0);
    CU_ASSERT_EQUAL(line_both(&pl, &s, "{\"type\":\"visit\",\"tags\":[1],\"pid\":\"p1\"}", 10, NULL, 0), XF_LINE_SKIP);
    CU_ASSERT_EQUAL(line_both(&pl, &s, "{\"type\":\"lab\",\"tags\":[1,2]}", 10, NULL, 0), XF_LINE_SKIP);
    CU_ASSERT_EQUAL(line_both(&pl, &s, "{\"type\":\"visit\",\"tags\":[1,2]}", 9, NULL, 0), XF_LINE_SKIP);
    xf_plan_deinit(&pl);
    share_spec_deinit(&s);

    /* a rule below the top level: tree path only */
    const char *r3[] = {"/a/b=hash"};
    spec_with(&s, ID_B, r3, 1);
    CU_ASSERT_FATAL(xf_plan_init(&pl, &s) == 0);
    CU_ASSERT(!pl.fast);
    CU_ASSERT_EQUAL(line_both(&pl, &s, "{\"a\":{\"b\":1}}", 5, NULL, 0), 1000);
    xf_plan_deinit(&pl);
    share_spec_deinit(&s);
}

/* Random records (a fixed seed: the same every run), mostly valid JSON built
 * from pieces that stress the scanner (escapes, UTF-8, surrogates, numbers
 * at the edges, duplicates, nesting), some of them damaged: whenever the
 * scanner path does not decline, it must give the tree path's verdict and
 * bytes. Two shares: top-level rules only, and predicates with date_shift,
 * encrypt and tokenize (the small doc). */
static uint64_t rnd_state = 0x9e3779b97f4a7c15ULL;
static uint32_t rnd(uint32_t n)
{
    rnd_state ^= rnd_state << 13;
    rnd_state ^= rnd_state >> 7;
    rnd_state ^= rnd_state << 17;
    return (uint32_t)(rnd_state % n);
}

static void rnd_put(struct sh_buf *b, const char *s)
{
    if (sh_buf_put(b, s, strlen(s)) != 0)
        abort();
}

static void rnd_value(struct sh_buf *b, int depth);

static void rnd_string(struct sh_buf *b)
{
    static const char *piece[] = {"x", "4111111111", "2026-03-14T10:00:00Z", "2026-02-30", " ",
                                  "\\n", "\\\"", "\\\\", "\\/", "\\u00e9", "\\ud83d\\ude00",
                                  "\xc3\xa9", "\xe2\x80\xa8", "\x7f", "/", "~", "\\u0041", ""};
    rnd_put(b, "\"");
    for (uint32_t i = rnd(4); i > 0; i--)
        rnd_put(b, piece[rnd(sizeof piece / sizeof piece[0])]);
    rnd_put(b, "\"");
}

static void rnd_object(struct sh_buf *b, int depth)
{
    static const char *key[] = {"a", "b", "c", "d", "e", "n", "x/y", "p", "s", "t", "k", "m", "z", ""};
    const uint32_t nk = sizeof key / sizeof key[0];
    bool used[sizeof key / sizeof key[0]] = {false};
    rnd_put(b, "{");
    for (uint32_t i = 0, n = rnd(8); i < n; i++) {
        if (i)
            rnd_put(b, rnd(20) ? "," : " , ");
        rnd_put(b, "\"");
        uint32_t ki = rnd(nk);
        while (used[ki] && rnd(30)) /* a duplicate now and then */
            ki = (ki + 1) % nk;
        used[ki] = true;
        rnd_put(b, key[ki]);
        rnd_put(b, rnd(25) ? "\":" : "\" : ");
        rnd_value(b, depth + 1);
    }
    rnd_put(b, "}");
}

static void rnd_value(struct sh_buf *b, int depth)
{
    static const char *num[] = {"0", "-0", "7", "42.5", "1e2", "-1.5E-3", "123456789012345678",
                                "1.7976931348623157e308", "0.1", "10", "1234567890123456789", "1e999"};
    switch (depth > 3 ? rnd(4) : rnd(7)) {
    case 0:
    case 1: rnd_string(b); break;
    case 2: rnd_put(b, num[rnd(8) ? rnd(6) : rnd(sizeof num / sizeof num[0])]); break;
    case 3: rnd_put(b, rnd(3) == 0 ? "true" : rnd(2) ? "null" : "false"); break;
    case 4:
    case 5: rnd_object(b, depth); break;
    default:
        rnd_put(b, "[");
        for (uint32_t i = 0, n = rnd(4); i < n; i++) {
            if (i)
                rnd_put(b, ",");
            rnd_value(b, depth + 1);
        }
        rnd_put(b, "]");
    }
}

static void test_line_paths_agree_on_random_records(void)
{
    struct share_spec s[2];
    struct xf_plan pl[2];
    const char *r0[] = {"/a=keep", "/b=hash", "/c=mask:last:2", "/d=generalise:month", "/e=drop",
                        "/n=generalise:bucket:10", "/x~1y=replace:\"R\"", "/z=keep"};
    const char *r1[] = {"/p=hash", "/d=date_shift:/p:30", "/t=tokenize", "/a=keep",
                        "/n=generalise:ranges:0-9=low,10-=high"};
    spec_with(&s[0], ID_A, r0, 8);
    spec_with(&s[1], ID_B, r1, 5);
    uint8_t pub[32];
    EVP_PKEY *rk = x25519_new(pub);
    s[1].rcpt.has_key = true;
    memcpy(s[1].rcpt.x25519, pub, 32);
    char err[128];
    CU_ASSERT_FATAL(xf_field_parse("/s=encrypt", &s[1].fields[s[1].field_count++], err, sizeof err) == 0);
    CU_ASSERT_FATAL(share_pred_parse("/k exists", &s[1].preds[0], err, sizeof err) == 0);
    s[1].pred_count = 1;
    for (int i = 0; i < 2; i++)
        CU_ASSERT_FATAL(xf_plan_init(&pl[i], &s[i]) == 0 && pl[i].fast);
    struct xf_keys k[2];
    CU_ASSERT_FATAL(xf_keys_derive(SECRET, ID_A, &k[0]) == 0 && xf_keys_derive(SECRET, ID_B, &k[1]) == 0);
    int fast_lines = 0, declined = 0, differ = 0;
    for (int n = 0; n < 20000; n++) {
        struct sh_buf rec = {0}, a = {0}, b = {0};
        rnd_object(&rec, 0);
        if (rnd(10) == 0 && rec.n > 2) { /* damage it */
            size_t at = rnd((uint32_t)rec.n);
            static const char junk[] = "\"\\{}[],:x\x80\x01 ";
            if (rnd(2))
                rec.p[at] = junk[rnd(sizeof junk - 1)];
            else
                rec.n = at;
        }
        int i = n % 2;
        struct xf_rec r = {.topic = "visits", .partition = 1, .offset = (uint64_t)n, .ts_ms = 5,
                           .value = rec.p, .len = rec.n, .index = (uint64_t)n};
        int fa = xf_line_fast(&pl[i], &s[i], &k[i], "exp1", &r, &a, err, sizeof err);
        int tb = xf_line_tree(&pl[i], &s[i], &k[i], "exp1", &r, &b, err, sizeof err);
        if (fa == XF_LINE_FALLBACK) {
            declined++;
        } else if (fa != tb || a.n != b.n || (a.n && memcmp(a.p, b.p, a.n) != 0)) {
            if (differ++ < 3)
                fprintf(stderr, "\nrecord: %.*s\nscanner %d: %.*s\ntree %d:    %.*s\n", (int)rec.n,
                        rec.p, fa, (int)a.n, a.p, tb, (int)b.n, b.p);
        } else if (fa == 0) {
            fast_lines++;
        }
        sh_buf_free(&rec);
        sh_buf_free(&a);
        sh_buf_free(&b);
    }
    fprintf(stderr, "[%d lines by the scanner, %d declined] ", fast_lines, declined);
    CU_ASSERT_EQUAL(differ, 0);
    /* not vacuous: most records take the scanner path and make a line */
    CU_ASSERT(fast_lines > 8000);
    CU_ASSERT(declined > 500);
    for (int i = 0; i < 2; i++) {
        xf_plan_deinit(&pl[i]);
        share_spec_deinit(&s[i]);
    }
    EVP_PKEY_free(rk);
}

int main(void)
{
    tmp = tu_tmpdir("share-unit");
    CU_initialize_registry();
    CU_pSuite s = CU_add_suite("share", NULL, NULL);
    CU_add_test(s, "paseto PAE spec examples", test_paseto_pae_spec_examples);
    CU_add_test(s, "paseto v4.public official vectors", test_paseto_v4_public_official_vectors);
    CU_add_test(s, "paseto rejects tampered, foreign, malformed", test_paseto_rejects_tampered_foreign_and_malformed);
    CU_add_test(s, "keep drop replace", test_xf_keep_drop_replace);
    CU_add_test(s, "mask first and last", test_xf_mask_first_and_last);
    CU_add_test(s, "hash stable within a share, different across", test_xf_hash_stable_within_share_different_across);
    CU_add_test(s, "tokenize deterministic, reversible by owner", test_xf_tokenize_deterministic_and_reversible_by_owner);
    CU_add_test(s, "generalise dates, buckets, ranges", test_xf_generalise_dates_buckets_ranges);
    CU_add_test(s, "date_shift same per entity", test_xf_date_shift_same_per_entity);
    CU_add_test(s, "encrypt: recipient key and AAD", test_xf_encrypt_decrypts_only_with_recipient_key_and_aad);
    CU_add_test(s, "commitments salted per record and field", test_xf_commitment_reveals_original_only);
    CU_add_test(s, "rules and predicates", test_rules_and_predicates_parse_or_refuse);
    CU_add_test(s, "profile parse and dump", test_profile_parse_and_dump);
    CU_add_test(s, "spec round trip, token binds the scope", test_spec_round_trip_keeps_scope_digest_and_token_binds_it);
    CU_add_test(s, "export verify: untouched ok, tampering refused", test_export_verify_accepts_untouched_rejects_tampering);
    CU_add_test(s, "export verify: unusual spellings, same verdict", test_export_verify_same_verdict_for_unusual_spellings);
    CU_add_test(s, "reveal against commitment", test_reveal_checks_against_commitment);
    CU_add_test(s, "times and durations", test_time_and_duration_parsing);
    CU_add_test(s, "HMAC-SHA-256 RFC 4231 vectors, cached keys", test_hmac_rfc4231_vectors);
    CU_add_test(s, "record lines: scanner and tree paths, same bytes", test_line_scanner_and_tree_give_the_same_bytes);
    CU_add_test(s, "record lines: both paths agree on 20,000 random records", test_line_paths_agree_on_random_records);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    unsigned failed = CU_get_number_of_failures();
    CU_cleanup_registry();
    tu_rmrf(tmp);
    free(tmp);
    return failed ? 1 : 0;
}
