/* Command-line error messages (see cli_args.h). */
#include "tools/cli_args.h"

#include <errno.h>
#include <netdb.h>
#include <string.h>

#include "verity/errors.h"
#include "verity/verity.h"

#include "tools/cmds.h"

int cli_longidx = -1;
const char *cli_why;

static const struct option *by_val(const struct option *lo, int val)
{
    for (; lo && lo->name; lo++)
        if (lo->val == val)
            return lo;
    return NULL;
}

int cli_bad_args(const char *prog, int c, const struct option *lo, char **argv,
                 void (*usage)(FILE *))
{
    const char *why = cli_why;
    cli_why = NULL;
    if (why) {
        fprintf(stderr, "%s: %s\n", prog, why);
    } else if (c == '?' || c == ':') {
        const struct option *o = optopt ? by_val(lo, optopt) : NULL;
        if (o && o->has_arg == required_argument)
            fprintf(stderr, "%s: --%s needs a value\n", prog, o->name);
        else if (optopt && optopt < 256 && !o)
            fprintf(stderr, "%s: unknown option '-%c'\n", prog, optopt);
        else
            fprintf(stderr, "%s: unknown option '%s'\n", prog,
                    optind > 0 && argv[optind - 1] ? argv[optind - 1] : "?");
    } else if (c != -1 && cli_longidx >= 0 && lo[cli_longidx].has_arg != no_argument && optarg) {
        fprintf(stderr, "%s: invalid value '%s' for --%s\n", prog, optarg, lo[cli_longidx].name);
    } else if (c != -1) {
        const struct option *o = by_val(lo, c);
        if (o && optarg)
            fprintf(stderr, "%s: invalid value '%s' for --%s\n", prog, optarg, o->name);
        else if (o)
            fprintf(stderr, "%s: --%s is not allowed here\n", prog, o->name);
        else
            fprintf(stderr, "%s: invalid option\n", prog);
    } else {
        fprintf(stderr, "%s: missing or unexpected arguments\n", prog);
        if (usage)
            usage(stderr);
        return CMD_EXIT_USAGE;
    }
    fprintf(stderr, "(run `%s --help` for usage)\n", prog);
    return CMD_EXIT_USAGE;
}

int cli_bad_value(const char *prog, const char *opt, const char *value, const char *must)
{
    fprintf(stderr, "%s: invalid value '%s' for %s: %s\n", prog, value, opt, must);
    fprintf(stderr, "(run `%s --help` for usage)\n", prog);
    return CMD_EXIT_USAGE;
}

const char *cli_strerror(const char *broker, int rc)
{
    static char buf[512];
    if (rc == VERITY_ETLS && verity_last_error_message()[0]) {
        snprintf(buf, sizeof buf, "%s", verity_last_error_message());
        return buf;
    }
    if (rc != -ENXIO || !broker)
        return verity_strerror(rc);
    char host[256];
    const char *colon = strrchr(broker, ':');
    size_t hl = colon ? (size_t)(colon - broker) : strlen(broker);
    if (hl == 0 || hl >= sizeof host) {
        snprintf(buf, sizeof buf, "malformed broker address (HOST:PORT expected)");
        return buf;
    }
    memcpy(host, broker, hl);
    host[hl] = '\0';
    if (host[0] == '[' && hl > 2 && host[hl - 1] == ']') {
        memmove(host, host + 1, hl - 2);
        host[hl - 2] = '\0';
    }
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *ai = NULL;
    int e = getaddrinfo(host, colon ? colon + 1 : NULL, &hints, &ai);
    if (ai)
        freeaddrinfo(ai);
    if (e == 0)
        return verity_strerror(rc);
    snprintf(buf, sizeof buf, "cannot resolve host '%s': %s", host, gai_strerror(e));
    return buf;
}
