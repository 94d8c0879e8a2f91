/*
 * Export files: NDJSON, one JSON object per line.
 *
 *   line 0        {"type":"export", "share", "export", "recipient", ...}
 *   lines 1..n    {"type":"record", "i": k, "pos": "topic/partition/offset",
 *                  "topic", "partition", "offset", "ts", "value", "commit"}
 *   last line     {"type":"manifest", ..., "signature"}
 *
 * The manifest holds the record count, the number of body lines, the
 * SHA-256 of every byte before it (body_sha256), the transformation policy
 * and its version, the scope, the recipient, the source offsets read per
 * partition with the latest signed checkpoint passed in each and, when the
 * gateway reads proofs from the broker, the partition's signed C2SP tree
 * checkpoint ("tree"), the proof summary ("proofs": format, proof lines,
 * records proven; the proof lines themselves are body lines, see
 * share_proof.c), and the
 * gateway's Ed25519 signature over
 *     "VERITY-SHARE-MANIFEST-1\n" || canonical JSON of the manifest
 *     without its "signature" member.
 * A record line's "i" counts records from 0, so a dropped or reordered line
 * fails before the digest is even compared.
 *
 * Checkpoint payloads are the log's own (storage/checkpoint.h, 160 bytes):
 * the verifier checks their Ed25519 signature over "VERITY-CKPT-1" ||
 * bytes[0, 96) with the embedded key and, given --log-key, that the key is
 * the log's. A record is "covered" when its offset is below the offset its
 * partition's checkpoint covers.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/sha.h>

#include "consumer/share/share.h"

#define MANIFEST_TAG "VERITY-SHARE-MANIFEST-1\n"
#define CKPT_TAG "VERITY-CKPT-1"

static int fail(char *err, size_t cap, int rc, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int fail(char *err, size_t cap, int rc, const char *fmt, ...)
{
    if (err && cap) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, cap, fmt, ap);
        va_end(ap);
    }
    return rc;
}

static int sig_input(json_t *m, uint8_t **out, size_t *len)
{
    char *c = sh_canon(m);
    if (!c)
        return -ENOMEM;
    size_t tl = strlen(MANIFEST_TAG), cl = strlen(c);
    uint8_t *b = malloc(tl + cl);
    if (!b) {
        free(c);
        return -ENOMEM;
    }
    memcpy(b, MANIFEST_TAG, tl);
    memcpy(b + tl, c, cl);
    free(c);
    *out = b;
    *len = tl + cl;
    return 0;
}

char *export_manifest(EVP_PKEY *gw_key, const struct share_spec *s, const char *export_id,
                      uint64_t records, uint64_t lines, uint64_t proof_lines,
                      const uint8_t body_sha[32], const struct export_source *src, size_t nsrc,
                      int64_t now_ms)
{
    uint64_t proven = 0;
    char *line = NULL;
    uint8_t pub[32], *in = NULL, sig[64];
    size_t in_len, sig_len = sizeof sig;
    char pubs[48], shas[48], sigs[96];
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    json_t *spec = share_spec_to_json(s), *sources = json_array(), *m = NULL;
    if (!md || !spec || !sources || sh_raw_public(gw_key, pub))
        goto out;
    for (size_t i = 0; i < nsrc; i++) {
        json_t *ck = json_null();
        if (src[i].has_ckpt) {
            char *p = sh_b64url_str(src[i].ckpt, VERITY_CHECKPOINT_SIZE);
            ck = json_pack("{s:I, s:s}", "batch_offset", (json_int_t)src[i].ckpt_batch, "payload",
                           p ? p : "");
            free(p);
        }
        json_t *tree = src[i].tree_note
                           ? json_pack("{s:I, s:s, s:I}", "size", (json_int_t)src[i].tree_size,
                                       "note", src[i].tree_note, "proven",
                                       (json_int_t)src[i].proven)
                           : json_null();
        proven += src[i].proven;
        json_array_append_new(sources,
                              json_pack("{s:s, s:I, s:I, s:I, s:o, s:o}", "topic", src[i].topic,
                                        "partition", (json_int_t)src[i].partition, "from",
                                        (json_int_t)src[i].from, "to", (json_int_t)src[i].to,
                                        "checkpoint", ck, "tree", tree));
    }
    sh_b64url_enc(pub, 32, pubs);
    sh_b64url_enc(body_sha, 32, shas);
    m = json_pack("{s:s, s:i, s:s, s:s, s:s, s:I, s:I, s:s, s:{s:I, s:O, s:O}, s:O, s:O, s:O,"
                  " s:O, s:O, s:O, s:O, s:{s:s, s:I, s:I}, s:I}",
                  "type", "manifest", "version", 1, "share", s->id, "export", export_id,
                  "gateway_key", pubs, "records", (json_int_t)records, "lines", (json_int_t)lines,
                  "body_sha256", shas, "policy", "version", (json_int_t)s->policy_version,
                  "fields", json_object_get(spec, "fields"), "filter",
                  json_object_get(spec, "filter"), "topics", json_object_get(spec, "topics"),
                  "from_offset", json_object_get(spec, "from_offset"), "to_offset",
                  json_object_get(spec, "to_offset"), "from_time_ms",
                  json_object_get(spec, "from_time_ms"), "to_time_ms",
                  json_object_get(spec, "to_time_ms"), "recipient",
                  json_object_get(spec, "recipient"), "sources", sources, "proofs", "format",
                  "rfc6962-batch-v1", "lines", (json_int_t)proof_lines, "records_proven",
                  (json_int_t)proven, "time_ms", (json_int_t)now_ms);
    if (!m || sig_input(m, &in, &in_len))
        goto out;
    if (EVP_DigestSignInit(md, NULL, NULL, NULL, gw_key) != 1 ||
        EVP_DigestSign(md, sig, &sig_len, in, in_len) != 1 || sig_len != 64)
        goto out;
    sh_b64url_enc(sig, 64, sigs);
    json_object_set_new(m, "signature", json_string(sigs));
    char *c = json_dumps(m, JSON_COMPACT | JSON_SORT_KEYS);
    if (c) {
        size_t n = strlen(c);
        line = realloc(c, n + 2);
        if (!line) {
            free(c);
        } else {
            line[n] = '\n';
            line[n + 1] = '\0';
        }
    }
out:
    EVP_MD_CTX_free(md);
    free(in);
    json_decref(spec);
    json_decref(sources);
    json_decref(m);
    return line;
}

static int ed_verify(EVP_PKEY *k, const uint8_t *msg, size_t n, const uint8_t sig[64])
{
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    int ok = md && EVP_DigestVerifyInit(md, NULL, NULL, NULL, k) == 1 &&
             EVP_DigestVerify(md, sig, 64, msg, n) == 1;
    EVP_MD_CTX_free(md);
    return ok ? 0 : VERITY_ESIGNATURE;
}

/* Verifies a 160-byte checkpoint payload; *covers_out = its offset. */
static int ckpt_check(const uint8_t *p, EVP_PKEY *log_pub, uint64_t *covers_out)
{
    if (p[0] != 1 || !(p[1] & 1))
        return VERITY_ESIGNATURE;
    uint8_t msg[sizeof CKPT_TAG - 1 + 96];
    memcpy(msg, CKPT_TAG, sizeof CKPT_TAG - 1);
    memcpy(msg + sizeof CKPT_TAG - 1, p, 96);
    EVP_PKEY *k = EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, NULL, p + 64, 32);
    int rc = k ? ed_verify(k, msg, sizeof msg, p + 96) : VERITY_ESIGNATURE;
    EVP_PKEY_free(k);
    if (rc == 0 && log_pub) {
        uint8_t lp[32];
        if (sh_raw_public(log_pub, lp) || CRYPTO_memcmp(lp, p + 64, 32) != 0)
            rc = VERITY_ESIGNATURE;
    }
    uint64_t off = 0;
    for (int i = 7; i >= 0; i--)
        off = off << 8 | p[8 + i];
    *covers_out = off;
    return rc;
}

