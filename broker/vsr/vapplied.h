/*
 * vapplied: the applied-position ring of a replica group (broker/cluster.c
 * keeps it in <journal dir>/applied). Pure codec, no I/O.
 *
 * VAPPLIED_ENTRIES entries of VAPPLIED_ENTRY_SIZE bytes, the entry of op k
 * at slot k % VAPPLIED_ENTRIES, little-endian:
 *
 *   off size field
 *     0    4 magic "VAP1"
 *     4    4 reserved 0
 *     8    8 op (> 0)
 *    16    8 log end after applying op
 *    24   32 checksum of op
 *    56   32 digest through op
 *    88   36 reserved 0
 *   124    4 crc32c of bytes [0, 124)
 *
 * Written after each apply; on open the newest valid entry whose log end the
 * data log still holds is the position to resume from.
 */
#ifndef VERITY_VSR_VAPPLIED_H
#define VERITY_VSR_VAPPLIED_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "broker/vsr/vsr.h"

#define VAPPLIED_ENTRIES    64
#define VAPPLIED_ENTRY_SIZE 128
#define VAPPLIED_FILE_SIZE  (VAPPLIED_ENTRIES * VAPPLIED_ENTRY_SIZE)

/* Encodes the entry of st (st->op > 0) with its log end into out; returns
 * the byte offset of its slot in the file. */
uint64_t vapplied_encode(const struct vsr_state *st, uint64_t end,
                         uint8_t out[VAPPLIED_ENTRY_SIZE]);
/* Picks from len bytes of the file (any length: a short or torn file is
 * fine) the valid entry with the highest op whose end <= log_end. True with
 * *st and *end; false (st zeroed, *end 0) when there is none. Entries that
 * fail their CRC, magic or reserved bytes are ignored. */
bool vapplied_pick(const uint8_t *buf, size_t len, uint64_t log_end, struct vsr_state *st,
                   uint64_t *end);

#endif
