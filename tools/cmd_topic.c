/*
 * verity topic create|delete|list|describe: topic administration through
 * libverity's admin client.
 *
 * Exit codes: 0 ok, 1 the broker refused (exists, not found, invalid), 2
 * usage, 3 the broker cannot be reached. --json prints machine-readable
 * output on stdout; errors always go to stderr.
 */
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "tools/cli_args.h"
#include "verity/limits.h"
#include "tools/cmds.h"
#include "verity/verity.h"

#define EXIT_UNREACHABLE 3
#define CONNECT_TIMEOUT_MS 5000

static void usage(FILE *f)
{
    fprintf(f,
            "usage: verity topic create NAME [--partitions N] [--durability always|group|os]\n"
            "                   [--retention-ms MS] [--retention-bytes N] [--segment-bytes N]\n"
            "                   [--max-message-bytes N] [--replicas 1|3|5]\n"
            "       verity topic delete NAME\n"
            "       verity topic list [--internal]\n"
            "       verity topic describe NAME\n"
            "common options: --broker HOST:PORT[,HOST:PORT...] (default $%s or %s), --json\n"
            "--replicas: replication factor on a cluster (default: the broker's)\n"
            "exit: 0 ok, 1 refused by the broker, 2 usage, 3 broker unreachable\n",
            VERITY_BROKER_ENV, VERITY_BROKER_DEFAULT);
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
    fprintf(stderr, "verity topic %s: %s%s%s\n", what, verity_strerror(err), msg[0] ? ": " : "",
            msg[0] && strcmp(msg, verity_strerror(err)) ? msg : "");
    return exit_for(err);
}

/* Parses a non-negative integer option; returns false on garbage. */
static bool parse_i64(const char *s, int64_t min, int64_t *out)
{
    char *end;
    long long v = strtoll(s, &end, 10);
    if (!*s || *end || v < min)
        return false;
    *out = v;
    return true;
}

static json_t *topic_json(const struct verity_topic_info *t)
{
    json_t *o = json_object();
    json_object_set_new(o, "name", json_string(t->name));
    if (t->error) {
        json_object_set_new(o, "error", json_string(verity_errname(t->error)));
        json_object_set_new(o, "error_message", json_string(t->error_message));
    }
    json_object_set_new(o, "partition_count", json_integer(t->config.partitions));
    json_object_set_new(o, "durability",
                        json_string(verity_durability_name(t->config.durability)));
    json_object_set_new(o, "retention_ms", json_integer(t->config.retention_ms));
    json_object_set_new(o, "retention_bytes", json_integer(t->config.retention_bytes));
    json_object_set_new(o, "segment_bytes", json_integer((json_int_t)t->config.segment_bytes));
    json_object_set_new(o, "max_message_bytes", json_integer(t->config.max_message_bytes));
    json_object_set_new(o, "replication_factor", json_integer(t->config.replication_factor));
    if (t->partition_count) {
        json_t *arr = json_array();
        for (uint32_t i = 0; i < t->partition_count; i++) {
            const struct verity_partition_info *p = &t->partitions[i];
            json_t *po = json_object();
            json_object_set_new(po, "partition", json_integer(p->partition));
            json_object_set_new(po, "leader", json_integer(p->leader));
            json_object_set_new(po, "start_offset", json_integer((json_int_t)p->start_offset));
            json_object_set_new(po, "high_watermark",
                                json_integer((json_int_t)p->high_watermark));
            json_object_set_new(po, "end_offset", json_integer((json_int_t)p->end_offset));
            json_object_set_new(po, "size_bytes", json_integer((json_int_t)p->size_bytes));
            if (p->error)
                json_object_set_new(po, "error", json_string(verity_errname(p->error)));
            json_array_append_new(arr, po);
        }
        json_object_set_new(o, "partitions", arr);
    }
    return o;
}

static void print_json(json_t *o)
{
    char *s = json_dumps(o, JSON_COMPACT);
    if (s)
        puts(s);
    free(s);
    json_decref(o);
}

static void print_topic(const struct verity_topic_info *t)
{
    printf("topic %s: %" PRIu32 " partition%s, durability %s, retention_ms %" PRId64
           ", retention_bytes %" PRId64 ", segment_bytes %" PRIu64 ", max_message_bytes %" PRIu32
           "\n",
           t->name, t->config.partitions, t->config.partitions == 1 ? "" : "s",
           verity_durability_name(t->config.durability), t->config.retention_ms, t->config.retention_bytes, t->config.segment_bytes,
           t->config.max_message_bytes);
    if (t->partition_count)
        printf("%-9s %-6s %-14s %-14s %-14s %s\n", "PARTITION", "LEADER", "START", "HIGH_WM",
               "END", "BYTES");
    for (uint32_t i = 0; i < t->partition_count; i++) {
        const struct verity_partition_info *p = &t->partitions[i];
        printf("%-9" PRIu32 " %-6" PRIu32 " %-14" PRIu64 " %-14" PRIu64 " %-14" PRIu64
               " %" PRIu64 "%s%s\n",
               p->partition, p->leader, p->start_offset, p->high_watermark, p->end_offset,
               p->size_bytes, p->error ? "  " : "", p->error ? verity_errname(p->error) : "");
    }
}

