/*
 * libFuzzer target for verity-project's decoders (consumer/project):
 * the first byte picks one.
 *   0: the input is a projection config (prj_config_loadb); any config
 *      that loads must also free cleanly.
 *   1: the input is an event, checked against a fixed config that has
 *      every column type, truncations, predicates and a json column
 *      (JSON parse, RFC 6901 pointers, type checks, RFC 3339 times).
 *   2: the input is an event for the scanner (scan.c) against json_loadb:
 *      whatever the scanner accepts jansson accepts, and every pointer of
 *      the fixed config finds an equal value (or none) in both trees.
 * Built and run by tests/fuzz/run_project.sh (`make fuzz-project`).
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "consumer/project/prj.h"

static const char fixed[] =
    "{\"source\": {\"topics\": [\"t\"], \"group\": \"g\"}, \"sink\": {\"sqlite\": \"x.db\"},"
    " \"tables\": ["
    "  {\"name\": \"a\", \"template\": \"latest_by_id\", \"key\": \"/id\", \"type\": \"x\","
    "   \"delete_when\": {\"pointer\": \"/op\", \"equals\": \"del\"},"
    "   \"columns\": {\"t\": \"/t\", \"i\": {\"pointer\": \"/n/0\", \"type\": \"integer\"},"
    "     \"r\": {\"pointer\": \"/r\", \"type\": \"real\"}, \"b\": {\"pointer\": \"/b\", \"type\": \"boolean\"},"
    "     \"ts\": {\"pointer\": \"/ts\", \"type\": \"timestamp\"},"
    "     \"m\": {\"pointer\": \"/ts\", \"type\": \"timestamp\", \"truncate\": \"month\"},"
    "     \"d\": {\"pointer\": \"/d\", \"type\": \"text\", \"truncate\": \"day\"},"
    "     \"j\": {\"pointer\": \"/a~1b/~0c\", \"type\": \"json\"}}},"
    "  {\"name\": \"s\", \"template\": \"sum\", \"group_by\": {\"g\": \"/g\"},"
    "   \"when\": [{\"pointer\": \"/k\", \"exists\": true}],"
    "   \"value\": {\"pointer\": \"/v\", \"type\": \"integer\"}}]}";

static struct prj_config cfg;
static bool loaded;
static struct prj_plan *plan;

static void same_at(const struct prj_pointer *p, json_t *a, json_t *b)
{
    json_t *x = prj_pointer_get(p, a), *y = prj_pointer_get(p, b);
    if ((x == NULL) != (y == NULL) || (x && !json_equal(x, y)))
        abort(); /* the reduced tree answers a pointer differently */
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char err[256];
    if (size == 0)
        return 0;
    if (data[0] == 0) {
        struct prj_config c;
        if (prj_config_loadb((const char *)data + 1, size - 1, &c, err, sizeof err) == 0 &&
            c.n_tables == 0)
            abort(); /* a config that loads has tables */
        prj_config_free(&c);
        return 0;
    }
    if (!loaded) {
        if (prj_config_loadb(fixed, sizeof fixed - 1, &cfg, err, sizeof err) != 0)
            abort();
        loaded = true;
        plan = prj_plan_new(&cfg);
    }
    if (data[0] == 2) {
        json_t *s = prj_scan(plan, data + 1, size - 1);
        json_t *j = json_loadb((const char *)data + 1, size - 1, 0, NULL);
        if (s && !j)
            abort(); /* the scanner accepted what jansson refuses */
        for (size_t t = 0; s && t < cfg.n_tables; t++) {
            const struct prj_table *tb = &cfg.tables[t];
            for (size_t i = 0; i < tb->n_when; i++)
                same_at(&tb->when[i].ptr, s, j);
            if (tb->has_key)
                same_at(&tb->key.ptr, s, j);
            for (size_t c = 0; c < tb->n_cols; c++)
                same_at(&tb->cols[c].ptr, s, j);
            if (tb->value.ptr.text)
                same_at(&tb->value.ptr, s, j);
            if (tb->has_del)
                same_at(&tb->del.ptr, s, j);
        }
        json_decref(s);
        json_decref(j);
        return 0;
    }
    json_t *root = prj_parse(plan, data + 1, size - 1, NULL);
    if (!root)
        return 0;
    for (size_t t = 0; t < cfg.n_tables; t++) {
        const struct prj_table *tb = &cfg.tables[t];
        char reason[PRJ_REASON_MAX];
        struct prj_val v;
        (void)prj_selected(tb, "t", root);
        if (tb->has_key && prj_extract(&tb->key, root, &v, reason) == 0) {
            if (v.kind == PV_TEXT && v.len > 0 && !v.s)
                abort();
            prj_val_clear(&v);
        }
        for (size_t c = 0; c < tb->n_cols; c++) {
            if (prj_extract(&tb->cols[c], root, &v, reason) == 0) {
                if (v.kind == PV_TEXT && v.len && memchr(v.s, 0, 0) != NULL)
                    abort();
                prj_val_clear(&v);
            } else if (reason[0] == 0) {
                abort(); /* a refusal always says why */
            }
        }
    }
    json_decref(root);
    return 0;
}
