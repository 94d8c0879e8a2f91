/*
 * verity consume TOPIC: reads a topic's partitions (or one) from a start
 * position and prints the records, until the end offsets seen at start, or
 * for ever with --follow (long-poll fetches), or until --count records.
 *
 * --from: earliest (default) | latest | OFFSET | TIME, where TIME is @MS
 * (milliseconds since the epoch), an ISO 8601 UTC time
 * (2026-11-22T01:00:00Z, fractions allowed) or a relative time (-30s, -5m,
 * -2h, -1d). A time starts at the first batch whose max timestamp is at or
 * after it.
 *
 * --format raw prints each value and a newline; json prints one object per
 * line: topic, partition, offset, timestamp, key, value, headers (key and
 * value as "key_base64"/"value_base64" when they are not UTF-8).
 *
 * --group NAME reads as a member of a consumer group instead
 * (include/verity/group.h): messages are leased to this process, printed,
 * and acknowledged. The group is created when it does not exist (--mode,
 * default ordered, starting at --from); an existing group must have the
 * mode --mode names, if given, and read TOPIC. --ack auto (default) acks
 * each batch once it is written to stdout; --ack manual reads one answer
 * line from stdin per printed message: "ack", "nack [DELAY_MS [ERROR]]"
 * (without a delay: the group's backoff), "term [ERROR]" or "skip" (leave
 * the lease to expire). JSON lines carry delivery_count and
 * lease_deadline_ms; stderr ends with how many messages came and how many
 * of them were redeliveries. Without --follow it stops once a fetch finds
 * nothing deliverable. Messages fetched past --count go back to the group
 * when the member leaves.
 *
 * Exit codes: 0 ok, 1 failure (unknown topic, offset out of range, corrupt
 * data, group of another mode, acks that failed), 2 usage, 3 the broker
 * cannot be reached. SIGINT/SIGTERM end a --follow with 0.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>
#include <openssl/evp.h>

#include "tools/cli_json.h"
#include "tools/cli_args.h"
#include "tools/cmds.h"
#include "verity/group.h"
#include "verity/limits.h"
#include "verity/verity.h"

#define EXIT_UNREACHABLE 3
#define CONNECT_TIMEOUT_MS 5000
#define POLL_MS 200
#define GROUP_POLL_MS 1500 /* longer than a group fetch's long poll (500 ms) */

static volatile sig_atomic_t stop_requested;

static void on_signal(int sig)
{
    (void)sig;
    stop_requested = 1;
}

static void usage(FILE *f)
{
    fprintf(f,
            "usage: verity consume TOPIC [--from earliest|latest|OFFSET|TIME] [--partition N]\n"
            "                      [--follow] [--format raw|json] [--json] [--count N]\n"
            "                      [--broker HOST:PORT]\n"
            "       verity consume TOPIC --group NAME [--mode ordered|shared] [--ack auto|manual]\n"
            "                      [--from ...] [--follow] [--format raw|json] [--count N]\n"
            "  --from      earliest (default), latest, an offset, or a time: @MS since the epoch,\n"
            "              ISO 8601 UTC (2026-11-22T01:00:00Z) or relative (-30s, -5m, -2h, -1d)\n"
            "  --follow    keep reading new records (long poll) until interrupted\n"
            "  --format    raw: the value and a newline (default); json: one object per line\n"
            "  --json      the same as --format json (a stream: one JSON object per record)\n"
            "  --count N   stop after N records\n"
            "Without --follow, stops at the end offsets seen when it starts.\n"
            "  --group     consume as a member of consumer group NAME (created if missing,\n"
            "              starting at --from): leased messages, acknowledged once printed\n"
            "  --mode      the group's delivery mode when it is created (default ordered)\n"
            "  --ack       auto (default): ack each batch once written; manual: read one\n"
            "              line per message from stdin: ack | nack [DELAY_MS [ERROR]] |\n"
            "              term [ERROR] | skip\n"
            "With --group and without --follow, stops once nothing is deliverable.\n"
            "exit: 0 ok, 1 failure, 2 usage, 3 broker unreachable\n");
}

struct consume_args {
    const char *topic;
    enum verity_start start;
    int64_t start_arg;
    int64_t partition;         /* -1: all */
    bool follow;
    bool json;
    uint64_t count;            /* 0: unlimited */
    const char *broker;
    const char *group;         /* --group: consume as a group member */
    enum verity_group_mode mode;
    bool mode_given;
    bool ack_manual;
};

