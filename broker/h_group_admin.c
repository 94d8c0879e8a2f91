/*
 * Handlers of the group administration requests: CreateGroup, DeleteGroup,
 * ListGroups, DescribeGroup, GroupPending and ResetGroup. Requests arrive
 * structurally validated by codec_validate_request; these resolve topics
 * and positions against the broker, call the state machine, and answer
 * changes only once their group-log record is durable (groups_park).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "broker/blog.h"
#include "broker/broker_int.h"
#include "broker/kafka/kafka.h"
#include "verity/errors.h"
#include "verity/verify.h"

#define MSG_MAX         300
#define PENDING_DEFAULT 1000u
#define PENDING_MAX     4096u

/* A command whose answer waits for its ticket. */
struct gcmd {
    struct gpark park; /* first: the callback casts back */
    struct req *req;
    char group[GROUP_NAME_MAX + 1];
    uint64_t *offsets; /* create / reset: resolved positions */
    size_t n_offsets;
};

static struct gcmd *gcmd_new(struct req *r, const char *group, gpark_fn done)
{
    struct gcmd *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->req = r;
    c->park.done = done;
    snprintf(c->group, sizeof c->group, "%s", group);
    return c;
}

static void gcmd_free(struct gcmd *c)
{
    free(c->offsets);
    free(c);
}

static void fail_log(struct req *r, int err)
{
    char msg[MSG_MAX];
    snprintf(msg, sizeof msg, "the group log could not record the change: %s",
             verity_strerror(err));
    req_fail(r, err, msg);
}

/* ---- config and positions --------------------------------------------------------- */

/* The effective config in wire form; strings borrowed from gc. */
struct wcfg {
    Verity__GroupConfig c;
    char *topics[GROUP_TOPICS_MAX];
    int64_t backoff[GROUP_BACKOFF_STEPS_MAX];
};

static void cfg_to_wire(const struct group_config *gc, struct wcfg *w)
{
    verity__group_config__init(&w->c);
    w->c.mode = gc->mode == GROUP_SHARED ? VERITY__GROUP_MODE__GROUP_MODE_SHARED
                                         : VERITY__GROUP_MODE__GROUP_MODE_ORDERED;
    for (uint32_t i = 0; i < gc->n_topics; i++)
        w->topics[i] = (char *)gc->topics[i].name;
    w->c.n_topics = gc->n_topics;
    w->c.topics = w->topics;
    w->c.lease_ms = gc->lease_ms;
    w->c.session_ms = gc->session_ms;
    w->c.max_deliveries = gc->max_deliveries;
    for (uint32_t i = 0; i < gc->n_backoff; i++)
        w->backoff[i] = gc->backoff_ms[i];
    w->c.n_backoff_ms = gc->n_backoff;
    w->c.backoff_ms = w->backoff;
    w->c.dlq_topic = (char *)gc->dlq_topic;
    w->c.pending_max = gc->pending_max;
}

