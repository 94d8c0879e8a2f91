#include "broker/vsr_hash.h"

#include <openssl/evp.h>

#include "verity/verify.h"

void vsr_sha256(void *ctx, const void *a, size_t alen, const void *b, size_t blen,
                uint8_t out[32])
{
    EVP_MD_CTX *c = EVP_MD_CTX_new();
    unsigned n = 0;
    (void)ctx;
    VERITY_VERIFY(c);
    VERITY_VERIFY(EVP_DigestInit_ex(c, EVP_sha256(), NULL) == 1);
    VERITY_VERIFY(EVP_DigestUpdate(c, a, alen) == 1);
    if (blen)
        VERITY_VERIFY(EVP_DigestUpdate(c, b, blen) == 1);
    VERITY_VERIFY(EVP_DigestFinal_ex(c, out, &n) == 1 && n == 32);
    EVP_MD_CTX_free(c);
}
