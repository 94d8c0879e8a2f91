/*
 * libFuzzer target for the sharing gateway's decoders (consumer/share):
 * the first byte picks one, the rest is its input.
 *
 *   0  a token: paseto_v4_verify with a fixed key, paseto_v4_peek,
 *      share_claims_parse of what peek returns
 *   1  a recipient profile: share_profile_parse
 *   2  a field rule (the transformation config): xf_field_parse, and when it
 *      parses, the rule applied to a fixed record through xf_apply
 *   3  a filter predicate: share_pred_parse and share_pred_match
 *   4  a share spec (JSON): share_spec_from_json, to_json, scope digest,
 *      round trip equality
 *   5  a shares-topic record: share_db_apply on a db holding one share
 *   6  an export file: export_verify and export_check_reveal
 *   7  an export's proof line (sp_proof_check) and tree checkpoint note
 *      (sp_note_check with the log's key): input = note "\0" proof line
 *   8  a source record turned into its export line (share_line.c) under
 *      three shares: whatever the scanner path accepts, the jansson tree
 *      path must accept too and give the same bytes (abort otherwise)
 *
 * Every input must either parse or be refused with an error; nothing may
 * crash, leak or trip a sanitizer.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "consumer/share/share.h"

static EVP_PKEY *pk;
static struct xf_keys keys;
static uint8_t rcpt_pub[32];

static const char *SPEC =
    "{\"id\":\"0123456789abcdef0123456789abcdef\",\"topics\":[\"t\"],\"filter\":[],"
    "\"fields\":[\"/a=keep\"],\"created_ms\":1,\"expires_ms\":2,\"recipient\":{\"name\":\"r\"}}";

static void init(void)
{
    uint8_t seed[32] = {7}, secret[32] = {9};
    pk = EVP_PKEY_new_raw_private_key(EVP_PKEY_ED25519, NULL, seed, 32);
    EVP_PKEY *x = EVP_PKEY_new_raw_private_key(EVP_PKEY_X25519, NULL, seed, 32);
    if (!pk || !x || sh_raw_public(x, rcpt_pub) ||
        xf_keys_derive(secret, "0123456789abcdef0123456789abcdef", &keys))
        abort();
    EVP_PKEY_free(x);
}

static char *cstr(const uint8_t *d, size_t n)
{
    char *s = malloc(n + 1);
    memcpy(s, d, n);
    s[n] = '\0';
    return s;
}

static void fuzz_rule(const char *s)
{
    struct share_spec spec;
    share_spec_init(&spec);
    char err[256];
    if (xf_field_parse(s, &spec.fields[0], err, sizeof err) != 0)
        return;
    spec.field_count = 1;
    memcpy(spec.id, "0123456789abcdef0123456789abcdef", SHARE_ID_LEN + 1);
    spec.rcpt.has_key = true;
    memcpy(spec.rcpt.x25519, rcpt_pub, 32);
    const char *docs[] = {"{\"a\":\"2026-03-14T10:00:00Z\",\"b\":{\"c\":[1,2,{\"d\":\"x\"}]},\"n\":42.5,\"p\":\"id1\"}",
                          "{\"a\":7,\"b\":null,\"c\":\"\\u00e9t\\u00e9\",\"p\":[1]}"};
    for (size_t i = 0; i < 2; i++) {
        json_t *doc = json_loads(docs[i], 0, NULL), *commits = json_object();
        if (xf_apply(&spec, &keys, "e1", "t/0/1", doc, commits, err, sizeof err) == 0) {
            char *c = sh_canon(doc);
            free(c);
        }
        json_decref(doc);
        json_decref(commits);
    }
    share_spec_deinit(&spec);
}

/* Shares for selector 8: all rules on top-level members (the scanner
 * path), the same with predicates and date_shift (its small doc), and one
 * nested rule (tree path only). */
static const char *const LINE_RULES[3][8] = {
    {"/a=keep", "/b=hash", "/c=mask:last:2", "/d=generalise:month", "/e=drop",
     "/n=generalise:bucket:10", "/x~1y=replace:\"R\"", NULL},
    {"/p=hash", "/d=date_shift:/p:30", "/s=encrypt", "/t=tokenize", "/a=keep",
     "/n=generalise:ranges:0-9=low,10-=high", NULL},
    {"/a=keep", "/b/c=hash", NULL},
};
static const char *const LINE_PREDS[3][3] = {
    {NULL}, {"/k==\"v\"", "/m/0 exists", NULL}, {NULL}};
static struct share_spec line_spec[3];
static struct xf_plan line_plan[3];

static void line_init(void)
{
    char err[256];
    for (int i = 0; i < 3; i++) {
        struct share_spec *sp = &line_spec[i];
        share_spec_init(sp);
        memcpy(sp->id, "0123456789abcdef0123456789abcdef", SHARE_ID_LEN + 1);
        sp->rcpt.has_key = true;
        memcpy(sp->rcpt.x25519, rcpt_pub, 32);
        for (int j = 0; LINE_RULES[i][j]; j++)
            if (xf_field_parse(LINE_RULES[i][j], &sp->fields[sp->field_count++], err, sizeof err))
                abort();
        for (int j = 0; LINE_PREDS[i][j]; j++)
            if (share_pred_parse(LINE_PREDS[i][j], &sp->preds[sp->pred_count++], err, sizeof err))
                abort();
        if (xf_plan_init(&line_plan[i], sp) || line_plan[i].fast != (i < 2))
            abort();
    }
}