static int check_manifest(json_t *m, EVP_PKEY *gw_pub, char *err, size_t cap)
{
    const json_t *sig = json_object_get(m, "signature"), *gk = json_object_get(m, "gateway_key");
    uint8_t sb[64], kb[32], pub[32], *in = NULL;
    size_t n, in_len;
    if (!json_is_string(sig) || !json_is_string(gk))
        return fail(err, cap, VERITY_ECORRUPT, "manifest has no signature or gateway_key");
    if (sh_b64url_dec(json_string_value(sig), json_string_length(sig), sb, 64, &n) || n != 64 ||
        sh_b64url_dec(json_string_value(gk), json_string_length(gk), kb, 32, &n) || n != 32)
        return fail(err, cap, VERITY_ECORRUPT, "manifest signature or key badly encoded");
    if (sh_raw_public(gw_pub, pub) || CRYPTO_memcmp(pub, kb, 32) != 0)
        return fail(err, cap, VERITY_ESIGNATURE, "manifest names another gateway key");
    json_t *copy = json_deep_copy(m);
    json_object_del(copy, "signature");
    int rc = sig_input(copy, &in, &in_len);
    json_decref(copy);
    if (rc)
        return rc;
    rc = ed_verify(gw_pub, in, in_len, sb);
    free(in);
    return rc ? fail(err, cap, rc, "manifest signature does not verify") : 0;
}

