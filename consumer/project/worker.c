/*
 * verity-project run: one member of an `ordered` consumer group that
 * applies its partitions' events to SQL tables, exactly once.
 *
 * Exactly once, by construction:
 *   - The sink holds, per source partition, the next offset to apply
 *     (_verity_positions). Rows and the new positions of every partition a
 *     transaction covers are written in that one transaction, so the tables
 *     always equal the fold of each partition's prefix [0, next_offset).
 *   - The group decides which member reads which partition; where to read
 *     comes from the sink. A message delivered below the stored position
 *     (redelivered after a crash: the ack was not durable yet) is skipped; a
 *     message above it (the group moved on without the sink: a fresh
 *     database, a rebuild's swap, a dead-lettered redelivery) opens a gap
 *     that is read by offset with a plain consumer before going on.
 *   - Positions are stored with a compare-and-set on next_offset; when two
 *     writers overlap (a rebalance, a rebuild's swap) the loser's
 *     transaction rolls back, it reloads the positions and the gap rule
 *     fetches what it must apply.
 *   - Acks go to the group only after the commit; they matter for the
 *     group's lag, not for correctness.
 *   - Bad events (not JSON, a mapping that cannot apply) are produced to the
 *     dead-letter topic with an idempotency key made from (group, topic,
 *     partition, offset) before the transaction that moves past them, so a
 *     crash in between re-sends a copy the broker drops.
 *   - A database error rolls the transaction back and retries with backoff;
 *     no position moves until a commit succeeds.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "consumer/project/worker.h"
#include "verity/group.h"
#include "verity/verity.h"

volatile sig_atomic_t prj_stop;

#define CONNECT_TIMEOUT_MS 10000
#define BACKOFF_MIN_MS 50
#define BACKOFF_MAX_MS 5000
#define GAP_POLL_MS 1000
#define GAP_IDLE_MAX_MS 30000
#define FETCH_MAX 8192u           /* messages per group fetch at most */

struct pstate {
    size_t idx;                    /* in worker.ps */
    char *topic;
    uint32_t partition;
    uint64_t next;                 /* stored next_offset (what the sink holds) */
    bool stored;                   /* a row exists */
    uint64_t batch_next;           /* next offset expected in the open batch */
    uint64_t events, dead;         /* counters as stored */
    double rate;
    int64_t updated_ms;
    bool delivered;                /* the group delivered something not acked yet */
    uint64_t ack_upto;             /* highest offset the group delivered */
    bool group_prev_known;         /* group_prev is from this assignment */
    uint64_t group_prev;           /* the group's previous delivery here */
    bool has_chain;                /* chain hash of the batch holding next - 1 */
    uint8_t chain[PRJ_CHAIN_SIZE];
    uint64_t chain_offset;         /* that batch's last offset */
};

struct ev {
    struct pstate *ps;
    uint64_t offset;
    int64_t timestamp_ms;
    json_t *root;                  /* NULL: a bad event */
    char *reason;                  /* bad events */
    void *key, *value;             /* bad events: copies for the dead letter */
    int32_t key_len, value_len;
    bool has_chain;                /* the chain hash of the batch holding it */
    uint8_t chain[PRJ_CHAIN_SIZE];
    uint64_t chain_offset;
};

/*
 * Where the worker's time goes, logged at exit ("phases:"): wall and the
 * polling thread's CPU time per phase, read around whole polls and
 * transactions (a few clock reads per batch, none per event).
 */
enum { PH_POLL, PH_PARSE, PH_ROWS, PH_POS, PH_COMMIT, PH_ACK, PH_N };
static const char *const ph_name[PH_N] = {"poll", "parse", "rows", "positions", "commit",
                                          "ack"};

struct phase {
    int64_t wall_ns, cpu_ns;
};

struct tmark {
    int64_t wall, cpu;
};

static struct tmark tmark(void)
{
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &b);
    return (struct tmark){(int64_t)a.tv_sec * 1000000000 + a.tv_nsec,
                          (int64_t)b.tv_sec * 1000000000 + b.tv_nsec};
}

/* Adds the time since *m to phase p and moves *m to now. */
static void tadd(struct phase *p, struct tmark *m)
{
    struct tmark now = tmark();
    p->wall_ns += now.wall - m->wall;
    p->cpu_ns += now.cpu - m->cpu;
    *m = now;
}

struct worker {
    const struct prj_config *cfg;
    struct sink *sink;
    struct applier *app;
    struct prj_plan *plan;         /* what the parser builds of each event */
    struct verity_group_consumer *g;
    struct verity_producer *dlq;   /* created on the first bad event */
    uint32_t dlq_partitions;
    char dlq_topic[256];
    struct pstate **ps;            /* stable pointers: events keep them */
    size_t n_ps, cap_ps;
    struct ev *ev;
    size_t n_ev, cap_ev;
    atomic_bool reassigned;        /* member_cb: reload positions */
    pthread_mutex_t assigned_mu;   /* guards assigned (member_cb writes it) */
    struct verity_group_offset *assigned; /* this member's partitions */
    size_t n_assigned;
    struct verity_group_admin *admin; /* describe: the group's read cursors */
    uint64_t member_id;
    int64_t poll_ms, flush_ms;     /* where the time went (logged at exit) */
    uint64_t polls, polled, flushes;
    struct phase ph[PH_N];         /* the same per phase, wall and thread CPU */
    int64_t first_msg_ms, last_commit_ms;
    struct prj_stats stats;
    char fatal[512];
};

