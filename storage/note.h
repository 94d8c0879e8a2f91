/*
 * note: C2SP signed notes (c2sp.org/signed-note v1.0.0), checkpoints
 * (c2sp.org/tlog-checkpoint v1.0.0), Ed25519 cosignatures
 * (c2sp.org/tlog-cosignature v1.0.1) and verifier keys, as Go's
 * golang.org/x/mod/sumdb/note reads them.
 *
 *   note      = text "\n" sigline+        text ends in "\n"; no control
 *                                         characters other than "\n"
 *   sigline   = "— " name " " base64(key_id[4] BE || sig) "\n"
 *   key_id    = SHA-256(name || 0x0A || type || public key)[:4]
 *               type 0x01 Ed25519 note signature over text,
 *               type 0x04 cosignature: sig = u64 BE time || Ed25519 over
 *               "cosignature/v1\ntime <t>\n" || text
 *   vkey      = name "+" hex8(key_id) "+" base64(type || public key)
 *   checkpoint text = origin "\n" decimal size "\n" base64(root) "\n"
 *
 * A note is accepted (note_open) only if it parses, at least one signature
 * line matches a trusted key by name and key id and verifies, and no
 * matching line fails to verify; lines from unknown keys are ignored.
 * Every function is reentrant.
 */
#ifndef VERITY_NOTE_H
#define VERITY_NOTE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <openssl/evp.h>

#define NOTE_BYTES_MAX    (64u << 10)
#define NOTE_SIGS_MAX     32 /* the spec asks verifiers to accept at least 16 */
#define NOTE_NAME_MAX     255
#define NOTE_VKEY_MAX     400
#define NOTE_TYPE_ED25519 0x01
#define NOTE_TYPE_COSIG   0x04
#define NOTE_ORIGIN_MAX   512

struct note_vkey {
    char name[NOTE_NAME_MAX + 1];
    uint32_t id;
    uint8_t type; /* NOTE_TYPE_ED25519 or NOTE_TYPE_COSIG */
    uint8_t pub[32];
};

/* Strict standard base64 (RFC 4648 section 4, padded, canonical).
 * b64_encode writes a NUL-terminated string (cap >= 4*ceil(n/3)+1) and
 * returns its length; b64_decode returns the decoded length or -1. */
size_t note_b64_encode(const uint8_t *in, size_t n, char *out);
long note_b64_decode(const char *in, size_t n, uint8_t *out, size_t cap);

/* Key names: non-empty, at most NOTE_NAME_MAX bytes, no spaces, '+' or
 * control characters. */
bool note_name_ok(const char *name);
uint32_t note_key_id(const char *name, uint8_t type, const uint8_t pub[32]);

/* name+hex8+base64(type||pub) for an Ed25519 key. 0 or VERITY_EINVAL. */
int note_vkey_format(const char *name, uint8_t type, EVP_PKEY *key, char *out, size_t cap)
    __attribute__((warn_unused_result));
/* Parses a verifier key string. 0 or VERITY_EINVAL (bad syntax, key id not
 * matching, unsupported type). */
int note_vkey_parse(const char *vkey, struct note_vkey *out) __attribute__((warn_unused_result));

/* Builds the checkpoint text (origin, size, root). Returns its length, or
 * VERITY_EINVAL when the origin is empty, has a newline, or out is small. */
int note_checkpoint_text(const char *origin, uint64_t size, const uint8_t root[32], char *out,
                         size_t cap) __attribute__((warn_unused_result));
/* Parses the first three lines of a checkpoint text (extension lines are
 * allowed and ignored). 0 or VERITY_ECORRUPT. */
int note_checkpoint_parse(const char *text, size_t len, char *origin, size_t origin_cap,
                          uint64_t *size, uint8_t root[32]) __attribute__((warn_unused_result));

/* Signs text (which must end in "\n") with key under name: writes text,
 * the blank line and the signature line into out. Returns the note length
 * or a negative error. */
int note_sign(const char *text, size_t len, const char *name, EVP_PKEY *key, char *out, size_t cap)
    __attribute__((warn_unused_result));
/* One cosignature line ("— name base64(id || u64 time || sig)\n") over text.
 * Returns the line length or a negative error. */
int note_cosign_line(const char *text, size_t len, const char *name, EVP_PKEY *key, uint64_t time_s,
                     char *out, size_t cap) __attribute__((warn_unused_result));

/* Verifies msg against the trusted keys. On 0, *text_len is the length of
 * the signed text (msg[0, *text_len)), and *verified has bit i set for each
 * keys[i] that signed (may be NULL). VERITY_ECORRUPT for a malformed note,
 * VERITY_ESIGNATURE when no trusted key verifies or a trusted key's line
 * fails. */
int note_open(const char *msg, size_t len, const struct note_vkey *keys, size_t nkeys,
              size_t *text_len, uint32_t *verified) __attribute__((warn_unused_result));

/* The raw 32-byte Ed25519 public key of key. 0 or VERITY_EINVAL. */
int note_raw_public(EVP_PKEY *key, uint8_t pub[32]) __attribute__((warn_unused_result));

#endif