struct src_check {
    const char *topic;
    uint32_t partition;
    uint64_t from, to, covers;
    bool has_ckpt;
    bool has_tree;                /* a tree note that parsed (and verified, given a key) */
    uint64_t tree_size;
    uint8_t root[32];
    bool has_leaf;                /* the last proof line of this source verified */
    uint64_t leaf_index, leaf_base;
    uint32_t leaf_count;
    uint8_t leaf[SP_LEAF_SIZE];
};

/* The manifest's tree note of source i, checked (sp_note_check). */
static int check_tree(const json_t *tree, struct src_check *sc, const char *log_vkey,
                      EVP_PKEY *log_pub, struct verify_report *rep, char *err, size_t cap)
{
    const json_t *note = json_object_get(tree, "note");
    json_int_t size = json_integer_value(json_object_get(tree, "size"));
    bool sgn;
    uint64_t nsize;
    if (!json_is_string(note) || size <= 0)
        return fail(err, cap, VERITY_ECORRUPT, "tree of %s/%u is malformed", sc->topic,
                    sc->partition);
    int rc = sp_note_check(json_string_value(note), json_string_length(note), log_vkey, log_pub,
                           sc->topic, sc->partition, &nsize, sc->root, &sgn);
    if (rc == VERITY_EINVAL)
        return fail(err, cap, rc, "the log verifier key is not an Ed25519 vkey string");
    if (rc == 0 && nsize != (uint64_t)size)
        rc = VERITY_ECORRUPT;
    if (rc)
        return fail(err, cap, rc, "tree checkpoint note of %s/%u %s", sc->topic, sc->partition,
                    rc == VERITY_ESIGNATURE ? "does not verify with the log key"
                                            : "is malformed or names another partition");
    sc->has_tree = true;
    sc->tree_size = nsize;
    rep->trees++;
    rep->trees_signed += sgn;
    return 0;
}

/* One proof line: its audit path to its partition's root, leaves in
 * ascending order, consecutive leaves chained. */
static int check_proof_line(const json_t *j, struct src_check *sc, size_t ns, uint64_t line,
                            struct verify_report *rep, char *err, size_t cap)
{
    const char *topic = json_string_value(json_object_get(j, "topic"));
    json_int_t part = json_integer_value(json_object_get(j, "partition"));
    size_t k = 0;
    for (; k < ns; k++)
        if (topic && strcmp(sc[k].topic, topic) == 0 && sc[k].partition == (uint64_t)part)
            break;
    if (k == ns || !sc[k].has_tree)
        return fail(err, cap, VERITY_ECORRUPT, "line %llu: a proof for a partition without a tree",
                    (unsigned long long)line);
    struct src_check *c = &sc[k];
    uint64_t index, base;
    uint32_t count;
    uint8_t leaf[SP_LEAF_SIZE];
    int rc = sp_proof_check(j, c->tree_size, c->root, &index, &base, &count, leaf);
    if (rc)
        return fail(err, cap, rc, "line %llu: the inclusion proof of %s/%u leaf %lld %s",
                    (unsigned long long)line, c->topic, c->partition,
                    (long long)json_integer_value(json_object_get(j, "index")),
                    rc == VERITY_ECHAIN ? "does not lead to the signed root" : "is malformed");
    if (c->has_leaf && (index <= c->leaf_index || base < c->leaf_base + c->leaf_count ||
                        (index == c->leaf_index + 1 &&
                         (base != c->leaf_base + c->leaf_count ||
                          CRYPTO_memcmp(leaf + 12, c->leaf + 44, 32) != 0))))
        return fail(err, cap, VERITY_ECHAIN, "line %llu: leaf %llu of %s/%u does not follow leaf %llu",
                    (unsigned long long)line, (unsigned long long)index, c->topic, c->partition,
                    (unsigned long long)c->leaf_index);
    c->has_leaf = true;
    c->leaf_index = index;
    c->leaf_base = base;
    c->leaf_count = count;
    memcpy(c->leaf, leaf, SP_LEAF_SIZE);
    rep->proof_lines++;
    return 0;
}

