/*
 * vwriter: journal I/O off the event loop. A few threads (one broker-wide
 * vwriter serves every replica group) take jobs (a vjournal and an ordered
 * run of writes), perform them (pwrite each, then one fdatasync per file
 * written) and queue the job as finished; the loop learns of finished jobs
 * through vwriter_fd (an eventfd, readable while any wait) and calls
 * vwriter_reap, which runs each job's `done` on the loop thread, in the
 * order the jobs finished.
 *
 * Order: jobs start in submission order, but with more than one thread two
 * jobs may run at once and finish in any order. A caller that needs two
 * jobs in order (vgroup: writes to one file of one group) submits the
 * second only after the first's `done` ran. A job's writes are durable
 * when its rc is 0 (every sync returned 0); on a failure rc is the first
 * error and nothing of the job may be taken as durable.
 *
 * The threads touch only the job's vjournal (its fds and counters) and the
 * job's write bytes, which the caller must keep unchanged until `done` (or
 * vwriter_wait) returned. The struct vio must be safe to call from several
 * threads (vio_posix is; the test fault layers take a lock).
 */
#ifndef VERITY_VSR_VWRITER_H
#define VERITY_VSR_VWRITER_H

#include <stdbool.h>
#include <stddef.h>

#include "broker/vsr/vjournal.h"
#include "broker/vsr/vsr.h"

#define VWRITER_THREADS_MAX 8

struct vwriter;

enum vwjob_state { VWJOB_IDLE = 0, VWJOB_QUEUED, VWJOB_RUNNING, VWJOB_DONE };

struct vwjob {
    /* set by the caller before vwriter_submit */
    struct vjournal *j;
    const struct vsr_write *w; /* performed in this order */
    size_t n;
    /* Or, when set, the thread runs fn instead (j, w, n unused); its
     * return is rc. */
    int (*fn)(struct vwjob *jb);
    void (*done)(struct vwjob *jb); /* on the loop thread, from vwriter_reap */
    void *arg;
    /* set by the writer */
    int rc;                 /* 0: every write durable; else the first error */
    enum vwjob_state state; /* under the writer's lock */
    struct vwjob *next;     /* queue link (private) */
};

/* Starts `threads` (1 .. VWRITER_THREADS_MAX) I/O threads. 0, VERITY_EINVAL
 * or -errno. */
int vwriter_open(struct vwriter **out, int threads) __attribute__((warn_unused_result));
/* Stops the threads. No job may be queued or running (vwriter_wait them);
 * finished jobs not reaped are dropped without their `done`. */
void vwriter_close(struct vwriter *w);

/* Readable while finished jobs wait for vwriter_reap. */
int vwriter_fd(const struct vwriter *w);
void vwriter_submit(struct vwriter *w, struct vwjob *jb);
/* Runs `done` of every finished job, oldest first; returns how many. A
 * `done` may submit, wait for or reap other jobs. */
size_t vwriter_reap(struct vwriter *w);
/* Blocks until jb (queued or running) finished, then takes it out of the
 * finished queue without running its `done`. No-op for an idle job. */
void vwriter_wait(struct vwriter *w, struct vwjob *jb);

/* Performs a job's writes in the calling thread (what a writer thread does):
 * every write put, then one sync per file written (prepares, headers,
 * superblock). 0 or the first error. */
int vwriter_perform(struct vjournal *j, const struct vsr_write *w, size_t n)
    __attribute__((warn_unused_result));

#endif
