/*
 * A real verityd for integration tests: started from $VERITY_BIN_DIR on
 * loopback port 0 (the broker picks a free port and writes it to its
 * ready_file, <root>/ready.json, which tb_start reads back; no probing for
 * a free port, so no race with other tests), with its data in a fresh
 * temporary directory, its stderr in <root>/verityd.log, stopped by its PID
 * (never by name).
 */
#ifndef VERITY_TBROKER_H
#define VERITY_TBROKER_H

#include <stdint.h>
#include <sys/types.h>

struct tbroker {
    char *root;       /* temporary directory (owned) */
    char data[512];   /* <root>/data */
    char log[512];    /* <root>/verityd.log */
    char addr[64];    /* "127.0.0.1:<port>", valid after the first tb_start */
    uint16_t port;    /* 0 until the first tb_start; restarts ask for it again */
    pid_t pid;        /* 0 when not running */
    char http[64];    /* admin HTTP HOST:PORT to pass as --http; "" (default): off */
};

/* A loopback port that was free a moment ago, or 0. */
uint16_t tb_free_port(void);
/* Creates the directory (tag names it). 0 or -1. */
int tb_init(struct tbroker *b, const char *tag);
/* Starts verityd (admin HTTP off, log level warn) and waits until it has
 * written its ready file (it serves then), at most 20 s; fills port and
 * addr. 0, -ECHILD (it exited), -ETIMEDOUT. */
int tb_start(struct tbroker *b);
/* Sends sig and waits for the exit; SIGKILL after 10 s. No-op when stopped. */
void tb_stop(struct tbroker *b, int sig);
/* Stops with SIGKILL if running and removes the directory (kept when
 * VERITY_TEST_KEEP is set). */
void tb_free(struct tbroker *b);

#endif