/* Parses an ISO 8601 UTC time "YYYY-MM-DDTHH:MM:SS[.fff]Z" into ms. */
static bool parse_iso(const char *s, int64_t *ms_out)
{
    struct tm tm = {0};
    char *end = strptime(s, "%Y-%m-%dT%H:%M:%S", &tm);
    if (!end)
        return false;
    int64_t ms = 0;
    if (*end == '.') {
        int64_t scale = 100;
        for (end++; *end >= '0' && *end <= '9'; end++) {
            ms += (*end - '0') * scale;
            scale /= 10;
        }
    }
    if (strcmp(end, "Z") != 0 && strcmp(end, "+00:00") != 0)
        return false;
    time_t t = timegm(&tm);
    if (t == (time_t)-1)
        return false;
    *ms_out = (int64_t)t * 1000 + ms;
    return true;
}

static bool parse_from(const char *s, enum verity_start *start, int64_t *arg)
{
    char *end;
    *arg = 0;
    if (strcmp(s, "earliest") == 0) {
        *start = VERITY_START_EARLIEST;
        return true;
    }
    if (strcmp(s, "latest") == 0) {
        *start = VERITY_START_LATEST;
        return true;
    }
    if (s[0] == '@') {
        errno = 0;
        long long v = strtoll(s + 1, &end, 10);
        if (!s[1] || *end || errno || v < 0)
            return false;
        *start = VERITY_START_TIME;
        *arg = v;
        return true;
    }
    if (s[0] == '-') {
        errno = 0;
        long long v = strtoll(s + 1, &end, 10);
        int64_t unit = *end == 's' ? 1000 : *end == 'm' ? 60000 : *end == 'h' ? 3600000
                     : *end == 'd' ? 86400000 : 0;
        if (!s[1] || errno || v < 0 || unit == 0 || end[1] != '\0' || v > INT64_MAX / unit)
            return false;
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        *start = VERITY_START_TIME;
        *arg = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000 - v * unit;
        return true;
    }
    if (s[0] >= '0' && s[0] <= '9' && !strchr(s, 'T')) {
        errno = 0;
        unsigned long long v = strtoull(s, &end, 10);
        if (*end || errno || v > INT64_MAX)
            return false;
        *start = VERITY_START_OFFSET;
        *arg = (int64_t)v;
        return true;
    }
    if (parse_iso(s, arg)) {
        *start = VERITY_START_TIME;
        return true;
    }
    return false;
}

enum { OPT_FROM = 256, OPT_PARTITION, OPT_FOLLOW, OPT_FORMAT, OPT_COUNT, OPT_BROKER, OPT_HELP,
       OPT_GROUP, OPT_MODE, OPT_ACK, OPT_JSON };

static const struct option long_opts[] = {
    {"from", required_argument, NULL, OPT_FROM},
    {"partition", required_argument, NULL, OPT_PARTITION},
    {"follow", no_argument, NULL, OPT_FOLLOW},
    {"format", required_argument, NULL, OPT_FORMAT},
    {"count", required_argument, NULL, OPT_COUNT},
    {"broker", required_argument, NULL, OPT_BROKER},
    {"help", no_argument, NULL, OPT_HELP},
    {"group", required_argument, NULL, OPT_GROUP},
    {"mode", required_argument, NULL, OPT_MODE},
    {"ack", required_argument, NULL, OPT_ACK},
    {"json", no_argument, NULL, OPT_JSON},
    {NULL, 0, NULL, 0},
};

