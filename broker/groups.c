/*
 * Consumer groups, the shell half: the group log, tickets, timers and
 * long-poll wake-ups around the pure state machine of broker/group/group.h
 * (docs/GROUPS.md "Driving it from the shell").
 *
 * Group log: one internal vlog, <data-dir>/__groups, for every group. Each
 * log batch holds one or more state-machine records back to back, one
 * batch record per group record (value = the record bytes, no key). The
 * records of one drain go into one batch, so a loop pass that handled a
 * thousand acks writes one batch. Startup replays every data batch in
 * order (group_apply per record; control batches are skipped), then calls
 * group_recover. A record that does not apply stops the broker: skipping
 * it would silently lose acknowledged progress.
 *
 * Tickets: a command's reply waits until the group log is durable through
 * the seq the command returned. Records leave the state machine in seq
 * order and are appended in that order, so the FIFO `ends` (end offset of
 * each appended batch, with the last seq it holds) turns the log's durable
 * end into "durable through seq S". Parked replies are kept sorted by
 * ticket and answered from the head. Invariant: seq_durable <=
 * seq_appended, and every parked ticket > seq_durable.
 *
 * Timers: the flush event runs at the end of the loop pass in which a reply
 * parked on a progress record that is still open, or a horizon rose
 * (group_flush emits the open progress records, so everything one pass did
 * shares one record and one fdatasync); progress nobody waits for is flushed
 * by a lazy timer within a few ms; the timer
 * event runs group_tick at group_next_deadline (lease expiry, session
 * timeout, end of a backoff) and wakes the long-polls.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>

#include "broker/blog.h"
#include "broker/broker_int.h"
#include "verity/errors.h"
#include "verity/verify.h"

_Static_assert(CODEC_GROUP_NAME_MAX == GROUP_NAME_MAX, "codec and group name limits agree");
_Static_assert(CODEC_MEMBER_NAME_MAX == GROUP_MEMBER_NAME_MAX, "member name limits agree");
_Static_assert(CODEC_GROUP_TOPICS_MAX == GROUP_TOPICS_MAX, "topic limits agree");
_Static_assert(CODEC_GROUP_BACKOFF_MAX == GROUP_BACKOFF_STEPS_MAX, "backoff limits agree");
_Static_assert(GROUP_RECORD_BYTES_MAX + 4096 <= VERITY_BATCH_BYTES_MAX,
               "a group record fits in one log batch");

#define GROUPS_SEGMENT_BYTES (64u << 20)

static bool groups_ok(const struct groups *gs)
{
    return gs->seq_durable <= gs->seq_appended && gs->ends_n <= gs->ends_cap;
}

/* ---- parked replies ---------------------------------------------------------- */

void groups_answer_parked(struct broker *b)
{
    struct groups *gs = &b->groups;
    struct gpark *p;
    while ((p = TAILQ_FIRST(&gs->parked)) && (p->ticket <= gs->seq_durable || gs->error)) {
        TAILQ_REMOVE(&gs->parked, p, link);
        p->linked = false;
        p->done(b, p, p->ticket <= gs->seq_durable ? 0 : gs->error);
    }
    dlq_on_durable(b);
}

void groups_fail_parked(struct broker *b, int err)
{
    struct groups *gs = &b->groups;
    struct gpark *p;
    while ((p = TAILQ_FIRST(&gs->parked))) {
        TAILQ_REMOVE(&gs->parked, p, link);
        p->linked = false;
        p->done(b, p, err);
    }
}

static void arm_flush(struct broker *b)
{
    struct groups *gs = &b->groups;
    if (!gs->flush_armed && gs->flush_ev) {
        gs->flush_armed = true;
        event_active(gs->flush_ev, EV_TIMEOUT, 0);
    }
}

/* Progress nobody waits for (deliveries answered on the horizon, dead-letter
 * steps) goes out within GROUPS_LAZY_FLUSH_MS, sharing a sync with whatever
 * comes next, instead of costing an fdatasync of its own. */
#define GROUPS_LAZY_FLUSH_MS 5

static void arm_lazy_flush(struct broker *b)
{
    struct groups *gs = &b->groups;
    if (gs->flush_armed || !gs->lazy_ev || evtimer_pending(gs->lazy_ev, NULL))
        return;
    struct timeval tv = {0, GROUPS_LAZY_FLUSH_MS * 1000};
    evtimer_add(gs->lazy_ev, &tv);
}

