/*
 * CRC32C with a hardware path (x86-64 SSE4.2 crc32 instruction, ARMv8 CRC
 * extension) and a portable slicing-by-8 table path. Both compute the same
 * function; tests pin them to the RFC 3720 vectors. The table is built once,
 * on first use, under pthread_once.
 */
#include "storage/crc32c.h"

#include <pthread.h>
#include <string.h>

#define POLY 0x82F63B78u

static uint32_t table[8][256];
static pthread_once_t table_once = PTHREAD_ONCE_INIT;

static void table_build(void)
{
    for (uint32_t n = 0; n < 256; n++) {
        uint32_t c = n;
        for (int k = 0; k < 8; k++)
            c = (c & 1) ? (c >> 1) ^ POLY : c >> 1;
        table[0][n] = c;
    }
    for (uint32_t n = 0; n < 256; n++)
        for (int k = 1; k < 8; k++)
            table[k][n] = (table[k - 1][n] >> 8) ^ table[0][table[k - 1][n] & 0xff];
}

uint32_t crc32c_sw(uint32_t crc, const void *buf, size_t len)
{
    const uint8_t *p = buf;
    pthread_once(&table_once, table_build);
    crc = ~crc;
    while (len >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        w ^= crc; /* little-endian hosts only: the format's CRC is LE-defined */
        crc = table[7][w & 0xff] ^ table[6][(w >> 8) & 0xff] ^ table[5][(w >> 16) & 0xff] ^
              table[4][(w >> 24) & 0xff] ^ table[3][(w >> 32) & 0xff] ^
              table[2][(w >> 40) & 0xff] ^ table[1][(w >> 48) & 0xff] ^ table[0][w >> 56];
        p += 8;
        len -= 8;
    }
    while (len--)
        crc = (crc >> 8) ^ table[0][(crc ^ *p++) & 0xff];
    return ~crc;
}

#if defined(__x86_64__)
#include <cpuid.h>

/* ---- three streams ---------------------------------------------------------
 * The crc32 instruction has a latency of 3 cycles and a throughput of 1, so
 * one dependency chain uses a third of it. Long buffers are cut into rounds
 * of three HW_BLOCK-byte blocks whose CRCs are computed interleaved and
 * joined with the CRC combination rule (zlib's crc32_combine, for the
 * CRC32C polynomial): crc(A || B) = crc(A) * x^(8 |B|) mod P xor crc(B),
 * with x^(8 HW_BLOCK) mod P computed once. */
#define HW_BLOCK 4096

/* a * b mod P, bit-reflected (bit 31 is x^0). */
static uint32_t crc_mulmod(uint32_t a, uint32_t b)
{
    uint32_t m = 1u << 31, r = 0;
    for (;;) {
        if (a & m) {
            r ^= b;
            if ((a & (m - 1)) == 0)
                break;
        }
        m >>= 1;
        b = b & 1 ? (b >> 1) ^ POLY : b >> 1;
    }
    return r;
}

/* x^(8 n) mod P. */
static uint32_t crc_xpow8n(size_t n)
{
    uint32_t sq = 1u << 30; /* x^1, squared below to x^2, x^4, ... */
    uint32_t r = 1u << 31;  /* x^0 */
    for (int k = 0; k < 3; k++)
        sq = crc_mulmod(sq, sq); /* x^8 */
    while (n) {
        if (n & 1)
            r = crc_mulmod(sq, r);
        sq = crc_mulmod(sq, sq);
        n >>= 1;
    }
    return r;
}

static uint32_t hw_block_shift;
static pthread_once_t hw_block_once = PTHREAD_ONCE_INIT;

static void hw_block_init(void) { hw_block_shift = crc_xpow8n(HW_BLOCK); }

__attribute__((target("sse4.2"))) uint32_t crc32c_hw(uint32_t crc, const void *buf, size_t len)
{
    const uint8_t *p = buf;
    uint64_t c = ~crc;
    while (len && ((uintptr_t)p & 7)) {
        c = __builtin_ia32_crc32qi((uint32_t)c, *p++);
        len--;
    }
    if (len >= 3 * HW_BLOCK) {
        pthread_once(&hw_block_once, hw_block_init);
        do {
            uint64_t c1 = 0xffffffffu, c2 = 0xffffffffu; /* crc 0 of blocks 2 and 3 */
            for (size_t i = 0; i < HW_BLOCK; i += 8) {
                uint64_t w0, w1, w2;
                memcpy(&w0, p + i, 8);
                memcpy(&w1, p + HW_BLOCK + i, 8);
                memcpy(&w2, p + 2 * HW_BLOCK + i, 8);
                c = __builtin_ia32_crc32di(c, w0);
                c1 = __builtin_ia32_crc32di(c1, w1);
                c2 = __builtin_ia32_crc32di(c2, w2);
            }
            /* conditioned values: crc(A), crc(0, B), crc(0, C) */
            uint32_t a = ~(uint32_t)c, b = ~(uint32_t)c1, d = ~(uint32_t)c2;
            a = crc_mulmod(hw_block_shift, a) ^ b;
            a = crc_mulmod(hw_block_shift, a) ^ d;
            c = ~a;
            p += 3 * HW_BLOCK;
            len -= 3 * HW_BLOCK;
        } while (len >= 3 * HW_BLOCK);
    }
    while (len >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        c = __builtin_ia32_crc32di(c, w);
        p += 8;
        len -= 8;
    }
    while (len--)
        c = __builtin_ia32_crc32qi((uint32_t)c, *p++);
    return ~(uint32_t)c;
}

int crc32c_hw_available(void)
{
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d))
        return 0;
    return (c & bit_SSE4_2) != 0;
}
#elif defined(__aarch64__) && defined(__ARM_FEATURE_CRC32)
#include <arm_acle.h>

uint32_t crc32c_hw(uint32_t crc, const void *buf, size_t len)
{
    const uint8_t *p = buf;
    uint32_t c = ~crc;
    while (len >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        c = __crc32cd(c, w);
        p += 8;
        len -= 8;
    }
    while (len--)
        c = __crc32cb(c, *p++);
    return ~c;
}

int crc32c_hw_available(void) { return 1; }
#else
uint32_t crc32c_hw(uint32_t crc, const void *buf, size_t len) { return crc32c_sw(crc, buf, len); }
int crc32c_hw_available(void) { return 0; }
#endif

static int hw_state = -1; /* -1 unknown, 0 no, 1 yes; benign race: same value */

uint32_t crc32c(uint32_t crc, const void *buf, size_t len)
{
    int hw = __atomic_load_n(&hw_state, __ATOMIC_RELAXED);
    if (hw < 0) {
        hw = crc32c_hw_available();
        __atomic_store_n(&hw_state, hw, __ATOMIC_RELAXED);
    }
    return hw ? crc32c_hw(crc, buf, len) : crc32c_sw(crc, buf, len);
}
