/*
 * libvshare: the sharing gateway's core, shared by `verity-gateway`
 * (consumer/share/gateway.c) and `verity share` (tools/cmd_share.c).
 * Built on libverity's public API only (include/verity/), never on broker
 * internals.
 *
 * Pieces (docs/SHARING.md tells the whole story):
 *   share_util.c    base64url, hex, HMAC, HKDF, RFC 3339 times, durations
 *   paseto.c        PASETO v4.public tokens (Ed25519 over PAE)
 *   share_spec.c    a share: scope, filter, field transformations, recipient;
 *                   its JSON form, scope digest, token claims, profile file
 *   share_xform.c   the transformations and salted commitments of one record
 *   share_export.c  export lines, the signed manifest, offline verification,
 *                   reveal / check-reveal, recipient decryption
 *   share_store.c   the shares topic (shares, uses, revocations) and the
 *                   audit topic, read and written through libverity
 *
 * Errors: functions return 0 or a negative code from verity/errors.h and,
 * where they take (char *err, size_t cap), write a one-line reason there.
 */
#ifndef VERITY_SHARE_H
#define VERITY_SHARE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>
#include <openssl/evp.h>

#include "verity/verity.h"

#define SH_WUR __attribute__((warn_unused_result))

#define SHARE_ID_LEN 32               /* hex characters of a share id */
#define SHARE_TOPICS_MAX 16           /* topics in one share */
#define SHARE_FIELDS_MAX 64           /* field rules in one share */
#define SHARE_PREDS_MAX 16            /* filter predicates in one share */
#define SHARE_RANGES_MAX 16           /* named ranges of one generalise rule */
#define SHARE_TOKEN_MAX 4096          /* bytes in a token */
#define SHARE_SPEC_TEXT_MAX 512       /* bytes in one field / predicate rule */
#define SHARE_LINE_MAX (4u << 20)     /* bytes in one export line */
#define SHARE_POLICY_VERSION 1        /* version of the transformation semantics */
#define SHARE_STATE_TOPIC "_verity.shares"
#define SHARE_AUDIT_TOPIC "_verity.share-audit"
#define SHARE_IMPLICIT "verity-share-v1" /* PASETO implicit assertion */

/* ---- share_util.c ---------------------------------------------------------- */

/* base64url without padding; out must hold 4 * ceil(n / 3) + 1 bytes; returns
 * the length written (NUL-terminated). */
size_t sh_b64url_enc(const uint8_t *in, size_t n, char *out);
/* Strict decode (no padding, no whitespace, canonical trailing bits).
 * Returns 0 or VERITY_EINVAL; *out_len bytes written (cap checked). */
int sh_b64url_dec(const char *in, size_t n, uint8_t *out, size_t cap, size_t *out_len) SH_WUR;
/* Heap string of the base64url of in; NULL on allocation failure. */
char *sh_b64url_str(const uint8_t *in, size_t n);
void sh_hex(const uint8_t *in, size_t n, char *out); /* out: 2n + 1 */
int sh_unhex(const char *s, uint8_t *out, size_t n) SH_WUR; /* exactly 2n hex chars */
/* SHA-256 of the concatenation of n parts. */
int sh_sha256v(const void *const *parts, const size_t *lens, size_t n, uint8_t out[32]) SH_WUR;
/* HMAC-SHA-256 with a key of at most 64 bytes. The padded-key states of
 * the last few keys are cached per thread; sh_hmac_forget wipes them. */
int sh_hmac(const uint8_t *key, size_t klen, const void *d, size_t n, uint8_t out[32]) SH_WUR;
void sh_hmac_forget(void);
int sh_hkdf(const uint8_t *ikm, size_t ikm_len, const void *salt, size_t salt_len,
            const void *info, size_t info_len, uint8_t *out, size_t out_len) SH_WUR;
