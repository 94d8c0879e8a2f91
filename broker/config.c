/*
 * Configuration table and its three sources (see config.h). Each key is one
 * row: name, type, offset into struct broker_config, bounds, help text. The
 * same parser serves the file, the environment and the flags, so a value
 * means the same thing wherever it comes from.
 */
#include "broker/config.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "broker/blog.h"
#include "broker/witness_push.h"
#include "proto/codec.h"
#include "storage/batch.h"
#include "verity/errors.h"
#include "verity/limits.h"

enum ktype { K_STR, K_U32, K_U64, K_I64, K_DUR, K_LEVEL };

struct key {
    const char *name;
    enum ktype type;
    size_t off;
    size_t size; /* K_STR: buffer size */
    int64_t min;
    int64_t max;
    const char *help;
};

#define F(f) offsetof(struct broker_config, f)
#define S(f) sizeof(((struct broker_config *)0)->f)

static const struct key keys[] = {
    {"data_dir", K_STR, F(data_dir), S(data_dir), 0, 0, "data directory"},
    {"listen", K_STR, F(listen), S(listen), 0, 0, "protocol listener HOST:PORT"},
    {"http", K_STR, F(http), S(http), 0, 0, "admin HTTP HOST:PORT (\"off\" disables)"},
    {"kafka_listen", K_STR, F(kafka_listen), S(kafka_listen), 0, 0,
     "Kafka protocol listener HOST:PORT (\"off\", the default, disables; docs/KAFKA.md)"},
    {"kafka_advertised_host", K_STR, F(kafka_advertised_host), S(kafka_advertised_host), 0, 0,
     "host Kafka clients are told to connect to (default: the bound host)"},
    {"kafka_readahead_bytes", K_U64, F(kafka_readahead_bytes), 0, 0, 1ll << 30,
     "bytes of Kafka record batches converted ahead of Kafka consumers' next Fetch (0 disables; docs/KAFKA.md)"},
    {"signing_key", K_STR, F(signing_key), S(signing_key), 0, 0,
     "Ed25519 checkpoint key (default <data_dir>/keys/verity.key, generated)"},
    {"tlog_name", K_STR, F(tlog_name), S(tlog_name), 0, 0,
     "key name of C2SP checkpoints; origins are <name>/<topic>/<partition>"},
    {"log_level", K_LEVEL, F(log_level), S(log_level), 0, 0, "debug|info|warn|error"},
    {"node_id", K_U32, F(node_id), 0, 0, 65535, "this broker's node id"},
    {"cluster_nodes", K_STR, F(cluster_nodes), S(cluster_nodes), 0, 0,
     "cluster members \"ID=LISTEN,PEER,HTTP;...\" (\"\" = single broker; file: \"cluster\": {\"nodes\": [...]})"},
    {"peer_dial", K_STR, F(peer_dial), S(peer_dial), 0, 0,
     "node-local: dial these nodes at another address than their peer address, \"ID=HOST:PORT;...\" "
     "(a relay per link; not part of the cluster id; file: string or {\"ID\": \"HOST:PORT\"})"},
    {"rejoin", K_U32, F(rejoin), 0, 0, 1,
     "node-local: this broker's disk was wiped; every replica group that starts with no journal "
     "votes in no view change until caught up (docs/REPLICATION.md; flag: --rejoin)"},
    {"max_connections", K_U32, F(max_connections), 0, 1, 1000000, "open connections"},
    {"max_inflight", K_U32, F(max_inflight), 0, 1, 65536, "requests in flight per connection"},
    {"max_frame_bytes", K_U32, F(max_frame_bytes), 0, 4096, VERITY_FRAME_BYTES_HARD,
     "largest frame"},
    {"max_batch_bytes", K_U32, F(max_batch_bytes), 0, BATCH_HDR_SIZE + 8, VERITY_BATCH_BYTES_MAX,
     "largest record batch"},
    {"idle_timeout_ms", K_U32, F(idle_timeout_ms), 0, 0, UINT32_MAX,
     "close idle connections after (0 = never)"},
    {"write_buffer_bytes", K_U32, F(write_buffer_bytes), 0, 65536, 1u << 30,
     "pause reading a connection whose unsent output exceeds this"},
    {"produce_timeout_ms", K_U32, F(produce_timeout_ms), 0, 1, 3600000,
     "default and ceiling for a produce's wait for durability"},
    {"fetch_max_bytes", K_U32, F(fetch_max_bytes), 0, 1024, VERITY_FRAME_BYTES_HARD,
     "ceiling for one fetch response"},
    {"fetch_max_wait_ms", K_U32, F(fetch_max_wait_ms), 0, 0, 600000, "ceiling for a long-poll"},
    {"max_producers", K_U32, F(max_producers), 0, 1, 100000000, "producer ids in the broker"},
    {"partition_producers_max", K_U32, F(partition_producers_max), 0, 1, 10000000,
     "producer ids tracked per partition"},
    {"idempotency_window_ms", K_U64, F(idempotency_window_ms), 0, 0, INT64_MAX / 2,
     "how long an idempotency key is remembered"},
    {"idempotency_keys_max", K_U32, F(idempotency_keys_max), 0, 0, 100000000,
     "idempotency keys remembered per partition"},
    {"producer_retention_ms", K_U64, F(producer_retention_ms), 0, 0, INT64_MAX / 2,
     "forget a producer id's sequences this long after its newest batch (0 = never)"},
    {"snapshot_records", K_U64, F(snapshot_records), 0, 0, INT64_MAX / 2,
     "write a state snapshot after this many log records (0 = only at a clean stop)"},
    {"max_topics", K_U32, F(max_topics), 0, 1, 1000000, "topics in the broker"},
    {"default_partitions", K_U32, F(default_partitions), 0, 1, VERITY_PARTITIONS_MAX,
     "partitions of a new topic"},
    {"default_durability", K_DUR, F(default_durability), 0, 0, 0, "always|group|os"},
    {"default_retention_ms", K_I64, F(default_retention_ms), 0, -1, INT64_MAX / 2,
     "-1 = unlimited"},
    {"default_retention_bytes", K_I64, F(default_retention_bytes), 0, -1, INT64_MAX / 2,
     "-1 = unlimited"},
    {"default_segment_bytes", K_U64, F(default_segment_bytes), 0, 4096, 1ll << 31, "segment size"},
    {"default_max_message_bytes", K_U32, F(default_max_message_bytes), 0, BATCH_HDR_SIZE + 8,
     VERITY_BATCH_BYTES_MAX, "largest batch for a topic"},
    {"group_delay_us", K_U32, F(group_delay_us), 0, 0, 1000000,
     "group commit: longest wait for an fdatasync"},
    {"group_bytes_max", K_U64, F(group_bytes_max), 0, 1, 1ll << 32,
     "group commit: sync once this much is pending"},
    {"log_prealloc_bytes", K_U64, F(log_prealloc_bytes), 0, 0, 1ll << 30,
     "zero-filled region kept ahead of each log's active segment (0 = off)"},
    {"checkpoint_records", K_U32, F(checkpoint_records), 0, 0, UINT32_MAX,
     "signed checkpoint every N records (0 = only at close)"},
    {"checkpoint_interval_ms", K_U32, F(checkpoint_interval_ms), 0, 0, 86400000,
     "a signed checkpoint at least this often while a partition takes appends (0 = off)"},
    {"retention_check_ms", K_U32, F(retention_check_ms), 0, 100, 86400000,
     "how often retention and segment age run"},
    {"trace_sample", K_U32, F(trace_sample), 0, 0, 1000000,
     "trace the path of every Nth produce (GET /debug/trace; 0 = off)"},
    {"group_log_durability", K_DUR, F(group_log_durability), 0, 0, 0,
     "consumer-group log: always|group|os (answers wait for it)"},
    {"group_log_delay_us", K_U32, F(group_log_delay_us), 0, 0, 1000000,
     "consumer-group log, group mode: longest wait for an fdatasync"},
    {"group_pending_max", K_U32, F(group_pending_max), 0, 1, VERITY_PENDING_PER_GROUP_MAX,
     "ceiling for deliveries a group tracks at once"},
    {"buffer_bytes_max", K_U64, F(buffer_bytes_max), 0, 1 << 20, 1ll << 40,
     "broker-wide budget for bytes of frames being received and requests not yet answered; "
     "past it, reading stops (back-pressure)"},
    {"frame_timeout_ms", K_U32, F(frame_timeout_ms), 0, 0, 3600000,
     "a frame, once its first byte arrived, must be complete within this (0 = never)"},
    {"max_connections_per_addr", K_U32, F(max_connections_per_addr), 0, 1, 1000000,
     "open connections from one IP address"},
    {"reserved_connections", K_U32, F(reserved_connections), 0, 0, 100000,
     "the last N connection slots (at most max_connections / 8) go only to an address with no "
     "connection open"},
    {"max_http_connections", K_U32, F(max_http_connections), 0, 1, 100000,
     "admin HTTP connections open at once"},
    {"segment_fds_max", K_U32, F(segment_fds_max), 0, 0, 10000000,
     "descriptors of closed segments kept open, in one LRU cache for the broker (0 = a quarter "
     "of the descriptor limit, 16..16384)"},
    {"ready_file", K_STR, F(ready_file), S(ready_file), 0, 0,
     "written (JSON: pid, listen, http) once the broker serves; for port 0"},
    {"http_timeout_s", K_U32, F(http_timeout_s), 0, 1, 3600, "admin HTTP request timeout"},
    {"shutdown_timeout_ms", K_U32, F(shutdown_timeout_ms), 0, 0, 600000,
     "longest wait for in-flight requests on SIGTERM"},
    {"tls_cert", K_STR, F(tls_cert), S(tls_cert), 0, 0,
     "PEM certificate chain: TLS on the client and admin ports (\"\" = plaintext)"},
    {"tls_key", K_STR, F(tls_key), S(tls_key), 0, 0, "PEM private key of tls_cert"},
    {"tls_ca", K_STR, F(tls_ca), S(tls_ca), 0, 0, "PEM CA bundle that client certificates must chain to"},
    {"tls_client_auth", K_STR, F(tls_client_auth), S(tls_client_auth), 0, 0,
     "none|optional|required: ask for and check client certificates"},
    {"peer_tls_cert", K_STR, F(peer_tls_cert), S(peer_tls_cert), 0, 0,
     "PEM certificate chain of this broker on the cluster's peer links: mutual TLS there "
     "(\"\" = plaintext links)"},
    {"peer_tls_key", K_STR, F(peer_tls_key), S(peer_tls_key), 0, 0, "PEM private key of peer_tls_cert"},
    {"peer_tls_ca", K_STR, F(peer_tls_ca), S(peer_tls_ca), 0, 0,
     "PEM CA bundle the other brokers' peer certificates must chain to"},
    {"auth_file", K_STR, F(auth_file), S(auth_file), 0, 0,
     "security store (keys, certificate mappings, ACLs, quotas; `verity auth`): set, every "
     "connection must authenticate and names live in its tenant (\"\" = off)"},
    {"auth_timeout_ms", K_U32, F(auth_timeout_ms), 0, 0, 3600000,
     "with auth_file: a connection not authenticated in this time is closed (0 = never)"},
    {"auth_fail_delay_ms", K_U32, F(auth_fail_delay_ms), 0, 0, 60000,
     "with auth_file: a failed Authenticate is answered after this delay"},
    /* witnesses (broker/witness_push.c, issue 11) */
    {"witnesses", K_STR, F(witnesses), S(witnesses), 0, 0,
     "C2SP tlog-witnesses that cosign the partitions' checkpoints: \"URL VKEY[;URL VKEY...]\", "
     "VKEY from `verity witness --print-key` (\"\" = none; docs/PROOFS.md)"},
    {"witness_interval_ms", K_U32, F(witness_interval_ms), 0, 100, 86400000,
     "offer a partition's grown tree to the witnesses (or retry a failed offer) at most this often"},
    {"witness_every_batches", K_U32, F(witness_every_batches), 0, 0, UINT32_MAX,
     "also offer as soon as a partition's tree grew by this many batches (0 = off)"},
    {"witness_timeout_ms", K_U32, F(witness_timeout_ms), 0, 100, 600000,
     "deadline of one add-checkpoint request"},
};