void groups_park(struct broker *b, struct gpark *p, uint64_t ticket)
{
    struct groups *gs = &b->groups;
    VERITY_VERIFY(!p->linked);
    p->ticket = ticket;
    if (ticket == 0 || ticket <= gs->seq_durable) {
        p->done(b, p, 0);
        return;
    }
    if (gs->error || !gs->log) {
        p->done(b, p, gs->error ? gs->error : VERITY_ECLOSED);
        return;
    }
    struct gpark *at = TAILQ_LAST(&gs->parked, gpark_list);
    while (at && at->ticket > ticket)
        at = TAILQ_PREV(at, gpark_list, link);
    if (at)
        TAILQ_INSERT_AFTER(&gs->parked, at, p, link);
    else
        TAILQ_INSERT_HEAD(&gs->parked, p, link);
    p->linked = true;
    if (ticket > gs->seq_appended)
        arm_flush(b);
}

int groups_writable(struct broker *b, char *msg, size_t cap)
{
    struct groups *gs = &b->groups;
    if (!gs->st || !gs->log) {
        snprintf(msg, cap, "consumer groups are not available (group log not open)");
        return VERITY_ECLOSED;
    }
    if (gs->error) {
        snprintf(msg, cap, "the group log failed (%s); groups are read-only until a restart",
                 verity_errname(gs->error));
        return VERITY_EREADONLY;
    }
    return 0;
}

/* ---- the group log ------------------------------------------------------------- */

static void set_error(struct broker *b, int err, const char *what)
{
    struct groups *gs = &b->groups;
    if (!gs->error) {
        gs->error = err;
        blog(BLOG_ERROR, "group_log_failed", "during=%s error=%s", what, verity_errname(err));
    }
    groups_fail_parked(b, err);
}

static int ends_push(struct groups *gs, uint64_t end, uint64_t seq)
{
    if (gs->ends_n == gs->ends_cap) {
        size_t ncap = gs->ends_cap ? gs->ends_cap * 2 : 64;
        struct gend *ne = malloc(ncap * sizeof *ne);
        if (!ne)
            return -ENOMEM;
        for (size_t i = 0; i < gs->ends_n; i++)
            ne[i] = gs->ends[(gs->ends_head + i) % gs->ends_cap];
        free(gs->ends);
        gs->ends = ne;
        gs->ends_cap = ncap;
        gs->ends_head = 0;
    }
    gs->ends[(gs->ends_head + gs->ends_n) % gs->ends_cap] = (struct gend){end, seq};
    gs->ends_n++;
    return 0;
}

/* Appends the builder's records (the last one has seq last_seq). */
static void append_batch(struct broker *b, uint64_t last_seq)
{
    struct groups *gs = &b->groups;
    if (gs->bb.count == 0)
        return;
    struct batch_meta bm = {0, -1, -1, -1, NULL};
    struct vlog_append_info ai;
    int64_t now = now_ms();
    int rc = batch_builder_finish(&gs->bb, &bm);
    if (rc == 0 && gs->repl) {
        /* a cluster: the records are proposed to __groups; the log gets
         * them when committed (groups_repl_apply), and "durable through
         * seq S" means committed */
        rc = cluster_groups_submit(b, gs->coord_view, gs->bb.buf, (uint32_t)gs->bb.len);
        batch_builder_reset(&gs->bb);
        if (rc == VERITY_ENOTLEADER) {
            gs->lost_view = true; /* groups_after steps down */
            return;
        }
        if (rc) {
            set_error(b, rc, "replicate");
            return;
        }
        gs->seq_appended = last_seq;
        gs->batches++;
        return;
    }
    if (rc == 0)
        rc = vlog_append(gs->log, gs->bb.buf, gs->bb.len, now, &ai);
    if (rc == 0)
        rc = ends_push(gs, ai.last_offset + 1, last_seq);
    batch_builder_reset(&gs->bb);
    if (rc) {
        set_error(b, rc, "append");
        return;
    }
    gs->seq_appended = last_seq;
    gs->batches++;
}

