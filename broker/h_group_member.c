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

/* Offsets an Ack named that were already done before it (they did not
 * count), with the topic names copied: the answer may go out after the
 * group changed. */
struct ack_already {
    struct group_span *spans;
    size_t n;
    bool cut;
    char (*topics)[VERITY_TOPIC_NAME_MAX + 1]; /* per span */
};

/* A member command whose answer waits for its ticket. It is allocated
 * before the state machine is called, so running out of memory refuses the
 * command before it changed anything. */
struct mcmd {
    struct gpark park; /* first: the callback casts back */
    struct req *req;
    char group[GROUP_NAME_MAX + 1];
    uint64_t member_id;
    bool flag; /* nack: dead-lettered */
    struct ack_already already; /* ack only */
};

/* A new command, or NULL after answering r with ENOMEM. */
static struct mcmd *mcmd_new(struct req *r, const char *group, uint64_t member, gpark_fn done)
{
    struct mcmd *c = broker_fault("mcmd_alloc") ? NULL : calloc(1, sizeof *c);
    if (!c) {
        req_fail(r, -ENOMEM, "out of memory: the command was not applied");
        return NULL;
    }
    c->req = r;
    c->park.done = done;
    c->member_id = member;
    snprintf(c->group, sizeof c->group, "%s", group);
    return c;
}