enum { OPT_PARTITIONS = 256, OPT_DURABILITY, OPT_RET_MS, OPT_RET_BYTES, OPT_SEG_BYTES,
       OPT_MAX_MSG, OPT_BROKER, OPT_JSON, OPT_INTERNAL, OPT_HELP, OPT_REPLICAS };

static const struct option long_opts[] = {
    {"partitions", required_argument, NULL, OPT_PARTITIONS},
    {"durability", required_argument, NULL, OPT_DURABILITY},
    {"retention-ms", required_argument, NULL, OPT_RET_MS},
    {"retention-bytes", required_argument, NULL, OPT_RET_BYTES},
    {"segment-bytes", required_argument, NULL, OPT_SEG_BYTES},
    {"max-message-bytes", required_argument, NULL, OPT_MAX_MSG},
    {"replicas", required_argument, NULL, OPT_REPLICAS},
    {"broker", required_argument, NULL, OPT_BROKER},
    {"json", no_argument, NULL, OPT_JSON},
    {"internal", no_argument, NULL, OPT_INTERNAL},
    {"help", no_argument, NULL, OPT_HELP},
    {NULL, 0, NULL, 0},
};

struct topic_args {
    const char *action;
    const char *name;
    const char *broker;
    bool json;
    bool internal;
    bool config_given;
    struct verity_topic_config cfg;
};

/* Returns -1 when parsed, else the exit code (help or usage). */
static int parse(int argc, char **argv, struct topic_args *a)
{
    int64_t v;
    int c;
    memset(a, 0, sizeof *a);
    optind = 0;
    opterr = 0;
    while ((c = CLI_GETOPT(argc, argv, "h", long_opts)) != -1) {
        switch (c) {
        case OPT_PARTITIONS:
            if (!parse_i64(optarg, 1, &v) || v > VERITY_PARTITIONS_MAX) {
                char must[64];
                snprintf(must, sizeof must, "an integer 1..%u", VERITY_PARTITIONS_MAX);
                return cli_bad_value("verity topic", "--partitions", optarg, must);
            }
            a->cfg.partitions = (uint32_t)v;
            a->config_given = true;
            break;
        case OPT_REPLICAS:
            if (!parse_i64(optarg, 1, &v) || (v != 1 && v != 3 && v != 5))
                return cli_bad_value("verity topic", "--replicas", optarg, "1, 3 or 5");
            a->cfg.replication_factor = (uint32_t)v;
            a->config_given = true;
            break;
        case OPT_DURABILITY:
            if (verity_durability_parse(optarg, &a->cfg.durability) != 0)
                goto bad;
            a->config_given = true;
            break;
        case OPT_RET_MS:
            if (!parse_i64(optarg, -1, &a->cfg.retention_ms))
                goto bad;
            a->config_given = true;
            break;
        case OPT_RET_BYTES:
            if (!parse_i64(optarg, -1, &a->cfg.retention_bytes))
                goto bad;
            a->config_given = true;
            break;
        case OPT_SEG_BYTES:
            if (!parse_i64(optarg, 1, &v))
                goto bad;
            a->cfg.segment_bytes = (uint64_t)v;
            a->config_given = true;
            break;
        case OPT_MAX_MSG:
            if (!parse_i64(optarg, 1, &v) || v > UINT32_MAX)
                goto bad;
            a->cfg.max_message_bytes = (uint32_t)v;
            a->config_given = true;
            break;
        case OPT_BROKER:
            a->broker = optarg;
            break;
        case OPT_JSON:
            a->json = true;
            break;
        case OPT_INTERNAL:
            a->internal = true;
            break;
        case OPT_HELP:
        case 'h':
            usage(stdout);
            return CMD_EXIT_OK;
        default:
            goto bad;
        }
    }
    /* getopt_long moved the operands (action, name) behind the options. */
    for (; optind < argc; optind++) {
        if (!a->action)
            a->action = argv[optind];
        else if (!a->name)
            a->name = argv[optind];
        else {
            fprintf(stderr, "verity topic: unexpected argument '%s'\n", argv[optind]);
            return CMD_EXIT_USAGE;
        }
    }
    if (!a->action) {
        cli_why = "missing action: create, delete, list or describe";
        goto bad;
    }
    if (strcmp(a->action, "create") && strcmp(a->action, "delete") &&
        strcmp(a->action, "list") && strcmp(a->action, "describe")) {
        fprintf(stderr, "verity topic: unknown action '%s' (create, delete, list or describe)\n",
                a->action);
        return CMD_EXIT_USAGE;
    }
    bool needs_name = strcmp(a->action, "list") != 0;
    if (needs_name && !a->name) {
        cli_why = "missing topic NAME";
        goto bad;
    }
    if (!needs_name && a->name) {
        fprintf(stderr, "verity topic: unexpected argument '%s' (list takes no name)\n", a->name);
        return CMD_EXIT_USAGE;
    }
    if (a->config_given && strcmp(a->action, "create") != 0) {
        cli_why = "topic options (--partitions, --durability, ...) go with create only";
        goto bad;
    }
    return -1;
bad:
    return cli_bad_args("verity topic", c, long_opts, argv, usage);
}