#define N_KEYS (sizeof(keys) / sizeof(keys[0]))

void bcfg_default(struct broker_config *c)
{
    memset(c, 0, sizeof *c);
    snprintf(c->data_dir, sizeof c->data_dir, "./data");
    snprintf(c->listen, sizeof c->listen, "127.0.0.1:9720");
    snprintf(c->http, sizeof c->http, "127.0.0.1:9721");
    snprintf(c->log_level, sizeof c->log_level, "info");
    snprintf(c->tlog_name, sizeof c->tlog_name, "verity.example/local");
    c->node_id = 1;
    c->max_connections = VERITY_CONNECTIONS_MAX;
    c->max_inflight = VERITY_INFLIGHT_MAX;
    c->max_frame_bytes = VERITY_FRAME_BYTES_MAX;
    c->max_batch_bytes = VERITY_BATCH_BYTES_MAX;
    c->idle_timeout_ms = 600000;
    c->write_buffer_bytes = 32u << 20;
    c->produce_timeout_ms = 30000;
    c->fetch_max_bytes = 4u << 20;
    c->kafka_readahead_bytes = 16u << 20;
    c->fetch_max_wait_ms = 30000;
    c->max_producers = 1000000;
    c->partition_producers_max = 100000;
    c->idempotency_window_ms = 600000;
    c->idempotency_keys_max = 1000000;
    c->producer_retention_ms = 7ull * 86400000;
    c->snapshot_records = 1000000;
    c->max_topics = 10000;
    c->default_partitions = 1;
    c->default_durability = TDUR_GROUP;
    c->group_log_durability = TDUR_GROUP;
    c->group_log_delay_us = 0;
    c->group_pending_max = VERITY_PENDING_PER_GROUP_MAX;
    c->default_retention_ms = -1;
    c->default_retention_bytes = -1;
    c->default_segment_bytes = 1ull << 30;
    c->default_max_message_bytes = VERITY_BATCH_BYTES_MAX;
    c->group_delay_us = 2000;
    c->group_bytes_max = 1u << 20;
    c->checkpoint_records = 10000;
    c->log_prealloc_bytes = 4u << 20;
    c->checkpoint_interval_ms = 30000;
    c->retention_check_ms = 60000;
    c->http_timeout_s = 30;
    c->buffer_bytes_max = 256ull << 20;
    c->frame_timeout_ms = 30000;
    c->max_connections_per_addr = 1024;
    c->reserved_connections = 32;
    c->max_http_connections = 64;
    c->shutdown_timeout_ms = 10000;
    snprintf(c->tls_client_auth, sizeof c->tls_client_auth, "none");
    c->auth_timeout_ms = 10000;
    c->auth_fail_delay_ms = 500;
    c->witness_interval_ms = 60000;
    c->witness_every_batches = 0;
    c->witness_timeout_ms = 10000;
}

