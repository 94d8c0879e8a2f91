/*
 * Handlers of the member requests: JoinGroup, Heartbeat, LeaveGroup, Ack,
 * Nack, Extend and Term (GroupFetch lives in h_group_fetch.c). Each maps
 * (topic, partition) to the group's flat partition index, calls the state
 * machine, and answers once the command's ticket is durable in the group
 * log. A refused command changed nothing; its error names the offset and
 * why (never delivered, held by another member, moved).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "broker/blog.h"
#include "broker/broker_int.h"
#include "verity/errors.h"
#include "verity/verify.h"

#define MSG_MAX 400

/* A member command whose answer waits for its ticket. */
struct mcmd {
    struct gpark park; /* first: the callback casts back */
    struct req *req;
    char group[GROUP_NAME_MAX + 1];
    uint64_t member_id;
    bool flag; /* nack: dead-lettered */
};

static struct mcmd *mcmd_new(struct req *r, const char *group, uint64_t member, gpark_fn done)
{
    struct mcmd *c = calloc(1, sizeof *c);
    if (!c) {
        req_fail(r, -ENOMEM, NULL);
        return NULL;
    }
    c->req = r;
    c->park.done = done;
    c->member_id = member;
    snprintf(c->group, sizeof c->group, "%s", group);
    return c;
}

static bool writable(struct req *r)
{
    char msg[MSG_MAX];
    int rc = groups_writable(r->b, msg, sizeof msg);
    if (rc)
        req_fail(r, rc, msg);
    return rc == 0;
}

static void fail_log(struct req *r, int err)
{
    char msg[MSG_MAX];
    snprintf(msg, sizeof msg, "the group log could not record the change: %s",
             verity_strerror(err));
    req_fail(r, err, msg);
}

/* Explains why member may not act on (topic, partition, offset): the
 * state machine's answer rc, made specific with group_msg. */
static void fail_ref(struct req *r, int rc, const char *group, uint64_t member, const char *topic,
                     uint32_t partition, uint64_t offset)
{
    char d[MSG_MAX];
    struct group_msg_info mi;
    uint32_t pidx;
    const char *what = "";
    if (rc == VERITY_EOFFSET) {
        what = "was never delivered to the group";
    } else if (rc == VERITY_ELEASE &&
               group_part_index(r->b->groups.st, group, topic, partition, &pidx) == 0 &&
               group_msg(r->b->groups.st, group, (struct group_ref){pidx, offset}, &mi) == 0) {
        switch (mi.state) {
        case GROUP_MSG_LEASED:
            what =
                mi.member_id == member ? "is leased to this member" : "is leased to another member";
            break;
        case GROUP_MSG_WAITING:
            what = mi.member_id == member ? "lease expired; it waits for redelivery"
                                          : "lease moved: it waits for redelivery";
            break;
        case GROUP_MSG_DONE:
            what = "is already acknowledged or dead-lettered";
            break;
        case GROUP_MSG_DEAD_LETTER:
            what = "is on its way to the dead-letter topic";
            break;
        default:
            what = "was never delivered to the group";
            break;
        }
    }
    snprintf(d, sizeof d, "%s partition %" PRIu32 " offset %" PRIu64 " %s", topic, partition,
             offset, what);
    group_fail(r, rc, group, member, d);
}

/* ---- assignment in answers ------------------------------------------------------------ */

struct assign {
    uint32_t *pidx;
    Verity__GroupPartition *gp;
    Verity__GroupPartition **ptrs;
    size_t n;
};

