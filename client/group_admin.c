/*
 * verity_group_admin: the group administration calls (create, delete, list,
 * describe, pending, reset) over one connection owned by the handle's I/O
 * thread, built like verity_client (client/admin.c): every call becomes a
 * gadmin_op holding copies of its arguments, posted to the loop; the loop
 * thread encodes the request and hands it to the connection; the answer is
 * converted on the loop thread (group_util.c) and handed to the waiting
 * caller through a cl_wait. Reads are resent when the connection drops;
 * create, delete and reset are not (the broker may have run them).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "client/group_int.h"


struct verity_group_admin {
    struct cl_loop loop;
    struct conn *conn;
    pthread_mutex_t mu;           /* protects the fields below */
    pthread_cond_t cv;
    bool ready;
    uint64_t attempts_failed;
    int last_err;
};

struct gadmin_op {
    struct verity_group_admin *a;
    Verity__Envelope__BodyCase kind;
    char *name;
    /* create */
    enum verity_group_mode mode;
    char **topics;
    size_t n_topics;
    int64_t lease_ms, session_ms;
    uint32_t max_deliveries, n_backoff, pending_max;
    int64_t backoff_ms[VERITY_GROUP_BACKOFF_MAX];
    char *dlq_topic;
    /* create, reset */
    enum verity_group_start start;
    int64_t arg;
    struct verity_group_offset *offsets;
    size_t n_offsets;
    /* pending */
    uint64_t member_id;
    uint32_t max;
    bool kafka; /* describe: the Kafka classic group */
    int64_t min_age_ms;
    /* results (loop thread fills, caller takes) */
    struct verity_group_info *infos;
    size_t n_infos;
    struct verity_group_offset *res_offsets;
    size_t n_res_offsets;
    struct verity_group_pending_entry *pending;
    size_t n_pending;
    uint64_t total;
    struct cl_wait wait;
};

/* ---- connection ---------------------------------------------------------- */

static void on_ready(void *arg)
{
    struct verity_group_admin *a = arg;
    pthread_mutex_lock(&a->mu);
    a->ready = true;
    a->last_err = 0;
    pthread_cond_broadcast(&a->cv);
    pthread_mutex_unlock(&a->mu);
}

static void on_down(void *arg, int err)
{
    struct verity_group_admin *a = arg;
    pthread_mutex_lock(&a->mu);
    a->ready = false;
    a->last_err = err;
    if (!a->conn || !conn_rotating(a->conn))
        a->attempts_failed++; /* a whole round of the bootstrap list failed */
    pthread_cond_broadcast(&a->cv);
    pthread_mutex_unlock(&a->mu);
}

static const struct conn_events admin_events = {on_ready, on_down};

static void start_job(void *arg)
{
    struct verity_group_admin *a = arg;
    conn_start(a->conn);
}

static void stop_job(void *arg)
{
    struct verity_group_admin *a = arg;
    conn_free(a->conn);
    a->conn = NULL;
}

int verity_group_admin_new(const struct verity_conn_config *cfg, struct verity_group_admin **out)
{
    struct verity_group_admin *a = calloc(1, sizeof *a);
    if (!a)
        return -ENOMEM;
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_mutex_init(&a->mu, NULL);
    pthread_cond_init(&a->cv, &ca);
    pthread_condattr_destroy(&ca);
    int rc = cl_loop_start(&a->loop, stop_job, a);
    if (rc == 0) {
        rc = conn_new(a->loop.base, cfg, &admin_events, a, &a->conn);
        if (rc == 0)
            rc = cl_loop_post(&a->loop, start_job, a);
        if (rc)
            cl_loop_stop(&a->loop); /* stop_job frees the connection */
    }
    if (rc) {
        pthread_cond_destroy(&a->cv);
        pthread_mutex_destroy(&a->mu);
        free(a);
        return rc;
    }
    *out = a;
    return 0;
}

int verity_group_admin_connect(struct verity_group_admin *a, int timeout_ms)
{
    int64_t deadline = cl_mono_ms() + (timeout_ms < 0 ? 0 : timeout_ms);
    struct timespec ts = {deadline / 1000, (deadline % 1000) * 1000000};
    pthread_mutex_lock(&a->mu);
    uint64_t failed0 = a->attempts_failed;
    int rc = 0;
    while (!a->ready) {
        if (a->attempts_failed != failed0) {
            rc = a->last_err ? a->last_err : -ECONNREFUSED;
            break;
        }
        if (timeout_ms < 0) {
            pthread_cond_wait(&a->cv, &a->mu);
        } else if (pthread_cond_timedwait(&a->cv, &a->mu, &ts) != 0) {
            rc = a->ready ? 0 : a->last_err ? a->last_err : VERITY_ETIMEOUT;
            break;
        }
    }
    pthread_mutex_unlock(&a->mu);
    return rc;
}

