/*
 * Kafka classic consumer groups (client-side assignor protocol):
 * FindCoordinator, JoinGroup, SyncGroup, Heartbeat, LeaveGroup,
 * OffsetCommit, OffsetFetch. This broker is the coordinator of every group.
 * Kafka groups are their own namespace, apart from Verity's groups.
 *
 * Group states (transitions by the named function):
 *
 *   EMPTY --join--> JOINING --kg_complete_join--> SYNCING --leader's sync-->
 *   STABLE --join of a new/changed member, leave, expiry--> JOINING ...
 *   any --last member gone--> EMPTY
 *
 * JOINING collects JoinGroup requests (parked) until every member of the
 * group has rejoined and KG_JOIN_DELAY_MS passed since the rebalance began,
 * or the rebalance timeout expired (members that did not rejoin are
 * removed). Then the generation advances, the first member becomes leader
 * and receives every member's metadata; all parked joins are answered.
 * SYNCING parks followers' SyncGroups until the leader's SyncGroup brings
 * the assignments. Members that send nothing for their session timeout are
 * removed (kg_tick, every KG_TICK_MS).
 *
 * Committed offsets are durable: each OffsetCommit appends one Verity batch
 * to the log <data_dir>/__kafka_offsets (durability always, so the append
 * returns after fdatasync and the answer follows), one record per partition
 * with key = group id and a JSON value {"t":topic,"p":partition,"o":offset,
 * "m":metadata}. On open the log is replayed in order; the last record for
 * (group, topic, partition) wins. Choosing a log of our own (rather than the
 * metadata log or Verity's group log) keeps Kafka offsets out of formats
 * other code replays, while reusing the same chained, checksummed, signed
 * storage and `verity log verify`.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>
#include <jansson.h>

#include "broker/blog.h"
#include "broker/kafka/kafka_int.h"
#include "verity/errors.h"
#include "verity/verify.h"

#define KG_ID_MAX          255
#define KG_MEMBER_ID_MAX   127
#define KG_PROTO_MAX       8     /* protocols per member */
#define KG_MEMBERS_MAX     1000  /* per group */
#define KG_GROUPS_MAX      10000
#define KG_OFFSETS_MAX     200000 /* committed (group, topic, partition) entries in all */
#define KG_META_MAX        4096  /* bytes of commit metadata kept */
#define KG_JOIN_DELAY_MS   300
#define KG_TICK_MS         200
#define KG_SESSION_MIN_MS  1000
#define KG_SESSION_MAX_MS  300000

enum kg_state { KG_EMPTY, KG_JOINING, KG_SYNCING, KG_STABLE };

struct kproto {
    char name[64];
    uint8_t *meta; /* owned */
    int32_t meta_len;
};

struct kmember {
    char id[KG_MEMBER_ID_MAX + 1];
    int32_t session_ms;
    int32_t rebalance_ms;
    int64_t last_seen_ms;
    struct kproto protos[KG_PROTO_MAX];
    int n_protos;
    bool joined;         /* rejoined in the current JOINING round */
    struct kreq *join_q; /* parked JoinGroup */
    struct kreq *sync_q; /* parked SyncGroup */
    uint8_t *assign;     /* owned */
    int32_t assign_len;
    struct kmember *next;
};

struct koffset {
    char *topic; /* owned */
    int32_t partition;
    int64_t offset;
    char *meta; /* owned, may be NULL */
    struct koffset *next;
};

struct kgroup {
    char id[KG_ID_MAX + 1];
    enum kg_state state;
    int32_t generation;
    char protocol_type[64];
    char protocol[64];
    char leader[KG_MEMBER_ID_MAX + 1];
    struct kmember *members;
    size_t n_members;
    int64_t rebalance_start_ms;
    int64_t rebalance_deadline_ms;
    struct koffset *offsets;
    struct kgroup *next;
};

struct kgroups {
    struct kafka *k;
    struct kgroup *list;
    size_t n_groups;
    size_t n_offsets;
    uint64_t next_member;
    struct vlog *log;
    struct event *tick;
};

static void kproto_clear(struct kmember *m)
{
    for (int i = 0; i < m->n_protos; i++)
        free(m->protos[i].meta);
    m->n_protos = 0;
}

static void kmember_free(struct kmember *m)
{
    kproto_clear(m);
    free(m->assign);
    free(m);
}

static struct kgroup *kg_find(struct kgroups *gs, struct kstr id, bool create)
{
    char name[KG_ID_MAX + 1];
    if (!kstr_copy(id, name, sizeof name) || !name[0])
        return NULL;
    for (struct kgroup *g = gs->list; g; g = g->next)
        if (strcmp(g->id, name) == 0)
            return g;
    if (!create || gs->n_groups >= KG_GROUPS_MAX)
        return NULL;
    struct kgroup *g = calloc(1, sizeof *g);
    if (!g)
        return NULL;
    snprintf(g->id, sizeof g->id, "%s", name);
    g->next = gs->list;
    gs->list = g;
    gs->n_groups++;
    return g;
}

/* The group a request names, inside the connection's tenant after the ACL
 * check; NULL with *err set when it is refused (KE_NONE when there is just
 * no such group and create is false). */
static struct kgroup *kg_lookup(struct kreq *q, struct kstr gid, bool create, int16_t *err)
{
    char name[KG_ID_MAX + 1];
    *err = kname_in(q, gid, true, AUTH_OP_GROUP, name, sizeof name);
    if (*err)
        return NULL;
    struct kstr s = {(const uint8_t *)name, (int32_t)strlen(name)};
    return kg_find(q->k->groups, s, create);
}

