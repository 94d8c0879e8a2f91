/*
 * verity-project internals: the configuration, typed values, the SQL sink
 * (SQLite or PostgreSQL behind one table of functions) and the table
 * appliers that turn one JSON event into row operations.
 *
 * Everything here is used by one thread (the worker's polling thread, or
 * the CLI's main thread); the metrics endpoint reads struct prj_stats only
 * under its mutex.
 */
#ifndef VERITY_PRJ_H
#define VERITY_PRJ_H

#include <jansson.h>
#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define PRJ_VERSION "0.1.0"
#define PRJ_NAME_MAX 63u         /* bytes in a table or column name */
#define PRJ_TABLES_MAX 64u
#define PRJ_COLUMNS_MAX 64u
#define PRJ_POINTER_DEPTH_MAX 32u
#define PRJ_REASON_MAX 256u
#define PRJ_POSITIONS "_verity_positions"
#define PRJ_META "_verity_meta"
#define PRJ_SHADOW_SUFFIX "__shadow"
#define PRJ_CHAIN_SIZE 32u         /* SHA-256 chain hash of a log batch */

/* ---- configuration ------------------------------------------------------- */

enum prj_type { PT_TEXT, PT_INTEGER, PT_REAL, PT_BOOLEAN, PT_TIMESTAMP, PT_JSON };
enum prj_template { TPL_LATEST, TPL_TIMELINE, TPL_COUNTER, TPL_SUM, TPL_TAGS };
enum prj_trunc { TR_NONE, TR_HOUR, TR_DAY, TR_MONTH, TR_YEAR };

struct prj_pointer {               /* a parsed RFC 6901 JSON pointer */
    char *text;                    /* as written ("/a/b") */
    size_t n;                      /* segments */
    char **seg;                    /* unescaped segments */
};

struct prj_column {
    char *name;
    struct prj_pointer ptr;
    enum prj_type type;
    enum prj_trunc trunc;          /* timestamp / text dates: keep a prefix */
    bool required;                 /* missing -> bad event (always for keys) */
};

struct prj_pred {                  /* selects events: pointer equals / exists */
    struct prj_pointer ptr;
    json_t *equals;                /* NULL: only existence is tested */
    bool exists;                   /* with equals == NULL: must (not) exist */
};

struct prj_table {
    char *name;
    enum prj_template tpl;
    char **topics;                 /* events of these topics only (n 0: all) */
    size_t n_topics;
    struct prj_pred *when;         /* all must hold (n 0: every event) */
    size_t n_when;
    struct prj_column key;         /* latest_by_id, timeline: key; tags: entity */
    bool has_key;
    struct prj_column *cols;       /* columns; counter/sum: group_by; tags: tags */
    size_t n_cols;
    struct prj_column value;       /* sum: the summed value */
    struct prj_pred del;           /* latest_by_id: delete the key when it holds */
    bool has_del;
    char ***indexes;               /* each a NULL-terminated list of columns */
    size_t n_indexes;
};

enum prj_on_bad { ON_BAD_DLQ, ON_BAD_STOP };

struct prj_config {
    char *path;                    /* the file it came from */
    char **topics;
    size_t n_topics;
    char *group;
    char *broker;                  /* NULL: $VERITY_BROKER or the default */
    char *sqlite;                  /* one of sqlite / postgres */
    char *postgres;
    char *dlq_topic;               /* NULL: "<first topic>.dlq" */
    enum prj_on_bad on_bad;
    uint32_t batch_events;         /* events per transaction at most (20000) */
    int commit_ms;                 /* a transaction at least this often (200) */
    int busy_timeout_ms;           /* SQLite lock wait (5000) */
    char *metrics;                 /* "HOST:PORT" of /metrics, NULL: off */
    struct prj_table *tables;
    size_t n_tables;
};

/* Reads and checks the config file. On error returns -1 with a message in
 * err (errlen bytes). cfg is filled on success; prj_config_free releases. */
int prj_config_load(const char *path, struct prj_config *cfg, char *err, size_t errlen);
/* The same from a buffer (the fuzz target). */
int prj_config_loadb(const char *buf, size_t len, struct prj_config *cfg, char *err,
                     size_t errlen);
