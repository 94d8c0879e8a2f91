/*
 * libverity: the client library of the Verity message bus.
 *
 * Three handles, each with its own TCP connection to one broker and its own
 * internal I/O thread (a libevent base that owns the socket):
 *
 *   struct verity_client    admin calls: topics, metadata, offsets
 *   struct verity_producer  batching, partitioning, idempotence, retries
 *   struct verity_consumer  reads assigned partitions, follows with long polls
 *
 * Threads. Every public function is thread-safe unless its comment says
 * otherwise. Public calls enqueue work for the I/O thread and return; the
 * synchronous calls (no _async suffix, verity_produce_sync, flush) then wait
 * on a condition variable for the I/O thread's answer. Callbacks (delivery
 * reports, async admin results) run on the handle's I/O thread, one at a
 * time. A callback must return quickly, must not free its own handle, and
 * must not call a synchronous function of the same handle: such a call
 * returns VERITY_EINVAL instead of deadlocking.
 *
 * Connections. The I/O thread connects in the background and reconnects with
 * exponential backoff (reconnect_backoff_ms doubling up to
 * reconnect_backoff_max_ms) whenever the connection drops. Requests are
 * pipelined and matched to responses by correlation id. A request that was
 * in flight when the connection dropped is resent by the producer (same batch
 * bytes, so the broker's sequence check makes a retry harmless), by the
 * consumer (its next fetch asks again) and by admin reads; admin writes
 * (create, delete) fail with the connection error instead (-ECONNRESET,
 * -ETIMEDOUT, ...), because the broker may have executed them.
 *
 * Errors. Functions that can fail return 0 or a negative code from
 * verity/errors.h (system errors are -errno: -ECONNREFUSED when the broker
 * cannot be reached, -EHOSTUNREACH, -ETIMEDOUT, ...). After a synchronous
 * call fails, verity_last_error_message() returns the broker's explanation.
 *
 * Ownership. Unless a comment says otherwise, pointer arguments are borrowed
 * for the duration of the call only: the library copies what it keeps
 * (topic names, record keys, values and headers are copied into the batch
 * before verity_produce returns). Pointers handed to callbacks are valid only
 * until the callback returns.
 *
 * Partitioning (identical in every Verity client):
 *   partition = (murmur2(key) & 0x7fffffff) % partitions
 * where murmur2 is Kafka's variant of MurmurHash2 (32-bit, seed 0x9747b28c),
 * so a key lands in the same partition as in a Kafka cluster with the same
 * partition count. A record with a null key goes to the partition of the
 * current batch ("sticky"); each new batch of null-key records moves to the
 * next partition, round robin.
 *
 * Idempotency keys: a caller's key string S becomes the 16-byte batch
 * idempotency key SHA-256(S)[0..16).
 */
#ifndef VERITY_VERITY_H
#define VERITY_VERITY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "verity/errors.h"

#define VERITY_WUR __attribute__((warn_unused_result))

#define VERITY_BROKER_DEFAULT "127.0.0.1:9720"
#define VERITY_BROKER_ENV "VERITY_BROKER"
#define VERITY_PARTITION_ANY (-1)
#define VERITY_IDEM_KEY_SIZE 16

/* ---- hashing (pure functions, any thread) --------------------------------- */

/* Kafka's murmur2: MurmurHash2 32-bit with seed 0x9747b28c, little-endian
 * 4-byte blocks, tail mixed as in Kafka's Utils.murmur2. */
uint32_t verity_murmur2(const void *data, size_t len);

/* (verity_murmur2(key) & 0x7fffffff) % partitions; partitions must be > 0. */
uint32_t verity_partition_for_key(const void *key, size_t key_len, uint32_t partitions);

/* out = the first 16 bytes of SHA-256(s[0, len)). */
void verity_idempotency_key(const void *s, size_t len, uint8_t out[VERITY_IDEM_KEY_SIZE]);

/* ---- small helpers ------------------------------------------------------ */

