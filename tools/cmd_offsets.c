/*
 * verity offsets TOPIC: per partition, the first stored offset, the high
 * watermark (the next offset a consumer will see), and with --time the first
 * offset whose batch max timestamp is at or after that time.
 *
 * Exit codes: 0 ok, 1 failure (unknown topic), 2 usage, 3 the broker cannot
 * be reached.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "tools/cli_args.h"
#include "tools/cmds.h"
#include "verity/limits.h"
#include "verity/verity.h"

#define EXIT_UNREACHABLE 3
#define CONNECT_TIMEOUT_MS 5000

static void usage(FILE *f)
{
    fprintf(f,
            "usage: verity offsets TOPIC [--partition N] [--time @MS|ISO8601] [--json]\n"
            "                      [--broker HOST:PORT]\n"
            "Prints START (first stored offset) and END (high watermark) per partition, and\n"
            "with --time the first offset at or after that time (ms since the epoch with @,\n"
            "or 2026-11-22T01:00:00Z).\n"
            "exit: 0 ok, 1 failure, 2 usage, 3 broker unreachable\n");
}

static bool parse_time(const char *s, int64_t *ms)
{
    char *end;
    if (s[0] == '@') {
        errno = 0;
        long long v = strtoll(s + 1, &end, 10);
        if (!s[1] || *end || errno || v < 0)
            return false;
        *ms = v;
        return true;
    }
    struct tm tm = {0};
    end = strptime(s, "%Y-%m-%dT%H:%M:%S", &tm);
    if (!end || strcmp(end, "Z") != 0)
        return false;
    time_t t = timegm(&tm);
    if (t == (time_t)-1)
        return false;
    *ms = (int64_t)t * 1000;
    return true;
}

enum { OPT_PARTITION = 256, OPT_TIME, OPT_JSON, OPT_BROKER, OPT_HELP };

static const struct option long_opts[] = {
    {"partition", required_argument, NULL, OPT_PARTITION},
    {"time", required_argument, NULL, OPT_TIME},
    {"json", no_argument, NULL, OPT_JSON},
    {"broker", required_argument, NULL, OPT_BROKER},
    {"help", no_argument, NULL, OPT_HELP},
    {NULL, 0, NULL, 0},
};

static int exit_for(int err)
{
    return verity_err_unreachable(err) ? EXIT_UNREACHABLE : CMD_EXIT_FAIL;
}

int cmd_offsets(int argc, char **argv)
{
    const char *broker = NULL;
    int64_t partition = -1, ts = 0;
    bool json = false, with_time = false;
    char *end;
    int c;
    optind = 0;
    opterr = 0;
    while ((c = CLI_GETOPT(argc, argv, "h", long_opts)) != -1) {
        switch (c) {
        case OPT_PARTITION:
            errno = 0;
            partition = strtoll(optarg, &end, 10);
            if (!optarg[0] || *end || errno || partition < 0 || partition >= VERITY_PARTITIONS_MAX)
                goto bad;
            break;
        case OPT_TIME:
            if (!parse_time(optarg, &ts))
                goto bad;
            with_time = true;
            break;
        case OPT_JSON:
            json = true;
            break;
        case OPT_BROKER:
            broker = optarg;
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
    const char *topic = argv[optind];

    struct verity_conn_config conn;
    verity_conn_config_default(&conn);
    conn.broker = broker;
    struct verity_client *cl = NULL;
    int rc = verity_client_new(&conn, &cl);
    if (rc) {
        fprintf(stderr, "verity offsets: %s: %s\n", verity_broker_resolve(broker),
                cli_strerror(verity_broker_resolve(broker), rc));
        return rc == VERITY_EINVAL ? CMD_EXIT_USAGE : CMD_EXIT_FAIL;
    }
    if ((rc = verity_client_connect(cl, CONNECT_TIMEOUT_MS)) != 0) {
        fprintf(stderr, "verity offsets: cannot reach broker %s: %s\n",
                verity_broker_resolve(broker), cli_strerror(verity_broker_resolve(broker), rc));
        verity_client_free(cl);
        return EXIT_UNREACHABLE;
    }
    struct verity_topic_info *t = NULL;
    if ((rc = verity_topic_describe(cl, topic, &t)) != 0) {
        fprintf(stderr, "verity offsets: topic %s: %s\n", topic, verity_last_error_message());
        verity_client_free(cl);
        return exit_for(rc);
    }
    uint32_t n = t->partition_count ? t->partition_count : t->config.partitions;
    verity_topic_info_free(t, 1);
    if (partition >= (int64_t)n) {
        fprintf(stderr, "verity offsets: topic %s has %" PRIu32 " partitions\n", topic, n);
        verity_client_free(cl);
        return CMD_EXIT_USAGE;
    }
    json_t *arr = json ? json_array() : NULL;
    if (!json)
        printf("%-9s %-14s %-14s%s\n", "PARTITION", "START", "END", with_time ? " AT_TIME" : "");
    for (uint32_t p = 0; p < n && rc == 0; p++) {
        struct verity_offsets o, at = {0};
        if (partition >= 0 && p != partition)
            continue;
        rc = verity_list_offsets(cl, topic, p, VERITY_OFFSET_LATEST, 0, &o);
        if (rc == 0 && with_time)
            rc = verity_list_offsets(cl, topic, p, VERITY_OFFSET_TIMESTAMP, ts, &at);
        if (rc) {
            fprintf(stderr, "verity offsets: %s/%" PRIu32 ": %s\n", topic, p,
                    verity_last_error_message());
            break;
        }
        if (json) {
            json_t *po = json_object();
            json_object_set_new(po, "partition", json_integer(p));
            json_object_set_new(po, "start_offset", json_integer((json_int_t)o.start_offset));
            json_object_set_new(po, "end_offset", json_integer((json_int_t)o.high_watermark));
            if (with_time)
                json_object_set_new(po, "time_offset", json_integer((json_int_t)at.offset));
            json_array_append_new(arr, po);
        } else if (with_time) {
            printf("%-9" PRIu32 " %-14" PRIu64 " %-14" PRIu64 " %" PRIu64 "\n", p, o.start_offset,
                   o.high_watermark, at.offset);
        } else {
            printf("%-9" PRIu32 " %-14" PRIu64 " %" PRIu64 "\n", p, o.start_offset,
                   o.high_watermark);
        }
    }
    verity_client_free(cl);
    if (json) {
        if (rc == 0) {
            json_t *o = json_object();
            json_object_set_new(o, "topic", json_string(topic));
            json_object_set_new(o, "partitions", arr);
            char *s = json_dumps(o, JSON_COMPACT);
            if (s)
                puts(s);
            free(s);
            json_decref(o);
        } else {
            json_decref(arr);
        }
    }
    return rc ? exit_for(rc) : CMD_EXIT_OK;
bad:
    return cli_bad_args("verity offsets", c, long_opts, argv, usage);
}
