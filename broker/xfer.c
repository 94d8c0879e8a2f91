/*
 * State transfer helpers (xfer.h): copying whole batches out of a log and
 * appending a peer's chunk exactly.
 */
#include "broker/xfer.h"

#include <time.h>

#include "storage/batch.h"
#include "storage/vlog.h"
#include "verity/errors.h"

int64_t xfer_mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int xfer_append_chunk(struct vlog *log, const uint8_t *data, uint32_t len)
{
    for (uint32_t pos = 0; pos < len;) {
        struct batch_hdr h;
        uint32_t left = len - pos;
        int rc = batch_hdr_decode(data + pos, left, &h);
        if (rc)
            return rc;
        if (h.length == 0 || h.length > left)
            return VERITY_EPROTO;
        struct vlog_append_info ai;
        /* vlog_append_exact does not modify the bytes */
        if ((rc = vlog_append_exact(log, (uint8_t *)(uintptr_t)(data + pos), h.length, &ai)))
            return rc;
        pos += h.length;
    }
    return 0;
}

int xfer_read_chunk(struct vlog *log, uint64_t from, uint64_t end, uint8_t *buf, size_t cap,
                    size_t *len)
{
    *len = 0;
    if (from == end)
        return 0;
    if (from > end)
        return VERITY_EOFFSET;
    return vlog_read_copy(log, from, end, buf, cap, len);
}