static void logmsg(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void logmsg(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "verity-project: ");
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR && !prj_stop)
        ;
}

static struct pstate *pstate_get(struct worker *w, const char *topic, uint32_t partition)
{
    for (size_t i = 0; i < w->n_ps; i++)
        if (w->ps[i]->partition == partition && strcmp(w->ps[i]->topic, topic) == 0)
            return w->ps[i];
    if (w->n_ps == w->cap_ps) {
        w->cap_ps = w->cap_ps ? w->cap_ps * 2 : 64;
        w->ps = realloc(w->ps, w->cap_ps * sizeof *w->ps);
    }
    struct pstate *p = calloc(1, sizeof *p);
    p->idx = w->n_ps;
    p->topic = strdup(topic);
    p->partition = partition;
    w->ps[w->n_ps++] = p;
    return p;
}

/* Loads the stored positions into the partition states (batch empty). */
static int positions_reload(struct worker *w)
{
    struct prj_pos *pos = NULL;
    size_t n = 0;
    if (pos_load(w->sink, &pos, &n) != 0)
        return SINK_EDB;
    for (size_t i = 0; i < w->n_ps; i++) {
        w->ps[i]->next = w->ps[i]->batch_next = 0;
        w->ps[i]->stored = false;
        w->ps[i]->group_prev_known = false;
    }
    for (size_t i = 0; i < n; i++) {
        struct pstate *p = pstate_get(w, pos[i].topic, pos[i].partition);
        p->next = p->batch_next = pos[i].next_offset;
        p->stored = true;
        p->events = pos[i].events;
        p->dead = pos[i].dead_lettered;
        p->rate = pos[i].rate_eps;
        p->updated_ms = pos[i].updated_ms;
        p->has_chain = pos[i].has_chain;
        memcpy(p->chain, pos[i].chain, sizeof p->chain);
        p->chain_offset = pos[i].chain_offset;
    }
    pos_free(pos, n);
    return 0;
}

static void ev_free(struct ev *e)
{
    json_decref(e->root);
    free(e->reason);
    free(e->key);
    free(e->value);
}

static void batch_clear(struct worker *w)
{
    for (size_t i = 0; i < w->n_ev; i++)
        ev_free(&w->ev[i]);
    w->n_ev = 0;
    prj_arena_reset(); /* no event of the batch is left */
    for (size_t i = 0; i < w->n_ps; i++)
        w->ps[i]->batch_next = w->ps[i]->next;
}

/* Parses and checks one message into the batch. Returns 0, or 1 when the
 * event is bad and the config says stop (not added). */
static int batch_add(struct worker *w, struct pstate *ps, const struct verity_message *m)
{
    if (w->n_ev == w->cap_ev) {
        w->cap_ev = w->cap_ev ? w->cap_ev * 2 : 1024;
        w->ev = realloc(w->ev, w->cap_ev * sizeof *w->ev);
    }
    struct ev e = {.ps = ps, .offset = m->offset, .timestamp_ms = m->timestamp_ms};
    if (m->chain_hash) {
        e.has_chain = true;
        memcpy(e.chain, m->chain_hash, sizeof e.chain);
        e.chain_offset = m->batch_last_offset;
    }
    char reason[PRJ_REASON_MAX] = "";
    json_error_t je;
    if (!m->value) {
        snprintf(reason, sizeof reason, "not JSON: null value");
    } else {
        e.root = prj_parse(w->plan, m->value, (size_t)m->value_len, &je);
        if (!e.root)
            snprintf(reason, sizeof reason, "not JSON: %s at byte %d", je.text, je.position);
        else if (applier_check(w->app, ps->topic, e.root, reason) != 0) {
            json_decref(e.root);
            e.root = NULL;
        }
    }
    if (!e.root) {
        if (w->cfg->on_bad == ON_BAD_STOP) {
            snprintf(w->fatal, sizeof w->fatal, "bad event %s/%u@%" PRIu64 ": %s", ps->topic,
                     ps->partition, m->offset, reason);
            return 1;
        }
        e.reason = strdup(reason);
        if (m->key && m->key_len >= 0) {
            e.key = malloc((size_t)m->key_len + 1);
            memcpy(e.key, m->key, (size_t)m->key_len);
            e.key_len = m->key_len;
        } else {
            e.key_len = -1;
        }
        if (m->value && m->value_len >= 0) {
            e.value = malloc((size_t)m->value_len + 1);
            memcpy(e.value, m->value, (size_t)m->value_len);
            e.value_len = m->value_len;
        } else {
            e.value_len = -1;
        }
    }
    w->ev[w->n_ev++] = e;
    ps->batch_next = m->offset + 1;
    return 0;
}

