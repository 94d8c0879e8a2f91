/*
 * verity-project rebuild: replay every source partition from the first
 * offset the log still stores into shadow tables ("<name>__shadow", indexes
 * of the next generation) while the live tables keep serving and the live
 * worker keeps writing them; then swap.
 *
 * The swap is one transaction that holds the write lock (SQLite BEGIN
 * IMMEDIATE; PostgreSQL LOCK on the positions table): it reads the live
 * positions, applies to the shadow tables whatever the live tables hold
 * beyond the shadow's positions (the replay keeps reading for that), drops
 * the live tables, renames the shadows, and stores the shadow positions.
 * Readers see either the old tables or the new ones. A live worker whose
 * next transaction finds positions moved under it rolls back and reloads
 * (worker.c), so nothing is applied twice across the swap.
 *
 * Dead letters are not produced again: the live worker sent them (with
 * idempotency keys) when it first met them; the replay only counts them.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "consumer/project/worker.h"
#include "verity/verity.h"

#define CONNECT_TIMEOUT_MS 10000
#define POLL_MS 200

struct rpart {
    char *topic;
    uint32_t partition;
    uint64_t next;                 /* shadow position */
    uint64_t target;               /* high watermark when the replay began */
    uint64_t events, dead;
    bool seen;
    bool has_chain;                /* chain hash of the batch holding next - 1 */
    uint8_t chain[PRJ_CHAIN_SIZE];
    uint64_t chain_offset;
};

struct rb {
    const struct prj_config *cfg;
    struct sink *sink;
    struct applier *app;
    struct prj_plan *plan;
    struct verity_consumer *c;
    struct rpart *p;
    size_t n;
    uint32_t pending;              /* events in the open transaction */
    json_t **roots;                /* events applied in the open transaction: */
    size_t n_roots, cap_roots;     /* rows may point into them (applier_batch) */
};

/* After the open transaction's rows were written or dropped. */
static void roots_drop(struct rb *r)
{
    for (size_t i = 0; i < r->n_roots; i++)
        json_decref(r->roots[i]);
    r->n_roots = 0;
}

/* Writes the rows still waiting for a multi-row statement, then COMMIT;
 * on failure ROLLBACK. The events are dropped either way. */
static int txn_end(struct rb *r, bool commit)
{
    int rc = commit ? applier_flush(r->app) : SINK_EDB;
    if (rc == 0)
        rc = sink_commit(r->sink);
    if (rc) {
        sink_rollback(r->sink);
        applier_discard(r->app);
    }
    roots_drop(r);
    return rc;
}

static struct rpart *rpart_find(struct rb *r, const char *topic, uint32_t partition)
{
    for (size_t i = 0; i < r->n; i++)
        if (r->p[i].partition == partition && strcmp(r->p[i].topic, topic) == 0)
            return &r->p[i];
    return NULL;
}

static int apply_msg(struct rb *r, struct rpart *p, const struct verity_message *m)
{
    if (m->offset < p->next)
        return 0;
    char reason[PRJ_REASON_MAX];
    json_t *root = m->value ? prj_parse(r->plan, m->value, (size_t)m->value_len, NULL) : NULL;
    int rc = 0;
    if (root && applier_check(r->app, p->topic, root, reason) == 0) {
        rc = applier_apply(r->app, p->topic, p->partition, m->offset, root);
        if (r->n_roots == r->cap_roots) {
            r->cap_roots = r->cap_roots ? r->cap_roots * 2 : 1024;
            r->roots = realloc(r->roots, r->cap_roots * sizeof *r->roots);
        }
        r->roots[r->n_roots++] = root; /* until the transaction ends */
    } else {
        p->dead++;
        json_decref(root);
    }
    if (rc)
        return rc;
    p->events++;
    p->next = m->offset + 1;
    p->seen = true;
    if (m->chain_hash) {
        p->has_chain = true;
        memcpy(p->chain, m->chain_hash, sizeof p->chain);
        p->chain_offset = m->batch_last_offset;
    }
    r->pending++;
    return 0;
}

