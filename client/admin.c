/*
 * verity_client: admin calls (topics, metadata, offsets) over one
 * connection owned by the client's I/O thread.
 *
 * Every call becomes a struct admin_op: the caller's arguments are copied
 * into it, it is posted to the loop, the loop thread encodes the request and
 * hands it to the connection, and the answer comes back to op_done on the
 * loop thread. op_done either calls the user's callback (async) or fills the
 * caller's cl_wait (sync) and frees the op. Reads are resent when the
 * connection drops; create and delete are not (the broker may have run
 * them), so they fail with the connection error instead.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "client/client_int.h"

struct verity_client {
    struct cl_loop loop;
    struct conn *conn;
    pthread_mutex_t mu;          /* protects the fields below */
    pthread_cond_t cv;
    bool ready;                  /* the connection is up */
    uint64_t attempts_failed;    /* connection attempts or losses so far */
    int last_err;
};

struct admin_op {
    struct verity_client *c;
    Verity__Envelope__BodyCase kind;
    char *name;
    struct verity_topic_config tcfg;
    bool include_internal;
    char **topics;
    size_t n_topics;
    uint32_t partition;
    enum verity_offset_spec spec;
    int64_t timestamp_ms;
    verity_admin_cb cb;          /* async */
    void *opaque;
    struct cl_wait *wait;        /* sync */
};

/* ---- connection events --------------------------------------------------- */

static void on_ready(void *arg)
{
    struct verity_client *c = arg;
    pthread_mutex_lock(&c->mu);
    c->ready = true;
    c->last_err = 0;
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);
}

static void on_down(void *arg, int err)
{
    struct verity_client *c = arg;
    pthread_mutex_lock(&c->mu);
    c->ready = false;
    c->last_err = err;
    if (!c->conn || !conn_rotating(c->conn))
        c->attempts_failed++; /* a whole round of the bootstrap list failed */
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);
}

static const struct conn_events client_events = {on_ready, on_down};

static void start_job(void *arg)
{
    struct verity_client *c = arg;
    conn_start(c->conn);
}

static void stop_job(void *arg)
{
    struct verity_client *c = arg;
    conn_free(c->conn);
    c->conn = NULL;
}

int verity_client_new(const struct verity_conn_config *cfg, struct verity_client **out)
{
    struct verity_client *c = calloc(1, sizeof *c);
    if (!c)
        return -ENOMEM;
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_mutex_init(&c->mu, NULL);
    pthread_cond_init(&c->cv, &ca);
    pthread_condattr_destroy(&ca);
    int rc = cl_loop_start(&c->loop, stop_job, c);
    if (rc)
        goto fail;
    rc = conn_new(c->loop.base, cfg, &client_events, c, &c->conn);
    if (rc == VERITY_ETLS) {
        char why[256], msg[300];
        conn_tls_reason(why, sizeof why);
        snprintf(msg, sizeof msg, "TLS: %s", why);
        cl_set_last_error(msg);
    }
    if (rc) {
        cl_loop_stop(&c->loop);
        goto fail;
    }
    rc = cl_loop_post(&c->loop, start_job, c);
    if (rc) {
        verity_client_free(c);
        return rc;
    }
    *out = c;
    return 0;
fail:
    pthread_cond_destroy(&c->cv);
    pthread_mutex_destroy(&c->mu);
    free(c);
    return rc;
}

int verity_client_connect(struct verity_client *c, int timeout_ms)
{
    struct timespec ts;
    int64_t deadline = cl_mono_ms() + (timeout_ms < 0 ? 0 : timeout_ms);
    ts.tv_sec = deadline / 1000;
    ts.tv_nsec = (deadline % 1000) * 1000000;
    pthread_mutex_lock(&c->mu);
    uint64_t failed0 = c->attempts_failed;
    int rc = 0;
    while (!c->ready) {
        if (c->attempts_failed != failed0) {
            rc = c->last_err ? c->last_err : -ECONNREFUSED;
            break;
        }
        if (timeout_ms >= 0 && pthread_cond_timedwait(&c->cv, &c->mu, &ts) != 0) {
            rc = c->ready ? 0 : (c->last_err ? c->last_err : VERITY_ETIMEOUT);
            break;
        }
        if (timeout_ms < 0)
            pthread_cond_wait(&c->cv, &c->mu);
    }
    pthread_mutex_unlock(&c->mu);
    if (rc == VERITY_ETLS) {
        char why[256], msg[400];
        conn_tls_reason(why, sizeof why);
        snprintf(msg, sizeof msg, "TLS handshake failed: %s", why);
        cl_set_last_error(msg);
    }
    return rc;
}