static int assign_fill(struct broker *b, const char *group, uint64_t member, struct assign *a)
{
    memset(a, 0, sizeof *a);
    struct group_info info;
    int rc = group_get_info(b->groups.st, group, &info);
    if (rc || info.cfg->mode != GROUP_ORDERED)
        return rc;
    uint32_t np = info.n_partitions;
    a->pidx = calloc(np ? np : 1, sizeof *a->pidx);
    a->gp = calloc(np ? np : 1, sizeof *a->gp);
    a->ptrs = calloc(np ? np : 1, sizeof *a->ptrs);
    if (!a->pidx || !a->gp || !a->ptrs)
        return -ENOMEM;
    if ((rc = group_assignment(b->groups.st, group, member, a->pidx, np, &a->n)))
        return rc;
    if (a->n > np)
        a->n = np;
    for (size_t k = 0; k < a->n; k++) {
        uint32_t ti = 0, part = 0;
        (void)groups_pidx_split(info.cfg, a->pidx[k], &ti, &part);
        verity__group_partition__init(&a->gp[k]);
        a->gp[k].topic = (char *)info.cfg->topics[ti].name;
        a->gp[k].partition = part;
        a->ptrs[k] = &a->gp[k];
    }
    return 0;
}

static void assign_free(struct assign *a)
{
    free(a->pidx);
    free(a->gp);
    free(a->ptrs);
}

/* ---- JoinGroup ------------------------------------------------------------------------ */

static void join_done(struct broker *b, struct gpark *p, int err)
{
    struct mcmd *c = (struct mcmd *)p;
    struct req *r = c->req;
    struct group_info info;
    struct group_member_info *mem = NULL;
    struct assign a = {0};
    int rc = err;
    if (rc) {
        fail_log(r, rc);
        goto out;
    }
    if ((rc = group_get_info(b->groups.st, c->group, &info)) ||
        (rc = assign_fill(b, c->group, c->member_id, &a))) {
        group_fail(r, rc, c->group, c->member_id, NULL);
        goto out;
    }
    int64_t session = info.cfg->session_ms;
    size_t nm = 0;
    mem = calloc(info.n_members ? info.n_members : 1, sizeof *mem);
    if (mem && group_members(b->groups.st, c->group, mem, info.n_members, &nm) == 0) {
        for (size_t i = 0; i < nm && i < info.n_members; i++)
            if (mem[i].member_id == c->member_id)
                session = mem[i].session_ms;
    }
    Verity__JoinGroupResponse resp = VERITY__JOIN_GROUP_RESPONSE__INIT;
    resp.member_id = c->member_id;
    resp.generation = info.generation;
    resp.n_assignment = a.n;
    resp.assignment = a.ptrs;
    resp.mode = info.cfg->mode == GROUP_SHARED ? VERITY__GROUP_MODE__GROUP_MODE_SHARED
                                               : VERITY__GROUP_MODE__GROUP_MODE_ORDERED;
    resp.lease_ms = info.cfg->lease_ms;
    resp.session_ms = session;
    Verity__Envelope env = VERITY__ENVELOPE__INIT;
    env.body_case = VERITY__ENVELOPE__BODY_JOIN_GROUP_RESP;
    env.join_group_resp = &resp;
    req_reply(r, &env, NULL, 0);
out:
    free(mem);
    assign_free(&a);
    free(c);
}