/* ---- dead letters ------------------------------------------------------------ */

static int dlq_open(struct worker *w)
{
    if (w->dlq)
        return 0;
    snprintf(w->dlq_topic, sizeof w->dlq_topic, "%s",
             w->cfg->dlq_topic ? w->cfg->dlq_topic : "");
    if (!w->dlq_topic[0])
        snprintf(w->dlq_topic, sizeof w->dlq_topic, "%s.dlq", w->cfg->topics[0]);
    struct verity_client *c = NULL;
    struct verity_conn_config cc;
    verity_conn_config_default(&cc);
    cc.broker = w->cfg->broker;
    int rc = verity_client_new(&cc, &c);
    struct verity_topic_info *ti = NULL;
    if (rc == 0)
        rc = verity_client_connect(c, CONNECT_TIMEOUT_MS);
    if (rc == 0) {
        rc = verity_topic_describe(c, w->dlq_topic, &ti);
        if (rc == VERITY_ENOTFOUND) {
            struct verity_topic_config tc = {.partitions = 1};
            rc = verity_topic_create(c, w->dlq_topic, &tc, &ti);
            if (rc == VERITY_EEXIST)
                rc = verity_topic_describe(c, w->dlq_topic, &ti);
        }
    }
    if (rc == 0)
        w->dlq_partitions = ti->partition_count ? ti->partition_count : ti->config.partitions;
    verity_topic_info_free(ti, 1);
    verity_client_free(c);
    if (rc != 0)
        return rc;
    if (w->dlq_partitions == 0)
        w->dlq_partitions = 1;
    struct verity_producer_config pc;
    verity_producer_config_default(&pc);
    pc.conn.broker = w->cfg->broker;
    pc.idempotence = true;
    return verity_producer_new(&pc, &w->dlq);
}

struct dlq_wait {
    atomic_int err;
};

static void dlq_report(void *opaque, int err, const struct verity_delivery *d)
{
    struct dlq_wait *dw = opaque;
    if (err && err != VERITY_EDUPLICATE)
        atomic_store(&dw->err, err);
}

/* Produces every bad event of the batch; retries until all are durable. */
static int dlq_send(struct worker *w)
{
    bool any = false;
    for (size_t i = 0; i < w->n_ev && !any; i++)
        any = w->ev[i].root == NULL;
    if (!any)
        return 0;
    int backoff = BACKOFF_MIN_MS;
    for (;;) {
        int rc = dlq_open(w);
        struct dlq_wait dw = {0};
        for (size_t i = 0; rc == 0 && i < w->n_ev; i++) {
            struct ev *e = &w->ev[i];
            if (e->root)
                continue;
            char part[16], off[24], ts[24], idem_src[512];
            snprintf(part, sizeof part, "%u", e->ps->partition);
            snprintf(off, sizeof off, "%" PRIu64, e->offset);
            snprintf(ts, sizeof ts, "%" PRId64, e->timestamp_ms);
            struct verity_header h[6] = {
                {VERITY_DLQ_HDR_TOPIC, sizeof VERITY_DLQ_HDR_TOPIC - 1, e->ps->topic,
                 (int32_t)strlen(e->ps->topic)},
                {VERITY_DLQ_HDR_PARTITION, sizeof VERITY_DLQ_HDR_PARTITION - 1, part,
                 (int32_t)strlen(part)},
                {VERITY_DLQ_HDR_OFFSET, sizeof VERITY_DLQ_HDR_OFFSET - 1, off,
                 (int32_t)strlen(off)},
                {VERITY_DLQ_HDR_GROUP, sizeof VERITY_DLQ_HDR_GROUP - 1, w->cfg->group,
                 (int32_t)strlen(w->cfg->group)},
                {VERITY_DLQ_HDR_ERROR, sizeof VERITY_DLQ_HDR_ERROR - 1, e->reason,
                 (int32_t)strlen(e->reason)},
                {VERITY_DLQ_HDR_COUNT, sizeof VERITY_DLQ_HDR_COUNT - 1, "1", 1},
            };
            struct verity_record r = {.key = e->key, .key_len = e->key_len,
                                      .value = e->value, .value_len = e->value_len,
                                      .headers = h, .header_count = 6};
            int n = snprintf(idem_src, sizeof idem_src, "verity-project\n%s\n%s\n%u\n%" PRIu64,
                             w->cfg->group, e->ps->topic, e->ps->partition, e->offset);
            uint8_t key[VERITY_IDEM_KEY_SIZE];
            verity_idempotency_key(idem_src, (size_t)n, key);
            rc = verity_produce_batch(w->dlq, w->dlq_topic,
                                      (int32_t)(e->ps->partition % w->dlq_partitions), &r, 1,
                                      key, dlq_report, &dw);
        }
        if (rc == 0)
            rc = verity_producer_flush(w->dlq, 60000);
        if (rc == 0)
            rc = atomic_load(&dw.err);
        if (rc == 0)
            return 0;
        logmsg("dead-letter topic %s: %s; retrying", w->dlq_topic, verity_strerror(rc));
        if (prj_stop)
            return rc;
        sleep_ms(backoff);
        backoff = backoff * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : backoff * 2;
    }
}

