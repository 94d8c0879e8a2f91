/*
 * The I/O-thread side of verity_group_consumer (client/group_consumer.c has
 * the application's side; include/verity/group.h the contract;
 * docs/GROUPS.md and the group requests of docs/PROTOCOL.md the model).
 *
 * Threads. The I/O thread (cl_loop) owns the connection and every request:
 * JoinGroup, Heartbeat, GroupFetch, Ack, Nack, Extend, Term, LeaveGroup. The
 * application's threads queue acks into the tracker (client/group_track.c)
 * and nacks / extends / terms into `ops`, then wake the I/O thread (`kick`,
 * coalesced: one wake-up however many acks arrive meanwhile). The polling
 * thread takes fetched answers off `q` and decodes them. `mu` protects
 * everything marked (mu) in struct verity_group_consumer (client/group_int.h);
 * requests are sent without it, because a send that fails runs handlers
 * that take it.
 *
 * Member states (function performing the transition):
 *
 *   UNJOINED --pump: send JoinGroup--> JOINING
 *   JOINING --join_done ok--> JOINED
 *   JOINING --join_done: connection error--> UNJOINED (again once connected)
 *   JOINING --join_done: no such group, bad topic, ...--> FAILED
 *   JOINED --VERITY_EMEMBER on any request (member_lost)--> UNJOINED
 *   JOINED --group deleted (VERITY_ENOTFOUND on fetch)--> FAILED
 *   any --verity_group_consumer_free--> CLOSING
 *
 * Fetch pipeline: up to fetch_inflight GroupFetch requests are out while
 * fewer than queue_max messages wait to be polled (queue_max 0: one fetch,
 * only while a poll waits on an empty queue). Queued acks are sent before a
 * fetch, so the broker frees their pending slots first and they share the
 * TCP write, or at once when no fetch is due; with ack_linger_ms > 0 they
 * are gathered that long instead, whatever the fetches do.
 *
 * Answers are checked before anything is queued (client/group_fetch.c): a
 * result whose batches fail their CRC or do not hold every delivered
 * offset is dropped (its leases expire at the broker and come back) and
 * counted as a protocol error.
 *
 * Commit: every ack / nack / extend / term request has an increasing id and
 * sits in `outstanding` (ordered by id) until answered. A commit asks the
 * I/O thread to flush; once everything queued is in requests (or failed)
 * the I/O thread publishes a barrier (the last id used), and the commit
 * waits until no outstanding id is at or below it.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "client/group_int.h"
#include "verity/limits.h"
#include "verity/verify.h"

bool gio_closing(struct verity_group_consumer *g)
{
    pthread_mutex_lock(&g->mu);
    bool c = g->state == G_CLOSING;
    pthread_mutex_unlock(&g->mu);
    return c;
}

void gio_kick(struct verity_group_consumer *g)
{
    gio_kick_ex(g, true);
}

void gio_kick_ex(struct verity_group_consumer *g, bool nudge)
{
    pthread_mutex_lock(&g->mu);
    bool was = g->kick_pending;
    g->kick_pending = true;
    pthread_mutex_unlock(&g->mu);
    if (!was) {
        event_active(g->kick_ev, 0, 0);
        if (nudge)
            cl_loop_nudge(&g->loop); /* a loop lent to an absent poll comes back */
    }
}

void gio_on_lent(void *arg)
{
    struct verity_group_consumer *g = arg;
    pthread_mutex_lock(&g->mu);
    pthread_cond_broadcast(&g->cv);
    pthread_mutex_unlock(&g->mu);
}

/* ---- topics ------------------------------------------------------------- */

/* Index of topic name in the interned table, adding it (mu). -1 when the
 * table is full or memory runs out. */
int gio_intern(struct verity_group_consumer *g, const char *name)
{
    for (uint32_t i = 0; i < g->n_interned; i++)
        if (strcmp(g->interned[i], name) == 0)
            return (int)i;
    if (g->n_interned == GC_TOPICS_MAX)
        return -1;
    char *s = strdup(name);
    if (!s)
        return -1;
    g->interned[g->n_interned] = s;
    return (int)g->n_interned++;
}

/* Index of an interned topic (pointer or name), -1 when unknown (mu). */
int gio_topic_index(struct verity_group_consumer *g, const char *name)
{
    for (uint32_t i = 0; i < g->n_interned; i++)
        if (g->interned[i] == name)
            return (int)i;
    for (uint32_t i = 0; i < g->n_interned; i++)
        if (strcmp(g->interned[i], name) == 0)
            return (int)i;
    return -1;
}

/* ---- commit accounting (mu) -------------------------------------------- */

static void out_add(struct verity_group_consumer *g, struct greq *r)
{
    r->id = ++g->next_id;
    r->next = NULL;
    r->prev = g->out_tail;
    if (g->out_tail)
        g->out_tail->next = r;
    else
        g->out_head = r;
    g->out_tail = r;
}

/* Adds s right before `as`, under the same id: a request that replaces
 * part of another (a failed ack resent item by item) keeps the place of
 * the original, so a commit made after the original waits for it too. */
static void out_add_as(struct verity_group_consumer *g, struct greq *s, const struct greq *as)
{
    VERITY_VERIFY(as->id != 0);
    s->id = as->id;
    s->next = (struct greq *)as;
    s->prev = as->prev;
    if (as->prev)
        as->prev->next = s;
    else
        g->out_head = s;
    ((struct greq *)as)->prev = s;
}