void h_join_group(struct req *r)
{
    struct broker *b = r->b;
    const Verity__JoinGroupRequest *q = r->msg->env->join_group_req;
    if (!writable(r))
        return;
    struct group_info info;
    int rc = group_get_info(b->groups.st, q->group, &info);
    if (rc) {
        group_fail(r, rc, q->group, 0, NULL);
        return;
    }
    const char *topics[GROUP_TOPICS_MAX];
    size_t nt = q->n_topics;
    for (size_t i = 0; i < nt; i++) {
        bool found = false;
        for (uint32_t t = 0; t < info.cfg->n_topics && !found; t++)
            found = strcmp(info.cfg->topics[t].name, q->topics[i]) == 0;
        if (!found) {
            char d[MSG_MAX];
            snprintf(d, sizeof d, "topic %s is not one of the group's topics", q->topics[i]);
            group_fail(r, VERITY_EINVAL, q->group, 0, d);
            return;
        }
        topics[i] = q->topics[i];
    }
    if (nt == 0) {
        for (uint32_t t = 0; t < info.cfg->n_topics; t++)
            topics[t] = info.cfg->topics[t].name;
        nt = info.cfg->n_topics;
    }
    if (q->session_ms > GROUP_DELAY_MS_MAX) {
        group_fail(r, VERITY_EINVAL, q->group, 0, "session_ms too large");
        return;
    }
    uint64_t member = 0, ticket = 0;
    rc = group_join(b->groups.st, q->group, q->member_name, topics, nt, q->session_ms, now_ms(),
                    &member, &ticket);
    if (rc) {
        group_fail(r, rc, q->group, 0,
                   rc == VERITY_ELIMIT ? "the group has its maximum of members" : NULL);
        return;
    }
    struct mcmd *c = mcmd_new(r, q->group, member, join_done);
    char qn[GROUP_NAME_MAX + 8], qm[GROUP_MEMBER_NAME_MAX + 8];
    blog(BLOG_INFO, "group_member_joined", "group=%s member=%" PRIu64 " name=%s",
         blog_q(q->group, qn, sizeof qn), member, blog_q(q->member_name, qm, sizeof qm));
    groups_after(b);
    struct bgroup *bg = bgroup_get(b, q->group);
    if (bg)
        groups_wake(bg);
    if (c)
        groups_park(b, &c->park, ticket);
}

/* ---- Heartbeat ------------------------------------------------------------------------ */

void h_heartbeat(struct req *r)
{
    struct broker *b = r->b;
    const Verity__HeartbeatRequest *q = r->msg->env->heartbeat_req;
    struct group_info info;
    struct assign a = {0};
    int rc = b->groups.st ? group_heartbeat(b->groups.st, q->group, q->member_id, now_ms())
                          : VERITY_ECLOSED;
    if (rc == 0)
        rc = group_get_info(b->groups.st, q->group, &info);
    if (rc == 0)
        rc = assign_fill(b, q->group, q->member_id, &a);
    if (rc) {
        assign_free(&a);
        group_fail(r, rc, q->group, q->member_id, NULL);
        return;
    }
    groups_after(b); /* the session deadline moved */
    Verity__HeartbeatResponse resp = VERITY__HEARTBEAT_RESPONSE__INIT;
    resp.generation = info.generation;
    resp.n_assignment = a.n;
    resp.assignment = a.ptrs;
    Verity__Envelope env = VERITY__ENVELOPE__INIT;
    env.body_case = VERITY__ENVELOPE__BODY_HEARTBEAT_RESP;
    env.heartbeat_resp = &resp;
    req_reply(r, &env, NULL, 0);
    assign_free(&a);
}

/* ---- answers with an empty body ------------------------------------------------------- */

static void empty_done(struct broker *b, struct gpark *p, int err)
{
    struct mcmd *c = (struct mcmd *)p;
    struct req *r = c->req;
    (void)b;
    if (err) {
        fail_log(r, err);
        free(c);
        return;
    }
    Verity__Envelope env = VERITY__ENVELOPE__INIT;
    Verity__LeaveGroupResponse leave = VERITY__LEAVE_GROUP_RESPONSE__INIT;
    Verity__AckResponse ack = VERITY__ACK_RESPONSE__INIT;
    Verity__NackResponse nack = VERITY__NACK_RESPONSE__INIT;
    Verity__TermResponse term = VERITY__TERM_RESPONSE__INIT;
    switch (r->type) {
    case VERITY__ENVELOPE__BODY_LEAVE_GROUP_REQ:
        env.body_case = VERITY__ENVELOPE__BODY_LEAVE_GROUP_RESP;
        env.leave_group_resp = &leave;
        break;
    case VERITY__ENVELOPE__BODY_ACK_REQ:
        env.body_case = VERITY__ENVELOPE__BODY_ACK_RESP;
        env.ack_resp = &ack;
        break;
    case VERITY__ENVELOPE__BODY_NACK_REQ:
        nack.dead_lettered = c->flag;
        env.body_case = VERITY__ENVELOPE__BODY_NACK_RESP;
        env.nack_resp = &nack;
        break;
    default:
        env.body_case = VERITY__ENVELOPE__BODY_TERM_RESP;
        env.term_resp = &term;
        break;
    }
    req_reply(r, &env, NULL, 0);
    free(c);
}

