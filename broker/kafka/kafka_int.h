/*
 * Internals of the Kafka listener (broker/kafka/). A translation at the
 * edge: Kafka frames are decoded here and mapped onto the broker's
 * partitions, producer state and logs; nothing below broker/kafka/ knows
 * about Kafka.
 *
 * Lifetimes (loop thread only):
 *   kafka   from kafka_start to kafka_free (b->kafka)
 *   kconn   while its socket is open or a request still refers to it (refs)
 *   kreq    from a decoded frame to its response being queued in order
 *
 * Ordering: a connection's requests sit in c->reqs in arrival order; a
 * handler finishes its request with kreq_done (now or later), and responses
 * leave strictly from the head of that list, so they go out in request
 * order whatever order they complete in (Kafka clients require it).
 */
#ifndef VERITY_KAFKA_INT_H
#define VERITY_KAFKA_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/queue.h>

#include "broker/auth.h"
#include "broker/auth_store.h"
#include "broker/broker_int.h"
#include "broker/kafka/kafka.h"
#include "broker/kafka/kwire.h"

/* Kafka error codes used by the listener. */
enum kerr {
    KE_NONE = 0,
    KE_UNKNOWN = -1,
    KE_OFFSET_OUT_OF_RANGE = 1,
    KE_CORRUPT_MESSAGE = 2,
    KE_UNKNOWN_TOPIC_OR_PARTITION = 3,
    KE_LEADER_NOT_AVAILABLE = 5,
    KE_NOT_LEADER_OR_FOLLOWER = 6,
    KE_REQUEST_TIMED_OUT = 7,
    KE_MESSAGE_TOO_LARGE = 10,
    KE_COORDINATOR_NOT_AVAILABLE = 15,
    KE_NOT_COORDINATOR = 16,
    KE_INVALID_TOPIC_EXCEPTION = 17,
    KE_ILLEGAL_GENERATION = 22,
    KE_INCONSISTENT_GROUP_PROTOCOL = 23,
    KE_INVALID_GROUP_ID = 24,
    KE_UNKNOWN_MEMBER_ID = 25,
    KE_INVALID_SESSION_TIMEOUT = 26,
    KE_REBALANCE_IN_PROGRESS = 27,
    KE_TOPIC_ALREADY_EXISTS = 36,
    KE_INVALID_PARTITIONS = 37,
    KE_INVALID_REPLICATION_FACTOR = 38,
    KE_INVALID_REQUEST = 42,
    KE_UNSUPPORTED_VERSION = 35,
    KE_OUT_OF_ORDER_SEQUENCE_NUMBER = 45,
    KE_DUPLICATE_SEQUENCE_NUMBER = 46,
    KE_INVALID_PRODUCER_EPOCH = 47,
    KE_POLICY_VIOLATION = 44,
    KE_KAFKA_STORAGE_ERROR = 56,
    KE_UNKNOWN_PRODUCER_ID = 59,
    KE_INVALID_CONFIG = 40,
    KE_GROUP_ID_NOT_FOUND = 69,
    KE_TOPIC_AUTHORIZATION_FAILED = 29,
    KE_GROUP_AUTHORIZATION_FAILED = 30,
    KE_CLUSTER_AUTHORIZATION_FAILED = 31,
    KE_UNSUPPORTED_SASL_MECHANISM = 33,
    KE_ILLEGAL_SASL_STATE = 34,
    KE_SASL_AUTHENTICATION_FAILED = 58,
};

struct kconn;
struct kreq;

TAILQ_HEAD(kreq_list, kreq);
TAILQ_HEAD(kconn_list, kconn);

struct kgroups; /* the classic group coordinator (k_group.c) */

/* The Fetch read-ahead (k_fetch.c): the next range of a partition a
 * connection reads, converted to Kafka record batches while the client
 * parses the answer it just got, so the next Fetch copies instead of
 * converting on the critical path. A slot holds one converted range; the
 * capacity of all slots' buffers together is at most kafka_readahead_bytes. */
