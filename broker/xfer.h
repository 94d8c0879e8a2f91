/*
 * xfer: state transfer of a replicated partition's data log (issue 10;
 * docs/REPLICATION.md "State transfer"). The wire format is
 * broker/vsr/xfer_wire.h; the glue to the replica group is in
 * broker/cluster.c (section "state transfer").
 *
 * A replica too far behind to catch up from the journal (the core asks
 * REQUEST_STATE) does not hand the core a state it does not hold: the shell
 * first copies the committed batches it lacks from a peer into its own log
 * (each batch with vlog_append_exact, so the chain is checked), checks that
 * its log's chain at the peer's end is the peer's digest, and only then
 * gives the core a STATE for that op; the core's install is then a check
 * (the log is there) plus the applied-ring entry. Until the install, the
 * copied bytes lie past the applied position: the high watermark does not
 * move, a restart cuts them back (cluster_part_open), and an op the core
 * applies meanwhile cuts them back first.
 *
 * struct xfer is the requester's state of one group (at most one transfer
 * at a time: one chunk of at most XFER_CHUNK_MAX in flight), and the
 * counters of both sides.
 */
#ifndef VERITY_BROKER_XFER_H
#define VERITY_BROKER_XFER_H

#include <stdbool.h>
#include <stdint.h>
#include <stddef.h>

#include "broker/vsr/xfer_wire.h"

struct vlog;

#define XFER_STALL_MS 1000 /* no answer for this long: give up that peer */

struct xfer {
    bool active;
    bool installing;      /* inside the STATE handed to the core */
    uint8_t peer;         /* replica index asked */
    uint64_t xid;
    uint64_t inst_op, inst_end;
    uint8_t inst_chain[32];
    int64_t started_ms, last_ms; /* monotonic */
    uint64_t from_end;    /* log end when it started */
    uint64_t bytes;       /* of this transfer */
    /* counters since start */
    uint64_t started, done, failed, stalled;
    uint64_t bytes_in, bytes_out, chunks_out, bad;
    int last_error;
};

int64_t xfer_mono_ms(void);

/* Appends the len bytes of whole batches in data to log, each with
 * vlog_append_exact. 0, or the first refusal (VERITY_EPROTO for a batch
 * that does not fit, else vlog_append_exact's: EOFFSET, ECHAIN, a
 * validation error); the batches before it stay appended (the caller cuts
 * the log back). */
int xfer_append_chunk(struct vlog *log, const uint8_t *data, uint32_t len)
    __attribute__((warn_unused_result));

/* Copies whole batches from offset `from` below `end` into buf (at most cap
 * bytes, at least one batch). *len 0 when from == end. */
int xfer_read_chunk(struct vlog *log, uint64_t from, uint64_t end, uint8_t *buf, size_t cap,
                    size_t *len) __attribute__((warn_unused_result));

#endif

/* Damaged replica logs (issue 10 item 3). */

/* Reads every batch of log from its start to its end (vlog_read_copy:
 * header, CRC, offset continuity), so a bit flip in a closed segment,
 * which open does not read, is found. 0, or VERITY_ECORRUPT (*bad_offset:
 * where) or another read error. Cost: one sequential read of the log. */
int xfer_log_scan(struct vlog *log, uint64_t *bad_offset) __attribute__((warn_unused_result));

/* Moves every entry of the partition directory dir except `vsr` (the
 * journal and applied ring) into dir/damaged-<now_ms>/ (never deletes).
 * 0 or -errno; out gets the new directory's path. */
int xfer_move_aside(const char *dir, int64_t now_ms, char *out, size_t cap)
    __attribute__((warn_unused_result));