static const struct key *find_key(const char *name)
{
    for (size_t i = 0; i < N_KEYS; i++)
        if (strcmp(keys[i].name, name) == 0)
            return &keys[i];
    return NULL;
}

static int bad(char *err, size_t cap, int code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int bad(char *err, size_t cap, int code, const char *fmt, ...)
{
    if (err && cap) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, cap, fmt, ap);
        va_end(ap);
    }
    return code;
}

static int parse_int(const char *v, int64_t *out)
{
    char *end;
    errno = 0;
    long long x = strtoll(v, &end, 10);
    if (errno || end == v || *end != '\0')
        return -1;
    *out = x;
    return 0;
}

int bcfg_set(struct broker_config *c, const char *name, const char *value, char *err, size_t cap)
{
    const struct key *k = find_key(name);
    if (!k)
        return bad(err, cap, VERITY_ENOTFOUND, "unknown configuration key %s", name);
    char *field = (char *)c + k->off;
    int64_t x;
    switch (k->type) {
    case K_STR:
        if (strlen(value) >= k->size)
            return bad(err, cap, VERITY_EINVAL, "%s: value too long (%s)", name, value);
        memcpy(field, value, strlen(value) + 1);
        if (strcmp(name, "listen") == 0)
            c->listen_set = true;
        else if (strcmp(name, "http") == 0)
            c->http_set = true;
        return 0;
    case K_LEVEL:
        if (blog_level_parse(value) < 0)
            return bad(err, cap, VERITY_EINVAL, "%s: expected debug|info|warn|error, got %s", name,
                       value);
        snprintf(field, k->size, "%s", value);
        return 0;
    case K_DUR: {
        int d = bcfg_durability_parse(value);
        if (d < 0)
            return bad(err, cap, VERITY_EINVAL, "%s: expected always|group|os, got %s", name,
                       value);
        *(enum topic_durability *)field = (enum topic_durability)d;
        return 0;
    }
    case K_U32:
    case K_U64:
    case K_I64:
        if (value[0] == '-' && k->type != K_I64)
            return bad(err, cap, VERITY_EINVAL, "%s: not a non-negative integer: %s", name, value);
        if (k->type == K_U32 && strcmp(value, "4294967295") == 0) {
            x = UINT32_MAX;
        } else if (parse_int(value, &x)) {
            return bad(err, cap, VERITY_EINVAL, "%s: not an integer: %s", name, value);
        }
        if (x < k->min || x > k->max) {
            char range[64];
            snprintf(range, sizeof range, "%" PRId64 "..%" PRId64, k->min, k->max);
            return bad(err, cap, VERITY_EINVAL, "%s: out of range %s", name, range);
        }
        if (k->type == K_U32)
            *(uint32_t *)field = (uint32_t)x;
        else if (k->type == K_U64)
            *(uint64_t *)field = (uint64_t)x;
        else
            *(int64_t *)field = x;
        return 0;
    }
    return VERITY_EINVAL;
}

