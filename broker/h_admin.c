/*
 * Handlers of the administrative requests: Hello, Metadata, CreateTopic,
 * DeleteTopic, ListTopics, DescribeTopic, InitProducer and ListOffsets.
 * Requests arrive validated by codec_validate_request (names, counts,
 * enums); these check what needs broker state.
 *
 * Requests that change metadata append a record to the metadata log and
 * answer from its durability callback, so nothing is acknowledged before
 * it would survive a crash. A created topic becomes visible only then (its
 * partitions open in the callback); a deleted one disappears at once
 * (deleting) and its directory goes once the record is durable.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "broker/blog.h"
#include "broker/broker_int.h"
#include "verity/errors.h"
#include "verity/verify.h"

#define SOFTWARE "verityd 0.1"

/* ---- Hello ------------------------------------------------------------------ */

void h_hello(struct req *r)
{
    const Verity__HelloRequest *q = r->msg->env->hello_req;
    uint32_t lo = q->version_min ? q->version_min : 1;
    uint32_t hi = q->version_max ? q->version_max : lo;
    if (lo > CODEC_PROTOCOL_VERSION || hi < CODEC_PROTOCOL_VERSION) {
        char msg[128];
        snprintf(msg, sizeof msg,
                 "client speaks versions %" PRIu32 "..%" PRIu32 "; this broker speaks %u", lo, hi,
                 CODEC_PROTOCOL_VERSION);
        req_fail(r, VERITY_EVERSION, msg);
        return;
    }
    Verity__HelloResponse resp = VERITY__HELLO_RESPONSE__INIT;
    resp.version = CODEC_PROTOCOL_VERSION;
    resp.node_id = r->b->cfg.node_id;
    resp.software = SOFTWARE;
    resp.max_frame_bytes = r->b->cfg.max_frame_bytes;
    resp.max_batch_bytes = r->b->cfg.max_batch_bytes;
    resp.max_inflight = r->b->cfg.max_inflight;
    resp.idempotency_window_ms = r->b->cfg.idempotency_window_ms;
    char q1[200];
    blog(BLOG_DEBUG, "hello", "conn=%" PRIu64 " client_id=%s", r->conn->id,
         blog_q(q->client_id, q1, sizeof q1));
    Verity__Envelope env = VERITY__ENVELOPE__INIT;
    env.body_case = VERITY__ENVELOPE__BODY_HELLO_RESP;
    env.hello_resp = &resp;
    req_reply(r, &env, NULL, 0);
}

/* ---- Metadata / ListTopics / DescribeTopic --------------------------------- */

/* Answers with n topic entries: names[i] (or every live topic when names is
 * NULL). */
struct md_set {
    size_t n;
    Verity__TopicMetadata *md;
    Verity__TopicConfig *cfg;
    Verity__TopicMetadata **ptrs;
};

static void md_set_free(struct md_set *s)
{
    for (size_t i = 0; i < s->n; i++)
        topic_md_free(&s->md[i]);
    free(s->md);
    free(s->cfg);
    free(s->ptrs);
}

static int md_set_alloc(struct md_set *s, size_t n)
{
    memset(s, 0, sizeof *s);
    size_t k = n ? n : 1;
    s->md = calloc(k, sizeof *s->md);
    s->cfg = calloc(k, sizeof *s->cfg);
    s->ptrs = calloc(k, sizeof *s->ptrs);
    if (!s->md || !s->cfg || !s->ptrs) {
        md_set_free(s);
        return -ENOMEM;
    }
    return 0;
}

/* Fills entry i for topic t (NULL: not found, named name). */
static int md_set_put(struct broker *b, struct md_set *s, struct topic *t, const char *name,
                      bool with_partitions)
{
    size_t i = s->n;
    int rc = 0;
    if (t) {
        rc = topic_md_fill(b, t, with_partitions, &s->md[i], &s->cfg[i]);
    } else {
        verity__topic_metadata__init(&s->md[i]);
        s->md[i].name = (char *)name;
        s->md[i].error = VERITY__ERROR_CODE__ERR_NOT_FOUND;
        s->md[i].error_message = "unknown topic";
    }
    if (rc == 0) {
        s->ptrs[i] = &s->md[i];
        s->n++;
    }
    return rc;
}

