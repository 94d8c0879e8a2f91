/*
 * The metadata log: a vlog under <data-dir>/__meta whose records are JSON
 * objects, replayed in order on start. It holds everything about the broker
 * that is not partition data:
 *
 *   {"type":"create_topic","name":N,"partitions":P,"durability":"group",
 *    "retention_ms":R,"retention_bytes":B,"segment_bytes":S,
 *    "max_message_bytes":M,"time_ms":T}
 *   {"type":"delete_topic","name":N,"time_ms":T}
 *   {"type":"init_producer","producer_id":I,"epoch":E,"time_ms":T}
 *   {"type":"auth_change","by":"TENANT/PRINCIPAL","time_ms":T,"change":C}
 *       C: one change of the security store (broker/auth_store.h,
 *       auth_change_parse), made by the admin principal `by` over the admin
 *       HTTP port (broker/auth_admin.c); kept in b->meta.auth
 *
 * A record is valid only if it is a JSON object with a known type and every
 * field of that type in range; an invalid record met on replay is logged and
 * skipped (it can only come from a newer broker version).
 *
 * Snapshot: <data-dir>/__meta/meta.snap (storage/snap.h) holds the state
 * the log describes up to the offset it covers, as
 *
 *   u32 n, then n bytes: a JSON array of create_topic records (the format
 *                        above), one per live topic
 *   u64 producers, then producers x i16 epoch (pid 1.., -1 = not issued)
 *   optionally u32 m, then m bytes: the auth_change entries (b->meta.auth)
 *                        as an auth_file JSON object (auth_store_parse)
 *
 * valid only if the JSON is an array of valid create_topic records with
 * unique names, producers <= META_PRODUCER_ID_MAX, every epoch -1..INT16_MAX
 * and no byte is left over. meta_open loads it (if it matches the log) and
 * replays only the records past it; meta_snapshot writes one when the whole
 * log is durable with no record waiting, every snapshot_records records and
 * at a clean close. The payload's codec is broker/meta_snap.c.
 *
 * Cluster: a state installed by a `__meta` state transfer follows a state
 * mark (a `verity.state` control batch) in this log and is kept in
 * meta.xfer for the offset after the mark (meta_state_stage/_adopt);
 * meta_open loads whichever of meta.snap and meta.xfer matches the log at
 * the highest offset, and a replay that meets a state mark refuses
 * (meta_log_state_mark) rather than build a wrong state.
 *
 * The log runs in group mode with no delay, so the loop never waits for an
 * fdatasync: meta_append returns at once and the caller's callback runs when
 * the commit thread reports the record durable. Callers answer clients only
 * from that callback, so an answered CreateTopic or InitProducer survives a
 * crash.
 */
#include <dirent.h>
#include <errno.h>
#include <ftw.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <event2/event.h>
#include <jansson.h>

#include "broker/auth.h"
#include "broker/auth_store.h"
#include "broker/blog.h"
#include "broker/broker_int.h"
#include "broker/meta_snap.h"
#include "storage/batch.h"
#include "storage/snap.h"
#include "storage/vio.h"
#include "verity/errors.h"
#include "verity/verify.h"

#define META_RECORD_BYTES_MAX (64u << 10)
#define META_REPLAY_BUF_MAX   (VERITY_BATCH_BYTES_MAX + BATCH_HDR_SIZE)

int meta_producer_epoch(const struct broker *b, int64_t pid)
{
    if (pid < 1 || (uint64_t)pid > b->meta.n_producers)
        return -1;
    return b->meta.epochs[pid - 1];
}

int meta_producer_reserve(struct broker *b, int64_t pid)
{
    struct meta *m = &b->meta;
    if (pid < 1 || pid > (int64_t)META_PRODUCER_ID_MAX)
        return VERITY_EINVAL;
    if ((uint64_t)pid > m->cap_producers) {
        size_t ncap = m->cap_producers ? m->cap_producers : 1024;
        while (ncap < (uint64_t)pid)
            ncap *= 2;
        int16_t *ne = realloc(m->epochs, ncap * sizeof *ne);
        if (!ne)
            return -ENOMEM;
        for (size_t i = m->cap_producers; i < ncap; i++)
            ne[i] = -1;
        m->epochs = ne;
        m->cap_producers = ncap;
    }
    VERITY_VERIFY((uint64_t)pid <= m->cap_producers);
    return 0;
}

int meta_producer_set(struct broker *b, int64_t pid, int16_t epoch)
{
    struct meta *m = &b->meta;
    int rc = meta_producer_reserve(b, pid);
    if (rc)
        return rc;
    /* Epochs of one id only grow: an older one is refused, not applied. */
    if (epoch < 0 || epoch < m->epochs[pid - 1])
        return VERITY_EINVAL;
    m->epochs[pid - 1] = epoch;
    if ((uint64_t)pid > m->n_producers)
        m->n_producers = (size_t)pid;
    return 0;
}