/* Second pass: each record inside its source's range; covered count. */
static int check_sources(FILE *f, const json_t *m, EVP_PKEY *log_pub, const char *log_vkey,
                         bool require_proofs, struct verify_report *rep, char *err, size_t cap)
{
    const json_t *sources = json_object_get(m, "sources");
    size_t ns = json_array_size(sources);
    if (!json_is_array(sources) || ns == 0 || ns > 4096)
        return fail(err, cap, VERITY_ECORRUPT, "manifest has no sources");
    struct src_check *sc = calloc(ns, sizeof *sc);
    if (!sc)
        return -ENOMEM;
    int rc = 0;
    for (size_t i = 0; i < ns && !rc; i++) {
        const json_t *s = json_array_get(sources, i), *ck = json_object_get(s, "checkpoint");
        json_int_t part, from, to;
        const char *topic;
        if (json_unpack((json_t *)s, "{s:s, s:I, s:I, s:I}", "topic", &topic, "partition", &part,
                        "from", &from, "to", &to) ||
            part < 0 || from < 0 || to < from) {
            rc = fail(err, cap, VERITY_ECORRUPT, "manifest source %zu is malformed", i);
            break;
        }
        sc[i] = (struct src_check){.topic = topic, .partition = (uint32_t)part,
                                   .from = (uint64_t)from, .to = (uint64_t)to};
        const json_t *tree = json_object_get(s, "tree");
        if (tree && !json_is_null(tree) &&
            (rc = check_tree(tree, &sc[i], log_vkey, log_pub, rep, err, cap)))
            break;
        if (ck && !json_is_null(ck)) {
            const json_t *pl = json_object_get(ck, "payload");
            uint8_t p[VERITY_CHECKPOINT_SIZE];
            size_t n;
            if (!json_is_string(pl) ||
                sh_b64url_dec(json_string_value(pl), json_string_length(pl), p, sizeof p, &n) ||
                n != VERITY_CHECKPOINT_SIZE) {
                rc = fail(err, cap, VERITY_ECORRUPT, "checkpoint of %s/%u badly encoded", topic,
                          sc[i].partition);
                break;
            }
            if (ckpt_check(p, log_pub, &sc[i].covers)) {
                rc = fail(err, cap, VERITY_ESIGNATURE,
                          "checkpoint of %s/%u does not verify%s", topic, sc[i].partition,
                          log_pub ? " with the log key" : "");
                break;
            }
            sc[i].has_ckpt = true;
            rep->checkpoints++;
        }
    }
    char *line = NULL;
    size_t lcap = 0;
    ssize_t got;
    uint64_t ln = 0;
    rewind(f);
    while (!rc && (got = getline(&line, &lcap, f)) > 0) {
        /* The first pass checked every line with jansson and the digest;
         * here record lines only need their source. The scanner reads it
         * without building the line (jansson when it is not sure). */
        struct sh_member top[SH_SCAN_TOP_MAX];
        size_t nt;
        const struct sh_member *tm = NULL, *pm = NULL;
        uint64_t fpart, foff;
        bool fast = sh_scan_object(line, (size_t)got, top, &nt) == 0 &&
                    (tm = sh_member_get(top, nt, "type")) && tm->plain;
        if (fast && !sh_member_is(tm, "proof") && !sh_member_is(tm, "record")) {
            ln++;
            continue; /* the header, the manifest */
        }
        fast = fast && sh_member_is(tm, "record") &&
               (pm = sh_member_get(top, nt, "topic")) && pm->plain &&
               sh_member_u64(sh_member_get(top, nt, "partition"), &fpart) &&
               sh_member_u64(sh_member_get(top, nt, "offset"), &foff);
        json_t *j = fast ? NULL : json_loadb(line, (size_t)got, 0, NULL);
        const char *type = fast ? "record" : json_string_value(json_object_get(j, "type"));
        ln++;
        if (type && strcmp(type, "proof") == 0)
            rc = check_proof_line(j, sc, ns, ln, rep, err, cap);
        if (type && strcmp(type, "record") == 0) {
            const char *topic = fast ? NULL : json_string_value(json_object_get(j, "topic"));
            size_t topic_len = fast ? pm->vl - 2 : topic ? strlen(topic) : 0;
            if (fast)
                topic = (const char *)pm->v + 1; /* not NUL-terminated: topic_len */
            json_int_t part = fast ? (json_int_t)fpart : json_integer_value(json_object_get(j, "partition"));
            json_int_t off = fast ? (json_int_t)foff : json_integer_value(json_object_get(j, "offset"));
            size_t k = 0;
            for (; k < ns; k++)
                if (topic && strlen(sc[k].topic) == topic_len &&
                    memcmp(sc[k].topic, topic, topic_len) == 0 && sc[k].partition == (uint64_t)part)
                    break;
            if (k == ns || off < (json_int_t)sc[k].from || off >= (json_int_t)sc[k].to)
                rc = fail(err, cap, VERITY_ECORRUPT, "record %.*s/%lld/%lld outside the sources",
                          topic ? (int)topic_len : 1, topic ? topic : "?", (long long)part,
                          (long long)off);
            else if (sc[k].has_ckpt && (uint64_t)off < sc[k].covers)
                rep->covered++;
            if (!rc && sc[k].has_leaf && (uint64_t)off >= sc[k].leaf_base &&
                (uint64_t)off - sc[k].leaf_base < sc[k].leaf_count)
                rep->proven++;
            else if (!rc && require_proofs)
                rc = fail(err, cap, VERITY_ECHAIN,
                          "record %.*s/%lld/%lld has no inclusion proof (line %llu)",
                          topic ? (int)topic_len : 1, topic ? topic : "?", (long long)part,
                          (long long)off, (unsigned long long)ln);
        }
        json_decref(j);
    }
    free(line);
    free(sc);
    const json_t *pr = json_object_get(m, "proofs");
    if (!rc && ((uint64_t)json_integer_value(json_object_get(pr, "records_proven")) != rep->proven ||
                (uint64_t)json_integer_value(json_object_get(pr, "lines")) != rep->proof_lines))
        rc = fail(err, cap, VERITY_ECHAIN,
                  "the manifest claims %lld proven records in %lld proof lines; %llu in %llu verify",
                  (long long)json_integer_value(json_object_get(pr, "records_proven")),
                  (long long)json_integer_value(json_object_get(pr, "lines")),
                  (unsigned long long)rep->proven, (unsigned long long)rep->proof_lines);
    return rc;
}

