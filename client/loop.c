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
 *
 * Lending (issue 16, client_int.h): a waiting application thread may run the
 * base instead of the loop thread. `own` says who may dispatch:
 * CL_OWN_THREAD (the loop thread dispatches), CL_LEND_ASKED (a borrower
 * asked; the loop thread leaves event_base_loop at its next pass and lends),
 * CL_LENT_BUSY (a borrower dispatches), CL_LENT_IDLE (nobody dispatches: the
 * borrower returned and may take it again at no cost). The loop thread,
 * while lent, sleeps on cv and takes the base back from CL_LENT_IDLE after
 * CL_LEND_IDLE_NS or at once when work is posted, so timers, jobs and
 * read-ahead are never left waiting longer than that for an absent
 * borrower. Only the loop thread leaves CL_OWN_THREAD for good (it exits),
 * and event_base_loop only ever runs on one thread at a time: every change
 * of hands goes through mu.
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include <event2/thread.h>

#include "client/client_int.h"
#include "storage/clock.h"
#include "verity/verify.h"

/* How long a lent base may sit idle before the loop thread takes it back. */
#define CL_LEND_IDLE_NS 2000000

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
        pthread_mutex_lock(&l->mu);
        l->exiting = true;
        pthread_mutex_unlock(&l->mu);
        event_base_loopbreak(l->base);
    }
}

/* Loop thread, with mu: true when a lent, idle base should come back now. */
static bool take_back_due(const struct cl_loop *l, int64_t now)
{
    return l->own == CL_LENT_IDLE &&
           (l->jobs_head || l->stopping || now - l->idle_since_ns >= CL_LEND_IDLE_NS);
}

static void *loop_main(void *arg)
{
    struct cl_loop *l = arg;
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    for (;;) {
        event_base_loop(l->base, EVLOOP_NO_EXIT_ON_EMPTY);
        pthread_mutex_lock(&l->mu);
        if (l->exiting || l->own != CL_LEND_ASKED) {
            bool done = l->exiting;
            pthread_mutex_unlock(&l->mu);
            if (done)
                break;
            continue;
        }
        l->own = CL_LENT_IDLE;
        l->idle_since_ns = clock_mono_ns();
        pthread_mutex_unlock(&l->mu);
        if (l->on_lent)
            l->on_lent(l->on_lent_arg);
        pthread_mutex_lock(&l->mu);
        for (;;) {
            int64_t now = clock_mono_ns();
            if (take_back_due(l, now))
                break;
            int64_t until = (l->own == CL_LENT_IDLE ? l->idle_since_ns : now) + CL_LEND_IDLE_NS;
            struct timespec ts = {until / 1000000000, until % 1000000000};
            pthread_cond_timedwait(&l->cv, &l->mu, &ts);
        }
        l->own = CL_OWN_THREAD;
        pthread_mutex_unlock(&l->mu);
    }
    return NULL;
}

static void borrow_timer_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg; /* its firing ends the borrower's EVLOOP_ONCE pass */
}

/* The loop this thread runs as a borrower (cl_loop_in_thread says yes). */
static __thread const struct cl_loop *tl_borrowed;

bool cl_loop_borrow(struct cl_loop *l)
{
    pthread_mutex_lock(&l->mu);
    bool run = false, ask = false;
    if (!l->stopping && l->own == CL_LENT_IDLE) {
        l->own = CL_LENT_BUSY;
        run = true;
    } else if (!l->stopping && l->own == CL_OWN_THREAD) {
        l->own = CL_LEND_ASKED;
        ask = true;
    }
    pthread_mutex_unlock(&l->mu);
    if (ask)
        event_base_loopbreak(l->base);
    return run;
}

void cl_loop_run_borrowed(struct cl_loop *l, bool (*done)(void *), void *arg,
                          int64_t deadline_ns)
{
    int64_t now = clock_mono_ns();
    tl_borrowed = l;
    if (deadline_ns <= now) {
        event_base_loop(l->base, EVLOOP_NONBLOCK);
    } else {
        if (deadline_ns != INT64_MAX) {
            int64_t d = deadline_ns - now;
            struct timeval tv = {d / 1000000000, (d % 1000000000) / 1000 + 1};
            evtimer_add(l->borrow_timer, &tv);
        }
        while (!done(arg) && clock_mono_ns() < deadline_ns)
            event_base_loop(l->base, EVLOOP_ONCE);
        evtimer_del(l->borrow_timer);
    }
    tl_borrowed = NULL;
    pthread_mutex_lock(&l->mu);
    l->own = CL_LENT_IDLE;
    l->idle_since_ns = clock_mono_ns();
    if (l->jobs_head || l->stopping)
        pthread_cond_signal(&l->cv);
    pthread_mutex_unlock(&l->mu);
}

void cl_loop_nudge(struct cl_loop *l)
{
    pthread_mutex_lock(&l->mu);
    if (l->own == CL_LENT_IDLE) {
        l->idle_since_ns = INT64_MIN / 2; /* due at once */
        pthread_cond_signal(&l->cv);
    }
    pthread_mutex_unlock(&l->mu);
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
    l->borrow_timer = evtimer_new(l->base, borrow_timer_cb, NULL);
    if (!l->borrow_timer)
        goto fail;
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    int rc = pthread_cond_init(&l->cv, &ca);
    pthread_condattr_destroy(&ca);
    if (rc != 0)
        goto fail;
    rc = pthread_create(&l->thread, NULL, loop_main, l);
    if (rc != 0) {
        pthread_cond_destroy(&l->cv);
        event_free(l->borrow_timer);
        event_free(l->wake_ev);
        event_base_free(l->base);
        pthread_mutex_destroy(&l->mu);
        memset(l, 0, sizeof *l);
        return -rc;
    }
    l->started = true;
    return 0;
fail:
    if (l->borrow_timer)
        event_free(l->borrow_timer);
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
    if (l->own == CL_LENT_IDLE)
        pthread_cond_signal(&l->cv); /* the base comes back to run it */
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
    event_free(l->borrow_timer);
    pthread_cond_destroy(&l->cv);
    event_free(l->wake_ev);
    event_base_free(l->base);
    pthread_mutex_destroy(&l->mu);
    l->started = false;
}

bool cl_loop_in_thread(const struct cl_loop *l)
{
    return l->started && (pthread_equal(pthread_self(), l->thread) || tl_borrowed == l);
}
