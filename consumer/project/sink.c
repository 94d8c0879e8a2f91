/*
 * The SQL sink: SQLite (a file in WAL mode, synchronous=NORMAL, which keeps
 * every committed transaction after a process crash and orders commits
 * after an OS crash) or PostgreSQL through libpq. Callers write SQL with
 * SQLite's numbered parameters ?1..?n; the PostgreSQL side rewrites them to
 * $1..$n when preparing. Parameters are typed (struct prj_val): SQLite binds
 * them natively, PostgreSQL gets their text form.
 *
 * Errors: every failure returns SINK_EDB with the database's message in
 * sink_errmsg(); the worker treats them as transient (rolls back, retries
 * with backoff, never advances a position past what was written).
 */
#include <errno.h>
#include <inttypes.h>
#include <libpq-fe.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "consumer/project/prj.h"

struct sink {
    enum sink_kind kind;
    sqlite3 *db;
    PGconn *pg;
    char *conninfo;
    char err[512];
    unsigned stmt_seq;             /* PostgreSQL prepared statement names */
    bool pipelined;                /* PostgreSQL: inside a pipelined transaction */
    int pending;                   /* statements sent, results not read */
};

#define PG_PIPELINE_MAX 2000       /* statements sent before results are read */

struct sink_stmt {
    struct sink *s;
    sqlite3_stmt *st;
    char name[32];                 /* PostgreSQL prepared statement */
    char *sql;                     /* PostgreSQL: to re-prepare after a reconnect */
    int nparams;
    unsigned conn_gen;
};

static unsigned pg_conn_gen;       /* bumped on every reconnect */

static int db_fail(struct sink *s)
{
    if (s->kind == SINK_SQLITE)
        snprintf(s->err, sizeof s->err, "sqlite: %s", sqlite3_errmsg(s->db));
    else
        snprintf(s->err, sizeof s->err, "postgres: %s",
                 s->pg ? PQerrorMessage(s->pg) : "no connection");
    return SINK_EDB;
}

static int pg_connect(struct sink *s)
{
    if (s->pg)
        PQfinish(s->pg);
    s->pg = PQconnectdb(s->conninfo);
    if (PQstatus(s->pg) != CONNECTION_OK)
        return db_fail(s);
    pg_conn_gen++;
    PGresult *r = PQexec(s->pg, "SET client_min_messages = warning");
    PQclear(r);
    return 0;
}

/*
 * PostgreSQL transactions are pipelined (libpq pipeline mode): the rows'
 * statements are sent without waiting for each answer, and their results
 * are read at a sync point (every PG_PIPELINE_MAX statements, before a
 * query whose answer is needed, and at COMMIT). A Sync inside an explicit
 * transaction block does not commit it; an error aborts the transaction
 * and is reported at the next sync point, which the worker treats like any
 * database error (roll back, retry).
 */
static int pg_sync(struct sink *s, int64_t *last_changes)
{
    if (PQpipelineSync(s->pg) != 1)
        return db_fail(s);
    int rc = 0, nulls = 0;
    for (;;) {
        PGresult *r = PQgetResult(s->pg);
        if (!r) {
            if (PQstatus(s->pg) != CONNECTION_OK || ++nulls > s->pending + 2) {
                if (rc == 0)
                    rc = db_fail(s);
                break;
            }
            continue;
        }
        ExecStatusType st = PQresultStatus(r);
        if (st == PGRES_PIPELINE_SYNC) {
            PQclear(r);
            break;
        }
        if ((st == PGRES_FATAL_ERROR || st == PGRES_PIPELINE_ABORTED) && rc == 0) {
            snprintf(s->err, sizeof s->err, "postgres: %s",
                     st == PGRES_FATAL_ERROR ? PQresultErrorMessage(r) : "pipeline aborted");
            rc = SINK_EDB;
        }
        if (st == PGRES_COMMAND_OK && last_changes)
            *last_changes = strtoll(PQcmdTuples(r), NULL, 10);
        PQclear(r);
    }
    s->pending = 0;
    return rc;
}

/* Leaves pipeline mode for a synchronous call (results read first). */
static int pg_pause(struct sink *s)
{
    if (!s->pipelined)
        return 0;
    int rc = pg_sync(s, NULL);
    if (PQexitPipelineMode(s->pg) != 1 && rc == 0)
        rc = db_fail(s);
    return rc;
}

static int pg_resume(struct sink *s)
{
    if (s->pipelined && PQenterPipelineMode(s->pg) != 1)
        return db_fail(s);
    return 0;
}

