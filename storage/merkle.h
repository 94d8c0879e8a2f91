/*
 * merkle: a partition's RFC 6962 / RFC 9162 Merkle tree over its batches, in
 * order, stored next to the log so that any root, inclusion proof or
 * consistency proof costs O(log n) reads; plus the pure verifiers.
 *
 * Hashing (RFC 6962 section 2.1): leaf hash = SHA-256(0x00 || leaf data),
 * node hash = SHA-256(0x01 || left || right), the empty tree's root is
 * SHA-256(""). Leaf i is the partition's i-th batch (control batches
 * included); its leaf data (MT_LEAF_SIZE = 76 bytes, little-endian):
 *
 *     0  8 base_offset   of the batch
 *     8  4 record_count  of the batch
 *    12 32 prev_chain    chain hash of the batch before (zeros for offset 0)
 *    44 32 chain         the batch's own chain hash (header bytes [16,48))
 *
 * chain = SHA-256(prev_chain || batch[0,16) || batch[48,len)) binds every
 * byte of the batch except the chain field itself, and the base offset is in
 * batch[8,16): so the leaf binds the batch's bytes and its position.
 *
 * Files in the partition directory (see docs/FORMAT.md section 9):
 *   tree.leaves   leaf data of leaf 0, 1, ... back to back (76 bytes each)
 *   tree.hashes   32-byte hashes in the order of Go's sumdb/tlog "stored
 *                 hash index": after leaf n's hash come the hashes of the
 *                 complete subtrees that leaf n completes, lowest first
 *   tree.state    "VTS1" | u64 size | root[32] | u32 crc32c of bytes [0,44):
 *                 the size whose leaves and hashes were fsynced, and its root;
 *                 replaced atomically (tmp, fdatasync, rename, fsync dir)
 *
 * A stored tree is valid only if: tree.state's CRC matches, both files hold
 * at least state.size leaves and StoredHashCount(state.size) hashes, and the
 * root recomputed from the stored hashes equals state.root. Anything past
 * state.size is untrusted after a crash and recomputed from the log
 * (storage/vlog_tree.c). Append order: hashes first, then the leaf, so a
 * reader that counts leaves never finds a leaf without its hashes.
 *
 * Threads: one writer (the log's owner thread); readers in the same thread;
 * mt_sync_async's own thread writes tree.state.
 * Other processes may read the files concurrently (they only grow, except a
 * recovery truncation of the unsynced tail).
 */
#ifndef VERITY_MERKLE_H
#define VERITY_MERKLE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "storage/vio.h"

#define MT_HASH_SIZE   32
#define MT_LEAF_SIZE   76
#define MT_PROOF_MAX   64 /* hashes in any proof of a tree below 2^63 leaves */
#define MT_TILE_WIDTH  256
#define MT_TILE_HEIGHT 8

struct mt_leaf {
    uint64_t base_offset;
    uint32_t record_count;
    uint8_t prev_chain[MT_HASH_SIZE];
    uint8_t chain[MT_HASH_SIZE];
};

/* ---- hashing and leaf data (pure) -------------------------------------- */

void mt_leaf_hash(const uint8_t *data, size_t len, uint8_t out[MT_HASH_SIZE]);
void mt_node_hash(const uint8_t left[MT_HASH_SIZE], const uint8_t right[MT_HASH_SIZE],
                  uint8_t out[MT_HASH_SIZE]);
void mt_empty_root(uint8_t out[MT_HASH_SIZE]);
void mt_leaf_encode(const struct mt_leaf *l, uint8_t out[MT_LEAF_SIZE]);
/* 0, or VERITY_ECORRUPT when len != MT_LEAF_SIZE or record_count == 0. */
int mt_leaf_decode(const uint8_t *buf, size_t len, struct mt_leaf *out)
    __attribute__((warn_unused_result));
/* Checks that the stored batch bytes (as in the segment) are the batch the
 * leaf names: base offset, record count, chain field and recomputed chain.
 * 0 or VERITY_ECHAIN. */
int mt_leaf_check_batch(const struct mt_leaf *l, const uint8_t *batch, size_t len)
    __attribute__((warn_unused_result));

/* Go sumdb/tlog's stored hash layout. */
uint64_t mt_stored_index(int level, uint64_t n);
uint64_t mt_stored_count(uint64_t n);

/* ---- pure verifiers (RFC 9162 sections 2.1.3.2 and 2.1.4.2) ------------ */