/* The file's "cluster": {"nodes": [{"id", "listen", "peer", "http"}, ...]}
 * as the cluster_nodes text form. */
static int cluster_from_json(json_t *v, char *buf, size_t bcap, const char *path, char *err,
                             size_t cap)
{
    json_t *nodes = json_is_object(v) ? json_object_get(v, "nodes") : NULL;
    if (!json_is_array(nodes) || json_object_size(v) != 1)
        return bad(err, cap, VERITY_EINVAL, "%s: cluster must be {\"nodes\": [...]}%s", path, "");
    size_t o = 0, i;
    json_t *n;
    buf[0] = '\0';
    json_array_foreach(nodes, i, n)
    {
        json_t *id = json_object_get(n, "id");
        const char *l = json_string_value(json_object_get(n, "listen"));
        const char *pe = json_string_value(json_object_get(n, "peer"));
        const char *h = json_string_value(json_object_get(n, "http"));
        if (!json_is_object(n) || !json_is_integer(id) || !l || !pe ||
            json_object_size(n) != (h ? 4u : 3u))
            return bad(err, cap, VERITY_EINVAL,
                       "%s: cluster node %zu needs id, listen, peer (and http) only", path, i);
        int w = snprintf(buf + o, bcap - o, "%s%" JSON_INTEGER_FORMAT "=%s,%s,%s", i ? ";" : "",
                         json_integer_value(id), l, pe, h ? h : "");
        if (w < 0 || (size_t)w >= bcap - o)
            return bad(err, cap, VERITY_EINVAL, "%s: cluster section too long%s", path, "");
        o += (size_t)w;
    }
    return 0;
}

