/*
 * verity dlq list|replay: the dead letters of a consumer group.
 *
 * The broker appends a message that ran out of deliveries (or was termed)
 * to the group's dead-letter topic, keeping its key, value and headers and
 * adding verity.source.topic / .partition / .offset / .timestamp,
 * verity.group, verity.delivery_count and verity.error (docs/PROTOCOL.md).
 *
 * Replay moves dead letters back: each is produced to its source topic and
 * partition with its key, value and own headers (those not starting with
 * "verity."), then marked replayed. "Replayed" is the progress of a
 * consumer group that reads the dead-letter topic, named
 * "<dead-letter topic>.replay" (created on first use, ordered mode): a dead
 * letter is acknowledged in that group only after its copy is durable in
 * the source topic, so a second replay does not move it again. Each copy
 * carries an idempotency key derived from (dead-letter topic, partition,
 * offset), so a replay that crashes between the produce and the ack and is
 * run again within the broker's idempotency window (10 minutes by default)
 * does not write the copy twice.
 *
 * list shows the dead letters not replayed yet (--all: every one still
 * stored), oldest first per partition.
 *
 * Exit codes: 0 ok, 1 failure (no such group or topic, a dead letter that
 * could not be replayed), 2 usage, 3 the broker cannot be reached.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <openssl/evp.h>

#include "tools/cli_json.h"
#include "tools/cli_args.h"
#include "tools/cmds.h"
#include "verity/group.h"
#include "verity/limits.h"

#define EXIT_UNREACHABLE 3
#define CONNECT_TIMEOUT_MS 5000
#define POLL_MS 500
#define REPLAY_SUFFIX ".replay"
#define PRODUCE_TIMEOUT_MS 30000

static void usage(FILE *f)
{
    fprintf(f,
            "usage: verity dlq list   (--group NAME | --topic DLQ_TOPIC) [--all] [--json]\n"
            "       verity dlq replay (--group NAME | --topic DLQ_TOPIC) [--count N] [--json]\n"
            "  --group    the group whose dead-letter topic to use\n"
            "  --topic    the dead-letter topic itself\n"
            "  --all      list every stored dead letter, replayed or not\n"
            "  --count N  replay at most N dead letters\n"
            "  --broker HOST:PORT (default $%s or %s)\n"
            "replay produces each dead letter (key, value, headers not starting with\n"
            "\"verity.\") to its source topic and partition, then records it as replayed in\n"
            "the group <dead-letter topic>%s, so running it again moves nothing twice.\n"
            "exit: 0 ok, 1 failure, 2 usage, 3 broker unreachable\n",
            VERITY_BROKER_ENV, VERITY_BROKER_DEFAULT, REPLAY_SUFFIX);
}

struct dlq_args {
    const char *action;
    const char *group;
    const char *topic;
    const char *broker;
    bool all;
    bool json;
    uint64_t count;             /* 0: no limit */
};

enum { OPT_GROUP = 256, OPT_TOPIC, OPT_ALL, OPT_COUNT, OPT_BROKER, OPT_JSON, OPT_HELP };

static const struct option long_opts[] = {
    {"group", required_argument, NULL, OPT_GROUP},
    {"topic", required_argument, NULL, OPT_TOPIC},
    {"all", no_argument, NULL, OPT_ALL},
    {"count", required_argument, NULL, OPT_COUNT},
    {"broker", required_argument, NULL, OPT_BROKER},
    {"json", no_argument, NULL, OPT_JSON},
    {"help", no_argument, NULL, OPT_HELP},
    {NULL, 0, NULL, 0},
};

static int parse(int argc, char **argv, struct dlq_args *a)
{
    int c;
    char *end;
    memset(a, 0, sizeof *a);
    optind = 0;
    opterr = 0;
    while ((c = CLI_GETOPT(argc, argv, "h", long_opts)) != -1) {
        switch (c) {
        case OPT_GROUP:
            a->group = optarg;
            break;
        case OPT_TOPIC:
            a->topic = optarg;
            break;
        case OPT_ALL:
            a->all = true;
            break;
        case OPT_COUNT:
            errno = 0;
            a->count = strtoull(optarg, &end, 10);
            if (!optarg[0] || optarg[0] == '-' || *end || errno || a->count == 0)
                goto bad;
            break;
        case OPT_BROKER:
            a->broker = optarg;
            break;
        case OPT_JSON:
            a->json = true;
            break;
        case OPT_HELP:
        case 'h':
            usage(stdout);
            return CMD_EXIT_OK;
        default:
            goto bad;
        }
    }
    if (optind != argc - 1)
        goto bad;
    a->action = argv[optind];
    if (strcmp(a->action, "list") != 0 && strcmp(a->action, "replay") != 0)
        goto bad;
    if ((a->group != NULL) == (a->topic != NULL))
        goto bad;
    if ((a->all && strcmp(a->action, "list") != 0) || (a->count && strcmp(a->action, "replay") != 0))
        goto bad;
    if (a->group && !verity_group_name_ok(a->group))
        goto bad;
    if (a->topic && strlen(a->topic) + strlen(REPLAY_SUFFIX) > VERITY_GROUP_NAME_MAX)
        goto bad;
    return -1;
bad:
    return cli_bad_args("verity dlq", c, long_opts, argv, usage);
}

