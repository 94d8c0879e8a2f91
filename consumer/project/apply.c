/*
 * Table appliers: the DDL of each template and the prepared statements
 * that apply one event, plus the positions table.
 *
 * Shapes (k: the key column, c..: the configured columns):
 *   latest_by_id  t(k PK, c.., _topic, _partition, _offset)   upsert / delete
 *   timeline      t(_topic, _partition, _offset, k, c..)      insert; PK is
 *                 the event's position, index on (k, _partition, _offset)
 *   counter       t(g.. PK, count)                            count += 1
 *   sum           t(g.. PK, sum, count)                       sum += v, count += 1
 *   tags          t(tag_key, tag_value, entity) PK all three  insert if absent
 *
 * Positions (_verity_positions): one row per source partition, written in
 * the same transaction as the rows, with a compare-and-set on next_offset
 * so two writers (a rebalance overlap, a rebuild's swap) cannot both move
 * it: the loser rolls back and reloads.
 *   topic, part, next_offset, chain_hash (hex SHA-256 chain hash of the log
 *   batch holding next_offset - 1; NULL before any event), chain_offset (that
 *   batch's last offset), events, dead_lettered, updated_ms, rate_eps
 */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "consumer/project/prj.h"

#define SQL_MAX 8192

struct tapp {
    const struct prj_table *t;
    struct sink_stmt *up;          /* upsert / insert */
    struct sink_stmt *del;         /* latest_by_id with delete_when */
    int nparams;
};

struct applier {
    struct sink *s;
    const struct prj_config *cfg;
    struct tapp *ta;
    size_t n;
};

static void cat(char *buf, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void cat(char *buf, const char *fmt, ...)
{
    size_t len = strlen(buf);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf + len, SQL_MAX - len, fmt, ap);
    va_end(ap);
}

static const char *ktype(struct sink *s, const struct prj_table *t)
{
    return sink_sqltype(s, t->key.type);
}

static int create_table(struct sink *s, const struct prj_table *t, const char *suffix,
                        uint32_t gen)
{
    char sql[SQL_MAX] = "";
    const char *big = sink_kind(s) == SINK_PG ? "BIGINT" : "INTEGER";
    cat(sql, "CREATE TABLE IF NOT EXISTS %s%s (", t->name, suffix);
    switch (t->tpl) {
    case TPL_LATEST:
        cat(sql, "%s %s PRIMARY KEY", t->key.name, ktype(s, t));
        for (size_t i = 0; i < t->n_cols; i++)
            cat(sql, ", %s %s", t->cols[i].name, sink_sqltype(s, t->cols[i].type));
        cat(sql, ", _topic TEXT NOT NULL, _partition INTEGER NOT NULL, _offset %s NOT NULL)", big);
        break;
    case TPL_TIMELINE:
        cat(sql, "_topic TEXT NOT NULL, _partition INTEGER NOT NULL, _offset %s NOT NULL", big);
        cat(sql, ", %s %s NOT NULL", t->key.name, ktype(s, t));
        for (size_t i = 0; i < t->n_cols; i++)
            cat(sql, ", %s %s", t->cols[i].name, sink_sqltype(s, t->cols[i].type));
        cat(sql, ", PRIMARY KEY (_topic, _partition, _offset))");
        break;
    case TPL_COUNTER:
    case TPL_SUM:
        for (size_t i = 0; i < t->n_cols; i++)
            cat(sql, "%s %s NOT NULL, ", t->cols[i].name, sink_sqltype(s, t->cols[i].type));
        if (t->tpl == TPL_SUM)
            cat(sql, "sum %s NOT NULL, ", sink_sqltype(s, t->value.type));
        cat(sql, "count %s NOT NULL, PRIMARY KEY (", big);
        for (size_t i = 0; i < t->n_cols; i++)
            cat(sql, "%s%s", i ? ", " : "", t->cols[i].name);
        cat(sql, "))");
        break;
    case TPL_TAGS:
        cat(sql, "tag_key TEXT NOT NULL, tag_value TEXT NOT NULL, entity %s NOT NULL, "
                 "PRIMARY KEY (tag_key, tag_value, entity))",
            ktype(s, t));
        break;
    }
    if (sink_exec(s, sql) != 0)
        return SINK_EDB;
    /* Built-in secondary indexes, then the declared ones. */
    if (t->tpl == TPL_TIMELINE) {
        snprintf(sql, sizeof sql,
                 "CREATE INDEX IF NOT EXISTS %s_bykey_g%u ON %s%s (%s, _partition, _offset)",
                 t->name, gen, t->name, suffix, t->key.name);
        if (sink_exec(s, sql) != 0)
            return SINK_EDB;
    }
    if (t->tpl == TPL_TAGS) {
        snprintf(sql, sizeof sql, "CREATE INDEX IF NOT EXISTS %s_byentity_g%u ON %s%s (entity)",
                 t->name, gen, t->name, suffix);
        if (sink_exec(s, sql) != 0)
            return SINK_EDB;
    }
    for (size_t i = 0; i < t->n_indexes; i++) {
        snprintf(sql, sizeof sql, "CREATE INDEX IF NOT EXISTS %s_ix%zu_g%u ON %s%s (", t->name,
                 i, gen, t->name, suffix);
        for (char **c = t->indexes[i]; *c; c++)
            cat(sql, "%s%s", c == t->indexes[i] ? "" : ", ", *c);
        cat(sql, ")");
        if (sink_exec(s, sql) != 0)
            return SINK_EDB;
    }
    return 0;
}

