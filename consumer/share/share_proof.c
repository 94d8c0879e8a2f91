/*
 * Inclusion proofs in exports (docs/SHARING.md "Proofs"): the gateway's
 * side (fetching a partition's signed C2SP checkpoint and the inclusion
 * proofs of the batches that hold the exported records from the broker's
 * admin HTTP API, broker/http_proof.c) and the recipient's side (checking
 * them offline, share_export.c calls sp_*).
 *
 * A proof line of an export:
 *     {"type":"proof","topic":T,"partition":P,"index":I,"leaf":B64,"proof":[B64...]}
 * leaf is the 76-byte leaf data of one batch (storage/merkle.h: base offset,
 * record count, previous and own chain hash); proof is its RFC 6962 audit
 * path in the tree of the size named by the partition's checkpoint note
 * (the manifest's sources[k].tree). A record line is proven when a proof
 * line of its partition came before it (after the previous record of that
 * partition) whose leaf's offsets [base, base + count) hold the record's
 * offset. The leaf hashes and proof paths are what Go's sumdb/tlog
 * CheckRecord reads (tests/go/proofcheck "export").
 *
 * HTTP goes through libverity's admin client (verity_admin_get): HTTP/1.0,
 * one request per connection, plain TCP (the broker's admin port on
 * loopback or a LAN), answers capped at SP_HTTP_BODY_MAX, a deadline.
 */
#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "consumer/share/share.h"
#include "storage/merkle.h"
#include "verity/verity.h"
#include "storage/note.h"

#define SP_HTTP_BODY_MAX (8u << 20)
#define SP_HTTP_TIMEOUT_S 10

/* Percent-encodes s (RFC 3986 unreserved kept) into out; 0 or VERITY_ELIMIT. */
static int url_enc(const char *s, char *out, size_t cap)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t o = 0;
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        bool keep = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '-' || c == '.' || c == '_' || c == '~';
        if (o + 4 > cap)
            return VERITY_ELIMIT;
        if (keep) {
            out[o++] = (char)c;
        } else {
            out[o++] = '%';
            out[o++] = hex[c >> 4];
            out[o++] = hex[c & 15];
        }
    }
    out[o] = '\0';
    return 0;
}

int sp_http_get(const char *base, const char *path, char **body_out, size_t *len_out)
{
    *body_out = NULL;
    *len_out = 0;
    if (strncmp(base, "http://", 7) != 0)
        return VERITY_EINVAL;
    char hostport[300];
    const char *h = base + 7, *slash = strchr(h, '/');
    size_t hl = slash ? (size_t)(slash - h) : strlen(h);
    if (hl == 0 || hl >= sizeof hostport)
        return VERITY_EINVAL;
    memcpy(hostport, h, hl);
    hostport[hl] = '\0';
    int rc = verity_admin_get(hostport, path, SP_HTTP_TIMEOUT_S * 1000, SP_HTTP_BODY_MAX,
                              body_out, len_out);
    switch (rc) {
    case -EINVAL:
        return VERITY_EINVAL;
    case -ENXIO:
        return -EHOSTUNREACH;
    case -EMSGSIZE:
        return VERITY_ELIMIT;
    case -EPROTO:
        return VERITY_ECORRUPT;
    default:
        return rc;
    }
}

int sp_checkpoint_fetch(const char *base, const char *topic, uint32_t partition, uint64_t size,
                        char **note_out, uint64_t *size_out)
{
    char t[3 * 256 + 1], path[1200], origin[NOTE_ORIGIN_MAX + 1];
    uint8_t root[MT_HASH_SIZE];
    char *body = NULL;
    size_t len;
    *note_out = NULL;
    if (url_enc(topic, t, sizeof t))
        return VERITY_ELIMIT;
    snprintf(path, sizeof path, "/v1/proof/checkpoint?topic=%s&partition=%u%s%llu", t, partition,
             size ? "&size=" : "", size ? (unsigned long long)size : 0ull);
    if (!size) /* the "%s%llu" above printed a bare 0 */
        path[strlen(path) - 1] = '\0';
    int st = sp_http_get(base, path, &body, &len);
    if (st < 0)
        return st;
    if (st != 200) {
        free(body);
        return st == 404 ? VERITY_ENOTFOUND : st == 501 ? VERITY_EUNSUPPORTED : VERITY_ECORRUPT;
    }
    int rc = note_checkpoint_parse(body, len, origin, sizeof origin, size_out, root);
    if (rc || (size && *size_out != size) || *size_out == 0) {
        free(body);
        return rc ? rc : VERITY_ECORRUPT;
    }
    *note_out = body;
    return 0;
}

int sp_leaves_fetch(const char *base, const char *topic, uint32_t partition, uint64_t offset,
                    uint64_t size, json_t **items_out)
{
    char t[3 * 256 + 1], path[1200];
    char *body = NULL;
    size_t len;
    *items_out = NULL;
    if (url_enc(topic, t, sizeof t))
        return VERITY_ELIMIT;
    snprintf(path, sizeof path, "/v1/proof/leaves?topic=%s&partition=%u&offset=%llu&size=%llu", t,
             partition, (unsigned long long)offset, (unsigned long long)size);
    int st = sp_http_get(base, path, &body, &len);
    if (st < 0)
        return st;
    json_t *j = st == 200 ? json_loadb(body, len, 0, NULL) : NULL;
    free(body);
    if (st != 200)
        return st == 404 ? VERITY_EOFFSET : VERITY_ECORRUPT;
    json_t *items = json_object_get(j, "items");
    if (!json_is_array(items) ||
        (uint64_t)json_integer_value(json_object_get(j, "tree_size")) != size) {
        json_decref(j);
        return VERITY_ECORRUPT;
    }
    *items_out = json_incref(items);
    json_decref(j);
    return 0;
}