static int exit_for(int err)
{
    if (err == 0)
        return CMD_EXIT_OK;
    return verity_err_unreachable(err) ? EXIT_UNREACHABLE : CMD_EXIT_FAIL;
}

static int fail(const char *what, int err)
{
    const char *msg = verity_last_error_message();
    bool extra = msg[0] && strcmp(msg, verity_strerror(err)) != 0;
    fprintf(stderr, "verity dlq: %s: %s%s%s\n", what, verity_strerror(err), extra ? ": " : "",
            extra ? msg : "");
    return exit_for(err);
}

/* ---- dead-letter headers --------------------------------------------------- */

struct dead_letter {
    char topic[VERITY_TOPIC_NAME_MAX + 1];
    int64_t partition;          /* -1: header missing or bad */
    int64_t offset;
    int64_t timestamp_ms;
    int64_t delivery_count;
    char group[VERITY_GROUP_NAME_MAX + 1];
    char error[VERITY_GROUP_ERROR_MAX + 1];
};

static bool hdr_is(const struct verity_header *h, const char *key)
{
    size_t n = strlen(key);
    return h->key_len == n && memcmp(h->key, key, n) == 0;
}

/* Copies a header value as text into buf (cut to cap - 1 bytes). */
static void hdr_text(const struct verity_header *h, char *buf, size_t cap)
{
    size_t n = h->value && h->value_len > 0 ? (size_t)h->value_len : 0;
    if (n >= cap)
        n = cap - 1;
    if (n)
        memcpy(buf, h->value, n);
    buf[n] = '\0';
}

static int64_t hdr_num(const struct verity_header *h)
{
    char buf[32], *end;
    hdr_text(h, buf, sizeof buf);
    errno = 0;
    long long v = strtoll(buf, &end, 10);
    return !buf[0] || *end || errno || v < 0 ? -1 : v;
}

/* Reads the broker's headers; false when the record is not a dead letter. */
static bool dead_letter_parse(const struct verity_message *m, struct dead_letter *d)
{
    memset(d, 0, sizeof *d);
    d->partition = d->offset = d->timestamp_ms = d->delivery_count = -1;
    for (uint32_t i = 0; i < m->header_count; i++) {
        const struct verity_header *h = &m->headers[i];
        if (hdr_is(h, VERITY_DLQ_HDR_TOPIC))
            hdr_text(h, d->topic, sizeof d->topic);
        else if (hdr_is(h, VERITY_DLQ_HDR_PARTITION))
            d->partition = hdr_num(h);
        else if (hdr_is(h, VERITY_DLQ_HDR_OFFSET))
            d->offset = hdr_num(h);
        else if (hdr_is(h, VERITY_DLQ_HDR_TIMESTAMP))
            d->timestamp_ms = hdr_num(h);
        else if (hdr_is(h, VERITY_DLQ_HDR_COUNT))
            d->delivery_count = hdr_num(h);
        else if (hdr_is(h, VERITY_DLQ_HDR_GROUP))
            hdr_text(h, d->group, sizeof d->group);
        else if (hdr_is(h, VERITY_DLQ_HDR_ERROR))
            hdr_text(h, d->error, sizeof d->error);
    }
    return d->topic[0] && d->partition >= 0 && d->partition < VERITY_PARTITIONS_MAX &&
           d->offset >= 0;
}

/* With --json: every dead letter listed or replayed, printed as one JSON
 * array when the command ends (an empty array when there were none). */
static json_t *json_out;

