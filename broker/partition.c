/*
 * Topics and partitions: the topic table, opening a partition (log
 * recovery, idempotence rebuild, single-node replica), the wake-up path from
 * the storage commit thread to the loop, and high-watermark progress.
 *
 * Durability path: the log's commit thread calls on_durable after an
 * fdatasync; that only activates the partition's durable event (libevent is
 * built with evthread_use_pthreads, so event_active is safe from any
 * thread). On the loop, the replica's poll turns the durable end into the
 * high watermark and part_progress answers the produces whose batches it now
 * covers, in offset order. Invariant: a produce is answered with success
 * only when the high watermark is past its last offset.
 *
 * Rebuild after a restart: the idempotence snapshot <dir>/idem.snap (see
 * storage/snap.h) is loaded if it passes its checks and still matches the
 * log (a batch ends at the offset it covers, with its chain hash); then every
 * batch header past it (all of them without a usable snapshot) is fed to
 * idem_record in log order (headers only: 112 bytes per batch). Start time
 * is bounded by the snapshot plus the tail: part_snapshot writes a new one
 * every snapshot_records records (from the 1 s housekeeping tick, only when
 * the whole log is durable, so it never covers bytes a crash could cut) and
 * at a clean close. Idempotency
 * keys are recorded only for batches at or after
 * vlog_offset_for_time(now - window), as the live broker would still hold
 * them. The log after recovery holds exactly the batches that survived, so
 * the rebuilt state answers a retry of each of them as a duplicate and lets
 * a retry of a lost one append again.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <event2/event.h>

#include "broker/blog.h"
#include "broker/kafka/kafka.h"
#include "broker/broker_int.h"
#include "broker/xfer.h"
#include "storage/batch.h"
#include "storage/snap.h"
#include "verity/errors.h"
#include "verity/verify.h"

/* ---- topic table ---------------------------------------------------------- */

static size_t name_bucket(const char *name)
{
    uint32_t h = 2166136261u;
    for (const char *p = name; *p; p++)
        h = (h ^ (uint8_t)*p) * 16777619u;
    return h % TOPIC_BUCKETS;
}

struct topic *topic_find(struct broker *b, const char *name)
{
    for (struct topic *t = b->topic_buckets[name_bucket(name)]; t; t = t->hnext)
        if (strcmp(t->name, name) == 0)
            return t;
    return NULL;
}

struct topic *topic_find_live(struct broker *b, const char *name)
{
    struct topic *t = topic_find(b, name);
    return t && t->ready && !t->deleting ? t : NULL;
}

int topic_partition(struct broker *b, const char *topic, uint32_t partition, struct partition **out,
                    char *msg, size_t cap)
{
    struct topic *t = topic_find_live(b, topic);
    char q[256];
    if (!t) {
        snprintf(msg, cap, "unknown topic %s", blog_q(topic, q, sizeof q));
        return VERITY_ENOTFOUND;
    }
    if (partition >= t->cfg.partitions) {
        snprintf(msg, cap, "topic %s has %" PRIu32 " partitions; %" PRIu32 " does not exist",
                 t->name, t->cfg.partitions, partition);
        return VERITY_ENOTFOUND;
    }
    *out = t->parts[partition];
    return 0;
}

struct topic *topic_add(struct broker *b, const char *name, const struct topic_cfg *cfg,
                        int64_t created_ms)
{
    struct topic *t = calloc(1, sizeof *t);
    if (!t)
        return NULL;
    t->parts = calloc(cfg->partitions, sizeof *t->parts);
    if (!t->parts) {
        free(t);
        return NULL;
    }
    snprintf(t->name, sizeof t->name, "%s", name);
    t->cfg = *cfg;
    t->created_ms = created_ms;
    size_t bi = name_bucket(t->name);
    t->hnext = b->topic_buckets[bi];
    b->topic_buckets[bi] = t;
    TAILQ_INSERT_TAIL(&b->topics, t, link);
    b->n_topics++;
    return t;
}

