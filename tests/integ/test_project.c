/*
 * verity-project into SQLite, end to end against a real verityd
 * (test_project_util.h has the harness and the reference fold).
 *
 * One 4-partition topic of N dealership sales (100,000; 1,000,000 with
 * VERITY_PROJECT_SOAK=1, `make soak-project`), projected with latest_by_id,
 * timeline, sum (seller x month) and tags:
 *
 * e2e_tables_equal_reference_fold: a clean run's tables equal a plain C
 *   fold of the same events (row for row, partition and offset included);
 *   prints the throughput.
 * verify_detects_altered_positions: `verify` passes on the clean run's
 *   positions (each partition's chain hash equals the log's at
 *   next_offset - 1) and exits 5 naming the partition when a chain hash
 *   digit is flipped, the hash is malformed or removed, next_offset is
 *   moved back or past the log. The crash and rebuild tests verify too.
 * kill9_20_times_equals_clean_run: the worker is killed with SIGKILL 20
 *   times at random moments, then runs to the end: the tables equal the
 *   clean run's and the reference.
 * rebuild_while_live_equals_clean_projection: a live worker keeps applying
 *   while production continues and `verity-project rebuild` replays into
 *   shadow tables and swaps them in; once everything produced is applied,
 *   the tables equal the reference fold of all events.
 * poison_events_dead_lettered_tables_untouched: not JSON, a missing key
 *   and a wrong type land in the dead-letter topic with their reason and
 *   source position; the position moves past them; the tables hold only
 *   the good events. A fresh database joining the same (finished) group
 *   builds the same tables. With on_bad_event "stop" the worker exits 1
 *   and the stored position stays at the poison event.
 * wait_returns_after_row_visible_not_before: `verity-project wait` blocks
 *   while no worker runs, returns once the worker applied the offset (the
 *   row is then visible), and times out (exit 4) for an offset not written.
 * db_lock_retried_position_not_advanced: while another connection holds
 *   SQLite's write lock the worker's transactions fail and are retried;
 *   the stored position does not move; after the lock is released every
 *   event is applied exactly once.
 * status_json_and_metrics: `status --json` shows per-partition positions
 *   and lag; GET /metrics answers with the counters.
 */
#include <CUnit/Basic.h>
#include <arpa/inet.h>
#include <jansson.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include "tests/integ/test_project_util.h"

static struct tbroker br;
static struct pt_stream ev;
static uint64_t n_events;
static char *tmp;
static char *clean_dump;

/* <tmp>/<name>; the strings live until the suite ends. */
static char *paths[128];
static size_t n_paths;

static const char *path_in(const char *name)
{
    for (size_t i = 0; i < n_paths; i++)
        if (strcmp(strrchr(paths[i], '/') + 1, name) == 0)
            return paths[i];
    if (n_paths == sizeof paths / sizeof paths[0])
        abort();
    size_t n = strlen(tmp) + strlen(name) + 2;
    paths[n_paths] = malloc(n);
    snprintf(paths[n_paths], n, "%s/%s", tmp, name);
    return paths[n_paths++];
}

static bool soak(void)
{
    return getenv("VERITY_PROJECT_SOAK") != NULL;
}

static void write_sqlite_config(const char *cfg, const char *db, const char *topic,
                                const char *group, const char *extra)
{
    char sink[700];
    snprintf(sink, sizeof sink, "{\"sqlite\": \"%s\", \"commit_ms\": 100}", db);
    CU_ASSERT_FATAL(pt_write_config(cfg, br.addr, topic, group, sink, extra) == 0);
}

static void test_e2e_tables_equal_reference_fold(void)
{
    const char *cfg = path_in("clean.json"), *db = path_in("clean.db");
    write_sqlite_config(cfg, db, "sales", "g-clean", NULL);
    int64_t t0 = tu_mono_ns();
    pid_t w = pt_spawn("run", cfg, path_in("clean.log"), NULL);
    CU_ASSERT_FATAL(pt_wait_applied(pt_applied_sqlite, db, (int64_t)n_events, 300000, w));
    double secs = (double)(tu_mono_ns() - t0) / 1e9;
    kill(w, SIGTERM);
    CU_ASSERT(pt_wait_exit(w, 20000) == 0);
    printf("\n    projected %" PRIu64 " events into 4 SQLite tables in %.2f s (%.0f events/s, "
           "start-up included)\n",
           n_events, secs, (double)n_events / secs);
    clean_dump = pt_dump_sqlite(db);
    char *ref = pt_reference(&ev, n_events);
    CU_ASSERT(pt_same("clean run vs reference", clean_dump, ref));
    free(ref);
}