static void out_remove(struct verity_group_consumer *g, struct greq *r)
{
    if (!r->id)
        return;
    if (r->prev)
        r->prev->next = r->next;
    else
        g->out_head = r->next;
    if (r->next)
        r->next->prev = r->prev;
    else
        g->out_tail = r->prev;
    r->prev = r->next = NULL;
    pthread_cond_broadcast(&g->cv);
}

/* Remembers a failure for the commits that cover id. */
static void err_note(struct verity_group_consumer *g, uint64_t id, int err)
{
    if (g->n_errs < GC_ERRS_MAX)
        g->errs[g->n_errs++] = (struct gerr){id, err};
    pthread_cond_broadcast(&g->cv);
}

/* ---- reporting ----------------------------------------------------------- */

/* Reports count messages from lo to result_cb (no lock held). */
static void report(struct verity_group_consumer *g, enum verity_group_op op, int err,
                   const char *topic, uint32_t partition, uint64_t lo, uint64_t count,
                   bool dead_lettered, int64_t deadline)
{
    if (!g->cfg.result_cb)
        return;
    while (count > 0) {
        uint32_t n = count > UINT32_MAX ? UINT32_MAX : (uint32_t)count;
        struct verity_group_result r = {op, topic, partition, lo, n, dead_lettered, deadline};
        g->cfg.result_cb(g->cfg.opaque, err, &r);
        lo += n;
        count -= n;
    }
}

/* Reports [lo, hi) of a successful ack: VERITY_EALREADY for the offsets
 * the broker named as done before (they did not count), 0 for the rest. */
static void report_ack_range(struct verity_group_consumer *g, const char *topic,
                             uint32_t partition, uint64_t lo, uint64_t hi,
                             const Verity__AckResponse *resp)
{
    while (lo < hi) {
        /* The nearest already span that ends above lo. */
        uint64_t a_lo = UINT64_MAX, a_hi = UINT64_MAX;
        for (size_t k = 0; resp && k < resp->n_already; k++) {
            const Verity__GroupAckRange *a = resp->already[k];
            uint64_t s = a->first_offset, e = s + (a->count ? a->count : 1);
            if (a->partition != partition || strcmp(a->topic, topic) != 0 || e <= lo || s >= hi)
                continue;
            if (s < a_lo) {
                a_lo = s;
                a_hi = e;
            }
        }
        if (a_lo == UINT64_MAX) {
            report(g, VERITY_GROUP_OP_ACK, 0, topic, partition, lo, hi - lo, false, 0);
            return;
        }
        if (a_lo > lo)
            report(g, VERITY_GROUP_OP_ACK, 0, topic, partition, lo, a_lo - lo, false, 0);
        uint64_t s = a_lo > lo ? a_lo : lo, e = a_hi < hi ? a_hi : hi;
        report(g, VERITY_GROUP_OP_ACK, VERITY_EALREADY, topic, partition, s, e - s, false, 0);
        lo = e;
    }
}

/* Reports every application ack the items stand for; resp (may be NULL)
 * is the broker's answer when err is 0. */
static void report_items(struct verity_group_consumer *g, int err, const struct gack_item *it,
                         size_t n, const Verity__AckResponse *resp)
{
    for (size_t i = 0; i < n; i++) {
        const char *topic = g->interned[it[i].topic]; /* never removed */
        size_t parts = it[i].upto ? it[i].n_report : 1;
        for (size_t k = 0; k < parts; k++) {
            uint64_t lo = it[i].upto ? it[i].report[k].lo : it[i].lo;
            uint64_t hi = it[i].upto ? it[i].report[k].hi : it[i].hi;
            if (err == 0 && g->cfg.result_cb)
                report_ack_range(g, topic, it[i].partition, lo, hi, resp);
            else
                report(g, VERITY_GROUP_OP_ACK, err, topic, it[i].partition, lo, hi - lo, false,
                       0);
        }
    }
}

/* ---- requests ------------------------------------------------------------ */

static void greq_free(struct greq *r)
{
    gack_items_free(r->items, r->n_items);
    free(r);
}

static void request_done(void *arg, int err, const char *msg, const Verity__Envelope *env,
                         uint8_t **payload, size_t payload_len);

/* Sends env for r (loop thread, mu not held). On a send error the handler
 * runs with that error. */
static void send_req(struct verity_group_consumer *g, struct greq *r, Verity__Envelope *env,
                     uint32_t extra_ms, unsigned flags)
{
    int rc = conn_request(g->conn, env, NULL, 0, extra_ms, flags, request_done, r);
    if (rc)
        request_done(r, rc, verity_strerror(rc), NULL, NULL, 0);
}

static struct greq *greq_new(struct verity_group_consumer *g, enum greq_kind kind,
                             uint64_t member_id)
{
    struct greq *r = calloc(1, sizeof *r);
    if (r) {
        r->g = g;
        r->kind = kind;
        r->member_id = member_id;
    }
    return r;
}

static void send_join(struct verity_group_consumer *g)
{
    struct greq *r = greq_new(g, GR_JOIN, 0);
    if (!r)
        return;
    pthread_mutex_lock(&g->mu);
    g->state = G_JOINING;
    pthread_mutex_unlock(&g->mu);
    Verity__Envelope env = VERITY__ENVELOPE__INIT;
    Verity__JoinGroupRequest q = VERITY__JOIN_GROUP_REQUEST__INIT;
    q.group = g->group;
    q.member_name = g->member_name;
    q.topics = g->topics;
    q.n_topics = g->cfg.n_topics;
    q.session_ms = g->cfg.session_ms;
    env.body_case = VERITY__ENVELOPE__BODY_JOIN_GROUP_REQ;
    env.join_group_req = &q;
    g->last_member_req_ms = cl_mono_ms();
    send_req(g, r, &env, 0, CONN_RETRY_ON_RESET);
}