/* The broker address to use: arg when not NULL, else $VERITY_BROKER when set
 * and non-empty, else VERITY_BROKER_DEFAULT. Returns a pointer to arg, to the
 * environment, or to a static string; never NULL. */
const char *verity_broker_resolve(const char *arg);

/* For clients of the admin HTTP port on a broker with auth_file: the header
 * line "Authorization: Bearer <key>\r\n" with the key in VERITY_API_KEY,
 * or "" when it is unset or holds anything but letters, digits and '_' (no
 * header injection). Static storage, read once. */
const char *verity_admin_auth_header(void);

/* GET path from the broker's admin HTTP port at hostport ("host:port"):
 * HTTP/1.0 with the header above, within timeout_ms for the whole exchange.
 * Returns the HTTP status, with the body (malloc'd, NUL-terminated, at most
 * max_body bytes, its length in *body_len when not NULL) in *body when body
 * is not NULL; or a negative errno: -EINVAL (bad address or path), -ENXIO
 * (the host does not resolve), -ECONNREFUSED and the like, -ETIMEDOUT,
 * -EMSGSIZE (a larger body), -EPROTO (not an HTTP answer). */
int verity_admin_get(const char *hostport, const char *path, int timeout_ms, size_t max_body,
                     char **body, size_t *body_len);

/* The same with a method ("GET" or "POST") and, for POST, a body of
 * req_len bytes (at most 1 MiB) sent as application/json.
 * Both speak TLS when hostport is "https://host:port", or when the
 * environment asks for it as for the protocol port (VERITY_TLS_CA,
 * VERITY_TLS_CERT or VERITY_TLS=1; VERITY_TLS_KEY and
 * VERITY_TLS_SERVER_NAME as there); "http://host:port" forces plain HTTP.
 * A refused handshake is -EPROTO (its reason on stderr), a CA, certificate
 * or key file that does not load -ENOENT. */
int verity_admin_request(const char *hostport, const char *method, const char *path,
                         const char *req_body, size_t req_len, int timeout_ms, size_t max_body,
                         char **body, size_t *body_len);

/* True when err means the broker could not be reached at all (connection
 * refused, unreachable, connect timed out, name did not resolve). */
bool verity_err_unreachable(int err);

/* The broker's message for the last failed synchronous call made by this
 * thread, or "" when there is none. Thread-local storage; valid until the
 * thread's next synchronous libverity call. */
const char *verity_last_error_message(void);

/* ---- connection options --------------------------------------------------- */

struct verity_conn_config {
    const char *broker;            /* "HOST:PORT" (IPv6 as [addr]:port), or a
                                      bootstrap list of a cluster's brokers
                                      "HOST:PORT,HOST:PORT,..." (the first that
                                      answers is used); NULL:
                                      verity_broker_resolve(NULL). Copied. */
    const char *client_id;         /* sent in Hello; NULL: "libverity". Copied. */
    int connect_timeout_ms;        /* one connection attempt (5000) */
    int request_timeout_ms;        /* a request with no answer this long after it
                                      was written (plus its own long-poll wait)
                                      means the connection is broken (30000); a
                                      queued admin request waits at most this long
                                      for a connection */
    int reconnect_backoff_ms;      /* first wait before reconnecting (50) */
    int reconnect_backoff_max_ms;  /* ceiling of the doubling wait (1000) */
    /* TLS (TLS 1.2 minimum). Each NULL string falls back to the environment:
     * VERITY_TLS_CA, VERITY_TLS_CERT, VERITY_TLS_KEY, VERITY_TLS_SERVER_NAME.
     * TLS is on when tls is 1, or when tls is 0 and a CA or a client
     * certificate is given (or VERITY_TLS=1); tls = -1 forces plaintext.
     * The broker's certificate must chain to tls_ca (the system's CAs when
     * tls_ca is NULL) and name tls_server_name (default: the host of
     * broker, an IP address or a DNS name). Files are read when the client
     * is made; a file that cannot be read fails it with VERITY_ETLS. */
    int tls;
    const char *tls_ca;            /* PEM CA bundle */
    const char *tls_cert;          /* PEM client certificate chain (mutual TLS) */
    const char *tls_key;           /* PEM private key of tls_cert */
    const char *tls_server_name;   /* name the broker's certificate must carry */
    /* Authentication (issue 14): an API key ("vk_...", from `verity auth key
     * create`) sent in Authenticate after Hello on every connection; NULL
     * falls back to VERITY_API_KEY. A refused key fails the connection's
     * requests with VERITY_EAUTH. Copied. */
    const char *api_key;
};