static void print_dead_letter(const struct verity_message *m, const struct dead_letter *d,
                              bool json)
{
    if (!json) {
        printf("%s/%" PRIu32 "@%" PRIu64 "  from %s/%" PRId64 "@%" PRId64 "  group %s  "
               "deliveries %" PRId64 "  error \"%s\"  value %.*s\n",
               m->topic, m->partition, m->offset, d->topic, d->partition, d->offset, d->group,
               d->delivery_count, d->error, m->value && m->value_len > 0 ? (int)m->value_len : 0,
               m->value ? (const char *)m->value : "");
        return;
    }
    json_t *o = json_object();
    json_object_set_new(o, "dlq_topic", json_string(m->topic));
    json_object_set_new(o, "dlq_partition", json_integer(m->partition));
    json_object_set_new(o, "dlq_offset", json_integer((json_int_t)m->offset));
    json_object_set_new(o, "source_topic", json_string(d->topic));
    json_object_set_new(o, "source_partition", json_integer(d->partition));
    json_object_set_new(o, "source_offset", json_integer(d->offset));
    json_object_set_new(o, "source_timestamp", json_integer(d->timestamp_ms));
    json_object_set_new(o, "group", json_string(d->group));
    json_object_set_new(o, "delivery_count", json_integer(d->delivery_count));
    json_object_set_new(o, "error", json_string(d->error));
    json_object_set_new(o, "timestamp", json_integer(m->timestamp_ms));
    cli_json_set_bytes(o, "key", m->key, m->key_len);
    cli_json_set_bytes(o, "value", m->value, m->value_len);
    json_t *hs = json_array();
    for (uint32_t i = 0; i < m->header_count; i++) {
        json_t *kv = json_object();
        cli_json_set_bytes(kv, "key", m->headers[i].key, (int32_t)m->headers[i].key_len);
        cli_json_set_bytes(kv, "value", m->headers[i].value, m->headers[i].value_len);
        json_array_append_new(hs, kv);
    }
    json_object_set_new(o, "headers", hs);
    json_array_append_new(json_out, o);
}

/* ---- shared setup ---------------------------------------------------------- */

struct dlq_ctx {
    const struct dlq_args *a;
    struct verity_conn_config conn;
    struct verity_group_admin *ga;
    struct verity_client *client;
    char dlq[VERITY_TOPIC_NAME_MAX + 1];
    char replay_group[VERITY_TOPIC_NAME_MAX + sizeof REPLAY_SUFFIX]; /* <= group name max */
    struct verity_topic_info *dlq_info;   /* partitions, high watermarks */
};

/* Connects, finds the dead-letter topic and its partitions. Returns -1 when
 * ready, else the exit code. */
static int ctx_open(struct dlq_ctx *x, const struct dlq_args *a)
{
    int rc;
    memset(x, 0, sizeof *x);
    x->a = a;
    verity_conn_config_default(&x->conn);
    x->conn.broker = a->broker;
    x->conn.client_id = "verity-dlq";
    if ((rc = verity_group_admin_new(&x->conn, &x->ga)) != 0 ||
        (rc = verity_client_new(&x->conn, &x->client)) != 0) {
        fprintf(stderr, "verity dlq: %s: %s\n", verity_broker_resolve(a->broker),
                cli_strerror(verity_broker_resolve(a->broker), rc));
        return rc == VERITY_EINVAL ? CMD_EXIT_USAGE : CMD_EXIT_FAIL;
    }
    if ((rc = verity_group_admin_connect(x->ga, CONNECT_TIMEOUT_MS)) != 0) {
        fprintf(stderr, "verity dlq: cannot reach broker %s: %s\n",
                verity_broker_resolve(a->broker), cli_strerror(verity_broker_resolve(a->broker), rc));
        return EXIT_UNREACHABLE;
    }
    if (a->group) {
        struct verity_group_info *g = NULL;
        if ((rc = verity_group_describe(x->ga, a->group, &g)) != 0)
            return fail(a->group, rc);
        snprintf(x->dlq, sizeof x->dlq, "%s", g->dlq_topic ? g->dlq_topic : "");
        verity_group_info_free(g, 1);
    } else {
        snprintf(x->dlq, sizeof x->dlq, "%s", a->topic);
    }
    if (strlen(x->dlq) + strlen(REPLAY_SUFFIX) > VERITY_GROUP_NAME_MAX) {
        fprintf(stderr, "verity dlq: dead-letter topic name %s too long for its replay group\n",
                x->dlq);
        return CMD_EXIT_FAIL;
    }
    snprintf(x->replay_group, sizeof x->replay_group, "%s%s", x->dlq, REPLAY_SUFFIX);
    if ((rc = verity_topic_describe(x->client, x->dlq, &x->dlq_info)) != 0) {
        if (rc == VERITY_ENOTFOUND) {
            /* Created on the first dead letter: none yet. */
            return -2;
        }
        return fail(x->dlq, rc);
    }
    return -1;
}