void verity_client_free(struct verity_client *c)
{
    if (!c)
        return;
    cl_loop_stop(&c->loop);
    if (c->conn)
        conn_free(c->conn);
    pthread_cond_destroy(&c->cv);
    pthread_mutex_destroy(&c->mu);
    free(c);
}

/* ---- operations ---------------------------------------------------------- */

static void op_free(struct admin_op *op)
{
    free(op->name);
    for (size_t i = 0; i < op->n_topics; i++)
        free(op->topics[i]);
    free(op->topics);
    free(op);
}

static int topics_from_wire(Verity__TopicMetadata *const *m, size_t n,
                            struct verity_topic_info **out)
{
    *out = NULL;
    if (n == 0)
        return 0;
    struct verity_topic_info *t = calloc(n, sizeof *t);
    if (!t)
        return -ENOMEM;
    for (size_t i = 0; i < n; i++) {
        int rc = cl_topic_info_from_wire(m[i], &t[i]);
        if (rc) {
            verity_topic_info_free(t, i);
            return rc;
        }
    }
    *out = t;
    return 0;
}

/* Fills res from a successful answer; returns 0 or an error. */
static int parse_answer(struct admin_op *op, const Verity__Envelope *env,
                        struct verity_admin_result *res, const char **msg)
{
    switch (op->kind) {
    case VERITY__ENVELOPE__BODY_CREATE_TOPIC_REQ:
        if (!env->create_topic_resp->topic)
            return VERITY_EPROTO;
        res->topic_count = 1;
        return topics_from_wire(&env->create_topic_resp->topic, 1, &res->topics);
    case VERITY__ENVELOPE__BODY_DESCRIBE_TOPIC_REQ:
        if (!env->describe_topic_resp->topic)
            return VERITY_EPROTO;
        res->topic_count = 1;
        return topics_from_wire(&env->describe_topic_resp->topic, 1, &res->topics);
    case VERITY__ENVELOPE__BODY_LIST_TOPICS_REQ:
        res->topic_count = env->list_topics_resp->n_topics;
        return topics_from_wire(env->list_topics_resp->topics, res->topic_count, &res->topics);
    case VERITY__ENVELOPE__BODY_METADATA_REQ:
        res->topic_count = env->metadata_resp->n_topics;
        res->node_id = env->metadata_resp->node_id;
        return topics_from_wire(env->metadata_resp->topics, res->topic_count, &res->topics);
    case VERITY__ENVELOPE__BODY_LIST_OFFSETS_REQ: {
        const Verity__ListOffsetsResponse *r = env->list_offsets_resp;
        if (r->n_results != 1 || !r->results[0]->topic ||
            strcmp(r->results[0]->topic, op->name) != 0 ||
            r->results[0]->partition != op->partition)
            return VERITY_EPROTO;
        const Verity__ListOffsetsResult *x = r->results[0];
        int err = codec_err_from_wire(x->error);
        if (err) {
            if (x->error_message && x->error_message[0])
                *msg = x->error_message;
            return err;
        }
        res->offset = x->offset;
        res->start_offset = x->start_offset;
        res->high_watermark = x->high_watermark;
        return 0;
    }
    default:
        return 0;
    }
}

static void op_done(void *arg, int err, const char *msg, const Verity__Envelope *env,
                    uint8_t **payload, size_t payload_len)
{
    struct admin_op *op = arg;
    struct verity_admin_result res = {.err = err, .error_message = msg ? msg : ""};
    (void)payload;
    (void)payload_len;
    if (err == 0) {
        const char *m2 = NULL;
        res.err = parse_answer(op, env, &res, &m2);
        if (res.err) {
            res.error_message = m2 ? m2 : verity_strerror(res.err);
            verity_topic_info_free(res.topics, res.topic_count);
            res.topics = NULL;
            res.topic_count = 0;
        }
    }
    if (op->wait) {
        struct cl_wait *w = op->wait;
        w->topics = res.topics;
        w->topic_count = res.topic_count;
        w->offsets.offset = res.offset;
        w->offsets.start_offset = res.start_offset;
        w->offsets.high_watermark = res.high_watermark;
        w->node_id = res.node_id;
        op_free(op);
        cl_wait_signal(w, res.err, res.error_message);
        return;
    }
    op->cb(op->opaque, &res);
    verity_topic_info_free(res.topics, res.topic_count);
    op_free(op);
}

