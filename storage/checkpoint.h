/*
 * Checkpoints and anchors: signed statements of (offset, chain hash, record
 * count, time) that let an auditor verify a log with the public key alone.
 *
 * A checkpoint is the value of the single record of a control batch whose
 * key is BATCH_CONTROL_CHECKPOINT. The anchor file (<dir>/anchor) holds the
 * same 160 bytes, after the 4-byte magic "VRA1", for the oldest remaining
 * segment once retention has deleted older ones.
 *
 * Payload (160 bytes, little-endian):
 *     0  1 version (1)
 *     1  1 flags: bit 0 = signed
 *     2  6 reserved, 0
 *     8  8 offset: everything below it is covered
 *    16 32 chain: chain hash of the batch just below offset (zeros if none)
 *    48  8 record_count: data (non-control) records below offset
 *    56  8 time_ms
 *    64 32 signer's raw Ed25519 public key (zeros when unsigned)
 *    96 64 Ed25519 signature over "VERITY-CKPT-1" || bytes[0,96)
 */
#ifndef VERITY_CHECKPOINT_H
#define VERITY_CHECKPOINT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <openssl/evp.h>

#define CKPT_PAYLOAD_SIZE 160
#define CKPT_ANCHOR_MAGIC "VRA1"
#define CKPT_ANCHOR_SIZE (4 + CKPT_PAYLOAD_SIZE)

struct ckpt {
    uint64_t offset;
    uint8_t chain[32];
    uint64_t record_count;
    int64_t time_ms;
    bool is_signed;
    uint8_t pubkey[32];
    uint8_t signature[64];
};

/* Encodes ck into out (160 bytes), signing with key when key is not NULL
 * (then ck->pubkey/signature are filled in too). Returns 0 or an error. */
int ckpt_encode(struct ckpt *ck, EVP_PKEY *key, uint8_t *out) __attribute__((warn_unused_result));
/* Decodes a 160-byte payload (structure only). 0 or VERITY_ECORRUPT. */
int ckpt_decode(const uint8_t *buf, size_t len, struct ckpt *out) __attribute__((warn_unused_result));
/* Verifies the signature with pub (NULL: with the embedded key, which proves
 * only integrity, not origin). 0, VERITY_ESIGNATURE, or VERITY_ECORRUPT. */
int ckpt_verify(const uint8_t *buf, size_t len, EVP_PKEY *pub) __attribute__((warn_unused_result));

/* Ed25519 key files (PEM). keygen writes <prefix>.key (0600) and <prefix>.pub. */
int ckpt_keygen(const char *key_path, const char *pub_path) __attribute__((warn_unused_result));
int ckpt_load_private(const char *path, EVP_PKEY **out) __attribute__((warn_unused_result));
int ckpt_load_public(const char *path, EVP_PKEY **out) __attribute__((warn_unused_result));

/* Anchor file: write atomically (tmp, fsync, rename, fsync dir) / read. */
int ckpt_anchor_write(const char *dir, struct ckpt *ck, EVP_PKEY *key) __attribute__((warn_unused_result));
/* 0 with *out, VERITY_ENOTFOUND when there is no anchor, or an error.
 * raw_out_or_null, when given, receives the CKPT_PAYLOAD_SIZE (160) payload
 * bytes (without the magic), ready for ckpt_verify. */
int ckpt_anchor_read(const char *dir, struct ckpt *out, uint8_t *raw_out_or_null)
    __attribute__((warn_unused_result));

/* The same two through a vio table (NULL = vio_posix), for fault tests. */
struct vio;
int ckpt_anchor_write_io(const char *dir, struct ckpt *ck, EVP_PKEY *key, const struct vio *io)
    __attribute__((warn_unused_result));
int ckpt_anchor_read_io(const char *dir, struct ckpt *out, uint8_t *raw_out_or_null,
                        const struct vio *io) __attribute__((warn_unused_result));

#endif