/* ---- the transaction ----------------------------------------------------------- */

static void stats_publish(struct worker *w, uint64_t events, uint64_t dead)
{
    pthread_mutex_lock(&w->stats.mu);
    w->stats.events += events;
    w->stats.dead_lettered += dead;
    w->stats.commits++;
    pos_free(w->stats.pos, w->stats.n_pos);
    w->stats.pos = calloc(w->n_ps + 1, sizeof *w->stats.pos);
    w->stats.n_pos = w->n_ps;
    for (size_t i = 0; i < w->n_ps; i++) {
        struct prj_pos *p = &w->stats.pos[i];
        p->topic = strdup(w->ps[i]->topic);
        p->partition = w->ps[i]->partition;
        p->next_offset = w->ps[i]->next;
        p->events = w->ps[i]->events;
        p->dead_lettered = w->ps[i]->dead;
        p->updated_ms = w->ps[i]->updated_ms;
        p->rate_eps = w->ps[i]->rate;
        p->stored = w->ps[i]->stored;
        p->has_chain = w->ps[i]->has_chain;
        memcpy(p->chain, w->ps[i]->chain, sizeof p->chain);
        p->chain_offset = w->ps[i]->chain_offset;
    }
    pthread_mutex_unlock(&w->stats.mu);
}

static void stat_add(struct worker *w, uint64_t *field)
{
    pthread_mutex_lock(&w->stats.mu);
    (*field)++;
    pthread_mutex_unlock(&w->stats.mu);
}

/* One attempt: BEGIN, rows, positions (compare-and-set), COMMIT. */
static int txn_once(struct worker *w, uint64_t *events_out, uint64_t *dead_out)
{
    struct tmp {
        uint64_t next, events, dead;
        bool touched;
        const struct ev *last;     /* the last event applied: its batch's chain */
    } *t = calloc(w->n_ps + 1, sizeof *t);
    for (size_t i = 0; i < w->n_ps; i++)
        t[i] = (struct tmp){w->ps[i]->next, w->ps[i]->events, w->ps[i]->dead, false, NULL};
    struct tmark tm = tmark();
    int rc = sink_begin(w->sink);
    /* Positions first: a writer that lost its partitions (a rebalance
     * overlap, a rebuild's swap) stops here, before any row. */
    for (size_t i = 0; rc == 0 && i < w->n_ev; i++) {
        struct tmp *pt = &t[w->ev[i].ps->idx];
        if (pt->touched)
            continue;
        pt->touched = true;
        rc = pos_check(w->sink, w->ev[i].ps->topic, w->ev[i].ps->partition, w->ev[i].ps->stored,
                       w->ev[i].ps->next);
    }
    for (size_t i = 0; i < w->n_ps; i++)
        t[i].touched = false;
    tadd(&w->ph[PH_POS], &tm);
    for (size_t i = 0; rc == 0 && i < w->n_ev; i++) {
        struct ev *e = &w->ev[i];
        struct tmp *pt = &t[e->ps->idx];
        if (e->offset < pt->next)
            continue; /* cannot happen: batch_add skips these */
        if (e->root)
            rc = applier_apply(w->app, e->ps->topic, e->ps->partition, e->offset, e->root);
        else
            pt->dead++;
        pt->events++;
        pt->next = e->offset + 1;
        pt->touched = true;
        pt->last = e;
    }
    if (rc == 0)
        rc = applier_flush(w->app); /* rows still waiting for a multi-row statement */
    tadd(&w->ph[PH_ROWS], &tm);
    int64_t now = prj_now_ms();
    for (size_t i = 0; rc == 0 && i < w->n_ps; i++) {
        if (!t[i].touched)
            continue;
        struct pstate *ps = w->ps[i];
        struct prj_pos p = {.topic = ps->topic, .partition = ps->partition,
                            .next_offset = t[i].next, .events = t[i].events,
                            .dead_lettered = t[i].dead, .updated_ms = now};
        if (t[i].last && t[i].last->has_chain) {
            p.has_chain = true;
            memcpy(p.chain, t[i].last->chain, sizeof p.chain);
            p.chain_offset = t[i].last->chain_offset;
        }
        double dt = ps->updated_ms ? (double)(now - ps->updated_ms) : 0;
        double inst = dt > 0 ? (double)(t[i].events - ps->events) * 1000.0 / dt : 0;
        p.rate_eps = ps->rate * 0.5 + inst * 0.5;
        rc = pos_store(w->sink, PRJ_POSITIONS, &p, ps->stored ? ps->next : UINT64_MAX);
        if (rc == 0)
            ps->rate = p.rate_eps;
    }
    tadd(&w->ph[PH_POS], &tm);
    if (rc == 0)
        rc = sink_commit(w->sink);
    tadd(&w->ph[PH_COMMIT], &tm);
    if (rc != 0) {
        sink_rollback(w->sink);
        applier_discard(w->app);
        free(t);
        return rc;
    }
    *events_out = *dead_out = 0;
    for (size_t i = 0; i < w->n_ps; i++) {
        if (!t[i].touched)
            continue;
        struct pstate *ps = w->ps[i];
        *events_out += t[i].events - ps->events - (t[i].dead - ps->dead);
        *dead_out += t[i].dead - ps->dead;
        ps->next = t[i].next;
        ps->events = t[i].events;
        ps->dead = t[i].dead;
        ps->stored = true;
        ps->updated_ms = now;
        if (t[i].last && t[i].last->has_chain) {
            ps->has_chain = true;
            memcpy(ps->chain, t[i].last->chain, sizeof ps->chain);
            ps->chain_offset = t[i].last->chain_offset;
        }
    }
    free(t);
    return 0;
}

