/*
 * A real broker run inside the test process, so that a test can hand its
 * logs a fault-injecting file table (tests/support/vio_fault.c) and inspect
 * its state after a restart. The broker is the same code as verityd
 * (broker_new / broker_run / broker_free), listens on 127.0.0.1 port 0 (the
 * bound port is read back), runs its loop on its own thread and is stopped
 * through the loop (never by a signal). Clients talk to it over loopback.
 */
#ifndef VERITY_TESTS_TINPROC_H
#define VERITY_TESTS_TINPROC_H

#include <pthread.h>
#include <stdint.h>

#include "broker/config.h"

struct broker;

struct tinproc {
    struct broker_config cfg; /* filled by tip_config; edit before tip_start */
    struct broker *b;         /* NULL when stopped */
    pthread_t thread;
    uint16_t port;            /* bound protocol port */
    int run_rc;               /* broker_run's result after tip_stop */
    int64_t start_ms;         /* how long the last broker_new took (open + replay) */
};

/* Default config on data_dir (copied): listen 127.0.0.1:0, admin HTTP off,
 * log level warn, io (borrowed, NULL = vio_posix). */
void tip_config(struct tinproc *t, const char *data_dir, const struct vio *io);
/* broker_new + the loop thread. 0 or the broker_new error. */
int tip_start(struct tinproc *t);
/* Stops the loop from inside it, joins the thread, broker_free. Returns
 * broker_free's result. No-op when not running. */
int tip_stop(struct tinproc *t);

#endif