static void send_heartbeat(struct verity_group_consumer *g, uint64_t member_id)
{
    struct greq *r = greq_new(g, GR_HEARTBEAT, member_id);
    if (!r)
        return;
    Verity__Envelope env = VERITY__ENVELOPE__INIT;
    Verity__HeartbeatRequest q = VERITY__HEARTBEAT_REQUEST__INIT;
    q.group = g->group;
    q.member_id = member_id;
    env.body_case = VERITY__ENVELOPE__BODY_HEARTBEAT_REQ;
    env.heartbeat_req = &q;
    g->hb_inflight = true;
    g->hb_now = false;
    g->last_member_req_ms = cl_mono_ms();
    send_req(g, r, &env, 0, 0);
}

static void send_fetch(struct verity_group_consumer *g, uint64_t member_id)
{
    struct greq *r = greq_new(g, GR_FETCH, member_id);
    if (!r)
        return;
    Verity__Envelope env = VERITY__ENVELOPE__INIT;
    Verity__GroupFetchRequest q = VERITY__GROUP_FETCH_REQUEST__INIT;
    q.group = g->group;
    q.member_id = member_id;
    q.max_messages = g->cfg.fetch_max;
    q.max_bytes = g->cfg.fetch_max_bytes;
    q.max_wait_ms = g->cfg.fetch_max_wait_ms;
    env.body_case = VERITY__ENVELOPE__BODY_GROUP_FETCH_REQ;
    env.group_fetch_req = &q;
    g->fetch_inflight++;
    g->last_member_req_ms = cl_mono_ms();
    send_req(g, r, &env, g->cfg.fetch_max_wait_ms, 0);
}

/* Encodes and sends one Ack request for r->items (loop thread). */
static void send_ack(struct verity_group_consumer *g, struct greq *r)
{
    size_t n_ranges = 0, n_upto = 0;
    for (size_t i = 0; i < r->n_items; i++) {
        if (r->items[i].upto)
            n_upto++;
        else
            n_ranges += (size_t)((r->items[i].hi - r->items[i].lo + UINT32_MAX - 1) / UINT32_MAX);
    }
    Verity__GroupAckRange *ranges = calloc(n_ranges ? n_ranges : 1, sizeof *ranges);
    Verity__GroupAckRange **rp = calloc(n_ranges ? n_ranges : 1, sizeof *rp);
    Verity__GroupPartitionOffset *upto = calloc(n_upto ? n_upto : 1, sizeof *upto);
    Verity__GroupPartitionOffset **up = calloc(n_upto ? n_upto : 1, sizeof *up);
    uint64_t *from = calloc(n_upto ? n_upto : 1, sizeof *from);
    if (!ranges || !rp || !upto || !up || !from) {
        free(ranges);
        free(rp);
        free(upto);
        free(up);
        free(from);
        request_done(r, -ENOMEM, NULL, NULL, NULL, 0);
        return;
    }
    size_t nr = 0, nu = 0;
    for (size_t i = 0; i < r->n_items; i++) {
        const struct gack_item *it = &r->items[i];
        char *topic = g->interned[it->topic];
        if (it->upto) {
            verity__group_partition_offset__init(&upto[nu]);
            upto[nu].topic = topic;
            upto[nu].partition = it->partition;
            upto[nu].offset = it->hi - 1;
            from[nu] = it->lo; /* the broker names what was done before, from here */
            up[nu] = &upto[nu];
            nu++;
            continue;
        }
        for (uint64_t lo = it->lo; lo < it->hi;) {
            uint64_t n = it->hi - lo > UINT32_MAX ? UINT32_MAX : it->hi - lo;
            verity__group_ack_range__init(&ranges[nr]);
            ranges[nr].topic = topic;
            ranges[nr].partition = it->partition;
            ranges[nr].first_offset = lo;
            ranges[nr].count = (uint32_t)n;
            rp[nr] = &ranges[nr];
            nr++;
            lo += n;
        }
    }
    Verity__Envelope env = VERITY__ENVELOPE__INIT;
    Verity__AckRequest q = VERITY__ACK_REQUEST__INIT;
    q.group = g->group;
    q.member_id = r->member_id;
    q.ranges = rp;
    q.n_ranges = nr;
    q.upto = up;
    q.n_upto = nu;
    q.upto_from = from;
    q.n_upto_from = nu;
    env.body_case = VERITY__ENVELOPE__BODY_ACK_REQ;
    env.ack_req = &q;
    g->last_member_req_ms = cl_mono_ms();
    send_req(g, r, &env, 0, CONN_RETRY_ON_RESET);
    free(ranges);
    free(rp);
    free(upto);
    free(up);
    free(from);
}

