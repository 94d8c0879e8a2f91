/*
 * Internals shared by the broker's files: the broker, topics, partitions,
 * the metadata log, connections and requests. Everything here is owned and
 * touched by the event loop thread only, except where a field says
 * otherwise.
 *
 * Lifetimes:
 *   broker   >= topic >= partition (a partition's log and replica close
 *               with it)
 *   conn     lives while its socket is open or a request still refers to it
 *               (refs); once `dead`, replies are dropped
 *   req      from a decoded frame to its reply (or to its connection's death
 *               for fetches, which are cancelled)
 */
#ifndef VERITY_BROKER_INT_H
#define VERITY_BROKER_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/queue.h>

#include <openssl/evp.h>

#include "broker/broker.h"
#include "broker/config.h"
#include "broker/idem.h"
#include "broker/metrics.h"
#include "broker/replica.h"
#include "proto/codec.h"
#include "storage/vlog.h"
#include "verity/limits.h"

struct event;
struct event_base;
struct evconnlistener;
struct evhttp;
struct bufferevent;
struct evbuffer;

struct conn;
struct req;
struct topic;
struct partition;
struct prod_wait;
struct fetch_link;

/* ---- topics and partitions ----------------------------------------------- */

struct topic_cfg {
    uint32_t partitions;
    enum topic_durability durability;
    int64_t retention_ms;    /* -1 unlimited */
    int64_t retention_bytes; /* -1 unlimited */
    uint64_t segment_bytes;
    uint32_t max_message_bytes;
};

/* One produced batch waiting for the high watermark to pass its end. */
struct prod_wait {
    struct partition *part;
    uint64_t end; /* last offset + 1 */
    bool linked;  /* in part->waits */
    void *ctx;    /* the produce request's state (h_produce.c) */
    size_t idx;   /* entry in that request */
    TAILQ_ENTRY(prod_wait) link;
};

/* One fetch long-polling on a partition. */
struct fetch_link {
    struct partition *part;
    struct req *req;
    bool linked; /* in part->fetchers */
    TAILQ_ENTRY(fetch_link) link;
};

TAILQ_HEAD(prod_wait_list, prod_wait);
TAILQ_HEAD(fetch_link_list, fetch_link);

struct partition {
    struct broker *b;
    struct topic *topic; /* owner */
    uint32_t id;
    char *dir;               /* owned */
    struct vlog *log;        /* NULL when opening failed (error says why) */
    struct replica *replica; /* NULL with log */
    struct idem idem;
    struct event *durable_ev;        /* activated by the commit thread (on_durable) */
    struct prod_wait_list waits;     /* produces waiting for the high watermark, by end */
    struct fetch_link_list fetchers; /* long-polls waiting for new data */
    int error;                       /* 0, open failure or sticky log error */
    bool error_logged;
};

struct topic {
    char name[VERITY_TOPIC_NAME_MAX + 1];
    struct topic_cfg cfg;
    int64_t created_ms;
    bool ready;               /* creation durable and partitions open */
    bool deleting;            /* delete record appended, not yet durable */
    struct partition **parts; /* cfg.partitions entries (NULL until opened) */
    struct topic *hnext;      /* broker->topic_buckets chain */
    TAILQ_ENTRY(topic) link;  /* broker->topics, creation order */
};
TAILQ_HEAD(topic_list, topic);

#define TOPIC_BUCKETS 1024

/* Opens (creating) partition id of t under <data>/topics/<name>/<id>: vlog
 * recovery, idempotence rebuild, replica. A failure is kept in p->error (the
 * partition answers with it) and logged; returns -ENOMEM only. */
int part_open(struct broker *b, struct topic *t, uint32_t id, struct partition **out)
    __attribute__((warn_unused_result));
/* Fails waiting produces and fetches with err, then closes the log (sync +
 * checkpoint when clean is true, abandon otherwise). Returns the close error. */
int part_close(struct partition *p, int err, bool clean);
/* Effective vlog config of a topic. */
void part_vlog_config(const struct broker *b, const struct topic_cfg *tc, struct vlog_config *vc);
/* The partition's high watermark (0 when it failed to open). */
uint64_t part_hw(const struct partition *p);
/* Called when the high watermark advanced or the partition failed: resolves
 * produce waits and wakes fetchers. */