void verity_group_admin_free(struct verity_group_admin *a)
{
    if (!a)
        return;
    cl_loop_stop(&a->loop);
    pthread_cond_destroy(&a->cv);
    pthread_mutex_destroy(&a->mu);
    free(a);
}

/* ---- operations ------------------------------------------------------------ */

static void op_free(struct gadmin_op *op)
{
    free(op->name);
    for (size_t i = 0; i < op->n_topics; i++)
        free(op->topics[i]);
    free(op->topics);
    free(op->dlq_topic);
    verity_group_offsets_free(op->offsets, op->n_offsets);
    verity_group_info_free(op->infos, op->n_infos);
    verity_group_offsets_free(op->res_offsets, op->n_res_offsets);
    verity_group_pending_free(op->pending, op->n_pending);
    cl_wait_deinit(&op->wait);
    free(op);
}

static struct gadmin_op *op_new(struct verity_group_admin *a, Verity__Envelope__BodyCase kind,
                                const char *name)
{
    struct gadmin_op *op = calloc(1, sizeof *op);
    if (!op)
        return NULL;
    cl_wait_init(&op->wait);
    op->a = a;
    op->kind = kind;
    if (name && !(op->name = strdup(name))) {
        op_free(op);
        return NULL;
    }
    return op;
}

/* Converts a successful answer into op's results (loop thread). */
static int parse_answer(struct gadmin_op *op, const Verity__Envelope *env)
{
    switch (op->kind) {
    case VERITY__ENVELOPE__BODY_CREATE_GROUP_REQ: {
        const Verity__CreateGroupResponse *r = env->create_group_resp;
        op->n_res_offsets = r->n_start_offsets;
        return gw_offsets_from_wire(r->start_offsets, r->n_start_offsets, &op->res_offsets);
    }
    case VERITY__ENVELOPE__BODY_RESET_GROUP_REQ: {
        const Verity__ResetGroupResponse *r = env->reset_group_resp;
        op->n_res_offsets = r->n_offsets;
        return gw_offsets_from_wire(r->offsets, r->n_offsets, &op->res_offsets);
    }
    case VERITY__ENVELOPE__BODY_LIST_GROUPS_REQ: {
        const Verity__ListGroupsResponse *r = env->list_groups_resp;
        if (r->n_groups == 0)
            return 0;
        op->infos = calloc(r->n_groups, sizeof *op->infos);
        if (!op->infos)
            return -ENOMEM;
        for (size_t i = 0; i < r->n_groups; i++) {
            int rc = gw_info_from_summary(r->groups[i], &op->infos[i]);
            if (rc)
                return rc;
            op->n_infos = i + 1;
        }
        return 0;
    }
    case VERITY__ENVELOPE__BODY_DESCRIBE_GROUP_REQ: {
        const Verity__DescribeGroupResponse *r = env->describe_group_resp;
        if (!r->group)
            return VERITY_EPROTO;
        op->infos = calloc(1, sizeof *op->infos);
        if (!op->infos)
            return -ENOMEM;
        int rc = gw_info_from_description(r->group, op->infos);
        if (rc == 0)
            op->n_infos = 1;
        return rc;
    }
    case VERITY__ENVELOPE__BODY_GROUP_PENDING_REQ: {
        const Verity__GroupPendingResponse *r = env->group_pending_resp;
        op->total = r->total;
        op->n_pending = r->n_entries;
        return gw_pending_from_wire(r->entries, r->n_entries, &op->pending);
    }
    default:
        return 0;
    }
}

static void op_done(void *arg, int err, const char *msg, const Verity__Envelope *env,
                    uint8_t **payload, size_t payload_len)
{
    struct gadmin_op *op = arg;
    (void)payload;
    (void)payload_len;
    if (err == 0) {
        err = parse_answer(op, env);
        msg = err ? verity_strerror(err) : "";
    }
    cl_wait_signal(&op->wait, err, msg);
}

