/*
 * Superblock of a replica: its durable view, log view, commit number and
 * membership, written as VSR_SB_COPIES copies of VSR_SB_SIZE bytes. Every
 * update writes all copies one after another with the same, higher sequence
 * number; an update counts only once every copy is durable. On open the
 * valid copy with the highest sequence wins, so a torn or corrupt copy (or
 * all but one) is survivable.
 *
 * Copy layout (little-endian):
 *
 *   off size field
 *     0    4 magic          'V' 'S' 'B' '1'
 *     4    4 version        2
 *     8    8 sequence       > 0, raised by every update
 *    16    8 cluster
 *    24    1 replica        this replica's index
 *    25    1 replica_count  1, 3 or 5
 *    26    1 flags          bit 0: rejoining (VSR_SB_REJOINING); other bits 0
 *    27    5 reserved       0
 *    32    8 view           highest view this replica took part in
 *    40    8 log_view       view in which its log was last normal
 *    48    8 commit_max     commit number known at the update
 *    56    8 sv_op          head op of the log installed for log_view
 *    64   32 sv_checksum    checksum of that head entry
 *    96    4 sv_count       checksums that follow (<= VSR_SB_SV_SUMS)
 *   100    4 reserved       0
 *   104  256 sv_sums        checksums of ops sv_op - 1, sv_op - 2, ... (all
 *                           zero: not known), so that a replica that lost
 *                           the head entry on a crash still knows the
 *                           entries below it of its log view
 *   360  120 reserved       0
 *   480   32 checksum       H(bytes[0, 480))
 *
 * A copy is valid only if its checksum matches, magic and version match,
 * reserved bytes are zero, log_view <= view, sequence > 0, sv_count fits and
 * the replica fits the count.
 */
#ifndef VERITY_VSR_SUPERBLOCK_H
#define VERITY_VSR_SUPERBLOCK_H

#include <stddef.h>
#include <stdint.h>

#define VSR_SB_COPIES       4
#define VSR_SB_SIZE         512
#define VSR_SB_CHECKSUM_OFF 480 /* the copy's checksum covers bytes [0, 480) */
#define VSR_SB_SV_SUMS      8   /* checksums below the head (VSR_PIPELINE_MAX) */
/* flags: the replica started on a wiped disk and has not caught up yet; it
 * votes in no view change until it has (vsr.h, cfg.rejoin) */
#define VSR_SB_REJOINING 0x01

typedef void (*vsr_hash_fn)(void *ctx, const void *a, size_t alen, const void *b, size_t blen,
                            uint8_t out[32]);

struct vsr_superblock {
    uint64_t sequence;
    uint64_t cluster;
    uint8_t replica;
    uint8_t replica_count;
    uint8_t flags; /* VSR_SB_REJOINING */
    uint64_t view;
    uint64_t log_view;
    uint64_t commit_max;
    uint64_t sv_op;
    uint8_t sv_checksum[32];
    uint32_t sv_count;                   /* entries of sv_sums in use */
    uint8_t sv_sums[VSR_SB_SV_SUMS][32]; /* [i]: checksum of op sv_op - 1 - i (zero: unknown) */
};

/* Writes one copy of sb into out. */
void vsr_sb_encode(vsr_hash_fn hash, void *ctx, const struct vsr_superblock *sb,
                   uint8_t out[VSR_SB_SIZE]);

/* 0 and *sb when the len bytes are a valid copy; VERITY_ECORRUPT otherwise
 * (len != VSR_SB_SIZE included). */
int vsr_sb_decode(vsr_hash_fn hash, void *ctx, const uint8_t *in, size_t len,
                  struct vsr_superblock *sb) __attribute__((warn_unused_result));

/*
 * Picks the valid copy with the highest sequence among n copies (copies[i]
 * may be NULL for an unreadable copy). Returns 0 with *sb and *which;
 * VERITY_ENOTFOUND when no copy is valid; VERITY_ECORRUPT when two valid
 * copies with the same sequence disagree (never written that way).
 */
int vsr_sb_choose(vsr_hash_fn hash, void *ctx, const uint8_t *const *copies, const size_t *lens,
                  int n, struct vsr_superblock *sb, int *which) __attribute__((warn_unused_result));

#endif