static void drain_records(struct broker *b)
{
    struct groups *gs = &b->groups;
    const uint8_t *rec;
    size_t len;
    uint64_t seq, last = 0;
    int64_t now = now_ms();
    batch_builder_reset(&gs->bb);
    while (group_next_record(gs->st, &rec, &len, &seq)) {
        VERITY_VERIFY(seq > gs->seq_appended && len <= GROUP_RECORD_BYTES_MAX);
        gs->records++;
        if (gs->error || gs->lost_view || !groups_live(b))
            continue; /* nothing more is written; parked replies already failed
                       * (a replica that is not the coordinator emits none) */
        int rc = batch_builder_add(&gs->bb, now, NULL, -1, rec, (int32_t)len, NULL, 0);
        if (rc == VERITY_ELIMIT && gs->bb.count > 0) {
            append_batch(b, last);
            if (gs->error)
                continue;
            rc = batch_builder_add(&gs->bb, now, NULL, -1, rec, (int32_t)len, NULL, 0);
        }
        if (rc) {
            set_error(b, rc, "batch");
            continue;
        }
        last = seq;
    }
    if (!gs->error && !gs->lost_view && groups_live(b))
        append_batch(b, last);
    batch_builder_reset(&gs->bb);
}

static void fail_member_waiters(struct broker *b, const char *group, uint64_t member_id,
                                bool timed_out)
{
    struct bgroup *bg = bgroup_get(b, group);
    if (!bg)
        return;
    struct gwaiter *w, *next;
    for (w = TAILQ_FIRST(&bg->waiters); w; w = next) {
        next = TAILQ_NEXT(w, link);
        if (w->member_id == member_id)
            gfetch_fail(w->f, VERITY_EMEMBER,
                        timed_out ? "member removed: its session timed out" : "member left");
    }
}

static void drain_effects(struct broker *b)
{
    struct groups *gs = &b->groups;
    struct group_effect e;
    while (group_next_effect(gs->st, &e)) {
        if (!groups_live(b))
            continue; /* only the coordinator acts */
        switch (e.type) {
        case GROUP_EFFECT_DEAD_LETTER:
            dlq_start(b, &e);
            break;
        case GROUP_EFFECT_MEMBER_REMOVED: {
            char q[GROUP_NAME_MAX + 8];
            blog(BLOG_INFO, "group_member_removed", "group=%s member=%" PRIu64 " reason=%s",
                 blog_q(e.group, q, sizeof q), e.member_id,
                 e.timed_out ? "session_timeout" : "left");
            fail_member_waiters(b, e.group, e.member_id, e.timed_out);
            struct bgroup *bg = bgroup_get(b, e.group);
            if (bg)
                groups_wake(bg);
            break;
        }
        }
    }
}

static void rearm_timer(struct broker *b)
{
    struct groups *gs = &b->groups;
    if (!gs->timer_ev)
        return;
    int64_t d = groups_live(b) ? group_next_deadline(gs->st) : INT64_MAX;
    if (d == gs->timer_at && evtimer_pending(gs->timer_ev, NULL))
        return;
    if (d == INT64_MAX) {
        evtimer_del(gs->timer_ev);
        gs->timer_at = INT64_MAX;
        return;
    }
    int64_t delay = d - now_ms();
    if (delay < 0)
        delay = 0;
    delay += 1; /* the machine acts at or after the deadline, never before */
    struct timeval tv = {(time_t)(delay / 1000), (suseconds_t)(delay % 1000) * 1000};
    evtimer_add(gs->timer_ev, &tv);
    gs->timer_at = d;
}

void groups_after(struct broker *b)
{
    struct groups *gs = &b->groups;
    if (!gs->st || gs->in_after)
        return;
    gs->in_after = true;
    drain_records(b);
    drain_effects(b);
    drain_records(b);
    if (group_batch_items(gs->st) > 0 && groups_live(b))
        arm_lazy_flush(b); /* groups_park makes it immediate for a waiting reply */
    rearm_timer(b);
    gs->in_after = false;
    VERITY_VERIFY(groups_ok(gs));
    if (gs->lost_view)
        groups_repl_check(b); /* a proposal was refused: step down */
}

static void flush_cb(evutil_socket_t fd, short what, void *arg)
{
    struct broker *b = arg;
    (void)fd;
    (void)what;
    b->groups.flush_armed = false;
    if (b->groups.lazy_ev)
        evtimer_del(b->groups.lazy_ev);
    if (!groups_live(b))
        return;
    group_flush(b->groups.st, now_ms());
    groups_after(b);
}

