/* JSON helpers shared by the `verity` subcommands. */
#ifndef VERITY_TOOLS_CLI_JSON_H
#define VERITY_TOOLS_CLI_JSON_H

#include <stdint.h>

#include <jansson.h>

/* Sets o[name] to the bytes as a string when they are UTF-8, else
 * o[name + "_base64"] to their base64; null when p is NULL or len < 0. */
void cli_json_set_bytes(json_t *o, const char *name, const void *p, int32_t len);

#endif
