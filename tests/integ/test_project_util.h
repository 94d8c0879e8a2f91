/*
 * Harness for the verity-project suites (test_project.c: SQLite,
 * test_project_pg.c: PostgreSQL). Header-only so each suite stays one CUnit
 * program.
 *
 *   - a real verityd (tests/support/tbroker.h);
 *   - a deterministic event stream (dealership sales) produced with
 *     libverity, recording each event's partition and offset from the
 *     delivery reports;
 *   - the reference: a plain C fold of the same events into the four
 *     tables, written as canonical text (rows sorted by byte order, reals
 *     as %.17g), independent of the worker's SQL;
 *   - the same canonical text read back from SQLite (sqlite3 API) or
 *     PostgreSQL (libpq);
 *   - verity-project child processes, stopped by PID;
 *   - a PostgreSQL server from Debian's packages (initdb + postgres) on a
 *     free loopback port in a temporary directory, run as the `postgres`
 *     user when the test runs as root, stopped by PID.
 */
#ifndef VERITY_TEST_PROJECT_UTIL_H
#define VERITY_TEST_PROJECT_UTIL_H

#include <CUnit/CUnit.h>
#include <errno.h>
#include <fcntl.h>
#include <glob.h>
#include <inttypes.h>
#include <jansson.h>
#include <libpq-fe.h>
#include <pthread.h>
#include <pwd.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "tests/support/tbroker.h"
#include "tests/support/tutil.h"
#include "verity/group.h"
#include "verity/verity.h"

#define PT_FN static __attribute__((unused))
#define PT_PARTS 4
#define PT_SELLERS 13
#define PT_MONTHS 12
#define PT_MODELS 5

/* ---- the event stream ------------------------------------------------------- */

struct pt_stream {
    uint64_t n;                    /* events produced (acknowledged) */
    uint64_t cap;
    uint64_t keys;                 /* distinct vehicles */
    uint32_t *part;                /* per event i */
    uint64_t *off;
    atomic_uint_fast64_t acked, failed;
};

PT_FN void pt_stream_init(struct pt_stream *s, uint64_t cap, uint64_t keys)
{
    memset(s, 0, sizeof *s);
    s->cap = cap;
    s->keys = keys;
    s->part = calloc(cap, sizeof *s->part);
    s->off = calloc(cap, sizeof *s->off);
}

PT_FN void pt_stream_free(struct pt_stream *s)
{
    free(s->part);
    free(s->off);
}

/* Event i: vehicle i % keys, seller i % 13, month i % 12, model i % 5. */
PT_FN int pt_event(uint64_t i, uint64_t keys, char *key, size_t keylen, char *val, size_t vlen)
{
    snprintf(key, keylen, "V%07" PRIu64, i % keys);
    return snprintf(val, vlen,
                    "{\"type\":\"sale\",\"vehicle_id\":\"%s\",\"seller\":\"S%02u\","
                    "\"price\":%" PRIu64 ".5,\"commission\":%.2f,"
                    "\"date\":\"2026-%02u-%02uT%02u:00:00Z\",\"model\":\"M%u\",\"seq\":%" PRIu64
                    "}",
                    key, (unsigned)(i % PT_SELLERS), 10000 + (i % 1000) * 10,
                    (double)(i % 50) * 0.25, (unsigned)(i % PT_MONTHS) + 1,
                    (unsigned)(i % 28) + 1, (unsigned)(i % 24), (unsigned)(i % PT_MODELS), i);
}

static void pt_report(void *opaque, int err, const struct verity_delivery *d)
{
    struct pt_stream *s = *(struct pt_stream **)opaque;
    uint64_t i = (uint64_t)(uintptr_t)((void **)opaque)[1];
    if (err) {
        atomic_fetch_add(&s->failed, 1);
        return;
    }
    s->part[i] = d->partition;
    s->off[i] = d->offset;
    atomic_fetch_add(&s->acked, 1);
}

/* Produces events [s->n, s->n + count) to topic and waits for every ack.
 * Returns 0 or an error. */
