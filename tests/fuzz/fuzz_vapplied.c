/*
 * libFuzzer target over the applied-position ring codec
 * (broker/vsr/vapplied.c): any bytes as the ring file, with a log end taken
 * from the input. A picked entry must re-encode to the bytes in its slot and
 * respect the log end; the decoder must never read past the input. Built and
 * run by tests/fuzz/run.sh (VAPPLIED_FUZZ_SECONDS).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "broker/vsr/vapplied.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint64_t log_end = UINT64_MAX;
    if (size >= 8) {
        memcpy(&log_end, data, 8);
        data += 8;
        size -= 8;
    }
    struct vsr_state st;
    uint64_t end;
    if (!vapplied_pick(data, size, log_end, &st, &end))
        return 0;
    if (st.op == 0 || end > log_end)
        abort();
    uint8_t e[VAPPLIED_ENTRY_SIZE];
    uint64_t at = vapplied_encode(&st, end, e);
    if (at + VAPPLIED_ENTRY_SIZE > size || memcmp(data + at, e, VAPPLIED_ENTRY_SIZE) != 0)
        abort();
    return 0;
}