/* ---- records -------------------------------------------------------------- */

/* An auth_change record: into b->meta.auth; live: auth.c rebuilds the
 * store in use and audits it. A change that finds nothing to do (an ACL
 * already there, a key already revoked) is not an error on replay. */
static int auth_record(struct broker *b, json_t *rec, bool live, char *why, size_t cap)
{
    struct auth_change c;
    const char *by = json_string_value(json_object_get(rec, "by"));
    int rc = auth_change_from_json(json_object_get(rec, "change"), true, &c, why, cap);
    if (rc)
        return rc;
    if (!b->meta.auth && !(b->meta.auth = auth_store_new()))
        return -ENOMEM;
    rc = auth_change_apply(b->meta.auth, &c);
    if (rc == VERITY_EEXIST || rc == VERITY_ENOTFOUND)
        rc = 0;
    if (rc == 0 && live)
        auth_meta_changed(b, &c, by ? by : "");
    if (rc && rc != -ENOMEM)
        snprintf(why, cap, "auth_change %s not applied", auth_change_name(c.op));
    return rc;
}

int meta_auth_apply(struct broker *b, const char *json)
{
    json_error_t jerr;
    json_t *rec = json_loads(json, 0, &jerr);
    char why[160] = "not a JSON object";
    int rc = rec && json_is_object(rec) ? auth_record(b, rec, true, why, sizeof why)
                                        : VERITY_EINVAL;
    json_decref(rec);
    if (rc && rc != -ENOMEM) {
        char q[200];
        blog(BLOG_WARN, "meta_record_skipped", "committed=1 reason=%s error=%s",
             blog_q(why, q, sizeof q), verity_errname(rc));
    }
    return rc;
}

/* Applies one replayed record. */
static int apply_record(struct broker *b, json_t *rec, char *why, size_t cap)
{
    const char *type = json_string_value(json_object_get(rec, "type"));
    const char *name = json_string_value(json_object_get(rec, "name"));
    int64_t t = 0;
    if (!type) {
        snprintf(why, cap, "no type");
        return VERITY_EINVAL;
    }
    (void)meta_json_int(rec, "time_ms", INT64_MIN, INT64_MAX, &t);
    if (strcmp(type, "auth_change") == 0)
        return auth_record(b, rec, false, why, cap);
    if (strcmp(type, "create_topic") == 0) {
        struct meta_topic_rec tr;
        int rc = meta_topic_rec_parse(rec, &tr, why, cap);
        if (rc)
            return rc;
        if (topic_find(b, tr.name)) {
            snprintf(why, cap, "topic %.100s exists", tr.name);
            return VERITY_EEXIST;
        }
        return topic_add(b, tr.name, &tr.cfg, t) ? 0 : -ENOMEM;
    }
    if (strcmp(type, "delete_topic") == 0) {
        struct topic *tp = name ? topic_find(b, name) : NULL;
        if (!tp) {
            snprintf(why, cap, "delete of unknown topic");
            return VERITY_ENOTFOUND;
        }
        topic_remove(b, tp);
        return 0;
    }
    if (strcmp(type, "init_producer") == 0) {
        int64_t pid, epoch;
        if (meta_json_int(rec, "producer_id", 1, META_PRODUCER_ID_MAX, &pid) ||
            meta_json_int(rec, "epoch", 0, INT16_MAX, &epoch))
            goto bad;
        return meta_producer_set(b, pid, (int16_t)epoch);
    }
    snprintf(why, cap, "unknown type %s", type);
    return VERITY_EINVAL;
bad:
    snprintf(why, cap, "bad %s fields", type);
    return VERITY_EINVAL;
}

/* A topic deleted while the broker runs: its partitions closed, its
 * directory removed. */
static void topic_drop_live(struct broker *b, struct topic *t)
{
    for (uint32_t i = 0; i < t->cfg.partitions; i++) {
        (void)part_close(t->parts[i], VERITY_ENOTFOUND, false);
        t->parts[i] = NULL;
    }
    int drc = meta_remove_topic_dir(b, t->name);
    blog(drc ? BLOG_WARN : BLOG_INFO, "topic_deleted", "topic=%s dir_error=%s", t->name,
         verity_errname(drc));
    topic_remove(b, t);
}

