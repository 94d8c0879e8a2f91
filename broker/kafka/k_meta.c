/*
 * Kafka admin family: ApiVersions (KIP-511), Metadata, CreateTopics,
 * DeleteTopics, DescribeConfigs, InitProducerId. Topics and producer ids
 * are the broker's own (metadata log): a topic created here is a Verity
 * topic, a producer id allocated here is a Verity producer id, so Kafka
 * and native clients share both.
 *
 * Field layouts follow the Apache Kafka protocol guide for the versions in
 * the dispatch table (kconn.c); every one is a non-flexible version.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "broker/blog.h"
#include "broker/kafka/kafka_int.h"
#include "verity/errors.h"
#include "verity/verify.h"

#define KTOPIC_MAX (VERITY_TOPIC_NAME_MAX + 1)

/* ---- ApiVersions --------------------------------------------------------- */

void k_api_versions(struct kreq *q)
{
    struct kw *w = &q->w;
    int16_t v = q->api_version;
    bool supported = v >= 0 && v <= 3;
    /* v3 is the one flexible version the listener speaks (librdkafka opens
     * with it): compact array, tagged fields; its response header stays v0.
     * Its request body (client software name and version) is not needed. */
    bool flex = v == 3;
    /* An unsupported version gets the v0 body (KIP-511). */
    kw_i16(w, supported ? KE_NONE : KE_UNSUPPORTED_VERSION);
    if (flex) {
        uint8_t *p = kw_reserve(w, 5);
        if (p) /* compact array length: N + 1 as an unsigned varint */
            w->len -= 5 - kuv_put(p, (uint64_t)kapi_count + 1);
    } else {
        kw_i32(w, (int32_t)kapi_count);
    }
    for (size_t i = 0; i < kapi_count; i++) {
        kw_i16(w, kapi_table[i].key);
        kw_i16(w, kapi_table[i].min_version);
        kw_i16(w, kapi_table[i].max_version);
        if (flex)
            kw_i8(w, 0); /* no tagged fields */
    }
    if (supported && v >= 1)
        kw_i32(w, 0); /* throttle */
    if (flex)
        kw_i8(w, 0); /* no tagged fields */
    kreq_done(q);
}

/* ---- Metadata ------------------------------------------------------------ */

static void md_partitions(struct kreq *q, const struct topic *t)
{
    struct kw *w = &q->w;
    int16_t v = q->api_version;
    int32_t node = (int32_t)q->k->b->cfg.node_id;
    kw_i32(w, (int32_t)t->cfg.partitions);
    for (uint32_t i = 0; i < t->cfg.partitions; i++) {
        const struct partition *p = t->parts[i];
        kw_i16(w, p && p->log && !p->error ? KE_NONE : KE_LEADER_NOT_AVAILABLE);
        kw_i32(w, (int32_t)i);
        kw_i32(w, node);
        if (v >= 7)
            kw_i32(w, 0); /* leader epoch */
        kw_i32(w, 1);
        kw_i32(w, node); /* replicas */
        kw_i32(w, 1);
        kw_i32(w, node); /* isr */
        if (v >= 5)
            kw_i32(w, 0); /* offline replicas */
    }
}

static void md_topic(struct kreq *q, struct kstr name, const struct topic *t, int16_t err)
{
    struct kw *w = &q->w;
    kw_i16(w, t ? KE_NONE : err ? err : KE_UNKNOWN_TOPIC_OR_PARTITION);
    kw_kstr(w, name);
    if (q->api_version >= 1)
        kw_bool(w, false); /* is_internal */
    if (t)
        md_partitions(q, t);
    else
        kw_i32(w, 0);
    if (q->api_version >= 8)
        kw_i32(w, INT32_MIN); /* topic authorized operations: not computed */
}

static bool md_visible(const struct topic *t)
{
    return t->ready && !t->deleting && t->name[0] != '_';
}