static bool visible(const struct topic *t, bool include_internal)
{
    return t->ready && !t->deleting && (include_internal || strncmp(t->name, "__", 2) != 0);
}

void h_metadata(struct req *r)
{
    struct broker *b = r->b;
    const Verity__MetadataRequest *q = r->msg->env->metadata_req;
    struct md_set s;
    size_t want = q->n_topics ? q->n_topics : b->n_topics;
    if (md_set_alloc(&s, want)) {
        req_fail(r, -ENOMEM, NULL);
        return;
    }
    int rc = 0;
    if (q->n_topics) {
        for (size_t i = 0; i < q->n_topics && rc == 0; i++) {
            struct topic *t = topic_find_live(b, q->topics[i]);
            rc = md_set_put(b, &s, t, q->topics[i], true);
            if (!t)
                r->failed_entry = true;
        }
    } else {
        struct topic *t;
        TAILQ_FOREACH(t, &b->topics, link)
        {
            if (rc == 0 && visible(t, false))
                rc = md_set_put(b, &s, t, NULL, true);
        }
    }
    if (rc) {
        md_set_free(&s);
        req_fail(r, rc, NULL);
        return;
    }
    Verity__MetadataResponse resp = VERITY__METADATA_RESPONSE__INIT;
    Verity__BrokerInfo self = VERITY__BROKER_INFO__INIT;
    Verity__BrokerInfo *brokers[1] = {&self};
    char host[BCFG_ADDR_MAX];
    uint16_t port = 0;
    if (bcfg_split_hostport(b->listen_addr, host, sizeof host, &port))
        snprintf(host, sizeof host, "127.0.0.1");
    self.node_id = b->cfg.node_id;
    self.host = host;
    self.port = port;
    resp.n_brokers = 1;
    resp.brokers = brokers;
    /* a cluster: every broker, so clients can reach each partition's primary */
    Verity__BrokerInfo all[BCFG_NODES_MAX];
    Verity__BrokerInfo *allp[BCFG_NODES_MAX];
    char hosts[BCFG_NODES_MAX][BCFG_NODE_ADDR_MAX];
    size_t na = 0;
    for (uint32_t i = 0; i < b->cfg.cluster_n && i < BCFG_NODES_MAX; i++) {
        verity__broker_info__init(&all[na]);
        if (cluster_broker_info(b, b->cfg.nodes[i].id, &all[na], hosts[na], sizeof hosts[na])) {
            allp[na] = &all[na];
            na++;
        }
    }
    if (na) {
        resp.n_brokers = na;
        resp.brokers = allp;
    }
    resp.node_id = b->cfg.node_id;
    resp.n_topics = s.n;
    resp.topics = s.ptrs;
    Verity__Envelope env = VERITY__ENVELOPE__INIT;
    env.body_case = VERITY__ENVELOPE__BODY_METADATA_RESP;
    env.metadata_resp = &resp;
    req_reply(r, &env, NULL, 0);
    md_set_free(&s);
}

void h_list_topics(struct req *r)
{
    struct broker *b = r->b;
    bool internal = r->msg->env->list_topics_req->include_internal;
    struct md_set s;
    if (md_set_alloc(&s, b->n_topics)) {
        req_fail(r, -ENOMEM, NULL);
        return;
    }
    struct topic *t;
    TAILQ_FOREACH(t, &b->topics, link)
    {
        if (visible(t, internal) && md_set_put(b, &s, t, NULL, false)) {
            md_set_free(&s);
            req_fail(r, -ENOMEM, NULL);
            return;
        }
    }
    Verity__ListTopicsResponse resp = VERITY__LIST_TOPICS_RESPONSE__INIT;
    resp.n_topics = s.n;
    resp.topics = s.ptrs;
    Verity__Envelope env = VERITY__ENVELOPE__INIT;
    env.body_case = VERITY__ENVELOPE__BODY_LIST_TOPICS_RESP;
    env.list_topics_resp = &resp;
    req_reply(r, &env, NULL, 0);
    md_set_free(&s);
}