static struct kmember *kg_member(struct kgroup *g, struct kstr id)
{
    for (struct kmember *m = g->members; m; m = m->next)
        if (kstr_eq(id, m->id))
            return m;
    return NULL;
}

/* ---- JoinGroup / SyncGroup answers --------------------------------------- */

static void join_answer(struct kmember *m, struct kgroup *g, int16_t err)
{
    struct kreq *q = m->join_q;
    m->join_q = NULL;
    struct kw *w = &q->w;
    if (q->api_version >= 2)
        kw_i32(w, 0);
    kw_i16(w, err);
    kw_i32(w, err ? -1 : g->generation);
    kw_str(w, err ? "" : g->protocol);
    kw_str(w, err ? "" : g->leader);
    kw_str(w, err ? "" : m->id);
    bool leader = !err && strcmp(g->leader, m->id) == 0;
    kw_i32(w, leader ? (int32_t)g->n_members : 0);
    if (leader) {
        for (struct kmember *o = g->members; o; o = o->next) {
            kw_str(w, o->id);
            if (q->api_version >= 5)
                kw_str(w, NULL);
            const struct kproto *p = NULL;
            for (int i = 0; i < o->n_protos && !p; i++)
                if (strcmp(o->protos[i].name, g->protocol) == 0)
                    p = &o->protos[i];
            kw_i32(w, p ? p->meta_len : 0);
            if (p)
                kw_raw(w, p->meta, (size_t)p->meta_len);
        }
    }
    kreq_done(q);
}

static void sync_answer(struct kmember *m, int16_t err)
{
    struct kreq *q = m->sync_q;
    m->sync_q = NULL;
    if (q->api_version >= 1)
        kw_i32(&q->w, 0);
    kw_i16(&q->w, err);
    kw_i32(&q->w, err ? 0 : m->assign_len);
    if (!err && m->assign_len > 0)
        kw_raw(&q->w, m->assign, (size_t)m->assign_len);
    kreq_done(q);
}

static void kg_remove_member(struct kgroup *g, struct kmember *m, int16_t err)
{
    struct kmember **pp = &g->members;
    while (*pp != m)
        pp = &(*pp)->next;
    *pp = m->next;
    g->n_members--;
    if (m->join_q)
        join_answer(m, g, err);
    if (m->sync_q)
        sync_answer(m, err);
    kmember_free(m);
}

/* Starts (or keeps) a rebalance: members must rejoin. */
static void kg_rebalance(struct kgroup *g, int64_t now)
{
    if (g->n_members == 0) {
        g->state = KG_EMPTY;
        g->leader[0] = '\0';
        return;
    }
    if (g->state == KG_JOINING)
        return;
    int32_t rebalance_ms = 0;
    for (struct kmember *m = g->members; m; m = m->next) {
        m->joined = m->join_q != NULL;
        if (m->sync_q)
            sync_answer(m, KE_REBALANCE_IN_PROGRESS);
        if (m->rebalance_ms > rebalance_ms)
            rebalance_ms = m->rebalance_ms;
    }
    g->state = KG_JOINING;
    g->rebalance_start_ms = now;
    g->rebalance_deadline_ms = now + (rebalance_ms > 0 ? rebalance_ms : 60000);
}

/* JOINING -> SYNCING once everyone rejoined (or the deadline removed the
 * rest) and the join delay passed. */
static void kg_complete_join(struct kgroup *g, int64_t now, bool deadline)
{
    VERITY_VERIFY(g->state == KG_JOINING);
    if (deadline) {
        struct kmember *m = g->members, *next;
        for (; m; m = next) {
            next = m->next;
            if (!m->joined)
                kg_remove_member(g, m, KE_UNKNOWN_MEMBER_ID);
        }
    } else {
        if (now - g->rebalance_start_ms < KG_JOIN_DELAY_MS)
            return;
        for (struct kmember *m = g->members; m; m = m->next)
            if (!m->joined)
                return;
    }
    if (g->n_members == 0) {
        g->state = KG_EMPTY;
        return;
    }
    /* The leader: the previous one if still a member, else the first. */
    struct kmember *leader = NULL;
    for (struct kmember *m = g->members; m && !leader; m = m->next)
        if (strcmp(m->id, g->leader) == 0)
            leader = m;
    if (!leader)
        leader = g->members;
    if (!leader) {
        g->state = KG_EMPTY;
        return;
    }
    snprintf(g->leader, sizeof g->leader, "%s", leader->id);
    /* The leader's first protocol that every member supports. */
    g->protocol[0] = '\0';
    for (int i = 0; i < leader->n_protos && !g->protocol[0]; i++) {
        bool all = true;
        for (struct kmember *m = g->members; m && all; m = m->next) {
            bool has = false;
            for (int k = 0; k < m->n_protos && !has; k++)
                has = strcmp(m->protos[k].name, leader->protos[i].name) == 0;
            all = has;
        }
        if (all)
            snprintf(g->protocol, sizeof g->protocol, "%s", leader->protos[i].name);
    }
    g->generation++;
    g->state = KG_SYNCING;
    for (struct kmember *m = g->members; m; m = m->next) {
        free(m->assign);
        m->assign = NULL;
        m->assign_len = 0;
        m->last_seen_ms = now;
        m->joined = false;
        if (m->join_q)
            join_answer(m, g, g->protocol[0] ? KE_NONE : KE_INCONSISTENT_GROUP_PROTOCOL);
    }
    blog(BLOG_INFO, "kafka_group_rebalanced", "group=%s generation=%" PRId32 " members=%zu "
         "protocol=%s", g->id, g->generation, g->n_members, g->protocol);
}

