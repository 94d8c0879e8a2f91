/*
 * The names of topic durability modes (config.h bcfg_durability_name,
 * bcfg_durability_parse), apart from the rest of the configuration so that
 * the pure decoders that check them (broker/meta_snap.c) link alone in the
 * unit and fuzz builds.
 */
#include <string.h>

#include "broker/config.h"

static const char *const dur_names[] = {"always", "group", "os"};

const char *bcfg_durability_name(enum topic_durability d)
{
    return (unsigned)d < 3 ? dur_names[d] : "unknown";
}

int bcfg_durability_parse(const char *s)
{
    for (int i = 0; i < 3; i++)
        if (strcmp(s, dur_names[i]) == 0)
            return i;
    return -1;
}