int sh_random(uint8_t *out, size_t n) SH_WUR;
/* "YYYY-MM-DDTHH:MM:SS[.fff](Z|+HH:MM)" or "YYYY-MM-DD" -> ms since epoch. */
int sh_time_parse(const char *s, int64_t *ms_out) SH_WUR;
void sh_time_fmt(int64_t ms, char out[32]); /* "YYYY-MM-DDTHH:MM:SSZ" */
/* "90s", "30m", "12h", "7d" -> ms. */
int sh_duration_parse(const char *s, int64_t *ms_out) SH_WUR;
int64_t sh_now_ms(void);
/* Canonical JSON (compact, sorted keys, any value); heap string or NULL. */
char *sh_canon(const json_t *v);
/* Reads a whole file of at most max bytes; NUL-terminated heap buffer. */
int sh_read_file(const char *path, size_t max, char **out, size_t *len_out) SH_WUR;
/* Writes a file atomically (tmp + fsync + rename) with the given mode. */
int sh_write_file(const char *path, const void *data, size_t len, int mode) SH_WUR;
/* Ed25519 / X25519 key files (PEM). */
int sh_load_private(const char *path, EVP_PKEY **out) SH_WUR;
int sh_load_public(const char *path, EVP_PKEY **out) SH_WUR;
int sh_raw_public(EVP_PKEY *k, uint8_t out[32]) SH_WUR;

/* ---- paseto.c -------------------------------------------------------------- */

/* PAE(pieces) per the PASETO spec: LE64(n) || for each piece LE64(len) ||
 * piece (the top bit of each LE64 cleared). Returns a heap buffer in *out. */
int paseto_pae(const uint8_t *const *pieces, const size_t *lens, size_t n, uint8_t **out,
               size_t *out_len) SH_WUR;
/* v4.public: token = "v4.public." b64url(m || sig) ["." b64url(footer)],
 * sig = Ed25519(sk, PAE("v4.public.", m, footer, implicit)). footer and
 * implicit may be NULL (empty). *token_out is a heap string. */
int paseto_v4_sign(EVP_PKEY *sk, const uint8_t *m, size_t m_len, const char *footer,
                   const char *implicit, char **token_out) SH_WUR;
/* Checks the header, the encoding and the signature with pk. On success
 * *m_out (heap, NUL-terminated) holds the payload and *footer_out (heap,
 * may be "") the footer. VERITY_EINVAL: not a v4.public token or badly
 * encoded; VERITY_ESIGNATURE: the signature does not verify. */
int paseto_v4_verify(EVP_PKEY *pk, const char *token, const char *implicit, uint8_t **m_out,
                     size_t *m_len_out, char **footer_out) SH_WUR;
/* The payload of a v4.public token without checking the signature (a
 * recipient reading its own token). Heap string in *m_out. */
int paseto_v4_peek(const char *token, char **m_out) SH_WUR;

/* ---- share_spec.c ---------------------------------------------------------- */

enum xf_op {
    XF_KEEP = 0, XF_DROP, XF_REPLACE, XF_MASK, XF_HASH, XF_TOKENIZE, XF_GENERALISE,
    XF_DATE_SHIFT, XF_ENCRYPT,
};
enum xf_gen { GEN_DAY = 0, GEN_MONTH, GEN_YEAR, GEN_BUCKET, GEN_RANGES };

struct xf_range {
    double lo, hi;                /* lo <= v <= hi; hi may be +inf */
    char *label;
};

struct xf_field {
    char *text;                   /* the rule as written: "/path=op[:args]" */
    char *path;                   /* JSON pointer */
    enum xf_op op;
    json_t *replace;              /* XF_REPLACE */
    bool mask_first;              /* XF_MASK: keep the first (else last) n */
    uint32_t mask_n;
    enum xf_gen gen;              /* XF_GENERALISE */
    double bucket;
    struct xf_range ranges[SHARE_RANGES_MAX];
    uint32_t range_count;
    char *entity;                 /* XF_DATE_SHIFT: pointer to the entity id */
    uint32_t shift_days_max;
};

enum pred_op { PRED_EQ = 0, PRED_NE, PRED_LT, PRED_LE, PRED_GT, PRED_GE, PRED_EXISTS };

struct share_pred {
    char *text;
    char *path;
    enum pred_op op;
    json_t *value;
};

struct share_recipient {
    char *name, *contact, *purpose;
    bool has_key;
    uint8_t x25519[32];           /* for XF_ENCRYPT */
};