static void timer_cb(evutil_socket_t fd, short what, void *arg)
{
    struct broker *b = arg;
    (void)fd;
    (void)what;
    b->groups.timer_at = INT64_MAX;
    if (!groups_live(b))
        return;
    int64_t now = now_ms();
    /* A member waiting in a GroupFetch is alive: its connection is open and
     * its request stands. */
    for (struct bgroup *bg = b->groups.list; bg; bg = bg->next) {
        struct gwaiter *w;
        TAILQ_FOREACH(w, &bg->waiters, link)
        {
            /* An unknown member fails its fetch at the next evaluation. */
            if (group_heartbeat(b->groups.st, bg->name, w->member_id, now))
                gfetch_wake(w->f);
        }
    }
    group_tick(b->groups.st, now);
    groups_after(b);
    groups_wake_all(b);
}

static void retry_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    if (groups_live(arg))
        dlq_retry(arg);
    else
        dlq_scan(arg);
    dlq_arm_scan(arg);
}

/* Commit thread (group mode) or loop (os mode): wake the loop. */
static void groups_on_durable(void *arg, uint64_t durable_end)
{
    struct broker *b = arg;
    (void)durable_end;
    event_active(b->groups.durable_ev, EV_READ, 0);
}

static void durable_cb(evutil_socket_t fd, short what, void *arg)
{
    struct broker *b = arg;
    struct groups *gs = &b->groups;
    (void)fd;
    (void)what;
    if (!gs->log)
        return;
    uint64_t d = vlog_durable_end(gs->log);
    while (gs->ends_n > 0 && gs->ends[gs->ends_head].end <= d) {
        uint64_t seq = gs->ends[gs->ends_head].seq;
        VERITY_VERIFY(seq >= gs->seq_durable && seq <= gs->seq_appended);
        gs->seq_durable = seq;
        gs->ends_head = (gs->ends_head + 1) % gs->ends_cap;
        gs->ends_n--;
    }
    int err = vlog_error(gs->log);
    if (err)
        set_error(b, err, "sync");
    groups_answer_parked(b);
}

/* ---- companions and wake-ups ------------------------------------------------- */

struct bgroup *bgroup_get(struct broker *b, const char *name)
{
    struct groups *gs = &b->groups;
    struct group_info info;
    if (!gs->st || group_get_info(gs->st, name, &info))
        return NULL;
    for (struct bgroup *bg = gs->list; bg; bg = bg->next)
        if (strcmp(bg->name, name) == 0)
            return bg;
    struct bgroup *bg = calloc(1, sizeof *bg);
    if (!bg)
        return NULL;
    snprintf(bg->name, sizeof bg->name, "%s", name);
    TAILQ_INIT(&bg->waiters);
    bg->next = gs->list;
    gs->list = bg;
    return bg;
}

void bgroup_drop(struct broker *b, const char *name)
{
    struct bgroup **pp = &b->groups.list;
    while (*pp) {
        struct bgroup *bg = *pp;
        if (strcmp(bg->name, name) == 0) {
            VERITY_VERIFY(TAILQ_EMPTY(&bg->waiters));
            *pp = bg->next;
            free(bg);
            return;
        }
        pp = &bg->next;
    }
}

void groups_wake(struct bgroup *bg)
{
    struct gwaiter *w;
    TAILQ_FOREACH(w, &bg->waiters, link)
    gfetch_wake(w->f);
}

void groups_wake_all(struct broker *b)
{
    for (struct bgroup *bg = b->groups.list; bg; bg = bg->next)
        groups_wake(bg);
}

void groups_on_commit(struct partition *p, uint64_t hw)
{
    struct broker *b = p->b;
    struct groups *gs = &b->groups;
    if (!gs->st)
        return;
    for (struct bgroup *bg = gs->list; bg; bg = bg->next) {
        if (TAILQ_EMPTY(&bg->waiters))
            continue;
        struct group_info info;
        if (group_get_info(gs->st, bg->name, &info))
            continue;
        for (uint32_t i = 0; i < info.cfg->n_topics; i++) {
            if (strcmp(info.cfg->topics[i].name, p->topic->name) == 0) {
                groups_wake(bg);
                break;
            }
        }
    }
    dlq_on_commit(p, hw);
}

