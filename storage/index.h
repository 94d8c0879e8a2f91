/*
 * Sparse indexes of one segment. Both files are arrays of fixed 16-byte
 * little-endian entries, appended as the segment grows (about one entry per
 * index_interval_bytes of log, always one for the segment's first batch):
 *
 *   <base>.index       u32 relative offset | u32 byte position |
 *                      u64 data records below this batch (whole log)
 *   <base>.timeindex   i64 largest timestamp up to and including this batch |
 *                      u32 relative offset | u32 byte position
 *
 * An entry is valid only if entries strictly increase (offset index: relative
 * offset and position; time index: timestamp, relative offset, position) and
 * its position lies inside the segment's valid bytes. Indexes are never
 * fsynced: after a crash they are checked against the segment and truncated
 * or rebuilt by scanning, so they can never make a read return wrong data.
 *
 * The active segment keeps its entries on the heap (and appends them to the
 * file); a closed segment maps its files read-only, so the memory a log uses
 * does not grow with its size beyond those mappings.
 */
#ifndef VERITY_INDEX_H
#define VERITY_INDEX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "storage/vio.h"

#define IDX_ENTRY_SIZE 16

struct idx_entry {              /* offset index */
    uint32_t rel_offset;
    uint32_t position;
    uint64_t data_records;      /* data (non-control) records below this batch */
};

struct tidx_entry {             /* time index */
    int64_t timestamp;
    uint32_t rel_offset;
    uint32_t position;
};

struct idx {
    const struct vio *io;       /* borrowed */
    int fd;                     /* writable file, or -1 */
    uint8_t *heap;              /* owned entries when writable */
    size_t cap;
    const uint8_t *map;         /* read-only mapping when not writable */
    size_t map_len;
    size_t n;                   /* entries */
    bool write_failed;          /* an append could not reach the file */
};

/* Opens path. writable: load into the heap and append to the file
 * (creating it); else map it read-only (a missing file gives 0 entries).
 * A trailing partial entry is ignored (and cut when writable). */
int idx_open(struct idx *x, const struct vio *io, const char *path, bool writable)
    __attribute__((warn_unused_result));
void idx_close(struct idx *x);
/* Appends one 16-byte entry (writable only). A failed file write sets
 * write_failed and keeps the entry in memory: the file only lags behind,
 * which recovery tolerates. */
void idx_append_raw(struct idx *x, const uint8_t *entry);
/* Drops entries from n on (writable only). */
int idx_truncate(struct idx *x, size_t n) __attribute__((warn_unused_result));
const uint8_t *idx_raw(const struct idx *x, size_t i);

void idx_put(uint8_t *raw, const struct idx_entry *e);
void idx_get(const uint8_t *raw, struct idx_entry *e);
void tidx_put(uint8_t *raw, const struct tidx_entry *e);
void tidx_get(const uint8_t *raw, struct tidx_entry *e);

/* Index of the last entry with rel_offset <= rel, or -1. Binary search. */
long idx_find_offset(const struct idx *x, uint32_t rel);
/* Index of the last time entry with timestamp < ts, or -1. */
long tidx_find_before(const struct idx *x, int64_t ts);

#endif