static void kg_tick_cb(evutil_socket_t fd, short what, void *arg)
{
    struct kgroups *gs = arg;
    (void)fd;
    (void)what;
    int64_t now = now_ms();
    for (struct kgroup *g = gs->list; g; g = g->next) {
        bool changed = false;
        struct kmember *m = g->members, *next;
        for (; m; m = next) {
            next = m->next;
            if (m->join_q || m->sync_q)
                continue;
            if (g->state != KG_JOINING && now - m->last_seen_ms > m->session_ms) {
                blog(BLOG_INFO, "kafka_member_expired", "group=%s member=%s", g->id, m->id);
                kg_remove_member(g, m, KE_UNKNOWN_MEMBER_ID);
                changed = true;
            }
        }
        if (changed)
            kg_rebalance(g, now);
        if (g->state == KG_JOINING)
            kg_complete_join(g, now, now >= g->rebalance_deadline_ms);
    }
}

/* ---- requests ------------------------------------------------------------ */

void k_find_coordinator(struct kreq *q)
{
    struct kr *r = &q->r;
    (void)kr_str(r, false);
    if (q->api_version >= 1)
        (void)kr_i8(r);
    if (!kr_ok(r)) {
        kreq_malformed(q, "FindCoordinator request does not decode");
        return;
    }
    struct kw *w = &q->w;
    if (q->api_version >= 1)
        kw_i32(w, 0);
    kw_i16(w, KE_NONE);
    if (q->api_version >= 1)
        kw_str(w, NULL);
    kw_i32(w, (int32_t)q->k->b->cfg.node_id);
    kw_str(w, q->k->host);
    kw_i32(w, q->k->port);
    kreq_done(q);
}

static void join_cancel(struct kreq *q)
{
    struct kmember *m = q->ctx;
    m->join_q = NULL;
    q->silent = true;
    kreq_done(q);
}

static void sync_cancel(struct kreq *q)
{
    struct kmember *m = q->ctx;
    m->sync_q = NULL;
    q->silent = true;
    kreq_done(q);
}

static void join_error(struct kreq *q, int16_t err, struct kstr member)
{
    struct kw *w = &q->w;
    if (q->api_version >= 2)
        kw_i32(w, 0);
    kw_i16(w, err);
    kw_i32(w, -1);
    kw_str(w, "");
    kw_str(w, "");
    kw_kstr(w, member.p ? member : (struct kstr){(const uint8_t *)"", 0});
    kw_i32(w, 0);
    kreq_done(q);
}

void k_join_group(struct kreq *q)
{
    struct kgroups *gs = q->k->groups;
    struct kr *r = &q->r;
    int16_t v = q->api_version;
    struct kstr gid = kr_str(r, false);
    int32_t session_ms = kr_i32(r);
    int32_t rebalance_ms = v >= 1 ? kr_i32(r) : session_ms;
    struct kstr mid = kr_str(r, false);
    if (v >= 5)
        (void)kr_str(r, true); /* group instance id: static membership not supported */
    struct kstr ptype = kr_str(r, false);
    int32_t np = kr_array(r, false, 6);
    struct kproto protos[KG_PROTO_MAX];
    int kept = 0;
    memset(protos, 0, sizeof protos);
    for (int32_t i = 0; i < np && kr_ok(r); i++) {
        struct kstr name = kr_str(r, false);
        struct kstr meta = kr_bytes(r, false);
        if (kept < KG_PROTO_MAX && kstr_copy(name, protos[kept].name, sizeof protos[kept].name)) {
            protos[kept].meta = malloc(meta.len > 0 ? (size_t)meta.len : 1);
            if (protos[kept].meta) {
                if (meta.len > 0)
                    memcpy(protos[kept].meta, meta.p, (size_t)meta.len);
                protos[kept].meta_len = meta.len;
                kept++;
            }
        }
    }
    struct kmember tmp = {.n_protos = kept};
    memcpy(tmp.protos, protos, sizeof protos);
    if (!kr_ok(r)) {
        kproto_clear(&tmp);
        kreq_malformed(q, "JoinGroup request does not decode");
        return;
    }
    int64_t now = now_ms();
    int16_t gerr;
    struct kgroup *g = kg_lookup(q, gid, true, &gerr);
    int16_t err = KE_NONE;
    char ptname[64];
    if (!g)
        err = gerr ? gerr : KE_INVALID_GROUP_ID;
    else if (session_ms < KG_SESSION_MIN_MS || session_ms > KG_SESSION_MAX_MS)
        err = KE_INVALID_SESSION_TIMEOUT;
    else if (kept == 0 || !kstr_copy(ptype, ptname, sizeof ptname))
        err = KE_INCONSISTENT_GROUP_PROTOCOL;
    else if (g->n_members > 0 && strcmp(g->protocol_type, ptname) != 0)
        err = KE_INCONSISTENT_GROUP_PROTOCOL;
    struct kmember *m = NULL;
    if (!err && mid.len > 0) {
        m = kg_member(g, mid);
        if (!m)
            err = KE_UNKNOWN_MEMBER_ID;
    }
    if (!err && !m && g->n_members >= KG_MEMBERS_MAX)
        err = KE_REBALANCE_IN_PROGRESS; /* full: retry later */
    if (!err && !m) {
        m = calloc(1, sizeof *m);
        if (!m) {
            err = KE_UNKNOWN;
        } else {
            snprintf(m->id, sizeof m->id, "verity-%" PRIu64, ++gs->next_member);
            m->next = NULL;
            struct kmember **pp = &g->members;
            while (*pp)
                pp = &(*pp)->next;
            *pp = m;
            g->n_members++;
        }
    }
    if (err) {
        kproto_clear(&tmp);
        join_error(q, err, mid);
        return;
    }
    if (g->n_members == 1 || g->state == KG_EMPTY)
        snprintf(g->protocol_type, sizeof g->protocol_type, "%s", ptname);
    if (m->join_q) /* a retried join replaces the parked one */
        join_answer(m, g, KE_REBALANCE_IN_PROGRESS);
    kproto_clear(m);
    memcpy(m->protos, tmp.protos, sizeof tmp.protos);
    m->n_protos = tmp.n_protos;
    m->session_ms = session_ms;
    m->rebalance_ms = rebalance_ms;
    m->last_seen_ms = now;
    m->join_q = q;
    q->ctx = m;
    q->cancel = join_cancel;
    kg_rebalance(g, now);
    m->joined = true;
    kg_complete_join(g, now, false);
}