void groups_changed(struct broker *b)
{
    b->groups.gen++;
}

/* Rebuilds t's list of reading groups. */
static void readers_build(struct broker *b, struct topic *t)
{
    struct groups *gs = &b->groups;
    size_t n = 0, k = 0;
    group_list(gs->st, NULL, 0, &n);
    const char **names = calloc(n ? n : 1, sizeof *names);
    struct treader *rd = calloc(n ? n : 1, sizeof *rd);
    free(t->readers);
    t->readers = NULL;
    t->n_readers = 0;
    if (!names || !rd) {
        free(names);
        free(rd);
        return; /* no cache: no early answers for this topic until the next change */
    }
    group_list(gs->st, names, n, &n);
    for (size_t i = 0; i < n; i++) {
        struct group_info info;
        if (group_get_info(gs->st, names[i], &info))
            continue;
        uint32_t base = 0;
        for (uint32_t j = 0; j < info.cfg->n_topics; j++) {
            if (strcmp(info.cfg->topics[j].name, t->name) == 0) {
                snprintf(rd[k].group, sizeof rd[k].group, "%s", names[i]);
                rd[k].base = base;
                rd[k].partitions = info.cfg->topics[j].partitions;
                k++;
                break;
            }
            base += info.cfg->topics[j].partitions;
        }
    }
    free(names);
    t->readers = rd;
    t->n_readers = k;
    t->readers_gen = gs->gen;
}

void groups_on_append(struct partition *p, uint64_t end)
{
    struct broker *b = p->b;
    struct groups *gs = &b->groups;
    struct topic *t = p->topic;
    if (!gs->st || gs->error || !gs->log || !groups_live(b))
        return;
    if (t->readers_gen != gs->gen)
        readers_build(b, t);
    if (t->n_readers == 0)
        return;
    int64_t now = now_ms();
    size_t items = group_batch_items(gs->st);
    uint64_t seq = group_last_seq(gs->st);
    for (size_t i = 0; i < t->n_readers; i++) {
        if (p->id >= t->readers[i].partitions)
            continue;
        int rc = group_horizon(gs->st, t->readers[i].group, t->readers[i].base + p->id, end, now);
        if (rc && rc != VERITY_ENOTFOUND && rc != VERITY_EINVAL)
            blog(BLOG_WARN, "group_horizon_failed", "group=%s error=%s", t->readers[i].group,
                 verity_errname(rc));
    }
    /* A raised horizon (or a record a forced emit produced) goes out with
     * this loop pass's flush: it must be durable before the data commits.
     * Most appends raise nothing. */
    if (group_batch_items(gs->st) != items || group_last_seq(gs->st) != seq)
        arm_flush(b);
}

void groups_part_closing(struct partition *p)
{
    dlq_part_closing(p);
}

/* ---- partitions of a group ------------------------------------------------------ */

struct partition *groups_part(struct broker *b, const struct group_config *cfg, uint32_t pidx)
{
    for (uint32_t i = 0; i < cfg->n_topics; i++) {
        uint32_t np = cfg->topics[i].partitions;
        if (pidx >= np) {
            pidx -= np;
            continue;
        }
        struct topic *t = topic_find_live(b, cfg->topics[i].name);
        if (!t || pidx >= t->cfg.partitions)
            return NULL;
        struct partition *p = t->parts[pidx];
        return p && p->log && p->replica ? p : NULL;
    }
    return NULL;
}

void groups_hwm(struct broker *b, const struct group_config *cfg, uint64_t *hwm, size_t n)
{
    size_t k = 0;
    for (uint32_t i = 0; i < cfg->n_topics; i++) {
        struct topic *t = topic_find_live(b, cfg->topics[i].name);
        for (uint32_t j = 0; j < cfg->topics[i].partitions && k < n; j++, k++) {
            struct partition *p = t && j < t->cfg.partitions ? t->parts[j] : NULL;
            hwm[k] = p && p->log && p->replica ? part_hw(p) : 0;
            if (hwm[k] >= GROUP_OFFSET_LIMIT)
                hwm[k] = GROUP_OFFSET_LIMIT - 1;
        }
    }
    while (k < n)
        hwm[k++] = 0;
}

