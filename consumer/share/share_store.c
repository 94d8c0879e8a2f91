/*
 * The shares topic and the audit topic.
 *
 * _verity.shares (one partition) is the gateway's state, a log of JSON
 * records applied in order:
 *   {"type":"share",  "share": <spec JSON>}              a share is created
 *   {"type":"use",    "share": id, "export": eid,
 *    "sources": [{"topic","partition","from","to"}], "time_ms"}
 *                                                         one export began
 *   {"type":"revoke", "share": id, "reason", "time_ms"}  a share is revoked
 * The state (shares, their use counts, revocations) is a deterministic
 * function of that log, so any gateway that reads it agrees, and the topic
 * is replicated, hash-chained and checkpointed like every other.
 *
 * _verity.share-audit holds one JSON disclosure record per event (see
 * share_audit_new and docs/SHARING.md for the fields).
 *
 * The names start with one underscore: "__" is reserved for the broker's
 * own internal topics and refused to clients.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "consumer/share/share.h"

void share_db_init(struct share_db *db)
{
    memset(db, 0, sizeof *db);
}

void share_db_deinit(struct share_db *db)
{
    struct share_entry *e = db->head;
    while (e) {
        struct share_entry *n = e->next;
        share_spec_deinit(&e->spec);
        free(e->revoke_reason);
        json_decref(e->exports);
        free(e);
        e = n;
    }
    share_db_init(db);
}

struct share_entry *share_db_find(struct share_db *db, const char *id)
{
    for (struct share_entry *e = db->head; e; e = e->next)
        if (strcmp(e->spec.id, id) == 0)
            return e;
    return NULL;
}

int share_db_apply(struct share_db *db, const void *value, size_t len)
{
    json_t *j = json_loadb(value, len, JSON_REJECT_DUPLICATES, NULL);
    const char *type = json_string_value(json_object_get(j, "type"));
    int rc = VERITY_EINVAL;
    if (!type)
        goto out;
    if (strcmp(type, "share") == 0) {
        struct share_entry *e = calloc(1, sizeof *e);
        if (!e) {
            rc = -ENOMEM;
            goto out;
        }
        if ((rc = share_spec_from_json(json_object_get(j, "share"), &e->spec, NULL, 0)) ||
            share_db_find(db, e->spec.id)) {
            if (!rc)
                share_spec_deinit(&e->spec);
            free(e);
            rc = VERITY_EINVAL;
            goto out;
        }
        e->exports = json_object();
        e->next = db->head;
        db->head = e;
        rc = 0;
        goto out;
    }
    const char *id = json_string_value(json_object_get(j, "share"));
    struct share_entry *e = id ? share_db_find(db, id) : NULL;
    if (!e)
        goto out;
    if (strcmp(type, "use") == 0) {
        const char *eid = json_string_value(json_object_get(j, "export"));
        if (!eid || !json_is_array(json_object_get(j, "sources")) ||
            json_object_get(e->exports, eid))
            goto out;
        json_object_set(e->exports, eid, j);
        e->uses++;
        rc = 0;
    } else if (strcmp(type, "revoke") == 0) {
        const char *why = json_string_value(json_object_get(j, "reason"));
        e->revoked = true;
        free(e->revoke_reason);
        e->revoke_reason = strdup(why ? why : "");
        rc = 0;
    }
out:
    json_decref(j);
    return rc;
}

int share_db_catch_up(struct share_db *db, struct verity_client *admin,
                      struct verity_consumer **cons, const char *broker, int timeout_ms)
{
    struct verity_offsets o;
    int rc = verity_list_offsets(admin, SHARE_STATE_TOPIC, 0, VERITY_OFFSET_LATEST, 0, &o);
    if (rc)
        return rc;
    if (o.high_watermark <= db->next_offset)
        return 0;
    if (!*cons) {
        struct verity_consumer_config cc;
        verity_consumer_config_default(&cc);
        cc.conn.broker = broker;
        cc.fetch_max_wait_ms = 50;
        if ((rc = verity_consumer_new(&cc, cons)))
            return rc;
        if ((rc = verity_consumer_assign(*cons, SHARE_STATE_TOPIC, 0, VERITY_START_OFFSET,
                                         (int64_t)db->next_offset))) {
            verity_consumer_free(*cons);
            *cons = NULL;
            return rc;
        }
    }
    int64_t deadline = sh_now_ms() + timeout_ms;
    for (;;) {
        const struct verity_message *m;
        size_t n;
        if ((rc = verity_consumer_poll(*cons, 100, &m, &n, NULL)))
            return rc;
        for (size_t i = 0; i < n; i++) {
            /* A malformed record changes nothing; the log is still read on. */
            if (m[i].value && m[i].value_len > 0 &&
                share_db_apply(db, m[i].value, (size_t)m[i].value_len) != 0)
                db->bad_records++;
            db->next_offset = m[i].offset + 1;
        }
        uint64_t next, hwm;
        if (verity_consumer_position(*cons, SHARE_STATE_TOPIC, 0, &next, &hwm) == 0 &&
            next >= o.high_watermark) {
            db->next_offset = next;
            return 0;
        }
        if (sh_now_ms() > deadline)
            return VERITY_ETIMEOUT;
    }
}