/* The file's "peer_dial": {"2": "HOST:PORT", ...} as its text form. */
static int peer_dial_from_json(json_t *v, char *buf, size_t bcap, const char *path, char *err,
                               size_t cap)
{
    size_t o = 0;
    const char *id;
    json_t *a;
    buf[0] = '\0';
    json_object_foreach(v, id, a)
    {
        if (!json_is_string(a))
            return bad(err, cap, VERITY_EINVAL, "%s: peer_dial.%s must be \"HOST:PORT\"", path, id);
        int w = snprintf(buf + o, bcap - o, "%s%s=%s", o ? ";" : "", id, json_string_value(a));
        if (w < 0 || (size_t)w >= bcap - o)
            return bad(err, cap, VERITY_EINVAL, "%s: peer_dial too long%s", path, "");
        o += (size_t)w;
    }
    return 0;
}

/* peer_dial text into c->peer_dial_addr[] (after the node list is parsed). */
static int peer_dial_apply(struct broker_config *c, char *err, size_t cap)
{
    memset(c->peer_dial_addr, 0, sizeof c->peer_dial_addr);
    const char *p = c->peer_dial;
    if (*p && c->cluster_n == 0)
        return bad(err, cap, VERITY_EINVAL, "peer_dial needs a cluster section%s", "");
    while (*p) {
        const char *end = strchr(p, ';');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        char item[BCFG_NODE_ADDR_MAX + 16], host[BCFG_NODE_ADDR_MAX];
        uint16_t port;
        int64_t id;
        if (len == 0 || len >= sizeof item)
            return bad(err, cap, VERITY_EINVAL, "peer_dial: bad entry near \"%.40s\"", p);
        memcpy(item, p, len);
        item[len] = '\0';
        char *eq = strchr(item, '=');
        if (!eq)
            return bad(err, cap, VERITY_EINVAL, "peer_dial: expected ID=HOST:PORT in %s", item);
        *eq = '\0';
        if (parse_int(item, &id) || id < 1 || id > 65535)
            return bad(err, cap, VERITY_EINVAL, "peer_dial: bad node id %s", item);
        if (strlen(eq + 1) >= BCFG_NODE_ADDR_MAX ||
            bcfg_split_hostport(eq + 1, host, sizeof host, &port) || port == 0)
            return bad(err, cap, VERITY_EINVAL, "peer_dial: node %s: bad HOST:PORT \"%s\"", item,
                       eq + 1);
        uint32_t i = 0;
        while (i < c->cluster_n && c->nodes[i].id != (uint32_t)id)
            i++;
        if (i == c->cluster_n || (uint32_t)id == c->node_id)
            return bad(err, cap, VERITY_EINVAL, "peer_dial: node %s is not another cluster member",
                       item);
        if (c->peer_dial_addr[i][0])
            return bad(err, cap, VERITY_EINVAL, "peer_dial: node %s twice", item);
        snprintf(c->peer_dial_addr[i], BCFG_NODE_ADDR_MAX, "%s", eq + 1);
        p = end ? end + 1 : p + len;
    }
    return 0;
}