/* Wire positions for a create / reset (loop thread); freed by the caller. */
struct wire_pos {
    Verity__GroupPosition pos;
    Verity__GroupPartitionOffset *offs;
    Verity__GroupPartitionOffset **offp;
};

static int pos_build(const struct gadmin_op *op, struct wire_pos *w)
{
    verity__group_position__init(&w->pos);
    w->pos.start = gw_start_to_wire(op->start);
    if (op->start == VERITY_GROUP_START_OFFSET)
        w->pos.offset = (uint64_t)op->arg;
    if (op->start == VERITY_GROUP_START_TIME)
        w->pos.timestamp_ms = op->arg;
    w->offs = calloc(op->n_offsets ? op->n_offsets : 1, sizeof *w->offs);
    w->offp = calloc(op->n_offsets ? op->n_offsets : 1, sizeof *w->offp);
    if (!w->offs || !w->offp)
        return -ENOMEM;
    for (size_t i = 0; i < op->n_offsets; i++) {
        verity__group_partition_offset__init(&w->offs[i]);
        w->offs[i].topic = op->offsets[i].topic;
        w->offs[i].partition = op->offsets[i].partition;
        w->offs[i].offset = op->offsets[i].offset;
        w->offp[i] = &w->offs[i];
    }
    w->pos.offsets = w->offp;
    w->pos.n_offsets = op->n_offsets;
    return 0;
}

static void op_send(void *arg)
{
    struct gadmin_op *op = arg;
    Verity__Envelope env = VERITY__ENVELOPE__INIT;
    Verity__CreateGroupRequest create = VERITY__CREATE_GROUP_REQUEST__INIT;
    Verity__GroupConfig gc = VERITY__GROUP_CONFIG__INIT;
    Verity__DeleteGroupRequest del = VERITY__DELETE_GROUP_REQUEST__INIT;
    Verity__ListGroupsRequest list = VERITY__LIST_GROUPS_REQUEST__INIT;
    Verity__DescribeGroupRequest desc = VERITY__DESCRIBE_GROUP_REQUEST__INIT;
    Verity__GroupPendingRequest pend = VERITY__GROUP_PENDING_REQUEST__INIT;
    Verity__ResetGroupRequest reset = VERITY__RESET_GROUP_REQUEST__INIT;
    struct wire_pos wp = {0};
    unsigned flags = CONN_RETRY_ON_RESET;
    int rc = 0;

    env.body_case = op->kind;
    switch (op->kind) {
    case VERITY__ENVELOPE__BODY_CREATE_GROUP_REQ:
        gc.mode = gw_mode_to_wire(op->mode);
        gc.topics = op->topics;
        gc.n_topics = op->n_topics;
        gc.lease_ms = op->lease_ms;
        gc.session_ms = op->session_ms;
        gc.max_deliveries = op->max_deliveries;
        gc.backoff_ms = op->backoff_ms;
        gc.n_backoff_ms = op->n_backoff;
        gc.dlq_topic = op->dlq_topic ? op->dlq_topic : "";
        gc.pending_max = op->pending_max;
        rc = pos_build(op, &wp);
        create.group = op->name;
        create.config = &gc;
        create.start = &wp.pos;
        env.create_group_req = &create;
        flags = 0;
        break;
    case VERITY__ENVELOPE__BODY_DELETE_GROUP_REQ:
        del.group = op->name;
        env.delete_group_req = &del;
        flags = 0;
        break;
    case VERITY__ENVELOPE__BODY_LIST_GROUPS_REQ:
        env.list_groups_req = &list;
        break;
    case VERITY__ENVELOPE__BODY_DESCRIBE_GROUP_REQ:
        desc.group = op->name;
        desc.kafka = op->kafka;
        env.describe_group_req = &desc;
        break;
    case VERITY__ENVELOPE__BODY_GROUP_PENDING_REQ:
        pend.group = op->name;
        pend.member_id = op->member_id;
        pend.max_entries = op->max;
        pend.min_age_ms = op->min_age_ms;
        env.group_pending_req = &pend;
        break;
    case VERITY__ENVELOPE__BODY_RESET_GROUP_REQ:
        rc = pos_build(op, &wp);
        reset.group = op->name;
        reset.position = &wp.pos;
        env.reset_group_req = &reset;
        flags = 0;
        break;
    default:
        rc = VERITY_EINVAL;
        break;
    }
    if (rc == 0)
        rc = conn_request(op->a->conn, &env, NULL, 0, 0, flags, op_done, op);
    free(wp.offs);
    free(wp.offp);
    if (rc)
        op_done(op, rc, verity_strerror(rc), NULL, NULL, 0);
}

