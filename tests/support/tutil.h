/*
 * Test helpers shared by the storage suites: temporary directories, batch
 * building, and time.
 */
#ifndef VERITY_TUTIL_H
#define VERITY_TUTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "storage/batch.h"

/* mkdtemp under $TMPDIR or /tmp; the returned string is static per call site
 * copy (caller frees). Aborts on failure. */
char *tu_tmpdir(const char *tag);
/* rm -rf of a directory tree (tests only). */
void tu_rmrf(const char *path);
int64_t tu_now_ms(void);
int64_t tu_mono_ns(void);
bool tu_quick(void);
/* Builds a batch of n records "<tag>-<i>" (values of value_len bytes when
 * value_len > 0) with timestamps ts, ts+1, ... Returns 0. */
int tu_build_batch(struct batch_builder *b, const char *tag, uint64_t first_id, uint32_t n,
                   size_t value_len, int64_t ts);
/* Copies file src to dst. 0 or -errno. */
int tu_copy_file(const char *src, const char *dst);
/* Flips bit `bit` of the byte at pos in path. 0 or -errno. */
int tu_flip_bit(const char *path, uint64_t pos, unsigned bit);
/* Size of a file, or -1. */
int64_t tu_file_size(const char *path);

#endif