/* Fills the defaults shown above. */
void verity_conn_config_default(struct verity_conn_config *cfg);

/* ---- admin client ---------------------------------------------------------- */

struct verity_client;

/* Starts the I/O thread, which connects in the background. cfg may be NULL
 * for the defaults. *out is owned by the caller until verity_client_free.
 * Returns 0, VERITY_EINVAL (bad broker address), or -errno. */
int verity_client_new(const struct verity_conn_config *cfg, struct verity_client **out) VERITY_WUR;

/* Waits until the connection is up and the Hello exchange is done, at most
 * timeout_ms (-1: no limit). Returns 0; the error of a connection attempt
 * that failed during the wait (for example -ECONNREFUSED; the client keeps
 * retrying in the background, so a later call may succeed); or
 * VERITY_ETIMEOUT when no attempt finished in time. */
int verity_client_connect(struct verity_client *c, int timeout_ms) VERITY_WUR;

/* Stops the I/O thread, fails every pending request with VERITY_ECLOSED
 * (their callbacks run before this returns), closes the socket, frees c.
 * NULL is a no-op. Must not be called from one of c's callbacks. */
void verity_client_free(struct verity_client *c);

enum verity_durability {
    VERITY_DURABILITY_DEFAULT = 0, /* the broker's default */
    VERITY_DURABILITY_ALWAYS = 1,  /* ack after an fdatasync covering the batch */
    VERITY_DURABILITY_GROUP = 2,   /* group commit: ack after a shared fdatasync */
    VERITY_DURABILITY_OS = 3,      /* ack once written; the OS writes back */
};

/* "default" | "always" | "group" | "os". Returns 0 or VERITY_EINVAL. */
int verity_durability_parse(const char *s, enum verity_durability *out) VERITY_WUR;
const char *verity_durability_name(enum verity_durability d); /* never NULL */

/* Zero means "the broker's default" in every field; -1 means unlimited in
 * the retention fields. */
struct verity_topic_config {
    uint32_t partitions;
    enum verity_durability durability;
    int64_t retention_ms;
    int64_t retention_bytes;
    uint64_t segment_bytes;
    uint32_t max_message_bytes;    /* largest batch the topic accepts */
    uint32_t replication_factor;
};

struct verity_partition_info {
    uint32_t partition;
    uint32_t leader;               /* node id */
    uint64_t start_offset;         /* first offset still stored */
    uint64_t high_watermark;       /* consumers see offsets below it */
    uint64_t end_offset;           /* next offset the log assigns */
    uint64_t size_bytes;
    int error;                     /* 0, or e.g. VERITY_EREADONLY */
};

struct verity_topic_info {
    char *name;
    int error;                     /* per topic in verity_metadata (VERITY_ENOTFOUND, ...) */
    char *error_message;           /* "" when none */
    struct verity_topic_config config; /* effective values */
    uint32_t partition_count;      /* entries in partitions; 0 from verity_topic_list */
    struct verity_partition_info *partitions;
};

/* Frees an array of n topic infos returned by this library. NULL is a no-op. */
void verity_topic_info_free(struct verity_topic_info *topics, size_t n);

/* The result of an asynchronous admin call; borrowed by the callback, valid
 * until it returns. Only the fields of the call that produced it are set. */
