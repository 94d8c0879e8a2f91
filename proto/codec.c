/*
 * Frame codec of the Verity wire protocol (see codec.h for the frame layout
 * and docs/PROTOCOL.md for the whole protocol).
 *
 * Invariants: nothing is decoded before the frame prefix passed
 * codec_frame_peek; every protobuf-c decode goes through a capped allocator
 * whose running total never exceeds codec_msg.cap; validation walks only
 * counts the decoder produced, each bounded by items_max.
 */
#include <errno.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "proto/codec.h"
#include "storage/batch.h"
#include "verity/errors.h"
#include "verity/limits.h"

_Static_assert(CODEC_ENVELOPE_BYTES_MAX < VERITY_FRAME_BYTES_MAX, "envelope fits in a frame");
_Static_assert(VERITY_BATCH_BYTES_MAX + CODEC_PREFIX_SIZE < VERITY_FRAME_BYTES_MAX,
               "a maximal batch fits in a frame");

void codec_limits_default(struct codec_limits *lim)
{
    lim->frame_bytes_max = VERITY_FRAME_BYTES_MAX;
    lim->envelope_bytes_max = CODEC_ENVELOPE_BYTES_MAX;
    lim->decode_alloc_max = CODEC_DECODE_ALLOC_MAX;
    lim->batch_bytes_max = VERITY_BATCH_BYTES_MAX;
    lim->items_max = CODEC_ITEMS_MAX;
}

static const struct codec_limits *limits_or_default(const struct codec_limits *lim,
                                                    struct codec_limits *tmp)
{
    if (lim)
        return lim;
    codec_limits_default(tmp);
    return tmp;
}

static uint32_t get_be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

static void put_be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

int codec_frame_peek(const uint8_t *buf, size_t avail, const struct codec_limits *lim,
                     struct codec_frame *out)
{
    struct codec_limits tmp;
    lim = limits_or_default(lim, &tmp);
    if (avail < 4)
        return 1;
    uint32_t frame_length = get_be32(buf);
    if (frame_length > lim->frame_bytes_max)
        return VERITY_ELIMIT;
    if (frame_length < 4)
        return VERITY_EPROTO;
    if (avail < CODEC_PREFIX_SIZE)
        return 1;
    uint32_t env_length = get_be32(buf + 4);
    if (env_length > frame_length - 4)
        return VERITY_EPROTO;
    if (env_length > lim->envelope_bytes_max)
        return VERITY_ELIMIT;
    out->frame_length = frame_length;
    out->envelope_length = env_length;
    out->payload_length = frame_length - 4 - env_length;
    out->total = 4 + (size_t)frame_length;
    return 0;
}

/* ---- capped allocator ---------------------------------------------------- */

/* Each block carries its size in front so free can give the bytes back. */
struct block_hdr {
    size_t size;
    size_t pad; /* keeps the user pointer 16-byte aligned */
};

static void *capped_alloc(void *data, size_t size)
{
    struct codec_msg *m = data;
    if (size > m->cap || m->used > m->cap - size || size > SIZE_MAX - sizeof(struct block_hdr)) {
        m->over = true;
        return NULL;
    }
    struct block_hdr *h = malloc(sizeof(*h) + size);
    if (!h)
        return NULL;
    h->size = size;
    m->used += size;
    return h + 1;
}

static void capped_free(void *data, void *ptr)
{
    struct codec_msg *m = data;
    if (!ptr)
        return;
    struct block_hdr *h = (struct block_hdr *)ptr - 1;
    m->used = h->size <= m->used ? m->used - h->size : 0;
    free(h);
}

int codec_decode(const uint8_t *buf, size_t len, const struct codec_limits *lim,
                 struct codec_msg **out)
{
    struct codec_limits tmp;
    lim = limits_or_default(lim, &tmp);
    *out = NULL;
    if (len > lim->envelope_bytes_max)
        return VERITY_ELIMIT;
    struct codec_msg *m = calloc(1, sizeof(*m));
    if (!m)
        return -ENOMEM;
    m->cap = lim->decode_alloc_max;
    m->alloc.alloc = capped_alloc;
    m->alloc.free = capped_free;
    m->alloc.allocator_data = m;
    m->env = verity__envelope__unpack(&m->alloc, len, buf);
    if (!m->env) {
        int err = m->over ? VERITY_ELIMIT : VERITY_EPROTO;
        free(m);
        return err;
    }
    *out = m;
    return 0;
}

void codec_msg_free(struct codec_msg *msg)
{
    if (!msg)
        return;
    if (msg->env)
        verity__envelope__free_unpacked(msg->env, &msg->alloc);
    free(msg);
}