/* Answers r with a Describe/CreateTopic response for t. */
static void reply_topic(struct req *r, struct topic *t, Verity__Envelope__BodyCase kind)
{
    Verity__TopicMetadata md;
    Verity__TopicConfig cfg;
    int rc = topic_md_fill(r->b, t, true, &md, &cfg);
    if (rc) {
        req_fail(r, rc, NULL);
        return;
    }
    Verity__Envelope env = VERITY__ENVELOPE__INIT;
    Verity__DescribeTopicResponse d = VERITY__DESCRIBE_TOPIC_RESPONSE__INIT;
    Verity__CreateTopicResponse c = VERITY__CREATE_TOPIC_RESPONSE__INIT;
    env.body_case = kind;
    if (kind == VERITY__ENVELOPE__BODY_DESCRIBE_TOPIC_RESP) {
        d.topic = &md;
        env.describe_topic_resp = &d;
    } else {
        c.topic = &md;
        env.create_topic_resp = &c;
    }
    req_reply(r, &env, NULL, 0);
    topic_md_free(&md);
}

void h_describe_topic(struct req *r)
{
    const char *name = r->msg->env->describe_topic_req->name;
    struct topic *t = topic_find_live(r->b, name);
    if (!t) {
        char msg[300];
        snprintf(msg, sizeof msg, "unknown topic %s", name);
        req_fail(r, VERITY_ENOTFOUND, msg);
        return;
    }
    reply_topic(r, t, VERITY__ENVELOPE__BODY_DESCRIBE_TOPIC_RESP);
}

/* ---- CreateTopic ------------------------------------------------------------- */

/* The metadata record of a new topic (malloc'd JSON text, NULL on -ENOMEM). */
static char *create_record(const char *name, const struct topic_cfg *tc, int64_t now)
{
    json_t *rec =
        json_pack("{s:s, s:s, s:I, s:s, s:I, s:I, s:I, s:I, s:I, s:I}", "type", "create_topic", "name",
                  name, "partitions", (json_int_t)tc->partitions, "durability",
                  bcfg_durability_name(tc->durability), "retention_ms",
                  (json_int_t)tc->retention_ms, "retention_bytes", (json_int_t)tc->retention_bytes,
                  "segment_bytes", (json_int_t)tc->segment_bytes, "max_message_bytes",
                  (json_int_t)tc->max_message_bytes, "time_ms", (json_int_t)now, "replicas",
                  (json_int_t)(tc->replicas ? tc->replicas : 1));
    char *text = rec ? json_dumps(rec, JSON_COMPACT) : NULL;
    json_decref(rec);
    return text;
}

struct tcreate {
    meta_done_fn done;
    void *arg;
    char name[VERITY_TOPIC_NAME_MAX + 1];
};

static void tcreate_done(struct broker *b, void *arg, int err)
{
    struct tcreate *c = arg;
    struct topic *t = topic_find(b, c->name);
    if (!t || t->ready) {
        err = err ? err : VERITY_ECLOSED;
    } else if (err) {
        topic_remove(b, t);
    } else if ((err = topic_open_partitions(b, t)) == 0) {
        blog(BLOG_INFO, "topic_created", "topic=%s partitions=%" PRIu32 " durability=%s", t->name,
             t->cfg.partitions, bcfg_durability_name(t->cfg.durability));
    }
    c->done(b, c->arg, err);
    free(c);
}

static int create_start(struct broker *b, const char *name, const struct topic_cfg *tc,
                        meta_done_fn done, void *arg, char *msg, size_t cap, bool internal);

int topic_create_start(struct broker *b, const char *name, const struct topic_cfg *tc,
                       meta_done_fn done, void *arg, char *msg, size_t cap)
{
    return create_start(b, name, tc, done, arg, msg, cap, false);
}