static void send_op(struct verity_group_consumer *g, struct greq *r, const struct gop *op)
{
    Verity__Envelope env = VERITY__ENVELOPE__INIT;
    Verity__NackRequest nq = VERITY__NACK_REQUEST__INIT;
    Verity__TermRequest tq = VERITY__TERM_REQUEST__INIT;
    Verity__ExtendRequest xq = VERITY__EXTEND_REQUEST__INIT;
    Verity__GroupAckRange xr = VERITY__GROUP_ACK_RANGE__INIT;
    Verity__GroupAckRange *xrp = &xr;
    char *topic = g->interned[op->topic];
    unsigned flags = 0;
    switch (op->kind) {
    case GR_NACK:
        nq.group = g->group;
        nq.member_id = r->member_id;
        nq.topic = topic;
        nq.partition = op->partition;
        nq.offset = op->offset;
        nq.delay_ms = op->delay_ms;
        nq.error = op->error ? op->error : "";
        env.body_case = VERITY__ENVELOPE__BODY_NACK_REQ;
        env.nack_req = &nq;
        break;
    case GR_TERM:
        tq.group = g->group;
        tq.member_id = r->member_id;
        tq.topic = topic;
        tq.partition = op->partition;
        tq.offset = op->offset;
        tq.error = op->error ? op->error : "";
        env.body_case = VERITY__ENVELOPE__BODY_TERM_REQ;
        env.term_req = &tq;
        break;
    default:
        xr.topic = topic;
        xr.partition = op->partition;
        xr.first_offset = op->offset;
        xr.count = 1;
        xq.group = g->group;
        xq.member_id = r->member_id;
        xq.ranges = &xrp;
        xq.n_ranges = 1;
        env.body_case = VERITY__ENVELOPE__BODY_EXTEND_REQ;
        env.extend_req = &xq;
        flags = CONN_RETRY_ON_RESET; /* an extend twice is an extend */
        break;
    }
    g->last_member_req_ms = cl_mono_ms();
    send_req(g, r, &env, 0, flags);
}

/* ---- member lost / joined ------------------------------------------------ */

void gio_op_free(struct gop *op)
{
    free(op->error);
    free(op);
}

void gio_fetch_free(struct gq_fetch *f)
{
    while (f) {
        struct gq_fetch *next = f->next;
        if (f->results)
            for (size_t i = 0; i < f->n_results; i++)
                free(f->results[i].d);
        free(f->results);
        free(f->payload);
        free(f);
        f = next;
    }
}

/*
 * The broker no longer knows member_id (session ran out, group reset) or the
 * member is being closed: queued acks and ops are reported failed with err,
 * unpolled answers are dropped, and (unless failing or gio_closing) the member
 * joins again. Loop thread.
 */
static void member_lost(struct verity_group_consumer *g, uint64_t member_id, int err)
{
    pthread_mutex_lock(&g->mu);
    if (g->member_id != member_id || (g->state != G_JOINED && g->state != G_JOINING)) {
        pthread_mutex_unlock(&g->mu);
        return;
    }
    struct gack_item *items = NULL;
    size_t n = 0;
    if (gtrack_take(&g->track, SIZE_MAX, UINT64_MAX, &items, &n) != 0)
        n = 0;
    gtrack_reset(&g->track);
    struct gop *ops = g->ops_head;
    g->ops_head = g->ops_tail = NULL;
    struct gq_fetch *q = g->q_head;
    g->q_head = g->q_tail = NULL;
    g->q_msgs = 0;
    g->member_id = 0;
    g->state = G_UNJOINED;
    uint64_t id = ++g->next_id;
    if (n || ops)
        err_note(g, id, err);
    pthread_mutex_unlock(&g->mu);
    report_items(g, err, items, n, NULL);
    gack_items_free(items, n);
    while (ops) {
        struct gop *next = ops->next;
        static const enum verity_group_op kinds[] = {[GR_NACK] = VERITY_GROUP_OP_NACK,
                                                     [GR_TERM] = VERITY_GROUP_OP_TERM,
                                                     [GR_EXTEND] = VERITY_GROUP_OP_EXTEND};
        report(g, kinds[ops->kind], err, g->interned[ops->topic], ops->partition, ops->offset, 1,
               false, 0);
        gio_op_free(ops);
        ops = next;
    }
    gio_fetch_free(q);
}

static void fail_member(struct verity_group_consumer *g, int err)
{
    pthread_mutex_lock(&g->mu);
    if (g->state != G_CLOSING) {
        g->state = G_FAILED;
        g->fatal = err;
    }
    pthread_cond_broadcast(&g->cv);
    pthread_mutex_unlock(&g->mu);
}

/* Ordered mode: applies an assignment (mu held). Partitions no longer assigned lose their tracking and their
 * unpolled messages (the broker returned those leases). */
static void apply_assignment(struct verity_group_consumer *g, Verity__GroupPartition *const *a,
                             size_t n)
{
    if (!g->ordered)
        return;
    for (uint32_t i = 0; i < g->track.cap; i++)
        if (g->track.parts[i])
            g->track.parts[i]->assigned = false;
    for (size_t i = 0; i < n; i++) {
        if (!a[i]->topic)
            continue;
        int t = gio_intern(g, a[i]->topic);
        struct gtrack_part *p = t < 0 ? NULL : gtrack_part(&g->track, (uint32_t)t,
                                                           a[i]->partition, true);
        if (p)
            p->assigned = true;
    }
    gtrack_drop_unassigned(&g->track);
    for (struct gq_fetch *f = g->q_head; f; f = f->next) {
        for (size_t i = 0; i < f->n_results; i++) {
            struct gq_result *res = &f->results[i];
            struct gtrack_part *p = gtrack_part(&g->track, res->topic, res->partition, false);
            if (!res->dropped && (!p || !p->assigned)) {
                res->dropped = true;
                for (size_t k = 0; k < res->nd; k++) {
                    uint64_t c = res->d[k].count;
                    g->q_msgs -= c < g->q_msgs ? c : g->q_msgs;
                }
            }
        }
    }
}