static void op_send(void *arg)
{
    struct admin_op *op = arg;
    Verity__Envelope env = VERITY__ENVELOPE__INIT;
    Verity__CreateTopicRequest create = VERITY__CREATE_TOPIC_REQUEST__INIT;
    Verity__TopicConfig tc = VERITY__TOPIC_CONFIG__INIT;
    Verity__DeleteTopicRequest del = VERITY__DELETE_TOPIC_REQUEST__INIT;
    Verity__ListTopicsRequest list = VERITY__LIST_TOPICS_REQUEST__INIT;
    Verity__DescribeTopicRequest desc = VERITY__DESCRIBE_TOPIC_REQUEST__INIT;
    Verity__MetadataRequest meta = VERITY__METADATA_REQUEST__INIT;
    Verity__ListOffsetsRequest lo = VERITY__LIST_OFFSETS_REQUEST__INIT;
    Verity__ListOffsetsPartition lop = VERITY__LIST_OFFSETS_PARTITION__INIT;
    Verity__ListOffsetsPartition *lops[1] = {&lop};
    unsigned flags = CONN_RETRY_ON_RESET;

    env.body_case = op->kind;
    switch (op->kind) {
    case VERITY__ENVELOPE__BODY_CREATE_TOPIC_REQ:
        tc.partitions = op->tcfg.partitions;
        tc.durability = (Verity__Durability)op->tcfg.durability;
        tc.retention_ms = op->tcfg.retention_ms;
        tc.retention_bytes = op->tcfg.retention_bytes;
        tc.segment_bytes = op->tcfg.segment_bytes;
        tc.max_message_bytes = op->tcfg.max_message_bytes;
        tc.replication_factor = op->tcfg.replication_factor;
        create.name = op->name;
        create.config = &tc;
        env.create_topic_req = &create;
        flags = 0;
        break;
    case VERITY__ENVELOPE__BODY_DELETE_TOPIC_REQ:
        del.name = op->name;
        env.delete_topic_req = &del;
        flags = 0;
        break;
    case VERITY__ENVELOPE__BODY_LIST_TOPICS_REQ:
        list.include_internal = op->include_internal;
        env.list_topics_req = &list;
        break;
    case VERITY__ENVELOPE__BODY_DESCRIBE_TOPIC_REQ:
        desc.name = op->name;
        env.describe_topic_req = &desc;
        break;
    case VERITY__ENVELOPE__BODY_METADATA_REQ:
        meta.topics = op->topics;
        meta.n_topics = op->n_topics;
        env.metadata_req = &meta;
        break;
    case VERITY__ENVELOPE__BODY_LIST_OFFSETS_REQ:
        lop.topic = op->name;
        lop.partition = op->partition;
        lop.spec = (Verity__OffsetSpec)op->spec;
        lop.timestamp_ms = op->timestamp_ms;
        lo.partitions = lops;
        lo.n_partitions = 1;
        env.list_offsets_req = &lo;
        break;
    default:
        break;
    }
    int rc = conn_request(op->c->conn, &env, NULL, 0, 0, flags, op_done, op);
    if (rc)
        op_done(op, rc, verity_strerror(rc), NULL, NULL, 0);
}

/* Posts op; on failure frees it and returns the error. */
static int op_submit(struct admin_op *op)
{
    int rc = cl_loop_post(&op->c->loop, op_send, op);
    if (rc)
        op_free(op);
    return rc;
}

static struct admin_op *op_new(struct verity_client *c, Verity__Envelope__BodyCase kind,
                               const char *name, verity_admin_cb cb, void *opaque)
{
    struct admin_op *op = calloc(1, sizeof *op);
    if (!op)
        return NULL;
    op->c = c;
    op->kind = kind;
    op->cb = cb;
    op->opaque = opaque;
    if (name && !(op->name = strdup(name))) {
        free(op);
        return NULL;
    }
    return op;
}

/* Runs op synchronously: returns its error; *w holds the result. */
static int op_run_sync(struct admin_op *op, struct cl_wait *w)
{
    if (cl_loop_in_thread(&op->c->loop)) {
        op_free(op);
        cl_set_last_error("synchronous call from a libverity callback");
        return VERITY_EINVAL;
    }
    op->wait = w;
    int rc = op_submit(op);
    if (rc == 0)
        rc = cl_wait_for(w, -1);
    cl_set_last_error(rc ? (w->msg[0] ? w->msg : verity_strerror(rc)) : "");
    return rc;
}

