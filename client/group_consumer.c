/*
 * verity_group_consumer: one member of a consumer group, the application's
 * side: create and free, connect, acks, nacks, extends, terms (queued for
 * the I/O thread, client/group_io.c), commit, poll and the callback style.
 * The member's states, threads and request pipeline are described at the
 * top of client/group_io.c.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "client/group_int.h"
#include "storage/clock.h"
#include "verity/limits.h"
#include "verity/verify.h"

#define LEND_RETURN_MSGS 256 /* verity_group_poll */

static void consumer_destroy(struct verity_group_consumer *g)
{
    gio_fetch_free(g->held);
    gio_fetch_free(g->q_head);
    struct gop *op = g->ops_head;
    while (op) {
        struct gop *next = op->next;
        gio_op_free(op);
        op = next;
    }
    gtrack_deinit(&g->track);
    gdecode_deinit(&g->dec);
    for (uint32_t i = 0; i < g->n_interned; i++)
        free(g->interned[i]);
    if (g->topics)
        for (size_t i = 0; i < g->cfg.n_topics; i++)
            free(g->topics[i]);
    free(g->topics);
    free(g->group);
    free(g->member_name);
    free(g->client_id);
    free(g->broker);
    free(g->runs);
    pthread_cond_destroy(&g->cv);
    pthread_mutex_destroy(&g->mu);
    free(g);
}

static int config_copy(struct verity_group_consumer *g, const struct verity_group_consumer_config *cfg)
{
    struct verity_group_consumer_config d;
    verity_group_consumer_config_default(&d);
    g->cfg = *cfg;
    if (!verity_group_name_ok(cfg->group) || cfg->n_topics > VERITY_GROUP_TOPICS_MAX ||
        (cfg->n_topics && !cfg->topics) || cfg->fetch_max > VERITY_GROUP_FETCH_MAX ||
        cfg->session_ms < 0 || cfg->heartbeat_ms < 0 || cfg->ack_linger_ms < 0 ||
        (cfg->member_name && strlen(cfg->member_name) > VERITY_GROUP_MEMBER_NAME_MAX))
        return VERITY_EINVAL;
    for (size_t i = 0; i < cfg->n_topics; i++)
        if (!cfg->topics[i] || !codec_topic_name_ok(cfg->topics[i], false))
            return VERITY_EINVAL;
    if (g->cfg.fetch_max == 0)
        g->cfg.fetch_max = d.fetch_max;
    if (g->cfg.fetch_max_wait_ms == 0)
        g->cfg.fetch_max_wait_ms = d.fetch_max_wait_ms;
    if (g->cfg.fetch_inflight == 0)
        g->cfg.fetch_inflight = d.fetch_inflight;
    const char *name = cfg->member_name    ? cfg->member_name
                       : cfg->conn.client_id ? cfg->conn.client_id
                                             : "libverity";
    g->group = strdup(cfg->group);
    g->member_name = strndup(name, VERITY_GROUP_MEMBER_NAME_MAX);
    g->topics = calloc(cfg->n_topics ? cfg->n_topics : 1, sizeof *g->topics);
    if (!g->group || !g->member_name || !g->topics)
        return -ENOMEM;
    for (size_t i = 0; i < cfg->n_topics; i++)
        if (!(g->topics[i] = strdup(cfg->topics[i])))
            return -ENOMEM;
    g->cfg.group = g->group;
    g->cfg.member_name = g->member_name;
    g->cfg.topics = (const char *const *)g->topics;
    return 0;
}