int codec_encode(const Verity__Envelope *env, uint64_t payload_len, const struct codec_limits *lim,
                 uint8_t **out, size_t *out_len)
{
    struct codec_limits tmp;
    lim = limits_or_default(lim, &tmp);
    *out = NULL;
    *out_len = 0;
    size_t env_len = verity__envelope__get_packed_size(env);
    if (env_len > lim->envelope_bytes_max)
        return VERITY_ELIMIT;
    uint64_t frame_length = 4 + (uint64_t)env_len + payload_len;
    if (frame_length > lim->frame_bytes_max)
        return VERITY_ELIMIT;
    uint8_t *buf = malloc(CODEC_PREFIX_SIZE + env_len);
    if (!buf)
        return -ENOMEM;
    put_be32(buf, (uint32_t)frame_length);
    put_be32(buf + 4, (uint32_t)env_len);
    size_t packed = verity__envelope__pack(env, buf + CODEC_PREFIX_SIZE);
    if (packed != env_len) {
        free(buf);
        return VERITY_EPROTO;
    }
    *out = buf;
    *out_len = CODEC_PREFIX_SIZE + env_len;
    return 0;
}

/* ---- body table ---------------------------------------------------------- */

struct body_info {
    Verity__Envelope__BodyCase req;
    Verity__Envelope__BodyCase resp;
    const char *name;
};

static const struct body_info bodies[] = {
    {VERITY__ENVELOPE__BODY_HELLO_REQ, VERITY__ENVELOPE__BODY_HELLO_RESP, "hello"},
    {VERITY__ENVELOPE__BODY_METADATA_REQ, VERITY__ENVELOPE__BODY_METADATA_RESP, "metadata"},
    {VERITY__ENVELOPE__BODY_CREATE_TOPIC_REQ, VERITY__ENVELOPE__BODY_CREATE_TOPIC_RESP,
     "create_topic"},
    {VERITY__ENVELOPE__BODY_DELETE_TOPIC_REQ, VERITY__ENVELOPE__BODY_DELETE_TOPIC_RESP,
     "delete_topic"},
    {VERITY__ENVELOPE__BODY_LIST_TOPICS_REQ, VERITY__ENVELOPE__BODY_LIST_TOPICS_RESP,
     "list_topics"},
    {VERITY__ENVELOPE__BODY_DESCRIBE_TOPIC_REQ, VERITY__ENVELOPE__BODY_DESCRIBE_TOPIC_RESP,
     "describe_topic"},
    {VERITY__ENVELOPE__BODY_INIT_PRODUCER_REQ, VERITY__ENVELOPE__BODY_INIT_PRODUCER_RESP,
     "init_producer"},
    {VERITY__ENVELOPE__BODY_PRODUCE_REQ, VERITY__ENVELOPE__BODY_PRODUCE_RESP, "produce"},
    {VERITY__ENVELOPE__BODY_FETCH_REQ, VERITY__ENVELOPE__BODY_FETCH_RESP, "fetch"},
    {VERITY__ENVELOPE__BODY_LIST_OFFSETS_REQ, VERITY__ENVELOPE__BODY_LIST_OFFSETS_RESP,
     "list_offsets"},
    {VERITY__ENVELOPE__BODY_CREATE_GROUP_REQ, VERITY__ENVELOPE__BODY_CREATE_GROUP_RESP,
     "create_group"},
    {VERITY__ENVELOPE__BODY_DELETE_GROUP_REQ, VERITY__ENVELOPE__BODY_DELETE_GROUP_RESP,
     "delete_group"},
    {VERITY__ENVELOPE__BODY_LIST_GROUPS_REQ, VERITY__ENVELOPE__BODY_LIST_GROUPS_RESP,
     "list_groups"},
    {VERITY__ENVELOPE__BODY_DESCRIBE_GROUP_REQ, VERITY__ENVELOPE__BODY_DESCRIBE_GROUP_RESP,
     "describe_group"},
    {VERITY__ENVELOPE__BODY_GROUP_PENDING_REQ, VERITY__ENVELOPE__BODY_GROUP_PENDING_RESP,
     "group_pending"},
    {VERITY__ENVELOPE__BODY_RESET_GROUP_REQ, VERITY__ENVELOPE__BODY_RESET_GROUP_RESP,
     "reset_group"},
    {VERITY__ENVELOPE__BODY_JOIN_GROUP_REQ, VERITY__ENVELOPE__BODY_JOIN_GROUP_RESP, "join_group"},
    {VERITY__ENVELOPE__BODY_HEARTBEAT_REQ, VERITY__ENVELOPE__BODY_HEARTBEAT_RESP, "heartbeat"},
    {VERITY__ENVELOPE__BODY_LEAVE_GROUP_REQ, VERITY__ENVELOPE__BODY_LEAVE_GROUP_RESP,
     "leave_group"},
    {VERITY__ENVELOPE__BODY_GROUP_FETCH_REQ, VERITY__ENVELOPE__BODY_GROUP_FETCH_RESP,
     "group_fetch"},
    {VERITY__ENVELOPE__BODY_ACK_REQ, VERITY__ENVELOPE__BODY_ACK_RESP, "ack"},
    {VERITY__ENVELOPE__BODY_NACK_REQ, VERITY__ENVELOPE__BODY_NACK_RESP, "nack"},
    {VERITY__ENVELOPE__BODY_EXTEND_REQ, VERITY__ENVELOPE__BODY_EXTEND_RESP, "extend"},
    {VERITY__ENVELOPE__BODY_TERM_REQ, VERITY__ENVELOPE__BODY_TERM_RESP, "term"},
    {VERITY__ENVELOPE__BODY_AUTHENTICATE_REQ, VERITY__ENVELOPE__BODY_AUTHENTICATE_RESP,
     "authenticate"},
};