int meta_apply_live(struct broker *b, const char *json)
{
    json_error_t jerr;
    json_t *rec = json_loads(json, 0, &jerr);
    char why[160] = "not a JSON object";
    int rc = VERITY_EINVAL;
    const char *type = rec && json_is_object(rec) ? json_string_value(json_object_get(rec, "type"))
                                                  : NULL;
    const char *name = rec ? json_string_value(json_object_get(rec, "name")) : NULL;
    if (type && strcmp(type, "delete_topic") == 0) {
        struct topic *t = name ? topic_find(b, name) : NULL;
        if (t)
            topic_drop_live(b, t);
        rc = 0;
    } else if (type && strcmp(type, "auth_change") == 0) {
        rc = auth_record(b, rec, true, why, sizeof why);
    } else if (type && strcmp(type, "init_producer") == 0) {
        /* the committed log decides: an epoch this broker set for a
         * proposal that never committed gives way */
        int64_t pid, epoch;
        if (meta_json_int(rec, "producer_id", 1, META_PRODUCER_ID_MAX, &pid) == 0 &&
            meta_json_int(rec, "epoch", 0, INT16_MAX, &epoch) == 0 &&
            (rc = meta_producer_reserve(b, pid)) == 0) {
            b->meta.epochs[pid - 1] = (int16_t)epoch;
            if ((uint64_t)pid > b->meta.n_producers)
                b->meta.n_producers = (size_t)pid;
        }
    } else if (type) {
        rc = apply_record(b, rec, why, sizeof why);
        struct topic *t = rc == 0 && strcmp(type, "create_topic") == 0 ? topic_find(b, name) : NULL;
        if (t && (rc = topic_open_partitions(b, t)) == 0)
            blog(BLOG_INFO, "topic_created", "topic=%s partitions=%" PRIu32 " replicas=%" PRIu32,
                 t->name, t->cfg.partitions, t->cfg.replicas);
    }
    json_decref(rec);
    if (rc && rc != -ENOMEM) {
        char q[200];
        blog(BLOG_WARN, "meta_record_skipped", "committed=1 reason=%s error=%s",
             blog_q(why, q, sizeof q), verity_errname(rc));
    }
    return rc;
}

/* Applies every data record of the len-byte batch at buf. */
static int replay_batch(struct broker *b, const uint8_t *buf, size_t len)
{
    struct batch_hdr h;
    int rc = batch_hdr_decode(buf, len, &h);
    if (rc)
        return rc;
    struct batch_iter it;
    struct batch_record r;
    batch_iter_init(&it, buf, h.length);
    if (h.attributes & BATCH_ATTR_CONTROL) {
        /* A state installed by a transfer follows a state mark: the
         * records before it do not build the state after it, and the
         * replay starts past it from the snapshot written with it. */
        if (batch_iter_next(&it, &r) == 1 && r.key_len == (int32_t)strlen(BATCH_CONTROL_STATE) &&
            memcmp(r.key, BATCH_CONTROL_STATE, strlen(BATCH_CONTROL_STATE)) == 0) {
            blog(BLOG_ERROR, "meta_log_state_mark",
                 "offset=%" PRIu64 " (a state installed from a peer starts here and its snapshot "
                 "is missing or does not match: the log alone cannot rebuild the metadata)",
                 h.base_offset);
            return VERITY_ECORRUPT;
        }
        return 0;
    }
    while ((rc = batch_iter_next(&it, &r)) == 1) {
        if (r.value_len <= 0)
            continue;
        json_error_t jerr;
        json_t *rec = json_loadb((const char *)r.value, (size_t)r.value_len, 0, &jerr);
        char why[160] = "not a JSON object";
        int arc =
            rec && json_is_object(rec) ? apply_record(b, rec, why, sizeof why) : VERITY_EINVAL;
        json_decref(rec);
        if (arc == -ENOMEM)
            return arc;
        if (arc) {
            char q[200];
            blog(BLOG_WARN, "meta_record_skipped", "offset=%" PRIu64 " reason=%s",
                 h.base_offset + r.offset_delta, blog_q(why, q, sizeof q));
        }
    }
    return rc < 0 ? rc : 0;
}

static int replay(struct broker *b, uint64_t from)
{
    struct vlog_info info;
    vlog_get_info(b->meta.log, &info);
    size_t cap = 1u << 20;
    uint8_t *buf = malloc(cap);
    uint64_t off = from > info.start_offset ? from : info.start_offset;
    int rc = 0;
    if (!buf)
        return -ENOMEM;
    while (off < info.end_offset) {
        size_t len = 0;
        rc = vlog_read_copy(b->meta.log, off, info.end_offset, buf, cap, &len);
        if (rc == VERITY_ELIMIT && cap < META_REPLAY_BUF_MAX) {
            uint8_t *nb = realloc(buf, META_REPLAY_BUF_MAX);
            if (!nb) {
                rc = -ENOMEM;
                break;
            }
            buf = nb;
            cap = META_REPLAY_BUF_MAX;
            continue;
        }
        if (rc || len == 0)
            break;
        for (size_t p = 0; p < len;) {
            struct batch_hdr h;
            if ((rc = batch_hdr_decode(buf + p, len - p, &h)) || h.length > len - p)
                goto out;
            if ((rc = replay_batch(b, buf + p, h.length)))
                goto out;
            off = h.base_offset + h.record_count;
            p += h.length;
        }
    }
out:
    free(buf);
    return rc;
}

