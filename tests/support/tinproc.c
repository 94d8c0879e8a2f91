/*
 * In-process broker for tests (see tinproc.h).
 */
#include "tests/support/tinproc.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/event.h>

#include "broker/broker.h"
#include "broker/broker_int.h"

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void tip_config(struct tinproc *t, const char *data_dir, const struct vio *io)
{
    memset(t, 0, sizeof *t);
    bcfg_default(&t->cfg);
    snprintf(t->cfg.data_dir, sizeof t->cfg.data_dir, "%s", data_dir);
    snprintf(t->cfg.listen, sizeof t->cfg.listen, "127.0.0.1:0");
    snprintf(t->cfg.http, sizeof t->cfg.http, "off");
    snprintf(t->cfg.log_level, sizeof t->cfg.log_level, "warn");
    t->cfg.io = io;
}

static void *loop_main(void *arg)
{
    struct tinproc *t = arg;
    t->run_rc = broker_run(t->b);
    return NULL;
}

int tip_start(struct tinproc *t)
{
    int64_t t0 = mono_ms();
    int rc = broker_new(&t->cfg, &t->b);
    t->start_ms = mono_ms() - t0;
    if (rc)
        return rc;
    const char *colon = strrchr(t->b->listen_addr, ':');
    t->port = colon ? (uint16_t)atoi(colon + 1) : 0;
    if ((rc = -pthread_create(&t->thread, NULL, loop_main, t))) {
        (void)broker_free(t->b);
        t->b = NULL;
        return rc;
    }
    return 0;
}

static void stop_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    broker_stop(arg);
}

int tip_stop(struct tinproc *t)
{
    if (!t->b)
        return 0;
    struct timeval now = {0, 0};
    /* libevent is set up for threads (broker_new), so adding an event from
     * this thread wakes the loop. */
    if (event_base_once(t->b->base, -1, EV_TIMEOUT, stop_cb, t->b, &now))
        abort();
    pthread_join(t->thread, NULL);
    int rc = broker_free(t->b);
    t->b = NULL;
    return rc;
}