static void call_member_cb(struct verity_group_consumer *g, uint64_t member_id, uint32_t gen,
                           Verity__GroupPartition *const *a, size_t n)
{
    if (!g->cfg.member_cb)
        return;
    struct verity_group_offset *o = calloc(n ? n : 1, sizeof *o);
    if (!o)
        return;
    for (size_t i = 0; i < n; i++) {
        o[i].topic = a[i]->topic;
        o[i].partition = a[i]->partition;
    }
    g->cfg.member_cb(g->cfg.opaque, member_id, gen, o, n);
    free(o);
}

/* ---- answers --------------------------------------------------------------- */

static void join_done(struct verity_group_consumer *g, int err, const Verity__Envelope *env)
{
    if (err == 0) {
        const Verity__JoinGroupResponse *j = env->join_group_resp;
        pthread_mutex_lock(&g->mu);
        bool joining = g->state == G_JOINING;
        if (joining) {
            g->member_id = j->member_id;
            g->generation = g->gen_seen = j->generation;
            g->ordered = j->mode == VERITY__GROUP_MODE__GROUP_MODE_ORDERED;
            g->track.ordered = g->ordered;
            g->mode_known = true;
            g->lease_ms = j->lease_ms;
            g->session_ms = j->session_ms;
            apply_assignment(g, j->assignment, j->n_assignment);
        }
        pthread_mutex_unlock(&g->mu);
        if (!joining)
            return;
        /* The callback runs before verity_group_connect returns. */
        call_member_cb(g, j->member_id, j->generation, j->assignment, j->n_assignment);
        pthread_mutex_lock(&g->mu);
        if (g->state == G_JOINING)
            g->state = G_JOINED;
        pthread_cond_broadcast(&g->cv);
        pthread_mutex_unlock(&g->mu);
        return;
    }
    pthread_mutex_lock(&g->mu);
    bool was_joining = g->state == G_JOINING;
    if (was_joining)
        g->state = G_UNJOINED;
    pthread_mutex_unlock(&g->mu);
    if (!was_joining)
        return;
    /* Connection trouble and a broker on its way down are retried once the
     * connection is back; everything else the broker says is final. */
    if (!(err > -4096 || err == VERITY_ECLOSED || err == VERITY_ETIMEOUT))
        fail_member(g, err);
    else
        g->retry_at_ms = cl_mono_ms() + GC_RETRY_MS;
}

static void heartbeat_done(struct verity_group_consumer *g, struct greq *r, int err,
                           const Verity__Envelope *env)
{
    g->hb_inflight = false;
    if (err == VERITY_EMEMBER) {
        member_lost(g, r->member_id, err);
        return;
    }
    if (err == VERITY_ENOTFOUND) {
        fail_member(g, err);
        return;
    }
    if (err)
        return;
    const Verity__HeartbeatResponse *h = env->heartbeat_resp;
    pthread_mutex_lock(&g->mu);
    /* An answer older than a generation a fetch already showed would undo
     * a newer assignment: ask again instead. */
    bool current = g->member_id == r->member_id && h->generation >= g->gen_seen;
    bool changed = current && h->generation != g->generation;
    if (current) {
        g->generation = g->gen_seen = h->generation;
        apply_assignment(g, h->assignment, h->n_assignment);
    } else if (g->member_id == r->member_id) {
        g->hb_now = g->ordered;
    }
    pthread_mutex_unlock(&g->mu);
    if (changed)
        call_member_cb(g, r->member_id, h->generation, h->assignment, h->n_assignment);
}

/* Checks one fetch answer and builds its queue entry. Returns 0 with *out
 * (NULL when nothing was delivered) or an error. mu not held. */
static int fetch_build(const Verity__GroupFetchResponse *resp, uint8_t **payload,
                       size_t payload_len, struct gq_fetch **out, uint64_t *bad)
{
    *out = NULL;
    size_t sum = 0;
    for (size_t i = 0; i < resp->n_results; i++) {
        if (!resp->results[i]->topic)
            return VERITY_EPROTO;
        sum += resp->results[i]->records_bytes;
    }
    if (sum != payload_len)
        return VERITY_EPROTO;
    struct gq_fetch *f = calloc(1, sizeof *f);
    if (!f)
        return -ENOMEM;
    f->results = calloc(resp->n_results ? resp->n_results : 1, sizeof *f->results);
    if (!f->results) {
        free(f);
        return -ENOMEM;
    }
    f->lease_deadline_ms = resp->lease_deadline_ms;
    size_t pos = 0;
    const uint8_t *data = payload_len ? *payload : NULL;
    for (size_t i = 0; i < resp->n_results; i++) {
        const Verity__GroupFetchResult *x = resp->results[i];
        struct gq_result *res = &f->results[f->n_results];
        const uint8_t *bytes = data ? data + pos : NULL;
        pos += x->records_bytes;
        if (x->error || x->n_ranges == 0)
            continue;
        res->d = calloc(x->n_ranges, sizeof *res->d);
        if (!res->d) {
            gio_fetch_free(f);
            return -ENOMEM;
        }
        uint64_t msgs = 0;
        for (size_t k = 0; k < x->n_ranges; k++) {
            res->d[k].first = x->ranges[k]->first_offset;
            res->d[k].count = x->ranges[k]->count;
            res->d[k].delivery_count = x->ranges[k]->delivery_count;
            msgs += x->ranges[k]->count;
        }
        res->nd = x->n_ranges;
        if (gfetch_check(bytes, x->records_bytes, res->d, res->nd) != 0 ||
            msgs > VERITY_GROUP_FETCH_MAX) {
            /* Malformed: drop it; its leases run out at the broker. */
            free(res->d);
            res->d = NULL;
            res->nd = 0;
            (*bad)++;
            continue;
        }
        res->partition = x->partition;
        res->wire_topic = x->topic;
        res->data = bytes;
        res->len = x->records_bytes;
        f->messages += (uint32_t)msgs;
        f->n_results++;
    }
    if (f->n_results == 0) {
        gio_fetch_free(f);
        return 0;
    }
    f->payload = *payload;
    *payload = NULL;
    *out = f;
    return 0;
}