static int prepare_table(struct sink *s, struct tapp *ta, const char *suffix)
{
    const struct prj_table *t = ta->t;
    char sql[SQL_MAX] = "";
    int n = 0;
    switch (t->tpl) {
    case TPL_LATEST:
        cat(sql, "INSERT INTO %s%s (%s", t->name, suffix, t->key.name);
        for (size_t i = 0; i < t->n_cols; i++)
            cat(sql, ", %s", t->cols[i].name);
        cat(sql, ", _topic, _partition, _offset) VALUES (");
        n = (int)t->n_cols + 4;
        for (int i = 1; i <= n; i++)
            cat(sql, "%s?%d", i > 1 ? ", " : "", i);
        cat(sql, ") ON CONFLICT (%s) DO UPDATE SET ", t->key.name);
        for (size_t i = 0; i < t->n_cols; i++)
            cat(sql, "%s = excluded.%s, ", t->cols[i].name, t->cols[i].name);
        cat(sql, "_topic = excluded._topic, _partition = excluded._partition, "
                 "_offset = excluded._offset");
        if (t->has_del) {
            char d[512];
            snprintf(d, sizeof d, "DELETE FROM %s%s WHERE %s = ?1", t->name, suffix,
                     t->key.name);
            if (sink_prepare(s, d, 1, &ta->del) != 0)
                return SINK_EDB;
        }
        break;
    case TPL_TIMELINE:
        cat(sql, "INSERT INTO %s%s (_topic, _partition, _offset, %s", t->name, suffix,
            t->key.name);
        for (size_t i = 0; i < t->n_cols; i++)
            cat(sql, ", %s", t->cols[i].name);
        cat(sql, ") VALUES (");
        n = (int)t->n_cols + 4;
        for (int i = 1; i <= n; i++)
            cat(sql, "%s?%d", i > 1 ? ", " : "", i);
        cat(sql, ")");
        break;
    case TPL_COUNTER:
    case TPL_SUM:
        cat(sql, "INSERT INTO %s%s (", t->name, suffix);
        for (size_t i = 0; i < t->n_cols; i++)
            cat(sql, "%s, ", t->cols[i].name);
        n = (int)t->n_cols;
        if (t->tpl == TPL_SUM) {
            cat(sql, "sum, ");
            n++;
        }
        cat(sql, "count) VALUES (");
        for (int i = 1; i <= n; i++)
            cat(sql, "?%d, ", i);
        cat(sql, "1) ON CONFLICT (");
        for (size_t i = 0; i < t->n_cols; i++)
            cat(sql, "%s%s", i ? ", " : "", t->cols[i].name);
        cat(sql, ") DO UPDATE SET ");
        if (t->tpl == TPL_SUM)
            cat(sql, "sum = %s%s.sum + excluded.sum, ", t->name, suffix);
        cat(sql, "count = %s%s.count + 1", t->name, suffix);
        break;
    case TPL_TAGS:
        cat(sql, "INSERT INTO %s%s (tag_key, tag_value, entity) VALUES (?1, ?2, ?3) "
                 "ON CONFLICT DO NOTHING",
            t->name, suffix);
        n = 3;
        break;
    }
    ta->nparams = n;
    return sink_prepare(s, sql, n, &ta->up);
}