#define N_BODIES (sizeof(bodies) / sizeof(bodies[0]))

bool codec_is_request(Verity__Envelope__BodyCase c)
{
    for (size_t i = 0; i < N_BODIES; i++)
        if (bodies[i].req == c)
            return true;
    return false;
}

bool codec_is_response(Verity__Envelope__BodyCase c)
{
    for (size_t i = 0; i < N_BODIES; i++)
        if (bodies[i].resp == c)
            return true;
    return false;
}

Verity__Envelope__BodyCase codec_response_case(Verity__Envelope__BodyCase c)
{
    for (size_t i = 0; i < N_BODIES; i++)
        if (bodies[i].req == c)
            return bodies[i].resp;
    return VERITY__ENVELOPE__BODY__NOT_SET;
}

const char *codec_body_name(Verity__Envelope__BodyCase c)
{
    for (size_t i = 0; i < N_BODIES; i++)
        if (bodies[i].req == c || bodies[i].resp == c)
            return bodies[i].name;
    return c == VERITY__ENVELOPE__BODY__NOT_SET ? "none" : "unknown";
}

/* ---- error codes --------------------------------------------------------- */

Verity__ErrorCode codec_err_to_wire(int err)
{
    if (err == 0)
        return VERITY__ERROR_CODE__ERR_NONE;
    if (err < VERITY_EBASE && err > VERITY_ELAST)
        return (Verity__ErrorCode)(-err - 4096);
    switch (err) {
    case -ENOSPC:
    case -EDQUOT:
        return VERITY__ERROR_CODE__ERR_NO_SPACE;
    case -EIO:
        return VERITY__ERROR_CODE__ERR_IO;
    case -ENOMEM:
        return VERITY__ERROR_CODE__ERR_NO_MEMORY;
    default:
        return VERITY__ERROR_CODE__ERR_SYSTEM;
    }
}

int codec_err_from_wire(Verity__ErrorCode code)
{
    int c = (int)code;
    if (c == 0)
        return 0;
    if (c >= 1 && c < -VERITY_ELAST - 4096)
        return -c - 4096;
    switch (code) {
    case VERITY__ERROR_CODE__ERR_NO_SPACE:
        return -ENOSPC;
    case VERITY__ERROR_CODE__ERR_IO:
    case VERITY__ERROR_CODE__ERR_SYSTEM:
        return -EIO;
    case VERITY__ERROR_CODE__ERR_NO_MEMORY:
        return -ENOMEM;
    default:
        return VERITY_EPROTO;
    }
}

static bool wire_err_known(int c)
{
    if (c >= 0 && c < -VERITY_ELAST - 4096)
        return true;
    return c >= VERITY__ERROR_CODE__ERR_SYSTEM && c <= VERITY__ERROR_CODE__ERR_NO_MEMORY;
}

/* ---- validation ---------------------------------------------------------- */

bool codec_tenant_name_ok(const char *name)
{
    if (!name)
        return false;
    size_t n = strnlen(name, CODEC_TENANT_NAME_MAX + 1);
    if (n == 0 || n > CODEC_TENANT_NAME_MAX || (n >= 2 && name[0] == '_' && name[1] == '_'))
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = name[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '-'))
            return false;
    }
    return true;
}