static int check_name(const char *name, bool internal)
{
    if (!codec_topic_name_ok(name, internal)) {
        cl_set_last_error("invalid topic name: 1-200 bytes of [A-Za-z0-9._-], not . or .., "
                          "not starting with __");
        return VERITY_EINVAL;
    }
    return 0;
}

/* ---- create / delete ---------------------------------------------------- */

static struct admin_op *create_op(struct verity_client *c, const char *name,
                                  const struct verity_topic_config *cfg, verity_admin_cb cb,
                                  void *opaque)
{
    struct admin_op *op = op_new(c, VERITY__ENVELOPE__BODY_CREATE_TOPIC_REQ, name, cb, opaque);
    if (op && cfg)
        op->tcfg = *cfg;
    return op;
}

int verity_topic_create(struct verity_client *c, const char *name,
                        const struct verity_topic_config *cfg, struct verity_topic_info **out)
{
    struct cl_wait w;
    int rc = check_name(name, false);
    if (out)
        *out = NULL;
    if (rc)
        return rc;
    struct admin_op *op = create_op(c, name, cfg, NULL, NULL);
    if (!op)
        return -ENOMEM;
    cl_wait_init(&w);
    rc = op_run_sync(op, &w);
    if (rc == 0 && out) {
        *out = w.topics;
        w.topics = NULL;
    }
    verity_topic_info_free(w.topics, w.topic_count);
    cl_wait_deinit(&w);
    return rc;
}

int verity_topic_create_async(struct verity_client *c, const char *name,
                              const struct verity_topic_config *cfg, verity_admin_cb cb,
                              void *opaque)
{
    if (!cb || check_name(name, false))
        return VERITY_EINVAL;
    struct admin_op *op = create_op(c, name, cfg, cb, opaque);
    return op ? op_submit(op) : -ENOMEM;
}

int verity_topic_delete(struct verity_client *c, const char *name)
{
    struct cl_wait w;
    int rc = check_name(name, true);
    if (rc)
        return rc;
    struct admin_op *op = op_new(c, VERITY__ENVELOPE__BODY_DELETE_TOPIC_REQ, name, NULL, NULL);
    if (!op)
        return -ENOMEM;
    cl_wait_init(&w);
    rc = op_run_sync(op, &w);
    cl_wait_deinit(&w);
    return rc;
}

int verity_topic_delete_async(struct verity_client *c, const char *name, verity_admin_cb cb,
                              void *opaque)
{
    if (!cb || check_name(name, true))
        return VERITY_EINVAL;
    struct admin_op *op = op_new(c, VERITY__ENVELOPE__BODY_DELETE_TOPIC_REQ, name, cb, opaque);
    return op ? op_submit(op) : -ENOMEM;
}

/* ---- list / describe / metadata ----------------------------------------- */

int verity_topic_list(struct verity_client *c, bool include_internal,
                      struct verity_topic_info **out, size_t *n_out)
{
    struct cl_wait w;
    *out = NULL;
    *n_out = 0;
    struct admin_op *op = op_new(c, VERITY__ENVELOPE__BODY_LIST_TOPICS_REQ, NULL, NULL, NULL);
    if (!op)
        return -ENOMEM;
    op->include_internal = include_internal;
    cl_wait_init(&w);
    int rc = op_run_sync(op, &w);
    if (rc == 0) {
        *out = w.topics;
        *n_out = w.topic_count;
    }
    cl_wait_deinit(&w);
    return rc;
}

int verity_topic_list_async(struct verity_client *c, bool include_internal, verity_admin_cb cb,
                            void *opaque)
{
    if (!cb)
        return VERITY_EINVAL;
    struct admin_op *op = op_new(c, VERITY__ENVELOPE__BODY_LIST_TOPICS_REQ, NULL, cb, opaque);
    if (!op)
        return -ENOMEM;
    op->include_internal = include_internal;
    return op_submit(op);
}

int verity_topic_describe(struct verity_client *c, const char *name,
                          struct verity_topic_info **out)
{
    struct cl_wait w;
    *out = NULL;
    int rc = check_name(name, true);
    if (rc)
        return rc;
    struct admin_op *op = op_new(c, VERITY__ENVELOPE__BODY_DESCRIBE_TOPIC_REQ, name, NULL, NULL);
    if (!op)
        return -ENOMEM;
    cl_wait_init(&w);
    rc = op_run_sync(op, &w);
    if (rc == 0)
        *out = w.topics;
    else
        verity_topic_info_free(w.topics, w.topic_count);
    cl_wait_deinit(&w);
    return rc;
}