PT_FN int pt_produce(struct verity_producer *p, const char *topic, struct pt_stream *s,
                     uint64_t count)
{
    if (s->n + count > s->cap)
        return VERITY_ELIMIT;
    /* opaque pairs (stream, index) live as long as the reports run */
    void **ops = malloc(count * 2 * sizeof *ops);
    char key[32], val[512];
    uint64_t first = s->n;
    int rc = 0;
    for (uint64_t k = 0; k < count && rc == 0; k++) {
        uint64_t i = first + k;
        int vl = pt_event(i, s->keys, key, sizeof key, val, sizeof val);
        ops[2 * k] = s;
        ops[2 * k + 1] = (void *)(uintptr_t)i;
        struct verity_record r = {.key = key, .key_len = (int32_t)strlen(key), .value = val,
                                  .value_len = vl};
        rc = verity_produce(p, topic, VERITY_PARTITION_ANY, &r, pt_report, &ops[2 * k]);
    }
    if (rc == 0)
        rc = verity_producer_flush(p, 120000);
    free(ops);
    if (rc == 0 && atomic_load(&s->failed))
        rc = VERITY_ECLOSED;
    if (rc == 0)
        s->n = first + count;
    return rc;
}

PT_FN struct verity_producer *pt_producer(const char *broker)
{
    struct verity_producer_config pc;
    verity_producer_config_default(&pc);
    pc.conn.broker = broker;
    pc.idempotence = true;
    pc.linger_ms = 5;
    struct verity_producer *p = NULL;
    if (verity_producer_new(&pc, &p) != 0)
        return NULL;
    return p;
}

PT_FN int pt_topic_create(const char *broker, const char *topic, uint32_t parts)
{
    struct verity_conn_config cc;
    verity_conn_config_default(&cc);
    cc.broker = broker;
    struct verity_client *c = NULL;
    int rc = verity_client_new(&cc, &c);
    if (rc == 0)
        rc = verity_client_connect(c, 10000);
    struct verity_topic_config tc = {.partitions = parts, .durability = VERITY_DURABILITY_OS};
    if (rc == 0)
        rc = verity_topic_create(c, topic, &tc, NULL);
    verity_client_free(c);
    return rc;
}

/* ---- canonical text ------------------------------------------------------------ */

struct pt_text {
    char *buf;
    size_t len, cap;
};

PT_FN void pt_text_add(struct pt_text *t, const char *s, size_t n)
{
    if (t->len + n + 1 > t->cap) {
        t->cap = (t->len + n + 1) * 2;
        t->buf = realloc(t->buf, t->cap);
    }
    memcpy(t->buf + t->len, s, n);
    t->len += n;
    t->buf[t->len] = 0;
}