static int cfg_from_wire(struct broker *b, const char *name, const Verity__GroupConfig *w,
                         struct group_config *gc, char *msg, size_t cap)
{
    group_config_default(gc);
    snprintf(gc->name, sizeof gc->name, "%s", name);
    if (w->mode != VERITY__GROUP_MODE__GROUP_MODE_SHARED &&
        w->mode != VERITY__GROUP_MODE__GROUP_MODE_ORDERED) {
        snprintf(msg, cap, "mode must be ordered or shared (Kafka groups are made by Kafka clients)");
        return VERITY_EINVAL;
    }
    gc->mode = w->mode == VERITY__GROUP_MODE__GROUP_MODE_SHARED ? GROUP_SHARED : GROUP_ORDERED;
    uint64_t total = 0;
    for (size_t i = 0; i < w->n_topics; i++) {
        struct topic *t = topic_find_live(b, w->topics[i]);
        if (!t) {
            snprintf(msg, cap, "unknown topic %s", w->topics[i]);
            return VERITY_ENOTFOUND;
        }
        for (size_t k = 0; k < i; k++) {
            if (strcmp(w->topics[k], w->topics[i]) == 0) {
                snprintf(msg, cap, "topic %s named twice", w->topics[i]);
                return VERITY_EINVAL;
            }
        }
        snprintf(gc->topics[i].name, sizeof gc->topics[i].name, "%s", t->name);
        gc->topics[i].partitions = t->cfg.partitions;
        total += t->cfg.partitions;
    }
    gc->n_topics = (uint32_t)w->n_topics;
    if (total > GROUP_PARTITIONS_MAX) {
        snprintf(msg, cap, "the topics have %" PRIu64 " partitions; a group reads at most %u",
                 total, GROUP_PARTITIONS_MAX);
        return VERITY_ELIMIT;
    }
    if (w->lease_ms)
        gc->lease_ms = w->lease_ms;
    if (w->session_ms)
        gc->session_ms = w->session_ms;
    if (gc->lease_ms > GROUP_DELAY_MS_MAX || gc->session_ms > GROUP_DELAY_MS_MAX) {
        snprintf(msg, cap, "lease_ms and session_ms must be at most %lld",
                 (long long)GROUP_DELAY_MS_MAX);
        return VERITY_EINVAL;
    }
    if (w->max_deliveries)
        gc->max_deliveries = w->max_deliveries;
    if (gc->max_deliveries > GROUP_DELIVERIES_HARD) {
        snprintf(msg, cap, "max_deliveries %" PRIu32 " exceeds the limit %u", gc->max_deliveries,
                 GROUP_DELIVERIES_HARD);
        return VERITY_ELIMIT;
    }
    if (w->n_backoff_ms) {
        gc->n_backoff = (uint32_t)w->n_backoff_ms;
        for (size_t i = 0; i < w->n_backoff_ms; i++) {
            if (w->backoff_ms[i] > GROUP_DELAY_MS_MAX) {
                snprintf(msg, cap, "backoff step %lld ms exceeds %lld ms",
                         (long long)w->backoff_ms[i], (long long)GROUP_DELAY_MS_MAX);
                return VERITY_EINVAL;
            }
            gc->backoff_ms[i] = w->backoff_ms[i];
        }
    }
    if (w->dlq_topic && w->dlq_topic[0]) {
        snprintf(gc->dlq_topic, sizeof gc->dlq_topic, "%s", w->dlq_topic);
    } else if (strlen(gc->topics[0].name) + 4 > VERITY_TOPIC_NAME_MAX) {
        snprintf(msg, cap, "%s.dlq would be too long a topic name; set dlq_topic",
                 gc->topics[0].name);
        return VERITY_EINVAL;
    }
    for (uint32_t i = 0; i < gc->n_topics && gc->dlq_topic[0]; i++) {
        if (strcmp(gc->dlq_topic, gc->topics[i].name) == 0) {
            snprintf(msg, cap, "the dead-letter topic cannot be one the group reads");
            return VERITY_EINVAL;
        }
    }
    gc->pending_max = w->pending_max ? w->pending_max : b->cfg.group_pending_max;
    if (gc->pending_max > b->cfg.group_pending_max)
        gc->pending_max = b->cfg.group_pending_max;
    return 0;
}