struct share_spec {
    char id[SHARE_ID_LEN + 1];
    char *tenant, *issuer;
    char *topics[SHARE_TOPICS_MAX];
    uint32_t topic_count;
    int64_t from_offset, to_offset; /* -1: open */
    int64_t from_time_ms, to_time_ms; /* INT64_MIN / INT64_MAX: open */
    struct share_pred preds[SHARE_PREDS_MAX];
    uint32_t pred_count;
    struct xf_field fields[SHARE_FIELDS_MAX];
    uint32_t field_count;
    int64_t created_ms, expires_ms;
    uint32_t max_uses;            /* 0: unlimited */
    uint32_t policy_version;
    struct share_recipient rcpt;
};

const char *xf_op_name(enum xf_op op);
/* "/path=op[:args]" (see docs/SHARING.md). Returns 0 or VERITY_EINVAL. */
int xf_field_parse(const char *text, struct xf_field *out, char *err, size_t cap) SH_WUR;
void xf_field_deinit(struct xf_field *f);
/* "/path==value", "!=", "<", "<=", ">", ">=", or "/path exists". */
int share_pred_parse(const char *text, struct share_pred *out, char *err, size_t cap) SH_WUR;
void share_pred_deinit(struct share_pred *p);
bool share_pred_match(const struct share_pred *p, const json_t *doc);

void share_spec_init(struct share_spec *s);
void share_spec_deinit(struct share_spec *s);
int share_spec_from_json(const json_t *j, struct share_spec *out, char *err, size_t cap) SH_WUR;
json_t *share_spec_to_json(const struct share_spec *s);
/* SHA-256 of the canonical JSON of the spec: what a token is bound to. */
int share_scope_digest(const struct share_spec *s, uint8_t out[32]) SH_WUR;
bool share_has_topic(const struct share_spec *s, const char *topic);

/* Token claims: {"sid","scope","exp","iat","iss"}. */
struct share_claims {
    char sid[SHARE_ID_LEN + 1];
    uint8_t scope[32];
    int64_t exp_ms, iat_ms;
};
int share_token_issue(EVP_PKEY *sk, const struct share_spec *s, char **token_out) SH_WUR;
/* Verifies and parses a token. VERITY_EINVAL (malformed), VERITY_ESIGNATURE. */
int share_token_check(EVP_PKEY *pk, const char *token, struct share_claims *out) SH_WUR;
/* Parses claims JSON (no signature check). */
int share_claims_parse(const char *json, size_t len, struct share_claims *out) SH_WUR;

/* Delta Sharing profile: shareCredentialsVersion, endpoint, bearerToken,
 * expirationTime. */
struct share_profile {
    char *endpoint, *token;
    int64_t expires_ms;
};
int share_profile_parse(const char *text, size_t len, struct share_profile *out, char *err,
                        size_t cap) SH_WUR;
char *share_profile_dump(const char *endpoint, const char *token, int64_t expires_ms);
void share_profile_deinit(struct share_profile *p);

/* ---- share_xform.c --------------------------------------------------------- */

/* Keys of one share, derived from the gateway's 32-byte secret and the
 * share id (HKDF-SHA-256): unlinkable across shares. */
struct xf_keys {
    uint8_t hash[32];             /* HMAC pseudonyms */
    uint8_t siv[64];              /* AES-256-SIV tokens */
    uint8_t shift[32];            /* date shift per entity */
    uint8_t commit[32];           /* commitment salts */
    uint8_t eph[32];              /* ephemeral X25519 keys for encrypt */
};
int xf_keys_derive(const uint8_t secret[32], const char *share_id, struct xf_keys *out) SH_WUR;

/* Applies every field rule of s to doc (an object, changed in place):
 * position is "topic/partition/offset"; commits receives, for every field
 * not kept as is, path -> commitment. Rules on absent fields do nothing.
 * Returns 0, or VERITY_EINVAL with err when a rule cannot apply. */
int xf_apply(const struct share_spec *s, const struct xf_keys *k, const char *export_id,
             const char *position, json_t *doc, json_t *commits, char *err, size_t cap) SH_WUR;
