/*
 * tproof: text formats around proofs, and the offline check of a Verity
 * inclusion proof.
 *
 * Inclusion proof, c2sp.org/tlog-proof@v1:
 *     c2sp.org/tlog-proof@v1
 *     extra <base64(extra)>            Verity always writes it, see below
 *     index <leaf index, decimal>
 *     <base64 hash>                    zero or more, leaf's sibling first
 *     <blank line>
 *     <checkpoint note, verbatim>
 *
 * Verity's extra data: leaf data (MT_LEAF_SIZE = 76, storage/merkle.h) ||
 * u64 LE record offset || optionally the batch's stored bytes. The proof
 * checks the leaf data; the leaf data checks the batch (chain hash); the
 * batch holds the record at offset - base_offset.
 *
 * Witness request body (c2sp.org/tlog-witness add-checkpoint):
 *     old <size>\n  <base64 hash>\n ... (at most 63)  \n  <checkpoint note>
 */
#ifndef VERITY_TPROOF_H
#define VERITY_TPROOF_H

#include <stddef.h>
#include <stdint.h>

#include "storage/merkle.h"
#include "storage/note.h"

#define TPROOF_HEADER            "c2sp.org/tlog-proof@v1"
#define TPROOF_BYTES_MAX         (24u << 20) /* extra may carry one batch */
#define TPROOF_EXTRA_MIN         (MT_LEAF_SIZE + 8)
#define TPROOF_WITNESS_PROOF_MAX 63

struct tproof {
    uint64_t index;
    uint8_t path[MT_PROOF_MAX][MT_HASH_SIZE];
    size_t npath;
    uint8_t *extra; /* owned (tproof_deinit), NULL when absent */
    size_t extra_len;
    const char *note; /* points into the parsed buffer */
    size_t note_len;
};

/* Writes the tlog-proof text into a malloc'd *out (*len bytes, also
 * NUL-terminated). 0 or -ENOMEM / VERITY_EINVAL. */
int tproof_format(const struct tproof *p, char **out, size_t *len)
    __attribute__((warn_unused_result));
/* Parses a tlog-proof. 0 or VERITY_ECORRUPT; out->note borrows buf. */
int tproof_parse(const char *buf, size_t len, struct tproof *out)
    __attribute__((warn_unused_result));
void tproof_deinit(struct tproof *p);

struct tproof_witness_req {
    uint64_t old_size;
    uint8_t path[TPROOF_WITNESS_PROOF_MAX][MT_HASH_SIZE];
    size_t npath;
    const char *note; /* borrows the parsed buffer */
    size_t note_len;
};
/* Parses an add-checkpoint body. 0 or VERITY_ECORRUPT. */
int tproof_witness_parse(const char *buf, size_t len, struct tproof_witness_req *out)
    __attribute__((warn_unused_result));
/* Formats an add-checkpoint body into a malloc'd *out. */
int tproof_witness_format(const struct tproof_witness_req *r, char **out, size_t *len)
    __attribute__((warn_unused_result));

/* A witness's answers to add-checkpoint (c2sp.org/tlog-witness), as the
 * broker's witness push reads them (broker/witness_push.c):
 * tproof_cosig_check: a 200 body must be one or more signature lines
 * ("— <name> <base64>\n", at most TPROOF_COSIG_BODY_MAX bytes, no NUL) of
 * which one verifies with wkey over note (Verity's signed checkpoint).
 * 0, VERITY_ECORRUPT (not signature lines) or VERITY_ESIGNATURE.
 * tproof_size_parse: a 409 text/x.tlog.size body, a decimal size and an
 * optional newline. 0 or VERITY_ECORRUPT. */
#define TPROOF_COSIG_BODY_MAX 4096
int tproof_cosig_check(const char *note, size_t note_len, const char *body, size_t blen,
                       const struct note_vkey *wkey) __attribute__((warn_unused_result));
int tproof_size_parse(const char *body, size_t len, uint64_t *size)
    __attribute__((warn_unused_result));

/* What a verified inclusion proof states. */
struct tproof_result {
    char origin[NOTE_ORIGIN_MAX + 1];
    uint64_t tree_size;
    uint8_t root[MT_HASH_SIZE];
    struct mt_leaf leaf;
    uint64_t offset;   /* the record's offset */
    int batch_checked; /* 1 when the extra carried the batch and it matched */
};

/*
 * Checks a parsed proof offline: the checkpoint note against the trusted
 * keys, the leaf data's inclusion under its root, the offset inside the
 * leaf's batch, and, when present, the batch bytes against the leaf (chain)
 * with a record at that offset. 0, VERITY_ESIGNATURE, VERITY_ECHAIN (proof,
 * leaf or batch does not match) or VERITY_ECORRUPT (malformed).
 */
int tproof_verify(const struct tproof *p, const struct note_vkey *keys, size_t nkeys,
                  struct tproof_result *out) __attribute__((warn_unused_result));

#endif