bool codec_topic_name_ok(const char *name, bool allow_internal)
{
    if (!name)
        return false;
    size_t n = strnlen(name, VERITY_TOPIC_NAME_MAX + 1);
    if (n == 0 || n > VERITY_TOPIC_NAME_MAX)
        return false;
    const char *sep = memchr(name, CODEC_TENANT_SEP, n);
    if (sep) {
        /* Tenant-qualified ("<tenant>~<name>"): one separator, a valid
         * tenant, a valid name after it. */
        char t[CODEC_TENANT_NAME_MAX + 1];
        size_t tn = (size_t)(sep - name);
        if (tn == 0 || tn > CODEC_TENANT_NAME_MAX)
            return false;
        memcpy(t, name, tn);
        t[tn] = '\0';
        return codec_tenant_name_ok(t) && !strchr(sep + 1, CODEC_TENANT_SEP) &&
               codec_topic_name_ok(sep + 1, allow_internal);
    }
    if (strcmp(name, ".") == 0 || strcmp(name, "..") == 0)
        return false;
    if (!allow_internal && n >= 2 && name[0] == '_' && name[1] == '_')
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = name[i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '.' || c == '_' || c == '-';
        if (!ok)
            return false;
    }
    return true;
}

bool codec_group_name_ok(const char *name)
{
    return codec_topic_name_ok(name, false) &&
           strnlen(name, CODEC_GROUP_NAME_MAX + 1) <= CODEC_GROUP_NAME_MAX;
}

static int fail(char *msg, size_t cap, int err, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int fail(char *msg, size_t cap, int err, const char *fmt, ...)
{
    if (msg && cap) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(msg, cap, fmt, ap);
        va_end(ap);
    }
    return err;
}

static bool str_ok(const char *s)
{
    return s == NULL || strnlen(s, CODEC_STRING_BYTES_MAX + 1) <= CODEC_STRING_BYTES_MAX;
}

#define CHECK_COUNT(n, what)                                                                       \
    do {                                                                                           \
        if ((n) > lim->items_max)                                                                  \
            return fail(msg, cap, VERITY_ELIMIT, "%s: %zu entries exceed items_max %u", (what),    \
                        (size_t)(n), lim->items_max);                                              \
    } while (0)

#define CHECK_NONEMPTY(n, what)                                                                    \
    do {                                                                                           \
        if ((n) == 0)                                                                              \
            return fail(msg, cap, VERITY_EINVAL, "%s: no entries", (what));                        \
    } while (0)

#define CHECK_TOPIC(t, internal, what)                                                             \
    do {                                                                                           \
        if (!codec_topic_name_ok((t), (internal)))                                                 \
            return fail(msg, cap, VERITY_EINVAL, "%s: invalid topic name", (what));                \
    } while (0)

static int check_topic_config(const Verity__TopicConfig *c, const struct codec_limits *lim,
                              char *msg, size_t cap)
{
    if (!c)
        return 0;
    if (c->partitions > VERITY_PARTITIONS_MAX)
        return fail(msg, cap, VERITY_ELIMIT, "partitions %u exceeds the limit %u", c->partitions,
                    VERITY_PARTITIONS_MAX);
    if ((int)c->durability < 0 || (int)c->durability > VERITY__DURABILITY__DURABILITY_OS)
        return fail(msg, cap, VERITY_EINVAL, "unknown durability %d", (int)c->durability);
    if (c->retention_ms < -1 || c->retention_bytes < -1)
        return fail(msg, cap, VERITY_EINVAL, "retention must be -1, 0 or positive");
    if (c->max_message_bytes > lim->batch_bytes_max)
        return fail(msg, cap, VERITY_ELIMIT, "max_message_bytes %u exceeds max_batch_bytes %u",
                    c->max_message_bytes, lim->batch_bytes_max);
    return 0;
}

static int check_produce(const Verity__ProduceRequest *r, uint64_t payload_len,
                         const struct codec_limits *lim, char *msg, size_t cap)
{
    CHECK_NONEMPTY(r->n_batches, "produce");
    CHECK_COUNT(r->n_batches, "produce");
    uint64_t sum = 0;
    for (size_t i = 0; i < r->n_batches; i++) {
        const Verity__ProduceBatch *b = r->batches[i];
        CHECK_TOPIC(b->topic, false, "produce");
        if (b->batch_bytes < BATCH_HDR_SIZE)
            return fail(msg, cap, VERITY_EBADBATCH,
                        "produce: batch %zu of %u bytes is shorter "
                        "than a batch header",
                        i, b->batch_bytes);
        if (b->batch_bytes > lim->batch_bytes_max)
            return fail(msg, cap, VERITY_ELIMIT,
                        "produce: batch %zu of %u bytes exceeds "
                        "max_batch_bytes %u",
                        i, b->batch_bytes, lim->batch_bytes_max);
        sum += b->batch_bytes;
    }
    if (sum != payload_len)
        return fail(msg, cap, VERITY_EPROTO,
                    "produce: batch_bytes sum to %llu but the payload "
                    "holds %llu bytes",
                    (unsigned long long)sum, (unsigned long long)payload_len);
    return 0;
}