/* Runs op and waits for its answer; the op stays the caller's (results in
 * it). Returns the error and sets the thread's last error message. */
static int op_run(struct gadmin_op *op)
{
    if (cl_loop_in_thread(&op->a->loop)) {
        cl_set_last_error("synchronous call from a libverity callback");
        return VERITY_EINVAL;
    }
    int rc = cl_loop_post(&op->a->loop, op_send, op);
    if (rc == 0)
        rc = cl_wait_for(&op->wait, -1);
    cl_set_last_error(rc ? (op->wait.msg[0] ? op->wait.msg : verity_strerror(rc)) : "");
    return rc;
}

static int bad_name(void)
{
    cl_set_last_error("invalid group name: 1-200 bytes of [A-Za-z0-9._-], not . or .., "
                      "not starting with __");
    return VERITY_EINVAL;
}

static int copy_offsets(struct gadmin_op *op, const struct verity_group_offset *o, size_t n)
{
    if (n == 0)
        return 0;
    if (!o)
        return VERITY_EINVAL;
    op->offsets = calloc(n, sizeof *op->offsets);
    if (!op->offsets)
        return -ENOMEM;
    for (size_t i = 0; i < n; i++) {
        if (!o[i].topic || !codec_topic_name_ok(o[i].topic, false))
            return VERITY_EINVAL;
        if (!(op->offsets[i].topic = strdup(o[i].topic)))
            return -ENOMEM;
        op->offsets[i].partition = o[i].partition;
        op->offsets[i].offset = o[i].offset;
        op->n_offsets = i + 1;
    }
    return 0;
}

static int check_start(enum verity_group_start start, int64_t arg)
{
    if ((unsigned)start > VERITY_GROUP_START_TIME || (start == VERITY_GROUP_START_OFFSET && arg < 0))
        return VERITY_EINVAL;
    return 0;
}

int verity_group_create(struct verity_group_admin *a, const char *name,
                        const struct verity_group_config *cfg, enum verity_group_start start,
                        int64_t arg, struct verity_group_offset **start_out, size_t *n_start_out)
{
    if (start_out)
        *start_out = NULL;
    if (n_start_out)
        *n_start_out = 0;
    if (!verity_group_name_ok(name))
        return bad_name();
    if (!cfg || cfg->n_topics == 0 || cfg->n_topics > VERITY_GROUP_TOPICS_MAX || !cfg->topics ||
        cfg->n_backoff > VERITY_GROUP_BACKOFF_MAX || check_start(start, arg) ||
        (unsigned)cfg->mode > VERITY_GROUP_SHARED ||
        (cfg->dlq_topic && cfg->dlq_topic[0] && !codec_topic_name_ok(cfg->dlq_topic, false))) {
        cl_set_last_error("invalid group configuration");
        return VERITY_EINVAL;
    }
    for (size_t i = 0; i < cfg->n_topics; i++) {
        if (!cfg->topics[i] || !codec_topic_name_ok(cfg->topics[i], false)) {
            cl_set_last_error("invalid topic name in the group configuration");
            return VERITY_EINVAL;
        }
    }
    struct gadmin_op *op = op_new(a, VERITY__ENVELOPE__BODY_CREATE_GROUP_REQ, name);
    if (!op)
        return -ENOMEM;
    int rc = 0;
    op->topics = calloc(cfg->n_topics, sizeof *op->topics);
    if (!op->topics)
        rc = -ENOMEM;
    for (size_t i = 0; rc == 0 && i < cfg->n_topics; i++) {
        if (!(op->topics[i] = strdup(cfg->topics[i])))
            rc = -ENOMEM;
        else
            op->n_topics = i + 1;
    }
    if (rc == 0 && cfg->dlq_topic && !(op->dlq_topic = strdup(cfg->dlq_topic)))
        rc = -ENOMEM;
    if (rc == 0) {
        op->mode = cfg->mode;
        op->lease_ms = cfg->lease_ms;
        op->session_ms = cfg->session_ms;
        op->max_deliveries = cfg->max_deliveries;
        op->n_backoff = cfg->n_backoff;
        memcpy(op->backoff_ms, cfg->backoff_ms, sizeof op->backoff_ms);
        op->pending_max = cfg->pending_max;
        op->start = start;
        op->arg = arg;
        rc = op_run(op);
    }
    if (rc == 0 && start_out) {
        *start_out = op->res_offsets;
        if (n_start_out)
            *n_start_out = op->n_res_offsets;
        op->res_offsets = NULL;
        op->n_res_offsets = 0;
    }
    op_free(op);
    return rc;
}

