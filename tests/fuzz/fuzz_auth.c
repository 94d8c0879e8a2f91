/*
 * libFuzzer target for the security store's decoder (broker/auth_store.c,
 * issue 14): auth_store_parse on arbitrary bytes must return an error or a
 * store, never crash, leak or read out of bounds; a parsed store must
 * survive key checks and ACL decisions on its own entries. The
 * Authenticate request itself goes through the envelope decoder that
 * fuzz_frame covers.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "broker/auth_store.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct auth_store *s = NULL;
    char why[256];
    if (auth_store_parse((const char *)data, size, &s, why, sizeof why) != 0)
        return 0;
    for (size_t i = 0; i < s->n_acls; i++) {
        const struct auth_acl *a = &s->acls[i];
        (void)auth_allowed(s, a->tenant, a->principal, a->res, "orders", a->ops, why, sizeof why);
        (void)auth_allowed_any(s, a->tenant, "p", a->res, a->pattern, AUTH_OP_ALL);
    }
    for (size_t i = 0; i < s->n_keys; i++) {
        char text[AUTH_KEY_TEXT_MAX];
        snprintf(text, sizeof text, "vk_%s_%064d", s->keys[i].id, 0);
        const struct auth_key *k;
        (void)auth_key_verify(s, text, &k);
    }
    auth_store_free(s);
    return 0;
}
