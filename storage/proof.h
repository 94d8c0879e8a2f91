/*
 * proof: builds and checks the proofs a third party verifies, from a
 * partition log and its Merkle tree (storage/merkle.h): signed C2SP
 * checkpoints, inclusion proofs (tlog-proof text and JSON) and consistency
 * proofs (JSON). Shared by the `verity proof` CLI and the broker's admin
 * HTTP API, so both print the same bytes.
 *
 * JSON inclusion proof: {"type":"inclusion","origin","index","tree_size",
 *   "offset","base_offset","record_index","leaf" (base64 leaf data),
 *   "leaf_hash","root","proof":[base64...],"checkpoint" (note),
 *   "batch" (base64 stored batch bytes, optional),"tlog_proof" (text)}
 * JSON consistency proof: {"type":"consistency","origin","old_size",
 *   "new_size","old_root","new_root","proof":[...],"old_checkpoint",
 *   "new_checkpoint"}
 *
 * Only the durable prefix of a log is ever signed (proof_durable_size), so
 * a crash cannot make Verity sign two inconsistent trees (the `os`
 * durability policy calls written bytes durable; see docs/PROOFS.md).
 * Owner thread of the log only.
 */
#ifndef VERITY_PROOF_H
#define VERITY_PROOF_H

#include <stdbool.h>
#include <stdint.h>

#include <jansson.h>
#include <openssl/evp.h>

#include "storage/note.h"
#include "storage/vlog.h"

#define PROOF_NAME_DEFAULT   "verity.example/local"
#define PROOF_CHECKPOINT_MAX 2048

struct proof_signer {
    EVP_PKEY *key;                    /* Ed25519, borrowed */
    const char *name;                 /* key name, e.g. verity.example/<cluster> */
    char origin[NOTE_ORIGIN_MAX + 1]; /* <name>/<topic>/<partition> */
};

/* Fills s->origin from name, topic, partition. 0 or VERITY_EINVAL. */
int proof_signer_init(struct proof_signer *s, EVP_PKEY *key, const char *name, const char *topic,
                      uint32_t partition) __attribute__((warn_unused_result));

/* Leaves whose batches are durable (all of them for a read-only log). */
int proof_durable_size(struct vlog *log, uint64_t *n) __attribute__((warn_unused_result));

/* Signs the checkpoint of the first n leaves into out (NUL-terminated).
 * Returns the note length or a negative error. */
int proof_checkpoint(struct vlog *log, const struct proof_signer *s, uint64_t n, char *out,
                     size_t cap) __attribute__((warn_unused_result));

/* Inclusion proof of the record at offset in the tree of size n (0 = the
 * durable size). *out is a new JSON object. VERITY_EOFFSET when the offset
 * is not in the first n batches; VERITY_EUNSUPPORTED when the tree is off. */
int proof_inclusion(struct vlog *log, const struct proof_signer *s, uint64_t offset, uint64_t n,
                    bool with_batch, json_t **out) __attribute__((warn_unused_result));

/* Inclusion proofs, in the tree of size n (0 = the durable size), of up to
 * count (1..PROOF_LEAVES_MAX) consecutive leaves starting with the one that
 * holds offset: {"tree_size", "items":[{"index","leaf","proof"}]} (base64,
 * as in an inclusion proof). No checkpoint is signed: the caller fetches
 * the one of size n once (the sharing gateway proves every exported record
 * this way). *out is a new JSON object; VERITY_EOFFSET as above. */
#define PROOF_LEAVES_MAX 256
int proof_leaves(struct vlog *log, uint64_t offset, uint64_t n, uint32_t count, json_t **out)
    __attribute__((warn_unused_result));

/* Consistency proof between tree sizes m <= n (n = 0: the durable size). */
int proof_consistency(struct vlog *log, const struct proof_signer *s, uint64_t m, uint64_t n,
                      json_t **out) __attribute__((warn_unused_result));

/* Checks a proof offline (JSON object of either type, or tlog-proof text)
 * with the trusted keys. On 0, *summary is a new JSON object saying what
 * was proven. VERITY_ESIGNATURE, VERITY_ECHAIN or VERITY_ECORRUPT. */
int proof_verify_text(const char *buf, size_t len, const struct note_vkey *keys, size_t nkeys,
                      json_t **summary) __attribute__((warn_unused_result));

#endif