/* Polls once and applies what came, inside the caller's transaction. */
static int poll_apply(struct rb *r, int timeout_ms)
{
    const struct verity_message *m;
    size_t n = 0;
    uint32_t errp;
    int rc = verity_consumer_poll(r->c, timeout_ms, &m, &n, &errp);
    if (rc) {
        fprintf(stderr, "verity-project rebuild: reading partition %u: %s\n", errp,
                verity_strerror(rc));
        return rc;
    }
    for (size_t i = 0; i < n; i++) {
        struct rpart *p = rpart_find(r, m[i].topic, m[i].partition);
        if (p && (rc = apply_msg(r, p, &m[i])) != 0)
            return rc;
    }
    return 0;
}

static bool caught_up(const struct rb *r)
{
    for (size_t i = 0; i < r->n; i++)
        if (r->p[i].next < r->p[i].target)
            return false;
    return true;
}

static int discover(struct rb *r)
{
    struct verity_conn_config cc;
    verity_conn_config_default(&cc);
    cc.broker = r->cfg->broker;
    struct verity_client *c = NULL;
    int rc = verity_client_new(&cc, &c);
    if (rc == 0)
        rc = verity_client_connect(c, CONNECT_TIMEOUT_MS);
    for (size_t t = 0; rc == 0 && t < r->cfg->n_topics; t++) {
        struct verity_topic_info *ti = NULL;
        rc = verity_topic_describe(c, r->cfg->topics[t], &ti);
        if (rc) {
            fprintf(stderr, "verity-project rebuild: topic %s: %s\n", r->cfg->topics[t],
                    verity_strerror(rc));
            break;
        }
        r->p = realloc(r->p, (r->n + ti->partition_count) * sizeof *r->p);
        for (uint32_t i = 0; i < ti->partition_count; i++) {
            struct rpart *p = &r->p[r->n++];
            memset(p, 0, sizeof *p);
            p->topic = strdup(r->cfg->topics[t]);
            p->partition = ti->partitions[i].partition;
            p->target = ti->partitions[i].high_watermark;
            p->next = ti->partitions[i].start_offset;
        }
        verity_topic_info_free(ti, 1);
    }
    verity_client_free(c);
    return rc;
}

static int drop_shadows(struct rb *r)
{
    char sql[256];
    for (size_t i = 0; i < r->cfg->n_tables; i++) {
        snprintf(sql, sizeof sql, "DROP TABLE IF EXISTS %s%s", r->cfg->tables[i].name,
                 PRJ_SHADOW_SUFFIX);
        if (sink_exec(r->sink, sql) != 0)
            return SINK_EDB;
    }
    return 0;
}

/* The swap transaction (see the file comment). */
static int swap(struct rb *r, uint32_t gen_new, int64_t deadline)
{
    int rc = sink_begin(r->sink);
    if (rc == 0 && sink_kind(r->sink) == SINK_PG)
        rc = sink_exec(r->sink, "LOCK TABLE " PRJ_POSITIONS " IN EXCLUSIVE MODE");
    struct prj_pos *live = NULL;
    size_t n_live = 0;
    if (rc == 0)
        rc = pos_load(r->sink, &live, &n_live);
    for (size_t i = 0; rc == 0 && i < n_live; i++) {
        struct rpart *p = rpart_find(r, live[i].topic, live[i].partition);
        if (!p) {
            fprintf(stderr, "verity-project rebuild: the sink holds %s/%u, not a source "
                            "partition; keeping it out of the rebuilt tables\n",
                    live[i].topic, live[i].partition);
            continue;
        }
        while (rc == 0 && p->next < live[i].next_offset) {
            if (prj_mono_ms() > deadline) {
                rc = VERITY_ETIMEOUT;
                break;
            }
            rc = poll_apply(r, POLL_MS);
        }
    }
    pos_free(live, n_live);
    if (rc == 0)
        rc = applier_flush(r->app);
    if (rc == 0)
        rc = applier_swap(r->sink, r->cfg, gen_new);
    if (rc == 0)
        rc = sink_exec(r->sink, "DELETE FROM " PRJ_POSITIONS);
    int64_t now = prj_now_ms();
    for (size_t i = 0; rc == 0 && i < r->n; i++) {
        struct rpart *p = &r->p[i];
        struct prj_pos pp = {.topic = p->topic, .partition = p->partition,
                             .next_offset = p->next, .events = p->events,
                             .dead_lettered = p->dead, .updated_ms = now,
                             .has_chain = p->has_chain, .chain_offset = p->chain_offset};
        memcpy(pp.chain, p->chain, sizeof pp.chain);
        rc = pos_store(r->sink, PRJ_POSITIONS, &pp, UINT64_MAX);
    }
    int end = txn_end(r, rc == 0);
    return rc ? rc : end;
}