void topic_remove(struct broker *b, struct topic *t)
{
    struct topic **pp = &b->topic_buckets[name_bucket(t->name)];
    while (*pp && *pp != t)
        pp = &(*pp)->hnext;
    VERITY_VERIFY(*pp == t);
    *pp = t->hnext;
    TAILQ_REMOVE(&b->topics, t, link);
    b->n_topics--;
    for (uint32_t i = 0; i < t->cfg.partitions; i++)
        VERITY_VERIFY(t->parts[i] == NULL);
    free(t->parts);
    free(t->readers);
    free(t);
}

int topic_open_partitions(struct broker *b, struct topic *t)
{
    for (uint32_t i = 0; i < t->cfg.partitions; i++) {
        if (t->parts[i])
            continue;
        int rc = part_open(b, t, i, &t->parts[i]);
        if (rc)
            return rc;
    }
    t->ready = true;
    return 0;
}

Verity__Durability topic_durability_to_wire(enum topic_durability d)
{
    switch (d) {
    case TDUR_ALWAYS:
        return VERITY__DURABILITY__DURABILITY_ALWAYS;
    case TDUR_OS:
        return VERITY__DURABILITY__DURABILITY_OS;
    default:
        return VERITY__DURABILITY__DURABILITY_GROUP;
    }
}

int topic_cfg_from_wire(const struct broker *b, const Verity__TopicConfig *w, struct topic_cfg *out,
                        char *msg, size_t cap)
{
    const struct broker_config *c = &b->cfg;
    uint32_t max_msg = c->default_max_message_bytes < c->max_batch_bytes
                           ? c->default_max_message_bytes
                           : c->max_batch_bytes;
    out->partitions = c->default_partitions;
    out->durability = c->default_durability;
    out->retention_ms = c->default_retention_ms;
    out->retention_bytes = c->default_retention_bytes;
    out->segment_bytes = c->default_segment_bytes;
    out->max_message_bytes = max_msg;
    /* set before the early return: callers without a wire config (audit,
     * DLQ, Kafka auto-create) used to leave it uninitialized, and the
     * garbage went into the create_topic record, which the other brokers
     * of a cluster refused ("bad create_topic fields") */
    out->replicas = 1;
    if (!w)
        return 0;
    if (w->partitions) {
        if (w->partitions > VERITY_PARTITIONS_MAX) {
            snprintf(msg, cap, "partitions %" PRIu32 " exceeds the limit %u", w->partitions,
                     VERITY_PARTITIONS_MAX);
            return VERITY_ELIMIT;
        }
        out->partitions = w->partitions;
    }
    switch (w->durability) {
    case VERITY__DURABILITY__DURABILITY_DEFAULT:
        break;
    case VERITY__DURABILITY__DURABILITY_ALWAYS:
        out->durability = TDUR_ALWAYS;
        break;
    case VERITY__DURABILITY__DURABILITY_GROUP:
        out->durability = TDUR_GROUP;
        break;
    case VERITY__DURABILITY__DURABILITY_OS:
        out->durability = TDUR_OS;
        break;
    default:
        snprintf(msg, cap, "unknown durability %d", (int)w->durability);
        return VERITY_EINVAL;
    }
    if (w->retention_ms < -1 || w->retention_bytes < -1) {
        snprintf(msg, cap, "retention must be -1 (unlimited), 0 (default) or positive");
        return VERITY_EINVAL;
    }
    if (w->retention_ms)
        out->retention_ms = w->retention_ms;
    if (w->retention_bytes)
        out->retention_bytes = w->retention_bytes;
    if (w->segment_bytes) {
        if (w->segment_bytes < 4096 || w->segment_bytes > (1ull << 31)) {
            snprintf(msg, cap, "segment_bytes must be within 4096..2147483648");
            return VERITY_EINVAL;
        }
        out->segment_bytes = w->segment_bytes;
    }
    if (w->max_message_bytes) {
        if (w->max_message_bytes > c->max_batch_bytes) {
            snprintf(msg, cap, "max_message_bytes %" PRIu32 " exceeds max_batch_bytes %" PRIu32,
                     w->max_message_bytes, c->max_batch_bytes);
            return VERITY_ELIMIT;
        }
        if (w->max_message_bytes < BATCH_HDR_SIZE + 8) {
            snprintf(msg, cap, "max_message_bytes must be at least %u", BATCH_HDR_SIZE + 8);
            return VERITY_EINVAL;
        }
        out->max_message_bytes = w->max_message_bytes;
    }
    if (w->replication_factor > 1 && !cluster_on(b)) {
        snprintf(msg, cap,
                 "replication_factor %" PRIu32 " needs a cluster; this broker is a "
                 "single node",
                 w->replication_factor);
        return VERITY_EINVAL;
    }
    /* cluster: 1, 3 or 5 replicas, at most the cluster's brokers */
    if (w->replication_factor > 1) {
        if ((w->replication_factor != 3 && w->replication_factor != 5) ||
            w->replication_factor > c->cluster_n) {
            snprintf(msg, cap,
                     "replication_factor %" PRIu32 " must be 1, 3 or 5 and at most the %" PRIu32
                     " brokers of the cluster",
                     w->replication_factor, c->cluster_n);
            return VERITY_EINVAL;
        }
        out->replicas = w->replication_factor;
    }
    return 0;
}