int bcfg_cluster_parse(const char *text, struct bcfg_node *out, uint32_t *n, char *err, size_t cap)
{
    *n = 0;
    const char *p = text;
    while (*p) {
        const char *end = strchr(p, ';');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        char item[4 * BCFG_NODE_ADDR_MAX];
        if (len == 0 || len >= sizeof item)
            return bad(err, cap, VERITY_EINVAL, "cluster_nodes: bad entry near \"%.40s\"", p);
        if (*n == BCFG_NODES_MAX)
            return bad(err, cap, VERITY_EINVAL, "cluster_nodes: more than %d nodes", BCFG_NODES_MAX);
        memcpy(item, p, len);
        item[len] = '\0';
        struct bcfg_node *nd = &out[*n];
        memset(nd, 0, sizeof *nd);
        char *eq = strchr(item, '=');
        int64_t id;
        if (!eq)
            return bad(err, cap, VERITY_EINVAL, "cluster_nodes: expected ID=LISTEN,PEER,HTTP in %s", item);
        *eq = '\0';
        if (parse_int(item, &id) || id < 1 || id > 65535)
            return bad(err, cap, VERITY_EINVAL, "cluster_nodes: bad node id %s", item);
        nd->id = (uint32_t)id;
        char *f[3] = {eq + 1, NULL, NULL};
        for (int k = 1; k < 3; k++) {
            char *c = f[k - 1] ? strchr(f[k - 1], ',') : NULL;
            if (c) {
                *c = '\0';
                f[k] = c + 1;
            }
        }
        if (!f[1] || strchr(f[2] ? f[2] : "", ','))
            return bad(err, cap, VERITY_EINVAL, "cluster_nodes: node %s needs LISTEN,PEER[,HTTP]", item);
        char *dst[3] = {nd->listen, nd->peer, nd->http};
        for (int k = 0; k < 3; k++) {
            const char *src = f[k] ? f[k] : "";
            char host[BCFG_NODE_ADDR_MAX];
            uint16_t port;
            if (strlen(src) >= BCFG_NODE_ADDR_MAX)
                return bad(err, cap, VERITY_EINVAL, "cluster_nodes: address too long in node %s", item);
            if (k < 2 || src[0]) {
                if (bcfg_split_hostport(src, host, sizeof host, &port) || port == 0)
                    return bad(err, cap, VERITY_EINVAL,
                               "cluster_nodes: node %s: bad HOST:PORT \"%s\" (port 0 not allowed)",
                               item, src);
            }
            snprintf(dst[k], BCFG_NODE_ADDR_MAX, "%s", src);
        }
        for (uint32_t j = 0; j < *n; j++)
            if (out[j].id == nd->id)
                return bad(err, cap, VERITY_EINVAL, "cluster_nodes: node id %s twice", item);
        (*n)++;
        p = end ? end + 1 : p + len;
    }
    return 0;
}

const struct bcfg_node *bcfg_self(const struct broker_config *c)
{
    for (uint32_t i = 0; i < c->cluster_n; i++)
        if (c->nodes[i].id == c->node_id)
            return &c->nodes[i];
    return NULL;
}

/* After every source: the node list parsed, and listen/http taken from this
 * node's entry unless given explicitly. */
static int cluster_apply(struct broker_config *c, char *err, size_t cap)
{
    int rc;
    if ((rc = bcfg_cluster_parse(c->cluster_nodes, c->nodes, &c->cluster_n, err, cap)))
        return rc;
    if (c->cluster_n == 0)
        return peer_dial_apply(c, err, cap);
    const struct bcfg_node *me = bcfg_self(c);
    if (!me)
        return bad(err, cap, VERITY_EINVAL, "node_id %u is not in cluster_nodes%s",
                   (unsigned)c->node_id, "");
    if (!c->listen_set)
        snprintf(c->listen, sizeof c->listen, "%s", me->listen);
    if (!c->http_set && me->http[0])
        snprintf(c->http, sizeof c->http, "%s", me->http);
    return peer_dial_apply(c, err, cap);
}