static void ctx_close(struct dlq_ctx *x)
{
    verity_topic_info_free(x->dlq_info, 1);
    verity_client_free(x->client);
    verity_group_admin_free(x->ga);
}

/* ---- list ------------------------------------------------------------------ */

/* Start offsets per partition: the replay group's ack floor (not replayed
 * yet), or earliest with --all or when there is no replay group. */
static int list_starts(struct dlq_ctx *x, uint64_t *starts, bool *from_earliest)
{
    uint32_t n = x->dlq_info->partition_count;
    for (uint32_t p = 0; p < n; p++) {
        starts[p] = x->dlq_info->partitions[p].start_offset;
        from_earliest[p] = true;
    }
    if (x->a->all)
        return 0;
    struct verity_group_info *g = NULL;
    int rc = verity_group_describe(x->ga, x->replay_group, &g);
    if (rc == VERITY_ENOTFOUND)
        return 0;
    if (rc)
        return rc;
    for (size_t i = 0; i < g->n_partitions; i++) {
        const struct verity_group_partition *gp = &g->partitions[i];
        if (strcmp(gp->topic, x->dlq) == 0 && gp->partition < n &&
            gp->ack_floor >= starts[gp->partition]) {
            starts[gp->partition] = gp->ack_floor;
            from_earliest[gp->partition] = false;
        }
    }
    verity_group_info_free(g, 1);
    return 0;
}

static int do_list(struct dlq_ctx *x)
{
    uint32_t n = x->dlq_info->partition_count;
    uint64_t *starts = calloc(n ? n : 1, sizeof *starts);
    bool *earliest = calloc(n ? n : 1, sizeof *earliest);
    struct verity_consumer *cons = NULL;
    int rc = starts && earliest ? list_starts(x, starts, earliest) : -ENOMEM;
    if (rc) {
        free(starts);
        free(earliest);
        return fail("list", rc);
    }
    struct verity_consumer_config cc;
    verity_consumer_config_default(&cc);
    cc.conn = x->conn;
    cc.fetch_max_wait_ms = 100;
    rc = verity_consumer_new(&cc, &cons);
    bool any = false;
    for (uint32_t p = 0; rc == 0 && p < n; p++) {
        if (starts[p] >= x->dlq_info->partitions[p].high_watermark)
            continue;
        any = true;
        rc = verity_consumer_assign(cons, x->dlq, p,
                                    earliest[p] ? VERITY_START_EARLIEST : VERITY_START_OFFSET,
                                    earliest[p] ? 0 : (int64_t)starts[p]);
    }
    uint64_t shown = 0, other = 0;
    while (rc == 0 && any) {
        bool done = true;
        for (uint32_t p = 0; p < n && done; p++) {
            uint64_t pos = 0, hw = 0;
            if (starts[p] >= x->dlq_info->partitions[p].high_watermark)
                continue;
            int prc = verity_consumer_position(cons, x->dlq, p, &pos, &hw);
            if (prc == VERITY_ETIMEOUT || (prc == 0 && pos < x->dlq_info->partitions[p].high_watermark))
                done = false;
            else if (prc)
                rc = prc;
        }
        if (done || rc)
            break;
        const struct verity_message *m;
        size_t cnt = 0;
        rc = verity_consumer_poll(cons, POLL_MS, &m, &cnt, NULL);
        for (size_t i = 0; rc == 0 && i < cnt; i++) {
            if (m[i].offset >= x->dlq_info->partitions[m[i].partition].high_watermark)
                continue;
            struct dead_letter d;
            if (!dead_letter_parse(&m[i], &d)) {
                other++;
                continue;
            }
            print_dead_letter(&m[i], &d, x->a->json);
            shown++;
        }
    }
    verity_consumer_free(cons);
    free(starts);
    free(earliest);
    if (rc)
        return fail("list", rc);
    if (!x->a->json)
        fprintf(stderr, "%" PRIu64 " dead letter%s%s in %s%s\n", shown, shown == 1 ? "" : "s",
                x->a->all ? "" : " not replayed", x->dlq,
                other ? " (and records without dead-letter headers)" : "");
    return CMD_EXIT_OK;
}

