/*
 * cl_loop: the one I/O thread of a libverity handle. It owns a libevent base;
 * other threads hand it work through a mutex-protected job queue and a
 * wake-up event made active with event_active(), which libevent makes
 * thread-safe once evthread_use_pthreads() has run (done once here, before
 * the first base is created).
 *
 * The loop thread blocks SIGPIPE for itself, so a write to a socket the
 * broker closed returns EPIPE to libevent instead of killing the process;
 * the application's signal handling is left alone.
 *
 * Lifecycle: cl_loop_start -> (cl_loop_post)* -> cl_loop_stop. After stop
 * was requested no job is accepted; jobs already queued still run, then
 * on_stop, then the loop exits.
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include <event2/thread.h>

#include "client/client_int.h"
#include "verity/verify.h"

struct cl_job {
    struct cl_job *next;
    void (*fn)(void *);
    void *arg;
};

static pthread_once_t evthread_once = PTHREAD_ONCE_INIT;
static int evthread_rc;

static void evthread_setup(void)
{
    evthread_rc = evthread_use_pthreads();
}

static void run_jobs(evutil_socket_t fd, short what, void *arg)
{
    struct cl_loop *l = arg;
    (void)fd;
    (void)what;
    pthread_mutex_lock(&l->mu);
    struct cl_job *j = l->jobs_head;
    bool stopping = l->stopping;
    l->jobs_head = l->jobs_tail = NULL;
    pthread_mutex_unlock(&l->mu);
    while (j) {
        struct cl_job *next = j->next;
        j->fn(j->arg);
        free(j);
        j = next;
    }
    if (stopping) {
        if (l->on_stop)
            l->on_stop(l->on_stop_arg);
        event_base_loopbreak(l->base);
    }
}

static void *loop_main(void *arg)
{
    struct cl_loop *l = arg;
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    event_base_loop(l->base, EVLOOP_NO_EXIT_ON_EMPTY);
    return NULL;
}

int cl_loop_start(struct cl_loop *l, void (*on_stop)(void *), void *arg)
{
    memset(l, 0, sizeof *l);
    pthread_once(&evthread_once, evthread_setup);
    if (evthread_rc != 0)
        return -ENOSYS;
    l->on_stop = on_stop;
    l->on_stop_arg = arg;
    if (pthread_mutex_init(&l->mu, NULL) != 0)
        return -ENOMEM;
    l->base = event_base_new();
    if (!l->base)
        goto fail;
    if (evthread_make_base_notifiable(l->base) != 0)
        goto fail;
    l->wake_ev = event_new(l->base, -1, 0, run_jobs, l);
    if (!l->wake_ev)
        goto fail;
    int rc = pthread_create(&l->thread, NULL, loop_main, l);
    if (rc != 0) {
        event_free(l->wake_ev);
        event_base_free(l->base);
        pthread_mutex_destroy(&l->mu);
        memset(l, 0, sizeof *l);
        return -rc;
    }
    l->started = true;
    return 0;
fail:
    if (l->wake_ev)
        event_free(l->wake_ev);
    if (l->base)
        event_base_free(l->base);
    pthread_mutex_destroy(&l->mu);
    memset(l, 0, sizeof *l);
    return -ENOMEM;
}

static int post(struct cl_loop *l, struct cl_job *j, bool stop)
{
    pthread_mutex_lock(&l->mu);
    if (l->stopping) {
        pthread_mutex_unlock(&l->mu);
        free(j);
        return VERITY_ECLOSED;
    }
    if (j) {
        if (l->jobs_tail)
            l->jobs_tail->next = j;
        else
            l->jobs_head = j;
        l->jobs_tail = j;
    }
    if (stop)
        l->stopping = true;
    pthread_mutex_unlock(&l->mu);
    event_active(l->wake_ev, 0, 0);
    return 0;
}

int cl_loop_post(struct cl_loop *l, void (*fn)(void *), void *arg)
{
    struct cl_job *j = calloc(1, sizeof *j);
    if (!j)
        return -ENOMEM;
    j->fn = fn;
    j->arg = arg;
    return post(l, j, false);
}

void cl_loop_stop(struct cl_loop *l)
{
    if (!l->started)
        return;
    VERITY_VERIFY(!cl_loop_in_thread(l));
    (void)post(l, NULL, true);
    pthread_join(l->thread, NULL);
    event_free(l->wake_ev);
    event_base_free(l->base);
    pthread_mutex_destroy(&l->mu);
    l->started = false;
}

bool cl_loop_in_thread(const struct cl_loop *l)
{
    return l->started && pthread_equal(pthread_self(), l->thread);
}