int groups_pidx(struct broker *b, const char *group, const char *topic, uint32_t partition,
                uint32_t *pidx, char *msg, size_t cap)
{
    char q1[GROUP_NAME_MAX + 8], q2[VERITY_TOPIC_NAME_MAX + 8];
    int rc = group_part_index(b->groups.st, group, topic, partition, pidx);
    if (rc == VERITY_ENOTFOUND)
        snprintf(msg, cap, "unknown group %s", blog_q(group, q1, sizeof q1));
    else if (rc)
        snprintf(msg, cap, "group %s does not read %s partition %" PRIu32,
                 blog_q(group, q1, sizeof q1), blog_q(topic, q2, sizeof q2), partition);
    return rc;
}

/* ---- open / close -------------------------------------------------------------- */

static int replay_batch(struct broker *b, const uint8_t *buf, size_t len, uint64_t *applied)
{
    struct batch_hdr h;
    int rc = batch_hdr_decode(buf, len, &h);
    if (rc)
        return rc;
    struct batch_iter it;
    struct batch_record r;
    batch_iter_init(&it, buf, h.length);
    if (h.attributes & BATCH_ATTR_CONTROL) {
        /* A state installed from a peer (cluster state transfer) follows a
         * state mark: the records before it do not build the state after
         * it. The replay starts past it from the snapshot written with it;
         * meeting one means that snapshot is gone or does not match. */
        if (batch_iter_next(&it, &r) == 1 && r.key_len == (int32_t)strlen(BATCH_CONTROL_STATE) &&
            memcmp(r.key, BATCH_CONTROL_STATE, strlen(BATCH_CONTROL_STATE)) == 0) {
            blog(BLOG_ERROR, "group_log_state_mark",
                 "offset=%" PRIu64 " (a state installed from a peer starts here and its snapshot "
                 "is missing or does not match: the log alone cannot rebuild the group state)",
                 h.base_offset);
            return VERITY_ECORRUPT;
        }
        return 0;
    }
    while ((rc = batch_iter_next(&it, &r)) == 1) {
        if (r.value_len <= 0)
            return VERITY_ECORRUPT;
        rc = group_apply(b->groups.st, r.value, (size_t)r.value_len);
        if (rc) {
            blog(BLOG_ERROR, "group_log_record_rejected",
                 "offset=%" PRIu64 " error=%s (refusing to start: skipping it would lose "
                 "group progress)",
                 h.base_offset + r.offset_delta, verity_errname(rc));
            return rc;
        }
        (*applied)++;
    }
    return rc < 0 ? rc : 0;
}

static int replay(struct broker *b, uint64_t from, uint64_t *applied)
{
    struct groups *gs = &b->groups;
    struct vlog_info info;
    vlog_get_info(gs->log, &info);
    size_t cap = VERITY_BATCH_BYTES_MAX;
    uint8_t *buf = malloc(cap);
    uint64_t off = from > info.start_offset ? from : info.start_offset;
    int rc = 0;
    if (!buf)
        return -ENOMEM;
    while (off < info.end_offset) {
        size_t len = 0;
        if ((rc = vlog_read_copy(gs->log, off, info.end_offset, buf, cap, &len)) || len == 0)
            break;
        for (size_t p = 0; p < len;) {
            struct batch_hdr h;
            if ((rc = batch_hdr_decode(buf + p, len - p, &h)) || h.length > len - p) {
                rc = rc ? rc : VERITY_ECORRUPT;
                goto out;
            }
            if ((rc = replay_batch(b, buf + p, h.length, applied)))
                goto out;
            off = h.base_offset + h.record_count;
            p += h.length;
        }
    }
out:
    free(buf);
    return rc;
}

int groups_load_state(struct broker *b, uint64_t *applied)
{
    uint64_t from = 0;
    int rc;
    /* Snapshot + tail (broker/groups_snap.c); the whole log if either fails. */
    if ((rc = groups_snap_load(b, &from)))
        return rc;
    if (from && (rc = replay(b, from, applied)) && (rc = groups_snap_reset(b, "tail")) == 0)
        rc = replay(b, 0, applied);
    else if (!from)
        rc = replay(b, 0, applied);
    return rc;
}