void k_sync_group(struct kreq *q)
{
    struct kr *r = &q->r;
    struct kstr gid = kr_str(r, false);
    int32_t gen = kr_i32(r);
    struct kstr mid = kr_str(r, false);
    if (q->api_version >= 3)
        (void)kr_str(r, true);
    int32_t na = kr_array(r, false, 6);
    struct kr assigns = *r;
    for (int32_t i = 0; i < na && kr_ok(r); i++) {
        (void)kr_str(r, false);
        (void)kr_bytes(r, false);
    }
    if (!kr_ok(r)) {
        kreq_malformed(q, "SyncGroup request does not decode");
        return;
    }
    int16_t gerr;
    struct kgroup *g = kg_lookup(q, gid, false, &gerr);
    struct kmember *m = g ? kg_member(g, mid) : NULL;
    int16_t err = KE_NONE;
    if (!m)
        err = gerr ? gerr : KE_UNKNOWN_MEMBER_ID;
    else if (gen != g->generation)
        err = KE_ILLEGAL_GENERATION;
    else if (g->state == KG_JOINING)
        err = KE_REBALANCE_IN_PROGRESS;
    if (err) {
        if (q->api_version >= 1)
            kw_i32(&q->w, 0);
        kw_i16(&q->w, err);
        kw_i32(&q->w, 0);
        kreq_done(q);
        return;
    }
    m->last_seen_ms = now_ms();
    if (m->sync_q)
        sync_answer(m, KE_REBALANCE_IN_PROGRESS);
    m->sync_q = q;
    q->ctx = m;
    q->cancel = sync_cancel;
    if (g->state == KG_SYNCING && strcmp(m->id, g->leader) == 0) {
        for (int32_t i = 0; i < na; i++) {
            struct kstr to = kr_str(&assigns, false);
            struct kstr a = kr_bytes(&assigns, false);
            struct kmember *t = kg_member(g, to);
            if (!t)
                continue;
            free(t->assign);
            t->assign = malloc(a.len > 0 ? (size_t)a.len : 1);
            t->assign_len = t->assign ? a.len : 0;
            if (t->assign && a.len > 0)
                memcpy(t->assign, a.p, (size_t)a.len);
        }
        g->state = KG_STABLE;
        for (struct kmember *o = g->members; o; o = o->next)
            if (o->sync_q)
                sync_answer(o, KE_NONE);
        return;
    }
    if (g->state == KG_STABLE)
        sync_answer(m, KE_NONE);
    /* SYNCING follower: parked until the leader's assignments arrive. */
}

void k_heartbeat(struct kreq *q)
{
    struct kr *r = &q->r;
    struct kstr gid = kr_str(r, false);
    int32_t gen = kr_i32(r);
    struct kstr mid = kr_str(r, false);
    if (q->api_version >= 3)
        (void)kr_str(r, true);
    if (!kr_ok(r)) {
        kreq_malformed(q, "Heartbeat request does not decode");
        return;
    }
    int16_t gerr;
    struct kgroup *g = kg_lookup(q, gid, false, &gerr);
    struct kmember *m = g ? kg_member(g, mid) : NULL;
    int16_t err = KE_NONE;
    if (!m)
        err = gerr ? gerr : KE_UNKNOWN_MEMBER_ID;
    else if (g->state == KG_JOINING)
        err = KE_REBALANCE_IN_PROGRESS;
    else if (gen != g->generation)
        err = KE_ILLEGAL_GENERATION;
    if (m)
        m->last_seen_ms = now_ms();
    if (q->api_version >= 1)
        kw_i32(&q->w, 0);
    kw_i16(&q->w, err);
    kreq_done(q);
}

void k_leave_group(struct kreq *q)
{
    struct kr *r = &q->r;
    struct kstr gid = kr_str(r, false);
    struct kstr mid = kr_str(r, false);
    if (!kr_ok(r)) {
        kreq_malformed(q, "LeaveGroup request does not decode");
        return;
    }
    int16_t gerr;
    struct kgroup *g = kg_lookup(q, gid, false, &gerr);
    struct kmember *m = g ? kg_member(g, mid) : NULL;
    if (m) {
        blog(BLOG_INFO, "kafka_member_left", "group=%s member=%s", g->id, m->id);
        kg_remove_member(g, m, KE_UNKNOWN_MEMBER_ID);
        kg_rebalance(g, now_ms()); /* the others rejoin (no-op when already joining) */
    }
    if (q->api_version >= 1)
        kw_i32(&q->w, 0);
    kw_i16(&q->w, m ? KE_NONE : gerr ? gerr : KE_UNKNOWN_MEMBER_ID);
    kreq_done(q);
}

/* ---- committed offsets ----------------------------------------------------- */

static struct koffset *koff_find(struct kgroup *g, const char *topic, int32_t partition)
{
    for (struct koffset *o = g->offsets; o; o = o->next)
        if (o->partition == partition && strcmp(o->topic, topic) == 0)
            return o;
    return NULL;
}