/* After a command: append its records, wake the group's long-polls, park. */
static void finish(struct req *r, const char *group, uint64_t member, uint64_t ticket, bool flag)
{
    struct broker *b = r->b;
    struct mcmd *c = mcmd_new(r, group, member, empty_done);
    groups_after(b);
    struct bgroup *bg = bgroup_get(b, group);
    if (bg)
        groups_wake(bg);
    if (!c)
        return;
    c->flag = flag;
    groups_park(b, &c->park, ticket);
}

/* ---- LeaveGroup ----------------------------------------------------------------------- */

void h_leave_group(struct req *r)
{
    struct broker *b = r->b;
    const Verity__LeaveGroupRequest *q = r->msg->env->leave_group_req;
    if (!writable(r))
        return;
    uint64_t ticket = 0;
    int rc = group_leave(b->groups.st, q->group, q->member_id, now_ms(), &ticket);
    if (rc) {
        group_fail(r, rc, q->group, q->member_id, NULL);
        return;
    }
    struct bgroup *bg = bgroup_get(b, q->group);
    if (bg) {
        struct gwaiter *w, *next;
        for (w = TAILQ_FIRST(&bg->waiters); w; w = next) {
            next = TAILQ_NEXT(w, link);
            if (w->member_id == q->member_id)
                gfetch_fail(w->f, VERITY_EMEMBER, "member left");
        }
    }
    char qn[GROUP_NAME_MAX + 8];
    blog(BLOG_INFO, "group_member_left", "group=%s member=%" PRIu64,
         blog_q(q->group, qn, sizeof qn), q->member_id);
    finish(r, q->group, q->member_id, ticket, false);
}

/* ---- Ack ------------------------------------------------------------------------------- */

#define ACK_OFFSETS_MAX GROUP_BATCH_ITEMS_MAX