/* Resolves pos (NULL: earliest) to one offset per flat partition of gc. */
static int resolve_position(struct broker *b, const struct group_config *gc,
                            const Verity__GroupPosition *pos, uint64_t *out, size_t n, char *msg,
                            size_t cap)
{
    Verity__GroupStart start = pos ? pos->start : VERITY__GROUP_START__GROUP_START_EARLIEST;
    size_t k = 0;
    for (uint32_t i = 0; i < gc->n_topics; i++) {
        struct topic *t = topic_find_live(b, gc->topics[i].name);
        for (uint32_t j = 0; j < gc->topics[i].partitions; j++, k++) {
            VERITY_VERIFY(k < n);
            struct partition *p = t && j < t->cfg.partitions ? t->parts[j] : NULL;
            if (!p || !p->log || !p->replica) {
                int err = p && p->error ? p->error : VERITY_ENOTFOUND;
                snprintf(msg, cap, "%s partition %" PRIu32 " is unavailable: %s",
                         gc->topics[i].name, j, verity_strerror(err));
                return err;
            }
            struct vlog_info info;
            vlog_get_info(p->log, &info);
            uint64_t hw = part_hw(p), lo = info.start_offset, o = lo;
            switch (start) {
            case VERITY__GROUP_START__GROUP_START_LATEST:
                o = hw;
                break;
            case VERITY__GROUP_START__GROUP_START_TIME: {
                int rc = vlog_offset_for_time(p->log, pos->timestamp_ms, &o);
                if (rc) {
                    snprintf(msg, cap, "time lookup failed on %s partition %" PRIu32,
                             gc->topics[i].name, j);
                    return rc;
                }
                break;
            }
            case VERITY__GROUP_START__GROUP_START_OFFSET:
                o = pos->offset;
                break;
            default:
                break;
            }
            if (o < lo)
                o = lo;
            if (o > hw)
                o = hw;
            out[k] = o;
        }
    }
    if (!pos || start != VERITY__GROUP_START__GROUP_START_OFFSET)
        return 0;
    for (size_t e = 0; e < pos->n_offsets; e++) {
        const Verity__GroupPartitionOffset *po = pos->offsets[e];
        size_t base = 0;
        bool found = false;
        for (uint32_t i = 0; i < gc->n_topics && !found; i++) {
            if (strcmp(gc->topics[i].name, po->topic) == 0 &&
                po->partition < gc->topics[i].partitions)
                found = true;
            else
                base += gc->topics[i].partitions;
        }
        if (!found) {
            snprintf(msg, cap, "the group does not read %s partition %" PRIu32, po->topic,
                     po->partition);
            return VERITY_EINVAL;
        }
        struct partition *p = groups_part(b, gc, (uint32_t)(base + po->partition));
        struct vlog_info info;
        vlog_get_info(p->log, &info);
        uint64_t hw = part_hw(p);
        if (po->offset < info.start_offset || po->offset > hw) {
            snprintf(msg, cap,
                     "offset %" PRIu64 " of %s partition %" PRIu32 " is outside [%" PRIu64
                     ", %" PRIu64 "]",
                     po->offset, po->topic, po->partition, info.start_offset, hw);
            return VERITY_EOFFSET;
        }
        out[base + po->partition] = po->offset;
    }
    return 0;
}

/* Offsets in wire form; strings borrowed from gc. */
static int offsets_to_wire(const struct group_config *gc, const uint64_t *off, size_t n,
                           Verity__GroupPartitionOffset **items,
                           Verity__GroupPartitionOffset ***ptrs)
{
    *items = calloc(n ? n : 1, sizeof **items);
    *ptrs = calloc(n ? n : 1, sizeof **ptrs);
    if (!*items || !*ptrs) {
        free(*items);
        free(*ptrs);
        return -ENOMEM;
    }
    for (size_t k = 0; k < n; k++) {
        uint32_t ti = 0, part = 0;
        VERITY_VERIFY(groups_pidx_split(gc, (uint32_t)k, &ti, &part));
        verity__group_partition_offset__init(&(*items)[k]);
        (*items)[k].topic = (char *)gc->topics[ti].name;
        (*items)[k].partition = part;
        (*items)[k].offset = off[k];
        (*ptrs)[k] = &(*items)[k];
    }
    return 0;
}

/* ---- CreateGroup ------------------------------------------------------------------ */

static void create_done(struct broker *b, struct gpark *p, int err)
{
    struct gcmd *c = (struct gcmd *)p;
    struct req *r = c->req;
    struct group_info info;
    if (err) {
        fail_log(r, err);
    } else if (group_get_info(b->groups.st, c->group, &info)) {
        req_fail(r, VERITY_ENOTFOUND, "group was deleted while being created");
    } else {
        struct wcfg w;
        cfg_to_wire(info.cfg, &w);
        Verity__CreateGroupResponse resp = VERITY__CREATE_GROUP_RESPONSE__INIT;
        Verity__GroupPartitionOffset *items = NULL, **ptrs = NULL;
        if (offsets_to_wire(info.cfg, c->offsets, c->n_offsets, &items, &ptrs)) {
            req_fail(r, -ENOMEM, NULL);
        } else {
            resp.config = &w.c;
            resp.group_id = info.group_id;
            resp.n_start_offsets = c->n_offsets;
            resp.start_offsets = ptrs;
            Verity__Envelope env = VERITY__ENVELOPE__INIT;
            env.body_case = VERITY__ENVELOPE__BODY_CREATE_GROUP_RESP;
            env.create_group_resp = &resp;
            req_reply(r, &env, NULL, 0);
            free(items);
            free(ptrs);
        }
    }
    gcmd_free(c);
}

