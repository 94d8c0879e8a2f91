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
 * at a clean close.
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
#include "storage/batch.h"
#include "storage/snap.h"
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

static int get_int(json_t *o, const char *k, int64_t lo, int64_t hi, int64_t *out)
{
    json_t *v = json_object_get(o, k);
    if (!json_is_integer(v))
        return VERITY_EINVAL;
    int64_t x = json_integer_value(v);
    if (x < lo || x > hi)
        return VERITY_EINVAL;
    *out = x;
    return 0;
}

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
    int64_t x, t = 0;
    if (!type) {
        snprintf(why, cap, "no type");
        return VERITY_EINVAL;
    }
    (void)get_int(rec, "time_ms", INT64_MIN, INT64_MAX, &t);
    if (strcmp(type, "auth_change") == 0)
        return auth_record(b, rec, false, why, cap);
    if (strcmp(type, "create_topic") == 0) {
        struct topic_cfg tc;
        const char *dur = json_string_value(json_object_get(rec, "durability"));
        if (!name || !codec_topic_name_ok(name, true) || !dur || bcfg_durability_parse(dur) < 0) {
            snprintf(why, cap, "bad create_topic");
            return VERITY_EINVAL;
        }
        tc.durability = (enum topic_durability)bcfg_durability_parse(dur);
        if (get_int(rec, "partitions", 1, VERITY_PARTITIONS_MAX, &x))
            goto bad;
        tc.partitions = (uint32_t)x;
        if (get_int(rec, "retention_ms", -1, INT64_MAX, &tc.retention_ms) ||
            get_int(rec, "retention_bytes", -1, INT64_MAX, &tc.retention_bytes))
            goto bad;
        if (get_int(rec, "segment_bytes", 4096, 1ll << 31, &x))
            goto bad;
        tc.segment_bytes = (uint64_t)x;
        if (get_int(rec, "max_message_bytes", BATCH_HDR_SIZE + 8, VERITY_BATCH_BYTES_MAX, &x))
            goto bad;
        tc.max_message_bytes = (uint32_t)x;
        tc.replicas = 1;
        if (json_object_get(rec, "replicas")) {
            if (get_int(rec, "replicas", 1, 5, &x) || (x != 1 && x != 3 && x != 5))
                goto bad;
            tc.replicas = (uint32_t)x;
        }
        if (topic_find(b, name)) {
            snprintf(why, cap, "topic %s exists", name);
            return VERITY_EEXIST;
        }
        return topic_add(b, name, &tc, t) ? 0 : -ENOMEM;
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
        if (get_int(rec, "producer_id", 1, META_PRODUCER_ID_MAX, &pid) ||
            get_int(rec, "epoch", 0, INT16_MAX, &epoch))
            goto bad;
        return meta_producer_set(b, pid, (int16_t)epoch);
    }
    snprintf(why, cap, "unknown type %s", type);
    return VERITY_EINVAL;