struct verity_admin_result {
    int err;                        /* 0 or a negative code */
    const char *error_message;      /* never NULL ("" when none) */
    struct verity_topic_info *topics; /* create, describe: 1; list, metadata: n */
    size_t topic_count;
    uint64_t offset;                /* list_offsets: the answer */
    uint64_t start_offset;          /* list_offsets */
    uint64_t high_watermark;        /* list_offsets */
    uint32_t node_id;               /* metadata: the answering broker */
};
typedef void (*verity_admin_cb)(void *opaque, const struct verity_admin_result *res);

/* Creates topic name. *out (may be NULL) receives the new topic's metadata,
 * owned by the caller (verity_topic_info_free(*out, 1)). Returns 0,
 * VERITY_EEXIST, VERITY_EINVAL, VERITY_ELIMIT, or a connection error. */
int verity_topic_create(struct verity_client *c, const char *name,
                        const struct verity_topic_config *cfg, struct verity_topic_info **out)
    VERITY_WUR;
int verity_topic_create_async(struct verity_client *c, const char *name,
                              const struct verity_topic_config *cfg, verity_admin_cb cb,
                              void *opaque) VERITY_WUR;

/* Deletes topic name. Returns 0, VERITY_ENOTFOUND, or a connection error. */
int verity_topic_delete(struct verity_client *c, const char *name) VERITY_WUR;
int verity_topic_delete_async(struct verity_client *c, const char *name, verity_admin_cb cb,
                              void *opaque) VERITY_WUR;

/* Lists topics (config filled in, no partitions). *out is owned by the caller:
 * verity_topic_info_free(*out, *n_out). */
int verity_topic_list(struct verity_client *c, bool include_internal,
                      struct verity_topic_info **out, size_t *n_out) VERITY_WUR;
int verity_topic_list_async(struct verity_client *c, bool include_internal, verity_admin_cb cb,
                            void *opaque) VERITY_WUR;

/* One topic with its partitions. *out: verity_topic_info_free(*out, 1). */
int verity_topic_describe(struct verity_client *c, const char *name,
                          struct verity_topic_info **out) VERITY_WUR;
int verity_topic_describe_async(struct verity_client *c, const char *name, verity_admin_cb cb,
                                void *opaque) VERITY_WUR;

/* Metadata for the n named topics (n == 0: every topic). Per-topic errors
 * are in each entry's error field. *out: verity_topic_info_free(*out, *n_out).
 * *node_id_out (may be NULL) gets the answering broker's node id. */
int verity_metadata(struct verity_client *c, const char *const *topics, size_t n,
                    struct verity_topic_info **out, size_t *n_out, uint32_t *node_id_out)
    VERITY_WUR;
int verity_metadata_async(struct verity_client *c, const char *const *topics, size_t n,
                          verity_admin_cb cb, void *opaque) VERITY_WUR;

enum verity_offset_spec {
    VERITY_OFFSET_LATEST = 0,      /* the high watermark */
    VERITY_OFFSET_EARLIEST = 1,    /* the first offset still stored */
    VERITY_OFFSET_TIMESTAMP = 2,   /* first offset whose batch max_timestamp >= ts */
};

struct verity_offsets {
    uint64_t offset;               /* the answer for the spec */
    uint64_t start_offset;
    uint64_t high_watermark;
};

/* Looks up an offset of one partition. timestamp_ms is used with
 * VERITY_OFFSET_TIMESTAMP only (milliseconds since the epoch). */
int verity_list_offsets(struct verity_client *c, const char *topic, uint32_t partition,
                        enum verity_offset_spec spec, int64_t timestamp_ms,
                        struct verity_offsets *out) VERITY_WUR;
int verity_list_offsets_async(struct verity_client *c, const char *topic, uint32_t partition,
                              enum verity_offset_spec spec, int64_t timestamp_ms,
                              verity_admin_cb cb, void *opaque) VERITY_WUR;

/* ---- records --------------------------------------------------------------- */

struct verity_header {
    const char *key;               /* not NUL-terminated necessarily */
    uint32_t key_len;
    const void *value;             /* NULL: null value */
    int32_t value_len;
};