int verity_group_consumer_new(const struct verity_group_consumer_config *cfg,
                              struct verity_group_consumer **out)
{
    if (!cfg)
        return VERITY_EINVAL;
    struct verity_group_consumer *g = calloc(1, sizeof *g);
    if (!g)
        return -ENOMEM;
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_mutex_init(&g->mu, NULL);
    pthread_cond_init(&g->cv, &ca);
    pthread_condattr_destroy(&ca);
    gtrack_init(&g->track, false);
    g->ack_due_ms = INT64_MAX;
    g->runs = calloc(GC_RUNS_MAX, sizeof *g->runs);
    int rc = g->runs ? config_copy(g, cfg) : -ENOMEM;
    if (rc == 0)
        for (size_t i = 0; i < g->cfg.n_topics && rc == 0; i++)
            if (gio_intern(g, g->topics[i]) < 0)
                rc = -ENOMEM;
    if (rc) {
        consumer_destroy(g);
        return rc;
    }
    rc = cl_loop_start(&g->loop, gio_stop_job, g);
    if (rc) {
        consumer_destroy(g);
        return rc;
    }
    g->loop.on_lent = gio_on_lent;
    g->loop.on_lent_arg = g;
    g->kick_ev = event_new(g->loop.base, -1, 0, gio_kick_cb, g);
    g->timer_ev = evtimer_new(g->loop.base, gio_timer_cb, g);
    rc = g->kick_ev && g->timer_ev ? 0 : -ENOMEM;
    if (rc == 0)
        rc = conn_new(g->loop.base, &g->cfg.conn, &gio_events, g, &g->conn);
    if (rc == 0)
        rc = cl_loop_post(&g->loop, gio_start_job, g);
    if (rc) {
        /* gio_stop_job frees the connection and the events on the loop thread. */
        cl_loop_stop(&g->loop);
        consumer_destroy(g);
        return rc;
    }
    *out = g;
    return 0;
}

int verity_group_connect(struct verity_group_consumer *g, int timeout_ms)
{
    if (cl_loop_in_thread(&g->loop))
        return VERITY_EINVAL;
    int64_t deadline = cl_mono_ms() + (timeout_ms < 0 ? 0 : timeout_ms);
    struct timespec ts = {deadline / 1000, (deadline % 1000) * 1000000};
    pthread_mutex_lock(&g->mu);
    uint64_t failed0 = g->conn_failures;
    int rc = 0;
    for (;;) {
        if (g->state == G_JOINED)
            break;
        if (g->state == G_FAILED) {
            rc = g->fatal;
            break;
        }
        if (g->state == G_CLOSING) {
            rc = VERITY_ECLOSED;
            break;
        }
        if (g->conn_failures != failed0) {
            rc = g->conn_err ? g->conn_err : -ECONNREFUSED;
            break;
        }
        if (timeout_ms < 0) {
            pthread_cond_wait(&g->cv, &g->mu);
        } else if (pthread_cond_timedwait(&g->cv, &g->mu, &ts) != 0) {
            rc = g->state == G_JOINED ? 0 : g->conn_err ? g->conn_err : VERITY_ETIMEOUT;
            break;
        }
    }
    pthread_mutex_unlock(&g->mu);
    return rc;
}

void verity_group_member_id(struct verity_group_consumer *g, uint64_t *member_id,
                            uint32_t *generation)
{
    pthread_mutex_lock(&g->mu);
    if (member_id)
        *member_id = g->member_id;
    if (generation)
        *generation = g->generation;
    pthread_mutex_unlock(&g->mu);
}

/* ---- acks from the application ------------------------------------------ */

/* After a change that may need the I/O thread (mu held): whether to kick. */
static bool ack_needs_kick(struct verity_group_consumer *g)
{
    return g->track.acked_total > 0;
}

/* Auto-ack: acks what the last poll returned and the application left held
 * (mu held). */
static void auto_ack_runs(struct verity_group_consumer *g)
{
    for (uint32_t i = 0; i < g->n_runs; i++) {
        struct grun *u = &g->runs[i];
        struct gtrack_part *p = gtrack_part(&g->track, u->topic, u->partition, false);
        if (!p)
            continue;
        /* Ack the held offsets inside [lo, hi); bounded by the held ranges. */
        uint32_t k = grset_find(&p->held, u->lo);
        while (k < p->held.n && p->held.r[k].lo < u->hi) {
            uint64_t lo = p->held.r[k].lo > u->lo ? p->held.r[k].lo : u->lo;
            uint64_t hi = p->held.r[k].hi < u->hi ? p->held.r[k].hi : u->hi;
            if (gtrack_ack(&g->track, p, lo, hi) != 0)
                break;
            k = grset_find(&p->held, hi);
        }
    }
    g->n_runs = 0;
}