int export_verify(const char *path, EVP_PKEY *gw_pub, EVP_PKEY *log_pub, const char *log_vkey,
                  bool require_proofs, struct verify_report *rep, char *err, size_t cap)
{
    memset(rep, 0, sizeof *rep);
    FILE *f = fopen(path, "rb");
    if (!f)
        return fail(err, cap, -errno, "cannot open %s", path);
    int rc = 0;
    char *prev = NULL, *cur = NULL;
    size_t prev_cap = 0, cur_cap = 0, prev_len = 0;
    ssize_t got;
    uint64_t lines = 0, records = 0;
    json_t *m = NULL;
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    if (!md || EVP_DigestInit_ex(md, EVP_sha256(), NULL) != 1) {
        rc = -ENOMEM;
        goto out;
    }
    while ((got = getline(&cur, &cur_cap, f)) > 0) {
        if ((size_t)got > SHARE_LINE_MAX || cur[got - 1] != '\n') {
            rc = fail(err, cap, VERITY_ECORRUPT, "line %llu too long or unterminated",
                      (unsigned long long)lines + 1);
            goto out;
        }
        if (prev) { /* prev is a body line: hash and check it */
            /* Record and proof lines through the scanner when it is sure
             * (share_line.c; it accepts nothing jansson refuses), jansson
             * for the header and for anything the scanner declines. */
            struct sh_member top[SH_SCAN_TOP_MAX];
            size_t nt;
            const struct sh_member *tm;
            uint64_t iv;
            bool fast = lines > 0 && sh_scan_object(prev, prev_len, top, &nt) == 0 &&
                        (tm = sh_member_get(top, nt, "type")) &&
                        (sh_member_is(tm, "proof") ||
                         (sh_member_is(tm, "record") && sh_member_u64(sh_member_get(top, nt, "i"), &iv)));
            json_t *j = fast ? NULL : json_loadb(prev, prev_len, JSON_REJECT_DUPLICATES, NULL);
            const char *type = fast ? (sh_member_is(tm, "proof") ? "proof" : "record")
                                    : json_string_value(json_object_get(j, "type"));
            bool ok;
            if (lines == 0) {
                ok = type && strcmp(type, "export") == 0;
                const char *sid = json_string_value(json_object_get(j, "share"));
                const char *eid = json_string_value(json_object_get(j, "export"));
                if (ok && sid && eid && strlen(sid) == SHARE_ID_LEN && strlen(eid) < 64) {
                    strcpy(rep->share, sid);
                    strcpy(rep->export_id, eid);
                } else {
                    ok = false;
                }
            } else if (type && strcmp(type, "proof") == 0) {
                ok = true; /* checked in the second pass (check_proof_line) */
            } else if (fast) {
                ok = iv == records;
                records++;
            } else {
                const json_t *i = json_object_get(j, "i");
                ok = type && strcmp(type, "record") == 0 && json_is_integer(i) &&
                     (uint64_t)json_integer_value(i) == records;
                records++;
            }
            json_decref(j);
            if (!ok) {
                rc = fail(err, cap, VERITY_ECORRUPT,
                          "line %llu is not the expected %s (dropped, reordered or altered)",
                          (unsigned long long)lines + 1, lines == 0 ? "export header" : "record");
                goto out;
            }
            EVP_DigestUpdate(md, prev, prev_len);
            lines++;
        }
        char *t = prev;
        size_t tc = prev_cap;
        prev = cur, prev_cap = cur_cap, prev_len = (size_t)got;
        cur = t, cur_cap = tc;
    }
    if (!prev) {
        rc = fail(err, cap, VERITY_ECORRUPT, "empty export");
        goto out;
    }
    m = json_loadb(prev, prev_len, JSON_REJECT_DUPLICATES, NULL);
    if (!m || !json_is_string(json_object_get(m, "type")) ||
        strcmp(json_string_value(json_object_get(m, "type")), "manifest") != 0) {
        rc = fail(err, cap, VERITY_ECORRUPT, "the last line is not a manifest (truncated export?)");
        goto out;
    }
    if ((rc = check_manifest(m, gw_pub, err, cap)))
        goto out;
    uint8_t d[32], md_d[32];
    unsigned dl = 32;
    EVP_DigestFinal_ex(md, d, &dl);
    const json_t *bs = json_object_get(m, "body_sha256");
    size_t n;
    if (!json_is_string(bs) ||
        sh_b64url_dec(json_string_value(bs), json_string_length(bs), md_d, 32, &n) || n != 32 ||
        CRYPTO_memcmp(d, md_d, 32) != 0) {
        rc = fail(err, cap, VERITY_ECORRUPT, "body digest differs from the manifest's");
        goto out;
    }
    if ((uint64_t)json_integer_value(json_object_get(m, "records")) != records ||
        (uint64_t)json_integer_value(json_object_get(m, "lines")) != lines) {
        rc = fail(err, cap, VERITY_ECORRUPT, "record count %llu differs from the manifest's",
                  (unsigned long long)records);
        goto out;
    }
    const char *ms = json_string_value(json_object_get(m, "share"));
    const char *me = json_string_value(json_object_get(m, "export"));
    if (!ms || !me || strcmp(ms, rep->share) != 0 || strcmp(me, rep->export_id) != 0) {
        rc = fail(err, cap, VERITY_ECORRUPT, "manifest and header name different exports");
        goto out;
    }
    rep->records = records;
    rc = check_sources(f, m, log_pub, log_vkey, require_proofs, rep, err, cap);
out:
    EVP_MD_CTX_free(md);
    json_decref(m);
    free(prev);
    free(cur);
    fclose(f);
    return rc;
}