struct verity_record {
    const void *key;               /* NULL: null key (sticky round robin) */
    int32_t key_len;
    const void *value;             /* NULL: null value */
    int32_t value_len;
    const struct verity_header *headers; /* header_count entries */
    uint32_t header_count;         /* at most VERITY_RECORD_HEADERS_MAX */
    int64_t timestamp_ms;          /* 0: the current wall clock */
};

/* ---- producer ---------------------------------------------------------------- */

struct verity_producer;

/* ---- replication (issue 10) ---- */
/* When Produce answers. A single broker (replication factor 1) treats both as
 * its own disk under the topic's durability. */
enum verity_acks {
    VERITY_ACKS_DEFAULT = 0,       /* the broker's default: quorum */
    VERITY_ACKS_QUORUM = 1,        /* durable on a majority of the partition's replicas */
    VERITY_ACKS_LEADER = 2,        /* durable on the primary only: a primary that
                                      fails before its backups hold the batch
                                      loses it (docs/REPLICATION.md) */
};
/* "default" | "quorum" | "leader". Returns 0 or VERITY_EINVAL. */
int verity_acks_parse(const char *s, enum verity_acks *out) VERITY_WUR;
const char *verity_acks_name(enum verity_acks a); /* never NULL */
/* ---- */

struct verity_producer_config {
    struct verity_conn_config conn;
    bool idempotence;              /* true: InitProducer id + epoch, per-partition
                                      sequences; a retry never writes twice */
    int linger_ms;                 /* wait this long for more records before a
                                      partly filled batch is sent (0); a batch is
                                      also sent as soon as the connection has a
                                      free in-flight slot and linger has passed */
    uint32_t batch_bytes;          /* a batch is closed when the next record would
                                      take it past this size (256 KiB); a single
                                      larger record gets a batch of its own */
    uint32_t batch_records;        /* records per batch (10000) */
    uint64_t buffer_bytes_max;     /* queued plus unacknowledged batch bytes
                                      (64 MiB); verity_produce waits up to
                                      block_ms for room, then VERITY_ELIMIT */
    int block_ms;                  /* 10000 (0: fail at once) */
    uint32_t max_inflight;         /* Produce requests in flight on the connection (5) */
    uint32_t request_batches_max;  /* batches packed into one Produce request (64) */
    int delivery_timeout_ms;       /* from verity_produce to the ack, retries
                                      included; then VERITY_ETIMEOUT (120000) */
    int retry_backoff_ms;          /* first wait before a retry (20), doubling */
    int retry_backoff_max_ms;      /* (1000) */
    uint32_t ack_timeout_ms;       /* Produce timeout_ms sent to the broker (0: its default) */
    enum verity_acks acks;         /* cluster: quorum (default) or leader */
};

void verity_producer_config_default(struct verity_producer_config *cfg);

/* What a delivery report says about one record. */
struct verity_delivery {
    const char *topic;             /* valid during the callback */
    uint32_t partition;
    uint64_t offset;               /* assigned offset (0 on error) */
    int64_t timestamp_ms;          /* the record's timestamp */
    bool duplicate;                /* the broker had the batch already (a retry) */
};

/* Called once per record, on the producer's I/O thread, in produce order per
 * partition. err is 0 when the record is acknowledged under the topic's
 * durability. VERITY_EDUPLICATE means the broker had appended the batch
 * before (a retry) but too long ago to say at which offset (offset is 0,
 * duplicate is true): it is stored exactly once. Any other error: the record
 * may or may not have been written (VERITY_EBADBATCH, VERITY_ELIMIT,
 * VERITY_ENOTFOUND, VERITY_EINVAL mean it was certainly not). d is valid
 * only during the call. */
typedef void (*verity_delivery_cb)(void *opaque, int err, const struct verity_delivery *d);

/* Creates a producer; cfg may be NULL for the defaults. Connects and runs
 * InitProducer in the background. */
int verity_producer_new(const struct verity_producer_config *cfg, struct verity_producer **out)
    VERITY_WUR;

