/*
 * verity broker status: is the broker up, and what does it hold. Asks the
 * protocol's Metadata (node id, every topic and partition) and, with --http,
 * the admin HTTP endpoints /health and /ready.
 *
 * Exit codes: 0 up and every partition healthy, 1 up but degraded (a
 * partition reports an error such as EREADONLY, or the HTTP checks fail), 2
 * usage, 3 the broker cannot be reached.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <jansson.h>

#include "tools/cli_args.h"
#include "tools/cmds.h"
#include "verity/verity.h"

#define EXIT_UNREACHABLE 3
#define CONNECT_TIMEOUT_MS 5000
#define HTTP_TIMEOUT_MS 3000

static void usage(FILE *f)
{
    fprintf(f,
            "usage: verity broker status [--broker HOST:PORT] [--http HOST:PORT] [--json]\n"
            "Reports the broker's node id, topics, partitions and bytes stored (protocol\n"
            "Metadata), partitions in error, and with --http the admin /health and /ready.\n"
            "exit: 0 healthy, 1 degraded, 2 usage, 3 broker unreachable\n");
}

/* GET path from host:port; returns the status code or -errno. */
static int http_status(const char *hostport, const char *path)
{
    return verity_admin_get(hostport, path, HTTP_TIMEOUT_MS, 0, NULL, NULL);
}

enum { OPT_BROKER = 256, OPT_HTTP, OPT_JSON, OPT_HELP };

static const struct option long_opts[] = {
    {"broker", required_argument, NULL, OPT_BROKER},
    {"http", required_argument, NULL, OPT_HTTP},
    {"json", no_argument, NULL, OPT_JSON},
    {"help", no_argument, NULL, OPT_HELP},
    {NULL, 0, NULL, 0},
};

int cmd_broker(int argc, char **argv)
{
    const char *broker = NULL, *http = NULL;
    bool json = false;
    int c;
    optind = 0;
    opterr = 0;
    while ((c = CLI_GETOPT(argc, argv, "h", long_opts)) != -1) {
        switch (c) {
        case OPT_BROKER:
            broker = optarg;
            break;
        case OPT_HTTP:
            http = optarg;
            break;
        case OPT_JSON:
            json = true;
            break;
        case OPT_HELP:
        case 'h':
            usage(stdout);
            return CMD_EXIT_OK;
        default:
            goto bad;
        }
    }
    if (optind != argc - 1 || strcmp(argv[optind], "status") != 0)
        goto bad;

    struct verity_conn_config conn;
    verity_conn_config_default(&conn);
    conn.broker = broker;
    struct verity_client *cl = NULL;
    int rc = verity_client_new(&conn, &cl);
    if (rc) {
        fprintf(stderr, "verity broker: %s: %s\n", verity_broker_resolve(broker),
                cli_strerror(verity_broker_resolve(broker), rc));
        return rc == VERITY_EINVAL ? CMD_EXIT_USAGE : CMD_EXIT_FAIL;
    }
    struct verity_topic_info *t = NULL;
    size_t n = 0;
    uint32_t node = 0;
    if ((rc = verity_client_connect(cl, CONNECT_TIMEOUT_MS)) == 0)
        rc = verity_metadata(cl, NULL, 0, &t, &n, &node);
    verity_client_free(cl);
    if (rc) {
        if (json)
            printf("{\"broker\":\"%s\",\"up\":false,\"error\":\"%s\"}\n",
                   verity_broker_resolve(broker), verity_errname(rc));
        else
            fprintf(stderr, "verity broker: %s is not reachable: %s\n",
                    verity_broker_resolve(broker), cli_strerror(verity_broker_resolve(broker), rc));
        verity_topic_info_free(t, n);
        return verity_err_unreachable(rc) ? EXIT_UNREACHABLE : CMD_EXIT_FAIL;
    }
    uint64_t partitions = 0, bytes = 0, records = 0;
    json_t *problems = json_array();
    for (size_t i = 0; i < n; i++) {
        for (uint32_t p = 0; p < t[i].partition_count; p++) {
            const struct verity_partition_info *pi = &t[i].partitions[p];
            partitions++;
            bytes += pi->size_bytes;
            records += pi->high_watermark - pi->start_offset;
            if (pi->error) {
                json_t *e = json_object();
                json_object_set_new(e, "topic", json_string(t[i].name));
                json_object_set_new(e, "partition", json_integer(pi->partition));
                json_object_set_new(e, "error", json_string(verity_errname(pi->error)));
                json_array_append_new(problems, e);
            }
        }
    }
    int health = 0, ready = 0;
    if (http) {
        health = http_status(http, "/health");
        ready = http_status(http, "/ready");
    }
    bool degraded = json_array_size(problems) > 0 || (http && (health != 200 || ready != 200));
    if (json) {
        json_t *o = json_object();
        json_object_set_new(o, "broker", json_string(verity_broker_resolve(broker)));
        json_object_set_new(o, "up", json_true());
        json_object_set_new(o, "node_id", json_integer(node));
        json_object_set_new(o, "topics", json_integer((json_int_t)n));
        json_object_set_new(o, "partitions", json_integer((json_int_t)partitions));
        json_object_set_new(o, "offsets", json_integer((json_int_t)records));
        json_object_set_new(o, "size_bytes", json_integer((json_int_t)bytes));
        json_object_set_new(o, "problems", json_incref(problems));
        if (http) {
            json_object_set_new(o, "http_health", json_integer(health));
            json_object_set_new(o, "http_ready", json_integer(ready));
        }
        json_object_set_new(o, "healthy", json_boolean(!degraded));
        char *s = json_dumps(o, JSON_COMPACT);
        if (s)
            puts(s);
        free(s);
        json_decref(o);
    } else {
        printf("broker %s: up, node %" PRIu32 "\n", verity_broker_resolve(broker), node);
        printf("topics %zu, partitions %" PRIu64 ", offsets stored %" PRIu64 ", bytes %" PRIu64
               "\n",
               n, partitions, records, bytes);
        if (http)
            printf("http %s: /health %d, /ready %d\n", http, health, ready);
        for (size_t i = 0; i < json_array_size(problems); i++) {
            json_t *e = json_array_get(problems, i);
            printf("problem: %s/%" JSON_INTEGER_FORMAT " %s\n",
                   json_string_value(json_object_get(e, "topic")),
                   json_integer_value(json_object_get(e, "partition")),
                   json_string_value(json_object_get(e, "error")));
        }
    }
    json_decref(problems);
    verity_topic_info_free(t, n);
    return degraded ? CMD_EXIT_FAIL : CMD_EXIT_OK;
bad:
    return cli_bad_args("verity broker", c, long_opts, argv, usage);
}