/* The salt and commitment of one original value. */
int xf_salt(const struct xf_keys *k, const char *position, const char *path, uint8_t salt[16]) SH_WUR;
int xf_commit(const uint8_t salt[16], const json_t *orig, char out[44]) SH_WUR;
/* Owner side: a token back to its original value (new reference). */
int xf_detokenize(const struct xf_keys *k, const char *path, const char *token, json_t **out) SH_WUR;
/* Recipient side: decrypts an encrypted field with its X25519 private key. */
int xf_decrypt(EVP_PKEY *rcpt, const json_t *enc, const char *path, const char *position,
               json_t **out) SH_WUR;

/* The commitment of one original value given its canonical JSON. */
int xf_commit_canon(const uint8_t salt[16], const char *canon, size_t n, char out[44]) SH_WUR;
/* The new value of field rule f (not KEEP / DROP) for the original v of
 * doc (new reference, NULL on failure). canon: canon(v) when the caller has
 * it (canon_len bytes), else NULL. */
json_t *xf_value(const struct share_spec *s, const struct xf_keys *k, const char *export_id,
                 const char *position, const struct xf_field *f, const json_t *doc,
                 const json_t *v, const char *canon, size_t canon_len);

/* JSON pointer (RFC 6901) over objects and arrays: the value, or NULL. */
json_t *jp_get(const json_t *doc, const char *ptr);

/* ---- share_line.c ---------------------------------------------------------- */

/* A growable byte buffer (libc memory, whatever allocator jansson uses). */
struct sh_buf {
    char *p;
    size_t n, cap;
};
int sh_buf_put(struct sh_buf *b, const void *d, size_t n) SH_WUR;
void sh_buf_free(struct sh_buf *b);

/* What turning records of one share into lines needs, computed once per
 * export: each rule's path as a JSON string and, when every rule is on a
 * top-level member ("/name"), the plan of the scanner path. */
struct xf_plan {
    char *paths_json[SHARE_FIELDS_MAX];
    bool fast;                    /* the scanner path applies to this share */
    bool mini;                    /* predicates or date_shift: a small doc is built */
    char *key[SHARE_FIELDS_MAX];  /* each rule's member name (fast) */
    size_t key_len[SHARE_FIELDS_MAX];
    char *key_json[SHARE_FIELDS_MAX]; /* ... as a JSON string */
    char *need[SHARE_FIELDS_MAX + 2 * SHARE_PREDS_MAX]; /* members the small doc holds */
    size_t need_len[SHARE_FIELDS_MAX + 2 * SHARE_PREDS_MAX];
    uint32_t nneed;
};
int xf_plan_init(struct xf_plan *pl, const struct share_spec *s) SH_WUR;
void xf_plan_deinit(struct xf_plan *pl);

/* The strict scanner of share_line.c on its own: buf must be one JSON
 * object (whitespace around it allowed); its top-level members are noted in
 * top (key and value bytes as written; plain: a string without escapes).
 * 0, or -1 when the scanner declines: whatever it accepts, json_loadb
 * with JSON_REJECT_DUPLICATES accepts too, so on -1 ask jansson. */
struct sh_member {
    const unsigned char *k, *v;
    size_t kl, vl;
    bool plain;
};
#define SH_SCAN_TOP_MAX 64
int sh_scan_object(const void *buf, size_t len, struct sh_member top[SH_SCAN_TOP_MAX],
                   size_t *n) SH_WUR;
const struct sh_member *sh_member_get(const struct sh_member *m, size_t n, const char *key);
/* The member is the plain string s / a non-negative integer written in at
 * most 18 digits without sign or leading zero (false: not sure; ask jansson). */
bool sh_member_is(const struct sh_member *m, const char *s);
bool sh_member_u64(const struct sh_member *m, uint64_t *out);

/* One source record. */
struct xf_rec {
    const char *topic;
    uint32_t partition;
    uint64_t offset;
    int64_t ts_ms;
    const void *value;
    size_t len;
    uint64_t index;               /* the record's "i" in the export */
};