/* ---- partitions ----------------------------------------------------------- */

void part_vlog_config(const struct broker *b, const struct topic_cfg *tc, struct vlog_config *vc)
{
    vlog_config_default(vc);
    switch (tc->durability) {
    case TDUR_ALWAYS:
        /* The commit thread syncs as soon as anything is pending: every ack
         * still follows an fdatasync that covers it, and the loop never
         * blocks on one. */
        vc->durability = VLOG_DURABILITY_GROUP;
        vc->group_delay_us = 0;
        break;
    case TDUR_GROUP:
        vc->durability = VLOG_DURABILITY_GROUP;
        vc->group_delay_us = b->cfg.group_delay_us;
        vc->group_bytes_max = b->cfg.group_bytes_max;
        break;
    case TDUR_OS:
        vc->durability = VLOG_DURABILITY_OS;
        break;
    }
    vc->segment_bytes = tc->segment_bytes;
    vc->retention_ms = tc->retention_ms > 0 ? tc->retention_ms : 0;
    vc->retention_bytes = tc->retention_bytes > 0 ? (uint64_t)tc->retention_bytes : 0;
    vc->checkpoint_records = b->cfg.checkpoint_records;
    vc->prealloc_bytes = b->cfg.log_prealloc_bytes;
    vc->signing_key = b->signing_key;
    vc->io = b->cfg.io;
}

/* Commit thread (group mode) or loop (os mode): wake the loop. */
static void part_on_durable(void *arg, uint64_t durable_end)
{
    struct partition *p = arg;
    (void)durable_end;
    event_active(p->durable_ev, EV_READ, 0);
}

static void part_durable_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    part_progress(arg);
}

uint64_t part_hw(const struct partition *p)
{
    return p->replica ? replica_hw(p->replica) : 0;
}

void part_commit_hook(void *arg, uint64_t hw);
static void part_commit(void *arg, uint64_t hw)
{
    struct partition *p = arg;
    struct prod_wait *w;
    if (p->b->trace && p->log) {
        int64_t s0, s1;
        if (p->cg) /* replicated: the op's proposal and its own journal write */
            cluster_part_trace(p, hw, &s0, &s1);
        else
            vlog_last_sync(p->log, &s0, &s1);
        trace_commit(p->b, p, hw, s0, s1, mono_ns());
    }
    while ((w = TAILQ_FIRST(&p->waits)) && w->end <= hw) {
        produce_wait_resolve(w, 0, hw);
        VERITY_VERIFY(TAILQ_FIRST(&p->waits) != w);
    }
    struct fetch_link *l, *next;
    for (l = TAILQ_FIRST(&p->fetchers); l; l = next) {
        next = TAILQ_NEXT(l, link);
        fetch_link_wake(l, false);
    }
    groups_on_commit(p, hw);
}

void part_commit_hook(void *arg, uint64_t hw)
{
    part_commit(arg, hw);
}

