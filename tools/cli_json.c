/* JSON helpers shared by the `verity` subcommands (see cli_json.h). */
#include "tools/cli_json.h"

#include <stdio.h>
#include <stdlib.h>

#include <openssl/evp.h>

void cli_json_set_bytes(json_t *o, const char *name, const void *p, int32_t len)
{
    if (!p || len < 0) {
        json_object_set_new(o, name, json_null());
        return;
    }
    json_t *s = json_stringn(p, (size_t)len);
    if (s) {
        json_object_set_new(o, name, s);
        return;
    }
    char key[64];
    snprintf(key, sizeof key, "%s_base64", name);
    char *b64 = malloc(4 * (((size_t)len + 2) / 3) + 1);
    if (!b64)
        return;
    EVP_EncodeBlock((unsigned char *)b64, p, len);
    json_object_set_new(o, key, json_string(b64));
    free(b64);
}
