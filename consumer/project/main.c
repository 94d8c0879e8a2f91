/*
 * verity-project: projection workers that keep SQL tables (SQLite or
 * PostgreSQL) equal to a fold of Verity topics, exactly once
 * (docs/PROJECTIONS.md).
 *
 *   verity-project run CONFIG
 *   verity-project rebuild CONFIG [--timeout-ms N]
 *   verity-project status CONFIG [--json]
 *   verity-project wait CONFIG --topic T --partition P --offset O [--timeout-ms N]
 *   verity-project verify CONFIG [--json] [--timeout-ms N]
 *   verity-project check CONFIG
 *
 * Exit codes: 0 ok, 1 failure, 2 usage or bad config, 3 broker unreachable,
 * 4 wait timed out, 5 verify found a position that does not match the log.
 */
#include <getopt.h>
#include <sqlite3.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "consumer/project/worker.h"
#include "verity/verity.h"

static void usage(FILE *f)
{
    fprintf(f,
            "usage: verity-project run CONFIG.json\n"
            "       verity-project rebuild CONFIG.json [--timeout-ms N]\n"
            "       verity-project status CONFIG.json [--json]\n"
            "       verity-project wait CONFIG.json --topic T --partition P --offset O "
            "[--timeout-ms N]\n"
            "       verity-project verify CONFIG.json [--json] [--timeout-ms N]\n"
            "       verity-project check CONFIG.json\n"
            "       verity-project --help | --version\n"
            "run      join the config's ordered consumer group and keep the tables up to date,\n"
            "         exactly once (rows and source positions commit together)\n"
            "rebuild  replay the topics from their first offset into shadow tables while the\n"
            "         live ones keep serving, then swap them in atomically\n"
            "status   per partition: applied offset, lag, events/s, last apply, dead letters\n"
            "wait     return once the tables include (topic, partition, offset)\n"
            "verify   check each stored position's chain hash against the log: proves which\n"
            "         log prefix the tables were built from (exit 5 when one does not match)\n"
            "check    validate the config and exit\n"
            "The broker is source.broker in the config, else $%s, else %s.\n"
            "exit: 0 ok, 1 failure, 2 usage or bad config, 3 broker unreachable, 4 timed out,\n"
            "      5 verify: a position does not match the log\n",
            VERITY_BROKER_ENV, VERITY_BROKER_DEFAULT);
}

static void on_signal(int sig)
{
    prj_stop = 1;
}

enum { OPT_JSON = 256, OPT_TOPIC, OPT_PARTITION, OPT_OFFSET, OPT_TIMEOUT };

int main(int argc, char **argv)
{
    /* No allocation statistics: they take a global mutex on every SQLite
     * malloc and free (seen in perf, docs/PERFORMANCE.md). Before any
     * other SQLite call. */
    sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0);
    if (argc >= 2 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 ||
                      strcmp(argv[1], "help") == 0)) {
        usage(stdout);
        return 0;
    }
    if (argc >= 2 && strcmp(argv[1], "--version") == 0) {
        printf("verity-project %s\n", PRJ_VERSION);
        return 0;
    }
    if (argc < 3) {
        usage(stderr);
        return 2;
    }
    const char *cmd = argv[1], *path = argv[2];
    static const struct option opts[] = {
        {"json", no_argument, NULL, OPT_JSON},
        {"topic", required_argument, NULL, OPT_TOPIC},
        {"partition", required_argument, NULL, OPT_PARTITION},
        {"offset", required_argument, NULL, OPT_OFFSET},
        {"timeout-ms", required_argument, NULL, OPT_TIMEOUT},
        {"help", no_argument, NULL, 'h'},
        {0, 0, 0, 0},
    };
    bool json = false;
    const char *topic = NULL;
    long long partition = -1, offset = -1, timeout = -1;
    optind = 3;
    int o;
    while ((o = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        char *end = NULL;
        switch (o) {
        case OPT_JSON:
            json = true;
            break;
        case OPT_TOPIC:
            topic = optarg;
            break;
        case OPT_PARTITION:
            partition = strtoll(optarg, &end, 10);
            break;
        case OPT_OFFSET:
            offset = strtoll(optarg, &end, 10);
            break;
        case OPT_TIMEOUT:
            timeout = strtoll(optarg, &end, 10);
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
        if (end && (*end || end == optarg)) {
            fprintf(stderr, "verity-project: not a number: %s\n", optarg);
            return 2;
        }
    }
    if (optind != argc) {
        usage(stderr);
        return 2;
    }
    struct prj_config cfg;
    char err[512];
    if (prj_config_load(path, &cfg, err, sizeof err) != 0) {
        fprintf(stderr, "verity-project: %s\n", err);
        prj_config_free(&cfg);
        return 2;
    }
    struct sigaction sa = {.sa_handler = on_signal};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    int code;
    if (strcmp(cmd, "run") == 0) {
        code = prj_run(&cfg);
    } else if (strcmp(cmd, "rebuild") == 0) {
        code = prj_rebuild(&cfg, (int)timeout);
    } else if (strcmp(cmd, "status") == 0) {
        code = prj_status(&cfg, json);
    } else if (strcmp(cmd, "verify") == 0) {
        code = prj_verify(&cfg, json, (int)timeout);
    } else if (strcmp(cmd, "check") == 0) {
        printf("%s: ok (%zu tables, group %s)\n", path, cfg.n_tables, cfg.group);
        code = 0;
    } else if (strcmp(cmd, "wait") == 0) {
        if (!topic || partition < 0 || offset < 0) {
            fprintf(stderr, "verity-project wait: needs --topic, --partition and --offset\n");
            code = 2;
        } else {
            int rc = prj_wait(&cfg, topic, (uint32_t)partition, (uint64_t)offset, (int)timeout);
            code = rc == 0 ? 0 : rc == VERITY_ETIMEOUT ? 4 : 1;
            if (rc == VERITY_ETIMEOUT)
                fprintf(stderr, "verity-project wait: timed out\n");
        }
    } else {
        fprintf(stderr, "verity-project: unknown command %s\n", cmd);
        usage(stderr);
        code = 2;
    }
    prj_config_free(&cfg);
    return code;
}