static void fetch_done(struct verity_group_consumer *g, struct greq *r, int err,
                       const Verity__Envelope *env, uint8_t **payload, size_t payload_len)
{
    g->fetch_inflight--;
    struct gq_fetch *f = NULL;
    uint64_t bad = 0;
    const Verity__GroupFetchResponse *resp = err == 0 ? env->group_fetch_resp : NULL;
    if (resp)
        err = fetch_build(resp, payload, payload_len, &f, &bad);
    if (err == VERITY_EMEMBER) {
        member_lost(g, r->member_id, err);
        return;
    }
    if (err == VERITY_ENOTFOUND) {
        fail_member(g, err);
        return;
    }
    if (err) {
        /* Pending limit, connection trouble, a malformed answer: ask again
         * a little later. */
        g->retry_at_ms = cl_mono_ms() + GC_RETRY_MS;
        return;
    }
    pthread_mutex_lock(&g->mu);
    g->proto_errors += bad;
    bool current = g->member_id == r->member_id;
    if (current && resp->generation > g->gen_seen) {
        /* A rebalance we have not seen the assignment of: ask for it. */
        g->gen_seen = resp->generation;
        g->hb_now = g->ordered;
    }
    if (f && current && g->state == G_JOINED) {
        f->member_id = r->member_id;
        /* Record what we hold before anyone can ack it. */
        for (size_t k = 0; k < f->n_results; k++) {
            struct gq_result *res = &f->results[k];
            int t = gio_intern(g, res->wire_topic);
            struct gtrack_part *p =
                t < 0 ? NULL : gtrack_part(&g->track, (uint32_t)t, res->partition, true);
            res->wire_topic = NULL;
            if (p && g->ordered && !p->assigned) {
                /* Delivered at a generation no older than the assignment we
                 * know: the broker's word is newer, the partition is ours.
                 * Older: it moved away since, and its leases went with it. */
                if (resp->generation >= g->generation)
                    p->assigned = true;
                else
                    res->dropped = true;
            }
            if (res->dropped && p)
                gtrack_lost(&g->track, p);
            int rc = p ? 0 : -ENOMEM;
            for (size_t d = 0; d < res->nd && rc == 0 && !res->dropped; d++)
                rc = gtrack_delivered(&g->track, p, res->d[d].first,
                                      res->d[d].first + res->d[d].count);
            if (rc) {
                /* Cannot track it (too many topic names, no memory): hand it
                 * to nobody; the lease runs out at the broker, which keeps
                 * this member as its last holder: no cumulative ack may
                 * cover it. */
                res->dropped = true;
                gtrack_lost(&g->track, p);
            } else if (p) {
                res->topic = (uint32_t)t;
            }
        }
        for (size_t i = 0; i < f->n_results; i++)
            if (!f->results[i].dropped)
                for (size_t d = 0; d < f->results[i].nd; d++)
                    g->q_msgs += f->results[i].d[d].count;
        if (g->q_tail)
            g->q_tail->next = f;
        else
            g->q_head = f;
        g->q_tail = f;
        f = NULL;
        pthread_cond_broadcast(&g->cv);
    }
    pthread_mutex_unlock(&g->mu);
    gio_fetch_free(f);
}

/* Failed multi-item acks are resent item by item so each message gets its
 * own answer (an Ack request is all or none). */
static bool ack_splittable(int err)
{
    return err == VERITY_ELEASE || err == VERITY_EOFFSET || err == VERITY_EINVAL;
}

static void ack_done(struct verity_group_consumer *g, struct greq *r, int err,
                     const Verity__Envelope *env)
{
    if (err && !r->single && ack_splittable(err) && (r->n_items > 1 || r->items[0].upto)) {
        for (size_t i = 0; i < r->n_items; i++) {
            const struct gack_item *it = &r->items[i];
            size_t parts = it->upto ? it->n_report : 1;
            for (size_t k = 0; k < parts; k++) {
                struct greq *s = greq_new(g, GR_ACK, r->member_id);
                struct gack_item *one = s ? calloc(1, sizeof *one) : NULL;
                if (!one) {
                    free(s);
                    report(g, VERITY_GROUP_OP_ACK, -ENOMEM, g->interned[it->topic],
                           it->partition, it->upto ? it->report[k].lo : it->lo,
                           it->upto ? it->report[k].hi - it->report[k].lo : it->hi - it->lo,
                           false, 0);
                    continue;
                }
                *one = (struct gack_item){it->topic, it->partition, false,
                                          it->upto ? it->report[k].lo : it->lo,
                                          it->upto ? it->report[k].hi : it->hi, NULL, 0};
                s->items = one;
                s->n_items = 1;
                s->single = true;
                pthread_mutex_lock(&g->mu);
                out_add_as(g, s, r);
                pthread_mutex_unlock(&g->mu);
                send_ack(g, s);
            }
        }
        return;
    }
    if (err) {
        pthread_mutex_lock(&g->mu);
        err_note(g, r->id, err);
        pthread_mutex_unlock(&g->mu);
    }
    report_items(g, err, r->items, r->n_items, err == 0 && env ? env->ack_resp : NULL);
    if (err == VERITY_EMEMBER)
        member_lost(g, r->member_id, err);
}