PT_FN void pt_text_addf(struct pt_text *t, const char *fmt, ...)
{
    char tmp[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    pt_text_add(t, tmp, (size_t)n);
}

static int pt_cmpstr(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

struct pt_ev_pos {
    uint32_t part;
    uint64_t off;
    uint64_t i;
};

static int pt_cmppos(const void *a, const void *b)
{
    const struct pt_ev_pos *x = a, *y = b;
    if (x->part != y->part)
        return x->part < y->part ? -1 : 1;
    return x->off < y->off ? -1 : x->off > y->off;
}

static double pt_price(uint64_t i)
{
    return (double)(10000 + (i % 1000) * 10) + 0.5;
}

/*
 * The reference fold of events [0, n) of s, in canonical text:
 *   vehicles (latest_by_id): vehicle_id, price, seller, _partition, _offset
 *   history (timeline): _partition, _offset, vehicle_id, price
 *   commissions (sum by seller, month): seller, month, sum, count
 *   units (tags seller, model): tag_key, tag_value, entity
 */
PT_FN char *pt_reference(const struct pt_stream *s, uint64_t n)
{
    struct pt_text t = {0};
    /* vehicles: the last event of each key (a key's events share one
     * partition, in produce order) */
    uint64_t keys = s->keys < n ? s->keys : n;
    pt_text_add(&t, "== vehicles\n", 12);
    for (uint64_t k = 0; k < keys; k++) {
        uint64_t i = k + ((n - 1 - k) / s->keys) * s->keys;
        pt_text_addf(&t, "V%07" PRIu64 "\t%.17g\tS%02u\t%u\t%" PRIu64 "\n", k, pt_price(i),
                     (unsigned)(i % PT_SELLERS), s->part[i], s->off[i]);
    }
    pt_text_add(&t, "== history\n", 11);
    struct pt_ev_pos *ep = malloc((n + 1) * sizeof *ep);
    for (uint64_t i = 0; i < n; i++)
        ep[i] = (struct pt_ev_pos){s->part[i], s->off[i], i};
    qsort(ep, n, sizeof *ep, pt_cmppos);
    for (uint64_t j = 0; j < n; j++)
        pt_text_addf(&t, "%u\t%" PRIu64 "\tV%07" PRIu64 "\t%.17g\n", ep[j].part, ep[j].off,
                     ep[j].i % s->keys, pt_price(ep[j].i));
    free(ep);
    pt_text_add(&t, "== commissions\n", 15);
    double sum[PT_SELLERS][PT_MONTHS] = {{0}};
    uint64_t cnt[PT_SELLERS][PT_MONTHS] = {{0}};
    for (uint64_t i = 0; i < n; i++) {
        sum[i % PT_SELLERS][i % PT_MONTHS] += (double)(i % 50) * 0.25;
        cnt[i % PT_SELLERS][i % PT_MONTHS]++;
    }
    for (unsigned a = 0; a < PT_SELLERS; a++)
        for (unsigned m = 0; m < PT_MONTHS; m++)
            if (cnt[a][m])
                pt_text_addf(&t, "S%02u\t2026-%02u\t%.17g\t%" PRIu64 "\n", a, m + 1, sum[a][m],
                             cnt[a][m]);
    pt_text_add(&t, "== units\n", 9);
    /* the set of (tag, value, vehicle) */
    size_t cap = (size_t)keys * (PT_SELLERS + PT_MODELS) + 1, nt = 0;
    char **tags = malloc(cap * sizeof *tags);
    uint8_t *seen = calloc((size_t)keys * (PT_SELLERS + PT_MODELS) + 1, 1);
    for (uint64_t i = 0; i < n; i++) {
        uint64_t k = i % s->keys;
        size_t a = (size_t)k * (PT_SELLERS + PT_MODELS) + i % PT_SELLERS;
        size_t b = (size_t)k * (PT_SELLERS + PT_MODELS) + PT_SELLERS + i % PT_MODELS;
        char line[96];
        if (!seen[a]) {
            seen[a] = 1;
            snprintf(line, sizeof line, "seller\tS%02u\tV%07" PRIu64 "\n",
                     (unsigned)(i % PT_SELLERS), k);
            tags[nt++] = strdup(line);
        }
        if (!seen[b]) {
            seen[b] = 1;
            snprintf(line, sizeof line, "model\tM%u\tV%07" PRIu64 "\n", (unsigned)(i % PT_MODELS),
                     k);
            tags[nt++] = strdup(line);
        }
    }
    qsort(tags, nt, sizeof *tags, pt_cmpstr);
    for (size_t j = 0; j < nt; j++) {
        pt_text_add(&t, tags[j], strlen(tags[j]));
        free(tags[j]);
    }
    free(tags);
    free(seen);
    return t.buf;
}

/* The queries that read the same canonical text back; real columns
 * (reformatted as %.17g) are flagged per query. */
static const struct {
    const char *title;
    const char *sql;
    unsigned real_mask;            /* bit c: column c is a real */
} pt_queries[] = {
    {"== vehicles\n",
     "SELECT vehicle_id, price, seller, _partition, _offset FROM vehicles ORDER BY vehicle_id",
     1u << 1},
    {"== history\n",
     "SELECT _partition, _offset, vehicle_id, price FROM history ORDER BY _partition, _offset",
     1u << 3},
    {"== commissions\n",
     "SELECT seller, month, sum, count FROM commissions ORDER BY seller, month", 1u << 2},
    {"== units\n", "SELECT tag_key, tag_value, entity FROM units ORDER BY tag_key, tag_value, entity",
     0},
};

static void pt_cell(struct pt_text *t, const char *v, bool real, bool last)
{
    if (!v)
        pt_text_add(t, "NULL", 4);
    else if (real)
        pt_text_addf(t, "%.17g", strtod(v, NULL));
    else
        pt_text_add(t, v, strlen(v));
    pt_text_add(t, last ? "\n" : "\t", 1);
}

/* The canonical text of a SQLite projection, or NULL. */
PT_FN char *pt_dump_sqlite(const char *path)
{
    sqlite3 *db = NULL;
    if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE, NULL) != SQLITE_OK) {
        sqlite3_close(db);
        return NULL;
    }
    sqlite3_busy_timeout(db, 10000);
    struct pt_text t = {0};
    pt_text_add(&t, "", 0);
    for (size_t q = 0; q < sizeof pt_queries / sizeof pt_queries[0]; q++) {
        sqlite3_stmt *st = NULL;
        pt_text_add(&t, pt_queries[q].title, strlen(pt_queries[q].title));
        if (sqlite3_prepare_v2(db, pt_queries[q].sql, -1, &st, NULL) != SQLITE_OK) {
            fprintf(stderr, "dump: %s\n", sqlite3_errmsg(db));
            free(t.buf);
            sqlite3_close(db);
            return NULL;
        }
        int nc = sqlite3_column_count(st);
        while (sqlite3_step(st) == SQLITE_ROW)
            for (int c = 0; c < nc; c++)
                pt_cell(&t, (const char *)sqlite3_column_text(st, c),
                        pt_queries[q].real_mask >> c & 1, c == nc - 1);
        sqlite3_finalize(st);
    }
    sqlite3_close(db);
    return t.buf;
}

