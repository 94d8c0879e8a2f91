/*
 * verity: the command-line entry point. It only dispatches: the first
 * argument names a subcommand, looked up in one const table; each handler
 * lives in its own tools/cmd_*.c and follows the contract in tools/cmds.h.
 *
 *   verity --help | help          list subcommands
 *   verity help <cmd>             that subcommand's usage (== verity <cmd> --help)
 *   verity --version
 *   verity <cmd> [args...]
 */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tools/cmds.h"
#include "verity/version.h"


struct cmd {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *help; /* one line, shown by `verity --help` */
};

/* One row per subcommand; keep the list alphabetical. */
static const struct cmd cmds[] = {
    {"acl", cmd_auth, "ACLs in the security store: the same as `verity auth acl`"},
    {"auth", cmd_auth, "API keys, ACLs, certificate mappings, quotas (the broker's auth_file)"},
    {"bench", cmd_bench, "run the peer benchmark workloads W1-W4 against a broker"},
    {"broker", cmd_broker, "broker status: reachable, topics, partitions in error"},
    {"cluster", cmd_cluster, "start, stop, restart a local cluster; status of any cluster"},
    {"consume", cmd_consume, "print a topic's records from an offset or time; --follow"},
    {"dlq", cmd_dlq, "list dead letters of a group, replay them to their source topic"},
    {"group", cmd_group, "create, list, describe, inspect, reset or delete consumer groups"},
    {"keygen", cmd_keygen, "create an Ed25519 key pair for signing checkpoints"},
    {"log", cmd_log, "verify, dump or benchmark a partition log directory"},
    {"offsets", cmd_offsets, "first and last offsets of a topic's partitions"},
    {"produce", cmd_produce, "send lines from stdin or files as records"},
    {"role", cmd_auth, "roles of principals: the same as `verity auth role`"},
    {"share", cmd_share, "share scoped, redacted, verifiable exports (see docs/SHARING.md)"},
    {"proof", cmd_proof, "inclusion and consistency proofs, signed C2SP checkpoints, verify"},
    {"topic", cmd_topic, "create, delete, list or describe topics"},
    {"witness", cmd_witness, "run a C2SP tlog-witness that cosigns consistent checkpoints"},
};

static const struct cmd *cmd_find(const char *name)
{
    for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++)
        if (strcmp(cmds[i].name, name) == 0)
            return &cmds[i];
    return NULL;
}

static void usage(FILE *f)
{
    fprintf(f, "usage: verity <command> [args...]\n\ncommands:\n");
    for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++)
        fprintf(f, "  %-10s %s\n", cmds[i].name, cmds[i].help);
    fprintf(f, "  %-10s %s\n", "help", "show this list, or `help <command>` for one command");
    fprintf(f, "\nRun `verity <command> --help` for a command's options.\n");
    fprintf(f, "\nTLS, for every command that connects to a broker (before any `--`):\n"
               "  --tls                  TLS with the system's CAs (VERITY_TLS=1)\n"
               "  --tls-ca FILE          CA bundle the broker's certificate must chain to "
               "(VERITY_TLS_CA)\n"
               "  --tls-cert FILE        client certificate for mutual TLS (VERITY_TLS_CERT)\n"
               "  --tls-key FILE         its private key (VERITY_TLS_KEY)\n"
               "  --tls-server-name NAME name the broker's certificate must carry; default: "
               "the\n"
               "                         broker address's host (VERITY_TLS_SERVER_NAME)\n");
}

/* The TLS options are the same for every subcommand: taken out of argv here
 * and handed to libverity through its VERITY_TLS_* variables (a flag wins
 * over the environment). Returns argc after removal, or -1 (message
 * printed) when one lacks its value. */
static int take_tls_flags(int argc, char **argv)
{
    static const struct {
        const char *flag;
        const char *env;
    } flags[] = {{"--tls-ca", "VERITY_TLS_CA"},
                 {"--tls-cert", "VERITY_TLS_CERT"},
                 {"--tls-key", "VERITY_TLS_KEY"},
                 {"--tls-server-name", "VERITY_TLS_SERVER_NAME"}};
    int out = 2;
    for (int i = 2; i < argc; i++) {
        if (strcmp(argv[i], "--") == 0) {
            while (i < argc)
                argv[out++] = argv[i++];
            break;
        }
        if (strcmp(argv[i], "--tls") == 0) {
            setenv("VERITY_TLS", "1", 1);
            continue;
        }
        bool taken = false;
        for (size_t k = 0; k < sizeof flags / sizeof flags[0] && !taken; k++) {
            size_t n = strlen(flags[k].flag);
            if (strncmp(argv[i], flags[k].flag, n) != 0)
                continue;
            if (argv[i][n] == '=') {
                setenv(flags[k].env, argv[i] + n + 1, 1);
                taken = true;
            } else if (argv[i][n] == '\0') {
                if (i + 1 >= argc) {
                    fprintf(stderr, "verity %s: %s needs a value\n", argv[1], flags[k].flag);
                    return -1;
                }
                setenv(flags[k].env, argv[++i], 1);
                taken = true;
            }
        }
        if (!taken)
            argv[out++] = argv[i];
    }
    argv[out] = NULL;
    return out;
}

static int is_help(const char *a)
{
    return strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0 || strcmp(a, "help") == 0;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return CMD_EXIT_USAGE;
    }
    /* --version first or right after the subcommand: verity [CMD] --version */
    if (strcmp(argv[1], "--version") == 0 || strcmp(argv[1], "-V") == 0 ||
        (argc == 3 && strcmp(argv[2], "--version") == 0)) {
        printf("verity %s\n", VERITY_VERSION_STRING);
        return CMD_EXIT_OK;
    }
    if (is_help(argv[1])) {
        /* `verity help --help` and `verity --help help`: the list itself. */
        if (argc == 2 || is_help(argv[2])) {
            usage(stdout);
            return CMD_EXIT_OK;
        }
        const struct cmd *c = cmd_find(argv[2]);
        if (!c) {
            fprintf(stderr, "verity: unknown command '%s'\n", argv[2]);
            return CMD_EXIT_USAGE;
        }
        char help_flag[] = "--help";
        char *sub_argv[] = {argv[2], help_flag, NULL};
        return c->run(2, sub_argv);
    }
    const struct cmd *c = cmd_find(argv[1]);
    if (!c) {
        fprintf(stderr, "verity: unknown command '%s'\n\n", argv[1]);
        usage(stderr);
        return CMD_EXIT_USAGE;
    }
    if ((argc = take_tls_flags(argc, argv)) < 0)
        return CMD_EXIT_USAGE;
    return c->run(argc - 1, argv + 1);
}