int bcfg_load_file(struct broker_config *c, const char *path, char *err, size_t cap)
{
    json_error_t jerr;
    json_t *root = json_load_file(path, JSON_REJECT_DUPLICATES, &jerr);
    if (!root) {
        if (err && cap)
            snprintf(err, cap, "%s:%d: %s", path, jerr.line, jerr.text);
        return VERITY_EINVAL;
    }
    int rc = 0;
    if (!json_is_object(root)) {
        rc = bad(err, cap, VERITY_EINVAL, "%s: expected a JSON object%s", path, "");
        goto out;
    }
    const char *name;
    json_t *v;
    json_object_foreach(root, name, v)
    {
        char buf[BCFG_CLUSTER_TEXT_MAX];
        if (strcmp(name, "cluster") == 0) {
            if ((rc = cluster_from_json(v, buf, sizeof buf, path, err, cap)) ||
                (rc = bcfg_set(c, "cluster_nodes", buf, err, cap)))
                goto out;
            continue;
        }
        if (strcmp(name, "peer_dial") == 0 && json_is_object(v)) {
            if ((rc = peer_dial_from_json(v, buf, sizeof buf, path, err, cap)) ||
                (rc = bcfg_set(c, "peer_dial", buf, err, cap)))
                goto out;
            continue;
        }
        if (json_is_string(v))
            snprintf(buf, sizeof buf, "%s", json_string_value(v));
        else if (json_is_integer(v))
            snprintf(buf, sizeof buf, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
        else {
            rc = bad(err, cap, VERITY_EINVAL, "%s: %s must be a string or an integer", path, name);
            goto out;
        }
        if ((rc = bcfg_set(c, name, buf, err, cap)))
            goto out;
    }
out:
    json_decref(root);
    return rc;
}

int bcfg_load_env(struct broker_config *c, char *err, size_t cap)
{
    for (size_t i = 0; i < N_KEYS; i++) {
        char var[64] = "VERITY_";
        size_t o = strlen(var);
        for (const char *p = keys[i].name; *p && o + 1 < sizeof var; p++)
            var[o++] = (char)toupper((unsigned char)*p);
        var[o] = '\0';
        const char *v = getenv(var);
        if (!v)
            continue;
        int rc = bcfg_set(c, keys[i].name, v, err, cap);
        if (rc)
            return rc;
    }
    return 0;
}

/* Flags that take no value: "--rejoin" means rejoin=1 ("--rejoin=0" works too). */
static bool flag_bare(const char *key, const char *inline_value)
{
    return !inline_value && strcmp(key, "rejoin") == 0;
}

/* "--max-connections" -> "max_connections" in buf; NULL if not a flag. */
static const char *flag_key(const char *arg, char *buf, size_t cap, const char **inline_value)
{
    if (strncmp(arg, "--", 2) != 0 || arg[2] == '\0')
        return NULL;
    size_t o = 0;
    const char *p = arg + 2;
    *inline_value = NULL;
    for (; *p && *p != '=' && o + 1 < cap; p++)
        buf[o++] = *p == '-' ? '_' : *p;
    buf[o] = '\0';
    if (*p == '=')
        *inline_value = p + 1;
    return buf;
}

int bcfg_from_args(struct broker_config *c, int argc, char **argv, bool *help, char *err,
                   size_t cap)
{
    const char *config_path = getenv("VERITY_CONFIG");
    char key[64];
    int rc;
    *help = false;
    bcfg_default(c);
    /* Pass 1: --help and --config, which decide what the other sources mean. */
    for (int i = 1; i < argc; i++) {
        const char *iv;
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            *help = true;
            return 0;
        }
        if (!flag_key(argv[i], key, sizeof key, &iv))
            return bad(err, cap, VERITY_EINVAL, "unexpected argument %s", argv[i]);
        if (flag_bare(key, iv))
            continue;
        if (!iv && i + 1 >= argc)
            return bad(err, cap, VERITY_EINVAL, "%s needs a value%s", argv[i], "");
        const char *v = iv ? iv : argv[i + 1];
        if (!iv)
            i++;
        if (strcmp(key, "config") == 0)
            config_path = v;
    }
    if (config_path && config_path[0] && (rc = bcfg_load_file(c, config_path, err, cap)))
        return rc;
    if ((rc = bcfg_load_env(c, err, cap)))
        return rc;
    for (int i = 1; i < argc; i++) {
        const char *iv;
        flag_key(argv[i], key, sizeof key, &iv);
        if (flag_bare(key, iv)) {
            if ((rc = bcfg_set(c, key, "1", err, cap)))
                return rc;
            continue;
        }
        const char *v = iv ? iv : argv[i + 1];
        if (!iv)
            i++;
        if (strcmp(key, "config") == 0)
            continue;
        if ((rc = bcfg_set(c, key, v, err, cap)))
            return rc;
    }
    if ((rc = cluster_apply(c, err, cap)))
        return rc;
    return bcfg_check(c, err, cap);
}

int bcfg_split_hostport(const char *addr, char *host, size_t cap, uint16_t *port)
{
    const char *colon;
    const char *h = addr;
    size_t hlen;
    if (addr[0] == '[') {
        const char *close = strchr(addr, ']');
        if (!close || close[1] != ':')
            return VERITY_EINVAL;
        h = addr + 1;
        hlen = (size_t)(close - h);
        colon = close + 1;
    } else {
        colon = strrchr(addr, ':');
        if (!colon)
            return VERITY_EINVAL;
        hlen = (size_t)(colon - addr);
    }
    if (hlen == 0 || hlen >= cap)
        return VERITY_EINVAL;
    int64_t p;
    if (parse_int(colon + 1, &p) || p < 0 || p > 65535)
        return VERITY_EINVAL;
    memcpy(host, h, hlen);
    host[hlen] = '\0';
    *port = (uint16_t)p;
    return 0;
}