static void test_verify_detects_altered_positions(void)
{
    pt_verify_tamper(path_in("clean.json"), path_in("verify.out"), pt_exec_sqlite,
                     path_in("clean.db"), PT_PARTS);
}

static void test_kill9_20_times_equals_clean_run(void)
{
    const char *cfg = path_in("crash.json"), *db = path_in("crash.db");
    write_sqlite_config(cfg, db, "sales", "g-crash", NULL);
    int kills = 0;
    CU_ASSERT_FATAL(pt_crash_run(cfg, path_in("crash.log"), pt_applied_sqlite, db,
                                 (int64_t)n_events, 20, soak() ? 3000 : 500, 12, &kills));
    CU_ASSERT(kills == 20);
    char *got = pt_dump_sqlite(db);
    CU_ASSERT(pt_same("crash run vs clean run", got, clean_dump));
    char *ref = pt_reference(&ev, n_events);
    CU_ASSERT(pt_same("crash run vs reference", got, ref));
    free(ref);
    free(got);
    json_t *j = NULL;
    CU_ASSERT(pt_verify(cfg, path_in("crash-verify.out"), &j) == 0);
    CU_ASSERT(pt_verify_count(j, "ok") == PT_PARTS);
    json_decref(j);
}

struct live_producer {
    struct verity_producer *p;
    atomic_bool stop;
    uint64_t produced;
    int rc;
};

static void *produce_until_stopped(void *arg)
{
    struct live_producer *lp = arg;
    while (!atomic_load(&lp->stop) && lp->rc == 0 && ev.n + 2000 <= ev.cap &&
           lp->produced < n_events / 2) {
        lp->rc = pt_produce(lp->p, "sales", &ev, 500);
        if (lp->rc == 0)
            lp->produced += 500;
    }
    return NULL;
}

static void test_rebuild_while_live_equals_clean_projection(void)
{
    const char *cfg = path_in("rebuild.json"), *db = path_in("rebuild.db");
    write_sqlite_config(cfg, db, "sales", "g-rebuild", NULL);
    pid_t w = pt_spawn("run", cfg, path_in("rebuild.log"), NULL);
    CU_ASSERT_FATAL(pt_wait_applied(pt_applied_sqlite, db, (int64_t)n_events, 300000, w));
    struct live_producer lp = {.p = pt_producer(br.addr)};
    CU_ASSERT_FATAL(lp.p != NULL);
    pthread_t th;
    pthread_create(&th, NULL, produce_until_stopped, &lp);
    const char *args[] = {"--timeout-ms", "300000", NULL};
    pid_t r = pt_spawn("rebuild", cfg, path_in("rebuild-cmd.log"), args);
    int code = pt_wait_exit(r, 310000);
    atomic_store(&lp.stop, true);
    pthread_join(th, NULL);
    verity_producer_free(lp.p, 10000);
    CU_ASSERT(code == 0);
    CU_ASSERT(lp.rc == 0);
    CU_ASSERT(lp.produced > 0); /* production went on during the rebuild */
    CU_ASSERT(pt_wait_applied(pt_applied_sqlite, db, (int64_t)ev.n, 300000, w));
    kill(w, SIGTERM);
    CU_ASSERT(pt_wait_exit(w, 20000) == 0);
    printf("\n    rebuilt while %" PRIu64 " more events were produced\n", lp.produced);
    char *got = pt_dump_sqlite(db);
    char *ref = pt_reference(&ev, ev.n);
    CU_ASSERT(pt_same("rebuilt tables vs reference", got, ref));
    free(ref);
    free(got);
    json_t *j = NULL; /* positions written by the swap and the live worker after it */
    CU_ASSERT(pt_verify(cfg, path_in("rebuild-verify.out"), &j) == 0);
    CU_ASSERT(pt_verify_count(j, "ok") == PT_PARTS);
    json_decref(j);
    /* the shadow tables are gone, the indexes are the new generation's */
    sqlite3 *h = NULL;
    CU_ASSERT(sqlite3_open(db, &h) == SQLITE_OK);
    sqlite3_stmt *st = NULL;
    CU_ASSERT(sqlite3_prepare_v2(h,
                                 "SELECT count(*) FROM sqlite_master WHERE name LIKE "
                                 "'%__shadow' OR name = 'vehicles_ix0_g1'",
                                 -1, &st, NULL) == SQLITE_OK);
    CU_ASSERT(sqlite3_step(st) == SQLITE_ROW);
    CU_ASSERT(sqlite3_column_int(st, 0) == 1); /* only the index */
    sqlite3_finalize(st);
    sqlite3_close(h);
}