/* Sets (group, topic, partition) in memory. 0, VERITY_ELIMIT or -ENOMEM. */
static int koff_set(struct kgroups *gs, struct kgroup *g, const char *topic, int32_t partition,
                    int64_t offset, const char *meta)
{
    struct koffset *o = koff_find(g, topic, partition);
    if (!o) {
        if (gs->n_offsets >= KG_OFFSETS_MAX)
            return VERITY_ELIMIT;
        o = calloc(1, sizeof *o);
        if (!o || !(o->topic = strdup(topic))) {
            free(o);
            return -ENOMEM;
        }
        o->partition = partition;
        o->next = g->offsets;
        g->offsets = o;
        gs->n_offsets++;
    }
    free(o->meta);
    o->meta = meta ? strdup(meta) : NULL;
    o->offset = offset;
    return 0;
}

static void replay_record(struct kgroups *gs, const struct batch_record *rec)
{
    char gid[KG_ID_MAX + 1];
    if (rec->key_len <= 0 || rec->key_len > KG_ID_MAX || rec->value_len <= 0)
        return;
    memcpy(gid, rec->key, (size_t)rec->key_len);
    gid[rec->key_len] = '\0';
    json_error_t je;
    json_t *v = json_loadb((const char *)rec->value, (size_t)rec->value_len, 0, &je);
    const char *topic = json_string_value(json_object_get(v, "t"));
    json_t *p = json_object_get(v, "p"), *o = json_object_get(v, "o");
    if (topic && json_is_integer(p) && json_is_integer(o)) {
        struct kstr s = {(const uint8_t *)gid, (int32_t)strlen(gid)};
        struct kgroup *g = kg_find(gs, s, true);
        if (g)
            (void)koff_set(gs, g, topic, (int32_t)json_integer_value(p), json_integer_value(o),
                           json_string_value(json_object_get(v, "m")));
    }
    json_decref(v);
}

static int kg_replay(struct kgroups *gs)
{
    struct vlog_info info;
    vlog_get_info(gs->log, &info);
    size_t cap = 16u << 20;
    uint8_t *buf = malloc(cap);
    if (!buf)
        return -ENOMEM;
    uint64_t off = info.start_offset;
    int rc = 0;
    while (off < info.end_offset) {
        size_t len = 0;
        if ((rc = vlog_read_copy(gs->log, off, info.end_offset, buf, cap, &len)) || len == 0)
            break;
        size_t pos = 0;
        while (pos + BATCH_HDR_SIZE <= len) {
            struct batch_hdr h;
            if ((rc = batch_hdr_decode(buf + pos, len - pos, &h)))
                break;
            if (!(h.attributes & BATCH_ATTR_CONTROL)) {
                struct batch_iter it;
                struct batch_record rec;
                batch_iter_init(&it, buf + pos, h.length);
                while (batch_iter_next(&it, &rec) == 1)
                    replay_record(gs, &rec);
            }
            off = h.base_offset + h.last_offset_delta + 1;
            pos += h.length;
        }
        if (rc)
            break;
    }
    free(buf);
    return rc;
}

int kgroups_open(struct kafka *k)
{
    struct broker *b = k->b;
    struct kgroups *gs = calloc(1, sizeof *gs);
    if (!gs)
        return -ENOMEM;
    gs->k = k;
    k->groups = gs;
    char dir[BCFG_PATH_MAX + 32];
    snprintf(dir, sizeof dir, "%s/__kafka_offsets", b->cfg.data_dir);
    struct vlog_config vc;
    vlog_config_default(&vc);
    vc.durability = VLOG_DURABILITY_ALWAYS;
    vc.segment_bytes = 64u << 20;
    vc.checkpoint_records = 10000;
    vc.prealloc_bytes = b->cfg.log_prealloc_bytes;
    vc.signing_key = b->signing_key;
    uint64_t bad = 0;
    int rc = vlog_open(dir, &vc, now_ms(), &gs->log, &bad);
    if (rc) {
        blog(BLOG_ERROR, "kafka_offsets_open_failed", "dir=%s error=%s bad_offset=%" PRIu64, dir,
             verity_errname(rc), bad);
        return rc;
    }
    if ((rc = kg_replay(gs))) {
        blog(BLOG_ERROR, "kafka_offsets_replay_failed", "dir=%s error=%s", dir,
             verity_errname(rc));
        return rc;
    }
    gs->tick = event_new(b->base, -1, EV_PERSIST, kg_tick_cb, gs);
    struct timeval tv = {0, KG_TICK_MS * 1000};
    if (!gs->tick || event_add(gs->tick, &tv))
        return -ENOMEM;
    blog(BLOG_INFO, "kafka_offsets_loaded", "groups=%zu offsets=%zu", gs->n_groups,
         gs->n_offsets);
    return 0;
}

void kgroups_close(struct kafka *k)
{
    struct kgroups *gs = k->groups;
    if (!gs)
        return;
    if (gs->tick)
        event_free(gs->tick);
    struct kgroup *g = gs->list, *gn;
    for (; g; g = gn) {
        gn = g->next;
        struct kmember *m = g->members, *mn;
        for (; m; m = mn) {
            mn = m->next;
            VERITY_VERIFY(!m->join_q && !m->sync_q);
            kmember_free(m);
        }
        struct koffset *o = g->offsets, *on;
        for (; o; o = on) {
            on = o->next;
            free(o->topic);
            free(o->meta);
            free(o);
        }
        free(g);
    }
    int rc = gs->log ? vlog_close(gs->log, now_ms()) : 0;
    if (rc)
        blog(BLOG_WARN, "kafka_offsets_close_failed", "error=%s", verity_errname(rc));
    free(gs);
    k->groups = NULL;
}

