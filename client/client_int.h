/*
 * Internals of libverity shared between the files of client/. Nothing here
 * is public API; include/verity/verity.h is.
 *
 *   loop.c      one I/O thread per handle: a libevent base, a job queue that
 *               other threads post to, a wake-up event
 *   conn.c      one broker connection on that base: connect, Hello, framing
 *               through proto/codec.h, pipelined requests matched by
 *               correlation id, timeouts, reconnect with backoff
 *   accum.c     the producer's batches per partition (pure: no I/O, no
 *               clock; the caller passes the time and holds the lock)
 *   sync.c      waiting for an asynchronous answer on a condition variable
 *   util.c      configuration defaults, small public helpers, wire metadata
 *               -> struct verity_topic_info
 */
#ifndef VERITY_CLIENT_INT_H
#define VERITY_CLIENT_INT_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include <event2/event.h>

#include "proto/codec.h"
#include "storage/batch.h"
#include "verity/verity.h"

#define CL_WUR __attribute__((warn_unused_result))
#define CL_ERRMSG_MAX 256

/* Monotonic and wall clocks in ms (the shell reads clocks; accum.c never). */
int64_t cl_mono_ms(void);
int64_t cl_wall_ms(void);

/* Fills unset (zero) fields of cfg with the defaults, copies it to out. */
void cl_conn_config_fill(const struct verity_conn_config *cfg, struct verity_conn_config *out);

/* Sets this thread's verity_last_error_message(). */
void cl_set_last_error(const char *msg);

/* ---- loop.c --------------------------------------------------------------- */

struct cl_job;

struct cl_loop {
    struct event_base *base;   /* owned; used only by the loop thread */
    pthread_t thread;
    bool started;
    pthread_mutex_t mu;        /* protects jobs, stopping */
    struct cl_job *jobs_head;
    struct cl_job *jobs_tail;
    struct event *wake_ev;     /* runs the queued jobs */
    bool stopping;
    bool exiting;              /* the stop job ran: loop_main returns */
    void (*on_stop)(void *arg); /* runs on the loop thread before it exits */
    void *on_stop_arg;
    /* Lending the base to a waiting application thread (cl_loop_borrow);
     * own and idle_since_ns under mu. */
    pthread_cond_t cv;         /* the loop thread waits on it while lent */
    enum cl_own { CL_OWN_THREAD, CL_LEND_ASKED, CL_LENT_BUSY, CL_LENT_IDLE } own;
    int64_t idle_since_ns;     /* CL_LENT_IDLE since */
    struct event *borrow_timer; /* ends a borrowed run at its deadline */
    void (*on_lent)(void *arg); /* loop thread, once the base is lent */
    void *on_lent_arg;
};

/* Creates the base and starts the thread. on_stop (may be NULL) runs on the
 * loop thread when cl_loop_stop is called, before the loop exits. */
int cl_loop_start(struct cl_loop *l, void (*on_stop)(void *), void *arg) CL_WUR;
/* Runs fn(arg) on the loop thread soon. Returns 0, VERITY_ECLOSED once the
 * loop is stopping (fn will not run), or -ENOMEM. Any thread. */
int cl_loop_post(struct cl_loop *l, void (*fn)(void *), void *arg) CL_WUR;
/* Stops the loop (on_stop runs first on the loop thread), joins the thread,
 * frees the base. Not from the loop thread. Safe on a loop never started. */