/* ---- snapshot ------------------------------------------------------------------ */

#define META_SNAP "meta.snap"
/* The state installed by the last __meta state transfer, for the offset
 * after its state mark; ".new" until the applied position names it. */
#define META_XFER     "meta.xfer"
#define META_XFER_NEW "meta.xfer.new"

/* The broker's metadata state as an image (borrowing nothing: the caller
 * frees it with meta_image_free). */
static int image_of(struct broker *b, struct meta_image *im)
{
    struct topic *t;
    memset(im, 0, sizeof *im);
    if (b->n_topics && !(im->topics = calloc(b->n_topics, sizeof *im->topics)))
        return -ENOMEM;
    TAILQ_FOREACH(t, &b->topics, link)
    {
        if (t->deleting || im->n_topics == b->n_topics)
            continue;
        struct meta_topic_rec *r = &im->topics[im->n_topics++];
        snprintf(r->name, sizeof r->name, "%s", t->name);
        r->cfg = t->cfg;
        r->created_ms = t->created_ms;
    }
    im->epochs = b->meta.epochs; /* borrowed: see snap_encode */
    im->n_producers = b->meta.n_producers;
    im->auth = b->meta.auth;
    return 0;
}

static int snap_encode(struct broker *b, uint8_t **out, size_t *len)
{
    struct meta_image im;
    int rc = image_of(b, &im);
    if (rc == 0)
        rc = meta_image_encode(&im, out, len);
    free(im.topics); /* epochs and auth are the broker's */
    return rc;
}

int meta_state_encode(struct broker *b, uint8_t **out, size_t *len)
{
    if (!b->meta.loaded)
        return -EAGAIN;
    return snap_encode(b, out, len);
}

/* Loads a decoded image into the empty broker state (at open: no partition
 * is open yet); takes im's epochs and auth. */
static int image_load(struct broker *b, struct meta_image *im)
{
    for (size_t i = 0; i < im->n_topics; i++) {
        const struct meta_topic_rec *r = &im->topics[i];
        if (!topic_add(b, r->name, &r->cfg, r->created_ms))
            return -ENOMEM;
    }
    free(b->meta.epochs);
    b->meta.epochs = im->epochs;
    b->meta.n_producers = b->meta.cap_producers = (size_t)im->n_producers;
    im->epochs = NULL;
    im->n_producers = 0;
    auth_store_free(b->meta.auth);
    b->meta.auth = im->auth;
    im->auth = NULL;
    return 0;
}

/* Applies a snapshot payload to the empty broker state. */
static int snap_apply(struct broker *b, const uint8_t *buf, size_t len)
{
    struct meta_image im;
    int rc = meta_image_decode(buf, len, &im);
    if (rc == 0)
        rc = image_load(b, &im);
    meta_image_free(&im);
    return rc;
}

/* Drops whatever a failed snapshot load added (no partition is open yet). */
static void snap_unload(struct broker *b)
{
    struct topic *t;
    while ((t = TAILQ_FIRST(&b->topics)))
        topic_remove(b, t);
    free(b->meta.epochs);
    b->meta.epochs = NULL;
    b->meta.n_producers = b->meta.cap_producers = 0;
    auth_store_free(b->meta.auth);
    b->meta.auth = NULL;
}

/* meta.xfer.new becomes meta.xfer (rename, directory synced). */
static int xfer_file_adopt(struct broker *b, const char *dir)
{
    const struct vio *io = b->cfg.io ? b->cfg.io : &vio_posix;
    char from[BCFG_PATH_MAX + 64], to[BCFG_PATH_MAX + 64];
    snprintf(from, sizeof from, "%s/%s", dir, META_XFER_NEW);
    snprintf(to, sizeof to, "%s/%s", dir, META_XFER);
    int rc = io->rename(io->ctx, from, to);
    return rc ? rc : vio_fsync_dir(io, dir);
}

/* Loads the newest snapshot that is valid and matches the log (meta.snap,
 * or the state of the last transfer: meta.xfer, or meta.xfer.new when the
 * applied position names it); returns the offset the replay starts from (0
 * without one). */