void part_progress(struct partition *p);

struct topic *topic_find(struct broker *b, const char *name);
/* Only ready, not deleting topics; NULL otherwise. */
struct topic *topic_find_live(struct broker *b, const char *name);
/* Looks up a live partition. Returns 0, or VERITY_ENOTFOUND with msg. */
int topic_partition(struct broker *b, const char *topic, uint32_t partition, struct partition **out,
                    char *msg, size_t cap) __attribute__((warn_unused_result));
/* Adds an empty, not ready topic to the table. NULL on -ENOMEM. */
struct topic *topic_add(struct broker *b, const char *name, const struct topic_cfg *cfg,
                        int64_t created_ms);
/* Opens every partition and marks the topic ready. */
int topic_open_partitions(struct broker *b, struct topic *t) __attribute__((warn_unused_result));
/* Removes t from the table and frees it (partitions must be closed). */
void topic_remove(struct broker *b, struct topic *t);
/* Fills the effective config from a wire config and the broker defaults.
 * Returns 0 or VERITY_EINVAL / VERITY_ELIMIT with msg. */
int topic_cfg_from_wire(const struct broker *b, const Verity__TopicConfig *w, struct topic_cfg *out,
                        char *msg, size_t cap) __attribute__((warn_unused_result));

/* ---- metadata log --------------------------------------------------------- */

struct meta_op;
typedef void (*meta_done_fn)(struct broker *b, void *arg, int err);

struct meta_op {
    uint64_t end; /* durable once the meta log's durable end reaches it */
    meta_done_fn done;
    void *arg;
    TAILQ_ENTRY(meta_op) link;
};
TAILQ_HEAD(meta_op_list, meta_op);

struct meta {
    struct vlog *log;
    struct event *durable_ev;
    struct meta_op_list ops; /* appended, waiting to be durable, in order */
    int16_t *epochs;         /* epochs[pid - 1], pid = 1..n_producers */
    size_t n_producers;
    size_t cap_producers;
};

/* Opens <data>/__meta and replays it into the broker (topics, producers). */
int meta_open(struct broker *b) __attribute__((warn_unused_result));
int meta_close(struct broker *b, bool clean);
/* Appends one JSON record (borrowed) and calls done(b, arg, err) on the loop
 * once it is durable (err 0) or failed. Returns 0 (done will be called) or
 * an error (done will not be called). */
int meta_append(struct broker *b, const char *json, meta_done_fn done, void *arg)
    __attribute__((warn_unused_result));
/* -1 when pid is unknown. */
int meta_producer_epoch(const struct broker *b, int64_t pid);
/* Records (in memory) pid's epoch; grows the table. 0 or -ENOMEM. */
int meta_producer_set(struct broker *b, int64_t pid, int16_t epoch)
    __attribute__((warn_unused_result));
/* Renames <data>/topics/<name> aside, fsyncs the parent, removes it. */
int meta_remove_topic_dir(struct broker *b, const char *name) __attribute__((warn_unused_result));
/* Sum of the fsync statistics of every log (metrics). */
void meta_sync_stats(struct broker *b, struct vlog_sync_stats *out);

/* ---- connections and requests --------------------------------------------- */

TAILQ_HEAD(conn_list, conn);
TAILQ_HEAD(req_list, req);

struct conn {
    struct broker *b;
    struct bufferevent *bev; /* NULL once dead */
    uint64_t id;
    char peer[64];
    uint32_t inflight;       /* requests decoded and not yet answered */
    uint32_t refs;           /* requests that point here */
    bool closing;            /* answering an error: discard input, close after flush */
    bool dead;               /* socket closed; replies are dropped */
    bool paused;             /* reading paused for output backpressure */
    bool eof;                /* peer closed its side; close once answered */
    struct event *linger_ev; /* closes a `closing` connection at the latest */
    struct req_list reqs;    /* requests in flight */
    TAILQ_ENTRY(conn) link;
};

typedef void (*req_cancel_fn)(struct req *r);