PT_FN char *pt_dump_pg(const char *conninfo)
{
    PGconn *pg = PQconnectdb(conninfo);
    if (PQstatus(pg) != CONNECTION_OK) {
        fprintf(stderr, "dump: %s\n", PQerrorMessage(pg));
        PQfinish(pg);
        return NULL;
    }
    struct pt_text t = {0};
    pt_text_add(&t, "", 0);
    for (size_t q = 0; q < sizeof pt_queries / sizeof pt_queries[0]; q++) {
        pt_text_add(&t, pt_queries[q].title, strlen(pt_queries[q].title));
        PGresult *r = PQexec(pg, pt_queries[q].sql);
        if (PQresultStatus(r) != PGRES_TUPLES_OK) {
            fprintf(stderr, "dump: %s\n", PQerrorMessage(pg));
            PQclear(r);
            PQfinish(pg);
            free(t.buf);
            return NULL;
        }
        int nc = PQnfields(r);
        for (int row = 0; row < PQntuples(r); row++)
            for (int c = 0; c < nc; c++)
                pt_cell(&t, PQgetisnull(r, row, c) ? NULL : PQgetvalue(r, row, c),
                        pt_queries[q].real_mask >> c & 1, c == nc - 1);
        PQclear(r);
    }
    PQfinish(pg);
    return t.buf;
}

/* Compares canonical texts; prints the first differing line. */
PT_FN bool pt_same(const char *what, const char *a, const char *b)
{
    if (!a || !b) {
        fprintf(stderr, "%s: missing text\n", what);
        return false;
    }
    if (strcmp(a, b) == 0)
        return true;
    size_t line = 1, i = 0;
    for (; a[i] && a[i] == b[i]; i++)
        if (a[i] == '\n')
            line++;
    size_t s = i;
    while (s > 0 && a[s - 1] != '\n')
        s--;
    fprintf(stderr, "%s: differ at line %zu:\n  got:  %.120s\n  want: %.120s\n", what, line,
            a + s, b + s);
    return false;
}

/* ---- the worker ----------------------------------------------------------------- */

PT_FN int pt_write_config(const char *path, const char *broker, const char *topic,
                          const char *group, const char *sink_json, const char *extra)
{
    FILE *f = fopen(path, "w");
    if (!f)
        return -errno;
    fprintf(f,
            "{\"source\": {\"topics\": [\"%s\"], \"group\": \"%s\", \"broker\": \"%s\"},\n"
            " \"sink\": %s,\n%s"
            " \"tables\": [\n"
            "  {\"name\": \"vehicles\", \"template\": \"latest_by_id\", \"key\": \"/vehicle_id\",\n"
            "   \"columns\": {\"price\": {\"pointer\": \"/price\", \"type\": \"real\"},\n"
            "               \"seller\": {\"pointer\": \"/seller\", \"type\": \"text\"}},\n"
            "   \"indexes\": [[\"seller\"]]},\n"
            "  {\"name\": \"history\", \"template\": \"timeline\", \"key\": \"/vehicle_id\",\n"
            "   \"type\": \"sale\",\n"
            "   \"columns\": {\"price\": {\"pointer\": \"/price\", \"type\": \"real\"},\n"
            "               \"at\": {\"pointer\": \"/date\", \"type\": \"timestamp\"}}},\n"
            "  {\"name\": \"commissions\", \"template\": \"sum\",\n"
            "   \"group_by\": {\"seller\": \"/seller\",\n"
            "                \"month\": {\"pointer\": \"/date\", \"type\": \"timestamp\", "
            "\"truncate\": \"month\"}},\n"
            "   \"value\": {\"pointer\": \"/commission\", \"type\": \"real\"}},\n"
            "  {\"name\": \"units\", \"template\": \"tags\", \"entity\": \"/vehicle_id\",\n"
            "   \"tags\": {\"seller\": \"/seller\", \"model\": \"/model\"}}]}\n",
            topic, group, broker, sink_json, extra ? extra : "");
    return fclose(f) == 0 ? 0 : -errno;
}