#define XF_LINE_SKIP 1            /* outside the time range or the filter: no line */
#define XF_LINE_NOT_OBJECT 2      /* not a JSON object: no line (counted as skipped) */
#define XF_LINE_FALLBACK 3        /* xf_line_fast only: the scanner declines */

/* Appends the record's export line ('\n'-terminated) to out: 0, XF_LINE_SKIP,
 * XF_LINE_NOT_OBJECT, or a negative error (err: which rule failed). On
 * anything but 0, out is left as it was. xf_line takes the scanner path when
 * it can and the jansson tree path otherwise; both give the same bytes
 * (tests/fuzz/fuzz_share.c selector 8 compares them). */
int xf_line(const struct xf_plan *pl, const struct share_spec *s, const struct xf_keys *k,
            const char *export_id, const struct xf_rec *r, struct sh_buf *out, char *err,
            size_t cap) SH_WUR;
int xf_line_tree(const struct xf_plan *pl, const struct share_spec *s, const struct xf_keys *k,
                 const char *export_id, const struct xf_rec *r, struct sh_buf *out, char *err,
                 size_t cap) SH_WUR;
int xf_line_fast(const struct xf_plan *pl, const struct share_spec *s, const struct xf_keys *k,
                 const char *export_id, const struct xf_rec *r, struct sh_buf *out, char *err,
                 size_t cap) SH_WUR;

/* ---- share_export.c -------------------------------------------------------- */

struct export_source {
    char *topic;
    uint32_t partition;
    uint64_t from, to;            /* offsets [from, to) read */
    bool has_ckpt;
    uint64_t ckpt_batch;
    uint8_t ckpt[VERITY_CHECKPOINT_SIZE];
    char *tree_note;              /* signed C2SP checkpoint the proofs use (heap) or NULL */
    uint64_t tree_size;           /* its tree size (0: no proofs for this source) */
    uint64_t proven;              /* records exported with a proof */
};

/* Builds, signs and returns the manifest line (heap, ends in '\n').
 * proof_lines: the body's proof lines (share_proof.c). */
char *export_manifest(EVP_PKEY *gw_key, const struct share_spec *s, const char *export_id,
                      uint64_t records, uint64_t lines, uint64_t proof_lines,
                      const uint8_t body_sha[32], const struct export_source *src, size_t nsrc,
                      int64_t now_ms);

struct verify_report {
    uint64_t records;
    uint32_t checkpoints;         /* checkpoints that verified */
    uint64_t covered;             /* records below a verified checkpoint */
    uint32_t trees;               /* tree checkpoint notes that parsed */
    uint32_t trees_signed;        /* ... and whose signature verified with the log key */
    uint64_t proof_lines;         /* proof lines whose audit path verified */
    uint64_t proven;              /* records inside a verified proof's batch */
    char share[SHARE_ID_LEN + 1];
    char export_id[64];
};
/* Verifies an export file offline: manifest signature with gw_pub, body
 * digest, record count, line order, checkpoint signatures (and their key
 * against log_pub when given), and every inclusion proof against its
 * partition's tree note (the note's signature with log_vkey, a C2SP
 * verifier key string, or log_pub; with neither, the notes are parsed but
 * not signature-checked and rep->trees_signed stays 0). With
 * require_proofs, a record without a proof fails. 0, VERITY_ESIGNATURE,
 * VERITY_ECORRUPT, VERITY_ECHAIN (a proof does not lead to its root, or a
 * record is not in its proof's batch). */
int export_verify(const char *path, EVP_PKEY *gw_pub, EVP_PKEY *log_pub, const char *log_vkey,
                  bool require_proofs, struct verify_report *rep, char *err, size_t cap) SH_WUR;
/* Replaces every encrypted field of every record with its plaintext. */
int export_decrypt(const char *in, const char *out, EVP_PKEY *rcpt, uint64_t *fields_out,
                   char *err, size_t cap) SH_WUR;
/* A reveal: {"position","path","value","salt"} (heap). */
json_t *export_reveal(const struct xf_keys *k, const char *position, const char *path,
                      const json_t *orig);
/* Checks a reveal against the commitment in the export. 0, VERITY_ENOTFOUND
 * (no such record or field), VERITY_ESIGNATURE (does not match). */