struct req {
    struct broker *b;
    struct conn *conn; /* holds a ref */
    uint64_t corr;
    Verity__Envelope__BodyCase type;
    int64_t start_ns;
    struct codec_msg *msg; /* the decoded request, owned */
    uint8_t *frame;        /* the whole frame, owned; payload points into it */
    uint8_t *payload;
    size_t payload_len;
    void *ctx;             /* handler state */
    req_cancel_fn cancel;  /* called when the connection dies first */
    bool failed_entry;     /* some entry of the answer carried an error */
    TAILQ_ENTRY(req) link; /* conn->reqs */
};

/* Sends env (version and correlation id are filled in) followed by n file
 * spans (fds are taken over and closed) as the answer to r, then frees r.
 * payload_len must equal the spans' total. */
struct file_span {
    int fd;
    uint64_t position;
    uint64_t length;
};
void req_reply(struct req *r, Verity__Envelope *env, const struct file_span *spans, size_t n);
/* Answers r with a request-level error and no body, then frees r. */
void req_fail(struct req *r, int err, const char *msg);

/* Handlers: each answers now or later through req_reply / req_fail. */
void h_hello(struct req *r);
void h_metadata(struct req *r);
void h_create_topic(struct req *r);
void h_delete_topic(struct req *r);
void h_list_topics(struct req *r);
void h_describe_topic(struct req *r);
void h_init_producer(struct req *r);
void h_produce(struct req *r);
void h_fetch(struct req *r);
void h_list_offsets(struct req *r);

/* Produce/fetch hooks used by partitions. produce_wait_resolve unlinks w
 * and answers its entry (err, or success at high watermark hw); it may
 * finish and free the whole request. fetch_link_wake re-evaluates the fetch
 * (final: answer now with what there is); it may free the request. */
void produce_wait_resolve(struct prod_wait *w, int err, uint64_t hw);
void fetch_link_wake(struct fetch_link *l, bool final);

/* ---- the broker ----------------------------------------------------------- */

struct broker {
    struct broker_config cfg;
    struct codec_limits limits; /* from cfg */
    struct event_base *base;
    struct evconnlistener *listener;
    struct evhttp *http;
    struct event *sig_term;
    struct event *sig_int;
    struct event *tick_ev; /* 1 s housekeeping */
    struct event *stop_ev; /* polls for in-flight requests during shutdown */
    int64_t stop_deadline_ns;
    int64_t last_retention_ms;
    char listen_addr[BCFG_ADDR_MAX + 16]; /* bound address, port resolved */
    char http_addr[BCFG_ADDR_MAX + 16];
    EVP_PKEY *signing_key; /* owned; NULL = unsigned checkpoints */
    struct meta meta;
    struct topic_list topics;
    struct topic *topic_buckets[TOPIC_BUCKETS];
    size_t n_topics;
    struct conn_list conns;
    size_t n_conns;
    uint64_t next_conn_id;
    struct metrics met;
    uint8_t idem_seed[16];
    bool ready; /* serving (after startup, before shutdown) */
    bool stopping;
    int exit_code;
};

int64_t now_ms(void);
int64_t mono_ns(void);

/* Admin HTTP server (broker/http.c). */
int http_start(struct broker *b) __attribute__((warn_unused_result));
void http_stop(struct broker *b);

/* Protocol listener and connections (broker/conn.c). */
int conn_listen(struct broker *b) __attribute__((warn_unused_result));
/* Stops accepting new connections. */
void conn_stop_accepting(struct broker *b);
/* Closes every connection (requests still in flight are dropped). */
void conn_close_all(struct broker *b);
/* Total requests in flight on every connection. */
size_t conn_inflight_total(const struct broker *b);

/* Fills a TopicMetadata for t (strings borrowed from t; partitions array
 * malloc'd, free with topic_md_free). */
int topic_md_fill(struct broker *b, struct topic *t, bool with_partitions,
                  Verity__TopicMetadata *md, Verity__TopicConfig *cfg)
    __attribute__((warn_unused_result));
void topic_md_free(Verity__TopicMetadata *md);

/* Wire durability <-> topic durability. */
Verity__Durability topic_durability_to_wire(enum topic_durability d);

#endif