/* ---- poison ------------------------------------------------------------------- */

static int produce_lines(const char *topic, const char *const *vals, size_t n, uint32_t part)
{
    struct verity_producer *p = pt_producer(br.addr);
    int rc = p ? 0 : -1;
    for (size_t i = 0; rc == 0 && i < n; i++) {
        struct verity_record r = {.key = "k", .key_len = 1, .value = vals[i],
                                  .value_len = (int32_t)strlen(vals[i])};
        rc = verity_produce_sync(p, topic, (int32_t)part, &r, NULL);
    }
    verity_producer_free(p, 10000);
    return rc;
}

static int64_t scalar(const char *db, const char *sql)
{
    sqlite3 *h = NULL;
    int64_t v = -1;
    if (sqlite3_open_v2(db, &h, SQLITE_OPEN_READWRITE, NULL) == SQLITE_OK) {
        sqlite3_busy_timeout(h, 5000);
        sqlite3_stmt *st = NULL;
        if (sqlite3_prepare_v2(h, sql, -1, &st, NULL) == SQLITE_OK &&
            sqlite3_step(st) == SQLITE_ROW)
            v = sqlite3_column_int64(st, 0);
        sqlite3_finalize(st);
    }
    sqlite3_close(h);
    return v;
}

static const char *hdr(const struct verity_message *m, const char *k, char *buf, size_t n)
{
    for (uint32_t i = 0; i < m->header_count; i++)
        if (m->headers[i].key_len == strlen(k) && memcmp(m->headers[i].key, k, strlen(k)) == 0) {
            snprintf(buf, n, "%.*s", (int)m->headers[i].value_len,
                     (const char *)m->headers[i].value);
            return buf;
        }
    return NULL;
}