int export_decrypt(const char *in, const char *out, EVP_PKEY *rcpt, uint64_t *fields_out,
                   char *err, size_t cap)
{
    FILE *f = fopen(in, "rb"), *o = NULL;
    if (!f)
        return fail(err, cap, -errno, "cannot open %s", in);
    o = fopen(out, "wb");
    int rc = 0;
    char *line = NULL;
    size_t lc = 0;
    ssize_t got;
    *fields_out = 0;
    if (!o) {
        rc = fail(err, cap, -errno, "cannot write %s", out);
        goto done;
    }
    while (!rc && (got = getline(&line, &lc, f)) > 0) {
        json_t *j = json_loadb(line, (size_t)got, 0, NULL);
        const char *type = json_string_value(json_object_get(j, "type"));
        if (!j || !type || strcmp(type, "record") != 0) {
            json_decref(j);
            if (fwrite(line, 1, (size_t)got, o) != (size_t)got)
                rc = -EIO;
            continue;
        }
        const char *pos = json_string_value(json_object_get(j, "pos"));
        json_t *value = json_object_get(j, "value"), *commit = json_object_get(j, "commit");
        const char *path;
        json_t *cv;
        json_object_foreach(commit, path, cv) {
            json_t *enc = jp_get(value, path);
            if (!json_is_object(enc) || !json_object_get(enc, "epk") || !pos)
                continue;
            json_t *plain = NULL;
            if ((rc = xf_decrypt(rcpt, enc, path, pos, &plain))) {
                fail(err, cap, rc, "%s %s: cannot decrypt (wrong key or altered)", pos, path);
                break;
            }
            /* replace in place: enc's parent holds it under the last token */
            json_t *copy = json_deep_copy(enc);
            json_object_clear(enc);
            json_object_set_new(enc, "plaintext", plain);
            json_decref(copy);
            (*fields_out)++;
        }
        char *s = json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS);
        if (!rc && (!s || fprintf(o, "%s\n", s) < 0))
            rc = -EIO;
        free(s);
        json_decref(j);
    }