void kgroups_shutdown(struct kafka *k)
{
    struct kgroups *gs = k->groups;
    for (struct kgroup *g = gs ? gs->list : NULL; g; g = g->next) {
        for (struct kmember *m = g->members; m; m = m->next) {
            if (m->join_q)
                join_answer(m, g, KE_NOT_COORDINATOR);
            if (m->sync_q)
                sync_answer(m, KE_NOT_COORDINATOR);
        }
    }
}

void kgroups_conn_gone(struct kafka *k, struct kconn *c)
{
    (void)k;
    (void)c; /* parked joins and syncs are cancelled through their kreq */
}

struct kcommit_item {
    struct kstr topic;
    char full[VERITY_TOPIC_NAME_MAX + 1]; /* the stored name (inside the tenant) */
    int32_t partition;
    int64_t offset;
    struct kstr meta;
    int16_t err;
};

static int16_t commit_check(struct kgroup *g, int32_t gen, struct kstr mid)
{
    if (gen < 0 && mid.len <= 0)
        return KE_NONE; /* a standalone consumer's commit */
    struct kmember *m = kg_member(g, mid);
    if (!m)
        return KE_UNKNOWN_MEMBER_ID;
    if (g->state == KG_JOINING)
        return KE_REBALANCE_IN_PROGRESS;
    if (gen != g->generation)
        return KE_ILLEGAL_GENERATION;
    m->last_seen_ms = now_ms();
    return KE_NONE;
}

/* Appends the accepted items as one batch (durable on return). */
static int commit_append(struct kgroups *gs, struct kgroup *g, struct kcommit_item *it, size_t n)
{
    struct batch_builder bb;
    size_t need = BATCH_HDR_SIZE + 64;
    for (size_t i = 0; i < n; i++)
        need += 128 + strlen(g->id) + strlen(it[i].full) * 2 +
                (size_t)(it[i].meta.len > 0 ? it[i].meta.len : 0) * 6;
    int rc = batch_builder_init(&bb, need);
    if (rc)
        return rc;
    int64_t now = now_ms();
    size_t added = 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
        if (it[i].err)
            continue;
        const char *topic = it[i].full;
        char meta[KG_META_MAX + 1];
        bool has_meta = kstr_copy(it[i].meta, meta, sizeof meta);
        json_t *v = json_pack("{s:s, s:i, s:I, s:s?}", "t", topic, "p", (int)it[i].partition, "o",
                              (json_int_t)it[i].offset, "m", has_meta ? meta : NULL);
        char *text = v ? json_dumps(v, JSON_COMPACT) : NULL;
        json_decref(v);
        if (!text) {
            rc = -ENOMEM;
            break;
        }
        rc = batch_builder_add(&bb, now, g->id, (int32_t)strlen(g->id), text,
                               (int32_t)strlen(text), NULL, 0);
        free(text);
        added++;
    }
    if (rc == 0 && added > 0) {
        struct batch_meta bm = {0, -1, -1, -1, NULL};
        struct vlog_append_info ai;
        if ((rc = batch_builder_finish(&bb, &bm)) == 0)
            rc = vlog_append(gs->log, bb.buf, bb.len, now, &ai);
    }
    batch_builder_deinit(&bb);
    return rc;
}

void k_offset_commit(struct kreq *q)
{
    struct kgroups *gs = q->k->groups;
    struct kr *r = &q->r;
    int16_t v = q->api_version;
    struct kstr gid = kr_str(r, false);
    int32_t gen = -1;
    struct kstr mid = {NULL, -1};
    if (v >= 1) {
        gen = kr_i32(r);
        mid = kr_str(r, false);
    }
    if (v >= 7)
        (void)kr_str(r, true);
    if (v >= 2 && v <= 4)
        (void)kr_i64(r); /* retention: offsets are kept until the group is gone */
    struct kr probe = *r;
    int32_t nt = kr_array(&probe, false, 6);
    size_t total = 0;
    for (int32_t t = 0; t < nt && kr_ok(&probe); t++) {
        (void)kr_str(&probe, false);
        int32_t np = kr_array(&probe, false, 14);
        for (int32_t k = 0; k < np && kr_ok(&probe); k++) {
            (void)kr_i32(&probe);
            (void)kr_i64(&probe);
            if (v >= 6)
                (void)kr_i32(&probe);
            if (v == 1)
                (void)kr_i64(&probe);
            (void)kr_str(&probe, true);
        }
        total += (size_t)(np > 0 ? np : 0);
    }
    if (!kr_ok(r) || !kr_ok(&probe)) {
        kreq_malformed(q, "OffsetCommit request does not decode");
        return;
    }
    struct kcommit_item *it = calloc(total ? total : 1, sizeof *it);
    struct kstr *tnames = calloc(nt > 0 ? (size_t)nt : 1, sizeof *tnames);
    int32_t *tcounts = calloc(nt > 0 ? (size_t)nt : 1, sizeof *tcounts);
    if (!it || !tnames || !tcounts) {
        free(it);
        free(tnames);
        free(tcounts);
        kreq_malformed(q, "out of memory");
        return;
    }
    (void)kr_i32(r);
    size_t i = 0;
    for (int32_t t = 0; t < nt; t++) {
        tnames[t] = kr_str(r, false);
        tcounts[t] = kr_i32(r);
        for (int32_t k = 0; k < tcounts[t]; k++, i++) {
            it[i].topic = tnames[t];
            it[i].partition = kr_i32(r);
            it[i].offset = kr_i64(r);
            if (v >= 6)
                (void)kr_i32(r);
            if (v == 1)
                (void)kr_i64(r);
            it[i].meta = kr_str(r, true);
        }
    }
    int16_t nerr;
    struct kgroup *g = kg_lookup(q, gid, true, &nerr);
    int16_t gerr = g ? commit_check(g, gen, mid) : nerr ? nerr : KE_INVALID_GROUP_ID;
    for (size_t k = 0; k < total; k++) {
        it[k].err = gerr;
        if (!gerr)
            it[k].err = kname_in(q, it[k].topic, false, AUTH_OP_CONSUME, it[k].full,
                                 sizeof it[k].full);
    }
    if (!gerr) {
        int rc = commit_append(gs, g, it, total);
        if (rc) {
            blog(BLOG_WARN, "kafka_offset_commit_failed", "group=%s error=%s", g->id,
                 verity_errname(rc));
            for (size_t k = 0; k < total; k++)
                if (!it[k].err)
                    it[k].err = rc == VERITY_ELIMIT ? KE_MESSAGE_TOO_LARGE : KE_KAFKA_STORAGE_ERROR;
        } else {
            for (size_t k = 0; k < total; k++) {
                char meta[KG_META_MAX + 1];
                const char *topic = it[k].full;
                if (it[k].err)
                    continue;
                bool has_meta = kstr_copy(it[k].meta, meta, sizeof meta);
                if (koff_set(gs, g, topic, it[k].partition, it[k].offset, has_meta ? meta : NULL))
                    it[k].err = KE_KAFKA_STORAGE_ERROR;
            }
        }
    }
    struct kw *w = &q->w;
    if (v >= 3)
        kw_i32(w, 0);
    kw_i32(w, nt);
    i = 0;
    for (int32_t t = 0; t < nt; t++) {
        kw_kstr(w, tnames[t]);
        kw_i32(w, tcounts[t]);
        for (int32_t k = 0; k < tcounts[t]; k++, i++) {
            kw_i32(w, it[i].partition);
            kw_i16(w, it[i].err);
        }
    }
    free(it);
    free(tnames);
    free(tcounts);
    kreq_done(q);
}