void k_metadata(struct kreq *q)
{
    struct broker *b = q->k->b;
    struct kr *r = &q->r;
    int16_t v = q->api_version;
    int32_t n = kr_array(r, v >= 1, 2);
    struct kstr *names = n > 0 ? calloc((size_t)n, sizeof *names) : NULL;
    if (n > 0 && !names) {
        kreq_malformed(q, "out of memory");
        return;
    }
    for (int32_t i = 0; i < n; i++)
        names[i] = kr_str(r, false);
    if (v >= 4)
        (void)kr_i8(r); /* allow_auto_topic_creation: topics are created explicitly */
    if (v >= 8) {
        (void)kr_i8(r);
        (void)kr_i8(r);
    }
    if (!kr_ok(r)) {
        free(names);
        kreq_malformed(q, "Metadata request does not decode");
        return;
    }
    struct kw *w = &q->w;
    if (v >= 3)
        kw_i32(w, 0); /* throttle */
    kw_i32(w, 1);
    kw_i32(w, (int32_t)b->cfg.node_id);
    kw_str(w, q->k->host);
    kw_i32(w, q->k->port);
    if (v >= 1)
        kw_str(w, NULL); /* rack */
    if (v >= 2)
        kw_str(w, "verity");
    if (v >= 1)
        kw_i32(w, (int32_t)b->cfg.node_id); /* controller */
    bool all = n == -1 || (n == 0 && v == 0);
    if (all) {
        size_t pos = w->len;
        int32_t count = 0;
        kw_i32(w, 0);
        struct topic *t;
        TAILQ_FOREACH(t, &b->topics, link)
        {
            if (!md_visible(t) || !kname_visible(q, t->name, AUTH_OP_DESCRIBE))
                continue;
            const char *shown = kname_out(q, t->name);
            struct kstr s = {(const uint8_t *)shown, (int32_t)strlen(shown)};
            md_topic(q, s, t, KE_NONE);
            count++;
        }
        kw_put_i32_at(w, pos, count);
    } else {
        kw_i32(w, n);
        for (int32_t i = 0; i < n; i++) {
            char name[KTOPIC_MAX];
            int16_t err = kname_in(q, names[i], false, AUTH_OP_DESCRIBE, name, sizeof name);
            struct topic *t = err ? NULL : topic_find_live(b, name);
            md_topic(q, names[i], t, err);
        }
    }
    if (v >= 8)
        kw_i32(w, INT32_MIN); /* cluster authorized operations */
    free(names);
    kreq_done(q);
}

/* ---- CreateTopics -------------------------------------------------------- */

struct kcreate_item {
    struct kstr name;
    int16_t err;
    char msg[160];
};

struct kcreate {
    struct kreq *q;
    size_t n;
    size_t pending;
    struct kcreate_item *items;
};

static void kcreate_finish(struct kcreate *kc)
{
    struct kreq *q = kc->q;
    struct kw *w = &q->w;
    if (q->api_version >= 2)
        kw_i32(w, 0);
    kw_i32(w, (int32_t)kc->n);
    for (size_t i = 0; i < kc->n; i++) {
        kw_kstr(w, kc->items[i].name);
        kw_i16(w, kc->items[i].err);
        if (q->api_version >= 1)
            kw_str(w, kc->items[i].err ? kc->items[i].msg : NULL);
    }
    free(kc->items);
    free(kc);
    kreq_done(q);
}

struct kcreate_one {
    struct kcreate *kc;
    size_t idx;
};

static void kcreate_done(struct broker *b, void *arg, int err)
{
    struct kcreate_one *one = arg;
    struct kcreate *kc = one->kc;
    (void)b;
    if (err) {
        kc->items[one->idx].err = kerr_from_verity(err);
        snprintf(kc->items[one->idx].msg, sizeof kc->items[one->idx].msg, "%s",
                 verity_strerror(err));
    }
    free(one);
    if (--kc->pending == 0)
        kcreate_finish(kc);
}