void h_ack(struct req *r)
{
    struct broker *b = r->b;
    const Verity__AckRequest *q = r->msg->env->ack_req;
    struct group_state *st = b->groups.st;
    if (!writable(r))
        return;
    char msg[MSG_MAX];
    uint64_t total = 0;
    for (size_t i = 0; i < q->n_ranges; i++)
        total += q->ranges[i]->count ? q->ranges[i]->count : 1;
    if (total > ACK_OFFSETS_MAX) {
        snprintf(msg, sizeof msg, "ack of %" PRIu64 " offsets exceeds the limit %u per request",
                 total, ACK_OFFSETS_MAX);
        req_fail(r, VERITY_ELIMIT, msg);
        return;
    }
    struct group_ref *refs = calloc(total ? total : 1, sizeof *refs);
    if (!refs) {
        req_fail(r, -ENOMEM, NULL);
        return;
    }
    size_t n = 0;
    int rc = 0;
    for (size_t i = 0; i < q->n_ranges && rc == 0; i++) {
        const Verity__GroupAckRange *e = q->ranges[i];
        uint32_t pidx, cnt = e->count ? e->count : 1;
        rc = groups_pidx(b, q->group, e->topic, e->partition, &pidx, msg, sizeof msg);
        if (rc == 0 && e->first_offset + cnt < e->first_offset) {
            rc = VERITY_EOFFSET;
            snprintf(msg, sizeof msg, "range overflows");
        }
        for (uint32_t k = 0; rc == 0 && k < cnt; k++)
            refs[n++] = (struct group_ref){pidx, e->first_offset + k};
    }
    if (rc) {
        free(refs);
        req_fail(r, rc, msg);
        return;
    }
    uint64_t ticket = 0, t2 = 0;
    int64_t now = now_ms();
    if (n > 0 && (rc = group_ack(st, q->group, q->member_id, refs, n, now, &ticket))) {
        /* All or none: name the first offset that is refused (the machine
         * checks them in this order). */
        for (size_t i = 0; i < n; i++) {
            struct group_msg_info mi;
            if (group_msg(st, q->group, refs[i], &mi) == 0 &&
                (mi.state == GROUP_MSG_NEW || mi.state == GROUP_MSG_DEAD_LETTER ||
                 ((mi.state == GROUP_MSG_LEASED || mi.state == GROUP_MSG_WAITING) &&
                  mi.member_id != q->member_id))) {
                struct group_info info;
                uint32_t ti = 0, part = 0;
                if (group_get_info(st, q->group, &info) == 0 &&
                    groups_pidx_split(info.cfg, refs[i].pidx, &ti, &part)) {
                    uint64_t off = refs[i].offset;
                    free(refs);
                    fail_ref(r, rc, q->group, q->member_id, info.cfg->topics[ti].name, part, off);
                    return;
                }
            }
        }
        free(refs);
        group_fail(r, rc, q->group, q->member_id, NULL);
        return;
    }
    free(refs);
    for (size_t i = 0; i < q->n_upto; i++) {
        const Verity__GroupPartitionOffset *u = q->upto[i];
        uint32_t pidx;
        if ((rc = groups_pidx(b, q->group, u->topic, u->partition, &pidx, msg, sizeof msg))) {
            groups_after(b);
            req_fail(r, rc, msg);
            return;
        }
        rc = group_ack_upto(st, q->group, q->member_id, pidx, u->offset, now, &t2);
        if (rc) {
            groups_after(b);
            if (rc == VERITY_EINVAL) {
                group_fail(r, rc, q->group, q->member_id,
                           "cumulative ack (upto) is only for ordered groups");
            } else if (rc == VERITY_ELEASE || rc == VERITY_EOFFSET) {
                char d[MSG_MAX];
                snprintf(d, sizeof d, "upto %s partition %" PRIu32 " offset %" PRIu64 ": %s",
                         u->topic, u->partition, u->offset,
                         rc == VERITY_EOFFSET ? "beyond what was delivered"
                                              : "an offset in that span is held by another member");
                group_fail(r, rc, q->group, q->member_id, d);
            } else {
                group_fail(r, rc, q->group, q->member_id, NULL);
            }
            return;
        }
        if (t2 > ticket)
            ticket = t2;
    }
    finish(r, q->group, q->member_id, ticket, false);
}

/* ---- Nack / Term ------------------------------------------------------------------------ */

void h_nack(struct req *r)
{
    struct broker *b = r->b;
    const Verity__NackRequest *q = r->msg->env->nack_req;
    if (!writable(r))
        return;
    char msg[MSG_MAX];
    uint32_t pidx;
    int rc = groups_pidx(b, q->group, q->topic, q->partition, &pidx, msg, sizeof msg);
    if (rc) {
        req_fail(r, rc, msg);
        return;
    }
    if (q->delay_ms > GROUP_DELAY_MS_MAX) {
        snprintf(msg, sizeof msg, "delay_ms %lld exceeds %lld", (long long)q->delay_ms,
                 (long long)GROUP_DELAY_MS_MAX);
        req_fail(r, VERITY_EINVAL, msg);
        return;
    }
    /* Wire: 0 = backoff schedule, < 0 = at once; machine: < 0 = schedule. */
    int64_t delay = q->delay_ms == 0 ? -1 : q->delay_ms < 0 ? 0 : q->delay_ms;
    uint64_t ticket = 0;
    struct group_ref ref = {pidx, q->offset};
    rc = group_nack(b->groups.st, q->group, q->member_id, ref, delay, q->error, now_ms(), &ticket);
    if (rc) {
        fail_ref(r, rc, q->group, q->member_id, q->topic, q->partition, q->offset);
        return;
    }
    struct group_msg_info mi;
    bool dead = group_msg(b->groups.st, q->group, ref, &mi) == 0 &&
                (mi.state == GROUP_MSG_DEAD_LETTER || mi.state == GROUP_MSG_DONE);
    finish(r, q->group, q->member_id, ticket, dead);
}