void h_create_group(struct req *r)
{
    struct broker *b = r->b;
    const Verity__CreateGroupRequest *q = r->msg->env->create_group_req;
    char msg[MSG_MAX];
    int rc = groups_writable(b, msg, sizeof msg);
    if (rc) {
        req_fail(r, rc, msg);
        return;
    }
    struct group_config *gc = malloc(sizeof *gc);
    struct gcmd *c = gcmd_new(r, q->group, create_done);
    if (!gc || !c) {
        free(gc);
        free(c);
        req_fail(r, -ENOMEM, NULL);
        return;
    }
    rc = cfg_from_wire(b, q->group, q->config, gc, msg, sizeof msg);
    if (rc == 0)
        rc = groups_check_topics(b, gc, msg, sizeof msg);
    uint64_t total = 0;
    for (uint32_t i = 0; i < gc->n_topics; i++)
        total += gc->topics[i].partitions;
    if (rc == 0) {
        c->n_offsets = total;
        c->offsets = calloc(total ? total : 1, sizeof *c->offsets);
        rc = c->offsets ? resolve_position(b, gc, q->start, c->offsets, total, msg, sizeof msg)
                        : -ENOMEM;
    }
    uint64_t ticket = 0;
    if (rc == 0) {
        rc = group_create(b->groups.st, gc, c->offsets, c->n_offsets, now_ms(), &ticket);
        if (rc == VERITY_EINVAL)
            snprintf(msg, sizeof msg, "invalid group configuration");
        else if (rc == VERITY_ELIMIT)
            snprintf(msg, sizeof msg, "%u groups exist (limit)", GROUP_GROUPS_MAX);
        else if (rc == VERITY_EEXIST)
            snprintf(msg, sizeof msg, "group %s already exists", q->group);
    }
    free(gc);
    if (rc) {
        gcmd_free(c);
        req_fail(r, rc, msg);
        return;
    }
    char qn[GROUP_NAME_MAX + 8];
    groups_changed(b);
    blog(BLOG_INFO, "group_created", "group=%s partitions=%" PRIu64,
         blog_q(q->group, qn, sizeof qn), total);
    groups_after(b);
    groups_park(b, &c->park, ticket);
}

/* ---- DeleteGroup ------------------------------------------------------------------ */

static void simple_done(struct broker *b, struct gpark *p, int err)
{
    struct gcmd *c = (struct gcmd *)p;
    struct req *r = c->req;
    (void)b;
    if (err) {
        fail_log(r, err);
    } else {
        Verity__Envelope env = VERITY__ENVELOPE__INIT;
        Verity__DeleteGroupResponse resp = VERITY__DELETE_GROUP_RESPONSE__INIT;
        env.body_case = VERITY__ENVELOPE__BODY_DELETE_GROUP_RESP;
        env.delete_group_resp = &resp;
        req_reply(r, &env, NULL, 0);
    }
    gcmd_free(c);
}