static int ack_range(struct verity_group_consumer *g, const char *topic, uint32_t partition,
                     uint64_t lo, uint64_t hi, bool upto)
{
    if (!topic || lo >= hi)
        return VERITY_EINVAL;
    pthread_mutex_lock(&g->mu);
    int rc = 0;
    int t = gio_topic_index(g, topic);
    if (g->state == G_CLOSING || g->state == G_FAILED)
        rc = g->state == G_FAILED ? g->fatal : VERITY_ECLOSED;
    else if (t < 0)
        rc = VERITY_EINVAL;
    else if (upto && (!g->mode_known || !g->ordered))
        rc = VERITY_EINVAL;
    if (rc == 0) {
        struct gtrack_part *p = gtrack_part(&g->track, (uint32_t)t, partition, true);
        rc = !p ? -ENOMEM : upto ? gtrack_ack_upto(&g->track, p, hi - 1)
                                 : gtrack_ack(&g->track, p, lo, hi);
    }
    bool k = rc == 0 && ack_needs_kick(g);
    pthread_mutex_unlock(&g->mu);
    if (k)
        gio_kick_ex(g, false); /* a lent loop sends them in the next poll */
    return rc;
}

int verity_group_ack(struct verity_group_consumer *g, const char *topic, uint32_t partition,
                     uint64_t offset)
{
    if (offset >= UINT64_MAX)
        return VERITY_EINVAL;
    return ack_range(g, topic, partition, offset, offset + 1, false);
}

int verity_group_ack_upto(struct verity_group_consumer *g, const char *topic, uint32_t partition,
                          uint64_t offset)
{
    if (offset >= UINT64_MAX)
        return VERITY_EINVAL;
    return ack_range(g, topic, partition, 0, offset + 1, true);
}

int verity_group_ack_many(struct verity_group_consumer *g, const struct verity_group_message *m,
                          size_t n)
{
    pthread_mutex_lock(&g->mu);
    int rc = g->state == G_CLOSING ? VERITY_ECLOSED : g->state == G_FAILED ? g->fatal : 0;
    /* Runs of consecutive offsets of one partition become one range. */
    for (size_t i = 0; i < n && rc == 0;) {
        size_t j = i + 1;
        while (j < n && m[j].msg.topic == m[i].msg.topic &&
               m[j].msg.partition == m[i].msg.partition &&
               m[j].msg.offset == m[j - 1].msg.offset + 1)
            j++;
        int t = gio_topic_index(g, m[i].msg.topic);
        struct gtrack_part *p =
            t < 0 ? NULL : gtrack_part(&g->track, (uint32_t)t, m[i].msg.partition, true);
        rc = t < 0 ? VERITY_EINVAL
             : !p  ? -ENOMEM
                   : gtrack_ack(&g->track, p, m[i].msg.offset, m[j - 1].msg.offset + 1);
        i = j;
    }
    bool k = ack_needs_kick(g);
    pthread_mutex_unlock(&g->mu);
    if (k)
        gio_kick_ex(g, false); /* a lent loop sends them in the next poll */
    return rc;
}

static int queue_op(struct verity_group_consumer *g, enum greq_kind kind, const char *topic,
                    uint32_t partition, uint64_t offset, int64_t delay_ms, const char *error)
{
    if (!topic)
        return VERITY_EINVAL;
    struct gop *op = calloc(1, sizeof *op);
    if (!op)
        return -ENOMEM;
    op->kind = kind;
    op->partition = partition;
    op->offset = offset;
    op->delay_ms = delay_ms;
    if (error && !(op->error = strndup(error, VERITY_GROUP_ERROR_MAX))) {
        free(op);
        return -ENOMEM;
    }
    pthread_mutex_lock(&g->mu);
    int rc = g->state == G_CLOSING ? VERITY_ECLOSED : g->state == G_FAILED ? g->fatal : 0;
    int t = gio_topic_index(g, topic);
    if (rc == 0 && t < 0)
        rc = VERITY_EINVAL;
    if (rc == 0 && kind != GR_EXTEND) {
        struct gtrack_part *p = gtrack_part(&g->track, (uint32_t)t, partition, true);
        rc = p ? gtrack_release(&g->track, p, offset, kind == GR_NACK) : -ENOMEM;
    }
    if (rc == 0) {
        op->topic = (uint32_t)t;
        if (g->ops_tail)
            g->ops_tail->next = op;
        else
            g->ops_head = op;
        g->ops_tail = op;
        op = NULL;
    }
    pthread_mutex_unlock(&g->mu);
    if (op)
        gio_op_free(op);
    else
        gio_kick(g);
    return rc;
}