/* issue 14: the broker's own internal topics (__audit, <tenant>~__audit). */
int topic_create_internal_start(struct broker *b, const char *name, const struct topic_cfg *tc,
                                meta_done_fn done, void *arg, char *msg, size_t cap)
{
    return create_start(b, name, tc, done, arg, msg, cap, true);
}

static int create_start(struct broker *b, const char *name, const struct topic_cfg *tc,
                        meta_done_fn done, void *arg, char *msg, size_t cap, bool internal)
{
    if (!codec_topic_name_ok(name, internal)) {
        snprintf(msg, cap, "invalid topic name");
        return VERITY_EINVAL;
    }
    if (topic_find(b, name)) {
        snprintf(msg, cap, "topic %s already exists", name);
        return VERITY_EEXIST;
    }
    /* Refused up front rather than created with partitions that cannot
     * open (EMFILE): a create is all or nothing. */
    int frc = ops_fds_check(b, tc->partitions, msg, cap);
    if (frc)
        return frc;
    int64_t now = now_ms();
    struct tcreate *c = calloc(1, sizeof *c);
    char *text = c ? create_record(name, tc, now) : NULL;
    struct topic *t = text ? topic_add(b, name, tc, now) : NULL;
    if (!t) {
        free(text);
        free(c);
        snprintf(msg, cap, "out of memory");
        return -ENOMEM;
    }
    c->done = done;
    c->arg = arg;
    snprintf(c->name, sizeof c->name, "%s", name);
    int rc = meta_append(b, text, tcreate_done, c);
    free(text);
    if (rc) {
        topic_remove(b, t);
        free(c);
        snprintf(msg, cap, "metadata log could not record the topic");
    }
    return rc;
}

static void create_done(struct broker *b, void *arg, int err)
{
    struct req *r = arg;
    const char *name = r->msg->env->create_topic_req->name;
    struct topic *t = topic_find(b, name);
    if (!t || t->ready) {
        req_fail(r, VERITY_ECLOSED, "topic changed while being created");
        return;
    }
    if (err) {
        blog(BLOG_ERROR, "topic_create_failed", "topic=%s error=%s", name, verity_errname(err));
        topic_remove(b, t);
        req_fail(r, err, "metadata log could not record the topic");
        return;
    }
    int rc = topic_open_partitions(b, t);
    if (rc) {
        req_fail(r, rc, "partitions could not be opened");
        return;
    }
    /* A partition that failed to open despite the check: say so instead of
     * "created" (the topic exists; its broken partitions answer with their
     * error at once, /ready and verity_partitions_in_error report them). */
    uint32_t failed = 0;
    int first_err = 0;
    for (uint32_t i = 0; i < t->cfg.partitions; i++) {
        /* cluster: a partition placed on other brokers is a stub, not a failure */
        if (t->parts[i] && t->parts[i]->error &&
            !(t->parts[i]->error == VERITY_ENOTLEADER && !t->parts[i]->log)) {
            if (!failed++)
                first_err = t->parts[i]->error;
        }
    }
    if (failed) {
        char why[512];
        snprintf(why, sizeof why,
                 "topic %s created but %" PRIu32 " of %" PRIu32
                 " partitions failed to open (first: %s, %s); delete it and create it again "
                 "once the cause is fixed",
                 t->name, failed, t->cfg.partitions, verity_errname(first_err),
                 verity_strerror(first_err));
        blog(BLOG_ERROR, "topic_create_partial", "topic=%s failed=%" PRIu32 " error=%s", t->name,
             failed, verity_errname(first_err));
        req_fail(r, first_err < 0 && first_err > -4096 ? VERITY_ELIMIT : first_err, why);
        return;
    }
    blog(BLOG_INFO, "topic_created", "topic=%s partitions=%" PRIu32 " durability=%s", t->name,
         t->cfg.partitions, bcfg_durability_name(t->cfg.durability));
    reply_topic(r, t, VERITY__ENVELOPE__BODY_CREATE_TOPIC_RESP);
}

