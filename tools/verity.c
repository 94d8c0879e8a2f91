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
#include <stdio.h>
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
    {"bench", cmd_bench, "run the peer benchmark workloads W1-W4 against a broker"},
    {"broker", cmd_broker, "broker status: reachable, topics, partitions in error"},
    {"consume", cmd_consume, "print a topic's records from an offset or time; --follow"},
    {"dlq", cmd_dlq, "list dead letters of a group, replay them to their source topic"},
    {"group", cmd_group, "create, list, describe, inspect, reset or delete consumer groups"},
    {"keygen", cmd_keygen, "create an Ed25519 key pair for signing checkpoints"},
    {"log", cmd_log, "verify, dump or benchmark a partition log directory"},
    {"offsets", cmd_offsets, "first and last offsets of a topic's partitions"},
    {"produce", cmd_produce, "send lines from stdin or files as records"},
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
    return c->run(argc - 1, argv + 1);
}