static void test_poison_events_dead_lettered_tables_untouched(void)
{
    CU_ASSERT_FATAL(pt_topic_create(br.addr, "poison", 1) == 0);
    const char *vals[] = {
        "{\"type\":\"sale\",\"vehicle_id\":\"A\",\"seller\":\"S01\",\"price\":1.5,"
        "\"commission\":1,\"date\":\"2026-01-01\",\"model\":\"M1\"}",
        "this is not json",
        "{\"type\":\"sale\",\"seller\":\"S01\",\"price\":2,\"commission\":1,"
        "\"date\":\"2026-01-01\"}",
        "{\"type\":\"sale\",\"vehicle_id\":\"C\",\"seller\":\"S01\",\"price\":\"cheap\","
        "\"commission\":1,\"date\":\"2026-01-01\"}",
        "{\"type\":\"sale\",\"vehicle_id\":\"D\",\"seller\":\"S02\",\"price\":4,"
        "\"commission\":2.5,\"date\":\"2026-02-03\",\"model\":\"M2\"}",
    };
    CU_ASSERT_FATAL(produce_lines("poison", vals, 5, 0) == 0);
    const char *cfg = path_in("poison.json"), *db = path_in("poison.db");
    write_sqlite_config(cfg, db, "poison", "g-poison", NULL);
    pid_t w = pt_spawn("run", cfg, path_in("poison.log"), NULL);
    CU_ASSERT_FATAL(pt_wait_applied(pt_applied_sqlite, db, 5, 60000, w));
    kill(w, SIGTERM);
    CU_ASSERT(pt_wait_exit(w, 20000) == 0);
    CU_ASSERT(scalar(db, "SELECT count(*) FROM vehicles") == 2);
    CU_ASSERT(scalar(db, "SELECT count(*) FROM vehicles WHERE vehicle_id IN ('A','D')") == 2);
    CU_ASSERT(scalar(db, "SELECT count(*) FROM history") == 2);
    CU_ASSERT(scalar(db, "SELECT sum(count) FROM commissions") == 2);
    CU_ASSERT(scalar(db, "SELECT count(*) FROM units WHERE entity NOT IN ('A','D')") == 0);
    CU_ASSERT(scalar(db, "SELECT dead_lettered FROM _verity_positions") == 3);

    /* the dead letters: source offsets 1, 2, 3 with their reasons */
    struct verity_consumer_config cc;
    verity_consumer_config_default(&cc);
    cc.conn.broker = br.addr;
    struct verity_consumer *c = NULL;
    CU_ASSERT_FATAL(verity_consumer_new(&cc, &c) == 0);
    CU_ASSERT_FATAL(verity_consumer_assign(c, "poison.dlq", 0, VERITY_START_EARLIEST, 0) == 0);
    const char *want_reason[] = {"not JSON", "column vehicle_id (/vehicle_id): missing",
                                 "column price (/price): expected a number"};
    size_t got = 0;
    int64_t end = tu_now_ms() + 20000;
    while (got < 3 && tu_now_ms() < end) {
        const struct verity_message *m;
        size_t n = 0;
        if (verity_consumer_poll(c, 200, &m, &n, NULL) != 0)
            break;
        for (size_t i = 0; i < n && got < 3; i++, got++) {
            char b1[256], b2[64], b3[64];
            const char *reason = hdr(&m[i], VERITY_DLQ_HDR_ERROR, b1, sizeof b1);
            const char *off = hdr(&m[i], VERITY_DLQ_HDR_OFFSET, b2, sizeof b2);
            const char *topic = hdr(&m[i], VERITY_DLQ_HDR_TOPIC, b3, sizeof b3);
            CU_ASSERT(reason && strstr(reason, want_reason[got]) != NULL);
            CU_ASSERT(off && strtoull(off, NULL, 10) == got + 1);
            CU_ASSERT(topic && strcmp(topic, "poison") == 0);
            CU_ASSERT((size_t)m[i].value_len == strlen(vals[got + 1]) &&
                      memcmp(m[i].value, vals[got + 1], strlen(vals[got + 1])) == 0);
        }
    }
    CU_ASSERT(got == 3);
    verity_consumer_free(c);

    /* A fresh database joining the same group (which has handed out and
     * acked everything) builds the same tables: positions come from the
     * sink, and what the group is past is read by offset. */
    const char *cfg3 = path_in("poison-fresh.json"), *db3 = path_in("poison-fresh.db");
    write_sqlite_config(cfg3, db3, "poison", "g-poison", NULL);
    pid_t w3 = pt_spawn("run", cfg3, path_in("poison-fresh.log"), NULL);
    CU_ASSERT(pt_wait_applied(pt_applied_sqlite, db3, 5, 60000, w3));
    kill(w3, SIGTERM);
    CU_ASSERT(pt_wait_exit(w3, 20000) == 0);
    char *d1 = pt_dump_sqlite(db), *d3 = pt_dump_sqlite(db3);
    CU_ASSERT(pt_same("fresh sink vs first sink", d3, d1));
    free(d1);
    free(d3);

    /* on_bad_event: stop -> exit 1, position at the first poison event */
    const char *cfg2 = path_in("poison-stop.json"), *db2 = path_in("poison-stop.db");
    write_sqlite_config(cfg2, db2, "poison", "g-poison-stop", " \"on_bad_event\": \"stop\",\n");
    pid_t w2 = pt_spawn("run", cfg2, path_in("poison-stop.log"), NULL);
    CU_ASSERT(pt_wait_exit(w2, 60000) == 1);
    CU_ASSERT(scalar(db2, "SELECT next_offset FROM _verity_positions") == 1);
    CU_ASSERT(scalar(db2, "SELECT count(*) FROM vehicles") == 1);
}