void h_create_topic(struct req *r)
{
    struct broker *b = r->b;
    const Verity__CreateTopicRequest *q = r->msg->env->create_topic_req;
    char msg[300];
    struct topic_cfg tc;
    int rc = topic_cfg_from_wire(b, q->config, &tc, msg, sizeof msg);
    if (rc) {
        req_fail(r, rc, msg);
        return;
    }
    if (topic_find(b, q->name)) {
        snprintf(msg, sizeof msg, "topic %s already exists", q->name);
        req_fail(r, VERITY_EEXIST, msg);
        return;
    }
    if (b->n_topics >= b->cfg.max_topics) {
        snprintf(msg, sizeof msg, "%zu topics exist (max_topics)", b->n_topics);
        req_fail(r, VERITY_ELIMIT, msg);
        return;
    }
    /* All or nothing: refused up front when the partitions cannot all get
     * their descriptors, rather than created with some in EMFILE. */
    if ((rc = ops_fds_check(b, tc.partitions, msg, sizeof msg))) {
        req_fail(r, rc, msg);
        return;
    }
    int64_t now = now_ms();
    char *text = create_record(q->name, &tc, now);
    struct topic *t = text ? topic_add(b, q->name, &tc, now) : NULL;
    if (!t) {
        free(text);
        req_fail(r, -ENOMEM, NULL);
        return;
    }
    rc = meta_append(b, text, create_done, r);
    free(text);
    if (rc) {
        topic_remove(b, t);
        req_fail(r, rc, "metadata log could not record the topic");
    }
}

/* ---- DeleteTopic ------------------------------------------------------------- */

static void delete_done(struct broker *b, void *arg, int err)
{
    struct req *r = arg;
    const char *name = r->msg->env->delete_topic_req->name;
    struct topic *t = topic_find(b, name);
    if (!t || !t->deleting) {
        req_fail(r, VERITY_ECLOSED, "topic changed while being deleted");
        return;
    }
    if (err) {
        t->deleting = false;
        req_fail(r, err, "metadata log could not record the deletion");
        return;
    }
    for (uint32_t i = 0; i < t->cfg.partitions; i++) {
        (void)part_close(t->parts[i], VERITY_ENOTFOUND, false);
        t->parts[i] = NULL;
    }
    int rc = meta_remove_topic_dir(b, t->name);
    blog(rc ? BLOG_WARN : BLOG_INFO, "topic_deleted", "topic=%s dir_error=%s", t->name,
         verity_errname(rc));
    topic_remove(b, t);
    Verity__DeleteTopicResponse resp = VERITY__DELETE_TOPIC_RESPONSE__INIT;
    Verity__Envelope env = VERITY__ENVELOPE__INIT;
    env.body_case = VERITY__ENVELOPE__BODY_DELETE_TOPIC_RESP;
    env.delete_topic_resp = &resp;
    req_reply(r, &env, NULL, 0);
}

void h_delete_topic(struct req *r)
{
    struct broker *b = r->b;
    const char *name = r->msg->env->delete_topic_req->name;
    char msg[300];
    struct topic *t = topic_find_live(b, name);
    if (!t) {
        snprintf(msg, sizeof msg, "unknown topic %s", name);
        req_fail(r, VERITY_ENOTFOUND, msg);
        return;
    }
    json_t *rec = json_pack("{s:s, s:s, s:I}", "type", "delete_topic", "name", name, "time_ms",
                            (json_int_t)now_ms());
    char *text = rec ? json_dumps(rec, JSON_COMPACT) : NULL;
    json_decref(rec);
    if (!text) {
        req_fail(r, -ENOMEM, NULL);
        return;
    }
    int rc = meta_append(b, text, delete_done, r);
    free(text);
    if (rc) {
        req_fail(r, rc, "metadata log could not record the deletion");
        return;
    }
    t->deleting = true;
    /* Waiting fetches see the topic gone now. */
    for (uint32_t i = 0; i < t->cfg.partitions; i++) {
        struct partition *p = t->parts[i];
        while (p && !TAILQ_EMPTY(&p->fetchers))
            fetch_link_wake(TAILQ_FIRST(&p->fetchers), true);
    }
}