int verity_group_nack(struct verity_group_consumer *g, const char *topic, uint32_t partition,
                      uint64_t offset, int64_t delay_ms, const char *error)
{
    /* Public: -1 backoff, 0 at once, > 0 delay. Wire: 0 backoff, < 0 at once. */
    if (delay_ms < -1)
        return VERITY_EINVAL;
    int64_t wire = delay_ms < 0 ? 0 : delay_ms == 0 ? -1 : delay_ms;
    return queue_op(g, GR_NACK, topic, partition, offset, wire, error);
}

int verity_group_extend(struct verity_group_consumer *g, const char *topic, uint32_t partition,
                        uint64_t offset)
{
    return queue_op(g, GR_EXTEND, topic, partition, offset, 0, NULL);
}

int verity_group_term(struct verity_group_consumer *g, const char *topic, uint32_t partition,
                      uint64_t offset, const char *error)
{
    return queue_op(g, GR_TERM, topic, partition, offset, 0, error);
}

int verity_group_commit(struct verity_group_consumer *g, int timeout_ms)
{
    if (cl_loop_in_thread(&g->loop))
        return VERITY_EINVAL;
    int64_t deadline = cl_mono_ms() + (timeout_ms < 0 ? 0 : timeout_ms);
    struct timespec ts = {deadline / 1000, (deadline % 1000) * 1000000};
    pthread_mutex_lock(&g->mu);
    if (g->cfg.auto_ack)
        auto_ack_runs(g);
    uint64_t mine = ++g->flush_want;
    pthread_mutex_unlock(&g->mu);
    gio_kick(g);
    pthread_mutex_lock(&g->mu);
    int rc = 0;
    for (;;) {
        if (g->flush_done >= mine &&
            (g->out_head == NULL || g->out_head->id > g->flush_barrier))
            break;
        if (g->state == G_CLOSING || g->state == G_FAILED) {
            rc = g->state == G_FAILED ? g->fatal : VERITY_ECLOSED;
            break;
        }
        if (timeout_ms < 0) {
            pthread_cond_wait(&g->cv, &g->mu);
        } else if (pthread_cond_timedwait(&g->cv, &g->mu, &ts) != 0) {
            rc = VERITY_ETIMEOUT;
            break;
        }
    }
    if (rc == 0) {
        /* The first failure covered by this commit; forget those. */
        uint64_t first_id = UINT64_MAX;
        uint32_t keep = 0;
        for (uint32_t i = 0; i < g->n_errs; i++) {
            if (g->errs[i].id <= g->flush_barrier) {
                if (g->errs[i].id < first_id) {
                    first_id = g->errs[i].id;
                    rc = g->errs[i].err;
                }
            } else {
                g->errs[keep++] = g->errs[i];
            }
        }
        g->n_errs = keep;
    }
    pthread_mutex_unlock(&g->mu);
    return rc;
}

/* ---- poll ------------------------------------------------------------------ */