static void part_fail_all(struct partition *p, int err, bool final)
{
    while (!TAILQ_EMPTY(&p->waits)) {
        struct prod_wait *w = TAILQ_FIRST(&p->waits);
        produce_wait_resolve(w, err, part_hw(p));
        VERITY_VERIFY(TAILQ_FIRST(&p->waits) != w);
    }
    while (!TAILQ_EMPTY(&p->fetchers)) {
        struct fetch_link *l = TAILQ_FIRST(&p->fetchers);
        fetch_link_wake(l, final);
        VERITY_VERIFY(TAILQ_FIRST(&p->fetchers) != l);
    }
}

void part_progress(struct partition *p)
{
    if (!p->replica)
        return;
    int err = replica_poll(p->replica);
    if (err) {
        if (!p->error_logged) {
            blog(BLOG_ERROR, "partition_failed", "topic=%s partition=%" PRIu32 " error=%s",
                 p->topic->name, p->id, verity_errname(err));
            p->error_logged = true;
        }
        p->error = VERITY_EREADONLY;
        /* Nothing more will become durable: fail what is still waiting. */
        part_fail_all(p, VERITY_EREADONLY, true);
    }
}

#define IDEM_SNAP "idem.snap"

int part_snapshot(struct partition *p, bool force)
{
    struct broker *b = p->b;
    struct vlog_info info;
    struct snap_hdr h = {.kind = SNAP_IDEM};
    uint8_t *buf = NULL;
    size_t len = 0;
    int rc;
    if (!p->log || p->error)
        return 0;
    vlog_get_info(p->log, &info);
    if (info.end_offset == p->snap_offset || info.error || info.durable_end != info.end_offset)
        return 0;
    if (!force && (b->cfg.snapshot_records == 0 ||
                   info.end_offset - p->snap_offset < b->cfg.snapshot_records))
        return 0;
    h.offset = info.end_offset;
    if ((rc = snap_chain_at(p->log, h.offset, h.chain)) || (rc = idem_encode(&p->idem, &buf, &len)))
        goto out;
    h.length = len;
    rc = snap_write(b->cfg.io, p->dir, IDEM_SNAP, &h, buf, len);
out:
    free(buf);
    if (rc) {
        b->met.snapshot_failures++;
        blog(BLOG_WARN, "snapshot_failed", "topic=%s partition=%" PRIu32 " error=%s",
             p->topic->name, p->id, verity_errname(rc));
        return rc;
    }
    b->met.snapshots_written++;
    p->snap_offset = h.offset;
    blog(BLOG_DEBUG, "snapshot_written", "topic=%s partition=%" PRIu32 " offset=%" PRIu64
         " bytes=%zu", p->topic->name, p->id, h.offset, len);
    return 0;
}

/* Loads <dir>/idem.snap when it is valid and matches the log; returns the
 * offset the replay starts from (the log's start without one). */
static uint64_t part_load_snapshot(struct partition *p, uint64_t start)
{
    struct broker *b = p->b;
    struct snap_hdr h;
    uint8_t *buf = NULL;
    const char *why = NULL;
    int rc = snap_read(b->cfg.io, p->dir, IDEM_SNAP, SNAP_IDEM, &h, &buf);
    if (rc == -ENOENT)
        return start;
    if (rc)
        why = verity_errname(rc);
    else if (!snap_matches(p->log, &h))
        why = "does not match the log";
    else if ((rc = idem_decode(&p->idem, buf, h.length)))
        why = verity_errname(rc);
    free(buf);
    if (why) {
        b->met.snapshots_ignored++;
        blog(BLOG_WARN, "snapshot_ignored",
             "topic=%s partition=%" PRIu32 " reason=\"%s\" (replaying the whole log)",
             p->topic->name, p->id, why);
        return start;
    }
    p->snap_offset = h.offset;
    return h.offset;
}

/* Feeds the batch headers of one span to the idempotence state; *off is
 * the offset expected next. */
