/*
 * verityd_main: the whole of verityd (broker/main.c) as a function, so a
 * test build of the daemon (tests/cluster/verityd_powerloss.c) can run the
 * same program with its own file operations.
 */
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "broker/blog.h"
#include "broker/broker.h"
#include "verity/errors.h"
#include "verity/version.h"

int verityd_main(int argc, char **argv, const struct vio *io)
{
    struct broker_config cfg;
    char err[512] = "";
    bool help = false;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--version") == 0 || strcmp(argv[i], "-V") == 0) {
            printf("verityd %s\n", VERITY_VERSION_STRING);
            return 0;
        }
    }
    if (bcfg_from_args(&cfg, argc, argv, &help, err, sizeof err)) {
        fprintf(stderr, "verityd: %s\n(try --help)\n", err);
        return 2;
    }
    if (help) {
        bcfg_usage(stdout);
        return 0;
    }
    cfg.io = io;
    signal(SIGPIPE, SIG_IGN);
    struct broker *b = NULL;
    int rc = broker_new(&cfg, &b);
    if (rc) {
        blog(BLOG_ERROR, "startup_failed", "error=%s text=\"%s\"", verity_errname(rc),
             verity_strerror(rc));
        return 1;
    }
    rc = broker_run(b);
    int crc = broker_free(b);
    if (rc || crc) {
        blog(BLOG_ERROR, "stopped_with_error", "run=%s close=%s", verity_errname(rc),
             verity_errname(crc));
        return 1;
    }
    blog(BLOG_INFO, "stopped", "exit=0");
    return 0;
}
