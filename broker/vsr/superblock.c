/*
 * Superblock copies: encode, decode, choose. The format and the validity
 * rule are in superblock.h. Pure: no I/O (the core writes copies through its
 * outbox and reads them through a function pointer).
 */
#include "broker/vsr/superblock.h"

#include <string.h>

#include "verity/errors.h"
#include "verity/verify.h"

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

void vsr_sb_encode(vsr_hash_fn hash, void *ctx, const struct vsr_superblock *sb,
                   uint8_t out[VSR_SB_SIZE])
{
    VERITY_VERIFY(sb->log_view <= sb->view);
    VERITY_VERIFY(sb->sequence > 0);
    memset(out, 0, VSR_SB_SIZE);
    memcpy(out, "VSB1", 4);
    VERITY_VERIFY(sb->sv_count <= VSR_SB_SV_SUMS);
    VERITY_VERIFY((sb->flags & ~VSR_SB_REJOINING) == 0);
    out[4] = 2;
    put64(out + 8, sb->sequence);
    put64(out + 16, sb->cluster);
    out[24] = sb->replica;
    out[25] = sb->replica_count;
    out[26] = sb->flags;
    put64(out + 32, sb->view);
    put64(out + 40, sb->log_view);
    put64(out + 48, sb->commit_max);
    put64(out + 56, sb->sv_op);
    memcpy(out + 64, sb->sv_checksum, 32);
    out[96] = (uint8_t)sb->sv_count;
    for (uint32_t i = 0; i < sb->sv_count; i++)
        memcpy(out + 104 + 32 * i, sb->sv_sums[i], 32);
    hash(ctx, out, VSR_SB_CHECKSUM_OFF, NULL, 0, out + VSR_SB_CHECKSUM_OFF);
}

int vsr_sb_decode(vsr_hash_fn hash, void *ctx, const uint8_t *in, size_t len,
                  struct vsr_superblock *sb)
{
    uint8_t sum[32];
    if (!in || len != VSR_SB_SIZE)
        return VERITY_ECORRUPT;
    hash(ctx, in, VSR_SB_CHECKSUM_OFF, NULL, 0, sum);
    if (memcmp(sum, in + VSR_SB_CHECKSUM_OFF, 32) != 0)
        return VERITY_ECORRUPT;
    if (memcmp(in, "VSB1", 4) != 0 || in[4] != 2 || in[5] || in[6] || in[7])
        return VERITY_ECORRUPT;
    if (in[26] & ~VSR_SB_REJOINING)
        return VERITY_ECORRUPT;
    for (int i = 27; i < 32; i++)
        if (in[i])
            return VERITY_ECORRUPT;
    for (int i = 97; i < 104; i++)
        if (in[i])
            return VERITY_ECORRUPT;
    if (in[96] > VSR_SB_SV_SUMS)
        return VERITY_ECORRUPT;
    for (int i = 104 + 32 * in[96]; i < VSR_SB_CHECKSUM_OFF; i++)
        if (in[i])
            return VERITY_ECORRUPT;
    struct vsr_superblock s;
    memset(&s, 0, sizeof s);
    s.sequence = get64(in + 8);
    s.cluster = get64(in + 16);
    s.replica = in[24];
    s.replica_count = in[25];
    s.flags = in[26];
    s.view = get64(in + 32);
    s.log_view = get64(in + 40);
    s.commit_max = get64(in + 48);
    s.sv_op = get64(in + 56);
    memcpy(s.sv_checksum, in + 64, 32);
    s.sv_count = in[96];
    for (uint32_t i = 0; i < s.sv_count; i++)
        memcpy(s.sv_sums[i], in + 104 + 32 * i, 32);
    if (s.sequence == 0 || s.log_view > s.view || s.replica_count == 0 ||
        s.replica >= s.replica_count)
        return VERITY_ECORRUPT;
    *sb = s;
    return 0;
}

int vsr_sb_choose(vsr_hash_fn hash, void *ctx, const uint8_t *const *copies, const size_t *lens,
                  int n, struct vsr_superblock *sb, int *which)
{
    int best = -1;
    struct vsr_superblock b, s;
    memset(&b, 0, sizeof b);
    for (int i = 0; i < n; i++) {
        if (!copies[i] || vsr_sb_decode(hash, ctx, copies[i], lens[i], &s) != 0)
            continue;
        if (best >= 0 && s.sequence == b.sequence) {
            /* Same sequence must mean the same bytes (all copies of one
             * update are written from one encoding). */
            if (memcmp(copies[i], copies[best], VSR_SB_SIZE) != 0)
                return VERITY_ECORRUPT;
            continue;
        }
        if (best < 0 || s.sequence > b.sequence) {
            best = i;
            b = s;
        }
    }
    if (best < 0)
        return VERITY_ENOTFOUND;
    VERITY_VERIFY(b.log_view <= b.view);
    *sb = b;
    if (which)
        *which = best;
    return 0;
}