static void op_done(struct verity_group_consumer *g, struct greq *r, int err,
                    const Verity__Envelope *env)
{
    enum verity_group_op op = r->kind == GR_NACK   ? VERITY_GROUP_OP_NACK
                              : r->kind == GR_TERM ? VERITY_GROUP_OP_TERM
                                                   : VERITY_GROUP_OP_EXTEND;
    bool dead = err == 0 && r->kind == GR_NACK && env->nack_resp->dead_lettered;
    int64_t deadline = err == 0 && r->kind == GR_EXTEND ? env->extend_resp->lease_deadline_ms : 0;
    if (err) {
        pthread_mutex_lock(&g->mu);
        err_note(g, r->id, err);
        pthread_mutex_unlock(&g->mu);
    }
    report(g, op, err, g->interned[r->topic], r->partition, r->offset, 1, dead, deadline);
    if (err == VERITY_EMEMBER)
        member_lost(g, r->member_id, err);
}

static void request_done(void *arg, int err, const char *msg, const Verity__Envelope *env,
                         uint8_t **payload, size_t payload_len)
{
    struct greq *r = arg;
    struct verity_group_consumer *g = r->g;
    (void)msg;
    switch (r->kind) {
    case GR_JOIN:
        join_done(g, err, env);
        break;
    case GR_HEARTBEAT:
        heartbeat_done(g, r, err, env);
        break;
    case GR_LEAVE:
        if (r->wait)
            cl_wait_signal(r->wait, err, msg);
        break;
    case GR_FETCH:
        fetch_done(g, r, err, env, payload, payload_len);
        break;
    case GR_ACK:
        ack_done(g, r, err, env);
        break;
    default:
        op_done(g, r, err, env);
        break;
    }
    pthread_mutex_lock(&g->mu);
    out_remove(g, r);
    pthread_mutex_unlock(&g->mu);
    greq_free(r);
    if (!gio_closing(g))
        gio_pump(g);
}

/* ---- the pump (loop thread) ------------------------------------------------- */

/* Turns queued acks into Ack requests (at most max_reqs). Returns the
 * number sent. */
static size_t flush_acks(struct verity_group_consumer *g, uint64_t member_id, size_t max_reqs)
{
    size_t sent = 0;
    while (sent < max_reqs) {
        struct gack_item *items = NULL;
        size_t n = 0;
        pthread_mutex_lock(&g->mu);
        int rc = gtrack_take(&g->track, GC_ACK_ITEMS_MAX, GC_ACK_OFFSETS_MAX, &items, &n);
        struct greq *r = NULL;
        if (rc == 0 && n) {
            r = greq_new(g, GR_ACK, member_id);
            if (r) {
                r->items = items;
                r->n_items = n;
                out_add(g, r);
            }
        }
        pthread_mutex_unlock(&g->mu);
        if (rc || n == 0)
            break;
        if (!r) {
            report_items(g, -ENOMEM, items, n, NULL);
            gack_items_free(items, n);
            break;
        }
        send_ack(g, r);
        sent++;
    }
    g->ack_due_ms = INT64_MAX;
    return sent;
}

static void flush_ops(struct verity_group_consumer *g, uint64_t member_id)
{
    for (;;) {
        pthread_mutex_lock(&g->mu);
        struct gop *op = g->ops_head;
        if (op) {
            g->ops_head = op->next;
            if (!g->ops_head)
                g->ops_tail = NULL;
        }
        struct greq *r = op ? greq_new(g, op->kind, member_id) : NULL;
        if (r) {
            r->topic = op->topic;
            r->partition = op->partition;
            r->offset = op->offset;
            out_add(g, r);
        }
        pthread_mutex_unlock(&g->mu);
        if (!op)
            return;
        if (r)
            send_op(g, r, op);
        gio_op_free(op);
    }
}

static void arm_timer(struct verity_group_consumer *g, int64_t at, int64_t now)
{
    if (at == INT64_MAX)
        return;
    int64_t ms = at > now ? at - now : 0;
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    evtimer_add(g->timer_ev, &tv);
}

