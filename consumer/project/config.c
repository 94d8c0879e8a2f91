/*
 * The projection config (JSON, docs/PROJECTIONS.md): source, sink, tables.
 *
 * Everything is checked here, once, so the worker never meets a name it
 * cannot quote or a template without its parts: table and column names are
 * [A-Za-z_][A-Za-z0-9_]* of at most PRJ_NAME_MAX bytes and do not start
 * with "_verity"; pointers are RFC 6901; a table has what its template
 * needs (a key for latest_by_id and timeline, group_by for counter and sum,
 * a value for sum, an entity and tags for tags).
 */
#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "consumer/project/prj.h"

static int fail(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    return -1;
}

static bool name_ok(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > PRJ_NAME_MAX || strncmp(s, "_verity", 7) == 0)
        return false;
    if (!(isalpha((unsigned char)s[0]) || s[0] == '_'))
        return false;
    for (size_t i = 0; i < n; i++)
        if (!(isalnum((unsigned char)s[i]) || s[i] == '_'))
            return false;
    return strstr(s, PRJ_SHADOW_SUFFIX) == NULL;
}

static void pointer_free(struct prj_pointer *p)
{
    for (size_t i = 0; i < p->n; i++)
        free(p->seg[i]);
    free(p->seg);
    free(p->text);
    memset(p, 0, sizeof *p);
}

static int pointer_fail(struct prj_pointer *p)
{
    pointer_free(p);
    return -1;
}

static int pointer_parse(const char *text, struct prj_pointer *p, char *err, size_t errlen)
{
    memset(p, 0, sizeof *p);
    if (text[0] != '/')
        return fail(err, errlen, "pointer \"%s\" must start with '/'", text);
    p->text = strdup(text);
    p->seg = calloc(PRJ_POINTER_DEPTH_MAX, sizeof *p->seg);
    const char *s = text + 1;
    for (;;) {
        if (p->n == PRJ_POINTER_DEPTH_MAX) {
            fail(err, errlen, "pointer \"%s\" is deeper than %u", text, PRJ_POINTER_DEPTH_MAX);
            return pointer_fail(p);
        }
        const char *e = strchr(s, '/');
        size_t len = e ? (size_t)(e - s) : strlen(s);
        char *seg = malloc(len + 1);
        size_t o = 0;
        for (size_t i = 0; i < len; i++) {
            if (s[i] == '~') {
                if (i + 1 < len && (s[i + 1] == '0' || s[i + 1] == '1')) {
                    seg[o++] = s[i + 1] == '0' ? '~' : '/';
                    i++;
                    continue;
                }
                free(seg);
                fail(err, errlen, "pointer \"%s\": '~' must be followed by 0 or 1", text);
                return pointer_fail(p);
            }
            seg[o++] = s[i];
        }
        seg[o] = 0;
        p->seg[p->n++] = seg;
        if (!e)
            break;
        s = e + 1;
    }
    return 0;
}