static uint64_t load_snapshot(struct broker *b, const char *dir)
{
    static const char *const names[] = {META_SNAP, META_XFER, META_XFER_NEW};
    struct snap_hdr best = {0};
    uint8_t *bbuf = NULL;
    const char *why = NULL, *bname = NULL;
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        struct snap_hdr h;
        uint8_t *buf = NULL;
        int rc = snap_read(b->cfg.io, dir, names[i], SNAP_META, &h, &buf);
        if (rc == -ENOENT)
            continue;
        if (rc)
            why = verity_errname(rc);
        else if (!snap_matches(b->meta.log, &h))
            why = "does not match the log";
        else if (!bname || h.offset > best.offset) {
            free(bbuf);
            bbuf = buf;
            buf = NULL;
            best = h;
            bname = names[i];
        }
        free(buf);
        if (why && strcmp(names[i], META_XFER_NEW) == 0)
            snap_remove(b->cfg.io, dir, META_XFER_NEW); /* staged, never recorded */
        else if (why) {
            b->met.snapshots_ignored++;
            blog(BLOG_WARN, "meta_snapshot_ignored", "file=%s reason=\"%s\"", names[i], why);
        }
        why = NULL;
    }
    int rc = bname ? snap_apply(b, bbuf, best.length) : 0;
    free(bbuf);
    if (!bname)
        return 0;
    if (rc) {
        snap_unload(b);
        b->met.snapshots_ignored++;
        blog(BLOG_WARN, "meta_snapshot_ignored", "file=%s reason=\"%s\" (replaying the whole log)",
             bname, verity_errname(rc));
        return 0;
    }
    if (strcmp(bname, META_XFER_NEW) == 0) {
        /* the transfer's install recorded its op before it could rename */
        int rrc = xfer_file_adopt(b, dir);
        blog(BLOG_INFO, "meta_state_adopted", "offset=%" PRIu64 " rename_error=%s", best.offset,
             verity_errname(rrc));
    }
    b->meta.snap_offset = best.offset;
    return best.offset;
}
int meta_snapshot(struct broker *b, bool force)
{
    struct meta *m = &b->meta;
    struct vlog_info info;
    struct snap_hdr h = {.kind = SNAP_META};
    uint8_t *buf = NULL;
    size_t len = 0;
    char dir[BCFG_PATH_MAX + 32];
    int rc;
    if (!m->log || !m->loaded || !TAILQ_EMPTY(&m->ops))
        return 0;
    vlog_get_info(m->log, &info);
    if (info.end_offset == m->snap_offset || info.error || info.durable_end != info.end_offset)
        return 0;
    if (!force && (b->cfg.snapshot_records == 0 ||
                   info.end_offset - m->snap_offset < b->cfg.snapshot_records))
        return 0;
    snprintf(dir, sizeof dir, "%s/__meta", b->cfg.data_dir);
    h.offset = info.end_offset;
    if ((rc = snap_chain_at(m->log, h.offset, h.chain)) || (rc = snap_encode(b, &buf, &len)))
        goto out;
    h.length = len;
    rc = snap_write(b->cfg.io, dir, META_SNAP, &h, buf, len);
out:
    free(buf);
    if (rc) {
        b->met.snapshot_failures++;
        blog(BLOG_WARN, "meta_snapshot_failed", "error=%s", verity_errname(rc));
        return rc;
    }
    b->met.snapshots_written++;
    m->snap_offset = h.offset;
    return 0;
}

/* ---- state transfer (cluster: broker/cluster.c "__meta state transfer") ---- */

int meta_state_stage(struct broker *b, const uint8_t *buf, size_t len, uint64_t op,
                     uint64_t *end)
{
    struct meta *m = &b->meta;
    struct vlog_info info;
    struct snap_hdr h = {.kind = SNAP_META};
    char dir[BCFG_PATH_MAX + 32], note[160];
    int rc;
    if (!m->log || !m->loaded)
        return VERITY_EINVAL;
    /* Crash-safe order: the mark and meta.xfer.new for the offset after it
     * are durable before the caller records the applied op (its ring entry
     * names that offset, synced before meta_state_adopt). A crash before
     * that entry cuts the log back to the last applied op's end, mark
     * included: meta.xfer.new no longer matches and the old state loads
     * (meta.snap or the previous meta.xfer, which still match) at the old
     * op. A crash after it loads meta.xfer.new. */
    int n = snprintf(note, sizeof note, "{\"group\":\"__meta\",\"op\":%" PRIu64 ",\"bytes\":%zu}",
                     op, len);
    if ((rc = vlog_mark_state(m->log, note, (size_t)n, now_ms())) || (rc = vlog_sync(m->log)))
        goto fail;
    vlog_get_info(m->log, &info);
    h.offset = info.end_offset;
    h.length = len;
    if ((rc = snap_chain_at(m->log, h.offset, h.chain)))
        goto fail;
    snprintf(dir, sizeof dir, "%s/__meta", b->cfg.data_dir);
    if ((rc = snap_write(b->cfg.io, dir, META_XFER_NEW, &h, buf, len)))
        goto fail;
    *end = h.offset;
    return 0;
fail:
    blog(BLOG_ERROR, "meta_state_install_failed", "op=%" PRIu64 " error=%s", op,
         verity_errname(rc));
    return rc;
}