void k_create_topics(struct kreq *q)
{
    struct broker *b = q->k->b;
    struct kr *r = &q->r;
    int16_t v = q->api_version;
    struct kcreate *kc = calloc(1, sizeof *kc);
    int32_t n = kr_array(r, false, 14);
    if (!kc || (n > 0 && !(kc->items = calloc((size_t)n, sizeof *kc->items)))) {
        free(kc);
        kreq_malformed(q, "out of memory");
        return;
    }
    kc->q = q;
    kc->n = (size_t)n;
    int32_t *parts = n > 0 ? calloc((size_t)n, sizeof *parts) : NULL;
    if (n > 0 && !parts) {
        free(kc->items);
        free(kc);
        kreq_malformed(q, "out of memory");
        return;
    }
    for (int32_t i = 0; i < n && kr_ok(r); i++) {
        kc->items[i].name = kr_str(r, false);
        parts[i] = kr_i32(r);
        int16_t rf = kr_i16(r);
        int32_t na = kr_array(r, false, 8);
        for (int32_t a = 0; a < na && kr_ok(r); a++) {
            (void)kr_i32(r);
            int32_t nb = kr_array(r, false, 4);
            for (int32_t k = 0; k < nb; k++)
                (void)kr_i32(r);
        }
        int32_t nc = kr_array(r, false, 4);
        for (int32_t c = 0; c < nc && kr_ok(r); c++) {
            (void)kr_str(r, false);
            (void)kr_str(r, true);
        }
        if (na > 0) {
            kc->items[i].err = KE_INVALID_REQUEST;
            snprintf(kc->items[i].msg, sizeof kc->items[i].msg,
                     "manual replica assignment is not supported");
        } else if (rf != -1 && rf != 1) {
            kc->items[i].err = KE_INVALID_REPLICATION_FACTOR;
            snprintf(kc->items[i].msg, sizeof kc->items[i].msg,
                     "replication factor %d: this broker keeps one copy (use 1 or -1)", rf);
        }
    }
    (void)kr_i32(r); /* timeout_ms */
    bool validate_only = v >= 1 ? kr_i8(r) != 0 : false;
    if (!kr_ok(r)) {
        free(parts);
        free(kc->items);
        free(kc);
        kreq_malformed(q, "CreateTopics request does not decode");
        return;
    }
    kc->pending = 1;
    for (int32_t i = 0; i < n; i++) {
        struct kcreate_item *it = &kc->items[i];
        char name[KTOPIC_MAX];
        struct topic_cfg tc;
        if (it->err)
            continue;
        int16_t nerr = kname_in(q, it->name, false, AUTH_OP_ADMIN, name, sizeof name);
        if (nerr) {
            it->err = nerr == KE_TOPIC_AUTHORIZATION_FAILED ? nerr : KE_INVALID_TOPIC_EXCEPTION;
            snprintf(it->msg, sizeof it->msg, "%s",
                     nerr == KE_TOPIC_AUTHORIZATION_FAILED ? "not authorized (ACL)"
                                                           : "invalid topic name");
            continue;
        }
        if (topic_cfg_from_wire(b, NULL, &tc, it->msg, sizeof it->msg))
            continue;
        if (parts[i] == 0 || parts[i] < -1 || parts[i] > (int32_t)VERITY_PARTITIONS_MAX) {
            it->err = KE_INVALID_PARTITIONS;
            snprintf(it->msg, sizeof it->msg, "partitions must be 1..%u or -1",
                     VERITY_PARTITIONS_MAX);
            continue;
        }
        if (parts[i] > 0)
            tc.partitions = (uint32_t)parts[i];
        if (topic_find(b, name)) {
            it->err = KE_TOPIC_ALREADY_EXISTS;
            snprintf(it->msg, sizeof it->msg, "topic already exists");
            continue;
        }
        if (!codec_topic_name_ok(name, false)) {
            it->err = KE_INVALID_TOPIC_EXCEPTION;
            snprintf(it->msg, sizeof it->msg, "invalid topic name");
            continue;
        }
        if (b->n_topics >= b->cfg.max_topics) {
            it->err = KE_POLICY_VIOLATION;
            snprintf(it->msg, sizeof it->msg, "max_topics reached");
            continue;
        }
        if (validate_only)
            continue;
        struct kcreate_one *one = calloc(1, sizeof *one);
        if (!one) {
            it->err = KE_UNKNOWN;
            continue;
        }
        one->kc = kc;
        one->idx = (size_t)i;
        int rc = topic_create_start(b, name, &tc, kcreate_done, one, it->msg, sizeof it->msg);
        if (rc) {
            it->err = kerr_from_verity(rc);
            free(one);
            continue;
        }
        kc->pending++;
    }
    free(parts);
    if (--kc->pending == 0)
        kcreate_finish(kc);
}

