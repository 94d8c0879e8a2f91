/*
 * Consumer groups in a cluster (docs/GROUPS.md "In a cluster",
 * docs/REPLICATION.md "Consumer groups: __groups").
 *
 * The group log is a replica group, `__groups`, over every broker (replica
 * i = node index i, like __meta; the VSR side is in broker/cluster.c). Its
 * primary is the coordinator of every group:
 *
 *  - the coordinator runs the state machine live, as a single broker does;
 *    the records one drain emits become one group-log batch, proposed as
 *    (part of) an op instead of appended; a reply waits until its ticket's
 *    record is committed (seq_durable is "committed through seq");
 *  - every replica, the coordinator included, appends a committed op's
 *    batches to its local group log (node-local offsets; the applied ring
 *    maps the op to the log end), and every replica but the coordinator
 *    that proposed the op applies its records with group_apply. So a
 *    replica's state is always the committed one, and a replica's group log
 *    holds committed records only;
 *  - a broker that stops being the coordinator (a view change, a refused
 *    proposal) rebuilds its state from its group log, i.e. from committed
 *    records only, and fails every parked reply and long-poll with
 *    NOT_LEADER (the client follows to the new coordinator; an ack whose
 *    record did commit is then answered as already acknowledged);
 *  - a broker that becomes the coordinator (primary of __groups with every
 *    op it holds applied) runs group_recover, as a restart does: every
 *    delivered, unacknowledged message is available again with its count
 *    raised, every member gets a fresh session, and from then on it runs the
 *    timers (lease expiry, session timeouts, backoff) and the dead letters;
 *  - group requests reaching any other broker get a request-level
 *    NOT_LEADER naming the coordinator (groups_route).
 *
 * A group fetch on the coordinator reads its own committed copy of each
 * partition (the log of a replicated partition holds committed batches
 * only), which may be slightly behind the partition's primary. So every
 * broker must hold every partition a group reads: creating a group in a
 * cluster requires its topics to have one replica per broker
 * (groups_check_topics, VERITY_EINVAL otherwise).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>
#include <jansson.h>
#include <openssl/evp.h>

#include "broker/blog.h"
#include "broker/broker_int.h"
#include "broker/group/group_snap.h"
#include "verity/errors.h"
#include "verity/verify.h"

bool groups_live(const struct broker *b)
{
    return !b->groups.repl || b->groups.coord;
}

/* A fresh state from the local group log (committed records only), through
 * its snapshot when one matches, as a restart builds it (groups_open). On
 * failure the old state stays. */
static int rebuild(struct broker *b)
{
    struct groups *gs = &b->groups;
    struct group_state *old = gs->st;
    gs->st = NULL;
    int rc = group_state_new(b->cfg.group_pending_max, &gs->st);
    uint64_t applied = 0;
    if (rc == 0)
        rc = groups_load_state(b, &applied);
    if (rc) {
        group_state_free(gs->st);
        gs->st = old;
        return rc;
    }
    group_state_free(old);
    gs->seq_appended = gs->seq_durable = group_last_seq(gs->st);
    return 0;
}

static void step_down(struct broker *b, const char *why)
{
    struct groups *gs = &b->groups;
    bool was = gs->coord;
    gs->coord = false;
    gs->lost_view = false;
    groups_fail_parked(b, VERITY_ENOTLEADER);
    groups_fail_waiters(b, VERITY_ENOTLEADER, "the consumer-group coordinator moved");
    dlq_free_all(b);
    gs->flush_armed = false;
    if (gs->lazy_ev)
        evtimer_del(gs->lazy_ev);
    if (gs->timer_ev)
        evtimer_del(gs->timer_ev);
    gs->timer_at = INT64_MAX;
    uint64_t before = group_last_seq(gs->st);
    int rc = rebuild(b);
    if (rc) {
        /* the committed log does not replay: nothing this broker serves
         * from here on could be trusted */
        if (!gs->error)
            gs->error = rc;
        blog(BLOG_ERROR, "group_log_failed", "during=rebuild error=%s", verity_errname(rc));
    }
    groups_changed(b);
    gs->stepdowns++;
    blog(was ? BLOG_WARN : BLOG_INFO, "groups_coordinator_stepped_down",
         "view=%" PRIu64 " reason=%s live_seq=%" PRIu64 " committed_seq=%" PRIu64, gs->coord_view,
         why, before, gs->seq_durable);
}

