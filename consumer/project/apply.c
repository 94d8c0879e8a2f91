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

#define MULTI_ROWS_SQLITE 32
#define MULTI_ROWS_PG 256
#define MULTI_PARAMS_MAX 30000

struct tapp {
    const struct prj_table *t;
    struct sink_stmt *up;          /* upsert / insert, one row */
    struct sink_stmt *multi;       /* the same for rows_max rows (NULL: 1) */
    struct sink_stmt *del;         /* latest_by_id with delete_when */
    int nparams;                   /* per row */
    int rows_max;
    /* Rows waiting for a multi-row statement: n_pend rows of nparams
     * values. Texts point into the events (alive until the transaction
     * ends) or into the value's own buf (fixed up when copied); owned
     * texts are freed when the rows are written or dropped. */
    struct prj_val *pend;
    int n_pend;
    int ckey[PRJ_COLUMNS_MAX];     /* PostgreSQL: conflict key parameters */
    int n_ckey;
};

struct applier {
    struct sink *s;
    const struct prj_config *cfg;
    struct tapp *ta;
    size_t n;
    bool batch;                    /* rows wait for multi-row statements */
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

/* A truncated timestamp is a prefix of its UTC form ("2026-12"), which
 * PostgreSQL's TIMESTAMPTZ does not take: TEXT in both sinks. */
static const char *coltype(struct sink *s, const struct prj_column *c)
{
    if (c->type == PT_TIMESTAMP && c->trunc != TR_NONE)
        return "TEXT";
    return sink_sqltype(s, c->type);
}

static const char *ktype(struct sink *s, const struct prj_table *t)
{
    return coltype(s, &t->key);
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
            cat(sql, ", %s %s", t->cols[i].name, coltype(s, &t->cols[i]));
        cat(sql, ", _topic TEXT NOT NULL, _partition INTEGER NOT NULL, _offset %s NOT NULL)", big);
        break;
    case TPL_TIMELINE:
        cat(sql, "_topic TEXT NOT NULL, _partition INTEGER NOT NULL, _offset %s NOT NULL", big);
        cat(sql, ", %s %s NOT NULL", t->key.name, ktype(s, t));
        for (size_t i = 0; i < t->n_cols; i++)
            cat(sql, ", %s %s", t->cols[i].name, coltype(s, &t->cols[i]));
        cat(sql, ", PRIMARY KEY (_topic, _partition, _offset))");
        break;
    case TPL_COUNTER:
    case TPL_SUM:
        for (size_t i = 0; i < t->n_cols; i++)
            cat(sql, "%s %s NOT NULL, ", t->cols[i].name, coltype(s, &t->cols[i]));
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
    /* SQLite: tables whose rows are a key and a few columns are clustered
     * on their primary key (WITHOUT ROWID): an upsert then finds and
     * writes one B-tree instead of the key's index and the rowid table
     * (docs/PERFORMANCE.md). Timelines keep a rowid table: they are
     * appended to and their rows may carry large json columns. */
    if (sink_kind(s) == SINK_SQLITE && t->tpl != TPL_TIMELINE)
        cat(sql, " WITHOUT ROWID");
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

/* A growing SQL string (multi-row statements outgrow SQL_MAX). */
struct sqlbuf {
    char *p;
    size_t len, cap;
};

static void sb(struct sqlbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb(struct sqlbuf *b, const char *fmt, ...)
{
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(b->p ? b->p + b->len : NULL, b->p ? b->cap - b->len : 0, fmt, ap);
        va_end(ap);
        if (n < 0)
            return;
        if (b->p && b->len + (size_t)n < b->cap) {
            b->len += (size_t)n;
            return;
        }
        size_t cap = b->cap ? b->cap * 2 : 1024;
        while (cap < b->len + (size_t)n + 1)
            cap *= 2;
        char *np = realloc(b->p, cap);
        if (!np)
            abort(); /* out of memory building a statement of a few KiB */
        b->p = np;
        b->cap = cap;
    }
}

/* Parameters of one row of t's upsert / insert statement. */
static int row_params(const struct prj_table *t)
{
    switch (t->tpl) {
    case TPL_LATEST:
    case TPL_TIMELINE:
        return (int)t->n_cols + 4;
    case TPL_COUNTER:
        return (int)t->n_cols;
    case TPL_SUM:
        return (int)t->n_cols + 1;
    case TPL_TAGS:
        return 3;
    }
    return 0;
}

/* The statement that writes `rows` rows of t at once: one VALUES tuple per
 * row, parameters ?1.. numbered row after row. SQLite applies the tuples
 * in order, as separate statements would; PostgreSQL refuses a DO UPDATE
 * that meets the same row twice, so the caller never puts two rows with
 * the same conflict key in one statement there. */
static char *upsert_sql(const struct prj_table *t, const char *suffix, int rows)
{
    struct sqlbuf b = {0};
    int n = row_params(t);
    switch (t->tpl) {
    case TPL_LATEST:
        sb(&b, "INSERT INTO %s%s (%s", t->name, suffix, t->key.name);
        for (size_t i = 0; i < t->n_cols; i++)
            sb(&b, ", %s", t->cols[i].name);
        sb(&b, ", _topic, _partition, _offset) VALUES ");
        break;
    case TPL_TIMELINE:
        sb(&b, "INSERT INTO %s%s (_topic, _partition, _offset, %s", t->name, suffix,
           t->key.name);
        for (size_t i = 0; i < t->n_cols; i++)
            sb(&b, ", %s", t->cols[i].name);
        sb(&b, ") VALUES ");
        break;
    case TPL_COUNTER:
    case TPL_SUM:
        sb(&b, "INSERT INTO %s%s (", t->name, suffix);
        for (size_t i = 0; i < t->n_cols; i++)
            sb(&b, "%s, ", t->cols[i].name);
        if (t->tpl == TPL_SUM)
            sb(&b, "sum, ");
        sb(&b, "count) VALUES ");
        break;
    case TPL_TAGS:
        sb(&b, "INSERT INTO %s%s (tag_key, tag_value, entity) VALUES ", t->name, suffix);
        break;
    }
    for (int r = 0; r < rows; r++) {
        sb(&b, "%s(", r ? ", " : "");
        for (int i = 1; i <= n; i++)
            sb(&b, "%s?%d", i > 1 ? ", " : "", r * n + i);
        sb(&b, "%s)", t->tpl == TPL_COUNTER || t->tpl == TPL_SUM ? ", 1" : "");
    }
    switch (t->tpl) {
    case TPL_LATEST:
        sb(&b, " ON CONFLICT (%s) DO UPDATE SET ", t->key.name);
        for (size_t i = 0; i < t->n_cols; i++)
            sb(&b, "%s = excluded.%s, ", t->cols[i].name, t->cols[i].name);
        sb(&b, "_topic = excluded._topic, _partition = excluded._partition, "
               "_offset = excluded._offset");
        break;
    case TPL_TIMELINE:
        break;
    case TPL_COUNTER:
    case TPL_SUM:
        sb(&b, " ON CONFLICT (");
        for (size_t i = 0; i < t->n_cols; i++)
            sb(&b, "%s%s", i ? ", " : "", t->cols[i].name);
        sb(&b, ") DO UPDATE SET ");
        if (t->tpl == TPL_SUM)
            sb(&b, "sum = %s%s.sum + excluded.sum, ", t->name, suffix);
        sb(&b, "count = %s%s.count + 1", t->name, suffix);
        break;
    case TPL_TAGS:
        sb(&b, " ON CONFLICT DO NOTHING");
        break;
    }
    return b.p;
}

static int prepare_table(struct sink *s, struct tapp *ta, const char *suffix)
{
    const struct prj_table *t = ta->t;
    if (t->tpl == TPL_LATEST && t->has_del) {
        char d[512];
        snprintf(d, sizeof d, "DELETE FROM %s%s WHERE %s = ?1", t->name, suffix, t->key.name);
        if (sink_prepare(s, d, 1, &ta->del) != 0)
            return SINK_EDB;
    }
    int n = row_params(t);
    ta->nparams = n;
    /* Rows per multi-row statement: the measured gain flattens out past a
     * few dozen in SQLite (statement overhead is per step); PostgreSQL
     * saves a server round of parse-bind-execute per statement, so more.
     * Both stay far below the parameter limits (32,766 and 65,535). */
    int rows = sink_kind(s) == SINK_SQLITE ? MULTI_ROWS_SQLITE : MULTI_ROWS_PG;
    if (rows * n > MULTI_PARAMS_MAX)
        rows = MULTI_PARAMS_MAX / n;
    if (rows < 1)
        rows = 1;
    if (getenv("VERITY_PROJECT_ROWS")) /* 1: one statement per row (comparisons) */
        rows = atoi(getenv("VERITY_PROJECT_ROWS")) >= 1 ? atoi(getenv("VERITY_PROJECT_ROWS")) : 1;
    /* PostgreSQL: rows with the same conflict key may not share a
     * statement (see upsert_sql); these are their parameters. */
    ta->n_ckey = 0;
    if (sink_kind(s) == SINK_PG) {
        if (t->tpl == TPL_LATEST)
            ta->ckey[ta->n_ckey++] = 0;
        else if (t->tpl == TPL_COUNTER || t->tpl == TPL_SUM)
            for (size_t i = 0; i < t->n_cols; i++)
                ta->ckey[ta->n_ckey++] = (int)i;
    }
    char *sql = upsert_sql(t, suffix, 1);
    int rc = sink_prepare(s, sql, n, &ta->up);
    free(sql);
    if (rc == 0 && rows > 1) {
        sql = upsert_sql(t, suffix, rows);
        rc = sink_prepare(s, sql, n * rows, &ta->multi);
        free(sql);
    }
    if (rc != 0)
        return SINK_EDB;
    ta->rows_max = rows > 1 ? rows : 1;
    ta->pend = calloc((size_t)(n * ta->rows_max), sizeof *ta->pend);
    return 0;
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
    applier_discard(a);
    for (size_t i = 0; i < a->n; i++) {
        sink_stmt_free(a->ta[i].up);
        sink_stmt_free(a->ta[i].multi);
        sink_stmt_free(a->ta[i].del);
        free(a->ta[i].pend);
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

/* ---- multi-row statements ------------------------------------------------ */

static void pend_clear(struct tapp *ta)
{
    for (int i = 0; i < ta->n_pend * ta->nparams; i++)
        prj_val_clear(&ta->pend[i]);
    ta->n_pend = 0;
}

/* Writes the waiting rows: one multi-row statement when they fill it,
 * else one statement per row. */
static int pend_write(struct tapp *ta)
{
    int rc = 0;
    if (ta->n_pend == 0)
        return 0;
    if (ta->multi && ta->n_pend == ta->rows_max)
        rc = sink_run(ta->multi, ta->pend, ta->nparams * ta->n_pend, NULL);
    else
        for (int r = 0; rc == 0 && r < ta->n_pend; r++)
            rc = sink_run(ta->up, &ta->pend[r * ta->nparams], ta->nparams, NULL);
    pend_clear(ta);
    return rc;
}

/* False only when a and b surely differ as SQL values (an extra write of
 * the waiting rows is always safe; a missed equal key is not). */
static bool val_may_equal(const struct prj_val *a, const struct prj_val *b)
{
    if (a->kind != b->kind)
        return true;
    switch (a->kind) {
    case PV_INT:
        return a->i == b->i;
    case PV_REAL:
        return a->d == b->d; /* -0 == 0, as in SQL */
    case PV_TEXT:
        return a->len == b->len && memcmp(a->s, b->s, a->len) == 0;
    default:
        return true;
    }
}

/* Runs one row's statement, or queues the row for a multi-row one. Owned
 * texts move to the queue (v[i].own is NULL after); texts in a value's own
 * buf are copied with it. */
static int row_put(struct applier *a, struct tapp *ta, struct prj_val *v, int n)
{
    if (!a->batch || ta->rows_max <= 1)
        return sink_run(ta->up, v, n, NULL);
    int rc = 0;
    for (int r = 0; r < ta->n_pend && ta->n_ckey && rc == 0; r++) {
        const struct prj_val *p = &ta->pend[r * ta->nparams];
        bool same = true;
        for (int k = 0; k < ta->n_ckey && same; k++)
            same = val_may_equal(&p[ta->ckey[k]], &v[ta->ckey[k]]);
        if (same)
            rc = pend_write(ta); /* PostgreSQL: not twice in one statement */
    }
    if (rc)
        return rc;
    struct prj_val *d = &ta->pend[ta->n_pend * ta->nparams];
    for (int i = 0; i < n; i++) {
        d[i] = v[i];
        if (v[i].kind == PV_TEXT && v[i].s == v[i].buf)
            d[i].s = d[i].buf;
        v[i].own = NULL;
    }
    for (int i = n; i < ta->nparams; i++)
        d[i] = (struct prj_val){.kind = PV_NULL};
    if (++ta->n_pend == ta->rows_max)
        rc = pend_write(ta);
    return rc;
}

void applier_batch(struct applier *a, bool on)
{
    a->batch = on;
}

int applier_flush(struct applier *a)
{
    int rc = 0;
    for (size_t i = 0; i < a->n; i++) {
        int r = pend_write(&a->ta[i]);
        if (rc == 0)
            rc = r;
    }
    return rc;
}

void applier_discard(struct applier *a)
{
    for (size_t i = 0; i < a->n; i++)
        pend_clear(&a->ta[i]);
}

static int apply_table(struct applier *a, struct tapp *ta, const char *topic,
                       uint32_t partition, uint64_t offset, json_t *root)
{
    const struct prj_table *t = ta->t;
    struct prj_val v[PRJ_COLUMNS_MAX + 8];
    char reason[PRJ_REASON_MAX];
    int rc = 0;
    size_t k = 0;
    if (t->tpl == TPL_LATEST && t->has_del && prj_pred_holds(&t->del, root)) {
        if (prj_extract(&t->key, root, &v[0], reason) != 0)
            return 0; /* applier_check said otherwise: cannot happen */
        /* the rows before it first: they may set the key it deletes */
        rc = pend_write(ta);
        if (rc == 0)
            rc = sink_run(ta->del, v, 1, NULL);
        prj_val_clear(&v[0]);
        return rc;
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
        rc = row_put(a, ta, v, (int)k);
        break;
    }
    case TPL_COUNTER:
    case TPL_SUM:
        for (size_t i = 0; i < t->n_cols; i++)
            if (prj_extract(&t->cols[i], root, &v[k++], reason) != 0)
                return 0;
        if (t->tpl == TPL_SUM && prj_extract(&t->value, root, &v[k++], reason) != 0)
            return 0;
        rc = row_put(a, ta, v, (int)k);
        break;
    case TPL_TAGS: {
        struct prj_val ent;
        if (prj_extract(&t->key, root, &ent, reason) != 0)
            return 0;
        for (size_t i = 0; i < t->n_cols && rc == 0; i++) {
            json_t *j = prj_pointer_get(&t->cols[i].ptr, root);
            struct prj_val tv[3];
            text_val(&tv[0], t->cols[i].name);
            if (!j || json_is_null(j))
                continue;
            if (json_is_string(j)) {
                tv[1] = (struct prj_val){.kind = PV_TEXT, .s = json_string_value(j),
                                         .len = json_string_length(j)};
            } else if (json_is_integer(j)) {
                snprintf(tv[1].buf, sizeof tv[1].buf, "%" PRId64,
                         (int64_t)json_integer_value(j));
                text_val(&tv[1], tv[1].buf);
            } else if (json_is_real(j)) {
                snprintf(tv[1].buf, sizeof tv[1].buf, "%.17g", json_real_value(j));
                text_val(&tv[1], tv[1].buf);
            } else if (json_is_boolean(j)) {
                text_val(&tv[1], json_is_true(j) ? "true" : "false");
            } else {
                continue; /* objects and arrays are not tags */
            }
            tv[2] = ent;
            if (ent.s == ent.buf)
                tv[2].s = tv[2].buf;
            tv[2].own = NULL; /* ent keeps it: written below before it is freed */
            rc = row_put(a, ta, tv, 3);
        }
        if (ent.own && rc == 0)
            rc = pend_write(ta);
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
        int rc = apply_table(a, &a->ta[i], topic, partition, offset, root);
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