#define CHECK_GROUP(g, what)                                                                       \
    do {                                                                                           \
        if (!codec_group_name_ok(g))                                                               \
            return fail(msg, cap, VERITY_EINVAL, "%s: invalid group name", (what));                \
    } while (0)

#define CHECK_STR(s, max, what)                                                                    \
    do {                                                                                           \
        if ((s) && strnlen((s), (size_t)(max) + 1) > (max))                                        \
            return fail(msg, cap, VERITY_ELIMIT, "%s: longer than %u bytes", (what),               \
                        (unsigned)(max));                                                          \
    } while (0)

static int check_position(const Verity__GroupPosition *p, const struct codec_limits *lim,
                          const char *what, char *msg, size_t cap)
{
    if (!p)
        return 0;
    int s = (int)p->start;
    if (s < 0 || s > VERITY__GROUP_START__GROUP_START_TIME)
        return fail(msg, cap, VERITY_EINVAL, "%s: unknown start %d", what, s);
    CHECK_COUNT(p->n_offsets, what);
    for (size_t i = 0; i < p->n_offsets; i++)
        CHECK_TOPIC(p->offsets[i]->topic, false, what);
    return 0;
}

static int check_group_config(const Verity__GroupConfig *c, const struct codec_limits *lim,
                              char *msg, size_t cap)
{
    if (!c)
        return fail(msg, cap, VERITY_EINVAL, "create_group: no config (topics are required)");
    int m = (int)c->mode;
    if (m < 0 || m > VERITY__GROUP_MODE__GROUP_MODE_SHARED)
        return fail(msg, cap, VERITY_EINVAL, "create_group: unknown mode %d", m);
    CHECK_NONEMPTY(c->n_topics, "create_group topics");
    if (c->n_topics > CODEC_GROUP_TOPICS_MAX)
        return fail(msg, cap, VERITY_ELIMIT, "create_group: %zu topics exceed the limit %u",
                    c->n_topics, CODEC_GROUP_TOPICS_MAX);
    for (size_t i = 0; i < c->n_topics; i++)
        CHECK_TOPIC(c->topics[i], false, "create_group");
    if (c->dlq_topic && c->dlq_topic[0])
        CHECK_TOPIC(c->dlq_topic, false, "create_group dlq_topic");
    if (c->n_backoff_ms > CODEC_GROUP_BACKOFF_MAX)
        return fail(msg, cap, VERITY_ELIMIT, "create_group: %zu backoff steps exceed the limit %u",
                    c->n_backoff_ms, CODEC_GROUP_BACKOFF_MAX);
    if (c->lease_ms < 0 || c->session_ms < 0)
        return fail(msg, cap, VERITY_EINVAL, "create_group: negative lease_ms or session_ms");
    for (size_t i = 0; i < c->n_backoff_ms; i++)
        if (c->backoff_ms[i] < 0)
            return fail(msg, cap, VERITY_EINVAL, "create_group: negative backoff step");
    return 0;
}

static int check_ranges(Verity__GroupAckRange *const *r, size_t n, const struct codec_limits *lim,
                        const char *what, char *msg, size_t cap)
{
    CHECK_COUNT(n, what);
    for (size_t i = 0; i < n; i++)
        CHECK_TOPIC(r[i]->topic, false, what);
    return 0;
}