static void test_wait_returns_after_row_visible_not_before(void)
{
    CU_ASSERT_FATAL(pt_topic_create(br.addr, "waits", 1) == 0);
    const char *cfg = path_in("wait.json"), *db = path_in("wait.db");
    write_sqlite_config(cfg, db, "waits", "g-wait", NULL);
    const char *v[] = {"{\"type\":\"sale\",\"vehicle_id\":\"W1\",\"seller\":\"S01\","
                       "\"price\":7,\"commission\":1,\"date\":\"2026-01-01\"}"};
    CU_ASSERT_FATAL(produce_lines("waits", v, 1, 0) == 0);
    const char *args[] = {"--topic", "waits", "--partition", "0", "--offset", "0",
                          "--timeout-ms", "60000", NULL};
    pid_t wt = pt_spawn("wait", cfg, path_in("wait-cmd.log"), args);
    /* No worker yet: the row cannot be there, and wait must still block
     * once its database exists and has been read. */
    int64_t end = tu_now_ms() + 1000;
    bool exited = false;
    while (tu_now_ms() < end && !exited)
        exited = waitpid(wt, NULL, WNOHANG) == wt;
    CU_ASSERT(!exited);
    pid_t w = pt_spawn("run", cfg, path_in("wait.log"), NULL);
    CU_ASSERT(pt_wait_exit(wt, 60000) == 0);
    /* returned: the row is visible now */
    CU_ASSERT(scalar(db, "SELECT count(*) FROM vehicles WHERE vehicle_id = 'W1'") == 1);
    const char *args2[] = {"--topic", "waits", "--partition", "0", "--offset", "5",
                           "--timeout-ms", "300", NULL};
    pid_t wt2 = pt_spawn("wait", cfg, path_in("wait-cmd.log"), args2);
    CU_ASSERT(pt_wait_exit(wt2, 20000) == 4);
    kill(w, SIGTERM);
    CU_ASSERT(pt_wait_exit(w, 20000) == 0);
}