int applier_new(struct sink *s, const struct prj_config *cfg, const char *suffix, uint32_t gen,
                struct applier **out)
{
    struct applier *a = calloc(1, sizeof *a);
    a->s = s;
    a->cfg = cfg;
    a->n = cfg->n_tables;
    a->ta = calloc(a->n, sizeof *a->ta);
    *out = NULL;
    for (size_t i = 0; i < a->n; i++) {
        a->ta[i].t = &cfg->tables[i];
        if (create_table(s, &cfg->tables[i], suffix, gen) != 0 ||
            prepare_table(s, &a->ta[i], suffix) != 0) {
            applier_free(a);
            return SINK_EDB;
        }
    }
    *out = a;
    return 0;
}

void applier_free(struct applier *a)
{
    if (!a)
        return;
    for (size_t i = 0; i < a->n; i++) {
        sink_stmt_free(a->ta[i].up);
        sink_stmt_free(a->ta[i].del);
    }
    free(a->ta);
    free(a);
}

static int extract_all(const struct prj_table *t, json_t *root, struct prj_val *v, char *reason)
{
    size_t k = 0;
    int rc = 0;
    if (t->has_key)
        rc = prj_extract(&t->key, root, &v[k++], reason);
    for (size_t i = 0; rc == 0 && i < t->n_cols; i++)
        rc = prj_extract(&t->cols[i], root, &v[k++], reason);
    if (rc == 0 && t->tpl == TPL_SUM)
        rc = prj_extract(&t->value, root, &v[k++], reason);
    for (size_t i = 0; i < k; i++)
        if (rc != 0 || v[i].own)
            prj_val_clear(&v[i]);
    return rc;
}

int applier_check(const struct applier *a, const char *topic, json_t *root, char *reason)
{
    struct prj_val v[PRJ_COLUMNS_MAX + 2];
    for (size_t i = 0; i < a->n; i++) {
        const struct prj_table *t = a->ta[i].t;
        if (!prj_selected(t, topic, root))
            continue;
        if (t->has_del && prj_pred_holds(&t->del, root)) {
            if (prj_extract(&t->key, root, &v[0], reason) != 0)
                return -1;
            continue;
        }
        if (extract_all(t, root, v, reason) != 0)
            return -1;
    }
    return 0;
}

static void text_val(struct prj_val *v, const char *s)
{
    v->kind = PV_TEXT;
    v->s = s;
    v->len = strlen(s);
    v->own = NULL;
}

static int apply_table(struct tapp *ta, const char *topic, uint32_t partition, uint64_t offset,
                       json_t *root)
{
    const struct prj_table *t = ta->t;
    struct prj_val v[PRJ_COLUMNS_MAX + 8];
    char reason[PRJ_REASON_MAX];
    int rc = 0;
    size_t k = 0;
    if (t->tpl == TPL_LATEST && t->has_del && prj_pred_holds(&t->del, root)) {
        if (prj_extract(&t->key, root, &v[0], reason) != 0)
            return 0; /* applier_check said otherwise: cannot happen */
        return sink_run(ta->del, v, 1, NULL);
    }
    switch (t->tpl) {
    case TPL_LATEST:
    case TPL_TIMELINE: {
        struct prj_val pos[3];
        text_val(&pos[0], topic);
        pos[1] = (struct prj_val){.kind = PV_INT, .i = partition};
        pos[2] = (struct prj_val){.kind = PV_INT, .i = (int64_t)offset};
        if (t->tpl == TPL_TIMELINE) {
            memcpy(v, pos, sizeof pos);
            k = 3;
        }
        if (prj_extract(&t->key, root, &v[k++], reason) != 0)
            return 0;
        for (size_t i = 0; i < t->n_cols; i++)
            if (prj_extract(&t->cols[i], root, &v[k++], reason) != 0)
                v[k - 1].kind = PV_NULL;
        if (t->tpl == TPL_LATEST) {
            memcpy(&v[k], pos, sizeof pos);
            k += 3;
        }
        rc = sink_run(ta->up, v, (int)k, NULL);
        break;
    }
    case TPL_COUNTER:
    case TPL_SUM:
        for (size_t i = 0; i < t->n_cols; i++)
            if (prj_extract(&t->cols[i], root, &v[k++], reason) != 0)
                return 0;
        if (t->tpl == TPL_SUM && prj_extract(&t->value, root, &v[k++], reason) != 0)
            return 0;
        rc = sink_run(ta->up, v, (int)k, NULL);
        break;
    case TPL_TAGS: {
        struct prj_val ent;
        if (prj_extract(&t->key, root, &ent, reason) != 0)
            return 0;
        for (size_t i = 0; i < t->n_cols && rc == 0; i++) {
            json_t *j = prj_pointer_get(&t->cols[i].ptr, root);
            char num[48];
            struct prj_val tv[3];
            text_val(&tv[0], t->cols[i].name);
            if (!j || json_is_null(j))
                continue;
            if (json_is_string(j)) {
                tv[1] = (struct prj_val){.kind = PV_TEXT, .s = json_string_value(j),
                                         .len = json_string_length(j)};
            } else if (json_is_integer(j)) {
                snprintf(num, sizeof num, "%" PRId64, (int64_t)json_integer_value(j));
                text_val(&tv[1], num);
            } else if (json_is_real(j)) {
                snprintf(num, sizeof num, "%.17g", json_real_value(j));
                text_val(&tv[1], num);
            } else if (json_is_boolean(j)) {
                text_val(&tv[1], json_is_true(j) ? "true" : "false");
            } else {
                continue; /* objects and arrays are not tags */
            }
            tv[2] = ent;
            rc = sink_run(ta->up, tv, 3, NULL);
        }
        prj_val_clear(&ent);
        return rc;
    }
    }
    for (size_t i = 0; i < k; i++)
        prj_val_clear(&v[i]);
    return rc;
}