static void ack_delivered(struct worker *w)
{
    for (size_t i = 0; i < w->n_ps; i++) {
        struct pstate *ps = w->ps[i];
        if (!ps->delivered || ps->ack_upto >= ps->next)
            continue;
        if (verity_group_ack_upto(w->g, ps->topic, ps->partition, ps->ack_upto) == 0)
            ps->delivered = false;
    }
}

/* Commits the batch: dead letters first, then the transaction, retried
 * with backoff on database errors. 0, or -1 when stopping before it was
 * written (the batch is dropped: nothing was acked, nothing moved). */
static int flush(struct worker *w)
{
    if (w->n_ev == 0) {
        ack_delivered(w);
        return 0;
    }
    if (dlq_send(w) != 0)
        return -1;
    int backoff = BACKOFF_MIN_MS;
    for (;;) {
        uint64_t ev = 0, dead = 0;
        int rc = txn_once(w, &ev, &dead);
        if (rc == 0) {
            stats_publish(w, ev, dead);
            batch_clear(w);
            struct tmark tm = tmark();
            ack_delivered(w);
            tadd(&w->ph[PH_ACK], &tm);
            return 0;
        }
        if (rc == SINK_ECONFLICT) {
            /* Another writer moved a position: drop the batch, reload; the
             * gap rule reads again whatever is still ours to apply. */
            stat_add(w, &w->stats.conflicts);
            logmsg("positions moved by another writer; reloading");
            batch_clear(w);
            if (positions_reload(w) == 0)
                return 0;
            rc = SINK_EDB;
        }
        stat_add(w, &w->stats.db_errors);
        logmsg("database error, retrying in %d ms: %s", backoff, sink_errmsg(w->sink));
        if (prj_stop)
            return -1;
        sleep_ms(backoff);
        backoff = backoff * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : backoff * 2;
        if (sink_reconnect(w->sink) != 0)
            logmsg("reconnect failed: %s", sink_errmsg(w->sink));
    }
}

/* ---- gaps ---------------------------------------------------------------- */

/* Reads [ps->batch_next, to) of one partition by offset into the batch,
 * committing along the way when the batch fills. 0, or an error that
 * stops the worker (the log no longer holds the offsets: VERITY_EOFFSET). */
static int gap_fill(struct worker *w, struct pstate *ps, uint64_t to)
{
    stat_add(w, &w->stats.gap_fills);
    struct verity_consumer_config cc;
    verity_consumer_config_default(&cc);
    cc.conn.broker = w->cfg->broker;
    cc.fetch_max_wait_ms = 200;
    struct verity_consumer *c = NULL;
    int rc = verity_consumer_new(&cc, &c);
    if (rc == 0)
        rc = verity_consumer_assign(c, ps->topic, ps->partition,
                                    /* nothing stored yet: the log's first offset */
                                    !ps->stored && ps->batch_next == 0 ? VERITY_START_EARLIEST
                                                                       : VERITY_START_OFFSET,
                                    (int64_t)ps->batch_next);
    int64_t idle_since = prj_mono_ms();
    while (rc == 0 && ps->batch_next < to && !prj_stop) {
        const struct verity_message *m;
        size_t n = 0;
        rc = verity_consumer_poll(c, GAP_POLL_MS, &m, &n, NULL);
        if (rc)
            break;
        if (n)
            idle_since = prj_mono_ms();
        else if (prj_mono_ms() - idle_since > GAP_IDLE_MAX_MS)
            rc = VERITY_ETIMEOUT;
        bool done = false;
        for (size_t i = 0; i < n && rc == 0 && !done; i++) {
            if (m[i].offset >= to)
                done = true; /* the rest of the range holds no data */
            else if (m[i].offset >= ps->batch_next && batch_add(w, ps, &m[i]) != 0)
                rc = VERITY_EINVAL;
        }
        uint64_t pos = 0, hwm = 0;
        if (rc == 0 && !done && verity_consumer_position(c, ps->topic, ps->partition, &pos, &hwm) == 0 &&
            pos >= to)
            done = true;
        if (done)
            break;
        if (rc == 0 && w->n_ev >= w->cfg->batch_events && flush(w) != 0)
            rc = VERITY_ECLOSED;
    }
    verity_consumer_free(c);
    if (rc && !w->fatal[0])
        snprintf(w->fatal, sizeof w->fatal, "reading %s/%u from offset %" PRIu64 ": %s",
                 ps->topic, ps->partition, ps->batch_next, verity_strerror(rc));
    return rc;
}