/* Group requests (fields 120-133). */
static int check_group_body(const Verity__Envelope *env, const struct codec_limits *lim, char *msg,
                            size_t cap)
{
    int rc;
    switch (env->body_case) {
    case VERITY__ENVELOPE__BODY_CREATE_GROUP_REQ: {
        const Verity__CreateGroupRequest *r = env->create_group_req;
        CHECK_GROUP(r->group, "create_group");
        if ((rc = check_group_config(r->config, lim, msg, cap)))
            return rc;
        return check_position(r->start, lim, "create_group start", msg, cap);
    }
    case VERITY__ENVELOPE__BODY_DELETE_GROUP_REQ:
        CHECK_GROUP(env->delete_group_req->group, "delete_group");
        return 0;
    case VERITY__ENVELOPE__BODY_LIST_GROUPS_REQ:
        return 0;
    case VERITY__ENVELOPE__BODY_DESCRIBE_GROUP_REQ:
        CHECK_GROUP(env->describe_group_req->group, "describe_group");
        return 0;
    case VERITY__ENVELOPE__BODY_GROUP_PENDING_REQ:
        CHECK_GROUP(env->group_pending_req->group, "group_pending");
        return 0;
    case VERITY__ENVELOPE__BODY_RESET_GROUP_REQ:
        CHECK_GROUP(env->reset_group_req->group, "reset_group");
        return check_position(env->reset_group_req->position, lim, "reset_group", msg, cap);
    case VERITY__ENVELOPE__BODY_JOIN_GROUP_REQ: {
        const Verity__JoinGroupRequest *r = env->join_group_req;
        CHECK_GROUP(r->group, "join_group");
        CHECK_STR(r->member_name, CODEC_MEMBER_NAME_MAX, "join_group member_name");
        if (r->n_topics > CODEC_GROUP_TOPICS_MAX)
            return fail(msg, cap, VERITY_ELIMIT, "join_group: %zu topics exceed the limit %u",
                        r->n_topics, CODEC_GROUP_TOPICS_MAX);
        for (size_t i = 0; i < r->n_topics; i++)
            CHECK_TOPIC(r->topics[i], false, "join_group");
        if (r->session_ms < 0)
            return fail(msg, cap, VERITY_EINVAL, "join_group: negative session_ms");
        return 0;
    }
    case VERITY__ENVELOPE__BODY_HEARTBEAT_REQ:
        CHECK_GROUP(env->heartbeat_req->group, "heartbeat");
        return 0;
    case VERITY__ENVELOPE__BODY_LEAVE_GROUP_REQ:
        CHECK_GROUP(env->leave_group_req->group, "leave_group");
        return 0;
    case VERITY__ENVELOPE__BODY_GROUP_FETCH_REQ: {
        const Verity__GroupFetchRequest *r = env->group_fetch_req;
        CHECK_GROUP(r->group, "group_fetch");
        if (r->max_messages > CODEC_GROUP_FETCH_MAX)
            return fail(msg, cap, VERITY_ELIMIT,
                        "group_fetch: max_messages %u exceeds the limit %u", r->max_messages,
                        CODEC_GROUP_FETCH_MAX);
        return 0;
    }
    case VERITY__ENVELOPE__BODY_ACK_REQ: {
        const Verity__AckRequest *r = env->ack_req;
        CHECK_GROUP(r->group, "ack");
        if (r->n_ranges == 0 && r->n_upto == 0)
            return fail(msg, cap, VERITY_EINVAL, "ack: no ranges and no upto");
        if ((rc = check_ranges(r->ranges, r->n_ranges, lim, "ack", msg, cap)))
            return rc;
        CHECK_COUNT(r->n_upto, "ack upto");
        for (size_t i = 0; i < r->n_upto; i++)
            CHECK_TOPIC(r->upto[i]->topic, false, "ack upto");
        if (r->n_upto_from != 0 && r->n_upto_from != r->n_upto)
            return fail(msg, cap, VERITY_EINVAL,
                        "ack: upto_from has %zu entries for %zu upto (0 or the same)",
                        r->n_upto_from, r->n_upto);
        return 0;
    }
    case VERITY__ENVELOPE__BODY_NACK_REQ: {
        const Verity__NackRequest *r = env->nack_req;
        CHECK_GROUP(r->group, "nack");
        CHECK_TOPIC(r->topic, false, "nack");
        CHECK_STR(r->error, CODEC_STRING_BYTES_MAX, "nack error");
        return 0;
    }
    case VERITY__ENVELOPE__BODY_EXTEND_REQ: {
        const Verity__ExtendRequest *r = env->extend_req;
        CHECK_GROUP(r->group, "extend");
        CHECK_NONEMPTY(r->n_ranges, "extend");
        return check_ranges(r->ranges, r->n_ranges, lim, "extend", msg, cap);
    }
    case VERITY__ENVELOPE__BODY_TERM_REQ: {
        const Verity__TermRequest *r = env->term_req;
        CHECK_GROUP(r->group, "term");
        CHECK_TOPIC(r->topic, false, "term");
        CHECK_STR(r->error, CODEC_STRING_BYTES_MAX, "term error");
        return 0;
    }
    case VERITY__ENVELOPE__BODY_AUTHENTICATE_REQ: {
        const Verity__AuthenticateRequest *r = env->authenticate_req;
        if (!r->api_key || !r->api_key[0])
            return fail(msg, cap, VERITY_EINVAL, "authenticate: no api_key");
        CHECK_STR(r->api_key, CODEC_API_KEY_MAX, "authenticate api_key");
        return 0;
    }
    default:
        return fail(msg, cap, VERITY_EPROTO, "envelope holds no request");
    }
}