int groups_open(struct broker *b)
{
    struct groups *gs = &b->groups;
    char dir[BCFG_PATH_MAX + 32];
    int rc;
    TAILQ_INIT(&gs->parked);
    TAILQ_INIT(&gs->dlq_jobs);
    gs->timer_at = INT64_MAX;
    gs->gen = 1;
    if ((rc = group_state_new(b->cfg.group_pending_max, &gs->st)))
        return rc;
    if ((rc = batch_builder_init(&gs->bb, VERITY_BATCH_BYTES_MAX)))
        return rc;
    gs->durable_ev = event_new(b->base, -1, 0, durable_cb, b);
    gs->flush_ev = event_new(b->base, -1, 0, flush_cb, b);
    gs->lazy_ev = evtimer_new(b->base, flush_cb, b);
    gs->timer_ev = evtimer_new(b->base, timer_cb, b);
    gs->retry_ev = evtimer_new(b->base, retry_cb, b);
    if (!gs->durable_ev || !gs->flush_ev || !gs->lazy_ev || !gs->timer_ev || !gs->retry_ev)
        return -ENOMEM;
    dlq_arm_scan(b);
    snprintf(dir, sizeof dir, "%s/__groups", b->cfg.data_dir);
    struct vlog_config vc;
    vlog_config_default(&vc);
    switch (b->cfg.group_log_durability) {
    case TDUR_ALWAYS:
        vc.durability = VLOG_DURABILITY_GROUP;
        vc.group_delay_us = 0;
        break;
    case TDUR_GROUP:
        vc.durability = VLOG_DURABILITY_GROUP;
        vc.group_delay_us = b->cfg.group_log_delay_us;
        break;
    case TDUR_OS:
        vc.durability = VLOG_DURABILITY_OS;
        break;
    }
    vc.segment_bytes = GROUPS_SEGMENT_BYTES;
    vc.io = b->cfg.io;
    vc.checkpoint_records = b->cfg.checkpoint_records;
    vc.prealloc_bytes = b->cfg.log_prealloc_bytes;
    gs->repl = b->cluster != NULL;
    if (gs->repl) {
        /* a cluster: the log holds committed records only; its durability
         * is the __groups journal's (synced with the applied ring on the
         * tick), and no node-local checkpoint takes an offset */
        vc.durability = VLOG_DURABILITY_OS;
        vc.checkpoint_records = 0;
    }
    vc.signing_key = b->signing_key;
    vc.on_durable = groups_on_durable;
    vc.on_durable_arg = b;
    uint64_t bad = 0;
    if ((rc = vlog_open(dir, &vc, now_ms(), &gs->log, &bad))) {
        blog(BLOG_ERROR, "group_log_open_failed", "dir=%s error=%s bad_offset=%" PRIu64, dir,
             verity_errname(rc), bad);
        gs->log = NULL;
        return rc;
    }
    const struct vlog_recovery *rec = vlog_last_recovery(gs->log);
    if (rec && rec->cut)
        blog(BLOG_WARN, "group_log_recovered",
             "cut_first=%" PRIu64 " cut_bytes=%" PRIu64 " (records of the cut tail were never "
             "answered)",
             rec->cut_offset_first, rec->cut_bytes);
    if ((rc = cluster_groups_recover(b)))
        return rc;
    uint64_t applied = 0;
    rc = groups_load_state(b, &applied);
    if (rc) {
        blog(BLOG_ERROR, "group_log_replay_failed", "error=%s", verity_errname(rc));
        return rc;
    }
    /* in a cluster the coordinator recovers when it takes over
     * (groups_repl_check) */
    if (!gs->repl && (rc = group_recover(gs->st, now_ms())))
        return rc;
    gs->seq_appended = gs->seq_durable = group_last_seq(gs->st);
    const char *names[1];
    size_t n_groups = 0;
    group_list(gs->st, names, 0, &n_groups);
    groups_after(b);
    blog(BLOG_INFO, "groups_loaded", "groups=%zu records=%" PRIu64 " last_seq=%" PRIu64, n_groups,
         applied, gs->seq_durable);
    if (gs->repl && (rc = cluster_groups_start(b)))
        return rc;
    return 0;
}

