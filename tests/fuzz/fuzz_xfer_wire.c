/*
 * libFuzzer target over the state-transfer codec (broker/vsr/xfer_wire.c):
 * whatever decodes must encode back to exactly the same bytes (one encoding
 * per message) and stay within the input. Built and run by
 * tests/fuzz/run.sh (XFER_WIRE_FUZZ_SECONDS).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "broker/vsr/xfer_wire.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct xfer_msg m;
    if (xfer_wire_decode(data, size, &m) != 0)
        return 0;
    if (m.len && (m.data < data || m.data + m.len != data + size))
        abort();
    size_t n = xfer_wire_size(&m);
    if (n != size)
        abort();
    uint8_t *out = malloc(n);
    if (!out || xfer_wire_encode(&m, out, n) != n || memcmp(out, data, n) != 0)
        abort();
    free(out);
    return 0;
}