int applier_apply(struct applier *a, const char *topic, uint32_t partition, uint64_t offset,
                  json_t *root)
{
    for (size_t i = 0; i < a->n; i++) {
        if (!prj_selected(a->ta[i].t, topic, root))
            continue;
        int rc = apply_table(&a->ta[i], topic, partition, offset, root);
        if (rc)
            return rc;
    }
    return 0;
}

int applier_swap(struct sink *s, const struct prj_config *cfg, uint32_t gen_new)
{
    char sql[SQL_MAX];
    for (size_t i = 0; i < cfg->n_tables; i++) {
        const char *n = cfg->tables[i].name;
        snprintf(sql, sizeof sql, "DROP TABLE IF EXISTS %s", n);
        if (sink_exec(s, sql) != 0)
            return SINK_EDB;
        snprintf(sql, sizeof sql, "ALTER TABLE %s%s RENAME TO %s", n, PRJ_SHADOW_SUFFIX, n);
        if (sink_exec(s, sql) != 0)
            return SINK_EDB;
    }
    snprintf(sql, sizeof sql, "UPDATE %s SET gen = %u", PRJ_META, gen_new);
    return sink_exec(s, sql);
}

/* ---- positions ------------------------------------------------------------ */

static int any_row(void *opaque, int nc, const char *const *v)
{
    *(bool *)opaque = true;
    return 1;
}

int pos_ensure(struct sink *s)
{
    char sql[1024];
    const char *big = sink_kind(s) == SINK_PG ? "BIGINT" : "INTEGER";
    const char *dbl = sink_kind(s) == SINK_PG ? "DOUBLE PRECISION" : "REAL";
    snprintf(sql, sizeof sql,
             "CREATE TABLE IF NOT EXISTS %s (topic TEXT NOT NULL, part INTEGER NOT NULL, "
             "next_offset %s NOT NULL, chain_hash TEXT, events %s NOT NULL, "
             "dead_lettered %s NOT NULL, updated_ms %s NOT NULL, rate_eps %s NOT NULL, "
             "chain_offset %s, PRIMARY KEY (topic, part))",
             PRJ_POSITIONS, big, big, big, big, dbl, big);
    if (sink_exec(s, sql) != 0)
        return SINK_EDB;
    /* A table from 0.1.0 has no chain_offset column yet. */
    bool col = false;
    snprintf(sql, sizeof sql,
             sink_kind(s) == SINK_PG
                 ? "SELECT 1 FROM information_schema.columns WHERE table_schema = "
                   "current_schema() AND table_name = '%s' AND column_name = 'chain_offset'"
                 : "SELECT 1 FROM pragma_table_info('%s') WHERE name = 'chain_offset'",
             PRJ_POSITIONS);
    if (sink_query(s, sql, NULL, 0, any_row, &col) != 0)
        return SINK_EDB;
    if (!col) {
        snprintf(sql, sizeof sql, "ALTER TABLE %s ADD COLUMN chain_offset %s", PRJ_POSITIONS,
                 big);
        if (sink_exec(s, sql) != 0)
            return SINK_EDB;
    }
    snprintf(sql, sizeof sql, "CREATE TABLE IF NOT EXISTS %s (gen INTEGER NOT NULL)", PRJ_META);
    if (sink_exec(s, sql) != 0)
        return SINK_EDB;
    bool have = false;
    snprintf(sql, sizeof sql, "SELECT 1 FROM %s", PRJ_META);
    if (sink_query(s, sql, NULL, 0, any_row, &have) != 0)
        return SINK_EDB;
    if (!have) {
        snprintf(sql, sizeof sql, "INSERT INTO %s (gen) VALUES (0)", PRJ_META);
        if (sink_exec(s, sql) != 0)
            return SINK_EDB;
    }
    return 0;
}