#define KRA_SLOTS 8
#define KRA_CONN_PARTS 4 /* partitions remembered per connection */

struct kra_slot {
    struct partition *part; /* NULL: free (buf may be kept for reuse) */
    uint64_t from;          /* base offset of the first batch converted */
    uint64_t to;            /* offset after the last one */
    uint64_t stored;        /* their stored bytes */
    uint64_t want;          /* stored bytes the whole range holds at most */
    bool more;              /* converted in steps: the next step extends it */
    uint8_t *buf;           /* the Kafka record batches, back to back */
    size_t len, cap;
    uint64_t tick; /* last use (least recently used goes first) */
};

struct kra_want {
    struct partition *part; /* NULL: none */
    uint64_t from;          /* the offset the client asks for next */
    uint64_t max;           /* stored bytes its last Fetch allowed */
};

struct kafka {
    struct broker *b;
    struct evconnlistener *listener;
    struct kconn_list conns;
    size_t n_conns;
    uint64_t next_conn_id;
    char host[BCFG_ADDR_MAX]; /* advertised in Metadata and FindCoordinator */
    uint16_t port;
    char addr[BCFG_ADDR_MAX + 16];
    struct kgroups *groups;
    uint64_t requests;  /* decoded since start */
    uint64_t malformed; /* connections closed for a malformed request */
    uint8_t *scratch;   /* Fetch reads stored batches here (k_fetch.c) */
    size_t scratch_cap;
    struct event *retry_ev;  /* retries connections waiting for the frame budget */
    struct kra_slot ra[KRA_SLOTS];
    uint64_t ra_tick;
    struct event *ra_step_ev; /* the next read-ahead step (a zero timer) */
    uint64_t ra_hits, ra_misses; /* Fetch partitions served from a slot / converted then */
};

struct kconn {
    struct kafka *k;
    struct bufferevent *bev; /* NULL once dead */
    uint64_t id;
    char peer[64];
    uint32_t inflight;    /* requests decoded, response not yet queued */
    uint32_t refs;        /* requests pointing here, plus callbacks running */
    bool dead;            /* socket closed; responses are dropped */
    bool paused;          /* reading stopped (in-flight cap or output backlog) */
    bool eof;             /* peer half-closed: close once answered */
    bool tls, tls_up;     /* a TLS connection; its handshake is done */
    bool closing;         /* answer what is queued, read nothing more, close */
    bool sasl_mech;       /* SaslHandshake chose PLAIN (ksasl.c) */
    bool sasl_done;       /* authenticated: who is the principal */
    bool by_cert;         /* ... by its TLS client certificate (SASL may replace it) */
    struct auth_who who;
    struct kreq_list reqs; /* arrival order */
    TAILQ_ENTRY(kconn) link;
    /* The frame being received: its clock (frame_timeout_ms, from its first
     * byte), the budget it holds, or waits for (reading stopped). */
    struct event *frame_ev;
    bool frame_open;
    bool starved;
    uint64_t held, want; /* bytes of b->buf_used it holds; its size with the prefix */
    struct kra_want ra_want[KRA_CONN_PARTS]; /* read ahead once the answer is written */
    /* The connections quota (issue 14): this connection is counted under
     * who's principal and tenant (auth_who_conn_take). */
    bool quota_counted;
    bool quota_refused; /* its login was refused by the connections quota */
};

typedef void (*kreq_cancel_fn)(struct kreq *q);

struct kreq {
    struct kafka *k;
    struct kconn *c; /* holds a ref */
    int16_t api_key;
    int16_t api_version;
    int32_t corr;
    uint8_t *frame;  /* owned: the request after its size prefix */
    struct kr r;     /* reader positioned at the body */
    struct kw w;     /* the response body */
    bool done;       /* response complete (or none is due) */
    bool silent;     /* no response is sent (Produce acks=0) */
    void *ctx;       /* handler state */
    kreq_cancel_fn cancel; /* the connection died first: release ctx, then kreq_done */
    TAILQ_ENTRY(kreq) link;
};

