/*
 * The replication core's checksum, SHA-256 through OpenSSL: the function the
 * cluster hands the core (struct vsr_config.hash) and the journal, superblock
 * and writer code (vsr_hash_fn). One definition for the broker and its tests.
 */
#ifndef VERITY_VSR_HASH_H
#define VERITY_VSR_HASH_H

#include <stddef.h>
#include <stdint.h>

/* out = SHA-256(a || b); b may be NULL when blen is 0. ctx is unused. */
void vsr_sha256(void *ctx, const void *a, size_t alen, const void *b, size_t blen,
                uint8_t out[32]);

#endif