int bcfg_check(const struct broker_config *c, char *err, size_t cap)
{
    char host[BCFG_ADDR_MAX];
    uint16_t port;
    if (c->data_dir[0] == '\0')
        return bad(err, cap, VERITY_EINVAL, "data_dir must be set");
    if (c->witnesses[0] && wpush_check_config(c->witnesses, err, cap))
        return VERITY_EINVAL; /* the message names the entry */
    if (bcfg_split_hostport(c->listen, host, sizeof host, &port))
        return bad(err, cap, VERITY_EINVAL, "listen: expected HOST:PORT, got %s", c->listen);
    if (c->kafka_listen[0] && strcmp(c->kafka_listen, "off") != 0 &&
        bcfg_split_hostport(c->kafka_listen, host, sizeof host, &port))
        return bad(err, cap, VERITY_EINVAL, "kafka_listen: expected HOST:PORT or off, got %s",
                   c->kafka_listen);
    if (c->http[0] && strcmp(c->http, "off") != 0 &&
        bcfg_split_hostport(c->http, host, sizeof host, &port))
        return bad(err, cap, VERITY_EINVAL, "http: expected HOST:PORT or off, got %s", c->http);
    if ((uint64_t)c->max_batch_bytes + CODEC_PREFIX_SIZE + 65536 > c->max_frame_bytes)
        return bad(err, cap, VERITY_EINVAL,
                   "max_batch_bytes plus an envelope (64 KiB) must fit in max_frame_bytes");
    if ((uint64_t)c->fetch_max_bytes + 65536 > c->max_frame_bytes ||
        (uint64_t)c->max_batch_bytes + 65536 > c->max_frame_bytes)
        return bad(err, cap, VERITY_EINVAL,
                   "fetch_max_bytes plus an envelope (64 KiB) must fit in max_frame_bytes");
    if (strcmp(c->tls_client_auth, "none") != 0 && strcmp(c->tls_client_auth, "optional") != 0 &&
        strcmp(c->tls_client_auth, "required") != 0)
        return bad(err, cap, VERITY_EINVAL, "tls_client_auth: expected none|optional|required, got %s",
                   c->tls_client_auth);
    if (!c->tls_cert[0] != !c->tls_key[0])
        return bad(err, cap, VERITY_EINVAL, "tls_cert and tls_key go together (one is set, not the other)%s", "");
    if ((c->tls_ca[0] || strcmp(c->tls_client_auth, "none") != 0) && !c->tls_cert[0])
        return bad(err, cap, VERITY_EINVAL, "tls_ca and tls_client_auth need tls_cert and tls_key%s", "");
    if (strcmp(c->tls_client_auth, "none") != 0 && !c->tls_ca[0])
        return bad(err, cap, VERITY_EINVAL, "tls_client_auth %s needs tls_ca", c->tls_client_auth);
    if ((c->peer_tls_cert[0] || c->peer_tls_key[0] || c->peer_tls_ca[0]) &&
        !(c->peer_tls_cert[0] && c->peer_tls_key[0] && c->peer_tls_ca[0]))
        return bad(err, cap, VERITY_EINVAL, "peer_tls_cert, peer_tls_key and peer_tls_ca go together%s", "");
    if (c->rejoin && c->cluster_n == 0)
        return bad(err, cap, VERITY_EINVAL,
                   "rejoin needs a cluster section (a single broker has nobody to rejoin)%s", "");
    if (c->buffer_bytes_max < 2ull * c->max_frame_bytes)
        return bad(err, cap, VERITY_EINVAL,
                   "buffer_bytes_max (%" PRIu64 ") must hold at least two frames of max_frame_bytes "
                   "(%" PRIu32 ")",
                   c->buffer_bytes_max, c->max_frame_bytes);
    return 0;
}

void bcfg_usage(FILE *out)
{
    struct broker_config d;
    bcfg_default(&d);
    fprintf(
        out,
        "usage: verityd [--config FILE] [--data-dir DIR] [--listen HOST:PORT]\n"
        "               [--http HOST:PORT] [--<key> VALUE ...] [--help] [--version]\n\n"
        "Every key below may be set in the JSON config file (\"key\": value), in the\n"
        "environment (VERITY_<KEY>), or as --<key-with-dashes> VALUE. Later sources win:\n"
        "file < environment < flags. VERITY_CONFIG names the file when --config is absent.\n\n");
    for (size_t i = 0; i < N_KEYS; i++) {
        const struct key *k = &keys[i];
        const char *field = (const char *)&d + k->off;
        char def[BCFG_PATH_MAX];
        switch (k->type) {
        case K_STR:
        case K_LEVEL:
            snprintf(def, sizeof def, "\"%s\"", field);
            break;
        case K_DUR:
            snprintf(def, sizeof def, "%s",
                     bcfg_durability_name(*(const enum topic_durability *)field));
            break;
        case K_U32:
            snprintf(def, sizeof def, "%" PRIu32, *(const uint32_t *)field);
            break;
        case K_U64:
            snprintf(def, sizeof def, "%" PRIu64, *(const uint64_t *)field);
            break;
        case K_I64:
            snprintf(def, sizeof def, "%" PRId64, *(const int64_t *)field);
            break;
        }
        fprintf(out, "  %-26s %-18s %s\n", k->name, def, k->help);
    }
}