static int rebuild_span(struct partition *p, const struct vlog_span *sp, uint64_t key_from,
                        int64_t now, uint64_t *off, uint64_t *batches)
{
    int rc;
    uint64_t pos = sp->position;
    uint64_t stop = sp->position + sp->length;
    while (pos < stop) {
        uint8_t hb[BATCH_HDR_SIZE];
        struct batch_hdr h;
        ssize_t got = pread(sp->fd, hb, sizeof hb, (off_t)pos);
        if (got != (ssize_t)sizeof hb)
            return got < 0 ? -errno : VERITY_ECORRUPT;
        if ((rc = batch_hdr_decode(hb, sizeof hb, &h)))
            return rc;
        if (h.length > stop - pos || h.base_offset != *off)
            return VERITY_ECORRUPT;
        if (!(h.attributes & BATCH_ATTR_CONTROL) &&
            (h.producer_id >= 0 || (h.producer_id == -1 && h.base_offset >= key_from))) {
            int64_t t = h.max_timestamp < now ? h.max_timestamp : now;
            if ((rc = idem_record(&p->idem, &h, h.base_offset, h.base_offset + h.record_count - 1,
                                  t)))
                return rc;
        }
        pos += h.length;
        *off = h.base_offset + h.record_count;
        (*batches)++;
    }
    return 0;
}

/* Feeds every batch header of the log past the snapshot to the idempotence
 * state. */
static int part_rebuild(struct partition *p, int64_t now)
{
    struct vlog_info info;
    vlog_get_info(p->log, &info);
    uint64_t key_from = info.end_offset;
    int rc;
    if (p->b->cfg.idempotency_window_ms > 0 &&
        (rc = vlog_offset_for_time(p->log, now - (int64_t)p->b->cfg.idempotency_window_ms,
                                   &key_from)))
        return rc;
    uint64_t off = part_load_snapshot(p, info.start_offset);
    uint64_t from = off;
    uint64_t batches = 0;
    while (off < info.end_offset) {
        struct vlog_span spans[16];
        size_t n = 0;
        if ((rc = vlog_read(p->log, off, info.end_offset, 64u << 20, spans, 16, &n)))
            return rc;
        if (n == 0)
            break;
        for (size_t i = 0; i < n && rc == 0; i++)
            rc = rebuild_span(p, &spans[i], key_from, now, &off, &batches);
        vlog_spans_close(spans, n);
        if (rc)
            return rc;
    }
    idem_expire(&p->idem, now);
    p->b->met.producers_expired += idem_expire_producers(&p->idem, now);
    blog(BLOG_DEBUG, "partition_rebuilt",
         "topic=%s partition=%" PRIu32 " from=%" PRIu64 " batches=%" PRIu64
         " producers=%zu keys=%zu",
         p->topic->name, p->id, from, batches, p->idem.pcount, p->idem.kcount);
    return 0;
}

int part_rebuild_idem(struct partition *p)
{
    struct broker *b = p->b;
    idem_deinit(&p->idem);
    memset(&p->idem, 0, sizeof p->idem);
    if (idem_init(&p->idem, b->cfg.partition_producers_max, b->cfg.idempotency_keys_max,
                  (int64_t)b->cfg.idempotency_window_ms, b->idem_seed))
        return -ENOMEM;
    p->idem.producer_retention_ms = (int64_t)b->cfg.producer_retention_ms;
    p->snap_offset = 0;
    return part_rebuild(p, now_ms());
}

static int mkdir_p(const char *path)
{
    char tmp[BCFG_PATH_MAX * 2];
    snprintf(tmp, sizeof tmp, "%s", path);
    for (char *s = tmp + 1; *s; s++) {
        if (*s != '/')
            continue;
        *s = '\0';
        if (mkdir(tmp, 0755) && errno != EEXIST)
            return -errno;
        *s = '/';
    }
    if (mkdir(tmp, 0755) && errno != EEXIST)
        return -errno;
    return 0;
}

/* A replica's data log that does not verify (vlog_open refused it, a
 * closed segment fails its CRC, or no applied position matches what is
 * left): its files go to <dir>/damaged-<ms>/ (never deleted) and the log
 * starts empty; the journal and the applied ring (vsr/) stay, so the
 * replica keeps its votes, is far behind (applied op 0) and catches up by
 * state transfer before it can serve (docs/REPLICATION.md). */