static void step_up(struct broker *b, uint64_t view)
{
    struct groups *gs = &b->groups;
    int rc = group_recover(gs->st, now_ms());
    if (rc) {
        if (!gs->error)
            gs->error = rc;
        blog(BLOG_ERROR, "group_log_failed", "during=recover error=%s", verity_errname(rc));
        return;
    }
    gs->coord = true;
    gs->coord_view = view;
    gs->lost_view = false;
    gs->seq_appended = gs->seq_durable = group_last_seq(gs->st);
    gs->takeovers++;
    groups_changed(b);
    size_t n = 0;
    group_list(gs->st, NULL, 0, &n);
    blog(BLOG_INFO, "groups_coordinator", "view=%" PRIu64 " groups=%zu committed_seq=%" PRIu64,
         view, n, gs->seq_durable);
    groups_after(b); /* proposes what recovery emitted, arms the timer */
    groups_wake_all(b);
}

void groups_repl_check(struct broker *b)
{
    struct groups *gs = &b->groups;
    if (!gs->repl || !gs->st || !gs->log || gs->in_after)
        return;
    uint64_t view = 0;
    bool ready = cluster_groups_ready(b, &view);
    if (gs->coord && (gs->lost_view || !ready || view != gs->coord_view))
        step_down(b, gs->lost_view ? "proposal_refused" : "view_change");
    else if (gs->lost_view)
        gs->lost_view = false;
    if (!gs->coord && ready && !gs->error)
        step_up(b, view);
}

int groups_repl_apply(struct broker *b, const uint8_t *body, uint32_t len, bool own,
                      uint64_t own_view, uint64_t *end)
{
    struct groups *gs = &b->groups;
    if (!gs->st || !gs->log)
        return VERITY_ECLOSED;
    bool live = own && gs->coord && gs->coord_view == own_view;
    if (gs->coord && !live)
        step_down(b, "foreign_op"); /* apply to the committed state only */
    uint8_t *copy = malloc(len ? len : 1);
    if (!copy)
        return -ENOMEM;
    memcpy(copy, body, len);
    int64_t now = now_ms();
    uint64_t last = 0;
    int rc = 0;
    for (uint32_t pos = 0; rc == 0 && pos < len;) {
        struct batch_hdr h;
        if ((rc = batch_hdr_decode(copy + pos, len - pos, &h)))
            break;
        if (h.length > len - pos || h.length == 0 || (h.attributes & BATCH_ATTR_CONTROL)) {
            rc = VERITY_ECORRUPT;
            break;
        }
        struct batch_iter it;
        struct batch_record r;
        batch_iter_init(&it, copy + pos, h.length);
        int n;
        while (rc == 0 && (n = batch_iter_next(&it, &r)) == 1) {
            enum group_rec_type type;
            uint64_t seq = 0;
            uint32_t gid = 0;
            if (r.value_len <= 0 ||
                (rc = group_record_peek(r.value, (size_t)r.value_len, &type, &seq, &gid))) {
                rc = rc ? rc : VERITY_ECORRUPT;
                break;
            }
            if (!live && (rc = group_apply(gs->st, r.value, (size_t)r.value_len)))
                break;
            last = seq;
        }
        if (rc == 0 && n < 0)
            rc = n;
        if (rc)
            break;
        /* batch iteration is done with the bytes: the local log restamps
         * base offset and chain in place */
        struct vlog_append_info ai;
        if ((rc = vlog_append(gs->log, copy + pos, h.length, now, &ai)))
            break;
        pos += h.length;
    }
    free(copy);
    if (rc) {
        blog(BLOG_ERROR, "group_log_failed", "during=apply error=%s", verity_errname(rc));
        if (!gs->error)
            gs->error = rc;
        groups_fail_parked(b, rc);
        return rc;
    }
    if (last > gs->seq_durable)
        gs->seq_durable = last;
    if (!gs->coord)
        gs->seq_appended = gs->seq_durable;
    struct vlog_info info;
    vlog_get_info(gs->log, &info);
    *end = info.end_offset;
    if (!gs->coord) {
        /* a replica's state changed (groups created, deleted) */
        groups_changed(b);
    }
    groups_answer_parked(b);
    return 0;
}

int groups_repl_state(struct broker *b, uint8_t **out, size_t *len)
{
    struct groups *gs = &b->groups;
    *out = NULL;
    *len = 0;
    /* only a live state encodes; only one whose records are all committed
     * is the state at the applied op */
    if (!gs->repl || !gs->coord || gs->error || !gs->st || !gs->log ||
        gs->seq_appended != gs->seq_durable || gs->seq_durable != group_last_seq(gs->st))
        return -EAGAIN;
    return group_snap_encode(gs->st, out, len);
}

