/*
 * Boundary validation of a produced batch (see batchcheck.h). The order of
 * the checks decides the error a client sees: size first (cheapest, names
 * the limit), then the header, then the CRC and records, then the rules the
 * log would refuse anyway (control batches) and the producer fields.
 */
#include "broker/batchcheck.h"

#include <inttypes.h>
#include <stdio.h>

#include "verity/errors.h"

int produce_check_batch(const uint8_t *batch, size_t len, uint32_t max_bytes, struct batch_hdr *h,
                        char *msg, size_t cap)
{
    int rc;
    if (len > max_bytes) {
        snprintf(msg, cap, "batch of %zu bytes exceeds the topic's max_message_bytes %" PRIu32, len,
                 max_bytes);
        return VERITY_ELIMIT;
    }
    if ((rc = batch_hdr_decode(batch, len, h))) {
        snprintf(msg, cap, "batch header is invalid (%s)", verity_errname(rc));
        return rc;
    }
    if (h->length != len) {
        snprintf(msg, cap, "batch_length %" PRIu32 " differs from the %zu bytes sent", h->length,
                 len);
        return VERITY_ECORRUPT;
    }
    struct batch_limits lim = batch_limits_default;
    lim.bytes_max = max_bytes;
    if ((rc = batch_validate(batch, len, &lim))) {
        snprintf(msg, cap, "batch rejected: %s (%s)", verity_strerror(rc), verity_errname(rc));
        return rc;
    }
    if (h->attributes & BATCH_ATTR_CONTROL) {
        snprintf(msg, cap, "control batches are written by the broker only");
        return VERITY_EBADBATCH;
    }
    if (h->producer_id < -1) {
        snprintf(msg, cap, "producer_id %" PRId64 " is invalid", h->producer_id);
        return VERITY_EINVAL;
    }
    return 0;
}
