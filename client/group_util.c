/*
 * Small public helpers of the group API (modes, names, defaults, frees)
 * and the conversion of the group admin answers from the wire into the
 * public structs of include/verity/group.h. Every string is copied: the
 * results outlive the decoded envelope.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "client/group_int.h"

int verity_group_mode_parse(const char *s, enum verity_group_mode *out)
{
    if (s && strcmp(s, "ordered") == 0) {
        *out = VERITY_GROUP_ORDERED;
        return 0;
    }
    if (s && strcmp(s, "shared") == 0) {
        *out = VERITY_GROUP_SHARED;
        return 0;
    }
    return VERITY_EINVAL;
}

const char *verity_group_mode_name(enum verity_group_mode m)
{
    return m == VERITY_GROUP_SHARED    ? "shared"
           : m == VERITY_GROUP_ORDERED ? "ordered"
           : m == VERITY_GROUP_KAFKA   ? "kafka"
                                       : "unknown";
}

bool verity_group_name_ok(const char *name)
{
    /* Same alphabet and rules as topic names, without internal names. */
    return name && strlen(name) <= VERITY_GROUP_NAME_MAX && codec_topic_name_ok(name, false);
}

void verity_group_consumer_config_default(struct verity_group_consumer_config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    verity_conn_config_default(&cfg->conn);
    cfg->fetch_max = 1000;
    cfg->fetch_max_wait_ms = 500;
    cfg->fetch_inflight = 1;
    cfg->queue_max = 2000;
}

enum verity_group_mode gw_mode_from_wire(int m)
{
    return m == VERITY__GROUP_MODE__GROUP_MODE_SHARED  ? VERITY_GROUP_SHARED
           : m == VERITY__GROUP_MODE__GROUP_MODE_KAFKA ? VERITY_GROUP_KAFKA
                                                       : VERITY_GROUP_ORDERED;
}

int gw_mode_to_wire(enum verity_group_mode m)
{
    return m == VERITY_GROUP_SHARED ? VERITY__GROUP_MODE__GROUP_MODE_SHARED
                                    : VERITY__GROUP_MODE__GROUP_MODE_ORDERED;
}

int gw_start_to_wire(enum verity_group_start s)
{
    switch (s) {
    case VERITY_GROUP_START_LATEST:
        return VERITY__GROUP_START__GROUP_START_LATEST;
    case VERITY_GROUP_START_OFFSET:
        return VERITY__GROUP_START__GROUP_START_OFFSET;
    case VERITY_GROUP_START_TIME:
        return VERITY__GROUP_START__GROUP_START_TIME;
    default:
        return VERITY__GROUP_START__GROUP_START_EARLIEST;
    }
}

/* ---- frees --------------------------------------------------------------- */

void verity_group_offsets_free(struct verity_group_offset *o, size_t n)
{
    if (!o)
        return;
    for (size_t i = 0; i < n; i++)
        free(o[i].topic);
    free(o);
}

void verity_group_pending_free(struct verity_group_pending_entry *e, size_t n)
{
    if (!e)
        return;
    for (size_t i = 0; i < n; i++)
        free(e[i].topic);
    free(e);
}

void gw_info_clear(struct verity_group_info *g)
{
    free(g->name);
    for (size_t i = 0; i < g->n_topics; i++)
        free(g->topics[i]);
    free(g->topics);
    free(g->dlq_topic);
    for (size_t i = 0; i < g->n_members; i++) {
        free(g->members[i].name);
        verity_group_offsets_free(g->members[i].assigned, g->members[i].n_assigned);
    }
    free(g->members);
    for (size_t i = 0; i < g->n_partitions; i++)
        free(g->partitions[i].topic);
    free(g->partitions);
    memset(g, 0, sizeof *g);
}

void verity_group_info_free(struct verity_group_info *g, size_t n)
{
    if (!g)
        return;
    for (size_t i = 0; i < n; i++)
        gw_info_clear(&g[i]);
    free(g);
}

/* ---- wire -> public -------------------------------------------------------- */

/* strdup of a wire string (NULL counts as ""). */
static char *dup(const char *s)
{
    return strdup(s ? s : "");
}

static int topics_copy(char **w, size_t n, struct verity_group_info *out)
{
    if (n == 0)
        return 0;
    out->topics = calloc(n, sizeof *out->topics);
    if (!out->topics)
        return -ENOMEM;
    for (size_t i = 0; i < n; i++) {
        if (!(out->topics[i] = dup(w[i])))
            return -ENOMEM;
        out->n_topics = i + 1;
    }
    return 0;
}

int gw_info_from_summary(const Verity__GroupSummary *s, struct verity_group_info *out)
{
    memset(out, 0, sizeof *out);
    if (!(out->name = dup(s->group)) || topics_copy(s->topics, s->n_topics, out)) {
        gw_info_clear(out);
        return -ENOMEM;
    }
    out->mode = gw_mode_from_wire(s->mode);
    out->member_count = s->members;
    out->generation = s->generation;
    out->unacked = s->unacked;
    out->leased = s->leased;
    out->dead_lettered = s->dead_lettered;
    return 0;
}

