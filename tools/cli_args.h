/*
 * Command-line errors that name what was wrong, shared by the `verity`
 * subcommands. A parse loop calls getopt_long(..., &cli_longidx) (reset to
 * -1 before each call with CLI_GETOPT) and, on a bad argument, returns
 * cli_bad_args(): it prints one line naming the option and the value (or
 * the operand problem set in cli_why) and a pointer to --help, not the
 * whole usage.
 */
#ifndef VERITY_TOOLS_CLI_ARGS_H
#define VERITY_TOOLS_CLI_ARGS_H

#include <getopt.h>
#include <stdio.h>

/* Index into the long options of the option getopt_long matched last. */
extern int cli_longidx;
/* Set before `goto bad` for an error that is not one option's value
 * (missing operand, options that do not go together); static string. */
extern const char *cli_why;

#define CLI_GETOPT(argc, argv, shortopts, lo)                                                   \
    (cli_longidx = -1, getopt_long((argc), (argv), (shortopts), (lo), &cli_longidx))

/* Prints "<prog>: <what was wrong>" and a hint on stderr; returns 2.
 * c: getopt's last return (-1 once the options were all read). usage (may
 * be NULL) is printed when nothing more precise is known. */
int cli_bad_args(const char *prog, int c, const struct option *lo, char **argv,
                 void (*usage)(FILE *));

/* Arguments that parse an option value: "verity topic: --partitions 0:
 * must be 1..1024" style. Returns 2. */
int cli_bad_value(const char *prog, const char *opt, const char *value, const char *must);



/* verity_strerror(rc), except that a broker address whose host name does
 * not resolve (the client's -ENXIO) is said so, with the resolver's words.
 * Returns a static buffer (one caller at a time). */
const char *cli_strerror(const char *broker, int rc);

#endif