/*
 * Queues one record for topic. partition is a partition number or
 * VERITY_PARTITION_ANY (key hash; sticky round robin for a null key). The
 * first record for a topic waits (up to block_ms) for its metadata. The
 * record is copied before return. cb (may be NULL) gets the delivery report.
 * With linger_ms 0 and nothing of this producer in flight, the calling
 * thread writes the request to the socket itself (a non-blocking send) rather
 * than waking the I/O thread; answers, retries and reports stay there.
 * Returns 0; VERITY_ENOTFOUND (no such topic); VERITY_EINVAL (partition out
 * of range, bad record); VERITY_ELIMIT (record too large, or no buffer room
 * within block_ms); VERITY_EFENCED or VERITY_ECLOSED when the producer can no
 * longer send; or a connection error while fetching metadata.
 */
int verity_produce(struct verity_producer *p, const char *topic, int32_t partition,
                   const struct verity_record *rec, verity_delivery_cb cb, void *opaque)
    VERITY_WUR;

/* Queues n records as exactly one batch, sent to one partition (after every
 * record already queued for it), carrying the 16-byte idempotency key when
 * idem_key is not NULL. A keyed batch is sent without producer id and
 * sequence (the broker deduplicates it by the key, within its idempotency
 * window, across producers and restarts); a broker that knows the key
 * answers with the original offsets (delivery.duplicate). Without a key the
 * batch is an ordinary idempotent batch. cb runs once per record. */
int verity_produce_batch(struct verity_producer *p, const char *topic, int32_t partition,
                         const struct verity_record *recs, size_t n, const uint8_t *idem_key,
                         verity_delivery_cb cb, void *opaque) VERITY_WUR;

/* verity_produce, then waits for the delivery report, which is stored in
 * *out when out is not NULL (out->topic is set to NULL). Returns the
 * report's error. */
int verity_produce_sync(struct verity_producer *p, const char *topic, int32_t partition,
                        const struct verity_record *rec, struct verity_delivery *out) VERITY_WUR;

/* Sends every queued record now (ignoring linger) and waits until every
 * record queued before the call has had its delivery report, at most
 * timeout_ms (-1: forever). Returns 0 or VERITY_ETIMEOUT. */
int verity_producer_flush(struct verity_producer *p, int timeout_ms) VERITY_WUR;

/* The producer id and epoch (both -1 before InitProducer answered or when
 * idempotence is off). */
void verity_producer_id(struct verity_producer *p, int64_t *id_out, int16_t *epoch_out);

/* Flushes for at most timeout_ms, then fails what is left with VERITY_ECLOSED
 * (their reports run before this returns), stops the I/O thread and frees p.
 * NULL is a no-op. Must not be called from a delivery callback. */
void verity_producer_free(struct verity_producer *p, int timeout_ms);

/* ---- consumer -------------------------------------------------------------- */

struct verity_consumer;

struct verity_consumer_config {
    struct verity_conn_config conn;
    uint32_t fetch_max_wait_ms;    /* long poll: how long the broker holds a fetch (500) */
    uint32_t fetch_min_bytes;      /* (1) */
    uint32_t fetch_max_bytes;      /* whole response (8 MiB) */
    uint32_t partition_max_bytes;  /* per partition per fetch (1 MiB) */
    uint64_t queue_bytes_max;      /* fetched, not yet polled (32 MiB) */
};

void verity_consumer_config_default(struct verity_consumer_config *cfg);

enum verity_start {
    VERITY_START_OFFSET = 0,       /* at the given offset */
    VERITY_START_EARLIEST = 1,     /* the first stored offset */
    VERITY_START_LATEST = 2,       /* the high watermark: only new records */
    VERITY_START_TIME = 3,         /* first batch with max_timestamp >= the time (ms) */
};