int share_topics_ensure(struct verity_client *admin)
{
    const char *names[2] = {SHARE_STATE_TOPIC, SHARE_AUDIT_TOPIC};
    for (int i = 0; i < 2; i++) {
        struct verity_topic_config tc = {0};
        tc.partitions = 1;
        tc.durability = VERITY_DURABILITY_ALWAYS;
        tc.retention_ms = -1;
        tc.retention_bytes = -1;
        int rc = verity_topic_create(admin, names[i], &tc, NULL);
        if (rc && rc != VERITY_EEXIST)
            return rc;
    }
    return 0;
}

int share_append(struct verity_producer *p, const char *topic, json_t *rec)
{
    char *s = json_dumps(rec, JSON_COMPACT | JSON_SORT_KEYS);
    if (!s)
        return -ENOMEM;
    struct verity_record r = {0};
    r.value = s;
    r.value_len = (int32_t)strlen(s);
    int rc = verity_produce_sync(p, topic, 0, &r, NULL);
    free(s);
    return rc;
}

json_t *share_audit_new(const char *event, const char *outcome, const struct share_spec *s,
                        const char *client, int64_t now_ms)
{
    char t[32];
    sh_time_fmt(now_ms, t);
    json_t *a = json_pack("{s:s, s:I, s:s, s:s, s:s?}", "time", t, "time_ms", (json_int_t)now_ms,
                          "event", event, "outcome", outcome, "client", client);
    if (!a || !s)
        return a;
    uint8_t d[32];
    char ds[48];
    json_t *topics = json_array(), *cats = json_object();
    for (uint32_t i = 0; i < s->topic_count; i++)
        json_array_append_new(topics, json_string(s->topics[i]));
    for (uint32_t i = 0; i < s->field_count; i++)
        json_object_set_new(cats, s->fields[i].path, json_string(xf_op_name(s->fields[i].op)));
    if (share_scope_digest(s, d) == 0)
        sh_b64url_enc(d, 32, ds);
    else
        ds[0] = '\0';
    json_object_set_new(a, "share", json_string(s->id));
    json_object_set_new(a, "recipient", json_string(s->rcpt.name));
    json_object_set_new(a, "contact", s->rcpt.contact ? json_string(s->rcpt.contact) : json_null());
    json_object_set_new(a, "purpose", s->rcpt.purpose ? json_string(s->rcpt.purpose) : json_null());
    json_object_set_new(a, "issuer", s->issuer ? json_string(s->issuer) : json_null());
    json_object_set_new(a, "tenant", s->tenant ? json_string(s->tenant) : json_null());
    json_object_set_new(a, "scope_digest", json_string(ds));
    json_object_set_new(a, "topics", topics);
    json_object_set_new(a, "policy_version", json_integer(s->policy_version));
    json_object_set_new(a, "field_categories", cats);
    return a;
}