static int member_from_wire(const Verity__GroupMember *w, struct verity_group_member *m)
{
    m->member_id = w->member_id;
    m->session_ms = w->session_ms;
    m->last_seen_ms = w->last_seen_ms;
    m->leased = w->leased;
    if (!(m->name = dup(w->name)))
        return -ENOMEM;
    if (w->n_assignment == 0)
        return 0;
    m->assigned = calloc(w->n_assignment, sizeof *m->assigned);
    if (!m->assigned)
        return -ENOMEM;
    for (size_t i = 0; i < w->n_assignment; i++) {
        if (!(m->assigned[i].topic = dup(w->assignment[i]->topic)))
            return -ENOMEM;
        m->assigned[i].partition = w->assignment[i]->partition;
        m->n_assigned = i + 1;
    }
    return 0;
}

static void partition_from_wire(const Verity__GroupPartitionState *w,
                                struct verity_group_partition *p)
{
    p->partition = w->partition;
    p->ack_floor = w->ack_floor;
    p->read_cursor = w->read_cursor;
    p->high_watermark = w->high_watermark;
    p->start_offset = w->start_offset;
    p->unacked = w->unacked;
    p->leased = w->leased;
    p->waiting = w->waiting;
    p->oldest_unacked_age_ms = w->oldest_unacked_age_ms;
    p->owner = w->owner;
    p->error = codec_err_from_wire(w->error);
}

static int config_from_wire(const Verity__GroupConfig *c, struct verity_group_info *out)
{
    if (!c)
        return 0;
    out->mode = gw_mode_from_wire(c->mode);
    out->lease_ms = c->lease_ms;
    out->session_ms = c->session_ms;
    out->max_deliveries = c->max_deliveries;
    out->pending_max = c->pending_max;
    out->n_backoff = 0;
    for (size_t i = 0; i < c->n_backoff_ms && i < VERITY_GROUP_BACKOFF_MAX; i++)
        out->backoff_ms[out->n_backoff++] = c->backoff_ms[i];
    if (topics_copy(c->topics, c->n_topics, out) || !(out->dlq_topic = dup(c->dlq_topic)))
        return -ENOMEM;
    return 0;
}

int gw_info_from_description(const Verity__GroupDescription *d, struct verity_group_info *out)
{
    memset(out, 0, sizeof *out);
    int rc = -ENOMEM;
    if (!(out->name = dup(d->group)) || config_from_wire(d->config, out))
        goto fail;
    out->group_id = d->group_id;
    out->generation = d->generation;
    out->tracked = d->tracked;
    out->leased = d->leased;
    out->waiting = d->waiting;
    out->dead_letter_pending = d->dead_letter_pending;
    out->dead_lettered = d->dead_lettered;
    out->redeliveries = d->redeliveries;
    if (d->pending_max)
        out->pending_max = d->pending_max;
    out->member_count = (uint32_t)d->n_members;
    if (d->n_members) {
        out->members = calloc(d->n_members, sizeof *out->members);
        if (!out->members)
            goto fail;
        for (size_t i = 0; i < d->n_members; i++) {
            out->n_members = i + 1;
            if (member_from_wire(d->members[i], &out->members[i]))
                goto fail;
        }
    }
    if (d->n_partitions) {
        out->partitions = calloc(d->n_partitions, sizeof *out->partitions);
        if (!out->partitions)
            goto fail;
        for (size_t i = 0; i < d->n_partitions; i++) {
            out->n_partitions = i + 1;
            if (!(out->partitions[i].topic = dup(d->partitions[i]->topic)))
                goto fail;
            partition_from_wire(d->partitions[i], &out->partitions[i]);
            out->unacked += d->partitions[i]->unacked;
        }
    }
    return 0;
fail:
    gw_info_clear(out);
    return rc;
}

int gw_offsets_from_wire(Verity__GroupPartitionOffset *const *w, size_t n,
                         struct verity_group_offset **out)
{
    *out = NULL;
    if (n == 0)
        return 0;
    struct verity_group_offset *o = calloc(n, sizeof *o);
    if (!o)
        return -ENOMEM;
    for (size_t i = 0; i < n; i++) {
        if (!(o[i].topic = dup(w[i]->topic))) {
            verity_group_offsets_free(o, i);
            return -ENOMEM;
        }
        o[i].partition = w[i]->partition;
        o[i].offset = w[i]->offset;
    }
    *out = o;
    return 0;
}

int gw_pending_from_wire(Verity__GroupPendingEntry *const *w, size_t n,
                         struct verity_group_pending_entry **out)
{
    *out = NULL;
    if (n == 0)
        return 0;
    struct verity_group_pending_entry *e = calloc(n, sizeof *e);
    if (!e)
        return -ENOMEM;
    for (size_t i = 0; i < n; i++) {
        if (!(e[i].topic = dup(w[i]->topic))) {
            verity_group_pending_free(e, i);
            return -ENOMEM;
        }
        e[i].partition = w[i]->partition;
        e[i].offset = w[i]->offset;
        e[i].member_id = w[i]->member_id;
        e[i].delivery_count = w[i]->delivery_count;
        e[i].age_ms = w[i]->age_ms;
        e[i].lease_deadline_ms = w[i]->lease_deadline_ms;
    }
    *out = e;
    return 0;
}