int sink_open(const struct prj_config *cfg, struct sink **out, char *err, size_t errlen)
{
    struct sink *s = calloc(1, sizeof *s);
    *out = NULL;
    if (cfg->sqlite) {
        s->kind = SINK_SQLITE;
        /* NOMUTEX: each connection is used by one thread (the worker's
         * polling thread, or the command's), so SQLite need not lock its
         * mutex around every call. */
        if (sqlite3_open_v2(cfg->sqlite, &s->db,
                            SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                            NULL) != SQLITE_OK) {
            snprintf(err, errlen, "sqlite %s: %s", cfg->sqlite,
                     s->db ? sqlite3_errmsg(s->db) : "out of memory");
            sink_close(s);
            return SINK_EDB;
        }
        sqlite3_busy_timeout(s->db, cfg->busy_timeout_ms);
        /* temp_store=MEMORY: temporary files (as far as we can tell the
         * statement journal SQLite keeps for a multi-row statement inside
         * a transaction, to undo just that statement) stay in memory
         * (measured: the four-table shape's row statements took 40 %
         * less CPU and half the system time, docs/PERFORMANCE.md). Only
         * temporary objects live there; durability is the WAL's. */
        if (sink_exec(s, "PRAGMA journal_mode=WAL") || sink_exec(s, "PRAGMA synchronous=NORMAL") ||
            sink_exec(s, "PRAGMA cache_size=-65536") || sink_exec(s, "PRAGMA temp_store=MEMORY")) {
            snprintf(err, errlen, "%s", s->err);
            sink_close(s);
            return SINK_EDB;
        }
    } else {
        s->kind = SINK_PG;
        s->conninfo = strdup(cfg->postgres);
        if (pg_connect(s) != 0) {
            snprintf(err, errlen, "%s", s->err);
            sink_close(s);
            return SINK_EDB;
        }
    }
    *out = s;
    return 0;
}

void sink_close(struct sink *s)
{
    if (!s)
        return;
    if (s->db)
        sqlite3_close_v2(s->db);
    if (s->pg)
        PQfinish(s->pg);
    free(s->conninfo);
    free(s);
}

enum sink_kind sink_kind(const struct sink *s)
{
    return s->kind;
}

const char *sink_errmsg(const struct sink *s)
{
    return s->err;
}

int sink_reconnect(struct sink *s)
{
    if (s->kind == SINK_SQLITE)
        return 0;
    if (PQstatus(s->pg) == CONNECTION_OK)
        return 0;
    return pg_connect(s);
}

int sink_exec(struct sink *s, const char *sql)
{
    if (s->kind == SINK_SQLITE) {
        char *msg = NULL;
        if (sqlite3_exec(s->db, sql, NULL, NULL, &msg) != SQLITE_OK) {
            snprintf(s->err, sizeof s->err, "sqlite: %s (%.80s)", msg ? msg : "?", sql);
            sqlite3_free(msg);
            return SINK_EDB;
        }
        return 0;
    }
    if (pg_pause(s) != 0)
        return SINK_EDB;
    PGresult *r = PQexec(s->pg, sql);
    ExecStatusType st = PQresultStatus(r);
    int rc = (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK) ? 0 : db_fail(s);
    PQclear(r);
    if (rc == 0)
        rc = pg_resume(s);
    return rc;
}

int sink_begin(struct sink *s)
{
    if (s->kind == SINK_SQLITE)
        return sink_exec(s, "BEGIN IMMEDIATE");
    if (sink_exec(s, "BEGIN") != 0)
        return SINK_EDB;
    if (PQenterPipelineMode(s->pg) != 1)
        return db_fail(s);
    s->pipelined = true;
    s->pending = 0;
    return 0;
}

int sink_commit(struct sink *s)
{
    if (s->kind == SINK_SQLITE)
        return sink_exec(s, "COMMIT");
    int rc = 0;
    if (s->pipelined) {
        rc = pg_sync(s, NULL);
        if (PQexitPipelineMode(s->pg) != 1 && rc == 0)
            rc = db_fail(s);
        s->pipelined = false;
    }
    if (rc)
        return rc;
    return sink_exec(s, "COMMIT");
}

void sink_rollback(struct sink *s)
{
    if (s->kind == SINK_SQLITE) {
        if (!sqlite3_get_autocommit(s->db))
            sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
        return;
    }
    if (s->pipelined && s->pg && PQstatus(s->pg) == CONNECTION_OK) {
        (void)pg_sync(s, NULL);
        PQexitPipelineMode(s->pg);
    }
    s->pipelined = false;
    s->pending = 0;
    if (s->pg && PQstatus(s->pg) == CONNECTION_OK)
        PQclear(PQexec(s->pg, "ROLLBACK"));
}

/* ?N -> $N for PostgreSQL. */
static char *pg_sql(const char *sql)
{
    char *o = strdup(sql);
    for (char *p = o; *p; p++)
        if (*p == '?')
            *p = '$';
    return o;
}