int verity_topic_describe_async(struct verity_client *c, const char *name, verity_admin_cb cb,
                                void *opaque)
{
    if (!cb || check_name(name, true))
        return VERITY_EINVAL;
    struct admin_op *op = op_new(c, VERITY__ENVELOPE__BODY_DESCRIBE_TOPIC_REQ, name, cb, opaque);
    return op ? op_submit(op) : -ENOMEM;
}

static struct admin_op *metadata_op(struct verity_client *c, const char *const *topics,
                                    size_t n, verity_admin_cb cb, void *opaque)
{
    struct admin_op *op = op_new(c, VERITY__ENVELOPE__BODY_METADATA_REQ, NULL, cb, opaque);
    if (!op)
        return NULL;
    if (n > 0) {
        op->topics = calloc(n, sizeof *op->topics);
        if (!op->topics) {
            op_free(op);
            return NULL;
        }
        for (size_t i = 0; i < n; i++, op->n_topics++) {
            if (!(op->topics[i] = strdup(topics[i]))) {
                op_free(op);
                return NULL;
            }
        }
    }
    return op;
}

int verity_metadata(struct verity_client *c, const char *const *topics, size_t n,
                    struct verity_topic_info **out, size_t *n_out, uint32_t *node_id_out)
{
    struct cl_wait w;
    *out = NULL;
    *n_out = 0;
    for (size_t i = 0; i < n; i++) {
        int rc = check_name(topics[i], true);
        if (rc)
            return rc;
    }
    struct admin_op *op = metadata_op(c, topics, n, NULL, NULL);
    if (!op)
        return -ENOMEM;
    cl_wait_init(&w);
    int rc = op_run_sync(op, &w);
    if (rc == 0) {
        *out = w.topics;
        *n_out = w.topic_count;
        if (node_id_out)
            *node_id_out = w.node_id;
    }
    cl_wait_deinit(&w);
    return rc;
}

int verity_metadata_async(struct verity_client *c, const char *const *topics, size_t n,
                          verity_admin_cb cb, void *opaque)
{
    if (!cb)
        return VERITY_EINVAL;
    for (size_t i = 0; i < n; i++)
        if (check_name(topics[i], true))
            return VERITY_EINVAL;
    struct admin_op *op = metadata_op(c, topics, n, cb, opaque);
    return op ? op_submit(op) : -ENOMEM;
}

/* ---- offsets -------------------------------------------------------------- */

static struct admin_op *offsets_op(struct verity_client *c, const char *topic, uint32_t partition,
                                   enum verity_offset_spec spec, int64_t timestamp_ms,
                                   verity_admin_cb cb, void *opaque)
{
    struct admin_op *op = op_new(c, VERITY__ENVELOPE__BODY_LIST_OFFSETS_REQ, topic, cb, opaque);
    if (op) {
        op->partition = partition;
        op->spec = spec;
        op->timestamp_ms = timestamp_ms;
    }
    return op;
}

int verity_list_offsets(struct verity_client *c, const char *topic, uint32_t partition,
                        enum verity_offset_spec spec, int64_t timestamp_ms,
                        struct verity_offsets *out)
{
    struct cl_wait w;
    int rc = check_name(topic, true);
    if (rc)
        return rc;
    if ((unsigned)spec > VERITY_OFFSET_TIMESTAMP)
        return VERITY_EINVAL;
    struct admin_op *op = offsets_op(c, topic, partition, spec, timestamp_ms, NULL, NULL);
    if (!op)
        return -ENOMEM;
    cl_wait_init(&w);
    rc = op_run_sync(op, &w);
    if (rc == 0)
        *out = w.offsets;
    cl_wait_deinit(&w);
    return rc;
}

int verity_list_offsets_async(struct verity_client *c, const char *topic, uint32_t partition,
                              enum verity_offset_spec spec, int64_t timestamp_ms,
                              verity_admin_cb cb, void *opaque)
{
    if (!cb || check_name(topic, true) || (unsigned)spec > VERITY_OFFSET_TIMESTAMP)
        return VERITY_EINVAL;
    struct admin_op *op = offsets_op(c, topic, partition, spec, timestamp_ms, cb, opaque);
    return op ? op_submit(op) : -ENOMEM;
}
