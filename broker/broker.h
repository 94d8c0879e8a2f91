/*
 * verityd: the single-node broker. One libevent loop owns all broker state
 * (topics, partitions, connections, idempotence, metadata); storage commit
 * threads only wake it. broker/main.c parses the configuration and calls
 * these; tests may run a broker in-process the same way.
 */
#ifndef VERITY_BROKER_BROKER_H
#define VERITY_BROKER_BROKER_H

#include "broker/config.h"

struct broker;

/*
 * Opens the data directory (metadata log replay, every partition with
 * recovery and idempotence rebuild), binds the listeners and installs the
 * SIGTERM/SIGINT handlers. cfg is copied. Returns 0 with *out (broker_free),
 * or an error already logged.
 */
int broker_new(const struct broker_config *cfg, struct broker **out)
    __attribute__((warn_unused_result));

/* Runs the loop until a signal or broker_stop; then answers what is in
 * flight, closes the connections. Returns 0 after a clean stop. */
int broker_run(struct broker *b) __attribute__((warn_unused_result));

/* Asks the loop to stop (loop thread only, e.g. from a callback). */
void broker_stop(struct broker *b);

/* Syncs and closes every log (checkpoints), frees everything. Returns 0 or
 * the first close error. NULL is a no-op. */
int broker_free(struct broker *b);

/* The verityd program (broker/verityd_main.c): configuration from argv,
 * the environment and the file, run until SIGTERM, exit code. io: the file
 * operations of every log (NULL = vio_posix; a test build hands in its own). */
int verityd_main(int argc, char **argv, const struct vio *io);

#endif
