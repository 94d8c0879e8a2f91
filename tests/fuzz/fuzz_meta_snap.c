/*
 * libFuzzer target for the metadata state decoder (broker/meta_snap.c):
 * the payload of meta.snap and of a `__meta` state transfer, which arrives
 * from a peer. Any input either decodes or is refused (VERITY_ECORRUPT)
 * without a crash, a leak or undefined behaviour; a decoded image encodes
 * to bytes that decode again to the same encoding (no state is lost or
 * invented on the way through).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "broker/meta_snap.h"
#include "verity/errors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct meta_image im, again;
    int rc = meta_image_decode(data, size, &im);
    if (rc) {
        if (rc != VERITY_ECORRUPT && rc != -12 /* ENOMEM */)
            abort();
        if (im.topics || im.epochs || im.auth || im.n_topics || im.n_producers)
            abort(); /* a refusal keeps nothing */
        return 0;
    }
    uint8_t *a = NULL, *b = NULL;
    size_t alen = 0, blen = 0;
    if (meta_image_encode(&im, &a, &alen) != 0)
        abort();
    if (meta_image_decode(a, alen, &again) != 0)
        abort();
    if (meta_image_encode(&again, &b, &blen) != 0 || blen != alen || memcmp(a, b, alen) != 0)
        abort();
    if (again.n_topics != im.n_topics || again.n_producers != im.n_producers)
        abort();
    free(a);
    free(b);
    meta_image_free(&im);
    meta_image_free(&again);
    return 0;
}