struct pos_list {
    struct prj_pos *p;
    size_t n, cap;
};

static int pos_row(void *opaque, int nc, const char *const *v)
{
    struct pos_list *l = opaque;
    if (nc < 9 || !v[0] || !v[1] || !v[2])
        return 0;
    if (l->n == l->cap) {
        l->cap = l->cap ? l->cap * 2 : 16;
        l->p = realloc(l->p, l->cap * sizeof *l->p);
    }
    struct prj_pos *p = &l->p[l->n++];
    memset(p, 0, sizeof *p);
    p->topic = strdup(v[0]);
    p->partition = (uint32_t)strtoul(v[1], NULL, 10);
    p->next_offset = strtoull(v[2], NULL, 10);
    p->events = v[3] ? strtoull(v[3], NULL, 10) : 0;
    p->dead_lettered = v[4] ? strtoull(v[4], NULL, 10) : 0;
    p->updated_ms = v[5] ? strtoll(v[5], NULL, 10) : 0;
    p->rate_eps = v[6] ? strtod(v[6], NULL) : 0;
    p->stored = true;
    /* A hash that is not 64 hex digits loads as none: verify reports it. */
    if (v[7] && v[8] && prj_unhex(v[7], p->chain) == 0) {
        p->has_chain = true;
        p->chain_offset = strtoull(v[8], NULL, 10);
    }
    return 0;
}

int pos_load(struct sink *s, struct prj_pos **out, size_t *n)
{
    struct pos_list l = {0};
    *out = NULL;
    *n = 0;
    char sql[256];
    snprintf(sql, sizeof sql,
             "SELECT topic, part, next_offset, events, dead_lettered, updated_ms, rate_eps, "
             "chain_hash, chain_offset FROM %s ORDER BY topic, part",
             PRJ_POSITIONS);
    if (sink_query(s, sql, NULL, 0, pos_row, &l) != 0) {
        pos_free(l.p, l.n);
        return SINK_EDB;
    }
    *out = l.p;
    *n = l.n;
    return 0;
}

void pos_free(struct prj_pos *p, size_t n)
{
    for (size_t i = 0; p && i < n; i++)
        free(p[i].topic);
    free(p);
}

void prj_hex(const uint8_t *chain, char *out)
{
    static const char dig[] = "0123456789abcdef";
    for (size_t i = 0; i < PRJ_CHAIN_SIZE; i++) {
        out[2 * i] = dig[chain[i] >> 4];
        out[2 * i + 1] = dig[chain[i] & 15];
    }
    out[2 * PRJ_CHAIN_SIZE] = 0;
}

static int hexval(char c)
{
    return c >= '0' && c <= '9' ? c - '0'
           : c >= 'a' && c <= 'f' ? c - 'a' + 10
           : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                  : -1;
}

int prj_unhex(const char *hex, uint8_t *chain)
{
    if (strlen(hex) != 2 * PRJ_CHAIN_SIZE)
        return -1;
    for (size_t i = 0; i < PRJ_CHAIN_SIZE; i++) {
        int hi = hexval(hex[2 * i]), lo = hexval(hex[2 * i + 1]);
        if (hi < 0 || lo < 0)
            return -1;
        chain[i] = (uint8_t)(hi << 4 | lo);
    }
    return 0;
}