/* ---- replay ---------------------------------------------------------------- */

struct produced {
    int err;
    uint64_t offset;
    bool duplicate;
    bool done;
};

static void on_delivery(void *opaque, int err, const struct verity_delivery *d)
{
    struct produced *p = opaque;
    p->err = err;
    p->offset = d ? d->offset : 0;
    p->duplicate = d && d->duplicate;
    p->done = true;
}

/* Builds the copy of dead letter m: its key, value, own headers (headers
 * has room for m->header_count entries) and the source record's timestamp. */
static void copy_record(const struct verity_message *m, const struct dead_letter *d,
                        struct verity_header *headers, struct verity_record *r)
{
    uint32_t nh = 0;
    size_t plen = strlen(VERITY_DLQ_HDR_PREFIX);
    for (uint32_t i = 0; i < m->header_count; i++) {
        const struct verity_header *h = &m->headers[i];
        if (h->key_len >= plen && memcmp(h->key, VERITY_DLQ_HDR_PREFIX, plen) == 0)
            continue;
        headers[nh++] = *h;
    }
    memset(r, 0, sizeof *r);
    r->key = m->key;
    r->key_len = m->key_len;
    r->value = m->value;
    r->value_len = m->value_len;
    r->headers = nh ? headers : NULL;
    r->header_count = nh;
    r->timestamp_ms = d->timestamp_ms > 0 ? d->timestamp_ms : m->timestamp_ms;
}

static int ensure_replay_group(struct dlq_ctx *x)
{
    const char *topics[] = {x->dlq};
    struct verity_group_config gc = {.mode = VERITY_GROUP_ORDERED, .topics = topics, .n_topics = 1};
    int rc = verity_group_create(x->ga, x->replay_group, &gc, VERITY_GROUP_START_EARLIEST, 0,
                                 NULL, NULL);
    return rc == VERITY_EEXIST ? 0 : rc;
}

/* Replays one dead letter: produce (waiting for the ack), then ack it in the
 * replay group. Returns 0 or the error (printed). */
static int replay_one(struct dlq_ctx *x, struct verity_producer *prod,
                      struct verity_group_consumer *gc, const struct verity_group_message *gm,
                      struct verity_header *hbuf)
{
    const struct verity_message *m = &gm->msg;
    struct dead_letter d;
    if (!dead_letter_parse(m, &d)) {
        fprintf(stderr, "verity dlq: %s/%" PRIu32 "@%" PRIu64 " has no dead-letter headers; "
                        "left in place\n",
                m->topic, m->partition, m->offset);
        return VERITY_EINVAL;
    }
    struct verity_record r;
    copy_record(m, &d, hbuf, &r);
    char idem[VERITY_TOPIC_NAME_MAX + 64];
    int il = snprintf(idem, sizeof idem, "verity-dlq-replay/%s/%" PRIu32 "/%" PRIu64, m->topic,
                      m->partition, m->offset);
    uint8_t key[VERITY_IDEM_KEY_SIZE];
    verity_idempotency_key(idem, (size_t)il, key);
    struct produced res = {0};
    int rc = verity_produce_batch(prod, d.topic, (int32_t)d.partition, &r, 1, key, on_delivery,
                                  &res);
    if (rc == 0)
        rc = verity_producer_flush(prod, PRODUCE_TIMEOUT_MS);
    if (rc == 0)
        rc = res.done ? res.err : VERITY_ETIMEOUT;
    if (rc == VERITY_EDUPLICATE)
        rc = 0; /* stored once, by an earlier replay */
    if (rc) {
        fprintf(stderr, "verity dlq: %s/%" PRIu32 "@%" PRIu64 " -> %s/%" PRId64 ": %s; left in "
                        "place\n",
                m->topic, m->partition, m->offset, d.topic, d.partition, verity_strerror(rc));
        return rc;
    }
    if ((rc = verity_group_ack(gc, m->topic, m->partition, m->offset)) != 0)
        return rc;
    if (x->a->json) {
        json_t *o = json_object();
        json_object_set_new(o, "dlq_partition", json_integer(m->partition));
        json_object_set_new(o, "dlq_offset", json_integer((json_int_t)m->offset));
        json_object_set_new(o, "topic", json_string(d.topic));
        json_object_set_new(o, "partition", json_integer(d.partition));
        json_object_set_new(o, "source_offset", json_integer(d.offset));
        json_object_set_new(o, "offset", json_integer((json_int_t)res.offset));
        json_object_set_new(o, "duplicate", json_boolean(res.duplicate));
        json_array_append_new(json_out, o);
    } else {
        printf("replayed %s/%" PRIu32 "@%" PRIu64 " -> %s/%" PRId64 "@%" PRIu64 "%s\n", m->topic,
               m->partition, m->offset, d.topic, d.partition, res.offset,
               res.duplicate ? " (already there)" : "");
    }
    return 0;
}