void cl_loop_stop(struct cl_loop *l);
/* True when called from l's thread, or from a thread running it borrowed. */
bool cl_loop_in_thread(const struct cl_loop *l);
/*
 * Lending the base (issue 16). A thread that would otherwise wait for the
 * loop thread's news (a consumer's poll) can run the loop itself, so what it
 * waits for reaches it without a wake-up of a second thread per answer.
 * cl_loop_borrow returns true when the caller may run the loop now
 * (cl_loop_run_borrowed, exactly once); false when it is lent elsewhere or
 * not lent yet: then it has asked the loop thread, which stops dispatching,
 * lends the base and calls on_lent (set before the first borrow) from its
 * own thread, without mu. Between runs the base stays lent (idle): the next
 * borrow takes it without any wake-up; the loop thread takes it back once it
 * has been idle CL_LEND_IDLE_NS, or at once when a job is posted or
 * cl_loop_nudge is called. Callbacks therefore run on the borrowing thread
 * too, but never on two threads at once. Not from the loop thread.
 */
bool cl_loop_borrow(struct cl_loop *l);
/* Runs the borrowed loop until done(arg) or the monotonic deadline (ns; a
 * deadline already past makes one non-blocking pass), then leaves it idle. */
void cl_loop_run_borrowed(struct cl_loop *l, bool (*done)(void *), void *arg,
                          int64_t deadline_ns);
/* Work for the loop was queued with event_active from another thread: a
 * lent, idle base goes back to the loop thread now. */
void cl_loop_nudge(struct cl_loop *l);

/* ---- conn.c --------------------------------------------------------------- */

struct conn;

struct conn_events {
    void (*on_ready)(void *arg);          /* connected and Hello answered */
    void (*on_down)(void *arg, int err);  /* lost, or an attempt failed; requests
                                             already failed or requeued */
};

/* Response handler: called exactly once per request on the loop thread.
 * On success err is 0 and env is the response (borrowed for the call);
 * *payload (payload_len bytes, malloc'd) may be taken by setting it to NULL.
 * Otherwise err is the request-level error (env may still be set when the
 * broker answered with an error) or a connection error, and msg explains it. */
typedef void (*conn_resp_fn)(void *arg, int err, const char *msg, const Verity__Envelope *env,
                             uint8_t **payload, size_t payload_len);

#define CONN_RETRY_ON_RESET 0x1u /* resend (up to 3 times) when the connection drops first */
#define CONN_FOLLOW_LEADER 0x2u  /* keep the frame to resend after a request-level NOT_LEADER
                                    (set by conn_request for all but Produce and Fetch) */