/* 0 when path proves leaf_hash is leaf index of the tree of size n with
 * root; VERITY_ECHAIN when it does not; VERITY_EINVAL for index >= n. */
int mt_verify_inclusion(const uint8_t leaf_hash[MT_HASH_SIZE], uint64_t index, uint64_t n,
                        const uint8_t (*path)[MT_HASH_SIZE], size_t npath,
                        const uint8_t root[MT_HASH_SIZE]) __attribute__((warn_unused_result));
/* 0 when path proves the tree of size m with old_root is a prefix of the
 * tree of size n with new_root (m <= n); VERITY_ECHAIN when not. m == 0 and
 * m == n need an empty path (and, for m == n, equal roots). */
int mt_verify_consistency(uint64_t m, uint64_t n, const uint8_t old_root[MT_HASH_SIZE],
                          const uint8_t new_root[MT_HASH_SIZE], const uint8_t (*path)[MT_HASH_SIZE],
                          size_t npath) __attribute__((warn_unused_result));

/* ---- the stored tree --------------------------------------------------- */

struct mtree;

/*
 * Opens (creating unless read_only) the tree files in dir. Writable: keeps
 * only the fsynced prefix named by tree.state (truncating the rest; a missing
 * or invalid state means an empty tree, rebuilt by the caller from the log).
 * Read-only: trusts every complete leaf on disk (verify checks them).
 * io NULL = vio_posix (borrowed). *out is the caller's until mt_close.
 */
int mt_open(const char *dir, const struct vio *io, bool read_only, struct mtree **out)
    __attribute__((warn_unused_result));
void mt_close(struct mtree *t); /* no sync; NULL is a no-op */

uint64_t mt_size(const struct mtree *t);
/* Size named by tree.state when opened (0 if none); read-only diagnostics. */
uint64_t mt_state_size(const struct mtree *t);

/* Appends one leaf (its data). 0 or -errno; on error the tree is unchanged
 * in memory and the files are cut back (a failure there leaves the tree
 * stale, see mt_stale). */
int mt_append(struct mtree *t, const uint8_t leaf[MT_LEAF_SIZE])
    __attribute__((warn_unused_result));
/* Drops leaves >= n (recovery only). */
int mt_truncate(struct mtree *t, uint64_t n) __attribute__((warn_unused_result));
/* fdatasyncs both files and replaces tree.state with the current size and
 * root. */
int mt_sync(struct mtree *t) __attribute__((warn_unused_result));
/* The same on a background thread of the tree's own (started on first
 * use): the owner thread only computes the root; the fdatasyncs and the
 * rename happen off it. Skipped while one is in flight. Returns 0, or the
 * error of an earlier background sync. */
int mt_sync_async(struct mtree *t) __attribute__((warn_unused_result));
/* True after a write failed: the tree no longer follows the log until the
 * next open rebuilds its tail. */
bool mt_stale(const struct mtree *t);
void mt_set_stale(struct mtree *t);

int mt_leaf_get(struct mtree *t, uint64_t index, uint8_t out[MT_LEAF_SIZE])
    __attribute__((warn_unused_result));
/* The stored hash of the complete subtree of 2^level leaves number idx. */
int mt_stored_hash(struct mtree *t, int level, uint64_t idx, uint8_t out[MT_HASH_SIZE])
    __attribute__((warn_unused_result));
/* Root of the first n leaves (n <= size). */
int mt_root(struct mtree *t, uint64_t n, uint8_t out[MT_HASH_SIZE])
    __attribute__((warn_unused_result));
/* Index of the leaf (batch) among the first n that holds offset;
 * VERITY_EOFFSET when none does. */
int mt_find_offset(struct mtree *t, uint64_t n, uint64_t offset, uint64_t *index_out)
    __attribute__((warn_unused_result));
/* RFC 6962 PATH(index, D[0:n]) into path (MT_PROOF_MAX entries). */
int mt_prove_inclusion(struct mtree *t, uint64_t index, uint64_t n, uint8_t (*path)[MT_HASH_SIZE],
                       size_t *npath) __attribute__((warn_unused_result));
/* RFC 6962 PROOF(m, D[0:n]), 0 < m <= n (m == n or m == 0: empty). */
int mt_prove_consistency(struct mtree *t, uint64_t m, uint64_t n, uint8_t (*path)[MT_HASH_SIZE],
                         size_t *npath) __attribute__((warn_unused_result));

#endif
