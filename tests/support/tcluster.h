/*
 * A cluster of real verityd processes for integration tests: N brokers on
 * loopback, each with a client, peer and admin HTTP port picked free just
 * before the start (tb_free_port), one shared cluster config file
 * (<root>/cluster.json, the `cluster` section of docs/OPERATIONS.md), one
 * data directory and log per broker. Brokers are stopped by PID only.
 */
#ifndef VERITY_TCLUSTER_H
#define VERITY_TCLUSTER_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#define TC_NODES_MAX 5

struct tc_node {
    uint32_t id; /* 1..n */
    char data[512], log[512], ready[512];
    char listen[64], peer[64], http[64];
    pid_t pid; /* 0 when not running */
};

struct tcluster {
    char *root; /* owned temporary directory */
    char config[512];
    int n;
    struct tc_node node[TC_NODES_MAX];
};

/* Creates the directory and the config for n brokers. 0 or -1. */
int tc_init(struct tcluster *c, int n, const char *tag);
/* Starts broker i (0-based) and waits until it serves (ready file), at most
 * 20 s. 0, -ECHILD (it exited), -ETIMEDOUT. */
int tc_start(struct tcluster *c, int i);
/* Sends sig to broker i and waits for its exit (SIGKILL after 10 s). */
void tc_stop(struct tcluster *c, int i, int sig);
/* Stops every broker with SIGKILL and removes the directory (kept when
 * VERITY_TEST_KEEP is set). */
void tc_free(struct tcluster *c);
/* GET path on broker i's admin port: the HTTP status and the body (NUL
 * terminated, truncated to cap - 1), or -1 when it cannot connect. */
int tc_http_get(const struct tcluster *c, int i, const char *path, char *body, size_t cap);

#endif