/* ---- the group member ------------------------------------------------------ */

static void on_member(void *opaque, uint64_t member_id, uint32_t generation,
                      const struct verity_group_offset *assigned, size_t n)
{
    struct worker *w = opaque;
    pthread_mutex_lock(&w->assigned_mu);
    verity_group_offsets_free(w->assigned, w->n_assigned);
    w->assigned = calloc(n + 1, sizeof *w->assigned);
    for (size_t i = 0; i < n; i++) {
        w->assigned[i].topic = strdup(assigned[i].topic);
        w->assigned[i].partition = assigned[i].partition;
    }
    w->n_assigned = n;
    w->member_id = member_id;
    pthread_mutex_unlock(&w->assigned_mu);
    atomic_store(&w->reassigned, true);
}

/*
 * After a (re)assignment: where the group's read cursor of an assigned
 * partition is past the sink's position (a fresh or restored database, a
 * group that moved on without this sink), read the difference by offset
 * now instead of waiting for the next delivery, so the tables catch up
 * with everything the group already handed out.
 */
static int catch_up_assigned(struct worker *w)
{
    struct verity_group_info *gi = NULL;
    int rc = verity_group_describe(w->admin, w->cfg->group, &gi);
    if (rc) {
        logmsg("describe group %s: %s (catch-up waits for deliveries)", w->cfg->group,
               verity_strerror(rc));
        return 0;
    }
    pthread_mutex_lock(&w->assigned_mu);
    size_t n = w->n_assigned;
    struct verity_group_offset *a = calloc(n + 1, sizeof *a);
    for (size_t i = 0; i < n; i++) {
        a[i].topic = strdup(w->assigned[i].topic);
        a[i].partition = w->assigned[i].partition;
    }
    pthread_mutex_unlock(&w->assigned_mu);
    for (size_t i = 0; rc == 0 && i < n; i++) {
        for (size_t k = 0; k < gi->n_partitions; k++) {
            struct verity_group_partition *gp = &gi->partitions[k];
            if (gp->partition != a[i].partition || strcmp(gp->topic, a[i].topic) != 0)
                continue;
            struct pstate *ps = pstate_get(w, a[i].topic, a[i].partition);
            if (ps->batch_next < gp->read_cursor && gp->read_cursor > gp->start_offset)
                rc = gap_fill(w, ps, gp->read_cursor);
        }
    }
    verity_group_offsets_free(a, n);
    verity_group_info_free(gi, 1);
    if (rc == 0)
        rc = flush(w);
    return rc;
}

static int group_ensure(const struct prj_config *cfg)
{
    struct verity_conn_config cc;
    verity_conn_config_default(&cc);
    cc.broker = cfg->broker;
    struct verity_group_admin *a = NULL;
    int rc = verity_group_admin_new(&cc, &a);
    if (rc == 0)
        rc = verity_group_admin_connect(a, CONNECT_TIMEOUT_MS);
    struct verity_group_info *gi = NULL;
    if (rc == 0)
        rc = verity_group_describe(a, cfg->group, &gi);
    if (rc == VERITY_ENOTFOUND) {
        struct verity_group_config gc = {.mode = VERITY_GROUP_ORDERED,
                                         .topics = (const char *const *)cfg->topics,
                                         .n_topics = cfg->n_topics,
                                         .max_deliveries = 1000,
                                         .dlq_topic = cfg->dlq_topic};
        rc = verity_group_create(a, cfg->group, &gc, VERITY_GROUP_START_EARLIEST, 0, NULL, NULL);
        if (rc == VERITY_EEXIST)
            rc = 0;
        if (rc)
            logmsg("creating group %s: %s: %s", cfg->group, verity_strerror(rc),
                   verity_last_error_message());
    } else if (rc == 0 && gi->mode != VERITY_GROUP_ORDERED) {
        logmsg("group %s is not in ordered mode", cfg->group);
        rc = VERITY_EINVAL;
    } else if (rc) {
        logmsg("group %s: %s", cfg->group, verity_strerror(rc));
    }
    verity_group_info_free(gi, 1);
    verity_group_admin_free(a);
    return rc;
}