/* ---- InitProducer ------------------------------------------------------------ */

struct init_ctx {
    int64_t pid;
    int16_t epoch;
};

static void init_done(struct broker *b, void *arg, int err)
{
    struct req *r = arg;
    struct init_ctx *ic = r->ctx;
    if (err) {
        free(ic);
        r->ctx = NULL;
        req_fail(r, err, "metadata log could not record the producer");
        return;
    }
    (void)b;
    Verity__InitProducerResponse resp = VERITY__INIT_PRODUCER_RESPONSE__INIT;
    resp.producer_id = ic->pid;
    resp.producer_epoch = ic->epoch;
    blog(BLOG_DEBUG, "producer_initialized", "producer_id=%" PRId64 " epoch=%d", ic->pid,
         (int)ic->epoch);
    free(ic);
    r->ctx = NULL;
    Verity__Envelope env = VERITY__ENVELOPE__INIT;
    env.body_case = VERITY__ENVELOPE__BODY_INIT_PRODUCER_RESP;
    env.init_producer_resp = &resp;
    req_reply(r, &env, NULL, 0);
}

void h_init_producer(struct req *r)
{
    struct broker *b = r->b;
    const Verity__InitProducerRequest *q = r->msg->env->init_producer_req;
    char msg[200];
    int64_t pid = q->producer_id;
    int epoch = 0;
    if (pid == 0) {
        if (b->meta.n_producers >= b->cfg.max_producers) {
            snprintf(msg, sizeof msg, "%zu producer ids allocated (max_producers)",
                     b->meta.n_producers);
            req_fail(r, VERITY_ELIMIT, msg);
            return;
        }
        pid = (int64_t)b->meta.n_producers + 1;
    } else {
        int cur = meta_producer_epoch(b, pid);
        if (cur < 0) {
            snprintf(msg, sizeof msg, "unknown producer id %" PRId64, pid);
            req_fail(r, VERITY_ENOTFOUND, msg);
            return;
        }
        if (cur >= INT16_MAX) {
            snprintf(msg, sizeof msg,
                     "producer %" PRId64 " has used every epoch; init a new "
                     "producer id",
                     pid);
            req_fail(r, VERITY_ELIMIT, msg);
            return;
        }
        epoch = cur + 1;
    }
    struct init_ctx *ic = calloc(1, sizeof *ic);
    json_t *rec = json_pack("{s:s, s:I, s:i, s:I}", "type", "init_producer", "producer_id",
                            (json_int_t)pid, "epoch", epoch, "time_ms", (json_int_t)now_ms());
    char *text = rec ? json_dumps(rec, JSON_COMPACT) : NULL;
    json_decref(rec);
    /* Memory follows the log (issue 7 defect 9): room for pid first, then
     * the record, and only once it is in the log the new id or epoch. A
     * failed append changes nothing, so a retry gets the same id and epoch
     * and a restart replays exactly what memory held. meta_append writes
     * synchronously on this loop, so no other InitProducer can take the id
     * in between. */
    int rc = ic && text ? meta_producer_reserve(b, pid) : -ENOMEM;
    if (rc == 0) {
        ic->pid = pid;
        ic->epoch = (int16_t)epoch;
        r->ctx = ic;
        rc = meta_append(b, text, init_done, r);
        if (rc == 0) {
            int src = meta_producer_set(b, pid, (int16_t)epoch); /* reserved: cannot fail */
            VERITY_VERIFY(src == 0);
        }
    }
    free(text);
    if (rc) {
        free(ic);
        r->ctx = NULL;
        req_fail(r, rc, "metadata log could not record the producer");
    }
}

/* ---- ListOffsets ------------------------------------------------------------- */