static void fuzz_line(const char *rec, size_t n)
{
    static bool ready;
    if (!ready) {
        line_init();
        ready = true;
    }
    for (int i = 0; i < 3; i++) {
        struct xf_rec r = {.topic = "t", .partition = 0, .offset = 5, .ts_ms = 1000,
                           .value = rec, .len = n, .index = 3};
        struct sh_buf a = {0}, b = {0};
        char err[128];
        int fa = xf_line_fast(&line_plan[i], &line_spec[i], &keys, "e1", &r, &a, err, sizeof err);
        int tb = xf_line_tree(&line_plan[i], &line_spec[i], &keys, "e1", &r, &b, err, sizeof err);
        if (fa != XF_LINE_FALLBACK && (fa != tb || a.n != b.n || (a.n && memcmp(a.p, b.p, a.n))))
            abort();
        if (tb == 0 && (b.n == 0 || b.p[b.n - 1] != '\n'))
            abort();
        sh_buf_free(&a);
        sh_buf_free(&b);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!pk)
        init();
    if (size < 1 || size > 65536)
        return 0;
    uint8_t mode = data[0] % 9;
    char *s = cstr(data + 1, size - 1);
    size_t n = size - 1;
    char err[256];
    switch (mode) {
    case 0: {
        uint8_t *m = NULL;
        size_t ml;
        char *f = NULL, *peek = NULL;
        if (paseto_v4_verify(pk, s, SHARE_IMPLICIT, &m, &ml, &f) == 0) {
            free(m);
            free(f);
        }
        if (paseto_v4_peek(s, &peek) == 0) {
            struct share_claims c;
            (void)!share_claims_parse(peek, strlen(peek), &c);
            free(peek);
        }
        struct share_claims c2;
        (void)!share_token_check(pk, s, &c2);
        break;
    }
    case 1: {
        struct share_profile p;
        if (share_profile_parse(s, n, &p, err, sizeof err) == 0)
            share_profile_deinit(&p);
        break;
    }
    case 2:
        fuzz_rule(s);
        break;
    case 3: {
        struct share_pred p;
        if (share_pred_parse(s, &p, err, sizeof err) == 0) {
            json_t *doc = json_loads("{\"a\":1,\"b\":\"x\",\"c\":[true,{\"d\":2}]}", 0, NULL);
            (void)share_pred_match(&p, doc);
            json_decref(doc);
            share_pred_deinit(&p);
        }
        break;
    }
    case 4: {
        json_t *j = json_loadb(s, n, 0, NULL);
        struct share_spec spec, again;
        if (j && share_spec_from_json(j, &spec, err, sizeof err) == 0) {
            json_t *k = share_spec_to_json(&spec);
            uint8_t d1[32], d2[32];
            if (!k || share_spec_from_json(k, &again, err, sizeof err) != 0)
                abort(); /* what we write we must read back */
            if (share_scope_digest(&spec, d1) || share_scope_digest(&again, d2) ||
                memcmp(d1, d2, 32) != 0)
                abort();
            share_spec_deinit(&again);
            json_decref(k);
            share_spec_deinit(&spec);
        }
        json_decref(j);
        break;
    }
    case 5: {
        struct share_db db;
        share_db_init(&db);
        char rec[1024];
        snprintf(rec, sizeof rec, "{\"type\":\"share\",\"share\":%s}", SPEC);
        if (share_db_apply(&db, rec, strlen(rec)) != 0)
            abort();
        (void)!share_db_apply(&db, s, n);
        share_db_deinit(&db);
        break;
    }
    case 6: {
        char path[64];
        snprintf(path, sizeof path, "/tmp/fuzz_share_%d.ndjson", (int)getpid());
        FILE *f = fopen(path, "wb");
        if (f) {
            fwrite(s, 1, n, f);
            fclose(f);
            struct verify_report r;
            (void)!export_verify(path, pk, NULL, NULL, true, &r, err, sizeof err);
            json_t *rv = json_pack("{s:s, s:s, s:s, s:s}", "position", "t/0/1", "path", "/a",
                                   "value", "x", "salt", "AAAAAAAAAAAAAAAAAAAAAA");
            (void)!export_check_reveal(path, rv, err, sizeof err);
            json_decref(rv);
            unlink(path);
        }
        break;
    }
    case 7: {
        const char *z = memchr(s, '\0', n);
        size_t nl = z ? (size_t)(z - s) : n;
        uint64_t size = 0, idx, base;
        uint32_t count;
        uint8_t root[32], leaf[SP_LEAF_SIZE];
        bool sgn;
        if (sp_note_check(s, nl, NULL, pk, "t", 0, &size, root, &sgn) != 0) {
            size = 7;
            memset(root, 0, sizeof root);
        }
        json_t *j = z ? json_loadb(z + 1, n - nl - 1, 0, NULL) : NULL;
        if (j && size)
            (void)!sp_proof_check(j, size, root, &idx, &base, &count, leaf);
        json_decref(j);
        break;
    }
    case 8:
        fuzz_line(s, n);
        break;
    }
    free(s);
    return 0;
}