static int part_replica_damaged(struct partition *p, const struct vlog_config *vc, int64_t now,
                                int why, uint64_t bad)
{
    char moved[BCFG_PATH_MAX * 2 + 64];
    if (p->log)
        vlog_abandon(p->log);
    p->log = NULL;
    int rc = xfer_move_aside(p->dir, now, moved, sizeof moved);
    blog(BLOG_WARN, "replica_damaged",
         "topic=%s partition=%" PRIu32 " error=%s bad_offset=%" PRIu64 " moved_to=%s result=%s",
         p->topic->name, p->id, verity_errname(why), bad, moved, rc ? verity_errname(rc) : "ok");
    if (rc)
        return rc;
    return vlog_open(p->dir, vc, now, &p->log, NULL);
}

int part_open(struct broker *b, struct topic *t, uint32_t id, struct partition **out)
{
    struct partition *p = calloc(1, sizeof *p);
    int rc;
    if (!p)
        return -ENOMEM;
    p->b = b;
    p->topic = t;
    p->id = id;
    TAILQ_INIT(&p->waits);
    TAILQ_INIT(&p->fetchers);
    size_t dlen = strlen(b->cfg.data_dir) + strlen(t->name) + 32;
    p->dir = malloc(dlen);
    p->durable_ev = event_new(b->base, -1, 0, part_durable_cb, p);
    if (!p->dir || !p->durable_ev ||
        idem_init(&p->idem, b->cfg.partition_producers_max, b->cfg.idempotency_keys_max,
                  (int64_t)b->cfg.idempotency_window_ms, b->idem_seed)) {
        if (p->durable_ev)
            event_free(p->durable_ev);
        free(p->dir);
        free(p);
        return -ENOMEM;
    }
    snprintf(p->dir, dlen, "%s/topics/%s/%" PRIu32, b->cfg.data_dir, t->name, id);
    p->idem.producer_retention_ms = (int64_t)b->cfg.producer_retention_ms;
    *out = p;
    bool replicated = cluster_on(b);
    if (replicated && !cluster_part_member(b, id, t->cfg.replicas)) {
        /* placed on other brokers: every request is answered NOT_LEADER */
        p->error = VERITY_ENOTLEADER;
        p->error_logged = true;
        return 0;
    }

    int64_t now = now_ms();
    struct vlog_config vc;
    part_vlog_config(b, &t->cfg, &vc);
    /* signed checkpoints carry the Merkle tree's C2SP note (docs/PROOFS.md) */
    snprintf(vc.tree_name, sizeof vc.tree_name, "%s", b->cfg.tlog_name);
    snprintf(vc.tree_origin, sizeof vc.tree_origin, "%s/%s/%" PRIu32, b->cfg.tlog_name, t->name,
             id);
    vc.on_durable = part_on_durable;
    vc.on_durable_arg = p;
    if (replicated) {
        /* every replica must hold the same bytes: no node-local checkpoint
         * or time-based roll takes an offset (docs/REPLICATION.md) */
        vc.checkpoint_records = 0;
        vc.segment_ms = 0;
        /* durability comes from the journals of a majority; the data log is
         * derived from them and synced with its applied position on the
         * cluster tick (broker/cluster.c), not per batch */
        vc.durability = VLOG_DURABILITY_OS;
    }
    uint64_t bad = 0;
    char parent[BCFG_PATH_MAX * 2];
    snprintf(parent, sizeof parent, "%s/topics/%s", b->cfg.data_dir, t->name);
    if (!(rc = mkdir_p(parent)))
        rc = vlog_open(p->dir, &vc, now, &p->log, &bad);
    if (replicated && (rc == VERITY_ECORRUPT || rc == VERITY_ECHAIN ||
                       (rc == 0 && (rc = xfer_log_scan(p->log, &bad)) == VERITY_ECORRUPT)))
        rc = part_replica_damaged(p, &vc, now, rc, bad);
    if (rc) {
        p->error = rc;
        p->log = NULL;
        blog(BLOG_ERROR, "partition_open_failed",
             "topic=%s partition=%" PRIu32 " error=%s bad_offset=%" PRIu64 " dir=%s", t->name, id,
             verity_errname(rc), bad, p->dir);
        return 0;
    }
    const struct vlog_recovery *rec = vlog_last_recovery(p->log);
    if (rec && rec->cut) {
        char q[400];
        blog(BLOG_WARN, "partition_recovered",
             "topic=%s partition=%" PRIu32 " cut_first=%" PRIu64 " cut_last=%" PRIu64
             " cut_bytes=%" PRIu64 " reason=%s",
             t->name, id, rec->cut_offset_first, rec->cut_offset_last, rec->cut_bytes,
             blog_q(rec->reason, q, sizeof q));
    }
    if (replicated && (rc = cluster_part_open(p)) == VERITY_ECORRUPT &&
        (rc = part_replica_damaged(p, &vc, now, rc, 0)) == 0)
        rc = cluster_part_open(p);
    if (replicated && rc) {
        p->error = rc;
        blog(BLOG_ERROR, "partition_replica_failed", "topic=%s partition=%" PRIu32 " error=%s",
             t->name, id, verity_errname(rc));
        return 0;
    }
    if ((rc = part_rebuild(p, now))) {
        p->error = rc;
        blog(BLOG_ERROR, "partition_rebuild_failed", "topic=%s partition=%" PRIu32 " error=%s",
             t->name, id, verity_errname(rc));
        return 0;
    }
    if (replicated) {
        if ((rc = cluster_part_start(p))) {
            p->error = rc;
            return 0;
        }
    } else if ((rc = replica_single_new(p->log, part_commit, p, &p->replica))) {
        p->error = rc;
        return 0;
    }
    struct vlog_info info;
    vlog_get_info(p->log, &info);
    p->ckpt_end = info.end_offset; /* a clean close ended it with a checkpoint */
    blog(BLOG_INFO, "partition_opened",
         "topic=%s partition=%" PRIu32 " start=%" PRIu64 " end=%" PRIu64 " segments=%" PRIu32
         " durability=%s",
         t->name, id, info.start_offset, info.end_offset, info.segments,
         bcfg_durability_name(t->cfg.durability));
    return 0;
}

