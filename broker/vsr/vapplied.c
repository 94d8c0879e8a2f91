/* vapplied: the applied-position ring codec (vapplied.h). */
#include "broker/vsr/vapplied.h"

#include <string.h>

#include "storage/crc32c.h"

static void put64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static uint64_t get64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v |= (uint64_t)p[i] << (8 * i);
    return v;
}

uint64_t vapplied_encode(const struct vsr_state *st, uint64_t end,
                         uint8_t out[VAPPLIED_ENTRY_SIZE])
{
    memset(out, 0, VAPPLIED_ENTRY_SIZE);
    memcpy(out, "VAP1", 4);
    put64(out + 8, st->op);
    put64(out + 16, end);
    memcpy(out + 24, st->checksum, VSR_CHECKSUM_SIZE);
    memcpy(out + 56, st->digest, VSR_CHECKSUM_SIZE);
    uint32_t c = crc32c(0, out, 124);
    for (int i = 0; i < 4; i++)
        out[124 + i] = (uint8_t)(c >> (8 * i));
    return (st->op % VAPPLIED_ENTRIES) * VAPPLIED_ENTRY_SIZE;
}

static bool zero(const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i])
            return false;
    return true;
}

bool vapplied_pick(const uint8_t *buf, size_t len, uint64_t log_end, struct vsr_state *st,
                   uint64_t *end)
{
    bool found = false;
    memset(st, 0, sizeof *st);
    *end = 0;
    for (size_t k = 0; k + VAPPLIED_ENTRY_SIZE <= len && k < VAPPLIED_FILE_SIZE;
         k += VAPPLIED_ENTRY_SIZE) {
        const uint8_t *e = buf + k;
        uint32_t c = (uint32_t)e[124] | (uint32_t)e[125] << 8 | (uint32_t)e[126] << 16 |
                     (uint32_t)e[127] << 24;
        if (memcmp(e, "VAP1", 4) != 0 || crc32c(0, e, 124) != c || !zero(e + 4, 4) ||
            !zero(e + 88, 36))
            continue;
        uint64_t op = get64(e + 8), e_end = get64(e + 16);
        if (op == 0 || (op % VAPPLIED_ENTRIES) * VAPPLIED_ENTRY_SIZE != k || e_end > log_end ||
            (found && op <= st->op))
            continue;
        found = true;
        st->op = op;
        *end = e_end;
        memcpy(st->checksum, e + 24, VSR_CHECKSUM_SIZE);
        memcpy(st->digest, e + 56, VSR_CHECKSUM_SIZE);
    }
    return found;
}