static void worker_free(struct worker *w)
{
    batch_clear(w);
    free(w->ev);
    for (size_t i = 0; i < w->n_ps; i++) {
        free(w->ps[i]->topic);
        free(w->ps[i]);
    }
    free(w->ps);
    verity_group_consumer_free(w->g, 5000);
    verity_group_admin_free(w->admin);
    verity_group_offsets_free(w->assigned, w->n_assigned);
    pthread_mutex_destroy(&w->assigned_mu);
    verity_producer_free(w->dlq, 5000);
    applier_free(w->app);
    prj_plan_free(w->plan);
    prj_parse_release();
    sink_close(w->sink);
    pos_free(w->stats.pos, w->stats.n_pos);
    pthread_mutex_destroy(&w->stats.mu);
}

/*
 * Adds one delivered message; 0, or an error that stops the worker.
 *
 * Offsets of a partition have holes where the log holds records no
 * consumer sees (signed checkpoints), so "the message is past batch_next"
 * alone does not mean a gap. The group's deliveries to this member are in
 * offset order, so when the previous delivery here was at or past
 * batch_next - 1, what lies between it and this message is such a hole.
 * Otherwise (first delivery since positions were loaded) the range is read
 * by offset, which applies whatever data it holds.
 */
static int on_message(struct worker *w, const struct verity_group_message *gm)
{
    const struct verity_message *m = &gm->msg;
    struct pstate *ps = pstate_get(w, m->topic, m->partition);
    if (!ps->delivered || m->offset > ps->ack_upto)
        ps->ack_upto = m->offset;
    ps->delivered = true;
    bool contiguous = ps->group_prev_known && ps->group_prev + 1 >= ps->batch_next &&
                      ps->group_prev < m->offset;
    ps->group_prev = m->offset;
    ps->group_prev_known = true;
    if (m->offset < ps->batch_next) {
        stat_add(w, &w->stats.skipped);
        return 0;
    }
    if (m->offset > ps->batch_next && !contiguous && gap_fill(w, ps, m->offset) != 0)
        return -1;
    if (m->offset < ps->batch_next)
        return 0;
    return batch_add(w, ps, m) ? -1 : 0;
}

/* flush() from the polling loop, counted for the exit log line. */
static int commit_batch(struct worker *w, int64_t *batch_start)
{
    int64_t tf = prj_mono_ms();
    bool any = w->n_ev > 0;
    if (flush(w) != 0)
        return -1;
    w->flush_ms += prj_mono_ms() - tf;
    w->flushes += any;
    if (any)
        w->last_commit_ms = prj_mono_ms();
    *batch_start = prj_mono_ms();
    return 0;
}

/* Acks only feed the group's lag: a failure here is worth a line, no more. */
static void acks_wait(struct worker *w)
{
    int rc = verity_group_commit(w->g, 5000);
    if (rc)
        logmsg("group acks: %s", verity_strerror(rc));
}

