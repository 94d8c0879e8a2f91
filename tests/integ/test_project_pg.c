/*
 * verity-project into PostgreSQL: a server from Debian's packages, started
 * by the test (initdb + postgres on a free loopback port in a temporary
 * directory, as the `postgres` user when running as root, stopped by PID),
 * and a real verityd.
 *
 * The same events and reference fold as test_project.c (10,000 events;
 * 200,000 with VERITY_PROJECT_SOAK=1), one database per test:
 *
 * pg_e2e_tables_equal_reference_fold
 * pg_verify_detects_altered_positions (as test_project.c's; crash and
 *   rebuild verify too)
 * pg_kill9_20_times_equals_clean_run
 * pg_rebuild_while_live_equals_clean_projection
 * pg_server_restart_retried_without_loss: the PostgreSQL server is stopped
 *   while the worker runs and 500 more events are produced; the worker's
 *   transactions fail, it reconnects with backoff once the server is back,
 *   and the tables end equal to the reference (nothing lost, nothing
 *   twice).
 */
#include <CUnit/Basic.h>

#include "tests/integ/test_project_util.h"

static struct tbroker br;
static struct pt_pg pg;
static struct pt_stream ev;
static uint64_t n_events;
static char *tmp;
static char *clean_dump;
static char conn_buf[8][256];

static const char *conninfo(const char *db)
{
    static int k;
    k = (k + 1) % 8;
    pt_pg_conninfo(&pg, db, conn_buf[k], sizeof conn_buf[k]);
    return conn_buf[k];
}

static bool soak(void)
{
    return getenv("VERITY_PROJECT_SOAK") != NULL;
}

static char *file_in(const char *name)
{
    size_t n = strlen(tmp) + strlen(name) + 2;
    char *p = malloc(n);
    snprintf(p, n, "%s/%s", tmp, name);
    return p;
}

/* Creates database db and a config projecting `sales` into it. */
static char *setup(const char *db, const char *group)
{
    CU_ASSERT_FATAL(pt_pg_createdb(&pg, db) == 0);
    char name[64], sink[512];
    snprintf(name, sizeof name, "%s.json", db);
    char *cfg = file_in(name);
    snprintf(sink, sizeof sink, "{\"postgres\": \"%s\", \"commit_ms\": 100}", conninfo(db));
    CU_ASSERT_FATAL(pt_write_config(cfg, br.addr, "sales", group, sink, NULL) == 0);
    return cfg;
}

static void test_pg_e2e_tables_equal_reference_fold(void)
{
    char *cfg = setup("clean", "pg-clean"), *log = file_in("clean.log");
    int64_t t0 = tu_mono_ns();
    pid_t w = pt_spawn("run", cfg, log, NULL);
    CU_ASSERT_FATAL(
        pt_wait_applied(pt_applied_pg, conninfo("clean"), (int64_t)n_events, 300000, w));
    double secs = (double)(tu_mono_ns() - t0) / 1e9;
    kill(w, SIGTERM);
    CU_ASSERT(pt_wait_exit(w, 20000) == 0);
    printf("\n    projected %" PRIu64 " events into 4 PostgreSQL tables in %.2f s (%.0f events/s, "
           "start-up included)\n",
           n_events, secs, (double)n_events / secs);
    clean_dump = pt_dump_pg(conninfo("clean"));
    char *ref = pt_reference(&ev, n_events);
    CU_ASSERT(pt_same("pg clean run vs reference", clean_dump, ref));
    free(ref);
    free(cfg);
    free(log);
}

static void test_pg_verify_detects_altered_positions(void)
{
    char *cfg = file_in("clean.json"), *out = file_in("verify.out");
    pt_verify_tamper(cfg, out, pt_exec_pg, conninfo("clean"), PT_PARTS);
    free(cfg);
    free(out);
}