void prj_config_free(struct prj_config *cfg);
const char *prj_type_name(enum prj_type t);

/* ---- values ---------------------------------------------------------------- */

enum prj_vkind { PV_NULL, PV_INT, PV_REAL, PV_TEXT };

struct prj_val {
    enum prj_vkind kind;
    int64_t i;
    double d;
    const char *s;                 /* PV_TEXT: points into the event, buf or own */
    size_t len;
    char buf[48];                  /* formatted numbers and timestamps */
    char *own;                     /* malloc'd text (json columns), or NULL */
};

void prj_val_clear(struct prj_val *v);

/* Resolves ptr in root; NULL when absent. */
json_t *prj_pointer_get(const struct prj_pointer *ptr, json_t *root);

/* Extracts column c from root into v. Returns 0, or -1 with the reason in
 * reason (PRJ_REASON_MAX) for a missing required value or a wrong type. */
int prj_extract(const struct prj_column *c, json_t *root, struct prj_val *v, char *reason);

/* True when every predicate of t holds for (topic, root). */
bool prj_selected(const struct prj_table *t, const char *topic, json_t *root);
bool prj_pred_holds(const struct prj_pred *p, json_t *root);

/* ---- sink -------------------------------------------------------------------- */

enum sink_kind { SINK_SQLITE, SINK_PG };

struct sink;
struct sink_stmt;

/* A database error: transient ones (lock busy, disk full, I/O, lost
 * connection) are retried by the worker; the message is in sink_errmsg. */
#define SINK_EDB (-1)
#define SINK_ECONFLICT (-2)        /* a compare-and-set on positions failed */

int sink_open(const struct prj_config *cfg, struct sink **out, char *err, size_t errlen);
void sink_close(struct sink *s);
enum sink_kind sink_kind(const struct sink *s);
const char *sink_errmsg(const struct sink *s);
/* Re-establishes a lost connection (PostgreSQL); 0 or SINK_EDB. */
int sink_reconnect(struct sink *s);
int sink_exec(struct sink *s, const char *sql);
/* Begins a write transaction that holds the write lock from the start
 * (SQLite BEGIN IMMEDIATE; PostgreSQL BEGIN). */
int sink_begin(struct sink *s);
int sink_commit(struct sink *s);
void sink_rollback(struct sink *s);
/* sql uses ?1..?n in SQLite style; the PostgreSQL sink rewrites them to $n. */
int sink_prepare(struct sink *s, const char *sql, int nparams, struct sink_stmt **out);
void sink_stmt_free(struct sink_stmt *st);
/* Runs a statement with n parameters; *changes (may be NULL) rows changed. */
int sink_run(struct sink_stmt *st, const struct prj_val *p, int n, int64_t *changes);
/* Runs a query; row_cb gets each row as text columns (NULL for SQL NULL). */
typedef int (*sink_row_cb)(void *opaque, int ncols, const char *const *vals);
int sink_query(struct sink *s, const char *sql, const struct prj_val *p, int n, sink_row_cb cb,
               void *opaque);
/* SQL type of a column type in this sink's dialect. */
const char *sink_sqltype(const struct sink *s, enum prj_type t);
/* True when the named table exists. */
int sink_table_exists(struct sink *s, const char *name, bool *out);

/* ---- appliers ------------------------------------------------------------ */

struct applier;

/* Creates the tables of cfg named "<name><suffix>" (IF NOT EXISTS) with
 * their indexes (named for generation gen) and prepares the statements.
 * Call inside or outside a transaction. */
int applier_new(struct sink *s, const struct prj_config *cfg, const char *suffix, uint32_t gen,
                struct applier **out);
void applier_free(struct applier *a);
/* Checks event root (of topic) against every table's mapping. Returns 0
 * or -1 with the first reason (a bad event). */
int applier_check(const struct applier *a, const char *topic, json_t *root, char *reason);
/* Applies a checked event to every table that selects it. */
int applier_apply(struct applier *a, const char *topic, uint32_t partition, uint64_t offset,
                  json_t *root);