/* Marks q answered (its body is q->w; nothing is sent when silent or on a
 * dead connection) and sends every finished response at the head of the
 * connection's queue. q may be freed before this returns. */
void kreq_done(struct kreq *q);
/* The request does not decode: the stream is closed (Kafka has no error
 * frame for it); q is freed. */
void kreq_malformed(struct kreq *q, const char *why);

/* Maps a Verity error to the Kafka code a client retries correctly. */
int16_t kerr_from_verity(int err);

/* Handlers (one file per API family). Each decodes q->r, writes q->w and
 * calls kreq_done now or later (or kreq_malformed). */
void k_api_versions(struct kreq *q);
void k_metadata(struct kreq *q);
void k_create_topics(struct kreq *q);
void k_delete_topics(struct kreq *q);
void k_describe_configs(struct kreq *q);
void k_sasl_handshake(struct kreq *q);
void k_sasl_authenticate(struct kreq *q);

/* After q's answer the connection closes; nothing more is read. */
void kreq_close_after(struct kreq *q);
/* The API's name ("Produce"), "?" when unknown. */
const char *kapi_name(int16_t key);

/* Authentication and tenants (ksasl.c). Whether c must authenticate before
 * this request; whether c's principal still holds (logs auth_revoked). */
bool ksasl_required(const struct kconn *c);
bool ksasl_current(struct kconn *c);
/* c stops counting against its principal's connections quota (it closes). */
void ksasl_uncount(struct kconn *c);
/* The TLS handshake finished: a verified client certificate whose subject
 * CN is mapped in the store authenticates the connection (no SASL needed). */
struct ssl_st;
void ksasl_tls(struct kconn *c, struct ssl_st *ssl);
/* A topic (group false) or group name from q into out (cap bytes): inside
 * the tenant when the connection authenticated, after the ACL check for
 * ops (0: none). KE_NONE, or the code to answer with (unknown topic,
 * invalid group id, topic/group authorization failed). */
int16_t kname_in(struct kreq *q, struct kstr s, bool group, unsigned ops, char *out, size_t cap);
/* A stored name as q's client names it; NULL: another tenant's. */
const char *kname_out(const struct kreq *q, const char *full);
/* Whether a stored topic is listed to q's client (its tenant's, and the
 * principal may do ops on it). */
bool kname_visible(struct kreq *q, const char *full, unsigned ops);
void k_init_producer_id(struct kreq *q);
void k_produce(struct kreq *q);
void k_fetch(struct kreq *q);
void k_list_offsets(struct kreq *q);
/* Read-ahead (k_fetch.c): c's answers are all written; convert what its
 * next Fetch will ask for. */
void kra_run(struct kconn *c);
/* p closes: its slots and every connection's wants of it are dropped. */
void kra_part_gone(struct kafka *k, struct partition *p);
/* Frees every slot's buffer (no Kafka connection is left, or at the end). */
void kra_release(struct kafka *k);
void k_find_coordinator(struct kreq *q);
void k_join_group(struct kreq *q);
void k_sync_group(struct kreq *q);
void k_heartbeat(struct kreq *q);
void k_leave_group(struct kreq *q);
void k_offset_commit(struct kreq *q);
void k_offset_fetch(struct kreq *q);

/* The dispatch table (kconn.c): ApiVersions advertises exactly it. */
typedef void (*kapi_fn)(struct kreq *q);
struct kapi {
    int16_t key;
    int16_t min_version;
    int16_t max_version;
    kapi_fn fn;
    const char *name;
};
extern const struct kapi kapi_table[];
extern const size_t kapi_count;

/* Group coordinator (k_group.c). */
int kgroups_open(struct kafka *k) __attribute__((warn_unused_result));
void kgroups_close(struct kafka *k);
/* Shutdown: answers every parked JoinGroup and SyncGroup with NOT_COORDINATOR
 * so graceful shutdown does not wait for them. */
void kgroups_shutdown(struct kafka *k);
/* A connection died (its parked requests are cancelled through their kreq). */
void kgroups_conn_gone(struct kafka *k, struct kconn *c);

#endif