void gio_pump(struct verity_group_consumer *g)
{
    int64_t now = cl_mono_ms();
    if (!g->conn || !conn_ready(g->conn))
        return;
    pthread_mutex_lock(&g->mu);
    enum gstate st = g->left ? G_CLOSING : g->state;
    uint64_t member_id = g->member_id;
    bool ops = g->ops_head != NULL;
    bool acks = g->track.acked_total > 0;
    bool flush = g->flush_want != g->flush_done;
    bool want_fetch = g->cfg.queue_max ? g->q_msgs < g->cfg.queue_max
                                       : g->poll_waiting && g->q_head == NULL;
    int64_t session = g->cfg.session_ms ? g->cfg.session_ms : g->session_ms;
    pthread_mutex_unlock(&g->mu);

    int64_t next = INT64_MAX;
    if (st == G_UNJOINED) {
        if (g->retry_at_ms > now)
            arm_timer(g, g->retry_at_ms, now);
        else
            send_join(g);
        return;
    }
    if (st != G_JOINED)
        return;
    if (ops)
        flush_ops(g, member_id);
    bool fetch_now = want_fetch && g->fetch_inflight < g->cfg.fetch_inflight &&
                     g->retry_at_ms <= now;
    if (acks && g->ack_due_ms == INT64_MAX)
        g->ack_due_ms = now + g->cfg.ack_linger_ms;
    if (acks && ((fetch_now && g->cfg.ack_linger_ms == 0) || flush || g->ack_due_ms <= now))
        flush_acks(g, member_id, SIZE_MAX);
    if (flush) {
        pthread_mutex_lock(&g->mu);
        if (g->track.acked_total == 0 && g->ops_head == NULL) {
            g->flush_done = g->flush_want;
            g->flush_barrier = g->next_id;
            pthread_cond_broadcast(&g->cv);
        }
        pthread_mutex_unlock(&g->mu);
    }
    if (fetch_now)
        send_fetch(g, member_id);
    else if (want_fetch && g->retry_at_ms > now && g->retry_at_ms < next)
        next = g->retry_at_ms;
    if (g->ack_due_ms < next)
        next = g->ack_due_ms;

    int64_t hb_ms = g->cfg.heartbeat_ms > 0 ? g->cfg.heartbeat_ms
                    : session > 0           ? session / 3
                                            : 10000;
    if (hb_ms < 10)
        hb_ms = 10;
    if (!g->hb_inflight && (g->hb_now || now - g->last_member_req_ms >= hb_ms)) {
        send_heartbeat(g, member_id);
        /* A heartbeat is due again hb_ms after this one. */
    }
    int64_t hb_at = g->last_member_req_ms + hb_ms;
    if (hb_at < next)
        next = hb_at;
    arm_timer(g, next, now);
}

void gio_kick_cb(evutil_socket_t fd, short what, void *arg)
{
    struct verity_group_consumer *g = arg;
    (void)fd;
    (void)what;
    pthread_mutex_lock(&g->mu);
    g->kick_pending = false;
    bool c = g->state == G_CLOSING;
    pthread_mutex_unlock(&g->mu);
    if (!c)
        gio_pump(g);
}

void gio_timer_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    if (!gio_closing(arg))
        gio_pump(arg);
}

static void on_ready(void *arg)
{
    struct verity_group_consumer *g = arg;
    pthread_mutex_lock(&g->mu);
    g->ready = true;
    g->conn_err = 0;
    pthread_cond_broadcast(&g->cv);
    pthread_mutex_unlock(&g->mu);
    g->retry_at_ms = 0;
    gio_pump(g);
}

static void on_down(void *arg, int err)
{
    struct verity_group_consumer *g = arg;
    pthread_mutex_lock(&g->mu);
    g->ready = false;
    g->conn_err = err;
    /* A whole round of the bootstrap list failed: not a move to the
     * primary a NOT_LEADER named (a cluster's group coordinator), nor one
     * address of the list refusing while the others are still to try. */
    if (err != VERITY_ENOTLEADER && !(g->conn && conn_rotating(g->conn)))
        g->conn_failures++;
    pthread_cond_broadcast(&g->cv);
    pthread_mutex_unlock(&g->mu);
}

const struct conn_events gio_events = {on_ready, on_down};

/* ---- lifecycle ------------------------------------------------------------ */

void gio_start_job(void *arg)
{
    struct verity_group_consumer *g = arg;
    conn_start(g->conn);
}

void gio_stop_job(void *arg)
{
    struct verity_group_consumer *g = arg;
    pthread_mutex_lock(&g->mu);
    g->state = G_CLOSING;
    pthread_mutex_unlock(&g->mu);
    conn_free(g->conn);
    g->conn = NULL;
    if (g->kick_ev)
        event_free(g->kick_ev);
    if (g->timer_ev)
        event_free(g->timer_ev);
    g->kick_ev = g->timer_ev = NULL;
}

/* ---- leave ------------------------------------------------------------------ */


void gio_leave_job(void *arg)
{
    struct leave_job *j = arg;
    struct verity_group_consumer *g = j->g;
    pthread_mutex_lock(&g->mu);
    uint64_t member_id = g->state == G_JOINED ? g->member_id : 0;
    g->left = true;
    if (member_id)
        g->state = G_UNJOINED;
    pthread_mutex_unlock(&g->mu);
    struct greq *r = member_id ? greq_new(g, GR_LEAVE, member_id) : NULL;
    if (!r) {
        cl_wait_signal(j->w, member_id ? -ENOMEM : 0, NULL);
        free(j);
        return;
    }
    r->wait = j->w;
    free(j);
    Verity__Envelope env = VERITY__ENVELOPE__INIT;
    Verity__LeaveGroupRequest q = VERITY__LEAVE_GROUP_REQUEST__INIT;
    q.group = g->group;
    q.member_id = member_id;
    env.body_case = VERITY__ENVELOPE__BODY_LEAVE_GROUP_REQ;
    env.leave_group_req = &q;
    send_req(g, r, &env, 0, 0);
}
