/*
 * cl_wait: how a synchronous call waits for the answer the I/O thread
 * produces. The waiter owns the struct (usually on its stack); the I/O
 * thread fills the result fields, then calls cl_wait_signal exactly once.
 * Timed waits use CLOCK_MONOTONIC.
 */
#include <errno.h>
#include <string.h>
#include <time.h>

#include "client/client_int.h"
#include "storage/clock.h"

int64_t cl_mono_ms(void)
{
    return clock_mono_ms();
}

int64_t cl_wall_ms(void)
{
    return clock_wall_ms();
}

void cl_wait_init(struct cl_wait *w)
{
    memset(w, 0, sizeof *w);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_mutex_init(&w->mu, NULL);
    pthread_cond_init(&w->cv, &ca);
    pthread_condattr_destroy(&ca);
}

void cl_wait_deinit(struct cl_wait *w)
{
    pthread_cond_destroy(&w->cv);
    pthread_mutex_destroy(&w->mu);
}

void cl_wait_signal(struct cl_wait *w, int err, const char *msg)
{
    pthread_mutex_lock(&w->mu);
    w->err = err;
    if (msg) {
        strncpy(w->msg, msg, sizeof w->msg - 1);
        w->msg[sizeof w->msg - 1] = '\0';
    }
    w->done = true;
    pthread_cond_broadcast(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

int cl_wait_until(struct cl_wait *w, int64_t deadline_ms)
{
    struct timespec ts = {0};
    if (deadline_ms >= 0) {
        ts.tv_sec = deadline_ms / 1000;
        ts.tv_nsec = (deadline_ms % 1000) * 1000000;
    }
    pthread_mutex_lock(&w->mu);
    while (!w->done) {
        if (deadline_ms < 0) {
            pthread_cond_wait(&w->cv, &w->mu);
        } else if (pthread_cond_timedwait(&w->cv, &w->mu, &ts) == ETIMEDOUT) {
            break;
        }
    }
    int rc = w->done ? w->err : VERITY_ETIMEOUT;
    pthread_mutex_unlock(&w->mu);
    return rc;
}

int cl_wait_for(struct cl_wait *w, int timeout_ms)
{
    return cl_wait_until(w, timeout_ms < 0 ? -1 : cl_mono_ms() + timeout_ms);
}