/* ---- DeleteTopics -------------------------------------------------------- */

struct kdelete {
    struct kreq *q;
    size_t n;
    size_t pending;
    struct kstr *names;
    int16_t *errs;
};

struct kdelete_one {
    struct kdelete *kd;
    size_t idx;
    char name[KTOPIC_MAX];
};

static void kdelete_finish(struct kdelete *kd)
{
    struct kreq *q = kd->q;
    struct kw *w = &q->w;
    if (q->api_version >= 1)
        kw_i32(w, 0);
    kw_i32(w, (int32_t)kd->n);
    for (size_t i = 0; i < kd->n; i++) {
        kw_kstr(w, kd->names[i]);
        kw_i16(w, kd->errs[i]);
    }
    free(kd->names);
    free(kd->errs);
    free(kd);
    kreq_done(q);
}

static void kdelete_done(struct broker *b, void *arg, int err)
{
    struct kdelete_one *one = arg;
    struct kdelete *kd = one->kd;
    struct topic *t = topic_find(b, one->name);
    if (!t || !t->deleting) {
        kd->errs[one->idx] = KE_UNKNOWN_TOPIC_OR_PARTITION;
    } else if (err) {
        t->deleting = false;
        kd->errs[one->idx] = KE_KAFKA_STORAGE_ERROR;
    } else {
        for (uint32_t i = 0; i < t->cfg.partitions; i++) {
            (void)part_close(t->parts[i], VERITY_ENOTFOUND, false);
            t->parts[i] = NULL;
        }
        int rc = meta_remove_topic_dir(b, t->name);
        blog(rc ? BLOG_WARN : BLOG_INFO, "topic_deleted", "topic=%s via=kafka dir_error=%s",
             t->name, verity_errname(rc));
        topic_remove(b, t);
    }
    free(one);
    if (--kd->pending == 0)
        kdelete_finish(kd);
}

