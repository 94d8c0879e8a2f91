/*
 * Broker configuration: defaults that run with nothing but a data directory,
 * overridden in order by a JSON config file, the environment and the command
 * line. Every key is one row of the table in config.c; docs/OPERATIONS.md
 * lists them.
 *
 *   file:  {"data_dir": "/var/lib/verity", "max_connections": 1000, ...}
 *   env:   VERITY_<KEY in upper case>, e.g. VERITY_DATA_DIR, VERITY_LISTEN
 *   flags: --<key with dashes> VALUE or --<key>=VALUE, e.g. --data-dir DIR
 */
#ifndef VERITY_BROKER_CONFIG_H
#define VERITY_BROKER_CONFIG_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

struct vio;

#define BCFG_PATH_MAX 1024
#define BCFG_ADDR_MAX 300
#define BCFG_NODES_MAX 5                /* brokers in a cluster (VSR_REPLICAS_MAX) */
#define BCFG_NODE_ADDR_MAX 128          /* one address of a cluster node */
#define BCFG_CLUSTER_TEXT_MAX 2048      /* the cluster_nodes text form */

/* One broker of the cluster (the `cluster` section, docs/OPERATIONS.md). */
struct bcfg_node {
    uint32_t id;                       /* node id, unique, 1..65535 */
    char listen[BCFG_NODE_ADDR_MAX];   /* its client protocol HOST:PORT */
    char peer[BCFG_NODE_ADDR_MAX];     /* its broker-to-broker HOST:PORT */
    char http[BCFG_NODE_ADDR_MAX];     /* its admin HTTP HOST:PORT */
};

enum topic_durability { TDUR_ALWAYS = 0, TDUR_GROUP = 1, TDUR_OS = 2 };

struct broker_config {
    char data_dir[BCFG_PATH_MAX]; /* required (default "./data") */
    char listen[BCFG_ADDR_MAX];   /* protocol HOST:PORT (127.0.0.1:9720) */
    char http[BCFG_ADDR_MAX];     /* admin HTTP HOST:PORT (127.0.0.1:9721); "" or "off" disables */
    char kafka_listen[BCFG_ADDR_MAX];          /* Kafka protocol HOST:PORT; "" or "off" (default) disables */
    char kafka_advertised_host[BCFG_ADDR_MAX]; /* host in Kafka Metadata ("" = the bound host) */
    uint64_t kafka_readahead_bytes; /* the Fetch read-ahead's cache, bytes (0: off; k_fetch.c) */
    char signing_key[BCFG_PATH_MAX]; /* "" = <data_dir>/keys/verity.key, generated when missing */
    char log_level[16];              /* debug|info|warn|error */
    char tlog_name[256];             /* key name of signed checkpoints (verity.example/local) */
    uint32_t node_id;
    /* cluster membership: "1=LISTEN,PEER,HTTP;2=...", from the `cluster`
     * object of the file, --cluster-nodes or VERITY_CLUSTER_NODES ("" = a
     * single broker); parsed into nodes[] by bcfg_check */
    char cluster_nodes[BCFG_CLUSTER_TEXT_MAX];
    uint32_t cluster_n;                 /* 0 = no cluster section */
    struct bcfg_node nodes[BCFG_NODES_MAX];
    bool listen_set, http_set;          /* given explicitly (else the node entry's) */
    /* node-local, not part of the cluster id: "ID=HOST:PORT;..." where this
     * broker dials node ID instead of that node's `peer` address (a relay
     * of the fault tests, a NAT); parsed into peer_dial_addr[] (same index
     * as nodes[]; "" = dial the node's peer address) */
    char peer_dial[BCFG_CLUSTER_TEXT_MAX];
    char peer_dial_addr[BCFG_NODES_MAX][BCFG_NODE_ADDR_MAX];
    /* node-local: 1 = this broker's disk was replaced (wiped); every replica
     * group that starts with a fresh journal starts in rejoin mode
     * (vsr_config.rejoin; docs/REPLICATION.md "Replacing a dead broker's
     * disk"). --rejoin, VERITY_REJOIN=1, "rejoin": 1. */
    uint32_t rejoin;
    /* limits */
    uint32_t max_connections;
    uint32_t max_inflight; /* requests in flight per connection */
    uint32_t max_frame_bytes;
    uint32_t max_batch_bytes;
    uint32_t idle_timeout_ms;         /* close a connection idle this long (0 = never) */
    uint32_t write_buffer_bytes;      /* stop reading a connection whose output exceeds this */
    uint32_t produce_timeout_ms;      /* default and ceiling for ProduceRequest.timeout_ms */
    uint32_t fetch_max_bytes;         /* ceiling for one fetch response's payload */
    uint32_t fetch_max_wait_ms;       /* ceiling for FetchRequest.max_wait_ms */
    uint32_t max_producers;           /* producer ids the metadata log may hold */
    uint32_t partition_producers_max; /* producer ids tracked per partition */
    uint64_t idempotency_window_ms;
    uint32_t idempotency_keys_max; /* idempotency keys remembered per partition */
    uint64_t producer_retention_ms; /* forget a producer idle this long (0 = never) */
    uint64_t snapshot_records;      /* snapshot state after this many log records (0 = at stop only) */
    uint32_t max_topics;
    /* topic defaults */
    uint32_t default_partitions;
    enum topic_durability default_durability;
    int64_t default_retention_ms;    /* -1 = unlimited */
    int64_t default_retention_bytes; /* -1 = unlimited */
    uint64_t default_segment_bytes;
    uint32_t default_max_message_bytes;
    /* storage */
    uint32_t group_delay_us;
    uint64_t group_bytes_max;
    uint32_t checkpoint_records;
    uint64_t log_prealloc_bytes; /* zero tail ahead of each active segment (0 = off) */
    uint32_t checkpoint_interval_ms; /* a checkpoint at least this often while appends come */
    uint32_t retention_check_ms;
    uint32_t trace_sample; /* trace every Nth produce's path (broker/trace.h); 0 = off */
    /* consumer groups */
    enum topic_durability group_log_durability; /* of <data_dir>/__groups */
    uint32_t group_log_delay_us;                /* group mode: longest wait for its fdatasync */
    uint32_t group_pending_max;                 /* ceiling for a group's pending_max */
    /* resource budgets against hostile or broken clients (issue 8) */
    uint64_t buffer_bytes_max;         /* broker-wide: frames being received + requests unanswered */
    uint32_t frame_timeout_ms;         /* a started frame must complete within this (0 = never) */
    uint32_t max_connections_per_addr; /* open connections from one IP address */
    uint32_t reserved_connections;     /* last slots: only for an address with none open */
    uint32_t max_http_connections;     /* admin HTTP connections open at once */
    uint32_t segment_fds_max;          /* closed segments' descriptor cache (0 = fd limit / 4) */
    char ready_file[BCFG_PATH_MAX];    /* written with the bound addresses once serving ("" = none) */
    /* admin HTTP and shutdown */
    uint32_t http_timeout_s;
    uint32_t shutdown_timeout_ms;
    /* TLS (broker/tls.c): on for the client and admin ports when tls_cert is set */
    char tls_cert[BCFG_PATH_MAX];   /* PEM chain ("" = plaintext) */
    char tls_key[BCFG_PATH_MAX];    /* PEM private key */
    char tls_ca[BCFG_PATH_MAX];     /* PEM CAs for client certificates ("" = none) */
    char tls_client_auth[16];       /* none|optional|required */
    /* mutual TLS on the cluster's peer links (broker/peer_tls.c, issue 14) */
    char peer_tls_cert[BCFG_PATH_MAX]; /* PEM chain, server and client ("" = plaintext links) */
    char peer_tls_key[BCFG_PATH_MAX];
    char peer_tls_ca[BCFG_PATH_MAX];   /* PEM CAs the other brokers' certificates chain to */
    /* authentication, tenants, ACLs, quotas (broker/auth.c, issue 14) */
    char auth_file[BCFG_PATH_MAX];  /* the security store ("" = no authentication) */
    uint32_t auth_timeout_ms;       /* a connection must authenticate within this */
    uint32_t auth_fail_delay_ms;    /* a failed Authenticate is answered after this */
    /* witnesses of the partitions' checkpoints (broker/witness_push.h, issue 11) */
    char witnesses[4096];           /* "URL VKEY[;URL VKEY...]" ("" = none; WPUSH_TEXT_MAX) */
    uint32_t witness_interval_ms;   /* offer a grown tree (or retry) at most this often */
    uint32_t witness_every_batches; /* and as soon as it grew by this many batches (0 = off) */
    uint32_t witness_timeout_ms;    /* one add-checkpoint request's deadline */
    /* Not a configuration key: the file operations every log of this broker
     * uses (NULL = vio_posix). Tests that run a broker in-process hand in
     * tests/support/vio_fault.c here. Borrowed for the broker's life. */
    const struct vio *io;
};