static int pg_prepare(struct sink_stmt *st)
{
    struct sink *s = st->s;
    char *sql = pg_sql(st->sql);
    PGresult *r = PQprepare(s->pg, st->name, sql, st->nparams, NULL);
    free(sql);
    int rc = PQresultStatus(r) == PGRES_COMMAND_OK ? 0 : db_fail(s);
    PQclear(r);
    st->conn_gen = pg_conn_gen;
    return rc;
}

int sink_prepare(struct sink *s, const char *sql, int nparams, struct sink_stmt **out)
{
    struct sink_stmt *st = calloc(1, sizeof *st);
    st->s = s;
    st->nparams = nparams;
    *out = NULL;
    if (s->kind == SINK_SQLITE) {
        if (sqlite3_prepare_v2(s->db, sql, -1, &st->st, NULL) != SQLITE_OK) {
            snprintf(s->err, sizeof s->err, "sqlite: %s (%.120s)", sqlite3_errmsg(s->db), sql);
            free(st);
            return SINK_EDB;
        }
    } else {
        snprintf(st->name, sizeof st->name, "vp%u", ++s->stmt_seq);
        st->sql = strdup(sql);
        if (pg_pause(s) != 0 || pg_prepare(st) != 0 || pg_resume(s) != 0) {
            free(st->sql);
            free(st);
            return SINK_EDB;
        }
    }
    *out = st;
    return 0;
}

void sink_stmt_free(struct sink_stmt *st)
{
    if (!st)
        return;
    if (st->st)
        sqlite3_finalize(st->st);
    free(st->sql);
    free(st);
}

static int sqlite_bind(sqlite3_stmt *st, const struct prj_val *p, int n)
{
    for (int i = 0; i < n; i++) {
        int rc;
        switch (p[i].kind) {
        case PV_INT:
            rc = sqlite3_bind_int64(st, i + 1, p[i].i);
            break;
        case PV_REAL:
            rc = sqlite3_bind_double(st, i + 1, p[i].d);
            break;
        case PV_TEXT:
            rc = sqlite3_bind_text(st, i + 1, p[i].s, (int)p[i].len, SQLITE_STATIC);
            break;
        default:
            rc = sqlite3_bind_null(st, i + 1);
            break;
        }
        if (rc != SQLITE_OK)
            return rc;
    }
    return SQLITE_OK;
}

/* Text forms of parameters for libpq, NUL-terminated, all in one buffer
 * (multi-row statements have thousands of parameters). */
struct pg_params {
    const char **v;
    char *buf;
    const char *v_small[PRJ_COLUMNS_MAX + 8];
    char buf_small[4096];
};

static void pg_params_fill(struct pg_params *pp, const struct prj_val *p, int n)
{
    size_t need = 0;
    for (int i = 0; i < n; i++)
        need += p[i].kind == PV_TEXT ? p[i].len + 1 : p[i].kind == PV_NULL ? 0 : 40;
    size_t count = n > 0 ? (size_t)n : 0;
    pp->v = count <= PRJ_COLUMNS_MAX + 8 ? pp->v_small : malloc(count * sizeof *pp->v);
    pp->buf = need <= sizeof pp->buf_small ? pp->buf_small : malloc(need);
    if (!pp->v || !pp->buf)
        abort(); /* out of memory for one statement's parameters */
    char *o = pp->buf;
    for (int i = 0; i < n; i++) {
        switch (p[i].kind) {
        case PV_INT:
            pp->v[i] = o;
            o += snprintf(o, 40, "%" PRId64, p[i].i) + 1;
            break;
        case PV_REAL:
            pp->v[i] = o;
            o += snprintf(o, 40, "%.17g", p[i].d) + 1;
            break;
        case PV_TEXT:
            pp->v[i] = o;
            memcpy(o, p[i].s, p[i].len);
            o[p[i].len] = 0;
            o += p[i].len + 1;
            break;
        default:
            pp->v[i] = NULL;
            break;
        }
    }
}

static void pg_params_free(struct pg_params *pp, int n)
{
    (void)n;
    if (pp->v != pp->v_small)
        free(pp->v);
    if (pp->buf != pp->buf_small)
        free(pp->buf);
}