/* ---- the recipient's side ------------------------------------------------------ */

/* Decodes standard base64 of exactly n bytes. */
static int b64_exact(const json_t *s, uint8_t *out, size_t n)
{
    if (!json_is_string(s))
        return VERITY_ECORRUPT;
    long got = note_b64_decode(json_string_value(s), json_string_length(s), out, n);
    return got == (long)n ? 0 : VERITY_ECORRUPT;
}

int sp_leaf_decode(const json_t *leaf_b64, uint8_t leaf[SP_LEAF_SIZE], uint64_t *base,
                   uint32_t *count)
{
    struct mt_leaf l;
    if (b64_exact(leaf_b64, leaf, MT_LEAF_SIZE) || mt_leaf_decode(leaf, MT_LEAF_SIZE, &l))
        return VERITY_ECORRUPT;
    *base = l.base_offset;
    *count = l.record_count;
    return 0;
}

/* The key name of the first signature line of a note (what a PEM key
 * alone does not say). */
static int note_signer_name(const char *note, size_t len, char *name, size_t cap)
{
    const char *sep = memmem(note, len, "\n\n", 2);
    if (!sep)
        return VERITY_ECORRUPT;
    const char *p = sep + 2, *end = note + len;
    static const char dash[] = "\xe2\x80\x94 ";
    if ((size_t)(end - p) < sizeof dash || memcmp(p, dash, sizeof dash - 1) != 0)
        return VERITY_ECORRUPT;
    p += sizeof dash - 1;
    const char *sp = memchr(p, ' ', (size_t)(end - p));
    if (!sp || sp == p || (size_t)(sp - p) >= cap)
        return VERITY_ECORRUPT;
    memcpy(name, p, (size_t)(sp - p));
    name[sp - p] = '\0';
    return 0;
}

int sp_note_check(const char *note, size_t len, const char *vkey, EVP_PKEY *log_pub,
                  const char *topic, uint32_t partition, uint64_t *size, uint8_t root[32],
                  bool *signed_out)
{
    char origin[NOTE_ORIGIN_MAX + 1];
    size_t text_len = len;
    int rc = note_checkpoint_parse(note, len, origin, sizeof origin, size, root);
    *signed_out = false;
    if (rc)
        return VERITY_ECORRUPT;
    /* the origin is <name>/<topic>/<partition> (docs/PROOFS.md "Names") */
    char tail[300];
    int tl = snprintf(tail, sizeof tail, "/%s/%u", topic, partition);
    size_t ol = strlen(origin);
    if (tl < 0 || (size_t)tl >= sizeof tail || ol <= (size_t)tl ||
        strcmp(origin + ol - (size_t)tl, tail) != 0)
        return VERITY_ECORRUPT;
    struct note_vkey k;
    if (vkey) {
        if (note_vkey_parse(vkey, &k) || k.type != NOTE_TYPE_ED25519)
            return VERITY_EINVAL;
    } else if (log_pub) {
        if (note_signer_name(note, len, k.name, sizeof k.name) || note_raw_public(log_pub, k.pub))
            return VERITY_ECORRUPT;
        k.type = NOTE_TYPE_ED25519;
        k.id = note_key_id(k.name, k.type, k.pub);
    } else {
        return 0; /* parsed, not signature-checked */
    }
    if (note_open(note, len, &k, 1, &text_len, NULL))
        return VERITY_ESIGNATURE;
    *signed_out = true;
    return 0;
}

int sp_proof_check(const json_t *line, uint64_t tree_size, const uint8_t root[32],
                   uint64_t *index_out, uint64_t *base_out, uint32_t *count_out,
                   uint8_t leaf_out[SP_LEAF_SIZE])
{
    const json_t *idx = json_object_get(line, "index"), *path = json_object_get(line, "proof");
    uint8_t hashes[MT_PROOF_MAX][MT_HASH_SIZE], lh[MT_HASH_SIZE];
    size_t np = json_array_size(path);
    if (!json_is_integer(idx) || json_integer_value(idx) < 0 || !json_is_array(path) ||
        np > MT_PROOF_MAX ||
        sp_leaf_decode(json_object_get(line, "leaf"), leaf_out, base_out, count_out))
        return VERITY_ECORRUPT;
    for (size_t i = 0; i < np; i++)
        if (b64_exact(json_array_get(path, i), hashes[i], MT_HASH_SIZE))
            return VERITY_ECORRUPT;
    *index_out = (uint64_t)json_integer_value(idx);
    if (*index_out >= tree_size)
        return VERITY_ECHAIN;
    mt_leaf_hash(leaf_out, MT_LEAF_SIZE, lh);
    return mt_verify_inclusion(lh, *index_out, tree_size, (const uint8_t(*)[MT_HASH_SIZE])hashes,
                               np, root)
               ? VERITY_ECHAIN
               : 0;
}
