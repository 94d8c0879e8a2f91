/*
 * Fault points for tests. A site is a short name compiled into the broker
 * (e.g. "mcmd_alloc"); $VERITY_FAULTS lists the sites that fail, separated
 * by commas. Read once, on the loop thread; unset costs one branch.
 */
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "broker/broker_int.h"

bool broker_fault(const char *site)
{
    static bool loaded;
    static const char *list;
    if (!loaded) {
        list = getenv("VERITY_FAULTS");
        loaded = true;
    }
    if (!list || !*list)
        return false;
    size_t n = strlen(site);
    for (const char *p = list; (p = strstr(p, site)) != NULL; p += n) {
        bool start = p == list || p[-1] == ',';
        bool end = p[n] == '\0' || p[n] == ',';
        if (start && end)
            return true;
    }
    return false;
}