static int do_replay(struct dlq_ctx *x)
{
    int rc = ensure_replay_group(x);
    if (rc)
        return fail(x->replay_group, rc);
    struct verity_producer_config pc;
    verity_producer_config_default(&pc);
    pc.conn = x->conn;
    pc.idempotence = false; /* each copy carries its own idempotency key */
    struct verity_producer *prod = NULL;
    if ((rc = verity_producer_new(&pc, &prod)) != 0)
        return fail("producer", rc);
    const char *topics[] = {x->dlq};
    struct verity_group_consumer_config cc;
    verity_group_consumer_config_default(&cc);
    cc.conn = x->conn;
    cc.group = x->replay_group;
    cc.topics = topics;
    cc.n_topics = 1;
    cc.member_name = "verity dlq replay";
    cc.fetch_max = 100;
    cc.fetch_max_wait_ms = 200;
    struct verity_group_consumer *gc = NULL;
    if ((rc = verity_group_consumer_new(&cc, &gc)) != 0) {
        verity_producer_free(prod, 0);
        return fail("replay", rc);
    }
    if ((rc = verity_group_connect(gc, CONNECT_TIMEOUT_MS)) != 0) {
        verity_group_consumer_free(gc, 0);
        verity_producer_free(prod, 0);
        return fail(x->replay_group, rc);
    }
    struct verity_header *hbuf = calloc(VERITY_RECORD_HEADERS_MAX, sizeof *hbuf);
    uint64_t moved = 0, failed = 0;
    bool more = hbuf != NULL;
    rc = hbuf ? 0 : -ENOMEM;
    /* Until a poll finds nothing deliverable (or --count is reached). */
    while (rc == 0 && more && (x->a->count == 0 || moved + failed < x->a->count)) {
        const struct verity_group_message *m;
        size_t n = 0;
        rc = verity_group_poll(gc, POLL_MS, &m, &n);
        more = n > 0;
        for (size_t i = 0; rc == 0 && i < n; i++) {
            if (x->a->count && moved + failed >= x->a->count)
                break;
            if (m[i].msg.header_count > VERITY_RECORD_HEADERS_MAX)
                continue;
            if (replay_one(x, prod, gc, &m[i], hbuf) == 0)
                moved++;
            else
                failed++;
        }
    }
    if (rc == 0)
        rc = verity_group_commit(gc, PRODUCE_TIMEOUT_MS);
    free(hbuf);
    verity_group_consumer_free(gc, 5000);
    verity_producer_free(prod, 5000);
    if (rc)
        return fail("replay", rc);
    if (!x->a->json)
        fprintf(stderr, "replayed %" PRIu64 " dead letter%s from %s%s\n", moved,
                moved == 1 ? "" : "s", x->dlq, failed ? " (some could not be replayed)" : "");
    return failed ? CMD_EXIT_FAIL : CMD_EXIT_OK;
}

int cmd_dlq(int argc, char **argv)
{
    struct dlq_args a;
    int rc = parse(argc, argv, &a);
    if (rc >= 0)
        return rc;
    struct dlq_ctx x;
    if (a.json && !(json_out = json_array()))
        return CMD_EXIT_FAIL;
    rc = ctx_open(&x, &a);
    if (rc == -2) {
        if (!a.json)
            fprintf(stderr, "no dead letters: topic %s does not exist yet\n", x.dlq);
        rc = CMD_EXIT_OK;
        ctx_close(&x);
        if (json_out) {
            puts("[]");
            json_decref(json_out);
            json_out = NULL;
        }
        return rc;
    }
    if (rc == -1)
        rc = strcmp(a.action, "list") == 0 ? do_list(&x) : do_replay(&x);
    ctx_close(&x);
    if (json_out) {
        char *doc = json_dumps(json_out, JSON_COMPACT);
        if (doc)
            puts(doc);
        free(doc);
        json_decref(json_out);
        json_out = NULL;
    }
    return rc;
}
