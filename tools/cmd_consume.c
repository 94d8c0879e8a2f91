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
 * Exit codes: 0 ok, 1 failure (unknown topic, offset out of range, corrupt
 * data), 2 usage, 3 the broker cannot be reached. SIGINT/SIGTERM end a
 * --follow with 0.
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

#include "tools/cmds.h"
#include "verity/limits.h"
#include "verity/verity.h"

#define EXIT_UNREACHABLE 3
#define CONNECT_TIMEOUT_MS 5000
#define POLL_MS 200

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
            "                      [--follow] [--format raw|json] [--count N]\n"
            "                      [--broker HOST:PORT]\n"
            "  --from      earliest (default), latest, an offset, or a time: @MS since the epoch,\n"
            "              ISO 8601 UTC (2026-11-22T01:00:00Z) or relative (-30s, -5m, -2h, -1d)\n"
            "  --follow    keep reading new records (long poll) until interrupted\n"
            "  --format    raw: the value and a newline (default); json: one object per line\n"
            "  --count N   stop after N records\n"
            "Without --follow, stops at the end offsets seen when it starts.\n"
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

enum { OPT_FROM = 256, OPT_PARTITION, OPT_FOLLOW, OPT_FORMAT, OPT_COUNT, OPT_BROKER, OPT_HELP };

static const struct option long_opts[] = {
    {"from", required_argument, NULL, OPT_FROM},
    {"partition", required_argument, NULL, OPT_PARTITION},
    {"follow", no_argument, NULL, OPT_FOLLOW},
    {"format", required_argument, NULL, OPT_FORMAT},
    {"count", required_argument, NULL, OPT_COUNT},
    {"broker", required_argument, NULL, OPT_BROKER},
    {"help", no_argument, NULL, OPT_HELP},
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
    while ((c = getopt_long(argc, argv, "fh", long_opts, NULL)) != -1) {
        switch (c) {
        case OPT_FROM:
            if (!parse_from(optarg, &a->start, &a->start_arg))
                goto bad;
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
    a->topic = argv[optind];
    return -1;
bad:
    fprintf(stderr, "verity consume: invalid arguments\n");
    usage(stderr);
    return CMD_EXIT_USAGE;
}

/* Sets name (or name_base64 when the bytes are not UTF-8) on o. */
static void set_bytes(json_t *o, const char *name, const void *p, int32_t len)
{
    if (!p || len < 0) {
        json_object_set_new(o, name, json_null());
        return;
    }
    json_t *s = json_stringn(p, (size_t)len);
    if (s) {
        json_object_set_new(o, name, s);
        return;
    }
    char key[64];
    snprintf(key, sizeof key, "%s_base64", name);
    char *b64 = malloc(4 * (((size_t)len + 2) / 3) + 1);
    if (!b64)
        return;
    EVP_EncodeBlock((unsigned char *)b64, p, len);
    json_object_set_new(o, key, json_string(b64));
    free(b64);
}

static void print_message(const struct verity_message *m, bool json)
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
    set_bytes(o, "key", m->key, m->key_len);
    set_bytes(o, "value", m->value, m->value_len);
    if (m->header_count) {
        json_t *h = json_array();
        for (uint32_t i = 0; i < m->header_count; i++) {
            json_t *kv = json_object();
            set_bytes(kv, "key", m->headers[i].key, (int32_t)m->headers[i].key_len);
            set_bytes(kv, "value", m->headers[i].value, m->headers[i].value_len);
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
                verity_strerror(rc));
        return rc == VERITY_EINVAL ? CMD_EXIT_USAGE : CMD_EXIT_FAIL;
    }
    if ((rc = verity_client_connect(c, CONNECT_TIMEOUT_MS)) != 0) {
        fprintf(stderr, "verity consume: cannot reach broker %s: %s\n",
                verity_broker_resolve(a->broker), verity_strerror(rc));
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

int cmd_consume(int argc, char **argv)
{
    struct consume_args a;
    int rc = parse(argc, argv, &a);
    if (rc >= 0)
        return rc;
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
            print_message(&m[i], a.json);
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