int pos_store(struct sink *s, const char *table, const struct prj_pos *p, uint64_t expected_next)
{
    char sql[512];
    char hex[2 * PRJ_CHAIN_SIZE + 1];
    if (p->has_chain)
        prj_hex(p->chain, hex);
    struct prj_val v[10] = {
        {.kind = PV_INT, .i = (int64_t)p->next_offset},
        {.kind = PV_INT, .i = (int64_t)p->events},
        {.kind = PV_INT, .i = (int64_t)p->dead_lettered},
        {.kind = PV_INT, .i = p->updated_ms},
        {.kind = PV_REAL, .d = p->rate_eps},
        {.kind = PV_TEXT, .s = p->topic, .len = strlen(p->topic)},
        {.kind = PV_INT, .i = p->partition},
        {.kind = PV_INT, .i = (int64_t)expected_next},
        {.kind = p->has_chain ? PV_TEXT : PV_NULL, .s = hex, .len = 2 * PRJ_CHAIN_SIZE},
        {.kind = p->has_chain ? PV_INT : PV_NULL, .i = (int64_t)p->chain_offset},
    };
    int64_t changes = 0;
    struct sink_stmt *st = NULL;
    if (expected_next == UINT64_MAX) {
        snprintf(sql, sizeof sql,
                 "INSERT INTO %s (next_offset, events, dead_lettered, updated_ms, rate_eps, "
                 "topic, part, chain_hash, chain_offset) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, "
                 "?8, ?9) ON CONFLICT DO NOTHING",
                 table);
        struct prj_val vi[9];
        memcpy(vi, v, 7 * sizeof *v);
        vi[7] = v[8];
        vi[8] = v[9];
        if (sink_prepare(s, sql, 9, &st) != 0)
            return SINK_EDB;
        int rc = sink_run(st, vi, 9, &changes);
        sink_stmt_free(st);
        if (rc)
            return rc;
    } else {
        snprintf(sql, sizeof sql,
                 "UPDATE %s SET next_offset = ?1, events = ?2, dead_lettered = ?3, "
                 "updated_ms = ?4, rate_eps = ?5, chain_hash = ?9, chain_offset = ?10 "
                 "WHERE topic = ?6 AND part = ?7 AND next_offset = ?8",
                 table);
        if (sink_prepare(s, sql, 10, &st) != 0)
            return SINK_EDB;
        int rc = sink_run(st, v, 10, &changes);
        sink_stmt_free(st);
        if (rc)
            return rc;
    }
    return changes == 1 ? 0 : SINK_ECONFLICT;
}

struct pos_one {
    bool found;
    uint64_t next;
};

static int pos_one_row(void *opaque, int nc, const char *const *v)
{
    struct pos_one *o = opaque;
    if (nc >= 1 && v[0]) {
        o->found = true;
        o->next = strtoull(v[0], NULL, 10);
    }
    return 1;
}

int pos_check(struct sink *s, const char *topic, uint32_t partition, bool stored,
              uint64_t expected_next)
{
    struct prj_val v[2] = {
        {.kind = PV_TEXT, .s = topic, .len = strlen(topic)},
        {.kind = PV_INT, .i = partition},
    };
    struct pos_one o = {0};
    int rc = sink_query(s,
                        sink_kind(s) == SINK_PG
                            ? "SELECT next_offset FROM " PRJ_POSITIONS
                              " WHERE topic = ?1 AND part = ?2 FOR UPDATE"
                            : "SELECT next_offset FROM " PRJ_POSITIONS
                              " WHERE topic = ?1 AND part = ?2",
                        v, 2, pos_one_row, &o);
    if (rc)
        return rc;
    if (o.found != stored || (stored && o.next != expected_next))
        return SINK_ECONFLICT;
    return 0;
}

static int gen_row(void *opaque, int nc, const char *const *v)
{
    if (nc >= 1 && v[0])
        *(uint32_t *)opaque = (uint32_t)strtoul(v[0], NULL, 10);
    return 1;
}

int meta_gen(struct sink *s, uint32_t *out)
{
    *out = 0;
    char sql[128];
    snprintf(sql, sizeof sql, "SELECT gen FROM %s", PRJ_META);
    return sink_query(s, sql, NULL, 0, gen_row, out);
}