/* 1 when the batch at off..end of log is a state mark. */
static bool is_state_mark(struct vlog *log, uint64_t off, uint64_t end)
{
    uint8_t buf[1024];
    size_t len = 0;
    struct batch_hdr h;
    struct batch_iter it;
    struct batch_record r;
    if (vlog_read_copy(log, off, end, buf, sizeof buf, &len) || len == 0 ||
        batch_hdr_decode(buf, len, &h) || h.length > len || h.base_offset != off ||
        h.base_offset + h.record_count != end || !(h.attributes & BATCH_ATTR_CONTROL))
        return false;
    batch_iter_init(&it, buf, h.length);
    return batch_iter_next(&it, &r) == 1 && r.key_len == (int32_t)strlen(BATCH_CONTROL_STATE) &&
           memcmp(r.key, BATCH_CONTROL_STATE, strlen(BATCH_CONTROL_STATE)) == 0;
}

int meta_state_unstage(struct broker *b)
{
    struct meta *m = &b->meta;
    struct snap_hdr h;
    uint8_t *buf = NULL;
    char dir[BCFG_PATH_MAX + 32];
    snprintf(dir, sizeof dir, "%s/__meta", b->cfg.data_dir);
    int rc = snap_read(b->cfg.io, dir, META_XFER_NEW, SNAP_META, &h, &buf);
    free(buf);
    if (rc == -ENOENT || !m->log)
        return 0;
    struct vlog_info info;
    vlog_get_info(m->log, &info);
    rc = 0;
    if (h.offset == info.end_offset && info.end_offset > info.start_offset &&
        is_state_mark(m->log, info.end_offset - 1, info.end_offset)) {
        rc = vlog_truncate_tail(m->log, info.end_offset - 1, info.end_offset - 1);
        blog(rc ? BLOG_ERROR : BLOG_WARN, "meta_state_unstaged",
             "offset=%" PRIu64 " error=%s (a transfer's install that recorded no op)",
             info.end_offset - 1, verity_errname(rc));
    }
    snap_remove(b->cfg.io, dir, META_XFER_NEW);
    return rc;
}

static bool same_topic(const struct topic *t, const struct meta_topic_rec *r)
{
    const struct topic_cfg *a = &t->cfg, *c = &r->cfg;
    return t->created_ms == r->created_ms && a->partitions == c->partitions &&
           a->durability == c->durability && a->retention_ms == c->retention_ms &&
           a->retention_bytes == c->retention_bytes && a->segment_bytes == c->segment_bytes &&
           a->max_message_bytes == c->max_message_bytes &&
           (a->replicas ? a->replicas : 1) == (c->replicas ? c->replicas : 1);
}

int meta_state_adopt(struct broker *b, struct meta_image *im, uint64_t end)
{
    struct meta *m = &b->meta;
    char dir[BCFG_PATH_MAX + 32];
    snprintf(dir, sizeof dir, "%s/__meta", b->cfg.data_dir);
    int rc = xfer_file_adopt(b, dir);
    if (rc) /* meta.xfer.new stays: the next start adopts it (load_snapshot) */
        blog(BLOG_WARN, "meta_state_rename_failed", "error=%s", verity_errname(rc));
    m->snap_offset = end;
    /* topics: those the state no longer has (or has as another topic of
     * the same name) go, as a committed delete would take them; the new
     * ones are created and opened */
    size_t dropped = 0, added = 0;
    struct topic *t, *tn;
    for (t = TAILQ_FIRST(&b->topics); t; t = tn) {
        tn = TAILQ_NEXT(t, link);
        bool keep = false;
        for (size_t i = 0; i < im->n_topics && !keep; i++)
            keep = strcmp(im->topics[i].name, t->name) == 0 && same_topic(t, &im->topics[i]);
        if (!keep) {
            topic_drop_live(b, t);
            dropped++;
        }
    }
    /* producers: the state's ids and epochs, its high-water mark included */
    free(m->epochs);
    m->epochs = im->epochs;
    m->n_producers = m->cap_producers = (size_t)im->n_producers;
    im->epochs = NULL;
    im->n_producers = 0;
    /* auth_change effects: the store in use is rebuilt from the new one */
    auth_store_free(m->auth);
    m->auth = im->auth;
    im->auth = NULL;
    auth_meta_replaced(b);
    rc = 0;
    for (size_t i = 0; i < im->n_topics; i++) {
        const struct meta_topic_rec *r = &im->topics[i];
        if (topic_find(b, r->name))
            continue;
        struct topic *nt = topic_add(b, r->name, &r->cfg, r->created_ms);
        int orc = nt ? topic_open_partitions(b, nt) : -ENOMEM;
        if (orc) {
            blog(BLOG_ERROR, "topic_open_failed", "topic=%s error=%s", r->name,
                 verity_errname(orc));
            rc = rc ? rc : orc;
            continue;
        }
        added++;
        blog(BLOG_INFO, "topic_created", "topic=%s partitions=%" PRIu32 " replicas=%" PRIu32,
             nt->name, nt->cfg.partitions, nt->cfg.replicas);
    }
    blog(BLOG_INFO, "meta_state_installed",
         "offset=%" PRIu64 " topics=%zu added=%zu dropped=%zu producers=%zu", end, b->n_topics,
         added, dropped, m->n_producers);
    return rc;
}