void bcfg_default(struct broker_config *c);

/* Sets one key from its text form. Returns 0, or VERITY_EINVAL /
 * VERITY_ENOTFOUND (unknown key) with a message in err. */
int bcfg_set(struct broker_config *c, const char *key, const char *value, char *err, size_t cap)
    __attribute__((warn_unused_result));

/* Applies a JSON object file. Unknown keys are errors. */
int bcfg_load_file(struct broker_config *c, const char *path, char *err, size_t cap)
    __attribute__((warn_unused_result));

/* Applies every VERITY_<KEY> variable that is set. */
int bcfg_load_env(struct broker_config *c, char *err, size_t cap)
    __attribute__((warn_unused_result));

/*
 * The whole sequence: defaults, then the file named by --config or
 * VERITY_CONFIG, then the environment, then the flags, then bcfg_check.
 * Sets *help when --help was given (nothing else is applied then).
 */
int bcfg_from_args(struct broker_config *c, int argc, char **argv, bool *help, char *err,
                   size_t cap) __attribute__((warn_unused_result));

/* Cross-key checks (fetch_max_bytes fits in a frame, ...). */
int bcfg_check(const struct broker_config *c, char *err, size_t cap)
    __attribute__((warn_unused_result));

/* Parses the cluster_nodes text into out (n entries). 0, or VERITY_EINVAL
 * with a message (duplicate id, missing address, more than BCFG_NODES_MAX). */
int bcfg_cluster_parse(const char *text, struct bcfg_node *out, uint32_t *n, char *err,
                       size_t cap) __attribute__((warn_unused_result));

/* This broker's node entry, or NULL (no cluster, or node_id not in it). */
const struct bcfg_node *bcfg_self(const struct broker_config *c);

/* Splits "host:port" or "[v6]:port" into host (cap bytes) and port. */
int bcfg_split_hostport(const char *addr, char *host, size_t cap, uint16_t *port)
    __attribute__((warn_unused_result));

const char *bcfg_durability_name(enum topic_durability d);
/* Parses always|group|os; -1 when unknown. */
int bcfg_durability_parse(const char *s);

/* Writes the usage text with every key and its default. */
void bcfg_usage(FILE *out);

#endif
