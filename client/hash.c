/*
 * The hashes every Verity client must compute identically: the partitioner
 * (Kafka's murmur2) and the idempotency key (SHA-256 truncated to 16 bytes).
 * tests/unit/test_client_hash.c pins their values; changing either function
 * moves keys to other partitions or breaks deduplication across clients.
 */
#include <openssl/evp.h>

#include "verity/verify.h"
#include "verity/verity.h"

uint32_t verity_murmur2(const void *data, size_t len)
{
    const uint8_t *p = data;
    const uint32_t m = 0x5bd1e995u;
    const int r = 24;
    uint32_t h = 0x9747b28cu ^ (uint32_t)len;
    size_t blocks = len / 4;

    for (size_t i = 0; i < blocks; i++) {
        const uint8_t *b = p + 4 * i;
        uint32_t k = (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 |
                     (uint32_t)b[3] << 24;
        k *= m;
        k ^= k >> r;
        k *= m;
        h *= m;
        h ^= k;
    }
    const uint8_t *tail = p + 4 * blocks;
    switch (len & 3) {
    case 3:
        h ^= (uint32_t)tail[2] << 16;
        /* fall through */
    case 2:
        h ^= (uint32_t)tail[1] << 8;
        /* fall through */
    case 1:
        h ^= tail[0];
        h *= m;
    }
    h ^= h >> 13;
    h *= m;
    h ^= h >> 15;
    return h;
}

uint32_t verity_partition_for_key(const void *key, size_t key_len, uint32_t partitions)
{
    VERITY_VERIFY(partitions > 0);
    return (verity_murmur2(key, key_len) & 0x7fffffffu) % partitions;
}

void verity_idempotency_key(const void *s, size_t len, uint8_t out[VERITY_IDEM_KEY_SIZE])
{
    uint8_t md[32];
    unsigned int n = 0;
    VERITY_VERIFY(EVP_Digest(s, len, md, &n, EVP_sha256(), NULL) == 1 && n == sizeof md);
    for (size_t i = 0; i < VERITY_IDEM_KEY_SIZE; i++)
        out[i] = md[i];
}