int part_close(struct partition *p, int err, bool clean)
{
    int rc = 0;
    if (!p)
        return 0;
    part_fail_all(p, err, true);
    groups_part_closing(p);
    kafka_part_closing(p);
    if (p->cg) {
        /* replicated: no node-local checkpoint at close; synced and left */
        if (clean && !p->error && p->log && vlog_sync(p->log) == 0)
            (void)part_snapshot(p, true);
        cluster_part_close(p);
        if (p->log)
            vlog_abandon(p->log);
        p->log = NULL;
    }
    if (p->log) {
        /* A clean stop leaves a snapshot of everything, so the next start
         * replays (almost) nothing. */
        if (clean && !p->error && vlog_sync(p->log) == 0)
            (void)part_snapshot(p, true);
        if (clean)
            rc = vlog_close(p->log, now_ms());
        else
            vlog_abandon(p->log);
        p->log = NULL;
    }
    /* The commit thread is joined: nothing can activate the event now. */
    replica_free(p->replica);
    p->replica = NULL;
    event_free(p->durable_ev);
    idem_deinit(&p->idem);
    if (rc)
        blog(BLOG_ERROR, "partition_close_failed", "topic=%s partition=%" PRIu32 " error=%s",
             p->topic->name, p->id, verity_errname(rc));
    free(p->dir);
    free(p);
    return rc;
}

/* ---- metadata for answers ------------------------------------------------- */