static int parse(int argc, char **argv, struct consume_args *a)
{
    char *end;
    int c;
    memset(a, 0, sizeof *a);
    a->start = VERITY_START_EARLIEST;
    a->partition = -1;
    optind = 0;
    opterr = 0;
    while ((c = CLI_GETOPT(argc, argv, "fh", long_opts)) != -1) {
        switch (c) {
        case OPT_FROM:
            if (!parse_from(optarg, &a->start, &a->start_arg))
                return cli_bad_value("verity consume", "--from", optarg,
                                     "earliest, latest, an offset, @MS, an ISO 8601 UTC time "
                                     "or -30s/-5m/-2h/-1d");
            break;
        case OPT_PARTITION:
            errno = 0;
            a->partition = strtoll(optarg, &end, 10);
            if (!optarg[0] || *end || errno || a->partition < 0 ||
                a->partition >= VERITY_PARTITIONS_MAX)
                goto bad;
            break;
        case OPT_FOLLOW:
        case 'f':
            a->follow = true;
            break;
        case OPT_JSON: /* the same as --format json: a stream, one object per line */
            a->json = true;
            break;
        case OPT_FORMAT:
            if (strcmp(optarg, "json") == 0)
                a->json = true;
            else if (strcmp(optarg, "raw") != 0)
                goto bad;
            break;
        case OPT_COUNT:
            errno = 0;
            a->count = strtoull(optarg, &end, 10);
            if (!optarg[0] || *end || errno || optarg[0] == '-' || a->count == 0)
                goto bad;
            break;
        case OPT_BROKER:
            a->broker = optarg;
            break;
        case OPT_GROUP:
            if (!verity_group_name_ok(optarg))
                goto bad;
            a->group = optarg;
            break;
        case OPT_MODE:
            if (verity_group_mode_parse(optarg, &a->mode) != 0)
                goto bad;
            a->mode_given = true;
            break;
        case OPT_ACK:
            if (strcmp(optarg, "manual") == 0)
                a->ack_manual = true;
            else if (strcmp(optarg, "auto") != 0)
                goto bad;
            break;
        case OPT_HELP:
        case 'h':
            usage(stdout);
            return CMD_EXIT_OK;
        default:
            goto bad;
        }
    }
    if (optind >= argc) {
        cli_why = "missing TOPIC";
        goto bad;
    }
    if (optind < argc - 1) {
        fprintf(stderr, "verity consume: unexpected argument '%s' (one TOPIC)\n", argv[optind + 1]);
        return CMD_EXIT_USAGE;
    }
    a->topic = argv[optind];
    /* Group options need a group; a group member takes no --partition. */
    if (!a->group && (a->mode_given || a->ack_manual)) {
        cli_why = "--mode and --ack go with --group";
        goto bad;
    }
    if (a->group && a->partition >= 0) {
        cli_why = "--partition does not go with --group (the group assigns partitions)";
        goto bad;
    }
    return -1;
bad:
    return cli_bad_args("verity consume", c, long_opts, argv, usage);
}

/* gm (may be NULL): the group delivery m belongs to. */
static void print_message(const struct verity_message *m, const struct verity_group_message *gm,
                          bool json)
{
    if (!json) {
        if (m->value && m->value_len > 0)
            fwrite(m->value, 1, (size_t)m->value_len, stdout);
        fputc('\n', stdout);
        return;
    }
    json_t *o = json_object();
    json_object_set_new(o, "topic", json_string(m->topic));
    json_object_set_new(o, "partition", json_integer(m->partition));
    json_object_set_new(o, "offset", json_integer((json_int_t)m->offset));
    json_object_set_new(o, "timestamp", json_integer(m->timestamp_ms));
    if (gm) {
        json_object_set_new(o, "delivery_count", json_integer(gm->delivery_count));
        json_object_set_new(o, "lease_deadline_ms", json_integer(gm->lease_deadline_ms));
    }
    cli_json_set_bytes(o, "key", m->key, m->key_len);
    cli_json_set_bytes(o, "value", m->value, m->value_len);
    if (m->header_count) {
        json_t *h = json_array();
        for (uint32_t i = 0; i < m->header_count; i++) {
            json_t *kv = json_object();
            cli_json_set_bytes(kv, "key", m->headers[i].key, (int32_t)m->headers[i].key_len);
            cli_json_set_bytes(kv, "value", m->headers[i].value, m->headers[i].value_len);
            json_array_append_new(h, kv);
        }
        json_object_set_new(o, "headers", h);
    }
    char *s = json_dumps(o, JSON_COMPACT);
    if (s) {
        fputs(s, stdout);
        fputc('\n', stdout);
    }
    free(s);
    json_decref(o);
}

