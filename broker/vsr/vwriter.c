/*
 * vwriter: journal I/O threads (vwriter.h).
 *
 * Invariants: a job is on at most one list (todo while QUEUED, done while
 * DONE) and is only touched by the threads while QUEUED or RUNNING; the
 * eventfd counter is non-zero whenever the done list is not empty (each
 * finished job adds 1, vwriter_reap reads it to zero before it empties the
 * list, so a job finished during a reap leaves the fd readable).
 */
#include "broker/vsr/vwriter.h"

#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "verity/errors.h"
#include "verity/verify.h"

struct vwriter {
    pthread_mutex_t mu;
    pthread_cond_t todo_cv; /* a job queued, or stop */
    pthread_cond_t done_cv; /* a job finished */
    struct vwjob *todo, *todo_tail;
    struct vwjob *done, *done_tail;
    bool stop;
    int efd;
    int nthreads;
    pthread_t threads[VWRITER_THREADS_MAX];
};

int vwriter_perform(struct vjournal *j, const struct vsr_write *w, size_t n)
{
    bool kinds[4] = {false, false, false, false};
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
        rc = vjournal_put(j, &w[i]);
        kinds[w[i].kind & 3] = true;
    }
    for (uint8_t k = 1; k <= 3 && rc == 0; k++)
        if (kinds[k])
            rc = vjournal_sync(j, k);
    return rc;
}

static void lock(struct vwriter *w)
{
    VERITY_VERIFY(pthread_mutex_lock(&w->mu) == 0);
}

static void unlock(struct vwriter *w)
{
    VERITY_VERIFY(pthread_mutex_unlock(&w->mu) == 0);
}

static void *run(void *arg)
{
    struct vwriter *w = arg;
    lock(w);
    for (;;) {
        while (!w->todo && !w->stop)
            pthread_cond_wait(&w->todo_cv, &w->mu);
        if (!w->todo)
            break; /* stop, and nothing left */
        struct vwjob *jb = w->todo;
        w->todo = jb->next;
        if (!w->todo)
            w->todo_tail = NULL;
        jb->next = NULL;
        jb->state = VWJOB_RUNNING;
        unlock(w);
        int rc = jb->fn ? jb->fn(jb) : vwriter_perform(jb->j, jb->w, jb->n);
        lock(w);
        jb->rc = rc;
        jb->state = VWJOB_DONE;
        if (w->done_tail)
            w->done_tail->next = jb;
        else
            w->done = jb;
        w->done_tail = jb;
        pthread_cond_broadcast(&w->done_cv);
        uint64_t one = 1;
        ssize_t n = write(w->efd, &one, sizeof one);
        VERITY_VERIFY(n == (ssize_t)sizeof one); /* the counter cannot overflow here */
    }
    unlock(w);
    return NULL;
}

int vwriter_open(struct vwriter **out, int threads)
{
    *out = NULL;
    if (threads < 1 || threads > VWRITER_THREADS_MAX)
        return VERITY_EINVAL;
    struct vwriter *w = calloc(1, sizeof *w);
    if (!w)
        return -ENOMEM;
    w->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (w->efd < 0) {
        int rc = -errno;
        free(w);
        return rc;
    }
    pthread_mutex_init(&w->mu, NULL);
    pthread_cond_init(&w->todo_cv, NULL);
    pthread_cond_init(&w->done_cv, NULL);
    for (int i = 0; i < threads; i++) {
        int rc = pthread_create(&w->threads[i], NULL, run, w);
        if (rc) {
            vwriter_close(w);
            return -rc;
        }
        w->nthreads++;
    }
    *out = w;
    return 0;
}

void vwriter_close(struct vwriter *w)
{
    if (!w)
        return;
    lock(w);
    VERITY_VERIFY(w->todo == NULL);
    w->stop = true;
    pthread_cond_broadcast(&w->todo_cv);
    unlock(w);
    for (int i = 0; i < w->nthreads; i++)
        pthread_join(w->threads[i], NULL);
    for (struct vwjob *jb = w->done; jb; jb = jb->next)
        jb->state = VWJOB_IDLE;
    pthread_mutex_destroy(&w->mu);
    pthread_cond_destroy(&w->todo_cv);
    pthread_cond_destroy(&w->done_cv);
    (void)close(w->efd);
    free(w);
}

int vwriter_fd(const struct vwriter *w)
{
    return w->efd;
}

void vwriter_submit(struct vwriter *w, struct vwjob *jb)
{
    lock(w);
    VERITY_VERIFY(jb->state == VWJOB_IDLE && !w->stop);
    jb->state = VWJOB_QUEUED;
    jb->rc = 0;
    jb->next = NULL;
    if (w->todo_tail)
        w->todo_tail->next = jb;
    else
        w->todo = jb;
    w->todo_tail = jb;
    pthread_cond_signal(&w->todo_cv);
    unlock(w);
}

/* Takes jb off the done list (caller holds the lock; jb is on it). */
static void done_unlink(struct vwriter *w, struct vwjob *jb)
{
    struct vwjob *prev = NULL;
    for (struct vwjob *x = w->done; x; prev = x, x = x->next)
        if (x == jb) {
            if (prev)
                prev->next = jb->next;
            else
                w->done = jb->next;
            if (w->done_tail == jb)
                w->done_tail = prev;
            jb->next = NULL;
            jb->state = VWJOB_IDLE;
            return;
        }
    VERITY_VERIFY(false);
}

size_t vwriter_reap(struct vwriter *w)
{
    uint64_t cnt;
    size_t ran = 0;
    (void)!read(w->efd, &cnt, sizeof cnt); /* EAGAIN: nothing counted, fine */
    for (;;) {
        lock(w);
        struct vwjob *jb = w->done;
        if (jb)
            done_unlink(w, jb);
        unlock(w);
        if (!jb)
            break;
        jb->done(jb);
        ran++;
    }
    return ran;
}

void vwriter_wait(struct vwriter *w, struct vwjob *jb)
{
    lock(w);
    if (jb->state != VWJOB_IDLE) {
        while (jb->state != VWJOB_DONE)
            pthread_cond_wait(&w->done_cv, &w->mu);
        done_unlink(w, jb);
    }
    unlock(w);
}