static void test_db_lock_retried_position_not_advanced(void)
{
    CU_ASSERT_FATAL(pt_topic_create(br.addr, "locked", 2) == 0);
    const char *cfg = path_in("lock.json"), *db = path_in("lock.db");
    char sink[700];
    snprintf(sink, sizeof sink, "{\"sqlite\": \"%s\", \"commit_ms\": 50, \"busy_timeout_ms\": 50}",
             db);
    CU_ASSERT_FATAL(pt_write_config(cfg, br.addr, "locked", "g-lock", sink, NULL) == 0);
    struct pt_stream s;
    pt_stream_init(&s, 4000, 300);
    struct verity_producer *p = pt_producer(br.addr);
    CU_ASSERT_FATAL(pt_produce(p, "locked", &s, 1000) == 0);
    pid_t w = pt_spawn("run", cfg, path_in("lock.log"), NULL);
    CU_ASSERT_FATAL(pt_wait_applied(pt_applied_sqlite, db, 1000, 60000, w));
    /* A child process takes the write lock (its own process, so SQLite's
     * POSIX locks stay out of this one), reports, and holds it until told. */
    int up[2], down[2];
    CU_ASSERT_FATAL(pipe(up) == 0 && pipe(down) == 0);
    pid_t holder = fork();
    if (holder == 0) {
        sqlite3 *h = NULL;
        char go;
        if (sqlite3_open(db, &h) != SQLITE_OK ||
            sqlite3_exec(h, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK)
            _exit(1);
        if (write(up[1], "L", 1) != 1 || read(down[0], &go, 1) != 1)
            _exit(2);
        sqlite3_stmt *st = NULL;
        int64_t v = -1;
        if (sqlite3_prepare_v2(h, "SELECT sum(events) FROM _verity_positions", -1, &st,
                               NULL) == SQLITE_OK &&
            sqlite3_step(st) == SQLITE_ROW)
            v = sqlite3_column_int64(st, 0);
        sqlite3_finalize(st);
        if (write(up[1], &v, sizeof v) != sizeof v ||
            sqlite3_exec(h, "COMMIT", NULL, NULL, NULL) != SQLITE_OK)
            _exit(3);
        sqlite3_close(h);
        _exit(0);
    }
    char got;
    CU_ASSERT_FATAL(read(up[0], &got, 1) == 1 && got == 'L');
    CU_ASSERT_FATAL(pt_produce(p, "locked", &s, 1000) == 0);
    /* the worker logs its retries; wait for a few of them */
    int64_t end = tu_now_ms() + 30000;
    int retries = 0;
    while (tu_now_ms() < end && retries < 3) {
        FILE *f = fopen(path_in("lock.log"), "r");
        char line[512];
        retries = 0;
        while (f && fgets(line, sizeof line, f))
            retries += strstr(line, "database error, retrying") != NULL;
        if (f)
            fclose(f);
        usleep(20000);
    }
    CU_ASSERT(retries >= 3);
    int64_t held = -1;
    CU_ASSERT(write(down[1], "G", 1) == 1);
    CU_ASSERT(read(up[0], &held, sizeof held) == sizeof held);
    CU_ASSERT(held == 1000); /* nothing moved while the lock was held */
    CU_ASSERT(pt_wait_exit(holder, 10000) == 0);
    close(up[0]);
    close(up[1]);
    close(down[0]);
    close(down[1]);
    CU_ASSERT(pt_wait_applied(pt_applied_sqlite, db, 2000, 60000, w));
    kill(w, SIGTERM);
    CU_ASSERT(pt_wait_exit(w, 20000) == 0);
    CU_ASSERT(scalar(db, "SELECT count(*) FROM history") == 2000);
    CU_ASSERT(scalar(db, "SELECT sum(count) FROM commissions") == 2000);
    verity_producer_free(p, 5000);
    pt_stream_free(&s);
}

static int http_get(uint16_t port, const char *path, char *out, size_t n)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
        if (fd >= 0)
            close(fd);
        return -1;
    }
    char req[256];
    int l = snprintf(req, sizeof req, "GET %s HTTP/1.0\r\nHost: x\r\n\r\n", path);
    if (write(fd, req, (size_t)l) != l) {
        close(fd);
        return -1;
    }
    size_t got = 0;
    ssize_t r;
    while (got + 1 < n && (r = read(fd, out + got, n - 1 - got)) > 0)
        got += (size_t)r;
    out[got] = 0;
    close(fd);
    return 0;
}

static void test_status_json_and_metrics(void)
{
    const char *cfg = path_in("metrics.json"), *db = path_in("clean.db");
    uint16_t port = tb_free_port();
    char extra[128], sink[700];
    snprintf(extra, sizeof extra, " \"metrics\": \"127.0.0.1:%u\",\n", port);
    snprintf(sink, sizeof sink, "{\"sqlite\": \"%s\"}", db);
    CU_ASSERT_FATAL(pt_write_config(cfg, br.addr, "sales", "g-clean", sink, extra) == 0);
    pid_t w = pt_spawn("run", cfg, path_in("metrics.log"), NULL);
    char body[8192] = "";
    int64_t end = tu_now_ms() + 20000;
    while (tu_now_ms() < end && !strstr(body, "verity_project_commits_total"))
        if (http_get(port, "/metrics", body, sizeof body) != 0)
            usleep(20000);
    CU_ASSERT(strstr(body, "200 OK") != NULL);
    CU_ASSERT(strstr(body, "verity_project_events_total") != NULL);
    CU_ASSERT(http_get(port, "/nothing", body, sizeof body) == 0 && strstr(body, "404"));
    kill(w, SIGTERM);
    CU_ASSERT(pt_wait_exit(w, 20000) == 0);

    const char *args[] = {"--json", NULL};
    const char *out = path_in("status.out");
    unlink(out);
    pid_t s = pt_spawn("status", cfg, out, args);
    CU_ASSERT(pt_wait_exit(s, 20000) == 0);
    json_error_t je;
    json_t *j = json_load_file(out, 0, &je);
    CU_ASSERT_FATAL(j != NULL);
    json_t *parts = json_object_get(j, "partitions");
    CU_ASSERT(json_array_size(parts) == PT_PARTS);
    int64_t sum = 0, lag = 0;
    size_t i;
    json_t *p;
    json_array_foreach(parts, i, p) {
        sum += json_integer_value(json_object_get(p, "applied_events"));
        lag += json_integer_value(json_object_get(p, "lag"));
    }
    CU_ASSERT(sum == (int64_t)n_events);
    CU_ASSERT(lag >= 0);
    json_decref(j);
}