void k_delete_topics(struct kreq *q)
{
    struct broker *b = q->k->b;
    struct kr *r = &q->r;
    int32_t n = kr_array(r, false, 2);
    struct kdelete *kd = calloc(1, sizeof *kd);
    if (kd && n > 0) {
        kd->names = calloc((size_t)n, sizeof *kd->names);
        kd->errs = calloc((size_t)n, sizeof *kd->errs);
    }
    if (!kd || (n > 0 && (!kd->names || !kd->errs))) {
        if (kd) {
            free(kd->names);
            free(kd->errs);
        }
        free(kd);
        kreq_malformed(q, "out of memory");
        return;
    }
    for (int32_t i = 0; i < n; i++)
        kd->names[i] = kr_str(r, false);
    (void)kr_i32(r);
    if (!kr_ok(r)) {
        free(kd->names);
        free(kd->errs);
        free(kd);
        kreq_malformed(q, "DeleteTopics request does not decode");
        return;
    }
    kd->q = q;
    kd->n = (size_t)n;
    kd->pending = 1;
    for (int32_t i = 0; i < n; i++) {
        char name[KTOPIC_MAX];
        int16_t nerr = kname_in(q, kd->names[i], false, AUTH_OP_ADMIN, name, sizeof name);
        struct topic *t = nerr ? NULL : topic_find_live(b, name);
        if (!t) {
            kd->errs[i] = nerr ? nerr : KE_UNKNOWN_TOPIC_OR_PARTITION;
            continue;
        }
        struct kdelete_one *one = calloc(1, sizeof *one);
        json_t *rec = json_pack("{s:s, s:s, s:I}", "type", "delete_topic", "name", name,
                                "time_ms", (json_int_t)now_ms());
        char *text = rec ? json_dumps(rec, JSON_COMPACT) : NULL;
        json_decref(rec);
        int rc = one && text ? 0 : -ENOMEM;
        if (rc == 0) {
            one->kd = kd;
            one->idx = (size_t)i;
            snprintf(one->name, sizeof one->name, "%s", name);
            rc = meta_append(b, text, kdelete_done, one);
        }
        free(text);
        if (rc) {
            free(one);
            kd->errs[i] = KE_KAFKA_STORAGE_ERROR;
            continue;
        }
        t->deleting = true;
        kd->pending++;
        for (uint32_t p = 0; p < t->cfg.partitions; p++) {
            struct partition *part = t->parts[p];
            while (part && !TAILQ_EMPTY(&part->fetchers))
                fetch_link_wake(TAILQ_FIRST(&part->fetchers), true);
        }
    }
    if (--kd->pending == 0)
        kdelete_finish(kd);
}

/* ---- DescribeConfigs ----------------------------------------------------- */

struct kconfig {
    const char *name;
    char value[32];
};

/* The topic settings a Kafka admin client recognises, from the topic's
 * effective Verity config. */
static size_t topic_configs(const struct topic *t, struct kconfig *out)
{
    size_t n = 0;
    out[n].name = "retention.ms";
    snprintf(out[n++].value, sizeof out[0].value, "%" PRId64, t->cfg.retention_ms);
    out[n].name = "retention.bytes";
    snprintf(out[n++].value, sizeof out[0].value, "%" PRId64, t->cfg.retention_bytes);
    out[n].name = "segment.bytes";
    snprintf(out[n++].value, sizeof out[0].value, "%" PRIu64, t->cfg.segment_bytes);
    out[n].name = "max.message.bytes";
    snprintf(out[n++].value, sizeof out[0].value, "%" PRIu32, t->cfg.max_message_bytes);
    out[n].name = "cleanup.policy";
    snprintf(out[n++].value, sizeof out[0].value, "delete");
    out[n].name = "verity.durability";
    snprintf(out[n++].value, sizeof out[0].value, "%s", bcfg_durability_name(t->cfg.durability));
    return n;
}