/* On: rows wait in the applier and are written several per statement
 * (multi-row VALUES); the caller keeps every event it applied alive and
 * calls applier_flush before the positions and COMMIT, applier_discard
 * after a rollback. Off (the default): each row is written at once. */
void applier_batch(struct applier *a, bool on);
int applier_flush(struct applier *a);
void applier_discard(struct applier *a);
/* Statements for a swap: DROP live, RENAME shadow, in dialect order. */
int applier_swap(struct sink *s, const struct prj_config *cfg, uint32_t gen_new);

/* ---- positions ------------------------------------------------------------- */

struct prj_pos {
    char *topic;
    uint32_t partition;
    uint64_t next_offset;          /* the first offset not applied */
    uint64_t events;               /* applied events (rows or dead letters) */
    uint64_t dead_lettered;
    int64_t updated_ms;
    double rate_eps;               /* events/s over the last commits */
    bool stored;                   /* a row exists in the sink */
    /* The chain hash of the log batch that holds next_offset - 1 (it covers
     * the log up to chain_offset, that batch's last offset): which log
     * prefix the tables were built from. has_chain false: nothing applied
     * yet (or a row written before chain hashes were stored). */
    bool has_chain;
    uint8_t chain[PRJ_CHAIN_SIZE];
    uint64_t chain_offset;
};

/* Creates the positions and meta tables when missing. */
int pos_ensure(struct sink *s);
/* Loads every stored position (*out: n entries, pos_free). */
int pos_load(struct sink *s, struct prj_pos **out, size_t *n);
void pos_free(struct prj_pos *p, size_t n);
/* Stores p inside the open transaction: compare-and-set against
 * expected_next (UINT64_MAX: the row must not exist). SINK_ECONFLICT when
 * another writer moved it. */
int pos_store(struct sink *s, const char *table, const struct prj_pos *p, uint64_t expected_next);
/* Inside the open transaction, before writing rows: checks that the
 * stored position of (topic, partition) is still what this writer loaded
 * (and, in PostgreSQL, locks the row until commit). SINK_ECONFLICT if not. */
int pos_check(struct sink *s, const char *topic, uint32_t partition, bool stored,
              uint64_t expected_next);
/* Lower-case hex of a chain hash into out (2 * PRJ_CHAIN_SIZE + 1 bytes). */
void prj_hex(const uint8_t *chain, char *out);
/* Parses 64 hex digits; 0 or -1. */
int prj_unhex(const char *hex, uint8_t *chain);
/* The table generation (indexes are named after it); 0 when unset. */
int meta_gen(struct sink *s, uint32_t *out);

/* ---- event parsing (scan.c) ------------------------------------------------ */

/* The members the config's pointers reach, as a trie. */
struct prj_plan;
struct prj_plan *prj_plan_new(const struct prj_config *cfg);
void prj_plan_free(struct prj_plan *pl);
/* Parses one event: a strict scan that builds only the members pl reaches
 * (the tree answers every pointer of the config as json_loadb's would);
 * anything it does not accept is parsed by json_loadb, whose error (je)
 * stands. NULL: not JSON. pl NULL: json_loadb only. */
json_t *prj_parse(const struct prj_plan *pl, const void *buf, size_t len, json_error_t *je);
/* The scan alone: NULL when it refuses (prj_parse then asks jansson). */
json_t *prj_scan(const struct prj_plan *pl, const void *buf, size_t len);
/* Frees the calling thread's string buffer. */
void prj_parse_release(void);

/* ---- jansson arena (arena.c) --------------------------------------------- */

/* Routes jansson's allocations to a bump allocator whose free is a no-op. */
void prj_arena_enable(void);
/* Makes the arena's memory reusable: every jansson value allocated since
 * the last reset must have been dropped. */
void prj_arena_reset(void);
/* Gives jansson malloc and free back and frees the blocks; no value
 * allocated from the arena may be used after. */
void prj_arena_disable(void);

/* ---- helpers ---------------------------------------------------------------- */

int64_t prj_now_ms(void);
int64_t prj_mono_ms(void);

#endif