static void mcmd_free(struct mcmd *c)
{
    if (!c)
        return;
    free(c->already.spans);
    free(c->already.topics);
    free(c);
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
    mcmd_free(c);
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
    struct mcmd *c = mcmd_new(r, q->group, 0, join_done);
    if (!c)
        return;
    uint64_t member = 0, ticket = 0;
    rc = group_join(b->groups.st, q->group, q->member_name, topics, nt, q->session_ms, now_ms(),
                    &member, &ticket);
    if (rc) {
        mcmd_free(c);
        group_fail(r, rc, q->group, 0,
                   rc == VERITY_ELIMIT ? "the group has its maximum of members" : NULL);
        return;
    }
    c->member_id = member;
    char qn[GROUP_NAME_MAX + 8], qm[GROUP_MEMBER_NAME_MAX + 8];
    blog(BLOG_INFO, "group_member_joined", "group=%s member=%" PRIu64 " name=%s",
         blog_q(q->group, qn, sizeof qn), member, blog_q(q->member_name, qm, sizeof qm));
    groups_after(b);
    struct bgroup *bg = bgroup_get(b, q->group);
    if (bg)
        groups_wake(bg);
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

/* ---- answers parked on the group log ------------------------------------------------ */

static void empty_done(struct broker *b, struct gpark *p, int err)
{
    struct mcmd *c = (struct mcmd *)p;
    struct req *r = c->req;
    (void)b;
    if (err) {
        fail_log(r, err);
        mcmd_free(c);
        return;
    }
    Verity__Envelope env = VERITY__ENVELOPE__INIT;
    Verity__LeaveGroupResponse leave = VERITY__LEAVE_GROUP_RESPONSE__INIT;
    Verity__AckResponse ack = VERITY__ACK_RESPONSE__INIT;
    Verity__NackResponse nack = VERITY__NACK_RESPONSE__INIT;
    Verity__TermResponse term = VERITY__TERM_RESPONSE__INIT;
    Verity__GroupAckRange *ar = NULL, **arp = NULL;
    switch (r->type) {
    case VERITY__ENVELOPE__BODY_LEAVE_GROUP_REQ:
        env.body_case = VERITY__ENVELOPE__BODY_LEAVE_GROUP_RESP;
        env.leave_group_resp = &leave;
        break;
    case VERITY__ENVELOPE__BODY_ACK_REQ: {
        const struct ack_already *al = &c->already;
        if (al->n) {
            ar = calloc(al->n, sizeof *ar);
            arp = calloc(al->n, sizeof *arp);
            if (!ar || !arp) {
                /* The ack is durable; only the detail is lost. */
                free(ar);
                free(arp);
                ar = NULL;
                arp = NULL;
                ack.already_cut = true;
            }
        }
        for (size_t i = 0; ar && i < al->n; i++) {
            verity__group_ack_range__init(&ar[i]);
            ar[i].topic = al->topics[i];
            ar[i].partition = al->spans[i].pidx; /* set to the partition by h_ack */
            ar[i].first_offset = al->spans[i].lo;
            ar[i].count = (uint32_t)(al->spans[i].hi - al->spans[i].lo);
            arp[i] = &ar[i];
        }
        if (ar) {
            ack.n_already = al->n;
            ack.already = arp;
            ack.already_cut = al->cut;
        }
        env.body_case = VERITY__ENVELOPE__BODY_ACK_RESP;
        env.ack_resp = &ack;
        break;
    }
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
    free(ar);
    free(arp);
    mcmd_free(c);
}

/* After a command changed the state: append its records, wake the group's
 * long-polls, and park c (allocated before the change) until ticket is
 * durable. */
static void finish_wake(struct req *r, struct mcmd *c, uint64_t ticket, bool flag, bool wake)
{
    struct broker *b = r->b;
    groups_after(b);
    struct bgroup *bg = wake ? bgroup_get(b, c->group) : NULL;
    if (bg)
        groups_wake(bg);
    c->flag = flag;
    groups_park(b, &c->park, ticket);
}

static void finish(struct req *r, struct mcmd *c, uint64_t ticket, bool flag)
{
    finish_wake(r, c, ticket, flag, true);
}

/* Whether an ack may make a message deliverable to a waiting fetch: only by
 * freeing a pending slot the group had run out of, or by taking a message
 * that waits for redelivery off its partition (ordered mode holds newer
 * offsets behind it). Otherwise the group's long-polls are not woken: a
 * member that keeps fetches out and acks every answer (W4 through a group)
 * would otherwise evaluate each waiting fetch once more per ack for nothing
 * (issue 16). */
static bool ack_may_free(const struct group_state *st, const char *group)
{
    struct group_info info;
    if (group_get_info(st, group, &info) != 0)
        return true;
    return info.n_waiting > 0 || info.n_tracked >= info.pending_max;
}

/* ---- LeaveGroup ----------------------------------------------------------------------- */

void h_leave_group(struct req *r)
{
    struct broker *b = r->b;
    const Verity__LeaveGroupRequest *q = r->msg->env->leave_group_req;
    if (!writable(r))
        return;
    struct mcmd *c = mcmd_new(r, q->group, q->member_id, empty_done);
    if (!c)
        return;
    uint64_t ticket = 0;
    int rc = group_leave(b->groups.st, q->group, q->member_id, now_ms(), &ticket);
    if (rc) {
        mcmd_free(c);
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
    finish(r, c, ticket, false);
}

/* ---- Ack ------------------------------------------------------------------------------- */

/* Spans named in one answer; more are summed up as already_cut. */
#define ACK_ALREADY_MAX 4096u

/* Refuses the ack, naming the item the state machine refused. */
static void ack_refused(struct req *r, int rc, const Verity__AckRequest *q,
                        const struct group_ref *refs, size_t n_refs, size_t failed)
{
    struct group_state *st = r->b->groups.st;
    struct group_info info;
    uint32_t ti = 0, part = 0;
    if (failed < n_refs && (rc == VERITY_ELEASE || rc == VERITY_EOFFSET) &&
        group_get_info(st, q->group, &info) == 0 &&
        groups_pidx_split(info.cfg, refs[failed].pidx, &ti, &part)) {
        fail_ref(r, rc, q->group, q->member_id, info.cfg->topics[ti].name, part,
                 refs[failed].offset);
        return;
    }
    if (failed >= n_refs && failed - n_refs < q->n_upto) {
        const Verity__GroupPartitionOffset *u = q->upto[failed - n_refs];
        char d[MSG_MAX];
        const char *why = rc == VERITY_EINVAL   ? "cumulative ack (upto) is only for ordered groups"
                          : rc == VERITY_EOFFSET ? "beyond what was delivered"
                          : rc == VERITY_ELEASE
                              ? "an offset in that span is held by another member, or the "
                                "partition moved"
                              : verity_strerror(rc);
        snprintf(d, sizeof d, "upto %s partition %" PRIu32 " offset %" PRIu64 ": %s", u->topic,
                 u->partition, u->offset, why);
        group_fail(r, rc, q->group, q->member_id, d);
        return;
    }
    group_fail(r, rc, q->group, q->member_id, NULL);
}

/* Copies the already-done spans into c with their topic names and
 * partition numbers (the span's pidx field then holds the partition). */
static void ack_keep_already(struct broker *b, struct mcmd *c, const struct group_ack_res *res,
                             const struct group_ref *refs, size_t n_refs)
{
    struct group_info info;
    size_t want = res->n_already;
    for (size_t i = 0; i < n_refs; i++)
        want += res->ref_already[i];
    if (want == 0 || group_get_info(b->groups.st, c->group, &info) != 0)
        return;
    if (want > ACK_ALREADY_MAX)
        want = ACK_ALREADY_MAX;
    struct ack_already *al = &c->already;
    al->spans = calloc(want, sizeof *al->spans);
    al->topics = calloc(want, sizeof *al->topics);
    if (!al->spans || !al->topics) {
        al->cut = true;
        return;
    }
    al->cut = res->already_cut;
    for (size_t i = 0; i < n_refs + res->n_already; i++) {
        struct group_span sp;
        if (i < n_refs) {
            if (!res->ref_already[i])
                continue;
            sp = (struct group_span){refs[i].pidx, refs[i].offset, refs[i].offset + 1};
        } else {
            sp = res->already[i - n_refs];
        }
        uint32_t ti = 0, part = 0;
        if (!groups_pidx_split(info.cfg, sp.pidx, &ti, &part))
            continue;
        if (al->n && al->spans[al->n - 1].pidx == part && al->spans[al->n - 1].hi == sp.lo &&
            strcmp(al->topics[al->n - 1], info.cfg->topics[ti].name) == 0 &&
            sp.hi - al->spans[al->n - 1].lo <= UINT32_MAX) {
            al->spans[al->n - 1].hi = sp.hi;
            continue;
        }
        if (al->n == want) {
            al->cut = true;
            break;
        }
        al->spans[al->n] = (struct group_span){part, sp.lo, sp.hi};
        snprintf(al->topics[al->n], sizeof al->topics[0], "%s", info.cfg->topics[ti].name);
        al->n++;
    }
}

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
    if (total > VERITY_ACK_OFFSETS_MAX) {
        snprintf(msg, sizeof msg, "ack of %" PRIu64 " offsets exceeds the limit %u per request",
                 total, VERITY_ACK_OFFSETS_MAX);
        req_fail(r, VERITY_ELIMIT, msg);
        return;
    }
    if (q->n_upto > GROUP_PARTITIONS_MAX || (q->n_upto_from && q->n_upto_from != q->n_upto)) {
        req_fail(r, VERITY_EINVAL, "upto_from must be empty or match upto");
        return;
    }
    struct mcmd *c = mcmd_new(r, q->group, q->member_id, empty_done);
    if (!c)
        return;
    struct group_ref *refs = calloc(total ? total : 1, sizeof *refs);
    uint8_t *ref_already = calloc(total ? total : 1, 1);
    struct group_ref *upto = calloc(q->n_upto ? q->n_upto : 1, sizeof *upto);
    /* Scratch for the already-done spans, kept across requests: the loop
     * thread is the only caller, and an Ack is the hot path of groups. */
    static struct group_span *spans;
    if (!spans)
        spans = calloc(ACK_ALREADY_MAX, sizeof *spans);
    int rc = refs && ref_already && upto && spans ? 0 : -ENOMEM;
    if (rc)
        snprintf(msg, sizeof msg, "out of memory: the ack was not applied");
    size_t n = 0;
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
    for (size_t i = 0; i < q->n_upto && rc == 0; i++) {
        const Verity__GroupPartitionOffset *u = q->upto[i];
        rc = groups_pidx(b, q->group, u->topic, u->partition, &upto[i].pidx, msg, sizeof msg);
        upto[i].offset = u->offset;
    }
    if (rc) {
        req_fail(r, rc, msg);
        goto out;
    }
    struct group_ack_req aq = {.refs = refs,
                               .n_refs = n,
                               .upto = upto,
                               .upto_from = q->n_upto_from ? q->upto_from : NULL,
                               .n_upto = q->n_upto};
    struct group_ack_res res = {.ref_already = ref_already,
                                .already = spans,
                                .cap_already = ACK_ALREADY_MAX};
    uint64_t ticket = 0;
    bool wake = ack_may_free(st, q->group);
    rc = group_ack_all(st, q->group, q->member_id, &aq, now_ms(), &res, &ticket);
    if (rc) {
        ack_refused(r, rc, q, refs, n, res.failed);
        goto out;
    }
    ack_keep_already(b, c, &res, refs, n);
    finish_wake(r, c, ticket, false, wake);
    c = NULL;
out:
    mcmd_free(c);
    free(refs);
    free(ref_already);
    free(upto);
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
    struct mcmd *c = mcmd_new(r, q->group, q->member_id, empty_done);
    if (!c)
        return;
    /* Wire: 0 = backoff schedule, < 0 = at once; machine: < 0 = schedule. */
    int64_t delay = q->delay_ms == 0 ? -1 : q->delay_ms < 0 ? 0 : q->delay_ms;
    uint64_t ticket = 0;
    struct group_ref ref = {pidx, q->offset};
    rc = group_nack(b->groups.st, q->group, q->member_id, ref, delay, q->error, now_ms(), &ticket);
    if (rc) {
        mcmd_free(c);
        fail_ref(r, rc, q->group, q->member_id, q->topic, q->partition, q->offset);
        return;
    }
    struct group_msg_info mi;
    bool dead = group_msg(b->groups.st, q->group, ref, &mi) == 0 &&
                (mi.state == GROUP_MSG_DEAD_LETTER || mi.state == GROUP_MSG_DONE);
    finish(r, c, ticket, dead);
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
    struct mcmd *c = mcmd_new(r, q->group, q->member_id, empty_done);
    if (!c)
        return;
    uint64_t ticket = 0;
    rc = group_term(b->groups.st, q->group, q->member_id, (struct group_ref){pidx, q->offset},
                    q->error, now_ms(), &ticket);
    if (rc) {
        mcmd_free(c);
        fail_ref(r, rc, q->group, q->member_id, q->topic, q->partition, q->offset);
        return;
    }
    finish(r, c, ticket, false);
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
    if (total > VERITY_ACK_OFFSETS_MAX) {
        snprintf(msg, sizeof msg, "extend of %" PRIu64 " offsets exceeds the limit %u", total,
                 VERITY_ACK_OFFSETS_MAX);
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