void k_describe_configs(struct kreq *q)
{
    struct broker *b = q->k->b;
    struct kr *r = &q->r;
    int16_t v = q->api_version;
    struct kw *w = &q->w;
    int32_t n = kr_array(r, false, 7);
    kw_i32(w, 0); /* throttle */
    kw_i32(w, n);
    for (int32_t i = 0; i < n && kr_ok(r); i++) {
        int8_t type = kr_i8(r);
        struct kstr name = kr_str(r, false);
        int32_t nk = kr_array(r, true, 2);
        struct kstr keys[64];
        int32_t kept = 0;
        for (int32_t k = 0; k < nk; k++) {
            struct kstr key = kr_str(r, false);
            if (kept < 64)
                keys[kept++] = key;
        }
        char tname[KTOPIC_MAX];
        int16_t nerr = type == 2 ? kname_in(q, name, false, AUTH_OP_DESCRIBE, tname, sizeof tname)
                                 : KE_UNKNOWN_TOPIC_OR_PARTITION;
        struct topic *t = nerr ? NULL : topic_find_live(b, tname);
        struct kconfig cfgs[8];
        size_t nc = t ? topic_configs(t, cfgs) : 0;
        bool broker_res = type == 4;
        bool denied = !broker_res && nerr == KE_TOPIC_AUTHORIZATION_FAILED;
        kw_i16(w, t || broker_res ? KE_NONE : denied ? nerr : KE_UNKNOWN_TOPIC_OR_PARTITION);
        kw_str(w, t || broker_res ? NULL : denied ? "not authorized (ACL)" : "unknown topic");
        kw_i8(w, type);
        kw_kstr(w, name);
        size_t pos = w->len;
        int32_t count = 0;
        kw_i32(w, 0);
        for (size_t c = 0; c < nc; c++) {
            bool want = nk <= 0;
            for (int32_t k = 0; k < kept && !want; k++)
                want = kstr_eq(keys[k], cfgs[c].name);
            if (!want)
                continue;
            kw_str(w, cfgs[c].name);
            kw_str(w, cfgs[c].value);
            kw_bool(w, true); /* read only: change them with `verity topic` */
            if (v == 0)
                kw_bool(w, false); /* is_default */
            else
                kw_i8(w, 1); /* source: dynamic topic config */
            kw_bool(w, false); /* sensitive */
            if (v >= 1)
                kw_i32(w, 0); /* synonyms */
            count++;
        }
        kw_put_i32_at(w, pos, count);
    }
    if (v >= 1)
        (void)kr_i8(r); /* include_synonyms */
    if (!kr_ok(r)) {
        kreq_malformed(q, "DescribeConfigs request does not decode");
        return;
    }
    kreq_done(q);
}

/* ---- InitProducerId ------------------------------------------------------ */

struct kinit {
    struct kreq *q;
    int64_t pid;
    int16_t epoch;
};

static void kinit_reply(struct kreq *q, int16_t err, int64_t pid, int16_t epoch)
{
    kw_i32(&q->w, 0);
    kw_i16(&q->w, err);
    kw_i64(&q->w, pid);
    kw_i16(&q->w, epoch);
    kreq_done(q);
}

static void kinit_done(struct broker *b, void *arg, int err)
{
    struct kinit *ki = arg;
    (void)b;
    if (err)
        kinit_reply(ki->q, KE_KAFKA_STORAGE_ERROR, -1, -1);
    else
        kinit_reply(ki->q, KE_NONE, ki->pid, ki->epoch);
    free(ki);
}

/* A new Verity producer id (epoch 0), recorded in the metadata log before
 * the answer, exactly like the native InitProducer: sequences of a Kafka
 * idempotent producer are then checked by the partitions' idem state. */
void k_init_producer_id(struct kreq *q)
{
    struct broker *b = q->k->b;
    struct kr *r = &q->r;
    struct kstr txn = kr_str(r, true);
    (void)kr_i32(r);
    if (!kr_ok(r)) {
        kreq_malformed(q, "InitProducerId request does not decode");
        return;
    }
    if (txn.p) {
        kinit_reply(q, KE_INVALID_REQUEST, -1, -1); /* transactions: not supported */
        return;
    }
    if (b->meta.n_producers >= b->cfg.max_producers) {
        kinit_reply(q, KE_POLICY_VIOLATION, -1, -1);
        return;
    }
    int64_t pid = (int64_t)b->meta.n_producers + 1;
    struct kinit *ki = calloc(1, sizeof *ki);
    json_t *rec = json_pack("{s:s, s:I, s:i, s:I}", "type", "init_producer", "producer_id",
                            (json_int_t)pid, "epoch", 0, "time_ms", (json_int_t)now_ms());
    char *text = rec ? json_dumps(rec, JSON_COMPACT) : NULL;
    json_decref(rec);
    int rc = ki && text ? meta_producer_set(b, pid, 0) : -ENOMEM;
    if (rc == 0) {
        ki->q = q;
        ki->pid = pid;
        ki->epoch = 0;
        rc = meta_append(b, text, kinit_done, ki);
    }
    free(text);
    if (rc) {
        free(ki);
        kinit_reply(q, KE_KAFKA_STORAGE_ERROR, -1, -1);
    }
}