static int suite_init(void)
{
    tmp = tu_tmpdir("project");
    if (tb_init(&br, "project-broker") != 0 || tb_start(&br) != 0) {
        fprintf(stderr, "cannot start verityd (VERITY_BIN_DIR=%s)\n", getenv("VERITY_BIN_DIR"));
        return -1;
    }
    n_events = soak() ? 1000000 : (tu_quick() ? 50000 : 100000);
    if (getenv("VERITY_PROJECT_EVENTS"))
        n_events = strtoull(getenv("VERITY_PROJECT_EVENTS"), NULL, 10);
    pt_stream_init(&ev, n_events * 3 + 100000, n_events / 10);
    if (pt_topic_create(br.addr, "sales", PT_PARTS) != 0)
        return -1;
    struct verity_producer *p = pt_producer(br.addr);
    int64_t t0 = tu_mono_ns();
    int rc = p ? pt_produce(p, "sales", &ev, n_events) : -1;
    verity_producer_free(p, 10000);
    if (rc != 0) {
        fprintf(stderr, "producing: %s\n", verity_strerror(rc));
        return -1;
    }
    printf("\n    produced %" PRIu64 " events in %.2f s\n", n_events,
           (double)(tu_mono_ns() - t0) / 1e9);
    return 0;
}

static int suite_clean(void)
{
    int left = pt_reap_all();
    if (left)
        fprintf(stderr, "(stopped %d worker(s) a failed test left running)\n", left);
    tb_stop(&br, SIGTERM);
    tb_free(&br);
    if (!getenv("VERITY_TEST_KEEP"))
        tu_rmrf(tmp);
    else
        fprintf(stderr, "(kept %s)\n", tmp);
    free(tmp);
    free(clean_dump);
    for (size_t i = 0; i < n_paths; i++)
        free(paths[i]);
    pt_stream_free(&ev);
    return 0;
}

int main(int argc, char **argv)
{
    const char *only = argc > 1 ? argv[1] : NULL; /* run the tests whose name has it */
    signal(SIGPIPE, SIG_IGN);
    static const struct {
        const char *name;
        void (*fn)(void);
    } tests[] = {
        {"e2e_tables_equal_reference_fold", test_e2e_tables_equal_reference_fold},
        {"verify_detects_altered_positions", test_verify_detects_altered_positions},
        {"kill9_20_times_equals_clean_run", test_kill9_20_times_equals_clean_run},
        {"status_json_and_metrics", test_status_json_and_metrics},
        {"rebuild_while_live_equals_clean_projection",
         test_rebuild_while_live_equals_clean_projection},
        {"poison_events_dead_lettered_tables_untouched",
         test_poison_events_dead_lettered_tables_untouched},
        {"wait_returns_after_row_visible_not_before",
         test_wait_returns_after_row_visible_not_before},
        {"db_lock_retried_position_not_advanced", test_db_lock_retried_position_not_advanced},
    };
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    CU_pSuite s = CU_add_suite("project_sqlite", suite_init, suite_clean);
    if (!s)
        goto fail;
    for (size_t i = 0; i < sizeof tests / sizeof tests[0]; i++)
        if ((!only || strstr(tests[i].name, only)) && !CU_add_test(s, tests[i].name, tests[i].fn))
            goto fail;
    CU_basic_set_mode(CU_BRM_VERBOSE);
    if (CU_basic_run_tests() != CUE_SUCCESS)
        goto fail;
    unsigned failed = CU_get_number_of_failures() + CU_get_number_of_suites_failed();
    CU_cleanup_registry();
    return failed ? 1 : 0;
fail:
    CU_cleanup_registry();
    return 1;
}