static void test_pg_kill9_20_times_equals_clean_run(void)
{
    char *cfg = setup("crash", "pg-crash"), *log = file_in("crash.log");
    int kills = 0;
    CU_ASSERT_FATAL(pt_crash_run(cfg, log, pt_applied_pg, conninfo("crash"), (int64_t)n_events,
                                 20, soak() ? 3000 : 800, 7, &kills));
    CU_ASSERT(kills == 20);
    char *got = pt_dump_pg(conninfo("crash"));
    CU_ASSERT(pt_same("pg crash run vs clean run", got, clean_dump));
    free(got);
    char *out = file_in("crash-verify.out");
    json_t *j = NULL;
    CU_ASSERT(pt_verify(cfg, out, &j) == 0);
    CU_ASSERT(pt_verify_count(j, "ok") == PT_PARTS);
    json_decref(j);
    free(out);
    free(cfg);
    free(log);
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

static void test_pg_rebuild_while_live_equals_clean_projection(void)
{
    char *cfg = setup("rebuild", "pg-rebuild"), *log = file_in("rebuild.log");
    char *rlog = file_in("rebuild-cmd.log");
    pid_t w = pt_spawn("run", cfg, log, NULL);
    CU_ASSERT_FATAL(
        pt_wait_applied(pt_applied_pg, conninfo("rebuild"), (int64_t)n_events, 300000, w));
    struct live_producer lp = {.p = pt_producer(br.addr)};
    CU_ASSERT_FATAL(lp.p != NULL);
    pthread_t th;
    pthread_create(&th, NULL, produce_until_stopped, &lp);
    const char *args[] = {"--timeout-ms", "300000", NULL};
    pid_t r = pt_spawn("rebuild", cfg, rlog, args);
    int code = pt_wait_exit(r, 310000);
    atomic_store(&lp.stop, true);
    pthread_join(th, NULL);
    verity_producer_free(lp.p, 10000);
    CU_ASSERT(code == 0);
    CU_ASSERT(lp.rc == 0);
    CU_ASSERT(lp.produced > 0);
    CU_ASSERT(pt_wait_applied(pt_applied_pg, conninfo("rebuild"), (int64_t)ev.n, 300000, w));
    kill(w, SIGTERM);
    CU_ASSERT(pt_wait_exit(w, 20000) == 0);
    printf("\n    rebuilt while %" PRIu64 " more events were produced\n", lp.produced);
    char *got = pt_dump_pg(conninfo("rebuild"));
    char *ref = pt_reference(&ev, ev.n);
    CU_ASSERT(pt_same("pg rebuilt tables vs reference", got, ref));
    free(ref);
    free(got);
    char *out = file_in("rebuild-verify.out");
    json_t *j = NULL;
    CU_ASSERT(pt_verify(cfg, out, &j) == 0);
    CU_ASSERT(pt_verify_count(j, "ok") == PT_PARTS);
    json_decref(j);
    free(out);
    free(cfg);
    free(log);
    free(rlog);
}

static void test_pg_server_restart_retried_without_loss(void)
{
    char *cfg = setup("restart", "pg-restart"), *log = file_in("restart.log");
    pid_t w = pt_spawn("run", cfg, log, NULL);
    CU_ASSERT_FATAL(pt_wait_applied(pt_applied_pg, conninfo("restart"), 1, 300000, w));
    /* stop the server under the worker, let it fail, start it again */
    char data[512], plog[512], postgres[512], port[16];
    snprintf(data, sizeof data, "%s/data", pg.root);
    snprintf(plog, sizeof plog, "%s/pg.log", pg.root);
    snprintf(postgres, sizeof postgres, "%s/postgres", pg.bindir);
    snprintf(port, sizeof port, "%u", pg.port);
    kill(pg.pid, SIGINT);
    CU_ASSERT_FATAL(pt_wait_exit(pg.pid, 30000) >= 0);
    /* events to write while the server is down: the worker must fail */
    struct verity_producer *p = pt_producer(br.addr);
    CU_ASSERT_FATAL(p != NULL);
    CU_ASSERT_FATAL(pt_produce(p, "sales", &ev, 500) == 0);
    verity_producer_free(p, 10000);
    int64_t end = tu_now_ms() + 30000;
    bool failed = false;
    while (!failed && tu_now_ms() < end) {
        FILE *f = fopen(log, "r");
        char line[512];
        while (f && fgets(line, sizeof line, f))
            failed |= strstr(line, "database error, retrying") != NULL;
        if (f)
            fclose(f);
        usleep(20000);
    }
    CU_ASSERT(failed);
    const char *a2[] = {postgres, "-D", data, "-p", port, "-h", "127.0.0.1", "-k", pg.root,
                        "-c", "max_connections=50", "-c", "fsync=off", NULL};
    pg.pid = pt_pg_exec(&pg, plog, a2);
    CU_ASSERT(pt_wait_applied(pt_applied_pg, conninfo("restart"), (int64_t)ev.n, 300000, w));
    kill(w, SIGTERM);
    CU_ASSERT(pt_wait_exit(w, 20000) == 0);
    char *got = pt_dump_pg(conninfo("restart"));
    char *ref = pt_reference(&ev, ev.n);
    CU_ASSERT(pt_same("pg after server restart vs reference", got, ref));
    free(ref);
    free(got);
    free(cfg);
    free(log);
}

static int suite_init(void)
{
    tmp = tu_tmpdir("project-pg");
    if (pt_pg_start(&pg) != 0)
        return -1;
    if (tb_init(&br, "project-pg-broker") != 0 || tb_start(&br) != 0) {
        fprintf(stderr, "cannot start verityd (VERITY_BIN_DIR=%s)\n", getenv("VERITY_BIN_DIR"));
        return -1;
    }
    n_events = soak() ? 200000 : 10000;
    if (getenv("VERITY_PROJECT_EVENTS"))
        n_events = strtoull(getenv("VERITY_PROJECT_EVENTS"), NULL, 10);
    pt_stream_init(&ev, n_events * 3 + 100000, n_events / 10);
    if (pt_topic_create(br.addr, "sales", PT_PARTS) != 0)
        return -1;
    struct verity_producer *p = pt_producer(br.addr);
    int rc = p ? pt_produce(p, "sales", &ev, n_events) : -1;
    verity_producer_free(p, 10000);
    return rc == 0 ? 0 : -1;
}

static int suite_clean(void)
{
    int left = pt_reap_all();
    if (left)
        fprintf(stderr, "(stopped %d worker(s) a failed test left running)\n", left);
    tb_stop(&br, SIGTERM);
    tb_free(&br);
    pt_pg_stop(&pg);
    if (!getenv("VERITY_TEST_KEEP"))
        tu_rmrf(tmp);
    free(tmp);
    free(clean_dump);
    pt_stream_free(&ev);
    return 0;
}

int main(int argc, char **argv)
{
    const char *only = argc > 1 ? argv[1] : NULL;
    signal(SIGPIPE, SIG_IGN);
    static const struct {
        const char *name;
        void (*fn)(void);
    } tests[] = {
        {"pg_e2e_tables_equal_reference_fold", test_pg_e2e_tables_equal_reference_fold},
        {"pg_verify_detects_altered_positions", test_pg_verify_detects_altered_positions},
        {"pg_kill9_20_times_equals_clean_run", test_pg_kill9_20_times_equals_clean_run},
        {"pg_rebuild_while_live_equals_clean_projection",
         test_pg_rebuild_while_live_equals_clean_projection},
        {"pg_server_restart_retried_without_loss", test_pg_server_restart_retried_without_loss},
    };
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    CU_pSuite s = CU_add_suite("project_pg", suite_init, suite_clean);
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