/* Starts `verity-project CMD config [args]` with output appended to log. */
/* Every worker pt_spawn started, so that a test cut short by a fatal
 * assertion (which skips its own kill) leaves none running: the suite's
 * clean-up calls pt_reap_all. */
#define PT_SPAWNED_MAX 256
static pid_t pt_spawned[PT_SPAWNED_MAX];
static size_t pt_n_spawned;

PT_FN pid_t pt_spawn(const char *cmd, const char *config, const char *log, const char *const *args)
{
    const char *dir = getenv("VERITY_BIN_DIR");
    char bin[512];
    snprintf(bin, sizeof bin, "%s/verity-project", dir ? dir : "build/bin");
    pid_t pid = fork();
    if (pid > 0 && pt_n_spawned < PT_SPAWNED_MAX)
        pt_spawned[pt_n_spawned++] = pid;
    if (pid != 0)
        return pid;
    int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (fd >= 0) {
        dup2(fd, 1);
        dup2(fd, 2);
    }
    const char *argv[16] = {bin, cmd, config};
    size_t n = 3;
    for (size_t i = 0; args && args[i] && n < 15; i++)
        argv[n++] = args[i];
    argv[n] = NULL;
    execv(bin, (char *const *)argv);
    _exit(127);
}

/* Waits for pid to exit, at most timeout_ms. Its exit code, or -1 (still
 * running: killed with SIGKILL), or 128+signal. */
PT_FN int pt_wait_exit(pid_t pid, int timeout_ms)
{
    int64_t end = tu_now_ms() + timeout_ms;
    int st;
    for (;;) {
        pid_t r = waitpid(pid, &st, WNOHANG);
        if (r == pid)
            return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
        if (tu_now_ms() > end) {
            kill(pid, SIGKILL);
            waitpid(pid, &st, 0);
            return -1;
        }
        usleep(5000);
    }
}

/* Stops (SIGKILL) and reaps every spawned worker still running; returns how
 * many were. Workers already reaped by pt_wait_exit are skipped (waitpid
 * answers ECHILD for them). */
PT_FN int pt_reap_all(void)
{
    int left = 0;
    for (size_t i = 0; i < pt_n_spawned; i++) {
        int st;
        pid_t r = waitpid(pt_spawned[i], &st, WNOHANG);
        if (r == 0) {
            kill(pt_spawned[i], SIGKILL);
            waitpid(pt_spawned[i], &st, 0);
            left++;
        }
    }
    pt_n_spawned = 0;
    return left;
}

/* Events applied (rows or dead letters) over all partitions; -1 when unreadable.
 * Not the sum of next_offset: offsets have holes where the log holds
 * checkpoint records. */
typedef int64_t (*pt_applied_fn)(const char *where);

PT_FN int64_t pt_applied_sqlite(const char *path)
{
    sqlite3 *db = NULL;
    int64_t v = -1;
    if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE, NULL) == SQLITE_OK) {
        sqlite3_busy_timeout(db, 2000);
        sqlite3_stmt *st = NULL;
        if (sqlite3_prepare_v2(db, "SELECT coalesce(sum(events), 0) FROM _verity_positions",
                               -1, &st, NULL) == SQLITE_OK &&
            sqlite3_step(st) == SQLITE_ROW)
            v = sqlite3_column_int64(st, 0);
        else if (getenv("VERITY_TEST_DEBUG"))
            fprintf(stderr, "applied: %s\n", sqlite3_errmsg(db));
        sqlite3_finalize(st);
    }
    sqlite3_close(db);
    return v;
}

PT_FN int64_t pt_applied_pg(const char *conninfo)
{
    PGconn *pg = PQconnectdb(conninfo);
    int64_t v = -1;
    if (PQstatus(pg) == CONNECTION_OK) {
        PGresult *r = PQexec(pg, "SELECT coalesce(sum(events), 0) FROM _verity_positions");
        if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1)
            v = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
        PQclear(r);
    }
    PQfinish(pg);
    return v;
}

/* Runs SQL on the sink (SQLite file or PostgreSQL conninfo); 0 or -1. */
typedef int (*pt_exec_fn)(const char *where, const char *sql);

