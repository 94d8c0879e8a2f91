/*
 * The projection worker (`verity-project run`) and the other commands that
 * need the broker: rebuild, status, wait. See worker.c for the exactly-once
 * argument.
 */
#ifndef VERITY_PRJ_WORKER_H
#define VERITY_PRJ_WORKER_H

#include <signal.h>
#include <stdint.h>

#include "consumer/project/prj.h"

/* Set by SIGTERM / SIGINT: the worker commits what it holds and returns. */
extern volatile sig_atomic_t prj_stop;

/* Counters shown by /metrics (and kept in the positions table). */
struct prj_stats {
    pthread_mutex_t mu;
    uint64_t events;               /* applied (rows written) */
    uint64_t dead_lettered;
    uint64_t skipped;              /* delivered again below the stored position */
    uint64_t commits;
    uint64_t db_errors;            /* failed transactions (retried) */
    uint64_t conflicts;            /* positions moved by another writer */
    uint64_t gap_fills;            /* reads by offset to fill a gap */
    struct prj_pos *pos;           /* a copy after each commit */
    size_t n_pos;
};

/* Runs until prj_stop or a fatal error. Returns a process exit code:
 * 0 stopped, 1 failure (message on stderr), 3 broker unreachable. */
int prj_run(const struct prj_config *cfg);

/* Replays every source partition from its first stored offset into shadow
 * tables, then swaps them in atomically. Exit code as prj_run. */
int prj_rebuild(const struct prj_config *cfg, int timeout_ms);

/* Prints per-partition positions, lag and rates. Exit code. */
int prj_status(const struct prj_config *cfg, bool json);

/* Waits until (topic, partition) has applied offset (next_offset > offset),
 * at most timeout_ms (-1: forever). 0 when it has, VERITY_ETIMEOUT, or
 * SINK_EDB. The library form of `verity-project wait`. */
int prj_wait(const struct prj_config *cfg, const char *topic, uint32_t partition,
             uint64_t offset, int timeout_ms);

/* Checks each stored position's chain hash against the log (verify.c).
 * Exit code: 0 all match, 5 a mismatch or a position that cannot be
 * checked, 1 error, 3 broker unreachable. */
int prj_verify(const struct prj_config *cfg, bool json, int timeout_ms);

/* Serves GET /metrics on addr ("HOST:PORT") from a thread. 0 or -1. */
int prj_metrics_start(const char *addr, struct prj_stats *st);
void prj_metrics_stop(void);

#endif