static void fetch_one(struct kw *w, int16_t v, struct kgroup *g, const char *topic, int32_t part)
{
    struct koffset *o = g && topic ? koff_find(g, topic, part) : NULL;
    kw_i32(w, part);
    kw_i64(w, o ? o->offset : -1);
    if (v >= 5)
        kw_i32(w, -1);
    kw_str(w, o ? (o->meta ? o->meta : "") : "");
    kw_i16(w, KE_NONE);
}

void k_offset_fetch(struct kreq *q)
{
    struct kr *r = &q->r;
    struct kw *w = &q->w;
    int16_t v = q->api_version;
    struct kstr gid = kr_str(r, false);
    int16_t gerr;
    struct kgroup *g = kg_lookup(q, gid, false, &gerr);
    int32_t nt = kr_array(r, v >= 2, 6);
    if (v >= 3)
        kw_i32(w, 0);
    if (nt == -1) {
        /* Every partition the group committed, grouped by topic. */
        size_t pos = w->len;
        int32_t count = 0;
        kw_i32(w, 0);
        for (struct koffset *o = g ? g->offsets : NULL; o; o = o->next) {
            const char *shown = kname_out(q, o->topic);
            if (!shown)
                continue;
            kw_str(w, shown);
            kw_i32(w, 1);
            fetch_one(w, v, g, o->topic, o->partition);
            count++;
        }
        kw_put_i32_at(w, pos, count);
    } else {
        kw_i32(w, nt);
        for (int32_t t = 0; t < nt && kr_ok(r); t++) {
            struct kstr tn = kr_str(r, false);
            char topic[VERITY_TOPIC_NAME_MAX + 1];
            bool named = kname_in(q, tn, false, 0, topic, sizeof topic) == KE_NONE;
            kw_kstr(w, tn);
            int32_t np = kr_array(r, false, 4);
            kw_i32(w, np);
            for (int32_t k = 0; k < np && kr_ok(r); k++)
                fetch_one(w, v, g, named ? topic : NULL, kr_i32(r));
        }
    }
    if (v >= 2)
        kw_i16(w, gerr);
    if (!kr_ok(r)) {
        kreq_malformed(q, "OffsetFetch request does not decode");
        return;
    }
    kreq_done(q);
}

/* ---- native admin views (ListGroups, DescribeGroupRequest.kafka) ---------- */

/* Offsets of a Kafka group below the high watermark of their partitions:
 * the lag a Verity group reports as unacked. Unknown partitions count 0. */
static uint64_t kg_lag(struct broker *b, const struct koffset *o)
{
    struct topic *t = topic_find_live(b, o->topic);
    if (!t || o->partition < 0 || (uint32_t)o->partition >= t->cfg.partitions ||
        !t->parts[o->partition])
        return 0;
    uint64_t hw = part_hw(t->parts[o->partition]);
    return o->offset >= 0 && (uint64_t)o->offset < hw ? hw - (uint64_t)o->offset : 0;
}

static int name_cmp(const void *a, const void *b)
{
    return strcmp((*(Verity__GroupSummary *const *)a)->group,
                  (*(Verity__GroupSummary *const *)b)->group);
}

/* Distinct topics of g's committed offsets, in first-seen order (pointers
 * into the offsets; *n bounded by cap). */
static size_t kg_topics(const struct kgroup *g, char **out, size_t cap)
{
    size_t n = 0;
    for (const struct koffset *o = g->offsets; o; o = o->next) {
        bool seen = false;
        for (size_t i = 0; i < n && !seen; i++)
            seen = strcmp(out[i], o->topic) == 0;
        if (!seen && n < cap)
            out[n++] = o->topic;
    }
    return n;
}

static size_t kg_offset_count(const struct kgroup *g)
{
    size_t n = 0;
    for (const struct koffset *o = g->offsets; o; o = o->next)
        n++;
    return n;
}