/* Records what this poll returned for auto-ack (mu held). */
static void note_runs(struct verity_group_consumer *g, const struct verity_group_message *m,
                      size_t n)
{
    g->n_runs = 0;
    for (size_t i = 0; i < n;) {
        size_t j = i + 1;
        while (j < n && m[j].msg.topic == m[i].msg.topic &&
               m[j].msg.partition == m[i].msg.partition &&
               m[j].msg.offset == m[j - 1].msg.offset + 1)
            j++;
        int t = gio_topic_index(g, m[i].msg.topic);
        if (t >= 0) {
            if (g->n_runs == GC_RUNS_MAX)
                auto_ack_runs(g); /* ack the earlier runs now rather than never */
            g->runs[g->n_runs++] = (struct grun){(uint32_t)t, m[i].msg.partition, m[i].msg.offset,
                                                 m[j - 1].msg.offset + 1};
        }
        i = j;
    }
}

/* Borrowed loop (poll): true once poll has something to return. */
static bool gpoll_ready(void *arg)
{
    struct verity_group_consumer *g = arg;
    pthread_mutex_lock(&g->mu);
    bool ready = g->q_head || g->state == G_CLOSING ||
                 (g->state == G_FAILED && !g->fatal_reported);
    pthread_mutex_unlock(&g->mu);
    return ready;
}

int verity_group_poll(struct verity_group_consumer *g, int timeout_ms,
                      const struct verity_group_message **msgs_out, size_t *n_out)
{
    *msgs_out = NULL;
    *n_out = 0;
    if (cl_loop_in_thread(&g->loop))
        return VERITY_EINVAL;
    gio_fetch_free(g->held);
    g->held = NULL;
    g->dec.n = 0;
    g->dec.nh = 0;

    int64_t deadline = cl_mono_ms() + (timeout_ms < 0 ? 0 : timeout_ms);
    struct timespec ts = {deadline / 1000, (deadline % 1000) * 1000000};
    int64_t deadline_ns = timeout_ms < 0 ? INT64_MAX : deadline * 1000000;
    /* result_cb and member_cb run on the I/O thread (group.h): with either
     * set, poll never runs the loop itself, so they never run inside it */
    bool may_borrow = !g->cfg.result_cb && !g->cfg.member_cb;
    bool timed_out = false;
    bool kicked = false;
    int err = 0;
    pthread_mutex_lock(&g->mu);
    if (g->cfg.auto_ack)
        auto_ack_runs(g);
    bool acks = ack_needs_kick(g);
    for (;;) {
        if (g->state == G_FAILED && !g->fatal_reported && !g->q_head) {
            g->fatal_reported = true;
            err = g->fatal;
            break;
        }
        if (g->state == G_CLOSING) {
            err = VERITY_ECLOSED;
            break;
        }
        if (g->q_head || timeout_ms == 0 || timed_out)
            break;
        g->poll_waiting = true;
        if (!kicked && (g->cfg.queue_max == 0 || acks)) {
            kicked = true;
            pthread_mutex_unlock(&g->mu);
            gio_kick_ex(g, false);
            pthread_mutex_lock(&g->mu);
            continue;
        }
        /* Nothing queued: run the I/O loop here when it is lent, so the
         * fetch answer reaches this thread without the I/O thread's wake-up
         * of it (issue 16; as verity_consumer_poll, client/loop.c). */
        if (may_borrow && cl_loop_borrow(&g->loop)) {
            pthread_mutex_unlock(&g->mu);
            cl_loop_run_borrowed(&g->loop, gpoll_ready, g, deadline_ns);
            pthread_mutex_lock(&g->mu);
            timed_out = clock_mono_ns() >= deadline_ns;
            /* many messages to decode: the loop thread reads ahead meanwhile */
            if (g->q_msgs >= LEND_RETURN_MSGS)
                cl_loop_nudge(&g->loop);
            continue;
        }
        if (timeout_ms < 0)
            pthread_cond_wait(&g->cv, &g->mu);
        else if (pthread_cond_timedwait(&g->cv, &g->mu, &ts) != 0)
            break;
    }
    g->poll_waiting = false;
    bool was_full = g->cfg.queue_max && g->q_msgs >= g->cfg.queue_max;
    struct gq_fetch *taken = NULL;
    if (!err) {
        /* Only answers for the current member: an older member's leases are
         * gone (member_lost drops its queue too; this catches the rest). */
        taken = g->q_head;
        g->q_head = g->q_tail = NULL;
        g->q_msgs = 0;
    }
    uint64_t member_id = g->member_id;
    pthread_mutex_unlock(&g->mu);
    if (was_full || (acks && !kicked) || g->cfg.queue_max == 0)
        gio_kick_ex(g, false);
    if (err)
        return err;
    g->held = taken;
    int rc = 0;
    for (struct gq_fetch *f = taken; f && rc == 0; f = f->next) {
        if (f->member_id != member_id)
            continue;
        for (size_t i = 0; i < f->n_results && rc == 0; i++) {
            const struct gq_result *res = &f->results[i];
            if (res->dropped)
                continue;
            rc = gfetch_decode(res->data, res->len, res->d, res->nd, g->interned[res->topic],
                               res->partition, f->lease_deadline_ms, &g->dec);
        }
    }
    if (rc) {
        g->dec.n = 0;
        return rc;
    }
    gdecode_finish(&g->dec);
    if (g->cfg.auto_ack) {
        pthread_mutex_lock(&g->mu);
        note_runs(g, g->dec.msgs, g->dec.n);
        pthread_mutex_unlock(&g->mu);
    }
    *msgs_out = g->dec.msgs;
    *n_out = g->dec.n;
    return 0;
}