done:
    free(line);
    fclose(f);
    if (o && fclose(o) != 0 && !rc)
        rc = -EIO;
    return rc;
}

json_t *export_reveal(const struct xf_keys *k, const char *position, const char *path,
                      const json_t *orig)
{
    uint8_t salt[16];
    char ss[32];
    if (xf_salt(k, position, path, salt))
        return NULL;
    sh_b64url_enc(salt, 16, ss);
    return json_pack("{s:s, s:s, s:O, s:s}", "position", position, "path", path, "value", orig,
                     "salt", ss);
}

int export_check_reveal(const char *export_path, const json_t *reveal, char *err, size_t cap)
{
    const char *pos = json_string_value(json_object_get(reveal, "position"));
    const char *path = json_string_value(json_object_get(reveal, "path"));
    const char *salts = json_string_value(json_object_get(reveal, "salt"));
    const json_t *value = json_object_get(reveal, "value");
    uint8_t salt[16];
    size_t n;
    if (!pos || !path || !salts || !value ||
        sh_b64url_dec(salts, strlen(salts), salt, sizeof salt, &n) || n != 16)
        return fail(err, cap, VERITY_EINVAL, "reveal needs position, path, value and salt");
    FILE *f = fopen(export_path, "rb");
    if (!f)
        return fail(err, cap, -errno, "cannot open %s", export_path);
    int rc = fail(err, cap, VERITY_ENOTFOUND, "no record at %s in the export", pos);
    char *line = NULL;
    size_t lc = 0;
    ssize_t got;
    while ((got = getline(&line, &lc, f)) > 0) {
        json_t *j = json_loadb(line, (size_t)got, 0, NULL);
        const char *p = json_string_value(json_object_get(j, "pos"));
        if (p && strcmp(p, pos) == 0) {
            const char *c = json_string_value(json_object_get(json_object_get(j, "commit"), path));
            char want[44];
            if (!c)
                rc = fail(err, cap, VERITY_ENOTFOUND, "record %s has no commitment for %s", pos,
                          path);
            else if (xf_commit(salt, value, want) || strlen(c) != 43 ||
                     CRYPTO_memcmp(c, want, 43) != 0)
                rc = fail(err, cap, VERITY_ESIGNATURE,
                          "the revealed value does not match the commitment of %s %s", pos, path);
            else
                rc = 0;
            json_decref(j);
            break;
        }
        json_decref(j);
    }
    free(line);
    fclose(f);
    return rc;
}