PT_FN int pt_exec_sqlite(const char *path, const char *sql)
{
    sqlite3 *db = NULL;
    int rc = -1;
    if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE, NULL) == SQLITE_OK) {
        sqlite3_busy_timeout(db, 5000);
        char *msg = NULL;
        rc = sqlite3_exec(db, sql, NULL, NULL, &msg) == SQLITE_OK ? 0 : -1;
        if (rc)
            fprintf(stderr, "sqlite: %s: %s\n", sql, msg ? msg : "?");
        sqlite3_free(msg);
    }
    sqlite3_close(db);
    return rc;
}

PT_FN int pt_exec_pg(const char *conninfo, const char *sql)
{
    PGconn *pg = PQconnectdb(conninfo);
    int rc = -1;
    if (PQstatus(pg) == CONNECTION_OK) {
        PGresult *r = PQexec(pg, sql);
        rc = PQresultStatus(r) == PGRES_COMMAND_OK || PQresultStatus(r) == PGRES_TUPLES_OK ? 0 : -1;
        if (rc)
            fprintf(stderr, "pg: %s: %s\n", sql, PQerrorMessage(pg));
        PQclear(r);
    }
    PQfinish(pg);
    return rc;
}

/* Runs `verity-project verify CONFIG --json` into out (truncated first);
 * its exit code; *j the parsed answer (NULL if unparsable). */
PT_FN int pt_verify(const char *config, const char *out, json_t **j)
{
    unlink(out);
    const char *args[] = {"--json", "--timeout-ms", "20000", NULL};
    int code = pt_wait_exit(pt_spawn("verify", config, out, args), 60000);
    json_error_t je;
    *j = json_load_file(out, 0, &je);
    return code;
}

/* Partitions of a verify answer with this status. */
PT_FN size_t pt_verify_count(json_t *j, const char *status)
{
    size_t n = 0, i;
    json_t *p;
    json_array_foreach(json_object_get(j, "partitions"), i, p)
        n += strcmp(json_string_value(json_object_get(p, "status")) ?: "", status) == 0;
    return n;
}

/* The status of partition part in a verify answer ("" when absent). */
PT_FN const char *pt_verify_status(json_t *j, uint32_t part)
{
    size_t i;
    json_t *p;
    json_array_foreach(json_object_get(j, "partitions"), i, p)
        if (json_integer_value(json_object_get(p, "partition")) == part)
            return json_string_value(json_object_get(p, "status")) ?: "";
    return "";
}

/* verify on a finished projection of nparts partitions: it passes; then
 * each way of altering the positions (a flipped hex digit of a chain hash,
 * next_offset moved back, next_offset past the log, the hash removed) makes
 * it fail with exit 5 on that partition only; restored, it passes again.
 * No worker may run on the sink meanwhile. */
