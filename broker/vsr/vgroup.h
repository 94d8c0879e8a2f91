/*
 * vgroup: the shell around one replica group's core. It owns the core's
 * memory, its outbox and its journal (vjournal), performs every write the
 * outbox asks for (pwrite + fdatasync, then vsr_on_write_done), hands
 * messages to `send` and commits to `apply`, in op order. The broker plugs
 * `send` into broker/peer.c and `apply` into the partition log
 * (vlog_append_exact); tests plug in a loopback network.
 *
 * Writes are performed either synchronously inside the call that caused
 * them (no writer: tests, and the journal's first superblock at open), or,
 * after vgroup_set_writer, by a vwriter's I/O threads while the caller's
 * loop goes on (sending PREPAREs, taking PREPARE_OKs, serving clients): the
 * completions come back through vwriter_reap on the loop thread, which
 * acknowledges them to the core and then calls ops->io_done. Either way a
 * write is acknowledged to the core only once durable; the writes to one
 * file of the group are performed in the order the core asked for them
 * (one job per file in flight, the writes queued meanwhile go in the next
 * job: one fdatasync for all of them); a superblock copy is written alone,
 * with no other write of the group in flight; a failed write stops the
 * group.
 *
 * Everything but the writes themselves runs on one thread (the broker's
 * event loop). `send` must copy or encode the message before returning
 * (its body lives in the outbox arena until the next call on the group).
 */
#ifndef VERITY_VSR_VGROUP_H
#define VERITY_VSR_VGROUP_H

#include <stdbool.h>
#include <stdint.h>

#include "broker/vsr/vjournal.h"
#include "broker/vsr/vsr.h"
#include "broker/vsr/vwriter.h"

struct vio;

struct vgroup_ops {
    void (*send)(void *arg, const struct vsr_msg *m);
    /* Applies a committed op (in op order). A non-zero return is a sticky
     * error: the group stops (the data log cannot take the commit). */
    int (*apply)(void *arg, const struct vsr_commit *c);
    /* A state transfer to install (optional; NULL = refused, sticky error). */
    int (*install)(void *arg, uint64_t op, const uint8_t checksum[VSR_CHECKSUM_SIZE],
                   const uint8_t digest[VSR_CHECKSUM_SIZE]);
    /* After the completions of an asynchronous job were fed to the core
     * (optional): the caller's hook to look at the group again. */
    void (*io_done)(void *arg);
};

struct vgroup_pending {
    struct vsr_write w; /* bytes point into data */
    uint8_t *data;
};

/* The writes of one file in flight on the vwriter (one job per file). */
struct vgroup_stream {
    struct vwjob jb;
    struct vgroup *g;
    struct vgroup_pending *items; /* the job's writes, in order */
    struct vsr_write *ws;         /* their descriptors for the job */
    size_t n, cap;
    bool busy; /* submitted; its completion not fed back yet */
};

struct vgroup {
    struct vjournal j;
    struct vsr_config cfg;
    struct vsr *core; /* NULL after a sticky error */
    void *mem;
    struct vsr_outbox ob;
    struct vsr_msg *msgs;
    struct vsr_write *writes;
    struct vsr_commit *commits;
    uint8_t *arena;
    struct vgroup_pending *q; /* writes not yet performed (nor in flight) */
    size_t nq, capq;
    struct vwriter *wr;            /* NULL: writes performed synchronously */
    struct vgroup_stream st[3];    /* [0] prepares, [1] headers, [2] superblock */
    bool busy; /* inside a drain: no re-entry */
    int error; /* sticky */
    const struct vgroup_ops *ops;
    void *arg;
};

/*
 * Opens the group's journal under dir and starts the core from it (fresh
 * when the journal never had a superblock). cfg's read functions and ctx
 * are filled in here. state: what the data log holds applied. io NULL =
 * vio_posix. 0, -ENOMEM, -errno, or VERITY_EINVAL (bad config, or a
 * journal that had a superblock and now has none valid: the replica must
 * not join with a forgotten view).
 */
int vgroup_open(struct vgroup *g, const char *dir, const struct vsr_config *cfg,
                const struct vsr_state *state, const struct vgroup_ops *ops, void *arg,
                const struct vio *io) __attribute__((warn_unused_result));
/* Waits for the group's writes in flight (their completions are dropped). */
void vgroup_close(struct vgroup *g);

/* From now on the group's writes go to w's threads (w outlives the group).
 * Call once, after vgroup_open. */
void vgroup_set_writer(struct vgroup *g, struct vwriter *w);
/* Whether vgroup_flush has work: queued writes it would perform or hand to
 * the writer now (with a writer, writes queued behind a job of their file
 * in flight go when that job finishes, without a flush). */
bool vgroup_needs_flush(const struct vgroup *g);
/* The lowest op with a prepare or header-mark write not yet durable
 * (queued or in flight); 0 while a superblock write is; UINT64_MAX when
 * none. */
uint64_t vgroup_unsynced_op(const struct vgroup *g);
/* Writes asked for by the core and not yet durable (queued or in flight). */
size_t vgroup_unsynced(const struct vgroup *g);

void vgroup_on_message(struct vgroup *g, const struct vsr_msg *m);
/* As vgroup_on_message, but the writes the message caused wait for
 * vgroup_flush (or the next call that drains): a caller that takes a burst
 * of messages makes all their journal writes durable with one fdatasync per
 * file. Messages and commits leave at once. With a writer, vgroup_flush
 * hands the queued writes to it (if no job of their file is in flight) and
 * returns at once. */
void vgroup_on_message_deferred(struct vgroup *g, const struct vsr_msg *m);
void vgroup_flush(struct vgroup *g);
void vgroup_tick(struct vgroup *g);
/* The connection to member `replica` closed (vsr_on_peer_lost). */
void vgroup_peer_lost(struct vgroup *g, uint8_t replica);
/* Submits body as request (client, request) to this replica. False when it
 * is not the primary of a normal view (the caller answers NOT_LEADER) or the
 * group stopped; true means the core saw it (it may still drop it when its
 * pipeline is full: the caller retries on the next tick). */
bool vgroup_submit(struct vgroup *g, uint64_t client, uint64_t request, const uint8_t *body,
                   uint32_t len);
/* As vgroup_submit, with the journal writes left for vgroup_flush (the
 * PREPAREs to the backups leave at once). */
bool vgroup_submit_deferred(struct vgroup *g, uint64_t client, uint64_t request,
                            const uint8_t *body, uint32_t len);

#endif
