/*
 * vjournal: a replica's journal and superblock on disk, the storage the VSR
 * core reads through cfg.read_prepare / read_header / read_superblock and
 * writes through its outbox (struct vsr_write).
 *
 * Three files in the group's directory, all through struct vio (so tests
 * can inject faults):
 *
 *   superblock  VSR_SB_COPIES copies of VSR_SB_SIZE bytes, copy i at
 *               i * VSR_SB_SIZE
 *   prepares    `slots` slots of 4 + VSR_HEADER_SIZE + body_max bytes:
 *               u32 length (little-endian), then the prepare (header + body)
 *   headers     `slots` slots of VSR_HEADER_SIZE bytes (the header marks)
 *
 * The journal trusts nothing it reads: a slot's bytes go to the core as
 * they are (a length field past the slot is clamped, so a read returns at
 * most the slot), and the core checks every checksum. A write is durable
 * when vjournal_write returns 0 (pwrite then fdatasync): the caller then
 * calls vsr_on_write_done. Files are created zero-filled at open; a journal
 * whose superblock file is all zero (no copy ever written) is `fresh`.
 */
#ifndef VERITY_VSR_VJOURNAL_H
#define VERITY_VSR_VJOURNAL_H

#include <stdbool.h>
#include <stdint.h>

#include "broker/vsr/vsr.h"

struct vio;

struct vjournal {
    const struct vio *io; /* borrowed */
    int fd_sb, fd_prep, fd_hdr;
    uint32_t slots;
    uint32_t body_max;
    uint32_t prep_slot_bytes; /* 4 + VSR_HEADER_SIZE + body_max */
    bool fresh;               /* no superblock copy written yet (all zero) */
    uint64_t writes, syncs;   /* counters (atomic adds: vwriter threads) */
};

/* Opens (creating) the journal under dir (created too). io NULL =
 * vio_posix. 0 or -errno. */
int vjournal_open(struct vjournal *j, const char *dir, uint32_t slots, uint32_t body_max,
                  const struct vio *io) __attribute__((warn_unused_result));
void vjournal_close(struct vjournal *j);

/* Performs w durably. 0, VERITY_EINVAL (slot or length out of range: a bug
 * in the caller), or -errno. */
int vjournal_write(struct vjournal *j, const struct vsr_write *w)
    __attribute__((warn_unused_result));

/* The two halves of vjournal_write, so a caller can write several entries
 * and make them durable with one fdatasync per file: vjournal_put writes
 * (no sync; 0, VERITY_EINVAL or -errno), vjournal_sync makes every write of
 * that kind's file durable (0 or -errno). A write counts as durable only
 * after the vjournal_sync of its kind returned 0. */
int vjournal_put(struct vjournal *j, const struct vsr_write *w) __attribute__((warn_unused_result));
int vjournal_sync(struct vjournal *j, uint8_t kind) __attribute__((warn_unused_result));

/* vsr_read_fn for cfg.read_prepare / read_header / read_superblock (ctx =
 * the struct vjournal). */
int vjournal_read_prepare(void *ctx, uint32_t slot, uint8_t *buf, uint32_t cap, uint32_t *len);
int vjournal_read_header(void *ctx, uint32_t slot, uint8_t *buf, uint32_t cap, uint32_t *len);
int vjournal_read_superblock(void *ctx, uint32_t slot, uint8_t *buf, uint32_t cap, uint32_t *len);

#endif