/* ---- durability ------------------------------------------------------------ */

static void meta_on_durable(void *arg, uint64_t durable_end)
{
    struct broker *b = arg;
    (void)durable_end;
    event_active(b->meta.durable_ev, EV_READ, 0);
}

static void meta_durable_cb(evutil_socket_t fd, short what, void *arg)
{
    struct broker *b = arg;
    (void)fd;
    (void)what;
    if (!b->meta.log)
        return;
    uint64_t durable = vlog_durable_end(b->meta.log);
    int err = vlog_error(b->meta.log);
    struct meta_op *op;
    while ((op = TAILQ_FIRST(&b->meta.ops)) && (op->end <= durable || err)) {
        TAILQ_REMOVE(&b->meta.ops, op, link);
        int rc = op->end <= durable ? 0 : VERITY_EREADONLY;
        op->done(b, op->arg, rc);
        free(op);
    }
    if (err)
        blog(BLOG_ERROR, "meta_log_failed", "error=%s", verity_errname(err));
}

int meta_append(struct broker *b, const char *json, meta_done_fn done, void *arg)
{
    /* in a cluster the record is an op of the __meta replica group: it
     * reaches this log when committed (meta_append_local, broker/cluster.c) */
    if (cluster_on(b))
        return cluster_meta_submit(b, json, done, arg);
    return meta_append_local(b, json, done, arg);
}

int meta_append_local(struct broker *b, const char *json, meta_done_fn done, void *arg)
{
    struct batch_builder bb;
    size_t len = strlen(json);
    int rc;
    if (!b->meta.log)
        return VERITY_EREADONLY;
    if (len > META_RECORD_BYTES_MAX)
        return VERITY_ELIMIT;
    struct meta_op *op = calloc(1, sizeof *op);
    if (!op)
        return -ENOMEM;
    if ((rc = batch_builder_init(&bb, len + 256))) {
        free(op);
        return rc;
    }
    int64_t now = now_ms();
    struct batch_meta bm = {0, -1, -1, -1, NULL};
    struct vlog_append_info ai;
    if ((rc = batch_builder_add(&bb, now, NULL, -1, json, (int32_t)len, NULL, 0)) ||
        (rc = batch_builder_finish(&bb, &bm)) ||
        (rc = vlog_append(b->meta.log, bb.buf, bb.len, now, &ai))) {
        batch_builder_deinit(&bb);
        free(op);
        blog(BLOG_ERROR, "meta_append_failed", "error=%s", verity_errname(rc));
        return rc;
    }
    batch_builder_deinit(&bb);
    op->end = ai.last_offset + 1;
    op->done = done;
    op->arg = arg;
    TAILQ_INSERT_TAIL(&b->meta.ops, op, link);
    return 0;
}

void meta_sync_stats(struct broker *b, struct vlog_sync_stats *out)
{
    memset(out, 0, sizeof *out);
    struct vlog_sync_stats s;
    if (b->meta.log) {
        vlog_get_sync_stats(b->meta.log, &s);
        *out = s;
    }
    if (b->groups.log) {
        vlog_get_sync_stats(b->groups.log, &s);
        out->count += s.count;
        out->sum_ns += s.sum_ns;
        for (int k = 0; k < VLOG_SYNC_BUCKETS; k++)
            out->buckets[k] += s.buckets[k];
    }
    struct topic *t;
    TAILQ_FOREACH(t, &b->topics, link)
    {
        for (uint32_t i = 0; i < t->cfg.partitions; i++) {
            struct partition *p = t->parts[i];
            if (!p || !p->log)
                continue;
            vlog_get_sync_stats(p->log, &s);
            out->count += s.count;
            out->sum_ns += s.sum_ns;
            for (int k = 0; k < VLOG_SYNC_BUCKETS; k++)
                out->buckets[k] += s.buckets[k];
        }
    }
}

/* ---- open / close ---------------------------------------------------------- */

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)ftw;
    int rc = flag == FTW_DP ? rmdir(path) : unlink(path);
    return rc ? -errno : 0;
}