struct verity_message {
    const char *topic;
    uint32_t partition;
    uint64_t offset;
    int64_t timestamp_ms;
    const void *key;               /* NULL: null key */
    int32_t key_len;               /* -1 for null */
    const void *value;             /* NULL: null value */
    int32_t value_len;             /* -1 for null */
    uint32_t header_count;
    const struct verity_header *headers;
    /* The record batch that holds this message (consumers and group
     * consumers): its SHA-256 chain hash (32 bytes, docs/FORMAT.md), which
     * covers the log up to and including batch_last_offset, the batch's
     * last offset. Lets a reader record which log prefix it has read. */
    const uint8_t *chain_hash;
    uint64_t batch_last_offset;
};

int verity_consumer_new(const struct verity_consumer_config *cfg, struct verity_consumer **out)
    VERITY_WUR;

/* Adds (topic, partition) to the assignment, starting at the position given
 * by start and arg (an offset for VERITY_START_OFFSET, milliseconds since the
 * epoch for VERITY_START_TIME, ignored otherwise). The consumer resolves the
 * start and keeps fetching in the background from then on. Returns 0,
 * VERITY_EEXIST when already assigned, VERITY_EINVAL. */
int verity_consumer_assign(struct verity_consumer *c, const char *topic, uint32_t partition,
                           enum verity_start start, int64_t arg) VERITY_WUR;

/*
 * Waits up to timeout_ms (-1: forever, 0: do not wait) for messages and
 * returns what has arrived, in offset order per partition: *msgs_out points to
 * *n_out messages (0 on timeout). The array and everything it points to are
 * owned by the consumer and stay valid until the next verity_consumer_poll
 * or verity_consumer_free. Not for concurrent use: one thread polls.
 * While it waits on an empty queue, poll runs the consumer's I/O itself
 * (reads the answer, sends the next fetch) so that messages reach it without
 * a second thread's wake-up; the I/O thread takes over again 2 ms after poll
 * returns, or at once when a large answer (64 KiB or more) is queued.
 * Every batch is validated (CRC, structure, offsets) before it is returned.
 * Returns 0, or the error that stopped a partition (VERITY_ENOTFOUND,
 * VERITY_EOFFSET, VERITY_ECORRUPT, ...); *n_out is 0 then, and the error is
 * returned once; *err_partition_out (may be NULL) names the partition.
 */
int verity_consumer_poll(struct verity_consumer *c, int timeout_ms,
                         const struct verity_message **msgs_out, size_t *n_out,
                         uint32_t *err_partition_out) VERITY_WUR;

/* The next offset poll will return for (topic, partition) and the last high
 * watermark the broker reported (0 until known). Returns 0, VERITY_ENOTFOUND
 * (not assigned), or VERITY_ETIMEOUT while the start position is still being
 * resolved. */
int verity_consumer_position(struct verity_consumer *c, const char *topic, uint32_t partition,
                             uint64_t *next_offset_out, uint64_t *high_watermark_out) VERITY_WUR;

/* Size of a checkpoint payload (docs/FORMAT.md, storage/checkpoint.h):
 * version, flags, offset covered, chain hash, record count, time, the
 * signer's Ed25519 public key and its signature over
 * "VERITY-CKPT-1" || bytes[0, 96). */
#define VERITY_CHECKPOINT_SIZE 160

/* The latest checkpoint (a control batch the broker writes every N records
 * and at close) that verity_consumer_poll has stepped over in (topic,
 * partition): its 160-byte payload and the offset of its batch. Checkpoints
 * are not messages; this is how a reader that wants to prove what it read
 * (the sharing gateway's manifests) gets them. Returns 0, or
 * VERITY_ENOTFOUND when the partition is not assigned or no checkpoint has
 * been passed yet. */
int verity_consumer_checkpoint(struct verity_consumer *c, const char *topic, uint32_t partition,
                               uint8_t payload_out[VERITY_CHECKPOINT_SIZE], uint64_t *offset_out)
    VERITY_WUR;

/* Stops fetching, frees every message and c. NULL is a no-op. */
void verity_consumer_free(struct verity_consumer *c);

#endif