static int run(struct verity_client *c, const struct topic_args *a)
{
    int rc;
    if (strcmp(a->action, "create") == 0) {
        struct verity_topic_info *t = NULL;
        if ((rc = verity_topic_create(c, a->name, &a->cfg, &t)) != 0)
            return fail("create", rc);
        if (a->json)
            print_json(topic_json(t));
        else
            printf("created topic %s (%" PRIu32 " partition%s, durability %s)\n", t->name,
                   t->config.partitions, t->config.partitions == 1 ? "" : "s",
                   verity_durability_name(t->config.durability));
        verity_topic_info_free(t, 1);
        return CMD_EXIT_OK;
    }
    if (strcmp(a->action, "delete") == 0) {
        if ((rc = verity_topic_delete(c, a->name)) != 0)
            return fail("delete", rc);
        if (a->json)
            printf("{\"deleted\":\"%s\"}\n", a->name);
        else
            printf("deleted topic %s\n", a->name);
        return CMD_EXIT_OK;
    }
    if (strcmp(a->action, "describe") == 0) {
        struct verity_topic_info *t = NULL;
        if ((rc = verity_topic_describe(c, a->name, &t)) != 0)
            return fail("describe", rc);
        if (a->json)
            print_json(topic_json(t));
        else
            print_topic(t);
        verity_topic_info_free(t, 1);
        return CMD_EXIT_OK;
    }
    if (strcmp(a->action, "list") == 0) {
        struct verity_topic_info *t = NULL;
        size_t n = 0;
        if ((rc = verity_topic_list(c, a->internal, &t, &n)) != 0)
            return fail("list", rc);
        if (a->json) {
            json_t *arr = json_array();
            for (size_t i = 0; i < n; i++)
                json_array_append_new(arr, topic_json(&t[i]));
            print_json(arr);
        } else {
            printf("%-40s %-10s %s\n", "TOPIC", "PARTITIONS", "DURABILITY");
            for (size_t i = 0; i < n; i++)
                printf("%-40s %-10" PRIu32 " %s\n", t[i].name, t[i].config.partitions,
                       verity_durability_name(t[i].config.durability));
        }
        verity_topic_info_free(t, n);
        return CMD_EXIT_OK;
    }
    fprintf(stderr, "verity topic: unknown action '%s'\n", a->action);
    usage(stderr);
    return CMD_EXIT_USAGE;
}

int cmd_topic(int argc, char **argv)
{
    struct topic_args a;
    int rc = parse(argc, argv, &a);
    if (rc >= 0)
        return rc;
    struct verity_conn_config conn;
    verity_conn_config_default(&conn);
    conn.broker = a.broker;
    conn.request_timeout_ms = 30000;
    struct verity_client *c = NULL;
    if ((rc = verity_client_new(&conn, &c)) != 0) {
        fprintf(stderr, "verity topic: %s: %s\n", verity_broker_resolve(a.broker),
                cli_strerror(verity_broker_resolve(a.broker), rc));
        return rc == VERITY_EINVAL ? CMD_EXIT_USAGE : CMD_EXIT_FAIL;
    }
    if ((rc = verity_client_connect(c, CONNECT_TIMEOUT_MS)) != 0) {
        fprintf(stderr, "verity topic: cannot reach broker %s: %s\n",
                verity_broker_resolve(a.broker), cli_strerror(verity_broker_resolve(a.broker), rc));
        verity_client_free(c);
        return EXIT_UNREACHABLE;
    }
    rc = run(c, &a);
    verity_client_free(c);
    return rc;
}