static int rm_rf(const char *path)
{
    int rc = nftw(path, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    return rc < 0 ? -errno : rc;
}

/* Removes directories under <data>/topics that belong to no topic: topics
 * deleted before a crash finished removing them. */
static void sweep_topic_dirs(struct broker *b)
{
    char path[BCFG_PATH_MAX + 32];
    snprintf(path, sizeof path, "%s/topics", b->cfg.data_dir);
    DIR *d = opendir(path);
    if (!d)
        return;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        if (codec_topic_name_ok(e->d_name, true) && topic_find(b, e->d_name))
            continue;
        char victim[BCFG_PATH_MAX + 300];
        snprintf(victim, sizeof victim, "%s/%s", path, e->d_name);
        int rc = rm_rf(victim);
        char q[300];
        blog(rc ? BLOG_WARN : BLOG_INFO, "topic_dir_removed", "dir=%s error=%s",
             blog_q(victim, q, sizeof q), verity_errname(rc));
    }
    closedir(d);
}

int meta_remove_topic_dir(struct broker *b, const char *name)
{
    char from[BCFG_PATH_MAX + 300], to[BCFG_PATH_MAX + 400], parent[BCFG_PATH_MAX + 32];
    snprintf(parent, sizeof parent, "%s/topics", b->cfg.data_dir);
    snprintf(from, sizeof from, "%s/%s", parent, name);
    snprintf(to, sizeof to, "%s/.deleted-%s-%" PRId64, parent, name, now_ms());
    if (rename(from, to)) {
        if (errno == ENOENT)
            return 0;
        return -errno;
    }
    int rc = vio_fsync_dir(&vio_posix, parent);
    int rrc = rm_rf(to);
    return rc ? rc : rrc;
}

int meta_open(struct broker *b)
{
    struct meta *m = &b->meta;
    char dir[BCFG_PATH_MAX + 32];
    int rc;
    TAILQ_INIT(&m->ops);
    snprintf(dir, sizeof dir, "%s/__meta", b->cfg.data_dir);
    m->durable_ev = event_new(b->base, -1, 0, meta_durable_cb, b);
    if (!m->durable_ev)
        return -ENOMEM;
    struct vlog_config vc;
    vlog_config_default(&vc);
    vc.durability = VLOG_DURABILITY_GROUP;
    vc.group_delay_us = 0;
    vc.segment_bytes = 64u << 20;
    vc.prealloc_bytes = b->cfg.log_prealloc_bytes;
    vc.checkpoint_records = cluster_on(b) ? 0 : 1000; /* cluster: cut back to the applied end */
    vc.signing_key = b->signing_key;
    vc.io = b->cfg.io;
    vc.on_durable = meta_on_durable;
    vc.on_durable_arg = b;
    uint64_t bad = 0;
    if ((rc = vlog_open(dir, &vc, now_ms(), &m->log, &bad))) {
        blog(BLOG_ERROR, "meta_open_failed", "dir=%s error=%s bad_offset=%" PRIu64, dir,
             verity_errname(rc), bad);
        m->log = NULL;
        return rc;
    }
    const struct vlog_recovery *rec = vlog_last_recovery(m->log);
    if (rec && rec->cut)
        blog(BLOG_WARN, "meta_recovered", "cut_first=%" PRIu64 " cut_bytes=%" PRIu64,
             rec->cut_offset_first, rec->cut_bytes);
    if ((rc = cluster_meta_recover(b)))
        return rc;
    if ((rc = replay(b, load_snapshot(b, dir)))) {
        blog(BLOG_ERROR, "meta_replay_failed", "error=%s", verity_errname(rc));
        return rc;
    }
    m->loaded = true;
    if ((rc = cluster_meta_start(b)))
        return rc;
    sweep_topic_dirs(b);
    struct topic *t;
    TAILQ_FOREACH(t, &b->topics, link)
    {
        if ((rc = topic_open_partitions(b, t)))
            return rc;
    }
    blog(BLOG_INFO, "meta_loaded", "topics=%zu producers=%zu", b->n_topics, m->n_producers);
    return 0;
}

int meta_close(struct broker *b, bool clean)
{
    struct meta *m = &b->meta;
    int rc = 0;
    if (m->log) {
        if (clean && !cluster_on(b)) {
            rc = vlog_close(m->log, now_ms());
        } else {
            /* cluster: the log holds applied records only (no closing
             * checkpoint, which the next start would cut back) */
            if (clean)
                rc = vlog_sync(m->log);
            vlog_abandon(m->log);
        }
        m->log = NULL;
    }
    /* Ops still waiting can no longer become durable through this log. */
    struct meta_op *op;
    while ((op = TAILQ_FIRST(&m->ops))) {
        TAILQ_REMOVE(&m->ops, op, link);
        op->done(b, op->arg, VERITY_ECLOSED);
        free(op);
    }
    if (m->durable_ev)
        event_free(m->durable_ev);
    m->durable_ev = NULL;
    free(m->epochs);
    m->epochs = NULL;
    auth_store_free(m->auth);
    m->auth = NULL;
    return rc;
}