void groups_fail_waiters(struct broker *b, int err, const char *msg)
{
    for (struct bgroup *bg = b->groups.list; bg; bg = bg->next) {
        while (!TAILQ_EMPTY(&bg->waiters))
            gfetch_fail(TAILQ_FIRST(&bg->waiters)->f, err, msg);
    }
}

int groups_close(struct broker *b, bool clean)
{
    struct groups *gs = &b->groups;
    int rc = 0;
    if (gs->st) {
        groups_fail_waiters(b, VERITY_ECLOSED, "broker is shutting down");
        if (gs->repl)
            cluster_groups_stop(b); /* before the log closes: syncs the ring */
        if (clean && gs->log && !gs->error && !gs->repl) {
            group_flush(gs->st, now_ms());
            drain_records(b);
            if (vlog_sync(gs->log) == 0)
                (void)groups_snapshot(b, true); /* logged and counted */
        }
    }
    groups_fail_parked(b, VERITY_ECLOSED);
    dlq_free_all(b);
    if (gs->log) {
        if (clean)
            rc = vlog_close(gs->log, now_ms());
        else
            vlog_abandon(gs->log);
        gs->log = NULL;
    }
    if (rc)
        blog(BLOG_ERROR, "group_log_close_failed", "error=%s", verity_errname(rc));
    while (gs->list) {
        struct bgroup *bg = gs->list;
        gs->list = bg->next;
        free(bg);
    }
    if (gs->durable_ev)
        event_free(gs->durable_ev);
    if (gs->flush_ev)
        event_free(gs->flush_ev);
    if (gs->lazy_ev)
        event_free(gs->lazy_ev);
    if (gs->timer_ev)
        event_free(gs->timer_ev);
    if (gs->retry_ev)
        event_free(gs->retry_ev);
    gs->durable_ev = gs->flush_ev = gs->lazy_ev = gs->timer_ev = gs->retry_ev = NULL;
    batch_builder_deinit(&gs->bb);
    free(gs->ends);
    gs->ends = NULL;
    gs->ends_n = gs->ends_cap = gs->ends_head = 0;
    group_state_free(gs->st);
    gs->st = NULL;
    return rc;
}

/* ---- helpers for the handlers ----------------------------------------------- */

bool groups_pidx_split(const struct group_config *cfg, uint32_t pidx, uint32_t *topic,
                       uint32_t *partition)
{
    for (uint32_t i = 0; i < cfg->n_topics; i++) {
        if (pidx < cfg->topics[i].partitions) {
            *topic = i;
            *partition = pidx;
            return true;
        }
        pidx -= cfg->topics[i].partitions;
    }
    return false;
}

int64_t groups_batch_ts(struct partition *p, uint64_t offset)
{
    struct vlog_span sp;
    size_t n = 0;
    uint8_t hb[BATCH_HDR_SIZE];
    struct batch_hdr h;
    if (!p || !p->log || vlog_read(p->log, offset, offset + 1, 1, &sp, 1, &n) || n == 0)
        return INT64_MIN;
    ssize_t got = pread(sp.fd, hb, sizeof hb, (off_t)sp.position);
    vlog_spans_close(&sp, n);
    if (got != (ssize_t)sizeof hb || batch_hdr_decode(hb, sizeof hb, &h))
        return INT64_MIN;
    return h.first_timestamp;
}

void group_fail(struct req *r, int rc, const char *group, uint64_t member_id, const char *detail)
{
    char msg[600], q[GROUP_NAME_MAX + 8];
    const char *g = blog_q(group ? group : "", q, sizeof q);
    const char *d = detail ? detail : "";
    const char *sep = detail && detail[0] ? ": " : "";
    switch (rc) {
    case VERITY_ENOTFOUND:
        snprintf(msg, sizeof msg, "unknown group %s%s%s", g, sep, d);
        break;
    case VERITY_EMEMBER:
        snprintf(msg, sizeof msg,
                 "member %" PRIu64 " is not a member of group %s (never joined, left, or its "
                 "session timed out)%s%s",
                 member_id, g, sep, d);
        break;
    case VERITY_EEXIST:
        snprintf(msg, sizeof msg, "group %s already exists", g);
        break;
    default:
        snprintf(msg, sizeof msg, "group %s: %s%s%s", g, verity_strerror(rc), sep, d);
        break;
    }
    req_fail(r, rc, msg);
}