int export_check_reveal(const char *export_path, const json_t *reveal, char *err, size_t cap) SH_WUR;

/* ---- share_proof.c --------------------------------------------------------- */

#define SP_LEAF_SIZE 76           /* storage/merkle.h MT_LEAF_SIZE */

/* GET base (http://HOST:PORT) + path, HTTP/1.0, plain TCP. Returns the
 * HTTP status (body in *body_out, heap, NUL-terminated) or a negative
 * error. Blocking, with a 10 s timeout. */
int sp_http_get(const char *base, const char *path, char **body_out, size_t *len_out) SH_WUR;
/* The broker's signed checkpoint note of a partition at tree size size (0:
 * its current durable size). *note_out heap. VERITY_EUNSUPPORTED: the
 * broker keeps no tree; VERITY_ENOTFOUND: no such partition. */
int sp_checkpoint_fetch(const char *base, const char *topic, uint32_t partition, uint64_t size,
                        char **note_out, uint64_t *size_out) SH_WUR;
/* Up to 256 inclusion proofs of consecutive leaves from the one holding
 * offset, in the tree of size size: the "items" array (new reference).
 * VERITY_EOFFSET when offset is not in the first size leaves. */
int sp_leaves_fetch(const char *base, const char *topic, uint32_t partition, uint64_t offset,
                    uint64_t size, json_t **items_out) SH_WUR;
/* Decodes one item's base64 leaf data: the batch's offsets. */
int sp_leaf_decode(const json_t *leaf_b64, uint8_t leaf[SP_LEAF_SIZE], uint64_t *base,
                   uint32_t *count) SH_WUR;
/* Parses a partition's checkpoint note (its origin must end in
 * /topic/partition) and checks its signature with vkey (a C2SP verifier key
 * string) or log_pub (the name is read from the note); with neither it is
 * only parsed (*signed_out false). VERITY_ECORRUPT, VERITY_ESIGNATURE. */
int sp_note_check(const char *note, size_t len, const char *vkey, EVP_PKEY *log_pub,
                  const char *topic, uint32_t partition, uint64_t *size, uint8_t root[32],
                  bool *signed_out) SH_WUR;
/* Checks one proof line's audit path to root (RFC 9162 2.1.3.2). 0,
 * VERITY_ECORRUPT (malformed) or VERITY_ECHAIN (does not verify). */
int sp_proof_check(const json_t *line, uint64_t tree_size, const uint8_t root[32],
                   uint64_t *index_out, uint64_t *base_out, uint32_t *count_out,
                   uint8_t leaf_out[SP_LEAF_SIZE]) SH_WUR;

/* ---- share_store.c --------------------------------------------------------- */

struct share_entry {
    struct share_entry *next;
    struct share_spec spec;
    bool revoked;
    char *revoke_reason;
    uint32_t uses;
    json_t *exports;              /* export id -> use record (ends, starts) */
};

struct share_db {
    struct share_entry *head;
    uint64_t next_offset;         /* of the state topic */
    uint64_t bad_records;         /* records share_db_apply refused */
};

void share_db_init(struct share_db *db);
void share_db_deinit(struct share_db *db);
struct share_entry *share_db_find(struct share_db *db, const char *id);
/* Applies one state record ({"type":"share"|"use"|"revoke", ...}). Bad
 * records are ignored (returns VERITY_EINVAL, db unchanged). */
int share_db_apply(struct share_db *db, const void *value, size_t len) SH_WUR;

/* Reads the state topic from db->next_offset up to its current end. */
int share_db_catch_up(struct share_db *db, struct verity_client *admin,
                      struct verity_consumer **cons, const char *broker, int timeout_ms) SH_WUR;
/* Creates the state and audit topics when missing. */
int share_topics_ensure(struct verity_client *admin) SH_WUR;
/* Appends one JSON record to topic (synchronously). */
int share_append(struct verity_producer *p, const char *topic, json_t *rec) SH_WUR;
/* An audit record with the disclosure fields of s filled in (s may be NULL). */
json_t *share_audit_new(const char *event, const char *outcome, const struct share_spec *s,
                        const char *client, int64_t now_ms);

#endif
