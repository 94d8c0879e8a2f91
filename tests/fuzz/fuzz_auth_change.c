/*
 * libFuzzer target for the decoder of a change of the security store
 * (broker/auth_store.c, auth_change_parse, issue 14): the body of
 * POST /v1/security from an admin client and the `change` of an
 * auth_change record of the metadata log. The first byte picks the mode
 * (request or log record). A decoded change must encode (auth_change_dump)
 * to text that decodes again to the same change in log mode (a key_create
 * aside, which the broker turns into a key_add first), and apply to a store
 * (merged with another, roles and ACL decisions on it) without crashing or
 * leaking.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "broker/auth_store.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    bool from_log = data[0] & 1;
    struct auth_change c;
    char why[256];
    if (auth_change_parse((const char *)data + 1, size - 1, from_log, &c, why, sizeof why) != 0)
        return 0;
    char *text = auth_change_dump(&c);
    if (!text)
        abort();
    struct auth_change d;
    if (c.op != AUTH_CH_KEY_CREATE) {
        if (c.op == AUTH_CH_QUOTA_SET)
            c.quota_has = AUTH_Q_ALL; /* dump writes every field */
        if (auth_change_parse(text, strlen(text), true, &d, why, sizeof why) != 0)
            abort(); /* what we write we must read */
        char *again = auth_change_dump(&d);
        if (!again || strcmp(again, text) != 0)
            abort();
        free(again);
    }
    free(text);
    struct auth_store *s = auth_store_new(), *m = NULL;
    if (!s)
        return 0;
    if (auth_change_apply(s, &c) == 0) {
        (void)auth_change_apply(s, &c); /* twice: EEXIST, ENOTFOUND or a replace */
        struct auth_store *empty = auth_store_new();
        if (empty && auth_store_merge(empty, s, &m) == 0) {
            (void)auth_allowed(m, c.acl.tenant, "svc", c.acl.res, "orders", AUTH_OP_ALL, why,
                               sizeof why);
            (void)auth_role_held(m, c.role.tenant, c.role.principal, c.role.role);
            char *dump = auth_store_dump(m);
            struct auth_store *back = NULL;
            if (!dump || auth_store_parse(dump, strlen(dump), &back, why, sizeof why) != 0)
                abort(); /* the meta snapshot's auth section must read back */
            auth_store_free(back);
            free(dump);
            auth_store_free(m);
        }
        auth_store_free(empty);
    }
    auth_store_free(s);
    return 0;
}