#define CONN_NO_FOLLOW 0x4u      /* report a request-level NOT_LEADER to the caller instead:
                                    for connections pinned to one broker (a routed consumer's) */

/* A connection on base; nothing happens until conn_start. cfg is copied
 * (strings too). ev is borrowed for the connection's life. */
int conn_new(struct event_base *base, const struct verity_conn_config *cfg,
             const struct conn_events *ev, void *arg, struct conn **out) CL_WUR;
void conn_start(struct conn *c);
/* Fails every request with VERITY_ECLOSED (handlers run), closes, frees. */
void conn_free(struct conn *c);
bool conn_ready(const struct conn *c);
/* The error of the last failed connection attempt or loss (0 if none). */
int conn_last_error(const struct conn *c);
/* Requests written and not yet answered. */
uint32_t conn_inflight(const struct conn *c);
/* Hello's answer (0 before): broker limits. */
uint32_t conn_max_batch_bytes(const struct conn *c);
/* The reason of the last TLS failure in this process (a file that did not
 * load, or OpenSSL's words for a handshake), "" when none. */
void conn_tls_reason(char *buf, size_t cap);
/* Drops the connection (as on an error) and reconnects after backoff. */
void conn_reset(struct conn *c, int err);
/* True when the last failed attempt moved on to the next bootstrap address
 * (other addresses of the round are still to be tried). */
bool conn_rotating(const struct conn *c);
/* The address the connection uses or tries now ("host:port"). */
const char *conn_target(const struct conn *c);
/* Splits a bootstrap list "a:p,b:q" (spaces around entries ignored) into at
 * most cap malloc'd "host:port" strings. Returns 0, VERITY_EINVAL (an empty
 * or malformed entry, too many) or -ENOMEM; nothing is kept on error. */
int conn_parse_list(const char *list, char **out, size_t cap, size_t *n_out) CL_WUR;
/* "host:port" of a BrokerInfo (IPv6 bracketed); false when it names none. */
bool conn_broker_addr(const Verity__BrokerInfo *b, char *buf, size_t cap);

/*
 * Sends env (its version and correlation_id are set here) followed by the
 * payload iovecs (copied). When the connection is not ready the request
 * waits, at most request_timeout_ms, then fails with the last connection
 * error or VERITY_ETIMEOUT. extra_timeout_ms is added to the answer deadline
 * (a long-poll's wait). Returns 0 (fn will be called) or an encode error (fn
 * will not be called).
 */
int conn_request(struct conn *c, Verity__Envelope *env, const struct iovec *iov, int iovcnt,
                 uint32_t extra_timeout_ms, unsigned flags, conn_resp_fn fn, void *arg) CL_WUR;

/* Writes what the connection has queued to the socket now, instead of at
 * the end of the loop pass (issue 16; loop thread). A handler that is about
 * to wake an application thread calls it first, so the request it just made
 * is out before that thread can take the CPU. No-op for TLS or while not
 * ready; what the socket does not take stays queued. */
void conn_flush(struct conn *c);

/*
 * Direct writes from an application thread (issue 16), to save the hand-off
 * to the I/O thread when the connection is idle. conn_direct_begin takes the
 * connection's lock without waiting and returns true only when a request may
 * be written now (plaintext, ready, nothing waiting or queued for the socket,
 * room in flight); then conn_direct_send (any number of times) and
 * conn_direct_end. conn_direct_send is conn_request written at once from the
 * calling thread: fn is called later on the loop thread, exactly once; what
 * the socket does not take, and a send error, are left to the loop thread.
 * Returns 0 or an encode error (fn will not be called). Not from the loop
 * thread; the caller must not block while between begin and end.
 */
/* Lets c take direct writes (before conn_start; c's lock is used from then
 * on). */
void conn_allow_direct(struct conn *c);
bool conn_direct_begin(struct conn *c);
int conn_direct_send(struct conn *c, Verity__Envelope *env, const struct iovec *iov, int iovcnt,
                     uint32_t extra_timeout_ms, unsigned flags, conn_resp_fn fn, void *arg) CL_WUR;
void conn_direct_end(struct conn *c);

/* ---- sync.c --------------------------------------------------------------- */

/* A one-shot rendezvous between a waiting caller and the loop thread. */
struct cl_wait {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool done;
    int err;
    char msg[CL_ERRMSG_MAX];
    struct verity_topic_info *topics; /* taken from the result */
    size_t topic_count;
    struct verity_offsets offsets;
    uint32_t node_id;
};

void cl_wait_init(struct cl_wait *w);
void cl_wait_deinit(struct cl_wait *w);
/* Marks w done with err and msg (may be NULL); any thread. */
void cl_wait_signal(struct cl_wait *w, int err, const char *msg);
/* Waits for cl_wait_signal, at most timeout_ms (-1 forever). Returns the
 * signalled error, or VERITY_ETIMEOUT. */
int cl_wait_for(struct cl_wait *w, int timeout_ms) CL_WUR;
/* Same, with an absolute monotonic deadline in ms (-1 forever). */
int cl_wait_until(struct cl_wait *w, int64_t deadline_ms) CL_WUR;

/* ---- util.c: metadata --------------------------------------------------------------- */

/* Converts wire topic metadata into *out (fields allocated; free with
 * verity_topic_info_free semantics on an array). Returns 0 or -ENOMEM. */
int cl_topic_info_from_wire(const Verity__TopicMetadata *m, struct verity_topic_info *out) CL_WUR;
/* Frees the fields of one info (not the struct). */
void cl_topic_info_clear(struct verity_topic_info *t);
enum verity_durability cl_durability_from_wire(int d);

/* ---- accum.c: the producer's record accumulator ------------------------- */

enum pb_state {
    PB_OPEN = 0,     /* taking records */
    PB_CLOSED,       /* full or an explicit batch; not sealed */
    PB_SEALED,       /* header written (producer id, epoch, sequence); may resend */
    PB_INFLIGHT,     /* in a Produce request that has not been answered */
    PB_DONE,         /* result known; waiting to be reported in order */
};

struct pb_report {
    verity_delivery_cb cb;
    void *opaque;
    int64_t timestamp_ms;
};

struct acc_topic;

struct pbatch {
    struct pbatch *next;            /* in its partition's queue, then the done list */
    struct acc_topic *topic;
    uint32_t partition;
    uint64_t id;                    /* serial number, never reused */
    enum pb_state state;
    struct batch_builder b;         /* records; b.buf[0, b.len) is the batch once sealed */
    struct pb_report *reports;      /* b.count entries */
    uint32_t reports_cap;
    int64_t created_ms;             /* first record (linger) */
    int64_t deadline_ms;            /* delivery timeout */
    int32_t base_sequence;          /* -1 until sealed (or without idempotence) */
    uint32_t attempts;              /* times sent */
    bool has_idem_key;
    uint8_t idem_key[BATCH_IDEM_KEY_SIZE];
    int err;                        /* PB_DONE: the result */
    uint64_t base_offset;
    bool duplicate;
};

struct acc_part {
    struct pbatch *head;            /* every unreported batch, oldest first */
    struct pbatch *tail;
    struct pbatch *open;            /* the tail while it takes records, else NULL */
    uint32_t inflight;              /* batches of this partition in flight */
    int32_t next_sequence;          /* idempotence: the next batch's base sequence */
    bool retrying;                  /* a batch failed: resend from the oldest
                                       unacknowledged once nothing is in flight */
    int64_t retry_at_ms;
    uint32_t retry_count;           /* consecutive retries, for the backoff */
    uint32_t leader;                /* node id of the partition's primary (0: unknown);
                                       set by the producer from Metadata */
};

struct acc_topic {
    struct acc_topic *next;
    char *name;
    uint32_t partition_count;
    struct acc_part *parts;
    uint32_t sticky;                /* partition for null-key records */
    uint64_t sticky_batch;          /* id of the batch the sticky partition filled */
};

struct accum_config {
    uint32_t batch_bytes;
    uint32_t batch_records;
    int linger_ms;
    uint64_t buffer_bytes_max;
    int delivery_timeout_ms;
    int retry_backoff_ms;
    int retry_backoff_max_ms;
    bool idempotence;
    uint32_t partition_inflight_max; /* batches in flight per partition (5: the
                                        broker deduplicates the last five) */
    uint32_t seed;                  /* first sticky partition */
};

struct accum {
    struct accum_config cfg;
    struct acc_topic *topics;
    uint64_t bytes_queued;          /* builder capacity of every unreported batch */
    uint64_t next_batch_id;
    uint64_t records_queued;        /* records appended so far (all time) */
    struct pbatch *done_head;       /* reported in this order */
    struct pbatch *done_tail;
    uint32_t inflight;              /* batches in flight, all partitions */
    int64_t producer_id;            /* -1 until known / without idempotence */
    int16_t producer_epoch;
    bool need_reinit;               /* sequence state unknown: new epoch needed
                                       before anything else is sent */
    int fatal;                      /* 0, or the error that ended the producer */
    uint32_t rr;                    /* drain fairness across partitions */
    bool retry_notfound;            /* a cluster: a broker may not have applied a
                                       just-created topic yet, so "not found" is
                                       retried until the delivery deadline */
};

void accum_init(struct accum *a, const struct accum_config *cfg);
/* Frees every batch without reporting. */
void accum_deinit(struct accum *a);

/* The topic entry for name, or NULL. */
struct acc_topic *accum_topic_find(struct accum *a, const char *name);
/* Adds a topic with partitions (> 0) partitions. -ENOMEM, VERITY_EINVAL. */
int accum_topic_add(struct accum *a, const char *name, uint32_t partitions,
                    struct acc_topic **out) CL_WUR;

/* Checks a record against the protocol limits: VERITY_EINVAL or VERITY_ELIMIT. */
int accum_record_check(const struct verity_record *rec) CL_WUR;

/*
 * Appends one record. partition is a partition or VERITY_PARTITION_ANY.
 * now_ms is monotonic (linger, deadline), wall_ms stamps records without a
 * timestamp. Returns 0; VERITY_EINVAL; VERITY_ELIMIT (record too large);
 * -ENOBUFS when buffer_bytes_max leaves no room (retry after reports);
 * -ENOMEM; or the fatal error.
 */
int accum_append(struct accum *a, struct acc_topic *t, int32_t partition,
                 const struct verity_record *rec, verity_delivery_cb cb, void *opaque,
                 int64_t now_ms, int64_t wall_ms) CL_WUR;

/* Appends n records as one closed batch of its own (after the partition's
 * open batch, which is closed). Same errors; VERITY_ELIMIT when they do not
 * fit in one batch. */
int accum_append_batch(struct accum *a, struct acc_topic *t, int32_t partition,
                       const struct verity_record *recs, size_t n, const uint8_t *idem_key,
                       verity_delivery_cb cb, void *opaque, int64_t now_ms, int64_t wall_ms)
    CL_WUR;

/* Sets the producer identity after InitProducer: sequences restart at 0 and
 * every sealed, unacknowledged batch is re-stamped (its bytes were never
 * written: the broker rejected them or they were never sent). Only with
 * nothing in flight. */
void accum_set_identity(struct accum *a, int64_t producer_id, int16_t epoch);

/*
 * Picks batches to send now, oldest first per partition: closed and sealed
 * ones, open ones whose linger passed (or all when flush), never past
 * partition_inflight_max, at most max batches and bytes_max bytes in total
 * (at least one). Each is sealed (header, sequence, CRC) and marked in
 * flight. Returns how many were stored in out.
 */
size_t accum_drain(struct accum *a, int64_t now_ms, bool flush, struct pbatch **out, size_t max,
                   size_t bytes_max);

/* accum_drain restricted to the partitions whose leader is node
 * (ACCUM_NODE_ANY: every partition, which is accum_drain). */
#define ACCUM_NODE_ANY UINT32_MAX
size_t accum_drain_node(struct accum *a, int64_t now_ms, bool flush, uint32_t node,
                        struct pbatch **out, size_t max, size_t bytes_max);

/* The next time something may become sendable or expire without new input
 * (INT64_MAX when never). */
int64_t accum_next_deadline(const struct accum *a, int64_t now_ms, bool flush);

/*
 * The answer for an in-flight batch: err 0 (base_offset, duplicate) or an
 * error. Retriable errors put the batch back (same bytes) and hold the
 * partition until nothing of it is in flight; the others finish the batch.
 */
void accum_complete(struct accum *a, struct pbatch *pb, int err, uint64_t base_offset,
                    bool duplicate, int64_t now_ms);

/* Fails queued (not in-flight) batches whose delivery timeout passed. */
void accum_expire(struct accum *a, int64_t now_ms);

/* Fails every batch that is not in flight with err and, when fatal, refuses
 * appends from now on with err. */
void accum_fail_all(struct accum *a, int err, bool fatal);

/* Detaches the list of finished batches, in report order (NULL if none). */
struct pbatch *accum_take_done(struct accum *a);

/* Runs the delivery callbacks of one finished batch. */
void pbatch_report(const struct pbatch *pb);
void pbatch_free(struct pbatch *pb);

/* True when err may succeed if the same batch is sent again. */
bool accum_err_retriable(int err);

#endif