static int type_parse(const char *s, enum prj_type *t)
{
    static const char *names[] = {"text", "integer", "real", "boolean", "timestamp", "json"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (strcmp(s, names[i]) == 0) {
            *t = (enum prj_type)i;
            return 0;
        }
    return -1;
}

const char *prj_type_name(enum prj_type t)
{
    static const char *names[] = {"text", "integer", "real", "boolean", "timestamp", "json"};
    return (unsigned)t < 6 ? names[t] : "?";
}

static const char *last_segment(const struct prj_pointer *p)
{
    return p->n ? p->seg[p->n - 1] : "";
}

/* A column from "name": "/pointer" or "name": {"pointer":..., "type":...}. */
static void column_free(struct prj_column *c)
{
    free(c->name);
    pointer_free(&c->ptr);
    memset(c, 0, sizeof *c);
}

static int column_parse1(const char *name, json_t *j, enum prj_type dflt, struct prj_column *c,
                         char *err, size_t errlen);

/* On failure c is left empty. */
static int column_parse(const char *name, json_t *j, enum prj_type dflt, struct prj_column *c,
                        char *err, size_t errlen)
{
    if (column_parse1(name, j, dflt, c, err, errlen) == 0)
        return 0;
    column_free(c);
    return -1;
}

static int column_parse1(const char *name, json_t *j, enum prj_type dflt, struct prj_column *c,
                         char *err, size_t errlen)
{
    memset(c, 0, sizeof *c);
    c->type = dflt;
    const char *ptr = NULL;
    if (json_is_string(j)) {
        ptr = json_string_value(j);
    } else if (json_is_object(j)) {
        ptr = json_string_value(json_object_get(j, "pointer"));
        json_t *t = json_object_get(j, "type");
        if (t && (!json_is_string(t) || type_parse(json_string_value(t), &c->type) != 0))
            return fail(err, errlen,
                        "column \"%s\": type must be text, integer, real, boolean, "
                        "timestamp or json",
                        name ? name : "?");
        json_t *tr = json_object_get(j, "truncate");
        if (tr) {
            const char *v = json_string_value(tr);
            if (!v)
                return fail(err, errlen, "column \"%s\": truncate must be a string", name);
            if (strcmp(v, "hour") == 0)
                c->trunc = TR_HOUR;
            else if (strcmp(v, "day") == 0)
                c->trunc = TR_DAY;
            else if (strcmp(v, "month") == 0)
                c->trunc = TR_MONTH;
            else if (strcmp(v, "year") == 0)
                c->trunc = TR_YEAR;
            else
                return fail(err, errlen, "column \"%s\": truncate is hour, day, month or year",
                            name);
            if (c->type != PT_TIMESTAMP && c->type != PT_TEXT)
                return fail(err, errlen, "column \"%s\": truncate needs type timestamp or text",
                            name);
        }
        c->required = json_is_true(json_object_get(j, "required"));
    }
    if (!ptr)
        return fail(err, errlen, "column \"%s\": needs a pointer", name ? name : "?");
    if (pointer_parse(ptr, &c->ptr, err, errlen) != 0)
        return -1;
    const char *nm = name ? name : last_segment(&c->ptr);
    if (!name_ok(nm))
        return fail(err, errlen,
                    "column name \"%s\" must be [A-Za-z_][A-Za-z0-9_]*, at most %u bytes, "
                    "not starting with _verity",
                    nm, PRJ_NAME_MAX);
    c->name = strdup(nm);
    return 0;
}

static int pred_parse(json_t *j, struct prj_pred *p, char *err, size_t errlen)
{
    memset(p, 0, sizeof *p);
    const char *ptr = json_string_value(json_object_get(j, "pointer"));
    if (!json_is_object(j) || !ptr)
        return fail(err, errlen, "a predicate is {\"pointer\": \"/x\", \"equals\": V} or "
                                 "{\"pointer\": \"/x\", \"exists\": true}");
    if (pointer_parse(ptr, &p->ptr, err, errlen) != 0)
        return -1;
    json_t *eq = json_object_get(j, "equals");
    if (eq)
        p->equals = json_incref(eq);
    json_t *ex = json_object_get(j, "exists");
    p->exists = ex ? json_is_true(ex) : true;
    return 0;
}

static void pred_free(struct prj_pred *p)
{
    pointer_free(&p->ptr);
    json_decref(p->equals);
    p->equals = NULL;
}

static int strings_parse(json_t *arr, const char *what, char ***out, size_t *n, char *err,
                         size_t errlen)
{
    if (!json_is_array(arr))
        return fail(err, errlen, "%s must be an array of strings", what);
    *n = json_array_size(arr);
    *out = calloc(*n + 1, sizeof **out);
    for (size_t i = 0; i < *n; i++) {
        const char *s = json_string_value(json_array_get(arr, i));
        if (!s)
            return fail(err, errlen, "%s must be an array of strings", what);
        (*out)[i] = strdup(s);
    }
    return 0;
}

static int template_parse(const char *s, enum prj_template *t)
{
    static const char *names[] = {"latest_by_id", "timeline", "counter", "sum", "tags"};
    for (size_t i = 0; i < 5; i++)
        if (strcmp(s, names[i]) == 0) {
            *t = (enum prj_template)i;
            return 0;
        }
    return -1;
}

static bool table_has_column(const struct prj_table *t, const char *name)
{
    if (t->has_key && strcmp(t->key.name, name) == 0)
        return true;
    for (size_t i = 0; i < t->n_cols; i++)
        if (strcmp(t->cols[i].name, name) == 0)
            return true;
    static const char *fixed[] = {"_topic", "_partition", "_offset", "count", "sum",
                                  "tag_key", "tag_value", "entity"};
    for (size_t i = 0; i < sizeof fixed / sizeof fixed[0]; i++)
        if (strcmp(fixed[i], name) == 0)
            return true;
    return false;
}

/* Columns of an object {"name": column, ...} in document order. */
static int columns_parse(json_t *obj, const char *what, enum prj_type dflt, bool required,
                         struct prj_column **out, size_t *n, char *err, size_t errlen)
{
    if (!json_is_object(obj))
        return fail(err, errlen, "%s must be an object of columns", what);
    if (json_object_size(obj) > PRJ_COLUMNS_MAX)
        return fail(err, errlen, "%s: at most %u columns", what, PRJ_COLUMNS_MAX);
    *out = calloc(json_object_size(obj) + 1, sizeof **out);
    *n = 0;
    const char *k;
    json_t *v;
    json_object_foreach(obj, k, v) {
        if (column_parse(k, v, dflt, &(*out)[*n], err, errlen) != 0)
            return -1;
        if (required)
            (*out)[*n].required = true;
        (*n)++;
    }
    return 0;
}

static int table_parse(json_t *j, struct prj_table *t, char *err, size_t errlen)
{
    const char *name = json_string_value(json_object_get(j, "name"));
    const char *tpl = json_string_value(json_object_get(j, "template"));
    if (!json_is_object(j) || !name || !name_ok(name))
        return fail(err, errlen, "each table needs a \"name\" of [A-Za-z_][A-Za-z0-9_]*");
    t->name = strdup(name);
    if (!tpl || template_parse(tpl, &t->tpl) != 0)
        return fail(err, errlen,
                    "table %s: template must be latest_by_id, timeline, counter, sum or tags",
                    name);
    json_t *x;
    if ((x = json_object_get(j, "topics")) &&
        strings_parse(x, "topics", &t->topics, &t->n_topics, err, errlen) != 0)
        return -1;
    /* Selection: "type": V is {"pointer": "/type", "equals": V}; "when": [...]. */
    json_t *when = json_object_get(j, "when");
    json_t *type = json_object_get(j, "type");
    size_t nw = (when ? (json_is_array(when) ? json_array_size(when) : 1) : 0) + (type ? 1 : 0);
    t->when = calloc(nw + 1, sizeof *t->when);
    if (type) {
        json_t *p = json_pack("{s:s,s:O}", "pointer",
                              json_string_value(json_object_get(j, "type_pointer"))
                                  ? json_string_value(json_object_get(j, "type_pointer"))
                                  : "/type",
                              "equals", type);
        int rc = pred_parse(p, &t->when[t->n_when++], err, errlen);
        json_decref(p);
        if (rc)
            return -1;
    }
    if (json_is_array(when)) {
        for (size_t i = 0; i < json_array_size(when); i++)
            if (pred_parse(json_array_get(when, i), &t->when[t->n_when++], err, errlen) != 0)
                return -1;
    } else if (when && pred_parse(when, &t->when[t->n_when++], err, errlen) != 0) {
        return -1;
    }

    json_t *key = json_object_get(j, t->tpl == TPL_TAGS ? "entity" : "key");
    if (t->tpl == TPL_LATEST || t->tpl == TPL_TIMELINE || t->tpl == TPL_TAGS) {
        if (!key)
            return fail(err, errlen, "table %s: template %s needs \"%s\"", name, tpl,
                        t->tpl == TPL_TAGS ? "entity" : "key");
        if (column_parse(json_is_object(key) ? json_string_value(json_object_get(key, "name"))
                                             : NULL,
                         key, PT_TEXT, &t->key, err, errlen) != 0)
            return -1;
        json_t *kt = json_object_get(j, "key_type");
        if (kt && (!json_is_string(kt) || type_parse(json_string_value(kt), &t->key.type) != 0))
            return fail(err, errlen, "table %s: key_type must be a column type", name);
        if (t->key.type != PT_TEXT && t->key.type != PT_INTEGER)
            return fail(err, errlen, "table %s: a key is text or integer", name);
        t->key.required = true;
        t->has_key = true;
        if (t->tpl == TPL_TAGS) {
            free(t->key.name);
            t->key.name = strdup("entity");
        }
    }
    switch (t->tpl) {
    case TPL_LATEST:
    case TPL_TIMELINE:
        if ((x = json_object_get(j, "columns")) &&
            columns_parse(x, "columns", PT_TEXT, false, &t->cols, &t->n_cols, err, errlen) != 0)
            return -1;
        if (t->tpl == TPL_LATEST && (x = json_object_get(j, "delete_when"))) {
            if (pred_parse(x, &t->del, err, errlen) != 0)
                return -1;
            t->has_del = true;
        }
        break;
    case TPL_COUNTER:
    case TPL_SUM:
        if (columns_parse(json_object_get(j, "group_by"), "group_by", PT_TEXT, true, &t->cols,
                          &t->n_cols, err, errlen) != 0 ||
            t->n_cols == 0)
            return fail(err, errlen, "table %s: %s needs \"group_by\": {column, ...}", name,
                        tpl);
        if (t->tpl == TPL_SUM) {
            x = json_object_get(j, "value");
            if (!x || column_parse("sum", x, PT_REAL, &t->value, err, errlen) != 0)
                return fail(err, errlen, "table %s: sum needs \"value\": {\"pointer\": ..., "
                                         "\"type\": \"real\"|\"integer\"}",
                            name);
            if (t->value.type != PT_REAL && t->value.type != PT_INTEGER)
                return fail(err, errlen, "table %s: the summed value is real or integer", name);
            t->value.required = true;
        }
        break;
    case TPL_TAGS:
        if (columns_parse(json_object_get(j, "tags"), "tags", PT_TEXT, false, &t->cols,
                          &t->n_cols, err, errlen) != 0 ||
            t->n_cols == 0)
            return fail(err, errlen, "table %s: tags needs \"tags\": {tag: pointer, ...}", name);
        for (size_t i = 0; i < t->n_cols; i++)
            t->cols[i].type = PT_TEXT; /* tag values are stored as text */
        break;
    }
    for (size_t i = 0; i < t->n_cols; i++)
        for (size_t k = 0; k < i; k++)
            if (strcmp(t->cols[i].name, t->cols[k].name) == 0 ||
                (t->has_key && strcmp(t->cols[i].name, t->key.name) == 0))
                return fail(err, errlen, "table %s: column %s twice", name, t->cols[i].name);
    if ((x = json_object_get(j, "indexes"))) {
        if (!json_is_array(x))
            return fail(err, errlen, "table %s: indexes is an array of column lists", name);
        t->n_indexes = json_array_size(x);
        t->indexes = calloc(t->n_indexes + 1, sizeof *t->indexes);
        for (size_t i = 0; i < t->n_indexes; i++) {
            json_t *ix = json_array_get(x, i);
            size_t n = 0;
            if (json_is_string(ix)) {
                json_t *a = json_pack("[O]", ix);
                int rc = strings_parse(a, "an index", &t->indexes[i], &n, err, errlen);
                json_decref(a);
                if (rc)
                    return -1;
            } else if (strings_parse(ix, "an index", &t->indexes[i], &n, err, errlen) != 0) {
                return -1;
            }
            for (size_t c = 0; c < n; c++)
                if (!table_has_column(t, t->indexes[i][c]))
                    return fail(err, errlen, "table %s: index column %s is not a column", name,
                                t->indexes[i][c]);
        }
    }
    return 0;
}

static void table_free(struct prj_table *t)
{
    free(t->name);
    for (size_t i = 0; i < t->n_topics; i++)
        free(t->topics[i]);
    free(t->topics);
    for (size_t i = 0; i < t->n_when; i++)
        pred_free(&t->when[i]);
    free(t->when);
    column_free(&t->key);
    for (size_t i = 0; i < t->n_cols; i++)
        column_free(&t->cols[i]);
    free(t->cols);
    column_free(&t->value);
    pred_free(&t->del);
    for (size_t i = 0; i < t->n_indexes; i++) {
        for (char **c = t->indexes[i]; c && *c; c++)
            free(*c);
        free(t->indexes[i]);
    }
    free(t->indexes);
}

static int int_opt(json_t *o, const char *k, long long lo, long long hi, long long dflt,
                   long long *out, char *err, size_t errlen)
{
    json_t *v = json_object_get(o, k);
    *out = dflt;
    if (!v)
        return 0;
    if (!json_is_integer(v) || json_integer_value(v) < lo || json_integer_value(v) > hi)
        return fail(err, errlen, "%s must be an integer in [%lld, %lld]", k, lo, hi);
    *out = json_integer_value(v);
    return 0;
}

static int config_parse(json_t *root, const char *path, struct prj_config *cfg, char *err,
                        size_t errlen);

int prj_config_load(const char *path, struct prj_config *cfg, char *err, size_t errlen)
{
    memset(cfg, 0, sizeof *cfg);
    json_error_t je;
    json_t *root = json_load_file(path, JSON_REJECT_DUPLICATES, &je);
    if (!root)
        return fail(err, errlen, "%s:%d: %s", path, je.line, je.text);
    return config_parse(root, path, cfg, err, errlen);
}

int prj_config_loadb(const char *buf, size_t len, struct prj_config *cfg, char *err,
                     size_t errlen)
{
    memset(cfg, 0, sizeof *cfg);
    json_error_t je;
    json_t *root = json_loadb(buf, len, JSON_REJECT_DUPLICATES, &je);
    if (!root)
        return fail(err, errlen, "config:%d: %s", je.line, je.text);
    return config_parse(root, "config", cfg, err, errlen);
}

/* Takes over root (freed before return). */
static int config_parse(json_t *root, const char *path, struct prj_config *cfg, char *err,
                        size_t errlen)
{
    int rc = -1;
    cfg->path = strdup(path);
    json_t *src = json_object_get(root, "source");
    json_t *sink = json_object_get(root, "sink");
    json_t *tables = json_object_get(root, "tables");
    if (!json_is_object(root) || !json_is_object(src) || !json_is_object(sink) ||
        !json_is_array(tables)) {
        fail(err, errlen, "%s: needs \"source\", \"sink\" and \"tables\"", path);
        goto out;
    }
    if (strings_parse(json_object_get(src, "topics"), "source.topics", &cfg->topics,
                      &cfg->n_topics, err, errlen) != 0)
        goto out;
    if (cfg->n_topics == 0 || cfg->n_topics > 16) {
        fail(err, errlen, "source.topics: 1 to 16 topics");
        goto out;
    }
    const char *group = json_string_value(json_object_get(src, "group"));
    if (!group) {
        fail(err, errlen, "source.group is required");
        goto out;
    }
    cfg->group = strdup(group);
    const char *s;
    if ((s = json_string_value(json_object_get(src, "broker"))))
        cfg->broker = strdup(s);
    if ((s = json_string_value(json_object_get(src, "dlq_topic"))))
        cfg->dlq_topic = strdup(s);
    if ((s = json_string_value(json_object_get(sink, "sqlite"))))
        cfg->sqlite = strdup(s);
    if ((s = json_string_value(json_object_get(sink, "postgres"))))
        cfg->postgres = strdup(s);
    if (!cfg->sqlite == !cfg->postgres) {
        fail(err, errlen, "sink: exactly one of \"sqlite\" (a file) or \"postgres\" "
                          "(a connection string)");
        goto out;
    }
    long long v;
    if (int_opt(sink, "batch_events", 1, 1000000, 20000, &v, err, errlen))
        goto out;
    cfg->batch_events = (uint32_t)v;
    if (int_opt(sink, "commit_ms", 1, 60000, 200, &v, err, errlen))
        goto out;
    cfg->commit_ms = (int)v;
    if (int_opt(sink, "busy_timeout_ms", 0, 600000, 5000, &v, err, errlen))
        goto out;
    cfg->busy_timeout_ms = (int)v;
    s = json_string_value(json_object_get(root, "on_bad_event"));
    if (s && strcmp(s, "stop") == 0)
        cfg->on_bad = ON_BAD_STOP;
    else if (s && strcmp(s, "dlq") != 0) {
        fail(err, errlen, "on_bad_event is \"dlq\" (default) or \"stop\"");
        goto out;
    }
    if ((s = json_string_value(json_object_get(root, "metrics"))))
        cfg->metrics = strdup(s);
    cfg->n_tables = json_array_size(tables);
    if (cfg->n_tables == 0 || cfg->n_tables > PRJ_TABLES_MAX) {
        fail(err, errlen, "tables: 1 to %u tables", PRJ_TABLES_MAX);
        goto out;
    }
    cfg->tables = calloc(cfg->n_tables, sizeof *cfg->tables);
    for (size_t i = 0; i < cfg->n_tables; i++) {
        if (table_parse(json_array_get(tables, i), &cfg->tables[i], err, errlen) != 0)
            goto out;
        for (size_t k = 0; k < i; k++)
            if (strcmp(cfg->tables[k].name, cfg->tables[i].name) == 0) {
                fail(err, errlen, "table %s twice", cfg->tables[i].name);
                goto out;
            }
    }
    rc = 0;
out:
    json_decref(root);
    return rc;
}

void prj_config_free(struct prj_config *cfg)
{
    for (size_t i = 0; i < cfg->n_topics; i++)
        free(cfg->topics[i]);
    free(cfg->topics);
    free(cfg->path);
    free(cfg->group);
    free(cfg->broker);
    free(cfg->sqlite);
    free(cfg->postgres);
    free(cfg->dlq_topic);
    free(cfg->metrics);
    for (size_t i = 0; cfg->tables && i < cfg->n_tables; i++)
        table_free(&cfg->tables[i]);
    free(cfg->tables);
    memset(cfg, 0, sizeof *cfg);
}