bool groups_route(struct req *r)
{
    struct broker *b = r->b;
    struct groups *gs = &b->groups;
    if (!gs->repl)
        return false;
    switch (r->type) {
    case VERITY__ENVELOPE__BODY_DESCRIBE_GROUP_REQ:
        if (r->msg->env->describe_group_req && r->msg->env->describe_group_req->kafka)
            return false; /* Kafka classic groups are node-local */
        break;
    case VERITY__ENVELOPE__BODY_CREATE_GROUP_REQ:
    case VERITY__ENVELOPE__BODY_DELETE_GROUP_REQ:
    case VERITY__ENVELOPE__BODY_LIST_GROUPS_REQ:
    case VERITY__ENVELOPE__BODY_GROUP_PENDING_REQ:
    case VERITY__ENVELOPE__BODY_RESET_GROUP_REQ:
    case VERITY__ENVELOPE__BODY_JOIN_GROUP_REQ:
    case VERITY__ENVELOPE__BODY_HEARTBEAT_REQ:
    case VERITY__ENVELOPE__BODY_LEAVE_GROUP_REQ:
    case VERITY__ENVELOPE__BODY_GROUP_FETCH_REQ:
    case VERITY__ENVELOPE__BODY_ACK_REQ:
    case VERITY__ENVELOPE__BODY_NACK_REQ:
    case VERITY__ENVELOPE__BODY_EXTEND_REQ:
    case VERITY__ENVELOPE__BODY_TERM_REQ:
        break;
    default:
        return false;
    }
    groups_repl_check(b);
    if (gs->coord)
        return false;
    uint32_t leader = cluster_groups_leader(b);
    /* A primary whose link is down here (killed, cut off: this backup has
     * not timed out of its view yet) is not named: the client would move
     * there, fail to connect, come back and be sent there again, spending
     * its follows in a fraction of a second. Without a name it retries
     * here after a short delay. */
    const struct peer_link *l = leader && leader != b->cfg.node_id ? peer_link(b, leader) : NULL;
    if (leader && leader != b->cfg.node_id && (!l || !l->up))
        leader = 0;
    char msg[160];
    if (leader && leader != b->cfg.node_id)
        snprintf(msg, sizeof msg,
                 "not the consumer-group coordinator (broker %" PRIu32 ", the primary of __groups)",
                 leader);
    else
        snprintf(msg, sizeof msg,
                 "no consumer-group coordinator yet (__groups is changing its primary): retry");
    req_fail_leader(r, leader == b->cfg.node_id ? 0 : leader, msg);
    return true;
}

int groups_check_topics(struct broker *b, const struct group_config *cfg, char *msg, size_t cap)
{
    if (!b->groups.repl)
        return 0;
    for (uint32_t i = 0; i < cfg->n_topics; i++) {
        struct topic *t = topic_find_live(b, cfg->topics[i].name);
        uint32_t rf = t && t->cfg.replicas ? t->cfg.replicas : 1;
        if (t && rf < b->cfg.cluster_n) {
            snprintf(msg, cap,
                     "topic %s has %" PRIu32 " replica(s) on a cluster of %" PRIu32
                     " brokers: a consumer group in a cluster reads topics replicated on every "
                     "broker (--replicas %" PRIu32 "), since its coordinator reads its own copy",
                     t->name, rf, b->cfg.cluster_n, b->cfg.cluster_n);
            return VERITY_EINVAL;
        }
    }
    return 0;
}

json_t *groups_repl_json(struct broker *b)
{
    struct groups *gs = &b->groups;
    json_t *j = cluster_groups_json(b);
    if (!j || !gs->st)
        return j;
    char hex[2 * EVP_MAX_MD_SIZE + 1] = "";
    uint8_t *buf = NULL;
    size_t len = 0;
    if (group_snapshot(gs->st, false, &buf, &len) == 0) {
        uint8_t md[EVP_MAX_MD_SIZE];
        unsigned n = 0;
        if (EVP_Digest(buf, len, md, &n, EVP_sha256(), NULL) == 1)
            for (unsigned i = 0; i < n; i++)
                snprintf(hex + 2 * i, 3, "%02x", md[i]);
        free(buf);
    }
    size_t groups = 0;
    group_list(gs->st, NULL, 0, &groups);
    json_object_set_new(j, "coordinator", json_boolean(gs->coord));
    json_object_set_new(j, "groups", json_integer((json_int_t)groups));
    json_object_set_new(j, "last_seq", json_integer((json_int_t)group_last_seq(gs->st)));
    json_object_set_new(j, "committed_seq", json_integer((json_int_t)gs->seq_durable));
    json_object_set_new(j, "takeovers", json_integer((json_int_t)gs->takeovers));
    json_object_set_new(j, "stepdowns", json_integer((json_int_t)gs->stepdowns));
    json_object_set_new(j, "state", json_string(hex));
    return j;
}