int kafka_group_summaries(struct broker *b, Verity__GroupSummary ***out, size_t *n_out)
{
    *out = NULL;
    *n_out = 0;
    struct kgroups *gs = b->kafka ? b->kafka->groups : NULL;
    if (!gs || gs->n_groups == 0)
        return 0;
    Verity__GroupSummary **v = calloc(gs->n_groups, sizeof *v);
    if (!v)
        return -ENOMEM;
    size_t n = 0;
    for (struct kgroup *g = gs->list; g && n < gs->n_groups; g = g->next) {
        Verity__GroupSummary *s = calloc(1, sizeof *s);
        size_t cap = kg_offset_count(g);
        char **topics = calloc(cap ? cap : 1, sizeof *topics);
        if (!s || !topics) {
            free(s);
            free(topics);
            kafka_group_summaries_free(v, n);
            return -ENOMEM;
        }
        verity__group_summary__init(s);
        s->group = g->id;
        s->mode = VERITY__GROUP_MODE__GROUP_MODE_KAFKA;
        s->topics = topics;
        s->n_topics = kg_topics(g, topics, cap);
        s->members = (uint32_t)g->n_members;
        s->generation = g->generation > 0 ? (uint32_t)g->generation : 0;
        for (const struct koffset *o = g->offsets; o; o = o->next)
            s->unacked += kg_lag(b, o);
        v[n++] = s;
    }
    qsort(v, n, sizeof *v, name_cmp);
    *out = v;
    *n_out = n;
    return 0;
}

void kafka_group_summaries_free(Verity__GroupSummary **v, size_t n)
{
    for (size_t i = 0; v && i < n; i++) {
        free(v[i]->topics);
        free(v[i]);
    }
    free(v);
}

void kafka_describe_group(struct req *r, const char *name)
{
    struct broker *b = r->b;
    struct kgroups *gs = b->kafka ? b->kafka->groups : NULL;
    struct kgroup *g = NULL;
    if (gs && name && name[0] && strlen(name) <= KG_ID_MAX)
        for (g = gs->list; g && strcmp(g->id, name) != 0; g = g->next)
            ;
    if (!g) {
        char msg[KG_ID_MAX + 64];
        snprintf(msg, sizeof msg, "no Kafka group %.*s%s", KG_ID_MAX, name ? name : "",
                 gs ? "" : " (the Kafka listener is off)");
        req_fail(r, VERITY_ENOTFOUND, msg);
        return;
    }
    size_t np = kg_offset_count(g), nm = g->n_members;
    Verity__GroupPartitionState *ps = calloc(np ? np : 1, sizeof *ps);
    Verity__GroupPartitionState **pp = calloc(np ? np : 1, sizeof *pp);
    Verity__GroupMember *ms = calloc(nm ? nm : 1, sizeof *ms);
    Verity__GroupMember **mp = calloc(nm ? nm : 1, sizeof *mp);
    char **topics = calloc(np ? np : 1, sizeof *topics);
    if (!ps || !pp || !ms || !mp || !topics) {
        req_fail(r, -ENOMEM, NULL);
        goto out;
    }
    size_t k = 0;
    for (const struct koffset *o = g->offsets; o && k < np; o = o->next, k++) {
        Verity__GroupPartitionState *s = &ps[k];
        verity__group_partition_state__init(s);
        s->topic = o->topic;
        s->partition = o->partition >= 0 ? (uint32_t)o->partition : 0;
        s->ack_floor = s->read_cursor = o->offset >= 0 ? (uint64_t)o->offset : 0;
        struct topic *t = topic_find_live(b, o->topic);
        struct partition *p = t && o->partition >= 0 && (uint32_t)o->partition < t->cfg.partitions
                                  ? t->parts[o->partition]
                                  : NULL;
        if (p) {
            s->high_watermark = part_hw(p);
            s->unacked = kg_lag(b, o);
            struct vlog_info vi;
            vlog_get_info(p->log, &vi);
            s->start_offset = vi.start_offset;
        } else {
            s->error = codec_err_to_wire(VERITY_ENOTFOUND);
        }
        pp[k] = s;
    }
    size_t i = 0;
    for (struct kmember *m = g->members; m && i < nm; m = m->next, i++) {
        verity__group_member__init(&ms[i]);
        ms[i].member_id = i + 1; /* Kafka member ids are strings: the name carries it */
        ms[i].name = m->id;
        ms[i].session_ms = m->session_ms;
        ms[i].last_seen_ms = m->last_seen_ms;
        mp[i] = &ms[i];
    }
    Verity__GroupConfig cfg = VERITY__GROUP_CONFIG__INIT;
    cfg.mode = VERITY__GROUP_MODE__GROUP_MODE_KAFKA;
    cfg.topics = topics;
    cfg.n_topics = kg_topics(g, topics, np);
    Verity__GroupDescription desc = VERITY__GROUP_DESCRIPTION__INIT;
    desc.group = g->id;
    desc.config = &cfg;
    desc.generation = g->generation > 0 ? (uint32_t)g->generation : 0;
    desc.n_members = i;
    desc.members = mp;
    desc.n_partitions = k;
    desc.partitions = pp;
    Verity__DescribeGroupResponse resp = VERITY__DESCRIBE_GROUP_RESPONSE__INIT;
    resp.group = &desc;
    Verity__Envelope env = VERITY__ENVELOPE__INIT;
    env.body_case = VERITY__ENVELOPE__BODY_DESCRIBE_GROUP_RESP;
    env.describe_group_resp = &resp;
    req_reply(r, &env, NULL, 0);
out:
    free(ps);
    free(pp);
    free(ms);
    free(mp);
    free(topics);
}