/* Finds the partitions and, without --follow, their end offsets now. */
static int inspect(const struct consume_args *a, uint32_t *nparts, uint64_t **ends)
{
    struct verity_conn_config conn;
    verity_conn_config_default(&conn);
    conn.broker = a->broker;
    struct verity_client *c = NULL;
    int rc = verity_client_new(&conn, &c);
    if (rc) {
        fprintf(stderr, "verity consume: %s: %s\n", verity_broker_resolve(a->broker),
                cli_strerror(verity_broker_resolve(a->broker), rc));
        return rc == VERITY_EINVAL ? CMD_EXIT_USAGE : CMD_EXIT_FAIL;
    }
    if ((rc = verity_client_connect(c, CONNECT_TIMEOUT_MS)) != 0) {
        fprintf(stderr, "verity consume: cannot reach broker %s: %s\n",
                verity_broker_resolve(a->broker), cli_strerror(verity_broker_resolve(a->broker), rc));
        verity_client_free(c);
        return EXIT_UNREACHABLE;
    }
    struct verity_topic_info *t = NULL;
    if ((rc = verity_topic_describe(c, a->topic, &t)) != 0) {
        fprintf(stderr, "verity consume: topic %s: %s\n", a->topic, verity_last_error_message());
        verity_client_free(c);
        return verity_err_unreachable(rc) ? EXIT_UNREACHABLE : CMD_EXIT_FAIL;
    }
    *nparts = t->partition_count ? t->partition_count : t->config.partitions;
    verity_topic_info_free(t, 1);
    if (a->partition >= (int64_t)*nparts) {
        fprintf(stderr, "verity consume: topic %s has %" PRIu32 " partitions\n", a->topic,
                *nparts);
        verity_client_free(c);
        return CMD_EXIT_USAGE;
    }
    *ends = calloc(*nparts ? *nparts : 1, sizeof **ends);
    if (!*ends) {
        verity_client_free(c);
        return CMD_EXIT_FAIL;
    }
    for (uint32_t p = 0; p < *nparts && !a->follow; p++) {
        struct verity_offsets o;
        if (a->partition >= 0 && p != a->partition)
            continue;
        if ((rc = verity_list_offsets(c, a->topic, p, VERITY_OFFSET_LATEST, 0, &o)) != 0) {
            fprintf(stderr, "verity consume: offsets of %s/%" PRIu32 ": %s\n", a->topic, p,
                    verity_last_error_message());
            free(*ends);
            verity_client_free(c);
            return verity_err_unreachable(rc) ? EXIT_UNREACHABLE : CMD_EXIT_FAIL;
        }
        (*ends)[p] = o.offset;
    }
    verity_client_free(c);
    return -1;
}

/* True when every assigned partition has reached its end offset. */
static bool at_end(struct verity_consumer *cons, const struct consume_args *a, uint32_t nparts,
                   const uint64_t *ends)
{
    for (uint32_t p = 0; p < nparts; p++) {
        uint64_t pos, hw;
        if (a->partition >= 0 && p != a->partition)
            continue;
        int rc = verity_consumer_position(cons, a->topic, p, &pos, &hw);
        if (rc != 0 || pos < ends[p])
            return false;
    }
    return true;
}

/* ---- --group ---------------------------------------------------------- */

static enum verity_group_start group_start(const struct consume_args *a)
{
    switch (a->start) {
    case VERITY_START_OFFSET:
        return VERITY_GROUP_START_OFFSET;
    case VERITY_START_LATEST:
        return VERITY_GROUP_START_LATEST;
    case VERITY_START_TIME:
        return VERITY_GROUP_START_TIME;
    default:
        return VERITY_GROUP_START_EARLIEST;
    }
}

/* Creates the group when missing; checks mode and topic when it exists.
 * Returns -1 when fine, else the exit code. */
