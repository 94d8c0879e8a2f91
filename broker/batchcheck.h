/*
 * batchcheck: validation of one produced batch at the broker's boundary.
 * Kept apart from the request handlers (no libevent, no broker state) so the
 * fuzzer (tests/fuzz/fuzz_frame.c) drives exactly the function the broker
 * calls.
 */
#ifndef VERITY_BROKER_BATCHCHECK_H
#define VERITY_BROKER_BATCHCHECK_H

#include <stddef.h>
#include <stdint.h>

#include "storage/batch.h"

/*
 * Validates the len-byte batch: len within max_bytes, header, batch_length
 * equal to len, CRC, every record (batch_validate), not a control batch,
 * producer id >= -1. Returns 0 with *h decoded, or VERITY_ECORRUPT /
 * VERITY_EBADBATCH / VERITY_ELIMIT / VERITY_EVERSION / VERITY_EUNSUPPORTED /
 * VERITY_EINVAL with one sentence in msg (cap bytes).
 */
int produce_check_batch(const uint8_t *batch, size_t len, uint32_t max_bytes, struct batch_hdr *h,
                        char *msg, size_t cap) __attribute__((warn_unused_result));

#endif