int verity_group_delete(struct verity_group_admin *a, const char *name)
{
    if (!verity_group_name_ok(name))
        return bad_name();
    struct gadmin_op *op = op_new(a, VERITY__ENVELOPE__BODY_DELETE_GROUP_REQ, name);
    if (!op)
        return -ENOMEM;
    int rc = op_run(op);
    op_free(op);
    return rc;
}

int verity_group_list(struct verity_group_admin *a, struct verity_group_info **out, size_t *n_out)
{
    *out = NULL;
    *n_out = 0;
    struct gadmin_op *op = op_new(a, VERITY__ENVELOPE__BODY_LIST_GROUPS_REQ, NULL);
    if (!op)
        return -ENOMEM;
    int rc = op_run(op);
    if (rc == 0) {
        *out = op->infos;
        *n_out = op->n_infos;
        op->infos = NULL;
        op->n_infos = 0;
    }
    op_free(op);
    return rc;
}

static int describe(struct verity_group_admin *a, const char *name, bool kafka,
                    struct verity_group_info **out)
{
    *out = NULL;
    /* Kafka group ids are any 1..255 bytes (the Kafka listener's limit). */
    if (kafka ? !name || !name[0] || strlen(name) > 255 : !verity_group_name_ok(name))
        return bad_name();
    struct gadmin_op *op = op_new(a, VERITY__ENVELOPE__BODY_DESCRIBE_GROUP_REQ, name);
    if (!op)
        return -ENOMEM;
    op->kafka = kafka;
    int rc = op_run(op);
    if (rc == 0) {
        *out = op->infos;
        op->infos = NULL;
        op->n_infos = 0;
    }
    op_free(op);
    return rc;
}

int verity_group_describe(struct verity_group_admin *a, const char *name,
                          struct verity_group_info **out)
{
    return describe(a, name, false, out);
}

int verity_group_describe_kafka(struct verity_group_admin *a, const char *name,
                                struct verity_group_info **out)
{
    return describe(a, name, true, out);
}

int verity_group_pending(struct verity_group_admin *a, const char *name, uint64_t member_id,
                         uint32_t max, int64_t min_age_ms,
                         struct verity_group_pending_entry **out, size_t *n_out,
                         uint64_t *total_out)
{
    *out = NULL;
    *n_out = 0;
    if (!verity_group_name_ok(name))
        return bad_name();
    if (min_age_ms < 0)
        return VERITY_EINVAL;
    struct gadmin_op *op = op_new(a, VERITY__ENVELOPE__BODY_GROUP_PENDING_REQ, name);
    if (!op)
        return -ENOMEM;
    op->member_id = member_id;
    op->max = max;
    op->min_age_ms = min_age_ms;
    int rc = op_run(op);
    if (rc == 0) {
        *out = op->pending;
        *n_out = op->n_pending;
        if (total_out)
            *total_out = op->total;
        op->pending = NULL;
        op->n_pending = 0;
    }
    op_free(op);
    return rc;
}

int verity_group_reset(struct verity_group_admin *a, const char *name,
                       enum verity_group_start start, int64_t arg,
                       const struct verity_group_offset *offsets, size_t n_offsets,
                       struct verity_group_offset **out, size_t *n_out)
{
    if (out)
        *out = NULL;
    if (n_out)
        *n_out = 0;
    if (!verity_group_name_ok(name))
        return bad_name();
    if (check_start(start, arg))
        return VERITY_EINVAL;
    struct gadmin_op *op = op_new(a, VERITY__ENVELOPE__BODY_RESET_GROUP_REQ, name);
    if (!op)
        return -ENOMEM;
    op->start = start;
    op->arg = arg;
    int rc = copy_offsets(op, offsets, n_offsets);
    if (rc == 0)
        rc = op_run(op);
    if (rc == 0 && out) {
        *out = op->res_offsets;
        if (n_out)
            *n_out = op->n_res_offsets;
        op->res_offsets = NULL;
        op->n_res_offsets = 0;
    }
    op_free(op);
    return rc;
}