int topic_md_fill(struct broker *b, struct topic *t, bool with_partitions,
                  Verity__TopicMetadata *md, Verity__TopicConfig *cfg)
{
    (void)b;
    verity__topic_metadata__init(md);
    verity__topic_config__init(cfg);
    md->name = t->name;
    cfg->partitions = t->cfg.partitions;
    cfg->durability = topic_durability_to_wire(t->cfg.durability);
    cfg->retention_ms = t->cfg.retention_ms;
    cfg->retention_bytes = t->cfg.retention_bytes;
    cfg->segment_bytes = t->cfg.segment_bytes;
    cfg->max_message_bytes = t->cfg.max_message_bytes;
    cfg->replication_factor = t->cfg.replicas ? t->cfg.replicas : 1;
    md->config = cfg;
    if (!with_partitions)
        return 0;
    size_t n = t->cfg.partitions;
    /* One allocation: pointer array, then the structs, then replica ids. */
    size_t sz = n * (sizeof(Verity__PartitionMetadata *) + sizeof(Verity__PartitionMetadata) +
                     BCFG_NODES_MAX * sizeof(uint32_t));
    uint8_t *mem = calloc(1, sz ? sz : 1);
    if (!mem)
        return -ENOMEM;
    Verity__PartitionMetadata **ptrs = (Verity__PartitionMetadata **)mem;
    Verity__PartitionMetadata *pm = (Verity__PartitionMetadata *)(ptrs + n);
    uint32_t *rep = (uint32_t *)(pm + n);
    for (size_t i = 0; i < n; i++) {
        struct partition *p = t->parts[i];
        verity__partition_metadata__init(&pm[i]);
        pm[i].partition = (uint32_t)i;
        pm[i].leader = b->cfg.node_id;
        rep[i * BCFG_NODES_MAX] = b->cfg.node_id;
        pm[i].n_replicas = 1;
        pm[i].replicas = &rep[i * BCFG_NODES_MAX];
        if (cluster_on(b)) {
            /* the primary as this broker sees it (0: a view change) */
            pm[i].n_replicas = cluster_part_replicas(b, (uint32_t)i, t->cfg.replicas,
                                                     pm[i].replicas);
            pm[i].leader = p && p->cg ? cluster_part_primary(p) : pm[i].replicas[0];
        }
        if (p && p->log) {
            struct vlog_info info;
            vlog_get_info(p->log, &info);
            pm[i].start_offset = info.start_offset;
            pm[i].end_offset = info.end_offset;
            pm[i].size_bytes = info.size_bytes;
            pm[i].high_watermark = part_hw(p);
        }
        /* a partition placed elsewhere is no error: leader names its primary */
        pm[i].error = codec_err_to_wire(p ? (p->error == VERITY_ENOTLEADER ? 0 : p->error)
                                          : VERITY_ENOTFOUND);
        ptrs[i] = &pm[i];
    }
    md->n_partitions = n;
    md->partitions = ptrs;
    return 0;
}

void topic_md_free(Verity__TopicMetadata *md)
{
    free(md->partitions);
    md->partitions = NULL;
    md->n_partitions = 0;
}

/* The time bound on checkpoints (checkpoint_interval_ms): a partition that
 * took appends since its last checkpoint gets one once the oldest of them is
 * that old, so a small log shows a signed checkpoint within the interval
 * instead of after checkpoint_records or at shutdown. Called by the 1 s
 * tick on the loop thread (the log's writer). */
void part_checkpoint_tick(struct partition *p, int64_t now)
{
    uint32_t interval = p->b->cfg.checkpoint_interval_ms;
    if (!interval || !p->log || p->error || p->cg)
        return;
    struct vlog_info info;
    vlog_get_info(p->log, &info);
    if (info.end_offset == p->ckpt_end) {
        p->ckpt_pending_ms = 0;
        return;
    }
    if (!p->ckpt_pending_ms) {
        p->ckpt_pending_ms = now;
        return;
    }
    if (now - p->ckpt_pending_ms < (int64_t)interval)
        return;
    int rc = vlog_checkpoint(p->log, now);
    if (rc) {
        blog(BLOG_WARN, "checkpoint_failed", "topic=%s partition=%" PRIu32 " error=%s",
             p->topic->name, p->id, verity_errname(rc));
        p->ckpt_pending_ms = now; /* try again after another interval */
        return;
    }
    vlog_get_info(p->log, &info);
    p->ckpt_end = info.end_offset;
    p->ckpt_pending_ms = 0;
    groups_on_append(p, info.end_offset);
}