static int check_request_body(const Verity__Envelope *env, const struct codec_limits *lim,
                              char *msg, size_t cap)
{
    switch (env->body_case) {
    case VERITY__ENVELOPE__BODY_HELLO_REQ: {
        const Verity__HelloRequest *r = env->hello_req;
        if (!str_ok(r->client_id) || !str_ok(r->software))
            return fail(msg, cap, VERITY_ELIMIT, "hello: string longer than %u bytes",
                        CODEC_STRING_BYTES_MAX);
        return 0;
    }
    case VERITY__ENVELOPE__BODY_METADATA_REQ: {
        const Verity__MetadataRequest *r = env->metadata_req;
        CHECK_COUNT(r->n_topics, "metadata");
        for (size_t i = 0; i < r->n_topics; i++)
            CHECK_TOPIC(r->topics[i], true, "metadata");
        return 0;
    }
    case VERITY__ENVELOPE__BODY_CREATE_TOPIC_REQ:
        CHECK_TOPIC(env->create_topic_req->name, false, "create_topic");
        return check_topic_config(env->create_topic_req->config, lim, msg, cap);
    case VERITY__ENVELOPE__BODY_DELETE_TOPIC_REQ:
        CHECK_TOPIC(env->delete_topic_req->name, true, "delete_topic");
        return 0;
    case VERITY__ENVELOPE__BODY_LIST_TOPICS_REQ:
        return 0;
    case VERITY__ENVELOPE__BODY_DESCRIBE_TOPIC_REQ:
        CHECK_TOPIC(env->describe_topic_req->name, true, "describe_topic");
        return 0;
    case VERITY__ENVELOPE__BODY_INIT_PRODUCER_REQ: {
        const Verity__InitProducerRequest *r = env->init_producer_req;
        if (r->producer_id < 0)
            return fail(msg, cap, VERITY_EINVAL, "init_producer: negative producer_id");
        if (!str_ok(r->client_id))
            return fail(msg, cap, VERITY_ELIMIT, "init_producer: client_id longer than %u bytes",
                        CODEC_STRING_BYTES_MAX);
        return 0;
    }
    case VERITY__ENVELOPE__BODY_FETCH_REQ: {
        const Verity__FetchRequest *r = env->fetch_req;
        CHECK_NONEMPTY(r->n_partitions, "fetch");
        CHECK_COUNT(r->n_partitions, "fetch");
        for (size_t i = 0; i < r->n_partitions; i++)
            CHECK_TOPIC(r->partitions[i]->topic, true, "fetch");
        return 0;
    }
    case VERITY__ENVELOPE__BODY_LIST_OFFSETS_REQ: {
        const Verity__ListOffsetsRequest *r = env->list_offsets_req;
        CHECK_NONEMPTY(r->n_partitions, "list_offsets");
        CHECK_COUNT(r->n_partitions, "list_offsets");
        for (size_t i = 0; i < r->n_partitions; i++) {
            CHECK_TOPIC(r->partitions[i]->topic, true, "list_offsets");
            int s = (int)r->partitions[i]->spec;
            if (s < 0 || s > VERITY__OFFSET_SPEC__OFFSET_TIMESTAMP)
                return fail(msg, cap, VERITY_EINVAL, "list_offsets: unknown spec %d", s);
        }
        return 0;
    }
    default:
        return check_group_body(env, lim, msg, cap);
    }
}

int codec_validate_request(const Verity__Envelope *env, uint64_t payload_len,
                           const struct codec_limits *lim, char *msg, size_t msg_cap)
{
    struct codec_limits tmp;
    lim = limits_or_default(lim, &tmp);
    size_t cap = msg_cap;
    if (msg && cap)
        msg[0] = '\0';
    if (env->version != CODEC_PROTOCOL_VERSION)
        return fail(msg, cap, VERITY_EVERSION, "protocol version %u is not supported (only %u)",
                    env->version, CODEC_PROTOCOL_VERSION);
    if (!codec_is_request(env->body_case))
        return fail(msg, cap, VERITY_EPROTO, "envelope holds no request");
    if (env->body_case == VERITY__ENVELOPE__BODY_PRODUCE_REQ)
        return check_produce(env->produce_req, payload_len, lim, msg, cap);
    if (payload_len != 0)
        return fail(msg, cap, VERITY_EPROTO, "%s request carries %llu payload bytes (none allowed)",
                    codec_body_name(env->body_case), (unsigned long long)payload_len);
    return check_request_body(env, lim, msg, cap);
}