static int group_prepare(const struct consume_args *a, const struct verity_conn_config *conn)
{
    struct verity_group_admin *ga = NULL;
    int rc = verity_group_admin_new(conn, &ga);
    if (rc) {
        fprintf(stderr, "verity consume: %s: %s\n", verity_broker_resolve(a->broker),
                cli_strerror(verity_broker_resolve(a->broker), rc));
        return rc == VERITY_EINVAL ? CMD_EXIT_USAGE : CMD_EXIT_FAIL;
    }
    if ((rc = verity_group_admin_connect(ga, CONNECT_TIMEOUT_MS)) != 0) {
        fprintf(stderr, "verity consume: cannot reach broker %s: %s\n",
                verity_broker_resolve(a->broker), cli_strerror(verity_broker_resolve(a->broker), rc));
        verity_group_admin_free(ga);
        return EXIT_UNREACHABLE;
    }
    struct verity_group_info *g = NULL;
    rc = verity_group_describe(ga, a->group, &g);
    if (rc == VERITY_ENOTFOUND) {
        const char *topics[] = {a->topic};
        struct verity_group_config cfg = {.mode = a->mode_given ? a->mode : VERITY_GROUP_ORDERED,
                                          .topics = topics,
                                          .n_topics = 1};
        rc = verity_group_create(ga, a->group, &cfg, group_start(a), a->start_arg, NULL, NULL);
        if (rc == VERITY_EEXIST) /* another member created it meanwhile */
            rc = verity_group_describe(ga, a->group, &g);
    }
    int out = -1;
    if (rc) {
        fprintf(stderr, "verity consume: group %s: %s\n", a->group, verity_last_error_message());
        out = verity_err_unreachable(rc) ? EXIT_UNREACHABLE : CMD_EXIT_FAIL;
    } else if (g && a->mode_given && g->mode != a->mode) {
        fprintf(stderr, "verity consume: group %s is %s, not %s\n", a->group,
                verity_group_mode_name(g->mode), verity_group_mode_name(a->mode));
        out = CMD_EXIT_FAIL;
    } else if (g) {
        bool reads = false;
        for (size_t i = 0; i < g->n_topics; i++)
            reads = reads || strcmp(g->topics[i], a->topic) == 0;
        if (!reads) {
            fprintf(stderr, "verity consume: group %s does not read topic %s\n", a->group,
                    a->topic);
            out = CMD_EXIT_FAIL;
        }
    }
    verity_group_info_free(g, 1);
    verity_group_admin_free(ga);
    return out;
}

/* --ack manual: reads the answer for m from stdin and acts on it. Returns
 * 0, an error from the group call, or 1 at end of input. */
static int manual_answer(struct verity_group_consumer *gc, const struct verity_message *m)
{
    char line[512];
    if (!fgets(line, sizeof line, stdin))
        return 1;
    line[strcspn(line, "\r\n")] = '\0';
    char *rest = NULL;
    char *word = strtok_r(line, " ", &rest);
    if (!word || strcmp(word, "ack") == 0)
        return verity_group_ack(gc, m->topic, m->partition, m->offset);
    if (strcmp(word, "skip") == 0)
        return 0;
    if (strcmp(word, "term") == 0)
        return verity_group_term(gc, m->topic, m->partition, m->offset, rest ? rest : "");
    if (strcmp(word, "nack") == 0) {
        int64_t delay = -1;
        char *d = strtok_r(NULL, " ", &rest);
        if (d) {
            char *end;
            errno = 0;
            long long v = strtoll(d, &end, 10);
            if (*end || errno || v < 0) {
                fprintf(stderr, "verity consume: bad nack delay '%s'; skipped\n", d);
                return 0;
            }
            delay = v;
        }
        return verity_group_nack(gc, m->topic, m->partition, m->offset, delay, rest ? rest : "");
    }
    fprintf(stderr, "verity consume: unknown answer '%s' (ack|nack|term|skip); skipped\n", word);
    return 0;
}