PT_FN void pt_verify_tamper(const char *config, const char *out, pt_exec_fn ex, const char *where,
                            size_t nparts)
{
    json_t *j = NULL;
    CU_ASSERT(pt_verify(config, out, &j) == 0);
    CU_ASSERT_PTR_NOT_NULL_FATAL(j);
    CU_ASSERT(json_is_true(json_object_get(j, "ok")));
    CU_ASSERT(pt_verify_count(j, "ok") == nparts);
    json_decref(j);
    CU_ASSERT_FATAL(ex(where, "CREATE TABLE vt_save AS SELECT * FROM _verity_positions") == 0);
    static const struct {
        const char *sql, *status;
    } tampers[] = {
        {"UPDATE _verity_positions SET chain_hash = CASE WHEN substr(chain_hash, 20, 1) = 'a' "
         "THEN 'b' ELSE 'a' END || substr(chain_hash, 21) WHERE part = 0",
         "unrecorded"}, /* not 64 hex digits */
        {"UPDATE _verity_positions SET chain_hash = substr(chain_hash, 1, 19) || CASE WHEN "
         "substr(chain_hash, 20, 1) = 'a' THEN 'b' ELSE 'a' END || substr(chain_hash, 21) "
         "WHERE part = 0",
         "mismatch"},
        {"UPDATE _verity_positions SET next_offset = next_offset / 2 WHERE part = 0", "mismatch"},
        {"UPDATE _verity_positions SET next_offset = next_offset + 1000000, chain_offset = "
         "chain_offset + 1000000 WHERE part = 0",
         "beyond_log"},
        {"UPDATE _verity_positions SET chain_hash = NULL WHERE part = 0", "unrecorded"},
    };
    for (size_t t = 0; t < sizeof tampers / sizeof tampers[0]; t++) {
        CU_ASSERT_FATAL(ex(where, tampers[t].sql) == 0);
        int code = pt_verify(config, out, &j);
        CU_ASSERT(code == 5);
        CU_ASSERT_PTR_NOT_NULL_FATAL(j);
        CU_ASSERT(json_is_false(json_object_get(j, "ok")));
        CU_ASSERT(strcmp(pt_verify_status(j, 0), tampers[t].status) == 0);
        CU_ASSERT(pt_verify_count(j, "ok") == nparts - 1);
        if (code != 5 || strcmp(pt_verify_status(j, 0), tampers[t].status) != 0)
            fprintf(stderr, "tamper %zu: exit %d, status %s\n", t, code, pt_verify_status(j, 0));
        json_decref(j);
        CU_ASSERT_FATAL(ex(where, "DELETE FROM _verity_positions") == 0);
        CU_ASSERT_FATAL(ex(where, "INSERT INTO _verity_positions SELECT * FROM vt_save") == 0);
    }
    /* the text form names the failure */
    CU_ASSERT_FATAL(ex(where, tampers[1].sql) == 0);
    unlink(out);
    int code = pt_wait_exit(pt_spawn("verify", config, out, NULL), 60000);
    CU_ASSERT(code == 5);
    char buf[8192] = "";
    FILE *f = fopen(out, "r");
    if (f) {
        buf[fread(buf, 1, sizeof buf - 1, f)] = 0;
        fclose(f);
    }
    CU_ASSERT(strstr(buf, "not built from this log's prefix") != NULL);
    CU_ASSERT(strstr(buf, "verify FAILED: 1 of") != NULL);
    CU_ASSERT_FATAL(ex(where, "DELETE FROM _verity_positions") == 0);
    CU_ASSERT_FATAL(ex(where, "INSERT INTO _verity_positions SELECT * FROM vt_save") == 0);
    CU_ASSERT(ex(where, "DROP TABLE vt_save") == 0);
    CU_ASSERT(pt_verify(config, out, &j) == 0);
    json_decref(j);
}

/* Polls until applied(where) >= want, at most timeout_ms. */
PT_FN bool pt_wait_applied(pt_applied_fn applied, const char *where, int64_t want, int timeout_ms,
                           pid_t worker)
{
    int64_t end = tu_now_ms() + timeout_ms;
    while (tu_now_ms() < end) {
        if (applied(where) >= want)
            return true;
        if (worker > 0 && waitpid(worker, NULL, WNOHANG) == worker) {
            fprintf(stderr, "worker exited early\n");
            return false;
        }
        usleep(20000);
    }
    fprintf(stderr, "applied %" PRId64 " of %" PRId64 " in time\n", applied(where), want);
    return false;
}

/* Runs the worker under kill -9 `kills` times at random moments (each
 * after 50..50+spread_ms of work), then to the end; SIGTERM after. */
PT_FN bool pt_crash_run(const char *config, const char *log, pt_applied_fn applied,
                        const char *where, int64_t want, int kills, int spread_ms,
                        unsigned seed, int *kills_done)
{
    srand(seed);
    *kills_done = 0;
    for (int k = 0; k < kills; k++) {
        pid_t w = pt_spawn("run", config, log, NULL);
        int64_t at = tu_now_ms() + 50 + rand() % spread_ms;
        /* the random moment: the kill lands wherever the worker is then */
        while (tu_now_ms() < at && waitpid(w, NULL, WNOHANG) == 0)
            usleep(1000);
        kill(w, SIGKILL);
        waitpid(w, NULL, 0);
        (*kills_done)++;
    }
    pid_t w = pt_spawn("run", config, log, NULL);
    bool ok = pt_wait_applied(applied, where, want, 300000, w);
    kill(w, SIGTERM);
    int code = pt_wait_exit(w, 20000);
    return ok && code == 0;
}

/* ---- PostgreSQL ------------------------------------------------------------------- */

struct pt_pg {
    char *root;                    /* temporary directory */
    char bindir[256];
    uint16_t port;
    pid_t pid;
    uid_t uid;
    gid_t gid;
};

PT_FN pid_t pt_pg_exec(struct pt_pg *p, const char *log, const char *const *argv)
{
    pid_t pid = fork();
    if (pid != 0)
        return pid;
    int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (fd >= 0) {
        dup2(fd, 1);
        dup2(fd, 2);
    }
    if (getuid() == 0 && (setgid(p->gid) != 0 || setuid(p->uid) != 0))
        _exit(126);
    execv(argv[0], (char *const *)argv);
    _exit(127);
}