int codec_validate_response(const Verity__Envelope *env, uint64_t payload_len,
                            const struct codec_limits *lim, char *msg, size_t msg_cap)
{
    struct codec_limits tmp;
    lim = limits_or_default(lim, &tmp);
    size_t cap = msg_cap;
    if (msg && cap)
        msg[0] = '\0';
    if (env->version != CODEC_PROTOCOL_VERSION)
        return fail(msg, cap, VERITY_EVERSION, "protocol version %u is not supported (only %u)",
                    env->version, CODEC_PROTOCOL_VERSION);
    if (!wire_err_known((int)env->error))
        return fail(msg, cap, VERITY_EPROTO, "unknown error code %d", (int)env->error);
    if (env->body_case == VERITY__ENVELOPE__BODY__NOT_SET) {
        if (env->error == VERITY__ERROR_CODE__ERR_NONE)
            return fail(msg, cap, VERITY_EPROTO, "response holds neither a body nor an error");
    } else if (!codec_is_response(env->body_case)) {
        return fail(msg, cap, VERITY_EPROTO, "envelope holds no response");
    }
    if (env->body_case == VERITY__ENVELOPE__BODY_FETCH_RESP) {
        const Verity__FetchResponse *r = env->fetch_resp;
        CHECK_COUNT(r->n_results, "fetch");
        uint64_t sum = 0;
        for (size_t i = 0; i < r->n_results; i++)
            sum += r->results[i]->records_bytes;
        if (sum != payload_len)
            return fail(msg, cap, VERITY_EPROTO,
                        "fetch: records_bytes sum to %llu but the "
                        "payload holds %llu bytes",
                        (unsigned long long)sum, (unsigned long long)payload_len);
        return 0;
    }
    if (env->body_case == VERITY__ENVELOPE__BODY_GROUP_FETCH_RESP) {
        const Verity__GroupFetchResponse *r = env->group_fetch_resp;
        CHECK_COUNT(r->n_results, "group_fetch");
        uint64_t sum = 0;
        for (size_t i = 0; i < r->n_results; i++) {
            sum += r->results[i]->records_bytes;
            CHECK_COUNT(r->results[i]->n_ranges, "group_fetch ranges");
        }
        if (sum != payload_len)
            return fail(msg, cap, VERITY_EPROTO,
                        "group_fetch: records_bytes sum to %llu but the "
                        "payload holds %llu bytes",
                        (unsigned long long)sum, (unsigned long long)payload_len);
        return 0;
    }
    if (payload_len != 0)
        return fail(msg, cap, VERITY_EPROTO, "%s response carries %llu payload bytes",
                    codec_body_name(env->body_case), (unsigned long long)payload_len);
    if (env->body_case == VERITY__ENVELOPE__BODY_PRODUCE_RESP)
        CHECK_COUNT(env->produce_resp->n_results, "produce");
    return 0;
}

/* ---- blocking helpers ---------------------------------------------------- */

static int write_all(int fd, const void *buf, size_t n)
{
    const uint8_t *p = buf;
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

int codec_fd_write(int fd, const Verity__Envelope *env, const void *payload, size_t payload_len,
                   const struct codec_limits *lim)
{
    uint8_t *head = NULL;
    size_t head_len = 0;
    int rc = codec_encode(env, payload_len, lim, &head, &head_len);
    if (rc == 0)
        rc = write_all(fd, head, head_len);
    if (rc == 0 && payload_len > 0)
        rc = write_all(fd, payload, payload_len);
    free(head);
    return rc;
}

static int read_full(int fd, void *buf, size_t n, int timeout_ms)
{
    uint8_t *p = buf;
    while (n > 0) {
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        int pr = poll(&pfd, 1, timeout_ms);
        if (pr < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        if (pr == 0)
            return VERITY_ETIMEOUT;
        ssize_t r = read(fd, p, n);
        if (r < 0) {
            if (errno == EINTR || errno == EAGAIN)
                continue;
            if (errno == ECONNRESET)
                return VERITY_ECLOSED;
            return -errno;
        }
        if (r == 0)
            return VERITY_ECLOSED;
        p += r;
        n -= (size_t)r;
    }
    return 0;
}

int codec_fd_read(int fd, const struct codec_limits *lim, int timeout_ms, struct codec_msg **msg,
                  uint8_t **payload, size_t *payload_len)
{
    *msg = NULL;
    *payload = NULL;
    *payload_len = 0;
    uint8_t prefix[CODEC_PREFIX_SIZE];
    int rc = read_full(fd, prefix, sizeof(prefix), timeout_ms);
    if (rc < 0)
        return rc;
    struct codec_frame f;
    rc = codec_frame_peek(prefix, sizeof(prefix), lim, &f);
    if (rc != 0)
        return rc < 0 ? rc : VERITY_EPROTO;
    uint8_t *env = malloc(f.envelope_length ? f.envelope_length : 1);
    uint8_t *pl = f.payload_length ? malloc(f.payload_length) : NULL;
    if (!env || (f.payload_length && !pl)) {
        rc = -ENOMEM;
        goto out;
    }
    rc = read_full(fd, env, f.envelope_length, timeout_ms);
    if (rc == 0)
        rc = read_full(fd, pl, f.payload_length, timeout_ms);
    if (rc == 0)
        rc = codec_decode(env, f.envelope_length, lim, msg);
    if (rc == 0) {
        *payload = pl;
        *payload_len = f.payload_length;
        pl = NULL;
    }
out:
    free(pl);
    free(env);
    return rc;
}