void h_list_offsets(struct req *r)
{
    const Verity__ListOffsetsRequest *q = r->msg->env->list_offsets_req;
    size_t n = q->n_partitions;
    /* Replicated: offsets come from the primary, as fetches do (a backup's
     * committed prefix may be behind, and a reader taking its high
     * watermark for the end stops short). One partition asked of a backup:
     * a request-level NOT_LEADER naming the primary, which the client
     * follows; several: NOT_LEADER per partition. */
    struct partition *p1;
    uint32_t leader = 0;
    if (n == 1 && topic_partition(r->b, q->partitions[0]->topic, q->partitions[0]->partition,
                                  &p1, NULL, 0) == 0 &&
        cluster_part_writable(p1, &leader) == VERITY_ENOTLEADER) {
        char m[200];
        if (leader)
            snprintf(m, sizeof m, "not the primary of partition %" PRIu32 " (primary: node %" PRIu32
                     ")", p1->id, leader);
        else
            snprintf(m, sizeof m, "not the primary of partition %" PRIu32 " (primary not known "
                     "yet)", p1->id);
        req_fail_leader(r, leader, m);
        return;
    }
    Verity__ListOffsetsResult *res = calloc(n, sizeof *res);
    Verity__ListOffsetsResult **ptrs = calloc(n, sizeof *ptrs);
    char(*msgs)[200] = calloc(n, sizeof *msgs);
    if (!res || !ptrs || !msgs) {
        free(res);
        free(ptrs);
        free(msgs);
        req_fail(r, -ENOMEM, NULL);
        return;
    }
    for (size_t i = 0; i < n; i++) {
        const Verity__ListOffsetsPartition *e = q->partitions[i];
        Verity__ListOffsetsResult *o = &res[i];
        verity__list_offsets_result__init(o);
        ptrs[i] = o;
        o->topic = e->topic;
        o->partition = e->partition;
        struct partition *p;
        int rc = topic_partition(r->b, e->topic, e->partition, &p, msgs[i], sizeof msgs[i]);
        if (rc == 0 && cluster_part_writable(p, &leader) == VERITY_ENOTLEADER) {
            rc = VERITY_ENOTLEADER;
            snprintf(msgs[i], sizeof msgs[i],
                     "not the primary of partition %" PRIu32 " (primary: node %" PRIu32 ")", p->id,
                     leader);
        }
        if (rc == 0 && !p->log) {
            rc = p->error ? p->error : VERITY_EREADONLY;
            snprintf(msgs[i], sizeof msgs[i], "partition unavailable: %s", verity_strerror(rc));
        }
        if (rc == 0) {
            struct vlog_info info;
            vlog_get_info(p->log, &info);
            uint64_t hw = part_hw(p);
            o->start_offset = info.start_offset;
            o->high_watermark = hw;
            if (e->spec == VERITY__OFFSET_SPEC__OFFSET_EARLIEST) {
                o->offset = info.start_offset;
            } else if (e->spec == VERITY__OFFSET_SPEC__OFFSET_LATEST) {
                o->offset = hw;
            } else {
                uint64_t off = 0;
                rc = vlog_offset_for_time(p->log, e->timestamp_ms, &off);
                if (rc)
                    snprintf(msgs[i], sizeof msgs[i], "time index lookup failed: %s",
                             verity_strerror(rc));
                o->offset = off < hw ? off : hw;
            }
        }
        if (rc) {
            o->error = codec_err_to_wire(rc);
            o->error_message = msgs[i];
            r->failed_entry = true;
        }
    }
    Verity__ListOffsetsResponse resp = VERITY__LIST_OFFSETS_RESPONSE__INIT;
    resp.n_results = n;
    resp.results = ptrs;
    Verity__Envelope env = VERITY__ENVELOPE__INIT;
    env.body_case = VERITY__ENVELOPE__BODY_LIST_OFFSETS_RESP;
    env.list_offsets_resp = &resp;
    req_reply(r, &env, NULL, 0);
    free(res);
    free(ptrs);
    free(msgs);
}