static int consume_group(const struct consume_args *a)
{
    struct verity_group_consumer_config gc;
    verity_group_consumer_config_default(&gc);
    gc.conn.broker = a->broker;
    gc.conn.client_id = "verity-cli";
    int rc = group_prepare(a, &gc.conn);
    if (rc >= 0)
        return rc;
    const char *topics[] = {a->topic};
    gc.group = a->group;
    gc.topics = topics;
    gc.n_topics = 1;
    gc.member_name = "verity consume";
    /* Lease only what is about to be printed: fetch when the loop asks. */
    gc.queue_max = 0;
    gc.fetch_max = a->count && a->count < 1000 ? (uint32_t)a->count : 1000;
    struct verity_group_consumer *g = NULL;
    if ((rc = verity_group_consumer_new(&gc, &g)) != 0) {
        fprintf(stderr, "verity consume: %s\n", verity_strerror(rc));
        return CMD_EXIT_FAIL;
    }
    if ((rc = verity_group_connect(g, CONNECT_TIMEOUT_MS)) != 0) {
        fprintf(stderr, "verity consume: group %s: %s\n", a->group, verity_strerror(rc));
        verity_group_consumer_free(g, 0);
        return verity_err_unreachable(rc) ? EXIT_UNREACHABLE : CMD_EXIT_FAIL;
    }
    struct sigaction sa = {.sa_handler = on_signal};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    uint64_t printed = 0, redelivered = 0;
    bool eof = false;
    while (rc == 0 && !eof && !stop_requested && (a->count == 0 || printed < a->count)) {
        const struct verity_group_message *m;
        size_t n = 0;
        rc = verity_group_poll(g, GROUP_POLL_MS, &m, &n);
        if (rc || (n == 0 && !a->follow))
            break;
        size_t shown = 0;
        for (; shown < n && (a->count == 0 || printed < a->count) && !eof; shown++) {
            print_message(&m[shown].msg, &m[shown], a->json);
            printed++;
            redelivered += m[shown].delivery_count > 1;
            if (a->ack_manual) {
                if (fflush(stdout) != 0) {
                    rc = -errno;
                    break;
                }
                int arc = manual_answer(g, &m[shown].msg);
                if (arc == 1)
                    eof = true;
                else if (arc < 0)
                    fprintf(stderr, "verity consume: %s/%" PRIu32 "@%" PRIu64 ": %s\n",
                            m[shown].msg.topic, m[shown].msg.partition, m[shown].msg.offset,
                            verity_strerror(arc));
            }
        }
        if (!a->ack_manual && shown) {
            /* Acknowledge only what reached stdout. */
            if (fflush(stdout) != 0)
                rc = -errno;
            else
                rc = verity_group_ack_many(g, m, shown);
        }
    }
    if (rc == 0)
        rc = verity_group_commit(g, 30000);
    if (rc)
        fprintf(stderr, "verity consume: group %s: %s\n", a->group, verity_strerror(rc));
    fprintf(stderr, "verity consume: %" PRIu64 " messages from group %s, %" PRIu64
                    " of them redelivered\n",
            printed, a->group, redelivered);
    verity_group_consumer_free(g, 5000);
    if (rc)
        return verity_err_unreachable(rc) ? EXIT_UNREACHABLE : CMD_EXIT_FAIL;
    return CMD_EXIT_OK;
}

int cmd_consume(int argc, char **argv)
{
    struct consume_args a;
    int rc = parse(argc, argv, &a);
    if (rc >= 0)
        return rc;
    if (a.group)
        return consume_group(&a);
    uint32_t nparts = 0;
    uint64_t *ends = NULL;
    if ((rc = inspect(&a, &nparts, &ends)) >= 0)
        return rc;

    struct verity_consumer_config cc;
    verity_consumer_config_default(&cc);
    cc.conn.broker = a.broker;
    struct verity_consumer *cons = NULL;
    if ((rc = verity_consumer_new(&cc, &cons)) != 0) {
        fprintf(stderr, "verity consume: %s\n", verity_strerror(rc));
        free(ends);
        return CMD_EXIT_FAIL;
    }
    for (uint32_t p = 0; p < nparts && rc == 0; p++)
        if (a.partition < 0 || p == a.partition)
            rc = verity_consumer_assign(cons, a.topic, p, a.start, a.start_arg);

    struct sigaction sa = {.sa_handler = on_signal};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    uint64_t printed = 0;
    uint32_t bad_part = 0;
    while (rc == 0 && !stop_requested && (a.count == 0 || printed < a.count)) {
        if (!a.follow && at_end(cons, &a, nparts, ends))
            break;
        const struct verity_message *m;
        size_t n = 0;
        rc = verity_consumer_poll(cons, POLL_MS, &m, &n, &bad_part);
        for (size_t i = 0; rc == 0 && i < n && (a.count == 0 || printed < a.count); i++) {
            if (!a.follow && m[i].offset >= ends[m[i].partition])
                continue; /* arrived after we started */
            print_message(&m[i], NULL, a.json);
            printed++;
        }
        if (n && fflush(stdout) != 0)
            break;
    }
    if (rc)
        fprintf(stderr, "verity consume: %s/%" PRIu32 ": %s\n", a.topic, bad_part,
                verity_strerror(rc));
    verity_consumer_free(cons);
    free(ends);
    if (rc)
        return verity_err_unreachable(rc) ? EXIT_UNREACHABLE : CMD_EXIT_FAIL;
    return CMD_EXIT_OK;
}