void h_delete_group(struct req *r)
{
    struct broker *b = r->b;
    const char *name = r->msg->env->delete_group_req->group;
    char msg[MSG_MAX];
    int rc = groups_writable(b, msg, sizeof msg);
    if (rc) {
        req_fail(r, rc, msg);
        return;
    }
    struct gcmd *c = gcmd_new(r, name, simple_done);
    if (!c) {
        req_fail(r, -ENOMEM, NULL);
        return;
    }
    uint64_t ticket = 0;
    struct bgroup *bg = bgroup_get(b, name);
    rc = group_delete(b->groups.st, name, now_ms(), &ticket);
    if (rc) {
        gcmd_free(c);
        group_fail(r, rc, name, 0, NULL);
        return;
    }
    if (bg) {
        while (!TAILQ_EMPTY(&bg->waiters))
            gfetch_fail(TAILQ_FIRST(&bg->waiters)->f, VERITY_ENOTFOUND, "the group was deleted");
        bgroup_drop(b, name);
    }
    char qn[GROUP_NAME_MAX + 8];
    groups_changed(b);
    blog(BLOG_INFO, "group_deleted", "group=%s", blog_q(name, qn, sizeof qn));
    groups_after(b);
    groups_park(b, &c->park, ticket);
}

/* ---- ListGroups ------------------------------------------------------------------- */