int sink_run(struct sink_stmt *st, const struct prj_val *p, int n, int64_t *changes)
{
    struct sink *s = st->s;
    if (s->kind == SINK_SQLITE) {
        int rc = sqlite_bind(st->st, p, n);
        for (int i = n; rc == SQLITE_OK && i < st->nparams; i++)
            rc = sqlite3_bind_null(st->st, i + 1);
        if (rc == SQLITE_OK) {
            do
                rc = sqlite3_step(st->st);
            while (rc == SQLITE_ROW);
        }
        /* Every parameter is bound again on the next run: no
         * sqlite3_clear_bindings. */
        sqlite3_reset(st->st);
        if (rc != SQLITE_DONE)
            return db_fail(s);
        if (changes)
            *changes = sqlite3_changes(s->db);
        return 0;
    }
    if (st->conn_gen != pg_conn_gen) {
        if (pg_pause(s) != 0 || pg_prepare(st) != 0 || pg_resume(s) != 0)
            return SINK_EDB;
    }
    struct pg_params pp;
    pg_params_fill(&pp, p, n);
    int rc = 0;
    if (s->pipelined) {
        if (PQsendQueryPrepared(s->pg, st->name, n, pp.v, NULL, NULL, 0) != 1)
            rc = db_fail(s);
        else if (++s->pending >= PG_PIPELINE_MAX || changes)
            rc = pg_sync(s, changes);
        pg_params_free(&pp, n);
        return rc;
    }
    PGresult *r = PQexecPrepared(s->pg, st->name, n, pp.v, NULL, NULL, 0);
    pg_params_free(&pp, n);
    ExecStatusType es = PQresultStatus(r);
    if (es != PGRES_COMMAND_OK && es != PGRES_TUPLES_OK)
        rc = db_fail(s);
    else if (changes)
        *changes = strtoll(PQcmdTuples(r), NULL, 10);
    PQclear(r);
    return rc;
}

int sink_query(struct sink *s, const char *sql, const struct prj_val *p, int n, sink_row_cb cb,
               void *opaque)
{
    if (s->kind == SINK_SQLITE) {
        sqlite3_stmt *st = NULL;
        if (sqlite3_prepare_v2(s->db, sql, -1, &st, NULL) != SQLITE_OK)
            return db_fail(s);
        int rc = sqlite_bind(st, p, n);
        const char *vals[PRJ_COLUMNS_MAX];
        while (rc == SQLITE_OK || rc == SQLITE_ROW) {
            rc = sqlite3_step(st);
            if (rc != SQLITE_ROW)
                break;
            int nc = sqlite3_column_count(st);
            if (nc > (int)PRJ_COLUMNS_MAX)
                nc = PRJ_COLUMNS_MAX;
            for (int i = 0; i < nc; i++)
                vals[i] = (const char *)sqlite3_column_text(st, i);
            if (cb(opaque, nc, vals) != 0) {
                rc = SQLITE_DONE;
                break;
            }
        }
        int out = rc == SQLITE_DONE ? 0 : db_fail(s);
        sqlite3_finalize(st);
        return out;
    }
    if (pg_pause(s) != 0)
        return SINK_EDB;
    char *q = pg_sql(sql);
    struct pg_params pp;
    pg_params_fill(&pp, p, n);
    PGresult *r = PQexecParams(s->pg, q, n, NULL, pp.v, NULL, NULL, 0);
    pg_params_free(&pp, n);
    free(q);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        int rc = db_fail(s);
        PQclear(r);
        (void)pg_resume(s);
        return rc;
    }
    int nc = PQnfields(r);
    if (nc > (int)PRJ_COLUMNS_MAX)
        nc = PRJ_COLUMNS_MAX;
    const char *vals[PRJ_COLUMNS_MAX];
    for (int row = 0; row < PQntuples(r); row++) {
        for (int i = 0; i < nc; i++)
            vals[i] = PQgetisnull(r, row, i) ? NULL : PQgetvalue(r, row, i);
        if (cb(opaque, nc, vals) != 0)
            break;
    }
    PQclear(r);
    return pg_resume(s);
}

const char *sink_sqltype(const struct sink *s, enum prj_type t)
{
    bool pg = s->kind == SINK_PG;
    switch (t) {
    case PT_TEXT:
        return "TEXT";
    case PT_INTEGER:
        return pg ? "BIGINT" : "INTEGER";
    case PT_REAL:
        return pg ? "DOUBLE PRECISION" : "REAL";
    case PT_BOOLEAN:
        return pg ? "BOOLEAN" : "INTEGER";
    case PT_TIMESTAMP:
        return pg ? "TIMESTAMPTZ" : "TEXT";
    case PT_JSON:
        return pg ? "JSONB" : "TEXT";
    }
    return "TEXT";
}

static int exists_cb(void *opaque, int n, const char *const *v)
{
    *(bool *)opaque = true;
    return 1;
}

int sink_table_exists(struct sink *s, const char *name, bool *out)
{
    *out = false;
    struct prj_val p = {.kind = PV_TEXT, .s = name, .len = strlen(name)};
    return sink_query(s,
                      s->kind == SINK_SQLITE
                          ? "SELECT 1 FROM sqlite_master WHERE type='table' AND name=?1"
                          : "SELECT 1 FROM information_schema.tables WHERE "
                            "table_schema = current_schema() AND table_name=?1",
                      &p, 1, exists_cb, out);
}
