/*
 * libFuzzer target over the VSR wire codec (broker/vsr/vsr_wire.c): the
 * input as a vsr message and as a peer frame (and its payload as a message).
 * Whatever decodes must encode back to exactly the same bytes (one encoding
 * per message), and the decoder must never read past the input. Built and
 * run by tests/fuzz/run.sh (VSR_WIRE_FUZZ_SECONDS).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "broker/vsr/vsr_wire.h"

static struct vsr_msg msg;

static void roundtrip(const uint8_t *data, size_t size)
{
    if (vsr_wire_decode(data, size, &msg) != 0)
        return;
    size_t n = vsr_wire_size(&msg);
    if (n != size)
        abort();
    uint8_t *out = malloc(n);
    if (!out || vsr_wire_encode(&msg, out, n) != n || memcmp(out, data, n) != 0)
        abort();
    free(out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    roundtrip(data, size);
    long fl = vsr_wire_frame_len(data, size);
    if (fl > 0) {
        struct vsr_wire_frame f;
        if (vsr_wire_frame_decode(data, (size_t)fl, &f) == 0) {
            if (f.payload + f.payload_len != data + fl)
                abort();
            uint8_t hdr[VSR_WIRE_FRAME_HDR_MAX];
            size_t h = vsr_wire_frame_header(f.kind, f.group, f.group_len, f.partition,
                                             f.payload_len, hdr, sizeof hdr);
            if (h == 0 || memcmp(hdr, data, h) != 0)
                abort();
            if (f.kind == VSR_WIRE_MSG)
                roundtrip(f.payload, f.payload_len);
        }
    }
    return 0;
}