void h_term(struct req *r)
{
    struct broker *b = r->b;
    const Verity__TermRequest *q = r->msg->env->term_req;
    if (!writable(r))
        return;
    char msg[MSG_MAX];
    uint32_t pidx;
    int rc = groups_pidx(b, q->group, q->topic, q->partition, &pidx, msg, sizeof msg);
    if (rc) {
        req_fail(r, rc, msg);
        return;
    }
    uint64_t ticket = 0;
    rc = group_term(b->groups.st, q->group, q->member_id, (struct group_ref){pidx, q->offset},
                    q->error, now_ms(), &ticket);
    if (rc) {
        fail_ref(r, rc, q->group, q->member_id, q->topic, q->partition, q->offset);
        return;
    }
    finish(r, q->group, q->member_id, ticket, false);
}

/* ---- Extend ------------------------------------------------------------------------------ */

void h_extend(struct req *r)
{
    struct broker *b = r->b;
    const Verity__ExtendRequest *q = r->msg->env->extend_req;
    if (!b->groups.st) {
        req_fail(r, VERITY_ECLOSED, "consumer groups are not available");
        return;
    }
    char msg[MSG_MAX];
    uint64_t total = 0;
    for (size_t i = 0; i < q->n_ranges; i++)
        total += q->ranges[i]->count ? q->ranges[i]->count : 1;
    if (total > ACK_OFFSETS_MAX) {
        snprintf(msg, sizeof msg, "extend of %" PRIu64 " offsets exceeds the limit %u", total,
                 ACK_OFFSETS_MAX);
        req_fail(r, VERITY_ELIMIT, msg);
        return;
    }
    struct group_ref *refs = calloc(total ? total : 1, sizeof *refs);
    if (!refs) {
        req_fail(r, -ENOMEM, NULL);
        return;
    }
    size_t n = 0;
    int rc = 0;
    for (size_t i = 0; i < q->n_ranges && rc == 0; i++) {
        const Verity__GroupAckRange *e = q->ranges[i];
        uint32_t pidx, cnt = e->count ? e->count : 1;
        rc = groups_pidx(b, q->group, e->topic, e->partition, &pidx, msg, sizeof msg);
        for (uint32_t k = 0; rc == 0 && k < cnt; k++)
            refs[n++] = (struct group_ref){pidx, e->first_offset + k};
    }
    if (rc) {
        free(refs);
        req_fail(r, rc, msg);
        return;
    }
    int64_t deadline = 0;
    rc = group_extend(b->groups.st, q->group, q->member_id, refs, n, now_ms(), &deadline);
    if (rc) {
        /* Name the first offset that is not held. */
        for (size_t i = 0; i < n; i++) {
            struct group_msg_info mi;
            if (group_msg(b->groups.st, q->group, refs[i], &mi) == 0 &&
                (mi.state != GROUP_MSG_LEASED || mi.member_id != q->member_id)) {
                uint32_t ti = 0, part = 0;
                struct group_info info;
                if (group_get_info(b->groups.st, q->group, &info) == 0 &&
                    groups_pidx_split(info.cfg, refs[i].pidx, &ti, &part)) {
                    uint64_t off = refs[i].offset;
                    free(refs);
                    fail_ref(r, rc, q->group, q->member_id, info.cfg->topics[ti].name, part, off);
                    return;
                }
            }
        }
        free(refs);
        group_fail(r, rc, q->group, q->member_id, NULL);
        return;
    }
    free(refs);
    groups_after(b); /* the lease list changed: the timer follows */
    Verity__ExtendResponse resp = VERITY__EXTEND_RESPONSE__INIT;
    resp.lease_deadline_ms = deadline;
    Verity__Envelope env = VERITY__ENVELOPE__INIT;
    env.body_case = VERITY__ENVELOPE__BODY_EXTEND_RESP;
    env.extend_resp = &resp;
    req_reply(r, &env, NULL, 0);
}