static int name_cmp(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Sum of unacked over the group's partitions. */
static uint64_t group_unacked(struct broker *b, const char *name, const struct group_config *gc,
                              uint32_t n_parts)
{
    uint64_t *hwm = calloc(n_parts ? n_parts : 1, sizeof *hwm);
    uint64_t sum = 0;
    if (!hwm)
        return 0;
    groups_hwm(b, gc, hwm, n_parts);
    for (uint32_t i = 0; i < n_parts; i++) {
        struct group_lag lag;
        if (group_get_lag(b->groups.st, name, i, hwm[i], &lag) == 0)
            sum += lag.unacked;
    }
    free(hwm);
    return sum;
}

void h_list_groups(struct req *r)
{
    struct broker *b = r->b;
    struct group_state *st = b->groups.st;
    if (!st) {
        req_fail(r, VERITY_ECLOSED, "consumer groups are not available");
        return;
    }
    size_t n = 0, nk = 0;
    Verity__GroupSummary **kafka = NULL; /* Kafka classic groups, listed after ours */
    group_list(st, NULL, 0, &n);
    const char **names = calloc(n ? n : 1, sizeof *names);
    Verity__GroupSummary *sums = calloc(n ? n : 1, sizeof *sums);
    struct wcfg *w = calloc(n ? n : 1, sizeof *w);
    Verity__GroupSummary **ptrs = NULL;
    if (!names || !sums || !w || kafka_group_summaries(b, &kafka, &nk) ||
        !(ptrs = calloc(n + nk ? n + nk : 1, sizeof *ptrs))) {
        req_fail(r, -ENOMEM, NULL);
        goto out;
    }
    group_list(st, names, n, &n);
    qsort(names, n, sizeof *names, name_cmp);
    for (size_t i = 0; i < n; i++) {
        struct group_info info;
        VERITY_VERIFY(group_get_info(st, names[i], &info) == 0);
        cfg_to_wire(info.cfg, &w[i]);
        Verity__GroupSummary *s = &sums[i];
        verity__group_summary__init(s);
        s->group = (char *)names[i];
        s->mode = w[i].c.mode;
        s->n_topics = w[i].c.n_topics;
        s->topics = w[i].c.topics;
        s->members = info.n_members;
        s->generation = info.generation;
        s->unacked = group_unacked(b, names[i], info.cfg, info.n_partitions);
        s->leased = info.n_leased;
        s->dead_lettered = info.dead_lettered;
        ptrs[i] = s;
    }
    for (size_t i = 0; i < nk; i++)
        ptrs[n + i] = kafka[i];
    Verity__ListGroupsResponse resp = VERITY__LIST_GROUPS_RESPONSE__INIT;
    resp.n_groups = n + nk;
    resp.groups = ptrs;
    Verity__Envelope env = VERITY__ENVELOPE__INIT;
    env.body_case = VERITY__ENVELOPE__BODY_LIST_GROUPS_RESP;
    env.list_groups_resp = &resp;
    req_reply(r, &env, NULL, 0);
out:
    free(names);
    free(sums);
    free(ptrs);
    free(w);
    kafka_group_summaries_free(kafka, nk);
}

/* ---- DescribeGroup ------------------------------------------------------------------ */

struct describe {
    struct group_member_info *members;
    Verity__GroupMember *wm;
    Verity__GroupMember **wm_ptrs;
    Verity__GroupPartition *gp; /* every member's assignment, back to back */
    Verity__GroupPartition **gp_ptrs;
    Verity__GroupPartitionState *ps;
    Verity__GroupPartitionState **ps_ptrs;
    uint32_t *pidx;
    uint64_t *owner;
    uint64_t *hwm;
};

static void describe_free(struct describe *d)
{
    free(d->members);
    free(d->wm);
    free(d->wm_ptrs);
    free(d->gp);
    free(d->gp_ptrs);
    free(d->ps);
    free(d->ps_ptrs);
    free(d->pidx);
    free(d->owner);
    free(d->hwm);
}

void h_describe_group(struct req *r)
{
    struct broker *b = r->b;
    struct group_state *st = b->groups.st;
    const char *name = r->msg->env->describe_group_req->group;
    if (r->msg->env->describe_group_req->kafka) {
        kafka_describe_group(r, name);
        return;
    }
    struct group_info info;
    struct describe d = {0};
    int rc = st ? group_get_info(st, name, &info) : VERITY_ECLOSED;
    if (rc) {
        group_fail(r, rc, name, 0, NULL);
        return;
    }
    uint32_t np = info.n_partitions, nm = info.n_members;
    size_t n_members = 0;
    d.members = calloc(nm ? nm : 1, sizeof *d.members);
    d.wm = calloc(nm ? nm : 1, sizeof *d.wm);
    d.wm_ptrs = calloc(nm ? nm : 1, sizeof *d.wm_ptrs);
    d.gp = calloc(np ? np : 1, sizeof *d.gp);
    d.gp_ptrs = calloc(np ? np : 1, sizeof *d.gp_ptrs);
    d.ps = calloc(np ? np : 1, sizeof *d.ps);
    d.ps_ptrs = calloc(np ? np : 1, sizeof *d.ps_ptrs);
    d.pidx = calloc(np ? np : 1, sizeof *d.pidx);
    d.owner = calloc(np ? np : 1, sizeof *d.owner);
    d.hwm = calloc(np ? np : 1, sizeof *d.hwm);
    if (!d.members || !d.wm || !d.wm_ptrs || !d.gp || !d.gp_ptrs || !d.ps || !d.ps_ptrs ||
        !d.pidx || !d.owner || !d.hwm || group_members(st, name, d.members, nm, &n_members)) {
        describe_free(&d);
        req_fail(r, -ENOMEM, NULL);
        return;
    }
    if (n_members > nm)
        n_members = nm;
    const struct group_config *gc = info.cfg;
    size_t used = 0;
    for (size_t i = 0; i < n_members; i++) {
        Verity__GroupMember *m = &d.wm[i];
        verity__group_member__init(m);
        m->member_id = d.members[i].member_id;
        m->name = (char *)d.members[i].name;
        m->session_ms = d.members[i].session_ms;
        m->last_seen_ms = d.members[i].last_seen_ms;
        m->leased = d.members[i].n_leased;
        size_t na = 0;
        if (gc->mode == GROUP_ORDERED &&
            group_assignment(st, name, m->member_id, d.pidx, np, &na) == 0) {
            if (na > np - used)
                na = np - used;
            m->assignment = &d.gp_ptrs[used];
            m->n_assignment = na;
            for (size_t k = 0; k < na; k++) {
                uint32_t ti = 0, part = 0;
                VERITY_VERIFY(groups_pidx_split(gc, d.pidx[k], &ti, &part));
                verity__group_partition__init(&d.gp[used]);
                d.gp[used].topic = (char *)gc->topics[ti].name;
                d.gp[used].partition = part;
                d.gp_ptrs[used] = &d.gp[used];
                d.owner[d.pidx[k]] = m->member_id;
                used++;
            }
        }
        d.wm_ptrs[i] = m;
    }
    groups_hwm(b, gc, d.hwm, np);
    int64_t now = now_ms();
    for (uint32_t k = 0; k < np; k++) {
        Verity__GroupPartitionState *s = &d.ps[k];
        verity__group_partition_state__init(s);
        uint32_t ti = 0, part = 0;
        VERITY_VERIFY(groups_pidx_split(gc, k, &ti, &part));
        s->topic = (char *)gc->topics[ti].name;
        s->partition = part;
        s->high_watermark = d.hwm[k];
        s->owner = d.owner[k];
        struct group_lag lag;
        if (group_get_lag(st, name, k, d.hwm[k], &lag) == 0) {
            s->ack_floor = lag.ack_floor;
            s->read_cursor = lag.read_cursor;
            s->unacked = lag.unacked;
            s->leased = lag.leased;
            s->waiting = lag.waiting;
        }
        struct partition *p = groups_part(b, gc, k);
        if (p) {
            struct vlog_info vi;
            vlog_get_info(p->log, &vi);
            s->start_offset = vi.start_offset;
            if (s->unacked > 0) {
                uint64_t at = s->ack_floor > vi.start_offset ? s->ack_floor : vi.start_offset;
                int64_t ts = groups_batch_ts(p, at);
                s->oldest_unacked_age_ms = ts != INT64_MIN && ts < now ? now - ts : 0;
            }
        } else {
            s->error = codec_err_to_wire(VERITY_ENOTFOUND);
        }
        d.ps_ptrs[k] = s;
    }
    struct wcfg w;
    cfg_to_wire(gc, &w);
    struct bgroup *bg = bgroup_get(b, name);
    Verity__GroupDescription desc = VERITY__GROUP_DESCRIPTION__INIT;
    desc.group = (char *)gc->name;
    desc.group_id = info.group_id;
    desc.config = &w.c;
    desc.generation = info.generation;
    desc.n_members = n_members;
    desc.members = d.wm_ptrs;
    desc.n_partitions = np;
    desc.partitions = d.ps_ptrs;
    desc.tracked = info.n_tracked;
    desc.leased = info.n_leased;
    desc.waiting = info.n_waiting;
    desc.dead_letter_pending = info.n_dead_letter;
    desc.dead_lettered = info.dead_lettered;
    desc.pending_max = info.pending_max;
    desc.redeliveries = bg ? bg->redeliveries : 0;
    Verity__DescribeGroupResponse resp = VERITY__DESCRIBE_GROUP_RESPONSE__INIT;
    resp.group = &desc;
    Verity__Envelope env = VERITY__ENVELOPE__INIT;
    env.body_case = VERITY__ENVELOPE__BODY_DESCRIBE_GROUP_RESP;
    env.describe_group_resp = &resp;
    req_reply(r, &env, NULL, 0);
    describe_free(&d);
}

/* ---- GroupPending ------------------------------------------------------------------- */

void h_group_pending(struct req *r)
{
    struct broker *b = r->b;
    struct group_state *st = b->groups.st;
    const Verity__GroupPendingRequest *q = r->msg->env->group_pending_req;
    struct group_info info;
    int rc = st ? group_get_info(st, q->group, &info) : VERITY_ECLOSED;
    if (rc) {
        group_fail(r, rc, q->group, 0, NULL);
        return;
    }
    size_t cap = q->max_entries ? q->max_entries : PENDING_DEFAULT;
    if (cap > PENDING_MAX)
        cap = PENDING_MAX;
    struct group_pending *pend = calloc(cap, sizeof *pend);
    Verity__GroupPendingEntry *ents = calloc(cap, sizeof *ents);
    Verity__GroupPendingEntry **ptrs = calloc(cap, sizeof *ptrs);
    size_t total = 0;
    if (!pend || !ents || !ptrs) {
        req_fail(r, -ENOMEM, NULL);
        goto out;
    }
    rc = group_pending_list(st, q->group, q->member_id, pend, cap, &total);
    if (rc) {
        group_fail(r, rc, q->group, q->member_id, NULL);
        goto out;
    }
    int64_t now = now_ms();
    size_t n = total < cap ? total : cap, k = 0;
    for (size_t i = 0; i < n; i++) {
        int64_t first = pend[i].first_delivery_ms;
        int64_t age = first == INT64_MIN || first > now ? 0 : now - first;
        if (q->min_age_ms > 0 && age < q->min_age_ms)
            continue;
        uint32_t ti = 0, part = 0;
        VERITY_VERIFY(groups_pidx_split(info.cfg, pend[i].pidx, &ti, &part));
        Verity__GroupPendingEntry *e = &ents[k];
        verity__group_pending_entry__init(e);
        e->topic = (char *)info.cfg->topics[ti].name;
        e->partition = part;
        e->offset = pend[i].offset;
        e->member_id = pend[i].member_id;
        e->delivery_count = pend[i].delivery_count;
        e->age_ms = age;
        e->lease_deadline_ms = pend[i].lease_deadline_ms;
        ptrs[k++] = e;
    }
    Verity__GroupPendingResponse resp = VERITY__GROUP_PENDING_RESPONSE__INIT;
    resp.total = total;
    resp.n_entries = k;
    resp.entries = ptrs;
    Verity__Envelope env = VERITY__ENVELOPE__INIT;
    env.body_case = VERITY__ENVELOPE__BODY_GROUP_PENDING_RESP;
    env.group_pending_resp = &resp;
    req_reply(r, &env, NULL, 0);
out:
    free(pend);
    free(ents);
    free(ptrs);
}

/* ---- ResetGroup ---------------------------------------------------------------------- */

static void reset_done(struct broker *b, struct gpark *p, int err)
{
    struct gcmd *c = (struct gcmd *)p;
    struct req *r = c->req;
    struct group_info info;
    if (err) {
        fail_log(r, err);
    } else if (group_get_info(b->groups.st, c->group, &info)) {
        req_fail(r, VERITY_ENOTFOUND, "group was deleted while being reset");
    } else {
        Verity__GroupPartitionOffset *items = NULL, **ptrs = NULL;
        if (offsets_to_wire(info.cfg, c->offsets, c->n_offsets, &items, &ptrs)) {
            req_fail(r, -ENOMEM, NULL);
        } else {
            Verity__ResetGroupResponse resp = VERITY__RESET_GROUP_RESPONSE__INIT;
            resp.n_offsets = c->n_offsets;
            resp.offsets = ptrs;
            Verity__Envelope env = VERITY__ENVELOPE__INIT;
            env.body_case = VERITY__ENVELOPE__BODY_RESET_GROUP_RESP;
            env.reset_group_resp = &resp;
            req_reply(r, &env, NULL, 0);
            free(items);
            free(ptrs);
        }
    }
    gcmd_free(c);
}

void h_reset_group(struct req *r)
{
    struct broker *b = r->b;
    const Verity__ResetGroupRequest *q = r->msg->env->reset_group_req;
    char msg[MSG_MAX] = "";
    int rc = groups_writable(b, msg, sizeof msg);
    if (rc) {
        req_fail(r, rc, msg);
        return;
    }
    struct group_info info;
    if ((rc = group_get_info(b->groups.st, q->group, &info))) {
        group_fail(r, rc, q->group, 0, NULL);
        return;
    }
    struct gcmd *c = gcmd_new(r, q->group, reset_done);
    if (c) {
        c->n_offsets = info.n_partitions;
        c->offsets = calloc(info.n_partitions ? info.n_partitions : 1, sizeof *c->offsets);
    }
    if (!c || !c->offsets) {
        if (c)
            gcmd_free(c);
        req_fail(r, -ENOMEM, NULL);
        return;
    }
    rc = resolve_position(b, info.cfg, q->position, c->offsets, c->n_offsets, msg, sizeof msg);
    uint64_t ticket = 0;
    if (rc == 0)
        rc = group_reset(b->groups.st, q->group, c->offsets, c->n_offsets, now_ms(), &ticket);
    if (rc) {
        gcmd_free(c);
        req_fail(r, rc, msg[0] ? msg : verity_strerror(rc));
        return;
    }
    char qn[GROUP_NAME_MAX + 8];
    blog(BLOG_INFO, "group_reset", "group=%s", blog_q(q->group, qn, sizeof qn));
    groups_after(b);
    struct bgroup *bg = bgroup_get(b, q->group);
    if (bg)
        groups_wake(bg);
    groups_park(b, &c->park, ticket);
}