int prj_run(const struct prj_config *cfg)
{
    struct worker w = {.cfg = cfg};
    pthread_mutex_init(&w.stats.mu, NULL);
    pthread_mutex_init(&w.assigned_mu, NULL);
    char err[512];
    int code = 1;
    if (sink_open(cfg, &w.sink, err, sizeof err) != 0) {
        logmsg("%s", err);
        pthread_mutex_destroy(&w.stats.mu);
        return 1;
    }
    uint32_t gen = 0;
    if (pos_ensure(w.sink) != 0 || meta_gen(w.sink, &gen) != 0 ||
        applier_new(w.sink, cfg, "", gen, &w.app) != 0 || positions_reload(&w) != 0) {
        logmsg("%s", sink_errmsg(w.sink));
        goto out;
    }
    /* VERITY_PROJECT_PARSER=jansson: the full parse, for comparisons
     * (docs/PERFORMANCE.md) */
    const char *parser = getenv("VERITY_PROJECT_PARSER");
    if (!parser || strcmp(parser, "jansson") != 0)
        w.plan = prj_plan_new(cfg);
    /* Events stay alive until their transaction ends (batch_clear), so
     * rows may wait for multi-row statements. */
    applier_batch(w.app, true);
    int rc = group_ensure(cfg);
    if (rc) {
        code = verity_err_unreachable(rc) ? 3 : 1;
        goto out;
    }
    struct verity_conn_config ac;
    verity_conn_config_default(&ac);
    ac.broker = cfg->broker;
    rc = verity_group_admin_new(&ac, &w.admin);
    if (rc) {
        logmsg("group admin: %s", verity_strerror(rc));
        goto out;
    }
    struct verity_group_consumer_config gc;
    verity_group_consumer_config_default(&gc);
    gc.conn.broker = cfg->broker;
    gc.group = cfg->group;
    gc.topics = (const char *const *)cfg->topics;
    gc.n_topics = cfg->n_topics;
    gc.member_name = "verity-project";
    /* Fetch while the batch before is parsed and committed: a transaction's
     * worth of events may wait in the consumer's queue, in fetches of up to
     * FETCH_MAX. With 5,000 per fetch and the default queue of two fetches,
     * polls waited on the broker for half of the wall time
     * (docs/PERFORMANCE.md). Not more: queued messages are leased (30 s by
     * default) and a slow sink would let leases run out (the redeliveries
     * are skipped, but cost the broker work). */
    gc.fetch_max = cfg->batch_events < FETCH_MAX ? cfg->batch_events : FETCH_MAX;
    gc.queue_max = cfg->batch_events > 2 * gc.fetch_max ? cfg->batch_events : 2 * gc.fetch_max;
    gc.fetch_max_wait_ms = 100;
    gc.fetch_inflight = 2;
    gc.member_cb = on_member;
    gc.opaque = &w;
    rc = verity_group_consumer_new(&gc, &w.g);
    if (rc == 0)
        rc = verity_group_connect(w.g, CONNECT_TIMEOUT_MS);
    if (rc) {
        logmsg("joining group %s: %s", cfg->group, verity_strerror(rc));
        code = verity_err_unreachable(rc) ? 3 : 1;
        goto out;
    }
    if (cfg->metrics && prj_metrics_start(cfg->metrics, &w.stats) != 0) {
        logmsg("metrics: cannot listen on %s", cfg->metrics);
        goto out;
    }
    prj_arena_enable();
    logmsg("running: group %s, %zu tables", cfg->group, cfg->n_tables);
    int64_t batch_start = prj_mono_ms();
    while (!prj_stop) {
        if (atomic_exchange(&w.reassigned, false)) {
            /* A new assignment: what another member applied meanwhile is in
             * the sink, not in memory. */
            if (flush(&w) != 0 || positions_reload(&w) != 0 || catch_up_assigned(&w) != 0) {
                if (w.fatal[0]) {
                    logmsg("%s", w.fatal);
                    /* stop: commit what came before the failure */
                    if (flush(&w) == 0)
                        acks_wait(&w);
                }
                goto out;
            }
        }
        int64_t left = cfg->commit_ms - (prj_mono_ms() - batch_start);
        const struct verity_group_message *msgs;
        size_t n = 0;
        int64_t tp = prj_mono_ms();
        struct tmark tm = tmark();
        rc = verity_group_poll(w.g, left > 0 ? (int)left : 0, &msgs, &n);
        tadd(&w.ph[PH_POLL], &tm);
        w.poll_ms += prj_mono_ms() - tp;
        w.polls++;
        w.polled += n;
        if (n && !w.first_msg_ms)
            w.first_msg_ms = tp;
        if (rc) {
            logmsg("group: %s", verity_strerror(rc));
            goto out;
        }
        if (w.n_ev == 0 && n)
            batch_start = prj_mono_ms();
        bool failed = false;
        for (size_t i = 0; i < n && !failed; i++) {
            if (on_message(&w, &msgs[i]) != 0) {
                if (w.fatal[0])
                    logmsg("%s", w.fatal);
                /* stop: commit what came before the failure */
                if (flush(&w) == 0)
                    acks_wait(&w);
                goto out;
            }
            /* A poll may return more than a transaction's worth (the queue
             * and the fetches in flight): commit every batch_events. */
            if (w.n_ev >= cfg->batch_events) {
                tadd(&w.ph[PH_PARSE], &tm);
                failed = commit_batch(&w, &batch_start) != 0;
                tm = tmark();
            }
        }
        tadd(&w.ph[PH_PARSE], &tm);
        if (failed)
            break;
        if (prj_mono_ms() - batch_start >= cfg->commit_ms ||
            (n == 0 && w.n_ev == 0)) {
            if (commit_batch(&w, &batch_start) != 0)
                break;
        }
    }
    if (flush(&w) == 0) {
        acks_wait(&w);
        code = 0;
    }
out:
    logmsg("stopped: %" PRIu64 " polls (%" PRIu64 " messages) took %" PRId64 " ms, %" PRIu64
           " commits took %" PRId64 " ms",
           w.polls, w.polled, w.poll_ms, w.flushes, w.flush_ms);
    if (w.last_commit_ms > w.first_msg_ms && w.first_msg_ms)
        logmsg("first message to last commit: %" PRId64 " ms, %.0f events/s",
               w.last_commit_ms - w.first_msg_ms,
               (double)w.polled * 1000.0 / (double)(w.last_commit_ms - w.first_msg_ms));
    char line[512];
    size_t len = 0;
    for (int i = 0; i < PH_N; i++)
        len += (size_t)snprintf(line + len, sizeof line - len, "%s%s %.0f ms (cpu %.0f)",
                                i ? ", " : "", ph_name[i], (double)w.ph[i].wall_ns / 1e6,
                                (double)w.ph[i].cpu_ns / 1e6);
    logmsg("phases (wall, polling thread's cpu): %s", line);
    prj_metrics_stop();
    worker_free(&w);
    prj_arena_disable();
    return code;
}