bad:
    snprintf(why, cap, "bad %s fields", type);
    return VERITY_EINVAL;
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
        if (t) {
            for (uint32_t i = 0; i < t->cfg.partitions; i++) {
                (void)part_close(t->parts[i], VERITY_ENOTFOUND, false);
                t->parts[i] = NULL;
            }
            int drc = meta_remove_topic_dir(b, t->name);
            blog(drc ? BLOG_WARN : BLOG_INFO, "topic_deleted", "topic=%s dir_error=%s", t->name,
                 verity_errname(drc));
            topic_remove(b, t);
        }
        rc = 0;
    } else if (type && strcmp(type, "auth_change") == 0) {
        rc = auth_record(b, rec, true, why, sizeof why);
    } else if (type && strcmp(type, "init_producer") == 0) {
        /* the committed log decides: an epoch this broker set for a
         * proposal that never committed gives way */
        int64_t pid, epoch;
        if (get_int(rec, "producer_id", 1, META_PRODUCER_ID_MAX, &pid) == 0 &&
            get_int(rec, "epoch", 0, INT16_MAX, &epoch) == 0 &&
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
    if (h.attributes & BATCH_ATTR_CONTROL)
        return 0;
    struct batch_iter it;
    struct batch_record r;
    batch_iter_init(&it, buf, h.length);
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

static int snap_encode(struct broker *b, uint8_t **out, size_t *len)
{
    json_t *arr = json_array();
    struct topic *t;
    char *text = NULL;
    if (!arr)
        return -ENOMEM;
    TAILQ_FOREACH(t, &b->topics, link)
    {
        if (t->deleting)
            continue;
        const struct topic_cfg *tc = &t->cfg;
        json_t *rec = json_pack(
            "{s:s, s:s, s:I, s:s, s:I, s:I, s:I, s:I, s:I, s:I}", "type", "create_topic", "name",
            t->name, "partitions", (json_int_t)tc->partitions, "durability",
            bcfg_durability_name(tc->durability), "retention_ms", (json_int_t)tc->retention_ms,
            "retention_bytes", (json_int_t)tc->retention_bytes, "segment_bytes",
            (json_int_t)tc->segment_bytes, "max_message_bytes", (json_int_t)tc->max_message_bytes,
            "time_ms", (json_int_t)t->created_ms, "replicas", (json_int_t)(tc->replicas ? tc->replicas : 1));
        if (!rec || json_array_append_new(arr, rec)) {
            json_decref(arr);
            return -ENOMEM;
        }
    }
    text = json_dumps(arr, JSON_COMPACT);
    json_decref(arr);
    if (!text)
        return -ENOMEM;
    size_t jlen = strlen(text), np = b->meta.n_producers;
    char *atext = NULL;
    const struct auth_store *as = b->meta.auth;
    if (as && (as->n_keys || as->n_certs || as->n_acls || as->n_quotas || as->n_roles) &&
        !(atext = auth_store_dump(as))) {
        free(text);
        return -ENOMEM;
    }
    size_t alen = atext ? strlen(atext) : 0;
    size_t n = 4 + jlen + 8 + 2 * np + (atext ? 4 + alen : 0);
    uint8_t *buf = malloc(n);
    if (!buf) {
        free(text);
        free(atext);
        return -ENOMEM;
    }
    put_le32(buf, (uint32_t)jlen);
    memcpy(buf + 4, text, jlen);
    free(text);
    put_le64(buf + 4 + jlen, np);
    for (size_t i = 0; i < np; i++)
        put_le16(buf + 12 + jlen + 2 * i, (uint16_t)b->meta.epochs[i]);
    if (atext) {
        put_le32(buf + 12 + jlen + 2 * np, (uint32_t)alen);
        memcpy(buf + 16 + jlen + 2 * np, atext, alen);
        free(atext);
    }
    *out = buf;
    *len = n;
    return 0;
}

/* Applies a snapshot payload to the empty broker state. */
static int snap_apply(struct broker *b, const uint8_t *buf, size_t len)
{
    if (len < 12)
        return VERITY_ECORRUPT;
    uint32_t jlen = get_le32(buf);
    if ((uint64_t)jlen + 12 > len)
        return VERITY_ECORRUPT;
    uint64_t np = get_le64(buf + 4 + jlen);
    if (np > META_PRODUCER_ID_MAX || 2 * np > len - 12 - jlen)
        return VERITY_ECORRUPT;
    size_t rest = len - 12 - jlen - 2 * np; /* the auth section, or nothing */
    if (rest) {
        const uint8_t *p = buf + 12 + jlen + 2 * np;
        char why[200];
        struct auth_store *as = NULL;
        if (rest < 4 || get_le32(p) != rest - 4 ||
            auth_store_parse((const char *)p + 4, rest - 4, &as, why, sizeof why) != 0)
            return VERITY_ECORRUPT;
        auth_store_free(b->meta.auth);
        b->meta.auth = as;
    }
    json_error_t jerr;
    json_t *arr = json_loadb((const char *)buf + 4, jlen, 0, &jerr);
    if (!arr || !json_is_array(arr)) {
        json_decref(arr);
        return VERITY_ECORRUPT;
    }
    int rc = 0;
    size_t i;
    json_t *rec;
    json_array_foreach(arr, i, rec)
    {
        const char *type = json_string_value(json_object_get(rec, "type"));
        char why[160];
        if (!json_is_object(rec) || !type || strcmp(type, "create_topic") != 0) {
            rc = VERITY_ECORRUPT;
            break;
        }
        if ((rc = apply_record(b, rec, why, sizeof why))) {
            if (rc != -ENOMEM)
                rc = VERITY_ECORRUPT;
            break;
        }
    }
    json_decref(arr);
    for (uint64_t pid = 1; rc == 0 && pid <= np; pid++) {
        int16_t e = (int16_t)get_le16(buf + 12 + jlen + 2 * (pid - 1));
        if (e < -1)
            rc = VERITY_ECORRUPT;
        else if (e >= 0)
            rc = meta_producer_set(b, (int64_t)pid, e);
        else if ((rc = meta_producer_reserve(b, (int64_t)pid)) == 0 && pid > b->meta.n_producers)
            b->meta.n_producers = pid;
    }
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

/* Loads <dir>/meta.snap if valid and matching the log; returns the offset
 * the replay starts from (0 without one). */
static uint64_t load_snapshot(struct broker *b, const char *dir)
{
    struct snap_hdr h;
    uint8_t *buf = NULL;
    const char *why = NULL;
    int rc = snap_read(b->cfg.io, dir, META_SNAP, SNAP_META, &h, &buf);
    if (rc == -ENOENT)
        return 0;
    if (rc)
        why = verity_errname(rc);
    else if (!snap_matches(b->meta.log, &h))
        why = "does not match the log";
    else if ((rc = snap_apply(b, buf, h.length))) {
        why = verity_errname(rc);
        snap_unload(b);
    }
    free(buf);
    if (why) {
        b->met.snapshots_ignored++;
        blog(BLOG_WARN, "meta_snapshot_ignored", "reason=\"%s\" (replaying the whole log)", why);
        return 0;
    }
    b->meta.snap_offset = h.offset;
    return h.offset;
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