int prj_rebuild(const struct prj_config *cfg, int timeout_ms)
{
    struct rb r = {.cfg = cfg};
    char err[512];
    int code = 1, rc;
    int64_t deadline = timeout_ms < 0 ? INT64_MAX : prj_mono_ms() + timeout_ms;
    if (sink_open(cfg, &r.sink, err, sizeof err) != 0) {
        fprintf(stderr, "verity-project rebuild: %s\n", err);
        return 1;
    }
    uint32_t gen = 0;
    if (pos_ensure(r.sink) != 0 || meta_gen(r.sink, &gen) != 0 || drop_shadows(&r) != 0 ||
        applier_new(r.sink, cfg, PRJ_SHADOW_SUFFIX, gen + 1, &r.app) != 0) {
        fprintf(stderr, "verity-project rebuild: %s\n", sink_errmsg(r.sink));
        goto out;
    }
    r.plan = prj_plan_new(cfg);
    /* rows wait for multi-row statements: the events stay alive until
     * their transaction ends (txn_end) */
    applier_batch(r.app, true);
    rc = discover(&r);
    if (rc) {
        code = verity_err_unreachable(rc) ? 3 : 1;
        goto out;
    }
    struct verity_consumer_config cc;
    verity_consumer_config_default(&cc);
    cc.conn.broker = cfg->broker;
    cc.fetch_max_wait_ms = POLL_MS;
    rc = verity_consumer_new(&cc, &r.c);
    for (size_t i = 0; rc == 0 && i < r.n; i++)
        rc = verity_consumer_assign(r.c, r.p[i].topic, r.p[i].partition, VERITY_START_OFFSET,
                                    (int64_t)r.p[i].next);
    if (rc)
        goto out;
    /* Replay to the high watermarks seen at the start, in transactions of
     * batch_events. */
    while (!caught_up(&r)) {
        if (prj_stop || prj_mono_ms() > deadline) {
            fprintf(stderr, "verity-project rebuild: %s before catching up; live tables "
                            "unchanged\n",
                    prj_stop ? "stopped" : "timed out");
            goto out;
        }
        if (sink_begin(r.sink) != 0)
            goto dberr;
        r.pending = 0;
        while (r.pending < cfg->batch_events && !caught_up(&r))
            if ((rc = poll_apply(&r, POLL_MS)) != 0)
                break;
        int end = txn_end(&r, rc == 0);
        if (rc)
            goto out;
        if (end)
            goto dberr;
    }
    rc = swap(&r, gen + 1, deadline);
    if (rc == SINK_EDB)
        goto dberr;
    if (rc) {
        fprintf(stderr, "verity-project rebuild: swap: %s; live tables unchanged\n",
                verity_strerror(rc));
        goto out;
    }
    uint64_t events = 0;
    for (size_t i = 0; i < r.n; i++)
        events += r.p[i].events;
    printf("rebuilt %zu tables from %zu partitions (%" PRIu64 " events) and swapped them in\n",
           cfg->n_tables, r.n, events);
    code = 0;
    goto out;
dberr:
    fprintf(stderr, "verity-project rebuild: %s; live tables unchanged\n", sink_errmsg(r.sink));
out:
    if (code != 0 && r.sink)
        (void)drop_shadows(&r);
    verity_consumer_free(r.c);
    applier_free(r.app); /* drops rows still waiting */
    roots_drop(&r);
    free(r.roots);
    prj_plan_free(r.plan);
    prj_parse_release();
    sink_close(r.sink);
    for (size_t i = 0; i < r.n; i++)
        free(r.p[i].topic);
    free(r.p);
    return code;
}
