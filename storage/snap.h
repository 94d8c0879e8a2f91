/*
 * snap: a snapshot file of state derived from a log, so that a restart reads
 * the snapshot and replays only the log's tail past it. The owner of the
 * state (partition idempotence, metadata, consumer groups) serialises the
 * payload; this module writes it atomically and reads it back checked.
 *
 * A snapshot names the log position it covers: `offset` is the log's end
 * offset when the state was taken (the state is the result of every batch
 * below it), `chain` the chain hash of the batch that ends there. A reader
 * uses the snapshot only if the log still holds a batch ending at `offset`
 * with that chain hash (snap_matches), so a snapshot can never be applied to
 * a different log or one cut below it; otherwise it replays the whole log.
 *
 * File format (little-endian), <dir>/<name>:
 *
 *   0   4  magic "VSNP"
 *   4   2  version (1)
 *   6   2  kind (enum snap_kind)
 *   8   8  offset covered
 *   16 32  chain hash of the batch ending at offset (zeros when offset is 0)
 *   48  8  payload length
 *   56  4  CRC32C of the payload
 *   60  4  CRC32C of bytes 0..59
 *   64  .. payload
 *
 * A snapshot is valid only if the magic, version and kind match, both CRCs
 * hold and the file is exactly 64 + length bytes; anything else is
 * VERITY_ECORRUPT and the caller replays the full log.
 *
 * Writing: <name>.tmp is written, fsynced, renamed over <name>, and the
 * directory fsynced, so a crash leaves either the old or the new snapshot.
 */
#ifndef VERITY_SNAP_H
#define VERITY_SNAP_H

#include <stddef.h>
#include <stdint.h>

#include "storage/vio.h"

#define SNAP_HDR_SIZE 64
#define SNAP_BYTES_MAX (1ull << 34) /* 16 GiB: no snapshot is larger */

enum snap_kind { SNAP_IDEM = 1, SNAP_META = 2, SNAP_GROUPS = 3 };

struct snap_hdr {
    enum snap_kind kind;
    uint64_t offset;
    uint8_t chain[32];
    uint64_t length;
};

struct vlog;

/* Writes the snapshot atomically (see above). io NULL = vio_posix. 0 or
 * -errno; on error the previous snapshot, if any, is still in place. */
int snap_write(const struct vio *io, const char *dir, const char *name, const struct snap_hdr *h,
               const void *payload, size_t len) __attribute__((warn_unused_result));

/* Reads and checks <dir>/<name>. On 0, *payload (malloc'd, the caller frees)
 * holds h->length bytes. -ENOENT when there is none, VERITY_ECORRUPT when it
 * fails a check, or -errno. */
int snap_read(const struct vio *io, const char *dir, const char *name, enum snap_kind kind,
              struct snap_hdr *h, uint8_t **payload) __attribute__((warn_unused_result));

/* The chain hash of the batch of log that ends at end (zeros for 0). 0,
 * VERITY_EOFFSET when no batch ends exactly there or it is no longer
 * stored, or a read error. Owner thread of the log. */
int snap_chain_at(struct vlog *log, uint64_t end, uint8_t chain[32])
    __attribute__((warn_unused_result));

/* 1 when log holds a batch ending at h->offset with h->chain (and offset is
 * at or above the log's start), else 0. */
int snap_matches(struct vlog *log, const struct snap_hdr *h);

/* Removes <dir>/<name> (a snapshot that failed its check). */
void snap_remove(const struct vio *io, const char *dir, const char *name);

#endif