int verity_group_consume(struct verity_group_consumer *g, int timeout_ms,
                         verity_group_handler handler, void *opaque)
{
    const struct verity_group_message *m;
    size_t n;
    int rc = verity_group_poll(g, timeout_ms, &m, &n);
    if (rc)
        return rc;
    /* Consecutive ACK answers are acked together at the end of each run. */
    size_t run = 0;
    for (size_t i = 0; i < n; i++) {
        enum verity_group_action a = handler(opaque, &m[i]);
        if (a != VERITY_GROUP_ACTION_ACK) {
            if (i > run && (rc = verity_group_ack_many(g, &m[run], i - run)) != 0)
                return rc;
            run = i + 1;
            if (a == VERITY_GROUP_ACTION_NACK)
                rc = verity_group_nack(g, m[i].msg.topic, m[i].msg.partition, m[i].msg.offset, -1,
                                       "nacked by handler");
            else if (a == VERITY_GROUP_ACTION_TERM)
                rc = verity_group_term(g, m[i].msg.topic, m[i].msg.partition, m[i].msg.offset,
                                       "terminated by handler");
            if (rc)
                return rc;
        }
    }
    if (n > run && (rc = verity_group_ack_many(g, &m[run], n - run)) != 0)
        return rc;
    return (int)(n > INT32_MAX ? INT32_MAX : n);
}

void verity_group_consumer_free(struct verity_group_consumer *g, int timeout_ms)
{
    if (!g)
        return;
    VERITY_VERIFY(!cl_loop_in_thread(&g->loop));
    int64_t deadline = cl_mono_ms() + (timeout_ms < 0 ? 0 : timeout_ms);
    pthread_mutex_lock(&g->mu);
    bool joined = g->state == G_JOINED;
    pthread_mutex_unlock(&g->mu);
    if (joined && timeout_ms != 0) {
        /* Failed acks went to result_cb; leaving is right either way. */
        int rc = verity_group_commit(g, timeout_ms);
        (void)rc;
        int64_t left = deadline - cl_mono_ms();
        struct cl_wait w;
        cl_wait_init(&w);
        struct leave_job *j = malloc(sizeof *j);
        if (j) {
            j->g = g;
            j->w = &w;
            if (cl_loop_post(&g->loop, gio_leave_job, j) == 0) {
                /* A leave that is not answered in time is cut short by the
                 * stop below; the session then runs out at the broker. */
                rc = cl_wait_for(&w, timeout_ms < 0 ? -1 : left > 0 ? (int)left : 0);
                (void)rc;
            } else {
                free(j);
            }
        }
        /* Wait for the leave job's answer (or the stop) before w goes away:
         * stopping the loop fails the request and signals w. */
        cl_loop_stop(&g->loop);
        cl_wait_deinit(&w);
    } else {
        cl_loop_stop(&g->loop);
    }
    consumer_destroy(g);
}
