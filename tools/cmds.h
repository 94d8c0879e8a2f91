/*
 * Subcommands of the `verity` CLI. tools/verity.c dispatches through one
 * const table; each subcommand lives in its own tools/cmd_*.c file.
 *
 * Contract for every handler int cmd_<name>(int argc, char **argv):
 *   - argv[0] is the subcommand name ("log", "keygen", ...); argv[1..] are
 *     its arguments; argv[argc] is NULL.
 *   - `--help` or `-h` as the first argument prints the subcommand's usage
 *     to stdout and returns 0 (`verity help <cmd>` calls it that way).
 *   - It returns the process exit code: 0 ok, 1 finding or failure, 2 usage
 *     error (usage goes to stderr then).
 *
 * Adding a subcommand: declare its handler below and add one row to the
 * table in tools/verity.c.
 */
#ifndef VERITY_TOOLS_CMDS_H
#define VERITY_TOOLS_CMDS_H

#define CMD_EXIT_OK 0
#define CMD_EXIT_FAIL 1
#define CMD_EXIT_USAGE 2

int cmd_log(int argc, char **argv);       /* log verify|dump|bench (cmd_log.c, cmd_log_bench.c) */
int cmd_log_bench(int argc, char **argv); /* log bench, called by cmd_log (cmd_log_bench.c) */
int cmd_log_write(int argc, char **argv); /* log write, called by cmd_log (cmd_log_write.c) */
int cmd_keygen(int argc, char **argv);
int cmd_auth(int argc, char **argv);      /* auth key|acl|cert|quota, acl (cmd_auth.c) */    /* keygen (cmd_keygen.c) */
int cmd_bench(int argc, char **argv);     /* bench W1..W4 (cmd_bench.c) */
int cmd_broker(int argc, char **argv);    /* broker status (cmd_broker.c) */
int cmd_cluster(int argc, char **argv);   /* cluster start|stop|restart|status (cmd_cluster.c) */
int cmd_consume(int argc, char **argv);   /* consume (cmd_consume.c) */
int cmd_offsets(int argc, char **argv);   /* offsets (cmd_offsets.c) */
int cmd_produce(int argc, char **argv);   /* produce (cmd_produce.c) */
int cmd_topic(int argc, char **argv);     /* topic create|delete|list|describe (cmd_topic.c) */
int cmd_group(int argc, char **argv);     /* group create|list|describe|pending|reset|delete (cmd_group.c) */
int cmd_dlq(int argc, char **argv);       /* dlq list|replay (cmd_dlq.c) */
int cmd_share(int argc, char **argv);     /* share init|create|...|fetch|verify (cmd_share*.c) */
int cmd_proof(int argc, char **argv);     /* proof inclusion|consistency|checkpoint|key|verify (cmd_proof.c) */
int cmd_proof_bench(int argc, char **argv); /* proof bench, called by cmd_proof (cmd_proof_bench.c) */
int cmd_witness(int argc, char **argv);   /* witness: a C2SP tlog-witness (cmd_witness.c) */
/* Further subcommands (topic, produce, consume, offsets, broker, bench,
 * group, dlq) are declared here, one line each. */

#endif