/* initdb + postgres on 127.0.0.1:<free port>; 0, or -1 (message printed). */
PT_FN int pt_pg_start(struct pt_pg *p)
{
    memset(p, 0, sizeof *p);
    glob_t g;
    if (glob("/usr/lib/postgresql/*/bin/initdb", 0, NULL, &g) != 0 || g.gl_pathc == 0) {
        fprintf(stderr, "PostgreSQL not installed (/usr/lib/postgresql/*/bin/initdb); "
                        "make test installs it (DEB_PKGS: postgresql)\n");
        return -1;
    }
    snprintf(p->bindir, sizeof p->bindir, "%s", g.gl_pathv[g.gl_pathc - 1]);
    globfree(&g);
    *strrchr(p->bindir, '/') = 0;
    p->uid = getuid();
    p->gid = getgid();
    if (p->uid == 0) {
        struct passwd *pw = getpwnam("postgres");
        if (!pw) {
            fprintf(stderr, "running as root and there is no postgres user\n");
            return -1;
        }
        p->uid = pw->pw_uid;
        p->gid = pw->pw_gid;
    }
    p->root = tu_tmpdir("pg");
    if (chown(p->root, p->uid, p->gid) != 0 || chmod(p->root, 0700) != 0)
        return -1;
    char data[512], log[512], initdb[512], postgres[512], port[16];
    snprintf(data, sizeof data, "%s/data", p->root);
    snprintf(log, sizeof log, "%s/pg.log", p->root);
    snprintf(initdb, sizeof initdb, "%s/initdb", p->bindir);
    snprintf(postgres, sizeof postgres, "%s/postgres", p->bindir);
    const char *a1[] = {initdb, "-D", data, "-U", "postgres", "--auth=trust", "--no-locale",
                        "-E", "UTF8", "--no-sync", NULL};
    pid_t pid = pt_pg_exec(p, log, a1);
    if (pt_wait_exit(pid, 120000) != 0) {
        fprintf(stderr, "initdb failed; see %s\n", log);
        return -1;
    }
    p->port = tb_free_port();
    snprintf(port, sizeof port, "%u", p->port);
    const char *a2[] = {postgres, "-D", data, "-p", port, "-h", "127.0.0.1", "-k", p->root,
                        "-c", "max_connections=50", "-c", "fsync=off", NULL};
    p->pid = pt_pg_exec(p, log, a2);
    char conn[256];
    snprintf(conn, sizeof conn, "host=127.0.0.1 port=%u user=postgres dbname=postgres",
             p->port);
    for (int i = 0; i < 3000; i++) {
        if (PQping(conn) == PQPING_OK)
            return 0;
        if (waitpid(p->pid, NULL, WNOHANG) == p->pid) {
            p->pid = 0;
            break;
        }
        usleep(10000);
    }
    fprintf(stderr, "postgres did not start; see %s\n", log);
    return -1;
}

/* A connection string for database db on p. */
PT_FN void pt_pg_conninfo(const struct pt_pg *p, const char *db, char *out, size_t n)
{
    snprintf(out, n, "host=127.0.0.1 port=%u user=postgres dbname=%s", p->port, db);
}

PT_FN int pt_pg_createdb(const struct pt_pg *p, const char *db)
{
    char conn[256], sql[128];
    pt_pg_conninfo(p, "postgres", conn, sizeof conn);
    PGconn *pg = PQconnectdb(conn);
    snprintf(sql, sizeof sql, "CREATE DATABASE %s", db);
    PGresult *r = PQexec(pg, sql);
    int rc = PQresultStatus(r) == PGRES_COMMAND_OK ? 0 : -1;
    if (rc)
        fprintf(stderr, "%s: %s\n", sql, PQerrorMessage(pg));
    PQclear(r);
    PQfinish(pg);
    return rc;
}

PT_FN void pt_pg_stop(struct pt_pg *p)
{
    if (p->pid > 0) {
        kill(p->pid, SIGINT); /* fast shutdown */
        if (pt_wait_exit(p->pid, 30000) < 0)
            fprintf(stderr, "postgres needed SIGKILL\n");
        p->pid = 0;
    }
    if (p->root) {
        if (!getenv("VERITY_TEST_KEEP"))
            tu_rmrf(p->root);
        free(p->root);
        p->root = NULL;
    }
}

#endif
